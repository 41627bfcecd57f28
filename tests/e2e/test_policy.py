"""Issue: policy, approvals and a tamper-evident audit trail — driven through the official MCP Python SDK (with and
without an elicitation handler) and the CLI, against the real protected API."""
import asyncio
import json
import sqlite3
import subprocess

import pytest
from mcp import types

from harness import BIN, Vault, browse, call, structured

POLICY = """
[policy]
approval_timeout_secs = 5

[[policy.rules]]
id = "no-admin"
paths = ["/admin/**", "/status/418"]
effect = "deny"
message = "admin endpoints are off limits for agents"

[[policy.rules]]
id = "writes-need-reason"
methods = ["POST", "PUT", "PATCH", "DELETE"]
require_reason = true

[[policy.rules]]
id = "echo-posts-need-approval"
paths = ["/echo"]
methods = ["POST"]
effect = "approve"

[[policy.rules]]
id = "health-budget"
paths = ["/health"]
rate_limit = { requests = 5, per_secs = 3600, per = "grant" }
"""


@pytest.fixture
def vault(provider):
    v = Vault(provider, extra_toml=POLICY)
    v.api = provider.api
    v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}", input=provider.client_credentials_token() + "\n")
    yield v
    v.cleanup()


def req(v, method, path, **kw):
    return {"method": method, "url": f"{v.api}{path}", "provider": "testapi", **kw}


def test_denials_name_the_rule_and_are_audited(vault):
    r = call(vault, "vault_request", req(vault, "GET", "/status/418"))
    out = structured(r)
    assert r.is_error and out["error"] == "policy_violation" and out["rule"] == "no-admin", out
    assert "off limits" in out["message"]
    r = call(vault, "vault_request", req(vault, "PUT", "/echo", json={"a": 1}))
    out = structured(r)
    assert out["error"] == "policy_violation" and out["rule"] == "writes-need-reason" and "reason" in out["message"]
    r = call(vault, "vault_request", req(vault, "PUT", "/echo", json={"a": 1}, reason="update the record the user asked about"))
    assert structured(r)["status"] == 200
    rows = vault.sqlite("SELECT outcome, decision FROM audit_log WHERE event = 'request' ORDER BY seq")
    assert rows == [("policy_violation", "deny:no-admin"), ("policy_violation", "deny:writes-need-reason"),
                    ("ok", "allow:writes-need-reason")], rows
    # the CLI explains the same decisions without making the call
    p = vault.cli("policy", "check", "GET", f"{vault.api}/admin/users", "--provider", "testapi", check=False)
    assert p.returncode == 1 and "no-admin" in p.stdout
    p = vault.cli("policy", "check", "GET", f"{vault.api}/whoami", "--provider", "testapi")
    assert p.stdout.startswith("allow")
    p = vault.cli("policy", "check", "POST", f"{vault.api}/echo", "--provider", "testapi", "--reason", "because", check=False)
    assert p.returncode == 1 and "needs approval by rule `echo-posts-need-approval`" in p.stdout
    show = vault.cli("policy", "show").stdout
    assert "health-budget" in show and "5 per 3600s per grant" in show


def test_broken_policy_fails_closed(provider):
    v = Vault(provider, extra_toml='[policy]\ndefault = "sometimes"\n')
    try:
        v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}", input="k" * 20 + "\n")
        out = structured(call(v, "vault_request", {"method": "GET", "url": f"{provider.api}/health", "provider": "testapi"}))
        assert out["error"] == "policy_violation" and out["rule"] == "policy-config" and "default" in out["message"], out
        p = v.cli("doctor", check=False)
        assert p.returncode == 1 and "ERR policy" in p.stdout
    finally:
        v.cleanup()


def test_rate_limit_under_concurrency(vault):
    async def go():
        async with vault.mcp() as s:
            return await asyncio.gather(*[s.call_tool("vault_request", req(vault, "GET", "/health")) for _ in range(20)])
    results = [r.structured_content for r in asyncio.run(go())]
    ok = [r for r in results if r.get("status") == 200]
    limited = [r for r in results if r.get("error") == "rate_limited"]
    assert len(ok) == 5 and len(limited) == 15, results
    assert all(r["rule"] == "health-budget" and r["retry_after_secs"] >= 1 and r["retryable"] for r in limited)


def approval_session(vault, answer):
    """Run POST /echo with an elicitation handler that answers `answer` (accept/decline/slow)."""
    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        if answer == "slow":
            await asyncio.sleep(8)
        if answer == "decline":
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"approve": answer == "accept"})

    async def go():
        async with vault.mcp(elicitation=on_elicit) as s:
            return await s.call_tool("vault_request", req(vault, "POST", "/echo", json={"x": 1}, reason="post a test record"))
    return asyncio.run(go()), asked


def test_approval_in_the_client_accept(vault):
    r, asked = approval_session(vault, "accept")
    assert structured(r)["status"] == 200, r
    assert "POST" in asked[0] and "/echo" in asked[0] and "post a test record" in asked[0]
    rows = vault.sqlite("SELECT event, outcome, decision FROM audit_log WHERE event IN ('approval', 'request') ORDER BY seq")
    assert rows == [("approval", "approved", "echo-posts-need-approval"), ("request", "ok", "approved:client")], rows


@pytest.mark.parametrize("answer", ["decline", "reject", "slow"])
def test_approval_in_the_client_refused(vault, answer):
    r, asked = approval_session(vault, answer)
    out = structured(r)
    assert r.is_error and out["error"] == "approval_denied" and out["rule"] == "echo-posts-need-approval", out
    assert asked, "the user was asked"
    outcome = vault.sqlite("SELECT outcome FROM audit_log WHERE event = 'approval'")[0][0]
    assert outcome == ("timeout" if answer == "slow" else "declined")


def test_approval_without_elicitation_then_cli_and_page(vault):
    args = req(vault, "POST", "/echo", json={"x": 1}, reason="post a test record")
    out = structured(call(vault, "vault_request", args))
    assert out["error"] == "approval_required" and out["approval_id"].startswith("apr_"), out
    # the link never reaches the model (an agent that fetched it could approve its own call)
    assert "approval_url" not in out and "/approvals/" not in json.dumps(out), out
    assert "vault-mcp approvals approve" in out["message"]
    assert out["approval_id"] in vault.cli("approvals", "list").stdout
    vault.cli("approvals", "approve", out["approval_id"])
    assert structured(call(vault, "vault_request", args))["status"] == 200
    # one approval, one call
    again = structured(call(vault, "vault_request", args))
    assert again["error"] == "approval_required"
    # the approval page, in a real browser, served by the stdio server's Connect listener
    pages = subprocess.Popen([str(BIN), "serve"], env=vault.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        from harness import wait_port, ARTIFACTS
        wait_port(vault.connect_port)
        url = vault.logged_approval_url(again["approval_id"])
        import requests
        # a form post without the page's token (or from another site) changes nothing
        r = requests.post(url, data={"decision": "approve"})
        assert r.status_code == 403, r.text
        page = browse(url, "--approve-call", shots=ARTIFACTS / "screenshots", prefix="approval")
        assert page["title"].startswith("Approved"), page
    finally:
        pages.kill()
    assert structured(call(vault, "vault_request", args))["status"] == 200
    outcomes = [r[0] for r in vault.sqlite("SELECT outcome FROM audit_log WHERE event = 'approval' ORDER BY seq")]
    assert outcomes == ["pending", "approved", "used", "pending", "approved", "used"], outcomes


def test_an_approval_is_bound_to_the_exact_call(vault):
    """An approval covers the method, URL (with its query) and body the person saw: no other call consumes it,
    and the approved call still goes through once afterwards."""
    args = req(vault, "POST", "/echo", json={"x": 1}, reason="post a test record")
    out = structured(call(vault, "vault_request", args))
    vault.cli("approvals", "approve", out["approval_id"])
    others = [
        req(vault, "POST", "/echo", json={"x": 2}, reason="post a test record"),          # another body
        req(vault, "POST", "/echo", json={"x": 1, "y": 0}, reason="post a test record"),  # a longer body
        req(vault, "POST", "/echo?to=everyone", json={"x": 1}, reason="post a test record"),  # a query added
        {**args, "body": '{"x":  1}', "json": None},                                    # other bytes on the wire
    ]
    for other in others:
        other = {k: v for k, v in other.items() if v is not None}
        r = structured(call(vault, "vault_request", other))
        assert r.get("error") == "approval_required", (other, r)
    assert structured(call(vault, "vault_request", args))["status"] == 200
    used = vault.sqlite("SELECT count(*) FROM audit_log WHERE event = 'approval' AND outcome = 'used'")[0][0]
    assert used == 1, used


def test_tampering_is_detected(vault):
    for _ in range(6):
        call(vault, "vault_request", req(vault, "GET", "/whoami"))
    ok = vault.cli("audit", "verify")
    assert ok.stdout.startswith("ok:") and "records verified" in ok.stdout
    db = vault.dir / "data" / "vault.db"

    def sql(q):
        con = sqlite3.connect(db)
        con.execute(q)
        con.commit()
        con.close()
    n = vault.sqlite("SELECT COUNT(*) FROM audit_log")[0][0]
    original = vault.sqlite("SELECT seq, status FROM audit_log WHERE seq = 4")[0]
    # edited
    sql("UPDATE audit_log SET status = 500 WHERE seq = 4")
    p = vault.cli("audit", "verify", check=False)
    assert p.returncode == 1 and "record 4" in p.stdout and "modified" in p.stdout, p.stdout
    sql(f"UPDATE audit_log SET status = {original[1]} WHERE seq = 4")
    assert vault.cli("audit", "verify").returncode == 0
    # reordered: two records swap places
    sql("UPDATE audit_log SET seq = -1 WHERE seq = 3")
    sql("UPDATE audit_log SET seq = 3 WHERE seq = 5")
    sql("UPDATE audit_log SET seq = 5 WHERE seq = -1")
    p = vault.cli("audit", "verify", check=False)
    assert p.returncode == 1 and "record 3" in p.stdout, p.stdout
    sql("UPDATE audit_log SET seq = -1 WHERE seq = 3")
    sql("UPDATE audit_log SET seq = 3 WHERE seq = 5")
    sql("UPDATE audit_log SET seq = 5 WHERE seq = -1")
    assert vault.cli("audit", "verify").returncode == 0
    # deleted
    sql("DELETE FROM audit_log WHERE seq = 2")
    p = vault.cli("audit", "verify", check=False)
    assert p.returncode == 1 and "record 2 is missing" in p.stdout, p.stdout
    # deleted and renumbered to hide the gap
    sql("UPDATE audit_log SET seq = seq - 1 WHERE seq > 2")
    p = vault.cli("audit", "verify", check=False)
    assert p.returncode == 1 and "record 2" in p.stdout and "does not link" in p.stdout, p.stdout
    assert n > 6


def test_audit_search_tail_export(vault):
    call(vault, "vault_request", req(vault, "GET", "/whoami"))
    call(vault, "vault_request", req(vault, "GET", "/status/418"))
    lines = vault.cli("audit", "export", "--jsonl").stdout.strip().splitlines()
    recs = [json.loads(l) for l in lines]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(r["hash"] and r["prev_hash"] for r in recs)
    found = vault.cli("audit", "search", "--provider", "testapi", "--outcome", "policy_violation", "--json").stdout.strip().splitlines()
    assert len(found) == 1 and json.loads(found[0])["path"] == "/status/418"
    assert vault.cli("audit", "search", "--user", "nobody", "--json").stdout.strip() == ""
    assert vault.cli("audit", "search", "--since", "1h", "--json").stdout.count("\n") >= 2
    tail = vault.cli("audit", "tail", "-n", "1").stdout
    assert "policy_violation" in tail and "deny:no-admin" in tail


def test_retention_prunes_and_the_rest_still_verifies(vault):
    for _ in range(4):
        call(vault, "vault_request", req(vault, "GET", "/whoami"))
    con = sqlite3.connect(vault.dir / "data" / "vault.db")
    con.execute("UPDATE audit_log SET ts_ms = ts_ms - 40 * 86400000 WHERE seq <= 2")
    con.commit()
    con.close()
    # (back-dating edits the records, which verify notices; pruning them away leaves a clean chain)
    assert vault.cli("audit", "verify", check=False).returncode == 1
    p = vault.cli("audit", "prune", "--days", "30")
    assert "removed 2 record(s)" in p.stdout
    ok = vault.cli("audit", "verify")
    assert ok.stdout.startswith("ok: 3 records verified"), ok.stdout
