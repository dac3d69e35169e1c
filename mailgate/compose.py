"""Render mail we send (acknowledgements, notifications, relays, escalations) from sandboxed jinja2 templates.

Headers are built with the stdlib `email` API, never by string concatenation; every value from a
customer is folded to one clean line first. Templates compile at load time, so a broken template is
reported (template:line) when the daemon starts or reloads, not when a customer is waiting.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address as HeaderAddress
from email.errors import HeaderParseError
import email.charset
import email.encoders
import email.policy
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from .errors import Location, Problem, TemplateError
from .screen import LOOP_HEADER
BUILTIN_TEMPLATES = Path(__file__).parent / "defaults" / "templates"
REQUIRED_TEMPLATES = ("ack.txt.j2", "agent_notification.txt.j2", "relay.txt.j2", "escalation.txt.j2", "command_error.txt.j2")


@dataclass(frozen=True)
class Outbound:
    """One rendered mail, ready for the outbox."""

    kind: str  # ack | notification | relay | escalation | command_error | forward
    message_id: str  # without angle brackets
    mail_from: str  # envelope sender
    rcpt_to: tuple[str, ...]
    raw: bytes
    ticket_number: int | None = None


@dataclass(frozen=True)
class Party:
    """A display name and address for a header."""

    name: str
    addr: str


@dataclass(frozen=True)
class Threading:
    """Threading headers for a mail we send."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    thread_index: str | None = None  # the customer's Thread-Index, continued for Outlook
    topic: str = ""


def one_line(value: str, limit: int = 998) -> str:
    """A header-safe single line: no CR, LF or other control characters, whitespace folded."""
    value = re.sub(r"[\x00-\x1f\x7f]", " ", value)
    return " ".join(value.split())[:limit]


def tagged_subject(subject: str, number: int, tag: str) -> str:
    """"Re: <subject> [Tag #N]", without stacking Re: prefixes or repeating the tag."""
    subject = one_line(subject) or "(no subject)"
    subject = re.sub(r"\s*\[\s*" + re.escape(tag) + r"\s*#\s*\d+\s*\]\s*", " ", subject, flags=re.I).strip()
    while True:
        stripped = re.sub(r"^(re|aw|sv|antw|fwd?|wg)\s*(\[\d+\])?\s*:\s*", "", subject, flags=re.I)
        if stripped == subject:
            break
        subject = stripped
    return f"Re: {subject} [{tag} #{number}]"


def thread_index(parent: str | None, now: float | None = None) -> str:
    """An Outlook Thread-Index: a child block appended to the parent's, or a fresh header block."""
    now = time.time() if now is None else now
    filetime = int((now + 11644473600) * 10_000_000)
    if parent:
        try:
            raw = base64.b64decode(parent.strip(), validate=True)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) >= 22:
            parent_time = struct.unpack(">Q", raw[:6] + b"\x00\x00")[0]
            delta = max(0, filetime - parent_time) >> 18
            child = struct.pack(">I", min(delta, 0x7FFFFFFF))[0:4] + os.urandom(1)
            return base64.b64encode(raw + child[:5]).decode()
    header = struct.pack(">Q", filetime)[:6] + os.urandom(16)
    return base64.b64encode(header).decode()


class Composer:
    """Loads and compiles the templates once; renders mail from them."""

    def __init__(self, templates_dir: Path | None, domain: str):
        self.domain = domain
        search = [str(templates_dir)] if templates_dir and templates_dir.is_dir() else []
        search.append(str(BUILTIN_TEMPLATES))
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.templates_dir = templates_dir
        self._compiled: dict[str, jinja2.Template] = {}
        self._load_all()

    def _load_all(self) -> None:
        problems: list[Problem] = []
        names = set(REQUIRED_TEMPLATES) | {p.name for p in BUILTIN_TEMPLATES.glob("*.j2")}
        if self.templates_dir and self.templates_dir.is_dir():
            names |= {p.name for p in self.templates_dir.glob("*.j2")}
        for name in sorted(names):
            try:
                self._compiled[name] = self.env.get_template(name)
                problems += self._escape_attempts(name, names)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(Problem(Location(exc.filename or name, exc.lineno or 0), f"template syntax: {exc.message}"))
            except jinja2.TemplateNotFound:
                problems.append(Problem(Location(name), "template not found"))
        problems += self._trial_renders()
        if problems:
            raise TemplateError(problems)

    def _trial_renders(self) -> list[Problem]:
        """Render each template mailgate itself uses with sample values, so that an unknown variable or a failing
        filter is reported at load (template:line) instead of quarantining a customer's mail later."""
        problems: list[Problem] = []
        for name, template in self._compiled.items():
            context = _sample_context(name)
            if context is None:
                continue  # a partial for {% include %}: checked through the templates that include it
            try:
                template.render(**context)
            except Exception as exc:  # noqa: BLE001 - every failure is a problem to report, none is fatal here
                problems.append(Problem(Location(template.filename or name, _error_line(exc, template)),
                                        f"does not render with the variables mailgate passes ({type(exc).__name__}: {exc});"
                                        f" it may use: {', '.join(sorted(context))}"))
        return problems

    def _escape_attempts(self, name: str, names: set[str]) -> list[Problem]:
        """Load-time refusal of what the sandbox would only stop at render time: internal (`_`) attributes and
        includes of anything but our own templates (files elsewhere, computed names)."""
        assert self.env.loader is not None
        source, filename, _ = self.env.loader.get_source(self.env, name)
        where = filename or name
        problems: list[Problem] = []
        tree = self.env.parse(source, name, filename)
        for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
            attr = None
            if isinstance(node, nodes.Getattr):
                attr = node.attr
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                attr = node.arg.value
            elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):
                attr = node.args[0].value
            if isinstance(attr, str) and attr.startswith("_"):
                problems.append(Problem(Location(where, node.lineno), f"template reaches for the internal attribute {attr!r};"
                                        " templates may only use the values they are given"))
        for ref in jinja2.meta.find_referenced_templates(tree):
            if ref is None or ref not in names:
                problems.append(Problem(Location(where, _line_of(source, ref)), f"template includes {ref or 'a computed name'!r},"
                                        " which is not one of the templates; only templates from the template folder may be included"))
        return problems

    @property
    def names(self) -> list[str]:
        return sorted(self._compiled)

    def render(self, name: str, **variables: Any) -> str:
        """Render a template by name; errors become TemplateError naming template:line."""
        template = self._compiled.get(name)
        if template is None:
            raise TemplateError(Problem(Location(name), "no such template (add it to templates/ and reload)"))
        try:
            return template.render(**variables)
        except jinja2.TemplateError as exc:
            line = _error_line(exc, template)
            raise TemplateError(Problem(Location(template.filename or name, line), f"cannot render: {exc}")) from None
        except Exception as exc:  # a filter or attribute raising inside the sandbox
            raise TemplateError(Problem(Location(template.filename or name, _error_line(exc, template)),
                                        f"cannot render: {type(exc).__name__}: {exc}")) from None

    def new_message_id(self) -> str:
        return f"{secrets.token_urlsafe(18)}@{self.domain}"

    def build(self, *, kind: str, sender: Party, to: list[Party], subject: str, body: str, envelope_from: str,
              reply_to: Party | None = None, cc: list[Party] | None = None, threading: Threading = Threading(),
              automatic: bool, ticket_number: int | None = None, extra_headers: dict[str, str] | None = None,
              attachments: list[tuple[str, str, bytes]] | None = None, date: datetime | None = None) -> Outbound:
        """Assemble one mail with safe headers; `automatic` adds the RFC 3834 and Microsoft auto-reply markers.

        Built with the stdlib's compat32 classes (MIMEText, Header, formataddr): ~9x faster than EmailMessage's
        header registry, which matters because this runs inside the filing transaction. Every value passes
        through `one_line` (no CR/LF can reach a header) and non-ASCII text is RFC 2047-encoded by `Header`.
        """
        text = _text_part(body)
        if attachments:
            msg: Message = MIMEMultipart("mixed")
            msg.attach(text)
            for filename, ctype, data in attachments:
                msg.attach(_attachment_part(filename, ctype, data))
        else:
            msg = text
        message_id = self.new_message_id()
        msg["Message-ID"] = f"<{message_id}>"
        msg["Date"] = format_datetime(date or datetime.now(timezone.utc))
        msg["From"] = _addresses([sender])
        msg["To"] = _addresses(to)
        if cc:
            msg["Cc"] = _addresses(cc)
        if reply_to:
            msg["Reply-To"] = _addresses([reply_to])
        msg["Subject"] = _text_header(subject)
        if threading.in_reply_to:
            msg["In-Reply-To"] = f"<{one_line(threading.in_reply_to)}>"
        if threading.references:
            msg["References"] = " ".join(f"<{one_line(r)}>" for r in threading.references)
        msg["Thread-Topic"] = _text_header((threading.topic or subject)[:255])
        msg["Thread-Index"] = thread_index(threading.thread_index)
        if automatic:
            msg["Auto-Submitted"] = "auto-replied"
            msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
            msg["Precedence"] = "bulk"
        msg[LOOP_HEADER] = self.domain
        for name, value in (extra_headers or {}).items():
            msg[one_line(name)] = _text_header(value)
        rcpt = tuple(dict.fromkeys(deliverable(p.addr) or p.addr for p in list(to) + list(cc or [])))
        return Outbound(kind=kind, message_id=message_id, mail_from=envelope_from, rcpt_to=rcpt,
                        raw=msg.as_bytes(policy=_WIRE), ticket_number=ticket_number)


_WIRE = email.policy.compat32.clone(linesep="\r\n")  # SMTP lines end in CRLF


def prepend_fields(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    """Header fields put on top of a message's bytes (trace and Resent-* fields), written by the email API."""
    block = Message()
    for name, value in fields:
        block[name] = _text_header(value)
    head = block.as_bytes(policy=_WIRE)
    return head[: head.index(b"\r\n\r\n") + 2] + raw


def resent_copy(raw: bytes, *, resent_from: str, resent_to: str, loop_domain: str, date: datetime) -> bytes:
    """A forwarded copy of a message as it arrived: RFC 5322 Resent-* fields and our loop marker on top of its bytes."""
    return prepend_fields(raw, [("Resent-From", _addresses([Party("", resent_from)])),
                                ("Resent-To", _addresses([Party("", resent_to)])),
                                ("Resent-Date", format_datetime(date)), (LOOP_HEADER, loop_domain)])
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.body_encoding = email.charset.QP


def _text_header(value: str) -> str | Header:
    value = one_line(value)
    return value if value.isascii() else Header(value, "utf-8")


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _addresses(parties: list[Party]) -> str:
    return ", ".join(formataddr((one_line(p.name, 200), _addr_spec(p)), charset="utf-8") for p in parties)


def _addr_spec(party: Party) -> str:
    """The address as it may be written in a header (the common dot-atom case needs no parsing)."""
    if _PLAIN_ADDRESS.fullmatch(party.addr):
        return party.addr
    ascii_form = deliverable(party.addr)
    if ascii_form is None:
        raise ValueError(f"cannot address mail to {party.addr!r}: not an ASCII address (callers check `deliverable` first)")
    return _header_address(Party(party.name, ascii_form)).addr_spec


def deliverable(address: str) -> str | None:
    """The address in a form mail can be sent to (IDNA domain), or None when it cannot be (no @, non-ASCII local part)."""
    local, at, domain = one_line(address).rpartition("@")
    if not at or not local or not domain or not local.isascii():
        return None
    try:
        domain = domain.strip(".").encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    return f"{local}@{domain}" if domain else None


def _text_part(body: str) -> MIMEText:
    lines = body.splitlines() or [""]
    if body.isascii() and max(len(line) for line in lines) <= 900:
        return MIMEText(body, "plain", "us-ascii")
    return MIMEText(body, "plain", _UTF8_QP)  # quoted-printable keeps long lines and non-ASCII readable and legal


def _attachment_part(filename: str, ctype: str, data: bytes) -> MIMEBase:
    maintype, _, subtype = ctype.lower().partition("/")
    if maintype in ("message", "multipart") or not maintype or not subtype:
        # a stored message/* or multipart/* part is re-sent as the bytes it was, not re-interpreted
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype)
    part.set_payload(data)
    email.encoders.encode_base64(part)
    name = one_line(filename, 255) or "attachment"
    part.add_header("Content-Disposition", "attachment", filename=name if name.isascii() else ("utf-8", "", name))
    return part


def _header_address(party: Party) -> HeaderAddress:
    """A To/From address; odd but deliverable local parts (foo..bar, ".x", spaces) are kept, quoted where needed."""
    name = one_line(party.name, 200)
    try:
        return HeaderAddress(display_name=name, addr_spec=party.addr)
    except (ValueError, IndexError, HeaderParseError):
        local, _, domain = one_line(party.addr).rpartition("@")
        return HeaderAddress(display_name=name, username=local or party.addr, domain=domain.strip("."))


def _sample_context(template_name: str) -> dict[str, Any] | None:
    """The variables mailgate passes to one of its templates, with plausible values (None: not one of ours)."""
    from .store.records import Ticket  # the real record type, so attribute typos are caught

    now = datetime.now(timezone.utc)
    ticket = Ticket(number=1234, subject="Printer on fire", status="open", priority="high", team="tech", assignee="carol",
                    customer="customer@example.com", customer_name="Carol Customer", sla_policy="standard",
                    tags=("printer",), created_at=now, updated_at=now, message_count=2)
    common = {"ticket": ticket, "support_name": "Support", "subject_tag": "Support"}
    stem = template_name.split(".", 1)[0]
    if stem.startswith("ack"):
        return {**common, "customer": ticket.customer, "customer_name": ticket.customer_name,
                "promised_response": "within 4 business hours"}
    return {
        "agent_notification": {**common, "event": "New ticket", "customer": ticket.customer,
                               "customer_name": ticket.customer_name, "text": "It smokes.", "sla_due": "2026-01-05 17:00 UTC",
                               "rules": ["printers"]},
        "relay": {**common, "text": "We are sending a technician.", "agent_name": "Carol"},
        "command_error": {**common, "headline": "Your reply had commands mailgate did not understand:",
                          "errors": ["#frobnicate: unknown command"], "relayed": True},
        "escalation": {"alarm": "warning", "ticket": ticket, "target": "first response", "due_at": "2026-01-05 17:00 UTC",
                       "customer": ticket.customer, "policy": "standard", "remaining": "12 min"},
    }.get(stem)


def _line_of(source: str, text: str | None) -> int:
    """The first line mentioning `text` (a referenced template name), 0 when unknown."""
    if text:
        for number, line in enumerate(source.splitlines(), 1):
            if text in line:
                return number
    return 0


def _error_line(exc: Exception, template: jinja2.Template) -> int:
    """The template line a render error happened on (jinja rewrites tracebacks to point into the template file)."""
    tb = exc.__traceback__
    line = 0
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == template.filename:
            line = tb.tb_lineno  # already a template line
        elif filename == "<template>":
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return getattr(exc, "lineno", None) or line
