"""rules.yaml -> Ruleset: reads teams, agents, SLA policies, templates and rules, reporting ALL located problems."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import Location, Problem, RulesError
from ..sla import parse_policies
from ..yamlfile import YamlProblem, load_located, loads_located, nearest, value_where, where_of
from .model import APPLIES_TO, DEFAULT_TEMPLATE, Agent, Rule, Ruleset, Team
from .then import ACTIONS, Names, parse_then
from .values import is_address
from .when import WhenParser, _type_name

TOP_KEYS = ("teams", "agents", "sla_policies", "templates", "rules")
TEAM_KEYS = ("members", "escalation")
AGENT_KEYS = ("addresses", "team", "away", "name")
RULE_KEYS = ("name", "when", "then", "continue", "on", "description")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_ruleset(path: str | Path) -> tuple[Ruleset | None, list[Problem]]:
    """Read and check a rules file: (Ruleset, []) when good, (None, every problem found) when not."""
    try:
        doc = load_located(path)
    except YamlProblem as exc:
        return None, [exc.problem]
    return _check_doc(doc, str(path))


def check_ruleset_text(text: str, path: str = "<string>") -> tuple[Ruleset | None, list[Problem]]:
    """Like `check_ruleset`, for YAML text already in memory (`path` only labels the problems)."""
    try:
        doc = loads_located(text, path)
    except YamlProblem as exc:
        return None, [exc.problem]
    return _check_doc(doc, path)


def load_ruleset(path: str | Path) -> Ruleset:
    """Read a rules file; raise RulesError carrying every problem found."""
    ruleset, problems = check_ruleset(path)
    if problems or ruleset is None:
        raise RulesError(problems or [Problem(Location(str(path)), "cannot be used")])
    return ruleset


def _check_doc(doc: Any, path: str) -> tuple[Ruleset | None, list[Problem]]:
    problems: list[Problem] = []
    if doc is None:
        return Ruleset(source=path), []
    if not isinstance(doc, dict):
        return None, [Problem(where_of(doc) if hasattr(doc, "where") else Location(path, 1, 1),
                              "a rules file must be a mapping with keys " + ", ".join(TOP_KEYS))]
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(Problem(where_of(doc, key), f"unknown key {key!r}{nearest(key, TOP_KEYS)}; expected one of: "
                                                        + ", ".join(TOP_KEYS)))
    templates = _templates(doc.get("templates"), doc, problems)
    policies = parse_policies(doc.get("sla_policies"), problems)
    agent_node, team_node = _mapping(doc, "agents", problems), _mapping(doc, "teams", problems)
    agents = _agents(agent_node, set(team_node), problems)
    teams = _teams(team_node, agents, set(agent_node), problems)
    names = Names(teams, agents, frozenset(policies), templates)
    rules = _rules(doc, names, problems)
    if problems:
        return None, sorted(problems, key=lambda p: (p.where.line, p.where.column))
    return Ruleset(tuple(rules), teams, agents, policies, templates, path), []


def _mapping(doc: dict, key: str, problems: list[Problem]) -> dict:
    node = doc.get(key)
    if node is None:
        return {}
    if not isinstance(node, dict):
        problems.append(Problem(value_where(doc, key), f"{key} must be a mapping of name to settings, got {_type_name(node)}"))
        return {}
    return node


def _bad_name(kind: str, name: str) -> str:
    return f"{kind} name {name!r} must be letters, digits, '_', '.' or '-' (no spaces)"


def _templates(node: Any, doc: dict, problems: list[Problem]) -> tuple[str, ...]:
    names = [DEFAULT_TEMPLATE]
    if node is None:
        return tuple(names)
    if not isinstance(node, list):
        problems.append(Problem(value_where(doc, "templates"), f"templates must be a list of template names like "
                                                               f"[ack, ack_vip], got {_type_name(node)}"))
        return tuple(names)
    for i, item in enumerate(node):
        at = node.item_where[i] if hasattr(node, "item_where") else where_of(node)
        if not isinstance(item, str) or not _NAME_RE.match(item):
            problems.append(Problem(at, f"a template name must be a word like ack_vip, got {_type_name(item)}"))
        elif item in names and item != DEFAULT_TEMPLATE:
            problems.append(Problem(at, f"template {item!r} is listed twice"))
        elif item not in names:
            names.append(item)
    return tuple(names)


def _agents(node: dict, team_names: set[str], problems: list[Problem]) -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    owner: dict[str, str] = {}
    for name, spec in node.items():
        at = where_of(node, name)
        if not _NAME_RE.match(name):
            problems.append(Problem(at, _bad_name("agent", name)))
            continue
        if not isinstance(spec, dict):
            problems.append(Problem(value_where(node, name), f"agent {name!r} must be a mapping with addresses and "
                                                             f"team, got {_type_name(spec)}"))
            continue
        ok = True
        for key in spec:
            if key not in AGENT_KEYS:
                problems.append(Problem(where_of(spec, key), f"unknown agent setting {key!r}{nearest(key, AGENT_KEYS)}; "
                                                             "expected one of: " + ", ".join(AGENT_KEYS)))
                ok = False
        raw = spec.get("addresses")
        addrs = raw if isinstance(raw, list) else [raw] if raw is not None else []
        if not addrs:
            problems.append(Problem(at, f"agent {name!r} needs addresses: one or more email addresses"))
            ok = False
        for addr in addrs:
            if not is_address(addr):
                problems.append(Problem(value_where(spec, "addresses"),
                                        f"agent {name!r}: {_type_name(addr)} is not an email address like alice@example.com"))
                ok = False
            elif addr.strip().lower() in owner and owner[addr.strip().lower()] != name:
                problems.append(Problem(value_where(spec, "addresses"),
                                        f"address {addr.strip().lower()!r} already belongs to agent "
                                        f"{owner[addr.strip().lower()]!r}"))
                ok = False
            else:
                owner[addr.strip().lower()] = name
        team = spec.get("team")
        if team is not None and (not isinstance(team, str) or team not in team_names):
            problems.append(Problem(value_where(spec, "team"), f"unknown team {team!r}{nearest(str(team), team_names)}; "
                                                               f"known: {', '.join(sorted(team_names)) or 'none defined'}"))
            ok = False
        away = spec.get("away", False)
        if not isinstance(away, bool):
            problems.append(Problem(value_where(spec, "away"), f"away must be true or false, got {_type_name(away)}"))
            ok = False
        display = spec.get("name", name)
        if not isinstance(display, str) or not display.strip():
            problems.append(Problem(value_where(spec, "name"), f"name must be a display name text, got {_type_name(display)}"))
            ok = False
        if ok:
            agents[name] = Agent(name, display.strip(), tuple(dict.fromkeys(a.strip().lower() for a in addrs)), team, away)
    return agents


def _teams(node: dict, agents: dict[str, Agent], declared: set[str], problems: list[Problem]) -> dict[str, Team]:
    teams: dict[str, Team] = {}
    for name, spec in node.items():
        if not _NAME_RE.match(name):
            problems.append(Problem(where_of(node, name), _bad_name("team", name)))
            continue
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            problems.append(Problem(value_where(node, name), f"team {name!r} must be a mapping with members, "
                                                             f"got {_type_name(spec)}"))
            continue
        for key in spec:
            if key not in TEAM_KEYS:
                problems.append(Problem(where_of(spec, key), f"unknown team setting {key!r}{nearest(key, TEAM_KEYS)}; "
                                                             "expected one of: " + ", ".join(TEAM_KEYS)))
        members: list[str] = []
        raw = spec.get("members", [])
        if not isinstance(raw, list):
            problems.append(Problem(value_where(spec, "members"), f"members must be a list of agent names, "
                                                                  f"got {_type_name(raw)}"))
            raw = []
        for i, member in enumerate(raw):
            at = raw.item_where[i] if hasattr(raw, "item_where") else value_where(spec, "members")
            if not isinstance(member, str) or member not in agents:
                if isinstance(member, str) and member in declared:
                    continue  # the agent itself has a problem, reported there
                problems.append(Problem(at, f"unknown agent {member!r}{nearest(str(member), agents)}; "
                                            f"known: {', '.join(agents) or 'none defined'}"))
            elif member not in members:
                members.append(member)
        members += [a.name for a in agents.values() if a.team == name and a.name not in members]
        escalation = spec.get("escalation")
        if escalation is not None and not is_address(escalation):
            problems.append(Problem(value_where(spec, "escalation"), f"escalation must be an email address like "
                                                                     f"billing-leads@example.com, got {_type_name(escalation)}"))
        teams[name] = Team(name, tuple(members), escalation.strip().lower() if is_address(escalation) else None)
    return teams


def _rules(doc: dict, names: Names, problems: list[Problem]) -> list[Rule]:
    node = doc.get("rules")
    if node is None:
        return []
    if not isinstance(node, list):
        problems.append(Problem(value_where(doc, "rules"), f"rules must be a list of rules (each '- name: ...'), "
                                                           f"got {_type_name(node)}"))
        return []
    rules: list[Rule] = []
    seen: dict[str, Location] = {}
    parser = WhenParser(problems)
    for i, spec in enumerate(node):
        at = node.item_where[i] if hasattr(node, "item_where") else where_of(node)
        if not isinstance(spec, dict):
            problems.append(Problem(at, f"each rule must be a mapping with name, when and then, got {_type_name(spec)}"))
            continue
        before = len(problems)
        for key in spec:
            if key in ACTIONS:
                problems.append(Problem(where_of(spec, key), f"{key!r} is an action: put it under 'then'"))
            elif key not in RULE_KEYS:
                problems.append(Problem(where_of(spec, key), f"unknown rule key {key!r}{nearest(key, RULE_KEYS)}; "
                                                             "expected one of: " + ", ".join(RULE_KEYS)))
        name = spec.get("name")
        label = f"rule {i + 1}"
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(value_where(spec, "name") if "name" in spec else spec.where,
                                    f"{label} needs a name (a short text), got {_type_name(name)}"))
        else:
            name = name.strip()
            label = f"rule {name!r}"
            if name in seen:
                problems.append(Problem(value_where(spec, "name"),
                                        f"duplicate rule name {name!r} (first at line {seen[name].line})"))
            else:
                seen[name] = value_where(spec, "name")
        on = spec.get("on", "new")
        if on not in APPLIES_TO:
            problems.append(Problem(value_where(spec, "on"), f"on must be one of {', '.join(APPLIES_TO)}, got {_type_name(on)}"))
            on = "both"
        cont = spec.get("continue", False)
        if not isinstance(cont, bool):
            problems.append(Problem(value_where(spec, "continue"), f"continue must be true or false, got {_type_name(cont)}"))
        when = parser.parse(spec.get("when"), value_where(spec, "when") if "when" in spec else spec.where)
        if "then" not in spec:
            problems.append(Problem(spec.where, f"{label} has no 'then': say what it does (or 'then: {{stop: true}}')"))
            continue
        then = parse_then(spec["then"], value_where(spec, "then"), names, problems, on)
        if then is not None and then.stop and cont is True:
            problems.append(Problem(where_of(spec, "continue"), f"{label} says both continue: true and stop: true"))
        if len(problems) == before and then is not None:
            rules.append(Rule(name, when, then, cont is True, on, spec.where))
    return rules
