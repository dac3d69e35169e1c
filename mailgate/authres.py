"""Authentication-Results headers (RFC 8601) read and judged: pass, fail or none for the From domain, from a trusted server only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AuthResult:
    """One resinfo: method (dkim, spf, dmarc, ...), result (pass, fail, ...) and its properties."""

    method: str
    result: str
    props: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str:
        lname = name.lower()
        for key, value in self.props:
            if key == lname:
                return value
        return ""


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results header: authserv-id ("" when the header names none) and results."""

    authserv_id: str
    results: tuple[AuthResult, ...]


def _lex(value: str) -> list[list[tuple[str, bool]]]:
    """Split a header value into ';'-separated segments of items, dropping (nested) comments.

    An item is (text, had_quoted_part); quoted strings are unquoted and glued to adjacent text.
    """
    segments: list[list[tuple[str, bool]]] = [[]]
    buf: list[str] = []
    quoted = False
    i, n = 0, len(value)

    def flush() -> None:
        nonlocal buf, quoted
        if buf or quoted:
            segments[-1].append(("".join(buf), quoted))
        buf, quoted = [], False

    while i < n:
        ch = value[i]
        if ch == "(":
            flush()
            depth = 1
            i += 1
            while i < n and depth:
                c = value[i]
                if c == "\\":
                    i += 1
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                i += 1
            continue
        if ch == '"':
            quoted = True
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            i += 1
            continue
        if ch == ";":
            flush()
            segments.append([])
        elif ch.isspace():
            flush()
        else:
            buf.append(ch)
        i += 1
    flush()
    return [_join_equals(seg) for seg in segments]


def _join_equals(items: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Glue `a = b`, `a= b`, `a =b` into one item `a=b` (CFWS around '=' is allowed)."""
    out: list[tuple[str, bool]] = []
    for text, q in items:
        if out and not q and text.startswith("=") or out and out[-1][0].endswith("=") and not out[-1][1]:
            prev, pq = out.pop()
            out.append((prev + text, pq or q))
        else:
            out.append((text, q))
    return out


def parse_authentication_results(value: str) -> AuthResults:
    """Parse one Authentication-Results header value; never raises."""
    segments = _lex(value)
    authserv_id = ""
    first = segments[0] if segments else []
    if first and "=" not in first[0][0]:
        authserv_id = first[0][0].lower()
        segments = segments[1:]
    results: list[AuthResult] = []
    for seg in segments:
        if not seg or "=" not in seg[0][0]:
            continue  # "none", or a stray token
        method, _, result = seg[0][0].partition("=")
        props = []
        for text, _q in seg[1:]:
            key, eq, val = text.partition("=")
            if eq:
                props.append((key.lower(), val))
        results.append(AuthResult(method.split("/")[0].lower(), result.lower(), tuple(props)))
    return AuthResults(authserv_id, tuple(results))


def _aligned(signing: str, from_domain: str) -> bool:
    signing = signing.lower().strip().lstrip("@").rpartition("@")[2]
    if not signing or not from_domain:
        return False
    return signing == from_domain or from_domain.endswith("." + signing) or signing.endswith("." + from_domain)


def authentication_verdict(headers: Iterable[str], trusted_authserv_id: str, from_domain: str) -> tuple[str, str]:
    """("pass"|"fail"|"none", reason) from Authentication-Results values, trusting only one authserv-id."""
    if not trusted_authserv_id:
        return "none", "no trusted authserv-id configured"
    trusted = trusted_authserv_id.lower()
    results: list[AuthResult] = []
    seen = 0
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed.authserv_id == trusted:
            seen += 1
            results.extend(parsed.results)
    if not seen:
        return "none", f"no Authentication-Results from {trusted_authserv_id}"
    from_domain = from_domain.lower()
    for r in results:
        if r.method == "dkim" and r.result == "pass" and _aligned(r.prop("header.d") or r.prop("header.i"), from_domain):
            return "pass", f"dkim=pass aligned with {from_domain}"
        if r.method == "dmarc" and r.result == "pass":
            hfrom = r.prop("header.from").lower()
            if from_domain and (not hfrom or hfrom == from_domain):
                return "pass", f"dmarc=pass for {from_domain}"
    for r in results:
        if r.method == "dmarc" and r.result == "fail":
            hfrom = r.prop("header.from").lower()
            if not hfrom or hfrom == from_domain:
                return "fail", "dmarc=fail"
    fails = sorted({r.method for r in results if r.method in ("dkim", "spf") and r.result == "fail"})
    passes = [r for r in results if r.method in ("dkim", "spf", "dmarc") and r.result == "pass"]
    if fails and not passes:
        return "fail", "=fail, ".join(fails) + "=fail and nothing passed"
    return "none", "no aligned pass and no failure"
