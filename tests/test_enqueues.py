"""Single enqueues made at the same time share one statement and one commit
(one notification per queue), and each caller still gets the answer its own
enqueue would have got.

The batches are held, not hoped for: a ``Db`` with a pool of two sends one
batch at a time; its first batch (the enqueue of ``gate``) waits on a table
lock while every other enqueue is queued behind it, so that all of them go
in the next statement once the lock is released."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

import durable
from _proxy import FaultProxy
from _waits import handed_over, until_lock_waits
from durable import Ctx


@durable.workflow(name="enq.first", queue="qa")
async def first(ctx: Ctx, n: int) -> int:
    return n


@durable.workflow(name="enq.second", queue="qb")
async def second(ctx: Ctx, n: int) -> int:
    return n


@durable.workflow(name="enq.third", queue="qc")
async def third(ctx: Ctx, n: int) -> int:
    return n


@contextlib.asynccontextmanager
async def narrow(dsn: str, schema: str) -> AsyncIterator[durable.Db]:
    """A ``Db`` whose enqueues go one batch at a time (a pool of two: the
    checkpoint writer may take the other connection)."""
    db = await durable.init(dsn, schema=schema, max_connections=2)
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def held(dsn: str, schema: str, db: durable.Db) -> AsyncIterator[None]:
    """While the block runs, ``db``'s batch in flight (the enqueue of
    ``gate``) waits on a lock of the table; what the block enqueues is
    queued behind it, and goes as the next statement when the block ends."""
    locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE task IN SHARE MODE")
            gate = asyncio.ensure_future(first.enqueue(db, "gate", 0))
            await until_lock_waits(locker, 1)
            yield
            await handed_over(db)  # every enqueue of the block is queued
            await locker.execute("ROLLBACK")
        assert (await gate).created
    finally:
        await locker.close()


def batches(db: durable.Db, before: dict[str, int]) -> tuple[int, int]:
    """Statements and enqueues the enqueuer sent since ``before``."""
    after = db.stats()
    return after["enqueue_batches"] - before["enqueue_batches"], after["enqueues"] - before["enqueues"]


def started(calls: list[Awaitable[Any]]) -> list[asyncio.Future[Any]]:
    return [asyncio.ensure_future(call) for call in calls]


async def test_concurrent_enqueues_share_a_commit_and_one_notification_per_queue(
    dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    told: list[str] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("durable", lambda *args: told.append(args[3]))
    workflows = [first, second, third]
    at = datetime(2999, 1, 1, tzinfo=timezone.utc)
    async with narrow(dsn, schema) as db:
        before = db.stats()
        async with held(dsn, schema, db):
            # Every caller its own function, queue and options.
            pending = started(
                [
                    workflows[k % 3].enqueue(
                        db,
                        f"r{k:03}",
                        k,
                        priority=k,
                        key=f"key{k % 4}" if k % 2 else None,
                        delay=3600 if k % 5 == 1 else None,
                        run_at=at if k % 5 == 2 else None,
                    )
                    for k in range(100)
                ]
            )
        runs = await asyncio.gather(*pending)
        assert batches(db, before) == (2, 101), "the gate, then the hundred in one statement"
    rows = await pg.fetch(
        """SELECT name, input, workflow, queue, priority, concurrency_key, status, xmin::text AS tx
           FROM task WHERE name LIKE 'r%' ORDER BY name"""
    )
    assert len({row["tx"] for row in rows}) == 1, "one transaction wrote them all"
    for k, (row, run) in enumerate(zip(rows, runs)):
        delayed = k % 5 in (1, 2)
        assert (run.name, run.created, run.status) == (row["name"], True, "scheduled" if delayed else "queued")
        assert (row["input"], row["workflow"], row["queue"], row["priority"], row["concurrency_key"]) == (
            str(k),
            workflows[k % 3].name,
            workflows[k % 3].queue,
            k,
            f"key{k % 4}" if k % 2 else None,
        )
        assert row["status"] == run.status
    # The notifications of those commits reach the listener before its own.
    marker = asyncio.get_running_loop().create_future()
    await listener.add_listener("marker", lambda *args: marker.set_result(None))
    await listener.execute("NOTIFY marker")
    await marker
    await listener.close()
    mine = sorted(payload for payload in told if payload.startswith(f"{schema} queued "))
    assert mine == [f"{schema} queued {q}" for q in ("qa", "qa", "qb", "qc")], "the gate's, then one per queue"


async def test_a_refused_enqueue_fails_alone_in_its_batch(dsn: str, schema: str, pg: asyncpg.Connection) -> None:
    async with narrow(dsn, schema) as db:
        await first.enqueue(db, "same", 1)
        await second.enqueue(db, "owned", 1)
        await first.enqueue(db, "kept", 1)
        before = db.stats()
        async with held(dsn, schema, db):
            pending = started(
                [
                    first.enqueue(db, "new-a", 1),
                    first.enqueue(db, "same", 2),
                    first.enqueue(db, "owned", 1),
                    first.enqueue(db, "kept", 1),
                    third.enqueue(db, "new-b", 1),
                ]
            )
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert batches(db, before) == (2, 6), "the gate, then the five in one statement"
    new_a, mismatch, other_function, kept, new_b = results
    assert isinstance(mismatch, durable.InputMismatch), mismatch
    assert "different input" in str(mismatch), mismatch
    assert isinstance(other_function, durable.InputMismatch), other_function
    assert "enq.second" in str(other_function), other_function
    assert isinstance(kept, durable.Run) and not kept.created, kept
    for run in (new_a, new_b):
        assert isinstance(run, durable.Run) and run.created, run
    rows = await pg.fetch("SELECT name, input, workflow FROM task ORDER BY name")
    assert [(r["name"], r["input"], r["workflow"]) for r in rows] == [
        ("gate", "0", "enq.first"),
        ("kept", "1", "enq.first"),
        ("new-a", "1", "enq.first"),
        ("new-b", "1", "enq.third"),
        ("owned", "1", "enq.second"),
        ("same", "1", "enq.first"),
    ]


async def test_a_name_enqueued_twice_at_once_behaves_as_two_enqueues_in_turn(
    dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    async with narrow(dsn, schema) as db:
        before = db.stats()
        async with held(dsn, schema, db):
            pending = started(
                [
                    first.enqueue(db, "twice", 1),
                    first.enqueue(db, "twice", 1),
                    first.enqueue(db, "clash", 1),
                    first.enqueue(db, "clash", 2),
                    first.enqueue(db, "owner", 1),
                    second.enqueue(db, "owner", 1),
                    first.enqueue(db, "once", 1),
                ]
            )
        results = await asyncio.gather(*pending, return_exceptions=True)
        # The gate; the first of each name; the repeated names after them.
        assert batches(db, before) == (3, 8)
    made, found, clash, mismatch, owner, other_function, once = results
    assert isinstance(made, durable.Run) and made.created
    assert isinstance(found, durable.Run) and not found.created, "the second finds the first"
    assert isinstance(clash, durable.Run) and clash.created
    assert isinstance(mismatch, durable.InputMismatch), mismatch
    assert isinstance(owner, durable.Run) and owner.created
    assert isinstance(other_function, durable.InputMismatch) and "enq.first" in str(other_function)
    assert isinstance(once, durable.Run) and once.created
    rows = await pg.fetch("SELECT name, input, workflow FROM task WHERE name <> 'gate' ORDER BY name")
    assert [(r["name"], r["input"], r["workflow"]) for r in rows] == [
        ("clash", "1", "enq.first"),
        ("once", "1", "enq.first"),
        ("owner", "1", "enq.first"),
        ("twice", "1", "enq.first"),
    ]


def upstream(dsn: str) -> tuple[str, int]:
    server = urlsplit(dsn)
    return server.hostname or "127.0.0.1", server.port or 5432


@pytest.mark.parametrize("cut", ["the answer after the commit", "the connection while the batch waits"])
async def test_a_connection_cut_mid_batch_leaves_every_enqueue_answered_once(
    dsn: str, schema: str, pg: asyncpg.Connection, cut: str
) -> None:
    names = [f"cut-{k:02}" for k in range(50)]
    async with FaultProxy(*upstream(dsn)) as proxy, narrow(proxy.via(dsn), schema) as db:
        await first.enqueue(db, "cut-50", 50)  # enqueued again in the batch
        row_locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        row_lock = row_locker.transaction()
        await row_lock.start()
        if cut == "the connection while the batch waits":
            # The batch waits on this row after writing the others.
            await row_locker.execute("SELECT 1 FROM task WHERE name = 'cut-50' FOR UPDATE")
        else:
            proxy.arm_answer_cut(b"cut-49")
        before = db.stats()
        async with held(dsn, schema, db):
            pending = started([first.enqueue(db, name, k) for k, name in enumerate([*names, "cut-50"])])
        if cut == "the connection while the batch waits":
            await until_lock_waits(pg, 1)
            assert proxy.cut_all() >= 1
            # Sent again on a fresh connection, it waits for the first.
            await until_lock_waits(pg, 2)
        await row_lock.rollback()
        await row_locker.close()
        runs = await asyncio.gather(*pending)
        if cut == "the answer after the commit":
            assert proxy.cut.is_set() and b"cut-49" in proxy.lost_answer
            assert all(not run.created for run in runs[:50]), "sent again, the batch found its own runs"
        assert batches(db, before) == (2, 52), "the gate, and the batch once"
    assert [run.name for run in runs] == [*names, "cut-50"]
    assert all(run.status == "queued" for run in runs)
    rows = await pg.fetch("SELECT name, input, xmin::text AS tx FROM task WHERE name LIKE 'cut-%' ORDER BY name")
    assert [(r["name"], r["input"]) for r in rows] == [(name, str(k)) for k, name in enumerate([*names, "cut-50"])]
    assert len({r["tx"] for r in rows[:50]}) == 1, "one transaction wrote the batch: never part of it twice"
