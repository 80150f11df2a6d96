"""Load time of `durable ui`'s pages on a table of a million runs.

    python bench/ui.py [--dsn URL] [--runs 1000000] [--loads 7] [--keep]

Fills a schema of its own with `--runs` root runs (by SQL, in bulk: about
89% completed, 10% failed, 1% queued, 50 running; one step each), serves
the ui in this process, and times whole page loads (HTTP request to the last
byte) of: the first page of the list, a status tab, a name-prefix filter, an
upper time bound, an input condition, an older page (keyset), a run's
detail page, the queues page, and the live pages' polls of the versions of
the list and of a run. Reports the median and max
of `--loads` loads after one warm-up load each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg

import durable
from durable.ui import bind, make_app, server
from durable.ui import pages as ui_pages

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "durable_bench_ui"

FILL = """
INSERT INTO {s}.task_queue (name) VALUES ('bench') ON CONFLICT DO NOTHING;
INSERT INTO {s}.task (id, parent_id, root_id, kind, name, status, input, output, workflow, queue,
                      created_at, started_at, completed_at)
SELECT g, NULL, g, 'workflow', 'run-' || lpad(g::text, 8, '0'),
       CASE WHEN g % 20000 = 0 THEN 'running' WHEN g % 100 = 1 THEN 'queued'
            WHEN g % 10 = 2 THEN 'failed' ELSE 'completed' END,
       jsonb_build_object('day', g % 365), CASE WHEN g % 4 = 0 THEN to_jsonb(g) END,
       'bench.job', 'bench',
       now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval,
       CASE WHEN g % 4 < 2 THEN now() - (g || ' seconds')::interval + interval '1 second' END
FROM generate_series(1, {n}) AS g;
INSERT INTO {s}.task (id, parent_id, root_id, kind, name, status, output, started_at, completed_at)
SELECT {n} + g, g, g, 'step', 'fetch', 'completed', to_jsonb(g), now(), now()
FROM generate_series(1, {n}) AS g;
SELECT setval('{s}.task_id_seq', 2 * {n});
ANALYZE {s}.task;
"""


async def load(port: int, path: str) -> float:
    """One whole page load (a fresh connection, to the last byte), in seconds.
    Plain asyncio: urllib would need a thread, and `queue` here is this
    directory's bench, not the standard module threads import."""
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    status = response.split(b" ", 2)[1]
    assert status == b"200", response[:200]
    return time.perf_counter() - began


async def main(dsn: str, runs: int, loads: int, keep: bool) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    db = await durable.init(dsn, schema=SCHEMA)
    began = time.perf_counter()
    await conn.execute(FILL.format(s=SCHEMA, n=runs))
    print(f"filled {runs} runs (+ a step each) in {time.perf_counter() - began:.0f} s")
    # Every load counts the tabs anew, as a first visit does (not from the
    # counts kept for a few seconds).
    ui_pages.COUNT_TTL = 0.0
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    serving = server(make_app(db, host="127.0.0.1", port=port, read_only=True))
    task = asyncio.ensure_future(serving.serve(sockets=[sock]))
    while not serving.started:
        await asyncio.sleep(0.01)
    pages = {
        "list, first page": "/",
        "list, status tab (failed)": "/?status=failed",
        "list, name prefix": "/?prefix=run-0050",
        "list, created until 2 days ago": "/?until=48h",
        "list, input condition": "/?input=%24.day%20%3D%3D%20100",
        "list, an older page": f"/?before={runs // 2}",
        "run detail": f"/runs/run-{runs // 2:08d}",
        "queues": "/queues",
        # What a live page polls every 2 s (static/live.js).
        "live poll, first page": "/api/live/runs",
        "live poll, status tab": "/api/live/runs?status=failed",
        "live poll, name prefix": "/api/live/runs?prefix=run-0050",
        "live poll, run": f"/api/live/runs/run-{runs // 2:08d}",
    }
    for what, path in pages.items():
        await load(port, path)  # warm-up
        times = [await load(port, path) for _ in range(loads)]
        print(f"{what:28s} median {statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms")
    serving.should_exit = True
    await task
    await db.close()
    if not keep:
        await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help=f"keep the schema {SCHEMA} (to look at plans)")
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.runs, args.loads, args.keep))
