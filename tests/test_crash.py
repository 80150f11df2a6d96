"""A real crash: a separate process SIGKILLed in the middle of a workflow."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import asyncpg

import durable
from _waits import until

PROGRAM = Path(__file__).parent / "programs" / "shards.py"


async def run_program(dsn: str, schema: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PROGRAM), dsn, schema, *args, stdout=asyncio.subprocess.PIPE
    )


async def read_until(proc: asyncio.subprocess.Process, prefix: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert line, f"program ended before printing {prefix!r}; it printed {lines}"
        lines.append(line)
        if line.startswith(prefix):
            return lines


async def test_completed_steps_are_not_rerun_after_sigkill(
    dsn: str, schema: str, db: durable.Db, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE calls (step text NOT NULL, pid int NOT NULL)")

    first = await run_program(dsn, schema, "--block-at", "2")
    await read_until(first, "blocked 2")

    # The body outlives the writer's hold on markers: its attempt is on record.
    async def marked() -> bool:
        return bool(await pg.fetchval("SELECT status FROM task WHERE name = 'shard_2'") == "running")

    await until(marked, "shard_2's running marker is committed")
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    second = await run_program(dsn, schema)
    lines = await read_until(second, "done")
    assert await second.wait() == 0
    assert lines == ["attempt 2", "done 150"]

    calls = {r["step"]: r["n"] for r in await pg.fetch("SELECT step, count(*) AS n FROM calls GROUP BY step")}
    # Completed before the kill: ran once. Interrupted (shard_2): ran again. After: once.
    assert calls == {
        "resolve_shards": 1,
        "shard_0": 1,
        "shard_1": 1,
        "shard_2": 2,
        "shard_3": 1,
        "shard_4": 1,
        "shard_5": 1,
    }
    steps = {
        r["name"]: (r["status"], r["attempt"], json.loads(r["output"]))
        for r in await pg.fetch("SELECT name, status, attempt, output FROM task WHERE kind = 'step'")
    }
    assert steps == {
        "resolve_shards": ("completed", 1, [0, 1, 2, 3, 4, 5]),
        **{f"shard_{i}": ("completed", 2 if i == 2 else 1, i * 10) for i in range(6)},
    }
    root = await pg.fetchrow("SELECT status, attempt, output FROM task WHERE parent_id IS NULL")
    assert root is not None
    assert (root["status"], root["attempt"], json.loads(root["output"])) == ("completed", 2, 150)
