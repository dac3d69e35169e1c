"""The shapes of mail: `Inbound` (raw bytes + envelope, as received) and `Mail` (the parsed view) with its parts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address as _HeaderAddress


@dataclass(frozen=True)
class Inbound:
    """One message exactly as a source received it, with its envelope."""

    raw: bytes
    source: str  # "smtp" | "imap" | "ingest" | "replay"
    received_at: datetime  # timezone-aware, UTC
    peer: str | None = None  # "ip:port" for SMTP, "account/folder" for IMAP
    mail_from: str | None = None  # envelope sender; "" is the null return path <>
    rcpt_to: tuple[str, ...] = ()  # envelope recipients
    source_ref: str | None = None  # e.g. "imap:acct/INBOX/uidvalidity/uid"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True)
class Address:
    """A mailbox: display name and lower-cased addr-spec ("" when unreadable)."""

    name: str
    addr: str

    def __str__(self) -> str:
        if not self.name:
            return self.addr
        try:
            return str(_HeaderAddress(display_name=self.name, addr_spec=self.addr)) if "@" in self.addr else self.addr
        except (ValueError, IndexError, TypeError):  # an addr-spec the header registry refuses
            return self.addr

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]


@dataclass(frozen=True)
class Attachment:
    """One attached (or inline) part: sanitised file name, MIME type, size and digest of the decoded bytes."""

    filename: str
    content_type: str
    size: int
    sha256: str
    content: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False
    description: str = ""  # Content-Description, decoded, one line


@dataclass(frozen=True)
class Mail:
    """The parsed view of one message: what threading, screening, rules and storage read."""

    message_id: str  # without angle brackets; synthesised from the raw digest when missing
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_addr: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    date: datetime | None
    text: str  # readable text body (HTML-only mail is converted)
    html: str | None  # the HTML body as sent (sanitise before display)
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]  # (name, decoded value) in order, names as written
    defects: tuple[str, ...]
    size: int
    message_id_synthesised: bool = False
    text_from_html: bool = False  # True when `text` was converted from `html` (no text/plain body)

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded, or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def sender(self) -> str:
        """The From address (lower-case), or "" when there is none."""
        return self.from_addr.addr if self.from_addr else ""
