"""Database faults: connections killed and a server restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import asyncpg
import pytest

import durable
from _cluster import pg_ctl
from _waits import until
from durable import Ctx


async def run_steps(db: durable.Db, name: str, steps: int, pause: float) -> int:
    ctx = await Ctx.start(db, name)
    total = 0
    for i in range(steps):

        async def body(i: int = i) -> int:
            await asyncio.sleep(pause)
            return i

        total += await ctx.step(f"s{i}", body)
    return await ctx.complete(total)


async def test_killed_connections_are_replaced_and_the_workflow_completes(
    dsn: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    database = await pg.fetchval("SELECT current_database()")
    running = asyncio.ensure_future(run_steps(db, "wf", 40, 0.02))
    terminated = 0
    for round in range(4):

        async def progressed(at_least: int = 4 * (round + 1)) -> bool:
            done: int = await pg.fetchval("SELECT count(*) FROM task WHERE kind = 'step' AND status = 'completed'")
            return done >= at_least

        await until(progressed, "the workflow made progress since the last kill")
        # Every durable connection of this database: pool, writer, owner session.
        terminated += await pg.fetchval(
            """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
               FROM pg_stat_activity WHERE datname = $1 AND application_name = 'durable'""",
            database,
        )
    assert not running.done(), "the terminations hit a running workflow"
    assert await asyncio.wait_for(running, 60) == sum(range(40))
    assert terminated >= 4
    rows = await pg.fetch("SELECT name, status, output FROM task WHERE kind = 'step'")
    assert sorted((r["name"], r["status"], json.loads(r["output"])) for r in rows) == sorted(
        (f"s{i}", "completed", i) for i in range(40)
    )


def restart(server: Any) -> None:
    pg_ctl(server, "restart")


# The full tier: the fast one loses connections without a restart (above).
@pytest.mark.slow
async def test_a_workflow_survives_a_database_restart(own_server: Any) -> None:
    dsn = own_server.get_uri("postgres")
    db = await durable.init(dsn, schema=f"restart_{os.getpid()}")
    try:
        running = asyncio.ensure_future(run_steps(db, "wf", 30, 0.03))
        conn = await asyncpg.connect(dsn)
        try:

            async def some_steps_done() -> bool:
                return bool(
                    await conn.fetchval(
                        f"SELECT count(*) >= 3 FROM restart_{os.getpid()}.task WHERE kind = 'step' AND status = 'completed'"
                    )
                )

            await until(some_steps_done, "the workflow is under way")
        finally:
            await conn.close()
        assert not running.done()
        await asyncio.to_thread(restart, own_server)
        assert await asyncio.wait_for(running, 60) == sum(range(30))
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(f"SELECT name, status FROM restart_{os.getpid()}.task WHERE kind = 'step'")
        finally:
            await conn.close()
        assert sorted(r["name"] for r in rows) == sorted(f"s{i}" for i in range(30))
        assert {r["status"] for r in rows} == {"completed"}
    finally:
        await db.close()


async def test_a_database_down_too_long_fails_cleanly_and_the_workflow_resumes_later(own_server: Any) -> None:
    dsn = own_server.get_uri("postgres")
    schema = f"down_{os.getpid()}"
    db = await durable.init(dsn, schema=schema, reconnect_timeout=1.0)
    try:
        ctx = await Ctx.start(db, "wf")
        await ctx.step("before", lambda: "saved")
        await asyncio.to_thread(pg_ctl, own_server, "stop")
        try:
            started = time.monotonic()
            with pytest.raises(durable.DatabaseError):
                await ctx.step("during", lambda: "lost")
            assert time.monotonic() - started < 10, "gave up after the reconnect timeout"
        finally:
            await asyncio.to_thread(pg_ctl, own_server, "start")
        await ctx.release()  # this handle gives up; a new run resumes the workflow
        again = await Ctx.start(db, "wf")
        assert await again.step("before", lambda: "not run") == "saved"
        assert await again.step("during", lambda: "done now") == "done now"
        await again.complete(None)
    finally:
        await db.close()
