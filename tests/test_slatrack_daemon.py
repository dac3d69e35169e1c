"""The daemon's SLA timer over real SMTP with an injected clock: warnings and breaches mailed once, across a restart;
acks ordered by due time and a breach recorded while the relay is down."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningDaemon, SmtpSink, mail, send, write_config
from mailgate.store import parse_iso, utcnow

RULES = """
teams:
  support: {members: [alice], escalation: lead@example.test}
agents:
  alice: {name: Alice Agent, addresses: [alice@example.test], team: support}
sla_policies:
  fast: {ack_within: 10, first_response_within: 30, warn_at: 0.5}
rules:
  - name: everything
    then: {agent: alice, sla: fast}
"""


class FakeClock:
    """The daemon's notion of now; the test moves it."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)
        self.start = self.now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def set(self, minutes: float) -> None:
        with self._lock:
            self.now = self.start + timedelta(minutes=minutes)


class ClockedDaemon(RunningDaemon):
    """conftest's RunningDaemon, with the clock injected into Daemon."""

    def __init__(self, config_path: Path, clock: FakeClock):
        super().__init__(config_path, clock=clock)

    def at(self, clock: FakeClock, minutes: float) -> None:
        clock.set(minutes)
        self.daemon.wake_sla_timer()


@pytest.fixture
def clocked(tmp_path: Path, smtp_sink: SmtpSink):  # type: ignore[no-untyped-def]
    (tmp_path / "rules.yaml").write_text(RULES)
    config = write_config(tmp_path, relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"})
    started: list[ClockedDaemon] = []

    def start(clock: FakeClock) -> ClockedDaemon:
        d = ClockedDaemon(config, clock)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.thread.is_alive():
            d.stop()


def sla_events(d: RunningDaemon) -> list[dict[str, Any]]:
    return d.store.query("SELECT kind, detail, at FROM events WHERE kind LIKE 'sla_%' ORDER BY id")


def escalations(sink: SmtpSink) -> list[Any]:
    return [m for m in sink.messages if m.message["Subject"].startswith("SLA ")]


def test_warning_and_breach_are_mailed_once_across_a_restart(clocked, smtp_sink: SmtpSink) -> None:
    clock = FakeClock()
    d = clocked(clock)
    assert send(d.port, mail("Printer on fire", message_id="sla1"))[0] == 250
    smtp_sink.wait_for(1, where=lambda m: m.rcpt_to == ["customer@client.test"])  # the ack (alice is notified too)
    d.wait_until(lambda: d.store.query("SELECT ack_met_at FROM tickets WHERE number=1")[0]["ack_met_at"], what="ack met")

    d.at(clock, 16)  # 50% of the 30-minute first response target is used up at 15
    smtp_sink.wait_for(1, where=lambda m: m.message["Subject"].startswith("SLA warning"))
    warning = escalations(smtp_sink)[0]
    assert sorted(warning.rcpt_to) == ["alice@example.test", "lead@example.test"]
    assert warning.message["Subject"].startswith("SLA warning: first response is due")
    assert warning.message["Auto-Submitted"] == "auto-generated"
    assert "14 min of business time left" in warning.message.get_content()
    assert [e["kind"] for e in sla_events(d)] == ["sla_warning"]
    d.stop()

    d = clocked(clock)  # restart at the same instant: the start-up round must not mail the warning again
    d.at(clock, 31)
    d.wait_until(lambda: [e for e in sla_events(d) if e["kind"] == "sla_breach"], what="breach recorded")
    smtp_sink.wait_for(2, where=lambda m: m.message["Subject"].startswith("SLA "))
    assert [e["kind"] for e in sla_events(d)] == ["sla_warning", "sla_breach"]
    assert parse_iso(sla_events(d)[1]["at"]) == clock.start + timedelta(minutes=31)
    d.at(clock, 60)
    d.wait_until(lambda: d.store.query("SELECT next_alarm_at FROM tickets")[0]["next_alarm_at"] is None,
                 what="no alarm left")
    d.wait_until(lambda: d.store.outbox_counts().get("queued", 0) == 0, what="outbox drained")
    assert [m.message["Subject"].split(":")[0] for m in escalations(smtp_sink)] == ["SLA warning", "SLA breach"]
    alarms = d.store.query("SELECT clock, kind FROM sla_alarms ORDER BY fired_at")
    assert [(a["clock"], a["kind"]) for a in alarms] == [("first_response", "warning"), ("first_response", "breach")]


def test_relay_down_keeps_the_ack_and_records_the_breach_when_it_happens(clocked, smtp_sink: SmtpSink) -> None:
    smtp_sink.handler.fail_with = "451 4.3.0 relay busy, try later"
    clock = FakeClock()
    d = clocked(clock)
    assert send(d.port, mail("Printer on fire", message_id="down1"))[0] == 250
    d.wait_until(lambda: any(e.kind == "ack_deferred" for e in d.store.ticket_events(1)), what="ack deferred")

    d.at(clock, 11)  # the ack was due at 10: breached while still queued
    d.wait_until(lambda: [e for e in sla_events(d) if e["kind"] == "sla_breach"], what="ack breach recorded")
    breach = sla_events(d)[-1]
    assert "acknowledgement due" in breach["detail"] and "lead@example.test" in breach["detail"]
    assert parse_iso(breach["at"]) == clock.start + timedelta(minutes=11)
    assert d.store.query("SELECT ack_met_at FROM tickets")[0]["ack_met_at"] is None

    smtp_sink.handler.fail_with = None  # the relay is back; the retry loop delivers, acks first (earliest due)
    clock.set(12)
    smtp_sink.wait_for(1, where=lambda m: m.message["Subject"].startswith("SLA "))
    order = [("ack" if m.rcpt_to == ["customer@client.test"] else "escalation" if m.message["Subject"].startswith("SLA ")
              else "notification") for m in smtp_sink.messages]
    assert order.index("ack") < order.index("escalation"), order  # the ack was due first, so it goes first
    assert escalations(smtp_sink)[0].message["Subject"].startswith("SLA breach: acknowledgement was due")
    t = d.wait_until(lambda: d.store.query("SELECT ack_met_at, ack_due_at FROM tickets WHERE ack_met_at IS NOT NULL"),
                     what="ack recorded as met")[0]
    assert parse_iso(t["ack_met_at"]) == clock.start + timedelta(minutes=12)  # at sent_at, not when queued
    assert parse_iso(t["ack_met_at"]) > parse_iso(t["ack_due_at"])
    d.wait_until(lambda: d.store.query("SELECT next_alarm_at FROM tickets")[0]["next_alarm_at"] is not None, what="recheck")
    d.at(clock, 13)  # the recheck after the late ack finds the breach already recorded
    d.wait_until(lambda: d.store.query("SELECT next_alarm_at FROM tickets")[0]["next_alarm_at"]
                 == (clock.start + timedelta(minutes=15)).isoformat(timespec="microseconds"), what="next alarm: 1st response")
    assert [e["kind"] for e in sla_events(d)] == ["sla_breach"]
