"""Per-step options (retries, at-most-once), attempts, deadlines, cancellation, size limits."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import asyncpg
import pytest

import durable
from durable import Backoff, Ctx

FAST = Backoff(initial=0.01, factor=2.0, max=0.05, jitter=0.0)


async def step_row(pg: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await pg.fetchrow("SELECT * FROM task WHERE name = $1 AND kind = 'step'", name)
    assert row is not None, name
    return row


async def test_the_attempt_number_is_visible_to_the_body(db: durable.Db) -> None:
    seen: list[int] = []

    def body() -> int:
        seen.append(durable.attempt())
        if len(seen) < 3:
            raise ConnectionError("flaky")
        return durable.attempt()

    ctx = await Ctx.start(db, "wf")
    assert await ctx.step("s", body, retries=5, backoff=FAST) == 3
    assert seen == [1, 2, 3]
    with pytest.raises(LookupError, match="only known inside a step"):
        durable.attempt()


async def test_retries_follow_the_backoff_and_record_each_attempt(db: durable.Db, pg: asyncpg.Connection) -> None:
    attempts: list[tuple[float, str | None]] = []

    async def body() -> str:
        row = await pg.fetchrow("SELECT status, attempt, error ->> 'message' AS message FROM task WHERE name = 's'")
        attempts.append((time.monotonic(), None if row is None else f"{row['status']}/{row['attempt']}/{row['message']}"))
        if len(attempts) < 3:
            raise TimeoutError(f"try {len(attempts)}")
        return "ok"

    ctx = await Ctx.start(db, "wf")
    backoff = Backoff(initial=0.1, factor=2.0, max=1.0, jitter=0.0)
    assert await ctx.step("s", body, retries=3, backoff=backoff, retry_on=TimeoutError) == "ok"
    # Before each retry the failed attempt was saved; the body sees it (its
    # marker for the new attempt may not have landed yet, it is not awaited).
    assert attempts[1][1] in ("failed/1/try 1", "running/2/try 1")
    assert attempts[2][1] in ("failed/2/try 2", "running/3/try 2")
    gaps = [b[0] - a[0] for a, b in zip(attempts, attempts[1:])]
    assert 0.1 <= gaps[0] < 1.0 and 0.2 <= gaps[1] < 1.5, gaps
    row = await step_row(pg, "s")
    assert (row["status"], row["attempt"], json.loads(row["output"]), row["error"]) == ("completed", 3, "ok", None)


async def test_retries_stop_at_the_limit_and_only_for_matching_errors(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")
    calls: list[int] = []

    def always(kind: type[Exception]) -> None:
        calls.append(1)
        raise kind("nope")

    with pytest.raises(ConnectionError):
        await ctx.step("limited", lambda: always(ConnectionError), retries=2, backoff=FAST)
    assert len(calls) == 3
    row = await step_row(pg, "limited")
    assert (row["status"], row["attempt"], json.loads(row["error"])["type"]) == ("failed", 3, "ConnectionError")

    calls.clear()
    with pytest.raises(KeyError):
        await ctx.step("not_retried", lambda: always(KeyError), retries=5, backoff=FAST, retry_on=ConnectionError)
    assert len(calls) == 1


def test_backoff_is_validated_and_grows_to_its_cap() -> None:
    backoff = Backoff(initial=1.0, factor=3.0, max=5.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    jittered = Backoff(initial=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.5 for _ in range(100))
    with pytest.raises(durable.ConfigError, match="1 <= factor"):
        Backoff(factor=0.5)


async def test_an_interrupted_at_most_once_step_is_not_run_again(db: durable.Db, pg: asyncpg.Connection) -> None:
    charged: list[str] = []
    started = asyncio.Event()

    async def charge() -> str:
        assert not charged, "charged twice"
        charged.append("charge")
        started.set()
        await asyncio.sleep(3600)
        return "charged"

    ctx = await Ctx.start(db, "order")
    running = asyncio.ensure_future(ctx.step("charge", charge, at_most_once=True))
    await started.wait()
    # The marker of an at-most-once step is committed before its body runs.
    assert (await step_row(pg, "charge"))["status"] == "running"
    running.cancel()  # the crash
    with pytest.raises(asyncio.CancelledError):
        await running

    await ctx.release()
    resumed = await Ctx.start(db, "order")
    with pytest.raises(durable.StepInterrupted, match="at_most_once"):
        await resumed.step("charge", charge, at_most_once=True)
    row = await step_row(pg, "charge")
    assert (row["status"], json.loads(row["error"])["type"]) == ("failed", "StepInterrupted")

    await resumed.release()
    again = await Ctx.start(db, "order")
    with pytest.raises(durable.StepInterrupted):
        await again.step("charge", charge, at_most_once=True)
    assert charged == ["charge"], "never charged twice"

    # A human decides it did go through: the workflow then replays the result.
    await pg.execute(
        "UPDATE task SET status = 'completed', output = '\"charged by hand\"', error = NULL WHERE name = 'charge'"
    )
    await again.release()
    decided = await Ctx.start(db, "order")
    assert await decided.step("charge", charge, at_most_once=True) == "charged by hand"


async def test_a_failed_at_most_once_step_may_run_again(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(ValueError):
        await ctx.step("pay", lambda: int("x"), at_most_once=True)
    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    assert await resumed.step("pay", lambda: "paid", at_most_once=True) == "paid"


async def test_a_deadline_stops_a_running_workflow_and_is_kept_on_restart(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    @durable.workflow
    async def slow(ctx: Ctx, _: None) -> str:
        await ctx.step("first", lambda: 1)
        await ctx.step("long", lambda: asyncio.sleep(10))
        return "never"

    ctx = await Ctx.start(db, "slow", deadline=0.3)
    assert ctx.deadline_in is not None and 0 < ctx.deadline_in <= 0.3
    with pytest.raises(durable.DeadlineExceeded, match="passed its deadline"):
        await ctx.run(slow.fn, None)
    root = await pg.fetchrow("SELECT status, error FROM task WHERE name = 'slow'")
    assert root is not None
    assert (root["status"], json.loads(root["error"])["type"]) == ("failed", "DeadlineExceeded")

    again = await Ctx.start(db, "slow")
    assert again.deadline_in is not None and again.deadline_in < 0
    assert await again.step("first", lambda: 2) == 1, "replay still works"
    with pytest.raises(durable.DeadlineExceeded):
        await again.step("new", lambda: 3)


async def test_cancel_stops_a_running_workflow_and_its_children(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "job")
    child = await ctx.child("part")
    await child.step("before", lambda: 1)
    assert await durable.cancel(db, "job") is True
    assert (ctx.status, child.status) == ("cancelled", "cancelled"), "this process knows at once"
    ran: list[str] = []
    with pytest.raises(durable.Cancelled):
        await child.step("after", lambda: ran.append("after"))
    with pytest.raises(durable.Cancelled):
        await ctx.step("later", lambda: ran.append("later"))
    assert ran == [], "no body starts once the holder knows"
    with pytest.raises(durable.Cancelled):
        await ctx.complete("done")
    statuses = {r["name"]: r["status"] for r in await pg.fetch("SELECT name, status FROM task WHERE kind = 'workflow'")}
    assert statuses == {"job": "cancelled", "part": "cancelled"}
    with pytest.raises(durable.Cancelled):
        await Ctx.start(db, "job")
    assert await durable.cancel(db, "job") is False
    assert await durable.cancel(db, "no-such-job") is False


async def test_values_over_the_size_limit_are_refused_before_writing(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    small = await durable.init(dsn, schema=schema, max_value_bytes=1000)
    try:
        with pytest.raises(durable.ValueTooLarge, match="over the limit of 1000 bytes"):
            await Ctx.start(small, "big-input", "x" * 2000)
        ctx = await Ctx.start(small, "wf", "x" * 900)
        with pytest.raises(durable.ValueTooLarge) as caught:
            await ctx.step("big", lambda: ["y" * 600, "y" * 600])
        assert isinstance(caught.value, ValueError)
        assert await ctx.step("fits", lambda: "y" * 900) == "y" * 900
    finally:
        await small.close()
    assert await pg.fetchval("SELECT count(*) FROM task WHERE name = 'big-input'") == 0
    big = await step_row(pg, "big")
    assert (big["status"], big["output"], json.loads(big["error"])["type"]) == ("failed", None, "ValueTooLarge")


async def test_step_options_are_validated(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        await ctx.step("s", lambda: 1, retries=-1)
    with pytest.raises(durable.ConfigError, match="lease must be a number of seconds from 1"):
        await durable.init("postgresql://x@127.0.0.1:1/x", lease=0)
    with pytest.raises(durable.ConfigError, match="deadline must be a positive number"):
        await Ctx.start(db, "w2", deadline=-1)


async def test_an_at_most_once_marker_is_committed_before_the_body_runs(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    program = Path(__file__).parent / "programs" / "charge.py"

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(program), dsn, schema, *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode().strip()

    # The body kills its process the instant it starts, with no await in between.
    code, _ = await run("--die")
    assert code == -9
    assert await run() == (0, "interrupted")
    assert await run() == (0, "interrupted"), "and it stays so until a human decides"
    row = await step_row(pg, "charge")
    assert (row["status"], json.loads(row["error"])["type"]) == ("failed", "StepInterrupted")
