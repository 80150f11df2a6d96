"""The deploy-storm worker, run as a real deployment runs it:

    DURABLE_DATABASE_URL=... durable --schema SCHEMA worker deploys:executor   (from this directory)

``executor`` makes an Executor of ``deploys.three`` (queue ``deploys``) with
``max_recoveries=0``: a run whose holder is taken for dead even once fails.
Each of the workflow's three step bodies first appends (run, step, pid) to
the table ``bodies`` (made by the test) through a connection of its own,
committed at once, then works 50 to 250 ms (at random, so that runs fall
out of step): the test counts how many times each body ran, and stops a
worker while a body is in flight.
"""

from __future__ import annotations

import asyncio
import os
import random

import asyncpg

import durable
from durable import Ctx

STEPS = ("s0", "s1", "s2")


async def record(schema: str, run: str, step: str) -> None:
    conn = await asyncpg.connect(os.environ["DURABLE_DATABASE_URL"], server_settings={"search_path": schema})
    try:
        await conn.execute("INSERT INTO bodies (run, step, pid) VALUES ($1, $2, $3)", run, step, os.getpid())
    finally:
        await conn.close()


@durable.workflow(name="deploys.three", queue="deploys")
async def three(ctx: Ctx, n: int) -> int:
    """Three steps, each returning ``n``: the run's output is ``3 * n``."""
    total = 0
    for step in STEPS:

        async def body(step: str = step) -> int:
            await record(ctx.db.schema, ctx.name, step)
            await asyncio.sleep(random.uniform(0.05, 0.25))
            return n

        total += await ctx.step(step, body)
    return total


def executor(db: durable.Db) -> durable.Executor:
    # A drain needs one step's time; the grace is far longer.
    return durable.Executor(db, [three], concurrency=4, max_recoveries=0, recovery_interval=0.2, shutdown_grace=10)
