"""Fixtures: a real Postgres database for the run, a fresh schema per test."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

import _cluster
import durable
from _testdb import create_database, drop_database, server_dsn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the browser is in the browser tier (pyproject.toml's markers)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """URL of a database that belongs to this test run alone."""
    if os.environ.get("DURABLE_TEST_FRESH_DB") == "1":
        yield os.environ["DURABLE_TEST_DSN"]
        return
    import asyncio

    server = server_dsn()
    fresh = asyncio.run(create_database(server))
    yield fresh
    asyncio.run(drop_database(server, fresh))


@pytest.fixture
def schema(request: pytest.FixtureRequest) -> str:
    """A schema name unique to the test."""
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return f"t_{base}_{os.urandom(3).hex()}"


@pytest.fixture
async def db(dsn: str, schema: str) -> AsyncIterator[durable.Db]:
    """durable, initialized in the test's own schema."""
    handle = await durable.init(dsn, schema=schema)
    yield handle
    await handle.close()


@pytest.fixture
async def pg(dsn: str, schema: str, db: durable.Db) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection with the test's schema on its search_path, to look at the tables."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    yield conn
    await conn.close()


@pytest.fixture
async def other_db(dsn: str, schema: str, db: durable.Db) -> AsyncIterator[durable.Db]:
    """A second Db in the same schema: another lease owner, like another process."""
    other = await durable.init(dsn, schema=schema)
    yield other
    await other.close()


@pytest.fixture(scope="session")
def own_server() -> Iterator[Any]:
    """A Postgres cluster of the test run's own, which tests may stop, freeze
    and restart (each leaves it running)."""
    with _cluster.running() as server:
        yield server
