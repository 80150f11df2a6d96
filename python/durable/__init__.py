"""durable: workflows as plain async Python, every step checkpointed in Postgres.

::

    db = await durable.init("postgresql://...")
    ctx = await Ctx.start(db, "ingest", input=None)
    shards = await ctx.step("resolve_shards", lambda: [0, 1, 2, 3])
    ...
    await ctx.complete("finished")

A completed step never runs again: when the program restarts, its saved
result is returned instead. See doc/api.md.
"""

from ._ctx import Ctx, Starting
from ._db import Db, init
from ._decorators import Workflow, step, workflow
from ._embedded import start_embedded
from .errors import (
    ConfigError,
    ConnectError,
    DatabaseError,
    DuplicateStep,
    DurableError,
    InputMismatch,
    InvalidName,
    NotJson,
    SchemaTooNew,
    WorkflowFinished,
)

__all__ = [
    "ConfigError",
    "ConnectError",
    "Ctx",
    "DatabaseError",
    "Db",
    "DuplicateStep",
    "DurableError",
    "InputMismatch",
    "InvalidName",
    "NotJson",
    "SchemaTooNew",
    "Starting",
    "Workflow",
    "WorkflowFinished",
    "init",
    "start_embedded",
    "step",
    "workflow",
]
