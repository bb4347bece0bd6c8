"""The buffered paho client: every message arrives whole and in order, however the bytes are
split across socket reads, across reconnects and over TLS, with far fewer reads than paho's."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.broker import Mosquitto
from edge_agent.readbuffer import CHUNK, BufferedClient
from tests.mqtt_helpers import Publisher, needs_mosquitto, tls_mosquitto, wait_until


# -- unit: paho's small reads served from one socket read ----------------------------------------

def client_on(sock: socket.socket) -> BufferedClient:
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="unit")
    client._sock = sock
    return client


def test_small_reads_are_served_from_one_socket_read() -> None:
    here, there = socket.socketpair()
    client = client_on(here)
    there.sendall(b"abcdefgh")
    assert client._sock_recv(1) == b"a"
    assert client.buffered_bytes() == 7
    there.sendall(b"XYZ")  # not read yet: the buffer is served first
    assert [client._sock_recv(n) for n in (1, 2, 10)] == [b"b", b"cd", b"efgh"]
    assert client.buffered_bytes() == 0
    assert client._sock_recv(10) == b"XYZ"
    here.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing buffered, nothing in the socket
        client._sock_recv(1)
    there.close()
    assert client._sock_recv(1) == b""  # end of stream reaches paho as an empty read
    here.close()


def test_bytes_of_a_previous_socket_are_never_served() -> None:
    old, old_peer = socket.socketpair()
    client = client_on(old)
    old_peer.sendall(b"stale bytes")
    assert client._sock_recv(1) == b"s"
    new, new_peer = socket.socketpair()
    client._sock = new  # what paho does when it reconnects
    assert client.buffered_bytes() == 0
    new_peer.sendall(b"fresh")
    assert client._sock_recv(5) == b"fresh"
    for s in (old, old_peer, new, new_peer):
        s.close()


def test_a_read_larger_than_the_chunk_is_returned_in_pieces() -> None:
    here, there = socket.socketpair()
    client = client_on(here)
    body = bytes(range(256)) * (3 * CHUNK // 256)
    sender = threading.Thread(target=there.sendall, args=(body,))
    sender.start()
    got = b""
    while len(got) < len(body):
        piece = client._sock_recv(len(body) - len(got))
        assert 0 < len(piece) <= CHUNK
        got += piece
    sender.join()
    assert got == body
    here.close()
    there.close()


# -- against a real broker ---------------------------------------------------------------------

class Subscriber:
    """A BufferedClient that records every payload on ``data/#`` and counts socket reads."""

    def __init__(self, broker: Mosquitto, tls_ca: Path | None = None) -> None:
        self.payloads: list[bytes] = []
        self.socket_reads = 0
        self._subscribed = threading.Event()
        self.client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="buffered-sub")
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("data/#", qos=0)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = lambda c, u, m: self.payloads.append(m.payload)
        self.client.reconnect_delay_set(1, 1)
        host = "localhost" if tls_ca is not None else broker.host
        self.client.connect(host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "could not subscribe"

    def resubscribed(self) -> bool:
        return self._subscribed.is_set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture()
def count_reads(monkeypatch: pytest.MonkeyPatch):
    """Counts the socket reads (paho's own ``_sock_recv``) each Subscriber makes."""
    original = paho.Client._sock_recv
    counters: dict[int, Subscriber] = {}

    def counting(client: paho.Client, bufsize: int) -> bytes:
        subscriber = counters.get(id(client))
        if subscriber is not None:
            subscriber.socket_reads += 1
        return original(client, bufsize)

    monkeypatch.setattr(paho.Client, "_sock_recv", counting)
    return lambda sub: counters.__setitem__(id(sub.client), sub)


def payloads(n: int, start: int = 0) -> list[bytes]:
    """Mostly reading-sized payloads, with a few larger than a whole socket read."""
    out = []
    for i in range(start, start + n):
        size = 3 * CHUNK + 17 if i % 250 == 7 else 40 + i % 90
        out.append((f"{i:06d}:".encode() + bytes([65 + i % 26]) * size)[:max(size, 8)])
    return out


def publish_while_blocked(broker: Mosquitto, sub: Subscriber, messages: list[bytes],
                          tls_ca: Path | None = None) -> None:
    """Publish ``messages`` (QoS 0) while the subscriber's network thread is held up in a
    callback, so they pile up in its socket and must be taken apart from large reads."""
    release = threading.Event()
    held = threading.Event()
    original = sub.client.on_message

    def hold(c: Any, u: Any, m: paho.MQTTMessage) -> None:
        original(c, u, m)
        if not held.is_set():
            held.set()
            release.wait(10)

    sub.client.on_message = hold
    pub = Publisher(broker, client_id="publisher", tls_ca=tls_ca)
    try:
        pub.send_all([("data/go", b"go")], qos=1)
        assert held.wait(10)
        pub.send_all([(f"data/{i % 7}", p) for i, p in enumerate(messages)], qos=1)
    finally:
        pub.close()
        release.set()
    wait_until(lambda: len(sub.payloads) >= len(messages) + 1, 30, "all messages")
    sub.client.on_message = original


@needs_mosquitto
def test_every_message_arrives_whole_in_order_from_few_reads(count_reads) -> None:
    with Mosquitto() as broker:
        sub = Subscriber(broker)
        count_reads(sub)
        sent = payloads(1500)
        try:
            publish_while_blocked(broker, sub, sent)
        finally:
            sub.close()
    assert sub.payloads == [b"go"] + sent
    # paho alone reads at least three times per message (command byte, length, body)
    assert sub.socket_reads < len(sent) / 3


@needs_mosquitto
def test_messages_after_a_broker_restart_are_whole(count_reads) -> None:
    with Mosquitto() as broker:
        sub = Subscriber(broker)
        try:
            publish_while_blocked(broker, sub, payloads(300))
            sub._subscribed.clear()
            broker.restart()
            wait_until(sub.resubscribed, 30, "resubscribed after the restart")
            sub.payloads.clear()
            later = payloads(300, start=300)
            publish_while_blocked(broker, sub, later)
        finally:
            sub.close()
    assert sub.payloads == [b"go"] + later


@needs_mosquitto
def test_messages_over_tls_are_whole(tmp_path: Path) -> None:
    broker, ca = tls_mosquitto(tmp_path / "certs")
    try:
        sub = Subscriber(broker, tls_ca=ca)
        sent = payloads(600)
        try:
            publish_while_blocked(broker, sub, sent, tls_ca=ca)
        finally:
            sub.close()
    finally:
        broker.close()
    assert sub.payloads == [b"go"] + sent
    assert sub.client.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN  # closed cleanly
