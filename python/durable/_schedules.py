"""Recurring runs: cron expressions and fixed intervals, and their ticks.

Ticks are computed here (cron by ``cronsim``: five fields, DST-aware) and
stored by the engine (``task_schedule_spec``, one row per function and
spec), which advances them on the database's clock so that each tick runs
once across every executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._options import Seconds, seconds
from .errors import ConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)

#: What to run after downtime: the latest missed tick once, or every one.
Missed = Literal["latest", "all"]

#: Most ticks queued at once with ``missed="all"`` (the oldest are dropped).
MAX_MISSED = 1000

#: How often, in seconds, an executor confirms that it still serves its
#: schedules (it also does at each tick it queues).
CONFIRM_EVERY = 60.0

#: A spec of a function that no executor has confirmed or advanced for this
#: long (seconds) is served by none: the executors of the function's other
#: specs remove it (ten missed confirmations).
FORGET_AFTER = 10 * CONFIRM_EVERY


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


def tick_text(tick: datetime) -> str:
    """A tick as its run's name and input carry it: ``2026-11-23T10:15:00Z``."""
    text = tick.astimezone(timezone.utc).isoformat(timespec="microseconds" if tick.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def tick_run_name(workflow: str, tick: datetime) -> str:
    """The name of the run of ``workflow``'s ``tick``: ``report@2026-11-23T10:15:00Z``."""
    return f"{workflow}@{tick_text(tick)}"


def parse_tick(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Schedule:
    """When a workflow runs: a cron expression (in a time zone) or an interval."""

    cron: str | None
    zone: str
    every: float | None
    missed: Missed

    @staticmethod
    def make(
        cron: str | None, every: Seconds | None, zone: str | None, missed: str, workflow: str
    ) -> Schedule | None:
        """Checks and makes a schedule; None for a workflow without one."""
        if cron is None and every is None:
            if zone is not None:
                raise ConfigError(f"workflow {workflow!r}: timezone= only goes with schedule=")
            return None
        if cron is not None and every is not None:
            raise ConfigError(f"workflow {workflow!r}: give schedule= or every=, not both")
        if missed not in ("latest", "all"):
            raise ConfigError(f"workflow {workflow!r}: missed= must be 'latest' or 'all', not {missed!r}")
        if every is not None:
            if zone is not None:
                raise ConfigError(f"workflow {workflow!r}: timezone= only goes with schedule= (every= counts from the epoch)")
            interval = seconds("every", every, at_least=1, at_most=366 * 86400, zero_ok=True)
            if interval != math.floor(interval):
                raise ConfigError(f"workflow {workflow!r}: every= must be a whole number of seconds, not {interval}")
            return Schedule(cron=None, zone="UTC", every=interval, missed=missed)  # type: ignore[arg-type]
        if not isinstance(cron, str):
            raise ConfigError(f"workflow {workflow!r}: schedule= must be a cron string, not {cron!r}")
        name = zone or "UTC"
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"workflow {workflow!r}: unknown time zone {name!r}") from exc
        try:
            CronSim(cron, datetime.now(ZoneInfo(name)))
        except CronSimError as exc:
            raise ConfigError(
                f"workflow {workflow!r}: bad cron expression {cron!r} ({exc}); "
                "give five fields: minute hour day-of-month month day-of-week"
            ) from exc
        if len(cron.split()) != 5:
            raise ConfigError(f"workflow {workflow!r}: a cron expression has five fields, not {cron!r}")
        return Schedule(cron=cron, zone=name, every=None, missed=missed)  # type: ignore[arg-type]

    @staticmethod
    def from_spec(spec: str) -> Schedule:
        """The schedule ``spec`` stores (``missed`` is not stored: "latest");
        ``ValueError`` if it is not one."""
        kind, _, rest = spec.partition(" ")
        if kind == "every":
            return Schedule(cron=None, zone="UTC", every=float(rest), missed="latest")
        cron, _, zone = rest.rpartition(" ")
        if kind != "cron" or len(cron.split()) != 5:
            raise ValueError(f"not a schedule: {spec!r}")
        return Schedule(cron=cron, zone=zone, every=None, missed="latest")

    @property
    def spec(self) -> str:
        """As stored, exactly (``every`` is a whole number of seconds): each
        spec of a function has its schedule, and a new one starts from its
        next tick."""
        if self.every is not None:
            return f"every {int(self.every)}"
        return f"cron {self.cron} {self.zone}"

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (UTC)."""
        if self.every is not None:
            step = int(self.every * 1_000_000)
            return from_micros((to_micros(moment) // step + 1) * step)
        assert self.cron is not None
        local = moment.astimezone(ZoneInfo(self.zone))
        return next(iter(CronSim(self.cron, local))).astimezone(timezone.utc)

    def at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment`` (UTC)."""
        if self.every is not None:
            step = int(self.every * 1_000_000)
            return from_micros(to_micros(moment) // step * step)
        assert self.cron is not None
        local = (moment + MICROSECOND).astimezone(ZoneInfo(self.zone))
        return next(iter(CronSim(self.cron, local, reverse=True))).astimezone(timezone.utc)

    def due(self, next_tick: datetime, now: datetime) -> tuple[list[datetime], datetime]:
        """The ticks to run now, from ``next_tick`` (due) up to ``now``, and
        the first tick after ``now``: the latest alone, or every one (at most
        ``MAX_MISSED``, the newest), as ``missed`` says. Walks back from
        ``now``, so a long downtime costs no more than what is run."""
        ticks: list[datetime] = []
        tick = self.at_or_before(now)
        while tick >= next_tick and len(ticks) < (MAX_MISSED if self.missed == "all" else 1):
            ticks.append(tick)
            tick = self.at_or_before(tick - MICROSECOND)
        return ticks[::-1], self.after(now)
