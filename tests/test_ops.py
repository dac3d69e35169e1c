"""Operations: `mailgate check`, `config --show` masking, `db backup|vacuum|prune|check`, retention, and logs
(one JSON object per line with --log-format json; never a secret or a body) — all through real processes."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import SinkHandler, free_port, mail, run_cli, write_config
from test_ops_helpers import DaemonProcess, crlf, query, try_send, wait_until

from dovecot import Dovecot  # the fixture `dovecot` comes from conftest's pytest_plugins

RELAY_PASSWORD = "s3cret-Relay-Pa55"
BODY_SENTENCE = "My grandmother's recipe for plum cake is attached below."


class AuthSink:
    """A real SMTP relay offering AUTH (PLAIN/LOGIN, without TLS on loopback) that records logins and keeps what it gets."""

    def __init__(self, user: str = "mailgate", password: str = RELAY_PASSWORD):
        self.handler = SinkHandler()
        self.port = free_port()
        self.logins: list[tuple[str, bool]] = []

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
            self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?", ok))
            return AuthResult(success=ok, handled=False)

        # AUTH offered without TLS (loopback only); not *required*, which aiosmtpd warns about, but the logins are recorded
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_require_tls=False)

    def relay(self, **over: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "tls": "none", "username": "mailgate", "password": RELAY_PASSWORD,
                **over}


@pytest.fixture
def auth_sink() -> Any:
    sink = AuthSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()


def lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stdout.decode().splitlines()


def line_for(result: subprocess.CompletedProcess[bytes], what: str) -> str:
    found = [line for line in lines(result) if line[5:].startswith(what)]
    assert len(found) == 1, (what, result.stdout.decode(), result.stderr.decode())
    return found[0]


# -- mailgate check ------------------------------------------------------------------------------------


def test_check_all_good_greets_the_relay_with_auth_and_sends_nothing(tmp_path: Path, auth_sink: AuthSink) -> None:
    cfg = write_config(tmp_path, relay=auth_sink.relay())
    result = run_cli("--config", str(cfg), "check")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert line_for(result, "relay").startswith(f"ok   relay 127.0.0.1:{auth_sink.port} (none): EHLO ok, AUTH ok as mailgate")
    assert line_for(result, "config").startswith(f"ok   config: {cfg}")
    assert line_for(result, "rules").startswith("ok   rules: ")
    assert line_for(result, "templates").startswith("ok   templates: ")
    assert line_for(result, "database").startswith("ok   database: ")
    assert lines(result)[-1] == "6 ok, 0 warning(s), 0 failed"
    assert auth_sink.logins == [("mailgate", True)] and auth_sink.handler.messages == []
    assert RELAY_PASSWORD not in out + result.stderr.decode()
    assert not (tmp_path / "mailgate.db").exists(), "check must not create the database"


def test_check_reports_each_failure_on_its_own_line_and_exits_1(tmp_path: Path, auth_sink: AuthSink) -> None:
    (tmp_path / "rules.yaml").write_text("teams:\n  billing:\n    members: [nobody]\nrules: 5\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.txt.j2").write_text("Hello {{ customer\n")
    cfg = write_config(tmp_path, relay=auth_sink.relay(password="wrong"), database=str(tmp_path / "missing" / "x.db"))
    result = run_cli("--config", str(cfg), "check")
    out = result.stdout.decode()
    assert result.returncode == 1, out
    relay = line_for(result, "relay")
    assert relay.startswith("FAIL relay") and "AUTH as 'mailgate' refused (535" in relay and "relay.password" in relay
    assert any(line.startswith(f"FAIL rules: {tmp_path / 'rules.yaml'}:") for line in lines(result)), out
    assert any(line.startswith("FAIL templates: ") and "ack.txt.j2:1" in line for line in lines(result)), out
    assert line_for(result, "database").startswith("FAIL database: ") and "does not exist" in out
    assert "wrong" not in out

    # relay down: connection refused, with what to do
    cfg = write_config(tmp_path, relay={"host": "127.0.0.1", "port": free_port(), "tls": "starttls"})
    result = run_cli("--config", str(cfg), "check")
    relay = line_for(result, "relay")
    assert relay.startswith("FAIL relay 127.0.0.1:") and "(starttls): connect failed: Connection refused" in relay, relay
    assert result.returncode == 1


def test_check_starttls_relay_with_an_untrusted_certificate_fails_clearly(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=relay.test", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    port = free_port()
    controller = Controller(SinkHandler(), hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        cfg = write_config(tmp_path, relay={"host": "127.0.0.1", "port": port, "tls": "starttls"})
        result = run_cli("--config", str(cfg), "check")
    finally:
        controller.stop()
    relay = line_for(result, "relay")
    assert relay.startswith(f"FAIL relay 127.0.0.1:{port} (starttls): EHLO ok; TLS certificate not trusted"), relay
    assert result.returncode == 1


def test_check_with_a_broken_config_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "mailgate.yaml"
    cfg.write_text("database: x.db\nsmtp:\n  port: twenty\n")
    result = run_cli("--config", str(cfg), "check")
    assert result.returncode == 1
    assert lines(result)[0].startswith(f"FAIL config: {cfg}:3:"), result.stdout.decode()


def test_check_imap_account_against_dovecot(tmp_path: Path, dovecot: Dovecot) -> None:  # noqa: F811
    account = {"name": "helpdesk", "host": dovecot.host, "port": dovecot.port, "tls": "none", "username": "support",
               "password": "secret"}
    cfg = write_config(tmp_path, imap=[account])
    result = run_cli("--config", str(cfg), "check")
    imap = line_for(result, "imap helpdesk")
    assert imap.startswith(f"ok   imap helpdesk {dovecot.host}:{dovecot.port} (none): logged in"), imap
    assert result.returncode == 0, result.stdout.decode()
    cfg = write_config(tmp_path, imap=[{**account, "password": "not-the-password"}])
    result = run_cli("--config", str(cfg), "check")
    assert line_for(result, "imap helpdesk").startswith("FAIL imap helpdesk"), result.stdout.decode()
    assert result.returncode == 1
    assert "not-the-password" not in result.stdout.decode()


# -- config --show ---------------------------------------------------------------------------------------


def test_config_show_masks_every_secret(tmp_path: Path) -> None:
    imap = {"host": "imap.example.test", "username": "support", "password": "imap-Pa55word"}
    cfg = write_config(tmp_path, relay={"host": "relay.example.test", "password": RELAY_PASSWORD, "username": "u"},
                       imap=[imap], secret="hmac-Secret-Value", retention={"raw_days_after_close": 90})
    result = run_cli("--config", str(cfg), "config", "--show")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    for secret in (RELAY_PASSWORD, "imap-Pa55word", "hmac-Secret-Value"):
        assert secret not in out
    assert re.search(r"^relay\.password = \*{8} ", out, re.M)
    assert re.search(r"^imap\[0\]\.password = \*{8} ", out, re.M)
    assert re.search(r"^secret = \*{8} ", out, re.M)
    assert re.search(r"^relay\.host = relay\.example\.test ", out, re.M)
    assert re.search(r"^retention\.raw_days_after_close = 90 ", out, re.M)
    assert out.splitlines()[0] == f"# read from {cfg}"
    shown = run_cli("--config", str(cfg), "config", "--show", "--show-secrets").stdout.decode()
    assert RELAY_PASSWORD in shown and "imap-Pa55word" in shown


# -- db backup / vacuum / prune -----------------------------------------------------------------------------


def test_online_backup_while_mail_flows(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    port = int(yaml.safe_load(cfg.read_text())["smtp"]["port"])
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    stop = threading.Event()
    accepted: list[str] = []

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            mid = f"flow-{n}-{i}"
            if try_send(port, crlf(mail(f"Flowing {n}/{i}", message_id=mid, sender=f"c{n}.{i}@client.test")),
                        mail_from=f"c{n}.{i}@client.test")[0] == 250:
                accepted.append(mid)
            i += 1

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(2)]
    try:
        daemon.wait_ready(port)
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 20, 30, "mail flowing")
        copies = []
        for k in range(3):
            target = tmp_path / f"backup-{k}.db"
            result = run_cli("--config", str(cfg), "db", "backup", str(target))
            assert result.returncode == 0, result.stderr.decode()
            assert "integrity_check ok" in result.stdout.decode()
            copies.append((target, len(accepted)))
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        rc = daemon.stop()
        daemon.kill()
    assert rc == 0
    assert len(accepted) > copies[0][1], "mail kept flowing during the backups"
    for target, _ in copies:
        assert not target.with_name(target.name + ".partial").exists()
        conn = sqlite3.connect(target)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            spooled = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
            assert spooled > 0
            # a consistent snapshot: every filed spool row has its message and ticket
            assert conn.execute("SELECT count(*) FROM spool s WHERE s.state='done' AND NOT EXISTS "
                                "(SELECT 1 FROM messages m WHERE m.spool_id=s.id)").fetchone()[0] == 0
        finally:
            conn.close()
    # what was still being filed at the stop stays spooled for the next start: nothing accepted is missing
    states = dict(query(tmp_path / "mailgate.db", "SELECT state, count(*) FROM spool GROUP BY state"))
    assert set(states) <= {"done", "spooled"} and sum(states.values()) >= len(accepted), states


def test_vacuum_and_integrity_check(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for i in range(5):
        assert run_cli("--config", str(cfg), "ingest", stdin=mail(f"n{i}", message_id=f"v{i}")).returncode == 0
    result = run_cli("--config", str(cfg), "db", "vacuum")
    assert result.returncode == 0 and "vacuumed" in result.stdout.decode(), result.stderr.decode()
    result = run_cli("--config", str(cfg), "db", "check")
    assert result.returncode == 0 and "integrity_check ok" in result.stdout.decode()


def close_ticket(db: Path, number: int, days_ago: float) -> None:
    from mailgate.store import Store, utcnow

    with Store(db) as store:
        store.transaction(lambda tx: tx.update_ticket(number, status="closed", closed_at=utcnow() - timedelta(days=days_ago)))


def test_retention_clears_raw_bytes_of_long_closed_tickets_only(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    db = tmp_path / "mailgate.db"
    for i in range(3):
        raw = mail(f"Ticket {i}", body=f"Body {i}", message_id=f"r{i}", sender=f"c{i}@client.test")
        assert run_cli("--config", str(cfg), "ingest", stdin=raw).returncode == 0
    close_ticket(db, 1, days_ago=40)  # closed long ago: pruned
    close_ticket(db, 2, days_ago=5)   # closed recently: kept; ticket 3 stays open: kept
    sha_before = dict(query(db, "SELECT id, sha256 FROM spool"))

    result = run_cli("--config", str(cfg), "db", "prune")
    assert "retention is off" in result.stdout.decode()
    result = run_cli("--config", str(cfg), "db", "prune", "--days", "30")
    assert result.returncode == 0 and "cleared the raw bytes of 1 message(s)" in result.stdout.decode(), result.stdout
    rows = {r[0]: r[1:] for r in query(db, "SELECT ticket_number, length(raw), sha256, raw_pruned_at FROM spool")}
    assert rows[1][0] == 0 and rows[1][2] is not None
    assert rows[2][0] > 0 and rows[3][0] > 0 and rows[2][2] is None and rows[3][2] is None
    assert dict(query(db, "SELECT id, sha256 FROM spool")) == sha_before
    assert query(db, "SELECT kind FROM events WHERE ticket_number=1 AND kind='raw_pruned'") == [("raw_pruned",)]
    assert query(db, "SELECT text FROM messages WHERE ticket_number=1")[0][0].startswith("Body 0")  # the ticket keeps its text
    # a second run finds nothing more to do
    assert "of 0 message(s)" in run_cli("--config", str(cfg), "db", "prune", "--days", "30").stdout.decode()

    # the daemon runs it at start-up (then daily) with the configured retention
    close_ticket(db, 2, days_ago=10)
    cfg = write_config(tmp_path, retention={"raw_days_after_close": 7})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for_log("retention: cleared raw bytes of 1 message(s) of tickets closed more than 7 days ago")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert query(db, "SELECT ticket_number FROM spool WHERE raw_pruned_at IS NOT NULL ORDER BY 1") == [(1,), (2,)]


# -- logs ---------------------------------------------------------------------------------------------------


def test_json_logs_one_object_per_line_without_secrets_or_bodies(tmp_path: Path, auth_sink: AuthSink) -> None:
    cfg = write_config(tmp_path, relay=auth_sink.relay())
    port = int(yaml.safe_load(cfg.read_text())["smtp"]["port"])
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", log_format="json").start()
    try:
        daemon.wait_ready(port)
        raw = crlf(mail("Cake question", body=BODY_SENTENCE + "\nThanks!", message_id="json-logs"))
        assert try_send(port, raw)[0] == 250
        wait_until(lambda: auth_sink.handler.messages, 20, "the ack at the relay")
        daemon.wait_for_log("outbox: sent kind=ack")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    text = daemon.log()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    filed = [r for r in records if r["logger"] == "mailgate.pipeline" and "message-id=<json-logs@client.test>" in r["message"]]
    assert len(filed) == 1, records
    fields = dict(re.findall(r"(\S+?)=(\S+)", filed[0]["message"]))
    assert fields["outcome"] == "ticketed" and fields["ticket"] == "1" and fields["source"] == "smtp"
    assert float(fields["duration_ms"]) >= 0
    assert any(r["message"].startswith("outbox: sent kind=ack") and "ticket=1" in r["message"] for r in records)
    assert RELAY_PASSWORD not in text
    assert "plum cake" not in text and "Thanks!" not in text
    assert auth_sink.logins == [("mailgate", True)]
