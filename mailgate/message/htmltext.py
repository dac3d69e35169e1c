"""Attachment file names made safe, and readable plain text from an HTML body (stdlib HTMLParser, linear)."""

from __future__ import annotations

import html as _html
import re
from html.parser import HTMLParser

from .limits import MAX_FILENAME


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


# Raw-level repairs and the MIME bomb check
