"""A name is a name: every string a start or an enqueue accepts is found
under exactly that string, and a child is addressed by an explicit path
(a tuple or list of names, the root's first), never by splitting a string.
Cancelling reaches one child by its path, a root without its children, or
a root with the runs its workflows enqueued."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import durable
import durable.sync
from _waits import until
from durable import Ctx


async def statuses(pg: asyncpg.Connection) -> dict[str, str]:
    rows = await pg.fetch("SELECT name, status FROM task WHERE kind = 'workflow'")
    return {row["name"]: row["status"] for row in rows}


async def test_a_root_whose_name_holds_a_slash_is_found_under_that_name(db: durable.Db) -> None:
    root = await Ctx.start(db, "reports/2026-12", input=1)
    await root.set_event("progress", 50)
    info = await durable.get(db, "reports/2026-12")
    assert (info.name, info.path, info.input, info.id) == ("reports/2026-12", ("reports/2026-12",), 1, root.id)
    assert (await durable.tree(db, "reports/2026-12")).info == info
    assert await durable.get(db, ("reports/2026-12",)) == info, "a path of one name is the root"
    assert await durable.get_event(db, "reports/2026-12", "progress", timeout=0) == 50
    assert await durable.send(db, "reports/2026-12", "go", "now")
    assert await root.recv("go", timeout=5) == "now"
    [listed] = await durable.list_workflows(db)
    assert (listed.name, listed.path) == ("reports/2026-12", ("reports/2026-12",))


async def test_a_root_named_like_a_path_and_the_child_at_that_path_are_two_workflows(db: durable.Db) -> None:
    parent = await Ctx.start(db, "a")
    child = await parent.child("b")
    root = await Ctx.start(db, "a/b")

    assert await durable.send(db, "a/b", "t", "to the root")
    assert await durable.send(db, ("a", "b"), "t", "to the child")
    assert await root.recv("t", timeout=5) == "to the root"
    assert await child.recv("t", timeout=5) == "to the child"
    assert await root.recv("t", timeout=0) is None and await child.recv("t", timeout=0) is None

    assert (await durable.get(db, "a/b")).id == root.id
    found = await durable.get(db, ("a", "b"))
    assert (found.id, found.name, found.path) == (child.id, "b", ("a", "b"))
    assert (await durable.get(db, ["a", "b"])).id == child.id, "a list is a path too"
    tree = await durable.tree(db, "a")
    assert [(c.info.name, c.info.path) for c in tree.children] == [("b", ("a", "b"))]

    await root.set_event("who", "root")
    await child.set_event("who", "child")
    assert await durable.get_event(db, "a/b", "who", timeout=0) == "root"
    assert await durable.get_event(db, ("a", "b"), "who", timeout=0) == "child"


async def test_a_child_whose_name_holds_a_slash_is_reached_by_its_path(db: durable.Db) -> None:
    root = await Ctx.start(db, "r")
    child = await root.child("x/y")
    grandchild = await child.child("z")
    path = ("r", "x/y")
    info = await durable.get(db, path)
    assert (info.id, info.name, info.path) == (child.id, "x/y", path)
    assert (await durable.get(db, (*path, "z"))).id == grandchild.id
    assert (await durable.tree(db, path)).children[0].info.path == ("r", "x/y", "z")
    assert await durable.send(db, path, "t", 1)
    assert await child.recv("t", timeout=5) == 1
    await child.set_event("k", "v")
    assert await durable.get_event(db, path, "k", timeout=0) == "v"
    with pytest.raises(durable.WorkflowNotFound, match=r"there is no workflow at path \('r', 'x', 'y'\)"):
        await durable.get(db, ("r", "x", "y"))
    with pytest.raises(durable.WorkflowNotFound, match="there is no workflow named 'r/x/y'"):
        await durable.get(db, "r/x/y")


async def test_a_path_is_checked_before_anything_is_read(db: durable.Db) -> None:
    bad: object
    for bad in ((), [], ("a", 1), 7, b"a", None):
        with pytest.raises(durable.ConfigError, match="workflow"):
            await durable.get(db, bad)  # type: ignore[arg-type]
    for call in (durable.get, durable.tree, durable.cancel):
        with pytest.raises(durable.InvalidName):
            await call(db, ("a", ""))
    with pytest.raises(durable.InvalidName):
        await durable.send(db, ("a", "x" * 256), "t", 1)
    with pytest.raises(durable.InvalidName):
        await durable.get_event(db, ("a", "b\x00"), "k", timeout=0)


async def test_sending_inside_a_workflow_to_a_child_path_is_a_step(db: durable.Db, pg: asyncpg.Connection) -> None:
    target = await Ctx.start(db, "target")
    kid = await target.child("kid")

    @durable.workflow(name="sender")
    async def sender(ctx: Ctx, _: None) -> bool:
        return await durable.send(ctx.db, ("target", "kid"), "t", "hi")

    assert await sender.run(db, "s", None) is True
    assert await kid.recv("t", timeout=5) == "hi"
    names = await pg.fetch("SELECT s.name FROM task s JOIN task w ON w.id = s.parent_id WHERE w.name = 's'")
    assert [row["name"] for row in names] == ["send t to target/kid"]


async def test_the_sync_twins_take_paths(dsn: str, schema: str, db: durable.Db) -> None:
    root = await Ctx.start(db, "a")
    child = await root.child("b")

    def blocking() -> tuple[int, int, bool, bool]:
        synced = durable.sync.init(dsn, schema=schema)
        try:
            found = durable.sync.get(synced, ("a", "b")).id
            tree = durable.sync.tree(synced, ["a", "b"]).info.id
            sent = durable.sync.send(synced, ("a", "b"), "t", 1)
            cancelled = durable.sync.cancel(synced, ("a", "b"), children=False)
            return found, tree, sent, cancelled
        finally:
            durable.sync.close(synced)

    assert await asyncio.to_thread(blocking) == (child.id, child.id, True, True)
    assert (await durable.get(db, "a")).status == "running"


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancelling_a_child_stops_it_and_its_parent_goes_on(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    root = await Ctx.start(db, "order")
    child = await root.child("payment")
    sibling = await root.child("shipping")
    # A sleep in the process: only the cancel's notification can end it early.
    waiting = asyncio.ensure_future(child.sleep("settle", 60))

    async def sleeping() -> bool:
        return bool(await pg.fetchval("SELECT count(*) FROM task WHERE name = 'settle' AND status = 'completed'"))

    await until(sleeping, "the child sleeps")
    assert await durable.cancel(other_db, ("order", "payment")) is True
    with pytest.raises(durable.Cancelled):
        await asyncio.wait_for(waiting, 10)  # its wait ends at once, told by the notification
    assert child.status == "cancelled"
    ran: list[str] = []
    with pytest.raises(durable.Cancelled):
        await child.step("charge", lambda: ran.append("charge"))
    assert ran == []
    # Its parent and its sibling go on; the parent may complete.
    assert await sibling.step("pack", lambda: "packed") == "packed"
    await sibling.complete("shipped")
    assert await root.step("after", lambda: "still running") == "still running"
    assert root.status == "running"
    await root.complete("done without payment")
    assert await statuses(pg) == {"order": "completed", "payment": "cancelled", "shipping": "completed"}
    assert await durable.cancel(db, ("order", "payment")) is False, "cancelled already"
    assert await durable.cancel(db, ("order", "nope")) is False


async def test_a_cancelled_child_is_cancelled_on_every_replay_of_its_parent(db: durable.Db) -> None:
    @durable.workflow(name="parent")
    async def parent(ctx: Ctx, _: None) -> str:
        try:
            async with ctx.child("kid") as kid:
                await kid.step("first", lambda: 1)
        except durable.Cancelled:
            return "went on without the kid"
        return "kid done"

    ctx = await Ctx.start(db, "p")
    kid = await ctx.child("kid")
    await kid.step("first", lambda: 1)
    await ctx.release()
    assert await durable.cancel(db, ("p", "kid")) is True
    assert await parent.run(db, "p", None) == "went on without the kid"
    assert (await durable.get(db, ("p", "kid"))).status == "cancelled"


@durable.workflow(name="patient", queue="patience")
async def patient(ctx: Ctx, _: None) -> str:
    try:
        async with ctx.child("approval") as approval:
            await approval.recv("approved")  # no timeout: suspends the tree until a message comes
    except durable.Cancelled:
        return "went on without approval"
    return "approved"


async def test_cancelling_the_child_a_suspended_tree_waits_in_wakes_its_root(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    run = await patient.enqueue(db, "p-1", None)
    executor = durable.Executor(db, [patient], suspend_after=0)
    running = asyncio.ensure_future(executor.run())
    try:

        async def suspended() -> bool:
            return bool(await pg.fetchval("SELECT status = 'scheduled' FROM task WHERE name = 'p-1'"))

        await until(suspended, "the tree is suspended, waiting for a message to its child")
        assert await durable.cancel(db, ("p-1", "approval")) is True
        assert await asyncio.wait_for(run.result(), 15) == "went on without approval"
        assert (await durable.get(db, ("p-1", "approval"))).status == "cancelled"
    finally:
        executor.stop()
        await running


async def test_cancelling_a_root_without_its_children_lets_a_running_child_finish(
    db: durable.Db, other_db: durable.Db, pg: asyncpg.Connection
) -> None:
    root = await Ctx.start(db, "job")
    child = await root.child("part")
    assert await durable.cancel(other_db, "job", children=False) is True

    async def told() -> bool:
        return root.status == "cancelled"

    await until(told, "the holder was told")
    assert await child.step("work", lambda: "done") == "done", "the child goes on"
    await child.complete("part done")
    with pytest.raises(durable.Cancelled):
        await root.step("next", lambda: "never")
    assert await statuses(pg) == {"job": "cancelled", "part": "completed"}


@durable.workflow(name="leaf", queue="jobs")
async def leaf(ctx: Ctx, n: int) -> int:
    raise AssertionError("no executor runs it")


@durable.workflow(name="fan")
async def fan(ctx: Ctx, _: None) -> None:
    """Enqueues runs from its own code, from a step's body and from a
    child's code, then waits (until cancelled)."""
    await leaf.enqueue(ctx.db, "by-root", 1)

    async def in_a_body() -> str:
        return (await leaf.enqueue(ctx.db, "by-step", 2)).name

    await ctx.step("spawn", in_a_body)
    async with ctx.child("part") as part:
        await leaf.enqueue_many(ctx.db, [("by-child", 3), ("by-child-2", 4)])
        await part.recv("never")


async def fanned_out(db: durable.Db, pg: asyncpg.Connection) -> asyncio.Future[None]:
    """``fan`` running, its runs enqueued, and a run enqueued by nobody."""
    await leaf.enqueue(db, "unrelated", 0)
    running = asyncio.ensure_future(fan.run(db, "fan", None))

    async def enqueued() -> bool:
        return bool(await pg.fetchval("SELECT count(*) FROM task WHERE name = 'by-child-2'"))

    await until(enqueued, "fan enqueued its runs")
    return running


async def test_cancelling_a_root_by_default_leaves_the_runs_it_enqueued(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    running = await fanned_out(db, pg)
    assert await durable.cancel(db, "fan") is True
    with pytest.raises(durable.Cancelled):
        await asyncio.wait_for(running, 10)
    found = await statuses(pg)
    assert (found["fan"], found["part"]) == ("cancelled", "cancelled")
    assert {found[name] for name in ("by-root", "by-step", "by-child", "by-child-2", "unrelated")} == {"queued"}


async def test_cancelling_with_enqueued_cancels_the_runs_its_workflows_enqueued(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    running = await fanned_out(db, pg)
    assert await durable.cancel(db, "fan", enqueued=True) is True
    with pytest.raises(durable.Cancelled):
        await asyncio.wait_for(running, 10)
    assert await statuses(pg) == {
        "fan": "cancelled",
        "part": "cancelled",
        "by-root": "cancelled",
        "by-step": "cancelled",
        "by-child": "cancelled",
        "by-child-2": "cancelled",
        "unrelated": "queued",
    }
