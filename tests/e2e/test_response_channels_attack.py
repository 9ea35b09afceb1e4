"""What a server's answer carries beside the JSON-RPC messages DLP scans (the attack on 3eeaa21,
after test_envelope_attack.py): response headers, statuses other than 200, answers to
notifications, DLP-exempt calls batched with scanned ones, and the 2026-07-28 wire.

Each case is a scripted server's exact answer (this file run as a script) read through Envoy and
the filter by raw HTTP (status lines, headers, bodies) and by the official Python and TypeScript
SDK clients, unmodified: what their callers get (a result, an error's text, the TS transport's
`sessionId` and `onerror` reports). Both SDKs name a cross-origin redirect's target (its path
too) and an unexpected content type in the error their caller gets; the TS SDK adopts an
`mcp-session-id` from any answer and throws the body of any failed POST, a notification's too.

    python tests/e2e/test_response_channels_attack.py PORT SCENARIO_FILE   (the peer)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SECRET = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
OK = '{"content":[{"type":"text","text":"ok"}]}'
SAID = '{"content":[{"type":"text","text":"' + SECRET + '"}]}'
OUT = f"http://leak.invalid/{SECRET}"


def answer(result: str = OK, id_: str = "@ID@") -> str:
    return '{"jsonrpc":"2.0","id":' + id_ + ',"result":' + result + "}"


def sse(data: str) -> str:
    return f"event: message\ndata: {data}\n\n"


def scen(status: int = 200, headers: str = "", ctype: str | None = "application/json", body: str | None = answer(),
         init: str = "", get: str = "", reason: str = "X", notified: list[Any] | None = None) -> dict[str, Any]:
    """The call's answer: status, reason, extra header lines, content type, body (None: none,
    `content-length: 0`); extra header lines of the initialize answer; the GET stream's answer
    (a 307 with these header lines, else 405); a notification's ([status, type, body], else 202)."""
    return dict(status=status, headers=headers, ctype=ctype, body=body, init=init, get=get, reason=reason,
                notified=notified)


def error(status: int, message: str, id_: str = "@ID@") -> dict[str, Any]:
    return scen(status, body='{"jsonrpc":"2.0","id":' + id_ + ',"error":{"code":-32000,"message":"' + message + '"}}')


ALL = ("raw", "python", "typescript")
# (case, scenario, readers that must not get the secret, whether the call's "ok" must reach both SDKs)
CASES: list[tuple[str, dict[str, Any], tuple[str, ...], bool]] = [
    # Handled: the body is read at any status and in any content type; Envoy rewrites the reason.
    ("plain_answer_passes", scen(), ALL, True),
    ("secret_in_result_is_redacted", scen(body=answer(SAID)), ALL, False),
    ("secret_in_a_400_json_rpc_error_is_redacted", error(400, SECRET), ALL, False),
    ("secret_in_a_500_anonymous_error_is_redacted", error(500, SECRET, "null"), ALL, False),
    ("secret_in_a_404_sse_answer_is_redacted", scen(404, ctype="text/event-stream", body=sse(answer(SAID))), ALL, False),
    ("secret_in_a_202_body_is_redacted", scen(202, body=answer(SAID)), ALL, False),
    ("secret_in_an_error_page_is_replaced", scen(502, ctype="text/html", body=f"<h1>{SECRET}</h1>"), ALL, False),
    ("secret_in_a_content_type_with_a_body_is_replaced", scen(ctype=f"text/plain; n={SECRET}", body="x"), ALL, False),
    ("secret_in_the_reason_phrase_is_replaced", scen(reason=SECRET), ALL, True),
    # Reach the SDKs' callers: a redirect's target, the type of a bodiless answer, a notification's answer.
    ("secret_in_a_redirect_location", scen(307, headers=f"location: {OUT}\r\n", body=None), ALL, False),
    ("secret_in_the_location_of_a_redirect_with_a_page",
     scen(308, headers=f"location: {OUT}\r\n", ctype="text/html", body="<a>moved</a>"), ALL, False),
    ("secret_in_the_redirect_of_the_get_stream", scen(get=f"location: {OUT}\r\n"), ALL, True),
    ("secret_in_the_content_type_of_an_empty_answer", scen(ctype=f"text/plain; n={SECRET}", body=None), ALL, False),
    ("secret_in_the_content_type_of_a_204", scen(204, ctype=f"text/plain; n={SECRET}", body=None), ALL, False),
    ("secret_in_the_400_answer_to_a_notification", scen(notified=[400, "text/plain", SECRET]), ALL, False),
    ("secret_in_the_500_json_answer_to_a_notification",
     scen(notified=[500, "application/json", '{"error":"' + SECRET + '"}']), ALL, False),
    # The session id: the TS transport's `sessionId` (its caller reads it), from any answer.
    ("secret_as_the_session_id_of_an_answer", scen(headers=f"mcp-session-id: {SECRET}\r\n"), ALL, True),
    ("secret_as_the_issued_session_id", scen(init=f"mcp-session-id: {SECRET}\r\n"), ALL, True),
    # Headers only a raw reader (a proxy, a log, a client of its own) gets.
    ("secret_in_custom_and_link_headers", scen(headers=f"x-note: {SECRET}\r\nlink: <{OUT}>; rel=next\r\n"), ALL, True),
    ("secret_in_www_authenticate",
     {**error(401, "no"), "headers": f'www-authenticate: Bearer error_description="{SECRET}"\r\n'}, ALL, False),
]


@pytest.fixture(scope="module")
def scripted(workdir: Path, wasm: Path) -> Iterator[tuple[Any, Path]]:
    import harness
    from conftest import base_policy

    policy = base_policy()
    policy["limits"]["batches"] = "evaluate"
    policy["dlp"] = {"exempt_tools": ["get-sum"]}
    with harness.scripted_peer("channels", Path(__file__).resolve(), workdir, wasm, policy,
                               json.dumps(scen())) as pair:
        yield pair


def raw_reads(url: str, body: Any) -> tuple[str, Any]:
    """Status line, headers and body of the answers to initialize, notifications/initialized and
    the call; and the call's answer."""
    import httpx
    from conftest import READER_KEY
    from mcp_raw import PROTOCOL_VERSION, headers_for, rpc

    def text(r: Any) -> str:
        return f"{r.status_code} {r.reason_phrase}\n" + "".join(f"{k}: {v}\n" for k, v in r.headers.items()) + r.text

    init = rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": {"name": "channels-raw", "version": "0"}}, id=0)
    with httpx.Client(timeout=15) as c:
        r0 = c.post(url, content=json.dumps(init), headers=headers_for(READER_KEY))
        sess = {"Mcp-Session-Id": r0.headers.get("mcp-session-id", ""), "Mcp-Protocol-Version": PROTOCOL_VERSION}
        r1 = c.post(url, content=json.dumps(rpc("notifications/initialized", id=None)),
                    headers=headers_for(READER_KEY, sess))
        r = c.post(url, content=json.dumps(body), headers=headers_for(READER_KEY, sess))
    return "\n".join(map(text, (r0, r1, r))), r


async def python_reads(url: str) -> str:
    import anyio
    from conftest import READER_KEY
    from mcp import MCPError
    from mcp_raw import sdk_session

    async with sdk_session(url, READER_KEY) as s:
        try:
            with anyio.fail_after(15):
                return "RESULT " + (await s.call_tool("echo", {"message": "hi"})).model_dump_json(by_alias=True)
        except MCPError as e:
            return "ERROR " + json.dumps({"code": e.code, "message": e.message, "data": e.data})


TS_READER = """
import { Client } from '@SDK@/client/index.js';
import { StreamableHTTPClientTransport } from '@SDK@/client/streamableHttp.js';
const a = JSON.parse(process.argv[2]), errors = [], c = new Client({name: 'channels-e2e', version: '0'});
c.onerror = e => errors.push(String(e?.message ?? e));
const t = new StreamableHTTPClientTransport(new URL(a.url), {requestInit: {headers: {Authorization: `Bearer ${a.key}`}}});
let read = 'CONNECT ';
try {
  await c.connect(t);
  read = 'ERROR ';
  read = 'RESULT ' + JSON.stringify(await c.callTool({name: 'echo', arguments: {message: 'hi'}}, undefined, {timeout: 4000}));
} catch (e) { read += String(e?.message ?? e); }
console.log(JSON.stringify({read, sessionId: t.sessionId ?? null, errors}));
process.exit(0);
"""


def typescript_reads(url: str, workdir: Path) -> str:
    from conftest import READER_KEY

    node = shutil.which("node")
    assert node, "node is needed for the TypeScript SDK client"
    sdk = HERE.parents[1] / "peers" / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm"
    script = workdir / "channels-ts.mjs"
    script.write_text(TS_READER.replace("@SDK@", sdk.as_uri()))
    done = subprocess.run([node, str(script), json.dumps({"url": url, "key": READER_KEY})],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.replace('\\"', '"')


@pytest.mark.parametrize(("case", "scenario", "readers", "ok"), CASES, ids=[c[0] for c in CASES])
def test_no_client_reads_a_secret_beside_the_messages(scripted: Any, workdir: Path, case: str, scenario: dict[str, Any],
                                                      readers: tuple[str, ...], ok: bool) -> None:
    import anyio
    from mcp_raw import call

    env, path = scripted
    path.write_text(json.dumps(scenario))
    read = {"raw": raw_reads(env.url, call("echo", {"message": "hi"}, id=1))[0],
            "python": anyio.run(python_reads, env.url), "typescript": typescript_reads(env.url, workdir)}
    leaked = {who: got for who, got in read.items() if who in readers and SECRET.lower() in got.lower()}
    assert not leaked, f"{case}: the secret reached {sorted(leaked)}: " + " | ".join(
        f"{who}: {got[-700:]}" for who, got in leaked.items())
    for who in ("python", "typescript") if ok else ():
        assert "RESULT" in read[who][:16] and '"text":"ok"' in read[who], f"{case}: {who} read {read[who][:600]}"


LOG = '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"' + SECRET + '"}}'
EXEMPT, SCANNED = ("get-sum", 1), ("echo", 2)  # get-sum is in dlp.exempt_tools
# (case, the calls (a batch under `limits.batches: evaluate`), the answer): only the exempt call's own
# result (id 1) may carry the secret.
EXEMPT_CASES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    ("batch_answer_scans_the_scanned_calls_answer", [EXEMPT, SCANNED],
     scen(body=f"[{answer(SAID, '1')},{answer(SAID, '2')}]")),
    ("batch_answer_reordered", [EXEMPT, SCANNED], scen(body=f"[{answer(SAID, '2')},{answer(id_='1')}]")),
    ("batch_answer_repeating_the_scanned_id", [EXEMPT, SCANNED],
     scen(body=f"[{answer(id_='1')},{answer(id_='2')},{answer(SAID, '2')}]")),
    ("batch_answer_with_an_anonymous_error", [EXEMPT, SCANNED], scen(body=f"[{answer(id_='1')},{answer(id_='2')},"
                                                                         + error(200, SECRET, "null")["body"] + "]")),
    ("batch_answer_as_sse_events", [EXEMPT, SCANNED],
     scen(ctype="text/event-stream", body=sse(answer(SAID, "2")) + sse(answer(SAID, "1")))),
    ("log_and_comment_on_the_exempt_calls_stream", [EXEMPT],
     scen(ctype="text/event-stream", body=f": {SECRET}\n" + sse(LOG) + sse(answer(id_="1")))),
]


@pytest.mark.parametrize(("case", "calls", "scenario"), EXEMPT_CASES, ids=[c[0] for c in EXEMPT_CASES])
def test_a_dlp_exempt_call_exempts_no_other_answer(scripted: Any, case: str, calls: list[tuple[str, int]],
                                                   scenario: dict[str, Any]) -> None:
    from mcp_raw import call, messages

    env, path = scripted
    path.write_text(json.dumps(scenario))
    sent = [call(name, {"a": 1, "b": 2}, id=i) for name, i in calls]
    _, resp = raw_reads(env.url, sent if len(sent) > 1 else sent[0])
    read = [m for d in messages(resp) for m in (d if isinstance(d, list) else [d])]
    others = [m for m in read if not (m.get("id") == 1 and "result" in m)]
    assert len(read) >= len(calls), f"{case}: {resp.text[:600]}"
    assert not [m for m in others if SECRET in json.dumps(m)], f"{case}: the secret beside the exempt answer: {read}"
    exempt = sum(json.dumps(m).count(SECRET) for m in read if m not in others)
    assert resp.text.count(SECRET) <= exempt, f"{case}: the secret outside any message: {resp.text[:900]}"


ASK = ('{"resultType":"input_required","requestState":"s1","inputRequests":{"card":{"method":"elicitation/create",'
       '"params":{"mode":"form","message":"' + SECRET + '","requestedSchema":{"type":"object","properties":{}}}}}}')
# The 2026-07-28 wire through `mcp.Client` (server/discover, then stateless calls), its elicitation
# callback recording what the user is shown: (case, the first answer to the call).
MODERN_CASES = [
    ("modern_input_required_message_is_redacted", scen(body=answer(ASK))),
    ("modern_secret_in_a_redirect_location", scen(307, headers=f"location: {OUT}\r\n", body=None)),
]


@pytest.mark.parametrize(("case", "scenario"), MODERN_CASES, ids=[c[0] for c in MODERN_CASES])
def test_modern_wire_client_reads_no_secret(scripted: Any, case: str, scenario: dict[str, Any]) -> None:
    import anyio
    import httpx2
    from conftest import READER_KEY
    from mcp import Client, MCPError, types
    from mcp.client.streamable_http import streamable_http_client as transport

    env, path = scripted
    path.write_text(json.dumps(scenario))
    shown: list[str] = []

    async def elicit(_ctx: Any, params: Any) -> Any:
        shown.append(params.model_dump_json())
        return types.ElicitResult(action="decline")

    async def run() -> str:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {READER_KEY}"}, timeout=15) as hc, \
                Client(transport(env.url, http_client=hc), elicitation_callback=elicit) as c:
            assert c.session.protocol_version == "2026-07-28"
            try:
                return "RESULT " + (await c.call_tool("echo", {"message": "hi"})).model_dump_json()
            except MCPError as e:
                return f"ERROR {e.code} {e.message} {e.data}"

    read = anyio.run(run)
    leaked = [got for got in [read, *shown] if SECRET.lower() in got.lower()]
    assert not leaked, f"{case}: the modern client's caller or user read the secret: {leaked}"
    if "input_required" in case:  # the user was asked (the text redacted), the retry answered
        assert len(shown) == 1 and "REDACTED" in shown[0] and read.startswith("RESULT"), (read, shown)


# --------------------------------------------------------------------------- the scripted peer

async def _serve(port: int, scenario: Path) -> None:
    """initialize, server/discover, tools/list and a retry (inputResponses) answered as any server
    would; GETs, notifications and every other request (or batch) as the scenario says."""
    def head(status: int, ctype: str | None, length: int, extra: str = "", reason: str = "X") -> bytes:
        ct = f"content-type: {ctype}\r\n" if ctype else ""
        return f"HTTP/1.1 {status} {reason}\r\n{ct}{extra}content-length: {length}\r\n\r\n".encode()

    def ok(msg: dict[str, Any], result: dict[str, Any], extra: str = "") -> bytes:
        res = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {**result, "resultType": "complete"}}).encode()
        return head(200, "application/json", len(res), extra) + res

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in req.split("\r\n")[1:])}
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                sc = json.loads(scenario.read_text())
                msg = json.loads(body) if req.startswith("POST") else None
                one = msg if isinstance(msg, dict) else {}
                if msg is None:
                    writer.write(head(307, None, 0, sc["get"]) if sc["get"] else head(405, "text/plain", 0))
                elif one and one.get("id") is None:
                    status, ctype, text = sc["notified"] or [202, None, ""]
                    writer.write(head(status, ctype, len(text.encode())) + text.encode())
                elif one.get("method") == "server/discover":
                    writer.write(ok(one, {"cacheScope": "public", "capabilities": {"tools": {}}, "ttlMs": 0,
                                          "supportedVersions": ["2026-07-28"]}))
                elif one.get("method") == "initialize":
                    sid = "" if "mcp-session-id" in sc["init"] else "mcp-session-id: channels-1\r\n"
                    writer.write(ok(one, {"protocolVersion": one["params"]["protocolVersion"], "capabilities": {
                        "tools": {}}, "serverInfo": {"name": "channels-peer", "version": "0"}}, sid + sc["init"]))
                elif one.get("method") == "tools/list":
                    writer.write(ok(one, {"ttlMs": 0, "tools": [{"name": n, "inputSchema": {"type": "object"}}
                                                                for n in ("echo", "get-sum")]}))
                elif "inputResponses" in one.get("params", {}):
                    writer.write(ok(one, json.loads(OK)))
                else:
                    out = (sc["body"] or "").replace("@ID@", json.dumps(one.get("id"))).encode()
                    writer.write(head(sc["status"], sc["ctype"], len(out), sc["headers"], sc["reason"]) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), Path(sys.argv[2])))
