"""Never lose mail: 451 when the database cannot commit, recovery of spooled rows at start-up, kill -9 after a 250."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import free_port, mail, run_cli, send, wait_until, write_config
from test_ops_helpers import DaemonProcess

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


def test_kill_9_right_after_250_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, smtp={"host": "127.0.0.1", "port": port})
    daemon = DaemonProcess(cfg, tmp_path / "serve.log").start()
    try:
        daemon.wait_ready(port)
        code, _ = send(port, mail("Kill me", message_id="kill9"))
        assert code == 250
        daemon.kill()  # SIGKILL: the promise of the 250 must survive this
        with Store(tmp_path / "mailgate.db") as store:
            assert store.query("SELECT count(*) AS n FROM spool WHERE sha256 IS NOT NULL") == [{"n": 1}]
        daemon.start().wait_ready(port)

        def filed() -> list[str]:
            with Store(tmp_path / "mailgate.db") as store:
                return [t.subject for t in store.tickets()]

        assert wait_until(filed, what="the message filed after the restart") == ["Kill me"], daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()
