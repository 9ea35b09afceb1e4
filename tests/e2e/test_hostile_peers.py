"""Servers that read the bytes differently from the firewall (issue: what the server
reads is what the firewall decided).

Each peer is a real server in another language whose decoder showed a bypass. Every
case runs twice: straight to the peer (the control: the peer really executes the
smuggled call, so the case can fail) and through Envoy with the filter (refused,
nothing reaches the peer).

- Charsets: the official TypeScript SDK server on ``createMcpExpressApp()``
  (``express.json()`` decodes any ``charset=utf-*``, UTF-7 included).
- Case-folded member names: a Go server built with ``go build`` on the standard
  library, decoding into structs with ``encoding/json`` (case-insensitive field
  match, ``ſ`` folds to ``s``, the last match wins).
- Ids: JavaScript reads integers past 2^53 inexactly (a JSON.parse peer answers
  9007199254740993 as 9007199254740992), and a server may answer id 5 as "5",
  5.0 or without an id (the Go peer, asked to): such an answer matches no planned
  request and must never pass unfiltered.
- Repeated header lines, which servers resolve differently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ADMIN_KEY, sha256_hex
from mcp_raw import ACCEPT, call, sdk_session

import harness

REPO = Path(__file__).resolve().parents[2]

POLICY: dict[str, Any] = {
    "version": 1,
    "identity": {"api_keys": [{"sha256": sha256_hex(ADMIN_KEY), "subject": "e2e-admin", "roles": ["admin"]}]},
    "rules": [
        {"id": "catalogue", "effect": "allow", "methods": ["tools/list"]},
        {"id": "admin-tools", "effect": "allow", "roles": ["admin"], "tools": ["echo", "delete_repo"]},
        {"id": "refund-cap", "effect": "allow", "roles": ["admin"], "tools": ["create_refund"],
         "when": {"arg": "/amount", "lte": 500}},
        {"id": "no-delete", "effect": "deny", "tools": ["delete_*"]},
        {"id": "push", "effect": "allow", "roles": ["admin"], "tools": ["push_files"]},
        {"id": "no-force-push", "effect": "deny", "tools": ["push_files"],
         "when": {"all": [{"arg": "/force", "exists": True}, {"arg": "/force", "ne": False}]}},
    ],
}


class Peer:
    """A peer process whose stdout lists what it executed (``CALLED {json}`` lines)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, cwd: Path | None = None):
        self.port = harness.free_port()
        self.proc = harness.Proc(name, [*argv, str(self.port)], workdir / f"{name}.log", cwd=cwd)
        harness._wait(lambda: harness.port_open(self.port), 30, name, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def executed(self) -> list[dict[str, Any]]:
        return [json.loads(line[len("CALLED "):]) for line in self.proc.log_text().splitlines()
                if line.startswith("CALLED ")]

    def stop(self) -> None:
        self.proc.stop()


def envoy_in_front(peer: Peer, workdir: Path, wasm: Path, name: str, template: str = "envoy") -> harness.Envoy:
    cfg = harness.render(template, listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=peer.port, policy=POLICY, wasm=wasm)
    return harness.Envoy(cfg, workdir, name=name)


def post(url: str, body: str | bytes, headers: list[tuple[str, str]]) -> httpx.Response:
    """A POST with exactly these header lines (repeats allowed), the admin's key added."""
    lines = [("Accept", ACCEPT), ("Authorization", f"Bearer {ADMIN_KEY}"), *headers]
    with httpx.Client(timeout=30) as c:
        return c.post(url, content=body if isinstance(body, bytes) else body.encode(), headers=lines)


def wait_executed(peer: Peer, count: int) -> list[dict[str, Any]]:
    """The peer's executions once there are `count` of them (its stdout is flushed per line)."""
    deadline = time.monotonic() + 5
    while len(peer.executed()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return peer.executed()


# --------------------------------------------------------------------------- charsets

@pytest.fixture(scope="module")
def express_peer(workdir: Path) -> Iterator[Peer]:
    peer = Peer("express-peer", ["node", str(REPO / "peers" / "hostile" / "express_server.mjs")], workdir)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def express_envoy(express_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    env = envoy_in_front(express_peer, workdir, wasm, "envoy-express-peer")
    yield env
    env.stop()


def utf7_delete() -> str:
    # UTF-7 reads "+AF8-" as "_": the firewall (UTF-8) sees the tool "delete+AF8-repo".
    return json.dumps(call("delete+AF8-repo", {"repo": "prod"}))


def utf7_refund() -> str:
    # In UTF-8 the note is one harmless string; in UTF-7 "+ACI-" is a quote, so the
    # server reads a second "amount" member and JSON.parse keeps the last one.
    note = 'x+ACI-,+ACI-amount+ACI-:50000,+ACI-y+ACI-:+ACI-'
    return json.dumps(call("create_refund", {"amount": 5, "note": note}))


SMUGGLED = [
    # (case, content-type lines, body, what the peer executes when it is reached)
    ("utf7_turns_an_unknown_name_into_a_denied_tool", [("Content-Type", "application/json; charset=utf-7")],
     utf7_delete(), {"tool": "delete_repo", "arguments": {"repo": "prod"}}),
    ("utf7_quoted_upper_case", [("Content-Type", 'application/json; Charset="UTF-7"')],
     utf7_delete(), {"tool": "delete_repo", "arguments": {"repo": "prod"}}),
    ("utf7_second_member_passes_a_refund_cap", [("Content-Type", "application/json; charset=utf-7")],
     utf7_refund(), {"tool": "create_refund", "arguments": {"amount": 50000, "note": "x", "y": ""}}),
    ("utf7_as_a_second_charset", [("Content-Type", "application/json; charset=utf-7; charset=utf-8")],
     utf7_delete(), {"tool": "delete_repo", "arguments": {"repo": "prod"}}),
    ("utf7_on_a_second_header_line", [("Content-Type", "application/json"),
                                      ("Content-Type", "application/json; charset=utf-7")],
     utf7_delete(), None),
]


# Node keeps the first of two Content-Type lines, so the last case fools other
# readers, not this one: it has no control run here.
REACHABLE = [c for c in SMUGGLED if c[3] is not None]


@pytest.mark.parametrize("case,headers,body,executes", REACHABLE, ids=[c[0] for c in REACHABLE])
def test_the_express_peer_executes_what_utf7_smuggles(express_peer: Peer, case: str,
                                                     headers: list[tuple[str, str]], body: str,
                                                     executes: dict[str, Any]) -> None:
    """Control: straight to the peer, the smuggled call runs (so the refusal below matters)."""
    before = len(express_peer.executed())
    r = post(express_peer.url, body, headers)
    assert r.status_code == 200, r.text
    ran = wait_executed(express_peer, before + 1)[before:]
    # Zod drops members the schema does not name ("y"), so compare what it kept.
    assert [e["tool"] for e in ran] == [executes["tool"]]
    for key in ("repo", "amount"):
        if key in executes["arguments"]:
            assert ran[0]["arguments"][key] == executes["arguments"][key]


@pytest.mark.parametrize("case,headers,body,executes", SMUGGLED, ids=[c[0] for c in SMUGGLED])
def test_charset_smuggling_is_refused_before_the_server(express_envoy: harness.Envoy, express_peer: Peer,
                                                       case: str, headers: list[tuple[str, str]], body: str,
                                                       executes: dict[str, Any] | None) -> None:
    before_posts = express_envoy.upstream_posts()
    before = len(express_peer.executed())
    r = post(express_envoy.url, body, headers)
    # Envoy joins two Content-Type lines into one ("a,b"), which is no media type: 415 too.
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == -32600
    assert express_envoy.upstream_posts() == before_posts
    assert express_peer.executed()[before:] == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          'application/json; charset="UTF-8"'])
def test_utf8_json_reaches_the_express_peer(express_envoy: harness.Envoy, express_peer: Peer,
                                            content_type: str) -> None:
    before = len(express_peer.executed())
    r = post(express_envoy.url, json.dumps(call("echo", {"message": "plain"})), [("Content-Type", content_type)])
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "echo ran"
    assert wait_executed(express_peer, before + 1)[before:] == [{"tool": "echo", "arguments": {"message": "plain"}}]


def test_denied_call_in_utf8_never_reaches_the_express_peer(express_envoy: harness.Envoy,
                                                            express_peer: Peer) -> None:
    before = len(express_peer.executed())
    r = post(express_envoy.url, json.dumps(call("delete_repo", {"repo": "prod"})),
             [("Content-Type", "application/json")])
    assert r.status_code == 200 and r.json()["error"]["code"] == -32010
    assert r.json()["error"]["data"]["rule"] == "no-delete"
    assert express_peer.executed()[before:] == []


# --------------------------------------------------------------------------- case folding

@pytest.fixture(scope="module")
def go_peer(workdir: Path) -> Iterator[Peer]:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is missing: scripts/setup.sh installs Debian's golang-go")
    binary = workdir / "go-peer"
    # The build cache goes into the test's own directory, removed with it.
    env = {**os.environ, "GOCACHE": str(workdir / "go-cache"), "GOPATH": str(workdir / "go-path"),
           "GO111MODULE": "off", "CGO_ENABLED": "0"}
    built = subprocess.run([go, "build", "-o", str(binary), str(REPO / "peers" / "hostile" / "go_server.go")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    peer = Peer("go-peer", [str(binary)], workdir)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def go_envoy(go_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    env = envoy_in_front(go_peer, workdir, wasm, "envoy-go-peer")
    yield env
    env.stop()


def raw_call(params: str) -> str:
    """A tools/call whose params are given as raw JSON text (keys JSON cannot repeat in a dict)."""
    return '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + params + "}"


FOLDED = [
    # (case, params as sent, what the Go peer executes)
    ("name_in_other_case_runs_a_denied_tool",
     '{"name":"echo","Name":"delete_repo","arguments":{"repo":"prod"}}',
     {"tool": "delete_repo", "arguments": {"repo": "prod"}}),
    ("arguments_in_upper_case_pass_a_refund_cap",
     '{"name":"create_refund","arguments":{"amount":5},"ARGUMENTS":{"amount":50000}}',
     {"tool": "create_refund", "arguments": {"amount": 50000}}),
    ("long_s_spells_arguments",
     '{"name":"create_refund","arguments":{"amount":5},"argument\u017f":{"amount":50000}}',
     {"tool": "create_refund", "arguments": {"amount": 50000}}),
    ("long_s_unescaped",
     '{"name":"create_refund","arguments":{"amount":5},"argumentſ":{"amount":50000}}',
     {"tool": "create_refund", "arguments": {"amount": 50000}}),
]


@pytest.mark.parametrize("case,params,executes", FOLDED, ids=[c[0] for c in FOLDED])
def test_the_go_peer_reads_case_folded_members(go_peer: Peer, case: str, params: str,
                                               executes: dict[str, Any]) -> None:
    """Control: straight to the Go peer, the folded member is the one that runs."""
    before = len(go_peer.executed())
    r = post(go_peer.url, raw_call(params), [("Content-Type", "application/json")])
    assert r.status_code == 200, r.text
    assert wait_executed(go_peer, before + 1)[before:] == [executes]


@pytest.mark.parametrize("case,params,executes", FOLDED, ids=[c[0] for c in FOLDED])
def test_case_folded_members_are_refused_before_the_go_peer(go_envoy: harness.Envoy, go_peer: Peer, case: str,
                                                            params: str, executes: dict[str, Any]) -> None:
    before_posts = go_envoy.upstream_posts()
    before = len(go_peer.executed())
    r = post(go_envoy.url, raw_call(params), [("Content-Type", "application/json")])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600
    assert "differ only in case" in r.json()["error"]["message"]
    assert go_envoy.upstream_posts() == before_posts
    assert go_peer.executed()[before:] == []


def test_allowed_call_reaches_the_go_peer(go_envoy: harness.Envoy, go_peer: Peer) -> None:
    before = len(go_peer.executed())
    r = post(go_envoy.url, raw_call('{"name":"create_refund","arguments":{"amount":5}}'),
             [("Content-Type", "application/json")])
    assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "create_refund ran", r.text
    assert wait_executed(go_peer, before + 1)[before:] == [{"tool": "create_refund", "arguments": {"amount": 5}}]


SINGLE_VARIANTS = [
    # (case, params as sent, what the Go peer executes): one member, nothing to collide with.
    ("force_in_another_case_passes_a_deny_condition",
     '{"name":"push_files","arguments":{"branch":"feat/x","Force":true}}',
     {"tool": "push_files", "arguments": {"branch": "feat/x", "force": True}}),
    ("arguments_in_another_case_skip_dlp",
     '{"name":"echo","Arguments":{"text":"ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"}}',
     {"tool": "echo", "arguments": {"text": "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"}}),
]


@pytest.mark.parametrize("case,params,executes", SINGLE_VARIANTS, ids=[c[0] for c in SINGLE_VARIANTS])
def test_the_go_peer_reads_a_single_case_variant_member(go_peer: Peer, case: str, params: str,
                                                        executes: dict[str, Any]) -> None:
    """Control: alone, "Force" and "Arguments" are what the Go peer reads."""
    before = len(go_peer.executed())
    r = post(go_peer.url, raw_call(params), [("Content-Type", "application/json")])
    assert r.status_code == 200, r.text
    assert wait_executed(go_peer, before + 1)[before:] == [executes]


@pytest.mark.parametrize("case,params,executes", SINGLE_VARIANTS, ids=[c[0] for c in SINGLE_VARIANTS])
def test_a_single_case_variant_member_is_refused(go_envoy: harness.Envoy, go_peer: Peer, case: str,
                                                 params: str, executes: dict[str, Any]) -> None:
    before = len(go_peer.executed())
    before_posts = go_envoy.upstream_posts()
    r = post(go_envoy.url, raw_call(params), [("Content-Type", "application/json")])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600
    assert "differs only in case" in r.json()["error"]["message"]
    assert go_envoy.upstream_posts() == before_posts
    assert go_peer.executed()[before:] == []


def test_force_in_its_own_case_is_denied_by_the_rule(go_envoy: harness.Envoy, go_peer: Peer) -> None:
    before = len(go_peer.executed())
    r = post(go_envoy.url, raw_call('{"name":"push_files","arguments":{"branch":"feat/x","force":true}}'),
             [("Content-Type", "application/json")])
    assert r.json()["error"]["data"]["rule"] == "no-force-push", r.text
    assert go_peer.executed()[before:] == []


# --------------------------------------------------------------------------- hostile answers

def python_sdk_list(url: str, style: str, token: str | None) -> list[str] | str:
    """What the official Python client lists (or the error it raises)."""
    async def go() -> list[str]:
        async with sdk_session(url, token, headers={"X-List-Style": style}) as s:
            return sorted(t.name for t in (await s.list_tools()).tools)

    try:
        return anyio.run(go)
    except BaseException as e:  # noqa: BLE001 - the client's failure is the outcome
        return f"error: {type(e).__name__}"


def go_client_list(binary: Path, url: str, style: str, token: str) -> dict[str, Any]:
    """What a Go client (encoding/json, case-insensitive) reads from a tools/list answer."""
    out = subprocess.run([str(binary), "list", url, style, token], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


@pytest.mark.parametrize("style", ["bom-sse", "utf7-sse"])
def test_the_python_client_reads_a_smuggled_catalogue_straight_from_the_peer(go_peer: Peer, style: str) -> None:
    """Control: a BOM before the event, or UTF-7 named by charset*=, and the client sees every tool."""
    assert "delete_repo" in python_sdk_list(go_peer.url, style, None)


@pytest.mark.parametrize("style", ["bom-sse", "utf7-sse"])
def test_a_smuggled_catalogue_does_not_reach_the_python_client(go_envoy: harness.Envoy, style: str) -> None:
    listed = python_sdk_list(go_envoy.url, style, ADMIN_KEY)
    # Read as the client reads it, the BOM stream is filtered; the UTF-7 one is unreadable (refused).
    assert "delete_repo" not in listed, listed


@pytest.mark.parametrize("style", ["tools-variant", "result-variant"])
def test_a_go_client_reads_case_variant_answers_straight_from_the_peer(go_peer: Peer, workdir: Path,
                                                                      style: str) -> None:
    """Control: "Tools" after "tools", or "Result" for "result", and a Go client reads the whole catalogue."""
    assert "delete_repo" in go_client_list(workdir / "go-peer", go_peer.url, style, "")["tools"]


@pytest.mark.parametrize("style", ["tools-variant", "result-variant"])
def test_case_variant_answers_are_unfilterable(go_envoy: harness.Envoy, workdir: Path, style: str) -> None:
    read = go_client_list(workdir / "go-peer", go_envoy.url, style, ADMIN_KEY)
    assert read["tools"] == [] and read["error"] == {"code": -32010}, read


def go_client_call(binary: Path, url: str, style: str, token: str) -> dict[str, Any]:
    """What a Go client (encoding/json, case-insensitive) reads of an echo call's text."""
    out = subprocess.run([str(binary), "call", url, style, token], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


# The result checks block instructions aimed at the model.
CHECKED_POLICY: dict[str, Any] = {**POLICY, "catalogue": {"results": {"model_instructions": "block"}}}


@pytest.fixture(scope="module")
def go_checked_envoy(go_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=go_peer.port, policy=CHECKED_POLICY, wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-go-peer-checked")
    yield env
    env.stop()


@pytest.mark.parametrize("style", ["content-variant", "text-variant", "plain"])
def test_a_go_client_reads_injected_text_in_any_case_straight_from_the_peer(go_peer: Peer, workdir: Path,
                                                                           style: str) -> None:
    """Control: "Content" for "content", or an item's "Text", and a Go client reads the injected text."""
    read = go_client_call(workdir / "go-peer", go_peer.url, style, "")
    assert any("Ignore all previous instructions" in t for t in read["texts"]), read


@pytest.mark.parametrize("style", ["content-variant", "text-variant", "plain"])
def test_injected_text_in_any_case_does_not_reach_a_go_client(go_checked_envoy: harness.Envoy, workdir: Path,
                                                              style: str) -> None:
    # In MCP's own spelling the check blocks it; in another case the result
    # is one the check cannot read as the client does: unfilterable.
    read = go_client_call(workdir / "go-peer", go_checked_envoy.url, style, ADMIN_KEY)
    assert read["texts"] == [] and read["error"] == {"code": -32010}, read


def python_sdk_call(url: str, style: str, token: str | None) -> str:
    """The text the official Python SDK client reads of an echo call's answer (or its error)."""
    from mcp import MCPError

    async def go() -> str:
        async with sdk_session(url, token, headers={"X-Result-Style": style}) as s:
            try:
                r = await s.call_tool("echo", {"message": "hi"})
            except MCPError as e:
                return f"error {e.error.code}"
            return " ".join(getattr(c, "text", "") for c in r.content)

    return anyio.run(go)


def test_the_python_client_reads_an_answer_with_a_null_method_straight_from_the_peer(go_peer: Peer) -> None:
    """Control: `"method": null` beside the result, and the Python SDK reads the injected text as the answer."""
    assert "Ignore all previous instructions" in python_sdk_call(go_peer.url, "method-null", None)


def test_an_answer_with_a_null_method_is_unfilterable(go_checked_envoy: harness.Envoy) -> None:
    # The filter read it as a server message (params only): the result check
    # and DLP never saw the result.
    assert python_sdk_call(go_checked_envoy.url, "method-null", ADMIN_KEY) == "error -32010"


# --------------------------------------------------------------------------- ids

BIG_ID = 9007199254740993  # 2^53 + 1: JSON.parse reads 9007199254740992


@pytest.fixture(scope="module")
def js_peer(workdir: Path) -> Iterator[Peer]:
    peer = Peer("js-number-peer", ["node", str(REPO / "peers" / "hostile" / "js_number_server.mjs")], workdir)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def js_envoy(js_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    env = envoy_in_front(js_peer, workdir, wasm, "envoy-js-number-peer")
    yield env
    env.stop()


def big_id_call(id_text: str) -> str:
    return '{"jsonrpc":"2.0","id":' + id_text + ',"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}'


def test_the_js_peer_answers_an_id_past_2_53_with_another_id(js_peer: Peer) -> None:
    """Control: the JavaScript peer runs the call and answers under an id we never sent."""
    before = len(js_peer.executed())
    r = post(js_peer.url, big_id_call(str(BIG_ID)), [("Content-Type", "application/json")])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == BIG_ID - 1
    assert len(wait_executed(js_peer, before + 1)) == before + 1


@pytest.mark.parametrize("id_text", [str(BIG_ID), str(2**53), str(-(2**53)), "18446744073709551616"])
def test_an_id_past_2_53_is_refused_before_the_server(js_envoy: harness.Envoy, js_peer: Peer,
                                                      id_text: str) -> None:
    before = len(js_peer.executed())
    before_posts = js_envoy.upstream_posts()
    r = post(js_envoy.url, big_id_call(id_text), [("Content-Type", "application/json")])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600
    assert js_envoy.upstream_posts() == before_posts
    assert js_peer.executed()[before:] == []


def test_the_largest_exact_id_reaches_the_js_peer(js_envoy: harness.Envoy) -> None:
    r = post(js_envoy.url, big_id_call(str(2**53 - 1)), [("Content-Type", "application/json")])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == 2**53 - 1


def test_a_batch_repeating_an_id_is_refused(workdir: Path, wasm: Path, express_peer: Peer) -> None:
    policy = {**POLICY, "limits": {"batches": "evaluate"}}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=express_peer.port, policy=policy, wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-express-batches")
    try:
        batch = [call("echo", {"message": "a"}, id=1), call("echo", {"message": "b"}, id=1)]
        r = post(env.url, json.dumps(batch), [("Content-Type", "application/json")])
        assert r.status_code == 400, r.text
        assert "repeats the id" in r.json()["error"]["message"]
        assert env.upstream_posts() == 0
    finally:
        env.stop()


MANGLED = ["string", "float", "none"]


@pytest.mark.parametrize("style", MANGLED)
def test_the_go_peer_mangles_answer_ids_when_asked(go_peer: Peer, style: str) -> None:
    """Control: straight from the peer, the whole catalogue comes back under a mangled id."""
    r = post(go_peer.url, json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
             [("Content-Type", "application/json"), ("X-Answer-Id", style)])
    answer = r.json()
    assert answer.get("id") == {"string": "5", "float": 5.0, "none": None}[style]
    assert "delete_repo" in {t["name"] for t in answer["result"]["tools"]}


@pytest.mark.parametrize("style", MANGLED)
def test_an_answer_under_a_mangled_id_is_unfilterable(go_envoy: harness.Envoy, style: str) -> None:
    before = go_envoy.stat("wasmcustom.mcp_firewall.responses.unfilterable")
    r = post(go_envoy.url, json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
             [("Content-Type", "application/json"), ("X-Answer-Id", style)])
    assert r.status_code == 200, r.text
    assert "delete_repo" not in r.text
    assert r.json()["error"]["data"]["rule"] == "response-unfilterable"
    assert r.json()["id"] == 5
    assert go_envoy.stat("wasmcustom.mcp_firewall.responses.unfilterable") == before + 1


def test_another_requests_answer_on_a_stream_nothing_checks_is_unfilterable(go_peer: Peer, workdir: Path,
                                                                            wasm: Path) -> None:
    """With DLP and the result checks off, nothing is planned for a ping's
    answer; its stream may still carry another request's answer, which the TS
    and Go SDKs take by id whatever stream brings it. Read, and refused."""
    ping = '{"jsonrpc":"2.0","id":5,"method":"ping"}'
    json_ct = ("Content-Type", "application/json")
    straight = post(go_peer.url, ping, [json_ct, ("X-Answer-Id", "other")])
    assert straight.json()["id"] == 55, straight.text
    quiet = {**POLICY, "dlp": {"responses": "off"}, "catalogue": {"results": "off"}}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=go_peer.port, policy=quiet, wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-go-peer-quiet")
    try:
        own = post(env.url, ping, [json_ct])
        assert own.json() == {"jsonrpc": "2.0", "id": 5, "result": {}}, own.text
        other = post(env.url, ping, [json_ct, ("X-Answer-Id", "other")])
        err = other.json()["error"]
        assert err["code"] == -32010 and err["data"]["rule"] == "response-unfilterable", other.text
    finally:
        env.stop()


def test_an_answer_under_its_own_id_is_filtered(go_envoy: harness.Envoy) -> None:
    r = post(go_envoy.url, json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
             [("Content-Type", "application/json")])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == 5
    assert sorted(t["name"] for t in r.json()["result"]["tools"]) == ["create_refund", "echo"]
    # This caller's view of the catalogue: no shared cache may serve it to another.
    assert r.json()["result"]["cacheScope"] == "private"


# --------------------------------------------------------------------------- repeated headers

REPEATED = [
    # Servers pick different copies (Starlette the first, Node joins custom headers,
    # Go's Header.Get the first): a second copy must never carry what was not checked.
    ("session_id", [("Mcp-Session-Id", "mine"), ("Mcp-Session-Id", "someone-elses")], 400),
    ("mcp_name", [("Mcp-Method", "tools/call"), ("Mcp-Name", "echo"), ("Mcp-Name", "delete_repo")], 400),
    # Envoy itself joins Authorization lines into one value ("Bearer a,Bearer b"):
    # a key nobody has, so no identity.
    ("authorization", [("Authorization", "Bearer e2e-reader-key")], 401),
]


@pytest.mark.parametrize("case,extra,status", REPEATED, ids=[c[0] for c in REPEATED])
def test_a_header_the_filter_reads_on_two_lines_is_refused(express_envoy: harness.Envoy, express_peer: Peer,
                                                           case: str, extra: list[tuple[str, str]],
                                                           status: int) -> None:
    before_posts = express_envoy.upstream_posts()
    r = post(express_envoy.url, json.dumps(call("echo", {"message": "x"})),
             [("Content-Type", "application/json"), *extra])
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["code"] == -32600
        assert "more than once" in r.json()["error"]["message"]
    assert express_envoy.upstream_posts() == before_posts


def test_the_official_sdk_client_works_through_envoy_to_the_go_peer(go_envoy: harness.Envoy, go_peer: Peer) -> None:
    """The refusals above cost an honest client nothing: the official Python client lists and calls."""
    async def go() -> tuple[set[str], str]:
        async with sdk_session(go_envoy.url, ADMIN_KEY) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            result = await s.call_tool("echo", {"message": "from the SDK"})
            return names, result.content[0].text

    names, text = anyio.run(go)
    assert names == {"echo", "create_refund"}
    assert text == "echo ran"


@pytest.mark.parametrize("style", ["huge-json", "huge-json-length"])
def test_a_json_answer_past_envoys_buffer_is_answered_whole_never_cut(go_envoy: harness.Envoy, style: str) -> None:
    """A 2 MiB JSON catalogue, past Envoy's default 1 MiB buffer (the policy's
    `max_response_bytes` is 8 MiB): the filter holds the answer's headers with
    its body, so Envoy can still answer a clean 500 of its own when the buffer
    overflows, instead of resetting a response whose head was already sent."""
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    with httpx.Client(timeout=30) as c:
        r = c.post(go_envoy.url, content=body.encode(),
                   headers=[("Accept", ACCEPT), ("Authorization", f"Bearer {ADMIN_KEY}"),
                            ("Content-Type", "application/json"), ("X-List-Style", style)])
    # On 1b63892 the head went out at once and the body was cut: httpx raised
    # "incomplete chunked read".
    assert r.status_code == 500, (r.status_code, r.text[:300])
    assert r.text == "Internal Server Error" and r.headers["server"] == "envoy", r.text[:300]
