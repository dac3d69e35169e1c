"""Ticket SLA clocks: deadlines as a pure function of a ticket's history, and which alarms are due.

`compute_deadlines(policy, events, now)` replays the ticket's SLA-relevant events from scratch, so a
change of policy, priority or status is handled by calling it again. The rules it applies:

* The ticket's clock runs from ``created`` while the status is open. ``pending`` (waiting on the
  customer) stops it until the customer writes again (``customer_message``) or an agent sets the
  ticket ``open``/``reopened``; ``solved`` and ``closed`` stop it until ``reopened``/``open``.
  A stopped span is not counted, so it pushes every running deadline back by its business length.
* ack: from ``created`` until the first ``acknowledged`` or ``agent_reply`` (a human answer
  acknowledges too); ``ack_skipped`` (no acknowledgement by design: rule, auto-reply, cap) drops it.
  first_response: from ``created`` until the first ``agent_reply``.
  resolution: from ``created`` until ``solved``/``closed``; a reopen resumes it.
  next_response: after the first agent reply, the first customer message not yet answered starts a
  clock that the next ``agent_reply`` meets; one clock per such cycle.
* Targets come from ``policy.for_priority(priority)``, the priority being the value of the latest
  ``priority`` event (or of ``created``); they apply from ``created`` whatever the change time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from .hours import UTC, BusinessCalendar, _utc
from .policy import SlaPolicy

KINDS = frozenset({"created", "customer_message", "agent_reply", "acknowledged", "ack_skipped", "pending", "open",
                   "solved", "closed", "reopened", "priority", "policy"})
Span = tuple[datetime, "datetime | None"]  # a span when the clock ran; None = still running


@dataclass(frozen=True)
class ClockEvent:
    """One SLA-relevant fact of a ticket's history; `value` is the new priority (priority, created) or policy name."""

    at: datetime
    kind: str
    value: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown clock event {self.kind!r}; expected one of {', '.join(sorted(KINDS))}")
        object.__setattr__(self, "at", _utc(self.at))


@dataclass(frozen=True)
class TargetClock:
    """One target's clock on one ticket; `due_at` is None while the clock is stopped and not met."""

    target: str  # ack | first_response | next_response | resolution
    key: str  # unique per ticket: the target, or next_response@<start> for each next-response cycle
    started_at: datetime
    minutes: int
    due_at: datetime | None
    met_at: datetime | None
    elapsed_minutes: float  # business minutes counted up to met_at, or up to now when unmet
    spans: tuple[Span, ...]  # when the clock ran (or, once met, would run on): the basis of due and warnings

    @property
    def paused(self) -> bool:
        """Unmet and stopped (pending, solved or closed): no due instant until it runs again."""
        return self.met_at is None and self.due_at is None

    @property
    def remaining_minutes(self) -> float:
        """Business minutes left (negative when overdue), as of met_at or now."""
        return self.minutes - self.elapsed_minutes

    def breached(self, now: datetime) -> bool:
        """Met after its due time, or unmet with its due time passed."""
        if self.due_at is None:
            return False
        return self.met_at > self.due_at if self.met_at is not None else _utc(now) >= self.due_at


@dataclass(frozen=True)
class Deadlines:
    """A ticket's SLA state at `now`; the *_due fields are what the store keeps on the ticket row."""

    policy: str
    priority: str | None
    status: str  # the clock's view: open | pending | solved | closed
    now: datetime
    ack_due: datetime | None  # kept after it is met, for compliance
    first_response_due: datetime | None  # kept after it is met
    resolution_due: datetime | None  # kept after it is met
    next_response_due: datetime | None  # only while a next-response clock waits for an answer
    clocks: tuple[TargetClock, ...] = ()

    @property
    def paused(self) -> bool:
        """Whether the ticket's clock is stopped right now."""
        return self.status != "open"

    def clock(self, target: str) -> TargetClock | None:
        """The latest clock of a target (ack, first_response, next_response, resolution), if any."""
        found = [c for c in self.clocks if c.target == target]
        return found[-1] if found else None


@dataclass(frozen=True)
class Alarm:
    """A warning or breach to act on once; `key` is what the store records as fired."""

    target: str
    kind: str  # warning | breach
    due_at: datetime
    clock: str  # TargetClock.key
    met_at: datetime | None = None  # set for a breach found only after the target was met late

    @property
    def key(self) -> tuple[str, str]:
        """(clock key, kind): the identity under which this alarm fires once."""
        return (self.clock, self.kind)


def compute_deadlines(policy: SlaPolicy, events: Sequence[ClockEvent], now: datetime) -> Deadlines:
    """Replay `events` (those after `now` are ignored) under `policy` into the ticket's clocks and deadlines."""
    now = _utc(now)
    history = sorted((e for e in events if e.at <= now), key=lambda e: e.at)  # stable: same-instant order kept
    created = next((e for e in history if e.kind == "created"), None)
    if created is None:
        raise ValueError("a ticket's clock history needs a 'created' event")
    history = [e for e in history if e.at >= created.at]
    priority = created.value
    status, running = "open", [(created.at, None)]
    ack_met = first_met = solved_at = None
    ack_skipped = False
    cycles: list[tuple[datetime, datetime | None]] = []  # next-response clocks: (start, met)

    def stop(at: datetime, to: str) -> None:
        nonlocal status
        if status == "open":
            running[-1] = (running[-1][0], at)
        status = to

    def run(at: datetime) -> None:
        nonlocal status
        if status != "open":
            running.append((at, None))
        status = "open"

    for e in history:
        if e.kind == "priority":
            priority = e.value
        elif e.kind == "ack_skipped":
            ack_skipped = ack_met is None
        elif e.kind in ("acknowledged", "agent_reply") and ack_met is None:
            ack_met = e.at
        if e.kind == "agent_reply":
            if first_met is None:
                first_met = e.at
            elif cycles and cycles[-1][1] is None:
                cycles[-1] = (cycles[-1][0], e.at)
        elif e.kind == "customer_message":
            if status == "pending":
                run(e.at)
            if first_met is not None and (not cycles or cycles[-1][1] is not None):
                cycles.append((e.at, None))
        elif e.kind == "pending" and status == "open":
            stop(e.at, "pending")
        elif e.kind in ("solved", "closed"):
            if status not in ("solved", "closed"):
                solved_at = e.at
            stop(e.at, e.kind)
        elif e.kind in ("open", "reopened"):
            run(e.at)
            solved_at = None

    effective = policy.for_priority(priority)
    cal = effective.calendar
    clocks: list[TargetClock] = []

    def add(target: str, key: str, start: datetime, met: datetime | None) -> None:
        minutes = effective.target(target)
        if minutes is None:
            return
        stop_at = met if met is not None else now
        spans = _clip(running, start, stop_at)
        elapsed = sum((cal.between(a, b) for a, b in spans), timedelta(0))
        if met is not None or status == "open":  # project the clock forward from where it stands
            if spans and spans[-1][1] == stop_at:
                spans[-1] = (spans[-1][0], None)
            else:
                spans.append((stop_at, None))
        due = reach(cal, spans, timedelta(minutes=minutes))
        clocks.append(TargetClock(target, key, start, minutes, due, met, elapsed / timedelta(minutes=1), tuple(spans)))

    if not ack_skipped:
        add("ack", "ack", created.at, ack_met)
    add("first_response", "first_response", created.at, first_met)
    add("resolution", "resolution", created.at, solved_at)
    for start, met in cycles:
        add("next_response", f"next_response@{start.isoformat()}", start, met)

    def due(target: str) -> datetime | None:
        found = [c for c in clocks if c.target == target]
        return found[-1].due_at if found else None

    last_cycle = [c for c in clocks if c.target == "next_response"][-1:]
    return Deadlines(
        policy=policy.name, priority=priority, status=status, now=now,
        ack_due=due("ack"), first_response_due=due("first_response"), resolution_due=due("resolution"),
        next_response_due=last_cycle[0].due_at if last_cycle and last_cycle[0].met_at is None else None,
        clocks=tuple(clocks))


def _clip(running: list[Span], start: datetime, stop: datetime) -> list[Span]:
    """The running spans cut to [start, stop]; a still-running span ends at stop."""
    out: list[Span] = []
    for a, b in running:
        lo, hi = max(a, start), min(b if b is not None else stop, stop)
        if hi > lo:
            out.append((lo, hi))
    return out


def reach(cal: BusinessCalendar, spans: Sequence[Span], need: timedelta) -> datetime | None:
    """The instant at which `need` business time has been counted over `spans` (None if they run out first)."""
    for a, b in spans:
        if b is None:
            return cal.add(a, need)
        got = cal.between(a, b)
        if need <= got:
            return cal.add(a, need)
        need -= got
    return None


def due_alarms(deadlines: Deadlines, policy: SlaPolicy, now: datetime,
               already_fired: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> list[Alarm]:
    """Warnings and breaches due at `now` that are not in `already_fired` (keys as in `Alarm.key`).

    A warning comes when `policy.warn_at` of a target's business time is used; once the target is
    breached only the breach is raised. Stopped clocks raise nothing. A target met late whose breach was
    never fired (the daemon was down) yields that breach with `met_at` set: record it, skip the mail.
    """
    now = _utc(now)
    alarms: list[Alarm] = []
    for clock in deadlines.clocks:
        if clock.due_at is None:
            continue
        if clock.met_at is not None:
            if clock.met_at > clock.due_at and (clock.key, "breach") not in already_fired:
                alarms.append(Alarm(clock.target, "breach", clock.due_at, clock.key, clock.met_at))
            continue
        if now >= clock.due_at:
            if (clock.key, "breach") not in already_fired:
                alarms.append(Alarm(clock.target, "breach", clock.due_at, clock.key))
        elif (clock.key, "warning") not in already_fired:
            warn = _warn_at(clock, policy)
            if warn is not None and now >= warn:
                alarms.append(Alarm(clock.target, "warning", clock.due_at, clock.key))
    return alarms


def next_alarm_at(deadlines: Deadlines, policy: SlaPolicy,
                  already_fired: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> datetime | None:
    """The earliest instant at which `due_alarms` would have something to raise (for the daemon's timer)."""
    times: list[datetime] = []
    for clock in deadlines.clocks:
        if clock.due_at is None or (clock.key, "breach") in already_fired:
            continue
        if clock.met_at is not None:
            if clock.met_at > clock.due_at:
                times.append(deadlines.now)
            continue
        times.append(clock.due_at)
        if (clock.key, "warning") not in already_fired and (warn := _warn_at(clock, policy)) is not None:
            times.append(warn)
    return min(times, default=None)


def _warn_at(clock: TargetClock, policy: SlaPolicy) -> datetime | None:
    instant = reach(policy.calendar, clock.spans, timedelta(minutes=clock.minutes * policy.warn_at))
    return instant.astimezone(UTC) if instant is not None else None
