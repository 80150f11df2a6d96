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
import durable._executor
from durable import Ctx
from durable._schedules import EPOCH, FORGET_AFTER, Schedule, from_micros, parse_tick, tick_run_name, to_micros
from durable.ui import schedules as ui_schedules

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


def test_an_interval_is_stored_exactly_and_shown_with_its_own_ticks() -> None:
    declared = [Schedule.make(None, seconds, None, "latest", "w") for seconds in (1_234_567, 1_234_568)]
    assert [s.spec for s in declared if s is not None] == ["every 1234567", "every 1234568"]
    first = from_micros(1_234_567 * 1_000_000 * 1000)
    assert declared[0] is not None
    shown = ui_schedules.view(("w", declared[0].spec, to_micros(first), to_micros(first)), {}, first)
    ticks = [first]
    while len(ticks) < len(shown.upcoming):
        ticks.append(declared[0].after(ticks[-1]))
    assert shown.upcoming == ticks, "the ui's next ticks are those the executors queue"
    assert ticks[1] - ticks[0] == timedelta(seconds=1_234_567)


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
            return bool(await pg.fetchval("SELECT count(*) = 2 FROM task_schedule_spec"))

        await until(registered, "both schedules are registered")
        # Downtime: the next tick was due three minutes ago.
        await pg.execute(
            """UPDATE task_schedule_spec SET next_tick = date_trunc('minute', now()) - interval '3 minutes'"""
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
    next_tick, _, _ = await engine.schedule("w", "every 60", to_micros(due), FORGET_AFTER)
    assert next_tick == to_micros(due)
    after = to_micros(due + timedelta(minutes=1))
    assert await engine.advance_schedule("w", "every 60", "q", next_tick, after, ["w@a"], ["a"]) is True
    # A second executor that read the schedule before that advance:
    assert await engine.advance_schedule("w", "every 60", "q", next_tick, after, ["w@b"], ["b"]) is False
    earlier = to_micros(due - timedelta(minutes=1))
    assert await engine.advance_schedule("w", "every 60", "q", earlier, next_tick, ["w@c"], ["c"]) is False
    state = await engine.schedule_state("w", "every 60")
    assert state is not None and state[0] == after, "the schedule neither skipped a tick nor moved back"
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


def beat(every: int) -> durable.Workflow[datetime, None]:
    """The workflow ``beat`` as one version of the code declares it."""

    @durable.workflow(name="beat", every=every, missed="all")
    async def body(ctx: Ctx, tick: datetime) -> None:
        pass

    return body


async def specs_of_beat(db: durable.Db) -> set[str]:
    """The specs of ``beat`` stored, as the ui reads them."""
    return {spec for workflow, spec, _, _ in await db._engine.browse_schedules(5.0) if workflow == "beat"}


def ticks_in(start: datetime, end: datetime, every: int) -> set[datetime]:
    """The ticks of ``every=`` (seconds from the epoch) in ``(start, end]``."""
    first = int((start - EPOCH).total_seconds()) // every * every + every
    last = int((end - EPOCH).total_seconds())
    return {EPOCH + timedelta(seconds=s) for s in range(first, last + 1, every)}


async def test_old_and_new_specs_side_by_side_queue_every_tick_of_both_once(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    # A rolling deploy: the old code says every 2 s, the new one every 3 s.
    executors = [durable.Executor(db, [beat(2)]), durable.Executor(other_db, [beat(3)])]
    tasks = [asyncio.ensure_future(executor.run()) for executor in executors]
    try:

        async def both_registered() -> bool:
            return await specs_of_beat(db) == {"every 2", "every 3"}

        await until(both_registered, "both specs are registered")
        # A window on the database's clock, which the executors tick by.
        start = await pg.fetchval("SELECT clock_timestamp()")
        end = start + timedelta(seconds=6)
        expected = ticks_in(start, end, 2) | ticks_in(start, end, 3)

        async def queued() -> list[datetime]:
            names = await pg.fetch("SELECT name FROM task WHERE workflow = 'beat'")
            return [parse_tick(r["name"].split("@")[1]) for r in names]

        async def window_queued() -> bool:
            return expected <= set(await queued())

        await until(window_queued, "every tick of both specs in the window is queued", timeout=30)
    finally:
        for executor in executors:
            executor.stop()
        await asyncio.gather(*tasks)
    in_window = sorted(tick for tick in await queued() if start < tick <= end)
    assert in_window == sorted(expected), "the union of both specs' ticks, each once"
    assert len(expected) < len(ticks_in(start, end, 2)) + len(ticks_in(start, end, 3)), "a tick both make runs once"


async def test_a_spec_that_no_executor_serves_any_more_is_removed(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable._executor, "CONFIRM_EVERY", 0.05)  # confirmations come often
    old = durable.Executor(db, [beat(2)])
    new = durable.Executor(other_db, [beat(3)])
    old_task = asyncio.ensure_future(old.run())
    new_task = asyncio.ensure_future(new.run())
    try:

        async def both_registered() -> bool:
            return await specs_of_beat(db) == {"every 2", "every 3"}

        await until(both_registered, "both specs are registered")
        old.stop()  # the last executor of the old code is gone
        await old_task
        seen = await pg.fetchval("SELECT seen_at FROM task_schedule_spec WHERE spec = 'every 2'")

        async def confirmed_since() -> bool:
            return bool(
                await pg.fetchval("SELECT seen_at > $1::timestamptz + interval '0.3 s' FROM task_schedule_spec WHERE spec = 'every 3'", seen)
            )

        await until(confirmed_since, "the new executor confirmed its spec several times")
        assert await specs_of_beat(db) == {"every 2", "every 3"}, "unseen for less than FORGET_AFTER: kept"
        await pg.execute(
            "UPDATE task_schedule_spec SET seen_at = seen_at - make_interval(secs => $1) WHERE spec = 'every 2'", FORGET_AFTER
        )

        async def removed() -> bool:
            return await specs_of_beat(db) == {"every 3"}

        await until(removed, "the new executor removed the spec nobody serves")
    finally:
        new.stop()
        await new_task
