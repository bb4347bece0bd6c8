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

With ``part_z``, each part of the score (the forecast surprise, the level, seasonal and
adaptive shifts: :data:`PARTS`) also keeps a history of its own, and lifts the score the same
way when its recent mean stands ``part_z`` of its own standard deviations above it. The
score is the largest of the parts, so its history mostly knows the noisiest one: on a stream
whose forecast surprise is bursty, a level that moved far for *that part* was hidden in the
spread of the bursts. ``part_z`` is higher than ``z`` as more histories get more chances.

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
from typing import Sequence

from .bundle import RelativeThreshold

VARIANCE_FLOOR = 1e-6  # a stream whose scores never varied: distances stay finite
#: The score's parts, in the order the detector hands their values to :meth:`Relative.lift`.
PARTS = ("forecast", "level", "season", "adaptive")
#: What lifted a score (an alert's ``lifted_by``): the score's own history, or a part's.
SCORE_HISTORY = "score_history"
PART_HISTORIES = tuple(f"{part}_history" for part in PARTS)
#: A score no history lifted (``lifted_by`` null), where alerts are counted by what lifted
#: them; :data:`LIFTS` are all such labels, in a fixed order (tables, metrics, plots).
CALIBRATED = "calibrated"
LIFTS = (CALIBRATED, SCORE_HISTORY, *PART_HISTORIES)


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
        self.part_z = params.part_z

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

    def lift(self, history: ScoreHistory, score: float, enter: float,
             parts: Sequence[float | None] = (),
             part_histories: list[ScoreHistory] | None = None) -> tuple[float, str | None]:
        """The score as the decision sees it, and which history set it (``None``: the score
        stands as calibrated; else :data:`SCORE_HISTORY` or one of :data:`PART_HISTORIES`, so
        an alert can say why it fired). The score is the larger of ``score`` and ``enter``
        times the recent distance over ``z`` (so a distance of ``z`` reaches the enter
        threshold); after ``absolute_for`` scores, the latter alone (never below zero). With
        ``part_z``, each part's value in ``parts`` (``None``: the part has no value at this
        reading) is also taken into its own history in ``part_histories`` (the stream's list,
        filled with fresh histories on first use), and its distance over ``part_z`` counts
        like the score's over ``z``.

        A stream whose score is always 5, over the calibrated enter threshold of 4: over it
        until the history takes over after 3 scores, then usual (0 standard deviations);
        a jump stays news:

        >>> rel = Relative(RelativeThreshold(window=1, z=2.0, min_history=2, absolute_for=3))
        >>> h = ScoreHistory()
        >>> [rel.lift(h, 5.0, enter=4.0) for _ in range(5)]  # doctest: +NORMALIZE_WHITESPACE
        [(5.0, None), (5.0, None), (5.0, None), (0.0, 'score_history'),
         (0.0, 'score_history')]
        >>> score, by = rel.lift(h, 6.0, enter=4.0); score > 4.0, by, h.seen
        (True, 'score_history', 6)

        A score that is the max of a noisy part and a quiet one: the quiet part's step is
        lost in the score's spread, but not in its own history:

        >>> rel = Relative(RelativeThreshold(window=1, z=3.0, min_history=4, part_z=4.0))
        >>> alone = Relative(RelativeThreshold(window=1, z=3.0, min_history=4))
        >>> h, h_alone, own = ScoreHistory(), ScoreHistory(), []
        >>> for noisy, quiet in [(1.0, 0.5), (1.6, 0.51), (0.8, 0.49), (1.2, 0.5), (1.7, 0.5)]:
        ...     _ = rel.lift(h, max(noisy, quiet), 2.0, (noisy, quiet), own)
        ...     _ = alone.lift(h_alone, max(noisy, quiet), 2.0)
        >>> alone.lift(h_alone, 1.1, 2.0)
        (1.1, None)
        >>> score, by = rel.lift(h, 1.1, 2.0, (0.9, 1.1), own); round(score, 1), by
        (47.4, 'level_history')
        >>> [(h.count, h.mean) for h in own]
        [(5, 1.26), (5, 0.5)]
        """
        d = self.distance(history, score)
        reach = None if d is None else d / self.z
        by = SCORE_HISTORY
        part_z = self.part_z
        if part_z is not None and parts:
            assert part_histories is not None, "parts need the stream's part_histories"
            if len(part_histories) < len(parts):  # a stream's first reading with part_z
                part_histories.extend(ScoreHistory() for _ in parts[len(part_histories):])
            for own, value, name in zip(part_histories, parts, PART_HISTORIES):
                if value is None:
                    continue
                part = self.distance(own, value)  # every part's history learns every value
                if part is not None and (reach is None or part / part_z > reach):
                    reach = part / part_z
                    by = name
        if reach is None:
            return score, None
        lifted = enter * reach
        if self.absolute_for is not None and history.seen > self.absolute_for:
            return (lifted if lifted > 0.0 else 0.0), by
        return (lifted, by) if lifted > score else (score, None)
