"""Step durations: a step's row holds when its attempt's body began and
ended, by the wall clock of the process that ran it, not the moments of
the commits that saved it (a step's marker and its result mostly share
one); a replay leaves them as they were; the records, ``durable show``
and the ui's run page show them.

Each body runs at least ``BODY`` by that same clock (it waits until the
clock says so), so the lower bounds below are certain, never timing luck.
The clock is read before and after each step too: a recorded time outside
those bounds is not the body's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

import durable
from _asgi import get
from durable import Backoff, Ctx
from durable._cli_render import duration
from durable.cli import cli

#: How long every body runs, at least.
BODY = timedelta(milliseconds=50)
FAST = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)


def now() -> datetime:
    """The wall clock (the one the engine reads for a step's times)."""
    return datetime.now(timezone.utc)


class Body:
    """A step's body that runs at least ``BODY``, noting when each call
    began and ended; its first ``failures`` calls raise ``ValueError``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.began: list[datetime] = []
        self.ended: list[datetime] = []

    async def __call__(self) -> str:
        began = now()
        self.began.append(began)
        while now() - began < BODY:
            await asyncio.sleep(0.01)
        self.ended.append(now())
        if len(self.ended) <= self.failures:
            raise ValueError(f"attempt {len(self.ended)} fails")
        return "done"


def check_span(started: datetime | None, ended: datetime | None, before: datetime, body: Body, call: int) -> None:
    """``started`` and ``ended``, a step's recorded times, are those of the
    body's call ``call`` (0 for the first): the start between ``before``
    (read before the attempt) and the body's first look at the clock, the
    end after the body's last look; and they span at least ``BODY``."""
    assert started is not None and ended is not None
    assert before <= started <= body.began[call], (before, started, body.began[call])
    assert ended >= body.ended[call], (ended, body.ended[call])
    assert ended - started >= BODY, ended - started


async def one_slow_step(db: durable.Db, name: str, body: Body) -> tuple[datetime, datetime]:
    """Runs workflow ``name``: its step ``slow`` (``body``); the clock
    before the step and after its result came back."""
    async with Ctx.start(db, name) as ctx:
        before = now()
        assert await ctx.step("slow", body) == "done"
        after = now()
        await ctx.complete(None)
    return before, after


async def test_a_steps_times_are_when_its_body_ran(db: durable.Db) -> None:
    body = Body()
    before, after = await one_slow_step(db, "w", body)
    tree = await durable.tree(db, "w")
    (step,) = tree.steps
    check_span(step.started_at, step.completed_at, before, body, 0)
    assert step.completed_at is not None and step.completed_at <= after
    # The workflow's own times are the database's, and span its step.
    info = tree.info
    assert info.started_at is not None and info.completed_at is not None
    assert info.completed_at - info.started_at >= BODY


async def test_failed_attempts_keep_their_own_times(db: durable.Db, pg: asyncpg.Connection) -> None:
    flaky, broken = Body(failures=1), Body(failures=1)
    async with Ctx.start(db, "w") as ctx:
        before_flaky = now()
        assert await ctx.step("flaky", flaky, retries=1, backoff=FAST) == "done"
        before_broken = now()
        with pytest.raises(ValueError, match="attempt 1 fails"):
            await ctx.step("broken", broken)
        await ctx.complete(None)
    steps = {step.name: step for step in (await durable.tree(db, "w")).steps}
    # The failed attempt of a step that then succeeded, in the history.
    (past,) = await pg.fetch(
        "SELECT a.attempt, a.status, a.started_at, a.ended_at FROM task_attempt AS a JOIN task AS t ON t.id = a.task_id"
        " WHERE t.name = 'flaky'"
    )
    assert (past["attempt"], past["status"]) == (1, "failed")
    check_span(past["started_at"], past["ended_at"], before_flaky, flaky, 0)
    assert past["ended_at"] <= flaky.began[1]
    check_span(steps["flaky"].started_at, steps["flaky"].completed_at, flaky.ended[0], flaky, 1)
    # A step that failed for good.
    assert (steps["broken"].status, steps["broken"].attempt) == ("failed", 1)
    check_span(steps["broken"].started_at, steps["broken"].completed_at, before_broken, broken, 0)


async def test_a_replay_keeps_the_recorded_times(db: durable.Db) -> None:
    body = Body()
    ctx = await Ctx.start(db, "w")
    before = now()
    await ctx.step("slow", body)
    (recorded,) = (await durable.tree(db, "w")).steps
    await ctx.release()
    async with Ctx.start(db, "w") as again:
        assert again.attempt == 2
        assert await again.step("slow", body) == "done"
        assert len(body.began) == 1, "replayed: the body did not run again"
        await again.complete(None)
    (replayed,) = (await durable.tree(db, "w")).steps
    assert (replayed.attempt, replayed.started_at, replayed.completed_at) == (
        1,
        recorded.started_at,
        recorded.completed_at,
    )
    check_span(replayed.started_at, replayed.completed_at, before, body, 0)


async def test_durable_show_prints_how_long_the_body_ran(db: durable.Db, dsn: str, schema: str) -> None:
    body = Body()
    before, _ = await one_slow_step(db, "w", body)
    (step,) = (await durable.tree(db, "w")).steps
    check_span(step.started_at, step.completed_at, before, body, 0)
    assert step.started_at is not None and step.completed_at is not None
    took = duration((step.completed_at - step.started_at).total_seconds())

    def show() -> str:
        result = CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, "show", "w"])
        assert result.exit_code == 0, (result.stderr, result.exception)
        return result.stdout

    shown = await asyncio.to_thread(show)
    assert f"step slow  completed  {took}" in shown, shown


@pytest.fixture
async def app(db: durable.Db) -> AsyncIterator[Any]:
    pytest.importorskip("starlette", reason="durable ui needs the ui extra (starlette, jinja2, uvicorn)")
    from durable import ui

    yield ui.make_app(db, host="127.0.0.1", port=8765)


async def test_the_run_page_shows_how_long_each_attempt_ran(db: durable.Db, pg: asyncpg.Connection, app: Any) -> None:
    flaky = Body(failures=1)
    async with Ctx.start(db, "w") as ctx:
        before = now()
        await ctx.step("flaky", flaky, retries=1, backoff=FAST)
        await ctx.complete(None)
    (step,) = (await durable.tree(db, "w")).steps
    check_span(step.started_at, step.completed_at, flaky.ended[0], flaky, 1)
    assert step.started_at is not None and step.completed_at is not None
    took = duration((step.completed_at - step.started_at).total_seconds())
    (past,) = await pg.fetch("SELECT started_at, ended_at FROM task_attempt")
    check_span(past["started_at"], past["ended_at"], before, flaky, 0)
    took_first = duration((past["ended_at"] - past["started_at"]).total_seconds())

    status, page = await get(app, "/runs/w")
    assert status == 200, page[-2000:]
    # The steps table, and a bar per attempt in the timeline.
    assert f"<td>{took}</td>" in page
    assert f"<title>flaky · completed · attempt 2 · {took}</title>" in page
    assert f"<title>flaky · failed · attempt 1 · {took_first}</title>" in page
