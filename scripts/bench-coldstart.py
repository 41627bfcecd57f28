#!/usr/bin/env python3
"""stdio cold start of vault-mcp: process start to answered `initialize`, over repeated runs, against a baseline
measured in the same run (the same binary printing `--version` and exiting: process start + dynamic loading).

    scripts/bench-coldstart.py [--bin target/release/vault-mcp] [--runs 30]
Prints median / p90 in milliseconds for both and the ratio, the binary's size, and the idle resident
memory (VmRSS) of a server that has answered `initialize` and `tools/list` and then sat idle for a second.
"""
import argparse, json, os, statistics, subprocess, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--bin", default="target/release/vault-mcp")
p.add_argument("--runs", type=int, default=30)
a = p.parse_args()

data = tempfile.mkdtemp(prefix="vault-coldstart-")
env = dict(os.environ, VAULT_MCP_DATA_DIR=data, VAULT_MCP_CONFIG=os.devnull, VAULT_MCP_LOG="warn",
           VAULT_MCP_CONNECT_LISTEN="127.0.0.1:0")
init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}) + "\n"

# first start creates the database and key file; not part of a cold start
subprocess.run([a.bin, "doctor"], env=env, capture_output=True)


def cold_start() -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([a.bin, "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdin.write(init.encode())
    proc.stdin.flush()
    line = proc.stdout.readline()
    dt = time.perf_counter() - t0
    assert b'"result"' in line, line
    proc.stdin.close()
    proc.wait(10)
    return dt * 1000


def baseline() -> float:
    t0 = time.perf_counter()
    subprocess.run([a.bin, "--version"], env=env, capture_output=True, check=True)
    return (time.perf_counter() - t0) * 1000


def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.9) - 1]


def idle_rss_mb() -> float:
    proc = subprocess.Popen([a.bin, "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}) + "\n"
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"
    proc.stdin.write(init.encode())
    proc.stdin.flush()
    assert b'"result"' in proc.stdout.readline()
    proc.stdin.write((note + listing).encode())
    proc.stdin.flush()
    assert b'"tools"' in proc.stdout.readline()
    time.sleep(1)
    with open(f"/proc/{proc.pid}/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    proc.stdin.close()
    proc.wait(10)
    return kb / 1024


cs = [cold_start() for _ in range(a.runs)]
bl = [baseline() for _ in range(a.runs)]
(cm, cp), (bm, bp) = summary(cs), summary(bl)
print(f"binary: {a.bin} {os.path.getsize(a.bin) / 1e6:.1f} MB")
print(f"cold start to initialize result: median {cm:.1f} ms, p90 {cp:.1f} ms ({a.runs} runs)")
print(f"baseline (same binary, --version): median {bm:.1f} ms, p90 {bp:.1f} ms")
print(f"ratio (median): {cm / bm:.2f}x")
print(f"idle RSS after initialize + tools/list: {idle_rss_mb():.1f} MB")
