"""Wake-up latency of suspended sleeps on one idle executor.

    python bench/waits.py [--dsn URL] [--sleeps 200]

Each of --sleeps workflows sleeps durably (``ctx.sleep``) past the
executor's ``suspend_after`` (0.1 s here), so it is suspended: it leaves the
executor, waits in the database as ``scheduled`` with ``run_at`` = its wake-up
time, and the executor claims it again when due, replays it and runs the step
after the sleep. Measured: from the saved wake-up time to the start of the
body of that step, both on the database's clock (p50, p99). The wake-up
times are 50 ms apart, so the executor (one process, its own) is idle at
each of them.

Build with `make build-release` first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from datetime import datetime

import asyncpg

import durable
from durable import Ctx

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "durable_bench_waits"

#: The side connection of the executor process: where step bodies record when they start.
side: asyncpg.Pool | None = None


async def woke(run: str) -> None:
    assert side is not None
    await side.execute("INSERT INTO woke (run, at) VALUES ($1, clock_timestamp())", run)


@durable.workflow(name="bench.nap", queue="naps")
async def nap(ctx: Ctx, seconds: float) -> None:
    await ctx.sleep("nap", seconds)
    await ctx.step("after", lambda: woke(ctx.name))


async def executor_process(dsn: str) -> None:
    global side
    db = await durable.init(dsn, schema=SCHEMA)
    side = await asyncpg.create_pool(dsn, min_size=2, max_size=4, server_settings={"search_path": SCHEMA})
    print("ready", flush=True)
    await durable.Executor(db, [nap], concurrency=100, suspend_after=0.1).run()


async def main(dsn: str, sleeps: int) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    db = await durable.init(dsn, schema=SCHEMA)
    await admin.execute(f"CREATE TABLE {SCHEMA}.woke (run text NOT NULL, at timestamptz NOT NULL)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--dsn", dsn, "--executor", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).decode().strip() == "ready"
        runs = [await nap.enqueue(db, f"nap-{i:04d}", 2.0 + 0.05 * i) for i in range(sleeps)]
        for run in runs:
            await run.result(timeout=120)
        rows = await admin.fetch(
            f"""SELECT r.name, s.output, w.at FROM {SCHEMA}.task AS r
                JOIN {SCHEMA}.task AS s ON s.parent_id = r.id AND s.name = 'nap'
                JOIN {SCHEMA}.woke AS w ON w.run = r.name
                WHERE r.parent_id IS NULL"""
        )
        suspended = await admin.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.task WHERE parent_id IS NULL AND lease_epoch >= 2"
        )
    finally:
        proc.terminate()
        await proc.wait()
    late = sorted((r["at"] - datetime.fromisoformat(json.loads(r["output"]))).total_seconds() * 1000 for r in rows)
    assert len(late) == sleeps and late[0] >= 0, late[:3]
    p99 = late[min(len(late) - 1, round(0.99 * len(late)) - 1)]
    print(
        f"wake-up latency of {sleeps} suspended sleeps ({suspended} claimed again), one idle executor: "
        f"p50 {statistics.median(late):.1f} ms, p99 {p99:.1f} ms, max {late[-1]:.1f} ms"
    )
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=LOCAL)
    parser.add_argument("--sleeps", type=int, default=200)
    parser.add_argument("--executor", action="store_true")
    args = parser.parse_args()
    asyncio.run(executor_process(args.dsn) if args.executor else main(args.dsn, args.sleeps))
