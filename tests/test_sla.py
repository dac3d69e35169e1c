"""Business calendars and policies: deadline arithmetic over nights, weekends, holidays, zones and DST; located errors."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.sla import BusinessCalendar, PriorityTargets, SlaPolicy, parse_policies
from mailgate.yamlfile import loads_located

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = ((540, 1050),)  # 09:00-17:30
WEEKDAYS_ONLY = (OFFICE,) * 5 + ((), ())
BERLIN_OFFICE = BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY)
NY_OFFICE = BusinessCalendar("America/New_York", (((540, 1020),),) * 5 + ((), ()))
FAR_AWAY = frozenset({date(1990, 1, 1)})  # a holiday that only switches off the 24/7 shortcut


def at(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


def policies(text: str) -> tuple[dict[str, SlaPolicy], list[str]]:
    problems: list = []
    found = parse_policies(loads_located(text, "rules.yaml"), problems)
    return found, [str(p) for p in problems]


# --- calendar: plain cases ------------------------------------------------------------------------------

def test_default_calendar_is_24_7_plain_time():
    cal = BusinessCalendar()
    start = at(BERLIN, 2024, 3, 30, 23, 0)
    assert cal.always_open
    # real time, not wall time: Berlin's clocks jump that night, so the wall clock shows 10:00, not 09:00
    assert cal.add_business_minutes(start, 600) == start.astimezone(UTC) + timedelta(minutes=600) == at(BERLIN, 2024, 3, 31, 10)
    assert cal.add_business_minutes(start, 600).tzinfo == UTC
    assert cal.business_minutes_between(start, start + timedelta(hours=5)) == 240  # wall 23:00 -> 04:00 is 4 real hours


def test_overnight_rolls_to_next_morning():
    due = BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 13, 17, 0), 60)  # Monday 17:00
    assert due == at(BERLIN, 2024, 5, 14, 9, 30)
    assert due.tzinfo == UTC


def test_start_before_opening_counts_from_opening():
    assert BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 14, 6, 0), 30) == at(BERLIN, 2024, 5, 14, 9, 30)


def test_weekend_is_skipped():
    assert BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 17, 17, 0), 60) == at(BERLIN, 2024, 5, 20, 9, 30)
    assert BERLIN_OFFICE.business_minutes_between(at(BERLIN, 2024, 5, 17, 17, 0), at(BERLIN, 2024, 5, 20, 9, 30)) == 60
    assert BERLIN_OFFICE.business_minutes_between(at(BERLIN, 2024, 5, 18, 10), at(BERLIN, 2024, 5, 19, 15)) == 0


def test_using_up_the_day_exactly_lands_on_closing_time():
    assert BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 14, 9, 0), 510) == at(BERLIN, 2024, 5, 14, 17, 30)
    assert BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 14, 9, 0), 511) == at(BERLIN, 2024, 5, 15, 9, 1)


def test_several_ranges_a_day():
    cal = BusinessCalendar("Europe/Berlin", (((540, 720), (780, 1020)),) * 7)  # 09-12, 13-17
    assert cal.add_business_minutes(at(BERLIN, 2024, 5, 14, 11, 30), 60) == at(BERLIN, 2024, 5, 14, 13, 30)
    assert cal.business_minutes_between(at(BERLIN, 2024, 5, 14, 0), at(BERLIN, 2024, 5, 15, 0)) == 420


def test_listed_holiday_dates_are_closed():
    cal = BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY, frozenset({date(2024, 12, 24), date(2024, 12, 27)}))
    due = cal.add_business_minutes(at(BERLIN, 2024, 12, 23, 17, 0), 60)
    assert due == at(BERLIN, 2024, 12, 25, 9, 30)  # only the listed dates are closed
    assert cal.is_holiday(date(2024, 12, 24)) and not cal.is_holiday(date(2024, 12, 25))


def test_country_holidays_close_easter():
    cal = BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY, holiday_country="DE")
    # Thursday before Easter 2024: Good Friday and Easter Monday are public holidays in all of Germany.
    assert cal.add_business_minutes(at(BERLIN, 2024, 3, 28, 17, 0), 60) == at(BERLIN, 2024, 4, 2, 9, 30)


def test_country_subdivision_matters():
    bavaria = BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY, holiday_country="DE", holiday_subdivision="BY")
    berlin = BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY, holiday_country="DE", holiday_subdivision="BE")
    friday = at(BERLIN, 2025, 1, 3, 17, 0)  # Monday 6 January is Epiphany in Bavaria only
    assert bavaria.add_business_minutes(friday, 60) == at(BERLIN, 2025, 1, 7, 9, 30)
    assert berlin.add_business_minutes(friday, 60) == at(BERLIN, 2025, 1, 6, 9, 30)


def test_naive_datetimes_and_negative_amounts_are_refused():
    with pytest.raises(ValueError, match="naive"):
        BERLIN_OFFICE.add_business_minutes(datetime(2024, 5, 14, 9, 0), 10)
    with pytest.raises(ValueError, match="negative"):
        BERLIN_OFFICE.add_business_minutes(at(BERLIN, 2024, 5, 14, 9, 0), -1)


def test_between_is_antisymmetric():
    a, b = at(BERLIN, 2024, 5, 14, 10, 0), at(BERLIN, 2024, 5, 15, 10, 0)
    assert BERLIN_OFFICE.business_minutes_between(b, a) == -BERLIN_OFFICE.business_minutes_between(a, b) == -510


# --- calendar: time zones and DST -----------------------------------------------------------------------

def test_berlin_spring_forward_day_is_23_hours():
    cal = BusinessCalendar("Europe/Berlin", holiday_dates=FAR_AWAY)
    assert not cal.always_open
    assert cal.business_minutes_between(at(BERLIN, 2024, 3, 31, 0, 0), at(BERLIN, 2024, 4, 1, 0, 0)) == 23 * 60
    assert cal.add_business_minutes(at(BERLIN, 2024, 3, 31, 1, 30), 60) == at(BERLIN, 2024, 3, 31, 3, 30)


def test_berlin_fall_back_day_is_25_hours():
    cal = BusinessCalendar("Europe/Berlin", holiday_dates=FAR_AWAY)
    assert cal.business_minutes_between(at(BERLIN, 2024, 10, 27, 0, 0), at(BERLIN, 2024, 10, 28, 0, 0)) == 25 * 60


def test_hours_across_the_jump_count_real_time():
    night = BusinessCalendar("Europe/Berlin", (((60, 240),),) * 7)  # 01:00-04:00 every day
    assert night.open_intervals(date(2024, 3, 31)) == ((at(UTC, 2024, 3, 31, 0), at(UTC, 2024, 3, 31, 2)),)
    assert night.open_intervals(date(2024, 10, 27)) == ((at(UTC, 2024, 10, 26, 23), at(UTC, 2024, 10, 27, 3)),)


def test_opening_inside_the_gap_opens_at_the_jump():
    cal = BusinessCalendar("Europe/Berlin", (((150, 300),),) * 7)  # 02:30-05:00
    assert cal.open_intervals(date(2024, 3, 31)) == ((at(UTC, 2024, 3, 31, 1), at(UTC, 2024, 3, 31, 3)),)
    inside = BusinessCalendar("Europe/Berlin", (((130, 170),), ) * 7)  # 02:10-02:50 does not exist that day
    assert inside.open_intervals(date(2024, 3, 31)) == ()
    assert inside.open_intervals(date(2024, 3, 30)) != ()


def test_ambiguous_opening_means_first_occurrence():
    cal = BusinessCalendar("Europe/Berlin", (((150, 300),),) * 7)  # 02:30 happens twice on 27 October
    assert cal.open_intervals(date(2024, 10, 27)) == ((at(UTC, 2024, 10, 27, 0, 30), at(UTC, 2024, 10, 27, 4)),)


def test_office_hours_over_a_dst_weekend():
    friday = at(BERLIN, 2024, 10, 25, 17, 0)  # CEST; Monday is CET
    due = BERLIN_OFFICE.add_business_minutes(friday, 60)
    assert due == at(UTC, 2024, 10, 28, 8, 30) == at(BERLIN, 2024, 10, 28, 9, 30)
    assert BERLIN_OFFICE.business_minutes_between(friday, due) == 60


def test_new_york_spring_forward_and_fall_back():
    allday = BusinessCalendar("America/New_York", holiday_dates=FAR_AWAY)
    assert allday.business_minutes_between(at(NEW_YORK, 2024, 3, 10, 0), at(NEW_YORK, 2024, 3, 11, 0)) == 23 * 60
    assert allday.business_minutes_between(at(NEW_YORK, 2024, 11, 3, 0), at(NEW_YORK, 2024, 11, 4, 0)) == 25 * 60
    due = NY_OFFICE.add_business_minutes(at(NEW_YORK, 2024, 3, 8, 16, 30), 60)  # Friday EST -> Monday EDT
    assert due == at(NEW_YORK, 2024, 3, 11, 9, 30) == at(UTC, 2024, 3, 11, 13, 30)


def test_zones_are_independent_of_the_input_zone():
    start_utc = at(UTC, 2024, 5, 14, 15, 0)  # 17:00 Berlin, 11:00 New York
    assert BERLIN_OFFICE.add_business_minutes(start_utc, 60) == at(BERLIN, 2024, 5, 15, 9, 30)
    assert NY_OFFICE.add_business_minutes(start_utc.astimezone(NEW_YORK), 60) == at(NEW_YORK, 2024, 5, 14, 12, 0)


# --- calendar: properties -------------------------------------------------------------------------------

CALENDARS = [
    BERLIN_OFFICE,
    BusinessCalendar("Europe/Berlin", WEEKDAYS_ONLY, holiday_country="DE", holiday_subdivision="BY"),
    NY_OFFICE,
    BusinessCalendar("Europe/Berlin", (((90, 165), (180, 300)),) * 7),  # edges inside the gap and the overlap
    BusinessCalendar("America/Santiago", (((0, 1440),),) * 7, FAR_AWAY),  # DST changes at midnight
    BusinessCalendar("Australia/Lord_Howe", ((), ((0, 600), (630, 1440))) + ((),) * 5),  # half-hour DST
    BusinessCalendar("Asia/Tokyo", ((), (), (), (), (), ((600, 660),), ())),  # one hour a week
]
calendars = st.sampled_from(CALENDARS)
instants = st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC))
minutes = st.integers(0, 6000)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, minutes)
def test_add_then_measure_round_trips(cal, start, m):
    end = cal.add_business_minutes(start, m)
    assert end >= start
    assert cal.between(start, end) == timedelta(minutes=m)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, minutes, minutes)
def test_adding_a_then_b_is_adding_a_plus_b(cal, start, a, b):
    assert cal.add_business_minutes(cal.add_business_minutes(start, a), b) == cal.add_business_minutes(start, a + b)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, instants, minutes, minutes)
def test_adding_is_monotonic(cal, s1, s2, a, b):
    s1, s2 = min(s1, s2), max(s1, s2)
    a, b = min(a, b), max(a, b)
    assert cal.add_business_minutes(s1, a) <= cal.add_business_minutes(s1, b)
    assert cal.add_business_minutes(s1, a) <= cal.add_business_minutes(s2, a)


@settings(max_examples=300, deadline=None)
@given(calendars, instants, st.timedeltas(timedelta(0), timedelta(days=20)), st.timedeltas(timedelta(0), timedelta(days=20)))
def test_measuring_adds_up_and_never_exceeds_real_time(cal, a, d1, d2):
    b, c = a + d1, a + d1 + d2
    assert cal.between(a, b) + cal.between(b, c) == cal.between(a, c)
    assert timedelta(0) <= cal.between(a, c) <= c - a


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "UTC"]),
       instants, st.integers(0, 200_000))
def test_an_all_day_calendar_is_plain_time(zone, start, m):
    cal = BusinessCalendar(zone, holiday_dates=FAR_AWAY)  # the general path, not the 24/7 shortcut
    assert cal.add_business_minutes(start, m) == start + timedelta(minutes=m)
    assert cal.business_minutes_between(start, start + timedelta(minutes=m)) == m


@settings(max_examples=100, deadline=None)
@given(calendars, instants)
def test_is_open_agrees_with_measuring(cal, t):
    assert cal.is_open(t) == (cal.between(t, t + timedelta(seconds=1)) == timedelta(seconds=1))


# --- policies -------------------------------------------------------------------------------------------

GOOD = """\
standard:
  ack_within: 15
  first_response_within: 4h
  resolution_within: 1h30m
  next_response_within: 120
  warn_at: 0.75
  priorities:
    urgent: {first_response_within: 30, resolution_within: null}
    low: {ack_within: 60}
  business_hours:
    timezone: Europe/Berlin
    mon-fri: "09:00-12:00, 13:00-17:30"
    sat: ["10:00-12:00"]
    holidays: [2024-12-24, "2024-12-31"]
    holiday_country: de
    holiday_subdivision: by
around-the-clock:
  ack_within: null
  business_hours: 24/7
"""


def test_a_good_policy_file():
    found, problems = policies(GOOD)
    assert problems == []
    std = found["standard"]
    assert (std.ack_within, std.first_response_within, std.resolution_within, std.next_response_within) == (15, 240, 90, 120)
    assert std.warn_at == 0.75
    cal = std.calendar
    assert cal.timezone == "Europe/Berlin" and cal.holiday_country == "DE" and cal.holiday_subdivision == "BY"
    assert cal.week[0] == ((540, 720), (780, 1050)) and cal.week[5] == ((600, 720),) and cal.week[6] == ()
    assert cal.holiday_dates == {date(2024, 12, 24), date(2024, 12, 31)}
    assert found["around-the-clock"].ack_within is None and found["around-the-clock"].calendar.always_open


def test_priority_overrides():
    std = policies(GOOD)[0]["standard"]
    assert std.priorities[0] == PriorityTargets("urgent", (("first_response_within", 30), ("resolution_within", None)))
    urgent = std.for_priority("urgent")
    assert (urgent.first_response_within, urgent.resolution_within, urgent.ack_within) == (30, None, 15)
    assert std.for_priority("low").ack_within == 60
    assert std.for_priority("normal") is std and std.for_priority(None) is std


def test_timezone_only_means_open_all_day_except_holidays():
    found, problems = policies("p:\n  business_hours:\n    timezone: America/New_York\n    holidays: [2024-07-04]\n")
    assert problems == []
    cal = found["p"].calendar
    assert cal.week == (((0, 1440),),) * 7 and not cal.always_open
    assert cal.open_intervals(date(2024, 7, 4)) == ()


def test_defaults_without_settings():
    found, problems = policies("basic: {}\n")
    assert problems == [] and found["basic"] == SlaPolicy("basic")
    assert found["basic"].calendar.always_open


@pytest.mark.parametrize("text, expected", [
    ("p:\n  ack_whithin: 5\n", "rules.yaml:2:3: unknown SLA setting 'ack_whithin' (did you mean 'ack_within'?)"),
    ("p:\n  ack_within: -5\n", "rules.yaml:2:15: ack_within must be a positive number of minutes"),
    ("p:\n  first_response_within: 2d\n", "rules.yaml:2:26: first_response_within must be a positive number"),
    ("p:\n  warn_at: 1.5\n", "rules.yaml:2:12: warn_at must be a fraction between 0 and 1"),
    ("p: 15\n", "rules.yaml:1:4: SLA policy 'p' must be a mapping"),
    ("- p\n", "rules.yaml:1:1: sla_policies must be a mapping"),
    ("p:\n  business_hours:\n    timezone: Europe/Berlim\n",
     "rules.yaml:3:15: unknown time zone 'Europe/Berlim' (did you mean 'Europe/Berlin'?)"),
    ("p:\n  business_hours:\n    mon-fri: 9-17\n", "rules.yaml:3:14: mon-fri: expected opening hours like '09:00-17:30'"),
    ("p:\n  business_hours:\n    mon: '22:00-06:00'\n", "rules.yaml:3:10: mon: '22:00-06:00' ends before it starts"),
    ("p:\n  business_hours:\n    tue: '09:00-25:00'\n", "rules.yaml:3:10: tue: '09:00-25:00' is not a time of day"),
    ("p:\n  business_hours:\n    wed: '09:00-12:00, 11:00-13:00'\n", "rules.yaml:3:10: wed: opening hours overlap"),
    ("p:\n  business_hours:\n    mon-fri: '09:00-17:00'\n    fri: '09:00-12:00'\n",
     "rules.yaml:4:5: fri: fri is given opening hours twice"),
    ("p:\n  business_hours:\n    mon-fir: '09:00-17:00'\n",
     "rules.yaml:3:5: unknown business_hours setting 'mon-fir' (did you mean 'mon-fri'?)"),
    ("p:\n  business_hours:\n    holidays:\n      - 2024-12-24\n      - '2024-13-01'\n",
     "rules.yaml:5:9: holiday '2024-13-01' is not an ISO date"),
    ("p:\n  business_hours:\n    holiday_country: XX\n", "rules.yaml:3:22: holiday_country 'XX' is not known"),
    ("p:\n  business_hours:\n    holiday_country: DE\n    holiday_subdivision: BZ\n",
     "rules.yaml:4:26: DE has no subdivision 'BZ'"),
    ("p:\n  business_hours:\n    holiday_country: DE\n    holiday_subdivision: Bayern\n",
     "rules.yaml:4:26: DE has no subdivision 'Bayern'"),
    ("p:\n  business_hours:\n    holiday_subdivision: BY\n", "rules.yaml:3:5: holiday_subdivision needs a holiday_country"),
    ("p:\n  business_hours:\n    mon-sun: closed\n", "rules.yaml:3:5: business_hours are closed every day"),
    ("p:\n  business_hours: weekdays\n", "rules.yaml:2:19: business_hours must be a mapping"),
    ("p:\n  priorities:\n    urgnet: {ack_within: 5}\n", "rules.yaml:3:5: unknown priority 'urgnet' (did you mean 'urgent'?)"),
    ("p:\n  priorities:\n    high: {resolution: 60}\n",
     "rules.yaml:3:12: unknown target 'resolution' (did you mean 'resolution_within'?)"),
    ("p:\n  priorities:\n    high: {ack_within: 0}\n", "rules.yaml:3:24: ack_within must be a positive number"),
    ("p:\n  priorities: [urgent]\n", "rules.yaml:2:15: priorities must map a priority to its targets"),
])
def test_bad_policies_give_located_problems(text, expected):
    _, problems = policies(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_all_problems_are_collected_and_good_policies_kept():
    found, problems = policies("good: {ack_within: 5}\nbad:\n  ack_within: x\n  warn_at: 2\n  business_hours: {mon: x}\n")
    assert len(problems) == 3
    assert found["good"].ack_within == 5


def test_the_example_in_docs_parses_cleanly():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "sla.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = loads_located(block, "docs/sla.md")
    problems: list = []
    found = parse_policies(doc["sla_policies"], problems)
    assert problems == []
    assert found["standard"].for_priority("urgent").resolution_within == 480
    assert found["standard"].calendar.week[6] == ()
