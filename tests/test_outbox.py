"""The outbox worker against a real SMTP relay: one session per batch, reconnect when the relay hangs up, retries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conftest import SmtpSink, mail

from mailgate.config import Config, OutboxConfig, RelayConfig
from mailgate.outbox import Outbox
from mailgate.store import Store, utcnow


def queue(store: Store, n: int) -> None:
    now = utcnow()

    def run(tx) -> None:  # type: ignore[no-untyped-def]
        for i in range(n):
            tx.queue_mail(ticket_number=None, kind="ack", message_id=f"o{i}@example.test", mail_from="",
                          rcpt_to=[f"c{i}@client.test"], raw=mail(f"ack {i}", message_id=f"o{i}"), due_at=now, at=now)

    store.transaction(run)


def outbox(tmp_path: Path, sink: SmtpSink) -> tuple[Store, Outbox]:
    store = Store(tmp_path / "m.db")
    config = Config(database=str(tmp_path / "m.db"), relay=RelayConfig(host="127.0.0.1", port=sink.port, tls="none"),
                    outbox=OutboxConfig(retry_base=0.01, retry_max=0.02))
    return store, Outbox(store, config)


def test_a_batch_goes_out_over_one_relay_session(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    store, box = outbox(tmp_path, smtp_sink)
    with store:
        queue(store, 5)
        report = box.deliver_due()
        assert (report.sent, report.deferred, report.failed) == (5, 0, 0)
        assert len(smtp_sink.messages) == 5 and smtp_sink.handler.sessions == 1
        assert store.outbox_counts() == {"sent": 5}


def test_a_relay_that_hangs_up_between_mails_is_reconnected(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    store, box = outbox(tmp_path, smtp_sink)
    with store:
        queue(store, 2)
        client = box.transport._session()  # type: ignore[attr-defined]  # a session left open from an earlier batch
        client.sock.close()  # ... that the relay has since dropped (its idle timeout), as seen from our side
        report = box.deliver_due()
        assert report.sent == 2 and len(smtp_sink.messages) == 2


def test_a_refusing_relay_defers_every_row_and_the_retry_sends_them(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    store, box = outbox(tmp_path, smtp_sink)
    with store:
        queue(store, 3)
        smtp_sink.handler.fail_with = "451 4.3.0 try later"
        assert box.deliver_due().deferred == 3
        smtp_sink.handler.fail_with = None
        box.clock = lambda: utcnow() + timedelta(seconds=1)  # past the (short) backoff
        assert box.deliver_due().sent == 3
        assert store.query("SELECT attempts, state FROM outbox ORDER BY id") == [{"attempts": 2, "state": "sent"}] * 3
