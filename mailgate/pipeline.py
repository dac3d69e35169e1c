"""process(spool_id): the ONE place where the steps are put in order — parse, screen, link, route, compose, file.

Everything a message causes (ticket, message, attachments, participants, events, outbox rows, spool
state) is written in ONE transaction, so a crash leaves either all of it or the spool row still
'spooled' for the next sweep. Processing a row twice changes nothing. An unexpected exception
quarantines the row with its traceback; `mailgate replay` puts it back.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import agents, slatrack
from .filing import FilingContext, queue_outbound, sender_name as _name, store_inbound
from .compose import Composer, Outbound, Party, Threading, deliverable, resent_copy, tagged_subject
from .config import Config
from .errors import StorageUnavailable
from .message import Inbound, Mail, parse
from .replytext import visible_reply
from .rules import Decision, RuleContext, Ruleset, decide
from .screen import Verdict, screen
from .store import SpoolEntry, Store, Tx, utcnow
from .threader import Link, ThreadingSettings, base_address, link, reply_address

log = logging.getLogger("mailgate.pipeline")


@dataclass(frozen=True)
class Outcome:
    """What became of one spooled message (logged as one line)."""

    spool_id: int
    state: str  # ticketed | followup | agent_reply | duplicate | spam | bounce | quarantined | skipped
    message_id: str = ""
    ticket_number: int | None = None
    detail: str = ""
    acknowledged: bool = False


@dataclass(frozen=True)
class Runtime:
    """What the pipeline reads that can be reloaded while the daemon runs (rules, templates)."""

    ruleset: Ruleset
    composer: Composer


class Pipeline:
    """Turns spooled raw messages into filed tickets."""

    def __init__(self, store: Store, config: Config, runtime: Callable[[], Runtime], secret: str,
                 clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.config = config
        self.runtime = runtime
        self.secret = secret
        self.clock = clock
        self.own_addresses = frozenset(a.lower() for a in config.support_addresses)

    # -- entry points ---------------------------------------------------------------------------

    def process_pending(self, limit: int = 100) -> list[Outcome]:
        return [self.process(sid) for sid in self.store.pending_spool_ids(limit)]

    def process(self, spool_id: int) -> Outcome:
        """File one spooled message; never raises but StorageUnavailable (the row then stays spooled)."""
        started = time.perf_counter()
        entry = self.store.spool_entry(spool_id)
        if entry is None or entry.state != "spooled":
            return Outcome(spool_id, "skipped", detail=f"state is {entry.state if entry else 'missing'}")
        message_id = ""
        try:
            mail = parse(entry.inbound.raw)
            message_id = mail.message_id
            verdict = screen(mail, entry.inbound, self.own_addresses, self.config.trusted_authserv_id)
            runtime = self.runtime()
            outcome = self.store.transaction(lambda tx: self._file(tx, entry, mail, verdict, runtime), durable=False)
        except StorageUnavailable:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            self.store.quarantine(spool_id, error)
            outcome = Outcome(spool_id, "quarantined", message_id, detail=f"{type(exc).__name__}: {exc}")
            log.error("message spool=%d source=%s message-id=<%s> outcome=quarantined error=%r (fix, then `mailgate replay %d`)",
                      spool_id, entry.inbound.source, message_id, str(exc), spool_id)
            return outcome
        log.info("message spool=%d source=%s message-id=<%s> outcome=%s ticket=%s ack=%s duration_ms=%.1f",
                 spool_id, entry.inbound.source, outcome.message_id, outcome.state, outcome.ticket_number or "-",
                 "queued" if outcome.acknowledged else "no", (time.perf_counter() - started) * 1000)
        return outcome

    # -- the one transaction ----------------------------------------------------------------------

    def _file(self, tx: Tx, entry: SpoolEntry, mail: Mail, verdict: Verdict, rt: Runtime) -> Outcome:
        sid, now = entry.id, self.clock()
        if tx.spool_state(sid) != "spooled":  # another worker or process got here first
            return Outcome(sid, "skipped", mail.message_id, detail="already processed")

        existing = tx.message_ticket(mail.message_id)
        if existing is not None:
            tx.set_spool_state(sid, "duplicate", message_id=mail.message_id, ticket_number=existing[0])
            tx.event(existing[0], "duplicate", f"<{mail.message_id}> delivered again via {entry.inbound.source}; ignored",
                     spool_id=sid)
            return Outcome(sid, "duplicate", mail.message_id, existing[0], "same Message-ID already stored")

        for check in verdict.checks:
            if check.hit:
                tx.event(None, "screen", f"<{mail.message_id}> {check.name}: {check.reason}", spool_id=sid)

        if verdict.is_bounce:
            return self._file_bounce(tx, entry, mail, verdict, rt)

        settings = ThreadingSettings(self.config.support_addresses, self.config.subject_tag, self.secret,
                                     is_agent=rt.ruleset.is_agent)
        linked = link(mail, entry.inbound, tx, settings)

        if rt.ruleset.is_agent(mail.sender) and linked.ticket_number is not None and linked.evidence != "none":
            # agents.py decides whether the evidence is an agent's own (token, notification) or only a claim
            filed = agents.file_agent_reply(self._context(tx, entry, mail, verdict, rt), linked)
            tx.set_spool_state(sid, "done", message_id=mail.message_id, ticket_number=linked.ticket_number)
            return Outcome(sid, filed.state, mail.message_id, linked.ticket_number, filed.detail)

        if (linked.ticket_number is not None and not linked.sender_known and linked.evidence == "references"
                and self.config.autoreply.strangers_by_reference == "new_ticket"):
            linked = Link(None, "none", f"{linked.detail}, but the sender is not a participant and policy opens a new ticket",
                          False, claimed_ticket=linked.ticket_number)

        ctx = RuleContext(rcpt_to=tuple(a.lower() for a in entry.inbound.rcpt_to), is_reply=linked.ticket_number is not None,
                          customer_known=tx.customer_known(mail.sender), now=now, auth=verdict.auth)
        decision = decide(rt.ruleset, mail, ctx, tx, explain=False)

        if decision.spam:
            store_inbound(self._context(tx, entry, mail, verdict, rt), None, "spam")
            hits = "; ".join(f"{h.rule}: {h.did}" for h in decision.hits)
            tx.event(None, "spam", f"<{mail.message_id}> from {mail.sender} held as spam by rules ({hits})", spool_id=sid)
            tx.set_spool_state(sid, "spam", message_id=mail.message_id)
            return Outcome(sid, "spam", mail.message_id, None, hits)

        if linked.ticket_number is None:
            return self._file_new(tx, entry, mail, verdict, rt, linked, decision)
        return self._file_followup(tx, entry, mail, verdict, rt, linked, decision)

    def _context(self, tx: Tx, entry: SpoolEntry, mail: Mail, verdict: Verdict, rt: Runtime) -> FilingContext:
        return FilingContext(tx=tx, spool_id=entry.id, inbound=entry.inbound, mail=mail, verdict=verdict, ruleset=rt.ruleset,
                             composer=rt.composer, config=self.config, secret=self.secret, now=self.clock())

    def _add_copied_people(self, tx: Tx, number: int, mail: Mail, rt: Runtime, extra_cc: tuple[str, ...] = ()) -> None:
        """To/Cc addresses of a customer's mail (not ours, not agents) become receiving participants."""
        for addr in mail.to + mail.cc:
            if not addr.addr or base_address(addr.addr) in self.own_addresses or rt.ruleset.is_agent(addr.addr):
                continue
            if tx.add_participant(number, addr.addr, addr.name, "cc", True):
                tx.event(number, "participant_added", f"{addr.addr} (copied on the customer's mail)")
        for addr in extra_cc:
            if tx.add_participant(number, addr.lower(), "", "cc", True):
                tx.event(number, "participant_added", f"{addr} (by rule)")

    def _file_new(self, tx: Tx, entry: SpoolEntry, mail: Mail, verdict: Verdict, rt: Runtime, linked: Link,
                  decision: Decision) -> Outcome:
        sid, now = entry.id, self.clock()
        customer = mail.sender or (entry.inbound.mail_from or "").lower() or "unknown@invalid"
        assignee = decision.agent
        number = tx.create_ticket(subject=mail.subject or "(no subject)", customer=customer, customer_name=_name(mail),
                                  priority=decision.priority, team=decision.team, assignee=assignee,
                                  sla_policy=decision.sla_policy, tags=decision.tags, at=now)
        ctx = self._context(tx, entry, mail, verdict, rt)
        store_inbound(ctx, number, "customer")
        tx.add_participant(number, customer, _name(mail), "customer", True)
        self._add_copied_people(tx, number, mail, rt, decision.cc)
        tx.event(number, "received", f"<{mail.message_id}> from {customer} via {entry.inbound.source}", spool_id=sid)
        tx.event(number, "threading", f"new ticket: {linked.detail}", spool_id=sid)
        for hit in decision.hits:
            tx.event(number, "rule_matched", f"{hit.rule}: {hit.did}", spool_id=sid)
        if decision.team or assignee:
            tx.event(number, "assigned", f"team={decision.team or '-'} agent={assignee or '-'}")

        policy = rt.ruleset.sla_policies.get(decision.sla_policy or "") if decision.sla_policy else None
        ack_due = slatrack.record_and_recompute(tx, number, "created", min(entry.inbound.received_at, now), decision.priority,
                                                ruleset=rt.ruleset, now=now).ack_due or now

        acknowledged = False
        if decision.ack_template and self._may_auto_reply(tx, number, customer, verdict, mail):
            ticket = tx.ticket(number)
            out, body = self._ack(rt, ticket, mail, decision.ack_template, policy)
            queue_outbound(ctx, out, subject=tagged_subject(mail.subject, number, self.config.subject_tag), text=body,
                           due_at=ack_due)
            tx.event(number, "ack_queued", f"template {decision.ack_template} to {customer}")
            acknowledged = True
        elif not decision.ack_template:
            tx.event(number, "ack_skipped", "rules say no acknowledgement")
        if not acknowledged:
            slatrack.record_and_recompute(tx, number, "ack_skipped", now, ruleset=rt.ruleset)

        for fwd in decision.forward_to:
            self._queue_forward(tx, number, entry, mail, fwd)
        agents.notify_agents(ctx, number, "New ticket", decision)
        tx.set_spool_state(sid, "done", message_id=mail.message_id, ticket_number=number)
        return Outcome(sid, "ticketed", mail.message_id, number, linked.detail, acknowledged)

    def _file_followup(self, tx: Tx, entry: SpoolEntry, mail: Mail, verdict: Verdict, rt: Runtime, linked: Link,
                       decision: Decision) -> Outcome:
        sid, number = entry.id, linked.ticket_number
        assert number is not None
        ticket = tx.ticket(number)
        assert ticket is not None
        ctx = self._context(tx, entry, mail, verdict, rt)
        store_inbound(ctx, number, "customer", stripped=visible_reply(mail.text, mail.sender))
        tx.event(number, "received", f"<{mail.message_id}> from {mail.sender} via {entry.inbound.source}", spool_id=sid)
        tx.event(number, "threading", f"follow-up: {linked.detail}", spool_id=sid)
        if linked.sender_known:
            self._add_copied_people(tx, number, mail, rt, decision.cc)
        elif mail.sender and tx.add_participant(number, mail.sender, _name(mail), "observer", False):
            tx.event(number, "participant_added", f"{mail.sender} wrote in without being on the ticket ({linked.evidence});"
                     " kept as an observer who does not receive replies")
        for hit in decision.hits:
            tx.event(number, "rule_matched", f"{hit.rule}: {hit.did}", spool_id=sid)
        changes: dict[str, object] = {}
        if ticket.status in ("solved", "closed", "pending") or decision.reopen:
            if ticket.status != "open":
                changes["status"] = "open"
                tx.event(number, "status_changed", f"{ticket.status} -> open (customer wrote again)")
        if "priority" in decision.explicit and decision.priority != ticket.priority:
            changes["priority"] = decision.priority
            tx.event(number, "priority_changed", f"{ticket.priority} -> {decision.priority} (rules)")
        if decision.tags and not set(decision.tags) <= set(ticket.tags):
            changes["tags"] = tuple(ticket.tags) + tuple(decision.tags)
        if changes:
            tx.update_ticket(number, **changes)  # type: ignore[arg-type]
        slatrack.ticket_changed(tx, number, before=ticket, changes=changes, at=ctx.now, ruleset=rt.ruleset,
                                message="customer_message")
        for fwd in decision.forward_to:
            self._queue_forward(tx, number, entry, mail, fwd)
        agents.notify_agents(ctx, number, "Customer replied", decision)
        tx.set_spool_state(sid, "done", message_id=mail.message_id, ticket_number=number)
        return Outcome(sid, "followup", mail.message_id, number, linked.detail)

    def _file_bounce(self, tx: Tx, entry: SpoolEntry, mail: Mail, verdict: Verdict, rt: Runtime) -> Outcome:
        number = None
        for mid in verdict.bounced_message_ids:
            found = tx.message_ticket(mid)
            if found and found[0] is not None:
                number = found[0]
                break
        store_inbound(self._context(tx, entry, mail, verdict, rt), number, "bounce")
        who = ", ".join(verdict.bounced_recipients) or "unknown recipient"
        for addr in verdict.bounced_recipients:
            tx.mark_bouncing(addr, mail.message_id)
        tx.event(number, "bounce", f"delivery to {who} failed (<{mail.message_id}>); address marked as bouncing", spool_id=entry.id)
        tx.set_spool_state(entry.id, "done", message_id=mail.message_id, ticket_number=number)
        return Outcome(entry.id, "bounce", mail.message_id, number, f"bounce for {who}")

    # -- automatic mail ---------------------------------------------------------------------------

    def _may_auto_reply(self, tx: Tx, number: int, address: str, verdict: Verdict, mail: Mail) -> bool:
        """RFC 3834 screen + our own limits: one ack per sender per ticket, a daily cap, a circuit breaker."""
        if not verdict.may_auto_reply:
            reasons = "; ".join(c.reason for c in verdict.checks if c.hit)
            tx.event(number, "ack_suppressed", reasons or "screen forbids automatic mail")
            return False
        if deliverable(address) is None or base_address(address) in self.own_addresses:
            tx.event(number, "ack_suppressed", f"no usable sender address ({address!r})")
            return False
        if tx.is_bouncing(address):
            tx.event(number, "ack_suppressed", f"{address} is marked as bouncing")
            return False
        limits, now = self.config.autoreply, self.clock()
        if tx.auto_mails_to(address, ticket_number=number) >= 1:
            tx.event(number, "ack_suppressed", f"{address} was already acknowledged on this ticket")
            return False
        if tx.auto_mails_to(address, now - timedelta(hours=24)) >= limits.daily_cap_per_sender:
            tx.event(number, "ack_suppressed", f"{address} reached the cap of {limits.daily_cap_per_sender} automatic mails in 24 h")
            return False
        if tx.auto_mails_to(address, now - timedelta(minutes=limits.breaker_minutes)) >= limits.breaker_mails:
            tx.event(number, "circuit_breaker", f"{address} received {limits.breaker_mails}+ automatic mails in"
                     f" {limits.breaker_minutes} min; automatic mail to it stopped")
            log.warning("circuit breaker: automatic mail to %s stopped (ticket %d)", address, number)
            return False
        return True

    def _ack(self, rt: Runtime, ticket, mail: Mail, template: str, policy) -> tuple[Outbound, str]:  # type: ignore[no-untyped-def]
        cfg = self.config
        promised = _promise(policy.first_response_within) if policy and policy.first_response_within else ""
        body = rt.composer.render(f"{template}.txt.j2", ticket=ticket, customer=ticket.customer,
                                  customer_name=ticket.customer_name, support_name=cfg.support_name,
                                  subject_tag=cfg.subject_tag, promised_response=promised)
        support = cfg.support_addresses[0]
        refs = tuple(mail.references[-10:]) + (mail.message_id,)
        return rt.composer.build(
            kind="ack", sender=Party(cfg.support_name, support), to=[Party(ticket.customer_name, ticket.customer)],
            subject=tagged_subject(mail.subject, ticket.number, cfg.subject_tag), body=body, envelope_from="",
            reply_to=Party(cfg.support_name, reply_address(support, ticket.number, self.secret)),
            threading=Threading(in_reply_to=mail.message_id, references=refs, thread_index=mail.header("Thread-Index"),
                                topic=mail.header("Thread-Topic") or mail.subject),
            automatic=True, ticket_number=ticket.number), body

    def _queue_forward(self, tx: Tx, number: int, entry: SpoolEntry, mail: Mail, to: str) -> None:
        support = self.config.support_addresses[0]
        raw = resent_copy(entry.inbound.raw, resent_from=support, resent_to=to, loop_domain=self.config.domain,
                          date=self.clock())
        tx.queue_mail(ticket_number=number, kind="forward", message_id=mail.message_id, mail_from=support, rcpt_to=[to],
                      raw=raw, due_at=self.clock())
        tx.event(number, "forwarded", f"copy queued to {to}")


def _promise(minutes: int) -> str:
    if minutes % (60 * 24) == 0:
        days = minutes // (60 * 24)
        return f"within {days} business day{'s' if days != 1 else ''}"
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"within {hours} business hour{'s' if hours != 1 else ''}"
    return f"within {minutes} minutes"


def inbound_now(raw: bytes, source: str, **envelope: object) -> Inbound:
    """An Inbound stamped with the current time (for sources that receive one message at a time)."""
    return Inbound(raw=raw, source=source, received_at=utcnow(), **envelope)  # type: ignore[arg-type]
