"""The engine's events in Python's logging, under the ``durable`` logger."""

from __future__ import annotations

import logging
import threading

import asyncpg
import pytest

import durable
from _waits import until
from durable import Ctx


def engine_records(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("durable") and (level is None or r.levelno == level)
    ]


async def test_workflow_and_step_events_at_debug_on_the_loop_thread(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="durable")
    async with await durable.init(dsn, schema=schema) as db:  # reads the level
        ctx = await Ctx.start(db, "logged")
        await ctx.step("first", lambda: 1)
        await ctx.step("second", lambda: 2)
        await ctx.complete("done")
    messages = [r.getMessage() for r in engine_records(caplog, logging.DEBUG)]
    assert "started workflow 'logged'" in messages
    assert any(m.startswith("step 'second' of workflow #") and m.endswith("completed (attempt 1)") for m in messages)
    assert any(m.startswith("workflow #") and m.endswith(" completed") for m in messages)
    assert {r.thread for r in engine_records(caplog)} == {threading.get_ident()}


async def test_no_debug_records_unless_asked(db: durable.Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    ctx = await Ctx.start(db, "quiet")
    await ctx.step("one", lambda: 1)
    assert engine_records(caplog, logging.DEBUG) == []
    # Turned on while running: followed from the next hand-off on.
    caplog.set_level(logging.DEBUG, logger="durable")
    await ctx.step("two", lambda: 2)
    await ctx.step("three", lambda: 3)
    assert any("step 'three'" in r.getMessage() for r in engine_records(caplog, logging.DEBUG))


async def test_a_takeover_is_logged(dsn: str, schema: str, db: durable.Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    first = await durable.init(dsn, schema=schema)
    ctx = await Ctx.start(first, "handed-over")
    await ctx.step("one", lambda: 1)
    await first.close()  # gives the workflow up unfinished
    again = await Ctx.start(db, "handed-over")
    assert await again.step("one", lambda: 99) == 1
    assert "took over workflow 'handed-over' (attempt 2)" in [r.getMessage() for r in engine_records(caplog, logging.INFO)]


async def test_a_lost_session_and_its_return_are_logged(
    db: durable.Db, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable")
    ctx = await Ctx.start(db, "cut")
    await ctx.step("before", lambda: 1)
    database = await pg.fetchval("SELECT current_database()")
    terminated = await pg.fetchval(
        """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
           FROM pg_stat_activity WHERE datname = $1 AND application_name = 'durable'""",
        database,
    )
    assert terminated >= 1

    async def back() -> bool:
        await ctx.step(f"after-{len(caplog.records)}", lambda: 2)  # each hand-off emits what waits
        return any("is back, after" in r.getMessage() for r in engine_records(caplog, logging.INFO))

    await until(back, "the session's return was logged")
    lost = [r for r in engine_records(caplog, logging.WARNING) if "lost the session of this process" in r.getMessage()]
    assert lost and lost[0].name == "durable.owner"
    await ctx.complete(None)
