"""Deleting finished workflows: ``gc``."""

from __future__ import annotations

from ._db import Db, resolve
from ._options import Seconds, count, seconds

#: The oldest cut-off accepted (a century), in seconds.
MAX_AGE = 100 * 366 * 86400.0


async def gc(db: Db | str, older_than: Seconds, *, batch: int = 1000) -> int:
    """Deletes the root workflows that finished (completed, failed or
    cancelled) more than ``older_than`` ago (a ``timedelta`` or seconds, on
    the database's clock), with their children and steps. Returns how many
    roots were deleted.

    Works in batches of ``batch`` roots, each its own short transaction, so
    it never holds many locks for long; unfinished runs are never touched.
    """
    age = seconds("older_than", older_than, at_most=MAX_AGE, zero_ok=True)
    size = count("batch", batch, at_least=1, at_most=100_000)
    return await (await resolve(db))._engine.gc(age, size)
