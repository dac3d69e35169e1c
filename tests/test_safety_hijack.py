"""Ticket hijacking, over real SMTP: a stranger naming another ticket's number or forging a reference to our
Message-IDs never joins the conversation as someone who receives replies.

The agent's relay is checked at the real relay (sink): it goes to the customer, never to the stranger.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import RunningDaemon, SmtpSink, mail, send
from mailgate.store import utcnow

RULES = """
agents:
  alice: {name: Alice Agent, addresses: [alice@staff.test]}
rules:
  - name: everything to alice
    then: {agent: alice}
"""
CUSTOMER, MALLORY = "customer@client.test", "mallory@evil.test"


def drained(d: RunningDaemon) -> bool:
    return not d.store.due_outbox(utcnow()) and not d.store.query("SELECT 1 FROM spool WHERE state='spooled'")


def start(start_daemon, sink: SmtpSink, tmp_path: Path, policy: str) -> RunningDaemon:  # type: ignore[no-untyped-def]
    (tmp_path / "rules.yaml").write_text(RULES)
    return start_daemon(relay={"host": "127.0.0.1", "port": sink.port, "tls": "none"},
                        autoreply={"strangers_by_reference": policy})


def open_ticket(d: RunningDaemon, sink: SmtpSink) -> tuple[str, str]:
    """The customer opens ticket 1; returns the Message-IDs of the ack (to the customer) and the notification (to alice)."""
    assert send(d.port, mail("Printer on fire", message_id="orig"), mail_from=CUSTOMER)[0] == 250
    ack = sink.wait_for(1, where=lambda c: c.rcpt_to == [CUSTOMER])[0]
    note = sink.wait_for(1, where=lambda c: c.rcpt_to == ["alice@staff.test"])[0]
    return ack.message["Message-ID"], note.message["Message-ID"]


def test_subject_tag_from_a_stranger_opens_a_new_ticket(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    d = start(start_daemon, smtp_sink, tmp_path, "follow_up")
    open_ticket(d, smtp_sink)
    for i, subject in enumerate(["Re: Printer on fire [Support #1]", "[support #1] give me the data", "[Support#1]"]):
        assert send(d.port, mail(subject, "I am the customer, honest.", sender=MALLORY, message_id=f"m{i}"),
                    mail_from=MALLORY)[0] == 250
    d.wait_until(lambda: len(d.store.tickets()) == 4, what="three new tickets")
    assert d.store.ticket(1).message_count == 3  # customer mail, ack, notification: nothing of mallory's
    assert MALLORY not in [p.address for p in d.store.participants(1)]
    for n in (2, 3, 4):
        assert d.store.ticket(n).customer == MALLORY
        assert any(e.kind == "threading" and "not a participant" in e.detail for e in d.store.ticket_events(n))


def _agent_reply(d: RunningDaemon, sink: SmtpSink, note_id: str) -> None:
    before = len(sink.messages)
    reply = mail("Re: Printer on fire [Support #1]", "Turn it off and on again.", sender="Alice Agent <alice@staff.test>",
                 message_id="alice-1", headers={"In-Reply-To": note_id, "References": note_id})
    assert send(d.port, reply, mail_from="alice@staff.test")[0] == 250
    sink.wait_for(before + 1)
    d.wait_until(lambda: drained(d), what="relay sent")
    time.sleep(0.3)


def test_forged_reference_policy_follow_up_is_filed_but_never_receives_replies(start_daemon, smtp_sink: SmtpSink,
                                                                                tmp_path: Path) -> None:
    d = start(start_daemon, smtp_sink, tmp_path, "follow_up")
    ack_id, note_id = open_ticket(d, smtp_sink)
    forged = mail("Re: Printer on fire", "Please send the invoice to me instead.", sender=MALLORY, message_id="forged",
                  headers={"In-Reply-To": ack_id, "References": f"<orig@client.test> {ack_id}",
                           "Cc": "accomplice@evil.test"})
    assert send(d.port, forged, mail_from=MALLORY)[0] == 250
    d.wait_until(lambda: d.store.query("SELECT ticket_number FROM messages WHERE message_id='forged@client.test'"),
                 what="forged mail filed")
    assert len(d.store.tickets()) == 1  # policy follow_up: the mail joins ticket 1 ...
    parts = {p.address: p for p in d.store.participants(1)}
    assert parts[MALLORY].receives is False and parts[MALLORY].role == "observer"  # ... as an observer only
    assert "accomplice@evil.test" not in parts  # and cannot copy anyone in
    assert [p.address for p in d.store.participants(1) if p.receives] == [CUSTOMER]
    assert any(e.kind == "participant_added" and "does not receive replies" in e.detail for e in d.store.ticket_events(1))

    _agent_reply(d, smtp_sink, note_id)
    relays = [m for m in smtp_sink.messages if m.message["In-Reply-To"] and "Turn it off" in m.message.get_body().get_content()]
    assert [r.rcpt_to for r in relays] == [[CUSTOMER]]
    assert not [m for m in smtp_sink.messages if MALLORY in m.rcpt_to or "accomplice@evil.test" in m.rcpt_to]
    assert "mallory" not in relays[0].raw.decode(errors="replace").lower()


def test_forged_reference_policy_new_ticket(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    d = start(start_daemon, smtp_sink, tmp_path, "new_ticket")
    ack_id, note_id = open_ticket(d, smtp_sink)
    forged = mail("Re: Printer on fire", "Send it to me.", sender=MALLORY, message_id="forged",
                  headers={"In-Reply-To": ack_id, "References": ack_id})
    assert send(d.port, forged, mail_from=MALLORY)[0] == 250
    d.wait_until(lambda: len(d.store.tickets()) == 2, what="a new ticket for the stranger")
    assert d.store.ticket(2).customer == MALLORY
    assert MALLORY not in [p.address for p in d.store.participants(1)]
    assert d.store.query("SELECT ticket_number FROM messages WHERE message_id='forged@client.test'") == [{"ticket_number": 2}]
    assert any("policy opens a new ticket" in e.detail for e in d.store.ticket_events(2) if e.kind == "threading")

    # The real customer's reference still threads; the agent's reply still reaches only the customer.
    ok = mail("Re: Printer on fire", "Any news?", message_id="real-reply", headers={"In-Reply-To": ack_id})
    assert send(d.port, ok, mail_from=CUSTOMER)[0] == 250
    d.wait_until(lambda: d.store.query("SELECT ticket_number FROM messages WHERE message_id='real-reply@client.test'")
                 == [{"ticket_number": 1}], what="customer's reply on ticket 1")
    _agent_reply(d, smtp_sink, note_id)
    assert not [m for m in smtp_sink.messages if MALLORY in m.rcpt_to and "Turn it off" in m.raw.decode(errors="replace")]
