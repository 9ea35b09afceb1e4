"""The envelope of a server message: what a client reads beside, around or instead of
the `result`, `error` and `params` DLP scans (the attack on 2df420c, which refuses a
member JSON-RPC 2.0 does not define).

Each case is a scripted server's exact bytes (this file run as a script), read
through Envoy and the filter by raw HTTP (every byte a client gets) and by the
official Python SDK client, unmodified (what its caller gets). The secret must reach
neither; a well-formed answer must still pass. The Python SDK quotes a message that
does not validate in the MCPError its caller gets (pydantic's `input_value='ghp_…'`),
and takes any answer on a stream it resumes, `"id": null` too, as the resumed
request's; the TypeScript SDK reports an id-less error whole through `onerror`.

    python tests/e2e/test_envelope_attack.py PORT SCENARIO_FILE   (the peer)
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
from test_json_peer import json_peer  # noqa: F401  (fixture)

HERE = Path(__file__).resolve().parent
SECRET = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
OK = '{"content":[{"type":"text","text":"ok"}]}'
ENV = '"jsonrpc":"2.0","id":@ID@'


def answer(members: str = "", result: str = OK, head: str = ENV) -> str:
    return "{" + head + members + ',"result":' + result + "}"


def sse(*datas: str) -> str:
    return "".join(f"event: message\ndata: {d}\n\n" for d in datas)


NOTE = f',"note":"{SECRET}"'
LOG = '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}'
ANON = '{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"' + SECRET + '"}}'
ASK = ('{"jsonrpc":"2.0","id":"s1","method":"elicitation/create","params":{"message":"m",'
       '"requestedSchema":{"type":"object","properties":{}}}')


def text(t: str) -> str:
    return '{"content":[{"type":"text","text":"' + t + '"}]}'


def error(e: str) -> str:  # an answer with this error
    return "{" + ENV + ',"error":' + e + "}"


# (case, "call" echo or "complete" a prompt the caller may not see, the POST's answer (kind,
# body or HTTP chunks), the resumption GET's answer, what the client reads: "refused" the -32010
# response-unfilterable refusal, "clean" the answer redacted, "ok" as sent, "either" of the first two).
CASES: list[tuple[str, str, tuple[str, Any], str | None, str]] = [
    # Controls: well-formed answers pass; a secret in what DLP reads is redacted.
    ("plain_answer_passes", "call", ("json", answer()), None, "ok"),
    ("plain_answer_in_sse_after_a_log_passes", "call", ("sse", sse(LOG + "}", answer())), None, "ok"),
    ("members_in_any_order_pass", "call", ("json", '{"result":' + OK + ',"id":@ID@,"jsonrpc":"2.0"}'), None, "ok"),
    ("secret_in_result_is_redacted", "call", ("json", answer(result=text(SECRET))), None, "clean"),
    ("secret_in_error_data_is_redacted", "call",
     ("json", error('{"code":-32000,"message":"m","data":{"k":"' + SECRET + '"}}')), None, "clean"),
    ("secret_as_a_string_error_is_redacted", "call", ("json", error(f'"{SECRET}"')), None, "clean"),
    ("anonymous_error_on_the_calls_stream_is_redacted", "call", ("sse", sse(ANON)), None, "clean"),
    ("escaped_result_name_is_read_as_result", "call",
     ("json", "{" + ENV + ',"res\\u0075lt":' + text(SECRET) + "}"), None, "clean"),
    # Members JSON-RPC 2.0 does not define (2df420c): refused however they are spelt or framed.
    ("note_beside_the_result", "call", ("json", answer(NOTE)), None, "refused"),
    ("note_with_an_escaped_name", "call", ("json", answer(f',"n\\u006fte":"{SECRET}"')), None, "refused"),
    ("top_level_meta", "call", ("json", answer(f',"_meta":{{"k":"{SECRET}"}}')), None, "refused"),
    ("proto_member", "call", ("json", answer(f',"__proto__":{{"k":"{SECRET}"}}')), None, "refused"),
    ("result_twice", "call", ("json", answer(',"result":{"content":[]}')), None, "refused"),
    ("result_in_another_case", "call", ("json", answer(',"Result":' + text(SECRET))), None, "refused"),
    ("long_s_variant_of_result", "call", ("json", answer(',"re\u017fult":' + text(SECRET))), None, "refused"),
    ("note_in_an_anonymous_error", "call", ("json", ANON[:-1] + NOTE + "}"), None, "refused"),
    ("note_in_a_log_before_the_answer", "call", ("sse", sse(LOG + NOTE + "}", answer())), None, "refused"),
    ("note_in_an_elicitation", "call", ("sse", sse(ASK + NOTE + "}", answer())), None, "refused"),
    ("note_in_a_batch_element", "call", ("json", "[" + answer(NOTE) + "]"), None, "refused"),
    ("note_in_multi_line_cr_only_data", "call",
     ("sse", "event: message\rdata: {" + ENV + ",\rdata: " + NOTE[1:] + ',"result":' + OK + "}\r\r"), None, "refused"),
    ("note_split_across_http_chunks", "call", ("sse", ["event: message\r\ndata: {" + ENV + ',"no',
     'te":"ghp_aB3dE5fG7h', 'J9kL1mN3pQ5rS7tU9vW1xY3z5A","result":' + OK + "}\r", "\n\r\n"]), None, "refused"),
    ("secret_event_id_and_name", "call", ("sse", f"id: {SECRET}\nevent: {SECRET}\ndata: {answer()}\n\n"), None, "ok"),
    # The envelope the filter never scans (bypasses).
    ("secret_as_the_jsonrpc_version", "call", ("json", answer(head=f'"jsonrpc":"{SECRET}","id":@ID@')), None, "refused"),
    ("secret_as_the_jsonrpc_version_of_a_log", "call",
     ("sse", sse(LOG.replace('"2.0"', f'"{SECRET}"') + "}", answer())), None, "refused"),
    ("secret_as_the_whole_document", "call", ("json", json.dumps(SECRET)), None, "refused"),
    ("secret_as_a_batch_element", "call", ("json", json.dumps([SECRET])), None, "refused"),
    ("anonymous_error_on_the_resumed_stream", "call", ("sse", "id: e1\nretry: 10\ndata: \n\n"), sse(ANON), "either"),
    ("error_answer_to_a_hidden_completion", "complete",
     ("json", error('{"code":-32000,"message":"' + SECRET + '"}')), None, "clean"),
    ("meta_beside_a_hidden_completion", "complete",
     ("json", answer(result='{"completion":{"values":["a"]},"_meta":{"k":"' + SECRET + '"}}')), None, "clean"),
    ("object_id_of_a_server_request", "call",
     ("sse", sse('{"jsonrpc":"2.0","id":{"k":"' + SECRET + '"},"method":"ping"}', answer())), None, "refused"),
    ("sse_comment_and_unknown_field_lines", "call",
     ("sse", f": {SECRET}\nnote: {SECRET}\ndata: {answer()}\n\n"), None, "either"),
]


def policy() -> dict[str, Any]:
    from conftest import base_policy

    p = base_policy()
    p["rules"].insert(0, {"id": "complete", "effect": "allow", "methods": ["completion/complete"]})
    return p


@pytest.fixture(scope="module")
def scripted(workdir: Path, wasm: Path) -> Iterator[tuple[Any, Path]]:
    import harness

    with harness.scripted_peer("envelope", Path(__file__).resolve(), workdir, wasm, policy()) as pair:
        yield pair


async def sdk_reads(url: str, ask: str) -> str:
    """What the Python SDK's caller gets: the result, or the MCPError (code, message, data)."""
    import anyio
    from conftest import READER_KEY
    from mcp import MCPError, types
    from mcp_raw import sdk_session

    async with sdk_session(url, READER_KEY) as s:
        try:
            with anyio.fail_after(20):
                if ask == "complete":
                    r = await s.complete(types.PromptReference(name="complex-prompt"), {"name": "a", "value": "b"})
                else:
                    r = await s.call_tool("echo", {"message": "hi"})
            return "RESULT " + r.model_dump_json(by_alias=True)
        except MCPError as e:
            return "ERROR " + json.dumps({"code": e.code, "message": e.message, "data": e.data})


def raw_reads(url: str, ask: str, resume: bool) -> bytes:
    """Every byte a client gets for the same request (and, for a resumption, for the GET)."""
    import httpx
    from conftest import READER_KEY
    from mcp_raw import headers_for, open_session, rpc, send

    sess = open_session(url, READER_KEY)
    method, params = (("completion/complete", {"ref": {"type": "ref/prompt", "name": "complex-prompt"},
                                               "argument": {"name": "a", "value": "b"}}) if ask == "complete"
                      else ("tools/call", {"name": "echo", "arguments": {"message": "hi"}}))
    out = send(url, body=json.dumps(rpc(method, params, id=3)), token=READER_KEY, headers=sess).content
    if resume:
        h = headers_for(READER_KEY, {**sess, "Last-Event-ID": "e1"}, None)
        with httpx.Client(timeout=10) as c, c.stream("GET", url, headers=h) as r:
            out += r.read()
    return out


@pytest.mark.parametrize(("case", "ask", "post", "get", "expect"), CASES, ids=[c[0] for c in CASES])
def test_no_client_reads_an_unscanned_secret(scripted: Any, case: str, ask: str, post: tuple[str, Any],
                                            get: str | None, expect: str) -> None:
    import anyio

    env, scenario = scripted
    kind, body = post
    scenario.write_text(json.dumps({"kind": kind, "body": body, "get": get}))
    raw = raw_reads(env.url, ask, get is not None)
    read = anyio.run(sdk_reads, env.url, ask)
    leaked = [who for who, got in (("raw HTTP", raw.decode(errors="replace")), ("Python SDK", read)) if SECRET in got]
    assert not leaked, f"{case}: the secret reached {leaked}: raw {raw[:400]!r}; the SDK's caller got {read[:900]}"
    if expect == "refused":
        assert read.startswith("ERROR ") and "response-unfilterable" in read, f"{case}: {read[:600]}"
    elif expect == "ok":
        assert read.startswith("RESULT ") and '"text":"ok"' in read, f"{case}: {read[:600]}"
    elif expect == "clean":
        assert "response-unfilterable" not in read, f"{case}: {read[:600]}"


# The official TS SDK client, unmodified: connects (opening its GET stream), prints its onerror reports.
TS_GET_READER = """
import { Client } from '@SDK@/client/index.js';
import { StreamableHTTPClientTransport } from '@SDK@/client/streamableHttp.js';
const a = JSON.parse(process.argv[2]), errors = [];
const c = new Client({name: 'envelope-e2e', version: '0'});
c.onerror = e => errors.push(String(e?.message ?? e));
await c.connect(new StreamableHTTPClientTransport(new URL(a.url), {requestInit: {headers: {Authorization: `Bearer ${a.key}`}}}));
await new Promise(r => setTimeout(r, 1500));
await c.close();
console.log(JSON.stringify(errors));
"""


def test_typescript_client_on_the_get_stream_reads_no_unscanned_id_less_error(scripted: Any, workdir: Path) -> None:
    """An id-less error on the GET stream the TS SDK opens after initialize: no request of
    the GET's exchange is scanned, so it passes unscanned to the client's onerror."""
    from conftest import READER_KEY

    node = shutil.which("node")
    assert node, "node is needed for the TypeScript SDK client"
    env, scenario = scripted
    scenario.write_text(json.dumps({"kind": "json", "body": answer(), "get": sse(ANON.replace('"id":null,', ""))}))
    sdk = HERE.parents[1] / "peers" / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm"
    script = workdir / "envelope-ts-get.mjs"
    script.write_text(TS_GET_READER.replace("@SDK@", sdk.as_uri()))
    done = subprocess.run([node, str(script), json.dumps({"url": env.url, "key": READER_KEY})],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout, f"the TS client's onerror read the secret: {done.stdout[:600]}"


@pytest.mark.parametrize("server", ["typescript_server_everything", "python_sdk_json_peer"])
def test_real_sdk_servers_ordinary_answers_pass(server: str, request: Any, workdir: Path, wasm: Path) -> None:
    """Tools, a call, a prompt, resources, ping and a hidden completion from real SDK servers."""
    import anyio
    import harness
    from conftest import ADMIN_KEY
    from mcp import types
    from mcp_raw import sdk_session

    if server == "typescript_server_everything":
        url = request.getfixturevalue("envoy_for")(policy()).url
    else:
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=request.getfixturevalue("json_peer"), policy=policy(), wasm=wasm)
        env = harness.Envoy(cfg, workdir, name="envoy-envelope-json-peer")
        request.addfinalizer(env.stop)
        url = env.url

    async def run() -> tuple[Any, ...]:
        async with sdk_session(url, ADMIN_KEY) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            echo = (await s.call_tool("echo", {"message": "plain"})).content[0].text
            prompt = (await s.get_prompt("simple-prompt")).messages
            await s.send_ping()
            await s.list_resources()
            hidden: list[str] = []
            if server == "typescript_server_everything":  # the JSON peer has no completions
                ref = types.PromptReference(name="completable-prompt")
                hidden = (await s.complete(ref, {"name": "department", "value": "E"})).completion.values
            return names, echo, prompt, hidden

    names, echo, prompt, hidden = anyio.run(run)
    assert "echo" in names and "plain" in echo and prompt and hidden == [], (names, echo, prompt, hidden)


# --------------------------------------------------------------------------- the scripted peer

def _head(status: str, ctype: str, length: int | None, extra: str = "") -> bytes:
    size = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    return f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\n{extra}{size}\r\n\r\n".encode()


async def _serve(port: int, scenario: Path) -> None:
    """initialize and tools/list answered as any server would, a GET with the scenario's
    `get` (405 without one), every other request with its `body` (`@ID@` = the id)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.split("\r\n")[1:])}
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                while hdrs.get("transfer-encoding") == "chunked":
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    body += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
                scen = json.loads(scenario.read_text())
                msg = json.loads(body) if head.startswith("POST") else {}
                get = (scen.get("get") or "").encode() if head.startswith("GET") else b""
                if not head.startswith("POST"):
                    writer.write(_head("200 OK", "text/event-stream", len(get)) + get if get
                                 else _head("405 Method Not Allowed", "text/plain", 0))
                elif msg.get("id") is None:
                    writer.write(_head("202 Accepted", "text/plain", 0))
                elif msg.get("method") in ("initialize", "tools/list"):
                    result = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
                    if msg["method"] == "initialize":
                        result = {"protocolVersion": msg["params"]["protocolVersion"], "serverInfo": {
                            "name": "envelope-peer", "version": "0"}, "capabilities": {"tools": {}, "completions": {}}}
                    res = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()
                    writer.write(_head("200 OK", "application/json", len(res), "mcp-session-id: env-1\r\n") + res)
                else:
                    parts = scen["body"] if isinstance(scen["body"], list) else [scen["body"]]
                    ctype = "text/event-stream" if scen["kind"] == "sse" else "application/json"
                    writer.write(_head("200 OK", ctype, None))
                    for p in parts:  # each part its own HTTP chunk, flushed apart
                        p = p.replace("@ID@", json.dumps(msg["id"])).encode()
                        writer.write(b"%x\r\n%s\r\n" % (len(p), p))
                        await writer.drain()
                        await asyncio.sleep(0.02)
                    writer.write(b"0\r\n\r\n")
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
