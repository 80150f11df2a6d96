"""ctx.transaction: the user's writes and the step's checkpoint in one Postgres transaction."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

import durable
from _programs import line, spawn
from _waits import until
from durable import Ctx, Transaction


@pytest.fixture
async def shipments(pg: asyncpg.Connection, schema: str) -> str:
    """A user table in the test's schema; its qualified name."""
    await pg.execute("CREATE TABLE shipments (id serial PRIMARY KEY, order_id int NOT NULL UNIQUE)")
    return f"{schema}.shipments"


async def step_row(pg: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pg.fetchrow(
        "SELECT status, attempt, output, error FROM task WHERE kind = 'step' AND name = $1", name
    )
    return row


async def count(pg: asyncpg.Connection) -> int:
    n: int = await pg.fetchval("SELECT count(*) FROM shipments")
    return n


async def test_the_writes_and_the_result_commit_together_and_a_replay_does_not_call_fn(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    calls: list[int] = []

    async def record(tx: Transaction) -> dict[str, Any]:
        calls.append(1)
        inserted = await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 7)
        # The transaction sees its own write; nobody else does yet.
        assert await count(pg) == 0
        row = await tx.fetchrow(f"SELECT id, order_id FROM {shipments} WHERE order_id = $1", 7)
        assert row is not None
        return {"inserted": inserted, "order": row["order_id"]}

    ctx = await Ctx.start(db, "order")
    assert await ctx.transaction("record", record) == {"inserted": 1, "order": 7}
    assert await count(pg) == 1
    saved = await step_row(pg, "record")
    assert saved is not None
    assert (saved["status"], saved["attempt"], json.loads(saved["output"])) == (
        "completed",
        1,
        {"inserted": 1, "order": 7},
    )
    with pytest.raises(durable.DuplicateStep):
        await ctx.transaction("record", record)
    await ctx.release()

    again = await Ctx.start(db, "order")
    assert await again.transaction("record", record) == {"inserted": 1, "order": 7}
    assert calls == [1], "the replay returned the saved result without calling fn"
    assert await count(pg) == 1
    await again.complete()


async def test_a_sync_fn_returning_an_awaitable_is_awaited(db: durable.Db, pg: asyncpg.Connection, shipments: str) -> None:
    ctx = await Ctx.start(db, "order")
    result = await ctx.transaction("record", lambda tx: tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1))
    assert result == 1
    assert await count(pg) == 1


async def test_fn_raising_rolls_back_records_the_failure_and_propagates(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    async def record(tx: Transaction) -> None:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)
        raise RuntimeError("card declined")

    ctx = await Ctx.start(db, "order")
    with pytest.raises(RuntimeError, match="card declined"):
        await ctx.transaction("record", record)
    assert await count(pg) == 0, "the insert was rolled back"
    saved = await step_row(pg, "record")
    assert saved is not None
    assert (saved["status"], saved["attempt"]) == ("failed", 1)
    assert json.loads(saved["error"])["message"] == "card declined"


async def test_a_failed_attempt_is_retried_in_a_new_transaction(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    attempts: list[int] = []

    async def record(tx: Transaction) -> int:
        attempts.append(durable.attempt())
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", len(attempts))
        if len(attempts) == 1:
            raise ConnectionError("flaky")
        return len(attempts)

    ctx = await Ctx.start(db, "order")
    assert await ctx.transaction("record", record, retries=2, backoff=durable.Backoff(initial=0.01)) == 2
    assert attempts == [1, 2]
    assert [r["order_id"] for r in await pg.fetch("SELECT order_id FROM shipments")] == [2]
    saved = await step_row(pg, "record")
    assert saved is not None
    assert (saved["status"], saved["attempt"], saved["error"]) == ("completed", 2, None)


async def test_a_failing_statement_is_a_database_error_and_nothing_lands(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    async def record(tx: Transaction) -> None:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)

    ctx = await Ctx.start(db, "order")
    with pytest.raises(durable.DatabaseError) as caught:
        await ctx.transaction("record", record)
    assert caught.value.sqlstate == "23505"
    assert await count(pg) == 0
    saved = await step_row(pg, "record")
    assert saved is not None and saved["status"] == "failed"


async def test_a_swallowed_statement_error_still_rolls_back(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    async def record(tx: Transaction) -> str:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)
        try:
            await tx.execute("SELECT 1/0")
        except durable.DatabaseError:
            pass
        return "looks fine"

    ctx = await Ctx.start(db, "order")
    with pytest.raises(durable.DatabaseError, match="failed earlier"):
        await ctx.transaction("record", record)
    assert await count(pg) == 0
    saved = await step_row(pg, "record")
    assert saved is not None and saved["status"] == "failed"


async def test_a_lost_lease_rolls_the_writes_back(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    stale = await Ctx.start(db, "order")
    taken: list[Ctx] = []

    async def record(tx: Transaction) -> str:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)
        # Meanwhile the lease runs out and another holder takes the workflow.
        await pg.execute("UPDATE owner SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", db.owner_id)
        taken.append(await Ctx.start(other_db, "order"))
        return "stale"

    with pytest.raises(durable.LeaseLost):
        await stale.transaction("record", record)
    assert await count(pg) == 0, "the fence refused the checkpoint, so the user's writes rolled back too"
    saved = await step_row(pg, "record")
    assert saved is None or saved["status"] != "completed"
    with pytest.raises(durable.LeaseLost):
        await stale.transaction("next", record)

    fresh = taken[0]
    assert await fresh.transaction("record", lambda tx: tx.execute(f"INSERT INTO {shipments} (order_id) VALUES (2)")) == 1
    assert [r["order_id"] for r in await pg.fetch("SELECT order_id FROM shipments")] == [2]


async def test_a_commit_refused_by_the_server_is_a_failed_attempt_and_retried(
    db: durable.Db, pg: asyncpg.Connection, schema: str, shipments: str
) -> None:
    # A deferred check: it runs at COMMIT, after the step's row was written in the transaction.
    await pg.execute(
        f"""CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'order 13 refused at commit'; END $$;
            CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON shipments DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.order_id = 13) EXECUTE FUNCTION {schema}.refuse()"""
    )

    async def record(tx: Transaction) -> int:
        order = 13 if durable.attempt() == 1 else 14
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", order)
        return order

    ctx = await Ctx.start(db, "order")
    assert await ctx.transaction("record", record, retries=1, backoff=durable.Backoff(initial=0.01)) == 14
    assert [r["order_id"] for r in await pg.fetch("SELECT order_id FROM shipments")] == [14]
    saved = await step_row(pg, "record")
    assert saved is not None and (saved["status"], saved["attempt"]) == ("completed", 2)
    with pytest.raises(durable.DatabaseError, match="refused at commit") as caught:
        await ctx.transaction("again", lambda tx: tx.execute(f"INSERT INTO {shipments} (order_id) VALUES (13)"))
    assert caught.value.sqlstate == "P0001"
    failed = await step_row(pg, "again")
    assert failed is not None and failed["status"] == "failed"


async def test_a_commit_cut_off_midway_records_nothing_and_the_next_run_finds_out(
    db: durable.Db, pg: asyncpg.Connection, schema: str, shipments: str
) -> None:
    # A deferred trigger that sleeps: the transaction is inside COMMIT while it runs.
    await pg.execute(
        f"""CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON shipments DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.order_id = 666) EXECUTE FUNCTION {schema}.slow()"""
    )
    calls: list[int] = []

    async def record(tx: Transaction) -> str:
        calls.append(durable.attempt())
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 666 if len(calls) == 1 else 1)
        return "recorded"

    ctx = await Ctx.start(db, "order")
    committing = asyncio.create_task(ctx.transaction("record", record))

    async def in_commit() -> bool:
        pid: int | None = await pg.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT' AND wait_event = 'PgSleep'"
        )
        return pid is not None and await pg.fetchval("SELECT pg_terminate_backend($1)", pid)

    await until(in_commit, "the commit runs, and its session is cut off")
    with pytest.raises(durable.DatabaseError, match="committing transaction step"):
        await committing
    saved = await step_row(pg, "record")
    assert saved is not None and saved["status"] == "running", "no failure was recorded over an unknown outcome"
    with pytest.raises(durable.DatabaseError):
        await ctx.step("next", lambda: pytest.fail("the handle does no more work"))
    await ctx.release()

    again = await Ctx.start(db, "order")
    assert await again.transaction("record", record) == "recorded"
    assert calls == [1, 2], "it had not committed, so the next run ran it again"
    assert [r["order_id"] for r in await pg.fetch("SELECT order_id FROM shipments")] == [1]


async def test_a_finished_workflow_replays_and_runs_no_new_transaction(
    db: durable.Db, pg: asyncpg.Connection, shipments: str
) -> None:
    ctx = await Ctx.start(db, "order")
    await ctx.transaction("record", lambda tx: tx.execute(f"INSERT INTO {shipments} (order_id) VALUES (1)"))
    await ctx.complete("ok")
    done = await Ctx.start(db, "order")
    assert await done.transaction("record", lambda tx: pytest.fail("replayed steps do not run")) == 1
    with pytest.raises(durable.WorkflowFinished):
        await done.transaction("new", lambda tx: pytest.fail("a finished workflow runs nothing new"))
    assert await count(pg) == 1


async def test_not_inside_a_step_body(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "order")

    async def body() -> None:
        await ctx.transaction("inner", lambda tx: None)

    with pytest.raises(durable.DurableError, match="inside the body of a step"):
        await ctx.step("outer", body)


async def test_a_cancelled_transaction_rolls_back(db: durable.Db, pg: asyncpg.Connection, shipments: str) -> None:
    inserted = asyncio.Event()

    async def record(tx: Transaction) -> None:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", 1)
        inserted.set()
        await asyncio.Event().wait()  # until cancelled

    ctx = await Ctx.start(db, "order")
    task = asyncio.create_task(ctx.transaction("record", record))
    await inserted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def rolled_back() -> bool:
        held: int = await pg.fetchval("SELECT count(*) FROM pg_locks WHERE relation = 'shipments'::regclass")
        return held == 0

    await until(rolled_back, "the cancelled transaction's connection is closed")
    assert await count(pg) == 0
    saved = await step_row(pg, "record")
    assert saved is not None and saved["status"] == "running", "an interrupted attempt, to run again"
    # The handle works on; the next transaction gets a clean connection from the pool.
    assert await ctx.transaction("record#2", lambda tx: tx.execute(f"INSERT INTO {shipments} (order_id) VALUES (2)")) == 1
    assert await count(pg) == 1


async def test_parameters_and_results_round_trip(db: durable.Db, pg: asyncpg.Connection, schema: str) -> None:
    await pg.execute(
        """CREATE TABLE kinds (
               b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, t text, v varchar(10),
               j json, jb jsonb, n numeric, ts timestamp, tz timestamptz, d date, u uuid, by bytea)"""
    )
    values: dict[str, Any] = {
        "b": True,
        "i2": -3,
        "i4": 2**31 - 1,
        "i8": -(2**63),
        "f4": 0.5,
        "f8": 1.0000000000000002,
        "t": "héllo\n'\"",
        "v": "short",
        "j": [1, "two", None],
        "jb": {"nested": {"list": [1.5, True]}},
        "n": Decimal("-12345678901234567890.000120"),
        "ts": datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
        "tz": datetime.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
        "d": datetime.date(1970, 1, 1),
        "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "by": b"\x00\xffbytes",
    }
    columns = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))

    async def roundtrip(tx: Transaction) -> str:
        assert await tx.execute(f"INSERT INTO {schema}.kinds ({columns}) VALUES ({placeholders})", *values.values()) == 1
        assert await tx.execute(f"INSERT INTO {schema}.kinds ({columns}) VALUES ({placeholders})", *[None] * len(values)) == 1
        rows = await tx.fetch(f"SELECT {columns} FROM {schema}.kinds ORDER BY b NULLS LAST")
        assert rows[0] == values
        assert rows[1] == dict.fromkeys(values)
        assert type(rows[0]["n"]) is Decimal and type(rows[0]["u"]) is uuid.UUID
        assert rows[0]["tz"].utcoffset() == datetime.timedelta(0), "timestamptz comes back in UTC"
        # Scalars into numeric and float columns, JSON scalars into jsonb, rows as dicts.
        row = await tx.fetchrow("SELECT $1::numeric AS a, $2::numeric AS b, $3::float8 AS c, $4::jsonb AS d", 5, 2.5, 7, "s")
        assert row == {"a": Decimal(5), "b": Decimal("2.5"), "c": 7.0, "d": "s"}
        assert await tx.fetchval(f"SELECT count(*) FROM {schema}.kinds WHERE i4 = $1", 2**31 - 1) == 1
        for text in ["0", "0.000012", "-1.230", "123456789.000000001", "1E+20", "-0.5", "NaN", "Infinity", "-Infinity"]:
            back = await tx.fetchval("SELECT $1::numeric", Decimal(text))
            assert str(back) == str(await tx.fetchval("SELECT ($1::numeric)::text", Decimal(text))), text
            assert back == Decimal(text) or (back.is_nan() and Decimal(text).is_nan())
        assert await tx.fetchval("SELECT 1 WHERE false") is None
        # The user's statements are planned as Postgres would by default, not as durable's own.
        settings = await tx.fetchrow(
            "SELECT current_setting('enable_seqscan') AS seqscan, current_setting('plan_cache_mode') AS plans"
        )
        assert settings == {"seqscan": "on", "plans": "auto"}
        assert await tx.fetchrow("SELECT 1 WHERE false") is None
        # A str goes to any other type as its text form, parsed by the server.
        assert await tx.fetchval("SELECT $1::inet::text", "10.0.0.1") == "10.0.0.1/32"
        return "ok"

    ctx = await Ctx.start(db, "types")
    assert await ctx.transaction("roundtrip", roundtrip) == "ok"
    assert await pg.fetchval("SELECT count(*) FROM kinds") == 2


@pytest.mark.parametrize(
    ("sql", "args", "error", "match"),
    [
        ("SELECT $1::text", (5,), TypeError, r"parameter \$1 is a Python int.*type text"),
        ("SELECT $1::int4, $2::int4", (1, "2.5"), durable.DatabaseError, "invalid input syntax"),
        ("SELECT $1::int4", ({1, 2},), TypeError, r"parameter \$1 is a Python set"),
        ("SELECT $1::int2", (2**15,), ValueError, "out of range for type int2"),
        ("SELECT $1::timestamptz", (datetime.datetime(2024, 1, 1),), ValueError, "naive datetime"),
        ("SELECT $1::text[]", (["a"],), TypeError, r"json or jsonb parameters.*\$1::jsonb"),
        ("SELECT $1::jsonb", ({1, 2},), durable.NotJson, r"parameter \$1"),
        ("SELECT $1::int4", (), TypeError, r"1 parameter\(s\).*0 argument\(s\)"),
        ("SELECT $1::bytea", ("text",), TypeError, "type bytea"),
        ("SELECT interval '1 day' AS span", (), durable.DatabaseError, r"does not convert values of type interval.*::text"),
    ],
)
async def test_an_unsupported_value_is_a_clear_error(
    db: durable.Db, pg: asyncpg.Connection, shipments: str, sql: str, args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    async def fn(tx: Transaction) -> None:
        await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES (1)")
        await tx.fetch(sql, *args)

    ctx = await Ctx.start(db, "types")
    with pytest.raises(error, match=match):
        await ctx.transaction("bad", fn)
    assert await count(pg) == 0


async def test_tx_is_unusable_after_the_step(db: durable.Db, shipments: str) -> None:
    kept: list[Transaction] = []

    def keep(tx: Transaction) -> None:
        kept.append(tx)

    ctx = await Ctx.start(db, "order")
    await ctx.transaction("record", keep)
    with pytest.raises(durable.DatabaseError, match="the transaction is over"):
        await kept[0].execute(f"INSERT INTO {shipments} (order_id) VALUES (1)")


async def test_killed_between_the_users_sql_and_the_commit_neither_lands(
    dsn: str, schema: str, pg: asyncpg.Connection, shipments: str
) -> None:
    first = await spawn("ledger.py", dsn, schema, "inside")
    assert await line(first) == "fn ran"
    assert await line(first) == "inserted"
    # The insert is done, in the open transaction; the step is marked running.
    assert await count(pg) == 0
    saved = await step_row(pg, "record")
    assert saved is not None and (saved["status"], saved["attempt"]) == ("running", 1)
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    async def backend_gone() -> bool:
        held: int = await pg.fetchval("SELECT count(*) FROM pg_locks WHERE relation = 'shipments'::regclass")
        return held == 0

    await until(backend_gone, "the killed process's transaction is gone")
    assert await count(pg) == 0, "the insert did not land"
    saved = await step_row(pg, "record")
    assert saved is not None and saved["status"] == "running", "nor did the step's result"

    second = await spawn("ledger.py", dsn, schema, "run")
    assert [await line(second) for _ in range(3)] == ["fn ran", "committed 1", "done"]
    assert await second.wait() == 0
    assert await count(pg) == 1
    saved = await step_row(pg, "record")
    assert saved is not None
    assert (saved["status"], saved["attempt"], json.loads(saved["output"])) == ("completed", 2, 1)


async def test_killed_after_the_commit_both_land_and_fn_is_not_rerun(
    dsn: str, schema: str, pg: asyncpg.Connection, shipments: str
) -> None:
    first = await spawn("ledger.py", dsn, schema, "after")
    assert [await line(first) for _ in range(2)] == ["fn ran", "committed 1"]
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    assert await count(pg) == 1
    saved = await step_row(pg, "record")
    assert saved is not None and (saved["status"], json.loads(saved["output"])) == ("completed", 1)

    second = await spawn("ledger.py", dsn, schema, "run")
    assert [await line(second) for _ in range(2)] == ["committed 1", "done"], "fn did not run again"
    assert await second.wait() == 0
    assert await count(pg) == 1, "exactly one row"


# -- the pool: transactions never starve the engine ------------------------------------------------


async def test_transactions_whose_fn_calls_durable_never_starve_the_engine(
    dsn: str, schema: str, pg: asyncpg.Connection, shipments: str
) -> None:
    small = await durable.init(dsn, schema=schema, max_connections=3, reconnect_timeout=5)
    try:
        await Ctx.start(small, "target")

        async def one(n: int) -> int:
            ctx = await Ctx.start(small, f"order-{n}")

            async def record(tx: Transaction) -> int:
                await tx.execute(f"INSERT INTO {shipments} (order_id) VALUES ($1)", n)
                assert (await durable.get(small, f"order-{n}")).status == "running"
                assert await durable.send(small, "target", "shipped", n)
                return n

            return await ctx.transaction("record", record)

        assert sorted(await asyncio.gather(*(one(n) for n in range(4)))) == [0, 1, 2, 3]
        assert await count(pg) == 4
    finally:
        await small.close()


async def test_a_transaction_waiting_for_its_share_of_the_pool_says_so(dsn: str, schema: str, db: durable.Db) -> None:
    small = await durable.init(dsn, schema=schema, max_connections=3, reconnect_timeout=1)
    try:
        first, second = await Ctx.start(small, "first"), await Ctx.start(small, "second")
        holding, done = asyncio.Event(), asyncio.Event()

        async def hold(tx: Transaction) -> None:
            holding.set()
            await done.wait()

        held = asyncio.ensure_future(first.transaction("hold", hold))
        await holding.wait()
        with pytest.raises(durable.DatabaseError) as caught:
            await second.transaction("wait", lambda tx: tx.execute("SELECT 1"))
        message = str(caught.value)
        assert "transaction step 'wait'" in message or 'transaction step "wait"' in message
        assert "max_connections=3" in message and "1 of durable's 3 connections" in message, message
        done.set()
        await held
        # Its share free again, the next transaction goes through.
        assert await second.transaction("wait#2", lambda tx: tx.execute("SELECT 1")) == 1
    finally:
        await small.close()


async def test_a_pool_too_small_for_transactions_is_a_config_error(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    tiny = await durable.init(dsn, schema=schema, max_connections=2)
    try:
        ctx = await Ctx.start(tiny, "order")
        with pytest.raises(durable.ConfigError, match="max_connections=3"):
            await ctx.transaction("record", lambda tx: tx.execute("SELECT 1"))
        assert await step_row(pg, "record") is None, "nothing written"
    finally:
        await tiny.close()


async def test_a_pool_in_use_past_the_reconnect_timeout_is_named_with_its_holders(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    small = await durable.init(dsn, schema=schema, max_connections=3, reconnect_timeout=1)
    try:
        ctx = await Ctx.start(small, "locked")
        await ctx.step("s", lambda: 1)  # the checkpoint writer has its connection
        async with pg.transaction():
            await pg.execute("SELECT 1 FROM task WHERE name = 'locked' FOR UPDATE")
            # Each cancel holds a connection while it waits for the lock; the
            # two free connections taken, the other four wait for one.
            outcomes = await asyncio.gather(*(durable.cancel(small, "locked") for _ in range(6)), return_exceptions=True)
        messages = [str(o) for o in outcomes if isinstance(o, durable.DatabaseError)]
        assert len(messages) == 6
        exhausted = [m for m in messages if "durable's pool" in m]
        assert len(exhausted) >= 2, messages  # at most two got a connection freed by a timed-out cancel
        assert "3 connections (max_connections=3)" in exhausted[0], exhausted[0]
        assert "checkpoint writer" in exhausted[0] and "transaction steps" in exhausted[0], exhausted[0]
    finally:
        await small.close()
