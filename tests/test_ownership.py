"""One holder per workflow, also inside one process; a live process keeps its
workflows when its liveness session drops; cancels reach the holder at once."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import pytest

import durable
from _programs import line, spawn, tell
from _testdb import with_database
from _waits import until_lock_waits, writer_blocked
from durable import Ctx


async def released(pg: asyncpg.Connection, name: str, timeout: float = 5.0) -> None:
    """Waits until the root ``name`` has no holder in the database."""
    give_up = time.monotonic() + timeout
    while await pg.fetchval("SELECT owner_id FROM task WHERE name = $1 AND parent_id IS NULL", name) is not None:
        assert time.monotonic() < give_up, f"{name} was not released"
        await asyncio.sleep(0.01)


# -- one holder per workflow inside one process --------------------------------------------------


async def test_two_identical_requests_in_one_process_run_the_body_once(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    charged: list[str] = []

    async def charge(tag: str) -> str:
        charged.append(tag)
        await asyncio.sleep(0.05)
        return f"charged by {tag}"

    async def handler(tag: str) -> str:
        try:
            ctx = await Ctx.start(db, "order-42", input={"amount": 10})
        except durable.WorkflowBusy as busy:
            return f"busy: {busy}"
        return await ctx.step("charge", lambda: charge(tag))

    outcomes = await asyncio.gather(handler("A"), handler("B"))
    assert len(charged) == 1, f"charge ran {len(charged)} times"
    assert sorted(o.split(":")[0] for o in outcomes) == ["busy", f"charged by {charged[0]}"]
    assert "another handle in this process" in next(o for o in outcomes if o.startswith("busy"))


async def test_two_dbs_in_one_process_hold_workflows_apart_like_two_processes(
    db: durable.Db, other_db: durable.Db
) -> None:
    held = await Ctx.start(db, "w")
    with pytest.raises(durable.WorkflowBusy, match="another live process"):
        await Ctx.start(other_db, "w")
    await held.complete(None)


# Each ending hands out the handles it made (in `kept`), so that only the
# ending itself, not the garbage collection of its handle, can release the
# workflow; except the endings that are about garbage collection.


async def _plain_handle_raises(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    ctx = await Ctx.start(db, name)
    await ctx.step("before", lambda: 1)
    with pytest.raises(ZeroDivisionError):
        await ctx.step("boom", lambda: 1 / 0)


async def _run_cancelled(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    entered = asyncio.Event()

    @durable.workflow
    async def long(ctx: Ctx, _: None) -> None:
        kept.append(ctx)
        await ctx.step("before", lambda: 1)
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(long.run(db, name, None))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _wait_for_around_run(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    @durable.workflow
    async def long(ctx: Ctx, _: None) -> None:
        kept.append(ctx)
        await ctx.step("before", lambda: 1)
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(long.run(db, name, None), 0.3)


async def _async_with_interrupted(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with Ctx.start(db, name) as ctx:
            kept.append(ctx)
            await ctx.step("before", lambda: 1)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _handle_garbage_collected(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    ctx = await Ctx.start(db, name)
    await ctx.step("before", lambda: 1)
    del ctx
    gc.collect()


async def _released_explicitly(db: durable.Db, name: str, kept: list[Ctx]) -> None:
    ctx = await Ctx.start(db, name)
    kept.append(ctx)
    await ctx.step("before", lambda: 1)
    await ctx.release()


ENDINGS: dict[str, Callable[[durable.Db, str, list[Ctx]], Awaitable[None]]] = {
    "exception": _plain_handle_raises,
    "cancelled task": _run_cancelled,
    "wait_for around run": _wait_for_around_run,
    "async with interrupted": _async_with_interrupted,
    "garbage collected": _handle_garbage_collected,
    "ctx.release()": _released_explicitly,
}


#: Endings whose release runs in the background: a garbage-collected handle
#: (a plain handle whose code raised is one) cannot wait for the database.
#: The others have released when they return.
IN_THE_BACKGROUND = {"garbage collected", "exception"}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_handle_that_ends_unfinished_releases_its_workflow_at_once(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection, ending: str
) -> None:
    kept: list[Ctx] = []
    await ENDINGS[ending](db, "w", kept)
    if ending in IN_THE_BACKGROUND:
        await released(pg, "w")
    else:
        holder = await pg.fetchval("SELECT owner_id FROM task WHERE name = 'w'")
        assert holder is None, "released before the interrupted run returned"
    # Another owner (as another process would) takes it at once, with no wait...
    taken = await Ctx.start(other_db, "w")
    assert (taken.attempt, await taken.step("before", lambda: 2)) == (2, 1)
    await taken.release()
    # ...and so does this process again.
    again = await Ctx.start(db, "w")
    assert again.attempt == 3
    await again.complete("finally")
    assert all(ctx.status == "running" for ctx in kept), "the old handles were kept to the end"


async def test_whoever_is_told_a_workflow_is_busy_then_finds_it(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    release = asyncio.Event()

    @durable.workflow(name="same")
    async def same(ctx: Ctx, x: int) -> int:
        await release.wait()
        return x

    async def caller() -> object:
        try:
            return await same.run(db, "same-id", 7)
        except durable.WorkflowBusy:
            return (await durable.get(db, "same-id")).status  # WorkflowNotFound would fail the test

    # The first start's statement waits on a row of that name that another
    # session inserted and has not committed: the start is in flight while
    # the four others are made.
    locker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with locker.transaction():
            await locker.execute(
                """INSERT INTO task (id, root_id, kind, name, status)
                   SELECT n, n, 'workflow', 'same-id', 'running' FROM nextval('task_id_seq') AS n"""
            )
            callers = [asyncio.ensure_future(caller()) for _ in range(5)]
            await until_lock_waits(locker, 1)
            await locker.execute("ROLLBACK")
    finally:
        await locker.close()
    while sum(task.done() for task in callers) < 4:
        await asyncio.wait([t for t in callers if not t.done()], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    release.set()
    assert sorted(map(str, await asyncio.gather(*callers))) == ["7", "running", "running", "running", "running"]
    assert await durable.result(db, "same-id", timeout=10) == 7


async def test_wait_waits_for_a_handle_of_this_process(db: durable.Db) -> None:
    held = await Ctx.start(db, "w")
    waiting = asyncio.ensure_future(Ctx.start(db, "w", wait=30))
    await asyncio.sleep(0)  # the waiter found it busy
    assert not waiting.done()
    await held.complete("done by the first")
    waited = await waiting
    assert (waited.status, waited.output) == ("completed", "done by the first")


async def test_releasing_a_root_stops_every_handle_of_its_tree(db: durable.Db) -> None:
    root = await Ctx.start(db, "root")
    child = await root.child("kid")
    ran: list[str] = []
    await root.release()
    with pytest.raises(durable.LeaseLost, match="released by this process"):
        await child.step("s", lambda: ran.append("child"))
    with pytest.raises(durable.LeaseLost, match="released by this process"):
        await root.step("s", lambda: ran.append("root"))
    assert ran == []


async def test_a_write_in_flight_when_a_workflow_is_released_is_refused(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    ctx = await Ctx.start(db, "w")
    async with writer_blocked(dsn, schema, db):
        # The step's result waits in the writer, behind a blocked batch...
        writing = asyncio.ensure_future(ctx.step("late", lambda: "after the release"))
        await asyncio.sleep(0)
        # ...while the workflow is released: its lease epoch stays, its holder goes.
        await ctx.release()
    with pytest.raises(durable.LeaseLost, match="released by this process"):
        await writing
    assert await pg.fetchval("SELECT count(*) FROM task WHERE name = 'late' AND status = 'completed'") == 0


# -- a live process keeps its workflows -------------------------------------------------------------


async def owner_backend(pg: asyncpg.Connection, owner: str) -> int:
    pid: int = await pg.fetchval("SELECT backend_pid FROM owner WHERE id = $1::uuid", owner)
    return pid


async def reregistered(pg: asyncpg.Connection, owner: str, old_pid: int, timeout: float = 10.0) -> int:
    """Waits until ``owner`` registered a new session; returns its backend pid."""
    give_up = time.monotonic() + timeout
    while (pid := await owner_backend(pg, owner)) == old_pid:
        assert time.monotonic() < give_up, "the owner did not come back"
        await asyncio.sleep(0.005)
    return pid


async def test_a_live_owner_whose_session_is_terminated_keeps_its_workflow(
    dsn: str, schema: str, db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE ledger (step int NOT NULL, pid int NOT NULL)")
    holder = await spawn("steady.py", dsn, schema, "w", "40", "--pause-at", "20")
    try:
        assert await line(holder) == "started"
        assert await line(holder) == "paused"  # mid-workflow, inside a step's body
        owner = await pg.fetchval("SELECT owner_id::text FROM task WHERE name = 'w'")
        pid = await owner_backend(pg, owner)
        for _ in range(5):
            assert await pg.fetchval("SELECT pg_terminate_backend($1)", pid)
            # The racer comes while the holder's session is gone: it waits out the
            # grace, by which time the holder is back.
            with pytest.raises(durable.WorkflowBusy):
                await Ctx.start(other_db, "w")
            pid = await reregistered(pg, owner, pid)
        await tell(holder, "go")
        assert await line(holder) == "done"
        assert await holder.wait() == 0
    finally:
        if holder.returncode is None:
            holder.kill()
    runs = await pg.fetch("SELECT step, count(*) AS n, count(DISTINCT pid) AS pids FROM ledger GROUP BY step")
    assert len(runs) == 40 and all((r["n"], r["pids"]) == (1, 1) for r in runs), "each step body ran once"
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'w'") == "completed"


async def test_without_grace_a_killed_holder_is_taken_over_at_the_first_claim(
    dsn: str, schema: str, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE ledger (step int NOT NULL, pid int NOT NULL)")
    holder = await spawn("steady.py", dsn, schema, "w", "10", "--pause-at", "3", "--session-grace", "0")
    try:
        assert await line(holder) == "started"
        assert await line(holder) == "paused"
        owner = await pg.fetchval("SELECT owner_id::text FROM task WHERE name = 'w'")
        pid = await owner_backend(pg, owner)
    finally:
        holder.kill()
        await holder.wait()
    gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)"
    give_up = time.monotonic() + 10
    while not await pg.fetchval(gone, pid):  # until the server has seen the socket close
        assert time.monotonic() < give_up, "the killed holder's session lingers"
        await asyncio.sleep(0.005)
    ctx = await Ctx.start(other_db, "w")
    assert (ctx.created, ctx.attempt) == (False, 2)
    assert await pg.fetchval("SELECT session_lost_at FROM owner WHERE id = $1::uuid", owner) is None, (
        "taken at the first claim: nobody had to mark the session gone and wait out a grace"
    )


@pytest.fixture
async def idle_timeout_dsn(dsn: str) -> AsyncIterator[str]:
    """A database of its own whose sessions end after one idle second (as on managed Postgres)."""
    name = f"{urlsplit(dsn).path.lstrip('/')}_idle"[:63]
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.execute(f"ALTER DATABASE {name} SET idle_session_timeout = '1s'")
        yield with_database(dsn, name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_an_idle_session_timeout_does_not_hand_a_live_workflow_over(
    idle_timeout_dsn: str, schema: str
) -> None:
    dsn = idle_timeout_dsn
    racer = await durable.init(dsn, schema=schema)
    watch = await asyncpg.connect(dsn, server_settings={"search_path": schema, "idle_session_timeout": "0"})
    holder: asyncio.subprocess.Process | None = None
    try:
        await watch.execute("CREATE TABLE ledger (step int NOT NULL, pid int NOT NULL)")
        holder = await spawn("steady.py", dsn, schema, "w", "6", "--pause-at", "3")
        assert await line(holder) == "started"
        assert await line(holder) == "paused"
        owner = await watch.fetchval("SELECT owner_id::text FROM task WHERE name = 'w'")
        session = await owner_backend(watch, owner)
        # Wait until the idle timeout has ended every other durable session of
        # this database (the pools of both processes): only the two owner
        # sessions, immune to it, are left.
        give_up = time.monotonic() + 30
        while await watch.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'durable'
                 AND pid NOT IN (SELECT backend_pid FROM owner)"""
        ):
            assert time.monotonic() < give_up, "the idle timeout never fired"
            await asyncio.sleep(0.05)
        assert await owner_backend(watch, owner) == session, "the idle timeout dropped the holder's session"
        with pytest.raises(durable.WorkflowBusy):
            await Ctx.start(racer, "w")
        await tell(holder, "go")
        assert await line(holder) == "done"
        assert await holder.wait() == 0
        runs = await watch.fetch("SELECT step, count(*) AS n FROM ledger GROUP BY step ORDER BY step")
        assert [(r["step"], r["n"]) for r in runs] == [(i, 1) for i in range(6)]
        replay = await Ctx.start(racer, "w")
        assert replay.status == "completed"
    finally:
        if holder is not None and holder.returncode is None:
            holder.kill()
        await watch.close()
        await racer.close()


# -- cancel reaches the holder promptly ------------------------------------------------------------


async def test_a_cancel_from_elsewhere_reaches_the_holder_before_its_next_step(
    db: durable.Db, other_db: durable.Db
) -> None:
    ctx = await Ctx.start(db, "job")
    child = await ctx.child("part")
    await child.step("before", lambda: 1)
    assert await durable.cancel(other_db, "job") is True
    told = time.monotonic()
    while ctx.status != "cancelled":  # the notification arrives on the holder's session
        assert time.monotonic() - told < 5, "the holder was never told"
        await asyncio.sleep(0.001)
    latency = time.monotonic() - told
    ran: list[str] = []
    with pytest.raises(durable.Cancelled):
        await child.step("after", lambda: ran.append("after"))
    with pytest.raises(durable.Cancelled):
        await ctx.step("after", lambda: ran.append("after"))
    assert ran == [] and child.status == "cancelled"
    print(f"\ncancel reached the holder {latency * 1e6:.0f} us after durable.cancel returned")


async def test_a_retry_does_not_start_after_a_cancel(db: durable.Db, other_db: durable.Db) -> None:
    ctx = await Ctx.start(db, "job")
    tries: list[int] = []

    async def flaky() -> None:
        tries.append(durable.attempt())
        if len(tries) == 1:
            assert await durable.cancel(other_db, "job")
            while ctx.status != "cancelled":
                await asyncio.sleep(0.001)
        raise ConnectionError("blip")

    with pytest.raises(durable.Cancelled):
        await ctx.step("s", flaky, retries=5, backoff=durable.Backoff(initial=0, jitter=0))
    assert tries == [1], "the retry saw the cancel and did not run"
