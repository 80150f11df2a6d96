"""durable for code that is not async: Django views, Flask handlers, scripts.

::

    import durable.sync
    db = durable.sync.init("postgresql://...")
    run = durable.sync.enqueue(db, ingest, "ingest-7", "s3://bucket")
    print(durable.sync.result(db, run.name, timeout=30))

Each call blocks its thread until done and returns what the async function
of the same name returns (see ``durable``). No event loop is created or
needed: the work runs on durable's own I/O thread while the calling thread
waits, its GIL released. Safe to call from many threads at once, sharing
one ``Db``. Not for a thread that runs an event loop: there, await the
async API.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from . import _db, _fork, _gc, _info, _messages, _queues, _runs
from ._bridge import run_blocking
from ._db import Db
from ._decorators import I, O, Workflow
from ._options import Seconds
from ._runs import Run

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """The blocking twin of the async function ``fn``: same arguments, same result."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return run_blocking(fn(*args, **kwargs))

    return call


init = _blocking(_db.init)
cancel = _blocking(_db.cancel)
get = _blocking(_info.get)
list_workflows = _blocking(_info.list_workflows)
tree = _blocking(_info.tree)
gc = _blocking(_gc.gc)
fork = _blocking(_fork.fork)
send = _blocking(_messages.send)
get_event = _blocking(_messages.get_event)
result = _blocking(_runs.result)
resume = _blocking(_runs.resume)
create_queue = _blocking(_queues.create_queue)
pause_queue = _blocking(_queues.pause_queue)
resume_queue = _blocking(_queues.resume_queue)
list_queues = _blocking(_queues.list_queues)


def enqueue(
    db: Db | str,
    workflow: Workflow[I, O],
    name: str,
    input: I,
    *,
    delay: Seconds | None = None,
    run_at: datetime | None = None,
    priority: int = 0,
    key: str | None = None,
) -> Run[O]:
    """``workflow.enqueue(db, name, input, ...)``, blocking: queues the run
    ``name`` for an ``Executor``. Wait for it with ``result(db, run.name)``."""
    return run_blocking(workflow.enqueue(db, name, input, delay=delay, run_at=run_at, priority=priority, key=key))


def enqueue_many(
    db: Db | str,
    workflow: Workflow[I, O],
    runs: Iterable[tuple[str, I]],
    *,
    delay: Seconds | None = None,
    run_at: datetime | None = None,
    priority: int = 0,
    key: str | None = None,
) -> list[Run[O]]:
    """``workflow.enqueue_many(db, runs, ...)``, blocking: queues every
    ``(name, input)`` of ``runs`` in one commit."""
    return run_blocking(workflow.enqueue_many(db, runs, delay=delay, run_at=run_at, priority=priority, key=key))


def close(db: Db) -> None:
    """``await db.close()``, blocking."""
    run_blocking(db.close())


__all__ = [
    "cancel",
    "close",
    "create_queue",
    "enqueue",
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
    "tree",
]
