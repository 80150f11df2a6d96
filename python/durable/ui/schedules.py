"""The schedules page's view of a schedule (a function and one of its
specs): the spec in words, its next ticks, and its recent ticks with the
runs they queued (found by name: a tick's run is named
``<workflow>@<tick>``, so each is one index lookup)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cron_descriptor import FormatException, MissingFieldException, Options, WrongArgumentException, get_description

from .._info import WorkflowInfo
from .._schedules import CONFIRM_EVERY, MICROSECOND, Schedule, from_micros, tick_run_name

#: How many ticks ahead and behind the page shows.
TICKS_SHOWN = 5

#: A schedule not seen by an executor for longer is shown as served by none
#: (a live executor confirms its schedules every ``CONFIRM_EVERY``).
SERVED_WITHIN = timedelta(seconds=2 * CONFIRM_EVERY)


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
    #: When an executor that serves it last registered, confirmed or advanced it.
    seen_at: datetime
    #: Whether that was recent enough for a live executor to serve it.
    served: bool


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


def view(row: tuple[str, str, int, int], runs: dict[str, WorkflowInfo], now: datetime) -> ScheduleView:
    """The view of a stored schedule ``(workflow, spec, next_tick,
    seen_at)``, with ``runs`` by name (those of its recent ticks), at ``now``."""
    workflow, spec, next_us, seen_us = row
    schedule = read(spec)
    next_tick = from_micros(next_us)
    seen_at = from_micros(seen_us)
    served = now - seen_at <= SERVED_WITHIN
    if schedule is None:
        return ScheduleView(workflow, spec, spec, [next_tick], [], seen_at, served)
    return ScheduleView(
        workflow,
        spec,
        in_words(schedule),
        upcoming(schedule, next_tick),
        [(tick, runs.get(tick_run_name(workflow, tick))) for tick in recent(schedule, next_tick)],
        seen_at,
        served,
    )
