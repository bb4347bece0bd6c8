"""The evaluation harness and the benchmark runners, end to end on small synthetic data.

* ``edge-trainer evaluate`` on simulated faults (the shipped demo bundle): plausible metrics,
  delays, episodes, summary files and plots;
* the evaluation's alerts are exactly what the agent publishes for the same readings — over a
  real mosquitto with the real daemon, and through the worker in-process;
* the SKAB and NAB runners on tiny files in each benchmark's own format (SKAB: ``;``,
  ``datetime``, ``anomaly``/``changepoint``; NAB: ``timestamp,value`` and a windows JSON),
  with and without training.

None of this reads ../shared/data.
"""

from __future__ import annotations

import importlib.util

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_agent.bundle import Bundle, load_bundle
from edge_agent.history import PARTS
from edge_agent.payloads import Topics, iso
from edge_agent.simulator import FEATURES, Fault, simulate, write_csv
from edge_agent.stats import Stats
from edge_agent.worker import Item, Worker
from tests.conftest import DEMO_BUNDLE, needs_tf, with_optional_parts
from tests.mqtt_helpers import (AgentProcess, Publisher, Recorder, agent_config,
                                needs_mosquitto, reading_payload, wait_until)
from trainer import benchmarks, nab
from trainer import config as trainer_config
from trainer.__main__ import main
from trainer.evaluate import (Trace, agent_settings, display_names, episodes, evaluate_streams,
                              read_labelled)
from trainer.metrics import PointMetrics

FAULTS = {"bearing": Fault("bearing", 60, 40), "stuck": Fault("stuck_sensor", 70, 30),
          "normal": None}

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="needs matplotlib (the trainer extra)")


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled recordings of the simulated joint: two faults and a normal run."""
    folder = tmp_path_factory.mktemp("labelled")
    for i, (name, fault) in enumerate(FAULTS.items()):
        write_csv(folder / f"{name}.csv",
                  simulate(1600, 0.1, seed=500 + i, faults=[fault] if fault else []))
    return folder


@needs_matplotlib
def test_evaluate_command_reports_metrics_delays_and_plots(
        labelled_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", str(DEMO_BUNDLE), "--data", str(labelled_dir), "--out", str(out),
                 "--float"]) == 0
    printed = capsys.readouterr().out
    assert "[1/3] bearing" in printed and "[3/3] stuck" in printed
    assert "total run time" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == ["int8", "float32"]
    assert [f["name"] for f in summary["files"]] == ["bearing", "normal", "stuck"]
    for name in ("bearing", "normal", "stuck"):
        assert (out / f"{name}.png").stat().st_size > 5_000
    md = (out / "summary.md").read_text()
    assert "| int8 | alarm |" in md and "| float32 | score |" in md

    files = {f["name"]: f for f in summary["files"]}
    # The normal run raises nothing; the bearing fault is caught within seconds.
    assert files["normal"]["int8"]["episodes"] == []
    assert files["normal"]["int8"]["alarm"]["fp"] == 0
    bearing = files["bearing"]["int8"]
    assert bearing["delays"][0]["detected_row"] is not None
    assert 0 <= bearing["delays"][0]["delay_s"] <= 15
    assert bearing["alarm"]["recall"] > 0.8
    assert bearing["episodes"][0]["start_row"] == bearing["delays"][0]["detected_row"]
    # Pooled figures add the counts of the files, then take the ratios.
    totals = summary["totals"]["int8"]["alarm"]
    counts = {k: sum(files[n]["int8"]["alarm"][k] for n in files) for k in ("tp", "fp", "tn", "fn")}
    assert {k: totals[k] for k in counts} == counts
    assert totals["f1"] == pytest.approx(PointMetrics(**counts).f1, abs=1e-4)
    assert totals["tp"] + totals["fp"] + totals["tn"] + totals["fn"] == 3 * 1600
    assert 0.3 < totals["precision"] <= 1 and 0.3 < totals["recall"] <= 1
    assert summary["totals"]["int8"]["delays"]["detected"] >= 1
    # Every false-alarm row is in a false episode, or before or after a caught anomaly.
    t = summary["totals"]["int8"]
    assert t["fp_rows_false_episodes"] + t["fp_rows_lead"] + t["fp_rows_tail"] == totals["fp"]
    assert t["fp_rows_tail"] > 0  # the level part remembers a fault for a while
    # Each episode names the part of the score that started it; the totals count them.
    parts = {"forecast", "baseline", "season", "adaptive"}
    started = [e["started_by"] for f in files.values() for e in f["int8"]["episodes"]]
    assert started and set(started) <= parts
    assert t["episodes_by_part"] == {p: started.count(p) for p in set(started)}
    assert sum(t["episodes_by_part"].values()) == t["episodes"]
    assert "Episodes by the part of the score that started them (int8): " in md
    # The demo bundle has no relative threshold: every episode is the calibrated score's.
    assert t["episodes_by_lift"] == {"calibrated": t["episodes"]}
    assert "over the threshold" not in md


def test_rows_before_scored_from_are_streamed_but_not_scored(labelled_dir: Path) -> None:
    bundle = load_bundle(DEMO_BUNDLE)
    streams = read_labelled([labelled_dir / "bearing.csv"], bundle.manifest.features, "anomaly",
                            scored_from=700)
    ev = evaluate_streams(bundle, streams, agent_settings(), log=lambda line: None)
    result = ev.files[0].results["int8"]
    assert result.alarm is not None and result.alarm.rows == 1600 - 700
    # The fault starts at row 600: its segment is cut to the scored rows.
    assert [(d.start, d.end) for d in result.delays] == [(700, 1000)]


def test_episodes_and_nab_detections_come_from_the_alert_events() -> None:
    from edge_agent.detector import Alert

    def alert(kind: str, row: int, lifted_by: str | None = None) -> Alert:
        return Alert(type=kind, alert_id="a", stream_id="s", at=float(row), started_at=0.0,
                     score=2.0 + row / 100, peak_score=3.0, threshold=1.0, exit_threshold=0.5,
                     readings=1, top_features=(), lifted_by=lifted_by)

    events = [(3, alert("start", 3)), (5, alert("update", 5, "score_history")),
              (8, alert("end", 8)), (12, alert("start", 12, "level_history")),
              (14, alert("update", 14))]
    trace = Trace("int8", np.zeros(16, bool), np.zeros(16), np.zeros(16, bool), events)
    eps = episodes(trace, 16)
    assert [(e.start_row, e.end_row, e.closed, e.updates) for e in eps] == [
        (3, 8, True, 1), (12, 16, False, 1)]
    assert [e.started_by for e in eps] == [None, None]  # no contributions in these alerts
    # What put each episode's start over the threshold (its updates don't change that).
    assert [e.lifted_by for e in eps] == ["calibrated", "level_history"]
    from trainer.evaluate import FileResult, LabelledStream

    stream = LabelledStream("s", "s.csv", ["v"], np.zeros((16, 1)), np.arange(16.0), None)
    result = FileResult(stream, {"int8": trace}, {})
    assert np.flatnonzero(benchmarks.detections(result, "int8")).tolist() == [3, 12]
    assert np.flatnonzero(benchmarks.detections(result, "int8", with_updates=True)).tolist() \
        == [3, 5, 12, 14]


def test_display_names_add_folders_only_where_names_clash() -> None:
    assert display_names([Path("a/valve1/0.csv"), Path("a/valve2/0.csv")]) == ["valve1-0",
                                                                                "valve2-0"]
    assert display_names([Path("x/one.csv"), Path("y/two.csv")]) == ["one", "two"]


def test_agent_settings_come_through_the_agents_own_mapping(tmp_path: Path) -> None:
    defaults = agent_settings()
    assert defaults.warmup_readings == 20 and defaults.gap_reset_s == 60.0
    custom = agent_settings(None, {"detection": {"gap_reset_s": None},
                                   "alerts": {"enter_readings": 5}})
    assert custom.gap_reset_s is None and custom.alerts.enter_readings == 5
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"bundle": str(DEMO_BUNDLE),
                                    "input": {"topics": ["a/{b}"]},
                                    "detection": {"threshold_scale": 1.5},
                                    "alerts": {"cooldown_readings": 7}}))
    from_file = agent_settings(path, {"alerts": {"cooldown_readings": 99}})
    assert from_file.threshold_scale == 1.5 and from_file.alerts.cooldown_readings == 7


# -- evaluation == the live agent -----------------------------------------------------------------
def _evaluated_alerts(config: Path, csv_path: Path, stream_id: str,
                      bundle: Bundle | None = None):
    bundle = bundle or load_bundle(DEMO_BUNDLE)
    streams = read_labelled([csv_path], bundle.manifest.features, "anomaly")
    streams[0].name = stream_id  # the alert id is derived from the stream id
    ev = evaluate_streams(bundle, streams, agent_settings(config), log=lambda line: None)
    trace = ev.files[0].traces["int8"]
    return streams[0], trace, [(a.type, iso(a.at), a.alert_id, a.lifted_by)
                               for _, a in trace.events]


@needs_mosquitto
def test_evaluation_alerts_are_what_the_live_daemon_publishes(broker, labelled_dir: Path,
                                                              tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    stream, trace, expected = _evaluated_alerts(config, labelled_dir / "bearing.csv",
                                                "r1/elbow")
    assert [e[0] for e in expected][:1] == ["start"] and expected[-1][0] == "end"
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to robots/+/joints/+/telemetry")
        publisher = Publisher(broker)
        publisher.send_all(("robots/r1/joints/elbow/telemetry",
                            reading_payload(ts, row, FEATURES))
                           for row, ts in zip(stream.values, stream.timestamps))
        wait_until(lambda: len(recorder.alerts()) >= len(expected), 60, "all alerts")
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    got = [(a["type"], a["at"], a["alert_id"], a["lifted_by"]) for a in recorder.alerts()]
    assert got == expected
    # The status the agent publishes goes through the same states as the evaluation's rows.
    statuses = [m.payload.decode() for m in recorder.on("edge-anomaly/streams/r1/elbow/status")]
    evaluated = ["warming_up" if w else ("anomalous" if a else "normal")
                 for w, a in zip(trace.warming, trace.alarm)]
    changes = [s for i, s in enumerate(evaluated) if i == 0 or s != evaluated[i - 1]]
    assert statuses == changes
    recorder.close()


@pytest.mark.parametrize("optional_parts", [False, True], ids=["demo", "seasonal+rebase"])
def test_evaluation_alerts_are_what_the_worker_publishes(labelled_dir: Path, tmp_path: Path,
                                                         optional_parts: bool) -> None:
    """The same check in-process, without a broker: the agent's worker, fed item by item; also
    for a bundle with a seasonal part and a level rebase (their state lives in the stream)."""
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "bundle": str(DEMO_BUNDLE), "input": {"topics": ["robots/{robot}/joints/{joint}/t"]},
        "alerts": {"exit_readings": 30, "cooldown_readings": 50}}))
    bundle = load_bundle(DEMO_BUNDLE)
    if optional_parts:
        bundle = with_optional_parts(bundle)
    stream, _, expected = _evaluated_alerts(config, labelled_dir / "stuck.csv", "r2/wrist",
                                            bundle)
    assert expected

    class Output:
        def __init__(self) -> None:
            self.alerts: list[dict] = []
            self.scores: list[dict] = []

        def publish_alert(self, alert_id: str, kind: str, topic: str, payload: bytes) -> None:
            self.alerts.append(json.loads(payload))

        def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
            if topic.endswith("/score"):
                self.scores.append(json.loads(payload))

        def ack(self, mid: int, qos: int) -> None:
            pass

    from edge_agent.app import detector_settings
    from edge_agent.config import load as load_agent_config
    from edge_agent.detector import Detector
    from edge_agent.model import StatefulModel

    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        detector_settings(load_agent_config(config)))
    out = Output()
    worker = Worker(detector, lambda n, t: [], out, Topics("edge-anomaly", "a"), Stats(),
                    agent_id="a", max_streams=10, publish_scores=True)
    for i, (row, ts) in enumerate(zip(stream.values, stream.timestamps)):
        worker.handle(Item("r2/wrist", "robots/r2/joints/wrist/t", {}, row, float(ts), 0.0,
                           i, 1))
    assert [(a["type"], a["at"], a["alert_id"], a["lifted_by"]) for a in out.alerts] == expected
    # The score topic tells the same story at each alert's reading: score, threshold, lift.
    scores = {iso(s["ts"]): s for s in out.scores}
    assert all(s["threshold"] == round(detector.enter, 4) for s in out.scores)
    for a in out.alerts:
        s = scores[a["at"]]
        assert (s["score"], s["threshold"], s["lifted_by"]) == (
            a["score"], a["threshold"], a["lifted_by"])
    # With the part histories on, the payloads say which history lifted a score; the
    # worker counts the episodes it opened by it.
    assert any(e[3] is not None for e in expected) == optional_parts
    starts = [e[3] or "calibrated" for e in expected if e[0] == "start"]
    assert worker.stats.starts_by_lift == Counter(starts)


# -- SKAB ---------------------------------------------------------------------------------------
def write_skab(folder: Path, experiments: int = 3, rows: int = 900) -> Path:
    """SKAB-format files: ``;``, ``datetime``, features, ``anomaly`` and ``changepoint``; one
    fault per experiment after its first 400 rows, and an anomaly-free recording."""
    start = datetime(2020, 3, 9, 10, 0, tzinfo=timezone.utc)

    def write(path: Path, sim, labelled: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        head = ["datetime", *FEATURES] + (["anomaly", "changepoint"] if labelled else [])
        lines = [";".join(head)]
        for i in range(len(sim.t)):
            stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
            cells = [stamp] + [f"{v:.5f}" for v in sim.values[i]]
            if labelled:
                change = int(sim.labels[i] and (i == 0 or not sim.labels[i - 1]))
                cells += [f"{float(sim.labels[i]):.1f}", f"{float(change):.1f}"]
            lines.append(";".join(cells))
        path.write_text("\n".join(lines) + "\n")

    for i in range(experiments):
        write(folder / "valve1" / f"{i}.csv",
              simulate(rows, 0.1, seed=70 + i, faults=[Fault("bearing", 55.0, 25.0)]), True)
    write(folder / "anomaly-free" / "anomaly-free.csv", simulate(1200, 0.1, seed=90), False)
    return folder


@needs_matplotlib
def test_skab_runner_with_a_given_bundle_scores_only_the_test_parts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_skab(tmp_path / "skab")
    assert [p.name for p in benchmarks.skab_experiments(data)] == ["0.csv", "1.csv", "2.csv"]
    out = tmp_path / "out"
    assert main(["benchmark", "skab", "--data-dir", str(data), "--out", str(out), "--bundle",
                 str(DEMO_BUNDLE), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "| Conv-AE | 0.78 | n/a | n/a |" in captured.err
    assert "edge-anomaly LSTM int8" in captured.err
    totals = result["totals"]["int8"]["alarm"]
    assert totals["tp"] + totals["fp"] + totals["tn"] + totals["fn"] == 3 * (900 - 400)
    assert totals["recall"] > 0.5 and totals["precision"] > 0.5
    assert result["totals"]["int8"]["delays"]["detected"] == 3
    assert result["totals"]["float32"]["alarm"] is not None
    assert result["settings"]["gap_reset_s"] is None
    for name in ("valve1-0", "valve1-1", "valve1-2"):
        assert (out / f"{name}.png").is_file()
    assert json.loads((out / "benchmark.json").read_text())["benchmark"] == "skab"
    assert "Conv-AE" in (out / "leaderboard.md").read_text()


def _tiny_yaml(path: Path, features: list[str], **data: object) -> Path:
    path.write_text(yaml.safe_dump({
        "data": {"paths": [], "features": features, "min_rows": 50,
                 "validation_fraction": 0.25, **data},
        "normalisation": {"per_stream": True, "baseline_readings": 100},
        "model": {"layers": [4], "sequence_length": 16, "window_stride": 4, "epochs": 2,
                  "batch_size": 32, "seed": 1},
        "export": {"representative_readings": 200, "parity_tolerance": 10.0},
        "scoring": {"level": {"alpha": 0.02}},
        "output": {"dir": "unused", "name": "tiny", "report": False}}))
    return path


@needs_tf
def test_skab_runner_trains_on_the_first_rows_and_evaluates(tmp_path: Path) -> None:
    data = write_skab(tmp_path / "skab", experiments=2, rows=700)
    config = _tiny_yaml(tmp_path / "skab.yaml", FEATURES, separator=";",
                        timestamp_column="datetime", label_columns=["anomaly", "changepoint"])
    result = benchmarks.run_skab(data, out=tmp_path / "out", config=config,
                                 train_on="first-rows", plots=False, log=lambda line: None)
    bundle = load_bundle(tmp_path / "out" / "bundle")
    files = bundle.manifest.training["files"]
    # Trained on each experiment's first 400 rows only (labels never fed to the model).
    assert [f["rows"] for f in files] == [400, 400]
    assert bundle.manifest.features == FEATURES and bundle.manifest.normalisation.per_stream
    assert result["totals"]["int8"]["alarm"]["tp"] + result["totals"]["int8"]["alarm"]["fn"] > 0
    assert result["train_on"] == "first-rows" and result["train_seconds"] > 0


# -- NAB ----------------------------------------------------------------------------------------
T0 = datetime(2014, 3, 1, tzinfo=timezone.utc)


def _stamp(i: int) -> str:
    return (T0 + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")


def write_nab(folder: Path, rows: int = 1400) -> tuple[Path, Path]:
    """Two NAB-format files with one labelled level shift each (one file repeats a timestamp,
    as NAB's daylight-saving artefacts do), and a windows JSON that also names an absent file."""
    rng = np.random.default_rng(3)
    windows = {}
    for name, shift_at in (("realKnownCause/shift.csv", 900),
                           ("artificialWithAnomaly/jump.csv", 1100)):
        t = np.arange(rows)
        values = 10 + 3 * np.sin(2 * np.pi * t / 288) + 0.3 * rng.standard_normal(rows)
        values[shift_at:shift_at + 120] += 8.0
        stamps = [_stamp(i) for i in range(rows)]
        if name.startswith("real"):
            stamps[100] = stamps[99]  # a repeated timestamp inside the probationary rows
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,value\n" + "".join(
            f"{s},{v:.4f}\n" for s, v in zip(stamps, values)))
        windows[name] = [[_stamp(shift_at - 60) + ".000000", _stamp(shift_at + 60) + ".000000"]]
    windows["realKnownCause/absent.csv"] = [[_stamp(10), _stamp(20)]]
    labels = folder / "combined_windows.json"
    labels.write_text(json.dumps(windows))
    return folder, labels


def test_nab_reader_takes_repeated_timestamps_and_feeds_the_detector_every_row(
        tmp_path: Path) -> None:
    data, labels = write_nab(tmp_path / "nab")
    files, missing = benchmarks.nab_files(data, labels)
    assert missing == ["realKnownCause/absent.csv"]
    shift = next(f for f in files if f.name == "shift")
    assert shift.stamps[100] == shift.stamps[99] and np.all(np.diff(shift.clock) > 0)
    assert shift.probation == nab.probation_rows(1400) == 210
    written = benchmarks.write_probation(shift, tmp_path / "train")
    assert len(written.read_text().splitlines()) == 1 + 210
    assert benchmarks.monotone_clock(np.array([0.0, 5.0, 5.0, 3.0, 9.0])).tolist() == \
        pytest.approx([0.0, 5.0, 5.001, 5.002, 9.0])


def test_nab_without_any_window_stops_before_training_with_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # NAB normalises against the windows' perfect score: fault-free files alone (like NAB's
    # artificialNoAnomaly) have none, which must not surface as a traceback after training.
    data, labels = write_nab(tmp_path / "nab")
    labels.write_text(json.dumps({k: [] for k in json.loads(labels.read_text())}))
    assert main(["benchmark", "nab", "--data-dir", str(data), "--labels", str(labels),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{data}: {labels} gives none of these 2 file(s) an anomaly window" in err
    assert not (tmp_path / "out" / "bundles").exists()


def test_a_file_too_short_for_the_configured_baseline_gets_the_baseline_it_can_have(
        tmp_path: Path) -> None:
    # The full corpus's shortest file (1,127 rows) has 169 probationary rows, 127 of them to
    # train on: fewer than the 150-reading baseline of configs/nab.yaml, which would stop the
    # trainer. The benchmark shortens that file's baseline (and says so); longer files keep it.
    data, labels = write_nab(tmp_path / "nab", rows=1127)
    files, _ = benchmarks.nab_files(data, labels)
    config = trainer_config.load(benchmarks.NAB_CONFIG)
    assert config.normalisation.baseline_readings == 150
    lines: list[str] = []
    caps = benchmarks.baseline_caps(files, config, lines.append)
    assert caps == {f.key: 127 for f in files}
    assert lines[0] == ("jump: 169 probationary rows leave 127 to train on; its per-stream "
                        "baseline is 127 readings instead of 150")
    trimmed = benchmarks.config_for(benchmarks.NAB_CONFIG, ["x.csv"], tmp_path / "b",
                                    baseline_cap=caps[files[0].key])
    assert trimmed.normalisation.baseline_readings == 127
    roomy = benchmarks.config_for(benchmarks.NAB_CONFIG, ["x.csv"], tmp_path / "b",
                                  baseline_cap=500)
    assert roomy.normalisation.baseline_readings == 150
    long_files, _ = benchmarks.nab_files(*write_nab(tmp_path / "long"))
    assert benchmarks.baseline_caps(long_files, config, lines.append) == {
        f.key: 158 for f in long_files} and len(lines) == 2


@pytest.mark.slow
@needs_tf
def test_nab_runner_trains_per_file_on_probation_rows_and_scores_all_profiles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, labels = write_nab(tmp_path / "nab")
    config = _tiny_yaml(tmp_path / "nab.yaml", ["value"], timestamp_column="timestamp")
    tiny = yaml.safe_load(config.read_text())  # with the adaptive part, as configs/nab.yaml
    tiny["scoring"]["adaptive"] = {"enabled": True}
    config.write_text(yaml.safe_dump(tiny))
    out = tmp_path / "out"
    assert main(["benchmark", "nab", "--data-dir", str(data), "--labels", str(labels),
                 "--out", str(out), "--config", str(config), "--jobs", "1", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "| Random Cut Forest | 51.7 | n/a | n/a |" in captured.err
    # Our rows say what this run scored (two files, one window each), not a fixed name.
    assert "| this run, 2 files, 2 windows |" in captured.err
    assert result["files"] == 2 and result["absent"] == ["realKnownCause/absent.csv"]
    # Each data folder pooled on its own too (here one file, one window each).
    assert set(result["folders"]) == {"artificialWithAnomaly", "realKnownCause"}
    assert all(f["windows"] == 1 for f in result["folders"].values())
    assert "| folder | files | windows | standard |" in captured.err
    assert "## Per folder" in (out / "summary.md").read_text()
    # How much the score owes to which files were drawn (a bootstrap over the two files).
    assert "int8 with other files like these (2 drawn with replacement" in captured.err
    for profile in nab.PROFILES:
        low, high = result["resampled"][profile]
        assert low <= high
    for f in ("shift", "jump"):
        bundle = load_bundle(out / "bundles" / f)
        # Each model learned from its own file's probationary rows only.
        assert bundle.manifest.training["files"][0]["rows"] == 210
        # Trained, calibrated and run with the adaptive part (the trainer wrote it).
        adaptive = bundle.manifest.scoring.adaptive
        assert adaptive is not None and adaptive.order == 4 and adaptive.scale[0] > 0
        assert (out / "plots" / f"{f}.png").is_file()
    totals = result["totals"]["start"]
    for model in ("int8", "float32"):
        assert set(totals[model]) == set(nab.PROFILES)
        standard = totals[model]["standard"]
        assert standard["tp"] + standard["fn"] == 2
        assert -1000 < standard["normalised"] <= 100
        # Every counted detection is put down to what put it over the threshold: here,
        # without a relative threshold, the calibrated score alone.
        by_lift = result["detections_by_lift"][model]
        assert set(by_lift["tp"]) | set(by_lift["fp"]) <= {"calibrated"}
        assert (sum(by_lift["tp"].values()), sum(by_lift["fp"].values())) == (
            standard["tp"], standard["fp"])
    assert "| over the threshold by | windows caught | false positives |" in captured.err
    # An 8-sigma level shift is caught.
    assert totals["int8"]["standard"]["tp"] >= 1
    # Counting updates too adds detections, never removes one.
    with_updates = result["totals"]["start+update"]["int8"]["standard"]
    assert with_updates["tp"] >= totals["int8"]["standard"]["tp"]
    assert with_updates["fp"] >= totals["int8"]["standard"]["fp"]

    # Re-running on the trained bundles skips training and gives the same figures; with
    # threshold multipliers, multiplier 1 is the run's own figure, and one so high that
    # nothing fires scores a silent detector's 0.
    again = benchmarks.run_nab(data, labels, out=tmp_path / "again", config=config,
                               reuse=out / "bundles", plots=False, log=lambda line: None,
                               threshold_scales=[1.0, 1000.0])
    assert again["totals"] == result["totals"] and again["train_seconds"] < 5
    same, silent_run = again["threshold_sweep"]
    standard_int8 = totals["int8"]["standard"]
    assert same == {"scale": 1.0, "standard": standard_int8["normalised"],
                    "tp": standard_int8["tp"], "fn": standard_int8["fn"],
                    "fp": standard_int8["fp"]}
    assert silent_run == {"scale": 1000.0, "standard": 0.0, "tp": 0, "fn": 2, "fp": 0}
    assert (tmp_path / "again" / "threshold-sweep.md").is_file()

    # One half of the files (in the windows file's order): the even half is the first file.
    even = benchmarks.run_nab(data, labels, out=tmp_path / "even", config=config,
                              reuse=out / "bundles", half="even", plots=False,
                              log=lambda line: None)
    assert even["files"] == 1 and even["half"] == "even"
    assert [r["file"] for r in even["files_detail"]] == ["artificialWithAnomaly/jump.csv"]

    # A setting chosen without each file in turn: one recalibrated run per value, then each
    # file scored with the value the other file did better with (ties: the first listed).
    choice = tmp_path / "choice"
    assert main(["benchmark", "nab", "--data-dir", str(data), "--labels", str(labels),
                 "--bundles", str(out / "bundles"), "--config", str(config), "--out", str(choice),
                 "--choose", "scoring.threshold.margin=1.2,1000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["in_sample"]["1000"]["standard"] == 0.0  # a detector that never fires
    assert summary["in_sample"]["1.2"] == {p: v["normalised"] for p, v in totals["int8"].items()}
    raw = {f["file"]: f["raw"] for f in summary["files"]}
    held = 0.0
    for f in summary["files"]:
        other = next(r for name, r in raw.items() if name != f["file"])
        assert f["chosen"] == ("1.2" if other["1.2"] >= other["1000"] else "1000")
        held += f["raw"][f["chosen"]]
    assert summary["held_out"]["standard"] == pytest.approx(100 * (held + 2) / 4, abs=0.01)
    assert (choice / "choice.md").is_file()
    silent = load_bundle(choice / "margin=1000" / "bundles" / "shift").manifest
    assert silent.scoring.threshold.details["margin"] == 1000

    # The trained bundles recalibrated with a relative threshold (as configs/nab.yaml): the
    # threshold reaches each bundle, and the detections that a history lifted say which.
    relative = {"window": 5, "z": 2.5, "min_history": 50, "absolute_for": 400, "part_z": 3.0}
    tiny["scoring"]["threshold"] = {"relative": relative}
    config.write_text(yaml.safe_dump(tiny))
    lifted = benchmarks.run_nab(data, labels, out=tmp_path / "relative", config=config,
                                reuse=out / "bundles", recalibrate=True, plots=True,
                                log=lambda line: None)
    for f in ("shift", "jump"):
        threshold = load_bundle(tmp_path / "relative" / "bundles" / f).manifest.scoring.threshold
        assert threshold.relative is not None
        assert threshold.relative.model_dump(include=set(relative)) == relative
        assert (tmp_path / "relative" / "plots" / f"{f}.png").is_file()  # starts marked by lift
    int8 = lifted["detections_by_lift"]["int8"]
    standard = lifted["totals"]["start"]["int8"]["standard"]
    assert (sum(int8["tp"].values()), sum(int8["fp"].values())) == (standard["tp"],
                                                                     standard["fp"])
    histories = {"score_history"} | {f"{p}_history" for p in PARTS}
    # After 400 scores the history alone decides: detections there are a history's.
    assert (set(int8["tp"]) | set(int8["fp"])) & histories
