"""Parse a rule's `when` (YAML with locations) into Condition values; every mistake becomes a located Problem."""

from __future__ import annotations

from typing import Any

import regex

from ..errors import Location, Problem
from ..yamlfile import nearest, value_where, where_of
from .conditions import (OPERATORS, AllOf, Always, AnyOf, ChoiceTest, Condition, FlagTest, HeaderPresent, NotOf,
                         SizeTest, TextTest, TimeTest)
from .conditions import quote
from .values import (HOURS_HELP, SIZE_HELP, parse_hours, parse_size, parse_weekdays, time_zone, weekday_problem,
                     zone_names)

# The operator a bare value means: whole tokens compare whole, free text is searched. A bare list means `in`.
DEFAULT_OPERATOR = {
    "from": "equals", "from_domain": "equals", "to": "equals", "cc": "equals", "attachment_type": "equals",
    "subject": "contains", "body": "contains", "attachment_name": "contains", "header": "contains",
}
TEXT_FIELDS = tuple(DEFAULT_OPERATOR)
CHOICES = {"customer": ("known", "new"), "auth": ("pass", "fail", "none")}
CONDITIONS = (*TEXT_FIELDS, "has_attachment", "is_reply", "size", "customer", "auth", "time", "all", "any", "not")


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class WhenParser:
    """Turns one rule's `when` into a Condition, appending problems; `regex_flags` apply to every `matches`."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems

    def problem(self, where: Location, message: str) -> None:
        self.problems.append(Problem(where, message))

    # -- entry points --------------------------------------------------------------------------------
    def parse(self, node: Any, where: Location) -> Condition:
        """`when:` is a mapping (all keys must hold), a list (all items must hold), or absent (always)."""
        if node is None:
            return Always(where)
        got = self._group(node, where, "when", combine=AllOf)
        return got if got is not None else Always(where)

    def _group(self, node: Any, where: Location, label: str, combine: type) -> Condition | None:
        if isinstance(node, dict):
            if not node:
                self.problem(where, f"{label} is empty: give at least one condition")
                return None
            items = [c for key, value in node.items() if (c := self._one(node, key, value)) is not None]
        elif isinstance(node, list):
            if not node:
                self.problem(where, f"{label} is an empty list: give at least one condition")
                return None
            items = []
            for i, item in enumerate(node):
                item_where = node.item_where[i] if hasattr(node, "item_where") else where
                if not isinstance(item, dict) or not item:
                    self.problem(item_where, f"each item of {label} must be a condition mapping such as "
                                             f"'subject: invoice', got {_type_name(item)}")
                    continue
                sub = self._group(item, item_where, label, AllOf)
                if sub is not None:
                    items.append(sub)
        else:
            self.problem(where, f"{label} must be a mapping of conditions (or a list of them), got {_type_name(node)}")
            return None
        if len(items) == 1 and combine is AllOf:
            return items[0]
        return combine(tuple(items), where)

    def _one(self, parent: dict, key: str, value: Any) -> Condition | None:
        key_at, value_at = where_of(parent, key), value_where(parent, key)
        if key not in CONDITIONS:
            self.problem(key_at, f"unknown condition {key!r}{nearest(key, CONDITIONS)}; expected one of: "
                                 + ", ".join(CONDITIONS))
            return None
        if key in ("all", "any"):
            return self._group(value, value_at, key, AllOf if key == "all" else AnyOf)
        if key == "not":
            if not isinstance(value, dict) or len(value) != 1:
                self.problem(value_at, "not takes exactly one condition, e.g. 'not: {from_domain: example.com}'; "
                                       "negate several with 'not: {any: [...]}' or 'not: {all: [...]}'")
                return None
            inner = self._group(value, value_at, "not", AllOf)
            return NotOf(inner, value_at) if inner is not None else None
        if key in ("has_attachment", "is_reply"):
            if not isinstance(value, bool):
                self.problem(value_at, f"{key} must be true or false, got {_type_name(value)}")
                return None
            return FlagTest(key, value, value_at)
        if key in CHOICES:
            return self._choice(key, value, value_at)
        if key == "size":
            return self._size(value, value_at)
        if key == "time":
            return self._time(value, value_at)
        if key == "header":
            return self._header(value, value_at)
        return self._text(key, value, value_at, None)

    # -- leaves --------------------------------------------------------------------------------------
    def _choice(self, key: str, value: Any, where: Location) -> Condition | None:
        allowed = CHOICES[key]
        values = value if isinstance(value, list) else [value]
        if not values or any(not isinstance(v, str) or v.lower() not in allowed for v in values):
            bad = next((v for v in values if not isinstance(v, str) or v.lower() not in allowed), None)
            self.problem(where, f"{key} must be one of {', '.join(allowed)} (or a list of them), got {_type_name(bad)}")
            return None
        return ChoiceTest(key, tuple(v.lower() for v in values), where)

    def _size(self, value: Any, where: Location) -> Condition | None:
        if not isinstance(value, dict) or not value:
            self.problem(where, "size needs gt and/or lt, e.g. 'size: {gt: 5MB}'")
            return None
        bounds: dict[str, int] = {}
        for k, v in value.items():
            if k not in ("gt", "lt"):
                self.problem(where_of(value, k), f"unknown size bound {k!r}{nearest(k, ('gt', 'lt'))}; expected gt or lt")
                continue
            n = parse_size(v)
            if n is None:
                self.problem(value_where(value, k), f"size {k} must be {SIZE_HELP}, got {_type_name(v)}")
                continue
            bounds[k] = n
        if len(bounds) != sum(k in ("gt", "lt") for k in value):
            return None
        if "gt" in bounds and "lt" in bounds and bounds["gt"] >= bounds["lt"]:
            self.problem(where, "size range is empty: gt must be smaller than lt")
            return None
        return SizeTest(bounds.get("gt"), bounds.get("lt"), where)

    def _time(self, value: Any, where: Location) -> Condition | None:
        if not isinstance(value, dict) or not value:
            self.problem(where, "time needs weekdays and/or hours (and optionally tz), "
                                "e.g. 'time: {weekdays: mon-fri, hours: \"09:00-17:00\", tz: Europe/Berlin}'")
            return None
        ok = True
        weekdays = hours = None
        tz_name, zone = "UTC", time_zone("UTC")
        for k, v in value.items():
            at = value_where(value, k)
            if k == "weekdays":
                weekdays = parse_weekdays(v)
                if weekdays is None:
                    self.problem(at, weekday_problem(v))
                    ok = False
            elif k == "hours":
                hours = parse_hours(v)
                if hours is None:
                    self.problem(at, f"{HOURS_HELP}, got {_type_name(v)}")
                    ok = False
            elif k == "tz":
                zone = time_zone(v) if isinstance(v, str) else None
                if zone is None:
                    hint = nearest(v, zone_names()) if isinstance(v, str) else ""
                    self.problem(at, f"unknown time zone {v!r}{hint}; expected an IANA name like 'Europe/Berlin'")
                    ok = False
                else:
                    tz_name = v
            else:
                self.problem(where_of(value, k), f"unknown time setting {k!r}"
                                                 f"{nearest(k, ('weekdays', 'hours', 'tz'))}; expected weekdays, hours or tz")
                ok = False
        if ok and weekdays is None and hours is None:
            self.problem(where, "time needs weekdays and/or hours, not only tz")
            ok = False
        if not ok:
            return None
        start, end = hours if hours else (None, None)
        return TimeTest(tz_name, zone, weekdays, start, end, where)

    def _header(self, value: Any, where: Location) -> Condition | None:
        if not isinstance(value, dict) or "name" not in value:
            self.problem(where, "header needs a name and an operator, e.g. 'header: {name: X-Priority, equals: \"1\"}'")
            return None
        name = value["name"]
        if not isinstance(name, str) or not name.strip() or ":" in name or " " in name.strip():
            self.problem(value_where(value, "name"), f"header name must be a header field name like 'X-Priority', "
                                                     f"got {_type_name(name)}")
            return None
        rest = {k: v for k, v in value.items() if k != "name"}
        if "exists" in rest:
            present = rest.pop("exists")
            for k in rest:
                self.problem(where_of(value, k), f"{k!r} cannot be combined with exists")
            if not isinstance(present, bool):
                self.problem(value_where(value, "exists"), f"exists must be true or false, got {_type_name(present)}")
                return None
            return HeaderPresent(name.strip(), present, where) if not rest else None
        if not rest:
            return HeaderPresent(name.strip(), True, where)
        return self._text("header", value, where, name.strip())

    def _text(self, field: str, value: Any, where: Location, header: str | None) -> Condition | None:
        if isinstance(value, dict):
            ops = [k for k in value if k in OPERATORS]
            case_sensitive = False
            ok = True
            for k in value:
                if k in OPERATORS or (header is not None and k == "name"):
                    continue
                if k == "case":
                    case = value[k]
                    if case not in ("sensitive", "insensitive"):
                        self.problem(value_where(value, k), f"case must be sensitive or insensitive, got {_type_name(case)}")
                        ok = False
                    case_sensitive = case == "sensitive"
                    continue
                valid = (*OPERATORS, "case") + (("name", "exists") if header is not None else ())
                self.problem(where_of(value, k), f"unknown operator {k!r}{nearest(k, valid)}; expected one of: "
                                                 + ", ".join(OPERATORS))
                ok = False
            if len(ops) != 1:
                if ok:
                    self.problem(where, f"{field} needs exactly one operator ({', '.join(OPERATORS)}); "
                                        + ("combine several with all/any" if ops else "none given"))
                return None
            op = ops[0]
            needle, needle_at = value[op], value_where(value, op)
            if not ok:
                return None
        elif header is None and isinstance(value, list):
            op, needle, needle_at, case_sensitive = "in", value, where, False
        else:
            op, needle, needle_at, case_sensitive = DEFAULT_OPERATOR[field], value, where, False
        return self._build(field, op, needle, needle_at, case_sensitive, header)

    def _build(self, field: str, op: str, needle: Any, where: Location, case_sensitive: bool,
               header: str | None) -> Condition | None:
        label = f"header {header}" if header else field
        if op == "in":
            if not isinstance(needle, list) or not needle or any(not _scalar(v) for v in needle):
                self.problem(where, f"{label} in needs a non-empty list of texts, got {_type_name(needle)}")
                return None
            texts = tuple(_text_of(v) for v in needle)
        else:
            if not _scalar(needle):
                self.problem(where, f"{label} {op} needs a text value, got {_type_name(needle)}")
                return None
            texts = (_text_of(needle),)
            if texts[0] == "":
                self.problem(where, f"{label} {op} needs a non-empty text")
                return None
        written = texts
        pattern = None
        if op == "matches":
            flags = 0 if case_sensitive else regex.IGNORECASE
            try:
                pattern = regex.compile(texts[0], flags)
            except regex.error as exc:
                pos = f" at position {exc.pos}" if getattr(exc, "pos", None) is not None else ""
                msg = str(exc).split(" at position")[0]
                self.problem(where, f"bad regular expression {quote(texts[0])}: {msg}{pos}")
                return None
        elif not case_sensitive:
            texts = tuple(t.casefold() for t in texts)
        return TextTest(field, op, texts, case_sensitive, pattern, header, where, written)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
