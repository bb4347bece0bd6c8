"""Talk to systemd: readiness, status, reload/stop notices and a progress-gated watchdog.

This is the ``sd_notify(3)`` protocol done in a few lines of standard library, so the agent
needs no libsystemd binding on the device: a notification is one datagram of ``KEY=VALUE``
lines sent to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract socket
written with a leading ``@``). Outside systemd (a terminal, a test, a container) there is no
such variable, and every call is a harmless no-op that returns ``False``; the agent never has
to ask whether it runs under systemd.

How the agent should use it (the unit in ``systemd/edge-agent.service`` is ``Type=notify``
with ``WatchdogSec=``)::

    notifier = Notifier()                      # reads $NOTIFY_SOCKET once
    gate = WatchdogGate(notifier)              # reads $WATCHDOG_USEC / $WATCHDOG_PID once
    # worker thread: gate.beat() after each processed message *and* each idle wake-up
    notifier.ready("connected to broker, bundle 3f2a…")     # after connect + bundle load
    while not stopping:                        # main loop, wakes at least every second
        gate.tick()                            # WATCHDOG=1, but only while the worker beats
        if hup_seen:                           # set by the SIGHUP handler, acted on here
            notifier.reloading("reloading bundle")
            ...                                # load the new bundle (or keep the old one)
            notifier.ready("bundle 9c1e… loaded")   # always, also when the reload failed
    notifier.stopping("draining outbox")

Why it is shaped like this:

* **Signal handlers only record the signal; the main loop acts.** (The gunicorn arbiter
  pattern.) A Python signal handler runs between two bytecodes of whatever the main thread was
  doing, so reloading a bundle or flushing the outbox from inside it would interleave with
  half-finished work. So SIGHUP/SIGTERM set a flag, the main loop (which wakes at least every
  second) sees it, and notifications are sent from there in a well-defined order:
  ``RELOADING=1`` … ``READY=1``, or ``STOPPING=1`` before the graceful shutdown.
* **Liveness is judged by a heartbeat of real progress, not by the process being alive.**
  A timer thread that pings the watchdog unconditionally would keep pinging while the worker
  is deadlocked (a stuck interpreter call, a wedged MQTT callback, an SQLite lock), and systemd
  would never restart the agent. :class:`WatchdogGate` therefore sends ``WATCHDOG=1`` only
  while the worker's heartbeat is fresh. The worker beats after every processed message and
  after every idle wake-up, so an idle but healthy agent still beats; a hung one stops
  beating, the pings stop, and after ``WatchdogSec=`` systemd kills it (SIGABRT, so there is a
  core/traceback) and ``Restart=on-failure`` brings it back.
* **Notifying never takes the daemon down.** A failed ``sendto`` (systemd restarting, a full
  socket queue) is logged once and reported as ``False``; nothing here raises.

The watchdog only runs once start-up is complete (after ``READY=1``); until then
``TimeoutStartSec=`` applies. An agent that legitimately waits longer (a broker that is not up
yet at boot) can say so with :meth:`Notifier.extend_timeout` and a :meth:`Notifier.status`
line, instead of being killed as a hung start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal

__all__ = ["Notifier", "WatchdogGate", "watchdog_interval", "watchdog_ping_period",
           "notify_socket_address"]

log = logging.getLogger(__name__)

# A datagram that systemd cannot take within this time is dropped (the call returns False):
# a stalled notification must never stall the main loop that feeds the watchdog.
SEND_TIMEOUT_S = 2.0

# How stale the worker's heartbeat may be, when there is no watchdog to derive it from.
DEFAULT_STALE_AFTER_S = 15.0

# WatchdogGate's default timeout: read $WATCHDOG_USEC / $WATCHDOG_PID.
FROM_ENVIRONMENT: Final = "environment"


def notify_socket_address(value: str | None) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or ``None`` if unusable.

    ``/run/systemd/notify`` is a path; ``@name`` is the abstract socket ``\\0name``. Other
    forms (systemd's ``vsock:`` addresses for VMs) are not supported and give ``None``.

    >>> notify_socket_address("/run/systemd/notify")
    '/run/systemd/notify'
    >>> notify_socket_address("@sd-notify") == "\\0sd-notify"
    True
    >>> notify_socket_address("") is None and notify_socket_address(None) is None
    True
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd enforces (``WatchdogSec=``), in seconds, or ``None``.

    Read from ``$WATCHDOG_USEC``. ``None`` when it is absent, not a positive integer, or when
    ``$WATCHDOG_PID`` is set and names another process (the variables were inherited by a
    child, and the pings would not count). This is the *deadline*: ping at least twice as
    often (:func:`watchdog_ping_period`).

    >>> watchdog_interval({"WATCHDOG_USEC": "30000000"})
    30.0
    >>> watchdog_interval({}) is None
    True
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def watchdog_ping_period(env: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout: how often to send ``WATCHDOG=1`` (systemd's advice)."""
    interval = watchdog_interval(env)
    return None if interval is None else interval / 2


def _monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, the clock ``MONOTONIC_USEC=`` is read against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """A value must not contain a newline: it would start a new ``KEY=VALUE`` line."""
    return " ".join(str(text).splitlines())


class Notifier:
    """Send ``sd_notify`` messages to systemd; every method returns whether one was sent.

    ``Notifier()`` reads ``$NOTIFY_SOCKET`` once, at construction. Without it (not under
    systemd, or a unit that is not ``Type=notify``) :attr:`enabled` is false and every method
    returns ``False`` without doing anything. ``address`` overrides the variable (tests).

    Thread-safe: the worker may call :meth:`status` while the main loop pings the watchdog.
    With ``NotifyAccess=main`` only the main process's messages count; threads of the main
    process are fine (the kernel reports the process id, not the thread id).
    """

    def __init__(self, address: str | None = None, *, env: Mapping[str, str] | None = None,
                 unset_environment: bool = False) -> None:
        """``unset_environment=True`` removes ``$NOTIFY_SOCKET`` (and the watchdog variables)
        from ``os.environ`` so that child processes cannot notify in the agent's name."""
        if address is None:
            source = os.environ if env is None else env
            address = source.get("NOTIFY_SOCKET")
        self.socket_name = address
        self._address = notify_socket_address(address)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        if address and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or an abstract socket; "
                        "systemd notifications are disabled", address)
        if unset_environment:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)

    @property
    def enabled(self) -> bool:
        """Whether there is a notification socket to send to."""
        return self._address is not None

    # -- the messages ------------------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete; ``status`` is shown by
        ``systemctl status``. Send it after the broker connection and the bundle load."""
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one free-form line for ``systemctl status`` (no state change)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: a keep-alive ping. Prefer :class:`WatchdogGate`, which sends it
        only while the worker makes progress."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a graceful stop has begun (after SIGTERM, before draining)."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``: a reload (SIGHUP) has begun.

        systemd ≥ 253 requires the timestamp for ``Type=notify-reload``, to match the notice to
        the reload request; older versions (and ``Type=notify``) ignore it. End the reload
        with :meth:`ready`, also when it failed and the old bundle stays in service, or the
        unit stays "reloading" until the timeout.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}",
                           *self._status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for ``seconds`` more before the current start, stop
        or reload timeout fires (e.g. while waiting for the broker at boot). Repeat it before
        the extension runs out."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` strings) as one datagram. Never raises."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
                return True
            except Exception as exc:  # noqa: BLE001 - a notification must never kill the agent
                self._drop_socket()
                if not self._warned:
                    self._warned = True
                    log.warning("cannot notify systemd at %s (%s); carrying on, further "
                                "failures are not logged", self.socket_name, exc)
                return False

    def close(self) -> None:
        """Close the socket (a later call opens a new one)."""
        with self._lock:
            self._drop_socket()

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    @staticmethod
    def _status_field(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={_one_line(status)}",)

    def __repr__(self) -> str:
        return f"Notifier({self.socket_name!r})"


class WatchdogGate:
    """Send ``WATCHDOG=1`` only while the worker makes progress.

    Two sides, two threads:

    * the **worker** calls :meth:`beat` after each processed message and after each idle
      wake-up of its loop (it wakes at least every second), so a healthy worker's heartbeat is
      never more than about a second old, busy or idle;
    * the **main loop** calls :meth:`tick` often (every loop iteration is fine: pings are rate
      limited to ``ping_every``). ``tick`` pings only when the heartbeat is at most
      ``stale_after`` seconds old. When the worker hangs, the pings stop, and systemd kills
      and restarts the agent ``WatchdogSec=`` after the last one: at most
      ``stale_after + timeout`` (45 s with the defaults and ``WatchdogSec=30s``) after the
      last sign of progress. When the heartbeat becomes fresh again before that, pinging
      resumes at once.

    ``timeout`` is ``WatchdogSec=`` in seconds, by default from the environment
    (:func:`watchdog_interval`); with none, :meth:`tick` never pings but :attr:`stale` and
    :meth:`heartbeat_age` still work (useful for a status line). ``ping_every`` defaults to
    half the timeout; ``stale_after`` to half the timeout (or 15 s without one).
    ``heartbeat`` replaces the gate's own :meth:`beat` record with a callable returning the
    worker's last monotonic timestamp; ``clock`` is the monotonic clock (injected in tests).

    Pure bookkeeping around :meth:`Notifier.watchdog`; it never raises.
    """

    def __init__(self, notifier: Notifier, *,
                 timeout: float | None | Literal["environment"] = FROM_ENVIRONMENT,
                 ping_every: float | None = None, stale_after: float | None = None,
                 heartbeat: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Raises ``ValueError`` for a non-positive ``timeout`` or ``stale_after`` (a
        programming error, caught at start-up); nothing after construction raises."""
        if timeout == FROM_ENVIRONMENT:
            timeout = watchdog_interval()
        if timeout is not None and (isinstance(timeout, str) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.notifier = notifier
        self.timeout: float | None = None if timeout is None else float(timeout)
        half = None if self.timeout is None else self.timeout / 2
        self.ping_every = float(ping_every if ping_every is not None else (half or 0.0))
        self.stale_after = float(stale_after if stale_after is not None
                                 else (half or DEFAULT_STALE_AFTER_S))
        if self.stale_after <= 0:
            raise ValueError("stale_after must be positive")
        self._clock = clock
        self._heartbeat = heartbeat
        self._last_beat = clock()          # start-up counts as progress
        self._last_ping: float | None = None
        self._stale_reported = False
        self._failure_logged = False
        self.pings = 0                     # how many WATCHDOG=1 were sent (for status/tests)

    @property
    def enabled(self) -> bool:
        """Whether systemd expects pings (a watchdog timeout and a notification socket)."""
        return self.timeout is not None and self.notifier.enabled

    def beat(self, now: float | None = None) -> None:
        """Worker side: record progress now (one float store: cheap and thread-safe)."""
        self._last_beat = self._clock() if now is None else now

    def last_beat(self) -> float:
        """The monotonic time of the worker's last sign of progress."""
        if self._heartbeat is not None:
            return float(self._heartbeat())
        return self._last_beat

    def heartbeat_age(self, now: float | None = None) -> float:
        """Seconds since the worker's last beat."""
        now = self._clock() if now is None else now
        try:
            return max(0.0, now - self.last_beat())
        except Exception:  # noqa: BLE001 - a broken heartbeat source counts as no progress
            return float("inf")

    @property
    def stale(self) -> bool:
        """Whether the worker has shown no progress for longer than ``stale_after``."""
        return self.heartbeat_age() > self.stale_after

    def tick(self, now: float | None = None) -> bool:
        """Main-loop side: send ``WATCHDOG=1`` if it is due and the worker is alive.

        Returns whether a ping was sent. Never raises.
        """
        try:
            now = self._clock() if now is None else now
            age = self.heartbeat_age(now)
            if age > self.stale_after:
                if not self._stale_reported:
                    self._stale_reported = True
                    log.warning("worker shows no progress for %.1f s (limit %.1f s): "
                                "withholding the watchdog ping%s", age, self.stale_after,
                                "; systemd restarts the agent if this lasts"
                                if self.enabled else "")
                return False
            if self._stale_reported:
                self._stale_reported = False
                log.warning("worker is making progress again (heartbeat %.1f s old)", age)
            if not self.enabled:
                return False
            if self._last_ping is not None and now - self._last_ping < self.ping_every:
                return False
            if self.notifier.watchdog():
                self._last_ping = now
                self.pings += 1
                return True
            return False
        except Exception:  # noqa: BLE001 - the watchdog path must never kill the main loop
            if not self._failure_logged:
                self._failure_logged = True
                log.exception("watchdog gate failed (logged once); no ping sent")
            return False

    def __repr__(self) -> str:
        return (f"WatchdogGate(timeout={self.timeout}, ping_every={self.ping_every}, "
                f"stale_after={self.stale_after}, enabled={self.enabled})")
