"""kill -9 at random moments while clients send: every message that got a 250 ends up filed exactly once.

A real `mailgate serve` subprocess is killed with SIGKILL at least 20 times — during start-up, while SMTP
sessions are open, while the pipeline files — while 3 client threads send. A client retries (the same
message, same Message-ID) whatever did not get a 250, as an MTA does. At the end the daemon runs once more
and drains; then every acknowledged Message-ID must be exactly one stored inbound message, no spool row
may be left 'spooled' (or quarantined), and the database must pass integrity_check.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

import yaml

from conftest import mail, write_config
from test_ops_helpers import DaemonProcess, crlf, query, try_send, wait_until

KILLS = 22
CLIENTS = 3


@pytest.mark.slow
def test_kill_9_while_clients_send_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    cfg = write_config(tmp_path)
    port = int(yaml.safe_load(cfg.read_text())["smtp"]["port"])
    db = tmp_path / "mailgate.db"
    acked: list[str] = []
    attempts = {"total": 0, "failed": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            mid = f"crash-{n}-{i}"
            sender = f"c{n}.{i}@client.test"
            raw = crlf(mail(f"Crash test {n}/{i}", body=f"Message {i} of client {n}.", message_id=mid, sender=sender))
            while True:  # an MTA retries until it gets a 250 (here without giving up)
                code, _text = try_send(port, raw, mail_from=sender, timeout=5)
                with lock:
                    attempts["total"] += 1
                if code == 250:
                    with lock:
                        acked.append(f"{mid}@client.test")
                    break
                with lock:
                    attempts["failed"] += 1
                time.sleep(0.02)
            i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    started = time.monotonic()
    log = tmp_path / "daemon.log"
    try:
        for k in range(KILLS):
            daemon = DaemonProcess(cfg, log).start()
            # sometimes in the middle of start-up (imports, migrations, the start-up sweep), mostly while serving
            time.sleep(rng.uniform(0.05, 0.4) if k % 4 == 0 else rng.uniform(0.6, 1.6))
            daemon.kill()
            assert daemon.proc is not None and daemon.proc.returncode == -signal.SIGKILL

        final = DaemonProcess(cfg, tmp_path / "final.log").start()
        try:
            final.wait_ready(port)
            stop.set()
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "a client could not get its last message accepted"
            wait_until(lambda: query(db, "SELECT count(*) FROM spool WHERE state='spooled'") == [(0,)], 60,
                       "the restarted daemon to file everything left spooled")
            assert final.stop() == 0
        finally:
            final.kill()
    finally:
        stop.set()
    took = time.monotonic() - started

    assert len(acked) >= 50, f"too little traffic to prove anything: {len(acked)} accepted"
    assert attempts["failed"] > 0, "no send was ever interrupted: the kills did not hit traffic"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    stored = query(db, "SELECT message_id, count(*) FROM messages WHERE direction='in' GROUP BY message_id")
    counts = dict(stored)
    missing = [m for m in acked if m not in counts]
    assert not missing, f"{len(missing)} message(s) got a 250 but were never filed: {missing[:5]}"
    assert all(c == 1 for c in counts.values())
    assert len(set(acked)) == len(acked)
    states = dict(query(db, "SELECT state, count(*) FROM spool GROUP BY state"))
    assert set(states) <= {"done", "duplicate"}, states  # nothing left spooled, nothing quarantined
    # each customer mail opened exactly one ticket; retried sends of an already stored message are duplicates
    assert query(db, "SELECT count(*) FROM tickets") == [(len(counts),)]
    print(f"\n{KILLS} kills in {took:.0f} s; {len(acked)} messages accepted, {attempts['failed']} of "
          f"{attempts['total']} sends failed and were retried; spool: {states}")
