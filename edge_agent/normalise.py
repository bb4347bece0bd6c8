"""Turn raw readings into model inputs: standardise per feature, with a per-stream baseline.

Real machines run at different operating points: a pump in one test rig may push four times
the flow of the one the model was trained on. Standardising with the training set's statistics
would put such a stream 30 standard deviations out of range, where the LSTM saturates. So a
bundle may ask for a *per-stream baseline*: each stream learns its own mean and spread from its
first ``baseline_readings`` readings (Welford's algorithm, constant memory) and is standardised
with those. ``min_std`` floors the spread so a flat baseline cannot blow inputs up, and inputs
are clipped to ``±clip`` so one wild reading cannot drive the network far outside what it saw
in training.

Readings are small (a few features) and every one goes through here, so the per-reading maths
is done on lists of Python floats in one loop per step: each numpy call costs about a
microsecond whatever its size, several times the arithmetic on four values. The operations
are the same IEEE double operations numpy does element by element, so results are the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .bundle import Normalisation

Vector = list[float]  # one float per feature, in manifest order


@dataclass(slots=True)
class Baseline:
    """Running mean and spread of a stream's first readings; frozen once complete.

    >>> b = Baseline.empty(1)
    >>> for v in (1.0, 2.0, 3.0):
    ...     b.add([v])
    >>> b.mean[0], round(float(b.std(np.array([0.0]))[0]), 4)
    (2.0, 0.8165)
    """

    count: int
    mean: Vector
    m2: Vector

    @classmethod
    def empty(cls, n_features: int) -> "Baseline":
        return cls(0, [0.0] * n_features, [0.0] * n_features)

    def add(self, x: Vector) -> None:
        """Welford's update: ``delta = x - mean``, ``mean += delta / n``,
        ``m2 += delta * (x - mean)``, per feature."""
        self.count += 1
        n = self.count
        mean, m2 = [], []
        for v, old, spread in zip(x, self.mean, self.m2):
            delta = v - old
            new = old + delta / n
            mean.append(new)
            m2.append(spread + delta * (v - new))
        self.mean, self.m2 = mean, m2

    def std(self, floor: np.ndarray) -> np.ndarray:
        var = np.asarray(self.m2) / max(self.count, 1)
        return np.maximum(np.sqrt(var), floor)


class Scale:
    """A fixed affine map raw → normalised: ``(x - mean) / std``, clipped to ``±clip``.

    >>> s = Scale(np.array([1.0, 0.0]), np.array([2.0, 0.5]), clip=3.0)
    >>> s.forward([5.0, -9.0]), s.inverse([2.0, -3.0]).tolist()
    ([2.0, -3.0], [5.0, -1.5])
    >>> s.forward_all(np.array([[5.0, -9.0], [1.0, 0.25]])).tolist()
    [[2.0, -3.0], [0.0, 0.5]]
    """

    __slots__ = ("mean", "std", "clip", "_mean", "_inv_std")

    def __init__(self, mean: np.ndarray, std: np.ndarray, clip: float) -> None:
        self.mean = mean
        self.std = std
        self.clip = clip
        self._mean: Vector = np.asarray(mean, dtype=np.float64).tolist()
        self._inv_std: Vector = (1.0 / np.asarray(std, dtype=np.float64)).tolist()

    def forward(self, x: Sequence[float]) -> Vector:
        high = self.clip
        low = -high
        out = []
        for v, m, inv in zip(x, self._mean, self._inv_std):
            z = (v - m) * inv
            out.append(high if z > high else low if z < low else z)
        return out

    def forward_all(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`forward` for a whole recording at once (rows × features; the trainer): the
        same operations, so the same bits."""
        z = (np.asarray(rows, dtype=np.float64) - np.asarray(self._mean)) * np.asarray(
            self._inv_std)
        np.minimum(z, self.clip, out=z)
        np.maximum(z, -self.clip, out=z)
        return z

    def inverse(self, z: Sequence[float] | np.ndarray) -> np.ndarray:
        """Normalised values back in raw units (for alerts and reports: numpy is fine)."""
        return np.asarray(z) * self.std + self.mean


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
        return Scale(np.array(baseline.mean), baseline.std(self.min_std), self.params.clip)

    def beyond_range(self, baseline: Baseline) -> list[tuple[int, float]]:
        """Features whose usual value on a stream (its baseline mean) lies ``clip`` or more
        training spreads from the training mean, each with that distance in spreads.

        With the training set's scale such a feature's inputs are clipped to a near-constant,
        so the model cannot see it move: neither the forecast nor the level part can tell a
        fault there from normal. A stream scaled by its own baseline (``per_stream``) is
        centred on it by construction: nothing to report.

        >>> from edge_agent.bundle import Normalisation
        >>> n = Normaliser(Normalisation(mean=[0.0, 100.0], std=[1.0, 2.0], clip=10.0,
        ...                              min_std=[1e-3, 1e-3], baseline_readings=2))
        >>> b = Baseline.empty(2)
        >>> b.add([0.5, 40.0]); b.add([1.5, 40.0])
        >>> n.beyond_range(b)
        [(1, -30.0)]
        """
        if self.per_stream or baseline.count == 0:
            return []
        params = self.params
        return [(i, z) for i, (m, mean, std) in enumerate(zip(baseline.mean, params.mean,
                                                              params.std))
                if abs(z := (m - mean) / std) >= params.clip]
