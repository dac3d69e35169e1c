"""Header injection and template escapes: customer-controlled names and subjects never add headers to our mail,
and templates run in a sandbox that cannot reach Python internals, our configuration or files.

The injection attempts go through the real SMTP listener; the acknowledgement is captured at a real relay and
parsed there, as the recipient's provider would.
"""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from conftest import RunningDaemon, SmtpSink, send
from mailgate.compose import Composer
from mailgate.errors import TemplateError
from mailgate.store import utcnow

EXPECTED_HEADERS = {"message-id", "date", "from", "to", "reply-to", "subject", "in-reply-to", "references", "thread-topic",
                    "thread-index", "auto-submitted", "x-auto-response-suppress", "precedence", "x-mailgate-loop",
                    "content-type", "content-transfer-encoding", "mime-version"}

# (label, From header, Subject header) as raw header text
ATTACKS = [
    ("encoded-name-q", "=?utf-8?q?x=0D=0ABcc:_victim@evil.test?= <c1@client.test>", "Help"),
    ("encoded-name-b", "=?utf-8?b?eA0KQmNjOiB2aWN0aW1AZXZpbC50ZXN0?= <c2@client.test>", "Help"),  # x\r\nBcc: victim@evil.test
    ("encoded-subject-q", "c3@client.test", "=?utf-8?q?Help=0D=0ABcc:_victim@evil.test=0D=0A=0D=0Abody?="),
    ("encoded-subject-b", "c4@client.test", "=?utf-8?b?SGVscA0KQmNjOiB2aWN0aW1AZXZpbC50ZXN0?="),
    ("encoded-lf-only", "=?iso-8859-1?q?x=0ABcc:_victim@evil.test?= <c5@client.test>", "=?utf-8?q?Hi=0AX-Evil:_1?="),
    ("bare-cr-subject", "c6@client.test", "Help\rBcc: victim@evil.test"),
    ("quoted-encoded-name", '"=?utf-8?q?x=0D=0ABcc:_victim@evil.test?=" <c7@client.test>', "Help"),
    ("folded-subject", "c8@client.test", "Help\r\n Bcc: victim@evil.test"),
    ("nul-and-controls", "=?utf-8?q?a=00b=1Bc=7F?= <c9@client.test>", "=?utf-8?q?x=00y=0B=0Cz?="),
    ("encoded-in-comment", "c10@client.test (=?utf-8?q?=0D=0ABcc:_victim@evil.test?=)", "Help"),
]


def raw_mail(i: int, from_: str, subject: str) -> bytes:
    return (f"From: {from_}\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <inj{i}@client.test>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n").encode()


def test_customer_names_and_subjects_cannot_add_headers_to_our_ack(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"},
                     autoreply={"daily_cap_per_sender": 100, "breaker_mails": 100})
    for i, (_label, from_, subject) in enumerate(ATTACKS, 1):
        code, text = send(d.port, raw_mail(i, from_, subject), mail_from=f"c{i}@client.test")
        assert code == 250, text
    acks = smtp_sink.wait_for(len(ATTACKS), timeout=20)
    assert len(d.store.tickets()) == len(ATTACKS)
    for ack in acks:
        assert len(ack.rcpt_to) == 1 and "victim" not in ack.rcpt_to[0]
        msg = message_from_bytes(ack.raw, policy=policy.default)
        names = [k.lower() for k in msg.keys()]
        assert set(names) <= EXPECTED_HEADERS, (ack.rcpt_to, names)
        assert len(names) == len(set(names)) and len(names) <= len(EXPECTED_HEADERS)
        assert not msg.defects, msg.defects
        head = ack.raw.split(b"\r\n\r\n", 1)[0]
        assert b"\nBcc" not in head and b"\nX-Evil" not in head and b"\r\r" not in head
        assert b"\x00" not in ack.raw and b"\x1b" not in ack.raw
        for line in head.split(b"\r\n"):  # every header line is a header or a fold, and bare CR/LF never occur
            assert b"\r" not in line and b"\n" not in line
            assert line[:1] in (b" ", b"\t") or b":" in line
        for name in ("Subject", "To", "Thread-Topic"):
            value = str(msg[name])
            assert "\r" not in value and "\n" not in value
    stored = d.store.query("SELECT subject FROM messages WHERE direction='out'")
    assert all("\n" not in r["subject"] and "\r" not in r["subject"] for r in stored)


# -- templates ----------------------------------------------------------------------------------

ESCAPES_AT_LOAD = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ ticket.__init__.__globals__ }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "cycler": "{% for x in cycler.__init__.__globals__ %}{{ x }}{% endfor %}",
    "subscript": "{{ ticket['__class__'] }}",
    "attr-filter": "{{ ticket|attr('__class__') }}",
    "self-context": "{{ self._TemplateReference__context }}",
    "include-file": "{% include '/etc/passwd' %}",
    "include-parent": "{% include '../mailgate.yaml' %}",
    "extends-file": "{% extends '../../etc/hostname' %}",
}


@pytest.mark.parametrize("name", sorted(ESCAPES_AT_LOAD))
def test_template_escape_attempts_fail_at_load_time(tmp_path: Path, name: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt.j2").write_text("Dear customer,\n" + ESCAPES_AT_LOAD[name] + "\n")
    with pytest.raises(TemplateError) as err:
        Composer(tmp_path / "templates", "example.test")
    text = str(err.value)
    assert "ack.txt.j2:2" in text, text  # names the template and line
    assert "root:" not in text and "Popen" not in text


ESCAPES_AT_RENDER = {
    "attr-computed": "{{ ticket|attr('__cla' ~ 'ss__') }}",
    "config-walk": "{{ config.secret }}",
    "environment": "{{ self.__dict__ }}{{ environment }}",
    "getattr-computed": "{{ ticket[('__cl' ~ 'ass__')] }}",
    "format-escape": "{{ '{0.__class__.__mro__}'.format(ticket) }}",
    "str-format-map": "{{ '%s'|format(ticket.__class__) }}",
}


@pytest.mark.parametrize("name", sorted(ESCAPES_AT_RENDER))
def test_template_escape_attempts_fail_at_render_with_a_clear_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt.j2").write_text(ESCAPES_AT_RENDER[name] + "\n")
    try:
        composer = Composer(tmp_path / "templates", "example.test")
    except TemplateError as exc:  # caught even earlier: fine
        assert "ack.txt.j2" in str(exc)
        return
    with pytest.raises(TemplateError) as err:
        composer.render("ack.txt.j2", ticket=object(), customer="c@client.test")
    assert "ack.txt.j2" in str(err.value) and "cannot render" in str(err.value)
    assert "test-secret" not in str(err.value)


def test_a_template_that_fails_to_render_sends_nothing_and_keeps_the_mail(start_daemon, smtp_sink: SmtpSink,
                                                                         tmp_path: Path) -> None:
    """Through the daemon: an escape attempt is refused at start-up (file:line); a template that only fails on some
    data (here: ticket #1) quarantines that mail at render time (kept, replayable) and nothing leaks to the customer."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt.j2").write_text("Your secret: {{ config.secret }}{{ ticket|attr('__cl' ~ 'ass__') }}\n")
    with pytest.raises(TemplateError) as refused:
        start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    assert "ack.txt.j2:1:" in str(refused.value) and "test-secret" not in str(refused.value)
    (tmp_path / "templates" / "ack.txt.j2").write_text("Ticket {{ ticket.number }}: {{ 100 // (ticket.number - 1) }}\n")
    d: RunningDaemon = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    raw = raw_mail(1, "c1@client.test", "Leak please")
    assert send(d.port, raw)[0] == 250
    d.wait_until(lambda: d.store.query("SELECT 1 FROM spool WHERE state='quarantined'"), what="quarantined")
    time.sleep(1.2)  # an outbox round
    assert smtp_sink.messages == [] and not d.store.due_outbox(utcnow())
    row = d.store.query("SELECT raw, error FROM spool")[0]
    assert row["raw"] == raw.replace(b"\r\n", b"\r\n") and "TemplateError" in row["error"]
    assert "ack.txt.j2:1" in row["error"] and "test-secret" not in row["error"]
