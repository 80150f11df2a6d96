"""Checking options at the boundary: every bad setting is a ``ConfigError``."""

from __future__ import annotations

import math
from datetime import timedelta

from .errors import ConfigError

#: A duration: a ``timedelta`` or a number of seconds.
Seconds = float | timedelta


def seconds(what: str, value: Seconds, *, at_least: float = 0.0, at_most: float, zero_ok: bool = False) -> float:
    """``value`` in seconds, checked: finite, in range; else ``ConfigError`` naming ``what``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    number = float(value)
    low_ok = number >= at_least if zero_ok else number > at_least
    if not (math.isfinite(number) and low_ok and number <= at_most):
        if at_least == 0 and not zero_ok:
            wanted = f"a positive number of seconds (at most {at_most:g})"
        else:
            wanted = f"a number of seconds from {at_least:g} to {at_most:g}"
        raise ConfigError(f"{what} must be {wanted} or a timedelta, not {value!r}")
    return number


def count(what: str, value: int, *, at_least: int, at_most: int) -> int:
    """``value`` as an int in range; else ``ConfigError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not at_least <= value <= at_most:
        raise ConfigError(f"{what} must be an int from {at_least} to {at_most}, not {value!r}")
    return value
