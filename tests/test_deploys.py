"""Queued work through deploys and network cuts: a claim whose answer is
lost, and executor processes stopped (SIGTERM) and restarted over a backlog.

The deploy storm's backlog is ``DURABLE_DEPLOY_RUNS`` runs (default 40, about
10 s); ``DURABLE_DEPLOY_SEED`` seeds the test's choices (how many step bodies
each worker runs before its SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

import durable
from _programs import PROGRAMS
from _proxy import FaultProxy
from _waits import until
from durable import Ctx

sys.path.insert(0, str(PROGRAMS))
import deploys  # noqa: E402

DEPLOY_RUNS = int(os.environ.get("DURABLE_DEPLOY_RUNS", "40"))
#: How long the storm may take before it counts as stuck.
DEPLOY_TIMEOUT = 60 + DEPLOY_RUNS

async def unfinished(db: durable.Db, pg: asyncpg.Connection, names: list[str], owner: str | None = None) -> str:
    """The runs of ``names`` not completed: status, whether ``owner`` (a
    live executor's) holds it, and why it waits."""
    held = {r["name"] for r in await pg.fetch("SELECT name FROM task WHERE owner_id = $1", owner)} if owner else set()
    said = []
    for name in names:
        info = await durable.get(db, name)
        if info.status != "completed":
            owner = " under the executor's owner" if name in held else ""
            said.append(f"{name} {info.status}{owner}" + (f" ({info.waiting_for})" if info.waiting_for else ""))
    return "; ".join(said)


# -- a lost claim answer -------------------------------------------------------------------------

#: How many times the step body of each run ran (its executor runs in this process).
bodies: Counter[str] = Counter()


@durable.workflow(name="deploys.brief", queue="lone")
async def brief(ctx: Ctx, n: int) -> int:
    async def body() -> int:
        bodies[ctx.name] += 1
        return 2 * n

    return await ctx.step("work", body)


async def test_a_claim_whose_answer_is_lost_strands_no_run(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await durable.create_queue(db, "lone", concurrency=1)
    names = [f"lost-{i}" for i in range(4)]
    server = urlsplit(dsn)
    async with FaultProxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        async with await durable.init(proxy.via(dsn), schema=schema) as cut_off:
            # Armed after init (whose pooler check commits) and before anything
            # is queued: the executor's first commit is its first claim's.
            proxy.arm_commit_cut()
            runs = await brief.enqueue_many(db, [(name, i) for i, name in enumerate(names)])
            executor = durable.Executor(cut_off, [brief], concurrency=4, recovery_interval=0.2)
            running = asyncio.ensure_future(executor.run())
            try:
                await asyncio.wait_for(proxy.cut.wait(), 30)
                lost = [name for name in names if name.encode() in proxy.lost_answer]
                assert len(lost) == 1, f"the lost answer was a claim of one run (the queue's only slot): {lost}"

                async def all_completed() -> bool:
                    done: int = await pg.fetchval(
                        "SELECT count(*) FROM task WHERE parent_id IS NULL AND status = 'completed'"
                    )
                    return done == len(names)

                try:
                    await until(all_completed, "every run completed", timeout=30)
                except AssertionError:
                    raise AssertionError(
                        f"30 s after the answer to the claim of {lost[0]} was lost, the executor (alive, running "
                        f"{executor.running} runs) left runs unfinished: {await unfinished(db, pg, names, cut_off.owner_id)}"
                    ) from None
            finally:
                executor.stop()
                await running
    assert [await run.result(timeout=1) for run in runs] == [2 * i for i in range(len(names))]
    assert {name: bodies[name] for name in names} == dict.fromkeys(names, 1), "each run's body ran once"


# -- the deploy storm ----------------------------------------------------------------------------


async def start_worker(dsn: str, schema: str, log: Path) -> asyncio.subprocess.Process:
    """``durable worker deploys:executor``, logging to ``log``."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable", "--schema", schema, "worker", "deploys:executor",
            cwd=PROGRAMS, env={**os.environ, "DURABLE_DATABASE_URL": dsn}, stderr=out,
        )  # fmt: skip


async def deploy_slot(
    dsn: str, schema: str, log: Path, rng: random.Random, done: asyncio.Event, stopped: list[int]
) -> None:
    """One executor process after another until ``done``: each is stopped
    (SIGTERM) once it ran a few step bodies, while its newest body is a
    run's last step, and waited for (it must drain and exit 0)."""
    watch = await asyncpg.connect(dsn, server_settings={"search_path": schema})

    async def look(proc: asyncio.subprocess.Process) -> asyncpg.Record:
        assert proc.returncode is None, f"worker {proc.pid} exited with {proc.returncode}: see {log}"
        row = await watch.fetchrow(
            """SELECT EXISTS (SELECT 1 FROM owner AS o JOIN executor AS e ON e.owner_id = o.id WHERE o.pid = $1) AS serving,
                      (SELECT count(*) FROM bodies WHERE pid = $1) AS bodies,
                      (SELECT step FROM bodies WHERE pid = $1 ORDER BY id DESC LIMIT 1) AS newest""",
            proc.pid,
        )
        assert row is not None
        return row

    try:
        while not done.is_set():
            proc = await start_worker(dsn, schema, log)
            quota = rng.randint(3, 8)

            async def serving() -> bool:
                # Its executor registered: SIGTERM now starts a graceful stop.
                return bool((await look(proc))["serving"])

            async def time_to_stop() -> bool:
                row = await look(proc)
                return done.is_set() or (row["bodies"] >= quota and row["newest"] == "s2")

            try:
                await until(serving, f"worker {proc.pid} serves (see {log})", timeout=30)
                await until(time_to_stop, f"worker {proc.pid} ran {quota} step bodies (see {log})", timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):  # it may have exited already
                    proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 30)
            assert code == 0, f"worker {proc.pid} exited with {code} after SIGTERM: see {log}"
            stopped.append(proc.pid)
    finally:
        await watch.close()


@pytest.mark.slow
@pytest.mark.timeout(DEPLOY_TIMEOUT + 60)
async def test_a_deploy_storm_fails_no_run_and_runs_no_step_twice(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    await pg.execute("CREATE TABLE bodies (id bigserial, run text NOT NULL, step text NOT NULL, pid int NOT NULL)")
    names = [f"deploy-{i:04d}" for i in range(DEPLOY_RUNS)]
    await deploys.three.enqueue_many(db, [(name, i) for i, name in enumerate(names)])
    rng = random.Random(os.environ.get("DURABLE_DEPLOY_SEED"))
    done = asyncio.Event()
    stopped: list[int] = []
    log = tmp_path / "workers.log"
    slots = [asyncio.ensure_future(deploy_slot(dsn, schema, log, rng, done, stopped)) for _ in range(2)]

    async def finished() -> bool:
        if any(slot.done() for slot in slots):
            return True  # a slot failed: its error is raised below
        count: int = await pg.fetchval(
            "SELECT count(*) FROM task WHERE parent_id IS NULL AND status IN ('completed', 'failed', 'cancelled')"
        )
        return count == DEPLOY_RUNS

    try:
        await until(finished, f"the backlog of {DEPLOY_RUNS} runs was done", timeout=DEPLOY_TIMEOUT)
    except AssertionError:
        stuck = await unfinished(db, pg, names)
        raise AssertionError(f"the backlog was not done within {DEPLOY_TIMEOUT} s: {stuck} (see {log})") from None
    finally:
        done.set()
        await asyncio.gather(*slots)

    roots = await pg.fetch(
        "SELECT name, status, output, recoveries, error FROM task WHERE parent_id IS NULL ORDER BY name"
    )
    failed = [r for r in roots if r["status"] == "failed"]
    assert not failed, (
        f"{len(failed)} of {DEPLOY_RUNS} runs failed through {len(stopped)} graceful stops "
        f"({', '.join(r['name'] for r in failed)}); the first: {json.loads(failed[0]['error'])['message']}"
    )
    recovered = {r["name"]: r["recoveries"] for r in roots if r["recoveries"]}
    assert not recovered, f"runs recovered as if their holder had crashed (a graceful stop is no crash): {recovered}"
    assert [(r["name"], r["status"], r["output"]) for r in roots] == [
        (name, "completed", str(3 * i)) for i, name in enumerate(names)
    ]
    counts = await pg.fetch("SELECT run, step, count(*) AS n FROM bodies GROUP BY run, step")
    twice = sorted(f"{r['run']}/{r['step']} x{r['n']}" for r in counts if r["n"] != 1)
    assert not twice, f"step bodies ran more than once: {twice}"
    assert len(counts) == 3 * DEPLOY_RUNS, "every step body ran"
    assert len(stopped) >= 2, "the storm stopped workers while they worked"
    print(f"\ndeploy storm: {DEPLOY_RUNS} runs of 3 steps done through {len(stopped)} graceful stops")
