// The official MCP TypeScript SDK client, driven line by line from a test (test_ts_client.py):
//   node ts-client.mjs stdio <vault-mcp binary>      (env passed through)
//   node ts-client.mjs http <url> [bearer]
// Reads JSON commands on stdin, one per line — {"op": "list"} | {"op": "call", "name", "arguments"} |
// {"op": "close"} — and answers each with one JSON line on stdout: the tool names, or the CallToolResult.
// One session serves every command, so a Connect link from one call can be completed before the next.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, target, bearer] = process.argv.slice(2);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: target, args: ["serve"], env: process.env, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(target), {
        requestInit: bearer ? { headers: { Authorization: `Bearer ${bearer}` } } : {},
      });
const client = new Client({ name: "vault-e2e-ts", version: "1.0.0" });
await client.connect(transport);
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");
out({ ready: true, server: client.getServerVersion() });

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "list") {
      const { tools } = await client.listTools();
      out({ tools: tools.map((t) => t.name) });
    } else if (cmd.op === "call") {
      out(await client.callTool({ name: cmd.name, arguments: cmd.arguments }));
    } else if (cmd.op === "close") {
      await client.close();
      out({ closed: true });
      break;
    }
  } catch (e) {
    out({ exception: String(e) });
  }
}
process.exit(0);
