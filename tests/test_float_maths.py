"""The per-reading maths runs on lists of Python floats for speed; it must give the very bits
the same formulas give in numpy (which the trainer uses on whole recordings, and which the
code used before), so thresholds and scores mean the same everywhere."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.bundle import LevelScoring, Scoring, Smoothing, Threshold
from edge_agent.normalise import Baseline, Scale
from edge_agent.scoring import Scorer, ScoreState

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


def vectors(n: int, elements: st.SearchStrategy[float] = finite) -> st.SearchStrategy[list[float]]:
    return st.lists(elements, min_size=n, max_size=n)


@given(data=st.data())
def test_scale_forward_equals_numpy(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    mean, std = np.array(data.draw(vectors(n))), np.array(data.draw(vectors(n, positive)))
    clip = data.draw(st.floats(0.5, 50))
    rows = np.array([data.draw(vectors(n)) for _ in range(3)])
    scale = Scale(mean, std, clip)
    expected = np.clip((rows - mean) * (1.0 / std), -clip, clip)
    assert [scale.forward(row.tolist()) for row in rows] == expected.tolist()
    assert scale.forward_all(rows).tolist() == expected.tolist()


@given(data=st.data())
def test_baseline_equals_numpy_welford(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    rows = [np.array(data.draw(vectors(n))) for _ in range(data.draw(st.integers(1, 20)))]
    baseline = Baseline.empty(n)
    mean, m2 = np.zeros(n), np.zeros(n)
    for count, x in enumerate(rows, start=1):
        baseline.add(x.tolist())
        delta = x - mean
        mean = mean + delta / count
        m2 = m2 + delta * (x - mean)
    assert baseline.mean == mean.tolist() and baseline.m2 == m2.tolist()


@given(data=st.data())
def test_errors_rms_and_level_shift_equal_numpy(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 7))  # numpy's sum is a plain left-to-right sum below 8 values
    level = LevelScoring(alpha=data.draw(st.floats(0.001, 0.5)), scale=data.draw(vectors(n, positive)),
                  track_alpha=data.draw(st.sampled_from([0.0, 0.0005, 0.01])),
                  track_below=data.draw(st.floats(0.5, 10)),
                  rebase_after=data.draw(st.sampled_from([None, 1, 2, 3])),
                  noise=data.draw(st.one_of(st.none(), vectors(n, positive))))
    scorer = Scorer(Scoring(error_scale=data.draw(vectors(n, positive)),
                            smoothing=Smoothing(alpha=0.1), level=level,
                            threshold=Threshold(enter=3, exit=2, method="fixed")))
    x, p, anchor = (np.array(data.draw(vectors(n))) for _ in range(3))
    readings = [x] + [np.array(data.draw(vectors(n))) for _ in range(4)]
    z = scorer.errors(x.tolist(), p.tolist())
    z_np = (x - p) * (1.0 / np.asarray(scorer.params.error_scale))
    assert z == z_np.tolist()
    assert scorer.raw(z) == float(np.sqrt(np.add.reduce(z_np * z_np) / n))

    state = ScoreState()
    recent, base, away = anchor, anchor, np.zeros(n, dtype=int)
    sums, widened, previous = np.zeros(n), np.ones(n), readings[0]
    inv = 1.0 / np.asarray(level.scale)
    rescales = level.rebase_after is not None and level.noise is not None
    for x in readings:  # the first step starts from the anchor, the later ones from the state
        shift = scorer.level_shift(state, x.tolist(), anchor.tolist())
        recent = recent + level.alpha * (x - recent)
        shift_np = (recent - base) * inv / widened
        if level.track_alpha > 0.0:
            base = base + (level.track_alpha * (np.abs(shift_np) < level.track_below)) * (x - base)
        if level.rebase_after is not None:  # readings in a row away; at the limit, rebase
            away = np.where(np.abs(shift_np) >= level.track_below, away + 1, 0)
            sums = np.where(away > 0, sums + (x - previous) * (x - previous), 0.0)
            rebased = away >= level.rebase_after
            base = np.where(rebased, recent, base)
            if rescales:
                widened = np.where(rebased, np.maximum(
                    widened, np.sqrt(sums / np.maximum(away, 1)) / np.asarray(level.noise)),
                    widened)
            sums = np.where(rebased, 0.0, sums)
            away = np.where(rebased, 0, away)
            assert state.away == away.tolist()
            if rescales:
                assert state.away_noise == sums.tolist() and state.widened == widened.tolist()
        previous = x
        assert shift == shift_np.tolist()
        assert state.level == recent.tolist() and state.baseline == base.tolist()
