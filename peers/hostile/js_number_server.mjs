// A scripted MCP peer that reads JSON the way any JavaScript server does:
// JSON.parse, so integers past 2^53 lose precision (9007199254740993 becomes
// 9007199254740992) and the answer carries an id the client never sent.
// (The TypeScript SDK itself refuses such ids; hand-written servers do not.)
//
//   node peers/hostile/js_number_server.mjs PORT
//
// Every tools/call prints  CALLED {"tool": ..., "arguments": {...}}  to stdout.
import http from 'node:http';

const port = Number(process.argv[2]);
const tools = ['echo', 'delete_repo', 'create_refund'].map((name) => ({ name, inputSchema: { type: 'object' } }));

http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    let msg;
    try { msg = JSON.parse(body); } catch { res.writeHead(400).end(); return; }
    if (msg.id === undefined) { res.writeHead(202).end(); return; }
    let result = {};
    if (msg.method === 'tools/list') result = { tools };
    if (msg.method === 'tools/call') {
      process.stdout.write(`CALLED ${JSON.stringify({ tool: msg.params.name, arguments: msg.params.arguments })}\n`);
      result = { content: [{ type: 'text', text: `${msg.params.name} ran` }] };
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }));
  });
}).listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
