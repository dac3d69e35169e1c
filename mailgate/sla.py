"""SLA policies, business-hours calendars and deadline arithmetic (first cut: parsing only; the SLA work extends it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Problem
from .yamlfile import nearest, value_where, where_of


@dataclass(frozen=True)
class SlaPolicy:
    """Targets in minutes of (business) time; None means no target."""

    name: str
    ack_within: int | None = 15
    first_response_within: int | None = None
    resolution_within: int | None = None
    next_response_within: int | None = None
    warn_at: float = 0.8


_KEYS = {"ack_within", "first_response_within", "resolution_within", "next_response_within", "warn_at", "business_hours"}


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
            problems.append(Problem(value_where(node, name), f"SLA policy {name!r} must be a mapping"))
            continue
        kwargs: dict[str, Any] = {}
        for key, value in spec.items():
            if key not in _KEYS:
                problems.append(Problem(where_of(spec, key), f"unknown SLA setting {key!r}{nearest(key, _KEYS)}"))
            elif key == "business_hours":
                continue
            elif key == "warn_at":
                if not isinstance(value, (int, float)) or not 0 < value < 1:
                    problems.append(Problem(value_where(spec, key), "warn_at must be a fraction between 0 and 1, e.g. 0.8"))
                else:
                    kwargs[key] = float(value)
            elif value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                problems.append(Problem(value_where(spec, key), f"{key} must be a positive number of minutes"))
            else:
                kwargs[key] = value
        policies[str(name)] = SlaPolicy(name=str(name), **kwargs)
    return policies
