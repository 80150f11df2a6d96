"""What the ``durable`` command prints: tables, trees, durations, and the
JSON form of the read-only records."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from ._info import StepInfo, WorkflowInfo, WorkflowTree
from ._queues import QueueInfo

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")

#: Longest cell of a table column before it is cut.
MAX_CELL = 60


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``, ``1w``, or several (``1h30m``)."""
    if not _DURATION.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), like 30d or 1h30m")
    try:
        return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text)))
    except OverflowError:
        raise ValueError(f"{text!r} is longer than a duration can be (about 2.7 million years)") from None


def parse_moment(text: str, now: datetime) -> datetime:
    """A duration back from ``now`` (``2h``: two hours ago), or an ISO
    datetime (UTC when it names no offset)."""
    try:
        back = parse_duration(text)
    except ValueError:
        pass
    else:
        try:
            return now - back
        except OverflowError:
            raise ValueError(f"{text!r} ago is before the year 1") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h, 15m) nor an ISO datetime (2026-11-25T10:00:00Z)"
        ) from None
    if moment.utcoffset() is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is not within the years 1 to 9999 in UTC") from None
    return moment


def parse_json(text: str) -> Any:
    """``text`` as a JSON value; ``ValueError`` saying why it is not one
    (``NaN`` and ``Infinity``, which Python's ``json`` reads, are not; nor
    is a number too large for a float), never an error of another kind
    (a value nested too deep to read)."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    def number(digits: str) -> float:
        value = float(digits)
        if math.isinf(value):
            raise ValueError(f"the number {cut(digits, 20)} is too large for a float")
        return value

    try:
        return json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise ValueError("not JSON that can be read: it is nested too deep") from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def duration(seconds: float) -> str:
    """A short human duration: ``12ms``, ``4.2s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for big, small, big_unit, small_unit in ((86400, 3600, "d", "h"), (3600, 60, "h", "m")):
        if whole >= big:
            return f"{whole // big}{big_unit}{whole % big // small:02d}{small_unit}"
    return f"{whole // 60}m{whole % 60:02d}s"


def moment(value: datetime | None) -> str:
    """A time in UTC, to the second."""
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


class Timed(Protocol):
    """A record with times, some perhaps out of range (``WorkflowInfo``...)."""

    @property
    def out_of_range(self) -> Mapping[str, str]: ...


def time_text(record: Timed, field: str) -> str:
    """The time ``field`` of ``record`` as ``moment`` writes it, or its
    text when no datetime holds it (``infinity``)."""
    beyond = record.out_of_range.get(field)
    return beyond if beyond is not None else moment(getattr(record, field))


def took_of(record: Timed, now: datetime) -> str:
    """``took`` of the record's ``started_at`` and ``completed_at``; ``?``
    when one is out of range."""
    if record.out_of_range.keys() & {"started_at", "completed_at"}:
        return "?"
    return took(getattr(record, "started_at"), getattr(record, "completed_at"), now)


def took(started: datetime | None, completed: datetime | None, now: datetime) -> str:
    """How long something ran (``+`` while it still runs)."""
    if started is None:
        return ""
    if completed is None:
        return f"{duration((now - started).total_seconds())}+"
    return duration(max(0.0, (completed - started).total_seconds()))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell; cells over ``MAX_CELL`` are cut."""
    cells = [[cut(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def cut(text: str, limit: int = MAX_CELL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_line(error: Any) -> str:
    """``Type: message`` of a saved error record."""
    if not isinstance(error, dict):
        return "" if error is None else str(error)
    return f"{error.get('type', '?')}: {error.get('message', '')}"


def workflows_table(runs: Sequence[WorkflowInfo], now: datetime) -> str:
    rows = [
        [
            run.name,
            run.status,
            run.workflow or "",
            run.queue or "",
            time_text(run, "created_at"),
            took_of(run, now),
            run.waiting_for or error_line(run.error),
        ]
        for run in runs
    ]
    return table(["NAME", "STATUS", "WORKFLOW", "QUEUE", "CREATED", "DURATION", "WAITING FOR / ERROR"], rows)


def queues_table(queues: Sequence[QueueInfo], now: datetime) -> str:
    rows = [
        [
            queue.name,
            "paused" if queue.paused else "",
            "" if queue.concurrency is None else str(queue.concurrency),
            "" if queue.concurrency_per_key is None else str(queue.concurrency_per_key),
            str(queue.running),
            str(queue.queued),
            str(queue.delayed),
            _waited(queue, now),
            ", ".join(f"{r.used}/{r.limit} per {duration(r.period.total_seconds())}" for r in queue.rates),
        ]
        for queue in queues
    ]
    headers = ["QUEUE", "PAUSED", "CONCURRENCY", "PER KEY", "RUNNING", "QUEUED", "DELAYED", "OLDEST WAIT", "RATE USED"]
    return table(headers, rows)


def _waited(queue: QueueInfo, now: datetime) -> str:
    if queue.oldest_due is None:
        return queue.out_of_range.get("oldest_due", "")
    return duration(max(0.0, (now - queue.oldest_due).total_seconds()))


def tree_text(tree: WorkflowTree, now: datetime) -> str:
    """The workflow, then its steps and children (in the order they were
    recorded), each with status, attempts and duration; failures with their
    error and traceback, indented under them."""
    info = tree.info
    # A child by its whole path, which cannot read like a root's name.
    lines = [_workflow_line(info, now, name=info.name if len(info.path) == 1 else repr(info.path))]
    lines += _details(tree.info.error, tree.info.waiting_for, "    ")
    _branches(tree, "", now, lines)
    return "\n".join(lines)


def _branches(tree: WorkflowTree, prefix: str, now: datetime, lines: list[str]) -> None:
    nodes: list[StepInfo | WorkflowTree] = sorted([*tree.steps, *tree.children], key=_node_id)
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        lines.append(prefix + ("└─ " if last else "├─ ") + _line(node, now))
        inner = prefix + ("   " if last else "│  ")
        if isinstance(node, WorkflowTree):
            lines += _details(node.info.error, None, inner + "│    " if _has_nodes(node) else inner + "     ")
            _branches(node, inner, now, lines)
        else:
            lines += _details(node.error, None, inner + "     ")


def _node_id(node: StepInfo | WorkflowTree) -> int:
    return node.id if isinstance(node, StepInfo) else node.info.id


def _has_nodes(tree: WorkflowTree) -> bool:
    return bool(tree.steps or tree.children)


def _line(node: StepInfo | WorkflowTree, now: datetime) -> str:
    if isinstance(node, WorkflowTree):
        return "workflow " + _workflow_line(node.info, now)
    return f"step {node.name}  {_status(node.status, node.attempt)}  {took_of(node, now)}"


def _workflow_line(info: WorkflowInfo, now: datetime, name: str | None = None) -> str:
    parts = [name or info.name, _status(info.status, info.attempt), took_of(info, now)]
    if info.workflow or info.queue:
        parts.append(f"({', '.join(x for x in (info.workflow, info.queue and f'queue {info.queue}') if x)})")
    return "  ".join(part for part in parts if part)


def _status(status: str, attempt: int) -> str:
    return status if attempt <= 1 else f"{status} (attempt {attempt})"


def _details(error: Any, waiting_for: str | None, indent: str) -> list[str]:
    """The error (and its traceback) or the reason a run waits, indented."""
    lines = []
    if waiting_for:
        lines.append(f"{indent}waiting for: {waiting_for}")
    if error is not None:
        lines.append(indent + error_line(error))
        traceback = error.get("traceback") if isinstance(error, dict) else None
        # An error made without being raised (``ctx.fail(ValueError(...))``)
        # has a "traceback" of just its own line.
        if traceback and traceback.strip() != error_line(error):
            lines += [indent + "  " + line for line in traceback.rstrip("\n").splitlines()]
    return lines


def jsonable(value: Any) -> Any:
    """The JSON form of the records: datetimes as ISO 8601 text, periods in
    seconds; a tree's workflow fields next to its ``steps`` and ``children``."""
    if isinstance(value, WorkflowTree):
        return jsonable(value.info) | {
            "steps": [jsonable(step) for step in value.steps],
            "children": [jsonable(child) for child in value.children],
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value
