"""Read sensor recordings from CSV files, rejecting bad data with its file, row and column.

One reader serves the trainer (training history), the evaluator (labelled recordings) and the
agent's ``replay`` command, so a file that one accepts the others accept too, and a bad file
gets the same message everywhere. Each file is one recording: several files are separate
sequences and are never joined into one fake sequence.

Row numbers in messages are the file's line numbers (the header is line 1), so an editor jumps
straight to the problem.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from .errors import DataError

NanPolicy = Literal["drop", "ffill", "fail"]

#: Cells read as "no value" (subject to the NaN policy) rather than as non-numeric text.
MISSING_TOKENS = frozenset({"", "nan", "-nan", "+nan", "na", "n/a", "null", "none", "inf", "+inf",
                            "-inf", "infinity", "+infinity", "-infinity"})
#: Column names taken as the timestamp when ``timestamp_column`` is ``"auto"``.
TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "date", "ts")
SEPARATORS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class CsvSpec:
    """How to read a recording.

    ``timestamp_column`` is a column name, ``"auto"`` (the first column named like a
    timestamp, if any) or ``None`` (the file has no timestamps). ``features`` ``None`` means
    every numeric column except the timestamp and the label columns.
    """

    separator: str | None = None
    timestamp_column: str | None = "auto"
    features: Sequence[str] | None = None
    label_columns: Sequence[str] = ("anomaly", "changepoint", "label", "is_anomaly")
    nan_policy: NanPolicy = "fail"
    min_rows: int = 2


@dataclass
class Recording:
    """One file's readings: values (n, features) in float64, optional timestamps and labels."""

    path: str
    features: list[str]
    values: np.ndarray
    timestamps: np.ndarray | None
    rows: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def slice(self, start: int, stop: int | None = None) -> "Recording":
        """The readings ``start:stop`` as a recording of their own (same file)."""
        sl = slice(start, stop)
        return Recording(
            path=self.path,
            features=self.features,
            values=self.values[sl],
            timestamps=None if self.timestamps is None else self.timestamps[sl],
            rows=self.rows[sl],
            labels={k: v[sl] for k, v in self.labels.items()},
        )


def detect_separator(header_line: str) -> str:
    """The separator that splits the header into the most fields.

    >>> detect_separator("datetime;a;b;c")
    ';'
    >>> detect_separator("timestamp,value")
    ','
    """
    counts = {sep: header_line.count(sep) for sep in SEPARATORS}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > 0 else ","


def epoch_seconds(number: float) -> float:
    """Seconds since the epoch from an epoch number in seconds or milliseconds.

    >>> epoch_seconds(1700000000), epoch_seconds(1700000000500)
    (1700000000.0, 1700000000.5)
    """
    number = float(number)
    if not math.isfinite(number):
        raise ValueError(f"timestamp {number!r} is not finite")
    return number / 1000.0 if abs(number) > 1e11 else number


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch from ISO 8601 text or an epoch number (s or ms).

    Naive ISO times are taken as UTC, so the same file gives the same numbers on every machine.

    >>> parse_timestamp("1970-01-01T00:01:00Z")
    60.0
    >>> parse_timestamp("1970-01-01 00:00:02")
    2.0
    >>> parse_timestamp("1700000000000")
    1700000000.0
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return epoch_seconds(number)
    moment = datetime.fromisoformat(text)  # Python 3.11+ reads a trailing 'Z' too
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _cell_number(text: str) -> float | None:
    """A finite float, ``None`` for a missing/NaN/Inf cell; raises ValueError for text."""
    stripped = text.strip()
    if stripped.lower() in MISSING_TOKENS:
        return None
    value = float(stripped)
    return value if math.isfinite(value) else None


def _choose_columns(header: list[str], first_row: list[str] | None, spec: CsvSpec, path: str
                    ) -> tuple[str | None, list[str], list[str]]:
    """Timestamp column, feature columns and label columns present in ``header``."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"column {name!r} appears twice in the header", file=path, row=1)
        seen.add(name)
    if spec.timestamp_column == "auto":
        lowered = {name.lower(): name for name in header}
        ts_col = next((lowered[n] for n in TIMESTAMP_NAMES if n in lowered), None)
    else:
        ts_col = spec.timestamp_column
        if ts_col is not None and ts_col not in seen:
            raise DataError(f"missing timestamp column {ts_col!r} (header has {header}; "
                            f"the timestamp column may also be 'auto', which finds "
                            f"{'/'.join(TIMESTAMP_NAMES)}, or null for none)", file=path, row=1)
    labels = [name for name in spec.label_columns if name in seen]
    if spec.features is not None:
        missing = [name for name in spec.features if name not in seen]
        if missing:
            raise DataError(f"missing feature column(s) {missing} (header has {header})",
                            file=path, row=1)
        return ts_col, list(spec.features), labels
    features = []
    for i, name in enumerate(header):
        if name == ts_col or name in labels:
            continue
        if first_row is not None and i < len(first_row):
            try:
                _cell_number(first_row[i])
            except ValueError:
                continue  # a text column (an id, a comment): not a feature unless named
        features.append(name)
    if not features:
        raise DataError(f"no numeric feature columns (header has {header})", file=path, row=1)
    return ts_col, features, labels


def read_csv(path: str | os.PathLike[str], spec: CsvSpec = CsvSpec()) -> Recording:
    """Read one CSV file as a recording, or raise :class:`DataError` naming the bad cell."""
    path = str(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror or exc}", file=path) from exc
    with handle:
        header_line = handle.readline()
        if not header_line.strip():
            raise DataError("the file is empty (no header line)", file=path, row=1)
        separator = spec.separator or detect_separator(header_line)
        header = [name.strip() for name in next(csv.reader([header_line], delimiter=separator))]
        try:
            rows = list(csv.reader(handle, delimiter=separator))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"not a readable CSV file: {exc}", file=path) from exc
    first = next((r for r in rows if r), None)
    ts_col, features, label_cols = _choose_columns(header, first, spec, path)
    index = {name: i for i, name in enumerate(header)}
    feat_idx = [index[name] for name in features]
    label_idx = [index[name] for name in label_cols]
    ts_idx = index[ts_col] if ts_col is not None else None

    values: list[list[float]] = []
    stamps: list[float] = []
    labels: list[list[float]] = []
    line_numbers: list[int] = []
    previous: list[float] | None = None
    for offset, cells in enumerate(rows):
        line = offset + 2
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        if len(cells) != len(header):
            raise DataError(f"has {len(cells)} fields, the header has {len(header)}",
                            file=path, row=line)
        row_values: list[float] = []
        missing_at: str | None = None
        for name, i in zip(features, feat_idx):
            try:
                number = _cell_number(cells[i])
            except ValueError:
                raise DataError(f"non-numeric value {cells[i]!r}", file=path, row=line,
                                column=name) from None
            if number is None:
                if spec.nan_policy == "fail":
                    raise DataError(f"missing, NaN or infinite value {cells[i]!r} "
                                    "(nan_policy is 'fail'; use 'drop' or 'ffill' to accept it)",
                                    file=path, row=line, column=name)
                if spec.nan_policy == "ffill":
                    if previous is None:
                        raise DataError(f"missing value {cells[i]!r} with no earlier row to "
                                        "forward-fill from", file=path, row=line, column=name)
                    number = previous[len(row_values)]
                else:
                    missing_at = name
            row_values.append(number if number is not None else math.nan)
        if missing_at is not None:
            continue  # nan_policy 'drop': the whole row goes, timestamps and labels with it
        if ts_idx is not None:
            try:
                stamp = parse_timestamp(cells[ts_idx])
            except ValueError:
                raise DataError(f"unreadable timestamp {cells[ts_idx]!r} (expected ISO 8601 "
                                "or epoch seconds)", file=path, row=line, column=ts_col) from None
            if stamps and stamp <= stamps[-1]:
                raise DataError(f"timestamp {cells[ts_idx]!r} is not after the previous row's; "
                                "timestamps must increase strictly", file=path, row=line,
                                column=ts_col)
            stamps.append(stamp)
        row_labels = []
        for name, i in zip(label_cols, label_idx):
            try:
                number = _cell_number(cells[i])
            except ValueError:
                raise DataError(f"non-numeric label {cells[i]!r}", file=path, row=line,
                                column=name) from None
            row_labels.append(0.0 if number is None else number)
        values.append(row_values)
        labels.append(row_labels)
        line_numbers.append(line)
        previous = row_values
    if len(values) < spec.min_rows:
        raise DataError(f"too few rows: {len(values)} usable, at least {spec.min_rows} needed",
                        file=path)
    label_array = np.asarray(labels, dtype=np.float64).reshape(len(values), len(label_cols))
    return Recording(
        path=path,
        features=features,
        values=np.asarray(values, dtype=np.float64),
        timestamps=np.asarray(stamps, dtype=np.float64) if ts_idx is not None else None,
        rows=np.asarray(line_numbers, dtype=np.int64),
        labels={name: label_array[:, j] for j, name in enumerate(label_cols)},
    )


def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named by ``sources``: files as given, folders as their ``*.csv`` (recursively,
    sorted), glob patterns expanded. Raises :class:`DataError` when nothing matches."""
    files: list[Path] = []
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.csv") if p.is_file())
            if not found:
                raise DataError("folder holds no .csv files", file=text)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise DataError("pattern matches no files", file=text)
            files.extend(found)
        else:
            raise DataError("no such file or folder", file=text)
    return files


def read_recordings(sources: Iterable[str | os.PathLike[str]], spec: CsvSpec = CsvSpec()
                    ) -> list[Recording]:
    """Read every file named by ``sources``; all must share the same feature columns."""
    recordings = [read_csv(path, spec) for path in expand_sources(sources)]
    if recordings:
        first = recordings[0]
        for rec in recordings[1:]:
            if rec.features != first.features:
                raise DataError(f"feature columns {rec.features} differ from {first.features} "
                                f"in {first.path}; name the features in the config",
                                file=rec.path, row=1)
    return recordings


def sample_period(recordings: Sequence[Recording]) -> float | None:
    """The median interval between consecutive timestamps over all recordings, in seconds."""
    diffs = [np.diff(rec.timestamps) for rec in recordings
             if rec.timestamps is not None and len(rec.timestamps) > 1]
    if not diffs:
        return None
    # Epoch floats make 0.1 s come out as 0.0999999: timestamps carry microseconds at best.
    return round(float(np.median(np.concatenate(diffs))), 6)
