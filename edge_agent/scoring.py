"""How surprising is a reading? Forecast error and level shift, normalised, combined.

Scoring only measures; deciding whether a score is an anomaly is :mod:`edge_agent.alerts`'
job. The trainer calibrates thresholds with this very code on the int8 model, so a threshold
means the same offline and on the device.

The score has two parts, each about 1 on normal data:

* **forecast surprise** — for a reading ``x`` (normalised) and the model's forecast ``p`` of it,
  made one step earlier: per-feature errors ``z_f = (x_f - p_f) / error_scale_f`` (the spread
  of that feature's forecast error on normal validation data, so a noisy feature does not
  drown a quiet one), combined as ``sqrt(mean_f z_f²)`` and smoothed with an exponentially
  weighted moving average (``smoothing.alpha``), so one noisy reading does not raise an alert
  but a sustained deviation does. It catches sudden changes and broken relations between
  sensors (a frozen encoder, a vibrating bearing).
* **level shift** (optional, ``level``) — a forecaster adapts to a new level within a few
  readings, so a sustained fault would stop looking surprising. The level part remembers what
  normal looked like: the distance between the stream's recent mean (an EWMA of its
  normalised readings) and its baseline, per feature in units of ``level.scale``, combined as
  ``sqrt(mean_f l_f²)``. It catches sustained shifts away from normal (an overheating motor, a
  closing valve). With ``level.track_alpha`` each feature's baseline follows slow drift
  (temperatures wander over hours) as long as the feature stays within ``level.track_below``
  of it, and holds still while the feature is further away.

The score is the larger of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bundle import Scoring

_add_reduce = np.add.reduce


@dataclass(slots=True)
class ScoreState:
    """A stream's scoring memory: the smoothed surprise, its recent mean and its (tracking)
    baseline, all normalised (``None`` = unset)."""

    smoothed: float | None = None
    level: np.ndarray | None = None
    baseline: np.ndarray | None = None


class Scorer:
    """Computes per-feature errors and level shifts, and the stream's combined score.

    >>> from edge_agent.bundle import Scoring, Smoothing, Threshold
    >>> s = Scorer(Scoring(error_scale=[1.0, 2.0], smoothing=Smoothing(alpha=0.5),
    ...                    threshold=Threshold(enter=3, exit=2, method="fixed")))
    >>> z = s.errors(np.array([1.0, 4.0]), np.array([0.0, 0.0]))
    >>> z.tolist(), s.raw(z)
    ([1.0, 2.0], 1.5811388300841898)
    >>> st = ScoreState()
    >>> s.smooth(st, 2.0), s.smooth(st, 4.0)
    (2.0, 3.0)
    """

    def __init__(self, params: Scoring) -> None:
        self.params = params
        self.inv_scale = 1.0 / np.asarray(params.error_scale, dtype=np.float64)
        self.alpha = params.smoothing.alpha
        level = params.level
        self.has_level = level is not None
        self.level_alpha = level.alpha if level is not None else 0.0
        self.track_alpha = level.track_alpha if level is not None else 0.0
        self.track_below = level.track_below if level is not None else 0.0
        self.inv_level_scale = (1.0 / np.asarray(level.scale, dtype=np.float64)
                                if level is not None else None)

    def errors(self, x: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Per-feature forecast errors in units of their normal spread."""
        return (x - prediction) * self.inv_scale

    @staticmethod
    def raw(z: np.ndarray) -> float:
        """Root mean square of per-feature values (about 1 on normal data).

        A sum of squares (``np.add.reduce``, what ``np.sum`` calls, without its ~5 µs of
        argument handling), not ``np.dot``: numpy hands dot products to the platform's BLAS,
        which rounds differently on arm64 and x86; this way a Pi computes the same bits."""
        return math.sqrt(float(_add_reduce(z * z)) / z.shape[0])

    def smooth(self, state: ScoreState, raw: float) -> float:
        """The stream's smoothed forecast surprise after one more raw score."""
        previous = state.smoothed
        state.smoothed = raw if previous is None else previous + self.alpha * (raw - previous)
        return state.smoothed

    def level_shift(self, state: ScoreState, x: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        """Per-feature distance of the stream's recent mean from its baseline (``anchor`` at
        first; then, with ``track_alpha``, following each feature slowly while it is close)."""
        inv_scale = self.inv_level_scale
        assert inv_scale is not None
        recent, baseline = state.level, state.baseline
        if recent is None:  # a (re)started stream's recent mean begins at its baseline
            recent = anchor
        if baseline is None:
            baseline = anchor
        recent = recent + self.level_alpha * (x - recent)
        shift = (recent - baseline) * inv_scale
        if self.track_alpha > 0.0:
            near = np.abs(shift) < self.track_below  # features close enough to follow
            baseline = baseline + (self.track_alpha * near) * (x - baseline)
        state.level, state.baseline = recent, baseline
        return shift

    def top_features(self, contributions: np.ndarray, k: int | None = None) -> list[int]:
        """Indices of the features contributing most, largest first."""
        k = self.params.top_features if k is None else k
        return [int(i) for i in np.argsort(-np.abs(contributions), kind="stable")[:k]]
