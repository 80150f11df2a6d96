"""A transaction-mode pooler is refused at init; a session-mode one is not.

With a real pgbouncer in front of the test server. CI machines may not have
it: these tests then skip, saying so. (The detection's other half, no false
positive against a direct server, is every other test: they all connect
directly.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import durable
from _waits import until
from durable.errors import ConfigError, ConnectError

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer): these tests need a real one"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory pgbouncer (run as nobody when we are root) can read."""
    with tempfile.TemporaryDirectory(prefix="durable-pgbouncer-") as path:
        Path(path).chmod(0o755)
        yield Path(path)


@pytest.fixture
def bouncer(dsn: str, home: Path) -> Callable[..., AbstractAsyncContextManager[str]]:
    """Starts pgbouncer in a pool mode, in front of the test database; yields its URL."""
    server = urlsplit(dsn)

    @asynccontextmanager
    async def start(pool_mode: str, ignore: str = "options,extra_float_digits") -> AsyncIterator[str]:
        port = free_port()
        ini = home / f"{pool_mode}.ini"
        ini.write_text(
            f"""[databases]
* = host={server.hostname} port={server.port or 5432} user={server.username or 'postgres'}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = {pool_mode}
ignore_startup_parameters = {ignore}
"""
        )
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # pgbouncer refuses to run as root
        assert PGBOUNCER is not None
        log = home / f"{pool_mode}.log"  # opened here: a pipe nobody reads would fill up and stop it
        with log.open("wb") as output:
            proc = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=subprocess.DEVNULL, stderr=output)
        try:

            async def up() -> bool:
                assert proc.poll() is None, f"pgbouncer exited: {log.read_text()}"
                return await listening(port)

            await until(up, "pgbouncer listens")
            yield f"postgresql://{server.username or 'postgres'}@127.0.0.1:{port}{server.path}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    return start


async def test_a_transaction_mode_pooler_is_refused_at_init(bouncer: Callable[..., AbstractAsyncContextManager[str]], schema: str) -> None:
    async with bouncer("transaction") as url:
        with pytest.raises(ConfigError) as caught:
            await durable.init(url, schema=schema)
    text = str(caught.value)
    assert "transaction-mode pooler" in text and "direct endpoint" in text, text
    assert "127.0.0.1" in text, text  # names where it connected


async def test_a_session_mode_pooler_is_not_taken_for_one(bouncer: Callable[..., AbstractAsyncContextManager[str]], schema: str) -> None:
    async with bouncer("session") as url:
        db = await durable.init(url, schema=schema)
        try:
            ctx = await durable.Ctx.start(db, "through-a-session-pooler")
            assert await ctx.step("s", lambda: 1) == 1
            await ctx.complete(None)
        finally:
            await db.close()


async def test_a_pooler_that_refuses_our_startup_options_is_named(
    bouncer: Callable[..., AbstractAsyncContextManager[str]], schema: str
) -> None:
    """pgbouncer as installed refuses the options parameter (durable's planner
    settings) before anything can be probed: the error says what answered."""
    async with bouncer("transaction", ignore="") as url:
        with pytest.raises(ConnectError) as caught:
            await durable.init(url, schema=schema)
    text = str(caught.value)
    assert "unsupported startup parameter" in text and "a pooler such as pgbouncer answered" in text, text
