"""The official MCP TypeScript SDK client (support/ts-client.mjs), without mcp-remote in between: over stdio a
Connect round trip (a call without a grant gets the link, headless Chromium completes it at oidc-provider, the
same session's next call returns the provider's data), and over Streamable HTTP a listing and a call."""
import json
import os
import subprocess

import pytest

from harness import ARTIFACTS, BIN, HostedVault, Vault, browse, mint_jwt, node_script


class TsClient:
    def __init__(self, *args: str, env: dict):
        self.p = subprocess.Popen(node_script("ts-client.mjs") + list(args), env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=open(os.devnull, "w"), text=True)
        first = self.read()
        assert first.get("ready"), first

    def read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, f"the TypeScript client exited ({self.p.poll()})"
        return json.loads(line)

    def send(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def call_with_events(self, on_event, **cmd) -> tuple[dict, list]:
        """Send a command; hand each {"elicit"}/{"notification"} line to `on_event` until the answer arrives."""
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        events = []
        while True:
            line = self.read()
            if "elicit" in line or "notification" in line:
                events.append(line)
                on_event(line)
                continue
            return line, events

    def close(self):
        try:
            self.send(op="close")
        finally:
            self.p.kill()


@pytest.fixture
def vault(provider):
    v = Vault(provider)
    yield v
    v.cleanup()


def test_stdio_connect_round_trip(provider, vault):
    c = TsClient("stdio", str(BIN), env=vault.env)
    try:
        tools = c.send(op="list")["tools"]
        assert {"vault_request", "list_grants", "start_connect"} <= set(tools), tools
        args = {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}
        first = c.send(op="call", name="vault_request", arguments=args)
        out = first["structuredContent"]
        assert out["error"] == "authorization_required", first
        page = browse(out["connect_url"], shots=ARTIFACTS / "screenshots", prefix="ts-client-connect")
        assert page["title"].startswith("Connected as alice"), page
        second = c.send(op="call", name="vault_request", arguments=args)
        body = second["structuredContent"]
        assert not second.get("isError") and body["status"] == 200 and body["body"]["login"] == "alice", second
        # the text content carries the same result for clients that read only text
        assert any('"login"' in part.get("text", "") for part in second["content"]), second["content"]
    finally:
        c.close()


def test_streamable_http_list_and_call(provider):
    v = HostedVault(provider, identity="local")
    v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")
    v.start()
    c = TsClient("http", v.mcp_url, env=dict(os.environ))
    try:
        assert "vault_request" in c.send(op="list")["tools"]
        r = c.send(op="call", name="vault_request",
                   arguments={"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"})
        assert not r.get("isError") and r["structuredContent"]["status"] == 200, r
    finally:
        c.close()
        v.stop()
        v.cleanup()


def inspector(*args: str, env: dict | None = None) -> dict:
    """One run of the MCP Inspector's CLI mode (one request, JSON on stdout)."""
    from harness import NODE_BIN, NODE_DIR
    cli = NODE_DIR / "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
    p = subprocess.run([str(NODE_BIN), str(cli), "--cli", *args], capture_output=True, text=True, timeout=90,
                       env=env or dict(os.environ))
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return json.loads(p.stdout)


def tool_args(**kw: str) -> list[str]:
    return [a for k, v in kw.items() for a in ("--tool-arg", f"{k}={v}")]


def test_inspector_cli_over_stdio(provider, vault):
    vault.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
              input=provider.client_credentials_token() + "\n")
    # The Inspector starts the server with a minimal environment: pass the vault's settings with -e.
    env = [a for k in ("VAULT_MCP_CONFIG", "VAULT_MCP_DATA_DIR") for a in ("-e", f"{k}={vault.env[k]}")]
    listed = inspector(*env, str(BIN), "serve", "--method", "tools/list")
    assert "vault_request" in [t["name"] for t in listed["tools"]]
    r = inspector(*env, str(BIN), "serve", "--method", "tools/call", "--tool-name", "vault_request",
                  *tool_args(method="GET", url=f"{provider.api}/whoami", provider="testapi"))
    assert not r.get("isError") and r["structuredContent"]["status"] == 200, r


def test_inspector_cli_connect_round_trip_over_http(provider):
    """Hosted (jwt identity): alice's bearer token from the IdP on every Inspector run; the Connect page
    signs her in at the IdP, so the link completes for her."""
    v = HostedVault(provider, identity="jwt")
    v.start()
    try:
        token = mint_jwt(provider, v.mcp_url, "alice")
        call = ["--transport", "http", "--header", f"Authorization: Bearer {token}",
                "--method", "tools/call", "--tool-name", "vault_request",
                *tool_args(method="GET", url=f"{provider.api}/user", provider="testbed")]
        first = inspector(v.mcp_url, *call)["structuredContent"]
        assert first["error"] == "authorization_required", first
        page = browse(first["connect_url"], shots=ARTIFACTS / "screenshots", prefix="inspector-connect")
        assert page["title"].startswith("Connected as alice"), page
        second = inspector(v.mcp_url, *call)
        assert second["structuredContent"]["status"] == 200, second
        assert second["structuredContent"]["body"]["login"] == "alice", second
    finally:
        v.stop()
        v.cleanup()


def test_stdio_connect_in_client_url_elicitation(provider, vault):
    """The TypeScript client declares URL elicitation: the first call itself returns the data once the person
    finishes Connect in the browser the client was asked to open, and the completion notification arrives."""
    c = TsClient("stdio", str(BIN), env=dict(vault.env, VAULT_E2E_ELICIT="accept"))
    pages = []

    def person(event):
        params = event.get("elicit")
        if params and params.get("mode") == "url":
            pages.append(browse(params["url"], shots=ARTIFACTS / "screenshots", prefix="ts-client-in-client"))
    try:
        args = {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}
        r, events = c.call_with_events(person, op="call", name="vault_request", arguments=args)
        body = r["structuredContent"]
        assert not r.get("isError") and body["status"] == 200 and body["body"]["login"] == "alice", r
        asked = [e["elicit"] for e in events if "elicit" in e]
        assert len(asked) == 1 and asked[0]["mode"] == "url" and "/connect/" in asked[0]["url"], events
        assert pages and pages[0]["title"].startswith("Connected as alice"), pages
        done = [e["notification"] for e in events if e.get("notification", {}).get("method") == "notifications/elicitation/complete"]
        assert [d["params"]["elicitationId"] for d in done] == [asked[0]["elicitationId"]], events
    finally:
        c.close()


def test_stdio_approval_form_in_client(provider):
    v = Vault(provider, extra_toml='[[policy.rules]]\nid = "echo-posts-need-approval"\npaths = ["/echo"]\nmethods = ["POST"]\neffect = "approve"\n')
    v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}",
          input=provider.client_credentials_token() + "\n")
    c = TsClient("stdio", str(BIN), env=dict(v.env, VAULT_E2E_ELICIT="accept"))
    try:
        args = {"method": "POST", "url": f"{provider.api}/echo", "provider": "testapi", "json": {"n": 1},
                "reason": "post a test record"}
        r, events = c.call_with_events(lambda e: None, op="call", name="vault_request", arguments=args)
        assert not r.get("isError") and r["structuredContent"]["status"] == 200, r
        asked = [e["elicit"] for e in events if "elicit" in e]
        assert len(asked) == 1 and asked[0].get("mode", "form") == "form" and "/echo" in asked[0]["message"], events
    finally:
        c.close()
        v.cleanup()
