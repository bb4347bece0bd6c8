"""The worker: the one thread that runs the model, scores readings and publishes what follows.

It takes readings from the bounded queue in batches and, for each, looks up (or creates) the
stream's state and hands the reading to the :class:`~edge_agent.detector.Detector` — the same
code the trainer calibrated and evaluated with. Then it publishes the alert events, the
stream's status when it changes (retained) and, if asked, the score; and only then
acknowledges the reading to the broker, so a reading is never acknowledged before it counted.

``heartbeat`` is the monotonic time of the worker's last sign of life: it is refreshed after
every batch and at least every ``idle_wake_s`` when idle, so the systemd watchdog can tell a
stalled worker from a quiet one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

from . import snapshots
from .detector import Alert, Detector, range_note
from .homeassistant import Discovery
from .logs import RateLimitedLog
from .payloads import Topics, alert_payload, encode, score_payload
from .snapshots import Restored, encode_stream
from .stats import Stats
from .streams import Admission, StreamState

log = logging.getLogger("edge_agent.worker")
SMALL_BATCH = 64  # after a batch smaller than this the worker lets readings gather ...
GATHER_S = 0.002  # ... for this long: one wake-up per reading costs more than the wait
RANGE_WARNING_INTERVAL_S = 60.0  # streams beyond the model's range: one warning a minute


class Item(NamedTuple):
    """A parsed reading waiting for the worker — or, with ``values`` None, only the
    acknowledgement of a QoS 1 message the network thread rejected (see :func:`ack_only`)."""

    stream_id: str
    topic: str
    fields: dict[str, str]
    values: list[float] | None
    ts: float | None
    arrival: float
    mid: int
    qos: int


def ack_only(topic: str, mid: int, qos: int) -> Item:
    """A place in the queue for acknowledging a message that carries no reading.

    MQTT requires PUBACKs in the order the messages arrived [MQTT-4.6.0-2]; acknowledging a
    rejected message at once, ahead of the readings still queued, also frees a slot of the
    broker's in-flight window early, and mosquitto 2.0 then sent newer messages ahead of
    older ones it had queued (readings dropped as out of order, seen in the end-to-end tests).
    """
    return Item("", topic, {}, None, None, 0.0, mid, qos)


class Output(Protocol):
    """Where the worker's results go (the MQTT link, or a recorder in tests)."""

    def publish_alert(self, alert_id: str, kind: str, topic: str, payload: bytes) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None: ...

    def ack(self, mid: int, qos: int) -> None: ...


class Worker:
    def __init__(self, detector: Detector, take: Callable[[int, float], list[Item]],
                 output: Output, topics: Topics, stats: Stats, *, agent_id: str,
                 max_streams: int, publish_scores: bool, score_interval_s: float = 0.0,
                 expiry_s: float | None = None, discovery: Discovery | None = None,
                 remove_expired_entities: bool = True, idle_wake_s: float = 0.5,
                 snapshot_dir: Path | None = None, queue_size: int | None = None) -> None:
        self.detector = detector
        self._take = take
        self.output = output
        self.topics = topics
        self.stats = stats
        self.agent_id = agent_id
        self.max_streams = max_streams
        self.publish_scores = publish_scores
        self.score_interval_s = score_interval_s
        self.expiry_s = expiry_s
        self.discovery = discovery
        self.remove_expired_entities = remove_expired_entities
        self.idle_wake_s = idle_wake_s
        self.snapshot_dir = snapshot_dir
        # Gathering must not overflow a small queue: a batch of a quarter of it is not small.
        self.gather_below = SMALL_BATCH if queue_size is None else min(SMALL_BATCH,
                                                                       queue_size // 4)
        self.streams: dict[str, StreamState] = {}
        self.last_seen: dict[str, float] = {}
        self.last_score: dict[str, float] = {}
        self._next_expiry_check = time.monotonic()
        self.routes: dict[str, tuple[str, dict[str, str]]] = {}
        self.statuses: dict[str, str] = {}
        # streams whose usual values lie beyond the model's range (Detector.beyond_range),
        # judged when a stream leaves its warm-up, is restored or gets a new model
        self.beyond_range: dict[str, list[tuple[str, float]]] = {}
        self._range_log = RateLimitedLog(log, RANGE_WARNING_INTERVAL_S)
        self.heartbeat = time.monotonic()
        self._snapshot_wanted = threading.Event()
        # temporary snapshot files written by this thread, for the main thread to commit
        self.snapshots: queue.Queue[Path] = queue.Queue(maxsize=1)
        self._swap: tuple[Detector, bool, threading.Event] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        manifest = detector.bundle.manifest
        self._model_name = manifest.name
        self._model_sha = manifest.model.sha256

    # -- thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-agent-worker", daemon=True)
        self._thread.start()

    def stop(self, wake: Callable[[], None], timeout: float = 30.0) -> None:
        """Finish every reading already queued, then return."""
        self._stop.set()
        wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch = self._take(1024, self.idle_wake_s)
            if batch:
                for item in batch:
                    self.handle(item)
                if len(batch) < self.gather_below:
                    # Under a steady stream, let readings gather for a moment: one wake-up per
                    # reading costs more than the 2 ms a reading may wait here.
                    time.sleep(GATHER_S)
            elif self._stop.is_set():
                return
            if self._swap is not None:
                self._apply_swap()
            if self.expiry_s is not None and time.monotonic() >= self._next_expiry_check:
                self._next_expiry_check = time.monotonic() + min(self.expiry_s / 4, 60.0)
                self.expire(time.perf_counter() - self.expiry_s)
            if self._snapshot_wanted.is_set():
                self._snapshot_wanted.clear()
                self._write_snapshot()
            self.heartbeat = time.monotonic()

    # -- stream life cycle --------------------------------------------------------------------
    def announce(self, stream_id: str) -> None:
        """Publish the stream's Home Assistant discovery configs (retained), if enabled."""
        if self.discovery is not None:
            for topic, config in self.discovery.configs(stream_id):
                self.output.publish(topic, encode(config), 1, True)

    def expire(self, older_than: float) -> list[str]:
        """Forget streams not seen since ``older_than`` (a ``perf_counter`` time): their state,
        retained status and Home Assistant entities go."""
        gone = [sid for sid, seen in self.last_seen.items() if seen < older_than]
        for stream_id in gone:
            state = self.streams.pop(stream_id)
            ended = self.detector.reset(state)
            if ended is not None:
                self.publish_alert(ended)
            for table in (self.routes, self.statuses, self.last_seen, self.last_score,
                          self.beyond_range):
                table.pop(stream_id, None)
            self.output.publish(self.topics.status(stream_id), b"", 1, True)
            if self.discovery is not None and self.remove_expired_entities:
                for topic in self.discovery.config_topics(stream_id):
                    self.output.publish(topic, b"", 1, True)
            log.info("stream %s expired: silent for more than %g s", stream_id, self.expiry_s)
        return gone

    # -- model reload -----------------------------------------------------------------------
    def swap(self, detector: Detector, keep_state: bool, timeout: float = 30.0) -> bool:
        """Replace the model between two batches; returns once done (or on timeout).

        With ``keep_state`` every stream carries on; otherwise every stream starts over with
        the new model (an open episode ends first, with reason ``reset``)."""
        done = threading.Event()
        self._swap = (detector, keep_state, done)
        if not self.alive:
            self._apply_swap()
        return done.wait(timeout)

    def _apply_swap(self) -> None:
        assert self._swap is not None
        detector, keep_state, done = self._swap
        self._swap = None
        old = self.detector
        for stream_id, state in list(self.streams.items()):
            if keep_state:
                detector.adopt(state, old)
                continue
            ended = old.reset(state)
            if ended is not None:
                self.publish_alert(ended)
            self.streams[stream_id] = detector.new_stream(stream_id)
        self.detector = detector
        self.beyond_range.clear()  # judged again against the new model's range
        if keep_state:
            for stream_id, state in self.streams.items():
                self.check_range(stream_id, state)
        manifest = detector.bundle.manifest
        self._model_name, self._model_sha = manifest.name, manifest.model.sha256
        done.set()

    # -- state across restarts ---------------------------------------------------------------
    def request_snapshot(self) -> None:
        """Ask the worker to copy every stream's state between two batches (consistent)."""
        self._snapshot_wanted.set()

    def encoded_streams(self) -> Iterator[tuple[str, str]]:
        """Every stream's state as JSON text, one stream at a time (iterate in the worker, or
        once it has stopped)."""
        season = self.detector.scorer.seasonal
        for stream_id, state in self.streams.items():
            yield stream_id, encode_stream(state, *self.routes.get(stream_id, ("", {})),
                                           self.statuses.get(stream_id), season)

    def _write_snapshot(self) -> None:
        """Write every stream's state to a temporary snapshot file, between two batches."""
        if self.snapshot_dir is None or self.snapshots.full():
            return  # no state folder, or the previous snapshot is not committed yet
        try:
            path = snapshots.write_temp(self.snapshot_dir, self.detector.bundle.sha256,
                                        self.encoded_streams())
        except OSError as exc:
            log.error("cannot write the state snapshot to %s: %s", self.snapshot_dir, exc)
            return
        self.snapshots.put_nowait(path)

    def restore(self, restored: dict[str, Restored]) -> None:
        """Adopt streams from a snapshot (before the worker starts)."""
        for stream_id, entry in restored.items():
            self.streams[stream_id] = entry.state
            self.routes[stream_id] = (entry.topic, entry.fields)
            if entry.status is not None:
                self.statuses[stream_id] = entry.status
            self.check_range(stream_id, entry.state)

    # -- one reading -------------------------------------------------------------------------
    def handle(self, item: Item) -> None:
        if item.values is None:  # a rejected message's turn to be acknowledged
            self.output.ack(item.mid, item.qos)
            return
        started = time.perf_counter()
        stream_id = item.stream_id
        state = self.streams.get(stream_id)
        if state is None:
            if len(self.streams) >= self.max_streams:
                self.stats.admission["too_many_streams"] += 1
                self.output.ack(item.mid, item.qos)
                return
            state = self.streams[stream_id] = self.detector.new_stream(stream_id)
            self.routes[stream_id] = (item.topic, item.fields)
            self.announce(stream_id)
        self.last_seen[stream_id] = started
        own_ts = item.ts is not None
        outcome = self.detector.process(state, item.values, item.ts if own_ts else item.arrival,
                                        own_ts)
        self.stats.observe(time.perf_counter() - started)
        if outcome.admission is not Admission.ACCEPT:
            self.stats.admission[outcome.admission.value] += 1
        for alert in outcome.alerts:
            self.publish_alert(alert)
        previous = self.statuses.get(stream_id)
        if previous != outcome.status:
            if previous in (None, "warming_up") and outcome.status != "warming_up":
                self.check_range(stream_id, state)  # out of the warm-up: its baseline is whole
            self.statuses[stream_id] = outcome.status
            self.output.publish(self.topics.status(stream_id), outcome.status.encode(), 1, True)
        if self.publish_scores and outcome.score is not None:
            at = item.ts if own_ts else item.arrival
            if at - self.last_score.get(stream_id, -1e18) >= self.score_interval_s:
                self.last_score[stream_id] = at
                self.output.publish(self.topics.score(stream_id), encode(score_payload(
                    at, outcome.score, self.detector.enter, outcome.status,
                    outcome.lifted_by)), 0, False)
        self.stats.processed += 1
        self.output.ack(item.mid, item.qos)

    def check_range(self, stream_id: str, state: StreamState) -> None:
        """Does the stream run where the model was trained (asked when it leaves its warm-up,
        is restored from a snapshot or carries on with a new model: never per reading)? A
        stream that does not is kept in :attr:`beyond_range` (the stats count them) and
        named in a warning."""
        beyond = self.detector.beyond_range(state)
        if not beyond:
            self.beyond_range.pop(stream_id, None)
        else:
            self.beyond_range[stream_id] = beyond
            self._range_log.warning(
                "beyond_range", "stream %s (%d stream(s) beyond the model's range so far): %s",
                stream_id, len(self.beyond_range),
                range_note(beyond, self.detector.normaliser.params.clip))

    def publish_alert(self, alert: Alert) -> None:
        topic, fields = self.routes.get(alert.stream_id, ("", {}))
        payload = alert_payload(alert, topic=topic, fields=fields, model_name=self._model_name,
                                model_sha256=self._model_sha, agent_id=self.agent_id)
        self.output.publish_alert(alert.alert_id, alert.type, self.topics.alerts(alert.stream_id),
                                  encode(payload))
        self.stats.alerts[alert.type] += 1
        if alert.type == "start":  # which rule opens the episodes, for tuning in the field
            self.stats.starts_by_lift[alert.lift_label] += 1
        log.info("alert %s %s stream=%s score=%.2f by=%s top=%s", alert.type,
                 alert.alert_id[:8], alert.stream_id, alert.score, alert.lift_label,
                 ",".join(c.feature for c in alert.top_features) or "-")
