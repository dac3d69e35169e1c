"""rules.yaml loading: the example passes; broken files report every problem at its exact file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.errors import RulesError
from mailgate.rules import (Agent, Team, check_ruleset, check_ruleset_text, empty_ruleset, load_ruleset, summary)

HERE = Path(__file__).parent
FILES = HERE / "rules_files"
ROOT = HERE.parent

OPS = "equals, contains, startswith, endswith, matches, in"
ACTIONS = "team, agent, round_robin, least_open, priority, tags, sla, ack, cc, forward, spam, reopen, stop"

BROKEN = {
    "syntax_error.yaml": [
        "4:7: YAML syntax: expected ',' or ']', but got ':' (while parsing a flow sequence)",
    ],
    "unknown_top_key.yaml": [
        "5:1: unknown key 'rule' (did you mean 'rules'?); expected one of: teams, agents, sla_policies, templates, rules",
    ],
    "unknown_condition.yaml": [
        "8:7: unknown condition 'subjet' (did you mean 'subject'?); expected one of: from, from_domain, to, cc, "
        "attachment_type, subject, body, attachment_name, header, has_attachment, is_reply, size, customer, auth, "
        "time, all, any, not",
    ],
    "bad_regex.yaml": [
        "9:18: bad regular expression 'invoice (#\\d+': missing ) at position 13",
    ],
    "unknown_team.yaml": [
        "9:20: unknown team 'biling' (did you mean 'billing'?); known: billing",
    ],
    "unknown_agent.yaml": [
        "3:22: unknown agent 'bobb' (did you mean 'bob'?); known: alice, bob",
        "10:19: unknown agent 'alise' (did you mean 'alice'?); known: alice, bob",
    ],
    "unknown_template.yaml": [
        "6:12: unknown template 'ack_vpi' (did you mean 'ack_vip'?); known: ack, ack_vip (or false for no acknowledgement)",
    ],
    "unknown_policy.yaml": [
        "8:12: unknown SLA policy 'gold'; known: standard, vip",
    ],
    "duplicate_rule.yaml": [
        "8:11: duplicate rule name 'urgent' (first at line 2)",
    ],
    "wrong_types.yaml": [
        "6:11: away must be true or false, got 'sometimes'",
        "10:23: has_attachment must be true or false, got 'yes'",
        "12:17: priority must be one of low, normal, high, urgent, got 5",
        "13:13: tags must be a tag or a list of tags without spaces, got a mapping",
    ],
    "bad_time_zone.yaml": [
        "8:15: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?); expected an IANA name like 'Europe/Berlin'",
    ],
    "bad_time_values.yaml": [
        "4:24: unknown weekday 'funday'; weekdays must be day names like [mon, tue] or a range like 'mon-fri'",
        "4:46: hours must look like '09:00-17:00' (24-hour clock; the end may be 24:00; '22:00-06:00' spans midnight), "
        "got '9-5'",
    ],
    "unknown_operator.yaml": [
        f"4:34: unknown operator 'eqauls' (did you mean 'equals'?); expected one of: {OPS}",
    ],
    "bad_size.yaml": [
        "4:18: size gt must be a size in bytes or with a unit, e.g. 500000, '200KB' or '5MB' (1 KB = 1024 bytes), "
        "got '5 megabytes'",
    ],
    "unknown_action.yaml": [
        f"5:7: unknown action 'tag' (did you mean 'tags'?); expected one of: {ACTIONS}",
    ],
    "missing_then.yaml": [
        "2:5: rule 'big' has no 'then': say what it does (or 'then: {stop: true}')",
        "6:12: reopen only acts on replies: add 'on: reply' (or 'on: both') to this rule",
    ],
    "many_problems.yaml": [
        "3:31: unknown team setting 'escalaton' (did you mean 'escalation'?); expected one of: members, escalation",
        "6:20: address 'alice@example.com' already belongs to agent 'alice'",
        "6:47: unknown team 'sales'; known: billing",
        f"9:21: subject needs exactly one operator ({OPS}); combine several with all/any",
        "15:5: 'stop' is an action: put it under 'then'",
        "17:9: on must be one of new, reply, both, got 'sometimes'",
        "18:22: customer must be one of known, new (or a list of them), got 'vip'",
        "19:26: round_robin cannot be combined with agent: choose one way to pick the agent",
    ],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_names_every_problem_with_file_line_column(name: str) -> None:
    path = FILES / name
    ruleset, problems = check_ruleset(path)
    assert ruleset is None
    assert [str(p) for p in problems] == [f"{path}:{line}" for line in BROKEN[name]]


def test_load_ruleset_raises_rules_error_with_all_problems() -> None:
    path = FILES / "many_problems.yaml"
    with pytest.raises(RulesError) as info:
        load_ruleset(path)
    assert len(info.value.problems) == len(BROKEN["many_problems.yaml"])
    assert str(info.value).splitlines()[0] == f"{path}:{BROKEN['many_problems.yaml'][0]}"


def test_every_broken_file_is_covered() -> None:
    assert len(BROKEN) >= 10
    assert sorted(p.name for p in FILES.glob("*.yaml")) == sorted(BROKEN)


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    ruleset, problems = check_ruleset(tmp_path / "nope.yaml")
    assert ruleset is None
    assert len(problems) == 1 and str(problems[0]).startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


def test_example_rules_file_passes_and_summarises() -> None:
    ruleset = load_ruleset(ROOT / "rules.yaml")
    assert summary(ruleset) == "11 rules, 3 teams, 6 agents, 3 SLA policies (1 away)"
    assert set(ruleset.teams) == {"billing", "tech", "sales"}
    assert ruleset.agents["dave"].away is True
    assert set(ruleset.sla_policies) == {"standard", "vip", "low_touch"}
    assert ruleset.templates == ("ack", "ack_vip", "ack_after_hours")
    assert ruleset.source == str(ROOT / "rules.yaml")
    assert ruleset.rule("customer replied to a solved ticket").on == "reply"


def test_teams_agents_and_lookups() -> None:
    ruleset, problems = check_ruleset_text(
        "teams:\n"
        "  billing: {members: [bob, alice], escalation: Leads@Example.com}\n"
        "  tech: {members: [alice]}\n"
        "agents:\n"
        "  alice: {addresses: [Alice@Example.com, a@example.com], team: billing, name: Alice Martin}\n"
        "  bob: {addresses: bob@example.com}\n"
        "  carol: {addresses: carol@example.com, team: tech, away: true}\n"
    )
    assert problems == []
    assert ruleset is not None
    # listed members first, then agents whose home team it is
    assert ruleset.teams["billing"] == Team("billing", ("bob", "alice"), "leads@example.com")
    assert ruleset.teams["tech"].members == ("alice", "carol")
    assert [a.name for a in ruleset.team_members("tech")] == ["alice", "carol"]
    assert ruleset.team_members("nosuch") == []
    assert ruleset.agents["alice"] == Agent("alice", "Alice Martin", ("alice@example.com", "a@example.com"), "billing")
    assert ruleset.agents["bob"].display_name == "bob" and ruleset.agents["bob"].team is None
    assert ruleset.agent_by_address("<ALICE@example.com>") == ruleset.agents["alice"]
    assert ruleset.is_agent("carol@example.com") and not ruleset.is_agent("mallory@example.com")
    assert ruleset.agent_by_address("") is None


def test_bare_on_key_is_read_as_on_not_as_yaml_true() -> None:
    text = "rules:\n  - name: r\n    on: reply\n    when: {subject: x}\n    then: {reopen: true}\n"
    ruleset, problems = check_ruleset_text(text, "r.yaml")
    assert problems == []
    assert ruleset is not None and ruleset.rules[0].on == "reply"
    # a key that really is `yes:` stays an unknown key
    _, problems = check_ruleset_text("rules:\n  - name: r\n    yes: reply\n    then: {stop: true}\n", "r.yaml")
    assert [str(p) for p in problems] == [
        "r.yaml:3:5: unknown rule key 'yes'; expected one of: name, when, then, continue, on, description"]


def test_empty_file_and_empty_ruleset() -> None:
    ruleset, problems = check_ruleset_text("", "empty.yaml")
    assert problems == [] and ruleset is not None and ruleset.rules == ()
    empty = empty_ruleset()
    assert summary(empty) == "0 rules, 0 teams, 0 agents, 0 SLA policies"
    assert empty.templates == ("ack",)


@pytest.mark.parametrize("text, expected", [
    ("- just a list\n", "t.yaml:1:1: a rules file must be a mapping with keys teams, agents, sla_policies, templates, rules"),
    ("rules: {a: 1}\n", "t.yaml:1:8: rules must be a list of rules (each '- name: ...'), got a mapping"),
    ("rules:\n  - then: {stop: true}\n", "t.yaml:2:5: rule 1 needs a name (a short text), got nothing"),
    ("rules:\n  - name: r\n    when: {}\n    then: {stop: true}\n", "t.yaml:3:11: when is empty: give at least one condition"),
    ("rules:\n  - name: r\n    when: {not: {subject: a, body: b}}\n    then: {stop: true}\n",
     "t.yaml:3:17: not takes exactly one condition, e.g. 'not: {from_domain: example.com}'; negate several with "
     "'not: {any: [...]}' or 'not: {all: [...]}'"),
    ("rules:\n  - name: r\n    when: {size: {gt: 5MB, lt: 1MB}}\n    then: {stop: true}\n",
     "t.yaml:3:18: size range is empty: gt must be smaller than lt"),
    ("rules:\n  - name: r\n    when: {subject: {in: []}}\n    then: {stop: true}\n",
     "t.yaml:3:26: subject in needs a non-empty list of texts, got a list"),
    ("rules:\n  - name: r\n    when: {auth: maybe}\n    then: {stop: true}\n",
     "t.yaml:3:18: auth must be one of pass, fail, none (or a list of them), got 'maybe'"),
    ("rules:\n  - name: r\n    then: {forward: not-an-address}\n",
     "t.yaml:3:21: forward must be an email address (or a list of them) like 'boss@example.com', got 'not-an-address'"),
    ("rules:\n  - name: r\n    then: {spam: true, team: x}\n", "t.yaml:3:30: unknown team 'x'; known: none defined"),
    ("teams: {t: {}}\nrules:\n  - name: r\n    then: {spam: true, team: t}\n",
     "t.yaml:4:24: team cannot be combined with spam: true (spam is stored without a ticket)"),
    ("teams: {a: {}, b: {}}\nrules:\n  - name: r\n    then: {team: a, least_open: b}\n",
     "t.yaml:4:33: least_open picks from team 'b' but this rule sets team 'a'; drop 'team' (round_robin/least_open set it)"),
    ("teams: {a: {}}\nagents: {x: {addresses: x@example.com}}\nrules:\n  - name: r\n    then: {team: a, agent: x}\n",
     "t.yaml:5:28: agent 'x' is not a member of team 'a'"),
    ("rules:\n  - name: r\n    continue: true\n    then: {stop: true}\n",
     "t.yaml:3:5: rule 'r' says both continue: true and stop: true"),
    ("rules:\n  - name: r\n    when: {header: {name: X-A, equals: a, case: loud}}\n    then: {stop: true}\n",
     "t.yaml:3:49: case must be sensitive or insensitive, got 'loud'"),
    ("agents: {'a b': {addresses: a@example.com}}\n",
     "t.yaml:1:10: agent name 'a b' must be letters, digits, '_', '.' or '-' (no spaces)"),
    ("agents: {a: {addresses: a@example.com, emails: x}}\n",
     "t.yaml:1:40: unknown agent setting 'emails'; expected one of: addresses, team, away, name"),
    ("templates: ack\n", "t.yaml:1:12: templates must be a list of template names like [ack, ack_vip], got 'ack'"),
])
def test_more_located_mistakes(text: str, expected: str) -> None:
    ruleset, problems = check_ruleset_text(text, "t.yaml")
    assert ruleset is None
    assert [str(p) for p in problems] == [expected]


def test_sla_policy_problems_come_from_the_sla_parser_with_their_location() -> None:
    ruleset, problems = check_ruleset_text("sla_policies: {std: {ack_within: -5}}\nrules: []\n", "t.yaml")
    assert ruleset is None
    assert len(problems) == 1
    assert str(problems[0]).startswith("t.yaml:1:34: ack_within must be a positive number of minutes")


def test_summary_uses_singulars() -> None:
    ruleset, problems = check_ruleset_text(
        "teams: {t: {members: [a]}}\nagents: {a: {addresses: a@example.com, away: true}}\n"
        "sla_policies: {std: {ack_within: 10}}\nrules:\n  - name: r\n    then: {team: t}\n")
    assert problems == [] and ruleset is not None
    assert summary(ruleset) == "1 rule, 1 team, 1 agent, 1 SLA policy (1 away)"
