"""The agent process: wire config, bundle, MQTT, queue and worker; handle signals; shut down.

Threads and who does what (the gunicorn way: signal handlers only record the signal, the main
loop acts on it):

* paho's network thread: ``on_messages`` maps each topic to a stream, parses the payload and
  enqueues the batch's readings — never blocks, never raises;
* the worker thread: model, scoring, alerts, publishing (:mod:`edge_agent.worker`);
* the main thread: waits for signals and runs periodic duties.

SIGTERM/SIGINT: stop taking messages (readings that arrive from then on are not acknowledged,
so a persistent session redelivers them next time), let the worker finish the queue, wait for
the broker to acknowledge pending alerts, publish ``offline``, disconnect, exit 0.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import __version__, metrics, snapshots
from .alerts import AlertSettings
from .bundle import Bundle, load_bundle, state_carries_over
from .config import AgentConfig
from .detector import Detector, DetectorSettings, parts_note
from .errors import BundleError, EdgeError
from .homeassistant import Discovery
from .logs import RateLimitedLog
from .messages import PayloadParser
from .model import StatefulModel, load_runtime
from .mqtt import MqttLink
from .outbox import Outbox
from .payloads import Topics, encode
from .queueing import BoundedQueue
from .signals import Requests
from .readbuffer import Incoming
from .stats import Stats
from .systemd import Notifier, WatchdogGate
from .topics import TopicMapper
from .worker import Item, Worker, ack_only

log = logging.getLogger("edge_agent")


def detector_settings(config: AgentConfig) -> DetectorSettings:
    a, d = config.alerts, config.detection
    return DetectorSettings(
        warmup_readings=d.warmup_readings, gap_reset_s=d.gap_reset_s,
        threshold_scale=d.threshold_scale, seasonal_timezone=d.seasonal_timezone,
        alerts=AlertSettings(enter_readings=a.enter_readings, exit_readings=a.exit_readings,
                             update_interval_s=a.update_interval_s,
                             cooldown_readings=a.cooldown_readings))


class MqttOutput:
    """The worker's output over the MQTT link, with alerts going through the durable outbox.

    An alert is stored before it is published; the broker's PUBACK (paho's ``on_publish``, in
    the network thread) only records the acknowledgement, and the main loop deletes acknowledged
    rows in batches, so the network thread never waits for the disk.
    """

    def __init__(self, link: MqttLink, outbox: Outbox, alert_qos: int) -> None:
        self.link = link
        self.outbox = outbox
        self.alert_qos = alert_qos
        self._rows: dict[int, int] = {}  # message id -> outbox row
        self._acked: list[int] = []
        self._lock = threading.Lock()

    def publish_alert(self, alert_id: str, kind: str, topic: str, payload: bytes) -> None:
        row = self.outbox.add(alert_id, kind, topic, payload)
        self._send(row, topic, payload)

    def _send(self, row: int, topic: str, payload: bytes) -> None:
        with self._lock:  # so on_publish cannot see the mid before it is recorded
            info = self.link.publish(topic, payload, qos=self.alert_qos)
            if self.alert_qos == 0:
                self._acked.append(row)
            else:
                self._rows[info.mid] = row

    def resend_stored(self) -> int:
        """Publish what a previous run left unacknowledged (at start, once)."""
        pending = self.outbox.pending()
        for row in pending:
            self._send(row.row_id, row.topic, row.payload)
        return len(pending)

    def acknowledged(self, mid: int) -> None:
        """paho's on_publish: the broker has the message (network thread; no disk here)."""
        with self._lock:
            row = self._rows.pop(mid, None)
            if row is not None:
                self._acked.append(row)

    def flush(self) -> None:
        """Delete acknowledged alerts from the outbox (main thread)."""
        with self._lock:
            rows, self._acked = self._acked, []
        self.outbox.remove(rows)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.link.publish(topic, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        self.link.ack(mid, qos)

    def wait_sent(self, timeout: float) -> int:
        """Wait until the broker acknowledged every alert; returns how many are still stored."""
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            left = len(self.outbox)
            if left == 0 or time.monotonic() >= deadline or not self.link.connected.is_set():
                return left
            time.sleep(0.02)


class Agent:
    """One running agent. ``run()`` blocks until a stop signal (or :meth:`request_stop`)."""

    def __init__(self, config: AgentConfig, bundle: Bundle | None = None,
                 requests: Requests | None = None) -> None:
        self.config = config
        self.requests = requests or Requests()  # stop / reload, recorded by signal handlers
        self.bundle = bundle or load_bundle(config.bundle)
        self.runtime = load_runtime(None if config.runtime == "auto" else config.runtime)
        manifest = self.bundle.manifest
        self.model = StatefulModel(self.bundle.model_path, manifest.model, self.runtime)
        self.detector = Detector(self.bundle, self.model, detector_settings(config))
        self.topics = Topics(config.output.prefix, config.agent_id)
        self.mapper = TopicMapper(config.input.topics, config.input.share_group)
        self.parser = PayloadParser(manifest.features, config.input.payload)
        self.queue: BoundedQueue[Item] = BoundedQueue(config.queue.max_size, config.queue.policy)
        self.stats = Stats()
        self.rejects = RateLimitedLog(logging.getLogger("edge_agent.input"),
                                      config.logging.reject_log_interval_s)
        self.accepting = True
        self.state_dir = config.state_dir
        self.outbox = Outbox(self.state_dir / "outbox.sqlite", config.state.outbox_max_alerts)
        self.link = MqttLink(config.broker, config.client_id,
                             subscriptions=self.mapper.subscriptions(), qos=config.input.qos,
                             availability_topic=self.topics.availability,
                             on_messages=self.on_messages, on_connected=self._on_connected,
                             on_published=self._on_published)
        self.output = MqttOutput(self.link, self.outbox, config.output.qos)
        ha = config.homeassistant
        self.discovery = Discovery(ha.discovery_prefix or "", self.topics, agent_id=config.agent_id,
                                   model=manifest.name, version=__version__) if ha.active else None
        scores = config.output.scores or self.discovery is not None
        score_interval = (config.output.score_interval_s if config.output.scores
                          else ha.score_interval_s)
        self.worker = Worker(self.detector, self.queue.get_batch, self.output, self.topics,
                             self.stats, agent_id=config.agent_id,
                             max_streams=config.detection.max_streams, publish_scores=scores,
                             score_interval_s=score_interval,
                             expiry_s=config.detection.stream_expiry_s,
                             discovery=self.discovery, remove_expired_entities=ha.remove_expired,
                             snapshot_dir=self.state_dir, queue_size=config.queue.max_size)
        snapshots.discard_temps(self.state_dir)
        restored, note = snapshots.read(self.state_dir, self.bundle.sha256, self.detector)
        self.worker.restore(restored)
        self.restore_note = note
        self.notifier = Notifier()
        self.watchdog = WatchdogGate(self.notifier, heartbeat=lambda: self.worker.heartbeat)
        self._first_connect = threading.Event()
        self._resent = False
        self.metrics_server: Any = None
        self.last_reload: dict[str, Any] | None = None
        self._bundle_seen = self._bundle_signature()
        self._bundle_changed = False

    def describe(self) -> str:
        m = self.bundle.manifest
        return (f"edge-agent {__version__}: runtime {self.runtime.describe()}; bundle "
                f"{m.name!r} sha256 {m.model.sha256[:16]}… ({self.bundle.path}); features "
                f"{', '.join(m.features)}; threshold enter {self.detector.enter:.3g} / exit "
                f"{self.detector.exit:.3g}; "
                f"{parts_note(m.scoring, self.config.detection.seasonal_timezone)}")

    # -- network thread ----------------------------------------------------------------------
    def _on_connected(self) -> None:
        self.publish_status()
        for stream_id in list(self.worker.streams):  # discovery configs after every reconnect
            self.worker.announce(stream_id)
        if not self._resent:
            self._resent = True
            resent = self.output.resend_stored()
            if resent:
                log.info("re-sending %d alert(s) a previous run left unacknowledged", resent)
        self._first_connect.set()

    def _on_published(self, mid: int) -> None:
        self.output.acknowledged(mid)

    def on_messages(self, messages: list[Incoming]) -> None:
        """Map, parse, enqueue a batch of messages. Runs in paho's thread: cheap, never blocks,
        never raises."""
        stats = self.stats
        stats.received += len(messages)
        if not self.accepting:
            stats.deferred += len(messages)
            return  # not acknowledged: the broker redelivers them to the next session
        match, parse, now = self.mapper.match, self.parser.parse, time.time()
        items = []
        for topic, payload, qos, mid, _retain in messages:
            route = match(topic)
            if route is None:
                stats.unknown_topic += 1
                self.rejects.warning("unknown_topic", "ignoring topic %r: matches no input "
                                     "pattern", topic)
                if qos:  # acknowledged in its turn, after the readings before it
                    items.append(ack_only(topic, mid, qos))
                continue
            parsed = parse(payload)
            if type(parsed) is str:
                stats.rejected[parsed] += 1
                self.rejects.warning(parsed, "rejected a reading on %r: %s", topic, parsed)
                if qos:
                    items.append(ack_only(topic, mid, qos))
                continue
            items.append(Item(route.stream_id, topic, route.fields, parsed.values, parsed.ts,
                              now, mid, qos))
        for dropped in self.queue.put_many(items):
            if dropped.values is None:  # an acknowledgement waiting its turn: send it now
                self.link.ack(dropped.mid, dropped.qos)
                continue
            stats.dropped[dropped.stream_id] += 1
            self.rejects.warning("queue_full", "queue full (%d): dropped a reading of stream "
                                 "%s (policy %s)", self.queue.max_size, dropped.stream_id,
                                 self.config.queue.policy)
            self.link.ack(dropped.mid, dropped.qos)

    # -- main thread ---------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None) -> None:
        self.requests.request_stop(signum)

    # -- model reload (main thread) --------------------------------------------------------------
    def reload(self, reason: str) -> bool:
        """Load the bundle again; swap it in between two messages if it is valid.

        An invalid bundle changes nothing: the old model keeps running, and the error is
        logged and published on the agent's status topic."""
        self.notifier.reloading(f"reloading the bundle ({reason})")
        old = self.bundle.manifest
        try:
            bundle = load_bundle(self.config.bundle)
            if bundle.manifest.features != old.features:
                raise BundleError(f"{bundle.path}: features {bundle.manifest.features} differ "
                                  f"from the running model's {old.features}; restart the "
                                  "agent to switch to a model with other inputs")
            model = StatefulModel(bundle.model_path, bundle.manifest.model, self.runtime)
            detector = Detector(bundle, model, detector_settings(self.config))
        except EdgeError as exc:
            log.error("model reload (%s) failed, the old model keeps running: %s", reason, exc)
            self.last_reload = {"at": time.time(), "ok": False, "reason": reason,
                                "error": str(exc)}
            self.publish_status()
            self.notifier.ready(self.status_line())
            return False
        keep = state_carries_over(old, bundle.manifest)
        if not self.worker.swap(detector, keep):
            log.error("the worker did not take the new model in time")
        self.bundle, self.model, self.detector = bundle, model, detector
        self.last_reload = {"at": time.time(), "ok": True, "reason": reason,
                            "kept_state": keep, "sha256": bundle.sha256}
        log.info("model reloaded (%s): %s sha256 %s…; streams %s", reason, bundle.manifest.name,
                 bundle.sha256[:16], "keep their state" if keep else "start over (warm-up)")
        self.publish_status()
        self.notifier.ready(self.status_line())
        return True

    def _bundle_signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                                for p in Path(self.config.bundle).iterdir() if p.is_file()))
        except OSError:
            return ()

    def _watch_bundle(self, now: float) -> None:
        """Reload when the bundle folder changed and then stayed unchanged for one interval
        (a copy in progress is not loaded half-way)."""
        signature = self._bundle_signature()
        if signature == self._bundle_seen:
            if self._bundle_changed:
                self._bundle_changed = False
                self.reload("the bundle folder changed")
            return
        self._bundle_seen = signature
        self._bundle_changed = True

    # -- status ----------------------------------------------------------------------------------
    def status_document(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {"agent_id": self.config.agent_id, "version": __version__,
                "runtime": self.runtime.describe(), "started_at": self.stats.started,
                "bundle": {"name": m.name, "sha256": m.model.sha256, "path": str(self.bundle.path),
                           "created": m.created, "features": m.features},
                "last_reload": self.last_reload}

    def publish_status(self) -> None:
        self.link.publish(self.topics.agent("status"), encode(self.status_document()), qos=1,
                          retain=True)

    def start(self) -> None:
        log.info(self.describe())
        log.info("state in %s: %s", self.state_dir, self.restore_note)
        if self.config.metrics.enabled:
            self.metrics_server = metrics.serve(
                self.config.metrics.host, self.config.metrics.port, metrics.AgentCollector(
                    self.stats_snapshot,
                    lambda: (list(self.stats.latency_counts), self.stats.latency_sum),
                    lambda: {"version": __version__, "runtime": self.runtime.describe(),
                             "bundle": self.bundle.manifest.name,
                             "bundle_sha256": self.bundle.sha256}))
        self.worker.start()
        self.link.start()

    def wait_connected(self) -> bool:
        """Until the first broker connection (or a stop request); tells systemd we wait."""
        c = self.config.broker
        while not self._first_connect.wait(1.0):
            if self.requests.stop.is_set():
                return False
            self.notifier.extend_timeout(30)
            self.notifier.status(f"waiting for the broker at {c.host}:{c.port}"
                                 + (f": {self.link.last_error}" if self.link.last_error else ""))
        return True

    def stats_snapshot(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot.update(queue_depth=len(self.queue), streams=len(self.worker.streams),
                        streams_beyond_range=len(self.worker.beyond_range),
                        bundle_sha256=self.bundle.sha256, connected=self.link.connected.is_set(),
                        reconnects=max(0, self.link.connects - 1),
                        outbox_pending=len(self.outbox), outbox_dropped=self.outbox.dropped)
        return snapshot

    def commit_snapshot(self, temp: Path) -> None:
        """Make the snapshot the worker wrote current (fsync and rename, in this thread)."""
        try:
            snapshots.commit(temp)
        except OSError as exc:
            log.error("cannot write the state snapshot to %s: %s", self.state_dir, exc)
            temp.unlink(missing_ok=True)

    def write_final_snapshot(self) -> None:
        """The exact snapshot after the last reading (the worker has stopped); replaces a
        periodic one still waiting to be committed."""
        try:
            snapshots.discard_temps(self.state_dir)
            snapshots.write(self.state_dir, self.worker.detector.bundle.sha256,
                            self.worker.encoded_streams(), clean=True)
        except OSError as exc:
            log.error("cannot write the state snapshot to %s: %s", self.state_dir, exc)

    def publish_stats(self) -> None:
        self.link.publish(self.topics.agent("stats"), encode(self.stats_snapshot()), qos=1,
                          retain=True)

    def run(self, tick_s: float = 0.2) -> int:
        """Start, serve until asked to stop, shut down; returns the exit code.

        The main loop's duties: liveness (the worker thread, the watchdog), deleting
        acknowledged alerts from the outbox, snapshots and stats at their intervals.
        """
        self.start()
        if self.wait_connected():
            self.notifier.ready(self.status_line())
        now = time.monotonic()
        next_stats = now + self.config.output.stats_interval_s
        next_snapshot = now + self.config.state.snapshot_interval_s
        watch = self.config.bundle_watch_s
        next_watch = now + (watch or 0)
        while not self.requests.stop.wait(tick_s):
            if not self.worker.alive:
                log.error("the worker thread died; exiting so the service manager restarts us")
                self.shutdown()
                return 1
            self.watchdog.tick()
            self.output.flush()
            now = time.monotonic()
            if self.requests.reload.is_set():
                self.requests.reload.clear()
                self.reload("SIGHUP")
                self._bundle_seen = self._bundle_signature()
            if watch and now >= next_watch:
                next_watch = now + watch
                self._watch_bundle(now)
            if now >= next_snapshot:
                next_snapshot = now + self.config.state.snapshot_interval_s
                self.worker.request_snapshot()
            try:
                self.commit_snapshot(self.worker.snapshots.get_nowait())
            except queue.Empty:
                pass
            if now >= next_stats:
                next_stats = now + self.config.output.stats_interval_s
                self.publish_stats()
                self.notifier.status(self.status_line())
        if self.requests.stop_signal is not None:
            log.info("received %s: shutting down",
                     signal.Signals(self.requests.stop_signal).name)
        self.shutdown()
        return 0

    def status_line(self) -> str:
        s = self.stats
        return (f"{len(self.worker.streams)} streams, {s.processed} readings, alerts "
                f"{dict(s.alerts) or 'none'}, {'connected' if self.link.connected.is_set() else 'disconnected'}")

    def shutdown(self, timeout: float = 10.0) -> None:
        self.notifier.stopping("draining the queue")
        self.accepting = False
        self.worker.stop(self.queue.wake, timeout)
        self.write_final_snapshot()
        left = self.output.wait_sent(timeout)
        if left:
            log.warning("%d alert(s) not yet acknowledged by the broker: kept in the outbox, "
                        "re-sent at the next start", left)
        if self.link.connected.is_set():
            self.publish_stats()
        self.link.stop()
        self.output.flush()
        self.outbox.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        snapshot = self.stats_snapshot()
        log.info("stopped: %d received, %d processed, %d rejected, %d dropped, not admitted %s, "
                 "alerts %s", snapshot["received"], snapshot["processed"],
                 snapshot["rejected_total"], snapshot["dropped"],
                 snapshot["admission"] or "none", snapshot["alerts"] or "none")
