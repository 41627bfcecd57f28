#!/usr/bin/env node
// Thin launcher for the native vault-mcp binary, so MCP clients can start it with
// `npx -y vault-mcp serve`. It finds the binary for this platform and runs it with the same
// arguments and stdio (MCP speaks over stdin/stdout, so nothing is printed here on success).
// Where the binary comes from, in order:
//   1. VAULT_MCP_BINARY (an explicit path),
//   2. the platform package @vault-mcp/<platform>-<arch> (installed as an optional dependency),
//   3. `vault-mcp` on PATH (e.g. from `cargo install --path .`).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const exe = process.platform === 'win32' ? 'vault-mcp.exe' : 'vault-mcp';
const platformPackage = `@vault-mcp/${process.platform}-${process.arch}`;

function fromPath() {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, exe);
    // skip ourselves: npm puts this launcher on PATH under the same name
    if (dir && fs.existsSync(candidate) && !fs.realpathSync(candidate).endsWith('.js')) return candidate;
  }
  return null;
}

function resolveBinary() {
  if (process.env.VAULT_MCP_BINARY) return process.env.VAULT_MCP_BINARY;
  try {
    return require.resolve(`${platformPackage}/bin/${exe}`);
  } catch (_) {
    // not installed for this platform
  }
  return fromPath();
}

const binary = resolveBinary();
if (!binary) {
  process.stderr.write(
    `vault-mcp: no binary for ${process.platform}-${process.arch}. Install the package ${platformPackage}, ` +
      'set VAULT_MCP_BINARY to a vault-mcp binary, or install one with `cargo install --path .` (see the README).\n',
  );
  process.exit(1);
}

const child = spawn(binary, process.argv.slice(2), { stdio: 'inherit', windowsHide: true });
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => child.kill(sig));
}
child.on('error', (err) => {
  process.stderr.write(`vault-mcp: cannot start ${binary}: ${err.message}\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (signal) process.kill(process.pid, signal);
  else process.exit(code === null ? 1 : code);
});
