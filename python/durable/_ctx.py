"""The workflow context: :class:`Ctx` and its steps."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar, overload

from . import _core
from ._db import Db, resolve
from ._retry import Backoff
from .errors import (
    Cancelled,
    DeadlineExceeded,
    DurableError,
    LeaseLost,
    NotJson,
    StepInterrupted,
    ValueTooLarge,
    WorkflowBusy,
    WorkflowFinished,
)

T = TypeVar("T")

#: The context of the workflow running in the current task, for ``@durable.step``.
current: contextvars.ContextVar[Ctx] = contextvars.ContextVar("durable_current_ctx")

#: The attempt number of the step body running in the current task.
_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("durable_step_attempt")

_NO_RETRY = Backoff()


def attempt() -> int:
    """The attempt number of the step whose body is running: 1 on its first
    run, 2 and up after a retry, a failure or an interruption. Outside a step
    body, ``LookupError``."""
    try:
        return _attempt.get()
    except LookupError:
        raise LookupError("durable.attempt() is only known inside a step's body") from None


def error_record(exc: BaseException) -> dict[str, str]:
    """What is saved about an exception: enough for a human to act on."""
    kind = type(exc)
    return {
        "type": kind.__qualname__,
        "module": kind.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Ctx:
    """A running (or replaying) workflow: root or child.

    Get one with ``await Ctx.start(db, name, input)`` or ``await ctx.child(name, input)``;
    both also work as ``async with``, which fails the workflow if the block raises
    and completes it (with ``None``) if the block ends without ``complete()``.
    """

    def __init__(self, db: Db, workflow: _core.Workflow) -> None:
        self._db = db
        self._wf = workflow
        self._auto_names: dict[str, int] = {}

    @staticmethod
    def start(
        db: Db | str,
        name: str,
        input: Any = None,
        *,
        wait: float = 0.0,
        deadline: float | None = None,
    ) -> Starting:
        """Creates the root workflow ``name``, or takes it over if it exists.

        Resuming a completed workflow gives a context whose steps all replay
        and whose :attr:`output` is the saved result. ``input`` must be JSON
        and equal to the saved input of an existing workflow (else
        ``InputMismatch``). ``db`` may be a database URL string.

        A workflow held by another live process raises ``WorkflowBusy``, or,
        with ``wait`` seconds, is waited for (it may finish, or its holder
        die). ``deadline``: seconds from now by which a new workflow must
        complete (kept across restarts); past it, the next step raises
        ``DeadlineExceeded``.
        """

        async def start() -> Ctx:
            resolved = await resolve(db)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + wait
            delay = 0.05
            while True:
                try:
                    workflow = await resolved._engine.start(name, input, deadline)
                    return Ctx(resolved, workflow)
                except WorkflowBusy:
                    left = give_up - loop.time()
                    if left <= 0:
                        raise
                    await asyncio.sleep(min(delay, left))
                    delay = min(delay * 2, 1.0)

        return Starting(start())

    # -- identity and state ------------------------------------------------

    @property
    def name(self) -> str:
        return self._wf.name

    @property
    def id(self) -> int:
        """Row id in ``durable.task``."""
        return self._wf.id

    @property
    def root_id(self) -> int:
        """Row id of the root workflow of this tree."""
        return self._wf.root_id

    @property
    def attempt(self) -> int:
        """Which run of this workflow this is (1 for the first)."""
        return self._wf.attempt

    @property
    def created(self) -> bool:
        """True on the workflow's first run, False when it resumed."""
        return self._wf.created

    @property
    def status(self) -> str:
        """``running``, ``completed`` or ``failed``."""
        return self._wf.status

    @property
    def output(self) -> Any:
        """The saved result once completed, else None."""
        return self._wf.output

    @property
    def deadline_in(self) -> float | None:
        """Seconds left before the deadline (negative once passed), or None."""
        return self._wf.deadline_in

    @property
    def db(self) -> Db:
        return self._db

    # -- steps and children --------------------------------------------------

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        at_most_once: bool = False,
    ) -> T: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        at_most_once: bool = False,
    ) -> T: ...

    async def step(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        at_most_once: bool = False,
    ) -> Any:
        """Runs ``fn`` (sync or async, no arguments) once, saving its JSON result.

        If a previous run completed this step, its saved result is returned and
        ``fn`` is not called. Returns only after the result is committed. If
        ``fn`` raises, the attempt is recorded failed (type, message,
        traceback); with ``retries``, an exception matching ``retry_on`` is
        retried after ``backoff``, else it propagates.

        ``at_most_once``: for side effects that must not repeat. The step's
        ``running`` marker is committed before ``fn`` runs, and a step found
        interrupted by a crash is not run again: it raises ``StepInterrupted``
        for a human to decide.
        """
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be a callable taking no arguments, not {type(fn).__name__}")
        if retries < 0:
            raise ValueError(f"step {name!r}: retries must be >= 0, not {retries}")
        verdict, saved, number = self._wf.begin_step(name, at_most_once)
        if verdict == "replay":
            return saved
        if verdict == "interrupted":
            interrupted = StepInterrupted(saved)
            await self._record_failure(interrupted, self._wf.fail_step(name, number, error_record(interrupted)))
            raise interrupted
        policy = backoff or _NO_RETRY
        retried = 0
        while True:
            if at_most_once:
                await self._wf.mark_step_durably(name, number)
            else:
                self._wf.mark_step(name, number)
            token = _attempt.set(number)
            try:
                result = fn()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                await self._record_failure(exc, self._wf.fail_step(name, number, error_record(exc)))
                if retried >= retries or not isinstance(exc, retry_on):
                    raise
                retried += 1
                number += 1
                await asyncio.sleep(policy.delay(retried))
                continue
            finally:
                _attempt.reset(token)
            break
        try:
            saving = self._wf.finish_step(name, number, result)
        except (NotJson, ValueTooLarge) as exc:
            # The body ran but its result cannot be saved: that is the step's failure.
            await self._record_failure(exc, self._wf.fail_step(name, number, error_record(exc)))
            raise
        await saving
        return result

    def child(self, name: str, input: Any = None) -> Starting:
        """Creates (or resumes) the child workflow ``name`` with its own steps.

        Children may run concurrently. Use ``async with ctx.child(...) as c:``
        or call ``await c.complete(result)`` yourself.
        """

        async def start() -> Ctx:
            workflow = await self._wf.start_child(name, input)
            return Ctx(self._db, workflow)

        return Starting(start())

    # -- finishing -------------------------------------------------------------

    @overload
    async def complete(self) -> None: ...

    @overload
    async def complete(self, result: T) -> T: ...

    async def complete(self, result: Any = None) -> Any:
        """Marks the workflow completed with ``result`` (JSON) and returns it.

        On a workflow that completed in an earlier run, returns the saved result.
        """
        if self._wf.status == "completed":
            return self._wf.output
        await self._wf.complete(result)
        return result

    async def fail(self, exc: BaseException) -> None:
        """Marks the workflow failed with the error's type, message and traceback."""
        await self._wf.fail(error_record(exc))

    async def run(self, fn: Callable[[Ctx, Any], Awaitable[T]], input: Any) -> T:
        """Runs a workflow function as this workflow: completes it with the
        function's result, or fails it if the function raises. A workflow
        completed in an earlier run returns its saved result without running.
        With a deadline, the function is interrupted when it passes."""
        if self._wf.status == "completed":
            saved: T = self._wf.output
            return saved
        token = current.set(self)
        try:
            deadline = asyncio.timeout(self._wf.deadline_in)
            try:
                async with deadline:
                    result = await fn(self, input)
            except TimeoutError as exc:
                if deadline.expired():
                    raise DeadlineExceeded(f"workflow {self.name!r} passed its deadline") from exc
                raise
        except Exception as exc:
            await self._record_failure(exc, self.fail(exc))
            raise
        finally:
            current.reset(token)
        return await self.complete(result)

    def auto_name(self, base: str) -> str:
        """``base`` on first use in this run, then ``base#2``, ``base#3``...

        Deterministic as long as calls happen in the same order."""
        count = self._auto_names.get(base, 0) + 1
        self._auto_names[base] = count
        return base if count == 1 else f"{base}#{count}"

    @staticmethod
    async def _record_failure(exc: BaseException, recording: Awaitable[None]) -> None:
        """Saves a failure. If the workflow is no longer this process's to
        write (lease lost, cancelled), that is raised instead; if saving fails
        otherwise, the original error says so in a note."""
        try:
            await recording
        except (LeaseLost, Cancelled) as stop:
            raise stop from exc
        except WorkflowFinished:
            pass  # finished elsewhere: nothing left to mark
        except DurableError as db_exc:
            exc.add_note(f"durable could not record this failure: {db_exc}")

    # -- async with ----------------------------------------------------------

    async def __aenter__(self) -> Ctx:
        self._token = current.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current.reset(self._token)
        if exc is None:
            if self._wf.status == "running":
                await self.complete(None)
        elif isinstance(exc, Exception) and self._wf.status == "running":
            await self._record_failure(exc, self.fail(exc))

    def __repr__(self) -> str:
        return f"<Ctx {self.name!r} id={self.id} {self.status} attempt={self.attempt}>"


class Starting:
    """``await`` it for the :class:`Ctx`, or use it with ``async with``."""

    def __init__(self, start: Coroutine[Any, Any, Ctx]) -> None:
        self._start = start
        self._ctx: Ctx | None = None

    def __await__(self) -> Generator[Any, None, Ctx]:
        return self._start.__await__()

    async def __aenter__(self) -> Ctx:
        self._ctx = await self._start
        return await self._ctx.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(exc_type, exc, tb)
