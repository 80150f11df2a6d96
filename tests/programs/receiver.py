"""A workflow that receives two messages on "go" and prints each.

    python receiver.py DSN SCHEMA

After the first message it prints ``got <value>`` and blocks reading a line
of stdin (the test SIGKILLs it there, or writes a line to let it go on).
Then it receives the second message, prints ``got <value>`` and ``done``.
"""

from __future__ import annotations

import asyncio
import sys

import durable
from durable import Ctx


async def main(dsn: str, schema: str) -> None:
    db = await durable.init(dsn, schema=schema)
    ctx = await Ctx.start(db, "receiver", wait=10)
    first = await ctx.recv("go", timeout=60)
    print(f"got {first}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    second = await ctx.recv("go", timeout=60)
    print(f"got {second}", flush=True)
    await ctx.complete([first, second])
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
