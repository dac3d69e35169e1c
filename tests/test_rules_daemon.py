"""Rules in the running system: `mailgate rules check|test`, events on tickets, reload on SIGHUP and on file change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, free_port, mail, run_cli, send, write_config

from mailgate.store import Store

RULES = """
teams:
  billing: {members: [alice]}
  tech: {members: [carol]}
agents:
  alice: {addresses: alice@example.test, team: billing}
  carol: {addresses: carol@example.test, team: tech}
rules:
  - name: money
    when: {subject: {contains: "%s"}}
    then: {team: billing, priority: high, tags: [money]}
"""


def test_rules_check_reports_ok_and_located_errors(tmp_path: Path) -> None:
    ok = run_cli("rules", "check", str(REPO / "rules.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert b"OK" in ok.stdout and b"rules" in ok.stdout and b"teams" in ok.stdout and b"agents" in ok.stdout
    bad = tmp_path / "rules.yaml"
    bad.write_text(RULES.replace("team: billing, priority", "team: bilink, priority"))
    result = run_cli("rules", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:11:".encode() in result.stderr and b"bilink" in result.stderr and b"billing" in result.stderr


def test_rules_test_explains_without_touching_the_database(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES % "invoice")
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail("Wrong invoice"))
    result = run_cli("--config", str(cfg), "rules", "test", str(eml))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "'money'" in out and "matched" in out and "billing" in out and "high" in out
    assert not (tmp_path / "mailgate.db").exists()


def _serve(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailgate.cli", "--config", str(cfg), "serve"],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _ticket(db: Path, subject: str, timeout: float = 10):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store(db) as store:
            for t in store.tickets():
                if t.subject == subject:
                    return t, store.ticket_events(t.number)
        time.sleep(0.1)
    raise AssertionError(f"no ticket {subject!r}")


def _wait_log(log: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{log.read_text()}")


def test_sighup_reload_good_edit_applies_bad_edit_keeps_last_good(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, smtp={"host": "127.0.0.1", "port": port})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % "invoice")
    log = tmp_path / "serve.log"
    proc = _serve(cfg, log)
    try:
        _wait_log(log, "mailgate ready")
        assert send(port, mail("About my invoice", message_id="r1"))[0] == 250
        t, events = _ticket(tmp_path / "mailgate.db", "About my invoice")
        assert (t.team, t.priority, t.tags) == ("billing", "high", ("money",))
        assert any(e.kind == "rule_matched" and e.detail.startswith("money:") for e in events)

        rules.write_text(RULES % "refund")  # good edit
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(log, "reload (SIGHUP): rules and templates reloaded")
        assert send(port, mail("A refund please", message_id="r2"))[0] == 250
        assert _ticket(tmp_path / "mailgate.db", "A refund please")[0].team == "billing"
        assert send(port, mail("Another invoice", message_id="r3"))[0] == 250
        assert _ticket(tmp_path / "mailgate.db", "Another invoice")[0].team is None

        rules.write_text(RULES.replace("contains:", "containz:") % "refund")  # bad edit
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(log, "keeping the last good rules")
        assert f"{rules}:10:".encode() in log.read_bytes() or f"{rules}:10:" in log.read_text()
        assert send(port, mail("Refund again", message_id="r4"))[0] == 250  # intake never stops
        assert _ticket(tmp_path / "mailgate.db", "Refund again")[0].team == "billing"  # old routing still live
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()


def test_rules_file_change_is_picked_up_without_a_signal(start_daemon, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES % "invoice")
    d = start_daemon()
    (tmp_path / "rules.yaml").write_text(RULES % "parcel")
    os.utime(tmp_path / "rules.yaml", (time.time() + 5, time.time() + 5))
    d.wait_until(lambda: d.daemon.health.last_reload == "file changed", timeout=10, what="reload on file change")
    send(d.port, mail("Where is my parcel", message_id="p1"))
    d.wait_until(lambda: d.store.tickets(), what="ticket")
    assert d.store.tickets()[0].team == "billing"
