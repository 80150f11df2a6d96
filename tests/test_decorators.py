"""@durable.workflow and @durable.step."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

import durable
from durable import Ctx

calls: list[str] = []


@durable.step
async def fetch(url: str) -> dict[str, str]:
    calls.append(url)
    return {"url": url}


@durable.step(name="store")
async def save(row: dict[str, str]) -> int:
    calls.append(f"save {row['url']}")
    return len(row["url"])


@durable.workflow
async def crawl(ctx: Ctx, urls: list[str]) -> int:
    total = 0
    for url in urls:
        total += await save(await fetch(url))
    return total


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    calls.clear()


async def test_steps_in_a_loop_get_distinct_deterministic_names(db: durable.Db, pg: asyncpg.Connection) -> None:
    assert await crawl.run(db, "crawl-1", ["a", "bb"]) == 3
    names = [r["name"] for r in await pg.fetch("SELECT name FROM task WHERE kind = 'step' ORDER BY id")]
    qualname = fetch.__qualname__
    assert names == [qualname, "store", f"{qualname}#2", "store#2"]
    status = await pg.fetchrow("SELECT status, output FROM task WHERE name = 'crawl-1'")
    assert status is not None
    assert (status["status"], json.loads(status["output"])) == ("completed", 3)


async def test_a_completed_workflow_returns_its_saved_result_without_running(db: durable.Db) -> None:
    entered: list[str] = []

    @durable.workflow
    async def counted(ctx: Ctx, urls: list[str]) -> int:
        entered.append("body")  # outside any step: only runs if the function runs
        return await crawl.fn(ctx, urls)

    assert await counted.run(db, "crawl-1", ["a"]) == 1
    assert (calls, entered) == (["a", "save a"], ["body"])
    calls.clear()
    assert await counted.run(db, "crawl-1", ["a"]) == 1
    assert (calls, entered) == ([], ["body"])


async def test_a_resumed_workflow_replays_its_decorated_steps(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow
    async def flaky(ctx: Ctx, urls: list[str]) -> int:
        total = 0
        for url in urls:
            total += await save(await fetch(url))
            if url == "b" and ctx.attempt == 1:
                raise ConnectionError("network blip")
        return total

    with pytest.raises(ConnectionError):
        await flaky.run(db, "flaky", ["a", "b", "c"])
    assert calls == ["a", "save a", "b", "save b"]
    calls.clear()
    assert await flaky.run(db, "flaky", ["a", "b", "c"]) == 3
    assert calls == ["c", "save c"]


async def test_concurrent_decorated_steps_are_named_in_call_order(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow
    async def fan(ctx: Ctx, urls: list[str]) -> list[dict[str, str]]:
        return await asyncio.gather(*(fetch(u) for u in urls))

    assert await fan.run(db, "fan", ["x", "y", "z"]) == [{"url": u} for u in "xyz"]
    rows = await pg.fetch("SELECT name, output FROM task WHERE kind = 'step'")
    by_name = {r["name"]: json.loads(r["output"])["url"] for r in rows}
    q = fetch.__qualname__
    assert by_name == {q: "x", f"{q}#2": "y", f"{q}#3": "z"}


async def test_outside_a_workflow_a_step_is_a_plain_call(db: durable.Db, pg: asyncpg.Connection) -> None:
    assert await fetch("plain") == {"url": "plain"}
    assert calls == ["plain"]
    assert await pg.fetchval("SELECT count(*) FROM task") == 0


async def test_steps_inside_async_with_use_that_context(db: durable.Db, pg: asyncpg.Connection) -> None:
    async with Ctx.start(db, "parent") as parent:
        await fetch("p")
        async with parent.child("kid") as kid:
            await fetch("k")
        await fetch("p2")
    rows = await pg.fetch(
        """SELECT s.name, w.name AS owner FROM task s JOIN task w ON w.id = s.parent_id
           WHERE s.kind = 'step' ORDER BY s.id"""
    )
    q = fetch.__qualname__
    assert [(r["name"], r["owner"]) for r in rows] == [(q, "parent"), (q, "kid"), (f"{q}#2", "parent")]
    assert kid.status == "completed"


async def test_child_workflows_from_decorated_functions(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow
    async def load(ctx: Ctx, source: str) -> int:
        rows = await ctx.step("extract", lambda: [source] * 2)
        return len(rows)

    @durable.workflow
    async def etl(ctx: Ctx, sources: list[str]) -> int:
        counts = [await load.run_child(ctx, f"load_{s}", s) for s in sources]
        return sum(counts)

    assert await etl.run(db, "etl", ["a", "b"]) == 4
    children = await pg.fetch("SELECT name, status FROM task WHERE kind = 'workflow' AND parent_id IS NOT NULL")
    assert sorted((r["name"], r["status"]) for r in children) == [("load_a", "completed"), ("load_b", "completed")]


def test_decorators_need_async_functions() -> None:
    with pytest.raises(TypeError, match="async def"):
        durable.step(lambda: 1)  # type: ignore[arg-type, return-value]

    def not_async(ctx: Ctx, x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async def"):
        durable.workflow(not_async)  # type: ignore[arg-type]


async def test_step_options_pass_through_the_decorator(db: durable.Db, pg: asyncpg.Connection) -> None:
    tries: list[int] = []

    @durable.step(retries=2, backoff=durable.Backoff(initial=0.01, jitter=0.0), retry_on=ConnectionError)
    async def flaky() -> int:
        tries.append(durable.attempt())
        if len(tries) < 3:
            raise ConnectionError("blip")
        return len(tries)

    @durable.workflow
    async def wf(ctx: Ctx, _: None) -> int:
        return await flaky()

    assert await wf.run(db, "wf", None) == 3
    assert tries == [1, 2, 3]
    assert await pg.fetchval("SELECT attempt FROM task WHERE kind = 'step'") == 3
