"""What the workload scripts of the suite share (stdlib only: imported from
both the project's venv and the peers' venv, bench/.venv-peers).

Each workload script runs one workload of one system per invocation
(``python bench/suite_<system>.py W1 --dsn URL --size N``) and prints its
figures as one JSON object on its last line of output; ``bench/suite.py``
collects them. Sizes come from the command line so that ``--quick`` can
shrink them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

#: What every step of every system returns: a small dict.
def small_dict(i: int) -> dict[str, Any]:
    return {"i": i, "status": "ok", "tags": ["a", "b"]}


#: What a step of W3/W3b returns: the same for every step, so that a bulk
#: copy of one step's row is exactly the row the engine writes for any step.
RESUME_STEP_RESULT: dict[str, Any] = {"status": "ok", "tags": ["a", "b"]}

#: W3 (the default path): seconds from the SIGKILL of the process running a
#: workflow to the start of the program that resumes it, as a supervisor
#: restarts a crashed program. W3-grace0 and W3b restart at once.
RESTART_AFTER_S = 2.0


def pct(values: Sequence[float], p: float) -> float:
    """The p-quantile (0..1) of values, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss: KiB on Linux), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's current resident set size (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def emit(figures: dict[str, Any]) -> None:
    """The workload's result: one JSON line, the last of stdout."""
    print(json.dumps(figures), flush=True)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every workload script takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", help="W1, W2, W3, W3-grace0, W3b, W4, W4-batch, W5, M1, W6 (or an internal role)")
    p.add_argument("--dsn", required=True, help="database of this system")
    p.add_argument("--size", type=int, default=0, help="steps or workflows, per workload")
    p.add_argument("--width", type=int, default=0, help="workflows in flight, or processes (W6)")
    p.add_argument("--name", default="", help="workflow name (internal roles)")
    p.add_argument("--poll", type=float, default=1.0, help="DBOS queue polling interval, seconds (W4)")
    p.add_argument("--grace0", action="store_true",
                   help="durable's crashed process runs with session_grace=0 (internal role w3-setup)")
    return p


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """This Python running args, its stdout piped (to read 'ready' or figures)."""
    return await asyncio.create_subprocess_exec(sys.executable, *args, stdout=asyncio.subprocess.PIPE)


async def wait_line(proc: asyncio.subprocess.Process, expected: str, timeout: float = 600.0) -> None:
    """Waits for a child to print ``expected`` on a line of its own."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"child exited (code {await proc.wait()}) before printing {expected!r}")
        if line.decode().strip() == expected:
            return


async def last_json(proc: asyncio.subprocess.Process, timeout: float = 600.0) -> dict[str, Any]:
    """A child's figures: the last JSON line it prints before exiting."""
    assert proc.stdout is not None
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    for line in reversed(out.decode().splitlines()):
        if line.startswith("{"):
            figures: dict[str, Any] = json.loads(line)
            return figures
    raise RuntimeError(f"child exited (code {proc.returncode}) without figures")


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL: a crash, leaving what the child held for recovery."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            await kill(proc)


async def pg_connect(dsn: str) -> Any:
    """An asyncpg connection, asyncpg imported at first use: the resume
    processes of W3 and W3b never need it, and its import would add about
    20 ms to their start, which W3 measures."""
    import asyncpg

    return await asyncpg.connect(dsn)


def now() -> float:
    """Wall clock (comparable across processes of this machine), seconds."""
    return time.time()


def exit_now() -> None:
    """Leaves at once (a resumed run measured has nothing more to do)."""
    sys.stdout.flush()
    os._exit(0)
