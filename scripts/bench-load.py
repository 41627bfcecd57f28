#!/usr/bin/env python3
"""Load benchmark: `vault_request` tool calls per second and latency over Streamable HTTP (stateless, JSON
responses), measured with a real load generator (wrk, Debian package) against a fast loopback upstream (nginx
answering a fixed JSON body), with the same load against nginx directly as the ceiling — all in one run.

    scripts/bench-load.py [--targets direct,sqlite1,pg1,pg2,pg3] [--identity local|jwt] [--seconds 10]
                          [--connections 64] [--bin target/release/vault-mcp] [--markdown FILE]

Targets: `direct` = nginx itself; `sqliteN` = N instances on one SQLite file; `pgN` = N instances on one PostgreSQL
database (scripts/pg.sh), each behind HAProxy (round robin) so every vault target is measured the same way
(`--no-lb`: a single instance is loaded directly, as a client on the same machine would).
Identity `local` is the loopback development identity; `jwt` validates a bearer JWT against a JWKS the script
serves (cached by the vault after the first call). Audit is on and durable (fsync / PostgreSQL commit) throughout.
Prints a table and, with --markdown, writes it to FILE. Needs: nginx, wrk, haproxy (Debian packages).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


class Procs:
    def __init__(self, work: Path):
        self.work, self.procs = work, []

    def start(self, name: str, args: list[str], env: dict | None = None, port: int | None = None):
        p = subprocess.Popen(args, env=env, stdout=open(self.work / f"{name}.log", "a"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        if port:
            wait_port(port)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def nginx(procs: Procs, work: Path) -> int:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"id":42,"name":"item","tags":["a","b"],"ok":true}}';
        }}
    }}
}}
""")
    procs.start("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-e", str(work / "nginx-error.log")],
                port=port)
    return port


class Jwks:
    """A minimal OpenID issuer: discovery + JWKS, and a signed access token for the vault's resource."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import rsa
        import jwt
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        pub = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        pub.update({"kid": "bench", "use": "sig", "alg": "RS256"})
        docs = {"/.well-known/openid-configuration": {
            "issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks", "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token"}, "/jwks": {"keys": [pub]}}

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(docs.get(self.path.split("?")[0], {})).encode()
                self.send_response(200 if self.path.split("?")[0] in docs else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def token(self, audience: str) -> str:
        import jwt
        now = int(time.time())
        return jwt.encode({"iss": self.issuer, "sub": "bench", "aud": audience, "scope": "mcp:tools", "iat": now,
                           "exp": now + 3600}, self.key, algorithm="RS256", headers={"kid": "bench", "typ": "at+jwt"})


def wrk(url: str, seconds: int, connections: int, body: str | None, headers: dict, work: Path) -> dict:
    script = work / "wrk.lua"
    lines = []
    if body is not None:
        lines.append('wrk.method = "POST"')
        lines.append(f"wrk.body = {json.dumps(body)}")
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = {json.dumps(v)}')
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0, "raw": out}


def run_vault_target(kind: str, n: int, a, procs: Procs, work: Path, upstream: int, idp: Jwks | None) -> dict:
    tdir = work / f"{kind}{n}"
    tdir.mkdir()
    if kind == "pg":
        url = subprocess.run([str(REPO / "scripts" / "pg.sh"), "newdb"], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
    else:
        url = f"sqlite://{tdir / 'vault.db'}"
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    ports = [free_port() for _ in range(n)]
    direct = a.no_lb and n == 1
    # public URL = the load balancer (decided before it starts), or the instance itself
    lb_port = ports[0] if direct else free_port()
    public = f"http://127.0.0.1:{lb_port}/"
    cfg = tdir / "config.toml"
    ident = "local" if idp is None else "jwt"
    toml = (f'[connect]\npublic_url = "{public}"\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[http]\nidentity = "{ident}"\nstateless = true\n')
    if idp:
        toml += f'[http.idp]\nissuer = "{idp.issuer}"\nclient_id = "bench"\n'
    cfg.write_text(toml)
    env = {**os.environ, "VAULT_MCP_CONFIG": str(cfg), "VAULT_MCP_DATABASE_URL": url, "VAULT_MCP_MASTER_KEY": key,
           "VAULT_MCP_DATA_DIR": str(tdir / "data"), "VAULT_MCP_LOG": "warn"}
    owner = ["--as-principal", f"{idp.issuer}#bench"] if idp else []  # `local`: the default local user
    subprocess.run([a.bin, *owner, "secret", "add", "upstream", "--host", f"127.0.0.1:{upstream}"],
                   input="bench-key-0123456789\n", env=env, check=True, capture_output=True, text=True)
    inst = []
    for i, p in enumerate(ports):
        ienv = {**env, "VAULT_MCP_DATA_DIR": str(tdir / f"data-{i}")}
        inst.append(procs.start(f"{kind}{n}-vault{i}", [a.bin, "serve", "--http", f"127.0.0.1:{p}"], env=ienv, port=p))
    lb = lb_port if direct else haproxy_at(procs, work, ports, lb_port, f"{kind}{n}")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "vault_request", "arguments": {"method": "GET", "url": f"http://127.0.0.1:{upstream}/item",
                                               "provider": "upstream"}}})
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if idp:
        headers["Authorization"] = f"Bearer {idp.token(public + 'mcp')}"
    # One call first: it must be a successful tool call (the load below only sees HTTP statuses).
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{lb}/mcp", data=body.encode(), headers=headers)
    first = urllib.request.urlopen(req, timeout=10).read().decode()
    if '"status":200' not in first:
        raise SystemExit(f"{kind}{n}: the tool call does not succeed: {first[:400]}")
    # warm up (JWKS fetch, connection pools, page cache)
    wrk(f"http://127.0.0.1:{lb}/mcp", 2, 8, body, headers, tdir)
    res = wrk(f"http://127.0.0.1:{lb}/mcp", a.seconds, a.connections, body, headers, tdir)
    rss = [rss_mb(p.pid) for p in inst]
    for p in inst:
        p.terminate()
    for p in inst:
        p.wait(30)
    audit_rows = count_audit(url, env, a)
    res.update({"instances": n, "store": "PostgreSQL" if kind == "pg" else "SQLite", "rss_mb": rss,
                "audit_rows": audit_rows})
    return res


def haproxy_at(procs: Procs, work: Path, ports: list[int], lb: int, name: str) -> int:
    servers = "\n".join(f"    server i{i} 127.0.0.1:{p}" for i, p in enumerate(ports))
    cfg = work / f"haproxy-{name}.cfg"
    cfg.write_text(f"""
global
    maxconn 8192
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend f
    bind 127.0.0.1:{lb}
    default_backend b
backend b
    balance roundrobin
    http-reuse always
{servers}
""")
    procs.start(f"haproxy-{name}", [shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", str(cfg), "-db"], port=lb)
    return lb


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def count_audit(url: str, env: dict, a) -> int:
    out = subprocess.run([a.bin, "audit", "verify", "--json"], env={**env, "VAULT_MCP_DATABASE_URL": url},
                         capture_output=True, text=True)
    try:
        rep = json.loads(out.stdout)
        return rep["checked"] if rep.get("problem") is None else -1
    except (json.JSONDecodeError, KeyError):
        return -1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="direct,sqlite1,pg1,pg2,pg3")
    p.add_argument("--identity", default="local", choices=["local", "jwt"])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "vault-mcp"))
    p.add_argument("--markdown")
    p.add_argument("--no-lb", action="store_true",
                   help="single-instance targets: load the instance directly, without HAProxy")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-bench-load-"))
    procs = Procs(work)
    rows = []
    try:
        upstream = nginx(procs, work)
        idp = Jwks() if a.identity == "jwt" else None
        if any(t.startswith("pg") for t in a.targets.split(",")):
            subprocess.run([str(REPO / "scripts" / "pg.sh"), "start"], check=True, capture_output=True)
        for t in a.targets.split(","):
            if t == "direct":
                r = wrk(f"http://127.0.0.1:{upstream}/item", a.seconds, a.connections, None, {}, work)
                r.update({"instances": 0, "store": "-", "rss_mb": [], "audit_rows": 0})
            else:
                m = re.fullmatch(r"(sqlite|pg)(\d+)", t)
                if not m:
                    raise SystemExit(f"unknown target {t}")
                r = run_vault_target(m.group(1), int(m.group(2)), a, procs, work, upstream, idp)
            r["target"] = t
            rows.append(r)
            print(f"{t:8} {r['rps']:9.0f}/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                  f"errors {r['non2xx'] + r['socket_errors']}  audit {r['audit_rows']}  rss {r['rss_mb']}", flush=True)
    finally:
        procs.stop()
    ceiling = next((r["rps"] for r in rows if r["target"] == "direct"), None)
    cpu = os.cpu_count()
    table = [f"Load: wrk, 2 threads, {a.connections} connections, {a.seconds} s per target; identity `{a.identity}`; "
             f"upstream nginx (1 worker) answering a fixed JSON body; "
             f"{'single instances loaded directly, several behind' if a.no_lb else 'every vault target behind'} HAProxy (round robin); "
             f"audit durable; {cpu} cores shared by everything.", "",
             "| target | store | instances | tool calls/s | p50 ms | p99 ms | errors | share of direct | audit rows verified |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = f"1/{ceiling / r['rps']:.1f}" if ceiling and r["target"] != "direct" and r["rps"] else "ceiling"
        table.append(f"| {r['target']} | {r['store']} | {r['instances']} | {r['rps']:.0f} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {r['non2xx'] + r['socket_errors']} | {share} | {r['audit_rows']} |")
    text = "\n".join(table) + "\n"
    print("\n" + text)
    if a.markdown:
        Path(a.markdown).write_text(text)
    bad = [r for r in rows if r["target"] != "direct" and (r["non2xx"] or r["audit_rows"] < 0)]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
