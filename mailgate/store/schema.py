"""The database schema as migrations: decorated functions (sqlite-utils), applied once each, in order."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["spool"].create(
        {
            "id": int, "received_at": str, "source": str, "peer": str, "mail_from": str, "rcpt_to": str,
            "source_ref": str, "sha256": str, "size": int, "raw": bytes, "state": str, "error": str,
            "message_id": str, "ticket_number": int, "processed_at": str, "attempts": int,
        },
        pk="id", not_null=["received_at", "source", "raw", "state"], defaults={"state": "spooled", "attempts": 0},
    )
    db["spool"].create_index(["state"])
    db["spool"].create_index(["source_ref"])
    db["tickets"].create(
        {
            "number": int, "subject": str, "status": str, "priority": str, "team": str, "assignee": str,
            "customer": str, "customer_name": str, "sla_policy": str, "tags": str, "created_at": str,
            "updated_at": str, "ack_due_at": str, "acknowledged_at": str, "first_response_due_at": str,
            "first_response_at": str, "resolution_due_at": str, "solved_at": str, "closed_at": str,
        },
        pk="number", not_null=["subject", "status", "priority", "customer", "created_at", "updated_at"],
        defaults={"status": "new", "priority": "normal", "tags": "[]"},
    )
    db["tickets"].create_index(["status"])
    db["tickets"].create_index(["customer"])
    db["messages"].create(
        {
            "id": int, "ticket_number": int, "spool_id": int, "message_id": str, "direction": str, "kind": str,
            "from_addr": str, "from_name": str, "to_addrs": str, "cc_addrs": str, "subject": str, "date": str,
            "text": str, "stripped_text": str, "html": str, "auth": str, "defects": str, "created_at": str,
        },
        pk="id", not_null=["message_id", "direction", "kind", "created_at"],
        foreign_keys=[("ticket_number", "tickets", "number"), ("spool_id", "spool", "id")],
    )
    db["messages"].create_index(["message_id"], unique=True)
    db["messages"].create_index(["ticket_number"])
    db["attachments"].create(
        {"id": int, "message_row": int, "filename": str, "content_type": str, "size": int, "sha256": str,
         "content_id": str, "inline": int, "content": bytes},
        pk="id", foreign_keys=[("message_row", "messages", "id")],
    )
    db["attachments"].create_index(["message_row"])
    db["participants"].create(
        {"ticket_number": int, "address": str, "name": str, "role": str, "receives": int, "added_at": str},
        pk=("ticket_number", "address"), foreign_keys=[("ticket_number", "tickets", "number")],
    )
    db["participants"].create_index(["address"])
    db["events"].create(
        {"id": int, "ticket_number": int, "spool_id": int, "at": str, "kind": str, "detail": str},
        pk="id",
    )
    db["events"].create_index(["ticket_number"])
    db["events"].create_index(["kind", "at"])
    db["outbox"].create(
        {
            "id": int, "ticket_number": int, "kind": str, "message_id": str, "mail_from": str, "rcpt_to": str,
            "raw": bytes, "created_at": str, "due_at": str, "attempts": int, "next_attempt_at": str,
            "sent_at": str, "state": str, "last_error": str,
        },
        pk="id", not_null=["kind", "message_id", "rcpt_to", "raw", "created_at", "due_at", "state"],
        defaults={"attempts": 0, "state": "queued"},
    )
    db["outbox"].create_index(["state", "next_attempt_at"])
    db["outbox"].create_index(["kind", "sent_at"])
    db["routing_state"].create({"team": str, "last_agent": str}, pk="team")
    db["imap_state"].create(
        {"account": str, "folder": str, "uidvalidity": int, "last_uid": int}, pk=("account", "folder")
    )
    db["messages"].enable_fts(["subject", "text"], create_triggers=True)


@migration
def m002_bouncing_addresses(db: sqlite_utils.Database) -> None:
    db["bouncing"].create({"address": str, "first_at": str, "last_at": str, "count": int, "last_bounce": str}, pk="address")


@migration
def m003_spool_raw_pruned(db: sqlite_utils.Database) -> None:
    """Retention: when the raw bytes of a closed ticket's message were cleared (sha256 and size are kept)."""
    db["spool"].add_column("raw_pruned_at", str)


@migration
def m004_sla_clocks(db: sqlite_utils.Database) -> None:
    """SLA tracking (mailgate.slatrack): clock history, per-target clocks, fired alarms, deadlines on the ticket."""
    db["sla_events"].create({"id": int, "ticket_number": int, "at": str, "kind": str, "value": str},
                            pk="id", not_null=["ticket_number", "at", "kind"])
    db["sla_events"].create_index(["ticket_number"])
    db["sla_clocks"].create({"ticket_number": int, "key": str, "target": str, "started_at": str, "minutes": int,
                             "due_at": str, "met_at": str}, pk=("ticket_number", "key"))
    db["sla_clocks"].create_index(["target", "due_at"])
    db["sla_alarms"].create({"ticket_number": int, "clock": str, "kind": str, "target": str, "due_at": str,
                             "fired_at": str, "met_at": str, "mailed_to": str}, pk=("ticket_number", "clock", "kind"))
    db["sla_alarms"].create_index(["kind", "due_at"])
    for column in ("sla_started_at", "next_response_due_at", "ack_met_at", "first_response_met_at", "resolved_at",
                   "next_alarm_at", "sla_clock"):
        db["tickets"].add_column(column, str)
    db["tickets"].create_index(["next_alarm_at"])


@migration
def m005_outbox_recipient_key(db: sqlite_utils.Database) -> None:
    """The first recipient of each outbox row, indexed: rate limits count automatic mail per address in O(log n)."""
    db["outbox"].add_column("rcpt_key", str)
    db.execute("UPDATE outbox SET rcpt_key = lower(json_extract(rcpt_to, '$[0]'))")
    db["outbox"].create_index(["rcpt_key", "created_at"])
