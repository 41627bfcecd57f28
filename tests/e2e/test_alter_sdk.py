"""Issue 14: vault-mcp as a self-hosted backend for the official Alter SDK. The SDK is the unmodified wheel
`alter-sdk==0.29.0` from PyPI with its fastapi, mcp and langchain extras (install/requirements-alter-sdk.txt, in
its own venv $E2E_ALTER_VENV because it needs mcp<2; test_alter_sdk_venv.py runs this file there from the main
venv). It talks HMAC-signed `/sdk/*` to a real `vault-mcp serve --http` (same port as MCP), with real parts around
it: oidc-provider as the IdP (user JWTs for alice and bob) and as the OAuth server of the protected test-bed API
(support/resource-api.mjs), headless Chromium on the Connect and approval pages (support/browser.mjs), and the
reflector (support/reflector.py) as an API-key upstream that logs which credential each call carried.

The endpoint contract these tests hold the server to is /work/notes/sdk-contract.md (from the SDK's source).

Assumptions added to the design decisions of the issue (the server should match these, or the test changes
with a note in docs/sdk.md):
 S1 `keys create NAME [--scopes a,b] --json` prints {"id", "name", "key", "scopes", ...}; `keys revoke ID` and
    `keys rotate ID --overlap 1d` take that id; rotate prints the new `alter_rk_` key on stdout (old key keeps
    working during the overlap); `keys list --json` never shows a whole key.
 S2 Grants of the app principal (`secret add --for app`) are listed to the SDK with `principal_type: "system"`
    (the SDK's name for it; its models refuse "app"); a user's grants with "user"; managed secrets (`secret add`)
    as `grant_kind: "managed_secret"` whose `managed_secret_slug` is the provider id given to `secret add`;
    Connect (OAuth) grants as `grant_kind: "oauth"` with `account_identifier` = the account Connect recorded.
 S3 A Connect session created over /sdk with a `user_token` belongs to that user (the Connect page signs the
    browser in at the IdP and refuses anyone else, as for MCP links); with `agent` (name) it offers the delegation
    checkbox, and the poll reports the delegation with the agent's UUID (the one `Agent.me()` returns).
 S4 A managed-secret Connect session for a provider the user holds no grant on is `path: "key_entry"`; its page
    has a field named `secret` for the user's key and a `button[id^="continue-"]` (browser.mjs --fill). The
    provider is known to the vault because an app grant exists for it (`secret add ms-api --for app`).
 S5 Policy applies to the raw-token path too: `/sdk/token` carries the intended method and URL (`request`), and a
    deny rule or a destination outside the provider's hosts refuses the credential (PolicyViolationError,
    BlockedDestinationError) — the credential is never released for a call the vault would not make itself.
 S6 Refused /sdk calls (bad signature, stale timestamp, replayed nonce, missing key scope) are audited: each adds
    an audit record whose outcome is not `ok` and whose JSON mentions the error code.
 S7 An approval-gated call through `proxy_request()` answers 202 with an `approval_url` on this server; the
    person (alice) approves or denies it on that page in Chromium (`--approve-call [--deny]`), after which the
    backend executes the call once and `await_approval()` returns its result (or raises ApprovalDeniedError).
 S8 The SDK's fire-and-forget api-call audit rows are stored with the provider response body scrubbed of the
    grant's credential, like every other audit record (the SDK itself strips only auth headers).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
import uuid
import webbrowser
import zlib
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import pytest

alter_sdk = pytest.importorskip(
    "alter_sdk", reason="runs in $E2E_ALTER_VENV (alter-sdk needs mcp<2); test_alter_sdk_venv.py starts it there")

import httpx  # noqa: E402
import requests  # noqa: E402
from alter_sdk import (Agent, AgentDelegationMissingError, AgentInactiveError, AgentNotFoundError,  # noqa: E402
                       AlterSDKError, AmbiguousGrantError, App, ApprovalDeniedError, ApprovalResult, BackendError,
                       BlockedDestinationError, ConnectDeniedError, ConnectTimeoutError, GrantExpiredError,
                       GrantNotFoundError, GrantRevokedError, InsufficientScopeError, InvalidKeyError,
                       KeyRevokedError, MeRequiresAgentKeyError, NoDelegatedGrantError, PendingApproval,
                       PolicyViolationError, ProviderUnauthorizedError, ReAuthRequiredError,
                       RestrictedGrantRequiresProxyError, ScopeReauthRequiredError)
from alter_sdk.client import _VaultClient  # noqa: E402
from alter_sdk.mcp import AlterContext, AlterMCP  # noqa: E402  (module level: FastMCP resolves the annotations)

from harness import ARTIFACTS, HERE, HostedVault, Provider, browse, free_port, mint_jwt, wait_port  # noqa: E402
from leakscan import LeakScanner  # noqa: E402

assert alter_sdk.__version__ == "0.29.0", alter_sdk.__version__

SHOTS = ARTIFACTS / "screenshots"
ALL_SCOPES = ("tokens:raw,proxy:execute,grants:read,grants:write,connect:initiate,secrets:write,audit:emit,"
              "approvals:read,providers:read,idp_users:read,idp_users:write,agents:admin,keys:admin,spans:emit")
KEY_RE = re.compile(r"\balter_(?:rk|ak)_[a-z2-7]{22}_[a-z2-7]{6}\b")
GRANT_RE = re.compile(r"\bgrt_[a-z0-9]+")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def run(coro):
    return asyncio.run(coro)


def canonical_uuid(s: object) -> bool:
    return isinstance(s, str) and bool(UUID_RE.match(s))


# ---------------------------------------------------------------------------------------------------------------
# A raw signer of our own (checked against the reference vectors and the SDK's own signing function), so that
# the tests can send what the SDK never would: wrong signatures, stale timestamps, replays, tampered bodies.
# ---------------------------------------------------------------------------------------------------------------

B32 = "abcdefghijklmnopqrstuvwxyz234567"


def scoped_key(kind: str, random22: str | None = None) -> str:
    r = random22 or "".join(secrets.choice(B32) for _ in range(22))
    crc = zlib.crc32(f"{kind}:{r}".encode())
    return f"alter_{kind}_{r}_" + "".join(B32[(crc >> (5 * i)) & 0x1F] for i in range(6))


def signing_key(api_key: str) -> bytes:
    return hmac.new(api_key.encode(), b"alter-signing-v1", hashlib.sha256).digest()


def canonical_path(path: str) -> str:
    p, _, q = path.partition("?")
    if q:
        return f"{unquote(p)}?{urlencode(sorted(parse_qsl(q, keep_blank_values=True, separator='&')))}"
    return unquote(p)


def strings_to_sign(method: str, path: str, ts: str, nonce: str, body: bytes, *, constraints: str = "",
                    rule: str = "", caller: str = "", caller_type: str = "", actor_id: str = "",
                    context: str = "") -> tuple[str, str]:
    legacy = (f"{method.upper()}\n{canonical_path(path)}\n{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}\n"
              f"{constraints}")
    if rule:
        legacy += f"\nrequest-rule:{rule}"
    v2 = legacy
    for label, value in (("caller", caller), ("caller-type", caller_type), ("actor-id", actor_id),
                         ("actor-context", context)):
        if value:
            v2 += f"\n{label}:{value}"
    return legacy, v2


def hmac_hex(api_key: str, s: str) -> str:
    return hmac.new(signing_key(api_key), s.encode(), hashlib.sha256).hexdigest()


def body_bytes(body) -> bytes:
    if body is None:
        return b""
    return body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()


def sdk_visible(resp: requests.Response) -> AlterSDKError | None:
    """What the SDK raises for this backend answer: its own error mapping (`_handle_error_response`, the one
    every credential and grant call goes through) applied to the response we received."""
    client = _VaultClient(api_key=scoped_key("rk"), base_url="http://127.0.0.1:9")
    try:
        client._handle_error_response(httpx.Response(resp.status_code, headers=dict(resp.headers),
                                                     content=resp.content))
    except AlterSDKError as e:
        return e
    return None


# ---------------------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------------------

class Reflector:
    """support/reflector.py on a free port; every request (with the credential it carried) is logged."""

    def __init__(self, workdir: Path) -> None:
        import subprocess
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.host}"
        self.log = workdir / "reflector.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "support" / "reflector.py"), str(self.port),
                                      "--log", str(self.log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def url(self, probe: str) -> str:
        return f"{self.base}/log?probe={probe}"

    def hits(self, probe: str) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            e = json.loads(line)
            if probe in parse_qs(e["query"]).get("probe", []):
                out.append(e)
        return out

    def credentials(self, probe: str) -> list[str]:
        return [h.get("credential") for h in self.hits(probe)]

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(Exception):
            self.proc.wait(5)


class Recorder:
    """Every /sdk/* exchange the SDK makes in this process (httpx is patched, the SDK is not), for the leak check."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.items: list[tuple[str, str, int, dict, bytes]] = []
        self._orig = httpx.AsyncClient.send

    def install(self) -> None:
        orig, rec = self._orig, self

        async def send(client, request, *a, **kw):
            resp = await orig(client, request, *a, **kw)
            if str(request.url).startswith(rec.base + "/sdk/"):
                await resp.aread()
                rec.items.append((request.method, request.url.path, resp.status_code, dict(resp.headers),
                                  resp.content))
            return resp
        httpx.AsyncClient.send = send

    def uninstall(self) -> None:
        httpx.AsyncClient.send = self._orig


class World:
    """The hosted vault with everything the tests share."""
    v: HostedVault
    provider: Provider
    reflector: Reflector
    keys: dict[str, dict]
    secret: dict[str, str]
    grt: dict[str, str]
    alice: str
    bob: str
    bot_key: str
    sleeper_key: str
    recorder: Recorder
    raw_responses: list
    seen_tokens: set

    @property
    def full(self) -> str:
        return self.keys["full"]["key"]

    def audit(self) -> list[dict]:
        return [json.loads(l) for l in self.v.cli("audit", "export", "--jsonl").stdout.splitlines() if l.strip()]

    def uuid_of(self, slug: str, account: str | None = None, agent_key: str | None = None) -> str:
        async def go():
            async with (Agent(api_key=agent_key) if agent_key else App(api_key=self.full)) as a:
                page = await a.list_grants(provider_id=slug, limit=100)
            return [g.grant_id for g in page.grants if account is None or g.account_identifier == account]
        ids = run(go())
        assert len(ids) == 1, (slug, account, ids)
        return ids[0]

    def raw(self, key: str, method: str, path: str, body=None, *, ts=None, nonce=None, sign_with: str | None = None,
            sign_body=None, sign_path: str | None = None, caller: str | None = None, context: str | None = None,
            bind_identity: bool = True, headers: dict | None = None, drop: tuple = (),
            caller_type: str = "service") -> requests.Response:
        """One /sdk request signed by our signer; every knob is something an attacker could change."""
        data = body_bytes(body)
        signed = data if sign_body is None else body_bytes(sign_body)
        ts = str(int(time.time())) if ts is None else str(ts)
        nonce = nonce or secrets.token_hex(16)
        legacy, v2 = strings_to_sign(method, sign_path or path, ts, nonce, signed, caller=caller or "",
                                     caller_type=caller_type if caller else "", context=context or "")
        sig = hmac_hex(sign_with or key, v2 if bind_identity else legacy)
        h = {"x-api-key": key, "User-Agent": "vault-e2e-raw-signer", "X-Alter-Timestamp": ts, "X-Alter-Nonce": nonce,
             "X-Alter-Content-SHA256": hashlib.sha256(signed).hexdigest(), "X-Alter-Signature": sig}
        if bind_identity and v2 != legacy:
            h["X-Alter-Signature-V2"] = sig
        if caller:
            h["X-Alter-Caller"], h["X-Alter-Caller-Type"] = caller, caller_type
        if context:
            h["X-Alter-Context"] = context
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for d in drop:
            h.pop(d, None)
        r = requests.request(method, self.v.base + path, data=data if body is not None else None, headers=h,
                             timeout=20)
        self.raw_responses.append((method, path, r.status_code, dict(r.headers), r.content))
        return r


EXTRA_TOML_PROVIDERS = ("testbed-mcp", "testbed-deleg", "testbed-deny")


def policy_toml() -> str:
    return """
[[policy.rules]]
id = "reflect-no-deletes"
providers = ["reflect-app"]
methods = ["DELETE"]
effect = "deny"
message = "no deletes through the company key"

[[policy.rules]]
id = "hitl-needs-approval"
providers = ["hitl-api"]
effect = "approve"
"""


@pytest.fixture(scope="module")
def provider():
    p = Provider(ACCESS_TOKEN_TTL="900")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def w(provider):
    world = World()
    world.provider = provider
    extra = "".join(provider.provider_toml(pid) for pid in EXTRA_TOML_PROVIDERS) + policy_toml()
    v = HostedVault(provider, identity="jwt", extra_toml=extra)
    world.v = v
    world.reflector = Reflector(v.dir)
    world.raw_responses, world.seen_tokens = [], set()
    refl = world.reflector.host

    # app keys (S1)
    def key(name: str, *extra_args: str) -> dict:
        out = json.loads(v.cli("keys", "create", name, *extra_args, "--json").stdout)
        assert KEY_RE.fullmatch(out["key"]) and out["key"].startswith("alter_rk_"), out
        return out
    world.keys = {"full": key("sdk-full", "--scopes", ALL_SCOPES), "default": key("sdk-default"),
                  "narrow": key("sdk-narrow", "--scopes", "grants:read"), "revoked": key("sdk-revoked"),
                  "rotated": key("sdk-rotated")}
    assert "tokens:raw" not in world.keys["default"]["scopes"], world.keys["default"]
    v.cli("keys", "revoke", world.keys["revoked"]["id"])

    # managed secrets (random values: canaries for the leak check)
    world.secret, world.grt = {}, {}
    alice_id = v.principal(provider, "alice")

    def secret(name: str, slug: str, owner: str, account: str, *extra_args: str) -> None:
        val = f"sk_{secrets.token_hex(16)}"          # random only: a canary shares no run of 8 with anything
        p = v.cli("secret", "add", slug, "--for", owner, "--account", account, "--host", refl, *extra_args,
                  input=val + "\n")
        m = GRANT_RE.search(p.stdout)
        assert m, p.stdout
        world.secret[name], world.grt[name] = val, m.group(0)
    secret("app", "reflect-app", "app", "company")
    secret("other", "other-app", "app", "other")
    for i in (1, 2, 3):
        secret(f"p{i}", "pager-api", "app", f"p{i}")
    secret("expiring", "expiring-api", "app", "soon", "--ttl", "1s")
    secret("revocable", "revoke-api", "app", "throwaway")
    secret("dead", "dead-api", "app", "dead")
    secret("ms-app", "ms-api", "app", "company-ms")
    secret("hitl", "hitl-api", f"user:{alice_id}", "alice-hitl")
    world.secret["ms-alice"] = f"sk_{secrets.token_hex(16)}"   # typed by alice on the Connect page

    # agents
    out = v.cli("agents", "create", "sdk-bot")
    world.bot_key = KEY_RE.search(out.stdout).group(0)
    secret("bot", "bot-api", "agent:sdk-bot", "bot")
    v.cli("agents", "update", "sdk-bot", "--grant", world.grt["app"])
    out = v.cli("agents", "create", "sdk-sleeper")
    world.sleeper_key = KEY_RE.search(out.stdout).group(0)
    v.cli("agents", "update", "sdk-sleeper", "--disable")

    v.start()
    world.alice, world.bob = (mint_jwt(provider, v.mcp_url, u) for u in ("alice", "bob"))
    old = os.environ.get("ALTER_BASE_URL")
    os.environ["ALTER_BASE_URL"] = v.base
    world.recorder = Recorder(v.base)
    world.recorder.install()
    try:
        yield world
    finally:
        world.recorder.uninstall()
        if old is None:
            os.environ.pop("ALTER_BASE_URL", None)
        else:
            os.environ["ALTER_BASE_URL"] = old
        v.stop()
        world.reflector.stop()
        v.cleanup()


def connect_in_chromium(w: World, user_token: str, user: str, providers: list[str], *flags: str, prefix: str,
                        **session_kw):
    """create_connect_session() over /sdk, the page in headless Chromium as `user`, then poll_connect_session()."""
    async def go():
        async with App(api_key=w.full) as a:
            s = await a.create_connect_session(allowed_providers=providers, user_token=user_token, **session_kw)
            page = await asyncio.to_thread(browse, s.connect_url, "--user", user, *flags, shots=SHOTS, prefix=prefix)
            try:
                results = await a.poll_connect_session(s.session_token, timeout=20, poll_interval=0.5)
            except AlterSDKError as e:
                return s, page, e
            return s, page, results
    return run(go())


@pytest.fixture(scope="module")
def alice_testbed(w):
    """alice connects the test-bed API through a Connect session the SDK created (create_connect_session)."""
    s, page, results = connect_in_chromium(w, w.alice, "alice", ["testbed"], prefix="sdk-connect")
    assert not isinstance(results, Exception), (results, page)
    return {"session": s, "page": page, "results": results, "grant_id": results[0].grant_id}


@contextlib.contextmanager
def chromium_as_default_browser(user: str, pages: list):
    """The SDK's connect() opens its URL with the standard `webbrowser` module: make headless Chromium
    (support/browser.mjs, clicking through as `user`) the preferred browser for the duration."""
    class Chromium(webbrowser.BaseBrowser):
        def open(self, url, new=0, autoraise=True):
            pages.append(browse(url, "--user", user, shots=SHOTS, prefix="sdk-connect-browser"))
            return True
    webbrowser.register("vault-e2e-chromium", None, Chromium("vault-e2e-chromium"), preferred=True)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            webbrowser._tryorder.remove("vault-e2e-chromium")


@pytest.fixture(scope="module")
def bob_testbed(w):
    """bob connects the test-bed API with the SDK's own `connect()` (create, open the browser, poll)."""
    pages: list = []

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.bob) as a:
            with chromium_as_default_browser("bob", pages):
                return await a.connect(providers=["testbed"], timeout=60, poll_interval=0.5)
    results = run(go())
    return {"pages": pages, "results": results, "grant_id": results[0].grant_id}


@pytest.fixture(scope="module")
def bot_me(w):
    async def go():
        async with Agent(api_key=w.bot_key) as ag:
            return await ag.me()
    return run(go())


# ---------------------------------------------------------------------------------------------------------------
# The signer, against the reference's vectors and the SDK's own signing code (no server needed)
# ---------------------------------------------------------------------------------------------------------------

REF_KEY = "alter_rk_abcdefghijklmnopqrstuv_iwpykn"
REF_TS, REF_NONCE = "1700000000", "0123456789abcdef0123456789abcdef"
REF_BODY_A = (b'{"grant_id":"11111111-2222-3333-4444-555555555555","reason":null,'
              b'"request":{"method":"GET","url":"https://api.example.com/x"}}')


def test_raw_signer_matches_the_reference_vectors_and_the_sdk():
    assert scoped_key("rk", "abcdefghijklmnopqrstuv") == REF_KEY
    assert signing_key(REF_KEY).hex() == "d686d74251939c285fe8fa5ad18c0e2003f1ca17a5346e7838389386c1ac079f"
    vectors = {
        "A": (("POST", "/sdk/token", REF_BODY_A), {},
              "bfafa92ad9624090b919ecbb5c31b7bc8507e6b104497c25a41f590ead298682"),
        "B": (("GET", "/sdk/agents?offset=0&limit=10&include_revoked=false", b""), {},
              "b2c6ec01213fcb1d544d4e34f1d7ef1bd3d9bc0b976f43d5ba15f841389e67d0"),
        "C": (("POST", "/sdk/token", REF_BODY_A), {"context": '{"tool":"t"}'},
              "d715828e3210304e20f05254e3dbd665b548f0f4ebe67627158706acd473a610"),
        "D": (("POST", "/sdk/token", REF_BODY_A), {"caller": "my-agent", "caller_type": "agent"},
              "9b969718c938fcb6adeec889c75204edd5deef77ebc223c6e5972ca9e5705193"),
    }
    for name, ((method, path, body), kw, want) in vectors.items():
        legacy, v2 = strings_to_sign(method, path, REF_TS, REF_NONCE, body, **kw)
        assert hmac_hex(REF_KEY, v2) == want, name
    assert canonical_path("/sdk/x?b=2&a=hello world&a=%7E*") == "/sdk/x?a=hello+world&a=~%2A&b=2"
    assert canonical_path("/sdk/provider-specs/oauth/my%20prov/operation?operation_id=post%3A%2Femails") == \
        "/sdk/provider-specs/oauth/my prov/operation?operation_id=post%3A%2Femails"

    # the SDK's own signing function (name-mangled and guarded against attribute access, reached through its
    # class) with its clock and nonce pinned gives the same headers as our signer
    compute = _VaultClient.__dict__["_VaultClient__compute_hmac_headers"]
    with mock.patch("alter_sdk.client.time.time", return_value=1700000000.25), \
            mock.patch("alter_sdk.client.secrets.token_hex", return_value=REF_NONCE):
        plain = _VaultClient(api_key=REF_KEY, base_url="http://127.0.0.1:9")
        agent = _VaultClient(api_key=REF_KEY, base_url="http://127.0.0.1:9", caller="my-agent", caller_type="agent")
        cases = [
            (plain, ("POST", "/sdk/token", REF_BODY_A), {}, {}),
            (plain, ("GET", "/sdk/agents?offset=0&limit=10&include_revoked=false", b""), {}, {}),
            (plain, ("POST", "/sdk/token", REF_BODY_A), {"X-Alter-Context": '{"tool":"t"}'},
             {"context": '{"tool":"t"}'}),
            (agent, ("POST", "/sdk/token", REF_BODY_A), {}, {"caller": "my-agent", "caller_type": "agent"}),
            (plain, ("GET", "/sdk/approvals/x%20y?wait=5&b=%7E", b""), {"X-Alter-Actor-ID": "a-1"},
             {"actor_id": "a-1"}),
        ]
        for client, (method, path, body), actor_headers, kw in cases:
            got = compute(client, method, path, body, actor_headers=actor_headers)
            legacy, v2 = strings_to_sign(method, path, REF_TS, REF_NONCE, body, **kw)
            assert got["X-Alter-Signature"] == hmac_hex(REF_KEY, v2), (path, kw)
            assert got.get("X-Alter-Signature-V2") == (hmac_hex(REF_KEY, v2) if v2 != legacy else None)
            assert got["X-Alter-Content-SHA256"] == hashlib.sha256(body).hexdigest()
        # a with_constraints sibling binds its scopes as the 6th line
        narrowed = plain.with_constraints(scopes=["grants:read"])
        got = compute(narrowed, "GET", "/sdk/scopes", b"")
        legacy, _ = strings_to_sign("GET", "/sdk/scopes", REF_TS, REF_NONCE, b"", constraints="grants:read")
        assert got["X-Alter-Signature"] == hmac_hex(REF_KEY, legacy) and got["X-Alter-Scope-Constraints"] == \
            "grants:read"


# ---------------------------------------------------------------------------------------------------------------
# Connect: a session the SDK created, completed in Chromium; and connect() with its own browser flow
# ---------------------------------------------------------------------------------------------------------------

def test_create_connect_session_completed_in_chromium(w, alice_testbed):
    s, page, results = alice_testbed["session"], alice_testbed["page"], alice_testbed["results"]
    assert s.connect_url.startswith(w.v.base + "/") and s.expires_in > 0 and s.session_token, s
    assert "Connected as alice" in page["title"], page
    assert len(results) == 1, results
    r = results[0]
    assert canonical_uuid(r.grant_id) and r.provider_id == "testbed" and r.account_identifier == "alice", r
    assert "read:user" in r.scopes, r
    assert r.operation == "creation" and r.delegation is None, r


def test_connect_with_its_browser_flow(w, bob_testbed):
    assert len(bob_testbed["pages"]) == 1 and "Connected as bob" in bob_testbed["pages"][0]["title"], bob_testbed
    r = bob_testbed["results"][0]
    assert canonical_uuid(r.grant_id) and r.provider_id == "testbed" and r.account_identifier == "bob", r


# ---------------------------------------------------------------------------------------------------------------
# App.request() (raw-token mode) against the protected test-bed API, and proxy_request()
# ---------------------------------------------------------------------------------------------------------------

def test_app_request_get_and_post_with_templating_query_and_headers(w, provider, alice_testbed):
    gid = alice_testbed["grant_id"]

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            by_id = await a.request("GET", f"{provider.api}/user", grant_id=gid, reason="profile for the report")
            by_provider = await a.request("GET", f"{provider.api}/user", provider="testbed")
            echo = await a.request("POST", f"{provider.api}/{{route}}", provider="testbed",
                                   path_params={"route": "echo"}, query_params={"q": "a b&c", "n": "7"},
                                   extra_headers={"X-Trace": "t-1"}, json={"hello": "wörld", "n": [1, 2]},
                                   context={"ticket": "OPS-14"})
            put = await a.request("PUT", f"{provider.api}/echo", grant_id=gid, body=b"raw-bytes",
                                  extra_headers={"Content-Type": "text/plain"})
            return by_id, by_provider, echo, put
    by_id, by_provider, echo, put = run(go())
    assert by_id.status_code == 200 and by_id.json()["login"] == "alice", by_id.text
    assert by_provider.status_code == 200 and by_provider.json()["login"] == "alice", by_provider.text
    e = echo.json()
    assert e["method"] == "POST" and urlsplit(e["path"]).path == "/echo", e
    assert parse_qs(urlsplit(e["path"]).query) == {"q": ["a b&c"], "n": ["7"]}, e["path"]
    assert e["headers"]["x-trace"] == "t-1" and json.loads(e["body"]) == {"hello": "wörld", "n": [1, 2]}, e
    auth = e["headers"]["authorization"]
    assert auth.startswith("Bearer ") and len(auth) > 20, "raw-token mode: the SDK itself sent the credential"
    w.seen_tokens.add(auth.split(" ", 1)[1])
    assert put.json()["method"] == "PUT" and put.json()["body"] == "raw-bytes", put.text


def test_proxy_request_through_the_vault(w, provider, alice_testbed):
    refl = w.reflector

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            user = await a.proxy_request("GET", f"{provider.api}/user", provider="testbed")
            echo = await a.proxy_request("POST", f"{provider.api}/{{route}}", provider="testbed",
                                         path_params={"route": "echo"}, query_params={"q": "x y"},
                                         extra_headers={"X-Trace": "t-2"}, json={"k": "v"})
        async with App(api_key=w.full) as app_only:
            company = await app_only.proxy_request("GET", refl.url("proxy-app"), provider="reflect-app")
        return user, echo, company
    user, echo, company = run(go())
    assert isinstance(user, ApprovalResult) and user.status_code == 200 and user.approval_id is None, user
    assert user.body_json()["login"] == "alice", user
    e = echo.body_json()
    assert e["method"] == "POST" and parse_qs(urlsplit(e["path"]).query) == {"q": ["x y"]}, e
    assert e["headers"]["x-trace"] == "t-2" and json.loads(e["body"]) == {"k": "v"}, e
    sent = e["headers"]["authorization"]
    assert not any(t in echo.body_text() for t in w.seen_tokens), "the proxy scrubs the credential it injected"
    assert "[REDACTED]" in sent or sent == "", sent
    assert company.status_code == 200 and company.body_text().strip() == "logged", company
    assert refl.credentials("proxy-app") == [w.secret["app"]]


# ---------------------------------------------------------------------------------------------------------------
# list_grants(): filters, pagination, who sees what
# ---------------------------------------------------------------------------------------------------------------

def test_list_grants_with_filters_and_pagination(w, alice_testbed, bob_testbed):
    async def go():
        async with App(api_key=w.full) as a:
            p1 = await a.list_grants(provider_id="pager-api", limit=2, offset=0)
            p2 = await a.list_grants(provider_id="pager-api", limit=2, offset=2)
            acct = await a.list_grants(provider_id="pager-api", account="p2")
            active = await a.list_grants(provider_id="pager-api", status="active")
            everything = await a.list_grants(limit=1000)
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            mine = await a.list_grants()
            mine_testbed = await a.list_grants(provider_id="testbed")
        async with App(api_key=w.full) as a:
            bobs = await a.list_grants(end_user_token=w.bob, provider_id="testbed")
        return p1, p2, acct, active, everything, mine, mine_testbed, bobs
    p1, p2, acct, active, everything, mine, mine_testbed, bobs = run(go())
    assert (p1.total, p1.limit, p1.offset, p1.has_more, len(p1.grants)) == (3, 2, 0, True, 2), p1
    assert (p2.total, p2.offset, p2.has_more, len(p2.grants)) == (3, 2, False, 1), p2
    ids = [g.grant_id for g in p1.grants + p2.grants]
    assert len(set(ids)) == 3 and all(canonical_uuid(i) for i in ids), ids
    assert all(g.grant_kind == "managed_secret" and g.managed_secret_slug == "pager-api" and
               g.principal_type == "system" for g in p1.grants + p2.grants), p1.grants + p2.grants
    assert [g.account_identifier for g in acct.grants] == ["p2"], acct
    assert {g.grant_id for g in active.grants} == set(ids), active
    # the app sees app grants, never a user's
    app_ids = {g.grant_id for g in everything.grants}
    assert set(ids) <= app_ids and alice_testbed["grant_id"] not in app_ids and \
        bob_testbed["grant_id"] not in app_ids, everything
    # alice sees hers (OAuth and her managed secret), not the app's nor bob's
    assert [g.grant_id for g in mine_testbed.grants] == [alice_testbed["grant_id"]], mine_testbed
    g = mine_testbed.grants[0]
    assert g.grant_kind == "oauth" and g.principal_type == "user" and g.account_identifier == "alice", g
    assert "read:user" in g.scopes and g.status == "active" and g.created_at, g
    mine_ids = {x.grant_id for x in mine.grants}
    assert not mine_ids & app_ids and bob_testbed["grant_id"] not in mine_ids, mine
    assert any(x.grant_kind == "managed_secret" and x.managed_secret_slug == "hitl-api" for x in mine.grants), mine
    assert [x.grant_id for x in bobs.grants] == [bob_testbed["grant_id"]], bobs


# ---------------------------------------------------------------------------------------------------------------
# Managed secrets: app grants by provider and by UUID; a user entering their own key through a Connect session
# ---------------------------------------------------------------------------------------------------------------

def test_managed_secret_by_provider_and_by_uuid(w):
    refl, gid = w.reflector, w.uuid_of("reflect-app")

    async def go():
        async with App(api_key=w.full) as a:
            r1 = await a.request("GET", refl.url("ms-by-provider"), provider="reflect-app")
            r2 = await a.request("GET", refl.url("ms-by-uuid"), grant_id=gid)
            r3 = await a.request("GET", f"{refl.base}/log", provider="pager-api", account="p2",
                                 query_params={"probe": "ms-account"})
        return r1, r2, r3
    r1, r2, r3 = run(go())
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    assert refl.credentials("ms-by-provider") == [w.secret["app"]]
    assert refl.credentials("ms-by-uuid") == [w.secret["app"]]
    assert refl.credentials("ms-account") == [w.secret["p2"]]


def test_managed_secret_connect_session_key_entry_in_chromium(w):
    refl = w.reflector

    async def go():
        async with App(api_key=w.full) as a:
            s = await a.create_managed_secret_connect_session(provider="ms-api", user_token=w.alice,
                                                              requested_grant={"label": "own"})
            page = await asyncio.to_thread(browse, s.connect_url, "--user", "alice", "--fill",
                                           f"secret={w.secret['ms-alice']}", shots=SHOTS, prefix="sdk-ms-connect")
            results = await a.poll_connect_session(s.session_token, timeout=20, poll_interval=0.5)
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            call = await a.request("GET", refl.url("ms-alice-own"), provider="ms-api")
        return s, page, results, call
    s, page, results, call = run(go())
    assert s.secret_slug == "ms-api" and s.path == "key_entry" and s.connect_url.startswith(w.v.base), s
    assert page.get("filled") == ["secret"], page
    assert len(results) == 1 and canonical_uuid(results[0].grant_id), results
    assert call.status_code == 200 and refl.credentials("ms-alice-own") == [w.secret["ms-alice"]]


# ---------------------------------------------------------------------------------------------------------------
# An Agent with its own key: only its access set
# ---------------------------------------------------------------------------------------------------------------

def test_agent_with_its_own_key_sees_only_its_access_set(w, provider, alice_testbed, bot_me):
    refl = w.reflector
    own, company, other = (w.uuid_of("bot-api", agent_key=w.bot_key), w.uuid_of("reflect-app"),
                           w.uuid_of("other-app"))
    assert canonical_uuid(str(bot_me.id)) and bot_me.name == "sdk-bot" and bot_me.status == "active", bot_me

    async def go():
        out = {}
        async with Agent(api_key=w.bot_key) as ag:
            out["list"] = await ag.list_grants()
            out["company"] = await ag.proxy_request("GET", refl.url("agent-company"), provider="reflect-app")
            out["own"] = await ag.proxy_request("GET", refl.url("agent-own"), grant_id=own)
            for name, kw in (("other", {"grant_id": other}), ("alice", {"grant_id": alice_testbed["grant_id"]}),
                             ("raw", {"grant_id": own, "raw": True}), ("by-provider", {"provider": "testbed"})):
                raw = kw.pop("raw", False)
                try:
                    call = ag.request if raw else ag.proxy_request
                    out[name] = await call("GET", refl.url(f"agent-{name}"), **kw)
                except AlterSDKError as e:
                    out[name] = e
        return out
    out = run(go())
    listed = {g.grant_id: g for g in out["list"].grants}
    assert set(listed) == {own, company}, listed
    assert listed[own].principal_type == "agent" and listed[company].principal_type == "system", listed
    assert out["company"].status_code == 200 and refl.credentials("agent-company") == [w.secret["app"]]
    assert out["own"].status_code == 200 and refl.credentials("agent-own") == [w.secret["bot"]]
    assert isinstance(out["other"], AgentDelegationMissingError), out["other"]
    assert isinstance(out["alice"], GrantNotFoundError), out["alice"]
    assert isinstance(out["by-provider"], (GrantNotFoundError, NoDelegatedGrantError)), out["by-provider"]
    assert isinstance(out["raw"], RestrictedGrantRequiresProxyError), "agent keys never receive a raw credential"
    for probe in ("agent-other", "agent-alice", "agent-raw", "agent-by-provider"):
        assert refl.hits(probe) == [], probe


# ---------------------------------------------------------------------------------------------------------------
# Delegation at Connect, used through the proxy only, then revoke_delegation()
# ---------------------------------------------------------------------------------------------------------------

def test_delegation_at_connect_then_revoke_delegation(w, provider, bot_me):
    s, page, results = connect_in_chromium(w, w.alice, "alice", ["testbed-deleg"], "--delegate",
                                           prefix="sdk-delegate", agent="sdk-bot")
    assert not isinstance(results, Exception), (results, page)
    assert page.get("delegate_boxes", 0) >= 1 and "Connected as alice" in page["title"], page
    r = results[0]
    gid = r.grant_id
    assert r.delegation is not None and r.delegation.agent_id == str(bot_me.id), r
    user_url = f"{provider.api}/user"

    async def go():
        out = {}
        async with Agent(api_key=w.bot_key) as ag:
            out["list"] = await ag.list_grants(provider_id="testbed-deleg")
            out["by_id"] = await ag.proxy_request("GET", user_url, grant_id=gid)
            out["by_provider"] = await ag.proxy_request("GET", user_url, provider="testbed-deleg")
            try:
                await ag.request("GET", user_url, grant_id=gid)
            except AlterSDKError as e:
                out["raw"] = e
            out["revoke"] = await ag.revoke_delegation(gid)
            try:
                await ag.proxy_request("GET", user_url, grant_id=gid)
            except AlterSDKError as e:
                out["after"] = e
            out["revoke_again"] = await ag.revoke_delegation(gid)
            out["list_after"] = await ag.list_grants(provider_id="testbed-deleg")
        async with App(api_key=w.full) as a:
            out["operator_revoke"] = await a.revoke_delegation(gid, str(bot_me.id))
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            out["owner"] = await a.proxy_request("GET", user_url, grant_id=gid)
        return out
    out = run(go())
    listed = [g for g in out["list"].grants if g.grant_id == gid]
    assert listed and listed[0].access_via == "oauth_delegation" and listed[0].grant_kind == "oauth", out["list"]
    assert out["by_id"].status_code == 200 and out["by_id"].body_json()["login"] == "alice", out["by_id"]
    assert out["by_provider"].status_code == 200, out["by_provider"]
    assert isinstance(out.get("raw"), RestrictedGrantRequiresProxyError), out.get("raw")
    assert out["raw"].details.get("error") in ("delegated_grant_requires_proxy", "restricted_grant_requires_proxy")
    assert out["revoke"] is None and out["revoke_again"] is None and out["operator_revoke"] is None
    assert isinstance(out.get("after"), GrantNotFoundError), out.get("after")
    assert [g for g in out["list_after"].grants if g.grant_id == gid] == [], out["list_after"]
    assert out["owner"].status_code == 200, "undelegating leaves the grant itself active"
    recs = [x for x in w.audit() if gid in json.dumps(x) or "undelegat" in json.dumps(x)]
    assert any("delegat" in (x.get("event") or "") for x in recs), recs[-3:]


# ---------------------------------------------------------------------------------------------------------------
# The SDK's integrations: FastAPI dependency, FastMCP decorator, LangChain wrapper
# ---------------------------------------------------------------------------------------------------------------

def test_fastapi_dependency_with_bearer_jwts(w, provider, alice_testbed, bob_testbed):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from alter_sdk.fastapi import AlterFastAPI

    alter = AlterFastAPI(api_key=w.full)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        await alter.vault.close()
    api = FastAPI(lifespan=lifespan)

    @api.get("/profile")
    async def profile(vault=Depends(alter)):
        r = await vault.request("GET", f"{provider.api}/user", provider="testbed", context={"route": "/profile"})
        return r.json()

    @api.get("/grants")
    async def grants(vault=Depends(alter)):
        page = await vault.list_grants(provider_id="testbed")
        return [g.grant_id for g in page.grants]

    with TestClient(api) as c:
        a = c.get("/profile", headers={"Authorization": f"Bearer {w.alice}"})
        b = c.get("/profile", headers={"Authorization": f"Bearer {w.bob}"})
        ga = c.get("/grants", headers={"Authorization": f"Bearer {w.alice}"})
        none = c.get("/profile")
    assert a.status_code == 200 and a.json()["login"] == "alice", a.text
    assert b.status_code == 200 and b.json()["login"] == "bob", b.text
    assert ga.json() == [alice_testbed["grant_id"]], ga.text
    assert none.status_code in (401, 403)
    recs = [r for r in w.audit() if r.get("context") and json.loads(r["context"]).get("route") == "/profile"]
    assert {r.get("principal") for r in recs} >= {w.v.principal(provider, "alice"), w.v.principal(provider, "bob")}


def test_fastmcp_tool_decorator_returns_connect_url_then_data(w, provider):
    from fastmcp import Client, FastMCP

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            alter = AlterMCP(a)
            mcp = FastMCP("sdk-e2e")

            @mcp.tool
            @alter.tool(provider="testbed-mcp")
            async def my_profile(ctx: AlterContext) -> dict:
                """alice's profile at the test-bed API."""
                r = await ctx.request("GET", f"{provider.api}/user")
                return r.json()

            async with Client(mcp) as c:
                tools = await c.list_tools()
                first = (await c.call_tool("my_profile", {})).structured_content
                page = None
                if first.get("connect_url"):
                    page = await asyncio.to_thread(browse, first["connect_url"], "--user", "alice", shots=SHOTS,
                                                   prefix="sdk-fastmcp-connect")
                second = (await c.call_tool("my_profile", {})).structured_content
            return tools, first, page, second
    tools, first, page, second = run(go())
    assert "ctx" not in json.dumps(tools[0].inputSchema), tools[0].inputSchema
    assert first.get("error") == "authorization_required" and first["connect_url"].startswith(w.v.base), first
    assert page and "Connected as alice" in page["title"], page
    assert second.get("login") == "alice", second
    recs = [r for r in w.audit() if r.get("context") and json.loads(r["context"]).get("tool") == "my_profile"]
    assert recs and any(r.get("outcome") == "ok" for r in recs), recs[-3:]


def test_langchain_tool_wrapper_run_and_thread_ids_land_in_the_audit(w, provider, alice_testbed):
    from alter_sdk.langchain import alter_tool

    run_id, thread_id = str(uuid.uuid4()), f"thread-{secrets.token_hex(4)}"

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a, App(api_key=w.full) as company_app:
            @alter_tool(a, provider="testbed")
            async def lc_profile() -> str:
                """The signed-in user's profile (raw-token mode)."""
                r = await a.request("GET", f"{provider.api}/user", provider="testbed")
                return r.text

            @alter_tool(company_app, provider="reflect-app")
            async def lc_company(probe: str) -> str:
                """A call with the company key, through the vault (proxy mode)."""
                r = await company_app.proxy_request("GET", w.reflector.url(probe), provider="reflect-app")
                return r.body_text()
            config = {"run_id": uuid.UUID(run_id), "metadata": {"run_id": run_id},
                      "configurable": {"thread_id": thread_id}}
            return (await lc_profile.ainvoke({}, config=config),
                    await lc_company.ainvoke({"probe": "lc-company"}, config=config))
    profile, company = run(go())
    assert json.loads(profile)["login"] == "alice" and company.strip() == "logged"
    recs = [r for r in w.audit() if r.get("context") and json.loads(r["context"]).get("run_id") == run_id]
    ctxs = [json.loads(r["context"]) for r in recs]
    assert {c.get("tool") for c in ctxs} >= {"lc_profile", "lc_company"}, ctxs
    assert all(c.get("thread_id") == thread_id and c.get("framework") == "langchain" for c in ctxs), ctxs
    found = w.v.cli("audit", "search", "--context", f"thread_id={thread_id}", "--json").stdout
    assert run_id in found, found[:500]


# ---------------------------------------------------------------------------------------------------------------
# Every typed exception of the SDK our server can cause, raised by the SDK itself
# ---------------------------------------------------------------------------------------------------------------

async def raises(exc_type, coro):
    try:
        got = await coro
    except AlterSDKError as e:
        assert isinstance(e, exc_type), f"expected {exc_type.__name__}, got {type(e).__name__}: {e} {e.details}"
        return e
    raise AssertionError(f"expected {exc_type.__name__}, got {got!r}")


def test_grant_not_found_and_ambiguous_grant(w, alice_testbed):
    refl = w.reflector
    pager = {w.uuid_of("pager-api", f"p{i}") for i in (1, 2, 3)}

    async def go():
        async with App(api_key=w.full) as a:
            nf = await raises(GrantNotFoundError, a.request("GET", refl.url("nf"), grant_id=str(uuid.uuid4())))
            nf_proxy = await raises(GrantNotFoundError, a.proxy_request("GET", refl.url("nf"),
                                                                        grant_id=str(uuid.uuid4())))
            amb = await raises(AmbiguousGrantError, a.request("GET", refl.url("amb"), provider="pager-api"))
            amb_proxy = await raises(AmbiguousGrantError, a.proxy_request("GET", refl.url("amb"),
                                                                          provider="pager-api"))
        async with App(api_key=w.full, user_token_getter=lambda: w.bob) as a:   # alice's grant, asked by bob
            other = await raises(GrantNotFoundError, a.request("GET", refl.url("nf"),
                                                               grant_id=alice_testbed["grant_id"]))
        return nf, nf_proxy, amb, amb_proxy, other
    nf, nf_proxy, amb, amb_proxy, other = run(go())
    assert nf.details.get("error") == "grant_not_found" and other.details.get("error") == "grant_not_found"
    assert nf.details["status_code"] == 404 and nf_proxy.details["status_code"] == 404
    for e in (amb, amb_proxy):
        assert e.provider_id == "pager-api", e.details
        assert {c.grant_id for c in e.candidates} == pager or set(e.grant_ids) == pager, e.details
        assert sorted(e.account_identifiers) == ["p1", "p2", "p3"] or \
            sorted(c.account_identifier for c in e.candidates) == ["p1", "p2", "p3"], e.details
    assert refl.hits("nf") == [] and refl.hits("amb") == []


def test_policy_violation_and_grant_expired(w):
    refl = w.reflector

    async def go():
        async with App(api_key=w.full) as a:
            deny_proxy = await raises(PolicyViolationError, a.proxy_request("DELETE", refl.url("deny-proxy"),
                                                                            provider="reflect-app"))
            deny_raw = await raises(PolicyViolationError, a.request("DELETE", refl.url("deny-raw"),
                                                                    provider="reflect-app"))
            expired = await raises(GrantExpiredError, a.request("GET", refl.url("expired"), provider="expiring-api"))
            expired_proxy = await raises(GrantExpiredError, a.proxy_request("GET", refl.url("expired"),
                                                                            provider="expiring-api"))
        return deny_proxy, deny_raw, expired, expired_proxy
    deny_proxy, deny_raw, expired, expired_proxy = run(go())
    for e in (deny_proxy, deny_raw):
        assert e.details["status_code"] == 403 and e.policy_error, e.details
        assert "reflect-no-deletes" in json.dumps(e.details) or "no deletes" in str(e), e.details
    assert expired.details.get("error") == "grant_expired" == expired_proxy.details.get("error")
    assert refl.hits("deny-proxy") == refl.hits("deny-raw") == refl.hits("expired") == []


def test_blocked_destination_for_proxy_and_raw_token(w):
    async def go():
        async with App(api_key=w.full) as a:
            p = await raises(BlockedDestinationError, a.proxy_request("GET", "https://example.com/steal",
                                                                      provider="reflect-app"))
            r = await raises(BlockedDestinationError, a.request("GET", "https://example.com/steal",
                                                                provider="reflect-app"))
        return p, r
    p, r = run(go())
    assert p.details.get("error") == r.details.get("error") == "blocked_destination"


def test_only_agent_admin_keys_act_as_agents_and_only_with_agent_scopes(w, bot_me):
    """An app key naming an agent (X-Alter-Caller-Type: agent) reaches what is delegated to that agent:
    a key without agents:admin is refused; one with it gets no more than the agent's own key."""
    body = {"limit": 5, "offset": 0}
    narrow = w.raw(w.keys["narrow"]["key"], "POST", "/sdk/grants/list", body, caller=str(bot_me.id),
                   caller_type="agent")
    assert narrow.status_code == 403 and narrow.json()["error"] == "insufficient_scope", narrow.text
    assert "agents:admin" in narrow.json()["message"], narrow.text
    listed = w.raw(w.full, "POST", "/sdk/grants/list", body, caller=str(bot_me.id), caller_type="agent")
    assert listed.status_code == 200, listed.text
    # as the agent, the full key loses what an agent key cannot do (here: managing agents)
    agents = w.raw(w.full, "GET", "/sdk/agents", caller=str(bot_me.id), caller_type="agent")
    assert agents.status_code == 403 and agents.json()["error"] == "insufficient_scope", agents.text


def test_insufficient_scope_of_the_app_key(w):
    refl = w.reflector

    async def go():
        async with App(api_key=w.keys["default"]["key"]) as a:    # every scope but tokens:raw
            raw = await raises(InsufficientScopeError, a.request("GET", refl.url("scope-raw"), provider="reflect-app"))
            proxied = await a.proxy_request("GET", refl.url("scope-proxy"), provider="reflect-app")
        async with App(api_key=w.keys["narrow"]["key"]) as a:     # grants:read only
            listed = await a.list_grants(provider_id="reflect-app")
            no_proxy = await raises(InsufficientScopeError, a.proxy_request("GET", refl.url("scope-narrow"),
                                                                            provider="reflect-app"))
        return raw, proxied, listed, no_proxy
    raw, proxied, listed, no_proxy = run(go())
    assert "tokens:raw" in raw.missing + raw.required, raw.details
    assert raw.details["status_code"] == 403 and raw.details["error"] == "insufficient_scope"
    assert proxied.status_code == 200 and refl.credentials("scope-proxy") == [w.secret["app"]]
    assert len(listed.grants) == 1
    assert "proxy:execute" in no_proxy.missing + no_proxy.required, no_proxy.details
    assert refl.hits("scope-raw") == [] and refl.hits("scope-narrow") == []


def test_scope_reauth_required_reported_and_flagged(w, provider, bob_testbed):
    gid = bob_testbed["grant_id"]

    async def go():
        async with App(api_key=w.full, user_token_getter=lambda: w.bob) as a:
            e = await raises(ScopeReauthRequiredError, a.request("GET", f"{provider.api}/repos", grant_id=gid))
            await asyncio.sleep(0.5)           # the scope-mismatch report is a background task
            listed = await a.list_grants(provider_id="testbed")
            try:
                proxied = await a.proxy_request("GET", f"{provider.api}/repos", grant_id=gid)
            except ScopeReauthRequiredError as pe:
                proxied = pe
        return e, listed, proxied
    e, listed, proxied = run(go())
    assert e.missing_scopes == ["repo"] and e.grant_id == gid, e.details
    assert e.details.get("source") == "provider_insufficient_scope"
    g = [x for x in listed.grants if x.grant_id == gid][0]
    assert g.scope_mismatch is True, "the SDK's report-scope-mismatch flagged the grant"
    assert isinstance(proxied, ScopeReauthRequiredError) or proxied.status_code == 403, proxied


def test_provider_unauthorized_in_raw_token_mode(w):
    """The upstream says 401 and echoes the credential in its challenge: the SDK raises, and its api-call audit
    row (which carries the response headers) must be stored scrubbed (S8; checked by test_nothing_leaks)."""
    async def go():
        async with App(api_key=w.full) as a:
            return await raises(ProviderUnauthorizedError, a.request(
                "GET", f"{w.reflector.base}/www-auth", provider="dead-api", query_params={"probe": "dead"}))
    e = run(go())
    assert e.details.get("source") == "provider_unauthorized" and e.status_code == 401, e.details
    assert w.reflector.credentials("dead") == [w.secret["dead"]]


def test_key_errors_and_bad_user_tokens(w, provider):
    unknown = scoped_key("rk")
    wrong_audience = mint_jwt(provider, w.v.base + "/not-mcp", "alice")   # valid, but for another audience

    async def go():
        out = {}
        async with App(api_key=unknown) as a:
            out["unknown"] = await raises(InvalidKeyError, a.list_grants())
        async with App(api_key=w.keys["revoked"]["key"]) as a:
            out["revoked"] = await raises(KeyRevokedError, a.list_grants())
        async with Agent(api_key=w.sleeper_key) as ag:
            out["inactive"] = await raises(AgentInactiveError, ag.list_grants())
            out["inactive_proxy"] = await raises(AgentInactiveError, ag.proxy_request(
                "GET", w.reflector.url("sleeper"), provider="reflect-app"))
        async with App(api_key=w.full) as a:
            out["garbage_jwt"] = await raises(ReAuthRequiredError, a.request(
                "GET", w.reflector.url("jwt"), provider="hitl-api", user_token="not.a.jwt"))
            out["wrong_aud"] = await raises(ReAuthRequiredError, a.proxy_request(
                "GET", w.reflector.url("jwt"), provider="hitl-api", user_token=wrong_audience))
        async with Agent(api_key=w.full) as not_an_agent:
            out["me"] = await raises(MeRequiresAgentKeyError, not_an_agent.me())
        return out
    out = run(go())
    assert out["unknown"].details["status_code"] == 401 and out["unknown"].details["error"] == "invalid_key"
    assert out["revoked"].details["error"] == "key_revoked"
    assert out["inactive"].details["error"] == "agent_inactive"
    for k in ("garbage_jwt", "wrong_aud"):
        assert out[k].details["error"] == "jwt_validation_error", out[k].details
    assert w.reflector.hits("sleeper") == [] and w.reflector.hits("jwt") == []


def test_connect_errors(w):
    # alice signs in to the vault, then declines at the provider
    s, page, denied = connect_in_chromium(w, w.alice, "alice", ["testbed-deny"], "--deny-client", "vault-provider",
                                          prefix="sdk-connect-deny")
    assert isinstance(denied, ConnectDeniedError), (denied, page)

    async def go():
        async with App(api_key=w.full) as a:
            no_agent = await raises(AgentNotFoundError, a.create_connect_session(
                allowed_providers=["testbed"], user_token=w.alice, agent="no-such-agent"))
            s2 = await a.create_connect_session(allowed_providers=["testbed"], user_token=w.alice)
            timeout = await raises(ConnectTimeoutError, a.poll_connect_session(s2.session_token, timeout=1,
                                                                               poll_interval=0.3))
        return no_agent, timeout
    no_agent, timeout = run(go())
    assert no_agent.details.get("error") == "agent_not_found", no_agent.details
    assert timeout.details.get("reason") == "poll_deadline_elapsed", timeout.details


def test_revoke_grant(w):
    gid = w.uuid_of("revoke-api")

    async def go():
        async with App(api_key=w.full) as a:
            res = await a.revoke_grant(gid, reason="offboarding")
            try:
                after = await a.request("GET", w.reflector.url("revoked"), grant_id=gid)
            except (GrantNotFoundError, GrantRevokedError) as e:
                after = e
            listed = await a.list_grants(provider_id="revoke-api")
        return res, after, listed
    res, after, listed = run(go())
    assert res.success is True and res.grant_id == gid and res.revoked_at, res
    assert isinstance(after, (GrantNotFoundError, GrantRevokedError)), after
    assert all(g.status != "active" for g in listed.grants), listed
    assert w.reflector.hits("revoked") == []


def test_approval_gated_grant_via_proxy_approve_and_deny(w):
    refl = w.reflector

    async def go():
        out = {}
        async with App(api_key=w.full, user_token_getter=lambda: w.alice) as a:
            out["raw"] = await raises(RestrictedGrantRequiresProxyError, a.request("GET", refl.url("hitl-raw"),
                                                                                   provider="hitl-api"))
            pending = await a.proxy_request("GET", refl.url("hitl-yes"), provider="hitl-api", reason="weekly sync")
            out["pending"] = pending
            out["status"] = await a.get_approval_status(str(pending.approval_id))
            out["page"] = await asyncio.to_thread(browse, pending.approval_url, "--user", "alice", "--approve-call",
                                                  shots=SHOTS, prefix="sdk-approval")
            out["result"] = await a.await_approval(str(pending.approval_id), timeout=30, poll_interval=0.5)
            out["final"] = await a.get_approval_status(str(pending.approval_id), wait=2)
            pending2 = await a.proxy_request("GET", refl.url("hitl-no"), provider="hitl-api")
            out["page2"] = await asyncio.to_thread(browse, pending2.approval_url, "--user", "alice", "--approve-call",
                                                   "--deny-call", shots=SHOTS, prefix="sdk-approval-deny")
            out["denied"] = await raises(ApprovalDeniedError, a.await_approval(str(pending2.approval_id), timeout=30,
                                                                              poll_interval=0.5))
            out["denied_status"] = await a.get_approval_status(str(pending2.approval_id))
        return out
    out = run(go())
    assert out["raw"].details.get("error") == "hitl_grant_requires_proxy", out["raw"].details
    p = out["pending"]
    assert isinstance(p, PendingApproval) and p.approval_url.startswith(w.v.base + "/") and p.gates, p
    assert out["status"].status == "pending", out["status"]
    assert out["result"].status_code == 200 and out["result"].body_text().strip() == "logged", out["result"]
    assert out["final"].status == "executed" and out["final"].has_result, out["final"]
    assert refl.credentials("hitl-yes") == [w.secret["hitl"]], "executed once, with alice's key"
    assert out["denied_status"].status == "denied" and refl.hits("hitl-no") == [] and refl.hits("hitl-raw") == []


def test_sdk_turned_off_answers_404(provider):
    v = HostedVault(provider, identity="jwt", extra_toml="[sdk]\nenabled = false\n")
    try:
        key = json.loads(v.cli("keys", "create", "k", "--json").stdout)["key"]
        v.start()
        r = requests.post(f"{v.base}/sdk/grants/list", json={"limit": 1, "offset": 0},
                          headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 404, r.text

        async def go():
            with mock.patch.dict(os.environ, {"ALTER_BASE_URL": v.base}):
                async with App(api_key=key) as a:
                    return await raises(GrantNotFoundError, a.request("GET", "https://example.com/", grant_id=str(
                        uuid.uuid4())))
        e = run(go())
        assert e.details["status_code"] == 404
        assert requests.post(v.mcp_url, json={}, timeout=10).status_code == 401, "MCP is still served"
    finally:
        v.stop()
        v.cleanup()


def test_unimplemented_endpoints_answer_501_naming_them(w):
    # every path the SDK can call is either served or a clear 501 naming it; unknown ones are 501 too, and only
    # after authentication (a stranger learns nothing)
    for method, path, body in (("GET", "/sdk/provider-specs", None), ("POST", "/sdk/no-such-endpoint", {})):
        r = w.raw(w.full, method, path, body)
        if r.status_code == 501:
            b = r.json()
            b = b.get("detail", b) if isinstance(b.get("detail"), dict) else b
            assert b["error"] == "not_implemented" and path in b["message"], b
            e = sdk_visible(r)
            assert type(e) is BackendError and path in str(e), e
        else:
            assert path != "/sdk/no-such-endpoint" and r.status_code < 300, (path, r.status_code, r.text)
    stranger = requests.post(f"{w.v.base}/sdk/no-such-endpoint", json={}, timeout=10)
    assert stranger.status_code == 401, stranger.text


# ---------------------------------------------------------------------------------------------------------------
# Audit: caller and context of every /sdk call, in the same chain as MCP calls
# ---------------------------------------------------------------------------------------------------------------

def test_every_sdk_call_is_audited_with_caller_and_context(w, bot_me):
    refl = w.reflector
    before = {r["seq"] for r in w.audit()}

    async def go():
        async with App(api_key=w.full, caller="nightly-job") as a:
            await a.proxy_request("GET", refl.url("audit-proxy"), provider="reflect-app",
                                  context={"ticket": "OPS-77"})
            await a.request("GET", refl.url("audit-raw"), provider="reflect-app", context={"ticket": "OPS-78"})
        async with Agent(api_key=w.bot_key) as ag:
            async with ag.trace(run_id="run-list-1", thread_id="th-list-1"):
                await ag.list_grants()
    run(go())
    new = [r for r in w.audit() if r["seq"] not in before]
    ctx = lambda r: json.loads(r["context"]) if r.get("context") else {}  # noqa: E731
    proxy = [r for r in new if ctx(r).get("ticket") == "OPS-77"]
    assert proxy and all(r.get("agent") == "nightly-job" for r in proxy), proxy
    assert any(r.get("status") == 200 and r.get("outcome") == "ok" for r in proxy), proxy
    raw = [r for r in new if ctx(r).get("ticket") == "OPS-78"]
    # the credential release (/sdk/token) and the SDK's own api-call row both land, with caller and context
    assert len(raw) >= 2 and all(r.get("agent") == "nightly-job" for r in raw), raw
    listed = [r for r in new if ctx(r).get("run_id") == "run-list-1"]
    assert listed and all(r.get("principal_kind") == "agent" and ctx(r).get("thread_id") == "th-list-1"
                          for r in listed), listed
    verify = w.v.cli("audit", "verify").stdout
    assert verify.startswith("ok:"), verify


# ---------------------------------------------------------------------------------------------------------------
# Bad signatures, stale timestamps, replayed nonces, tampered bodies, wrong key scopes: refused, audited
# ---------------------------------------------------------------------------------------------------------------

def test_signature_timestamp_nonce_and_scope_refusals(w):
    key = w.full
    other = w.keys["default"]["key"]
    body = {"limit": 1, "offset": 0}
    path = "/sdk/grants/list"
    seqs = {r["seq"] for r in w.audit()}

    ok = w.raw(key, "POST", path, body)
    assert ok.status_code == 200 and "grants" in ok.json(), ok.text
    get_ok = w.raw(key, "GET", "/sdk/scopes")
    assert get_ok.status_code == 200, get_ok.text

    cases = {}
    now = int(time.time())
    # a flipped signature character
    bad = w.raw(key, "POST", path, body, headers={"X-Alter-Signature": "0" * 64})
    cases["bad signature"] = (bad, "invalid_signature")
    # signed with another key's signing key
    cases["other key's signature"] = (w.raw(key, "POST", path, body, sign_with=other), "invalid_signature")
    # body changed after signing (the content hash header claims the signed body)
    cases["tampered body"] = (w.raw(key, "POST", path, {"limit": 1000, "offset": 0}, sign_body=body),
                              "invalid_signature")
    # query changed after signing
    cases["tampered query"] = (w.raw(key, "GET", "/sdk/agents?limit=11&offset=0&include_revoked=true",
                                     sign_path="/sdk/agents?limit=10&offset=0&include_revoked=false"),
                               "invalid_signature")
    # identity headers added but not bound into the signature (downgrade to the legacy string)
    cases["unbound caller"] = (w.raw(key, "POST", path, body, caller="someone-else", bind_identity=False),
                               "invalid_signature")
    cases["unbound context"] = (w.raw(key, "POST", path, body, context='{"ticket":"forged"}', bind_identity=False),
                                "invalid_signature")
    cases["no signature"] = (w.raw(key, "POST", path, body, drop=("X-Alter-Signature",)), None)
    cases["stale timestamp"] = (w.raw(key, "POST", path, body, ts=now - 3600), "stale_timestamp")
    cases["future timestamp"] = (w.raw(key, "POST", path, body, ts=now + 3600), "stale_timestamp")
    nonce = secrets.token_hex(16)
    first = w.raw(key, "POST", path, body, nonce=nonce, ts=now)
    assert first.status_code == 200, first.text
    cases["replayed nonce"] = (w.raw(key, "POST", path, body, nonce=nonce, ts=now), "replayed_nonce")
    # the same nonce is refused even with a fresh signature over another body
    cases["reused nonce"] = (w.raw(key, "POST", path, {"limit": 2, "offset": 0}, nonce=nonce), "replayed_nonce")
    # wrong key scope: a grants:read key asking for a raw credential
    token_body = {"provider_id": "reflect-app", "reason": None, "request": {"method": "GET",
                                                                            "url": w.reflector.url("raw-scope")}}
    cases["wrong key scope"] = (w.raw(w.keys["narrow"]["key"], "POST", "/sdk/token", token_body),
                                "insufficient_scope")

    for name, (r, code) in cases.items():
        want_status = 403 if code == "insufficient_scope" else 401
        assert r.status_code == want_status, (name, r.status_code, r.text)
        b = r.json()
        b = b["detail"] if isinstance(b.get("detail"), dict) else b
        if code:
            assert b.get("error") == code, (name, b)
        assert "access_token" not in b and w.secret["app"] not in r.text, name
        e = sdk_visible(r)
        if code == "insufficient_scope":
            assert isinstance(e, InsufficientScopeError) and "tokens:raw" in e.missing + e.required, (name, e)
        else:
            # the SDK has no typed class for these: a BackendError carrying the code (never InvalidKeyError,
            # which would tell the caller its key is bad)
            assert type(e) is BackendError and e.details["status_code"] == 401, (name, type(e), e)
    assert w.reflector.hits("raw-scope") == []

    new = [r for r in w.audit() if r["seq"] not in seqs]
    refused = [r for r in new if r.get("outcome") != "ok"]
    for code, n in (("invalid_signature", 6), ("stale_timestamp", 2), ("replayed_nonce", 2),
                    ("insufficient_scope", 1)):
        found = [r for r in refused if code in json.dumps(r)]
        assert len(found) >= n, (code, len(found), refused[-5:])
    assert len(refused) >= len(cases), (len(refused), len(cases))


def test_key_rotation_with_overlap_and_listing(w):
    old = w.keys["rotated"]
    out = w.v.cli("keys", "rotate", old["id"], "--overlap", "1d")
    new = KEY_RE.search(out.stdout)
    assert new and new.group(0) != old["key"], out.stdout

    async def go():
        async with App(api_key=old["key"]) as a:
            o = await a.list_grants(provider_id="reflect-app")
        async with App(api_key=new.group(0)) as a:
            n = await a.list_grants(provider_id="reflect-app")
        return o, n
    o, n = run(go())
    assert len(o.grants) == len(n.grants) == 1
    listing = w.v.cli("keys", "list", "--json").stdout
    assert "sdk-full" in listing and "sdk-revoked" in listing
    for k in (*(x["key"] for x in w.keys.values()), new.group(0)):
        assert k not in listing, "keys list never shows a whole key"


# ---------------------------------------------------------------------------------------------------------------
# Nothing leaks: no credential in any /sdk answer but /sdk/token's access_token, in the server's log, or the audit
# ---------------------------------------------------------------------------------------------------------------

def _canary(token: str) -> str:
    """A JWT's signature part (its header and claims are shared with every other JWT of the issuer)."""
    parts = token.split(".")
    return parts[2] if len(parts) == 3 and len(parts[2]) > 16 else token


def test_nothing_leaks(w):
    rec = w.recorder.items + w.raw_responses
    assert len(rec) > 50, "the suite ran (run the whole module)"
    # credentials: every access_token /sdk/token released, every managed secret, what the API echoed
    released = set()
    for method, path, status, headers, content in rec:
        if path == "/sdk/token" and status == 200:
            released.add(json.loads(content)["access_token"])
    assert released >= {w.secret["app"]}, "raw-token mode released the company key to the trusted backend"
    credentials = {_canary(t) for t in released | w.seen_tokens} | set(w.secret.values())
    # things that are not credentials of a provider but must not be written anywhere either
    bearer = {_canary(w.alice), _canary(w.bob)} | {k[len("alter_rk_") + 8:] for k in
                                                   (x["key"] for x in w.keys.values())} | {
        w.bot_key[len("alter_ak_") + 8:], w.sleeper_key[len("alter_ak_") + 8:]}
    cred_scan, all_scan = LeakScanner(credentials), LeakScanner(credentials | bearer)
    leaks = []
    for method, path, status, headers, content in rec:
        text = content.decode("utf-8", "replace")
        if path == "/sdk/token" and status == 200:
            body = json.loads(content)
            body.pop("access_token")
            text = json.dumps(body)
        hits = cred_scan.scan(text + "\n" + json.dumps(headers))
        if hits:
            leaks.append((f"{method} {path} {status}", hits))
    log = (w.v.dir / "http.log").read_text(errors="replace")
    audit = w.v.cli("audit", "export", "--jsonl").stdout + w.v.cli("audit", "search", "--limit", "100000",
                                                                    "--json").stdout
    for name, text in (("serve log", log), ("audit", audit)):
        hits = all_scan.scan(text)
        if hits:
            leaks.append((name, hits))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "alter-sdk-leaks.json").write_text(json.dumps(
        {"exchanges": len(rec), "credentials": len(credentials), "leaks": [(n, sorted(h)) for n, h in leaks]},
        indent=1, default=list))
    assert not leaks, leaks[:5]
