"""durable.sync: the blocking client, called from plain threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import durable
import durable.sync
from durable import Ctx


@durable.workflow(name="sync.triple", queue="sync")
async def triple(ctx: Ctx, n: int) -> int:
    return await ctx.step("triple", lambda: n * 3)


@durable.workflow(name="sync.fails", queue="sync")
async def fails(ctx: Ctx, why: str) -> None:
    raise ValueError(why)


@pytest.fixture
async def executor(db: durable.Db) -> AsyncIterator[durable.Executor]:
    made = durable.Executor(db, [triple, fails], concurrency=20)
    task = asyncio.ensure_future(made.run())
    yield made
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` on ``count`` plain threads at once; their results, or re-raises the first error."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


async def test_threads_enqueue_and_wait_for_results(dsn: str, schema: str, executor: durable.Executor) -> None:
    """Eight threads share one blocking Db: each enqueues runs and waits for their outputs."""

    def work(i: int) -> list[int]:
        db = durable.sync.init(dsn, schema=schema) if i == 0 else shared  # one thread has its own
        runs = [durable.sync.enqueue(db, triple, f"t{i}-{j}", i * 10 + j) for j in range(5)]
        assert all(run.created and run.status == "queued" for run in runs)
        outputs = [durable.sync.result(db, run.name, timeout=30) for run in runs]
        if db is not shared:
            durable.sync.close(db)
        return outputs

    shared = await asyncio.to_thread(durable.sync.init, dsn, schema=schema)
    try:
        outputs = await asyncio.to_thread(in_threads, 8, work)
        assert outputs == [[(i * 10 + j) * 3 for j in range(5)] for i in range(8)]
        listed = await asyncio.to_thread(durable.sync.list_workflows, shared, status="completed", limit=1000)
        assert len(listed) == 40
    finally:
        await asyncio.to_thread(durable.sync.close, shared)


async def test_errors_reach_the_calling_thread(dsn: str, schema: str, executor: durable.Executor) -> None:
    def work() -> None:
        db = durable.sync.init(dsn, schema=schema)
        with pytest.raises(durable.WorkflowNotFound, match="'nope'"):
            durable.sync.get(db, "nope")
        with pytest.raises(durable.ConfigError, match="status must be one of"):
            durable.sync.list_workflows(db, status="bogus")
        run = durable.sync.enqueue(db, fails, "f1", "bad input")
        with pytest.raises(durable.WorkflowFailed, match="bad input"):
            durable.sync.result(db, run.name, timeout=30)
        assert durable.sync.get(db, "f1").status == "failed"
        assert durable.sync.tree(db, "f1").info.status == "failed"
        assert "sync" in [queue.name for queue in durable.sync.list_queues(db)]
        # Not running yet (its queue is paused): a short timeout runs out.
        durable.sync.pause_queue(db, "sync")
        late = durable.sync.enqueue(db, triple, "late", 1)
        with pytest.raises(TimeoutError, match="'late' did not finish"):
            durable.sync.result(db, late.name, timeout=0.05)
        assert durable.sync.cancel(db, "late") is True
        with pytest.raises(durable.Cancelled):
            durable.sync.result(db, "late", timeout=5)
        assert durable.sync.resume(db, "late") is True
        durable.sync.resume_queue(db, "sync")
        assert durable.sync.result(db, "late", timeout=30) == 3
        durable.sync.close(db)

    await asyncio.to_thread(work)


async def test_refused_on_an_event_loop_thread(dsn: str) -> None:
    with pytest.raises(RuntimeError, match="cannot run on an event loop's thread: await the async API"):
        durable.sync.get(dsn, "x")


def test_async_api_without_a_loop_points_to_sync(dsn: str) -> None:
    coro = durable.get(dsn, "x")
    with pytest.raises(RuntimeError, match="durable.sync"):
        coro.send(None)
    coro.close()


def test_no_event_loop_is_ever_made(dsn: str, schema: str) -> None:
    """In a process where making an event loop fails, the blocking client works."""
    program = textwrap.dedent(
        f"""
        import asyncio.base_events
        def refuse(*args, **kwargs):
            raise AssertionError("an event loop was made")
        asyncio.base_events.BaseEventLoop.__init__ = refuse
        import durable, durable.sync
        db = durable.sync.init({dsn!r}, schema={schema!r})
        durable.sync.create_queue(db, "q", concurrency=2)
        assert durable.sync.list_workflows(db) == []
        assert durable.sync.cancel(db, "none") is False
        durable.sync.close(db)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
