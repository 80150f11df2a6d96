"""The screenshots of `durable ui` in doc/ui/ (and the README), taken in
headless Chromium (Debian's, as the browser tests drive it) over a scenario
made with the real API in a schema of its own:

    .venv/bin/python doc/ui/screenshots.py [--dsn URL]

Writes doc/ui/runs.png, run.png, timeline.png, run-dark.png, queues.png,
schedules.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import asyncpg
from playwright.async_api import async_playwright

import durable
from durable import Backoff, Ctx
from durable._schedules import Schedule, tick_run_name, tick_text
from durable.ui import bind, make_app, server

HERE = Path(__file__).parent
SCHEMA = "durable_screenshots"
LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHROMIUM = "/usr/bin/chromium"
QUICK = Backoff(initial=0.05, factor=1.0, max=0.05, jitter=0.0)


@durable.workflow(name="billing.invoice", queue="billing")
async def invoice(ctx: Ctx, customer: str) -> None:
    raise AssertionError("its queue is paused: it never runs here")


async def work(ms: int, value: durable.Json) -> durable.Json:
    """A step body that takes ``ms`` milliseconds (for bars one can see)."""
    await asyncio.sleep(ms / 1000)
    return value


async def scenario(db: durable.Db, conn: asyncpg.Connection) -> None:
    for day in range(20, 25):
        async with Ctx.start(db, f"report-2026-11-{day}", input={"day": f"2026-11-{day}"}) as report:
            rows = await report.step("fetch", lambda: [3, 1, 2])
            await report.step("total", lambda: {"sum": sum(rows), "rows": len(rows)})
            await report.complete({"total": sum(rows)})

    etl = await Ctx.start(db, "etl-2026-11-25", input={"day": "2026-11-25", "shards": 4})
    await etl.step("extract", lambda: work(40, {"rows": 9_007_199_254_740_993, "shards": [0, 1, 2, 3]}))
    await etl.sleep("cool down", 0.05)
    for shard in range(3):
        child = await etl.child(f"shard-{shard}", input={"shard": shard})
        await child.step("load", lambda: work(30, {"loaded": 1000}))
        await child.step("index", lambda: work(15, {"indexed": True}))
        await child.complete("ok")

    async def corrupt() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("shard 3 is corrupt: checksum 0x9f2c != 0x11aa")

    child = await etl.child("shard-3", input={"shard": 3})
    try:
        await child.step("load", corrupt, retries=2, backoff=QUICK)
    except ValueError as exc:
        await child.fail(exc)
        await etl.fail(exc)

    order = await Ctx.start(db, "order-1042", input={"order": 1042, "total": "129.90"})
    await order.step("reserve stock", lambda: {"reserved": True})
    await order.step("charge card", lambda: {"charge": "ch_3P9"})
    asyncio.ensure_future(order.recv("approval", timeout=3600))

    await durable.create_queue(db, "billing", concurrency=4, rate_limit=(10, timedelta(minutes=1)))
    await durable.pause_queue(db, "billing")
    for customer in ("acme", "globex", "initech"):
        await invoice.enqueue(db, f"invoice-{customer}", customer)
    await durable.create_queue(db, "emails", concurrency=20)

    # Two schedules as executors register them, and the runs of the ticks
    # before their next ones (named as executors name them).
    now = datetime.now(timezone.utc)
    specs = {"reports.daily": "cron 0 9 * * 1-5 Europe/Paris", "cache.refresh": "every 900"}
    for workflow, spec in specs.items():
        schedule = Schedule.from_spec(spec)
        next_tick = schedule.after(now)
        await conn.execute(
            f"INSERT INTO {SCHEMA}.task_schedule_spec (workflow, spec, next_tick) VALUES ($1, $2, $3)",
            workflow,
            spec,
            next_tick,
        )
        tick = next_tick
        for _ in range(3):
            tick = schedule.at_or_before(tick - timedelta(microseconds=1))
            async with Ctx.start(db, tick_run_name(workflow, tick), input=tick_text(tick)) as run:
                await run.step("work", lambda: work(10, "done"))
                await run.complete(None)


async def main(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    db = await durable.init(dsn, schema=SCHEMA)
    await scenario(db, conn)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    serving = server(make_app(db, host="127.0.0.1", port=port))
    task = asyncio.ensure_future(serving.serve(sockets=[sock]))
    while not serving.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    shots: dict[str, tuple[str, Literal["light", "dark"]]] = {
        "runs.png": ("/", "light"),
        "run.png": ("/runs/etl-2026-11-25", "light"),
        "run-dark.png": ("/runs/etl-2026-11-25", "dark"),
        "queues.png": ("/queues", "light"),
        "schedules.png": ("/schedules", "light"),
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for file, (path, scheme) in shots.items():
            page = await browser.new_page(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
            await page.goto(url + path)
            await page.screenshot(path=str(HERE / file), full_page=False)
            if file == "run.png":  # its waterfall, below the fields
                await page.locator("#timeline").screenshot(path=str(HERE / "timeline.png"))
                print("wrote", HERE / "timeline.png")
            await page.close()
            print("wrote", HERE / file)
        await browser.close()
    serving.should_exit = True
    await task
    await db.close()
    await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL)
    asyncio.run(main(parser.parse_args().dsn))
