"""Waiting on the thing itself (a lock, a row, a state), never on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

import durable
from durable import Ctx


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Polls ``check`` until it holds; fails naming ``what`` after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < give_up, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


async def lock_waits(conn: asyncpg.Connection) -> int:
    """How many of durable's sessions on this database wait on a lock now."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'durable' AND wait_event_type = 'Lock'"""
    )
    return count


async def until_lock_waits(conn: asyncpg.Connection, count: int) -> None:
    """Waits until ``count`` of durable's sessions wait on a lock."""

    async def enough() -> bool:
        return await lock_waits(conn) >= count

    await until(enough, f"{count} durable sessions wait on a lock")


async def handed_over(db: durable.Db) -> None:
    """Returns once every task made before this call has handed its steps'
    results (or its starts) to the engine's writer (or starter), provided it
    waits on nothing before its first call into the engine.

    Two orders make it so, neither a matter of timing: asyncio runs every
    ready task up to its first wait before the task that yields here runs
    again; and the engine's calls run on one current-thread tokio runtime
    (``rust/bindings/runtime.rs``), which begins calls in the order they were
    made, each up to its first wait, which for a result or a start comes
    after it is queued. This call's own read is made after all of them."""
    await asyncio.sleep(0)
    await durable.list_queues(db)


@contextlib.asynccontextmanager
async def writer_blocked(dsn: str, schema: str, db: durable.Db) -> AsyncIterator[None]:
    """While the block runs, the writer's batch in flight (the completion of
    workflow ``gate``, which someone waits for) waits on a row lock, and the
    writer takes nothing from its queue until that batch is answered: all
    that is queued meanwhile forms the next batch, sent when the block ends.
    The gate's batch is its completion alone: one record, one commit."""
    gate = await Ctx.start(db, "gate")
    locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM task WHERE name = 'gate' FOR UPDATE")
            waiting = asyncio.ensure_future(gate.complete("opened"))
            await until_lock_waits(locker, 1)
            yield
            await locker.execute("ROLLBACK")
        assert await waiting == "opened"
    finally:
        await locker.close()
