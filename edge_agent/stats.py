"""Counters of what the agent did, readable at any time from any thread.

The network thread owns the receive-side counters and the worker owns the rest, so no counter
is written by two threads; readers take a consistent-enough copy with :meth:`Stats.snapshot`.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


#: Upper bounds (seconds) of the per-reading processing-time histogram.
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3)


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    # network thread
    received: int = 0
    deferred: int = 0  # arrived while shutting down: left unacknowledged for redelivery
    rejected: Counter[str] = field(default_factory=Counter)
    unknown_topic: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # per stream
    # worker thread
    processed: int = 0
    admission: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    starts_by_lift: Counter[str] = field(default_factory=Counter)  # Alert.lift_label of starts
    step_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        """Record one reading's processing time (worker thread)."""
        self.step_seconds.append(seconds)
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def latency_percentiles(self) -> dict[str, float]:
        """Per-reading processing time (parse excluded), in microseconds."""
        if not self.step_seconds:
            return {}
        values = np.array(self.step_seconds) * 1e6
        return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)}

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "received": self.received,
            "processed": self.processed,
            "deferred": self.deferred,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "unknown_topic": self.unknown_topic,
            "dropped": sum(self.dropped.values()),
            "dropped_by_stream": dict(self.dropped.most_common(20)),
            "admission": dict(self.admission),
            "alerts": dict(self.alerts),
            "alert_starts_by_lift": dict(self.starts_by_lift),
            "latency_us": self.latency_percentiles(),
        }
