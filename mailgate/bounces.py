"""Bounces recognised (RFC 3464 delivery reports and the common non-standard kinds): original Message-IDs and failed recipients."""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from .message import Inbound, Mail


_BOUNCE_SUBJECT_RE = re.compile(
    r"^\s*(?:undeliver(?:ed|able)\b|undelivered mail returned to sender|delivery status notification"
    r"|mail delivery failed|returned mail\b|failure notice|delivery failure|non[- ]?delivery|"
    r"delivery has failed|message not delivered|benachrichtung zum übermittlungsstatus|unzustellbar"
    r"|mail delivery system|non remis|échec de la remise|onbestelbaar|no se puede entregar)",
    re.I,
)
_DAEMON_LOCALS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_HEADER_MSGID_RE = re.compile(r"^[ \t>]*Message-I[Dd]:[ \t]*\n?[ \t]*<([^<>\s]+@[^<>\s]+)>", re.I | re.M)
_BODY_RCPT_RE = re.compile(r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>:?", re.M)
_HEADER_PARTS = ("text/rfc822-headers", "message/global-headers")
_MESSAGE_PARTS = ("message/rfc822", "message/global")
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
_MAX_WALK = 200


@dataclass(frozen=True)
class Bounce:
    kind: str  # "" | "dsn" | "non-standard"
    reason: str
    message_ids: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()


def _local(addr: str) -> str:
    return addr.strip().strip("<>").rpartition("@")[0 if "@" in addr else 2].lower()


def is_daemon_address(addr: str | None) -> bool:
    return bool(addr) and _local(addr or "") in _DAEMON_LOCALS


def _dedup(items: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return tuple(out)


def _recipient(value: str) -> str:
    addr = value.partition(";")[2] if ";" in value else value
    addr = addr.strip().strip("<>").strip().lower()
    return addr if "@" in addr else ""


def _status_fields(part: Message) -> list[list[tuple[str, str]]]:
    """The field blocks of a delivery-status part, however the parser presented it."""
    payload = part.get_payload()
    blocks: list[list[tuple[str, str]]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append([(k.lower(), str(v)) for k, v in block.items()])
        return blocks
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return _text_blocks(text)


def _text_blocks(text: str) -> list[list[tuple[str, str]]]:
    blocks: list[list[tuple[str, str]]] = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        hdrs = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(chunk.strip("\r\n") + "\n\n")
        fields = [(k.lower(), str(v)) for k, v in hdrs.items()]
        if fields:
            blocks.append(fields)
    return blocks


def _recipients_from_blocks(blocks: list[list[tuple[str, str]]]) -> list[str]:
    found: list[str] = []
    for fields in blocks:
        d = dict(fields)
        if "final-recipient" not in d and "original-recipient" not in d:
            continue
        action = d.get("action", "failed").strip().lower()
        if action != "failed":
            continue
        for key in ("final-recipient", "original-recipient"):
            if key in d:
                found.append(_recipient(d[key]))
    return found


def _ids_from_headers_text(text: str) -> list[str]:
    hdrs = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip("\r\n"))
    return [m for v in hdrs.get_all("Message-ID", []) for m in re.findall(r"<([^<>\s]+)>", str(v))]


def _inspect_parts(mail: Mail, raw: bytes) -> tuple[list[str], list[str], list[str]]:
    """(status-part recipients, embedded Message-IDs, inline-header Message-IDs) from the raw message."""
    rcpts: list[str] = []
    embedded: list[str] = []
    for att in mail.attachments:  # when message.py keeps these parts as attachments
        if att.content_type in _STATUS_PARTS:
            rcpts += _recipients_from_blocks(_text_blocks(att.content.decode("utf-8", "replace")))
        elif att.content_type in _MESSAGE_PARTS + _HEADER_PARTS:
            embedded += _ids_from_headers_text(att.content.decode("utf-8", "replace").split("\n\n", 1)[0])
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        stack: list[tuple[Message, int]] = [(msg, 0)]
        count = 0
        while stack and count < _MAX_WALK:
            part, depth = stack.pop(0)
            count += 1
            ctype = part.get_content_type()
            if ctype in _STATUS_PARTS:
                rcpts += _recipients_from_blocks(_status_fields(part))
                continue
            if ctype in _MESSAGE_PARTS:
                inner = part.get_payload()
                inner = inner[0] if isinstance(inner, list) and inner else inner
                if isinstance(inner, Message):
                    embedded += re.findall(r"<([^<>\s]+)>", str(inner.get("Message-ID", "")))
                continue  # never descend into the returned message itself
            if ctype in _HEADER_PARTS:
                data = part.get_payload(decode=True)
                if isinstance(data, bytes):
                    embedded += _ids_from_headers_text(data.decode("utf-8", "replace"))
                continue
            if part.is_multipart() and depth < 8:
                payload = part.get_payload()
                if isinstance(payload, list):
                    stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    except Exception:  # a broken report still counts as a bounce; we just learn less from it
        pass
    inline = _HEADER_MSGID_RE.findall(mail.text)
    return rcpts, embedded, inline


def detect_bounce(mail: Mail, inbound: Inbound) -> Bounce:
    ctype = (mail.header("Content-Type") or "").lower()
    is_dsn = ctype.startswith("multipart/report") and re.search(r"report-type\s*=\s*\"?delivery-status", ctype) is not None
    daemon_from = is_daemon_address(mail.sender)
    subject_hit = bool(_BOUNCE_SUBJECT_RE.search(mail.subject))
    null_path = null_return_path(mail, inbound)
    if is_dsn:
        kind, reason = "dsn", "multipart/report; report-type=delivery-status (RFC 3464)"
    elif daemon_from and _local(mail.sender) != "postmaster":
        kind, reason = "non-standard", f"From {mail.sender}"
    elif subject_hit and (daemon_from or null_path or mail.header("Auto-Submitted") or mail.header("X-Failed-Recipients")):
        kind, reason = "non-standard", f"bounce subject {mail.subject[:60]!r} from an automatic sender"
    else:
        return Bounce("", "not a delivery report")
    rcpts, embedded, inline = _inspect_parts(mail, inbound.raw)
    ids = [m for m in embedded + inline if m != mail.message_id]
    if not ids:
        ids = [m for m in mail.references + mail.in_reply_to]
    if kind == "non-standard" or not rcpts:
        failed = mail.header_all("X-Failed-Recipients")
        rcpts += [a.strip().lower() for v in failed for a in v.split(",") if "@" in a]
        if not rcpts:
            rcpts += [a.lower() for a in _BODY_RCPT_RE.findall(mail.text.split("\n\n--- ", 1)[0])]
    rcpts = [r for r in rcpts if r and not is_daemon_address(r)]
    return Bounce(kind, reason, _dedup(ids), _dedup(rcpts))


def null_return_path(mail: Mail, inbound: Inbound) -> bool:
    if inbound.mail_from is not None:
        return inbound.mail_from.strip() in ("", "<>")
    rp = mail.header("Return-Path")
    return rp is not None and rp.strip() in ("<>", "")
