"""Safety of the SMTP listener, proven over real SMTP: no open relay, limits, no smuggling, STARTTLS, no AUTH.

Every test talks to a real daemon on a free loopback port; the smuggling tests write raw bytes to a socket
so that no client library tidies the line ends on our behalf.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RunningDaemon, mail, send


def spool_rows(d: RunningDaemon) -> list[dict]:
    return d.store.query("SELECT id, raw, rcpt_to, state FROM spool ORDER BY id")


# -- open relay ---------------------------------------------------------------------------------

FOREIGN = [
    "someone@elsewhere.test",
    "support@evil.test",
    "support@example.test.evil.test",
    "support@sub.example.test",
    '"support@example.test"@evil.test',   # quoted local part that looks like our address
    "support%evil.test@example.test",     # the percent hack: we are not a gateway
    "support!evil.test@example.test",     # bang path
    "evil.test!support@example.test",
]
MALFORMED = [
    "support@example.test@evil.test",     # two @: refused as malformed before our handler sees it
    "support@example.test.",
    "",
]


def test_no_open_relay(start_daemon) -> None:
    d = start_daemon()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("mallory@evil.test")[0] == 250
        for rcpt in FOREIGN:
            c.putcmd("rcpt", f"TO:<{rcpt}>")
            code, text = c.getreply()
            assert (code, text[:5]) == (550, b"5.1.1"), (rcpt, code, text)
        for rcpt in MALFORMED:
            c.putcmd("rcpt", f"TO:<{rcpt}>")
            code, text = c.getreply()
            assert code in (501, 550, 553), (rcpt, code, text)  # permanent, never accepted
        c.putcmd("rcpt", "TO:<support@evil.test>")  # ... and nothing was accepted, so DATA is refused
        c.getreply()
        code, _ = c.docmd("DATA")
        assert code == 503
    assert spool_rows(d) == []


def test_own_addresses_in_any_case_plus_and_source_route_are_ours(start_daemon) -> None:
    """A source route (RFC 5321 appendix C) is ignored and the final mailbox is ours: delivered locally, not relayed."""
    d = start_daemon()
    for rcpt in ["SUPPORT@Example.TEST", "support+anything@example.test", "@relay1.test,@relay2.test:support@example.test"]:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("customer@client.test")
            c.putcmd("rcpt", f"TO:<{rcpt}>")
            code, text = c.getreply()
            assert code == 250, (rcpt, code, text)
            assert c.data(mail(subject=f"to {rcpt}"))[0] == 250
    rows = spool_rows(d)
    assert len(rows) == 3
    assert "relay" not in rows[2]["rcpt_to"] and "support@example.test" in rows[2]["rcpt_to"]


# -- limits -------------------------------------------------------------------------------------


def test_recipients_per_message_limit(start_daemon) -> None:
    d = start_daemon(smtp={"max_recipients": 3})
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("customer@client.test")
        for i in range(3):
            assert c.rcpt(f"support+{i}@example.test")[0] == 250
        code, text = c.rcpt("support+3@example.test")
        assert code == 452 and b"4.5.3" in text, (code, text)
        assert c.data(mail())[0] == 250  # the first three still get the message, once
    d.wait_until(lambda: len(d.store.tickets()) == 1, what="ticket")
    assert len(spool_rows(d)) == 1


def test_line_length_limit(start_daemon) -> None:
    """Lines beyond RFC 5321's 1000 octets but under 64 KiB pass (real HTML mail has them); longer ones are refused."""
    d = start_daemon()
    long_ok = b"Subject: long line\r\nFrom: c@client.test\r\n\r\n" + b"x" * 20_000 + b"\r\n"
    assert send(d.port, long_ok)[0] == 250
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("c@client.test")
        c.rcpt("support@example.test")
        code, text = c.data(b"Subject: too long\r\n\r\n" + b"x" * 70_000 + b"\r\n")
        assert code == 500 and b"Line too long" in text, (code, text)
        code, text = c.docmd("NOOP " + "y" * 70_000)  # command lines too
        assert code == 500, (code, text)
    assert len(spool_rows(d)) == 1


def test_size_limit_at_data_and_at_mail_from(start_daemon) -> None:
    d = start_daemon(smtp={"max_message_size": 50_000})
    code, text = send(d.port, mail(body=("x" * 99 + "\n") * 1000))
    assert code == 552 and text.startswith(b"5.3.4"), (code, text)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        code, text = c.ehlo("client.test")
        assert b"SIZE 50000" in text
        c.putcmd("mail", "FROM:<c@client.test> SIZE=60000")  # the declared size is refused up front
        code, text = c.getreply()
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        c.putcmd("mail", "FROM:<c@client.test> SIZE=1000")
        assert c.getreply()[0] == 250
    assert spool_rows(d) == []


def test_concurrent_sessions_cap(start_daemon) -> None:
    d = start_daemon(smtp={"max_sessions": 2})
    held = [smtplib.SMTP("127.0.0.1", d.port, timeout=10) for _ in range(2)]
    try:
        for c in held:
            assert c.ehlo("client.test")[0] == 250
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            greeting = s.recv(1000)
            assert greeting.startswith(b"421 4.7.0"), greeting
            assert s.recv(1000) == b""  # and the connection is closed
    finally:
        for c in held:
            c.quit()
    deadline = time.monotonic() + 5  # a freed slot is usable again
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            if s.recv(1000).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                break
        time.sleep(0.05)
    else:
        raise AssertionError("no session accepted after the held ones quit")


# -- SMTP smuggling -----------------------------------------------------------------------------

SMUGGLING_VECTORS = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r", b"\r.\n",
                     b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


def _read_replies(s: socket.socket, until: bytes, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while until not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS, ids=lambda v: v.hex())
def test_smuggling_does_not_split_one_message_into_two(start_daemon, vector: bytes) -> None:
    d = start_daemon()
    first = b"From: alice@client.test\r\nTo: support@example.test\r\nSubject: innocent\r\nMessage-ID: <first@client.test>\r\n\r\nhello"
    smuggled = (b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
                b"From: ceo@example.test\r\nSubject: smuggled\r\nMessage-ID: <smuggled@evil.test>\r\n\r\nwire the money")
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        _read_replies(s, b"\r\n")
        s.sendall(b"EHLO client.test\r\n")
        _read_replies(s, b"250 ")
        s.sendall(b"MAIL FROM:<alice@client.test>\r\n")
        assert _read_replies(s, b"\r\n").startswith(b"250")
        s.sendall(b"RCPT TO:<support@example.test>\r\n")
        assert _read_replies(s, b"\r\n").startswith(b"250")
        s.sendall(b"DATA\r\n")
        assert _read_replies(s, b"\r\n").startswith(b"354")
        s.sendall(first + vector + smuggled + b"\r\n.\r\n")
        replies = _read_replies(s, b"\r\n")
        s.sendall(b"QUIT\r\n")
        replies += _read_replies(s, b"221")
    assert replies.count(b"250 2.0.0 Ok: queued") == 1, replies  # one message accepted, no second transaction
    assert b"354" not in replies, replies
    rows = spool_rows(d)
    assert len(rows) == 1, [r["raw"][:80] for r in rows]
    raw = rows[0]["raw"]
    assert b"Subject: smuggled" in raw and b"wire the money" in raw  # the "second message" is body text of the first
    assert raw.startswith(b"From: alice@client.test")
    d.wait_until(lambda: d.store.query("SELECT 1 FROM spool WHERE state != 'spooled'"), what="filed")
    assert d.store.query("SELECT message_id FROM messages WHERE direction='in'") == [{"message_id": "first@client.test"}]
    assert not d.store.query("SELECT 1 FROM messages WHERE message_id='smuggled@evil.test'")


# -- STARTTLS and AUTH --------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_no_starttls_and_no_auth_without_configuration(start_daemon) -> None:
    d = start_daemon()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        c.ehlo("client.test")
        assert not c.has_extn("starttls") and not c.has_extn("auth")
        code, _ = c.docmd("STARTTLS")
        assert code in (454, 502)  # "TLS not available": the session stays in clear text
        code, _ = c.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code >= 500


def test_starttls_with_configured_certificate_and_still_no_auth(start_daemon, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    d = start_daemon(smtp={"tls_cert": str(cert), "tls_key": str(key), "hostname": "localhost"})
    ctx = ssl.create_default_context(cafile=str(cert))
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        assert not c.has_extn("auth")  # AUTH is never offered in clear text
        c._host = "localhost"  # verify the certificate against its name, as a real client would
        code, _ = c.starttls(context=ctx)
        assert code == 220
        assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.ehlo("client.test")
        assert not c.has_extn("starttls")
        assert not c.has_extn("auth"), c.esmtp_features  # not enabled: not offered even over TLS
        code, _ = c.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code >= 500
        c.mail("customer@client.test")
        c.rcpt("support@example.test")
        assert c.data(mail("Over TLS", message_id="tls"))[0] == 250
    d.wait_until(lambda: d.store.query("SELECT 1 FROM messages WHERE message_id='tls@client.test'"), what="TLS mail filed")
