"""Talking to workflows from anywhere: ``send`` and ``get_event``."""

from __future__ import annotations

import hashlib
from typing import Any

from ._attempts import current
from ._core import MAX_WAIT
from ._db import Db, resolve
from ._json import Json
from ._names import WorkflowPath, path_of, shown
from ._names import check as check_name
from ._options import Seconds, seconds
from .errors import ConfigError, WorkflowNotFound

async def send(db: Db | str, workflow: WorkflowPath, topic: str, value: Json, key: str | None = None) -> bool:
    """Sends ``value`` on ``topic`` to the workflow ``workflow`` (a root's
    name, never split; or a child's path, a tuple or list of names:
    ``("parent", "child")``), for its ``ctx.recv(topic)``.

    Stored in Postgres at once, so it waits for the workflow if it is not
    receiving yet; messages of a topic are received in the order sent, each
    exactly once. ``key`` makes the send idempotent: a second send of the
    same key to the same workflow adds nothing. ``value`` may not be None
    (``recv`` returns None for "no message"). Returns False when another
    sender (another call, another step) used the key before. Raises
    ``WorkflowNotFound`` if there is no such workflow.

    Called inside a running workflow, the send is a step of it (named
    ``send <topic> to <workflow>``, a path's names joined by ``/``, ``#2``...
    in call order), keyed by that step unless ``key`` is given: a resumed
    workflow does not send twice. A step run again after a crash that came
    between its send and the save of its result finds its own message and
    returns True.
    """
    path = path_of("send", workflow)
    if not isinstance(topic, str):
        raise ConfigError(f"send's topic must be a str, not {topic!r}")
    if key is not None and not isinstance(key, str):
        raise ConfigError(f"send's key must be a str, not {key!r}")
    check_name("topic", topic)
    if key is not None:
        check_name("message key", key)
    if value is None:
        raise ConfigError(
            f"cannot send None on topic {topic!r}: recv returns None when no message came, so None is not a message"
        )
    resolved = await resolve(db)
    ctx = current.get()
    if ctx is None:
        return await _send(resolved, path, topic, value, key, None)
    # Named as before paths were tuples, so that saved steps replay.
    name = ctx.auto_name(f"send {topic} to {'/'.join(path)}")
    step_key = key if key is not None else _step_key(ctx.id, name)
    sender = (ctx.id, name)
    sent: bool = await ctx.step(name, lambda: _send(resolved, path, topic, value, step_key, sender))
    return sent


async def _send(
    db: Db, path: tuple[str, ...], topic: str, value: Json, key: str | None, sender: tuple[int, str] | None
) -> bool:
    """The send itself; ``sender`` (the workflow's id and step) when a step sends."""
    outcome = await db._engine.send(path, topic, value, key, sender)
    if outcome == "no workflow":
        raise WorkflowNotFound(f"there is no workflow {shown(path)} to send a message to")
    return outcome == "sent"


def _step_key(workflow_id: int, step: str) -> str:
    """The key of a send made by a step: the same on every run of it."""
    return f"step {workflow_id} " + hashlib.sha256(step.encode()).hexdigest()


async def get_event(db: Db | str, workflow: WorkflowPath, key: str, timeout: Seconds | None = None) -> Any:
    """The latest value the workflow ``workflow`` (a root's name, or a
    child's path: see ``send``) published as its event ``key`` with
    ``ctx.set_event``, waiting for one to be set up to ``timeout`` (seconds
    or a ``timedelta``; None: as long as it takes). Raises ``TimeoutError``
    when the timeout runs out first, ``WorkflowNotFound`` if there is no
    such workflow. Called inside a running workflow, the wait ends as soon
    as that workflow is cancelled (``Cancelled``), as its other waits do."""
    path = path_of("get_event", workflow)
    check_name("event key", key)
    wait = MAX_WAIT if timeout is None else seconds("timeout", timeout, at_most=MAX_WAIT, zero_ok=True)
    reading = (await resolve(db))._engine.get_event(path, key, wait)
    ctx = current.get()
    read = await (reading if ctx is None else ctx._unless_stopped(reading))
    assert isinstance(read, tuple)
    found, value = read
    if found == "no workflow":
        raise WorkflowNotFound(f"there is no workflow {shown(path)}")
    if found == "not yet":
        raise TimeoutError(f"workflow {shown(path)} did not set event {key!r} within {wait:g} s")
    return value
