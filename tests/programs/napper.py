"""Runs ``jobs.nap`` directly (``Workflow.run``), for the sleep crash test.

    python napper.py DSN SCHEMA NAME SECONDS

Prints ``done <result>`` when the run returns. The test SIGKILLs it during
the sleep and runs it again.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

import durable  # noqa: E402
import jobs  # noqa: E402


async def main(dsn: str, schema: str, name: str, seconds: float) -> None:
    db = await durable.init(dsn, schema=schema)
    jobs.side = await asyncpg.create_pool(dsn, min_size=1, max_size=1, server_settings={"search_path": schema})
    result = await jobs.nap.run(db, name, seconds)
    print(f"done {result}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
