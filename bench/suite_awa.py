"""awa-pg's side of the suite (W4 only: a job queue), run by the peers' venv.

    bench/.venv-peers/bin/python bench/suite_awa.py W4 --dsn URL --size 2000

``size`` jobs inserted at once (one COPY) on a queue of 50 workers in this
process; each job's handler returns a small dict. Figures: jobs/s from the
insert to the last handler's end, and insert -> handler end p50/p99 (awa
marks a job completed after its handler, in batches: not waited for here).
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


async def w4(dsn: str, count: int) -> dict[str, Any]:
    client = awa.AsyncClient(dsn)
    await client.migrate()
    queue = f"suite_w4_{uuid.uuid4().hex[:8]}"
    ended: list[float] = []
    all_done = asyncio.Event()

    @client.task(Item, queue=queue)
    async def handle(job: Any) -> dict[str, Any]:
        result = small_dict(job.args.i)
        ended.append(time.perf_counter())
        if len(ended) == count:
            all_done.set()
        return result

    await client.start([(queue, 50)])
    started = time.perf_counter()
    await client.insert_many_copy([Item(i) for i in range(count)], queue=queue)
    await all_done.wait()
    elapsed = time.perf_counter() - started
    await client.shutdown()
    await client.close()
    latencies = [(t - started) * 1000 for t in ended]
    return {"workflows_per_s": count / elapsed, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}


async def main() -> None:
    args = parser(__doc__).parse_args()
    if args.workload != "W4":
        sys.exit(f"awa-pg runs W4 only, not {args.workload!r}")
    emit(await w4(args.dsn, args.size))
    exit_now()


if __name__ == "__main__":
    asyncio.run(main())
