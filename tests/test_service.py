"""The agent as a service: systemd's side of sd_notify, the watchdog, model reloads without
downtime, status and stats topics, Prometheus, Home Assistant discovery, shared subscriptions.
All against a real mosquitto and the real daemon process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path


from edge_agent import __version__
from edge_agent.broker import Mosquitto, free_port
from edge_agent.bundle import load_bundle
from edge_agent.simulator import FEATURES, Fault
from tests.mqtt_helpers import (ROOT, TOPIC, AgentProcess, Publisher, Recorder, agent_config,
                                fault_run, needs_mosquitto, reading_payload, wait_until)

pytestmark = [needs_mosquitto]
DEMO = ROOT / "edge_agent" / "demo_bundle"
STATUS = "edge-anomaly/agents/test-agent/status"
STATS = "edge-anomaly/agents/test-agent/stats"


def readings(robot: str, seed: int, fault: Fault | None, rows: range, n: int = 2000):
    values, stamps = fault_run(seed, fault, n)
    return [(TOPIC.format(robot, "j1"), reading_payload(stamps[i], values[i], FEATURES))
            for i in rows]


class SystemdSide:
    """What systemd does for a Type=notify service: a datagram socket in NOTIFY_SOCKET."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def seen(self, field: str) -> list[float]:
        return [t for t, text in self.messages if field in text.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_sd_notify_readiness_watchdog_and_a_stalled_worker(broker: Mosquitto,
                                                           tmp_path: Path) -> None:
    systemd = SystemdSide(tmp_path)
    config = agent_config(tmp_path / "agent.yaml", broker)
    recorder = Recorder(broker)
    agent = AgentProcess(config, env={"NOTIFY_SOCKET": str(systemd.path),
                                      "WATCHDOG_USEC": "1000000"})
    try:
        wait_until(lambda: systemd.seen("READY=1"), 30, "READY=1")
        ready_at = systemd.seen("READY=1")[0]
        assert "connected to" in agent.log()  # READY=1 only after the broker connection
        time.sleep(3)
        pings = systemd.seen("WATCHDOG=1")
        assert len(pings) >= 4, "the watchdog must be pinged every half interval"
        # Stall the worker for real: hold the outbox database's write lock, then make the
        # stream raise an alert; the worker blocks on the disk like on a wedged SD card.
        lock = sqlite3.connect(tmp_path / "state" / "outbox.sqlite", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        publisher = Publisher(broker)
        publisher.send_all(readings("r1", 5, Fault("bearing", 40, 40), range(0, 800)))
        wait_until(lambda: _stalled(recorder), 30, "the worker to stall on the locked outbox",
                   interval=0.2)
        stalled_at = time.monotonic()
        assert "alert start" not in agent.log()
        time.sleep(3)
        during = [t for t in systemd.seen("WATCHDOG=1") if t > stalled_at + 1.0]
        assert during == [], "no WATCHDOG=1 while the worker makes no progress"
        lock.execute("ROLLBACK")
        lock.close()
        released = time.monotonic()
        wait_until(lambda: any(t > released for t in systemd.seen("WATCHDOG=1")), 10,
                   "watchdog pings to resume")
        assert any("STATUS=" in text for _, text in systemd.messages)
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
        systemd.close()
    assert systemd.seen("STOPPING=1") and systemd.seen("STOPPING=1")[0] > ready_at
    assert "alert start" in agent.log()


def _stalled(recorder: Recorder) -> bool:
    """The main loop's last two stats (a second apart) show readings waiting while the worker
    processed none of them."""
    stats = [m.json() for m in recorder.on(STATS)][-2:]
    return (len(stats) == 2 and stats[0]["processed"] == stats[1]["processed"]
            and stats[1]["received"] > stats[1]["processed"])


def bundle_variant(folder: Path, edit) -> Path:
    target = folder / "bundle"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(DEMO, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest, target)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def statuses(recorder: Recorder, stream: str) -> list[str]:
    return [m.payload.decode() for m in recorder.on(f"edge-anomaly/streams/{stream}/status")]


def test_model_reload_keeps_state_when_safe_resets_otherwise_and_refuses_bad_bundles(
        broker: Mosquitto, tmp_path: Path) -> None:
    bundle = bundle_variant(tmp_path, lambda m, f: None)
    config = agent_config(tmp_path / "agent.yaml", broker, bundle=str(bundle),
                          bundle_watch_s=0.5)
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        publisher.send_all(readings("r1", 3, None, range(0, 500)))
        wait_until(lambda: statuses(recorder, "r1/j1")[-1:] == ["normal"], 30, "normal")

        # 1. recalibrated thresholds, same model and state_key: SIGHUP, state carries over
        def recalibrate(m: dict, f: Path) -> None:
            m["scoring"]["threshold"]["enter"] *= 1.1
        bundle_variant(tmp_path, recalibrate)
        os.kill(agent.pid, signal.SIGHUP)
        agent.wait_log("model reloaded (SIGHUP)")
        assert "streams keep their state" in agent.log()
        publisher.send_all(readings("r1", 3, None, range(500, 600)))
        time.sleep(1)
        assert statuses(recorder, "r1/j1") == ["warming_up", "normal"]

        # 2. a tampered bundle dropped in place: refused, the old model keeps running
        def tamper(m: dict, f: Path) -> None:
            data = bytearray((f / "model.tflite").read_bytes())
            data[100] ^= 1
            (f / "model.tflite").write_bytes(bytes(data))
        bundle_variant(tmp_path, tamper)
        wait_until(lambda: "model reload (the bundle folder changed) failed" in agent.log(), 20,
                   "the watched bundle to be refused")
        wait_until(lambda: any(not (m.json().get("last_reload") or {}).get("ok", True)
                               for m in recorder.on(STATUS)), 10, "the error on the status topic")
        error = [m.json() for m in recorder.on(STATUS)][-1]["last_reload"]
        assert "does not match the manifest" in error["error"]
        publisher.send_all(readings("r1", 3, None, range(600, 700)))
        time.sleep(1)
        assert statuses(recorder, "r1/j1") == ["warming_up", "normal"]

        # 3. a retrained model (another state_key) in the watched folder: streams start over
        def retrained(m: dict, f: Path) -> None:
            m["state_key"] = "0" * 64
        bundle_variant(tmp_path, retrained)
        wait_until(lambda: "model reloaded (the bundle folder changed)" in agent.log(), 20,
                   "the watched bundle to load")
        assert "streams start over" in agent.log()
        publisher.send_all(readings("r1", 3, None, range(700, 1100)))
        wait_until(lambda: statuses(recorder, "r1/j1") == ["warming_up", "normal", "warming_up",
                                                           "normal"], 30, "a fresh warm-up")
        publisher.close()
        assert agent.process.poll() is None
    finally:
        assert agent.stop() == 0, agent.log()
    status = [m.json() for m in recorder.on(STATUS)][-1]
    assert status["last_reload"]["ok"] is True and status["last_reload"]["kept_state"] is False


def test_status_stats_and_prometheus(broker: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    config = agent_config(tmp_path / "agent.yaml", broker,
                          metrics={"enabled": True, "port": port})
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("Prometheus metrics on http://127.0.0.1:")
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        publisher.send_all(readings("r1", 5, Fault("bearing", 60, 40), range(0, 1000)))
        publisher.send_all([("robots/r1/joints/j1/telemetry", b"not json")])
        wait_until(lambda: bool(recorder.on(STATS)) and recorder.on(STATS)[-1].json()[
            "processed"] == 1000, 30, "stats")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    metrics = text.decode()
    for line in ("edge_agent_processed_total 1000.0", 'edge_agent_rejected_total{reason='
                 '"invalid_json"} 1.0', 'edge_agent_alerts_total{type="start"} 1.0',
                 "edge_agent_streams 1.0", "edge_agent_streams_beyond_range 0.0",
                 'edge_agent_processing_seconds_bucket{le="+Inf"} 1000.0',
                 'edge_agent_info{bundle="robot-joint-demo"',
                 # the demo bundle has no relative threshold: its one episode is calibrated
                 'edge_agent_alert_starts_total{lifted_by="calibrated"} 1.0',
                 'edge_agent_alert_starts_total{lifted_by="level_history"} 0.0'):
        assert line in metrics, line
    assert "process_resident_memory_bytes" in metrics
    body = recorder.on(STATS)[-1].json()
    for key in ("received", "rejected", "dropped", "queue_depth", "streams", "alerts",
                "latency_us", "uptime_s", "bundle_sha256"):
        assert key in body
    assert body["alert_starts_by_lift"] == {"calibrated": body["alerts"]["start"]}
    assert body["streams_beyond_range"] == 0  # the simulated joints run where it was trained
    assert set(body["latency_us"]) == {"p50", "p90", "p99"}
    status = recorder.on(STATUS)[-1]
    document = status.json()
    assert document["bundle"]["sha256"] == load_bundle(DEMO).sha256
    assert document["version"] == __version__ and document["runtime"].startswith("ai-edge")


def test_home_assistant_discovery(broker: Mosquitto, tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker,
                          homeassistant={"discovery_prefix": "homeassistant"},
                          detection={"warmup_readings": 20, "gap_reset_s": 30,
                                     "stream_expiry_s": 3})
    recorder = Recorder(broker, topics=("homeassistant/#", "edge-anomaly/#"))
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        publisher.send_all(readings("r1", 5, None, range(0, 400)))
        wait_until(lambda: len(recorder.on("homeassistant/")) >= 2, 20, "discovery")
        # 40 s of readings: one score per 5 s of reading time for the score sensor
        wait_until(lambda: len(recorder.on("edge-anomaly/streams/r1/j1/score")) >= 8, 20,
                   "scores")
        time.sleep(0.5)
        scores = recorder.on("edge-anomaly/streams/r1/j1/score")
        found = {m.topic: m for m in recorder.on("homeassistant/")}
        # republished after a broker restart (a new broker may have lost retained messages)
        broker.restart(downtime_s=1)
        late = Recorder(broker, topics=("homeassistant/#",), client_id="late")
        wait_until(lambda: len(late.on("homeassistant/")) >= 2, 30, "discovery after reconnect")
        # the stream goes silent: after stream_expiry_s its entities are removed
        wait_until(lambda: any(m.payload == b"" for m in late.on("homeassistant/")), 30,
                   "entity removal")
        publisher.close()
        late.close()
    finally:
        assert agent.stop() == 0, agent.log()
    device = {"identifiers": ["edge_anomaly_test-agent"], "name": "edge-anomaly test-agent",
              "manufacturer": "edge-anomaly", "model": "robot-joint-demo",
              "sw_version": __version__}
    availability = {"availability_topic": "edge-anomaly/agents/test-agent/availability",
                    "payload_available": "online", "payload_not_available": "offline"}
    problem = found["homeassistant/binary_sensor/edge_anomaly_test-agent/r1_j1/config"]
    score = found["homeassistant/sensor/edge_anomaly_test-agent/r1_j1_score/config"]
    assert problem.json() == {
        "name": "r1/j1 anomaly", "unique_id": "edge_anomaly_test-agent_r1_j1_anomaly",
        "device_class": "problem", "state_topic": "edge-anomaly/streams/r1/j1/status",
        "value_template": "{{ 'ON' if value == 'anomalous' else 'OFF' }}",
        "payload_on": "ON", "payload_off": "OFF",
        "json_attributes_topic": "edge-anomaly/alerts/r1/j1", **availability, "device": device}
    assert score.json() == {
        "name": "r1/j1 anomaly score", "unique_id": "edge_anomaly_test-agent_r1_j1_score",
        "state_topic": "edge-anomaly/streams/r1/j1/score",
        "value_template": "{{ value_json.score }}",
        "json_attributes_topic": "edge-anomaly/streams/r1/j1/score", "state_class": "measurement",
        "suggested_display_precision": 2, **availability, "device": device}
    enter = load_bundle(DEMO).manifest.scoring.threshold.enter
    assert all(m.json()["threshold"] == round(enter, 4) and m.json()["lifted_by"] is None
               and set(m.json()) == {"ts", "score", "threshold", "status", "lifted_by"}
               for m in scores)
    stamps = [m.json()["ts"] for m in scores]
    assert len(stamps) == 8 and all(b - a >= 5 for a, b in zip(stamps, stamps[1:]))


def test_two_agents_share_the_streams_of_one_group(broker: Mosquitto, tmp_path: Path) -> None:
    agents = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config = agent_config(folder / "agent.yaml", broker, agent_id=f"shared-{name}",
                              input={"topics": ["robots/{robot}/joints/{joint}/telemetry"],
                                     "share_group": "detectors"})
        agents.append(AgentProcess(config))
    recorder = Recorder(broker, topics=("edge-anomaly/agents/#",))
    try:
        for agent in agents:
            agent.wait_log("subscribing to $share/detectors/robots/+/joints/+/telemetry")
        publisher = Publisher(broker)
        messages = []
        for robot in range(10):
            messages += readings(f"r{robot}", 50 + robot, None, range(0, 200), n=200)
        publisher.send_all(messages)
        publisher.close()

        def processed() -> list[int]:
            last = {}
            for m in recorder.on("edge-anomaly/agents/"):
                if m.topic.endswith("/stats"):
                    last[m.topic] = m.json()["processed"]
            return list(last.values())
        wait_until(lambda: sum(processed()) == 2000, 30, "both agents to process everything")
    finally:
        for agent in agents:
            assert agent.stop() == 0, agent.log()
    counts = processed()
    assert len(counts) == 2 and all(c > 0 for c in counts), counts
