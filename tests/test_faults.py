"""Faults, on a real `mailgate serve` process: the relay down for a while (acks wait in the outbox, then all go out),
and a full disk (SMTP 451, `mailgate ingest` exit 75 with a one-line reason, no corruption, recovery)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from aiosmtpd.controller import Controller

from conftest import SinkHandler, free_port, mail, run_cli, write_config
from test_ops_helpers import DaemonProcess, crlf, query, try_send, wait_until


def port_of(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["smtp"]["port"])


class Relay:
    """A real SMTP relay on a fixed port that can answer 451, be stopped, and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def outbox(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT kind, state, attempts, last_error FROM outbox ORDER BY id")


def test_relay_down_acks_wait_in_the_outbox_and_all_go_out_when_it_returns(tmp_path: Path) -> None:
    relay = Relay()
    relay.handler.fail_with = "451 4.3.0 Relay overloaded, try later"
    relay.start()
    cfg = write_config(tmp_path, relay={"host": "127.0.0.1", "port": relay.port, "tls": "none"},
                       outbox={"retry_base": 0.2, "retry_max": 0.5, "max_attempts": 10_000})
    db = tmp_path / "mailgate.db"
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        port = port_of(cfg)
        daemon.wait_ready(port)
        senders = [f"c{i}@client.test" for i in range(4)]
        for i, sender in enumerate(senders):
            code, _ = try_send(port, crlf(mail(f"Outage {i}", message_id=f"outage-{i}", sender=sender)), mail_from=sender)
            assert code == 250  # intake does not depend on the relay

        # 1. the relay answers 451: acks are deferred, kept queued, retried
        wait_until(lambda: len(outbox(db)) == 4 and all(r[1] == "queued" and r[2] >= 2 and "451" in r[3] for r in outbox(db)),
                   30, "acks deferred with the relay's 451")
        # 2. the relay is gone altogether: still queued, now "unreachable"
        relay.stop()
        wait_until(lambda: all(r[1] == "queued" and "unreachable" in (r[3] or "") for r in outbox(db)), 30,
                   "acks deferred with the relay unreachable")
        assert relay.handler.messages == []
        events = dict(query(db, "SELECT kind, count(*) FROM events WHERE kind LIKE 'ack_%' GROUP BY kind"))
        assert events.get("ack_deferred", 0) >= 8 and "ack_sent" not in events, events
        assert query(db, "SELECT count(*) FROM tickets WHERE acknowledged_at IS NOT NULL") == [(0,)]

        # 3. it comes back healthy: every ack goes out, once
        relay.handler.fail_with = None
        relay.start()
        wait_until(lambda: len(relay.handler.messages) >= 4 and all(r[1] == "sent" for r in outbox(db)), 30,
                   "all acks sent after the relay returned")
        assert sorted(m.rcpt_to[0] for m in relay.handler.messages) == senders
        assert all(m.message["Auto-Submitted"] == "auto-replied" for m in relay.handler.messages)
        assert query(db, "SELECT count(*) FROM tickets WHERE acknowledged_at IS NOT NULL") == [(4,)]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        relay.stop()


# -- disk full ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (we run as root in CI); without mount rights, as non-root, a read-only folder instead."""
    where = tmp_path / "small"
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(where)], capture_output=True)
    if result.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); root ignores read-only modes")
        yield where  # the test switches to a read-only folder (see fill())
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> Path:
    """Fill the disk (or make the folder read-only when it is not a mount of our own); returns the filler file."""
    filler = where / "filler"
    if not os.path.ismount(where):
        os.chmod(where, 0o555)
        for f in where.iterdir():
            os.chmod(f, 0o444)
        return filler
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):  # down to the last few bytes
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def unfill(where: Path, filler: Path) -> None:
    if not os.path.ismount(where):
        os.chmod(where, 0o755)
        for f in where.iterdir():
            os.chmod(f, 0o644)
    filler.unlink(missing_ok=True)


def big_mail(message_id: str) -> bytes:
    body = "\n".join(f"Line {i}: the log excerpt you asked for, with all the details of the failure." for i in range(16000))
    return crlf(mail("Big log attached", body=body, message_id=message_id))  # ~1.3 MB: more than any WAL so far


def test_disk_full_answers_451_and_exit_75_without_corruption_then_recovers(tmp_path: Path, small_disk: Path) -> None:
    db = small_disk / "mailgate.db"
    cfg = write_config(tmp_path, database=str(db))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        port = port_of(cfg)
        daemon.wait_ready(port)
        assert try_send(port, crlf(mail("Before the disk filled", message_id="before")))[0] == 250
        wait_until(lambda: query(db, "SELECT count(*) FROM spool WHERE state='done'") == [(1,)], 20, "the first mail filed")

        filler = fill(small_disk)
        code, text = try_send(port, big_mail("smtp-big"))
        assert code == 451 and b"4.3.0" in text, (code, text)
        assert "cannot store the message" in daemon.log()

        result = run_cli("--config", str(cfg), "ingest", stdin=big_mail("piped-big"))
        err = result.stderr.decode()
        assert result.returncode == 75, (result.returncode, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("mailgate: cannot store the message (try again later)"), err
        assert daemon.alive

        assert query(db, "PRAGMA integrity_check") == [("ok",)]
        assert query(db, "SELECT count(*) FROM spool") == [(1,)]

        # space returns: the retried deliveries succeed and are filed
        unfill(small_disk, filler)
        code, text = try_send(port, big_mail("smtp-big"))
        assert code == 250, (code, text)
        result = run_cli("--config", str(cfg), "ingest", stdin=big_mail("piped-big"))
        assert result.returncode == 0, result.stderr.decode()
        wait_until(lambda: query(db, "SELECT count(*) FROM spool WHERE state='spooled'") == [(0,)], 20, "everything filed")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    ids = {r[0] for r in query(db, "SELECT message_id FROM messages WHERE direction='in'")}
    assert ids == {"before@client.test", "smtp-big@client.test", "piped-big@client.test"}
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    shutil.rmtree(tmp_path / "outbox-maildir", ignore_errors=True)
