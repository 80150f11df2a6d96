"""Names durable derives from the user's (``<topic> until``, ``<topic>#2``,
``event <key>``, ``send <topic> to <workflow>``, ``result <run>``,
``enqueue <workflow>``, a decorated step's ``name#N``) always fit the
255-byte limit: what ``send`` accepts, ``recv`` waits on, and an error names
the user's own argument, never a step name the user did not write."""

from __future__ import annotations

import asyncpg
import pytest

import durable
from durable import Ctx
from durable._names import derived

#: The longest names allowed: 255 bytes, one ASCII and one of two-byte characters.
LONG = "t" * 255
WIDE = "é" * 127 + "x"  # 255 bytes in UTF-8


async def step_names(pg: asyncpg.Connection, workflow: str) -> list[str]:
    rows = await pg.fetch(
        """SELECT s.name FROM task AS s JOIN task AS w ON w.id = s.parent_id
           WHERE w.name = $1 AND s.kind = 'step' ORDER BY s.id""",
        workflow,
    )
    return [row["name"] for row in rows]


def test_a_name_that_fits_is_kept_and_a_longer_one_is_cut_with_a_hash() -> None:
    fits = "a" * 255
    assert derived(fits) == fits
    cut = derived(fits + " until")
    assert len(cut.encode()) <= 255 and cut.startswith("a" * 200)
    assert derived(fits + " until") == cut  # the same on every run
    assert derived(fits + " untiL") != cut  # distinct inputs, distinct names
    wide = derived("é" * 200)  # cut at a character boundary
    assert len(wide.encode()) <= 255 and wide.startswith("é" * 100)


@pytest.mark.parametrize("topic", [LONG, WIDE], ids=["ascii", "two-byte"])
async def test_recv_waits_on_any_topic_send_accepts_and_replays_it(
    db: durable.Db, pg: asyncpg.Connection, topic: str
) -> None:
    ctx = await Ctx.start(db, "w")
    assert await ctx.recv(topic, timeout=0.05) is None  # waited: its deadline was saved first
    for n in range(3):
        assert await durable.send(db, "w", topic, n) is True
    assert await ctx.recv(topic, timeout=5) == 0
    await ctx.release()
    again = await Ctx.start(db, "w")
    assert await again.recv(topic, timeout=0.05) is None  # replayed under the same derived names
    assert await again.recv(topic, timeout=5) == 0
    assert await again.recv(topic) == 1  # without a timeout too
    assert await again.recv(topic, timeout=0) == 2
    names = await step_names(pg, "w")
    assert len(names) == len(set(names)) == 5  # 4 receives, 1 saved deadline
    assert all(len(name.encode()) <= 255 for name in names)
    assert topic in names  # the first receive's name fits: unchanged


async def test_set_event_takes_any_key_get_event_reads(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "w")
    await ctx.set_event(LONG, "first")
    await ctx.set_event(LONG, "second")
    assert await durable.get_event(db, "w", LONG, timeout=0) == "second"
    await ctx.release()
    again = await Ctx.start(db, "w")
    await again.set_event(LONG, "first")  # replayed: not published again
    await again.set_event(LONG, "second")
    assert await durable.get_event(db, "w", LONG, timeout=0) == "second"
    assert len(await step_names(pg, "w")) == 2


async def test_send_inside_a_workflow_to_any_path_on_any_topic(db: durable.Db, pg: asyncpg.Connection) -> None:
    target = await Ctx.start(db, "p" * 255)
    await target.child("c" * 255)
    path = ("p" * 255, "c" * 255)

    @durable.workflow(name="sender")
    async def sender(ctx: Ctx, _: None) -> list[bool]:
        return [await durable.send(ctx.db, path, LONG, n) for n in range(2)]

    assert await sender.run(db, "s", None) == [True, True]
    assert await sender.run(db, "s", None) == [True, True]  # completed: replayed
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 2
    assert len(set(await step_names(pg, "s"))) == 2


async def test_result_of_a_run_with_a_long_name_inside_a_workflow(db: durable.Db, pg: asyncpg.Connection) -> None:
    run_name = "r" * 255
    done = await Ctx.start(db, run_name)
    await done.complete("ok")

    @durable.workflow(name="waiter")
    async def waiter(ctx: Ctx, _: None) -> list[str]:
        run: durable.Run[str] = durable.Run(ctx.db, run_name, "completed", False)
        return [await run.result(), await run.result()]

    assert await waiter.run(db, "w", None) == ["ok", "ok"]
    assert len(set(await step_names(pg, "w"))) == 2


async def test_a_decorated_step_and_an_enqueue_under_long_names(db: durable.Db, pg: asyncpg.Connection) -> None:
    @durable.step(name="s" * 255)
    async def long_step(n: int) -> int:
        return n

    @durable.workflow(name="q" * 255)
    async def queued(ctx: Ctx, _: None) -> None:
        return None

    @durable.workflow(name="caller")
    async def caller(ctx: Ctx, _: None) -> list[int]:
        await queued.enqueue(ctx.db, "one", None)
        await queued.enqueue(ctx.db, "two", None)
        return [await long_step(n) for n in range(3)]

    assert await caller.run(db, "c", None) == [0, 1, 2]
    names = await step_names(pg, "c")
    assert len(set(names)) == 5 and "s" * 255 in names


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda ctx: ctx.recv(""), "topic"),
        (lambda ctx: ctx.recv("x" * 256), "topic"),
        (lambda ctx: ctx.recv("x" * 256, timeout=1), "topic"),
        (lambda ctx: ctx.recv("a\x00b"), "topic"),
        (lambda ctx: ctx.set_event("k" * 256, 1), "event key"),
        (lambda ctx: ctx.set_event("", 1), "event key"),
        (lambda ctx: durable.send(ctx.db, "target", "x" * 256, 1), "topic"),
        (lambda ctx: durable.send(ctx.db, "target", "t", 1, key="k" * 256), "message key"),
        (lambda ctx: durable.send(ctx.db, ("target", "c" * 256), "t", 1), "workflow"),
    ],
    ids=["recv empty", "recv long", "recv long timeout", "recv NUL", "event long", "event empty", "send topic",
         "send key", "send path"],
)
async def test_a_bad_argument_is_named_and_nothing_is_written(
    db: durable.Db, pg: asyncpg.Connection, call: object, named: str
) -> None:
    await Ctx.start(db, "target")
    ctx = await Ctx.start(db, "w")
    async with ctx:  # the current workflow: a send is a step of it
        with pytest.raises(durable.InvalidName, match=f"invalid {named} name"):
            await call(ctx)  # type: ignore[operator]
    assert await step_names(pg, "w") == []
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 0
