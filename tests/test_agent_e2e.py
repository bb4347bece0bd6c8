"""The agent end to end: a real mosquitto, the real daemon process, real MQTT clients.

The expected alerts are computed by running the same recording through the detector offline;
the live agent must publish exactly those (same events, same ids, same reading times).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from edge_agent.broker import Mosquitto
from edge_agent.bundle import load_bundle
from edge_agent.model import load_runtime
from edge_agent.simulator import FEATURES, Fault
from tests.mqtt_helpers import (ROOT, TOPIC, AgentProcess, Publisher, Recorder,
                                agent_config, expected_alerts, fault_run, needs_mosquitto,
                                reading_payload, wait_until)

pytestmark = [needs_mosquitto]
SCHEMA = json.loads((ROOT / "edge_agent" / "schemas" / "alert.schema.json").read_text())


def wait_offline(recorder: Recorder) -> None:
    """The agent publishes its last stats, then ``offline``: wait until both arrived."""
    wait_until(lambda: [m.payload for m in recorder.on(
        "edge-anomaly/agents/test-agent/availability")][-1:] == [b"offline"], 10,
        "the agent's offline message")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_fault_gives_the_exact_alert_episode(broker: Mosquitto, tmp_path: Path,
                                               protocol: str) -> None:
    # MQTT 5 too: the agent takes PUBLISH packets apart itself, skipping their properties
    config = agent_config(tmp_path / "agent.yaml", broker, broker={"protocol": protocol})
    values, stamps = fault_run(5, Fault("bearing", 60, 40))
    expected = expected_alerts(config, values, stamps, "r1/elbow")
    assert [t for t, _ in expected][0] == "start" and expected[-1][0] == "end"
    assert "update" in [t for t, _ in expected]

    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to robots/+/joints/+/telemetry")
        publisher = Publisher(broker)
        publisher.send_all((TOPIC.format("r1", "elbow"), reading_payload(ts, row, FEATURES))
                           for row, ts in zip(values, stamps))
        wait_until(lambda: len(recorder.alerts()) >= len(expected), 60, "all alerts")
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    wait_offline(recorder)
    alerts = recorder.alerts()
    assert [(a["type"], a["at"]) for a in alerts] == expected
    for alert in alerts:
        jsonschema.validate(alert, SCHEMA)
    assert len({a["alert_id"] for a in alerts}) == 1
    start = alerts[0]
    assert start["stream"] == "r1/elbow" and start["fields"] == {"robot": "r1", "joint": "elbow"}
    assert start["topic"] == "robots/r1/joints/elbow/telemetry"
    assert start["top_features"][0]["feature"] == "vibration"
    assert start["agent_id"] == "test-agent"
    assert start["model"]["sha256"] == load_bundle(ROOT / "edge_agent" / "demo_bundle").sha256
    assert alerts[-1]["reason"] == "recovered" and alerts[-1]["ended_at"] == alerts[-1]["at"]
    statuses = [m.payload.decode() for m in recorder.on("edge-anomaly/streams/r1/elbow/status")]
    assert statuses == ["warming_up", "normal", "anomalous", "normal"]
    availability = [m.payload for m in recorder.on("edge-anomaly/agents/test-agent/availability")]
    assert availability[0] == b"online" and availability[-1] == b"offline"
    assert f"runtime {load_runtime().name}" in agent.log() and "robot-joint-demo" in agent.log()


def test_several_streams_with_bad_payloads_in_between(broker: Mosquitto, tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    runs = {"r1/elbow": fault_run(5, Fault("bearing", 60, 40), 1700),
            "r2/wrist": fault_run(6, Fault("stuck_sensor", 70, 30), 1700),
            "r3/base": fault_run(7, None, 1700)}
    expected = {s: expected_alerts(config, v, t, s) for s, (v, t) in runs.items()}
    assert expected["r1/elbow"] and expected["r2/wrist"] and not expected["r3/base"]
    bad = [b"\xff\xfe", b"{not json", b'{"ts": 1, "motor_current": 1}', b"[1, 2]",
           b'{"motor_current": 1, "temperature": 2, "vibration": "x", "position_error": 0}',
           b'[1, 2, NaN, 4]', b"x" * 5000, b'"just a string"']
    messages = []
    for i in range(1700):
        for stream, (values, stamps) in runs.items():
            robot, joint = stream.split("/")
            messages.append((TOPIC.format(robot, joint),
                             reading_payload(stamps[i], values[i], FEATURES)))
        if i % 100 == 50:
            messages.append((TOPIC.format("r1", "elbow"), bad[(i // 100) % len(bad)]))
            messages.append(("robots/r1/status", b"not ours"))
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        publisher.client.subscribe("robots/r1/status")  # so that topic exists on the broker
        publisher.send_all(messages)
        total = sum(len(e) for e in expected.values())
        wait_until(lambda: len(recorder.alerts()) >= total, 60, "all alerts")
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    wait_offline(recorder)
    stats = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")][-1]
    assert stats["processed"] == 3 * 1700
    # every reading came in order: the rejected ones are acknowledged in their turn, so the
    # broker never sent newer readings ahead of older ones it had queued (it did before)
    assert stats["admission"] == {}
    for stream, events in expected.items():
        got = [(a["type"], a["at"]) for a in recorder.alerts(f"edge-anomaly/alerts/{stream}")]
        assert got == events, stream
    # 17 bad payloads, cycling through the eight kinds (the first kind comes three times)
    assert stats["rejected"] == {"not_utf8": 3, "invalid_json": 2, "missing_field": 2,
                                 "wrong_length": 2, "non_numeric": 2, "not_finite": 2,
                                 "oversize": 2, "wrong_type": 2}
    assert stats["unknown_topic"] == 0  # robots/r1/status is not even subscribed to
    assert stats["streams"] == 3
    assert "rejected a reading" in agent.log()


def test_warm_up_and_gap_reset(broker: Mosquitto, tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    values, stamps = fault_run(9, None, 800)
    stamps = stamps.copy()
    stamps[400:] += 120.0  # two minutes of silence: longer than gap_reset_s (30 s)
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        topic = TOPIC.format("r9", "j1")
        publisher.send_all((topic, reading_payload(ts, row, FEATURES))
                           for row, ts in zip(values, stamps))
        # a duplicate and an out-of-order reading: dropped and counted
        publisher.send_all([(topic, reading_payload(stamps[-1], values[-1], FEATURES)),
                            (topic, reading_payload(stamps[-5], values[-5], FEATURES))])
        wait_until(lambda: len(recorder.on("edge-anomaly/streams/r9/j1/status")) >= 4, 30,
                   "status changes")
        wait_until(lambda: [m.json()["processed"] for m in recorder.on(
            "edge-anomaly/agents/test-agent/stats")][-1:] == [802], 30, "all 802 readings")
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    wait_offline(recorder)
    statuses = [m.payload.decode() for m in recorder.on("edge-anomaly/streams/r9/j1/status")]
    assert statuses == ["warming_up", "normal", "warming_up", "normal"]
    stats = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")][-1]
    assert stats["admission"] == {"gap_reset": 1, "duplicate_timestamp": 1, "out_of_order": 1}
    assert stats["processed"] == 802


def test_sigterm_drains_the_queue_and_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    """Stopping mid-stream: everything taken is processed; what arrives during shutdown is
    left unacknowledged, and the persistent session hands it to the next run."""
    config = agent_config(tmp_path / "agent.yaml", broker)
    values, stamps = fault_run(5, Fault("bearing", 60, 40), 3000)
    agent = AgentProcess(config)
    recorder = Recorder(broker)
    agent.wait_log("subscribing to")
    publisher = Publisher(broker)
    for row, ts in zip(values, stamps):
        publisher.send(TOPIC.format("r1", "elbow"), reading_payload(ts, row, FEATURES))
    assert agent.stop(signal.SIGTERM) == 0
    log = agent.log()
    assert "received SIGTERM: shutting down" in log
    wait_offline(recorder)
    first = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")][-1]
    assert first["received"] == first["processed"] + first["deferred"], log
    assert recorder.on("edge-anomaly/agents/test-agent/availability")[-1].payload == b"offline"

    first_run_stats = len(recorder.on("edge-anomaly/agents/test-agent/stats"))
    second_run = AgentProcess(config)  # same client id: the broker kept the session

    def second_run_stats() -> list[dict]:
        return [m.json() for m in
                recorder.on("edge-anomaly/agents/test-agent/stats")[first_run_stats:]]

    try:
        second_run.wait_log("subscribing to")
        wait_until(lambda: any(s["processed"] + first["processed"] >= 3000
                               for s in second_run_stats()), 60, "the rest of the readings")
    finally:
        assert second_run.stop() == 0, second_run.log()
    publisher.close()
    wait_offline(recorder)
    second = second_run_stats()[-1]
    assert first["processed"] + second["processed"] == 3000


def test_sigterm_while_starting_up_still_shuts_down_cleanly(broker: Mosquitto,
                                                            tmp_path: Path) -> None:
    """``systemctl stop`` while the agent is still loading its model: the signal is kept and
    acted on once the agent runs (drain, last stats, ``offline``), not a death by SIGTERM."""
    config = agent_config(tmp_path / "agent.yaml", broker)
    # The signal is sent from inside the agent's constructor, so it lands in that window
    # every time rather than by luck of timing.
    code = ("import os, signal, sys\n"
            "from edge_agent import __main__ as cli, app\n"
            "build = app.Agent.__init__\n"
            "def building(self, *args, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    build(self, *args, **kwargs)\n"
            "app.Agent.__init__ = building\n"
            f"sys.exit(cli.main(['run', '--config', {str(config)!r}]))\n")
    recorder = Recorder(broker)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "received SIGTERM: shutting down" in done.stderr
    wait_offline(recorder)
