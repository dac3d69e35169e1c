"""Inbound mail as received (raw bytes + envelope) and its parsed view `Mail`; `parse()` turns one into the other.

Parsing never raises on bad input: what cannot be read becomes a recorded defect, and the raw bytes are
always kept by the caller. Limits (parts, nesting depth) stop MIME bombs with a defect.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.headerregistry import Address as _HeaderAddress
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime


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
        return str(_HeaderAddress(display_name=self.name, addr_spec=self.addr)) if "@" in self.addr else self.addr

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


# ---------------------------------------------------------------------------------------------
# Parsing

MAX_PARTS = 1000
MAX_DEPTH = 50
_MSGID_RE = re.compile(r"<([^<>\s]+)>")


def _ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = _MSGID_RE.findall(value)
    if not found:
        found = [tok.strip("<>") for tok in value.split() if "@" in tok]
    seen: list[str] = []
    for mid in found:
        if mid not in seen:
            seen.append(mid)
    return tuple(seen)


def _addresses(values: list[str]) -> tuple[Address, ...]:
    out = []
    for name, addr in getaddresses([v for v in values if v]):
        if not addr and not name:
            continue
        out.append(Address(name=_clean_line(name), addr=_clean_line(addr).lower()))
    return tuple(out)


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_line(value: str) -> str:
    """One line of header text: no CR/LF or control characters, whitespace folded."""
    value = _CONTROL_RE.sub("", value.replace("\r", " ").replace("\n", " "))
    return " ".join(value.split())


def _header_text(msg: Message, name: str, defects: list[str]) -> str | None:
    try:
        value = msg.get(name)
    except Exception as exc:  # a header the policy cannot parse
        defects.append(f"header {name}: {exc}")
        raw = msg.get_all(name, failobj=[None], )  # type: ignore[arg-type]
        value = raw[0] if raw else None
    if value is None:
        return None
    return str(value)


def _decode_part(part: Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    if not isinstance(payload, bytes):
        return str(payload)
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8", "cp1252"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            if candidate == charset:
                defects.append(f"charset {charset!r} could not decode a part; fell back")
            continue
    return payload.decode("latin-1")


_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def sanitize_filename(name: str | None, fallback: str = "attachment") -> str:
    """A file name safe to show and to write: no path parts, control characters or reserved characters."""
    if not name:
        return fallback
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME_RE.sub("_", name).strip(" .")
    if not name:
        return fallback
    if len(name) > 180:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: 180 - len(ext) - 1] + ("." + ext if ext else "")
    return name


_TAG_RE = re.compile(r"<[^>]+>")
_BLOCK_RE = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6])\b[^>]*>", re.I)
_DROP_RE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body."""
    import html as _html

    text = _DROP_RE.sub("", html)
    text = _BLOCK_RE.sub("\n", text)
    text = _TAG_RE.sub("", text)
    text = _html.unescape(text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse(raw: bytes) -> Mail:
    """Parse raw RFC 5322 bytes into a `Mail`; never raises on malformed input."""
    defects: list[str] = []
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for d in getattr(msg, "defects", []):
        defects.append(type(d).__name__)

    headers: list[tuple[str, str]] = []
    for key in msg.keys():
        try:
            values = msg.get_all(key) or []
        except Exception as exc:
            defects.append(f"header {key}: {exc}")
            continue
        for v in values:
            headers.append((key, _clean_line(str(v))))
    # keep one (name, value) per occurrence, in order
    dedup: list[tuple[str, str]] = []
    seen_pairs: set[tuple[str, str]] = set()
    for pair in headers:
        if pair not in seen_pairs:
            dedup.append(pair)
            seen_pairs.add(pair)

    mid_values = _ids(_header_text(msg, "Message-ID", defects))
    synthesised = not mid_values
    message_id = mid_values[0] if mid_values else f"{hashlib.sha256(raw).hexdigest()[:32]}@mailgate.invalid"

    date = None
    date_text = _header_text(msg, "Date", defects)
    if date_text:
        try:
            date = parsedate_to_datetime(date_text)
            if date.tzinfo is None:
                date = date.replace(tzinfo=timezone.utc)
        except Exception:
            defects.append("unreadable Date header")

    text_parts: list[str] = []
    html_parts: list[str] = []
    attachments: list[Attachment] = []
    count = 0

    def walk(part: Message, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            if count == MAX_PARTS + 1:
                defects.append(f"more than {MAX_PARTS} MIME parts; the rest were not read")
            return
        if depth > MAX_DEPTH:
            defects.append(f"MIME nesting deeper than {MAX_DEPTH}; deeper parts were not read")
            return
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                for sub in payload:
                    walk(sub, depth + 1)
            return
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = None
        try:
            filename = part.get_filename()
        except Exception:
            defects.append("unreadable attachment file name")
        if disposition == "attachment" or filename or not ctype.startswith("text/"):
            data = part.get_payload(decode=True) or b""
            if not isinstance(data, bytes):
                data = str(data).encode()
            cid = part.get("Content-ID")
            attachments.append(
                Attachment(
                    filename=sanitize_filename(filename, fallback=f"part-{count}"),
                    content_type=ctype,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    content=data,
                    content_id=_ids(str(cid))[0] if cid and _ids(str(cid)) else None,
                    inline=disposition == "inline",
                )
            )
            return
        body = _decode_part(part, defects)
        if ctype == "text/html":
            html_parts.append(body)
        else:
            text_parts.append(body)

    try:
        walk(msg, 0)
    except RecursionError:
        defects.append("MIME structure too deep to read")

    html = "\n".join(html_parts) if html_parts else None
    text = "\n".join(text_parts).strip("\n")
    if not text and html:
        text = html_to_text(html)

    from_list = _addresses([_header_text(msg, "From", defects) or ""])
    return Mail(
        message_id=message_id,
        in_reply_to=_ids(_header_text(msg, "In-Reply-To", defects)),
        references=_ids(_header_text(msg, "References", defects)),
        from_addr=from_list[0] if from_list else None,
        to=_addresses(msg.get_all("To") or []),
        cc=_addresses(msg.get_all("Cc") or []),
        reply_to=_addresses(msg.get_all("Reply-To") or []),
        subject=_clean_line(_header_text(msg, "Subject", defects) or ""),
        date=date,
        text=text,
        html=html,
        attachments=tuple(attachments),
        headers=tuple(dedup),
        defects=tuple(defects),
        size=len(raw),
        message_id_synthesised=synthesised,
    )
