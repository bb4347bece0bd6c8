"""Point-wise detection metrics (SKAB's protocol) and per-anomaly detection delays.

SKAB scores a detector row by row: each row's 0/1 prediction against that row's 0/1
``anomaly`` label, with no tolerance window, pooled over the test parts of all files. Pooling
means summing the confusion counts first and taking the ratios last, so a short file does not
weigh as much as a long one; :meth:`PointMetrics.combine` does exactly that.

F1 alone flatters a detector that alarms everywhere when half the rows are anomalous, so the
false alarm rate (FAR) and missed alarm rate (MAR) are reported with it. Point-wise scores say
nothing about *how soon* a fault was caught, which matters most on a device that should stop a
machine early; :func:`detection_delays` answers that per labelled anomaly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["PointMetrics", "point_metrics", "anomaly_segments", "DetectionDelay",
           "detection_delays", "as_binary"]


def as_binary(values: Sequence[bool] | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a 1-D bool array, refusing anything but 0/1 (or False/True).

    Labels read from CSV arrive as floats (0.0/1.0); a stray 0.5 or NaN there is a data error
    that would otherwise be silently counted as "anomalous", so it raises instead.

    >>> as_binary([0, 1.0, True], "labels").tolist()
    [False, True, True]
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric or boolean, got dtype {array.dtype}")
    if not np.all((array == 0) | (array == 1)):
        bad = array[~((array == 0) | (array == 1))][0]
        raise ValueError(f"{name} must contain only 0 and 1, found {bad!r}")
    return array.astype(bool)


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (the rate is undefined)."""
    return numerator / denominator if denominator else 0.0


def _paired(predictions: Sequence[bool] | np.ndarray, labels: Sequence[float] | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as bool arrays of the same length (else ValueError)."""
    predicted = as_binary(predictions, "predictions")
    actual = as_binary(labels, "labels")
    if predicted.shape != actual.shape:
        raise ValueError(f"predictions ({predicted.size} rows) and labels ({actual.size} rows) "
                         "differ in length")
    return predicted, actual


@dataclass(frozen=True)
class PointMetrics:
    """Confusion counts and the ratios derived from them.

    Build it from counts; the ratios are computed, never passed, so they cannot disagree with
    the counts. Undefined ratios are 0.0: precision with no positive prediction, recall and MAR
    with no anomalous row, FAR with no normal row.

    >>> m = PointMetrics(tp=3, fp=1, tn=5, fn=1)
    >>> (m.precision, m.recall, m.f1, m.far, m.mar)
    (0.75, 0.75, 0.75, 0.16666666666666666, 0.25)
    """

    tp: int
    fp: int
    tn: int
    fn: int
    precision: float = field(init=False)
    recall: float = field(init=False)
    f1: float = field(init=False)
    far: float = field(init=False)
    mar: float = field(init=False)

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "tn", "fn"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + self.fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "recall", recall)
        object.__setattr__(self, "f1", f1)
        object.__setattr__(self, "far", _ratio(self.fp, self.fp + self.tn))
        object.__setattr__(self, "mar", _ratio(self.fn, self.fn + self.tp))

    @property
    def rows(self) -> int:
        """How many rows were scored."""
        return self.tp + self.fp + self.tn + self.fn

    @classmethod
    def combine(cls, parts: Iterable["PointMetrics"]) -> "PointMetrics":
        """Pool several files' metrics the way SKAB does: add the counts, then take ratios.

        Averaging per-file F1 instead would give a 100-row file the weight of a 10,000-row one.

        >>> PointMetrics.combine([PointMetrics(1, 0, 0, 0), PointMetrics(0, 0, 1, 1)]).recall
        0.5
        """
        tp = fp = tn = fn = 0
        for part in parts:
            tp, fp, tn, fn = tp + part.tp, fp + part.fp, tn + part.tn, fn + part.fn
        return cls(tp=tp, fp=fp, tn=tn, fn=fn)

    def as_dict(self) -> dict[str, float]:
        """Counts and ratios as a plain dict (for JSON reports)."""
        return asdict(self)


def point_metrics(predictions: Sequence[bool] | np.ndarray,
                  labels: Sequence[float] | np.ndarray) -> PointMetrics:
    """Row-by-row comparison of binary predictions with 0/1 labels (no tolerance window).

    >>> point_metrics([1, 1, 0, 0], [1, 0, 0, 1]).as_dict()["f1"]
    0.5
    """
    predicted, actual = _paired(predictions, labels)
    return PointMetrics(
        tp=int(np.count_nonzero(predicted & actual)),
        fp=int(np.count_nonzero(predicted & ~actual)),
        tn=int(np.count_nonzero(~predicted & ~actual)),
        fn=int(np.count_nonzero(~predicted & actual)),
    )


def anomaly_segments(labels: Sequence[float] | np.ndarray) -> list[tuple[int, int]]:
    """The runs of consecutive 1s as ``[start, end)`` row ranges, in order.

    A run is one labelled event (a valve closed for three minutes is one fault, not 180), which
    is the unit for "was it caught, and how late".

    >>> anomaly_segments([0, 1, 1, 0, 1])
    [(1, 3), (4, 5)]
    >>> anomaly_segments([])
    []
    """
    flags = as_binary(labels, "labels").astype(np.int8)
    edges = np.diff(np.concatenate(([0], flags, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


@dataclass(frozen=True)
class DetectionDelay:
    """How late the first alarm came within one labelled anomaly segment ``[start, end)``.

    ``detected_at`` is the row of the first positive prediction inside the segment; it and the
    delays are ``None`` when the segment was missed. ``delay_seconds`` is ``None`` too when no
    timestamps were given.
    """

    start: int
    end: int
    detected_at: int | None
    delay_rows: int | None
    delay_seconds: float | None

    @property
    def detected(self) -> bool:
        return self.detected_at is not None


def detection_delays(predictions: Sequence[bool] | np.ndarray,
                     labels: Sequence[float] | np.ndarray,
                     timestamps: Sequence[float] | np.ndarray | None = None
                     ) -> list[DetectionDelay]:
    """For each labelled anomaly segment, the delay from its start to the first alarm in it.

    Only alarms inside the segment count: an alarm before the segment is a false alarm (already
    in FAR), and one after it is too late to be a detection. ``timestamps`` (seconds, one per
    row) adds the delay in seconds, which is what an operator cares about when rows are not
    evenly spaced.

    >>> [d.delay_rows for d in detection_delays([0, 0, 1, 0, 0], [0, 1, 1, 0, 1])]
    [1, None]
    """
    predicted, actual = _paired(predictions, labels)
    times = None
    if timestamps is not None:
        times = np.asarray(timestamps, dtype=np.float64)
        if times.shape != actual.shape:
            raise ValueError(f"timestamps ({times.size} rows) and labels ({actual.size} rows) "
                             "differ in length")
    delays = []
    for start, end in anomaly_segments(actual):
        hits = np.flatnonzero(predicted[start:end])
        if hits.size == 0:
            delays.append(DetectionDelay(start, end, None, None, None))
            continue
        first = start + int(hits[0])
        seconds = None if times is None else float(times[first] - times[start])
        delays.append(DetectionDelay(start, end, first, first - start, seconds))
    return delays
