"""The records the store hands out (frozen dataclasses) and the timestamp format it stores (ISO 8601 UTC)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from ..message import Inbound


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """Timestamps are stored as ISO 8601 UTC text with microseconds (sortable, readable in Datasette)."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None



# Records handed out of the store


@dataclass(frozen=True)
class SpoolEntry:
    id: int
    inbound: Inbound
    state: str
    error: str | None
    ticket_number: int | None


@dataclass(frozen=True)
class Ticket:
    number: int
    subject: str
    status: str
    priority: str
    team: str | None
    assignee: str | None
    customer: str
    customer_name: str
    sla_policy: str | None
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    message_count: int = 0


@dataclass(frozen=True)
class StoredMessage:
    id: int
    ticket_number: int | None
    message_id: str
    direction: str
    kind: str
    from_addr: str
    from_name: str
    to_addrs: tuple[str, ...]
    subject: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class SearchHit:
    """A message found by full-text search, with a snippet around the match."""

    ticket_number: int | None
    message_id: str
    kind: str
    from_addr: str
    subject: str
    created_at: datetime
    snippet: str


@dataclass(frozen=True)
class Event:
    ticket_number: int | None
    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True)
class Participant:
    address: str
    name: str
    role: str  # customer | cc | agent | observer
    receives: bool


@dataclass(frozen=True)
class OutboxItem:
    id: int
    ticket_number: int | None
    kind: str
    message_id: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    due_at: datetime
    attempts: int
    created_at: datetime


def ticket_from_row(r: sqlite3.Row) -> Ticket:
    keys = r.keys()
    return Ticket(number=r["number"], subject=r["subject"], status=r["status"], priority=r["priority"], team=r["team"],
                  assignee=r["assignee"], customer=r["customer"], customer_name=r["customer_name"] or "",
                  sla_policy=r["sla_policy"], tags=tuple(json.loads(r["tags"] or "[]")),
                  created_at=parse_iso(r["created_at"]), updated_at=parse_iso(r["updated_at"]),  # type: ignore[arg-type]
                  message_count=r["message_count"] if "message_count" in keys else 0)


def message_from_row(r: sqlite3.Row) -> StoredMessage:
    return StoredMessage(id=r["id"], ticket_number=r["ticket_number"], message_id=r["message_id"], direction=r["direction"],
                         kind=r["kind"], from_addr=r["from_addr"] or "", from_name=r["from_name"] or "",
                         to_addrs=tuple(json.loads(r["to_addrs"] or "[]")), subject=r["subject"] or "", text=r["text"] or "",
                         created_at=parse_iso(r["created_at"]))  # type: ignore[arg-type]


def outbox_item_from_row(r: sqlite3.Row) -> OutboxItem:
    return OutboxItem(id=r["id"], ticket_number=r["ticket_number"], kind=r["kind"], message_id=r["message_id"],
                      mail_from=r["mail_from"] or "", rcpt_to=tuple(json.loads(r["rcpt_to"])), raw=bytes(r["raw"]),
                      due_at=parse_iso(r["due_at"]), attempts=r["attempts"], created_at=parse_iso(r["created_at"]))  # type: ignore[arg-type]
