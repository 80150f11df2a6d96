"""Message wake-up latency: `durable.send` to the waiting `ctx.recv` returning.

    python bench/messages.py [--dsn URL] [--messages 200]

One idle executor runs a workflow that receives `--messages` messages, one
at a time; the sender (another `Db`, so another owner, as another process
would be) sends the next one 10 ms after the previous one was received, so
every message finds the workflow waiting and must wake it through
`LISTEN/NOTIFY`. Reports p50 and p99 of send-to-receive, on this machine's
clock (sender and receiver share it).

Build with `make build-release` first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg

import durable
from durable import Ctx

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "durable_bench_messages"


@durable.workflow(name="bench.listener", queue="bench-messages")
async def listener(ctx: Ctx, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        message = await ctx.recv("ping", timeout=60)
        latencies.append(time.time() - message["sent"])
        await ctx.set_event("received", i)
    return latencies


async def main(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.close()
    receiver = await durable.init(dsn, schema=SCHEMA)
    sender = await durable.init(dsn, schema=SCHEMA)
    executor = asyncio.ensure_future(durable.Executor(receiver, [listener], concurrency=1).run())
    name = f"listener-{uuid.uuid4().hex[:8]}"
    run = await listener.enqueue(sender, name, count)
    for i in range(count):
        await durable.send(sender, name, "ping", {"sent": time.time()})
        while await durable.get_event(sender, name, "received", timeout=30) != i:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)  # the workflow is back in recv, waiting
    latencies = sorted(await run.result(timeout=60))
    executor.cancel()
    await asyncio.gather(executor, return_exceptions=True)
    await sender.close()
    await receiver.close()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"send -> recv, {count} messages on one idle executor: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.messages))
