"""Keep each ticket's SLA clocks and alarms in the store: record clock events, recompute deadlines, fire alarms once.

The pure engine (`mailgate.sla`) turns a ticket's clock history into deadlines; this module is the glue.
Filing code calls `record_and_recompute` (or `ticket_changed`) inside its own transaction, which appends
to `sla_events`, replays the history with `compute_deadlines` and stores the due and met times on the
ticket, its clocks in `sla_clocks` and `next_alarm_at` for the timer. The daemon's timer calls
`fire_due_alarms`: per due ticket, in one transaction, each warning or breach is recorded in
`sla_alarms` (its key is the primary key, so it fires once, across restarts), logged as an `sla_warning`
/ `sla_breach` event, and mailed to the team's escalation address and the assignee (a breach found only
after the target was met late is recorded, not mailed).

A ticket without a policy (or naming one no longer in rules.yaml) runs under the rules' policy called
"default" if there is one, else the built-in `DEFAULT_POLICY`: acknowledgement within 15 minutes, 24/7,
no other targets. Only a *relayed* agent reply counts as `agent_reply` (a `#note` or a commands-only mail
answers nobody). Every timestamp is UTC; arithmetic on local times happens only inside `mailgate.sla`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .compose import Composer, Party
from .config import Config
from .errors import StorageUnavailable
from .rules import Ruleset
from .sla import KINDS, Alarm, ClockEvent, Deadlines, SlaPolicy, compute_deadlines, due_alarms, next_alarm_at
from .store import Store, Ticket, Tx

log = logging.getLogger("mailgate.sla")

DEFAULT_POLICY = SlaPolicy(name="default")  # ack within 15 minutes, around the clock
RETRY_AFTER = timedelta(minutes=5)  # a ticket whose alarms cannot be computed is looked at again after this
TARGET_NAMES = {"ack": "acknowledgement", "first_response": "first response", "next_response": "next response",
                "resolution": "resolution"}


@dataclass(frozen=True)
class Fired:
    """One alarm the timer acted on: recorded always, mailed to `mailed_to` (empty when met late or nobody to tell)."""

    ticket_number: int
    alarm: Alarm
    mailed_to: tuple[str, ...]


def policy_for(ruleset: Ruleset, name: str | None) -> SlaPolicy:
    """The ticket's policy by name; the rules' "default" policy or DEFAULT_POLICY when it has none (or an unknown one)."""
    if name and name in ruleset.sla_policies:
        return ruleset.sla_policies[name]
    return ruleset.sla_policies.get("default", DEFAULT_POLICY)


def record_and_recompute(tx: Tx, number: int, kind: str, at: datetime, value: str | None = None, *,
                         ruleset: Ruleset, now: datetime | None = None) -> Deadlines:
    """Record one clock event (a `mailgate.sla.KINDS` name) on a ticket and store its recomputed deadlines."""
    if kind not in KINDS:
        raise ValueError(f"unknown clock event {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    tx.sla_event(number, kind, at, value)
    return recompute(tx, number, ruleset, now or at)


def ticket_changed(tx: Tx, number: int, *, before: Ticket, changes: Mapping[str, object], at: datetime,
                   ruleset: Ruleset, message: str | None = None) -> Deadlines | None:
    """Record what a filed mail did to the clock, then recompute once (call after the ticket row is updated).

    `message` is "customer_message" for a customer's mail on an existing ticket, "agent_reply" for an agent
    reply relayed to the customer, or None. `changes` are the ticket columns being set (status, priority,
    sla_policy count). A customer writing to a solved ticket gives `reopened` before `customer_message`; an
    agent's reply comes before the status its commands set (reply + #pending pauses after answering).
    """
    kinds: list[tuple[str, str | None]] = []
    status = changes.get("status")
    status_kind = _status_kind(before.status, str(status)) if status and status != before.status else None
    if message == "agent_reply":
        kinds.append(("agent_reply", None))
    if status_kind:
        kinds.append((status_kind, None))
    if message == "customer_message":
        kinds.append(("customer_message", None))
    if changes.get("priority") and changes["priority"] != before.priority:
        kinds.append(("priority", str(changes["priority"])))
    if "sla_policy" in changes and changes["sla_policy"] != before.sla_policy:
        kinds.append(("policy", str(changes["sla_policy"] or "")))
    if not kinds:
        return None
    for kind, value in kinds:
        tx.sla_event(number, kind, at, value)
    return recompute(tx, number, ruleset, at)


def _status_kind(old: str, new: str) -> str | None:
    if new in ("pending", "solved", "closed"):
        return new
    if new == "open":
        return "reopened" if old in ("solved", "closed") else "open" if old == "pending" else None
    return None  # "new": the clock already runs


def clock_events(tx: Tx, ticket: Ticket) -> list[ClockEvent]:
    """The ticket's clock history; a ticket filed before SLA tracking gets a `created` from its row."""
    events = [ClockEvent(at, kind, value) for at, kind, value in tx.sla_events(ticket.number)]
    if not any(e.kind == "created" for e in events):
        events.insert(0, ClockEvent(ticket.created_at, "created", ticket.priority))
    return events


def recompute(tx: Tx, number: int, ruleset: Ruleset, now: datetime) -> Deadlines:
    """Replay the ticket's history under its policy and store deadlines, met times, clocks and next alarm."""
    ticket = tx.ticket(number)
    if ticket is None:
        raise ValueError(f"no ticket #{number}")
    events = clock_events(tx, ticket)
    now = max([now, *(e.at for e in events)])
    policy = policy_for(ruleset, ticket.sla_policy)
    deadlines = compute_deadlines(policy, events, now)
    _save(tx, number, deadlines, events, next_alarm_at(deadlines, policy.for_priority(deadlines.priority),
                                                      tx.sla_fired(number)))
    return deadlines


def _save(tx: Tx, number: int, d: Deadlines, events: list[ClockEvent], next_alarm: datetime | None) -> None:
    created = next(e for e in events if e.kind == "created")
    ack = d.clock("ack")
    first = next((e.at for e in events if e.kind == "agent_reply"), None)
    tx.sla_save(number, {
        "sla_started_at": created.at, "ack_due_at": d.ack_due, "first_response_due_at": d.first_response_due,
        "resolution_due_at": d.resolution_due, "next_response_due_at": d.next_response_due,
        "ack_met_at": ack.met_at if ack else _first_ack(events), "first_response_met_at": first,
        "resolved_at": _resolved_at(events), "next_alarm_at": next_alarm, "sla_clock": d.status,
    }, [(c.key, c.target, c.started_at, c.minutes, c.due_at, c.met_at) for c in d.clocks])


def _first_ack(events: list[ClockEvent]) -> datetime | None:
    """When the customer was first acknowledged (ack mail or agent reply), even without an ack target."""
    return next((e.at for e in sorted(events, key=lambda e: e.at) if e.kind in ("acknowledged", "agent_reply")), None)


def _resolved_at(events: list[ClockEvent]) -> datetime | None:
    """When the ticket was last solved or closed, if no reopen came after (the clock's resolution met time)."""
    resolved = None
    for e in sorted(events, key=lambda e: e.at):
        if e.kind in ("solved", "closed") and resolved is None:
            resolved = e.at
        elif e.kind in ("open", "reopened"):
            resolved = None
    return resolved


# -- the timer -------------------------------------------------------------------------------------


def fire_due_alarms(store: Store, ruleset: Ruleset, composer: Composer, config: Config, now: datetime,
                    limit: int = 200) -> list[Fired]:
    """Act on every ticket whose next alarm is due at `now`: one transaction per ticket; returns what fired."""
    fired: list[Fired] = []
    for number in store.sla_due_tickets(now, limit):
        try:
            fired += store.transaction(lambda tx, n=number: _fire_ticket(tx, n, ruleset, composer, config, now))
        except StorageUnavailable:
            raise
        except Exception:  # one broken ticket (say, a template error) must not starve the others
            log.exception("sla: ticket %d: cannot check its alarms; trying again in %s", number, RETRY_AFTER)
            store.transaction(lambda tx, n=number: tx.sla_save(n, {"next_alarm_at": now + RETRY_AFTER}))
    for f in fired:
        log.log(logging.WARNING if f.alarm.kind == "breach" else logging.INFO,
                "sla %s ticket=%d target=%s due=%s%s", f.alarm.kind, f.ticket_number, f.alarm.target,
                f.alarm.due_at.isoformat(timespec="seconds"),
                f" met_late={f.alarm.met_at.isoformat(timespec='seconds')}" if f.alarm.met_at else
                f" mailed={','.join(f.mailed_to) or '-'}")
    return fired


def _fire_ticket(tx: Tx, number: int, ruleset: Ruleset, composer: Composer, config: Config, now: datetime) -> list[Fired]:
    ticket = tx.ticket(number)
    if ticket is None:
        return []
    events = clock_events(tx, ticket)
    policy = policy_for(ruleset, ticket.sla_policy)
    d = compute_deadlines(policy, events, max([now, *(e.at for e in events)]))
    effective = policy.for_priority(d.priority)
    already = tx.sla_fired(number)
    out: list[Fired] = []
    for alarm in due_alarms(d, effective, now, already):
        mailed: tuple[str, ...] = ()
        if alarm.met_at is None:
            mailed = _escalate(tx, ticket, alarm, d, policy, ruleset, composer, config, now)
        if not tx.sla_fire(number, clock=alarm.clock, kind=alarm.kind, target=alarm.target, due_at=alarm.due_at,
                           met_at=alarm.met_at, at=now, mailed_to=mailed):
            continue  # cannot happen inside this transaction; kept as the fire-once guarantee
        what = TARGET_NAMES.get(alarm.target, alarm.target)
        detail = (f"{what} due {alarm.due_at.isoformat(timespec='seconds')} [{alarm.clock}]; "
                  + (f"met late at {alarm.met_at.isoformat(timespec='seconds')} (recorded, not mailed)" if alarm.met_at
                     else f"mailed to {', '.join(mailed)}" if mailed else "no escalation address or assignee to mail"))
        tx.event(number, f"sla_{alarm.kind}", detail, at=now)
        already.add(alarm.key)
        out.append(Fired(number, alarm, mailed))
    _save(tx, number, d, events, next_alarm_at(d, effective, already))
    return out


def _escalate(tx: Tx, ticket: Ticket, alarm: Alarm, d: Deadlines, policy: SlaPolicy, ruleset: Ruleset,
              composer: Composer, config: Config, now: datetime) -> tuple[str, ...]:
    """Queue the escalation mail to the team's escalation address and the assignee; returns the recipients."""
    people: list[Party] = []
    team = ruleset.teams.get(ticket.team or "")
    if team and team.escalation:
        people.append(Party(f"{team.name} escalations", team.escalation))
    agent = ruleset.agents.get(ticket.assignee or "")
    if agent and agent.addresses and agent.addresses[0] not in {p.addr for p in people}:
        people.append(Party(agent.display_name, agent.addresses[0]))
    if not people:
        return ()
    clock = next((c for c in d.clocks if c.key == alarm.clock), None)
    remaining = _minutes_text(clock.remaining_minutes) if clock else ""
    what = TARGET_NAMES.get(alarm.target, alarm.target)
    due_text = alarm.due_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = composer.render("escalation.txt.j2", alarm=alarm.kind, ticket=ticket, target=what, due_at=due_text,
                           customer=ticket.customer, policy=policy.name, remaining=remaining)
    subject = f"SLA {alarm.kind}: {what} {'was' if alarm.kind == 'breach' else 'is'} due {due_text} on ticket #{ticket.number}" \
              f" ({ticket.subject})"
    support = config.support_addresses[0]
    out = composer.build(kind="escalation", sender=Party(config.support_name, support), to=people, subject=subject,
                         body=body, envelope_from=support, automatic=False, ticket_number=ticket.number, date=now,
                         extra_headers={"Auto-Submitted": "auto-generated", "X-Mailgate-Ticket": str(ticket.number),
                                        "X-Mailgate-SLA": f"{alarm.kind} {alarm.clock}"})
    tx.queue_mail(ticket_number=ticket.number, kind="escalation", message_id=out.message_id, mail_from=out.mail_from,
                  rcpt_to=out.rcpt_to, raw=out.raw, due_at=now, at=now)
    return out.rcpt_to


def _minutes_text(minutes: float) -> str:
    minutes = max(0, round(minutes))
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours else f"{rest} min"
