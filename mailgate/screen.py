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

import re
from collections.abc import Callable
from dataclasses import dataclass

from .authres import AuthResult, AuthResults, authentication_verdict, parse_authentication_results
from .bounces import Bounce, detect_bounce, is_daemon_address, null_return_path
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
# The rules


@dataclass(frozen=True)
class _Facts:
    """What the rules read: the mail, its envelope, our addresses and the precomputed bounce/auth facts."""

    mail: Mail
    inbound: Inbound
    own: frozenset[str]
    bounce: Bounce
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
    if null_return_path(f.mail, f.inbound):
        return Check("null_sender", True, "empty return path <>")
    if is_daemon_address(f.inbound.mail_from):
        return Check("null_sender", True, f"envelope sender {f.inbound.mail_from}")
    if is_daemon_address(f.mail.sender):
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
    facts = _Facts(mail, inbound, frozenset(own_addresses), detect_bounce(mail, inbound), auth, auth_reason)
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
