"""The exception tree of mailgate: every error a user can act on says what, where, and what to do.

    MailgateError
    ├── ConfigError          mailgate.yaml is wrong (carries file:line:column)
    ├── RulesError           rules.yaml is wrong (carries a list of located problems)
    ├── TemplateError        a jinja2 template fails to load or render (carries template:line)
    ├── TemporaryFailure     try again later: SMTP 451, `ingest` exit 75 (store locked, disk full)
    │   └── StorageUnavailable   the database cannot be written right now
    └── DeliveryError        the relay refused or could not be reached (``permanent`` says which)
"""

from __future__ import annotations

from dataclasses import dataclass


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""


@dataclass(frozen=True)
class Location:
    """Where a problem sits in a file: 1-based line and column (0 when unknown)."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line and self.column:
            return f"{self.path}:{self.line}:{self.column}"
        if self.line:
            return f"{self.path}:{self.line}"
        return self.path


@dataclass(frozen=True)
class Problem:
    """One located complaint about a file an admin edits."""

    where: Location
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class LocatedError(MailgateError):
    """An error about an admin-edited file, holding one or more located problems."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(LocatedError):
    """mailgate.yaml (or its environment overrides) cannot be used as written."""


class RulesError(LocatedError):
    """rules.yaml cannot be used as written; the last good rules stay live."""


class TemplateError(LocatedError):
    """A template in templates/ fails to compile or render."""


class TemporaryFailure(MailgateError):
    """The operation should be retried later (SMTP 451 4.3.0, ingest exit 75)."""


class StorageUnavailable(TemporaryFailure):
    """The database cannot be written right now (locked, read-only, disk full)."""


class DeliveryError(MailgateError):
    """Outgoing mail could not be handed to the relay; ``permanent`` tells whether to retry."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent
