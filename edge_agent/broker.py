"""Start a local MQTT broker on a free loopback port: for the demo and for the tests.

``mosquitto`` (Debian package ``mosquitto``) runs as a child process with a config file of its
own, so it never touches a system broker; it is stopped by its pid. Where mosquitto is not
installed, the demo falls back to an embedded Python broker (see :mod:`edge_agent.demo`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The mosquitto executable, also where ``/usr/sbin`` is not on ``PATH``."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
            time.sleep(0.05)


def stop_child(process: "subprocess.Popen[bytes]", timeout: float = 10.0,
               sig: int = signal.SIGTERM) -> int:
    """Stop a child process by its pid: ``sig`` first, SIGKILL if it does not exit in time."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return int(process.returncode)


class Mosquitto:
    """A mosquitto child process on ``127.0.0.1:port`` with its own config and data folder.

    ``extra_config`` lines are appended to the listener's config (TLS, password file, ...).
    The broker keeps persistent sessions in memory and on disk (``persistence``), so a
    :meth:`restart` behaves like a real broker restart. A given ``folder`` is created if
    missing and kept on :meth:`close`; without one, a temporary folder is made and removed.
    """

    def __init__(self, port: int | None = None, *, extra_config: str = "",
                 anonymous: bool = True, folder: str | Path | None = None) -> None:
        executable = find_mosquitto()
        if executable is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.executable = executable
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="edge-mosquitto-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "mosquitto.log"
        self.config_path = self.folder / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            # as root, mosquitto would switch to the 'mosquitto' user, who cannot write here
            + (f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else "")
            + extra_config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen([self.executable, "-c", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_tail()}") from None
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the broker by its pid (SIGTERM, or SIGKILL with ``kill``)."""
        process = self.process
        if process is None:
            return
        stop_child(process, sig=signal.SIGKILL if kill else signal.SIGTERM)
        if process.stderr is not None:
            process.stderr.close()
        self.process = None

    def restart(self, downtime_s: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime_s)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
