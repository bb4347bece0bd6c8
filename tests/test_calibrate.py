"""Calibration with the agent's own detector: a slow part whose training rows wander further
than its validation rows do is widened to its own tail (``threshold.tail_quantile``)."""

from __future__ import annotations

import numpy as np

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.csvdata import Recording
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.simulator import simulate
from tests.conftest import DEMO_BUNDLE
from trainer.calibrate import calibrate
from trainer.config import LevelConfig, ScoringConfig, ThresholdConfig
from trainer.inspect import summary

ROWS, VALIDATION = 3000, 2400


def _wandering_recording() -> Recording:
    """Normal readings of one joint; in the training rows (600-1600) the temperature wanders
    up by 1.5 °C and back (a raised cosine), in the validation rows it does not."""
    sim = simulate(ROWS, seed=7)
    values = sim.values.copy()
    bump = np.zeros(ROWS)
    bump[600:1600] = 0.75 * (1 - np.cos(np.linspace(0, 2 * np.pi, 1000)))
    values[:, 1] += bump
    return Recording(path="wander.csv", features=["motor_current", "temperature", "vibration",
                                                  "position_error"],
                     values=values, timestamps=1.7e9 + sim.t, rows=np.arange(ROWS))


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
        return Bundle(path=demo.path,
                      manifest=demo.manifest.model_copy(update={"scoring": scoring}))

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
