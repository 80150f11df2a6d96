"""Workflows for ``durable worker cli_jobs:workflows`` in tests/test_cli.py."""

from __future__ import annotations

import durable
from durable import Ctx


@durable.workflow(name="cli.double", queue="cli")
async def double(ctx: Ctx, n: int) -> int:
    return 2 * await ctx.step("read", lambda: n)


workflows = [double]


async def make_executor(db: durable.Db) -> durable.Executor:
    """The factory form: ``durable worker cli_jobs:make_executor``."""
    return durable.Executor(db, workflows, concurrency=5, shutdown_grace=5)
