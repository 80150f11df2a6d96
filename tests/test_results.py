"""Waiting for results: one watcher per ``Db`` answers every waiter of
``durable.result`` and ``Run.result``, with one read for the runs that
finished together, and a look at every run once a second for the ends whose
notification was lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

import durable
from _waits import until_lock_waits
from durable import Ctx

N = 40


@durable.workflow(name="res.double", queue="res")
async def double(ctx: Ctx, n: int) -> int:
    return await ctx.step("double", lambda: n * 2)


@durable.workflow(name="res.broken", queue="res")
async def broken(ctx: Ctx, n: int) -> None:
    await ctx.step("ok", lambda: 1)
    raise RuntimeError(f"broken {n}")


@durable.workflow(name="res.parent", queue="res")
async def parent(ctx: Ctx, n: int) -> int:
    """Waits inside a workflow (a checkpointed wait) for the run ``d<n>``."""
    run: durable.Run[int] = durable.Run(ctx.db, f"d{n}", "queued", False)
    doubled = await run.result()
    return doubled + 1


@durable.workflow(name="res.held", queue="held")
async def held(ctx: Ctx, n: int) -> int:
    return n


async def registered(db: durable.Db) -> None:
    """Returns once every waiter made before has had its first look: a
    waiter registered after them (of a run that does not exist, and without
    a timeout to wait) is answered by a look that began after all of theirs.
    The waiters' calls are made first (each task runs up to its call), and
    the engine begins calls in the order they were made."""
    await asyncio.sleep(0)
    with pytest.raises(durable.WorkflowNotFound):
        await durable.result(db, "no-such-run-probe", timeout=0)


async def finish(pg: asyncpg.Connection, names: list[str], output: str, *, notify: str | None) -> None:
    """Completes the root runs ``names`` by hand in one transaction; with
    ``notify`` (the schema), each with the ``done`` notification the engine
    sends (delivered together at the commit), else without any."""
    await pg.execute(
        """UPDATE task SET status = 'completed', output = $2::jsonb, completed_at = now(), updated_at = now()
           WHERE parent_id IS NULL AND name = ANY($1::text[])""",
        names,
        output,
    )
    if notify is not None:
        await pg.execute(
            """SELECT pg_notify('durable', $2::text || ' done ' || id) FROM task
               WHERE parent_id IS NULL AND name = ANY($1::text[])""",
            names,
            notify,
        )


async def test_many_waiters_get_their_runs_outcomes(db: durable.Db) -> None:
    await durable.create_queue(db, "held")
    await durable.pause_queue(db, "held")
    await double.enqueue_many(db, [(f"d{i}", i) for i in range(N)])
    await broken.enqueue_many(db, [(f"b{i}", i) for i in range(N)])
    await parent.enqueue_many(db, [(f"p{i}", i) for i in range(N)])
    await held.enqueue_many(db, [(f"c{i}", i) for i in range(N)] + [(f"t{i}", i) for i in range(N)])
    names = [f"{kind}{i}" for kind in "dbpctu" for i in range(N)]
    waits = [
        asyncio.ensure_future(durable.result(db, name, timeout=0.5 if name[0] == "t" else None)) for name in names
    ]
    await registered(db)
    for i in range(N):
        assert await durable.cancel(db, f"c{i}")
    executor = durable.Executor(db, [double, broken, parent, held], concurrency=20)
    running = asyncio.ensure_future(executor.run())
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 60)
    finally:
        executor.stop()
        await running
    seen: dict[str, Any] = dict(zip(names, outcomes, strict=True))
    for i in range(N):
        assert seen[f"d{i}"] == 2 * i
        assert seen[f"p{i}"] == 2 * i + 1
        failed = seen[f"b{i}"]
        assert isinstance(failed, durable.WorkflowFailed), failed
        assert (failed.type, failed.message) == ("RuntimeError", f"broken {i}")
        assert isinstance(seen[f"c{i}"], durable.Cancelled), seen[f"c{i}"]
        timed_out = seen[f"t{i}"]
        assert isinstance(timed_out, TimeoutError) and "(it is queued)" in str(timed_out), timed_out
        assert isinstance(seen[f"u{i}"], durable.WorkflowNotFound), seen[f"u{i}"]


async def test_runs_finishing_together_are_read_once_for_all_their_waiters(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    runs = 300
    await durable.create_queue(db, "held")
    await durable.pause_queue(db, "held")
    names = [f"r{i}" for i in range(runs)]
    await held.enqueue_many(db, [(name, 0) for name in names])
    began = time.monotonic()
    before = db.stats()["calls"]
    locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with locker.transaction():
            # The watcher's first look waits on the table: every waiter
            # registers meanwhile, and the next look is theirs.
            await locker.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
            waits = [asyncio.ensure_future(durable.result(db, name)) for name in names]
            await until_lock_waits(locker, 1)
            await locker.execute("ROLLBACK")
    finally:
        await locker.close()
    await registered(db)
    first_looks = db.stats()["calls"] - before
    await finish(pg, names, '"out"', notify=schema)
    assert await asyncio.wait_for(asyncio.gather(*waits), 30) == ["out"] * runs
    after_end = db.stats()["calls"] - before - first_looks
    # A look at every run each second besides: as many as seconds passed.
    fallbacks = int(time.monotonic() - began) + 1
    # One read per waiter at least, without the watcher: 300 and 300.
    assert first_looks <= 3 + fallbacks, f"{first_looks} reads for the first looks of {runs} waiters"
    assert after_end <= 5 + fallbacks, f"{after_end} reads for {runs} runs ending together"
    print(f"\nresults: {runs} waiters, {first_looks} reads to register, {after_end} for their ends")


async def test_the_fallback_finds_an_end_whose_notification_was_lost(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "held")
    await durable.pause_queue(db, "held")
    await held.enqueue_many(db, [("quiet", 1), ("other", 2)])
    quiet = asyncio.ensure_future(durable.result(db, "quiet"))
    other = asyncio.ensure_future(durable.result(db, "other", timeout=3600))
    await registered(db)
    await finish(pg, ["quiet"], '"by hand"', notify=None)
    # Nothing tells the watcher: its look at every run once a second finds it.
    assert await asyncio.wait_for(quiet, 30) == "by hand"
    assert not other.done()
    other.cancel()
