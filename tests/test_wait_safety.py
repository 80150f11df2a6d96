"""Waits that cannot hang or repeat: a wait that would close a cycle is an
error, a suspension runs no step body twice, and a cancel ends every wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import durable
from _waits import until
from durable import Ctx

# -- waiting on yourself -------------------------------------------------------


@durable.workflow(name="safety.waiter", queue="safety")
async def waiter(ctx: Ctx, other: str) -> Any:
    """Waits for the end of the run named ``other`` (its own name included)."""
    return await durable.Run(ctx.db, other, "queued", False).result()


async def finished(db: durable.Db, name: str) -> bool:
    return (await durable.get(db, name)).status in ("completed", "failed", "cancelled")


@pytest.mark.parametrize("suspend_after", [60.0, 0.0], ids=["in process", "suspended"])
async def test_a_cycle_of_two_runs_waiting_for_each_other_is_an_error_not_a_hang(
    db: durable.Db, suspend_after: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durable")
    executor = durable.Executor(db, [waiter], suspend_after=suspend_after)
    task = asyncio.ensure_future(executor.run())
    try:
        await waiter.enqueue(db, "a", "b")
        await waiter.enqueue(db, "b", "a")
        await until(lambda: finished(db, "a"), "a ended", timeout=30)
        await until(lambda: finished(db, "b"), "b ended", timeout=30)
    finally:
        executor.stop()
        await task
    errors = {name: (await durable.get(db, name)).error for name in ("a", "b")}
    cycles = [name for name, error in errors.items() if error["type"] == "WaitCycle"]
    assert len(cycles) == 1, errors
    closing = cycles[0]
    other = "b" if closing == "a" else "a"
    assert errors[closing]["message"] == (
        f"workflow {closing!r} would wait for the end of {other!r}, which waits for {closing!r}: "
        "that wait would never end, so it is refused"
    ).replace("'", '"')
    assert errors[other]["type"] == "WorkflowFailed", "the first one's wait ends with the other's failure"
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()], "no suspend statement deadlocked"


async def test_a_cycle_of_a_run_waiting_for_its_own_end_is_an_error(db: durable.Db) -> None:
    executor = durable.Executor(db, [waiter], suspend_after=0)
    task = asyncio.ensure_future(executor.run())
    try:
        with pytest.raises(durable.WorkflowFailed) as failed:
            await (await waiter.enqueue(db, "me", "me")).result(timeout=30)
    finally:
        executor.stop()
        await task
    assert failed.value.type == "WaitCycle"
    assert failed.value.message == 'workflow "me" would wait for its own end: that wait would never end, so it is refused'


async def test_a_chain_of_waits_is_no_cycle(db: durable.Db) -> None:
    executor = durable.Executor(db, [waiter, quick], suspend_after=0)
    task = asyncio.ensure_future(executor.run())
    try:
        await quick.enqueue(db, "end", None, delay=0.5)
        await waiter.enqueue(db, "middle", "end")
        first = await waiter.enqueue(db, "first", "middle")
        assert await first.result(timeout=30) == "end"
    finally:
        executor.stop()
        await task


@durable.workflow(name="safety.quick", queue="safety")
async def quick(ctx: Ctx, _: Any) -> str:
    return await ctx.step("name", lambda: ctx.name)


# -- a suspension runs no body twice -------------------------------------------

#: How many times each body ran.
ran: list[str] = []
#: The test's own connection, for the body to look at the workflow's row.
looking: list[asyncpg.Connection] = []


@durable.workflow(name="safety.nap_and_work", queue="safety")
async def nap_and_work(ctx: Ctx, _: Any) -> str:
    async def work() -> str:
        ran.append("work")
        # Busy until the tree is suspended, or a second passed: without the
        # fix the suspension comes while this body runs.
        for _ in range(100):
            if await looking[0].fetchval("SELECT status FROM task WHERE id = $1", ctx.root_id) == "scheduled":
                break
            await asyncio.sleep(0.01)
        return "worked"

    _, worked = await asyncio.gather(ctx.sleep("nap", 0.5), ctx.step("work", work))
    return worked


async def test_a_suspension_waits_for_the_step_bodies_in_flight(db: durable.Db, pg: asyncpg.Connection) -> None:
    ran.clear()
    looking[:] = [pg]
    executor = durable.Executor(db, [nap_and_work], suspend_after=0.1)
    task = asyncio.ensure_future(executor.run())
    try:
        assert await (await nap_and_work.enqueue(db, "n", None)).result(timeout=30) == "worked"
    finally:
        executor.stop()
        await task
    assert ran == ["work"], "the body ran once: the suspension saved its result first"
    info = await durable.tree(db, "n")
    assert [(s.name, s.attempt) for s in info.steps if s.name == "work"] == [("work", 1)]


# -- a cancel ends every wait -------------------------------------------------

#: Set when the code after a wait ran (it must not, once cancelled).
after: list[str] = []


async def wait_kinds(ctx: Ctx, kind: str) -> None:
    if kind == "sleep":
        await ctx.sleep("nap", 3600)
    elif kind == "recv":
        await ctx.recv("never")
    elif kind == "result":
        await durable.Run(ctx.db, "never-ends", "queued", False).result()
    else:
        await durable.get_event(ctx.db, "never-ends", "never")
    after.append(kind)


@durable.workflow(name="safety.waits", queue="safety")
async def waits(ctx: Ctx, kind: str) -> None:
    await ctx.step("before", lambda: kind)
    await wait_kinds(ctx, kind)


KINDS = ["sleep", "recv", "result", "get_event"]


async def waiting(db: durable.Db, pg: asyncpg.Connection, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await pg.fetchval(
            "SELECT count(*) FROM task AS s JOIN task AS r ON s.parent_id = r.id WHERE r.name = $1 AND s.name = 'before'",
            name,
        )
        return bool(found)

    return check


async def never_ending(db: durable.Db) -> Ctx:
    """A run that has started and never ends (held by this test)."""
    return await Ctx.start(db, "never-ends")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancel_ends_a_direct_runs_wait_at_once(db: durable.Db, pg: asyncpg.Connection, kind: str) -> None:
    after.clear()
    held = await never_ending(db)
    running = asyncio.ensure_future(waits.run(db, f"w-{kind}", kind))
    await until(await waiting(db, pg, f"w-{kind}"), "the run is about to wait")
    # Whenever the cancel comes (before the wait began, or during it), the wait ends.
    assert await durable.cancel(db, f"w-{kind}")
    with pytest.raises(durable.Cancelled):
        await asyncio.wait_for(running, 10)
    assert after == [], "the code after the wait did not run"
    await held.release()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancel_ends_an_executor_runs_wait_and_frees_its_slot(
    db: durable.Db, pg: asyncpg.Connection, kind: str
) -> None:
    after.clear()
    await durable.create_queue(db, "safety", concurrency=1)
    held = await never_ending(db)
    executor = durable.Executor(db, [waits, quick], suspend_after=7200)  # every wait stays in the process
    task = asyncio.ensure_future(executor.run())
    try:
        await waits.enqueue(db, f"w-{kind}", kind)
        await until(await waiting(db, pg, f"w-{kind}"), "the run waits")
        next_run = await quick.enqueue(db, "next", None)
        assert await durable.cancel(db, f"w-{kind}")
        assert await next_run.result(timeout=10) == "next", "the cancelled run's slot is free once its wait ended"
    finally:
        executor.stop()
        await task
        await held.release()
    assert after == []
