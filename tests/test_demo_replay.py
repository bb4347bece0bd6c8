"""First run: the one-command demo and CSV replay, as real processes over a real broker."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.broker import Mosquitto
from edge_agent.csvdata import read_csv
from edge_agent.errors import DataError
from edge_agent.simulator import Fault, simulate, write_csv
from tests.mqtt_helpers import (ROOT, AgentProcess, Recorder, agent_config, expected_alerts,
                                needs_mosquitto, wait_until)


def demo(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "demo", "--summary-json",
                             str(tmp_path / "summary.json"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finished_demo(tmp_path: Path, exit_code: int, *args: str, timeout: float = 180
                  ) -> tuple[str, dict]:
    """Run the demo to its end: what it printed and its summary JSON, once its exit code is
    the one expected."""
    process = demo(tmp_path, *args)
    out, _ = process.communicate(timeout=timeout)
    text = out.decode()
    assert process.returncode == exit_code, text
    return text, json.loads((tmp_path / "summary.json").read_text())


def assert_nothing_left(summary: dict) -> None:
    """No process, and no working folder (kept only when the demo failed)."""
    assert summary["still_running"] == {}
    for name, pid in summary["pids"].items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert summary["folder_kept"] is False and not Path(summary["folder"]).exists()


@needs_mosquitto
def test_demo_alerts_every_injected_fault_and_stops_everything(tmp_path: Path) -> None:
    text, summary = finished_demo(tmp_path, 0, "--duration", "12", "--speed", "25")
    assert [f["kind"] for f in summary["faults"]] == ["bearing", "stuck_sensor", "overheat"]
    assert all(f["detected"] for f in summary["faults"]), summary
    assert all(0 <= f["delay_s"] < 40 for f in summary["faults"]), summary
    assert summary["false_alerts"] == []
    assert summary["alerts"]["start"] == 3
    assert set(summary["pids"]) == {"broker", "agent"}
    assert_nothing_left(summary)
    assert "mosquitto on 127.0.0.1:" in text and "faults detected: 3/3" in text
    assert "START  r1/elbow" in text


@needs_mosquitto
def test_a_demo_that_misses_its_faults_fails_and_keeps_the_agents_folder(tmp_path: Path) -> None:
    """Two simulated seconds: the faults are injected but have no time to be caught."""
    text, summary = finished_demo(tmp_path, 1, "--duration", "2", "--speed", "1", timeout=120)
    folder = Path(summary["folder"])
    try:
        assert not all(f["detected"] for f in summary["faults"])
        assert summary["folder_kept"] is True
        assert (folder / "agent.yaml").is_file() and (folder / "agent.log").is_file()
        assert f"the agent's config, log and state are kept in {folder}" in text
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None,
                    reason="the embedded broker needs amqtt (the demo extra)")
def test_demo_with_the_embedded_broker(tmp_path: Path) -> None:
    text, summary = finished_demo(tmp_path, 0, "--duration", "20", "--speed", "15",
                                  "--embedded-broker")
    assert "embedded amqtt broker" in text
    assert all(f["detected"] for f in summary["faults"]), summary
    assert_nothing_left(summary)


@needs_mosquitto
def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    process = demo(tmp_path, "--duration", "60", "--speed", "5")
    deadline = time.monotonic() + 60
    seen = []
    while not (tmp_path / "summary.json").exists() and time.monotonic() < deadline:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        seen.append(line)
        if line.startswith("agent: pid"):
            time.sleep(2)
            process.send_signal(signal.SIGINT)
            break
    out, _ = process.communicate(timeout=60)
    output = "".join(seen) + out.decode()
    assert process.returncode == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True, output
    assert_nothing_left(summary)


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", "replay", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@needs_mosquitto
def test_replayed_csv_files_raise_the_alerts_the_detector_expects(broker: Mosquitto,
                                                                  tmp_path: Path) -> None:
    files = []
    for name, seed, fault in (("r1", 5, Fault("bearing", 60, 40)), ("r2", 6, None)):
        sim = simulate(1900, 0.1, seed=seed, faults=[fault] if fault else [])
        files.append(write_csv(tmp_path / f"{name}.csv", sim))  # with an 'anomaly' column
    config = agent_config(tmp_path / "agent.yaml", broker)
    expected = {}
    for path in files:
        rec = read_csv(path)
        expected[path.stem] = expected_alerts(config, rec.values, rec.timestamps, path.stem)
    assert expected["r1"] and not expected["r2"]
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        result = replay(*map(str, files), "--broker", broker.address, "--topic",
                        "robots/{stem}/joints/j1/telemetry", "--rate", "3000",
                        "--bundle", str(ROOT / "edge_agent" / "demo_bundle"))
        assert result.returncode == 0, result.stderr
        assert "replay: 3800/3800 readings (100%)" in result.stderr
        wait_until(lambda: len(recorder.alerts()) >= len(expected["r1"]), 60, "alerts")
    finally:
        assert agent.stop() == 0, agent.log()
    for stream, events in (("r1/j1", expected["r1"]), ("r2/j1", expected["r2"])):
        got = [(a["type"], a["at"]) for a in recorder.alerts(f"edge-anomaly/alerts/{stream}")]
        assert got == events


def test_replay_refuses_bad_csv_with_the_trainers_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,motor_current\n1,0.5\n2,oops\n")
    with pytest.raises(DataError) as reader_error:
        read_csv(bad)
    result = replay(str(bad), "--topic", "a/b", "--rate", "10", "--broker", "127.0.0.1:1")
    assert result.returncode == 1
    assert str(reader_error.value) in result.stderr
    result = replay(str(bad), str(bad), "--topic", "a/b", "--rate", "10")
    assert result.returncode == 1 and "2 file(s) but 1 --topic" in result.stderr


def test_replay_names_features_the_model_needs(tmp_path: Path) -> None:
    path = tmp_path / "few.csv"
    path.write_text("timestamp,motor_current\n1,0.5\n2,0.6\n")
    result = replay(str(path), "--topic", "a/b", "--rate", "10", "--bundle",
                    str(ROOT / "edge_agent" / "demo_bundle"))
    assert result.returncode == 1
    assert "lacks feature column(s) ['temperature', 'vibration', 'position_error']" in \
        result.stderr
