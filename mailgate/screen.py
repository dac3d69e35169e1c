"""The built-in safety chain as data: auto-reply, bounce, list, loop, own-address and authentication signals -> `Verdict` (RFC 3834, RFC 3464, RFC 8601).

Every rule is a small named function evaluated on every message (Mailman-chain style); each returns a
`Check` (name, hit, reason) so the pipeline can record hits and misses as events. Any hit forbids
automatic mail (acknowledgements, notifications to the sender). Pure: no I/O, no configuration
objects; the caller passes its own addresses and the trusted authserv-id.

`is_bounce` is true for every delivery report (a "delayed" DSN included: never a new ticket, never
acknowledged); `bounced_recipients` lists only recipients whose Action is `failed` (or unstated).
`auth`: "pass" when a trusted Authentication-Results header shows dkim=pass aligned with the From
domain or dmarc=pass for it; "fail" on dmarc=fail, or dkim/spf=fail with no dkim/spf/dmarc pass at
all; otherwise "none". All trusted headers are combined: the border MTA must strip forged headers
carrying its authserv-id (RFC 8601 section 5).
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message

from .message import Inbound, Mail

LOOP_HEADER = "X-Mailgate-Loop"

__all__ = [
    "LOOP_HEADER",
    "AuthResult",
    "AuthResults",
    "Check",
    "RULES",
    "Verdict",
    "authentication_verdict",
    "parse_authentication_results",
    "screen",
]


@dataclass(frozen=True)
class Check:
    """One rule's outcome: its name, whether it hit, and why (for the event log)."""

    name: str
    hit: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    """What the safety chain concluded about one message."""

    may_auto_reply: bool
    is_bounce: bool
    bounced_message_ids: tuple[str, ...]
    bounced_recipients: tuple[str, ...]
    is_auto_reply: bool
    is_list: bool
    from_self: bool
    auth: str  # "pass" | "fail" | "none"
    checks: tuple[Check, ...]

    @property
    def hits(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.hit)


# ---------------------------------------------------------------------------------------------
# Authentication-Results (RFC 8601)


@dataclass(frozen=True)
class AuthResult:
    """One resinfo: method (dkim, spf, dmarc, ...), result (pass, fail, ...) and its properties."""

    method: str
    result: str
    props: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str:
        lname = name.lower()
        for key, value in self.props:
            if key == lname:
                return value
        return ""


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results header: authserv-id ("" when the header names none) and results."""

    authserv_id: str
    results: tuple[AuthResult, ...]


def _lex(value: str) -> list[list[tuple[str, bool]]]:
    """Split a header value into ';'-separated segments of items, dropping (nested) comments.

    An item is (text, had_quoted_part); quoted strings are unquoted and glued to adjacent text.
    """
    segments: list[list[tuple[str, bool]]] = [[]]
    buf: list[str] = []
    quoted = False
    i, n = 0, len(value)

    def flush() -> None:
        nonlocal buf, quoted
        if buf or quoted:
            segments[-1].append(("".join(buf), quoted))
        buf, quoted = [], False

    while i < n:
        ch = value[i]
        if ch == "(":
            flush()
            depth = 1
            i += 1
            while i < n and depth:
                c = value[i]
                if c == "\\":
                    i += 1
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                i += 1
            continue
        if ch == '"':
            quoted = True
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            i += 1
            continue
        if ch == ";":
            flush()
            segments.append([])
        elif ch.isspace():
            flush()
        else:
            buf.append(ch)
        i += 1
    flush()
    return [_join_equals(seg) for seg in segments]


def _join_equals(items: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Glue `a = b`, `a= b`, `a =b` into one item `a=b` (CFWS around '=' is allowed)."""
    out: list[tuple[str, bool]] = []
    for text, q in items:
        if out and not q and text.startswith("=") or out and out[-1][0].endswith("=") and not out[-1][1]:
            prev, pq = out.pop()
            out.append((prev + text, pq or q))
        else:
            out.append((text, q))
    return out


def parse_authentication_results(value: str) -> AuthResults:
    """Parse one Authentication-Results header value; never raises."""
    segments = _lex(value)
    authserv_id = ""
    first = segments[0] if segments else []
    if first and "=" not in first[0][0]:
        authserv_id = first[0][0].lower()
        segments = segments[1:]
    results: list[AuthResult] = []
    for seg in segments:
        if not seg or "=" not in seg[0][0]:
            continue  # "none", or a stray token
        method, _, result = seg[0][0].partition("=")
        props = []
        for text, _q in seg[1:]:
            key, eq, val = text.partition("=")
            if eq:
                props.append((key.lower(), val))
        results.append(AuthResult(method.split("/")[0].lower(), result.lower(), tuple(props)))
    return AuthResults(authserv_id, tuple(results))


def _aligned(signing: str, from_domain: str) -> bool:
    signing = signing.lower().strip().lstrip("@").rpartition("@")[2]
    if not signing or not from_domain:
        return False
    return signing == from_domain or from_domain.endswith("." + signing) or signing.endswith("." + from_domain)


def authentication_verdict(headers: Iterable[str], trusted_authserv_id: str, from_domain: str) -> tuple[str, str]:
    """("pass"|"fail"|"none", reason) from Authentication-Results values, trusting only one authserv-id."""
    if not trusted_authserv_id:
        return "none", "no trusted authserv-id configured"
    trusted = trusted_authserv_id.lower()
    results: list[AuthResult] = []
    seen = 0
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed.authserv_id == trusted:
            seen += 1
            results.extend(parsed.results)
    if not seen:
        return "none", f"no Authentication-Results from {trusted_authserv_id}"
    from_domain = from_domain.lower()
    for r in results:
        if r.method == "dkim" and r.result == "pass" and _aligned(r.prop("header.d") or r.prop("header.i"), from_domain):
            return "pass", f"dkim=pass aligned with {from_domain}"
        if r.method == "dmarc" and r.result == "pass":
            hfrom = r.prop("header.from").lower()
            if from_domain and (not hfrom or hfrom == from_domain):
                return "pass", f"dmarc=pass for {from_domain}"
    for r in results:
        if r.method == "dmarc" and r.result == "fail":
            hfrom = r.prop("header.from").lower()
            if not hfrom or hfrom == from_domain:
                return "fail", "dmarc=fail"
    fails = sorted({r.method for r in results if r.method in ("dkim", "spf") and r.result == "fail"})
    passes = [r for r in results if r.method in ("dkim", "spf", "dmarc") and r.result == "pass"]
    if fails and not passes:
        return "fail", "=fail, ".join(fails) + "=fail and nothing passed"
    return "none", "no aligned pass and no failure"


# ---------------------------------------------------------------------------------------------
# Bounces (RFC 3464 and the common non-standard kinds)

_BOUNCE_SUBJECT_RE = re.compile(
    r"^\s*(?:undeliver(?:ed|able)\b|undelivered mail returned to sender|delivery status notification"
    r"|mail delivery failed|returned mail\b|failure notice|delivery failure|non[- ]?delivery|"
    r"delivery has failed|message not delivered|benachrichtung zum übermittlungsstatus|unzustellbar"
    r"|mail delivery system|non remis|échec de la remise|onbestelbaar|no se puede entregar)",
    re.I,
)
_DAEMON_LOCALS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_HEADER_MSGID_RE = re.compile(r"^[ \t>]*Message-I[Dd]:[ \t]*\n?[ \t]*<([^<>\s]+@[^<>\s]+)>", re.I | re.M)
_BODY_RCPT_RE = re.compile(r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>:?", re.M)
_HEADER_PARTS = ("text/rfc822-headers", "message/global-headers")
_MESSAGE_PARTS = ("message/rfc822", "message/global")
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
_MAX_WALK = 200


@dataclass(frozen=True)
class _Bounce:
    kind: str  # "" | "dsn" | "non-standard"
    reason: str
    message_ids: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()


def _local(addr: str) -> str:
    return addr.strip().strip("<>").rpartition("@")[0 if "@" in addr else 2].lower()


def _is_daemon(addr: str | None) -> bool:
    return bool(addr) and _local(addr or "") in _DAEMON_LOCALS


def _dedup(items: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if item and item not in out:
            out.append(item)
    return tuple(out)


def _recipient(value: str) -> str:
    addr = value.partition(";")[2] if ";" in value else value
    addr = addr.strip().strip("<>").strip().lower()
    return addr if "@" in addr else ""


def _status_fields(part: Message) -> list[list[tuple[str, str]]]:
    """The field blocks of a delivery-status part, however the parser presented it."""
    payload = part.get_payload()
    blocks: list[list[tuple[str, str]]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append([(k.lower(), str(v)) for k, v in block.items()])
        return blocks
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return _text_blocks(text)


def _text_blocks(text: str) -> list[list[tuple[str, str]]]:
    blocks: list[list[tuple[str, str]]] = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        hdrs = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(chunk.strip("\r\n") + "\n\n")
        fields = [(k.lower(), str(v)) for k, v in hdrs.items()]
        if fields:
            blocks.append(fields)
    return blocks


def _recipients_from_blocks(blocks: list[list[tuple[str, str]]]) -> list[str]:
    found: list[str] = []
    for fields in blocks:
        d = dict(fields)
        if "final-recipient" not in d and "original-recipient" not in d:
            continue
        action = d.get("action", "failed").strip().lower()
        if action != "failed":
            continue
        for key in ("final-recipient", "original-recipient"):
            if key in d:
                found.append(_recipient(d[key]))
    return found


def _ids_from_headers_text(text: str) -> list[str]:
    hdrs = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip("\r\n"))
    return [m for v in hdrs.get_all("Message-ID", []) for m in re.findall(r"<([^<>\s]+)>", str(v))]


def _inspect_parts(mail: Mail, raw: bytes) -> tuple[list[str], list[str], list[str]]:
    """(status-part recipients, embedded Message-IDs, inline-header Message-IDs) from the raw message."""
    rcpts: list[str] = []
    embedded: list[str] = []
    for att in mail.attachments:  # when message.py keeps these parts as attachments
        if att.content_type in _STATUS_PARTS:
            rcpts += _recipients_from_blocks(_text_blocks(att.content.decode("utf-8", "replace")))
        elif att.content_type in _MESSAGE_PARTS + _HEADER_PARTS:
            embedded += _ids_from_headers_text(att.content.decode("utf-8", "replace").split("\n\n", 1)[0])
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        stack: list[tuple[Message, int]] = [(msg, 0)]
        count = 0
        while stack and count < _MAX_WALK:
            part, depth = stack.pop(0)
            count += 1
            ctype = part.get_content_type()
            if ctype in _STATUS_PARTS:
                rcpts += _recipients_from_blocks(_status_fields(part))
                continue
            if ctype in _MESSAGE_PARTS:
                inner = part.get_payload()
                inner = inner[0] if isinstance(inner, list) and inner else inner
                if isinstance(inner, Message):
                    embedded += re.findall(r"<([^<>\s]+)>", str(inner.get("Message-ID", "")))
                continue  # never descend into the returned message itself
            if ctype in _HEADER_PARTS:
                data = part.get_payload(decode=True)
                if isinstance(data, bytes):
                    embedded += _ids_from_headers_text(data.decode("utf-8", "replace"))
                continue
            if part.is_multipart() and depth < 8:
                payload = part.get_payload()
                if isinstance(payload, list):
                    stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    except Exception:  # a broken report still counts as a bounce; we just learn less from it
        pass
    inline = _HEADER_MSGID_RE.findall(mail.text)
    return rcpts, embedded, inline


def _bounce(mail: Mail, inbound: Inbound) -> _Bounce:
    ctype = (mail.header("Content-Type") or "").lower()
    is_dsn = ctype.startswith("multipart/report") and re.search(r"report-type\s*=\s*\"?delivery-status", ctype) is not None
    daemon_from = _is_daemon(mail.sender)
    subject_hit = bool(_BOUNCE_SUBJECT_RE.search(mail.subject))
    null_path = _null_return_path(mail, inbound)
    if is_dsn:
        kind, reason = "dsn", "multipart/report; report-type=delivery-status (RFC 3464)"
    elif daemon_from and _local(mail.sender) != "postmaster":
        kind, reason = "non-standard", f"From {mail.sender}"
    elif subject_hit and (daemon_from or null_path or mail.header("Auto-Submitted") or mail.header("X-Failed-Recipients")):
        kind, reason = "non-standard", f"bounce subject {mail.subject[:60]!r} from an automatic sender"
    else:
        return _Bounce("", "not a delivery report")
    rcpts, embedded, inline = _inspect_parts(mail, inbound.raw)
    ids = [m for m in embedded + inline if m != mail.message_id]
    if not ids:
        ids = [m for m in mail.references + mail.in_reply_to]
    if kind == "non-standard" or not rcpts:
        failed = mail.header_all("X-Failed-Recipients")
        rcpts += [a.strip().lower() for v in failed for a in v.split(",") if "@" in a]
        if not rcpts:
            rcpts += [a.lower() for a in _BODY_RCPT_RE.findall(mail.text.split("\n\n--- ", 1)[0])]
    rcpts = [r for r in rcpts if r and not _is_daemon(r)]
    return _Bounce(kind, reason, _dedup(ids), _dedup(rcpts))


def _null_return_path(mail: Mail, inbound: Inbound) -> bool:
    if inbound.mail_from is not None:
        return inbound.mail_from.strip() in ("", "<>")
    rp = mail.header("Return-Path")
    return rp is not None and rp.strip() in ("<>", "")


# ---------------------------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class _Facts:
    """What the rules read: the mail, its envelope, our addresses and the precomputed bounce/auth facts."""

    mail: Mail
    inbound: Inbound
    own: frozenset[str]
    bounce: _Bounce
    auth: str
    auth_reason: str


def _canonical(addr: str) -> str:
    local, at, domain = addr.strip().strip("<>").lower().rpartition("@")
    if not at:
        return domain
    return f"{local.split('+', 1)[0]}@{domain}"


def rule_loop_marker(f: _Facts) -> Check:
    value = f.mail.header(LOOP_HEADER)
    if value is not None:
        return Check("loop_marker", True, f"{LOOP_HEADER}: {value[:80]}")
    return Check("loop_marker", False, f"no {LOOP_HEADER} header")


def rule_own_address(f: _Facts) -> Check:
    sender = f.mail.sender
    if sender and _canonical(sender) in {_canonical(a) for a in f.own}:
        return Check("own_address", True, f"From {sender} is one of our addresses")
    return Check("own_address", False, f"From {sender or '(none)'} is not ours")


def rule_auto_submitted(f: _Facts) -> Check:
    for value in f.mail.header_all("Auto-Submitted"):
        token = value.split(";", 1)[0].strip().lower()
        if token and token != "no":
            return Check("auto_submitted", True, f"Auto-Submitted: {token}")
    return Check("auto_submitted", False, "no Auto-Submitted other than 'no'")


def rule_precedence(f: _Facts) -> Check:
    for value in f.mail.header_all("Precedence") + f.mail.header_all("X-Precedence"):
        token = value.strip().split(None, 1)[0].lower() if value.strip() else ""
        if token in ("bulk", "junk", "list", "auto_reply"):
            return Check("precedence", True, f"Precedence: {token}")
    return Check("precedence", False, "no Precedence bulk/junk/list")


def rule_list_headers(f: _Facts) -> Check:
    for name in ("List-Id", "List-Unsubscribe"):
        if f.mail.header(name) is not None:
            return Check("list_headers", True, f"{name} present")
    return Check("list_headers", False, "no List-Id or List-Unsubscribe")


_SUPPRESS = frozenset({"all", "autoreply", "oof"})


def rule_auto_response_suppress(f: _Facts) -> Check:
    for value in f.mail.header_all("X-Auto-Response-Suppress"):
        tokens = {t.strip().lower() for t in re.split(r"[,;\s]+", value) if t.strip()}
        found = sorted(tokens & _SUPPRESS)
        if found:
            return Check("auto_response_suppress", True, f"X-Auto-Response-Suppress: {', '.join(found)}")
    return Check("auto_response_suppress", False, "no X-Auto-Response-Suppress All/AutoReply/OOF")


def rule_null_sender(f: _Facts) -> Check:
    if _null_return_path(f.mail, f.inbound):
        return Check("null_sender", True, "empty return path <>")
    if _is_daemon(f.inbound.mail_from):
        return Check("null_sender", True, f"envelope sender {f.inbound.mail_from}")
    if _is_daemon(f.mail.sender):
        return Check("null_sender", True, f"From {f.mail.sender}")
    return Check("null_sender", False, "return path and From are ordinary addresses")


def rule_bounce(f: _Facts) -> Check:
    return Check("bounce", bool(f.bounce.kind), f.bounce.reason)


_OOF_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Autorespond-Type", "X-Vacation")
_OOF_PHRASES = (
    r"out of (?:the )?office", r"automatic reply", r"auto(?:matic)?[- ]?re(?:ply|sponse)", r"away from (?:the )?office",
    r"vacation (?:reply|response|notice|message|auto)", r"abwesenheitsnotiz", r"automatische antwort",
    r"abwesenheits?meldung", r"nicht im büro", r"r[ée]ponse automatique", r"absente? du bureau",
    r"fuera de (?:la )?oficina", r"respuesta autom[áa]tica", r"ausente de la oficina", r"risposta automatica",
    r"fuori (?:sede|ufficio)", r"afwezig", r"automatisch antwoord", r"niet aanwezig", r"autosvar", r"fr[åa]nvaro",
    r"frav[æa]r", r"resposta autom[áa]tica", r"fora do escrit[óo]rio", r"automatyczna odpowied[źz]",
    r"automatická odpověď", r"автоматический ответ",
)
_OOF_CJK = (r"自動応答", r"自動返信", r"不在", r"自动回复", r"自動回覆", r"자동 응답", r"부재")
_OOF_SUBJECT_RE = re.compile(
    r"^\s*(?:(?:" + "|".join(_OOF_PHRASES) + r")(?![\w])|(?:" + "|".join(_OOF_CJK) + r")"
    r"|(?:absence|abwesend|ausente|assente|vacation|away)\s*[:：])",
    re.I,
)


def rule_out_of_office(f: _Facts) -> Check:
    for name in _OOF_HEADERS:
        value = f.mail.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return Check("out_of_office", True, f"{name}: {value[:40]}")
    m = _OOF_SUBJECT_RE.search(f.mail.subject)
    if m:
        return Check("out_of_office", True, f"subject starts with {m.group(0).strip()!r}")
    return Check("out_of_office", False, "no out-of-office header or subject")


def rule_auth_fail(f: _Facts) -> Check:
    return Check("auth_fail", f.auth == "fail", f"authentication {f.auth}: {f.auth_reason}")


RULES: tuple[Callable[[_Facts], Check], ...] = (
    rule_loop_marker,
    rule_own_address,
    rule_auto_submitted,
    rule_precedence,
    rule_list_headers,
    rule_auto_response_suppress,
    rule_null_sender,
    rule_bounce,
    rule_out_of_office,
    rule_auth_fail,
)


def screen(mail: Mail, inbound: Inbound, own_addresses: frozenset[str], trusted_authserv_id: str = "") -> Verdict:
    """Run every rule of the safety chain on one message and say what it is and whether we may answer it."""
    from_domain = mail.from_addr.domain if mail.from_addr else ""
    auth, auth_reason = authentication_verdict(mail.header_all("Authentication-Results"), trusted_authserv_id, from_domain)
    facts = _Facts(mail, inbound, frozenset(own_addresses), _bounce(mail, inbound), auth, auth_reason)
    checks = tuple(rule(facts) for rule in RULES)
    hit = {c.name for c in checks if c.hit}
    is_bounce = "bounce" in hit
    auto_replied = any(v.split(";", 1)[0].strip().lower() == "auto-replied" for v in mail.header_all("Auto-Submitted"))
    precedence_list = any(v.strip().lower().startswith("list") for v in mail.header_all("Precedence"))
    return Verdict(
        may_auto_reply=not hit,
        is_bounce=is_bounce,
        bounced_message_ids=facts.bounce.message_ids,
        bounced_recipients=facts.bounce.recipients,
        is_auto_reply=not is_bounce and ("out_of_office" in hit or auto_replied),
        is_list="list_headers" in hit or precedence_list,
        from_self="loop_marker" in hit or "own_address" in hit,
        auth=auth,
        checks=checks,
    )
