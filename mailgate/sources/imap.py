"""IMAP intake: watch an account's folders (IDLE, else polling), spool each new message, and only then move/flag/delete it.

One connection per watched folder (IDLE watches only the selected folder). For each new message: check
RFC822.SIZE, fetch with BODY.PEEK[] (nothing is marked read before commit), `store.spool()` (committed),
`on_spooled(id)`, then dispose of it per `account.after`, then remember the UID with its UIDVALIDITY.
A crash between spool and dispose re-delivers; the `source_ref` check and the pipeline's Message-ID
dedupe make that harmless. Network, TLS and authentication failures reconnect with exponential backoff
and jitter, one log line each; nothing raises out of `run()`.
"""

from __future__ import annotations

import imaplib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import DELETED

from ..config import Config, ImapAccount
from ..errors import ConfigError, StorageUnavailable
from ..message import Inbound
from ..store import Store
from .imap_login import AuthenticationFailed, ConnectionLost, ImapConnector, TokenCommandFailed, server_text

IDLE_RENEW = 25 * 60.0  # RFC 2177: clients should re-issue IDLE at least every 29 minutes
IDLE_TICK = 1.0  # longest wait inside IDLE before `stop` is looked at again
STORAGE_RETRY = 5.0  # seconds before a folder is re-scanned after StorageUnavailable
GIVE_UP_AFTER = 3  # attempts before a message that keeps failing is left in the mailbox
SEARCH_CHUNK = 500
BATCH_MESSAGES = 50
BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    """What `mailgate check` prints for one IMAP account: ok or not, and one clear line."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class _Candidate:
    uid: int
    size: int


class ImapSource:
    """Fetches new mail from one IMAP account into the spool; `run(stop)` in a thread, `check()` for `mailgate check`."""

    def __init__(self, account: ImapAccount, store: Store, on_spooled: Callable[[int], None] = lambda _id: None, *,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger = logging.getLogger("mailgate.imap"),
                 config: Config | None = None, backoff_base: float = 2.0, backoff_max: float = 300.0,
                 timeout: float = 60.0, token_timeout: float = 30.0, idle_renew: float = IDLE_RENEW,
                 storage_retry: float = STORAGE_RETRY, rng: random.Random | None = None):
        self.account = account
        self.store = store
        self.on_spooled = on_spooled
        self.clock = clock
        self.log = log
        self.config = config or Config()  # resolves password_file relative to the config file's folder
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.token_timeout = token_timeout
        self.idle_renew = idle_renew
        self.storage_retry = storage_retry
        self.rng = rng or random.Random()
        self.label = account.label
        self._left: set[tuple[str, int, int]] = set()  # (folder, uidvalidity, uid) deliberately left in the mailbox
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()
        self._active: dict[str, IMAPClient] = {}  # folder -> its live connection (closed on stop when stuck)
        self.connector = ImapConnector(account, self.config, log, timeout, token_timeout)

    @property
    def where(self) -> str:
        return self.connector.where

    # -- public API -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Watch every configured folder (one connection and thread each) until `stop` is set; never raises.

        A folder thread blocked in a slow network call (login penalty, hung server) is unblocked by closing its
        socket shortly after `stop`, so shutdown stays bounded.
        """
        threads = [threading.Thread(target=self._run_folder, args=(f, stop), name=f"imap-{self.label}-{f}", daemon=True)
                   for f in self.account.folders or ("INBOX",)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and not stop.wait(IDLE_TICK):
            pass
        deadline = time.monotonic() + IDLE_TICK / 2
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = list(self._active.values())
        for client in stuck:
            try:
                client.socket().shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(self.timeout)
            if t.is_alive():  # stuck in a TCP connect; it is a daemon thread and ends with its timeout
                self.log.warning("imap %s: %s still busy at shutdown; leaving it behind", self.label, t.name)

    def check(self) -> CheckResult:
        """Connect, log in (running the OAuth2 token command) and select each folder; one line saying how it went."""
        try:
            client = self._connect()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return CheckResult(False, f"imap {self.label}: {self.connector.describe(exc)}")
        folder = ""
        try:
            parts = []
            for folder in self.account.folders or ("INBOX",):
                info = client.select_folder(folder, readonly=True)
                parts.append(f"{folder} ({int(info.get(b'EXISTS', 0))} messages)")
            mode = ("IDLE" if self.account.idle and client.has_capability("IDLE")
                    else f"polling every {self.account.poll_interval:g} s")
            after = {"move": f"move to {self.account.move_to}", "flag": f"flag {self.account.flag}",
                     "delete": "delete"}[self.account.after]
            return CheckResult(True, f"imap {self.label}: logged in to {self.where} as {self.account.username}; "
                                     f"{', '.join(parts)}; {mode}; after commit: {after}")
        except Exception as exc:  # noqa: BLE001
            what = f"cannot select folder {folder!r}: " if isinstance(exc, IMAPClientError) and folder else ""
            return CheckResult(False, f"imap {self.label}: {what}{self.connector.describe(exc)}")
        finally:
            self.connector.close(client)

    # -- connection -----------------------------------------------------------------------------

    def _connect(self, folder: str | None = None) -> IMAPClient:
        def opened(client: IMAPClient) -> None:
            if folder is not None:
                with self._lock:
                    self._active[folder] = client

        return self.connector.connect(opened)

    # -- the loop per folder ----------------------------------------------------------------------

    def _run_folder(self, folder: str, stop: threading.Event) -> None:
        failures = 0

        def healthy() -> None:
            nonlocal failures
            if failures:
                self.log.info("imap %s/%s: connected again to %s after %d failed attempt(s)", self.label, folder,
                              self.where, failures)
            failures = 0

        while not stop.is_set():
            client: IMAPClient | None = None
            try:
                client = self._connect(folder)
                self._watch(client, folder, stop, healthy)
            except Exception as exc:  # noqa: BLE001 - nothing leaves run(); every failure is one log line
                if stop.is_set():
                    break  # connection closed by run() on stop: not a failure
                failures += 1
                delay = self._delay(failures)
                level = logging.ERROR if isinstance(exc, (AuthenticationFailed, TokenCommandFailed, ConfigError)) \
                    else logging.WARNING
                self.log.log(level, "imap %s/%s: %s; next try in %.1f s (attempt %d)", self.label, folder,
                             self.connector.describe(exc), delay, failures,
                             exc_info=exc if self.connector.unexpected(exc) else None)
                stop.wait(delay)
            finally:
                with self._lock:
                    self._active.pop(folder, None)
                if client is not None:
                    self.connector.close(client)

    def _delay(self, failures: int) -> float:
        """Exponential backoff with equal jitter: [d/2, d] where d = base * 2^(n-1), capped."""
        d = min(self.backoff_max, self.backoff_base * 2 ** min(failures - 1, 30))
        return d / 2 + self.rng.uniform(0, d / 2)

    def _watch(self, client: IMAPClient, folder: str, stop: threading.Event, healthy: Callable[[], None]) -> None:
        a = self.account
        use_idle = a.idle and client.has_capability("IDLE")
        complete = self._scan(client, folder)
        healthy()
        self.log.info("imap %s/%s: watching on %s with %s", self.label, folder, self.where,
                      "IDLE" if use_idle else f"polling every {a.poll_interval:g} s")
        if not use_idle:
            while not stop.wait(a.poll_interval if complete else min(a.poll_interval, self.storage_retry)):
                client.noop()
                complete = self._scan(client, folder)
            return
        client.idle()
        started = last_scan = self.clock()
        settle = True  # see below
        quick_empty = 0
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                responses = client.idle_check(timeout=IDLE_TICK)
                # imapclient swallows end-of-stream inside idle_check: an empty answer that comes back at once,
                # several times running, means the socket is readable but closed.
                if not responses and time.monotonic() - t0 < IDLE_TICK / 4:
                    quick_empty += 1
                    if quick_empty >= 3:
                        raise ConnectionLost(f"connection to {self.where} closed by the server")
                else:
                    quick_empty = 0
                for r in responses:
                    if r and r[0] == b"BYE":
                        raise ConnectionLost(f"server {self.where} said BYE: "
                                             + b" ".join(x for x in r[1:] if isinstance(x, bytes)).decode(errors="replace"))
                new_mail = any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)
                now = self.clock()
                wait = a.poll_interval if complete else min(a.poll_interval, self.storage_retry)
                if new_mail or now - last_scan >= wait or now - started >= self.idle_renew:
                    client.idle_done()
                    complete = self._scan(client, folder)
                    client.idle()
                    started = last_scan = self.clock()
                    settle = True
                elif settle and now - started >= IDLE_TICK:
                    # Dovecot can miss a message committed while IDLE starts (seen in bench/imap.py: no EXISTS
                    # until DONE, up to its 30 s check interval). One short first IDLE, ended with DONE, makes
                    # the server report what arrived meanwhile; then IDLE for long.
                    settle = False
                    _text, pending = client.idle_done()
                    if any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in pending):
                        complete = self._scan(client, folder)
                        last_scan = self.clock()
                        settle = True
                    client.idle()
                    started = self.clock()
        finally:
            if stop.is_set():
                try:
                    client.idle_done()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass

    # -- scanning a folder --------------------------------------------------------------------------

    def _scan(self, client: IMAPClient, folder: str) -> bool:
        """Spool and dispose of every new message in the folder; False when storage trouble cut it short.

        Ends with a SELECT whose UIDNEXT equals the one before the last pass: a message that arrived during a
        pass was announced (EXISTS) in a command's response, which IDLE would not repeat, so look again until
        the mailbox stood still; anything later is announced to the IDLE that follows.
        """
        info = client.select_folder(folder)
        while True:
            before = (info.get(b"UIDVALIDITY"), info.get(b"UIDNEXT"))
            found, complete = self._scan_once(client, folder, info)
            if not complete:
                return False
            info = client.select_folder(folder)
            if not found and (info.get(b"UIDVALIDITY"), info.get(b"UIDNEXT")) == before:
                return True

    def _scan_once(self, client: IMAPClient, folder: str, info: dict) -> tuple[bool, bool]:
        """One pass over the selected folder: (whether new messages were handled, whether storage held up)."""
        uidvalidity = int(info[b"UIDVALIDITY"])
        try:
            state = self.store.imap_state(self.label, folder)
        except StorageUnavailable as exc:
            self.log.warning("imap %s/%s: storage unavailable (%s); messages stay on the server, retry in %g s",
                             self.label, folder, exc, self.storage_retry)
            return False, False
        last = 0
        fresh = state is None
        if state is not None and state[0] != uidvalidity:
            self.log.warning("imap %s/%s: UIDVALIDITY changed from %d to %d: re-scanning the whole folder "
                             "(messages already ticketed are recognised by Message-ID)", self.label, folder,
                             state[0], uidvalidity)
            fresh = True
        elif state is not None:
            last = state[1]
        uids = self._search(client, last, fresh)
        if not uids:
            return False, True
        candidates = self._sizes(client, uids)
        settled: set[int] = set()
        complete = True
        batch: list[_Candidate] = []
        batch_bytes = 0
        for cand in candidates:
            key = (folder, uidvalidity, cand.uid)
            if key in self._left:
                settled.add(cand.uid)
                continue
            if cand.size > self.account.max_message_size:
                self._left.add(key)
                settled.add(cand.uid)
                self.log.warning("imap %s/%s: message UID %d is %d bytes, over max_message_size %d: left in the "
                                 "mailbox, not fetched", self.label, folder, cand.uid, cand.size,
                                 self.account.max_message_size)
                continue
            if batch and (len(batch) >= BATCH_MESSAGES or batch_bytes + cand.size > BATCH_BYTES):
                if not self._process(client, folder, uidvalidity, batch, settled):
                    complete = False
                    break
                self._advance(folder, uidvalidity, last, candidates, settled)
                batch, batch_bytes = [], 0
            batch.append(cand)
            batch_bytes += cand.size
        else:
            if batch and not self._process(client, folder, uidvalidity, batch, settled):
                complete = False
        self._advance(folder, uidvalidity, last, candidates, settled)
        left = {u for (f, v, u) in list(self._left) if f == folder and v == uidvalidity}  # list(): other folders add
        return bool(settled - left), complete

    def _search(self, client: IMAPClient, last: int, fresh: bool) -> list[int]:
        a = self.account
        if a.after in ("move", "delete"):
            # The folder holds only what is not processed yet (and what was deliberately left).
            criteria: list[str | bytes] = ["UNDELETED"]
        elif fresh:
            # First look (or UIDVALIDITY changed): everything not carrying our flag yet.
            system = {"\\seen": "UNSEEN", "\\flagged": "UNFLAGGED", "\\answered": "UNANSWERED", "\\draft": "UNDRAFT"}
            criteria = ([system[a.flag.lower()]] if a.flag.lower() in system else ["UNKEYWORD", a.flag]) + ["UNDELETED"]
        else:
            # Everything after the last UID handled, whatever its flags (a person may have read it already).
            criteria = ["UID", f"{last + 1}:*", "UNDELETED"]
        # "n:*" always matches the highest UID, even below n: filter.
        return sorted(u for u in client.search(criteria) if fresh or a.after != "flag" or u > last)

    def _sizes(self, client: IMAPClient, uids: Sequence[int]) -> list[_Candidate]:
        out: list[_Candidate] = []
        for i in range(0, len(uids), SEARCH_CHUNK):
            chunk = uids[i:i + SEARCH_CHUNK]
            data = client.fetch(chunk, ["RFC822.SIZE"])
            out.extend(_Candidate(uid, int(data[uid][b"RFC822.SIZE"])) for uid in chunk if uid in data)
        return out

    def _ref(self, folder: str, uidvalidity: int, uid: int) -> str:
        return f"imap:{self.label}/{folder}/{uidvalidity}/{uid}"

    def _process(self, client: IMAPClient, folder: str, uidvalidity: int, batch: Sequence[_Candidate],
                 settled: set[int]) -> bool:
        """Spool a batch and dispose of what was spooled; False when storage is unavailable (stop the scan)."""
        to_dispose: list[int] = []
        storage_ok = True
        need: list[int] = []
        try:
            for cand in batch:
                if self.store.spool_ids_for_source_ref(self._ref(folder, uidvalidity, cand.uid)):
                    to_dispose.append(cand.uid)  # spooled before a crash or lost connection: only dispose
                else:
                    need.append(cand.uid)
            bodies = self._fetch_bodies(client, folder, uidvalidity, need)
            for uid in need:
                raw = bodies.get(uid)
                if raw is None:
                    continue
                inbound = Inbound(raw=raw, source="imap", received_at=datetime.now(timezone.utc),
                                  peer=f"{self.label}/{folder}", mail_from=None, rcpt_to=(),
                                  source_ref=self._ref(folder, uidvalidity, uid))
                spool_id = self.store.spool(inbound)
                to_dispose.append(uid)
                try:
                    self.on_spooled(spool_id)
                except Exception:  # noqa: BLE001 - a callback bug must not stop intake
                    self.log.exception("imap %s/%s: on_spooled(%d) failed", self.label, folder, spool_id)
        except StorageUnavailable as exc:
            storage_ok = False
            self.log.warning("imap %s/%s: storage unavailable (%s); unspooled messages stay on the server "
                             "unflagged, retry in %g s", self.label, folder, exc, self.storage_retry)
        if to_dispose:
            self._dispose(client, folder, uidvalidity, to_dispose, settled)
        return storage_ok

    def _fetch_bodies(self, client: IMAPClient, folder: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, bytes]:
        """BODY.PEEK[] for the uids; a message the server will not give is counted and, after a few tries, left."""
        if not uids:
            return {}
        try:
            data = client.fetch(uids, ["BODY.PEEK[]"])
        except imaplib.IMAP4.abort:
            raise
        except IMAPClientError as exc:
            if len(uids) > 1:  # isolate the one that fails; the others go on
                out: dict[int, bytes] = {}
                for uid in uids:
                    out.update(self._fetch_bodies(client, folder, uidvalidity, [uid]))
                return out
            self._failed(folder, uidvalidity, uids[0], f"FETCH failed: {server_text(exc)}")
            return {}
        out = {}
        for uid in uids:
            body = data.get(uid, {}).get(b"BODY[]")
            if body is None:
                if uid in data or self._exists(client, uid):
                    self._failed(folder, uidvalidity, uid, "the server returned no body")
                continue  # vanished: expunged by someone else meanwhile
            out[uid] = bytes(body)
        return out

    @staticmethod
    def _exists(client: IMAPClient, uid: int) -> bool:
        return bool(client.search(["UID", str(uid)]))

    def _failed(self, folder: str, uidvalidity: int, uid: int, why: str) -> None:
        key = (folder, uidvalidity, uid)
        with self._lock:
            n = self._attempts[key] = self._attempts.get(key, 0) + 1
        if n >= GIVE_UP_AFTER:
            self._left.add(key)
            self.log.error("imap %s/%s: message UID %d failed %d times (%s): left in the mailbox; the messages behind "
                           "it go on", self.label, folder, uid, n, why)
        else:
            self.log.warning("imap %s/%s: message UID %d: %s (attempt %d, will retry)", self.label, folder, uid, why, n)

    def _dispose(self, client: IMAPClient, folder: str, uidvalidity: int, uids: list[int], settled: set[int]) -> None:
        a = self.account
        try:
            if a.after == "move":
                self._ensure_folder(client, a.move_to)
                if client.has_capability("MOVE"):
                    client.move(uids, a.move_to)
                else:
                    client.copy(uids, a.move_to)
                    client.add_flags(uids, [DELETED], silent=True)
                    self._expunge(client, uids)
            elif a.after == "flag":
                client.add_flags(uids, [a.flag], silent=True)
            else:
                client.add_flags(uids, [DELETED], silent=True)
                self._expunge(client, uids)
        except imaplib.IMAP4.abort:
            raise
        except IMAPClientError as exc:
            for uid in uids:
                self._failed(folder, uidvalidity, uid, f"spooled, but {a.after} failed: {server_text(exc)}")
            return
        settled.update(uids)

    @staticmethod
    def _expunge(client: IMAPClient, uids: list[int]) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()  # without UIDPLUS only a plain EXPUNGE exists (removes every \Deleted message)

    def _ensure_folder(self, client: IMAPClient, name: str) -> None:
        if not client.folder_exists(name):
            try:
                client.create_folder(name)
                self.log.info("imap %s: created folder %s for processed mail", self.label, name)
            except IMAPClientError:
                if not client.folder_exists(name):  # created by a sibling connection meanwhile is fine
                    raise

    def _advance(self, folder: str, uidvalidity: int, last: int, candidates: Iterable[_Candidate],
                 settled: set[int]) -> None:
        """Remember the highest UID below which every candidate is settled (spooled + disposed, or left)."""
        mark = last
        for cand in candidates:  # sorted by UID
            if cand.uid not in settled and (folder, uidvalidity, cand.uid) not in self._left:
                mark = max(last, cand.uid - 1)  # everything below it was handled or did not match the search
                break
            mark = max(mark, cand.uid)
        state = None
        try:
            state = self.store.imap_state(self.label, folder)
            if state is None or state[0] != uidvalidity or state[1] != mark:
                self.store.set_imap_state(self.label, folder, uidvalidity, mark)
        except StorageUnavailable as exc:
            self.log.warning("imap %s/%s: could not remember UID %d (%s); will re-check those messages",
                             self.label, folder, mark, exc)

