"""NAB scoring on hand-made files whose scores are worked out in the comments.

Useful identities for checking by hand: NAB's curve sigma(y) = 2 / (1 + e^(5y)) - 1 equals
tanh(-5y / 2), so sigma(-1) = tanh(2.5) = 0.986614 and a true positive at relative position y
scores A_TP * tanh(-2.5 y) / tanh(2.5).

Most files here have 100 rows one minute apart, probation switched off (fraction 0) unless the
test is about probation, and windows over rows 40-49 (10 rows) and 70-79.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge_agent.csvdata import parse_timestamp
from trainer.nab import (PROFILES, REWARD_LOW_FN_RATE, REWARD_LOW_FP_RATE, STANDARD, FileScore,
                         Profile, Window, load_windows, normalise, probation_rows, scaled_sigmoid,
                         score_benchmark, score_file)

N = 100
STEP = 60.0
TIMES = np.arange(N) * STEP
TANH_25 = math.tanh(2.5)
# The real NAB subset lives beside the project (see the shared data README), never inside it.
NAB_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def rows_window(first: int, last: int) -> Window:
    """The window covering rows first..last of TIMES."""
    return Window(first * STEP, last * STEP)


WINDOW_A = rows_window(40, 49)
WINDOW_B = rows_window(70, 79)


def alarms(*rows: int, n: int = N) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[list(rows)] = True
    return flags


def score(*rows: int, windows: tuple[Window, ...] = (WINDOW_A, WINDOW_B),
          profile: Profile = STANDARD, probation: float = 0.0) -> FileScore:
    return score_file(TIMES, alarms(*rows), windows, profile, probation_fraction=probation)


def test_published_profile_weights() -> None:
    # numenta/NAB config/profiles.json
    assert (STANDARD.tp_weight, STANDARD.fp_weight, STANDARD.fn_weight) == (1.0, 0.11, 1.0)
    assert REWARD_LOW_FP_RATE.fp_weight == 0.22 and REWARD_LOW_FP_RATE.fn_weight == 1.0
    assert REWARD_LOW_FN_RATE.fp_weight == 0.11 and REWARD_LOW_FN_RATE.fn_weight == 2.0
    assert set(PROFILES) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


def test_scaled_sigmoid_landmarks() -> None:
    # NAB's documented values: 0.98661 at the window start, 0.84828 half-way, 0 at the end,
    # -0.98661 one window-width past it, exactly -1 beyond three widths.
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.01) == -1.0
    assert scaled_sigmoid(-50.0) == pytest.approx(1.0)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_perfect_detector_scores_100(profile: Profile) -> None:
    # One alarm at the first row of each window: y = -10/10 = -1, each scores A_TP.
    # raw = 2 A_TP = perfect; null = -2 A_FN.
    result = score(40, 70, profile=profile)
    assert result.raw == pytest.approx(2 * profile.tp_weight)
    assert result.perfect == 2 * profile.tp_weight
    assert result.null == -2 * profile.fn_weight
    assert (result.tp, result.fn, result.fp) == (2, 0, 0)
    assert score_benchmark([result]).normalised == pytest.approx(100.0)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_null_detector_scores_0(profile: Profile) -> None:
    # No alarm: both windows missed, raw = -2 A_FN = null.
    result = score(profile=profile)
    assert result.raw == -2 * profile.fn_weight
    assert (result.tp, result.fn, result.fp) == (0, 2, 0)
    assert score_benchmark([result]).normalised == 0.0


def test_detection_at_window_start_vs_end() -> None:
    start = score(40, windows=(WINDOW_A,))
    end = score(49, windows=(WINDOW_A,))
    middle = score(44, windows=(WINDOW_A,))
    # Start: y = -(49 - 40 + 1)/10 = -1 -> exactly A_TP = 1.
    assert start.raw == pytest.approx(1.0)
    # End (last row): y = -(49 - 49 + 1)/10 = -0.1 -> tanh(0.25)/tanh(2.5) = 0.248242.
    assert end.raw == pytest.approx(math.tanh(0.25) / TANH_25)
    assert end.raw == pytest.approx(0.248242, abs=1e-6)
    # Row 44: y = -(49 - 44 + 1)/10 = -0.6 -> tanh(1.5)/tanh(2.5) = 0.917429.
    assert middle.raw == pytest.approx(0.917429, abs=1e-6)
    (window,) = end.windows
    assert (window.first_row, window.last_row, window.detection_row) == (40, 49, 49)
    assert window.position == pytest.approx(-0.1)
    assert start.raw > middle.raw > end.raw > 0


def test_false_positive_without_preceding_window_costs_a_fp() -> None:
    # Row 10 is before the only window: -A_FP = -0.11. Row 40 catches the window: +1.
    result = score(10, 40, windows=(WINDOW_A,))
    assert result.raw == pytest.approx(1.0 - 0.11)
    (fp,) = result.false_positives
    assert (fp.row, fp.position, fp.score) == (10, None, -0.11)
    assert (result.tp, result.fn, result.fp) == (1, 0, 1)


def test_false_positive_after_a_window_is_penalised_by_distance() -> None:
    windows = (WINDOW_A,)
    # Window rows 40-49 (w = 10); an FP at row i has y = (i - 49) / (10 - 1).
    # Row 50: y = 1/9 -> 0.11 * tanh(-5/18) = -0.029793 (1 row late: barely penalised).
    just_after = score(40, 50, windows=windows)
    assert just_after.raw == pytest.approx(1.0 - 0.029793, abs=1e-6)
    # Row 52: y = 3/9 -> 0.11 * tanh(-5/6) = -0.075049.
    later = score(40, 52, windows=windows)
    assert later.raw == pytest.approx(1.0 - 0.075049, abs=1e-6)
    # Row 77: y = 28/9 = 3.11 > 3 -> exactly -A_FP.
    far = score(40, 77, windows=windows)
    assert far.raw == pytest.approx(1.0 - 0.11)
    assert just_after.raw > later.raw > far.raw
    assert far.false_positives[0].position == pytest.approx(28 / 9)


def test_false_positive_is_measured_from_the_nearest_preceding_window() -> None:
    # Row 80 follows window B (rows 70-79) by one row, so y = 1/9 as for row 50 after A.
    result = score(40, 70, 80)
    assert result.raw == pytest.approx(2.0 - 0.029793, abs=1e-6)


def test_false_positive_scores_do_not_depend_on_the_window_being_caught() -> None:
    # Window missed (-1) and an FP at row 50 (-0.029793): the FP still sits after window A.
    result = score(50, windows=(WINDOW_A,))
    assert result.raw == pytest.approx(-1.0 - 0.029793, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # Alarms at 42, 44 and 49 in window 40-49: only 42 counts, y = -(49 - 42 + 1)/10 = -0.8
    # -> tanh(2)/tanh(2.5) = 0.977107. The later alarms are neither rewarded nor FPs.
    result = score(42, 44, 49, windows=(WINDOW_A,))
    assert result.raw == pytest.approx(math.tanh(2.0) / TANH_25)
    assert result.raw == pytest.approx(0.977107, abs=1e-6)
    assert (result.tp, result.fn, result.fp) == (1, 0, 0)
    assert result.windows[0].detection_row == 42
    # Alarming on every row of the window scores the same as alarming on its first row.
    assert score(*range(40, 50), windows=(WINDOW_A,)).raw == pytest.approx(1.0)


def test_probationary_period_is_ignored() -> None:
    # 100 rows at 15%: rows 0-14 are probation. Alarms there are neither FPs nor TPs.
    assert probation_rows(N) == 15
    straddling = rows_window(10, 20)  # 11 rows, 10-14 in probation
    # Rows 3 and 12 are ignored; row 16 is the first scorable alarm in the window:
    # y = -(20 - 16 + 1)/11 = -5/11 -> tanh(25/22)/tanh(2.5) = 0.824219.
    result = score(3, 12, 16, windows=(straddling,), probation=0.15)
    assert result.probation_rows == 15
    assert result.raw == pytest.approx(math.tanh(25 / 22) / TANH_25)
    assert result.raw == pytest.approx(0.824219, abs=1e-6)
    assert (result.tp, result.fn, result.fp) == (1, 0, 0)
    # Only probation alarms: the window counts as missed.
    assert score(3, 12, windows=(straddling,), probation=0.15).raw == -1.0


def test_window_inside_probation_is_not_scored() -> None:
    early = rows_window(5, 10)  # ends before row 15
    result = score(5, 50, windows=(early, WINDOW_B), probation=0.15)
    # Window B is missed (-1); the early window is ignored (no TP for row 5, no FN);
    # row 50 is an FP 40 rows after the early window (w = 6, y = 40/5 = 8 > 3): -0.11.
    assert result.raw == pytest.approx(-1.0 - 0.11)
    assert (result.tp, result.fn, result.fp) == (0, 1, 1)
    assert result.null == -1.0 and result.perfect == 1.0
    assert [w.scored for w in result.windows] == [False, True]


def test_probation_is_capped_at_750_rows() -> None:
    # NAB: min(floor(0.15 n), 0.15 * 5000).
    assert probation_rows(4032) == 604
    assert probation_rows(5000) == 750
    assert probation_rows(22695) == 750
    assert probation_rows(100, fraction=0.0) == 0
    with pytest.raises(ValueError):
        probation_rows(100, fraction=1.5)


def test_profiles_weigh_the_same_detections_differently() -> None:
    # Window A caught at its start (+A_TP), window B missed (-A_FN), an FP at row 10 with no
    # preceding window (-A_FP).
    results = {name: score(10, 40, profile=p) for name, p in PROFILES.items()}
    assert results["standard"].raw == pytest.approx(1 - 0.11 - 1)            # -0.11
    assert results["reward_low_FP_rate"].raw == pytest.approx(1 - 0.22 - 1)  # -0.22
    assert results["reward_low_FN_rate"].raw == pytest.approx(1 - 0.11 - 2)  # -1.11
    normalised = {name: score_benchmark([r]).normalised for name, r in results.items()}
    # standard: null -2, perfect 2: 100 * (-0.11 + 2) / 4 = 47.25
    assert normalised["standard"] == pytest.approx(47.25)
    # low FP: 100 * (-0.22 + 2) / 4 = 44.5 (the FP hurts twice as much)
    assert normalised["reward_low_FP_rate"] == pytest.approx(44.5)
    # low FN: null -4, perfect 2: 100 * (-1.11 + 4) / 6 = 48.1667 (the miss costs more, but
    # so does the null detector's, so the same detector rates higher)
    assert normalised["reward_low_FN_rate"] == pytest.approx(48.1667, abs=1e-4)


def test_file_without_windows() -> None:
    no_windows = score(10, 60, windows=())
    # Every alarm is an FP with no preceding window: 2 * -0.11.
    assert no_windows.raw == pytest.approx(-0.22)
    assert (no_windows.null, no_windows.perfect) == (0.0, 0.0)
    assert (no_windows.tp, no_windows.fn, no_windows.fp) == (0, 0, 2)
    # On its own it cannot be normalised ...
    with pytest.raises(ValueError):
        score_benchmark([no_windows])
    # ... but pooled with a file that has windows it lowers the total:
    # raw = 2 - 0.22 = 1.78, null = -2, perfect = 2: 100 * 3.78 / 4 = 94.5.
    pooled = score_benchmark([score(40, 70), no_windows])
    assert pooled.normalised == pytest.approx(94.5)
    assert (pooled.tp, pooled.fn, pooled.fp, pooled.files) == (2, 0, 2, 2)


def test_benchmark_sums_raw_scores_before_normalising() -> None:
    # File 1: both windows caught at the start (+2). File 2: one window, missed (-1).
    # Totals: raw 1, null -3, perfect 3 -> 100 * 4 / 6 = 66.67, not the mean of 100 and 0.
    two = score(40, 70)
    one_missed = score(windows=(WINDOW_A,))
    total = score_benchmark([two, one_missed])
    assert (total.raw, total.null, total.perfect) == pytest.approx((1.0, -3.0, 3.0))
    assert total.normalised == pytest.approx(200 / 3)
    assert normalise(1.0, -3.0, 3.0) == pytest.approx(200 / 3)


def test_benchmark_refuses_mixed_profiles_and_nothing() -> None:
    with pytest.raises(ValueError, match="profiles"):
        score_benchmark([score(40), score(40, profile=REWARD_LOW_FN_RATE)])
    with pytest.raises(ValueError):
        score_benchmark([])


def test_alarm_on_every_row_scores_below_null() -> None:
    # Both windows caught at their start (+2), but 80 rows of FPs.
    result = score(*range(N))
    assert result.fp == 80
    assert score_benchmark([result]).normalised < 0


def test_windows_match_rows_by_timestamp() -> None:
    # A window whose limits fall between rows covers the rows inside it: 39:30 .. 49:30 -> 40-49.
    between = Window(39.5 * STEP, 49.5 * STEP)
    result = score(40, windows=(between,))
    assert (result.windows[0].first_row, result.windows[0].last_row) == (40, 49)
    assert result.raw == pytest.approx(1.0)
    # A window beyond the data covers no row: not scored, and alarms are plain FPs.
    beyond = Window(1000 * STEP, 1010 * STEP)
    outside = score(40, windows=(beyond,))
    assert not outside.windows[0].scored and outside.windows[0].first_row is None
    assert (outside.null, outside.perfect, outside.raw) == (0.0, 0.0, -0.11)


def test_repeated_and_backward_timestamps() -> None:
    # Some NAB files repeat a timestamp or step back an hour (daylight saving). The window
    # [3, 5] opens at row 3 (first row at 3) and closes at row 6 (first row stamped 5), as
    # NAB's walk through the stream does; rows 7 (5 again) and 8 (2.5) are after it.
    times = np.array([0, 1, 2, 3, 3, 4, 5, 5, 2.5, 6, 7]) * STEP
    window = Window(3 * STEP, 5 * STEP)
    result = score_file(times, alarms(3, 7, 8, n=11), [window], probation_fraction=0.0)
    assert (result.windows[0].first_row, result.windows[0].last_row) == (3, 6)
    # Row 3 catches the window at its start: +1. Window width 4, last row 6:
    # row 7: y = 1/3 -> 0.11 * tanh(-5/6) = -0.075049; row 8: y = 2/3 -> 0.11 * tanh(-5/3)
    # = -0.102422.
    assert [fp.row for fp in result.false_positives] == [7, 8]
    assert result.raw == pytest.approx(1.0 - 0.075049 - 0.102422, abs=1e-6)


def test_one_row_window_then_false_positive() -> None:
    # NAB divides by (w - 1) = 0 here; we score the FP as far away: -A_FP.
    result = score(41, windows=(rows_window(40, 40),))
    assert result.raw == pytest.approx(-1.0 - 0.11)


def test_window_order_does_not_matter_but_overlaps_are_refused() -> None:
    assert score(40, 70, windows=(WINDOW_B, WINDOW_A)).raw == pytest.approx(2.0)
    with pytest.raises(ValueError, match="overlap"):
        score(40, windows=(rows_window(40, 49), rows_window(45, 60)))
    with pytest.raises(ValueError):
        Window(10.0, 5.0)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="length"):
        score_file(TIMES, np.zeros(N - 1, dtype=bool), [WINDOW_A])
    with pytest.raises(ValueError, match="finite"):
        score_file(np.full(N, np.nan), np.zeros(N, dtype=bool), [WINDOW_A])
    with pytest.raises(ValueError):
        score_file(TIMES, np.full(N, 0.5), [WINDOW_A])


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_load_windows(tmp_path: Path) -> None:
    path = tmp_path / "combined_windows.json"
    path.write_text(json.dumps({
        "realKnownCause/nyc_taxi.csv": [
            ["2014-12-25 14:00:00.000000", "2014-12-29 17:30:00.000000"],
            ["2014-11-01 19:00:00.000000", "2014-11-03 22:30:00.000000"],
        ],
        "artificialNoAnomaly/art_flat.csv": [],
    }))
    windows = load_windows(path)
    assert set(windows) == {"realKnownCause/nyc_taxi.csv", "artificialNoAnomaly/art_flat.csv"}
    assert windows["artificialNoAnomaly/art_flat.csv"] == []
    # Sorted by start, parsed as UTC epoch seconds.
    assert windows["realKnownCause/nyc_taxi.csv"] == [
        Window(utc("2014-11-01 19:00:00"), utc("2014-11-03 22:30:00")),
        Window(utc("2014-12-25 14:00:00"), utc("2014-12-29 17:30:00")),
    ]


@pytest.mark.parametrize("document", [
    [],                                                   # not an object
    {"a.csv": "2014-11-01"},                              # windows not a list
    {"a.csv": [["2014-11-01 19:00:00"]]},                 # one limit only
    {"a.csv": [["2014-11-02 00:00:00", "2014-11-01 00:00:00"]]},  # ends before it starts
    {"a.csv": [["yesterday", "2014-11-01 00:00:00"]]},    # not a timestamp
])
def test_load_windows_refuses_bad_files(tmp_path: Path, document: object) -> None:
    path = tmp_path / "windows.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError):
        load_windows(path)


def nab_timestamps(path: Path) -> np.ndarray:
    """A NAB file's timestamps. Read directly rather than with the project's CSV reader: a
    few NAB files repeat a timestamp (a daylight-saving artefact), which that reader refuses
    and NAB's scorer accepts."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    return np.array([parse_timestamp(row[0]) for row in rows])


@pytest.mark.skipif(not (NAB_DATA / "combined_windows.json").is_file(),
                    reason="the NAB subset is not beside the project")
def test_real_nab_subset_baselines() -> None:
    windows = load_windows(NAB_DATA / "combined_windows.json")
    perfect, null, everywhere = [], [], []
    for name, limits in windows.items():
        if not (NAB_DATA / name).is_file():
            continue
        times = nab_timestamps(NAB_DATA / name)
        starts = np.zeros(times.size, dtype=bool)
        starts[np.searchsorted(times, [w.start for w in limits])] = True
        perfect.append(score_file(times, starts, limits))
        null.append(score_file(times, np.zeros(times.size, dtype=bool), limits))
        everywhere.append(score_file(times, np.ones(times.size, dtype=bool), limits))
    if not perfect:
        pytest.skip("no NAB data file found")
    assert score_benchmark(perfect).normalised == pytest.approx(100.0)
    assert score_benchmark(null).normalised == pytest.approx(0.0)
    assert score_benchmark(everywhere).normalised < -100.0


def test_folders_are_pooled_on_their_own_and_a_folder_without_windows_is_not_normalised(
        ) -> None:
    from trainer.benchmarks import folder_totals

    # realX: two files, as in test_benchmark_sums_raw_scores_before_normalising: 66.67.
    # artificialNoAnomaly: one file, two false positives (raw -0.22), nothing to normalise.
    keys = ["realX/a.csv", "artificialNoAnomaly/quiet.csv", "realX/b.csv"]
    files = [score(40, 70), score(10, 60, windows=()), score(windows=(WINDOW_A,))]
    folders = folder_totals(keys, {"int8": {"standard": files}})
    assert list(folders) == ["artificialNoAnomaly", "realX"]
    assert folders["realX"]["files"] == 2 and folders["realX"]["windows"] == 3
    assert folders["realX"]["int8"]["standard"]["normalised"] == pytest.approx(66.67)
    assert (folders["realX"]["int8"]["standard"]["tp"],
            folders["realX"]["int8"]["standard"]["fn"]) == (2, 1)
    quiet = folders["artificialNoAnomaly"]
    assert quiet["windows"] == 0 and quiet["int8"]["standard"] == {
        "normalised": None, "raw": pytest.approx(-0.22), "tp": 0, "fn": 0, "fp": 2}
