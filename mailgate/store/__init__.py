"""The only package that speaks SQL: SQLite (WAL) through sqlite-utils, one writer thread, migrations.

    records.py   the frozen records handed out, timestamps as ISO 8601 UTC text
    schema.py    migrations (sqlite-utils), applied once each, in order
    database.py  Store: the writer thread, transactions, group-committed spool, reads for CLI/reports/metrics
    tx.py        Tx: the statements one filing transaction may run
"""

from .database import BUSY_TIMEOUT_MS, Store, probe
from .records import Event, OutboxItem, Participant, SearchHit, SpoolEntry, StoredMessage, Ticket, iso, parse_iso, utcnow
from .schema import MIGRATIONS, migration
from .tx import Tx

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "Event", "OutboxItem", "Participant", "SearchHit", "SpoolEntry", "Store", "StoredMessage",
           "Ticket", "Tx", "iso", "migration", "parse_iso", "probe", "utcnow"]
