"""Ownership: leases, fencing, takeovers, with real processes where it matters."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
import time

import asyncpg
import pytest

import durable
from durable import Ctx

from _programs import PROGRAMS, line, spawn
from _waits import until, until_lock_waits


async def test_a_workflow_held_by_a_live_owner_is_busy(db: durable.Db, other_db: durable.Db) -> None:
    held = await Ctx.start(db, "w")
    with pytest.raises(durable.WorkflowBusy, match="another live process"):
        await Ctx.start(other_db, "w")
    assert await held.step("s", lambda: 1) == 1, "the holder is undisturbed"


async def test_wait_waits_for_the_holder_to_finish(db: durable.Db, other_db: durable.Db) -> None:
    held = await Ctx.start(db, "w")

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        await held.complete("done by the first")

    finishing = asyncio.ensure_future(finish_soon())
    started = time.monotonic()
    waited = await Ctx.start(other_db, "w", wait=10)
    await finishing
    assert time.monotonic() - started >= 0.25
    assert (waited.status, waited.output) == ("completed", "done by the first")


async def test_a_closed_owner_gives_its_workflows_up_at_once(db: durable.Db, other_db: durable.Db) -> None:
    held = await Ctx.start(db, "w")
    await held.step("s", lambda: "saved")
    await db.close()
    taken = await Ctx.start(other_db, "w")
    assert await taken.step("s", lambda: "not run") == "saved"


async def test_a_closed_owner_stays_released(dsn: str, schema: str, db: durable.Db) -> None:
    short = await durable.init(dsn, schema=schema, lease=1.0)
    await Ctx.start(short, "w")
    await short.close()
    await asyncio.sleep(1.0)  # three heartbeat periods: none may renew the released lease
    taken = await Ctx.start(db, "w")
    assert taken.attempt == 2


async def test_an_expired_holder_is_taken_over_and_fenced_out(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    stale = await Ctx.start(db, "w")
    await stale.step("a", lambda: 1)
    # A hung process: its session lives, its heartbeat stopped long ago.
    await pg.execute("UPDATE owner SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", db.owner_id)
    fresh = await Ctx.start(other_db, "w")
    assert await fresh.step("a", lambda: 2) == 1
    await fresh.step("b", lambda: "fresh")

    calls: list[str] = []

    def body(name: str) -> str:
        calls.append(name)
        return name

    with pytest.raises(durable.LeaseLost, match="taken over elsewhere"):
        await stale.step("b", lambda: body("stale b"))
    assert calls == ["stale b"], "the body ran (its marker is not awaited), its result was refused"
    with pytest.raises(durable.LeaseLost):
        await stale.step("c", lambda: body("stale c"))
    assert calls == ["stale b"], "once the lease is known lost, no further body runs"
    with pytest.raises(durable.LeaseLost):
        await stale.complete("stale")

    await fresh.complete("fresh result")
    rows = {r["name"]: r for r in await pg.fetch("SELECT name, status, output FROM task WHERE kind = 'step'")}
    assert {n: json.loads(r["output"]) for n, r in rows.items()} == {"a": 1, "b": "fresh"}
    root = await pg.fetchrow("SELECT status, output, owner_id::text FROM task WHERE parent_id IS NULL")
    assert root is not None
    assert (root["status"], json.loads(root["output"]), root["owner_id"]) == (
        "completed",
        "fresh result",
        other_db.owner_id,
    )


async def test_a_workflow_function_stops_on_lease_lost(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    ran: list[int] = []
    new_holder: list[Ctx] = []

    def body(i: int) -> int:
        ran.append(i)
        return i

    @durable.workflow
    async def loop(ctx: Ctx, n: int) -> int:
        for i in range(n):
            await ctx.step(f"s{i}", functools.partial(body, i))
            if i == 1:
                await pg.execute("UPDATE owner SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", db.owner_id)
                new_holder.append(await Ctx.start(other_db, "loop", n))
        return n

    with pytest.raises(durable.LeaseLost):
        await loop.run(db, "loop", 5)
    assert ran == [0, 1, 2], "step 2's result was refused and the workflow stopped there"
    status = await pg.fetchval("SELECT status FROM task WHERE name = 'loop'")
    assert status == "running", "the new holder's run is untouched (not marked failed)"


# A bound on wall-clock time (a busy machine starts an interpreter slowly): the
# full tier. The takeover itself is fast-tested in test_ownership.py
# (a killed holder is taken over at the first claim) and test_crash.py.
@pytest.mark.timing
async def test_a_killed_program_is_resumed_and_running_within_one_and_a_half_seconds(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE calls (step text NOT NULL, pid int NOT NULL)")
    first = await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAMS / "shards.py"), dsn, schema, "--block-at", "2", stdout=asyncio.subprocess.PIPE
    )
    while not (await line(first)).startswith("blocked"):
        pass
    started = time.monotonic()
    first.send_signal(signal.SIGKILL)
    await first.wait()
    second = await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAMS / "shards.py"), dsn, schema, stdout=asyncio.subprocess.PIPE
    )
    assert await line(second) == "attempt 2"
    resumed_after = time.monotonic() - started
    assert await line(second) == "done 150"
    assert await second.wait() == 0
    # No lease timeout (30 s) was waited out: the dead owner's session was gone,
    # and only its grace (0.5 s) was given; interpreter start included.
    print(f"\nSIGKILL to resumed and running in a new process: {resumed_after:.2f} s")
    assert resumed_after <= 1.5, f"resumed after {resumed_after:.2f} s"


async def test_two_processes_racing_for_the_same_workflows(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE ledger (workflow text, step int, pid int)")
    racers = [await spawn("racer.py", dsn, schema) for _ in range(2)]
    for racer in racers:
        assert await line(racer) == "ready"
    rounds = 50
    outcomes: dict[str, list[str]] = {}
    for i in range(rounds):
        name = f"race-{i}"
        for racer in racers:  # both get the name at the same moment
            assert racer.stdin is not None
            racer.stdin.write(f"{name}\n".encode())
        for racer in racers:
            assert racer.stdin is not None
            await racer.stdin.drain()
        for racer in racers:
            verdict, got = (await line(racer)).split()
            assert got == name
            outcomes.setdefault(name, []).append(verdict)
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.close()
        assert await racer.wait() == 0
    for name, verdicts in outcomes.items():
        assert sorted(verdicts) in (["busy", "ran"], ["ran", "replayed"]), (name, verdicts)
    assert sum(v.count("busy") for v in outcomes.values()) > 0, "the race never overlapped"
    # Exactly one process ran each step of each workflow.
    counts = await pg.fetch("SELECT workflow, step, count(*) AS n, count(DISTINCT pid) AS pids FROM ledger GROUP BY 1, 2")
    assert len(counts) == rounds * 3
    assert all((r["n"], r["pids"]) == (1, 1) for r in counts)
    assert await pg.fetchval("SELECT count(*) FROM task WHERE parent_id IS NULL AND status = 'completed'") == rounds


async def test_a_paused_holder_is_fenced_out_after_a_takeover(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    holder = await spawn("holder.py", dsn, schema)
    assert await line(holder) == "in b"
    holder.send_signal(signal.SIGSTOP)
    try:
        # The holder's 1 s lease runs out; its session lives on.
        owner = await pg.fetchval("SELECT owner_id::text FROM task WHERE name = 'stale'")

        async def expired() -> bool:
            return bool(await pg.fetchval("SELECT expires_at < now() FROM owner WHERE id = $1::uuid", owner))

        await until(expired, "the paused holder's lease ran out")
        taken = await Ctx.start(db, "stale")
        assert await taken.step("a", lambda: "not run") == "a"
        await taken.step("b", lambda: "from the new holder")
        await taken.step("c", lambda: "c by the new holder")
        await taken.complete("new holder's result")
    finally:
        holder.send_signal(signal.SIGCONT)
    assert await line(holder) == "lease lost; c ran 0 times"
    assert await holder.wait() == 3
    rows = {r["name"]: json.loads(r["output"]) for r in await pg.fetch("SELECT name, output FROM task WHERE kind = 'step'")}
    assert rows == {"a": "a", "b": "from the new holder", "c": "c by the new holder"}
    root = await pg.fetchrow("SELECT status, output FROM task WHERE name = 'stale'")
    assert root is not None
    assert (root["status"], json.loads(root["output"])) == ("completed", "new holder's result")


async def test_the_heartbeat_keeps_an_idle_holder_alive(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    short = await durable.init(dsn, schema=schema, lease=1.0)
    try:
        held = await Ctx.start(short, "idle")
        first_expiry = await pg.fetchval("SELECT expires_at FROM owner WHERE id = $1::uuid", short.owner_id)

        async def renewed_past_the_first_lease() -> bool:
            return bool(
                await pg.fetchval(
                    "SELECT now() > $2 AND expires_at > now() FROM owner WHERE id = $1::uuid",
                    short.owner_id,
                    first_expiry,
                )
            )

        # With no work done, heartbeats alone carry the lease past its first end.
        await until(renewed_past_the_first_lease, "the first lease ran out while the heartbeat renewed it")
        with pytest.raises(durable.WorkflowBusy):
            await Ctx.start(db, "idle")
        assert held.status == "running"
    finally:
        await short.close()


async def test_a_takeover_waits_for_a_write_in_flight(
    dsn: str, schema: str, db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    first = await Ctx.start(db, "w")
    with pytest.raises(ZeroDivisionError):
        await first.step("s", lambda: 1 / 0)  # leaves a row for step s
    await first.release()
    holder = await Ctx.start(db, "w")  # a new run, to run s again
    blocker = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        # Hold the step's row: the holder's next write of it passes its fence,
        # then waits here, in flight.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT 1 FROM task WHERE name = 's' FOR UPDATE")
        writing = asyncio.ensure_future(holder.step("s", lambda: "from the holder"))
        await until_lock_waits(pg, 1)  # the holder's write passed its fence and waits on the row
        await pg.execute("UPDATE owner SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", db.owner_id)
        taking = asyncio.ensure_future(Ctx.start(other_db, "w"))
        await until_lock_waits(pg, 2)  # the takeover waits too: on the write's share lock
        assert not writing.done()
        assert not taking.done(), "the takeover waits for the write that passed its fence"
        await lock.rollback()
    finally:
        await blocker.close()
    # The marker that was in flight committed before the takeover. The result
    # came after it and races the takeover: it lands before the takeover (and
    # the new holder replays it) or it is refused; never after.
    try:
        landed = await writing == "from the holder"
    except durable.LeaseLost:
        landed = False
    taken = await taking
    expected = "from the holder" if landed else "run again by the new holder"
    assert await taken.step("s", lambda: "run again by the new holder") == expected
    row = await pg.fetchrow("SELECT status, attempt, output FROM task WHERE name = 's'")
    assert row is not None
    assert (row["status"], json.loads(row["output"])) == ("completed", expected)
