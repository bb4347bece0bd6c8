#!/usr/bin/env python3
"""Bit-exact parity record of the agent on one machine, and the comparison of two records.

``scripts/pi-check`` runs this on the x86 host and inside an emulated arm64 Raspberry Pi OS
root filesystem over the *same* recorded CSV, then compares the two JSON records. Only the
agent's API is used (no TensorFlow), exactly as the device runs it.

Subcommands::

    pi_parity.py make-csv OUT.csv [--readings N] [--seed S]     # host only: the recording
    pi_parity.py run --csv IN.csv --out OUT.json [--bundle DIR]  # on each machine
    pi_parity.py compare NATIVE.json EMULATED.json [--strict] [--summary S.json]

What a record holds (``format`` = ``edge-anomaly-pi-parity/3``):

* ``outputs``: the int8 model's raw outputs (``StatefulModel.run`` on the normalised
  inputs), one list per reading of float32 bit patterns as 8 hex digits;
* ``forecasts``: the completed next-step forecasts (for a model that outputs the change, the
  output plus the reading, in float64 as the detector does), float64 bits (16 hex digits);
* ``detector``: for every reading, the detector's own next-step forecast, its ``expected``
  values in raw units and its smoothed score (float64 bits, or null while warming up), and its
  status;
* ``alerts``: every alert event with its type, id, reading index, time, score and what
  lifted the score (``lifted_by``);
* ``learning``: ``detector`` and ``alerts`` again for the same bundle with every part that
  learns per stream switched on (:mod:`edge_agent.learning`), each reading's level, seasonal
  and adaptive parts per feature too, and each alert's bases; compared bit for bit, scores
  included (these parts are plain float arithmetic);
* ``digest``: sha256 over everything above, so two records agree bit for bit exactly when
  their digests are equal;
* ``latency_us`` and ``host``: informational (never compared).

The recording is read, never regenerated, on the emulated side: the simulator uses libm,
whose last bits may differ between architectures, and the inputs must be identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "edge-anomaly-pi-parity/3"
ROOT = Path(__file__).resolve().parent.parent
#: Keys of a record that must be identical on every machine (``digest`` covers them).
COMPARED = ("input", "bundle", "outputs", "forecasts", "detector", "alerts", "learning")
#: The default recording: 360 s at 10 Hz of one simulated joint with three faults.
DEFAULT_READINGS = 3600
DEFAULT_SEED = 5
DEFAULT_FAULTS = (("bearing", 60.0, 40.0), ("stuck_sensor", 150.0, 30.0),
                  ("overheat", 240.0, 60.0))


def _import_agent() -> Any:
    """The installed agent package; the checkout's copy when none is installed."""
    try:
        import edge_agent
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import edge_agent
    return edge_agent


def default_bundle() -> Path:
    """The demo bundle shipped inside the (installed) agent package."""
    return Path(_import_agent().__file__).resolve().parent / "demo_bundle"


# -- exact encodings -------------------------------------------------------------------------
def f32_hex(values: np.ndarray) -> list[str]:
    """float32 values as their IEEE-754 bit patterns (8 hex digits each).

    >>> f32_hex(np.array([1.0, -2.5]))
    ['3f800000', 'c0200000']
    """
    bits = np.ascontiguousarray(values, dtype="<f4").reshape(-1).view("<u4")
    return [f"{int(b):08x}" for b in bits]


def f64_hexes(values: np.ndarray) -> list[str]:
    """float64 values as their IEEE-754 bit patterns (16 hex digits each)."""
    return [f64_hex(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


def f64_hex(value: float) -> str:
    """A float64 as its IEEE-754 bit pattern (16 hex digits).

    >>> f64_hex(1.0)
    '3ff0000000000000'
    """
    return f"{int(np.array(value, dtype='<f8').view('<u8')):016x}"


def hex_f32(text: str) -> float:
    return float(np.array(int(text, 16), dtype="<u4").view("<f4"))


def hex_f64(text: str) -> float:
    return float(np.array(int(text, 16), dtype="<u8").view("<f8"))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(record: dict[str, Any]) -> str:
    """sha256 of the compared part of a record (canonical JSON)."""
    payload = json.dumps({k: record[k] for k in COMPARED}, sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# -- make-csv (host) -------------------------------------------------------------------------
def make_csv(out: Path, readings: int = DEFAULT_READINGS, seed: int = DEFAULT_SEED) -> Path:
    """Write the recorded input stream with the project's simulator (host side only)."""
    _import_agent()
    from edge_agent.simulator import Fault, simulate, write_csv

    faults = [Fault(kind, start, duration) for kind, start, duration in DEFAULT_FAULTS]  # type: ignore[arg-type]
    return write_csv(out, simulate(readings, 0.1, seed=seed, faults=faults))


# -- run (each machine) ----------------------------------------------------------------------
def _percentiles(samples_ns: Sequence[int]) -> dict[str, float]:
    us = sorted(s / 1000.0 for s in samples_ns)
    if not us:
        return {"n": 0}
    return {"n": len(us), "median": round(statistics.median(us), 2),
            "p90": round(us[min(len(us) - 1, int(0.9 * len(us)))], 2),
            "mean": round(statistics.fmean(us), 2)}


def _runtime_info(runtime: Any) -> dict[str, str]:
    return {"name": runtime.name, "version": runtime.version}


def _detector_pass(detector: Any, values: np.ndarray, stamps: np.ndarray, parts: bool = False
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """Every reading through one stream of ``detector``: per reading its status, smoothed
    score, expected values and next forecast (with ``parts``, also the level, seasonal and
    adaptive parts per feature), every alert event, and the time each reading took."""
    stream = detector.new_stream("pi-parity")
    rows: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    process_ns: list[int] = []
    hexes = lambda v: None if v is None else f64_hexes(v)  # noqa: E731
    for i in range(len(values)):
        t0 = time.perf_counter_ns()
        outcome = detector.process(stream, values[i], float(stamps[i]))
        process_ns.append(time.perf_counter_ns() - t0)
        row = {"status": outcome.status,
               "score": None if outcome.score is None else f64_hex(outcome.score),
               "expected": hexes(outcome.expected), "next": hexes(stream.prediction)}
        if parts:
            row.update(level=hexes(outcome.shift), seasonal=hexes(outcome.seasonal),
                       adaptive=hexes(outcome.adaptive))
        rows.append(row)
        for alert in outcome.alerts:
            alerts.append({
                "type": alert.type, "alert_id": alert.alert_id, "index": i,
                "at": f64_hex(alert.at), "score": f64_hex(alert.score),
                "score_value": alert.score, "peak_score": f64_hex(alert.peak_score),
                "readings": alert.readings, "lifted_by": alert.lifted_by,
                "top_features": [c.feature for c in alert.top_features],
                **({"basis": [c.basis for c in alert.top_features]} if parts else {}),
            })
    return rows, alerts, process_ns


def run(csv_path: Path, bundle_path: Path | None = None, runtime_pref: str | None = None
        ) -> dict[str, Any]:
    """Process the recording with the agent's API and return the parity record."""
    agent = _import_agent()
    bundle_path = bundle_path or default_bundle()
    from edge_agent.bundle import load_bundle
    from edge_agent.csvdata import CsvSpec, read_csv
    from edge_agent.detector import Detector, DetectorSettings
    from edge_agent.model import StatefulModel, load_runtime
    from edge_agent.normalise import Normaliser

    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    runtime = load_runtime(runtime_pref)
    recording = read_csv(csv_path, CsvSpec(timestamp_column="timestamp",
                                           features=list(manifest.features)))
    if recording.timestamps is None:
        raise SystemExit(f"{csv_path}: the recording has no timestamps")
    values, stamps = recording.values, recording.timestamps

    # 1. The int8 model alone: raw outputs over the normalised inputs (a model that outputs
    #    the change is completed with the reading in float, as the detector does).
    model = StatefulModel(bundle.model_path, manifest.model, runtime)
    normaliser = Normaliser(manifest.normalisation)
    xs = normaliser.global_scale.forward_all(values)
    outputs = model.run(xs)
    forecasts = outputs + xs if manifest.architecture.output == "change" else outputs

    # 2. The detector's whole decision path over the same readings.
    det_rows, alerts, process_ns = _detector_pass(Detector(bundle, model, DetectorSettings()),
                                                  values, stamps)
    # 2b. The same with every part that learns per stream (level rebase, seasonal profile,
    #     adaptive forecaster, score histories): plain float arithmetic, the same bits too.
    from edge_agent.learning import with_learning_parts

    learning_rows, learning_alerts, _ = _detector_pass(
        Detector(with_learning_parts(bundle), model, DetectorSettings()), values, stamps,
        parts=True)

    # 3. Latency of one model step alone (information only; emulation is much slower).
    step_ns: list[int] = []
    state = model.zero_state()
    for x in xs[: min(len(xs), 1000)]:
        t0 = time.perf_counter_ns()
        model.step(x, state)
        step_ns.append(time.perf_counter_ns() - t0)

    record: dict[str, Any] = {
        "format": FORMAT,
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "numpy": np.__version__,
            "runtime": _runtime_info(runtime),
            "platform": platform.platform(),
            "agent": str(Path(agent.__file__).resolve().parent),
        },
        "input": {"file": csv_path.name, "sha256": sha256_file(csv_path),
                  "readings": int(len(values)), "features": list(recording.features)},
        "bundle": {"name": manifest.name, "sha256": bundle.sha256},
        "outputs": [f32_hex(row) for row in outputs],
        "forecasts": [f64_hexes(row) for row in forecasts],
        "detector": det_rows,
        "alerts": alerts,
        "learning": {"detector": learning_rows, "alerts": learning_alerts},
        "latency_us": {"model_step": _percentiles(step_ns),
                       "detector_process": _percentiles(process_ns)},
    }
    record["self_check"] = {
        # The detector steps the same model over the same inputs: its forecasts must be the
        # model's raw forecasts exactly (else the record would prove less than it claims).
        "detector_next_equals_model_run": all(
            row["next"] == fc for row, fc in zip(det_rows, record["forecasts"])),
    }
    record["digest"] = digest(record)
    return record


# -- compare ----------------------------------------------------------------------------------
#: Default tolerance for detector scores, in units in the last place (float64). Scores are
#: float64 arithmetic *after* the model; see ``compare``.
SCORE_TOLERANCE_ULP = 64


def _ulps(a: str, b: str) -> int:
    """Distance in float64 units in the last place between two bit patterns (same sign)."""
    ia, ib = int(a, 16), int(b, 16)
    if (ia >> 63) != (ib >> 63):
        return 1 << 62  # different signs: as far apart as it gets
    return abs(ia - ib)


def _max_abs_diff(a: Sequence[Any], b: Sequence[Any], decode: Any) -> float:
    worst = 0.0
    for ra, rb in zip(a, b):
        if ra is None or rb is None:
            continue
        if isinstance(ra, str):
            ra, rb = [ra], [rb]
        for ha, hb in zip(ra, rb):
            if ha != hb:
                worst = max(worst, abs(decode(ha) - decode(hb)))
    return worst


def _decision(alert: dict[str, Any]) -> tuple[Any, ...]:
    """What an alert decided (everything but the score values)."""
    return (alert["type"], alert["alert_id"], alert["index"], alert["at"], alert["readings"],
            alert["lifted_by"], tuple(alert["top_features"]))


def compare(native: dict[str, Any], emulated: dict[str, Any], *, strict: bool = False,
            score_tolerance_ulp: int = SCORE_TOLERANCE_ULP) -> dict[str, Any]:
    """What agrees between two records. ``bit_identical`` says everything does, bit for bit.

    ``ok`` (the verdict) needs bit-identical int8 forecasts, detector forecasts, expected
    values and statuses, and identical alert decisions (type, id, reading, time, length,
    what lifted the score, top features), and a bit-identical ``learning`` pass. Scores are
    float64 arithmetic on top of identical forecasts; where the platform's BLAS rounds a dot
    product differently they may differ in the last bits: that passes within
    ``score_tolerance_ulp`` unless ``strict``, and is always reported (the learning pass is
    compared whole, scores too).
    """
    for name, rec in (("native", native), ("emulated", emulated)):
        if rec.get("format") != FORMAT:
            raise SystemExit(f"{name} record has format {rec.get('format')!r}, "
                             f"expected {FORMAT!r}")
    fa, fb = native["outputs"], emulated["outputs"]  # the int8 model's own float32 outputs
    da, db = native["detector"], emulated["detector"]
    fc_diff = sum(1 for x, y in zip(fa, fb) if x != y) + abs(len(fa) - len(fb))
    strip = lambda row: {k: v for k, v in row.items() if k != "score"}  # noqa: E731
    det_diff = sum(1 for x, y in zip(da, db) if strip(x) != strip(y)) + abs(len(da) - len(db))
    scores_a, scores_b = [r["score"] for r in da], [r["score"] for r in db]
    score_diff = sum(1 for x, y in zip(scores_a, scores_b) if x != y)
    score_ulps = max([_ulps(x, y) for x, y in zip(scores_a, scores_b)
                      if x is not None and y is not None and x != y]
                     + [0 if all((x is None) == (y is None) for x, y in zip(scores_a, scores_b))
                        else 1 << 62])
    alerts_a, alerts_b = native["alerts"], emulated["alerts"]
    decisions_matched = sum(1 for x, y in zip(alerts_a, alerts_b) if _decision(x) == _decision(y))
    alerts_identical = sum(1 for x, y in zip(alerts_a, alerts_b) if x == y)
    digests_valid = digest(native) == native["digest"] and digest(emulated) == emulated["digest"]
    la, lb = native["learning"]["detector"], emulated["learning"]["detector"]
    learning_diff = sum(1 for x, y in zip(la, lb) if x != y) + abs(len(la) - len(lb))
    learning_alerts = native["learning"]["alerts"] == emulated["learning"]["alerts"]
    summary: dict[str, Any] = {
        "ok": False,
        "bit_identical": False,
        "strict": strict,
        "same_input": native["input"] == emulated["input"],
        "same_bundle": native["bundle"] == emulated["bundle"],
        "readings": native["input"]["readings"],
        "forecasts_identical": fc_diff == 0,
        "forecast_rows_differing": fc_diff,
        "forecast_max_abs_diff": _max_abs_diff(fa, fb, hex_f32),
        "detector_identical": det_diff == 0,
        "detector_rows_differing": det_diff,
        "expected_max_abs_diff": _max_abs_diff([r["expected"] for r in da],
                                               [r["expected"] for r in db], hex_f64),
        "scores_identical": score_diff == 0 and len(da) == len(db),
        "score_rows_differing": score_diff,
        "score_max_abs_diff": _max_abs_diff(scores_a, scores_b, hex_f64),
        "score_max_ulp": score_ulps,
        "score_tolerance_ulp": 0 if strict else score_tolerance_ulp,
        "alerts_native": len(alerts_a),
        "alerts_emulated": len(alerts_b),
        "alert_decisions_matched": decisions_matched,
        "alerts_bit_identical": alerts_identical,
        "alert_types": [a["type"] for a in alerts_a],
        "learning_identical": learning_diff == 0 and learning_alerts,
        "learning_rows_differing": learning_diff,
        "learning_alerts": len(native["learning"]["alerts"]),
        "self_checks": bool(native["self_check"]["detector_next_equals_model_run"]
                            and emulated["self_check"]["detector_next_equals_model_run"]),
        "digests_valid": digests_valid,
        "digest_native": native["digest"],
        "digest_emulated": emulated["digest"],
        "native": native["host"],
        "emulated": emulated["host"],
        "latency_us": {"native": native["latency_us"], "emulated": emulated["latency_us"]},
    }
    decisions_ok = decisions_matched == len(alerts_a) == len(alerts_b)
    core_ok = bool(summary["same_input"] and summary["same_bundle"] and fc_diff == 0
                   and det_diff == 0 and decisions_ok and summary["self_checks"]
                   and digests_valid and summary["learning_identical"])
    summary["bit_identical"] = bool(core_ok and summary["scores_identical"]
                                    and alerts_identical == len(alerts_a)
                                    and native["digest"] == emulated["digest"])
    summary["ok"] = summary["bit_identical"] or (
        core_ok and not strict and score_ulps <= score_tolerance_ulp)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """The parity part of pi-check's table."""
    yes = lambda flag: "yes" if flag else "NO"  # noqa: E731
    lat_n, lat_e = s["latency_us"]["native"], s["latency_us"]["emulated"]

    def lat(kind: str) -> str:
        n, e = lat_n[kind], lat_e[kind]
        ratio = e["median"] / n["median"] if n.get("median") else float("nan")
        return (f"{e['median']:.0f} us emulated vs {n['median']:.0f} us native "
                f"(x{ratio:.0f}; p90 {e['p90']:.0f} / {n['p90']:.0f})")

    if s["scores_identical"]:
        scores = "scores yes"
    else:
        scores = (f"scores NO ({s['score_rows_differing']} of {s['readings']} differ, "
                  f"max {s['score_max_ulp']} ULP)")
    if s["bit_identical"]:
        verdict = "PASS: bit-identical"
    elif s["ok"]:
        verdict = (f"PASS: model, forecasts and alert decisions bit-identical; scores within "
                   f"{s['score_tolerance_ulp']} ULP (strict would fail)")
    else:
        verdict = "FAIL"
    counts = ", ".join(f"{s['alert_types'].count(t)} {t}" for t in ("start", "update", "end"))
    rows = [
        ("arm64 machine", s["emulated"]["machine"]),
        ("arm64 Python", s["emulated"]["python"]),
        ("arm64 runtime", f"{s['emulated']['runtime']['name']} "
                          f"{s['emulated']['runtime']['version']}, numpy "
                          f"{s['emulated']['numpy']}"),
        ("native", f"{s['native']['machine']}, Python {s['native']['python']}, "
                   f"{s['native']['runtime']['name']} {s['native']['runtime']['version']}, "
                   f"numpy {s['native']['numpy']}"),
        ("parity", verdict),
        ("bit-identical", f"{yes(s['bit_identical'])}: int8 forecasts "
                          f"{yes(s['forecasts_identical'])}, detector forecasts/expected "
                          f"{yes(s['detector_identical'])}, {scores}; same input "
                          f"{yes(s['same_input'])}"),
        ("learning parts", f"{yes(s['learning_identical'])}: level, seasonal and adaptive "
                           f"parts, scores and {s['learning_alerts']} alert events "
                           f"({s['learning_rows_differing']} readings differ)"),
        ("readings", str(s["readings"])),
        ("max |difference|", f"forecast {s['forecast_max_abs_diff']:g}, "
                             f"expected {s['expected_max_abs_diff']:g}, "
                             f"score {s['score_max_abs_diff']:g}"),
        ("alerts matched", f"{s['alert_decisions_matched']}/{s['alerts_native']} decisions "
                           f"({s['alerts_emulated']} emulated; {counts}); "
                           f"{s['alerts_bit_identical']} bit-identical incl. scores"),
        ("model step", lat("model_step")),
        ("detector.process", lat("detector_process")),
        ("digest", s["digest_native"][:16] + (" = " if s["digest_native"] ==
                                               s["digest_emulated"] else " != ")
         + s["digest_emulated"][:16]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


# -- command line -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-csv", help="write the recorded input stream (host side)")
    p.add_argument("out", type=Path)
    p.add_argument("--readings", type=int, default=DEFAULT_READINGS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p = sub.add_parser("run", help="process a recording and write the parity record")
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (default: the agent package's demo bundle)")
    p.add_argument("--runtime", choices=("auto", "litert", "tflite"), default=None)
    p = sub.add_parser("compare", help="compare a native and an emulated record")
    p.add_argument("native", type=Path)
    p.add_argument("emulated", type=Path)
    p.add_argument("--summary", type=Path, help="also write the summary as JSON")
    p.add_argument("--strict", action="store_true",
                   help="scores must be bit-identical too (no ULP tolerance)")
    p.add_argument("--score-tolerance-ulp", type=int, default=SCORE_TOLERANCE_ULP)
    args = parser.parse_args(argv)

    if args.command == "make-csv":
        out = make_csv(args.out, args.readings, args.seed)
        print(f"wrote {out} ({args.readings} readings, sha256 {sha256_file(out)[:16]})")
        return 0
    if args.command == "run":
        record = run(args.csv, args.bundle, args.runtime)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        host, lat = record["host"], record["latency_us"]
        print(f"{host['machine']}: {record['input']['readings']} readings, "
              f"{len(record['alerts'])} alert events, digest {record['digest'][:16]}, "
              f"step median {lat['model_step']['median']} us "
              f"({host['runtime']['name']} {host['runtime']['version']})")
        return 0 if record["self_check"]["detector_next_equals_model_run"] else 3
    summary = compare(json.loads(args.native.read_text(encoding="utf-8")),
                      json.loads(args.emulated.read_text(encoding="utf-8")),
                      strict=args.strict, score_tolerance_ulp=args.score_tolerance_ulp)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(format_summary(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
