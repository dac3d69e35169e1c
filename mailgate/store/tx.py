"""`Tx`: the statements one filing transaction may run (tickets, messages, participants, events, outbox, SLA, routing)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..message import Inbound
from ..rules.state import next_after
from .records import Participant, SpoolEntry, Ticket, iso, parse_iso, ticket_from_row, utcnow


class Tx:
    """The statements one transaction may run; handed to code running inside `Store.transaction`."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # spool
    def spool(self, inbound: Inbound) -> int:
        cur = self.conn.execute(
            "INSERT INTO spool (received_at, source, peer, mail_from, rcpt_to, source_ref, sha256, size, raw, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'spooled')",
            (iso(inbound.received_at), inbound.source, inbound.peer, inbound.mail_from, json.dumps(list(inbound.rcpt_to)),
             inbound.source_ref, inbound.sha256, len(inbound.raw), inbound.raw),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def spool_entry(self, spool_id: int) -> SpoolEntry | None:
        r = self.conn.execute("SELECT * FROM spool WHERE id=?", (spool_id,)).fetchone()
        if r is None:
            return None
        inbound = Inbound(raw=bytes(r["raw"]), source=r["source"], received_at=parse_iso(r["received_at"]),  # type: ignore[arg-type]
                          peer=r["peer"], mail_from=r["mail_from"], rcpt_to=tuple(json.loads(r["rcpt_to"] or "[]")),
                          source_ref=r["source_ref"])
        return SpoolEntry(id=r["id"], inbound=inbound, state=r["state"], error=r["error"], ticket_number=r["ticket_number"])

    def spool_state(self, spool_id: int) -> str | None:
        r = self.conn.execute("SELECT state FROM spool WHERE id=?", (spool_id,)).fetchone()
        return r[0] if r else None

    def set_spool_state(self, spool_id: int, state: str, *, error: str | None = None,
                        message_id: str | None = None, ticket_number: int | None = None) -> None:
        self.conn.execute(
            "UPDATE spool SET state=?, error=?, message_id=coalesce(?, message_id), ticket_number=coalesce(?, ticket_number),"
            " processed_at=?, attempts=attempts+1 WHERE id=?",
            (state, error, message_id, ticket_number, iso(utcnow()), spool_id))

    # messages and tickets
    def message_ticket(self, message_id: str) -> tuple[int | None, str, str] | None:
        """(ticket number, direction, kind) of a stored message, or None."""
        r = self.conn.execute("SELECT ticket_number, direction, kind FROM messages WHERE message_id=?", (message_id,)).fetchone()
        return (r[0], r[1], r[2]) if r else None

    def ticket(self, number: int) -> Ticket | None:
        r = self.conn.execute(
            "SELECT t.*, (SELECT count(*) FROM messages m WHERE m.ticket_number=t.number) AS message_count "
            "FROM tickets t WHERE number=?", (number,)).fetchone()
        return ticket_from_row(r) if r else None

    def create_ticket(self, *, subject: str, customer: str, customer_name: str, priority: str, team: str | None,
                      assignee: str | None, sla_policy: str | None, tags: Sequence[str], at: datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO tickets (subject, status, priority, team, assignee, customer, customer_name, sla_policy, tags,"
            " created_at, updated_at) VALUES (?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (subject, priority, team, assignee, customer, customer_name, sla_policy, json.dumps(sorted(set(tags))),
             iso(at), iso(at)))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def update_ticket(self, number: int, **fields: Any) -> None:
        """Set ticket columns (datetimes and tag lists converted); always bumps updated_at."""
        allowed = {"subject", "status", "priority", "team", "assignee", "sla_policy", "tags", "ack_due_at",
                   "first_response_due_at", "first_response_at", "resolution_due_at", "solved_at", "closed_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not ticket columns: {sorted(bad)}")
        values = {k: (iso(v) if isinstance(v, datetime) else json.dumps(sorted(set(v))) if k == "tags" else v)
                  for k, v in fields.items()}
        values["updated_at"] = iso(utcnow())
        sets = ", ".join(f"{k}=?" for k in values)
        self.conn.execute(f"UPDATE tickets SET {sets} WHERE number=?", (*values.values(), number))

    def add_message(self, *, ticket_number: int | None, spool_id: int | None, message_id: str, direction: str, kind: str,
                    from_addr: str, from_name: str, to_addrs: Sequence[str], cc_addrs: Sequence[str], subject: str,
                    date: datetime | None, text: str, stripped_text: str | None = None, html: str | None = None,
                    auth: str | None = None, defects: Sequence[str] = (), at: datetime | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO messages (ticket_number, spool_id, message_id, direction, kind, from_addr, from_name, to_addrs,"
            " cc_addrs, subject, date, text, stripped_text, html, auth, defects, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ticket_number, spool_id, message_id, direction, kind, from_addr, from_name, json.dumps(list(to_addrs)),
             json.dumps(list(cc_addrs)), subject, iso(date), text, stripped_text, html, auth, json.dumps(list(defects)),
             iso(at or utcnow())))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def add_attachment(self, message_row: int, *, filename: str, content_type: str, size: int, sha256: str,
                       content: bytes, content_id: str | None, inline: bool) -> None:
        self.conn.execute(
            "INSERT INTO attachments (message_row, filename, content_type, size, sha256, content_id, inline, content)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (message_row, filename, content_type, size, sha256, content_id, int(inline), content))

    def last_inbound_message_id(self, number: int) -> str | None:
        r = self.conn.execute("SELECT message_id FROM messages WHERE ticket_number=? AND direction='in' AND kind='customer'"
                              " ORDER BY id DESC LIMIT 1", (number,)).fetchone()
        return r[0] if r else None

    def last_inbound_spool_id(self, number: int) -> int | None:
        """The spool row of the customer's latest message on a ticket (to re-read its text or headers)."""
        r = self.conn.execute("SELECT spool_id FROM messages WHERE ticket_number=? AND direction='in' AND kind='customer'"
                              " AND spool_id IS NOT NULL ORDER BY id DESC LIMIT 1", (number,)).fetchone()
        return r[0] if r else None

    def thread_message_ids(self, number: int, limit: int = 20) -> list[str]:
        """The ticket's Message-IDs, oldest first (for References of mail we send)."""
        rows = self.conn.execute("SELECT message_id FROM messages WHERE ticket_number=? AND kind != 'agent_note'"
                                 " ORDER BY id", (number,)).fetchall()
        ids = [r[0] for r in rows]
        return ids if len(ids) <= limit else ids[:1] + ids[-(limit - 1):]

    def ticket_due(self, number: int) -> str | None:
        """The earliest open SLA deadline of a ticket (ISO text), for notifications."""
        r = self.conn.execute(
            "SELECT min(coalesce(CASE WHEN first_response_at IS NULL THEN first_response_due_at END, resolution_due_at))"
            " FROM tickets WHERE number=?", (number,)).fetchone()
        return r[0] if r else None

    def first_response_at(self, number: int) -> str | None:
        r = self.conn.execute("SELECT first_response_at FROM tickets WHERE number=?", (number,)).fetchone()
        return r[0] if r else None

    # bounces
    def mark_bouncing(self, address: str, bounce_message_id: str) -> None:
        now = iso(utcnow())
        self.conn.execute(
            "INSERT INTO bouncing (address, first_at, last_at, count, last_bounce) VALUES (?, ?, ?, 1, ?)"
            " ON CONFLICT(address) DO UPDATE SET last_at=excluded.last_at, count=count+1, last_bounce=excluded.last_bounce",
            (address.lower(), now, now, bounce_message_id))

    def is_bouncing(self, address: str) -> bool:
        return self.conn.execute("SELECT 1 FROM bouncing WHERE address=?", (address.lower(),)).fetchone() is not None

    # participants
    def participants(self, number: int) -> list[Participant]:
        return [Participant(r["address"], r["name"] or "", r["role"], bool(r["receives"])) for r in self.conn.execute(
            "SELECT * FROM participants WHERE ticket_number=? ORDER BY added_at, address", (number,))]

    def participant(self, number: int, address: str) -> Participant | None:
        r = self.conn.execute("SELECT * FROM participants WHERE ticket_number=? AND address=?", (number, address)).fetchone()
        return Participant(r["address"], r["name"] or "", r["role"], bool(r["receives"])) if r else None

    def add_participant(self, number: int, address: str, name: str, role: str, receives: bool) -> bool:
        """Add a participant unless present (an existing role is never downgraded); True when added."""
        cur = self.conn.execute(
            "INSERT INTO participants (ticket_number, address, name, role, receives, added_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(ticket_number, address) DO NOTHING", (number, address, name, role, int(receives), iso(utcnow())))
        return cur.rowcount > 0

    def customer_known(self, address: str) -> bool:
        return self.conn.execute("SELECT 1 FROM tickets WHERE customer=? LIMIT 1", (address,)).fetchone() is not None

    # events
    def event(self, ticket_number: int | None, kind: str, detail: str = "", *, spool_id: int | None = None,
              at: datetime | None = None) -> None:
        self.conn.execute("INSERT INTO events (ticket_number, spool_id, at, kind, detail) VALUES (?, ?, ?, ?, ?)",
                          (ticket_number, spool_id, iso(at or utcnow()), kind, detail))

    # outbox
    def queue_mail(self, *, ticket_number: int | None, kind: str, message_id: str, mail_from: str,
                   rcpt_to: Sequence[str], raw: bytes, due_at: datetime, at: datetime | None = None) -> int:
        now = iso(at or utcnow())
        cur = self.conn.execute(
            "INSERT INTO outbox (ticket_number, kind, message_id, mail_from, rcpt_to, rcpt_key, raw, created_at, due_at,"
            " next_attempt_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
            (ticket_number, kind, message_id, mail_from, json.dumps(list(rcpt_to)), rcpt_to[0].lower() if rcpt_to else None,
             raw, now, iso(due_at), now))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def auto_mails_to(self, address: str, since: datetime | None = None, ticket_number: int | None = None) -> int:
        """How many automatic mails (acknowledgements) were queued to an address (since a time; on one ticket or all)."""
        sql = "SELECT count(*) FROM outbox WHERE rcpt_key = ? AND created_at >= ? AND kind = 'ack'"
        args: list[Any] = [address.lower(), iso(since) if since else ""]
        if ticket_number is not None:
            sql += " AND ticket_number = ?"
            args.append(ticket_number)
        return self.conn.execute(sql, args).fetchone()[0]

    # routing state (the RoutingState protocol of mailgate.rules)
    def next_in_rotation(self, team: str, candidates: list[str]) -> str:
        r = self.conn.execute("SELECT last_agent FROM routing_state WHERE team=?", (team,)).fetchone()
        nxt = next_after(r[0] if r else None, candidates)
        self.conn.execute("INSERT INTO routing_state VALUES (?, ?) ON CONFLICT(team) DO UPDATE SET last_agent=excluded.last_agent",
                          (team, nxt))
        return nxt

    def open_ticket_counts(self, agents: list[str]) -> dict[str, int]:
        counts = {a: 0 for a in agents}
        for r in self.conn.execute("SELECT assignee, count(*) FROM tickets WHERE status IN ('new', 'open', 'pending')"
                                   " AND assignee IS NOT NULL GROUP BY assignee"):
            if r[0] in counts:
                counts[r[0]] = r[1]
        return counts

    # SLA clocks: what the rows mean is mailgate.slatrack's business; these only read and write them
    def sla_event(self, number: int, kind: str, at: datetime, value: str | None = None) -> None:
        self.conn.execute("INSERT INTO sla_events (ticket_number, at, kind, value) VALUES (?, ?, ?, ?)",
                          (number, iso(at), kind, value))

    def sla_events(self, number: int) -> list[tuple[datetime, str, str | None]]:
        """(at, kind, value) of a ticket's clock history in the order recorded."""
        return [(parse_iso(r[0]), r[1], r[2]) for r in self.conn.execute(  # type: ignore[misc]
            "SELECT at, kind, value FROM sla_events WHERE ticket_number=? ORDER BY id", (number,))]

    def sla_acknowledged(self, number: int, at: datetime) -> None:
        """The ack mail went out at `at`: record it, mark the ack met, and have the SLA timer recompute the ticket."""
        self.sla_event(number, "acknowledged", at)
        self.conn.execute("UPDATE tickets SET ack_met_at=coalesce(ack_met_at, ?),"
                          " next_alarm_at=min(coalesce(next_alarm_at, ?), ?) WHERE number=?", (iso(at), iso(at), iso(at), number))
        self.conn.execute("UPDATE sla_clocks SET met_at=coalesce(met_at, ?) WHERE ticket_number=? AND key='ack'",
                          (iso(at), number))

    def sla_save(self, number: int, columns: dict[str, datetime | str | None],
                 clocks: Sequence[tuple[str, str, datetime, int, datetime | None, datetime | None]] | None = None) -> None:
        """Store a ticket's recomputed deadlines: ticket columns, and (unless None) its clocks (key, target, started,
        minutes, due, met), replacing the stored ones."""
        allowed = {"ack_due_at", "first_response_due_at", "resolution_due_at", "next_response_due_at", "sla_started_at",
                   "ack_met_at", "first_response_met_at", "resolved_at", "next_alarm_at", "sla_clock"}
        if set(columns) - allowed:
            raise ValueError(f"not SLA columns: {sorted(set(columns) - allowed)}")
        values = [iso(v) if isinstance(v, datetime) else v for v in columns.values()]
        sets = ", ".join(f"{k}=?" for k in columns)
        self.conn.execute(f"UPDATE tickets SET {sets} WHERE number=?", (*values, number))
        if clocks is None:
            return
        self.conn.execute("DELETE FROM sla_clocks WHERE ticket_number=?", (number,))
        self.conn.executemany(
            "INSERT INTO sla_clocks (ticket_number, key, target, started_at, minutes, due_at, met_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(number, key, target, iso(start), minutes, iso(due), iso(met)) for key, target, start, minutes, due, met in clocks])

    def sla_fired(self, number: int) -> set[tuple[str, str]]:
        """(clock key, kind) of every SLA alarm already fired for a ticket."""
        return {(r[0], r[1]) for r in self.conn.execute("SELECT clock, kind FROM sla_alarms WHERE ticket_number=?", (number,))}

    def sla_fire(self, number: int, *, clock: str, kind: str, target: str, due_at: datetime, met_at: datetime | None,
                 at: datetime, mailed_to: Sequence[str]) -> bool:
        """Record an alarm as fired; False (and nothing written) when it had fired before."""
        cur = self.conn.execute(
            "INSERT INTO sla_alarms (ticket_number, clock, kind, target, due_at, fired_at, met_at, mailed_to)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (number, clock, kind, target, iso(due_at), iso(at), iso(met_at), json.dumps(list(mailed_to))))
        return cur.rowcount > 0
