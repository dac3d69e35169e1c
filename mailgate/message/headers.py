"""Header text: control characters, encoded-words (RFC 2047), Message-IDs and address lists."""

from __future__ import annotations

import binascii
import re
from email.utils import getaddresses

from .charsets import _decode_bytes
from .limits import MAX_ADDRESS_HEADER
from .model import Address


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


# File names and HTML
