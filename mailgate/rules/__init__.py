"""Routing rules: rules.yaml -> Ruleset (load), and decide(ruleset, mail, ctx, state) -> Decision (with hits and trace).

    load.py        file -> Ruleset; check_ruleset / load_ruleset report every located problem
    when.py        `when` YAML -> conditions        conditions.py  condition types and their evaluation
    then.py        `then` YAML -> Actions           decide.py      ordered evaluation, actions folded into a Decision
    model.py       the typed shapes                 state.py       RoutingState (round-robin, open counts)
    values.py      sizes, hours, weekdays, zones    explain.py     format_trace, summary
"""

from .conditions import ConditionTrace
from .decide import decide
from .explain import format_trace, summary
from .load import check_ruleset, check_ruleset_text, load_ruleset
from .model import (PRIORITIES, Actions, Agent, Decision, Rule, RuleContext, RuleHit, Ruleset, RuleTrace, Team,
                    empty_ruleset)
from .state import InMemoryRoutingState, RoutingState, next_after

__all__ = [
    "PRIORITIES", "Actions", "Agent", "ConditionTrace", "Decision", "InMemoryRoutingState", "Rule", "RuleContext",
    "RuleHit", "RuleTrace", "RoutingState", "Ruleset", "Team", "check_ruleset", "check_ruleset_text", "decide",
    "empty_ruleset", "format_trace", "load_ruleset", "next_after", "summary",
]
