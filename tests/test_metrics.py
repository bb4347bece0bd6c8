"""Point-wise metrics (SKAB's protocol) and per-anomaly detection delays."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import (DetectionDelay, PointMetrics, anomaly_segments, as_binary,
                             detection_delays, point_metrics)


def test_counts_and_ratios_by_hand() -> None:
    predictions = [1, 1, 0, 0, 1, 0, 0, 1]
    labels = [1, 0, 0, 1, 1, 1, 0, 0]
    m = point_metrics(predictions, labels)
    # tp rows 0, 4; fp rows 1, 7; fn rows 3, 5; tn rows 2, 6.
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 2, 2, 2)
    assert m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5
    assert m.far == 0.5  # 2 / (2 + 2)
    assert m.mar == 0.5  # 2 / (2 + 2)
    assert m.rows == 8


def test_asymmetric_case() -> None:
    # 3 anomalous rows, 2 caught; 7 normal rows, 1 false alarm.
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    predictions = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    m = point_metrics(predictions, labels)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 6, 1)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.far == pytest.approx(1 / 7)
    assert m.mar == pytest.approx(1 / 3)


def test_accepts_bool_int_and_float_labels() -> None:
    expected = point_metrics([True, False, True], [True, True, False])
    assert point_metrics(np.array([1, 0, 1]), np.array([1.0, 1.0, 0.0])) == expected


def test_undefined_ratios_are_zero() -> None:
    # No positive prediction and no anomaly: precision, recall, F1 undefined -> 0.
    m = point_metrics([0, 0, 0], [0, 0, 0])
    assert (m.precision, m.recall, m.f1, m.far, m.mar) == (0.0, 0.0, 0.0, 0.0, 0.0)
    # Only anomalous rows, all caught: FAR has no normal row -> 0.
    m = point_metrics([1, 1], [1, 1])
    assert (m.precision, m.recall, m.f1, m.far, m.mar) == (1.0, 1.0, 1.0, 0.0, 0.0)
    # Empty input is allowed and scores nothing.
    assert point_metrics([], []).rows == 0


def test_alarm_everywhere_gives_skab_baseline() -> None:
    # Half the rows anomalous, every row flagged: precision 0.5, recall 1, F1 2/3, FAR 100%.
    labels = np.array([0, 1] * 50)
    m = point_metrics(np.ones(100, dtype=bool), labels)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.far == 1.0 and m.mar == 0.0


def test_combine_sums_counts_before_ratios() -> None:
    short = point_metrics([1, 0], [1, 1])          # tp 1, fn 1: recall 0.5
    long = point_metrics([1] * 8 + [0] * 2, [1] * 10)  # tp 8, fn 2: recall 0.8
    pooled = PointMetrics.combine([short, long])
    assert (pooled.tp, pooled.fn, pooled.fp, pooled.tn) == (9, 3, 0, 0)
    assert pooled.recall == pytest.approx(9 / 12)  # not the mean of 0.5 and 0.8
    # The same as scoring the concatenated arrays.
    assert pooled == point_metrics([1, 0] + [1] * 8 + [0] * 2, [1, 1] + [1] * 10)
    assert PointMetrics.combine([]) == PointMetrics(0, 0, 0, 0)


def test_as_dict_has_counts_and_ratios() -> None:
    d = PointMetrics(tp=1, fp=1, tn=1, fn=1).as_dict()
    assert set(d) == {"tp", "fp", "tn", "fn", "precision", "recall", "f1", "far", "mar"}
    assert d["f1"] == 0.5


def test_metrics_are_frozen_and_checked() -> None:
    m = PointMetrics(1, 2, 3, 4)
    with pytest.raises(AttributeError):
        m.tp = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        PointMetrics(-1, 0, 0, 0)


@pytest.mark.parametrize("predictions, labels", [
    ([1, 0], [1, 0, 1]),              # lengths differ
    ([1, 0], [1, 0.5]),               # not 0/1
    ([1, 0], [1, float("nan")]),      # NaN label
    ([[1, 0]], [[1, 0]]),             # not 1-D
    (["1", "0"], [1, 0]),             # text
])
def test_bad_inputs_are_refused(predictions: list, labels: list) -> None:
    with pytest.raises(ValueError):
        point_metrics(predictions, labels)


def test_as_binary_names_the_argument() -> None:
    with pytest.raises(ValueError, match="labels"):
        as_binary([2], "labels")


def test_anomaly_segments() -> None:
    assert anomaly_segments([0, 1, 1, 0, 0, 1, 1, 1]) == [(1, 3), (5, 8)]
    assert anomaly_segments([1, 1, 0]) == [(0, 2)]
    assert anomaly_segments(np.zeros(5)) == []
    assert anomaly_segments(np.ones(3)) == [(0, 3)]


def test_detection_delays_in_rows() -> None:
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    # Alarm before segment 1 (row 0) does not count; first alarm inside is row 3.
    # Segment 2 (rows 6-7) is missed although row 8 alarms just after it.
    # Segment 3 (row 9) is caught at once.
    predictions = [1, 0, 0, 1, 1, 0, 0, 0, 1, 1]
    delays = detection_delays(predictions, labels)
    assert delays == [
        DetectionDelay(start=1, end=4, detected_at=3, delay_rows=2, delay_seconds=None),
        DetectionDelay(start=6, end=8, detected_at=None, delay_rows=None, delay_seconds=None),
        DetectionDelay(start=9, end=10, detected_at=9, delay_rows=0, delay_seconds=None),
    ]
    assert [d.detected for d in delays] == [True, False, True]


def test_detection_delays_in_seconds_with_uneven_timestamps() -> None:
    labels = [0, 1, 1, 1]
    predictions = [0, 0, 0, 1]
    timestamps = [100.0, 101.0, 105.0, 115.5]
    (delay,) = detection_delays(predictions, labels, timestamps)
    assert delay.delay_rows == 2
    assert delay.delay_seconds == pytest.approx(14.5)  # 115.5 - 101.0


def test_detection_delays_checks_timestamp_length() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        detection_delays([0, 1], [0, 1], timestamps=[0.0])
