"""Property-based tests (hypothesis) of the public entry points: names,
times, durations and JSON values at and beyond every bound.

The property: each call either succeeds, and what it made is found again
by every reader under exactly the name it was given, or is refused with
``ConfigError``, ``InvalidName`` or ``NotJson`` (the CLI: exit code 2 or,
for a name that is not there, 1; the ui: a 4xx), never with another
exception, a traceback or a 500; and no later listing fails for it.

Examples are derandomized (the same on every run) and few, to keep the
test command quick; ``DURABLE_FUZZ_EXAMPLES=2000`` runs more.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import durable
from durable import ConfigError, Ctx, InvalidName, NotJson, WorkflowNotFound
from durable.cli import cli

pytest.importorskip("starlette")
from durable import ui as web  # noqa: E402

EXAMPLES = int(os.environ.get("DURABLE_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: What a call may refuse its arguments with.
REFUSED = (ConfigError, InvalidName, NotJson)


@durable.workflow(name="fuzz.echo", queue="fuzz")
async def echo(ctx: Ctx, value: Any) -> Any:
    return value


# -- strategies ---------------------------------------------------------------

#: Any text: every code point, lone surrogates (what os.fsdecode makes of
#: bytes that are not UTF-8) included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=24)
NAMES = st.one_of(
    ANY_TEXT,
    st.text(alphabet="ab/ \x00.", min_size=0, max_size=6),
    st.sampled_from(["a/b", "/", "reports/2026-12", "a" * 255, "a" * 256, "é" * 127 + "a", "é" * 128, "x\udc80", "\x00"]),
)
OFFSETS = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)).map(
    lambda offset: timezone(timedelta(minutes=offset // timedelta(minutes=1)))
)
#: Every year from 1 to 9999 in every offset, and naive ones.
TIMES = st.one_of(st.datetimes(timezones=OFFSETS), st.datetimes())
DURATIONS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 36500 * 86400, 36500 * 86400 + 1, 2**63]),
    st.timedeltas(),
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
VALUES = st.one_of(
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8),
    st.integers(min_value=95, max_value=140).map(nested),
)


def json_form(value: Any) -> Any:
    """What a saved value reads back as (tuples are lists)."""
    return json.loads(json.dumps(value))


# -- the readers --------------------------------------------------------------


async def every_reader_works(db: durable.Db) -> list[durable.WorkflowInfo]:
    """Every listing, and each run listed through ``get`` and ``tree``: none may fail."""
    runs = await durable.list_workflows(db, limit=100_000)
    await durable.list_queues(db)
    for run in runs[:20]:
        assert (await durable.get(db, run.name)).id == run.id
        assert (await durable.tree(db, run.name)).info.id == run.id
    return runs


async def found(db: durable.Db, name: str) -> durable.WorkflowInfo:
    """The root ``name``, as every reader finds it under exactly that name."""
    info = await durable.get(db, name)
    assert info.name == name and info.path == (name,)
    assert (await durable.tree(db, name)).info.id == info.id
    assert info.id in {run.id for run in await durable.list_workflows(db, name_prefix=name, limit=100_000)}
    return info


_examples = iter(range(1_000_000))


def fresh(base: str) -> str:
    """A root name no example used before (each example its own run)."""
    return f"{base}/{next(_examples)}"


@pytest.fixture
def used() -> set[str]:
    """The run names made so far in the test's schema (a name made twice is idempotent, not new)."""
    return set()


# -- starts, runs, enqueues ---------------------------------------------------


@FUZZ
@example(name="x\udc80", value=None)
@given(name=NAMES, value=VALUES)
async def test_a_start_is_found_by_its_name_or_refused(db: durable.Db, used: set[str], name: str, value: Any) -> None:
    assume(name not in used)
    try:
        async with Ctx.start(db, name, value) as ctx:
            await ctx.step("s", lambda: value)
            await ctx.complete(value)
    except REFUSED:
        await every_reader_works(db)
        return
    used.add(name)
    info = await found(db, name)
    assert info.status == "completed" and info.output == json_form(value)
    assert await durable.result(db, name, 0) == json_form(value)
    await every_reader_works(db)


@FUZZ
@given(name=NAMES, value=VALUES)
async def test_a_run_of_a_workflow_is_found_by_its_name_or_refused(
    db: durable.Db, used: set[str], name: str, value: Any
) -> None:
    assume(name not in used)
    try:
        assert await echo.run(db, name, value) == json_form(value)
    except REFUSED:
        await every_reader_works(db)
        return
    used.add(name)
    assert (await found(db, name)).workflow == "fuzz.echo"
    await every_reader_works(db)


WHEN: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({}),
    st.fixed_dictionaries({"delay": DURATIONS}),
    st.fixed_dictionaries({"run_at": TIMES}),
)


@FUZZ
@given(
    name=NAMES,
    value=VALUES,
    when=WHEN,
    priority=st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.sampled_from([2**31 - 1, -(2**31)])),
    key=st.none() | NAMES,
)
async def test_an_enqueue_is_found_by_its_name_or_refused(
    db: durable.Db, used: set[str], name: str, value: Any, when: dict[str, Any], priority: int, key: str | None
) -> None:
    assume(name not in used)
    try:
        run = await echo.enqueue(db, name, value, priority=priority, key=key, **when)
    except REFUSED:
        await every_reader_works(db)
        return
    used.add(name)
    assert run.name == name
    info = await found(db, name)
    assert info.status in ("queued", "scheduled") and info.input == json_form(value) and info.key == key
    assert info.out_of_range == {}
    if "run_at" in when:
        assert info.run_at == when["run_at"]
    await every_reader_works(db)


@FUZZ
@given(runs=st.lists(st.tuples(NAMES, VALUES), max_size=4), when=WHEN)
async def test_an_enqueue_of_many_is_found_by_its_names_or_refused(
    db: durable.Db, used: set[str], runs: list[tuple[str, Any]], when: dict[str, Any]
) -> None:
    assume(not used & {name for name, _ in runs})
    try:
        made = await echo.enqueue_many(db, runs, **when)
    except REFUSED:
        await every_reader_works(db)
        return
    assert [run.name for run in made] == [name for name, _ in runs]
    for name, value in runs:
        used.add(name)
        assert (await found(db, name)).input == json_form(value)
    await every_reader_works(db)


#: What the SQL ``enqueue`` may refuse its arguments with: a bad value
#: (22023), not JSON (22P02), a NUL (22021), NULL (23502), out of range
#: (22008, 22015; 22009: Postgres takes offsets up to 15:59), a time or
#: interval Postgres cannot read (22007), nested too
#: deep for Postgres itself (54001).
SQL_REFUSED = {"22023", "22P02", "22P05", "22021", "23502", "22007", "22008", "22009", "22015", "54001"}


@FUZZ
@example(name="deep", value=nested(130), delay=None, run_at=None)
@given(
    name=NAMES.filter(lambda name: "\udc80" not in name),
    value=VALUES,
    delay=st.none() | DURATIONS,
    run_at=st.none() | st.one_of(st.datetimes(timezones=OFFSETS), st.sampled_from(["infinity", "-infinity"])),
)
async def test_the_sql_enqueue_makes_what_every_reader_shows_or_refuses(
    db: durable.Db, pg: asyncpg.Connection, used: set[str], name: str, value: Any, delay: Any, run_at: Any
) -> None:
    assume(name not in used)
    try:
        name.encode("utf-8")
        text = json.dumps(value)  # NaN and Infinity too: not JSON, Postgres refuses them
    except (UnicodeEncodeError, ValueError):
        assume(False)
    interval = f"{delay.total_seconds()} seconds" if isinstance(delay, timedelta) else None if delay is None else f"{delay} seconds"
    moment = run_at if isinstance(run_at, str) or run_at is None else run_at.isoformat()
    try:
        await pg.fetchval(
            f"SELECT {db.schema}.enqueue('fuzz.echo', $1, $2::jsonb, delay => $3::text::interval, run_at => $4::text::timestamptz)",
            name,
            text,
            interval,
            moment,
        )
    except asyncpg.PostgresError as e:
        assert e.sqlstate in SQL_REFUSED, (e.sqlstate, str(e))
        await every_reader_works(db)
        return
    used.add(name)
    info = await found(db, name)
    assert info.input == json_form(value) and info.out_of_range == {}
    await every_reader_works(db)


# -- messages and events ------------------------------------------------------


@FUZZ
@given(topic=NAMES, key=st.none() | NAMES, event=NAMES, value=VALUES)
async def test_a_message_and_an_event_reach_their_reader_or_are_refused(
    db: durable.Db, topic: str, key: str | None, event: str, value: Any
) -> None:
    root = fresh("a/b")  # a root named "a/b/N": never a path
    async with Ctx.start(db, root) as ctx:
        try:
            sent = await durable.send(db, root, topic, value, key)
        except REFUSED:
            sent = False
        else:
            assert sent
            assert await ctx.recv(topic, 0) == json_form(value)
        try:
            await ctx.set_event(event, value)
        except REFUSED:  # the key (refused again) or the value (never set)
            with pytest.raises((*REFUSED, TimeoutError)):
                await durable.get_event(db, root, event, 0)
        else:
            assert await durable.get_event(db, root, event, 0) == json_form(value)
        await ctx.complete(None)
    await every_reader_works(db)


# -- lookups, filters, actions ------------------------------------------------

PATHS = st.one_of(NAMES, st.lists(NAMES, min_size=1, max_size=3), st.lists(NAMES, max_size=3).map(tuple))


@FUZZ
@given(path=PATHS, other=NAMES, timeout=DURATIONS)
async def test_a_lookup_finds_nothing_or_refuses(db: durable.Db, path: Any, other: str, timeout: Any) -> None:
    name = path if isinstance(path, str) else "x"
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: durable.get(db, path),
        lambda: durable.tree(db, path),
        lambda: durable.get_event(db, path, other, 0),
        lambda: durable.result(db, name, 0),
        lambda: durable.fork(db, name, other),
    ]
    for call in calls:
        with pytest.raises((*REFUSED, WorkflowNotFound, TimeoutError)):
            await call()
    for action in (
        lambda: durable.cancel(db, path),
        lambda: durable.resume(db, name),
        lambda: durable.send(db, path, other, 1),
        lambda: durable.result(db, name, timeout),
    ):
        try:
            assert await action() is False
        except (*REFUSED, WorkflowNotFound):
            pass
    await every_reader_works(db)


@FUZZ
@example(status=None, queue="a\x00", prefix=None, since=None, limit=1)
@example(status=None, queue=None, prefix="a\udc80", since=None, limit=1)
@given(
    status=st.none() | NAMES | st.sampled_from(["failed", "queued"]),
    queue=st.none() | NAMES,
    prefix=st.none() | NAMES,
    since=st.none() | TIMES,
    limit=st.integers(min_value=-5, max_value=10**9),
)
async def test_a_listing_filters_or_refuses(
    db: durable.Db, status: str | None, queue: str | None, prefix: str | None, since: datetime | None, limit: int
) -> None:
    await echo.enqueue(db, "listed", 1)
    try:
        runs = await durable.list_workflows(db, status=status, queue=queue, name_prefix=prefix, since=since, limit=limit)
    except REFUSED:
        return
    for run in runs:
        assert status is None or run.status == status
        assert queue is None or run.queue == queue
        assert prefix is None or run.name.startswith(prefix)


@FUZZ
@given(wait=DURATIONS, deadline=DURATIONS, sleep=DURATIONS, older_than=DURATIONS)
async def test_a_duration_is_used_or_refused(db: durable.Db, wait: Any, deadline: Any, sleep: Any, older_than: Any) -> None:
    starts: list[Callable[[], durable.Starting]] = [
        lambda: Ctx.start(db, fresh("timed"), wait=wait),
        lambda: Ctx.start(db, fresh("timed"), deadline=deadline),
    ]
    for start in starts:
        try:
            async with start() as ctx:
                if _short(sleep):
                    try:
                        await ctx.sleep("nap", sleep)
                    except REFUSED:
                        pass
                await ctx.complete(None)
        except (*REFUSED, durable.DeadlineExceeded):
            pass
    try:
        assert await durable.gc(db, older_than) >= 0
    except REFUSED:
        pass
    await every_reader_works(db)


def _short(duration: Any) -> bool:
    """A sleep the test may wait out (or one refused before it sleeps)."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    try:
        return not (0.2 < float(seconds) < math.inf)
    except OverflowError:
        return True


# -- the command line ---------------------------------------------------------

#: Arguments as a shell hands them over: any text, bytes that are not UTF-8
#: as lone surrogates.
ARGS = st.one_of(NAMES.filter(lambda arg: "\x00" not in arg), st.sampled_from(["99999999d", "nan", "-1s", "0s", "1e400"]))


COMMANDS = st.one_of(
    st.tuples(st.just("list"), st.sampled_from(["--prefix", "--queue", "--since", "--status", "--limit"]), ARGS),
    st.tuples(st.sampled_from(["show", "cancel", "resume"]), ARGS),
    st.tuples(st.just("show"), st.just("cli-run"), st.just("--child"), ARGS),
    st.tuples(st.just("fork"), st.just("cli-run"), ARGS, st.just("--input"), ARGS),
    st.tuples(st.just("fork"), st.just("cli-run"), st.just("new"), st.just("--from-step"), ARGS),
    st.tuples(st.just("gc"), st.just("--older-than"), ARGS),
    st.tuples(st.just("queues")),
)


@FUZZ
@example(command=("show", "a\udcff"))  # what a shell makes of the bytes b"a\xff"
@example(command=("list", "--prefix", "a\udcff"))
@example(command=("fork", "cli-run", "new", "--from-step", "\udcff"))
@given(command=COMMANDS)
async def test_every_command_answers_in_one_line_with_its_exit_code(
    db: durable.Db, dsn: str, command: tuple[str, ...]
) -> None:
    await echo.enqueue(db, "cli-run", 1)
    args = ["--dsn", dsn, "--schema", db.schema, *command]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.output
    if any("\udcff" in arg for arg in command):  # a name that is not text: a usage error
        assert result.exit_code == 2 and "lone surrogate" in result.output, result.output
    await every_reader_works(db)


# -- the ui, through its ASGI app ---------------------------------------------


async def asgi(app: Any, method: str, path: str, body: bytes = b"") -> int:
    """One request to ``app``; its status."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8765"),
            (b"x-durable-ui", b"1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8765),
    }
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while answering
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def segment(name: str) -> str:
    """``name`` as one URL path segment (a lone surrogate as its UTF-8 with surrogatepass)."""
    return quote(name.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def app(db: durable.Db) -> Any:
    return web.make_app(db, host="127.0.0.1", port=8765)


def body(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, allow_nan=True).encode("utf-8", "surrogatepass")


@FUZZ
@example(name="a\udc80", other="\x00", value=nested(101), when="9999-12-31T23:00:00-05:00")
@given(name=NAMES, other=NAMES, value=VALUES, when=st.one_of(st.none(), DURATIONS.map(str), TIMES.map(datetime.isoformat)))
async def test_the_ui_answers_a_value_with_a_page_or_a_4xx_never_a_500(
    db: durable.Db, app: Any, name: str, other: str, value: Any, when: str | None
) -> None:
    await echo.enqueue(db, "ui-run", 1)
    query = {"prefix": name, "queue": other, "status": name, "since": when or "", "input": other, "parent": name}
    requests: list[tuple[str, str] | tuple[str, str, bytes]] = [
        ("GET", "/?" + urlencode({key: text.encode("utf-8", "surrogatepass") for key, text in query.items()})),
        ("GET", f"/runs/{segment(name)}"),
        ("GET", f"/runs/ui-run?child={segment(other)}"),
        ("GET", f"/api/live/runs/{segment(name)}"),
        ("GET", "/queues"),
        ("GET", "/schedules"),
        ("GET", "/start"),
        ("POST", "/api/start", body({"workflow": "fuzz.echo", "name": name, "input": json.dumps(value), "delay": when})),
        ("POST", "/api/start", body({"workflow": "fuzz.echo", "name": other, "run_at": when})),
        ("POST", f"/api/runs/{segment(name)}/send", body({"topic": other, "value": json.dumps(value)})),
        ("POST", "/api/runs/ui-run/fork", body({"new_name": name, "input": json.dumps(value)})),
        ("POST", f"/api/runs/{segment(name)}/cancel"),
        ("POST", f"/api/runs/{segment(name)}/resume"),
        ("POST", f"/api/queues/{segment(other)}/pause"),
    ]
    for method, path, *payload in requests:
        status = await asgi(app, method, path, *(payload if payload else [b""]))
        assert status < 500, (method, path, payload, status)
    await every_reader_works(db)
    for path in ("/", "/queues", "/runs/ui-run"):
        assert await asgi(app, "GET", path) == 200, path


# -- what only SQL written by hand stores -------------------------------------


async def test_the_sql_enqueue_refuses_an_input_no_reader_reads(db: durable.Db, pg: asyncpg.Connection) -> None:
    enqueue = f"SELECT {db.schema}.enqueue('fuzz.echo', $1, $2::jsonb)"
    for name, text, said in [
        ("deep", "[" * 101 + "1" + "]" * 101, "nested more than 100 levels deep"),
        ("huge", '{"a": [1e400]}', "a number beyond any float"),
        ("negative", "-1e309", "a number beyond any float"),
    ]:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=said):
            await pg.fetchval(enqueue, name, text)
    await pg.fetchval(enqueue, "deepest", "[" * 100 + "1" + "]" * 100)  # what the Python API takes too
    assert (await durable.get(db, "deepest")).input == nested(100)
    assert [run.name for run in await every_reader_works(db)] == ["deepest"]


async def test_a_value_no_reader_reads_is_shown_as_text_never_failing_a_listing(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    await echo.enqueue(db, "deep", 1)
    await echo.enqueue(db, "huge", 1)
    await echo.enqueue(db, "fine", 1)
    deep = "[" * 129 + "]" * 129
    await pg.execute("UPDATE task SET input = $1::jsonb WHERE name = 'deep'", deep)
    await pg.execute("UPDATE task SET output = '[1e1500]'::jsonb WHERE name = 'huge'")
    runs = {run.name: run for run in await every_reader_works(db)}
    assert set(runs) == {"deep", "huge", "fine"}
    for run in (runs["deep"], await durable.get(db, "deep"), (await durable.tree(db, "deep")).info):
        assert run.input is None and run.out_of_range == {"input": deep}
    huge = runs["huge"]
    assert huge.input == 1 and huge.output is None and huge.out_of_range["output"].startswith("[1000000000")
    assert len(huge.out_of_range["output"]) < 1100 and huge.out_of_range["output"].endswith(" bytes in all)")
    assert runs["fine"].out_of_range == {}
