"""The ``Executor``: runs queued, delayed and recovered workflows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from . import _core, _otel
from ._ctx import SUSPEND_AFTER, Ctx, WorkflowSuspended
from ._db import Db, resolve
from ._decorators import Workflow
from ._options import Seconds, count, seconds
from ._schedules import CONFIRM_EVERY, FORGET_AFTER, from_micros, tick_run_name, tick_text, to_micros
from .errors import ConfigError, DurableError
from ._names import text

log = logging.getLogger("durable")

#: How often an executor counts the runs waiting in each queue, in seconds,
#: for the ``durable.queue.depth`` gauge (only with OpenTelemetry).
DEPTHS_EVERY = 10.0

#: Shortest wait, in seconds, for a run said to come due now: a due run that
#: the claims did not take is held back by something time does not end.
MIN_WAIT = 0.1

#: How much further back than the claims' own duration a delayed run that
#: came due counts as due now, in seconds (the database's clock and this
#: process's may tick apart by that much between two statements).
LOOKBACK = 0.02


class Executor:
    """Runs the queued runs of the workflows it is given, across any number
    of executor processes on one database.

    ``concurrency``: most runs at once in this executor (each queue's own
    limits hold across all executors). ``version``: the executor resumes only
    runs it started itself or that no executor started yet, and stamps its
    version on what it claims (so a new deployment does not resume the runs
    of an old one). ``max_recoveries``: a run whose holder died that many
    times is failed instead of being taken up again. ``poll``: the longest
    wait for work when no notification comes (they normally do).
    ``recovery_interval``: how often the runs of dead holders are looked
    for. ``shutdown_grace``: on SIGTERM (or when ``run()`` is cancelled) the
    executor stops claiming, lets its runs reach their next checkpoint for
    that long, and releases them for another executor to resume at once.
    ``suspend_after`` (default 60 s): a run that has to wait longer than
    this (``ctx.sleep``, ``run.result()`` of another run) is suspended: it
    leaves the executor, freeing its slot, and is claimed again (by any
    executor) when it is due or woken.
    """

    def __init__(
        self,
        db: Db | str,
        workflows: Iterable[Workflow[Any, Any]],
        *,
        concurrency: int = 100,
        version: str | None = None,
        max_recoveries: int = 5,
        poll: Seconds = 5.0,
        recovery_interval: Seconds = 1.0,
        shutdown_grace: Seconds = 30.0,
        suspend_after: Seconds = SUSPEND_AFTER,
    ) -> None:
        self._db = db
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        for workflow in workflows:
            if not isinstance(workflow, Workflow):
                raise ConfigError(f"Executor(workflows=...) takes @durable.workflow functions, not {workflow!r}")
            known = self._workflows.setdefault(workflow.name, workflow)
            if known is not workflow and known.fn is not workflow.fn:
                raise ConfigError(f"two workflows are registered as {workflow.name!r}; give one of them another name=")
        if not self._workflows:
            raise ConfigError("an Executor needs at least one workflow")
        if version is not None:
            text("version", version)
        self._concurrency = count("concurrency", concurrency, at_least=1, at_most=100_000)
        self._version = version
        self._max_recoveries = count("max_recoveries", max_recoveries, at_least=0, at_most=1_000_000)
        self._poll = seconds("poll", poll, at_most=3600)
        self._recovery_interval = seconds("recovery_interval", recovery_interval, at_most=3600)
        self._shutdown_grace = seconds("shutdown_grace", shutdown_grace, at_most=86400, zero_ok=True)
        self._suspend_after = seconds("suspend_after", suspend_after, at_most=86400, zero_ok=True)
        # Queues in a stable order; None: recovered runs of no queue (direct runs).
        self._queues: list[str | None] = [*sorted({w.queue for w in self._workflows.values()}), None]
        self._running: dict[asyncio.Task[None], _core.Workflow] = {}
        #: Set by stop() (or SIGTERM), also before run() began: run() then
        #: returns at once. Cleared when run() returns, for a later run().
        self._stop = asyncio.Event()
        #: Set when a run ended while the last claims left no free slot:
        #: what they could not take may be claimed now. (The notification of
        #: the run's end may come before its task is gone: claims made then
        #: find no free slot, and nothing else would say that one is free.)
        self._freed = asyncio.Event()
        self._full = False
        #: Runs due in each queue, counted every ``DEPTHS_EVERY`` seconds at
        #: a recovery pass (for the ``durable.queue.depth`` gauge; kept only
        #: with OpenTelemetry).
        self.queue_depths: dict[str, int] = {}
        _otel.watch(self)

    @property
    def running(self) -> int:
        """How many runs this executor runs now."""
        return len(self._running)

    def stop(self) -> None:
        """Asks ``run()`` to stop gracefully (as SIGTERM does); called before
        ``run()`` began, it makes ``run()`` return at once."""
        self._stop.set()

    async def run(self) -> None:
        """Claims and runs workflows until cancelled, ``stop()`` or SIGTERM,
        then stops gracefully (see ``shutdown_grace``).

        It looks for work only when something may have changed: a
        notification (a run queued, finished, released or woken, suspended,
        a queue resumed or its limits changed), the next delayed run or rate
        window coming due, a schedule's tick, and at the latest every
        ``poll`` seconds; and when one of its runs ends while the last claims
        found it full. Waiting runs that it cannot claim (a
        paused or full queue, another version) cost it nothing meanwhile.
        """
        db = await resolve(self._db)
        engine = db._engine
        names = list(self._workflows)
        loop = asyncio.get_running_loop()
        stop = self._stop
        sigterm = _on_sigterm(loop, stop)
        clock = _Ticker(engine, [w for w in self._workflows.values() if w.schedule is not None])
        registration: int | None = None
        try:
            registration = await engine.register_executor(names, self._version)
            await clock.register()
            next_recovery = next_depths = loop.time()
            claimed_for: int | None = None  # the work version the last claims saw
            next_poll = due_at = math.inf
            isolated_waiting = False
            while not stop.is_set():
                seen = engine.work_version()
                await clock.queue_due()
                if loop.time() >= next_recovery:
                    found = await engine.recover(names, self._max_recoveries, self._version)
                    _otel.recovered(found["requeued"], found["failed"])
                    if _otel.active() and loop.time() >= next_depths:
                        self.queue_depths = {q["name"]: q["queued"] for q in await engine.list_queues()}
                        next_depths = loop.time() + DEPTHS_EVERY
                    if found["requeued"] or found["failed"]:
                        log.info(
                            "recovered the runs of dead holders: %d requeued, %d failed",
                            found["requeued"],
                            found["failed"],
                        )
                    # Runs may wait in queues no workflow declares (queued from SQL).
                    new = sorted(set(found["queues"]) - set(self._queues))
                    if new:
                        self._queues[-1:-1] = new
                        claimed_for = None
                    if found["isolated_waiting"] != isolated_waiting:
                        isolated_waiting = found["isolated_waiting"]
                        claimed_for = None
                    next_recovery = loop.time() + self._recovery_interval
                now = loop.time()
                if seen != claimed_for or self._freed.is_set() or now >= due_at or now >= next_poll:
                    claimed_for = seen
                    self._freed.clear()
                    due_at = math.inf
                    began = loop.time()
                    self._full = await self._claim(db, names, isolated_waiting)
                    if self._concurrency > len(self._running):
                        # Free slots left: when may something come due?
                        since = loop.time() - began + LOOKBACK
                        due = await engine.next_due(names, self._version, since)
                        if due is not None:
                            due_at = loop.time() + max(due, MIN_WAIT)
                    next_poll = loop.time() + self._poll
                timeout = min(next_poll, next_recovery, due_at) - loop.time()
                timeout = max(0.0, min(timeout, clock.until_next()))
                await _first(engine.work_changed(seen, timeout), stop.wait(), self._freed.wait())
        finally:
            if sigterm:
                loop.remove_signal_handler(signal.SIGTERM)
            await self._shut_down()
            if registration is not None:
                with contextlib.suppress(DurableError):
                    await engine.unregister_executor(registration)
            stop.clear()

    async def _claim(self, db: Db, names: list[str], isolated_waiting: bool) -> bool:
        """Claims what this executor may take now, queue by queue; True when
        its own runs left it no room for more. A run recovered from a crash
        it shared (isolated) runs alone: claimed only while nothing else
        runs here, and nothing is claimed beside it; while one waits, this
        executor takes no new work until it is idle."""
        engine = db._engine
        if isolated_waiting:
            if self._running:
                return True  # make room: the isolated run needs an idle executor
            for queue in self._queues:
                for name, handle in await engine.claim(queue, 1, names, self._version, isolated=True):
                    self._start(db, self._workflows[name], handle)
                    return True
        free = self._concurrency - len(self._running)
        for queue in self._queues:
            if free <= 0:
                return True
            began = asyncio.get_running_loop().time()
            claimed = await engine.claim(queue, free, names, self._version)
            _otel.claimed(asyncio.get_running_loop().time() - began, queue)
            for name, handle in claimed:
                self._start(db, self._workflows[name], handle)
                free -= 1
        return free <= 0

    def _start(self, db: Db, workflow: Workflow[Any, Any], handle: _core.Workflow) -> None:
        task = asyncio.ensure_future(self._execute(db, workflow, handle))
        self._running[task] = handle
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._full:
            self._full = False
            self._freed.set()

    async def _execute(self, db: Db, workflow: Workflow[Any, Any], handle: _core.Workflow) -> None:
        ctx = Ctx(db, handle)
        ctx._suspend_after = self._suspend_after
        try:
            await ctx.run(workflow.body())
        except Exception as exc:  # recorded as the run's failure by ctx.run
            log.info("workflow %r (%s) failed: %s: %s", ctx.name, workflow.name, type(exc).__name__, exc)
        except WorkflowSuspended as suspended:  # waits in the database; an executor resumes it
            log.debug("%s", suspended)

    async def _shut_down(self) -> None:
        """Stops the running runs at their next checkpoint, within the grace;
        interrupts what is left. Each run ends completed, failed, suspended
        or released back to its queue (no recovery counted) before this
        returns, so a deploy never looks like a crash."""
        if not self._running:
            return
        log.info("stopping: %d runs finish their current step, then are released", len(self._running))
        for handle in self._running.values():
            handle.drain()
        handles = list(self._running.values())
        tasks = list(self._running)
        _, late = await asyncio.wait(tasks, timeout=self._shutdown_grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        # A run whose task ended still holding its workflow (cancelled
        # before it began) gives it back too; for the others this is a no-op.
        for handle in handles:
            with contextlib.suppress(DurableError):
                await handle.release()


class _Ticker:
    """Queues the runs of scheduled workflows as their ticks come due.

    Each spec of a function has its own stored schedule; this executor
    advances those of its own specs only, and confirms them every
    ``CONFIRM_EVERY`` seconds, removing the function's other specs that no
    executor has confirmed for ``FORGET_AFTER``. So during a rolling deploy
    that changes a schedule, old and new executors queue both specs' ticks
    (a tick time both produce is one run: its name is the same), and the old
    spec stops with its last executor.

    Tick times are microseconds since the epoch on the database's clock;
    ``offset`` is how far that clock is ahead of this machine's, as last read.
    """

    def __init__(self, engine: _core.Engine, scheduled: list[Workflow[Any, Any]]) -> None:
        self._engine = engine
        self._scheduled = scheduled
        self._next: dict[str, int] = {}
        self._offset = 0
        #: When to confirm the schedules again (database clock).
        self._confirm_at = 0

    def _now(self) -> int:
        return to_micros(datetime.now(timezone.utc)) + self._offset

    def _read(self, now: int) -> None:
        self._offset = now - to_micros(datetime.now(timezone.utc))

    async def register(self) -> None:
        """Registers (or confirms) each schedule of this executor."""
        for workflow in self._scheduled:
            await self._register(workflow)
        self._confirm_at = self._now() + int(CONFIRM_EVERY * 1_000_000)

    async def _register(self, workflow: Workflow[Any, Any]) -> None:
        assert workflow.schedule is not None
        spec = workflow.schedule.spec
        first = to_micros(workflow.schedule.after(from_micros(self._now())))
        next_tick, now, forgotten = await self._engine.schedule(workflow.name, spec, first, FORGET_AFTER)
        self._read(now)
        self._next[workflow.name] = next_tick
        for old in forgotten:
            log.info("schedule %r of %s removed: no executor has served it for %.0f s", old, workflow.name, FORGET_AFTER)

    async def queue_due(self) -> None:
        """Queues the runs of every tick that came due (once across executors)."""
        if self._now() >= self._confirm_at:
            await self.register()
        for workflow in self._scheduled:
            if self._now() < self._next[workflow.name]:
                continue
            schedule = workflow.schedule
            assert schedule is not None
            state = await self._engine.schedule_state(workflow.name, schedule.spec)
            if state is None:
                await self._register(workflow)  # removed as unserved while this executor was away: ours again
                continue
            next_tick, now = state
            self._read(now)
            if next_tick > now:
                self._next[workflow.name] = next_tick
                continue
            ticks, after = schedule.due(from_micros(next_tick), from_micros(now))
            texts = [tick_text(tick) for tick in ticks]
            names = [tick_run_name(workflow.name, tick) for tick in ticks]
            queued = await self._engine.advance_schedule(
                workflow.name, schedule.spec, workflow.queue, next_tick, to_micros(after), names, list(texts)
            )
            if queued:
                log.info("queued %s", ", ".join(names))
            # Not queued: another executor advanced it first; read it again next time.
            self._next[workflow.name] = to_micros(after) if queued else next_tick

    def until_next(self) -> float:
        """Seconds until the next tick of any schedule, or the next
        confirmation (a long time if there are no schedules)."""
        if not self._next:
            return 3600.0
        return max(0.0, (min(*self._next.values(), self._confirm_at) - self._now()) / 1_000_000)


def _on_sigterm(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> bool:
    """Makes SIGTERM set ``stop``, where the loop can (its main thread)."""
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def _first(*waits: Any) -> None:
    """Waits for the first of the awaitables; drops the others. A cancel of
    the caller is never swallowed (``asyncio.wait`` raises only that one)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
