"""Business-hours calendars: which instants count as open time, and arithmetic over open time only.

Opening hours are local wall-clock ranges per weekday in one IANA time zone. Each local date's
ranges are turned into real (UTC) intervals with zoneinfo, so nights, weekends, holidays and DST
changes all fall out of the same rule: a business minute is a real minute inside an open interval.

DST, documented behaviour:
* A wall time that does not exist (spring-forward gap, e.g. 02:30 in Europe/Berlin on the last
  Sunday of March) means the first instant after the gap, the moment the clocks jump. A range that
  lies wholly inside the gap is therefore empty; one that starts in it opens at the jump.
* A wall time that happens twice (fall-back overlap) means its first occurrence (PEP 495 fold=0).
  So ``00:00-24:00`` on a fall-back day is 25 real hours and on a spring-forward day 23.
The wall-time-to-instant map is thus monotonic, and a day's ``24:00`` is the next day's ``00:00``,
so a calendar open all day every day measures exactly what a plain ``timedelta`` measures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays as holidays_lib

UTC = timezone.utc
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Range = tuple[int, int]  # [start, end) in minutes after local midnight, 0 <= start < end <= 1440
ALL_DAY: tuple[Range, ...] = ((0, 1440),)
_MAX_CLOSED_DAYS = 3700  # ten years without an open minute means the calendar is unusable


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly opening hours in one time zone, minus holidays; the default is open 24/7 (UTC)."""

    timezone: str = "UTC"
    week: tuple[tuple[Range, ...], ...] = (ALL_DAY,) * 7  # Monday .. Sunday
    holiday_dates: frozenset[date] = frozenset()
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.timezone))
        if len(self.week) != 7:
            raise ValueError("week needs seven days of ranges, Monday first")
        for ranges in self.week:
            last = 0
            for start, end in ranges:
                if not (last <= start < end <= 1440):
                    raise ValueError(f"opening ranges must be ordered, disjoint and within 00:00-24:00: {ranges}")
                last = end
        if not any(self.week):
            raise ValueError("a calendar must be open on at least one weekday")

    @property
    def always_open(self) -> bool:
        """True for a 24/7 calendar without holidays: business time is real time."""
        return all(day == ALL_DAY for day in self.week) and not self.holiday_dates and not self.holiday_country

    def is_holiday(self, day: date) -> bool:
        """Whether the local date `day` is closed as a holiday (listed date or the country's calendar)."""
        if day in self.holiday_dates:
            return True
        if self.holiday_country:
            return day in _country_holidays(self.holiday_country, self.holiday_subdivision, day.year)
        return False

    def open_intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The open intervals of local date `day` as UTC instants (empty on holidays and closed days)."""
        return _open_intervals(self, day)

    def is_open(self, at: datetime) -> bool:
        """Whether the instant `at` lies inside opening hours."""
        at = _utc(at)
        return any(s <= at < e for s, e in self.open_intervals(self._local_date(at)))

    def add_business_minutes(self, start: datetime, minutes: float) -> datetime:
        """The instant `minutes` business minutes after `start` (UTC); 0 returns `start` itself.

        A deadline that uses up an interval exactly lands on its closing time, not the next opening.
        """
        return self.add(start, timedelta(minutes=minutes))

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        """Business minutes from `a` to `b` (negative when `b` is before `a`)."""
        return self.between(a, b) / timedelta(minutes=1)

    def add(self, start: datetime, amount: timedelta) -> datetime:
        """`add_business_minutes` with a timedelta of business time (exact to the microsecond)."""
        start = _utc(start)
        if amount < timedelta(0):
            raise ValueError("cannot add a negative business time")
        if amount == timedelta(0) or self.always_open:
            return start + amount
        day, closed_days = self._local_date(start), 0
        while True:
            intervals = self.open_intervals(day)
            for s, e in intervals:
                if e <= start:
                    continue
                s = max(s, start)
                if amount <= e - s:
                    return s + amount
                amount -= e - s
            closed_days = 0 if intervals else closed_days + 1
            if closed_days > _MAX_CLOSED_DAYS:
                raise ValueError("calendar has no open time left (holidays cover years)")
            day += timedelta(days=1)

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Business time from `a` to `b` as a timedelta (negative when `b` is before `a`)."""
        a, b = _utc(a), _utc(b)
        if b < a:
            return -self.between(b, a)
        if self.always_open:
            return b - a
        total = timedelta(0)
        day, last = self._local_date(a), self._local_date(b)
        while day <= last:
            for s, e in self.open_intervals(day):
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()} given; SLA arithmetic needs aware datetimes")
    return at.astimezone(UTC)


@functools.lru_cache(maxsize=256)
def _country_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays_lib.country_holidays(country, subdiv=subdivision, years=year))


@functools.lru_cache(maxsize=8192)
def _open_intervals(cal: BusinessCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    if cal.is_holiday(day):
        return ()
    out: list[tuple[datetime, datetime]] = []
    for start, end in cal.week[day.weekday()]:
        s, e = wall_to_utc(day, start, cal.zone), wall_to_utc(day, end, cal.zone)
        if e > s:
            out.append((s, e))
    return tuple(out)


def wall_to_utc(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """The instant of local wall time `day` + `minute` minutes (1440 = next midnight), per the DST rules above."""
    if minute >= 1440:
        day, minute = day + timedelta(days=minute // 1440), minute % 1440
    wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    first = wall.astimezone(UTC)  # fold=0: the earlier reading of an ambiguous time
    if first.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first
    # A gap: fold=0 reads the wall time with the offset before the jump (an instant after it), fold=1
    # with the offset after (an instant before it). The jump lies between; find it to the second.
    lo = wall.replace(fold=1).astimezone(UTC)
    hi = first
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi
