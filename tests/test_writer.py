"""The checkpoint writer: group commit, a failed record fails only its own
workflow, transient conflicts are retried, batches are bounded by bytes."""

from __future__ import annotations

import asyncio
import functools

import asyncpg
import pytest

import durable
from _waits import handed_over, until, writer_blocked
from durable import Ctx


async def test_results_pending_at_once_share_one_commit(dsn: str, schema: str, db: durable.Db) -> None:
    workflows = 100
    contexts = await asyncio.gather(*(Ctx.start(db, f"w{w}") for w in range(workflows)))
    async with writer_blocked(dsn, schema, db):
        before = db.stats()
        steps: list[asyncio.Future[dict[str, int]]] = [
            asyncio.ensure_future(ctx.step("s", functools.partial(dict, w=w))) for w, ctx in enumerate(contexts)
        ]
        await handed_over(db)  # every result (and its running marker) is queued behind the blocked batch
    assert await asyncio.gather(*steps) == [{"w": w} for w in range(workflows)]
    after = db.stats()
    commits, records = after["commits"] - before["commits"], after["records"] - before["records"]
    # The gate's completion, then one statement for all the results, each
    # with its marker merged in. Committed one by one, they would take 100
    # commits or more.
    assert (commits, records) == (2, workflows + 1), f"{records} records in {commits} commits"
    for ctx in contexts:
        await ctx.complete(None)


async def test_a_record_the_server_refuses_fails_only_its_own_workflow(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute(
        """CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.name = 'poisoned' AND NEW.status = 'completed' THEN
                   RAISE EXCEPTION 'this row is poisoned';
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON task FOR EACH ROW EXECUTE FUNCTION poison();"""
    )
    contexts = [await Ctx.start(db, f"w{i}") for i in range(8)]
    splits = db.stats()["splits"]
    async with writer_blocked(dsn, schema, db):
        steps = [
            asyncio.ensure_future(ctx.step("poisoned" if i == 3 else "fine", lambda i=i: i))
            for i, ctx in enumerate(contexts)
        ]
        await handed_over(db)  # every result is queued behind the blocked batch
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i == 3:
            assert isinstance(outcome, durable.DatabaseError) and outcome.sqlstate == "P0001", outcome
            assert "this row is poisoned" in str(outcome)
        else:
            assert outcome == i, (i, outcome)
    assert db.stats()["splits"] > splits, "the batch was split to find the poisoned record"
    rows = await pg.fetch("SELECT w.name, s.status FROM task s JOIN task w ON w.id = s.parent_id WHERE s.name = 'fine'")
    assert sorted(r["name"] for r in rows if r["status"] == "completed") == [f"w{i}" for i in range(8) if i != 3]


async def test_a_deadlock_or_serialization_failure_is_retried(
    schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute(
        f"""CREATE SEQUENCE tries;
           CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.name = 'contended' AND NEW.status = 'completed' THEN
                   IF nextval('{schema}.tries') = 1 THEN
                       RAISE EXCEPTION 'deadlock, as Postgres would report it' USING ERRCODE = '40P01';
                   ELSIF currval('{schema}.tries') = 2 THEN
                       RAISE EXCEPTION 'serialization failure' USING ERRCODE = '40001';
                   END IF;
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER conflict BEFORE INSERT OR UPDATE ON task FOR EACH ROW EXECUTE FUNCTION conflict();"""
    )
    ctx = await Ctx.start(db, "wf")
    assert await ctx.step("contended", lambda: "through") == "through"
    # Both failures happened, then a write went through: 3 trigger calls, or
    # 4 when the step's running marker was committed in a batch of its own
    # (the result's upsert then fires the insert trigger and the update one).
    assert await pg.fetchval("SELECT last_value FROM tries") in (3, 4)
    row = await pg.fetchrow("SELECT status, output FROM task WHERE name = 'contended'")
    assert row is not None and (row["status"], row["output"]) == ("completed", '"through"')


async def test_a_batch_is_bounded_by_bytes(dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection) -> None:
    big = "x" * (24 << 20)  # two fit in a 64 MiB batch, three do not
    contexts = [await Ctx.start(db, f"w{i}") for i in range(4)]
    async with writer_blocked(dsn, schema, db):
        steps = [asyncio.ensure_future(ctx.step("big", lambda: big)) for ctx in contexts]
        await handed_over(db)  # every result is queued behind the blocked batch
        commits = db.stats()["commits"]
    assert all(len(value) == len(big) for value in await asyncio.gather(*steps))
    used = db.stats()["commits"] - commits
    # The gate's own batch, then at least two for the values.
    assert used >= 3, f"4 values of 24 MiB (96 MiB) went out in {used - 1} statement(s)"
    sizes = await pg.fetch("SELECT octet_length(output::text) AS n FROM task WHERE name = 'big'")
    assert [r["n"] for r in sizes] == [len(big) + 2] * 4


@pytest.mark.timing
async def test_a_quick_step_costs_one_commit(db: durable.Db) -> None:
    async with Ctx.start(db, "sequential") as ctx:
        before = db.stats()["commits"]
        for i in range(20):
            await ctx.step(f"s{i}", lambda: i)
        used = db.stats()["commits"] - before
        # The running marker of a body shorter than the writer's hold (5 ms,
        # a busy machine can stretch it) is superseded by the result, in the
        # same commit. That a marker and its result queued together go as one
        # record: test_results_pending_at_once_share_one_commit.
        assert used <= 22, f"20 quick steps took {used} commits"
        await ctx.complete(None)


async def test_a_slow_step_shows_running_while_it_runs(db: durable.Db, pg: asyncpg.Connection) -> None:
    async with Ctx.start(db, "sequential") as ctx:
        # A body that outlives the hold has its marker committed while it runs.
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "done"

        step = asyncio.ensure_future(ctx.step("slow", slow))

        async def marked() -> bool:
            return bool(await pg.fetchval("SELECT status FROM task WHERE name = 'slow'") == "running")

        await until(marked, "the slow step's marker is committed")
        release.set()
        assert await step == "done"
        await ctx.complete(None)
