"""The errors durable raises. Every one derives from :class:`DurableError`.

Errors caused by a bad argument also derive from the matching built-in
(``ValueError``, ``TypeError``), so generic handlers keep working.
"""

from __future__ import annotations


class DurableError(Exception):
    """Base of every error raised by durable itself."""


class ConfigError(DurableError, ValueError):
    """A bad setting: an unparsable database URL, an invalid schema name."""


class InvalidName(DurableError, ValueError):
    """A workflow or step name that is empty, longer than 255 bytes, or holds a NUL."""


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


__all__ = [
    "ConfigError",
    "ConnectError",
    "DatabaseError",
    "DuplicateStep",
    "DurableError",
    "InputMismatch",
    "InvalidName",
    "NotJson",
    "SchemaTooNew",
    "WorkflowFinished",
]
