"""durable's side of the suite: one workload per invocation (see bench/suite.py).

    python bench/suite_durable.py W1 --dsn URL --size 1000

Prints the figures as one JSON line. Runs in the project's venv against the
release build (`make build-release`). Its schema: durable_bench_suite.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import durable
from durable import Ctx
from suite_common import (
    RESTART_AFTER_S,
    RESUME_STEP_RESULT,
    emit,
    exit_now,
    kill,
    last_json,
    now,
    parser,
    peak_rss_mb,
    pct,
    pg_connect,
    rss_mb,
    small_dict,
    spawn,
    stop,
    wait_line,
)

if TYPE_CHECKING:
    import asyncpg

SCHEMA = "durable_bench_suite"

#: Workflows run at once before W2 and W5, untimed (F2 warms its pool of 16
#: with 32 inserts at once): connections opened, statements prepared.
WARM_IN_FLIGHT = 32


async def connect(dsn: str, **options: Any) -> durable.Db:
    return await durable.init(dsn, schema=SCHEMA, **options)


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def timed_steps(ctx: Ctx, steps: int, latencies: list[float]) -> None:
    """``steps`` steps one after another, each returning a small dict."""
    for i in range(steps):
        started = time.perf_counter()
        await ctx.step(f"s{i}", functools.partial(small_dict, i))
        latencies.append(time.perf_counter() - started)


async def one_workflow(db: durable.Db, name: str, steps: int, latencies: list[float]) -> None:
    ctx = await Ctx.start(db, name)
    await timed_steps(ctx, steps, latencies)
    await ctx.complete(None)


async def w1(dsn: str, steps: int) -> dict[str, Any]:
    """One workflow, ``steps`` sequential steps (after a warm-up of 20)."""
    db = await connect(dsn)
    await one_workflow(db, f"warm-{tag()}", 20, [])
    ctx = await Ctx.start(db, f"w1-{tag()}")
    latencies: list[float] = []
    started = time.perf_counter()
    await timed_steps(ctx, steps, latencies)
    elapsed = time.perf_counter() - started
    await ctx.complete(None)
    await db.close()
    return {
        "steps_per_s": steps / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def in_flight(dsn: str, workflows: int, steps: int) -> dict[str, Any]:
    """W2, W5: ``workflows`` workflows of ``steps`` steps, all at once
    (after a warm-up of 32 workflows of one step at once, as F2 warms its
    pool with 32 inserts at once)."""
    db = await connect(dsn)
    t = tag()
    await asyncio.gather(*(one_workflow(db, f"warm-{t}-{k}", 1, []) for k in range(WARM_IN_FLIGHT)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(one_workflow(db, f"w-{t}-{w}", steps, latencies) for w in range(workflows)))
    elapsed = time.perf_counter() - started
    await db.close()
    return {
        "steps_per_s": workflows * steps / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "peak_rss_mb": peak_rss_mb(),
    }


async def m1(dsn: str, total: int) -> dict[str, Any]:
    """RSS after 1,000 steps and after ``total``, in rounds of 10 workflows x 100 steps."""
    db = await connect(dsn)
    t = tag()
    after_first = 0.0
    for r in range(total // 1000):
        await asyncio.gather(*(one_workflow(db, f"m1-{t}-{r}-{w}", 100, []) for w in range(10)))
        if r == 0:
            after_first = rss_mb()
    after_all = rss_mb()
    await db.close()
    return {"rss_1k_mb": after_first, "rss_end_mb": after_all, "growth_mb": after_all - after_first}


# -- W3, W3-grace0, W3b: resume in a new process -------------------------------------

#: The role of this process in W3: "setup" blocks in the first new step (to be
#: killed there), "resume" notes when that step's body starts and when the
#: step ends (its result committed).
role = "resume"
first_new_step_at = 0.0
new_step_done_at = 0.0


async def new_step() -> dict[str, Any]:
    global first_new_step_at
    if role == "setup":
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL
    first_new_step_at = now()
    return RESUME_STEP_RESULT


async def steps_then_new(ctx: Ctx, steps: int) -> None:
    """``steps`` steps returning the same small dict, then the new step."""
    global new_step_done_at
    for i in range(steps):
        await ctx.step(f"s{i}", lambda: RESUME_STEP_RESULT)
    await ctx.step("new", new_step)
    new_step_done_at = now()
    await ctx.complete(None)


async def w3_setup(dsn: str, name: str, steps: int, grace0: bool) -> None:
    # W3 runs the crashed program with the default options, as users do:
    # whoever resumes its workflow may have to wait out its session_grace.
    # W3-grace0 and W3b give it session_grace=0 (its session only ends with
    # it), to measure the resume without that wait.
    options = {"session_grace": 0} if grace0 else {}
    await steps_then_new(await Ctx.start(await connect(dsn, **options), name), steps)


async def w3_resume(dsn: str, name: str, steps: int) -> dict[str, Any]:
    """Resumes the workflow with the default options; where the time went:
    the interpreter and its imports, init (connections, migrations checked),
    the takeover (``Ctx.start``, which waits while the dead holder is still
    taken for alive), the replay."""
    main_at = now()
    db = await connect(dsn)
    init_at = now()
    ctx = await Ctx.start(db, name, wait=60)
    taken_at = now()
    await steps_then_new(ctx, steps)
    await db.close()
    return {
        "first_new_step_at": first_new_step_at,
        "new_step_done_at": new_step_done_at,
        "main_at": main_at,
        "init_at": init_at,
        "taken_at": taken_at,
    }


async def crashed_after(dsn: str, name: str, steps: int, grace0: bool) -> None:
    """A workflow of ``steps`` completed steps whose process died in the next one."""
    flags = ["--grace0"] if grace0 else []
    setup = await spawn(__file__, "w3-setup", "--dsn", dsn, "--size", str(steps), "--name", name, *flags)
    await wait_line(setup, "ready")
    await kill(setup)


async def resume_ms(dsn: str, name: str, steps: int) -> dict[str, float]:
    """From the start of a new process to the body of the first new step,
    and its parts; from ``Ctx.start`` to the end of that step."""
    started = now()
    resume = await spawn(__file__, "w3-resume", "--dsn", dsn, "--size", str(steps), "--name", name)
    at = await last_json(resume)
    return {
        "resume_ms": (at["first_new_step_at"] - started) * 1000,
        "start_to_step_end_ms": (at["new_step_done_at"] - at["init_at"]) * 1000,
        "start_and_imports_ms": (at["main_at"] - started) * 1000,
        "init_ms": (at["init_at"] - at["main_at"]) * 1000,
        "takeover_ms": (at["taken_at"] - at["init_at"]) * 1000,
        "replay_ms": (at["first_new_step_at"] - at["taken_at"]) * 1000,
    }


async def w3(dsn: str, steps: int, grace0: bool) -> dict[str, Any]:
    """W3: default options, the program restarted RESTART_AFTER_S after the
    SIGKILL; W3-grace0: session_grace=0, restarted at once."""
    name = f"w3-{tag()}"
    await crashed_after(dsn, name, steps, grace0)
    if not grace0:
        await asyncio.sleep(RESTART_AFTER_S)  # the restart's delay is part of the scenario
    return await resume_ms(dsn, name, steps)


#: Columns that differ between two copies of a workflow by construction.
IDENTITY = ["id", "parent_id", "root_id", "created_at", "started_at", "updated_at", "completed_at"]


async def clone(pg: asyncpg.Connection, template: str, copy: str, steps: int) -> None:
    """Copies the workflow ``template`` (N completed steps s0..s{N-1}, then a
    step interrupted) as ``copy`` with ``steps`` completed steps: every step
    row is the row of s0 with its name and ids changed, which is what the
    engine writes (checked by ``check_clone``), in one INSERT ... SELECT."""
    s = SCHEMA
    cols = [
        r["column_name"]
        for r in await pg.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'task' "
            "ORDER BY ordinal_position",
            s,
        )
    ]
    kept = ", ".join(c for c in cols if c not in ("id", "parent_id", "root_id", "name"))
    root = await pg.fetchval(f"SELECT nextval('{s}.task_id_seq')")
    async with pg.transaction():
        await pg.execute(
            f"INSERT INTO {s}.task (id, parent_id, root_id, name, {kept}) "
            f"SELECT $1, NULL, $1, $2, {kept} FROM {s}.task WHERE name = $3 AND parent_id IS NULL",
            root, copy, template,
        )
        await pg.execute(
            f"INSERT INTO {s}.task (id, parent_id, root_id, name, {kept}) "
            f"SELECT nextval('{s}.task_id_seq'), $1, $1, 's' || g, {kept} "
            f"FROM {s}.task t, generate_series(0, $2 - 1) AS g "
            f"WHERE t.root_id = (SELECT id FROM {s}.task WHERE name = $3 AND parent_id IS NULL) "
            "AND t.parent_id IS NOT NULL AND t.name = 's0' ORDER BY g",
            root, steps, template,
        )
        await pg.execute(
            f"INSERT INTO {s}.task (id, parent_id, root_id, name, {kept}) "
            f"SELECT nextval('{s}.task_id_seq'), $1, $1, t.name, {kept} FROM {s}.task t "
            f"WHERE t.root_id = (SELECT id FROM {s}.task WHERE name = $2 AND parent_id IS NULL) "
            "AND t.parent_id IS NOT NULL AND t.name !~ '^s[0-9]+$' ORDER BY t.id",
            root, template,
        )


async def rows_of(pg: asyncpg.Connection, name: str) -> list[str]:
    """A workflow's rows without what differs between copies, in name order."""
    drop = "ARRAY[" + ", ".join(f"'{c}'" for c in IDENTITY) + "]"
    root = f"(SELECT id FROM {SCHEMA}.task WHERE name = $1 AND parent_id IS NULL)"
    rows = await pg.fetch(
        f"SELECT (to_jsonb(t) - {drop} - CASE WHEN t.parent_id IS NULL THEN 'name' ELSE '' END)::text AS r "
        f"FROM {SCHEMA}.task t WHERE t.root_id = {root} ORDER BY t.parent_id NULLS FIRST, t.name",
        name,
    )
    return [str(r["r"]) for r in rows]


async def check_clone(pg: asyncpg.Connection, template: str, steps: int) -> None:
    """A copy of the template at its own size must equal it, row for row."""
    copy = f"{template}-check"
    await clone(pg, template, copy, steps)
    mine, engines = await rows_of(pg, copy), await rows_of(pg, template)
    await drop_workflow(pg, copy)
    if mine != engines:
        raise RuntimeError(f"the bulk copy differs from what the engine wrote:\n{mine[:3]}\n{engines[:3]}")


async def drop_workflow(pg: asyncpg.Connection, name: str) -> None:
    await pg.execute(
        f"DELETE FROM {SCHEMA}.task WHERE root_id = (SELECT id FROM {SCHEMA}.task WHERE name = $1 AND parent_id IS NULL)",
        name,
    )


async def w3b(dsn: str, steps: int, template_steps: int) -> dict[str, Any]:
    """W3 with ``steps`` completed steps, copied in bulk from a crashed
    workflow of ``template_steps`` steps run by the engine."""
    template = f"w3b-template-{tag()}"
    await crashed_after(dsn, template, template_steps, grace0=True)
    pg = await pg_connect(dsn)
    await check_clone(pg, template, template_steps)
    name = f"w3b-{tag()}"
    made = time.perf_counter()
    await clone(pg, template, name, steps)
    copy_s = time.perf_counter() - made
    await drop_workflow(pg, template)
    await pg.execute(f"ANALYZE {SCHEMA}.task")
    await pg.close()
    return {**await resume_ms(dsn, name, steps), "bulk_copy_s": copy_s}


# -- W4, W6: queues -------------------------------------------------------------


@durable.workflow(name="suite.w4", queue="suite-w4")
async def w4_one(ctx: Ctx, i: int) -> dict[str, Any]:
    return await ctx.step("s", lambda: small_dict(i))


@durable.workflow(name="suite.w6", queue="suite-w6")
async def w6_one(ctx: Ctx, i: int) -> dict[str, Any]:
    return await ctx.step("s", lambda: small_dict(i))


async def enqueue_all(db: durable.Db, workflow: durable.Workflow[int, dict[str, Any]], count: int) -> list[str]:
    """``count`` runs enqueued at once (one statement, as awa-pg's
    ``insert_many_copy``); their names."""
    names = [f"{workflow.name}-{tag()}-{i}" for i in range(count)]
    await workflow.enqueue_many(db, [(name, i) for i, name in enumerate(names)])
    return names


async def wait_drained(pg: asyncpg.Connection, names: list[str]) -> None:
    """Until every run completed (read from the table: no waiters in the
    process measured). The figures come from the rows' times: a slow poll
    only loads the server less."""
    done = f"SELECT count(*) FROM {SCHEMA}.task WHERE parent_id IS NULL AND name = ANY($1) AND status = 'completed'"
    while await pg.fetchval(done, names) < len(names):
        await asyncio.sleep(0.5)


async def rate(pg: asyncpg.Connection, names: list[str], since: str) -> float:
    """Runs per second from the first ``since`` (created_at: enqueued;
    started_at: claimed) to the last completion, on the database's clock."""
    span = await pg.fetchval(
        f"SELECT extract(epoch FROM max(completed_at) - min({since})) FROM {SCHEMA}.task "
        "WHERE parent_id IS NULL AND name = ANY($1)",
        names,
    )
    return len(names) / float(span)


async def latencies_ms(pg: asyncpg.Connection, names: list[str]) -> list[float]:
    rows = await pg.fetch(
        f"SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms FROM {SCHEMA}.task "
        "WHERE parent_id IS NULL AND name = ANY($1)",
        names,
    )
    return [float(r["ms"]) for r in rows]


async def w4_start(dsn: str) -> tuple[durable.Db, durable.Executor, asyncio.Task[None]]:
    """The queue of concurrency 50 and an executor running it in this process."""
    db = await connect(dsn)
    await durable.create_queue(db, "suite-w4", concurrency=50)
    executor = durable.Executor(db, [w4_one], concurrency=100)
    return db, executor, asyncio.create_task(executor.run())


async def w4(dsn: str, count: int) -> dict[str, Any]:
    """W4 as users write it: ``count`` requests at once, each enqueueing its
    run (``wf.enqueue``, one call per run) and awaiting its result
    (``Run.result``), an executor in this process draining the queue: from
    the first enqueue to the last result, enqueue call -> result of each,
    and from the first enqueue until every enqueue returned (client clock)."""
    db, executor, running = await w4_start(dsn)
    t = tag()
    enqueued: list[float] = []
    latencies: list[float] = []

    async def request(i: int) -> None:
        began = time.perf_counter()
        run = await w4_one.enqueue(db, f"{w4_one.name}-{t}-{i}", i)
        enqueued.append(time.perf_counter())
        output = await run.result()
        latencies.append(time.perf_counter() - began)
        if output != small_dict(i):
            raise RuntimeError(f"run {i} returned {output!r}")

    started = time.perf_counter()
    await asyncio.gather(*(request(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    executor.stop()
    await running
    await db.close()
    return {
        "workflows_per_s": count / elapsed,
        "enqueue_s": max(enqueued) - started,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def w4_batch(dsn: str, count: int) -> dict[str, Any]:
    """W4-batch: ``count`` one-step workflows enqueued at once
    (``enqueue_many``), drained by an executor in this process, nobody
    waiting for their results: from the first enqueue to the last
    completion, enqueue -> completion of each (database clock)."""
    db, executor, running = await w4_start(dsn)
    pg = await pg_connect(dsn)
    enqueue_started = time.perf_counter()
    names = await enqueue_all(db, w4_one, count)
    enqueue_s = time.perf_counter() - enqueue_started
    await wait_drained(pg, names)
    executor.stop()
    await running
    figures = {"workflows_per_s": await rate(pg, names, "created_at"), "enqueue_s": enqueue_s}
    latencies = await latencies_ms(pg, names)
    await pg.close()
    await db.close()
    return {**figures, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}


async def w6_worker(dsn: str) -> None:
    db = await connect(dsn)
    print("ready", flush=True)
    await durable.Executor(db, [w6_one], concurrency=50).run()


async def w6(dsn: str, count: int, processes: int) -> dict[str, Any]:
    """``processes`` executor processes drain ``count`` queued one-step
    workflows: from the first start to the last completion (database clock)."""
    db = await connect(dsn)
    await durable.pause_queue(db, "suite-w6")
    names = await enqueue_all(db, w6_one, count)
    workers = [await spawn(__file__, "w6-worker", "--dsn", dsn) for _ in range(processes)]
    for worker in workers:
        await wait_line(worker, "ready")
    pg = await pg_connect(dsn)
    await durable.resume_queue(db, "suite-w6")
    await wait_drained(pg, names)
    figures = {"workflows_per_s": await rate(pg, names, "started_at")}
    for worker in workers:
        await stop(worker)
    await pg.close()
    await db.close()
    return figures


async def main() -> None:
    global role
    args = parser(__doc__).parse_args()
    dsn, size, width = args.dsn, args.size, args.width
    match args.workload:
        case "W1":
            emit(await w1(dsn, size))
        case "W2" | "W5":
            emit(await in_flight(dsn, width, size))
        case "M1":
            emit(await m1(dsn, size))
        case "W3" | "W3-grace0":
            emit(await w3(dsn, size, grace0=args.workload == "W3-grace0"))
        case "W3b":
            emit(await w3b(dsn, size, width))
        case "W4":
            emit(await w4(dsn, size))
        case "W4-batch":
            emit(await w4_batch(dsn, size))
        case "W6":
            emit(await w6(dsn, size, width))
        case "w3-setup":
            role = "setup"
            await w3_setup(dsn, args.name, size, args.grace0)
        case "w3-resume":
            emit(await w3_resume(dsn, args.name, size))
            exit_now()
        case "w6-worker":
            await w6_worker(dsn)
        case other:
            sys.exit(f"unknown workload {other!r}")


if __name__ == "__main__":
    asyncio.run(main())
