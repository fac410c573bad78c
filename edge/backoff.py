"""Jittered exponential back-off, the one used by every retry loop (MQTT, push channels, cameras).

Jitter keeps devices behind one switch, or cameras behind one NVR, from retrying in lockstep.
`reset()` after a success: the next failure starts again from the shortest delay, so a blip that
follows a recent one is retried as quickly as the first.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, min_s: float, max_s: float, jitter: float = 0.2) -> None:
        """Delays double from `min_s` to `max_s`; each is multiplied by a random factor in
        [1 - jitter, 1 + jitter] and then kept within [min_s, max_s]."""
        self.min_s = min(min_s, max_s)
        self.max_s = max_s
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """Count a failure and return the delay before the next try."""
        self.failures += 1
        return self.delay(self.failures)

    def delay(self, failures: int) -> float:
        """The delay after `failures` consecutive failures (1, 2, ...)."""
        base = self.min_s * 2 ** min(max(failures, 1) - 1, 30)
        jittered = base * random.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.max_s, max(self.min_s, jittered))

    def reset(self) -> None:
        self.failures = 0
