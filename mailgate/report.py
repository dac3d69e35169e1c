"""`mailgate report`: QoS figures from the store (volumes, latencies, SLA compliance, breaches, backlog) as a
terminal table, JSON, or one self-contained HTML page with inline SVG charts (no network, no scripts).

Which tickets count: latencies, compliance and breaches are over the tickets *opened* in [since, until);
"solved" counts tickets whose current resolution falls in the window, whenever they were opened; the backlog
is every ticket not solved or closed right now. Times are wall-clock from the moment the mail was accepted:
ack latency to the acknowledgement's sent_at, first response to the first relayed agent reply, resolution to
solved/closed. Compliance judges each SLA target by its stored due and met times (business hours, pauses
included); targets not yet due are left out. Percentiles are nearest-rank (`mailgate.sla.figures`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .sla import Compliance, Percentiles, compliance, percentiles
from .store import Store, parse_iso, utcnow

UTC = timezone.utc
TARGETS = ("ack", "first_response", "next_response", "resolution")
TARGET_LABELS = {"ack": "acknowledgement", "first_response": "first response", "next_response": "next response",
                 "resolution": "resolution"}
GROUPINGS = {"team": "team", "agent": "assignee", "policy": "sla_policy"}
BUCKETS = ((5, "≤5m"), (15, "≤15m"), (30, "≤30m"), (60, "≤1h"), (120, "≤2h"), (240, "≤4h"), (480, "≤8h"),
           (1440, "≤1d"), (4320, "≤3d"), (None, ">3d"))  # upper bounds in minutes


@dataclass(frozen=True)
class Figures:
    """One column of the report: all tickets, or one team / agent / policy."""

    group: str
    opened: int = 0
    solved: int = 0
    backlog: int = 0
    ack_latency: Percentiles = Percentiles(0, None, None, None)  # minutes
    first_response: Percentiles = Percentiles(0, None, None, None)
    resolution: Percentiles = Percentiles(0, None, None, None)
    compliance: dict[str, Compliance] = field(default_factory=dict)  # per target
    breaches: dict[str, int] = field(default_factory=dict)  # per target
    warnings: int = 0


@dataclass(frozen=True)
class Report:
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    by: str | None
    total: Figures
    groups: tuple[Figures, ...]
    per_day: tuple[tuple[date, int, int], ...]  # (day, opened, solved)
    first_response_histogram: tuple[tuple[str, int], ...]
    ack_latency_histogram: tuple[tuple[str, int], ...]
    compliance_by_team: dict[str, dict[str, Compliance]]


def _minutes(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return max(0.0, (parse_iso(b) - parse_iso(a)).total_seconds() / 60)  # type: ignore[operator]


def _group_of(row: dict[str, Any], by: str | None) -> str:
    if by is None:
        return "all"
    value = row.get(GROUPINGS[by])
    return value or ("default" if by == "policy" else "(none)")


def _figures(group: str, tickets: list[dict], resolved: list[dict], backlog: list[dict], clocks: list[dict],
             alarms: list[dict], now: datetime) -> Figures:
    def times(end: str) -> list[float]:
        return [m for t in tickets if (m := _minutes(t["started_at"], t[end])) is not None]

    pairs: dict[str, list[tuple[datetime | None, datetime | None]]] = {t: [] for t in TARGETS}
    for c in clocks:
        pairs.setdefault(c["target"], []).append((parse_iso(c["due_at"]), parse_iso(c["met_at"])))
    breaches = {t: 0 for t in TARGETS}
    for a in alarms:
        if a["kind"] == "breach":
            breaches[a["target"]] = breaches.get(a["target"], 0) + 1
    return Figures(group=group, opened=len(tickets), solved=len(resolved), backlog=len(backlog),
                   ack_latency=percentiles(times("ack_sent_at")), first_response=percentiles(times("first_response_met_at")),
                   resolution=percentiles(times("resolved_at")),
                   compliance={t: compliance(p, now) for t, p in pairs.items()}, breaches=breaches,
                   warnings=sum(1 for a in alarms if a["kind"] == "warning"))


def _histogram(values: Iterable[float]) -> tuple[tuple[str, int], ...]:
    counts = [0] * len(BUCKETS)
    for v in values:
        counts[next(i for i, (top, _) in enumerate(BUCKETS) if top is None or v <= top)] += 1
    return tuple((label, n) for (_, label), n in zip(BUCKETS, counts))


def build(store: Store, since: datetime | None = None, until: datetime | None = None, by: str | None = None,
          now: datetime | None = None) -> Report:
    """Read the store and compute every figure of the report."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}")
    now = now or utcnow()
    tickets = store.report_tickets(since, until)
    resolved = store.report_resolved(since, until)
    backlog = store.report_backlog()
    clocks = store.report_clocks(since, until)
    alarms = store.report_alarms(since, until)
    team_of = {t["number"]: t for t in tickets}

    def split(rows: list[dict], key: Callable[[dict], str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(key(r), []).append(r)
        return out

    def grouped(grouping: str | None) -> dict[str, tuple[list, list, list, list, list]]:
        by_ticket = lambda r: _group_of(team_of[r["ticket_number"]], grouping)  # noqa: E731
        parts = (split(tickets, lambda r: _group_of(r, grouping)), split(resolved, lambda r: _group_of(r, grouping)),
                 split(backlog, lambda r: _group_of(r, grouping)), split(clocks, by_ticket), split(alarms, by_ticket))
        names = sorted({k for p in parts for k in p})
        return {n: tuple(p.get(n, []) for p in parts) for n in names}  # type: ignore[misc]

    total = _figures("all", tickets, resolved, backlog, clocks, alarms, now)
    groups = tuple(_figures(name, *rows, now) for name, rows in grouped(by).items()) if by else ()
    by_team = {name: _figures(name, *rows, now).compliance for name, rows in grouped("team").items()}

    first = since.date() if since else min((parse_iso(t["created_at"]).date() for t in tickets), default=now.date())  # type: ignore[union-attr]
    last = (until - timedelta(microseconds=1)).date() if until else now.date()
    days = [first + timedelta(days=i) for i in range(min(366, (last - first).days + 1))]
    opened_on = split(tickets, lambda r: parse_iso(r["created_at"]).date().isoformat())  # type: ignore[union-attr]
    solved_on = split(resolved, lambda r: parse_iso(r["resolved_at"]).date().isoformat())  # type: ignore[union-attr]
    per_day = tuple((d, len(opened_on.get(d.isoformat(), [])), len(solved_on.get(d.isoformat(), []))) for d in days)

    return Report(since=since, until=until, generated_at=now, by=by, total=total, groups=groups, per_day=per_day,
                  first_response_histogram=_histogram(m for t in tickets if (m := _minutes(t["started_at"], t["first_response_met_at"])) is not None),
                  ack_latency_histogram=_histogram(m for t in tickets if (m := _minutes(t["started_at"], t["ack_sent_at"])) is not None),
                  compliance_by_team=by_team)


# -- plain data, text ----------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain data (minutes as numbers, times as ISO 8601 UTC) for `--json`."""

    def figures(f: Figures) -> dict[str, Any]:
        d = asdict(f)
        d["compliance"] = {t: {**asdict(c), "percent": c.percent} for t, c in f.compliance.items()}
        return d

    return {
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "generated_at": report.generated_at.isoformat(), "by": report.by, "units": "minutes",
        "total": figures(report.total), "groups": [figures(g) for g in report.groups],
        "per_day": [{"day": d.isoformat(), "opened": o, "solved": s} for d, o, s in report.per_day],
        "first_response_histogram": dict(report.first_response_histogram),
        "ack_latency_histogram": dict(report.ack_latency_histogram),
    }


def duration(minutes: float | None) -> str:
    """A duration for people: 42 s, 14 min, 3 h 05, 2 d 4 h; '-' for none."""
    if minutes is None:
        return "-"
    if minutes < 1:
        return f"{round(minutes * 60)} s"
    m = round(minutes)
    if m < 60:
        return f"{m} min"
    if m < 1440:
        return f"{m // 60} h {m % 60:02d}"
    return f"{m // 1440} d {(m % 1440) // 60} h"


def _pct(c: Compliance) -> str:
    return "-" if c.percent is None else f"{c.percent:.1f}% ({c.on_time}/{c.judged})"


def rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (metrics down, groups across): shared by text and HTML."""
    cols = [report.total, *report.groups]
    body: list[list[str]] = [
        ["tickets opened", *(str(f.opened) for f in cols)],
        ["tickets solved", *(str(f.solved) for f in cols)],
        ["backlog now", *(str(f.backlog) for f in cols)],
        ["ack latency p50 / p90 / p99", *(" / ".join(duration(x) for x in (f.ack_latency.p50, f.ack_latency.p90,
                                                                              f.ack_latency.p99)) for f in cols)],
        ["first response p50 / p90", *(" / ".join(duration(x) for x in (f.first_response.p50, f.first_response.p90))
                                       for f in cols)],
        ["resolution p50 / p90", *(" / ".join(duration(x) for x in (f.resolution.p50, f.resolution.p90)) for f in cols)],
    ]
    for t in TARGETS:
        body.append([f"SLA {TARGET_LABELS[t]} on time", *(_pct(f.compliance.get(t, Compliance())) for f in cols)])
    body.append(["SLA breaches", *(str(sum(f.breaches.values())) for f in cols)])
    body.append(["SLA warnings", *(str(f.warnings) for f in cols)])
    return ["", *(f.group for f in cols)], body


def _window(report: Report) -> str:
    since = report.since.strftime("%Y-%m-%d %H:%M") if report.since else "the beginning"
    until = report.until.strftime("%Y-%m-%d %H:%M") if report.until else "now"
    return f"{since} to {until} UTC"


def render_text(report: Report) -> str:
    header, body = rows(report)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [f"mailgate report: tickets opened from {_window(report)}"
             + (f", by {report.by}" if report.by else ""), ""]
    for r in [header, *body]:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    lines += ["", f"generated {report.generated_at:%Y-%m-%d %H:%M} UTC; times are wall-clock, compliance counts "
              "business hours; percentiles nearest-rank"]
    return "\n".join(lines) + "\n"


# -- HTML with inline SVG --------------------------------------------------------------------------------

COLORS = {"opened": "#3b6fb6", "solved": "#4f9d55", "ack": "#8a63b8", "first_response": "#3b6fb6",
          "next_response": "#d08a2c", "resolution": "#4f9d55"}
CSS = """body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2430;margin:2em auto;max-width:1100px;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5dae2;padding-bottom:.2em}
.meta{color:#5b6573}table{border-collapse:collapse;margin-top:.6em}td,th{padding:.3em .8em;border-bottom:1px solid #e6e9ef;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f5f8}svg{display:block;margin-top:.6em}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#303846}.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}"""


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{html.escape(title)}">' + "".join(body) + "</svg>")


def _nice_max(value: float) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 4:
            return step * 4
    return int(value) + 1


def svg_bars(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], width: int = 1000,
             height: int = 260, title: str = "") -> str:
    """Vertical grouped bars: one group per label, one bar per series (name, colour, values)."""
    left, bottom, top = 44, 40, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = _nice_max(max([v for _, _, vals in series for v in vals] + [1]))
    out = []
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e3e7ee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{peak * i // 4}</text>')
    slot = plot_w / max(1, len(labels))
    bar = max(1.0, min(28.0, slot * 0.8 / max(1, len(series))))
    every = max(1, round(len(labels) / 16))
    for i, label in enumerate(labels):
        x0 = left + i * slot + (slot - bar * len(series)) / 2
        for j, (name, color, values) in enumerate(series):
            h = plot_h * values[i] / peak
            out.append(f'<rect x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{html.escape(f"{label} {name}: {values[i]:g}")}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                       f'{html.escape(label)}</text>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#8a93a3"/>')
    return _svg(width, height, out, title)


def svg_compliance(teams: dict[str, dict[str, Compliance]], width: int = 1000, title: str = "") -> str:
    """Horizontal bars: per team, one bar per SLA target with its on-time percentage."""
    rows_ = [(team, t, c) for team, per in teams.items() for t in TARGETS if (c := per.get(t)) and c.judged]
    left, bar_h, gap = 250, 18, 4
    height = max(60, 30 + len(rows_) * (bar_h + gap) + 8 * len(teams))
    plot_w = width - left - 120
    out = []
    for pct in (0, 25, 50, 75, 100):
        x = left + plot_w * pct / 100
        out.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height - 4}" stroke="#e3e7ee"/>'
                   f'<text x="{x:.1f}" y="12" text-anchor="middle">{pct}%</text>')
    y, last_team = 24.0, None
    for team, target, c in rows_:
        if team != last_team and last_team is not None:
            y += 8
        last_team = team
        w = plot_w * (c.percent or 0) / 100
        out.append(f'<text x="{left - 8}" y="{y + 13:.1f}" text-anchor="end">{html.escape(team)} · '
                   f'{TARGET_LABELS[target]}</text>'
                   f'<rect x="{left}" y="{y:.1f}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[target]}"/>'
                   f'<text x="{left + w + 6:.1f}" y="{y + 13:.1f}">{c.percent:.0f}% ({c.on_time}/{c.judged})</text>')
        y += bar_h + gap
    if not rows_:
        out.append(f'<text x="{left}" y="40">no SLA target judged yet</text>')
    return _svg(width, height, out, title)


def render_html(report: Report) -> str:
    """One self-contained page: summary table and three inline SVG charts; no scripts, no external resources."""
    header, body = rows(report)
    table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
    days = [d.strftime("%m-%d") for d, _, _ in report.per_day]
    volume = svg_bars(days, [("opened", COLORS["opened"], [o for _, o, _ in report.per_day]),
                             ("solved", COLORS["solved"], [s for _, _, s in report.per_day])], title="tickets per day")
    labels = [label for label, _ in report.first_response_histogram]
    times = svg_bars(labels, [("acknowledgement", COLORS["ack"], [n for _, n in report.ack_latency_histogram]),
                              ("first response", COLORS["first_response"], [n for _, n in report.first_response_histogram])],
                     height=240, title="response time distribution")
    legend = lambda *items: '<p class="legend">' + "".join(  # noqa: E731
        f'<span style="background:{c}"></span>{html.escape(n)}' for n, c in items) + "</p>"
    title = f"Support report: {_window(report)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">Tickets opened in the window{f", by {html.escape(report.by)}" if report.by else ""}; generated
{report.generated_at:%Y-%m-%d %H:%M} UTC. Times are wall-clock; SLA compliance counts business hours and pauses.</p>
{table}
<h2>Tickets per day</h2>{legend(("opened", COLORS["opened"]), ("solved", COLORS["solved"]))}{volume}
<h2>Response times</h2>{legend(("acknowledgement", COLORS["ack"]), ("first response", COLORS["first_response"]))}{times}
<h2>SLA compliance per team</h2>{svg_compliance(report.compliance_by_team, title="SLA compliance per team")}
</body></html>
"""


def dumps(report: Report) -> str:
    return json.dumps(to_json(report), indent=2, ensure_ascii=False)
