#!/usr/bin/env python3
"""What vault-mcp adds to a call over stdio, seen from the official MCP Python client: `vault_request` latency
against the same client's `ping` round trip to the same server plus a direct HTTP call to the same upstream
(nginx answering a fixed JSON body on loopback), all measured in one run, interleaved so drift hits all three.

    scripts/bench-stdio.py [--calls 2000] [--bin target/release/vault-mcp]

Prints p50 / p90 of each and the vault's added time: p50(vault_request) - (p50(ping) + p50(direct)).
Audit is on and durable (fsync) as always. Needs nginx (Debian package) and the official `mcp` package (run with
`$E2E_VENV/bin/python`, see tests/e2e/env.sh). The direct call reuses one keep-alive connection, as the vault does.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import http.client

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_load", REPO / "scripts" / "bench-load.py")
bench_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_load)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


async def measure(a, env: dict, upstream: int) -> dict:
    url = f"http://127.0.0.1:{upstream}/item"
    args = {"method": "GET", "url": url, "provider": "upstream"}
    times: dict[str, list[float]] = {"ping": [], "direct": [], "vault_request": []}
    params = StdioServerParameters(command=a.bin, args=["serve"], env=env)
    conn = http.client.HTTPConnection("127.0.0.1", upstream)
    try:
        async with stdio_client(params, errlog=open(os.devnull, "w")) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()

                async def ping():
                    await s.send_ping()

                async def direct():
                    conn.request("GET", "/item")
                    resp = conn.getresponse()
                    assert resp.status == 200 and resp.read()

                async def vault():
                    res = await s.call_tool("vault_request", args)
                    assert res.structured_content and res.structured_content.get("status") == 200, res

                ops = {"ping": ping, "direct": direct, "vault_request": vault}
                for _ in range(max(50, a.calls // 10)):  # warm up: connections, caches, page cache
                    for op in ops.values():
                        await op()
                for _ in range(a.calls):
                    for name, op in ops.items():
                        t0 = time.perf_counter()
                        await op()
                        times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "vault-mcp"))
    a = p.parse_args()
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("nginx is needed (apt-get install nginx-light)")
    work = Path(tempfile.mkdtemp(prefix="vault-bench-stdio-"))
    procs = bench_load.Procs(work)
    try:
        upstream = bench_load.nginx(procs, work)
        cfg = work / "config.toml"
        cfg.write_text(f'[connect]\nlisten = "127.0.0.1:{bench_load.free_port()}"\n')
        env = {**os.environ, "VAULT_MCP_CONFIG": str(cfg), "VAULT_MCP_DATA_DIR": str(work / "data"),
               "VAULT_MCP_LOG": "warn"}
        env.pop("VAULT_MCP_MASTER_KEY", None)
        subprocess.run([a.bin, "secret", "add", "upstream", "--host", f"127.0.0.1:{upstream}"],
                       input="bench-key-0123456789\n", env=env, check=True, capture_output=True, text=True)
        times = asyncio.run(measure(a, env, upstream))
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"stdio, official MCP Python client, {a.calls} calls each, interleaved ({a.bin})")
    print(f"{'':16} {'p50 ms':>8} {'p90 ms':>8}")
    for name, xs in times.items():
        print(f"{name:16} {statistics.median(xs):8.3f} {pct(xs, 0.9):8.3f}")
    base = statistics.median(times["ping"]) + statistics.median(times["direct"])
    added = statistics.median(times["vault_request"]) - base
    print(f"baseline p50 (ping + direct): {base:.3f} ms")
    print(f"vault-mcp adds (p50): {added:.3f} ms")


if __name__ == "__main__":
    main()
