"""Fuzzing with hypothesis: generated MIME (random headers with garbage bytes, random multipart trees, charsets and
transfer encodings, broken boundaries, mixed line ends) thrown at `parse()`, at the whole pipeline filing into a
real store (the repository's example rules.yaml and templates, so rules and acks run too), and through the real
SMTP listener. No exception escapes, nothing is quarantined, every message is stored.

Bounded: a fixed number of examples per test (the whole module runs in well under a minute). The number of
inputs each test tried is printed (`pytest -s`) by the last test of the module.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import smtplib
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO, RunningDaemon
from mailgate.config import Config
from mailgate.daemon import load_runtime
from mailgate.message import Inbound, Mail, parse
from mailgate.pipeline import Pipeline
from mailgate.store import Store, utcnow

TRIED: Counter[str] = Counter()

# -- the generator --------------------------------------------------------------------------------

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "iso-2022-jp", "shift_jis", "koi8-r", "gb2312", "big5",
            "utf-16", "utf-7", "x-klingon", "", "unknown-8bit", "utf-8\"; x=\"", "cp65001", "=?utf-8?q?x?="]
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "BASE64", "gzip", ""]
LEAF_TYPES = ["text/plain", "text/html", "application/octet-stream", "image/png", "message/delivery-status",
              "text/rfc822-headers", "text/calendar", "application/ms-tnef", "text", "", "x/y/z"]
HEADER_NAMES = ["From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
                "Auto-Submitted", "Precedence", "List-Id", "X-Auto-Response-Suppress", "Return-Path", "Sender",
                "Authentication-Results", "Thread-Index", "Content-Type", "Content-Disposition", "X-Mailgate-Loop",
                "Delivered-To", "X-Failed-Recipients", "MIME-Version", "Content-Transfer-Encoding"]

addresses = st.sampled_from(["customer@client.test", "<a@b.test>", "\"Q, Uote\" <q@client.test>", "support@example.test",
                             "MAILER-DAEMON@mx.test", "undisclosed-recipients:;", "@", "<>", "a@", "=?utf-8?q?=0D=0A?= <x@y.test>",
                             "alice@example.com", "x" * 300 + "@long.test", "a@b.test, c@d.test (comment) , <e@f.test>"])
encoded_words = st.builds(lambda cs, enc, payload: f"=?{cs}?{enc}?{payload}?=", st.sampled_from(CHARSETS),
                          st.sampled_from(["q", "b", "Q", "B", "x"]), st.text(max_size=30).map(lambda t: t.replace("?=", "")))
header_values = st.one_of(
    addresses.map(str.encode),
    st.binary(max_size=120),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(encoded_words, max_size=4).map(lambda ws: " ".join(ws).encode()),
    st.sampled_from([b"<id@client.test>", b"<>", b"<<a@b>>", b"auto-replied", b"bulk", b"text/plain; charset=\"",
                     b"multipart/mixed; boundary=", b"Mon, 32 Foo 99999 25:61:61 +9999", b"mx.example.test; dmarc=fail",
                     b"=?utf-8?b?////?=", b"\xff\xfe\x00\x00", b"[Support #1] re: re: re:"]),
)
header_names = st.one_of(st.sampled_from(HEADER_NAMES), st.from_regex(r"\A[!-9;-~]{1,20}\Z"), st.binary(min_size=1, max_size=12))


def _encode(payload: bytes, cte: str, mangle: bool) -> bytes:
    if cte.lower() == "base64":
        out = base64.encodebytes(payload)
        return out[:-3] + b"!*" if mangle and len(out) > 3 else out
    if cte == "quoted-printable":
        out = quopri.encodestring(payload)
        return out + b"=Z" if mangle else out
    if cte == "x-uuencode":
        return b"begin 644 f.bin\n" + b"".join(binascii.b2a_uu(payload[i:i + 45]) for i in range(0, len(payload), 45)) + b"`\nend\n"
    return payload


@st.composite
def leaf(draw: st.DrawFn) -> tuple[str, bytes]:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    text = draw(st.text(max_size=200))
    payload = draw(st.one_of(st.just(text.encode(charset, "replace") if _known(charset) else text.encode()), st.binary(max_size=200)))
    headers = f"Content-Type: {ctype}; charset=\"{charset}\"\r\nContent-Transfer-Encoding: {cte}\r\n"
    if draw(st.booleans()):
        name = draw(st.text(max_size=40)).replace("\"", "")
        headers += f"Content-Disposition: {draw(st.sampled_from(['attachment', 'inline', 'bogus']))}; filename=\"{name}\"\r\n"
    return "leaf", headers.encode("utf-8", "surrogatepass") + b"\r\n" + _encode(payload, cte, draw(st.booleans()))


def _known(charset: str) -> bool:
    try:
        "".encode(charset)
        return True
    except (LookupError, ValueError):
        return False


def multipart(children: st.SearchStrategy[tuple[str, bytes]]) -> st.SearchStrategy[tuple[str, bytes]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes]:
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report; report-type=delivery-status", "signed",
                                        "digest", "rfc822"]))
        boundary = draw(st.sampled_from(["b1", "=_b2", "b", "", "x" * 80, "--", "b1"])) + draw(st.text("ab", max_size=2))
        parts = draw(st.lists(children, max_size=6))
        closing = draw(st.sampled_from(["close", "open", "wrong"]))
        if subtype == "rfc822":
            inner = parts[0][1] if parts else b""
            return "node", b"Content-Type: message/rfc822\r\n\r\nFrom: inner@x.test\r\nSubject: inner\r\n" + inner
        body = b"preamble\r\n" + b"".join(b"--" + boundary.encode() + b"\r\n" + p for _k, p in parts)
        body += {"close": b"--" + boundary.encode() + b"--\r\nepilogue\r\n", "open": b"", "wrong": b"--other--\r\n"}[closing]
        return "node", f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n".encode() + body
    return build()


trees = st.recursive(leaf(), multipart, max_leaves=12)


@st.composite
def mime_message(draw: st.DrawFn) -> bytes:
    head = b""
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=12)):
        name_b = name if isinstance(name, bytes) else name.encode()
        fold = draw(st.sampled_from([b"", b"\r\n ", b"\r\n\t", b"\n "]))
        head += name_b + b": " + fold + value + b"\r\n"
    if draw(st.booleans()):
        head += b"From: " + draw(addresses).encode() + b"\r\nMessage-ID: <" + str(draw(st.integers(0, 40))).encode() + b"@fuzz.test>\r\n"
    _kind, body = draw(trees)
    raw = head + b"MIME-Version: 1.0\r\n" + body
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"mixed"]))
    if eol != b"mixed":
        raw = raw.replace(b"\r\n", eol)
    return raw


FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                     HealthCheck.large_base_example])

# -- the tests ------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=500)
@given(mime_message())
def test_parse_never_raises(raw: bytes) -> None:
    TRIED["parse (generated MIME)"] += 1
    mail = parse(raw)
    assert isinstance(mail, Mail) and mail.message_id
    assert "\n" not in mail.subject and "\r" not in mail.subject
    for att in mail.attachments:
        assert att.filename and "/" not in att.filename and "\\" not in att.filename


@settings(FUZZ, max_examples=1000)
@given(st.binary(max_size=2000))
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    TRIED["parse (arbitrary bytes)"] += 1
    assert parse(raw).message_id


def test_pipeline_stores_every_generated_message() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(database=str(Path(tmp) / "fuzz.db"), support_addresses=("support@example.test",), secret="fuzz",
                        base_dir=str(REPO), trusted_authserv_id="mx.example.test")
        store = Store(config.database)
        runtime = load_runtime(config)
        pipeline = Pipeline(store, config, lambda: runtime, "fuzz")
        try:
            @settings(FUZZ, max_examples=400)
            @given(mime_message(), st.sampled_from([None, "", "customer@client.test", "MAILER-DAEMON@mx.test"]))
            def file_one(raw: bytes, mail_from: str | None) -> None:
                TRIED["pipeline (parse, screen, link, rules, compose, file)"] += 1
                sid = store.spool(Inbound(raw=raw, source="ingest", received_at=utcnow(), mail_from=mail_from,
                                          rcpt_to=("support@example.test",)))
                outcome = pipeline.process(sid)
                assert outcome.state in ("ticketed", "followup", "duplicate", "spam", "bounce", "agent_reply", "agent_note",
                                         "agent_unverified", "agent_auto_reply"), (outcome, store.quarantined())
                row = store.query("SELECT state, raw FROM spool WHERE id=?", [sid])[0]
                assert row["raw"] == raw and row["state"] in ("done", "duplicate", "spam")
                assert store.query("SELECT 1 FROM messages WHERE message_id=?", [outcome.message_id])

            file_one()
        finally:
            store.close()


def test_smtp_listener_takes_every_generated_message(start_daemon) -> None:
    d: RunningDaemon = start_daemon()
    client = smtplib.SMTP("127.0.0.1", d.port, timeout=30)
    client.ehlo("fuzz.test")
    sent: list[int] = []
    try:
        @settings(FUZZ, max_examples=60)
        @given(mime_message())
        def deliver(raw: bytes) -> None:
            TRIED["SMTP listener + daemon"] += 1
            refused = client.sendmail("fuzz@client.test", ["support@example.test"], raw)  # raises unless 250
            assert refused == {}
            sent.append(1)

        deliver()
    finally:
        client.quit()
    d.wait_until(lambda: not d.store.query("SELECT 1 FROM spool WHERE state='spooled'"), timeout=30, what="all filed")
    states = Counter(r["state"] for r in d.store.query("SELECT state FROM spool"))
    assert sum(states.values()) == len(sent) and not states["quarantined"], states


def test_zz_report_inputs_tried() -> None:
    """Not a check: prints how many inputs each fuzz test tried (run with -s to see it)."""
    for name, count in TRIED.items():
        print(f"fuzz: {name}: {count} inputs")
