"""Measure mail-parser against the stdlib `email` package (and mailgate's own parse()) on the corpus: correctness and speed.

Correctness: agreement with Zammad's expected results (tests/zammad_expect.py) for from_email,
from_display_name, subject, body text (loose: HTML stripped, whitespace removed) and attachments
(every expected file name + MD5 found); crashes over every corpus file. Speed: messages per second
over every corpus file, best of a few rounds. Prints a table; asserts nothing.

    .venv/bin/python bench/parse_compare.py [--rounds N]
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mailparser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mailgate.message import parse  # noqa: E402
from zammad_expect import (  # noqa: E402
    CORPUS,
    FIELDS,
    Extract,
    agreement,
    has_user_attachments,
    load_expectation,
    zammad_pairs,
)


def _unbase64(text: str) -> bytes:
    """mail-parser hands over the wire base64 as is; decode it leniently (damaged padding repaired) so a
    damaged attachment counts against the parser only when its bytes are wrong, not as a crash."""
    clean = re.sub(r"[^A-Za-z0-9+/]", "", text)
    clean = clean[:-1] if len(clean) % 4 == 1 else clean + "=" * (-len(clean) % 4)
    return base64.b64decode(clean)


def via_mailparser(raw: bytes) -> Extract:
    """mail-parser 4.x as its README uses it: parse_from_bytes, from_, subject, text_plain/html, attachments."""
    mp = mailparser.parse_from_bytes(raw)
    name, addr = (mp.from_[0] if mp.from_ else ("", ""))
    atts = []
    for att in mp.attachments:
        payload = att["payload"]
        data = _unbase64(payload) if att["binary"] else str(payload).encode("utf-8", "surrogateescape")
        atts.append((str(att["filename"]), data))
    return Extract(
        from_email=str(addr),
        from_name=str(name),
        subject=str(mp.subject or ""),
        text="\n".join(mp.text_plain),
        html="\n".join(mp.text_html) or None,
        attachments=tuple(atts),
    )


def via_stdlib(raw: bytes) -> Extract:
    """The stdlib `email` package with policy.default, used plainly (get_body, walk, get_content)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    name = addr = ""
    from_header = msg["From"]
    if from_header is not None and getattr(from_header, "addresses", None):
        first = from_header.addresses[0]
        name, addr = first.display_name, first.addr_spec
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    atts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_filename() or part.get_content_disposition() == "attachment":
            data = part.get_payload(decode=True) or b""
            atts.append((str(part.get_filename() or ""), data))
    return Extract(
        from_email=addr,
        from_name=name,
        subject=str(msg["Subject"] or ""),
        text=str(text_part.get_content()) if text_part is not None else "",
        html=str(html_part.get_content()) if html_part is not None else None,
        attachments=tuple(atts),
    )


def via_mailgate(raw: bytes) -> Extract:
    """mailgate.message.parse(): the stdlib underneath plus mailgate's own decoding and limits."""
    return Extract.of(parse(raw))


PARSERS: dict[str, Callable[[bytes], Extract]] = {
    "mail-parser 4": via_mailparser,
    "stdlib email": via_stdlib,
    "mailgate.parse": via_mailgate,
}


def hostile_inputs() -> dict[str, bytes]:
    """Two MIME bombs: 1,000 nested multiparts, and a 30 MiB message with a 22 MiB base64 attachment."""
    nest = b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b0\n\n"
    nest += b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i - 1, i) for i in range(1, 1000))
    big = (
        b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n"
        b"--b\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(os.urandom(22 * 2**20))
        + b"--b--\n"
    )
    return {"1,000 nested multiparts": nest, "30 MiB message": big}


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".yml" and p.name != "README.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds; the best is reported")
    ap.add_argument("--show", metavar="PARSER", help="list the Zammad files where PARSER disagrees")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # mail-parser logs every defect it meets

    files = corpus_files()
    raws = [p.read_bytes() for p in files]
    pairs = [(eml.read_bytes(), load_expectation(yml), eml.name) for eml, yml in zammad_pairs()]
    with_atts = sum(1 for _, exp, _ in pairs if has_user_attachments(exp))
    mib = sum(len(r) for r in raws) / 2**20

    # timing: rounds interleave the parsers so that a busy machine weighs on all of them alike
    best = dict.fromkeys(PARSERS, float("inf"))
    crashes: dict[str, list[str]] = {label: [] for label in PARSERS}
    for round_no in range(args.rounds):
        for label, fn in PARSERS.items():
            t0 = time.perf_counter()
            for path, raw in zip(files, raws):
                try:
                    fn(raw)
                except Exception as exc:  # noqa: BLE001 - counting crashes is the point
                    if round_no == 0:
                        crashes[label].append(f"{path.relative_to(CORPUS)}: {type(exc).__name__}")
            best[label] = min(best[label], time.perf_counter() - t0)

    rows = []
    for label, fn in PARSERS.items():
        agree = dict.fromkeys(FIELDS, 0)
        att_files_ok = 0
        misses: list[str] = []
        for raw, exp, name in pairs:
            try:
                got = fn(raw)
            except Exception:  # noqa: BLE001
                misses.append(f"{name}: crash")
                continue
            verdict = agreement(exp, got)
            for k, ok in verdict.items():
                agree[k] += ok
            if has_user_attachments(exp) and verdict["attachments"]:
                att_files_ok += 1
            bad = [k for k, ok in verdict.items() if not ok]
            if bad:
                misses.append(f"{name}: {', '.join(bad)}")
        rows.append((label, agree, att_files_ok, len(crashes[label]), len(files) / best[label], mib / best[label]))
        if args.show == label:
            print(f"-- {label}: disagreements", *misses, *(f"crash {c}" for c in crashes[label]), sep="\n  ")

    n = len(pairs)
    print(f"Corpus: {len(files)} files, {mib:.1f} MiB; Zammad expectations: {n} mails ({with_atts} with attachments)")
    head = f"{'parser':16} {'from_email':>10} {'from_name':>10} {'subject':>8} {'body':>6} {'atts':>9} {'crashes':>8} {'msg/s':>7} {'MiB/s':>6}"
    print(head)
    print("-" * len(head))
    for label, agree, att_ok, crashes, rate, mibs in rows:
        print(
            f"{label:16} {agree['from_email']:>6}/{n} {agree['from_display_name']:>6}/{n} {agree['subject']:>4}/{n}"
            f" {agree['body']:>2}/{n} {att_ok:>6}/{with_atts} {crashes:>8} {rate:>7.0f} {mibs:>6.1f}"
        )
    print()
    for name, raw in hostile_inputs().items():
        cells = []
        for label, fn in PARSERS.items():
            t0 = time.perf_counter()
            try:
                fn(raw)
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001
                outcome = type(exc).__name__
            cells.append(f"{label}: {outcome} {time.perf_counter() - t0:.2f}s")
        print(f"{name:24}", " | ".join(cells))


if __name__ == "__main__":
    main()
