"""Charset labels as mail really uses them (supersets, Japanese variants) and lenient decoding with fallbacks."""

from __future__ import annotations

import codecs
import re


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


# Header text
