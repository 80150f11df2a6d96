"""The inferred types of the public API, checked by ``mypy --strict`` (``make lint``).

Nothing here runs: every ``assert_type`` is a claim about what mypy infers
for users' code, and a change to the API's types that breaks one fails lint.
The ``type: ignore[...]`` lines are claims that mypy refuses the call.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, assert_type

import durable
import durable.sync
from durable import Ctx


@durable.step
async def fetch(url: str) -> dict[str, int]:
    return {url: 1}


@durable.step(retries=3)
async def count(items: list[str]) -> int:
    return len(items)


@durable.workflow
async def crawl(ctx: Ctx, urls: list[str]) -> int:
    return len(urls)


@durable.workflow(queue="etl")
async def ingest(ctx: Ctx, source: str) -> list[str]:
    return [source]


@durable.workflow(schedule="*/15 * * * *")
async def report(ctx: Ctx, tick: datetime) -> None:
    return None


async def steps(ctx: Ctx) -> None:
    assert_type(await ctx.step("n", lambda: 1), int)
    assert_type(await ctx.step("s", lambda: "x"), str)
    assert_type(await ctx.step("d", lambda: {"a": [1, 2]}), dict[str, list[int]])
    assert_type(await ctx.step("f", lambda: fetch_now()), dict[str, int])
    assert_type(await ctx.transaction("tx", lambda tx: tx.execute("SELECT 1")), int)
    assert_type(await ctx.transaction("tx2", lambda tx: "done"), str)
    assert_type(await fetch("https://a"), dict[str, int])
    assert_type(await count(["a"]), int)
    assert_type(await ctx.complete(3), int)
    assert_type(ctx.input, Any)
    child = await ctx.child("c", input={"n": 4})
    assert_type(child, Ctx)
    await ctx.step("t", lambda: (1, 2))  # type: ignore[arg-type, return-value]  # a tuple is not Json


async def fetch_now() -> dict[str, int]:
    return {}


async def workflows(db: durable.Db) -> None:
    assert_type(crawl, durable.Workflow[list[str], int])
    assert_type(await crawl.run(db, "crawl-1", ["https://a"]), int)
    run = await ingest.enqueue(db, "ingest-1", "s3://b", delay=timedelta(minutes=5), priority=10, key="acme")
    assert_type(run, durable.Run[list[str]])
    assert_type(await run.result(timeout=30), list[str])
    assert_type(await durable.result(db, "ingest-1", timeout=30), Any)
    assert_type(await durable.get(db, "ingest-1"), durable.WorkflowInfo)
    assert_type(await durable.list_workflows(db, status="failed"), list[durable.WorkflowInfo])
    assert_type(await durable.cancel(db, "ingest-1"), bool)
    # A child by its path: a tuple or list of names.
    assert_type((await durable.get(db, ("ingest-1", "load"))).path, tuple[str, ...])
    assert_type(await durable.tree(db, ["ingest-1", "load"]), durable.WorkflowTree)
    assert_type(await durable.cancel(db, ("ingest-1", "load"), children=False, enqueued=True), bool)
    path: durable.WorkflowPath = ("ingest-1", "load")
    assert_type(await durable.send(db, path, "go", 1), bool)
    await durable.get(db, ("ingest-1", 2))  # type: ignore[arg-type]  # names are str
    assert_type(await durable.resume(db, "ingest-1"), bool)
    await ingest.enqueue(db, "ingest-2", 7)  # type: ignore[arg-type]  # the input is a str
    assert_type(report, durable.Workflow[datetime, None])
    assert_type(durable.Executor(db, [crawl, ingest, report]), durable.Executor)


def blocking() -> None:
    db = durable.sync.init("postgresql://localhost/app")
    assert_type(db, durable.Db)
    run = durable.sync.enqueue(db, ingest, "ingest-3", "s3://c")
    assert_type(run, durable.Run[list[str]])
    assert_type(durable.sync.result(db, run.name, timeout=5), Any)
    assert_type(durable.sync.get(db, run.name), durable.WorkflowInfo)
    assert_type(durable.sync.list_workflows(db, queue="etl"), list[durable.WorkflowInfo])
    assert_type(durable.sync.cancel(db, run.name), bool)
    assert_type(durable.sync.cancel(db, (run.name, "load"), children=False), bool)
    assert_type(durable.sync.resume(db, run.name), bool)
    durable.sync.enqueue(db, ingest, "ingest-4", 7)  # type: ignore[misc]  # the input is a str
