"""systemd integration, for real: the unit files verify and score well, socket activation hands the daemon its
listening socket on fd 3, and sd_notify tells READY=1 (only once SMTP answers), WATCHDOG=1 and STOPPING=1."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port, mail, write_config
from test_ops_helpers import DaemonProcess, crlf, greets, query, try_send

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's `mailgate` (verify insists the binary exists)."""
    exe = Path(sys.executable).with_name("mailgate")
    if not exe.exists():
        pytest.skip(f"{exe} missing (pip install -e .)")
    service = (UNITS / "mailgate.service").read_text()
    assert "ExecStart=/opt/mailgate/bin/mailgate " in service
    (tmp_path / "mailgate.service").write_text(service.replace("/opt/mailgate/bin/mailgate", str(exe)))
    shutil.copy(UNITS / "mailgate.socket", tmp_path / "mailgate.socket")
    return tmp_path


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_service_unit_asks_for_what_the_daemon_does() -> None:
    s = settings(UNITS / "mailgate.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"] and s["RestartPreventExitStatus"] == ["78"]
    # the daemon pings every 2 s; leave plenty of slack
    assert int(s["WatchdogSec"][0].rstrip("s")) >= 10
    assert int(s["TimeoutStopSec"][0].rstrip("s")) > 10  # more than the daemon's 10 s grace for mail in flight
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["mailgate"] and s["ConfigurationDirectory"] == ["mailgate"]
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                       "MemoryDenyWriteExecute": "yes", "UMask": "0077", "CapabilityBoundingSet": "",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallArchitectures": "native"}.items():
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    sock = settings(UNITS / "mailgate.socket")
    assert sock["ListenStream"] == ["25"] and sock["Accept"] == ["no"]


@needs_analyze
def test_units_verify(units: Path) -> None:
    result = subprocess.run([ANALYZE, "verify", str(units / "mailgate.service"), str(units / "mailgate.socket")],
                            capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "mailgate" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_low(units: Path) -> None:
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(units / "mailgate.service")],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for mailgate\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout  # "OK"; 10 is an unprotected service


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def test_socket_activation_serves_on_the_inherited_socket(tmp_path: Path) -> None:
    """What mailgate.socket does: the listening socket arrives as fd 3 with LISTEN_FDS=1 and LISTEN_PID=<our pid>."""
    configured = free_port()  # the config names another port: with a socket passed in, it must not be used
    cfg = write_config(tmp_path, smtp={"port": configured})
    sock = listening_socket()
    port = sock.getsockname()[1]
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", sock=sock).start()
    sock.close()  # the daemon holds its own copy, as with systemd
    try:
        daemon.wait_ready(port)
        assert not greets(configured)
        code, _ = try_send(port, crlf(mail("Through the systemd socket", message_id="activated")))
        assert code == 250
        daemon.wait_for_log("outcome=ticketed")
        assert f"listening for SMTP on 127.0.0.1:{port}" in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert query(tmp_path / "mailgate.db", "SELECT count(*) FROM tickets") == [(1,)]


def test_listen_fds_for_another_process_is_ignored(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    port = int(re.search(r"port: (\d+)", cfg.read_text()).group(1))  # type: ignore[union-attr]
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", env={"LISTEN_FDS": "1", "LISTEN_PID": "1"}).start()
    try:
        daemon.wait_ready(port)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_sd_notify_ready_after_listening_watchdog_and_stopping(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    port = int(re.search(r"port: (\d+)", cfg.read_text()).group(1))  # type: ignore[union-attr]
    short = Path(tempfile.mkdtemp(prefix="mg-notify-", dir="/tmp"))  # AF_UNIX paths are limited to 108 bytes
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short / "notify"))
    notify.settimeout(1.0)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": str(short / "notify")}).start()
    received: list[str] = []

    def next_message(timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = notify.recv(4096).decode()
            except socket.timeout:
                assert daemon.alive, daemon.log()
                continue
            received.append(text)
            return text
        raise AssertionError(f"no sd_notify message within {timeout} s; got {received}:\n{daemon.log()}")

    try:
        first = next_message(30)
        assert "READY=1" in first.splitlines(), first
        # READY=1 comes only after the listener is up: the port answers right now
        assert greets(port), "READY=1 was sent before the SMTP port accepted connections"
        assert "STATUS=accepting mail" in first
        watchdog = next_message(10)
        assert "WATCHDOG=1" in watchdog.splitlines() and "STATUS=accepting mail" in watchdog, watchdog
        daemon.send_signal(signal.SIGTERM)
        while True:
            text = next_message(15)
            if "STOPPING=1" in text.splitlines():
                break
        assert daemon.proc is not None and daemon.proc.wait(30) == 0
    finally:
        daemon.kill()
        notify.close()
        shutil.rmtree(short, ignore_errors=True)
