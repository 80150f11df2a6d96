"""The errors durable raises. Every one derives from :class:`DurableError`.

Errors caused by a bad argument also derive from the matching built-in
(``ValueError``, ``TypeError``), so generic handlers keep working.
"""

from __future__ import annotations


class DurableError(Exception):
    """Base of every error raised by durable itself; raised as such for
    misuse that fits no other class (a ``Db`` used in a process forked from
    the one that made it, ``ctx.child`` inside a step's body)."""


class ConfigError(DurableError, ValueError, TypeError):
    """A bad setting: an unparsable database URL, an invalid schema name, an
    option out of range or of the wrong type (so it is also a ``ValueError``
    and a ``TypeError``)."""


class InvalidName(DurableError, ValueError):
    """A name (of a workflow, step, topic, key or queue) that is empty,
    longer than 255 bytes, or holds a NUL."""


class NotJson(DurableError, TypeError):
    """A value to save is not JSON (a set, an object, NaN, a non-string dict key...).

    Raised before anything of the value is written.
    """


class DatabaseError(DurableError):
    """Postgres reported an error, or could not be reached.

    ``sqlstate`` holds the five-character SQLSTATE code when the server sent one.
    """

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConnectError(DatabaseError):
    """The database could not be reached or refused the login."""


class SchemaTooNew(DurableError):
    """The database schema was migrated by a newer durable; upgrade the package."""


class InputMismatch(DurableError):
    """A workflow name that exists was started with a different input."""


class DuplicateStep(DurableError):
    """A step or child name was used twice within one workflow."""


class WorkflowFinished(DurableError):
    """The workflow already finished: it replays what it recorded, but takes no new work."""


class ValueTooLarge(DurableError, ValueError):
    """A value's JSON is over the size limit (``durable.init(max_value_bytes=...)``)."""


class WorkflowBusy(DurableError):
    """Another live holder (another process, another ``Db``, or another
    handle of this ``Db``) holds the workflow (``Ctx.start(..., wait=...)``
    waits for it)."""


class LeaseLost(DurableError):
    """Another holder took the workflow over, or this process released it;
    this handle must stop working on it.

    Raised by the first write after the takeover; nothing from then on is saved.
    """


class Cancelled(DurableError):
    """The workflow was cancelled (``durable.cancel``); raised at its next checkpoint."""


class StepInterrupted(DurableError):
    """An ``at_most_once`` step was interrupted in an earlier run and is not run again.

    Its row is marked failed for a human to decide (see "Steps" in doc/api.md).
    """


class DeadlineExceeded(DurableError):
    """The workflow passed its deadline (``Ctx.start(..., deadline=...)``)."""


class WaitCycle(DurableError):
    """A workflow would wait for the end of a run that (directly, or
    through runs that wait for others) waits for the end of this workflow,
    or for its own end: that wait would never end, so it is refused at
    once. The message names the cycle."""


class WorkflowFailed(DurableError):
    """The run waited for (``Run.result``, ``durable.result``) failed.

    ``error`` is its saved error record; ``type``, ``message`` and
    ``traceback`` are its parts (the traceback is the one of the failed run).
    """

    def __init__(self, name: str, error: dict[str, str] | None) -> None:
        self.name = name
        self.error = error or {}
        self.type = self.error.get("type", "")
        self.message = self.error.get("message", "")
        self.traceback = self.error.get("traceback", "")
        super().__init__(f"workflow {name!r} failed: {self.type}: {self.message}")


class WorkflowNotFound(DurableError, LookupError):
    """No workflow of that name exists."""


__all__ = [
    "Cancelled",
    "ConfigError",
    "ConnectError",
    "DatabaseError",
    "DeadlineExceeded",
    "DuplicateStep",
    "DurableError",
    "InputMismatch",
    "InvalidName",
    "LeaseLost",
    "NotJson",
    "SchemaTooNew",
    "StepInterrupted",
    "ValueTooLarge",
    "WorkflowBusy",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowNotFound",
]
