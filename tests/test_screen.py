"""Tests for mailgate.screen: every rule hit and missed, DSNs (corpus and hand-made), Authentication-Results, whole corpus."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailgate.message import Inbound, parse
from mailgate.screen import (
    LOOP_HEADER,
    RULES,
    Verdict,
    authentication_verdict,
    parse_authentication_results,
    screen,
)

CORPUS = Path(os.environ.get("MAILGATE_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))
OWN = frozenset({"support@example.com", "help@example.com"})
NOW = datetime(2024, 6, 4, 9, 0, tzinfo=timezone.utc)
RULE_NAMES = [rule.__name__.removeprefix("rule_") for rule in RULES]


def mail_bytes(headers: str = "", body: str = "Hello, my printer is broken.\n", *, sender: str = "Ann Customer <ann@customer.example>", subject: str = "Printer") -> bytes:
    head = f"From: {sender}\nTo: support@example.com\nSubject: {subject}\nMessage-ID: <m1@customer.example>\nDate: Tue, 04 Jun 2024 09:00:00 +0000\n"
    return (head + headers + "\n" + body).replace("\n", "\r\n").encode()


def run(raw: bytes, mail_from: str | None = "ann@customer.example", authserv: str = "mx.example.com") -> Verdict:
    return screen(parse(raw), Inbound(raw=raw, source="smtp", received_at=NOW, mail_from=mail_from), OWN, authserv)


def check(verdict: Verdict, name: str) -> bool:
    found = [c for c in verdict.checks if c.name == name]
    assert len(found) == 1, f"rule {name} must be evaluated exactly once"
    return found[0].hit


def test_plain_customer_mail_passes_every_rule() -> None:
    v = run(mail_bytes())
    assert v.may_auto_reply
    assert [c.name for c in v.checks] == RULE_NAMES
    assert not any(c.hit for c in v.checks)
    assert all(c.reason for c in v.checks)
    assert (v.is_bounce, v.is_auto_reply, v.is_list, v.from_self, v.auth) == (False, False, False, False, "none")


# --- one hit and one miss per rule ------------------------------------------------------------------

HITS = [
    ("auto_submitted", mail_bytes("Auto-Submitted: auto-generated\n"), {}),
    ("auto_submitted", mail_bytes("Auto-Submitted: auto-replied; owner-email=x@y.example\n"), {}),
    ("precedence", mail_bytes("Precedence: bulk\n"), {}),
    ("precedence", mail_bytes("Precedence: junk\n"), {}),
    ("precedence", mail_bytes("Precedence: list\n"), {}),
    ("list_headers", mail_bytes("List-Id: Users <users.lists.example>\n"), {}),
    ("list_headers", mail_bytes("List-Unsubscribe: <mailto:leave@lists.example>\n"), {}),
    ("auto_response_suppress", mail_bytes("X-Auto-Response-Suppress: All\n"), {}),
    ("auto_response_suppress", mail_bytes("X-Auto-Response-Suppress: DR, OOF\n"), {}),
    ("auto_response_suppress", mail_bytes("X-Auto-Response-Suppress: AutoReply\n"), {}),
    ("null_sender", mail_bytes(), {"mail_from": ""}),
    ("null_sender", mail_bytes(), {"mail_from": "MAILER-DAEMON@mx.customer.example"}),
    ("null_sender", mail_bytes(), {"mail_from": "postmaster@customer.example"}),
    ("null_sender", mail_bytes("Return-Path: <>\n"), {"mail_from": None}),
    ("null_sender", mail_bytes(sender="Postmaster <postmaster@customer.example>"), {}),
    ("out_of_office", mail_bytes("X-Autoreply: yes\n"), {}),
    ("out_of_office", mail_bytes("X-Autorespond: Vacation\n"), {}),
    ("out_of_office", mail_bytes("X-Auto-Reply: 1\n"), {}),
    ("loop_marker", mail_bytes(f"{LOOP_HEADER}: example.com\n"), {}),
    ("own_address", mail_bytes(sender="Support <support@example.com>"), {}),
    ("own_address", mail_bytes(sender="SUPPORT+12-abcdef@Example.com"), {}),
    ("own_address", mail_bytes(sender="help@example.com"), {}),
]


@pytest.mark.parametrize("name,raw,kw", HITS, ids=[f"{h[0]}-{i}" for i, h in enumerate(HITS)])
def test_rule_hits(name: str, raw: bytes, kw: dict) -> None:
    v = run(raw, **kw)
    assert check(v, name)
    assert not v.may_auto_reply
    assert [c.name for c in v.checks] == RULE_NAMES  # every rule still evaluated


MISSES = [
    ("auto_submitted", mail_bytes("Auto-Submitted: no\n")),
    ("precedence", mail_bytes("Precedence: first-class\n")),
    ("list_headers", mail_bytes("List-Help: <mailto:x@y.example>\n")),
    ("auto_response_suppress", mail_bytes("X-Auto-Response-Suppress: DR, RN, NRN\n")),
    ("out_of_office", mail_bytes("X-Autoreply: no\n")),
    ("out_of_office", mail_bytes(subject="Absence of the invoice total")),
    ("out_of_office", mail_bytes(subject="Re: Out of office hours support?")),
    ("own_address", mail_bytes(sender="support@example.com.evil.example")),
    ("own_address", mail_bytes(sender="notsupport@example.com")),
    ("loop_marker", mail_bytes("X-Mailgate-Loopy: 1\n")),
]


@pytest.mark.parametrize("name,raw", MISSES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISSES)])
def test_rule_misses(name: str, raw: bytes) -> None:
    v = run(raw)
    assert not check(v, name)
    assert v.may_auto_reply


OOF_SUBJECTS = [
    "Out of Office: Printer",
    "Out of Office AutoReply: Printer",
    "Automatic reply: [Support #12] Printer",
    "AutoReply: Printer",
    "Abwesenheitsnotiz: Drucker",
    "Automatische Antwort: Drucker",
    "Réponse automatique : Imprimante",
    "Absence: Imprimante",
    "Fuera de la oficina: Impresora",
    "Respuesta automática: Impresora",
    "Risposta automatica: Stampante",
    "Afwezig: Printer",
    "Autosvar: Skrivare",
    "自動応答: プリンター",
    "自动回复: 打印机",
    "不在通知",
    "자동 응답: 프린터",
]


@pytest.mark.parametrize("subject", OOF_SUBJECTS)
def test_out_of_office_subjects(subject: str) -> None:
    v = run(mail_bytes(subject=subject))
    assert check(v, "out_of_office")
    assert v.is_auto_reply and not v.may_auto_reply and not v.is_bounce


def test_flags_follow_the_hits() -> None:
    assert run(mail_bytes("List-Id: <l.example>\n")).is_list
    assert run(mail_bytes("Precedence: list\n")).is_list
    assert not run(mail_bytes("Precedence: bulk\n")).is_list
    assert run(mail_bytes("Auto-Submitted: auto-replied\n")).is_auto_reply
    assert not run(mail_bytes("Auto-Submitted: auto-generated\n")).is_auto_reply
    assert run(mail_bytes(f"{LOOP_HEADER}: x\n")).from_self
    assert run(mail_bytes(sender="support+7-deadbeef@example.com")).from_self


# --- bounces ------------------------------------------------------------------------------------------

DSN = """From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn1@mx.example.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
Arrival-Date: Tue, 04 Jun 2024 09:00:00 +0000

Final-Recipient: rfc822; gone@customer.example
Original-Recipient: rfc822;Gone@Customer.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

Final-Recipient: rfc822; slow@customer.example
Action: delayed
Status: 4.4.1

--B
Content-Type: message/rfc822

From: Support <support@example.com>
To: gone@customer.example
Subject: [Support #12] Your printer
Message-ID: <ack-12-abc@example.com>

We received your request.

--B--
"""


def test_hand_made_rfc3464_dsn() -> None:
    v = run(DSN.replace("\n", "\r\n").encode(), mail_from="")
    assert v.is_bounce and not v.may_auto_reply and not v.is_auto_reply
    assert v.bounced_message_ids == ("ack-12-abc@example.com",)
    assert v.bounced_recipients == ("gone@customer.example",)  # the delayed one is not bouncing
    assert check(v, "bounce") and check(v, "null_sender") and check(v, "auto_submitted")


def test_dsn_with_rfc822_headers_part() -> None:
    raw = DSN.replace("Content-Type: message/rfc822", "Content-Type: text/rfc822-headers").replace("\nWe received your request.\n", "\n")
    v = run(raw.encode(), mail_from="")
    assert v.bounced_message_ids == ("ack-12-abc@example.com",)


def test_forwarded_bounce_from_a_person_is_not_a_bounce() -> None:
    v = run(mail_bytes(subject="Fwd: Undelivered Mail Returned to Sender"))
    assert not v.is_bounce and v.may_auto_reply


def test_bounce_subject_from_a_person_is_not_a_bounce() -> None:
    v = run(mail_bytes(subject="Mail delivery failed for my colleague, can you check?"))
    assert not v.is_bounce


NON_STANDARD = [
    ("MAILER-DAEMON@mx.example.net", "Undelivered Mail Returned to Sender", ""),
    ("Mail Delivery Subsystem <mailer-daemon@googlemail.com>", "Delivery Status Notification (Failure)", ""),
    ("Mail Delivery System <Mailer-Daemon@mx.example.net>", "Mail delivery failed: returning message to sender", ""),
    ("postmaster@example.net", "failure notice", ""),
    ("Microsoft Outlook <postmaster@example.onmicrosoft.com>", "Undeliverable: [Support #12] Your printer", ""),
    ("Exchange <exch@example.net>", "Undeliverable: [Support #12] Your printer", "Auto-Submitted: auto-generated\n"),
]


@pytest.mark.parametrize("sender,subject,extra", NON_STANDARD)
def test_non_standard_bounces(sender: str, subject: str, extra: str) -> None:
    body = (
        "Hi. This is the qmail-send program at mx.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        "<gone@customer.example>:\n550 no such user\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "From: support@example.com\nMessage-ID: <ack-12-abc@example.com>\nSubject: [Support #12] Your printer\n\nWe received it.\n"
    )
    v = run(mail_bytes(extra, body, sender=sender, subject=subject), mail_from="")
    assert v.is_bounce and not v.may_auto_reply
    assert v.bounced_message_ids == ("ack-12-abc@example.com",)
    assert v.bounced_recipients == ("gone@customer.example",)


def test_x_failed_recipients_header() -> None:
    raw = mail_bytes("X-Failed-Recipients: gone@customer.example\nAuto-Submitted: auto-replied\n", "Sorry.\n", sender="Mail Delivery System <Mailer-Daemon@mx.example.net>", subject="Mail delivery failed")
    assert run(raw, mail_from="").bounced_recipients == ("gone@customer.example",)


def corpus(path: str) -> bytes:
    p = CORPUS / path
    if not p.exists():
        pytest.skip(f"corpus file {p} not present")
    return p.read_bytes()


@pytest.mark.parametrize(
    "name,message_id,recipient",
    [
        ("mail033-undelivered-mail-returned-to-sender.eml", "20150830145601.30.608881@edenhofer.zammad.com", "not_existing@znuny.com"),
        ("mail018.eml", "20131115125507.4636.975502@portal.znuny.com", "m.smith@example.com"),
        ("mail053.eml", "20170227103514.188.920664@help.example.com", "john_example@example.com"),
        ("mail055.eml", "20170526150141.232.13312@example.zammad.loc", "ticket-bounce-trigger2@example.com"),
        ("mail063.eml", "E8C3CD7C-8350-4E48-97C5-AE18EE900ECD@example.com", "notextisting@example.com"),
    ],
)
def test_corpus_dsns(name: str, message_id: str, recipient: str) -> None:
    v = run(corpus(f"zammad/{name}"), mail_from=None)
    assert v.is_bounce and not v.may_auto_reply
    assert message_id in v.bounced_message_ids
    assert v.bounced_recipients == (recipient,)


def test_corpus_delay_dsn_is_a_bounce_without_bouncing_recipients() -> None:
    v = run(corpus("zammad/mail078.eml"), mail_from=None)
    assert v.is_bounce and v.bounced_recipients == ()
    assert v.bounced_message_ids == ("20150830145601.30.608881@example.com",)


def test_corpus_non_standard_bounce() -> None:
    v = run(corpus("zammad/mail052.eml"), mail_from=None)
    assert v.is_bounce and check(v, "null_sender")


# --- Authentication-Results (RFC 8601) -----------------------------------------------------------------


def test_parse_with_comments_quotes_and_version() -> None:
    ar = parse_authentication_results(
        'mx.example.com 1 (our border); dkim=pass (2048-bit key; dkim=fail in a comment) header.d=customer.example '
        'header.s=s1; spf = fail (sender IP is 192.0.2.1) smtp.mailfrom="a b@x.example"; dmarc=pass (p=REJECT) header.from=customer.example'
    )
    assert ar.authserv_id == "mx.example.com"
    assert [(r.method, r.result) for r in ar.results] == [("dkim", "pass"), ("spf", "fail"), ("dmarc", "pass")]
    assert ar.results[0].prop("header.d") == "customer.example"
    assert ar.results[1].prop("smtp.mailfrom") == "a b@x.example"


def test_parse_none_and_missing_authserv_id() -> None:
    assert parse_authentication_results("mx.example.com; none").results == ()
    ms = parse_authentication_results("spf=softfail (sender IP is 1.2.3.4) smtp.mailfrom=example.com; dkim=none")
    assert ms.authserv_id == "" and ms.results[0].method == "spf"


def auth(headers: str, sender: str = "ann@customer.example", authserv: str = "mx.example.com") -> str:
    return run(mail_bytes(headers, sender=sender), authserv=authserv).auth


def test_trusted_dkim_pass_aligned() -> None:
    assert auth("Authentication-Results: mx.example.com; dkim=pass header.d=customer.example\n") == "pass"
    assert auth("Authentication-Results: MX.Example.com; dkim=pass header.i=@mail.customer.example\n") == "pass"


def test_trusted_dmarc_pass() -> None:
    assert auth("Authentication-Results: mx.example.com; spf=fail; dmarc=pass header.from=customer.example\n") == "pass"


def test_dkim_pass_for_another_domain_is_not_pass() -> None:
    assert auth("Authentication-Results: mx.example.com; dkim=pass header.d=attacker.example\n") == "none"


def test_trusted_failures() -> None:
    assert auth("Authentication-Results: mx.example.com; dmarc=fail header.from=customer.example\n") == "fail"
    assert auth("Authentication-Results: mx.example.com; spf=fail smtp.mailfrom=customer.example; dkim=none\n") == "fail"
    assert auth("Authentication-Results: mx.example.com; dkim=fail header.d=customer.example\n") == "fail"
    # a dkim pass for some other domain means it is not a plain failure
    assert auth("Authentication-Results: mx.example.com; spf=fail; dkim=pass header.d=list.example\n") == "none"


def test_auth_fail_forbids_auto_reply() -> None:
    v = run(mail_bytes("Authentication-Results: mx.example.com; dmarc=fail header.from=customer.example\n"))
    assert v.auth == "fail" and check(v, "auth_fail") and not v.may_auto_reply


def test_untrusted_or_absent_headers_are_ignored() -> None:
    assert auth("Authentication-Results: evil.example; dkim=pass header.d=customer.example\n") == "none"
    assert auth("Authentication-Results: evil.example; dmarc=fail\n") == "none"
    assert auth("") == "none"
    assert auth("Authentication-Results: mx.example.com; dmarc=fail\n", authserv="") == "none"
    # no authserv-id at all (Microsoft style): never trusted
    assert auth("Authentication-Results: dkim=pass header.d=customer.example\n") == "none"


def test_comment_content_does_not_count() -> None:
    header = "Authentication-Results: mx.example.com; arc=pass (i=1 dkim=pass dkdomain=customer.example dmarc=pass); dkim=none\n"
    assert auth(header) == "none"


def test_multiple_headers_combine_trusted_only() -> None:
    headers = (
        "Authentication-Results: evil.example; dkim=pass header.d=customer.example\n"
        "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=customer.example\n"
        "Authentication-Results: mx.example.com;\n dkim=pass (good signature)\n header.d=customer.example\n"
    )
    assert auth(headers) == "pass"
    assert authentication_verdict(["x.example; dkim=pass header.d=a.example"], "mx.example.com", "a.example")[0] == "none"


# --- the whole corpus -----------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    files = [p for p in CORPUS.rglob("*") if p.is_file() and (p.suffix == ".eml" or "spamscope" in str(p) or p.parent.name == "P")]
    return sorted(f for f in files if f.name != "README.md")


def test_every_corpus_message_screens() -> None:
    files = corpus_files()
    if not files:
        pytest.skip("corpus not present")
    bounces = 0
    for path in files:
        raw = path.read_bytes()
        for mail_from in (None, "", "someone@example.org"):
            v = screen(parse(raw), Inbound(raw=raw, source="ingest", received_at=NOW, mail_from=mail_from), OWN, "mx.example.com")
            assert len(v.checks) == len(RULES)
            assert v.may_auto_reply == (not any(c.hit for c in v.checks))
            assert v.auth in ("pass", "fail", "none")
        bounces += v.is_bounce
    assert len(files) >= 140
    assert bounces >= 8
