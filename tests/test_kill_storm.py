"""The kill storm: a worker SIGKILLed again and again at random moments.

Defaults to 200 steps and 20 kills; set DURABLE_STORM_STEPS and
DURABLE_STORM_KILLS for a soak run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

import asyncpg

import durable

PROGRAM = Path(__file__).parent / "programs" / "storm.py"
STEPS = int(os.environ.get("DURABLE_STORM_STEPS", "200"))
KILLS = int(os.environ.get("DURABLE_STORM_KILLS", "20"))


async def run_worker(dsn: str, schema: str, die: str | None, kill_after: float | None) -> tuple[int, int, list[str]]:
    """Runs one worker; returns its pid, exit code and output lines."""
    args = [sys.executable, str(PROGRAM), dsn, schema, str(STEPS)] + (["--die", die] if die else [])
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()]
    if lines == ["ready"] and kill_after is not None:
        try:
            await asyncio.wait_for(proc.wait(), kill_after)
        except asyncio.TimeoutError:
            proc.send_signal(signal.SIGKILL)
    rest = await asyncio.wait_for(proc.stdout.read(), 60)
    lines += rest.decode().splitlines()
    return proc.pid, await proc.wait(), lines


async def test_kill_storm(dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE ledger (step int NOT NULL, pid int NOT NULL)")
    rng = random.Random(os.environ.get("DURABLE_STORM_SEED"))
    killed: list[int] = []
    kinds: Counter[str] = Counter()
    finished = False
    while len(killed) < KILLS and not finished:
        die = rng.choice([None, None, None, "in-body", "after-body"])
        pid, code, lines = await run_worker(dsn, schema, die, None if die else rng.uniform(0.02, 0.12))
        assert code in (0, -signal.SIGKILL), (code, lines)
        if code == -signal.SIGKILL:
            killed.append(pid)
            kinds[die or "timer"] += 1
        finished = any(line.startswith("done") for line in lines)
    # Aim one kill inside complete(), then finish.
    if not finished:
        pid, code, _ = await run_worker(dsn, schema, "in-complete", None)
        if code == -signal.SIGKILL:
            killed.append(pid)
            kinds["in-complete"] += 1
    pid, code, lines = await run_worker(dsn, schema, None, None)
    assert code == 0
    assert lines[-1] == f"done {sum(range(STEPS))}"

    steps = await pg.fetch("SELECT name, status, output FROM task WHERE kind = 'step' ORDER BY name")
    assert [(r["name"], r["status"], r["output"]) for r in steps] == [
        (f"s{i:04d}", "completed", str(i)) for i in range(STEPS)
    ], "every step has exactly one completed row, with its result"
    root = await pg.fetchrow("SELECT status, output FROM task WHERE parent_id IS NULL")
    assert root is not None
    assert (root["status"], root["output"]) == ("completed", str(sum(range(STEPS))))

    ledger = await pg.fetch("SELECT step, pid FROM ledger ORDER BY ctid")
    runs_by_step: dict[int, list[int]] = defaultdict(list)
    last_step_of: dict[int, int] = {}
    for row in ledger:
        runs_by_step[row["step"]].append(row["pid"])
        last_step_of[row["pid"]] = row["step"]
    interrupted_in = Counter(last_step_of[pid] for pid in killed if pid in last_step_of)
    extra_runs = 0
    for step in range(STEPS):
        pids = runs_by_step[step]
        assert pids, f"step {step} never ran"
        assert len(pids) == len(set(pids)), f"step {step} ran twice in one process"
        # Each run beyond the first needs a kill that interrupted this very step.
        extra_runs += max(0, len(pids) - 1 - interrupted_in[step])
    print(
        f"\nkill storm: {len(killed)} kills survived ({dict(kinds)}), {STEPS} steps, "
        f"{len(ledger)} step bodies run, {sum(len(p) - 1 for p in runs_by_step.values())} re-runs of interrupted steps, "
        f"duplicates found: {extra_runs}"
    )
    assert extra_runs == 0
    assert len(killed) >= min(KILLS, 20) or finished, "the storm was too weak to count"
