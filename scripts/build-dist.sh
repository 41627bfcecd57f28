#!/usr/bin/env bash
# Build what users install, for this platform, into target/dist/:
#   vault-mcp-<version>-<platform>-<arch>.mcpb    Claude Desktop bundle (manifest.json + release binary)
#   vault-mcp-<version>.tgz                         npm launcher package (`npx -y vault-mcp serve`)
#   vault-mcp-<platform>-<arch>-<version>.tgz       npm platform package carrying the binary
# SKIP_BUILD=1 reuses an existing target/release/vault-mcp.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$(uname -s)" in Linux) platform=linux ;; Darwin) platform=darwin ;; *) platform=win32 ;; esac
case "$(uname -m)" in x86_64|amd64) arch=x64 ;; aarch64|arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
for f in manifest.json npm/vault-mcp/package.json; do
  grep -q "\"version\": \"$version\"" "$f" || { echo "$f does not carry version $version (Cargo.toml)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ] || [ ! -x target/release/vault-mcp ]; then
  cargo build --release --locked
fi
mkdir -p target/dist
dist=$(cd target/dist && pwd)

# MCPB bundle
stage=target/mcpb/vault-mcp
rm -rf "$stage" && mkdir -p "$stage/server"
cp manifest.json README.md "$stage/"
cp target/release/vault-mcp "$stage/server/vault-mcp"
mcpb="target/e2e-env/node/node_modules/.bin/mcpb"
if [ -x "$mcpb" ]; then mcpb_cmd=("$mcpb"); else mcpb_cmd=(npx --yes @anthropic-ai/mcpb@2.1.2); fi
"${mcpb_cmd[@]}" pack "$stage" "$dist/vault-mcp-$version-$platform-$arch.mcpb" >/dev/null
echo "bundle: $dist/vault-mcp-$version-$platform-$arch.mcpb"

# npm packages
pstage=target/npm/$platform-$arch
rm -rf "$pstage" && mkdir -p "$pstage/bin"
sed -e "s/@PLATFORM@/$platform/g" -e "s/@ARCH@/$arch/g" -e "s/@VERSION@/$version/g" npm/platform/package.json.in > "$pstage/package.json"
cp target/release/vault-mcp "$pstage/bin/vault-mcp"
(cd "$pstage" && npm pack --silent --pack-destination "$dist" >/dev/null)
(cd npm/vault-mcp && npm pack --silent --pack-destination "$dist" >/dev/null)
echo "npm: $dist/vault-mcp-$version.tgz $dist/vault-mcp-$platform-$arch-$version.tgz"
