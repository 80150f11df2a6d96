"""Transaction steps: ``ctx.transaction(name, fn)`` and the ``tx`` given to ``fn``.

The user's statements and the step's saved result commit in one Postgres
transaction (see doc/adr/026-transactions.md): both land or neither does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _core, _otel
from ._attempts import RETRY, StepBody, call, may_retry, record_failure, run_attempts
from .errors import Cancelled, LeaseLost, NotJson, ValueTooLarge

if TYPE_CHECKING:
    from ._ctx import Ctx, Tree
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
    tree: Tree,
    name: str,
    fn: Callable[[Transaction], Any],
    retries: int,
    backoff: Backoff | None,
    retry_on: type[Exception] | tuple[type[Exception], ...],
) -> Any:
    """The body of ``Ctx.transaction`` (see there) for the workflow ``ctx``
    (its handle ``wf``, its ``tree``): replay, or run ``fn`` in a
    transaction that commits with the step's result, retrying per policy."""
    verdict, saved, number = wf.begin_step(name, False)
    if verdict == "replay":
        _otel.step_replayed()
        return saved

    async def run(number: int, retried: int) -> Any:
        """One attempt: its result once committed, or ``RETRY`` when it
        failed and is retried (its failure recorded); raises when it failed
        for good."""
        tx = await wf.begin_transaction(name, number)
        with _otel.step_attempt(ctx.name, name, number) as report:
            with StepBody(ctx, number):
                try:
                    result = await call(lambda: fn(Transaction(tx)))
                    committing = tx.commit(result)
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        tx.rollback_soon()  # cancelled: the connection closes, the server rolls back
                        raise
                    await tx.rollback()
                    report.failed(exc)
                    await record_failure(exc, lambda record: wf.fail_step(name, number, record))
                    if not may_retry(exc, retried, retries, retry_on) or isinstance(exc, (NotJson, ValueTooLarge)):
                        raise
                    return RETRY
            try:
                value = await committing
            except (LeaseLost, Cancelled):
                raise
            except Exception as exc:
                report.failed(exc)
                if tx.in_doubt:
                    raise  # the run stopped; a new run reads whether the step committed
                # Rolled back for sure (the server refused the commit): an ordinary failed attempt.
                await record_failure(exc, lambda record: wf.fail_step(name, number, record))
                if not may_retry(exc, retried, retries, retry_on):
                    raise
                return RETRY
            report.completed()
            return value

    return await run_attempts(tree, backoff, number, run)
