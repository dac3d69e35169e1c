"""The MIME tree split iteratively (no recursion) with head repair, boundaries and limits."""

from __future__ import annotations

import email.parser
import email.utils
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message

from .limits import MAX_DEPTH, MAX_HEADER_BYTES, MAX_PARTS


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


# Payloads
