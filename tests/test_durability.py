"""What the README promises of a crash of Postgres itself: a step whose
``ctx.step`` returned is committed (synchronous commit), nothing completed
runs twice, and every workflow finishes when resumed."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from typing import Any

import asyncpg
import pytest

import _cluster
import durable
from _waits import until
from durable import Ctx

WORKFLOWS = 20
STEPS = 30


# A crash of a cluster of the test's own: the full tier. The fast tier has what it
# rests on: an awaited batch commits synchronously (rust/engine/writer.rs's unit
# tests) and a commit whose answer is lost is still committed (test_proxy.py).
@pytest.mark.slow
async def test_an_immediate_shutdown_of_postgres_loses_no_returned_step(own_server: Any) -> None:
    dsn = own_server.get_uri("postgres")
    schema = "immediate"
    returned: dict[tuple[str, str], Any] = {}
    calls: Counter[tuple[str, str]] = Counter()

    def body(workflow: str, step: str) -> dict[str, str]:
        calls[workflow, step] += 1
        return {"from": f"{workflow}/{step}"}

    @durable.workflow
    async def job(ctx: Ctx, _: None) -> int:
        for i in range(STEPS):
            name = f"s{i:02d}"
            value = await ctx.step(name, functools.partial(body, ctx.name, name))
            returned[ctx.name, name] = value
            await asyncio.sleep(0.005)
        return STEPS

    db = await durable.init(dsn, schema=schema, reconnect_timeout=2.0)
    try:
        running = [asyncio.ensure_future(job.run(db, f"w{w:02d}", None)) for w in range(WORKFLOWS)]

        async def under_way() -> bool:
            return len(returned) >= WORKFLOWS * STEPS // 3

        await until(under_way, "a third of the steps returned")
        await asyncio.to_thread(_cluster.pg_ctl, own_server, "stop", "immediate")  # a crash: no shutdown checkpoint
        try:
            # Each run fails once its step's save and its failure's save have
            # each waited out the reconnect timeout: all of them together.
            outcomes = await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 15)
        finally:
            await asyncio.to_thread(_cluster.pg_ctl, own_server, "start")
        assert all(isinstance(o, durable.DatabaseError) for o in outcomes), outcomes
        before_crash = dict(returned)

        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch(
                """SELECT w.name AS workflow, s.name, s.status, s.output FROM task s
                   JOIN task w ON w.id = s.parent_id WHERE s.kind = 'step'"""
            )
        finally:
            await conn.close()
        saved = {(r["workflow"], r["name"]): (r["status"], r["output"]) for r in rows}
        for key, value in before_crash.items():
            assert saved.get(key) == ("completed", json.dumps(value, separators=(", ", ": "))), key

        calls_before = Counter(calls)
        results = await asyncio.gather(*(job.run(db, f"w{w:02d}", None) for w in range(WORKFLOWS)))
        assert results == [STEPS] * WORKFLOWS
        for key in before_crash:
            assert calls[key] == calls_before[key] == 1, f"{key} ran again though its result was committed"
        print(
            f"\nimmediate shutdown: {len(before_crash)} steps had returned, all saved; "
            f"{sum(calls.values()) - len(calls)} interrupted bodies ran again on resume"
        )
    finally:
        await db.close()
