"""OpenTelemetry spans and metrics, when ``opentelemetry-api`` is installed
(``pip install 'durable-pg[otel]'``); nothing at all otherwise.

durable only uses the API: the application configures the SDK and its
exporters (OTLP, Prometheus...) as usual, and until it does, every span and
instrument is a no-op.

Spans: ``durable.workflow`` around a workflow function run by ``ctx.run``,
``Workflow.run`` or an executor; ``durable.step`` around each attempt of a
step (replays make none). Attributes: ``durable.workflow`` (the run's name),
``durable.function`` (the workflow function, ``module.qualname``),
``durable.step``, ``durable.attempt``.

Metrics: the instruments made below, listed in doc/api.md ("OpenTelemetry").
"""

from __future__ import annotations

import importlib.util
import sys
import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._executor import Executor

T = TypeVar("T")

#: True when opentelemetry-api is installed. It is imported only once the
#: application has imported it (it must, to set a provider): importing it
#: costs about 30 ms of every process's start, the CLI's included.
ENABLED = importlib.util.find_spec("opentelemetry") is not None

#: The providers the API returns until the application sets its own: with
#: them every span and instrument is a no-op. (By class name: the proxy
#: classes are private to the API.)
_UNSET_PROVIDERS = frozenset({"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"})

#: How long a "no provider" answer of ``active`` is kept: asking the API
#: reads the environment (``os.environ``) twice, about 10 µs a step.
_RECHECK = 0.5
#: Whether a provider was seen (a provider, once set, stays), and until when
#: a "no provider" answer holds.
_seen = False
_unset_until = 0.0

#: The executors of this process, for the gauges of running runs and queue depth.
_executors: weakref.WeakSet[Executor] = weakref.WeakSet()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("durable-pg")
    except PackageNotFoundError:
        return "0"


class _Api:
    """The API's modules, durable's tracer and its instruments."""

    def __init__(self) -> None:
        import opentelemetry.metrics as metrics
        import opentelemetry.trace as trace

        self.trace, self.metrics = trace, metrics
        self.tracer = trace.get_tracer("durable", _version())
        meter = metrics.get_meter("durable", _version())
        self.steps = meter.create_counter("durable.steps", unit="{step}", description="Step attempts by outcome")
        self.workflows = meter.create_counter(
            "durable.workflows", unit="{workflow}", description="Workflow function runs by outcome"
        )
        self.step_duration = meter.create_histogram(
            "durable.step.duration", unit="s", description="A step attempt: its body and the commit of its result"
        )
        self.commit_duration = meter.create_histogram(
            "durable.commit.duration", unit="s", description="From a step's result to its commit"
        )
        self.claim_duration = meter.create_histogram(
            "durable.claim.duration", unit="s", description="One claim of runs from a queue by an executor"
        )
        self.recoveries = meter.create_counter(
            "durable.recoveries", unit="{run}", description="Runs of dead holders put back (requeued) or failed"
        )
        meter.create_observable_gauge(
            "durable.executor.running", [self._running], unit="{run}", description="Runs this process's executors run now"
        )
        meter.create_observable_gauge(
            "durable.queue.depth",
            [self._depth],
            unit="{run}",
            description="Runs waiting in each queue (as of the executors' last look)",
        )

    def provider_set(self) -> bool:
        return (
            type(self.trace.get_tracer_provider()).__name__ not in _UNSET_PROVIDERS
            or type(self.metrics.get_meter_provider()).__name__ not in _UNSET_PROVIDERS
        )

    def _running(self, _: Any) -> Iterable[Any]:
        yield self.metrics.Observation(sum(executor.running for executor in list(_executors)))

    def _depth(self, _: Any) -> Iterable[Any]:
        depths: dict[str, int] = {}
        for executor in list(_executors):
            depths.update(executor.queue_depths)
        for queue, depth in depths.items():
            yield self.metrics.Observation(depth, {"durable.queue": queue})


_loaded: _Api | None = None


def _api() -> _Api | None:
    """The API, loaded once the application has imported it; None until then."""
    global _loaded
    if _loaded is None and ENABLED and ("opentelemetry.trace" in sys.modules or "opentelemetry.metrics" in sys.modules):
        _loaded = _Api()
    return _loaded


def active() -> bool:
    """True when the application has set a tracer or a meter provider.

    Until then durable skips its spans and measurements altogether: even
    no-op spans cost about 20 µs a step (measured), a third of a step under
    group commit. A provider set later is honoured within half a second.
    """
    global _seen, _unset_until
    if _seen or not ENABLED:
        return _seen
    now = time.monotonic()
    if now < _unset_until:
        return False
    api = _api()
    _seen = api is not None and api.provider_set()
    _unset_until = now + _RECHECK
    return _seen


def _on() -> _Api:
    """The API, once ``active()`` said yes."""
    assert _loaded is not None
    return _loaded


def watch(executor: Executor) -> None:
    """Counts ``executor`` in the running and queue depth gauges."""
    _executors.add(executor)


def workflow_span(name: str, function: str, attempt: int) -> AbstractContextManager[Any]:
    """The span of a workflow function's run."""
    if not active():
        return nullcontext()
    attributes: dict[str, str | int] = {"durable.workflow": name, "durable.function": function, "durable.attempt": attempt}
    span: AbstractContextManager[Any] = _on().tracer.start_as_current_span("durable.workflow", attributes=attributes)
    return span


def workflow_ended(function: str, outcome: str) -> None:
    """Counts a workflow function's run: ``completed``, ``failed``, ``suspended`` or ``interrupted``."""
    if active():
        _on().workflows.add(1, {"durable.function": function, "outcome": outcome})


class Attempt:
    """What a step reports of one attempt: its outcome."""

    def completed(self) -> None:
        """The attempt's result is committed."""

    def failed(self, error: BaseException) -> None:
        """The attempt's body raised ``error`` (kept on its span)."""


class _TracedAttempt(Attempt):
    def __init__(self, span: Any) -> None:
        self.span = span
        self.outcome = "failed"

    def completed(self) -> None:
        self.outcome = "completed"

    def failed(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(_on().trace.Status(_on().trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextmanager
def _step_attempt(workflow: str, step: str, attempt: int) -> Iterator[Attempt]:
    attributes: dict[str, str | int] = {"durable.workflow": workflow, "durable.step": step, "durable.attempt": attempt}
    api = _on()
    started = time.perf_counter()
    with api.tracer.start_as_current_span("durable.step", attributes=attributes) as span:
        traced = _TracedAttempt(span)
        try:
            yield traced
        finally:
            api.steps.add(1, {"outcome": traced.outcome})
            api.step_duration.record(time.perf_counter() - started, {"outcome": traced.outcome})


_NO_STEP: AbstractContextManager[Attempt] = nullcontext(Attempt())


def step_attempt(workflow: str, step: str, attempt: int) -> AbstractContextManager[Attempt]:
    """The span and metrics of one attempt of a step."""
    return _step_attempt(workflow, step, attempt) if active() else _NO_STEP


def step_replayed() -> None:
    if active():
        _on().steps.add(1, {"outcome": "replayed"})


async def timed_commit(saving: Awaitable[T]) -> T:
    """Awaits a step's commit, recording how long it took."""
    began = time.perf_counter()
    value = await saving
    _on().commit_duration.record(time.perf_counter() - began)
    return value


def claimed(seconds: float, queue: str | None) -> None:
    if api := _api():
        api.claim_duration.record(seconds, {"durable.queue": queue or ""})


def recovered(requeued: int, failed: int) -> None:
    if api := _api():
        api.recoveries.add(requeued, {"outcome": "requeued"})
        api.recoveries.add(failed, {"outcome": "failed"})
