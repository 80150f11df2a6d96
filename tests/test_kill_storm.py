"""The kill storm: workers SIGKILLed again and again at random moments.

Each worker runs one workflow of STEPS steps; when a workflow finishes, the
next worker starts the next one, until KILLS kills have landed. Defaults to
200 steps and 20 kills; set DURABLE_STORM_STEPS and DURABLE_STORM_KILLS for
a soak run, DURABLE_STORM_SEED to replay one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

import asyncpg
import pytest

import durable

# A storm: the full tier (pyproject.toml); test_crash.py has the fast tests of a SIGKILL.
pytestmark = pytest.mark.slow

PROGRAM = Path(__file__).parent / "programs" / "storm.py"
STEPS = int(os.environ.get("DURABLE_STORM_STEPS", "200"))
KILLS = int(os.environ.get("DURABLE_STORM_KILLS", "20"))


async def run_worker(
    dsn: str, schema: str, name: str, die: str | None, kill_after: float | None
) -> tuple[int, int, list[str]]:
    """Runs one worker; returns its pid, exit code and output lines."""
    args = [sys.executable, str(PROGRAM), dsn, schema, name, str(STEPS)] + (["--die", die] if die else [])
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()]
    if lines == ["ready"] and kill_after is not None:
        try:
            await asyncio.wait_for(proc.wait(), kill_after)
        except asyncio.TimeoutError:
            # It may end on its own between the timeout and the signal.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
    rest = await asyncio.wait_for(proc.stdout.read(), 60)
    lines += rest.decode().splitlines()
    return proc.pid, await proc.wait(), lines


async def test_kill_storm(dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE ledger (workflow text NOT NULL, step int NOT NULL, pid int NOT NULL)")
    rng = random.Random(os.environ.get("DURABLE_STORM_SEED"))
    killed: list[int] = []
    kinds: Counter[str] = Counter()
    workflows = ["storm-0"]
    # Aim one kill inside complete() (a timer rarely lands there), then storm.
    pid, code, _ = await run_worker(dsn, schema, workflows[-1], "in-complete", None)
    assert code == -signal.SIGKILL
    killed.append(pid)
    kinds["in-complete"] += 1
    while len(killed) < KILLS:
        die = rng.choice([None, None, None, "in-body", "after-body"])
        pid, code, lines = await run_worker(dsn, schema, workflows[-1], die, None if die else rng.uniform(0.02, 0.12))
        assert code in (0, -signal.SIGKILL), (code, lines)
        if code == -signal.SIGKILL:
            killed.append(pid)
            kinds[die or "timer"] += 1
        if any(line.startswith("done") for line in lines):
            workflows.append(f"storm-{len(workflows)}")
    pid, code, lines = await run_worker(dsn, schema, workflows[-1], None, None)
    assert code == 0 and lines[-1] == f"done {sum(range(STEPS))}", lines
    assert len(killed) >= KILLS

    steps = await pg.fetch(
        """SELECT w.name AS workflow, s.name, s.status, s.output FROM task s JOIN task w ON w.id = s.parent_id
           WHERE s.kind = 'step' ORDER BY 1, 2"""
    )
    assert [(r["workflow"], r["name"], r["status"], r["output"]) for r in steps] == [
        (w, f"s{i:04d}", "completed", str(i)) for w in sorted(workflows) for i in range(STEPS)
    ], "every step of every workflow has exactly one completed row, with its result"
    roots = await pg.fetch("SELECT name, status, output FROM task WHERE parent_id IS NULL ORDER BY name")
    assert [(r["name"], r["status"], r["output"]) for r in roots] == [
        (w, "completed", str(sum(range(STEPS)))) for w in sorted(workflows)
    ]

    ledger = await pg.fetch("SELECT workflow, step, pid FROM ledger ORDER BY ctid")
    runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    last_run_of: dict[int, tuple[str, int]] = {}
    for row in ledger:
        runs[row["workflow"], row["step"]].append(row["pid"])
        last_run_of[row["pid"]] = (row["workflow"], row["step"])
    interrupted_in = Counter(last_run_of[pid] for pid in killed if pid in last_run_of)
    for key, pids in runs.items():
        assert len(pids) == len(set(pids)), f"step {key} ran twice in one process"
        # Each run beyond the first needs a kill that interrupted this very step
        # (a step whose result was committed never runs again).
        assert len(pids) - 1 <= interrupted_in[key], f"step {key} ran {len(pids)} times, interrupted {interrupted_in[key]}"
    assert len(runs) == len(workflows) * STEPS, "every step body ran"
    print(
        f"\nkill storm: {len(killed)} kills survived ({dict(kinds)}), {len(workflows)} workflows of {STEPS} steps, "
        f"{len(ledger)} step bodies run, {len(ledger) - len(runs)} re-runs of interrupted steps"
    )
