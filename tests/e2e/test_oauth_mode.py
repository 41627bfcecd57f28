"""Issue: hosted mode, `oauth` identity — vault-mcp is the authorization server for MCP clients. The whole chain with
real parts: the official Python SDK over stdio → mcp-remote → 401 → RFC 9728 metadata → RFC 8414 metadata → dynamic
client registration → /authorize → sign-in at oidc-provider and consent in headless Chromium → token → tools/call."""
import asyncio
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from mcp import ClientSession, StdioServerParameters, stdio_client

from harness import ARTIFACTS, NODE_BIN, NODE_DIR, HostedVault, Provider, browse, free_port


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.stop()


@pytest.fixture
def hosted(provider):
    v = HostedVault(provider, identity="oauth")
    token = provider.client_credentials_token()
    v.cli("--as-principal", v.principal(provider, "alice"), "secret", "add", "testapi", "--host",
          f"127.0.0.1:{provider.api_port}", input=token + "\n")
    v.start()
    yield v
    v.stop()
    v.cleanup()


def test_metadata_documents(hosted):
    prm = requests.get(f"{hosted.base}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == hosted.mcp_url and prm["authorization_servers"] == [hosted.base]
    asm = requests.get(f"{hosted.base}/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == hosted.base and asm["code_challenge_methods_supported"] == ["S256"]
    assert asm["registration_endpoint"] == f"{hosted.base}/register"
    r = requests.post(hosted.mcp_url, json={})
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]


def test_mcp_remote_full_oauth_chain(provider, hosted):
    cb_port = free_port()
    cfg = tempfile.mkdtemp(prefix="mcp-remote-")
    errlog = Path(cfg) / "stderr.log"
    proxy = NODE_DIR / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
    params = StdioServerParameters(
        command=str(NODE_BIN),
        args=[str(proxy), hosted.mcp_url, str(cb_port), "--host", "127.0.0.1", "--allow-http", "--auth-timeout", "90"],
        env={**os.environ, "MCP_REMOTE_CONFIG_DIR": cfg})
    result = {}

    def approve():
        deadline = time.time() + 60
        while time.time() < deadline:
            text = errlog.read_text() if errlog.exists() else ""
            m = re.search(re.escape(hosted.base) + r"/authorize\?\S+", text)
            if m:
                result["page"] = browse(m.group(0), "--user", "alice", prefix="mcp-remote", shots=ARTIFACTS / "screenshots")
                return
            time.sleep(0.2)
        result["page"] = {"error": "mcp-remote printed no authorization URL"}

    async def go():
        t = threading.Thread(target=approve)
        t.start()
        with open(errlog, "w") as err:
            async with stdio_client(params, errlog=err) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    call = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"})
                    grants = await s.call_tool("list_grants", {})
        t.join()
        return call, grants
    call, grants = asyncio.run(go())
    assert "error" not in result["page"], result
    assert call.structured_content["status"] == 200, call
    assert [g["account"] for g in grants.structured_content["grants"]] == ["default"]
    # the whole chain is in the audit trail, attributed to alice
    events = {(r[0], r[1]) for r in hosted.sqlite("SELECT event, outcome FROM audit_log")}
    assert ("mcp_authorize", "ok") in events and ("mcp_token", "issued") in events
    principals = {r[0] for r in hosted.sqlite("SELECT DISTINCT principal FROM audit_log WHERE event = 'request'")}
    assert principals == {hosted.principal(provider, "alice")}


def pkce():
    import base64, hashlib, secrets
    v = secrets.token_urlsafe(48)
    return v, base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()


def authorize_in_browser(hosted, client_id, redirect, challenge, user="alice"):
    import urllib.parse as up
    url = f"{hosted.base}/authorize?" + up.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": "st-1", "scope": "mcp:tools", "resource": hosted.mcp_url})
    page = browse(url, "--user", user)
    client_cb = [u for u in page["callback_urls"] if u.startswith(redirect)]
    assert client_cb, page
    q = dict(up.parse_qsl(up.urlsplit(client_cb[-1]).query))
    assert q.get("state") == "st-1" and q.get("iss") == hosted.base, q
    return q


def test_tokens_survive_restart_rotate_and_detect_reuse(provider, hosted):
    redirect = f"http://127.0.0.1:{free_port()}/oauth/callback"  # nothing listens: we only read the code
    reg = requests.post(f"{hosted.base}/register", json={"redirect_uris": [redirect], "client_name": "pytest client",
                                                          "token_endpoint_auth_method": "none",
                                                          "grant_types": ["authorization_code", "refresh_token"]})
    assert reg.status_code == 201, reg.text
    client_id = reg.json()["client_id"]
    verifier, challenge = pkce()
    q = authorize_in_browser(hosted, client_id, redirect, challenge)
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": redirect, "client_id": client_id,
            "code_verifier": verifier, "resource": hosted.mcp_url}
    bad = requests.post(f"{hosted.base}/token", data={**form, "code_verifier": "wrong" * 10})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    # the wrong verifier used the code up: PKCE failures are not retryable with the same code
    verifier, challenge = pkce()
    q = authorize_in_browser(hosted, client_id, redirect, challenge)
    form.update(code=q["code"], code_verifier=verifier)
    tok = requests.post(f"{hosted.base}/token", data=form)
    assert tok.status_code == 200, tok.text
    t1 = tok.json()
    replay = requests.post(f"{hosted.base}/token", data=form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"

    def mcp_status(access):
        r = requests.post(hosted.mcp_url, headers={"Authorization": f"Bearer {access}", "Accept": "application/json, text/event-stream"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                              "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        return r.status_code
    # the code replay revoked what the code had issued (RFC 6749 4.1.2)
    assert mcp_status(t1["access_token"]) == 401
    # a fresh grant, then a restart: registrations and tokens are in the database
    verifier, challenge = pkce()
    q = authorize_in_browser(hosted, client_id, redirect, challenge)
    t2 = requests.post(f"{hosted.base}/token", data={**form, "code": q["code"], "code_verifier": verifier}).json()
    assert mcp_status(t2["access_token"]) == 200
    hosted.stop()
    hosted.start()
    assert mcp_status(t2["access_token"]) == 200, "tokens survive a restart"
    # refresh rotates; reusing the old refresh token revokes the family
    r3 = requests.post(f"{hosted.base}/token", data={"grant_type": "refresh_token", "refresh_token": t2["refresh_token"],
                                                      "client_id": client_id})
    assert r3.status_code == 200, r3.text
    t3 = r3.json()
    assert t3["refresh_token"] != t2["refresh_token"] and mcp_status(t3["access_token"]) == 200
    reuse = requests.post(f"{hosted.base}/token", data={"grant_type": "refresh_token", "refresh_token": t2["refresh_token"],
                                                         "client_id": client_id})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert mcp_status(t3["access_token"]) == 401, "reuse of a rotated refresh token revoked the whole family"
    # revocation (RFC 7009)
    verifier, challenge = pkce()
    q = authorize_in_browser(hosted, client_id, redirect, challenge)
    t4 = requests.post(f"{hosted.base}/token", data={**form, "code": q["code"], "code_verifier": verifier}).json()
    assert requests.post(f"{hosted.base}/revoke", data={"token": t4["access_token"], "client_id": client_id}).status_code == 200
    assert mcp_status(t4["access_token"]) == 401


def test_authorize_refuses_bad_requests(hosted):
    redirect = f"http://127.0.0.1:{free_port()}/oauth/callback"
    client_id = requests.post(f"{hosted.base}/register", json={"redirect_uris": [redirect], "token_endpoint_auth_method": "none"}).json()["client_id"]
    base = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect, "state": "x"}
    # no PKCE → error sent back to the client
    r = requests.get(f"{hosted.base}/authorize", params=base, allow_redirects=False)
    assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]
    r = requests.get(f"{hosted.base}/authorize", params={**base, "code_challenge": "a" * 43, "code_challenge_method": "plain"},
                     allow_redirects=False)
    assert "error=invalid_request" in r.headers["location"]
    r = requests.get(f"{hosted.base}/authorize", params={**base, "code_challenge": "a" * 43, "code_challenge_method": "S256",
                                                         "resource": "https://other.example/mcp"}, allow_redirects=False)
    assert "error=invalid_target" in r.headers["location"]
    # unregistered redirect URI → never redirected there
    r = requests.get(f"{hosted.base}/authorize", params={**base, "redirect_uri": "https://evil.example/cb"}, allow_redirects=False)
    assert r.status_code == 400 and "evil.example" not in r.headers.get("location", "")
    # registration rules
    for bad in ({"redirect_uris": []}, {"redirect_uris": ["http://evil.example/cb"]}, {"redirect_uris": ["https://a/cb#frag"]},
                {"redirect_uris": ["https://a/cb"], "grant_types": ["password"]}):
        assert requests.post(f"{hosted.base}/register", json=bad).status_code == 400, bad
