"""A transaction step whose process is killed inside it or just after it.

    python ledger.py DSN SCHEMA MODE

The workflow ``order`` runs transaction step ``record``, which inserts a row
into ``SCHEMA.shipments`` and returns how many rows the table holds. It
prints ``fn ran`` when ``record``'s function starts, ``committed N`` once
the step returned, and ``done`` at the end. MODE ``inside``: after the
insert, print ``inserted`` and block reading stdin, with the transaction
open. MODE ``after``: block reading stdin once the step returned. MODE
``run``: run to the end.
"""

from __future__ import annotations

import asyncio
import sys

import durable
from durable import Ctx, Transaction


async def main(dsn: str, schema: str, mode: str) -> None:
    db = await durable.init(dsn, schema=schema)
    ctx = await Ctx.start(db, "order", wait=10)

    async def record(tx: Transaction) -> int:
        print("fn ran", flush=True)
        await tx.execute(f"INSERT INTO {schema}.shipments (order_id) VALUES ($1)", 42)
        if mode == "inside":
            print("inserted", flush=True)
            sys.stdin.readline()  # the test kills the process here
        count: int = await tx.fetchval(f"SELECT count(*) FROM {schema}.shipments")
        return count

    value = await ctx.transaction("record", record)
    print(f"committed {value}", flush=True)
    if mode == "after":
        sys.stdin.readline()  # the test kills the process here
    await ctx.complete(value)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
