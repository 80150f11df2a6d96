"""Retry policy of a step: how long to wait before each new attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts of a step: ``initial`` seconds before the first
    retry, multiplied by ``factor`` for each next one, at most ``max``, each
    spread by up to ``jitter`` (a fraction: 0.1 is ±10%) so that many failing
    workflows do not retry in lockstep."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and self.factor >= 1 and self.max >= self.initial and 0 <= self.jitter <= 1):
            raise ValueError(
                f"invalid {self!r}: need initial >= 0, factor >= 1, max >= initial and 0 <= jitter <= 1"
            )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        base = min(self.max, self.initial * self.factor ** (retry - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))
