"""``durable worker module:object``: loading what to run, and running it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any


from ._db import Db
from ._decorators import Workflow
from ._executor import Executor

log = logging.getLogger("durable")


class CannotLoad(Exception):
    """``module:object`` names nothing usable."""


class NotAWorker(Exception):
    """The factory returned something other than an ``Executor``."""


@dataclass(frozen=True)
class Workflows:
    """What a list (or one) of ``@durable.workflow`` functions loads as."""

    workflows: tuple[Workflow[Any, Any], ...]


def load(target: str) -> Workflows | Any:
    """The object named ``module:attr`` (``attr`` may be dotted): ``Workflows``
    for workflows, else a callable factory. ``CannotLoad`` with a message
    for a bad spec, a missing module or attribute, or an object of another
    kind. An error raised by the module's own code propagates as it is."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CannotLoad(f"{target!r} is not module:object (like app.jobs:workflows)")
    # As `python -m` does: modules of the current directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the module exists; something it imports does not
        raise CannotLoad(f"there is no module named {module_name!r} (from {os.getcwd()})") from None
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CannotLoad(f"module {module_name!r} has no {attr!r}") from None
    if isinstance(found, Workflow):
        return Workflows((found,))
    if isinstance(found, (list, tuple)) and found and all(isinstance(w, Workflow) for w in found):
        return Workflows(tuple(found))
    if callable(found):
        return found
    raise CannotLoad(
        f"{target} is a {type(found).__name__}: give a list of @durable.workflow functions, "
        "or a function that takes a durable.Db and returns a durable.Executor"
    )


async def serve(db: Db, made: Workflows | Any, concurrency: int | None) -> None:
    """Runs the Executor of ``made`` on ``db`` until SIGTERM (the Executor
    stops itself) or SIGINT, then stops gracefully."""
    if isinstance(made, Workflows):
        executor = Executor(db, made.workflows, concurrency=100 if concurrency is None else concurrency)
    else:
        executor = made(db)
        if inspect.isawaitable(executor):
            executor = await executor
        if not isinstance(executor, Executor):
            raise NotAWorker(f"the factory returned {executor!r}, not a durable.Executor")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, executor.stop)
    log.info("worker started on schema %r; SIGTERM or Ctrl-C stops it gracefully", db.schema)
    try:
        await executor.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    log.info("worker stopped")


def configure_logging() -> None:
    """durable's log lines (claims, recoveries, failures) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s durable %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
