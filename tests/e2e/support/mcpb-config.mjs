// Resolve a bundle's MCP server config the way Claude Desktop does, with the MCPB package's own
// getMcpConfigForManifest: ${__dirname}, system directories and ${user_config.*} substitution.
// Usage: node mcpb-config.mjs <unpacked bundle dir> '<user config JSON>'   → prints {command, args, env}
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getMcpConfigForManifest } from '@anthropic-ai/mcpb';

const [dir, userConfigJson] = process.argv.slice(2);
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: dir,
  systemDirs: { HOME: os.homedir(), DESKTOP: path.join(os.homedir(), 'Desktop'), DOCUMENTS: path.join(os.homedir(), 'Documents'), DOWNLOADS: path.join(os.homedir(), 'Downloads') },
  userConfig: JSON.parse(userConfigJson || '{}'),
  pathSeparator: path.sep,
});
console.log(JSON.stringify(config));
