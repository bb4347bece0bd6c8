"""The buffered paho client: every message arrives whole and in order, however the bytes are
split across socket reads, across reconnects and over TLS, with far fewer reads than paho's."""

from __future__ import annotations

import select
import socket
import time
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.broker import Mosquitto
from edge_agent.readbuffer import (CHUNK, BufferedClient, Incoming, encode_varint,
                                   split_publishes)
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


def test_one_loop_read_takes_what_it_read_and_leaves_a_busy_socket_to_the_next_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader slower than its input must still get its own packets out (alerts, acks,
    pings), and paho writes only between two reads. So one ``loop_read`` reads the socket once
    and takes apart what it got, however much more is waiting; a packet cut by the end of the
    read is finished on the next turn. (Refilling for as long as bytes came starved the
    agent's outgoing messages under a sustained flood: the demo once saw no alerts for
    seconds.)"""
    reads = []
    original = paho.Client._sock_recv

    def counting(client: paho.Client, bufsize: int) -> bytes:
        data = original(client, bufsize)
        reads.append(len(data))
        return data

    monkeypatch.setattr(paho.Client, "_sock_recv", counting)
    here, there = socket.socketpair()
    here.setblocking(False)
    client = client_on(here)
    got: list[Incoming] = []
    client.on_publishes = got.extend
    client.on_message = lambda c, u, m: got.append(Incoming.from_message(m))
    packets = [bytes([0x30, 70, 0, 6]) + b"data/x" + f"{i:062d}".encode() for i in range(9000)]
    sender = threading.Thread(target=there.sendall, args=(b"".join(packets),))
    sender.start()
    wait_until(lambda: select.select([here], [], [], 0)[0] != [], 10, "bytes to read")
    time.sleep(0.2)  # let the socket fill up

    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(reads) == 1 and 0 < len(got) < len(packets)
    while len(got) < len(packets):  # turn after turn, as paho's loop would
        before = len(reads)
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert len(reads) - before <= 1
    sender.join()
    assert [m.payload for m in got] == [p[10:] for p in packets]
    here.close()
    there.close()


# -- unit: PUBLISH packets taken apart as paho takes them apart -----------------------------------

def publish(topic: bytes, payload: bytes, qos: int, mid: int, retain: bool, dup: bool,
            props: Properties | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if props is not None:
        body += props.pack()
    body += payload
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + encode_varint(len(body)) + body


def properties(expiry: int | None, content_type: str | None,
               user: list[tuple[str, str]]) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    if content_type is not None:
        props.ContentType = content_type
    if user:
        props.UserProperty = user
    return props


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12)  # MQTT strings may not hold U+0000
packets = st.lists(st.tuples(
    texts.filter(bool).map(str.encode), st.binary(max_size=300), st.integers(0, 1),
    st.integers(1, 65535), st.booleans(), st.booleans(),
    st.none() | st.integers(0, 2**32 - 1), st.none() | texts,
    st.lists(st.tuples(texts, texts), max_size=2)), min_size=1, max_size=8)


@given(packets=packets, v5=st.booleans(), cut=st.integers(0, 10_000))
@example(packets=[(b"t", b"x" * 124, 0, 1, False, False, None, None, [])], v5=False, cut=129)
@example(packets=[(b"t", b"x" * 125, 0, 1, False, False, None, None, [])], v5=False, cut=130)
def test_publishes_split_exactly_as_paho_decodes_them(packets: list[Any], v5: bool,
                                                     cut: int) -> None:
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    wire, bounds, expected = b"", [0], []
    for topic, payload, qos, mid, retain, dup, expiry, ctype, user in packets:
        packet = publish(topic, payload, qos, mid, retain, dup,
                         properties(expiry, ctype, user) if v5 else None)
        body = 2 + next(i for i, byte in enumerate(packet[1:5]) if byte < 0x80)  # header's end
        decoded = _packet.decode_publish(packet[0], packet[body:], protocol)
        expected.append(Incoming(decoded.topic.decode(), decoded.payload, decoded.qos,
                                 decoded.mid, decoded.retain))
        wire += packet
        bounds.append(len(wire))
    assert split_publishes(wire, 0, v5) == (expected, len(wire))
    # bytes still in the socket: exactly the packets that are whole, ending on a boundary
    cut %= len(wire) + 1
    got, end = split_publishes(b"junk" + wire[:cut], 4, v5)
    whole = max(i for i, b in enumerate(bounds) if b <= cut)
    assert (got, end) == (expected[:whole], 4 + bounds[whole])


@pytest.mark.parametrize("other, why", [
    (b"\xd0\x00", "PINGRESP"), (b"\x40\x02\x00\x07", "PUBACK"),
    (publish(b"a", b"x", 2, 9, False, False, None), "QoS 2"),
    (b"\x30\xff\xff\xff\xff\x01", "a remaining length over four bytes"),
    (b"\x30\x03\x00\x05a", "a topic longer than its packet"),
    (b"\x30\x03\x00\x00x", "an empty topic (an MQTT 5 alias, or malformed)"),
])
def test_anything_but_a_plain_publish_is_left_to_paho(other: bytes, why: str) -> None:
    first = publish(b"t", b"1", 0, 0, False, False, None)
    wire = first + other + first
    got, end = split_publishes(wire, 0, v5=False)
    assert (len(got), end) == (1, len(first)), why


def test_qos1_is_left_to_paho_unless_the_agent_acknowledges_itself() -> None:
    wire = publish(b"t", b"1", 1, 7, False, False, None)
    assert split_publishes(wire, 0, v5=False, qos1=False) == ([], 0)
    assert split_publishes(wire, 0, v5=False) == ([Incoming("t", b"1", 1, 7)], len(wire))


# -- against a real broker ---------------------------------------------------------------------

class Subscriber:
    """A BufferedClient that records every payload on ``data/#`` and counts socket reads.

    ``batched``: take PUBLISH packets in batches (``on_publishes``, what the agent does), with
    ``qos`` 1 acknowledged by the subscriber itself (``manual_ack``, as the agent does)."""

    def __init__(self, broker: Mosquitto, tls_ca: Path | None = None, *, batched: bool = False,
                 qos: int = 0, v5: bool = False) -> None:
        self.payloads: list[bytes] = []
        self.batches: list[int] = []
        self.socket_reads = 0
        self._subscribed = threading.Event()
        self.client = BufferedClient(
            CallbackAPIVersion.VERSION2, client_id="buffered-sub", manual_ack=qos > 0,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("data/#", qos=qos)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = lambda c, u, m: self._record([Incoming.from_message(m)])
        if batched:
            self.client.on_publishes = self._record
        self.client.reconnect_delay_set(1, 1)
        host = "localhost" if tls_ca is not None else broker.host
        self.client.connect(host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "could not subscribe"

    def _record(self, messages: list[Incoming]) -> None:
        self.batches.append(len(messages))
        for m in messages:
            self.payloads.append(m.payload)
            if m.qos:
                self.client.ack(m.mid, m.qos)

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
                          tls_ca: Path | None = None, qos: int = 0) -> None:
    """Publish ``messages`` while the subscriber's network thread is held up in a callback, so
    they pile up in its socket and must be taken apart from large reads."""
    release = threading.Event()
    held = threading.Event()
    original = sub._record

    def hold(messages: list[Incoming]) -> None:
        original(messages)
        if not held.is_set():
            held.set()
            release.wait(10)

    sub._record = hold  # type: ignore[method-assign]
    pub = Publisher(broker, client_id="publisher", tls_ca=tls_ca)
    try:
        pub.send_all([("data/go", b"go")], qos=1)
        assert held.wait(10)
        pub.send_all([(f"data/{i % 7}", p) for i, p in enumerate(messages)], qos=max(qos, 1))
    finally:
        pub.close()
        release.set()
    wait_until(lambda: len(sub.payloads) >= len(messages) + 1, 30, "all messages")
    sub._record = original  # type: ignore[method-assign]


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
@pytest.mark.parametrize("qos, v5", [(0, False), (1, False), (0, True), (1, True)])
def test_batched_publishes_arrive_whole_in_order_and_acknowledged(qos: int, v5: bool) -> None:
    with Mosquitto() as broker:
        sub = Subscriber(broker, batched=True, qos=qos, v5=v5)
        sent = payloads(1500)
        try:
            publish_while_blocked(broker, sub, sent, qos=qos)
        finally:
            sub.close()
    # with QoS 1 the broker sends at most 100 unacknowledged messages (max_inflight_messages):
    # all 1,500 arriving means every one was acknowledged
    assert sub.payloads == [b"go"] + sent
    assert max(sub.batches) > 50  # most of them crossed in batches, not one by one


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

