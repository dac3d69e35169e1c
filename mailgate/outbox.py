"""Delivery worker: sends due outbox rows through the relay (or into a local Maildir), retries with backoff, records sent_at.

The only SMTP client in mailgate, and the one place mail is DKIM-signed (just before the transport gets
it, when `dkim` is configured). A 4xx reply or a connection failure is retried with exponential backoff;
a 5xx reply fails the row for good (kept, with its error, for the admin). Nothing is deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mailbox
import random
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .compose import prepend_fields
from .config import Config, read_secret_file
from .dkim import signer_for
from .errors import DeliveryError, StorageUnavailable
from .store import OutboxItem, Store, utcnow

log = logging.getLogger("mailgate.outbox")
BATCH = 50  # rows claimed and sent per round (over one relay session)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    deferred: int
    failed: int


class Transport:
    """Hands one rendered mail to the world."""

    def send(self, item: OutboxItem) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """End whatever session a batch of sends kept open (nothing to do for most transports)."""


class MaildirTransport(Transport):
    """Writes mail into a local Maildir (new/cur/tmp), used when no relay is configured."""

    def __init__(self, path: Path):
        self.path = path

    def send(self, item: OutboxItem) -> None:
        trace = [("Return-Path", f"<{item.mail_from}>")] + [("Delivered-To", r) for r in item.rcpt_to]
        try:
            mailbox.Maildir(str(self.path), create=True).add(prepend_fields(item.raw, trace))
        except OSError as exc:
            raise DeliveryError(f"cannot write to Maildir {self.path}: {exc}") from exc

    def describe(self) -> str:
        return f"maildir:{self.path}"


class RelayTransport(Transport):
    """Sends through an SMTP relay with STARTTLS, implicit TLS or none, and optional AUTH."""

    def __init__(self, config: Config):
        self.relay = config.relay
        self.password = self.relay.password or (read_secret_file(config, self.relay.password_file, "relay.password_file")
                                                if self.relay.password_file else "")
        self._context: ssl.SSLContext | None = None
        self._client: smtplib.SMTP | None = None  # one session serves a whole batch of due mail

    @property
    def context(self) -> ssl.SSLContext:
        """Built once: loading the CA store costs ~35 ms, which capped delivery at ~25 mails/s when done per mail."""
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    def connect(self) -> smtplib.SMTP:
        r = self.relay
        context = self.context
        if r.tls == "implicit":
            client: smtplib.SMTP = smtplib.SMTP_SSL(r.host, r.port, timeout=r.timeout, context=context)
        else:
            client = smtplib.SMTP(r.host, r.port, timeout=r.timeout)
            if r.tls == "starttls":
                client.ehlo()
                if not client.has_extn("starttls"):
                    client.quit()
                    raise DeliveryError(f"relay {r.host}:{r.port} does not offer STARTTLS (set relay.tls: none only for a trusted local relay)")
                client.starttls(context=context)
                client.ehlo()
        if r.username:
            client.login(r.username, self.password)
        return client

    def send(self, item: OutboxItem) -> None:
        """Send over the batch's session (opened on first use); a session the relay closed is reopened once."""
        r = self.relay
        try:
            try:
                refused = self._session().sendmail(item.mail_from, list(item.rcpt_to), item.raw)
            except smtplib.SMTPServerDisconnected:  # e.g. the relay's idle timeout or per-session message limit
                self.close()
                refused = self._session().sendmail(item.mail_from, list(item.rcpt_to), item.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            raise DeliveryError(f"relay {r.host}:{r.port} refused all recipients: {exc.recipients}",
                                permanent=all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            self.close()  # the session's state after a refused command is not worth trusting
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise DeliveryError(f"relay {r.host}:{r.port} answered {exc.smtp_code} {text}",
                                permanent=exc.smtp_code >= 500) from exc
        except (OSError, smtplib.SMTPException, socket.timeout) as exc:
            self.close()
            raise DeliveryError(f"relay {r.host}:{r.port} unreachable: {exc}") from exc
        if refused:
            log.warning("outbox: relay refused some recipients of %s: %s", item.message_id, refused)

    def _session(self) -> smtplib.SMTP:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    def describe(self) -> str:
        return f"relay:{self.relay.host}:{self.relay.port} ({self.relay.tls})"


def transport_for(config: Config) -> Transport:
    return RelayTransport(config) if config.relay.host else MaildirTransport(config.path(config.maildir))


class Outbox:
    """Claims due rows and delivers them; one per daemon."""

    def __init__(self, store: Store, config: Config, transport: Transport | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.config = config
        self.transport = transport or transport_for(config)
        self.clock = clock
        self.signer = signer_for(config)  # DKIM, when configured: a bad key stops start-up here

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failures: doubling from retry_base, capped, with jitter."""
        o = self.config.outbox
        delay = min(o.retry_max, o.retry_base * (2 ** max(0, attempts - 1)))
        return delay * random.uniform(0.8, 1.2)

    def deliver_due(self, limit: int = BATCH) -> DeliveryReport:
        """Send every due row once, over one relay session; blocking (run it in a thread)."""
        transport = self.transport  # a SIGHUP may swap self.transport; this batch ends on the one it began with
        try:
            return self._deliver(transport, self.store.due_outbox(self.clock(), limit))
        finally:
            transport.close()

    def _deliver(self, transport: Transport, items: list[OutboxItem]) -> DeliveryReport:
        sent = deferred = failed = 0
        for item in items:
            try:
                transport.send(dataclasses.replace(item, raw=self.signer.sign(item.raw)) if self.signer else item)
            except DeliveryError as exc:
                attempts = item.attempts + 1
                give_up = exc.permanent or attempts >= self.config.outbox.max_attempts
                next_at = self.clock() + timedelta(seconds=self.backoff(attempts))
                self.store.mark_retry(item.id, str(exc), next_at, give_up)
                if give_up:
                    failed += 1
                    log.error("outbox: gave up kind=%s message-id=<%s> ticket=%s attempts=%d error=%s",
                              item.kind, item.message_id, item.ticket_number, attempts, exc)
                else:
                    deferred += 1
                    log.warning("outbox: deferred kind=%s message-id=<%s> ticket=%s attempt=%d next_try=%s error=%s",
                                item.kind, item.message_id, item.ticket_number, attempts, next_at.isoformat(timespec="seconds"), exc)
                continue
            self.store.mark_sent(item.id, self.clock())
            sent += 1
            log.info("outbox: sent kind=%s message-id=<%s> ticket=%s to=%s via=%s", item.kind, item.message_id,
                     item.ticket_number, ",".join(item.rcpt_to), transport.describe())
        return DeliveryReport(sent, deferred, failed)

    async def run(self, stop: asyncio.Event, wake: asyncio.Event, interval: float = 1.0) -> None:
        """Deliver whenever woken, and at least every `interval` seconds, until `stop` is set."""
        while not stop.is_set():
            wake.clear()
            try:
                report = await asyncio.to_thread(self.deliver_due)
                if report.sent == BATCH:  # more may be due right now
                    continue
            except StorageUnavailable as exc:
                log.error("outbox: storage unavailable, will retry: %s", exc)
            except Exception:  # the worker must survive anything one row does
                log.exception("outbox: unexpected error; will retry")
            try:
                await asyncio.wait_for(_first(stop, wake), timeout=interval)
            except asyncio.TimeoutError:
                pass


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
