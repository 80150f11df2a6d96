"""``@durable.workflow`` and ``@durable.step``."""

from __future__ import annotations

import functools
import inspect
import logging
from datetime import datetime
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._attempts import current, in_step
from ._core import MAX_DURATION
from ._ctx import Ctx, check_step_options, start_root
from ._db import Db, resolve
from ._json import Json
from ._names import check as check_name
from ._options import Seconds, count, moment, seconds
from ._retry import Backoff
from ._runs import Run
from ._schedules import Schedule, parse_tick, tick_text
from .errors import ConfigError

log = logging.getLogger("durable")


I = TypeVar("I", bound=Json | datetime)  # noqa: E741 - the input type (a tick, for scheduled ones)
O = TypeVar("O", bound=Json)  # noqa: E741 - the workflow's output type
P = ParamSpec("P")
T = TypeVar("T", bound=Json)


#: The queue of workflows declared without one.
DEFAULT_QUEUE = "default"


class Workflow(Generic[I, O]):
    """A workflow function ``async def f(ctx: Ctx, input: I) -> O``, made by ``@durable.workflow``.

    ``name`` is its registered identity (``module.qualname`` unless
    ``@durable.workflow(name=...)``): executors know functions by it.
    ``queue`` is where ``enqueue`` puts its runs.
    """

    def __init__(
        self,
        fn: Callable[[Ctx, I], Awaitable[O]],
        *,
        name: str | None = None,
        queue: str | None = None,
        schedule: str | None = None,
        every: Seconds | None = None,
        timezone: str | None = None,
        missed: str = "latest",
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@durable.workflow needs an async def function, and {fn.__qualname__} is not one")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"@durable.workflow(name=...) must be a str, not {name!r}")
        if queue is not None and not isinstance(queue, str):
            raise ConfigError(f"@durable.workflow(queue=...) must be a str, not {queue!r}")
        self.fn = fn
        #: Its registered identity: ``module.qualname`` unless ``name=`` gave another.
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        #: Where ``enqueue`` puts its runs (``"default"`` unless ``queue=`` gave another).
        self.queue = queue or DEFAULT_QUEUE
        check_name("workflow", self.name)
        check_name("queue", self.queue)
        #: When it runs by itself (an Executor queues one run per tick), if it does.
        self.schedule = Schedule.make(schedule, every, timezone, missed, self.name)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]  # copies __name__, __doc__...

    def body(self) -> Callable[[Ctx, Any], Awaitable[O]]:
        """The function as a run calls it with its saved input: a scheduled
        workflow gets its tick as an aware UTC ``datetime``."""
        if self.schedule is None:
            return self.fn
        fn: Callable[[Ctx, Any], Awaitable[O]] = self.fn

        @functools.wraps(fn)  # its name, for spans
        async def ticked(ctx: Ctx, tick: str) -> O:
            return await fn(ctx, parse_tick(tick))

        return ticked

    async def run(self, db: Db | str, name: str, input: I) -> O:
        """Runs the workflow ``name`` here and now, resuming it if it exists.

        Completed steps of an earlier run replay; a workflow that already
        completed returns its saved result without running. If the function
        raises, the workflow is recorded failed and the exception propagates.
        The function gets the input's JSON form, and the result returned is
        the output's JSON form: the same on every run. A run waiting in a
        queue is taken out of it and run here.
        """
        ctx = await start_root(db, name, _saved(input), wait=0.0, deadline=None, workflow=self.name)
        return await ctx.run(self.body())

    async def run_child(self, parent: Ctx, name: str, input: I) -> O:
        """Runs the workflow as the child ``name`` of ``parent`` (see
        ``Ctx.child``): created, or resumed with its completed steps
        replaying; its result is returned as ``run``'s is. The child runs
        in its parent's queue slot and belongs to its parent's tree."""
        ctx = await parent.child(name, _saved(input))
        return await ctx.run(self.body())

    async def enqueue(
        self,
        db: Db | str,
        name: str,
        input: I,
        *,
        delay: Seconds | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> Run[O]:
        """Queues the run ``name`` of this workflow, for an ``Executor`` that knows it.

        Idempotent by name: a run of that name that exists is returned as it
        is (a different input raises ``InputMismatch``). ``delay`` (seconds
        or a ``timedelta``) or ``run_at`` (an aware ``datetime``, on the
        database's clock) hold it back until then. ``priority``: higher runs
        first. ``key``: runs of one key count against the queue's
        ``concurrency_per_key``. The queue is made, without limits, if it
        does not exist. Returns a ``Run`` whose ``result()`` waits for it.
        Enqueues made at the same time share one statement and one commit,
        each with its own answer. Called inside a running workflow, the enqueue is a step of it (named
        ``enqueue <workflow name>``, ``#2``... in call order): a resumed parent
        does not enqueue twice.
        """
        check_name("workflow", name)
        delay_s, start_at = _when(delay, run_at, priority, key)
        resolved = await resolve(db)
        by = _enqueuer(resolved)

        async def enqueue() -> list[Any]:
            # Sent with the other enqueues of the moment, in one commit.
            _, status, created, queue_created = await resolved._engine.enqueue(
                name, self.name, _saved(input), self.queue, delay_s, priority, key, start_at, by
            )
            if queue_created:
                log.info("queue %r did not exist: made it, without limits (durable.create_queue sets them)", self.queue)
            return [status, created]

        ctx = current.get()
        if ctx is None:
            status, created = await enqueue()
            return Run(resolved, name, status, created)
        # Inside a running workflow the enqueue is a step, named like a
        # decorated step's call: a resumed parent replays it (and its run's
        # name), whatever name it would compute this time.
        name, status, created = await ctx.step(
            ctx.auto_name(f"enqueue {self.name}"), lambda: _named(name, enqueue())
        )
        return Run(resolved, name, status, created)


    async def enqueue_many(
        self,
        db: Db | str,
        runs: Iterable[tuple[str, I]],
        *,
        delay: Seconds | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> list[Run[O]]:
        """``enqueue`` of many runs at once: ``runs`` is ``(name, input)``
        pairs, the options apply to each. One statement and one commit for
        all of them (much faster than one ``enqueue`` each, awaited in
        turn). Idempotent by name, as ``enqueue``: a run that exists is
        returned as it is. A run that exists with another input raises
        ``InputMismatch`` (the others are queued); a name given twice raises
        ``ConfigError``. Returns the ``Run`` of each, in order. Called
        inside a running workflow, it is one step of it, named as
        ``enqueue``'s.
        """
        delay_s, start_at = _when(delay, run_at, priority, key)
        pairs = list(runs)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ConfigError(f"enqueue_many takes (name, input) pairs with a str name, not {pair!r}")
            check_name("workflow", pair[0])
        resolved = await resolve(db)
        by = _enqueuer(resolved)

        async def enqueue() -> list[Any]:
            found = await resolved._engine.enqueue_many(
                [name for name, _ in pairs],
                self.name,
                [_saved(input) for _, input in pairs],
                self.queue,
                delay_s,
                priority,
                key,
                start_at,
                by,
            )
            if any(queue_created for _, _, _, queue_created in found):
                log.info("queue %r did not exist: made it, without limits (durable.create_queue sets them)", self.queue)
            return [[name, status, created] for (name, _), (_, status, created, _) in zip(pairs, found)]

        ctx = current.get()
        made = await enqueue() if ctx is None else await ctx.step(ctx.auto_name(f"enqueue {self.name}"), enqueue)
        return [Run(resolved, name, status, created) for name, status, created in made]


def _when(delay: Seconds | None, run_at: datetime | None, priority: int, key: str | None) -> tuple[float, str | None]:
    """Checks an enqueue's options; its delay in seconds and its ``run_at`` as text."""
    if delay is not None and run_at is not None:
        raise ConfigError("give delay or run_at, not both")
    delay_s = 0.0 if delay is None else seconds("delay", delay, at_most=MAX_DURATION, zero_ok=True)
    start_at = None if run_at is None else moment("run_at", run_at)
    count("priority", priority, at_least=-(2**31), at_most=2**31 - 1)
    if key is not None:
        check_name("key", key)
    return delay_s, None if start_at is None else start_at.isoformat()


def _enqueuer(db: Db) -> int | None:
    """The id of the workflow whose code (its own, or a step's body) is
    enqueueing into ``db``, recorded on the runs it enqueues so that a
    cancel can reach them (``durable.cancel(..., enqueued=True)``)."""
    ctx = current.get() or in_step.get()
    return ctx.id if ctx is not None and ctx.db is db else None


async def _named(name: str, enqueued: Awaitable[list[Any]]) -> list[Any]:
    """An enqueue's outcome with its run's name, as a step saves it."""
    return [name, *await enqueued]


def _saved(input: Json | datetime) -> Json:
    """An input as it is saved: a tick (of a scheduled workflow) as its text."""
    return tick_text(input) if isinstance(input, datetime) else input


@overload
def workflow(fn: Callable[[Ctx, I], Awaitable[O]], /) -> Workflow[I, O]: ...


@overload
def workflow(
    *,
    name: str | None = None,
    queue: str | None = None,
    schedule: str | None = None,
    every: Seconds | None = None,
    timezone: str | None = None,
    missed: str = "latest",
) -> Callable[[Callable[[Ctx, I], Awaitable[O]]], Workflow[I, O]]: ...


def workflow(
    fn: Callable[[Ctx, I], Awaitable[O]] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    schedule: str | None = None,
    every: Seconds | None = None,
    timezone: str | None = None,
    missed: str = "latest",
) -> Workflow[I, O] | Callable[[Callable[[Ctx, I], Awaitable[O]]], Workflow[I, O]]:
    """Makes ``async def f(ctx, input)`` a workflow: ``await f.run(db, name, input)``
    runs it here, ``await f.enqueue(db, name, input)`` queues it for an ``Executor``.

    Usable bare (``@durable.workflow``) or called. ``name``: its registered
    identity (default ``module.qualname``); ``queue``: where its runs are
    queued (default ``"default"``). A recurring workflow ``async def f(ctx,
    tick: datetime)`` gets ``schedule=`` (a five-field cron expression, in UTC
    unless ``timezone=`` names another zone) or ``every=`` (an interval, ticks
    aligned to the epoch): executors that know it queue one run per tick,
    named ``<name>@<tick>``. After downtime, ``missed="latest"`` runs the
    latest missed tick once, ``missed="all"`` each of them. The function
    must be ``async def`` (else ``TypeError``); a bad option, cron
    expression, time zone or interval is a ``ConfigError`` here, when the
    function is decorated.
    """

    def decorate(f: Callable[[Ctx, I], Awaitable[O]]) -> Workflow[I, O]:
        return Workflow(f, name=name, queue=queue, schedule=schedule, every=every, timezone=timezone, missed=missed)

    if fn is not None:
        return decorate(fn)
    return decorate


@overload
def step(fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | None = None,
    retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    at_most_once: bool = False,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]: ...


def step(
    fn: Callable[P, Awaitable[T]] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | None = None,
    retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    at_most_once: bool = False,
) -> Callable[P, Coroutine[Any, Any, T]] | Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Checkpoints an async function as a step whenever it is called inside a
    running workflow (``Workflow.run`` or ``async with`` a ``Ctx``).

    The step is named after the function (``__qualname__``, or ``name=``);
    repeated calls in one run are named ``name``, ``name#2``,
    ``name#3``... in call order, given at the call, so that
    ``asyncio.gather(fetch(a), fetch(b))`` is deterministic. Called
    outside any workflow, or inside another step's body, the function simply
    runs (inside a step, the outer step's saved result covers it).
    ``retries``, ``backoff``, ``retry_on`` and ``at_most_once`` are those of
    ``Ctx.step``, checked here, when the function is decorated.
    """

    def decorate(f: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(
                f"@durable.step needs an async def function, and {f.__qualname__} is not one; "
                "wrap sync code with ctx.step(name, fn) instead"
            )
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"@durable.step(name=...) must be a str, not {name!r}")
        base = f.__qualname__ if name is None else check_name("step", name)
        check_step_options(base, retries, backoff, retry_on, at_most_once)

        @functools.wraps(f)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
            ctx = current.get()
            if ctx is None:
                return _plain(f, *args, **kwargs)
            # Named now, at call time, so that gather() keeps call order.
            return ctx.step(
                ctx.auto_name(base),
                lambda: f(*args, **kwargs),
                retries=retries,
                backoff=backoff,
                retry_on=retry_on,
                at_most_once=at_most_once,
            )

        return call

    if fn is not None:
        return decorate(fn)
    return decorate


async def _plain(f: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    return await f(*args, **kwargs)
