"""Recurring runs: cron and intervals, once per tick across executors."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

import durable
from _programs import PROGRAMS, line
from _waits import until
from durable import Ctx
from durable._schedules import Schedule, to_micros

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_cron_ticks_follow_the_expression_and_its_time_zone() -> None:
    quarter = Schedule.make("*/15 * * * *", None, None, "latest", "w")
    assert quarter is not None
    assert quarter.after(at("2026-11-23T10:07:00+00:00")) == at("2026-11-23T10:15:00+00:00")
    assert quarter.after(at("2026-11-23T10:15:00+00:00")) == at("2026-11-23T10:30:00+00:00")
    # 02:00 in New York does not exist on the day clocks go forward: that day runs at 03:00.
    nightly = Schedule.make("0 2 * * *", None, "America/New_York", "latest", "w")
    assert nightly is not None
    assert nightly.after(at("2026-03-08T05:00:00+00:00")) == at("2026-03-08T07:00:00+00:00")
    assert nightly.after(at("2026-03-08T07:00:00+00:00")) == at("2026-03-09T06:00:00+00:00")


def test_intervals_are_aligned_to_the_epoch() -> None:
    every = Schedule.make(None, timedelta(seconds=30), None, "latest", "w")
    assert every is not None
    assert every.after(at("2026-11-23T10:07:12+00:00")) == at("2026-11-23T10:07:30+00:00")
    assert every.after(at("2026-11-23T10:07:30+00:00")) == at("2026-11-23T10:08:00+00:00")


def test_after_downtime_the_latest_tick_or_each_tick_runs() -> None:
    for missed, expected in [("latest", ["10:45"]), ("all", ["10:15", "10:30", "10:45"])]:
        schedule = Schedule.make("*/15 * * * *", None, None, missed, "w")
        assert schedule is not None
        ticks, after = schedule.due(at("2026-11-23T10:15:00+00:00"), at("2026-11-23T10:50:00+00:00"))
        assert [t.strftime("%H:%M") for t in ticks] == expected
        assert after == at("2026-11-23T11:00:00+00:00")


@pytest.mark.parametrize(
    "options",
    [
        {"schedule": "61 * * * *"},
        {"schedule": "* * *"},
        {"schedule": "every minute"},
        {"schedule": "* * * * *", "every": 60},
        {"schedule": "* * * * *", "timezone": "Mars/Olympus"},
        {"schedule": "* * * * *", "missed": "some"},
        {"every": 0.5},
        {"every": -1},
        {"every": timedelta(days=400)},
        {"every": 60, "timezone": "Europe/Paris"},
        {"timezone": "UTC"},
    ],
    ids=repr,
)
def test_a_bad_schedule_is_refused_when_declared(options: dict[str, Any]) -> None:
    with pytest.raises(durable.ConfigError):

        @durable.workflow(**options)
        async def report(ctx: Ctx, tick: datetime) -> None:
            pass


async def test_missed_ticks_after_downtime_run_as_declared(db: durable.Db, pg: asyncpg.Connection) -> None:
    ran: dict[str, list[datetime]] = {"latest": [], "all": []}

    @durable.workflow(name="latest", every=60, missed="latest")
    async def latest(ctx: Ctx, tick: datetime) -> None:
        ran["latest"].append(tick)

    @durable.workflow(name="all", every=60, missed="all")
    async def every_one(ctx: Ctx, tick: datetime) -> None:
        ran["all"].append(tick)

    executor = durable.Executor(db, [latest, every_one])
    task = asyncio.ensure_future(executor.run())
    try:

        async def registered() -> bool:
            return bool(await pg.fetchval("SELECT count(*) = 2 FROM task_schedule"))

        await until(registered, "both schedules are registered")
        # Downtime: the next tick was due three minutes ago.
        await pg.execute(
            """UPDATE task_schedule SET next_tick = date_trunc('minute', now()) - interval '3 minutes'"""
        )
        executor.stop()  # a restart: the next run registers the schedules and finds them due
        await task
        task = asyncio.ensure_future(executor.run())

        async def caught_up() -> bool:
            return len(ran["latest"]) >= 1 and len(ran["all"]) >= 4

        await until(caught_up, "the missed ticks ran")
    finally:
        executor.stop()
        await task
    assert len(ran["latest"]) == 1, "only the latest missed tick"
    minutes = [t.minute for t in ran["all"]]
    assert len(minutes) == 4 and len(set(minutes)) == 4, "each missed tick once"
    names = sorted(r["name"] for r in await pg.fetch("SELECT name FROM task WHERE workflow = 'all'"))
    assert names == sorted(f"all@{t.strftime('%Y-%m-%dT%H:%M:%SZ')}" for t in ran["all"])


async def test_a_stale_executor_cannot_move_a_schedule_back(db: durable.Db, pg: asyncpg.Connection) -> None:
    engine = db._engine
    now = await pg.fetchval("SELECT now()")
    due = now - timedelta(minutes=3)  # three ticks missed: the next one is still due
    spec, next_tick, _ = await engine.schedule("w", "every 60", to_micros(due))
    assert next_tick == to_micros(due)
    after = to_micros(due + timedelta(minutes=1))
    assert await engine.advance_schedule("w", "q", next_tick, after, ["w@a"], ["a"]) is True
    # A second executor that read the schedule before that advance:
    assert await engine.advance_schedule("w", "q", next_tick, after, ["w@b"], ["b"]) is False
    assert await engine.advance_schedule("w", "q", to_micros(due - timedelta(minutes=1)), next_tick, ["w@c"], ["c"]) is False
    state = await engine.schedule_state("w")
    assert state is not None and state[1] == after, "the schedule neither skipped a tick nor moved back"
    assert [r["name"] for r in await pg.fetch("SELECT name FROM task")] == ["w@a"]


async def test_each_tick_runs_once_across_three_executors(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE ledger (run text NOT NULL, pid int NOT NULL, event text NOT NULL, at timestamptz NOT NULL)")
    procs = []
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PROGRAMS / "executor.py"), dsn, schema, "--only", "jobs.beat",
            stdout=asyncio.subprocess.PIPE,
        )
        assert await line(proc) == "ready"
        procs.append(proc)
    try:

        async def five_ticks() -> bool:
            return bool(await pg.fetchval("SELECT count(*) >= 5 FROM ledger"))

        await until(five_ticks, "five ticks ran", timeout=30)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
    rows = await pg.fetch("SELECT run, count(*) AS n FROM ledger GROUP BY run ORDER BY run")
    assert all(r["n"] == 1 for r in rows), "each tick ran once"
    ticks = [datetime.fromisoformat(r["run"].split("@")[1].replace("Z", "+00:00")) for r in rows]
    gaps = {(b - a).total_seconds() for a, b in zip(ticks, ticks[1:])}
    assert gaps == {1.0}, f"one run per second, none skipped: {ticks}"
    pids = await pg.fetchval("SELECT count(DISTINCT pid) FROM ledger")
    print(f"\n{len(rows)} ticks, run by {pids} of the 3 executors")
