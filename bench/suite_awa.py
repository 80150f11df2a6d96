"""awa-pg's side of the suite (W4 only: a job queue), run by the peers' venv.

    bench/.venv-peers/bin/python bench/suite_awa.py W4 --dsn URL --size 2000

``size`` jobs on a queue of 50 workers in this process; each job's handler
returns a small dict. W4, as users write it: one ``insert`` per job, all at
once (awa-pg has no way to wait for a job's completion or result: the
measurement waits for the handlers in this process). W4-batch: the jobs
inserted at once in one COPY (``insert_many_copy``). Figures: jobs/s from the
first insert to the last handler's end, insert -> handler end p50/p99, and
until every insert returned (awa marks a job completed after its handler, in
batches: not waited for here).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import awa

from suite_common import emit, exit_now, parser, pct, small_dict


@dataclass
class Item:
    i: int


async def w4(dsn: str, count: int, batch: bool) -> dict[str, Any]:
    client = awa.AsyncClient(dsn)
    await client.migrate()
    queue = f"suite_w4_{uuid.uuid4().hex[:8]}"
    began: dict[int, float] = {}
    ended: dict[int, float] = {}
    all_done = asyncio.Event()

    @client.task(Item, queue=queue)
    async def handle(job: Any) -> dict[str, Any]:
        result = small_dict(job.args.i)
        ended[job.args.i] = time.perf_counter()
        if len(ended) == count:
            all_done.set()
        return result

    async def insert(i: int) -> float:
        began[i] = time.perf_counter()
        await client.insert(Item(i), queue=queue)
        return time.perf_counter()

    await client.start([(queue, 50)])
    started = time.perf_counter()
    if batch:
        began.update((i, started) for i in range(count))
        await client.insert_many_copy([Item(i) for i in range(count)], queue=queue)
        inserted = time.perf_counter()
    else:
        inserted = max(await asyncio.gather(*(insert(i) for i in range(count))))
    await all_done.wait()
    elapsed = time.perf_counter() - started
    await client.shutdown()
    await client.close()
    latencies = [(ended[i] - began[i]) * 1000 for i in range(count)]
    return {
        "workflows_per_s": count / elapsed,
        "enqueue_s": inserted - started,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
    }


async def main() -> None:
    args = parser(__doc__).parse_args()
    if args.workload not in ("W4", "W4-batch"):
        sys.exit(f"awa-pg runs W4 and W4-batch only, not {args.workload!r}")
    emit(await w4(args.dsn, args.size, batch=args.workload == "W4-batch"))
    exit_now()


if __name__ == "__main__":
    asyncio.run(main())
