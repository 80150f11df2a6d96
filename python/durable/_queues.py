"""Queues: ``create_queue``, ``pause_queue``, ``resume_queue``, ``list_queues``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from ._core import MAX_RATE_PERIOD
from ._db import Db, resolve
from ._moments import moments
from ._options import Seconds, count, seconds
from .errors import ConfigError
from ._names import check as check_name

#: A rate limit: at most ``limit`` runs start in any window of ``period``.
RateLimit = tuple[int, Seconds]


async def create_queue(
    db: Db | str,
    name: str,
    *,
    concurrency: int | None = None,
    concurrency_per_key: int | None = None,
    rate_limit: RateLimit | Sequence[RateLimit] | None = None,
) -> None:
    """Creates the queue ``name``, or updates the limits given (keeping the others).

    ``concurrency``: most runs of the queue running at once, across every
    executor. ``concurrency_per_key``: most running at once per ``key`` (see
    ``Workflow.enqueue``). ``rate_limit``: ``(limit, period)``, or a list of
    them, each allowing at most ``limit`` starts in any window of ``period``
    (a ``timedelta`` or seconds); given, they replace the queue's windows.
    """
    check_name("queue", name)
    resolved = await resolve(db)
    rates = None if rate_limit is None else _rates(name, rate_limit)
    await resolved._engine.create_queue(
        name,
        concurrency=None if concurrency is None else count("concurrency", concurrency, at_least=1, at_most=2**31 - 1),
        concurrency_per_key=None
        if concurrency_per_key is None
        else count("concurrency_per_key", concurrency_per_key, at_least=1, at_most=2**31 - 1),
        rates=rates,
    )


async def pause_queue(db: Db | str, name: str) -> None:
    """Pauses the queue ``name``: executors start none of its runs until it is resumed.

    Runs already running go on. A queue that does not exist yet is created, paused.
    """
    await (await resolve(db))._engine.set_queue_paused(check_name("queue", name), True)


async def resume_queue(db: Db | str, name: str) -> None:
    """Resumes the queue ``name``, waking the executors."""
    await (await resolve(db))._engine.set_queue_paused(check_name("queue", name), False)


@dataclass(frozen=True)
class RateUse:
    """A rate window of a queue and how much of it is used now."""

    #: At most this many runs start...
    limit: int
    #: ...in any window of this length.
    period: timedelta
    #: Runs started within the last ``period``.
    used: int


@dataclass(frozen=True)
class QueueInfo:
    """A queue as it is now (a read-only record)."""

    name: str
    #: True while ``pause_queue`` holds it: executors start none of its runs.
    paused: bool
    #: Most runs running at once, across every executor (None: no limit).
    concurrency: int | None
    #: Most runs of one key running at once (None: no limit).
    concurrency_per_key: int | None
    #: Its rate windows, shortest first.
    rates: tuple[RateUse, ...]
    #: Runs of the queue running now.
    running: int
    #: Runs that are due and wait for an executor.
    queued: int
    #: Runs that wait for their time (a delay, ``run_at``, a schedule's tick).
    delayed: int
    #: Since when the longest-waiting due run has been due (None: none
    #: waits, or a time out of range: see ``out_of_range``).
    oldest_due: datetime | None
    #: Its times that no ``datetime`` holds, by field, as text (as ``WorkflowInfo``'s).
    out_of_range: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def _from(row: dict[str, Any]) -> QueueInfo:
        rates = tuple(RateUse(limit, timedelta(seconds=period), used) for limit, period, used in row["rates"])
        return QueueInfo(**moments(row, "oldest_due") | {"rates": rates})


async def list_queues(db: Db | str) -> list[QueueInfo]:
    """Every queue, by name, with its limits and what runs and waits in it now."""
    rows = await (await resolve(db))._engine.list_queues()
    return [QueueInfo._from(row) for row in rows]


def _rates(queue: str, rate_limit: RateLimit | Sequence[RateLimit]) -> list[tuple[int, float]]:
    windows: Sequence[object] = [rate_limit] if _is_window(rate_limit) else rate_limit
    if not windows:
        raise ConfigError(f"rate_limit of queue {queue!r} is empty; give (limit, period) or a list of them")
    rates = []
    for window in windows:
        if not _is_window(window):
            raise ConfigError(f"rate_limit of queue {queue!r} must be (limit, period) or a list of them, not {window!r}")
        limit, period = cast(RateLimit, window)
        rates.append(
            (
                count("rate_limit's limit", limit, at_least=1, at_most=2**31 - 1),
                seconds("rate_limit's period", period, at_most=MAX_RATE_PERIOD),
            )
        )
    if len({period for _, period in rates}) != len(rates):
        raise ConfigError(f"rate_limit of queue {queue!r} gives one period twice")
    return rates


def _is_window(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int) and not isinstance(value[0], bool)
