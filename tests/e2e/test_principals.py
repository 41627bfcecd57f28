"""Issue 13: principals — users, IdP groups, the app, named agents, delegation, grant lifetimes, request context
and AWS SigV4 (docs/principals.md), proven with real parts: oidc-provider issuing JWTs with a groups claim and
client-credentials JWTs, the official MCP Python SDK over Streamable HTTP and stdio, headless Chromium on the
Connect page, a hostile-but-honest upstream (support/reflector.py) that logs which credential each call carried,
and moto's S3 server with its SigV4/IAM checks on.

Assumptions where docs/principals.md is silent or ambiguous (the implementation should match these, or the
test should be changed with the doc):
 A1 `agents create NAME` prints the key (`alter_ak_…`) on stdout and the agent id (`agt_…`) on stdout or stderr;
    a second create with the same --idempotency-key prints no `alter_ak_` key, names the same id and exits 0; the
    same key with another name exits non-zero mentioning the idempotency key; `agents rotate-key` prints the new
    key on stdout.
 A2 `secret add … --for OWNER` prints "… as grant grt_…" like today; OWNER is `user:<principal id>` (in hosted
    jwt mode `user:<issuer>#<sub>`), `group:NAME`, `app` or `agent:NAME` (agent *name*). `--for group:` (empty
    name), `--for agent:<no such agent>` and an unknown kind are refused (non-zero exit, the flag in stderr);
    `--for group:<a group no token has carried yet>` is accepted (groups live at the IdP).
 A3 list_grants entries carry `id`, `provider`, `account`, `principal_type` (user|group|app|agent); for an agent
    also `access` (own|access_set|delegated); for a user `delegated_to` (a list mentioning the agent's name).
 A4 Outside the caller's set: by `grant_id` → isError, error `grant_not_found`; by `provider` with no usable
    grant → `unknown_provider` (custom provider) or `authorization_required`; several → `ambiguous_grant`
    whose structured content contains every candidate's grant id.
 A5 `agents update NAME --grant G`, `--remove-grant G`, `--scopes P=a,b` (replaces P's list),
    `--clear-scopes P` (removes P's allowlist: unrestricted again), `--jwt-subject SUB`, `--disable`, `--enable`;
    all take effect on the agent's next call, also inside an MCP session opened before the change.
 A6 Access sets hold app (and group/agent) grants, never a user's own grant (refused: that takes the
    owner's delegation); the operator cannot delegate a user's grant without `--as-principal` of its owner; an agent never sees user or group grants unless
    delegated. A caller label (meta or X-Vault-Agent), even one equal to an existing agent's name or id, gives no
    access.
 A7 `grants delegate GRANT AGENT` / `grants undelegate GRANT AGENT` take the agent's name; undelegating
    twice exits 0. Tools: `undelegate_grant {grant_id, agent: NAME}` and `release_delegation {grant_id}`; a
    repeat is not an error (no isError). Another user calling undelegate_grant on alice's grant gets
    `grant_not_found`.
 A8 `start_connect` takes `agent` (name) and `ttl_seconds`; the Connect page then shows
    `input[type=checkbox][id^="delegate-"]` (support/browser.mjs --delegate ticks it).
 A9 Scope allowlist refusals are tool errors (isError) with error `scope_not_allowed` whose message names the
    refused scope and the allowed ones.
 A10 Bad bearer keys: HTTP 401 with `WWW-Authenticate: Bearer … error="invalid_token", error_description="…"`;
    the description says `checksum` for a checksum failure and `disabled` for a disabled agent. Each refused
    well-prefixed (`alter_ak_`) key adds an audit record whose outcome is not `ok`; no audit record, log line or
    database byte holds a whole key (nor a truncated one).
 A11 Context violations and an `agt_…` label naming no agent are JSON-RPC invalid-params errors (-32602) whose
    message contains `context` (resp. the label) and the offending key; each adds an audit record with outcome
    `invalid_request`. `audit search --context ticket=OPS-1432 --json` finds the call and shows its context.
 A12 Audit records (export --jsonl) carry `principal_kind`, `grant_owner` (`user:<id>`, `group:NAME`, `app`,
    `agent:NAME` or `agent:<agt_ id>`) and, for a delegated call, `delegation` naming the user who delegated.
 A13 SigV4 secrets: `secret add P --inject sigv4 --username AKID --region R --service S --host H` with the
    secret access key on stdin and, optionally, the session token on a second stdin line. The signer sends x-amz-content-sha256 (S3 needs
    it; moto refuses a SigV4 request without it).
 A14 TTLs: `start_connect` `ttl_seconds`; `secret add --ttl 2s` (s/m/h/d units like `audit --since`); a
    request above `[providers.X] max_ttl` is refused naming the limit (as `1h` or `3600`). An expired OAuth
    grant answers isError `grant_expired` with `connect_url` to its user; list_grants shows `status: "expired"`
    and `expires_at`; completing that link keeps the grant id.
 A15 Over stdio, VAULT_MCP_AGENT_KEY selects the agent; a malformed key makes `serve` exit non-zero at start-up
    with a message naming VAULT_MCP_AGENT_KEY.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mcp import ClientSession
from mcp.shared.exceptions import MCPError as McpError

from harness import (ARTIFACTS, BIN, HERE, HostedVault, Provider, Vault, browse, free_port, mint_jwt,
                     wait_port)

KEY_RE = re.compile(r"\balter_ak_[A-Za-z0-9_]+")
AGENT_ID_RE = re.compile(r"\bagt_[a-z0-9]+")
GRANT_RE = re.compile(r"\bgrt_[a-z0-9]+")
SHOTS = ARTIFACTS / "screenshots"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------------------------
# Parts: oidc-provider (+ resource API), the reflector, moto, the hosted vault
# ---------------------------------------------------------------------------------------------------------------

class Reflector:
    """support/reflector.py on a free port; every request (with the credential it carried) is logged."""

    def __init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.host}"
        self.log = Path(tempfile.mkdtemp(prefix="vault-e2e-principals-")) / "reflector.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "support" / "reflector.py"), str(self.port),
                                      "--log", str(self.log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def hits(self, probe: str) -> list[dict]:
        """Requests whose query carried probe=<probe>."""
        from urllib.parse import parse_qs
        out = []
        for line in self.log.read_text().splitlines():
            e = json.loads(line)
            if probe in parse_qs(e["query"]).get("probe", []):
                out.append(e)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        import shutil
        shutil.rmtree(self.log.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def provider():
    # access tokens (the users' JWTs, the API's tokens) outlive the module
    p = Provider(ACCESS_TOKEN_TTL="900")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def reflector():
    r = Reflector()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def hosted(provider):
    v = HostedVault(provider, identity="jwt")
    v.config.write_text(v.config.read_text() + 'groups_claim = "groups"\n')  # appended to [http.idp]
    try:
        v.start()
        yield v
    finally:
        v.stop()
        v.cleanup()


@pytest.fixture(scope="module")
def moto():
    from moto_s3 import MotoS3
    s = MotoS3().start()
    yield s
    s.stop()


def set_groups(provider: Provider, user: str, groups: list[str], create: bool = False) -> None:
    r = requests.post(f"{provider.issuer}/__admin/{'users' if create else 'groups'}",
                      json={"user": user, "groups": groups}, timeout=10)
    r.raise_for_status()


def user_id(v: HostedVault, provider: Provider, user: str) -> str:
    return v.principal(provider, user)


def token(v: HostedVault, provider: Provider, user: str) -> str:
    """A fresh JWT for `user` (carrying their groups as of now)."""
    return mint_jwt(provider, v.mcp_url, user)


def cc_token(provider: Provider, resource: str, client: str = "ci-agent") -> str:
    r = requests.post(f"{provider.issuer}/token", auth=(client, f"{client}-secret"), timeout=10,
                      data={"grant_type": "client_credentials", "resource": resource, "scope": "mcp:tools"})
    r.raise_for_status()
    return r.json()["access_token"]


# ---------------------------------------------------------------------------------------------------------------
# CLI and MCP helpers
# ---------------------------------------------------------------------------------------------------------------

class Agent:
    def __init__(self, name: str, id: str, key: str):
        self.name, self.id, self.key = name, id, key


def create_agent(v: Vault, name: str, *extra: str) -> Agent:
    p = v.cli("agents", "create", name, *extra)
    key, aid = KEY_RE.search(p.stdout), AGENT_ID_RE.search(p.stdout + p.stderr)
    assert key and aid, f"agents create printed no key or id:\n{p.stdout}\n{p.stderr}"
    return Agent(name, aid.group(0), key.group(0))


def add_secret(v: Vault, provider_id: str, owner: str | None, account: str, secret: str, host: str,
               *extra: str) -> str:
    args = ["secret", "add", provider_id, "--account", account, "--host", host, *extra]
    if owner:
        args += ["--for", owner]
    p = v.cli(*args, input=secret + "\n")
    m = GRANT_RE.search(p.stdout)
    assert m, p.stdout
    return m.group(0)


@contextlib.asynccontextmanager
async def session(v: HostedVault, bearer: str | None, headers: dict | None = None):
    """A Streamable HTTP session of the official Python SDK with this bearer (JWT, agent key) and headers."""
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    h = dict(headers or {})
    if bearer:
        h["Authorization"] = f"Bearer {bearer}"
    async with create_mcp_http_client(headers=h) as http:
        async with streamable_http_client(v.mcp_url, http_client=http) as (r, w, *_):
            async with ClientSession(r, w) as s:
                await s.initialize()
                yield s


async def tool(s: ClientSession, name: str, args: dict, meta: dict | None = None) -> dict:
    """One tools/call → a plain dict: the structured content plus `_is_error`, or for a JSON-RPC error
    {"rpc_code", "error": "invalid_params"|"rpc_error", "message", "data"}."""
    try:
        r = await s.call_tool(name, args, meta=meta) if meta else await s.call_tool(name, args)
    except McpError as e:
        return {"rpc_code": e.error.code, "error": "invalid_params" if e.error.code == -32602 else "rpc_error",
                "message": e.error.message, "data": e.error.data}
    out = dict(r.structured_content or {})
    out["_is_error"] = bool(r.is_error)
    out["_text"] = " ".join(getattr(c, "text", "") for c in r.content)
    return out


def run(coro):
    return asyncio.run(coro)


def calls(v: HostedVault, bearer: str | None, steps: list, headers: dict | None = None) -> list[dict]:
    """Run [(tool, args[, meta]) | callable] in one session; a callable step runs between calls (a CLI change)."""
    async def go():
        out = []
        async with session(v, bearer, headers) as s:
            for st in steps:
                if callable(st):
                    st()
                    out.append(None)
                else:
                    out.append(await tool(s, *st))
        return out
    return run(go())



def lend(hosted, gid: str, agent: str) -> None:
    """Delegate `gid` to `agent` the way its owner does: a user's grant needs its owner's say-so
    (`--as-principal`), the operator cannot lend it alone."""
    g = next(x for x in json.loads(hosted.cli("grants", "list", "--all", "--json").stdout) if x["id"] == gid)
    who = ("--as-principal", g["principal"]) if g.get("principal_type") == "user" else ()
    hosted.cli(*who, "grants", "delegate", gid, agent)

def one(v: HostedVault, bearer: str | None, name: str, args: dict, meta: dict | None = None) -> dict:
    return calls(v, bearer, [(name, args, meta)])[0]


def grant_ids(listing: dict) -> set[str]:
    assert "grants" in listing, listing
    return {g["id"] for g in listing["grants"]}


def probe_call(reflector: Reflector, probe: str, **sel) -> dict:
    return {"method": "GET", "url": f"{reflector.base}/log", "query_params": {"probe": probe}, **sel}


def audit_records(v: Vault) -> list[dict]:
    return [json.loads(l) for l in v.cli("audit", "export", "--jsonl").stdout.splitlines() if l.strip()]


def init_status(v: HostedVault, bearer: str) -> tuple[int, str, str]:
    r = requests.post(v.mcp_url, json=INIT, headers={**JSON_HEADERS, "Authorization": f"Bearer {bearer}"}, timeout=15)
    return r.status_code, r.headers.get("www-authenticate", ""), r.text


def refused(out: dict) -> bool:
    return out.get("status") != 200 and bool(out.get("error"))


# ---------------------------------------------------------------------------------------------------------------
# The verifier itself (needs no vault): moto checks SigV4 signatures
# ---------------------------------------------------------------------------------------------------------------

def test_moto_verifier_checks_signatures(moto):
    results = moto.check()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "moto-sigv4-controls.json").write_text(json.dumps(results, indent=1))
    assert results["correct key"] == (200, "") and results["wrong secret"] == (403, "SignatureDoesNotMatch"), results


# ---------------------------------------------------------------------------------------------------------------
# Users and groups
# ---------------------------------------------------------------------------------------------------------------

def test_group_grant_follows_the_groups_claim(provider, reflector, hosted):
    set_groups(provider, "alice", ["eng", "data-team"])
    set_groups(provider, "bob", ["eng"])
    eng = add_secret(hosted, "eng-api", "group:eng", "eng-shared", "sec-eng-shared", reflector.host)
    data = add_secret(hosted, "data-api", "group:data-team", "data-shared", "sec-data-shared", reflector.host)
    alice, bob = token(hosted, provider, "alice"), token(hosted, provider, "bob")

    a_list, a_eng, a_data = calls(hosted, alice, [
        ("list_grants", {}),
        ("vault_request", probe_call(reflector, "grp-alice-eng", provider="eng-api")),
        ("vault_request", probe_call(reflector, "grp-alice-data", provider="data-api"))])
    assert {eng, data} <= grant_ids(a_list), a_list
    assert {g["principal_type"] for g in a_list["grants"] if g["id"] in (eng, data)} == {"group"}
    assert a_eng.get("status") == 200 and a_data.get("status") == 200, (a_eng, a_data)
    assert [h["credential"] for h in reflector.hits("grp-alice-eng")] == ["sec-eng-shared"]
    assert [h["credential"] for h in reflector.hits("grp-alice-data")] == ["sec-data-shared"]

    b_list, b_eng, b_data, b_data_id = calls(hosted, bob, [
        ("list_grants", {}),
        ("vault_request", probe_call(reflector, "grp-bob-eng", provider="eng-api")),
        ("vault_request", probe_call(reflector, "grp-bob-data", provider="data-api")),
        ("vault_request", probe_call(reflector, "grp-bob-data-id", grant_id=data))])
    assert eng in grant_ids(b_list) and data not in grant_ids(b_list), b_list
    assert b_eng.get("status") == 200, b_eng
    assert refused(b_data) and b_data["error"] in ("unknown_provider", "authorization_required"), b_data
    assert b_data_id["error"] == "grant_not_found", b_data_id
    assert reflector.hits("grp-bob-data") == [] and reflector.hits("grp-bob-data-id") == []

    # bob leaves `eng` at the IdP: his next token says so, and his first call with it is refused
    set_groups(provider, "bob", [])
    bob_now = token(hosted, provider, "bob")
    b_eng2, b_list2 = calls(hosted, bob_now, [
        ("vault_request", probe_call(reflector, "grp-bob-eng-after", provider="eng-api")),
        ("list_grants", {})])
    assert refused(b_eng2), b_eng2
    assert reflector.hits("grp-bob-eng-after") == []
    assert eng not in grant_ids(b_list2)
    # alice is untouched
    assert one(hosted, alice, "vault_request", probe_call(reflector, "grp-alice-eng-2", provider="eng-api"))["status"] == 200
    # and back in the group, bob's next token works again (nothing was cached)
    set_groups(provider, "bob", ["eng"])
    assert one(hosted, token(hosted, provider, "bob"), "vault_request",
               probe_call(reflector, "grp-bob-eng-back", provider="eng-api"))["status"] == 200

    # the audit trail names the caller and the grant's owner
    recs = [r for r in audit_records(hosted) if r.get("grant_id") == eng and r.get("outcome") == "ok"]
    assert recs and all(r.get("principal_kind") == "user" and r.get("grant_owner") == "group:eng" for r in recs), recs[-1:]
    assert {r["principal"] for r in recs} >= {user_id(hosted, provider, "alice"), user_id(hosted, provider, "bob")}


def test_own_and_group_grant_are_both_listed_and_a_provider_call_is_ambiguous(provider, reflector, hosted):
    set_groups(provider, "alice", ["eng", "data-team"])
    grp = add_secret(hosted, "amb-api", "group:eng", "team", "sec-amb-team", reflector.host)
    own = add_secret(hosted, "amb-api", f"user:{user_id(hosted, provider, 'alice')}", "mine", "sec-amb-mine", reflector.host)
    listing, amb, by_id = calls(hosted, token(hosted, provider, "alice"), [
        ("list_grants", {"provider": "amb-api"}),
        ("vault_request", probe_call(reflector, "amb-provider", provider="amb-api")),
        ("vault_request", probe_call(reflector, "amb-own", grant_id=own))])
    assert {(g["id"], g["principal_type"]) for g in listing["grants"]} == {(grp, "group"), (own, "user")}, listing
    assert amb["_is_error"] and amb["error"] == "ambiguous_grant", amb
    assert grp in json.dumps(amb) and own in json.dumps(amb), "the ambiguity lists each candidate's grant_id"
    assert reflector.hits("amb-provider") == []
    assert by_id["status"] == 200 and [h["credential"] for h in reflector.hits("amb-own")] == ["sec-amb-mine"]


# ---------------------------------------------------------------------------------------------------------------
# Agents: key over Streamable HTTP, access set, idempotent create
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ci_bot(provider, reflector, hosted):
    """ci-bot with its own grant and an app grant in its access set; another app grant and a grant of alice's
    that it must not see."""
    bot = create_agent(hosted, "ci-bot", "--description", "nightly release notes")
    bot.own = add_secret(hosted, "bot-api", "agent:ci-bot", "bot", "sec-bot-own", reflector.host)
    bot.app = add_secret(hosted, "app-api", "app", "company", "sec-app-company", reflector.host)
    bot.app_other = add_secret(hosted, "app-other", "app", "other", "sec-app-other", reflector.host)
    bot.alice = add_secret(hosted, "alice-api", f"user:{user_id(hosted, provider, 'alice')}", "alice",
                           "sec-alice-own", reflector.host)
    hosted.cli("agents", "update", "ci-bot", "--grant", bot.app)
    return bot


def test_agent_key_over_http_sees_only_its_access_set(provider, reflector, hosted, ci_bot):
    b = ci_bot
    out = calls(hosted, b.key, [
        ("list_grants", {}),
        ("vault_request", probe_call(reflector, "bot-own", grant_id=b.own)),
        ("vault_request", probe_call(reflector, "bot-app", provider="app-api")),
        ("vault_request", probe_call(reflector, "bot-app-other", grant_id=b.app_other)),
        ("vault_request", probe_call(reflector, "bot-alice", grant_id=b.alice)),
        ("vault_request", probe_call(reflector, "bot-alice-p", provider="alice-api")),
        # widening: takes effect on the next call of this same session
        lambda: hosted.cli("agents", "update", "ci-bot", "--grant", b.app_other),
        ("vault_request", probe_call(reflector, "bot-app-other-2", grant_id=b.app_other)),
        # narrowing likewise
        lambda: hosted.cli("agents", "update", "ci-bot", "--remove-grant", b.app_other),
        ("vault_request", probe_call(reflector, "bot-app-other-3", grant_id=b.app_other)),
        ("list_grants", {}),
    ])
    listing = out[0]
    assert grant_ids(listing) == {b.own, b.app}, listing
    access = {g["id"]: (g["principal_type"], g.get("access")) for g in listing["grants"]}
    assert access == {b.own: ("agent", "own"), b.app: ("app", "access_set")}, access
    assert out[1]["status"] == 200 and reflector.hits("bot-own")[0]["credential"] == "sec-bot-own"
    assert out[2]["status"] == 200 and reflector.hits("bot-app")[0]["credential"] == "sec-app-company"
    for i, probe in ((3, "bot-app-other"), (4, "bot-alice")):
        assert out[i]["_is_error"] and out[i]["error"] == "grant_not_found", out[i]
        assert reflector.hits(probe) == []
    assert refused(out[5]) and reflector.hits("bot-alice-p") == []
    assert out[7]["status"] == 200 and reflector.hits("bot-app-other-2")[0]["credential"] == "sec-app-other"
    assert out[9]["error"] == "grant_not_found" and reflector.hits("bot-app-other-3") == [], out[9]
    assert grant_ids(out[10]) == {b.own, b.app}
    # users never see app grants or an agent's own grants
    alice = grant_ids(one(hosted, token(hosted, provider, "alice"), "list_grants", {}))
    assert not alice & {b.own, b.app, b.app_other} and b.alice in alice
    # audit: the agent is the principal, the grant's owner is named
    recs = {r.get("grant_id"): r for r in audit_records(hosted) if r.get("outcome") == "ok" and r.get("event") == "request"}
    assert recs[b.app].get("principal_kind") == "agent" and recs[b.app].get("grant_owner") == "app", recs[b.app]
    assert recs[b.own].get("grant_owner") in ("agent:ci-bot", f"agent:{b.id}"), recs[b.own]


def test_agent_create_is_idempotent_and_the_key_is_shown_once(hosted):
    first = hosted.cli("agents", "create", "idem-bot", "--idempotency-key", "idem-1")
    assert KEY_RE.search(first.stdout), first.stdout
    again = hosted.cli("agents", "create", "idem-bot", "--idempotency-key", "idem-1")
    assert not KEY_RE.search(again.stdout + again.stderr), "no second key is minted"
    assert AGENT_ID_RE.search(first.stdout + first.stderr).group(0) in again.stdout + again.stderr
    other = hosted.cli("agents", "create", "idem-bot-2", "--idempotency-key", "idem-1", check=False)
    assert other.returncode != 0 and "idempot" in (other.stdout + other.stderr).lower(), other
    dup = hosted.cli("agents", "create", "idem-bot", check=False)
    assert dup.returncode != 0, "a second agent of the same name without the idempotency key is refused"
    listed = hosted.cli("agents", "list").stdout
    key = KEY_RE.search(first.stdout).group(0)
    assert listed.count("idem-bot") == 1 and "idem-bot-2" not in listed, listed
    assert key[len("alter_ak_"):][:8] in listed and key not in listed, "list shows the prefix, never the key"
    show = hosted.cli("agents", "show", "idem-bot").stdout
    assert key not in show and "idem-bot" in show
    # the database holds only the key's hash
    for f in (hosted.dir / "data").iterdir():
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


# ---------------------------------------------------------------------------------------------------------------
# Delegation: at Connect in Chromium, then undelegate / release
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def delegated(provider, hosted, ci_bot):
    """alice connects testbed from a Connect link that names ci-bot: first without ticking the box (no
    delegation), then again ticking it (the same grant, now delegated)."""
    alice = token(hosted, provider, "alice")
    info = {}
    link = one(hosted, alice, "start_connect", {"providers": ["testbed"], "agent": "ci-bot"})
    assert link.get("connect_url"), link
    info["unticked_page"] = browse(link["connect_url"], "--user", "alice", shots=SHOTS, prefix="delegate-unticked")
    info["unticked_agent_view"] = one(hosted, ci_bot.key, "list_grants", {"provider": "testbed"})
    link = one(hosted, alice, "start_connect", {"providers": ["testbed"], "agent": "ci-bot"})
    info["page"] = browse(link["connect_url"], "--user", "alice", "--delegate", shots=SHOTS, prefix="delegate")
    grants = one(hosted, alice, "list_grants", {"provider": "testbed"})["grants"]
    assert len(grants) == 1, grants
    info["grant"] = grants[0]
    info["alice"] = alice
    return info


def test_delegation_at_connect_is_opt_in(delegated):
    unticked = delegated["unticked_page"]
    assert "Connected as alice" in unticked["title"], unticked
    assert unticked.get("delegate_boxes", 0) >= 1, "the Connect page offers the delegation checkbox"
    assert any("ci-bot" in l for l in unticked.get("delegate_labels", [])), unticked
    assert delegated["unticked_agent_view"]["grants"] == [], "unticked: nothing is delegated"
    assert "ci-bot" not in unticked["text"], "the result page claims no delegation that was not ticked"
    page = delegated["page"]
    assert "Connected as alice" in page["title"] and page.get("delegate_boxes", 0) >= 1, page
    assert "ci-bot" in page["text"], "the result page says which agent may now use the grant"


def test_delegated_grant_is_usable_then_undelegated_and_released(provider, hosted, ci_bot, delegated):
    gid, alice, bot = delegated["grant"]["id"], delegated["alice"], ci_bot.key
    user_call = {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}
    by_id = {"method": "GET", "url": f"{provider.api}/user", "grant_id": gid}
    seen = one(hosted, alice, "list_grants", {"provider": "testbed"})["grants"][0]
    assert "ci-bot" in json.dumps(seen.get("delegated_to")), seen

    owner = next(g["principal"] for g in json.loads(hosted.cli("grants", "list", "--all", "--json").stdout)
                 if g["id"] == gid)
    # The operator may take a delegation back, but may not lend a person's grant on their own:
    refused_lend = hosted.cli("grants", "delegate", gid, "ci-bot", check=False)
    assert refused_lend.returncode != 0 and "only its owner" in refused_lend.stderr, refused_lend
    out = calls(hosted, bot, [
        ("list_grants", {"provider": "testbed"}),
        ("vault_request", user_call),
        # the operator undelegates: the agent's next call (same session) is refused
        lambda: hosted.cli("grants", "undelegate", gid, "ci-bot"),
        ("vault_request", by_id),
        ("vault_request", user_call),
        lambda: hosted.cli("grants", "undelegate", gid, "ci-bot"),  # idempotent
        # lending again takes the owner's say-so (locally the owner runs the CLI; here --as-principal)
        lambda: hosted.cli("--as-principal", owner, "grants", "delegate", gid, "ci-bot"),
        ("vault_request", by_id),
    ])
    listing = out[0]["grants"]
    assert [(g["id"], g.get("access")) for g in listing] == [(gid, "delegated")], listing
    assert out[1]["status"] == 200 and out[1]["body"]["login"] == "alice", out[1]
    assert out[3]["_is_error"] and out[3]["error"] == "grant_not_found", out[3]
    assert refused(out[4]), out[4]
    assert out[7]["status"] == 200, out[7]

    # the grant itself stayed alice's and active throughout
    assert one(hosted, alice, "vault_request", user_call)["status"] == 200

    # bob cannot touch alice's delegation
    b = one(hosted, token(hosted, provider, "bob"), "undelegate_grant", {"grant_id": gid, "agent": "ci-bot"})
    assert b.get("error") == "grant_not_found", b
    assert one(hosted, bot, "vault_request", by_id)["status"] == 200

    # alice undelegates with the tool, twice
    u1, u2 = calls(hosted, alice, [("undelegate_grant", {"grant_id": gid, "agent": "ci-bot"}),
                                   ("undelegate_grant", {"grant_id": gid, "agent": "ci-bot"})])
    assert not u1["_is_error"] and not u2["_is_error"], (u1, u2)
    assert one(hosted, bot, "vault_request", by_id)["error"] == "grant_not_found"

    # the agent gives up a delegation itself, twice
    lend(hosted, gid, "ci-bot")
    r = calls(hosted, bot, [("vault_request", by_id), ("release_delegation", {"grant_id": gid}),
                            ("release_delegation", {"grant_id": gid}), ("vault_request", by_id), ("list_grants", {})])
    assert r[0]["status"] == 200 and not r[1]["_is_error"] and not r[2]["_is_error"], r[:3]
    assert r[3]["error"] == "grant_not_found" and gid not in grant_ids(r[4]), r[3]
    assert one(hosted, alice, "vault_request", user_call)["status"] == 200, "releasing left alice's grant active"

    # audit: a delegated call names the delegating user
    lend(hosted, gid, "ci-bot")  # later tests use the delegation
    assert one(hosted, bot, "vault_request", by_id)["status"] == 200
    rec = [x for x in audit_records(hosted) if x.get("grant_id") == gid and x.get("outcome") == "ok"
           and x.get("principal_kind") == "agent"][-1]
    assert rec.get("grant_owner") == f"user:{user_id(hosted, provider, 'alice')}", rec
    assert user_id(hosted, provider, "alice") in str(rec.get("delegation")), rec


def test_agent_scope_allowlist_narrows_and_widens_on_the_next_call(provider, hosted, ci_bot, delegated):
    gid, bot = delegated["grant"]["id"], ci_bot.key
    lend(hosted, gid, "ci-bot")
    declared = {"method": "GET", "url": f"{provider.api}/user", "grant_id": gid, "required_scopes": ["read:user"]}
    undeclared = {"method": "GET", "url": f"{provider.api}/user", "grant_id": gid}
    upd = lambda *a: (lambda: hosted.cli("agents", "update", "ci-bot", *a))
    try:
        out = calls(hosted, bot, [
            upd("--scopes", "testbed=read:user"),
            ("vault_request", declared),
            upd("--scopes", "testbed=calendar.read"),           # narrowing: read:user removed
            ("vault_request", declared),
            ("vault_request", undeclared),                      # the grant carries read:user: must declare
            upd("--scopes", "testbed=read:user,calendar.read"),  # widening
            ("vault_request", declared),
            upd("--clear-scopes", "testbed"),
            ("vault_request", undeclared),
        ])
    finally:
        hosted.cli("agents", "update", "ci-bot", "--clear-scopes", "testbed", check=False)
    assert out[1]["status"] == 200, out[1]
    for refusedcall in (out[3], out[4]):
        assert refusedcall["_is_error"] and refusedcall["error"] == "scope_not_allowed", refusedcall
    assert "read:user" in out[3]["message"] and "calendar.read" in out[3]["message"], out[3]["message"]
    assert out[6]["status"] == 200, out[6]
    assert out[8]["status"] == 200, out[8]
    recs = [r for r in audit_records(hosted) if r.get("grant_id") == gid and r.get("outcome") == "scope_not_allowed"]
    assert len(recs) >= 2, "each refusal is audited"


def test_client_credentials_jwt_mapped_to_the_agent_is_the_agent(provider, reflector, hosted, ci_bot, delegated):
    gid = delegated["grant"]["id"]
    lend(hosted, gid, "ci-bot")
    # a user grant for the user whose sub would be "ci-agent": the agent token must never reach it
    decoy = add_secret(hosted, "decoy-api", f"user:{user_id(hosted, provider, 'ci-agent')}", "decoy", "sec-decoy",
                       reflector.host)
    hosted.cli("agents", "update", "ci-bot", "--jwt-subject", "ci-agent")
    jwt_tok = cc_token(provider, hosted.mcp_url)
    via_key = calls(hosted, ci_bot.key, [("list_grants", {})])[0]
    via_jwt = calls(hosted, jwt_tok, [
        ("list_grants", {}),
        ("vault_request", probe_call(reflector, "cc-app", provider="app-api")),
        ("vault_request", {"method": "GET", "url": f"{provider.api}/user", "grant_id": gid}),
        ("vault_request", probe_call(reflector, "cc-alice", grant_id=ci_bot.alice)),
        ("vault_request", probe_call(reflector, "cc-decoy", grant_id=decoy)),
    ])
    assert grant_ids(via_jwt[0]) == grant_ids(via_key) and gid in grant_ids(via_key), (via_jwt[0], via_key)
    assert via_jwt[1]["status"] == 200 and reflector.hits("cc-app")[0]["credential"] == "sec-app-company"
    assert via_jwt[2]["status"] == 200 and via_jwt[2]["body"]["login"] == "alice", via_jwt[2]
    for o, probe in ((via_jwt[3], "cc-alice"), (via_jwt[4], "cc-decoy")):
        assert o["error"] == "grant_not_found" and reflector.hits(probe) == [], o
    rec = [r for r in audit_records(hosted) if r.get("grant_id") == ci_bot.app and r.get("outcome") == "ok"][-1]
    assert rec.get("principal_kind") == "agent", rec
    # disabled: the key and the JWT are both refused; enabled again: both work
    hosted.cli("agents", "update", "ci-bot", "--disable")
    try:
        for bearer in (ci_bot.key, jwt_tok):
            status, challenge, _ = init_status(hosted, bearer)
            assert status == 401 and 'error="invalid_token"' in challenge, (status, challenge)
    finally:
        hosted.cli("agents", "update", "ci-bot", "--enable")
    for bearer in (ci_bot.key, jwt_tok):
        assert init_status(hosted, bearer)[0] == 200


def test_stdio_agent_key_selects_the_agent(hosted, ci_bot):
    async def go(env):
        async with hosted.mcp(env=env) as s:
            return await tool(s, "list_grants", {})
    over_stdio = run(go({"VAULT_MCP_AGENT_KEY": ci_bot.key}))
    over_http = one(hosted, ci_bot.key, "list_grants", {})
    assert grant_ids(over_stdio) == grant_ids(over_http), (over_stdio, over_http)
    bad = ci_bot.key[:-1] + ("0" if ci_bot.key[-1] != "0" else "1")
    p = subprocess.run([str(BIN), "serve"], env={**hosted.env, "VAULT_MCP_AGENT_KEY": bad}, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "VAULT_MCP_AGENT_KEY" in p.stderr and "panicked" not in p.stderr, p.stderr
    assert bad not in p.stderr, "the message does not repeat the key"


# ---------------------------------------------------------------------------------------------------------------
# Cross-principal isolation: randomized users x groups x agents x grants
# ---------------------------------------------------------------------------------------------------------------

def test_randomized_isolation_matrix(provider, reflector, hosted):
    seed = int(os.environ.get("PRINCIPALS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    groups = ["iso-g0", "iso-g1", "iso-g2", "iso-g-nobody"]
    users = {f"iso-u{i}": sorted(rng.sample(groups[:3], rng.randint(0, 2))) for i in range(4)}
    for u, gs in users.items():
        set_groups(provider, u, gs, create=True)
    agents = {f"iso-a{i}": create_agent(hosted, f"iso-a{i}") for i in range(3)}
    providers = [f"iso-p{i}" for i in range(4)]
    uid = {u: user_id(hosted, provider, u) for u in users}
    owners = ([f"user:{u}" for u in users] + [f"group:{g}" for g in groups] + ["app", "app"]
              + [f"agent:{a}" for a in agents])
    owners += [rng.choice(owners) for _ in range(6)]
    grants = {}
    for i, owner in enumerate(owners):
        kind, _, name = owner.partition(":")
        cli_owner = f"user:{uid[name]}" if kind == "user" else owner
        secret = f"iso-secret-{i}-{rng.randrange(1 << 40):010x}"
        prov = rng.choice(providers)
        gid = add_secret(hosted, prov, cli_owner, f"acct-{i}", secret, reflector.host)
        grants[gid] = {"owner": owner, "secret": secret, "provider": prov}
    app_grants = [g for g, v in grants.items() if v["owner"] == "app"]
    user_grants = [g for g, v in grants.items() if v["owner"].startswith("user:")]
    access_set = {a: sorted(g for g in app_grants if rng.random() < 0.5) for a in agents}
    for a, gs in access_set.items():
        if gs:
            hosted.cli("agents", "update", a, *[x for g in gs for x in ("--grant", g)])
    delegations = {a: set() for a in agents}
    for g in user_grants:
        for a in agents:
            if rng.random() < 0.35:
                lend(hosted, g, a)
                delegations[a].add(g)
    # one delegation undone again: it must not count
    undone = next(((a, g) for a in agents for g in sorted(delegations[a])), None)
    if undone:
        hosted.cli("grants", "undelegate", undone[1], undone[0])
        delegations[undone[0]].discard(undone[1])

    def expected_for(kind: str, name: str) -> set[str]:
        if kind == "user":
            mine = {f"user:{name}"} | {f"group:{g}" for g in users[name]}
            return {g for g, v in grants.items() if v["owner"] in mine}
        return ({g for g, v in grants.items() if v["owner"] == f"agent:{name}"} | set(access_set[name])
                | delegations[name])

    callers = [(f"user:{u}", "user", u, token(hosted, provider, u), None, None) for u in users]
    callers += [(f"agent:{a}", "agent", a, ag.key, None, None) for a, ag in agents.items()]
    # labels give no access: an existing agent's id in _meta, an agent's name in X-Vault-Agent
    callers.append(("user:iso-u0+label", "user", "iso-u0", token(hosted, provider, "iso-u0"),
                    {"io.vault-mcp/agent": agents["iso-a0"].id}, None))
    callers.append(("user:iso-u1+header", "user", "iso-u1", token(hosted, provider, "iso-u1"), None,
                    {"X-Vault-Agent": "iso-a1"}))

    report = {"seed": seed, "users": users, "agents": {a: ag.id for a, ag in agents.items()},
              "grants": {g: {k: v for k, v in d.items() if k != "secret"} for g, d in grants.items()},
              "access_sets": access_set, "delegations": {a: sorted(d) for a, d in delegations.items()},
              "checks": 0, "crossings": [], "mismatches": [], "callers": {}}
    n = 0
    for label, kind, name, bearer, meta, headers in callers:
        exp = expected_for(kind, name)
        steps = [("list_grants", {"limit": 200}, meta)]
        steps += [("vault_request", probe_call(reflector, f"{label}|{g}|{n}", grant_id=g), meta) for g in grants]
        steps += [("vault_request", probe_call(reflector, f"{label}|{p}|{n}", provider=p), meta) for p in providers]
        out = calls(hosted, bearer, steps, headers=headers)
        visible = grant_ids(out[0])
        report["callers"][label] = {"expected": sorted(exp), "listed": sorted(visible)}
        report["checks"] += 1
        for g in visible - exp:
            report["crossings"].append({"caller": label, "check": "list_grants", "grant": g})
        for g in exp - visible:
            report["mismatches"].append({"caller": label, "check": "list_grants", "missing": g})
        for g, o in zip(grants, out[1:1 + len(grants)]):
            report["checks"] += 1
            hits = reflector.hits(f"{label}|{g}|{n}")
            creds = [h["credential"] for h in hits]
            if g in exp:
                if any(c != grants[g]["secret"] for c in creds):
                    report["crossings"].append({"caller": label, "check": "grant_id", "grant": g,
                                                "wrong_credential": True})
                elif o.get("status") != 200 or not creds:
                    report["mismatches"].append({"caller": label, "check": "grant_id", "grant": g,
                                                 "got": o.get("error"), "status": o.get("status")})
            elif o.get("status") == 200 or hits:
                report["crossings"].append({"caller": label, "check": "grant_id", "grant": g,
                                            "status": o.get("status"), "reached_upstream": bool(hits)})
            elif o.get("error") != "grant_not_found":
                report["mismatches"].append({"caller": label, "check": "grant_id", "grant": g, "got": o.get("error")})
        for p, o in zip(providers, out[1 + len(grants):]):
            report["checks"] += 1
            cands = sorted(g for g in exp if grants[g]["provider"] == p)
            creds = [h["credential"] for h in reflector.hits(f"{label}|{p}|{n}")]
            allowed_secrets = {grants[g]["secret"] for g in cands}
            if any(c not in allowed_secrets for c in creds):
                report["crossings"].append({"caller": label, "check": "provider", "provider": p, "candidates": cands})
            ok = ((len(cands) == 0 and refused(o) and o["error"] in ("unknown_provider", "authorization_required"))
                  or (len(cands) == 1 and o.get("status") == 200 and creds == [grants[cands[0]]["secret"]])
                  or (len(cands) > 1 and o.get("error") == "ambiguous_grant" and not creds
                      and all(c in json.dumps(o) for c in cands)))
            if not ok:
                report["mismatches"].append({"caller": label, "check": "provider", "provider": p, "candidates": cands,
                                          "got": o.get("error"), "status": o.get("status")})
        n += 1
    # the audit trail names each successful call's grant owner as the matrix says
    def owner_strs(o: str) -> set[str]:
        if o.startswith("user:"):
            return {f"user:{uid[o[5:]]}"}
        if o.startswith("agent:"):
            return {o, f"agent:{agents[o[6:]].id}"}
        return {o}
    for r in audit_records(hosted):
        if r.get("grant_id") in grants and r.get("outcome") == "ok" and r.get("event") == "request":
            report["checks"] += 1
            if r.get("grant_owner") not in owner_strs(grants[r["grant_id"]]["owner"]):
                report["mismatches"].append({"check": "audit grant_owner", "record": r.get("seq"),
                                          "got": r.get("grant_owner")})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "principals-isolation.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    assert report["crossings"] == [], f"seed {seed}: {report['crossings'][:5]}"
    assert report["mismatches"] == [], f"seed {seed}: {report['mismatches'][:5]}"


# ---------------------------------------------------------------------------------------------------------------
# AWS SigV4 against moto
# ---------------------------------------------------------------------------------------------------------------

def test_sigv4_against_moto(provider, hosted, moto):
    alice = f"user:{user_id(hosted, provider, 'alice')}"
    sig = ["--inject", "sigv4", "--username", moto.key_id, "--region", moto.region, "--service", "s3",
           "--host", moto.host]
    hosted.cli("secret", "add", "aws-s3", "--for", alice, "--account", "good", *sig, input=moto.secret + "\n")
    hosted.cli("secret", "add", "aws-s3", "--for", alice, "--account", "bad", *sig,
               input=moto.secret[:-4] + "AAAA\n")
    sess = moto.session_credentials()
    sess_sig = [x if x != moto.key_id else sess["AccessKeyId"] for x in sig]
    hosted.cli("secret", "add", "aws-s3", "--for", alice, "--account", "session", *sess_sig,
               input=f"{sess['SecretAccessKey']}\n{sess['SessionToken']}\n")
    hosted.cli("secret", "add", "aws-s3", "--for", alice, "--account", "session-bad-token", *sess_sig,
               input=f"{sess['SecretAccessKey']}\n{sess['SessionToken'][:-6]}AAAAAA\n")
    get = lambda account: ("vault_request", {"method": "GET", "url": moto.url, "provider": "aws-s3", "account": account})
    good, bad, sgood, sbad = calls(hosted, token(hosted, provider, "alice"),
                                   [get("good"), get("bad"), get("session"), get("session-bad-token")])
    assert good.get("status") == 200 and moto.body.decode() in str(good["body"]), good  # served as text/plain
    assert bad.get("status") == 403 and "SignatureDoesNotMatch" in str(bad["body"]), bad
    assert sgood.get("status") == 200 and moto.body.decode() in str(sgood["body"]), sgood
    assert sbad.get("status") in (400, 403) and "InvalidToken" in str(sbad["body"]), sbad
    # the secret key and the session token never leave the vault
    everything = json.dumps([good, bad, sgood, sbad]) + json.dumps(audit_records(hosted))
    assert moto.secret not in everything and sess["SecretAccessKey"] not in everything
    assert sess["SessionToken"] not in json.dumps(audit_records(hosted))


# ---------------------------------------------------------------------------------------------------------------
# Grant lifetimes
# ---------------------------------------------------------------------------------------------------------------

def serve_connect_pages(vault: Vault) -> subprocess.Popen:
    """`vault-mcp serve` (stdio, idle) serves the Connect pages of a single-user vault (as in test_connect)."""
    p = subprocess.Popen([str(BIN), "serve"], env=vault.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(vault.dir / "pages.log", "w"))
    try:
        wait_port(vault.connect_port)
    except RuntimeError:
        p.kill()
        raise AssertionError(f"Connect pages did not come up: {(vault.dir / 'pages.log').read_text()}")
    return p


def test_connect_grant_with_a_2_second_ttl_expires_with_a_connect_url(provider):
    """Single-user stdio vault: the callback can be completed without a browser session, so the grant's first
    use happens well inside its 2 seconds."""
    v = Vault(provider)
    v.config.write_text(v.config.read_text().replace("identity = {", 'max_ttl = "1h"\nidentity = {', 1))
    pages = None
    user = {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}
    try:
        pages = serve_connect_pages(v)
        async def start(args):
            async with v.mcp() as s:
                return await tool(s, "start_connect", args)
        too_long = run(start({"providers": ["testbed"], "ttl_seconds": 7200}))
        assert too_long.get("error") and ("1h" in too_long["message"] or "3600" in too_long["message"]), too_long
        link = run(start({"providers": ["testbed"], "ttl_seconds": 2}))
        cb = browse(link["connect_url"], "--stop-at-callback")["callback_url"]

        async def go():
            async with v.mcp() as s:
                await s.list_tools()
                t0 = time.time()
                r = requests.get(cb, timeout=20)
                assert r.status_code == 200 and "Connected as alice" in r.text, r.text[:300]
                first = await tool(s, "vault_request", user)
                in_time = time.time() - t0 < 1.8
                listed = await tool(s, "list_grants", {})
                await asyncio.sleep(max(0.0, t0 + 2.6 - time.time()))
                late = await tool(s, "vault_request", user)
                listed_late = await tool(s, "list_grants", {})
                return first, in_time, listed, late, listed_late
        first, in_time, listed, late, listed_late = run(go())
        assert in_time, "the first call must land inside the TTL for this test to mean anything"
        assert first.get("status") == 200 and first["body"]["login"] == "alice", first
        g = listed["grants"][0]
        assert g.get("expires_at") and g["status"] == "active", g
        assert late["_is_error"] and late["error"] == "grant_expired" and late.get("connect_url"), late
        g2 = listed_late["grants"][0]
        assert g2["id"] == g["id"] and g2["status"] == "expired", g2
        # the link renews the same grant
        page = browse(late["connect_url"], shots=SHOTS, prefix="ttl-renew")
        assert "Connected as alice" in page["title"], page
        async def after():
            async with v.mcp() as s:
                return await tool(s, "list_grants", {})
        renewed = run(after())["grants"]
        assert [x["id"] for x in renewed] == [g["id"]] and renewed[0]["expires_at"] > g["expires_at"], renewed
        assert any(r[0] == "grant_expired" for r in v.sqlite("SELECT outcome FROM audit_log"))
    finally:
        if pages:
            pages.kill()
        v.cleanup()


def test_managed_secret_ttl(provider, reflector, hosted):
    alice = token(hosted, provider, "alice")
    add_secret(hosted, "ttl-api", f"user:{user_id(hosted, provider, 'alice')}", "short", "sec-ttl", reflector.host,
               "--ttl", "2s")
    t0 = time.time()
    first = one(hosted, alice, "vault_request", probe_call(reflector, "ttl-1", provider="ttl-api"))
    assert time.time() - t0 < 1.8 and first["status"] == 200, first
    time.sleep(max(0.0, t0 + 2.5 - time.time()))
    late = one(hosted, alice, "vault_request", probe_call(reflector, "ttl-2", provider="ttl-api"))
    assert late["_is_error"] and late["error"] == "grant_expired", late
    assert reflector.hits("ttl-2") == []


# ---------------------------------------------------------------------------------------------------------------
# Bad input: malformed / deleted / disabled / rotated keys, owners, context, agent-id labels
# ---------------------------------------------------------------------------------------------------------------

def test_bad_agent_keys_are_refused_audited_and_nothing_is_lost(provider, reflector, hosted):
    bot = create_agent(hosted, "bad-bot")
    own = add_secret(hosted, "badbot-api", "agent:bad-bot", "own", "sec-badbot", reflector.host)
    gone = create_agent(hosted, "gone-bot")
    add_secret(hosted, "gone-api", "agent:gone-bot", "own", "sec-gone", reflector.host)
    k = bot.key
    body = k[len("alter_ak_"):]
    flip = lambda c: "a" if c != "a" else "b"  # stays inside the key alphabet (lower-case base32)

    # deleting an agent that owns grants is refused unless --delete-grants
    p = hosted.cli("agents", "delete", "gone-bot", check=False)
    assert p.returncode != 0 and "--delete-grants" in p.stdout + p.stderr, p
    hosted.cli("agents", "delete", "gone-bot", "--delete-grants")
    # rotation without grace: the old key stops at once
    rot = hosted.cli("agents", "rotate-key", "bad-bot")
    new_key = KEY_RE.search(rot.stdout).group(0)
    assert new_key != k
    before = len(audit_records(hosted))
    cases = {
        "bad checksum": k[:-1] + flip(k[-1]),
        "one character of the body changed": "alter_ak_" + flip(body[0]) + body[1:],
        "truncated": k[:-3],
        "deleted agent": gone.key,
        "rotated-out key": k,
    }
    results = {name: init_status(hosted, bearer) for name, bearer in cases.items()}
    hosted.cli("agents", "update", "bad-bot", "--disable")
    results["disabled agent"] = init_status(hosted, new_key)
    hosted.cli("agents", "update", "bad-bot", "--enable")
    results["wrong prefix"] = init_status(hosted, "alter_xx_" + body)
    rows = ["| key | status | WWW-Authenticate |", "|---|---|---|"]
    for name, (status, challenge, text) in results.items():
        rows.append(f"| {name} | {status} | {challenge} |")
        assert status == 401 and 'error="invalid_token"' in challenge and "error_description=" in challenge, (name, challenge)
        assert "panic" not in text.lower()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "principals-bad-keys.md").write_text("\n".join(rows) + "\n")
    assert "checksum" in results["bad checksum"][1].lower(), results["bad checksum"]
    assert "disabled" in results["disabled agent"][1].lower(), results["disabled agent"]

    # each refused key is audited, and no record holds a key
    new = audit_records(hosted)[before:]
    refusals = [r for r in new if r.get("outcome") != "ok"]
    assert len(refusals) >= 6, [(r.get("event"), r.get("outcome")) for r in new]
    text = json.dumps(new)
    for bearer in [*cases.values(), new_key]:
        assert bearer not in text, "an audit record holds a key"
    for f in [*(hosted.dir / "data").iterdir(), hosted.dir / "http.log"]:
        if f.is_file():
            assert new_key.encode() not in f.read_bytes() and k.encode() not in f.read_bytes(), f

    # nothing lost: the current key works, the grant is there, the chain verifies
    out = calls(hosted, new_key, [("list_grants", {}),
                                  ("vault_request", probe_call(reflector, "badbot-after", provider="badbot-api"))])
    assert grant_ids(out[0]) == {own} and out[1]["status"] == 200, out
    assert "gone-bot" not in hosted.cli("agents", "list").stdout
    assert hosted.cli("audit", "verify").stdout.startswith("ok:")


def test_for_owner_validation(reflector, hosted):
    ok = hosted.cli("secret", "add", "nogroup-api", "--for", "group:a-group-nobody-has-yet", "--account", "x",
                    "--host", reflector.host, input="sec-x\n")
    assert GRANT_RE.search(ok.stdout), "an unknown group is fine: groups live at the IdP"
    for owner, needle in (("group:", "group"), ("agent:no-such-agent", "no-such-agent"), ("robot:x", "robot"),
                          ("user:", "user")):
        p = hosted.cli("secret", "add", "bad-owner-api", "--for", owner, "--account", "x", "--host", reflector.host,
                       input="sec-y\n", check=False)
        assert p.returncode != 0 and needle in p.stderr and "panicked" not in p.stderr, (owner, p.stderr)
    assert "bad-owner-api" not in hosted.cli("grants", "list", "--all", "--json").stdout


def test_context_limits_are_invalid_params_named_and_audited(provider, reflector, hosted):
    alice = token(hosted, provider, "alice")
    add_secret(hosted, "ctx-api", f"user:{user_id(hosted, provider, 'alice')}", "ctx", "sec-ctx", reflector.host)
    base = lambda ctx, probe: ("vault_request", {**probe_call(reflector, probe, provider="ctx-api"), "context": ctx})
    long_key = "k" * 65
    cases = [
        ("21 keys", {f"key{i:02d}": "v" for i in range(21)}, ["context", "20"]),
        ("65-char key", {long_key: "v"}, ["context", long_key[:40]]),
        ("513-char value", {"ticket": "x" * 513}, ["context", "ticket"]),
        ("over 4 KB", {f"k{i}": "y" * 500 for i in range(10)}, ["context", "4"]),
        ("a number value", {"run": 5}, ["context", "run"]),
        ("a nested object", {"meta": {"a": "b"}}, ["context", "meta"]),
    ]
    before = len(audit_records(hosted))
    out = calls(hosted, alice, [base(ctx, f"ctx-bad-{i}") for i, (_, ctx, _) in enumerate(cases)]
                + [base({"ticket": "OPS-1432", "run": "nightly"}, "ctx-ok")])
    for (name, _, needles), o in zip(cases, out):
        assert o.get("error") == "invalid_params", (name, o)
        for needle in needles:
            assert needle in o["message"], (name, needle, o["message"])
    assert all(reflector.hits(f"ctx-bad-{i}") == [] for i in range(len(cases)))
    assert out[-1]["status"] == 200, out[-1]
    new = audit_records(hosted)[before:]
    assert sum(r.get("outcome") == "invalid_request" for r in new) >= len(cases), [(r.get("event"), r.get("outcome")) for r in new]
    found = [json.loads(l) for l in hosted.cli("audit", "search", "--context", "ticket=OPS-1432", "--json").stdout.splitlines() if l.strip()]
    assert len(found) == 1 and "nightly" in json.dumps(found[0].get("context")), found
    assert hosted.cli("audit", "search", "--context", "ticket=OPS-9999", "--json").stdout.strip() == ""
    assert hosted.cli("audit", "verify").stdout.startswith("ok:")


def test_agent_id_label_that_names_no_agent_is_refused(provider, reflector, hosted):
    alice = token(hosted, provider, "alice")
    add_secret(hosted, "label-api", f"user:{user_id(hosted, provider, 'alice')}", "lbl", "sec-lbl", reflector.host)
    before = len(audit_records(hosted))
    via_meta, free_label = calls(hosted, alice, [
        ("vault_request", probe_call(reflector, "label-meta", provider="label-api"), {"io.vault-mcp/agent": "agt_doesnotexist"}),
        ("vault_request", probe_call(reflector, "label-free", provider="label-api"), {"io.vault-mcp/agent": "release-bot"})])
    assert via_meta.get("error") == "invalid_params" and "agt_doesnotexist" in via_meta["message"], via_meta
    assert free_label.get("status") == 200, "a free-form label stays an audit label"
    via_header = calls(hosted, alice, [("vault_request", probe_call(reflector, "label-header", provider="label-api"))],
                       headers={"X-Vault-Agent": "agt_doesnotexist"})[0]
    assert via_header.get("error") == "invalid_params" and "agt_doesnotexist" in via_header["message"], via_header
    assert reflector.hits("label-meta") == [] and reflector.hits("label-header") == []
    new = audit_records(hosted)[before:]
    assert sum(r.get("outcome") == "invalid_request" for r in new) >= 2, [(r.get("event"), r.get("outcome")) for r in new]
    assert any(r.get("agent") == "release-bot" and r.get("outcome") == "ok" for r in new)
