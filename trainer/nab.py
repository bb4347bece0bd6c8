"""Numenta Anomaly Benchmark (NAB) scoring, written from NAB's published description.

NAB rewards what an operator wants from a streaming detector: catch every labelled anomaly
*window*, catch it early, and raise few false alarms. Point-wise F1 cannot say "early", so NAB
scores each detection by where it falls relative to the windows. The rules implemented here,
and where they were checked:

* **Profiles** (weights A_TP, A_FP, A_FN; NAB's ``config/profiles.json``, also quoted in the
  documentation of the R package *otsad*): standard 1.0 / 0.11 / 1.0, reward_low_FP_rate
  1.0 / 0.22 / 1.0, reward_low_FN_rate 1.0 / 0.11 / 2.0. (A_TN = 1.0 is listed too but true
  negatives score 0, so it has no effect.)
* **Scaled sigmoid** (NAB v1.x ``nab/sweeper.py``, ``scaledSigmoid``):
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1``, and exactly -1 for ``y > 3``. The paper (Lavin &
  Ahmad 2015, eq. for sigma^A) writes ``(A_TP - A_FP) / (1 + exp(5 y)) - 1``; the code that
  produced NAB's scoreboard uses the form above with the weights applied outside, and NAB's
  issue tracker (numenta/NAB #404, #405) records the difference. We follow the code, so our
  figures are comparable with the published ones.
* **True positives**: in a window of ``w`` rows whose last row is ``b``, a detection at row
  ``i`` has relative position ``y = -(b - i + 1) / w`` (-1 at the first row, -1/w at the last).
  Only the earliest scorable detection counts and scores ``A_TP * sigma(y) / sigma(-1)``, so
  a detection at the window's first row earns exactly A_TP. Later ones in the window are
  ignored (neither rewarded nor penalised).
* **False negatives**: a window with no scorable detection scores ``-A_FN``.
* **False positives**: a detection outside every window, after the nearest preceding window
  (last row ``b``, ``w`` rows), has ``y = (i - b) / (w - 1)`` and scores ``A_FP * sigma(y)``:
  almost nothing just after the window, tending to ``-A_FP`` three window-widths later. With no
  preceding window it scores ``-A_FP``. (NAB divides by zero for a one-row window; we treat
  that FP as far away, ``-A_FP``.)
* **Probation** (``nab/util.py``, ``getProbationPeriod``): the first
  ``min(floor(0.15 n), 0.15 * 5000)`` rows are never scored. NAB's summaries say "15%";
  the code also caps it at 750 rows, which matters for files longer than 5000 rows. A window
  whose rows all fall in the probationary period is not scored at all (neither TP nor FN).
* **Normalisation** (``nab/runner.py``, ``normalize``): raw scores are summed over all files
  of the corpus, then ``100 * (raw - null) / (perfect - null)``, where the null detector never
  alarms (``null = -A_FN`` per scored window) and the perfect detector alarms at the first row
  of every window (``perfect = A_TP`` per window). NAB counts every labelled window in the
  perfect score; we count the scored ones, which is the same unless a window lies wholly in
  the probationary period (then ours still gives a perfect detector 100).

Windows are matched to rows the way NAB walks a stream: a window opens at the first row whose
timestamp is at or after its start and closes at the next row stamped with its end (or at the
row before the first one past its end). NAB's windows start and end on row timestamps, where
this is NAB's own exact matching. It also copes with the repeated or slightly backward
timestamps a few NAB files contain (daylight-saving artefacts), so timestamps need not be
sorted here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edge_agent.csvdata import parse_timestamp

from .metrics import as_binary

__all__ = ["Window", "Profile", "STANDARD", "REWARD_LOW_FP_RATE", "REWARD_LOW_FN_RATE",
           "PROFILES", "PROBATION_FRACTION", "scaled_sigmoid", "probation_rows", "WindowResult",
           "FalsePositive", "FileScore", "score_file", "BenchmarkScore", "score_benchmark",
           "normalise", "resampled_interval", "load_windows"]

PROBATION_FRACTION = 0.15
#: NAB caps the probationary period at ``fraction * PROBATION_CAP_ROWS`` rows.
PROBATION_CAP_ROWS = 5000
#: Beyond this relative position NAB's sigmoid is exactly -1 (a far-away false positive).
_FAR = 3.0


@dataclass(frozen=True)
class Window:
    """A labelled anomaly window, inclusive at both ends, in seconds since the epoch."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.start <= self.end:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class Profile:
    """An application profile: how much a true positive, false positive and miss weigh."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


# Weights from numenta/NAB config/profiles.json (see the module docstring).
STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
REWARD_LOW_FP_RATE = Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0)
REWARD_LOW_FN_RATE = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, REWARD_LOW_FP_RATE,
                                                     REWARD_LOW_FN_RATE)}


def scaled_sigmoid(position: float) -> float:
    """NAB's scoring curve: near +1 early in a window, 0 at its end, toward -1 after it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.98661, 0.0, -1.0)
    """
    if position > _FAR:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """How many leading rows NAB leaves unscored: ``fraction`` of the file, at most
    ``fraction * 5000`` rows (750 for the usual 15%).

    >>> probation_rows(4032), probation_rows(22695)
    (604, 750)
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"probation fraction must be within [0, 1], got {fraction}")
    # Row i is scored when i >= min(floor(f n), f * 5000); for whole rows that is the ceiling.
    return min(math.floor(fraction * n_rows), math.ceil(fraction * PROBATION_CAP_ROWS))


def normalise(raw: float, null: float, perfect: float) -> float:
    """NAB's normalised score: 0 for the null detector, 100 for the perfect one.

    >>> normalise(-1.0, null=-2.0, perfect=2.0)
    25.0
    """
    if perfect == null:
        raise ValueError("nothing to normalise against: no anomaly window was scored")
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class WindowResult:
    """How one window was scored.

    ``first_row``/``last_row`` are the rows it covers (``None`` if no row falls inside it);
    ``scored`` is False when it has no rows or all of them are in the probationary period, and
    then ``score`` is 0. ``detection_row`` and ``position`` describe the detection that counted,
    ``None`` for a miss.
    """

    window: Window
    first_row: int | None
    last_row: int | None
    scored: bool
    detection_row: int | None
    position: float | None
    score: float

    @property
    def detected(self) -> bool:
        return self.detection_row is not None


@dataclass(frozen=True)
class FalsePositive:
    """A scored detection outside every window; ``position`` is relative to the preceding
    window (``None`` when there is none, infinite after a one-row window)."""

    row: int
    position: float | None
    score: float


@dataclass(frozen=True)
class FileScore:
    """One file's NAB score under one profile.

    ``tp`` and ``fn`` count windows (detected, missed); ``fp`` counts false-positive rows.
    ``null`` and ``perfect`` are what the silent and the perfect detector would score on this
    file, so files can be pooled before normalising.
    """

    profile: Profile
    raw: float
    null: float
    perfect: float
    tp: int
    fn: int
    fp: int
    probation_rows: int
    windows: tuple[WindowResult, ...]
    false_positives: tuple[FalsePositive, ...]


def _sorted_windows(windows: Iterable[Window]) -> list[Window]:
    """Windows in time order, refusing overlaps (NAB's windows never overlap, and a detection
    must belong to one window only)."""
    ordered = sorted(windows, key=lambda w: (w.start, w.end))
    for before, after in zip(ordered, ordered[1:]):
        if after.start <= before.end:
            raise ValueError(f"anomaly windows overlap: {before} and {after}")
    return ordered


def _window_result(window: Window, first: int, last: int, hits: np.ndarray, probation: int,
                   profile: Profile) -> WindowResult:
    """Score one window from the detection flags of the whole file."""
    if last < probation:
        return WindowResult(window, first, last, False, None, None, 0.0)
    lo = max(first, probation)
    found = np.flatnonzero(hits[lo:last + 1])
    if found.size == 0:
        return WindowResult(window, first, last, True, None, None, -profile.fn_weight)
    row = lo + int(found[0])
    width = last - first + 1
    position = -(last - row + 1) / width
    score = profile.tp_weight * scaled_sigmoid(position) / _MAX_TP
    return WindowResult(window, first, last, True, row, position, score)


def _window_rows(times: np.ndarray, window: Window) -> tuple[int, int] | None:
    """First and last row of ``window`` in stream order, or None if no row falls inside it."""
    opened = np.flatnonzero(times >= window.start)
    if opened.size == 0 or times[opened[0]] > window.end:
        return None
    first = int(opened[0])
    reached = np.flatnonzero(times[first:] >= window.end)
    if reached.size == 0:
        return first, times.size - 1
    last = first + int(reached[0])
    return first, last if times[last] == window.end else last - 1


def _false_positive(row: int, spans: Sequence[tuple[int, int]],
                    profile: Profile) -> FalsePositive:
    """Score a detection outside every window by its distance past the preceding window."""
    preceding = [(last, last - first + 1) for first, last in spans if last < row]
    if not preceding:
        return FalsePositive(row, None, -profile.fp_weight)
    last, width = max(preceding)
    if width <= 1:
        return FalsePositive(row, math.inf, -profile.fp_weight)
    position = (row - last) / (width - 1)
    return FalsePositive(row, position, profile.fp_weight * scaled_sigmoid(position))


def score_file(timestamps: Sequence[float] | np.ndarray,
               detections: Sequence[bool] | np.ndarray,
               windows: Iterable[Window],
               profile: Profile = STANDARD,
               probation_fraction: float = PROBATION_FRACTION) -> FileScore:
    """Score one file's detections (one flag per row) against its anomaly windows.

    ``timestamps`` are seconds since the epoch in file order (see the module docstring for
    how windows find their rows); ``detections`` are the rows where the detector raised an
    alarm.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    hits = as_binary(detections, "detections")
    if times.ndim != 1 or times.shape != hits.shape:
        raise ValueError(f"timestamps ({times.size} rows) and detections ({hits.size} rows) "
                         "differ in length")
    if not np.all(np.isfinite(times)):
        raise ValueError("timestamps must be finite")
    probation = probation_rows(times.size, probation_fraction)

    results: list[WindowResult] = []
    inside = np.zeros(times.size, dtype=bool)
    spans: list[tuple[int, int]] = []
    for window in _sorted_windows(windows):
        span = _window_rows(times, window)
        if span is None:
            results.append(WindowResult(window, None, None, False, None, None, 0.0))
            continue
        first, last = span
        spans.append(span)
        inside[first:last + 1] = True
        results.append(_window_result(window, first, last, hits, probation, profile))

    fp_rows = np.flatnonzero(hits & ~inside)
    false_positives = tuple(_false_positive(int(row), spans, profile)
                            for row in fp_rows[fp_rows >= probation])

    scored = [r for r in results if r.scored]
    detected = sum(1 for r in scored if r.detected)
    return FileScore(
        profile=profile,
        raw=sum(r.score for r in scored) + sum(fp.score for fp in false_positives),
        null=-profile.fn_weight * len(scored),
        perfect=profile.tp_weight * len(scored),
        tp=detected,
        fn=len(scored) - detected,
        fp=len(false_positives),
        probation_rows=probation,
        windows=tuple(results),
        false_positives=false_positives,
    )


@dataclass(frozen=True)
class BenchmarkScore:
    """A corpus's pooled NAB score under one profile (what NAB's scoreboard reports)."""

    profile: Profile
    raw: float
    null: float
    perfect: float
    normalised: float
    tp: int
    fn: int
    fp: int
    files: int


def score_benchmark(file_scores: Iterable[FileScore]) -> BenchmarkScore:
    """Sum the files' raw, null and perfect scores, then normalise the totals.

    Pooling before normalising (as NAB does) weighs each window equally, whichever file it is
    in; averaging per-file normalised scores would not, and is undefined for a file without
    windows.
    """
    scores = list(file_scores)
    if not scores:
        raise ValueError("no file scores to combine")
    profile = scores[0].profile
    if any(s.profile != profile for s in scores):
        raise ValueError("file scores were computed with different profiles")
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return BenchmarkScore(
        profile=profile,
        raw=raw,
        null=null,
        perfect=perfect,
        normalised=normalise(raw, null, perfect),
        tp=sum(s.tp for s in scores),
        fn=sum(s.fn for s in scores),
        fp=sum(s.fp for s in scores),
        files=len(scores),
    )


def resampled_interval(file_scores: Sequence[FileScore], level: float = 0.9,
                       draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """How much a pooled score owes to *which* files were scored: the central ``level``
    interval of the pooled normalised score over ``draws`` resamples of the files, drawn with
    replacement (a bootstrap over files; the same seed gives the same interval).

    A corpus of a dozen files is a small sample: one file that a setting suits or does not
    moves the pooled score by several points. Two files, one perfect and one silent, pool to
    100, 50 or 0 with chances 1/4, 1/2, 1/4:

    >>> perfect = FileScore(STANDARD, 1.0, -1.0, 1.0, 1, 0, 0, 0, (), ())
    >>> silent = FileScore(STANDARD, -1.0, -1.0, 1.0, 0, 1, 0, 0, (), ())
    >>> resampled_interval([perfect, silent])
    (0.0, 100.0)
    >>> resampled_interval([perfect, silent], level=0.4)
    (50.0, 50.0)
    """
    if not file_scores:
        raise ValueError("no file scores to resample")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    raw, null, perfect = (np.array([getattr(s, k) for s in file_scores], dtype=np.float64)
                          for k in ("raw", "null", "perfect"))
    picks = np.random.default_rng(seed).integers(0, len(file_scores),
                                                 size=(draws, len(file_scores)))
    span = perfect[picks].sum(axis=1) - null[picks].sum(axis=1)
    pooled = np.where(span > 0, 100.0 * (raw[picks].sum(axis=1) - null[picks].sum(axis=1))
                      / np.where(span > 0, span, 1.0), np.nan)
    pooled = pooled[~np.isnan(pooled)]  # draws of windowless files only have no score
    tail = (1.0 - level) / 2
    low, high = np.quantile(pooled, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def load_windows(path: str | Path) -> dict[str, list[Window]]:
    """Read NAB's ``combined_windows.json``: relative data path -> windows in time order.

    The file maps paths like ``"realKnownCause/nyc_taxi.csv"`` to lists of
    ``[start, end]`` timestamp strings (``"2014-11-01 19:00:00.000000"``, taken as UTC like
    every naive timestamp in this project).
    """
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object mapping file paths to windows")
    windows: dict[str, list[Window]] = {}
    for name, limits in document.items():
        if not isinstance(limits, list):
            raise ValueError(f"{path}: windows of {name!r} must be a list")
        parsed = []
        for limit in limits:
            if not (isinstance(limit, list) and len(limit) == 2
                    and all(isinstance(t, str) for t in limit)):
                raise ValueError(f"{path}: window of {name!r} must be [start, end] text, "
                                 f"got {limit!r}")
            try:
                parsed.append(Window(parse_timestamp(limit[0]), parse_timestamp(limit[1])))
            except ValueError as error:
                raise ValueError(f"{path}: window {limit!r} of {name!r}: {error}") from error
        windows[name] = _sorted_windows(parsed)
    return windows
