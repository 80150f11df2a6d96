"""Workflows: identity by name, input checks, completion, failure, children."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

import durable
from durable import Ctx


async def row(pg: asyncpg.Connection, name: str, parent_id: int | None = None) -> asyncpg.Record:
    record = await pg.fetchrow(
        "SELECT * FROM task WHERE name = $1 AND parent_id IS NOT DISTINCT FROM $2", name, parent_id
    )
    assert record is not None, name
    return record


async def test_a_root_is_identified_by_its_name(db: durable.Db, pg: asyncpg.Connection) -> None:
    first = await Ctx.start(db, "ingest", {"day": "2026-11-24"})
    await first.release()
    again = await Ctx.start(db, "ingest", {"day": "2026-11-24"})
    other = await Ctx.start(db, "ingest-2", {"day": "2026-11-24"})
    assert (first.created, again.created, other.created) == (True, False, True)
    assert first.id == again.id != other.id
    assert first.root_id == first.id
    assert (first.attempt, again.attempt) == (1, 2)
    assert await pg.fetchval("SELECT count(*) FROM task WHERE parent_id IS NULL") == 2
    record = await row(pg, "ingest")
    assert (record["kind"], record["status"]) == ("workflow", "running")
    assert json.loads(record["input"]) == {"day": "2026-11-24"}


async def test_starting_with_a_different_input_is_input_mismatch(db: durable.Db, pg: asyncpg.Connection) -> None:
    held = await Ctx.start(db, "ingest", {"source": "s3://a"})
    with pytest.raises(durable.InputMismatch, match="different input"):
        await Ctx.start(db, "ingest", {"source": "s3://b"})
    with pytest.raises(durable.InputMismatch):
        await Ctx.start(db, "ingest")  # None is an input too
    record = await row(pg, "ingest")
    assert json.loads(record["input"]) == {"source": "s3://a"}
    assert record["attempt"] == 1
    await held.release()
    with pytest.raises(durable.InputMismatch):
        await Ctx.start(db, "ingest", {"source": "s3://b"})


async def test_a_dsn_string_works_in_place_of_db(dsn: str, schema: str) -> None:
    # A DSN string means the default schema ("durable"), shared by the whole
    # run: the test's schema name keeps the workflow name unique.
    ctx = await Ctx.start(dsn, f"by-dsn-{schema}")
    assert await ctx.step("s", lambda: 1) == 1
    await ctx.complete("ok")
    again = await Ctx.start(dsn, f"by-dsn-{schema}")
    assert again.db is ctx.db, "one pool per DSN per process"
    assert again.output == "ok"


async def test_completed_workflow_started_again_replays_and_returns_its_output(db: durable.Db) -> None:
    calls: list[str] = []

    def body(value: int) -> int:
        calls.append(f"a={value}")
        return value

    ctx = await Ctx.start(db, "wf")
    await ctx.step("a", lambda: body(1))
    assert await ctx.complete({"total": 1}) == {"total": 1}
    assert ctx.status == "completed"

    again = await Ctx.start(db, "wf")
    assert (again.status, again.output) == ("completed", {"total": 1})
    assert await again.step("a", lambda: body(2)) == 1
    assert await again.complete({"total": 999}) == {"total": 1}, "the saved output wins"
    assert calls == ["a=1"]


async def test_a_completed_workflow_takes_no_new_steps(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")
    await ctx.complete(None)
    again = await Ctx.start(db, "wf")
    with pytest.raises(durable.WorkflowFinished, match="already completed"):
        await again.step("new", lambda: 1)
    with pytest.raises(durable.WorkflowFinished):
        await again.child("new-child")
    assert await pg.fetchval("SELECT count(*) FROM task") == 1


async def test_a_workflow_that_raises_is_failed_and_reruns_when_started_again(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    @durable.workflow
    async def flaky(ctx: Ctx, fail: bool) -> str:
        await ctx.step("before", lambda: "saved")
        if fail:
            raise RuntimeError("upstream is down")
        return "done"

    with pytest.raises(RuntimeError, match="upstream is down"):
        await flaky.run(db, "nightly", True)
    record = await row(pg, "nightly")
    assert record["status"] == "failed"
    error = json.loads(record["error"])
    assert (error["type"], error["message"]) == ("RuntimeError", "upstream is down")

    with pytest.raises(durable.InputMismatch):
        await flaky.run(db, "nightly", False)

    ctx = await Ctx.start(db, "nightly", True)
    assert (ctx.status, ctx.attempt) == ("running", 2)
    assert await ctx.step("before", lambda: "not run") == "saved"
    await ctx.complete("recovered")
    record = await row(pg, "nightly")
    assert (record["status"], record["error"], json.loads(record["output"])) == ("completed", None, "recovered")


async def test_async_with_fails_on_error_and_completes_on_exit(db: durable.Db, pg: asyncpg.Connection) -> None:
    with pytest.raises(KeyError):
        async with Ctx.start(db, "broken") as ctx:
            await ctx.step("s", lambda: 1)
            raise KeyError("missing")
    assert (await row(pg, "broken"))["status"] == "failed"

    async with Ctx.start(db, "fine") as ctx:
        await ctx.step("s", lambda: 1)
    record = await row(pg, "fine")
    assert (record["status"], json.loads(record["output"])) == ("completed", None)


async def test_children_have_their_own_steps(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "ingest")
    child = await ctx.child("post_process", input={"n": 4})
    assert child.root_id == ctx.id and child.id != ctx.id
    assert await child.step("notify", lambda: "sent") == "sent"
    assert await child.complete("ok") == "ok"
    await ctx.complete("finished")

    record = await row(pg, "post_process", ctx.id)
    assert (record["kind"], record["status"], record["root_id"]) == ("workflow", "completed", ctx.id)
    assert json.loads(record["input"]) == {"n": 4}
    notify = await row(pg, "notify", child.id)
    assert (notify["root_id"], json.loads(notify["output"])) == (ctx.id, "sent")

    again = await Ctx.start(db, "ingest")
    replayed_child = await again.child("post_process", input={"n": 4})
    assert replayed_child.id == child.id
    assert replayed_child.output == "ok"
    assert await replayed_child.step("notify", lambda: "again") == "sent"


async def test_child_input_mismatch_and_name_clash_with_a_step(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "root")
    await ctx.child("c", input=1)
    await ctx.step("s", lambda: 1)
    await ctx.release()
    again = await Ctx.start(db, "root")
    with pytest.raises(durable.InputMismatch):
        await again.child("c", input=2)
    with pytest.raises(durable.DuplicateStep):
        await again.child("s")
    await again.release()
    third = await Ctx.start(db, "root")
    with pytest.raises(durable.DuplicateStep):
        await third.step("c", lambda: 1)


async def test_children_run_concurrently(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "fanout")

    async def source(i: int) -> int:
        async with ctx.child(f"source_{i}", input={"i": i}) as child:
            rows = await child.step("extract", lambda: list(range(i)))
            total = await child.step("load", lambda: sum(rows))
            await child.complete(total)
        return total

    totals = await asyncio.gather(*(source(i) for i in range(8)))
    assert totals == [sum(range(i)) for i in range(8)]
    counts = await pg.fetchrow(
        """SELECT count(*) FILTER (WHERE kind = 'workflow' AND parent_id IS NOT NULL) AS children,
                  count(*) FILTER (WHERE kind = 'step') AS steps,
                  count(*) FILTER (WHERE status <> 'completed') AS unfinished
           FROM task WHERE root_id = $1""",
        ctx.id,
    )
    assert counts is not None
    assert dict(counts) == {"children": 8, "steps": 16, "unfinished": 1}  # the root itself


async def test_deleting_a_task_by_hand_deletes_its_whole_subtree(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "tree")
    await ctx.step("load", lambda: 1)
    child = await ctx.child("part")
    await child.step("part-step", lambda: 2)
    grandchild = await child.child("sub-part")
    await grandchild.step("sub-step", lambda: 3)
    await grandchild.set_event("stage", "deep")
    await grandchild.complete(None)
    await child.complete(None)
    await ctx.complete(None)
    other = await Ctx.start(db, "other-tree")
    await other.step("kept", lambda: 4)
    await other.complete(None)

    async def names() -> set[str]:
        return {r["name"] for r in await pg.fetch("SELECT name FROM task")}

    await pg.execute("DELETE FROM task WHERE id = $1", child.id)
    assert await names() == {"tree", "load", "other-tree", "kept"}
    assert await pg.fetchval("SELECT count(*) FROM task_event") == 0
    await pg.execute("DELETE FROM task WHERE id = $1", ctx.id)
    assert await names() == {"other-tree", "kept"}
