"""Nothing lost: each promise provoked for real — a mosquitto the test kills and restarts, an
agent process the test stops or SIGKILLs, a burst, garbage, damaged files, TLS and passwords."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent import snapshots
from edge_agent.broker import Mosquitto
from edge_agent.outbox import Outbox
from edge_agent.simulator import FEATURES, Fault
from tests.mqtt_helpers import (ROOT, TOPIC, AgentProcess, Publisher, Recorder, agent_config,
                                expected_alerts, fault_run, make_ca, needs_mosquitto,
                                reading_payload, tls_agent_config, tls_mosquitto, wait_until)

pytestmark = [needs_mosquitto]
AVAILABILITY = "edge-anomaly/agents/test-agent/availability"
STATS = "edge-anomaly/agents/test-agent/stats"


def messages(robot: str, values: np.ndarray, stamps: np.ndarray, rows: range):
    return [(TOPIC.format(robot, "j1"), reading_payload(stamps[i], values[i], FEATURES))
            for i in rows]


def last_stats(recorder: Recorder) -> dict:
    return [m.json() for m in recorder.on(STATS)][-1]


def wait_processed(recorder: Recorder, count: int, timeout: float = 60) -> None:
    wait_until(lambda: bool(recorder.on(STATS)) and last_stats(recorder)["processed"] >= count,
               timeout, f"{count} processed readings")


def wait_offline(recorder: Recorder) -> None:
    wait_until(lambda: [m.payload for m in recorder.on(AVAILABILITY)][-1:] == [b"offline"], 15,
               "the agent's offline message")


def alert_events(recorder: Recorder, stream_id: str) -> list[tuple[str, str]]:
    return [(a["type"], a["at"]) for a in recorder.alerts(f"edge-anomaly/alerts/{stream_id}")]


# -- broker restart / network loss ---------------------------------------------------------

def test_broker_restart_reconnects_resubscribes_and_loses_nothing(broker: Mosquitto,
                                                                 tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    values, stamps = fault_run(5, Fault("bearing", 60, 40), 2000)
    expected = expected_alerts(config, values, stamps, "r1/j1")
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        publisher = Publisher(broker)
        publisher.send_all(messages("r1", values, stamps, range(0, 700)))
        recorder = Recorder(broker, client_id="recorder-1")
        wait_processed(recorder, 700)
        recorder.close()
        publisher.close()
        broker.stop()  # a restart (e.g. an upgrade): mosquitto saves its sessions
        time.sleep(1.5)
        broker.start()  # same port, same persistence folder
        recorder = Recorder(broker, client_id="recorder-2")
        wait_until(lambda: "(resumed session)" in agent.log(), 30, "the agent to reconnect")
        publisher = Publisher(broker)
        publisher.send_all(messages("r1", values, stamps, range(700, 2000)))
        wait_processed(recorder, 2000)
        wait_until(lambda: len(recorder.alerts()) >= len(expected) - 1, 30, "alerts")
        publisher.close()
    finally:
        assert agent.stop() == 0, agent.log()
    log = agent.log()
    assert "disconnected from broker" in log and "retrying with backoff" in log
    assert last_stats(recorder)["reconnects"] == 1
    # the first alert may have been published before the crash and seen by recorder-1 only
    assert alert_events(recorder, "r1/j1") == [e for e in expected if e[1] > "2026-01-01T00:01:10"]


def test_readings_and_alerts_flow_on_after_the_agent_was_away(broker: Mosquitto,
                                                              tmp_path: Path) -> None:
    """Readings published while the agent is stopped are delivered when it returns (persistent
    session, QoS 1); its state snapshot makes the continuation exact — the open episode ends
    with an ``end``, never a second ``start``."""
    config = agent_config(tmp_path / "agent.yaml", broker)
    values, stamps = fault_run(5, Fault("bearing", 60, 40), 2000)
    expected = expected_alerts(config, values, stamps, "r1/j1")
    recorder = Recorder(broker)
    publisher = Publisher(broker)
    agent = AgentProcess(config)
    agent.wait_log("subscribing to")
    publisher.send_all(messages("r1", values, stamps, range(0, 800)))  # the episode starts
    wait_until(lambda: bool(recorder.alerts()), 30, "the start alert")
    wait_processed(recorder, 800)
    assert agent.stop() == 0
    wait_offline(recorder)
    publisher.send_all(messages("r1", values, stamps, range(800, 2000)))  # nobody listening
    agent = AgentProcess(config)
    try:
        wait_until(lambda: "restored 1 stream(s)" in agent.log(), 30, "the snapshot restore")
        wait_until(lambda: len(recorder.alerts()) >= len(expected), 60, "all alerts")
    finally:
        assert agent.stop() == 0, agent.log()
    publisher.close()
    got = alert_events(recorder, "r1/j1")
    assert got == expected
    assert [t for t, _ in got].count("start") == 1
    assert len({a["alert_id"] for a in recorder.alerts()}) == 1


# -- durable outbox ----------------------------------------------------------------------------

def test_outbox_is_bounded_dropping_oldest_updates_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite", max_rows=4)
    for kind in ("start", "update", "update", "end", "start", "update"):
        box.add("a", kind, "t", kind.encode())
    assert [r.kind for r in box.pending()] == ["start", "end", "start", "update"]
    assert box.dropped == 2
    box.add("b", "end", "t", b"e")
    box.add("b", "end", "t", b"e2")  # no update left: the oldest of any kind goes
    assert [r.kind for r in box.pending()] == ["end", "start", "end", "end"]
    assert box.dropped == 4
    box.close()
    again = Outbox(tmp_path / "outbox.sqlite", max_rows=4)  # it is on disk
    assert len(again) == 4


def test_alerts_left_unacknowledged_by_a_crash_are_sent_at_the_next_start(
        broker: Mosquitto, tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    values, stamps = fault_run(5, Fault("bearing", 60, 40), 2000)
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    agent.wait_log("subscribing to")
    publisher = Publisher(broker)
    publisher.send_all(messages("r1", values, stamps, range(0, 2000)))
    wait_until(lambda: bool(recorder.alerts()), 30, "an alert")
    os.kill(agent.pid, signal.SIGKILL)  # power cut
    agent.stop()
    publisher.close()
    seen = {(a["alert_id"], a["type"], a["at"]) for a in recorder.alerts()}
    # what a crash can leave behind: an alert stored but never acknowledged
    box = sqlite3.connect(tmp_path / "state" / "outbox.sqlite")
    box.execute("INSERT INTO outbox (alert_id, kind, topic, payload, created) VALUES "
                "(?, ?, ?, ?, ?)", ("left-behind", "update", "edge-anomaly/alerts/r1/j1",
                                    json.dumps({"alert_id": "left-behind", "type": "update",
                                                "at": "x"}).encode(), 0.0))
    box.commit()
    box.close()
    agent = AgentProcess(config)
    try:
        agent.wait_log("re-sending")
        wait_until(lambda: any(a["alert_id"] == "left-behind" for a in recorder.alerts()), 30,
                   "the re-sent alert")
        wait_until(lambda: not _outbox_rows(tmp_path), 10, "the outbox to empty")
    finally:
        assert agent.stop() == 0, agent.log()
    received = [(a["alert_id"], a["type"], a["at"]) for a in recorder.alerts()]
    assert seen <= set(received)
    starts = {(i, at) for i, kind, at in received if kind == "start"}
    assert len({i for i, _ in starts}) == len(starts)  # duplicates only ever share their id


def _outbox_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite") as box:
        return int(box.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


# -- state across restarts ---------------------------------------------------------------------

def test_bad_or_foreign_snapshots_are_reported_and_ignored(broker: Mosquitto,
                                                           tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    state = tmp_path / "state"
    state.mkdir()
    cases = [(b'{"format": 2, "bundle_sha256": "ab', "corrupt or truncated"),
             (json.dumps({"format": snapshots.FORMAT, "bundle_sha256": "0" * 64, "saved_at": 0,
                          "streams": {}}).encode(), "taken with another bundle")]
    for content, message in cases:
        (state / "snapshot.json").write_bytes(content)
        agent = AgentProcess(config)
        try:
            agent.wait_log(message)
            agent.wait_log("subscribing to")
        finally:
            assert agent.stop() == 0, agent.log()


# -- overload -----------------------------------------------------------------------------------

def test_a_burst_drops_by_policy_counts_per_stream_and_recovers(broker: Mosquitto,
                                                                tmp_path: Path) -> None:
    """A burst far beyond what the worker can take: the agent is frozen (SIGSTOP) for two
    seconds while 30,000 readings arrive, then everything floods in at once."""
    config = agent_config(tmp_path / "agent.yaml", broker, queue={"max_size": 20},
                          input={"topics": ["robots/{robot}/joints/{joint}/telemetry"],
                                 "qos": 0},
                          broker={"host": broker.host, "port": broker.port, "keepalive_s": 10})
    recorder = Recorder(broker)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
        rss_before = _rss_kb(agent.pid)
        publisher = Publisher(broker)
        burst = []
        for robot in range(20):
            values, stamps = fault_run(100 + robot, None, 1500)
            burst += messages(f"b{robot}", values, stamps, range(1500))
        order = np.random.default_rng(0).permutation(len(burst))
        os.kill(agent.pid, signal.SIGSTOP)
        started = time.monotonic()
        for i in order:  # 30,000 readings, QoS 0, while the agent cannot read
            publisher.send(*burst[i], qos=0)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        frozen = time.monotonic() - started
        os.kill(agent.pid, signal.SIGCONT)
        assert frozen < 6, "the freeze itself must stay well inside the keepalive (10 s)"
        time.sleep(12)  # longer than the keepalive: the link must survive the flood
        values, stamps = fault_run(7, Fault("bearing", 60, 40), 1500)
        for start in range(0, 1500, 50):  # a sensor's pace (~1,000/s), not a flood: the
            # 20-reading queue would rightly drop readings of a stream sent faster than the
            # worker takes them
            publisher.send_all(messages("calm", values, stamps, range(start, start + 50)))
            time.sleep(0.05)
        wait_until(lambda: bool(recorder.alerts("edge-anomaly/alerts/calm/")), 60,
                   "alerts after the burst")
        rss_after = _rss_kb(agent.pid)
        publisher.close()
    finally:
        os.kill(agent.pid, signal.SIGCONT)
        assert agent.stop() == 0, agent.log()
    wait_offline(recorder)
    stats = last_stats(recorder)  # the final one, published after the queue was drained
    print(f"burst: {stats['received']} received, {stats['processed']} processed, "
          f"{stats['dropped']} dropped over {len(stats['dropped_by_stream'])} streams; "
          f"reconnects {stats['reconnects']}; RSS {rss_before} -> {rss_after} kB")
    assert stats["dropped"] > 1000
    assert len([s for s in stats["dropped_by_stream"] if s.startswith("b")]) > 10
    assert stats["received"] == stats["processed"] + stats["dropped"] + stats["deferred"]
    assert stats["reconnects"] == 0 and "disconnected from broker" not in agent.log()
    assert rss_after - rss_before < 60_000, (rss_before, rss_after)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- bad files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    ("missing", "bundle folder not found"),
    ("truncated", "truncated or replaced"),
    ("tampered", "does not match the manifest"),
    ("incompatible", "schema_version 7 is not supported"),
])
def test_a_bad_bundle_stops_start_up(tmp_path: Path, damage: str, message: str) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "edge_agent" / "demo_bundle", bundle)
    model = bundle / "model.tflite"
    if damage == "missing":
        shutil.rmtree(bundle)
    elif damage == "truncated":
        model.write_bytes(model.read_bytes()[:-100])
    elif damage == "tampered":
        data = bytearray(model.read_bytes())
        data[-50] ^= 1
        model.write_bytes(bytes(data))
    else:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["schema_version"] = 7
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    broker = Mosquitto(port=1, folder=tmp_path / "broker")  # never started: start-up fails first
    config = agent_config(tmp_path / "agent.yaml", broker, bundle=str(bundle))
    result = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_config_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("bundle: x\ninput: {topics: ['a/{b}']}\nqueue: {polcy: drop_oldest}\n")
    result = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{config}: queue.polcy: unknown key" in result.stderr


# -- TLS and credentials -------------------------------------------------------------------------

@pytest.fixture()
def tls_broker(tmp_path: Path):
    certs = tmp_path / "certs"
    broker, ca_cert = tls_mosquitto(certs, ("edge", "right-horse-battery"))
    yield broker, ca_cert, certs
    broker.close()


def test_tls_with_password_works_end_to_end(tls_broker, tmp_path: Path) -> None:
    broker, ca_cert, _ = tls_broker
    config = tls_agent_config(tmp_path, broker, ca_cert, "right-horse-battery")
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
    finally:
        assert agent.stop() == 0, agent.log()
    assert "right-horse-battery" not in agent.log()


@pytest.mark.parametrize("problem", ["wrong_password", "untrusted_ca", "hostname_mismatch"])
def test_tls_and_credential_problems_are_clear_and_retried(tls_broker, tmp_path: Path,
                                                           problem: str) -> None:
    broker, ca_cert, certs = tls_broker
    password, ca, host = "right-horse-battery", ca_cert, "localhost"
    if problem == "wrong_password":
        password = "wrong-horse-battery"
    elif problem == "untrusted_ca":
        _, ca = make_ca(certs / "other", "other-ca")
    else:
        host = "127.0.0.1"  # the certificate names localhost only
    config = tls_agent_config(tmp_path, broker, ca, password, host=host)
    agent = AgentProcess(config)
    expected = {"wrong_password": "refused the connection: Not authorized (check "
                                  "broker.username and the password file/variable)",
                "untrusted_ca": "certificate is not trusted",
                "hostname_mismatch": "certificate is not trusted"}[problem]
    try:
        agent.wait_log(expected)
        time.sleep(4)  # several retries with backoff
        assert agent.process.poll() is None, "the agent must keep retrying, not exit"
        if problem == "wrong_password":
            assert agent.log().count("refused the connection") >= 2
        if problem == "hostname_mismatch":
            assert "Hostname mismatch" in agent.log() or "IP address mismatch" in agent.log()
    finally:
        assert agent.stop() == 0, agent.log()
    assert "horse-battery" not in agent.log()
    check = subprocess.run([sys.executable, "-m", "edge_agent", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert "horse-battery" not in check.stdout + check.stderr


def test_hostname_check_can_be_turned_off_for_brokers_addressed_by_ip(tls_broker,
                                                                      tmp_path: Path) -> None:
    broker, ca_cert, _ = tls_broker
    config = tls_agent_config(tmp_path, broker, ca_cert, "right-horse-battery",
                              host="127.0.0.1", check_hostname=False)
    agent = AgentProcess(config)
    try:
        agent.wait_log("subscribing to")
    finally:
        assert agent.stop() == 0, agent.log()
