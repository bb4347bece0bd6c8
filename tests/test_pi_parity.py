"""scripts/pi_parity.py: the record's format, its determinism, and that compare catches a bit.

pi-check trusts these records to prove bit-identity between x86 and emulated arm64, so a
record must be reproducible on one machine, cover every reading, and a single flipped bit must
make the comparison fail.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pi_parity.py"
READINGS = 1100  # past the first fault (60 s at 10 Hz), so the record holds alerts


def _load():
    spec = importlib.util.spec_from_file_location("pi_parity", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pp = _load()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pp.make_csv(tmp_path_factory.mktemp("pi-parity") / "rec.csv", readings=READINGS)


@pytest.fixture(scope="module")
def records(recording: Path) -> tuple[dict, dict]:
    return pp.run(recording), pp.run(recording)


def test_hex_encodings_are_exact_round_trips() -> None:
    values = np.array([0.0, -0.0, 1.0, np.float32(0.1), -3.4e38, 1e-45], dtype=np.float32)
    encoded = pp.f32_hex(values)
    assert encoded[:3] == ["00000000", "80000000", "3f800000"]
    assert [pp.hex_f32(h) for h in encoded] == [float(v) for v in values]
    for value in (0.1, -2.5e-300, 1.0 / 3.0):
        assert pp.hex_f64(pp.f64_hex(value)) == value
        assert len(pp.f64_hex(value)) == 16


def test_record_format(records: tuple[dict, dict], recording: Path) -> None:
    rec = records[0]
    assert rec["format"] == pp.FORMAT
    assert rec["input"]["readings"] == READINGS
    assert rec["input"]["sha256"] == pp.sha256_file(recording)
    assert rec["host"]["runtime"]["name"] in {"ai-edge-litert", "tflite-runtime"}
    assert rec["host"]["machine"] and rec["host"]["python"]
    n_features = len(rec["input"]["features"])
    assert len(rec["forecasts"]) == READINGS
    hex8, hex16 = re.compile(r"^[0-9a-f]{8}$"), re.compile(r"^[0-9a-f]{16}$")
    for row in rec["outputs"]:  # the int8 model's raw float32 outputs
        assert len(row) == n_features and all(hex8.match(h) for h in row)
    for row in rec["forecasts"]:  # completed forecasts, float64 as the detector holds them
        assert len(row) == n_features and all(hex16.match(h) for h in row)
    assert len(rec["detector"]) == READINGS
    scored = [row for row in rec["detector"] if row["score"] is not None]
    assert scored, "the detector never scored a reading"
    for row in scored:
        assert hex16.match(row["score"])
        assert len(row["expected"]) == n_features and all(hex16.match(h) for h in row["expected"])
    assert {row["status"] for row in rec["detector"]} <= {"warming_up", "normal", "anomalous"}
    # The detector steps the same model over the same inputs: identical forecasts.
    assert rec["self_check"]["detector_next_equals_model_run"]
    assert [row["next"] for row in rec["detector"]] == rec["forecasts"]
    assert rec["alerts"], "the bearing fault should raise alerts"
    assert rec["alerts"][0]["type"] == "start"
    indices = [a["index"] for a in rec["alerts"]]
    assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < READINGS
    for alert in rec["alerts"]:
        assert alert["type"] in {"start", "update", "end"} and alert["alert_id"]
        assert pp.hex_f64(alert["score"]) == alert["score_value"]
    learning = rec["learning"]  # every part that learns per stream, each of them scored
    assert len(learning["detector"]) == READINGS
    for part in ("level", "seasonal", "adaptive"):
        rows = [row[part] for row in learning["detector"] if row[part] is not None]
        assert rows and all(len(r) == n_features and all(hex16.match(h) for h in r)
                            for r in rows), part
    assert learning["alerts"] and all(len(a["basis"]) == len(a["top_features"])
                                      for a in learning["alerts"])
    # The learning pass has part histories: some alert says a history lifted its score.
    assert {a["lifted_by"] for a in learning["alerts"]} - {None}
    assert rec["digest"] == pp.digest(rec)
    for kind in ("model_step", "detector_process"):
        assert rec["latency_us"][kind]["n"] > 0 and rec["latency_us"][kind]["median"] > 0
    json.dumps(rec)  # plain JSON throughout


def test_records_are_deterministic(records: tuple[dict, dict]) -> None:
    first, second = records
    for key in pp.COMPARED + ("digest", "self_check"):
        assert first[key] == second[key], key
    summary = pp.compare(first, second)
    assert summary["ok"] and summary["bit_identical"] and summary["scores_identical"]
    assert summary["forecasts_identical"] and summary["detector_identical"]
    assert summary["alert_decisions_matched"] == summary["alerts_bit_identical"] == len(
        first["alerts"])
    assert summary["forecast_max_abs_diff"] == 0.0
    assert "bit-identical     yes" in pp.format_summary(summary)


def test_compare_catches_one_flipped_bit(records: tuple[dict, dict]) -> None:
    native = records[0]
    flipped = copy.deepcopy(native)
    row = flipped["outputs"][700]
    row[0] = f"{int(row[0], 16) ^ 1:08x}"  # one LSB of one forecast
    flipped["digest"] = pp.digest(flipped)
    summary = pp.compare(native, flipped)
    assert not summary["ok"] and not summary["forecasts_identical"]
    assert summary["forecast_rows_differing"] == 1
    assert 0 < summary["forecast_max_abs_diff"] < 1e-5

    moved = copy.deepcopy(native)
    moved["alerts"][0]["index"] += 1
    moved["digest"] = pp.digest(moved)
    summary = pp.compare(native, moved)
    assert not summary["ok"] and summary["alert_decisions_matched"] < len(native["alerts"])

    relabelled = copy.deepcopy(native)  # the same alert, said to be lifted by another history
    first = relabelled["alerts"][0]
    first["lifted_by"] = "level_history" if first["lifted_by"] is None else None
    relabelled["digest"] = pp.digest(relabelled)
    summary = pp.compare(native, relabelled)
    assert not summary["ok"] and summary["alert_decisions_matched"] < len(native["alerts"])

    adaptive = copy.deepcopy(native)  # one bit of one adaptive part of the learning pass
    row = next(r for r in adaptive["learning"]["detector"][600:] if r["adaptive"] is not None)
    row["adaptive"][0] = f"{int(row['adaptive'][0], 16) ^ 1:016x}"
    adaptive["digest"] = pp.digest(adaptive)
    summary = pp.compare(native, adaptive)
    assert not summary["ok"] and summary["learning_rows_differing"] == 1
    assert "learning parts    NO" in pp.format_summary(summary)

    stale = copy.deepcopy(native)
    stale["detector"][500]["status"] = "anomalous"  # edited without updating the digest
    assert not pp.compare(native, stale)["ok"]


def test_command_line(recording: Path, records: tuple[dict, dict], tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "run", "--csv", str(recording),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["digest"] == records[0]["digest"]
    other = tmp_path / "other.json"
    tampered = copy.deepcopy(records[0])
    tampered["outputs"][3][1] = f"{int(tampered['outputs'][3][1], 16) ^ 1:08x}"
    tampered["digest"] = pp.digest(tampered)
    other.write_text(json.dumps(tampered))
    same = subprocess.run([sys.executable, str(SCRIPT), "compare", str(out), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "bit-identical     yes" in same.stdout
    differ = subprocess.run([sys.executable, str(SCRIPT), "compare", str(out), str(other),
                             "--summary", str(tmp_path / "s.json")],
                            capture_output=True, text=True, timeout=60)
    assert differ.returncode == 1 and "bit-identical     NO" in differ.stdout
    assert json.loads((tmp_path / "s.json").read_text())["forecast_rows_differing"] == 1


def _with_score(record: dict, row: int, delta_bits: int) -> dict:
    changed = copy.deepcopy(record)
    bits = int(changed["detector"][row]["score"], 16) + delta_bits
    changed["detector"][row]["score"] = f"{bits:016x}"
    changed["digest"] = pp.digest(changed)
    return changed


def test_score_rounding_is_reported_and_tolerated_unless_strict(records: tuple[dict, dict]
                                                                ) -> None:
    native = records[0]
    row = next(i for i, r in enumerate(native["detector"]) if r["score"] is not None)
    last_bit = _with_score(native, row, 1)
    summary = pp.compare(native, last_bit)
    assert summary["ok"] and not summary["bit_identical"]
    assert summary["score_rows_differing"] == 1 and summary["score_max_ulp"] == 1
    assert "strict would fail" in pp.format_summary(summary)
    assert not pp.compare(native, last_bit, strict=True)["ok"]
    far = _with_score(native, row, 1 << 40)  # a real divergence, not rounding
    assert not pp.compare(native, far)["ok"]
