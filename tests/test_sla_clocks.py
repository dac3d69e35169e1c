"""Ticket SLA clocks: deadlines from history, pause on pending, reopen, priorities, alarms that fire once; report figures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.sla import (BusinessCalendar, ClockEvent, Compliance, PriorityTargets, SlaPolicy, compliance,
                          compute_deadlines, due_alarms, next_alarm_at, percentile, percentiles)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessCalendar("Europe/Berlin", (((540, 1050),),) * 5 + ((), ()))  # mon-fri 09:00-17:30
POLICY = SlaPolicy("standard", ack_within=15, first_response_within=240, resolution_within=1020,
                   next_response_within=120, calendar=OFFICE,
                   priorities=(PriorityTargets("urgent", (("first_response_within", 30),)),))
ALWAYS = SlaPolicy("always", ack_within=15, first_response_within=60, resolution_within=None)


def b(day: int, hour: int, minute: int = 0) -> datetime:
    """Berlin wall time in the week of Monday 13 May 2024 (day 13 = Monday)."""
    return datetime(2024, 5, day, hour, minute, tzinfo=BERLIN)


def ev(when: datetime, kind: str, value: str | None = None) -> ClockEvent:
    return ClockEvent(when, kind, value)


def test_fresh_ticket_deadlines():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created")], now=b(13, 10, 5))
    assert d.ack_due == b(13, 10, 15)
    assert d.first_response_due == b(13, 14)
    assert d.resolution_due == b(15, 10)  # 450 min Monday + 510 Tuesday + 60 Wednesday
    assert d.next_response_due is None and d.status == "open" and not d.paused
    assert d.clock("ack").elapsed_minutes == 5 and d.clock("ack").remaining_minutes == 10
    assert all(c.due_at.tzinfo == UTC for c in d.clocks)


def test_ticket_created_after_hours_starts_next_morning():
    d = compute_deadlines(POLICY, [ev(b(17, 20), "created")], now=b(17, 21))  # Friday evening
    assert d.ack_due == b(20, 9, 15)


def test_acknowledgement_and_agent_reply_meet_targets():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10, 2), "acknowledged"),
                                   ev(b(13, 11), "agent_reply")], now=b(13, 12))
    assert d.clock("ack").met_at == b(13, 10, 2) and not d.clock("ack").breached(b(13, 12))
    assert d.clock("first_response").met_at == b(13, 11)
    assert d.ack_due == b(13, 10, 15)  # kept after being met, for compliance
    replied_first = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10, 1), "agent_reply")], now=b(13, 12))
    assert replied_first.clock("ack").met_at == b(13, 10, 1)


def test_skipped_acknowledgement_drops_the_ack_clock():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10), "ack_skipped")], now=b(13, 12))
    assert d.clock("ack") is None and d.ack_due is None
    assert [a.target for a in due_alarms(d, POLICY, b(13, 12), set())] == []


def test_late_acknowledgement_is_a_breach():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10, 40), "acknowledged")], now=b(13, 11))
    assert d.clock("ack").breached(b(13, 11))


def test_pending_stops_the_clock_until_the_customer_writes():
    history = [ev(b(13, 10), "created"), ev(b(13, 11), "agent_reply"), ev(b(13, 11), "pending")]
    waiting = compute_deadlines(POLICY, history, now=b(13, 15))
    assert waiting.paused and waiting.status == "pending"
    assert waiting.resolution_due is None and waiting.clock("resolution").paused
    assert waiting.clock("resolution").remaining_minutes == 1020 - 60
    resumed = compute_deadlines(POLICY, history + [ev(b(14, 11), "customer_message")], now=b(14, 11, 30))
    assert resumed.status == "open"
    # The pending span (Monday 11:00 to Tuesday 11:00) is one business day: the deadline moves by it.
    assert resumed.resolution_due == b(16, 10)
    assert resumed.next_response_due == b(14, 13)  # the customer's message starts a next-response clock


def test_agent_can_end_pending_without_the_customer():
    history = [ev(b(13, 10), "created"), ev(b(13, 11), "pending"), ev(b(13, 12), "open")]
    d = compute_deadlines(POLICY, history, now=b(13, 13))
    assert d.clock("resolution").elapsed_minutes == 120 and d.resolution_due == b(15, 11)


def test_solved_meets_resolution_and_reopen_resumes_it():
    history = [ev(b(13, 10), "created"), ev(b(13, 12), "solved")]
    solved = compute_deadlines(POLICY, history, now=b(14, 9))
    assert solved.clock("resolution").met_at == b(13, 12) and solved.resolution_due == b(15, 10)
    assert solved.status == "solved" and solved.paused
    reopened = compute_deadlines(POLICY, history + [ev(b(14, 12), "reopened")], now=b(14, 13))
    res = reopened.clock("resolution")
    assert res.met_at is None and res.elapsed_minutes == 120 + 60
    assert reopened.resolution_due == b(16, 10)  # Tuesday 12:00 + 900 business minutes


def test_closed_without_reply_leaves_clocks_stopped_and_quiet():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10, 5), "closed")], now=b(20, 10))
    assert d.clock("first_response").paused and d.first_response_due is None
    assert due_alarms(d, POLICY, b(20, 10), set()) == []


def test_next_response_cycles():
    history = [ev(b(13, 10), "created"), ev(b(13, 10, 30), "agent_reply"), ev(b(13, 11), "customer_message"),
               ev(b(13, 11, 10), "customer_message"), ev(b(13, 12), "agent_reply"), ev(b(13, 16, 30), "customer_message")]
    d = compute_deadlines(POLICY, history, now=b(13, 17))
    cycles = [c for c in d.clocks if c.target == "next_response"]
    assert [(c.started_at, c.due_at, c.met_at) for c in cycles] == [
        (b(13, 11), b(13, 13), b(13, 12)), (b(13, 16, 30), b(14, 10), None)]
    assert len({c.key for c in cycles}) == 2
    assert d.next_response_due == b(14, 10)
    answered = compute_deadlines(POLICY, history + [ev(b(14, 9, 5), "agent_reply")], now=b(14, 9, 10))
    assert answered.next_response_due is None


def test_customer_messages_before_the_first_reply_start_no_next_response_clock():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created"), ev(b(13, 10, 5), "customer_message")], now=b(13, 11))
    assert d.clock("next_response") is None


def test_priority_targets_apply_from_creation():
    d = compute_deadlines(POLICY, [ev(b(13, 10), "created", "urgent")], now=b(13, 10, 1))
    assert d.priority == "urgent" and d.first_response_due == b(13, 10, 30)
    raised = compute_deadlines(POLICY, [ev(b(13, 10), "created", "normal"), ev(b(13, 11), "priority", "urgent")],
                               now=b(13, 11))
    assert raised.first_response_due == b(13, 10, 30) and raised.clock("first_response").breached(b(13, 11))


def test_policy_change_is_a_recomputation_from_scratch():
    history = [ev(b(13, 10), "created"), ev(b(13, 10, 30), "policy", "always")]
    assert compute_deadlines(ALWAYS, history, now=b(13, 11)).first_response_due == b(13, 11)
    assert compute_deadlines(ALWAYS, history, now=b(13, 11)).resolution_due is None
    assert compute_deadlines(POLICY, history, now=b(13, 11)).first_response_due == b(13, 14)


def test_future_events_are_ignored_and_bad_histories_refused():
    history = [ev(b(13, 10), "created"), ev(b(13, 12), "agent_reply")]
    assert compute_deadlines(POLICY, history, now=b(13, 11)).clock("first_response").met_at is None
    with pytest.raises(ValueError, match="created"):
        compute_deadlines(POLICY, [ev(b(13, 10), "agent_reply")], now=b(13, 11))
    with pytest.raises(ValueError, match="unknown clock event"):
        ev(b(13, 10), "replied")
    with pytest.raises(ValueError, match="naive"):
        ClockEvent(datetime(2024, 5, 13, 10), "created")


# --- alarms ---------------------------------------------------------------------------------------------

def t(minute: int) -> datetime:
    return datetime(2024, 5, 13, 10, 0, tzinfo=UTC) + timedelta(minutes=minute)


def test_warning_then_breach_each_once():
    history = [ev(t(0), "created")]
    fired: set[tuple[str, str]] = set()
    seen = []
    for minute in range(0, 70):
        now = t(minute)
        for alarm in due_alarms(compute_deadlines(ALWAYS, history, now), ALWAYS, now, fired):
            seen.append((minute, alarm.target, alarm.kind))
            fired.add(alarm.key)
    assert seen == [(12, "ack", "warning"), (15, "ack", "breach"), (48, "first_response", "warning"),
                    (60, "first_response", "breach")]


def test_fired_set_survives_a_restart():
    history = [ev(t(0), "created")]
    stored = {("ack", "warning")}  # what the store persisted before the daemon stopped
    after_restart = compute_deadlines(ALWAYS, history, t(13))
    assert due_alarms(after_restart, ALWAYS, t(13), set(stored)) == []
    [breach] = due_alarms(compute_deadlines(ALWAYS, history, t(20)), ALWAYS, t(20), set(stored))
    assert (breach.target, breach.kind, breach.due_at, breach.met_at) == ("ack", "breach", t(15), None)


def test_a_breach_found_late_skips_the_warning():
    d = compute_deadlines(ALWAYS, [ev(t(0), "created")], t(30))
    assert [(a.target, a.kind) for a in due_alarms(d, ALWAYS, t(30), set())] == [("ack", "breach")]


def test_met_late_without_a_fired_breach_reports_it_once():
    d = compute_deadlines(ALWAYS, [ev(t(0), "created"), ev(t(20), "acknowledged")], t(25))
    [alarm] = [a for a in due_alarms(d, ALWAYS, t(25), set()) if a.target == "ack"]
    assert alarm.kind == "breach" and alarm.met_at == t(20)
    assert [a for a in due_alarms(d, ALWAYS, t(25), {alarm.key}) if a.target == "ack"] == []


def test_paused_clocks_raise_nothing_until_resumed():
    history = [ev(t(0), "created"), ev(t(1), "acknowledged"), ev(t(5), "pending")]
    assert due_alarms(compute_deadlines(ALWAYS, history, t(500)), ALWAYS, t(500), set()) == []
    assert next_alarm_at(compute_deadlines(ALWAYS, history, t(500)), ALWAYS, set()) is None
    history.append(ev(t(600), "customer_message"))
    d = compute_deadlines(ALWAYS, history, t(600))
    assert d.first_response_due == t(655)
    assert next_alarm_at(d, ALWAYS, set()) == t(600 + 48 - 5)


def test_warning_counts_business_time():
    d = compute_deadlines(POLICY, [ev(b(13, 16), "created"), ev(b(13, 16), "acknowledged")], b(14, 10, 41))
    assert due_alarms(d, POLICY, b(14, 10, 41), set()) == []
    assert next_alarm_at(d, POLICY, set()) == b(14, 10, 42)  # 80% of 240: 90 min Monday + 102 Tuesday
    d = compute_deadlines(POLICY, [ev(b(13, 16), "created"), ev(b(13, 16), "acknowledged")], b(14, 10, 42))
    [warning] = due_alarms(d, POLICY, b(14, 10, 42), set())
    assert (warning.target, warning.kind, warning.due_at) == ("first_response", "warning", b(14, 11, 30))


def test_each_next_response_cycle_alarms_separately():
    history = [ev(t(0), "created"), ev(t(1), "agent_reply"), ev(t(10), "customer_message"), ev(t(200), "agent_reply"),
               ev(t(300), "customer_message")]
    policy = SlaPolicy("n", ack_within=None, first_response_within=None, next_response_within=60)
    first_cycle = {(a.clock, a.kind) for a in due_alarms(compute_deadlines(policy, history, t(250)), policy, t(250), set())}
    assert first_cycle == {(f"next_response@{t(10).isoformat()}", "breach")}
    later = due_alarms(compute_deadlines(policy, history, t(350)), policy, t(350), first_cycle)
    assert [(a.clock, a.kind) for a in later] == [(f"next_response@{t(300).isoformat()}", "warning")]


def test_next_alarm_at_walks_through_the_alarms():
    d = compute_deadlines(ALWAYS, [ev(t(0), "created")], t(0))
    assert next_alarm_at(d, ALWAYS, set()) == t(12)
    assert next_alarm_at(d, ALWAYS, {("ack", "warning")}) == t(15)
    assert next_alarm_at(d, ALWAYS, {("ack", "warning"), ("ack", "breach")}) == t(48)
    everything = {(k, kind) for k in ("ack", "first_response") for kind in ("warning", "breach")}
    assert next_alarm_at(d, ALWAYS, everything) is None


# --- properties of clocks and alarms --------------------------------------------------------------------

steps = st.lists(st.tuples(st.integers(1, 900), st.sampled_from(
    ["customer_message", "agent_reply", "acknowledged", "ack_skipped", "pending", "open", "solved", "reopened",
     "closed", "priority"])),
    max_size=12)


def history_from(raw) -> tuple[list[ClockEvent], datetime]:
    when, events = b(13, 9, 30), [ev(b(13, 9, 30), "created")]
    for gap, kind in raw:
        when += timedelta(minutes=gap)
        events.append(ev(when, kind, "urgent" if kind == "priority" else None))
    return events, when


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 3000))
def test_a_running_clock_counts_exactly_its_target_over_running_spans(raw, later):
    events, last = history_from(raw)
    now = last + timedelta(minutes=later)
    d = compute_deadlines(POLICY, events, now)
    for clock in d.clocks:
        if clock.due_at is None:
            assert clock.paused and d.paused
            continue
        counted = sum((OFFICE.between(a, min(e, clock.due_at) if e else clock.due_at) for a, e in clock.spans
                       if a < clock.due_at), timedelta(0))
        assert counted == timedelta(minutes=clock.minutes)
        assert clock.due_at >= clock.started_at


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 3000), st.integers(0, 3000))
def test_deadlines_do_not_drift_while_nothing_happens(raw, a, c):
    events, last = history_from(raw)
    d1 = compute_deadlines(POLICY, events, last + timedelta(minutes=min(a, c)))
    d2 = compute_deadlines(POLICY, events, last + timedelta(minutes=max(a, c)))
    assert [(c.key, c.due_at, c.met_at) for c in d1.clocks] == [(c.key, c.due_at, c.met_at) for c in d2.clocks]


@settings(max_examples=100, deadline=None)
@given(steps, st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_a_ticking_timer_fires_each_alarm_at_most_once_and_never_early(raw, ticks):
    events, _ = history_from(raw)
    fired: set[tuple[str, str]] = set()
    now = b(13, 9, 30)
    for tick in ticks:
        now += timedelta(minutes=tick)
        d = compute_deadlines(POLICY, events, now)
        for alarm in due_alarms(d, POLICY, now, fired):
            assert alarm.key not in fired
            assert alarm.kind == "warning" or alarm.due_at <= now
            fired.add(alarm.key)
        assert due_alarms(d, POLICY, now, fired) == []
        upcoming = next_alarm_at(d, POLICY, fired)
        assert upcoming is None or upcoming > now


# --- report figures -------------------------------------------------------------------------------------

def test_compliance_counts():
    now = t(100)
    pairs = [(t(10), t(5)), (t(10), t(10)), (t(10), t(11)), (t(50), None), (t(200), None), (None, t(3))]
    figures = compliance(pairs, now)
    assert figures == Compliance(on_time=2, late=2, open=1)
    assert figures.percent == 50.0 and figures.judged == 4
    assert compliance([], now).percent is None


def test_nearest_rank_percentiles():
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    hundred = percentiles(range(1, 101))
    assert (hundred.count, hundred.p50, hundred.p90, hundred.p99) == (100, 50, 90, 99)
    assert percentiles([]) == percentiles(()) and percentiles([]).p50 is None
    assert percentiles([7]).p99 == 7
    assert percentile(range(1, 101), 7) == 7  # 7/100*100 is 7.000000000000001 in floats: rank must still be 7
    assert all(percentile(range(1, n + 1), p) == -(-p * n // 100) for n in range(1, 300) for p in range(1, 101))
    with pytest.raises(ValueError):
        percentile(values, 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0.1, 100))
def test_a_percentile_is_an_observed_value_covering_its_share(values, p):
    v = percentile(values, p)
    assert v in values
    assert sum(x <= v for x in values) >= p / 100 * len(values)
    assert sum(x < v for x in values) < p / 100 * len(values)
