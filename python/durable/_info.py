"""Looking at workflows from outside: ``list_workflows``, ``get`` and ``tree``.

Read-only: they never take a workflow over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._core import STATUSES
from ._db import Db, resolve
from ._moments import moments
from ._names import WorkflowPath, path_of, shown, text
from ._options import count, moment
from ._schedules import to_micros
from .errors import ConfigError, WorkflowNotFound



@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow as it is now (a read-only record)."""

    #: Its row id in ``task``.
    id: int
    #: Its own name (a child's: not its parent's).
    name: str
    #: Where it is: the root's name, then each child's down to it (a
    #: root's is ``(name,)``). What ``get``, ``tree``, ``send``... take.
    path: tuple[str, ...]
    #: pending, queued, scheduled, running, completed, failed or cancelled.
    status: str
    #: The registered function that runs it, if one does.
    workflow: str | None
    #: The queue it was enqueued in, if it was.
    queue: str | None
    #: Its input as saved (JSON).
    input: Any
    #: Its result once completed (JSON), else None.
    output: Any
    #: The saved error record of a failed run: type, module, message, traceback.
    error: Any
    #: Which run of it this is (1 for the first).
    attempt: int
    #: How many times its holder died while it ran alone (see ``Executor(max_recoveries=)``).
    recoveries: int
    #: Its priority in its queue (higher runs first).
    priority: int
    #: Its key in its queue (``enqueue(key=)``), if any.
    key: str | None
    #: None only for a time out of range (see ``out_of_range``).
    created_at: datetime | None
    #: When its current attempt started.
    started_at: datetime | None
    #: When it finished (completed, failed or cancelled).
    completed_at: datetime | None
    #: When a queued or scheduled run may start.
    run_at: datetime | None
    #: For a run that waits (queued or scheduled): why it does not run yet:
    #: ``delayed until T``, ``queue Q is paused``, ``no live executor has
    #: registered its function F`` (``... at version V`` for a run begun at
    #: a version), ``waiting to run alone ...`` (recovered from a crash it
    #: shared with other runs), ``rate limit until T``, ``concurrency full
    #: (N running)``, ``key limit: N runs of key K running`` (``... and M due
    #: before it``), or its turn: ``ready: the next claim starts it``,
    #: ``ready: N runs come before it in claim order`` (``get``; a list
    #: says ``ready: waiting for its turn``). Each is true when read: the
    #: claims check the same conditions. None otherwise.
    waiting_for: str | None
    #: The version of the executors that may run it (set when first claimed).
    version: str | None
    #: Its times that no ``datetime`` holds (``infinity``, a year outside 1
    #: to 9999 in UTC) and its JSON values that Python cannot read (nested
    #: over 128 levels, a number beyond any float), by field, as text
    #: (``{"run_at": "infinity"}``; a value's cut after 1000 bytes); each
    #: such field is None. Only SQL written by hand stores such a value.
    out_of_range: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def _from(row: dict[str, Any]) -> WorkflowInfo:
        return WorkflowInfo(**moments(row, *_TIMES))


@dataclass(frozen=True)
class StepInfo:
    """A step of a workflow as it is now (a read-only record)."""

    #: Its row id in ``task`` (what ``at_most_once``'s decision by hand names).
    id: int
    #: Its name in its workflow (a sleep's, a receive's and an event's too).
    name: str
    #: running, completed or failed.
    status: str
    #: Which attempt ran last (1 for the first).
    attempt: int
    #: Its saved result, once completed.
    output: Any
    #: The error record of its last failed attempt: type, module, message, traceback.
    error: Any
    #: None only for a time out of range (see ``out_of_range``).
    created_at: datetime | None
    #: When its last attempt's body began, by the clock of the process that
    #: ran it (a workflow's times are the database's).
    started_at: datetime | None
    #: When its last attempt's body ended (completed or failed), by the same clock.
    completed_at: datetime | None
    #: Its times and values that Python cannot hold, by field, as text (as ``WorkflowInfo``'s).
    out_of_range: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowTree:
    """A workflow with its steps and its child workflows, recursively."""

    #: The workflow itself.
    info: WorkflowInfo
    #: Its steps, in the order they were first recorded.
    steps: tuple[StepInfo, ...]
    #: Its child workflows, in the order they were created.
    children: tuple[WorkflowTree, ...]

    @staticmethod
    def _from(tree: dict[str, Any]) -> WorkflowTree:
        steps = (moments(row, *_TIMES[:3]) for row in tree["steps"])
        return WorkflowTree(
            info=WorkflowInfo._from(tree["info"]),
            steps=tuple(StepInfo(**{field: step[field] for field in _STEP_FIELDS}) for step in steps),
            children=tuple(WorkflowTree._from(child) for child in tree["children"]),
        )


_STEP_FIELDS = tuple(StepInfo.__dataclass_fields__)
#: The times of a workflow's row (a step has the first three).
_TIMES = ("created_at", "started_at", "completed_at", "run_at")


async def list_workflows(
    db: Db | str,
    *,
    status: str | None = None,
    queue: str | None = None,
    name_prefix: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[WorkflowInfo]:
    """The root workflows that match, newest first (at most ``limit``, 1 to
    100,000).

    ``status`` one of pending, queued, scheduled, running, completed, failed,
    cancelled; ``queue`` a queue's name; ``name_prefix`` the start of their
    names; ``since`` an aware ``datetime``: created at or after it.
    """
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    for what, given in (("queue filter", queue), ("name_prefix filter", name_prefix)):
        if given is not None:
            text(what, given)
    since_us = None if since is None else to_micros(moment("since", since))
    count("limit", limit, at_least=1, at_most=100_000)
    engine = (await resolve(db))._engine
    rows = await engine.list_runs(status, queue, name_prefix, since_us, limit)
    return [WorkflowInfo._from(row) for row in rows]


async def get(db: Db | str, workflow: WorkflowPath) -> WorkflowInfo:
    """The workflow ``workflow``: a root's name (a ``str``, never split: a
    root may be named ``a/b``), or a child's path, a tuple or list of names
    (``("parent", "child")``). ``WorkflowNotFound`` if there is none."""
    path = path_of("get", workflow)
    row = await (await resolve(db))._engine.run_info(path)
    if row is None:
        raise WorkflowNotFound(f"there is no workflow {shown(path)}")
    return WorkflowInfo._from(row)


async def tree(db: Db | str, workflow: WorkflowPath) -> WorkflowTree:
    """The workflow ``workflow`` (a root's name, or a child's path: see
    ``get``) with its steps and children, recursively, as one consistent
    snapshot. ``WorkflowNotFound`` if there is none."""
    path = path_of("tree", workflow)
    found = await (await resolve(db))._engine.tree(path)
    if found is None:
        raise WorkflowNotFound(f"there is no workflow {shown(path)}")
    return WorkflowTree._from(found)
