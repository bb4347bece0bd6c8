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
  of it, and holds still while the feature is further away — unless it stays away for
  ``level.rebase_after`` readings in a row: then its recent mean becomes its baseline (a new
  operating point; for streams that change regime for good, such as servers after a
  reconfiguration). A recent mean wanders in proportion to the readings' noise, so when the
  bundle knows the normal reading-to-reading change (``level.noise``), a rebase also widens
  the feature's scale by how much noisier it was while away (never narrower).
* **seasonal shift** (optional, ``seasonal``) — neither part above knows what the stream looked
  like a day ago: a daily peak that does not come, or comes lower, surprises a forecaster less
  than every normal day's edges do. The seasonal part keeps the stream's usual reading per
  time-of-period slot (its *profile*, see :class:`edge_agent.bundle.SeasonalScoring`) and
  scores the smoothed residual from it, per feature in units of ``seasonal.scale``, combined
  as ``sqrt(mean_f s_f²)``. Slots follow the readings' own timestamps, so a gap or a reset
  keeps the profile; on the UTC clock, or on a zone's local clock (``seasonal.timezone``) for
  patterns that follow people's hours through daylight-saving changes.
* **adaptive surprise** (optional, ``adaptive``) — the LSTM is frozen when the bundle is
  written, so a stream that later behaves differently is judged by its first readings. A
  small per-stream linear forecaster keeps learning from every reading
  (:mod:`edge_agent.adaptive`); its absolute error per feature, smoothed with
  ``adaptive.alpha`` and in units of ``adaptive.scale``, combined as ``sqrt(mean_f a_f²)``,
  says how surprising a reading is for the stream as it has lately been.

The score is the largest of the parts.

Like :mod:`edge_agent.normalise`, the per-reading maths runs on lists of Python floats, one loop
per step (same IEEE operations as numpy element by element, without its per-call cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from .adaptive import AdaptiveState, learn
from .bundle import Scoring
from .normalise import Vector


@dataclass(slots=True)
class ScoreState:
    """A stream's scoring memory: the smoothed surprise, its recent mean and its (tracking)
    baseline, how many readings each feature has stayed beyond ``track_below`` of it, its
    seasonal profile (slots × features, a row of NaN until the slot's first
    reading: one compact array, as a day of 5-minute slots is 288 rows per stream) and
    smoothed seasonal residual; for rebases that widen the level scale, the previous reading,
    the sum of squared reading-to-reading changes of each feature while away, and each
    feature's widening so far; the adaptive forecaster and its smoothed absolute error per
    feature; all normalised (``None`` = unset)."""

    smoothed: float | None = None
    level: Vector | None = None
    baseline: Vector | None = None
    profile: np.ndarray | None = None
    seasonal: Vector | None = None
    away: list[int] | None = None
    previous: Vector | None = None
    away_noise: Vector | None = None
    widened: Vector | None = None
    adaptive: AdaptiveState | None = None
    adaptive_error: Vector | None = None


class Scorer:
    """Computes per-feature errors and level shifts, and the stream's combined score.

    >>> from edge_agent.bundle import Scoring, Smoothing, Threshold
    >>> s = Scorer(Scoring(error_scale=[1.0, 2.0], smoothing=Smoothing(alpha=0.5),
    ...                    threshold=Threshold(enter=3, exit=2, method="fixed")))
    >>> z = s.errors([1.0, 4.0], [0.0, 0.0])
    >>> z, s.raw(z)
    ([1.0, 2.0], 1.5811388300841898)
    >>> st = ScoreState()
    >>> s.smooth(st, 2.0), s.smooth(st, 4.0)
    (2.0, 3.0)
    """

    def __init__(self, params: Scoring) -> None:
        self.params = params
        self.inv_scale: Vector = (1.0 / np.asarray(params.error_scale, dtype=np.float64)).tolist()
        self.alpha = params.smoothing.alpha
        level = params.level
        self.has_level = level is not None
        self.level_alpha = level.alpha if level is not None else 0.0
        self.track_alpha = level.track_alpha if level is not None else 0.0
        self.track_below = level.track_below if level is not None else 0.0
        self.rebase_after = level.rebase_after if level is not None else None
        self.level_noise = level.noise if level is not None and self.rebase_after else None
        self.unwidened: Vector = [1.0] * len(params.error_scale)  # until a rebase widens
        self.inv_level_scale: Vector | None = (
            (1.0 / np.asarray(level.scale, dtype=np.float64)).tolist() if level is not None
            else None)
        self.seasonal = params.seasonal
        self.has_seasonal = self.seasonal is not None
        self.inv_seasonal_scale: Vector | None = (
            (1.0 / np.asarray(self.seasonal.scale, dtype=np.float64)).tolist()
            if self.seasonal is not None else None)
        self.zone = (ZoneInfo(self.seasonal.timezone)
                     if self.seasonal is not None and self.seasonal.timezone else None)
        self.adaptive = params.adaptive
        self.has_adaptive = self.adaptive is not None
        self.inv_adaptive_scale: Vector | None = (
            (1.0 / np.asarray(self.adaptive.scale, dtype=np.float64)).tolist()
            if self.adaptive is not None else None)

    def errors(self, x: Vector, prediction: Vector) -> Vector:
        """Per-feature forecast errors in units of their normal spread."""
        return [(v - p) * inv for v, p, inv in zip(x, prediction, self.inv_scale)]

    @staticmethod
    def raw(z: Vector) -> float:
        """Root mean square of per-feature values (about 1 on normal data).

        A plain sum of squares in feature order, not ``np.dot``: numpy hands dot products to
        the platform's BLAS, which rounds differently on arm64 and x86; this way a Pi computes
        the same bits."""
        return math.sqrt(sum([v * v for v in z]) / len(z))

    def smooth(self, state: ScoreState, raw: float) -> float:
        """The stream's smoothed forecast surprise after one more raw score."""
        previous = state.smoothed
        state.smoothed = raw if previous is None else previous + self.alpha * (raw - previous)
        return state.smoothed

    def level_shift(self, state: ScoreState, x: Vector, anchor: Vector) -> Vector:
        """Per-feature distance of the stream's recent mean from its baseline (``anchor`` at
        first; then, with ``track_alpha``, following each feature slowly while it is close).

        Per feature: ``recent += level_alpha * (x - recent)``, ``shift = (recent - baseline) /
        level_scale / widened``, and if ``|shift| < track_below``: ``baseline += track_alpha *
        (x - baseline)``; with ``rebase_after``, after that many readings in a row with
        ``|shift| >= track_below``: ``baseline = recent`` (and, with ``noise``, ``widened =
        max(widened, rms(reading-to-reading changes while away) / noise)``; ``widened`` starts
        at 1)."""
        inv_scale = self.inv_level_scale
        assert inv_scale is not None
        old_recent = state.level if state.level is not None else anchor  # a (re)started
        old_baseline = state.baseline if state.baseline is not None else anchor  # stream
        widened = state.widened if state.widened is not None else self.unwidened
        alpha, track, below = self.level_alpha, self.track_alpha, self.track_below
        recent, baseline, shift = [], [], []
        for v, r, b, inv, w in zip(x, old_recent, old_baseline, inv_scale, widened):
            r = r + alpha * (v - r)
            d = (r - b) * inv / w
            if track > 0.0 and abs(d) < below:
                b = b + track * (v - b)
            recent.append(r)
            baseline.append(b)
            shift.append(d)
        if self.rebase_after is not None:
            self._rebase(state, x, shift, recent, baseline)
        state.level, state.baseline = recent, baseline
        return shift

    def _rebase(self, state: ScoreState, x: Vector, shift: Vector, recent: Vector,
                baseline: Vector) -> None:
        """Count each feature's readings in a row beyond ``track_below``; at ``rebase_after``
        its recent mean becomes its baseline (in place) and the count starts over. With
        ``noise``, also sum each feature's squared reading-to-reading change while it is away,
        and at the rebase widen its scale by how much noisier it was than in training.

        Here (recent = the reading, scale 1, normal change 1) a feature steps away and moves
        by 2 at every reading: at the fourth reading away its baseline becomes 14 and its
        scale doubles, so a later move of 2 scores 1:

        >>> from edge_agent.bundle import LevelScoring, Smoothing, Threshold
        >>> s = Scorer(Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
        ...                    level=LevelScoring(alpha=1.0, scale=[1.0], track_below=2.0,
        ...                                       rebase_after=4, noise=[1.0]),
        ...                    threshold=Threshold(enter=3, exit=2, method="fixed")))
        >>> state = ScoreState()
        >>> [s.level_shift(state, [v], [10.0]) for v in (10.0, 12.0, 14.0, 12.0, 14.0)]
        [[0.0], [2.0], [4.0], [2.0], [4.0]]
        >>> state.baseline, state.widened, s.level_shift(state, [12.0], [10.0])
        ([14.0], [2.0], [-1.0])
        """
        limit, below, noise = self.rebase_after, self.track_below, self.level_noise
        assert limit is not None
        n_features = len(shift)
        away = state.away if state.away is not None else [0] * n_features
        if noise is not None:
            previous = state.previous if state.previous is not None else x
            sums = state.away_noise if state.away_noise is not None else [0.0] * n_features
            widened = (state.widened if state.widened is not None
                       else list(self.unwidened))
        counts = []
        for i, (d, n) in enumerate(zip(shift, away)):
            n = n + 1 if abs(d) >= below else 0
            if noise is not None:
                step = x[i] - previous[i]
                sums[i] = sums[i] + step * step if n else 0.0
            if n >= limit:
                baseline[i] = recent[i]
                if noise is not None:
                    widened[i] = max(widened[i], math.sqrt(sums[i] / n) / noise[i])
                    sums[i] = 0.0
                n = 0
            counts.append(n)
        state.away = counts
        if noise is not None:
            state.previous, state.away_noise, state.widened = list(x), sums, widened

    def slot(self, ts: float) -> int:
        """The seasonal slot a timestamp falls in: by the UTC clock, or by the local clock of
        ``seasonal.timezone`` (the zone's offset at that instant added first).

        >>> from edge_agent.bundle import SeasonalScoring, Scoring, Smoothing, Threshold
        >>> def scorer(zone=None):
        ...     season = SeasonalScoring(period_s=86400, slots=24, alpha=0.1, profile_alpha=0.5,
        ...                              track_below=4, scale=[1.0], timezone=zone)
        ...     return Scorer(Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
        ...                           seasonal=season,
        ...                           threshold=Threshold(enter=3, exit=2, method="fixed")))
        >>> s = scorer()
        >>> s.slot(0.0), s.slot(3599.9), s.slot(3600.0), s.slot(86400 * 365 + 23.5 * 3600)
        (0, 0, 1, 23)

        07:00 UTC on 2026-03-28 and 06:00 UTC the next day, after Berlin's clocks went forward:
        both 08:00 there.

        >>> berlin, before, after = scorer("Europe/Berlin"), 1774681200.0, 1774764000.0
        >>> s.slot(before), s.slot(after), berlin.slot(before), berlin.slot(after)
        (7, 6, 8, 8)
        """
        season = self.seasonal
        assert season is not None
        if self.zone is not None:
            offset = datetime.fromtimestamp(ts, self.zone).utcoffset()
            if offset is not None:
                ts += offset.total_seconds()
        slot = int((ts % season.period_s) * season.slots / season.period_s)
        return slot if slot < season.slots else season.slots - 1

    def profile_fits(self, period_s: float | None, slots: int, timezone: str | None) -> bool:
        """Does a profile made for ``period_s`` in ``slots`` on ``timezone``'s clock mean the
        same here? (A reload or a restore after recalibration may bring another period, another
        clock, or none.)"""
        season = self.seasonal
        return season is not None and ((period_s, slots, timezone)
                                       == (season.period_s, season.slots, season.timezone))

    def seasonal_shift(self, state: ScoreState, x: Vector, ts: float
                       ) -> tuple[Vector, Vector] | None:
        """Per-feature smoothed distance of the readings from their slot's usual value, and
        that usual value; ``None`` for the first reading in a slot (which starts its profile).

        Per feature: ``residual += alpha * ((x - profile) - residual)``, ``shift = residual /
        scale``, and if ``|shift| < track_below``: ``profile += profile_alpha * (x -
        profile)``."""
        season, inv_scale = self.seasonal, self.inv_seasonal_scale
        assert season is not None and inv_scale is not None
        if state.profile is None:
            state.profile = np.full((season.slots, len(x)), np.nan)
        slot = self.slot(ts)
        usual = state.profile[slot].tolist()
        if usual[0] != usual[0]:  # NaN: the slot's first reading
            state.profile[slot] = x
            return None
        old = state.seasonal if state.seasonal is not None else [0.0] * len(x)
        alpha, follow, below = season.alpha, season.profile_alpha, season.track_below
        residual, profile, shift = [], [], []
        for v, u, e, inv in zip(x, usual, old, inv_scale):
            e = e + alpha * ((v - u) - e)
            d = e * inv
            residual.append(e)
            shift.append(d)
            profile.append(u + follow * (v - u) if abs(d) < below else u)
        state.seasonal = residual
        state.profile[slot] = profile
        return shift, usual

    def adaptive_fits(self, order: int | None) -> bool:
        """Does a stream's adaptive forecaster of ``order`` serve here (a reload or a restore
        may bring another order, or no adaptive part)?"""
        return self.adaptive is not None and order == self.adaptive.order

    def adaptive_shift(self, state: ScoreState, x: Vector) -> tuple[Vector, Vector] | None:
        """Per-feature smoothed absolute error of the stream's adaptive forecast, in units of
        ``adaptive.scale``, and that forecast; ``None`` while the forecaster fills its lags.
        The forecaster then learns from ``x``, so call this for every normalised reading.

        Per feature: ``error = |x - forecast|``, ``smoothed += alpha * (error - smoothed)``
        (the first error as it is), ``shift = smoothed / scale``.

        A stream that steps along a line: once the forecaster has learned the slope, a jump
        off the line stands out, then fades as the smoothing forgets it.

        >>> from edge_agent.bundle import AdaptiveScoring, Smoothing, Threshold
        >>> s = Scorer(Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=1.0),
        ...                    adaptive=AdaptiveScoring(order=2, forgetting=0.99, alpha=0.5,
        ...                                             scale=[0.1]),
        ...                    threshold=Threshold(enter=3, exit=2, method="fixed")))
        >>> state = ScoreState()
        >>> parts = [s.adaptive_shift(state, [0.1 * t]) for t in range(40)]
        >>> parts[1], parts[-1][0][0] < 0.01
        (None, True)
        >>> jump = s.adaptive_shift(state, [4.0 + 5.0])  # the line says 4.0
        >>> round(jump[1][0], 3), round(jump[0][0], 1)
        (4.0, 25.0)
        """
        params, inv_scale = self.adaptive, self.inv_adaptive_scale
        assert params is not None and inv_scale is not None
        if state.adaptive is None:
            state.adaptive = AdaptiveState.fresh(len(x), params.order)
        learned = learn(state.adaptive, x, params.forgetting)
        if learned is None:
            return None
        errors, forecast = learned
        old, alpha = state.adaptive_error, params.alpha
        smoothed = ([abs(e) for e in errors] if old is None
                    else [s + alpha * (abs(e) - s) for s, e in zip(old, errors)])
        state.adaptive_error = smoothed
        return [v * inv for v, inv in zip(smoothed, inv_scale)], forecast

    def top_features(self, contributions: Sequence[float] | np.ndarray, k: int | None = None
                     ) -> list[int]:
        """Indices of the features contributing most, largest first."""
        k = self.params.top_features if k is None else k
        return [int(i) for i in np.argsort(-np.abs(contributions), kind="stable")[:k]]
