"""The kill-storm worker: one workflow of many steps, killed again and again.

    python storm.py DSN SCHEMA NAME STEPS [--die in-body|after-body|in-complete]

Runs workflow NAME. Every step body first appends (workflow, step, pid) to the side table ``ledger``
(committed at once), then sleeps a few milliseconds. Prints ``ready`` once
the workflow is started and ``done TOTAL`` at the end. ``--die`` makes the
worker SIGKILL itself at that point of the first step it runs (or of the
completion), to aim kills where a timer rarely lands.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import signal

import asyncpg

import durable
from durable import Ctx


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(dsn: str, schema: str, name: str, steps: int, die_at: str | None) -> None:
    db = await durable.init(dsn, schema=schema)
    side = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    ctx = await Ctx.start(db, name, wait=10)  # the killed predecessor's session may take a moment to close
    print("ready", flush=True)
    loop = asyncio.get_running_loop()

    async def body(i: int) -> int:
        await side.execute("INSERT INTO ledger (workflow, step, pid) VALUES ($1, $2, $3)", name, i, os.getpid())
        if die_at == "in-body":
            die()
        await asyncio.sleep(random.uniform(0.002, 0.012))
        if die_at == "after-body":
            # Dies as soon as the loop runs again: the body has returned, its
            # result is on its way to (or in) the database, not yet confirmed.
            loop.call_soon(die)
        return i

    total = 0
    for i in range(steps):
        total += await ctx.step(f"s{i:04d}", functools.partial(body, i))
    if die_at == "in-complete":
        loop.call_soon(die)
    await ctx.complete(total)
    print(f"done {total}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("name")
    parser.add_argument("steps", type=int)
    parser.add_argument("--die", choices=["in-body", "after-body", "in-complete"])
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.schema, args.name, args.steps, args.die))
