"""IMAP end to end through the real daemon and a real Dovecot: APPEND becomes a ticket; SMTP + IMAP and re-scans give one ticket."""

from __future__ import annotations

import time
from typing import Any

from conftest import RunningDaemon, send

from dovecot import Dovecot  # the fixture `dovecot` comes from conftest's pytest_plugins


def raw(n: int) -> bytes:
    return (f"From: Customer <customer{n}@client.test>\r\nTo: support@example.test\r\nSubject: Broken thing {n}\r\n"
            f"Message-ID: <e2e-{n}@client.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
            f"Thing {n} is broken.\r\n").encode()


def imap_settings(server: Dovecot, **kw: Any) -> dict[str, Any]:
    return {"imap": [{"name": "support", "host": server.host, "port": server.port, "tls": "none",
                      "username": "support", "password": "secret", "poll_interval": 1, **kw}]}


def tickets(d: RunningDaemon) -> list[dict]:
    return d.store.query("SELECT number, subject FROM tickets ORDER BY number")


def test_appended_message_becomes_a_ticket_within_2s(start_daemon, dovecot: Dovecot) -> None:  # noqa: F811
    d = start_daemon(**imap_settings(dovecot))
    time.sleep(0.5)  # the IMAP thread logs in and starts IDLE
    t0 = time.monotonic()
    dovecot.append(raw(1))
    d.wait_until(lambda: tickets(d), timeout=2.0, what="a ticket from IMAP")
    took = time.monotonic() - t0
    assert [t["subject"] for t in tickets(d)] == ["Broken thing 1"]
    d.wait_until(lambda: dovecot.uids("Processed") == [1], timeout=2.0, what="the message moved")
    print(f"APPEND -> ticket: {took:.3f} s")


def test_same_message_by_smtp_and_imap_is_one_ticket(start_daemon, dovecot: Dovecot) -> None:  # noqa: F811
    d = start_daemon(**imap_settings(dovecot))
    code, _ = send(d.port, raw(2))
    assert code == 250
    dovecot.append(raw(2))
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM spool WHERE state != 'spooled'")[0]["n"] == 2,
                 timeout=5.0, what="both copies processed")
    assert len(tickets(d)) == 1
    states = sorted(r["state"] for r in d.store.query("SELECT state FROM spool"))
    assert states == ["done", "duplicate"]


def test_uidvalidity_change_gives_no_duplicate_tickets(start_daemon, dovecot: Dovecot) -> None:  # noqa: F811
    folder = "Support"
    dovecot.append(raw(0), folder=folder)
    d = start_daemon(**imap_settings(dovecot, folders=[folder], after="flag", flag="$Ticketed"))
    for n in (1, 2):
        dovecot.append(raw(n), folder=folder)
    d.wait_until(lambda: len(tickets(d)) == 3, timeout=5.0, what="three tickets")
    with dovecot.client() as c:  # the folder is recreated (restored from a backup, say)
        c.delete_folder(folder)
        c.create_folder(folder)
    for n in (0, 1, 2, 3):
        dovecot.append(raw(n), folder=folder)
    d.wait_until(lambda: len(tickets(d)) == 4, timeout=6.0, what="the new message's ticket")
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM spool WHERE state='duplicate'")[0]["n"] == 3,
                 timeout=6.0, what="the three re-delivered messages filed as duplicates")
    time.sleep(1.2)
    assert len(tickets(d)) == 4
