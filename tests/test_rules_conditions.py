"""Rule conditions: every field, operator and combinator, case handling, bare values, and the regex time guard."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from email.message import EmailMessage

import pytest
import yaml

from mailgate.message import Mail, parse
from mailgate.rules import InMemoryRoutingState, RuleContext, Ruleset, check_ruleset_text, decide
from mailgate.rules.values import parse_hours, parse_size, parse_weekdays

MONDAY_10_UTC = datetime(2024, 6, 3, 10, 0, tzinfo=timezone.utc)


def make_mail(subject: str = "Hello", sender: str = "Jane Doe <jane@customer.example>",
              to: str = "support@example.com", cc: str | None = None, body: str = "Hi there.",
              headers: tuple[tuple[str, str], ...] = (), attachments: tuple[tuple[str, str, bytes], ...] = (),
              inline: tuple[tuple[str, str, bytes], ...] = ()) -> Mail:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = "<t1@customer.example>"
    for name, value in headers:
        msg[name] = value
    msg.set_content(body)
    for filename, ctype, data in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=filename)
    for filename, ctype, data in inline:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=filename, disposition="inline")
    return parse(msg.as_bytes())


def ctx(**kw: object) -> RuleContext:
    base = dict(rcpt_to=("support@example.com",), is_reply=False, customer_known=False, now=MONDAY_10_UTC, auth="none")
    base.update(kw)
    return RuleContext(**base)  # type: ignore[arg-type]


def one_rule(when: object, on: str = "both") -> Ruleset:
    text = yaml.safe_dump({"rules": [{"name": "r", "on": on, "when": when, "then": {"tags": ["hit"]}}]})
    ruleset, problems = check_ruleset_text(text, "t.yaml")
    assert problems == [], problems
    assert ruleset is not None
    return ruleset


def holds(when: object, mail: Mail | None = None, **context: object) -> bool:
    decision = decide(one_rule(when), mail or make_mail(), ctx(**context), InMemoryRoutingState())
    return [h.rule for h in decision.hits] == ["r"]


# -- fields ------------------------------------------------------------------------------------------

def test_from_bare_value_is_equals_on_the_address_case_insensitive() -> None:
    assert holds({"from": "JANE@customer.example"})
    assert not holds({"from": "jane@customer"})  # equals, not contains
    assert not holds({"from": "Jane Doe"})  # the display name is not the address


def test_from_domain_bare_equals_and_list_means_in() -> None:
    assert holds({"from_domain": "customer.example"})
    assert not holds({"from_domain": "example"})
    assert not holds({"from_domain": "customer.example"}, make_mail(sender="x@mail.customer.example"))
    assert holds({"from_domain": ["other.example", "Customer.Example"]})
    assert holds({"from_domain": {"endswith": ".customer.example"}}, make_mail(sender="x@mail.customer.example"))


def test_to_covers_to_cc_and_envelope_recipients() -> None:
    assert holds({"to": "support@example.com"})
    assert holds({"to": "billing@example.com"}, make_mail(cc="billing@example.com"))
    assert holds({"to": "hidden@example.com"}, rcpt_to=("support@example.com", "<Hidden@Example.com>"))
    assert not holds({"to": "billing@example.com"})


def test_cc_only_looks_at_cc() -> None:
    mail = make_mail(to="billing@example.com", cc="Boss <boss@customer.example>")
    assert holds({"cc": "boss@customer.example"}, mail)
    assert not holds({"cc": "billing@example.com"}, mail)
    assert not holds({"cc": {"contains": "@"}})  # no Cc at all


def test_subject_bare_value_is_contains_case_insensitive_unless_sensitive() -> None:
    mail = make_mail(subject="Invoice #123 overdue")
    assert holds({"subject": "invoice"}, mail)
    assert not holds({"subject": {"contains": "invoice", "case": "sensitive"}}, mail)
    assert holds({"subject": {"contains": "Invoice", "case": "sensitive"}}, mail)
    assert holds({"subject": {"contains": "INVOICE", "case": "insensitive"}}, mail)


def test_body_contains() -> None:
    mail = make_mail(body="Our server is down since 9am.\nPlease help.")
    assert holds({"body": "server is DOWN"}, mail)
    assert not holds({"body": "up and running"}, mail)


def test_header_operators_presence_and_repeated_headers() -> None:
    mail = make_mail(headers=(("X-Priority", "1 (Highest)"), ("X-Tag", "alpha"), ("X-Tag", "beta")))
    assert holds({"header": {"name": "x-priority", "startswith": "1"}}, mail)
    assert holds({"header": {"name": "X-Priority", "contains": "highest"}}, mail)  # bare-contains, folded
    assert holds({"header": {"name": "X-Priority"}}, mail)  # name only: the header exists
    assert holds({"header": {"name": "X-Missing", "exists": False}}, mail)
    assert not holds({"header": {"name": "X-Priority", "exists": False}}, mail)
    assert holds({"header": {"name": "X-Tag", "equals": "beta"}}, mail)  # any occurrence
    assert not holds({"header": {"name": "X-Missing", "contains": "a"}}, mail)


def test_header_numeric_values_compare_as_text() -> None:
    assert holds({"header": {"name": "X-Priority", "equals": 1}}, make_mail(headers=(("X-Priority", "1"),)))


def test_attachment_conditions_and_inline_parts() -> None:
    pdf = make_mail(attachments=(("Invoice-42.PDF", "application/pdf", b"%PDF-1.4 ..."),))
    logo = make_mail(inline=(("logo.png", "image/png", b"\x89PNG...."),))
    assert holds({"has_attachment": True}, pdf)
    assert not holds({"has_attachment": True})
    assert holds({"has_attachment": False})
    assert not holds({"has_attachment": True}, logo)  # inline parts do not count as attachments
    assert holds({"attachment_name": {"endswith": ".pdf"}}, pdf)
    assert holds({"attachment_name": "invoice"}, pdf)  # bare: contains
    assert holds({"attachment_name": "logo"}, logo)  # names and types see inline parts too
    assert holds({"attachment_type": "application/pdf"}, pdf)
    assert holds({"attachment_type": ["image/png", "image/jpeg"]}, logo)
    assert not holds({"attachment_type": "application/pdf"})


def test_size_bounds_with_units() -> None:
    mail = make_mail(attachments=(("big.bin", "application/octet-stream", b"x" * 300_000),))
    assert mail.size > 300_000
    assert holds({"size": {"gt": "200KB"}}, mail)
    assert not holds({"size": {"gt": "1MB"}}, mail)
    assert holds({"size": {"gt": 1000, "lt": "1MB"}}, mail)
    assert not holds({"size": {"lt": "1KB"}}, mail)


def test_size_units() -> None:
    assert parse_size("5MB") == 5 * 1024 * 1024
    assert parse_size("200 kb") == 200 * 1024
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    assert parse_size(700) == 700
    assert parse_size("5 megabytes") is None and parse_size(True) is None and parse_size(-1) is None


def test_is_reply_customer_and_auth() -> None:
    assert holds({"is_reply": True}, is_reply=True)
    assert not holds({"is_reply": True}, is_reply=False)
    assert holds({"customer": "known"}, customer_known=True)
    assert holds({"customer": "new"}, customer_known=False)
    assert not holds({"customer": "new"}, customer_known=True)
    assert holds({"auth": "fail"}, auth="fail")
    assert not holds({"auth": "pass"}, auth="fail")
    assert holds({"auth": ["fail", "none"]}, auth="none")


def test_time_weekdays_hours_and_zone() -> None:
    berlin_office = {"time": {"weekdays": "mon-fri", "hours": "09:00-17:00", "tz": "Europe/Berlin"}}
    assert holds(berlin_office, now=datetime(2024, 6, 3, 10, 0, tzinfo=timezone.utc))  # Mon 12:00 in Berlin
    assert not holds(berlin_office, now=datetime(2024, 6, 3, 15, 30, tzinfo=timezone.utc))  # 17:30 in Berlin
    assert holds(berlin_office, now=datetime(2024, 6, 3, 14, 59, tzinfo=timezone.utc))  # 16:59
    assert not holds(berlin_office, now=datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc))  # Saturday
    weekend = {"time": {"weekdays": ["sat", "Sunday"]}}
    assert holds(weekend, now=datetime(2024, 6, 2, 23, 0, tzinfo=timezone.utc))
    night = {"time": {"hours": "22:00-06:00"}}  # UTC, spans midnight
    assert holds(night, now=datetime(2024, 6, 3, 23, 0, tzinfo=timezone.utc))
    assert holds(night, now=datetime(2024, 6, 3, 5, 59, tzinfo=timezone.utc))
    assert not holds(night, now=datetime(2024, 6, 3, 6, 0, tzinfo=timezone.utc))
    assert holds(night, now=datetime(2024, 6, 3, 23, 0))  # naive times are read as UTC


def test_clock_and_weekday_parsing() -> None:
    assert parse_hours("09:00-17:30") == (540, 1050)
    assert parse_hours("00:00-24:00") == (0, 1440)
    assert parse_hours("9-5") is None and parse_hours("10:00-10:00") is None and parse_hours("25:00-26:00") is None
    assert parse_weekdays("mon-fri") == frozenset(range(5))
    assert parse_weekdays("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_weekdays(["sat", "sun"]) == frozenset({5, 6})
    assert parse_weekdays(["funday"]) is None


# -- operators ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, value, expected", [
    ("equals", "refund request", True),
    ("equals", "refund", False),
    ("contains", "UND REQ", True),
    ("contains", "invoice", False),
    ("startswith", "refund", True),
    ("startswith", "request", False),
    ("endswith", "REQUEST", True),
    ("endswith", "refund", False),
    ("matches", r"^ref\w+ req", True),
    ("matches", r"^request", False),
    ("in", ["refund request", "other"], True),
    ("in", ["refund", "request"], False),
])
def test_every_operator(op: str, value: object, expected: bool) -> None:
    assert holds({"subject": {op: value}}, make_mail(subject="Refund Request")) is expected


def test_matches_is_a_search_and_case_sensitive_on_request() -> None:
    mail = make_mail(subject="Order ABC-123 missing")
    assert holds({"subject": {"matches": r"[a-z]{3}-\d+"}}, mail)
    assert not holds({"subject": {"matches": r"[a-z]{3}-\d+", "case": "sensitive"}}, mail)
    assert holds({"subject": {"matches": r"[A-Z]{3}-\d+", "case": "sensitive"}}, mail)


def test_in_is_case_insensitive_and_sensitive_on_request() -> None:
    mail = make_mail(subject="URGENT")
    assert holds({"subject": {"in": ["urgent", "asap"]}}, mail)
    assert not holds({"subject": {"in": ["urgent"], "case": "sensitive"}}, mail)


# -- combinators -------------------------------------------------------------------------------------

def test_all_any_not_nest() -> None:
    mail = make_mail(subject="Invoice overdue", sender="ap@bigcorp.com")
    assert holds({"all": [{"subject": "invoice"}, {"from_domain": "bigcorp.com"}]}, mail)
    assert not holds({"all": [{"subject": "invoice"}, {"from_domain": "other.com"}]}, mail)
    assert holds({"any": [{"subject": "refund"}, {"from_domain": "bigcorp.com"}]}, mail)
    assert not holds({"any": [{"subject": "refund"}, {"from_domain": "other.com"}]}, mail)
    assert holds({"not": {"subject": "refund"}}, mail)
    assert not holds({"not": {"subject": "invoice"}}, mail)
    nested = {"any": [
        {"all": [{"subject": "refund"}, {"has_attachment": True}]},
        {"not": {"any": [{"from_domain": "other.com"}, {"subject": {"matches": "^re:"}}]}},
    ]}
    assert holds(nested, mail)
    assert not holds(nested, make_mail(subject="Re: Invoice", sender="ap@bigcorp.com"))


def test_mapping_with_several_keys_means_all_and_any_may_be_a_mapping() -> None:
    mail = make_mail(subject="Invoice", sender="ap@bigcorp.com")
    assert holds({"subject": "invoice", "from_domain": "bigcorp.com"}, mail)
    assert not holds({"subject": "invoice", "from_domain": "other.com"}, mail)
    assert holds({"any": {"subject": "refund", "from_domain": "bigcorp.com"}}, mail)


def test_when_as_a_list_means_all_and_no_when_always_matches() -> None:
    mail = make_mail(subject="Invoice", sender="ap@bigcorp.com")
    assert holds([{"subject": "invoice"}, {"from_domain": "bigcorp.com"}], mail)
    assert not holds([{"subject": "invoice"}, {"from_domain": "nope.com"}], mail)
    ruleset, problems = check_ruleset_text("rules:\n  - name: r\n    then: {tags: hit}\n")
    assert ruleset is not None and problems == []
    assert decide(ruleset, make_mail(), ctx(), InMemoryRoutingState()).tags == ("hit",)


def test_trace_says_which_conditions_held_failed_or_were_not_checked() -> None:
    ruleset = one_rule({"all": [{"subject": "refund"}, {"from_domain": "bigcorp.com"}]})
    decision = decide(ruleset, make_mail(subject="Hello"), ctx(), InMemoryRoutingState())
    (trace,) = decision.trace
    assert trace.outcome == "no match"
    lines = [(c.depth, c.text, c.held, c.why) for c in trace.conditions]
    assert lines == [
        (0, "all of", False, "item 1 of 2 failed"),
        (1, "subject contains 'refund'", False, "subject is 'Hello'"),
        (1, "from_domain equals 'bigcorp.com'", None, "not checked (already decided)"),
    ]


# -- the regex time guard ----------------------------------------------------------------------------

def test_catastrophic_regex_is_stopped_in_time_and_reported() -> None:
    ruleset = replace(one_rule({"body": {"matches": "(a|aa)+$"}}), regex_timeout=0.05)
    mail = make_mail(body="a" * 5000 + "!")
    started = time.monotonic()
    decision = decide(ruleset, mail, ctx(), InMemoryRoutingState())
    elapsed = time.monotonic() - started
    assert elapsed < 2.0  # without the guard this pattern runs for hours on 5000 characters
    assert decision.hits == ()
    (line,) = decision.trace[0].conditions
    assert line.held is False and line.timed_out
    assert "ran longer than 0.05s and was stopped" in line.why and "counted as not matched" in line.why
    assert decision.warnings == ("regex '(a|aa)+$' on body timed out after 0.05s; counted as not matched",)


def test_regex_guard_does_not_block_later_rules() -> None:
    text = yaml.safe_dump({"rules": [
        {"name": "slow", "when": {"body": {"matches": "(a|aa)+$"}}, "then": {"tags": ["slow"]}},
        {"name": "next", "when": {"body": "aaa"}, "then": {"tags": ["next"]}},
    ]})
    ruleset, _ = check_ruleset_text(text)
    assert ruleset is not None
    decision = decide(replace(ruleset, regex_timeout=0.02), make_mail(body="a" * 5000 + "!"), ctx(),
                      InMemoryRoutingState())
    assert [h.rule for h in decision.hits] == ["next"]


def test_regex_time_budget_per_mail_bounds_many_slow_rules() -> None:
    slow = [{"name": f"slow {i}", "when": {"body": {"matches": f"(a|aa)+${i}"}}, "then": {"tags": ["x"]}}
            for i in range(40)]
    ruleset, _ = check_ruleset_text(yaml.safe_dump({"rules": slow}))
    assert ruleset is not None
    started = time.monotonic()
    decision = decide(replace(ruleset, regex_timeout=0.05), make_mail(body="a" * 5000 + "!"), ctx(),
                      InMemoryRoutingState())
    elapsed = time.monotonic() - started
    assert elapsed < 1.5  # 5 time-outs of 0.05s, then the remaining 35 are not run (40 x 0.05s = 2s otherwise)
    assert len(decision.warnings) == 5
    assert all(t.conditions[0].timed_out for t in decision.trace)
