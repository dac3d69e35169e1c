"""Backscatter and authentication, over real SMTP: a trusted Authentication-Results header decides whether we may
send automatic mail; the verdict is stored on every message; rules can act on it.

`trusted_authserv_id` names the border MTA whose Authentication-Results we believe (it must strip forged ones
carrying its id, RFC 8601 section 5); headers from anyone else are ignored.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import RunningDaemon, SmtpSink, send
from mailgate.store import utcnow

TRUSTED = "mx.example.test"
RULES = """
rules:
  - name: unauthenticated mail from our own domain is spam
    when: {from_domain: example.test, auth: [fail, none]}
    then: {spam: true}
"""

# (label, From, Authentication-Results headers, expected stored verdict, acknowledged?, ticket?)
CASES = [
    ("dmarc-fail", "a@client.test", [f"{TRUSTED}; dmarc=fail (p=reject) header.from=client.test; spf=pass smtp.mailfrom=client.test"],
     "fail", False, True),
    ("spf-and-dkim-fail", "b@client.test", [f"{TRUSTED}; spf=fail smtp.mailfrom=client.test; dkim=fail header.d=client.test"],
     "fail", False, True),
    ("dkim-pass", "c@client.test", [f"{TRUSTED}; dkim=pass header.d=client.test; spf=softfail smtp.mailfrom=client.test"],
     "pass", True, True),
    ("dmarc-pass", "d@client.test", [f"{TRUSTED}; dmarc=pass header.from=client.test"], "pass", True, True),
    ("forged-pass-from-stranger", "e@client.test", ["evil.test; dmarc=pass header.from=client.test",
                                                    f"{TRUSTED}; spf=fail smtp.mailfrom=client.test"], "fail", False, True),
    ("untrusted-fail-ignored", "f@client.test", ["other-mx.test; dmarc=fail header.from=client.test"], "none", True, True),
    ("no-header", "g@client.test", [], "none", True, True),
    ("own-domain-fail", "colleague@example.test", [f"{TRUSTED}; spf=fail smtp.mailfrom=example.test"], "fail", False, False),
    ("own-domain-unverified", "boss@example.test", [], "none", False, False),
    ("own-domain-pass", "helper@example.test", [f"{TRUSTED}; dkim=pass header.d=example.test"], "pass", True, True),
]


def raw(label: str, from_: str, results: list[str]) -> bytes:
    head = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    return (head + f"From: {from_}\r\nTo: support@example.test\r\nSubject: Question {label}\r\nMessage-ID: <{label}@client.test>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n").encode()


def drained(d: RunningDaemon) -> bool:
    return not d.store.due_outbox(utcnow()) and not d.store.query("SELECT 1 FROM spool WHERE state='spooled'")


def test_failed_authentication_gets_no_automatic_mail_verdict_stored_rule_matches(start_daemon, smtp_sink: SmtpSink,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"}, trusted_authserv_id=TRUSTED)
    for label, from_, results, *_ in CASES:
        assert send(d.port, raw(label, from_, results), mail_from=from_)[0] == 250
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM spool WHERE state IN ('done', 'spam')")[0]["n"] == len(CASES),
                 what="all filed")
    expected_acks = sorted(from_ for _l, from_, _r, _v, acked, _t in CASES if acked)
    smtp_sink.wait_for(len(expected_acks))
    d.wait_until(lambda: drained(d), what="drained")
    time.sleep(0.3)
    assert sorted(m.rcpt_to[0] for m in smtp_sink.messages) == expected_acks

    for label, from_, _results, verdict, acked, ticket in CASES:
        row = d.store.query("SELECT ticket_number, kind, auth FROM messages WHERE message_id=?", [f"{label}@client.test"])
        assert row and row[0]["auth"] == verdict, (label, row)
        if ticket:
            number = row[0]["ticket_number"]
            assert number is not None and row[0]["kind"] == "customer", (label, row)
            if not acked:  # the ticket is created, but the (possibly forged) sender gets nothing: no backscatter
                events = [e.detail for e in d.store.ticket_events(number) if e.kind == "ack_suppressed"]
                assert events and "authentication fail" in events[0], (label, events)
        else:  # the rule held it as spam: stored, never a ticket, never answered
            assert row[0] == {"ticket_number": None, "kind": "spam", "auth": verdict}, (label, row)
            spam = [r["detail"] for r in d.store.query("SELECT detail FROM events WHERE kind='spam'")]
            assert any(from_ in s and "unauthenticated mail from our own domain is spam" in s for s in spam), spam
    assert d.store.query("SELECT state FROM spool WHERE message_id='own-domain-fail@client.test'") == [{"state": "spam"}]


def test_without_a_trusted_authserv_id_headers_are_not_believed(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    send(d.port, raw("dmarc-fail", "a@client.test", [f"{TRUSTED}; dmarc=fail header.from=client.test"]), mail_from="a@client.test")
    assert smtp_sink.wait_for(1)[0].rcpt_to == ["a@client.test"]
    assert d.store.query("SELECT auth FROM messages WHERE message_id='dmarc-fail@client.test'") == [{"auth": "none"}]


def test_authentication_failure_also_stops_mail_to_the_sender_on_later_tickets(start_daemon, smtp_sink: SmtpSink) -> None:
    """A forged sender cannot be made to receive our mail by a failing message, and a passing one still works."""
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"}, trusted_authserv_id=TRUSTED)
    send(d.port, raw("forged", "victim@client.test", [f"{TRUSTED}; dmarc=fail header.from=client.test"]), mail_from="x@evil.test")
    send(d.port, raw("genuine", "victim@client.test", [f"{TRUSTED}; dmarc=pass header.from=client.test"]),
         mail_from="victim@client.test")
    acks = smtp_sink.wait_for(1)
    d.wait_until(lambda: drained(d) and len(d.store.tickets()) == 2, what="both filed")
    time.sleep(0.3)
    assert len(smtp_sink.messages) == 1 and acks[0].message["In-Reply-To"] == "<genuine@client.test>"
