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

from ._attempts import attempt
from ._ctx import Ctx, Starting
from ._db import Db, cancel, init
from ._retry import Backoff
from ._decorators import Workflow, step, workflow
from ._embedded import start_embedded
from ._executor import Executor
from ._gc import gc
from ._info import StepInfo, WorkflowInfo, WorkflowTree, get, list_workflows, tree
from ._fork import fork
from ._json import Json
from ._messages import get_event, send
from ._names import WorkflowPath
from ._queues import QueueInfo, RateUse, create_queue, list_queues, pause_queue, resume_queue
from ._runs import Run, result, resume
from ._transaction import Transaction
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
    WaitCycle,
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
    "QueueInfo",
    "RateUse",
    "Run",
    "SchemaTooNew",
    "Starting",
    "StepInfo",
    "StepInterrupted",
    "Transaction",
    "ValueTooLarge",
    "WaitCycle",
    "Workflow",
    "WorkflowBusy",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowPath",
    "WorkflowTree",
    "attempt",
    "cancel",
    "create_queue",
    "fork",
    "gc",
    "get",
    "get_event",
    "init",
    "list_queues",
    "list_workflows",
    "pause_queue",
    "result",
    "resume",
    "resume_queue",
    "send",
    "start_embedded",
    "step",
    "tree",
    "workflow",
]
