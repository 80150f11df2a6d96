"""A TCP proxy in front of Postgres that cuts connections on demand.

    async with FaultProxy(host, port) as proxy:
        db = await durable.init(proxy.via(dsn), schema=schema)
        proxy.arm_commit_cut()  # the next COMMIT's answer is lost
        proxy.arm_answer_cut(b"x")  # the next committed answer holding x is lost
        ...
        proxy.cut_all()  # every connection dropped at once

It runs in the test's event loop. Connections through it must not use TLS
(``via`` sets ``sslmode=disable``): it reads the server's answers to find the
one to cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The server's CommandComplete message for a COMMIT: tag "COMMIT", length 11.
COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"
#: ReadyForQuery, outside any transaction: what precedes the answer of the
#: next transaction on a connection.
READY_IDLE = b"Z\x00\x00\x00\x05I"
CHUNK = 65536


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        #: What the server sent since the connection was last idle (the
        #: answers of the transaction under way, if any).
        self.answer = bytearray()

    def cut(self) -> None:
        """Drops both sockets at once, without flushing what is buffered."""
        self.client.transport.abort()
        self.server.transport.abort()


class FaultProxy:
    """Forwards local connections to ``upstream_host:upstream_port``, and
    cuts them when told.

    ``connections``: how many it accepted so far. ``cut``: set when an armed
    COMMIT cut happened; ``lost_answer`` is then what the server had sent on
    that connection since it was last idle, the withheld COMMIT included
    (the transaction's whole answer, whether or not its first part reached
    the client)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self.cut = asyncio.Event()
        self.lost_answer = b""
        self._armed = False
        self._marker: bytes | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def via(self, dsn: str) -> str:
        """The URL ``dsn`` (a ``postgresql://`` URL) through this proxy, in clear."""
        parts = urlsplit(dsn)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sslmode"] + [("sslmode", "disable")]
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))

    @property
    def open(self) -> int:
        """How many connections are open through it now."""
        return len(self._links)

    def cut_all(self) -> int:
        """Drops every open connection at once; returns how many."""
        links = list(self._links)
        for link in links:
            link.cut()
        self._links.clear()
        return len(links)

    def arm_commit_cut(self) -> None:
        """Cuts the next connection whose server sends the answer to a
        COMMIT: that answer is not forwarded, so the server has committed
        and the client never hears of it. Sets ``cut`` when done."""
        self.cut.clear()
        self.lost_answer = b""
        self._armed = True

    def arm_answer_cut(self, marker: bytes) -> None:
        """Cuts the next connection whose server's answer to a transaction
        holds ``marker`` (say, a name in a row a statement returns), at the
        end of that answer (ReadyForQuery, idle: an implicit transaction has
        committed by then), which is not forwarded: the server has committed
        and the client never hears of it. Sets ``cut`` when done."""
        self.cut.clear()
        self.lost_answer = b""
        self._marker = marker

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_in, server_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_out.transport.abort()
            return
        link = _Link(client_out, server_out)
        self._links.add(link)
        for pump in (self._to_server(link, client_in), self._to_client(link, server_in)):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _to_server(self, link: _Link, source: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(CHUNK):
                link.server.write(chunk)
                await link.server.drain()
        self._close(link)

    async def _to_client(self, link: _Link, source: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(CHUNK):
                # With the tail of what came before: a message split across
                # chunks is found too (once: it must end in this chunk).
                seen = len(link.answer)
                link.answer += chunk
                committed = self._armed and COMMIT_COMPLETE in link.answer[max(0, seen - len(COMMIT_COMPLETE) + 1) :]
                ended = link.answer.rfind(READY_IDLE, max(0, seen - len(READY_IDLE) + 1))
                answered = self._marker is not None and ended >= 0 and self._marker in link.answer[:ended]
                if committed or answered:
                    self._armed = False
                    self._marker = None
                    self.lost_answer = bytes(link.answer)
                    self._links.discard(link)
                    link.cut()
                    self.cut.set()
                    return
                idle = link.answer.rfind(READY_IDLE)
                if idle >= 0:
                    del link.answer[: idle + len(READY_IDLE)]
                link.client.write(chunk)
                await link.client.drain()
        self._close(link)

    def _close(self, link: _Link) -> None:
        """One side ended: so does the other."""
        self._links.discard(link)
        link.client.close()
        link.server.close()
