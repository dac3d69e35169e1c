"""Agents by mail, over real SMTP both ways: customer -> ticket -> notification at a real relay -> the agent answers
as Thunderbird, Outlook and Gmail would -> the customer gets the relay (no quoted history, no agent address) ->
the customer answers -> same ticket. Commands, internal notes, spoofing, Authentication-Results, reply-all.
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningDaemon, SmtpSink, run_cli, send

SUPPORT = "support@example.test"
CUSTOMER = "customer@client.test"
COLLEAGUE = "colleague@client.test"
ALICE = "Alice Agent <alice@staff.test>"

RULES = """
teams:
  tech:
    members: [alice, bob]
  billing:
    members: [dora, erin]
agents:
  alice: {name: Alice Agent, addresses: [alice@staff.test], team: tech}
  bob: {name: Bob Builder, addresses: [bob@staff.test], team: tech}
  dora: {name: Dora Ledger, addresses: [dora@staff.test, d.ledger@staff.test], team: billing}
  erin: {name: Erin Away, addresses: [erin@staff.test], team: billing, away: true}
sla_policies:
  standard: {ack_within: 15, first_response_within: 480, resolution_within: 4320}
rules:
  - name: invoices to billing
    when: {subject: invoice}
    then: {team: billing, sla: standard}
  - name: printers to alice
    when: {subject: printer}
    then: {agent: alice, team: tech, priority: high, sla: standard}
"""


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def daemon(start_daemon, smtp_sink: SmtpSink, tmp_path: Path):
    def start(**settings: Any) -> RunningDaemon:
        (tmp_path / "rules.yaml").write_text(RULES)
        return start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"}, **settings)

    return start


def message(*, sender: str, subject: str, body: str | None = None, html: str | None = None, to: str = SUPPORT,
            cc: str | None = None, message_id: str, headers: dict[str, str] | None = None,
            attachment: tuple[str, str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = "Mon, 23 Nov 2026 11:00:00 +0000"
    for k, v in (headers or {}).items():
        msg[k] = v
    if body is not None:
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    if attachment:
        name, ctype, data = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(msg)


def deliver(d: RunningDaemon, raw: bytes, rcpt: list[str] | None = None, mail_from: str = "x@client.test") -> str:
    """Send over SMTP and wait until the pipeline has filed it; returns the spool state (never 'quarantined')."""
    code, text = send(d.port, raw, mail_from=mail_from, rcpt=rcpt or [SUPPORT])
    assert code == 250, text
    message_id = message_from_bytes(raw)["Message-ID"].strip().strip("<>")
    rows = d.wait_until(lambda: [r for r in d.store.query("SELECT state, error FROM spool WHERE id=(SELECT max(id) FROM spool)")
                                 if r["state"] != "spooled"], what=f"<{message_id}> filed")
    assert rows[0]["state"] != "quarantined", rows[0]["error"]
    return rows[0]["state"]


def sent(d: RunningDaemon, sink: SmtpSink, kind: str, rcpt: str | None = None, n: int = 1,
         timeout: float = 10.0) -> list[EmailMessage]:
    """The mails of one kind (ack, notification, relay, command_error) that arrived at the relay, oldest first."""
    def match(c: Any) -> bool:
        mid = c.message["Message-ID"].strip("<>")
        rows = d.store.query("SELECT kind FROM messages WHERE message_id=?", [mid])
        return bool(rows) and rows[0]["kind"] == kind and (rcpt is None or rcpt in c.rcpt_to)

    return [c.message for c in sink.wait_for(n, timeout, where=match)]


def arrived(d: RunningDaemon, sink: SmtpSink, kind: str, rcpt: str | None = None) -> list[EmailMessage]:
    """What has arrived so far (no waiting), after the outbox is drained."""
    d.wait_until(lambda: not d.store.query("SELECT 1 FROM outbox WHERE sent_at IS NULL"), what="outbox drained")
    out = []
    for c in list(sink.messages):
        rows = d.store.query("SELECT kind FROM messages WHERE message_id=?", [c.message["Message-ID"].strip("<>")])
        if rows and rows[0]["kind"] == kind and (rcpt is None or rcpt in c.rcpt_to):
            out.append(c.message)
    return out


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


def ticket_row(d: RunningDaemon, number: int = 1) -> dict[str, Any]:
    return d.store.query("SELECT * FROM tickets WHERE number=?", [number])[0]


def kinds(d: RunningDaemon, number: int = 1) -> list[str]:
    return [m.kind for m in d.store.ticket_messages(number)]


def events(d: RunningDaemon, kind: str, number: int = 1) -> list[str]:
    return [e.detail for e in d.store.ticket_events(number) if e.kind == kind]


def token_address(notification: EmailMessage) -> str:
    return notification["Reply-To"].addresses[0].addr_spec


def customer_opens(d: RunningDaemon, sink: SmtpSink, subject: str = "Printer on fire", *, cc: str | None = None,
                   headers: dict[str, str] | None = None, agent: str = "alice@staff.test") -> EmailMessage:
    raw = message(sender=f"Carol Customer <{CUSTOMER}>", subject=subject, cc=cc, message_id="c1@client.test",
                  body="Please help, the printer on floor 3 is on fire.\nIt smells of toner.", headers=headers)
    deliver(d, raw, mail_from=CUSTOMER)
    return sent(d, sink, "notification", agent)[-1]


def thunderbird_reply(notification: EmailMessage, body: str, message_id: str, sender: str = ALICE,
                      headers: dict[str, str] | None = None) -> bytes:
    """Reply in Thunderbird: To the Reply-To, In-Reply-To + References, top-posted with '>' quoted history and a signature."""
    quoted = "\n".join("> " + line for line in text_of(notification).splitlines())
    text = (f"{body}\n\n-- \nAlice Agent | Support engineer\nalice@staff.test | +49 30 1234567\n\n"
            f"On 23.11.26 10:00, {notification['From']} wrote:\n{quoted}\n")
    return message(sender=sender, to=str(notification["Reply-To"]), subject=notification["Subject"], body=text,
                   message_id=message_id,
                   headers={"In-Reply-To": notification["Message-ID"],
                            "References": f"{notification['References']} {notification['Message-ID']}",
                            "User-Agent": "Mozilla/5.0 Thunderbird/128.0", **(headers or {})})


def thread_index_child(parent: str) -> str:
    raw = base64.b64decode(parent)
    return base64.b64encode(raw + os.urandom(5)).decode()


def outlook_reply(notification: EmailMessage, body: str, message_id: str, *, german: bool = False,
                  subject: str | None = None) -> bytes:
    """Reply in Outlook: no References, no In-Reply-To, Thread-Index/Topic, 'RE:'/'AW:', top-posted with the original below."""
    if german:
        history = (f"________________________________\nVon: {notification['From']}\n"
                   "Gesendet: Montag, 23. November 2026 11:00\nAn: Alice Agent <alice@staff.test>\n"
                   f"Betreff: {notification['Subject']}\n\n{text_of(notification)}")
    else:
        history = (f"-----Original Message-----\nFrom: {notification['From']}\nSent: Monday, November 23, 2026 11:00 AM\n"
                   f"To: Alice Agent <alice@staff.test>\nSubject: {notification['Subject']}\n\n{text_of(notification)}")
    prefix = "AW: " if german else "RE: "
    return message(sender=ALICE, to=str(notification["Reply-To"]), message_id=message_id,
                   subject=subject or prefix + notification["Subject"].removeprefix("Re: "),
                   body=f"{body}\n\n{history}\n",
                   headers={"Thread-Topic": notification["Thread-Topic"],
                            "Thread-Index": thread_index_child(notification["Thread-Index"]),
                            "X-Mailer": "Microsoft Outlook 16.0", "Content-Language": "de-DE" if german else "en-US"})


def gmail_reply(notification: EmailMessage, body: str, message_id: str, *, attachment: tuple[str, str, bytes] | None = None,
                subject: str | None = None, html_only: bool = False) -> bytes:
    """Reply in Gmail: 'On ... wrote:' (wrapped over two lines) above '>' quotes, text + HTML, maybe HTML only."""
    original = text_of(notification)
    who = notification["From"]
    plain = (f"{body}\n\nOn Mon, Nov 23, 2026 at 11:00 AM {who.split('<')[0].strip()} <\n{SUPPORT}> wrote:\n\n"
             + "\n".join("> " + line for line in original.splitlines()) + "\n")
    markup = (f'<div dir="ltr">{"<br>".join(body.splitlines())}</div><br><div class="gmail_quote">'
            f'<div dir="ltr" class="gmail_attr">On Mon, Nov 23, 2026 at 11:00 AM {who.split("<")[0].strip()} &lt;'
            f'<a href="mailto:{SUPPORT}">{SUPPORT}</a>&gt; wrote:<br></div>'
            f'<blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px #ccc solid;padding-left:1ex">'
            f'{"<br>".join(html.escape(line) for line in original.splitlines())}</blockquote></div>')
    return message(sender=ALICE, to=str(notification["Reply-To"]), message_id=message_id,
                   subject=subject or notification["Subject"], body=None if html_only else plain, html=markup,
                   attachment=attachment,
                   headers={"In-Reply-To": notification["Message-ID"],
                            "References": f"{notification['References']} {notification['Message-ID']}"})


def assert_clean_relay(relay: EmailMessage, raw_agent_text: str, *, history: tuple[str, ...] = ()) -> str:
    """The relay says what the agent wrote, From the support address, and shows nothing of the agent's side."""
    body = text_of(relay)
    assert raw_agent_text in body, body
    assert relay["From"].addresses[0].addr_spec == SUPPORT
    assert relay["From"].addresses[0].display_name == "Alice Agent (Support)"
    raw = relay.as_bytes()
    assert b"staff.test" not in raw, "the agent's address or domain leaked into the relay"
    for h in ("Please help, the printer on floor 3 is on fire", "wrote:", "Original Message", *history):
        assert h not in body, (h, body)
    assert relay["Reply-To"].addresses[0].addr_spec.startswith("support+1-")
    assert relay["Subject"].endswith("[Support #1]")
    return body


# -- the whole round trip ---------------------------------------------------------------------------


def test_notification_thunderbird_reply_relay_and_customer_answer(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    note = customer_opens(d, smtp_sink, cc=f"Colin Colleague <{COLLEAGUE}>")

    # The notification: from the customer "via Support", Reply-To the token, threaded to the customer's mail.
    assert note["From"].addresses[0].display_name == "Carol Customer via Support"
    assert note["From"].addresses[0].addr_spec == SUPPORT
    token = token_address(note)
    assert token.startswith("support+1-") and token.endswith("@example.test")
    assert note["In-Reply-To"] == "<c1@client.test>"
    assert "<c1@client.test>" in note["References"]
    assert note["Subject"] == "Re: Printer on fire [Support #1]"
    body = text_of(note)
    due = datetime.fromisoformat(ticket_row(d)["first_response_due_at"])
    assert abs(due - datetime.fromisoformat(ticket_row(d)["created_at"]) - timedelta(minutes=480)) < timedelta(seconds=30)
    for fact in ("ticket #1", "Priority:   high", f"SLA due:    {due:%Y-%m-%d %H:%M} UTC", "Routed by:  printers to alice",
                 "the printer on floor 3 is on fire", "It smells of toner.", f"<{CUSTOMER}>"):
        assert fact in body, (fact, body)
    assert ticket_row(d)["first_response_at"] is None

    # Alice answers from Thunderbird.
    deliver(d, thunderbird_reply(note, "Hello Carol,\n\nplease unplug it, a technician is on the way.", "tb1@staff.test"),
            mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    text = assert_clean_relay(relay, "please unplug it, a technician is on the way.", history=("Support engineer",
                                                                                               "1234567"))
    assert "Hello Carol," in text
    assert sorted(a.addr_spec for a in relay["To"].addresses) == [CUSTOMER]
    assert sorted(a.addr_spec for a in relay["Cc"].addresses) == [COLLEAGUE]
    assert relay["In-Reply-To"] == "<c1@client.test>"
    assert "<c1@client.test>" in relay["References"] and "tb1@staff.test" not in relay["References"]
    assert relay["Auto-Submitted"] is None  # a person wrote it
    row = ticket_row(d)
    assert row["first_response_at"] and row["status"] == "open"
    first_response = row["first_response_at"]
    assert kinds(d) == ["customer", "ack", "notification", "agent_reply", "relay"]
    stored = d.store.query("SELECT stripped_text FROM messages WHERE message_id='tb1@staff.test'")[0]["stripped_text"]
    assert "technician" in stored and "wrote:" not in stored

    # The customer answers the relay: same ticket, Alice is told, with the new text only.
    answer = message(sender=f"Carol Customer <{CUSTOMER}>", to=str(relay["Reply-To"]), subject=relay["Subject"],
                     message_id="c2@client.test", body="Unplugged. Thanks!\n\n> please unplug it, a technician is on the way.",
                     headers={"In-Reply-To": relay["Message-ID"], "References": f"{relay['References']} {relay['Message-ID']}"})
    deliver(d, answer, rcpt=[token], mail_from=CUSTOMER)
    assert len(d.store.tickets()) == 1
    second = sent(d, smtp_sink, "notification", "alice@staff.test", n=2)[-1]
    assert "Customer replied" in text_of(second) and "Unplugged. Thanks!" in text_of(second)
    assert "technician is on the way" not in text_of(second)  # the quoted relay is not repeated
    assert second["In-Reply-To"] == "<c2@client.test>"

    # The colleague on Cc answers too: same ticket, and the colleague never becomes the customer.
    colleague = message(sender=f"Colin Colleague <{COLLEAGUE}>", to=str(relay["Reply-To"]), subject=relay["Subject"],
                        message_id="cc1@client.test", body="I am the colleague, the fire is out.",
                        headers={"In-Reply-To": relay["Message-ID"]})
    deliver(d, colleague, rcpt=[token], mail_from=COLLEAGUE)
    assert len(d.store.tickets()) == 1
    assert d.store.ticket(1).customer == CUSTOMER
    assert {p.address: p.role for p in d.store.participants(1)}[COLLEAGUE] == "cc"

    # Alice answers again: the relay still goes To the customer, Cc the colleague; first response unchanged.
    third = sent(d, smtp_sink, "notification", "alice@staff.test", n=3)[-1]
    deliver(d, thunderbird_reply(third, "Glad to hear it.", "tb2@staff.test"), mail_from="alice@staff.test")
    relay2 = sent(d, smtp_sink, "relay", n=2)[-1]
    assert [a.addr_spec for a in relay2["To"].addresses] == [CUSTOMER]
    assert [a.addr_spec for a in relay2["Cc"].addresses] == [COLLEAGUE]
    assert relay2["In-Reply-To"] == "<cc1@client.test>"  # the latest mail from the customer's side
    assert ticket_row(d)["first_response_at"] == first_response
    # Bob (same team, not assigned) never heard of it; no agent ever got a relay.
    assert not arrived(d, smtp_sink, "notification", "bob@staff.test")
    assert all(CUSTOMER in m["To"].addresses[0].addr_spec for m in arrived(d, smtp_sink, "relay"))


def test_outlook_replies_and_thread_index(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    customer_index = base64.b64encode(b"\x01\xdb\x5f\x00\x11\x22" + os.urandom(16)).decode()
    note = customer_opens(d, smtp_sink, headers={"Thread-Index": customer_index, "Thread-Topic": "Printer on fire"})
    conversation = base64.b64decode(customer_index)

    # The acknowledgement and the notification continue the customer's Outlook conversation.
    ack = sent(d, smtp_sink, "ack")[0]
    for mail in (ack, note):
        child = base64.b64decode(mail["Thread-Index"])
        assert child[:22] == conversation and len(child) == 27, mail["Subject"]
        assert mail["Thread-Topic"] == "Printer on fire"

    # "RE:", no References, no In-Reply-To: only the reply token links it.
    deliver(d, outlook_reply(note, "Hi Carol,\r\nthe toner cartridge was faulty. We replace it today.", "ol1@staff.test"),
            mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    assert_clean_relay(relay, "the toner cartridge was faulty. We replace it today.", history=("Sent:", "Subject:"))
    assert relay["In-Reply-To"] == "<c1@client.test>"
    child = base64.b64decode(relay["Thread-Index"])
    assert child[:22] == conversation and len(child) == 27
    assert relay["Thread-Topic"] == "Printer on fire"
    assert events(d, "agent_reply")[0].endswith(")") and "reply token" in events(d, "agent_reply")[0]

    # German Outlook, "AW:", subject tag removed, the newer "____ Von:" history separator.
    deliver(d, outlook_reply(note, "Der Techniker kommt um 14 Uhr.", "ol2@staff.test", german=True,
                             subject="AW: Printer on fire"), mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay", n=2)[-1]
    assert_clean_relay(relay, "Der Techniker kommt um 14 Uhr.", history=("Gesendet:", "Betreff:", "Von:"))
    assert relay["Subject"] == "Re: Printer on fire [Support #1]"
    assert len(d.store.tickets()) == 1


def test_gmail_reply_with_attachment_and_html_only_reply(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    note = customer_opens(d, smtp_sink)
    pdf = b"%PDF-1.4\n" + os.urandom(2000)
    deliver(d, gmail_reply(note, "Here is the repair report.\nBest, Alice", "gm1@staff.test",
                           attachment=("report.pdf", "application/pdf", pdf)), mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    assert_clean_relay(relay, "Here is the repair report.")
    files = [(p.get_filename(), p.get_content()) for p in relay.iter_attachments()]
    assert files == [("report.pdf", pdf)]
    assert relay["In-Reply-To"] == "<c1@client.test>"

    # HTML only, subject tag removed (only the reply token in To links it).
    deliver(d, gmail_reply(note, "The printer works again.", "gm2@staff.test", html_only=True,
                           subject="Re: Printer on fire"), mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay", n=2)[-1]
    body = assert_clean_relay(relay, "The printer works again.", history=("smells of toner",))
    assert not list(relay.iter_attachments())
    assert "<" not in body.split("--")[0], body  # plain text, no markup
    assert len(d.store.tickets()) == 1 and kinds(d).count("agent_reply") == 2


# -- commands --------------------------------------------------------------------------------------


def test_each_command(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    note = customer_opens(d, smtp_sink)

    def reply(body: str, mid: str) -> None:
        deliver(d, thunderbird_reply(note, body, mid), mail_from="alice@staff.test")

    # Status, priority and tag commands; only the text after them is relayed.
    reply("#pending\n#priority urgent\n#tag hardware\n\nCould you send a photo of the label?", "k1@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    body = assert_clean_relay(relay, "Could you send a photo of the label?")
    assert "#" not in body.split("-- ")[0] and "pending" not in body and "urgent" not in body
    row = ticket_row(d)
    assert (row["status"], row["priority"], json.loads(row["tags"])) == ("pending", "urgent", ["hardware"])
    assert events(d, "status_changed")[-1].startswith("open -> pending") or "-> pending" in events(d, "status_changed")[-1]

    # #note: stored, shown in `tickets show`, never relayed (the next relay is the only other one).
    reply("#note\nThis customer had the same fire last month, check the wiring.", "k2@staff.test")
    reply("#tag wiring\nWe will also check the wiring.", "k3@staff.test")
    relays = sent(d, smtp_sink, "relay", n=2)
    assert "We will also check the wiring." in text_of(relays[-1])
    assert not [c for c in smtp_sink.messages if CUSTOMER in c.rcpt_to and "same fire last month" in c.message.as_string()]
    assert not [m for m in arrived(d, smtp_sink, "relay") if "same fire last month" in text_of(m)]
    assert json.loads(ticket_row(d)["tags"]) == ["hardware", "wiring"]
    shown = json.loads(run_cli("--config", str(d.config_path), "tickets", "show", "1", "--json").stdout)
    notes = [m for m in shown["messages"] if m["kind"] == "agent_note"]
    assert len(notes) == 1 and "same fire last month" in notes[0]["text"] and notes[0]["from"] == "alice@staff.test"
    assert "agent_note" in run_cli("--config", str(d.config_path), "tickets", "show", "1").stdout.decode()

    # #close alone: closed, nothing relayed; #reopen + #assign bob: reopened, Bob told, the text relayed.
    reply("#close", "k4@staff.test")
    assert ticket_row(d)["status"] == "closed" and ticket_row(d)["closed_at"]
    reply("#reopen\n#assign bob\nMy colleague Bob takes over from here.", "k5@staff.test")
    relays = sent(d, smtp_sink, "relay", n=3)
    assert "Bob takes over" in text_of(relays[-1])
    assert len(arrived(d, smtp_sink, "relay")) == 3  # #close relayed nothing
    row = ticket_row(d)
    assert (row["status"], row["assignee"], row["team"]) == ("open", "bob", "tech")
    told = sent(d, smtp_sink, "notification", "bob@staff.test")[-1]
    assert "Assigned to you by Alice Agent" in text_of(told) and "the printer on floor 3 is on fire" in text_of(told)
    assert told["Reply-To"].addresses[0].addr_spec == token_address(note)

    # #assign a team: the team, nobody in particular.
    reply("#assign billing", "k6@staff.test")
    row = ticket_row(d)
    assert (row["team"], row["assignee"]) == ("billing", None)
    told = sent(d, smtp_sink, "notification", "dora@staff.test")[-1]
    assert "Assigned to team billing by Alice Agent" in text_of(told) and "floor 3" in text_of(told)
    assert not arrived(d, smtp_sink, "notification", "erin@staff.test")  # away

    # Unknown command and bad argument: the agent gets a short error mail; the rest is still relayed.
    reply("#frobnicate now\n#priority extreme\nThe part is ordered.", "k7@staff.test")
    error = sent(d, smtp_sink, "command_error", "alice@staff.test")[-1]
    err = text_of(error)
    assert "#frobnicate now" in err and "unknown command" in err and "#priority extreme" in err
    assert "The rest of your reply was sent to the customer." in err
    assert error["Auto-Submitted"] == "auto-replied" and error["In-Reply-To"] == "<k7@staff.test>"
    relays = sent(d, smtp_sink, "relay", n=4)
    assert "The part is ordered." in text_of(relays[-1]) and "frobnicate" not in text_of(relays[-1])
    assert ticket_row(d)["priority"] == "urgent"
    assert len(arrived(d, smtp_sink, "command_error")) == 1


def test_team_routing_notifies_present_members(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    raw = message(sender=f"Carol Customer <{CUSTOMER}>", subject="Wrong invoice 1234", message_id="inv@client.test",
                  body="You billed me twice.")
    deliver(d, raw, mail_from=CUSTOMER)
    note = sent(d, smtp_sink, "notification", "dora@staff.test")[-1]
    assert "Team: billing" in text_of(note) and "Routed by:  invoices to billing" in text_of(note)
    assert not arrived(d, smtp_sink, "notification", "erin@staff.test")  # away
    assert not arrived(d, smtp_sink, "notification", "alice@staff.test")

    # Dora answers from her second address: still an agent reply, and neither address reaches the customer.
    reply = thunderbird_reply(note, "We refunded the second charge.", "dl1@staff.test",
                              sender="Dora Ledger <d.ledger@staff.test>")
    deliver(d, reply, mail_from="d.ledger@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    assert "We refunded the second charge." in text_of(relay)
    assert relay["From"].addresses[0].display_name == "Dora Ledger (Support)"
    assert b"staff.test" not in relay.as_bytes()


# -- trust -----------------------------------------------------------------------------------------


def test_forged_agent_mail_is_never_relayed(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    customer_opens(d, smtp_sink)
    sent(d, smtp_sink, "ack", CUSTOMER)

    # No token, no reference, no tag: just anyone's new mail (a new ticket whose customer is that address).
    forged = message(sender=ALICE, subject="Your refund", message_id="forged1@evil.test",
                     body="#close\nYour refund is approved, send your bank details.")
    deliver(d, forged, mail_from="mallory@evil.test")
    assert len(d.store.tickets()) == 2 and d.store.ticket(2).customer == "alice@staff.test"
    assert kinds(d, 2) == ["customer", "ack"]  # routed nowhere: no agent to notify

    # The subject tag alone does not make it an agent reply either: held as a note, the real agent told, not obeyed.
    forged = message(sender=ALICE, subject="Re: Printer on fire [Support #1]", message_id="forged2@evil.test",
                     body="#close\nYour refund is approved, send your bank details.")
    deliver(d, forged, mail_from="mallory@evil.test")
    told = sent(d, smtp_sink, "command_error", "alice@staff.test")[-1]
    assert "NOT sent to the customer" in text_of(told)
    assert ticket_row(d)["status"] != "closed"
    assert "forged2@evil.test" in [m.message_id for m in d.store.ticket_messages(1)]
    assert {m.message_id: m.kind for m in d.store.ticket_messages(1)}["forged2@evil.test"] == "agent_note"

    # The agent's own out-of-office answering a notification is kept, never relayed, never answered.
    note = sent(d, smtp_sink, "notification", "alice@staff.test")[0]
    oof = message(sender=ALICE, to=str(note["Reply-To"]), subject="Automatic reply: " + note["Subject"],
                  message_id="oof@staff.test", body="I am out of the office until Monday.",
                  headers={"Auto-Submitted": "auto-replied", "In-Reply-To": note["Message-ID"]})
    deliver(d, oof, mail_from="alice@staff.test")
    assert {m.message_id: m.kind for m in d.store.ticket_messages(1)}["oof@staff.test"] == "agent_note"
    assert not arrived(d, smtp_sink, "relay")
    assert len(arrived(d, smtp_sink, "command_error")) == 1
    assert not [c for c in smtp_sink.messages if CUSTOMER in c.rcpt_to and "bank details" in c.message.as_string()]


def test_customer_token_or_ack_reference_never_makes_an_agent_reply(daemon, smtp_sink: SmtpSink) -> None:
    """The customer holds their own reply token and the ack's Message-ID; forging an agent's From with them
    must not pass for the agent (agents get a token of their own, and notifications only they receive)."""
    d = daemon()
    note = customer_opens(d, smtp_sink)
    ack = sent(d, smtp_sink, "ack", CUSTOMER)[0]
    customer_token = ack["Reply-To"].addresses[0].addr_spec
    assert customer_token != token_address(note)  # agents' token differs from the customer's
    for i, headers in enumerate(({}, {"In-Reply-To": ack["Message-ID"], "References": ack["Message-ID"]})):
        forged = message(sender=ALICE, to=customer_token, subject="Re: Printer on fire", message_id=f"forge{i}@evil.test",
                         body="#close\nPlease send your password to reset the printer.", headers=headers)
        deliver(d, forged, rcpt=[customer_token], mail_from="mallory@evil.test")
        assert {m.message_id: m.kind for m in d.store.ticket_messages(1)}[f"forge{i}@evil.test"] == "agent_note"
    assert ticket_row(d)["status"] != "closed"
    assert not arrived(d, smtp_sink, "relay")
    assert not [c for c in smtp_sink.messages if "password" in c.message.as_string()]
    # The real agent, answering the notification's Reply-To, is relayed as usual.
    reply = message(sender=ALICE, to=token_address(note), subject="Re: Printer on fire", message_id="real@staff.test",
                    body="We are sending a technician.")
    deliver(d, reply, rcpt=[token_address(note)], mail_from="alice@staff.test")
    assert "We are sending a technician." in text_of(sent(d, smtp_sink, "relay", CUSTOMER)[0])


def test_trusted_authserv_id(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon(trusted_authserv_id="mx.example.test")
    note = customer_opens(d, smtp_sink)

    # No Authentication-Results at all: held, not obeyed, the agent told why.
    deliver(d, thunderbird_reply(note, "#close\nUnsigned answer.", "a1@staff.test"), mail_from="alice@staff.test")
    told = sent(d, smtp_sink, "command_error", "alice@staff.test")[-1]
    assert "NOT sent to the customer" in text_of(told) and "mx.example.test" in text_of(told)
    assert ticket_row(d)["status"] != "closed"
    assert events(d, "agent_unverified")

    # dkim=pass, but from a server we do not trust: held as well.
    deliver(d, thunderbird_reply(note, "Answer vouched for by a stranger.", "a2@staff.test",
                                 headers={"Authentication-Results": "mx.evil.test; dkim=pass header.d=staff.test"}),
            mail_from="alice@staff.test")
    sent(d, smtp_sink, "command_error", "alice@staff.test", n=2)

    # dkim=pass for the agent's domain from our own server: relayed.
    deliver(d, thunderbird_reply(note, "Signed and verified answer.", "a3@staff.test",
                                 headers={"Authentication-Results": "mx.example.test; dkim=pass header.d=staff.test"
                                                                    " header.s=sel; spf=pass smtp.mailfrom=staff.test"}),
            mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay")[-1]
    assert_clean_relay(relay, "Signed and verified answer.")
    assert len(arrived(d, smtp_sink, "relay")) == 1
    by_id = {m.message_id: m.kind for m in d.store.ticket_messages(1)}
    assert (by_id["a1@staff.test"], by_id["a2@staff.test"], by_id["a3@staff.test"]) == ("agent_note", "agent_note",
                                                                                       "agent_reply")


def test_reply_all_does_not_loop(daemon, smtp_sink: SmtpSink) -> None:
    d = daemon()
    note = customer_opens(d, smtp_sink, cc=f"Colin Colleague <{COLLEAGUE}>")
    token = token_address(note)

    # Alice hits "reply all": To the token, Cc support, the customer and the colleague directly.
    raw = thunderbird_reply(note, "Answering everyone at once.", "ra1@staff.test")
    raw = raw.replace(b"\nSubject:", f"\nCc: {SUPPORT}, Carol Customer <{CUSTOMER}>, {COLLEAGUE}\nSubject:".encode(), 1)
    assert deliver(d, raw, rcpt=[token, SUPPORT], mail_from="alice@staff.test") == "done"
    # Her server may hand the support copy over separately: the same Message-ID is a duplicate.
    assert deliver(d, raw, rcpt=[SUPPORT], mail_from="alice@staff.test") == "duplicate"
    relay = sent(d, smtp_sink, "relay")[-1]
    assert_clean_relay(relay, "Answering everyone at once.")
    assert len(d.store.tickets()) == 1
    relays = arrived(d, smtp_sink, "relay")
    assert len(relays) == 1
    rcpts = [c.rcpt_to for c in smtp_sink.messages if c.message["Message-ID"] == relay["Message-ID"]][0]
    assert sorted(rcpts) == sorted([CUSTOMER, COLLEAGUE])
    assert not {p.address for p in d.store.participants(1)} & {"alice@staff.test", SUPPORT}

    # The customer answers all (token, Cc colleague and support): one follow-up, Alice notified once, nothing relayed.
    answer = message(sender=f"Carol Customer <{CUSTOMER}>", to=str(relay["Reply-To"]), cc=f"{COLLEAGUE}, {SUPPORT}",
                     subject=relay["Subject"], message_id="c2@client.test", body="Thanks, all clear.",
                     headers={"In-Reply-To": relay["Message-ID"], "References": relay["Message-ID"]})
    deliver(d, answer, rcpt=[token, SUPPORT], mail_from=CUSTOMER)
    sent(d, smtp_sink, "notification", "alice@staff.test", n=2)
    assert len(d.store.tickets()) == 1
    assert len(arrived(d, smtp_sink, "relay")) == 1
    assert len(arrived(d, smtp_sink, "notification")) == 2  # one per customer mail, to Alice only
    assert len(arrived(d, smtp_sink, "ack")) == 1
    # Someone Bcc'd on the customer's first mail answers it: kept on the ticket, never the customer, never copied.
    bcc = message(sender="Bea Bcc <bea@client.test>", subject="Re: Printer on fire", message_id="bcc1@client.test",
                  body="I was on Bcc.", headers={"In-Reply-To": "<c1@client.test>", "References": "<c1@client.test>"})
    deliver(d, bcc, mail_from="bea@client.test")
    assert len(d.store.tickets()) == 1 and d.store.ticket(1).customer == CUSTOMER
    assert {p.address: (p.role, p.receives) for p in d.store.participants(1)}["bea@client.test"] == ("observer", False)
    third = sent(d, smtp_sink, "notification", "alice@staff.test", n=3)[-1]
    deliver(d, thunderbird_reply(third, "Noted, thank you.", "ra2@staff.test"), mail_from="alice@staff.test")
    relay = sent(d, smtp_sink, "relay", n=2)[-1]
    rcpts = [c.rcpt_to for c in smtp_sink.messages if c.message["Message-ID"] == relay["Message-ID"]][0]
    assert sorted(rcpts) == sorted([CUSTOMER, COLLEAGUE])
    agents = {"alice@staff.test", "bob@staff.test"}
    assert all(not agents & set(c.rcpt_to) for c in smtp_sink.messages
               if d.store.query("SELECT kind FROM messages WHERE message_id=?", [c.message["Message-ID"].strip("<>")])[0]["kind"]
               in ("relay", "ack"))
