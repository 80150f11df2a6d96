"""The floors of the suite, raw asyncpg: what Postgres does per commit.

    python bench/suite_raw.py F1 --dsn URL --size 1000
    python bench/suite_raw.py F2 --dsn URL --size 2000 --width 16

F1: one connection, ``size`` autocommit single-row inserts one after another.
F2: a pool of ``width`` connections, ``size`` autocommit inserts all at once.
Each row holds the small dict a step returns, as jsonb. Table: bench_raw_rows.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import asyncpg

from suite_common import emit, parser, pct, small_dict

TABLE = "bench_raw_rows"
INSERT = f"INSERT INTO {TABLE} (payload) VALUES ($1::jsonb)"


async def timed_insert(conn: asyncpg.Connection | asyncpg.Pool, i: int, latencies: list[float]) -> None:
    started = time.perf_counter()
    await conn.execute(INSERT, json.dumps(small_dict(i)))
    latencies.append(time.perf_counter() - started)


def figures(count: int, elapsed: float, latencies: list[float]) -> dict[str, Any]:
    return {
        "steps_per_s": count / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def f1(dsn: str, count: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    for i in range(20):  # warm-up: the prepared statement
        await timed_insert(conn, i, [])
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        await timed_insert(conn, i, latencies)
    elapsed = time.perf_counter() - started
    await conn.close()
    return figures(count, elapsed, latencies)


async def f2(dsn: str, count: int, width: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=width, max_size=width)
    await asyncio.gather(*(timed_insert(pool, i, []) for i in range(width * 2)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(timed_insert(pool, i, latencies) for i in range(count)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return figures(count, elapsed, latencies)


async def main() -> None:
    args = parser(__doc__).parse_args()
    conn = await asyncpg.connect(args.dsn)
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
    await conn.close()
    match args.workload:
        case "F1":
            emit(await f1(args.dsn, args.size))
        case "F2":
            emit(await f2(args.dsn, args.size, args.width))
        case other:
            sys.exit(f"unknown floor {other!r}")


if __name__ == "__main__":
    asyncio.run(main())
