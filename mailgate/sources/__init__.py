"""Message sources that feed the spool from outside the SMTP listener (IMAP mailboxes)."""

from .imap import CheckResult, ImapSource

__all__ = ["CheckResult", "ImapSource"]
