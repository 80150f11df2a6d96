"""A holder whose process has certainly ended is taken over at once; every
other holder whose session is gone gets its grace in full, counted from
when anyone first saw the session gone. Real processes, killed or stopped."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

import durable
from _programs import line, spawn
from _waits import until
from durable import Ctx

# Long enough that a takeover that waited it out cannot pass for a prompt one.
LONG_GRACE = 30.0
# Short enough for a test that waits it out.
SHORT_GRACE = 2.0
# What the server's clock may be read ahead of an observation made around the same moment.
CLOCK_SLACK = datetime.timedelta(seconds=0.1)


@pytest.fixture
async def ledger(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE ledger (step int NOT NULL, pid int NOT NULL)")


async def holder_of_w(dsn: str, schema: str, grace: float) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process holding workflow ``w``, paused inside a step's body."""
    holder = await spawn("steady.py", dsn, schema, "w", "10", "--pause-at", "3", "--session-grace", str(grace))
    try:
        assert await line(holder) == "started"
        assert await line(holder) == "paused"
        yield holder
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


@pytest.fixture
async def long_grace_holder(dsn: str, schema: str, ledger: None) -> AsyncIterator[asyncio.subprocess.Process]:
    async for holder in holder_of_w(dsn, schema, LONG_GRACE):
        yield holder


@pytest.fixture
async def short_grace_holder(dsn: str, schema: str, ledger: None) -> AsyncIterator[asyncio.subprocess.Process]:
    async for holder in holder_of_w(dsn, schema, SHORT_GRACE):
        yield holder


async def session_of_w(pg: asyncpg.Connection) -> tuple[str, int]:
    """The owner holding ``w`` and the pid of its liveness session."""
    row = await pg.fetchrow(
        "SELECT o.id::text AS owner, o.backend_pid FROM task AS t JOIN owner AS o ON o.id = t.owner_id WHERE t.name = 'w'"
    )
    assert row is not None
    return row["owner"], row["backend_pid"]


async def session_gone(pg: asyncpg.Connection, backend_pid: int) -> None:
    """Until the server has seen that session end."""

    async def gone() -> bool:
        return bool(await pg.fetchval("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", backend_pid))

    await until(gone, f"session {backend_pid} is gone")


async def killed(holder: asyncio.subprocess.Process, pg: asyncpg.Connection) -> tuple[str, datetime.datetime]:
    """SIGKILLs the holder of ``w`` (reaped, as a supervisor does), until its
    session is gone; its owner, and the server's time just before the kill."""
    owner, backend_pid = await session_of_w(pg)
    before: datetime.datetime = await pg.fetchval("SELECT clock_timestamp()")
    holder.kill()
    await holder.wait()
    await session_gone(pg, backend_pid)
    return owner, before


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[22 - 3])


async def taken_over(db: durable.Db, pg: asyncpg.Connection) -> tuple[float, datetime.datetime]:
    """Takes ``w`` over; how long the start took, and the server's time of the claim."""
    started = time.monotonic()
    ctx = await Ctx.start(db, "w")
    took = time.monotonic() - started
    assert (ctx.created, ctx.attempt) == (False, 2)
    claimed_at: datetime.datetime = await pg.fetchval("SELECT updated_at FROM task WHERE name = 'w'")
    return took, claimed_at


async def test_the_owner_row_records_which_process_it_is(
    long_grace_holder: asyncio.subprocess.Process, pg: asyncpg.Connection
) -> None:
    owner, _ = await session_of_w(pg)
    row = await pg.fetchrow("SELECT boot_id, pid_namespace, pid, process_start FROM owner WHERE id = $1::uuid", owner)
    assert row is not None
    with open("/proc/sys/kernel/random/boot_id") as boot_id:
        assert row["boot_id"] == boot_id.read().strip()
    assert row["pid_namespace"].startswith(os.readlink("/proc/self/ns/pid"))
    assert row["pid"] == long_grace_holder.pid
    assert row["process_start"] == start_time(long_grace_holder.pid)


async def test_a_killed_holder_on_this_machine_is_taken_over_without_waiting_its_grace(
    long_grace_holder: asyncio.subprocess.Process, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await killed(long_grace_holder, pg)
    took, _ = await taken_over(db, pg)
    assert took < LONG_GRACE, f"the takeover waited out the grace of a process that had ended ({took:.1f} s)"


async def test_a_program_started_after_a_crash_frees_what_its_predecessor_held_as_it_starts(
    dsn: str, schema: str, long_grace_holder: asyncio.subprocess.Process, pg: asyncpg.Connection
) -> None:
    owner, _ = await killed(long_grace_holder, pg)
    restarted = await durable.init(dsn, schema=schema)
    try:
        # Before it looks at any workflow: to executors' recovery passes too.
        grace_over = "SELECT session_lost_at <= now() - session_grace FROM owner WHERE id = $1::uuid"
        assert await pg.fetchval(grace_over, owner), "the ended predecessor was left its grace"
    finally:
        await restarted.close()


async def test_a_pid_taken_by_another_process_counts_as_gone(
    long_grace_holder: asyncio.subprocess.Process, db: durable.Db, pg: asyncpg.Connection
) -> None:
    owner, _ = await killed(long_grace_holder, pg)
    # As if the kernel had given the dead holder's pid to a live process
    # (this one), which started at another time.
    recorded = await pg.fetchval("SELECT process_start FROM owner WHERE id = $1::uuid", owner)
    assert recorded != start_time(os.getpid())
    await pg.execute("UPDATE owner SET pid = $2 WHERE id = $1::uuid", owner, os.getpid())
    took, _ = await taken_over(db, pg)
    assert took < LONG_GRACE, f"a reused pid kept a dead holder alive for its grace ({took:.1f} s)"


async def test_a_holder_on_another_machine_gets_its_grace(
    short_grace_holder: asyncio.subprocess.Process, db: durable.Db, pg: asyncpg.Connection
) -> None:
    owner, before_kill = await killed(short_grace_holder, pg)
    await pg.execute("UPDATE owner SET boot_id = 'another machine' WHERE id = $1::uuid", owner)
    _, claimed_at = await taken_over(db, pg)
    assert claimed_at >= before_kill + datetime.timedelta(seconds=SHORT_GRACE) - CLOCK_SLACK, (
        "a process this machine cannot see was taken for ended"
    )


async def test_a_live_holder_whose_session_is_cut_gets_its_grace_in_full(
    short_grace_holder: asyncio.subprocess.Process, db: durable.Db, pg: asyncpg.Connection
) -> None:
    # Stopped, the holder lives but cannot get a new session: its pid and
    # start time are its own, so nothing proves it gone.
    owner, backend_pid = await session_of_w(pg)
    short_grace_holder.send_signal(signal.SIGSTOP)
    try:
        cut_at: datetime.datetime = await pg.fetchval("SELECT clock_timestamp()")
        assert await pg.fetchval("SELECT pg_terminate_backend($1)", backend_pid)
        await session_gone(pg, backend_pid)
        _, claimed_at = await taken_over(db, pg)
        assert claimed_at >= cut_at + datetime.timedelta(seconds=SHORT_GRACE) - CLOCK_SLACK, (
            "a live holder was taken for ended"
        )
        assert short_grace_holder.returncode is None
    finally:
        short_grace_holder.send_signal(signal.SIGCONT)


async def test_a_heartbeat_starts_the_grace_of_a_vanished_session(
    dsn: str, schema: str, short_grace_holder: asyncio.subprocess.Process, db: durable.Db, pg: asyncpg.Connection
) -> None:
    # The holder ran elsewhere (nothing here can prove it ended); nobody
    # tries to take its workflow over. A live process's heartbeat (every
    # third of its lease) sees its session gone and marks when.
    owner, backend_pid = await session_of_w(pg)
    await pg.execute("UPDATE owner SET boot_id = 'another machine' WHERE id = $1::uuid", owner)
    watcher = await durable.init(dsn, schema=schema, lease=1)
    try:
        before_kill: datetime.datetime = await pg.fetchval("SELECT clock_timestamp()")
        short_grace_holder.kill()
        await short_grace_holder.wait()
        await session_gone(pg, backend_pid)

        async def marked() -> bool:
            return bool(await pg.fetchval("SELECT session_lost_at IS NOT NULL FROM owner WHERE id = $1::uuid", owner))

        await until(marked, "a heartbeat marked the session gone")
        assert await pg.fetchval("SELECT owner_id::text FROM task WHERE name = 'w'") == owner, "nobody claimed it"
        lost_at = await pg.fetchval("SELECT session_lost_at FROM owner WHERE id = $1::uuid", owner)
        assert lost_at >= before_kill - CLOCK_SLACK

        # A program that comes once the grace has run finds nothing left to wait.
        async def grace_over() -> bool:
            return bool(await pg.fetchval(
                "SELECT session_lost_at + session_grace < now() FROM owner WHERE id = $1::uuid", owner
            ))

        await until(grace_over, "the grace has run")
        took, _ = await taken_over(db, pg)
        assert took < SHORT_GRACE, f"the takeover waited a grace that had already run ({took:.1f} s)"
    finally:
        await watcher.close()
