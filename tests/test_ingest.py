"""`mailgate ingest`: every corpus message and every kind of bad input is stored once, with a clear outcome."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, mail, run_cli, send, write_config

from mailgate import cli
from mailgate.store import Store

CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("README.md",)
                      and p.suffix not in (".yml",))


def ingest(cfg: Path, raw: bytes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run `mailgate ingest` in-process (the same code path as the console script), raw bytes on stdin."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code = cli.main(["--config", str(cfg), "ingest"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS_FILES) >= 229, f"corpus not found or shrunk: {len(CORPUS_FILES)} files under {CORPUS}"


def test_every_corpus_message_ingests_once(tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = write_config(tmp_path)
    outcomes: dict[str, str] = {}
    for path in CORPUS_FILES:
        code, out = ingest(cfg, path.read_bytes(), capsys, monkeypatch)
        assert code == 0, f"{path}: exit {code}: {out}"
        outcomes[str(path.relative_to(CORPUS))] = out.split(": ", 1)[1].split()[0] if ": " in out else out
    with Store(tmp_path / "mailgate.db") as store:
        rows = store.query("SELECT sha256, size, state FROM spool ORDER BY id")
    assert len(rows) == len(CORPUS_FILES)  # one stored raw message each, nothing dropped
    for (path, row) in zip(CORPUS_FILES, rows):
        assert row["size"] == path.stat().st_size
    assert not [s for s in outcomes.values() if s == "quarantined"], {k: v for k, v in outcomes.items() if v == "quarantined"}
    states = {r["state"] for r in rows}
    assert states <= {"done", "duplicate", "spam"}, states


def test_a_few_corpus_messages_through_the_real_console_script(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for path in CORPUS_FILES[:: max(1, len(CORPUS_FILES) // 5)]:
        result = run_cli("--config", str(cfg), "ingest", stdin=path.read_bytes())
        assert result.returncode == 0, (path, result.stderr)
        assert result.stdout.startswith(b"spool "), result.stdout


def nested(depth: int) -> bytes:
    head = b"From: deep@client.test\r\nTo: support@example.test\r\nSubject: deep\r\nMessage-ID: <deep@client.test>\r\n"
    body = b"innermost text\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n" + body
                + b"\r\n--" + b + b"--\r\n")
    return head + b"MIME-Version: 1.0\r\n" + body


BAD_INPUTS = {
    "empty": b"",
    "headers_only": b"From: a@client.test\r\nTo: support@example.test\r\nSubject: no body\r\n",
    "binary_garbage": bytes(range(256)) * 64,
    "raw_8bit_headers_utf8": "From: Jörg Müller <jorg@client.test>\r\nSubject: Größe ändern – ÄÖÜ\r\n\r\nKörper\r\n".encode(),
    "raw_8bit_headers_latin1": "From: Jörg Müller <jorg@client.test>\r\nSubject: Größe ändern - ÄÖÜ\r\n\r\nKörper\r\n".encode("latin-1"),
    "unknown_charset": b"From: x@client.test\r\nSubject: =?x-no-such-charset?Q?hi?=\r\nContent-Type: text/plain; charset=x-no-such\r\n\r\nbody\xff\r\n",
    "nested_1000": nested(1000),
    "outlook_msg_binary": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4096,
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_kept_with_a_clear_outcome(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = write_config(tmp_path)
    raw = BAD_INPUTS[name]
    code, out = ingest(cfg, raw, capsys, monkeypatch)
    assert code == 0, out
    with Store(tmp_path / "mailgate.db") as store:
        rows = store.query("SELECT raw, state, error, ticket_number FROM spool")
        assert len(rows) == 1 and bytes(rows[0]["raw"]) == raw  # stored byte for byte
        assert rows[0]["state"] == "done", rows[0]["error"]
        ticket = store.ticket(rows[0]["ticket_number"])
        assert ticket is not None
        shown = json.loads(run_cli("--config", str(cfg), "tickets", "show", str(ticket.number), "--json").stdout)
    if name in ("nested_1000", "unknown_charset", "binary_garbage"):
        defects = [e["detail"] for e in shown["events"] if e["kind"] == "defects"]
        assert defects, f"{name}: expected a recorded defect, events: {shown['events']}"
    if name == "raw_8bit_headers_utf8":
        assert shown["subject"] == "Größe ändern – ÄÖÜ"
    if name == "raw_8bit_headers_latin1":
        assert shown["subject"] == "Größe ändern - ÄÖÜ"


def test_30_mib_message_552_over_smtp_but_stored_when_piped(start_daemon, tmp_path: Path, capsys, monkeypatch) -> None:
    body = ("All work and no play makes Jack a dull boy. " * 2 + "\n") * 350_000  # ~31 MB
    raw = mail("Huge", body, message_id="huge")
    assert len(raw) > 30 * 1024 * 1024
    d = start_daemon()
    code, text = send(d.port, raw)
    assert code == 552 and b"5.3.4" in text
    assert d.store.query("SELECT count(*) AS n FROM spool") == [{"n": 0}]
    d.stop()
    code, out = ingest(d.config_path, raw, capsys, monkeypatch)
    assert code == 0, out
    with Store(tmp_path / "mailgate.db") as store:
        assert store.query("SELECT length(raw) AS n, state FROM spool") == [{"n": len(raw), "state": "done"}]
        assert store.tickets()[0].subject == "Huge"


def test_international_sender_addresses(tmp_path: Path, capsys, monkeypatch) -> None:
    """An IDN domain is acknowledged in its ASCII (IDNA) form; a non-ASCII local part cannot be answered
    without SMTPUTF8, so the ticket is opened and the acknowledgement suppressed with a reason."""
    cfg = write_config(tmp_path)
    idn = "From: Anna <anna@bücher.example>\r\nSubject: IDN\r\nMessage-ID: <idn@x>\r\n\r\nhi\r\n".encode()
    utf8_local = "From: Юзер <юзер@пример.рф>\r\nSubject: UTF-8 local part\r\nMessage-ID: <u8@x>\r\n\r\nhi\r\n".encode()
    for raw in (idn, utf8_local):
        code, out = ingest(cfg, raw, capsys, monkeypatch)
        assert code == 0 and "ticketed" in out, out
    with Store(tmp_path / "mailgate.db") as store:
        acks = store.query("SELECT ticket_number, rcpt_to FROM outbox WHERE kind='ack'")
        assert acks == [{"ticket_number": 1, "rcpt_to": '["anna@xn--bcher-kva.example"]'}], acks
        suppressed = [e.detail for e in store.ticket_events(2) if e.kind == "ack_suppressed"]
        assert suppressed and "no usable sender address" in suppressed[0]
