"""``edge-agent demo``: the whole product, live, in a minute, with nothing installed beforehand.

1. a real MQTT broker on a free loopback port: mosquitto when installed, otherwise an embedded
   Python broker (amqtt) — or the broker named by ``--broker``;
2. the real agent (``edge-agent run`` as a child process, with the shipped demo bundle);
3. simulated robots: three robots with two joints each publish their sensors 10 times a second
   of simulated time (``--speed`` times faster in wall time), through the same replay code as
   ``edge-agent replay``; faults are injected at known times: a bearing that starts
   vibrating, a stuck position encoder and a motor that overheats;
4. a live view of every stream (warming up, normal, anomalous, score) and of each alert as the
   agent publishes it; at the end a summary: faults injected vs alerts raised, detection delay,
   false alerts. Everything started is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from .broker import Mosquitto, find_mosquitto, free_port, stop_child, wait_for_port
from .replay import Feed, Progress, play, simulated
from .simulator import FEATURES, Fault, simulate, training_joint
from .watch import STATUS_COLOURS, alert_line, painter, use_color

DEMO_BUNDLE = Path(__file__).resolve().parent / "demo_bundle"
PREFIX = "edge-anomaly"
TOPIC = "robots/{robot}/joints/{joint}/telemetry"
START_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time starts here
PERIOD_S = 0.1
STREAMS = ["r1/shoulder", "r1/elbow", "r2/shoulder", "r2/wrist", "r3/shoulder", "r3/elbow"]
#: (stream, kind, start, duration) as fractions of the simulated span
FAULT_PLAN = [("r1/elbow", "bearing", 0.20, 0.20), ("r2/wrist", "stuck_sensor", 0.45, 0.15),
              ("r3/shoulder", "overheat", 0.65, None)]
#: a new alert this long after its fault ended (simulated s) counts as a false alert
RECOVERY_GRACE_S = 90.0


@dataclass
class Injected:
    stream: str
    kind: str
    start_s: float
    end_s: float | None
    first_alert_s: float | None = None

    @property
    def delay_s(self) -> float | None:
        return None if self.first_alert_s is None else self.first_alert_s - self.start_s


@dataclass
class Board:
    """What the demo has seen on the broker (written by the monitor's network thread)."""

    status: dict[str, str] = field(default_factory=dict)
    score: dict[str, float] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    online: bool = False
    processed: int = 0
    printed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        try:
            with self.lock:
                if topic.startswith(f"{PREFIX}/alerts/"):
                    self.alerts.append(json.loads(msg.payload))
                elif topic.endswith("/status") and "/streams/" in topic:
                    self.status[topic.split("/streams/")[1][: -len("/status")]] = \
                        msg.payload.decode()
                elif topic.endswith("/availability"):
                    self.online = msg.payload == b"online"
                elif topic.endswith("/stats"):
                    self.processed = json.loads(msg.payload)["processed"]
                elif topic.endswith("/score") and "/streams/" in topic:
                    self.score[topic.split("/streams/")[1][: -len("/score")]] = \
                        json.loads(msg.payload)["score"]
        except (ValueError, KeyError, UnicodeDecodeError):
            pass


class Demo:
    def __init__(self, *, duration: float, speed: float, broker: str | None, color: bool,
                 embedded: bool = False, seed: int = 2026) -> None:
        self.embedded = embedded
        self.duration = duration
        self.speed = speed
        self.external_broker = broker
        self._paint = painter(color)
        self.seed = seed
        self.folder = Path(tempfile.mkdtemp(prefix="edge-demo-"))
        self.board = Board()
        self.stop = threading.Event()
        self.children: dict[str, subprocess.Popen[bytes] | Mosquitto] = {}
        self.pids: dict[str, int] = {}
        self.span_s = duration * speed
        self.agent_id = f"demo-{os.getpid()}"
        self.injected = [Injected(s, kind, frac * self.span_s,
                                  None if dur is None else (frac + dur) * self.span_s)
                         for s, kind, frac, dur in FAULT_PLAN]

    # -- the parts -----------------------------------------------------------------------
    def start_broker(self) -> tuple[str, int, str, str]:
        """(host, port, protocol, description) of the broker the demo uses."""
        if self.external_broker:
            host, _, port = self.external_broker.rpartition(":")
            return host or "127.0.0.1", int(port), "3.1.1", f"{self.external_broker} (given)"
        if find_mosquitto() and not self.embedded:
            broker = Mosquitto(folder=self.folder / "mosquitto").start()
            assert broker.process is not None
            self.children["broker"] = broker
            self.pids["broker"] = broker.process.pid
            return broker.host, broker.port, "5", f"mosquitto on {broker.address}"
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "edge_agent.embedded_broker",
                                    "--port", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.children["broker"] = process
        self.pids["broker"] = process.pid
        wait_for_port("127.0.0.1", port, timeout=20)
        return "127.0.0.1", port, "3.1.1", f"embedded amqtt broker on 127.0.0.1:{port}"

    def start_agent(self, host: str, port: int, protocol: str) -> subprocess.Popen[bytes]:
        config = {
            "agent_id": self.agent_id,
            "bundle": str(DEMO_BUNDLE),
            "broker": {"host": host, "port": port, "protocol": protocol, "session": "clean",
                       "reconnect_min_s": 1, "reconnect_max_s": 5},
            "input": {"topics": [TOPIC], "qos": 0},
            "output": {"prefix": PREFIX, "scores": True, "stats_interval_s": 1},
            "detection": {"warmup_readings": 20, "gap_reset_s": 30},
            "alerts": {"enter_readings": 3, "exit_readings": 30, "update_interval_s": 10,
                       "cooldown_readings": 50},
            "state": {"dir": str(self.folder / "state")},
            "logging": {"level": "WARNING"},
        }
        path = self.folder / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        self.agent_log = self.folder / "agent.log"
        process = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                    str(path)], stdout=open(self.agent_log, "wb"),
                                   stderr=subprocess.STDOUT)
        self.children["agent"] = process
        self.pids["agent"] = process.pid
        return process

    def feeds(self) -> list[Feed]:
        n = int(self.span_s / PERIOD_S)
        feeds = []
        for index, stream in enumerate(STREAMS):
            faults = [Fault(f.kind, f.start_s, None if f.end_s is None else f.end_s - f.start_s)
                      for f in self.injected if f.stream == stream]
            sim = simulate(n, PERIOD_S, seed=self.seed + index,
                           params=training_joint(7, index), faults=faults)  # type: ignore[arg-type]
            robot, joint = stream.split("/")
            recording = simulated(sim.values, sim.t, START_EPOCH, FEATURES, stream)
            feeds.append(Feed(TOPIC.format(robot=robot, joint=joint), recording, FEATURES))
        return feeds

    # -- the show --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        interrupted = False
        monitor = publisher = None
        try:
            host, port, protocol, description = self.start_broker()
            print(f"broker: {description}")
            agent = self.start_agent(host, port, protocol)
            monitor = self.client(host, port, "monitor")
            monitor.on_message = self.board.on_message
            monitor.subscribe([(f"{PREFIX}/alerts/#", 1), (f"{PREFIX}/streams/#", 1),
                               (f"{PREFIX}/agents/{self.agent_id}/#", 1)])
            self.wait_agent_online(agent)
            publisher = self.client(host, port, "publisher")
            print(f"agent: pid {agent.pid}, demo bundle; {len(STREAMS)} simulated joints at "
                  f"{1 / PERIOD_S:g} readings/s, {self.speed:g}x speed, {self.span_s:.0f} s "
                  "simulated")
            client = publisher
            feeds = self.feeds()
            total = sum(len(f.recording) for f in feeds)
            thread = threading.Thread(
                target=play, daemon=True,
                args=(lambda topic, payload: client.publish(topic, payload, qos=0), feeds),
                kwargs={"speed": self.speed, "stop": self.stop,
                        "progress": Progress(total, stream=open(os.devnull, "w"))})
            thread.start()
            while thread.is_alive():
                self.draw(time.monotonic() - started)
                thread.join(0.5)
            self.wait_processed(total, started)
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
            print("\ninterrupted: stopping everything")
        finally:
            for client in (publisher, monitor):
                if client is not None:
                    client.loop_stop()
                    client.disconnect()
            self.shutdown()
        summary = self.summary(interrupted)
        # The agent's config, log and state are worth a look only when something went wrong.
        summary["folder"], summary["folder_kept"] = str(self.folder), not succeeded(summary)
        if not summary["folder_kept"]:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.print_summary(summary)
        return summary

    def client(self, host: str, port: int, role: str) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-demo-{role}-{os.getpid()}")
        client.max_inflight_messages_set(1000)
        client.connect(host, port)
        client.loop_start()
        return client

    def wait_processed(self, total: int, started: float, patience_s: float = 5.0) -> None:
        """Let the agent catch up with what was published (until it stops making progress)."""
        last, last_change = -1, time.monotonic()
        while self.board.processed < total and time.monotonic() - last_change < patience_s:
            if self.board.processed != last:
                last, last_change = self.board.processed, time.monotonic()
            self.draw(time.monotonic() - started)
            time.sleep(0.5)
        self.draw(time.monotonic() - started)

    def wait_agent_online(self, agent: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Until the agent's retained availability says ``online``."""
        deadline = time.monotonic() + timeout
        while not self.board.online:
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited:\n{self.agent_log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not come online")
            time.sleep(0.05)

    def shutdown(self) -> None:
        """Stop the agent (SIGTERM, clean) and the broker, by pid."""
        agent = self.children.pop("agent", None)
        if isinstance(agent, subprocess.Popen):
            stop_child(agent, timeout=20)
        broker = self.children.pop("broker", None)
        if isinstance(broker, Mosquitto):
            broker.close()
        elif isinstance(broker, subprocess.Popen):
            stop_child(broker)
            if broker.stderr is not None:
                broker.stderr.close()

    # -- output ----------------------------------------------------------------------------
    def draw(self, elapsed: float) -> None:
        with self.board.lock:
            new_alerts = self.board.alerts[self.board.printed:]
            self.board.printed = len(self.board.alerts)
            status = dict(self.board.status)
            score = dict(self.board.score)
        for alert in new_alerts:
            print(alert_line(alert, f"{_sim_seconds(alert['at']):6.1f} s", self._paint))
        if int(elapsed * 2) % 10 == 0:
            line = "  ".join(f"{s}: {self._status(status.get(s, '-'))} {score.get(s, 0):5.2f}"
                             for s in STREAMS)
            print(f"[{elapsed:5.1f} s] {line}")

    def _status(self, status: str) -> str:
        colour = STATUS_COLOURS.get(status)
        label = {"warming_up": "warming", "anomalous": "ANOMALY"}.get(status, status)
        return self._paint(f"{label:7s}", colour) if colour else f"{label:7s}"

    def summary(self, interrupted: bool) -> dict[str, Any]:
        starts = [a for a in self.board.alerts if a["type"] == "start"]
        false_alerts = []
        for alert in starts:
            at = _sim_seconds(alert["at"])
            match = next((f for f in self.injected if f.stream == alert["stream"]
                          and f.start_s <= at and (f.end_s is None
                                                   or at <= f.end_s + RECOVERY_GRACE_S)), None)
            if match is None:
                false_alerts.append(alert)
            elif match.first_alert_s is None or at < match.first_alert_s:
                match.first_alert_s = at
        still_running = {name: pid for name, pid in self.pids.items() if _alive(pid)}
        return {
            "interrupted": interrupted,
            "simulated_s": self.span_s,
            "faults": [{"stream": f.stream, "kind": f.kind, "start_s": round(f.start_s, 1),
                        "detected": f.first_alert_s is not None,
                        "delay_s": None if f.delay_s is None else round(f.delay_s, 1)}
                       for f in self.injected],
            "alerts": {kind: sum(a["type"] == kind for a in self.board.alerts)
                       for kind in ("start", "update", "end")},
            "false_alerts": [{"stream": a["stream"], "at_s": round(_sim_seconds(a["at"]), 1)}
                             for a in false_alerts],
            "pids": self.pids,
            "still_running": still_running,
        }

    def print_summary(self, summary: dict[str, Any]) -> None:
        print("\nsummary (times are simulated seconds from the start)")
        print(f"  {'fault':14s} {'stream':12s} {'injected at':>11s}  detected after")
        for fault in summary["faults"]:
            found = (f"{fault['delay_s']:.1f} s" if fault["detected"] else
                     self._paint("not detected", "1;31"))
            print(f"  {fault['kind']:14s} {fault['stream']:12s} {fault['start_s']:10.1f}s  "
                  f"{found}")
        detected = sum(f["detected"] for f in summary["faults"])
        print(f"  faults detected: {detected}/{len(summary['faults'])}; alerts published: "
              f"{summary['alerts']}; false alerts: {len(summary['false_alerts'])}")
        if summary["still_running"]:
            print(f"  WARNING: still running: {summary['still_running']}")
        else:
            print("  broker and agent stopped; nothing left running")
        if summary["folder_kept"]:
            print(f"  the agent's config, log and state are kept in {summary['folder']}")


def succeeded(summary: dict[str, Any]) -> bool:
    """Every injected fault alerted and nothing left running, or a clean Ctrl-C."""
    return summary["interrupted"] or (all(f["detected"] for f in summary["faults"])
                                      and not summary["still_running"])


def _sim_seconds(iso_text: str) -> float:
    from .csvdata import parse_timestamp

    return parse_timestamp(iso_text) - START_EPOCH


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not running: it only waits to be reaped
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def run(duration: float, speed: float, broker: str | None, summary_json: str | None,
        embedded: bool = False) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # a live display: each line as it happens, also through a pipe (tee, a test, a log)
        # instead of in 8 KiB blocks
        sys.stdout.reconfigure(line_buffering=True)
    # Ctrl-C stops the demo cleanly even when it was started as a background job of a script,
    # which inherits SIGINT ignored (Python then installs no KeyboardInterrupt handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    demo = Demo(duration=duration, speed=speed, broker=broker, color=use_color(),
                embedded=embedded)
    summary = demo.run()
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2))
    return 0 if succeeded(summary) else 1
