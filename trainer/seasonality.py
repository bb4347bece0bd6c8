"""Does the history repeat every day or week? The period of the seasonal score, if any.

A forecaster that looks a few readings back cannot tell a normal day from a day whose peak
never came; the agent's seasonal part (:mod:`edge_agent.scoring`) can, but only for a stream
that really repeats. The trainer therefore offers it only when the training data says so: for
each candidate period, the correlation between every reading and the reading one period later
(Pearson, per file and feature, averaged) must reach ``min_autocorrelation``, and every file
must span two periods (one to learn the profile from, one to check it on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge_agent.csvdata import Recording

from .config import SeasonalConfig


@dataclass(frozen=True)
class Season:
    """A detected period: its length, how many slots it is cut into, and its evidence."""

    period_s: float
    slots: int
    autocorrelation: float


def lag_correlation(values: np.ndarray, lag: int) -> float:
    """Mean over features of the correlation between ``values[t]`` and ``values[t + lag]``
    (0 for a feature that is constant on either side).

    >>> t = np.arange(200.0)
    >>> round(lag_correlation(np.sin(2 * np.pi * t / 50)[:, None], 50), 6)
    1.0
    >>> round(lag_correlation(np.sin(2 * np.pi * t / 50)[:, None], 25), 6)
    -1.0
    """
    a, b = values[:-lag], values[lag:]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    corr = np.divide((a * b).sum(axis=0), norm, out=np.zeros(values.shape[1]), where=norm > 0)
    return float(corr.mean())


def detect(recordings: Sequence[Recording], sample_period_s: float | None,
           config: SeasonalConfig) -> tuple[Season | None, list[str]]:
    """The strongest candidate period the recordings repeat at, or ``None``; with one line per
    candidate saying what was measured (for the training log)."""
    if sample_period_s is None or any(r.timestamps is None for r in recordings):
        return None, ["seasonal: off (the data has no timestamps)"]
    best: Season | None = None
    notes = []
    for period in config.periods_s:
        lag = int(round(period / sample_period_s))
        if lag < 2:
            notes.append(f"seasonal {period:g} s: shorter than two readings")
            continue
        short = [r for r in recordings if len(r) < 2 * lag]
        if short:
            notes.append(f"seasonal {period:g} s: {len(short)} file(s) shorter than two periods "
                         f"({2 * lag} readings)")
            continue
        corr = float(np.mean([lag_correlation(r.values, lag) for r in recordings]))
        verdict = "repeats" if corr >= config.min_autocorrelation else "too weak"
        notes.append(f"seasonal {period:g} s ({lag} readings): autocorrelation {corr:.2f}, "
                     f"{verdict} (needs {config.min_autocorrelation:g})")
        if corr >= config.min_autocorrelation and (best is None or corr > best.autocorrelation):
            best = Season(float(period), min(lag, config.max_slots), corr)
    return best, notes
