"""The typed shapes of routing: teams, agents, rules and the Ruleset; the context, hits, trace and Decision of one run."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from ..errors import Location
from ..sla import SlaPolicy
from .conditions import Always, Condition, ConditionTrace

PRIORITIES = ("low", "normal", "high", "urgent")
APPLIES_TO = ("new", "reply", "both")
DEFAULT_TEMPLATE = "ack"


@dataclass(frozen=True)
class Team:
    """A team: its members (agent names, listed order first) and where SLA escalations go."""

    name: str
    members: tuple[str, ...] = ()
    escalation: str | None = None


@dataclass(frozen=True)
class Agent:
    """A person who answers tickets; `addresses` are lower-case; `away` agents get no automatic assignments."""

    name: str
    display_name: str
    addresses: tuple[str, ...]
    team: str | None = None
    away: bool = False


@dataclass(frozen=True)
class Actions:
    """What a matching rule does (`then`); None / empty means "not set by this rule"."""

    team: str | None = None
    agent: str | None = None
    round_robin: str | None = None  # team name
    least_open: str | None = None  # team name
    priority: str | None = None
    tags: tuple[str, ...] = ()
    sla: str | None = None
    ack: str | bool | None = None  # template name; False: send no acknowledgement; None: not set
    cc: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()
    spam: bool = False
    reopen: bool = False
    stop: bool = False


@dataclass(frozen=True)
class Rule:
    """One entry of `rules`: a name, conditions, actions, whether evaluation continues, and which mail it sees."""

    name: str
    when: Condition
    then: Actions
    continue_: bool = False
    on: str = "new"  # new | reply | both
    where: Location = field(default=Location("<unknown>"), compare=False)

    def applies_to(self, is_reply: bool) -> bool:
        return self.on == "both" or self.on == ("reply" if is_reply else "new")


def _frozen_map(value: Mapping) -> Mapping:
    return value if isinstance(value, types.MappingProxyType) else types.MappingProxyType(dict(value))


@dataclass(frozen=True)
class Ruleset:
    """A loaded rules.yaml: ordered rules plus the teams, agents, SLA policies and templates they name."""

    rules: tuple[Rule, ...] = ()
    teams: Mapping[str, Team] = field(default_factory=dict)
    agents: Mapping[str, Agent] = field(default_factory=dict)
    sla_policies: Mapping[str, SlaPolicy] = field(default_factory=dict)
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    source: str | None = None
    regex_timeout: float = 0.1  # seconds one `matches` may run on one value before it counts as no match

    def __post_init__(self) -> None:
        object.__setattr__(self, "teams", _frozen_map(self.teams))
        object.__setattr__(self, "agents", _frozen_map(self.agents))
        object.__setattr__(self, "sla_policies", _frozen_map(self.sla_policies))
        by_address = {addr.lower(): agent for agent in self.agents.values() for addr in agent.addresses}
        object.__setattr__(self, "_by_address", by_address)

    def agent_by_address(self, addr: str) -> Agent | None:
        """The agent who owns this address (case-insensitive), or None."""
        return self._by_address.get(addr.strip().strip("<>").lower()) if addr else None  # type: ignore[attr-defined]

    def is_agent(self, addr: str) -> bool:
        """Whether this address belongs to an agent."""
        return self.agent_by_address(addr) is not None

    def team_members(self, team: str) -> list[Agent]:
        """The agents of a team in its listed order (away agents included); [] for an unknown team."""
        t = self.teams.get(team)
        return [self.agents[name] for name in t.members if name in self.agents] if t else []

    def rule(self, name: str) -> Rule | None:
        """The rule of that name, or None."""
        return next((r for r in self.rules if r.name == name), None)


def empty_ruleset(source: str | None = None) -> Ruleset:
    """The ruleset used when there is no rules.yaml: no rules, no teams; every ticket gets the defaults."""
    return Ruleset(source=source)


@dataclass(frozen=True)
class RuleContext:
    """What the rules may know beyond the mail: envelope recipients, thread and customer facts, the time, auth verdict."""

    rcpt_to: tuple[str, ...]
    is_reply: bool
    customer_known: bool
    now: datetime
    auth: str = "none"  # pass | fail | none: the stored authentication verdict


@dataclass(frozen=True)
class RuleHit:
    """A rule that matched and, in words, what it did (recorded as a ticket event)."""

    rule: str
    did: str


@dataclass(frozen=True)
class RuleTrace:
    """One rule's evaluation: outcome matched | no match | skipped | not reached, and its condition lines."""

    rule: str
    outcome: str
    conditions: tuple[ConditionTrace, ...] = ()
    note: str = ""
    where: Location = field(default=Location("<unknown>"), compare=False)


@dataclass(frozen=True)
class Decision:
    """The outcome of the rules for one mail.

    `explicit` names the fields a rule set (the rest are defaults), so a follow-up only changes what a rule
    asked for. `ack_template` defaults to "ack" for new tickets and to None for replies and spam.
    """

    team: str | None = None
    agent: str | None = None
    priority: str = "normal"
    tags: tuple[str, ...] = ()
    sla_policy: str | None = None
    ack_template: str | None = DEFAULT_TEMPLATE
    cc: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    spam: bool = False
    reopen: bool = False
    hits: tuple[RuleHit, ...] = ()
    trace: tuple[RuleTrace, ...] = ()
    explicit: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()  # e.g. a regex that timed out: worth a log line


__all__ = ["Actions", "Agent", "Always", "APPLIES_TO", "Decision", "PRIORITIES", "Rule", "RuleContext", "RuleHit",
           "RuleTrace", "Ruleset", "Team", "empty_ruleset"]
