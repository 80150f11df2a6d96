"""Holds workflow ``stale`` with a short lease, for the stale-owner test.

    python holder.py DSN SCHEMA

Runs step ``a``, then prints ``in b`` from inside step ``b`` and sleeps 3 s
in it (the test SIGSTOPs the process meanwhile and lets another take over),
then tries to finish. Prints ``lease lost`` and exits 3 if its writes are
refused, ``done`` otherwise.
"""

from __future__ import annotations

import asyncio
import sys

import durable
from durable import Ctx

calls: list[str] = []


async def in_b() -> str:
    print("in b", flush=True)
    await asyncio.sleep(3)
    return "from the stale holder"


def c() -> str:
    calls.append("c")
    return "c by the stale holder"


async def main(dsn: str, schema: str) -> int:
    db = await durable.init(dsn, schema=schema, lease=1.0)
    ctx = await Ctx.start(db, "stale")
    await ctx.step("a", lambda: "a")
    try:
        await ctx.step("b", in_b)
        await ctx.step("c", c)
        await ctx.complete("stale holder's result")
    except durable.LeaseLost:
        # Later work is refused without running: the body of c never ran.
        print(f"lease lost; c ran {len(calls)} times", flush=True)
        return 3
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
