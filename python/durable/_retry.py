"""Retry policy of a step: how long to wait before each new attempt."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ._options import shown
from .errors import ConfigError

#: Longest wait between two attempts (a day), and the largest growth factor.
MAX_DELAY = 86400.0
MAX_FACTOR = 1000.0


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts of a step: ``initial`` seconds before the first
    retry, multiplied by ``factor`` for each next one, at most ``max``, each
    spread by up to ``jitter`` (a fraction: 0.1 is ±10%) so that many failing
    workflows do not retry in lockstep. A step's retries without a
    ``backoff`` use these defaults. The fields must be finite, with ``0 <=
    initial <= max <= 86400``, ``1 <= factor <= 1000`` and ``0 <= jitter <=
    1`` (else ``ConfigError``)."""

    #: Seconds before the first retry.
    initial: float = 1.0
    #: What each next delay is multiplied by.
    factor: float = 2.0
    #: The longest delay, in seconds.
    max: float = 60.0
    #: How far each delay is spread, as a fraction of it.
    jitter: float = 0.1

    def __post_init__(self) -> None:
        numbers = (self.initial, self.factor, self.max, self.jitter)
        if not all(_finite(n) for n in numbers):
            raise ConfigError(f"invalid Backoff{_fields(numbers)}: every field must be a finite number")
        if not (
            0 <= self.initial <= self.max <= MAX_DELAY and 1 <= self.factor <= MAX_FACTOR and 0 <= self.jitter <= 1
        ):
            raise ConfigError(
                f"invalid Backoff{_fields(numbers)}: need 0 <= initial <= max <= {MAX_DELAY:g} (seconds), "
                f"1 <= factor <= {MAX_FACTOR:g} and 0 <= jitter <= 1"
            )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        if self.initial == 0 or self.factor == 1:
            base = self.initial
        elif retry - 1 >= math.log(self.max / self.initial, self.factor):
            base = self.max  # computing the power there could overflow
        else:
            base = self.initial * self.factor ** (retry - 1)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


def _finite(value: object) -> bool:
    """True for an int or float that is a finite float (an int too large for
    a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _fields(numbers: tuple[object, ...]) -> str:
    """The fields of a Backoff for a message, huge ints shown by their size."""
    names = ("initial", "factor", "max", "jitter")
    return "(" + ", ".join(f"{name}={shown(value)}" for name, value in zip(names, numbers)) + ")"
