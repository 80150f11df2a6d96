"""Times as the engine gives them to the readers: microseconds since the
epoch (an int) for a time within the years 1 to 9999 in UTC, what a
``datetime`` holds; for any other its text (``infinity``, ``-infinity``,
``10000-01-01T00:00:00.000000Z``, ``0001-12-31T10:00:00.000000Z BC``). Only
SQL written by hand stores such a time (durable's own writes refuse them):
a record shows it as None in its field and as text in ``out_of_range``, so
that one row never breaks a listing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._schedules import from_micros


def read(value: int | str | None) -> datetime | None:
    """An aware datetime (UTC); None for no time and for one out of range."""
    return from_micros(value) if isinstance(value, int) else None


def moments(row: dict[str, Any], *fields: str) -> dict[str, Any]:
    """``row`` with its times ``fields`` as ``read`` makes them, and
    ``out_of_range``: the text of each time out of range, by field, with
    the row's own (the engine's text of a JSON value Python cannot hold)."""
    beyond = dict(row.get("out_of_range", {})) | {key: row[key] for key in fields if isinstance(row[key], str)}
    return row | {key: read(row[key]) for key in fields} | {"out_of_range": beyond}
