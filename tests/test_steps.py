"""Steps: run once, saved, replayed; failures recorded; names unique."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import asyncpg
import pytest

import durable
from durable import Ctx


async def steps_of(pg: asyncpg.Connection, workflow: str) -> dict[str, asyncpg.Record]:
    rows = await pg.fetch(
        """SELECT s.* FROM task s JOIN task w ON s.parent_id = w.id
           WHERE w.name = $1 AND w.parent_id IS NULL AND s.kind = 'step'""",
        workflow,
    )
    return {r["name"]: r for r in rows}


async def test_step_result_is_saved_and_returned(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")
    assert await ctx.step("resolve_shards", lambda: [0, 1, 2, 3]) == [0, 1, 2, 3]
    rows = await steps_of(pg, "wf")
    assert rows["resolve_shards"]["status"] == "completed"
    assert json.loads(rows["resolve_shards"]["output"]) == [0, 1, 2, 3]
    assert rows["resolve_shards"]["attempt"] == 1


async def test_async_and_sync_callables_both_work(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")

    async def fetch() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"rows": 3}

    assert await ctx.step("async", fetch) == {"rows": 3}
    assert await ctx.step("sync", lambda: "ok") == "ok"
    assert await ctx.step("returns_coroutine", lambda: fetch()) == {"rows": 3}


async def test_completed_step_is_not_rerun_on_resume(db: durable.Db) -> None:
    calls: list[str] = []

    def body(name: str, value: Any) -> Any:
        calls.append(name)
        return value

    ctx = await Ctx.start(db, "wf")
    await ctx.step("a", lambda: body("a", {"k": [1, 2]}))
    await ctx.step("b", lambda: body("b", "text"))

    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    assert not resumed.created
    assert await resumed.step("a", lambda: body("a", "other")) == {"k": [1, 2]}
    assert await resumed.step("b", lambda: body("b", "other")) == "text"
    assert await resumed.step("c", lambda: body("c", 3)) == 3
    assert calls == ["a", "b", "c"]


async def test_step_returns_only_after_commit(db: durable.Db, dsn: str, schema: str) -> None:
    ctx = await Ctx.start(db, "wf")
    await ctx.step("s", lambda: 42)
    # A separate connection sees the committed row the moment the step returns.
    other = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        assert await other.fetchval("SELECT output FROM task WHERE name = 's'") == "42"
    finally:
        await other.close()


async def test_failed_step_is_recorded_and_the_exception_propagates(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    class PaymentDeclined(Exception):
        pass

    def charge() -> None:
        raise PaymentDeclined("card 4242 declined")

    ctx = await Ctx.start(db, "wf")
    with pytest.raises(PaymentDeclined, match="card 4242 declined"):
        await ctx.step("charge", charge)
    row = (await steps_of(pg, "wf"))["charge"]
    assert row["status"] == "failed"
    assert row["output"] is None
    error = json.loads(row["error"])
    assert error["type"].endswith("PaymentDeclined")
    assert error["message"] == "card 4242 declined"
    assert "in charge" in error["traceback"]
    assert error["module"] == __name__


async def test_failed_step_reruns_on_the_next_run_with_a_new_attempt(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(ZeroDivisionError):
        await ctx.step("flaky", lambda: 1 / 0)
    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    assert await resumed.step("flaky", lambda: "fixed") == "fixed"
    row = (await steps_of(pg, "wf"))["flaky"]
    assert (row["status"], row["attempt"], row["error"]) == ("completed", 2, None)


async def test_running_step_found_on_resume_is_rerun_with_attempt_plus_one(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.sleep(3600)

    ctx = await Ctx.start(db, "wf")
    task = asyncio.ensure_future(ctx.step("slow", hangs))
    await started.wait()
    # The marker is written without waiting; the next awaited write flushes it.
    await ctx.step("other", lambda: 1)
    assert (await steps_of(pg, "wf"))["slow"]["status"] == "running"
    task.cancel()  # the "crash": the body never finishes
    with pytest.raises(asyncio.CancelledError):
        await task

    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    assert await resumed.step("slow", lambda: "done") == "done"
    row = (await steps_of(pg, "wf"))["slow"]
    assert (row["status"], row["attempt"]) == ("completed", 2)


async def test_duplicate_step_name_in_one_run_is_an_error(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")
    await ctx.step("fetch", lambda: 1)
    calls: list[int] = []
    with pytest.raises(durable.DuplicateStep, match='"fetch" is used twice'):
        await ctx.step("fetch", lambda: calls.append(1))
    assert calls == []
    assert json.loads((await steps_of(pg, "wf"))["fetch"]["output"]) == 1


async def test_duplicate_name_is_an_error_on_replay_too(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")
    await ctx.step("fetch", lambda: 1)
    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    assert await resumed.step("fetch", lambda: 2) == 1
    with pytest.raises(durable.DuplicateStep):
        await resumed.step("fetch", lambda: 3)


async def test_concurrent_steps_in_one_workflow(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")

    async def square(i: int) -> int:
        await asyncio.sleep(0.01 * (i % 3))
        return i * i

    results = await asyncio.gather(*(ctx.step(f"sq_{i}", functools.partial(square, i)) for i in range(30)))
    assert results == [i * i for i in range(30)]
    rows = await steps_of(pg, "wf")
    assert {name: json.loads(r["output"]) for name, r in rows.items()} == {f"sq_{i}": i * i for i in range(30)}

    await ctx.release()
    resumed = await Ctx.start(db, "wf")
    replayed = await asyncio.gather(*(resumed.step(f"sq_{i}", lambda: -1) for i in range(30)))
    assert replayed == results


async def test_non_json_result_raises_type_error_and_saves_no_output(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(durable.NotJson) as caught:
        await ctx.step("tags", lambda: {"tags": {"a", "b"}})
    assert isinstance(caught.value, TypeError)
    assert 'result of step "tags"' in str(caught.value)
    assert "value at [\"tags\"] is a set" in str(caught.value)
    row = (await steps_of(pg, "wf"))["tags"]
    assert (row["status"], row["output"]) == ("failed", None)
    assert json.loads(row["error"])["type"] == "NotJson"


async def test_step_needs_a_callable(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(TypeError, match="fn must be a callable"):
        await ctx.step("x", 42)  # type: ignore[call-overload]
    assert await steps_of(pg, "wf") == {}
