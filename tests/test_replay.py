"""Exact replay: what a resumed workflow sees is what the original run saw,
and a finished workflow never runs a body again."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

import durable
from durable import Ctx


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def const(value: Any) -> Callable[[], Any]:
    return lambda: value


def same(a: Any, b: Any) -> bool:
    """Equal with the same types, key order and float bits, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return bits(a) == bits(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- values: the first run returns exactly what every replay returns --------------------------


async def test_a_step_returns_on_the_first_run_exactly_what_a_replay_returns(db: durable.Db) -> None:
    values: dict[str, Any] = {
        "a": (1, 2),
        "b": {"z": -0.0, "f": 1.0},
        "c": 0.18040484098694443,
        "d": 1.7976931348623157e308,
        "e": [-0.0, 5e-324, 2.2250738585072014e-308, 1e16, 123456789.12345679],
    }
    ctx = await Ctx.start(db, "wf")
    first = {name: await ctx.step(name, const(v)) for name, v in values.items()}
    await ctx.release()
    again = await Ctx.start(db, "wf")
    replayed = {name: await again.step(name, lambda: "not run") for name in values}
    await again.release()
    for name in values:
        assert same(first[name], replayed[name]), (name, first[name], replayed[name])
    assert first["a"] == [1, 2]
    assert list(first["b"]) == ["f", "z"] and bits(first["b"]["z"]) == bits(0.0)
    assert bits(first["c"]) == bits(0.18040484098694443)
    assert first["d"] == 1.7976931348623157e308
    third = await Ctx.start(db, "wf")  # the largest float does not break later resumes
    assert await third.step("d", lambda: 0.0) == 1.7976931348623157e308


async def test_every_finite_float_comes_back_bit_for_bit(db: durable.Db) -> None:
    rng = random.Random(20261125)
    floats = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(5000)]
    floats = [x for x in floats if x == x and abs(x) != float("inf") and x != 0.0]
    floats += [1 / 3, 0.1, 2**-1074, 2**1023 * 1.5, 9007199254740993.0, 1e-7, 123e-20]
    ctx = await Ctx.start(db, "wf")
    first = await ctx.step("floats", lambda: floats)
    await ctx.release()
    replayed: list[float] = await (await Ctx.start(db, "wf")).step("floats", lambda: [])
    assert [bits(x) for x in replayed] == [bits(x) for x in floats]
    assert [bits(x) for x in first] == [bits(x) for x in floats]


async def test_complete_child_and_decorated_steps_return_their_json_form(db: durable.Db) -> None:
    @durable.step  # type: ignore[type-var]  # mypy flags tuples
    async def pair() -> tuple[int, int]:
        return (3, 4)

    @durable.workflow
    async def job(ctx: Ctx, arg: dict[str, Any]) -> dict[str, Any]:
        seen_input = ctx.input
        p = await pair()
        async with ctx.child("kid", {"k": (1,), "a": -0.0}) as kid:
            kid_out = await kid.complete({"y": 1, "x": (2,)})
        return {"input": arg, "ctx.input": seen_input, "pair": p, "kid": kid_out, "kid.input": kid.input}

    out_first = await job.run(db, "job", {"b": (1, 2), "a": -0.0})
    out_again = await job.run(db, "job", {"b": [1, 2], "a": 0.0})
    assert same(out_first, out_again)
    assert same(
        out_first,
        {
            "kid": {"x": [2], "y": 1},
            "pair": [3, 4],
            "input": {"a": 0.0, "b": [1, 2]},
            "ctx.input": {"a": 0.0, "b": [1, 2]},
            "kid.input": {"a": 0.0, "k": [1]},
        },
    )


async def test_a_workflow_sees_the_same_input_when_first_run_and_when_resumed(db: durable.Db) -> None:
    seen: list[Any] = []

    @durable.workflow
    async def flaky(ctx: Ctx, arg: dict[str, Any]) -> None:
        seen.append(arg)
        if len(seen) == 1:
            raise ConnectionError("first run dies")

    given = {"zz": {"y": 2, "x": (1, -0.0)}, "a": 0.1}
    with pytest.raises(ConnectionError):
        await flaky.run(db, "in", given)
    await flaky.run(db, "in", given)
    assert same(seen[0], seen[1])
    assert same(seen[0], {"a": 0.1, "zz": {"x": [1, 0.0], "y": 2}})


async def test_an_int_and_a_float_are_different_inputs(db: durable.Db) -> None:
    await (await Ctx.start(db, "w", {"n": 1})).release()
    with pytest.raises(durable.InputMismatch):
        await Ctx.start(db, "w", {"n": 1.0})  # jsonb calls them equal; the function would see another type
    ctx = await Ctx.start(db, "w", {"n": 1})
    with pytest.raises(durable.InputMismatch):
        await ctx.run(lambda c, i: asyncio.sleep(0), {"n": 2})


async def test_a_dict_whose_keys_repeat_as_text_is_refused(db: durable.Db) -> None:
    class Key(str):
        def __hash__(self) -> int:
            return id(self)

        def __eq__(self, other: object) -> bool:
            return self is other

    ctx = await Ctx.start(db, "wf")
    with pytest.raises(durable.NotJson, match='has the key "k" twice'):
        await ctx.step("d", lambda: {Key("k"): 1, Key("k"): 2})  # type: ignore[arg-type, return-value]


# -- automatic step names do not shift on replay ----------------------------------------------

fetched: list[str] = []


@durable.step
async def fetch(what: str) -> str:
    fetched.append(what)
    return f"data for {what}"


@durable.step
async def prepare() -> str:
    return await fetch("config")  # a step called inside a step: a plain call


async def test_a_decorated_step_inside_a_step_is_a_plain_call_and_names_do_not_shift(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    fetched.clear()
    runs: list[int] = []

    @durable.workflow
    async def job(ctx: Ctx, _: None) -> str:
        await prepare()
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("crash between the two steps")
        return await fetch("user")

    with pytest.raises(ConnectionError):
        await job.run(db, "job", None)
    assert await job.run(db, "job", None) == "data for user"
    assert fetched == ["config", "user"], "prepare replayed, so its inner fetch did not run again"
    names = sorted(r["name"] for r in await pg.fetch("SELECT name FROM task WHERE kind = 'step'"))
    assert names == sorted([prepare.__qualname__, fetch.__qualname__])


async def test_an_explicit_step_inside_a_step_body_is_a_plain_call(db: durable.Db, pg: asyncpg.Connection) -> None:
    ctx = await Ctx.start(db, "wf")

    async def outer() -> int:
        return await ctx.step("inner", lambda: 41) + 1

    assert await ctx.step("outer", outer) == 42
    assert [r["name"] for r in await pg.fetch("SELECT name FROM task WHERE kind = 'step'")] == ["outer"]
    with pytest.raises(durable.DurableError, match="inside the body of a step"):
        await ctx.step("starts_child", lambda: ctx.child("kid"))  # type: ignore[type-var]


async def test_a_step_body_may_run_a_separate_workflow_with_its_own_steps(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    @durable.workflow
    async def other(ctx: Ctx, n: int) -> str:
        return await fetch(f"other {n}")

    @durable.workflow
    async def main(ctx: Ctx, _: None) -> str:
        return await ctx.step("spawn", lambda: other.run(db, "other", 7))

    fetched.clear()
    assert await main.run(db, "main", None) == "data for other 7"
    rows = await pg.fetch("SELECT s.name, w.name AS wf FROM task s JOIN task w ON w.id = s.parent_id")
    assert sorted((r["wf"], r["name"]) for r in rows) == [("main", "spawn"), ("other", fetch.__qualname__)]


# -- a finished workflow never runs a step body again --------------------------------------------


async def test_a_step_left_running_in_a_completed_workflow_is_never_run_again(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    calls: list[str] = []
    started = asyncio.Event()

    async def slow() -> str:
        calls.append("slow")
        started.set()
        await asyncio.sleep(3600)
        return "never"

    ctx = await Ctx.start(db, "wf")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ctx.step("slow", slow), 0.2)  # abandoned: its row stays 'running'
    await ctx.complete("done")
    with pytest.raises(durable.WorkflowFinished, match="already completed") as caught:
        await ctx.step("late", lambda: calls.append("late"))
    assert "elsewhere" not in str(caught.value)
    for _ in range(2):
        again = await Ctx.start(db, "wf")
        with pytest.raises(durable.WorkflowFinished, match='already completed and has no completed step "slow"'):
            await again.step("slow", slow)
    assert calls == ["slow"]
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'slow'") == "running"


async def test_a_new_step_in_an_unfinished_child_of_a_completed_parent_does_not_run(db: durable.Db) -> None:
    calls: list[str] = []
    ctx = await Ctx.start(db, "parent")
    kid = await ctx.child("kid")
    await kid.step("saved", lambda: "s")
    await ctx.complete("parent done")  # the child is left running
    again = await Ctx.start(db, "parent")
    replayed_kid = await again.child("kid")
    assert await replayed_kid.step("saved", lambda: "not run") == "s"
    with pytest.raises(durable.WorkflowFinished, match='belongs to workflow "parent", which is already completed'):
        await replayed_kid.step("new", lambda: calls.append("new"))
    with pytest.raises(durable.WorkflowFinished):
        await replayed_kid.complete("x")
    assert calls == []


async def test_messages_after_this_runs_own_finish_say_so(db: durable.Db) -> None:
    ctx = await Ctx.start(db, "wf")
    release = asyncio.Event()

    async def body() -> int:
        await release.wait()
        return 1

    running = asyncio.ensure_future(ctx.step("in_flight", body))
    await asyncio.sleep(0)  # the body is waiting
    await ctx.complete("done")
    release.set()
    with pytest.raises(durable.WorkflowFinished, match="already completed by this run") as caught:
        await running
    assert "elsewhere" not in str(caught.value)
    with pytest.raises(durable.WorkflowFinished, match="already completed by this run"):
        await ctx.fail(RuntimeError("too late"))

    failed = await Ctx.start(db, "wf2")
    await failed.fail(RuntimeError("broken"))
    with pytest.raises(durable.WorkflowFinished, match="already failed by this run"):
        await failed.complete("too late")


# -- the real error is never hidden ---------------------------------------------------------------


@pytest.mark.parametrize("message", ["nul \x00 inside", "lone \ud800 surrogate"], ids=["nul", "surrogate"])
async def test_an_unstorable_error_message_is_stored_sanitized_and_the_error_propagates(
    db: durable.Db, pg: asyncpg.Connection, message: str
) -> None:
    tries: list[int] = []

    def body() -> None:
        tries.append(durable.attempt())
        raise RuntimeError(message)

    ctx = await Ctx.start(db, "wf")
    with pytest.raises(RuntimeError) as caught:
        await ctx.step("s", body, retries=2, backoff=durable.Backoff(initial=0, jitter=0))
    assert caught.value.args == (message,)
    assert tries == [1, 2, 3], "the retries happened"
    row = await pg.fetchrow("SELECT status, attempt, error FROM task WHERE name = 's'")
    assert row is not None
    assert (row["status"], row["attempt"]) == ("failed", 3)
    stored = json.loads(row["error"])
    assert stored["type"] == "RuntimeError"
    assert ("\\x00" if "\x00" in message else "\\ud800") in stored["message"]

    @durable.workflow
    async def wf(ctx: Ctx, _: None) -> None:
        raise ValueError(message)

    with pytest.raises(ValueError) as raised:
        await wf.run(db, "wf-level", None)
    assert raised.value.args == (message,) and not getattr(raised.value, "__notes__", None)
    assert await pg.fetchval("SELECT status FROM task WHERE name = 'wf-level'") == "failed"


async def test_an_error_too_large_for_the_value_limit_is_still_recorded(
    dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    small = await durable.init(dsn, schema=schema, max_value_bytes=600)
    try:
        ctx = await Ctx.start(small, "wf")
        with pytest.raises(RuntimeError, match="x{1000}"):
            await ctx.step("s", lambda: (_ for _ in ()).throw(RuntimeError("x" * 5000)))
    finally:
        await small.close()
    row = await pg.fetchrow("SELECT status, error FROM task WHERE name = 's'")
    assert row is not None and row["status"] == "failed"
    assert json.loads(row["error"])["type"] == "RuntimeError"


@pytest.mark.parametrize(
    "options",
    [
        {"retry_on": "ValueError"},
        {"retry_on": (ValueError, 3)},
        {"retry_on": KeyboardInterrupt},
        {"backoff": 1.5},
        {"retries": "3"},
        {"retries": -1},
        {"at_most_once": "yes"},
    ],
    ids=repr,
)
async def test_bad_step_options_are_refused_before_the_body_runs(db: durable.Db, options: dict[str, Any]) -> None:
    ran: list[int] = []
    ctx = await Ctx.start(db, "wf")
    with pytest.raises(durable.ConfigError):
        await ctx.step("s", lambda: ran.append(1), **options)
    with pytest.raises(durable.ConfigError):
        durable.step(**options)(fetch.__wrapped__)  # type: ignore[attr-defined]
    assert ran == []


def test_bad_backoffs_are_config_errors() -> None:
    bads: list[dict[str, float]] = [
        {"initial": float("nan")},
        {"max": float("inf")},
        {"factor": 0.5},
        {"jitter": 2},
        {"initial": 1e300},
    ]
    for bad in bads:
        with pytest.raises(durable.ConfigError):
            durable.Backoff(**bad)
    huge = durable.Backoff(initial=1, factor=10, max=60, jitter=0)
    assert huge.delay(10**6) == 60.0
