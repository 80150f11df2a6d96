"""Queued execution: drain rate, enqueue-to-start latency, recovery after a
SIGKILL, and claim latency over a large table.

    python bench/queued.py [--dsn URL] [--runs 3]

Measures, against one Postgres:

* drain: 2000 one-step workflows on a queue of concurrency 50, drained by one
  executor process (workflows/s, median of --runs);
* latency: enqueue to start (the claim, on the database's clock) of single
  runs on an idle executor process (p50, p99);
* recovery: SIGKILL of an executor process holding runs to another executor
  process starting their next step;
* claim: one claim of 50 runs with 1,000,000 finished rows in the table and a
  backlog of 100,000 queued runs (p50, p99 of 50 claims).

Build with `make build-release` first (`make bench` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid

import asyncpg

import durable
from durable import Ctx

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "durable_bench_queue"


@durable.workflow(name="bench.one", queue="bench")
async def one(ctx: Ctx, i: int) -> dict[str, int]:
    return await ctx.step("s", lambda: {"i": i})


@durable.workflow(name="bench.slow", queue="slow")
async def slow(ctx: Ctx, n: int) -> int:
    for i in range(n):
        await ctx.step(f"s{i}", lambda: asyncio.sleep(0.05))
    return n


async def executor_process(dsn: str) -> None:
    """The executor of the benchmark, in its own process."""
    db = await durable.init(dsn, schema=SCHEMA)
    print("ready", flush=True)
    await durable.Executor(db, [one, slow], concurrency=100, recovery_interval=0.25).run()


async def spawn(dsn: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--executor", "--dsn", dsn, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    await proc.wait()


async def drain(db: durable.Db, dsn: str) -> float:
    await durable.pause_queue(db, "bench")
    tag = uuid.uuid4().hex[:8]
    runs = [await one.enqueue(db, f"drain-{tag}-{i}", i) for i in range(2000)]
    proc = await spawn(dsn)
    try:
        started = time.perf_counter()
        await durable.resume_queue(db, "bench")
        for run in runs:
            await run.result()
        return 2000 / (time.perf_counter() - started)
    finally:
        await stop(proc)


async def latency(db: durable.Db, dsn: str, pg: asyncpg.Connection) -> list[float]:
    proc = await spawn(dsn)
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(200):
            await (await one.enqueue(db, f"lat-{tag}-{i}", i)).result()
    finally:
        await stop(proc)
    rows = await pg.fetch(
        f"SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms FROM {SCHEMA}.task WHERE name LIKE $1",
        f"lat-{tag}-%",
    )
    return sorted(float(r["ms"]) for r in rows)


async def recovery(db: durable.Db, dsn: str, pg: asyncpg.Connection) -> float:
    tag = uuid.uuid4().hex[:8]
    runs = [await slow.enqueue(db, f"slow-{tag}-{i}", 40) for i in range(5)]
    doomed = await spawn(dsn)
    while await pg.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.task s JOIN {SCHEMA}.task w ON w.id = s.parent_id "
        "WHERE w.name LIKE $1 AND s.status = 'completed'",
        f"slow-{tag}-%",
    ) < 10:
        await asyncio.sleep(0.01)
    rescuer = await spawn(dsn)
    doomed.send_signal(signal.SIGKILL)
    killed = await pg.fetchval("SELECT clock_timestamp()")
    await doomed.wait()
    try:
        for run in runs:
            await run.result()
    finally:
        await stop(rescuer)
    resumed = await pg.fetchval(
        f"SELECT min(s.updated_at) FROM {SCHEMA}.task s JOIN {SCHEMA}.task w ON w.id = s.parent_id "
        "WHERE w.name LIKE $1 AND s.updated_at > $2",
        f"slow-{tag}-%",
        killed,
    )
    return float((resumed - killed).total_seconds())


async def claims(db: durable.Db, pg: asyncpg.Connection) -> list[float]:
    """Claim latency with 1,000,000 finished rows and 100,000 queued."""
    s = SCHEMA
    await pg.execute(f"INSERT INTO {s}.task_queue (name) VALUES ('big') ON CONFLICT DO NOTHING")
    await pg.execute(
        f"""INSERT INTO {s}.task (id, parent_id, root_id, kind, name, status, workflow, queue, output, completed_at)
            SELECT n, NULL, n, 'workflow', 'done-' || n, 'completed', 'bench.one', 'big', '1', now()
            FROM generate_series(nextval('{s}.task_id_seq'), nextval('{s}.task_id_seq') + 999999) AS n"""
    )
    await pg.execute(f"SELECT setval('{s}.task_id_seq', (SELECT max(id) FROM {s}.task))")
    await pg.execute(
        f"""INSERT INTO {s}.task (id, parent_id, root_id, kind, name, status, input, workflow, queue, run_at,
                                  lease_epoch)
            SELECT n, NULL, n, 'workflow', 'backlog-' || n, 'queued', '1', 'bench.one', 'big', now(), 0
            FROM generate_series(nextval('{s}.task_id_seq'), nextval('{s}.task_id_seq') + 99999) AS n"""
    )
    await pg.execute(f"SELECT setval('{s}.task_id_seq', (SELECT max(id) FROM {s}.task))")
    await pg.execute(f"ANALYZE {s}.task")
    times = []
    for _ in range(50):
        started = time.perf_counter()
        claimed = await db._engine.claim("big", 50, ["bench.one"])
        times.append((time.perf_counter() - started) * 1000)
        for _, handle in claimed:
            await handle.release()
        # Released runs go back to waiting; complete them instead, so that each claim finds new ones.
        ids = [handle.id for _, handle in claimed]
        await pg.execute(f"UPDATE {s}.task SET status = 'completed' WHERE id = ANY($1)", ids)
    return sorted(times)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


async def main(dsn: str, runs: int) -> None:
    pg = await asyncpg.connect(dsn)
    await pg.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    db = await durable.init(dsn, schema=SCHEMA)
    await durable.create_queue(db, "bench", concurrency=50)
    rates = [await drain(db, dsn) for _ in range(runs)]
    lat = await latency(db, dsn, pg)
    rec = [await recovery(db, dsn, pg) for _ in range(runs)]
    claim = await claims(db, pg)
    print(f"Postgres {await pg.fetchval('SHOW server_version')}; one executor process")
    print(f"  drain 2000 one-step workflows, concurrency 50: {statistics.median(rates):.0f} workflows/s "
          f"[{', '.join(f'{r:.0f}' for r in rates)}]")
    print(f"  enqueue -> start on an idle executor: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms")
    print(f"  SIGKILL -> another executor resumes: {statistics.median(rec):.2f} s [{', '.join(f'{r:.2f}' for r in rec)}]")
    print(f"  claim of 50 with 1,000,000 finished rows and a 100,000 backlog: p50 {pct(claim, 0.5):.1f} ms, "
          f"p99 {pct(claim, 0.99):.1f} ms")
    await db.close()
    await pg.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--executor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(executor_process(args.dsn) if args.executor else main(args.dsn, args.runs))
