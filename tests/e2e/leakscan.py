"""Finding a known credential (a "canary") in text or bytes, in any of the forms it could take on its
way out: raw and case variants, any run of >= 8 of its characters, base64 and base64url at all three
byte alignments (so it is found inside base64("Bearer <token>") or base64("user:<token>") too), hex,
percent-encoding (once, twice, upper and lower case, form style), JSON \\uXXXX escapes (all or some
characters), "\\/" escapes and HTML character references.

Two layers:

- needles: encoded forms of the canary searched for literally (case-insensitively where the encoding
  does not care about case; base64 is searched exactly);
- views: the scanned text is also decoded (JSON / JS / Rust-Debug string escapes, HTML entities,
  percent-encoding, line breaks removed, all of these combined until nothing changes; base64 runs
  decoded; gzip/zlib inside base64 inflated) and each decoded view is searched for every needle
  again, which catches partial or mixed escaping, and double encodings, that no fixed needle lists.

`find_leaks(canary, data)` is the one-shot helper. `LeakScanner(canaries)` scans each text once for
many canaries (an index of 4-character pieces of every needle, looked up at every 5th position of
the text: linear in the text whatever the number of canaries),
which is what suites scanning big logs and database files want. `tail_prefix_leaks` checks whether a
(truncated) text ends with the beginning of the canary in some encoding.

This module owns the definition of "the canary leaked"; it knows nothing about vault-mcp.
"""
from __future__ import annotations

import base64
import html
import re
import urllib.parse
import zlib
from collections import defaultdict
from functools import lru_cache
from typing import Iterable

ANCHOR = 8          # every needle is at least this long
GRAM = 4            # needles are indexed by their GRAM-character pieces at offsets 0..STRIDE-1,
STRIDE = ANCHOR - GRAM + 1  # so looking at every STRIDE-th position of a text finds them all
MIN_SUBSTRING = 8   # a run of this many canary characters counts as a leak


# ---------------------------------------------------------------------------------------------
# Encodings of the canary
# ---------------------------------------------------------------------------------------------

def _b64_core(token: bytes, offset: int, urlsafe: bool) -> str:
    """The base64 characters that depend only on `token` when it starts `offset` bytes (mod 3)
    into a base64-encoded blob: whatever precedes or follows it, these characters appear verbatim."""
    pad = b"\0" * offset
    enc = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(pad + token).decode().rstrip("=")
    start = -(-8 * offset // 6)                 # first char whose 6 bits lie entirely after the pad
    end = (8 * (offset + len(token))) // 6      # chars entirely within the token
    return enc[start:end]


def _pct_all(s: str, upper: bool = True) -> str:
    return "".join(("%%%02X" if upper else "%%%02x") % b for b in s.encode())


def needles(canary: str) -> list[tuple[str, str, bool]]:
    """(label, needle, case_insensitive) for every literal form of the canary we look for."""
    out: list[tuple[str, str, bool]] = [("raw", canary, True)]
    raw = canary.encode()
    for off in range(3):
        out.append((f"base64@{off}", _b64_core(raw, off, False), False))
        url_core = _b64_core(raw, off, True)
        if url_core != out[-1][1]:
            out.append((f"base64url@{off}", url_core, False))
    out += [
        ("hex", raw.hex(), True),
        ("percent-encoded", _pct_all(canary), True),
        ("percent-encoded-twice", _pct_all(_pct_all(canary)), True),
        ("json-\\u-escaped", "".join("\\u%04x" % ord(c) for c in canary), True),
        ("html-entities", "".join("&#%d;" % ord(c) for c in canary), True),
        ("html-hex-entities", "".join("&#x%x;" % ord(c) for c in canary), True),
        ("js-\\x-escaped", "".join("\\x%02x" % b for b in raw), True),
        ("utf-16le", canary.encode("utf-16-le").decode("latin-1"), True),
        ("utf-16be", canary.encode("utf-16-be").decode("latin-1"), True),
    ]
    form = urllib.parse.quote(canary, safe="")
    if form != canary:
        out.append(("urlencoded", form, True))
        out.append(("urlencoded-twice", urllib.parse.quote(form, safe=""), True))
    if "/" in canary:
        out.append(("json-\\/-escaped", canary.replace("/", "\\/"), True))
    # Runs of MIN_SUBSTRING characters: any longer run contains one of them.
    for i in range(len(canary) - MIN_SUBSTRING + 1):
        out.append((f"substring>={MIN_SUBSTRING}", canary[i:i + MIN_SUBSTRING], True))
    return [n for n in out if len(n[1]) >= ANCHOR]


ENCODINGS_CHECKED = [
    "raw", "upper", "lower", "case-variant", f"substring>={MIN_SUBSTRING}",
    "base64@0", "base64@1", "base64@2", "base64url@0", "base64url@1", "base64url@2",
    "hex", "HEX", "percent-encoded", "percent-encoded-twice", "urlencoded", "urlencoded-twice",
    "json-\\u-escaped", "json-\\/-escaped", "js-\\x-escaped", "html-entities", "html-hex-entities",
    "utf-16le", "utf-16be",
    # decoded views, each searched for every needle again
    "view:json-unescaped", "view:html-unescaped", "view:percent-decoded", "view:line-breaks-removed",
    "view:all-decoded", "view:base64-decoded", "view:gzip-inflated",
]


# ---------------------------------------------------------------------------------------------
# Decoded views of the scanned text
# ---------------------------------------------------------------------------------------------

_JSON_U = re.compile(r"\\*u([0-9a-fA-F]{4})")
_RUST_U = re.compile(r"\\+u\{([0-9a-fA-F]{1,6})\}")    # Rust's Debug: \u{1b}
_JS_X = re.compile(r"\\+x([0-9a-fA-F]{2})")
_NUL = re.compile(r"\\+0")                             # Rust's Debug: \0
_JSON_SLASH = re.compile(r"\\+/")


def _json_unescape(t: str) -> str:
    # Any number of backslashes: JSON inside a JSON string (a log line, an audit detail) doubles them,
    # and a lenient parser (e.g. of an HTTP quoted-string) may have dropped them: u0063u006e... still
    # spells the canary. Decoding such sequences in ordinary text cannot produce a canary by accident.
    t = _JSON_U.sub(lambda m: chr(int(m.group(1), 16)), t)
    t = _RUST_U.sub(lambda m: chr(min(int(m.group(1), 16), 0x10FFFF)), t)
    t = _JS_X.sub(lambda m: chr(int(m.group(1), 16)), t)
    t = _NUL.sub("\0", t)
    return _JSON_SLASH.sub("/", t)


_BREAKS = re.compile(r"(?:\r|\n|\\+r|\\+n)+")


def _strip_breaks(t: str) -> str:
    """Line breaks removed, real or escaped: base64 is often wrapped (MIME, PEM)."""
    return _BREAKS.sub("", t)


def _pct_decode(t: str) -> str:
    for _ in range(3):
        u = urllib.parse.unquote(t)
        if u == t:
            break
        t = u
    return t


def _all_decoded(t: str) -> str:
    for _ in range(4):
        u = _strip_breaks(_pct_decode(html.unescape(_json_unescape(t))))
        if u == t:
            break
        t = u
    return t


_B64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{16,}={0,2}")


def _inflate(data: bytes) -> bytes | None:
    """gzip / zlib data, decompressed as far as it goes (a capped body may be cut short)."""
    for wbits in (16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS):
        try:
            return zlib.decompressobj(wbits).decompress(data)
        except zlib.error:
            continue
    return None


def _b64_runs(t: str) -> list[bytes]:
    out = []
    for m in _B64_RUN.finditer(_strip_breaks(t)):
        run = m.group(0).rstrip("=")
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                out.append(decoder(run + "=" * (-len(run) % 4)))
                break
            except (ValueError, TypeError):
                continue
    return out


def _b64_decoded(t: str) -> str:
    """Every run of 16+ base64 characters (line breaks ignored), decoded as latin-1, one per line:
    finds a canary that was base64-encoded twice (e.g. base64 text inside a binary body the vault
    returns as base64)."""
    return "\n".join(b.decode("latin-1") for b in _b64_runs(t))


def _gunzipped(t: str) -> str:
    """Base64 runs that hold gzip or zlib data, decompressed: a compressed body handed to the model
    as base64 (Content-Encoding the vault did not undo) is as readable as plain text."""
    out = []
    for b in _b64_runs(t):
        if b[:2] == b"\x1f\x8b" or b[:1] == b"\x78":
            inflated = _inflate(b)
            if inflated:
                out.append(inflated.decode("latin-1"))
    return "\n".join(out)


@lru_cache(maxsize=64)
def _views(text: str) -> tuple[tuple[str, str], ...]:
    views = [("", text)]
    for name, fn in (("json-unescaped", _json_unescape), ("html-unescaped", html.unescape),
                     ("percent-decoded", _pct_decode), ("line-breaks-removed", _strip_breaks),
                     ("all-decoded", _all_decoded), ("base64-decoded", _b64_decoded),
                     ("gzip-inflated", _gunzipped)):
        v = fn(text)
        if all(v != seen for _, seen in views):
            views.append((name, v))
    return tuple(views)


def as_text(data: str | bytes) -> str:
    """Bytes are read as latin-1: one character per byte, so ASCII canaries are found in binary
    files (SQLite pages, WAL frames) exactly where they are."""
    return data.decode("latin-1") if isinstance(data, (bytes, bytearray)) else data


# ---------------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------------

class LeakScanner:
    """Scan texts for many canaries at once."""

    def __init__(self, canaries: Iterable[str]):
        self.canaries = list(dict.fromkeys(canaries))
        # gram -> [(needle, offset of the gram in it, canary, label)]; the case-insensitive index
        # holds lower-cased grams and needles.
        self._ci: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
        self._cs: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
        for c in self.canaries:
            for label, n, ci in needles(c):
                index, key = (self._ci, n.lower()) if ci else (self._cs, n)
                for off in range(STRIDE):
                    index[key[off:off + GRAM]].append((key, off, c, label))

    @staticmethod
    def _case_label(canary: str, found: str) -> str:
        if found == canary:
            return "raw"
        if found == canary.upper():
            return "upper"
        if found == canary.lower():
            return "lower"
        return "case-variant"

    def _scan_view(self, text: str) -> dict[str, set[str]]:
        """Any needle occurrence (length >= ANCHOR) covers exactly one position that is a multiple
        of STRIDE within its first STRIDE characters: look up the GRAM there, then verify."""
        hits: dict[str, set[str]] = defaultdict(set)
        lower = text.lower()
        ci, cs = self._ci, self._cs
        for i in range(0, len(text) - GRAM + 1, STRIDE):
            cands = ci.get(lower[i:i + GRAM])
            if cands:
                for n, off, c, label in cands:
                    at = i - off
                    if at >= 0 and lower.startswith(n, at):
                        if label == "raw":
                            label = self._case_label(c, text[at:at + len(c)])
                        elif label == "hex":
                            label = "hex" if text[at:at + len(n)] == n else "HEX"
                        hits[c].add(label)
            cands = cs.get(text[i:i + GRAM])
            if cands:
                for n, off, c, label in cands:
                    at = i - off
                    if at >= 0 and text.startswith(n, at):
                        hits[c].add(label)
        return hits

    def scan(self, data: str | bytes) -> dict[str, list[str]]:
        """canary -> sorted labels of the encodings found (canaries not found are absent).

        Labels from the plain text come first-hand ("raw", "base64@1", "hex", ...). Decoded views are
        consulted only for canaries the plain text showed at most as a substring, and read
        "<encoding> after <view>" (e.g. "raw after json-unescaped"); the combined all-decoded view
        only when no single decoder explained the hit."""
        text = as_text(data)
        views = _views(text)
        plain = self._scan_view(views[0][1])
        result: dict[str, set[str]] = {c: set(l) for c, l in plain.items()}
        substring = f"substring>={MIN_SUBSTRING}"
        for view, v in views[1:]:
            for c, labels in self._scan_view(v).items():
                first_hand = plain.get(c, set()) - {substring}
                if first_hand:
                    continue
                if view == "all-decoded" and any(" after " in l for l in result.get(c, ())):
                    continue
                result.setdefault(c, set()).update(f"{l} after {view}" for l in labels - plain.get(c, set()))
        out = {}
        for c, labels in result.items():
            # a substring hit says nothing more once the whole canary was found in the same view
            whole_in = {l.partition(" after ")[2] for l in labels
                        if l.partition(" after ")[0] in ("raw", "upper", "lower", "case-variant")}
            labels = {l for l in labels
                      if not (l.partition(" after ")[0] == substring and l.partition(" after ")[2] in whole_in)}
            # UTF-16 text holds both byte orders shifted by one: name only one
            for le, be in (("utf-16le", "utf-16be"), ("utf-16le after", "utf-16be after")):
                if any(l.startswith(le) for l in labels):
                    labels = {l for l in labels if not l.startswith(be)}
            if labels:
                out[c] = sorted(labels)
        return out


def find_leaks(canary: str, data: str | bytes) -> list[str]:
    """Every encoding of `canary` found in `data` (str, or bytes read as latin-1), as labels such as
    "raw", "base64@1", "hex", "raw after json-unescaped". Empty means no leak."""
    return LeakScanner([canary]).scan(data).get(canary, [])


# ---------------------------------------------------------------------------------------------
# Truncation: does a text end with the start of the canary?
# ---------------------------------------------------------------------------------------------

def tail_prefix_leaks(canary: str, text: str, min_chars: int = 4) -> list[str]:
    """Labels of the encodings in which `text` ends with the beginning of the encoded canary, at least
    as long as the encoding of its first `min_chars` characters (what a size cap cutting through an
    echoed credential leaves behind; partial escapes at the very end count too)."""
    raw = canary.encode()
    forms = [  # (label, encoder of a canary prefix, case-insensitive)
        ("raw", lambda s: s, True),
        ("hex", lambda s: s.encode().hex(), True),
        ("percent-encoded", _pct_all, True),
        ("urlencoded", lambda s: urllib.parse.quote(s, safe=""), True),
        ("json-\\u-escaped", lambda s: "".join("\\u%04x" % ord(c) for c in s), True),
        ("html-entities", lambda s: "".join("&#%d;" % ord(c) for c in s), True),
    ]
    for off in range(3):
        for urlsafe in (False, True):
            forms.append((f"base64{'url' if urlsafe else ''}@{off}",
                          lambda s, o=off, u=urlsafe: _b64_core(s.encode(), o, u), False))
    found, seen = [], set()
    low = text.lower()
    for label, enc, ci in forms:
        full, least = enc(canary), len(enc(canary[:min_chars]))
        hay, full = (low, full.lower()) if ci else (text, full)
        for m in range(len(full), max(least, 1) - 1, -1):
            if hay.endswith(full[:m]):
                if full[:m].lower() not in seen:  # e.g. a urlencoded prefix without escapes is raw
                    seen.add(full[:m].lower())
                    found.append(f"{label} prefix ({m} encoded chars)")
                break
    return found
