"""One logged-in IMAP connection for an account: TLS mode, password or OAuth2 (XOAUTH2) login, and errors in plain words."""

from __future__ import annotations

import ast
import imaplib
import ipaddress
import logging
import socket
import ssl
import subprocess
from collections.abc import Callable

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from ..config import Config, ImapAccount, read_secret_file
from ..errors import MailgateError


class AuthenticationFailed(MailgateError):
    """The server refused the password or the OAuth2 token."""


class TokenCommandFailed(MailgateError):
    """The OAuth2 token command failed, timed out or printed nothing."""


class ConnectionLost(MailgateError):
    """The server closed the connection (BYE or end of stream)."""


class _XOAuth2:
    """The XOAUTH2 SASL exchange: send the bearer token, answer an error challenge with an empty line."""

    def __init__(self, user: str, token: str):
        self.initial = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        self.steps = 0
        self.server_error = ""

    def __call__(self, challenge: bytes) -> bytes:
        self.steps += 1
        if self.steps == 1:
            return self.initial
        self.server_error = challenge.decode("utf-8", "replace")  # JSON like {"status":"401",...}
        return b""


def server_text(exc: BaseException) -> str:
    """The server's words from an imapclient/imaplib error (which often arrive as a bytes repr)."""
    text = str(exc.args[0] if exc.args else exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("utf-8", "replace")
    elif text.startswith(("b'", 'b"')):
        try:
            text = ast.literal_eval(text).decode("utf-8", "replace")
        except (ValueError, SyntaxError, AttributeError):
            pass
    return text.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ImapConnector:
    """Opens connections to one account and says in plain words what went wrong."""

    def __init__(self, account: ImapAccount, config: Config, log: logging.Logger, timeout: float, token_timeout: float):
        self.account = account
        self.config = config
        self.log = log
        self.timeout = timeout
        self.token_timeout = token_timeout
        self.label = account.label

    @property
    def where(self) -> str:
        return f"{self.account.host}:{self.account.port}"

    def connect(self, opened: Callable[[IMAPClient], None] = lambda _client: None) -> IMAPClient:
        """A logged-in client; `opened` sees the client before login (so a stuck login can be cut on shutdown)."""
        a = self.account
        timeout = SocketTimeout(connect=min(self.timeout, 30.0), read=self.timeout)
        context = ssl.create_default_context()
        if a.tls == "implicit":
            client = IMAPClient(a.host, a.port, ssl=True, ssl_context=context, timeout=timeout)
        else:
            client = IMAPClient(a.host, a.port, ssl=False, timeout=timeout)
        opened(client)
        try:
            if a.tls == "starttls":
                client.starttls(context)  # a failure raises: never fall back to plain text
            elif a.tls == "none" and not _is_loopback(a.host):
                self.log.warning("imap %s: tls is 'none' for non-loopback host %s: password and mail cross the network "
                                 "in clear text", self.label, a.host)
            self._login(client)
        except BaseException:
            self.close(client)
            raise
        return client
    def _login(self, client: IMAPClient) -> None:
        a = self.account
        if a.oauth2_token_command:
            token = self._token()
            mech = _XOAuth2(a.username, token)
            try:
                client.sasl_login("XOAUTH2", mech)
            except LoginError as exc:
                extra = f" ({mech.server_error})" if mech.server_error else ""
                raise AuthenticationFailed(f"OAuth2 token rejected for user {a.username} at {self.where}: "
                                           f"{server_text(exc)}{extra} (is the token expired or revoked?)") from None
            return
        password = a.password
        if a.password_file:
            password = read_secret_file(self.config, a.password_file, f"IMAP account {self.label}: password_file")
        try:
            client.login(a.username, password)
        except LoginError as exc:
            raise AuthenticationFailed(
                f"authentication failed for user {a.username} at {self.where}: {server_text(exc)}") from None

    def _token(self) -> str:
        cmd = self.account.oauth2_token_command
        try:
            proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=self.token_timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TokenCommandFailed(f"OAuth2 token command timed out after {self.token_timeout:g} s: {cmd}") from None
        except OSError as exc:
            raise TokenCommandFailed(f"OAuth2 token command could not be run ({exc}): {cmd}") from None
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
            raise TokenCommandFailed(f"OAuth2 token command exited with status {proc.returncode} ({err}): {cmd}")
        lines = proc.stdout.strip().splitlines()
        if not lines or not lines[0].strip():
            raise TokenCommandFailed(f"OAuth2 token command printed no token: {cmd}")
        return lines[0].strip()

    @staticmethod
    def close(client: IMAPClient) -> None:
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - the connection is often gone already
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def unexpected(exc: BaseException) -> bool:
        """An error that is not about the network, the server or our settings: worth a traceback in the log."""
        return not isinstance(exc, (MailgateError, OSError, IMAPClientError, imaplib.IMAP4.error))

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, (MailgateError,)):
            return str(exc)
        if isinstance(exc, ssl.SSLError):
            return f"TLS failure with {self.where}: {exc.reason or exc}"
        if isinstance(exc, ssl.CertificateError):
            return f"TLS certificate of {self.where} not accepted: {exc}"
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"timed out talking to {self.where}"
        if isinstance(exc, ConnectionRefusedError):
            return f"cannot connect to {self.where}: connection refused"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve {self.account.host}: {exc.strerror or exc}"
        if isinstance(exc, OSError):
            return f"connection to {self.where} failed: {exc.strerror or exc}"
        if isinstance(exc, imaplib.IMAP4.abort):
            return f"connection to {self.where} lost: {server_text(exc)}"
        if isinstance(exc, IMAPClientError):
            return f"server {self.where} said: {server_text(exc)}"
        return f"unexpected {type(exc).__name__}: {exc}"
