"""IMAP intake against a real Dovecot: IDLE and polling, move/flag after commit, restarts, UIDVALIDITY, size, auth, storage."""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from mailgate.config import MiB, ImapAccount
from mailgate.sources import ImapSource
from mailgate.store import Store

from dovecot import Dovecot  # the fixtures `dovecot` and `dovecot_no_idle` come from conftest's pytest_plugins

LOGGER = "mailgate.imap.test"


def message(n: int, body: str = "Hello, my printer is on fire.", extra: bytes = b"") -> bytes:
    return (f"From: Customer {n} <c{n}@example.org>\r\nTo: support@example.com\r\nSubject: Help {n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n{body}\r\n").encode() + extra


def account(server: Dovecot, **kw: object) -> ImapAccount:
    base = ImapAccount(name="t", host=server.host, port=server.port, tls="none", username="support",
                       password="secret", poll_interval=1.0)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "m.db")
    yield s
    s.close()


def wait_until(pred: Callable[[], object], timeout: float, step: float = 0.02) -> float:
    """Seconds until pred() is true; fails the test after timeout."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


@contextmanager
def running(source: ImapSource) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        t0 = time.monotonic()
        thread.join(5)
        assert not thread.is_alive(), "run() did not return after stop was set"
        assert time.monotonic() - t0 < 2.5, "stop took longer than ~1 s to interrupt IDLE/polling"


def spooled(store: Store) -> list[dict]:
    return store.query("SELECT id, source, peer, source_ref, raw, mail_from, rcpt_to FROM spool ORDER BY id")


def message_ids(store: Store) -> list[str]:
    """The Message-IDs of the spool rows, in spool order."""
    out = []
    for r in spooled(store):
        m = re.search(rb"Message-ID: <([^>]+)>", r["raw"])
        assert m, r["raw"][:200]
        out.append(m.group(1).decode())
    return out


def watching(caplog: pytest.LogCaptureFixture, n: int = 1) -> Callable[[], bool]:
    return lambda: sum("watching on" in r.getMessage() for r in caplog.records) >= n


@pytest.fixture(autouse=True)
def _log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


def src(server: Dovecot, store: Store, **kw: object) -> ImapSource:
    opts = {k: kw.pop(k) for k in list(kw) if k in ("backoff_base", "storage_retry", "rng", "on_spooled")}
    return ImapSource(account(server, **kw), store, log=logging.getLogger(LOGGER), **opts)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------


def test_idle_append_is_spooled_within_2s_then_moved(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    assert "Processed" not in dovecot.folders()
    woken: list[int] = []
    source = src(dovecot, store, poll_interval=60.0, on_spooled=woken.append)
    with running(source):
        wait_until(watching(caplog), 5)
        assert "with IDLE" in caplog.text
        raw = message(1)
        dovecot.append(raw)
        took = wait_until(lambda: len(spooled(store)) == 1, 2.0)
        wait_until(lambda: dovecot.uids("Processed") and not dovecot.uids("INBOX"), 2.0)
    row = spooled(store)[0]
    uidvalidity = dovecot.uidvalidity("INBOX")
    assert (row["source"], row["peer"], row["mail_from"], row["rcpt_to"]) == ("imap", "t/INBOX", None, "[]")
    assert row["source_ref"] == f"imap:t/INBOX/{uidvalidity}/1"
    assert bytes(row["raw"]) == raw
    assert woken == [row["id"]]
    assert "Processed" in dovecot.folders()
    assert store.imap_state("t", "INBOX") == (uidvalidity, 1)
    print(f"APPEND -> spool with IDLE: {took:.3f} s")


def test_polling_without_idle_within_one_poll_interval(dovecot_no_idle: Dovecot, store: Store,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = dovecot_no_idle  # advertises neither IDLE nor MOVE: polling, and COPY + \Deleted + UID EXPUNGE
    with running(src(server, store, poll_interval=1.0)):
        wait_until(watching(caplog), 5)
        assert "polling every 1 s" in caplog.text
        server.append(message(1))
        wait_until(lambda: len(spooled(store)) == 1, 1.0 + 0.5)
        wait_until(lambda: server.uids("Processed") == [1] and server.uids("INBOX") == [], 2.0)
        time.sleep(1.2)  # another poll: nothing doubled
    assert len(spooled(store)) == 1


@pytest.mark.parametrize("flag", ["\\Seen", "$MailgateDone"])
def test_flag_after_commit(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture, flag: str) -> None:
    old = dovecot.append(message(0), flags=[flag.encode()])  # carried the flag before mailgate came: not fetched
    with running(src(dovecot, store, after="flag", flag=flag)):
        wait_until(watching(caplog), 5)
        dovecot.append(message(1))
        dovecot.append(message(2), flags=[b"\\Seen"])  # a person read it first: still new to mailgate
        wait_until(lambda: len(spooled(store)) == 2, 3.0)
        wait_until(lambda: all(flag.encode() in f for f in dovecot.flags().values()), 2.0)
        time.sleep(1.2)  # a safety re-scan passes (poll_interval 1 s): nothing spooled twice
    assert message_ids(store) == ["m1@example.org", "m2@example.org"]
    assert dovecot.uids("INBOX") == [old, old + 1, old + 2], "flag mode leaves messages in place"
    assert "Processed" not in dovecot.folders()
    if flag != "\\Seen":  # fetched with BODY.PEEK[]: nothing was marked read by mailgate
        assert b"\\Seen" not in dovecot.flags()[old + 1]


def test_dovecot_restart_mid_session_nothing_lost_or_doubled(dovecot: Dovecot, store: Store,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with running(src(dovecot, store, backoff_base=0.2, poll_interval=30.0)):
        wait_until(watching(caplog), 5)
        for n in (1, 2):
            dovecot.append(message(n))
        wait_until(lambda: len(spooled(store)) == 2, 3)
        dovecot.stop()
        dovecot.deliver_offline(message(3))  # arrives while the IMAP server is down
        wait_until(lambda: "next try in" in caplog.text, 5)
        time.sleep(0.5)
        dovecot.start()
        dovecot.append(message(4))
        wait_until(lambda: len(spooled(store)) == 4, 10)
        wait_until(lambda: len(dovecot.uids("Processed")) == 4, 3)
        time.sleep(0.5)
    assert sorted(message_ids(store)) == [f"m{n}@example.org" for n in (1, 2, 3, 4)]
    assert dovecot.uids("INBOX") == []
    assert "connected again" in caplog.text


def test_uidvalidity_change_rescans_and_skips_nothing(dovecot: Dovecot, store: Store,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Flag mode keeps messages in the folder and searches "UID > last": the case where a stale UID would skip mail.
    folder = "Support"
    dovecot.append(message(0), folder=folder)
    with running(src(dovecot, store, folders=(folder,), after="flag", flag="$MailgateDone", backoff_base=0.2)):
        wait_until(watching(caplog), 5)
        for n in (1, 2):
            dovecot.append(message(n), folder=folder)
        wait_until(lambda: len(spooled(store)) == 3, 3)
        old_validity, old_last = store.imap_state("t", folder)  # type: ignore[misc]
        assert old_last == 3
        with dovecot.client() as c:
            c.delete_folder(folder)
            c.create_folder(folder)
        dovecot.append(message(9), folder=folder)  # new mail with UID 1 <= old last UID 3
        dovecot.append(message(1), folder=folder)  # an old message restored into the new folder
        wait_until(lambda: {"m9@example.org"} <= set(message_ids(store)) and len(spooled(store)) >= 5, 6)
        time.sleep(1.2)
    new_validity = dovecot.uidvalidity(folder)
    assert new_validity != old_validity
    assert "UIDVALIDITY changed" in caplog.text
    ids = message_ids(store)
    assert set(ids) == {"m0@example.org", "m1@example.org", "m2@example.org", "m9@example.org"}, "nothing skipped"
    # m1 is spooled twice (new source_ref, new UIDVALIDITY); the pipeline drops the second copy by Message-ID,
    # which the end-to-end tests check at ticket level. Here: one spool row per (UIDVALIDITY, UID), no more.
    refs = [r["source_ref"] for r in spooled(store)]
    assert len(refs) == len(set(refs)) == 5
    assert store.imap_state("t", folder) == (new_validity, 2)


def test_20_mib_message_is_spooled(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkr\r\n"
    raw = message(20, extra=line * (20 * MiB // len(line)))
    assert len(raw) > 20 * MiB - 100
    with running(src(dovecot, store, max_message_size=25 * MiB)):
        wait_until(watching(caplog), 5)
        dovecot.append(raw)
        wait_until(lambda: store.query("SELECT count(*) AS n FROM spool")[0]["n"] == 1, 15)
        wait_until(lambda: dovecot.uids("Processed") == [1], 5)
    row = store.query("SELECT size, sha256 FROM spool")[0]
    assert row["size"] == len(raw)


def test_oversize_message_stays_with_one_warning_and_blocks_nothing(dovecot: Dovecot, store: Store,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    big = message(1, body="x" * 200_000)
    dovecot.append(big)
    dovecot.append(message(2))
    with running(src(dovecot, store, max_message_size=100_000, poll_interval=0.5)):
        wait_until(lambda: len(spooled(store)) == 1, 3)
        dovecot.append(message(3))
        wait_until(lambda: len(spooled(store)) == 2, 3)
        time.sleep(1.5)  # several safety re-scans
    assert message_ids(store) == ["m2@example.org", "m3@example.org"]
    assert dovecot.uids("INBOX") == [1], "the oversize message stays in the mailbox"
    warnings = [r for r in caplog.records if "over max_message_size" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "UID 1 is" in warnings[0].getMessage()


def test_wrong_password_clear_error_and_backoff(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    source = src(dovecot, store, password="wrong", backoff_base=0.3, rng=random.Random(7))
    check = source.check()
    assert not check.ok
    assert f"authentication failed for user support at 127.0.0.1:{dovecot.port}: " in check.detail
    assert "AUTHENTICATIONFAILED" in check.detail
    with running(source):
        wait_until(lambda: sum("next try in" in r.getMessage() for r in caplog.records) >= 4, 8)
    lines = [r for r in caplog.records if "next try in" in r.getMessage()]
    for r in lines:
        assert r.levelno == logging.ERROR
        assert f"imap t/INBOX: authentication failed for user support at 127.0.0.1:{dovecot.port}: " in r.getMessage()
    delays = [float(re.search(r"next try in ([\d.]+) s", r.getMessage()).group(1)) for r in lines]  # type: ignore[union-attr]
    for n, d in enumerate(delays[:4], start=1):  # equal jitter: in [cap/2, cap], cap = base * 2^(n-1)
        cap = 0.3 * 2 ** (n - 1)
        assert cap / 2 - 0.051 <= d <= cap + 0.051, (n, d)
    gaps = [b.created - a.created for a, b in zip(lines, lines[1:4])]  # backoff + Dovecot's failure reply time
    for gap, delay in zip(gaps, delays):
        assert gap >= delay - 0.05, f"a retry came before its logged backoff: waited {gap:.2f} s, logged {delay:.2f} s"
    assert delays[3] > 2 * delays[0], f"backoff should grow: {delays}"
    assert store.query("SELECT count(*) AS n FROM spool")[0]["n"] == 0


def test_storage_unavailable_leaves_message_unflagged_then_retries(dovecot: Dovecot, store: Store, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    store.call(lambda: store.conn.execute("PRAGMA busy_timeout=200"))  # fail fast while another writer holds the lock
    holder = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with running(src(dovecot, store, after="flag", flag="\\Seen", storage_retry=0.5)):
        wait_until(watching(caplog), 5)
        holder.execute("BEGIN EXCLUSIVE")  # the database cannot be written (as "locked" / "disk full" would)
        dovecot.append(message(1))
        wait_until(lambda: "storage unavailable" in caplog.text, 3)
        time.sleep(0.3)
        assert dovecot.flags() == {1: ()}, "not flagged: the message was not committed"
        assert spooled(store) == []
        holder.execute("ROLLBACK")
        wait_until(lambda: len(spooled(store)) == 1, 3)
        wait_until(lambda: dovecot.flags() == {1: (b"\\Seen",)}, 2)
    holder.close()
    assert message_ids(store) == ["m1@example.org"]


def test_oauth2_xoauth2_token_command(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # The fixture's passwd-file accepts the password as bearer token (Dovecot checks XOAUTH2 tokens via passdb).
    ok = src(dovecot, store, password="", oauth2_token_command="printf 'secret\\n'")
    assert ok.check().ok, ok.check().detail
    failing = src(dovecot, store, password="", oauth2_token_command="echo 'refresh token revoked' >&2; exit 3")
    detail = failing.check().detail
    assert "OAuth2 token command exited with status 3 (refresh token revoked)" in detail
    expired = src(dovecot, store, password="", oauth2_token_command="echo expired-token", backoff_base=0.05)
    detail = expired.check().detail
    assert not expired.check().ok and f"OAuth2 token rejected for user support at 127.0.0.1:{dovecot.port}" in detail
    with running(expired):
        wait_until(lambda: sum("OAuth2 token rejected" in r.getMessage() for r in caplog.records) >= 2, 5)
    assert all(r.levelno == logging.ERROR for r in caplog.records if "OAuth2" in r.getMessage())
    with running(ok):
        wait_until(watching(caplog), 5)
        dovecot.append(message(1))
        wait_until(lambda: len(spooled(store)) == 1, 2)


def test_several_folders_are_watched_at_once(dovecot: Dovecot, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    dovecot.append(message(0), folder="Sales")
    with running(src(dovecot, store, folders=("INBOX", "Sales"))):
        wait_until(watching(caplog, 2), 5)
        dovecot.append(message(1), folder="Sales")
        dovecot.append(message(2))
        wait_until(lambda: len(spooled(store)) == 3, 2)
    assert {r["peer"] for r in spooled(store)} == {"t/INBOX", "t/Sales"}
    assert len(dovecot.uids("Processed")) == 3


def test_check_reports_folders_and_mode(dovecot: Dovecot, store: Store) -> None:
    result = src(dovecot, store).check()
    assert result.ok
    assert result.detail.startswith(f"imap t: logged in to 127.0.0.1:{dovecot.port} as support; INBOX (0 messages); IDLE")
    missing = src(dovecot, store, folders=("Nope",)).check()
    assert not missing.ok and "cannot select folder 'Nope'" in missing.detail
    dovecot.stop()
    down = src(dovecot, store).check()
    assert not down.ok and "connection refused" in down.detail
