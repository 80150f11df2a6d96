"""Every duration and time argument is checked before anything is written: a
value out of range (too large for a float, outside the years 1 to 9999 in
UTC) is a ``ConfigError`` naming the argument, like every other bad option."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

import durable
from _waits import until
from durable import Ctx

#: Too large for a float: ``float(HUGE)`` raises ``OverflowError``.
HUGE = 10**400

#: Valid datetimes whose UTC time is outside the years 1 to 9999.
BEFORE_YEAR_1 = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
AFTER_YEAR_9999 = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))


@durable.workflow(name="bounds.noop")
async def noop(ctx: Ctx, _: None) -> None:
    return None


Call = Callable[[durable.Db, Ctx], Awaitable[Any]]


async def sync_call(make: Callable[[], Any]) -> Any:
    return make()


async def run_result(db: durable.Db, ctx: Ctx, timeout: Any) -> Any:
    return await durable.Run(db, "target", "running", False).result(timeout=timeout)


CALLS: list[tuple[str, str, Call]] = [
    ("sleep", "duration", lambda db, ctx: ctx.sleep("nap", HUGE)),
    ("sleep -", "duration", lambda db, ctx: ctx.sleep("nap", -HUGE)),
    ("sleep until", "until", lambda db, ctx: ctx.sleep("nap", until=AFTER_YEAR_9999)),
    ("sleep until past", "until", lambda db, ctx: ctx.sleep("nap", until=BEFORE_YEAR_1)),
    ("recv", "timeout", lambda db, ctx: ctx.recv("topic", timeout=HUGE)),
    ("get_event", "timeout", lambda db, ctx: durable.get_event(db, "target", "key", timeout=HUGE)),
    ("result", "timeout", lambda db, ctx: durable.result(db, "target", timeout=HUGE)),
    ("Run.result", "timeout", lambda db, ctx: run_result(db, ctx, HUGE)),
    ("start wait", "wait", lambda db, ctx: Ctx.start(db, "other", wait=HUGE)),
    ("start deadline", "deadline", lambda db, ctx: Ctx.start(db, "other", deadline=HUGE)),
    ("enqueue delay", "delay", lambda db, ctx: noop.enqueue(db, "run", None, delay=HUGE)),
    ("enqueue run_at", "run_at", lambda db, ctx: noop.enqueue(db, "run", None, run_at=AFTER_YEAR_9999)),
    ("enqueue run_at past", "run_at", lambda db, ctx: noop.enqueue(db, "run", None, run_at=BEFORE_YEAR_1)),
    ("enqueue_many delay", "delay", lambda db, ctx: noop.enqueue_many(db, [("run", None)], delay=HUGE)),
    ("enqueue_many run_at", "run_at", lambda db, ctx: noop.enqueue_many(db, [("run", None)], run_at=AFTER_YEAR_9999)),
    ("gc", "older_than", lambda db, ctx: durable.gc(db, HUGE)),
    ("rate_limit", "period", lambda db, ctx: durable.create_queue(db, "q", rate_limit=(1, HUGE))),
    ("list since", "since", lambda db, ctx: durable.list_workflows(db, since=AFTER_YEAR_9999)),
    ("executor poll", "poll", lambda db, ctx: sync_call(lambda: durable.Executor(db, [noop], poll=HUGE))),
    (
        "executor suspend_after",
        "suspend_after",
        lambda db, ctx: sync_call(lambda: durable.Executor(db, [noop], suspend_after=HUGE)),
    ),
    ("every", "every", lambda db, ctx: sync_call(lambda: durable.workflow(every=HUGE)(noop.fn))),
    ("backoff", "Backoff", lambda db, ctx: sync_call(lambda: durable.Backoff(initial=HUGE))),
    ("backoff max", "Backoff", lambda db, ctx: sync_call(lambda: durable.Backoff(max=-HUGE))),
]


@pytest.mark.parametrize(("what", "named", "call"), CALLS, ids=[c[0] for c in CALLS])
async def test_an_argument_out_of_range_is_a_config_error_and_nothing_is_written(
    db: durable.Db, pg: asyncpg.Connection, what: str, named: str, call: Call
) -> None:
    await Ctx.start(db, "target")
    ctx = await Ctx.start(db, "w")
    before = await pg.fetchval("SELECT count(*) FROM task")
    with pytest.raises(durable.ConfigError, match=named):
        await call(db, ctx)
    assert await pg.fetchval("SELECT count(*) FROM task") == before, f"{what} wrote something"
    assert await pg.fetchval("SELECT count(*) FROM task_queue WHERE name = 'q'") == 0


@pytest.mark.parametrize("option", ["connect_timeout", "lease", "reconnect_timeout", "session_grace"])
async def test_init_options_out_of_range_are_config_errors(dsn: str, option: str) -> None:
    with pytest.raises(durable.ConfigError, match=option):
        await durable.init(dsn, **{option: HUGE})  # type: ignore[arg-type]


async def test_the_message_of_a_huge_int_stays_short(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "w")
    with pytest.raises(durable.ConfigError) as caught:
        await ctx.sleep("nap", 10**5000)  # its decimal text is over Python's 4300-digit limit
    assert len(str(caught.value)) < 300


async def test_a_sleep_until_the_last_moment_in_range_is_saved(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "w")
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    sleeping = asyncio.ensure_future(ctx.sleep("far", until=last))

    async def saved() -> bool:
        return bool(await pg.fetchval("SELECT count(*) FROM task WHERE name = 'far' AND status = 'completed'"))

    await until(saved, "the sleep saved its wake-up time")
    sleeping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sleeping
    output = await pg.fetchval("SELECT output FROM task WHERE name = 'far'")
    assert datetime.fromisoformat(json.loads(output)) == last


@pytest.mark.parametrize("text", ["99999999999d", "999999999999999w"])
def test_the_cli_refuses_a_duration_too_long_with_a_message(text: str) -> None:
    from durable._cli_render import parse_duration, parse_moment

    with pytest.raises(ValueError, match="longer than a duration can be"):
        parse_duration(text)
    with pytest.raises(ValueError):
        parse_moment(text, datetime.now(timezone.utc))


def test_the_cli_refuses_a_moment_before_the_year_1() -> None:
    from durable._cli_render import parse_moment

    with pytest.raises(ValueError, match="before the year 1"):
        parse_moment("99999999w", datetime.now(timezone.utc))


@pytest.mark.parametrize(
    ("delay", "run_at", "said"),
    [("99999999999d", "", "longer than a duration"), ("", "9999-12-31T23:00:00-05:00", "years 1 to 9999")],
)
def test_the_ui_start_form_refuses_times_out_of_range(delay: str, run_at: str, said: str) -> None:
    from durable.ui.actions import Refused, when

    with pytest.raises(Refused, match=said):
        when(delay, run_at)
