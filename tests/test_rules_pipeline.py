"""Rules acting through the real daemon: round-robin that survives a restart, least-open, cc, forward, follow-up rules."""

from __future__ import annotations

from pathlib import Path

from conftest import SmtpSink, mail, send

RULES = """
teams:
  tech: {members: [carol, dave, erin]}
  sales: {members: [frank, gina]}
agents:
  carol: {addresses: carol@staff.test, team: tech}
  dave: {addresses: dave@staff.test, team: tech}
  erin: {addresses: erin@staff.test, team: tech, away: true}
  frank: {addresses: frank@staff.test, team: sales}
  gina: {addresses: gina@staff.test, team: sales}
rules:
  - name: escalate on reply
    on: reply
    when: {body: {contains: "still broken"}}
    then: {priority: urgent, reopen: true, tags: [escalated]}
  - name: quotes
    when: {subject: {contains: quote}}
    then: {least_open: sales, cc: purchasing@client.test, forward: crm@sales.test}
  - name: tech
    when: {subject: {contains: printer}}
    then: {round_robin: tech}
"""


def relay(sink: SmtpSink) -> dict:
    return {"host": "127.0.0.1", "port": sink.port, "tls": "none"}


def assignees(d) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.assignee for t in sorted(d.store.tickets(), key=lambda t: t.number)]


def test_round_robin_skips_away_agents_and_survives_a_restart(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    d = start_daemon(relay=relay(smtp_sink))
    for i in range(3):
        assert send(d.port, mail(f"printer {i}", message_id=f"rr{i}"))[0] == 250
        d.wait_until(lambda: len(d.store.tickets()) == i + 1, what=f"ticket {i + 1}")
    assert assignees(d) == ["carol", "dave", "carol"]  # erin is away
    d.stop()
    d = start_daemon(relay=relay(smtp_sink))  # same database: the rotation goes on where it stopped
    assert send(d.port, mail("printer 3", message_id="rr3"))[0] == 250
    d.wait_until(lambda: len(d.store.tickets()) == 4, what="ticket 4")
    assert assignees(d) == ["carol", "dave", "carol", "dave"]
    events = [e.detail for e in d.store.ticket_events(4) if e.kind == "rule_matched"]
    assert events and "round-robin" in events[0]


def test_least_open_cc_and_forward(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    d = start_daemon(relay=relay(smtp_sink))
    for i in range(3):
        assert send(d.port, mail(f"quote {i}", message_id=f"q{i}", sender=f"buyer{i}@client.test"))[0] == 250
        d.wait_until(lambda: len(d.store.tickets()) == i + 1, what=f"ticket {i + 1}")
        if i == 0:  # frank's first ticket is solved: only open tickets count
            d.store.transaction(lambda tx: tx.update_ticket(1, status="solved"))
    owners = assignees(d)
    assert owners[0] == owners[1] and owners[2] != owners[0], owners  # the one with fewer open tickets gets the next
    people = {p.address: p for p in d.store.participants(1)}
    assert people["purchasing@client.test"].role == "cc" and people["purchasing@client.test"].receives
    forwarded = smtp_sink.wait_for(3, where=lambda c: c.rcpt_to == ["crm@sales.test"])
    assert {c.message["Message-ID"] for c in forwarded} == {"<q0@client.test>", "<q1@client.test>", "<q2@client.test>"}
    assert all(c.message["Resent-To"] == "crm@sales.test" for c in forwarded)


def test_follow_up_rule_reopens_and_reprioritises(start_daemon, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    d = start_daemon(relay=relay(smtp_sink))
    assert send(d.port, mail("printer jam", message_id="p1"))[0] == 250
    d.wait_until(lambda: d.store.tickets(), what="ticket")
    d.store.transaction(lambda tx: tx.update_ticket(1, status="solved"))
    reply = mail("Re: printer jam [Support #1]", "It is still broken, please help.", message_id="p2",
                 headers={"In-Reply-To": "<p1@client.test>"})
    assert send(d.port, reply)[0] == 250
    ticket = d.wait_until(lambda: (t := d.store.ticket(1)) and t.message_count >= 3 and t.priority == "urgent" and t,
                          what="follow-up rule applied")
    assert ticket.status == "open" and "escalated" in ticket.tags
    kinds = [e.kind for e in d.store.ticket_events(1)]
    assert "priority_changed" in kinds and "status_changed" in kinds
    assert len(d.store.tickets()) == 1
