"""Load: 8 concurrent SMTP clients send 5,000 messages while IMAP delivers another 1,000; every one must end as exactly one ticket.

Runs everything for real on loopback: `mailgate serve` as a subprocess on a temp directory, an aiosmtpd relay
that receives the acknowledgements, and (when Dovecot is installed) a throwaway Dovecot that the bench
APPENDs to while the SMTP clients send. Prints throughput, acceptance latency (from the end of DATA to the 250
reply) and acknowledgement latency (spool.received_at -> outbox.sent_at), p50 and p99.

    .venv/bin/python bench/load.py                      # 5,000 SMTP + 1,000 IMAP, 8 clients
    .venv/bin/python bench/load.py --smtp 1000 --imap 0 # quicker, SMTP only

Figures, not asserts: the script exits 1 only when a message is lost or filed twice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(kind: str, n: int) -> tuple[str, bytes]:
    sender = f"{kind}{n}@customers.test"
    msg = EmailMessage()
    msg["From"] = f"Customer {kind} {n} <{sender}>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Load {kind} {n}: the invoice export fails"
    msg["Message-ID"] = f"<load-{kind}-{n}@customers.test>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content(f"Hello,\n\nexporting invoice {n} fails with error E{n % 97}.\nPlease have a look.\n\nRegards\n")
    raw = bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return sender, raw


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


class Client(threading.Thread):
    """One SMTP client sending its share over a kept-open connection (reconnecting every 100 messages)."""

    def __init__(self, port: int, items: list[tuple[str, bytes]]):
        super().__init__(daemon=True)
        self.port = port
        self.items = items
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        client: smtplib.SMTP | None = None
        for i, (sender, raw) in enumerate(self.items):
            for _attempt in range(20):
                try:
                    if client is None or i % 100 == 0:
                        if client is not None:
                            client.quit()
                        client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
                        client.ehlo("load.test")
                    self.latencies.append(self.send_one(client, sender, raw))
                    break
                except (OSError, smtplib.SMTPException) as exc:
                    self.errors.append(f"{sender}: {exc!r}")
                    client = None
                    time.sleep(0.1)
        if client is not None:
            client.quit()

    @staticmethod
    def send_one(client: smtplib.SMTP, sender: str, raw: bytes) -> float:
        code, text = client.mail(sender)
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        code, text = client.rcpt("support@example.test")
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        client.putcmd("data")
        code, text = client.getreply()
        if code != 354:
            raise smtplib.SMTPResponseException(code, text)
        body = smtplib._quote_periods(raw)  # type: ignore[attr-defined]
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body)
        started = time.perf_counter()
        client.send(b".\r\n")
        code, text = client.getreply()
        took = time.perf_counter() - started
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp", type=int, default=5000, help="messages sent over SMTP")
    parser.add_argument("--clients", type=int, default=8, help="concurrent SMTP clients")
    parser.add_argument("--imap", type=int, default=1000, help="messages APPENDed to Dovecot (0: no IMAP)")
    parser.add_argument("--rules", default=str(REPO / "rules.yaml"), help="rules file the daemon uses")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (database, logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when piped to a file

    from aiosmtpd.controller import Controller
    from conftest import SinkHandler

    work = Path(tempfile.mkdtemp(prefix="mailgate-load-"))
    dovecot = None
    if args.imap:
        from dovecot import Dovecot, dovecot_available

        if not dovecot_available():
            print("dovecot not installed (apt-get install dovecot-imapd): IMAP part skipped")
            args.imap = 0
        else:
            os.chmod(work, 0o755)
            (work / "dovecot").mkdir()
            dovecot = Dovecot(work / "dovecot")
    sink = SinkHandler()
    relay_port = free_port()
    relay = Controller(sink, hostname="127.0.0.1", port=relay_port)
    relay.start()
    smtp_port = free_port()
    config = {
        "database": str(work / "mailgate.db"),
        "support_addresses": ["support@example.test"],
        "rules": args.rules,
        "templates": str(work / "templates"),
        "secret": "load-secret",
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "max_sessions": 200},
        "relay": {"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    }
    daemon = None
    try:
        if dovecot is not None:
            dovecot.start()
            config["imap"] = [{"name": "load", "host": dovecot.host, "port": dovecot.port, "tls": "none",
                               "username": "support", "password": "secret", "after": "move"}]
        cfg = work / "mailgate.yaml"
        cfg.write_text(yaml.safe_dump(config))
        log = open(work / "daemon.log", "wb")
        daemon = subprocess.Popen([sys.executable, "-m", "mailgate.cli", "--config", str(cfg), "serve"], cwd=REPO,
                                  stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while b"mailgate ready" not in (work / "daemon.log").read_bytes():
            if daemon.poll() is not None or time.monotonic() > deadline:
                print((work / "daemon.log").read_text())
                return 2
            time.sleep(0.05)

        smtp_items = [message("smtp", n) for n in range(args.smtp)]
        imap_items = [message("imap", n) for n in range(args.imap)]
        clients = [Client(smtp_port, smtp_items[k::args.clients]) for k in range(args.clients)]
        imap_done = threading.Event()
        imap_time = [0.0]

        def appender() -> None:
            started = time.perf_counter()
            assert dovecot is not None
            with dovecot.client() as c:
                for _sender, raw in imap_items:
                    c.append("INBOX", raw)
            imap_time[0] = time.perf_counter() - started
            imap_done.set()

        print(f"sending {args.smtp} messages with {args.clients} SMTP clients"
              + (f" while APPENDing {args.imap} to Dovecot" if args.imap else "") + f" (work dir {work})")
        started = time.perf_counter()
        for c in clients:
            c.start()
        if args.imap:
            threading.Thread(target=appender, daemon=True).start()
        for c in clients:
            c.join()
        smtp_time = time.perf_counter() - started
        imap_done.wait() if args.imap else None

        total = args.smtp + args.imap
        db = sqlite3.connect(str(work / "mailgate.db"), timeout=30)

        def count(sql: str) -> int:
            return db.execute(sql).fetchone()[0]

        deadline = time.monotonic() + 600
        while count("SELECT count(*) FROM spool WHERE state != 'spooled'") < total or count(
                "SELECT count(*) FROM outbox WHERE state='queued'") or count("SELECT count(*) FROM spool") < total:
            if time.monotonic() > deadline or daemon.poll() is not None:
                print("gave up waiting for the daemon to file and acknowledge everything")
                break
            time.sleep(0.2)
        filed_time = time.perf_counter() - started

        daemon.terminate()
        daemon.wait(60)
        rc = daemon.returncode

        latencies = [x for c in clients for x in c.latencies]
        errors = [e for c in clients for e in c.errors]
        expected = {f"load-smtp-{n}@customers.test" for n in range(args.smtp)} | {
            f"load-imap-{n}@customers.test" for n in range(args.imap)}
        stored = db.execute("SELECT message_id, count(*), min(ticket_number) FROM messages WHERE direction='in' "
                            "GROUP BY message_id").fetchall()
        stored_ids = {r[0] for r in stored}
        twice = [r[0] for r in stored if r[1] != 1]
        tickets = count("SELECT count(*) FROM tickets")
        states = dict(db.execute("SELECT state, count(*) FROM spool GROUP BY state").fetchall())
        sources = dict(db.execute("SELECT source, count(*) FROM spool GROUP BY source").fetchall())
        ack_latency = [r[0] for r in db.execute(
            "SELECT (julianday(o.sent_at) - julianday(s.received_at)) * 86400 FROM outbox o "
            "JOIN spool s ON s.ticket_number = o.ticket_number AND s.state = 'done' WHERE o.kind = 'ack' AND o.sent_at IS NOT NULL")]
        outbox_states = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        db.close()

        print(f"\nSMTP: {len(latencies)} accepted by {args.clients} clients in {smtp_time:.1f} s = "
              f"{len(latencies) / smtp_time:.0f} messages/s; {len(errors)} retried sends")
        print(f"  acceptance latency (end of DATA -> 250): p50 {percentile(latencies, 50) * 1000:.1f} ms, "
              f"p99 {percentile(latencies, 99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
        if args.imap:
            print(f"IMAP: {args.imap} APPENDed in {imap_time[0]:.1f} s (concurrently); spooled from IMAP: {sources.get('imap', 0)}")
        print(f"all {total} filed and acknowledged {filed_time:.1f} s after the start = {total / filed_time:.0f} messages/s end to end")
        print(f"  ack latency (received_at -> outbox.sent_at, {len(ack_latency)} acks): p50 {percentile(ack_latency, 50):.2f} s, "
              f"p99 {percentile(ack_latency, 99):.2f} s")
        print(f"spool: {states}; outbox: {outbox_states}; tickets: {tickets}; acks at the relay: {len(sink.messages)}")
        print(f"daemon exit status after SIGTERM: {rc}")

        problems = []
        if expected - stored_ids:
            problems.append(f"{len(expected - stored_ids)} message(s) never filed, e.g. {sorted(expected - stored_ids)[:3]}")
        if twice:
            problems.append(f"{len(twice)} message(s) filed more than once")
        if tickets != total:
            problems.append(f"{tickets} tickets for {total} messages")
        if set(states) - {"done"}:
            problems.append(f"spool rows not done: {states}")
        if problems:
            print("FAILED: " + "; ".join(problems))
            return 1
        print(f"OK: every one of the {total} messages is exactly one ticket")
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        relay.stop()
        if dovecot is not None:
            dovecot.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
