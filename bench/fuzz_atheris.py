"""Coverage-guided fuzzing of `parse()` and the safety screen with atheris (libFuzzer): prints what it tried.

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz_atheris.py -atheris_runs=20000          # or -max_total_time=60
    .venv/bin/python bench/fuzz_atheris.py corpus_dir/ -max_total_time=300   # keep interesting inputs

Seeds: the shared corpus (../shared/corpus/**/*.eml) when present. Any exception escaping `parse()` or `screen()` is a
bug: libFuzzer stops and writes the input to crash-<sha1>. Not a test (no timed asserts); the pytest fuzz test is
tests/test_safety_fuzz.py.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
import time
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from mailgate.message import Inbound, parse
    from mailgate.screen import screen

from datetime import datetime, timezone

OWN = frozenset({"support@example.test"})
NOW = datetime.now(timezone.utc)
STATS = {"inputs": 0, "defects": 0, "bounces": 0, "no_auto_reply": 0}
STARTED = time.monotonic()


def one_input(data: bytes) -> None:
    STATS["inputs"] += 1
    mail = parse(data)
    assert mail.message_id
    verdict = screen(mail, Inbound(raw=data, source="ingest", received_at=NOW, mail_from=None), OWN, "mx.example.test")
    STATS["defects"] += bool(mail.defects)
    STATS["bounces"] += verdict.is_bounce
    STATS["no_auto_reply"] += not verdict.may_auto_reply


def report() -> None:
    took = time.monotonic() - STARTED
    print(f"\natheris: {STATS['inputs']} inputs in {took:.1f} s ({STATS['inputs'] / max(took, 1e-9):.0f}/s); "
          f"with defects {STATS['defects']}, bounces {STATS['bounces']}, no auto-reply {STATS['no_auto_reply']}", file=sys.stderr)


def main() -> None:
    argv = list(sys.argv)
    seeds = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
    if seeds.is_dir() and not any(not a.startswith("-") for a in argv[1:]):
        work = Path(tempfile.mkdtemp(prefix="mailgate-atheris-"))  # libFuzzer grows its corpus here, seeded with real mail
        for i, eml in enumerate(sorted(seeds.rglob("*.eml"))[:500]):
            (work / f"seed{i:04d}").write_bytes(eml.read_bytes()[:65536])
        argv.append(str(work))
    if not any(a.startswith("-max_len") for a in argv):
        argv.append("-max_len=65536")
    atexit.register(report)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
