"""Agents by mail: notifications to agents, their replies recognised, commands obeyed, text relayed to the customer.

An agent's mail counts as a reply only when it comes From an agent address AND links to the ticket by a
valid reply token or a reference to mail we sent; with a trusted authserv-id it must also pass DKIM or
DMARC. Otherwise it is never relayed. The agent's own address is never shown to the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .compose import Party, Threading, tagged_subject
from .filing import FilingContext, queue_outbound, sender_name, store_inbound
from . import replytext
from .rules import Decision
from .store import Ticket
from .threader import Link, base_address, reply_address

PRIORITIES = ("low", "normal", "high", "urgent")
STATUS_COMMANDS = {"close": "closed", "reopen": "open", "pending": "pending", "solve": "solved"}


@dataclass(frozen=True)
class AgentFiling:
    state: str  # agent_reply | agent_note | agent_unverified
    detail: str


def _agent_party(ctx: FilingContext, agent_name: str) -> Party:
    return Party(f"{agent_name} ({ctx.config.support_name})", ctx.support_address)


def notify_agents(ctx: FilingContext, number: int, event: str, decision: Decision) -> int:
    """Mail the assignee (or the team's present members) about a customer's mail; returns how many were queued."""
    if not ctx.verdict.may_auto_reply:
        return 0
    tx, cfg = ctx.tx, ctx.config
    ticket = tx.ticket(number)
    assert ticket is not None
    people = []
    if ticket.assignee and ticket.assignee in ctx.ruleset.agents:
        people = [ctx.ruleset.agents[ticket.assignee]]
    elif ticket.team:
        people = [a for a in ctx.ruleset.team_members(ticket.team) if not a.away]
    people = [a for a in people if a.addresses and a.addresses[0] != ctx.mail.sender]
    if not people:
        return 0
    mail = ctx.mail
    text = replytext.visible_reply(mail.text, mail.sender) if event != "New ticket" else mail.text
    due = tx.ticket_due(number)
    body = ctx.composer.render("agent_notification.txt.j2", event=event, ticket=ticket, customer=mail.sender,
                               customer_name=sender_name(mail) or mail.sender, text=text, sla_due=due or "",
                               rules=[h.rule for h in decision.hits])
    subject = tagged_subject(mail.subject or ticket.subject, number, cfg.subject_tag)
    name = sender_name(mail) or mail.sender
    out = ctx.composer.build(
        kind="notification", sender=Party(f"{name} via {cfg.support_name}", ctx.support_address),
        to=[Party(a.display_name, a.addresses[0]) for a in people], subject=subject, body=body,
        envelope_from=ctx.support_address, reply_to=Party(cfg.support_name, reply_address(ctx.support_address, number, ctx.secret)),
        threading=Threading(in_reply_to=mail.message_id, references=tuple(mail.references[-10:]) + (mail.message_id,),
                            thread_index=mail.header("Thread-Index"), topic=ticket.subject),
        automatic=False, ticket_number=number, extra_headers={"X-Mailgate-Ticket": str(number)},
        attachments=[(a.filename, a.content_type, a.content) for a in mail.attachments if not a.inline])
    queue_outbound(ctx, out, subject=subject, text=body, due_at=ctx.now)
    tx.event(number, "agents_notified", ", ".join(a.name for a in people))
    return 1


def _verified(ctx: FilingContext) -> tuple[bool, str]:
    if not ctx.config.trusted_authserv_id:
        return True, "no authserv-id configured"
    if ctx.verdict.auth == "pass":
        return True, f"Authentication-Results from {ctx.config.trusted_authserv_id}: pass"
    return False, (f"no dkim=pass or dmarc=pass for {ctx.mail.sender} in Authentication-Results from"
                   f" {ctx.config.trusted_authserv_id} (got {ctx.verdict.auth})")


def file_agent_reply(ctx: FilingContext, linked: Link) -> AgentFiling:
    """Store an agent's reply, obey its commands, and relay its text to the customer unless it is a note."""
    tx, mail, cfg = ctx.tx, ctx.mail, ctx.config
    number = linked.ticket_number
    assert number is not None
    agent = ctx.ruleset.agent_by_address(mail.sender)
    assert agent is not None
    ticket = tx.ticket(number)
    assert ticket is not None

    visible = replytext.visible_reply(mail.text, mail.sender)
    commands, rest = replytext.strip_commands(visible)
    ok, why = _verified(ctx)
    if not ok:
        store_inbound(ctx, number, "agent_note", stripped=visible)
        tx.event(number, "agent_unverified", f"{agent.name}: {why}; held as an internal note, not relayed", spool_id=ctx.spool_id)
        _mail_agent(ctx, agent, ticket, [f"Your reply was NOT sent to the customer: {why}."], relayed=False)
        return AgentFiling("agent_unverified", why)

    note = any(c.name == "note" for c in commands)
    errors: list[str] = []
    changes: dict[str, object] = {}
    for cmd in commands:
        if cmd.name == "note":
            continue
        if cmd.name in STATUS_COMMANDS:
            changes["status"] = STATUS_COMMANDS[cmd.name]
        elif cmd.name == "priority":
            if cmd.argument.lower() in PRIORITIES:
                changes["priority"] = cmd.argument.lower()
            else:
                errors.append(f"{cmd.line}: priority must be one of {', '.join(PRIORITIES)}")
        elif cmd.name == "assign":
            target = cmd.argument.strip()
            if target in ctx.ruleset.agents:
                changes["assignee"] = target
                changes["team"] = ctx.ruleset.agents[target].team or ticket.team
            elif target in ctx.ruleset.teams:
                changes["team"], changes["assignee"] = target, None
            else:
                errors.append(f"{cmd.line}: no agent or team called {target!r}")
        elif cmd.name == "tag":
            if cmd.argument.strip():
                changes["tags"] = tuple(changes.get("tags", ticket.tags)) + (cmd.argument.strip(),)  # type: ignore[operator]
            else:
                errors.append(f"{cmd.line}: #tag needs a name")
        else:
            errors.append(f"{cmd.line}: unknown command")

    kind = "agent_note" if note else "agent_reply"
    store_inbound(ctx, number, kind, stripped=rest)
    tx.event(number, kind, f"from {agent.name} ({linked.detail})", spool_id=ctx.spool_id)
    for key, value in changes.items():
        old = getattr(ticket, key if key != "tags" else "tags")
        tx.event(number, f"{key}_changed", f"{old} -> {value} (#{key} by {agent.name})")
    relayed = False
    if not note and rest.strip():
        _relay(ctx, agent, ticket, rest)
        relayed = True
        if tx.first_response_at(number) is None:
            changes["first_response_at"] = ctx.now
            tx.event(number, "first_response", f"by {agent.name}")
        if "status" not in changes and ticket.status == "new":
            changes["status"] = "open"
    if changes.get("status") == "solved":
        changes["solved_at"] = ctx.now
    if changes.get("status") == "closed":
        changes["closed_at"] = ctx.now
    if changes:
        tx.update_ticket(number, **changes)  # type: ignore[arg-type]
    if errors:
        _mail_agent(ctx, agent, ticket, errors, relayed=relayed)
    return AgentFiling(kind, f"{agent.name}: {'relayed' if relayed else 'not relayed'}; commands: "
                       f"{', '.join(c.name for c in commands) or 'none'}")


def _relay(ctx: FilingContext, agent, ticket: Ticket, text: str) -> None:  # type: ignore[no-untyped-def]
    tx, cfg, mail = ctx.tx, ctx.config, ctx.mail
    number = ticket.number
    recipients = [p for p in tx.participants(number) if p.receives and p.role in ("customer", "cc")
                  and base_address(p.address) not in {a.lower() for a in cfg.support_addresses}
                  and not ctx.ruleset.is_agent(p.address)]
    if not recipients:
        tx.event(number, "relay_skipped", "no participant receives replies")
        return
    customer = [p for p in recipients if p.role == "customer"] or recipients[:1]
    others = [p for p in recipients if p not in customer]
    body = ctx.composer.render("relay.txt.j2", text=text.strip(), agent_name=agent.display_name, ticket=ticket,
                               support_name=cfg.support_name)
    last = tx.last_inbound_message_id(number)
    refs = tuple(tx.thread_message_ids(number))
    subject = tagged_subject(ticket.subject, number, cfg.subject_tag)
    out = ctx.composer.build(
        kind="relay", sender=_agent_party(ctx, agent.display_name), to=[Party(p.name, p.address) for p in customer],
        cc=[Party(p.name, p.address) for p in others] or None, subject=subject, body=body, envelope_from=ctx.support_address,
        reply_to=Party(cfg.support_name, reply_address(ctx.support_address, number, ctx.secret)),
        threading=Threading(in_reply_to=last, references=refs, topic=ticket.subject), automatic=False, ticket_number=number,
        attachments=[(a.filename, a.content_type, a.content) for a in mail.attachments if not a.inline])
    queue_outbound(ctx, out, subject=subject, text=body, due_at=ctx.now, from_name=_agent_party(ctx, agent.display_name).name)
    tx.event(number, "relay_queued", f"to {', '.join(out.rcpt_to)}")


def _mail_agent(ctx: FilingContext, agent, ticket: Ticket, errors: list[str], relayed: bool) -> None:  # type: ignore[no-untyped-def]
    body = ctx.composer.render("command_error.txt.j2", ticket=ticket, errors=errors, relayed=relayed)
    out = ctx.composer.build(
        kind="command_error", sender=Party(ctx.config.support_name, ctx.support_address),
        to=[Party(agent.display_name, agent.addresses[0])],
        subject=f"Problem with your reply to ticket #{ticket.number}", body=body, envelope_from="",
        threading=Threading(in_reply_to=ctx.mail.message_id, references=(ctx.mail.message_id,)), automatic=True,
        ticket_number=ticket.number)
    queue_outbound(ctx, out, subject=f"Problem with your reply to ticket #{ticket.number}", text=body,
                   due_at=ctx.now + timedelta(seconds=0))
    ctx.tx.event(ticket.number, "agent_told", "; ".join(errors))
