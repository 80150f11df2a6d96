"""The workflow context: :class:`Ctx` and its steps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar, overload

from . import _core, _otel
from ._attempts import RETRY, StepBody, call, current, error_record, in_step, may_retry, record_failure, run_attempts
from ._core import FINISHED_STATUSES, MAX_DURATION, MAX_WAIT
from ._db import Db, resolve
from ._json import J, Json
from ._names import check as check_name
from ._names import derived
from ._options import Seconds, moment, seconds
from ._retry import Backoff
from ._schedules import from_micros, to_micros
from ._transaction import Transaction, run_transaction
from .errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    DurableError,
    InputMismatch,
    LeaseLost,
    NotJson,
    StepInterrupted,
    ValueTooLarge,
    WorkflowBusy,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowNotFound,
)

T = TypeVar("T")

#: Longest wait, in seconds, for the database to take a release while an
#: interruption propagates (see ``Ctx._release_on_interrupt``).
RELEASE_WAIT = 1.0

#: Default of ``Executor(suspend_after=...)``, in seconds: in a workflow run
#: by an executor, a wait longer than this suspends the workflow (see
#: ``Ctx._wait``) instead of holding it in the process.
SUSPEND_AFTER = 60.0

#: Marks "no argument given" where None is a value.
_SAVED: Any = object()

def check_step_options(
    name: str,
    retries: int,
    backoff: Backoff | None,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    at_most_once: bool,
) -> None:
    """Refuses bad step options with ``ConfigError`` before anything runs."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"step {name!r}: retries must be an int >= 0, not {retries!r}")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigError(f"step {name!r}: backoff must be a durable.Backoff or None, not {backoff!r}")
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not all(isinstance(k, type) and issubclass(k, Exception) for k in kinds):
        raise ConfigError(
            f"step {name!r}: retry_on must be an exception class (a subclass of Exception) "
            f"or a tuple of them, not {retry_on!r}"
        )
    if not isinstance(at_most_once, bool):
        raise ConfigError(f"step {name!r}: at_most_once must be True or False, not {at_most_once!r}")


class WorkflowSuspended(BaseException):
    """Unwinds a workflow run by an executor once it was suspended (see
    ``Ctx._wait``): the workflow left this process and an executor resumes
    it when it is due. Not a failure, and nothing records it as one: a
    ``BaseException``, so that ``except Exception`` in workflow code lets it
    pass (as ``asyncio.CancelledError``)."""


class _Drained:
    """What ``Ctx._unless_stopped`` returns when a graceful stop began."""


_DRAINED = _Drained()


class Tree:
    """What the contexts of one workflow tree share in this process: how
    many step bodies are in flight (from before a body starts until its
    outcome is saved), and whether the tree is being suspended or was.

    A suspension waits until no body is in flight, and no body starts while
    it is under way: so every body that ran saved its result before the
    tree left the process, and none runs again after the wake-up (a
    suspension is not an attempt). A body that would start once the tree
    was suspended does not: ``WorkflowSuspended`` unwinds its branch too.
    """

    __slots__ = ("_bodies", "_idle", "_suspending", "suspended")

    def __init__(self) -> None:
        self._bodies = 0
        self._idle: asyncio.Future[None] | None = None
        self._suspending: asyncio.Future[None] | None = None
        #: True once the tree was suspended.
        self.suspended = False

    def held_back(self) -> bool:
        """True when a body may not start now (see ``wait_to_start``)."""
        return self._suspending is not None or self.suspended

    async def wait_to_start(self) -> None:
        """Waits while the tree is being suspended; raises
        ``WorkflowSuspended`` once it was."""
        while self._suspending is not None:
            await asyncio.shield(self._suspending)
        if self.suspended:
            raise WorkflowSuspended("the workflow was suspended: this step runs after its wake-up")

    def enter(self) -> None:
        """A step's attempt begins (its marker is next). Plain calls, not an
        async context manager: its two more coroutines a step measured about
        10% fewer steps a second with 50 workflows at once (bench/steps.py)."""
        self._bodies += 1

    def leave(self) -> None:
        """The attempt's outcome is saved (or it failed): it is over."""
        self._bodies -= 1
        if not self._bodies and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def suspend(self, suspend: Callable[[], Awaitable[bool]]) -> bool:
        """Runs ``suspend`` (True: suspended) once no body is in flight,
        none starting meanwhile; one suspension at a time."""
        while self._suspending is not None:
            await asyncio.shield(self._suspending)
        if self.suspended:
            raise WorkflowSuspended("the workflow was suspended by another of its waits")
        loop = asyncio.get_running_loop()
        self._suspending = loop.create_future()
        try:
            while self._bodies:
                self._idle = loop.create_future()
                await asyncio.shield(self._idle)
            self.suspended = await suspend()
            return self.suspended
        finally:
            self._suspending.set_result(None)
            self._suspending = None


#: Waits in the process at least this long (seconds) are recorded on the
#: root while they last, so that ``durable.get`` and ``durable show`` say
#: what a running workflow waits for; shorter ones are not worth a write.
NOTE_WAITS_FROM = 1.0

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
        #: Set by an executor on the workflows it runs (and passed on to their
        #: children): waits longer than this many seconds suspend the tree.
        #: None: a direct run, which always waits in its process.
        self._suspend_after: float | None = None
        #: Shared by the contexts of one tree (a child gets its parent's).
        self._tree = Tree()

    @staticmethod
    def start(
        db: Db | str,
        name: str,
        input: Json = None,
        *,
        wait: Seconds = 0.0,
        deadline: Seconds | None = None,
    ) -> Starting:
        """Creates the root workflow ``name``, or takes it over if it exists.

        ``await`` it for a ``Ctx``, or use it as ``async with Ctx.start(...)
        as ctx:``. A new name creates the workflow (``ctx.created``,
        ``ctx.attempt == 1``); an interrupted or failed one runs again as
        its next attempt, its completed steps replaying. Resuming a
        completed workflow gives a context whose steps all replay and whose
        :attr:`output` is the saved result; a step it never completed raises
        ``WorkflowFinished``. ``input`` must be JSON and have the same JSON
        form as the saved input of an existing workflow (``1`` and ``1.0``
        differ; else ``InputMismatch``). ``db`` may be a database URL string
        (one ``Db`` per URL per process is made and reused).

        A workflow held by another live holder (another process, another
        ``Db``, or another handle in this process) raises ``WorkflowBusy``,
        or, with ``wait`` (seconds or a timedelta, at most a year), is
        waited for: it may finish, be released, or its holder die. A holder
        that is dead (or whose lease expired) is taken over, and its writes
        are refused from then on (``LeaseLost``). ``deadline`` (at most a
        century): seconds from now by which a new workflow must complete
        (kept across restarts; children share their root's); past it, the
        next step raises ``DeadlineExceeded``. A cancelled workflow raises
        ``Cancelled``; a bad ``wait`` or ``deadline`` is a ``ConfigError``.
        """
        return Starting(start_root(db, name, input, wait=wait, deadline=deadline, workflow=None))

    # -- identity and state ------------------------------------------------

    @property
    def name(self) -> str:
        """The workflow's own name (a child's: not its parent's)."""
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
    def input(self) -> Any:
        """The workflow's input as saved: its JSON form, the same on every run."""
        return self._wf.input

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
        """``running``, ``completed``, ``failed``, or ``cancelled`` as soon as
        this handle was told of a cancel."""
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
        """The ``Db`` it runs on."""
        return self._db

    # -- steps and children --------------------------------------------------

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[], Awaitable[J]],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        at_most_once: bool = False,
    ) -> J: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[[], J],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        at_most_once: bool = False,
    ) -> J: ...

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
        ``fn`` is not called. Returns only after the result is committed, and
        returns the result's JSON form, exactly what a replay returns. If
        ``fn`` raises, the attempt is recorded failed (type, message,
        traceback); with ``retries``, an exception matching ``retry_on`` is
        retried after ``backoff``, else it propagates.

        ``at_most_once``: for side effects that must not repeat. The step's
        ``running`` marker is committed before ``fn`` runs, and a step found
        interrupted by a crash is not run again: it raises ``StepInterrupted``
        for a human to decide.

        ``name`` is unique within the workflow (steps and children share
        names): a second use in one run raises ``DuplicateStep`` without
        calling ``fn``. The options are checked before anything runs
        (``ConfigError``). A result that is not JSON, or over
        ``max_value_bytes``, fails the step with ``NotJson`` /
        ``ValueTooLarge`` before any of it is written. Once another holder
        took the workflow over, or it was cancelled, the step raises
        ``LeaseLost`` / ``Cancelled`` and so does every later call on this
        handle. A sync ``fn`` runs on the event loop's thread: run blocking
        work in a thread (``lambda: asyncio.to_thread(load, path)``).

        Called inside another step's body (of the same workflow tree), ``fn``
        simply runs: the outer step's saved result covers it.
        """
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be a callable taking no arguments, not {type(fn).__name__}")
        check_name("step", name)
        check_step_options(name, retries, backoff, retry_on, at_most_once)
        outer = in_step.get()
        if outer is not None and outer.root_id == self.root_id:
            return await call(fn)
        verdict, saved, number = self._wf.begin_step(name, at_most_once)
        if verdict == "replay":
            _otel.step_replayed()
            return saved
        if verdict == "interrupted":
            interrupted = StepInterrupted(saved)
            await record_failure(interrupted, lambda record: self._wf.fail_step(name, number, record))
            raise interrupted

        async def run(number: int, retried: int) -> Any:
            if at_most_once:
                await self._wf.mark_step_durably(name, number)
            else:
                self._wf.mark_step(name, number)
            with _otel.step_attempt(self.name, name, number) as report:
                with StepBody(self, number):
                    try:
                        result = await call(fn)
                    except Exception as exc:
                        report.failed(exc)
                        await record_failure(exc, lambda record: self._wf.fail_step(name, number, record))
                        if not may_retry(exc, retried, retries, retry_on):
                            raise
                        return RETRY
                try:
                    saving = self._wf.finish_step(name, number, result)
                except (NotJson, ValueTooLarge) as exc:
                    # The body ran but its result cannot be saved: that is the step's failure.
                    report.failed(exc)
                    await record_failure(exc, lambda record: self._wf.fail_step(name, number, record))
                    raise
                value = await (_otel.timed_commit(saving) if _otel.active() else saving)
                report.completed()
                return value

        return await run_attempts(self._tree, backoff, number, run)

    async def recv(self, topic: str, timeout: Seconds | None = None) -> Any:
        """Receives the oldest message sent to this workflow on ``topic``
        (see ``durable.send``), waiting up to ``timeout`` (seconds or a
        ``timedelta``; None: as long as it takes) for one; None if none came.

        Delivered exactly once: the message is taken in the statement that
        saves it as this workflow's step, named like an automatically named
        step (``topic``, ``topic#2``... in call order), so a replay receives
        the same message, or the same None, again. A message sent before the
        wait is kept for it. ``timeout`` is at most a year. Not inside a
        step's body (``DurableError``). A cancel ends the wait with
        ``Cancelled``; a long wait suspends a workflow run by an executor,
        as ``sleep`` does.
        """
        if not isinstance(topic, str):
            raise ConfigError(f"recv's topic must be a str, not {topic!r}")
        check_name("topic", topic)
        wait = MAX_WAIT if timeout is None else seconds("timeout", timeout, at_most=MAX_WAIT, zero_ok=True)
        self._refuse_in_step(f"ctx.recv({topic!r})")
        name = self.auto_name(topic)
        verdict, saved, number = self._wf.begin_step(name)
        if verdict == "replay":
            return saved
        message = await self._wf.recv(name, number, topic, 0.0)  # the first look
        if message is None and wait > 0:
            message = await self._recv_waiting(name, number, topic, timeout is not None, wait)
        if message is None:
            await self._wf.finish_step(name, number, None)
        return message

    async def _recv_waiting(self, name: str, number: int, topic: str, limited: bool, wait: float) -> Any:
        """The wait of ``recv`` for its message: in the process, or, in a
        workflow run by an executor and for longer than its
        ``suspend_after``, suspended until the message or the deadline
        (saved first, as step ``<name> until``, so that a resumed run waits
        only what is left). A ``send`` wakes a suspended workflow."""
        engine = self._db._engine
        until: int | None = None
        if limited:

            async def deadline() -> int:
                return await engine.db_now() + round(wait * 1e6)

            until = await self.step(derived(f"{name} until"), deadline)
        detail = f"waiting for a message on {topic!r} (step {name!r})"
        if until is not None:
            detail += f" until {_moment(from_micros(until))}"
        got: list[Any] = []

        async def wake(seconds: float) -> bool:
            message = await self._wf.recv(name, number, topic, seconds)
            if message is not None:
                got.append(message)
            return message is not None

        while True:
            woken = await self._wait(name, until, wake, "message", detail, topic=topic)
            if got:
                return got[0]
            message = await self._wf.recv(name, number, topic, 0.0)
            if message is not None or not woken:
                return message

    async def set_event(self, key: str, value: Json) -> None:
        """Publishes ``value`` as this workflow's event ``key``: readable at
        once with ``durable.get_event``. Checkpointed like a step (named
        ``event <key>``, ``#2``... in call order): a replay does not publish
        again, so an event is never rolled back to an earlier value."""
        if not isinstance(key, str):
            raise ConfigError(f"set_event's key must be a str, not {key!r}")
        check_name("event key", key)
        self._refuse_in_step(f"ctx.set_event({key!r})")
        name = self.auto_name(f"event {key}")
        verdict, _, number = self._wf.begin_step(name)
        if verdict == "replay":
            return
        await self._wf.set_event(name, number, key, value)

    def _refuse_in_step(self, call: str) -> None:
        outer = in_step.get()
        if outer is not None and outer.root_id == self.root_id:
            raise DurableError(
                f"{call} was called inside the body of a step of workflow {outer.name!r}: a step's body "
                "runs as one unit whose result is saved, so it cannot wait for messages or publish "
                "events; call it from the workflow itself"
            )

    @overload
    async def transaction(
        self,
        name: str,
        fn: Callable[[Transaction], Awaitable[J]],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> J: ...

    @overload
    async def transaction(
        self,
        name: str,
        fn: Callable[[Transaction], J],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> J: ...

    async def transaction(
        self,
        name: str,
        fn: Callable[[Transaction], Any],
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> Any:
        """Runs ``fn(tx)`` (sync or async, its awaitables awaited) inside the
        Postgres transaction that saves the step's JSON result: the writes
        made through ``tx`` and the checkpoint commit together or not at all.

        A replay returns the saved result without calling ``fn``. If ``fn``
        raises, the transaction rolls back, the attempt is recorded failed
        and, with ``retries``, retried like a step's. ``LeaseLost`` (another
        holder took the workflow) rolls everything back. Not inside a
        step's body. See "Transaction steps" and "Type mapping" in
        doc/api.md for ``tx`` and the types of its parameters and columns.
        """
        if not callable(fn):
            raise TypeError(f"transaction {name!r}: fn must be a callable taking tx, not {type(fn).__name__}")
        check_step_options(name, retries, backoff, retry_on, False)
        outer = in_step.get()
        if outer is not None and outer.root_id == self.root_id:
            raise DurableError(
                f"ctx.transaction({name!r}) was called inside the body of a step of workflow {outer.name!r}: "
                "a step's body runs as one unit whose result is saved; run the transaction from the workflow itself"
            )
        return await run_transaction(self, self._wf, self._tree, name, fn, retries, backoff, retry_on)

    def child(self, name: str, input: Json = None) -> Starting:
        """Creates (or resumes) the child workflow ``name`` with its own steps.

        The same rules as ``Ctx.start``; its name shares the parent's
        namespace of step names. Children may run concurrently. Use
        ``async with ctx.child(...) as c:`` or call ``await
        c.complete(result)`` yourself. A child of a finished parent is only
        read, to replay. Not inside a step's body (``DurableError``): a
        step's saved result stands for everything its body did.
        """
        check_name("child workflow", name)
        outer = in_step.get()
        if outer is not None and outer.root_id == self.root_id:
            raise DurableError(
                f"ctx.child({name!r}) was called inside the body of a step of workflow {outer.name!r}: "
                "a step's body runs as one unit whose result is saved, so it cannot start child "
                "workflows; start the child from the workflow itself"
            )

        async def start() -> Ctx:
            workflow = await self._wf.start_child(name, input)
            child = Ctx(self._db, workflow)
            child._suspend_after = self._suspend_after  # a child's wait suspends the whole tree
            child._tree = self._tree
            return child

        return Starting(start())

    # -- waiting -------------------------------------------------------------

    async def sleep(self, name: str, duration: Seconds | None = None, *, until: datetime | None = None) -> None:
        """Sleeps durably for ``duration`` (seconds or a ``timedelta``) or
        until ``until`` (an aware ``datetime``), on the database's clock.

        ``name`` identifies the sleep like a step's name (one namespace with
        the workflow's steps and children): its first run saves the wake-up
        time, and a resumed workflow sleeps only what is left of it (nothing
        once it passed). In a workflow run by an ``Executor``, a sleep longer
        than the executor's ``suspend_after`` does not hold the workflow in
        the process: the workflow is suspended (it goes back to waiting, due
        at its wake-up time, and frees its executor slot) and an executor
        resumes it when due, replaying its steps up to here. A direct run
        (``Workflow.run``, ``Ctx.start``) always sleeps in its process.

        A duration is at most a century (0 is fine); both or neither of
        ``duration`` and ``until``, or a naive ``until``, is a
        ``ConfigError`` before anything is saved.
        """
        check_name("sleep", name)
        if (duration is None) == (until is None):
            raise ConfigError(f"ctx.sleep({name!r}): give a duration or until=, not both or neither")
        engine = self._db._engine
        if until is not None:
            fixed = to_micros(moment(f"ctx.sleep({name!r}) until", until))

            async def wake_time() -> str:
                return from_micros(fixed).isoformat()

        else:
            assert duration is not None
            delay = round(seconds(f"ctx.sleep({name!r}) duration", duration, at_most=MAX_DURATION, zero_ok=True) * 1e6)

            async def wake_time() -> str:
                return from_micros(await engine.db_now() + delay).isoformat()

        saved = await self._sleep_step(name, wake_time)
        wake_at = datetime.fromisoformat(saved)
        detail = f"sleeping until {_moment(wake_at)} (step {name!r})"
        await self._wait(name, to_micros(wake_at), None, "sleep", detail)

    async def _sleep_step(self, name: str, wake_time: Callable[[], Awaitable[str]]) -> str:
        """The wake-up time of sleep ``name``: computed once and saved as a
        step, marked a sleep by the engine (``task.waiting``, kind ``sleep``:
        how a reader tells it from a step that returns a time); the saved
        one on a replay. Inside a step's body it is only computed, as a
        nested step's result is. Otherwise it is a step as ``step`` runs one
        (none starts while the tree is being suspended; a span of its own)."""
        outer = in_step.get()
        if outer is not None and outer.root_id == self.root_id:
            return await wake_time()
        verdict, saved, number = self._wf.begin_step(name)
        if verdict == "replay":
            _otel.step_replayed()
            return str(saved)

        async def run(number: int, retried: int) -> str:
            with _otel.step_attempt(self.name, name, number) as report:
                wake = await wake_time()
                await self._wf.save_sleep(name, number, wake)
                report.completed()
            return wake

        wake: str = await run_attempts(self._tree, None, number, run)
        return wake

    async def _wait(
        self,
        name: str,
        until: int | None,
        wake: Callable[[float], Awaitable[bool]] | None,
        kind: str,
        detail: str,
        *,
        waiting_on: str | None = None,
        topic: str | None = None,
        patient: bool = True,
    ) -> bool:
        """Waits until ``until`` (microseconds since the epoch on the
        database's clock; None: no time limit) or until ``wake`` says that
        what the caller waits for may have happened. The building block of
        every durable wait (sleeps, results of other runs, messages).

        ``wake(seconds)`` waits at most that long for the awaited thing and
        returns True if it may have come (early), False when the time ran
        out. Returns True when woken (the caller looks again, and calls
        ``_wait`` again if it is not there), False once ``until`` passed.

        In a workflow run by an executor (``_suspend_after`` set), outside a
        step's body, a wait that may last longer than ``_suspend_after``
        suspends the tree (``Workflow.suspend``: due at ``until``, or only
        when woken) and raises ``WorkflowSuspended`` to unwind the run. With
        a ``wake`` and ``patient``, it first waits ``_suspend_after`` in the
        process. ``name``, ``kind`` and ``detail`` say what waits (the step's
        name, ``sleep``/``result``/``recv``..., a sentence for humans);
        ``waiting_on`` names a root whose end wakes the suspended workflow;
        ``topic``, the topic of the message it waits for (a message of that
        topic already there refuses the suspension). ``wake`` ends early,
        False, when a graceful stop begins (the wait then suspends), and
        raises when the workflow's work stops (a cancel, a lost lease); so
        do the sleeps of this method. Step bodies in flight in the tree
        finish and save their results before it suspends (``_Tree``), so a
        suspension runs no body twice. A suspension refused because a wake came meanwhile (``Engine.wake``,
        or ``waiting_on`` finished) returns True (a sleep without ``wake``
        just goes on waiting). The caller must have saved, before calling,
        whatever makes the replay reach the same wait (a sleep saves its
        wake-up time first).
        """
        engine = self._db._engine
        outer = in_step.get()
        threshold = None if outer is not None and outer.root_id == self.root_id else self._suspend_after
        waiting = {"kind": kind, "step": name, "detail": detail}
        noted = False

        def draining() -> bool:
            """A graceful stop began: suspend rather than hold it up."""
            return threshold is not None and self._wf.draining

        async def note(wait: float) -> None:
            """Records a long wait in the process on the root, for ``durable.get``."""
            nonlocal noted
            if not noted and wait >= NOTE_WAITS_FROM:
                noted = True
                with contextlib.suppress(DurableError):
                    await self._wf.note_wait(waiting)

        try:
            while True:
                left = None if until is None else (until - await engine.db_now()) / 1e6
                if left is not None and left <= 0:
                    return False
                in_process = threshold is None or (left is not None and left <= threshold)
                if in_process and not draining():
                    wait = MAX_WAIT if left is None else left
                    await note(wait)
                    if wake is None:
                        if await self._unless_stopped(asyncio.sleep(wait), drain=threshold is not None) is _DRAINED:
                            continue
                        return False
                    if await wake(wait):
                        return True
                    continue
                if wake is not None and patient and not draining():
                    patient = False
                    await note(threshold or 0.0)
                    if await wake(threshold or 0.0):
                        return True
                    continue
                suspension = self._wf.suspend
                if await self._tree.suspend(lambda: suspension(until, waiting, waiting_on, topic)):
                    raise WorkflowSuspended(f"workflow {self.name!r} was suspended: {detail}")
                if wake is not None:
                    return True
        finally:
            if noted:  # a no-op once suspended (the root is no longer running here)
                with contextlib.suppress(DurableError):
                    await self._wf.note_wait(None)

    async def _unless_stopped(self, waiting: Awaitable[T], *, drain: bool = False) -> T | _Drained:
        """``await waiting``, unless the work of this workflow stops first
        (cancelled, its lease lost, released, suspended by another branch):
        then that is raised, as the next step would raise it, and the wait
        is given up. With ``drain``, a graceful stop beginning also ends the
        wait (``_DRAINED``): the caller suspends instead of holding it up."""
        wait = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._wf.stopped(drain))
        try:
            await asyncio.wait([wait, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wait, stop):
                if not task.done():
                    task.cancel()
        if wait.done() and not wait.cancelled():
            return wait.result()
        try:
            stop.result()
        except (LeaseLost, DurableError) as stopped:
            if self._tree.suspended:
                raise WorkflowSuspended(f"workflow {self.name!r} was suspended by another of its waits") from None
            raise stopped
        return _DRAINED

    async def _run_result(self, run: str) -> Any:
        """``Run.result()`` inside this workflow: a checkpointed wait.

        The step ``result <run>`` (``#2``... for later calls) saves how the
        run ended, once it has; a replay returns that. While the run is
        unfinished, the wait is ``_wait``'s: a workflow run by an executor
        suspends (at once if the run has not started yet, since it may need
        this run's slot of their queue) and is woken when the run finishes.
        """
        name = self.auto_name(f"result {run}")
        engine = self._db._engine
        detail = f"waiting for run {run!r} to finish (step {name!r})"

        async def finished(timeout: float) -> bool:
            state = await self._unless_stopped(engine.run_state(run, timeout), drain=self._suspend_after is not None)
            if isinstance(state, _Drained):
                return False
            return state is None or state[0] in FINISHED_STATUSES

        state = await engine.run_state(run, 0.0)
        if state is not None and state[0] not in FINISHED_STATUSES:
            # Recorded first: a wait that closes a cycle (this run waits,
            # through others maybe, for this workflow) is refused, WaitCycle.
            await self._wf.wait_on(run)
            try:
                while state is not None and state[0] not in FINISHED_STATUSES:
                    started = state[0] not in ("queued", "scheduled")
                    await self._wait(name, None, finished, "result", detail, waiting_on=run, patient=started)
                    state = await engine.run_state(run, 0.0)
            finally:
                if self._wf.status == "running":
                    with contextlib.suppress(DurableError):
                        await self._wf.wait_on(None)

        async def outcome() -> dict[str, Any]:
            state = await engine.run_state(run, 0.0)
            if state is None:
                raise WorkflowNotFound(f"there is no workflow named {run!r}")
            status, output, error = state
            return {"status": status, "output": output, "error": error}

        saved: dict[str, Any] = await self.step(name, outcome)
        if saved["status"] == "completed":
            return saved["output"]
        if saved["status"] == "failed":
            raise WorkflowFailed(run, saved["error"])
        raise Cancelled(f"workflow {run!r} was cancelled")

    # -- finishing -------------------------------------------------------------

    @overload
    async def complete(self) -> None: ...

    @overload
    async def complete(self, result: J) -> J: ...

    async def complete(self, result: Any = None) -> Any:
        """Marks the workflow completed with ``result`` (JSON) and returns its
        JSON form (what a replay returns).

        On a workflow that completed in an earlier run, returns the saved result.
        After this run completed or failed the workflow, any later write (a
        step still in flight, ``fail``, ``complete`` after ``fail``) raises
        ``WorkflowFinished``.
        """
        if self._wf.status == "completed":
            return self._wf.output
        return await self._wf.complete(result)

    async def fail(self, exc: BaseException) -> None:
        """Marks the workflow failed with the error's type, module, message
        and traceback (see "What is saved of an error" in doc/api.md)."""
        record = error_record(exc)
        try:
            recording = self._wf.fail(record)
        except ValueTooLarge:
            recording = self._wf.fail(error_record(exc, brief=True))
        await recording

    async def run(self, fn: Callable[[Ctx, Any], Awaitable[J]], input: Any = _SAVED) -> J:
        """Runs a workflow function as this workflow: completes it with the
        function's result, or fails it if the function raises. A workflow
        completed in an earlier run returns its saved result without running.
        With a deadline, the function is interrupted when it passes.

        The function is given the workflow's input as saved (its JSON form,
        the same on every run). ``input``, if given, must have the same JSON
        form (else ``InputMismatch``). Past the deadline the workflow fails
        with ``DeadlineExceeded``. If the function is interrupted by a
        ``BaseException`` (its task cancelled, ``asyncio.wait_for`` ran out),
        the workflow is released, not failed, and the exception propagates.
        """
        if input is not _SAVED and not self._wf.same_input(input):
            raise InputMismatch(f"ctx.run() was given another input than workflow {self.name!r} was started with")
        if self._wf.status == "completed":
            saved: J = self._wf.output
            return saved
        function = f"{fn.__module__}.{fn.__qualname__}"
        outcome = "interrupted"
        token = current.set(self)
        try:
            with _otel.workflow_span(self.name, function, self.attempt):
                try:
                    deadline = asyncio.timeout(self._wf.deadline_in)
                    try:
                        async with deadline:
                            result = await fn(self, self._wf.input)
                    except TimeoutError as exc:
                        if deadline.expired():
                            raise DeadlineExceeded(f"workflow {self.name!r} passed its deadline") from exc
                        raise
                except Exception as exc:
                    outcome = "failed"
                    try:
                        await record_failure(exc, self._wf.fail)
                    finally:
                        # Not recorded (the database failed, or the run was
                        # cancelled): let a new run resume it, or free the
                        # cancelled run's queue slot now that its body stopped.
                        if self._wf.status in ("running", "cancelled"):
                            self._wf.release_soon()
                    raise
                except WorkflowSuspended:
                    outcome = "suspended"  # the tree left this process already: nothing to release
                    raise
                except BaseException:
                    # Cancelled or interrupted, not failed: give the workflow up so the
                    # same or another process can resume it at once.
                    await self._release_on_interrupt()
                    raise
                finally:
                    current.reset(token)
                try:
                    completed = await self.complete(result)
                except BaseException:
                    # Not completed (interrupted while saving it, or refused):
                    # given up as any interrupted run, so that it resumes at once.
                    if self._wf.status in ("running", "cancelled"):
                        await self._release_on_interrupt()
                    raise
                outcome = "completed"
                return completed
        finally:
            _otel.workflow_ended(function, outcome)

    async def release(self) -> None:
        """Gives the workflow up without finishing it: this handle (and, on a
        root, every handle of its tree) does no more work, and anyone (this
        process, another one) may resume the workflow at once. Returns once
        the database lets them. A finished workflow has nothing to release.

        ``Workflow.run``, ``ctx.run`` and ``async with`` release by themselves
        when interrupted (a cancelled task, ``KeyboardInterrupt``), and a
        handle that is garbage-collected unfinished releases its workflow too.
        """
        await self._wf.release()

    def auto_name(self, base: str) -> str:
        """``base`` on first use in this run, then ``base#2``, ``base#3``...,
        shortened (see "Derived names" in doc/api.md) when longer than a
        name may be. How decorated steps, ``enqueue``, ``send``... inside a
        workflow name their steps.

        Deterministic as long as the workflow's own code calls in the same
        order: steps called inside a step's body are plain calls and take no
        name, so a replayed step never shifts the names after it."""
        count = self._auto_names.get(base, 0) + 1
        self._auto_names[base] = count
        return derived(base if count == 1 else f"{base}#{count}")

    async def _release_on_interrupt(self) -> None:
        """Releases the workflow while an interruption (a cancel) propagates.
        Waits for the database for at most ``RELEASE_WAIT`` seconds, so that
        whoever awaited the cancelled run finds the workflow free at once, yet
        a cancel is never held up long by a database that does not answer
        (the release then completes in the background)."""
        releasing = self._wf.release()
        try:
            await asyncio.wait_for(asyncio.shield(releasing), RELEASE_WAIT)
        except (Exception, asyncio.CancelledError):
            pass  # the interruption that brought us here is what propagates

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
            await record_failure(exc, self._wf.fail)
        elif not isinstance(exc, Exception):
            await self._release_on_interrupt()

    def __repr__(self) -> str:
        return f"<Ctx {self.name!r} id={self.id} {self.status} attempt={self.attempt}>"


async def start_root(
    db: Db | str, name: str, input: Any, *, wait: Seconds, deadline: Seconds | None, workflow: str | None
) -> Ctx:
    """``Ctx.start``, for a root run by the registered function ``workflow`` (or by hand: None)."""
    check_name("workflow", name)
    wait_s = seconds("wait", wait, at_most=MAX_WAIT, zero_ok=True)
    deadline_s = None if deadline is None else seconds("deadline", deadline, at_most=MAX_DURATION)
    resolved = await resolve(db)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_s
    delay = 0.05
    while True:
        try:
            handle = await resolved._engine.start(name, input, deadline_s, workflow)
            return Ctx(resolved, handle)
        except WorkflowBusy:
            left = give_up - loop.time()
            if left <= 0:
                raise
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)


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


def _moment(moment: datetime) -> str:
    """A time for humans: UTC, to the millisecond."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
