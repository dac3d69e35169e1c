"""Inbound mail as received (raw bytes + envelope) and its parsed view `Mail`; `parse()` turns one into the other.

Parsing never raises on bad input: what cannot be read becomes a recorded defect (plain English in
`Mail.defects`), and the raw bytes are always kept by the caller. The MIME tree is split here,
iteratively (one regex search per boundary line, no recursion, no per-line Python loop), with
limits against bombs: parts nested deeper than `MAX_DEPTH` are not read and the split stops after
`MAX_PARTS` parts. The stdlib `email` package (compat32) parses each header block; header text,
charsets, encoded-words, RFC 2231 parameters, transfer encodings and file names are decoded here,
leniently. Measurements and the choice over mail-parser: docs/parsing.md.
"""

from __future__ import annotations

import binascii
import codecs
import email.parser
import email.utils
import email.policy
import hashlib
import html as _html
import mimetypes
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.headerregistry import Address as _HeaderAddress
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser


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


# ---------------------------------------------------------------------------------------------
# Limits

MAX_PARTS = 1000  # MIME parts read; the message is cut after this many
MAX_DEPTH = 50  # MIME nesting levels read (multipart and message/rfc822 both count)
MAX_ADDRESS_HEADER = 64 * 1024  # characters of one address header that are parsed
MAX_FILENAME = 180  # characters kept of an attachment name
MAX_HEADER_BYTES = 256 * 1024  # bytes of one header block that are read


# ---------------------------------------------------------------------------------------------
# Charsets

# Labels whose real-world use is a superset encoding (as browsers treat them, WHATWG Encoding).
_SUPERSETS = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030", "cp936": "gb18030",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "iso-8859-9": "cp1254", "tis-620": "cp874", "iso-8859-11": "cp874", "windows-874": "cp874",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "ks_c_5601": "cp949",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "windows-31j": "cp932",
    "big5": "big5hkscs", "iso-2022-jp": "iso2022_jp_ext",
}
# Tried right after the declared charset, silently: vendor extensions senders use under the plain label.
_WIDER = {"iso2022_jp_ext": ("x-cp50220",)}
_NOT_CHARSETS = {"unicode_escape", "raw_unicode_escape", "unicode_internal", "idna", "punycode", "undefined"}


def _codec(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when there is no such text charset."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    name = _SUPERSETS.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def _decode_bytes(data: bytes, declared: str | None, fallbacks: tuple[str, ...], defects: list[str], what: str) -> str:
    """Bytes as text: the declared charset, then UTF-8, then the message's other charsets, then cp1252/latin-1."""
    codec = _codec(declared)
    if declared and codec is None:
        defects.append(f"{what}: unknown charset {declared.strip()[:40]!r}; read as UTF-8 or Windows-1252")
    candidates = [c for c in (codec, *_WIDER.get(codec or "", ()), "utf-8", *fallbacks, "cp1252") if c]
    for i, candidate in enumerate(candidates):
        if candidate in candidates[:i]:
            continue
        try:
            text = _decode_cp50220(data) if candidate == "x-cp50220" else data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        if codec and candidate != codec and candidate not in _WIDER.get(codec, ()):
            defects.append(f"{what}: not valid {declared.strip()[:40]!r}; read as {candidate}")  # type: ignore[union-attr]
        return text
    return data.decode("latin-1")


_JIS_ESC_RE = re.compile(rb"\x1b(\$[@B]|\$\(D|\([BJI])")


def _decode_cp50220(data: bytes) -> str:
    """ISO-2022-JP as Windows writes it (CP50220: NEC and IBM extensions such as circled digits), by
    moving each JIS X 0208 pair to Shift_JIS and reading that as cp932. Raises UnicodeDecodeError."""
    out = bytearray()
    mode = b"(B"
    pos = 0
    for match in [*_JIS_ESC_RE.finditer(data), None]:
        chunk = data[pos : match.start() if match else len(data)]
        if mode in (b"$@", b"$B"):
            chunk = chunk.replace(b"\r", b"").replace(b"\n", b"")
            if len(chunk) % 2:
                raise UnicodeDecodeError("x-cp50220", data, pos, pos + len(chunk), "odd JIS X 0208 run")
            for i in range(0, len(chunk), 2):
                j1, j2 = chunk[i], chunk[i + 1]
                out.append(((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0))
                out.append(j2 + (0x1F if j2 <= 0x5F else 0x20) if j1 & 1 else j2 + 0x7E)
        elif mode == b"(I":
            out += bytes(b | 0x80 for b in chunk)
        else:
            out += chunk
        if match:
            mode, pos = match.group(1), match.end()
    return bytes(out).decode("cp932")


# ---------------------------------------------------------------------------------------------
# Header text

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0085\u2028\u2029]")
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]{1,75})\?([qQbB])\?([^?]*?)\?=")


def _clean_line(value: str) -> str:
    """One line of header text: no CR/LF or control characters, whitespace folded."""
    value = _CONTROL_RE.sub(" ", value.replace("\r", " ").replace("\n", " "))
    return " ".join(value.split())


_SURROGATE_RE = re.compile("[\udc80-\udcff]")


def _raw_text(value: object, fallbacks: tuple[str, ...]) -> str:
    """A raw header value as str: 8-bit bytes (kept by the parser as surrogates) decoded, lines unfolded."""
    text = str(value)
    if _SURROGATE_RE.search(text):
        raw = text.encode("utf-8", "surrogateescape")
        text = _decode_bytes(raw, None, fallbacks, [], "header")
    return re.sub(r"\r?\n(?=[ \t])", "", text)


def _word_bytes(encoding: str, payload: str) -> bytes:
    if encoding in "qQ":
        return binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
    data = re.sub(r"[^A-Za-z0-9+/]", "", payload).encode("ascii")
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def decode_words(text: str, fallbacks: tuple[str, ...] = (), defects: list[str] | None = None) -> str:
    """RFC 2047 encoded-words decoded, leniently: adjacent words joined (even a character split between
    them), words inside quotes or other words read too, a wrong or unknown charset falls back."""
    if "=?" not in text:
        return text
    sink: list[str] = [] if defects is None else defects
    out: list[str] = []
    pos = 0
    pending: list[tuple[str, bytes]] = []  # runs of adjacent encoded words, bytes per charset

    def flush() -> None:
        for charset, data in pending:
            out.append(_decode_bytes(data, charset, fallbacks, sink, "encoded-word"))
        pending.clear()

    for match in _ENCODED_WORD_RE.finditer(text):
        gap = text[pos : match.start()]
        if gap and not (pending and not gap.strip(" \t\r\n")):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        data = _word_bytes(match.group(2), match.group(3))
        if pending and pending[-1][0].lower() == charset.lower():
            pending[-1] = (pending[-1][0], pending[-1][1] + data)
        else:
            pending.append((charset, data))
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _header_value(raw_value: object, fallbacks: tuple[str, ...], defects: list[str]) -> str:
    return _clean_line(decode_words(_raw_text(raw_value, fallbacks), fallbacks, defects))


_MSGID_RE = re.compile(r"<([^<>\s]+)>")


def _ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = _MSGID_RE.findall(value)
    if not found:
        found = [tok.strip("<>") for tok in value.split() if "@" in tok]
    return tuple(dict.fromkeys(_clean_line(mid)[:998] for mid in found if _clean_line(mid)))


_PLACEHOLDER = "mgw{}x"


def _addresses(values: list[str], fallbacks: tuple[str, ...], defects: list[str]) -> tuple[Address, ...]:
    """Mailboxes of address headers. Encoded-words are swapped for atoms before the split, so a comma or
    quote inside one cannot break the list; group syntax and comments work as `getaddresses` reads them."""
    out: list[Address] = []
    for value in values:
        if len(value) > MAX_ADDRESS_HEADER:
            defects.append(f"an address header of {len(value)} characters was cut to {MAX_ADDRESS_HEADER}")
            value = value[:MAX_ADDRESS_HEADER]
        words: list[str] = []

        def stash(match: re.Match[str]) -> str:
            words.append(match.group(0))
            return _PLACEHOLDER.format(len(words) - 1)

        protected = _ENCODED_WORD_RE.sub(stash, value)
        try:
            pairs = getaddresses([protected])
        except Exception:  # noqa: BLE001 - the stdlib address parser on hostile input
            defects.append("an address header could not be read")
            continue
        for name, addr in pairs:
            if words:
                name = re.sub(r"mgw(\d+)x(?:[ \t]+(?=mgw\d+x))?", lambda m: words[int(m.group(1))], name)
                addr = re.sub(r"mgw(\d+)x", lambda m: words[int(m.group(1))], addr)
            name = _clean_line(decode_words(name, fallbacks, defects)).strip("\"' ")
            addr = _clean_line(addr).strip("<>").lower()
            if name or addr:
                out.append(Address(name=name, addr=addr))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# File names and HTML

_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\:*?\"<>|\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def sanitize_filename(name: str | None, fallback: str = "attachment") -> str:
    """A file name safe to show and to write: no path parts, control characters or reserved characters."""
    if not name:
        return fallback
    name = re.sub(r"[\r\n\t]+", " ", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME_RE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        return fallback
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot and stem else ""
        name = (stem if ext else name)[: MAX_FILENAME - len(ext) - 1].rstrip(" .") + ("." + ext if ext else "")
    return name


class _TextMaker(HTMLParser):
    """HTML -> readable text: paragraphs and lists are set off by a blank line, rows, items and <br> by a
    line break, list items get "* ", script/style/head are dropped, <pre> keeps its spacing."""

    PARAGRAPHS = frozenset("blockquote dl h1 h2 h3 h4 h5 h6 hr ol p pre table ul".split())
    LINES = frozenset(
        "address article aside center dd div dt fieldset figcaption figure footer form header li main nav "
        "section tbody tfoot thead tr".split()
    )
    HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.newlines = 1  # trailing line breaks already written (1 at the start: no leading break)

    def _break(self, count: int) -> None:
        if self.newlines < count:
            self.out.append("\n" * (count - self.newlines))
            self.newlines = count

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif self.hidden:
            return
        elif tag == "br":
            self.out.append("\n")
            self.newlines += 1
        elif tag in self.PARAGRAPHS:
            self._break(2)
            self.pre += tag == "pre"
        elif tag in self.LINES:
            self._break(1)
            if tag == "li":
                self.out.append("* ")
                self.newlines = 0
        elif tag in ("td", "th"):
            self.handle_data(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.handle_data(f" {alt} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.HIDDEN:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif self.hidden:
            return
        elif tag in self.PARAGRAPHS:
            self._break(2)
            self.pre = max(0, self.pre - (tag == "pre"))
        elif tag in self.LINES:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        text = data if self.pre else re.sub(r"[ \t\r\n\f\xa0]+", " ", data)
        if self.newlines and not self.pre:
            text = text.lstrip(" ")
        if not text:
            return
        self.out.append(text)
        stripped = text.rstrip("\n")
        self.newlines = len(text) - len(stripped) if stripped else self.newlines + len(text)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body (stdlib HTMLParser: linear, tolerant, never recurses)."""
    maker = _TextMaker()
    try:
        maker.feed(html)
        maker.close()
    except Exception:  # noqa: BLE001 - HTMLParser on hostile input; fall back to tag stripping
        return " ".join(_html.unescape(re.sub(r"<[^>]*>", " ", html)).split())
    lines = [line.rstrip() for line in "".join(maker.out).replace("\xa0", " ").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ---------------------------------------------------------------------------------------------
# Raw-level repairs and the MIME bomb check

_HEADER_LINE_RE = re.compile(rb"[!-9;-~]+[ \t]*:")
_LINE_RE = re.compile(rb"[^\n]*\n?")


def _repair_head(raw: bytes, defects: list[str]) -> bytes:
    """Skip junk lines before the first header; join name-less lines inside the header block to the header
    before them (a folded line that lost its indent), when real headers follow them before the blank line."""
    lines = _LINE_RE.findall(raw[: 256 * 1024])
    if not lines or lines[-1] == b"":
        lines = lines[:-1]
    is_header = [bool(_HEADER_LINE_RE.match(line)) for line in lines[:200]]
    skip = 0
    if lines and not is_header[0] and not lines[0].startswith(b"From ") and lines[0].strip():
        for i in range(1, min(4, len(is_header) - 1)):
            if is_header[i] and is_header[i + 1]:
                skip = i
                break
        if skip:
            defects.append(f"{skip} line(s) before the first header were skipped")
    end = None
    for i in range(skip, len(lines)):
        if not lines[i].strip(b"\r\n"):
            end = i
            break
    if end is None:
        return b"".join(lines[skip:]) + raw[256 * 1024 :] if skip else raw
    fixed = 0
    head = lines[skip:end]
    named = [bool(_HEADER_LINE_RE.match(line)) or line.startswith(b"From ") for line in head]
    nameless = [i for i, line in enumerate(head) if i and not named[i] and line[:1] not in (b" ", b"\t")]
    if head and named[0] and nameless and len(nameless) <= sum(named):
        last_named = max(i for i, ok in enumerate(named) if ok)
        for i in nameless:
            if i < last_named:
                head[i] = b" " + head[i]
                fixed += 1
    if fixed:
        defects.append(f"{fixed} header line(s) without a name were joined to the header before them")
    if not skip and not fixed:
        return raw
    return b"".join(head) + b"".join(lines[end:]) + raw[256 * 1024 :]


_BOUNDARY_RE = re.compile(rb'(?i)boundary[ \t]*=[ \t]*(?:"([^"\r\n]*)"|([^;\s]+))')
_UNREAD = "application/x-mailgate-unread"


_BLANK_RE = re.compile(rb"\r?\n\r?\n")
_CTYPE_RE = re.compile(rb"(?im)^content-type[ \t]*:[ \t]*(?:\r?\n[ \t]+)?([^\s;]+)((?:[^\r\n]|\r?\n[ \t])*)")


@dataclass
class _Part:
    """One node of the MIME tree: its headers (a headers-only stdlib Message) and where its body lies."""

    src: bytes = field(repr=False)  # the whole raw message (shared, not copied)
    head: Message
    start: int  # body start in the raw bytes
    end: int = -1  # body end (exclusive); set when the next boundary or the end is found
    prefix: bytes = b""  # body lines the header parser met before the blank line
    children: list[_Part] = field(default_factory=list)
    boundary: bytes | None = None
    depth: int = 0
    closed: bool = False

    @property
    def body(self) -> bytes:
        return self.prefix + self.src[self.start : self.end]


def _read_part(raw: bytes, pos: int, depth: int, defects: list[str]) -> _Part:
    """The header block at pos parsed by the stdlib (headers only), and where the body starts."""
    if raw.startswith((b"\n", b"\r\n"), pos):
        return _Part(raw, Message(), raw.index(b"\n", pos) + 1, depth=depth)
    blank = _BLANK_RE.search(raw, pos)
    end, body = (blank.start(), blank.end()) if blank else (len(raw), len(raw))
    if end - pos > MAX_HEADER_BYTES:
        defects.append(f"a header block of {end - pos} bytes; only its first {MAX_HEADER_BYTES} were read")
        end = raw.rfind(b"\n", pos, pos + MAX_HEADER_BYTES) + 1 or pos + MAX_HEADER_BYTES
    block = raw[pos:end]
    try:
        head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)
    except Exception:  # noqa: BLE001 - the stdlib on hostile input
        defects.append("a header block could not be read")
        head = Message()
    prefix = head.get_payload() if end == (blank.start() if blank else len(raw)) else None
    rest = prefix.encode("utf-8", "surrogateescape") if isinstance(prefix, str) and prefix else b""
    if rest:
        rest += raw[end:body]  # the lines after a non-header line belong to the body, blank line included
    return _Part(raw, head, body, prefix=rest, depth=depth)


def _boundary(part: _Part) -> bytes | None:
    if part.head.get_content_maintype() != "multipart":
        return None
    ctype = next((v for k, v in part.head.raw_items() if k.lower() == "content-type"), "")
    found = _BOUNDARY_RE.search(str(ctype).encode("utf-8", "surrogateescape"))
    return (found.group(1) or found.group(2)).rstrip() if found else None


def _split(raw: bytes, defects: list[str]) -> _Part:
    """The MIME tree, without recursion: one regex search per boundary line of the open multiparts.
    Containers deeper than MAX_DEPTH are not opened and the split stops after MAX_PARTS parts;
    enclosed messages (message/*) are leaves, kept whole as attachments."""
    root = _read_part(raw, 0, 0, defects)
    stack: list[_Part] = []  # open multiparts, outermost first
    parts, too_deep, reused = 1, 0, 0

    def open_container(part: _Part) -> None:
        nonlocal too_deep, reused
        boundary = _boundary(part)
        if boundary is None:
            return
        if part.depth >= MAX_DEPTH:
            too_deep += 1
            part.head.replace_header("Content-Type", _UNREAD)
        elif any(boundary == other.boundary for other in stack):
            reused += 1
            part.head.replace_header("Content-Type", _UNREAD)
        else:
            part.boundary = boundary
            stack.append(part)

    open_container(root)
    pos = root.start
    while stack and parts <= MAX_PARTS:
        alternatives = b"|".join(re.escape(p.boundary) for p in reversed(stack))  # type: ignore[arg-type]
        found = re.compile(rb"^--(" + alternatives + rb")(--)?[ \t]*\r?$", re.M).search(raw, pos)
        if found is None:
            break
        level = max(i for i, p in enumerate(stack) if p.boundary == found.group(1))
        line_start = found.start()
        body_end = line_start - (2 if raw[line_start - 2 : line_start] == b"\r\n" else 1 if line_start else 0)
        for open_part in stack[level:]:
            if open_part.children and open_part.children[-1].end < 0:
                open_part.children[-1].end = max(open_part.children[-1].start, body_end)
        del stack[level + 1 :]
        container = stack[level]
        next_line = raw.find(b"\n", found.end())
        pos = len(raw) if next_line < 0 else next_line + 1
        if found.group(2):  # close delimiter
            container.closed = True
            stack.pop()
            continue
        parts += 1
        if parts > MAX_PARTS:
            defects.append(f"more than {MAX_PARTS} MIME parts; the last {len(raw) - line_start} bytes were not read")
            break
        child = _read_part(raw, pos, container.depth + 1, defects)
        container.children.append(child)
        pos = child.start
        open_container(child)
    for part in _iter_parts(root):
        if part.end < 0:
            part.end = max(part.start, len(raw)) if not part.children else part.start
        if part.children and not part.closed and parts <= MAX_PARTS:
            defects.append("multipart body without its closing boundary")
    if too_deep:
        defects.append(f"MIME nesting deeper than {MAX_DEPTH} levels; deeper parts were not read")
    if reused:
        defects.append("a nested multipart reuses an enclosing boundary; it was not read")
    return root


def _iter_parts(root: _Part) -> list[_Part]:
    """Every part, depth first, iteratively."""
    out: list[_Part] = []
    stack = [root]
    while stack:
        part = stack.pop()
        out.append(part)
        stack.extend(reversed(part.children))
    return out


# ---------------------------------------------------------------------------------------------
# Payloads

_UU_BEGIN_RE = re.compile(r"^begin [0-7]{3,4} (.+?)\r?\n(.*?)^end[ \t]*\r?$\n?", re.M | re.S)


def _uudecode(data: bytes) -> bytes:
    """Own lenient uudecode: skips `begin`/`end` lines, tolerates short or padded lines."""
    out = bytearray()
    for line in data.splitlines():
        if not line or line.startswith((b"begin ", b"end")):
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            size = ((line[0] - 32) & 63) * 4 // 3
            try:
                out += binascii.a2b_uu(line[: size + 1])
            except binascii.Error:
                continue
    return bytes(out)


def _base64(data: bytes, defects: list[str], what: str) -> bytes:
    try:
        return binascii.a2b_base64(data)  # skips line breaks and other non-alphabet bytes
    except binascii.Error:
        pass
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    defects.append(f"{what}: base64 data is damaged (bad padding or a stray final character); read what was whole")
    clean = clean[:-1] if len(clean) % 4 == 1 else clean + b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def _payload_bytes(part: _Part, defects: list[str], what: str) -> bytes:
    """The decoded bytes of a leaf part (transfer encoding undone, charset untouched)."""
    data = part.body
    cte = str(part.head.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        return _base64(data, defects, what)
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return _uudecode(data)
    return data


_PARAM_RE = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_SECTION_RE = re.compile(r"(.+?)\*(\d+)?(\*)?")


def _header_params(part: Message, header: str, fallbacks: tuple[str, ...], defects: list[str]) -> dict[str, str]:
    """Parameters of a raw header (8-bit text decoded first), RFC 2231 sections and charsets included;
    RFC 2231 values win over plain ones of the same name."""
    lname = header.lower()
    value = next((v for k, v in part.raw_items() if k.lower() == lname), None)
    if value is None:
        return {}
    text = _raw_text(value, fallbacks)
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for match in _PARAM_RE.finditer(text):
        key, val = match.group(1).lower(), match.group(2).strip()
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1] if len(val) > 1 and val.endswith('"') else val[1:])
        section = _SECTION_RE.fullmatch(key)
        if section:
            encoded = bool(section.group(3)) or section.group(2) is None
            sections.setdefault(section.group(1), {})[int(section.group(2) or 0)] = (val, encoded)
        else:
            plain.setdefault(key, val)
    for base, chunks in sections.items():
        charset, data = None, b""
        for index in sorted(chunks)[:100]:
            val, encoded = chunks[index]
            if encoded:
                if index == min(chunks) and val.count("'") >= 2:
                    charset, _, val = val.split("'", 2)
                data += urllib.parse.unquote_to_bytes(val)
            else:
                data += val.encode("utf-8", "surrogateescape")
        plain[base] = _decode_bytes(data, charset or None, fallbacks, defects, f"parameter {base}")
    return plain


# ---------------------------------------------------------------------------------------------
# The parse


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
