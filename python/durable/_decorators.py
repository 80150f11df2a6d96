"""``@durable.workflow`` and ``@durable.step``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._ctx import Ctx, check_step_options, current
from ._db import Db
from ._json import Json
from ._retry import Backoff

I = TypeVar("I", bound=Json)  # noqa: E741 - the workflow's input type
O = TypeVar("O", bound=Json)  # noqa: E741 - the workflow's output type
P = ParamSpec("P")
T = TypeVar("T", bound=Json)


class Workflow(Generic[I, O]):
    """A workflow function ``async def f(ctx: Ctx, input: I) -> O``, made by ``@durable.workflow``."""

    def __init__(self, fn: Callable[[Ctx, I], Awaitable[O]]) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@durable.workflow needs an async def function, and {fn.__qualname__} is not one")
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]  # copies __name__, __doc__...

    async def run(self, db: Db | str, name: str, input: I) -> O:
        """Runs the workflow ``name`` here and now, resuming it if it exists.

        Completed steps of an earlier run replay; a workflow that already
        completed returns its saved result without running. If the function
        raises, the workflow is recorded failed and the exception propagates.
        The function gets the input's JSON form, and the result returned is
        the output's JSON form: the same on every run.
        """
        ctx = await Ctx.start(db, name, input)
        return await ctx.run(self.fn)

    async def run_child(self, parent: Ctx, name: str, input: I) -> O:
        """Runs the workflow as the child ``name`` of ``parent``."""
        ctx = await parent.child(name, input)
        return await ctx.run(self.fn)


@overload
def workflow(fn: Callable[[Ctx, I], Awaitable[O]], /) -> Workflow[I, O]: ...


@overload
def workflow() -> Callable[[Callable[[Ctx, I], Awaitable[O]]], Workflow[I, O]]: ...


def workflow(
    fn: Callable[[Ctx, I], Awaitable[O]] | None = None, /
) -> Workflow[I, O] | Callable[[Callable[[Ctx, I], Awaitable[O]]], Workflow[I, O]]:
    """Makes ``async def f(ctx, input)`` a workflow: ``await f.run(db, name, input)``.

    Usable bare (``@durable.workflow``) or called (``@durable.workflow()``).
    """
    if fn is not None:
        return Workflow(fn)
    return Workflow


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

    The step is named after the function (or ``name=``); repeated calls in one
    run are named ``name``, ``name#2``, ``name#3``... in call order. Called
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
        base = name or f.__qualname__
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
