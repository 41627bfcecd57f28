"""Several `vault-mcp serve --http` instances on one PostgreSQL database behind a real HAProxy (round robin,
health checks on /healthz, and — for stateful sessions — stickiness learned from the `Mcp-Session-Id` response
header). The database is a fresh one on the throwaway cluster scripts/pg.sh runs; the instances share the master
key. Used by test_scale_out.py and scripts/bench-scale.py."""
from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness import BIN, REPO, Provider, free_port, wait_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def new_database() -> str:
    out = subprocess.run([str(REPO / "scripts" / "pg.sh"), "newdb"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def pg(*args: str) -> None:
    subprocess.run([str(REPO / "scripts" / "pg.sh"), *args], check=True, capture_output=True)


HAPROXY_CFG = """
global
    maxconn 4096
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    option redispatch
    retries 2
frontend vault
    bind 127.0.0.1:{lb_port}
    default_backend instances
backend instances
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
{sticky}
{servers}
"""

# Streamable HTTP sessions and legacy SSE streams live in the memory of the instance that opened them: the
# session id (a response header on both) is learned, and requests naming it (header, or `?sessionId=` on the
# SSE message endpoint) go back to that instance.
STICKY = """    stick-table type string len 64 size 100k expire 30m
    stick on req.hdr(mcp-session-id)
    stick on url_param(sessionId)
    stick store-response res.hdr(mcp-session-id)"""


class Cluster:
    def __init__(self, provider: Provider | None, n: int = 3, identity: str = "local", stateless: bool = True,
                 extra_toml: str = "", database: str | None = None, sticky: bool | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="vault-cluster-"))
        self.database = database or new_database()
        self.lb_port = free_port()
        self.base = f"http://127.0.0.1:{self.lb_port}"
        self.mcp_url = f"{self.base}/mcp"
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.sticky = (not stateless) if sticky is None else sticky
        toml = (f'[connect]\npublic_url = "{self.base}/"\nlisten = "127.0.0.1:{free_port()}"\nrefresh_skew_secs = 2\n'
                f'refresh_lease_secs = 4\n[approvals]\nopen_browser = false\n'
                + (provider.provider_toml() if provider else "") + extra_toml
                + f'\n[http]\nidentity = "{identity}"\nstateless = {"true" if stateless else "false"}\n')
        if identity != "local" and provider:
            toml += f'[http.idp]\nissuer = "{provider.issuer}"\nclient_id = "mcp-user"\n'
        self.config = self.dir / "config.toml"
        self.config.write_text(toml)
        self.env = {**os.environ, "VAULT_MCP_CONFIG": str(self.config), "VAULT_MCP_DATABASE_URL": self.database,
                    "VAULT_MCP_MASTER_KEY": self.key, "VAULT_MCP_DATA_DIR": str(self.dir / "cli-data"), "NO_COLOR": "1"}
        self.haproxy = None

    # -- instances -------------------------------------------------------------------------------------

    def instance_env(self, i: int) -> dict:
        # Each instance keeps its own data directory (its audit checkpoint); the vault itself is in PostgreSQL.
        return {**self.env, "VAULT_MCP_DATA_DIR": str(self.dir / f"data-{i}")}

    def start_instance(self, i: int) -> None:
        log = open(self.dir / f"instance-{i}.log", "a")
        self.procs[i] = subprocess.Popen([str(BIN), "serve", "--http", f"127.0.0.1:{self.ports[i]}"],
                                         env=self.instance_env(i), stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.ports[i], 30)

    def kill(self, i: int) -> None:
        """kill -9: no graceful anything."""
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def log(self, i: int) -> str:
        return (self.dir / f"instance-{i}.log").read_text()

    # -- the load balancer ----------------------------------------------------------------------------

    def start(self) -> "Cluster":
        for i in range(len(self.ports)):
            self.start_instance(i)
        servers = "\n".join(f"    server i{i} 127.0.0.1:{p} check inter 500ms fall 2 rise 1"
                            for i, p in enumerate(self.ports))
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(lb_port=self.lb_port, servers=servers,
                                          sticky=STICKY if self.sticky else ""))
        self.haproxy = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=open(self.dir / "haproxy.log", "a"),
                                        stderr=subprocess.STDOUT)
        wait_port(self.lb_port, 15)
        return self

    def stop(self) -> None:
        if self.haproxy:
            self.haproxy.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.haproxy.wait(5)
        for p in self.procs:
            if p and p.poll() is None:
                p.terminate()
        for p in self.procs:
            if p:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the CLI against the shared database -----------------------------------------------------------

    def cli(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"vault-mcp {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def sql(self, query: str) -> list[tuple]:
        out = subprocess.run(["psql", self.database, "-qAtX", "-F", "\t", "-c", query],
                             capture_output=True, text=True, check=True)
        return [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]

    @contextlib.asynccontextmanager
    async def session(self, url: str | None = None, token: str | None = None):
        """An official MCP Python SDK client session over Streamable HTTP (through the LB by default)."""
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(url or self.mcp_url, http_client=http) as (r, w, *_):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    yield s

    @contextlib.asynccontextmanager
    async def sse_session(self, token: str | None = None):
        from mcp import ClientSession
        from mcp.client.sse import sse_client
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with sse_client(f"{self.base}/sse", headers=headers) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                yield s


def wait_until(pred, timeout: float = 20, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("condition not reached in time")
