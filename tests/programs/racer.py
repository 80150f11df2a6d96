"""Starts the workflows named on stdin, one per line, and reports on stdout.

    python racer.py DSN SCHEMA

For each name: ``ran NAME`` if it ran the workflow (3 steps, each recorded in
the side table ``ledger``), ``busy NAME`` if another live process held it,
``replayed NAME`` if it found it completed already.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys

import asyncpg

import durable
from durable import Ctx


async def main(dsn: str, schema: str) -> None:
    db = await durable.init(dsn, schema=schema)
    side = await asyncpg.connect(dsn, server_settings={"search_path": schema})

    async def body(name: str, step: int) -> int:
        await side.execute("INSERT INTO ledger (workflow, step, pid) VALUES ($1, $2, $3)", name, step, os.getpid())
        await asyncio.sleep(0.01)
        return step

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        name = line.strip()
        try:
            ctx = await Ctx.start(db, name)
        except durable.WorkflowBusy:
            print(f"busy {name}", flush=True)
            continue
        if ctx.status == "completed":
            print(f"replayed {name}", flush=True)
            continue
        for step in range(3):
            await ctx.step(f"s{step}", functools.partial(body, name, step))
        await ctx.complete(None)
        print(f"ran {name}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
