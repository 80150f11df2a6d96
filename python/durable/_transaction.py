"""Transaction steps: ``ctx.transaction(name, fn)`` and the ``tx`` given to ``fn``.

The user's statements and the step's saved result commit in one Postgres
transaction (see doc/adr/026-transactions.md): both land or neither does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _core, _otel
from .errors import Cancelled, LeaseLost, NotJson, ValueTooLarge

if TYPE_CHECKING:
    from ._ctx import Ctx
    from ._retry import Backoff


class Transaction:
    """The open transaction of a transaction step, given to its function.

    Statements use ``$1``, ``$2``... placeholders; each call is one
    statement (no ``;``-separated scripts). Parameters are converted for the
    types Postgres infers for them, and rows come back as dicts (see
    "Type mapping" in doc/api.md). Valid only while the
    step's function runs.
    """

    __slots__ = ("_tx",)

    def __init__(self, tx: _core.Transaction) -> None:
        self._tx = tx

    async def execute(self, sql: str, *args: Any) -> int:
        """Runs a statement; returns the number of rows it affected."""
        statement = await self._tx.prepare(sql)
        return await self._tx.execute(statement, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Runs a query; returns its rows, each a dict by column name."""
        statement = await self._tx.prepare(sql)
        return await self._tx.fetch(statement, *args)

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        """The first row of a query, or None when it has none."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row of a query (None without rows)."""
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values()), None) if row else None

    def __repr__(self) -> str:
        return "<durable.Transaction>"


async def run_transaction(
    ctx: Ctx,
    wf: _core.Workflow,
    name: str,
    fn: Callable[[Transaction], Any],
    retries: int,
    backoff: Backoff | None,
    retry_on: type[Exception] | tuple[type[Exception], ...],
) -> Any:
    """The body of ``Ctx.transaction`` (see there): replay, or run ``fn`` in
    a transaction that commits with the step's result, retrying per policy."""
    from ._ctx import _NO_RETRY, _RETRY

    verdict, saved, number = wf.begin_step(name, False)
    if verdict == "replay":
        _otel.step_replayed()
        return saved
    policy = backoff or _NO_RETRY
    retried = 0
    while True:
        if retried:
            await asyncio.sleep(policy.delay(retried))
        tree = ctx._tree
        if tree.held_back():
            await tree.wait_to_start()
        tree.enter()
        try:
            outcome = await _attempt(ctx, wf, name, fn, number, retries, retry_on, retried)
        finally:
            tree.leave()
        if outcome is not _RETRY:
            return outcome
        retried += 1
        number += 1


async def _attempt(
    ctx: Ctx,
    wf: _core.Workflow,
    name: str,
    fn: Callable[[Transaction], Any],
    number: int,
    retries: int,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    retried: int,
) -> Any:
    """One attempt of transaction step ``name``: its result once committed,
    or ``_RETRY`` when it failed and is retried (its failure recorded);
    raises when it failed for good."""
    from ._ctx import _RETRY, _attempt, _call, _in_step, current

    tx = await wf.begin_transaction(name, number)
    with _otel.step_attempt(ctx.name, name, number) as report:
        tokens = (_attempt.set(number), _in_step.set(ctx), current.set(None))
        try:
            result = await _call(lambda: fn(Transaction(tx)))
            committing = tx.commit(result)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                tx.rollback_soon()  # cancelled: the connection closes, the server rolls back
                raise
            await tx.rollback()
            report.failed(exc)
            await ctx._record_failure(exc, lambda record: wf.fail_step(name, number, record))
            if retried >= retries or not isinstance(exc, retry_on) or isinstance(exc, (NotJson, ValueTooLarge)):
                raise
            return _RETRY
        finally:
            current.reset(tokens[2])
            _in_step.reset(tokens[1])
            _attempt.reset(tokens[0])
        try:
            value = await committing
        except (LeaseLost, Cancelled):
            raise
        except Exception as exc:
            report.failed(exc)
            if tx.in_doubt:
                raise  # the run stopped; a new run reads whether the step committed
            # Rolled back for sure (the server refused the commit): an ordinary failed attempt.
            await ctx._record_failure(exc, lambda record: wf.fail_step(name, number, record))
            if retried >= retries or not isinstance(exc, retry_on):
                raise
            return _RETRY
        report.completed()
        return value
