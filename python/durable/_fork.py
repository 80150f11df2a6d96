"""``durable.fork``: a new run from a step of an earlier one."""

from __future__ import annotations

from typing import Any

from ._db import Db, resolve
from ._runs import Run
from .errors import ConfigError, WorkflowNotFound
from ._names import check as check_name


class _Keep:
    """The default of ``fork``'s ``input``: the source's input."""

    def __repr__(self) -> str:
        return "<the source's input>"


KEEP: Any = _Keep()


async def fork(db: Db | str, name: str, new_name: str, *, from_step: str | None = None, input: Any = KEEP) -> Run[Any]:
    """Starts the new root run ``new_name`` from the root workflow ``name``:
    it keeps what ``name`` completed before ``from_step`` (the name of one
    of its steps or child workflows) and runs the rest.

    Kept: the steps and child workflows of ``name`` that completed and first
    ran before ``from_step`` (in the order they first ran; each child with
    everything under it), with their saved results, so the new run replays
    them without running their code. ``from_step`` itself (a child: with
    everything under it) and everything after it run again; None keeps
    nothing. ``input`` replaces the input
    (default: the source's). The source is left as it is, and may still be
    running.

    A workflow of a registered function is queued for an ``Executor`` (on the
    source's queue); one run by hand waits, interrupted, for
    ``Ctx.start(db, new_name)`` or ``Workflow.run``. A kept child keeps its
    input: with an edited ``input``, a workflow that derives a child's input
    from its own gets ``InputMismatch`` at that child (fork from before it).
    Events the source published are not copied. Returns the new run's ``Run``.
    ``WorkflowNotFound`` if there is no root ``name``; ``ConfigError`` if it
    has no step or child workflow ``from_step``, or a workflow named
    ``new_name`` exists.
    """
    for what, text in (("name", name), ("new_name", new_name)):
        if not isinstance(text, str):
            raise ConfigError(f"fork's {what} must be a str, not {text!r}")
        check_name("workflow", text)
    if from_step is not None and not isinstance(from_step, str):
        raise ConfigError(f"fork's from_step must be the name (a str) of a step or child workflow, or None, not {from_step!r}")
    if from_step is not None:
        check_name("step", from_step)
    resolved = await resolve(db)
    replace = input is not KEEP
    outcome, status, _ = await resolved._engine.fork(name, new_name, from_step, input if replace else None, replace)
    if outcome == "no source":
        raise WorkflowNotFound(f"there is no root workflow named {name!r} to fork")
    if outcome == "no step":
        raise ConfigError(f"workflow {name!r} has no step or child workflow named {from_step!r} to fork from")
    if outcome == "name taken":
        raise ConfigError(f"a workflow named {new_name!r} exists already: give the fork a name of its own")
    assert status is not None
    return Run(resolved, new_name, status, True)
