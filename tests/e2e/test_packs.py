"""Issue: tool packs — shipped packs listed with schemas, a user pack tool for the test bed's API exercised end to end
(same Connect and audit behaviour as vault_request), broken packs reported with file and line, read-only mode."""
import asyncio

from harness import Vault, browse, call, structured
from test_connect import serve_connect_pages

TESTBED_PACK = """
provider = "testbed"
description = "Test bed API"

[[tools]]
name = "testbed_get_user"
title = "Get the test bed user"
description = "The signed-in user's profile at the test bed API."
method = "GET"
url = "{api}/user"
result = ["login", "email"]

[[tools]]
name = "testbed_echo"
description = "Echo a message through the test bed API."
method = "POST"
url = "{api}/echo"
result = ["method", "body"]
[[tools.params]]
name = "message"
type = "string"
description = "What to send"
required = true
in = "body"
[[tools.params]]
name = "count"
type = "integer"
description = "How many times"
minimum = 1
maximum = 3
in = "query"
"""


def tools_of(v, *serve_args):
    async def go():
        async with v.mcp(*serve_args) as s:
            return {t.name: t for t in (await s.list_tools()).tools}
    return asyncio.run(go())


def test_shipped_packs_are_listed_with_schemas(provider):
    v = Vault(provider)
    try:
        tools = tools_of(v)
        for name in ["github_list_issues", "github_create_issue", "github_search_issues", "google_calendar_list_events",
                     "gmail_get_message", "slack_post_message", "slack_read_channel", "linear_list_issues",
                     "linear_create_issue", "notion_search", "stripe_list_charges", "hubspot_list_contacts",
                     "gitlab_list_issues", "outlook_list_events", "asana_list_my_tasks"]:
            assert name in tools, name
        li = tools["github_list_issues"]
        assert li.input_schema["required"] == ["owner", "repo"]
        assert li.input_schema["properties"]["state"]["enum"] == ["open", "closed", "all"]
        assert "status" in li.output_schema["properties"]
        assert li.annotations.read_only_hint is True
        assert tools["github_create_issue"].annotations.read_only_hint is False
        ro = tools_of(v, "--read-only")
        assert "github_create_issue" not in ro and "slack_post_message" not in ro and "github_list_issues" in ro
        # the read packs are read-only tools, so a read-only server keeps them
        assert all(tools[n].annotations.read_only_hint for n in tools if n.split("_")[0] in
                   ("stripe", "hubspot", "gitlab", "outlook", "asana"))
        assert "stripe_list_invoices" in ro and "asana_list_my_tasks" in ro
        assert ro["vault_request"].annotations.read_only_hint is True
    finally:
        v.cleanup()


def test_user_pack_tool_end_to_end(provider):
    v = Vault(provider)
    v.api = provider.api
    (v.dir / "tools").mkdir()
    (v.dir / "tools" / "testbed.toml").write_text(TESTBED_PACK.replace("{api}", provider.api))
    v.pages = serve_connect_pages(v)
    try:
        r = call(v, "testbed_get_user", {"reason": "show the profile"})
        out = structured(r)
        assert out["error"] == "authorization_required" and out["connect_url"], out
        page = browse(out["connect_url"])
        assert "Connected as alice" in page["title"], page
        r = call(v, "testbed_get_user", {})
        out = structured(r)
        assert out["status"] == 200 and out["body"] == {"login": "alice", "email": "alice@example.test"}, out
        r = call(v, "testbed_echo", {"message": "hi", "count": 2})
        out = structured(r)
        assert out["body"]["method"] == "POST" and '"message":"hi"' in out["body"]["body"], out
        rows = v.sqlite("SELECT tool, path, outcome, reason FROM audit_log WHERE event = 'request' ORDER BY seq")
        assert rows[0] == ("testbed_get_user", "/user", "authorization_required", "show the profile"), rows
        assert rows[1] == ("testbed_get_user", "/user", "ok", None)
        assert rows[2][0] == "testbed_echo"
        # arguments are checked against the declared params
        from mcp.shared.exceptions import MCPError
        async def bad(args):
            async with v.mcp() as s:
                try:
                    await s.call_tool("testbed_echo", args)
                except MCPError as e:
                    return e.error.message
        assert "message: is required" in asyncio.run(bad({}))
        assert "count: must be between" in asyncio.run(bad({"message": "x", "count": 9}))
        assert "nope: unknown argument" in asyncio.run(bad({"message": "x", "nope": 1}))
    finally:
        v.pages.kill()
        v.cleanup()


def test_broken_pack_is_reported_and_others_load(provider):
    v = Vault(provider)
    try:
        (v.dir / "tools").mkdir()
        (v.dir / "tools" / "broken.toml").write_text(
            'provider = "testbed"\n\n[[tools]]\nname = "testbed_x"\ndescription = "x"\nmethod = "GET"\n'
            'url = "https://example.com/x"\nresult_fields = ["a"]\n')
        p = v.cli("tools", "list", check=False)
        assert p.returncode == 1
        assert "broken.toml:8:" in p.stderr and "result_fields" in p.stderr, p.stderr
        doctor = v.cli("doctor", check=False)
        assert "ERR tool packs" in doctor.stdout and "broken.toml:8" in doctor.stdout
        tools = tools_of(v)
        assert "vault_request" in tools and "github_list_issues" in tools and "testbed_x" not in tools
        assert "broken.toml:8" in v.stderr_path.read_text(), "serve logs the load error"
    finally:
        v.cleanup()


def test_read_only_mode_limits_vault_request(provider):
    v = Vault(provider)
    try:
        v.cli("secret", "add", "testapi", "--host", f"127.0.0.1:{provider.api_port}", input=provider.client_credentials_token() + "\n")
        r = call(v, "vault_request", {"method": "POST", "url": f"{provider.api}/echo", "provider": "testapi"}, )
        assert structured(r)["status"] == 200

        async def go():
            async with v.mcp("--read-only") as s:
                post = await s.call_tool("vault_request", {"method": "POST", "url": f"{provider.api}/echo", "provider": "testapi"})
                get = await s.call_tool("vault_request", {"method": "GET", "url": f"{provider.api}/whoami", "provider": "testapi"})
                return post, get
        post, get = asyncio.run(go())
        assert post.is_error and post.structured_content["error"] == "policy_violation" and post.structured_content["rule"] == "read-only"
        assert get.structured_content["status"] == 200
    finally:
        v.cleanup()
