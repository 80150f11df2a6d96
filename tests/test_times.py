"""Times that no ``datetime`` holds (``infinity``, a year outside 1 to 9999
in UTC), which only SQL written by hand stores: every reader shows such a
row, its time as text, and never fails the whole listing for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

import durable
from _asgi import get
from durable import Ctx
from durable.cli import cli


@durable.workflow(name="times.noop", queue="times")
async def noop(ctx: Ctx, _: None) -> str:
    return "done"


#: The runs of ``odd_rows``: name, the time written by hand, and its text.
ODD = [
    ("never", "run_at = 'infinity'", "run_at", "infinity"),
    ("always", "run_at = '-infinity'", "run_at", "-infinity"),
    ("far", "run_at = '20000-01-01 00:00:00+00'", "run_at", "20000-01-01T00:00:00.000000Z"),
    # 0001-01-01T00:00:00+14:00: the year 0 in UTC.
    ("early", "created_at = '0001-01-01 00:00:00+14'", "created_at", "0001-12-31T10:00:00.000000Z BC"),
]


async def odd_rows(db: durable.Db, pg: asyncpg.Connection) -> None:
    """The runs of ``ODD``, queued, each given its time by hand; and
    ``done``, a completed run whose step ended at ``infinity``."""
    for name, *_ in ODD:
        await noop.enqueue(db, name, None, delay=3600)
    async with Ctx.start(db, "done") as ctx:
        await ctx.step("s", lambda: 1)
        await ctx.complete(1)
    for name, assignment, *_ in ODD:
        await pg.execute(f"UPDATE task SET {assignment} WHERE parent_id IS NULL AND name = $1", name)
    await pg.execute("UPDATE task SET completed_at = 'infinity' WHERE name = 's'")
    await pg.execute("UPDATE task SET status = 'queued' WHERE name = 'always'")


async def test_the_api_shows_a_time_out_of_range_as_text(db: durable.Db, pg: asyncpg.Connection) -> None:
    await odd_rows(db, pg)
    runs = {run.name: run for run in await durable.list_workflows(db)}
    assert set(runs) == {name for name, *_ in ODD} | {"done"}
    for name, _, field, text in ODD:
        for run in (runs[name], await durable.get(db, name), (await durable.tree(db, name)).info):
            assert run.out_of_range == {field: text}, name
            assert getattr(run, field) is None
    assert runs["never"].waiting_for == "delayed until infinity"
    assert runs["far"].waiting_for == "delayed until 20000-01-01T00:00:00.000000Z"
    assert isinstance(runs["early"].run_at, datetime) and runs["done"].out_of_range == {}
    (step,) = (await durable.tree(db, "done")).steps
    assert (step.completed_at, step.out_of_range) == (None, {"completed_at": "infinity"})
    assert step.started_at is not None and step.started_at <= datetime.now(timezone.utc)

    (queue,) = await durable.list_queues(db)
    assert (queue.name, queue.queued, queue.delayed) == ("times", 1, 3)
    assert (queue.oldest_due, queue.out_of_range) == (None, {"oldest_due": "-infinity"})


async def test_the_cli_shows_a_time_out_of_range_as_text(
    db: durable.Db, pg: asyncpg.Connection, dsn: str, schema: str
) -> None:
    await odd_rows(db, pg)

    def durable_cli(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, *args])
        assert result.exit_code == 0, (args, result.stderr, result.exception)
        return result.stdout

    listed = await asyncio.to_thread(durable_cli, "list")
    assert "0001-12-31T10:00:00.000000Z BC" in listed and "delayed until infinity" in listed
    assert {run["name"]: run["out_of_range"] for run in json.loads(await asyncio.to_thread(durable_cli, "list", "--json"))} == {
        **{name: {field: text} for name, _, field, text in ODD},
        "done": {},
    }
    shown = await asyncio.to_thread(durable_cli, "show", "done")
    assert "step s  completed  ?" in shown, shown
    assert "waiting for: delayed until infinity" in await asyncio.to_thread(durable_cli, "show", "never")
    assert "-infinity" in await asyncio.to_thread(durable_cli, "queues")
    (queue,) = json.loads(await asyncio.to_thread(durable_cli, "queues", "--json"))
    assert (queue["oldest_due"], queue["out_of_range"]) == (None, {"oldest_due": "-infinity"})


@pytest.fixture
async def app(db: durable.Db) -> AsyncIterator[Any]:
    pytest.importorskip("starlette", reason="durable ui needs the ui extra (starlette, jinja2, uvicorn)")
    from durable import ui

    yield ui.make_app(db, host="127.0.0.1", port=8765)


async def test_the_ui_shows_a_time_out_of_range_as_text(db: durable.Db, pg: asyncpg.Connection, app: Any) -> None:
    await odd_rows(db, pg)
    await pg.execute(
        """INSERT INTO task_schedule_spec (workflow, spec, next_tick, seen_at)
           VALUES ('times.noop', 'every 60', 'infinity', '-infinity')"""
    )
    for path, shown in [
        ("/", "0001-12-31T10:00:00.000000Z BC"),
        ("/?status=scheduled", "delayed until infinity"),
        ("/runs/never", "infinity"),
        ("/runs/early", "0001-12-31T10:00:00.000000Z BC"),
        ("/runs/done", "?"),
        ("/queues", "-infinity"),
        ("/schedules", "next tick infinity"),
        ("/start", "times.noop"),
    ]:
        status, body = await get(app, path)
        assert status == 200, (path, body[-2000:])
        assert shown in body, path


async def test_an_executor_goes_on_beside_a_run_due_at_infinity(db: durable.Db, pg: asyncpg.Connection) -> None:
    await noop.enqueue(db, "never", None, delay=3600)
    await pg.execute("UPDATE task SET run_at = 'infinity' WHERE name = 'never'")
    executor = durable.Executor(db, [noop], poll=3600)
    running = asyncio.ensure_future(executor.run())
    try:
        await noop.enqueue(db, "now", None)
        result = asyncio.ensure_future(durable.result(db, "now", timeout=60))
        await asyncio.wait([running, result], return_when=asyncio.FIRST_COMPLETED)
        assert not running.done(), running.exception()
        assert await result == "done"
        assert not running.done()
    finally:
        executor.stop()
        await running
    assert (await durable.get(db, "never")).status == "scheduled"
