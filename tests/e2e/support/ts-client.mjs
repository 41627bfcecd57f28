// The official MCP TypeScript SDK client, driven line by line from a test (test_ts_client.py):
//   node ts-client.mjs stdio <vault-mcp binary>      (env passed through)
//   node ts-client.mjs http <url> [bearer]
// With VAULT_E2E_ELICIT=accept|decline in the environment the client declares form and URL elicitation:
// a URL request is printed as {"elicit": params} and answered with that action; a form (an approval) is
// printed the same way and answered accept with {"approve": true} (or decline). Notifications the SDK has no
// handler for (e.g. notifications/elicitation/complete) are printed as {"notification": n}. A test reads those
// lines before the call's result.
// Reads JSON commands on stdin, one per line — {"op": "list"} | {"op": "call", "name", "arguments"} |
// {"op": "close"} — and answers each with one JSON line on stdout: the tool names, or the CallToolResult.
// One session serves every command, so a Connect link from one call can be completed before the next.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [mode, target, bearer] = process.argv.slice(2);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: target, args: ["serve"], env: process.env, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(target), {
        requestInit: bearer ? { headers: { Authorization: `Bearer ${bearer}` } } : {},
      });
const elicit = process.env.VAULT_E2E_ELICIT;
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");
const client = new Client(
  { name: "vault-e2e-ts", version: "1.0.0" },
  elicit ? { capabilities: { elicitation: { form: {}, url: {} } } } : {},
);
if (elicit) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    out({ elicit: request.params });
    if (elicit !== "accept") return { action: elicit };
    return request.params.mode === "url" ? { action: "accept" } : { action: "accept", content: { approve: true } };
  });
  client.fallbackNotificationHandler = async (n) => out({ notification: n });
}
await client.connect(transport);
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
