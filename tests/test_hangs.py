"""Never a hang, never a panic: servers that do not answer, bad options, fork()
and schema names that are SQL keywords."""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import _cluster
import durable
from _programs import PROGRAMS
from durable import Ctx, _core


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where something accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_server_that_never_answers_fails_init_after_the_connect_timeout(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(durable.ConnectError) as caught:
        await durable.init(f"postgresql://app:hunter2@127.0.0.1:{silent_port}/app", connect_timeout=1)
    waited = time.monotonic() - started
    assert waited < 5, f"gave up after {waited:.1f} s"
    assert f"127.0.0.1:{silent_port}" in str(caught.value) and "hunter2" not in str(caught.value)
    assert "connect timeout" in str(caught.value)


async def test_a_frozen_server_fails_waits_within_the_timeouts_and_work_resumes_after(own_server: Any) -> None:
    dsn = own_server.get_uri("postgres")
    db = await durable.init(dsn, schema="frozen", reconnect_timeout=1.0, connect_timeout=1.0)
    try:
        ctx = await Ctx.start(db, "wf")
        await ctx.step("before", lambda: "saved")
        # Leave idle connections in the pool: a start then waits for an answer
        # on one of them, not for a new connection.
        for other in await asyncio.gather(*(Ctx.start(db, f"warm-{i}") for i in range(4))):
            await other.release()
        frozen = _cluster.freeze(own_server)
        try:
            for attempt in (lambda: ctx.step("during", lambda: "lost"), lambda: Ctx.start(db, "another")):
                started = time.monotonic()
                with pytest.raises(durable.DatabaseError, match="no answer from Postgres"):
                    await attempt()
                assert time.monotonic() - started < 5, "bounded by the reconnect timeout"
            started = time.monotonic()
            with pytest.raises(durable.ConnectError):
                await durable.init(dsn, schema="frozen", connect_timeout=1.0)
            assert time.monotonic() - started < 5
        finally:
            _cluster.thaw(frozen)
        await ctx.release()
        again = await Ctx.start(db, "wf")
        assert await again.step("before", lambda: "not run") == "saved"
        await again.step("after", lambda: "done now")
        await again.complete(None)
    finally:
        await db.close()


MAX_VALUE = 268_435_455


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": 1e300}, "lease"),
        ({"lease": 0.2}, "lease"),
        ({"lease": math.nan}, "lease"),
        ({"connect_timeout": 1e300}, "connect_timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"reconnect_timeout": 1e19}, "reconnect_timeout"),
        ({"reconnect_timeout": timedelta(days=2)}, "reconnect_timeout"),
        ({"session_grace": math.inf}, "session_grace"),
        ({"session_grace": -0.1}, "session_grace"),
        ({"max_connections": -1}, "max_connections"),
        ({"max_connections": 2.5}, "max_connections"),
        ({"max_value_bytes": -1}, "max_value_bytes"),
        ({"max_value_bytes": MAX_VALUE + 1}, "max_value_bytes"),
        ({"lease": "30"}, "lease"),
        ({"schema": 42}, "schema"),
    ],
    ids=repr,
)
async def test_bad_init_options_are_config_errors(dsn: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(durable.ConfigError, match=message):
        await durable.init(dsn, **options)


async def test_no_session_grace_is_a_choice(dsn: str, schema: str) -> None:
    """0: others take this process's workflows over as soon as its session is seen gone."""
    db = await durable.init(dsn, schema=schema, session_grace=0)
    try:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            grace = await conn.fetchval("SELECT session_grace FROM owner WHERE id = $1::uuid", db.owner_id)
        finally:
            await conn.close()
        assert grace == timedelta(0)
    finally:
        await db.close()


async def test_the_compiled_core_validates_too_and_never_panics(dsn: str) -> None:
    good: dict[str, Any] = {
        "schema": "durable",
        "max_connections": 4,
        "connect_timeout": 5.0,
        "lease": 30.0,
        "reconnect_timeout": 30.0,
        "session_grace": 0.5,
        "max_value_bytes": 1000,
        "host": "h",
    }
    for name, bad in [
        ("lease", 1e300),
        ("connect_timeout", 1e300),
        ("reconnect_timeout", 1e19),
        ("session_grace", math.nan),
        ("max_connections", -1),
        ("max_value_bytes", -1),
        ("max_value_bytes", MAX_VALUE + 1),
        ("schema", "User"),
    ]:
        with pytest.raises(durable.ConfigError, match=name.split("_")[0]):
            await _core.Engine.connect(dsn, **{**good, name: bad})


@pytest.mark.parametrize(
    "kwargs",
    [{"deadline": 1e300}, {"deadline": -1}, {"wait": math.nan}, {"wait": -1}, {"deadline": timedelta(days=-1)}],
    ids=repr,
)
async def test_bad_start_options_are_config_errors(db: durable.Db, kwargs: dict[str, Any]) -> None:
    with pytest.raises(durable.ConfigError):
        await Ctx.start(db, "w", **kwargs)
    with pytest.raises(durable.ConfigError):
        await db._engine.start("w", None, 1e300)


async def test_durations_may_be_timedeltas(dsn: str, schema: str) -> None:
    db = await durable.init(dsn, schema=schema, lease=timedelta(seconds=20), reconnect_timeout=timedelta(seconds=5))
    try:
        ctx = await Ctx.start(db, "w", deadline=timedelta(minutes=5), wait=timedelta(seconds=1))
        assert ctx.deadline_in is not None and 290 < ctx.deadline_in <= 300
    finally:
        await db.close()


async def test_a_forked_child_gets_a_clear_error_and_its_own_db_works(dsn: str, schema: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAMS / "forker.py"), dsn, schema, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, lines
    assert lines[0].startswith("child: inherited Db refused: this durable handle was made in process")
    assert "Call durable.init() in this process" in lines[0]
    assert lines[1:] == ["child: own Db worked: child", "parent: its Db still works"]


@pytest.mark.parametrize("keyword", ["user", "order", "select"])
async def test_schema_names_that_are_sql_keywords_work(dsn: str, keyword: str) -> None:
    db = await durable.init(dsn, schema=keyword)
    try:
        ctx = await Ctx.start(db, f"w-{keyword}")
        await ctx.step("s", lambda: 1)
        async with ctx.child("kid") as kid:
            await kid.step("k", lambda: 2)
        await ctx.complete("done")
        assert await durable.cancel(db, f"w-{keyword}") is False
        again = await Ctx.start(db, f"w-{keyword}")
        assert (again.output, await again.step("s", lambda: 0)) == ("done", 1)
    finally:
        await db.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA "{keyword}" CASCADE')
        await conn.close()
