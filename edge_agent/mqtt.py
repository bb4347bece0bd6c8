"""The MQTT connection: connect, (re)subscribe, receive, publish — paho-mqtt 2, VERSION2 API.

Facts this module is built around:

* subscriptions are made in ``on_connect``, so they come back after every reconnect;
* paho's network thread runs the callbacks; an exception there kills that thread, so the
  callbacks given to :class:`MqttLink` must not raise (``on_messages`` only parses and enqueues);
* reconnection is paho's own loop with an exponential backoff between ``reconnect_min_s`` and
  ``reconnect_max_s``; refused connections (bad credentials, untrusted certificate) are logged
  with a clear reason and retried with the same backoff, never a crash loop;
* readings reach the agent in batches (``on_messages`` gets a list of
  :class:`~edge_agent.readbuffer.Incoming`): whole PUBLISH packets taken from one socket read
  at a time, or a single one that paho decoded itself;
* incoming QoS 1 readings are acknowledged by the agent (``manual_ack``), in the order they came,
  only once handled, so a reading in the agent's queue when it stops is redelivered by the
  broker next time (persistent session) instead of being lost;
* the socket is read 64 KiB at a time (:mod:`edge_agent.readbuffer`), not a few bytes per
  system call as paho does, which spares the network thread most GIL hand-overs;
* the agent's availability is ``online`` (retained) after each connect and ``offline`` as the
  Last Will, so dashboards see a dead agent.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from .config import BrokerConfig, read_secret
from .readbuffer import BufferedClient, Incoming

log = logging.getLogger("edge_agent.mqtt")

MessagesHandler = Callable[[list[Incoming]], None]


class MqttLink:
    """One broker connection shared by the receiving and the publishing side of the agent."""

    def __init__(self, config: BrokerConfig, client_id: str, *, subscriptions: list[str],
                 qos: int, availability_topic: str, on_messages: MessagesHandler,
                 on_connected: Callable[[], None] | None = None,
                 on_published: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.subscriptions = subscriptions
        self.qos = qos
        self.availability_topic = availability_topic
        self._on_messages = on_messages
        self._on_connected = on_connected
        self._on_published = on_published
        self.connected = threading.Event()
        self._stopping = False
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        v5 = config.protocol == "5"
        persistent = config.session == "persistent"
        kwargs: dict[str, Any] = {}
        if not v5:
            kwargs["clean_session"] = not persistent
        self.client = BufferedClient(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=qos > 0, **kwargs)
        self._connect_properties = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = config.session_expiry_s if persistent else 0
            self._connect_properties = props
        self._clean_start = not persistent
        self.client.max_queued_messages_set(0)
        # paho's default of 20 unacknowledged QoS 1 publishes makes alerts and statuses wait
        # behind each other under load; brokers accept far more (mosquitto: 20 by default for
        # *its* sends, unlimited for ours), and ids stay well below the 65,535 limit.
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(max(1, int(config.reconnect_min_s)),
                                        max(1, int(config.reconnect_max_s)))
        self.client.will_set(availability_topic, b"offline", qos=1, retain=True)
        secure(self.client, config)
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_message = self._handle_message
        self.client.on_publishes = self._handle_publishes
        self.client.on_connect_fail = self._handle_connect_fail
        self.client.on_publish = self._handle_publish

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho keeps retrying until it succeeds."""
        c = self.config
        kwargs: dict[str, Any] = {}
        if self._connect_properties is not None:
            kwargs = {"clean_start": self._clean_start, "properties": self._connect_properties}
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s, **kwargs)
        self.client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained), disconnect cleanly and stop the network thread."""
        self._stopping = True
        if self.connected.is_set():
            info = self.client.publish(self.availability_topic, b"offline", qos=1, retain=True)
            wait_published(info, timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # -- publishing ----------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
                ) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)

    # -- paho callbacks (network thread; must not raise) ----------------------------------
    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any,
                        reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.last_error = describe_refusal(str(reason))
            log.error("broker %s:%d refused the connection: %s; retrying with backoff",
                      self.config.host, self.config.port, self.last_error)
            return
        self.connects += 1
        self.last_error = None
        session = "resumed" if getattr(flags, "session_present", False) else "new"
        log.info("connected to %s:%d (%s session); subscribing to %s", self.config.host,
                 self.config.port, session, ", ".join(self.subscriptions))
        if self.subscriptions:
            client.subscribe([(topic, self.qos) for topic in self.subscriptions])
        client.publish(self.availability_topic, b"online", qos=1, retain=True)
        self.connected.set()
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:  # noqa: BLE001 - never let a hook kill paho's thread
                log.exception("on_connected hook failed")

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                           reason: Any, properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._stopping:
            log.info("disconnected from the broker")
        elif was_connected:
            self.disconnects += 1
            log.warning("disconnected from broker (%s); reconnecting", reason)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        error = probe(self.config)
        if error != self.last_error:  # say it once per distinct cause, not at every retry
            log.warning("cannot connect to %s:%d: %s; retrying with backoff up to %g s",
                        self.config.host, self.config.port, error, self.config.reconnect_max_s)
        self.last_error = error

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                        properties: Any) -> None:
        if self._on_published is not None:
            self._on_published(mid)

    def _handle_message(self, client: paho.Client, userdata: Any,
                        message: paho.MQTTMessage) -> None:
        self._handle_publishes([Incoming.from_message(message)])

    def _handle_publishes(self, messages: list[Incoming]) -> None:
        try:
            self._on_messages(messages)
        except Exception:  # noqa: BLE001 - last line of defence for paho's thread
            log.exception("message handler failed on a batch of %d from topic %r",
                          len(messages), messages[0].topic)


def secure(client: paho.Client, config: BrokerConfig) -> None:
    """Give ``client`` the broker config's user name, password and TLS settings (the agent's
    link and ``edge-agent watch`` connect the same way)."""
    if config.username is not None:
        client.username_pw_set(config.username, read_secret(config))
    if config.tls.enabled:
        tls = config.tls
        client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(not tls.check_hostname)


def probe(config: BrokerConfig, timeout: float = 3.0) -> str:
    """Why a connection fails, found by trying the TCP and TLS steps ourselves.

    paho's reconnect loop only says that connecting failed; an operator needs to know whether
    the broker is down or its certificate is not trusted (and which check failed).
    """
    import socket

    try:
        raw = socket.create_connection((config.host, config.port), timeout=timeout)
    except OSError as exc:
        return f"broker unreachable ({exc.strerror or exc})"
    with raw:
        if not config.tls.enabled:
            return "the broker closed the connection"
        context = ssl.create_default_context(cafile=config.tls.ca_file)
        context.check_hostname = config.tls.check_hostname
        try:
            if config.tls.cert_file:
                context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
            with context.wrap_socket(raw, server_hostname=config.host):
                return "the TLS handshake succeeded on a retry; the broker refused the session"
        except ssl.SSLCertVerificationError as exc:
            return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                    "check broker.tls.ca_file and the broker's host name")
        except (ssl.SSLError, OSError) as exc:
            return f"TLS handshake failed ({exc})"


def describe_refusal(reason: str) -> str:
    """A hint for the usual causes of a refused connection."""
    lowered = reason.lower()
    if "password" in lowered or "not authorized" in lowered or "authoriz" in lowered:
        return f"{reason} (check broker.username and the password file/variable)"
    return reason


def wait_published(info: paho.MQTTMessageInfo, timeout: float) -> bool:
    """Wait until a QoS>0 publish is acknowledged, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not info.is_published():
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
