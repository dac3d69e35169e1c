"""SLA tracking in the store: clock events -> stored deadlines, pause/resume, alarms fired once (also across a restart)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailgate import slatrack
from mailgate.compose import Composer
from mailgate.config import Config
from mailgate.message import Inbound
from mailgate.pipeline import Pipeline, Runtime
from mailgate.rules import Ruleset
from mailgate.rules.model import Agent, Team
from mailgate.sla import BusinessCalendar, SlaPolicy
from mailgate.store import Store, parse_iso

UTC = timezone.utc
BERLIN_OFFICE = BusinessCalendar("Europe/Berlin", (((540, 1020),),) * 5 + ((), ()))  # mon-fri 09:00-17:00
OFFICE = SlaPolicy("office", ack_within=60, first_response_within=240, resolution_within=960, next_response_within=120,
                   calendar=BERLIN_OFFICE)
FAST = SlaPolicy("fast", ack_within=10, first_response_within=30, warn_at=0.5)
RULES = Ruleset(teams={"support": Team("support", ("alice",), "lead@example.test")},
                agents={"alice": Agent("alice", "Alice Agent", ("alice@example.test",), "support")},
                sla_policies={"office": OFFICE, "fast": FAST})
CONFIG = Config(support_addresses=("support@example.test",), secret="s")
FRIDAY_1630_BERLIN = datetime(2026, 1, 9, 15, 30, tzinfo=UTC)  # 16:30 CET


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "sla.db")
    yield s
    s.close()


def new_ticket(store: Store, at: datetime, policy: str | None = "office", priority: str = "normal",
               team: str | None = "support", assignee: str | None = "alice") -> int:
    def run(tx):  # type: ignore[no-untyped-def]
        n = tx.create_ticket(subject="Printer on fire", customer="c@client.test", customer_name="C", priority=priority,
                             team=team, assignee=assignee, sla_policy=policy, tags=(), at=at)
        slatrack.record_and_recompute(tx, n, "created", at, priority, ruleset=RULES)
        return n
    return store.transaction(run)


def record(store: Store, number: int, kind: str, at: datetime, value: str | None = None):  # type: ignore[no-untyped-def]
    return store.transaction(lambda tx: slatrack.record_and_recompute(tx, number, kind, at, value, ruleset=RULES))


def row(store: Store, number: int) -> dict:
    r = store.query("SELECT * FROM tickets WHERE number=?", [number])[0]
    return {k: parse_iso(v) if k.endswith("_at") and isinstance(v, str) else v for k, v in r.items()}


def test_office_hours_deadlines(store: Store) -> None:
    n = new_ticket(store, FRIDAY_1630_BERLIN)
    t = row(store, n)
    # 30 minutes on Friday, the rest from Monday 09:00 CET (08:00 UTC)
    assert t["ack_due_at"] == datetime(2026, 1, 12, 8, 30, tzinfo=UTC)
    assert t["first_response_due_at"] == datetime(2026, 1, 12, 11, 30, tzinfo=UTC)
    assert t["resolution_due_at"] == datetime(2026, 1, 13, 15, 30, tzinfo=UTC)  # 30 min Fri + 8 h Mon + 7.5 h Tue
    assert t["next_response_due_at"] is None
    assert t["sla_started_at"] == FRIDAY_1630_BERLIN and t["sla_clock"] == "open"
    # the first alarm is the ack warning at 80% = 48 business minutes: Monday 09:18 CET
    assert t["next_alarm_at"] == datetime(2026, 1, 12, 8, 18, tzinfo=UTC)
    clocks = store.query("SELECT key, minutes, due_at, met_at FROM sla_clocks WHERE ticket_number=? ORDER BY key", [n])
    assert [c["key"] for c in clocks] == ["ack", "first_response", "resolution"]

    reply_at = datetime(2026, 1, 12, 8, 20, tzinfo=UTC)  # Monday 09:20 CET: ack and first response on time
    record(store, n, "agent_reply", reply_at)
    t = row(store, n)
    assert t["ack_met_at"] == reply_at and t["first_response_met_at"] == reply_at  # a human answer acknowledges too
    assert t["first_response_due_at"] == datetime(2026, 1, 12, 11, 30, tzinfo=UTC)  # kept after met, for compliance
    # resolution warning at 768 business minutes: 30 Fri + 480 Mon + 258 Tue = Tuesday 13:18 CET
    assert t["next_alarm_at"] == datetime(2026, 1, 13, 12, 18, tzinfo=UTC)


def test_pending_stops_the_clock_until_the_customer_writes(store: Store) -> None:
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # Monday 09:00 CET
    n = new_ticket(store, t0)
    record(store, n, "agent_reply", t0 + timedelta(hours=1))
    record(store, n, "pending", t0 + timedelta(hours=1))
    t = row(store, n)
    assert t["sla_clock"] == "pending" and t["resolution_due_at"] is None and t["next_alarm_at"] is None
    # two business hours later the customer answers: resolution moves two hours back; a next-response clock starts
    record(store, n, "customer_message", t0 + timedelta(hours=3))
    t = row(store, n)
    assert t["sla_clock"] == "open"
    assert t["resolution_due_at"] == datetime(2026, 1, 14, 10, 0, tzinfo=UTC)  # 16 business hours + 2 paused: Wed 11:00
    assert t["next_response_due_at"] == t0 + timedelta(hours=5)
    events = store.query("SELECT kind FROM sla_events WHERE ticket_number=? ORDER BY id", [n])
    assert [e["kind"] for e in events] == ["created", "agent_reply", "pending", "customer_message"]


def test_ticket_changed_maps_status_priority_and_policy(store: Store) -> None:
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    n = new_ticket(store, t0, policy="fast")

    def change(changes: dict, at: datetime, message: str | None) -> None:
        def run(tx):  # type: ignore[no-untyped-def]
            before = tx.ticket(n)
            if changes:
                tx.update_ticket(n, **changes)
            return slatrack.ticket_changed(tx, n, before=before, changes=changes, at=at, ruleset=RULES, message=message)
        store.transaction(run)

    change({"status": "solved"}, t0 + timedelta(minutes=5), "agent_reply")  # reply + #solve
    assert row(store, n)["resolved_at"] == t0 + timedelta(minutes=5)
    change({"status": "open"}, t0 + timedelta(minutes=20), "customer_message")  # the customer writes again
    assert row(store, n)["resolved_at"] is None
    change({"priority": "urgent"}, t0 + timedelta(minutes=21), None)
    change({"sla_policy": "office"}, t0 + timedelta(minutes=22), None)
    change({"status": "pending"}, t0 + timedelta(minutes=23), None)
    change({"status": "open"}, t0 + timedelta(minutes=24), None)
    change({}, t0 + timedelta(minutes=25), None)  # nothing SLA-relevant: nothing recorded
    kinds = [(e["kind"], e["value"]) for e in store.query("SELECT kind, value FROM sla_events WHERE ticket_number=? ORDER BY id", [n])]
    assert kinds == [("created", "normal"), ("agent_reply", None), ("solved", None), ("reopened", None),
                     ("customer_message", None), ("priority", "urgent"), ("policy", "office"), ("pending", None), ("open", None)]
    assert row(store, n)["sla_clock"] == "open"


def test_no_policy_runs_under_the_builtin_default(store: Store) -> None:
    t0 = datetime(2026, 1, 10, 23, 0, tzinfo=UTC)  # a Saturday night: the default is 24/7
    n = new_ticket(store, t0, policy=None)
    t = row(store, n)
    assert t["ack_due_at"] == t0 + timedelta(minutes=15)
    assert t["first_response_due_at"] is None and t["resolution_due_at"] is None
    assert slatrack.policy_for(RULES, "gone-from-rules") is slatrack.DEFAULT_POLICY
    custom = Ruleset(sla_policies={"default": FAST})
    assert slatrack.policy_for(custom, None) is FAST


def test_acknowledgement_at_sent_time_via_mark_sent(store: Store) -> None:
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    n = new_ticket(store, t0, policy="fast")
    item = store.transaction(lambda tx: tx.queue_mail(ticket_number=n, kind="ack", message_id="a@x", mail_from="",
                                                      rcpt_to=["c@client.test"], raw=b"x", due_at=t0, at=t0))
    sent = t0 + timedelta(minutes=12)  # queued on time, but the relay took 12 minutes: late
    store.mark_sent(item, sent)
    t = row(store, n)
    assert t["ack_met_at"] == sent and t["next_alarm_at"] == t0 + timedelta(minutes=5)  # at most: the earlier alarm stays
    fired = slatrack.fire_due_alarms(store, RULES, Composer(None, "example.test"), CONFIG, sent)
    # the ack breach happened while the daemon did not look: recorded, not mailed; first-response warning at 15 min
    assert [(f.alarm.target, f.alarm.kind, f.mailed_to) for f in fired] == [("ack", "breach", ())]
    assert row(store, n)["next_alarm_at"] == t0 + timedelta(minutes=15)
    assert store.query("SELECT count(*) AS n FROM outbox WHERE kind='escalation'") == [{"n": 0}]


def test_alarms_fire_once_and_survive_a_restart(tmp_path: Path) -> None:
    composer = Composer(None, "example.test")
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    store = Store(tmp_path / "r.db")
    n = new_ticket(store, t0, policy="fast")
    store.transaction(lambda tx: slatrack.record_and_recompute(tx, n, "acknowledged", t0 + timedelta(minutes=1), ruleset=RULES))
    assert slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(minutes=14)) == []  # not yet
    fired = slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(minutes=16))
    assert [(f.alarm.target, f.alarm.kind) for f in fired] == [("first_response", "warning")]
    assert fired[0].mailed_to == ("lead@example.test", "alice@example.test")
    assert slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(minutes=17)) == []
    store.close()

    store = Store(tmp_path / "r.db")  # a restart: the fired set comes from the database
    try:
        assert slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(minutes=18)) == []
        fired = slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(minutes=31))
        assert [(f.alarm.target, f.alarm.kind) for f in fired] == [("first_response", "breach")]
        assert slatrack.fire_due_alarms(store, RULES, composer, CONFIG, t0 + timedelta(hours=5)) == []
        assert row(store, n)["next_alarm_at"] is None  # nothing left to fire

        events = store.query("SELECT kind, detail, at FROM events WHERE ticket_number=? AND kind LIKE 'sla_%' ORDER BY id", [n])
        assert [e["kind"] for e in events] == ["sla_warning", "sla_breach"]
        assert "[first_response]" in events[0]["detail"] and "lead@example.test" in events[0]["detail"]
        mails = store.query("SELECT rcpt_to, raw, due_at FROM outbox WHERE kind='escalation' ORDER BY id")
        assert len(mails) == 2
        assert json.loads(mails[1]["rcpt_to"]) == ["lead@example.test", "alice@example.test"]
        raw = bytes(mails[1]["raw"]).decode()
        assert "Subject: SLA breach: first response was due 2026-01-12 08:30 UTC on ticket #1" in raw
        assert "Auto-Submitted: auto-generated" in raw and "SLA breach on ticket #1" in raw
        alarms = store.query("SELECT clock, kind, fired_at FROM sla_alarms ORDER BY fired_at")
        assert [(a["clock"], a["kind"]) for a in alarms] == [("first_response", "warning"), ("first_response", "breach")]
    finally:
        store.close()


def test_no_escalation_address_still_records(store: Store) -> None:
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    n = new_ticket(store, t0, policy="fast", team=None, assignee=None)
    fired = slatrack.fire_due_alarms(store, RULES, Composer(None, "example.test"), CONFIG, t0 + timedelta(minutes=16))
    assert {(f.alarm.target, f.alarm.kind, f.mailed_to) for f in fired} == {("ack", "breach", ()), ("first_response", "warning", ())}
    details = [e.detail for e in store.ticket_events(n) if e.kind.startswith("sla_")]
    assert all("no escalation address" in d for d in details)


# -- through the real pipeline -------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def customer_mail(message_id: str, subject: str = "Printer on fire", refs: str = "") -> bytes:
    headers = f"In-Reply-To: <{refs}>\r\nReferences: <{refs}>\r\n" if refs else ""
    return (f"From: Carol <carol@client.test>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Mon, 12 Jan 2026 08:00:00 +0000\r\n{headers}\r\nHelp!\r\n").encode()


def test_pipeline_records_created_ack_and_customer_messages(store: Store) -> None:
    received = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    clock = Clock(received + timedelta(seconds=2))
    runtime = Runtime(ruleset=RULES, composer=Composer(None, "example.test"))
    pipeline = Pipeline(store, CONFIG, lambda: runtime, "s", clock=clock)
    sid = store.spool(Inbound(raw=customer_mail("one@client.test"), source="smtp", received_at=received,
                              rcpt_to=("support@example.test",)))
    assert pipeline.process(sid).state == "ticketed"
    t = row(store, 1)
    assert t["sla_started_at"] == received  # the clock starts when the mail was accepted, not when it was filed
    assert t["ack_due_at"] == received + timedelta(minutes=15)  # no policy chosen: the built-in default
    ack = store.query("SELECT due_at FROM outbox WHERE kind='ack'")
    assert parse_iso(ack[0]["due_at"]) == t["ack_due_at"]  # the outbox orders acks by this

    store.transaction(lambda tx: tx.update_ticket(1, status="solved"))
    store.transaction(lambda tx: slatrack.record_and_recompute(tx, 1, "solved", clock.now, ruleset=RULES))
    clock.now = received + timedelta(hours=1)
    sid = store.spool(Inbound(raw=customer_mail("two@client.test", "Re: Printer on fire", "one@client.test"),
                              source="smtp", received_at=clock.now, rcpt_to=("support@example.test",)))
    assert pipeline.process(sid).state == "followup"
    kinds = [e["kind"] for e in store.query("SELECT kind FROM sla_events WHERE ticket_number=1 ORDER BY id")]
    assert kinds == ["created", "solved", "reopened", "customer_message"]
    assert row(store, 1)["sla_clock"] == "open" and row(store, 1)["resolved_at"] is None


def test_pipeline_no_ack_records_ack_skipped(store: Store) -> None:
    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
    runtime = Runtime(ruleset=RULES, composer=Composer(None, "example.test"))
    pipeline = Pipeline(store, CONFIG, lambda: runtime, "s", clock=Clock(t0))
    raw = customer_mail("auto@client.test").replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    assert pipeline.process(store.spool(Inbound(raw=raw, source="smtp", received_at=t0))).state == "ticketed"
    kinds = [e["kind"] for e in store.query("SELECT kind FROM sla_events ORDER BY id")]
    assert kinds == ["created", "ack_skipped"]
    assert row(store, 1)["ack_due_at"] is None and row(store, 1)["next_alarm_at"] is None
