"""An at-most-once step whose process dies the instant its body starts.

    python charge.py DSN SCHEMA [--die]

With ``--die`` the body of step ``charge`` SIGKILLs the process at once,
synchronously: only a marker committed before the body ran can tell the next
run that the charge may have happened. Without it, the workflow is resumed
and prints ``interrupted`` if ``charge`` is refused, ``charged`` if it ran.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import durable
from durable import Ctx


def charge(die: bool) -> str:
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return "charged"


async def main(dsn: str, schema: str, die: bool) -> None:
    db = await durable.init(dsn, schema=schema)
    ctx = await Ctx.start(db, "order", wait=10)
    try:
        print(await ctx.step("charge", lambda: charge(die), at_most_once=True), flush=True)
    except durable.StepInterrupted:
        print("interrupted", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--die" in sys.argv))
