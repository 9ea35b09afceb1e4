// A hostile-by-accident MCP peer: the official TypeScript SDK's server on the
// Express app its docs recommend (createMcpExpressApp(), i.e. express.json()).
// express.json() decodes the body in whatever `charset=utf-*` the request names
// (utf-7 included), so it is the reader that showed charset smuggling.
//
//   node peers/hostile/express_server.mjs PORT
//
// Stateless, JSON responses. Every tool that runs prints one line to stdout,
//   CALLED {"tool": ..., "arguments": {...}}
// so a test can see exactly what the server executed.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import * as z from 'zod/v4';

const port = Number(process.argv[2]);

function ran(tool, args) {
  process.stdout.write(`CALLED ${JSON.stringify({ tool, arguments: args })}\n`);
  return { content: [{ type: 'text', text: `${tool} ran` }] };
}

function server() {
  const s = new McpServer({ name: 'mcp-firewall-e2e-express-peer', version: '1.0.0' });
  s.registerTool('echo', { inputSchema: { message: z.string() } }, async (a) => ran('echo', a));
  s.registerTool('delete_repo', { inputSchema: { repo: z.string() } }, async (a) => ran('delete_repo', a));
  s.registerTool('create_refund', { inputSchema: { amount: z.number(), note: z.string().optional() } },
    async (a) => ran('create_refund', a));
  s.registerTool('read_file', { inputSchema: { path: z.string() } }, async (a) => ran('read_file', a));
  return s;
}

const app = createMcpExpressApp();
app.post('/mcp', async (req, res) => {
  const s = server();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => { transport.close(); s.close(); });
  await s.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
