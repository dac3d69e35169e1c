"""Bounces of OUR mail, over real SMTP: RFC 3464 reports and the common non-standard kinds are filed on the ticket
whose acknowledgement bounced (found by the ack's real Message-ID, captured at the relay), the address is marked
as bouncing (no further automatic mail to it), and a bounce is never acknowledged and never a new ticket.
"""

from __future__ import annotations

import time

from conftest import RunningDaemon, SmtpSink, mail, send
from mailgate.store import utcnow


def relay(sink: SmtpSink) -> dict:
    return {"host": "127.0.0.1", "port": sink.port, "tls": "none"}


def drained(d: RunningDaemon) -> bool:
    return not d.store.due_outbox(utcnow()) and not d.store.query("SELECT 1 FROM spool WHERE state='spooled'")


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def rfc3464(rcpt: str, ack_id: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    return crlf(f"""From: Mail Delivery System <MAILER-DAEMON@mx.client.test>
To: support@example.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{rcpt}-{action}@mx.client.test>
Date: Mon, 23 Nov 2026 10:05:00 +0000
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"

--BOUND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.client.test. Your message could not be delivered.

--BOUND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.client.test
Arrival-Date: Mon, 23 Nov 2026 10:04:59 +0000

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

--BOUND
Content-Type: text/rfc822-headers

From: Support <support@example.test>
To: {rcpt}
Subject: Re: Printer on fire [Support #1]
Message-ID: <{ack_id}>
Auto-Submitted: auto-replied

--BOUND--
""")


def qmail(rcpt: str, ack_id: str) -> bytes:
    return crlf(f"""From: MAILER-DAEMON@mx.client.test
To: support@example.test
Subject: failure notice
Message-ID: <qmail-{rcpt}@mx.client.test>
Date: Mon, 23 Nov 2026 10:05:00 +0000

Hi. This is the qmail-send program at mx.client.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <>
From: Support <support@example.test>
To: {rcpt}
Subject: Re: Printer on fire [Support #2]
Message-ID: <{ack_id}>

Thank you, we received your message.
""")


def exim(rcpt: str, ack_id: str) -> bytes:
    return crlf(f"""From: Mail Delivery System <Mailer-Daemon@mx.client.test>
To: support@example.test
Subject: Mail delivery failed: returning message to sender
Message-ID: <exim-{rcpt}@mx.client.test>
Date: Mon, 23 Nov 2026 10:05:00 +0000
X-Failed-Recipients: {rcpt}
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    host mx.client.test [192.0.2.1]
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    550 5.1.1 User unknown

------ This is a copy of the message, including all the headers. ------

Return-path: <>
From: Support <support@example.test>
To: {rcpt}
Subject: Re: Printer on fire [Support #3]
Message-ID: <{ack_id}>

Thank you, we received your message.
""")


def exchange_like(rcpt: str, ack_id: str) -> bytes:
    """A postmaster bounce without a report part: a human-readable notice plus the returned message attached."""
    return crlf(f"""From: postmaster@client.test
To: support@example.test
Subject: Undeliverable: Re: Printer on fire [Support #4]
Message-ID: <ex-{rcpt}@client.test>
Date: Mon, 23 Nov 2026 10:05:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="EXB"

--EXB
Content-Type: text/plain; charset=utf-8

Delivery has failed to these recipients or groups:

<{rcpt}>
The email address you entered couldn't be found.

--EXB
Content-Type: message/rfc822

From: Support <support@example.test>
To: {rcpt}
Subject: Re: Printer on fire [Support #4]
Message-ID: <{ack_id}>

Thank you, we received your message.

--EXB--
""")


KINDS = [("rfc3464", rfc3464), ("qmail", qmail), ("exim", exim), ("exchange-like", exchange_like)]


def test_bounces_of_our_acks_attach_to_their_ticket_and_stop_mail_to_the_address(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    acks: dict[str, str] = {}
    for i, (kind, _build) in enumerate(KINDS, 1):
        rcpt = f"{kind}@client.test"
        assert send(d.port, mail("Printer on fire", sender=rcpt, message_id=f"orig-{kind}"), mail_from=rcpt)[0] == 250
        ack = smtp_sink.wait_for(1, where=lambda c, r=rcpt: c.rcpt_to == [r])[0]
        acks[kind] = ack.message["Message-ID"].strip("<>")
        assert d.store.query("SELECT ticket_number FROM messages WHERE message_id=?", [acks[kind]]) == [{"ticket_number": i}]

    for kind, build in KINDS:
        assert send(d.port, build(f"{kind}@client.test", acks[kind]), mail_from="")[0] == 250
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM spool WHERE state='done'")[0]["n"] == 8, what="bounces filed")
    d.wait_until(lambda: drained(d), what="outbox drained")
    time.sleep(0.3)

    assert len(d.store.tickets()) == len(KINDS)  # no bounce became a ticket
    assert len(smtp_sink.messages) == len(KINDS)  # no bounce was acknowledged
    for i, (kind, _build) in enumerate(KINDS, 1):
        kinds = [(m.direction, m.kind) for m in d.store.ticket_messages(i)]
        assert kinds == [("in", "customer"), ("out", "ack"), ("in", "bounce")], (kind, kinds)
        assert d.store.query("SELECT address FROM bouncing WHERE address=?", [f"{kind}@client.test"]), kind
        bounce_events = [e.detail for e in d.store.ticket_events(i) if e.kind == "bounce"]
        assert bounce_events and f"{kind}@client.test" in bounce_events[0], (kind, bounce_events)
    assert not d.store.query("SELECT 1 FROM outbox WHERE rcpt_to LIKE '%daemon%' OR rcpt_to LIKE '%postmaster%'")

    # The bouncing address writes again: a new ticket, but no acknowledgement goes to an address that bounces.
    assert send(d.port, mail("Still on fire", sender="rfc3464@client.test", message_id="again"),
                mail_from="rfc3464@client.test")[0] == 250
    d.wait_until(lambda: len(d.store.tickets()) == len(KINDS) + 1, what="new ticket")
    d.wait_until(lambda: drained(d), what="outbox drained")
    time.sleep(0.3)
    assert len(smtp_sink.messages) == len(KINDS)
    assert any(e.kind == "ack_suppressed" and "marked as bouncing" in e.detail for e in d.store.ticket_events(len(KINDS) + 1))


def test_delay_reports_and_bounces_of_unknown_mail_are_neither_tickets_nor_answered(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    send(d.port, mail("Printer on fire", sender="slow@client.test", message_id="o"), mail_from="slow@client.test")
    ack_id = smtp_sink.wait_for(1)[0].message["Message-ID"].strip("<>")
    # "delayed" is a report too, but the address does not bounce (yet)
    assert send(d.port, rfc3464("slow@client.test", ack_id, action="delayed", status="4.4.1"), mail_from="")[0] == 250
    # a bounce for mail we never sent (backscatter aimed at us): filed without a ticket, never answered
    assert send(d.port, rfc3464("victim@client.test", "forged@spammer.test"), mail_from="")[0] == 250
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM spool WHERE state='done'")[0]["n"] == 3, what="filed")
    d.wait_until(lambda: drained(d), what="drained")
    time.sleep(0.3)
    assert len(d.store.tickets()) == 1 and len(smtp_sink.messages) == 1
    assert [m.kind for m in d.store.ticket_messages(1)] == ["customer", "ack", "bounce"]
    assert not d.store.query("SELECT 1 FROM bouncing WHERE address='slow@client.test'")
    orphan = d.store.query("SELECT ticket_number, kind FROM messages WHERE message_id='dsn-victim@client.test-failed@mx.client.test'")
    assert orphan == [{"ticket_number": None, "kind": "bounce"}]
