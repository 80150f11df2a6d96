"""No lost wake-up: receivers that suspend at every ``recv`` while messages
come at random moments, many of them just as the receiver suspends.

``DURABLE_WAKEUP_MESSAGES`` messages in all (default 600, a few seconds),
over runs of at most ``RUN_MESSAGES`` receives (so that no replay grows
long), ``RECEIVERS`` at a time; ``DURABLE_WAKEUP_SEED`` seeds the choice of
the moments of the sends. The message count and the wake-up latency (p50,
p99) are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import asyncpg
import pytest

import durable
from durable import Ctx

RECEIVERS = 4
RUN_MESSAGES = 150
MESSAGES = int(os.environ.get("DURABLE_WAKEUP_MESSAGES", str(RECEIVERS * RUN_MESSAGES)))
#: Seconds after which a message not received counts as lost.
LOST_AFTER = 10.0
#: The most a message may wait, from its send to its receipt, in seconds.
LATE = 1.0


class Received:
    """The highest sequence number each receiver run got so far (the
    receivers run in this process), and waits for one to come."""

    def __init__(self) -> None:
        self._got: dict[str, int] = {}
        self._waits: dict[str, tuple[int, asyncio.Future[None]]] = {}

    def note(self, run: str, seq: int) -> None:
        """``run`` received (or replayed) message ``seq``."""
        self._got[run] = max(seq, self._got.get(run, -1))
        wait = self._waits.get(run)
        if wait is not None and self._got[run] >= wait[0] and not wait[1].done():
            wait[1].set_result(None)

    async def reached(self, run: str, seq: int, timeout: float) -> bool:
        """Whether ``run`` got message ``seq`` within ``timeout`` seconds."""
        if self._got.get(run, -1) >= seq:
            return True
        future = asyncio.get_running_loop().create_future()
        self._waits[run] = (seq, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            del self._waits[run]
        return True


received = Received()


@durable.workflow(name="wakeups.receiver", queue="inbox")
async def receiver(ctx: Ctx, count: int) -> list[int]:
    """Receives ``count`` messages on topic "t", one ``recv`` after another."""
    got: list[int] = []
    for _ in range(count):
        seq: int = await ctx.recv("t")
        received.note(ctx.name, seq)
        got.append(seq)
    return got


async def lost(db: durable.Db, looks: asyncpg.Pool, run: str, seq: int) -> str:
    """Why message ``seq`` to ``run`` was not received: what the run and the message are now."""
    info = await durable.get(db, run)
    message = await looks.fetchrow(
        """SELECT m.received_at IS NOT NULL AS received FROM task_message AS m JOIN task AS t ON t.id = m.task_id
           WHERE t.name = $1 AND t.parent_id IS NULL AND m.value = to_jsonb($2::int)""",
        run,
        seq,
    )
    stored = "not stored" if message is None else "received" if message["received"] else "stored, not received"
    return (
        f"receiver {run!r} did not receive message {seq} within {LOST_AFTER:.0f} s of its send (the message is "
        f"{stored}): the run is {info.status}, run_at {info.run_at}, waiting for: {info.waiting_for}"
    )


async def feed(db: durable.Db, looks: asyncpg.Pool, run: str, count: int, rng: random.Random) -> None:
    """Queues the receiver ``run`` and sends it ``count`` messages, each
    carrying its sequence number, at random moments: mostly as soon as it
    received the one before (it is then going back to wait, suspending), or
    a few milliseconds later, sometimes once it has suspended, sometimes
    before it received the one before."""
    queued = await receiver.enqueue(db, run, count)
    for seq in range(count):
        if seq > 0 and rng.random() < 0.9:
            assert await received.reached(run, seq - 1, LOST_AFTER), await lost(db, looks, run, seq - 1)
        gap = rng.choice([0.0, 0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.003), rng.uniform(0.005, 0.03)])
        if gap:
            await asyncio.sleep(gap)
        await durable.send(db, run, "t", seq)
    assert await received.reached(run, count - 1, LOST_AFTER), await lost(db, looks, run, count - 1)
    assert await queued.result(timeout=LOST_AFTER) == list(range(count))


@pytest.mark.timeout(60 + MESSAGES / 50)
async def test_every_message_wakes_its_suspending_receiver_once_in_order_and_at_once(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    rng = random.Random(os.environ.get("DURABLE_WAKEUP_SEED"))
    sizes = [min(RUN_MESSAGES, MESSAGES - start) for start in range(0, MESSAGES, RUN_MESSAGES)]
    runs = [(f"inbox-{i:04d}", size) for i, size in enumerate(sizes)]
    # Each receive finds no message, or one that came just now: it suspends (suspend_after=0).
    executor = durable.Executor(db, [receiver], concurrency=RECEIVERS, suspend_after=0)
    running = asyncio.ensure_future(executor.run())
    # A connection for each feeder, to say what became of a message it misses.
    looks = await asyncpg.create_pool(dsn, min_size=0, max_size=RECEIVERS, server_settings={"search_path": schema})

    async def feeder(mine: list[tuple[str, int]], rng: random.Random) -> None:
        for run, count in mine:
            await feed(db, looks, run, count, rng)

    try:
        async with asyncio.TaskGroup() as feeders:
            for i in range(RECEIVERS):
                feeders.create_task(feeder(runs[i::RECEIVERS], random.Random(rng.random())))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first feeder's failure (the others were cancelled)
    finally:
        executor.stop()
        await running
        await looks.close()

    rows = await pg.fetch(
        """SELECT t.name AS run, m.value, m.received_by, extract(epoch FROM m.received_at - m.created_at)::float8 AS latency
           FROM task_message AS m JOIN task AS t ON t.id = m.task_id ORDER BY m.id"""
    )
    assert len(rows) == MESSAGES
    by_run: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append((json.loads(row["value"]), row["received_by"]))
    for run, count in runs:
        steps = ["t"] + [f"t#{i}" for i in range(2, count + 1)]
        assert by_run[run] == list(zip(range(count), steps)), f"{run} received each message once, in order"
    latencies = sorted(row["latency"] for row in rows)
    p50, p99 = (latencies[round(q * (len(latencies) - 1))] * 1000 for q in (0.5, 0.99))
    print(
        f"\nwake-ups: {MESSAGES} messages to {len(runs)} receiver runs ({RECEIVERS} at a time, each suspending at "
        f"every receive); latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    late = [(row["run"], row["value"], row["latency"]) for row in rows if row["latency"] > LATE]
    assert not late, f"messages received more than {LATE} s after their send (run, message, seconds): {late[:10]}"
