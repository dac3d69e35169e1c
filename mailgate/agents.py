"""Agents by mail: notifications to agents, their replies recognised, commands obeyed, text relayed to the customer.

The pipeline sends an agent's mail here only when it comes From an agent address AND links to the ticket
by a valid reply token or a reference to a stored message (`file_agent_reply`); everything else from an
agent address is filed like anyone's mail and never relayed. With a trusted authserv-id the reply must
also pass DKIM or DMARC for its From domain, or it is held as an unverified internal note and the agent is
told why. Automatic mail from an agent (out-of-office, bounces, loops) is kept as a note, never relayed
and never answered. The relay goes out From "<Agent> (Support)" <support address>: the agent's address
and Message-ID never reach the customer. `notify_agents` tells the assignee, or the team's present
members, about a customer's mail, with a Reply-To carrying the ticket's reply token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from email import policy as email_policy

from . import replytext, slatrack
from .compose import Party, Threading, deliverable, tagged_subject
from .filing import FilingContext, queue_outbound, sender_name, store_inbound
from .message import Mail, parse
from .rules import Agent, Decision
from .store import Ticket
from .threader import Link, base_address, reply_address

STATUS_COMMANDS = {"close": "closed", "reopen": "open", "pending": "pending"}
# Screen hits that mark a mail as automatic (never relayed, never answered, never worth a notification).
# X-Auto-Response-Suppress and a failed authentication say nothing about a human having written it.
NOT_AUTOMATIC = frozenset({"auto_response_suppress", "auth_fail"})
# Kinds of stored mail the customer has seen: only these may appear in the References of a relay.
CUSTOMER_VISIBLE = frozenset({"customer", "ack", "relay"})


@dataclass(frozen=True)
class AgentFiling:
    state: str  # agent_reply | agent_note | agent_unverified | agent_auto_reply
    detail: str


def _automatic(ctx: FilingContext) -> list[str]:
    return [f"{c.name}: {c.reason}" for c in ctx.verdict.checks if c.hit and c.name not in NOT_AUTOMATIC]


def _agent_party(ctx: FilingContext, agent: Agent) -> Party:
    return Party(f"{agent.display_name} ({ctx.config.support_name})", ctx.support_address)


# -- notifications -------------------------------------------------------------------------------


def notify_agents(ctx: FilingContext, number: int, event: str, decision: Decision) -> int:
    """Mail the assignee (or the team's present members) about a customer's mail; returns how many agents were mailed."""
    automatic = _automatic(ctx)
    if automatic:
        ctx.tx.event(number, "agents_not_notified", "automatic mail: " + "; ".join(automatic))
        return 0
    ticket = ctx.tx.ticket(number)
    assert ticket is not None
    people = _people(ctx, ticket)
    if not people:
        return 0
    text = ctx.mail.text if event == "New ticket" else replytext.visible_reply(ctx.mail.text, ctx.mail.sender)
    _notify(ctx, ticket, event, people, ctx.mail, text, [h.rule for h in decision.hits])
    return len(people)


def _people(ctx: FilingContext, ticket: Ticket, exclude: str = "") -> list[Agent]:
    agents = ctx.ruleset.agents
    if ticket.assignee and ticket.assignee in agents:
        people = [agents[ticket.assignee]]
    elif ticket.team:
        people = [a for a in ctx.ruleset.team_members(ticket.team) if not a.away]
    else:
        people = []
    skip = {ctx.mail.sender.lower(), exclude.lower()}
    return [a for a in people if a.addresses and not skip & set(a.addresses)]


def _sla_due(ctx: FilingContext, ticket: Ticket) -> str:
    """The ticket's next SLA deadline as slatrack stored it (unmet first response, else resolution), or ""."""
    stored = ctx.tx.ticket_due(ticket.number)
    return _when(datetime.fromisoformat(stored)) if stored else ""


def _when(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _notify(ctx: FilingContext, ticket: Ticket, event: str, people: list[Agent], customer_mail: Mail, text: str,
            rules: list[str]) -> None:
    """Queue one notification to `people` about `customer_mail` (From "<customer> via Support", Reply-To the token)."""
    cfg, number = ctx.config, ticket.number
    name = sender_name(customer_mail) or customer_mail.sender or ticket.customer
    body = ctx.composer.render("agent_notification.txt.j2", event=event, ticket=ticket, customer=customer_mail.sender,
                               customer_name=name, text=text, sla_due=_sla_due(ctx, ticket), rules=rules,
                               support_name=cfg.support_name, subject_tag=cfg.subject_tag)
    subject = tagged_subject(customer_mail.subject or ticket.subject, number, cfg.subject_tag)
    refs = tuple(r for r in customer_mail.references[-10:] if r != customer_mail.message_id) + (customer_mail.message_id,)
    out = ctx.composer.build(
        kind="notification", sender=Party(f"{name} via {cfg.support_name}", ctx.support_address),
        to=[Party(a.display_name, a.addresses[0]) for a in people], subject=subject, body=body,
        envelope_from=ctx.support_address,
        reply_to=Party(cfg.support_name, reply_address(ctx.support_address, number, ctx.secret, audience="agents")),
        threading=Threading(in_reply_to=customer_mail.message_id, references=refs,
                            thread_index=customer_mail.header("Thread-Index"), topic=ticket.subject),
        automatic=False, ticket_number=number, extra_headers={"X-Mailgate-Ticket": str(number)},
        attachments=[(a.filename, a.content_type, a.content) for a in customer_mail.attachments if not a.inline])
    queue_outbound(ctx, out, subject=subject, text=body, due_at=ctx.now)
    ctx.tx.event(number, "agents_notified", f"{event}: " + ", ".join(a.name for a in people))


def _customer_mail(ctx: FilingContext, number: int) -> Mail | None:
    """The customer's latest mail on the ticket, parsed again from its spool row."""
    sid = ctx.tx.last_inbound_spool_id(number)
    entry = ctx.tx.spool_entry(sid) if sid is not None else None
    return parse(entry.inbound.raw) if entry is not None else None


def _customer_thread_index(ctx: FilingContext, number: int) -> str | None:
    """The Thread-Index of the customer's latest mail (headers only), so Outlook keeps one conversation."""
    sid = ctx.tx.last_inbound_spool_id(number)
    entry = ctx.tx.spool_entry(sid) if sid is not None else None
    if entry is None:
        return None
    head = BytesHeaderParser(policy=email_policy.compat32).parsebytes(entry.inbound.raw, headersonly=True)
    value = head.get("Thread-Index")
    return " ".join(str(value).split()) if value else None


# -- agent replies -------------------------------------------------------------------------------


def _verified(ctx: FilingContext) -> tuple[bool, str]:
    trusted = ctx.config.trusted_authserv_id
    if not trusted:
        return True, "no authserv-id configured"
    if ctx.verdict.auth == "pass":
        return True, f"Authentication-Results from {trusted}: pass"
    reason = next((c.reason for c in ctx.verdict.checks if c.name == "auth_fail"), "")
    return False, (f"it carries no Authentication-Results from {trusted} showing dkim=pass or dmarc=pass for"
                   f" {ctx.mail.from_addr.domain if ctx.mail.from_addr else 'your domain'} ({reason or ctx.verdict.auth})")


AGENT_ONLY_KINDS = frozenset({"notification", "command_error", "escalation"})


def _agent_link(linked: Link) -> bool:
    """Evidence only an agent holds: the agents' reply token, or a reference to mail only agents received."""
    if linked.evidence == "reply_token":
        return linked.token_audience == "agents"
    return linked.evidence == "references" and linked.matched_kind in AGENT_ONLY_KINDS


def file_agent_reply(ctx: FilingContext, linked: Link) -> AgentFiling:
    """Store an agent's reply, obey its commands, and relay its text to the customer unless it is a note."""
    tx, mail = ctx.tx, ctx.mail
    number = linked.ticket_number
    assert number is not None
    agent = ctx.ruleset.agent_by_address(mail.sender)
    assert agent is not None
    ticket = tx.ticket(number)
    assert ticket is not None

    visible = replytext.visible_reply(mail.text, mail.sender)
    if not _agent_link(linked):  # a subject tag anyone can type, or evidence the customer holds too: maybe forged
        store_inbound(ctx, number, "agent_note", stripped=visible)
        tx.event(number, "agent_unlinked", f"mail From {agent.name}'s address is linked only by {linked.detail}, which is not agents-only evidence;"
                 " held as an internal note, not relayed, commands ignored", spool_id=ctx.spool_id)
        if not _automatic(ctx):
            _mail_agent(ctx, agent, ticket, "A mail from your address was NOT sent to the customer and its commands were"
                        " not obeyed, because it did not answer an agent notification (it was linked only by the subject tag or by"
                        " mail the customer has seen too). To answer the customer,"
                        " reply to the notification (its Reply-To address carries the ticket's token).", [], relayed=False)
        return AgentFiling("agent_note", f"{agent.name}: linked by {linked.evidence} without agents-only evidence, not relayed")
    automatic = _automatic(ctx)
    if automatic:  # an out-of-office or bounce from the agent's side: keep it for the agents, never relay or answer
        store_inbound(ctx, number, "agent_note", stripped=visible)
        tx.event(number, "agent_auto_reply", f"{agent.name}: automatic mail ({'; '.join(automatic)}); kept as a note,"
                 " not relayed", spool_id=ctx.spool_id)
        return AgentFiling("agent_auto_reply", f"{agent.name}: automatic mail, not relayed")

    ok, why = _verified(ctx)
    if not ok:
        store_inbound(ctx, number, "agent_note", stripped=visible)
        tx.event(number, "agent_unverified", f"{agent.name}: {why}; held as an internal note, not relayed, commands"
                 " ignored", spool_id=ctx.spool_id)
        _mail_agent(ctx, agent, ticket, "Your reply was NOT sent to the customer and its commands were not obeyed,"
                    f" because {why}. It is kept on the ticket as an internal note.", [], relayed=False)
        return AgentFiling("agent_unverified", why)

    commands, rest = replytext.strip_commands(visible)
    rest = _scrub(rest, agent, ctx.support_address)
    names = [c.name for c in commands]
    note = "note" in names
    errors: list[str] = []
    changes: dict[str, object] = {}
    for cmd in commands:
        name, arg, line = cmd.name, cmd.arg.strip(), cmd.line.strip()
        if cmd.error:  # unknown, or an argument replytext already found wrong
            errors.append(f"{line}: {cmd.error}")
        elif name == "note":
            continue
        elif name in STATUS_COMMANDS:
            changes["status"] = STATUS_COMMANDS[name]
        elif name == "priority":
            changes["priority"] = arg.lower()
        elif name == "assign":
            target = _find_agent(ctx, arg)
            if target is not None:
                changes["assignee"] = target.name
                changes["team"] = target.team or ticket.team
            elif arg.lower() in {t.lower() for t in ctx.ruleset.teams}:
                changes["team"] = next(t for t in ctx.ruleset.teams if t.lower() == arg.lower())
                changes["assignee"] = None
            else:
                errors.append(f"{line}: there is no agent or team called {arg!r}")
        elif name == "tag":
            changes["tags"] = tuple(changes.get("tags", ticket.tags)) + (arg,)  # type: ignore[call-overload]
        else:  # a command replytext knows and this module does not: say so rather than drop it
            errors.append(f"{line}: not supported by mail")

    kind = "agent_note" if note else "agent_reply"
    store_inbound(ctx, number, kind, stripped=rest)
    tx.event(number, kind, f"from {agent.name} ({linked.detail})", spool_id=ctx.spool_id)
    for key, value in changes.items():
        old = getattr(ticket, key)
        if key == "tags":
            old, value = ", ".join(old) or "-", ", ".join(value)  # type: ignore[arg-type]
        if old != value:
            tx.event(number, f"{key}_changed", f"{old or '-'} -> {value or '-'} (by {agent.name})")

    relayed = False
    if not note and rest.strip():
        relayed = _relay(ctx, agent, ticket, rest)
        if relayed and tx.first_response_at(number) is None:
            changes["first_response_at"] = ctx.now
            tx.event(number, "first_response", f"by {agent.name}")
        if "status" not in changes and ticket.status == "new":
            changes["status"] = "open"
    if changes.get("status") == "closed":
        changes["closed_at"] = ctx.now
    if changes:
        tx.update_ticket(number, **changes)  # type: ignore[arg-type]
    slatrack.ticket_changed(tx, number, before=ticket, changes=changes, at=ctx.now, ruleset=ctx.ruleset,
                            message="agent_reply" if relayed else None)
    if (changes.get("assignee"), changes.get("team")) != (ticket.assignee, ticket.team) and "assignee" in changes:
        _notify_assignment(ctx, number, agent)
    if errors:
        _mail_agent(ctx, agent, ticket, "Your reply contained commands mailgate did not understand:", errors, relayed)
    return AgentFiling(kind, f"{agent.name}: {'relayed' if relayed else 'not relayed'}; commands: "
                       f"{', '.join(names) or 'none'}")


def _find_agent(ctx: FilingContext, name: str) -> Agent | None:
    """An agent by key, by display name or by address (case-insensitive)."""
    wanted = name.strip().lower()
    if not wanted:
        return None
    for key, agent in ctx.ruleset.agents.items():
        if wanted in (key.lower(), agent.display_name.lower()):
            return agent
    return ctx.ruleset.agent_by_address(wanted)


def _scrub(text: str, agent: Agent, support: str) -> str:
    """The agent's own addresses, should a signature the parser missed still name them, replaced by ours."""
    for addr in agent.addresses:
        text = re.sub(re.escape(addr), support, text, flags=re.IGNORECASE)
    return text


def _notify_assignment(ctx: FilingContext, number: int, by: Agent) -> None:
    """Tell the new assignee (or the new team's present members) about the ticket, with the customer's latest text."""
    ticket = ctx.tx.ticket(number)
    customer = _customer_mail(ctx, number)
    if ticket is None or customer is None:
        return
    people = _people(ctx, ticket)
    if not people:
        return
    event = (f"Assigned to you by {by.display_name}" if ticket.assignee
             else f"Assigned to team {ticket.team} by {by.display_name}")
    _notify(ctx, ticket, event, people, customer, replytext.visible_reply(customer.text, customer.sender), [])


def _relay(ctx: FilingContext, agent: Agent, ticket: Ticket, text: str) -> bool:
    """Queue the agent's text to the customer and copied colleagues; False when nobody receives replies."""
    tx, cfg, mail = ctx.tx, ctx.config, ctx.mail
    number = ticket.number
    own = {a.lower() for a in cfg.support_addresses}
    recipients = [p for p in tx.participants(number) if p.receives and p.role in ("customer", "cc")
                  and base_address(p.address) not in own and not ctx.ruleset.is_agent(p.address)
                  and deliverable(p.address) is not None]
    if not recipients:
        tx.event(number, "relay_skipped", "no participant receives replies")
        return False
    customer = [p for p in recipients if p.role == "customer"] or recipients[:1]
    others = [p for p in recipients if p not in customer]
    body = ctx.composer.render("relay.txt.j2", text=text.strip(), agent_name=agent.display_name, ticket=ticket,
                               support_name=cfg.support_name, subject_tag=cfg.subject_tag)
    refs = tuple(mid for mid in tx.thread_message_ids(number) if (tx.message_ticket(mid) or (0, "", ""))[2] in CUSTOMER_VISIBLE)
    subject = tagged_subject(ticket.subject, number, cfg.subject_tag)
    sender = _agent_party(ctx, agent)
    out = ctx.composer.build(
        kind="relay", sender=sender, to=[Party(p.name, p.address) for p in customer],
        cc=[Party(p.name, p.address) for p in others] or None, subject=subject, body=body, envelope_from=ctx.support_address,
        reply_to=Party(cfg.support_name, reply_address(ctx.support_address, number, ctx.secret)),
        threading=Threading(in_reply_to=tx.last_inbound_message_id(number), references=refs[-20:],
                            thread_index=_customer_thread_index(ctx, number), topic=ticket.subject),
        automatic=False, ticket_number=number,
        attachments=[(a.filename, a.content_type, a.content) for a in mail.attachments if not a.inline])
    queue_outbound(ctx, out, subject=subject, text=body, due_at=ctx.now, from_name=sender.name)
    tx.event(number, "relay_queued", f"to {', '.join(out.rcpt_to)}")
    return True


def _mail_agent(ctx: FilingContext, agent: Agent, ticket: Ticket, headline: str, errors: list[str], relayed: bool) -> None:
    """A short automatic mail to the agent: why a reply was held, or which commands were not understood."""
    subject = f"Problem with your reply to ticket #{ticket.number} [{ctx.config.subject_tag} #{ticket.number}]"
    body = ctx.composer.render("command_error.txt.j2", ticket=ticket, headline=headline, errors=errors, relayed=relayed,
                               support_name=ctx.config.support_name)
    out = ctx.composer.build(
        kind="command_error", sender=Party(ctx.config.support_name, ctx.support_address),
        to=[Party(agent.display_name, agent.addresses[0])], subject=subject, body=body, envelope_from="",
        threading=Threading(in_reply_to=ctx.mail.message_id, references=(ctx.mail.message_id,), topic=ticket.subject),
        automatic=True, ticket_number=ticket.number)
    queue_outbound(ctx, out, subject=subject, text=body, due_at=ctx.now)
    ctx.tx.event(ticket.number, "agent_told", headline + (" " + "; ".join(errors) if errors else ""))
