"""``edge-agent watch``: the live agent's alerts, statuses and availability as lines.

End to end: a real mosquitto, the real daemon, a recording with a fault, and ``watch`` as a
child process that connects with the agent's own config and exits after the first alert.
The line format itself is checked on hand-made messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.broker import Mosquitto, free_port
from edge_agent.simulator import FEATURES, Fault
from edge_agent.watch import Watcher, painter
from tests.mqtt_helpers import (ROOT, TOPIC, AgentProcess, Publisher, agent_config, fault_run,
                                reading_payload, tls_agent_config, tls_mosquitto)


def watch_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def test_watch_prints_the_agents_alert_as_it_is_published(broker: Mosquitto,
                                                          tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    agent = AgentProcess(config)
    watcher = watch_process("--config", str(config), "--count", "1", "--timeout", "60",
                            "--stats", "--no-color")
    try:
        agent.wait_log("subscribing to")
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first.startswith("watching edge-anomaly/# on 127.0.0.1:"), first
        values, stamps = fault_run(5, Fault("bearing", 60, 40))
        publisher = Publisher(broker)
        publisher.send_all((TOPIC.format("r1", "j1"), reading_payload(stamps[i], values[i],
                                                                     FEATURES))
                           for i in range(1000))
        publisher.close()
        out = first + watcher.stdout.read()  # the same buffered reader as readline's
        watcher.wait(60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        assert agent.stop() == 0, agent.log()
    assert watcher.returncode == 0, out
    lines = out.splitlines()
    assert any(line.endswith("agent test-agent online") for line in lines), out
    assert any("r1/j1" in line and line.endswith("warming_up") for line in lines), out
    starts = [line for line in lines if "] START  r1/j1" in line]
    assert len(starts) == 1 and " top " in starts[0] and "(expected " in starts[0], out
    # the alert's own reading time, as published
    assert starts[0].startswith("  [20"), starts[0]


def test_watch_says_when_the_count_was_not_reached_or_the_broker_is_away(
        broker: Mosquitto) -> None:
    quiet = watch_process("--broker", f"127.0.0.1:{broker.port}", "--count", "1",
                          "--timeout", "1")
    out, _ = quiet.communicate(timeout=30)
    assert quiet.returncode == 1 and "timed out after 1 s with 0 of 1 alert event(s)" in out
    port = free_port()
    away = watch_process("--broker", f"127.0.0.1:{port}", "--timeout", "1")
    out, _ = away.communicate(timeout=30)
    assert away.returncode == 1 and f"cannot connect to the broker at 127.0.0.1:{port}" in out


def test_watch_connects_as_the_agent_does_over_tls_with_a_password(tmp_path: Path) -> None:
    broker, ca_cert = tls_mosquitto(tmp_path / "certs", ("edge", "right-horse-battery"))
    try:
        config = tls_agent_config(tmp_path, broker, ca_cert, "right-horse-battery")
        agent = AgentProcess(config)
        try:
            agent.wait_log("subscribing to")
            ok = watch_process("--config", str(config), "--timeout", "2", "--no-color")
            out, _ = ok.communicate(timeout=30)
        finally:
            assert agent.stop() == 0, agent.log()
        assert ok.returncode == 0 and out.startswith("watching edge-anomaly/# on localhost:"), out
        assert "agent test-agent online" in out, out
        (tmp_path / "wrong").mkdir()
        wrong = tls_agent_config(tmp_path / "wrong", broker, ca_cert, "wrong-horse")
        refused = watch_process("--config", str(wrong), "--timeout", "5")
        out, _ = refused.communicate(timeout=30)
        assert refused.returncode == 1 and "the broker refused the connection" in out, out
    finally:
        broker.close()


def test_each_message_gets_its_line() -> None:
    w = Watcher("site", painter(False), stats=True, clock=lambda: 1.7e9)
    assert w.topics()[-1] == "site/agents/+/stats"
    alert = {"type": "end", "stream": "r1/j1", "score": 0.5, "at": "2026-01-01T00:00:01.000Z",
             "top_features": [], "reason": "recovered", "lifted_by": "level_history"}
    assert w.line("site/alerts/r1/j1", json.dumps(alert).encode()) == (
        "  [2026-01-01T00:00:01.000Z] END    r1/j1        score   0.50  recovered  lifted by "
        "level_history")
    assert w.alerts == 1
    stats = {"processed": 5, "streams": 1, "streams_beyond_range": 0, "alerts": {},
             "rejected_total": 0, "dropped": 0}
    assert w.line("site/agents/pi/stats", json.dumps(stats).encode()).endswith(
        "agent pi: processed 5, streams 1, alerts {}, rejected 0, dropped 0")
    assert w.line("site/streams/r1/j1/status", b"anomalous").endswith("r1/j1        anomalous")
    assert "forgotten" in w.line("site/streams/r1/j1/status", b"")
    assert w.line("site/alerts/r1/j1", b"{not json").endswith(
        "site/alerts/r1/j1: not an agent's payload (9 bytes)")
    assert w.line("elsewhere/alerts/x", b"{}") is None
