"""JSON in, JSON out: what is saved replays as the same value; what cannot
be saved is refused with a TypeError that says where and why."""

from __future__ import annotations

import enum
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

import durable
from durable import Ctx

ROUND_TRIPS: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.25,
    1.0,
    1e16,
    1.5e300,
    1e-7,
    5e-324,
    "",
    "héllo \"quoted\" \\ / \n\t ☃ 𝄞",
    [],
    {},
    [1, [2, [3, None]], {"a": []}],
    {"nested": {"list": [1.5, "x", False], "empty": {}}},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
async def test_saved_values_replay_equal_and_of_the_same_type(db: durable.Db, value: Any) -> None:
    ctx = await Ctx.start(db, "wf")
    first: Any = await ctx.step("v", lambda: value)
    await ctx.release()
    replayed: Any = await (await Ctx.start(db, "wf")).step("v", lambda: "not run")
    for seen in (first, replayed):
        assert seen == value
        assert type(seen) is type(value)
        if isinstance(value, float):
            assert math.copysign(1, seen) == math.copysign(1, value)


async def test_tuples_replay_as_lists_and_enums_as_their_values(db: durable.Db) -> None:
    class Color(enum.Enum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    class Mood(str, enum.Enum):
        CALM = "calm"

    ctx = await Ctx.start(db, "wf")
    first_t: Any = await ctx.step("t", lambda: (1, (2, 3)))
    first_e: list[object] = await ctx.step("e", lambda: [Size.BIG, Mood.CALM])
    with pytest.raises(durable.NotJson, match="is a Color"):
        await ctx.step("plain_enum", lambda: Color.RED)  # type: ignore[arg-type, return-value]
    await ctx.release()
    again = await Ctx.start(db, "wf")
    assert first_t == await again.step("t", lambda: [0]) == [1, [2, 3]]
    replayed: list[object] = await again.step("e", lambda: ["not run"])
    for seen in (first_e, replayed):
        assert seen == [3, "calm"] and type(seen[0]) is int and type(seen[1]) is str


def self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "is a set, which is not JSON; convert it to a list"),
        (frozenset(), "is a frozenset"),
        (b"raw", "is a bytes, which is not JSON; decode it to str, or base64-encode it"),
        (datetime(2026, 11, 24), "is a datetime, which is not JSON; convert it with .isoformat()"),
        (Decimal("1.10"), "is a Decimal"),
        (object(), "is a object, which is not JSON"),
        (float("nan"), "is the float nan, which JSON cannot represent"),
        (float("inf"), "is the float inf"),
        (-math.inf, "is the float -inf"),
        (2**64, "integer outside the 64-bit range"),
        (-(2**63) - 1, "integer outside the 64-bit range"),
        ({1: "a"}, "has the key 1 of type int; JSON object keys must be strings"),
        ({"a": {"b": [0, {"c"}]}}, 'value at ["a"]["b"][1] is a set'),
        ("nul \x00 inside", "NUL character"),
        ("\ud800", "lone surrogate"),
        (self_containing(), "nested more than 100 levels deep"),
    ],
    ids=repr,
)
async def test_non_json_values_are_refused_with_where_and_why(
    db: durable.Db, pg: asyncpg.Connection, value: Any, message: str
) -> None:
    with pytest.raises(durable.NotJson) as caught:
        await Ctx.start(db, "wf", value)
    assert isinstance(caught.value, TypeError)
    assert message in str(caught.value)
    assert await pg.fetchval("SELECT count(*) FROM task") == 0

    ctx = await Ctx.start(db, "wf2")
    with pytest.raises(durable.NotJson, match="result of step"):
        await ctx.step("s", lambda: value)
    assert await pg.fetchval("SELECT count(*) FROM task WHERE output IS NOT NULL") == 0


async def test_dict_keys_come_back_in_jsonb_order_on_every_run(db: durable.Db) -> None:
    # jsonb stores keys sorted by length, then bytes: documented in doc/api.md.
    ctx = await Ctx.start(db, "wf")
    first: Any = await ctx.step("d", lambda: {"bb": 1, "é": 0, "a": 2, "c": {"zz": 1, "y": 2}})
    await ctx.release()
    replayed: Any = await (await Ctx.start(db, "wf")).step("d", lambda: {"not": "run"})
    for seen in (first, replayed):
        assert list(seen) == ["a", "c", "bb", "é"]  # "é" is two bytes, after "bb"
        assert list(seen["c"]) == ["y", "zz"]
