"""End to end over real SMTP: customer mail -> ticket -> acknowledgement at a real relay -> replies thread back."""

from __future__ import annotations

import json

from conftest import RunningDaemon, SmtpSink, mail, run_cli, send


def relay(sink: SmtpSink) -> dict:
    return {"host": "127.0.0.1", "port": sink.port, "tls": "none"}


def ticket_count(d: RunningDaemon) -> int:
    return len(d.store.tickets())


def test_customer_mail_is_acknowledged_and_replies_thread(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    code, text = send(d.port, mail("Printer on fire", message_id="first"))
    assert code == 250, text
    assert b"queued as" in text

    ack = smtp_sink.wait_for(1)[0]
    msg = ack.message
    assert ack.rcpt_to == ["customer@client.test"]
    assert ack.mail_from in ("", "<>")  # RFC 3834: automatic replies go out with the null return path
    assert msg["Subject"] == "Re: Printer on fire [Support #1]"
    assert msg["In-Reply-To"] == "<first@client.test>"
    assert "<first@client.test>" in msg["References"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["X-Mailgate-Loop"] == "example.test"
    assert msg["From"].addresses[0].addr_spec == "support@example.test"
    assert msg["Reply-To"].addresses[0].addr_spec.startswith("support+1-")
    assert "ticket #1" in msg.get_content()
    ack_id = msg["Message-ID"].strip("<>")
    assert d.store.query("SELECT kind FROM messages WHERE message_id=?", [ack_id]) == [{"kind": "ack"}]
    sent = d.wait_until(lambda: d.store.query("SELECT sent_at FROM outbox WHERE kind='ack' AND sent_at IS NOT NULL"),
                        what="ack recorded as sent")
    assert sent[0]["sent_at"]

    # The customer's reply to the acknowledgement joins the ticket (In-Reply-To only; no subject tag).
    reply = mail("Re: Printer on fire", "Now it smokes.", message_id="second",
                 headers={"In-Reply-To": f"<{ack_id}>", "References": f"<first@client.test> <{ack_id}>"})
    assert send(d.port, reply)[0] == 250
    d.wait_until(lambda: d.store.ticket(1).message_count == 3, what="reply filed on ticket 1")
    assert ticket_count(d) == 1
    events = [e.detail for e in d.store.ticket_events(1) if e.kind == "threading"]
    assert any("references <" + ack_id in e for e in events), events

    # A reply that kept only the subject tag joins when the customer sends it ...
    assert send(d.port, mail("Re: Printer on fire [Support #1]", "Still smoking.", message_id="third"))[0] == 250
    d.wait_until(lambda: d.store.ticket(1).message_count == 4, what="subject-tag reply filed on ticket 1")
    # ... and opens a new ticket when a stranger sends it.
    stranger = mail("Re: Printer on fire [Support #1]", "I am not the customer.", sender="mallory@evil.test",
                    message_id="fourth")
    assert send(d.port, stranger, mail_from="mallory@evil.test")[0] == 250
    d.wait_until(lambda: ticket_count(d) == 2, what="stranger's mail opened ticket 2")
    assert d.store.ticket(1).message_count == 4
    claim = [e.detail for e in d.store.ticket_events(2) if e.kind == "threading"]
    assert "not a participant" in claim[0]

    # Only the two new tickets were acknowledged: follow-ups get no second ack.
    smtp_sink.wait_for(2)
    acks = [m for m in smtp_sink.messages if m.message["Auto-Submitted"] == "auto-replied"]
    assert sorted(m.rcpt_to[0] for m in acks) == ["customer@client.test", "mallory@evil.test"]


def test_same_message_twice_is_stored_once(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    raw = mail("Twice", message_id="dup")
    assert send(d.port, raw)[0] == 250
    assert send(d.port, raw)[0] == 250
    d.wait_until(lambda: d.store.spool_counts().get("duplicate") == 1, what="second copy marked duplicate")
    assert ticket_count(d) == 1
    assert d.store.query("SELECT count(*) AS n FROM messages WHERE message_id='dup@client.test'") == [{"n": 1}]
    assert d.store.query("SELECT count(*) AS n FROM spool") == [{"n": 2}]  # both raw copies kept


def test_auto_reply_gets_no_acknowledgement(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    auto = mail("Out of office", "I am away.", message_id="oof", headers={"Auto-Submitted": "auto-replied"})
    assert send(d.port, auto)[0] == 250
    normal = mail("Real question", message_id="real")
    assert send(d.port, normal)[0] == 250
    smtp_sink.wait_for(1)
    d.wait_until(lambda: ticket_count(d) == 2, what="both mails filed")
    d.wait_until(lambda: not d.store.due_outbox(__import__("mailgate.store").store.utcnow()), what="outbox drained")
    assert [m.message["In-Reply-To"] for m in smtp_sink.messages] == ["<real@client.test>"]
    suppressed = [e.detail for t in d.store.tickets() for e in d.store.ticket_events(t.number) if e.kind == "ack_suppressed"]
    assert any("Auto-Submitted" in s for s in suppressed), suppressed


def test_smtp_refuses_foreign_recipients_and_oversize(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink), smtp={"max_message_size": 100_000})
    code, text = send(d.port, mail(), rcpt=["someone@elsewhere.test"])
    assert code == 550 and b"5.1.1" in text
    code, text = send(d.port, mail(body=("x" * 99 + "\n") * 2000))
    assert code == 552 and b"5.3.4" in text, (code, text)
    code, _ = send(d.port, mail(), rcpt=["support+anything@example.test"])
    assert code == 250
    d.wait_until(lambda: ticket_count(d) == 1, what="plus-addressed mail filed")


def test_tickets_cli_json(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    send(d.port, mail("JSON please", message_id="json"))
    smtp_sink.wait_for(1)
    d.wait_until(lambda: d.store.query("SELECT 1 FROM outbox WHERE sent_at IS NOT NULL"), what="ack sent")
    listed = json.loads(run_cli("--config", str(d.config_path), "tickets", "list", "--json").stdout)
    assert listed[0]["number"] == 1 and listed[0]["subject"] == "JSON please"
    assert listed[0]["status"] == "new" and listed[0]["customer"] == "customer@client.test" and listed[0]["messages"] == 2
    shown = json.loads(run_cli("--config", str(d.config_path), "tickets", "show", "1", "--json").stdout)
    assert [(m["direction"], m["kind"]) for m in shown["messages"]] == [("in", "customer"), ("out", "ack")]
    assert shown["messages"][0]["message_id"] == "json@client.test"
    assert shown["messages"][0]["from"] == "customer@client.test"
    assert shown["messages"][1]["subject"] == "Re: JSON please [Support #1]"
    text = run_cli("--config", str(d.config_path), "tickets", "show", "1").stdout.decode()
    assert "Ticket #1: JSON please" in text and "ack_queued" in text


def test_search_finds_messages_by_words_and_explains_bad_queries(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay=relay(smtp_sink))
    send(d.port, mail("Printer on fire", "The toner cartridge is smoking.", message_id="s1"))
    send(d.port, mail("Invoice question", "Why was I charged twice?", message_id="s2", sender="bob@client.test"))
    d.wait_until(lambda: len(d.store.tickets()) == 2, what="two tickets")
    found = json.loads(run_cli("--config", str(d.config_path), "search", "toner", "--json").stdout)
    assert [(h["ticket"], h["message_id"], h["kind"]) for h in found] == [(1, "s1@client.test", "customer")]
    assert "[toner]" in found[0]["snippet"]
    assert json.loads(run_cli("--config", str(d.config_path), "search", "charg*", "--json").stdout)[0]["ticket"] == 2
    bad = run_cli("--config", str(d.config_path), "search", '"unclosed')
    assert bad.returncode == 64 and b"cannot search for" in bad.stderr and b"fts5" in bad.stderr
