#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, then the end-to-end tests against real
# third-party parts (oidc-provider, headless Chromium, the official MCP Python SDK client), installed into
# target/e2e-env by tests/e2e/install.sh. Extra arguments go to pytest (e.g. -k connect).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "installing end-to-end test dependencies"
tests/e2e/install.sh

step "a throwaway PostgreSQL on loopback (store contract tests, scale-out tests)"
scripts/pg.sh start
export VAULT_TEST_PG="$(scripts/pg.sh url)" VAULT_TEST_REQUIRE_PG=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "unit and property tests"
cargo test --locked

step "benchmarks, quick mode (each benchmark runs once: they keep compiling and running; figures come from cargo bench)"
cargo test --locked --bench vault_request --bench audit

step "building the binaries the end-to-end tests drive (debug, and release for the bundle and npm packages)"
cargo build --locked
cargo build --release --locked

step "end-to-end tests"
source tests/e2e/env.sh
mkdir -p target/e2e-artifacts
"$E2E_VENV/bin/python" -m pytest -c tests/e2e/pytest.ini tests/e2e "$@"
echo "screenshots and logs: target/e2e-artifacts/"
