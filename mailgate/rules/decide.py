"""decide(): run the ordered rules over one mail and fold the matching rules' actions into a Decision.

First match wins: evaluation stops at the first matching rule unless it says `continue: true`; `stop: true`
always stops. When several matching rules set the same single-valued setting (team, agent, priority, SLA
policy, acknowledgement), the earliest rule's value is kept (the later one is noted as ignored); tags, cc and
forward accumulate; spam and reopen, once set, stay set.
"""

from __future__ import annotations

from .conditions import ConditionTrace, Facts, evaluate
from .model import DEFAULT_TEMPLATE, Actions, Decision, Rule, RuleContext, RuleHit, Ruleset, RuleTrace
from .state import RoutingState
from ..message import Mail


class _Fold:
    """The decision being built, rule by rule."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.by: dict[str, str] = {}  # field -> rule that set it
        self.tags: list[str] = []
        self.cc: list[str] = []
        self.forward: list[str] = []
        self.spam = False
        self.reopen = False

    def set(self, field: str, value: object, rule: str, text: str, did: list[str]) -> bool:
        if field in self.values:
            if self.values[field] != value:
                did.append(f"{text} ignored (already {self.values[field]!s} by rule {self.by[field]!r})")
            return False
        self.values[field] = value
        self.by[field] = rule
        did.append(text)
        return True


def _assign(actions: Actions, ruleset: Ruleset, state: RoutingState, fold: _Fold, rule: str, did: list[str]) -> None:
    if actions.team:
        fold.set("team", actions.team, rule, f"team {actions.team}", did)
    team_of_pick = actions.round_robin or actions.least_open
    if actions.agent:
        agent = ruleset.agents[actions.agent]
        team = fold.values.get("team") or agent.team
        if "agent" in fold.values:
            fold.set("agent", actions.agent, rule, f"agent {actions.agent}", did)
            return
        if team and team in ruleset.teams and actions.agent not in ruleset.teams[team].members:
            did.append(f"agent {actions.agent} ignored (not in team {team}, set by rule {fold.by.get('team', rule)!r})")
            return
        if team and "team" not in fold.values:
            fold.set("team", team, rule, f"team {team}", did)
        fold.set("agent", actions.agent, rule, f"agent {actions.agent}" + (" (marked away)" if agent.away else ""), did)
        return
    if not team_of_pick:
        return
    how = "round-robin" if actions.round_robin else "least open tickets"
    if "agent" in fold.values:
        did.append(f"{how} in {team_of_pick} ignored (agent already {fold.values['agent']} by rule {fold.by['agent']!r})")
        return
    if "team" in fold.values and fold.values["team"] != team_of_pick:
        did.append(f"{how} in {team_of_pick} ignored (team already {fold.values['team']} by rule {fold.by['team']!r})")
        return
    if "team" not in fold.values:
        fold.set("team", team_of_pick, rule, f"team {team_of_pick}", did)
    members = ruleset.team_members(team_of_pick)
    available = [a.name for a in members if not a.away]
    if not available:
        did.append(f"no agent picked: every member of {team_of_pick} is away" if members
                   else f"no agent picked: {team_of_pick} has no members")
        return
    if actions.round_robin:
        pick = state.next_in_rotation(team_of_pick, available)
        fold.set("agent", pick, rule, f"agent {pick} (round-robin in {team_of_pick})", did)
    else:
        counts = state.open_ticket_counts(available)
        pick = min(available, key=lambda name: (counts.get(name, 0), available.index(name)))
        fold.set("agent", pick, rule, f"agent {pick} (least open tickets in {team_of_pick}: {counts.get(pick, 0)})", did)


def _apply(rule: Rule, ruleset: Ruleset, state: RoutingState, fold: _Fold) -> str:
    a, name, did = rule.then, rule.name, []
    if a.spam and not fold.spam:
        fold.spam = True
        did.append("marked as spam (stored, no ticket, no acknowledgement)")
    _assign(a, ruleset, state, fold, name, did)
    if a.priority:
        fold.set("priority", a.priority, name, f"priority {a.priority}", did)
    if a.tags:
        new = [t for t in a.tags if t not in fold.tags]
        fold.tags += new
        did.append("tags " + " ".join("+" + t for t in a.tags))
    if a.sla:
        fold.set("sla_policy", a.sla, name, f"SLA policy {a.sla}", did)
    if a.ack is False:
        fold.set("ack_template", None, name, "no acknowledgement", did)
    elif isinstance(a.ack, str):
        fold.set("ack_template", a.ack, name, f"acknowledgement {a.ack}", did)
    for addr in a.cc:
        if addr not in fold.cc:
            fold.cc.append(addr)
        did.append(f"cc {addr}")
    for addr in a.forward:
        if addr not in fold.forward:
            fold.forward.append(addr)
        did.append(f"forward a copy to {addr}")
    if a.reopen:
        fold.reopen = True
        did.append("reopen the ticket")
    if a.stop:
        did.append("stop")
    return "; ".join(did)


def decide(ruleset: Ruleset, mail: Mail, ctx: RuleContext, state: RoutingState, *, explain: bool = True) -> Decision:
    """Evaluate `ruleset` for one mail: the Decision with hits (what matched, what it did) and a trace.

    With `explain=False` the trace keeps each rule's outcome but not its condition lines (about 4x faster).
    """
    facts = Facts(mail, ctx, ruleset.regex_timeout)
    fold = _Fold()
    hits: list[RuleHit] = []
    traces: list[RuleTrace] = []
    rules = ruleset.rules
    kind = "replies" if ctx.is_reply else "new tickets"
    stopped_by: str | None = None
    for rule in rules:
        if stopped_by is not None:
            traces.append(RuleTrace(rule.name, "not reached", note=f"evaluation stopped at rule {stopped_by!r}",
                                    where=rule.where))
            continue
        if not rule.applies_to(ctx.is_reply):
            traces.append(RuleTrace(rule.name, "skipped", note=f"on: {rule.on} (this mail is for {kind})",
                                    where=rule.where))
            continue
        lines: list[ConditionTrace] | None = [] if explain else None
        if not evaluate(rule.when, facts, lines):
            traces.append(RuleTrace(rule.name, "no match", tuple(lines or ()), where=rule.where))
            continue
        did = _apply(rule, ruleset, state, fold)
        hits.append(RuleHit(rule.name, did))
        go_on = rule.continue_ and not rule.then.stop
        traces.append(RuleTrace(rule.name, "matched", tuple(lines or ()), "continue" if go_on else "stop", rule.where))
        if not go_on:
            stopped_by = rule.name
    values = fold.values
    explicit = set(values)
    for name, present in (("tags", fold.tags), ("cc", fold.cc), ("forward_to", fold.forward),
                          ("spam", fold.spam), ("reopen", fold.reopen)):
        if present:
            explicit.add(name)
    if "ack_template" in values:
        ack = values["ack_template"]
    else:
        ack = None if ctx.is_reply else DEFAULT_TEMPLATE
    if fold.spam:
        ack = None
    return Decision(
        team=values.get("team"),  # type: ignore[arg-type]
        agent=values.get("agent"),  # type: ignore[arg-type]
        priority=values.get("priority", "normal"),  # type: ignore[arg-type]
        tags=tuple(fold.tags),
        sla_policy=values.get("sla_policy"),  # type: ignore[arg-type]
        ack_template=ack,  # type: ignore[arg-type]
        cc=tuple(fold.cc),
        forward_to=tuple(fold.forward),
        spam=fold.spam,
        reopen=fold.reopen,
        hits=tuple(hits),
        trace=tuple(traces),
        explicit=frozenset(explicit),
        warnings=tuple(facts.timeouts),
    )
