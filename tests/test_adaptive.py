"""The adaptive part: the online forecaster against the least-squares fit it computes, its
guards over long flat stretches, and in the detector (alert basis, reset, reload) and the
trainer's calibration (fitted last, leaving the threshold alone)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import numpy as np

from edge_agent.adaptive import INITIAL_INVERSE, MAX_TRACE, AdaptiveState, learn
from edge_agent.bundle import AdaptiveScoring, Bundle, load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.payloads import alert_payload
from edge_agent.simulator import simulate
from tests.conftest import DEMO_BUNDLE, with_optional_parts
from trainer.calibrate import calibrate
from trainer.config import AdaptiveConfig, RelativeConfig, ScoringConfig, ThresholdConfig
from trainer.inspect import summary

BUNDLE = load_bundle(DEMO_BUNDLE)
MODEL = StatefulModel(BUNDLE.model_path, BUNDLE.manifest.model)
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "edge_agent" / "schemas"
                     / "alert.schema.json").read_text())


def test_the_forecaster_holds_the_weighted_least_squares_fit_of_what_it_saw() -> None:
    """After n readings, recursive least squares with forgetting λ and P₀ = δ·I holds exactly
    the weights minimising Σ λ^(n-t) e_t² + λ^n ‖w‖² / δ, computed here in one go."""
    order, lam = 3, 0.97
    rng = np.random.default_rng(1)
    x = np.zeros(300)
    for t in range(3, 300):  # a stable AR(3) process with a level and noise
        x[t] = 0.5 + 0.6 * x[t - 1] - 0.3 * x[t - 2] + 0.2 * x[t - 3] + rng.normal(0, 0.1)
    state = AdaptiveState.fresh(features=1, order=order)
    for v in x:
        learn(state, [float(v)], lam)
    rows = np.array([[x[t - 1 - k] for k in range(order)] + [1.0] for t in range(order, 300)])
    targets = x[order:]
    n = len(targets)
    weights = lam ** (n - 1 - np.arange(n))
    gram = rows.T @ (rows * weights[:, None]) + lam ** n / INITIAL_INVERSE * np.eye(order + 1)
    expected = np.linalg.solve(gram, rows.T @ (weights * targets))
    assert np.allclose(state.weights[0], expected, atol=1e-9)
    assert np.allclose(state.inverse[0], np.linalg.inv(gram), rtol=1e-6, atol=1e-12)
    assert state.past == [[float(v)] for v in x[-order:]]


def test_a_feature_that_stops_moving_keeps_its_matrix_symmetric_bounded_and_finite() -> None:
    """Forgetting grows P by 1/λ per reading while nothing moves: a month of a flat feature
    beside a moving one leaves P symmetric, its trace at the bound, and a later jump of the
    flat feature stands out (its weights still forecast the old value)."""
    state = AdaptiveState.fresh(features=2, order=4)
    for t in range(20000):
        learn(state, [1.0, math.sin(0.1 * t)], 0.98)
    flat = np.array(state.inverse[0])
    assert np.array_equal(flat, flat.T) and np.isfinite(flat).all()
    assert math.isclose(np.trace(flat), MAX_TRACE, rel_tol=1e-9)
    assert np.isfinite(state.weights).all()
    learned = learn(state, [3.0, math.sin(0.1 * 20000)], 0.98)
    assert learned is not None
    errors, forecasts = learned
    assert abs(forecasts[0] - 1.0) < 1e-6 and abs(errors[0] - 2.0) < 1e-6
    assert abs(errors[1]) < 1e-6


def _with_adaptive(bundle: Bundle, **changes: float) -> Bundle:
    scoring = bundle.manifest.scoring
    assert scoring.adaptive is not None
    adaptive = scoring.adaptive.model_copy(update=changes)
    return bundle.with_scoring(scoring.model_copy(update={"adaptive": adaptive}))


def _fed(bundle: Bundle, readings: int = 600) -> tuple[Detector, object, list]:
    detector = Detector(bundle, MODEL, DetectorSettings(warmup_readings=5))
    stream = detector.new_stream("s")
    sim = simulate(readings, seed=4)
    alerts = [a for row, ts in zip(sim.values, sim.t + 1.7e9)
              for a in detector.process(stream, row, float(ts)).alerts]
    return detector, stream, alerts


def test_an_alert_the_adaptive_part_dominates_names_its_forecast() -> None:
    """With an adaptive scale far below its normal size, the part dominates every score: the
    alert's features are judged against the stream's own forecaster, whose forecast of a
    smooth simulated joint lies close to what it read."""
    n = len(BUNDLE.manifest.features)
    _, stream, alerts = _fed(_with_adaptive(with_optional_parts(BUNDLE), scale=[1e-4] * n))
    start = next(a for a in alerts if a.type == "start")
    assert all(c.basis == "adaptive" for c in start.top_features)
    for c in start.top_features:
        assert c.expected != c.observed and abs(c.expected - c.observed) < 0.5 * abs(c.observed)
    payload = alert_payload(start, topic="t", fields={}, model_name="m", model_sha256="0" * 64,
                            agent_id="a")
    jsonschema.validate(payload, SCHEMA)  # the published alert names its basis
    _, _, usual = _fed(with_optional_parts(BUNDLE))
    assert not any(c.basis == "adaptive" for a in usual for c in a.top_features)


def test_a_reset_keeps_the_fit_and_a_reload_of_another_order_starts_it_over() -> None:
    detector, stream, _ = _fed(with_optional_parts(BUNDLE))
    fit = stream.score.adaptive
    assert fit is not None and len(fit.past) == 4 and stream.score.adaptive_error is not None
    weights = [list(w) for w in fit.weights]
    detector.reset(stream)
    assert stream.score.adaptive is fit and fit.past == [] and fit.weights == weights
    assert stream.score.adaptive_error is None
    same = Detector(_with_adaptive(with_optional_parts(BUNDLE), forgetting=0.99), MODEL)
    same.adopt(stream, detector)  # a recalibration that kept the order: the fit carries on
    assert stream.score.adaptive is fit
    other = Detector(_with_adaptive(with_optional_parts(BUNDLE), order=2), MODEL)
    other.adopt(stream, same)
    assert stream.score.adaptive is None


def test_calibration_fits_the_adaptive_part_to_the_final_threshold_and_leaves_it_alone() -> None:
    """Turning the part on changes nothing the other parts were calibrated to; its scale is
    its validation size, widened until its tail over the whole recording (times the margin)
    fits under the enter threshold the detector uses (after the relative margin)."""
    from tests.test_calibrate import VALIDATION, _wandering_recording

    rec = _wandering_recording()
    threshold = ThresholdConfig(tail_quantile=0.99, tail_margin=1.2,
                                relative=RelativeConfig(absolute_margin=2.0))

    def calibrated(adaptive: bool):  # type: ignore[no-untyped-def]
        config = ScoringConfig(threshold=threshold, adaptive=AdaptiveConfig(enabled=adaptive))
        return calibrate(BUNDLE, MODEL, [rec], [VALIDATION], config)

    cal_off, cal_on = calibrated(False), calibrated(True)
    off, on = cal_off.scoring, cal_on.scoring
    # The scores reported (report.png, the log) are the device's: the part in the max.
    assert cal_on.scores.shape == cal_off.scores.shape
    assert np.all(cal_on.scores >= cal_off.scores) and np.any(cal_on.scores > cal_off.scores)
    assert off.adaptive is None and on.adaptive is not None
    assert (on.threshold.enter, on.threshold.exit) == (off.threshold.enter, off.threshold.exit)
    assert on.error_scale == off.error_scale and on.level == off.level
    assert (on.adaptive.order, on.adaptive.forgetting, on.adaptive.alpha) == (4, 0.98, 0.1)
    # The part as the detector computes it over the recording, at unit scale.
    unit = BUNDLE.with_scoring(on.model_copy(update={"adaptive": AdaptiveScoring(
        order=4, forgetting=0.98, alpha=0.1, scale=[1.0] * 4)}))
    detector = Detector(unit, MODEL, DetectorSettings())
    stream = detector.new_stream("s")
    assert rec.timestamps is not None
    rows = [o.adaptive for o in (detector.process(stream, v, float(t))
                                 for v, t in zip(rec.values, rec.timestamps))
            if o.adaptive is not None and o.status != "warming_up"]
    smoothed = np.array(rows)
    size = np.sqrt(np.mean(smoothed[VALIDATION - len(rec.values):] ** 2, axis=0))
    factor = on.threshold.details["widened"]["adaptive"]
    assert np.allclose(on.adaptive.scale, size * factor)
    part = np.sqrt(np.mean((smoothed / np.asarray(on.adaptive.scale)) ** 2, axis=1))
    assert np.quantile(part, 0.99) * 1.2 <= on.threshold.enter * (1 + 1e-9)
    assert "adaptive AR(4) forecaster, forgetting 0.98" in summary(
        BUNDLE.with_scoring(on))


def test_a_bad_adaptive_setting_stops_the_trainer_with_its_key_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.__main__ import main

    config = tmp_path / "trainer.yaml"
    config.write_text("scoring:\n  adaptive:\n    enabled: true\n    forgeting: 0.9\n")
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: scoring.adaptive.forgeting: unknown key" in \
        capsys.readouterr().err
    config.write_text("scoring:\n  adaptive:\n    order: 0\n")
    assert main(["train", "--config", str(config)]) == 2
    assert f"{config}: scoring.adaptive.order: Input should be greater than or equal to 1" in \
        capsys.readouterr().err
