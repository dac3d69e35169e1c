"""Daemon(config).serve(): start-up -> run -> bounded graceful shutdown; signals (TERM/INT stop, HUP reload); sd_notify.

Builds the Store, the Ruleset and the Composer once and passes them down (no globals). One asyncio
loop runs the SMTP listener and the workers; SQLite runs on the store's writer thread, parsing on a
processing thread, IMAP in threads of its own: nothing blocking runs on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compose import Composer
from .config import Config, reply_token_secret
from .errors import Location, MailgateError, Problem, RulesError, StorageUnavailable
from .outbox import Outbox
from .pipeline import Pipeline, Runtime
from .rules import Ruleset, check_ruleset, empty_ruleset
from .smtp import SmtpListener
from .store import Store
from . import metrics as metrics_listener, slatrack
from collections.abc import Callable
from datetime import datetime
from .store import utcnow

log = logging.getLogger("mailgate.daemon")


def load_runtime(config: Config) -> Runtime:
    """Read rules.yaml (or the empty default) and compile the templates; raises MailgateError with file:line."""
    rules_path = config.path(config.rules)
    ruleset: Ruleset
    if rules_path.exists():
        loaded, problems = check_ruleset(rules_path)
        if problems or loaded is None:
            raise RulesError(problems)
        ruleset = loaded
    else:
        ruleset = empty_ruleset()
    templates = config.path(config.templates)
    composer = Composer(templates if templates.is_dir() else None, config.domain)
    missing = [name for name in ruleset.templates if f"{name}.txt.j2" not in composer.names]
    if missing:
        raise RulesError([Problem(Location(str(rules_path)), f"template {name!r} is listed but there is no"
                                  f" {name}.txt.j2 in {templates} (nor built in)") for name in missing])
    return Runtime(ruleset=ruleset, composer=composer)


def notify_systemd(state: str) -> None:
    """sd_notify(3): tell systemd READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 when run as Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


def inherited_socket() -> socket.socket | None:
    """The listening socket passed by systemd socket activation (LISTEN_FDS), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # sd_listen_fds(unset=1): not for our children
        os.environ.pop(name, None)
    sock = socket.socket(fileno=3)
    sock.set_inheritable(False)
    return sock


@dataclass
class Health:
    started_at: float
    processed: int = 0
    quarantined: int = 0
    last_reload: str = "start-up"


class Daemon:
    """The running service."""

    def __init__(self, config: Config, *, sweep_interval: float = 1.0, grace: float = 10.0,
                 clock: Callable[[], datetime] = utcnow):
        self.clock = clock  # every "now" of the pipeline, outbox and SLA timer (tests inject their own)
        self.config = config
        self.sweep_interval = sweep_interval
        self.grace = grace
        self.runtime = load_runtime(config)  # first: a bad rules file or template stops start-up before anything opens
        self.store = Store(config.path(config.database), config.database_busy_timeout)
        self.secret = reply_token_secret(config) or self.store.meta_secret()
        self.pipeline = Pipeline(self.store, config, lambda: self.runtime, self.secret, clock=clock)
        self.outbox = Outbox(self.store, config, clock=clock)
        self.metrics: metrics_listener.MetricsServer | None = None
        self._wake_sla = asyncio.Event()
        self.smtp: SmtpListener | None = None
        self.health = Health(started_at=time.time())
        self._processing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailgate-pipeline")
        self._rules_mtime = self._mtimes()
        self._stop = asyncio.Event()
        self._wake_pipeline = asyncio.Event()
        self._wake_outbox = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads_stop = threading.Event()

    # -- control ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def spooled(self, _spool_id: int) -> None:
        """Called by sources after a commit: wake the pipeline (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_pipeline.set)

    def reload(self, why: str = "SIGHUP") -> bool:
        """Re-read rules and templates; a bad edit keeps the last good ones live and logs each problem."""
        try:
            self.runtime = load_runtime(self.config)
        except MailgateError as exc:
            for line in str(exc).splitlines():
                log.error("reload (%s) failed, keeping the last good rules and templates: %s", why, line)
            return False
        finally:
            self._rules_mtime = self._mtimes()
        self.health.last_reload = why
        log.info("reload (%s): rules and templates reloaded", why)
        return True

    def _mtimes(self) -> tuple[float, ...]:
        paths = [self.config.path(self.config.rules)]
        tdir = self.config.path(self.config.templates)
        if tdir.is_dir():
            paths += sorted(tdir.glob("*.j2"))
        out = []
        for p in paths:
            try:
                out.append(Path(p).stat().st_mtime)
            except OSError:
                out.append(0.0)
        return tuple(out)

    # -- run --------------------------------------------------------------------------------------

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Start everything, run until asked to stop, then shut down within the grace period."""
        self._loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._stop.set), (signal.SIGINT, self._stop.set),
                             (signal.SIGHUP, self._sighup)):
            try:
                self._loop.add_signal_handler(sig, handler)
            except (RuntimeError, ValueError):  # not the main thread (tests run the daemon in a thread)
                pass
        tasks = [asyncio.create_task(self._pipeline_worker(), name="pipeline"),
                 asyncio.create_task(self.outbox.run(self._stop, self._wake_outbox), name="outbox"),
                 asyncio.create_task(self._watch_files(), name="watch"),
                 asyncio.create_task(self._retention(), name="retention"),
                 asyncio.create_task(self._sla_timer(), name="sla")]
        self.metrics = metrics_listener.start(self.store, self.config, self.clock)
        imap_threads = self._start_imap()
        if self.config.smtp.enabled:
            self.smtp = SmtpListener(self.store, self.config, self.spooled)
            await self.smtp.start(inherited_socket())
            host, port = self.smtp.address
            log.info("listening for SMTP on %s:%d for %s", host, port, ", ".join(self.config.support_addresses))
        log.info("mailgate ready: database=%s outbox=%s", self.store.path, self.outbox.transport.describe())
        notify_systemd("READY=1\nSTATUS=accepting mail")
        if ready is not None:
            ready.set()
        await self._stop.wait()

        notify_systemd("STOPPING=1\nSTATUS=shutting down")
        log.info("shutting down: no new sessions; finishing messages in flight")
        if self.smtp:
            await self.smtp.stop(self.grace)
        self._threads_stop.set()
        self._wake_pipeline.set()
        self._wake_outbox.set()
        done, pending = await asyncio.wait(tasks, timeout=self.grace)
        for task in pending:
            task.cancel()
        for t in imap_threads:
            await asyncio.to_thread(t.join, self.grace)
        self._processing.shutdown(wait=True)
        if self.metrics:
            self.metrics.stop()
        self.store.close()
        log.info("stopped cleanly")

    def _start_imap(self) -> list[threading.Thread]:
        threads = []
        if not self.config.imap:
            return threads
        from .sources.imap import ImapSource

        for account in self.config.imap:
            source = ImapSource(account, self.store, self.spooled, config=self.config)  # password_file relative to the config
            t = threading.Thread(target=source.run, args=(self._threads_stop,), name=f"imap-{account.label}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    async def _pipeline_worker(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.sweep_interval
        while True:
            self._wake_pipeline.clear()
            try:
                ids = await self.store.acall(self._pending_ids)
                for sid in ids:
                    outcome = await loop.run_in_executor(self._processing, self.pipeline.process, sid)
                    self.health.processed += 1
                    if outcome.state == "quarantined":
                        self.health.quarantined += 1
                    self._wake_outbox.set()
                backoff = self.sweep_interval
                if ids and not self._stop.is_set():
                    continue
            except StorageUnavailable as exc:
                log.error("pipeline: storage unavailable (%s); retrying in %.0f s", exc, backoff)
                backoff = min(backoff * 2, 60.0)
            if self._stop.is_set():
                return
            try:
                await asyncio.wait_for(self._wake_pipeline.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass

    def _pending_ids(self) -> list[int]:
        return self.store.pending_spool_ids(100)

    async def _watch_files(self, interval: float = 2.0) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            if self._mtimes() != self._rules_mtime:
                self.reload("file changed")
            notify_systemd(f"WATCHDOG=1\nSTATUS={self.status_line()}")

    def status_line(self) -> str:
        """The one-line STATUS= systemd shows in `systemctl status mailgate`."""
        smtp = f"; {self.smtp.stats.sessions} SMTP session(s)" if self.smtp else ""
        return (f"accepting mail; {self.health.processed} filed, {self.health.quarantined} quarantined since start"
                f"{smtp}; last reload: {self.health.last_reload}")

    def wake_sla_timer(self) -> None:
        """Have the SLA timer look at due alarms now (thread-safe; tests call it after moving their clock)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_sla.set)

    async def _sla_timer(self, longest: float = 30.0) -> None:
        """SLA warnings and breaches: fire what is due, then sleep until the next alarm (at most `longest` s) or a wake-up."""
        while not self._stop.is_set():
            self._wake_sla.clear()
            delay = longest
            try:
                rt = self.runtime
                fired = await asyncio.to_thread(slatrack.fire_due_alarms, self.store, rt.ruleset, rt.composer, self.config,
                                                self.clock())
                if fired:
                    self._wake_outbox.set()
                upcoming = await asyncio.to_thread(self.store.sla_next_alarm)
                if upcoming is not None:
                    delay = min(longest, max(0.05, (upcoming - self.clock()).total_seconds()))
            except StorageUnavailable as exc:
                log.error("sla timer: storage unavailable, will retry: %s", exc)
            except Exception:  # the timer must survive anything one ticket does
                log.exception("sla timer: unexpected error; will retry in %.0f s", longest)
            stop, wake = asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake_sla.wait())
            await asyncio.wait({stop, wake}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            wake.cancel()

    async def _retention(self, every: float = 86400.0) -> None:
        """At start-up and then once a day: clear the raw bytes of long-closed tickets (retention.raw_days_after_close)."""
        while not self._stop.is_set():
            days = self.config.retention.raw_days_after_close
            if days > 0:
                try:
                    cleared = await asyncio.to_thread(self.store.prune_raw, days)
                    log.info("retention: cleared raw bytes of %d message(s) of tickets closed more than %d days ago", cleared, days)
                except StorageUnavailable as exc:
                    log.error("retention: storage unavailable, will try again tomorrow: %s", exc)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=every)
            except asyncio.TimeoutError:
                pass

    # Settings a SIGHUP applies at once; a change to any other setting is logged as needing a restart.
    LIVE_SETTINGS = ("support_name", "subject_tag", "rules", "templates", "maildir", "trusted_authserv_id", "relay",
                     "outbox", "autoreply", "retention")

    def _sighup(self) -> None:
        self.reload_config()
        self.reload("SIGHUP")

    def reload_config(self) -> bool:
        """Re-read mailgate.yaml: apply the LIVE_SETTINGS, log by name every other change (it needs a restart)."""
        from .config import load, settings
        from .outbox import transport_for

        if self.config.source.startswith("<"):
            return True
        try:
            new = load(self.config.source)
            merged = dataclasses.replace(self.config, **{name: getattr(new, name) for name in self.LIVE_SETTINGS})
            transport = transport_for(merged) if (merged.relay, merged.maildir) != (self.config.relay, self.config.maildir) else None
        except MailgateError as exc:
            for line in str(exc).splitlines():
                log.error("reload (SIGHUP): configuration not reloaded, keeping the running one: %s", line)
            return False

        def values(c: Config) -> dict[str, Any]:
            return {name: value for name, value, _field in settings(c)}

        before, after = values(self.config), values(new)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        applied = [k for k in changed if k.split(".")[0].split("[")[0] in self.LIVE_SETTINGS]
        pending = [k for k in changed if k not in applied]
        self.config = self.pipeline.config = self.outbox.config = merged
        if transport is not None:
            self.outbox.transport = transport
        if applied:
            log.info("reload (SIGHUP): configuration applied: %s", ", ".join(applied))
        if pending:
            log.warning("reload (SIGHUP): these settings changed but need a restart (systemctl restart mailgate): %s",
                        ", ".join(pending))
        return True


def run(config: Config) -> int:
    """Run the daemon in this process until a signal stops it; returns the exit code."""
    try:
        daemon = Daemon(config)
    except MailgateError as exc:
        for line in str(exc).splitlines():
            log.error("cannot start: %s", line)
        return 78  # EX_CONFIG
    asyncio.run(daemon.serve())
    return 0
