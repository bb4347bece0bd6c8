"""``edge-agent watch``: what the agents publish, as readable lines, while it happens.

For an operator on the Pi over SSH, or a first replay of a recording: alert events (with the
feature that moved most and what lifted the score), stream status changes and agents coming
online or going offline, from any broker, without an MQTT client to install. With ``--config``
it connects as the agent does (TLS, user name, password file) and uses the agent's topic
prefix; it subscribes only, publishes nothing and leaves no Last Will.

Each line is made by :meth:`Watcher.line` from one message, so the format is tested without a
broker; the demo prints its alerts with the same :func:`alert_line`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import BrokerConfig
from .errors import EdgeError
from .payloads import iso

#: Paints ``text`` with an ANSI colour ``code`` (or leaves it plain).
Painter = Callable[[str, str], str]
ALERT_COLOURS = {"START": "1;31", "UPDATE": "33", "END": "32"}
STATUS_COLOURS = {"anomalous": "1;31", "normal": "32", "warming_up": "36"}


def painter(color: bool) -> Painter:
    """ANSI colours for a terminal, plain text otherwise."""
    if color:
        return lambda text, code: f"\033[{code}m{text}\033[0m"
    return lambda text, code: text


def alert_line(alert: dict[str, Any], when: str, paint: Painter) -> str:
    """One alert event as a line: type, stream, score, the top feature against what was
    expected (or the reason an episode ended), and which history lifted the score, if any.

    >>> alert = {"type": "start", "stream": "r1/elbow", "score": 3.684, "lifted_by": None,
    ...          "top_features": [{"feature": "vibration", "observed": 0.2631,
    ...                            "expected": 0.2149}], "reason": None}
    >>> alert_line(alert, "  63.3 s", painter(False))
    '  [  63.3 s] START  r1/elbow     score   3.68  top vibration 0.263 (expected 0.215)'
    """
    top = alert["top_features"][0] if alert.get("top_features") else None
    detail = (f"top {top['feature']} {top['observed']:.3g} (expected {top['expected']:.3g})"
              if top else alert.get("reason") or "")
    if alert.get("lifted_by"):
        detail += f"  lifted by {alert['lifted_by']}"
    kind = alert["type"].upper()
    return (f"  [{when}] {paint(f'{kind:6s}', ALERT_COLOURS.get(kind, '0'))} "
            f"{alert['stream']:12s} score {alert['score']:6.2f}  {detail}")


@dataclass
class Watcher:
    """Turns the agents' messages under ``prefix`` into lines (one thread: paho's)."""

    prefix: str
    paint: Painter
    stats: bool = False
    clock: Callable[[], float] = time.time
    alerts: int = 0  # alert events seen
    statuses: dict[str, str] = field(default_factory=dict)

    def topics(self) -> list[str]:
        p = self.prefix
        # stream ids may span several topic levels (r1/elbow), and '#' must end a filter:
        # the score topics under streams/ come too (with output.scores) and are skipped
        topics = [f"{p}/alerts/#", f"{p}/streams/#", f"{p}/agents/+/availability"]
        return topics + [f"{p}/agents/+/stats"] if self.stats else topics

    def line(self, topic: str, payload: bytes, retained: bool = False) -> str | None:
        """The line one message deserves, or None (a status that did not change, a topic of
        no interest, a payload that is not what the agent publishes).

        >>> w = Watcher("edge-anomaly", painter(False), clock=lambda: 0.0)
        >>> w.line("edge-anomaly/streams/r1/elbow/status", b"normal", retained=True)
        '  [1970-01-01T00:00:00.000Z] r1/elbow     normal (retained)'
        >>> w.line("edge-anomaly/streams/r1/elbow/status", b"normal") is None
        True
        >>> w.line("edge-anomaly/agents/pi-7/availability", b"offline")
        '  [1970-01-01T00:00:00.000Z] agent pi-7 offline'
        """
        p = self.prefix + "/"
        if not topic.startswith(p):
            return None
        rest = topic[len(p):]
        now = iso(self.clock())
        try:
            if rest.startswith("alerts/"):
                alert = json.loads(payload)
                self.alerts += 1
                return alert_line(alert, alert["at"], self.paint)
            if rest.startswith("streams/") and rest.endswith("/status"):
                return self._status(rest[len("streams/"):-len("/status")], payload.decode(),
                                    now, retained)
            if rest.startswith("agents/") and rest.endswith("/availability"):
                agent = rest[len("agents/"):-len("/availability")]
                return f"  [{now}] agent {agent} {payload.decode()}"
            if rest.startswith("agents/") and rest.endswith("/stats"):
                return f"  [{now}] agent {rest[len('agents/'):-len('/stats')]}: " \
                    + stats_summary(json.loads(payload))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return f"  [{now}] {topic}: not an agent's payload ({len(payload)} bytes)"
        return None

    def _status(self, stream: str, status: str, now: str, retained: bool) -> str | None:
        if not status:  # the agent cleared the retained status: it forgot the stream
            self.statuses.pop(stream, None)
            return f"  [{now}] {stream:12s} forgotten (silent past detection.stream_expiry_s)"
        if self.statuses.get(stream) == status:
            return None
        self.statuses[stream] = status
        label = self.paint(status, STATUS_COLOURS.get(status, "0"))
        return f"  [{now}] {stream:12s} {label}" + (" (retained)" if retained else "")


def stats_summary(stats: dict[str, Any]) -> str:
    """The figures of an agent's stats an operator looks at first.

    >>> stats_summary({"processed": 12, "streams": 3, "streams_beyond_range": 1,
    ...                "alerts": {"start": 2}, "rejected_total": 0, "dropped": 0})
    "processed 12, streams 3 (1 beyond the model's range), alerts {'start': 2}, rejected 0, dropped 0"
    """
    beyond = stats.get("streams_beyond_range", 0)
    return (f"processed {stats['processed']}, streams {stats['streams']}"
            + (f" ({beyond} beyond the model's range)" if beyond else "")
            + f", alerts {stats['alerts']}, rejected {stats['rejected_total']}, "
            f"dropped {stats['dropped']}")


def watch(broker: BrokerConfig, watcher: Watcher, *, count: int | None = None,
          timeout: float | None = None, out: Callable[[str], None] = print) -> int:
    """Print lines until ``count`` alert events were seen, ``timeout`` seconds passed (exit
    1 if a count was asked for and not reached) or Ctrl-C (exit 130)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from .mqtt import describe_refusal, secure

    done = threading.Event()
    failure: list[str] = []
    v5 = broker.protocol == "5"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-watch-{os.getpid()}",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else
                         MQTTProtocolVersion.MQTTv311)
    secure(client, broker)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            failure.append("the broker refused the connection: "
                           + describe_refusal(str(reason)))
            done.set()
            return
        for topic in watcher.topics():
            client.subscribe(topic, qos=1)
        out(f"watching {watcher.prefix}/# on {broker.host}:{broker.port}")

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        line = watcher.line(message.topic, message.payload, bool(message.retain))
        if line is not None:
            out(line)
        if count is not None and watcher.alerts >= count:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
    except OSError as exc:
        raise EdgeError(f"cannot connect to the broker at {broker.host}:{broker.port}: "
                        f"{exc.strerror or exc}") from None
    client.loop_start()
    try:
        done.wait(timeout)
    except KeyboardInterrupt:
        return 130
    finally:
        client.loop_stop()
        client.disconnect()
    if failure:
        raise EdgeError(failure[0])
    if count is not None and watcher.alerts < count:
        out(f"timed out after {timeout:g} s with {watcher.alerts} of {count} alert event(s)")
        return 1
    return 0


def run(config_path: str | None, broker_address: str | None, prefix: str | None, *,
        stats: bool, count: int | None, timeout: float | None, color: bool) -> int:
    """``edge-agent watch``: the broker and prefix from the agent config, overridden by the
    command line (a bare ``--broker`` needs no config at all)."""
    from . import config as agent_config

    broker, configured_prefix = BrokerConfig(), "edge-anomaly"
    if config_path is not None:
        config = agent_config.load(config_path)
        broker, configured_prefix = config.broker, config.output.prefix
    if broker_address is not None:
        host, _, port = broker_address.rpartition(":")
        try:
            broker = broker.model_copy(update={"host": host or "127.0.0.1", "port": int(port)})
        except ValueError:
            raise EdgeError(f"--broker {broker_address!r}: expected host:port") from None
    watcher = Watcher(prefix or configured_prefix, painter(color), stats=stats)
    return watch(broker, watcher, count=count, timeout=timeout,
                 out=lambda line: print(line, flush=True))


def use_color(stream: Any = sys.stdout) -> bool:
    """Colours on a terminal that wants them (``NO_COLOR`` unset)."""
    return stream.isatty() and "NO_COLOR" not in os.environ
