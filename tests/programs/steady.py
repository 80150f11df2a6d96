"""Holds one workflow and works through it slowly, for the liveness tests.

    python steady.py DSN SCHEMA NAME STEPS [--pause-at N] [--session-grace S]

Runs workflow NAME with STEPS steps. Every step body first records
(step, pid) in the side table ``ledger`` (committed at once), then sleeps a
little. With ``--pause-at N`` the body of step N prints ``paused`` and waits
for a line on stdin before it goes on. Prints ``started`` once it holds the
workflow and ``done`` at the end. The side connection is immune to the
server's idle timeout, so that only durable's own connections are tested.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys

import asyncpg

import durable
from durable import Ctx


async def main(dsn: str, schema: str, name: str, steps: int, pause_at: int | None, grace: float) -> None:
    db = await durable.init(dsn, schema=schema, session_grace=grace)
    side = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "idle_session_timeout": "0"}
    )
    loop = asyncio.get_running_loop()

    async def body(i: int) -> int:
        await side.execute("INSERT INTO ledger (step, pid) VALUES ($1, $2)", i, os.getpid())
        if i == pause_at:
            print("paused", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.sleep(0.02)
        return i

    ctx = await Ctx.start(db, name, wait=30)
    print("started", flush=True)
    for i in range(steps):
        await ctx.step(f"s{i:03d}", functools.partial(body, i))
    await ctx.complete(None)
    print("done", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("name")
    parser.add_argument("steps", type=int)
    parser.add_argument("--pause-at", type=int)
    parser.add_argument("--session-grace", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.schema, args.name, args.steps, args.pause_at, args.session_grace))
