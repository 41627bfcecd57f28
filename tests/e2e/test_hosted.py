"""Issue: hosted mode — Streamable HTTP and legacy SSE, per-user identity from JWTs minted by oidc-provider, per-user
isolation of grants and Connect links."""
import asyncio

import pytest

from harness import HostedVault, Provider, browse, mint_jwt


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def hosted(provider):
    v = HostedVault(provider, identity="jwt")
    # each user gets a managed secret (the operator stores it for them) plus a second one for alice
    token = provider.client_credentials_token()
    for user in ("alice", "bob"):
        v.cli("--as-principal", v.principal(provider, user), "secret", "add", "testapi", "--account", f"{user}-key",
              "--host", f"127.0.0.1:{provider.api_port}", input=token + "\n")
    v.start()
    v.tokens = {u: mint_jwt(provider, v.mcp_url, u) for u in ("alice", "bob")}
    yield v
    v.stop()
    v.cleanup()


async def grants_and_calls(session_cm, provider, other_grant_id=None):
    async with session_cm as s:
        grants = (await s.call_tool("list_grants", {})).structured_content["grants"]
        call = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"})
        cross = None
        if other_grant_id:
            cross = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "grant_id": other_grant_id})
        return grants, call.structured_content, cross


@pytest.mark.parametrize("transport", ["streamable_http", "legacy_sse"])
def test_each_user_sees_only_their_grants(provider, hosted, transport):
    open_session = hosted.http_session if transport == "streamable_http" else hosted.sse_session
    alice_grants, alice_call, _ = asyncio.run(grants_and_calls(open_session(hosted.tokens["alice"]), provider))
    assert [g["account"] for g in alice_grants] == ["alice-key"]
    assert alice_call["status"] == 200
    bob_grants, bob_call, cross = asyncio.run(
        grants_and_calls(open_session(hosted.tokens["bob"]), provider, other_grant_id=alice_grants[0]["id"]))
    assert [g["account"] for g in bob_grants] == ["bob-key"]
    assert bob_call["status"] == 200
    assert cross.is_error and cross.structured_content["error"] == "grant_not_found", cross
    # the audit trail attributes each call to its user
    principals = {r[0] for r in hosted.sqlite("SELECT DISTINCT principal FROM audit_log WHERE event = 'request'")}
    assert principals >= {hosted.principal(provider, "alice"), hosted.principal(provider, "bob")}


def test_mcp_token_is_never_forwarded(provider, hosted):
    async def go():
        async with hosted.http_session(hosted.tokens["alice"]) as s:
            r = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/echo", "provider": "testapi"})
            return r.structured_content
    out = asyncio.run(go())
    sent = out["body"]["headers"]["authorization"]
    assert sent == "Bearer [REDACTED]" and hosted.tokens["alice"] not in str(out)


def test_session_of_another_user_is_not_found(provider, hosted):
    import requests
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    r = requests.post(hosted.mcp_url, json=init, headers={**h, "Authorization": f"Bearer {hosted.tokens['alice']}"})
    sid = r.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    r = requests.post(hosted.mcp_url, json=ping, headers={**h, "Authorization": f"Bearer {hosted.tokens['bob']}",
                                                          "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"})
    assert r.status_code == 404, r.text
    r = requests.post(hosted.mcp_url, json=ping, headers={**h, "Authorization": f"Bearer {hosted.tokens['alice']}",
                                                          "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"})
    assert r.status_code == 200, r.text


def test_connect_link_completes_only_for_its_owner(provider, hosted):
    async def ask(user):
        async with hosted.http_session(hosted.tokens[user]) as s:
            r = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
            return r.structured_content
    out = asyncio.run(ask("alice"))
    assert out["error"] == "authorization_required" and out["connect_url"].startswith(hosted.base)
    # bob opens alice's link: he signs in as bob and is turned away
    page = browse(out["connect_url"], "--user", "bob")
    assert "belongs to someone else" in page["title"], page
    # alice opens it: she signs in at the IdP, sees the Connect page, approves at the provider
    page = browse(out["connect_url"], "--user", "alice", prefix="hosted-connect",
                  shots=__import__("harness").ARTIFACTS / "screenshots")
    assert "Connected as alice" in page["title"], page

    async def retry(user):
        async with hosted.http_session(hosted.tokens[user]) as s:
            r = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
            g = await s.call_tool("list_grants", {"provider": "testbed"})
            return r.structured_content, g.structured_content["grants"]
    body, grants = asyncio.run(retry("alice"))
    assert body["status"] == 200 and body["body"]["login"] == "alice"
    assert len(grants) == 1
    body, grants = asyncio.run(retry("bob"))
    assert body["error"] == "authorization_required" and grants == []


def sign(claims: dict, alg: str = "RS256", kid: str | None = "real", key=None, header_extra: dict | None = None) -> str:
    import json, jwt
    from harness import E2E_HOME
    jwks = json.loads((E2E_HOME / "oidc-state" / "jwks.private.json").read_text())["keys"]
    rsa = next(k for k in jwks if k["kty"] == "RSA")
    headers = {"typ": "at+jwt", **(header_extra or {})}
    if kid == "real":
        headers["kid"] = rsa["kid"]
    elif kid:
        headers["kid"] = kid
    if key is None:
        key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(rsa))
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def test_bad_tokens_and_requests_table(provider, hosted):
    """Each bad token or request gets the right status, a challenge that points at our metadata, and no detail
    beyond a short reason. The table is written to target/e2e-artifacts/bad-requests.md."""
    import base64, json, time
    import requests
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from harness import ARTIFACTS, E2E_HOME
    import jwt as pyjwt

    now = int(time.time())
    good = {"iss": provider.issuer, "sub": "alice", "aud": hosted.mcp_url, "exp": now + 300, "iat": now, "scope": "mcp:tools"}
    jwks = json.loads((E2E_HOME / "oidc-state" / "jwks.private.json").read_text())["keys"]
    rsa_pub = pyjwt.algorithms.RSAAlgorithm.from_jwk(json.dumps({k: v for k, v in next(k for k in jwks if k["kty"] == "RSA").items()
                                                              if k in ("kty", "n", "e")}))
    pub_pem = rsa_pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    def hs256_with_public_key():
        header = b64({"alg": "HS256", "typ": "at+jwt", "kid": next(k for k in jwks if k["kty"] == "RSA")["kid"]})
        body = b64(good)
        import hmac, hashlib
        sig = base64.urlsafe_b64encode(hmac.new(pub_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        return f"{header}.{body}.{sig}"

    bearer = lambda t: {**h, "Authorization": f"Bearer {t}"}
    cases = [
        ("no Authorization header", dict(headers=h), 401),
        ("garbage token", dict(headers=bearer("not-a-token")), 401),
        ("expired JWT (real key)", dict(headers=bearer(sign({**good, "exp": now - 600, "iat": now - 900}))), 401),
        ("wrong issuer", dict(headers=bearer(sign({**good, "iss": "http://127.0.0.1:1/evil"}))), 401),
        ("wrong audience (real token minted for another resource)", dict(headers=bearer(mint_jwt(provider, "http://127.0.0.1:9/mcp"))), 401),
        ("alg none", dict(headers=bearer(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good)}.")), 401),
        ("HS256 signed with the RSA public key", dict(headers=bearer(hs256_with_public_key())), 401),
        ("unknown kid", dict(headers=bearer(sign(good, kid="no-such-key"))), 401),
        ("real kid, signed by another key", dict(headers=bearer(sign(good, key=other_key))), 401),
        ("nbf in the future", dict(headers=bearer(sign({**good, "nbf": now + 3600}))), 401),
        ("no exp claim", dict(headers=bearer(sign({k: v for k, v in good.items() if k != "exp"}))), 401),
        ("token without mcp:tools scope", dict(headers=bearer(sign({**good, "scope": "mcp:admin"}))), 403),
        ("token in the query string", dict(headers=h, params={"access_token": hosted.tokens["alice"]}), 401),
        ("Basic credentials instead of a bearer", dict(headers={**h, "Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}), 401),
        ("20 KB token", dict(headers=bearer("x" * 20000)), 401),
        ("oversized body (5 MB)", dict(headers=bearer(hosted.tokens["alice"]), data=b'{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}'), 413),
        ("malformed JSON-RPC", dict(headers=bearer(hosted.tokens["alice"]), data=b"{not json"), 400),
        ("unknown session id", dict(headers={**bearer(hosted.tokens["alice"]), "Mcp-Session-Id": "no-such-session",
                                           "MCP-Protocol-Version": "2025-06-18"},
                                  json={"jsonrpc": "2.0", "id": 2, "method": "ping"}), 404),
        ("Host header of another site (DNS rebinding)", dict(headers={**bearer(hosted.tokens["alice"]), "Host": "evil.example.com"}), 403),
    ]
    rows = ["| request | status | WWW-Authenticate error |", "|---|---|---|"]
    failures = []
    for name, kw, want in cases:
        kw.setdefault("json", init) if "data" not in kw else None
        r = requests.post(hosted.mcp_url, timeout=30, **kw)
        challenge = r.headers.get("www-authenticate", "")
        err = next((p.split("=", 1)[1].strip('"') for p in challenge.split(", ") if p.startswith("error=")), "")
        rows.append(f"| {name} | {r.status_code} | {err or '-'} |")
        if r.status_code != want:
            failures.append((name, want, r.status_code, r.text[:200]))
        if r.status_code == 401 or "scope" in name:
            assert "resource_metadata=" in challenge, (name, challenge)
            assert "panic" not in r.text.lower() and len(r.text) < 300, (name, r.text)
    # the legacy SSE endpoints are guarded the same way
    for name, req, want in [
        ("GET /sse without a token", lambda: requests.get(f"{hosted.base}/sse", timeout=10), 401),
        ("POST /message with an unknown sessionId", lambda: requests.post(f"{hosted.base}/message?sessionId=nope",
                                                                          json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                                                          headers=bearer(hosted.tokens["alice"]), timeout=10), 404),
    ]:
        r = req()
        rows.append(f"| {name} | {r.status_code} | - |")
        if r.status_code != want:
            failures.append((name, want, r.status_code, r.text[:200]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "bad-requests.md").write_text("\n".join(rows) + "\n")
    assert not failures, failures
    assert "alive" and requests.get(f"{hosted.base}/healthz").status_code == 200, "the server survived all of it"


def test_graceful_shutdown_finishes_in_flight_calls(provider, hosted):
    import signal, threading, time

    result = {}

    async def slow():
        async with hosted.http_session(hosted.tokens["alice"]) as s:
            # the SDK validates results against the tool's schema and lists tools for it if it has not
            # yet; do that now, before the server goes away
            await s.list_tools()
            result["started"] = time.time()
            r = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/slow",
                                                    "query_params": {"ms": 1500}, "provider": "testapi"})
            result["out"] = r.structured_content

    def run():
        try:
            asyncio.run(slow())
        except BaseException as e:  # closing the session fails once the server is gone; the result is what counts
            result["error"] = repr(e)
    t = threading.Thread(target=run)
    t.start()
    while "started" not in result:
        time.sleep(0.02)
    time.sleep(0.5)  # the call is now waiting on the slow API
    hosted.proc.send_signal(signal.SIGTERM)
    t.join(20)
    assert "out" in result, result
    assert result["out"]["status"] == 200 and result["out"]["body"]["slept_ms"] == 1500, result
    assert hosted.proc.wait(10) == 0
    hosted.start()  # later tests in this module use the server


def test_local_identity_only_on_loopback(provider):
    import subprocess
    from harness import BIN, Vault
    v = Vault(None, extra_toml='[http]\nidentity = "local"\n')
    try:
        p = subprocess.run([str(BIN), "serve", "--http", "0.0.0.0:0"], env={**v.env, "VAULT_MCP_PUBLIC_URL": "https://vault.example.com/"},
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and "only on loopback" in p.stderr, p.stderr
    finally:
        v.cleanup()


def test_readme_hosted_command_starts_on_loopback_and_delete_ends_the_session():
    """`vault-mcp serve --http 127.0.0.1:PORT` exactly as the README shows it, with no identity configured:
    it starts in `local` identity and says so; a public bind refuses and names the choices; the official
    Python client's session ends with DELETE answered 204 (the client logs a failure for 202)."""
    import logging
    import subprocess
    import requests
    from harness import BIN, Vault, free_port, wait_port
    v = Vault(None)
    port = free_port()
    log = open(v.dir / "http.log", "w")
    proc = subprocess.Popen([str(BIN), "serve", "--http", f"127.0.0.1:{port}"], env=v.env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/mcp"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        r = requests.post(url, json=init, headers=h)
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        r = requests.delete(url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"})
        assert r.status_code == 204, (r.status_code, r.text)

        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        keep = Keep(level=logging.DEBUG)
        logging.getLogger().addHandler(keep)

        async def go():
            async with streamable_http_client(url) as (rd, wr, *_):
                async with ClientSession(rd, wr) as s:
                    await s.initialize()
                    return [t.name for t in (await s.list_tools()).tools]
        try:
            tools = asyncio.run(go())
        finally:
            logging.getLogger().removeHandler(keep)
        assert "vault_request" in tools
        failed = [r.getMessage() for r in records if "termination failed" in r.getMessage().lower()]
        assert not failed, failed
        assert "no [http] identity configured" in (v.dir / "http.log").read_text()

        p = subprocess.run([str(BIN), "serve", "--http", "0.0.0.0:0"],
                           env={**v.env, "VAULT_MCP_PUBLIC_URL": "https://vault.example.com/"},
                           capture_output=True, text=True, timeout=20)
        assert p.returncode != 0
        for choice in ('identity = "jwt"', 'identity = "oauth"', 'identity = "local"', "[http.idp] issuer"):
            assert choice in p.stderr, p.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        v.cleanup()
