"""How unusual is a score for its own stream? A threshold that keeps learning.

A bundle's threshold is calibrated on a stream's first readings: on NAB that is 750 readings
at most (2.6 days at 5 minutes), often one quiet stretch. A stream that is burstier later, or
whose faults are small next to a noisy start, is then judged by a threshold that never saw
it. The relative threshold (the bundle's ``threshold.relative``, :class:`RelativeThreshold`)
also asks the stream itself: does the mean of its last few scores stand far above the
distribution of all its earlier scores? That distribution is kept as a running count, mean
and sum of squared deviations (Welford), a few numbers per stream, so it learns for as long
as the stream runs without holding its past; with a ``horizon`` it forgets, weighting about
the last ``horizon`` scores (an agent that runs for months should have one). The idea is
Numenta's *anomaly likelihood* (a short average of the raw score compared with its long-run
distribution), here on this project's score.

Scoring stays apart from deciding: :class:`Relative` returns a distance in standard
deviations; the detector lifts the score to ``enter * distance / z`` when that is higher, so
the episode rules, the alert payload and its ``threshold`` keep their meaning.

The calibrated threshold may also step aside once the history knows the stream
(``absolute_for`` scores): then the score is ``enter * distance / z`` alone. On NAB most
false alarms of bursty streams (Twitter volumes: 178 of 239) were the calibrated threshold,
fitted on 2.6 days, being crossed again and again by bursts the history had long seen.

>>> from edge_agent.bundle import RelativeThreshold
>>> rel = Relative(RelativeThreshold(window=2, z=3.0, min_history=4))
>>> h = ScoreHistory()
>>> [rel.distance(h, s) for s in (1.0, 2.0, 1.0, 2.0, 1.0)]  # too little history yet
[None, None, None, None, None]
>>> round(rel.distance(h, 2.0), 3), h.count  # history 1, 2, 1, 2: mean 1.5, sd 0.5
(0.0, 4)
>>> rel.distance(h, 5.0)  # recent 2, 5 (mean 3.5) against 1, 2, 1, 2, 1 (mean 1.4, sd 0.49)
4.286607049870562
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .bundle import RelativeThreshold

VARIANCE_FLOOR = 1e-6  # a stream whose scores never varied: distances stay finite


@dataclass(slots=True)
class ScoreHistory:
    """A stream's scores so far: the last ``window`` of them as they are, every earlier one
    folded into a count, mean and sum of squared deviations; ``seen`` counts every score
    taken (``count`` stops growing at a horizon)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    recent: list[float] = field(default_factory=list)
    seen: int = 0

    def add(self, score: float, horizon: int | None = None) -> None:
        """Fold one score into the running statistics: Welford's update, or once ``horizon``
        scores are in, an exponentially weighted one with weight ``1 / horizon`` (the count
        stays at ``horizon``, so ``m2 / count`` is still the variance).

        >>> h = ScoreHistory()
        >>> for s in (1.0, 3.0):
        ...     h.add(s, horizon=2)
        >>> h.mean, h.m2 / h.count
        (2.0, 1.0)
        >>> h.add(10.0, horizon=2); h.count, h.mean, h.m2 / h.count
        (2, 6.0, 16.5)
        """
        delta = score - self.mean
        if horizon is not None and self.count >= horizon:
            weight = 1.0 / horizon
            self.mean += weight * delta
            self.m2 = (1.0 - weight) * (self.m2 + weight * self.count * delta * delta)
            return
        self.count += 1
        self.mean += delta / self.count
        self.m2 += delta * (score - self.mean)


class Relative:
    """Distances of a stream's recent scores from its own history, in standard deviations."""

    def __init__(self, params: RelativeThreshold) -> None:
        self.params = params
        self.window = params.window
        self.min_history = params.min_history
        self.z = params.z
        self.horizon = params.horizon
        self.absolute_for = params.absolute_for

    def distance(self, history: ScoreHistory, score: float) -> float | None:
        """Take one more score; return how far the mean of the last ``window`` scores stands
        above the mean of every earlier one, in their standard deviations (``None`` until
        ``min_history`` earlier scores are known)."""
        recent = history.recent
        recent.append(score)
        history.seen += 1
        if len(recent) > self.window:
            history.add(recent.pop(0), self.horizon)
        if history.count < self.min_history:
            return None
        variance = max(history.m2 / history.count, VARIANCE_FLOOR)
        return (sum(recent) / len(recent) - history.mean) / math.sqrt(variance)

    def lift(self, history: ScoreHistory, score: float, enter: float) -> float:
        """The score as the decision sees it: the larger of ``score`` and ``enter`` times the
        recent distance over ``z`` (so a distance of ``z`` reaches the enter threshold); after
        ``absolute_for`` scores, the latter alone (never below zero).

        A stream whose score is always 5, over the calibrated enter threshold of 4: over it
        until the history takes over after 3 scores, then usual (0 standard deviations);
        a jump stays news:

        >>> rel = Relative(RelativeThreshold(window=1, z=2.0, min_history=2, absolute_for=3))
        >>> h = ScoreHistory()
        >>> [rel.lift(h, 5.0, enter=4.0) for _ in range(5)], h.seen
        ([5.0, 5.0, 5.0, 0.0, 0.0], 5)
        >>> rel.lift(h, 6.0, enter=4.0) > 4.0
        True
        """
        d = self.distance(history, score)
        if d is None:
            return score
        lifted = enter * d / self.z
        if self.absolute_for is not None and history.seen > self.absolute_for:
            return lifted if lifted > 0.0 else 0.0
        return lifted if lifted > score else score
