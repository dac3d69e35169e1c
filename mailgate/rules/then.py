"""Parse a rule's `then` into Actions, checking every team, agent, SLA policy and template it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import Location, Problem
from ..yamlfile import nearest, value_where, where_of
from .model import PRIORITIES, Actions, Agent, Team
from .values import is_address
from .when import _type_name

ACTIONS = ("team", "agent", "round_robin", "least_open", "priority", "tags", "sla", "ack", "cc", "forward",
           "spam", "reopen", "stop")
_ASSIGN = ("agent", "round_robin", "least_open")


@dataclass(frozen=True)
class Names:
    """What `then` may refer to."""

    teams: Mapping[str, Team]
    agents: Mapping[str, Agent]
    policies: frozenset[str]
    templates: tuple[str, ...]


def _known(kind: str, name: str, choices: Any) -> str:
    listed = ", ".join(sorted(choices)) or "none defined"
    return f"unknown {kind} {name!r}{nearest(name, list(choices))}; known: {listed}"


def parse_then(node: Any, where: Location, names: Names, problems: list[Problem], on: str) -> Actions | None:
    """`then:` mapping -> Actions, or None when it has problems (all of them appended)."""
    def problem(at: Location, message: str) -> None:
        problems.append(Problem(at, message))

    if not isinstance(node, dict) or not node:
        problem(where, "then must be a mapping of actions such as 'team: billing' (use 'stop: true' to do nothing "
                       f"more), got {_type_name(node)}")
        return None
    before = len(problems)
    kw: dict[str, Any] = {}
    for key, value in node.items():
        at = value_where(node, key)
        if key not in ACTIONS:
            problem(where_of(node, key), f"unknown action {key!r}{nearest(key, ACTIONS)}; expected one of: "
                                         + ", ".join(ACTIONS))
        elif key in ("team", "round_robin", "least_open"):
            if not isinstance(value, str) or value not in names.teams:
                problem(at, _known("team", str(value), names.teams))
            else:
                kw[key] = value
        elif key == "agent":
            if not isinstance(value, str) or value not in names.agents:
                problem(at, _known("agent", str(value), names.agents))
            else:
                kw[key] = value
        elif key == "priority":
            if not isinstance(value, str) or value.lower() not in PRIORITIES:
                problem(at, f"priority must be one of {', '.join(PRIORITIES)}, got {_type_name(value)}")
            else:
                kw[key] = value.lower()
        elif key == "sla":
            if not isinstance(value, str) or value not in names.policies:
                problem(at, _known("SLA policy", str(value), names.policies))
            else:
                kw[key] = value
        elif key == "ack":
            if value is False:
                kw[key] = False
            elif value is True:
                kw[key] = "ack"
            elif not isinstance(value, str) or value not in names.templates:
                problem(at, _known("template", str(value), names.templates) + " (or false for no acknowledgement)")
            else:
                kw[key] = value
        elif key == "tags":
            tags = value if isinstance(value, list) else [value]
            if not tags or any(not isinstance(t, (str, int)) or isinstance(t, bool) or not str(t).strip()
                               or any(c.isspace() for c in str(t).strip()) for t in tags):
                problem(at, f"tags must be a tag or a list of tags without spaces, got {_type_name(value)}")
            else:
                kw[key] = tuple(dict.fromkeys(str(t).strip().lower() for t in tags))
        elif key in ("cc", "forward"):
            addrs = value if isinstance(value, list) else [value]
            bad = next((a for a in addrs if not is_address(a)), None) if addrs else value
            if bad is not None or not addrs:
                problem(at, f"{key} must be an email address (or a list of them) like 'boss@example.com', "
                            f"got {_type_name(bad)}")
            else:
                kw[key] = tuple(dict.fromkeys(a.strip().lower() for a in addrs))
        else:  # spam, reopen, stop
            if not isinstance(value, bool):
                problem(at, f"{key} must be true or false, got {_type_name(value)}")
            else:
                kw[key] = value
    if len(problems) > before:
        return None
    _coherent(kw, node, where, names, on, problem)
    if len(problems) > before:
        return None
    return Actions(**kw)


def _coherent(kw: dict[str, Any], node: dict, where: Location, names: Names, on: str, problem: Any) -> None:
    """Checks across the actions of one rule."""
    chosen = [k for k in _ASSIGN if k in kw]
    if len(chosen) > 1:
        problem(where_of(node, chosen[1]), f"{chosen[1]} cannot be combined with {chosen[0]}: "
                                           "choose one way to pick the agent")
    team = kw.get("team")
    if team is not None:
        for key in ("round_robin", "least_open"):
            if key in kw and kw[key] != team:
                problem(value_where(node, key), f"{key} picks from team {kw[key]!r} but this rule sets team {team!r}; "
                                                "drop 'team' (round_robin/least_open set it)")
        agent = kw.get("agent")
        if agent is not None and agent not in names.teams[team].members:
            problem(value_where(node, "agent"), f"agent {agent!r} is not a member of team {team!r}")
    if kw.get("spam"):
        clash = [k for k in ("team", *_ASSIGN, "sla", "reopen") if k in kw] + (
            ["ack"] if isinstance(kw.get("ack"), str) else [])
        if clash:
            problem(where_of(node, clash[0]), f"{clash[0]} cannot be combined with spam: true "
                                              "(spam is stored without a ticket)")
    if kw.get("reopen") and on == "new":
        problem(where_of(node, "reopen"), "reopen only acts on replies: add 'on: reply' (or 'on: both') to this rule")
