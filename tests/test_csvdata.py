"""The shared CSV reader: every bad-data case gets its own message naming file, row, column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.csvdata import CsvSpec, read_csv, read_recordings, sample_period
from edge_agent.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "timestamp,a,b,anomaly\n2026-01-01T00:00:00Z,1,2,0\n2026-01-01T00:00:01Z,3,4,1\n" \
       "2026-01-01T00:00:02Z,5,6,0\n"


def test_reads_features_timestamps_and_labels(tmp_path: Path) -> None:
    rec = read_csv(write(tmp_path / "g.csv", GOOD))
    assert rec.features == ["a", "b"]
    assert rec.values.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert rec.labels["anomaly"].tolist() == [0, 1, 0]
    assert np.diff(rec.timestamps).tolist() == [1.0, 1.0]
    assert rec.rows.tolist() == [2, 3, 4]
    assert sample_period([rec]) == 1.0


def test_semicolon_separator_is_detected(tmp_path: Path) -> None:
    text = "datetime;Current;Pressure;anomaly;changepoint\n2020-03-09 10:14:33;1.3;0.05;0;0\n" \
           "2020-03-09 10:14:34;1.35;0.38;0;0\n"
    rec = read_csv(write(tmp_path / "s.csv", text))
    assert rec.features == ["Current", "Pressure"]
    assert set(rec.labels) == {"anomaly", "changepoint"}


def test_named_features_keep_the_given_order(tmp_path: Path) -> None:
    rec = read_csv(write(tmp_path / "g.csv", GOOD), CsvSpec(features=["b", "a"]))
    assert rec.values[0].tolist() == [2, 1]


def test_text_columns_are_not_default_features(tmp_path: Path) -> None:
    text = "timestamp,id,a\n1,robot-1,1.5\n2,robot-1,2.5\n"
    assert read_csv(write(tmp_path / "t.csv", text)).features == ["a"]


@pytest.mark.parametrize("text, spec, expected", [
    ("timestamp,a\n1,1\n2,2\n", CsvSpec(features=["a", "zz"]),
     "row 1: missing feature column(s) ['zz']"),
    ("t,a\n1,1\n2,2\n", CsvSpec(timestamp_column="time"), "row 1: missing timestamp column 'time'"),
    ("timestamp,a\n1,1\n2,abc\n3,3\n", CsvSpec(), "row 3, column 'a': non-numeric value 'abc'"),
    ("timestamp,a\n1,1\n2,\n3,3\n", CsvSpec(), "row 3, column 'a': missing, NaN or infinite"),
    ("timestamp,a\n1,1\n2,inf\n3,3\n", CsvSpec(), "row 3, column 'a': missing, NaN or infinite"),
    ("timestamp,a\n1,nan\n2,2\n", CsvSpec(nan_policy="ffill"),
     "row 2, column 'a': missing value 'nan' with no earlier row to forward-fill from"),
    ("timestamp,a\n1,1\n", CsvSpec(min_rows=2), "too few rows: 1 usable, at least 2 needed"),
    ("timestamp,a\n1,1\n3,3\n2,2\n", CsvSpec(),
     "row 4, column 'timestamp': timestamp '2' is not after the previous row's"),
    ("timestamp,a\n1,1\n1,2\n", CsvSpec(), "row 3, column 'timestamp': timestamp '1' is not after"),
    ("timestamp,a\n1,1\n2,2,9\n", CsvSpec(), "row 3: has 3 fields, the header has 2"),
    ("timestamp,a\nyesterday,1\n2,2\n", CsvSpec(), "row 2, column 'timestamp': unreadable timestamp"),
    ("timestamp,a,a\n1,1,1\n", CsvSpec(), "row 1: column 'a' appears twice"),
    ("", CsvSpec(), "the file is empty"),
])
def test_bad_data_is_named_by_file_row_and_column(tmp_path: Path, text: str, spec: CsvSpec,
                                                  expected: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as info:
        read_csv(path, spec)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_nan_policies_drop_and_ffill(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", "timestamp,a,b\n1,1,10\n2,NaN,20\n3,3,\n4,4,40\n")
    dropped = read_csv(path, CsvSpec(nan_policy="drop"))
    assert dropped.values.tolist() == [[1, 10], [4, 40]]
    assert dropped.rows.tolist() == [2, 5]
    assert dropped.timestamps.tolist() == [1, 4]
    filled = read_csv(path, CsvSpec(nan_policy="ffill"))
    assert filled.values.tolist() == [[1, 10], [1, 20], [3, 20], [4, 40]]


def test_several_files_stay_separate_sequences(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    write(folder / "1.csv", GOOD)
    write(folder / "2.csv", GOOD.replace("2026", "2027"))
    recs = read_recordings([folder])
    assert [Path(r.path).name for r in recs] == ["1.csv", "2.csv"]
    assert [len(r) for r in recs] == [3, 3]
    assert len(read_recordings([str(folder / "*.csv")])) == 2


def test_files_with_different_features_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "1.csv", GOOD)
    write(tmp_path / "2.csv", "timestamp,a\n1,1\n2,2\n")
    with pytest.raises(DataError, match="feature columns"):
        read_recordings([tmp_path])


def test_missing_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        read_recordings([tmp_path / "nope.csv"])
    with pytest.raises(DataError, match="pattern matches no files"):
        read_recordings([str(tmp_path / "*.csv")])
