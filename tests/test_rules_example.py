"""The example rules.yaml routes realistic mail as its comments say, and docs/rules.md documents every keyword."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailgate.message import parse
from mailgate.rules import InMemoryRoutingState, RuleContext, Ruleset, decide, load_ruleset
from mailgate.rules.load import AGENT_KEYS, RULE_KEYS, TEAM_KEYS, TOP_KEYS
from mailgate.rules.conditions import OPERATORS
from mailgate.rules.then import ACTIONS
from mailgate.rules.when import CONDITIONS

ROOT = Path(__file__).resolve().parent.parent
TUESDAY_NOON_BERLIN = datetime(2024, 6, 4, 10, 0, tzinfo=timezone.utc)
SUNDAY_BERLIN = datetime(2024, 6, 2, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def example() -> Ruleset:
    return load_ruleset(ROOT / "rules.yaml")


def mail(subject: str, sender: str = "jane@customer.example", extra: str = "", body: str = "Hello.") -> bytes:
    return (f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <x@customer.example>\r\n{extra}\r\n{body}\r\n").encode()


def run(ruleset: Ruleset, raw: bytes, now: datetime = TUESDAY_NOON_BERLIN, is_reply: bool = False,
        auth: str = "pass", known: bool = True, state: InMemoryRoutingState | None = None):
    ctx = RuleContext(("support@example.com",), is_reply, known, now, auth)
    return decide(ruleset, parse(raw), ctx, state or InMemoryRoutingState())


def test_spam_flag(example: Ruleset) -> None:
    d = run(example, mail("WIN NOW", extra="X-Spam-Flag: YES\r\n"))
    assert d.spam and d.ack_template is None and [h.rule for h in d.hits] == ["obvious spam"]


def test_forged_own_domain_is_spam_but_authentic_is_not(example: Ruleset) -> None:
    assert run(example, mail("hi", sender="ceo@example.com"), auth="fail").spam
    assert not run(example, mail("hi", sender="ceo@example.com"), auth="pass").spam


def test_urgent_vip_invoice(example: Ruleset) -> None:
    d = run(example, mail("URGENT: invoice 1234 is wrong", sender="ap@bigcorp.com"))
    assert [h.rule for h in d.hits] == ["urgent words", "VIP customers", "invoices and refunds"]
    assert (d.team, d.agent, d.priority, d.sla_policy, d.ack_template) == ("billing", "alice", "urgent", "vip", "ack_vip")
    assert d.tags == ("urgent", "vip") and d.cc == ("tech-oncall@example.com",)


def test_sales_enquiry_goes_to_frank_and_the_crm(example: Ruleset) -> None:
    d = run(example, mail("Quote for 50 seats"))
    assert (d.team, d.agent, d.sla_policy, d.forward_to) == ("sales", "frank", "low_touch", ("crm-inbox@example.com",))


def test_after_hours_acknowledgement_then_catch_all(example: Ruleset) -> None:
    state = InMemoryRoutingState()
    d = run(example, mail("Login problem"), now=SUNDAY_BERLIN, state=state)
    assert [h.rule for h in d.hits] == ["after hours", "everything else"]
    assert (d.team, d.agent, d.ack_template, d.tags, d.sla_policy) == ("tech", "carol", "ack_after_hours",
                                                                      ("after-hours",), "standard")
    again = run(example, mail("Login problem"), now=SUNDAY_BERLIN, state=state)
    assert again.agent == "erin"  # dave is away


def test_follow_up_reopens(example: Ruleset) -> None:
    d = run(example, mail("Re: Login problem", body="It is still not working."), is_reply=True)
    assert [h.rule for h in d.hits] == ["customer replied to a solved ticket"]
    assert d.reopen and d.priority == "high" and d.ack_template is None and d.team is None


@pytest.mark.parametrize("word", sorted({*TOP_KEYS, *TEAM_KEYS, *AGENT_KEYS, *RULE_KEYS, *CONDITIONS, *OPERATORS,
                                         *ACTIONS, "case", "exists", "weekdays", "hours", "tz", "gt", "lt"}))
def test_docs_describe_every_keyword(word: str) -> None:
    docs = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert f"`{word}`" in docs
