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

from ._ctx import Ctx, Starting, attempt
from ._db import Db, cancel, init
from ._retry import Backoff
from ._decorators import Workflow, step, workflow
from ._embedded import start_embedded
from ._executor import Executor
from ._info import WorkflowInfo, get, list_workflows
from ._json import Json
from ._queues import create_queue, pause_queue, resume_queue
from ._runs import Run, result, resume
from .errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    DatabaseError,
    DeadlineExceeded,
    DuplicateStep,
    DurableError,
    InputMismatch,
    InvalidName,
    LeaseLost,
    NotJson,
    SchemaTooNew,
    StepInterrupted,
    ValueTooLarge,
    WorkflowBusy,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowNotFound,
)

__all__ = [
    "Backoff",
    "Cancelled",
    "ConfigError",
    "ConnectError",
    "Ctx",
    "DatabaseError",
    "Db",
    "DeadlineExceeded",
    "DuplicateStep",
    "DurableError",
    "Executor",
    "InputMismatch",
    "InvalidName",
    "Json",
    "LeaseLost",
    "NotJson",
    "Run",
    "SchemaTooNew",
    "Starting",
    "StepInterrupted",
    "ValueTooLarge",
    "Workflow",
    "WorkflowBusy",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowInfo",
    "WorkflowNotFound",
    "attempt",
    "cancel",
    "create_queue",
    "get",
    "init",
    "list_workflows",
    "pause_queue",
    "result",
    "resume",
    "resume_queue",
    "start_embedded",
    "step",
    "workflow",
]
