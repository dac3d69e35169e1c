"""Ingest throughput and acknowledgement latency: N generated messages through the pipeline, then through SMTP.

Usage: python bench/ingest.py [-n 2000] [--clients 4]
Prints messages/s for (a) the pipeline alone over pre-spooled rows, (b) a running daemon fed over real SMTP
by concurrent clients, with SMTP acceptance latency and acknowledgement latency (received -> sent) p50/p99,
and peak RSS. Everything runs on loopback and temp files.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.config import Config, RelayConfig, SmtpConfig  # noqa: E402
from mailgate.daemon import Daemon, load_runtime  # noqa: E402
from mailgate.message import Inbound  # noqa: E402
from mailgate.pipeline import Pipeline  # noqa: E402
from mailgate.sla import percentiles  # noqa: E402
from mailgate.store import Store, parse_iso  # noqa: E402


def message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@client.test>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Order {i} did not arrive"
    msg["Message-ID"] = f"<bench-{i}-{time.time_ns()}@client.test>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content(f"Hello,\n\nmy order {i} has not arrived yet. Could you check?\n\nThanks\n" * 5)
    return bytes(msg)


def config(tmp: Path, port: int = 0) -> Config:
    return Config(database=str(tmp / "bench.db"), support_addresses=("support@example.test",),
                  maildir=str(tmp / "maildir"), rules=str(tmp / "none.yaml"), templates=str(tmp / "none"),
                  secret="bench", smtp=SmtpConfig(host="127.0.0.1", port=port), relay=RelayConfig(), base_dir=str(tmp))


def bench_pipeline(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = config(tmp)
        store = Store(cfg.database)
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        for i in range(n):
            store.spool(Inbound(raw=message(i), source="bench", received_at=now, rcpt_to=("support@example.test",)))
        spool_s = time.perf_counter() - t0
        runtime = load_runtime(cfg)
        pipeline = Pipeline(store, cfg, lambda: runtime, "bench")
        t0 = time.perf_counter()
        outcomes = pipeline.process_pending(limit=n)
        proc_s = time.perf_counter() - t0
        assert sum(o.state == "ticketed" for o in outcomes) == n, {o.state for o in outcomes}
        store.close()
    print(f"pipeline: spool (one durable commit each) {n / spool_s:8.0f} msg/s   "
          f"filing (parse+screen+thread+rules+ack, one txn each) {n / proc_s:8.0f} msg/s")


def bench_smtp(n: int, clients: int, rate: float = 0.0) -> None:
    """Burst (rate 0: as fast as the clients can) or paced at `rate` messages/s in total."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        daemon = Daemon(config(tmp, port), sweep_interval=0.2)
        ready = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(daemon.serve(ready)), daemon=True)
        thread.start()
        ready.wait(10)
        accept: list[float] = []
        lock = threading.Lock()

        def client(indices: range) -> None:
            start = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", port) as c:
                for k, i in enumerate(indices):
                    if rate:
                        time.sleep(max(0.0, start + k * clients / rate - time.perf_counter()))
                    raw = message(i)
                    t = time.perf_counter()
                    c.sendmail("customer@client.test", ["support@example.test"], raw)
                    with lock:
                        accept.append((time.perf_counter() - t) * 1000)

        per = n // clients
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, [range(k * per, (k + 1) * per) for k in range(clients)]))
        accepted_s = time.perf_counter() - t0
        total = per * clients
        deadline = time.time() + 300
        while time.time() < deadline:
            rows = daemon.store.query("SELECT count(*) AS n FROM outbox WHERE kind='ack' AND sent_at IS NOT NULL")
            if rows[0]["n"] >= total:
                break
            time.sleep(0.2)
        done_s = time.perf_counter() - t0
        rows = daemon.store.query(
            "SELECT s.received_at, o.sent_at FROM outbox o JOIN messages m ON m.ticket_number = o.ticket_number"
            " AND m.direction='in' JOIN spool s ON s.id = m.spool_id WHERE o.kind='ack' AND o.sent_at IS NOT NULL")
        latencies = [(parse_iso(r["sent_at"]) - parse_iso(r["received_at"])).total_seconds() * 1000 for r in rows]
        daemon.request_stop()
        thread.join(30)
    a, l = percentiles(accept), percentiles(latencies)
    mode = f"paced at {rate:.0f} msg/s" if rate else "burst"
    print(f"smtp ({mode}): {clients} clients, {total} messages: accepted {total / accepted_s:6.0f} msg/s, "
          f"all filed and acknowledged {total / done_s:6.0f} msg/s")
    print(f"smtp ({mode}): acceptance latency (DATA end -> 250) p50 {a.p50:6.1f} ms  p99 {a.p99:6.1f} ms  (mean {statistics.mean(accept):.1f})")
    print(f"smtp ({mode}): acknowledgement latency (received -> sent to Maildir) p50 {l.p50:7.1f} ms  p99 {l.p99:7.1f} ms  over {len(latencies)} acks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0, help="offered load of the paced run, messages/s")
    args = parser.parse_args()
    bench_pipeline(args.n)
    bench_smtp(args.n, args.clients)
    bench_smtp(min(args.n, int(args.rate * 20)), args.clients, args.rate)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
