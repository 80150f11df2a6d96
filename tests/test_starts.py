"""Root starts made at the same time share one statement and one commit, and
each caller still gets the answer its own start would have got."""

from __future__ import annotations

import asyncio

import asyncpg

import durable
from _waits import handed_over
from durable import Ctx


async def test_root_starts_pending_at_once_share_a_statement(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    starts = 100
    locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with locker.transaction():
            # The starter's statements wait on the table until the rollback:
            # at most one per connection it uses at once (4) goes out before
            # every start is queued.
            await locker.execute("LOCK TABLE task IN SHARE MODE")
            before = db.stats()
            pending = [asyncio.ensure_future(Ctx.start(db, f"r{k}", input={"k": k})) for k in range(starts)]
            await handed_over(db)  # every start is queued with the starter
            await locker.execute("ROLLBACK")
        ctxs = await asyncio.gather(*pending)
    finally:
        await locker.close()
    after = db.stats()
    batches = after["start_batches"] - before["start_batches"]
    assert after["starts"] - before["starts"] == starts
    # Those sent before the rollback, then one for all the rest. One
    # statement per start would be 100.
    assert batches <= 5, f"{batches} statements for {starts} starts"
    rows = await pg.fetch("SELECT name, input, status, owner_id::text FROM task WHERE parent_id IS NULL")
    assert sorted((r["name"], r["input"]) for r in rows) == sorted((f"r{k}", f'{{"k": {k}}}') for k in range(starts))
    assert {(r["status"], r["owner_id"]) for r in rows} == {("running", db.owner_id)}
    for ctx in ctxs:
        await ctx.complete(None)
    print(f"\nroot starts: {starts} starts in {batches} statements")


async def test_concurrent_starts_get_their_own_answers(db: durable.Db, other_db: durable.Db) -> None:
    done = await Ctx.start(db, "done", input=1)
    await done.complete("out")
    held = await Ctx.start(other_db, "held")
    job = await Ctx.start(db, "job", input={"a": 1})
    await job.complete(None)
    results = await asyncio.gather(
        Ctx.start(db, "new"),
        Ctx.start(db, "done", input=1),
        Ctx.start(db, "held"),
        Ctx.start(db, "job", input={"a": 2}),
        return_exceptions=True,
    )
    new, replayed, busy, mismatch = results
    assert isinstance(new, Ctx)
    assert isinstance(replayed, Ctx)
    assert replayed.output == "out"
    assert isinstance(busy, durable.WorkflowBusy), busy
    assert isinstance(mismatch, durable.InputMismatch), mismatch
    await held.complete(None)
    await new.complete(None)
