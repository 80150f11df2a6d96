"""durable.fork: a new run that keeps what an earlier one completed before a step."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from click.testing import CliRunner, Result

import durable
from durable import Ctx
from durable.cli import cli

ran: list[str] = []


@durable.workflow(name="fork.pipeline", queue="forks")
async def pipeline(ctx: Ctx, source: str) -> list[str]:
    async def work(step: str) -> str:
        ran.append(step)
        return f"{step}({source})"

    out = [await ctx.step("extract", lambda: work("extract"))]
    async with ctx.child("enrich") as child:
        out.append(await child.step("lookup", lambda: work("lookup")))
        await child.complete(None)
    out.append(await ctx.step("transform", lambda: work("transform")))
    out.append(await ctx.step("load", lambda: work("load")))
    return out


@pytest.fixture
async def executor(db: durable.Db) -> AsyncIterator[durable.Executor]:
    made = durable.Executor(db, [pipeline], concurrency=5)
    task = asyncio.ensure_future(made.run())
    yield made
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_fork_keeps_what_ran_before_its_step_and_runs_the_rest(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    assert await pipeline.run(db, "etl-1", "a") == ["extract(a)", "lookup(a)", "transform(a)", "load(a)"]
    ran.clear()
    run = await durable.fork(db, "etl-1", "etl-1-again", from_step="transform")
    assert run.status == "queued" and run.created
    # Kept: extract and the child enrich (with its step); run again: transform, load.
    assert await run.result(timeout=30) == ["extract(a)", "lookup(a)", "transform(a)", "load(a)"]
    assert ran == ["transform", "load"]
    rows = await pg.fetch(
        "SELECT t.name, t.kind, t.status FROM task AS t JOIN task AS r ON r.id = t.root_id "
        "WHERE r.name = 'etl-1-again' AND t.id <> r.id ORDER BY t.id"
    )
    kept = [(r["name"], r["kind"]) for r in rows]
    assert kept[:3] == [("extract", "step"), ("enrich", "workflow"), ("lookup", "step")], "kept in the order they ran"
    assert sorted(kept[3:]) == [("load", "step"), ("transform", "step")]
    source = await durable.get(db, "etl-1")
    assert source.status == "completed", "the source is left as it was"


async def test_a_fork_with_an_edited_input_and_from_the_start(db: durable.Db, executor: durable.Executor) -> None:
    await pipeline.run(db, "etl-2", "a")
    ran.clear()
    edited = await durable.fork(db, "etl-2", "etl-2-b", from_step="load", input="b")
    # Kept results stay as saved (they ran with "a"); load runs with the new input.
    assert await edited.result(timeout=30) == ["extract(a)", "lookup(a)", "transform(a)", "load(b)"]
    assert ran == ["load"]
    ran.clear()
    fresh = await durable.fork(db, "etl-2", "etl-2-c", input="c")  # from_step=None: keep nothing
    assert await fresh.result(timeout=30) == ["extract(c)", "lookup(c)", "transform(c)", "load(c)"]
    assert ran == ["extract", "lookup", "transform", "load"]


async def test_a_fork_from_a_child_workflow_runs_the_child_again(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    await pipeline.run(db, "etl-4", "a")
    ran.clear()
    run = await durable.fork(db, "etl-4", "etl-4-b", from_step="enrich", input="b")
    # Kept: extract; run again: the child enrich (its step too), transform, load.
    assert await run.result(timeout=30) == ["extract(a)", "lookup(b)", "transform(b)", "load(b)"]
    assert ran == ["lookup", "transform", "load"]
    child = await pg.fetchrow(
        "SELECT c.input, c.attempt FROM task AS c JOIN task AS r ON r.id = c.parent_id "
        "WHERE r.name = 'etl-4-b' AND c.name = 'enrich'"
    )
    assert child is not None and json.loads(child["input"]) is None and child["attempt"] == 1, "a new child, not a copy"


async def test_steps_that_did_not_complete_run_again(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "by-hand", input=1)
    await ctx.step("a", lambda: "A")
    with pytest.raises(RuntimeError):
        await ctx.step("b", lambda: (_ for _ in ()).throw(RuntimeError("b broke")))
    await ctx.step("c", lambda: "C")
    await ctx.release()
    run = await durable.fork(db, "by-hand", "by-hand-2", from_step="c")
    assert run.status == "running"  # run by hand: waits for Ctx.start
    again = await Ctx.start(db, "by-hand-2", input=1)
    assert again.attempt == 1
    assert await again.step("a", lambda: "a again") == "A"
    assert await again.step("b", lambda: "B") == "B", "a failed step is not kept"
    assert await again.step("c", lambda: "C2") == "C2"
    outputs = await pg.fetch(
        "SELECT t.name, t.output FROM task AS t JOIN task AS r ON r.id = t.root_id "
        "WHERE r.name = 'by-hand-2' AND t.kind = 'step' ORDER BY t.name"
    )
    assert [(r["name"], json.loads(r["output"])) for r in outputs] == [("a", "A"), ("b", "B"), ("c", "C2")]


async def test_bad_forks_are_refused(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "src")
    await ctx.step("only", lambda: 1)
    await ctx.complete(None)
    with pytest.raises(durable.WorkflowNotFound, match="'nope'"):
        await durable.fork(db, "nope", "x", from_step="only")
    with pytest.raises(durable.ConfigError, match="no step or child workflow named 'missing'"):
        await durable.fork(db, "src", "x", from_step="missing")
    with pytest.raises(durable.ConfigError, match="exists already"):
        await durable.fork(db, "src", "src", from_step="only")
    with pytest.raises(durable.NotJson):
        await durable.fork(db, "src", "y", from_step="only", input={1, 2})
    with pytest.raises(durable.WorkflowNotFound):
        await durable.get(db, "x")  # nothing half-made


async def test_the_fork_command(dsn: str, schema: str, db: durable.Db, executor: durable.Executor) -> None:
    await pipeline.run(db, "etl-3", "a")

    def cli_run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, *args])

    made = await asyncio.to_thread(cli_run, "fork", "etl-3", "etl-3-b", "--from-step", "load", "--input", '"b"', "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout) == {"name": "etl-3-b", "forked_from": "etl-3", "from_step": "load", "status": "queued"}
    assert await durable.result(db, "etl-3-b", timeout=30) == ["extract(a)", "lookup(a)", "transform(a)", "load(b)"]
    missing = await asyncio.to_thread(cli_run, "fork", "etl-3", "etl-3-c", "--from-step", "nope")
    assert missing.exit_code == 1 and "no step or child workflow named 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout
    bad = await asyncio.to_thread(cli_run, "fork", "etl-3", "etl-3-d", "--input", "{not json")
    assert bad.exit_code == 2 and "not JSON" in bad.stderr
