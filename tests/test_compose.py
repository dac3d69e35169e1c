"""compose: templates checked at load (syntax and a trial render), subject tags, header-safe values, addresses."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailgate.compose import Composer, Party, Threading, deliverable, one_line, tagged_subject, thread_index
from mailgate.errors import TemplateError


def test_builtin_templates_load_and_render() -> None:
    names = Composer(None, "example.test").names
    assert {"ack.txt.j2", "agent_notification.txt.j2", "relay.txt.j2", "escalation.txt.j2", "command_error.txt.j2"} <= set(names)


@pytest.mark.parametrize("name, source, expected", [
    ("ack.txt.j2", "Hello {{ customer_nam }}\n", "ack.txt.j2:1: does not render with the variables mailgate passes"),
    ("ack_vip.txt.j2", "Dear {{ customer_name }},\n\n{{ ticket.numbr }}\n", "ack_vip.txt.j2:3: does not render"),
    ("relay.txt.j2", "{{ text | no_such_filter }}\n", "relay.txt.j2:1: template syntax: No filter named 'no_such_filter'"),
    ("escalation.txt.j2", "{% if alarm %}\n{{ ticket.subject\n", "escalation.txt.j2:2: template syntax"),
])
def test_broken_templates_are_refused_at_load_with_file_and_line(tmp_path: Path, name: str, source: str, expected: str) -> None:
    (tmp_path / name).write_text(source)
    with pytest.raises(TemplateError) as err:
        Composer(tmp_path, "example.test")
    assert expected in str(err.value), str(err.value)


def test_tagged_subject_does_not_stack_prefixes_or_tags() -> None:
    assert tagged_subject("Printer on fire", 7, "Support") == "Re: Printer on fire [Support #7]"
    assert tagged_subject("AW: RE: Re: Printer [Support #7]", 7, "Support") == "Re: Printer [Support #7]"
    assert tagged_subject("", 8, "Help") == "Re: (no subject) [Help #8]"


def test_header_values_stay_on_one_line_and_build_parses_cleanly() -> None:
    assert one_line("a\r\nBcc: victim@evil.test\x00") == "a Bcc: victim@evil.test"
    out = Composer(None, "example.test").build(
        kind="ack", sender=Party("Support", "support@example.test"), to=[Party("Jörg \"J\" Ü, Esq.", "j@bücher.example")],
        subject="Re: Größe\r\nBcc: x@evil.test", body="Grüße\n" + "x" * 2000, envelope_from="",
        threading=Threading(in_reply_to="a@b", references=("a@b",)), automatic=True)
    msg = message_from_bytes(out.raw, policy=policy.default)
    assert not msg.defects and msg["Bcc"] is None
    assert msg["Subject"] == "Re: Größe Bcc: x@evil.test"
    assert msg["To"].addresses[0].display_name == 'Jörg "J" Ü, Esq.'
    assert out.rcpt_to == ("j@xn--bcher-kva.example",)
    assert max(len(line) for line in out.raw.split(b"\r\n")) <= 998


def test_deliverable_addresses() -> None:
    assert deliverable("a@b.example") == "a@b.example"
    assert deliverable("anna@bücher.example") == "anna@xn--bcher-kva.example"
    assert deliverable("юзер@пример.рф") is None
    assert deliverable("no-at-sign") is None


def test_thread_index_continues_the_parent() -> None:
    fresh = base64.b64decode(thread_index(None))
    assert len(fresh) == 22
    child = base64.b64decode(thread_index(base64.b64encode(fresh).decode()))
    assert len(child) == 27 and child[:22] == fresh
