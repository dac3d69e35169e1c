"""IMAP intake figures against a real throwaway Dovecot: APPEND->spool and APPEND->ticket latency (IDLE), backlog drain rate.

Run: ``.venv/bin/python bench/imap.py [--latency-samples 200] [--backlog 2000]``. Prints figures; asserts nothing.
Spool level uses `ImapSource` alone; ticket level runs the whole `mailgate.daemon.Daemon` (IMAP in, pipeline,
acks into a Maildir) when it is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from mailgate.config import ImapAccount  # noqa: E402
from mailgate.sources import ImapSource  # noqa: E402
from mailgate.store import Store  # noqa: E402
from tests.dovecot import Dovecot, make_dovecot  # noqa: E402


def message(tag: str, n: int) -> bytes:
    return (f"From: Customer {n} <customer{n}@client.test>\r\nTo: support@example.test\r\n"
            f"Subject: Printer {tag} {n} is on fire\r\nMessage-ID: <{tag}-{n}@client.test>\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHello,\r\n\r\nthe printer on floor {n} is on fire again.\r\n"
            f"Please send someone.\r\n\r\n-- \r\nCustomer {n}\r\n").encode()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def wait(pred: Callable[[], bool], timeout: float, step: float = 0.001) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(step)
    return time.perf_counter() - t0


class Reader:
    """A separate read-only SQLite connection (WAL), so polling does not queue behind the store's writer thread."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def count(self, sql: str, *args: object) -> int:
        try:
            return self.conn.execute(sql, args).fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0


def account(server: Dovecot) -> ImapAccount:
    return ImapAccount(name="bench", host=server.host, port=server.port, tls="none", username="support",
                       password="secret", poll_interval=60.0)


def fill(server: Dovecot, tag: str, count: int) -> float:
    t0 = time.perf_counter()
    with server.client() as c:
        for n in range(count):
            c.append("INBOX", message(tag, n))
    return time.perf_counter() - t0


def latency(server: Dovecot, db: Path, tag: str, samples: int, ticket: bool) -> tuple[list[float], list[float]]:
    """APPEND one message at a time; seconds until its spool row exists and (ticket=True) its ticket message."""
    reader = Reader(db)
    to_spool, to_ticket = [], []
    with server.client() as c:
        for n in range(samples):
            before = reader.count("SELECT count(*) FROM spool")
            t0 = time.perf_counter()
            c.append("INBOX", message(tag, n))
            wait(lambda: reader.count("SELECT count(*) FROM spool") > before, 120)
            to_spool.append(time.perf_counter() - t0)
            if ticket:
                wait(lambda: reader.count("SELECT count(*) FROM messages WHERE message_id=?", f"{tag}-{n}@client.test") > 0, 10)
                to_ticket.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return to_spool, to_ticket


def spool_level(args: argparse.Namespace) -> None:
    stoppers: list[Callable[[], object]] = []
    gen = make_dovecot()
    server = next(gen)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    try:
        print(f"Dovecot {server.host}:{server.port}; spool level (ImapSource alone, after: move)")
        # backlog
        took = fill(server, "backlog", args.backlog)
        print(f"  APPEND {args.backlog} messages: {took:.1f} s ({args.backlog / took:.0f}/s)")
        store = Store(tmp / "spool.db")
        reader = Reader(tmp / "spool.db")
        source = ImapSource(account(server), store)
        stop = threading.Event()
        t0 = time.perf_counter()
        thread = threading.Thread(target=source.run, args=(stop,))
        thread.start()
        stoppers.append(lambda: (stop.set(), thread.join()))
        wait(lambda: reader.count("SELECT count(*) FROM spool") >= args.backlog, 600, 0.01)
        spooled = time.perf_counter() - t0
        wait(lambda: not server.uids("INBOX"), 120, 0.05)
        moved = time.perf_counter() - t0
        print(f"  backlog {args.backlog}: all spooled in {spooled:.2f} s = {args.backlog / spooled:.0f} msg/s; "
              f"all moved to Processed in {moved:.2f} s = {args.backlog / moved:.0f} msg/s")
        lat, _ = latency(server, tmp / "spool.db", "lat", args.latency_samples, ticket=False)
        print(f"  APPEND->spool with IDLE over {len(lat)} messages: p50 {pct(lat, 50) * 1000:.0f} ms, "
              f"p99 {pct(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    finally:
        for f in stoppers:
            f()
        next(gen, None)


def ticket_level(args: argparse.Namespace) -> None:
    try:
        import yaml

        from mailgate.config import load
        from mailgate.daemon import Daemon
    except ImportError as exc:
        print(f"ticket level skipped: {exc}")
        return
    gen = make_dovecot()
    server = next(gen)
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    try:
        db = tmp / "mailgate.db"
        cfg = {"database": str(db), "support_addresses": ["support@example.test"], "maildir": str(tmp / "outbox"),
               "rules": str(tmp / "rules.yaml"), "templates": str(tmp / "templates"), "secret": "bench",
               "smtp": {"enabled": False},
               "imap": [{"name": "bench", "host": server.host, "port": server.port, "tls": "none",
                         "username": "support", "password": "secret", "poll_interval": 60}]}
        (tmp / "mailgate.yaml").write_text(yaml.safe_dump(cfg))
        print(f"Dovecot {server.host}:{server.port}; ticket level (mailgate.daemon.Daemon: IMAP -> pipeline -> ack)")
        took = fill(server, "backlog", args.backlog)
        print(f"  APPEND {args.backlog} messages: {took:.1f} s")
        daemon = Daemon(load(str(tmp / "mailgate.yaml")), sweep_interval=0.2, grace=5.0)
        ready = threading.Event()
        t0 = time.perf_counter()
        thread = threading.Thread(target=lambda: asyncio.run(daemon.serve(ready)))
        thread.start()
        ready.wait(10)
        reader = Reader(db)
        wait(lambda: reader.count("SELECT count(*) FROM spool") >= args.backlog, 600, 0.01)
        spooled = time.perf_counter() - t0
        wait(lambda: reader.count("SELECT count(*) FROM tickets") >= args.backlog, 600, 0.01)
        ticketed = time.perf_counter() - t0
        print(f"  backlog {args.backlog}: spooled in {spooled:.2f} s ({args.backlog / spooled:.0f} msg/s), "
              f"ticketed in {ticketed:.2f} s = {args.backlog / ticketed:.0f} tickets/s")
        to_spool, to_ticket = latency(server, db, "lat", args.latency_samples, ticket=True)
        print(f"  APPEND->spool  with IDLE over {len(to_spool)} messages: p50 {pct(to_spool, 50) * 1000:.0f} ms, "
              f"p99 {pct(to_spool, 99) * 1000:.0f} ms")
        print(f"  APPEND->ticket with IDLE over {len(to_ticket)} messages: p50 {pct(to_ticket, 50) * 1000:.0f} ms, "
              f"p99 {pct(to_ticket, 99) * 1000:.0f} ms, max {max(to_ticket) * 1000:.0f} ms "
              f"(mean {statistics.mean(to_ticket) * 1000:.0f} ms)")
        daemon.request_stop()
        thread.join(30)
    finally:
        next(gen, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--level", choices=("spool", "ticket", "both"), default="both")
    parser.add_argument("-v", action="store_true", help="debug logging")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if "-v" in sys.argv else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.level in ("spool", "both"):
        spool_level(args)
    if args.level in ("ticket", "both"):
        ticket_level(args)


if __name__ == "__main__":
    main()
