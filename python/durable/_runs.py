"""Runs seen from outside: ``Run`` (what ``enqueue`` returns) and ``result``."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ._attempts import current
from ._core import MAX_WAIT
from ._db import Db, resolve
from ._options import Seconds, seconds
from .errors import Cancelled, WorkflowFailed, WorkflowNotFound
from ._names import check as check_name

O = TypeVar("O")  # noqa: E741 - the run's output type

class Run(Generic[O]):
    """A queued run of a workflow, by name. ``await run.result()`` for its output."""

    def __init__(self, db: Db, name: str, status: str, created: bool) -> None:
        #: The ``Db`` it was enqueued through.
        self.db = db
        #: The run's name: a root workflow's.
        self.name = name
        #: Its status when it was enqueued (``queued``, ``scheduled``, or
        #: what an existing run of that name was: enqueueing is idempotent).
        self.status = status
        #: False when a run of that name existed already.
        self.created = created

    async def result(self, timeout: Seconds | None = None) -> O:
        """Waits for the run to finish and returns its output (its JSON form).

        Raises ``WorkflowFailed`` (with the saved error) if it failed,
        ``Cancelled`` if it was cancelled, ``TimeoutError`` if ``timeout``
        (seconds or a ``timedelta``; None: no limit) runs out first.

        Inside a workflow (outside its steps' bodies) and without a
        ``timeout``, this is a checkpointed wait: the step ``result <name>``
        saves how the run ended, and a replay returns that. A workflow run
        by an ``Executor`` is suspended while it waits (past the executor's
        ``suspend_after``, or at once while the run has not started), which
        frees its slot, and resumes when the run finishes. With a
        ``timeout`` it waits in its process, and nothing is saved.
        """
        ctx = current.get()
        if ctx is not None and timeout is None:
            inside: O = await ctx._run_result(self.name)
            return inside
        output: O = await result(self.db, self.name, timeout=timeout)
        return output

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {self.status}>"


async def result(db: Db | str, name: str, timeout: Seconds | None = None) -> Any:
    """Waits for the root workflow ``name`` to finish and returns its output.

    Works from any process, for any run (queued, scheduled, or run directly);
    never takes it over. Raises ``WorkflowNotFound`` for an unknown name,
    ``WorkflowFailed`` (carrying the saved error: type, message, traceback)
    for a failed run, ``Cancelled`` for a cancelled one, ``TimeoutError``
    when ``timeout`` runs out first (seconds or a ``timedelta``; None: wait
    as long as it takes).
    """
    check_name("workflow", name)
    wait = MAX_WAIT if timeout is None else seconds("timeout", timeout, at_most=MAX_WAIT, zero_ok=True)
    resolved = await resolve(db)
    state = await resolved._engine.run_state(name, wait)
    if state is None:
        raise WorkflowNotFound(f"there is no workflow named {name!r}")
    status, output, error = state
    if status == "completed":
        return output
    if status == "failed":
        raise WorkflowFailed(name, error)
    if status == "cancelled":
        raise Cancelled(f"workflow {name!r} was cancelled")
    raise TimeoutError(f"workflow {name!r} did not finish within {wait:g} s (it is {status})")


async def resume(db: Db | str, name: str) -> bool:
    """Puts the failed or cancelled root workflow ``name`` back to run,
    keeping the steps it completed.

    A workflow of a registered function is queued again (an ``Executor``
    resumes it; its recovery count starts over); one started by hand may be
    started again with ``Ctx.start``. Its cancelled children resume with it.
    Returns False if there is no such workflow or it is neither failed nor
    cancelled.
    """
    check_name("workflow", name)
    return await (await resolve(db))._engine.resume(name)
