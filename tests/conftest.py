"""Shared test fixtures: free loopback ports, a real SMTP sink (aiosmtpd), and a real mailgate daemon on a temp dir."""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

pytest_plugins = ["dovecot"]  # the throwaway Dovecot fixtures (tests/dovecot.py)

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real SMTP server acting as the relay --------------------------------------------------------


@dataclass
class Captured:
    mail_from: str
    rcpt_to: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    messages: list[Captured] = field(default_factory=list)
    fail_with: str | None = None  # e.g. "451 4.3.0 try later" to simulate a relay in trouble
    arrived: threading.Condition = field(default_factory=threading.Condition)
    sessions: int = 0  # EHLO/HELO greetings seen: one per SMTP session

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_with:
            return self.fail_with
        with self.arrived:
            self.messages.append(Captured(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.arrived.notify_all()
        return "250 2.0.0 OK"


class SmtpSink:
    """An aiosmtpd server on a free loopback port that keeps what it receives."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 10.0, where: Callable[[Captured], bool] = lambda c: True) -> list[Captured]:
        deadline = time.monotonic() + timeout
        with self.handler.arrived:
            while True:
                found = [m for m in self.handler.messages if where(m)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} message(s) at the sink, got {len(found)}: "
                                         f"{[m.message['Subject'] for m in self.handler.messages]}")
                self.handler.arrived.wait(left)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()


# -- a real daemon --------------------------------------------------------------------------------


def write_config(tmp_path: Path, **settings: Any) -> Path:
    base: dict[str, Any] = {
        "database": str(tmp_path / "mailgate.db"),
        "support_addresses": ["support@example.test"],
        "maildir": str(tmp_path / "outbox-maildir"),
        "rules": str(tmp_path / "rules.yaml"),
        "templates": str(tmp_path / "templates"),
        "secret": "test-secret",
        "smtp": {"host": "127.0.0.1", "port": free_port()},
        "outbox": {"retry_base": 0.2, "retry_max": 1.0},
    }
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    path = tmp_path / "mailgate.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


class RunningDaemon:
    """A Daemon on its own event loop in a thread, as `mailgate serve` runs it, on temp files and free ports."""

    def __init__(self, config_path: Path, **daemon_options: Any):
        from mailgate.config import load
        from mailgate.daemon import Daemon

        self.config_path = config_path
        self.config = load(str(config_path))
        self.daemon = Daemon(self.config, **{"sweep_interval": 0.2, "grace": 5.0, **daemon_options})
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise AssertionError(f"daemon did not start: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self.daemon.serve(self.ready))
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc
            self.ready.set()

    @property
    def port(self) -> int:
        return self.config.smtp.port

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.daemon.store

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "daemon did not stop within 15 s"
        if self.error:
            raise self.error

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        return wait_until(predicate, timeout, what)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []

    def start(**settings: Any) -> RunningDaemon:
        d = RunningDaemon(write_config(tmp_path, **settings))
        started.append(d)
        return d

    yield start
    for d in started:
        if d.thread.is_alive():
            d.stop()


def send(port: int, raw: bytes | str, mail_from: str = "customer@client.test",
         rcpt: list[str] | None = None) -> tuple[int, bytes]:
    """Send one message over real SMTP; returns the server's final (code, text)."""
    if isinstance(raw, str):
        raw = raw.encode()
    raw = re.sub(rb"\r?\n", b"\r\n", raw)  # SMTP lines end in CRLF, as every real client sends them
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail(mail_from)
        assert code == 250, (code, text)
        for r in rcpt or ["support@example.test"]:
            code, text = client.rcpt(r)
            if code >= 400:
                return code, text
        code, text = client.data(raw)
        return code, text


def mail(subject: str = "Printer on fire", body: str = "Please help, the printer is on fire.", *,
         sender: str = "Carol Customer <customer@client.test>", to: str = "support@example.test",
         message_id: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """A small, well-formed customer mail."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id or os.urandom(8).hex()}@client.test>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return bytes(msg)


def run_cli(*args: str, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the real `mailgate` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "mailgate.cli", *args], input=stdin, capture_output=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)
