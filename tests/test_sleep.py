"""Durable sleep, suspension of waiting workflows, and waiting on another run."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime, timedelta

import asyncpg
import pytest
from click.testing import CliRunner

import durable
from _programs import PROGRAMS, line
from _waits import until
from durable import Ctx
from durable._ctx import start_root
from durable.cli import cli

sys.path.insert(0, str(PROGRAMS))
import jobs  # noqa: E402


@pytest.fixture
async def ledger(pg: asyncpg.Connection) -> asyncpg.Connection:
    await pg.execute("CREATE TABLE ledger (run text NOT NULL, pid int NOT NULL, event text NOT NULL, at timestamptz NOT NULL)")
    return pg


async def spawn(program: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAMS / program), *args, stdout=asyncio.subprocess.PIPE
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def saved_wake(pg: asyncpg.Connection, run: str) -> datetime:
    """The wake-up time the sleep ``cool-off`` of ``run`` saved."""
    text = await pg.fetchval(
        """SELECT s.output FROM task AS s JOIN task AS r ON s.parent_id = r.id
           WHERE r.name = $1 AND s.name = 'cool-off' AND s.status = 'completed'""",
        run,
    )
    assert text is not None
    return datetime.fromisoformat(json.loads(text))


async def test_a_sleep_across_a_sigkill_sleeps_only_what_is_left(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    first = await spawn("napper.py", dsn, schema, "nap", "3")

    async def sleeping() -> bool:
        found: int = await ledger.fetchval(
            """SELECT count(*) FROM task WHERE name = 'cool-off' AND status = 'completed'
                                         AND completed_at <= now() - interval '1.5 s'"""
        )
        return found == 1

    await until(sleeping, "the first process slept 1.5 s of its 3")
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    wake = await saved_wake(ledger, "nap")
    killed_at = await ledger.fetchval("SELECT now()")

    second = await spawn("napper.py", dsn, schema, "nap", "3")
    assert await line(second) == "done rested"
    assert await second.wait() == 0
    before = await ledger.fetchval("SELECT at FROM ledger WHERE run = 'nap' AND event = 'before'")
    after = await ledger.fetchval("SELECT at FROM ledger WHERE run = 'nap' AND event = 'after'")
    # The wake-up time is the first run's: 3 s after its start, not 3 s after the restart.
    assert timedelta(seconds=2.9) < wake - before < timedelta(seconds=3.5)
    assert wake <= after < wake + timedelta(seconds=2.5), (wake, after)
    # 3 s after the restart, had it slept the whole duration again (1.5 s were left).
    assert after < killed_at + timedelta(seconds=3), "the resumed run slept only the remaining time"
    assert await ledger.fetchval("SELECT count(*) FROM ledger WHERE event = 'before'") == 1


async def test_a_long_sleep_suspends_the_workflow_and_an_executor_in_another_process_resumes_it_on_time(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    jobs.side = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"search_path": schema})
    try:
        run = await jobs.nap.enqueue(db, "long", 4.0)
        executor = durable.Executor(db, [jobs.nap], suspend_after=0.2, recovery_interval=0.2)
        running = asyncio.ensure_future(executor.run())

        async def suspended() -> bool:
            status: str = await ledger.fetchval("SELECT status FROM task WHERE name = 'long'")
            return status == "scheduled"

        await until(suspended, "the sleeping run is suspended")

        async def slot_free() -> bool:
            return executor.running == 0

        await until(slot_free, "the executor's slot is free")
        row = await ledger.fetchrow("SELECT * FROM task WHERE name = 'long'")
        assert row is not None
        wake = await saved_wake(ledger, "long")
        assert (row["owner_id"], row["run_at"], row["attempt"], row["recoveries"]) == (None, wake, 1, 0)
        assert json.loads(row["waiting"])["kind"] == "sleep"
        assert await ledger.fetchval("SELECT count(*) FROM task WHERE root_id = $1 AND owner_id IS NOT NULL", row["id"]) == 0

        info = await durable.get(db, "long")
        assert info.status == "scheduled" and info.run_at == wake
        assert info.waiting_for is not None and info.waiting_for.startswith("sleeping until ")
        assert "(step 'cool-off')" in info.waiting_for
        shown = await asyncio.to_thread(CliRunner().invoke, cli, ["--dsn", dsn, "--schema", schema, "show", "long"])
        assert shown.exit_code == 0, shown.output
        assert f"waiting for: {info.waiting_for}" in shown.stdout

        executor.stop()
        await running
        assert await ledger.fetchval("SELECT count(*) FROM ledger WHERE event = 'after'") == 0

        other = await spawn("executor.py", dsn, schema, "--only", "jobs.nap", "--suspend-after", "0.2")
        try:
            assert await line(other) == "ready"
            ready_at = await ledger.fetchval("SELECT clock_timestamp()")
            assert await asyncio.wait_for(run.result(), 30) == "rested"
        finally:
            await stop(other)
        after = await ledger.fetchrow("SELECT pid, at FROM ledger WHERE run = 'long' AND event = 'after'")
        assert after is not None and after["pid"] == other.pid
        # On time: woken for its run_at (next_due), not by the 5 s poll; unless
        # the machine was so slow that the executor came up only after it.
        assert wake <= after["at"] < max(wake, ready_at) + timedelta(seconds=1), (wake, ready_at, after["at"])
        final = await ledger.fetchrow("SELECT attempt, recoveries, waiting FROM task WHERE name = 'long'")
        assert final is not None and tuple(final) == (1, 0, None), "a suspension is neither a new attempt nor a recovery"
    finally:
        await jobs.side.close()


async def test_a_short_sleep_in_an_executor_waits_in_process(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow(name="short", queue="naps")
    async def short(ctx: Ctx, _: None) -> str:
        await ctx.sleep("blink", 0.3)
        return "awake"

    run = await short.enqueue(db, "short-1", None)
    executor = durable.Executor(db, [short], suspend_after=5)
    running = asyncio.ensure_future(executor.run())
    try:
        assert await asyncio.wait_for(run.result(), 10) == "awake"
    finally:
        executor.stop()
        await running
    assert await pg.fetchval("SELECT attempt FROM task WHERE name = 'short-1'") == 1
    assert await pg.fetchval("SELECT updated_at - started_at FROM task WHERE name = 'short-1'") >= timedelta(seconds=0.3)


async def test_a_direct_run_never_suspends(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow(name="direct", queue="naps")
    async def direct(ctx: Ctx, _: None) -> str:
        await ctx.sleep("long-ish", timedelta(seconds=0.6))
        return "done"

    running = asyncio.ensure_future(direct.run(db, "direct-1", None))

    async def sleeping() -> bool:
        found: int = await pg.fetchval("SELECT count(*) FROM task WHERE name = 'long-ish' AND status = 'completed'")
        return found == 1

    await until(sleeping, "the sleep started")
    row = await pg.fetchrow("SELECT status, owner_id, waiting FROM task WHERE name = 'direct-1'")
    assert row is not None and row["status"] == "running" and row["owner_id"] is not None and row["waiting"] is None
    assert await running == "done"


async def test_sleep_until_a_time_and_its_checks(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "until")
    now = datetime.fromisoformat("2020-01-01T00:00:00+00:00")
    await ctx.sleep("past", until=now)  # passed already: returns at once
    with pytest.raises(durable.ConfigError, match="not both or neither"):
        await ctx.sleep("both", 1, until=now)
    with pytest.raises(durable.ConfigError, match="aware datetime"):
        await ctx.sleep("naive", until=datetime(2030, 1, 1))
    with pytest.raises(durable.ConfigError, match="duration"):
        await ctx.sleep("negative", -1)
    await ctx.complete()


async def test_a_parent_waiting_on_its_queued_child_in_a_queue_of_concurrency_one_finishes(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    @durable.workflow(name="child", queue="one")
    async def child(ctx: Ctx, n: int) -> int:
        return await ctx.step("double", lambda: n * 2)

    @durable.workflow(name="parent", queue="one")
    async def parent(ctx: Ctx, n: int) -> int:
        run = await child.enqueue(ctx.db, f"{ctx.name}-child", n)
        doubled: int = await run.result()
        return await ctx.step("plus one", lambda: doubled + 1)

    await durable.create_queue(db, "one", concurrency=1)
    run = await parent.enqueue(db, "p", 20)
    # The default suspend_after (60 s): a child not started yet suspends the parent at once.
    executor = durable.Executor(db, [parent, child], concurrency=1)
    running = asyncio.ensure_future(executor.run())
    try:
        assert await asyncio.wait_for(run.result(), 15) == 41
    finally:
        executor.stop()
        await running
    steps = {r["name"]: r["output"] for r in await pg.fetch("SELECT s.name, s.output FROM task AS s JOIN task AS p ON s.parent_id = p.id WHERE p.name = 'p'")}
    assert json.loads(steps["result p-child"]) == {"status": "completed", "output": 40, "error": None}
    assert await pg.fetchval("SELECT attempt FROM task WHERE name = 'p'") == 1


async def test_result_inside_a_workflow_is_checkpointed_and_reports_failures(db: durable.Db) -> None:
    @durable.workflow(name="broken", queue="side")
    async def broken(ctx: Ctx, _: None) -> None:
        raise ValueError("no good")

    @durable.workflow(name="waiter", queue="main")
    async def waiter(ctx: Ctx, _: None) -> str:
        run = await broken.enqueue(ctx.db, "broken-1", None)
        try:
            await run.result()
        except durable.WorkflowFailed as failed:
            return f"child failed: {failed.error['message']}"
        return "child succeeded"

    executor = durable.Executor(db, [broken])
    running = asyncio.ensure_future(executor.run())
    try:
        # A direct run waits in its process for the executor to run the child.
        assert await asyncio.wait_for(waiter.run(db, "w", None), 15) == "child failed: no good"
    finally:
        executor.stop()
        await running
    # Replayed: the saved outcome, without waiting.
    ctx = await start_root(db, "w", None, wait=0, deadline=None, workflow="waiter")
    assert ctx.status == "completed" and ctx.output == "child failed: no good"


async def test_a_wake_is_never_lost_between_a_look_and_a_suspension(db: durable.Db, pg: asyncpg.Connection) -> None:
    engine = db._engine
    ctx = await start_root(db, "woken", None, wait=0, deadline=None, workflow="some.function")
    far = await engine.db_now() + 3_600_000_000
    reason = {"kind": "recv", "step": "inbox", "detail": "waiting for a message"}
    # A wake while it runs is kept: the next suspension is refused, once.
    assert await engine.wake(ctx.root_id) is True
    assert await ctx._wf.suspend(far, reason) is False
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'woken'") == "running"
    assert await ctx._wf.suspend(far, reason) is True
    row = await pg.fetchrow("SELECT status, owner_id, waiting, wake_pending FROM task WHERE name = 'woken'")
    assert row is not None and (row["status"], row["owner_id"], row["wake_pending"]) == ("scheduled", None, False)
    assert json.loads(row["waiting"]) == reason
    with pytest.raises(durable.DurableError):
        await ctx.step("after", lambda: 1)  # the tree left this process
    # A wake of the suspended run makes it due now.
    assert await engine.wake(ctx.root_id) is True
    row = await pg.fetchrow("SELECT status, run_at <= now() AS due FROM task WHERE name = 'woken'")
    assert row is not None and tuple(row) == ("queued", True)
    assert (await durable.get(db, "woken")).waiting_for == "no live executor has registered its function some.function"


async def test_a_suspension_is_refused_once_the_awaited_run_finished(db: durable.Db, pg: asyncpg.Connection) -> None:
    engine = db._engine
    done = await Ctx.start(db, "done-already")
    await done.complete(1)
    ctx = await start_root(db, "late-waiter", None, wait=0, deadline=None, workflow="some.function")
    reason = {"kind": "result", "step": "result done-already", "detail": "waiting"}
    assert await ctx._wf.suspend(None, reason, "done-already") is False
    # Suspended while the awaited run runs: its end makes the waiter due, by any path (a cancel here).
    other = await Ctx.start(db, "still-running")
    assert await ctx._wf.suspend(None, reason, "still-running") is True
    assert await pg.fetchval("SELECT run_at FROM task WHERE name = 'late-waiter'") is None
    assert (await durable.get(db, "late-waiter")).waiting_for == "waiting"
    await durable.cancel(db, "still-running")
    row = await pg.fetchrow("SELECT status, run_at <= now() AS due FROM task WHERE name = 'late-waiter'")
    assert row is not None and tuple(row) == ("queued", True)
    assert await engine.wake(ctx.root_id) is True  # due already: stays due


async def test_a_sleep_in_a_child_suspends_the_whole_tree(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.workflow(name="tree", queue="naps")
    async def tree(ctx: Ctx, _: None) -> str:
        async with ctx.child("kid") as kid:
            await kid.sleep("kid-nap", 1.0)
            done: str = await kid.step("after", lambda: "kid done")
            await kid.complete(done)
        return done

    run = await tree.enqueue(db, "tree-1", None)
    executor = durable.Executor(db, [tree], suspend_after=0.1)
    running = asyncio.ensure_future(executor.run())
    try:

        async def suspended() -> bool:
            status: str = await pg.fetchval("SELECT status FROM task WHERE name = 'tree-1'")
            return status == "scheduled"

        await until(suspended, "the tree is suspended")
        rows = await pg.fetch("SELECT name, status, owner_id FROM task WHERE kind = 'workflow' ORDER BY id")
        assert [(r["name"], r["status"], r["owner_id"]) for r in rows] == [
            ("tree-1", "scheduled", None),
            ("kid", "running", None),
        ]
        info = await durable.get(db, "tree-1")
        assert info.waiting_for is not None and "(step 'kid-nap')" in info.waiting_for
        assert await asyncio.wait_for(run.result(), 15) == "kid done"
    finally:
        executor.stop()
        await running


async def test_a_sleep_in_the_process_is_shown_while_it_lasts(db: durable.Db) -> None:
    ctx = await durable.Ctx.start(db, "dozing")
    sleeping = asyncio.ensure_future(ctx.sleep("nap", 2.5))

    async def shown() -> bool:
        return (await durable.get(db, "dozing")).waiting_for is not None

    await until(shown, "the sleep is shown")
    info = await durable.get(db, "dozing")
    assert info.status == "running"
    assert info.waiting_for is not None and info.waiting_for.startswith("sleeping until ")
    await asyncio.wait_for(sleeping, 10)
    assert (await durable.get(db, "dozing")).waiting_for is None


async def test_a_sleeps_step_is_saved_fenced_and_marked_a_sleep(db: durable.Db, pg: asyncpg.Connection) -> None:
    run = await Ctx.start(db, "napper")
    await run.sleep("nap", 0)
    row = await pg.fetchrow("SELECT status, output, waiting FROM task WHERE name = 'nap'")
    assert row is not None and row["status"] == "completed" and json.loads(row["waiting"]) == {"kind": "sleep"}
    assert datetime.fromisoformat(json.loads(row["output"])).utcoffset() is not None, "its wake-up time, ISO 8601"
    # Another holder took the run (its epoch moved on): the stale one saves nothing.
    await pg.execute("UPDATE task SET lease_epoch = lease_epoch + 1 WHERE name = 'napper'")
    with pytest.raises(durable.LeaseLost):
        await run.sleep("nap-2", 0)
    assert await pg.fetchval("SELECT count(*) FROM task WHERE name = 'nap-2'") == 0
