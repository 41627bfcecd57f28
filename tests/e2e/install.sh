#!/usr/bin/env bash
# Idempotent installer for what the end-to-end tests run against. Everything lands under $E2E_HOME
# (default <repo>/target/e2e-env) except Debian packages (installed only when running as root and missing).
#   node/   npm packages: oidc-provider, jose, playwright-core, MCP TS SDK, conformance suite, mcp-remote, Node 22
#   venv/   Python venv: official MCP Python SDK, requests, pytest, moto[server] (SigV4 verifier)
#   venv-alter/  Python venv: the official Alter SDK with its fastapi, mcp and langchain extras (test_alter_sdk.py)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

apt_pkgs="chromium chromium-driver curl haproxy postgresql nginx-light wrk"
missing=$(for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || printf "%s " "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    [ -n "$(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "e2e install: missing Debian packages ($missing) and not root; install them or run as root" >&2
    exit 1
  fi
fi

mkdir -p "$E2E_NODE"
if ! cmp -s "$here/install/package.json" "$E2E_NODE/package.json" || [ ! -d "$E2E_NODE/node_modules" ]; then
  cp "$here/install/package.json" "$E2E_NODE/package.json"
  (cd "$E2E_NODE" && npm install --no-audit --no-fund --loglevel=error)
fi

[ -x "$E2E_VENV/bin/python" ] || python3 -m venv "$E2E_VENV"
if ! cmp -s "$here/install/requirements.txt" "$E2E_VENV/.requirements.txt"; then
  "$E2E_VENV/bin/pip" install -q --disable-pip-version-check -r "$here/install/requirements.txt"
  cp "$here/install/requirements.txt" "$E2E_VENV/.requirements.txt"
fi
# alter-sdk (issue 14) pins mcp<2 and PyJWT>=2.15, which conflict with the pins above: a venv of its own.
# The wheels are kept in $E2E_HOME/wheels-alter, so a reinstall works offline.
[ -x "$E2E_ALTER_VENV/bin/python" ] || python3 -m venv "$E2E_ALTER_VENV"
if ! cmp -s "$here/install/requirements-alter-sdk.txt" "$E2E_ALTER_VENV/.requirements.txt"; then
  "$E2E_ALTER_VENV/bin/pip" download -q --disable-pip-version-check -d "$E2E_HOME/wheels-alter" \
    -r "$here/install/requirements-alter-sdk.txt" || echo "e2e install: offline, using $E2E_HOME/wheels-alter" >&2
  "$E2E_ALTER_VENV/bin/pip" install -q --disable-pip-version-check --no-index --find-links "$E2E_HOME/wheels-alter" \
    -r "$here/install/requirements-alter-sdk.txt"
  cp "$here/install/requirements-alter-sdk.txt" "$E2E_ALTER_VENV/.requirements.txt"
fi
echo "e2e install: ok ($E2E_HOME)"
