"""The SMTP listener (aiosmtpd): check cheaply, spool, answer — 250 only after the raw bytes are committed.

Only the configured support addresses (and their +token forms) are accepted: never an open relay.
Storage trouble, or any exception in the handler, answers 451 4.3.0 (aiosmtpd's default would be a
permanent 500, which bounces customer mail). Nothing else happens inside the SMTP transaction.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from .config import Config
from .errors import TemporaryFailure
from .message import Inbound
from .store import Store, utcnow
from .threader import base_address

log = logging.getLogger("mailgate.smtp")
LINE_LENGTH_LIMIT = 64 * 1024  # RFC 5321 says 1000, but real HTML mail breaks it; a 500 here would bounce it


@dataclass
class SmtpStats:
    """Counters the daemon reports (accepted, refused, tempfailed, active sessions)."""

    accepted: int = 0
    rejected: int = 0
    tempfailed: int = 0
    sessions: int = 0
    in_flight: int = 0
    receiving: int = 0  # sessions between DATA and the final reply: shutdown lets them finish (within the grace)


class SpoolingHandler:
    """aiosmtpd handler: RCPT checks, DATA spools through the store."""

    def __init__(self, store: Store, config: Config, on_spooled: Callable[[int], None], stats: SmtpStats):
        self.store = store
        self.config = config
        self.on_spooled = on_spooled
        self.stats = stats
        self.own = {a.lower() for a in config.support_addresses}

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.config.smtp.max_recipients})"
        if base_address(address) not in self.own:
            self.stats.rejected += 1
            log.info("smtp: refused RCPT %s from %s (not a support address)", address, session.peer)
            return f"550 5.1.1 <{address}>: no such support address here; this server is not a relay"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        assert isinstance(raw, bytes)
        peer = session.peer
        inbound = Inbound(raw=raw, source="smtp", received_at=utcnow(),
                          peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
                          mail_from=(envelope.mail_from or "").strip("<>"), rcpt_to=tuple(envelope.rcpt_tos))
        self.stats.in_flight += 1
        started = time.perf_counter()
        try:
            spool_id = await self.store.aspool(inbound)
        except TemporaryFailure as exc:
            self.stats.tempfailed += 1
            log.error("smtp: 451 to %s: cannot store the message: %s", inbound.peer, exc)
            return "451 4.3.0 Cannot store the message right now; please try again later"
        finally:
            self.stats.in_flight -= 1
        self.stats.accepted += 1
        log.debug("smtp: spooled %d bytes as %d in %.1f ms", len(raw), spool_id, (time.perf_counter() - started) * 1000)
        self.on_spooled(spool_id)
        return f"250 2.0.0 Ok: queued as {spool_id}"

    async def handle_exception(self, error: Exception) -> str:
        self.stats.tempfailed += 1
        log.exception("smtp: unexpected error in a session; answered 451", exc_info=error)
        return "451 4.3.0 Temporary server error; please try again later"


class MailgateSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on size errors and a cap on concurrent sessions."""

    def __init__(self, handler: SpoolingHandler, stats: SmtpStats, config: Config, tls: ssl.SSLContext | None, hostname: str,
                 live: set["MailgateSMTP"]):
        self.line_length_limit = LINE_LENGTH_LIMIT
        self._live = live
        super().__init__(handler, data_size_limit=config.smtp.max_message_size, hostname=hostname, ident="mailgate ESMTP",
                         tls_context=tls, require_starttls=False, decode_data=False, enable_SMTPUTF8=True, timeout=300,
                         auth_require_tls=True)
        self._stats = stats
        self._max_sessions = config.smtp.max_sessions
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._stats.sessions >= self._max_sessions:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections; try again later\r\n")
            transport.close()
            log.warning("smtp: refused a connection: %d sessions already open", self._stats.sessions)
            return
        self._stats.sessions += 1
        self._counted = True
        self._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._stats.sessions -= 1
            self._counted = False
            self._live.discard(self)
        if self.transport is not None or error is not None:
            super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        self._stats.receiving += 1
        try:
            await super().smtp_DATA(arg)
        finally:
            self._stats.receiving -= 1

    async def push(self, status: str) -> None:
        if status.startswith("552 Error: Too much mail data") or status.startswith("552 Error: message size exceeds"):
            status = f"552 5.3.4 Message too big (this server accepts at most {self.data_size_limit} bytes)"
        if status.startswith(("250-AUTH", "250 AUTH")):
            return  # mailgate has no submission users: AUTH is never offered (aiosmtpd would offer it after STARTTLS)
        await super().push(status)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not available: this server only takes mail for its support addresses")


class SmtpListener:
    """Owns the listening socket(s) on the daemon's loop; stops accepting first, then drains in-flight mail."""

    def __init__(self, store: Store, config: Config, on_spooled: Callable[[int], None]):
        self.config = config
        self.stats = SmtpStats()
        self.handler = SpoolingHandler(store, config, on_spooled, self.stats)
        self.server: asyncio.Server | None = None
        self.tls = self._tls_context()
        self.hostname = config.smtp.hostname or socket.gethostname()
        self.live: set[MailgateSMTP] = set()

    def _tls_context(self) -> ssl.SSLContext | None:
        smtp = self.config.smtp
        if not smtp.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.config.path(smtp.tls_cert)), str(self.config.path(smtp.tls_key)) if smtp.tls_key else None)
        return ctx

    def _protocol(self) -> MailgateSMTP:
        return MailgateSMTP(self.handler, self.stats, self.config, self.tls, self.hostname, self.live)

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(self._protocol, sock=sock)
        else:
            self.server = await loop.create_server(self._protocol, host=self.config.smtp.host, port=self.config.smtp.port,
                                                   reuse_address=True)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None and self.server.sockets
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; wait up to `grace` seconds for messages being received or stored; then close sessions."""
        if self.server is None:
            return
        self.server.close()
        deadline = time.monotonic() + grace
        while (self.stats.in_flight or self.stats.receiving) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.stats.in_flight or self.stats.receiving:
            log.warning("smtp: %d message(s) still being received or stored at shutdown were cut (clients will retry)",
                        max(self.stats.in_flight, self.stats.receiving))
        for session in list(self.live):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)
