"""Issue: Connect — silent refresh with 5-second access tokens, single-flight refresh counted at the authorization
server, invalid_grant repair, and the `vault-mcp connect` command (browser and device flow)."""
import asyncio
import re
import subprocess
import time

import pytest

from harness import BIN, Provider, Vault, browse, call, structured
from test_connect import connect_via_browser, serve_connect_pages


@pytest.fixture(scope="module")
def provider():
    p = Provider(ACCESS_TOKEN_TTL="5")
    yield p
    p.stop()


@pytest.fixture
def vault(provider):
    v = Vault(provider)
    v.api = provider.api
    v.pages = serve_connect_pages(v)
    yield v
    v.pages.kill()
    v.cleanup()


def refreshes(provider) -> int:
    return provider.stats().get("refresh_token:ok", 0)


def test_calls_keep_working_across_expiry(provider, vault):
    connect_via_browser(vault, prefix="refresh")
    before = refreshes(provider)

    async def go():
        statuses = []
        async with vault.mcp() as s:
            for _ in range(4):
                r = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
                statuses.append(r.structured_content.get("status"))
                await asyncio.sleep(3)
        return statuses
    assert asyncio.run(go()) == [200, 200, 200, 200]
    assert refreshes(provider) > before, "the token was refreshed silently"
    rows = vault.sqlite("SELECT outcome FROM audit_log WHERE event = 'refresh'")
    assert rows and all(r[0] == "ok" for r in rows)


def test_fifty_concurrent_calls_one_refresh(provider, vault):
    connect_via_browser(vault, prefix="concurrent")
    time.sleep(6)  # the access token has expired
    before = refreshes(provider)

    async def go():
        async with vault.mcp() as s:
            args = {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}
            return await asyncio.gather(*[s.call_tool("vault_request", args) for _ in range(50)])
    results = asyncio.run(go())
    statuses = [r.structured_content.get("status") for r in results]
    assert statuses == [200] * 50, [r.structured_content for r in results if r.structured_content.get("status") != 200][:2]
    assert refreshes(provider) - before == 1, provider.stats()


def test_invalid_grant_marks_revoked_and_offers_repair(provider, vault):
    connect_via_browser(vault, prefix="repair-first")
    gid = structured(call(vault, "list_grants", {}))["grants"][0]["id"]
    provider.restart_oidc()  # forgets every grant: the refresh token is now invalid
    time.sleep(6)
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
    out = structured(r)
    assert r.is_error and out["error"] == "credential_revoked" and out["connect_url"], out
    g = structured(call(vault, "list_grants", {}))["grants"][0]
    assert g["status"] == "credential_revoked"
    page = browse(out["connect_url"], shots=None)
    assert "Connected as alice" in page["title"], page
    g = structured(call(vault, "list_grants", {}))["grants"]
    assert len(g) == 1 and g[0]["id"] == gid and g[0]["status"] == "active"
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
    assert out["status"] == 200


def test_provider_errors_are_retryable_not_reconnect(provider, vault):
    connect_via_browser(vault, prefix="errors")
    for code in (429, 503):
        r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/status/{code}", "provider": "testbed"})
        out = structured(r)
        assert r.is_error and out["error"] == "provider_error" and out["status"] == code and out["retryable"] is True, out
        assert "connect_url" not in out


def test_cli_connect_with_browser(provider):
    v = Vault(provider)
    try:
        p = subprocess.Popen([str(BIN), "connect", "testbed", "--no-browser"], env=v.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        url = None
        for line in p.stdout:
            m = re.search(r"(http://127\.0\.0\.1:\d+/connect/\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "no Connect link printed: " + (p.stderr.read() if p.poll() is not None else "(still running)")
        page = browse(url)
        assert "Connected as alice" in page["title"], page
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "Connected testbed as alice" in out and "read:user" in out, out
    finally:
        v.cleanup()


def test_cli_connect_denied_reports_reason(provider):
    v = Vault(provider)
    try:
        p = subprocess.Popen([str(BIN), "connect", "testbed", "--no-browser"], env=v.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        url = next(m.group(1) for line in p.stdout if (m := re.search(r"(http://127\.0\.0\.1:\d+/connect/\S+)", line)))
        browse(url, "--deny")
        out, err = p.communicate(timeout=30)
        assert p.returncode == 1 and "not granted" in err, err
    finally:
        v.cleanup()


def test_cli_connect_device_flow(provider):
    v = Vault(provider)
    try:
        p = subprocess.Popen([str(BIN), "connect", "testbed", "--device", "--no-browser"], env=v.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if re.search(r"^\s+[A-Z0-9-]{4,}\s*$", line):
                break
        text = "".join(lines)
        uri = re.search(r"Open (\S+) and enter the code", text).group(1)
        code = re.search(r"^\s+([A-Z0-9-]{4,})\s*$", text, re.M).group(1)
        page = browse(f"{uri}?user_code={code}")
        assert "Success" in page["title"] or "success" in page["text"].lower(), page
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "Connected testbed as alice" in out, out
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
        assert out["status"] == 200 and out["body"]["login"] == "alice"
    finally:
        v.cleanup()
