"""Compare reply-text extractors (mail-parser-reply, email-reply-parser, mailgate.replytext) on the corpus: accuracy and speed.

Cases: talon standard_replies (expected NAME_reply_text or "Hello"; the same text without a trailing
"Sent from"/"-- " signature is also accepted, since we strip signatures and talon does not), talon
signature/emails/stripped (body minus expected signature), and zapier/github reply bodies plus
hand-written cases with our own expectations in tests/data/reply_expected/.
"exact" = equal after normalising whitespace; "no loss" = every expected line is still in the output.
Run: .venv/bin/python bench/reply_compare.py
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from email_reply_parser import EmailReplyParser as ErpParser  # noqa: E402
from mailparser_reply import EmailReplyParser as MprParser  # noqa: E402
from mailparser_reply.constants import MAIL_LANGUAGES  # noqa: E402

from mailgate.replytext import visible_reply  # noqa: E402
from test_replytext import first_text_plain, norm  # noqa: E402  (the tests' own reading of the corpus)

CORPUS = Path(os.environ.get("MAILGATE_CORPUS", ROOT.parent / "shared" / "corpus"))
EXPECTED = ROOT / "tests" / "data" / "reply_expected"


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    text: str
    expected: tuple[str, ...]  # any of these is right
    sender: str = ""


def _without_trailing_signature(text: str) -> str:
    return re.split(r"\n\s*(?:-- ?\n|Sent from my |Sent with )", "\n" + text.strip(), maxsplit=1)[0].strip()


def talon_cases() -> list[Case]:
    folder = CORPUS / "mailgun-talon" / "standard_replies"
    cases = []
    for eml in sorted(folder.glob("*.eml")):
        exp_file = folder / f"{eml.stem}_reply_text"
        expected = exp_file.read_text(encoding="utf-8").strip() if exp_file.exists() else "Hello"
        alts = tuple(dict.fromkeys([expected, _without_trailing_signature(expected)]))
        cases.append(Case("talon-replies", eml.stem, first_text_plain(eml.read_bytes()), alts))
    return cases


def signature_cases() -> list[Case]:
    folder = CORPUS / "mailgun-talon" / "signature" / "emails" / "stripped"
    cases = []
    for body in sorted(folder.glob("*_body")):
        stem = body.name[: -len("_body")]
        text = body.read_text(encoding="utf-8")
        sig = (folder / f"{stem}_signature").read_text(encoding="utf-8").strip()
        sender = (folder / f"{stem}_sender").read_text(encoding="utf-8").strip()
        stripped = text.strip()
        if sig and stripped.endswith(sig):
            stripped = stripped[: -len(sig)]
        cases.append(Case("talon-signature", stem, text, (stripped.strip(),), sender))
    return cases


def body_cases() -> list[Case]:
    cases = []
    for exp in sorted(EXPECTED.glob("*.txt")):
        src = CORPUS / "zapier-email-reply-parser" / exp.name
        if not src.exists():
            src = CORPUS / "github-email_reply_parser" / exp.name
        cases.append(Case("reply-bodies", exp.stem, src.read_text(encoding="utf-8"), (exp.read_text(encoding="utf-8").strip(),)))
    for inp in sorted((EXPECTED / "extra").glob("*.in")):
        exp = inp.with_suffix(".txt")
        cases.append(Case("hand-made", inp.stem, inp.read_text(encoding="utf-8"), (exp.read_text(encoding="utf-8").strip(),)))
    return cases


def all_cases() -> list[Case]:
    return talon_cases() + signature_cases() + body_cases()


def exact(out: str, case: Case) -> bool:
    return norm(out) in {norm(e) for e in case.expected}


def no_loss(out: str, case: Case) -> bool:
    have = set(norm(out).split("\n"))
    return any(all(line in have for line in norm(e).split("\n") if line) for e in case.expected)


_ALL_LANGS = [lang for lang in MAIL_LANGUAGES if lang != "david"]


def mpr_en(text: str, sender: str = "") -> str:
    msg = MprParser(languages=["en"]).read(text)
    return msg.replies[0].body if msg.replies else ""


def mpr_all(text: str, sender: str = "") -> str:
    msg = MprParser(languages=list(_ALL_LANGS)).read(text)
    return msg.replies[0].body if msg.replies else ""


def erp(text: str, sender: str = "") -> str:
    return ErpParser.parse_reply(text)


EXTRACTORS: dict[str, Callable[[str, str], str]] = {
    "email-reply-parser 0.5": erp,
    "mail-parser-reply (en)": mpr_en,
    "mail-parser-reply (all langs)": mpr_all,
    "mailgate.replytext": visible_reply,
}


def timed(fn: Callable[[str, str], str], text: str, sender: str = "") -> tuple[str, float]:
    start = time.perf_counter()
    try:
        out = fn(text, sender)
    except Exception as exc:  # a library failure counts as a wrong answer, and is shown
        out = f"<{type(exc).__name__}>"
    return out, time.perf_counter() - start


def main(verbose: bool = "-v" in sys.argv) -> None:
    cases = all_cases()
    groups = sorted({c.group for c in cases}, key=[c.group for c in cases].index)
    long_quote = (CORPUS / "github-email_reply_parser" / "email_long_quote.txt").read_text(encoding="utf-8")
    print(f"{len(cases)} cases; long quote {len(long_quote) // 1024} KB\n")
    header = f"{'extractor':30} " + " ".join(f"{g:>17}" for g in groups) + f" {'all exact':>10} {'no loss':>8} {'ms/case':>8} {'long quote':>11}"
    print(header)
    print("-" * len(header))
    for label, fn in EXTRACTORS.items():
        per_group = {g: [0, 0] for g in groups}
        total_exact = total_keep = 0
        elapsed = 0.0
        misses = []
        for case in cases:
            out, dt = timed(fn, case.text, case.sender)
            elapsed += dt
            ok = exact(out, case)
            per_group[case.group][0] += ok
            per_group[case.group][1] += 1
            total_exact += ok
            total_keep += no_loss(out, case)
            if not ok:
                misses.append((case, out))
        _, long_dt = timed(fn, long_quote)
        cells = " ".join(f"{per_group[g][0]:>8}/{per_group[g][1]:<8}" for g in groups)
        print(f"{label:30} {cells} {total_exact:>5}/{len(cases):<4} {total_keep:>4}/{len(cases):<3} {1000 * elapsed / len(cases):>8.2f} {long_dt:>10.3f}s")
        if verbose:
            for case, out in misses:
                print(f"    miss {case.group}/{case.name}: {norm(out)[:90]!r}")


def hostile() -> None:
    """Inputs that are slow for a parser: lines starting "On " (email-reply-parser's whole-text regex is cubic)."""
    print("\nhostile inputs (seconds):")
    for label, text in (
        ("400 lines 'On a b c' (3.6 KB)", "On a b c\n" * 400),
        ("20000 lines 'On a b c' (180 KB)", "On a b c\n" * 20000),
        ("20000 Outlook header pairs (280 KB)", "From: a\nTo: b\n" * 20000),
    ):
        cells = []
        for name, fn in EXTRACTORS.items():
            if name.startswith("email-reply-parser") and len(text) > 10_000:
                cells.append(f"{name}: skipped (super-linear)")
                continue
            cells.append(f"{name}: {timed(fn, text)[1]:.3f}")
        print(f"  {label:38} " + "; ".join(cells))


if __name__ == "__main__":
    main()
    hostile()
