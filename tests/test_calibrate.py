"""Calibration with the agent's own detector: a slow part whose training rows wander further
than its validation rows do is widened to its own tail (``threshold.tail_quantile``); with a
level rebase, the readings' normal noise is recorded, so a rebase to a noisier operating point
widens the level scale to fit it (``level.noise``); a seasonal tail seen in few independent
looks is widened for what it could not show (``seasonal.tail_confidence``)."""

from __future__ import annotations

import numpy as np

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.csvdata import Recording
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.simulator import simulate
from tests.conftest import DEMO_BUNDLE
from trainer.calibrate import calibrate
from trainer.config import LevelConfig, ScoringConfig, SeasonalConfig, ThresholdConfig
from trainer.inspect import summary
from trainer.seasonality import Season

ROWS, VALIDATION = 3000, 2400
FEATURES = ["motor_current", "temperature", "vibration", "position_error"]


def _wandering_recording() -> Recording:
    """Normal readings of one joint; in the training rows (600-1600) the temperature wanders
    up by 1.5 °C and back (a raised cosine), in the validation rows it does not."""
    sim = simulate(ROWS, seed=7)
    values = sim.values.copy()
    bump = np.zeros(ROWS)
    bump[600:1600] = 0.75 * (1 - np.cos(np.linspace(0, 2 * np.pi, 1000)))
    values[:, 1] += bump
    return Recording(path="wander.csv", features=FEATURES, values=values,
                     timestamps=1.7e9 + sim.t, rows=np.arange(ROWS))


def _starts(bundle: Bundle, model: StatefulModel, rec: Recording) -> list[int]:
    detector = Detector(bundle, model, DetectorSettings())
    stream = detector.new_stream("s")
    assert rec.timestamps is not None
    return [i for i in range(ROWS)
            for alert in detector.process(stream, rec.values[i], float(rec.timestamps[i])).alerts
            if alert.type == "start"]


def test_a_level_that_wanders_in_the_training_rows_is_widened_to_its_own_tail() -> None:
    demo = load_bundle(DEMO_BUNDLE)
    model = StatefulModel(demo.model_path, demo.manifest.model)
    rec = _wandering_recording()
    level = LevelConfig(alpha=0.005, track_alpha=0.0005, track_below=5.0)

    def calibrated(threshold: ThresholdConfig) -> Bundle:
        scoring = calibrate(demo, model, [rec], [VALIDATION],
                            ScoringConfig(level=level, threshold=threshold)).scoring
        return demo.with_scoring(scoring)

    narrow = calibrated(ThresholdConfig())
    wide = calibrated(ThresholdConfig(tail_quantile=0.99, tail_margin=1.2))
    n_scoring, w_scoring = narrow.manifest.scoring, wide.manifest.scoring
    assert n_scoring.level is not None and w_scoring.level is not None
    # Same threshold (chosen on the validation rows first), wider level scale, and the
    # factor on record.
    assert w_scoring.threshold.enter == n_scoring.threshold.enter
    factor = w_scoring.threshold.details["widened"]["level"]
    assert factor > 1.5
    assert np.allclose(w_scoring.level.scale, np.multiply(n_scoring.level.scale, factor))
    assert w_scoring.error_scale == n_scoring.error_scale
    assert "widened" not in n_scoring.threshold.details
    assert f"scales widened to their own tail: level x{factor:.3g}" in summary(wide)
    assert "widened" not in summary(narrow)
    # The wander raised alarms with the validation-only scale, and raises none widened.
    assert [i for i in _starts(narrow, model, rec) if 600 <= i < 2000]
    assert _starts(wide, model, rec) == []


def test_a_rebase_to_a_noisier_operating_point_widens_the_level_scale_to_fit_it() -> None:
    """Motor current moves to a new operating point where the load jumps between two values
    (the share of high readings changing every 100 readings, like a server's load): once the
    level has rebased, its recent mean keeps wandering. Only with ``level.noise`` is that
    wandering measured against the new noise: most of the time it is then below the
    threshold, and without it above."""
    demo = load_bundle(DEMO_BUNDLE)
    model = StatefulModel(demo.model_path, demo.manifest.model)
    sim = simulate(ROWS, seed=7)
    training = Recording(path="normal.csv", features=FEATURES, values=sim.values,
                         timestamps=1.7e9 + sim.t, rows=np.arange(ROWS))

    def calibrated(rescale: bool) -> Bundle:
        level = LevelConfig(alpha=0.02, track_alpha=0.005, track_below=5.0, rebase_after=150,
                            rescale_on_rebase=rescale)
        scoring = calibrate(demo, model, [training], [VALIDATION], ScoringConfig(
            level=level, threshold=ThresholdConfig(tail_quantile=0.99))).scoring
        return demo.with_scoring(scoring)

    rescaling, keeping = calibrated(True), calibrated(False)
    noise = rescaling.manifest.scoring.level.noise  # type: ignore[union-attr]
    assert noise is not None and len(noise) == 4 and min(noise) > 0
    assert keeping.manifest.scoring.level.noise is None  # type: ignore[union-attr]
    assert "widened to a noisier new level" in summary(rescaling)
    assert "noisier" not in summary(keeping)

    n, start = 4000, 1500
    test = simulate(n, seed=11)
    values, rng = test.values.copy(), np.random.default_rng(3)
    sd = float(sim.values[:, 0].std())
    share = np.repeat(rng.uniform(0.2, 0.8, size=(n - start) // 100 + 1), 100)[:n - start]
    values[start:, 0] += 3 * sd + 6 * sd * (rng.random(n - start) < share)

    def level_after_rebase(bundle: Bundle) -> tuple[float, list[float] | None, float]:
        detector = Detector(bundle, model, DetectorSettings())
        stream = detector.new_stream("s")
        level = [detector.scorer.raw(o.shift) for i in range(n)
                 if (o := detector.process(stream, values[i], 1.7e9 + float(test.t[i]))).shift
                 is not None and i >= start + 500]
        return float(np.median(level)), stream.score.widened, detector.enter

    wide_median, widened, enter = level_after_rebase(rescaling)
    kept_median, kept, _ = level_after_rebase(keeping)
    assert widened is not None and widened[0] > 3.0 and max(widened[1:]) < 1.5
    assert kept is None
    assert wide_median < enter < kept_median


def test_a_seasonal_tail_seen_in_few_looks_is_widened_for_what_it_could_not_show() -> None:
    """A profile of one reading per slot scores only from its second period on, so the
    training rows show its smoothed residual a few dozen independent times; the weeks after
    show more of its tail. Taken as measured, that tail raises seasonal alarms on normal
    readings again and again; widened for the looks it was seen in, far fewer."""
    demo = load_bundle(DEMO_BUNDLE)
    model = StatefulModel(demo.model_path, demo.manifest.model)
    n, train = 20000, 1600
    sim = simulate(n, seed=7)
    stamps = 1.7e9 - 1.7e9 % 120 + sim.t
    rec = Recording(path="normal.csv", features=FEATURES, values=sim.values[:train],
                    timestamps=stamps[:train], rows=np.arange(train))
    season = Season(period_s=120.0, slots=1200, autocorrelation=0.9)  # one 0.1 s reading a slot

    def calibrated(confidence: float | None) -> Bundle:
        config = ScoringConfig(level=LevelConfig(enabled=False),
                               seasonal=SeasonalConfig(enabled=True, tail_confidence=confidence),
                               threshold=ThresholdConfig(tail_quantile=0.99))
        scoring = calibrate(demo, model, [rec], [1280], config, season).scoring
        return demo.with_scoring(scoring)

    def seasonal_alarms(bundle: Bundle) -> int:
        detector = Detector(bundle, model, DetectorSettings())
        stream = detector.new_stream("s")
        return sum(alert.type == "start" and alert.top_features[0].basis == "season"
                   for i in range(train, n)
                   for alert in detector.process(stream, sim.values[i], float(stamps[i])).alerts)

    as_seen, widened = calibrated(None), calibrated(0.95)
    details = widened.manifest.scoring.threshold.details
    looks = details["tail_looks"]["seasonal"]
    assert 5 < looks < 40
    assert "tail_looks" not in as_seen.manifest.scoring.threshold.details
    # The same threshold; the seasonal scale wider by the recorded factor, which includes the
    # chi-square bound for that many looks (about 1.4).
    factor = details["widened"]["seasonal"]
    assert factor > as_seen.manifest.scoring.threshold.details["widened"]["seasonal"] * 1.2
    assert widened.manifest.scoring.threshold.enter == as_seen.manifest.scoring.threshold.enter
    season_scale = widened.manifest.scoring.seasonal.scale  # type: ignore[union-attr]
    assert np.allclose(season_scale, np.multiply(
        as_seen.manifest.scoring.seasonal.scale, factor))  # type: ignore[union-attr]
    assert f"seasonal x{factor:.3g} (seen in {looks:.3g} independent looks)" in summary(widened)

    alarms_as_seen, alarms_widened = seasonal_alarms(as_seen), seasonal_alarms(widened)
    assert alarms_as_seen >= 10
    assert alarms_widened <= alarms_as_seen // 2


def test_inspect_says_how_long_each_span_lasts_at_the_bundles_sample_period():
    """The scoring counts readings; the demo's 10 Hz makes its 300-reading baseline 30 s, and a
    bundle of the same config on 1 Hz data would wait five minutes."""
    demo = load_bundle(DEMO_BUNDLE)
    text = summary(demo)
    assert "level anchored on a baseline of 300 readings = 30 s" in text
    assert "a recent mean over ~200 readings = 20 s" in text
    slow = Bundle(demo.path, demo.manifest.model_copy(update={"sample_period_s": 1.0}))
    assert "baseline of 300 readings = 5 min" in summary(slow)
