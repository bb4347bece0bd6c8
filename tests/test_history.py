"""The relative threshold: a stream's recent scores against its own score history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import RelativeThreshold, load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.history import PART_HISTORIES, PARTS, SCORE_HISTORY, Relative, ScoreHistory
from edge_agent.learning import with_relative
from edge_agent.model import StatefulModel
from edge_agent.simulator import Fault, simulate
from tests.conftest import DEMO_BUNDLE, with_optional_parts

PARAMS = RelativeThreshold(window=5, z=2.5, min_history=50)


def lifted(scores: np.ndarray, enter: float, params: RelativeThreshold = PARAMS) -> np.ndarray:
    rel, history = Relative(params), ScoreHistory()
    return np.array([rel.lift(history, float(s), enter)[0] for s in scores])


@pytest.mark.parametrize("unit", [0.01, 1.0, 1000.0])
def test_steady_noise_never_reaches_the_threshold_at_any_scale(unit: float) -> None:
    scores = unit * (1.0 + 0.3 * np.abs(np.random.default_rng(1).standard_normal(5000)))
    out = lifted(scores, enter=3.0 * unit)
    assert out.max() < 3.0 * unit
    assert np.array_equal(out >= scores, np.ones(len(scores), dtype=bool))  # never lowered


def test_a_rise_the_calibrated_threshold_misses_is_caught_within_the_window() -> None:
    rng = np.random.default_rng(2)
    scores = 1.0 + 0.1 * rng.standard_normal(1000)
    scores[600:] += 1.0  # a lasting rise to 2: well below the calibrated 4
    out = lifted(scores, enter=4.0)
    assert out[:600].max() < 4.0
    assert (out[600:605] >= 4.0).any()


def test_the_history_keeps_learning_so_a_regular_burst_stops_counting() -> None:
    """The same burst every 20 readings: alarming while it is new, normal once the history
    has seen it often (a stream that is burstier than its calibration was)."""
    rng = np.random.default_rng(3)
    scores = 1.0 + 0.1 * rng.standard_normal(20000)
    for start in range(500, 20000, 20):
        scores[start:start + 5] += 1.0
    out = lifted(scores, enter=4.0)
    assert out[500:505].max() >= 4.0
    assert out[19500:20000].max() < 4.0


def test_nothing_is_lifted_before_min_history_scores() -> None:
    scores = np.r_[np.ones(53), 50.0]  # the last 5 are recent: a history of 49
    assert lifted(scores, enter=4.0)[-1] == 50.0
    assert lifted(np.r_[np.ones(54), 50.0], enter=4.0)[-1] > 50.0


@pytest.mark.parametrize("absolute_for", [None, 400])
def test_the_detector_lifts_its_score_exactly_as_the_history_says(absolute_for: int | None
                                                                   ) -> None:
    """With a relative threshold in the bundle, every score a stream reports is the larger of
    the plain score and ``enter * distance / z``, the distance taken over the plain scores
    (with ``absolute_for``, the latter alone after that many scores)."""
    relative = PARAMS.model_copy(update={"absolute_for": absolute_for})
    bundle = with_relative(with_optional_parts(load_bundle(DEMO_BUNDLE)), relative)
    plain_bundle = with_relative(bundle, None)
    detectors = [Detector(b, StatefulModel(b.model_path, b.manifest.model),
                          DetectorSettings(warmup_readings=5)) for b in (plain_bundle, bundle)]
    states = [d.new_stream("r/j") for d in detectors]
    reference, history = Relative(relative), ScoreHistory()
    sim = simulate(1500, seed=7, faults=[Fault("bearing", 100.0, 20.0)])
    compared = above = below = 0
    lifted_alerts: list[str | None] = []
    for row, ts in zip(sim.values, sim.t + 1.7e9):
        plain, lifted_ = (d.process(s, row, float(ts)) for d, s in zip(detectors, states))
        if plain.score is None:
            assert lifted_.score is None
            continue
        expected, by = reference.lift(history, plain.score, detectors[1].enter)
        assert lifted_.score == expected
        if absolute_for is None:  # lifted by the history, or the score as calibrated
            assert (by is None) == (expected == plain.score)
        # Each alert says which history, if any, set the score it reports.
        assert all(a.lifted_by == by for a in lifted_.alerts)
        lifted_alerts += [a.lifted_by for a in lifted_.alerts]
        compared += 1
        above += expected > plain.score
        below += expected < plain.score
    assert compared > 1000 and above > 0
    assert (below > 0) == (absolute_for is not None)
    assert SCORE_HISTORY in lifted_alerts


def test_with_part_z_each_part_of_the_detector_score_is_judged_by_its_own_history() -> None:
    """With ``part_z``, the lift also takes each part's value (the smoothed forecast surprise,
    the level, seasonal and adaptive shifts, as the plain detector computed them) against
    that part's own history; on a bearing fault some readings are lifted further by a part
    than the score's history alone would lift them."""
    relative = PARAMS.model_copy(update={"part_z": 3.0})
    bundle = with_relative(with_optional_parts(load_bundle(DEMO_BUNDLE)), relative)
    plain_bundle = with_relative(bundle, None)
    detectors = [Detector(b, StatefulModel(b.model_path, b.manifest.model),
                          DetectorSettings(warmup_readings=5)) for b in (plain_bundle, bundle)]
    states = [d.new_stream("r/j") for d in detectors]
    reference, history, own = Relative(relative), ScoreHistory(), []
    alone, alone_history = Relative(PARAMS), ScoreHistory()
    sim = simulate(1500, seed=7, faults=[Fault("bearing", 100.0, 20.0)])
    raw = detectors[0].scorer.raw
    compared = by_a_part = 0
    lifters: set[str | None] = set()
    for row, ts in zip(sim.values, sim.t + 1.7e9):
        plain, lifted_ = (d.process(s, row, float(ts)) for d, s in zip(detectors, states))
        if plain.score is None:
            assert lifted_.score is None
            continue
        parts = (states[0].score.smoothed,
                 *(None if v is None else raw(v)
                   for v in (plain.shift, plain.seasonal, plain.adaptive)))
        assert max(v for v in parts if v is not None) == plain.score
        expected, by = reference.lift(history, plain.score, detectors[1].enter, parts, own)
        assert lifted_.score == expected
        assert all(a.lifted_by == by for a in lifted_.alerts)
        lifters.update(a.lifted_by for a in lifted_.alerts)
        compared += 1
        higher = expected > alone.lift(alone_history, plain.score, detectors[1].enter)[0]
        by_a_part += higher
        assert not higher or by in PART_HISTORIES  # only a part lifts above the score's own
    assert compared > 1000 and by_a_part > 0
    assert lifters & set(PART_HISTORIES)  # some alert was lifted by a part's history
    assert len(own) == len(PARTS) and all(h.count > 50 for h in own)
    assert states[1].part_histories == own and states[0].part_histories == []


def test_a_horizon_lets_a_new_normal_become_usual_where_a_whole_history_would_not() -> None:
    """Months at one level, then a lasting step: with every score since the start counting
    alike, the new level still stands out 1500 readings later; with a horizon of 1000
    scores it is learnt as the new normal."""
    rng = np.random.default_rng(4)
    scores = np.r_[np.full(20000, 1.0), np.full(1500, 2.0)] + 0.1 * rng.standard_normal(21500)
    forever = lifted(scores, enter=4.0)
    forgetting = lifted(scores, enter=4.0, params=PARAMS.model_copy(update={"horizon": 1000}))
    assert forever[-100:].min() >= 4.0
    assert forgetting[20000:20005].max() >= 4.0  # the step itself is still news
    assert forgetting[-100:].max() < 4.0


def test_after_absolute_for_scores_only_the_history_decides() -> None:
    """A stream burstier than its calibration: the same burst, over the calibrated enter
    threshold, every 50 readings. With the calibrated threshold for ever, every burst alarms;
    once the history has taken over it is usual, while a burst twice as high is still news."""
    rng = np.random.default_rng(5)
    scores = 1.0 + 0.1 * rng.standard_normal(12000)
    for start in range(200, 11000, 50):
        scores[start:start + 3] = 5.0  # over the calibrated 4
    scores[11500:11503] = 10.0
    handing_over = PARAMS.model_copy(update={"absolute_for": 4000})
    forever, handed = lifted(scores, enter=4.0), lifted(scores, enter=4.0, params=handing_over)
    assert np.array_equal(forever[:4000], handed[:4000])
    assert forever[10000:11000].max() >= 5.0
    assert handed[4006:11000].max() < 4.0 and handed.min() >= 0.0
    assert handed[11500:11503].max() >= 4.0


def test_a_horizon_does_not_stop_the_count_that_hands_over() -> None:
    params = PARAMS.model_copy(update={"horizon": 100, "absolute_for": 500})
    rel, history = Relative(params), ScoreHistory()
    for _ in range(600):
        last = rel.lift(history, 5.0, enter=4.0)
    assert history.count == 100 and history.seen == 600 and last == (0.0, SCORE_HISTORY)



def test_the_alert_schema_names_every_history_that_can_lift_a_score() -> None:
    schema = json.loads((Path(__file__).resolve().parent.parent / "edge_agent" / "schemas"
                         / "alert.schema.json").read_text())
    assert schema["properties"]["lifted_by"]["enum"] == [SCORE_HISTORY, *PART_HISTORIES, None]
    assert "lifted_by" in schema["required"]
