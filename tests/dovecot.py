"""A throwaway Dovecot IMAP server for tests: `dovecot` fixture (loopback port, passwd-file users, Maildir in tmp, no TLS).

conftest.py registers it (``pytest_plugins = ["dovecot"]``), so tests just ask for the fixture. Needs Debian's
``dovecot-imapd``; without it the tests skip, except in CI (``CI=true``) where they fail. As root, the mail processes run as the ``dovenull``-style system user
named by ``MAILGATE_TEST_DOVECOT_USER`` (default: ``dovecot`` when it exists, else ``nobody``), because
Dovecot refuses mail access as uid 0; as a normal user everything runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient

DOVECOT = "/usr/sbin/dovecot"
INSTALL_HINT = "dovecot not installed: apt-get install dovecot-imapd"

# Dovecot 2.3 default post-login capabilities, without IDLE (for the polling tests) or MOVE (COPY fallback).
BASE_CAPABILITIES = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
                     "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
                     "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
                     "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY LITERAL+ SPECIAL-USE")


@dataclass(frozen=True)
class DovecotUser:
    """A mailbox user of the throwaway server; ``password`` is also accepted as an XOAUTH2 bearer token."""

    name: str
    password: str


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never 143 or 993)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (143, 993):
            return port


class Dovecot:
    """One Dovecot master process (``dovecot -F``) with its own config, state, Maildirs and log under ``root``."""

    def __init__(self, root: Path, users: Sequence[DovecotUser] = (DovecotUser("support", "secret"),),
                 idle: bool = True, move: bool = True, port: int | None = None):
        self.root = root
        self.users = tuple(users)
        self.idle = idle
        self.move = move
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.config_path = root / "dovecot.conf"
        self.log_path = root / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # -- setup --------------------------------------------------------------------------------

    def _run_as(self) -> tuple[str, int, int]:
        if os.geteuid() != 0:
            pw = pwd.getpwuid(os.geteuid())
            return pw.pw_name, pw.pw_uid, pw.pw_gid
        name = os.environ.get("MAILGATE_TEST_DOVECOT_USER") or ("dovecot" if _user_exists("dovecot") else "nobody")
        pw = pwd.getpwnam(name)
        return pw.pw_name, pw.pw_uid, pw.pw_gid

    def _write_config(self) -> None:
        user, uid, gid = self._run_as()
        group = grp.getgrgid(gid).gr_name
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.root / "mail", uid, gid)
            os.chown(self.root / "state", uid, gid)
        users = "".join(f"{u.name}:{{PLAIN}}{u.password}:{uid}:{gid}::{self.root}/mail/{u.name}::\n" for u in self.users)
        (self.root / "users").write_text(users)
        caps = BASE_CAPABILITIES + (" IDLE" if self.idle else "") + (" MOVE" if self.move else "")
        internal = f"""
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
"""
        self.config_path.write_text(f"""# written by tests/dovecot.py; throwaway
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = mailgate-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
{internal}
imap_capability = {caps}
imap_idle_notify_interval = 2 mins
shutdown_clients = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.root}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  user = $default_internal_user
}}
service auth-worker {{
  user = $default_internal_user
}}
service stats {{
  unix_listener stats-reader {{
    user = {user}
  }}
  unix_listener stats-writer {{
    user = {user}
  }}
}}
""")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it greets on its port."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "ab"),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port} within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until the port is closed."""
        if self.proc is None:
            return
        # Dovecot's master can exit before its imap children, which then linger with client connections open.
        # A stopped server must drop its clients, so signal the whole process group (the master leads it).
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout)
        self.proc = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                return

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for name in ("dovecot.log", "stderr.log"):
            p = self.root / name
            if p.exists():
                text += p.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- client helpers -------------------------------------------------------------------------

    def client(self, user: DovecotUser | None = None) -> IMAPClient:
        """A logged-in imapclient connection (close it with ``logout()``, or use it as a context manager)."""
        user = user or self.users[0]
        c = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        c.login(user.name, user.password)
        return c

    def append(self, raw: bytes, folder: str = "INBOX", flags: Sequence[bytes] = (), user: DovecotUser | None = None) -> int:
        """APPEND one message (creating the folder when missing); returns its UID."""
        with self.client(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, raw, flags=tuple(flags))
        # b'[APPENDUID <uidvalidity> <uid>] Append completed.'
        return int(resp.split(b"]")[0].split()[-1])

    def deliver_offline(self, raw: bytes, folder: str = "INBOX", user: DovecotUser | None = None) -> None:
        """Drop a message straight into the Maildir (works while the server is stopped, like an MTA's LDA)."""
        user = user or self.users[0]
        maildir = self.root / "mail" / user.name / "Maildir"
        if folder != "INBOX":
            maildir = maildir / f".{folder.replace('/', '.')}"
        _user, uid, gid = self._run_as()
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.P{os.getpid()}.mailgate-test"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        if os.geteuid() == 0:
            home = self.root / "mail" / user.name
            for p in (home, home / "Maildir", maildir, maildir / "tmp", maildir / "new", maildir / "cur", tmp):
                os.chown(p, uid, gid)
        tmp.rename(maildir / "new" / name)

    def folders(self, user: DovecotUser | None = None) -> list[str]:
        with self.client(user) as c:
            return sorted(name for _flags, _sep, name in c.list_folders())

    def uids(self, folder: str = "INBOX", criteria: str | list[str] = "ALL", user: DovecotUser | None = None) -> list[int]:
        """UIDs in a folder matching a SEARCH ([] when the folder does not exist)."""
        with self.client(user) as c:
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            return sorted(c.search(criteria))

    def flags(self, folder: str = "INBOX", user: DovecotUser | None = None) -> dict[int, tuple[bytes, ...]]:
        with self.client(user) as c:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            return {uid: tuple(d[b"FLAGS"]) for uid, d in c.fetch(uids, ["FLAGS"]).items()} if uids else {}

    def uidvalidity(self, folder: str = "INBOX", user: DovecotUser | None = None) -> int:
        with self.client(user) as c:
            return int(c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def dovecot_available() -> bool:
    return Path(DOVECOT).exists() and Path("/usr/lib/dovecot/imap").exists()


def require_dovecot() -> None:
    """Skip (or, in CI, fail) when Dovecot is not installed."""
    if dovecot_available():
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{INSTALL_HINT} (CI=true: IMAP tests must run, not skip)")
    pytest.skip(INSTALL_HINT)


def make_dovecot(**kw: object) -> Iterator[Dovecot]:
    """Start a Dovecot in a fresh directory under /tmp (traversable by the mail user when root); stop and remove it after."""
    require_dovecot()
    root = Path(tempfile.mkdtemp(prefix="mailgate-dovecot-"))
    server = Dovecot(root, **kw)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with IDLE and MOVE, user ``support`` / password ``secret``."""
    yield from make_dovecot()


@pytest.fixture
def dovecot_no_idle() -> Iterator[Dovecot]:
    """A running Dovecot that does not advertise IDLE (polling) nor MOVE (COPY + \\Deleted + UID EXPUNGE)."""
    yield from make_dovecot(idle=False, move=False)
