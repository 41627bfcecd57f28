"""Issue: hosted at scale — three `vault-mcp serve --http` instances on one PostgreSQL database behind a real HAProxy
(round robin), driven with the official MCP Python SDK client, oidc-provider as the OAuth provider and IdP, and
headless Chromium. Every guarantee of one instance must hold across the three: one refresh per grant, one rate-limit
budget, Connect and approvals that finish on another instance, OAuth-mode tokens and refresh-reuse detection shared,
sessions that need affinity get it from the load balancer, one unbroken audit chain, and no lost audit row for any
answered call when an instance is killed or the database restarts under load."""
import asyncio
import collections
import json
import re
import time

import pytest
import requests

from cluster import Cluster, pg, wait_until
from harness import ARTIFACTS, Provider, browse

SHOTS = ARTIFACTS / "screenshots"

POLICY = """
[[policy.rules]]
id = "five-an-hour"
providers = ["testapi"]
paths = ["/whoami"]
rate_limit = { requests = 5, per_secs = 3600, per = "grant" }

[[policy.rules]]
id = "echo-posts-need-approval"
providers = ["testapi"]
methods = ["POST"]
paths = ["/echo"]
effect = "approve"
"""


@pytest.fixture(scope="module")
def provider():
    pg("start")
    # Long-lived access tokens, so one refresh lasts through a whole burst; the tests expire a grant's token
    # on purpose (expire_token), which is what the vault sees when a token runs out.
    p = Provider(ACCESS_TOKEN_TTL="120")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def cluster(provider):
    c = Cluster(provider, n=3, identity="local", stateless=True, extra_toml=POLICY)
    # A managed secret for the rate-limit and approval tests (stored through the CLI, into PostgreSQL).
    c.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")
    c.start()
    yield c
    c.stop()
    c.cleanup()


def served_by(c: Cluster, path_pattern: str) -> collections.Counter:
    """Which instance HAProxy sent matching requests to (from its request log)."""
    counts = collections.Counter()
    for line in (c.dir / "haproxy.log").read_text().splitlines():
        m = re.search(r"instances/(i\d)\S* .*\"\w+ ([^ ]+)", line)
        if m and re.search(path_pattern, m.group(2)):
            counts[m.group(1)] += 1
    return counts


def expire_token(c: Cluster) -> None:
    """Make the stored access token look expired (a version change, as a real write would be)."""
    c.sql("UPDATE grants SET token_expires_at = 0, version = version + 1 WHERE provider = 'testbed'")


def refreshes(provider) -> int:
    return provider.stats().get("refresh_token:ok", 0)


async def call(session, **args):
    r = await session.call_tool("vault_request", args)
    return r.structured_content


def connect_testbed(c: Cluster, provider, url: str | None = None):
    async def ask():
        async with c.session(url) as s:
            return await call(s, method="GET", url=f"{provider.api}/user", provider="testbed")
    out = asyncio.run(ask())
    if out.get("status") == 200:
        return out
    assert out["error"] == "authorization_required" and out["connect_url"].startswith(c.base), out
    page = browse(out["connect_url"], shots=SHOTS, prefix="cluster-connect")
    assert page["title"].startswith("Connected as alice"), page
    return out


def test_connect_started_on_one_instance_finishes_on_others(cluster, provider):
    # Start on instance 0 directly; the link points at the load balancer, which spreads the Connect page, the
    # authorize step and the provider's callback over the instances.
    connect_testbed(cluster, provider, url=f"{cluster.url(0)}/mcp")
    async def use(i):
        async with cluster.session(f"{cluster.url(i)}/mcp") as s:
            return await call(s, method="GET", url=f"{provider.api}/user", provider="testbed")
    for i in (1, 2):
        out = asyncio.run(use(i))
        assert out["status"] == 200 and out["body"]["login"] == "alice", out
    pages = served_by(cluster, r"^/(connect|oauth/callback)")
    assert len(pages) >= 2, f"the Connect round trip stayed on one instance: {pages}"


def test_refresh_is_single_flight_across_the_cluster(cluster, provider):
    connect_testbed(cluster, provider)
    expire_token(cluster)
    before = refreshes(provider)

    async def go():
        async def burst(s):
            return await asyncio.gather(*[call(s, method="GET", url=f"{provider.api}/user", provider="testbed")
                                          for _ in range(100)])
        async with contextlib_sessions(cluster, 10) as sessions:
            results = await asyncio.gather(*[burst(s) for s in sessions])
        return [r for rs in results for r in rs]
    t0 = time.time()
    results = asyncio.run(go())
    took = time.time() - t0
    bad = [r for r in results if r.get("status") != 200]
    assert len(results) == 1000 and not bad, (len(bad), bad[:3])
    assert refreshes(provider) - before == 1, provider.stats()
    spread = served_by(cluster, r"^/mcp")
    assert len(spread) == 3, f"calls did not reach all three instances: {spread}"
    # The newest (rotated) refresh token was stored: the next refresh works. A stale one would be refused by
    # oidc-provider, which then revokes the whole grant.
    expire_token(cluster)

    async def once():
        async with cluster.session() as s:
            return await call(s, method="GET", url=f"{provider.api}/user", provider="testbed")
    assert asyncio.run(once())["status"] == 200
    assert refreshes(provider) - before == 2, provider.stats()
    (ARTIFACTS / "scale-refresh.json").write_text(json.dumps(
        {"calls": len(results), "instances": dict(spread), "token_requests": 1, "seconds": round(took, 2)}))


class contextlib_sessions:
    """N official client sessions at once (stateless: every request of each is load-balanced)."""

    def __init__(self, c: Cluster, n: int):
        self.c, self.n, self.stack = c, n, None

    async def __aenter__(self):
        import contextlib
        self.stack = contextlib.AsyncExitStack()
        return [await self.stack.enter_async_context(self.c.session()) for _ in range(self.n)]

    async def __aexit__(self, *exc):
        await self.stack.aclose()


def test_a_dead_lease_holder_does_not_wedge_the_grant(cluster, provider):
    connect_testbed(cluster, provider)
    expire_token(cluster)
    # An instance that died while refreshing leaves its lease behind (as kill -9 mid-refresh would).
    cluster.sql("UPDATE grants SET refresh_lease_owner = 'inst_dead', "
                "refresh_lease_until = EXTRACT(EPOCH FROM now())::bigint + 4 WHERE provider = 'testbed'")

    async def go():
        async with cluster.session() as s:
            t = time.time()
            out = await call(s, method="GET", url=f"{provider.api}/user", provider="testbed")
            return out, time.time() - t
    out, waited = asyncio.run(go())
    assert out["status"] == 200, out
    assert waited >= 2, f"the call should have waited for the stale lease ({waited:.1f}s)"


def test_rate_limit_is_one_budget_across_instances(cluster, provider):
    async def go():
        async with contextlib_sessions(cluster, 6) as sessions:
            jobs = [call(s, method="GET", url=f"{provider.api}/whoami", provider="testapi")
                    for s in sessions for _ in range(10)]
            return await asyncio.gather(*jobs)
    results = asyncio.run(go())
    ok = [r for r in results if r.get("status") == 200]
    limited = [r for r in results if r.get("error") == "rate_limited"]
    assert len(results) == 60 and len(ok) == 5 and len(limited) == 55, collections.Counter(
        r.get("status") or r.get("error") for r in results)


def test_approval_made_on_one_instance_is_decided_on_another(cluster, provider):
    args = dict(method="POST", url=f"{provider.api}/echo", provider="testapi", json={"n": 1}, reason="cluster test")

    async def on(i):
        async with cluster.session(f"{cluster.url(i)}/mcp") as s:
            return await call(s, **args)
    first = asyncio.run(on(0))
    assert first["error"] == "approval_required" and "approval_url" not in first, first
    # decided by the CLI (any machine with the database)
    cluster.cli("approvals", "approve", first["approval_id"])
    assert asyncio.run(on(2))["status"] == 200
    # and by the approval page served by another instance
    second = asyncio.run(on(1))
    assert second["error"] == "approval_required", second
    link = wait_until(lambda: re.search(r"url=(\S+/approvals/\S+)", cluster.log(1)))
    url = link.group(1).replace(cluster.base, cluster.url(2))
    page = browse(url, "--approve-call", shots=SHOTS, prefix="cluster-approval")
    assert page["title"].startswith("Approved"), page
    assert asyncio.run(on(0))["status"] == 200


def test_stateful_sessions_and_legacy_sse_with_affinity(provider):
    c = Cluster(provider, n=3, identity="local", stateless=False)
    c.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")
    c.start()
    try:
        async def go():
            outs = []
            async with c.session() as s:
                for _ in range(6):
                    outs.append(await call(s, method="GET", url=f"{provider.api}/whoami", provider="testapi"))
            async with c.sse_session() as s:
                for _ in range(6):
                    outs.append(await call(s, method="GET", url=f"{provider.api}/whoami", provider="testapi"))
            return outs
        outs = asyncio.run(go())
        assert all(o.get("status") == 200 for o in outs), outs
    finally:
        c.stop()
        c.cleanup()


def test_without_affinity_stateful_sessions_break(provider):
    """Why the deployment guide asks for affinity (or `stateless = true`): a session lives on one instance."""
    c = Cluster(provider, n=3, identity="local", stateless=False, sticky=False)
    c.start()
    try:
        async def go():
            async with c.session() as s:
                for _ in range(6):
                    await s.list_tools()
        with pytest.raises(BaseException):
            asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        c.stop()
        c.cleanup()


def test_oauth_mode_tokens_and_reuse_detection_are_shared(provider):
    c = Cluster(provider, n=3, identity="oauth", stateless=True)
    c.start()
    try:
        import base64, hashlib, secrets, urllib.parse as up
        cb = "http://127.0.0.1:9/oauth/callback"
        reg = requests.post(f"{c.url(0)}/register", json={
            "client_name": "cluster test", "redirect_uris": [cb], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}).json()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        auth = f"{c.base}/authorize?" + up.urlencode({
            "response_type": "code", "client_id": reg["client_id"], "redirect_uri": cb, "state": "st",
            "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mcp:tools",
            "resource": c.mcp_url})
        page = browse(auth, "--user", "alice", shots=SHOTS, prefix="cluster-oauth")
        # (the first callback the browser passes is the vault's own sign-in at the IdP)
        ours = next(u for u in page["callback_urls"] if u.startswith(cb))
        code = dict(up.parse_qsl(up.urlsplit(ours).query))["code"]
        # exchanged on instance 1, used on instance 2
        tok = requests.post(f"{c.url(1)}/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": cb, "client_id": reg["client_id"],
            "code_verifier": verifier, "resource": c.mcp_url}).json()
        assert "access_token" in tok, tok

        async def tools(i, access):
            async with c.session(f"{c.url(i)}/mcp", token=access) as s:
                return [t.name for t in (await s.list_tools()).tools]
        assert "vault_request" in asyncio.run(tools(2, tok["access_token"]))
        # refresh on instance 0; replaying the old refresh token on instance 2 revokes the family everywhere
        fresh = requests.post(f"{c.url(0)}/token", data={
            "grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": reg["client_id"]}).json()
        assert "access_token" in fresh, fresh
        replay = requests.post(f"{c.url(2)}/token", data={
            "grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": reg["client_id"]})
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
        r = requests.post(f"{c.url(1)}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                          headers={"Authorization": f"Bearer {fresh['access_token']}",
                                   "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401, r.text
    finally:
        c.stop()
        c.cleanup()


def test_kill_and_database_restart_under_load_lose_no_audit_row(cluster, provider):
    answered: list[str] = []
    errors: list[tuple[float, str]] = []
    slowest = [0.0]
    stop_at = time.time() + 14

    async def worker():
        while time.time() < stop_at:
            t = time.time()
            try:
                async with cluster.session() as s:
                    while time.time() < stop_at:
                        t = time.time()
                        out = await asyncio.wait_for(
                            call(s, method="GET", url=f"{provider.api}/user", provider="testbed"), 30)
                        slowest[0] = max(slowest[0], time.time() - t)
                        if out.get("status") == 200:
                            answered.append(out["call_id"])
                        else:
                            errors.append((time.time(), out.get("error", "?")))
            except Exception as e:  # a connection cut by the kill: the client reconnects
                slowest[0] = max(slowest[0], time.time() - t)
                errors.append((time.time(), type(e).__name__))
                await asyncio.sleep(0.2)

    async def faults():
        await asyncio.sleep(3)
        cluster.kill(1)
        await asyncio.sleep(2)
        await asyncio.to_thread(pg, "restart")
        await asyncio.sleep(4)
        cluster.start_instance(1)

    async def go():
        await asyncio.gather(faults(), *[worker() for _ in range(6)])
    connect_testbed(cluster, provider)
    asyncio.run(go())
    assert len(answered) > 50, (len(answered), errors[:5])
    # every answered call has its audit record (the record is durable before the result is returned)
    ids = {r[0] for r in cluster.sql("SELECT id FROM audit_log WHERE event = 'request'")}
    lost = [i for i in answered if i not in ids]
    assert not lost, f"{len(lost)} answered calls have no audit record"
    # errors were answers, not hangs, and the cluster recovered without restarts (but the killed instance)
    assert slowest[0] < 25, f"a call hung for {slowest[0]:.1f}s"

    async def after():
        async with cluster.session() as s:
            return [await call(s, method="GET", url=f"{provider.api}/user", provider="testbed") for _ in range(6)]
    assert all(o.get("status") == 200 for o in asyncio.run(after()))
    (ARTIFACTS / "scale-faults.json").write_text(json.dumps({
        "answered": len(answered), "errors": len(errors), "lost_audit_rows": len(lost),
        "error_kinds": dict(collections.Counter(e for _, e in errors)), "slowest_call_s": round(slowest[0], 2)}))


def test_audit_chain_from_three_writers_verifies(cluster):
    out = cluster.cli("audit", "verify")
    assert out.stdout.startswith("ok:"), out.stdout
    n = int(re.search(r"ok: (\d+) records", out.stdout).group(1))
    assert n > 500, out.stdout
    seqs = [int(r[0]) for r in cluster.sql("SELECT seq FROM audit_log ORDER BY seq")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no fork"
