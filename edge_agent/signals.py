"""What the process has been asked by signal: stop (SIGTERM, SIGINT) or reload (SIGHUP).

The handlers only record the request; the agent's main loop acts on it, so a stop or a reload
never interleaves with half-done work (gunicorn's rule). They are installed before the agent is
built, so a ``systemctl stop`` that arrives while the bundle is still loading is kept and acted
on once the agent runs (it still drains and says goodbye) instead of killing it half-way.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Requests:
    """Stop and reload requests, set by signal handlers (or by code: :meth:`request_stop`)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_signal: int | None = None  # the signal that asked, if one did
        self.reload = threading.Event()

    def request_stop(self, signum: int | None = None) -> None:
        self.stop_signal = signum
        self.stop.set()

    def install(self) -> "Requests":
        """Record SIGTERM and SIGINT as a stop, SIGHUP as a reload (main thread only)."""
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signum)

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            self.reload.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_stop)
        signal.signal(signal.SIGHUP, on_hangup)
        return self
