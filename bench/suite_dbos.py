"""DBOS Transact's side of the suite: one workload per invocation, run by
the peers' venv (bench/.venv-peers, made by bench/suite.py).

    bench/.venv-peers/bin/python bench/suite_dbos.py W1 --dsn URL --size 1000

Async workflows and steps, DBOS's defaults (its system database is the
database of --dsn, schema dbos). Prints the figures as one JSON line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions, SetWorkflowID

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


def launch(dsn: str, executor_id: str | None = None) -> None:
    """DBOS with its defaults; ``executor_id``: for a process among others
    (the default, "local", is what recovery at launch looks for: W3)."""
    config: DBOSConfig = {"name": "durable-bench", "system_database_url": dsn, "log_level": "WARNING"}
    if executor_id is not None:
        config["executor_id"] = executor_id
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)


def tag() -> str:
    return uuid.uuid4().hex[:10]


@DBOS.step()
async def step(i: int) -> dict[str, Any]:
    return small_dict(i)


#: Step latencies, seconds (kept out of the workflows' inputs, which DBOS saves).
latencies: list[float] = []


@DBOS.workflow()
async def sequential(steps: int) -> None:
    for i in range(steps):
        started = time.perf_counter()
        await step(i)
        latencies.append(time.perf_counter() - started)


async def w1(dsn: str, steps: int) -> dict[str, Any]:
    launch(dsn)
    await sequential(20)
    latencies.clear()
    started = time.perf_counter()
    await sequential(steps)
    elapsed = time.perf_counter() - started
    return {
        "steps_per_s": steps / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def in_flight(dsn: str, workflows: int, steps: int) -> dict[str, Any]:
    launch(dsn)
    # Warm-up, untimed: 32 workflows of one step at once, as F2 warms its pool.
    await asyncio.gather(*(sequential(1) for _ in range(32)))
    latencies.clear()
    started = time.perf_counter()
    await asyncio.gather(*(sequential(steps) for _ in range(workflows)))
    elapsed = time.perf_counter() - started
    return {
        "steps_per_s": workflows * steps / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "peak_rss_mb": peak_rss_mb(),
    }


async def m1(dsn: str, total: int) -> dict[str, Any]:
    launch(dsn)
    after_first = 0.0
    for r in range(total // 1000):
        await asyncio.gather(*(sequential(100) for _ in range(10)))
        if r == 0:
            after_first = rss_mb()
    after_all = rss_mb()
    return {"rss_1k_mb": after_first, "rss_end_mb": after_all, "growth_mb": after_all - after_first}


# -- W3, W3b: recovery in a new process -------------------------------------------

role = "resume"
first_new_step_at = 0.0
#: Steps before the new one: from the command line, not the workflow's input
#: (a bulk copy of a workflow keeps the input of the one copied).
resume_steps = 0


@DBOS.step()
async def resume_step() -> dict[str, Any]:
    return RESUME_STEP_RESULT


@DBOS.step()
async def new_step() -> dict[str, Any]:
    global first_new_step_at
    if role == "setup":
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL
    first_new_step_at = now()
    return RESUME_STEP_RESULT


@DBOS.workflow()
async def resumable() -> None:
    for _ in range(resume_steps):
        await resume_step()
    await new_step()


async def w3_setup(dsn: str, name: str) -> None:
    launch(dsn)
    with SetWorkflowID(name):
        await resumable()


async def w3_resume(dsn: str, name: str) -> dict[str, Any]:
    """DBOS recovers the pending workflow at launch; waits for it to end."""
    main_at = now()
    launch(dsn)
    launched_at = now()
    handle = await DBOS.retrieve_workflow_async(name)
    await handle.get_result()
    return {"first_new_step_at": first_new_step_at, "main_at": main_at, "launched_at": launched_at}


async def crashed_after(dsn: str, name: str, steps: int) -> None:
    setup = await spawn(__file__, "w3-setup", "--dsn", dsn, "--size", str(steps), "--name", name)
    await wait_line(setup, "ready")
    await kill(setup)


async def resume_ms(dsn: str, name: str, steps: int) -> dict[str, float]:
    """From the start of a new process to the body of the first new step,
    and its parts (the launch recovers the workflow in the background)."""
    started = now()
    resume = await spawn(__file__, "w3-resume", "--dsn", dsn, "--size", str(steps), "--name", name)
    at = await last_json(resume)
    return {
        "resume_ms": (at["first_new_step_at"] - started) * 1000,
        "start_and_imports_ms": (at["main_at"] - started) * 1000,
        "launch_ms": (at["launched_at"] - at["main_at"]) * 1000,
        "recovery_ms": (at["first_new_step_at"] - at["launched_at"]) * 1000,
    }


async def w3(dsn: str, steps: int, restart_after: float) -> dict[str, Any]:
    """W3: restarted ``RESTART_AFTER_S`` after the SIGKILL; W3-grace0: at
    once (DBOS has no grace to set: its defaults in both)."""
    name = f"w3-{tag()}"
    await crashed_after(dsn, name, steps)
    await asyncio.sleep(restart_after)  # the restart's delay is part of the scenario
    return await resume_ms(dsn, name, steps)


async def columns(pg: asyncpg.Connection, table: str) -> list[str]:
    rows = await pg.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dbos' AND table_name = $1 "
        "ORDER BY ordinal_position",
        table,
    )
    return [str(r["column_name"]) for r in rows]


#: DBOS's tables with one row per workflow (workflow_status first: the others refer to it).
WORKFLOW_TABLES = ["workflow_status", "workflow_input", "workflow_output"]


async def clone(pg: asyncpg.Connection, template: str, copy: str, steps: int) -> None:
    """Copies the pending workflow ``template`` (its steps: function ids
    1..N, all the same step returning the same dict) as ``copy`` with
    ``steps`` steps, each the row of the first step with its function id
    shifted (checked against what DBOS wrote by ``check_clone``)."""
    outputs = [c for c in await columns(pg, "operation_outputs") if c not in ("workflow_uuid", "function_id")]
    first = await pg.fetchval("SELECT min(function_id) FROM dbos.operation_outputs WHERE workflow_uuid = $1", template)
    kept_outputs = ", ".join(outputs)
    async with pg.transaction():
        for table in WORKFLOW_TABLES:
            kept = ", ".join(c for c in await columns(pg, table) if c != "workflow_uuid")
            await pg.execute(
                f"INSERT INTO dbos.{table} (workflow_uuid, {kept}) "
                f"SELECT $1, {kept} FROM dbos.{table} WHERE workflow_uuid = $2",
                copy, template,
            )
        await pg.execute(
            f"INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, {kept_outputs}) "
            f"SELECT $1, $3 + g, {kept_outputs} FROM dbos.operation_outputs, generate_series(0, $4 - 1) AS g "
            "WHERE workflow_uuid = $2 AND function_id = $3 ORDER BY g",
            copy, template, first, steps,
        )


async def rows_of(pg: asyncpg.Connection, name: str) -> list[str]:
    """A workflow's rows, less what differs between copies by construction
    (its id, and times: retention_timestamp is the time of the write)."""
    drop = "ARRAY['workflow_uuid', 'created_at', 'updated_at', 'started_at_epoch_ms', 'completed_at_epoch_ms', " \
        "'retention_timestamp']"
    rows = []
    for table in [*WORKFLOW_TABLES, "operation_outputs"]:
        order = "function_id" if table == "operation_outputs" else "workflow_uuid"
        rows += await pg.fetch(
            f"SELECT (to_jsonb(t) - {drop})::text AS r FROM dbos.{table} t WHERE workflow_uuid = $1 ORDER BY {order}",
            name,
        )
    return [str(r["r"]) for r in rows]


async def drop_workflow(pg: asyncpg.Connection, name: str) -> None:
    async with pg.transaction():
        for table in ["operation_outputs", *reversed(WORKFLOW_TABLES)]:
            await pg.execute(f"DELETE FROM dbos.{table} WHERE workflow_uuid = $1", name)


async def check_clone(pg: asyncpg.Connection, template: str, steps: int) -> None:
    copy = f"{template}-check"
    await clone(pg, template, copy, steps)
    mine, dboss = await rows_of(pg, copy), await rows_of(pg, template)
    await drop_workflow(pg, copy)
    if mine != dboss:
        raise RuntimeError(f"the bulk copy differs from what DBOS wrote:\n{mine[:3]}\n{dboss[:3]}")


async def w3b(dsn: str, steps: int, template_steps: int) -> dict[str, Any]:
    template = f"w3b-template-{tag()}"
    await crashed_after(dsn, template, template_steps)
    pg = await pg_connect(dsn)
    await check_clone(pg, template, template_steps)
    name = f"w3b-{tag()}"
    made = time.perf_counter()
    await clone(pg, template, name, steps)
    copy_s = time.perf_counter() - made
    await drop_workflow(pg, template)
    await pg.execute("ANALYZE dbos.operation_outputs")
    await pg.close()
    return {**await resume_ms(dsn, name, steps), "bulk_copy_s": copy_s}


# -- W4, W6: queues -----------------------------------------------------------------


@DBOS.workflow()
async def one(i: int) -> dict[str, Any]:
    result: dict[str, Any] = await step(i)
    return result


async def wait_drained(pg: asyncpg.Connection, ids: list[str]) -> None:
    """Until every run succeeded (read from the table: no waiters in the
    process measured). The figures come from the rows' times."""
    done = "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY($1) AND status = 'SUCCESS'"
    while await pg.fetchval(done, ids) < len(ids):
        await asyncio.sleep(0.5)


async def rate(pg: asyncpg.Connection, ids: list[str], since: str) -> float:
    """Runs per second from the first ``since`` (created_at: enqueued;
    started_at_epoch_ms: dequeued) to the last end, on the database's clock."""
    span_ms = await pg.fetchval(
        f"SELECT max(updated_at) - min({since}) FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)", ids
    )
    return len(ids) / (float(span_ms) / 1000)


async def latencies_ms(pg: asyncpg.Connection, ids: list[str]) -> list[float]:
    rows = await pg.fetch(
        "SELECT (updated_at - created_at)::float8 AS ms FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)", ids
    )
    return [float(r["ms"]) for r in rows]


async def w4_queue(dsn: str, poll: float) -> Any:
    """DBOS launched, and a queue of concurrency 50 polled every ``poll`` seconds."""
    launch(dsn)
    return await DBOS.register_queue_async(f"suite-w4-{tag()}", concurrency=50, polling_interval_sec=poll)


async def w4(dsn: str, count: int, poll: float) -> dict[str, Any]:
    """W4 as users write it: ``count`` requests at once, each enqueueing its
    workflow (``Queue.enqueue_async``) and awaiting its result
    (``get_result``, DBOS's default polling of 1 s), in the process running
    them: from the first enqueue to the last result, enqueue call -> result
    of each, and until every enqueue returned (client clock)."""
    queue = await w4_queue(dsn, poll)
    enqueued: list[float] = []
    latencies: list[float] = []

    async def request(i: int) -> None:
        began = time.perf_counter()
        handle = await queue.enqueue_async(one, i)
        enqueued.append(time.perf_counter())
        output = await handle.get_result()
        latencies.append(time.perf_counter() - began)
        if output != small_dict(i):
            raise RuntimeError(f"workflow {i} returned {output!r}")

    started = time.perf_counter()
    await asyncio.gather(*(request(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return {
        "workflows_per_s": count / elapsed,
        "enqueue_s": max(enqueued) - started,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def w4_batch(dsn: str, count: int, poll: float) -> dict[str, Any]:
    """W4-batch: ``count`` one-step workflows enqueued at once (one
    ``enqueue_async`` each: DBOS has no batch enqueue), nobody waiting for
    their results: from the first enqueue to the last end, enqueue -> end
    of each (database clock)."""
    queue = await w4_queue(dsn, poll)
    enqueue_started = time.perf_counter()
    handles = await asyncio.gather(*(queue.enqueue_async(one, i) for i in range(count)))
    enqueue_s = time.perf_counter() - enqueue_started
    ids = [h.get_workflow_id() for h in handles]
    pg = await pg_connect(dsn)
    await wait_drained(pg, ids)
    figures = {"workflows_per_s": await rate(pg, ids, "created_at"), "enqueue_s": enqueue_s}
    latencies = await latencies_ms(pg, ids)
    await pg.close()
    return {**figures, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}


async def w6_queue() -> Any:
    return await DBOS.register_queue_async("suite-w6", worker_concurrency=50)


async def w6_worker(dsn: str) -> None:
    # An executor id of its own: with the shared default, each process's
    # launch would recover (run again) the runs the others hold.
    launch(dsn, executor_id=f"w6-{uuid.uuid4().hex[:8]}")
    await w6_queue()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


async def w6(dsn: str, count: int, processes: int) -> dict[str, Any]:
    """``processes`` worker processes drain ``count`` one-step workflows
    enqueued beforehand: first start to last completion (database clock)."""
    # DBOS makes its tables at launch, which a client does not do: launched
    # here first (no queue of W6 registered, so this process runs nothing).
    launch(dsn, executor_id=f"w6-setup-{tag()}")
    DBOS.destroy()
    client = DBOSClient(system_database_url=dsn)
    prefix = f"w6-{tag()}"
    options: EnqueueOptions = {"queue_name": "suite-w6", "workflow_name": one.__qualname__}
    ids = []
    for first in range(0, count, 100):
        batch = range(first, min(count, first + 100))
        handles = await asyncio.gather(
            *(client.enqueue_async({**options, "workflow_id": f"{prefix}-{i}"}, i) for i in batch)
        )
        ids += [h.get_workflow_id() for h in handles]
    workers = [await spawn(__file__, "w6-worker", "--dsn", dsn) for _ in range(processes)]
    pg = await pg_connect(dsn)
    await wait_drained(pg, ids)
    figures = {"workflows_per_s": await rate(pg, ids, "started_at_epoch_ms")}
    for worker in workers:
        await stop(worker)
    await pg.close()
    client.destroy()
    return figures


async def main() -> None:
    global role, resume_steps
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
            emit(await w3(dsn, size, RESTART_AFTER_S if args.workload == "W3" else 0.0))
        case "W3b":
            emit(await w3b(dsn, size, width))
        case "W4":
            emit(await w4(dsn, size, args.poll))
        case "W4-batch":
            emit(await w4_batch(dsn, size, args.poll))
        case "W6":
            emit(await w6(dsn, size, width))
        case "w3-setup":
            role, resume_steps = "setup", size
            await w3_setup(dsn, args.name)
        case "w3-resume":
            resume_steps = size
            emit(await w3_resume(dsn, args.name))
        case "w6-worker":
            await w6_worker(dsn)
        case other:
            sys.exit(f"unknown workload {other!r}")
    if args.workload != "w6-worker":
        exit_now()  # DBOS's threads would keep the process


if __name__ == "__main__":
    asyncio.run(main())
