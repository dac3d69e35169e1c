"""Part payloads decoded (base64, quoted-printable, uuencode) and header parameters (RFC 2231) read."""

from __future__ import annotations

import binascii
import re
import urllib.parse
from email.message import Message

from .charsets import _decode_bytes
from .headers import _raw_text
from .mime import _Part


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


# The parse
