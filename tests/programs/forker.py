"""A process that forks with a durable.Db open, as gunicorn or multiprocessing do.

    python forker.py DSN SCHEMA

The parent makes a Db and runs a workflow step, then forks. The child finds
the parent's Db refused at once with a clear error, makes its own Db, and
runs a workflow with it; it then exits normally (finalizing everything it
inherited). The parent, after the child is gone, goes on with its own Db.
Prints what each side saw; exits 0 when everything behaved.
"""

from __future__ import annotations

import asyncio
import os
import sys

import durable
from durable import Ctx


async def before_fork(dsn: str, schema: str) -> durable.Db:
    db = await durable.init(dsn, schema=schema)
    ctx = await Ctx.start(db, "parent")
    await ctx.step("before", lambda: "parent")
    return db


async def in_child(dsn: str, schema: str, inherited: durable.Db) -> int:
    try:
        await asyncio.wait_for(Ctx.start(inherited, "child-with-parents-db"), 5)
    except durable.DurableError as refused:
        print(f"child: inherited Db refused: {refused}", flush=True)
    else:
        print("child: the inherited Db was used", flush=True)
        return 1
    own = await asyncio.wait_for(durable.init(dsn, schema=schema), 30)
    ctx = await Ctx.start(own, "child")
    result = await ctx.step("work", lambda: "child")
    await ctx.complete(result)
    await own.close()
    print(f"child: own Db worked: {result}", flush=True)
    return 0


async def after_fork(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "parent")
    assert await ctx.step("before", lambda: "not run") == "parent"
    await ctx.step("after", lambda: "parent again")
    await ctx.complete("done")
    await db.close()
    print("parent: its Db still works", flush=True)


def main(dsn: str, schema: str) -> int:
    db = asyncio.run(before_fork(dsn, schema))
    pid = os.fork()
    if pid == 0:
        code = asyncio.run(in_child(dsn, schema, db))
        sys.stdout.flush()
        sys.exit(code)  # a normal exit: everything inherited is finalized
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"parent: the child failed ({status})", flush=True)
        return 1
    asyncio.run(asyncio.wait_for(after_fork(db), 30))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
