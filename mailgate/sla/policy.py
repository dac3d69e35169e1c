"""SLA policies from rules.yaml `sla_policies`: targets, warning fraction, priority overrides, business hours.

Every mistake becomes a located `Problem` (file:line:column, what was expected, the nearest valid
key); parsing never raises. See docs/sla.md for the admin's view of the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import holidays as holidays_lib

from ..errors import Problem
from ..yamlfile import nearest, value_where, where_of
from .hours import WEEKDAYS, BusinessCalendar, Range

TARGETS = ("ack_within", "first_response_within", "resolution_within", "next_response_within")
PRIORITIES = ("low", "normal", "high", "urgent")


@dataclass(frozen=True)
class PriorityTargets:
    """Targets that replace the policy's own for one ticket priority; targets not named keep the policy's."""

    priority: str
    changes: tuple[tuple[str, int | None], ...] = ()  # (target name, minutes or None = no target)


@dataclass(frozen=True)
class SlaPolicy:
    """Targets in minutes of (business) time; None means no target."""

    name: str
    ack_within: int | None = 15
    first_response_within: int | None = None
    resolution_within: int | None = None
    next_response_within: int | None = None
    warn_at: float = 0.8
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    priorities: tuple[PriorityTargets, ...] = ()

    def for_priority(self, priority: str | None) -> SlaPolicy:
        """This policy with the targets of `priority` applied (itself when there is no override)."""
        for override in self.priorities:
            if override.priority == priority:
                return replace(self, priorities=(), **dict(override.changes))
        return self

    def target(self, name: str) -> int | None:
        """Minutes for a target by its short name: ack, first_response, next_response, resolution."""
        return getattr(self, f"{name}_within")


_KEYS = set(TARGETS) | {"warn_at", "business_hours", "priorities"}
_HOURS_KEYS = {"timezone", "holidays", "holiday_country", "holiday_subdivision"}
_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_policies(node: Any, problems: list[Problem]) -> dict[str, SlaPolicy]:
    """rules.yaml `sla_policies` (a mapping name -> settings) -> policies; problems appended, never raised."""
    policies: dict[str, SlaPolicy] = {}
    if node is None:
        return policies
    if not isinstance(node, dict):
        problems.append(Problem(where_of(node), "sla_policies must be a mapping of policy name to its targets"))
        return policies
    for name, spec in node.items():
        if not isinstance(spec, dict):
            problems.append(Problem(value_where(node, name), f"SLA policy {name!r} must be a mapping of its targets"))
            continue
        kwargs: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in _KEYS:
                problems.append(Problem(where_of(spec, key), f"unknown SLA setting {key!r}{nearest(key, _KEYS)}; "
                                        f"expected one of {', '.join(sorted(_KEYS))}"))
            elif key == "business_hours":
                calendar = _parse_hours(spec, value, problems)
                if calendar is not None:
                    kwargs["calendar"] = calendar
            elif key == "priorities":
                kwargs["priorities"] = _parse_priorities(spec, value, problems)
            elif key == "warn_at":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                    problems.append(Problem(value_where(spec, key), "warn_at must be a fraction between 0 and 1, e.g. 0.8"))
                else:
                    kwargs[key] = float(value)
            else:
                minutes = _minutes(spec, key, problems)
                if minutes is not False:
                    kwargs[key] = minutes
        policies[str(name)] = SlaPolicy(name=str(name), **kwargs)
    return policies


def _minutes(mapping: Any, key: str, problems: list[Problem]) -> int | None | bool:
    """A target: positive minutes, '4h', '1h30m', '90m' or null; False (after a problem) when invalid."""
    value = mapping[key]
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)) and (m.group(1) or m.group(2)):
        minutes = int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
        if minutes > 0:
            return minutes
    problems.append(Problem(value_where(mapping, key), f"{key} must be a positive number of minutes "
                            f"(e.g. 240, '4h' or '1h30m') or null for no target, not {value!r}"))
    return False


def _parse_priorities(spec: Any, node: Any, problems: list[Problem]) -> tuple[PriorityTargets, ...]:
    if not isinstance(node, dict):
        problems.append(Problem(value_where(spec, "priorities"), "priorities must map a priority to its targets, "
                                "e.g. priorities: {urgent: {first_response_within: 30}}"))
        return ()
    out = []
    for priority, targets in node.items():
        if priority not in PRIORITIES:
            problems.append(Problem(where_of(node, priority), f"unknown priority {priority!r}{nearest(priority, PRIORITIES)}; "
                                    f"expected one of {', '.join(PRIORITIES)}"))
            continue
        if not isinstance(targets, dict):
            problems.append(Problem(value_where(node, priority), f"priority {priority!r} needs a mapping of targets, "
                                    "e.g. {first_response_within: 30}"))
            continue
        changes = []
        for key in targets:
            if key not in TARGETS:
                problems.append(Problem(where_of(targets, key), f"unknown target {key!r}{nearest(key, TARGETS)}; "
                                        f"a priority may set {', '.join(TARGETS)}"))
                continue
            minutes = _minutes(targets, key, problems)
            if minutes is not False:
                changes.append((key, minutes))
        out.append(PriorityTargets(str(priority), tuple(changes)))
    return tuple(out)


def _day_keys(key: str) -> list[int] | None:
    """'mon' -> [0]; 'mon-fri' -> [0..4]; 'sat,sun' -> [5, 6]; 'daily' -> all; None when not days."""
    if key.strip().lower() == "daily":
        return list(range(7))
    days: list[int] = []
    for part in key.lower().split(","):
        ends = [p.strip() for p in part.split("-")]
        if len(ends) > 2 or any(e not in WEEKDAYS for e in ends):
            return None
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        if last < first:
            return None
        days.extend(range(first, last + 1))
    return days


def _ranges(value: Any) -> tuple[Range, ...] | str:
    """'09:00-12:00, 13:00-17:30' (or a list of such, or 'closed') -> ranges; a string says what is wrong."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "closed"):
        return ()
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
    if items is None:
        return f"expected opening hours like '09:00-17:30', not {value!r}"
    ranges: list[Range] = []
    for item in items:
        m = _RANGE.match(str(item))
        if not m:
            return f"expected opening hours like '09:00-17:30' (several separated by commas), not {item!r}"
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            return f"{item!r} is not a time of day (00:00 to 24:00)"
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            return (f"{item!r} ends before it starts; a range past midnight must be split, "
                    "e.g. mon: '22:00-24:00' and tue: '00:00-06:00'")
        ranges.append((start, end))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            return f"opening hours overlap: {value!r}"
    return tuple(ranges)


def _parse_hours(spec: Any, node: Any, problems: list[Problem]) -> BusinessCalendar | None:
    if node in (None, "24/7", "always"):
        return BusinessCalendar()
    if not isinstance(node, dict):
        problems.append(Problem(value_where(spec, "business_hours"), "business_hours must be a mapping "
                                "(timezone, weekdays like mon-fri: '09:00-17:30', holidays) or '24/7'"))
        return None
    ok = True
    zone = "UTC"
    week: list[tuple[Range, ...] | None] = [None] * 7
    dates: set[date] = set()
    country = subdivision = None
    day_names = ["mon-fri", "sat", "sun", *WEEKDAYS, "daily"]
    for key, value in node.items():
        here = value_where(node, key)
        if key == "timezone":
            try:
                ZoneInfo(str(value))
                zone = str(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                problems.append(Problem(here, f"unknown time zone {value!r}{nearest(str(value), available_timezones())}; "
                                        "expected an IANA name like Europe/Berlin"))
                ok = False
        elif key == "holidays":
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                try:
                    if isinstance(item, datetime):
                        raise ValueError(item)
                    dates.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
                except ValueError:
                    where = value.item_where[i] if hasattr(value, "item_where") else here
                    problems.append(Problem(where, f"holiday {item!r} is not an ISO date like 2024-12-24"))
                    ok = False
        elif key == "holiday_country":
            country = str(value).upper()
            if country not in holidays_lib.list_supported_countries():
                problems.append(Problem(here, f"holiday_country {value!r} is not known to the holidays package"
                                        f"{nearest(country, holidays_lib.list_supported_countries())}; "
                                        "expected an ISO 3166 code like DE"))
                ok = False
        elif key == "holiday_subdivision":
            subdivision = str(value)
        elif (days := _day_keys(key)) is not None:
            ranges = _ranges(value)
            if isinstance(ranges, str):
                problems.append(Problem(here, f"{key}: {ranges}"))
                ok = False
                continue
            for d in days:
                if week[d] is not None:
                    problems.append(Problem(where_of(node, key), f"{key}: {WEEKDAYS[d]} is given opening hours twice"))
                    ok = False
                week[d] = ranges
        else:
            problems.append(Problem(where_of(node, key), f"unknown business_hours setting {key!r}"
                                    f"{nearest(key, _HOURS_KEYS | set(day_names))}; expected timezone, holidays, "
                                    "holiday_country, holiday_subdivision or weekdays like mon-fri"))
            ok = False
    if subdivision is not None:
        if country is None:
            problems.append(Problem(where_of(node, "holiday_subdivision"), "holiday_subdivision needs a holiday_country"))
            ok = False
        elif country in holidays_lib.list_supported_countries():
            subdivisions = holidays_lib.list_supported_countries()[country]
            subdivision = next((x for x in subdivisions if x.lower() == subdivision.lower()), subdivision)
            if subdivision not in subdivisions:
                problems.append(Problem(value_where(node, "holiday_subdivision"), f"{country} has no subdivision "
                                        f"{subdivision!r}{nearest(subdivision, subdivisions)}"))
                ok = False
    if all(day is None for day in week):
        week = [((0, 1440),)] * 7  # only a zone and/or holidays: open around the clock except on holidays
    elif not any(week):
        problems.append(Problem(value_where(spec, "business_hours"), "business_hours are closed every day; "
                                "give at least one weekday opening hours"))
        ok = False
    if not ok:
        return None
    return BusinessCalendar(zone, tuple(day or () for day in week), frozenset(dates), country, subdivision)
