"""Never lose mail: 451 when the database cannot commit, recovery of spooled rows at start-up, kill -9 after a 250."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port, mail, run_cli, send, write_config

from mailgate.store import Store


def test_locked_database_answers_451_and_the_retry_succeeds(start_daemon) -> None:
    d = start_daemon(database_busy_timeout=0.3)
    blocker = sqlite3.connect(d.config.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the daemon cannot commit
    try:
        code, text = send(d.port, mail("Locked out", message_id="locked"))
        assert code == 451 and b"4.3.0" in text, (code, text)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert d.store.query("SELECT count(*) AS n FROM spool") == [{"n": 0}]
    code, _ = send(d.port, mail("Locked out", message_id="locked"))  # the client's retry
    assert code == 250
    d.wait_until(lambda: d.store.tickets(), what="ticket after retry")
    assert d.store.tickets()[0].subject == "Locked out"


def test_ingest_exits_75_when_the_store_is_locked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, database_busy_timeout=0.3)
    Store(tmp_path / "mailgate.db").close()
    blocker = sqlite3.connect(tmp_path / "mailgate.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        result = run_cli("--config", str(cfg), "ingest", stdin=mail(message_id="pipe"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert result.returncode == 75, result
    assert b"try again later" in result.stderr and result.stderr.count(b"\n") == 1
    result = run_cli("--config", str(cfg), "ingest", stdin=mail(message_id="pipe"))
    assert result.returncode == 0, result.stderr
    with Store(tmp_path / "mailgate.db") as store:
        assert [t.subject for t in store.tickets()] == ["Printer on fire"]


def test_rows_left_spooled_are_filed_at_start_up(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path)
    for i in range(3):
        result = run_cli("--config", str(cfg), "ingest", "--no-process", stdin=mail(f"Waiting {i}", message_id=f"w{i}"))
        assert result.returncode == 0, result.stderr
    with Store(tmp_path / "mailgate.db") as store:
        assert store.spool_counts() == {"spooled": 3}
    d = start_daemon()  # same tmp_path, same database
    d.wait_until(lambda: len(d.store.tickets()) == 3, what="spooled rows filed at start-up")
    assert d.store.spool_counts() == {"done": 3}


def _serve(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailgate.cli", "--config", str(cfg), "serve"],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _wait_port(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"daemon did not listen on {port}")


def test_kill_9_right_after_250_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, smtp={"host": "127.0.0.1", "port": port})
    log = tmp_path / "serve.log"
    proc = _serve(cfg, log)
    try:
        _wait_port(port)
        code, _ = send(port, mail("Kill me", message_id="kill9"))
        assert code == 250
        os.kill(proc.pid, signal.SIGKILL)  # the promise of the 250 must survive this
        proc.wait(5)
        with Store(tmp_path / "mailgate.db") as store:
            assert store.query("SELECT count(*) AS n FROM spool WHERE sha256 IS NOT NULL") == [{"n": 1}]
        proc = _serve(cfg, log)
        _wait_port(port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with Store(tmp_path / "mailgate.db") as store:
                tickets = store.tickets()
            if tickets:
                break
            time.sleep(0.1)
        assert [t.subject for t in tickets] == ["Kill me"], log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()
