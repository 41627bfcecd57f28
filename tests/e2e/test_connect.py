"""Issue: Connect — real OAuth flows against oidc-provider, completed in headless Chromium, driven through the
official MCP Python SDK over stdio."""
import asyncio
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from harness import ARTIFACTS, BIN, Provider, Vault, browse, call, structured

SHOTS = ARTIFACTS / "screenshots"


def serve_connect_pages(vault):
    """The Connect pages are served by `vault-mcp serve` itself; keep one running for the browser."""
    p = subprocess.Popen([str(BIN), "serve"], env=vault.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(vault.dir / "pages.log", "w"))
    from harness import wait_port
    try:
        wait_port(vault.connect_port)
    except RuntimeError:
        p.kill()
        raise AssertionError(f"Connect pages did not come up: {(vault.dir / 'pages.log').read_text()}")
    return p


def connect_via_browser(vault, provider_id="testbed", *flags, prefix="connect"):
    r = call(vault, "vault_request", {"method": "GET", "url": f"{vault.api}/user", "provider": provider_id})
    out = structured(r)
    assert out["error"] == "authorization_required", out
    return out, browse(out["connect_url"], *flags, shots=SHOTS, prefix=prefix)


@pytest.fixture
def vault(provider):
    v = Vault(provider)
    v.api = provider.api
    v.pages = serve_connect_pages(v)
    yield v
    v.pages.kill()
    v.cleanup()


def test_connect_end_to_end_in_chromium(provider, vault):
    out, page = connect_via_browser(vault, prefix="connect")
    assert page.get("consent_scopes"), page
    assert page["title"].startswith("Connected as alice"), page
    assert "You can return to your client" in page["text"]
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"})
    body = structured(r)
    assert body["status"] == 200 and body["body"]["login"] == "alice", body
    grants = structured(call(vault, "list_grants", {}))["grants"]
    assert len(grants) == 1 and grants[0]["account"] == "alice" and "read:user" in grants[0]["scopes"]
    # the link is single use: opening it again shows it was already used
    again = browse(out["connect_url"], "--no-continue")
    assert "Already connected" in again["title"], again
    events = [r[0] for r in vault.sqlite("SELECT event || ':' || outcome FROM audit_log ORDER BY seq")]
    assert "connect:ok" in events and "connect_start:ok" in events


def test_deny_gives_clear_page_and_no_grant(provider, vault):
    _, page = connect_via_browser(vault, "testbed", "--deny", prefix="deny")
    assert page["title"] == "Access was not granted · vault-mcp", page
    assert structured(call(vault, "list_grants", {}))["grants"] == []
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
    assert out["error"] == "authorization_required"


def test_cancel_on_our_page(provider, vault):
    _, page = connect_via_browser(vault, "testbed", "--cancel", prefix="cancel")
    assert "Cancelled" in page["title"]
    assert structured(call(vault, "list_grants", {}))["grants"] == []


def test_expired_session(provider):
    v = Vault(provider, extra_toml="")
    v.config.write_text(v.config.read_text().replace("refresh_skew_secs = 2", "refresh_skew_secs = 2\nsession_ttl_secs = 60"))
    v.api = provider.api
    v.pages = serve_connect_pages(v)
    try:
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
        # age the session past its expiry directly in the store
        v.sqlite_exec = None
        import sqlite3
        con = sqlite3.connect(v.dir / "data" / "vault.db")
        con.execute("UPDATE connect_sessions SET expires_at = expires_at - 3600")
        con.commit()
        con.close()
        page = browse(out["connect_url"], shots=SHOTS, prefix="expired")
        assert "expired" in page["title"], page
    finally:
        v.pages.kill()
        v.cleanup()


def test_tampered_state_and_replayed_code(provider, vault):
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
    page = browse(out["connect_url"], "--stop-at-callback")
    cb = page["callback_url"]
    assert "code=" in cb and "state=" in cb, page
    # tampered state: refused, nothing stored
    tampered = cb.replace("state=", "state=x")
    r = requests.get(tampered)
    assert r.status_code == 400 and "cannot be completed" in r.text
    assert structured(call(vault, "list_grants", {}))["grants"] == []
    # the genuine callback still works once...
    r = requests.get(cb)
    assert r.status_code == 200 and "Connected as alice" in r.text, r.text[:500]
    # ...and replaying it (same code, same state) is refused
    r = requests.get(cb)
    assert r.status_code == 400 and "already used" in r.text
    grants = structured(call(vault, "list_grants", {}))["grants"]
    assert len(grants) == 1
    # missing parameters
    assert requests.get(f"http://127.0.0.1:{vault.connect_port}/oauth/callback").status_code == 400
    assert requests.get(f"http://127.0.0.1:{vault.connect_port}/connect/not-a-token").status_code == 404


def test_reconnect_same_account_updates_grant_in_place(provider, vault):
    connect_via_browser(vault, prefix="first")
    first = structured(call(vault, "list_grants", {}))["grants"]
    out = structured(call(vault, "start_connect", {"providers": ["testbed"], "scopes": ["repo"]}))
    page = browse(out["connect_url"])
    assert "Connected as alice" in page["title"], page
    after = structured(call(vault, "list_grants", {}))["grants"]
    assert len(after) == 1 and after[0]["id"] == first[0]["id"]
    assert "repo" in after[0]["scopes"]


def test_insufficient_scope_reauth_updates_same_grant(provider, vault):
    connect_via_browser(vault, prefix="scope-first")
    grant_id = structured(call(vault, "list_grants", {}))["grants"][0]["id"]
    # /calendar/events needs calendar.read, which the grant lacks: the API answers 403 insufficient_scope
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/calendar/events", "provider": "testbed"})
    out = structured(r)
    assert not r.is_error and out["error"] == "scope_reauth_required", out
    assert out["missing_scopes"] == ["calendar.read"] and out["connect_url"], out
    g = structured(call(vault, "list_grants", {}))["grants"][0]
    assert g["scope_mismatch"] is True and g["missing_scopes"] == ["calendar.read"]
    page = browse(out["connect_url"], shots=SHOTS, prefix="scope-reauth")
    assert "calendar.read" in " ".join(page.get("consent_scopes", [])), page
    r = call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/calendar/events", "provider": "testbed"})
    body = structured(r)
    assert body["status"] == 200 and body["body"]["owner"] == "alice", body
    g = structured(call(vault, "list_grants", {}))["grants"]
    assert len(g) == 1 and g[0]["id"] == grant_id and g[0]["scope_mismatch"] is False
    assert {"read:user", "calendar.read"} <= set(g[0]["scopes"])


def test_required_scopes_argument_asks_for_union(provider, vault):
    connect_via_browser(vault, prefix="union")
    out = structured(call(vault, "vault_request", {"method": "GET", "url": f"{provider.api}/repos", "provider": "testbed",
                                                   "required_scopes": ["repo"]}))
    assert out["error"] == "scope_reauth_required" and out["missing_scopes"] == ["repo"]
    page = browse(out["connect_url"], "--no-continue")
    assert "repo" in page["text"] and "Read your profile" in page["text"], page["text"]


def test_revoke_at_provider(provider, vault):
    connect_via_browser(vault, prefix="revoke")
    gid = structured(call(vault, "list_grants", {}))["grants"][0]["id"]
    p = vault.cli("grants", "revoke", gid)
    assert "revoked at testbed" in p.stdout, p.stdout
    assert structured(call(vault, "list_grants", {}))["grants"] == []


def test_client_secret_post_provider_and_issuer_mix_up(provider):
    """A GitHub-style provider that authenticates with client_secret_post; and an authorization response
    claiming another issuer (RFC 9207 mix-up) is refused."""
    v = Vault(None, extra_toml=provider.provider_toml(pid="postbed", client="vault-provider-post", auth="client_secret_post"))
    v.api = provider.api
    v.pages = serve_connect_pages(v)
    try:
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "postbed"}))
        page = browse(out["connect_url"])
        assert "Connected as alice" in page["title"], page
        assert structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/user", "provider": "postbed"}))["status"] == 200
        out = structured(call(v, "start_connect", {"providers": ["postbed"]}))
        page = browse(out["connect_url"], "--stop-at-callback")
        forged = page["callback_url"].replace(f"iss=http%3A%2F%2F127.0.0.1%3A{provider.oidc_port}", "iss=https%3A%2F%2Fevil.example")
        assert forged != page["callback_url"], page["callback_url"]
        r = requests.get(forged)
        assert r.status_code == 502 and "came from `https://evil.example`" in r.text, r.text[:600]
    finally:
        v.pages.kill()
        v.cleanup()
