// The official TypeScript SDK client resuming a dropped POST stream by itself.
//
//   node peers/ts-reconnect-client.mjs '{"url": "http://127.0.0.1:10000/mcp", "key": "...", "message": "..."}'
//
// Used by tests/e2e/test_ts_reconnect.py. The client calls server-everything's
// trigger-long-running-operation with a progress token; once that call's stream
// gave it an event id (the server's priming event), it lists the tools and calls echo with `message` on their
// own POSTs. Something in front of the server (Envoy's route timeout in the
// test) then cuts the long call's POST stream. The SDK's
// StreamableHTTPClientTransport saw an event id on that stream, so it reconnects
// on its own with GET + Last-Event-ID; a server with an event store replays every
// event stored after that id: the later progress, the call's result, and the
// answers to the tools/list and echo that were already answered on their POSTs.
//
// With `cutPostMs` (the control without any proxy), the client's own HTTP stack
// cuts instead: POSTs go through undici (installed in peers/ with the SDK) with a
// `bodyTimeout`, which destroys the connection when a response body stays
// silent that long; GETs keep none.
//
// Nothing here is mocked: `fetch` is the global one, wrapped only to note each
// request's method, Last-Event-ID and status; `onmessage` is wrapped only to
// note every JSON-RPC message the transport hands to the client, including
// answers to ids the client no longer waits for (the SDK reports those through
// onerror and drops them). Prints one JSON object on stdout.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

const args = JSON.parse(process.argv[2] ?? '{}');
const duration = args.duration ?? 4; // seconds the long call runs
const steps = args.steps ?? 2; // one progress notification per step
const reconnectDelayMs = args.reconnectDelayMs ?? 4500;
const settleMs = args.settleMs ?? 1500;
const cutPosts = args.cutPostMs ? new Agent({ bodyTimeout: args.cutPostMs }) : undefined;

const t0 = Date.now();
const at = () => Date.now() - t0;
const requests = []; // {method, lastEventId, status, at}
const received = []; // every JSON-RPC message given to the client, with its time
const progress = []; // {progress, total, at}
const errors = []; // what the SDK reported through onerror

const recordingFetch = async (url, init) => {
    const headers = new Headers(init?.headers);
    const entry = { method: init?.method ?? 'GET', lastEventId: headers.get('last-event-id'), at: at() };
    requests.push(entry);
    const response = await (cutPosts && entry.method === 'POST'
        ? undiciFetch(url, { ...init, dispatcher: cutPosts })
        : fetch(url, init));
    entry.status = response.status;
    return response;
};

const headers = args.key ? { Authorization: `Bearer ${args.key}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers },
    fetch: recordingFetch,
    // One reconnection, after the long call ended on the server: its result is
    // then in the event store and comes back in the replay (a live answer
    // would come on the same GET stream anyway).
    reconnectionOptions: {
        initialReconnectionDelay: reconnectDelayMs,
        maxReconnectionDelay: reconnectDelayMs,
        reconnectionDelayGrowFactor: 1,
        maxRetries: 2
    }
});
const client = new Client({ name: 'ts-reconnect-e2e', version: '1.0.0' });
client.onerror = e => errors.push({ at: at(), error: String(e?.message ?? e) });

const out = { requests, received, progress, errors, eventIds: [] };
try {
    await client.connect(transport);
    out.protocolVersion = transport.protocolVersion;
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
        received.push({ at: at(), message });
        deliver?.(message, extra);
    };

    let primed;
    const gotEventId = new Promise(resolve => (primed = resolve));
    const longCall = client
        .callTool({ name: 'trigger-long-running-operation', arguments: { duration, steps } }, undefined, {
            timeout: 60000,
            onprogress: p => progress.push({ progress: p.progress, total: p.total, at: at() }),
            // The first event id on the call's stream (the server's priming
            // event): from now on the SDK can resume this stream.
            onresumptiontoken: id => {
                out.eventIds.push({ id, at: at() });
                primed();
            }
        })
        .then(
            result => ({ result }),
            error => ({ error: { code: error?.code, message: String(error?.message ?? error), data: error?.data } })
        );
    await Promise.race([gotEventId, longCall]);

    // Two more requests while the long call's stream is open: their answers are
    // stored after the event id the client will resume from.
    out.listed = (await client.listTools()).tools.map(t => t.name);
    const echoed = await client.callTool({ name: 'echo', arguments: { message: args.message ?? 'hello' } });
    out.echoed = echoed.content.map(c => c.text);

    out.longCall = await longCall;
    out.longCall.at = at();
    // Anything the replay still carries after the call ended.
    await new Promise(resolve => setTimeout(resolve, settleMs));
} catch (e) {
    out.fatal = String(e?.stack ?? e);
} finally {
    await transport.close().catch(() => {});
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
