"""Workflows run by the executor test programs (tests/programs/executor.py).

Each records what it does in the side table ``ledger`` (created by the test):
(run, pid, event, at) with the database's clock, committed at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime
from typing import Any

import asyncpg

import durable
from durable import Ctx

#: The side connections of this process (set by the executor program).
side: asyncpg.Pool | None = None


async def record(run: str, event: str) -> None:
    assert side is not None
    await side.execute(
        "INSERT INTO ledger (run, pid, event, at) VALUES ($1, $2, $3, clock_timestamp())", run, os.getpid(), event
    )


@durable.workflow(name="jobs.sleepy", queue="work")
async def sleepy(ctx: Ctx, job: dict[str, Any]) -> str:
    """Sleeps ``job["ms"]`` milliseconds in one step; records its start and end."""
    await record(ctx.name, "start")
    await ctx.step("work", lambda: asyncio.sleep(job["ms"] / 1000))
    await record(ctx.name, "end")
    return str(job.get("tag", ctx.name))


@durable.workflow(name="jobs.steps", queue="work")
async def steps(ctx: Ctx, count: int) -> int:
    """``count`` steps of 20 ms, each recorded when its body runs."""
    total = 0
    for i in range(count):

        async def body(i: int = i) -> int:
            await record(f"{ctx.name}/s{i}", "body")
            await asyncio.sleep(0.02)
            return i

        total += await ctx.step(f"s{i}", body)
    return total


@durable.workflow(name="jobs.gated", queue="work")
async def gated(ctx: Ctx, count: int) -> int:
    """``count`` steps as ``steps``'s; from the ninth on, each body first
    waits until the test opens the gate (a row in its table ``gate``)."""
    total = 0
    for i in range(count):

        async def body(i: int = i) -> int:
            assert side is not None
            await record(f"{ctx.name}/s{i}", "body")
            while i >= 8 and not await side.fetchval("SELECT EXISTS (SELECT 1 FROM gate)"):
                await asyncio.sleep(0.01)
            return i

        total += await ctx.step(f"s{i}", body)
    return total


@durable.workflow(name="jobs.poison", queue="poison")
async def poison(ctx: Ctx, _: None) -> None:
    """Kills its executor in its first step, every time it runs."""
    await record(ctx.name, "start")
    await ctx.step("die", lambda: os.kill(os.getpid(), signal.SIGKILL))


@durable.workflow(name="jobs.steady", queue="shared")
async def steady(ctx: Ctx, _: None) -> str:
    """A healthy run: its one step records its start, then waits until the
    test opens the gate (a row in its table ``gate``)."""

    async def body() -> str:
        assert side is not None
        await record(ctx.name, "start")
        while not await side.fetchval("SELECT EXISTS (SELECT 1 FROM gate)"):
            await asyncio.sleep(0.01)
        return "steady"

    return await ctx.step("work", body)


@durable.workflow(name="jobs.crasher", queue="shared")
async def crasher(ctx: Ctx, _: None) -> None:
    """Kills its executor in its first step, every time it runs; on its
    first attempt, only once ``steady`` is running beside it."""

    async def die() -> None:
        assert side is not None
        while ctx.attempt == 1 and not await side.fetchval("SELECT EXISTS (SELECT 1 FROM ledger WHERE event = 'start')"):
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

    await record(ctx.name, "start-crasher")
    await ctx.step("die", die)


@durable.workflow(name="jobs.beat", queue="beats", every=1)
async def beat(ctx: Ctx, tick: datetime) -> str:
    """Runs every second (ticks aligned to the epoch); records each run."""
    await record(ctx.name, "tick")
    return tick.isoformat()


@durable.workflow(name="jobs.nap", queue="naps")
async def nap(ctx: Ctx, seconds: float) -> str:
    """Sleeps durably ``seconds`` between two steps; records when each runs."""
    await ctx.step("before", lambda: record(ctx.name, "before"))
    await ctx.sleep("cool-off", seconds)
    await ctx.step("after", lambda: record(ctx.name, "after"))
    return "rested"


ALL: list[durable.Workflow[Any, Any]] = [sleepy, steps, gated, poison, steady, crasher, beat, nap]
