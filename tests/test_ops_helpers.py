"""Helpers (no tests here) for the operations tests: `mailgate serve` as a real subprocess, and SMTP with retries.

`DaemonProcess` runs ``python -m mailgate.cli --config F serve`` with its stderr in a log file, optionally
with a pre-bound listening socket handed over as fd 3 the way systemd socket activation does it.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import REPO, wait_until  # noqa: F401  (re-exported for the ops tests)

# Execs mailgate in the same process after putting the inherited socket on fd 3 and LISTEN_PID to our own pid:
# what systemd does between fork() and exec() for a socket-activated service.
ACTIVATE = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd) if fd != 3 else None; "
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES='mailgate.socket'); "
            "os.execv(sys.executable, [sys.executable, '-m', 'mailgate.cli', *sys.argv[2:]])")


class DaemonProcess:
    """`mailgate serve` in a subprocess (its own session, so signals reach only it)."""

    def __init__(self, config_path: Path, log_path: Path, *, log_format: str | None = None,
                 env: dict[str, str] | None = None, sock: socket.socket | None = None):
        self.config_path = config_path
        self.log_path = log_path
        self.log_format = log_format
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "DaemonProcess":
        args = ["--config", str(self.config_path), "serve"] + (["--log-format", self.log_format] if self.log_format else [])
        with open(self.log_path, "ab") as log:
            if self.sock is not None:
                fd = self.sock.fileno()
                cmd = [sys.executable, "-c", ACTIVATE, str(fd), *args]
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, cwd=REPO,
                                             pass_fds=(fd,), start_new_session=True)
            else:
                self.proc = subprocess.Popen([sys.executable, "-m", "mailgate.cli", *args], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log, env=self.env, cwd=REPO, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 20.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return
            if not self.alive:
                raise AssertionError(f"daemon exited ({self.proc and self.proc.returncode}) before logging {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"daemon did not log {text!r} within {timeout} s:\n{self.log()[-3000:]}")

    def wait_ready(self, port: int, timeout: float = 30.0) -> None:
        """Until the SMTP port greets with 220 (the daemon logs 'mailgate ready' just after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"daemon exited with {self.proc and self.proc.returncode}:\n{self.log()[-3000:]}")
            if greets(port):
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not answering on port {port} within {timeout} s:\n{self.log()[-3000:]}")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait for the exit; returns the exit code (fails the test when it takes longer than `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"daemon did not exit within {timeout} s of signal {sig}:\n{self.log()[-3000:]}") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def greets(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            ok = s.recv(4).startswith(b"220")
            if ok:
                s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def try_send(port: int, raw: bytes, mail_from: str = "customer@client.test", rcpt: str = "support@example.test",
             timeout: float = 10.0) -> tuple[int, bytes]:
    """One SMTP transaction; (code, text) of the final reply, or (-1, error) when the connection failed."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
            client.ehlo("client.test")
            code, text = client.mail(mail_from)
            if code != 250:
                return code, text
            code, text = client.rcpt(rcpt)
            if code != 250:
                return code, text
            return client.data(raw)
    except (OSError, smtplib.SMTPException) as exc:
        return -1, repr(exc).encode()


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database the way an admin would (a separate connection)."""
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()

