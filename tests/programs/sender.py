"""A workflow that sends one message to workflow "target", and can die right
after the send committed.

    python sender.py DSN SCHEMA [--die] [--key KEY]

With ``--die``, the process SIGKILLs itself inside the send's step body, as
soon as the message is committed and before the step's result is saved.
Without it, the workflow runs (resuming it if it exists) and prints what
``send`` returned.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import durable
import durable._messages
from durable import Ctx

send_for_real = durable._messages._send


async def send_then_die(*args: Any) -> bool:
    await send_for_real(*args)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("not reached")


@durable.workflow(name="sender")
async def sender(ctx: Ctx, key: str | None) -> bool:
    return await durable.send(ctx.db, "target", "t", "hello", key=key)


async def main(dsn: str, schema: str, die: bool, key: str | None) -> None:
    db = await durable.init(dsn, schema=schema)
    if die:
        durable._messages._send = send_then_die  # type: ignore[assignment]
    print(await sender.run(db, "sender", key), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    key = args[args.index("--key") + 1] if "--key" in args else None
    asyncio.run(main(args[0], args[1], "--die" in args, key))
