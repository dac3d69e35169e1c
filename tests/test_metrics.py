"""The Prometheus endpoint scraped over real HTTP from a running daemon after sending mail through a flaky relay."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import SmtpSink, free_port, mail, send


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_endpoint_over_http(start_daemon, smtp_sink: SmtpSink) -> None:
    smtp_sink.handler.fail_with = "451 4.3.0 try later"
    port = free_port()
    d = start_daemon(relay={"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"},
                     metrics={"host": "127.0.0.1", "port": port})
    assert send(d.port, mail("Printer on fire", message_id="m1"))[0] == 250
    d.wait_until(lambda: any(e.kind == "ack_deferred" for e in d.store.ticket_events(1)), what="ack deferred")

    m = scrape(port)
    assert m[("mailgate_store_up", ())] == 1
    assert m[("mailgate_messages_received_total", (("outcome", "done"), ("source", "smtp")))] == 1
    assert m[("mailgate_tickets_created_total", ())] == 1
    assert m[("mailgate_outbox_depth", ())] == 1
    assert m[("mailgate_outbox_oldest_age_seconds", ())] >= 0
    assert m[("mailgate_relay_errors_total", ())] >= 1
    assert m[("mailgate_errors_total", (("component", "outbox"), ("level", "warning")))] >= 1
    assert m[("mailgate_errors_total", (("component", "imap"), ("level", "error")))] == 0
    assert m[("mailgate_acks_sent_total", ())] == 0

    smtp_sink.handler.fail_with = None
    smtp_sink.wait_for(1)
    d.wait_until(lambda: d.store.outbox_counts().get("queued", 0) == 0, what="outbox drained")
    assert send(d.port, mail("Second", message_id="m2"))[0] == 250
    d.wait_until(lambda: d.store.query("SELECT count(*) AS n FROM outbox WHERE kind='ack' AND state='sent'")[0]["n"] == 2,
                 what="both acks sent")
    m = scrape(port)
    assert m[("mailgate_messages_received_total", (("outcome", "done"), ("source", "smtp")))] == 2
    assert m[("mailgate_acks_sent_total", ())] == 2
    assert m[("mailgate_mail_sent_total", (("kind", "ack"),))] == 2
    assert m[("mailgate_ack_latency_seconds_count", ())] == 2
    assert m[("mailgate_ack_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert m[("mailgate_ack_latency_seconds_bucket", (("le", "7200.0"),))] == 2  # both went out within seconds
    assert 0 <= m[("mailgate_ack_latency_seconds_sum", ())] < 120
    assert m[("mailgate_outbox_depth", ())] == 0 and m[("mailgate_outbox_oldest_age_seconds", ())] == 0
    assert m[("mailgate_tickets", (("status", "new"),))] == 2
    assert ("mailgate_sla_breaches_total", (("target", "ack"),)) not in m  # nothing breached
    d.stop()


def test_metrics_off_by_default(start_daemon) -> None:
    d = start_daemon()
    assert d.daemon.metrics is None
    d.stop()


def test_sla_alarms_and_store_errors_are_exposed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timedelta, timezone

    from mailgate import slatrack
    from mailgate.compose import Composer
    from mailgate.config import Config
    from mailgate.metrics import MetricsServer
    from mailgate.rules import Ruleset
    from mailgate.store import Store

    t0 = datetime(2026, 1, 12, 8, 0, tzinfo=timezone.utc)
    rules = Ruleset()
    store = Store(tmp_path / "m.db")
    store.transaction(lambda tx: slatrack.record_and_recompute(tx, tx.create_ticket(
        subject="s", customer="c@x.test", customer_name="", priority="normal", team=None, assignee=None, sla_policy=None,
        tags=(), at=t0), "created", t0, "normal", ruleset=rules))
    slatrack.fire_due_alarms(store, rules, Composer(None, "x.test"), Config(), t0 + timedelta(minutes=13))  # warning
    slatrack.fire_due_alarms(store, rules, Composer(None, "x.test"), Config(), t0 + timedelta(minutes=16))  # breach
    server = MetricsServer(store, "127.0.0.1", 0)
    try:
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for f in text_string_to_metric_families(server.text()) for s in f.samples}
        assert samples[("mailgate_sla_warnings_total", (("target", "ack"),))] == 1
        assert samples[("mailgate_sla_breaches_total", (("target", "ack"),))] == 1
        store.close()  # a scrape still answers when the database cannot be read
        assert "mailgate_store_up 0.0" in server.text()
        assert scrape(server.address[1])[("mailgate_store_up", ())] == 0
    finally:
        server.stop()
        store.close()
