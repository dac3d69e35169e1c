"""`mailgate report`: figures checked against a hand-made set of tickets; text, JSON (through the real CLI) and HTML
rendered in headless Chromium (and looked at)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from mailgate import report, slatrack
from mailgate.compose import Composer
from mailgate.config import Config
from mailgate.rules import Ruleset
from mailgate.rules.model import Agent, Team
from mailgate.sla import SlaPolicy
from mailgate.store import Store

UTC = timezone.utc
STD = SlaPolicy("std", ack_within=10, first_response_within=60, resolution_within=480)
RULES = Ruleset(teams={"a": Team("a", ("alice",), "a-lead@example.test"), "b": Team("b", ("bob",), "b-lead@example.test")},
                agents={"alice": Agent("alice", "Alice", ("alice@example.test",), "a"),
                        "bob": Agent("bob", "Bob", ("bob@example.test",), "b")},
                sla_policies={"std": STD})
NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
SINCE, UNTIL = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def ticket(store: Store, created: datetime, team: str | None, agent: str | None, policy: str | None = "std", *,
           ack: datetime | None = None, reply: datetime | None = None, solved: datetime | None = None) -> int:
    """One ticket with its history, recorded as the pipeline, outbox and agents path would record it."""

    def run(tx):  # type: ignore[no-untyped-def]
        n = tx.create_ticket(subject=f"ticket at {created:%d %H:%M}", customer="c@client.test", customer_name="C",
                             priority="normal", team=team, assignee=agent, sla_policy=policy, tags=(), at=created)
        slatrack.record_and_recompute(tx, n, "created", created, "normal", ruleset=RULES)
        if ack is None:
            slatrack.record_and_recompute(tx, n, "ack_skipped", created, ruleset=RULES)
        return n, (tx.queue_mail(ticket_number=n, kind="ack", message_id=f"ack{created:%d%H%M}@x", mail_from="",
                                 rcpt_to=["c@client.test"], raw=b"x", due_at=created, at=created) if ack else None)

    n, item = store.transaction(run)
    if item is not None:
        store.mark_sent(item, ack)  # type: ignore[arg-type]
    if reply:
        store.transaction(lambda tx: slatrack.record_and_recompute(tx, n, "agent_reply", reply, ruleset=RULES))
    if solved:
        store.transaction(lambda tx: (tx.update_ticket(n, status="solved"),
                                      slatrack.record_and_recompute(tx, n, "solved", solved, ruleset=RULES)))
    else:
        store.transaction(lambda tx: tx.update_ticket(n, status="open"))
    return n


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "report.db"
    store = Store(path)
    try:
        ticket(store, t(2, 9), "a", "alice", ack=t(2, 9, 2), reply=t(2, 9, 30), solved=t(2, 11))      # 1: all on time
        ticket(store, t(2, 10), "a", "alice", ack=t(2, 10, 15), reply=t(2, 12), solved=t(3, 10))     # 2: all late
        ticket(store, t(3, 8), "b", "bob", ack=t(3, 8, 5), reply=t(3, 8, 45))                        # 3: unsolved, overdue
        ticket(store, t(4, 9), "b", "bob", ack=t(4, 9, 1))                                           # 4: no answer yet
        ticket(store, t(1, 9), "a", "alice", ack=t(1, 9, 3), reply=t(1, 10), solved=t(2, 12))        # 5: before the window
        ticket(store, t(4, 20), None, None, policy=None)                                             # 6: no ack (rules)
        slatrack.fire_due_alarms(store, RULES, Composer(None, "example.test"), Config(support_addresses=("s@x.test",)), NOW)
    finally:
        store.close()
    return path


def test_figures_match_the_hand_made_tickets(db: Path) -> None:
    with Store(db) as store:
        r = report.build(store, SINCE, UNTIL, by="team", now=NOW)
    f = r.total
    assert (f.opened, f.solved, f.backlog) == (5, 3, 3)  # solved: 1 and 2, and 5 (opened before, solved inside)
    assert (f.ack_latency.count, f.ack_latency.p50, f.ack_latency.p90, f.ack_latency.p99) == (4, 2, 15, 15)  # 1 2 5 15
    assert (f.first_response.count, f.first_response.p50, f.first_response.p90) == (3, 45, 120)  # 30 45 120
    assert (f.resolution.count, f.resolution.p50, f.resolution.p90) == (2, 120, 1440)
    c = f.compliance
    assert (c["ack"].on_time, c["ack"].late, c["ack"].percent) == (3, 1, 75.0)  # 6 has no ack clock (skipped)
    assert (c["first_response"].on_time, c["first_response"].late) == (2, 2)  # 4 is overdue; 6's default has none
    assert (c["resolution"].on_time, c["resolution"].late) == (1, 3)
    assert c["next_response"].judged == 0 and c["next_response"].percent is None
    assert f.breaches == {"ack": 1, "first_response": 2, "next_response": 0, "resolution": 3} and f.warnings == 0

    groups = {g.group: g for g in r.groups}
    assert list(groups) == ["(none)", "a", "b"]
    assert (groups["a"].opened, groups["a"].solved, groups["a"].backlog) == (2, 3, 0)
    assert (groups["b"].opened, groups["b"].solved, groups["b"].backlog) == (2, 0, 2)
    assert (groups["(none)"].opened, groups["(none)"].backlog) == (1, 1)
    assert groups["b"].compliance["first_response"].percent == 50.0 and groups["a"].compliance["ack"].percent == 50.0
    assert sum(groups["b"].breaches.values()) == 3
    assert set(r.compliance_by_team) == {"a", "b", "(none)"}

    assert [(d.day, o, s) for d, o, s in r.per_day] == [(2, 2, 2), (3, 1, 1), (4, 2, 0)]
    assert dict(r.first_response_histogram)["≤30m"] == 1 and dict(r.first_response_histogram)["≤1h"] == 1
    assert dict(r.ack_latency_histogram)["≤5m"] == 3 and dict(r.ack_latency_histogram)["≤15m"] == 1

    text = report.render_text(r)
    assert "tickets opened from 2026-03-02 00:00 to 2026-03-05 00:00 UTC, by team" in text
    assert "ack latency p50 / p90 / p99" in text and "2 min / 15 min / 15 min" in text
    assert "SLA acknowledgement on time" in text and "75.0% (3/4)" in text
    assert "resolution p50 / p90" in text and "2 h 00 / 1 d 0 h" in text


def test_cli_json_and_html(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "mailgate.yaml"
    config.write_text(yaml.safe_dump({"database": str(db), "support_addresses": ["s@example.test"]}))
    out = run_cli("--config", str(config), "report", "--since", "2026-03-02", "--until", "2026-03-04", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["since"] == "2026-03-02T00:00:00+00:00" and data["until"] == "2026-03-05T00:00:00+00:00"
    assert data["units"] == "minutes"
    total = data["total"]
    assert (total["opened"], total["solved"], total["backlog"]) == (5, 3, 3)
    assert total["ack_latency"] == {"count": 4, "p50": 2.0, "p90": 15.0, "p99": 15.0}
    assert total["compliance"]["ack"] == {"on_time": 3, "late": 1, "open": 0, "percent": 75.0}
    assert data["per_day"][0] == {"day": "2026-03-02", "opened": 2, "solved": 2}

    out = run_cli("--config", str(config), "report", "--by", "agent")
    assert out.returncode == 0, out.stderr
    assert b"alice" in out.stdout and b"bob" in out.stdout and b"tickets opened" in out.stdout
    bad = run_cli("--config", str(config), "report", "--since", "March")
    assert bad.returncode == 2 and b"not a date like 2026-01-31" in bad.stderr

    page = tmp_path / "report.html"
    out = run_cli("--config", str(config), "report", "--since", "2026-03-02", "--until", "2026-03-04", "--by", "team",
                  "--html", str(page))
    assert out.returncode == 0, out.stderr
    doc = page.read_text()
    assert doc.count("<svg") == 3 and "<script" not in doc.lower()
    assert "http://" not in doc.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in doc
    assert "SLA compliance per team" in doc and "75.0% (3/4)" in doc


def test_html_renders_in_headless_chromium(db: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: add the Debian package 'chromium' to .ci/run")
        pytest.skip("chromium not installed (apt-get install -y chromium) — HTML rendering not checked")
    with Store(db) as store:
        page = report.render_html(report.build(store, SINCE, UNTIL, by="team", now=NOW))
    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    png = Path(os.environ.get("MAILGATE_REPORT_PNG", str(tmp_path / "report.png")))
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1200,1600", html_file.as_uri()],
        capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
    assert len(data) > 30_000  # text, tables and three charts; a blank page compresses to a few KB
