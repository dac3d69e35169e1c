"""parse(raw) -> Mail: walk the split tree, pick bodies and attachments, read the headers; never raises."""

from __future__ import annotations

import email.parser
import email.utils
import email.policy
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from .charsets import _codec, _decode_bytes
from .headers import _addresses, _clean_line, _header_value, _ids, _raw_text, decode_words
from .htmltext import html_to_text, sanitize_filename
from .mime import _UNREAD, _Part, _repair_head, _split
from .model import Address, Attachment, Mail
from .payload import _UU_BEGIN_RE, _header_params, _payload_bytes, _uudecode


@dataclass
class _Body:
    """What the walk collects."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    from_html: bool = False
    attachments: list[Attachment] = field(default_factory=list)


_CID_NAME_RE = re.compile(r"[\w.-]+\.[A-Za-z]{2,5}\d?@")


def _fallback_name(ctype: str, data: bytes, description: str, fallbacks: tuple[str, ...]) -> str:
    """A name for a part that has none: an enclosed message by its subject, a report by its description,
    media by its kind ("image.png"), anything else "file" (with the extension its type suggests)."""
    main, _, sub = ctype.partition("/")
    if ctype == "message/rfc822":
        try:
            inner = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data[:65536])
            subject = next((v for k, v in inner.raw_items() if k.lower() == "subject"), None)
        except Exception:  # noqa: BLE001 - the enclosed message may be anything
            subject = None
        stem = _header_value(subject, fallbacks, []) if subject else description or "message"
        return sanitize_filename(stem + ".eml", fallback="message.eml")
    if main == "message":
        stem = description or sub
    elif main in ("image", "audio", "video"):
        stem = main
    else:
        stem = description or "file"
    ext = ".txt" if main in ("text", "message") else mimetypes.guess_extension(ctype, strict=False) or ""
    return sanitize_filename(stem + ext, fallback="file")


def _walk(root: _Part, fallbacks: tuple[str, ...], defects: list[str]) -> _Body:
    body = _Body()
    # (part, inside an attached container, an alternative whose text is already taken from a text/plain)
    stack: list[tuple[_Part, bool, bool]] = [(root, False, False)]
    while stack:
        part, attached, secondary = stack.pop()
        head = part.head
        for defect in head.defects:
            defects.append(_defect_text(defect))
        ctype = head.get_content_type()
        if ctype == _UNREAD:
            continue
        disposition = (head.get_content_disposition() or "").lower()
        if ctype.startswith("multipart/") and not part.children:
            defects.append(f"{ctype} without parts; read as one text part")
            ctype = "text/plain"
        if part.children:
            subs = [(p, secondary) for p in part.children]
            if ctype == "multipart/alternative" and not attached:
                subs = _choose_alternatives([p for p, _ in subs], secondary)
            stack.extend((sub, attached or disposition == "attachment", sec) for sub, sec in reversed(subs))
            continue
        params = _header_params(head, "Content-Disposition", fallbacks, defects)
        raw_name = params.get("filename") or _header_params(head, "Content-Type", fallbacks, defects).get("name")
        name = re.sub(r"[\r\n\t]+", " ", decode_words(raw_name, fallbacks, defects)).strip() if raw_name else ""
        description = _header_value(head.get("Content-Description", ""), fallbacks, defects)
        bodylike = ctype in ("text/plain", "text/html") and not attached and not name and disposition != "attachment"
        if bodylike and ctype == "text/plain":
            if not secondary:
                body.texts.append(_take_uuencoded(_part_text(part, fallbacks, defects), body))
            continue
        if bodylike and not body.htmls:  # the first HTML body; later ones are kept as attachments
            html = _part_text(part, fallbacks, defects)
            body.htmls.append(html)
            if not secondary:
                body.texts.append(html_to_text(html))
                body.from_html = True
            continue
        data = _payload_bytes(part, defects, f"attachment {name!r}" if name else f"a {ctype} part")
        cid = _ids(_raw_text(head.get("Content-ID", ""), fallbacks)) if head.get("Content-ID") else ()
        fallback = "document.html" if ctype == "text/html" else _fallback_name(ctype, data, description, fallbacks)
        if not name and cid and _CID_NAME_RE.match(cid[0]):  # Outlook: <image001.png@01D3...>
            name = cid[0].partition("@")[0]
        body.attachments.append(
            Attachment(
                filename=sanitize_filename(name, fallback=fallback),
                content_type=ctype,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                content=data,
                content_id=cid[0] if cid else None,
                inline=disposition == "inline" or (not disposition and bool(cid)),
                description=description,
            )
        )
    return body


def _choose_alternatives(subs: list[_Part], secondary: bool) -> list[tuple[_Part, bool]]:
    """Of a multipart/alternative keep the last text/plain and the last HTML-ish branch (text/html or a
    multipart); the HTML branch is secondary (kept as HTML, not turned into text) when plain text exists."""
    types = [p.head.get_content_type() for p in subs]
    plain = [p for p, t in zip(subs, types) if t == "text/plain"]
    rich = [p for p, t in zip(subs, types) if t == "text/html" or t.startswith("multipart/")]
    chosen = [(plain[-1], secondary)] if plain else []
    if rich:
        chosen.append((rich[-1], secondary or bool(plain)))
    return chosen or [(s, secondary) for s in subs[-1:]]


def _take_uuencoded(text: str, body: _Body) -> str:
    """Move uuencoded files found inside a plain-text body into attachments."""
    if "begin " not in text:
        return text

    def take(match: re.Match[str]) -> str:
        data = _uudecode(match.group(0).encode("latin-1", "replace"))
        name = sanitize_filename(match.group(1), fallback="uuencoded.bin")
        ctype = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        body.attachments.append(
            Attachment(name, ctype, len(data), hashlib.sha256(data).hexdigest(), data, None, False, "uuencoded")
        )
        return ""

    return _UU_BEGIN_RE.sub(take, text)
_DEFECT_TEXT = {
    "StartBoundaryNotFoundDefect": "multipart body without its first boundary; read as one part",
    "CloseBoundaryNotFoundDefect": "multipart body without its closing boundary",
    "MultipartInvariantViolationDefect": "declared multipart but has no parts; read as one part",
    "NoBoundaryInMultipartDefect": "multipart without a boundary parameter; read as one part",
    "MissingHeaderBodySeparatorDefect": "a line that is not a header ended the headers; the rest was read as body",
    "FirstHeaderLineIsContinuationDefect": "the first header line is indented",
    "MisplacedEnvelopeHeaderDefect": "a 'From ' envelope line among the headers",
}


def _defect_text(defect: object) -> str:
    name = type(defect).__name__
    if name in _DEFECT_TEXT:
        return _DEFECT_TEXT[name]
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", name.removesuffix("Defect")).lower()
    return f"MIME: {words}"


_CHARSET_PARAM_RE = re.compile(rb"""charset[ \t]*=[ \t]*["']?([a-z0-9_.:-]{1,40})""")
_CHARSET_WORD_RE = re.compile(rb"=\?([a-z0-9_.:-]{1,40})[*?]")


def _charsets(raw: bytes) -> tuple[str, ...]:
    """Charsets named anywhere in the message (parameters and encoded-words, enclosed messages too),
    besides UTF-8 and Windows-1252, in order of appearance: the fallbacks for undeclared 8-bit text."""
    lowered = raw.lower()
    hits: list[tuple[int, bytes]] = []
    for pattern in (_CHARSET_PARAM_RE, _CHARSET_WORD_RE):
        for count, match in enumerate(pattern.finditer(lowered)):
            hits.append((match.start(), match.group(1)))
            if count >= 100:
                break
    found: list[str] = []
    for _, label in sorted(hits):
        codec = _codec(label.decode("ascii"))
        if codec and codec not in found and codec not in ("utf-8", "cp1252", "ascii"):
            found += [codec, *_RELATIVES.get(codec, ())]
    return tuple(dict.fromkeys(found[:6]))


# An undeclared 8-bit text in a message that declares one of these is most often in a relative.
_RELATIVES = {
    "iso2022_jp": ("cp932", "euc_jp"), "iso2022_jp_ext": ("cp932", "euc_jp"), "cp932": ("euc_jp",),
    "euc_jp": ("cp932",), "iso2022_kr": ("cp949",), "big5hkscs": ("gb18030",),
}


def _part_text(part: _Part, fallbacks: tuple[str, ...], defects: list[str]) -> str:
    data = _payload_bytes(part, defects, "text body")
    charset = _header_params(part.head, "Content-Type", fallbacks, defects).get("charset")
    return _decode_bytes(data, charset, fallbacks, defects, "text body")


def _synthetic_id(raw: bytes) -> str:
    return f"{hashlib.sha256(raw).hexdigest()[:32]}@mailgate.invalid"


def _choose_from(
    from_values: list[str], other: dict[str, list[str]], fallbacks: tuple[str, ...], defects: list[str]
) -> Address | None:
    """The first From mailbox with an address; failing that, Sender's, then Reply-To's (a defect says so)."""
    if len(from_values) > 1:
        defects.append(f"{len(from_values)} From headers; the first readable one was used")
    candidates = _addresses(from_values, fallbacks, defects)
    for cand in candidates:
        if "@" in cand.addr:
            return cand
    for name in ("Sender", "Reply-To"):
        for cand in _addresses(other.get(name.lower(), []), fallbacks, defects):
            if "@" in cand.addr:
                defects.append(f"no usable From address; {name} was used")
                return cand
    if not from_values:
        defects.append("no From header")
    return candidates[0] if candidates else None


def _read_date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        date = parsedate_to_datetime(value)
    except Exception:  # noqa: BLE001 - ValueError, TypeError, OverflowError on garbage
        date = None
    if date is None:
        defects.append(f"unreadable Date header {value[:60]!r}")
        return None
    return date if date.tzinfo is not None else date.replace(tzinfo=timezone.utc)


MAX_DEFECTS = 100


def _tidy(defects: list[str]) -> tuple[str, ...]:
    """Defects once each, in order of finding, at most MAX_DEFECTS."""
    unique = list(dict.fromkeys(defects))
    if len(unique) > MAX_DEFECTS:
        unique = unique[: MAX_DEFECTS - 1] + [f"... and {len(unique) - MAX_DEFECTS + 1} more defects"]
    return tuple(unique)


def parse(raw: bytes) -> Mail:
    """Parse raw RFC 5322 bytes into a `Mail`; never raises, whatever the input."""
    raw = bytes(raw)
    try:
        return _parse(raw)
    except Exception as exc:  # noqa: BLE001 - the promise: a Mail for any input, the problem recorded
        return Mail(
            message_id=_synthetic_id(raw), in_reply_to=(), references=(), from_addr=None, to=(), cc=(),
            reply_to=(), subject="", date=None, text="", html=None, attachments=(), headers=(),
            defects=(f"message could not be parsed ({type(exc).__name__}: {str(exc)[:120]})",),
            size=len(raw), message_id_synthesised=True,
        )


_TEXT_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # control characters but \t \n \f \r


def _parse(raw: bytes) -> Mail:
    defects: list[str] = []
    if not raw.strip():
        defects.append("empty message")
    root = _split(_repair_head(raw, defects), defects)
    msg = root.head
    if raw.strip() and not msg.keys():
        defects.append("no headers found; everything was read as body")
    fallbacks = _charsets(raw)

    raw_headers: dict[str, list[str]] = {}
    headers: list[tuple[str, str]] = []
    for name, value in msg.raw_items():
        key = _clean_line(_raw_text(name, ()))
        text = _raw_text(value, fallbacks)
        raw_headers.setdefault(key.lower(), []).append(text)
        headers.append((key, _header_value(text, fallbacks, defects)))

    def first(name: str) -> str | None:
        values = raw_headers.get(name.lower())
        return values[0] if values else None

    mids = _ids(_clean_line(first("Message-ID") or ""))
    body = _walk(root, fallbacks, defects)
    html = body.htmls[0].replace("\x00", "") if body.htmls else None
    text = _TEXT_CONTROL_RE.sub("", "\n\n".join(t.strip("\r\n") for t in body.texts if t.strip()))
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    return Mail(
        message_id=mids[0] if mids else _synthetic_id(raw),
        in_reply_to=_ids(_clean_line(first("In-Reply-To") or "")),
        references=_ids(_clean_line(" ".join(raw_headers.get("references", [])))),
        from_addr=_choose_from(raw_headers.get("from", []), raw_headers, fallbacks, defects),
        to=_addresses(raw_headers.get("to", []), fallbacks, defects),
        cc=_addresses(raw_headers.get("cc", []), fallbacks, defects),
        reply_to=_addresses(raw_headers.get("reply-to", []), fallbacks, defects),
        subject=_header_value(first("Subject") or "", fallbacks, defects),
        date=_read_date(_clean_line(first("Date") or ""), defects),
        text=text,
        html=html,
        attachments=tuple(body.attachments),
        headers=tuple(headers),
        defects=_tidy(defects),
        size=len(raw),
        message_id_synthesised=not mids,
        text_from_html=body.from_html,
    )
