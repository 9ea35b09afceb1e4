"""The response's head as clients read it (the attack on 163d1aa: every header line is scanned, a
redirect refused, a session id no `initialize` issued removed). A scripted server (this file run as a
script: HTTP/1.1 bytes, or h2c behind an Envoy whose cluster speaks HTTP/2) answers through Envoy and
the filter to: `raw`, httpx (each line as decoded, and each field's combined value, `headers.get`,
which joins repeated lines with ", "); `h2`, a raw HTTP/2 client (interim heads, trailers); the
official Python and TypeScript SDK clients, unmodified (the call's result or the error their caller
gets, which quotes an unexpected content type; the TS transport's `sessionId`). Both decode a header
byte that is not UTF-8 as Latin-1: 0xAD is a soft hyphen, 0xA0 a no-break space, which the filter's
second reading drops or reads as a space in a body.

    python tests/e2e/test_response_head_attack.py H1_PORT H2_PORT SCENARIO_FILE   (the peer)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import harness
import httpx
import httpx2
import pytest
from conftest import READER_KEY, base_policy
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_raw import ACCEPT, PROTOCOL_VERSION, call, headers_for, rpc

HERE = Path(__file__).resolve().parent
SECRET = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
SHY = SECRET[:16] + "\u00ad" + SECRET[16:]  # sent as Latin-1: one 0xAD byte, not UTF-8
PAIR = ("{name: DB_PASSWORD", "value: Xq7#mP2$vL9!wR4z}")  # each line clean; joined, a password
JOINED = "DB_PASSWORD, value: Xq7#mP2$vL9!wR4z"
BODY = base64.b64encode(b"".join(hashlib.sha512(bytes([i])).digest() for i in range(3))).decode()
PEM = ["-----BEGIN RSA PRIVATE KEY-----", *(BODY[i:i + 64] for i in range(0, len(BODY), 64)),
       "-----END RSA PRIVATE KEY-----"]  # a key as header lines: each clean; joined with ", ", a private key
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzaWQiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
ALB = "AWSALB=s5Bf0xRx1Yrd7BCd8Tb8K2aQ0wZxAeUwP0nGy3EcM5mpo6yJzs0GwLgtv1eSB3Eve7ClBQ/VCZOvbGvnGa4H7kEEK4j9WQtDtMX"
JSON = [["content-type", "application/json"]]
# What load balancers, CDNs, tracers and frameworks put on an MCP server's answers.
INFRA = [["set-cookie", ALB + "; Expires=Sun, 13 Dec 2026 10:00:00 GMT; Path=/"],
         ["set-cookie", "__cf_bm=rB8Rq1wXbq.8lKcm5z0oJ7pT9yQ2aNvE3sD6fG4hK1M-1765015200-1.0.1.1-Vx3Fq9Lk2Jd8; Secure"],
         ["set-cookie", "ARRAffinity=3f1e7b0c9a2d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f;Path=/;HttpOnly"],
         ["set-cookie", "session=eyJ1c2VyIjoiYWxpY2UifQ.Z1NdYA.q8X4rN2cV7bLmK9pW3sT6hJ0fD5; HttpOnly; Path=/"],
         ["etag", 'W/"33a64df551425fcc55e4d42a148795d9f25f89d4"'], ["x-request-id", "9f0c6a7e-2b1d-4c3e-8f5a-6b7c8d9e"],
         ["x-amzn-trace-id", "Root=1-67a1b2c3-4d5e6f7a8b9c0d1e2f3a4b5c;Parent=53995c3f42cd8ad8;Sampled=1"],
         ["traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"], ["cf-ray", "8e9c0a1b2c3d4e5f-FRA"],
         ["x-csrf-token", "Zx8Kq2LmN4pR7sT9vW1yA3bC5dE7fG9h"], ["last-modified", "Sat, 06 Dec 2026 09:00:00 GMT"],
         ["content-security-policy", "script-src 'nonce-rAnd0mN0nc3V4lu3Xyz12=' 'strict-dynamic'"]]
AUTH = 'Bearer realm="mcp", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
LEAK = f"http://x.invalid/{SECRET}"
CARD = "4111 1111 1111 1111"


def scen(status: int = 200, headers: list[list[str]] | None = None, body: str | None = None, init: Any = None,
         need: Any = None, trailers: Any = None, interim: str = "", slash: bool = False) -> dict[str, Any]:
    """The call's answer (body None: a clean result); the initialize answer's lines (`sess-1` unless
    given); what a call must carry (else 404, as a server or a load balancer's other target answers an
    unknown session); h2 trailers; an h1 interim head; `slash`: every request to /mcp is redirected
    (307) to /mcp/ on the origin it came to, as Starlette's Mount does."""
    return dict(status=status, headers=JSON if headers is None else headers, body=body, need=need or {},
                init=[["mcp-session-id", "sess-1"]] if init is None else init, trailers=trailers or [],
                interim=interim, slash=slash)


ALL, SDKS = ("raw", "python", "typescript"), ("python", "typescript")


def case(name: str, envoy: str, sc: dict[str, Any], readers: tuple[str, ...] = ("raw",), marks: tuple[str, ...] = (
        SECRET,), ok: tuple[str, ...] = (), kept: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """Envoy: h1/h2 upstream or dry run; `readers` must read no mark (what reads as sensitive data);
    the call of each of `ok` must succeed; the raw reader must get every text of `kept`."""
    return name, envoy, sc, readers, marks, ok, kept


X = [["x-note", SECRET]]
note = lambda value: scen(headers=JSON + [["x-note", value]])  # noqa: E731  (a clean answer with this x-note)

CASES = [
    # Handled.
    case("secret_header_is_removed_over_an_http2_upstream", "h2", scen(headers=JSON + X), ALL, ok=SDKS),
    case("secret_after_50k_of_filler_is_removed", "h1", note("a " * 25000 + SECRET)),
    case("trigger_flood_before_a_secret_is_removed", "h1", note("ghp_" * 9000 + " " + SECRET)),
    case("secret_in_the_91st_header_is_removed", "h1", scen(headers=JSON + [[f"x-{i}", "v"] for i in range(90)] + X)),
    case("obs_fold_continuation_is_read_as_envoy_joins_it", "h1", note("a\r\n " + SECRET)),
    case("utf8_soft_hyphen_in_a_secret_is_removed", "h1", note(SHY.encode().decode("latin-1"))),
    case("status_300_is_refused", "h1", scen(300, JSON + [["location", LEAK]]), ALL, kept=("502",)),
    case("status_304_is_refused", "h2", scen(304, [["location", LEAK]], ""), kept=("502",)),
    case("early_hints_never_reach_the_client", "h1",
         scen(interim=f"HTTP/1.1 103 Early Hints\r\nlink: <{LEAK}>; rel=preload\r\n\r\n"), ("h2",)),
    case("infrastructure_headers_and_cookies_are_kept", "h1", scen(
        headers=JSON + INFRA, init=[["mcp-session-id", "s-2"]] + INFRA, need={"cookie": ALB}), ALL, ok=("python",),
         kept=tuple(v for _, v in INFRA)),
    case("www_authenticate_of_a_401_is_kept", "h1",
         scen(401, JSON + [["www-authenticate", AUTH]], '{"jsonrpc":"2.0","id":@ID@,"error":{"code":1,"message":"x"}}'),
         kept=(AUTH,)),
    case("dry_run_keeps_the_head_whole", "dry", scen(307, JSON + [["location", LEAK], ["mcp-session-id", "other"]] + X),
         (), kept=(LEAK, f"x-note: {SECRET}", "mcp-session-id: other", "307")),
    case("sdks_follow_a_same_origin_redirect_in_dry_run", "dry", scen(slash=True), (), ok=SDKS),
    # Bypasses: text the client reads that the filter read differently or not at all.
    case("latin1_soft_hyphen_splits_a_secret_in_the_content_type", "h1",
         scen(headers=[["content-type", f"text/plain; n={SHY}"]], body=""), ALL),
    case("latin1_no_break_spaces_in_a_card_number", "h1", note(CARD.replace(" ", "\u00a0")),
         marks=(CARD,)),
    case("private_key_split_over_lines_of_a_header", "h1", scen(headers=JSON + [["x-note", p] for p in PEM]),
         marks=(", ".join(PEM[:2]),)),
    case("password_pair_split_over_two_lines_of_the_issued_session_id", "h1",
         scen(init=[["mcp-session-id", p] for p in PAIR]), ("raw", "typescript"), (JOINED,)),
    case("secret_in_http2_trailers", "h2", scen(trailers=X), ("h2",)),
    # False refusals: what a real server needs reaches its client.
    case("jwt_session_id_issued_by_initialize_is_kept", "h1",
         scen(init=[["mcp-session-id", JWT]], need={"mcp-session-id": JWT}), (), ok=SDKS),
    case("a_credential_cookie_does_not_take_the_stickiness_cookie_along", "h1",
         scen(init=[["mcp-session-id", "s-3"], ["set-cookie", ALB + "; Path=/"],
                    ["set-cookie", f"__Secure-next-auth.session-token={JWT}; Path=/; HttpOnly; Secure"]],
              need={"cookie": ALB}), (), ok=("python",), kept=(ALB,)),
    case("same_origin_trailing_slash_redirect_is_followed", "h1", scen(slash=True), (), ok=SDKS),
]


@pytest.fixture(scope="module")
def scripted(workdir: Path, wasm: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    scenario = workdir / "head-scenario.json"
    scenario.write_text(json.dumps(scen()))
    p1, p2 = harness.free_port(), harness.free_port()
    peer = harness.Proc("head-peer", [sys.executable, str(Path(__file__).resolve()), str(p1), str(p2), str(scenario)],
                        workdir / "head-peer.log")
    envs: dict[str, Any] = {}
    try:
        harness._wait(lambda: harness.port_open(p1) and harness.port_open(p2), 30, "head peer", peer)
        for name, port, mode in (("h1", p1, "enforce"), ("h2", p2, "enforce"), ("dry", p1, "dry_run")):
            cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                                 upstream_port=port, policy={**base_policy(), "mode": mode}, wasm=wasm)
            if name == "h2":
                cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == harness.UPSTREAM_CLUSTER)
                opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                cluster["typed_extension_protocol_options"] = {opts: {
                    "@type": f"type.googleapis.com/{opts}", "explicit_http_config": {"http2_protocol_options": {}}}}
            envs[name] = harness.Envoy(cfg, workdir, name=f"envoy-head-{name}")
        yield envs, scenario
    finally:
        for env in envs.values():
            env.stop()
        peer.stop()


def session_answers(url: str, key: str | None, delete: bool = False) -> list[Any]:
    """httpx's answers to initialize, initialized, tools/list, the call (and DELETE)."""
    init = rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": {"name": "head-raw", "version": "0"}}, id=0)
    with httpx.Client(timeout=15) as c:
        out = [c.post(url, content=json.dumps(init), headers=headers_for(key))]
        sess = {"Mcp-Session-Id": out[0].headers.get("mcp-session-id", ""), "Mcp-Protocol-Version": PROTOCOL_VERSION}
        msgs = [rpc("notifications/initialized", id=None), rpc("tools/list", id=1), call("echo", {"message": "hi"})]
        out += [c.post(url, content=json.dumps(m), headers=headers_for(key, sess)) for m in msgs]
        return out + ([c.delete(url, headers=headers_for(key, sess, None))] if delete else [])


def raw_reads(url: str) -> str:
    """Status, every header line and each field's combined value, body: of each answer."""
    return "\n".join(f"{r.status_code}\n" + "".join(f"{k}: {v}\n" for k, v in r.headers.multi_items())
                     + "".join(f"{k}: {r.headers.get(k)}\n" for k in r.headers) + r.text
                     for r in session_answers(url, READER_KEY))


def h2_reads(port: int) -> str:
    """Every head an HTTP/2 client gets for the call: interim, final, trailers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/mcp"), (":scheme", "http"), (":authority", "x"),
                          ("content-type", "application/json"), ("accept", ACCEPT),
                          ("authorization", f"Bearer {READER_KEY}")])
    conn.send_data(1, json.dumps(call("echo", {"message": "hi"})).encode(), end_stream=True)
    sock.sendall(conn.data_to_send())
    read, done = [], False
    while not done and (chunk := sock.recv(65536)):
        for ev in conn.receive_data(chunk):
            read += [repr(ev.headers)] if hasattr(ev, "headers") else []
            done = done or isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
        sock.sendall(conn.data_to_send())
    sock.close()
    return "\n".join(read)


async def python_reads(url: str) -> str:
    try:
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {READER_KEY}"}) as hc, \
                    streamable_http_client(url, http_client=hc) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                try:
                    return "RESULT " + (await s.call_tool("echo", {"message": "hi"})).model_dump_json(by_alias=True)
                except MCPError as e:
                    return "ERROR " + json.dumps({"code": e.code, "message": e.message}, ensure_ascii=False)
    except Exception as e:  # noqa: BLE001  (initialize failed: what the caller gets)
        return f"CONNECT {e!r}"


TS_READER = """
import { Client } from '@SDK@/client/index.js';
import { StreamableHTTPClientTransport } from '@SDK@/client/streamableHttp.js';
const a = JSON.parse(process.argv[2]), c = new Client({name: 'head-e2e', version: '0'});
const init = {requestInit: {headers: {Authorization: `Bearer ${a.key}`}}};
const t = new StreamableHTTPClientTransport(new URL(a.url), init);
let read = 'CONNECT ';
try {
  await c.connect(t);
  read = 'ERROR ';
  const r = await c.callTool({name: 'echo', arguments: {message: 'hi'}}, undefined, {timeout: 4000});
  read = 'RESULT ' + JSON.stringify(r);
} catch (e) { read += String(e?.message ?? e); }
console.log(JSON.stringify({read, sessionId: t.sessionId ?? null}));
process.exit(0);
"""


def typescript_reads(url: str, workdir: Path) -> str:
    assert (node := shutil.which("node")), "node is needed for the TypeScript SDK client"
    sdk = HERE.parents[1] / "peers" / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm"
    (script := workdir / "head-ts.mjs").write_text(TS_READER.replace("@SDK@", sdk.as_uri()))
    done = subprocess.run([node, str(script), json.dumps({"url": url, "key": READER_KEY})],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return "{read} sessionId={sessionId}".format(**json.loads(done.stdout))


@pytest.mark.parametrize("c", CASES, ids=[c[0] for c in CASES])
def test_clients_read_the_response_head_only_as_checked(scripted: Any, workdir: Path, c: tuple[Any, ...]) -> None:
    case, envoy, scenario, readers, marks, ok, kept = c
    envs, path = scripted
    path.write_text(json.dumps(scenario))
    env, wanted = envs[envoy], {*readers, *ok}
    read = {"raw": raw_reads(env.url)}
    read |= {"h2": h2_reads(env.port)} if "h2" in wanted else {}
    read |= {"python": anyio.run(python_reads, env.url)} if "python" in wanted else {}
    read |= {"typescript": typescript_reads(env.url, workdir)} if "typescript" in wanted else {}
    # As a reader sees it: a soft hyphen shows as nothing, a no-break space as a space.
    shown = {who: got.replace("\u00ad", "").replace("\u00a0", " ").lower() for who, got in read.items()}
    leaked = {who: read[who] for who in readers if any(m.lower() in shown[who] for m in marks)}
    assert not leaked, f"{case}: sensitive data reached {sorted(leaked)}: " + " | ".join(
        f"{who}: {got[-900:]!r}" for who, got in leaked.items())
    failed = {who: read[who][:600] for who in ok if not read[who].startswith("RESULT") or '"ok"' not in read[who]}
    assert not failed, f"{case}: the call failed for {failed}"
    missing = [k for k in kept if k not in read["raw"]]
    assert not missing, f"{case}: removed from what the client reads: {missing}\n{read['raw'][:3000]}"


ENVOY_OWN = {"server", "date", "content-length", "transfer-encoding", "connection", "keep-alive",
             "x-envoy-upstream-service-time"}


@pytest.mark.parametrize("server", ["python_sdk_json", "server_everything"])
def test_real_servers_heads_reach_the_client_whole(workdir: Path, wasm: Path, server: str) -> None:
    port = harness.free_port()
    argv = ["node", str(harness.SERVER_JS), "streamableHttp"] if server == "server_everything" else [
        sys.executable, str(HERE / "json_server.py"), str(port)]
    peer = harness.Proc(server, argv, workdir / f"head-{server}.log", cwd=workdir,
                        env={"PATH": os.environ.get("PATH", ""), "PORT": str(port), "HOME": str(workdir)})
    env = None
    try:  # the same session straight to the server and through the filter
        harness._wait(lambda: harness.port_open(port), 30, server, peer)
        env = harness.Envoy(harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                                           upstream_port=port, policy=base_policy(), wasm=wasm),
                            workdir, name=f"envoy-head-{server}")
        direct, via = ([(r.status_code, set(r.headers) - ENVOY_OWN) for r in session_answers(url, key, True)]
                       for url, key in ((f"http://127.0.0.1:{port}/mcp", None), (env.url, READER_KEY)))
        assert "mcp-session-id" in direct[0][1], direct
        # Nothing removed (an empty 202 or DELETE answer gains a content type: harmless).
        removed = [(i, d[1] - v[1]) for i, (d, v) in enumerate(zip(direct, via)) if d[0] != v[0] or d[1] - v[1]]
        assert len(via) == len(direct) and not removed, f"{server}: {removed}\ndirect {direct}\nvia {via}"
    finally:
        if env is not None:
            env.stop()
        peer.stop()


# --------------------------------------------------------------------------- the scripted peer

def answer(sc: dict[str, Any], path: str, msg: Any, got: dict[str, str]) -> tuple[int, list[list[str]], bytes, list]:
    """(status, header lines, body, trailers) for one request."""
    if sc["slash"] and path == "/mcp":
        return 307, [["location", f"http://{got.get('host', got.get(':authority'))}/mcp/"]], b"", []
    if not isinstance(msg, dict) or msg.get("id") is None:
        return (405 if msg is None else 202), [], b"", []
    done = lambda result: json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()  # noqa: E731
    if msg.get("method") == "initialize":
        return 200, JSON + sc["init"], done({"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {
            "tools": {}}, "serverInfo": {"name": "head-peer", "version": "0"}}), []
    if msg.get("method") == "tools/list":
        return 200, JSON, done({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}), []
    if any(v not in got.get(k, "") for k, v in sc["need"].items()):
        return 404, JSON, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {
            "code": -32001, "message": "Session not found"}}).encode(), []
    body = sc["body"] if sc["body"] is not None else '{"jsonrpc":"2.0","id":@ID@,"result":{"content":[' \
                                                     '{"type":"text","text":"ok"}]}}'
    return sc["status"], sc["headers"], body.replace("@ID@", json.dumps(msg["id"])).encode(), sc["trailers"]


async def _h1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scenario: Path) -> None:
    try:
        while True:
            line, *rest = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            got = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in rest if x)}
            body = await reader.readexactly(int(got.get("content-length", "0")))
            while got.get("transfer-encoding") == "chunked" and (n := int(await reader.readuntil(b"\r\n"), 16)):
                body += (await reader.readexactly(n + 2))[:-2]
            await reader.readexactly(2 if got.get("transfer-encoding") == "chunked" else 0)
            sc, msg = json.loads(scenario.read_text()), json.loads(body) if body else None
            status, lines, out, _ = answer(sc, line.split()[1], msg, got)
            head = sc["interim"] if isinstance(msg, dict) and msg.get("method") == "tools/call" else ""
            head += f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines)
            writer.write(head.encode("latin-1") + f"content-length: {len(out)}\r\n\r\n".encode() + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _h2(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scenario: Path) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    conn.initiate_connection()
    streams: dict[int, tuple[dict[str, str], bytes]] = {}
    enc = lambda lines: [(k.encode("latin-1"), v.encode("latin-1")) for k, v in lines]  # noqa: E731
    while data := await reader.read(65536):
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                streams[ev.stream_id] = ({k.decode(): v.decode() for k, v in ev.headers}, b"")
            elif isinstance(ev, h2.events.DataReceived):
                got, body = streams[ev.stream_id]
                streams[ev.stream_id] = (got, body + ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                got, body = streams.pop(ev.stream_id)
                status, lines, out, trailers = answer(json.loads(scenario.read_text()), got[":path"],
                                                      json.loads(body) if body else None, got)
                conn.send_headers(ev.stream_id, [(b":status", str(status).encode())] + enc(lines),
                                  end_stream=not out and not trailers)
                if out:
                    conn.send_data(ev.stream_id, out, end_stream=not trailers)
                if trailers:
                    conn.send_headers(ev.stream_id, enc(trailers), end_stream=True)
        writer.write(conn.data_to_send())
        await writer.drain()
    writer.close()


async def _serve(p1: int, p2: int, scenario: Path) -> None:
    one, two = [await asyncio.start_server(lambda r, w, f=f: f(r, w, scenario), "127.0.0.1", p)
                for f, p in ((_h1, p1), (_h2, p2))]
    await asyncio.gather(one.serve_forever(), two.serve_forever())


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
