"""Looking at workflows from outside: ``list_workflows`` and ``get``.

Read-only: they never take a workflow over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._db import Db, resolve
from ._options import count
from ._schedules import from_micros, to_micros
from .errors import ConfigError, WorkflowNotFound

STATUSES = ("pending", "queued", "scheduled", "running", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow as it is now (a read-only record)."""

    id: int
    #: Its path: the root's name, then each child's (``parent/child``).
    name: str
    status: str
    #: The registered function that runs it, if one does.
    workflow: str | None
    queue: str | None
    input: Any
    output: Any
    #: The saved error record of a failed run: type, module, message, traceback.
    error: Any
    attempt: int
    recoveries: int
    priority: int
    key: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    #: When a queued or scheduled run may start.
    run_at: datetime | None
    #: For a run that waits (queued or scheduled): why it does not run yet:
    #: ``delayed until T``, ``queue Q is paused``, ``no live executor has
    #: registered its function F`` (``... at version V`` for a run begun at
    #: a version), ``rate limit until T``, ``concurrency
    #: full (N running)``, ``key limit: N runs of key K running``, or
    #: ``ready: the next claim starts it``. None otherwise.
    waiting_for: str | None

    @staticmethod
    def _from(row: dict[str, Any]) -> WorkflowInfo:
        def moment(micros: int | None) -> datetime | None:
            return None if micros is None else from_micros(micros)

        created = moment(row["created_at"])
        assert created is not None
        return WorkflowInfo(
            **{**row, "created_at": created}
            | {key: moment(row[key]) for key in ("started_at", "completed_at", "run_at")}
        )


async def list_workflows(
    db: Db | str,
    *,
    status: str | None = None,
    queue: str | None = None,
    name_prefix: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[WorkflowInfo]:
    """The root workflows that match, newest first (at most ``limit``).

    ``status`` one of pending, queued, scheduled, running, completed, failed,
    cancelled; ``since`` an aware ``datetime``: created at or after it.
    """
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if since is not None and (not isinstance(since, datetime) or since.utcoffset() is None):
        raise ConfigError(f"since must be a timezone-aware datetime, not {since!r}")
    count("limit", limit, at_least=1, at_most=100_000)
    engine = (await resolve(db))._engine
    rows = await engine.list_runs(status, queue, name_prefix, None if since is None else to_micros(since), limit)
    return [WorkflowInfo._from(row) for row in rows]


async def get(db: Db | str, name: str) -> WorkflowInfo:
    """The workflow ``name`` (a child by its path, ``parent/child``).
    ``WorkflowNotFound`` if there is none."""
    row = await (await resolve(db))._engine.run_info(name)
    if row is None:
        raise WorkflowNotFound(f"there is no workflow named {name!r}")
    return WorkflowInfo._from(row)
