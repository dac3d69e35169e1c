"""Words for people: `format_trace` explains a Decision for `mailgate rules test`; `summary` describes a Ruleset."""

from __future__ import annotations

from .model import Decision, Ruleset

_MARK = {True: "✓", False: "✗", None: "·"}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary(ruleset: Ruleset) -> str:
    """'12 rules, 3 teams, 5 agents, 2 SLA policies' (plus how many agents are away, when any)."""
    away = sum(1 for a in ruleset.agents.values() if a.away)
    text = ", ".join([_plural(len(ruleset.rules), "rule"), _plural(len(ruleset.teams), "team"),
                      _plural(len(ruleset.agents), "agent"), _plural(len(ruleset.sla_policies), "SLA policy")
                      .replace("policys", "policies")])
    return text + (f" ({away} away)" if away else "")


def format_trace(decision: Decision) -> str:
    """A readable account of every rule evaluated, each condition with ✓/✗ and why, then the decision."""
    out: list[str] = ["Rules:"]
    if not decision.trace:
        out.append("  (no rules)")
    hits = {h.rule: h.did for h in decision.hits}
    unreached = [i for i, t in enumerate(decision.trace, 1) if t.outcome == "not reached"]
    for i, t in enumerate(decision.trace, 1):
        if t.outcome == "not reached":
            if i == unreached[0]:
                span = f"rule {i}" if len(unreached) == 1 else f"rules {i}–{unreached[-1]}"
                out.append(f"  {span} not reached: {t.note}")
            continue
        head = f"  {i}. {t.rule!r} — {t.outcome}"
        if t.where.line:
            head += f"  [{t.where}]"
        if t.outcome == "skipped":
            out.append(f"{head}: {t.note}")
            continue
        out.append(head)
        for c in t.conditions:
            pad = "       " + "  " * c.depth
            why = f" — {c.why}" if c.why else ""
            timeout = "  [regex timed out]" if c.timed_out else ""
            out.append(f"{pad}{_MARK[c.held]} {c.text}{why}{timeout}")
        if t.outcome == "matched":
            out.append(f"       => {hits.get(t.rule, '')}")
            out.append("       => continue with the next rule" if t.note == "continue" else "       => stop")
    d = decision
    out.append("Decision:")
    if d.spam:
        out.append("  spam: stored, no ticket, no acknowledgement")
    rows = [
        ("team", d.team or "(none)"),
        ("agent", d.agent or "(unassigned)"),
        ("priority", d.priority),
        ("tags", ", ".join(d.tags) or "(none)"),
        ("SLA policy", d.sla_policy or "(default)"),
        ("acknowledgement", d.ack_template or "(none)"),
    ]
    if d.cc:
        rows.append(("cc", ", ".join(d.cc)))
    if d.forward_to:
        rows.append(("forward to", ", ".join(d.forward_to)))
    if d.reopen:
        rows.append(("reopen", "yes"))
    rows.append(("matched", ", ".join(repr(h.rule) for h in d.hits) or "(no rule matched: defaults)"))
    width = max(len(k) for k, _ in rows)
    out += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for w in d.warnings:
        out.append(f"  warning: {w}")
    return "\n".join(out)
