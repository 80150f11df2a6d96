"""Messages (send, recv) and events (set_event, get_event)."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import asyncpg
import pytest

import durable
import durable.sync
from _programs import line, spawn, tell
from _waits import until
from durable import Ctx


async def test_a_message_sent_before_the_wait_is_kept_for_it(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "order-1")
    assert await durable.send(db, "order-1", "approval", {"by": "ops"}) is True
    assert await ctx.recv("approval", timeout=5) == {"by": "ops"}
    row = await pg.fetchrow("SELECT received_by, received_at IS NOT NULL AS received FROM task_message")
    assert row is not None and row["received_by"] == "approval" and row["received"]
    # The receiving step saved it: a new run receives it again, from the step.
    await ctx.release()
    again = await Ctx.start(db, "order-1")
    assert await again.recv("approval", timeout=0) == {"by": "ops"}
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 1


async def test_a_message_sent_during_the_wait_wakes_it(db: durable.Db, other_db: durable.Db) -> None:
    ctx = await Ctx.start(db, "order-2")
    waiting = asyncio.ensure_future(ctx.recv("approval", timeout=30))
    await durable.send(other_db, "order-2", "approval", "yes")  # another owner, as another process
    assert await asyncio.wait_for(waiting, 10) == "yes"


async def test_a_timeout_gives_none_for_good_and_a_later_message_waits_for_the_next_recv(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    ctx = await Ctx.start(db, "order-3")
    assert await ctx.recv("approval", timeout=timedelta(milliseconds=50)) is None
    await durable.send(db, "order-3", "approval", "late")
    await ctx.release()
    again = await Ctx.start(db, "order-3")
    assert await again.recv("approval", timeout=5) is None  # the saved None, not the late message
    assert await again.recv("approval", timeout=5) == "late"  # approval#2
    names = await pg.fetch("SELECT name, output FROM task WHERE kind = 'step' ORDER BY id")
    # The deadline of the wait was saved first; approval#2 found its message at once.
    assert [r["name"] for r in names] == ["approval until", "approval", "approval#2"]
    assert [r["output"] for r in names[1:]] == ["null", '"late"']


async def test_messages_of_a_topic_come_in_order_and_topics_apart(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "order-4")
    for i in range(3):
        await durable.send(db, "order-4", "a", i)
    await durable.send(db, "order-4", "b", "b0")
    assert await ctx.recv("b", timeout=5) == "b0"
    assert [await ctx.recv("a", timeout=5) for _ in range(3)] == [0, 1, 2]


async def test_many_senders_none_lost_none_twice(db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "sink")
    senders, each = 8, 25

    async def sender(s: int) -> None:
        for i in range(each):
            await durable.send(other_db if s % 2 else db, "sink", "n", [s, i])

    received: list[list[int]] = []

    async def receive() -> None:
        for _ in range(senders * each):
            received.append(await ctx.recv("n", timeout=30))

    await asyncio.gather(receive(), *(sender(s) for s in range(senders)))
    assert sorted(map(tuple, received)) == [(s, i) for s in range(senders) for i in range(each)]
    for s in range(senders):  # in the order each sender sent
        assert [i for s2, i in received if s2 == s] == list(range(each))
    assert await pg.fetchval("SELECT count(*) FROM task_message WHERE received_at IS NULL") == 0


async def test_a_key_makes_a_send_idempotent(db: durable.Db, pg: asyncpg.Connection) -> None:
    await Ctx.start(db, "order-5")
    assert await durable.send(db, "order-5", "approval", "once", key="webhook-17") is True
    assert await durable.send(db, "order-5", "approval", "twice", key="webhook-17") is False
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 1


async def test_bad_sends_are_refused(db: durable.Db) -> None:
    await Ctx.start(db, "order-6")
    with pytest.raises(durable.ConfigError, match="cannot send None"):
        await durable.send(db, "order-6", "approval", None)
    with pytest.raises(durable.WorkflowNotFound, match="'nobody'"):
        await durable.send(db, "nobody", "approval", 1)
    with pytest.raises(durable.InvalidName):
        await durable.send(db, "order-6", "", 1)
    with pytest.raises(durable.NotJson):
        await durable.send(db, "order-6", "approval", {1, 2})  # type: ignore[arg-type]


async def test_a_child_is_addressed_by_its_path(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "parent")
    child = await ctx.child("kid")
    await durable.send(db, ("parent", "kid"), "hello", "kid!")
    assert await child.recv("hello", timeout=5) == "kid!"
    await child.set_event("mood", "happy")
    assert await durable.get_event(db, ("parent", "kid"), "mood", timeout=5) == "happy"


async def test_a_message_received_before_a_crash_is_not_received_again(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    first = await spawn("receiver.py", dsn, schema)

    async def started() -> bool:
        return bool(await pg.fetchval("SELECT count(*) FROM task WHERE name = 'receiver'"))

    await until(started, "the receiver started its workflow")
    await durable.send(db, "receiver", "go", "one")
    await durable.send(db, "receiver", "go", "two")
    assert await line(first) == "got one"
    first.send_signal(signal.SIGKILL)
    await first.wait()
    second = await spawn("receiver.py", dsn, schema)
    assert await line(second) == "got one"  # replayed from its step, not taken again
    await tell(second, "go on")
    assert await line(second) == "got two"
    assert await line(second) == "done"
    assert await second.wait() == 0
    rows = await pg.fetch("SELECT value, received_by FROM task_message ORDER BY id")
    assert [(r["value"], r["received_by"]) for r in rows] == [('"one"', "go"), ('"two"', "go#2")]


async def test_send_inside_a_workflow_is_a_step(db: durable.Db, pg: asyncpg.Connection) -> None:
    await Ctx.start(db, "target")
    ctx = await Ctx.start(db, "sender")

    async def body(c: Ctx, _: None) -> bool:
        return await durable.send(db, "target", "ping", "p")

    await ctx.run(body)
    again = await Ctx.start(db, "sender")  # completed: the send replays
    assert again.status == "completed"
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 1
    assert await pg.fetchval("SELECT name FROM task WHERE kind = 'step'") == "send ping to target"


async def test_events_are_read_from_anywhere_and_waited_for(
    db: durable.Db, other_db: durable.Db
) -> None:
    ctx = await Ctx.start(db, "order-7")
    with pytest.raises(TimeoutError, match="did not set event 'stage'"):
        await durable.get_event(other_db, "order-7", "stage", timeout=0.05)
    waiting = asyncio.ensure_future(durable.get_event(other_db, "order-7", "stage", timeout=30))
    await ctx.set_event("stage", "reserved")
    assert await asyncio.wait_for(waiting, 10) == "reserved"
    await ctx.set_event("stage", {"shipped": True})
    assert await durable.get_event(other_db, "order-7", "stage", timeout=0) == {"shipped": True}
    with pytest.raises(durable.WorkflowNotFound):
        await durable.get_event(db, "nobody", "stage", timeout=0)


async def test_a_replay_never_rolls_an_event_back(db: durable.Db) -> None:
    reached, between = asyncio.Event(), asyncio.Event()

    async def body(ctx: Ctx, _: None) -> None:
        await ctx.set_event("stage", "reserved")
        reached.set()
        await between.wait()  # plain code, not a step: a replay stops here too
        await ctx.set_event("stage", "shipped")
        await asyncio.Event().wait()  # held until cancelled

    async def stage() -> object:
        try:
            return await durable.get_event(db, "order-8", "stage", timeout=0)
        except TimeoutError:
            return None

    ctx = await Ctx.start(db, "order-8")
    first = asyncio.ensure_future(ctx.run(body))
    between.set()

    async def shipped() -> bool:
        return await stage() == "shipped"

    await until(shipped, "the first run published shipped")
    first.cancel()  # gives the workflow up
    with pytest.raises(asyncio.CancelledError):
        await first
    reached.clear()
    between.clear()
    again = await Ctx.start(db, "order-8")
    second = asyncio.ensure_future(again.run(body))
    await asyncio.wait_for(reached.wait(), 10)  # the replay passed set_event("reserved")
    assert await stage() == "shipped"
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second


async def test_recv_stops_at_a_cancel(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "order-9")
    waiting = asyncio.ensure_future(ctx.recv("approval"))
    assert await durable.cancel(db, "order-9")
    with pytest.raises(durable.Cancelled):
        await asyncio.wait_for(waiting, 10)


async def test_gc_deletes_messages_and_events_with_their_workflow(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "old")
    await durable.send(db, "old", "t", 1)
    await durable.send(db, "old", "unread", 2)
    await ctx.recv("t", timeout=5)
    await ctx.set_event("k", "v")
    await ctx.complete(None)
    await pg.execute("UPDATE task SET completed_at = now() - interval '2 days'")
    assert await durable.gc(db, timedelta(days=1)) == 1
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 0
    assert await pg.fetchval("SELECT count(*) FROM task_event") == 0


async def test_blocking_twins(dsn: str, schema: str, db: durable.Db) -> None:
    ctx = await Ctx.start(db, "order-10")
    await ctx.set_event("stage", 1)

    def blocking() -> object:
        sync_db = durable.sync.init(dsn, schema=schema)
        try:
            durable.sync.send(sync_db, "order-10", "approval", "from a thread")
            return durable.sync.get_event(sync_db, "order-10", "stage", timeout=5)
        finally:
            durable.sync.close(sync_db)

    assert await asyncio.to_thread(blocking) == 1
    assert await ctx.recv("approval", timeout=5) == "from a thread"


async def test_a_stale_holder_takes_no_message_and_publishes_nothing(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    stale = await Ctx.start(db, "order-11")
    await durable.send(db, "order-11", "approval", "for the live holder")
    # A hung process: its session lives, its heartbeat stopped long ago.
    await pg.execute("UPDATE owner SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", db.owner_id)
    fresh = await Ctx.start(other_db, "order-11")
    with pytest.raises(durable.LeaseLost):
        await stale.recv("approval", timeout=5)
    with pytest.raises(durable.LeaseLost):
        await stale.set_event("stage", "stale")
    assert await pg.fetchval("SELECT count(*) FROM task_message WHERE received_at IS NULL") == 1
    assert await pg.fetchval("SELECT count(*) FROM task_event") == 0
    assert await fresh.recv("approval", timeout=5) == "for the live holder"


@durable.workflow(name="messages.approval", queue="approvals")
async def approval(ctx: Ctx, order: str) -> durable.Json:
    answer: durable.Json = await ctx.recv("approval", timeout=timedelta(hours=1))
    return [order, answer]


@durable.workflow(name="messages.impatient", queue="approvals")
async def impatient(ctx: Ctx, order: str) -> durable.Json:
    answer: durable.Json = await ctx.recv("approval", timeout=1.0)
    return answer


async def test_a_long_recv_suspends_and_a_send_resumes_it(db: durable.Db, pg: asyncpg.Connection) -> None:
    executor = durable.Executor(db, [approval], suspend_after=0.1, recovery_interval=0.2)
    running = asyncio.ensure_future(executor.run())
    try:
        run = await approval.enqueue(db, "order-12", "o12")

        async def suspended() -> bool:
            row = await pg.fetchrow("SELECT status, owner_id FROM task WHERE name = 'order-12'")
            return row is not None and row["status"] == "scheduled" and row["owner_id"] is None

        await until(suspended, "the waiting run is suspended")

        async def slot_free() -> bool:
            return executor.running == 0

        # The slot is freed once the body's task ends, just after the commit that released the row.
        await until(slot_free, "the executor's slot is free")
        info = await durable.get(db, "order-12")
        assert info.waiting_for is not None
        assert info.waiting_for.startswith("waiting for a message on 'approval' (step 'approval') until ")
        deadline = await pg.fetchval("SELECT output FROM task WHERE name = 'approval until'")
        assert deadline is not None, "the deadline was saved before suspending"
        assert await durable.send(db, "order-12", "approval", {"by": "ops"})
        assert await asyncio.wait_for(run.result(), 30) == ["o12", {"by": "ops"}]
        final = await pg.fetchrow("SELECT attempt, recoveries, waiting FROM task WHERE name = 'order-12'")
        assert final is not None and tuple(final) == (1, 0, None)
    finally:
        executor.stop()
        await running


async def test_a_suspended_recv_times_out_at_its_saved_deadline(db: durable.Db, pg: asyncpg.Connection) -> None:
    executor = durable.Executor(db, [impatient], suspend_after=0.1, recovery_interval=0.2)
    running = asyncio.ensure_future(executor.run())
    try:
        run = await impatient.enqueue(db, "order-13", "o13")
        assert await asyncio.wait_for(run.result(), 30) is None
        deadline = int(await pg.fetchval("SELECT output FROM task WHERE name = 'approval until'"))
        done = await pg.fetchval(
            "SELECT (extract(epoch FROM completed_at) * 1000000)::int8 FROM task WHERE name = 'approval'"
        )
        assert deadline <= done < deadline + 5_000_000, "resumed for its deadline, then gave up on the message"
        await durable.send(db, "order-13", "approval", "too late")
        assert await pg.fetchval("SELECT count(*) FROM task_message WHERE received_at IS NULL") == 1
    finally:
        executor.stop()
        await running


async def test_a_wait_in_the_process_is_shown_while_it_lasts(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "order-14")  # a direct run: it always waits in its process
    waiting = asyncio.ensure_future(ctx.recv("approval", timeout=60))

    async def shown() -> bool:
        info = await durable.get(db, "order-14")
        return info.waiting_for is not None

    await until(shown, "the wait is shown")
    info = await durable.get(db, "order-14")
    assert info.status == "running"
    assert info.waiting_for is not None
    assert info.waiting_for.startswith("waiting for a message on 'approval' (step 'approval') until ")
    await durable.send(db, "order-14", "approval", "ok")
    assert await asyncio.wait_for(waiting, 10) == "ok"
    assert (await durable.get(db, "order-14")).waiting_for is None
    assert await pg.fetchval("SELECT waiting FROM task WHERE name = 'order-14'") is None
    short = await ctx.recv("quick", timeout=0.2)  # too short to be worth recording
    assert short is None


@pytest.mark.parametrize("key", [None, "webhook-1"], ids=["step key", "own key"])
async def test_a_send_run_again_after_a_crash_knows_its_own_message(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection, key: str | None
) -> None:
    await Ctx.start(db, "target")
    keyed = [] if key is None else ["--key", key]
    killed = await spawn("sender.py", dsn, schema, "--die", *keyed)
    assert await killed.wait() == -signal.SIGKILL  # after the send committed, before its step was saved
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 1
    assert await pg.fetchval("SELECT count(*) FROM task WHERE kind = 'step' AND status = 'completed'") == 0
    again = await spawn("sender.py", dsn, schema, *keyed)
    assert await line(again) == "True"  # its own message, sent once
    assert await again.wait() == 0
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 1
    assert await pg.fetchval("SELECT output FROM task WHERE name = 'send t to target'") == "true"


async def test_only_another_senders_use_of_a_key_makes_a_send_a_duplicate(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    await Ctx.start(db, "target")
    assert await durable.send(db, "target", "t", "from outside", key="shared") is True

    @durable.workflow(name="keyed")
    async def keyed(ctx: Ctx, _: None) -> list[bool]:
        return [
            await durable.send(ctx.db, "target", "t", "first step", key="shared"),
            await durable.send(ctx.db, "target", "t", "own", key="mine"),
            await durable.send(ctx.db, "target", "t", "second step", key="mine"),
        ]

    assert await keyed.run(db, "k", None) == [False, True, False]
    assert await durable.send(db, "target", "t", "outside again", key="mine") is False
    rows = await pg.fetch("SELECT value FROM task_message ORDER BY id")
    assert [row["value"] for row in rows] == ['"from outside"', '"own"']
