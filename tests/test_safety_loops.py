"""No mail loops: every "never answer automatically" signal, the rate limits, and two mailgate daemons answering each other.

Each hostile mail goes through the real SMTP listener; acknowledgements go to a real SMTP relay (the sink).
A signal must leave the ticket filed, send nothing, and record an `ack_suppressed` event saying why.
"""

from __future__ import annotations

import logging
import re
import smtplib
import threading
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from conftest import RunningDaemon, SmtpSink, free_port, mail, send
from mailgate.store import utcnow


def relay(sink: SmtpSink | int) -> dict:
    return {"host": "127.0.0.1", "port": sink if isinstance(sink, int) else sink.port, "tls": "none"}


def events(d: RunningDaemon, kind: str) -> list[tuple[int | None, str]]:
    return [(r["ticket_number"], r["detail"]) for r in
            d.store.query("SELECT ticket_number, detail FROM events WHERE kind=? ORDER BY id", [kind])]


def outbox_drained(d: RunningDaemon) -> bool:
    return not d.store.due_outbox(utcnow()) and not d.store.query("SELECT 1 FROM spool WHERE state='spooled'")


# (label, headers, envelope sender, From, subject, expected words in the ack_suppressed reason)
SIGNALS = [
    ("auto-generated", {"Auto-Submitted": "auto-generated"}, None, None, None, "Auto-Submitted: auto-generated"),
    ("auto-replied", {"Auto-Submitted": "auto-replied; owner-email=x@client.test"}, None, None, None, "Auto-Submitted: auto-replied"),
    ("auto-notified", {"Auto-Submitted": "Auto-Notified"}, None, None, None, "Auto-Submitted: auto-notified"),
    ("precedence-bulk", {"Precedence": "bulk"}, None, None, None, "Precedence: bulk"),
    ("precedence-junk", {"Precedence": "JUNK"}, None, None, None, "Precedence: junk"),
    ("precedence-list", {"Precedence": "list"}, None, None, None, "Precedence: list"),
    ("list-id", {"List-Id": "Users <users.lists.client.test>"}, None, None, None, "List-Id"),
    ("list-unsubscribe", {"List-Unsubscribe": "<mailto:leave@lists.client.test>"}, None, None, None, "List-Unsubscribe"),
    ("xars-all", {"X-Auto-Response-Suppress": "All"}, None, None, None, "X-Auto-Response-Suppress: all"),
    ("xars-autoreply", {"X-Auto-Response-Suppress": "DR, AutoReply"}, None, None, None, "X-Auto-Response-Suppress: autoreply"),
    ("xars-oof", {"X-Auto-Response-Suppress": "OOF"}, None, None, None, "X-Auto-Response-Suppress: oof"),
    ("null-return-path", {}, "", None, None, "empty return path"),
    ("mailer-daemon", {}, "MAILER-DAEMON@mx.client.test", None, None, "MAILER-DAEMON@mx.client.test"),
    ("postmaster", {}, "postmaster@client.test", None, None, "postmaster@client.test"),
    ("x-autoreply", {"X-Autoreply": "yes"}, None, None, None, "X-Autoreply"),
    ("x-autorespond", {"X-Autorespond": "Vacation"}, None, None, None, "X-Autorespond"),
    ("oof-en", {}, None, None, "Out of Office: back on Monday", "out of office"),
    ("oof-en-auto", {}, None, None, "Automatic reply: Printer on fire", "automatic reply"),
    ("oof-de", {}, None, None, "Abwesenheitsnotiz: Urlaub", "abwesenheitsnotiz"),
    ("oof-de-auto", {}, None, None, "Automatische Antwort: Printer", "automatische antwort"),
    ("oof-fr", {}, None, None, "Réponse automatique : absent", "réponse automatique"),
    ("oof-es", {}, None, None, "Respuesta automática: fuera de la oficina", "respuesta automática"),
    ("oof-it", {}, None, None, "Risposta automatica: fuori ufficio", "risposta automatica"),
    ("oof-nl", {}, None, None, "Automatisch antwoord: afwezig", "automatisch antwoord"),
    ("oof-sv", {}, None, None, "Autosvar: Semester", "autosvar"),
    ("oof-ja", {}, None, None, "自動応答: 不在です", "自動応答"),
    ("loop-marker", {"X-Mailgate-Loop": "example.test"}, None, None, None, "X-Mailgate-Loop"),
    ("loop-marker-other", {"X-Mailgate-Loop": "other-helpdesk.test"}, None, None, None, "X-Mailgate-Loop"),
    ("own-address", {}, "support@example.test", "Support <support@example.test>", None, "one of our addresses"),
    ("own-address-plus", {}, None, "support+7-abc@example.test", None, "one of our addresses"),
    ("own-second-address", {}, None, "Help <HELP@example.test>", None, "one of our addresses"),
]


def test_every_never_answer_signal_files_the_ticket_but_sends_nothing(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink), support_addresses=["support@example.test", "help@example.test"])
    for i, (label, headers, env_from, from_, subject, _why) in enumerate(SIGNALS):
        raw = mail(subject or f"Question {label}", sender=from_ or f"Customer {i} <c{i}@client.test>",
                   message_id=f"sig-{label}", headers=headers)
        code, text = send(d.port, raw, mail_from=f"c{i}@client.test" if env_from is None else env_from)
        assert code == 250, (label, text)
    # A control mail after all of them: when its acknowledgement has arrived, the others had their chance.
    assert send(d.port, mail("Control", sender="control@client.test", message_id="control"),
                mail_from="control@client.test")[0] == 250
    d.wait_until(lambda: len(d.store.tickets()) == len(SIGNALS) + 1, what="every mail filed as a ticket")
    smtp_sink.wait_for(1)
    d.wait_until(lambda: outbox_drained(d), what="outbox drained")
    time.sleep(0.3)
    assert [m.rcpt_to for m in smtp_sink.messages] == [["control@client.test"]]

    suppressed = dict(events(d, "ack_suppressed"))
    for label, *_rest, why in SIGNALS:
        number = d.store.query("SELECT ticket_number FROM messages WHERE message_id=?", [f"sig-{label}@client.test"])
        assert number, f"{label}: no ticket"
        reason = suppressed.get(number[0]["ticket_number"], "")
        assert why.lower() in reason.lower(), (label, reason)
    assert not d.store.query("SELECT 1 FROM outbox WHERE rcpt_to NOT LIKE '%control@client.test%'")


def test_ordinary_mail_with_harmless_lookalikes_is_still_acknowledged(start_daemon, smtp_sink: SmtpSink) -> None:
    """The screen is not trigger-happy: Auto-Submitted: no, Precedence: normal, 'office' in a normal subject."""
    d = start_daemon(relay=relay(smtp_sink))
    send(d.port, mail("The office printer is out of toner", message_id="a", headers={"Auto-Submitted": "no"}))
    send(d.port, mail("Question about replies", sender="b@client.test", message_id="b", headers={"Precedence": "normal"}),
         mail_from="b@client.test")
    assert len(smtp_sink.wait_for(2)) == 2


# -- rate limits --------------------------------------------------------------------------------


def test_one_ack_per_sender_per_ticket(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    send(d.port, mail("Printer on fire", message_id="first"))
    ack = smtp_sink.wait_for(1)[0].message
    for i in range(3):  # replies by reference and by subject tag: the same ticket, never a second ack
        headers = {"In-Reply-To": ack["Message-ID"], "References": f"<first@client.test> {ack['Message-ID']}"} if i % 2 == 0 else {}
        send(d.port, mail(f"Re: Printer on fire [Support #1] {i}", message_id=f"re{i}", headers=headers))
    d.wait_until(lambda: d.store.ticket(1).message_count == 5, what="follow-ups filed")
    d.wait_until(lambda: outbox_drained(d), what="outbox drained")
    time.sleep(0.3)
    assert len(smtp_sink.messages) == 1 and len(d.store.tickets()) == 1


def test_daily_cap_per_sender(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink), autoreply={"daily_cap_per_sender": 3, "breaker_mails": 100})
    for i in range(5):
        send(d.port, mail(f"New problem {i}", message_id=f"p{i}"))
    d.wait_until(lambda: len(d.store.tickets()) == 5, what="five tickets")
    d.wait_until(lambda: outbox_drained(d), what="outbox drained")
    smtp_sink.wait_for(3)
    time.sleep(0.3)
    assert len(smtp_sink.messages) == 3
    capped = [detail for _n, detail in events(d, "ack_suppressed")]
    assert len(capped) == 2 and all("cap of 3 automatic mails in 24 h" in c for c in capped), capped


def test_circuit_breaker_stops_automatic_mail_and_says_so(start_daemon, smtp_sink: SmtpSink,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mailgate.pipeline")
    d = start_daemon(relay=relay(smtp_sink), autoreply={"daily_cap_per_sender": 100, "breaker_mails": 2, "breaker_minutes": 10})
    for i in range(4):
        send(d.port, mail(f"Flood {i}", message_id=f"f{i}"))
    d.wait_until(lambda: len(d.store.tickets()) == 4, what="four tickets")
    d.wait_until(lambda: outbox_drained(d), what="outbox drained")
    smtp_sink.wait_for(2)
    time.sleep(0.3)
    assert len(smtp_sink.messages) == 2
    tripped = events(d, "circuit_breaker")
    assert [n for n, _ in tripped] == [3, 4], tripped
    assert "customer@client.test received 2+ automatic mails in 10 min" in tripped[0][1]
    assert any("circuit breaker" in r.getMessage() and "customer@client.test" in r.getMessage() for r in caplog.records)


# -- two helpdesks answering each other ----------------------------------------------------------


class StrippingForwarder:
    """A badly behaved mail hop: drops every automatic-mail marker and gives the mail a real return path."""

    STRIP = re.compile(rb"^(Auto-Submitted|Precedence|X-Auto-Response-Suppress|X-Mailgate-Loop):[^\r\n]*\r?\n", re.I | re.M)

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.count = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        raw = self.STRIP.sub(b"", envelope.original_content)
        sender = message_from_bytes(raw, policy=policy.default)["From"].addresses[0].addr_spec
        with self.lock:
            self.count += 1
        with smtplib.SMTP("127.0.0.1", self.target_port, timeout=10) as c:
            c.sendmail(sender, envelope.rcpt_tos, raw)
        return "250 2.0.0 forwarded"


def _total_mails(*daemons: RunningDaemon) -> int:
    return sum(d.store.query("SELECT count(*) AS n FROM spool")[0]["n"] for d in daemons)


def _settle(a: RunningDaemon, b: RunningDaemon, quiet: float = 3.0, limit: float = 20.0) -> int:
    """Wait until neither daemon has received anything new for `quiet` seconds; return the total received."""
    deadline = time.monotonic() + limit
    last, since = _total_mails(a, b), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _total_mails(a, b)
        if now != last or not (outbox_drained(a) and outbox_drained(b)):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"mail still flowing after {limit} s: {last} messages")


def test_two_mailgates_acknowledging_each_other_stop(start_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a_port, b_port = free_port(), free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_daemon(database=str(tmp_path / "a" / "a.db"), maildir=str(tmp_path / "a" / "md"),
                     support_addresses=["support@a.test"], relay=relay(b_port), smtp={"port": a_port})
    b = start_daemon(database=str(tmp_path / "b" / "b.db"), maildir=str(tmp_path / "b" / "md"),
                     support_addresses=["support@b.test"], relay=relay(a_port), smtp={"port": b_port})
    # One mail to A, from B's support address: A acknowledges it to B; B must not answer the acknowledgement.
    assert send(a.port, mail("Hello from B", sender="support@b.test", to="support@a.test", message_id="kick"),
                mail_from="support@b.test", rcpt=["support@a.test"])[0] == 250
    total = _settle(a, b)
    assert total == 2, total  # the kick-off and A's one acknowledgement
    assert len(a.store.tickets()) == 1 and len(b.store.tickets()) == 1
    assert b.store.query("SELECT count(*) AS n FROM outbox")[0]["n"] == 0
    reason = [d for _n, d in events(b, "ack_suppressed")]
    assert reason and "Auto-Submitted: auto-replied" in reason[0] and "X-Mailgate-Loop" in reason[0]
    time.sleep(2)
    assert _total_mails(a, b) == total  # stable


def test_two_mailgates_behind_a_hop_that_strips_every_marker_still_stop(start_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Even when a forwarder strips Auto-Submitted, Precedence, X-Auto-Response-Suppress and our loop marker and
    invents a return path, threading (acks answer a stored Message-ID) and the rate limits end the exchange."""
    a_port, b_port = free_port(), free_port()
    to_a, to_b = StrippingForwarder(a_port), StrippingForwarder(b_port)
    to_a.controller.start()
    to_b.controller.start()
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = start_daemon(database=str(tmp_path / "a" / "a.db"), maildir=str(tmp_path / "a" / "md"),
                         support_addresses=["support@a.test"], relay=relay(to_b.port), smtp={"port": a_port},
                         autoreply={"breaker_mails": 3, "breaker_minutes": 10})
        b = start_daemon(database=str(tmp_path / "b" / "b.db"), maildir=str(tmp_path / "b" / "md"),
                         support_addresses=["support@b.test"], relay=relay(to_a.port), smtp={"port": b_port},
                         autoreply={"breaker_mails": 3, "breaker_minutes": 10})
        assert send(a.port, mail("Hello from B", sender="support@b.test", to="support@a.test", message_id="kick"),
                    mail_from="support@b.test", rcpt=["support@a.test"])[0] == 250
        total = _settle(a, b)
        # kick-off, A's ack (a new ticket at B, which now looks human), B's ack: it answers A's stored
        # Message-ID, so A files it as a follow-up, and follow-ups are never acknowledged.
        assert total == 3, total
        time.sleep(2)
        assert _total_mails(a, b) == total
        assert to_a.count + to_b.count == total - 1
    finally:
        to_a.controller.stop()
        to_b.controller.stop()
