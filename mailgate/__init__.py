"""mailgate: an email-to-ticket daemon (SMTP/IMAP in, threaded tickets, routed, acknowledged, measured)."""

__version__ = "0.1.0"
