"""Enqueueing as users do it: 2000 concurrent `enqueue` calls (asyncio.gather)
against one `enqueue_many` of 2000, and one `enqueue` at a time.

    python bench/enqueues.py [--dsn URL] [--runs 3]

Each run works in a fresh schema, dropped afterwards. Prints each run and
the medians. Build with `make build-release` first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg

import durable

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
RUNS = 2000
ONE_AT_A_TIME = 300


@durable.workflow(name="bench.enqueued", queue="bench")
async def enqueued(ctx: durable.Ctx, k: int) -> int:
    return k


async def once(dsn: str) -> tuple[float, float, float]:
    """Seconds for the concurrent enqueues and for `enqueue_many`, and
    microseconds per enqueue one at a time."""
    schema = "bench_enqueues_" + uuid.uuid4().hex[:8]
    db = await durable.init(dsn, schema=schema)
    try:
        await enqueued.enqueue(db, "warm", -1)  # the queue and the statements exist
        t0 = time.perf_counter()
        await asyncio.gather(*(enqueued.enqueue(db, f"c{k}", k) for k in range(RUNS)))
        concurrent = time.perf_counter() - t0
        t0 = time.perf_counter()
        await enqueued.enqueue_many(db, [(f"m{k}", k) for k in range(RUNS)])
        many = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(ONE_AT_A_TIME):
            await enqueued.enqueue(db, f"s{k}", k)
        one = (time.perf_counter() - t0) / ONE_AT_A_TIME * 1e6
        return concurrent, many, one
    finally:
        await db.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=LOCAL)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        result = await once(args.dsn)
        results.append(result)
        print(f"{RUNS} concurrent enqueue: {result[0]:.3f} s, enqueue_many: {result[1]:.3f} s, "
              f"one at a time: {result[2]:.0f} µs each", flush=True)
    concurrent, many, one = (statistics.median(column) for column in zip(*results))
    print(f"medians: {concurrent:.3f} s, {many:.3f} s, {one:.0f} µs")


if __name__ == "__main__":
    asyncio.run(main())
