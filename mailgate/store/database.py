"""`Store`: one SQLite database (WAL) whose every statement runs on a single writer thread; group-committed spool.

Every call runs on the store's single writer thread with its own connection, so the daemon never writes
from two threads; other processes (`mailgate ingest`, the CLI) open their own Store and SQLite's locking
(BEGIN IMMEDIATE + busy timeout) serialises them. Any SQLite failure to write becomes
`StorageUnavailable` (a TemporaryFailure: SMTP 451, ingest exit 75), never a silent loss.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from ..errors import StorageUnavailable
from ..message import Inbound
from .records import (Event, OutboxItem, Participant, SearchHit, SpoolEntry, StoredMessage, Ticket, iso, message_from_row,
                      outbox_item_from_row, parse_iso, ticket_from_row, utcnow)
from .schema import MIGRATIONS
from .tx import Tx

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000


class Store:
    """One SQLite database; every statement runs on a single writer thread owned by this object."""

    def __init__(self, path: str | Path, busy_timeout: float = BUSY_TIMEOUT_MS / 1000):
        self.path = str(path)
        self.busy_timeout_ms = int(busy_timeout * 1000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailgate-store")
        self._thread_id: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._durable = True
        self._spool_lock = threading.Lock()
        self._spool_waiting: list[tuple[Inbound, Future[int]]] = []
        try:
            self.call(self._open)
        except BaseException:
            self._closed = True
            self._executor.shutdown(wait=True)
            raise

    # -- thread plumbing ------------------------------------------------------------------------

    def _on_writer(self) -> bool:
        return threading.get_ident() == self._thread_id

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run fn(*args) on the writer thread; the Future carries its result or exception."""
        if self._closed:
            raise StorageUnavailable(f"the store {self.path} is closed")
        return self._executor.submit(self._guarded, fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the writer thread and wait for it."""
        if self._on_writer():
            return self._guarded(fn, *args)
        return self.submit(fn, *args).result()

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """Await fn(*args) on the writer thread without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"database {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise StorageUnavailable(f"database {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            self.call(_close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None and self._on_writer(), "SQL runs only on the store's writer thread"
        return self._conn

    def _open(self) -> None:
        self._thread_id = threading.get_ident()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=self.busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageUnavailable(f"database {self.path}: cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._migrate()

    def _migrate(self) -> None:
        db = sqlite_utils.Database(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {r[0] for r in self.conn.execute("SELECT name FROM migrations")}
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(db)
                    self.conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso(utcnow())))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _transaction(self, fn: Callable[["Tx"], T], durable: bool = True) -> T:
        conn = self.conn
        if durable != self._durable:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(Tx(conn))
            conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def transaction(self, fn: Callable[["Tx"], T], durable: bool = True) -> T:
        """Run fn(tx) in one BEGIN IMMEDIATE transaction on the writer thread: all of it commits or none.

        durable=False commits without waiting for fsync (WAL, synchronous=NORMAL): still atomic and consistent,
        and made durable by the next durable commit. Use it only for work that is redone when lost — filing a
        spooled message (the row stays 'spooled' and is filed again) or recording a send (at worst a resend).
        """
        return self.call(self._transaction, fn, durable)

    # -- spool ----------------------------------------------------------------------------------

    def spool(self, inbound: Inbound) -> int:
        """Commit the raw message durably and return its spool id; only after this may a source say "accepted"."""
        return self._spool_future(inbound).result()

    async def aspool(self, inbound: Inbound) -> int:
        return await asyncio.wrap_future(self._spool_future(inbound))

    def _spool_future(self, inbound: Inbound) -> Future[int]:
        """Group commit: messages arriving while a spool commit runs share the next one (one fsync for all)."""
        result: Future[int] = Future()
        with self._spool_lock:
            self._spool_waiting.append((inbound, result))
            start = len(self._spool_waiting) == 1
        if start:
            try:
                self.submit(self._flush_spool)
            except BaseException as exc:  # closed store: fail everyone waiting, never leave a future hanging
                self._fail_spool(exc)
        return result

    def _flush_spool(self) -> None:
        with self._spool_lock:
            batch, self._spool_waiting = self._spool_waiting, []
        if not batch:
            return
        try:
            ids = self._guarded(self._transaction, lambda tx: [tx.spool(inbound) for inbound, _ in batch])
        except BaseException as exc:
            for _, result in batch:
                result.set_exception(exc)
            return
        for (_, result), spool_id in zip(batch, ids):
            result.set_result(spool_id)

    def _fail_spool(self, exc: BaseException) -> None:
        with self._spool_lock:
            batch, self._spool_waiting = self._spool_waiting, []
        for _, result in batch:
            result.set_exception(exc)

    def pending_spool_ids(self, limit: int = 100) -> list[int]:
        return self.call(lambda: [r[0] for r in self.conn.execute(
            "SELECT id FROM spool WHERE state = 'spooled' ORDER BY id LIMIT ?", (limit,))])

    def spool_entry(self, spool_id: int) -> SpoolEntry | None:
        return self.call(lambda: Tx(self.conn).spool_entry(spool_id))

    def quarantine(self, spool_id: int, error: str) -> None:
        self.transaction(lambda tx: tx.set_spool_state(spool_id, "quarantined", error=error))

    def requeue(self, spool_ids: Sequence[int] | None = None, states: Iterable[str] = ("quarantined",)) -> list[int]:
        """Put quarantined (or given) spool rows back to 'spooled' for `mailgate replay`; returns their ids."""

        def run(tx: Tx) -> list[int]:
            if spool_ids:
                marks = ",".join("?" * len(spool_ids))
                ids = [r[0] for r in tx.conn.execute(f"SELECT id FROM spool WHERE id IN ({marks})", list(spool_ids))]
            else:
                st = list(states)
                marks = ",".join("?" * len(st))
                ids = [r[0] for r in tx.conn.execute(f"SELECT id FROM spool WHERE state IN ({marks})", st)]
            for sid in ids:
                tx.conn.execute("UPDATE spool SET state='spooled', error=NULL WHERE id=? AND state != 'done'", (sid,))
            return ids

        return self.transaction(run)

    def spool_counts(self) -> dict[str, int]:
        return self.call(lambda: {r[0]: r[1] for r in self.conn.execute("SELECT state, count(*) FROM spool GROUP BY state")})

    def quarantined(self) -> list[tuple[int, str, str]]:
        return self.call(lambda: [(r[0], r[1] or "", r[2] or "") for r in self.conn.execute(
            "SELECT id, received_at, error FROM spool WHERE state='quarantined' ORDER BY id")])

    # -- secrets and small state ----------------------------------------------------------------

    def meta_secret(self, key: str = "reply_token_secret") -> str:
        """A random secret generated once and kept in the database (used when the config sets none)."""

        def run(tx: Tx) -> str:
            row = tx.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(32)
            tx.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

        return self.transaction(run)

    def imap_state(self, account: str, folder: str) -> tuple[int, int] | None:
        """(uidvalidity, last committed uid) for an IMAP folder, or None when never seen."""
        return self.call(lambda: (lambda r: (r[0], r[1]) if r else None)(self.conn.execute(
            "SELECT uidvalidity, last_uid FROM imap_state WHERE account=? AND folder=?", (account, folder)).fetchone()))

    def set_imap_state(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        self.transaction(lambda tx: tx.conn.execute(
            "INSERT INTO imap_state VALUES (?, ?, ?, ?) ON CONFLICT(account, folder) DO UPDATE SET "
            "uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid", (account, folder, uidvalidity, last_uid)))

    def spool_ids_for_source_ref(self, ref: str) -> list[int]:
        return self.call(lambda: [r[0] for r in self.conn.execute("SELECT id FROM spool WHERE source_ref=?", (ref,))])

    # -- outbox -----------------------------------------------------------------------------------

    def due_outbox(self, now: datetime, limit: int = 20) -> list[OutboxItem]:
        """Queued mail whose next attempt is due: acknowledgements first, each group by SLA due time."""
        return self.call(lambda: [outbox_item_from_row(r) for r in self.conn.execute(
            "SELECT * FROM outbox WHERE state='queued' AND next_attempt_at <= ? ORDER BY kind != 'ack', due_at, id LIMIT ?",
            (iso(now), limit))])

    def mark_sent(self, item_id: int, at: datetime) -> None:
        def run(tx: Tx) -> None:
            tx.conn.execute("UPDATE outbox SET state='sent', sent_at=?, attempts=attempts+1, last_error=NULL WHERE id=?",
                            (iso(at), item_id))
            row = tx.conn.execute("SELECT ticket_number, kind, rcpt_to FROM outbox WHERE id=?", (item_id,)).fetchone()
            if row and row["ticket_number"] is not None:
                if row["kind"] == "ack":
                    tx.conn.execute("UPDATE tickets SET acknowledged_at=coalesce(acknowledged_at, ?) WHERE number=?",
                                    (iso(at), row["ticket_number"]))
                    tx.sla_acknowledged(row["ticket_number"], at)
                tx.event(row["ticket_number"], f"{row['kind']}_sent", f"to {', '.join(json.loads(row['rcpt_to']))}", at=at)

        self.transaction(run, durable=False)

    def mark_retry(self, item_id: int, error: str, next_at: datetime, give_up: bool) -> None:
        def run(tx: Tx) -> None:
            state = "failed" if give_up else "queued"
            tx.conn.execute("UPDATE outbox SET state=?, attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
                            (state, error, iso(next_at), item_id))
            row = tx.conn.execute("SELECT ticket_number, kind FROM outbox WHERE id=?", (item_id,)).fetchone()
            if row and row["ticket_number"] is not None:
                tx.event(row["ticket_number"], f"{row['kind']}_{'failed' if give_up else 'deferred'}", error)

        self.transaction(run)

    def outbox_counts(self) -> dict[str, int]:
        return self.call(lambda: {r[0]: r[1] for r in self.conn.execute("SELECT state, count(*) FROM outbox GROUP BY state")})

    # -- SLA timer, reports and metrics (read side; mailgate.slatrack / report / metrics) --------

    def sla_due_tickets(self, now: datetime, limit: int = 200) -> list[int]:
        """Tickets whose next SLA alarm (or pending recompute) is due at `now`, earliest first."""
        return self.call(lambda: [r[0] for r in self.conn.execute(
            "SELECT number FROM tickets WHERE next_alarm_at IS NOT NULL AND next_alarm_at <= ?"
            " ORDER BY next_alarm_at, number LIMIT ?", (iso(now), limit))])

    def sla_next_alarm(self) -> datetime | None:
        """The earliest next_alarm_at of any ticket (when the SLA timer must look again)."""
        return self.call(lambda: parse_iso(self.conn.execute("SELECT min(next_alarm_at) FROM tickets").fetchone()[0]))

    def report_tickets(self, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
        """Tickets opened in [since, until) with their SLA milestones and first ack sent_at (None = unbounded)."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(
            "SELECT t.number, t.status, t.priority, t.team, t.assignee, t.sla_policy, t.created_at,"
            " coalesce(t.sla_started_at, t.created_at) AS started_at, t.ack_met_at, t.first_response_met_at,"
            " t.resolved_at, (SELECT min(o.sent_at) FROM outbox o WHERE o.ticket_number = t.number AND o.kind = 'ack'"
            " AND o.sent_at IS NOT NULL) AS ack_sent_at FROM tickets t"
            " WHERE t.created_at >= coalesce(?, '') AND t.created_at < coalesce(?, '9999') ORDER BY t.number",
            (iso(since), iso(until)))])

    def report_resolved(self, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
        """Tickets whose current resolution (solved or closed) falls in [since, until)."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(
            "SELECT number, team, assignee, sla_policy, resolved_at FROM tickets WHERE resolved_at IS NOT NULL"
            " AND resolved_at >= coalesce(?, '') AND resolved_at < coalesce(?, '9999') ORDER BY number",
            (iso(since), iso(until)))])

    def report_clocks(self, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
        """The SLA clocks (target, due, met) of tickets opened in [since, until)."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(
            "SELECT c.ticket_number, c.key, c.target, c.due_at, c.met_at FROM sla_clocks c"
            " JOIN tickets t ON t.number = c.ticket_number"
            " WHERE t.created_at >= coalesce(?, '') AND t.created_at < coalesce(?, '9999') ORDER BY c.ticket_number, c.key",
            (iso(since), iso(until)))])

    def report_alarms(self, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
        """Fired SLA warnings and breaches of tickets opened in [since, until)."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(
            "SELECT a.ticket_number, a.clock, a.kind, a.target, a.due_at, a.fired_at, a.met_at FROM sla_alarms a"
            " JOIN tickets t ON t.number = a.ticket_number"
            " WHERE t.created_at >= coalesce(?, '') AND t.created_at < coalesce(?, '9999') ORDER BY a.ticket_number",
            (iso(since), iso(until)))])

    def report_backlog(self) -> list[dict[str, Any]]:
        """Tickets not solved or closed right now."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(
            "SELECT number, status, team, assignee, sla_policy, created_at FROM tickets"
            " WHERE status NOT IN ('solved', 'closed') ORDER BY number")])

    def metrics_snapshot(self, now: datetime, latency_buckets: Sequence[float]) -> dict[str, Any]:
        """Counts for the Prometheus endpoint, read in one go: spool by source/state, tickets, acks and their
        latency buckets (seconds, cumulative), outbox depth and oldest age, fired SLA alarms, delivery errors."""

        def run() -> dict[str, Any]:
            c = self.conn
            latency = ("(julianday(o.sent_at) - julianday(coalesce(t.sla_started_at, t.created_at))) * 86400.0")
            acks = (" FROM outbox o JOIN tickets t ON t.number = o.ticket_number WHERE o.kind = 'ack' AND o.state = 'sent'")
            buckets = [c.execute(f"SELECT count(*) {acks} AND {latency} <= ?", (b,)).fetchone()[0] for b in latency_buckets]
            count, total = c.execute(f"SELECT count(*), coalesce(sum(max({latency}, 0)), 0) {acks}").fetchone()
            oldest = c.execute("SELECT min(created_at) FROM outbox WHERE state = 'queued'").fetchone()[0]
            return {
                "received": [(r[0], r[1], r[2]) for r in c.execute("SELECT source, state, count(*) FROM spool GROUP BY 1, 2")],
                "tickets": c.execute("SELECT count(*) FROM tickets").fetchone()[0],
                "tickets_by_status": [(r[0], r[1]) for r in c.execute("SELECT status, count(*) FROM tickets GROUP BY 1")],
                "sent": [(r[0], r[1]) for r in c.execute("SELECT kind, count(*) FROM outbox WHERE state = 'sent' GROUP BY 1")],
                "ack_latency": (buckets, count, total),
                "outbox_depth": c.execute("SELECT count(*) FROM outbox WHERE state = 'queued'").fetchone()[0],
                "outbox_failed": c.execute("SELECT count(*) FROM outbox WHERE state = 'failed'").fetchone()[0],
                "outbox_oldest_age": (now - parse_iso(oldest)).total_seconds() if oldest else 0.0,
                "alarms": [(r[0], r[1], r[2]) for r in c.execute(
                    "SELECT kind, target, count(*) FROM sla_alarms GROUP BY 1, 2")],
                "delivery_errors": c.execute("SELECT count(*) FROM events WHERE kind LIKE '%\\_deferred' ESCAPE '\\'"
                                             " OR kind LIKE '%\\_failed' ESCAPE '\\'").fetchone()[0],
            }

        return self.call(run)

    # -- reading tickets (CLI) --------------------------------------------------------------------

    def tickets(self, status: str | None = None, limit: int = 200) -> list[Ticket]:
        def run() -> list[Ticket]:
            sql = ("SELECT t.*, (SELECT count(*) FROM messages m WHERE m.ticket_number=t.number) AS message_count "
                   "FROM tickets t")
            args: list[Any] = []
            if status:
                sql += " WHERE status=?"
                args.append(status)
            sql += " ORDER BY number DESC LIMIT ?"
            args.append(limit)
            return [ticket_from_row(r) for r in self.conn.execute(sql, args)]

        return self.call(run)

    def ticket(self, number: int) -> Ticket | None:
        return self.call(lambda: Tx(self.conn).ticket(number))

    def ticket_messages(self, number: int) -> list[StoredMessage]:
        return self.call(lambda: [message_from_row(r) for r in self.conn.execute(
            "SELECT * FROM messages WHERE ticket_number=? ORDER BY id", (number,))])

    def ticket_events(self, number: int) -> list[Event]:
        return self.call(lambda: [Event(r["ticket_number"], parse_iso(r["at"]), r["kind"], r["detail"] or "")  # type: ignore[arg-type]
                                  for r in self.conn.execute("SELECT * FROM events WHERE ticket_number=? ORDER BY id", (number,))])

    def participants(self, number: int) -> list[Participant]:
        return self.call(lambda: Tx(self.conn).participants(number))

    def message_count(self) -> int:
        return self.call(lambda: self.conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Messages matching a full-text query (SQLite FTS5 syntax: words, "phrases", OR, prefix*), best first."""

        def run() -> list[SearchHit]:
            try:
                rows = self.conn.execute(
                    "SELECT m.ticket_number, m.message_id, m.kind, m.from_addr, m.subject, m.created_at,"
                    " snippet(messages_fts, 1, '[', ']', ' … ', 12) AS snippet"
                    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                    " WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?", (text, limit)).fetchall()
            except sqlite3.OperationalError as exc:  # the query's syntax, not the database's health
                raise ValueError(f"cannot search for {text!r}: {exc}") from None
            return [SearchHit(r["ticket_number"], r["message_id"], r["kind"], r["from_addr"] or "", r["subject"] or "",
                              parse_iso(r["created_at"]), " ".join((r["snippet"] or "").split()))  # type: ignore[arg-type]
                    for r in rows]

        return self.call(run)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL for reports and tests (rows as dicts)."""
        return self.call(lambda: [dict(r) for r in self.conn.execute(sql, list(args))])

    # -- maintenance: `mailgate db vacuum|backup|prune|check` and the daemon's daily retention -----

    def vacuum(self) -> tuple[int, int]:
        """VACUUM, then truncate the WAL; returns the file size (bytes) before and after.

        VACUUM is one long write transaction: a running daemon waits for it (and answers 451 once its
        busy timeout passes), so run it at a quiet hour.
        """

        def run() -> tuple[int, int]:
            before = _db_bytes(self.path)
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("PRAGMA optimize")
            return before, _db_bytes(self.path)

        return self.call(run)

    def backup(self, target: str | Path) -> int:
        """Online copy through SQLite's backup API into `target` (a single self-contained file); returns its size.

        One step under one read transaction: in WAL mode the daemon keeps writing meanwhile and the copy is
        the database as of the moment the step began. The copy is checked (integrity_check) and only then
        renamed into place, so `target` is never a half-written file.
        """
        target = Path(target)
        partial = target.with_name(target.name + ".partial")

        def run() -> int:
            partial.unlink(missing_ok=True)
            dest = sqlite3.connect(str(partial), isolation_level=None)
            try:
                self.conn.backup(dest)
                dest.execute("PRAGMA journal_mode=DELETE")
                problems = [r[0] for r in dest.execute("PRAGMA integrity_check")]
                if problems != ["ok"]:
                    raise StorageUnavailable(f"backup {target}: the copy fails integrity_check: {'; '.join(problems[:5])}")
            finally:
                dest.close()
            partial.replace(target)
            return target.stat().st_size

        try:
            return self.call(run)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def integrity_check(self) -> list[str]:
        """PRAGMA integrity_check: ['ok'] for a sound database, else the problems found."""
        return self.call(lambda: [r[0] for r in self.conn.execute("PRAGMA integrity_check")])

    def prune_raw(self, days: int, now: datetime | None = None) -> int:
        """Retention: clear the raw bytes of spool rows whose ticket has been closed for more than `days` days.

        Keeps the row, its sha256 and size, marks `raw_pruned_at` and records a `raw_pruned` event on the
        ticket. Open (new, open, pending, solved) tickets, quarantined and still-spooled rows are never
        touched. Returns how many rows were cleared.
        """
        if days <= 0:
            return 0
        at = now or utcnow()
        cutoff = iso(at - timedelta(days=days))

        def run(tx: Tx) -> int:
            rows = tx.conn.execute(
                "SELECT s.id, s.ticket_number FROM spool s JOIN tickets t ON t.number = s.ticket_number"
                " WHERE t.status = 'closed' AND t.closed_at IS NOT NULL AND t.closed_at <= ?"
                " AND s.state IN ('done', 'duplicate') AND s.raw_pruned_at IS NULL", (cutoff,)).fetchall()
            per_ticket: dict[int, int] = {}
            for r in rows:
                tx.conn.execute("UPDATE spool SET raw = X'', raw_pruned_at = ? WHERE id = ?", (iso(at), r[0]))
                per_ticket[r[1]] = per_ticket.get(r[1], 0) + 1
            for number, count in per_ticket.items():
                tx.event(number, "raw_pruned", f"{count} raw message(s) cleared by retention"
                         f" ({days} days after close); sha256 and size kept", at=at)
            return len(rows)

        return self.transaction(run)


def _db_bytes(path: str) -> int:
    return sum(Path(path + suffix).stat().st_size for suffix in ("", "-wal") if Path(path + suffix).exists())


def probe(path: str | Path) -> str:
    """For `mailgate check`: open an existing database without migrating it and take (then release) the write lock.

    Returns a one-line description; raises StorageUnavailable saying what is wrong.
    """
    path = Path(path)
    if not path.exists():
        folder = path.parent
        if not folder.is_dir():
            raise StorageUnavailable(f"{path}: the folder {folder} does not exist")
        probe_file = folder / f".mailgate-check-{secrets.token_hex(4)}"
        try:
            probe_file.write_bytes(b"")
            probe_file.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"{path}: cannot create files in {folder}: {exc.strerror}") from None
        return f"{path}: not created yet; {folder} is writable"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=2.0)
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"{path}: cannot open for writing: {exc}") from None
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name IN ('spool', 'migrations')")]
        if "spool" not in names:
            return f"{path}: writable ({mode}); not a mailgate database yet (tables are created on first start)"
        counts = dict(conn.execute("SELECT state, count(*) FROM spool GROUP BY state").fetchall())
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        return (f"{path}: writable ({mode}); {tickets} tickets; spool: "
                + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "empty"))
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"{path}: {exc}") from None
    finally:
        conn.close()
