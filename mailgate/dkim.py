"""DKIM signing of the mail mailgate sends (dkimpy), in one place: the outbox signs each mail just before delivery.

Off unless `dkim.private_key_file` is set. The signing domain (d=) is the first support address's domain, or a
configured parent of it, so the signature aligns with the From address for DMARC. The key is read and tried
once when the outbox starts, so a missing or broken key stops the daemon at start-up with the file's name
rather than failing later on a customer's acknowledgement. Relaxed/relaxed canonicalisation survives the
header refolding that relays do; From and Subject are oversigned (a second, added From or Subject breaks it).
"""

from __future__ import annotations

import logging

import dkim as dkimpy

from .config import Config
from .errors import ConfigError, Location, Problem

log = logging.getLogger("mailgate.dkim")

SIGNED_HEADERS = (b"from", b"from", b"to", b"cc", b"reply-to", b"subject", b"subject", b"date", b"message-id", b"in-reply-to",
                  b"references", b"auto-submitted", b"mime-version", b"content-type", b"content-transfer-encoding",
                  b"resent-from", b"resent-to", b"resent-date")


class Signer:
    """Signs rendered mail with the configured key; `sign(raw)` returns the raw bytes with a DKIM-Signature on top."""

    def __init__(self, config: Config):
        settings = config.dkim
        self.domain = (settings.domain or config.domain).lower().strip(".")
        self.selector = settings.selector
        path = config.path(settings.private_key_file)
        try:
            self.key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(Problem(Location(str(path)), f"dkim.private_key_file: cannot read the key ({exc})")) from None
        try:
            self._sign(b"From: probe@" + self.domain.encode() + b"\r\nSubject: probe\r\n\r\nprobe\r\n")
        except (dkimpy.DKIMException, ValueError) as exc:  # ValueError: base64/ASN.1 garbage in the PEM
            raise ConfigError(Problem(Location(str(path)), f"dkim.private_key_file: not a usable signing key ({exc})")) from None

    def _sign(self, raw: bytes) -> bytes:
        present = {line.split(b":", 1)[0].strip().lower() for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b":" in line}
        headers = [h for h in SIGNED_HEADERS if h in present or h in (b"from", b"subject")]
        return dkimpy.sign(raw, self.selector.encode(), self.domain.encode(), self.key,
                           canonicalize=(b"relaxed", b"relaxed"), include_headers=headers)

    def sign(self, raw: bytes) -> bytes:
        """The mail with its DKIM-Signature header prepended; unsigned (logged) if dkimpy cannot sign this mail."""
        try:
            return self._sign(raw) + raw
        except (dkimpy.DKIMException, ValueError) as exc:
            log.error("dkim: could not sign a mail (sent unsigned): %s", exc)
            return raw


def signer_for(config: Config) -> Signer | None:
    """The Signer for this configuration, or None when signing is off."""
    return Signer(config) if config.dkim.enabled else None
