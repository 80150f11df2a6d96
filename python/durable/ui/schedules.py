"""The schedules page's view of a schedule (a function and one of its
specs): the spec in words, its next ticks, and its recent ticks with the
runs they queued (found by name: a tick's run is named
``<workflow>@<tick>``, so each is one index lookup)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cron_descriptor import FormatException, MissingFieldException, Options, WrongArgumentException, get_description

from .._info import WorkflowInfo
from .._moments import moments, read as read_time
from .._schedules import CONFIRM_EVERY, MICROSECOND, Schedule, tick_run_name

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
    #: When an executor that serves it last registered, confirmed or
    #: advanced it (None: a time out of range).
    seen_at: datetime | None
    #: Whether that was recent enough for a live executor to serve it.
    served: bool
    #: ``next_tick`` and ``seen_at`` as text when no datetime holds them
    #: (written by hand): the page shows no ticks for such a next tick.
    out_of_range: Mapping[str, str] = field(default_factory=dict)


def read(workflow: str, spec: str) -> Schedule | None:
    """The schedule ``spec`` of ``workflow`` stores, checked as the
    decorator checks it; None if this version cannot read it or this
    machine cannot compute its ticks (another version's spec, a time zone
    this machine's tz database lacks, an interval out of range): the page
    shows it as written."""
    try:
        stored = Schedule.from_spec(spec)
        zone = None if stored.cron is None else stored.zone
        return Schedule.make(stored.cron, stored.every, zone, "latest", workflow)
    except ValueError:  # ConfigError too
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
    """``next_tick`` and the ticks after it (fewer at the year 9999)."""
    ticks = [next_tick]
    try:
        while len(ticks) < count:
            ticks.append(schedule.after(ticks[-1]))
    except OverflowError:
        pass
    return ticks


def recent(schedule: Schedule, next_tick: datetime, count: int = TICKS_SHOWN) -> list[datetime]:
    """The ``count`` ticks before ``next_tick``, newest first (fewer at the year 1)."""
    ticks: list[datetime] = []
    tick = next_tick
    try:
        while len(ticks) < count:
            tick = schedule.at_or_before(tick - MICROSECOND)
            ticks.append(tick)
    except OverflowError:
        pass
    return ticks


Row = tuple[str, str, int | str, int | str]


def recent_names(workflow: str, spec: str, next_tick: int | str) -> list[str]:
    """The names of the runs of the recent ticks (none for an unreadable
    spec or a next tick out of range)."""
    schedule = read(workflow, spec)
    tick = read_time(next_tick)
    if schedule is None or tick is None:
        return []
    return [tick_run_name(workflow, tick) for tick in recent(schedule, tick)]


def view(row: Row, runs: dict[str, WorkflowInfo], now: datetime) -> ScheduleView:
    """The view of a stored schedule ``(workflow, spec, next_tick,
    seen_at)``, with ``runs`` by name (those of its recent ticks), at ``now``."""
    workflow, spec, *_ = row
    times = moments({"next_tick": row[2], "seen_at": row[3]}, "next_tick", "seen_at")
    next_tick: datetime | None = times["next_tick"]
    seen_at: datetime | None = times["seen_at"]
    beyond = times["out_of_range"]
    served = seen_at is not None and now - seen_at <= SERVED_WITHIN
    schedule = read(workflow, spec)
    if schedule is None or next_tick is None:
        words = spec if schedule is None else in_words(schedule)
        return ScheduleView(workflow, spec, words, [] if next_tick is None else [next_tick], [], seen_at, served, beyond)
    return ScheduleView(
        workflow,
        spec,
        in_words(schedule),
        upcoming(schedule, next_tick),
        [(tick, runs.get(tick_run_name(workflow, tick))) for tick in recent(schedule, next_tick)],
        seen_at,
        served,
        beyond,
    )
