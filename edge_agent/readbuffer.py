"""A paho client that reads its socket in large chunks instead of a few bytes at a time.

Why: paho 2 reads every incoming packet with at least three ``recv()`` calls (the command
byte, the remaining-length bytes one by one, the body) and, for QoS 0, one packet per
``select()``. Each system call releases the GIL, and with the agent's worker thread busy the
network thread must win it back every time: at a few thousand readings per second that
hand-over, not the parsing, is what the network thread spends its time on (see
``docs/benchmarks.md``). This client serves paho's small reads from a buffer filled
``CHUNK`` bytes at a time, and keeps handling packets while whole ones are buffered.

It overrides two private paho methods (``_sock_recv``, ``loop_read``), so the agent pins
``paho-mqtt<3``; ``tests/test_readbuffer.py`` checks it against a real broker, including
reconnects, packets split across reads, and TLS.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

CHUNK = 65536  # bytes per recv(): a few hundred readings of the usual size


class BufferedClient(paho.Client):
    """``paho.Client`` with buffered socket reads; behaves like paho in every other way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = memoryview(b"")
        self._read_socket: Any = None  # the socket the buffered bytes came from

    def _sock_recv(self, bufsize: int) -> bytes:
        buffered = self._read_buffer
        if self._read_socket is not self._sock:  # reconnected: the old bytes are stale
            buffered = memoryview(b"")
        if not buffered:
            data = super()._sock_recv(CHUNK)  # raises as paho expects when nothing is there
            if len(data) <= bufsize:
                self._read_buffer = memoryview(b"")
                return data
            buffered = memoryview(data)
            self._read_socket = self._sock
        self._read_buffer = buffered[bufsize:]
        return bytes(buffered[:bufsize])

    def buffered_bytes(self) -> int:
        """Bytes received from the current socket and not yet handed to paho."""
        return len(self._read_buffer) if self._read_socket is self._sock else 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's ``loop_read``, repeated while buffered bytes remain: they would otherwise
        wait for the next ``select()``, which only sees bytes still in the socket."""
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.buffered_bytes():
            rc = super().loop_read(max_packets)
        return rc
