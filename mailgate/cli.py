"""`mailgate`: serve, ingest, replay, tickets, rules check|test, config --show, check — the admin's command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

EX_OK, EX_USAGE, EX_DATAERR, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 75, 78


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .config import load

    return load(getattr(args, "config", None))


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .store import Store

    config = _config(args)
    return config, Store(config.path(config.database), config.database_busy_timeout)


def _fail(message: str, code: int) -> int:
    print(f"mailgate: {message}", file=sys.stderr)
    return code


# -- serve / ingest / replay ----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logsetup
    from .daemon import run

    config = _config(args)
    logsetup.setup(args.log_format or config.log_format)
    return run(config)


def cmd_ingest(args: argparse.Namespace) -> int:
    """Read one message on stdin; exit 0 once it is stored, 75 when the MTA should retry."""
    from .errors import MailgateError, TemporaryFailure
    from .message import Inbound
    from .store import utcnow

    raw = sys.stdin.buffer.read()
    try:
        config, store = _store(args)
    except MailgateError as exc:
        return _fail(f"cannot store the message (try again later): {str(exc).splitlines()[0]}", EX_TEMPFAIL)
    try:
        inbound = Inbound(raw=raw, source="ingest", received_at=utcnow(), peer="stdin", mail_from=args.sender,
                          rcpt_to=tuple(args.recipient or ()))
        try:
            spool_id = store.spool(inbound)
        except TemporaryFailure as exc:
            return _fail(f"cannot store the message (try again later): {exc}", EX_TEMPFAIL)
        if args.no_process:
            return EX_OK
        # The raw message is committed: from here on nothing can lose it. File it now if we can;
        # otherwise the daemon's sweep (or `mailgate replay`) does.
        try:
            outcome = _pipeline(config, store).process(spool_id)
            if not args.quiet:
                print(f"spool {spool_id}: {outcome.state}" + (f" ticket #{outcome.ticket_number}" if outcome.ticket_number else ""))
        except MailgateError as exc:
            print(f"mailgate: stored as spool {spool_id}; filing deferred: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EX_OK
    finally:
        store.close()


def _pipeline(config, store):  # type: ignore[no-untyped-def]
    from .daemon import load_runtime
    from .config import reply_token_secret
    from .pipeline import Pipeline

    runtime = load_runtime(config)
    return Pipeline(store, config, lambda: runtime, reply_token_secret(config) or store.meta_secret())


def cmd_replay(args: argparse.Namespace) -> int:
    config, store = _store(args)
    with store:
        if args.list:
            rows = store.quarantined()
            for sid, at, error in rows:
                print(f"{sid}\t{at}\t{error.splitlines()[0] if error else ''}")
            print(f"{len(rows)} quarantined")
            return EX_OK
        ids = store.requeue(args.ids or None)
        pipeline = _pipeline(config, store)
        pending = store.pending_spool_ids(1_000_000) if not args.ids else ids
        for sid in pending:
            outcome = pipeline.process(sid)
            print(f"spool {sid}: {outcome.state}" + (f" ticket #{outcome.ticket_number}" if outcome.ticket_number else "")
                  + (f" ({outcome.detail})" if outcome.state == "quarantined" else ""))
        print(f"replayed {len(pending)} message(s)")
        return EX_OK


# -- tickets ---------------------------------------------------------------------------------------


def cmd_tickets_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    with store:
        tickets = store.tickets(status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([{"number": t.number, "subject": t.subject, "status": t.status, "priority": t.priority,
                           "team": t.team, "assignee": t.assignee, "customer": t.customer, "messages": t.message_count,
                           "created_at": t.created_at.isoformat(), "updated_at": t.updated_at.isoformat()} for t in tickets],
                         indent=2))
        return EX_OK
    rows = [(f"#{t.number}", t.status, t.priority, t.assignee or t.team or "-", t.customer, str(t.message_count),
             t.subject[:50]) for t in tickets]
    _table(("TICKET", "STATUS", "PRIORITY", "OWNER", "CUSTOMER", "MSGS", "SUBJECT"), rows)
    if not tickets:
        print("no tickets yet")
    return EX_OK


def cmd_tickets_show(args: argparse.Namespace) -> int:
    _, store = _store(args)
    with store:
        ticket = store.ticket(args.number)
        if ticket is None:
            return _fail(f"no ticket #{args.number}", EX_DATAERR)
        messages = store.ticket_messages(args.number)
        events = store.ticket_events(args.number)
        people = store.participants(args.number)
    if args.json:
        print(json.dumps({
            "number": ticket.number, "subject": ticket.subject, "status": ticket.status, "priority": ticket.priority,
            "team": ticket.team, "assignee": ticket.assignee, "customer": ticket.customer, "tags": list(ticket.tags),
            "sla_policy": ticket.sla_policy, "created_at": ticket.created_at.isoformat(),
            "participants": [{"address": p.address, "name": p.name, "role": p.role, "receives": p.receives} for p in people],
            "messages": [{"message_id": m.message_id, "direction": m.direction, "kind": m.kind, "from": m.from_addr,
                          "to": list(m.to_addrs), "subject": m.subject, "created_at": m.created_at.isoformat(),
                          "text": m.text} for m in messages],
            "events": [{"at": e.at.isoformat(), "kind": e.kind, "detail": e.detail} for e in events],
        }, indent=2))
        return EX_OK
    print(f"Ticket #{ticket.number}: {ticket.subject}")
    print(f"  status {ticket.status} · priority {ticket.priority} · team {ticket.team or '-'} · assignee {ticket.assignee or '-'}"
          f" · SLA {ticket.sla_policy or '-'} · tags {', '.join(ticket.tags) or '-'}")
    print(f"  customer {ticket.customer_name} <{ticket.customer}> · opened {ticket.created_at:%Y-%m-%d %H:%M} UTC")
    print("  participants: " + ", ".join(f"{p.address} ({p.role}{'' if p.receives else ', no copies'})" for p in people))
    print("\nMessages")
    _table(("WHEN", "DIR", "KIND", "FROM", "SUBJECT"),
           [(f"{m.created_at:%m-%d %H:%M:%S}", m.direction, m.kind, m.from_addr, m.subject[:50]) for m in messages])
    print("\nEvents")
    _table(("WHEN", "EVENT", "DETAIL"), [(f"{e.at:%m-%d %H:%M:%S}", e.kind, e.detail[:100]) for e in events])
    return EX_OK


def cmd_search(args: argparse.Namespace) -> int:
    _, store = _store(args)
    with store:
        try:
            hits = store.search(" ".join(args.words), limit=args.limit)
        except ValueError as exc:
            return _fail(f"{exc}; see https://sqlite.org/fts5.html#full_text_query_syntax", EX_USAGE)
    if args.json:
        print(json.dumps([{"ticket": h.ticket_number, "message_id": h.message_id, "kind": h.kind, "from": h.from_addr,
                           "subject": h.subject, "created_at": h.created_at.isoformat(), "snippet": h.snippet} for h in hits],
                         indent=2))
        return EX_OK
    _table(("TICKET", "WHEN", "KIND", "FROM", "SUBJECT", "MATCH"),
           [(f"#{h.ticket_number}" if h.ticket_number else "-", f"{h.created_at:%Y-%m-%d}", h.kind, h.from_addr,
             h.subject[:40], h.snippet[:70]) for h in hits])
    if not hits:
        print("nothing found")
    return EX_OK


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


# -- rules / config --------------------------------------------------------------------------------


def cmd_rules_check(args: argparse.Namespace) -> int:
    from .rules import check_ruleset, summary

    path = Path(args.file) if args.file else _config(args).path(_config(args).rules)
    if not path.exists():
        return _fail(f"{path}: no such rules file", EX_CONFIG)
    ruleset, problems = check_ruleset(path)
    for p in problems:
        print(str(p), file=sys.stderr)
    if problems or ruleset is None:
        print(f"{path}: {len(problems)} problem(s); the daemon keeps its last good rules until they are fixed", file=sys.stderr)
        return 1
    print(f"{path}: OK — {summary(ruleset)}")
    return EX_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from .message import parse
    from .rules import InMemoryRoutingState, RuleContext, check_ruleset, decide, format_trace

    config = _config(args)
    path = Path(args.rules) if args.rules else config.path(config.rules)
    ruleset, problems = check_ruleset(path)
    if problems or ruleset is None:
        for p in problems:
            print(str(p), file=sys.stderr)
        return 1
    mail = parse(Path(args.message).read_bytes())
    ctx = RuleContext(rcpt_to=tuple(args.rcpt or ()), is_reply=args.reply, customer_known=args.known_customer,
                      now=datetime.now(timezone.utc), auth=args.auth)
    print(format_trace(decide(ruleset, mail, ctx, InMemoryRoutingState())))
    return EX_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from .config import describe

    print("\n".join(describe(_config(args), mask=not args.show_secrets)))
    return EX_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .checks import run_checks

    return run_checks(getattr(args, "config", None))


# -- db: storage hygiene -----------------------------------------------------------------------------


def cmd_db_vacuum(args: argparse.Namespace) -> int:
    _, store = _store(args)
    with store:
        before, after = store.vacuum()
    print(f"{store.path}: vacuumed, {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return EX_OK


def cmd_db_backup(args: argparse.Namespace) -> int:
    """Online backup (safe while the daemon runs); the copy is integrity-checked before it is put in place."""
    from .errors import TemporaryFailure

    _, store = _store(args)
    with store:
        try:
            size = store.backup(args.file)
        except TemporaryFailure as exc:
            return _fail(f"backup failed: {exc}", EX_TEMPFAIL)
    print(f"{store.path}: backed up to {args.file} ({size / 1e6:.1f} MB, integrity_check ok)")
    return EX_OK


def cmd_db_prune(args: argparse.Namespace) -> int:
    config = _config(args)
    days = args.days if args.days is not None else config.retention.raw_days_after_close
    if days <= 0:
        print("retention is off (retention.raw_days_after_close: 0); nothing cleared (or give --days N)")
        return EX_OK
    with _store(args)[1] as store:
        cleared = store.prune_raw(days)
    print(f"cleared the raw bytes of {cleared} message(s) of tickets closed more than {days} days ago (sha256 kept)")
    return EX_OK


def cmd_db_check(args: argparse.Namespace) -> int:
    _, store = _store(args)
    with store:
        problems = store.integrity_check()
    if problems == ["ok"]:
        print(f"{store.path}: integrity_check ok")
        return EX_OK
    for line in problems:
        print(line, file=sys.stderr)
    return _fail(f"{store.path}: integrity_check found {len(problems)} problem(s); restore the last backup", 1)


# -- report ----------------------------------------------------------------------------------------


def _report_time(text: str, end: bool = False):  # type: ignore[no-untyped-def]
    """'2026-01-31' (a whole day: as --until it includes that day) or an ISO date-time; naive means UTC."""
    from datetime import date, datetime, timedelta, timezone

    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            return start + timedelta(days=1) if end else start
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31 or 2026-01-31T12:00") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _report_until(text: str):  # type: ignore[no-untyped-def]
    return _report_time(text, end=True)


def cmd_report(args: argparse.Namespace) -> int:
    """QoS figures for tickets opened in a window: terminal table, --json, or --html FILE."""
    from . import report

    _, store = _store(args)
    with store:
        figures = report.build(store, args.since, args.until, args.by)
    if args.html:
        Path(args.html).write_text(report.render_html(figures), encoding="utf-8")
        if not args.json:
            print(f"wrote {args.html}")
    if args.json:
        print(report.dumps(figures))
    elif not args.html:
        print(report.render_text(figures), end="")
    return EX_OK


# -- parser ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description="Email-to-ticket daemon.")
    parser.add_argument("--config", help="mailgate.yaml to use (default: $MAILGATE_CONFIG, ./mailgate.yaml, built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the daemon (SMTP listener, IMAP, workers) until stopped")
    p.add_argument("--log-format", choices=("text", "json"), help="log line format (default from config: text)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ingest", help="store one message read on stdin (for MTA pipes); exit 75 = retry later")
    p.add_argument("--sender", "-f", default=None, help="envelope sender (MAIL FROM)")
    p.add_argument("--recipient", "-r", action="append", help="envelope recipient (repeatable)")
    p.add_argument("--no-process", action="store_true", help="only store; leave filing to the daemon")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("replay", help="re-process quarantined (or given) raw messages")
    p.add_argument("ids", nargs="*", type=int, help="spool ids (default: all quarantined and still spooled)")
    p.add_argument("--list", action="store_true", help="list quarantined messages with their error")
    p.set_defaults(func=cmd_replay)

    tickets = sub.add_parser("tickets", help="list and show tickets").add_subparsers(dest="tickets_command", required=True)
    p = tickets.add_parser("list", help="recent tickets")
    p.add_argument("--status", help="only this status (new, open, pending, solved, closed)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="a JSON array for scripts")
    p.set_defaults(func=cmd_tickets_list)
    p = tickets.add_parser("show", help="one ticket with its messages and events")
    p.add_argument("number", type=int)
    p.add_argument("--json", action="store_true", help="a JSON object for scripts")
    p.set_defaults(func=cmd_tickets_show)

    p = sub.add_parser("search", help="full-text search over subjects and message text (FTS5 syntax)")
    p.add_argument("words", nargs="+", help='words, "a phrase", OR, prefix*')
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="a JSON array for scripts")
    p.set_defaults(func=cmd_search)

    rules = sub.add_parser("rules", help="check and try routing rules").add_subparsers(dest="rules_command", required=True)
    p = rules.add_parser("check", help="validate rules.yaml; errors as file:line:column")
    p.add_argument("file", nargs="?", help="rules file (default: the configured one)")
    p.set_defaults(func=cmd_rules_check)
    p = rules.add_parser("test", help="show how the rules decide for a message, without touching the database")
    p.add_argument("message", help="an .eml file")
    p.add_argument("--rules", help="rules file (default: the configured one)")
    p.add_argument("--rcpt", action="append", help="envelope recipient to assume")
    p.add_argument("--reply", action="store_true", help="treat the message as a reply to an existing ticket")
    p.add_argument("--known-customer", action="store_true", help="treat the sender as a known customer")
    p.add_argument("--auth", default="none", choices=("pass", "fail", "none"), help="authentication verdict to assume")
    p.set_defaults(func=cmd_rules_test)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.add_argument("--show", action="store_true", default=True, help="print every setting with its help")
    p.add_argument("--show-secrets", action="store_true", help="do not mask secrets")
    p.set_defaults(func=cmd_config_show)

    p = sub.add_parser("check", help="validate config, rules, templates and try each connection")
    p.set_defaults(func=cmd_check)

    db = sub.add_parser("db", help="storage hygiene: vacuum, backup, prune, check").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("vacuum", help="rebuild the database file compactly (a long write: run it at a quiet hour)")
    p.set_defaults(func=cmd_db_vacuum)
    p = db.add_parser("backup", help="online copy through SQLite's backup API, safe while the daemon runs")
    p.add_argument("file", help="where to write the copy (replaced atomically once checked)")
    p.set_defaults(func=cmd_db_backup)
    p = db.add_parser("prune", help="clear raw bytes of long-closed tickets now (retention.raw_days_after_close)")
    p.add_argument("--days", type=int, default=None, help="days after close (default: the configured retention)")
    p.set_defaults(func=cmd_db_prune)
    p = db.add_parser("check", help="PRAGMA integrity_check")
    p.set_defaults(func=cmd_db_check)

    p = sub.add_parser("report", help="SLA and QoS figures: volumes, latencies, compliance, breaches, backlog")
    p.add_argument("--since", type=_report_time, help="tickets opened from this date or time (UTC unless given)")
    p.add_argument("--until", type=_report_until,
                   help="... up to this date (inclusive) or time (exclusive)")
    p.add_argument("--by", choices=("team", "agent", "policy"), help="one column per team, agent or SLA policy")
    p.add_argument("--json", action="store_true", help="a JSON object for scripts")
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML page with charts")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import ConfigError, MailgateError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        return _fail(str(exc), EX_CONFIG)
    except MailgateError as exc:
        return _fail(str(exc), 1)
    except BrokenPipeError:
        return EX_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
