"""The seed's workflow as a separate program, for crash tests.

    python shards.py DSN SCHEMA [--block-at N]

Resolves shards, then runs one step per shard. Every step body first records
its call in the side table ``calls`` (committed at once), so a test can count
how often each body really ran. With ``--block-at N`` the body of shard N
prints ``blocked N`` and waits forever, for the test to SIGKILL the process.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os

import asyncpg

import durable
from durable import Ctx

SHARDS = 6


async def main(dsn: str, schema: str, block_at: int | None) -> None:
    db = await durable.init(dsn, schema=schema)
    side = await asyncpg.connect(dsn, server_settings={"search_path": schema})

    async def record(step: str) -> None:
        await side.execute("INSERT INTO calls (step, pid) VALUES ($1, $2)", step, os.getpid())

    async def resolve() -> list[int]:
        await record("resolve_shards")
        return list(range(SHARDS))

    async def process(shard: int) -> int:
        await record(f"shard_{shard}")
        if shard == block_at:
            print(f"blocked {shard}", flush=True)
            await asyncio.Event().wait()
        return shard * 10

    ctx = await Ctx.start(db, "ingest")
    print(f"attempt {ctx.attempt}", flush=True)
    shards = await ctx.step("resolve_shards", resolve)
    total = 0
    for s in shards:
        total += await ctx.step(f"shard_{s}", functools.partial(process, s))
    await ctx.complete(total)
    print(f"done {total}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("--block-at", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.schema, args.block_at))
