"""Nested ETL with a real crash in the middle, and the resume that follows.

    python examples/nested_etl.py

A parent workflow loads three data sources, each in a child workflow of
three steps (extract, transform, load). The program runs the workflow in a
worker process that SIGKILLs itself halfway through the second source, then
runs a second worker that resumes it: completed steps replay from Postgres
(their code does not run again), the interrupted step runs again, and the
rest runs for the first time. Every line says which.

The database is $DURABLE_DATABASE_URL, else an embedded Postgres.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import durable
from durable import Ctx

SOURCES = ["orders", "customers", "inventory"]
CRASH_IN = ("customers", "transform")  # where the first worker dies

T = TypeVar("T", bound=durable.Json)


async def tracked(ctx: Ctx, step: str, fn: Callable[[], T]) -> T:
    """ctx.step, printing whether the body ran or its saved result was replayed."""
    ran = False

    def body() -> T:
        nonlocal ran
        ran = True
        return fn()

    result = await ctx.step(step, body)
    print(f"  {ctx.name:>18} / {step:<12} {'ran' if ran else 'replayed (skipped)'}", flush=True)
    return result


def extract(source: str) -> list[dict[str, str | int]]:
    return [{"id": i, "source": source, "value": f"{source}-{i}"} for i in range(5)]


def transform(source: str, rows: list[dict[str, str | int]], crash: bool) -> list[dict[str, str | int]]:
    if crash and (source, "transform") == CRASH_IN:
        print(f"  {'source:' + source:>18} / transform    CRASH: SIGKILL to worker pid {os.getpid()}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return [{**row, "checksum": hashlib.sha256(str(row["value"]).encode()).hexdigest()[:8]} for row in rows]


@durable.workflow
async def load_source(ctx: Ctx, source: str) -> int:
    # The crash switch is a command-line flag, not part of the input: a
    # workflow resumes only with the same input it started with.
    crash = "--crash" in sys.argv
    rows = await tracked(ctx, "extract", lambda: extract(source))
    clean = await tracked(ctx, "transform", lambda: transform(source, rows, crash))
    return await tracked(ctx, "load", lambda: len(clean))


@durable.workflow
async def nightly_etl(ctx: Ctx, day: str) -> dict[str, int]:
    sources = await tracked(ctx, "list_sources", lambda: SOURCES)
    loaded = {}
    for source in sources:
        child = await ctx.child(f"source:{source}", source)
        if child.status == "completed":
            print(f"  {child.name:>18} / (all steps)  replayed (skipped): completed in an earlier run", flush=True)
        loaded[source] = await child.run(load_source.fn, source)
    return loaded


async def worker(name: str) -> None:
    db = await durable.init()
    result = await nightly_etl.run(db, name, "2026-11-24")
    print(f"  workflow {name} completed: {result}", flush=True)


def run_worker(name: str, crash: bool) -> tuple[int, list[str]]:
    import subprocess

    args = [sys.executable, __file__, "--worker", name] + (["--crash"] if crash else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    return proc.wait(), lines


def main() -> int:
    if not os.environ.get("DURABLE_DATABASE_URL"):
        # One embedded server for both workers, stopped when this program ends.
        os.environ["DURABLE_DATABASE_URL"] = durable.start_embedded()
        print(f"database: embedded Postgres ({os.environ.get('DURABLE_DATA_DIR') or 'user data directory'})")
    name = time.strftime("nightly-etl-%Y%m%d-%H%M%S")

    print(f"\nrun 1: a worker starts workflow {name!r} and will crash mid-way")
    code, first = run_worker(name, crash=True)
    print(f"run 1: worker died with {'SIGKILL' if code == -signal.SIGKILL else f'exit code {code}'}")
    if code != -signal.SIGKILL:
        return 1

    print(f"\nrun 2: a new worker starts {name!r} again")
    code, second = run_worker(name, crash=False)
    if code != 0:
        print(f"run 2 failed with exit code {code}")
        return 1

    def steps(lines: list[str], outcome: str) -> list[str]:
        return ["/".join(part.strip() for part in line.split(outcome)[0].split("/")) for line in lines if outcome in line]

    ran_first, ran_again = steps(first, " ran"), steps(second, " ran")
    print(
        f"\nsummary: run 2 replayed {len(steps(second, ' replayed'))} saved results without running their code, "
        f"and ran {len(ran_again)} steps: {', '.join(ran_again)}"
    )
    rerun = set(ran_first) & set(ran_again)
    if rerun:
        print(f"error: steps completed in run 1 ran again: {sorted(rerun)}")
    return 1 if rerun else 0

if __name__ == "__main__":
    if "--worker" in sys.argv:
        asyncio.run(worker(sys.argv[sys.argv.index("--worker") + 1]))
    else:
        sys.exit(main())
