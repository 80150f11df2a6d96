"""The fault proxy of the network tests (tests/_proxy.py) does what it says."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import pytest

from _proxy import COMMIT_COMPLETE, READY_IDLE, FaultProxy


def upstream(dsn: str) -> tuple[str, int]:
    server = urlsplit(dsn)
    return server.hostname or "127.0.0.1", server.port or 5432


async def test_a_cut_commit_is_committed_and_its_client_never_hears_of_it(
    dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE t (n int)")
    async with FaultProxy(*upstream(dsn)) as proxy:
        conn = await asyncpg.connect(proxy.via(dsn), server_settings={"search_path": schema})
        await conn.execute("BEGIN; INSERT INTO t VALUES (1); COMMIT")  # not armed: passes
        proxy.arm_commit_cut()
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await conn.execute("BEGIN; INSERT INTO t VALUES (2); COMMIT")
        assert proxy.cut.is_set() and COMMIT_COMPLETE in proxy.lost_answer
        assert (proxy.connections, proxy.open) == (1, 0)
        conn.terminate()
    assert await pg.fetchval("SELECT array_agg(n ORDER BY n) FROM t") == [1, 2], "the server committed both"


async def test_cut_all_drops_every_connection(dsn: str) -> None:
    async with FaultProxy(*upstream(dsn)) as proxy:
        conns = [await asyncpg.connect(proxy.via(dsn)) for _ in range(2)]
        assert proxy.open == 2
        assert proxy.cut_all() == 2
        for conn in conns:
            with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
                await conn.fetchval("SELECT 1")
            conn.terminate()
        fresh = await asyncpg.connect(proxy.via(dsn))
        assert await fresh.fetchval("SELECT 1") == 1, "new connections pass"
        await fresh.close()


async def test_a_commit_answer_split_across_chunks_is_found() -> None:
    # A fake server sends each part once the client has the one before:
    # the proxy reads them as separate chunks.
    parts = [READY_IDLE, b"T-rows-" + COMMIT_COMPLETE[:5], COMMIT_COMPLETE[5:] + READY_IDLE]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if not await reader.read(1):
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server, FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        proxy.arm_commit_cut()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for part in parts[:2]:
            assert await reader.readexactly(len(part)) == part
            writer.write(b".")
        await asyncio.wait_for(proxy.cut.wait(), 10)
        try:
            rest = await reader.read()
        except ConnectionResetError:
            rest = b""
        assert rest == b"", "the chunk that completes the COMMIT's answer is withheld"
        assert proxy.lost_answer == parts[1] + parts[2], "the whole answer since the connection was idle"
        writer.close()
