"""Issue: distribution — the MCPB manifest passes the official validator; the bundle built by scripts/build-dist.sh,
unpacked and configured as Claude Desktop would, serves tools to the official Python client; the packed npm tarballs
serve MCP through `npx`; `cargo install --path .` works. Needs target/release/vault-mcp (scripts/test.sh builds it)."""
import asyncio
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from harness import NODE_BIN, NODE_DIR, REPO, node_script

MCPB = [str(NODE_BIN), str(NODE_DIR / "node_modules/@anthropic-ai/mcpb/dist/cli/cli.js")]
VERSION = re.search(r'^version = "(.+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
DIST = REPO / "target" / "dist"


@pytest.fixture(scope="module")
def dist():
    if not (REPO / "target/release/vault-mcp").exists():
        pytest.fail("target/release/vault-mcp is missing: scripts/test.sh builds it before the end-to-end tests")
    subprocess.run([str(REPO / "scripts/build-dist.sh")], check=True, cwd=REPO, env=dict(os.environ, SKIP_BUILD="1"),
                   capture_output=True)
    return DIST


async def list_and_call(params: StdioServerParameters):
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            init = await s.initialize()
            tools = [t.name for t in (await s.list_tools()).tools]
            providers = (await s.call_tool("list_providers", {})).structured_content["providers"]
            return init, tools, {p["id"]: p for p in providers}


def test_manifest_passes_the_official_validator():
    p = subprocess.run(MCPB + ["validate", str(REPO / "manifest.json")], capture_output=True, text=True)
    assert p.returncode == 0 and "passes" in p.stdout, p.stdout + p.stderr
    manifest = json.loads((REPO / "manifest.json").read_text())
    assert manifest["manifest_version"] == "0.3" and manifest["server"]["type"] == "binary"
    assert manifest["version"] == VERSION
    assert json.loads((REPO / "npm/vault-mcp/package.json").read_text())["version"] == VERSION
    secrets = [k for k, v in manifest["user_config"].items() if v.get("sensitive")]
    assert {"master_key", "github_client_secret", "google_client_secret", "slack_client_secret"} <= set(secrets)


def test_bundle_runs_from_its_unpacked_folder(dist, tmp_path):
    bundle = dist / f"vault-mcp-{VERSION}-linux-x64.mcpb"
    assert bundle.exists()
    unpacked = tmp_path / "bundle"
    p = subprocess.run(MCPB + ["unpack", str(bundle), str(unpacked)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.access(unpacked / "server" / "vault-mcp", os.X_OK)
    user_config = {"data_dir": str(tmp_path / "vault"), "github_client_id": "gh-id", "github_client_secret": "gh-secret"}
    cfg = json.loads(subprocess.run(node_script("mcpb-config.mjs") + [str(unpacked), json.dumps(user_config)],
                                    capture_output=True, text=True, check=True).stdout)
    assert cfg["command"] == str(unpacked / "server" / "vault-mcp") and cfg["args"] == ["serve"]
    env = {**os.environ, **cfg["env"], "VAULT_MCP_CONNECT_LISTEN": "127.0.0.1:0"}
    env.pop("VAULT_MCP_CONFIG", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no stray user config
    init, tools, providers = asyncio.run(list_and_call(StdioServerParameters(command=cfg["command"], args=cfg["args"], env=env)))
    assert init.server_info.name == "vault-mcp" and init.server_info.version == VERSION
    assert {"vault_request", "list_grants", "list_providers", "start_connect", "github_list_issues"} <= set(tools)
    # user_config values reached the server; unset optional fields (left as ${user_config.x}) count as unset
    assert providers["github"]["configured"] is True
    assert providers["google"]["configured"] is False
    assert (tmp_path / "vault" / "vault.db").exists(), "the data_dir from user_config was used"


def test_npx_of_the_packed_tarballs_serves_the_python_client(dist, tmp_path):
    launcher = dist / f"vault-mcp-{VERSION}.tgz"
    platform = dist / f"vault-mcp-linux-x64-{VERSION}.tgz"
    env = {**os.environ, "npm_config_cache": str(tmp_path / "npm-cache"), "npm_config_update_notifier": "false",
           "VAULT_MCP_DATA_DIR": str(tmp_path / "vault"), "VAULT_MCP_CONFIG": os.devnull,
           "VAULT_MCP_CONNECT_LISTEN": "127.0.0.1:0", "PATH": os.environ["PATH"]}
    params = StdioServerParameters(command="npx", args=["--yes", "--package", str(platform), "--package", str(launcher),
                                                        "vault-mcp", "serve"], env=env)
    init, tools, _ = asyncio.run(list_and_call(params))
    assert init.server_info.name == "vault-mcp" and "vault_request" in tools


def test_launcher_explains_a_missing_binary(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VAULT_MCP_BINARY", None)
    p = subprocess.run([str(NODE_BIN), str(REPO / "npm/vault-mcp/bin/vault-mcp.js"), "--version"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 1 and "@vault-mcp/linux-x64" in p.stderr and "cargo install" in p.stderr
    env["VAULT_MCP_BINARY"] = str(REPO / "target/debug/vault-mcp")
    p = subprocess.run([str(NODE_BIN), str(REPO / "npm/vault-mcp/bin/vault-mcp.js"), "--version"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == f"vault-mcp {VERSION}"


def test_cargo_install(tmp_path):
    # --debug reuses the test build; the release profile is exercised by the bundle and npm tests above
    p = subprocess.run(["cargo", "install", "--path", str(REPO), "--locked", "--debug", "--root", str(tmp_path),
                        "--target-dir", str(REPO / "target")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = subprocess.run([str(tmp_path / "bin" / "vault-mcp"), "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"vault-mcp {VERSION}"
