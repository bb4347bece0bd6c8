"""Turn raw readings into model inputs: standardise per feature, with a per-stream baseline.

Real machines run at different operating points: a pump in one test rig may push four times
the flow of the one the model was trained on. Standardising with the training set's statistics
would put such a stream 30 standard deviations out of range, where the LSTM saturates. So a
bundle may ask for a *per-stream baseline*: each stream learns its own mean and spread from its
first ``baseline_readings`` readings (Welford's algorithm, constant memory) and is standardised
with those. ``min_std`` floors the spread so a flat baseline cannot blow inputs up, and inputs
are clipped to ``±clip`` so one wild reading cannot drive the network far outside what it saw
in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Normalisation


@dataclass(slots=True)
class Baseline:
    """Running mean and spread of a stream's first readings; frozen once complete.

    >>> b = Baseline.empty(1)
    >>> for v in (1.0, 2.0, 3.0):
    ...     b.add(np.array([v]))
    >>> float(b.mean[0]), round(float(b.std(np.array([0.0]))[0]), 4)
    (2.0, 0.8165)
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, n_features: int) -> "Baseline":
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    def add(self, x: np.ndarray) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (x - self.mean)

    def std(self, floor: np.ndarray) -> np.ndarray:
        var = self.m2 / max(self.count, 1)
        return np.maximum(np.sqrt(var), floor)


class Scale:
    """A fixed affine map raw → normalised: ``(x - mean) / std``, clipped to ``±clip``."""

    __slots__ = ("mean", "std", "clip", "_inv_std")

    def __init__(self, mean: np.ndarray, std: np.ndarray, clip: float) -> None:
        self.mean = mean
        self.std = std
        self.clip = clip
        self._inv_std = 1.0 / std

    def forward(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) * self._inv_std
        np.minimum(z, self.clip, out=z)
        np.maximum(z, -self.clip, out=z)
        return z

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


class Normaliser:
    """The bundle's normalisation rules; hands out the :class:`Scale` a stream should use."""

    def __init__(self, params: Normalisation) -> None:
        self.params = params
        self.baseline_readings = params.baseline_readings
        self.min_std = np.asarray(params.min_std, dtype=np.float64)
        self.global_scale = Scale(np.asarray(params.mean, dtype=np.float64),
                                  np.asarray(params.std, dtype=np.float64), params.clip)

    @property
    def per_stream(self) -> bool:
        return self.params.per_stream

    def scale_from(self, baseline: Baseline) -> Scale:
        """The scale of a stream whose baseline is complete."""
        return Scale(baseline.mean.copy(), baseline.std(self.min_std), self.params.clip)
