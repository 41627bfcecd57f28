"""Adversarial suite for vault-mcp's central promise: no credential ever reaches the model (tool results:
text content and structuredContent), the logs (stderr at trace level), the audit trail (rows and
`vault-mcp audit export --jsonl`), error messages, or the database / WAL files in plaintext.

Set-up (one module-scoped `lab`, built once):

- two hostile upstreams (support/reflector.py): origin A, the only host the grants may be sent to, echoes
  the injected credential back in whatever encoding the request path asks for; origin B is a foreign
  origin that only logs what it receives;
- one vault (harness.Vault) with one managed-secret grant per test case, each holding its own random
  canary credential with characters that need escaping ("cnry" + alnum + "/+=" + alnum), so a canary
  found anywhere names exactly the call that leaked it;
- for each injection style (bearer, header X-Api-Key, basic, query api_key) one stdio MCP session
  (the official Python SDK client; VAULT_MCP_LOG=trace, a superset of vault_mcp=trace, override with
  LEAKS_LOG_FILTER) making all that style's vault_request calls: every echo mode of the reflector
  (plus header / WWW-Authenticate / error / binary / form echoes with the token encoded), redirects
  301-308 A→A and A→B, a chain longer than max_redirects, a cross-origin Location carrying the token,
  a connection-refused error, and bodies cut by max_response_bytes in the middle of the token;
- then every channel is scanned for every canary in every encoding (leakscan.py): each call's
  CallToolResult (text + structuredContent, serialized), the server's stderr, `audit export --jsonl`,
  every value of every table of vault.db, the raw bytes of vault.db and of vault.db-wal (snapshotted
  while each server was still running), and the output of the `secret add` commands.

The tests then only read the lab's findings: one test id per echo mode × injection style, per redirect
code and direction, per truncation cut. A summary {channels_scanned, calls, encodings_checked, leaks}
goes to target/e2e-artifacts/security-leaks.json (written before any assertion, so `-x` keeps it).

Each echo mode is also checked once without the vault (test_reflector_emits_the_canary), and every
vault test first checks, in the reflector's request log, that origin A really received that case's
canary: a green test means the vault scrubbed, not that nothing was echoed.

Beyond the classic encodings, some modes probe forms an API can produce without malice: base64 wrapped
in lines, base64 of base64, 3 and 4 nested escapings, UTF-16 text, and gzip (the vault asks for
compression itself and inflates the answer before scrubbing; a caller may not set Accept-Encoding,
which would hand the scrubber a still-compressed body — test_caller_cannot_choose_the_encoding).
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import secrets
import shutil
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from harness import ARTIFACTS, HERE, Vault, free_port, wait_port
from leakscan import ENCODINGS_CHECKED, LeakScanner, find_leaks, tail_prefix_leaks

sys.path.insert(0, str(HERE / "support"))
from reflector import encode as reflector_encode  # noqa: E402

LOG_FILTER = os.environ.get("LEAKS_LOG_FILTER", "trace")
CAP = 16384           # [request] max_response_bytes: the 4-layer echo of a canary is ~11 KB
MAX_REDIRECTS = 3     # [request] max_redirects
PROVIDER = "leaky"

STYLES = {
    "bearer": ["--inject", "bearer"],
    "header": ["--inject", "header", "--header-name", "X-Api-Key"],
    "basic": ["--inject", "basic", "--username", "apiuser"],
    "query": ["--inject", "query", "--query-param", "api_key"],
}

# Echo modes of the reflector (the path is /<mode>).
ECHO_MODES = [
    "raw", "upper", "lower", "swapcase", "json", "json-u", "json-u-mixed", "json-slash",
    "b64", "b64url", "b64-bearer", "b64-offset1", "b64-offset2", "hex", "HEX",
    "urlenc", "urlenc-lower", "urlenc-double", "html-entities", "html-hex", "js-x", "form",
    "b64-wrapped", "b64-b64", "layered3", "layered4", "utf16", "utf16be", "gzip", "status-reason",
    "header", "www-auth", "error-text", "cap", "binary",
]
# Request headers an agent may legitimately set that change how the echo comes back (none today:
# Accept-Encoding, which used to be one, is refused by the vault).
MODE_HEADERS: dict = {}
# Modes that carry the token somewhere other than a plain body, also with the token encoded (?enc=).
ENCODED_VARIANTS = [
    ("header", "b64"), ("header", "urlenc"), ("www-auth", "b64"), ("www-auth", "json-u"),
    ("error-text", "b64"), ("error-text", "hex"), ("binary", "b64"), ("binary", "hex"), ("form", "b64"),
]
REDIRECT_CODES = [301, 302, 303, 307, 308]
# Truncation: the cap keeps `keep` characters of the canary, written in `enc`.
CAP_ENCODINGS = ["raw", "upper", "hex", "b64", "urlenc", "json-u", "html-entities"]
CAP_KEEPS = [4, 7, "half"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One vault_request call. `{A}`/`{B}` in query values become the reflectors' base URLs."""
    id: str
    style: str
    kind: str                       # echo | same-origin | cross-origin | chain | carry | cap | neterr
    path: str
    query: tuple = ()
    headers: tuple = ()
    keep: int | str | None = None   # cap: canary characters the cap lets through
    enc: str = "raw"                # cap: the encoding of the echoed token


def _cases() -> list[Case]:
    out = []
    for style in STYLES:
        for mode in ECHO_MODES:
            q = (("before", str(CAP - 20)),) if mode == "cap" else ()   # the cap cuts the canary at 20
            out.append(Case(f"{style}-{mode}", style, "echo", f"/{mode}", q, MODE_HEADERS.get(mode, ())))
        for mode, enc in ENCODED_VARIANTS:
            out.append(Case(f"{style}-{mode}~{enc}", style, "echo", f"/{mode}", (("enc", enc),)))
        for code in REDIRECT_CODES:
            out.append(Case(f"{style}-{code}-A-to-A", style, "same-origin", f"/redirect/{code}", (("to", "/raw"),)))
            out.append(Case(f"{style}-{code}-A-to-B", style, "cross-origin", f"/redirect/{code}", (("to", "{B}/log"),)))
        out.append(Case(f"{style}-chain{MAX_REDIRECTS + 2}-over-max{MAX_REDIRECTS}", style, "chain", "/redirect/302",
                        (("to", "/raw"), ("hops", str(MAX_REDIRECTS + 2)))))
        out.append(Case(f"{style}-chain{MAX_REDIRECTS - 1}-then-to-B", style, "cross-origin", "/redirect/307",
                        (("to", "{B}/log"), ("hops", str(MAX_REDIRECTS - 1)))))
        for carry in ("raw", "b64", "hex"):
            out.append(Case(f"{style}-302-A-to-B-carrying~{carry}", style, "carry", "/redirect/302",
                            (("to", "{B}/log"), ("carry", carry))))
        # An allowed host that refuses connections: the network error message is a channel too.
        out.append(Case(f"{style}-connection-refused", style, "neterr", "/raw"))
    for enc in CAP_ENCODINGS:
        for keep in CAP_KEEPS:
            out.append(Case(f"bearer-cap~{enc}-keep{keep}", "bearer", "cap", "/cap", (("enc", enc),), keep=keep, enc=enc))
    return out


CASES = _cases()


def _by_kind(*kinds: str) -> list:
    return [pytest.param(c, id=c.id) for c in CASES if c.kind in kinds]


def make_canary() -> str:
    alnum = string.ascii_letters + string.digits
    rand = lambda n: "".join(secrets.choice(alnum) for _ in range(n))  # noqa: E731
    return f"cnry{rand(16)}/+={rand(16)}"


def cap_before(enc: str, canary: str, keep: int | str) -> int:
    """Filler length so that the first CAP bytes end with the encoding of `keep` canary characters."""
    k = len(canary) // 2 if keep == "half" else int(keep)
    if enc == "b64":
        kept = len(base64.b64encode(canary[:k].encode()).decode().rstrip("="))
    else:
        kept = len(reflector_encode(enc, canary[:k]))
    return CAP - kept


def unique_wal_pages(snapshots: list[bytes]) -> bytes:
    """The distinct page images in several copies of a WAL file (successive copies share most
    frames). WAL layout: a 32-byte header (page size at offset 8), then frames of a 24-byte header
    and one page. A value split across pages is split by frame headers in the raw file too."""
    seen, out = set(), []
    for snap in snapshots:
        if len(snap) < 32:
            continue
        page = int.from_bytes(snap[8:12], "big") or 65536
        for at in range(32, len(snap), 24 + page):
            img = snap[at + 24:at + 24 + page]
            if img not in seen:
                seen.add(img)
                out.append(img)
    return b"\n--\n".join(out)


# ---------------------------------------------------------------------------------------------
# The lab: reflectors, vault, calls, channels, findings
# ---------------------------------------------------------------------------------------------

class ReflectorProc:
    def __init__(self, name: str, workdir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"reflector-{name}.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "support" / "reflector.py"), str(self.port), "--header", "X-Api-Key",
             "--query", "api_key", "--log", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def entries(self) -> list[dict]:
        return [json.loads(l) for l in self.log.read_text().splitlines() if l.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@dataclasses.dataclass
class Outcome:
    case: Case
    canary: str
    result: dict | None          # CallToolResult.model_dump(mode="json"), or None on a protocol error
    result_text: str             # what was scanned as the "result" channel
    leaks: dict                  # channel -> [encoding labels]
    a_hits: list                 # origin A's log entries that carried this canary
    b_hits: list                 # origin B's log entries that show it in any encoding


class Lab:
    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="vault-leaks-"))
        self.a = ReflectorProc("A", self.work)
        self.b = ReflectorProc("B", self.work)
        self.closed_port = free_port()   # allowed for every grant, nothing listens there
        self.vault = Vault(None, extra_toml=f"[request]\nmax_response_bytes = {CAP}\nmax_redirects = {MAX_REDIRECTS}\n")
        self.canary = {c.id: make_canary() for c in CASES}
        self.account = {c.id: f"c{i:03d}" for i, c in enumerate(CASES)}
        self.results: dict[str, tuple[dict | None, str]] = {}
        self.channels: dict[str, str | bytes] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.calls = 0
        self.live_wal: list[bytes] = []

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        self.vault.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- set-up ---------------------------------------------------------------------------------

    def add_grants(self) -> None:
        cli_out = []
        for c in CASES:
            p = self.vault.cli("secret", "add", PROVIDER, "--account", self.account[c.id],
                               "--host", f"127.0.0.1:{self.a.port}", "--host", f"127.0.0.1:{self.closed_port}",
                               *STYLES[c.style],
                               input=self.canary[c.id] + "\n")
            cli_out.append(p.stdout + p.stderr)
        self.channels["cli:secret-add"] = "\n".join(cli_out)

    def args(self, c: Case) -> dict:
        query = {k: v.replace("{A}", self.a.base).replace("{B}", self.b.base) for k, v in c.query}
        if c.kind == "cap":
            query["before"] = str(cap_before(c.enc, self.canary[c.id], c.keep))
        base = f"http://127.0.0.1:{self.closed_port}" if c.kind == "neterr" else self.a.base
        return {"method": "GET", "url": base + c.path, "query_params": query, "headers": dict(c.headers),
                "provider": PROVIDER, "account": self.account[c.id], "reason": f"leak test {c.id}"}

    # -- the calls ------------------------------------------------------------------------------

    async def _session(self, style: str) -> None:
        async with self.vault.mcp(env={"VAULT_MCP_LOG": LOG_FILTER}) as s:
            for c in (c for c in CASES if c.style == style):
                self.calls += 1
                try:
                    r = await asyncio.wait_for(s.call_tool("vault_request", self.args(c)), 60)
                    dumped = r.model_dump(mode="json")
                    self.results[c.id] = (dumped, json.dumps(dumped))
                except MCPError as e:   # a protocol error is a channel to the model too
                    self.results[c.id] = (None, json.dumps(e.error.model_dump(mode="json")))
            # While this server still runs, its WAL holds the recent pages: keep a copy.
            wal = self.vault.dir / "data" / "vault.db-wal"
            if wal.exists():
                self.live_wal.append(wal.read_bytes())

    def run(self) -> None:
        for style in STYLES:
            asyncio.run(self._session(style))

    # -- the channels ---------------------------------------------------------------------------

    def collect(self) -> None:
        if self.live_wal:
            self.channels["file:vault.db-wal(while serving)"] = unique_wal_pages(self.live_wal)
        self.channels["stderr"] = self.vault.stderr_path.read_text(errors="replace")
        p = self.vault.cli("audit", "export", "--jsonl", check=False)
        self.channels["audit-export"] = p.stdout + p.stderr
        data = self.vault.dir / "data"
        for name in ("vault.db", "vault.db-wal"):
            if (data / name).exists():
                self.channels[f"file:{name}"] = (data / name).read_bytes()
        con = sqlite3.connect(data / "vault.db")
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:
                texts, blobs = [], []
                for row in con.execute(f'SELECT * FROM "{t}"'):
                    for v in row:
                        if isinstance(v, str):
                            texts.append(v)
                        elif isinstance(v, bytes):
                            blobs.append(v)
                self.channels[f"db:{t}"] = "\n".join(texts)
                if blobs:
                    self.channels[f"db:{t}(blobs)"] = b"\n".join(blobs)
        finally:
            con.close()

    # -- the findings ---------------------------------------------------------------------------

    def scan(self) -> None:
        scanner = LeakScanner(self.canary.values())
        owner = {v: k for k, v in self.canary.items()}
        leaks: dict[str, dict[str, list[str]]] = {c.id: {} for c in CASES}
        for cid, (_, text) in self.results.items():
            for canary, labels in scanner.scan(text).items():
                channel = "result" if owner[canary] == cid else f"result of {cid}"
                leaks[owner[canary]][channel] = labels
        for channel, data in self.channels.items():
            for canary, labels in scanner.scan(data).items():
                leaks[owner[canary]][channel] = labels
        a_log, b_log = self.a.entries(), self.b.entries()
        b_text = self.b.log.read_text()
        b_found = scanner.scan(b_text)
        for c in CASES:
            canary = self.canary[c.id]
            result, text = self.results.get(c.id, (None, ""))
            self.outcomes[c.id] = Outcome(
                case=c, canary=canary, result=result, result_text=text, leaks=leaks[c.id],
                a_hits=[e for e in a_log if e.get("credential") == canary],
                b_hits=[e for e in b_log if find_leaks(canary, json.dumps(e))] if canary in b_found else [])

    def write_summary(self) -> Path:
        found = [{"case": cid, "channel": ch, "encodings": labels}
                 for cid, o in self.outcomes.items() for ch, labels in sorted(o.leaks.items())]
        channels = ["result"] + sorted(self.channels)
        summary = {
            "channels_scanned": len(channels),
            "calls": self.calls,
            "encodings_checked": len(ENCODINGS_CHECKED),
            "leaks": len(found),
            "cases": len(CASES),
            "cases_leaking": len({f["case"] for f in found}),
            "foreign_origin_received_credential": sorted(cid for cid, o in self.outcomes.items() if o.b_hits),
            "channel_names": channels,
            "encoding_names": ENCODINGS_CHECKED,
            "log_filter": LOG_FILTER,
            "leak_details": found,
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / "security-leaks.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return path


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        started = time.time()
        lab.add_grants()
        lab.run()
        lab.collect()
        lab.scan()
        lab.write_summary()
        print(f"\nsecurity-leaks lab: {lab.calls} calls, {len(lab.channels) + 1} channels, "
              f"{time.time() - started:.1f}s", file=sys.stderr)
        yield lab
    finally:
        lab.stop()


# ---------------------------------------------------------------------------------------------
# Assertion helpers
# ---------------------------------------------------------------------------------------------

def describe(o: Outcome) -> str:
    sc = (o.result or {}).get("structured_content") or {}
    brief = {k: sc.get(k) for k in ("status", "error", "body_encoding", "truncated") if k in sc}
    return f"{o.case.id}: result {brief}"


def assert_no_leaks(o: Outcome) -> None:
    if o.leaks:
        lines = "\n".join(f"  {ch}: {', '.join(labels)}" for ch, labels in sorted(o.leaks.items()))
        pytest.fail(f"canary of {describe(o)} leaked into:\n{lines}", pytrace=False)


def assert_a_saw_credential(o: Outcome) -> None:
    # Without this the test would prove nothing: the reflector must have received the canary.
    assert o.a_hits, f"{o.case.id}: origin A never received the credential (injection or test broken): {o.result_text[:500]}"


def status(o: Outcome):
    return ((o.result or {}).get("structured_content") or {}).get("status")


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bare_reflector():
    """A reflector with no vault in front of it, for the control test."""
    work = Path(tempfile.mkdtemp(prefix="vault-leaks-control-"))
    r = ReflectorProc("control", work)
    yield r
    r.stop()
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("mode", ECHO_MODES + [f"{m}~{e}" for m, e in ENCODED_VARIANTS])
def test_reflector_emits_the_canary(mode, bare_reflector):
    """Control: without the vault in between, every echo mode really puts the canary in the answer in a
    form leakscan recognizes. (Bearer injection; the other styles are checked by the A-log assertion.)"""
    canary = make_canary()
    m, _, enc = mode.partition("~")
    url = f"{bare_reflector.base}/{m}" + (f"?enc={enc}" if enc else "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {canary}", **dict(MODE_HEADERS.get(m, ()))})
    try:
        with urllib.request.urlopen(req) as r:
            head, body = f"{r.status} {r.reason}\n{r.headers}", r.read()
    except urllib.error.HTTPError as e:
        head, body = f"{e.code} {e.reason}\n{e.headers}", e.read()
    shown = head + "\n" + body.decode("latin-1")
    if m in ("binary", "gzip"):   # the vault hands binary bodies to the model base64-encoded
        shown += "\n" + base64.b64encode(body).decode()
    assert find_leaks(canary, shown), f"reflector mode {mode} did not echo the canary:\n{shown[:800]}"


@pytest.mark.parametrize("case", _by_kind("echo"))
def test_echoed_credential_is_scrubbed_everywhere(lab, case):
    o = lab.outcomes[case.id]
    assert_a_saw_credential(o)
    assert_no_leaks(o)


@pytest.mark.parametrize("case", _by_kind("same-origin"))
def test_same_origin_redirect_follows_and_stays_scrubbed(lab, case):
    o = lab.outcomes[case.id]
    assert status(o) == 200, describe(o)
    assert any(e["path"] == "/raw" for e in o.a_hits), f"{case.id}: the credential did not follow the redirect on A"
    assert not o.b_hits
    assert_no_leaks(o)


@pytest.mark.parametrize("case", _by_kind("cross-origin", "carry"))
def test_cross_origin_redirect_never_reaches_b(lab, case):
    o = lab.outcomes[case.id]
    assert_a_saw_credential(o)
    assert not o.b_hits, f"{case.id}: the foreign origin B received the credential: {o.b_hits}"
    assert status(o) in REDIRECT_CODES, f"a cross-origin redirect is handed back, not followed: {describe(o)}"
    assert_no_leaks(o)


@pytest.mark.parametrize("case", _by_kind("neterr"))
def test_network_error_message_is_clean(lab, case):
    o = lab.outcomes[case.id]
    assert ((o.result or {}).get("structured_content") or {}).get("error") == "network_error", describe(o)
    assert_no_leaks(o)


@pytest.mark.parametrize("case", _by_kind("chain"))
def test_redirect_chain_longer_than_max(lab, case):
    o = lab.outcomes[case.id]
    assert status(o) in REDIRECT_CODES, f"the chain stops at max_redirects with the last redirect: {describe(o)}"
    assert len(o.a_hits) == MAX_REDIRECTS + 1, f"{case.id}: A saw {len(o.a_hits)} requests"
    assert not o.b_hits
    assert_no_leaks(o)


@pytest.mark.parametrize("case", _by_kind("cap"))
def test_truncation_never_ends_with_a_canary_prefix(lab, case):
    """The cap cuts the echoed token: what is left at the end of the body must not be its beginning."""
    o = lab.outcomes[case.id]
    assert_a_saw_credential(o)
    sc = (o.result or {}).get("structured_content") or {}
    assert sc.get("truncated") is True, describe(o)
    bodies = {"structuredContent.body": sc.get("body")}
    for i, item in enumerate((o.result or {}).get("content") or []):
        try:
            bodies[f"content[{i}].body"] = json.loads(item.get("text", "")).get("body")
        except (ValueError, AttributeError):
            bodies[f"content[{i}].text"] = item.get("text")
    problems = {where: tail_prefix_leaks(o.canary, body) for where, body in bodies.items() if isinstance(body, str)}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"{case.id}: the truncated body ends with the start of the canary: {problems}"
    assert_no_leaks(o)


def test_summary_written(lab):
    summary = json.loads((ARTIFACTS / "security-leaks.json").read_text())
    assert summary["calls"] == len(CASES) and summary["channels_scanned"] >= 6, summary
    assert "stderr" in summary["channel_names"] and "audit-export" in summary["channel_names"]
    # the server really logged at trace level, so the stderr channel was worth scanning
    assert "TRACE" in lab.channels["stderr"], "the server did not log at trace level"


def test_caller_cannot_choose_the_encoding(lab):
    """An agent-chosen Accept-Encoding would let a compressed echo past the scrubber: refused."""
    case = next(c for c in CASES if c.path == "/gzip")
    args = {**lab.args(case), "headers": {"Accept-Encoding": "gzip"}}

    async def go():
        async with lab.vault.mcp() as s:
            with pytest.raises(MCPError) as e:
                await s.call_tool("vault_request", args)
            return e.value.error
    err = asyncio.run(go())
    assert err.code == -32602 and "Accept-Encoding" in err.message, err
