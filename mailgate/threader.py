"""Mail -> Link: which ticket a message belongs to, by which evidence, and how far that evidence is trusted.

Order of trust (DESIGN.md): 1. References/In-Reply-To naming a stored Message-ID; 2. a reply token in a
recipient address (`support+<number>-<hmac>@domain`); 3. the subject tag `[Support #N]`, only when the
sender already takes part in ticket N (or is an agent); 4. otherwise a new ticket. Never "threading.py".
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from .message import Inbound, Mail
from .store import Tx

TOKEN_LEN = 12


@dataclass(frozen=True)
class Link:
    """The threading decision for one message."""

    ticket_number: int | None  # None: a new ticket
    evidence: str  # "references" | "reply_token" | "subject_tag" | "none"
    detail: str  # human text for the event log
    sender_known: bool  # the sender already takes part in the linked ticket
    claimed_ticket: int | None = None  # a number the message claimed but was not trusted with
    matched_kind: str | None = None  # kind of the stored message that the references matched (ack, notification, …)
    token_audience: str | None = None  # "customer" or "agents": whose reply token the message was sent to


@dataclass(frozen=True)
class ThreadingSettings:
    support_addresses: tuple[str, ...]
    subject_tag: str
    secret: str
    is_agent: Callable[[str], bool] = lambda _addr: False


AUDIENCES = ("customer", "agents")


def token_for(number: int, secret: str, audience: str = "customer") -> str:
    """The reply token of a ticket. Customers and agents get different tokens, so that a customer who knows
    their own token cannot pass for an agent by forging an agent's From."""
    scope = "ticket" if audience == "customer" else f"ticket-{audience}"
    mac = hmac.new(secret.encode(), f"{scope}:{number}".encode(), hashlib.sha256).hexdigest()[:TOKEN_LEN]
    return f"{number}-{mac}"


def reply_address(support_address: str, number: int, secret: str, audience: str = "customer") -> str:
    """The plus-address that routes replies to ticket `number`: support+<number>-<hmac>@domain."""
    local, _, domain = support_address.partition("@")
    return f"{local}+{token_for(number, secret, audience)}@{domain}"


_TOKEN_RE = re.compile(r"^(\d{1,12})-([0-9a-f]{%d})$" % TOKEN_LEN)


def ticket_from_address(address: str, support_addresses: tuple[str, ...], secret: str) -> tuple[int, str] | None:
    """(ticket number, audience) of a valid reply-token address, or None (forged or absent tokens give None)."""
    local, _, domain = address.lower().partition("@")
    base, plus, token = local.partition("+")
    if not plus or f"{base}@{domain}" not in {a.lower() for a in support_addresses}:
        return None
    m = _TOKEN_RE.match(token)
    if not m:
        return None
    number = int(m.group(1))
    for audience in AUDIENCES:
        if hmac.compare_digest(token_for(number, secret, audience), token):
            return number, audience
    return None


def base_address(address: str) -> str:
    """support+anything@domain -> support@domain."""
    local, _, domain = address.lower().partition("@")
    return f"{local.partition('+')[0]}@{domain}"


def subject_tag_re(tag: str) -> re.Pattern[str]:
    return re.compile(r"\[\s*" + re.escape(tag) + r"\s*#\s*(\d{1,12})\s*\]", re.IGNORECASE)


def recipient_addresses(mail: Mail, inbound: Inbound) -> list[str]:
    """Every address the message was sent to: envelope first, then To, Cc, Delivered-To."""
    out = [a.lower() for a in inbound.rcpt_to]
    out += [a.addr for a in mail.to + mail.cc]
    out += [v.strip().strip("<>").lower() for v in mail.header_all("Delivered-To")]
    return out


def link(mail: Mail, inbound: Inbound, tx: Tx, settings: ThreadingSettings) -> Link:
    """Decide which ticket `mail` joins; reads the store, writes nothing."""
    sender = mail.sender

    def known(number: int) -> bool:
        return tx.participant(number, sender) is not None or settings.is_agent(sender)

    # 1. References / In-Reply-To, most recent first
    candidates = list(mail.in_reply_to) + [r for r in reversed(mail.references) if r not in mail.in_reply_to]
    for mid in candidates:
        found = tx.message_ticket(mid)
        if found and found[0] is not None:
            number = found[0]
            return Link(number, "references", f"references <{mid}> ({found[2]} of ticket #{number})", known(number),
                        matched_kind=found[2])

    # 2. Reply token in any recipient address
    for address in recipient_addresses(mail, inbound):
        found = ticket_from_address(address, settings.support_addresses, settings.secret)
        if found is not None and tx.ticket(found[0]) is not None:
            number, audience = found
            return Link(number, "reply_token", f"{audience}' reply token in {address}", known(number), token_audience=audience)

    # 3. Subject tag, trusted only from someone already on the ticket
    m = subject_tag_re(settings.subject_tag).search(mail.subject)
    if m:
        number = int(m.group(1))
        if tx.ticket(number) is None:
            return Link(None, "none", f"subject names ticket #{number}, which does not exist", False, claimed_ticket=number)
        if known(number):
            return Link(number, "subject_tag", f"subject tag #{number} from participant {sender}", True)
        return Link(None, "none", f"subject names ticket #{number} but {sender or 'the sender'} is not a participant of it;"
                    " opened a new ticket", False, claimed_ticket=number)

    return Link(None, "none", "no reference, reply token or trusted subject tag", False)
