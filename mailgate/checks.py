"""`mailgate check`: validate config, rules and templates, then try the database, the SMTP port, the relay and each IMAP account.

One line per check, like `postfix check`: ``ok   what: detail`` or ``FAIL what: problem; what to do``
(``warn`` for something worth knowing that does not stop the daemon). The relay is only greeted (EHLO,
STARTTLS, AUTH, QUIT): no mail is sent. Nothing is written but a probe file that is removed at once; the
database is opened without migrating it. Exit status 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import errno
import os
import smtplib
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .config import Config
from .errors import MailgateError
from .outbox import RelayTransport


@dataclass
class Report:
    """Collects and prints the verdict lines; `failed` counts the FAIL lines."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    ok: int = 0
    failed: int = 0
    warned: int = 0

    def line(self, verdict: str, what: str, detail: str) -> None:
        if verdict == "ok":
            self.ok += 1
        elif verdict == "FAIL":
            self.failed += 1
        else:
            self.warned += 1
        print(f"{verdict:<4} {what}: {detail}", file=self.out, flush=True)


def run_checks(config_path: str | None, out: TextIO | None = None) -> int:
    """Run every check and print one line each; 0 when all passed (warnings allowed), 1 otherwise."""
    from .config import load

    report = Report(out or sys.stdout)
    try:
        config = load(config_path)
    except MailgateError as exc:
        for line in str(exc).splitlines():
            report.line("FAIL", "config", line)
        report.line("FAIL", "config", "fix the settings above; no other check can run without a valid configuration")
        return _summary(report)
    report.line("ok", "config", f"{config.source}: {len(config.support_addresses)} support address(es) "
                                f"({', '.join(config.support_addresses)})")
    for check in CHECKS:
        try:
            check(config, report)
        except Exception as exc:  # noqa: BLE001 - a check that crashes is a failed check, reported on its line
            report.line("FAIL", check.__name__.removeprefix("check_").replace("_", " "), f"{type(exc).__name__}: {exc}")
    return _summary(report)


def _summary(report: Report) -> int:
    print(f"{report.ok} ok, {report.warned} warning(s), {report.failed} failed", file=report.out)
    return 1 if report.failed else 0


# -- files ---------------------------------------------------------------------------------------------


def check_rules(config: Config, report: Report) -> None:
    from .rules import check_ruleset, summary

    path = config.path(config.rules)
    if not path.exists():
        report.line("ok", "rules", f"{path} does not exist: built-in defaults (no rules, no teams, no SLA policies)")
        return
    ruleset, problems = check_ruleset(path)
    if problems or ruleset is None:
        for p in problems:
            report.line("FAIL", "rules", str(p))
        report.line("FAIL", "rules", f"{path}: {len(problems)} problem(s); a running daemon keeps its last good rules")
        return
    report.line("ok", "rules", f"{path}: {summary(ruleset)}")


def check_templates(config: Config, report: Report) -> None:
    from .compose import Composer

    folder = config.path(config.templates)
    try:
        composer = Composer(folder if folder.is_dir() else None, config.domain)
    except MailgateError as exc:
        for line in str(exc).splitlines():
            report.line("FAIL", "templates", line)
        return
    where = f"{folder} (over the built-in ones)" if folder.is_dir() else "built-in templates"
    report.line("ok", "templates", f"{where}: {len(composer.names)} compiled")


def check_database(config: Config, report: Report) -> None:
    from .store import probe

    try:
        report.line("ok", "database", probe(config.path(config.database)))
    except MailgateError as exc:
        report.line("FAIL", "database", f"{exc}; the daemon needs to write there (check the path, owner and free space)")


# -- network ------------------------------------------------------------------------------------------


def check_smtp_listener(config: Config, report: Report) -> None:
    smtp = config.smtp
    what = f"smtp {smtp.host}:{smtp.port}"
    if not smtp.enabled:
        report.line("ok", "smtp", "listener disabled (smtp.enabled: false)")
        return
    if smtp.tls_cert:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(config.path(smtp.tls_cert)), str(config.path(smtp.tls_key)) if smtp.tls_key else None)
            report.line("ok", f"{what} tls", f"certificate {config.path(smtp.tls_cert)} loads; STARTTLS offered")
        except (OSError, ssl.SSLError) as exc:
            report.line("FAIL", f"{what} tls", f"cannot load smtp.tls_cert/tls_key: {exc}")
    if os.environ.get("LISTEN_FDS"):
        report.line("ok", what, "a socket is passed by systemd (mailgate.socket); host and port are set there")
        return
    try:
        with socket.create_connection((smtp.host, smtp.port), timeout=3) as s:
            s.settimeout(3)
            greeting = s.recv(512).decode("ascii", "replace").strip()
        report.line("ok", what, f"in use, answering {greeting[:60]!r} (the running daemon?)")
        return
    except OSError:
        pass
    family = socket.AF_INET6 if ":" in smtp.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((smtp.host, smtp.port))
        report.line("ok", what, "free to listen on")
    except OSError as exc:
        if exc.errno == errno.EACCES:
            report.line("warn", what, "needs privileges to bind; under systemd, mailgate.socket binds it for the daemon")
        else:
            report.line("FAIL", what, f"cannot listen: {exc.strerror}; change smtp.host/smtp.port or free the port")


def check_outgoing(config: Config, report: Report) -> None:
    if config.relay.host:
        check_relay(config, report)
    else:
        check_maildir(config, report)


def check_maildir(config: Config, report: Report) -> None:
    path = config.path(config.maildir)
    what = f"maildir {path}"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        report.line("FAIL", what, f"{existing} is not a folder; set `maildir` to a folder the daemon can write, or a relay.host")
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        report.line("FAIL", what, f"{existing} is not writable; fix its owner/mode or set relay.host")
        return
    if existing == path:
        probe = (path / "tmp" if (path / "tmp").is_dir() else path) / f".mailgate-check-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            report.line("FAIL", what, f"cannot write: {exc.strerror}; fix its owner/mode or set relay.host")
            return
        report.line("ok", what, "writable; outgoing mail (acks, notifications) is written here (no relay.host set)")
    else:
        report.line("ok", what, f"will be created under {existing} (writable); no relay.host set")


def check_relay(config: Config, report: Report) -> None:
    r = config.relay
    what = f"relay {r.host}:{r.port} ({r.tls})"
    steps: list[str] = []
    try:
        transport = RelayTransport(config)  # reads relay.password_file
    except MailgateError as exc:
        report.line("FAIL", what, str(exc).splitlines()[0])
        return
    try:
        client = _relay_session(transport, steps)
    except smtplib.SMTPAuthenticationError as exc:
        report.line("FAIL", what, f"{', '.join(steps)}; AUTH as {r.username!r} refused ({exc.smtp_code} {_text(exc.smtp_error)}): "
                                  "check relay.username and relay.password / password_file")
        return
    except ssl.SSLCertVerificationError as exc:
        report.line("FAIL", what, f"{', '.join(steps) or 'connect'}; TLS certificate not trusted: {exc.verify_message}: "
                                  "use the relay's real host name, or install its CA")
        return
    except (ssl.SSLError, smtplib.SMTPNotSupportedError) as exc:
        report.line("FAIL", what, f"{', '.join(steps) or 'connect'}; TLS failed: {exc}: check relay.tls (implicit is usually port 465)")
        return
    except smtplib.SMTPResponseException as exc:
        report.line("FAIL", what, f"{', '.join(steps) or 'connect'}; the relay answered {exc.smtp_code} {_text(exc.smtp_error)}")
        return
    except MailgateError as exc:
        report.line("FAIL", what, str(exc))
        return
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        report.line("FAIL", what, f"{', '.join(steps) or 'connect'} failed: {reason}: check relay.host, relay.port and that "
                                  "the relay accepts connections from this machine")
        return
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    report.line("ok", what, ", ".join(steps) + " (no mail sent)")


def _relay_session(transport: RelayTransport, steps: list[str]) -> smtplib.SMTP:
    """The relay's handshake, step by step so a failure says how far it got."""
    r = transport.relay
    context = ssl.create_default_context()
    if r.tls == "implicit":
        client: smtplib.SMTP = smtplib.SMTP_SSL(r.host, r.port, timeout=min(r.timeout, 15.0), context=context)
        steps.append("TLS ok")
    else:
        client = smtplib.SMTP(r.host, r.port, timeout=min(r.timeout, 15.0))
    code, _ = client.ehlo()
    if code != 250:
        raise smtplib.SMTPResponseException(code, b"EHLO refused")
    steps.append("EHLO ok")
    if r.tls == "starttls":
        if not client.has_extn("starttls"):
            client.quit()
            raise MailgateError("EHLO ok; no STARTTLS offered: fix the relay, or set relay.tls: none only for a trusted "
                                "local relay")
        client.starttls(context=context)
        client.ehlo()
        steps.append("STARTTLS ok")
    if r.username:
        client.login(r.username, transport.password)
        steps.append(f"AUTH ok as {r.username}")
    return client


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_imap(config: Config, report: Report) -> None:
    try:
        from .sources.imap import ImapSource
    except ImportError as exc:  # pragma: no cover - imapclient missing
        if config.imap:
            report.line("FAIL", "imap", f"cannot load the IMAP source: {exc}")
        return
    for account in config.imap:
        what = f"imap {account.label} {account.host}:{account.port} ({account.tls})"
        # check() only connects, logs in and selects: it never touches the store.
        result = ImapSource(account, None, config=config).check()  # type: ignore[arg-type]
        detail = result.detail.removeprefix(f"imap {account.label}: ")
        report.line("ok" if result.ok else "FAIL", what, detail)


CHECKS: tuple[Callable[[Config, Report], None], ...] = (check_rules, check_templates, check_database, check_smtp_listener,
                                                        check_outgoing, check_imap)
