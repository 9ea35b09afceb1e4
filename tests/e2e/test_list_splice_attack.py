"""List answers whose only change is the private mark: `"cacheScope":"private"`
is spliced into the server's own text (response::mark_private) instead of the
document being written out again. What every reader of the answer takes as its
`cacheScope` must be "private", whatever else the server put in `result`.

The peer is this file run as a script: a scripted streamable-HTTP server that
answers initialize itself and every other request with the bytes of a scenario
file (``@ID@`` replaced by the request's id), so the tests choose the exact
text of each list answer (pretty-printed, CRLF, SSE with multi-line data,
member names in other case...).

Readers: Python's json (what the official Python SDK decodes with), and a Go
program on the standard library's ``encoding/json`` (built here with
``go build``). ``encoding/json`` matches member names to struct fields
case-insensitively (``ſ`` folds to ``s``) and the last match wins: the reason
the filter refuses server answers with two members that fold together
(`parse_strict_folded`). The filter must not create such a pair itself: a
server's ``"CacheScope":"public"`` after the spliced ``"cacheScope":"private"``
is what a case-insensitive reader (a Go cache in front of the clients, a Go
client on ``encoding/json``) reads, and a list one caller may see is then
shared with every other. Found by the eleventh session's attack on the splice
(the lower-case spelling was read as public before the splice too, when the
document was written out sorted); the filter now refuses a list answer whose
``result`` holds a member that folds to ``cacheScope`` without being spelt so,
as it refuses one with ``Tools`` beside ``tools``.

    python tests/e2e/test_list_splice_attack.py PORT SCENARIO_FILE   (the peer)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent

GO_READER = r"""
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type Entry struct {
	Name string `json:"name"`
}

type Result struct {
	CacheScope string  `json:"cacheScope"`
	Tools      []Entry `json:"tools"`
}

type Msg struct {
	Result Result `json:"result"`
}

func main() {
	b, _ := io.ReadAll(os.Stdin)
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		fmt.Println(`{"error":` + fmt.Sprintf("%q", err.Error()) + `}`)
		return
	}
	names := []string{}
	for _, t := range m.Result.Tools {
		names = append(names, t.Name)
	}
	out, _ := json.Marshal(map[string]any{"cacheScope": m.Result.CacheScope, "tools": names})
	fmt.Println(string(out))
}
"""

TOOLS = '[{"name":"echo","inputSchema":{"type":"object"}},{"name":"get-sum","inputSchema":{"type":"object"}}]'
VISIBLE = ["echo", "get-sum"]  # all of TOOLS: the reader may see both, so the mark is the only change


def answer(result_members: str) -> str:
    return '{"jsonrpc":"2.0","id":@ID@,"result":{"tools":' + TOOLS + result_members + "}}"


# (case, content type, the server's text): every one a list answer whose
# entries the caller may all see.
CASES = [
    # Controls: the splice in awkward texts.
    ("compact", "json", answer("")),
    ("pretty_crlf_tabs_result_last", "json",
     '{\r\n\t"id" :\t@ID@ ,\r\n\t"jsonrpc":"2.0",\r\n\t"result"\r\n:\r\n\t{\r\n\t\t"tools": ' + TOOLS + "\r\n\t}\r\n}\r\n"),
    ("sse_multi_line_data_cr_only", "sse",
     ': prime\r\revent: message\rdata: {"jsonrpc":"2.0","id":@ID@,\rdata: "result":{"tools":' + TOOLS + "}}\r\r"),
    # A scope in another case: a case-insensitive reader takes the last match.
    ("upper_CacheScope_public", "json", answer(',"CacheScope":"public"')),
    ("lower_cachescope_public", "json", answer(',"cachescope":"public"')),
    ("long_s_cache_s_cope_public", "json", answer(',"cache\u017fcope":"public"')),
    ("upper_CacheScope_public_sse", "sse", "event: message\ndata: " + answer(',"CacheScope":"public"') + "\n\n"),
    ("private_then_CacheScope_public", "json", answer(',"cacheScope":"private","CacheScope":"public"')),
    # Not the splice: an entry the caller may not see is removed, so the document is
    # written out (members sorted): "cachescope" still comes after "cacheScope".
    ("entry_removed_lower_cachescope_public", "json",
     answer(',"cachescope":"public"').replace(TOOLS, TOOLS[:-1] + ',{"name":"get-env","inputSchema":{"type":"object"}}]')),
]


# A scope spelt otherwise beside the mark: refused (`case_variant_in_answer`).
REFUSED = {
    "upper_CacheScope_public",
    "lower_cachescope_public",
    "long_s_cache_s_cope_public",
    "upper_CacheScope_public_sse",
    "private_then_CacheScope_public",
    "entry_removed_lower_cachescope_public",
}


@pytest.fixture(scope="module")
def go_reader(workdir: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is missing: scripts/setup.sh installs Debian's golang-go")
    src = workdir / "splice-go-reader" / "main.go"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(GO_READER)
    binary = workdir / "splice-go-reader" / "reader"
    env = {**os.environ, "GOCACHE": str(workdir / "go-cache"), "GOPATH": str(workdir / "go-path"),
           "GO111MODULE": "off", "CGO_ENABLED": "0"}
    built = subprocess.run([go, "build", "-o", str(binary), str(src)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return binary


@pytest.fixture(scope="module")
def scripted(workdir: Path, wasm: Path) -> Iterator[tuple[Any, Path]]:
    import harness
    from conftest import base_policy

    scenario = json.dumps({"kind": "json", "body": "{}"})
    with harness.scripted_peer("splice", Path(__file__).resolve(), workdir, wasm, base_policy(), scenario) as pair:
        yield pair


def answer_texts(resp: Any) -> list[str]:
    """Each JSON-RPC message's text as the client reads it (the body, or an SSE event's data lines joined)."""
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [resp.content.decode()]
    out = []
    text = resp.content.decode().replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if data and "\n".join(data).strip():
            out.append("\n".join(data))
    return out


def go_folds(name: str) -> str:
    """A member name as encoding/json matches it to a field: case-insensitively, ſ as s, K as k."""
    return name.replace("\u017f", "s").replace("\u212a", "k").lower()


@pytest.mark.parametrize(("case", "kind", "body"), CASES, ids=[c[0] for c in CASES])
def test_every_reader_takes_a_spliced_list_as_private(scripted: Any, go_reader: Path, case: str, kind: str,
                                                       body: str) -> None:
    from conftest import READER_KEY
    from mcp_raw import open_session, rpc, send

    env, scenario = scripted
    scenario.write_text(json.dumps({"kind": kind, "body": body}))
    sess = open_session(env.url, READER_KEY)
    r = send(env.url, body=json.dumps(rpc("tools/list", id=7)), token=READER_KEY, headers=sess)
    assert r.status_code == 200, r.text[:300]
    (text,) = answer_texts(r)
    msg = json.loads(text)
    if case in REFUSED:
        # Refused whole: nothing a cache could keep, no scope to misread.
        assert msg["error"]["data"]["rule"] == "response-unfilterable", text
        assert "result" not in msg, text
        return
    assert "error" not in msg, text
    # Python's json (the Python SDK) and every member a case-insensitive reader folds to cacheScope.
    assert msg["result"]["cacheScope"] == "private", text
    assert [t["name"] for t in msg["result"]["tools"]] == VISIBLE, text
    go = subprocess.run([str(go_reader)], input=text.encode(), capture_output=True, timeout=30)
    read = json.loads(go.stdout)
    assert read == {"cacheScope": "private", "tools": VISIBLE}, f"{case}: encoding/json reads {read}: {text}"
    # No member a case-insensitive reader could take for the scope says anything else
    # (whichever of them such a reader keeps).
    members = json.loads(text, object_pairs_hook=lambda p: p)
    result = dict(members)["result"]
    scopes = [(k, v) for k, v in result if go_folds(k) == "cachescope"]
    assert all(v == "private" for _, v in scopes), f"{case}: scopes {scopes}: {text}"


# --------------------------------------------------------------------------- the scripted peer

async def _serve(port: int, scenario: Path) -> None:
    sys.path.insert(0, str(HERE))
    from http1_request import json_answer, read_call

    sessions = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg = await read_call(reader, writer)
                method, id_ = msg.get("method"), msg.get("id")
                if method == "initialize":
                    sessions[0] += 1
                    res = json.dumps({"jsonrpc": "2.0", "id": id_, "result": {
                        "protocolVersion": (msg.get("params") or {}).get("protocolVersion", "2025-11-25"),
                        "capabilities": {"tools": {}}, "serverInfo": {"name": "splice-peer", "version": "0"}}}).encode()
                    writer.write(json_answer(res, b"mcp-session-id: splice-" + str(sessions[0]).encode() + b"\r\n"))
                    await writer.drain()
                    continue
                scen = json.loads(scenario.read_text())
                payload = scen["body"].replace("@ID@", json.dumps(id_)).encode()
                ctype = b"text/event-stream" if scen["kind"] == "sse" else b"application/json"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)
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
