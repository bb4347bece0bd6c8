"""A paho client that reads its socket in large chunks and hands readings over in batches.

Why: paho 2 reads every incoming packet with at least three ``recv()`` calls (the command
byte, the remaining-length bytes one by one, the body) and, for QoS 0, one packet per
``select()``; then it builds an ``MQTTMessage``, logs, and matches the topic against its
per-filter callbacks, one message at a time. Each system call releases the GIL, and with the
agent's worker thread busy the network thread must win it back every time. At thousands of
readings per second that per-packet machinery, not the agent's own work, is what the network
thread spends its time on (``docs/benchmarks.md``). This client

* serves paho's small reads from a buffer filled ``CHUNK`` bytes at a time, and keeps handling
  packets while whole ones are buffered;
* when ``on_publishes`` is set, takes the whole PUBLISH packets at the head of the buffer apart
  itself (:func:`split_publishes`) and hands them to ``on_publishes`` as one list — the
  readings of a socket read cross to the worker under one lock, not one by one. Everything
  else (CONNACK, SUBACK, PUBACK, PINGRESP, QoS 2, a packet split across reads, anything
  malformed) goes through paho's own code, in order.

It overrides private paho methods (``_sock_recv``, ``_packet_read``, ``loop_read``) and reads
``_in_packet``, so the agent pins ``paho-mqtt<3``; ``tests/test_readbuffer.py`` checks it
against a real broker (reconnects, packets split across reads, TLS, MQTT 5, QoS 1 acks) and
:func:`split_publishes` against paho's own decoder.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

CHUNK = 65536  # bytes per recv(): a few hundred readings of the usual size


class Incoming(NamedTuple):
    """One received PUBLISH: what the agent needs of it.

    ``topic`` is decoded as UTF-8 with undecodable bytes replaced (brokers reject such topics;
    if one arrives anyway it maps to no stream rather than raising in the network thread).
    """

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool = False

    @classmethod
    def from_message(cls, message: paho.MQTTMessage) -> "Incoming":
        """The same record for a message paho decoded itself."""
        return cls(message._topic.decode("utf-8", "replace"), message.payload, message.qos,
                   message.mid, message.retain)


PublishesHandler = Callable[[list[Incoming]], None]


def split_publishes(data: bytes, start: int, v5: bool, qos1: bool = True
                    ) -> tuple[list[Incoming], int]:
    """The whole PUBLISH packets (QoS 0, and QoS 1 if ``qos1``) at ``data[start:]``, and the
    offset just after the last one.

    Stops at the first packet that is anything else: another type, QoS 2, incomplete (the rest
    is still in the socket), malformed, or an MQTT 5 topic alias (an empty topic). paho then
    handles that one as usual, so behaviour on odd input stays paho's. MQTT 5 properties are
    skipped (the agent uses none of them).

    >>> packet = bytes([0x30, 9, 0, 3]) + b"a/b" + b"1234"
    >>> split_publishes(packet * 2 + b"\\x30", 0, v5=False)
    ([Incoming(topic='a/b', payload=b'1234', qos=0, mid=0, retain=False), \
Incoming(topic='a/b', payload=b'1234', qos=0, mid=0, retain=False)], 22)
    """
    out: list[Incoming] = []
    end = len(data)
    pos = start
    while pos + 2 <= end:
        header = data[pos]
        qos = (header >> 1) & 3
        if header & 0xF0 != 0x30 or qos > 1 or (qos == 1 and not qos1):
            break
        length, i = _varint(data, pos + 1, end)
        if length < 0:
            break
        body_end = i + length
        if body_end > end or length < 2:
            break
        topic_end = i + 2 + ((data[i] << 8) | data[i + 1])
        p = topic_end
        mid = 0
        if qos:
            if p + 2 > body_end:
                break
            mid = (data[p] << 8) | data[p + 1]
            p += 2
        if v5:
            props, p = _varint(data, p, body_end)
            if props < 0:
                break
            p += props
        if p > body_end or topic_end == i + 2:
            break
        out.append(Incoming(data[i + 2:topic_end].decode("utf-8", "replace"),
                            data[p:body_end], qos, mid, bool(header & 1)))
        pos = body_end
    return out, pos


def encode_varint(n: int) -> bytes:
    """An MQTT variable byte integer (what a remaining length is written as); the agent only
    reads them, the benchmark's publisher and the tests write them.

    >>> [encode_varint(n).hex() for n in (0, 127, 128, 16_383, 2_097_152)]
    ['00', '7f', '8001', 'ff7f', '80808001']
    >>> _varint(encode_varint(300) + b"rest", 0, 6)
    (300, 2)
    """
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``data[i:end]`` and the offset after it; ``(-1, i)``
    when it is incomplete or longer than the four bytes MQTT allows."""
    value = shift = 0
    for j in range(i, min(i + 4, end)):
        byte = data[j]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, j + 1
        shift += 7
    return -1, i


class BufferedClient(paho.Client):
    """``paho.Client`` with buffered socket reads and, if ``on_publishes`` is set, PUBLISH
    packets handed over in batches; behaves like paho in every other way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = b""
        self._offset = 0  # bytes of _buffer already handed out
        self._read_socket: Any = None  # the socket the buffered bytes came from
        self._socket_read_allowed = True  # False while loop_read works through its buffer
        #: called (in the network thread) with the PUBLISH packets of one socket read
        self.on_publishes: PublishesHandler | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.buffered_bytes():
            if not self._socket_read_allowed:  # paho's "nothing yet": it keeps a cut packet
                raise BlockingIOError          # and finishes it on its next turn
            data = super()._sock_recv(CHUNK)  # raises as paho expects when nothing is there
            if len(data) <= bufsize:
                self._buffer, self._offset = b"", 0
                return data
            self._buffer, self._offset, self._read_socket = data, 0, self._sock
        start = self._offset
        self._offset = start + bufsize
        return self._buffer[start:start + bufsize]

    def buffered_bytes(self) -> int:
        """Bytes received from the current socket and not yet handed to paho."""
        if self._read_socket is not self._sock:  # reconnected: the old bytes are stale
            return 0
        return max(len(self._buffer) - self._offset, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's ``loop_read``, repeated while buffered bytes remain: they would otherwise
        wait for the next ``select()``, which only sees bytes still in the socket.

        Only the first call may read the socket: the repeats work through what it read and
        stop at a packet cut by its end. Were they to read on, a reader slower than its input
        would never leave this loop while bytes keep coming, and paho, which writes between
        two reads, would never send the agent's alerts, acknowledgements or pings."""
        rc = super().loop_read(max_packets)
        self._socket_read_allowed = False
        try:
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.buffered_bytes():
                rc = super().loop_read(max_packets)
        finally:
            self._socket_read_allowed = True
        return rc

    def _packet_read(self) -> MQTTErrorCode:
        """The buffered PUBLISH packets at once, if that is what comes next; otherwise one
        packet, paho's way."""
        if (self.on_publishes is not None and self._in_packet["command"] == 0
                and self.buffered_bytes() and self._deliver_publishes()):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _deliver_publishes(self) -> int:
        """Hand the whole PUBLISH packets at the head of the buffer to ``on_publishes``;
        returns how many there were."""
        assert self.on_publishes is not None
        messages, self._offset = split_publishes(
            self._buffer, self._offset, self._protocol == MQTTProtocolVersion.MQTTv5,
            qos1=self._manual_ack)  # without manual acks paho must send the PUBACKs itself
        if not messages:
            return 0
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        with self._in_callback_mutex:
            try:
                self.on_publishes(messages)
            except Exception as err:  # what paho does when on_message raises
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_publishes: %s", err)
                if not self.suppress_exceptions:
                    raise
        return len(messages)
