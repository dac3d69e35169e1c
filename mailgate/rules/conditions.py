"""Rule conditions as typed values, and their evaluation against one mail with a trace of why each held or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Union

from ..errors import Location
from ..message import Mail
from .values import WEEKDAYS, format_minutes, format_size

if TYPE_CHECKING:
    from .model import RuleContext

OPERATORS = ("equals", "contains", "startswith", "endswith", "matches", "in")
_NEGATED = {"equals": "does not equal", "contains": "does not contain", "startswith": "does not start with",
            "endswith": "does not end with", "matches": "does not match", "in": "is not in"}
_SHOW = 60  # longest value shown in a trace line
MAX_TIMEOUTS = 5  # after this many regex time-outs on one mail, further `matches` count as not matched unrun


@dataclass(frozen=True)
class TextTest:
    """A text field compared with an operator; holds when ANY of the field's values matches."""

    field: str  # from, from_domain, to, cc, subject, body, header, attachment_name, attachment_type
    op: str  # one of OPERATORS
    values: tuple[str, ...]  # one needle, or the list for `in`; already case-folded unless case_sensitive
    case_sensitive: bool = False
    pattern: Any = None  # compiled `regex` pattern for `matches`
    header: str | None = None  # header name when field == "header"
    where: Location = field(default=Location("<unknown>"), compare=False)
    written: tuple[str, ...] = field(default=(), compare=False)  # the values as the file wrote them

    def describe(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        label = f"header {self.header}" if self.field == "header" else self.field
        values = self.written or self.values
        shown = "[" + ", ".join(values) + "]" if self.op == "in" else quote(values[0])
        case = " (case-sensitive)" if self.case_sensitive else ""
        return f"{label} {self.op} {shown}{case}"


@dataclass(frozen=True)
class HeaderPresent:
    """A header is present (or absent)."""

    name: str
    present: bool = True
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return f"header {self.name} {'exists' if self.present else 'is absent'}"


@dataclass(frozen=True)
class FlagTest:
    """A yes/no fact about the mail: has_attachment, is_reply."""

    field: str
    expected: bool
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return f"{self.field} is {'true' if self.expected else 'false'}"


@dataclass(frozen=True)
class ChoiceTest:
    """An enumerated fact from the context: customer (known|new), auth (pass|fail|none)."""

    field: str
    values: tuple[str, ...]
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return f"{self.field} is {' or '.join(self.values)}"


@dataclass(frozen=True)
class SizeTest:
    """The raw message size in bytes is greater than `gt` and/or less than `lt`."""

    gt: int | None = None
    lt: int | None = None
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {format_size(self.gt)}")
        if self.lt is not None:
            parts.append(f"< {format_size(self.lt)}")
        return "size " + " and ".join(parts)


@dataclass(frozen=True)
class TimeTest:
    """`ctx.now`, seen in time zone `tz`, falls on one of `weekdays` and within [start, end) minutes."""

    tz: str
    zone: Any  # zoneinfo.ZoneInfo
    weekdays: frozenset[int] | None = None
    start: int | None = None
    end: int | None = None
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        parts = []
        if self.weekdays is not None:
            parts.append("on " + ",".join(WEEKDAYS[d] for d in sorted(self.weekdays)))
        if self.start is not None and self.end is not None:
            parts.append(f"between {format_minutes(self.start)} and {format_minutes(self.end)}")
        return "time " + " ".join(parts) + f" ({self.tz})"


@dataclass(frozen=True)
class AllOf:
    """Every item holds (an empty list holds)."""

    items: tuple["Condition", ...]
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return "all of"


@dataclass(frozen=True)
class AnyOf:
    """At least one item holds."""

    items: tuple["Condition", ...]
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return "any of"


@dataclass(frozen=True)
class NotOf:
    """The item does not hold."""

    item: "Condition"
    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return "not"


@dataclass(frozen=True)
class Always:
    """No conditions: every mail matches."""

    where: Location = field(default=Location("<unknown>"), compare=False)

    def describe(self) -> str:
        return "always (no conditions)"


Condition = Union[TextTest, HeaderPresent, FlagTest, ChoiceTest, SizeTest, TimeTest, AllOf, AnyOf, NotOf, Always]


@dataclass(frozen=True)
class ConditionTrace:
    """One line of a rule's explanation: the condition, whether it held (None: not checked), and why.

    The words (`text`, `why`) are produced only when read, so tracing costs little when nobody looks.
    """

    depth: int
    condition: "Condition"
    held: bool | None
    timed_out: bool = False
    detail: str | None = None  # the reason, when known at evaluation time
    hit: str | None = field(default=None, repr=False)  # the value that matched (text conditions)
    facts: "Facts | None" = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.condition.describe()

    @cached_property
    def why(self) -> str:
        if self.detail is not None:
            return self.detail
        if isinstance(self.condition, TextTest) and self.facts is not None:
            return _why_text(self.condition, self.facts, self.hit, self.timed_out)
        return ""


class Facts:
    """The values conditions read from one mail and its context, computed once and cached."""

    def __init__(self, mail: Mail, ctx: "RuleContext", regex_timeout: float):
        self.mail = mail
        self.ctx = ctx
        self.regex_timeout = regex_timeout
        self._raw: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self._folded: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self.timeouts: list[str] = []

    def raw(self, name: str, header: str | None = None) -> tuple[str, ...]:
        key = (name, header.lower() if header else None)
        got = self._raw.get(key)
        if got is None:
            got = self._raw[key] = self._compute(name, header)
        return got

    def folded(self, name: str, header: str | None = None) -> tuple[str, ...]:
        key = (name, header.lower() if header else None)
        got = self._folded.get(key)
        if got is None:
            got = self._folded[key] = tuple(v.casefold() for v in self.raw(name, header))
        return got

    def _compute(self, name: str, header: str | None) -> tuple[str, ...]:
        mail = self.mail
        if name == "from":
            return (mail.sender,) if mail.sender else ()
        if name == "from_domain":
            return (mail.from_addr.domain,) if mail.from_addr and mail.from_addr.domain else ()
        if name == "to":
            seen: dict[str, None] = {}
            for a in (*mail.to, *mail.cc):
                if a.addr:
                    seen.setdefault(a.addr.lower())
            for r in self.ctx.rcpt_to:
                if r:
                    seen.setdefault(r.strip().strip("<>").lower())
            return tuple(seen)
        if name == "cc":
            return tuple(a.addr.lower() for a in mail.cc if a.addr)
        if name == "subject":
            return (mail.subject,)
        if name == "body":
            return (mail.text,)
        if name == "header":
            return tuple(mail.header_all(header or ""))
        if name == "attachment_name":
            return tuple(a.filename for a in mail.attachments)
        if name == "attachment_type":
            return tuple(a.content_type.lower() for a in mail.attachments)
        raise ValueError(f"unknown field {name}")


def quote(value: str) -> str:
    """'value' in quotes, backslashes left as written (regexes stay readable)."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


def _show(value: str) -> str:
    value = value.replace("\n", " ")
    return quote(value if len(value) <= _SHOW else value[: _SHOW - 1] + "…")


def _label(test: TextTest) -> str:
    return f"header {test.header}" if test.field == "header" else test.field


def _text(test: TextTest, facts: Facts, out: list[ConditionTrace] | None, depth: int) -> bool:
    values = facts.raw(test.field, test.header) if test.case_sensitive else facts.folded(test.field, test.header)
    needle = test.values[0]
    op = test.op
    timed_out = False
    hit: str | None = None
    for i, value in enumerate(values):
        if op == "contains":
            ok = needle in value
        elif op == "equals":
            ok = value == needle
        elif op == "startswith":
            ok = value.startswith(needle)
        elif op == "endswith":
            ok = value.endswith(needle)
        elif op == "in":
            ok = value in test.values
        else:  # matches: search the value as written; the pattern carries the case flag
            original = facts.raw(test.field, test.header)[i]
            if len(facts.timeouts) >= MAX_TIMEOUTS:  # the mail's regex budget is spent: no more slow searches
                ok, timed_out = False, True
                break
            try:
                ok = test.pattern.search(original, timeout=facts.regex_timeout) is not None
            except TimeoutError:
                ok = False
                timed_out = True
                facts.timeouts.append(f"regex {quote(test.pattern.pattern)} on {_label(test)} timed out "
                                      f"after {facts.regex_timeout:g}s; counted as not matched")
        if ok:
            hit = facts.raw(test.field, test.header)[i]
            break
    held = hit is not None
    if out is not None:
        out.append(ConditionTrace(depth, test, held, timed_out, None, hit, facts))
    return held


def _why_text(test: TextTest, facts: Facts, hit: str | None, timed_out: bool) -> str:
    label = _label(test)
    raw = facts.raw(test.field, test.header)
    if hit is not None:
        return f"{label} is {_show(hit)}" if test.field != "body" else f"found in the body ({len(hit)} characters)"
    if timed_out:
        return (f"the regular expression ran longer than {facts.regex_timeout:g}s and was stopped (or earlier ones "
                f"used up this mail's budget of {MAX_TIMEOUTS} time-outs); counted as not matched")
    if not raw:
        return {"header": f"no {test.header} header", "from": "no From address", "from_domain": "no From address",
                "to": "no recipients", "cc": "no Cc", "attachment_name": "no attachments",
                "attachment_type": "no attachments"}.get(test.field, f"{label} is empty")
    if test.field == "body":
        return f"the body ({len(raw[0])} characters) {_NEGATED[test.op]} it"
    if len(raw) == 1:
        return f"{label} is {_show(raw[0])}"
    return f"none of {len(raw)} values does: " + ", ".join(_show(v) for v in raw[:5]) + (" …" if len(raw) > 5 else "")


def _now(ctx: "RuleContext") -> datetime:
    now = ctx.now
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)


def evaluate(cond: Condition, facts: Facts, out: list[ConditionTrace] | None = None, depth: int = 0) -> bool:
    """Whether `cond` holds; when `out` is a list, append one ConditionTrace per condition checked (or skipped)."""
    if isinstance(cond, TextTest):
        return _text(cond, facts, out, depth)
    if isinstance(cond, (AllOf, AnyOf)):
        want = isinstance(cond, AnyOf)  # the value that decides early
        slot = len(out) if out is not None else 0
        if out is not None:
            out.append(ConditionTrace(depth, cond, None))
        result = not want
        decided_at = -1
        for i, item in enumerate(cond.items):
            if evaluate(item, facts, out, depth + 1) == want:
                result, decided_at = want, i
                break
        if out is not None:
            if decided_at >= 0:
                for item in cond.items[decided_at + 1:]:
                    _skip(item, out, depth + 1)
            n = len(cond.items)
            why = (f"item {decided_at + 1} of {n} held" if want else f"item {decided_at + 1} of {n} failed") \
                if decided_at >= 0 else (f"none of {n} held" if want else f"all {n} held")
            out[slot] = ConditionTrace(depth, cond, result, detail=why)
        return result
    if isinstance(cond, NotOf):
        slot = len(out) if out is not None else 0
        if out is not None:
            out.append(ConditionTrace(depth, cond, None))
        inner = evaluate(cond.item, facts, out, depth + 1)
        if out is not None:
            out[slot] = ConditionTrace(depth, cond, not inner, detail="the condition below " + ("held" if inner else "failed"))
        return not inner
    held, why = _simple(cond, facts)
    if out is not None:
        out.append(ConditionTrace(depth, cond, held, detail=why))
    return held


def _skip(cond: Condition, out: list[ConditionTrace], depth: int) -> None:
    out.append(ConditionTrace(depth, cond, None, detail="not checked (already decided)"))
    if isinstance(cond, (AllOf, AnyOf)):
        for item in cond.items:
            _skip(item, out, depth + 1)
    elif isinstance(cond, NotOf):
        _skip(cond.item, out, depth + 1)


def _simple(cond: Condition, facts: Facts) -> tuple[bool, str]:
    mail, ctx = facts.mail, facts.ctx
    if isinstance(cond, Always):
        return True, "no conditions"
    if isinstance(cond, HeaderPresent):
        n = len(facts.raw("header", cond.name))
        return (n > 0) == cond.present, (f"{n} {cond.name} header(s)" if n else f"no {cond.name} header")
    if isinstance(cond, FlagTest):
        if cond.field == "is_reply":
            actual = ctx.is_reply
            why = "the mail follows up a ticket" if actual else "the mail starts a new ticket"
        else:
            real = [a for a in mail.attachments if not a.inline]
            actual = bool(real)
            why = f"{len(real)} attachment(s)" if real else "no attachments (inline parts do not count)"
        return actual == cond.expected, why
    if isinstance(cond, ChoiceTest):
        actual = ("known" if ctx.customer_known else "new") if cond.field == "customer" else (ctx.auth or "none")
        return actual in cond.values, f"{cond.field} is {actual}"
    if isinstance(cond, SizeTest):
        ok = (cond.gt is None or mail.size > cond.gt) and (cond.lt is None or mail.size < cond.lt)
        return ok, f"the message is {mail.size} bytes ({format_size(mail.size)})"
    if isinstance(cond, TimeTest):
        local = _now(ctx).astimezone(cond.zone)
        minute = local.hour * 60 + local.minute
        day_ok = cond.weekdays is None or local.weekday() in cond.weekdays
        if cond.start is None or cond.end is None:
            hour_ok = True
        elif cond.start < cond.end:
            hour_ok = cond.start <= minute < cond.end
        else:  # spans midnight
            hour_ok = minute >= cond.start or minute < cond.end
        return day_ok and hour_ok, f"it is {WEEKDAYS[local.weekday()]} {local:%H:%M} in {cond.tz}"
    raise TypeError(f"not a condition: {cond!r}")
