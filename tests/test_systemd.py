"""The systemd side: the unit file (verify + security exposure), sd_notify, the watchdog gate,
and the install script's guard rails.

The sd_notify tests bind a real ``AF_UNIX`` datagram socket (a path in a temp dir, and an
abstract one) and check the exact bytes that arrive, as systemd would receive them. The unit
tests run ``systemd-analyze`` (skipped where it is absent): ``verify`` inside a throwaway
``--root=`` holding stub executables at the unit's ``Exec*=`` paths, so the real unit is checked
unchanged on a machine where the agent is not installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.systemd import (Notifier, WatchdogGate, notify_socket_address, watchdog_interval,
                                watchdog_ping_period)

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge-agent.service"
INSTALL_SH = ROOT / "systemd" / "install.sh"
MAX_EXPOSURE = 2.5
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is not installed")


# -- helpers --------------------------------------------------------------------------------------
class Receiver:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value          # what $NOTIFY_SOCKET would say
        sock.settimeout(2.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)   # as systemd does

    def recv(self) -> str:
        return self.sock.recv(4096).decode("utf-8")

    def recv_with_pid(self) -> tuple[str, int]:
        """The message and the sender's pid from SCM_CREDENTIALS (what NotifyAccess= checks)."""
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = int.from_bytes(payload[:4], "little", signed=True)
        return data.decode("utf-8"), pid

    def pending(self) -> list[str]:
        """Everything queued now, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = os.path.join(folder, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            yield Receiver(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"edge-agent-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# -- sd_notify ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_arrive_with_exact_content(kind: str, request: pytest.FixtureRequest,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    receiver: Receiver = request.getfixturevalue(f"{kind}_receiver")
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    with Notifier() as notifier:
        assert notifier.enabled
        assert notifier.ready() is True
        assert receiver.recv() == "READY=1"
        assert notifier.ready("connected to broker") is True
        assert receiver.recv() == "READY=1\nSTATUS=connected to broker"
        assert notifier.status("3 streams, 0 open episodes") is True
        assert receiver.recv() == "STATUS=3 streams, 0 open episodes"
        assert notifier.watchdog() is True
        assert receiver.recv() == "WATCHDOG=1"
        assert notifier.stopping() is True
        assert receiver.recv() == "STOPPING=1"
        assert notifier.stopping("draining the outbox") is True
        assert receiver.recv() == "STOPPING=1\nSTATUS=draining the outbox"
        assert notifier.extend_timeout(45) is True
        assert receiver.recv() == "EXTEND_TIMEOUT_USEC=45000000"
        assert notifier.notify("ERRNO=5", "STATUS=x") is True
        assert receiver.recv() == "ERRNO=5\nSTATUS=x"
        assert receiver.pending() == []


def test_reloading_carries_monotonic_usec(path_receiver: Receiver) -> None:
    notifier = Notifier(path_receiver.env_value)
    before = monotonic_usec()
    assert notifier.reloading("loading bundle") is True
    after = monotonic_usec()
    lines = path_receiver.recv().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[2] == "STATUS=loading bundle"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    notifier.reloading()
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", path_receiver.recv())


def test_status_text_cannot_inject_fields(path_receiver: Receiver) -> None:
    notifier = Notifier(path_receiver.env_value)
    notifier.status("bad bundle\nREADY=1")
    assert path_receiver.recv() == "STATUS=bad bundle READY=1"


def test_sender_is_the_main_process_even_from_a_thread(path_receiver: Receiver) -> None:
    """NotifyAccess=main: systemd checks the sender's pid; a worker thread's message counts."""
    notifier = Notifier(path_receiver.env_value)
    results = []
    thread = threading.Thread(target=lambda: results.append(notifier.status("from a thread")))
    thread.start()
    thread.join()
    assert results == [True]
    assert path_receiver.recv_with_pid() == ("STATUS=from a thread", os.getpid())


def test_outside_systemd_every_call_is_a_no_op(no_systemd: None) -> None:
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.reloading() is False
    assert notifier.extend_timeout(10) is False
    assert notifier.notify("READY=1") is False
    notifier.close()
    gate = WatchdogGate(notifier)
    assert gate.timeout is None and not gate.enabled
    assert gate.tick() is False


def test_unusable_socket_values_disable_notifications() -> None:
    assert notify_socket_address("vsock:2:1234") is None
    assert notify_socket_address("@") is None
    assert notify_socket_address("relative/path") is None
    assert not Notifier("vsock:2:1234").enabled
    assert Notifier("vsock:2:1234").ready() is False


def test_a_dead_socket_never_raises_and_logs_once(caplog: pytest.LogCaptureFixture,
                                                  tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.enabled
    with caplog.at_level(logging.WARNING, logger="edge_agent.systemd"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("x") is False
    warnings = [r for r in caplog.records if r.name == "edge_agent.systemd"]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0].getMessage()


def test_recovers_when_the_socket_comes_back(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = os.path.join(folder, "notify")
        notifier = Notifier(path)
        assert notifier.watchdog() is False            # systemd not listening (yet)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2.0)
        try:
            assert notifier.watchdog() is True
            assert sock.recv(100) == b"WATCHDOG=1"
        finally:
            sock.close()


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, path_receiver: Receiver) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert notifier.ready() is True and path_receiver.recv() == "READY=1"


# -- watchdog settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "1500000"}, 1.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "thirty"}, None),
    ({"WATCHDOG_PID": str(os.getpid())}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected
    assert watchdog_ping_period(env) == (None if expected is None else expected / 2)


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 20.0
    gate = WatchdogGate(Notifier("@unused"))
    assert (gate.timeout, gate.ping_every, gate.stale_after) == (20.0, 10.0, 10.0)


# -- the progress-gated watchdog -------------------------------------------------------------------
def test_gate_pings_only_while_the_worker_makes_progress(path_receiver: Receiver,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(1000.0)
    gate = WatchdogGate(Notifier(path_receiver.env_value), timeout=30, clock=clock)
    assert (gate.ping_every, gate.stale_after, gate.enabled) == (15.0, 15.0, True)
    sent_at = []

    def run(until: float, beating: bool) -> None:
        """Advance in 1 s steps: the worker beats (or not), the main loop ticks."""
        while clock.now < until:
            clock.now += 1
            if beating:
                gate.beat()
            if gate.tick():
                sent_at.append(clock.now - 1000)

    assert gate.tick() is True                       # fresh at start: first ping at once
    sent_at.append(0.0)
    run(1040, beating=True)                          # healthy: one ping every 15 s
    assert sent_at == [0, 15, 30]
    with caplog.at_level(logging.WARNING, logger="edge_agent.systemd"):
        run(1100, beating=False)                     # the worker hangs after t=40
        # t=45: heartbeat 5 s old, ping due -> sent. t=60: next ping due, but the heartbeat is
        # 20 s old (> 15): withheld, and from then on. systemd's deadline: 45 + 30 = t=75.
        assert sent_at == [0, 15, 30, 45]
        assert gate.stale and gate.heartbeat_age() == 60
        run(1101, beating=True)                      # had it survived, it recovers:
    assert sent_at == [0, 15, 30, 45, 101]           # pinging resumes at once
    messages = [r.getMessage() for r in caplog.records if r.name == "edge_agent.systemd"]
    assert len(messages) == 2                        # one "no progress", one "again"
    assert "no progress" in messages[0] and "progress again" in messages[1]
    assert not gate.stale
    # systemd received exactly the pings the gate reported, nothing else
    assert path_receiver.pending() == ["WATCHDOG=1"] * len(sent_at) and gate.pings == len(sent_at)


def test_gate_hang_is_detected_within_the_bound() -> None:
    """A worker that stops beating gets no further ping after stale_after: systemd's deadline
    (last ping + timeout) falls at most stale_after + timeout after the last beat."""
    clock = FakeClock(0.0)
    pings: list[float] = []

    class Recording(Notifier):
        def watchdog(self) -> bool:
            pings.append(clock.now)
            return True

    gate = WatchdogGate(Recording("@unused"), timeout=30, clock=clock)
    for step in range(1, 400):                     # main loop ticks every 0.5 s
        clock.now = step * 0.5
        if clock.now <= 100:
            gate.beat()                            # the worker beats until t=100, then hangs
        gate.tick()
    assert pings and max(pings) <= 100 + gate.stale_after
    assert max(b - a for a, b in zip(pings, pings[1:])) <= gate.timeout


def test_gate_without_watchdog_still_tracks_staleness(path_receiver: Receiver) -> None:
    clock = FakeClock()
    gate = WatchdogGate(Notifier(path_receiver.env_value), timeout=None, clock=clock)
    assert not gate.enabled and gate.stale_after == 15.0
    assert gate.tick() is False
    clock.now += 16
    assert gate.stale and gate.tick() is False
    assert path_receiver.pending() == []


def test_gate_with_external_heartbeat_and_errors(path_receiver: Receiver) -> None:
    clock = FakeClock(50.0)
    last = {"t": 50.0}
    gate = WatchdogGate(Notifier(path_receiver.env_value), timeout=10, clock=clock,
                        heartbeat=lambda: last["t"])
    assert gate.tick() is True
    clock.now = 60.0                               # heartbeat 10 s old > stale_after (5 s)
    assert gate.tick() is False
    last["t"] = 59.5
    assert gate.tick() is True

    def broken() -> float:
        raise RuntimeError("worker state unreadable")

    broken_gate = WatchdogGate(Notifier(path_receiver.env_value), timeout=10, clock=clock,
                               heartbeat=broken)
    assert broken_gate.tick() is False             # no progress known: no ping, no exception
    assert broken_gate.heartbeat_age() == float("inf")
    assert path_receiver.pending() == ["WATCHDOG=1", "WATCHDOG=1"]


def test_gate_survives_a_dead_socket(tmp_path: Path) -> None:
    gate = WatchdogGate(Notifier(str(tmp_path / "gone")), timeout=2)
    assert gate.enabled and gate.tick() is False and gate.pings == 0


def test_gate_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        WatchdogGate(Notifier("@x"), timeout=0)
    with pytest.raises(ValueError):
        WatchdogGate(Notifier("@x"), timeout=10, stale_after=0)


def test_gate_with_real_threads_and_clock(abstract_receiver: Receiver) -> None:
    """A beating worker thread keeps the pings coming; when it stops, they stop."""
    gate = WatchdogGate(Notifier(abstract_receiver.env_value), timeout=0.4, stale_after=0.15)
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            gate.beat()
            time.sleep(0.01)

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        gate.tick()
        time.sleep(0.01)
    stop.set()
    thread.join()
    alive = gate.pings
    assert alive >= 2
    time.sleep(0.2)                                 # heartbeat now stale
    for _ in range(20):
        gate.tick()
        time.sleep(0.01)
    assert gate.pings == alive
    assert abstract_receiver.pending() == ["WATCHDOG=1"] * alive


# -- the unit file ---------------------------------------------------------------------------------
def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_provides_what_the_agent_relies_on() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [
        "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/agent.yaml"]
    assert s["ExecStartPre"] == [
        "/opt/edge-agent/venv/bin/edge-agent check --config /etc/edge-agent/agent.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["StateDirectory"] == ["edge-agent"]
    assert s["ConfigurationDirectory"] == ["edge-agent"]
    assert s["LoadCredential"] == ["mqtt-password:/etc/edge-agent/mqtt-password"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert "AF_INET" in s["RestrictAddressFamilies"][0].split()


def test_install_script_and_unit_agree_on_paths() -> None:
    script = INSTALL_SH.read_text()
    assert "/opt/edge-agent" in script and "/etc/edge-agent" in script
    assert "mqtt-password" in script and "edge-agent.service" in script


def systemd_unit_dir() -> Path | None:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(candidate, "sysinit.target").exists():
            return Path(candidate)
    return None


def verify_in_root(unit_text: str, root: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` the unit inside ``root``: the distribution's units (for the
    targets it orders against) plus a stub executable at each absolute ``Exec*=`` path."""
    units = systemd_unit_dir()
    if units is None:
        pytest.skip("no systemd unit directory with sysinit.target on this machine")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    for line in unit_text.splitlines():
        match = re.match(r"\s*Exec\w+=[-@:+!]*(/\S+)", line)
        if match:
            stub = root / match.group(1).lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    target = root / "etc/systemd/system/edge-agent.service"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit_text)
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "--man=no", "--generators=no",
         "--recursive-errors=no", "edge-agent.service"],
        capture_output=True, text=True, timeout=120)


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = verify_in_root(UNIT.read_text(), tmp_path / "root")
    output = (result.stdout + result.stderr).strip()
    print(f"\nsystemd-analyze verify: exit {result.returncode}, output: {output or '(none)'}")
    # verify exits 0 on mere warnings (an unknown key is "ignoring"): any output is a failure.
    assert result.returncode == 0 and output == "", output


@needs_analyze
def test_verify_harness_catches_mistakes(tmp_path: Path) -> None:
    """The check above is not vacuous: a misspelt key and a bad value are reported."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus\nProtectSytem=yes")
    result = verify_in_root(broken, tmp_path / "root")
    output = result.stdout + result.stderr
    assert "ProtectSytem" in output and "bogus" in output


@needs_analyze
def test_unit_exposure_is_low() -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for edge-agent\.service:\s*([0-9.]+)\s*(\S+)",
                      result.stdout)
    assert match, f"no overall exposure in the output:\n{result.stdout}\n{result.stderr}"
    exposure, verdict = float(match.group(1)), match.group(2)
    unmet = [line.strip() for line in result.stdout.splitlines() if line.startswith("✗")]
    print(f"\nsystemd-analyze security --offline=true: exposure {exposure} {verdict} "
          f"(limit {MAX_EXPOSURE}); not set:\n  " + "\n  ".join(unmet))
    assert exposure <= MAX_EXPOSURE, (
        f"exposure {exposure} {verdict} is above {MAX_EXPOSURE}; not set: {unmet}")


# -- install.sh guard rails ------------------------------------------------------------------------
def test_install_script_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = INSTALL_SH.read_text()
    assert "set -euo pipefail" in text


def test_install_script_usage_without_arguments() -> None:
    result = subprocess.run(["bash", str(INSTALL_SH)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr.lower()
    result = subprocess.run(["bash", str(INSTALL_SH), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage" in result.stdout.lower()


def test_install_script_refuses_to_run_without_root(tmp_path: Path) -> None:
    command = ["bash", str(INSTALL_SH), str(ROOT)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop to another user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "must run as root" in result.stderr, result.stderr


def fake_agent_wheel(folder: Path) -> Path:
    """A tiny wheel with an ``edge-agent`` console script: stands in for the project so the
    install script can be exercised offline in seconds (no numpy, no LiteRT)."""
    import base64
    import hashlib
    import zipfile

    files = {
        "edge_agent/__init__.py": "def main():\n    print('fake edge-agent')\n",
        "edge_agent/demo_bundle/manifest.json": "{}\n",
        "fakeagent-0.1.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: fakeagent\nVersion: 0.1\nProvides-Extra: agent\n",
        "fakeagent-0.1.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "fakeagent-0.1.dist-info/entry_points.txt":
            "[console_scripts]\nedge-agent = edge_agent:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("fakeagent-0.1.dist-info/RECORD,,")
    files["fakeagent-0.1.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / "fakeagent-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the install script needs root")
def test_install_script_is_idempotent(tmp_path: Path) -> None:
    """Run it twice into a scratch root: the venv is kept, an edited config and the password
    survive (with mode 0600 restored), the unit is installed, systemctl is driven as expected."""
    import stat
    import sys

    log = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    systemctl.chmod(0o755)
    config = tmp_path / "agent.yaml"     # like configs/agent.yaml: the demo bundle, relative
    config.write_text("bundle: ../edge_agent/demo_bundle # the demo\nbroker: {host: localhost}\n")
    installed = "bundle: bundles/demo       # the demo\nbroker: {host: localhost}\n"
    prefix, conf, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
    env = dict(os.environ, EDGE_AGENT_PREFIX=str(prefix), EDGE_AGENT_CONF_DIR=str(conf),
               EDGE_AGENT_UNIT_DIR=str(units), EDGE_AGENT_PYTHON=sys.executable,
               SYSTEMCTL=str(systemctl), PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1")
    wheel = fake_agent_wheel(tmp_path)
    command = ["bash", str(INSTALL_SH), str(wheel), "--config", str(config), "--no-start"]

    first = subprocess.run([*command, "--mqtt-password-file", "-"], input="s3cret\n", env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (prefix / "venv/bin/edge-agent").exists()
    assert (conf / "agent.yaml").read_text() == installed
    assert stat.S_IMODE((conf / "agent.yaml").stat().st_mode) == 0o644
    demo = conf / "bundles" / "demo" / "manifest.json"      # the demo bundle, world-readable
    assert demo.read_text() == "{}\n" and stat.S_IMODE(demo.stat().st_mode) == 0o644
    secret = conf / "mqtt-password"
    assert secret.read_text() == "s3cret\n" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (units / "edge-agent.service").read_text() == UNIT.read_text()
    assert log.read_text().splitlines() == ["daemon-reload", "enable edge-agent.service"]

    marker = prefix / "venv" / "kept"
    marker.write_text("")
    assert not (conf / "agent.yaml.dist").exists()         # nothing changed: no .dist
    (conf / "agent.yaml").write_text("broker: {host: broker.local}\n")   # the operator's edit
    secret.chmod(0o644)                                                  # someone loosened it
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert marker.exists(), "the venv was rebuilt"
    assert (conf / "agent.yaml").read_text() == "broker: {host: broker.local}\n"
    assert (conf / "agent.yaml.dist").read_text() == installed
    assert secret.read_text() == "s3cret\n" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert log.read_text().splitlines() == ["daemon-reload", "enable edge-agent.service"] * 2
