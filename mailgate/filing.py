"""What every filing step shares inside the one transaction: its context, storing an inbound message, queueing outbound mail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import nh3

from .compose import Composer, Outbound
from .config import Config
from .message import Inbound, Mail
from .rules import Ruleset
from .screen import Verdict
from .store import Tx


@dataclass(frozen=True)
class FilingContext:
    """Everything a filing step may read while the ticket transaction is open."""

    tx: Tx
    spool_id: int
    inbound: Inbound
    mail: Mail
    verdict: Verdict
    ruleset: Ruleset
    composer: Composer
    config: Config
    secret: str
    now: datetime

    @property
    def support_address(self) -> str:
        return self.config.support_addresses[0]


def sanitize_html(html: str | None) -> str | None:
    """HTML made safe to display (scripts, handlers and remote-content tricks removed) with nh3."""
    if not html:
        return None
    return nh3.clean(html)


def sender_name(mail: Mail) -> str:
    return mail.from_addr.name if mail.from_addr else ""


def store_inbound(ctx: FilingContext, number: int | None, kind: str, stripped: str | None = None) -> int:
    """Store the message being filed (with attachments and a defects event) and return its row id."""
    mail, tx = ctx.mail, ctx.tx
    row = tx.add_message(ticket_number=number, spool_id=ctx.spool_id, message_id=mail.message_id, direction="in", kind=kind,
                         from_addr=mail.sender, from_name=sender_name(mail), to_addrs=[a.addr for a in mail.to],
                         cc_addrs=[a.addr for a in mail.cc], subject=mail.subject, date=mail.date, text=mail.text,
                         stripped_text=stripped, html=sanitize_html(mail.html), auth=ctx.verdict.auth,
                         defects=mail.defects, at=ctx.now)
    for att in mail.attachments:
        tx.add_attachment(row, filename=att.filename, content_type=att.content_type, size=att.size, sha256=att.sha256,
                          content=att.content, content_id=att.content_id, inline=att.inline)
    if mail.defects:
        tx.event(number, "defects", f"<{mail.message_id}>: " + "; ".join(mail.defects[:10]), spool_id=ctx.spool_id)
    return row


def queue_outbound(ctx: FilingContext, out: Outbound, *, subject: str, text: str, due_at: datetime,
                   from_name: str | None = None) -> None:
    """Queue a rendered mail and record it as an outgoing message of the ticket (so replies to it thread back)."""
    tx = ctx.tx
    tx.queue_mail(ticket_number=out.ticket_number, kind=out.kind, message_id=out.message_id, mail_from=out.mail_from,
                  rcpt_to=out.rcpt_to, raw=out.raw, due_at=due_at, at=ctx.now)
    tx.add_message(ticket_number=out.ticket_number, spool_id=None, message_id=out.message_id, direction="out", kind=out.kind,
                   from_addr=ctx.support_address, from_name=from_name or ctx.config.support_name, to_addrs=list(out.rcpt_to),
                   cc_addrs=[], subject=subject, date=ctx.now, text=text, at=ctx.now)
