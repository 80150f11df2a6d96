"""Running the test programs (tests/programs/) as real processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"


async def spawn(program: str, *args: str) -> asyncio.subprocess.Process:
    """Starts ``tests/programs/<program>`` with piped stdin and stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROGRAMS / program),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def line(proc: asyncio.subprocess.Process, timeout: float = 60) -> str:
    """The next line the program prints; fails if it ended instead."""
    assert proc.stdout is not None
    text = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()
    assert text, "the program ended early"
    return text


async def tell(proc: asyncio.subprocess.Process, text: str) -> None:
    """Writes a line to the program's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(f"{text}\n".encode())
    await proc.stdin.drain()
