"""Checking options at the boundary: every bad setting is a ``ConfigError``."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from .errors import ConfigError

#: A duration: a ``timedelta`` or a number of seconds.
Seconds = float | timedelta


def seconds(what: str, value: Seconds, *, at_least: float = 0.0, at_most: float, zero_ok: bool = False) -> float:
    """``value`` in seconds, checked: finite, in range; else ``ConfigError`` naming ``what``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number of seconds or a timedelta, not {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float: out of range either way
        number = math.inf if value > 0 else -math.inf
    low_ok = number >= at_least if zero_ok else number > at_least
    if not (math.isfinite(number) and low_ok and number <= at_most):
        if at_least == 0 and not zero_ok:
            wanted = f"a positive number of seconds (at most {at_most:g})"
        else:
            wanted = f"a number of seconds from {at_least:g} to {at_most:g}"
        raise ConfigError(f"{what} must be {wanted} or a timedelta, not {shown(value)}")
    return number


def moment(what: str, value: datetime) -> datetime:
    """``value``, an aware ``datetime``, in UTC; else ``ConfigError`` naming
    ``what``. Its UTC time must fall within the years 1 to 9999 (what
    ``datetime`` can hold), since durable computes and reads it back in UTC."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigError(f"{what} must be a timezone-aware datetime, not {shown(value)}")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ConfigError(
            f"{what} must fall within the years 1 to 9999 in UTC, and {value.isoformat()} does not"
        ) from None


def count(what: str, value: int, *, at_least: int, at_most: int) -> int:
    """``value`` as an int in range; else ``ConfigError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not at_least <= value <= at_most:
        raise ConfigError(f"{what} must be an int from {at_least} to {at_most}, not {shown(value)}")
    return value


def shown(value: object) -> str:
    """``value`` for an error message: its repr, or for an int too long to
    read (or to format at all: Python refuses over 4300 digits), its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}an int of about {digits} digits"
    return repr(value)
