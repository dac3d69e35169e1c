"""Signals on a real `mailgate serve` process: TERM/INT stop accepting, let the message in flight finish and exit 0
within a bounded time; HUP reloads templates, rules and the live part of the configuration."""

from __future__ import annotations

import mailbox
import re
import shutil
import signal
import smtplib
import time
from pathlib import Path

import yaml

from conftest import REPO, mail, write_config
from test_ops_helpers import DaemonProcess, crlf, greets, query, try_send, wait_until


def port_of(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["smtp"]["port"])


def start(tmp_path: Path, **settings: object) -> tuple[DaemonProcess, int, Path]:
    cfg = write_config(tmp_path, **settings)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    port = port_of(cfg)
    daemon.wait_ready(port)
    daemon.wait_for_log("mailgate ready")
    return daemon, port, cfg


def test_sigterm_finishes_the_message_in_flight_refuses_new_sessions_and_exits_0(tmp_path: Path) -> None:
    daemon, port, _ = start(tmp_path)
    try:
        assert try_send(port, crlf(mail("Before the stop", message_id="before")))[0] == 250
        daemon.wait_for_log("outcome=ticketed")

        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.test")
        assert client.mail("customer@client.test")[0] == 250
        assert client.rcpt("support@example.test")[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        raw = crlf(mail("In flight at shutdown", body="The first half.\nThe second half.", message_id="inflight"))
        half = raw.index(b"The second half.")
        client.send(raw[:half])

        mark = len(daemon.log())
        daemon.send_signal(signal.SIGTERM)
        daemon.wait_for_log("shutting down", after=mark)
        assert not greets(port), "a new session was accepted after SIGTERM"
        time.sleep(0.3)
        assert daemon.alive, "the daemon exited without waiting for the message being received"

        client.send(raw[half:] + b"\r\n.\r\n")
        code, text = client.getreply()
        assert code == 250, (code, text)
        client.close()
        assert daemon.proc is not None and daemon.proc.wait(30) == 0
        assert "stopped cleanly" in daemon.log()
    finally:
        daemon.kill()
    db = tmp_path / "mailgate.db"
    assert not (tmp_path / "mailgate.db-wal").exists() or (tmp_path / "mailgate.db-wal").stat().st_size == 0
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT count(*) FROM spool") == [(2,)]  # the 250 during shutdown was committed first

    again = DaemonProcess(tmp_path / "mailgate.yaml", tmp_path / "daemon2.log").start()
    try:
        again.wait_ready(port)
        wait_until(lambda: query(db, "SELECT count(*) FROM spool WHERE state='spooled'") == [(0,)], 20, "the sweep")
        assert again.stop(signal.SIGINT) == 0
    finally:
        again.kill()
    ids = {r[0] for r in query(db, "SELECT message_id FROM messages WHERE direction='in'")}
    assert ids == {"before@client.test", "inflight@client.test"}


def test_shutdown_is_bounded_when_a_client_stalls_in_data(tmp_path: Path) -> None:
    daemon, port, _ = start(tmp_path)
    idle = smtplib.SMTP("127.0.0.1", port, timeout=60)
    idle.ehlo("idle.test")
    stalled = smtplib.SMTP("127.0.0.1", port, timeout=60)
    stalled.ehlo("stalled.test")
    stalled.mail("customer@client.test")
    stalled.rcpt("support@example.test")
    stalled.putcmd("data")
    assert stalled.getreply()[0] == 354
    stalled.send(b"Subject: never finished\r\n\r\nhalf a")
    try:
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=30) == 0
        took = time.monotonic() - started
        assert took < 25, f"shutdown took {took:.1f} s"
        assert "still being received or stored at shutdown were cut" in daemon.log()
    finally:
        daemon.kill()
        for c in (idle, stalled):
            c.close()
    assert query(tmp_path / "mailgate.db", "SELECT count(*) FROM spool") == [(0,)]


def test_sigint_exits_0(tmp_path: Path) -> None:
    daemon, _port, _ = start(tmp_path)
    try:
        assert daemon.stop(signal.SIGINT) == 0
        assert "stopped cleanly" in daemon.log()
    finally:
        daemon.kill()


def acks(tmp_path: Path) -> list[str]:
    box = tmp_path / "outbox-maildir"
    if not box.exists():
        return []
    return [m.get_payload(decode=True).decode() for m in mailbox.Maildir(str(box), create=False)]


def test_sighup_reloads_templates_and_live_settings_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(REPO / "mailgate" / "defaults" / "templates" / "ack.txt.j2", templates / "ack.txt.j2")
    daemon, port, cfg = start(tmp_path)
    try:
        assert try_send(port, crlf(mail("First", message_id="m1", sender="one@client.test")),
                        mail_from="one@client.test")[0] == 250
        wait_until(lambda: len(acks(tmp_path)) == 1, 20, "the first ack")

        # A broken template: SIGHUP keeps the last good ones and says why.
        (templates / "ack.txt.j2").write_text("{% if %}broken\n")
        mark = len(daemon.log())
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log("failed, keeping the last good rules and templates", after=mark)

        (templates / "ack.txt.j2").write_text("Reloaded template for {{ customer }} (ticket {{ ticket.number }}).\n")
        settings = yaml.safe_load(cfg.read_text())
        settings["support_name"] = "Helpdesk Reloaded"
        settings["smtp"]["max_recipients"] = 7
        cfg.write_text(yaml.safe_dump(settings))
        mark = len(daemon.log())
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload (SIGHUP): rules and templates reloaded", after=mark)
        log = daemon.log()[mark:]
        assert re.search(r"configuration applied: support_name\b", log), log
        assert re.search(r"need a restart .*: smtp\.max_recipients", log), log

        assert try_send(port, crlf(mail("Second", message_id="m2", sender="two@client.test")),
                        mail_from="two@client.test")[0] == 250
        wait_until(lambda: len(acks(tmp_path)) == 2, 20, "the second ack")
        texts = acks(tmp_path)
        assert any("Reloaded template for two@client.test" in t for t in texts), texts
        raw = [bytes(m) for m in mailbox.Maildir(str(tmp_path / "outbox-maildir"), create=False)]
        assert any(b"Helpdesk Reloaded" in r for r in raw)

        # A broken config: the running one stays, the daemon keeps serving.
        cfg.write_text(cfg.read_text() + "no_such_setting: 1\n")
        mark = len(daemon.log())
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log("configuration not reloaded, keeping the running one", after=mark)
        assert "unknown setting 'no_such_setting'" in daemon.log()[mark:]
        assert greets(port)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
