"""DKIM signing of what we send: an acknowledgement and an agent relay, captured at a real relay, verify with dkimpy.

The ONE stand-in in these tests: there is no DNS here, so `dkim.verify` gets a `dnsfunc` that answers the TXT
query for <selector>._domainkey.<domain> with the public key this test generated (and nothing else).
Everything else is real: the daemon, its SMTP listener, its outbox, the relay.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest

from conftest import RunningDaemon, SmtpSink, mail, send

RULES = """
agents:
  alice: {name: Alice Agent, addresses: [alice@staff.test]}
rules:
  - name: everything to alice
    then: {agent: alice}
"""


def make_key(tmp_path: Path) -> tuple[Path, bytes]:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def dns_for(records: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    """The stand-in for DNS (see the module docstring): TXT answers for exactly the names given."""
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.rstrip(b"."))
    return dnsfunc


def test_acks_and_relays_are_signed_and_verify(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    key, txt = make_key(tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    d: RunningDaemon = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"},
                                    dkim={"private_key_file": str(key), "selector": "mg2026"})
    dns = dns_for({b"mg2026._domainkey.example.test": txt})

    assert send(d.port, mail("Printer on fire", message_id="orig"))[0] == 250
    ack = smtp_sink.wait_for(1, where=lambda c: c.rcpt_to == ["customer@client.test"])[0]
    note = smtp_sink.wait_for(1, where=lambda c: c.rcpt_to == ["alice@staff.test"])[0]
    reply = mail("Re: Printer on fire [Support #1]", "Turn it off and on again.", sender="Alice Agent <alice@staff.test>",
                 message_id="alice-1", headers={"In-Reply-To": note.message["Message-ID"]})
    assert send(d.port, reply, mail_from="alice@staff.test")[0] == 250
    relay = smtp_sink.wait_for(2, where=lambda c: c.rcpt_to == ["customer@client.test"])[1]

    for captured in (ack, note, relay):
        msg = captured.message
        sig = msg["DKIM-Signature"]
        assert sig is not None
        tags = {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in str(sig).replace("\r\n", "").split(";"))}
        assert tags["d"] == "example.test" and tags["s"] == "mg2026"
        assert msg["From"].addresses[0].domain == "example.test"  # d= aligns with From (DMARC)
        assert "from" in tags["h"].lower() and "subject" in tags["h"].lower() and "message-id" in tags["h"].lower()
        assert dkim.verify(captured.raw, dnsfunc=dns), captured.raw[:400]

    # The verification is real: a changed body, a changed subject, an added From, or another key all fail.
    tampered_body = ack.raw.replace(b"ticket #1", b"ticket #9")
    assert tampered_body != ack.raw and not dkim.verify(tampered_body, dnsfunc=dns)
    tampered_subject = ack.raw.replace(b"Subject: Re: Printer on fire", b"Subject: Re: Pay this invoice")
    assert tampered_subject != ack.raw and not dkim.verify(tampered_subject, dnsfunc=dns)
    added_from = ack.raw.replace(b"\r\nSubject:", b"\r\nFrom: ceo@example.test\r\nSubject:", 1)
    assert not dkim.verify(added_from, dnsfunc=dns)
    (tmp_path / "other").mkdir()
    _other, other_txt = make_key(tmp_path / "other")
    assert not dkim.verify(ack.raw, dnsfunc=dns_for({b"mg2026._domainkey.example.test": other_txt}))

    # What is stored stays unsigned (signing happens at delivery; a retry signs afresh).
    stored = d.store.query("SELECT raw FROM outbox WHERE kind='ack'")[0]["raw"]
    assert b"DKIM-Signature" not in stored


def test_unsigned_by_default(start_daemon, smtp_sink: SmtpSink) -> None:
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    send(d.port, mail())
    assert smtp_sink.wait_for(1)[0].message["DKIM-Signature"] is None
    assert not d.config.dkim.enabled


def test_misaligned_domain_and_unreadable_key_are_config_errors(tmp_path: Path) -> None:
    from conftest import write_config
    from mailgate.config import load
    from mailgate.dkim import Signer
    from mailgate.errors import ConfigError

    with pytest.raises(ConfigError, match="does not align"):
        load(str(write_config(tmp_path, dkim={"private_key_file": "k.pem", "domain": "other.test"})))
    parent = load(str(write_config(tmp_path, support_addresses=["support@help.example.test"],
                                   dkim={"private_key_file": "k.pem", "domain": "example.test"})))
    assert parent.dkim.domain == "example.test"  # a parent domain aligns (relaxed DMARC alignment)
    with pytest.raises(ConfigError, match="cannot read the key"):
        Signer(parent)
    (tmp_path / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not a usable signing key"):
        Signer(parent)
