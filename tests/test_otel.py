"""OpenTelemetry: spans per workflow and step attempt, and the engine's metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import durable
from _waits import until
from durable import Ctx, _otel


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of ``metric`` by their attributes (sums, gauge values or histogram counts)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name != metric:
                        continue
                    for point in m.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            found[key] = point.count
                        elif isinstance(point, NumberDataPoint):
                            found[key] = point.value
        return found


@pytest.fixture(scope="module")
def telemetry() -> Iterator[Telemetry]:
    """SDK providers for the process (they can be set once): every span and metric from here on."""
    made = Telemetry()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(made.spans))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[made.reader]))
    # Steps run before (other tests) saw no provider: durable looks again
    # within half a second. Wait until it has.
    deadline = time.monotonic() + 5
    while not _otel.active():
        assert time.monotonic() < deadline, "durable never saw the providers"
        time.sleep(0.01)
    yield made


flaky_calls = 0


@durable.workflow(name="otel.traced", queue="otel")
async def traced(ctx: Ctx, n: int) -> int:
    async def flaky() -> int:
        global flaky_calls
        flaky_calls += 1
        if flaky_calls == 1:
            raise ConnectionError("first try fails")
        return n

    a = await ctx.step("a", lambda: 1)
    b = await ctx.step("b", flaky, retries=1, backoff=durable.Backoff(initial=0.001))
    return a + b


async def test_spans_of_a_workflow_and_each_step_attempt(db: durable.Db, telemetry: Telemetry) -> None:
    telemetry.spans.clear()
    steps_before = telemetry.points("durable.steps")
    assert await traced.run(db, "traced-1", 41) == 42
    spans = telemetry.spans.get_finished_spans()
    [workflow] = [s for s in spans if s.name == "durable.workflow"]
    assert workflow.attributes is not None
    assert workflow.attributes["durable.workflow"] == "traced-1"
    assert workflow.attributes["durable.function"] == f"{__name__}.traced"
    steps = sorted(
        (s.attributes["durable.step"], s.attributes["durable.attempt"], s.status.status_code)
        for s in spans
        if s.name == "durable.step" and s.attributes is not None
    )
    assert steps == [("a", 1, StatusCode.UNSET), ("b", 1, StatusCode.ERROR), ("b", 2, StatusCode.UNSET)]
    for span in spans:
        if span.name == "durable.step":
            assert span.parent is not None and span.parent.span_id == workflow.context.span_id
            assert span.context.trace_id == workflow.context.trace_id

    after = telemetry.points("durable.steps")
    grew = {key: value - steps_before.get(key, 0) for key, value in after.items()}
    assert grew[(("outcome", "completed"),)] == 2
    assert grew[(("outcome", "failed"),)] == 1
    workflows = telemetry.points("durable.workflows")
    assert workflows[(("durable.function", f"{__name__}.traced"), ("outcome", "completed"))] >= 1
    assert sum(telemetry.points("durable.step.duration").values()) >= 3
    assert sum(telemetry.points("durable.commit.duration").values()) >= 2


async def test_a_replayed_step_makes_no_span_and_is_counted(db: durable.Db, telemetry: Telemetry) -> None:
    ctx = await Ctx.start(db, "replayed")
    await ctx.step("x", lambda: 1)
    await ctx.release()
    telemetry.spans.clear()
    before = telemetry.points("durable.steps").get((("outcome", "replayed"),), 0)
    again = await Ctx.start(db, "replayed")
    assert await again.step("x", lambda: 2) == 1
    assert telemetry.points("durable.steps")[(("outcome", "replayed"),)] == before + 1
    assert [s for s in telemetry.spans.get_finished_spans() if s.name == "durable.step"] == []
    await again.complete(None)


async def test_executor_metrics(db: durable.Db, telemetry: Telemetry) -> None:
    gate = asyncio.Event()

    @durable.workflow(name="otel.gated", queue="otel-gated")
    async def gated(ctx: Ctx, _: None) -> str:
        await ctx.step("wait", gate.wait)
        return "open"

    @durable.workflow(name="otel.held", queue="otel-held")
    async def held(ctx: Ctx, _: None) -> None:
        return None

    await durable.create_queue(db, "otel-held")
    await durable.pause_queue(db, "otel-held")
    for i in range(3):
        await held.enqueue(db, f"held-{i}", None)
    executor = durable.Executor(db, [gated, held], concurrency=5)
    task = asyncio.ensure_future(executor.run())
    try:
        run = await gated.enqueue(db, "gated-1", None)

        async def running() -> bool:
            shown: int = telemetry.points("durable.executor.running").get((), 0)
            return shown >= 1

        await until(running, "the running gauge shows the run")
        depths = telemetry.points("durable.queue.depth")  # counted at the executor's first pass
        assert depths[(("durable.queue", "otel-held"),)] == 3
        claims = telemetry.points("durable.claim.duration")
        assert claims.get((("durable.queue", "otel-gated"),), 0) >= 1
        gate.set()
        assert await run.result(timeout=30) == "open"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_nothing_is_measured_until_the_application_sets_a_provider() -> None:
    """Installed but not configured, the API would make no-op spans at a cost: durable makes none."""
    program = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from durable import _otel
assert _otel.ENABLED and not _otel.active()
assert _otel.step_attempt("w", "s", 1) is _otel._NO_STEP
trace.set_tracer_provider(TracerProvider())
# Seen at a later look (a "no provider" answer is kept half a second).
import time
deadline = time.monotonic() + 5
while not _otel.active():
    assert time.monotonic() < deadline, "the provider set is never seen"
    time.sleep(0.01)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    program = program.replace("trace.set_tracer_provider(TracerProvider())", "metrics.set_meter_provider(MeterProvider())")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
