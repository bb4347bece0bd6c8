"""Benchmark the agent end to end on a loopback mosquitto: throughput, CPU per message, memory.

For each stream count (``--streams``, default 1, 100 and 1,000) one workload is built:
``--messages`` readings in the agent's JSON format (``{"ts": <epoch s>, "motor_current": ..,
"temperature": .., "vibration": .., "position_error": ..}``) on
``robots/r{i}/joints/j{k}/telemetry`` (stream ``r{i}/j{k}``), round-robin over the streams,
values from the joint simulator, timestamps increasing per stream. Then, on one private
mosquitto (``edge_agent.broker.Mosquitto``, QoS 0):

1. **bare subscriber**: a minimal paho VERSION2 client in its own process that only counts
   messages is the only subscriber while the publisher sends the workload; its rate is from its
   first to its last message;
2. **agent**: the real daemon (``python -m edge_agent run``) is the only subscriber while the
   publisher sends the very same bytes again; its rate is the slope of ``processed`` over its
   own ``uptime_s`` in the stats it publishes every 0.2 s, while it is busy.

The two consumers run one after the other, not side by side: on a two-core machine the broker
and the publisher already take CPU, and two Python consumers next to each other would measure
how the scheduler shares the cores rather than each consumer. ``--repeat`` alternates them and
reports medians. The publisher (its own process) writes pre-encoded MQTT 3.1.1 QoS 0 PUBLISH
packets straight to its socket, so it costs little CPU and outruns both consumers; mosquitto
queues what a consumer has not read yet (up to ``max_queued_messages``, 100,000, beyond which
it drops: losses are counted as sent - received).

Then, in this process, without MQTT: the CPU time per message of the agent's own code path
(``TopicMapper.match`` + ``PayloadParser.parse``, then ``Worker.handle`` with a no-op output)
over the same workloads; and memory with ``--rss-streams`` streams (default 10,000): the
daemon's VmRSS after a paced run that gives every stream a few readings and again after its
first periodic state snapshot, and the Python heap per stream (tracemalloc).

Run from the repository root (needs mosquitto; a few minutes)::

    python bench/agent_throughput.py [--streams 1,100,1000] [--messages N] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_agent.readbuffer import encode_varint  # noqa: E402 (after the path is set)

SUBSCRIPTION = "robots/+/joints/+/telemetry"
AGENT_ID = "bench"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the first reading's timestamp
JOINTS_PER_ROBOT = 6


# -- workload -------------------------------------------------------------------------------------
def topic_of(stream: int) -> str:
    return f"robots/r{stream // JOINTS_PER_ROBOT}/joints/j{stream % JOINTS_PER_ROBOT}/telemetry"


def reading(ts: float, row: Sequence[float], features: Sequence[str]) -> bytes:
    body: dict[str, float] = {"ts": round(ts, 3)}
    body.update({name: round(float(v), 5) for name, v in zip(features, row)})
    return json.dumps(body, separators=(",", ":")).encode()


def build_workload(streams: int, messages: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``messages`` readings, round-robin over ``streams`` streams (the k-th reading of a
    stream is stamped ``T0 + 0.1 k``). Values come from a pool of simulated joints; each stream
    reads one of them from its own offset, so neighbouring streams differ."""
    import numpy as np

    from edge_agent.simulator import FEATURES, simulate

    per_stream = math.ceil(messages / streams)
    pool_size, spread = min(streams, 8), 600
    pool = [simulate(per_stream + spread, 0.1, seed=seed * 100 + i).values
            for i in range(pool_size)]
    offsets = np.array([(s * 7919) % spread for s in range(streams)])
    topics = [topic_of(s) for s in range(streams)]
    out = []
    for n in range(messages):
        k, s = divmod(n, streams)
        row = pool[s % pool_size][offsets[s] + k]
        out.append((topics[s], reading(T0 + 0.1 * k, row, FEATURES)))
    return out


# -- raw MQTT 3.1.1 publishing --------------------------------------------------------------------
def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 120) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02]) + keepalive.to_bytes(2, "big") + _utf8(client_id)
    return b"\x10" + encode_varint(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (no packet id)."""
    body = _utf8(topic) + payload
    return b"\x30" + encode_varint(len(body)) + body


DISCONNECT = b"\xe0\x00"


def publisher_main(argv: Sequence[str]) -> int:
    """Child process: connect, say ``ready``, wait for ``go`` on stdin, write the packet file
    (optionally paced), disconnect and wait until the broker has read everything (it closes
    the connection after DISCONNECT); print timings as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="messages/s, 0: as fast as possible")
    p.add_argument("--client-id", required=True)
    args = p.parse_args(argv)
    data = memoryview(Path(args.file).read_bytes())
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(args.client_id))
    connack = sock.recv(4)
    if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
        print(json.dumps({"error": f"CONNACK {connack!r}"}), flush=True)
        return 1
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    chunk = 1 << 16
    byte_rate = args.rate * len(data) / args.count if args.rate > 0 else 0.0
    cpu0 = time.process_time()
    start = time.monotonic()
    for offset in range(0, len(data), chunk):
        sock.sendall(data[offset:offset + chunk])
        if byte_rate:
            ahead = start + (offset + chunk) / byte_rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    sent = time.monotonic()
    sock.sendall(DISCONNECT)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(120)
    while sock.recv(4096):
        pass
    done = time.monotonic()
    sock.close()
    print(json.dumps({"start": start, "sent": sent, "done": done,
                      "cpu": time.process_time() - cpu0}), flush=True)
    return 0


# -- the bare subscriber --------------------------------------------------------------------------
def subscriber_main(argv: Sequence[str]) -> int:
    """Child process: a paho VERSION2 client that only counts messages; prints JSON."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--protocol", default="5")
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    count = 0
    first = last = 0.0
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal count, first, last
        last = time.monotonic()
        if count == 0:
            first = last
        count += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{os.getpid()}",
                         protocol=(MQTTProtocolVersion.MQTTv5 if args.protocol == "5"
                                   else MQTTProtocolVersion.MQTTv311))
    client.on_connect = lambda c, u, f, rc, props: c.subscribe(SUBSCRIPTION, qos=0)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=120)
    client.loop_start()
    if not subscribed.wait(20):
        print(json.dumps({"error": "could not subscribe"}), flush=True)
        return 1
    print("ready", flush=True)
    cpu0 = _cpu_seconds(os.getpid())
    deadline = time.monotonic() + args.timeout
    while count < args.expect and time.monotonic() < deadline:
        if count and time.monotonic() - last > args.idle:
            break
        time.sleep(0.02)
    cpu = _cpu_seconds(os.getpid()) - cpu0
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"count": count, "first": first, "last": last, "cpu": cpu}), flush=True)
    return 0


# -- /proc ----------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# -- processes ------------------------------------------------------------------------------------
class Child:
    """A child process speaking lines on stdin/stdout; stopped by its pid."""

    def __init__(self, args: Sequence[str], log: Path | None = None, root: Path = ROOT) -> None:
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, *args], cwd=root, stdin=subprocess.PIPE,
            stdout=self.log if log else subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "PYTHONPATH": str(root)})

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, word: str, timeout: float = 30.0) -> None:
        line = self._line(timeout)
        if line.strip() != word:
            raise RuntimeError(f"child {self.process.args}: expected {word!r}, got {line!r}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        line = self._line(timeout)
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"child {self.process.args}: {data['error']}")
        return data

    def _line(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.stop()
            raise RuntimeError(f"child {self.process.args} said nothing in {timeout:.0f} s")
        return box[0]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        from edge_agent.broker import stop_child

        code = stop_child(self.process, timeout)
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        return code


class Observer:
    """A paho client in this process that keeps every stats snapshot the agent publishes
    (``{prefix}/agents/{id}/stats``, here every 0.2 s) with the time it arrived."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.availability = b""
        self.stats: list[tuple[float, dict[str, Any]]] = []
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-observer")
        self.client.on_connect = lambda c, u, f, rc, props: c.subscribe(
            f"edge-anomaly/agents/{AGENT_ID}/+", 1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=120)
        self.client.loop_start()
        if not subscribed.wait(20):
            raise RuntimeError("observer could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if message.topic.endswith("/stats"):
                self.stats.append((now, json.loads(message.payload)))
            elif message.topic.endswith("/availability"):
                self.availability = message.payload

    def clear(self) -> None:
        with self.lock:
            self.availability = b""
            self.stats.clear()

    def snapshots(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.stats)

    def processed(self) -> int:
        with self.lock:
            return max((s.get("processed", 0) for _, s in self.stats), default=0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- one run --------------------------------------------------------------------------------------
@dataclass
class PublisherRun:
    sent: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def write_packets(folder: Path, workload: list[tuple[str, bytes]], publishers: int
                  ) -> list[tuple[Path, int]]:
    """One packet file per publisher; a stream always goes to the same publisher (order)."""
    shares: list[list[bytes]] = [[] for _ in range(publishers)]
    owner: dict[str, int] = {}
    for topic, payload in workload:
        who = owner.setdefault(topic, len(owner) % publishers)
        shares[who].append(publish_packet(topic, payload))
    files = []
    for i, packets in enumerate(shares):
        path = folder / f"packets-{i}.bin"
        path.write_bytes(b"".join(packets))
        files.append((path, len(packets)))
    return files


def start_publishers(port: int, files: list[tuple[Path, int]], rate: float, tag: str
                     ) -> list[Child]:
    children = []
    for i, (path, count) in enumerate(files):
        if not count:
            continue
        child = Child([str(Path(__file__).resolve()), "_publish", "--port", str(port),
                       "--file", str(path), "--count", str(count),
                       "--rate", str(rate / len(files)), "--client-id", f"bench-pub-{tag}-{i}"])
        child.count = count
        child.expect("ready")
        children.append(child)
    return children


def finish_publishers(children: list[Child], timeout: float) -> PublisherRun:
    results = [c.result(timeout) for c in children]
    for c in children:
        c.stop()
    return PublisherRun(sent=sum(c.count for c in children),
                        seconds=max(r["done"] for r in results) - min(r["start"] for r in results),
                        cpu=sum(r["cpu"] for r in results))


@dataclass
class ConsumerRun:
    """One consumer's run: ``rate`` in messages/s, ``cpu`` in seconds (whole process)."""

    sent: int
    counted: int
    rate: float
    cpu: float
    queue_dropped: int = 0
    rss_kb: int = 0
    hwm_kb: int = 0
    idle_rss_kb: int = 0
    max_queue: int = 0
    publish_lag_s: float = 0.0
    streams: int = 0
    snapshot_rss_kb: int = 0  # VmRSS just after a periodic state snapshot (0: none seen)
    snapshot_bytes: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.counted

    @property
    def cpu_us(self) -> float:
        return self.cpu / max(1, self.counted) * 1e6


def bare_run(port: int, files: list[tuple[Path, int]], sent: int, protocol: str,
             timeout: float) -> tuple[ConsumerRun, PublisherRun]:
    """The bare subscriber is the only consumer; its rate is from its first to last message."""
    sub = Child([str(Path(__file__).resolve()), "_subscribe", "--port", str(port),
                 "--expect", str(sent), "--protocol", protocol, "--timeout", str(timeout)])
    try:
        sub.expect("ready")
        pubs = start_publishers(port, files, 0.0, "bare")
        for p in pubs:
            p.send("go")
        pub = finish_publishers(pubs, timeout)
        got = sub.result(timeout + 10)
    finally:
        sub.stop()
    seconds = got["last"] - got["first"]
    rate = (got["count"] - 1) / seconds if seconds > 0 else float("nan")
    return ConsumerRun(sent=sent, counted=got["count"], rate=rate, cpu=got["cpu"]), pub


def agent_config(path: Path, port: int, protocol: str, queue_size: int, max_streams: int,
                 snapshot_interval_s: float | None = None) -> Path:
    """The agent's config for a run; ``snapshot_interval_s``: how often it snapshots every
    stream's state (agents that have no snapshots ignore it)."""
    import yaml

    config = {
        "agent_id": AGENT_ID,
        "bundle": str(ROOT / "edge_agent" / "demo_bundle"),
        "broker": {"host": "127.0.0.1", "port": port, "protocol": protocol, "session": "clean",
                   "keepalive_s": 120},
        "input": {"topics": ["robots/{robot}/joints/{joint}/telemetry"], "qos": 0},
        "output": {"stats_interval_s": STATS_INTERVAL_S},
        "detection": {"warmup_readings": 2, "gap_reset_s": 60, "max_streams": max_streams},
        "queue": {"max_size": queue_size, "policy": "drop_oldest"},
        "logging": {"level": "WARNING"},
    }
    from edge_agent.config import AgentConfig

    if "state" in AgentConfig.model_fields:  # snapshots and the alert outbox: keep them here
        config["state"] = {"dir": str(path.parent / "state")}
        if snapshot_interval_s is not None:
            config["state"]["snapshot_interval_s"] = snapshot_interval_s
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


STATS_INTERVAL_S = 0.2  # the agent's main loop ticks every 0.2 s: its shortest interval
SNAPSHOT_INTERVAL_S = 30.0  # memory run: the default; the readings take less, then one comes


def busy_rate(snapshots: Sequence[tuple[float, dict[str, Any]]], total: int) -> float:
    """Processed readings per second of agent time (its ``uptime_s``) between the first and
    the last snapshot taken while it was busy (0 < processed < total)."""
    points = sorted({(s["uptime_s"], s["processed"]) for _, s in snapshots})
    busy = [(u, n) for u, n in points if 0 < n < total]
    if len(busy) < 2 or busy[-1][0] <= busy[0][0]:
        return float("nan")
    return (busy[-1][1] - busy[0][1]) / (busy[-1][0] - busy[0][0])


def publish_lag(snapshots: Sequence[tuple[float, dict[str, Any]]]) -> float:
    """How late the slowest stats snapshot arrived, relative to the most prompt one (s)."""
    offsets = [arrived - s["uptime_s"] for arrived, s in snapshots]
    return max(offsets) - min(offsets) if offsets else 0.0


def wait_done(pid: int, done: Any, timeout: float, idle_s: float = 2.0) -> None:
    """Until ``done()``, or the process has used (almost) no CPU for ``idle_s`` seconds."""
    deadline = time.monotonic() + timeout
    history: list[tuple[float, float]] = []
    while not done() and time.monotonic() < deadline:
        now = time.monotonic()
        history.append((now, _cpu_seconds(pid)))
        old = [h for h in history if h[0] <= now - idle_s]
        if old and history[-1][1] - old[-1][1] < 0.02 * idle_s:
            return
        time.sleep(0.1)


def agent_run(port: int, files: list[tuple[Path, int]], sent: int, config: Path,
              observer: Observer, timeout: float, rate: float = 0.0,
              py_spy: Path | None = None, agent_root: Path = ROOT, snapshot_wait: float = 0.0
              ) -> tuple[ConsumerRun, PublisherRun]:
    """The daemon is the only consumer; its rate comes from its own stats snapshots."""
    observer.clear()
    # a fresh state folder: the agent restores the streams of its last snapshot at start, and
    # this run's readings would then be the previous run's duplicates
    shutil.rmtree(config.parent / "state", ignore_errors=True)
    agent = Child(["-m", "edge_agent", "run", "--config", str(config)],
                  log=config.with_suffix(".log"), root=agent_root)
    spy = None
    try:
        _wait(lambda: observer.availability == b"online", 60, "the agent to come online", agent)
        time.sleep(0.6)  # start-up done: idle RSS, and a few prompt stats snapshots
        idle_rss = _status_kb(agent.pid, "VmRSS")
        if py_spy is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                    "--nonblocking", "--threads", "-r", "100", "-f", "raw",
                                    "-o", str(py_spy), "-p", str(agent.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        pubs = start_publishers(port, files, rate, "agent")
        cpu0 = _cpu_seconds(agent.pid)
        for p in pubs:
            p.send("go")
        pub = finish_publishers(pubs, timeout)
        wait_done(agent.pid, lambda: observer.processed() >= sent, timeout)
        cpu = _cpu_seconds(agent.pid) - cpu0
        rss = _status_kb(agent.pid, "VmRSS")
        snapshot_rss = snapshot_bytes = 0
        if snapshot_wait:  # until the agent has written a periodic snapshot of every stream
            snapshot = config.parent / "state" / "snapshot.json"
            since = time.time()
            deadline = time.monotonic() + snapshot_wait
            while time.monotonic() < deadline:
                if snapshot.is_file() and snapshot.stat().st_mtime > since:
                    time.sleep(0.5)
                    snapshot_rss = _status_kb(agent.pid, "VmRSS")
                    snapshot_bytes = snapshot.stat().st_size
                    break
                time.sleep(0.1)
        hwm = _status_kb(agent.pid, "VmHWM")
        if spy is not None:
            os.kill(spy.pid, signal.SIGINT)
            spy.wait(30)
            spy = None
        code = agent.stop(timeout=60)
        if code != 0:
            raise RuntimeError(f"the agent exited with {code}; see {config.with_suffix('.log')}")
        _wait(lambda: observer.availability == b"offline", 30, "the agent's final stats")
    finally:
        if spy is not None and spy.poll() is None:
            os.kill(spy.pid, signal.SIGKILL)
            spy.wait(10)
        agent.stop()
    snapshots = observer.snapshots()
    final = snapshots[-1][1] if snapshots else {}
    processed = final.get("processed", 0)
    return ConsumerRun(sent=sent, counted=processed, rate=busy_rate(snapshots, processed),
                       cpu=cpu, queue_dropped=final.get("dropped", 0), rss_kb=rss, hwm_kb=hwm,
                       idle_rss_kb=idle_rss,
                       max_queue=max((s.get("queue_depth", 0) for _, s in snapshots), default=0),
                       publish_lag_s=publish_lag(snapshots),
                       streams=final.get("streams", 0), snapshot_rss_kb=snapshot_rss,
                       snapshot_bytes=snapshot_bytes), pub


def _wait(predicate: Any, timeout: float, what: str, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if child is not None and child.process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {child.process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# -- in process -----------------------------------------------------------------------------------
class NullOutput:
    """The worker's output (``publish_alert``, ``publish``, ``ack``), discarding everything."""

    def publish_alert(self, *args: Any, **kwargs: Any) -> None:
        pass

    def publish(self, *args: Any, **kwargs: Any) -> None:
        pass

    def ack(self, *args: Any, **kwargs: Any) -> None:
        pass


def agent_pieces(config_path: Path) -> tuple[Any, Any, Any]:
    """The agent's topic mapper, payload parser and worker, built as the daemon builds them."""
    from edge_agent.app import detector_settings
    from edge_agent.bundle import load_bundle
    from edge_agent.config import load
    from edge_agent.detector import Detector
    from edge_agent.messages import PayloadParser
    from edge_agent.model import StatefulModel
    from edge_agent.payloads import Topics
    from edge_agent.stats import Stats
    from edge_agent.topics import TopicMapper
    from edge_agent.worker import Worker

    config = load(config_path)
    bundle = load_bundle(config.bundle)
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        detector_settings(config))
    worker = Worker(detector, lambda limit, timeout: [], NullOutput(),
                    Topics(config.output.prefix, config.agent_id), Stats(),
                    agent_id=config.agent_id, max_streams=config.detection.max_streams,
                    publish_scores=config.output.scores)
    return (TopicMapper(config.input.topics, config.input.share_group),
            PayloadParser(bundle.manifest.features, config.input.payload), worker)


@dataclass
class InProcess:
    parse_us: float
    handle_us: float
    messages: int


def in_process(config_path: Path, workload: list[tuple[str, bytes]]) -> InProcess:
    """CPU time per message of the agent's own work (this thread's CPU clock): topic mapping
    and payload parsing (the network thread's share), then ``Worker.handle``."""
    from edge_agent.worker import Item

    mapper, parser, worker = agent_pieces(config_path)
    clock = time.thread_time
    start = clock()
    items = []
    for topic, payload in workload:
        route = mapper.match(topic)
        parsed = parser.parse(payload)
        items.append(Item(route.stream_id, topic, route.fields, parsed.values, parsed.ts,
                          time.time(), 0, 0))
    parsed_at = clock()
    handle = worker.handle
    for item in items:
        handle(item)
    done = clock()
    n = len(workload)
    return InProcess((parsed_at - start) / n * 1e6, (done - parsed_at) / n * 1e6, n)


def steady_handle(config_path: Path, streams: int, readings: int, warm: int) -> float:
    """``Worker.handle`` µs per reading once every stream is past its baseline and warm-up:
    ``warm`` readings per stream untimed, then ``readings`` timed (round-robin)."""
    from edge_agent.worker import Item

    workload = build_workload(streams, streams * (warm + readings), seed=3)
    mapper, parser, worker = agent_pieces(config_path)
    items = []
    for topic, payload in workload:
        route = mapper.match(topic)
        parsed = parser.parse(payload)
        items.append(Item(route.stream_id, topic, route.fields, parsed.values, parsed.ts,
                          0.0, 0, 0))
    cut = streams * warm
    for item in items[:cut]:
        worker.handle(item)
    start = time.thread_time()
    for item in items[cut:]:
        worker.handle(item)
    return (time.thread_time() - start) / (len(items) - cut) * 1e6


def heap_per_stream(config_path: Path, workload: list[tuple[str, bytes]], streams: int
                    ) -> tuple[float, float | None]:
    """Python heap (tracemalloc) per stream: held by the agent's per-stream memory, and the
    most that writing one state snapshot (``Worker.encoded_streams`` into
    ``snapshots.write_temp``, as the worker does) holds on top of it at any moment."""
    from edge_agent import snapshots
    from edge_agent.worker import Item

    mapper, parser, worker = agent_pieces(config_path)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for topic, payload in workload:
        route = mapper.match(topic)
        parsed = parser.parse(payload)
        worker.handle(Item(route.stream_id, topic, route.fields, parsed.values, parsed.ts,
                           0.0, 0, 0))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    with tempfile.TemporaryDirectory() as folder:
        snapshots.write_temp(Path(folder), "0" * 64, worker.encoded_streams())
        snapshot = (tracemalloc.get_traced_memory()[1] - after) / streams
    tracemalloc.stop()
    return (after - before) / streams, snapshot


# -- report ---------------------------------------------------------------------------------------
def table(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(rows[0]) + " |",
                          "|" + "|".join("---:" for _ in rows[0]) + "|"]
                         + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    fmt = lambda r: "  ".join(cell.rjust(w) for cell, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths)]
                     + [fmt(r) for r in rows[1:]])


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """Lines summarising a py-spy ``raw`` (collapsed stacks) profile: the share of samples per
    thread, and the functions most often on top of the stack (self time)."""
    from collections import Counter

    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        thread = frames[0].split(":", 1)[-1].strip() or frames[0]
        threads[thread] += n
        leaf = frames[-1]
        leaves[f"{thread_label(thread)}: {leaf}"] += n
    if not total:
        return ["(no samples)"]
    lines = ["samples by thread: " + ", ".join(
        f"{thread_label(t)} {n / total:.0%}" for t, n in threads.most_common())]
    lines += [f"{n / total:6.1%}  {leaf}" for leaf, n in leaves.most_common(top)]
    return lines


def thread_label(name: str) -> str:
    if "edge-agent-worker" in name:
        return "worker"
    if "paho" in name or "Thread-" in name:
        return "network"
    if "MainThread" in name or "main" in name.lower():
        return "main"
    return name


@dataclass
class Row:
    streams: int
    bare: list[ConsumerRun]
    agent: list[ConsumerRun]
    pub_bare: list[PublisherRun]
    pub_agent: list[PublisherRun]
    inproc: InProcess | None


def median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return float("nan")
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def spread(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    return f"{min(finite):,.0f}-{max(finite):,.0f}" if finite else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_publish"]:
        return publisher_main(argv[1:])
    if argv[:1] == ["_subscribe"]:
        return subscriber_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="1,100,1000", help="stream counts, comma-separated")
    p.add_argument("--messages", type=int, default=50_000,
                   help="readings per run (default 50,000; keep it under mosquitto's "
                   "max_queued_messages, 100,000, or a slow consumer loses messages)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per stream count and consumer; the table shows medians")
    p.add_argument("--publishers", type=int, default=1, help="publisher processes")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1",
                   help="MQTT version of both consumers (the agent's default: 3.1.1)")
    p.add_argument("--rss-streams", type=int, default=10_000,
                   help="streams of the memory run (0: skip it)")
    p.add_argument("--rss-readings", type=int, default=3, help="readings per stream there")
    p.add_argument("--rss-rate", type=float, default=3000.0,
                   help="publishing rate of the memory run (msg/s), below the agent's, so "
                   "that RSS measures the streams rather than a backlog")
    p.add_argument("--no-in-process", dest="in_process", action="store_false",
                   help="skip the in-process CPU measurement")
    p.add_argument("--py-spy", type=Path, default=None, metavar="PREFIX",
                   help="record each agent run with py-spy (pip install py-spy) into "
                   "PREFIX-<streams>.txt and print a summary (profiling slows the agent)")
    p.add_argument("--agent-root", type=Path, default=ROOT, metavar="DIR",
                   help="run the daemon from this checkout instead (to measure a change to "
                   "edge_agent; the in-process figures still use this checkout's code)")
    p.add_argument("--timeout", type=float, default=180.0, help="per run (s)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--keep", action="store_true",
                   help="keep the work folder (configs, agent logs, broker log)")
    args = p.parse_args(argv)

    from edge_agent.broker import Mosquitto

    counts = [int(s) for s in args.streams.split(",") if s.strip()]
    folder = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    queue_size = max(args.messages, args.rss_streams * args.rss_readings) + 1000
    max_streams = max(counts + [args.rss_streams]) + 10
    broker = Mosquitto(folder=folder / "broker")
    observer = None
    rows: list[Row] = []
    memory = None
    steady = None
    profiles: list[tuple[int, Path]] = []
    broker_log = ""
    try:
        broker.start()
        observer = Observer(broker.port)
        config = agent_config(folder / "agent.yaml", broker.port, args.protocol, queue_size,
                              max_streams)
        for streams in counts:
            workload = build_workload(streams, args.messages)
            files = write_packets(folder, workload, args.publishers)
            row = Row(streams, [], [], [], [], None)
            for attempt in range(args.repeat):
                bare, pub = bare_run(broker.port, files, args.messages, args.protocol,
                                     args.timeout)
                row.bare.append(bare)
                row.pub_bare.append(pub)
                spy = None
                if args.py_spy is not None and attempt == 0:
                    spy = Path(f"{args.py_spy}-{streams}.txt")
                    profiles.append((streams, spy))
                agent, pub = agent_run(broker.port, files, args.messages, config, observer,
                                       args.timeout, py_spy=spy, agent_root=args.agent_root)
                row.agent.append(agent)
                row.pub_agent.append(pub)
                print(f"[{streams:,} streams, run {attempt + 1}: bare {bare.rate:,.0f} msg/s, "
                      f"agent {agent.rate:,.0f} msg/s]", file=sys.stderr, flush=True)
            if args.in_process:
                row.inproc = in_process(config, workload)
            rows.append(row)
        if args.rss_streams:
            n = args.rss_streams * args.rss_readings
            workload = build_workload(args.rss_streams, n, seed=2)
            files = write_packets(folder, workload, 1)
            memory_config = agent_config(folder / "agent-memory.yaml", broker.port,
                                         args.protocol, queue_size, max_streams,
                                         snapshot_interval_s=SNAPSHOT_INTERVAL_S)
            agent, pub = agent_run(broker.port, files, n, memory_config, observer, args.timeout,
                                   rate=args.rss_rate, agent_root=args.agent_root,
                                   snapshot_wait=SNAPSHOT_INTERVAL_S + 15)
            memory = (agent, pub, *heap_per_stream(config, workload, args.rss_streams))
        if args.in_process and counts:
            steady_streams = min(max(counts), 1000)
            steady = (steady_streams, steady_handle(config, steady_streams, 20, 320))
    finally:
        if observer is not None:
            observer.close()
        broker.stop()
        broker_log = broker.log_tail(1000)
        if args.keep:
            print(f"work folder kept: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    report(args, rows, memory, steady, profiles, broker_log)
    return 0


def report(args: argparse.Namespace, rows: list[Row], memory: Any,
           steady: tuple[int, float] | None, profiles: list[tuple[int, Path]],
           broker_log: str) -> None:
    bullet = "-" if args.markdown else "*"
    print(f"Agent throughput on loopback mosquitto, QoS 0, MQTT {args.protocol} "
          f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}); "
          f"{args.messages:,} readings per run"
          + (f", median of {args.repeat} runs" if args.repeat > 1 else ""))
    print()
    header = ["streams", "publisher msg/s", "bare subscriber msg/s", "agent msg/s",
              "agent / bare", "bare CPU µs/msg", "agent CPU µs/msg", "parse + handle µs/msg",
              "lost (bare / agent)", "agent RSS MB"]
    body = []
    details = []
    for row in rows:
        bare_rate = median([r.rate for r in row.bare])
        agent_rate = median([r.rate for r in row.agent])
        pub_rate = median([r.rate for r in row.pub_bare + row.pub_agent])
        ratio = median([a.rate / b.rate for a, b in zip(row.agent, row.bare) if b.rate > 0])
        body.append([
            f"{row.streams:,}", f"{pub_rate:,.0f}", f"{bare_rate:,.0f}", f"{agent_rate:,.0f}",
            f"{ratio:.2f}", f"{median([r.cpu_us for r in row.bare]):.0f}",
            f"{median([r.cpu_us for r in row.agent]):.0f}",
            (f"{row.inproc.parse_us:.1f} + {row.inproc.handle_us:.1f}" if row.inproc else "—"),
            f"{max(r.lost for r in row.bare)} / {max(r.lost for r in row.agent)}",
            f"{median([r.rss_kb / 1024 for r in row.agent]):.1f}"])
        last = row.agent[-1]
        runs = (f"bare {spread([r.rate for r in row.bare])}, agent "
                f"{spread([r.rate for r in row.agent])} msg/s; " if args.repeat > 1 else "")
        details.append(
            f"{row.streams:,} streams: {runs}agent queue drops "
            f"{sum(r.queue_dropped for r in row.agent)}, deepest queue {last.max_queue:,}, "
            f"stats published up to {max(r.publish_lag_s for r in row.agent):.1f} s late; "
            f"RSS idle {last.idle_rss_kb / 1024:.1f} MB, peak {last.hwm_kb / 1024:.1f} MB")
    print(table([header] + body, args.markdown))
    print()
    notes = [
        "Bare subscriber and agent run one after the other, each the only subscriber, on the "
        "same broker, with byte-identical publisher runs (pre-encoded MQTT 3.1.1 QoS 0 "
        "packets written by one process); they never compete for the CPUs with each other.",
        "bare msg/s: its first to its last message. agent msg/s: processed readings per "
        "second of agent time between its first and last stats snapshot (every 0.2 s) taken "
        "while busy. agent / bare: median of the ratios of consecutive pairs of runs. "
        "publisher msg/s: until the broker had read every packet.",
        "CPU µs/msg: utime+stime of the whole consumer process (all threads, MQTT included) / "
        "messages. parse + handle: the agent's own code in-process without MQTT (thread CPU "
        "time): TopicMapper.match + PayloadParser.parse, then Worker.handle.",
        "lost: sent - counted (bare) or sent - processed (agent); mosquitto drops QoS 0 "
        "messages for a consumer more than max_queued_messages (100,000) behind "
        f"(broker log lines about it: {broker_log.count('dropped')}).",
        "agent RSS: VmRSS when the run is processed (it includes whatever the agent queued).",
        "'stats published late': how much later than the most prompt one the slowest stats "
        "message reached an observer client (agent uptime vs arrival); the agent's QoS 1 publishes (stream status, "
        "stats, alerts) leave through the same network thread that works through the backlog "
        "mosquitto has queued for the agent, so while the publisher outruns the agent they "
        "arrive seconds late.",
    ] + details
    if steady is not None:
        notes.append(f"Worker.handle once every stream is past its baseline (300 readings) and "
                     f"warm-up ({steady[0]:,} streams): {steady[1]:.1f} µs/reading; with 100+ "
                     "streams the runs above stay within the baseline phase.")
    for note in notes:
        print(f"{bullet} {note}")
    if memory is not None:
        agent, pub, heap, snapshot_heap = memory
        print()
        print(f"Memory with {args.rss_streams:,} streams ({args.rss_readings} readings each, "
              f"published at {pub.rate:,.0f} msg/s; floor: RSS under 100 MB)")
        print()
        mib = lambda kb: f"{kb / 1024:.1f}" if kb else "—"  # noqa: E731
        print(table([["streams", "readings processed", "agent RSS idle MB",
                      "agent RSS with the streams MB", "agent RSS after a state snapshot MB",
                      "agent peak RSS MB", "heap per stream", "snapshot heap per stream"],
                     [f"{agent.streams:,}", f"{agent.counted:,} of {agent.sent:,}",
                      mib(agent.idle_rss_kb), mib(agent.rss_kb), mib(agent.snapshot_rss_kb),
                      mib(agent.hwm_kb), f"{heap / 1024:.2f} KiB",
                      f"{snapshot_heap / 1024:.2f} KiB" if snapshot_heap is not None else "—"]],
                    args.markdown))
        print()
        print(f"{bullet} MB here = MiB (VmRSS / 1024). 'with the streams': once every reading is "
              "processed; 'after a state snapshot': once the agent has then written its "
              f"periodic snapshot of every stream (state.snapshot_interval_s "
              f"{SNAPSHOT_INTERVAL_S:g}, the default), "
              + (f"snapshot.json {agent.snapshot_bytes / 1024 / 1024:.1f} MiB; "
                 if agent.snapshot_bytes else "")
              + "peak: VmHWM. Heap per stream: tracemalloc in this process over the same "
              "readings through Worker.handle (stream state, routes, statuses, topic cache); "
              "snapshot heap: the most that writing one snapshot holds on top of that (the "
              "worker writes it stream by stream). "
              f"Deepest agent queue {agent.max_queue:,}.")
    for streams, path in profiles:
        print()
        print(f"py-spy profile of the agent, {streams:,} streams ({path.name}):")
        print()
        for line in profile_summary(path):
            print(f"    {line}")


if __name__ == "__main__":
    sys.exit(main())
