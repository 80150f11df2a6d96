"""An executor process for the queue tests.

    python executor.py DSN SCHEMA [--concurrency N] [--max-recoveries N] [--only NAME,...] [--version V]
                       [--suspend-after SECONDS]

Runs a durable.Executor over the workflows of jobs.py (or only those named)
until SIGTERM. Prints ``ready`` once it is about to run, and ``stopped``
when run() returned after a graceful stop.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

import durable  # noqa: E402
import jobs  # noqa: E402


async def main(
    dsn: str,
    schema: str,
    concurrency: int,
    max_recoveries: int,
    only: list[str] | None,
    version: str | None,
    suspend_after: float,
) -> None:
    db = await durable.init(dsn, schema=schema)
    jobs.side = await asyncpg.create_pool(dsn, min_size=1, max_size=concurrency, server_settings={"search_path": schema})
    workflows = [w for w in jobs.ALL if only is None or w.name in only]
    executor = durable.Executor(
        db,
        workflows,
        concurrency=concurrency,
        version=version,
        max_recoveries=max_recoveries,
        recovery_interval=0.2,
        shutdown_grace=10,
        suspend_after=suspend_after,
    )
    print("ready", flush=True)
    await executor.run()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--max-recoveries", type=int, default=5)
    parser.add_argument("--only")
    parser.add_argument("--version")
    parser.add_argument("--suspend-after", type=float, default=60.0)
    args = parser.parse_args()
    only = args.only and args.only.split(",")
    asyncio.run(
        main(args.dsn, args.schema, args.concurrency, args.max_recoveries, only, args.version, args.suspend_after)
    )
