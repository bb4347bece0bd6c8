"""Real-process helpers for end-to-end tests: a mosquitto broker, an agent process, a recorder.

Everything talks to 127.0.0.1 only, and every process a test starts is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app import detector_settings
from edge_agent.broker import Mosquitto, find_mosquitto
from edge_agent.bundle import load_bundle
from edge_agent.config import load as load_agent_config
from edge_agent.detector import Detector
from edge_agent.model import StatefulModel
from edge_agent.payloads import iso
from edge_agent.simulator import Fault, simulate

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: where the tests' simulated recordings start
TOPIC = "robots/{}/joints/{}/telemetry"
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None,
                                     reason="mosquitto is not installed (apt-get install mosquitto)")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """A paho client that records every message on ``topics`` (thread-safe)."""

    def __init__(self, broker: Mosquitto, topics: Sequence[str] = ("#",), qos: int = 1,
                 client_id: str | None = None) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"recorder-{os.getpid()}-{id(self)}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, qos) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("recorder could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), msg.qos))

    def on(self, prefix: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def alerts(self, prefix: str = "edge-anomaly/alerts/") -> list[dict[str, Any]]:
        return [m.json() for m in self.on(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """Publishes readings with QoS 1 and waits until the broker has them all."""

    def __init__(self, broker: Mosquitto, client_id: str = "test-publisher",
                 tls_ca: Path | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(1000)
        if tls_ca is not None:  # a broker from tls_mosquitto: its certificate names localhost
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.connect("localhost" if tls_ca is not None else broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str, qos: int = 1) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def send_all(self, messages: Iterable[tuple[str, bytes | str]], qos: int = 1,
                 timeout: float = 60) -> int:
        infos = [self.send(topic, payload, qos) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return len(infos)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def fault_run(seed: int, fault: Fault | None, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """A simulated joint recording (values, epoch timestamps from ``T0``, 10 Hz), with one
    fault or none."""
    sim = simulate(n, 0.1, seed=seed, faults=[fault] if fault else [])
    return sim.values, T0 + sim.t


def reading_payload(ts: float, values: np.ndarray, features: Sequence[str]) -> bytes:
    from edge_agent.payloads import iso

    body = {"ts": iso(ts)}
    body.update({name: float(v) for name, v in zip(features, values)})
    return json.dumps(body).encode()


def expected_alerts(config_path: Path, values: np.ndarray, stamps: np.ndarray, stream: str
                    ) -> list[tuple[str, str]]:
    """(type, at) of the alerts the detector raises offline for this recording."""
    config = load_agent_config(config_path)
    bundle = load_bundle(config.bundle)
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        detector_settings(config))
    state = detector.new_stream(stream)
    events = []
    for row, ts in zip(values, stamps):
        events += [(a.type, iso(a.at)) for a in detector.process(state, row, float(ts)).alerts]
    return events


def agent_config(path: Path, server: Mosquitto, /, **overrides: Any) -> Path:
    """Write an agent config for ``broker`` (demo bundle) with nested ``overrides``."""
    config: dict[str, Any] = {
        "agent_id": "test-agent",
        "bundle": str(ROOT / "edge_agent" / "demo_bundle"),
        "broker": {"host": server.host, "port": server.port, "reconnect_min_s": 1,
                   "reconnect_max_s": 2},
        "input": {"topics": ["robots/{robot}/joints/{joint}/telemetry"], "qos": 1},
        "detection": {"warmup_readings": 20, "gap_reset_s": 30},
        "alerts": {"enter_readings": 3, "exit_readings": 30, "update_interval_s": 10,
                   "cooldown_readings": 50},
        "output": {"stats_interval_s": 1},
        "state": {"dir": str(path.parent / "state"), "snapshot_interval_s": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


class AgentProcess:
    """``edge-agent run`` as a child process (the real daemon), stopped by its pid."""

    def __init__(self, config: Path, env: dict[str, str] | None = None,
                 args: Sequence[str] = ()) -> None:
        self.log_path = config.with_suffix(".log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.log() or self.process.poll() is not None, timeout,
                   f"{text!r} in the agent log")
        if text not in self.log():
            raise AssertionError(f"agent exited ({self.process.returncode}) before logging "
                                 f"{text!r}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


@dataclass
class Running:
    """What a test gets from the ``broker`` fixture family."""

    broker: Mosquitto
    cleanups: list[Callable[[], None]] = field(default_factory=list)


# -- TLS ------------------------------------------------------------------------------------------

def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def make_server_cert(folder: Path, ca_key: Path, ca_cert: Path, host: str) -> tuple[Path, Path]:
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "san.cnf"
    ext.write_text(f"subjectAltName=DNS:{host}\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
                    str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out",
                    str(cert)], check=True, capture_output=True)
    return key, cert


def tls_mosquitto(certs: Path, user: tuple[str, str] | None = None) -> tuple[Mosquitto, Path]:
    """A started mosquitto that only speaks TLS (certificate for ``localhost`` signed by a
    fresh CA, returned for clients to trust), with a password file when ``user`` is given."""
    ca_key, ca_cert = make_ca(certs, "test-ca")
    key, cert = make_server_cert(certs, ca_key, ca_cert, "localhost")
    extra = f"cafile {ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
    if user is not None:
        passwords = certs / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), *user], check=True,
                       capture_output=True)
        os.chmod(passwords, 0o600)
        extra += f"password_file {passwords}\n"
    broker = Mosquitto(anonymous=user is None, extra_config=extra)
    broker.start()
    return broker, ca_cert


def tls_agent_config(tmp_path: Path, broker: Mosquitto, ca_file: Path, password: str,
                     host: str = "localhost", check_hostname: bool = True) -> Path:
    """An agent config for a :func:`tls_mosquitto` broker: user ``edge``, ``password`` in a
    file, TLS trusting ``ca_file``."""
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    return agent_config(tmp_path / "agent.yaml", broker, broker={
        "host": host, "port": broker.port, "username": "edge", "password_file": str(secret),
        "tls": {"enabled": True, "ca_file": str(ca_file), "check_hostname": check_hostname},
        "reconnect_min_s": 1, "reconnect_max_s": 2})
