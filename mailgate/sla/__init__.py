"""SLA engine: policies, business-hours calendars, ticket deadlines, warnings and breaches, report figures.

    policy.py   rules.yaml `sla_policies` -> SlaPolicy (with its BusinessCalendar), located problems
    hours.py    BusinessCalendar: open intervals per local day, business-time add and measure (DST-safe)
    clocks.py   compute_deadlines(policy, events, now) -> Deadlines; due_alarms / next_alarm_at
    figures.py  compliance counts and nearest-rank percentiles for reports
All of it is pure: no database, no clock of its own (every function takes `now`).
"""

from .clocks import KINDS, Alarm, ClockEvent, Deadlines, TargetClock, compute_deadlines, due_alarms, next_alarm_at
from .figures import Compliance, Percentiles, compliance, percentile, percentiles
from .hours import BusinessCalendar
from .policy import PRIORITIES, TARGETS, PriorityTargets, SlaPolicy, parse_policies

__all__ = [
    "KINDS", "PRIORITIES", "TARGETS", "Alarm", "BusinessCalendar", "ClockEvent", "Compliance", "Deadlines",
    "Percentiles", "PriorityTargets", "SlaPolicy", "TargetClock", "compliance", "compute_deadlines", "due_alarms",
    "next_alarm_at", "parse_policies", "percentile", "percentiles",
]
