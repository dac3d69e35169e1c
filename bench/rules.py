"""Time to evaluate 500 rules against one message (none match until the last), next to parsing that message.

Usage: .venv/bin/python bench/rules.py [--rules N] [--runs N]
Prints medians; never asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailgate.message import parse  # noqa: E402
from mailgate.rules import InMemoryRoutingState, RuleContext, decide, load_ruleset, summary  # noqa: E402

RAW = (
    b"From: Jane Doe <jane@customer.example>\r\n"
    b"To: support@example.com\r\n"
    b"Cc: Ops <ops@customer.example>\r\n"
    b"Subject: Cannot log in to the dashboard since this morning\r\n"
    b"Message-ID: <bench-1@customer.example>\r\n"
    b"Date: Tue, 04 Jun 2024 09:12:00 +0200\r\n"
    b"X-Mailer: Thunderbird 115\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    + b"Hello, since this morning the login page keeps spinning and then times out.\r\n" * 30
    + b"--b1\r\n"
    b"Content-Type: image/png\r\nContent-Disposition: attachment; filename=\"screen.png\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\r\n" * 20
    + b"--b1--\r\n"
)


def rule_text(i: int) -> str:
    """One rule that does not match the bench message; ten shapes in turn."""
    shape = i % 10
    when = [
        f"subject: \"order {i} shipped\"",
        f"from: customer{i}@elsewhere.example",
        f"from_domain: [d{i}.example, e{i}.example]",
        f"subject: {{matches: '\\b(refund|chargeback)-{i}\\b'}}",
        f"header: {{name: X-Ticket-Ref, equals: \"R{i}\"}}",
        f"all: [{{to: team{i}@example.com}}, {{has_attachment: true}}]",
        f"any: [{{subject: {{startswith: \"[ext-{i}]\"}}}}, {{body: {{contains: \"account {i} closed\"}}}}]",
        f"not: {{any: [{{from_domain: customer.example}}, {{to: desk{i}@example.com}}]}}",
        f"size: {{gt: {i + 1}MB}}",
        f"attachment_name: {{endswith: \".invoice{i}.pdf\"}}",
    ][shape]
    action = ["team: billing", "round_robin: tech", "priority: high", "tags: [t" + str(i) + "]",
              "sla: standard"][i % 5]
    return f"  - name: rule {i}\n    when:\n      {when}\n    then:\n      {action}\n"


def build_rules(n: int) -> str:
    head = (
        "teams:\n  billing: {members: [alice, bob]}\n  tech: {members: [carol, dave, erin]}\n"
        "agents:\n"
        + "".join(f"  {a}: {{addresses: {a}@example.com}}\n" for a in ("alice", "bob", "carol", "dave", "erin"))
        + "sla_policies:\n  standard: {ack_within: 15}\n"
        "rules:\n"
    )
    body = "".join(rule_text(i) for i in range(n - 1))
    last = "  - name: catch-all\n    when:\n      subject: {contains: dashboard}\n    then:\n      round_robin: tech\n"
    return head + body + last


def median_us(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=500)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(build_rules(args.rules), encoding="utf-8")
        t0 = time.perf_counter()
        ruleset = load_ruleset(path)
        load_ms = (time.perf_counter() - t0) * 1000
    mail = parse(RAW)
    ctx = RuleContext(("support@example.com",), False, True, datetime(2024, 6, 4, 7, 12, tzinfo=timezone.utc))
    state = InMemoryRoutingState()
    decision = decide(ruleset, mail, ctx, state)
    assert [h.rule for h in decision.hits] == ["catch-all"], decision.hits

    parse_us = median_us(lambda: parse(RAW), args.runs)
    decide_us = median_us(lambda: decide(ruleset, mail, ctx, state), args.runs)
    quiet_us = median_us(lambda: decide(ruleset, mail, ctx, state, explain=False), args.runs)
    print(f"ruleset: {summary(ruleset)} (loaded and checked in {load_ms:.0f} ms)")
    print(f"message: {len(RAW)} bytes, {len(mail.attachments)} attachment(s)")
    print(f"parse  (median of {args.runs}): {parse_us:8.0f} µs")
    print(f"decide (median of {args.runs}): {decide_us:8.0f} µs  for {args.rules} rules "
          f"({decide_us / args.rules:.2f} µs per rule, full trace included)")
    print(f"decide (median of {args.runs}): {quiet_us:8.0f} µs  for {args.rules} rules, explain=False "
          f"({quiet_us / args.rules:.2f} µs per rule, outcomes only)")
    print(f"decide / parse: {decide_us / parse_us:.1f}x with trace, {quiet_us / parse_us:.1f}x without")


if __name__ == "__main__":
    main()
