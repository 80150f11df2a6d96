"""The schedules page's view of a schedule: its spec in words, its next
ticks, and its recent ticks with the runs they queued (found by name: a
tick's run is named ``<workflow>@<tick>``, so each is one index lookup)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cron_descriptor import FormatException, MissingFieldException, Options, WrongArgumentException, get_description

from .._info import WorkflowInfo
from .._schedules import MICROSECOND, Schedule, from_micros, tick_run_name

#: How many ticks ahead and behind the page shows.
TICKS_SHOWN = 5


@dataclass(frozen=True)
class ScheduleView:
    workflow: str
    #: As stored: ``cron <expr> <zone>`` or ``every <seconds>``.
    spec: str
    #: The spec said in words (``At 09:00, Monday through Friday (Europe/Paris)``).
    words: str
    #: The next ticks, from the next one the executors will run.
    upcoming: list[datetime]
    #: The latest ticks before that, newest first, with the run each queued
    #: (None: skipped, as ``missed="latest"`` skips, or collected).
    recent: list[tuple[datetime, WorkflowInfo | None]]
    updated_at: datetime


def read(spec: str) -> Schedule | None:
    """The schedule ``spec`` stores; None if this version cannot read it."""
    try:
        return Schedule.from_spec(spec)
    except ValueError:
        return None


def in_words(schedule: Schedule) -> str:
    """``every 5 minutes``; a cron expression as cron-descriptor says it, in its zone."""
    if schedule.every is not None:
        return every_words(int(schedule.every))
    assert schedule.cron is not None
    options = Options()
    options.use_24hour_time_format = True
    try:
        said = str(get_description(schedule.cron, options))
    except (FormatException, MissingFieldException, WrongArgumentException):
        # One cronsim takes that cron-descriptor cannot say: as written.
        said = schedule.cron
    return f"{said} ({schedule.zone})"


def every_words(seconds: int) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return "every second" if seconds == 1 else f"every {seconds} seconds"


def upcoming(schedule: Schedule, next_tick: datetime, count: int = TICKS_SHOWN) -> list[datetime]:
    ticks = [next_tick]
    while len(ticks) < count:
        ticks.append(schedule.after(ticks[-1]))
    return ticks


def recent(schedule: Schedule, next_tick: datetime, count: int = TICKS_SHOWN) -> list[datetime]:
    """The ``count`` ticks before ``next_tick``, newest first."""
    ticks: list[datetime] = []
    tick = next_tick
    while len(ticks) < count:
        tick = schedule.at_or_before(tick - MICROSECOND)
        ticks.append(tick)
    return ticks


def recent_names(workflow: str, spec: str, next_tick: int) -> list[str]:
    """The names of the runs of the recent ticks (none for an unreadable spec)."""
    schedule = read(spec)
    if schedule is None:
        return []
    return [tick_run_name(workflow, tick) for tick in recent(schedule, from_micros(next_tick))]


def view(row: tuple[str, str, int, int], runs: dict[str, WorkflowInfo]) -> ScheduleView:
    """The view of a stored schedule ``(workflow, spec, next_tick,
    updated_at)``, with ``runs`` by name (those of its recent ticks)."""
    workflow, spec, next_us, updated_us = row
    schedule = read(spec)
    next_tick = from_micros(next_us)
    if schedule is None:
        return ScheduleView(workflow, spec, spec, [next_tick], [], from_micros(updated_us))
    return ScheduleView(
        workflow,
        spec,
        in_words(schedule),
        upcoming(schedule, next_tick),
        [(tick, runs.get(tick_run_name(workflow, tick))) for tick in recent(schedule, next_tick)],
        from_micros(updated_us),
    )
