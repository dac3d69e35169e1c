"""Rule actions and evaluation order: first match wins, continue, stop, on: reply, round-robin, least-open, spam."""

from __future__ import annotations

from datetime import datetime, timezone
from email.message import EmailMessage

import pytest

from mailgate.message import Mail, parse
from mailgate.rules import (Decision, InMemoryRoutingState, RuleContext, Ruleset, check_ruleset_text, decide,
                            empty_ruleset, format_trace, next_after)

PEOPLE = """
teams:
  billing: {members: [alice, bob, bea], escalation: billing-leads@example.com}
  tech: {members: [carol, dave, erin]}
  empty: {}
agents:
  alice: {addresses: alice@example.com, team: billing}
  bob: {addresses: bob@example.com, team: billing}
  bea: {addresses: bea@example.com, team: billing, away: true}
  carol: {addresses: carol@example.com, team: tech}
  dave: {addresses: dave@example.com, team: tech, away: true}
  erin: {addresses: erin@example.com, team: tech}
sla_policies:
  standard: {ack_within: 15}
  vip: {ack_within: 5}
templates: [ack, ack_vip]
"""


def rules(text: str) -> Ruleset:
    ruleset, problems = check_ruleset_text(PEOPLE + "rules:\n" + text, "t.yaml")
    assert problems == [], [str(p) for p in problems]
    assert ruleset is not None
    return ruleset


def make_mail(subject: str = "Hello", sender: str = "jane@customer.example") -> Mail:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<a1@customer.example>"
    msg.set_content("Hi.")
    return parse(msg.as_bytes())


def ctx(is_reply: bool = False) -> RuleContext:
    return RuleContext(("support@example.com",), is_reply, True, datetime(2024, 6, 3, 10, tzinfo=timezone.utc))


def run(ruleset: Ruleset, mail: Mail | None = None, state: InMemoryRoutingState | None = None,
        is_reply: bool = False) -> Decision:
    return decide(ruleset, mail or make_mail(), ctx(is_reply), state or InMemoryRoutingState())


# -- defaults ----------------------------------------------------------------------------------------

def test_no_rules_gives_the_defaults() -> None:
    d = run(empty_ruleset())
    assert (d.team, d.agent, d.priority, d.tags, d.sla_policy, d.ack_template) == (None, None, "normal", (), None, "ack")
    assert (d.cc, d.forward_to, d.spam, d.reopen, d.hits, d.trace, d.explicit) == ((), (), False, False, (), (),
                                                                                  frozenset())
    assert run(empty_ruleset(), is_reply=True).ack_template is None  # follow-ups get no acknowledgement by default


# -- each action -------------------------------------------------------------------------------------

def test_team_priority_tags_sla_ack_cc_forward() -> None:
    d = run(rules("""
  - name: all of it
    then:
      team: billing
      priority: URGENT
      tags: [VIP, money, vip]
      sla: vip
      ack: ack_vip
      cc: Boss@Customer.example
      forward: [crm@example.com, audit@example.com]
"""))
    assert d.team == "billing" and d.agent is None
    assert d.priority == "urgent"
    assert d.tags == ("vip", "money")
    assert d.sla_policy == "vip" and d.ack_template == "ack_vip"
    assert d.cc == ("boss@customer.example",)
    assert d.forward_to == ("crm@example.com", "audit@example.com")
    assert d.explicit == {"team", "priority", "tags", "sla_policy", "ack_template", "cc", "forward_to"}
    assert d.hits[0].did == ("team billing; priority urgent; tags +vip +money; SLA policy vip; acknowledgement ack_vip; "
                             "cc boss@customer.example; forward a copy to crm@example.com; "
                             "forward a copy to audit@example.com")


def test_ack_false_and_ack_true() -> None:
    assert run(rules("  - name: quiet\n    then: {ack: false}\n")).ack_template is None
    assert run(rules("  - name: loud\n    then: {ack: true}\n")).ack_template == "ack"


def test_agent_sets_the_agents_team_and_is_assigned_even_when_away() -> None:
    d = run(rules("  - name: r\n    then: {agent: erin}\n"))
    assert (d.team, d.agent) == ("tech", "erin")
    d = run(rules("  - name: r\n    then: {agent: dave}\n"))
    assert (d.team, d.agent) == ("tech", "dave")
    assert d.hits[0].did == "team tech; agent dave (marked away)"


def test_spam_stores_without_ack() -> None:
    d = run(rules("  - name: junk\n    when: {subject: viagra}\n    then: {spam: true, tags: junk}\n"),
            make_mail(subject="cheap VIAGRA"))
    assert d.spam is True and d.ack_template is None and d.tags == ("junk",)
    assert d.hits[0].did == "marked as spam (stored, no ticket, no acknowledgement); tags +junk"


# -- order, continue, stop ---------------------------------------------------------------------------

ORDERED = """
  - name: urgent
    when: {subject: urgent}
    then: {priority: urgent, tags: urgent}
    continue: true
  - name: vip
    when: {from_domain: bigcorp.com}
    then: {priority: high, sla: vip, tags: [vip]}
    continue: true
  - name: billing
    when: {subject: invoice}
    then: {team: billing}
  - name: catch-all
    then: {team: tech, priority: low}
"""


def test_first_match_wins_without_continue() -> None:
    d = run(rules(ORDERED), make_mail(subject="invoice 7"))
    assert [h.rule for h in d.hits] == ["billing"]
    assert d.team == "billing" and d.priority == "normal"
    assert [(t.rule, t.outcome) for t in d.trace] == [
        ("urgent", "no match"), ("vip", "no match"), ("billing", "matched"), ("catch-all", "not reached")]
    assert d.trace[3].note == "evaluation stopped at rule 'billing'"


def test_continue_lets_later_rules_add_and_the_earliest_setting_is_kept() -> None:
    d = run(rules(ORDERED), make_mail(subject="URGENT invoice", sender="ap@bigcorp.com"))
    assert [h.rule for h in d.hits] == ["urgent", "vip", "billing"]
    assert d.priority == "urgent"  # 'urgent' came first; 'vip' does not lower it
    assert d.tags == ("urgent", "vip") and d.sla_policy == "vip" and d.team == "billing"
    assert d.hits[1].did == "priority high ignored (already urgent by rule 'urgent'); tags +vip; SLA policy vip"


def test_continue_falls_through_to_the_catch_all() -> None:
    d = run(rules(ORDERED), make_mail(subject="urgent: hello"))
    assert [h.rule for h in d.hits] == ["urgent", "catch-all"]
    assert d.team == "tech" and d.priority == "urgent"


def test_stop_ends_evaluation_and_nothing_more_happens() -> None:
    ruleset = rules("""
  - name: internal
    when: {from_domain: example.com}
    then: {stop: true}
""" + ORDERED)
    d = run(ruleset, make_mail(subject="urgent invoice", sender="me@example.com"))
    assert [h.rule for h in d.hits] == ["internal"]
    assert d.team is None and d.priority == "normal" and d.tags == ()
    assert [t.outcome for t in d.trace] == ["matched"] + ["not reached"] * 4


def test_stop_in_a_rule_that_continues_from_an_earlier_one() -> None:
    ruleset = rules("""
  - name: tag
    then: {tags: seen}
    continue: true
  - name: halt
    when: {subject: halt}
    then: {priority: low, stop: true}
  - name: never
    then: {team: tech}
""")
    d = run(ruleset, make_mail(subject="halt"))
    assert [h.rule for h in d.hits] == ["tag", "halt"] and d.team is None and d.tags == ("seen",)
    d = run(ruleset, make_mail(subject="go on"))
    assert [h.rule for h in d.hits] == ["tag", "never"] and d.team == "tech"


# -- new tickets and replies ------------------------------------------------------------------------

REPLIES = """
  - name: angry follow-up
    on: reply
    when: {subject: still broken}
    then: {reopen: true, priority: high, tags: reopened}
  - name: vip both
    on: both
    when: {from_domain: bigcorp.com}
    then: {tags: vip}
    continue: true
  - name: new only
    then: {team: tech}
"""


def test_reply_rules_act_on_replies_only() -> None:
    ruleset = rules(REPLIES)
    reply = run(ruleset, make_mail(subject="Re: still broken"), is_reply=True)
    assert [h.rule for h in reply.hits] == ["angry follow-up"]
    assert reply.reopen and reply.priority == "high" and reply.ack_template is None
    assert reply.explicit == {"reopen", "priority", "tags"}  # the pipeline changes only these on the ticket
    new = run(ruleset, make_mail(subject="still broken"))
    assert [h.rule for h in new.hits] == ["new only"] and not new.reopen
    assert new.trace[0].outcome == "skipped" and new.trace[0].note == "on: reply (this mail is for new tickets)"


def test_both_applies_to_new_and_replies_and_new_rules_skip_replies() -> None:
    ruleset = rules(REPLIES)
    reply = run(ruleset, make_mail(subject="Re: hi", sender="x@bigcorp.com"), is_reply=True)
    assert [h.rule for h in reply.hits] == ["vip both"] and reply.team is None
    assert [t.outcome for t in reply.trace] == ["no match", "matched", "skipped"]
    new = run(ruleset, make_mail(subject="hi", sender="x@bigcorp.com"))
    assert [h.rule for h in new.hits] == ["vip both", "new only"]


# -- round-robin --------------------------------------------------------------------------------------

RR = "  - name: rr\n    then: {round_robin: billing}\n"


def test_round_robin_is_fair_and_skips_away_agents() -> None:
    ruleset, state = rules(RR), InMemoryRoutingState()
    picks = [run(ruleset, state=state).agent for _ in range(6)]
    assert picks == ["alice", "bob", "alice", "bob", "alice", "bob"]  # bea is away
    assert all(run(ruleset, state=state).team == "billing" for _ in range(2))
    assert state.last_assigned == {"billing": "bob"}


def test_round_robin_resumes_from_the_persisted_last_agent_after_a_restart() -> None:
    ruleset = rules("  - name: rr\n    then: {round_robin: tech}\n")
    before = InMemoryRoutingState()
    first = [run(ruleset, state=before).agent for _ in range(3)]
    assert first == ["carol", "erin", "carol"]
    restarted = InMemoryRoutingState(last_assigned=before.last_assigned)  # what the store keeps
    assert [run(ruleset, state=restarted).agent for _ in range(3)] == ["erin", "carol", "erin"]


def test_rotation_continues_after_an_agent_who_went_away_or_left() -> None:
    assert next_after(None, ["bob", "alice"]) == "alice"
    assert next_after("alice", ["alice", "bob", "carol"]) == "bob"
    assert next_after("carol", ["alice", "bob", "carol"]) == "alice"
    assert next_after("bea", ["alice", "bob", "carol"]) == "bob"  # bea is away now: continue after her place
    assert next_after("zed", ["alice", "bob"]) == "alice"
    with pytest.raises(ValueError):
        next_after("alice", [])


def test_round_robin_with_everyone_away_sets_the_team_only() -> None:
    ruleset = rules("  - name: rr\n    then: {round_robin: empty}\n")
    d = run(ruleset)
    assert (d.team, d.agent) == ("empty", None)
    assert d.hits[0].did == "team empty; no agent picked: empty has no members"


# -- least open ---------------------------------------------------------------------------------------

LEAST = "  - name: lo\n    then: {least_open: tech}\n"


def test_least_open_picks_the_least_loaded_agent_who_is_not_away() -> None:
    ruleset = rules(LEAST)
    state = InMemoryRoutingState(open_counts={"carol": 5, "dave": 0, "erin": 3})
    d = run(ruleset, state=state)
    assert d.agent == "erin"  # dave has fewer but is away
    assert d.hits[0].did == "team tech; agent erin (least open tickets in tech: 3)"


def test_least_open_ties_go_to_the_agent_listed_first_and_load_evens_out() -> None:
    ruleset = rules(LEAST)
    state = InMemoryRoutingState()
    picks = []
    for _ in range(4):
        agent = run(ruleset, state=state).agent
        picks.append(agent)
        state.record_assignment(agent)
    assert picks == ["carol", "erin", "carol", "erin"]
    assert state.open_counts == {"carol": 2, "erin": 2}


def test_least_open_skips_an_away_agent_with_no_tickets() -> None:
    ruleset = rules("""
  - name: lo
    then: {least_open: billing}
""")
    state = InMemoryRoutingState(open_counts={"alice": 9, "bob": 9, "bea": 0})
    assert run(ruleset, state=state).agent == "alice"


# -- assignment across rules ------------------------------------------------------------------------

def test_later_agent_choice_must_fit_the_team_already_chosen() -> None:
    ruleset = rules("""
  - name: money
    then: {team: billing}
    continue: true
  - name: tech person
    then: {agent: carol}
    continue: true
  - name: rr
    then: {round_robin: billing}
""")
    state = InMemoryRoutingState()
    d = run(ruleset, state=state)
    assert (d.team, d.agent) == ("billing", "alice")
    assert d.hits[1].did == "agent carol ignored (not in team billing, set by rule 'money')"
    assert d.hits[2].did == "agent alice (round-robin in billing)"


def test_rotation_does_not_advance_when_an_agent_is_already_chosen() -> None:
    ruleset = rules("""
  - name: direct
    then: {agent: bob}
    continue: true
  - name: rr
    then: {round_robin: billing}
""")
    state = InMemoryRoutingState()
    d = run(ruleset, state=state)
    assert (d.team, d.agent) == ("billing", "bob")
    assert state.last_assigned == {}
    assert d.hits[1].did == "round-robin in billing ignored (agent already bob by rule 'direct')"


def test_format_trace_reads_well() -> None:
    d = run(rules(ORDERED), make_mail(subject="URGENT invoice", sender="ap@bigcorp.com"))
    text = format_trace(d)
    assert "  1. 'urgent' — matched  [t.yaml:" in text
    assert "       ✓ subject contains 'urgent' — subject is 'URGENT invoice'" in text
    assert "       => priority urgent; tags +urgent" in text
    assert "  rule 4 not reached: evaluation stopped at rule 'billing'" in text
    assert text.endswith("  matched          'urgent', 'vip', 'billing'")
    assert "  priority         urgent\n" in text and "  SLA policy       vip\n" in text


def test_explain_false_keeps_outcomes_but_not_condition_lines() -> None:
    d = decide(rules(ORDERED), make_mail(subject="invoice"), ctx(), InMemoryRoutingState(), explain=False)
    assert [t.outcome for t in d.trace] == ["no match", "no match", "matched", "not reached"]
    assert all(t.conditions == () for t in d.trace)
    assert d.team == "billing"
