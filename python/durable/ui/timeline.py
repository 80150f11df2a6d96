"""The run page's waterfall: one row per step and per child workflow (a
child's rows indented under it, in start order), on one time axis from the
run's creation to its end (now while it runs). Each attempt is its own bar,
a queued run's wait is a bar of its own, a sleep is a gap, a message a mark.

``layout`` computes it all (coordinates in SVG user units) so the template
only draws; it is a pure function of the records, for the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .._cli_render import duration
from .._core import FINISHED_STATUSES
from .._info import StepInfo, WorkflowInfo, WorkflowTree
from .._moments import read

#: The SVG's width, its label column's, a row's height.
WIDTH = 1000
LABEL = 260
ROW = 22
#: How far a child's label is indented per level.
INDENT = 14
#: The narrowest bar drawn (a step of a few microseconds stays visible).
MIN_BAR = 1.5
#: At most this many rows are drawn (a run of thousands of steps says how many were left out).
MAX_ROWS = 500


@dataclass(frozen=True)
class Attempt:
    """A past attempt of a task (``task_attempt``)."""

    task_id: int
    attempt: int
    #: completed, failed, cancelled or interrupted.
    status: str
    started_at: datetime | None
    #: None when interrupted (unknown): drawn up to ``replaced_at``.
    ended_at: datetime | None
    #: When the next attempt began (None only for a time out of range:
    #: such times are left out of the drawing).
    replaced_at: datetime | None
    error: Any

    @staticmethod
    def _from(row: dict[str, Any]) -> Attempt:
        return Attempt(**(row | {key: read(row[key]) for key in ("started_at", "ended_at", "replaced_at")}))


@dataclass(frozen=True)
class Message:
    """A message sent to a workflow of the tree."""

    task_id: int
    topic: str
    #: None only for a time out of range (not drawn).
    sent_at: datetime | None
    received_at: datetime | None
    #: The ``recv`` step that took it.
    received_by: str | None

    @staticmethod
    def _from(row: dict[str, Any]) -> Message:
        return Message(row["task_id"], row["topic"], read(row["sent_at"]), read(row["received_at"]), row["received_by"])


@dataclass(frozen=True)
class History:
    """What the tree's rows do not hold: past attempts (by task id, in
    order), the messages (by workflow id), and which steps are sleeps."""

    attempts: dict[int, list[Attempt]] = field(default_factory=dict)
    messages: dict[int, list[Message]] = field(default_factory=dict)
    #: The ids of the steps that ``ctx.sleep`` saved (the engine marks them):
    #: their output is a wake-up time. Any other output is a value of the
    #: workflow's, never read as a time, whatever it looks like.
    sleeps: frozenset[int] = frozenset()

    @staticmethod
    def _from(read: dict[str, Any]) -> History:
        history = History(sleeps=frozenset(read.get("sleeps", ())))
        for row in read.get("attempts", ()):
            attempt = Attempt._from(row)
            history.attempts.setdefault(attempt.task_id, []).append(attempt)
        for row in read.get("messages", ()):
            message = Message._from(row)
            history.messages.setdefault(message.task_id, []).append(message)
        return history


@dataclass(frozen=True)
class Bar:
    """A span of a row: ``kind`` wait (in the queue), run (an attempt) or
    sleep (a gap); ``status`` names its fill."""

    x: float
    width: float
    kind: str
    status: str
    title: str


@dataclass(frozen=True)
class Mark:
    """A moment on a row: a message sent or received, an event set."""

    x: float
    kind: str
    title: str


@dataclass(frozen=True)
class Row:
    y: float
    depth: int
    #: The step's or child's own name (a workflow's path is ``path``).
    label: str
    kind: str
    status: str
    bars: list[Bar]
    marks: list[Mark]
    #: A workflow's path, its names joined by `` / `` (for its title); None for a step.
    path: str | None = None
    #: A label drawn in the row's sleep gap.
    note: str | None = None
    note_x: float = 0.0


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: float
    label_width: int
    rows: list[Row]
    ticks: list[Tick]
    #: Rows not drawn (beyond ``MAX_ROWS``).
    left_out: int


class Axis:
    """Times to x: ``start`` at the label column's edge, ``end`` at the right."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1e-3)

    def x(self, moment: datetime) -> float:
        share = (moment - self.start).total_seconds() / self.span
        return LABEL + min(max(share, 0.0), 1.0) * (WIDTH - LABEL)

    def bar(self, begin: datetime, end: datetime, kind: str, status: str, title: str) -> Bar:
        x0, x1 = self.x(begin), self.x(end)
        width = max(x1 - x0, MIN_BAR)
        return Bar(min(x0, WIDTH - width), width, kind, status, title)


def layout(tree: WorkflowTree, history: History, now: datetime) -> Timeline:
    """The waterfall of ``tree``: its own row, then its steps and children
    in start order, each child followed by its own rows."""
    info = tree.info
    start = info.created_at or now  # None: a time out of range, which the page shows as text
    end = info.completed_at if info.status in FINISHED_STATUSES and info.completed_at is not None else now
    axis = Axis(start, max(end, start))
    rows: list[Row] = []
    total = _walk(tree, history, axis, now, 0, rows)
    ticks = [Tick(axis.x(start + timedelta(seconds=axis.span * i / 4)), _offset(axis.span * i / 4)) for i in range(5)]
    return Timeline(WIDTH, (len(rows) + 1) * ROW + 4, LABEL, rows, ticks, total - len(rows))


def _walk(tree: WorkflowTree, history: History, axis: Axis, now: datetime, depth: int, rows: list[Row]) -> int:
    """Adds the rows of ``tree`` (up to ``MAX_ROWS``); how many it has in all."""
    info = tree.info
    count = 1
    if len(rows) < MAX_ROWS:
        rows.append(_workflow_row(info, history, axis, now, depth, len(rows)))
    received = {m.received_by: m for m in history.messages.get(info.id, ()) if m.received_by is not None}
    # In the order they first started (a retry does not move a step down).
    entries: list[tuple[datetime, int, StepInfo | WorkflowTree]] = [(s.created_at or now, s.id, s) for s in tree.steps]
    entries += [(child.info.created_at or now, child.info.id, child) for child in tree.children]
    for _, _, entry in sorted(entries, key=lambda item: (item[0], item[1])):
        if isinstance(entry, WorkflowTree):
            count += _walk(entry, history, axis, now, depth + 1, rows)
        else:
            count += 1
            if len(rows) < MAX_ROWS:
                rows.append(_step_row(entry, history, received.get(entry.name), axis, now, depth + 1, len(rows)))
    return count


def _attempt_bars(
    task: StepInfo | WorkflowInfo, kind: str, history: History, axis: Axis, now: datetime
) -> tuple[list[Bar], datetime | None]:
    """A bar per attempt, past ones from the history; and when the current
    one began (None: not yet)."""
    bars = []
    name = task.name
    previous_end: datetime | None = None
    for past in history.attempts.get(task.id, ()):
        begin = past.started_at or previous_end or past.replaced_at
        stop = past.ended_at or past.replaced_at
        if begin is None or stop is None:  # times out of range
            continue
        title = _title(name, past.status, past.attempt, begin, stop)
        bars.append(axis.bar(begin, stop, "run", past.status, title))
        previous_end = past.replaced_at
    current = task.started_at
    if kind == "workflow" and previous_end is not None:
        current = previous_end  # a workflow's row keeps its first start only
    if current is None:
        return bars, None
    stop = task.completed_at if task.status in FINISHED_STATUSES and task.completed_at is not None else now
    stop = max(stop, current)
    title = _title(name, task.status, task.attempt, current, stop, running=task.status not in FINISHED_STATUSES)
    bars.append(axis.bar(current, stop, "run", task.status, title))
    return bars, current


def _workflow_row(info: WorkflowInfo, history: History, axis: Axis, now: datetime, depth: int, index: int) -> Row:
    name = info.name
    bars: list[Bar] = []
    first_start = info.started_at
    waited_in_queue = info.queue is not None or info.status in ("queued", "scheduled")
    if waited_in_queue and info.created_at is not None:
        until = first_start or now
        title = f"{name} · waited in queue {info.queue or ''} for {duration((until - info.created_at).total_seconds())}"
        bars.append(axis.bar(info.created_at, max(until, info.created_at), "wait", "queued", title.replace("  ", " ")))
    attempts, _ = _attempt_bars(info, "workflow", history, axis, now)
    bars += attempts
    marks = [
        Mark(axis.x(m.sent_at), "message", f"message on topic {m.topic!r} sent to {name} at {_clock(m.sent_at, now)}")
        for m in history.messages.get(info.id, ())
        if m.sent_at is not None
    ]
    return Row(_y(index), depth, name, "workflow", info.status, bars, marks, path=" / ".join(info.path))


def _step_row(
    step: StepInfo, history: History, message: Message | None, axis: Axis, now: datetime, depth: int, index: int
) -> Row:
    bars, _ = _attempt_bars(step, "step", history, axis, now)
    marks = []
    note, note_x = None, 0.0
    wake = sleep_until(step, history.sleeps)
    if wake is not None and step.completed_at is not None:
        title = f"{step.name} · sleep until {_clock(wake, now)} ({duration((wake - step.completed_at).total_seconds())})"
        gap = axis.bar(step.completed_at, max(wake, step.completed_at), "sleep", "sleep", title)
        bars.append(gap)
        note, note_x = f"sleep until {_clock(wake, now)}", gap.x + 3
    if message is not None and message.received_at is not None:
        title = f"{step.name} · received a message on topic {message.topic!r} at {_clock(message.received_at, now)}"
        marks.append(Mark(axis.x(message.received_at), "received", title))
    if step.name.startswith("event ") and step.completed_at is not None and step.status == "completed":
        marks.append(Mark(axis.x(step.completed_at), "event", f"{step.name} set at {_clock(step.completed_at, now)}"))
    return Row(_y(index), depth, step.name, "step", step.status, bars, marks, note=note, note_x=note_x)


def sleep_until(step: StepInfo, sleeps: frozenset[int]) -> datetime | None:
    """The wake-up time of a ``ctx.sleep`` step (one of ``sleeps``, as the
    engine marked them): its output, that time in ISO 8601. None for any
    other step, and for a sleep whose output is not such a time (written by
    hand): it is drawn as a step."""
    if step.id not in sleeps or step.status != "completed" or not isinstance(step.output, str):
        return None
    try:
        wake = datetime.fromisoformat(step.output)
    except ValueError:
        return None
    return wake if wake.utcoffset() is not None else None


def _y(index: int) -> float:
    return ROW * (index + 1)


def _title(name: str, status: str, attempt: int, begin: datetime, end: datetime, *, running: bool = False) -> str:
    took = duration(max((end - begin).total_seconds(), 0.0)) + ("+" if running else "")
    return f"{name} · {status} · attempt {attempt} · {took}"


def _clock(moment: datetime, now: datetime) -> str:
    """A moment's time of day (UTC), with its date when that is not ``now``'s."""
    moment, now = moment.astimezone(timezone.utc), now.astimezone(timezone.utc)
    shown = "%H:%M:%S.%f" if moment.date() == now.date() else "%Y-%m-%d %H:%M:%S.%f"
    return moment.strftime(shown)[:-3]


def _offset(seconds: float) -> str:
    return "0" if seconds == 0 else "+" + duration(seconds)
