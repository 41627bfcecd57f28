"""Issue: Connect and approvals inside the user's client. The official MCP Python SDK as the client (over stdio,
handshake era 2025-11-25 with URL-mode elicitation, and 2026-07-28 with input requests), headless Chromium as the
person completing Connect at oidc-provider, the real protected API behind it.

What must hold: one tool call on a missing grant returns the provider's data once the person connects in the
browser the client opened; the completion notification arrives; decline keeps today's answer (the link);
approvals on 2026-07-28 go through a sealed requestState that cannot be altered, replayed, or used for another
call or user; clients without elicitation see no change."""
import asyncio
import json
import subprocess
import urllib.request

import pytest
from mcp import Client, StdioServerParameters, types

from harness import ARTIFACTS, BIN, HostedVault, Vault, browse, call, free_port, structured

SHOTS = ARTIFACTS / "screenshots"

POLICY = """
[policy]
approval_timeout_secs = 30

[[policy.rules]]
id = "echo-posts-need-approval"
paths = ["/echo"]
methods = ["POST"]
effect = "approve"
"""


@pytest.fixture
def vault(provider):
    v = Vault(provider, extra_toml=POLICY)
    v.api = provider.api
    yield v
    v.cleanup()


def user_call(v):
    return {"method": "GET", "url": f"{v.api}/user", "provider": "testbed"}


def add_static_grant(v, provider):
    v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")


def echo_call(v, n=1):
    return {"method": "POST", "url": f"{v.api}/echo", "provider": "testapi", "json": {"n": n},
            "reason": "post a test record"}


class Person:
    """The person at the client: opens URL elicitations in Chromium (in the background, like a browser tab) and
    answers forms."""

    def __init__(self, url_action="accept", approve=True):
        self.url_action = url_action
        self.approve = approve
        self.asked = []
        self.walks = []
        self.notes = []

    async def on_elicit(self, context, params):
        self.asked.append(params)
        if getattr(params, "mode", None) == "url":
            if self.url_action != "accept":
                return types.ElicitResult(action=self.url_action)
            self.walks.append(asyncio.create_task(asyncio.to_thread(browse, params.url, shots=SHOTS, prefix="in-client")))
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"approve": self.approve})

    async def on_message(self, message):
        if isinstance(message, types.ServerNotification):
            self.notes.append(message)
        elif hasattr(message, "method"):
            self.notes.append(message)

    def completions(self):
        out = []
        for n in self.notes:
            root = getattr(n, "root", n)
            if getattr(root, "method", "") == "notifications/elicitation/complete":
                out.append(root.params.elicitation_id)
        return out


# ---- handshake era (2025-11-25): URL-mode elicitation during the call -------------------------------------------

def test_connect_in_client_one_call_returns_the_data(vault):
    person = Person()

    async def go():
        async with vault.mcp(elicitation=person.on_elicit, message_handler=person.on_message) as s:
            r = await s.call_tool("vault_request", user_call(vault))
            pages = [await w for w in person.walks]
            return r, pages
    r, pages = asyncio.run(go())
    out = structured(r)
    assert out.get("status") == 200 and out["body"]["login"] == "alice", out
    assert len(person.asked) == 1 and person.asked[0].mode == "url", person.asked
    params = person.asked[0]
    assert params.url.startswith(f"http://127.0.0.1:{vault.connect_port}/connect/"), params.url
    assert "testbed" in params.message and "never sees the credential" in params.message
    assert pages[0]["title"].startswith("Connected as alice") and "You can return to your client" in pages[0]["text"]
    assert person.completions() == [params.elicitation_id], person.notes
    # the grant stays: the next call needs nothing from the person
    again = structured(call(vault, "vault_request", user_call(vault)))
    assert again["status"] == 200, again
    rows = vault.sqlite("SELECT event, outcome FROM audit_log WHERE event = 'request' ORDER BY seq")
    assert rows[-2:] == [("request", "ok"), ("request", "ok")], rows


@pytest.mark.parametrize("action", ["decline", "cancel"])
def test_connect_in_client_declined_keeps_the_link_answer(vault, action):
    person = Person(url_action=action)

    async def go():
        async with vault.mcp(elicitation=person.on_elicit, message_handler=person.on_message) as s:
            return await s.call_tool("vault_request", user_call(vault))
    out = structured(asyncio.run(go()))
    assert out["error"] == "authorization_required" and out["connect_url"].startswith("http://127.0.0.1:"), out
    assert len(person.asked) == 1 and not person.completions()


def test_clients_without_url_mode_see_no_change(vault):
    """A client with form-only elicitation (2025-06-18 style `elicitation: {}`) and one without any: the link comes
    back as a result, nobody is asked."""
    out = structured(call(vault, "vault_request", user_call(vault)))
    assert out["error"] == "authorization_required" and out["connect_url"], out


def test_connect_in_client_timeout_answers_with_the_link(provider):
    v = Vault(provider)
    v.config.write_text(v.config.read_text().replace("refresh_skew_secs = 2\n", "refresh_skew_secs = 2\nwait_in_client_secs = 10\n", 1))
    v.api = provider.api
    person = Person()

    async def accept_without_opening(context, params):
        person.asked.append(params)
        return types.ElicitResult(action="accept")

    async def go():
        async with v.mcp(elicitation=accept_without_opening, message_handler=person.on_message) as s:
            return await s.call_tool("vault_request", user_call(v))
    try:
        out = structured(asyncio.run(go()))
        assert out["error"] == "authorization_required" and out["connect_url"], out
        assert not person.completions()
    finally:
        v.cleanup()


# ---- 2026-07-28: input requests and a sealed requestState ------------------------------------------------------

def modern(v, person, **kw):
    params = StdioServerParameters(command=str(BIN), args=["serve"], env=v.env)
    return Client(params, mode="2026-07-28", elicitation_callback=person.on_elicit if person else None, **kw)


def test_modern_connect_through_an_input_request(vault):
    person = Person()

    async def go():
        async with modern(vault, person) as c:
            r = await c.call_tool("vault_request", user_call(vault))
            return r, [await w for w in person.walks]
    r, pages = asyncio.run(go())
    out = structured(r)
    assert out.get("status") == 200 and out["body"]["login"] == "alice", out
    assert [p.mode for p in person.asked] == ["url"], person.asked
    assert pages[0]["title"].startswith("Connected as alice")


def test_modern_connect_declined_keeps_the_link_answer(vault):
    person = Person(url_action="decline")

    async def go():
        async with modern(vault, person) as c:
            return await c.call_tool("vault_request", user_call(vault))
    out = structured(asyncio.run(go()))
    assert out["error"] == "authorization_required" and out["connect_url"], out


@pytest.mark.parametrize("approve", [True, False])
def test_modern_approval_through_an_input_request(provider, vault, approve):
    add_static_grant(vault, provider)
    person = Person(approve=approve)

    async def go():
        async with modern(vault, person) as c:
            return await c.call_tool("vault_request", echo_call(vault))
    r = asyncio.run(go())
    out = structured(r)
    assert len(person.asked) == 1 and getattr(person.asked[0], "mode", "form") == "form", person.asked
    assert "POST" in person.asked[0].message and "/echo" in person.asked[0].message
    if approve:
        assert out["status"] == 200, out
        rows = vault.sqlite("SELECT event, outcome, decision FROM audit_log WHERE event IN ('approval', 'request') ORDER BY seq")
        # round one is a call of its own (audited, answered with the question); round two is approved
        assert rows == [("approval", "pending", "echo-posts-need-approval"),
                        ("request", "approval_required", "approval:echo-posts-need-approval"),
                        ("approval", "approved", "echo-posts-need-approval"),
                        ("request", "ok", "approved:client")], rows
    else:
        assert r.is_error and out["error"] == "approval_denied", out


def first_round(vault, args):
    """The InputRequiredResult of a first call, driven by hand."""
    async def go():
        async with modern(vault, Person()) as c:  # declares elicitation; the rounds are driven here
            return await c.session.call_tool("vault_request", args, allow_input_required=True)
    return asyncio.run(go())


def retry(vault, args, state, responses):
    async def go():
        async with modern(vault, Person()) as c:
            try:
                return await c.session.call_tool("vault_request", args, input_responses=responses,
                                                 request_state=state, allow_input_required=True)
            except Exception as e:  # the JSON-RPC error surfaces as McpError
                return e
    return asyncio.run(go())


YES = {"approval": {"action": "accept", "content": {"approve": True}}}


def refused(r):
    return isinstance(r, Exception) and "requestState is not valid" in str(r)


def test_modern_request_state_cannot_be_altered_replayed_or_moved(provider, vault):
    add_static_grant(vault, provider)
    first = first_round(vault, echo_call(vault, 1))
    assert isinstance(first, types.InputRequiredResult) and "approval" in first.input_requests, first
    state = first.request_state
    # altered: one character of the sealed value changed
    flipped = state[:-3] + ("A" if state[-3] != "A" else "B") + state[-2:]
    assert refused(retry(vault, echo_call(vault, 1), flipped, YES))
    # another call (other arguments): the state is bound to the arguments' hash
    assert refused(retry(vault, echo_call(vault, 2), state, YES))
    # the genuine retry works once...
    ok = retry(vault, echo_call(vault, 1), state, YES)
    assert isinstance(ok, types.CallToolResult) and ok.structured_content["status"] == 200, ok
    # ...and never again
    assert refused(retry(vault, echo_call(vault, 1), state, YES))
    # a state from an older protocol session (or made up) is refused too
    assert refused(retry(vault, echo_call(vault, 1), "rs1.e30.AAAA", YES))
    posts = vault.sqlite("SELECT count(*) FROM audit_log WHERE event = 'request' AND outcome = 'ok'")[0][0]
    assert posts == 1, posts
    # every refusal is in the audit trail (probing shows up there)
    refusals = vault.sqlite("SELECT outcome, detail FROM audit_log WHERE event = 'request_state' ORDER BY seq")
    assert [r[0] for r in refusals] == ["invalid_state"] * 4, refusals
    assert any("already used" in r[1] for r in refusals), refusals


def test_modern_approval_is_bound_to_the_grant_shown(provider, vault):
    """The person approved a call on account `sandbox`; if the grant changes before the retry (revoked, another
    account connected), the answer does not carry over: the person is asked again about the new account."""
    vault.cli("secret", "add", "testapi", "--account", "sandbox", "--host", f"127.0.0.1:{provider.api_port}",
              input=provider.client_credentials_token() + "\n")
    args = echo_call(vault, 1)
    first = first_round(vault, args)
    assert "account sandbox" in first.input_requests["approval"].params.message
    gid = vault.sqlite("SELECT id FROM grants WHERE account = 'sandbox'")[0][0]
    vault.cli("grants", "revoke", gid)
    vault.cli("secret", "add", "testapi", "--account", "production", "--host", f"127.0.0.1:{provider.api_port}",
              input=provider.client_credentials_token() + "\n")
    again = retry(vault, args, first.request_state, YES)
    assert isinstance(again, types.InputRequiredResult), again
    assert "account production" in again.input_requests["approval"].params.message


def test_modern_approval_kept_on_the_page_when_configured(provider):
    v = Vault(provider, extra_toml=POLICY + "\n[approvals]\nin_client = false\n")
    v.config.write_text(v.config.read_text().replace("[approvals]\nopen_browser = false\n", "", 1)
                        .replace("[approvals]\nin_client = false", "[approvals]\nopen_browser = false\nin_client = false"))
    v.api = provider.api
    try:
        add_static_grant(v, provider)
        person = Person()

        async def go():
            async with modern(v, person) as c:
                return await c.call_tool("vault_request", echo_call(v))
        out = structured(asyncio.run(go()))
        assert out["error"] == "approval_required" and out["approval_id"].startswith("apr_"), out
        assert not person.asked
    finally:
        v.cleanup()


AGENT_KEY = __import__("re").compile(r"alter_ak_[A-Za-z0-9_\-]+")


def test_agents_are_never_asked_in_their_client(provider):
    """An agent (its own key, no person behind its client) cannot answer its own approval: on 2026-07-28 it gets
    no input request, and a state it makes up is refused; on older protocols it gets the approval link for its
    owner, as before."""
    v = HostedVault(provider, extra_toml=POLICY)
    v.config.write_text(v.config.read_text().replace("[http]\n", "[http]\nstateless = true\n", 1))
    v.start()
    try:
        key = AGENT_KEY.search(v.cli("agents", "create", "bot").stdout).group(0)
        v.cli("secret", "add", "testapi", "--for", "agent:bot", "--host", f"127.0.0.1:{provider.api_port}",
              input=provider.client_credentials_token() + "\n")
        args = {"method": "POST", "url": f"{provider.api}/echo", "provider": "testapi", "json": {"amount": 999}}
        for version in ("2026-07-28", "2025-11-25"):
            meta = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}, "url": {}}}}
            if version == "2026-07-28":
                meta.update({"io.modelcontextprotocol/protocolVersion": version,
                             "io.modelcontextprotocol/clientInfo": {"name": "bot", "version": "1"}})
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "vault_request", "arguments": args, "_meta": meta}}
            rq = urllib.request.Request(v.mcp_url, data=json.dumps(body).encode(), method="POST", headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": version,
                "Mcp-Method": "tools/call", "Mcp-Name": "vault_request"})
            with urllib.request.urlopen(rq) as resp:
                out = json.loads(resp.read())["result"]
            assert out.get("resultType") != "input_required" and "requestState" not in out, out
            assert out["structuredContent"]["error"] == "approval_required", out
        sent = v.sqlite("SELECT count(*) FROM audit_log WHERE event = 'request' AND outcome = 'ok'")[0][0]
        assert sent == 0
    finally:
        v.stop()
        v.cleanup()


def test_modern_request_state_is_bound_to_the_user(provider):
    """Two hosted users over Streamable HTTP at 2026-07-28: bob cannot finish alice's approval round."""
    from harness import mint_jwt
    v = HostedVault(provider, extra_toml=POLICY).start()
    try:
        v.api = provider.api
        for user in ("alice", "bob"):
            v.cli("secret", "add", "testapi", "--for", f"user:{provider.issuer}#{user}", "--host",
                  f"127.0.0.1:{provider.api_port}", input=provider.client_credentials_token() + "\n")
        tokens = {u: mint_jwt(provider, v.mcp_url, user=u) for u in ("alice", "bob")}

        def post(user, params):
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                **params, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                    "io.modelcontextprotocol/clientInfo": {"name": "probe", "version": "1"},
                                    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}, "url": {}}}}}}
            rq = urllib.request.Request(v.mcp_url, data=json.dumps(body).encode(), method="POST", headers={
                "Authorization": f"Bearer {tokens[user]}", "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/call", "Mcp-Name": "vault_request"})
            with urllib.request.urlopen(rq) as resp:
                text = resp.read().decode()
            if text.lstrip().startswith("{"):
                return json.loads(text)
            return [json.loads(l[5:]) for l in text.splitlines() if l.startswith("data:") and l[5:].strip()][-1]

        args = echo_call(v, 7)
        first = post("alice", {"name": "vault_request", "arguments": args})
        assert first["result"]["resultType"] == "input_required", first
        state = first["result"]["requestState"]
        stolen = post("bob", {"name": "vault_request", "arguments": args, "requestState": state, "inputResponses": YES})
        assert "error" in stolen and "requestState is not valid" in stolen["error"]["message"], stolen
        mine = post("alice", {"name": "vault_request", "arguments": args, "requestState": state, "inputResponses": YES})
        assert mine["result"]["structuredContent"]["status"] == 200, mine
    finally:
        v.stop()
        v.cleanup()


# ---- hosted: Streamable HTTP (stateful), legacy SSE, and stateless HTTP ----------------------------------------

@pytest.mark.parametrize("transport", ["http", "sse"])
def test_hosted_sessions_offer_connect_in_the_client(provider, transport):
    """Over a stateful Streamable HTTP session and a legacy SSE session the client is asked to open the link on
    the hosted server's public URL; a decline keeps the link answer."""
    from harness import mint_jwt
    v = HostedVault(provider).start()
    try:
        v.api = provider.api
        token = mint_jwt(provider, v.mcp_url)
        person = Person(url_action="decline")

        async def go():
            session = v.http_session if transport == "http" else v.sse_session
            async with session(token, elicitation=person.on_elicit) as s:
                return await s.call_tool("vault_request", user_call(v))
        out = structured(asyncio.run(go()))
        assert out["error"] == "authorization_required", out
        assert len(person.asked) == 1 and person.asked[0].mode == "url", person.asked
        assert person.asked[0].url.startswith(f"{v.base}/connect/") and person.asked[0].url == out["connect_url"]
    finally:
        v.stop()
        v.cleanup()


def test_stateless_http_answers_url_elicitation_required(provider):
    """Stateless HTTP cannot ask during the call: a client that declares URL mode (here in the request's _meta)
    gets the -32042 error carrying the link; one that does not gets the result with the link, as before."""
    from harness import mint_jwt
    v = HostedVault(provider)
    v.config.write_text(v.config.read_text().replace("[http]\n", "[http]\nstateless = true\n", 1))
    v.start()
    try:
        v.api = provider.api
        token = mint_jwt(provider, v.mcp_url)

        def post(meta):
            params = {"name": "vault_request", "arguments": user_call(v)}
            if meta:
                params["_meta"] = meta
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
            rq = urllib.request.Request(v.mcp_url, data=json.dumps(body).encode(), method="POST", headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"})
            with urllib.request.urlopen(rq) as resp:
                return json.loads(resp.read())

        err = post({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}})["error"]
        assert err["code"] == -32042, err
        (e,) = err["data"]["elicitations"]
        assert e["mode"] == "url" and e["url"].startswith(f"{v.base}/connect/") and e["elicitationId"].startswith("cs_"), e
        assert "Retry the call" in e["message"]
        plain = post(None)["result"]["structuredContent"]
        assert plain["error"] == "authorization_required" and plain["connect_url"], plain
    finally:
        v.stop()
        v.cleanup()
