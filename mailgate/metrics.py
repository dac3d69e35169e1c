"""Live metrics: an optional HTTP listener serving the Prometheus text format (prometheus-client, private registry).

Most figures are read from the store at scrape time (a custom collector), so they are true across restarts
and agree with `mailgate report`: messages received by source and outcome (spool state), tickets, mail sent
by kind, acknowledgement latency (received -> ack sent_at) as a histogram, outbox depth and oldest age, SLA
warnings and breaches, relay delivery errors. In-process counters add what is never stored: warnings and
errors logged by the IMAP poller, the SMTP listener and the outbox (connection failures and the like).
Enabled by `metrics: {port: 9466}` in mailgate.yaml; off by default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import Config
from .store import Store, utcnow

log = logging.getLogger("mailgate.metrics")

ACK_LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
COMPONENTS = {"mailgate.imap": "imap", "mailgate.sources": "imap", "mailgate.smtp": "smtp", "mailgate.outbox": "outbox"}


class ProblemCounter(logging.Handler):
    """Counts WARNING and ERROR records of the IMAP, SMTP and outbox loggers, by component and level."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        component = next((c for prefix, c in COMPONENTS.items() if record.name.startswith(prefix)), None)
        if component is None:
            return
        level = "error" if record.levelno >= logging.ERROR else "warning"
        with self._lock:
            self.counts[(component, level)] = self.counts.get((component, level), 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.counts)


class StoreCollector(Collector):
    """Reads the store at scrape time; a failing read yields only `mailgate_store_up 0`."""

    def __init__(self, store: Store, problems: ProblemCounter, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.problems = problems
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mailgate_store_up", "1 when the database could be read for this scrape")
        try:
            snap = self.store.metrics_snapshot(self.clock(), ACK_LATENCY_BUCKETS)
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: cannot read the store: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._problems()
            return
        up.add_metric([], 1)
        yield up
        yield from self._from_store(snap)
        yield from self._problems()

    def _from_store(self, snap: dict[str, Any]) -> Iterator[Metric]:
        received = CounterMetricFamily("mailgate_messages_received", "Messages spooled, by source and outcome "
                                       "(spool state: done, duplicate, spam, quarantined, spooled)", labels=["source", "outcome"])
        for source, state, n in snap["received"]:
            received.add_metric([source or "", state or ""], n)
        yield received
        yield CounterMetricFamily("mailgate_tickets_created", "Tickets created", value=snap["tickets"])
        tickets = GaugeMetricFamily("mailgate_tickets", "Tickets by current status", labels=["status"])
        for status, n in snap["tickets_by_status"]:
            tickets.add_metric([status], n)
        yield tickets
        sent = CounterMetricFamily("mailgate_mail_sent", "Mail delivered to the relay or Maildir, by kind", labels=["kind"])
        for kind, n in snap["sent"]:
            sent.add_metric([kind], n)
        yield sent
        buckets, count, total = snap["ack_latency"]
        yield CounterMetricFamily("mailgate_acks_sent", "Acknowledgements sent", value=count)
        hist = HistogramMetricFamily("mailgate_ack_latency_seconds", "Time from receiving a new ticket's mail to its "
                                     "acknowledgement being sent")
        hist.add_metric([], [(repr(b), n) for b, n in zip(ACK_LATENCY_BUCKETS, buckets)] + [("+Inf", count)], total)
        yield hist
        yield GaugeMetricFamily("mailgate_outbox_depth", "Mail queued and not yet delivered", value=snap["outbox_depth"])
        yield GaugeMetricFamily("mailgate_outbox_oldest_age_seconds", "Age of the oldest queued mail (0 when none)",
                                value=max(0.0, snap["outbox_oldest_age"]))
        yield GaugeMetricFamily("mailgate_outbox_failed", "Mail given up after permanent errors or too many attempts",
                                value=snap["outbox_failed"])
        warnings = CounterMetricFamily("mailgate_sla_warnings", "SLA warnings fired, by target", labels=["target"])
        breaches = CounterMetricFamily("mailgate_sla_breaches", "SLA breaches recorded, by target", labels=["target"])
        for kind, target, n in snap["alarms"]:
            (warnings if kind == "warning" else breaches).add_metric([target], n)
        yield warnings
        yield breaches
        yield CounterMetricFamily("mailgate_relay_errors", "Failed delivery attempts (deferred or given up)",
                                  value=snap["delivery_errors"])

    def _problems(self) -> Iterator[Metric]:
        family = CounterMetricFamily("mailgate_errors", "Warnings and errors logged by the IMAP poller, the SMTP "
                                     "listener and the outbox since start", labels=["component", "level"])
        counts = self.problems.snapshot()
        for component in sorted(set(COMPONENTS.values())):
            for level in ("warning", "error"):
                family.add_metric([component, level], counts.get((component, level), 0))
        yield family


class MetricsServer:
    """The /metrics listener with its own registry; `stop()` closes the socket and detaches the log counter."""

    def __init__(self, store: Store, host: str, port: int, clock: Callable[[], datetime] = utcnow):
        self.problems = ProblemCounter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, self.problems, clock))
        self._logger = logging.getLogger("mailgate")
        self._logger.addHandler(self.problems)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except BaseException:
            self._logger.removeHandler(self.problems)
            raise

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def text(self) -> str:
        """The current exposition, as a scrape would return it."""
        return generate_latest(self.registry).decode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._logger.removeHandler(self.problems)


def start(store: Store, config: Config, clock: Callable[[], datetime] = utcnow) -> MetricsServer | None:
    """Start the listener when `metrics.port` is set; None when metrics are off. A busy port is logged, not fatal."""
    settings = getattr(config, "metrics", None)
    if settings is None or not settings.port:
        return None
    try:
        server = MetricsServer(store, settings.host, settings.port, clock)
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d (%s); running without metrics", settings.host, settings.port, exc)
        return None
    host, port = server.address
    log.info("metrics: serving Prometheus text format on http://%s:%d/metrics", host, port)
    return server
