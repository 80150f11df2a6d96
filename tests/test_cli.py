"""The ``durable`` command against a real database: in process through
click's runner, and as a real process for the worker and a bad DSN."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result

import durable
from durable import Backoff, Ctx, _core
from _waits import until
from durable.cli import cli

PROGRAMS = Path(__file__).parent / "programs"
FAST = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)


@durable.workflow(name="cli.double", queue="cli")
async def double(ctx: Ctx, n: int) -> int:
    """The workflow of programs/cli_jobs.py, by name: to enqueue its runs."""
    raise AssertionError("runs in the worker process")


async def durable_cli(dsn: str, schema: str, *args: str) -> Result:
    """Runs ``durable --dsn DSN --schema SCHEMA ARGS`` in a thread (the
    command runs an event loop of its own)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, ["--dsn", dsn, "--schema", schema, *args])


async def json_of(dsn: str, schema: str, *args: str) -> Any:
    """The parsed ``--json`` output of a command that succeeds."""
    result = await durable_cli(dsn, schema, *args, "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def fails(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def make_etl(db: durable.Db) -> None:
    """A failed workflow ``etl``: a completed step, a step that failed twice
    (one retry), and a completed child with a step."""
    ctx = await Ctx.start(db, "etl", input={"day": 1})
    await ctx.step("extract", lambda: [1, 2])

    def broken() -> None:
        raise ValueError("shard 2 is corrupt")

    with pytest.raises(ValueError):
        await ctx.step("transform", broken, retries=1, backoff=FAST)
    child = await ctx.child("publish", input=None)
    await child.step("notify", lambda: "sent")
    await child.complete("ok")
    await ctx.fail(ValueError("shard 2 is corrupt"))


async def test_show_prints_the_tree_with_failed_steps_attempts_and_tracebacks(
    db: durable.Db, dsn: str, schema: str
) -> None:
    await make_etl(db)
    tree = await json_of(dsn, schema, "show", "etl")
    assert (tree["name"], tree["status"], tree["input"]) == ("etl", "failed", {"day": 1})
    assert tree["error"]["type"] == "ValueError"
    steps = [(s["name"], s["status"], s["attempt"]) for s in tree["steps"]]
    assert steps == [("extract", "completed", 1), ("transform", "failed", 2)]
    assert tree["steps"][0]["output"] == [1, 2]
    failed = tree["steps"][1]["error"]
    assert (failed["type"], failed["message"]) == ("ValueError", "shard 2 is corrupt")
    assert "Traceback (most recent call last)" in failed["traceback"] and "broken" in failed["traceback"]
    [child] = tree["children"]
    assert (child["name"], child["path"], child["status"], child["output"]) == (
        "publish",
        ["etl", "publish"],
        "completed",
        "ok",
    )
    assert [(s["name"], s["output"]) for s in child["steps"]] == [("notify", "sent")]
    assert child["children"] == []
    assert await json_of(dsn, schema, "show", "etl", "--child", "publish") == child

    result = await durable_cli(dsn, schema, "show", "etl")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("etl  failed")
    assert lines[1].strip() == "ValueError: shard 2 is corrupt"
    text = result.stdout
    assert "├─ step extract  completed" in text
    assert "├─ step transform  failed (attempt 2)" in text
    assert "└─ workflow publish  completed" in text
    assert "   └─ step notify  completed" in text
    # The step's traceback, indented under it, with the line that raised.
    at = lines.index(next(line for line in lines if "step transform" in line))
    assert lines[at + 1].lstrip("│ ") == "ValueError: shard 2 is corrupt"
    assert lines[at + 2].lstrip("│ ") == "Traceback (most recent call last):"
    assert lines[at + 2].startswith("│")
    assert any('raise ValueError("shard 2 is corrupt")' in line for line in lines[at:])


async def test_unknown_names_exit_1_with_one_line(db: durable.Db, dsn: str, schema: str) -> None:
    for command in ("show", "cancel", "resume"):
        result = await durable_cli(dsn, schema, command, "nope")
        fails(result, 1, "there is no workflow named 'nope'")
        assert len(result.stderr.strip().splitlines()) == 1
    # A name that is not a name is a usage error, found before connecting.
    fails(await durable_cli(dsn, schema, "show", "etl", "--child", ""), 2, "invalid child workflow name")
    fails(await durable_cli(dsn, schema, "show", "etl/publish"), 1, "there is no workflow named 'etl/publish'")
    fails(
        await durable_cli(dsn, schema, "cancel", "etl", "--child", "publish"),
        1,
        "there is no workflow at path ('etl', 'publish')",
    )


async def test_a_name_is_one_argument_and_a_child_is_given_by_child(db: durable.Db, dsn: str, schema: str) -> None:
    parent = await Ctx.start(db, "a")
    child = await parent.child("b")
    grandchild = await child.child("x/y")
    root = await Ctx.start(db, "a/b")
    assert (await json_of(dsn, schema, "show", "a/b"))["id"] == root.id
    shown = await json_of(dsn, schema, "show", "a", "--child", "b")
    assert (shown["id"], shown["name"], shown["path"]) == (child.id, "b", ["a", "b"])
    deep = await json_of(dsn, schema, "show", "a", "--child", "b", "--child", "x/y")
    assert (deep["id"], deep["path"]) == (grandchild.id, ["a", "b", "x/y"])
    text = (await durable_cli(dsn, schema, "show", "a", "--child", "b")).stdout
    assert text.startswith("('a', 'b')  running") and "└─ workflow x/y  running" in text

    cancelled = await json_of(dsn, schema, "cancel", "a", "--child", "b")
    assert cancelled == {"name": "b", "path": ["a", "b"], "cancelled": True}

    async def told() -> bool:  # the notification reaches this process's holds
        return child.status == grandchild.status == "cancelled"

    await until(told, "the holder was told")
    assert (parent.status, root.status) == ("running", "running"), "its parent and the root named a/b go on"
    fails(
        await durable_cli(dsn, schema, "cancel", "a", "--child", "b"),
        1,
        "workflow ('a', 'b') is already cancelled: nothing to cancel",
    )
    result = await durable_cli(dsn, schema, "cancel", "a/b")
    assert (result.exit_code, result.stdout) == (0, "cancelled workflow 'a/b' and its unfinished children\n")
    assert parent.status == "running"


async def test_cancel_chooses_the_children_and_the_enqueued_runs(
    db: durable.Db, dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    for name in ("keep", "all"):
        ctx = await Ctx.start(db, name)
        await ctx.child("kid")
        # The block's end completes the workflow unless the cancel's
        # notification reached this process first: refused then (Cancelled),
        # either way the workflow stays cancelled.
        with contextlib.suppress(durable.Cancelled):
            async with ctx:  # the current workflow: the run it enqueues is linked to it
                await double.enqueue(db, f"{name}-run", 1)
                args = ["--no-children"] if name == "keep" else ["--enqueued"]
                result = await durable_cli(dsn, schema, "cancel", name, *args)
    assert result.exit_code == 0
    rows = await pg.fetch("SELECT name, status FROM task WHERE kind = 'workflow' ORDER BY id")
    assert [(r["name"], r["status"]) for r in rows] == [
        ("keep", "cancelled"),
        ("kid", "running"),
        ("keep-run", "queued"),
        ("all", "cancelled"),
        ("kid", "cancelled"),
        ("all-run", "cancelled"),
    ]
    result = await durable_cli(dsn, schema, "cancel", "keep", "--child", "kid", "--no-children")
    assert (result.exit_code, result.stdout) == (0, "cancelled workflow ('keep', 'kid') alone\n")


async def test_list_filters_and_prints_a_table(db: durable.Db, dsn: str, schema: str) -> None:
    await make_etl(db)
    async with Ctx.start(db, "report-1") as ctx:
        await ctx.complete(1)
    await double.enqueue(db, "double-1", 1)
    await double.enqueue(db, "double-later", 2, delay=3600)

    names = [run["name"] for run in await json_of(dsn, schema, "list")]
    assert names == ["double-later", "double-1", "report-1", "etl"], "newest first"
    failed = await json_of(dsn, schema, "list", "--status", "failed")
    assert [run["name"] for run in failed] == ["etl"]
    assert failed[0]["error"]["message"] == "shard 2 is corrupt"
    queued = await json_of(dsn, schema, "list", "--queue", "cli")
    assert [(r["name"], r["status"]) for r in queued] == [("double-later", "scheduled"), ("double-1", "queued")]
    assert queued[0]["waiting_for"].startswith("delayed until ")
    assert [r["name"] for r in await json_of(dsn, schema, "list", "--prefix", "double-", "--limit", "1")] == [
        "double-later"
    ]
    assert [r["name"] for r in await json_of(dsn, schema, "list", "--name-prefix", "double-l")] == ["double-later"]
    assert len(await json_of(dsn, schema, "list", "--since", "1h")) == 4
    assert await json_of(dsn, schema, "list", "--since", "2999-01-01T00:00:00Z") == []
    assert len(await json_of(dsn, schema, "--json", "list", "--since", "2000-01-01")) == 4, "--json before too"

    result = await durable_cli(dsn, schema, "list")
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert [cell.strip() for cell in header.split("  ") if cell] == [
        "NAME",
        "STATUS",
        "WORKFLOW",
        "QUEUE",
        "CREATED",
        "DURATION",
        "WAITING FOR / ERROR",
    ]
    assert rows[0].split()[:4] == ["double-later", "scheduled", "cli.double", "cli"]
    assert "ValueError: shard 2 is corrupt" in rows[3]

    fails(await durable_cli(dsn, schema, "list", "--since", "yesterday"), 2, "neither a duration")
    fails(await durable_cli(dsn, schema, "list", "--status", "done"), 2, "'done' is not one of")


async def test_cancel_and_resume_report_what_they_did(db: durable.Db, dsn: str, schema: str) -> None:
    await double.enqueue(db, "d", 1)
    assert await json_of(dsn, schema, "cancel", "d") == {"name": "d", "path": ["d"], "cancelled": True}
    assert (await durable.get(db, "d")).status == "cancelled"
    fails(await durable_cli(dsn, schema, "cancel", "d"), 1, "workflow 'd' is already cancelled: nothing to cancel")
    assert await json_of(dsn, schema, "resume", "d") == {"name": "d", "resumed": True, "status": "queued"}
    result = await durable_cli(dsn, schema, "resume", "d")
    fails(result, 1, "workflow 'd' is queued: only a failed or cancelled workflow can be resumed")

    result = await durable_cli(dsn, schema, "cancel", "d")
    assert (result.exit_code, result.stdout) == (0, "cancelled workflow 'd' and its unfinished children\n")


async def test_queues_show_limits_and_use(db: durable.Db, dsn: str, schema: str) -> None:
    from datetime import timedelta

    await durable.create_queue(db, "cli", concurrency=4, rate_limit=[(10, timedelta(minutes=1))])
    await durable.pause_queue(db, "paused")
    await double.enqueue(db, "d1", 1)
    await double.enqueue(db, "d2", 2, delay=3600)
    found = await json_of(dsn, schema, "queues")
    assert [q["name"] for q in found] == ["cli", "paused"]
    cli_queue = found[0]
    assert (cli_queue["paused"], cli_queue["concurrency"], cli_queue["concurrency_per_key"]) == (False, 4, None)
    assert (cli_queue["running"], cli_queue["queued"], cli_queue["delayed"]) == (0, 1, 1)
    assert cli_queue["rates"] == [{"limit": 10, "period": 60.0, "used": 0}]
    assert cli_queue["oldest_due"] is not None
    assert found[1]["paused"] is True and found[1]["oldest_due"] is None

    result = await durable_cli(dsn, schema, "queues")
    header, first, second = result.stdout.splitlines()
    assert header.split()[:3] == ["QUEUE", "PAUSED", "CONCURRENCY"]
    assert first.split()[0] == "cli" and first.rstrip().endswith("0/10 per 1m00s")
    assert second.split()[:2] == ["paused", "paused"]


async def test_migrate_creates_then_reports_the_version(dsn: str, schema: str) -> None:
    version = _core.SCHEMA_VERSION
    result = await durable_cli(dsn, schema, "migrate")
    assert (result.exit_code, result.stdout) == (0, f"created schema '{schema}' at version {version}\n")
    again = await json_of(dsn, schema, "migrate")
    assert again == {"schema": schema, "version": version, "previous_version": version}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_only_migrate_creates_the_schema(dsn: str, schema: str) -> None:
    result = await durable_cli(dsn, schema, "list")
    fails(result, 3, f'the database schema "{schema}" does not exist')
    assert "durable migrate" in result.stderr
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regnamespace($1) IS NULL", schema), "nothing was created"
        assert (await durable_cli(dsn, schema, "migrate")).exit_code == 0
        await conn.execute(f'DELETE FROM "{schema}".migration WHERE version = $1', _core.SCHEMA_VERSION)
        previous = await conn.fetchval(f'SELECT max(version) FROM "{schema}".migration')
        result = await durable_cli(dsn, schema, "queues")
        fails(result, 3, f"is at version {previous}, and this durable needs version")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_gc_deletes_old_finished_trees_only(
    db: durable.Db, dsn: str, schema: str, pg: asyncpg.Connection
) -> None:
    await make_etl(db)  # failed, with a child and steps
    async with Ctx.start(db, "done-old") as ctx:
        await ctx.step("s", lambda: 1)
    async with Ctx.start(db, "done-new") as ctx:
        await ctx.step("s", lambda: 1)
    running = await Ctx.start(db, "running-old")
    await running.step("s", lambda: 1)
    await double.enqueue(db, "queued-old", 1)
    await double.enqueue(db, "cancelled-old", 2)
    await durable.cancel(db, "cancelled-old")
    # Finished (or touched) two days ago, for all but done-new; unfinished
    # rows get a completed_at too, so only their status keeps them.
    await pg.execute(
        """UPDATE task SET completed_at = now() - interval '2 days', created_at = now() - interval '3 days'
           WHERE root_id IN (SELECT id FROM task WHERE parent_id IS NULL AND name <> 'done-new')"""
    )
    assert await pg.fetchval("SELECT count(*) FROM task WHERE root_id = (SELECT id FROM task WHERE name = 'etl')") == 5

    assert await json_of(dsn, schema, "gc", "--older-than", "3d") == {"deleted": 0, "older_than": 259200.0}
    assert await json_of(dsn, schema, "gc", "--older-than", "1d", "--batch", "1") == {
        "deleted": 3,
        "older_than": 86400.0,
    }
    left = await pg.fetch(
        """SELECT r.name, count(t.*) AS rows FROM task AS r JOIN task AS t ON t.root_id = r.id
           WHERE r.parent_id IS NULL GROUP BY r.name ORDER BY r.name"""
    )
    assert [(row["name"], row["rows"]) for row in left] == [("done-new", 2), ("queued-old", 1), ("running-old", 2)]
    assert await pg.fetchval("SELECT count(*) FROM task") == 5, "no child or step of a deleted tree is left"
    await running.complete(None)

    result = await durable_cli(dsn, schema, "gc", "--older-than", "0s")
    assert (result.exit_code, result.stdout.split()[:2]) == (0, ["deleted", "2"])
    fails(await durable_cli(dsn, schema, "gc", "--older-than", "a month"), 2, "is not a duration")
    fails(await durable_cli(dsn, schema, "gc"), 2, "Missing option '--older-than'")


#: A database never reached: a usage error is found before connecting.
UNREACHED = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connect-timeout", "nan", "list"], "'nan' is not a number of seconds"),
        (["list", "--connect-timeout", "nan"], "'nan' is not a number of seconds"),
        (["list", "--since", "99999999d"], "'99999999d' ago is before the year 1"),
        (["list", "--since", "9999-12-31T23:00:00-05:00"], "is not within the years 1 to 9999 in UTC"),
        (["list", "--since", "0001-01-01T00:00:00+14:00"], "is not within the years 1 to 9999 in UTC"),
        (["gc", "--older-than", "99999999999d"], "is longer than a duration can be"),
        (["gc", "--older-than", "1000000d"], "'1000000d' is longer than 36600d (a century), the most gc takes"),
        (["fork", "a", "b", "--input", "NaN"], "not JSON: NaN is not a JSON value"),
        (["fork", "a", "b", "--input", "1e999"], "the number 1e999 is too large for a float"),
        (["fork", "a", "b", "--input", "[" * 100_000 + "]" * 100_000], "it is nested too deep"),
        (["list", "--bogus"], "No such option '--bogus'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", UNREACHED, *args])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "--help" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_connection_options_go_before_or_after_the_command(db: durable.Db, dsn: str, schema: str) -> None:
    await make_etl(db)
    connection = ["--dsn", dsn, "--schema", schema]
    for args in (
        ["list", *connection, "--json"],
        ["list", "--json", "--connect-timeout", "5", *connection],
        ["show", "etl", *connection, "--json"],
        # Given in both places, the one after the command wins.
        ["--dsn", UNREACHED, "--schema", "elsewhere", "--connect-timeout", "1", "list", *connection, "--json"],
    ):
        result = await asyncio.to_thread(CliRunner().invoke, cli, args)
        assert result.exit_code == 0, (args, result.stderr)
        found = json.loads(result.stdout)
        assert (found[0] if isinstance(found, list) else found)["name"] == "etl", args
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["queues", "--dsn", UNREACHED, "--connect-timeout", "1"])
    fails(result, 3, "cannot connect to Postgres at 127.0.0.1:1")
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["--dsn", dsn, "queues", "--schema", "no_such_schema"])
    fails(result, 3, 'the database schema "no_such_schema" does not exist')


def run_durable(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://someone:s3cret@127.0.0.1:1/db", "cannot connect to Postgres at 127.0.0.1:1"),
        ("postgresql://someone:s3cret@127.0.0.1:5432:9/db", "invalid database URL"),
    ],
)
def test_a_bad_dsn_exits_3_with_one_line_and_no_password(dsn: str, message: str) -> None:
    result = run_durable("--dsn", dsn, "list")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize("target", ["cli_jobs:workflows", "cli_jobs:make_executor"])
async def test_worker_runs_the_queue_until_sigterm(db: durable.Db, dsn: str, schema: str, target: str) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", "--dsn", dsn, "--schema", schema, "worker", target,
        cwd=PROGRAMS,
        env={**os.environ, "PYTHONPATH": ""},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        run = await double.enqueue(db, "double-21", 21)
        assert await run.result(timeout=60) == 42
        info = await durable.tree(db, "double-21")
        assert [(s.name, s.output) for s in info.steps] == [("read", 21)]
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, stderr.decode()
    assert "worker stopped" in stderr.decode()
    assert "Traceback" not in stderr.decode()


def test_worker_refuses_what_it_cannot_run() -> None:
    for target, message in [
        ("cli_jobs", "is not module:object"),
        ("no_such_module:x", "there is no module named 'no_such_module'"),
        ("cli_jobs:nothing", "module 'cli_jobs' has no 'nothing'"),
        ("cli_jobs:__doc__", "is a str"),
        ("cli_jobs:make_executor --concurrency 3", "--concurrency is for a list of workflows"),
    ]:
        result = run_durable("--dsn", "postgresql://x@127.0.0.1:1/x", "worker", *target.split(), cwd=PROGRAMS)
        assert result.returncode == 2, (target, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


async def test_the_read_api_checks_its_arguments(db: durable.Db) -> None:
    with pytest.raises(durable.ConfigError, match="older_than"):
        await durable.gc(db, -1)
    with pytest.raises(durable.ConfigError, match="batch"):
        await durable.gc(db, 0, batch=0)
    with pytest.raises(durable.WorkflowNotFound, match="there is no workflow named 'x/y'"):
        await durable.tree(db, "x/y")
    with pytest.raises(durable.InvalidName):
        await durable.tree(db, "")
    assert await durable.gc(db, 0) == 0
    assert await durable.list_queues(db) == []
