"""Calibrate scoring on validation data, with the agent's own detector on the int8 model.

Every recording streams through :class:`edge_agent.detector.Detector` from its first reading,
exactly as a live stream would (so per-stream baselines and warm-up happen as on the device);
only the readings of its validation part are collected.

1. With unit scales, collect per-feature forecast errors, level shifts and seasonal shifts
   (when the trainer found a period); their root mean square becomes ``error_scale``,
   ``level.scale`` and ``seasonal.scale`` (so each part of the score is about 1 on normal
   data). Seasonal shifts are collected over the whole recordings, not only the validation
   parts: the profile is learned online, and its residual needs a whole period to show its
   spread. With ``level.rebase_after``, the normal reading-to-reading change of the
   normalised readings over the whole recordings becomes ``level.noise`` (see
   :func:`reading_noise`).
2. With those scales, collect the smoothed scores and choose the alert threshold:
   ``quantile`` (a high quantile times a margin) or ``sweep`` (telemanom's idea: thresholds
   ``mean + z·sd`` for a range of z, keeping the one whose removal of the points above it most
   reduces the scores' mean and spread per anomalous point and sequence it flags).
3. With ``threshold.tail_quantile``, widen the level and seasonal scales until each part's own
   tail over the whole recordings stays under that threshold (:func:`widen_to_tails`); the
   seasonal tail first widened for the few independent looks it had
   (``seasonal.tail_confidence``, :mod:`trainer.spread`).
4. The adaptive part (``adaptive.enabled``) is fitted last, to the threshold as the detector
   will use it (after ``relative.absolute_margin``): its scale is the root mean square of its
   smoothed error over the validation parts, widened like the others to its tail over the
   whole recordings. It plays no part in choosing the threshold, so turning it on adds
   alerts where the stream's own forecaster is surprised and leaves what the other parts
   alert on unchanged. The scores returned (for the report) include it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_agent.alerts import AlertSettings
from edge_agent.bundle import (AdaptiveScoring, Bundle, LevelScoring, RelativeThreshold,
                               Scoring, SeasonalScoring, Smoothing, Threshold)
from edge_agent.csvdata import Recording
from edge_agent.detector import Detector, DetectorSettings, adaptive_note, seasonal_note
from edge_agent.model import StatefulModel

from .config import RelativeConfig, ScoringConfig, ThresholdConfig
from .data import Split
from .inspect import widened_note
from .seasonality import Season, detect
from .spread import ewma_looks, upper_spread_factor

SCALE_FLOOR = 1e-3
_NEVER = 1e12  # a threshold no score reaches: collect without raising alerts


@dataclass
class Trace:
    """What the detector produced over one recording's validation part (for the report)."""

    path: str
    values: np.ndarray
    expected: np.ndarray
    scores: np.ndarray


@dataclass
class Calibration:
    scoring: Scoring
    scores: np.ndarray
    traces: list[Trace] = field(default_factory=list)


def run_detector(bundle: Bundle, model: StatefulModel, recording: Recording,
                 settings: DetectorSettings, start: int) -> dict[str, np.ndarray]:
    """Stream a whole recording; return errors, shifts, adaptive parts, scores and expected
    readings from ``start`` on."""
    detector = Detector(bundle, model, settings)
    stream = detector.new_stream(recording.path)
    stamps = recording.timestamps
    n, f = recording.values.shape
    out = {"errors": np.full((n, f), np.nan), "shift": np.full((n, f), np.nan),
           "seasonal": np.full((n, f), np.nan), "adaptive": np.full((n, f), np.nan),
           "score": np.full(n, np.nan),
           "expected": np.full((n, f), np.nan), "x": np.full((n, f), np.nan)}
    for i in range(n):
        ts = float(stamps[i]) if stamps is not None else float(i)
        outcome = detector.process(stream, recording.values[i], ts)
        if i < start or outcome.status == "warming_up" or outcome.score is None:
            continue
        out["score"][i] = outcome.score
        out["errors"][i] = outcome.errors
        out["expected"][i] = outcome.expected
        out["x"][i] = outcome.normalised
        if outcome.shift is not None:
            out["shift"][i] = outcome.shift
        if outcome.seasonal is not None:
            out["seasonal"][i] = outcome.seasonal
        if outcome.adaptive is not None:
            out["adaptive"][i] = outcome.adaptive
    return {k: v[start:] for k, v in out.items()}


def _scored(rows: np.ndarray) -> np.ndarray:
    """The rows (readings × features) that were scored (unscored ones are NaN)."""
    return rows[~np.isnan(rows).any(axis=1)]


def _rms(rows: np.ndarray, why: str = "validation parts are shorter than the warm-up and "
         "baseline") -> list[float]:
    rows = _scored(rows)
    if rows.shape[0] == 0:
        raise ValueError(f"no scored validation readings: {why}")
    return np.maximum(np.sqrt(np.mean(rows ** 2, axis=0)), SCALE_FLOOR).tolist()


def reading_noise(whole: Sequence[dict[str, np.ndarray]]) -> list[float]:
    """Per feature, the root mean square of the change from one scored normalised reading to
    the next over the whole recordings (what ``level.noise`` records). Successive changes, not
    the spread around a mean: a slow wander or a change of level barely moves it, so it
    measures how noisy the readings are, which is what a recent mean's wandering scales with.

    >>> run = {"x": np.array([[0.0], [1.0], [np.nan], [5.0], [3.0]])}
    >>> reading_noise([run])  # changes 1 and -2; none across the unscored reading
    [1.5811388300841898]
    """
    return _rms(np.concatenate([np.diff(r["x"], axis=0) for r in whole]),
                "no two scored readings in a row")


def sweep_threshold(scores: np.ndarray, config: ThresholdConfig) -> tuple[float, dict[str, Any]]:
    """telemanom-style threshold selection, written from its published description.

    >>> s = np.r_[np.zeros(98), 10.0, 10.0] + np.linspace(0, 0.1, 100)
    >>> eps, info = sweep_threshold(s, ThresholdConfig(method="sweep", z_min=2, z_max=5))
    >>> 0.2 < eps < 10.0
    True
    """
    mean, sd = float(np.mean(scores)), float(np.std(scores))
    best: tuple[float, float, float] | None = None  # (criterion, z, epsilon)
    for z in np.arange(config.z_min, config.z_max + 1e-9, config.z_step):
        epsilon = mean + float(z) * sd
        above = scores > epsilon
        n_above = int(above.sum())
        if n_above == 0 or n_above >= 0.5 * len(scores):
            continue
        below = scores[~above]
        runs = int(np.sum(np.diff(np.r_[0, above.astype(np.int8)]) == 1))
        criterion = ((mean - below.mean()) / mean + (sd - below.std()) / sd) / (runs ** 2 + n_above)
        if best is None or criterion >= best[0]:
            best = (criterion, float(z), epsilon)
    if best is None:  # nothing stands out: the largest z in the range
        z = config.z_max
        return mean + z * sd, {"z": z, "mean": mean, "sd": sd, "criterion": None}
    return best[2], {"z": best[1], "mean": mean, "sd": sd, "criterion": best[0]}


def choose_threshold(scores: np.ndarray, config: ThresholdConfig) -> Threshold:
    if config.method == "quantile":
        base = float(np.quantile(scores, config.quantile))
        details: dict[str, Any] = {"quantile": config.quantile, "quantile_value": base}
    else:
        base, details = sweep_threshold(scores, config)
    enter = max(base * config.margin, SCALE_FLOOR)
    details.update(margin=config.margin, exit_ratio=config.exit_ratio,
                   normal_scores=len(scores))
    return Threshold(enter=enter, exit=enter * config.exit_ratio, method=config.method,
                     details=details)


def with_relative(threshold: Threshold, config: RelativeConfig) -> Threshold:
    """The calibrated threshold raised by ``absolute_margin``, with the relative threshold
    that watches the stream's own score history (after every calibration step, which all
    judge the score as it is).

    >>> t = with_relative(Threshold(enter=2.0, exit=1.5, method="quantile"), RelativeConfig())
    >>> t.enter, t.exit, t.relative.z, t.details["absolute_margin"]
    (4.0, 3.0, 2.5, 2.0)
    >>> plain = Threshold(enter=2.0, exit=1.5, method="quantile")
    >>> r = with_relative(plain, RelativeConfig(absolute_for=4000, part_z=5.0)).relative
    >>> r.absolute_for, r.part_z
    (4000, 5.0)
    """
    m = config.absolute_margin
    return Threshold(enter=threshold.enter * m, exit=threshold.exit * m, method=threshold.method,
                     details={**threshold.details, "absolute_margin": m},
                     relative=RelativeThreshold(**config.model_dump()))


def calibrate(bundle: Bundle, model: StatefulModel, recordings: Sequence[Recording],
              starts: Sequence[int], config: ScoringConfig,
              season: Season | None = None) -> Calibration:
    """Scoring parameters for ``bundle`` (whose scoring section is replaced); with a seasonal
    part when ``season`` is given (see :mod:`trainer.seasonality`)."""
    n = len(bundle.manifest.features)
    settings = DetectorSettings(warmup_readings=config.warmup_readings, alerts=AlertSettings())
    level = LevelScoring(alpha=config.level.alpha, scale=[1.0] * n,
                         track_alpha=config.level.track_alpha,
                         track_below=config.level.track_below,
                         rebase_after=config.level.rebase_after) if config.level.enabled else None
    seasonal = None if season is None else SeasonalScoring(
        period_s=season.period_s, slots=season.slots, alpha=config.seasonal.alpha,
        profile_alpha=config.seasonal.profile_alpha, track_below=config.seasonal.track_below,
        scale=[1.0] * n, autocorrelation=round(season.autocorrelation, 4),
        timezone=config.seasonal.timezone)
    adaptive = AdaptiveScoring(order=config.adaptive.order, forgetting=config.adaptive.forgetting,
                               alpha=config.adaptive.alpha,
                               scale=[1.0] * n) if config.adaptive.enabled else None
    probe = Scoring(error_scale=[1.0] * n, smoothing=Smoothing(alpha=config.smoothing_alpha),
                    level=level, seasonal=seasonal, adaptive=adaptive,
                    top_features=config.top_features,
                    threshold=Threshold(enter=_NEVER, exit=_NEVER, method="probe"))
    whole = [run_detector(bundle.with_scoring(probe), model, rec, settings, 0)
             for rec in recordings]
    runs = [{k: v[start:] for k, v in r.items()} for r, start in zip(whole, starts)]
    error_scale = _rms(np.concatenate([r["errors"] for r in runs]))
    if level is not None:
        level = level.model_copy(update={
            "scale": _rms(np.concatenate([r["shift"] for r in runs])),
            "noise": (reading_noise(whole) if level.rebase_after is not None
                      and config.level.rescale_on_rebase else None)})
    if seasonal is not None:
        # Every reading compared with a profile counts, training rows too (the profile is
        # learned online, not by the network): a daily residual needs a whole day to show
        # its spread, and validation parts are often shorter.
        seasonal = seasonal.model_copy(update={"scale": _rms(
            np.concatenate([r["seasonal"] for r in whole]),
            f"no reading came a period ({season.period_s:g} s) after the first reading of "
            "its slot; use files that span two periods")})
    adaptive_runs = [r["adaptive"] for r in whole]  # unit scale: the smoothed errors
    if adaptive is not None:
        adaptive = adaptive.model_copy(update={"scale": _rms(np.concatenate(
            [r["adaptive"] for r in runs]))})
    scaled = probe.model_copy(update={"error_scale": error_scale, "level": level,
                                      "seasonal": seasonal, "adaptive": None})
    whole = [run_detector(bundle.with_scoring(scaled), model, rec, settings, 0)
             for rec in recordings]
    scores = _validation_scores(whole, starts)
    threshold = choose_threshold(scores, config.threshold)
    if config.threshold.tail_quantile is not None:
        confidence = ({} if config.seasonal.tail_confidence is None
                      else {"seasonal": config.seasonal.tail_confidence})
        scaled, widened, looks = widen_to_tails(scaled, whole, threshold.enter,
                                                config.threshold, confidence)
        threshold.details["widened"] = widened
        if looks:
            threshold.details["tail_looks"] = looks
        if any(factor > 1.0 for factor in widened.values()):
            whole = [run_detector(bundle.with_scoring(scaled), model, rec, settings, 0)
                     for rec in recordings]
            scores = _validation_scores(whole, starts)
    if config.threshold.relative is not None:
        threshold = with_relative(threshold, config.threshold.relative)
    if adaptive is not None:
        scaled = scaled.model_copy(update={"adaptive": adaptive})
        if config.threshold.tail_quantile is not None:
            in_scale = [{"adaptive": rows / np.asarray(adaptive.scale)} for rows in adaptive_runs]
            scaled, widened, _ = widen_to_tails(scaled, in_scale, threshold.enter,
                                                config.threshold, parts=("adaptive",))
            threshold.details.setdefault("widened", {}).update(widened)
        # The report and the log show the score as the device computes it, this part too.
        whole = [run_detector(bundle.with_scoring(scaled), model, rec, settings, 0)
                 for rec in recordings]
        scores = _validation_scores(whole, starts)
    runs = [{k: v[start:] for k, v in r.items()} for r, start in zip(whole, starts)]
    traces = [Trace(rec.path, rec.values[start:], r["expected"], r["score"])
              for rec, start, r in zip(recordings, starts, runs)]
    return Calibration(scaled.model_copy(update={"threshold": threshold}), scores, traces)


def _validation_scores(whole: Sequence[dict[str, np.ndarray]], starts: Sequence[int]
                       ) -> np.ndarray:
    scores = np.concatenate([r["score"][start:] for r, start in zip(whole, starts)])
    return scores[~np.isnan(scores)]


ONLINE_PARTS = {"level": "shift", "seasonal": "seasonal",  # Scoring field -> run_detector key
                "adaptive": "adaptive"}


def widen_to_tails(scoring: Scoring, whole: Sequence[dict[str, np.ndarray]], enter: float,
                   config: ThresholdConfig, confidence: Mapping[str, float] | None = None,
                   parts: Sequence[str] = ("level", "seasonal")
                   ) -> tuple[Scoring, dict[str, float], dict[str, float]]:
    """Widen the scales of ``parts`` (by default level and seasonal; the adaptive part is
    widened later, on its own) so that each part's own normal tail (its ``tail_quantile``
    over every scored reading of the recordings, times ``tail_margin``) is no higher than
    ``enter``; returns the new scoring, each part's factor (1: unchanged) and,
    for the parts named in ``confidence``, the independent looks their tail was seen in.

    The combined threshold comes from the validation parts, which are often too short for
    these slow parts (an EWMA of the readings; a residual from a profile) to show their
    spread: a level that wandered twice as far in the training rows as in the validation
    rows would otherwise raise alarms for its normal wandering. The network plays no part
    in them, so training rows are fair evidence. A part named in ``confidence`` has its tail
    multiplied first by :func:`trainer.spread.upper_spread_factor` for the looks its readings
    are worth (an average with the part's ``alpha``): the seasonal part, which scores only
    from a period after the start, may have been seen only a few times. (Not the level part:
    on NAB's even files that cost the slow faults of `nyc_taxi` and `ambient_temperature`.)

    Each part on its own: here the level reached 6 on normal rows (twice the threshold), the
    seasonal residual 2.5 (below it).

    >>> from edge_agent.bundle import LevelScoring, SeasonalScoring, Smoothing, Threshold
    >>> s = Scoring(error_scale=[1.0], smoothing=Smoothing(alpha=0.1),
    ...             level=LevelScoring(alpha=0.1, scale=[2.0]),
    ...             seasonal=SeasonalScoring(period_s=86400, slots=24, alpha=0.1,
    ...                                      profile_alpha=0.3, track_below=4, scale=[0.5]),
    ...             threshold=Threshold(enter=3.0, exit=2.0, method="fixed"))
    >>> run = {"shift": np.array([[1.0], [2.0], [6.0], [np.nan]]),
    ...        "seasonal": np.array([[np.nan], [0.5], [-2.5], [1.0]])}
    >>> config = ThresholdConfig(tail_quantile=1.0, tail_margin=1.0)
    >>> wide, factors, _ = widen_to_tails(s, [run], 3.0, config)
    >>> wide.level.scale, wide.seasonal.scale, factors
    ([4.0], [0.5], {'level': 2.0, 'seasonal': 1.0})

    Three seasonal readings of an average with weight 0.1 are worth 0.16 looks, counted as
    one (less is no evidence of a spread at all): with 95 % confidence the spread may be 15.9
    times what it showed, so the tail is 2.5 × 15.9 and the factor 13.3.

    >>> wide, factors, looks = widen_to_tails(s, [run], 3.0, config, {"seasonal": 0.95})
    >>> looks, round(factors["seasonal"], 1), round(wide.seasonal.scale[0], 2)
    ({'seasonal': 0.16}, 13.3, 6.64)
    """
    assert config.tail_quantile is not None
    update: dict[str, Any] = {}
    factors: dict[str, float] = {}
    seen: dict[str, float] = {}
    for name in parts:
        key, part = ONLINE_PARTS[name], getattr(scoring, name)
        if part is None:
            continue
        rows = _scored(np.concatenate([r[key] for r in whole]))
        if rows.shape[0] == 0:
            continue
        values = np.sqrt(np.mean(rows ** 2, axis=1))  # the part, as Scorer.raw combines it
        tail = float(np.quantile(values, config.tail_quantile)) * config.tail_margin
        if confidence and name in confidence:
            looks = ewma_looks(rows.shape[0], part.alpha)
            seen[name] = round(looks, 2)
            tail *= upper_spread_factor(max(looks, 1.0), confidence[name])
        factor = max(1.0, tail / enter)
        factors[name] = round(factor, 6)
        if factor > 1.0:
            update[name] = part.model_copy(update={"scale": [v * factor for v in part.scale]})
    return scoring.model_copy(update=update), factors, seen


def calibrate_split(draft: Bundle, model: StatefulModel, split: Split, config: ScoringConfig,
                    log: Callable[[str], None] = print) -> Calibration:
    """The trainer's calibration step for a split recording set (training and recalibration):
    find the seasonal period if asked, calibrate, and log what came out."""
    season = None
    if config.seasonal.enabled:
        season, notes = detect(split.recordings, split.sample_period_s, config.seasonal)
        for note in notes:
            log("      " + note)
    cal = calibrate(draft, model, split.recordings, [len(t) for t in split.train], config,
                    season)
    scoring = cal.scoring
    if scoring.seasonal is not None:
        log(f"      {seasonal_note(scoring, None)}, scale "
            f"{np.round(scoring.seasonal.scale, 4).tolist()}")
    if scoring.adaptive is not None:
        log(f"      {adaptive_note(scoring)}, scale "
            f"{np.round(scoring.adaptive.scale, 4).tolist()} (fitted to enter "
            f"{scoring.threshold.enter:.3f})")
    log(f"      error scale {np.round(scoring.error_scale, 4).tolist()}; threshold "
        f"({scoring.threshold.method}) enter {scoring.threshold.enter:.3f}, exit "
        f"{scoring.threshold.exit:.3f}; {cal.scores.size} normal scores, max "
        f"{cal.scores.max():.3f}" + widened_note(scoring.threshold.details))
    return cal
