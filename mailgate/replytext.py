"""The visible text of a reply (new text on top, no quoted history, no signature) and the agent `#command` lines at its top.

`visible_reply` wraps email-reply-parser (zapier's port of GitHub's parser: fragments of a body marked
quoted, header or signature; measured against mail-parser-reply in bench/reply_compare.py and
docs/reply-parsing.md). Around it: quote headers of other languages and Outlook header blocks are
recognised here and handed to the library as one marker line; the library's whole-text "On ... wrote:"
regex (cubic: 9 KB of lines starting "On " took 30 s) is replaced by a linear join; only the first
`MAX_PARSE_CHARS` are parsed; a trailing sign-off, a block naming the sender and a contact block
below a rule line are trimmed. Whatever goes wrong (an exception, an empty result), the full text is
returned: the agent's words are never lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_reply_parser import EmailMessage as _LibMessage

__all__ = ["Command", "COMMANDS", "PRIORITIES", "MAX_PARSE_CHARS", "strip_commands", "visible_reply"]

MAX_PARSE_CHARS = 200_000
_HISTORY = "\x1fmailgate-quoted-history\x1f"  # one line standing for a quote header we recognised

# --- quote headers ("On ... wrote:") in the languages agents and customers write -------------------
_WROTE_RE = re.compile(
    r"^(?:>\s*)*(?:"
    r"On\s.{0,300}?wrote:"  # en
    r"|Am\s.{0,300}\sschrieb\b.{0,200}:"  # de
    r"|Le\s.{0,300}\sa\s[ée]crit\s?:"  # fr
    r"|El\s.{0,300}\sescribi[óo]\s?:"  # es
    r"|Il\s.{0,300}\sha scritto\s?:"  # it
    r"|Op\s.{0,300}\sschreef\b.{0,200}:"  # nl
    r"|Em\s.{0,300}\sescreveu\s?:"  # pt
    r"|Den\s.{0,300}\sskrev\b.{0,200}:"  # sv, da, no
    r"|(?:Dnia|W dniu)\s.{0,300}\snapisał(?:\(a\))?\s?:"  # pl
    r"|Dne\s.{0,300}\snapsal(?:\(a\))?\s?:"  # cs
    r"|.{0,300}\sнаписал(?:\(а\)|а)?\s?:"  # ru
    r"|.{0,300}(?:写道|書きました|のメッセージ)\s?[:：]"  # zh, ja
    r"|.{0,300}님이 작성(?:하였습니다|했습니다)?\s?:"  # ko
    r")\s*$",
    re.I,
)

# --- Outlook-style header blocks and "Original Message" separators --------------------------------
_FROM_KEYS = r"From|Von|De|Da|Van|Från|Fra|Od|От|Від|Lähettäjä|Feladó"
_OTHER_KEYS = (
    r"Sent|Date|To|Cc|Subject|Gesendet|Datum|An|Betreff|Envoyé|À|A|Objet|Enviado|Enviada|Para|Asunto|Fecha"
    r"|Assunto|Inviato|Oggetto|Verzonden|Aan|Onderwerp|Skickat|Till|Ämne|Sendt|Til|Emne|Wysłano|Do|Temat"
    r"|Odesláno|Komu|Předmět|Отправлено|Дата|Кому|Тема|Lähetetty|Vastaanottaja|Aihe"
)
_KEY_LINE_RE = re.compile(rf"^[ \t]*\*?(?:(?P<from>{_FROM_KEYS})|{_OTHER_KEYS})[ \t]?\*?[ \t]?:[ \t]?\*?(?:[ \t]|$)", re.I)
_SEPARATOR_RE = re.compile(
    r"^[ \t]*(?:[-_=]{5,}[ \t]*"
    r"|-{2,}[ \t]*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|Messaggio originale"
    r"|Oorspronkelijk bericht|Originalmeddelande|Mensagem original|Oprindelig meddelelse|Opprinnelig melding"
    r"|Původní zpráva|Wiadomość oryginalna|Исходное сообщение)[ \t]*-{2,}[ \t]*)$",
    re.I,
)
_NAMED_SEPARATOR_RE = re.compile(r"^[ \t]*-{2,}[ \t]*[^-\s].*-{2,}[ \t]*$")

# --- signatures ------------------------------------------------------------------------------------
_SENT_FROM = (
    r"Sent from my (?:\w+\s*){1,3}|Sent from (?:Outlook|Mail|Yahoo Mail)\b.*|Sent with \w+.*|Get Outlook for \w+.*"
    r"|Von meinem \w+(?: \w+)? gesendet|Gesendet von (?:meinem )?\w+.*|Envoyé de mon \w+.*|Enviado desde mi \w+.*"
    r"|Inviato da(?:l mio)? \w+.*|Verzonden (?:vanaf|met) (?:mijn )?\w+.*|Skickat från min \w+.*|Sendt fra min \w+.*"
)


class _Message(_LibMessage):
    """email-reply-parser's fragment scanner with its cubic whole-text regex replaced and stricter signature cues."""

    SIG_REGEX = re.compile(rf"(?:--|_{{2,}}|-{{1,2}}\s?[A-Z][\w'.]*(?: [A-Z][\w'.]*){{0,3}})\s*$|(?:{_SENT_FROM})\s*$")
    QUOTE_HDR_REGEX = re.compile(r"On.*wrote:$|" + re.escape(_HISTORY) + "$")
    HEADER_REGEX = re.compile(re.escape(_HISTORY) + "$")

    def read(self) -> _Message:
        self.found_visible = False
        self._hide_below = 0
        self.text = re.sub(r"([^\n])(?=\n ?[_-]{7,})", "\\1\n", self.text)
        self.lines = self.text.split("\n")
        self.lines.reverse()
        for line in self.lines:
            self._scan_line(line)
        self._finish_fragment()
        for fragment in self.fragments[: self._hide_below]:
            fragment.hidden = True
        self.fragments.reverse()
        return self

    def _finish_fragment(self) -> None:
        # the library's rule, made linear: a header fragment hides every fragment found before it
        # (below it in the text); the library re-marks them all each time, quadratic on many headers
        if self.fragment:
            self.fragment.finish()
            if self.fragment.headers:
                self.found_visible = False
                self._hide_below = len(self.fragments)
            if not self.found_visible:
                f = self.fragment
                if f.quoted or f.headers or f.signature or not f.content.strip():
                    f.hidden = True
                else:
                    self.found_visible = True
            self.fragments.append(self.fragment)
        self.fragment = None


def _mark_history(lines: list[str]) -> list[str]:
    """Replace recognised quote headers (joined over up to 3 lines) and header blocks by the marker line."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if stripped and len(stripped) < 400:
            span = _wrote_header_span(lines, i)
            if span:
                out.append(("> " if stripped.startswith(">") else "") + _HISTORY)
                i += span
                continue
            if _header_block_at(lines, i):
                while out and (not out[-1].strip() or _SEPARATOR_RE.match(out[-1])):
                    out.pop()
                out.append("")
                out.append(_HISTORY)
                return out  # everything below an Outlook header block is history
            if _SEPARATOR_RE.match(line) and not re.match(r"^[ \t]*[-_=]{5,}[ \t]*$", line):
                out.append(_HISTORY)  # "-----Original Message-----" and its translations
                i += 1
                continue
        out.append(line)
        i += 1
    return out


def _wrote_header_span(lines: list[str], i: int) -> int:
    """How many lines (1-3) from i form an "On ... wrote:" style quote header; 0 when none."""
    joined = ""
    for k in range(i, min(i + 3, len(lines))):
        part = lines[k].strip()
        if k > i and (not part or len(part) > 200 or not re.search(r"[\d@]", lines[i])):
            return 0  # a wrapped header starts with a line holding a date or an address
        joined = f"{joined} {part}" if joined else part
        if _WROTE_RE.match(joined):
            return k - i + 1
    return 0


def _header_block_at(lines: list[str], i: int) -> bool:
    """A From-like key line followed, within 5 lines, by at least one more header key line."""
    m = _KEY_LINE_RE.match(lines[i])
    if not m or not m.group("from"):
        return False
    return any(_KEY_LINE_RE.match(nxt) for nxt in lines[i + 1 : i + 6])


_SIGNOFF_RE = re.compile(
    r"^[ \t]*(?:(?:best|kind|warm|many)?[ \t]*regards|best(?: wishes)?|cheers|thanks?(?: you)?(?: again| so much)?|many thanks"
    r"|all the best|sincerely(?: yours)?|yours(?: truly| sincerely)?|(?:mit )?(?:freundlichen|besten|viele[n]?|liebe) gr(?:ü|ue)(?:ß|ss)en?"
    r"|gruß|grüße|cordialement|bien (?:à vous|cordialement)|salutations|saludos(?: cordiales)?|un saludo|atentamente"
    r"|cordiali saluti|saluti|distinti saluti|met vriendelijke groet(?:en)?|groeten|hälsningar|med vänlig hälsning|mvh"
    r"|med venlig hilsen|med vennlig hilsen|pozdrawiam|s pozdravem|с уважением|atenciosamente|abraços)[ \t]*[,.!]?[ \t]*$",
    re.I,
)
_CONTACT_RE = re.compile(r"https?://|www\.|@|\+?\d[\d ().-]{6,}\d", re.I)


def _name_tokens(sender: str) -> set[str]:
    m = re.match(r"^\s*\"?([^\"<]*?)\"?\s*<([^>]*)>\s*$", sender)
    name, addr = (m.group(1), m.group(2)) if m else (("", sender) if "@" in sender else (sender, ""))
    tokens = set(re.findall(r"\w{3,}", name.lower()))
    tokens |= set(t for t in re.split(r"[._+\-\d]+", addr.partition("@")[0].lower()) if len(t) >= 3)
    return tokens - {"info", "support", "mail", "noreply", "reply", "admin", "team", "the", "and", "via"}


def _trim_signature(text: str, sender: str) -> str:
    """Cut a trailing sign-off + name, a last paragraph naming the sender, or a contact block below a rule line."""
    lines = text.rstrip().split("\n")
    tokens = _name_tokens(sender) if sender else set()
    # 1. a sign-off line ("Regards,", "Viele Grüße") followed by at most 4 short lines
    for k in range(max(1, len(lines) - 5), len(lines)):
        if _SIGNOFF_RE.match(lines[k]) and all(len(x.strip()) <= 40 for x in lines[k + 1 :]):
            if "\n".join(lines[:k]).strip():
                return "\n".join(lines[:k]).rstrip()
    # 2. a rule line followed by a short contact block
    for k in range(max(1, len(lines) - 30), len(lines)):
        if re.match(r"^[ \t]*[-_=*]{8,}[ \t]*$", lines[k]) and not lines[k - 1].strip():
            rest = [x for x in lines[k + 1 :] if x.strip()]
            if 0 < len(rest) <= 20 and all(len(x) <= 60 for x in rest):
                blob = "\n".join(rest).lower()
                if _CONTACT_RE.search(blob) or any(re.search(rf"\b{re.escape(t)}\b", blob) for t in tokens):
                    return "\n".join(lines[:k]).rstrip()
    # 3. a last paragraph that starts with the sender's name
    if tokens:
        start = len(lines)
        while start > 0 and lines[start - 1].strip():
            start -= 1
        block = lines[start:]
        if 0 < start and 0 < len(block) <= 6 and all(len(x) <= 60 for x in block) and "\n".join(lines[:start]).strip():
            first = block[0].lower()
            if any(re.search(rf"(?<![^\W_]){re.escape(t)}(?![^\W_])", first) for t in tokens):
                return "\n".join(lines[:start]).rstrip()
    return text.rstrip()


def visible_reply(text: str, sender: str = "") -> str:
    """The new text of a reply: quoted history and signature removed; the full text when unsure."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    full = text.strip()
    if not full:
        return ""
    head = text
    if len(text) > MAX_PARSE_CHARS:
        head = text[:MAX_PARSE_CHARS].rpartition("\n")[0]
    try:
        marked = "\n".join(_mark_history(head.split("\n")))
        message = _Message(marked).read()
        found_history = any(f.quoted or f.headers for f in message.fragments)
        if head is not text and not found_history:
            return full  # nothing to strip in the part we read: keep everything
        visible = [f.content for f in message.fragments if not (f.hidden or f.quoted)]
        reply = "\n\n".join(c for c in visible if c).replace(_HISTORY, "").strip()
        if not reply:
            return full
        return _trim_signature(reply, sender) or reply
    except Exception:  # a library failure must never lose the agent's words
        return full


# ---------------------------------------------------------------------------------------------------
# Agent commands


PRIORITIES = ("low", "normal", "high", "urgent")
COMMANDS = ("close", "reopen", "pending", "assign", "priority", "tag", "note")


@dataclass(frozen=True)
class Command:
    """One `#command` line from the top of an agent's reply; `error` is set when it cannot be obeyed."""

    name: str  # one of COMMANDS, or "unknown"
    arg: str = ""
    line: str = ""
    error: str = ""


_CMD_LINE_RE = re.compile(r"^[ \t]*#([A-Za-z][\w-]*)(?:[ \t]+(.*?))?[ \t]*$")


def _command(word: str, arg: str, line: str) -> Command:
    name = word.lower()
    if name not in COMMANDS:
        return Command("unknown", arg, line, f"unknown command #{word}; known: " + ", ".join(f"#{c}" for c in COMMANDS))
    if name in ("close", "reopen", "pending"):
        return Command(name, arg, line, f"#{name} takes no argument" if arg else "")
    if name == "note":
        return Command(name, arg, line)
    if not arg or len(arg.split()) != 1:
        what = {"assign": "an agent or team", "priority": "one of " + ", ".join(PRIORITIES), "tag": "one tag name"}[name]
        return Command(name, arg, line, f"#{name} needs {what}")
    if name == "priority":
        if arg.lower() not in PRIORITIES:
            return Command(name, arg, line, f"#priority must be one of {', '.join(PRIORITIES)}; got {arg!r}")
        return Command(name, arg.lower(), line)
    return Command(name, arg, line)


def strip_commands(text: str) -> tuple[tuple[Command, ...], str]:
    """Take the `#command` lines off the top of a reply: (commands in order, the remaining text).

    Only lines before the first other non-blank line count; `#1 issue` (no letter after #) is text.
    A `#note` argument stays in the text: the whole reply is the note.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[Command] = []
    i = 0
    lead: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = _CMD_LINE_RE.match(line)
        if not m:
            break
        cmd = _command(m.group(1), m.group(2) or "", line.strip())
        commands.append(cmd)
        if cmd.name == "note" and cmd.arg:
            lead.append(cmd.arg)
        i += 1
    rest = "\n".join(lead + lines[i:]).strip("\n")
    return tuple(commands), rest
