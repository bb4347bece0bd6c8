"""A forecaster that keeps learning on the device: per-feature AR(p) by recursive least squares.

The int8 LSTM is frozen when the bundle is written; a stream that behaves differently later
(burstier, another rhythm) is judged by what the network learned from its first readings.
This small linear forecaster is the stream's own and learns from every reading: per feature,
``x_t ≈ w · [x_t-1, …, x_t-p, 1]``, its weights refitted after each reading by recursive least
squares with forgetting factor ``λ`` (older readings weigh ``λ`` per reading less, so it
follows a stream that changes). Its error says how surprising a reading is *for the stream as
it has lately been*, which is what HTM, the best published detector on NAB, measures too.
:mod:`edge_agent.scoring` turns the errors into the score's adaptive part.

Each feature keeps ``p + 1`` weights and a ``(p + 1)²`` matrix ``P`` (the inverse of the
weighted correlation of its inputs). Two guards keep ``P`` sound over months: it is kept
exactly symmetric (rounding otherwise lets the two halves drift apart, and the update then
diverges),
and its trace is bounded by :data:`MAX_TRACE` (a feature that stops moving teaches nothing, so
forgetting would grow ``P`` by ``1 / λ`` per reading until it overflowed).

The maths runs on lists of Python floats, one loop per step, in a fixed order: the same bits
on a Pi as on the workstation that calibrated it (no BLAS).

A sine wave is an AR(2) process (``x_t = 2 cos(ω) x_t-1 - x_t-2``): the first forecast is
far off, and within a few periods it is almost exact.

>>> state = AdaptiveState.fresh(features=1, order=2)
>>> errors = [learn(state, [math.sin(0.3 * t)], forgetting=0.99) for t in range(60)]
>>> errors[1] is None, abs(errors[2][0][0]) > 0.5, abs(errors[-1][0][0]) < 0.01
(True, True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import mul

from .normalise import Vector

INITIAL_INVERSE = 100.0  # P starts at this times the identity: little trust in zero weights
MAX_TRACE = 1e4  # bound on the trace of each feature's P


@dataclass(slots=True)
class AdaptiveState:
    """One stream's forecaster: per feature, the weights (on the last ``order`` readings,
    newest first, then a constant) and ``P``; the last ``order`` readings (oldest first)."""

    weights: list[list[float]]
    inverse: list[list[list[float]]]
    past: list[Vector]

    @classmethod
    def fresh(cls, features: int, order: int) -> "AdaptiveState":
        m = order + 1
        return cls([[0.0] * m for _ in range(features)],
                   [[[INITIAL_INVERSE if i == j else 0.0 for j in range(m)] for i in range(m)]
                    for _ in range(features)], [])

    @property
    def order(self) -> int:
        return len(self.weights[0]) - 1

    def forget_past(self) -> None:
        """After a gap the last readings are not the next one's lags; the fit is still the
        stream's (it is knowledge of the stream, like a seasonal profile)."""
        self.past = []


def learn(state: AdaptiveState, x: Vector, forgetting: float) -> tuple[Vector, Vector] | None:
    """Forecast ``x`` from the past readings, then learn from it: returns the per-feature
    errors and forecasts (``None`` until ``order`` readings are in, which only fills the lags).
    """
    order = state.order
    past = state.past
    result = None
    if len(past) == order:
        errors, forecasts = [], []
        for f, value in enumerate(x):
            phi = [past[order - 1 - k][f] for k in range(order)]
            phi.append(1.0)
            forecast = _dot(state.weights[f], phi)
            error = value - forecast
            _update(state.weights[f], state.inverse[f], phi, error, forgetting)
            errors.append(error)
            forecasts.append(forecast)
        result = errors, forecasts
    past.append(list(x))
    if len(past) > order:
        del past[0]
    return result


def _dot(a: Vector, b: Vector) -> float:
    """``a · b`` rounded once (``math.fsum``: exact, so the same bits whatever the order or the
    Python version; ``sum`` changed its rounding in 3.12)."""
    return math.fsum(map(mul, a, b))


def _update(weights: list[float], inverse: list[list[float]], phi: Vector, error: float,
            forgetting: float) -> None:
    """One RLS step with forgetting, in place: ``k = P φ``, ``g = k / (λ + φᵀ k)``,
    ``w += g e``, ``P = (P - g kᵀ) / λ``, computed on the upper triangle and mirrored (so
    ``P`` stays exactly symmetric), then its trace bounded."""
    m = len(phi)
    k = [_dot(row, phi) for row in inverse]
    scale = 1.0 / (forgetting + _dot(phi, k))
    inv_lambda = 1.0 / forgetting
    trace = 0.0
    for i in range(m):
        g = k[i] * scale
        weights[i] += g * error
        row = inverse[i]
        for j in range(i, m):
            row[j] = inverse[j][i] = (row[j] - g * k[j]) * inv_lambda
        trace += row[i]
    if trace > MAX_TRACE:
        shrink = MAX_TRACE / trace
        for row in inverse:
            for j in range(m):
                row[j] *= shrink


def finite(state: AdaptiveState) -> bool:
    """Are all weights and ``P`` finite (a restored snapshot is checked with this)?"""
    return all(math.isfinite(v) for w in state.weights for v in w) and all(
        math.isfinite(v) for p in state.inverse for row in p for v in row)
