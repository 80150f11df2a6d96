"""Queued execution: enqueue, executors, queue limits, results, recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

import durable
from _programs import PROGRAMS, line
from _waits import until
from durable import Ctx

sys.path.insert(0, str(PROGRAMS))
import jobs  # noqa: E402


@durable.workflow(queue="q")
async def double(ctx: Ctx, n: int) -> int:
    return await ctx.step("double", lambda: n * 2)


@durable.workflow(name="slow", queue="q")
async def slow(ctx: Ctx, n: int) -> int:
    async def nap() -> int:
        await asyncio.sleep(0.2)  # the work takes a while: the waiter looks before it ends
        return n * 2

    return await ctx.step("nap", nap)


@durable.workflow(queue="q")
async def broken(ctx: Ctx, why: str) -> None:
    await ctx.step("ok", lambda: 1)
    raise RuntimeError(why)


@durable.workflow(name="marker", queue="zz")
async def marker(ctx: Ctx, _: None) -> str:
    return "done"


@pytest.fixture
async def executor(db: durable.Db) -> AsyncIterator[durable.Executor]:
    """An executor in this process, for double, broken and marker."""
    made = durable.Executor(db, [double, broken, marker], concurrency=10, recovery_interval=0.2)
    task = asyncio.ensure_future(made.run())
    yield made
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_enqueued_run_is_run_by_an_executor(db: durable.Db, executor: durable.Executor) -> None:
    run = await double.enqueue(db, "d-1", 21)
    assert (run.name, run.created) == ("d-1", True)
    assert await run.result(timeout=10) == 42
    assert await durable.result(db, "d-1", timeout=1) == 42


async def test_enqueue_is_idempotent_by_name(db: durable.Db, pg: asyncpg.Connection) -> None:
    first = await double.enqueue(db, "d", 1)
    again = await double.enqueue(db, "d", 1)
    assert (first.created, again.created, again.status) == (True, False, "queued")
    with pytest.raises(durable.InputMismatch, match="different input"):
        await double.enqueue(db, "d", 2)
    with pytest.raises(durable.InputMismatch, match="already exists as a run of"):
        await broken.enqueue(db, "d", "x")
    assert await pg.fetchval("SELECT count(*) FROM task") == 1


async def test_enqueue_many_queues_every_run_in_one_commit(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    await double.enqueue(db, "m-0", 0)
    runs = await double.enqueue_many(db, [(f"m-{i}", i) for i in range(50)], priority=3)
    assert [r.name for r in runs] == [f"m-{i}" for i in range(50)]
    assert [r.created for r in runs] == [False] + [True] * 49, "m-0 existed: returned as it is"
    made = await pg.fetchrow(
        "SELECT count(*), count(DISTINCT created_at) AS transactions FROM task WHERE name LIKE 'm-%' AND priority = 3"
    )
    assert made is not None and tuple(made) == (49, 1), "one transaction made them all"
    assert [await run.result(timeout=10) for run in runs] == [2 * i for i in range(50)]
    assert await double.enqueue_many(db, []) == []


async def test_enqueue_many_refuses_a_name_twice_and_reports_a_mismatch(db: durable.Db, pg: asyncpg.Connection) -> None:
    with pytest.raises(durable.ConfigError, match='the run name "x" is given twice'):
        await double.enqueue_many(db, [("x", 1), ("y", 1), ("x", 1)])
    with pytest.raises(durable.ConfigError, match=r"\(name, input\) pairs"):
        await double.enqueue_many(db, ["x"])  # type: ignore[list-item]
    assert await pg.fetchval("SELECT count(*) FROM task") == 0
    await double.enqueue(db, "x", 1)
    with pytest.raises(durable.InputMismatch, match='"x" already exists with a different input'):
        await double.enqueue_many(db, [("w", 1), ("x", 2), ("z", 1)])
    assert sorted(r["name"] for r in await pg.fetch("SELECT name FROM task")) == ["w", "x", "z"]
    with pytest.raises(durable.InputMismatch, match="already exists as a run of"):
        await broken.enqueue_many(db, [("x", "y")])


async def test_a_missing_queue_is_made_at_the_first_enqueue(
    db: durable.Db, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="durable"):
        await double.enqueue(db, "d", 1)
        await double.enqueue(db, "e", 1)
    assert [r.getMessage() for r in caplog.records].count(
        "queue 'q' did not exist: made it, without limits (durable.create_queue sets them)"
    ) == 1
    row = await pg.fetchrow("SELECT max_concurrency, paused FROM task_queue WHERE name = 'q'")
    assert row is not None and (row["max_concurrency"], row["paused"]) == (None, False)


async def test_results_of_failed_cancelled_slow_and_unknown_runs(
    db: durable.Db, executor: durable.Executor
) -> None:
    failing = await broken.enqueue(db, "b", "the disk is full")
    with pytest.raises(durable.WorkflowFailed) as caught:
        await failing.result(timeout=10)
    failure = caught.value
    assert (failure.type, failure.message) == ("RuntimeError", "the disk is full")
    assert "raise RuntimeError(why)" in failure.traceback
    await durable.pause_queue(db, "q")
    waiting = await double.enqueue(db, "waits", 1)
    with pytest.raises(TimeoutError, match="did not finish within 0.2 s"):
        await waiting.result(timeout=0.2)
    assert await durable.cancel(db, "waits")
    with pytest.raises(durable.Cancelled):
        await waiting.result(timeout=10)
    with pytest.raises(durable.WorkflowNotFound):
        await durable.result(db, "no-such-run", timeout=1)


async def test_delayed_runs_never_start_early(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    now = await pg.fetchval("SELECT now()")
    later = await double.enqueue(db, "later", 1, delay=timedelta(seconds=0.6))
    at = await double.enqueue(db, "at", 2, run_at=now + timedelta(seconds=0.4))
    assert (later.status, at.status) == ("scheduled", "scheduled")
    assert (await later.result(timeout=10), await at.result(timeout=10)) == (2, 4)
    rows = {r["name"]: r for r in await pg.fetch("SELECT name, run_at, started_at FROM task WHERE parent_id IS NULL")}
    for name in ("later", "at"):
        assert rows[name]["started_at"] >= rows[name]["run_at"], name
    assert rows["at"]["run_at"] == now + timedelta(seconds=0.4)


async def test_higher_priority_runs_first(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "q", concurrency=1)
    await durable.pause_queue(db, "q")
    for name, priority in [("low", -5), ("mid", 0), ("high", 10), ("mid2", 0)]:
        await double.enqueue(db, name, 1, priority=priority)
    made = durable.Executor(db, [double], concurrency=1)
    task = asyncio.ensure_future(made.run())
    try:
        await durable.resume_queue(db, "q")
        await durable.result(db, "low", timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    order = [r["name"] for r in await pg.fetch("SELECT name FROM task WHERE parent_id IS NULL ORDER BY started_at")]
    assert order == ["high", "mid", "mid2", "low"]


async def test_keys_take_turns_among_equal_priorities(db: durable.Db, pg: asyncpg.Connection) -> None:
    await durable.create_queue(db, "q", concurrency=1)
    await durable.pause_queue(db, "q")
    for i in range(3):
        await double.enqueue(db, f"a{i}", i, key="a")
    for i in range(3):
        await double.enqueue(db, f"b{i}", i, key="b")
    await double.enqueue(db, "urgent", 0, key="a", priority=1)
    made = durable.Executor(db, [double], concurrency=1)
    task = asyncio.ensure_future(made.run())
    try:
        await durable.resume_queue(db, "q")
        for name in ("a2", "b2"):
            await durable.result(db, name, timeout=10)
    finally:
        made.stop()
        await task
    order = [r["name"] for r in await pg.fetch("SELECT name FROM task WHERE parent_id IS NULL ORDER BY started_at")]
    assert order == ["urgent", "b0", "a0", "b1", "a1", "b2", "a2"], "priority first, then the keys in turn"


async def test_a_paused_queue_starts_nothing(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    await durable.pause_queue(db, "q")
    await double.enqueue(db, "held", 1)
    # The marker's queue sorts after "q": the claim pass that starts it tried "q" first.
    assert await (await marker.enqueue(db, "m", None)).result(timeout=10) == "done"
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'held'") == "queued"
    await durable.resume_queue(db, "q")
    assert await durable.result(db, "held", timeout=10) == 2


async def test_runs_of_unknown_workflows_are_left_alone(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    @durable.workflow(name="somebody.else", queue="q")
    async def stranger(ctx: Ctx, _: None) -> None:
        pass

    await stranger.enqueue(db, "not-mine", None)
    assert await (await marker.enqueue(db, "m", None)).result(timeout=10) == "done"
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'not-mine'") == "queued"


@pytest.mark.parametrize(
    "call",
    [
        lambda db: durable.create_queue(db, "x", concurrency=0),
        lambda db: durable.create_queue(db, "x", concurrency_per_key=-1),
        lambda db: durable.create_queue(db, "x", rate_limit=(0, 1)),
        lambda db: durable.create_queue(db, "x", rate_limit=(5, -1)),
        lambda db: durable.create_queue(db, "x", rate_limit=[(5, 1), (6, 1)]),
        lambda db: durable.create_queue(db, "x", rate_limit="10/s"),  # type: ignore[arg-type]
        lambda db: durable.create_queue(db, "x", rate_limit=[]),
        lambda db: double.enqueue(db, "r", 1, priority="high"),  # type: ignore[arg-type]
        lambda db: double.enqueue(db, "r", 1, delay=-1),
        lambda db: double.enqueue(db, "r", 1, run_at=datetime(2030, 1, 1)),
        lambda db: double.enqueue(db, "r", 1, delay=1, run_at=datetime.now(timezone.utc)),
        lambda db: double.enqueue(db, "r", 1, key=3),  # type: ignore[arg-type]
    ],
    ids=range(12),
)
async def test_bad_limits_and_options_are_refused_before_anything_is_written(
    db: durable.Db, pg: asyncpg.Connection, call: Any
) -> None:
    with pytest.raises(durable.ConfigError):
        await call(db)
    assert await pg.fetchval("SELECT count(*) FROM task") == 0
    assert await pg.fetchval("SELECT count(*) FROM task_queue") == 0


def test_an_executor_needs_workflows_and_sane_options(db: durable.Db) -> None:
    bad: list[dict[str, Any]] = [{"concurrency": 0}, {"max_recoveries": -1}, {"poll": 0}, {"version": 3}]
    for kwargs in bad:
        with pytest.raises(durable.ConfigError):
            durable.Executor(db, [double], **kwargs)
    with pytest.raises(durable.ConfigError, match="at least one workflow"):
        durable.Executor(db, [])
    with pytest.raises(durable.ConfigError, match="takes @durable.workflow functions"):
        durable.Executor(db, [double.fn])  # type: ignore[list-item]


async def test_a_run_enqueued_from_sql_exists_only_if_its_transaction_commits(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    await pg.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    app = await asyncpg.connect(dsn)
    try:
        for commit in (False, True):
            transaction = app.transaction()
            await transaction.start()
            await app.execute(f"INSERT INTO {schema}.orders VALUES ($1)", int(commit))
            run_id = await app.fetchval(
                f"SELECT {schema}.enqueue($1, $2, $3::jsonb, queue => 'from_sql')",
                double.name,
                f"sql-{commit}",
                "21",
            )
            assert isinstance(run_id, int)
            await (transaction.commit() if commit else transaction.rollback())
    finally:
        await app.close()
    with pytest.raises(durable.WorkflowNotFound):
        await durable.result(db, "sql-False", timeout=1)
    # Queued in a queue no workflow declares: the executor finds it.
    assert await durable.result(db, "sql-True", timeout=10) == 42
    with pytest.raises(asyncpg.UniqueViolationError, match="different input"):
        await pg.fetchval(f"SELECT {schema}.enqueue($1, 'sql-True', '1')", double.name)


async def test_an_sql_null_input_is_stored_and_run_as_json_null(
    schema: str, db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    # A client that binds None for the input sends SQL NULL.
    run_id = await pg.fetchval(f"SELECT {schema}.enqueue('marker', 'from-null', $1::jsonb, queue => 'zz')", None)
    assert await pg.fetchval("SELECT input = 'null'::jsonb FROM task WHERE id = $1", run_id) is True
    assert await durable.result(db, "from-null", timeout=10) == "done"
    # The same input again, either way: the same run.
    assert await pg.fetchval(f"SELECT {schema}.enqueue('marker', 'from-null', NULL, queue => 'zz')") == run_id
    assert await pg.fetchval(f"SELECT {schema}.enqueue('marker', 'from-null', 'null', queue => 'zz')") == run_id
    assert (await marker.enqueue(db, "from-null", None)).created is False


@pytest.mark.parametrize(
    ("argument", "what"), [("workflow", "registered workflow"), ("name", "workflow"), ("queue", "queue"), ("key", "key")]
)
async def test_sql_enqueue_refuses_the_names_python_refuses(
    schema: str, db: durable.Db, pg: asyncpg.Connection, argument: str, what: str
) -> None:
    for bad, reason in [("", "it is empty"), ("é" * 128, "it is longer than 255 bytes")]:
        given = {"workflow": double.name, "name": "n", "queue": "q", "key": "k", argument: bad}
        with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
            await pg.fetchval(
                f"SELECT {schema}.enqueue($1, $2, '1', queue => $3, key => $4)",
                given["workflow"], given["name"], given["queue"], given["key"],
            )
        said = f"invalid {what} name {json.dumps(bad[:80], ensure_ascii=False)}: {reason}"
        assert str(refused.value) == f"durable.enqueue: {said}"
        if argument in ("name", "key"):  # the Python API's words for the same mistake
            with pytest.raises(durable.InvalidName) as python:
                await double.enqueue(db, given["name"], 1, key=given["key"])
            assert str(python.value) == said
    assert await pg.fetchval("SELECT count(*) FROM task") == 0


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("run_at => 'infinity'", "run_at must fall within the years 1 to 9999 in UTC, and infinity does not"),
        ("run_at => '-infinity'", "run_at must fall within the years 1 to 9999 in UTC, and -infinity does not"),
        # The year 0 and the year 10000 in UTC, as the Python API's examples.
        ("run_at => '0001-01-01 00:00:00+14'", "run_at must fall within the years 1 to 9999 in UTC"),
        ("run_at => '9999-12-31 23:00:00-05'", "run_at must fall within the years 1 to 9999 in UTC"),
        ("run_at => '200000-01-01 00:00:00+00'", "run_at must fall within the years 1 to 9999 in UTC"),
        ("delay => interval '-1 second'", "delay must be from 0 to 36500 days (a century), not -00:00:01"),
        ("delay => interval '36501 days'", "delay must be from 0 to 36500 days (a century), not 36501 days"),
        ("delay => interval '1000000 years'", "delay must be from 0 to 36500 days (a century), not 1000000 years"),
    ],
)
async def test_sql_enqueue_refuses_times_out_of_range(
    schema: str, db: durable.Db, pg: asyncpg.Connection, given: str, said: str
) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match=re.escape(f"durable.enqueue: {said}")):
        await pg.fetchval(f"SELECT {schema}.enqueue($1, 'n', '1', {given})", double.name)
    assert await pg.fetchval("SELECT count(*) FROM task") == 0


async def test_sql_enqueue_takes_the_times_at_its_bounds(schema: str, db: durable.Db, pg: asyncpg.Connection) -> None:
    for name, given in [
        ("first", "run_at => '0001-01-01 00:00:00+00'"),
        ("last", "run_at => '9999-12-31 23:59:59.999999+00'"),
        ("now", "delay => interval '0'"),
        ("century", "delay => interval '36500 days'"),
    ]:
        await pg.fetchval(f"SELECT {schema}.enqueue($1, $2, '1', {given})", double.name, name)
    runs = {run.name: run for run in await durable.list_workflows(db)}
    assert runs["first"].run_at == datetime(1, 1, 1, tzinfo=timezone.utc)
    assert runs["last"].run_at == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert (runs["first"].status, runs["now"].status, runs["century"].status) == ("queued", "queued", "scheduled")
    assert all(not run.out_of_range for run in runs.values())


@durable.workflow(name="nested", queue="q")
async def nested(ctx: Ctx, _: None) -> str:
    async with ctx.child("kid") as kid:
        await kid.step("wait", gate.wait)
    return "nested done"


async def test_resume_brings_back_a_cancelled_run_and_its_children(db: durable.Db) -> None:
    gate.clear()
    made = durable.Executor(db, [nested])
    task = asyncio.ensure_future(made.run())
    try:
        run = await nested.enqueue(db, "n", None)

        async def kid_waits() -> bool:
            try:
                return (await durable.get(db, ("n", "kid"))).status == "running"
            except durable.WorkflowNotFound:
                return False  # the parent has not started its child yet

        await until(kid_waits, "the child runs")
        assert await durable.cancel(db, "n")
        with pytest.raises(durable.Cancelled):
            await run.result(timeout=10)
        assert (await durable.get(db, ("n", "kid"))).status == "cancelled"
        gate.set()
        assert await durable.resume(db, "n") is True
        assert await run.result(timeout=10) == "nested done"
        assert (await durable.get(db, ("n", "kid"))).status == "completed"
    finally:
        gate.set()
        made.stop()
        await task


async def test_a_child_runs_in_its_parents_slot(db: durable.Db) -> None:
    gate.clear()
    await durable.create_queue(db, "q", concurrency=1)
    made = durable.Executor(db, [nested, double])
    task = asyncio.ensure_future(made.run())
    try:
        run = await nested.enqueue(db, "n", None)

        async def kid_waits() -> bool:
            try:
                return (await durable.get(db, ("n", "kid"))).status == "running"
            except durable.WorkflowNotFound:
                return False

        await until(kid_waits, "the child runs")
        await double.enqueue(db, "next", 1)
        assert await waiting_for(db, "next") == "concurrency full (1 running)", "the child takes no second slot"
        gate.set()
        assert await run.result(timeout=10) == "nested done"
        assert await durable.result(db, "next", timeout=10) == 2
    finally:
        gate.set()
        made.stop()
        await task


# A bound on wall-clock time: the full tier. That an enqueue wakes an executor
# that would not look again for an hour is fast-tested in test_claims.py and
# test_times.py.
@pytest.mark.timing
async def test_executors_and_waiters_are_woken_by_notifications_not_polls(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    # An executor that would otherwise look again only after an hour.
    made = durable.Executor(db, [double, slow], poll=3600, recovery_interval=3600)
    task = asyncio.ensure_future(made.run())
    try:
        await db._engine.register_executor([double.name, slow.name])

        async def idle() -> bool:
            return (await durable.get(db, "warm")).status == "completed"

        await (await double.enqueue(db, "warm", 1)).result(timeout=10)
        await until(idle, "the executor is idle")
        began = time.monotonic()
        await pg.fetchval(f"SELECT {schema}.enqueue('slow', 'from-sql', '5'::jsonb, queue => 'q')")
        # The waiter looks once, then waits for the run's end to be announced;
        # its own fallback poll is a second. The run takes 0.2 s: done well
        # within a second only if the executor was woken by the enqueue and
        # the waiter by the end.
        assert await durable.result(db, "from-sql", timeout=10) == 10
        took = time.monotonic() - began
        assert took < 0.8, f"the result came {took:.2f} s after the enqueue"
    finally:
        made.stop()
        await task


async def test_resume_puts_a_failed_run_back_keeping_its_steps(
    db: durable.Db, pg: asyncpg.Connection, executor: durable.Executor
) -> None:
    run = await broken.enqueue(db, "b", "first try")
    with pytest.raises(durable.WorkflowFailed):
        await run.result(timeout=10)
    assert await durable.resume(db, "b") is True
    with pytest.raises(durable.WorkflowFailed):
        await run.result(timeout=10)
    steps = await pg.fetch("SELECT name, attempt, status FROM task WHERE kind = 'step'")
    assert [(r["name"], r["attempt"], r["status"]) for r in steps] == [("ok", 1, "completed")], "kept, not run again"
    assert await pg.fetchval("SELECT attempt FROM task WHERE name = 'b'") == 2
    assert await durable.resume(db, "no-such") is False


async def test_an_enqueue_inside_a_workflow_is_a_step(db: durable.Db, pg: asyncpg.Connection) -> None:
    tries: list[int] = []

    @durable.workflow
    async def parent(ctx: Ctx, _: None) -> None:
        tries.append(ctx.attempt)
        await double.enqueue(db, f"child-{len(tries)}", 1)  # a name that differs on each try
        await double.enqueue_many(db, [(f"many-{len(tries)}-{i}", i) for i in range(2)])
        if len(tries) == 1:
            raise ConnectionError("crash after enqueueing")

    with pytest.raises(ConnectionError):
        await parent.run(db, "p", None)
    await parent.run(db, "p", None)
    queued = [r["name"] for r in await pg.fetch("SELECT name FROM task WHERE workflow = $1", double.name)]
    assert queued == ["child-1", "many-1-0", "many-1-1"], "the resumed parent replayed its enqueues"


gate = asyncio.Event()


@durable.workflow(name="blocker", queue="limited")
async def blocker(ctx: Ctx, _: None) -> str:
    await ctx.step("wait", gate.wait)
    return "through"


async def waiting_for(db: durable.Db, name: str) -> str | None:
    return (await durable.get(db, name)).waiting_for


async def test_a_closed_db_gives_its_claimed_runs_back_uncharged(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    await double.enqueue(db, "held", 1)
    claimed = await other_db._engine.claim("q", 1, [double.name], None)
    assert [name for name, _ in claimed] == [double.name]
    await other_db.close()  # the claimed run is held, unfinished
    row = await pg.fetchrow("SELECT status, owner_id FROM task WHERE name = 'held'")
    assert row is not None and (row["status"], row["owner_id"]) == ("queued", None), "given back, not recovered"
    await db._engine.recover([double.name], 0)
    info = await durable.get(db, "held")
    assert (info.status, info.recoveries) == ("queued", 0), "a close is no crash"


async def test_an_executor_stopped_before_it_ran_returns_at_once(db: durable.Db) -> None:
    executor = durable.Executor(db, [double])
    executor.stop()
    await asyncio.wait_for(executor.run(), 10)
    assert not (await db._engine.recover([double.name], 5))["queues"], "nothing was claimed or queued"


entered = asyncio.Event()


@durable.workflow(name="last", queue="limited")
async def last(ctx: Ctx, _: None) -> str:
    async def body() -> str:
        entered.set()
        await gate.wait()
        return "through"

    await ctx.step("first", lambda: 1)
    return await ctx.step("last", body)


async def test_a_run_in_its_last_step_when_its_executor_stops_is_completed_not_recovered(db: durable.Db) -> None:
    gate.clear()
    entered.clear()
    executor = durable.Executor(db, [last], recovery_interval=0.2)
    task = asyncio.ensure_future(executor.run())
    run = await last.enqueue(db, "last-step", None)
    await asyncio.wait_for(entered.wait(), 10)
    executor.stop()

    async def draining() -> bool:
        return any(handle.draining for handle in executor._running.values())

    await until(draining, "the graceful stop began, the last step still in flight")
    gate.set()
    await task
    info = await durable.get(db, "last-step")
    assert (info.status, info.recoveries, info.output) == ("completed", 0, "through"), "the drain let it finish"
    assert await run.result(timeout=1) == "through"


async def test_a_waiting_run_says_why_it_does_not_run(db: durable.Db, pg: asyncpg.Connection) -> None:
    gate.clear()
    await double.enqueue(db, "nobody", 1)
    assert await waiting_for(db, "nobody") == f"no live executor has registered its function {double.name}"
    registered = await db._engine.register_executor([double.name])  # as a live executor does when it starts
    assert await waiting_for(db, "nobody") == "ready: the next claim starts it"
    await db._engine.unregister_executor(registered)
    await double.enqueue(db, "later", 1, delay=3600)
    assert (await waiting_for(db, "later") or "").startswith("delayed until ")

    await durable.create_queue(db, "limited", concurrency=2, concurrency_per_key=1, rate_limit=(3, 3600))
    executor = durable.Executor(db, [blocker])
    task = asyncio.ensure_future(executor.run())
    try:
        await blocker.enqueue(db, "a", None, key="k")
        await blocker.enqueue(db, "b", None, key="k")

        async def a_runs() -> bool:
            return (await durable.get(db, "a")).status == "running"

        await until(a_runs, "a runs")
        assert await waiting_for(db, "b") == "key limit: 1 runs of key k running"
        await blocker.enqueue(db, "c", None)

        async def c_runs() -> bool:
            return (await durable.get(db, "c")).status == "running"

        await until(c_runs, "c runs")
        await blocker.enqueue(db, "d", None)
        assert await waiting_for(db, "d") == "concurrency full (2 running)"
        gate.set()
        assert await durable.result(db, "a", timeout=10) == "through"
        await until(lambda: _status_is(db, "b", "completed"), "b ran")
        assert (await waiting_for(db, "d") or "").startswith("rate limit until "), "3 starts within the hour"
        await durable.pause_queue(db, "limited")
        assert await waiting_for(db, "d") == "queue limited is paused"
    finally:
        gate.set()
        executor.stop()
        await task
    assert (await durable.get(db, "a")).waiting_for is None


async def test_a_delayed_run_names_its_exact_due_time(db: durable.Db, pg: asyncpg.Connection) -> None:
    # Just before a whole second: said without its fraction, it would name a
    # time almost a second before the run is due.
    due = datetime(2999, 1, 2, 3, 4, 5, 999_999, tzinfo=timezone.utc)
    await double.enqueue(db, "later", 1, run_at=due)
    assert await pg.fetchval("SELECT run_at FROM task WHERE name = 'later'") == due
    assert await waiting_for(db, "later") == "delayed until 2999-01-02T03:04:05.999999Z"


async def test_every_rate_window_of_a_queue_holds(db: durable.Db, executor: durable.Executor) -> None:
    await durable.create_queue(db, "q", rate_limit=[(100, timedelta(seconds=1)), (2, timedelta(hours=1))])
    assert [await (await double.enqueue(db, f"r{i}", i)).result(timeout=10) for i in range(2)] == [0, 2]
    await double.enqueue(db, "third", 2)
    assert await marker.enqueue(db, "m", None) and await durable.result(db, "m", timeout=10) == "done"
    assert (await durable.get(db, "third")).status == "queued", "the hourly window is spent"
    assert (await waiting_for(db, "third") or "").startswith("rate limit until ")


async def _status_is(db: durable.Db, name: str, status: str) -> bool:
    return (await durable.get(db, name)).status == status


async def test_workflows_are_listed_and_read_by_path_without_being_taken(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "root", {"x": 1})
    kid = await ctx.child("kid", [1, 2])
    await kid.step("s", lambda: 1)
    await kid.complete("kid done")
    await double.enqueue(db, "queued-1", 1)
    info = await durable.get(db, ("root", "kid"))
    assert (info.name, info.path, info.status, info.input, info.output) == (
        "kid",
        ("root", "kid"),
        "completed",
        [1, 2],
        "kid done",
    )
    root = await durable.get(db, "root")
    assert (root.status, root.input, root.workflow, root.started_at is not None) == ("running", {"x": 1}, None, True)
    assert await ctx.step("after", lambda: "still mine") == "still mine", "reading took nothing over"
    names = [w.name for w in await durable.list_workflows(db)]
    assert names == ["queued-1", "root"], "roots, newest first"
    assert [w.name for w in await durable.list_workflows(db, status="queued")] == ["queued-1"]
    assert [w.name for w in await durable.list_workflows(db, queue="q")] == ["queued-1"]
    assert [w.name for w in await durable.list_workflows(db, name_prefix="ro")] == ["root"]
    assert await durable.list_workflows(db, since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    assert len(await durable.list_workflows(db, limit=1)) == 1
    with pytest.raises(durable.WorkflowNotFound):
        await durable.get(db, ("root", "nobody"))
    with pytest.raises(durable.ConfigError):
        await durable.list_workflows(db, status="sleeping")


# -- several executor processes ----------------------------------------------------------------


async def spawn_executor(dsn: str, schema: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAMS / "executor.py"), dsn, schema, *args, stdout=asyncio.subprocess.PIPE
    )
    assert await line(proc) == "ready"
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


@pytest.fixture
async def ledger(pg: asyncpg.Connection) -> asyncpg.Connection:
    await pg.execute("CREATE TABLE ledger (run text NOT NULL, pid int NOT NULL, event text NOT NULL, at timestamptz NOT NULL)")
    return pg


def most_at_once(intervals: list[tuple[Any, Any]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:  # an end sorts before a start at the same instant
        current += step
        most = max(most, current)
    return most


async def test_several_executors_keep_every_limit_and_run_each_run_once(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    # Three keys of at most two runs each could run six at once: the queue's three binds first.
    await durable.create_queue(db, "work", concurrency=3, concurrency_per_key=2, rate_limit=(8, timedelta(seconds=1)))
    runs = [
        await jobs.sleepy.enqueue(db, f"r{i:02d}", {"ms": 60, "tag": str(i)}, key=f"k{i % 3}") for i in range(24)
    ]
    procs = [await spawn_executor(dsn, schema, "--only", "jobs.sleepy") for _ in range(3)]
    try:
        assert [await run.result(timeout=60) for run in runs] == [str(i) for i in range(24)]
    finally:
        for proc in procs:
            await stop(proc)
    rows = await ledger.fetch("SELECT run, event, at FROM ledger")
    starts = {r["run"]: r["at"] for r in rows if r["event"] == "start"}
    ends = {r["run"]: r["at"] for r in rows if r["event"] == "end"}
    assert sorted(r["run"] for r in rows if r["event"] == "start") == sorted(starts), "each run started once"
    assert len(starts) == len(ends) == 24
    intervals = {run: (starts[run], ends[run]) for run in starts}
    assert most_at_once(list(intervals.values())) <= 3, "queue concurrency"
    assert most_at_once(list(intervals.values())) == 3, "the queue's limit was reached (it binds here)"
    for key in ("k0", "k1", "k2"):
        keyed = [interval for run, interval in intervals.items() if int(run[1:]) % 3 == int(key[1])]
        assert most_at_once(keyed) <= 2, f"concurrency of key {key}"
    claimed = sorted(await ledger.fetchval("SELECT array_agg(started_at) FROM task WHERE parent_id IS NULL"))
    for i, start in enumerate(claimed):
        in_window = [t for t in claimed[i:] if t - start < timedelta(seconds=1)]
        assert len(in_window) <= 8, f"{len(in_window)} starts within a second from {start}"


async def test_a_killed_executors_runs_are_finished_by_another(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    runs = [await jobs.steps.enqueue(db, f"s{i}", 15) for i in range(4)]
    doomed = await spawn_executor(dsn, schema, "--only", "jobs.steps")

    async def under_way() -> bool:
        return bool(await ledger.fetchval("SELECT count(*) >= 8 FROM ledger WHERE pid = $1", doomed.pid))

    await until(under_way, "the first executor is under way")
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await doomed.wait()
    rescuer = await spawn_executor(dsn, schema, "--only", "jobs.steps")
    try:
        assert [await run.result(timeout=60) for run in runs] == [sum(range(15))] * 4
        first = await ledger.fetchval("SELECT min(at) FROM ledger WHERE pid = $1", rescuer.pid)
    finally:
        await stop(rescuer)
    took = (first - await ledger.fetchval("SELECT max(at) FROM ledger WHERE pid = $1", doomed.pid)).total_seconds()
    print(f"\nSIGKILLed executor: another resumed its runs {took:.2f} s after its last step "
          f"({time.monotonic() - killed_at:.2f} s wall, executor start included)")
    bodies = await ledger.fetch("SELECT run, count(*) AS n FROM ledger GROUP BY run")
    reruns = [r["run"] for r in bodies if r["n"] > 1]
    assert len(reruns) <= 4, f"only the steps interrupted by the kill ran twice: {reruns}"


async def test_sigterm_hands_runs_over_and_loses_nothing(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    await ledger.execute("CREATE TABLE gate ()")
    runs = [await jobs.gated.enqueue(db, f"s{i}", 15) for i in range(4)]
    leaving = await spawn_executor(dsn, schema, "--only", "jobs.gated")

    async def at_the_gate() -> bool:
        reached = "SELECT count(*) FROM ledger WHERE pid = $1 AND run LIKE '%/s8'"
        return bool(await ledger.fetchval(reached, leaving.pid) == 4)

    # Every run waits in its ninth step's body until the stop is under way:
    # the first executor cannot finish them all before the second is there.
    await until(at_the_gate, "the first executor's runs wait at the gate")
    taking_over = await spawn_executor(dsn, schema, "--only", "jobs.gated")
    leaving.send_signal(signal.SIGTERM)
    await ledger.execute("INSERT INTO gate DEFAULT VALUES")
    assert await line(leaving) == "stopped"
    assert await leaving.wait() == 0
    try:
        assert [await run.result(timeout=60) for run in runs] == [sum(range(15))] * 4
    finally:
        await stop(taking_over)
    bodies = await ledger.fetch("SELECT run, count(*) AS n, count(DISTINCT pid) AS pids FROM ledger GROUP BY run")
    assert len(bodies) == 60 and all(r["n"] == 1 for r in bodies), "every step body ran exactly once"
    assert {r["pids"] for r in bodies} == {1}
    handed = await ledger.fetchval("SELECT count(DISTINCT run) FROM ledger WHERE pid = $1", taking_over.pid)
    assert handed > 0, "the second executor took runs over"


async def test_only_executors_of_a_runs_version_resume_it_but_any_frees_its_slot(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    await durable.create_queue(db, "work", concurrency=1)
    run = await jobs.steps.enqueue(db, "s", 15)
    doomed = await spawn_executor(dsn, schema, "--only", "jobs.steps", "--version", "v1")

    async def under_way() -> bool:
        return bool(await ledger.fetchval("SELECT count(*) >= 3 FROM ledger WHERE pid = $1", doomed.pid))

    await until(under_way, "v1 is under way")
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    fresh = await jobs.steps.enqueue(db, "fresh", 1)
    newer = await spawn_executor(dsn, schema, "--only", "jobs.steps", "--version", "v2")
    try:
        # The crashed v1 run goes back to its queue (v2 may requeue it, not
        # run it), so the queue's only slot is free for what v2 may run.
        assert await fresh.result(timeout=30) == 0, "v2 runs new work"
        info = await durable.get(db, "s")
        assert (info.status, info.version, info.recoveries) == ("queued", "v1", 1)
        assert info.waiting_for == "no live executor has registered its function jobs.steps at version v1"
        rescuer = await spawn_executor(dsn, schema, "--only", "jobs.steps", "--version", "v1")
        try:
            assert await run.result(timeout=30) == sum(range(15))
        finally:
            await stop(rescuer)
    finally:
        await stop(newer)
    bodies = await ledger.fetch("SELECT DISTINCT pid FROM ledger WHERE run LIKE 's/%'")
    assert newer.pid not in {r["pid"] for r in bodies}, "v2 ran no step of the v1 run"
    assert await ledger.fetchval("SELECT version FROM task WHERE name = 'fresh'") == "v2"


async def test_a_poison_workflow_is_failed_after_max_recoveries(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    run = await jobs.poison.enqueue(db, "poison", None)
    deaths = 0

    async def failed() -> bool:
        return bool(await ledger.fetchval("SELECT status = 'failed' FROM task WHERE name = 'poison'"))

    while not await failed():
        proc = await spawn_executor(dsn, schema, "--only", "jobs.poison", "--max-recoveries", "2")

        async def died_or_failed(proc: asyncio.subprocess.Process = proc) -> bool:
            return proc.returncode is not None or await failed()

        await until(died_or_failed, "the executor died or the run was failed", timeout=30)
        if proc.returncode is None:
            await stop(proc)
        else:
            assert proc.returncode == -signal.SIGKILL
            deaths += 1
        assert deaths <= 5, "the poison run was never failed"
    with pytest.raises(durable.WorkflowFailed) as caught:
        await run.result(timeout=1)
    assert caught.value.type == "TooManyRecoveries" and "max_recoveries=2" in caught.value.message
    assert deaths == 3, "it ran once, and was recovered twice"


async def test_a_crashing_run_is_failed_alone_and_its_neighbour_completes(
    dsn: str, schema: str, db: durable.Db, ledger: asyncpg.Connection
) -> None:
    await ledger.execute("CREATE TABLE gate ()")
    steady = await jobs.steady.enqueue(db, "steady", None)
    crasher = await jobs.crasher.enqueue(db, "crasher", None)
    deaths = 0

    async def ended() -> bool:
        return bool(await ledger.fetchval(
            "SELECT count(*) = 2 FROM task WHERE name IN ('steady', 'crasher') AND status IN ('completed', 'failed')"
        ))

    while not await ended():
        proc = await spawn_executor(dsn, schema, "--only", "jobs.steady,jobs.crasher", "--max-recoveries", "1")

        async def died_or_ended(proc: asyncio.subprocess.Process = proc) -> bool:
            return proc.returncode is not None or await ended()

        await until(died_or_ended, "the executor died or both runs ended", timeout=30)
        if proc.returncode is None:
            await stop(proc)
        else:
            assert proc.returncode == -signal.SIGKILL
            deaths += 1
            if deaths == 1:  # it died with the healthy run in its step: that one may finish now
                await ledger.execute("INSERT INTO gate DEFAULT VALUES")
        assert deaths <= 5, "the crashing run was never failed"
    assert await steady.result(timeout=1) == "steady"
    info = await durable.get(db, "steady")
    assert info.recoveries == 0, "the healthy run was never charged for its neighbour's crash"
    with pytest.raises(durable.WorkflowFailed) as caught:
        await crasher.result(timeout=1)
    assert caught.value.type == "TooManyRecoveries" and "max_recoveries=1" in caught.value.message
    # Once with its neighbour (charged to nobody), then twice alone (charged).
    assert deaths == 3
    assert (await durable.get(db, "crasher")).recoveries == 2
