"""Small value parsers for rules.yaml: sizes ("5MB"), clock ranges ("09:00-17:00"), weekdays, addresses, time zones."""

from __future__ import annotations

import functools
import re
import zoneinfo

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_UNIT = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
         "g": 1024**3, "gb": 1024**3, "gib": 1024**3}

SIZE_HELP = "a size in bytes or with a unit, e.g. 500000, '200KB' or '5MB' (1 KB = 1024 bytes)"


def parse_size(value: object) -> int | None:
    """Bytes from 500, '200KB', '5MB', '1.5 GB' (binary units); None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE_RE.match(value)
    if not m:
        return None
    return int(float(m.group(1)) * _UNIT[(m.group(2) or "").lower()])


def format_size(n: int) -> str:
    """1048576 -> '1MB', 1536 -> '1.5KB', 700 -> '700 bytes'."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor:
            text = f"{n / factor:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{n} bytes"


_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
HOURS_HELP = "hours must look like '09:00-17:00' (24-hour clock; the end may be 24:00; '22:00-06:00' spans midnight)"


def parse_hours(value: object) -> tuple[int, int] | None:
    """'09:00-17:00' -> (540, 1020) minutes after midnight; None when unreadable or empty."""
    if not isinstance(value, str):
        return None
    m = _HOURS_RE.match(value)
    if not m:
        return None
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        return None
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        return None
    return start, end


def format_minutes(m: int) -> str:
    """540 -> '09:00'."""
    return f"{m // 60:02d}:{m % 60:02d}"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKDAYS_HELP = "weekdays must be day names like [mon, tue] or a range like 'mon-fri'"


def _day(word: str) -> int | None:
    w = word.strip().lower()
    if w in WEEKDAYS:
        return WEEKDAYS.index(w)
    if w in _FULL:
        return _FULL.index(w)
    return None


def parse_weekdays(value: object) -> frozenset[int] | None:
    """[mon, tue] / 'mon-fri' / 'sat,sun' -> {0, 1, ...} (Monday is 0); None when unreadable."""
    words: list[str] = []
    if isinstance(value, str):
        words = [w for w in value.split(",") if w.strip()]
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = list(value)
    else:
        return None
    days: set[int] = set()
    for word in words:
        if "-" in word:
            first, _, last = word.partition("-")
            a, b = _day(first), _day(last)
            if a is None or b is None:
                return None
            i = a
            while True:
                days.add(i)
                if i == b:
                    break
                i = (i + 1) % 7
        else:
            d = _day(word)
            if d is None:
                return None
            days.add(d)
    return frozenset(days) if days else None


def weekday_problem(value: object) -> str:
    """Why `value` is not a weekday list, in words."""
    words = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    if not words:
        return f"{WEEKDAYS_HELP}, got {value!r}"
    for word in words:
        if not isinstance(word, str):
            return f"{WEEKDAYS_HELP}, got {word!r}"
        for part in word.split("-"):
            if _day(part) is None:
                return f"unknown weekday {part.strip()!r}; {WEEKDAYS_HELP}"
    return WEEKDAYS_HELP


_ADDR_RE = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$|^[^@\s<>,;\"]+@localhost$")


def is_address(value: object) -> bool:
    """True for a bare addr-spec like 'billing@example.com' (no display name, no brackets)."""
    return isinstance(value, str) and bool(_ADDR_RE.match(value.strip()))


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone of that name, or None when there is none."""
    if not isinstance(name, str) or not name or name not in _zones() and name != "UTC":
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def zone_names() -> frozenset[str]:
    """Every time zone name this system knows (for 'did you mean')."""
    return _zones()
