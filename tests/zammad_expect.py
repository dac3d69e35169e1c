"""Load Zammad's expected parse results (Ruby/Psych YAML `mailNNN.yml`) and compare a parse against them loosely.

The `.yml` files tag every mapping `!ruby/hash:...` and binary attachment data `!binary` (base64);
`yaml.safe_load` rejects both, so `ZammadLoader` maps any `!`-tag to a plain dict, list or str, and
turns `!binary` scalars into bytes. Used by tests/test_message.py and bench/parse_compare.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mailgate.message import Mail

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"  # ../shared/corpus beside the repo
ZAMMAD = CORPUS / "zammad"


class ZammadLoader(yaml.SafeLoader):
    """A SafeLoader that reads Ruby-tagged nodes as plain Python data."""


def _tagged(loader: ZammadLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if suffix == "binary":
        return base64.b64decode("".join(str(value).split()))
    return value


ZammadLoader.add_multi_constructor("!", _tagged)


def load_expectation(path: Path) -> dict[str, Any]:
    """One `mailNNN.yml` as a plain dict (attachment `data` is bytes, encoded as UTF-8 when it was text)."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=ZammadLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top")
    for att in data.get("attachments") or []:
        if isinstance(att.get("data"), str):
            att["data"] = att["data"].encode("utf-8")
    return data


def zammad_pairs() -> list[tuple[Path, Path]]:
    """(`.eml`, `.yml`) pairs in the Zammad folder, sorted by name."""
    return [(eml, eml.with_suffix(".yml")) for eml in sorted(ZAMMAD.glob("*.eml")) if eml.with_suffix(".yml").exists()]


# ---------------------------------------------------------------------------------------------
# Loose comparison

_TAG_RE = re.compile(r"<[^>]*>")
_DROP_RE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)


def fold_text(text: str, is_html: bool = False) -> str:
    """Text reduced for a loose compare: HTML tags dropped, entities decoded, NFC, all whitespace removed."""
    if is_html:
        text = _DROP_RE.sub(" ", text)
        text = _TAG_RE.sub(" ", text)
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", text).replace("\u00a0", " ").replace("\u200b", "")
    return "".join(text.split())


NO_CONTENT = "novisiblecontent"  # Zammad's placeholder for an empty body ("no visible content"), folded


def texts_agree(want: str, got: str) -> bool:
    """Folded texts agree when equal, or when one contains the other and is at least 90% of its length
    (Zammad keeps e.g. an HTML <title> or a preheader that a text conversion may drop)."""
    if want == got:
        return True
    short, long = sorted((want, got), key=len)
    return bool(short) and short in long and len(short) >= 0.9 * len(long)


def body_agrees(expected_body: str, expected_type: str, got_text: str, got_html: str | None) -> bool:
    """True when the parsed body carries the same text as Zammad's: folded text compared with the folded
    text body and with the folded HTML body (tags stripped); Zammad's empty-body placeholder means empty."""
    want = fold_text(expected_body, is_html=expected_type == "text/html")
    text = fold_text(got_text)
    if want in ("", NO_CONTENT):
        return text == ""
    candidates = [text] + ([fold_text(got_html, is_html=True)] if got_html is not None else [])
    return any(texts_agree(want, c) for c in candidates)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - Zammad's own comparison digest, not security


@dataclass(frozen=True)
class ExpectedAttachment:
    filename: str
    md5: str
    mime_type: str
    alternative: bool  # Zammad's copy of the original HTML body, not a user attachment


def expected_attachments(expect: dict[str, Any]) -> list[ExpectedAttachment]:
    out = []
    for att in expect.get("attachments") or []:
        prefs = att.get("preferences") or {}
        out.append(
            ExpectedAttachment(
                filename=str(att.get("filename") or ""),
                md5=md5(att.get("data") or b""),
                mime_type=str(prefs.get("Mime-Type") or ""),
                alternative=bool(prefs.get("content-alternative")),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Scoring a parser against the expectations


@dataclass(frozen=True)
class Extract:
    """What any parser under test yields for one message, reduced to the fields Zammad checks."""

    from_email: str
    from_name: str
    subject: str
    text: str
    html: str | None
    attachments: tuple[tuple[str, bytes], ...]  # (file name, decoded bytes)

    @classmethod
    def of(cls, mail: "Mail") -> "Extract":
        """The fields of a parsed `mailgate.message.Mail`."""
        return cls(from_email=mail.from_addr.addr if mail.from_addr else "",
                   from_name=mail.from_addr.name if mail.from_addr else "", subject=mail.subject, text=mail.text,
                   html=mail.html, attachments=tuple((a.filename, a.content) for a in mail.attachments))


FIELDS = ("from_email", "from_display_name", "subject", "body", "attachments")


def _fold_line(value: str) -> str:
    return " ".join(str(value).split())


def agreement(expect: dict[str, Any], got: Extract) -> dict[str, bool]:
    """Per field, whether `got` agrees with Zammad's expectation (loosely; see docs/parsing.md)."""
    wanted = [a for a in expected_attachments(expect) if not a.alternative]
    found = {(name, md5(data)) for name, data in got.attachments}
    return {
        "from_email": str(expect.get("from_email") or "").lower() == got.from_email.lower(),
        "from_display_name": _fold_line(expect.get("from_display_name") or "") == _fold_line(got.from_name),
        "subject": _fold_line(expect.get("subject") or "") == _fold_line(got.subject),
        "body": body_agrees(str(expect.get("body") or ""), str(expect.get("content_type")), got.text, got.html),
        "attachments": all((a.filename, a.md5) in found for a in wanted),
    }


def has_user_attachments(expect: dict[str, Any]) -> bool:
    return any(not a.alternative for a in expected_attachments(expect))
