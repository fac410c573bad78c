"""Stage timings in fixed-size histograms: memory and cost per sample stay the same for months.

Log-spaced buckets (BUCKETS_PER_DECADE per factor of ten, from 1 µs to 100 s) give percentiles to
within ~2% of the value, which is finer than the noise of any timing on a shared machine; a short
ring of the latest samples serves "the median of the last few hundred" for live stats.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

LOW_MS = 1e-3
DECADES = 8
BUCKETS_PER_DECADE = 50
NBUCKETS = DECADES * BUCKETS_PER_DECADE
RECENT = 256
"""Latest samples kept for live stats (the MQTT stats topic's inference_ms)."""


class Histogram:
    __slots__ = ("buckets", "count", "max", "recent", "sum")

    def __init__(self) -> None:
        self.buckets = np.zeros(NBUCKETS + 2, np.int64)  # [under, ...NBUCKETS..., over]
        self.count = 0
        self.sum = 0.0
        self.max = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT)

    def add(self, ms: float) -> None:
        if ms <= LOW_MS:
            index = 0
        else:
            index = min(NBUCKETS + 1, 1 + int(math.log10(ms / LOW_MS) * BUCKETS_PER_DECADE))
        self.buckets[index] += 1
        self.count += 1
        self.sum += ms
        if ms > self.max:
            self.max = ms
        self.recent.append(ms)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100): the geometric middle of the bucket it falls in."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        index = int(np.searchsorted(np.cumsum(self.buckets), rank))
        if index == 0:
            return LOW_MS
        if index > NBUCKETS:
            return self.max
        middle = LOW_MS * 10 ** ((index - 0.5) / BUCKETS_PER_DECADE)
        return min(middle, self.max)

    def recent_median(self) -> float | None:
        return float(np.median(self.recent)) if self.recent else None


class StageTimes:
    """Per-stage milliseconds, summarised as median and p99."""

    def __init__(self) -> None:
        self.stages: dict[str, Histogram] = {}

    def add(self, stage: str, ms: float) -> None:
        hist = self.stages.get(stage)
        if hist is None:
            hist = self.stages[stage] = Histogram()
        hist.add(ms)

    def get(self, stage: str) -> Histogram | None:
        return self.stages.get(stage)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            stage: {"p50": round(h.percentile(50), 3), "p99": round(h.percentile(99), 3)}
            for stage, h in self.stages.items()
            if h.count
        }
