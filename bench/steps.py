"""Step throughput against raw asyncpg, on the same Postgres, in one run.

    python bench/steps.py [--dsn URL] [--runs 3] [--steps 1000] [--payload int|dict]

Measures, each `--runs` times, reporting the median:

* durable, sequential: one workflow doing `--steps` steps one after another
  (each `await ctx.step(...)` returns only after its checkpoint commits).
* asyncpg, sequential: `--steps` autocommit single-row INSERTs, one after
  another (the floor: one commit per round trip).
* durable, concurrent: 50 workflows of 20 steps each, all at once (group commit).
* asyncpg, concurrent: the same 1000 INSERTs from 50 tasks over a pool of 10.

The database is --dsn, else $DURABLE_DATABASE_URL, else the local server.
Build with `make build-release` first (`make bench` does).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

import durable
from durable import Ctx

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def identity(i: int) -> int:
    return i


def small_dict(i: int) -> dict[str, object]:
    return {"id": i, "status": "ok", "score": i / 7, "tags": ["a", "b"]}


#: What every step returns: set by --payload.
result = identity


async def durable_sequential(db: durable.Db, steps: int) -> float:
    ctx = await Ctx.start(db, f"bench-{uuid.uuid4()}")
    start = time.perf_counter()
    for i in range(steps):
        await ctx.step(f"s{i}", functools.partial(result, i))
    elapsed = time.perf_counter() - start
    await ctx.complete(None)
    return steps / elapsed


async def durable_concurrent(db: durable.Db, workflows: int, steps: int) -> float:
    async def one(w: int) -> None:
        ctx = await Ctx.start(db, f"bench-{uuid.uuid4()}-{w}")
        for i in range(steps):
            await ctx.step(f"s{i}", functools.partial(result, i))
        await ctx.complete(None)

    start = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(workflows)))
    return workflows * steps / (time.perf_counter() - start)


async def asyncpg_sequential(conn: asyncpg.Connection, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        await conn.execute("INSERT INTO bench_rows (n, payload) VALUES ($1, $2)", i, str(i))
    return steps / (time.perf_counter() - start)


async def asyncpg_concurrent(pool: asyncpg.Pool, tasks: int, each: int) -> float:
    async def one() -> None:
        for i in range(each):
            await pool.execute("INSERT INTO bench_rows (n, payload) VALUES ($1, $2)", i, str(i))

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return tasks * each / (time.perf_counter() - start)


async def median(runs: int, measure: Callable[[], Awaitable[float]]) -> tuple[float, list[float]]:
    results = [await measure() for _ in range(runs)]
    return statistics.median(results), results


async def main(dsn: str, runs: int, steps: int) -> None:
    db = await durable.init(dsn, schema="durable_bench")
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id bigserial PRIMARY KEY, n int, payload text)")
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    # Warm up both (connections, prepared statements).
    await durable_sequential(db, 50)
    await asyncpg_sequential(conn, 50)

    rows = [
        (f"durable   {steps} sequential steps, 1 workflow", await median(runs, lambda: durable_sequential(db, steps))),
        (f"asyncpg   {steps} sequential autocommit INSERTs", await median(runs, lambda: asyncpg_sequential(conn, steps))),
        ("durable   50 workflows x 20 steps, concurrent", await median(runs, lambda: durable_concurrent(db, 50, 20))),
        ("asyncpg   1000 INSERTs from 50 tasks, pool of 10", await median(runs, lambda: asyncpg_concurrent(pool, 50, 20))),
    ]
    server = await conn.fetchval("SHOW server_version")
    print(f"Postgres {server}; median of {runs} runs (all runs in brackets), operations per second")
    for label, (value, all_runs) in rows:
        print(f"  {label:<50} {value:>9.0f}/s   [{', '.join(f'{r:.0f}' for r in all_runs)}]")
    seq_ratio = rows[0][1][0] / rows[1][1][0]
    conc_ratio = rows[2][1][0] / rows[3][1][0]
    print(f"  durable/asyncpg: sequential {seq_ratio:.2f}x, concurrent {conc_ratio:.2f}x")

    await conn.execute("DROP TABLE bench_rows; DROP SCHEMA durable_bench CASCADE")
    await pool.close()
    await conn.close()
    await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--payload", choices=["int", "dict"], default="int", help="what each step returns")
    args = parser.parse_args()
    if args.payload == "dict":
        result = small_dict  # type: ignore[assignment]
    asyncio.run(main(args.dsn, args.runs, args.steps))
