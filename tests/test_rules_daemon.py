"""Rules in the running system: `mailgate rules check|test`, events on tickets, reload on SIGHUP and on file change."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import REPO, free_port, mail, run_cli, send, wait_until, write_config
from test_ops_helpers import DaemonProcess

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


def _ticket(db: Path, subject: str):  # type: ignore[no-untyped-def]
    def find():  # type: ignore[no-untyped-def]
        with Store(db) as store:
            return next(((t, store.ticket_events(t.number)) for t in store.tickets() if t.subject == subject), None)

    return wait_until(find, what=f"a ticket {subject!r}")


def test_sighup_reload_good_edit_applies_bad_edit_keeps_last_good(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, smtp={"host": "127.0.0.1", "port": port})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % "invoice")
    daemon = DaemonProcess(cfg, tmp_path / "serve.log").start()
    try:
        daemon.wait_for_log("mailgate ready")
        assert send(port, mail("About my invoice", message_id="r1"))[0] == 250
        t, events = _ticket(tmp_path / "mailgate.db", "About my invoice")
        assert (t.team, t.priority, t.tags) == ("billing", "high", ("money",))
        assert any(e.kind == "rule_matched" and e.detail.startswith("money:") for e in events)

        rules.write_text(RULES % "refund")  # good edit
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload (SIGHUP): rules and templates reloaded")
        assert send(port, mail("A refund please", message_id="r2"))[0] == 250
        assert _ticket(tmp_path / "mailgate.db", "A refund please")[0].team == "billing"
        assert send(port, mail("Another invoice", message_id="r3"))[0] == 250
        assert _ticket(tmp_path / "mailgate.db", "Another invoice")[0].team is None

        rules.write_text(RULES.replace("contains:", "containz:") % "refund")  # bad edit
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log("keeping the last good rules")
        assert f"{rules}:10:" in daemon.log()
        assert send(port, mail("Refund again", message_id="r4"))[0] == 250  # intake never stops
        assert _ticket(tmp_path / "mailgate.db", "Refund again")[0].team == "billing"  # old routing still live
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_rules_file_change_is_picked_up_without_a_signal(start_daemon, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES % "invoice")
    d = start_daemon()
    (tmp_path / "rules.yaml").write_text(RULES % "parcel")
    os.utime(tmp_path / "rules.yaml", (time.time() + 5, time.time() + 5))
    d.wait_until(lambda: d.daemon.health.last_reload == "file changed", timeout=10, what="reload on file change")
    send(d.port, mail("Where is my parcel", message_id="p1"))
    d.wait_until(lambda: d.store.tickets(), what="ticket")
    assert d.store.tickets()[0].team == "billing"
