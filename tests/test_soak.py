"""Soak: continuous streaming through two broker restarts and one agent SIGKILL (bounded to
about two minutes). Every fault still gets its alert episode, each alert id starts once,
no stream's state is corrupted, memory stays bounded; the figures are printed at the end."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.broker import Mosquitto
from edge_agent.csvdata import parse_timestamp
from edge_agent.simulator import FEATURES, Fault, simulate
from tests.mqtt_helpers import (T0, AgentProcess, Recorder, agent_config, needs_mosquitto,
                                reading_payload, wait_until)

pytestmark = [needs_mosquitto, pytest.mark.soak]
RATE_HZ = 25.0           # readings per second per stream (wall time)
N = 1900                 # readings per stream: 76 s of wall time, 190 s simulated
FAULTS = {"r1/j1": Fault("bearing", 50, 40), "r2/j1": Fault("stuck_sensor", 120, 30),
          "r3/j1": None, "r4/j1": None}
GRACE_S = 90.0           # an episode may outlast its fault by this much (recovery tail)


class PacedPublisher(threading.Thread):
    """Publishes every stream at RATE_HZ with QoS 1 from a persistent session, so readings
    published while the broker is down are queued by paho and sent after it returns."""

    def __init__(self, broker: Mosquitto) -> None:
        super().__init__(daemon=True)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-publisher",
                                  clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.sims = {s: simulate(N, 0.1, seed=300 + i, faults=[f] if f else [])
                     for i, (s, f) in enumerate(FAULTS.items())}
        self.sent = 0
        self.acked: set[int] = set()
        self.mids: set[int] = set()
        self.client.on_publish = lambda client, userdata, mid, rc, props: self.acked.add(mid)

    def run(self) -> None:
        started = time.monotonic()
        for i in range(N):
            delay = started + i / RATE_HZ - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for stream_id, sim in self.sims.items():
                robot = stream_id.split("/")[0]
                payload = reading_payload(T0 + float(sim.t[i]), sim.values[i], FEATURES)
                info = self.client.publish(f"robots/{robot}/joints/j1/telemetry", payload, qos=1)
                self.mids.add(info.mid)  # queued by paho even while the broker is down
                self.sent += 1

    def all_delivered(self) -> bool:
        """The broker acknowledged every reading (mids are unique below 65,536 sends)."""
        return self.mids <= self.acked


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_soak_two_broker_restarts_and_an_agent_sigkill(broker: Mosquitto, tmp_path: Path
                                                       ) -> None:
    config = agent_config(tmp_path / "agent.yaml", broker)
    recorder = Recorder(broker, client_id="soak-recorder")  # persistent: sees everything
    recorder.client.reconnect_delay_set(1, 1)
    agent = AgentProcess(config)
    agent.wait_log("subscribing to")
    publisher = PacedPublisher(broker)
    publisher.start()
    reconnects: list[float] = []
    rss: list[float] = []
    processed_before_kill = 0

    def restart_broker(kill: bool) -> None:
        log_before = agent_ref[0].log().count("connected to")
        broker.stop(kill=kill)
        time.sleep(2.0)
        broker.start()
        started = time.monotonic()
        wait_until(lambda: agent_ref[0].log().count("connected to") > log_before, 60,
                   "the agent to reconnect")
        reconnects.append(time.monotonic() - started)

    agent_ref = [agent]
    time.sleep(15)
    rss.append(rss_mb(agent.pid))
    restart_broker(kill=False)                       # 1: a broker restart (upgrade)
    time.sleep(15)
    rss.append(rss_mb(agent.pid))
    stats = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")]
    processed_before_kill = stats[-1]["processed"] if stats else 0
    os.kill(agent.pid, signal.SIGKILL)               # 2: the agent loses power
    agent.stop()
    time.sleep(2)
    agent = AgentProcess(config)
    agent_ref[0] = agent
    agent.wait_log("restored")
    time.sleep(15)
    restart_broker(kill=True)                        # 3: the broker crashes
    publisher.join(timeout=120)
    wait_until(publisher.all_delivered, 60, "the publisher to deliver everything")

    def settled() -> bool:
        stats = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")]
        return bool(stats) and stats[-1]["queue_depth"] == 0 and stats[-1]["outbox_pending"] == 0
    time.sleep(3)
    wait_until(settled, 60, "the agent to settle")
    rss.append(rss_mb(agent.pid))
    assert agent.stop() == 0, agent.log()
    wait_until(lambda: [m.payload for m in recorder.on(
        "edge-anomaly/agents/test-agent/availability")][-1:] == [b"offline"], 15, "offline")
    publisher.client.loop_stop()
    recorder.close()
    final = [m.json() for m in recorder.on("edge-anomaly/agents/test-agent/stats")][-1]

    # every episode: one start (re-sent copies share the id), then updates, then maybe an end
    episodes: dict[str, list[dict]] = defaultdict(list)
    for alert in recorder.alerts():
        episodes[alert["alert_id"]].append(alert)
    for alert_id, events in episodes.items():
        starts = {(e["type"], e["at"]) for e in events if e["type"] == "start"}
        assert len(starts) == 1, (alert_id, events)
        assert len({e["stream"] for e in events}) == 1
    by_stream: dict[str, list[float]] = defaultdict(list)
    for events in episodes.values():
        start = next(e for e in events if e["type"] == "start")
        by_stream[start["stream"]].append(parse_timestamp(start["started_at"]) - T0)
    for stream_id, fault in FAULTS.items():
        if fault is None:
            assert not by_stream.get(stream_id), (stream_id, by_stream)
        else:
            assert by_stream.get(stream_id), f"no episode for the {fault.kind} on {stream_id}"
            end = fault.start_s + (fault.duration_s or 0)
            for started in by_stream[stream_id]:
                assert fault.start_s <= started <= end + GRACE_S, (stream_id, started)

    # state intact: the final clean snapshot restores every stream
    snapshot = json.loads((tmp_path / "state" / "snapshot.json").read_text())
    assert snapshot["clean"] is True and set(snapshot["streams"]) == set(FAULTS)
    for data in snapshot["streams"].values():
        prediction = np.frombuffer(base64.b64decode(data["prediction"]["b64"]),
                                   dtype=data["prediction"]["dtype"])
        assert prediction.shape == (len(FEATURES),) and np.all(np.isfinite(prediction))
    assert max(rss) < 150, rss
    assert rss[-1] - rss[0] < 40, rss

    print("\nsoak figures")
    print(f"  readings sent {publisher.sent}; processed before the SIGKILL "
          f"{processed_before_kill}, by the restarted agent {final['processed']}; rejected "
          f"{final['rejected_total']}; dropped {final['dropped']}")
    expected = sum(f is not None for f in FAULTS.values())
    print(f"  alert episodes expected >= {expected}, received {len(episodes)} "
          f"({sum(len(v) for v in episodes.values())} events)")
    print(f"  broker reconnect times: {', '.join(f'{t:.1f} s' for t in reconnects)}")
    print(f"  agent RSS over the run: {', '.join(f'{m:.0f} MB' for m in rss)}")
