"""Claims under pressure: fair turns at any backlog, a true "why", no busy
loops, cancelled runs that keep their slot until they stop, several
executors in one process, rows that cannot be started."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import durable
from _waits import until
from durable import Ctx

#: Runs of the busy key in the backlog tests (DURABLE_BACKLOG for more).
BACKLOG = int(os.environ.get("DURABLE_BACKLOG", "100000"))

#: Opened by the tests; the `held` workflow's body waits on it.
opened = asyncio.Event()
#: What bodies did, in order: ("enter"/"exit", run name).
bodies: list[tuple[str, str]] = []


@durable.workflow(name="claims.held", queue="fair")
async def held(ctx: Ctx, _: Any) -> str:
    async def body() -> str:
        bodies.append(("enter", ctx.name))
        await opened.wait()
        bodies.append(("exit", ctx.name))
        return ctx.name

    return await ctx.step("body", body)


@durable.workflow(name="claims.quick", queue="fair")
async def quick(ctx: Ctx, _: Any) -> str:
    return await ctx.step("body", lambda: ctx.name)


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    opened.clear()
    bodies.clear()
    kept.clear()


async def why(db: durable.Db, name: str) -> str | None:
    return (await durable.get(db, name)).waiting_for


#: Handles of the runs `claim` took: kept, so that the runs stay running.
kept: list[Any] = []


async def claim(db: durable.Db, queue: str, n: int) -> list[str]:
    """One claim of at most ``n`` runs, as an executor's (the runs stay
    running, held by this process); the names claimed, sorted."""
    claimed = await db._engine.claim(queue, n, [held.name, quick.name])
    kept.extend(handle for _, handle in claimed)
    return sorted(handle.name for _, handle in claimed)


async def backlog(db: durable.Db, key: str, n: int) -> None:
    """``n`` queued runs of ``held`` with the key ``key``, in batches."""
    for start in range(0, n, 10_000):
        names = [(f"{key}-{i:06}", None) for i in range(start, min(n, start + 10_000))]
        await held.enqueue_many(db, names, key=key)


async def test_a_key_with_a_long_backlog_cannot_hide_another(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "fair", concurrency_per_key=1)
    await backlog(db, "A", BACKLOG)
    await quick.enqueue(db, "B", None, key="B")
    registered = await db._engine.register_executor([held.name, quick.name])
    try:
        assert await claim(db, "fair", 1) == ["A-000000"], "the oldest run goes first"
        # A-000000 runs: its key is full, so B, a whole backlog later, is next.
        assert await why(db, "A-000001") == "key limit: 1 runs of key A running"
        assert await why(db, "B") == "ready: the next claim starts it"
        assert await claim(db, "fair", 1) == ["B"], "B takes the first free slot"
    finally:
        await db._engine.unregister_executor(registered)


async def test_keys_take_turns_under_the_global_limit_at_any_backlog(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "fair", concurrency=1)
    await backlog(db, "A", BACKLOG)
    await quick.enqueue(db, "B", None, key="B")
    executor = durable.Executor(db, [held, quick], recovery_interval=0.2)
    task = asyncio.ensure_future(executor.run())
    try:
        await until(lambda: _entered("A-000000"), "the oldest run of A runs")
        assert await why(db, "B") == "concurrency full (1 running)"
        opened.set()
        # A was just served, B waited: B's turn comes before the rest of A's backlog.
        assert await durable.result(db, "B", timeout=30) == "B"
        first_after = await pg.fetchval(
            "SELECT name FROM task WHERE parent_id IS NULL AND name <> 'A-000000' AND started_at IS NOT NULL "
            "ORDER BY started_at, id LIMIT 1"
        )
        assert first_after == "B"
    finally:
        executor.stop()
        await task


async def _entered(name: str) -> bool:
    return ("enter", name) in bodies


async def test_what_a_waiting_run_says_is_what_the_next_claims_do(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "fair", concurrency=2, concurrency_per_key=1)
    for name, key in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("n1", None), ("a3", "a")]:
        await held.enqueue(db, name, None, key=key)
    registered = await db._engine.register_executor([held.name, quick.name])
    try:
        said = {name: await why(db, name) for name in ("a1", "a2", "b1", "n1", "a3")}
        assert said == {
            "a1": "ready: the next claim starts it",
            "a2": "key limit: 0 runs of key a running and 1 due before it",
            "b1": "ready: 1 runs come before it in claim order",
            "n1": "ready: 2 runs come before it in claim order",
            "a3": "key limit: 0 runs of key a running and 1 due before it",
        }
        assert await claim(db, "fair", 1) == ["a1"]
        assert await why(db, "b1") == "ready: the next claim starts it"
        assert await why(db, "n1") == "ready: 1 runs come before it in claim order"
        assert await why(db, "a2") == "key limit: 1 runs of key a running"
        assert await claim(db, "fair", 5) == ["b1"], "the queue's concurrency is 2"
        assert await why(db, "n1") == "concurrency full (2 running)"
        assert await claim(db, "fair", 5) == []
    finally:
        await db._engine.unregister_executor(registered)


def calls(db: durable.Db) -> int:
    """Round trips to the database this process made so far."""
    stats = db.stats()
    return stats["calls"] + stats["commits"] + stats["start_batches"] + stats["enqueue_batches"]


@pytest.mark.parametrize("held_back", ["paused", "full", "other version"])
async def test_an_executor_waits_for_due_runs_it_cannot_claim_without_polling(
    db: durable.Db, pg: asyncpg.Connection, held_back: str
) -> None:
    await durable.create_queue(db, "fair", concurrency=1)
    if held_back == "paused":
        await durable.pause_queue(db, "fair")
        await quick.enqueue(db, "due", None, delay=0.2)
    elif held_back == "full":
        await held.enqueue(db, "filler", None)
        await quick.enqueue(db, "due", None, delay=0.2)
    else:
        await quick.enqueue(db, "due", None, delay=0.2)
        await pg.execute("UPDATE task SET version = 'v0' WHERE name = 'due'")
    executor = durable.Executor(db, [held, quick], version="v1" if held_back == "other version" else None)
    task = asyncio.ensure_future(executor.run())
    try:

        async def came_due() -> bool:
            return bool(await pg.fetchval("SELECT run_at < now() - interval '0.3 s' FROM task WHERE name = 'due'"))

        await until(came_due, "the delayed run came due")
        if held_back == "full":
            await until(lambda: _entered("filler"), "the filler holds the queue's slot")
        before = calls(db)
        await asyncio.sleep(2)  # what is measured: an idle executor over two seconds
        spent = calls(db) - before
        # Before: it looked for work without pause, about 900 times a second.
        assert spent <= 6, f"{spent} calls to the database in 2 s with nothing it could claim"
        assert (await durable.get(db, "due")).status == "scheduled"
    finally:
        opened.set()
        executor.stop()
        await task


async def test_a_cancelled_run_keeps_its_slot_until_its_body_stops(db: durable.Db) -> None:
    await durable.create_queue(db, "fair", concurrency=1)
    executor = durable.Executor(db, [held, quick], recovery_interval=0.2)
    task = asyncio.ensure_future(executor.run())
    try:
        await held.enqueue(db, "first", None)
        await until(lambda: _entered("first"), "the first run's body runs")
        await held.enqueue(db, "second", None)
        assert await durable.cancel(db, "first")
        # The body of the cancelled run still runs: its slot is not free yet.
        assert await why(db, "second") == "concurrency full (1 running)"
        assert ("enter", "second") not in bodies
        opened.set()
        assert await durable.result(db, "second", timeout=30) == "second"
    finally:
        opened.set()
        executor.stop()
        await task
    assert bodies == [("enter", "first"), ("exit", "first"), ("enter", "second"), ("exit", "second")]


async def test_several_executors_of_one_process_keep_their_own_registration(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    # A spent rate window holds both runs back: what they say then shows
    # whether a live executor knows their function.
    await durable.create_queue(db, "fair", rate_limit=(1, 3600))
    await pg.execute("INSERT INTO task_queue_start (queue, started_at) VALUES ('fair', now())")
    await held.enqueue(db, "h", None)
    await quick.enqueue(db, "q", None)
    first = durable.Executor(db, [held])
    second = durable.Executor(db, [quick])
    tasks = [asyncio.ensure_future(first.run()), asyncio.ensure_future(second.run())]

    async def both_known() -> bool:
        said = [await why(db, name) or "" for name in ("h", "q")]
        return all(reason.startswith("rate limit until ") for reason in said)

    try:
        await until(both_known, "both executors registered")
        first.stop()
        await tasks[0]
        assert await why(db, "h") == f"no live executor has registered its function {held.name}"
        assert (await why(db, "q") or "").startswith("rate limit until "), "the other executor's registration stays"
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(*tasks)


async def test_a_run_whose_row_cannot_be_read_fails_alone_and_the_executor_goes_on(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    await quick.enqueue(db, "fine-1", None)
    await pg.execute(
        """INSERT INTO task (id, root_id, kind, name, status, input, workflow, queue, run_at, lease_epoch)
           SELECT n, n, 'workflow', 'by-hand', 'queued', NULL, $1, 'fair', now(), 0
           FROM nextval('task_id_seq') AS n""",
        quick.name,
    )
    await quick.enqueue(db, "fine-2", None)
    executor = durable.Executor(db, [held, quick], recovery_interval=0.2)
    task = asyncio.ensure_future(executor.run())
    try:
        assert [await durable.result(db, n, timeout=30) for n in ("fine-1", "fine-2")] == ["fine-1", "fine-2"]
        with pytest.raises(durable.WorkflowFailed) as failed:
            await durable.result(db, "by-hand", timeout=30)
        assert "its input is SQL NULL" in failed.value.message
        assert await (await quick.enqueue(db, "after", None)).result(timeout=30) == "after", "the executor goes on"
    finally:
        executor.stop()
        await task


@durable.workflow(name="claims.sleeper", queue="fair")
async def sleeper(ctx: Ctx, _: Any) -> None:
    await ctx.sleep("nap", 3600)


async def test_a_slot_freed_while_the_executor_was_full_is_claimed_at_once(db: durable.Db) -> None:
    # Only a slot freed here can start the second run: no poll, no recovery pass.
    executor = durable.Executor(db, [sleeper, quick], concurrency=1, poll=3600, recovery_interval=3600, suspend_after=0)
    task = asyncio.ensure_future(executor.run())
    try:
        for i in range(5):
            await sleeper.enqueue(db, f"s{i}", None)
        runs = [await quick.enqueue(db, f"q{i}", None) for i in range(5)]
        assert [await run.result(timeout=30) for run in runs] == [f"q{i}" for i in range(5)]
    finally:
        executor.stop()
        await task
