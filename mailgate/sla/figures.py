"""Compliance and percentile figures for SLA reports (pure arithmetic over stored due and met times).

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value at
rank ceil(p/100 * n) (1-based). It is always one of the observed values, never interpolated, so
"p90 = 42 min" means at least 90% of the tickets took 42 minutes or less and one actually took 42.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from .hours import _utc


@dataclass(frozen=True)
class Compliance:
    """How many targets were met on time, late (or are overdue), or are still open and not yet due."""

    on_time: int = 0
    late: int = 0
    open: int = 0

    @property
    def judged(self) -> int:
        """Targets whose outcome is known: on time + late."""
        return self.on_time + self.late

    @property
    def percent(self) -> float | None:
        """On-time share of the judged targets in percent; None when nothing can be judged yet."""
        return 100.0 * self.on_time / self.judged if self.judged else None


def compliance(pairs: Iterable[tuple[datetime | None, datetime | None]], now: datetime) -> Compliance:
    """Count (due, met_at) pairs: met by due = on time; met after due, or unmet past due = late.

    Unmet and not yet due counts as open; a pair without a due time (no target, clock stopped) is skipped.
    Meeting a target exactly at its due instant is on time.
    """
    now = _utc(now)
    on_time = late = still_open = 0
    for due, met in pairs:
        if due is None:
            continue
        if met is not None:
            if _utc(met) <= _utc(due):
                on_time += 1
            else:
                late += 1
        elif now > _utc(due):
            late += 1
        else:
            still_open += 1
    return Compliance(on_time, late, still_open)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank p-th percentile (0 < p <= 100) of `values`; None for no values."""
    if not 0 < p <= 100:
        raise ValueError("percentile p must be in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]  # p*n first: exact for whole p


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99 (nearest rank) of a set of durations, in the unit they were given in."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None


def percentiles(values: Iterable[float]) -> Percentiles:
    """The report's usual triple of nearest-rank percentiles."""
    data = sorted(values)
    return Percentiles(len(data), percentile(data, 50), percentile(data, 90), percentile(data, 99))
