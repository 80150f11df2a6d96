"""Errors a user can cause: each is clear, typed, and writes nothing."""

from __future__ import annotations

import socket

import asyncpg
import pytest

import durable
from durable import Ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_unreachable_database_fails_fast_naming_host_and_port_not_password() -> None:
    port = free_port()
    with pytest.raises(durable.ConnectError) as caught:
        await durable.init(f"postgresql://app:hunter2@127.0.0.1:{port}/app", connect_timeout=3)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "hunter2" not in message
    assert "Connection refused" in message
    assert isinstance(caught.value, durable.DatabaseError)


async def test_bad_dsn_is_a_config_error_without_the_password() -> None:
    with pytest.raises(durable.ConfigError) as caught:
        await durable.init("postgresql://app:hunter2@host:notaport/app")
    assert "invalid database URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


async def test_unknown_database_names_the_server(dsn: str) -> None:
    from _testdb import with_database

    with pytest.raises(durable.ConnectError) as caught:
        await durable.init(with_database(dsn, "no_such_database_here"))
    assert "no_such_database_here" in str(caught.value)
    assert caught.value.sqlstate == "3D000"


@pytest.mark.parametrize("schema", ["", "Durable", "1abc", "a-b", "x; DROP TABLE task", "a" * 64])
async def test_invalid_schema_name_is_refused(dsn: str, schema: str) -> None:
    with pytest.raises(durable.ConfigError, match="invalid schema name"):
        await durable.init(dsn, schema=schema)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"connect_timeout": 0}, "connect_timeout"), ({"max_connections": 1}, "max_connections")],
)
async def test_bad_pool_options_are_refused(dsn: str, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(durable.ConfigError, match=message):
        await durable.init(dsn, **kwargs)  # type: ignore[arg-type]


async def test_schema_newer_than_the_library_is_refused(dsn: str, db: durable.Db, pg: asyncpg.Connection) -> None:
    from durable import _core

    await pg.execute("INSERT INTO migration (version, name) VALUES ($1, 'future')", _core.SCHEMA_VERSION + 1)
    with pytest.raises(durable.SchemaTooNew, match="Upgrade the durable package"):
        await durable.init(dsn, schema=db.schema)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "it is empty"), ("x" * 256, "longer than 255 bytes"), ("a\x00b", "NUL")],
)
async def test_bad_names_are_refused_and_nothing_is_written(
    db: durable.Db, pg: asyncpg.Connection, name: str, reason: str
) -> None:
    with pytest.raises(durable.InvalidName, match=reason):
        await Ctx.start(db, name)
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(durable.InvalidName, match=reason):
        await ctx.step(name, lambda: 1)
    with pytest.raises(durable.InvalidName, match=reason):
        await ctx.child(name)
    assert await pg.fetchval("SELECT count(*) FROM task") == 1  # only "wf"


async def test_a_255_byte_name_is_fine(db: durable.Db) -> None:
    name = "é" * 127 + "x"  # 255 bytes
    ctx = await Ctx.start(db, name)
    assert await ctx.step(name, lambda: 1) == 1


async def test_non_json_input_is_refused_before_anything_is_written(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    with pytest.raises(durable.NotJson, match='input of workflow "wf"'):
        await Ctx.start(db, "wf", {"when": object()})
    assert await pg.fetchval("SELECT count(*) FROM task") == 0


async def test_a_closed_db_refuses_new_work(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")
    await ctx.step("before", lambda: 1)
    await db.close()
    with pytest.raises(durable.DatabaseError, match="closed"):
        await Ctx.start(db, "other")
    calls: list[int] = []
    with pytest.raises(durable.DatabaseError, match="closed"):
        await ctx.step("after", lambda: calls.append(1))
    assert calls == [], "the body does not run when its marker cannot be queued"
