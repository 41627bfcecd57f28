"""Issue: core — stdio MCP server, managed secrets, vault_request, driven by the official MCP Python SDK."""
import asyncio
import json
import os
import subprocess

import pytest
from mcp.shared.exceptions import MCPError as McpError

from harness import BIN, Vault, call, structured


def store_key(vault, provider, token, *extra):
    vault.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}", *extra, input=token + "\n")


def test_tools_list_shows_schemas(vault):
    async def go():
        async with vault.mcp() as s:
            return (await s.list_tools()).tools
    tools = {t.name: t for t in asyncio.run(go())}
    assert set(tools) >= {"vault_request", "list_grants", "list_providers", "start_connect"}
    vr = tools["vault_request"]
    props = vr.input_schema["properties"]
    for field in ["method", "url", "path_params", "query_params", "headers", "json", "body", "grant_id", "provider", "account", "reason"]:
        assert field in props, field
    assert set(vr.input_schema["required"]) == {"method", "url"}
    for name in ["status", "body", "error", "connect_url"]:
        assert name in vr.output_schema["properties"], name
    assert tools["list_grants"].annotations.read_only_hint is True
    assert tools["vault_request"].annotations.read_only_hint is False


def test_managed_secret_calls_protected_api(provider, vault):
    token = provider.client_credentials_token()
    store_key(vault, provider, token)
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi",
                                      "reason": "check which client the key belongs to"})
    out = structured(r)
    assert not r.is_error, out
    assert out["status"] == 200 and out["body"]["client_id"] == "mcp-service", out
    assert out["body_encoding"] == "json"
    # the audit record was written before the result came back
    rows = vault.sqlite("SELECT tool, method, host, path, status, outcome, reason FROM audit_log WHERE event = 'request'")
    assert rows == [("vault_request", "GET", f"127.0.0.1:{provider.api_port}", "/whoami", 200, "ok", "check which client the key belongs to")]


def test_non_allowlisted_host_is_blocked(provider, vault):
    store_key(vault, provider, provider.client_credentials_token())
    for url in [f"http://127.0.0.1:{provider.oidc_port}/me", "https://evil.example.com/steal",
                f"http://user@127.0.0.1:{provider.api_port}/whoami"]:
        r = call(vault, "vault_request", {"method": "GET", "url": url, "provider": "testapi"})
        out = structured(r)
        assert r.is_error and out["error"] == "blocked_destination", (url, out)
    rows = vault.sqlite("SELECT outcome FROM audit_log WHERE event = 'request'")
    assert [r[0] for r in rows] == ["blocked_destination"] * 3


def test_no_grant_is_authorization_required(provider, vault):
    r = call(vault, "vault_request", {"method": "GET", "url": "https://api.github.com/user", "provider": "github"})
    out = structured(r)
    assert not r.is_error, "authorization_required is a normal result"
    assert out["error"] == "authorization_required" and out["provider"] == "github"
    assert "VAULT_MCP_PROVIDER_GITHUB_CLIENT_ID" in out["message"], out["message"]
    # a configured OAuth provider gets a Connect link
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
    out = structured(r)
    assert out["error"] == "authorization_required"
    assert out["connect_url"].startswith(f"http://127.0.0.1:{vault.connect_port}/connect/"), out


def test_unknown_provider_and_ambiguous_and_grant_ids(provider, vault):
    r = call(vault, "vault_request", {"method": "GET", "url": "https://api.github.com/", "provider": "githib"})
    out = structured(r)
    assert r.is_error and out["error"] == "unknown_provider" and "github" in out["message"]
    token = provider.client_credentials_token()
    store_key(vault, provider, token, "--account", "one")
    store_key(vault, provider, token, "--account", "two")
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"})
    out = structured(r)
    assert r.is_error and out["error"] == "ambiguous_grant" and sorted(out["accounts"]) == ["one", "two"]
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi", "account": "two"})
    assert structured(r)["status"] == 200
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "grant_id": "grt_doesnotexist"})
    assert structured(r)["error"] == "grant_not_found"
    grants = structured(call(vault, "list_grants", {}))["grants"]
    assert {g["account"] for g in grants} == {"one", "two"} and all(g["kind"] == "secret" for g in grants)


def test_malformed_arguments_are_invalid_params(provider, vault):
    cases = [
        ({"method": "GET"}, "url"),
        ({"method": "GET", "url": "https://a/", "provider": "x", "json": {"a": 1}, "body": "b"}, "json"),
        ({"method": "TRACE", "url": f"{provider.api}/whoami", "provider": "testbed"}, "method"),
        ({"method": "GET", "url": "https://api.github.com/repos/{owner}", "provider": "github"}, "owner"),
        ({"method": "GET", "url": "https://a/", "provider": "x", "bogus": 1}, "bogus"),
        ({"method": "GET", "url": "https://a/", "provider": "x", "headers": {"Authorization": "Bearer x"}}, "Authorization"),
        ({"method": "GET", "url": "https://a/"}, "provider"),
    ]

    async def go():
        msgs = []
        async with vault.mcp() as s:
            for args, needle in cases:
                with pytest.raises(McpError) as e:
                    r = await s.call_tool("vault_request", args)
                    raise AssertionError(f"expected invalid params for {args}, got {r}")
                assert e.value.error.code == -32602, e.value.error
                msgs.append((e.value.error.message, needle))
        return msgs
    for msg, needle in asyncio.run(go()):
        assert needle in msg, (msg, needle)


def test_response_body_is_capped_with_flag(provider):
    v = Vault(provider, extra_toml="[request]\nmax_response_bytes = 2048\n")
    try:
        store_key(v, provider, provider.client_credentials_token())
        # /big does not need a token, but the key is still only sent to the allowed host
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/big", "query_params": {"kb": 10},
                                                   "provider": "testapi"}))
        assert out["truncated"] is True and out["size_bytes"] == 2048 and len(out["body"]) == 2048
    finally:
        v.cleanup()


def test_timeout_is_reported(provider):
    v = Vault(provider, extra_toml="[request]\ntimeout_secs = 1\n")
    try:
        store_key(v, provider, provider.client_credentials_token())
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/slow", "query_params": {"ms": 3000},
                                                   "provider": "testapi"}))
        assert out["error"] == "timeout" and out["retryable"] is True, out
    finally:
        v.cleanup()


def test_canary_secret_never_leaks(provider, vault):
    """A known credential must not appear in tool results, trace-level logs, audit rows, error messages or
    the database file."""
    canary = provider.client_credentials_token()
    store_key(vault, provider, canary, "--account", "bearer")
    vault.cli("secret", "add", "testapi", "--account", "query", "--inject", "query", "--query-param", "access_token",
              "--host", f"127.0.0.1:{provider.api_port}", input=canary + "\n")
    texts = []

    async def go():
        async with vault.mcp(env={"VAULT_MCP_LOG": "trace"}) as s:
            calls = [
                # the API echoes every request header, Authorization included
                {"method": "POST", "url": f"{provider.api}/echo", "provider": "testapi", "account": "bearer", "json": {"x": 1}},
                {"method": "GET", "url": f"{provider.api}/echo", "provider": "testapi", "account": "query"},
                {"method": "GET", "url": "http://127.0.0.1:1/closed", "provider": "testapi", "account": "bearer"},
                {"method": "GET", "url": f"http://127.0.0.1:{provider.oidc_port}/", "provider": "testapi", "account": "query"},
                {"method": "GET", "url": f"{provider.api}/status/500", "provider": "testapi", "account": "query"},
            ]
            for args in calls:
                r = await s.call_tool("vault_request", args)
                texts.append(json.dumps(r.model_dump(mode="json")))
            texts.append(json.dumps((await s.call_tool("list_grants", {})).model_dump(mode="json")))
    asyncio.run(go())
    echoed = json.loads(texts[0])["structured_content"]
    assert echoed["status"] == 200 and echoed["body"]["headers"]["authorization"] == "Bearer [REDACTED]", echoed
    for t in texts:
        assert canary not in t
    stderr = vault.stderr_path.read_text()
    assert "TRACE" in stderr or "DEBUG" in stderr, "the server really logged at trace level"
    assert canary not in stderr
    for row in vault.sqlite("SELECT * FROM audit_log"):
        assert canary not in json.dumps(row, default=str)
    data = vault.dir / "data"
    for f in data.iterdir():
        assert canary.encode() not in f.read_bytes(), f
    for cmd in (["grants", "list", "--json"], ["doctor"]):
        p = vault.cli(*cmd, check=False)
        assert canary not in p.stdout + p.stderr


def test_bad_input_gets_clear_messages(provider):
    v = Vault(provider)
    try:
        v.cli("secret", "add", "stripe", input="sk_test_x\n")
        # wrong master key: clear error, no panic, nothing changed
        p = v.cli("grants", "list", check=False, env=None) if False else None
        env = dict(v.env, VAULT_MCP_MASTER_KEY=subprocess.run([str(BIN), "key", "generate"], capture_output=True, text=True).stdout.strip())
        p = subprocess.run([str(BIN), "grants", "list"], capture_output=True, text=True, env=env)
        assert p.returncode == 1 and "panicked" not in p.stderr
        assert "master key" in p.stderr and "VAULT_MCP_MASTER_KEY" in p.stderr, p.stderr
        # malformed key
        env["VAULT_MCP_MASTER_KEY"] = "not-a-key"
        p = subprocess.run([str(BIN), "grants", "list"], capture_output=True, text=True, env=env)
        assert p.returncode == 1 and "base64" in p.stderr and "panicked" not in p.stderr, p.stderr
        # the right key still works: nothing was lost
        assert "stripe" in v.cli("grants", "list").stdout
        # missing key file for an existing vault
        key = v.dir / "data" / "master.key"
        key.rename(v.dir / "master.key.bak")
        p = v.cli("grants", "list", check=False)
        assert p.returncode == 1 and "missing" in p.stderr and "panicked" not in p.stderr, p.stderr
        (v.dir / "master.key.bak").rename(key)
        # corrupted database file
        db = v.dir / "data" / "vault.db"
        for side in ("vault.db-wal", "vault.db-shm"):
            (v.dir / "data" / side).unlink(missing_ok=True)
        original = db.read_bytes()
        db.write_bytes(b"this is not a database" * 100)
        p = v.cli("grants", "list", check=False)
        assert p.returncode == 1 and "panicked" not in p.stderr
        assert "not a vault-mcp SQLite database or is corrupt" in p.stderr, p.stderr
        assert db.read_bytes() == b"this is not a database" * 100, "the damaged file was left untouched"
        db.write_bytes(original)
        # config typos name the key; missing config file names the path
        v.config.write_text(v.config.read_text() + "\n[request]\ntimeout = 3\n")
        p = v.cli("grants", "list", check=False)
        assert p.returncode == 1 and "timeout" in p.stderr and "config.toml" in p.stderr, p.stderr
        p = subprocess.run([str(BIN), "--config", "/nonexistent/vault.toml", "doctor"], capture_output=True, text=True)
        assert p.returncode == 1 and "/nonexistent/vault.toml" in p.stderr
        # secrets are never taken from argv: there is no flag for it
        p = v.cli("secret", "add", "stripe", "--secret", "sk_x", check=False)
        assert p.returncode == 2
    finally:
        v.cleanup()


def test_redirects_keep_the_credential_on_its_origin(provider, vault):
    store_key(vault, provider, provider.client_credentials_token())
    # same origin: followed, with the credential
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/redirect",
                                                   "query_params": {"to": "/whoami"}, "provider": "testapi"}))
    assert out["status"] == 200 and out["body"]["client_id"] == "mcp-service", out
    # another origin: not followed; the 302 comes back to the caller with its Location
    other = f"http://127.0.0.1:{provider.oidc_port}/me"
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/redirect",
                                                   "query_params": {"to": other}, "provider": "testapi"}))
    assert out["status"] == 302 and out["headers"]["location"] == other, out


def test_audit_records_client_and_agent_label(provider, vault):
    store_key(vault, provider, provider.client_credentials_token())

    async def go():
        async with vault.mcp() as s:
            return await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"},
                                     meta={"io.vault-mcp/agent": "release-bot"})
    assert structured(asyncio.run(go()))["status"] == 200
    agent, client, principal = vault.sqlite("SELECT agent, client, principal FROM audit_log WHERE event = 'request'")[0]
    assert agent == "release-bot" and client and principal == "local", (agent, client, principal)
