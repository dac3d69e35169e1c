"""Daemon settings (mailgate.yaml) as frozen dataclasses, each field with a default and help; `load()` finds and reads them.

Search order: `--config FILE`, else `$MAILGATE_CONFIG`, else `./mailgate.yaml`, else embedded defaults
(SQLite `./mailgate.db`, SMTP on 127.0.0.1:2525, `support@localhost`, acks into `./outbox-maildir/`).
Every error names file:line:column and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, Location, Problem
from .yamlfile import LocatedDict, YamlProblem, load_located, nearest, value_where, where_of

MiB = 1024 * 1024


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its default and the one-line help that `config --show` and the docs print."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP listener."""

    enabled: bool = setting(True, "run the SMTP listener")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(2525, "port to listen on (25 needs the systemd socket or root)")
    hostname: str = setting("", "name announced in the greeting; default: the machine's name")
    max_message_size: int = setting(25 * MiB, "largest message accepted, in bytes (552 5.3.4 beyond)")
    max_recipients: int = setting(50, "most RCPT TO per message (452 4.5.3 beyond)")
    max_sessions: int = setting(100, "most concurrent SMTP sessions (421 beyond)")
    tls_cert: str = setting("", "PEM certificate for STARTTLS; empty: no STARTTLS")
    tls_key: str = setting("", "PEM private key for STARTTLS")


@dataclass(frozen=True)
class RelayConfig:
    """Where outgoing mail goes. With no host, mail is written into the Maildir instead."""

    host: str = setting("", "SMTP relay host; empty: deliver into `maildir`")
    port: int = setting(587, "relay port")
    tls: str = setting("starttls", "none | starttls | implicit", choices=("none", "starttls", "implicit"))
    username: str = setting("", "AUTH user; empty: no AUTH", secret=False)
    password: str = setting("", "AUTH password", secret=True)
    password_file: str = setting("", "file holding the AUTH password (first line)")
    timeout: float = setting(30.0, "seconds before a relay connection or command gives up")


@dataclass(frozen=True)
class ImapAccount:
    """One IMAP mailbox to fetch from."""

    name: str = setting("", "label used in logs and source references; default: user@host")
    host: str = setting("", "IMAP server")
    port: int = setting(993, "IMAP port")
    tls: str = setting("implicit", "implicit (993) | starttls | none (loopback only)", choices=("implicit", "starttls", "none"))
    username: str = setting("", "login name")
    password: str = setting("", "password", secret=True)
    password_file: str = setting("", "file holding the password (first line)")
    oauth2_token_command: str = setting("", "command printing an OAuth2 access token (XOAUTH2)")
    folders: tuple[str, ...] = setting(("INBOX",), "folders to watch")
    after: str = setting("move", "after commit: move | flag | delete", choices=("move", "flag", "delete"))
    move_to: str = setting("Processed", "folder for `after: move` (created when missing)")
    flag: str = setting("\\Seen", "flag or keyword for `after: flag`")
    poll_interval: float = setting(60.0, "seconds between polls when IDLE is unavailable")
    idle: bool = setting(True, "use IDLE when the server offers it")
    max_message_size: int = setting(25 * MiB, "larger messages stay in the mailbox with a warning")

    @property
    def label(self) -> str:
        return self.name or f"{self.username}@{self.host}"


@dataclass(frozen=True)
class OutboxConfig:
    """Delivery of what mailgate sends."""

    max_attempts: int = setting(12, "attempts before a message is given up (then kept as failed)")
    retry_base: float = setting(30.0, "seconds before the first retry; doubles each time")
    retry_max: float = setting(3600.0, "longest wait between retries, in seconds")


@dataclass(frozen=True)
class AutoReplyConfig:
    """Limits on mail mailgate sends automatically (acknowledgements), against loops and floods."""

    daily_cap_per_sender: int = setting(5, "most acknowledgements to one address in 24 hours")
    breaker_mails: int = setting(10, "circuit breaker: automatic mail to one address stops after this many ...")
    breaker_minutes: int = setting(60, "... within this many minutes (logged and recorded as an event)")
    strangers_by_reference: str = setting(
        "follow_up", "a non-participant quoting our Message-ID: follow_up (never receives replies) | new_ticket",
        choices=("follow_up", "new_ticket"))


@dataclass(frozen=True)
class DkimConfig:
    """DKIM signing of the mail mailgate sends (acknowledgements, notifications, relays); off unless a key is given."""

    private_key_file: str = setting("", "PEM private key (RSA) to sign with; empty: mail goes out unsigned")
    selector: str = setting("mailgate", "selector: publish the public key as TXT at <selector>._domainkey.<domain>")
    domain: str = setting("", "signing domain (d=); default: the first support address's domain, with which it must align")

    @property
    def enabled(self) -> bool:
        return bool(self.private_key_file)


@dataclass(frozen=True)
class RetentionConfig:
    """How long raw message bytes are kept (the parsed text, attachments and the ticket stay)."""

    raw_days_after_close: int = setting(
        0, "clear the raw bytes of a closed ticket's messages this many days after it closed (sha256 kept); 0: keep forever")


@dataclass(frozen=True)
class MetricsConfig:
    """The optional Prometheus listener (text format at /metrics); off unless a port is given."""

    host: str = setting("127.0.0.1", "address the metrics listener binds to")
    port: int = setting(0, "port for http://host:port/metrics; 0: no metrics listener")


@dataclass(frozen=True)
class Config:
    """Everything `mailgate serve` needs to know about where and how it runs."""

    database: str = setting("mailgate.db", "SQLite database file")
    database_busy_timeout: float = setting(10.0, "seconds to wait for a locked database before answering 451 / exit 75")
    support_addresses: tuple[str, ...] = setting(("support@localhost",), "addresses mail is accepted for")
    support_name: str = setting("Support", "display name on mail we send")
    subject_tag: str = setting("Support", "the word in subject tags like [Support #12]")
    secret: str = setting("", "HMAC secret for reply tokens; empty: one is generated and kept in the database", secret=True)
    secret_file: str = setting("", "file holding the reply-token secret (first line), instead of `secret`")
    rules: str = setting("rules.yaml", "routing rules file (missing file: built-in defaults)")
    templates: str = setting("templates", "template folder (missing: built-in templates)")
    maildir: str = setting("outbox-maildir", "Maildir for outgoing mail when no relay host is set")
    log_format: str = setting("text", "text | json", choices=("text", "json"))
    trusted_authserv_id: str = setting("", "authserv-id whose Authentication-Results are trusted")
    smtp: SmtpConfig = setting(SmtpConfig(), "SMTP listener")
    relay: RelayConfig = setting(RelayConfig(), "outgoing relay")
    outbox: OutboxConfig = setting(OutboxConfig(), "outgoing retries")
    imap: tuple[ImapAccount, ...] = setting((), "IMAP accounts to fetch from")
    autoreply: AutoReplyConfig = setting(AutoReplyConfig(), "limits on automatic mail")
    dkim: DkimConfig = setting(DkimConfig(), "DKIM signing of outgoing mail (off by default)")
    retention: RetentionConfig = setting(RetentionConfig(), "raw message retention (`mailgate db prune`; the daemon runs it daily)")
    metrics: MetricsConfig = setting(MetricsConfig(), "Prometheus metrics listener")
    source: str = setting("<embedded defaults>", "where this configuration was read from", internal=True)
    base_dir: str = setting(".", "folder relative paths are resolved against", internal=True)

    def path(self, value: str) -> Path:
        """A configured path, resolved against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def domain(self) -> str:
        return self.support_addresses[0].rpartition("@")[2] or "localhost"


# ---------------------------------------------------------------------------------------------
# Loading


def find_config_path(explicit: str | None, env: typing.Mapping[str, str]) -> Path | None:
    """Where the config comes from: explicit path, $MAILGATE_CONFIG, ./mailgate.yaml, or None (defaults)."""
    if explicit:
        return Path(explicit)
    if env.get("MAILGATE_CONFIG"):
        return Path(env["MAILGATE_CONFIG"])
    local = Path("mailgate.yaml")
    return local if local.exists() else None


def load(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Find and load the configuration; raise ConfigError naming file:line:column on any problem."""
    env = os.environ if env is None else env
    path = find_config_path(explicit, env)
    if path is None:
        return Config()
    if not path.exists():
        raise ConfigError(Problem(Location(str(path)), "config file not found (check --config or $MAILGATE_CONFIG)"))
    try:
        data = load_located(path)
    except YamlProblem as exc:
        raise ConfigError(exc.problem) from None
    if data is None:
        data = LocatedDict()
        data.where, data.key_where, data.value_where = Location(str(path)), {}, {}
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError(Problem(where_of(data), "the top level must be a mapping of settings"))
    values = _fill(Config, data, problems, str(path))
    if problems:
        raise ConfigError(problems)
    values["source"] = str(path)
    values["base_dir"] = str(path.resolve().parent)
    config = Config(**values)
    _check(config, data, problems, str(path))
    if problems:
        raise ConfigError(problems)
    return config


def _fill(cls: type, data: dict, problems: list[Problem], path: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(Problem(where_of(data, key), f"unknown setting {key!r}{nearest(key, fields)}"))
            continue
        converted = _convert(hints[key], value, value_where(data, key), problems, path, key)
        if converted is not _INVALID:
            choices = fields[key].metadata.get("choices")
            if choices and converted not in choices:
                problems.append(Problem(value_where(data, key), f"{key} must be one of {', '.join(choices)}; got {converted!r}"))
                continue
            out[key] = converted
    return out


_INVALID = object()


def _convert(hint: Any, value: Any, where: Location, problems: list[Problem], path: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(Problem(where, f"{key} must be a mapping of settings"))
            return _INVALID
        return hint(**_fill(hint, value, problems, path))
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if isinstance(value, str) and item_hint is str:
            value = [value]
        if not isinstance(value, list):
            problems.append(Problem(where, f"{key} must be a list"))
            return _INVALID
        items = []
        item_where = getattr(value, "item_where", [where] * len(value))
        for item, iw in zip(value, item_where):
            c = _convert(item_hint, item, iw, problems, path, key)
            if c is not _INVALID:
                items.append(c)
        return tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(Problem(where, f"{key} must be true or false; got {value!r}"))
        return _INVALID
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(Problem(where, f"{key} must be a whole number; got {value!r}"))
        return _INVALID
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(Problem(where, f"{key} must be a number; got {value!r}"))
        return _INVALID
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(Problem(where, f"{key} must be text; got {value!r}"))
        return _INVALID
    if isinstance(hint, types.UnionType):  # pragma: no cover - no such fields yet
        return value
    return value


def _check(config: Config, data: dict, problems: list[Problem], path: str) -> None:
    for addr in config.support_addresses:
        if "@" not in addr or addr.strip() != addr:
            problems.append(Problem(value_where(data, "support_addresses"), f"support address {addr!r} is not an address like support@example.com"))
    if not config.support_addresses:
        problems.append(Problem(value_where(data, "support_addresses"), "at least one support address is needed"))
    dkim_domain = config.dkim.domain.lower().strip(".")
    if dkim_domain and not (config.domain.lower() == dkim_domain or config.domain.lower().endswith("." + dkim_domain)):
        problems.append(Problem(value_where(data, "dkim"), f"dkim.domain {config.dkim.domain!r} does not align with the support"
                                f" address domain {config.domain!r} (use that domain or a parent of it)"))
    for acct in config.imap:
        if not acct.host:
            problems.append(Problem(value_where(data, "imap"), f"IMAP account {acct.label!r}: host is required"))
        if not (acct.password or acct.password_file or acct.oauth2_token_command):
            problems.append(Problem(value_where(data, "imap"), f"IMAP account {acct.label!r}: give password, password_file or oauth2_token_command"))


def reply_token_secret(config: Config) -> str:
    """The configured reply-token secret ('' when none is configured: the store then keeps a generated one)."""
    if config.secret:
        return config.secret
    return read_secret_file(config, config.secret_file, "secret_file") if config.secret_file else ""


def read_secret_file(config: Config, value: str, what: str) -> str:
    """The first line of a secret file, or ConfigError saying which file and why."""
    try:
        return config.path(value).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(Problem(Location(str(config.path(value))), f"{what}: cannot read the secret file ({exc})")) from None


def settings(config: Config) -> list[tuple[str, Any, dataclasses.Field]]:
    """Every effective setting as (dotted name, value, field), nested sections and IMAP accounts flattened."""
    out: list[tuple[str, Any, dataclasses.Field]] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            name = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, name + ".")
            elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
                for i, item in enumerate(value):
                    walk(item, f"{name}[{i}].")
            else:
                out.append((name, value, f))

    walk(config, "")
    return out


def describe(config: Config, mask: bool = True) -> list[str]:
    """`key = value` lines for every effective setting, secrets masked: what `mailgate config --show` prints."""
    lines: list[str] = [f"# read from {config.source}"]
    for name, value, f in settings(config):
        shown = "********" if (mask and f.metadata.get("secret") and value) else value
        if isinstance(shown, tuple):
            shown = ", ".join(shown)
        lines.append(f"{name} = {shown}    # {f.metadata.get('help', '')}")
    return lines
