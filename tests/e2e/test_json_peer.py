"""The same filtering against a server that answers with plain JSON, not SSE.

server-everything answers every request with SSE; this peer (tests/e2e/json_server.py,
built on the official Python SDK's MCPServer with json_response=True) answers with
`application/json`, so the filter rewrites a JSON body: the list shrinks and the
`content-length` must follow (a stale one makes the client wait or fail).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import messages, open_session, rpc, sdk_session, send

import harness

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def json_peer(workdir: Path) -> Iterator[int]:
    port = harness.free_port()
    proc = harness.Proc("json-peer", [sys.executable, str(HERE / "json_server.py"), str(port)],
                        workdir / "json-peer.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, "json peer", proc)
        yield port
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def json_envoy(json_peer: int, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=base_policy(), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-json-peer")
    yield env
    env.stop()


def test_tools_list_filtered_on_json_responses(json_envoy: Any) -> None:
    async def names(token: str) -> set[str]:
        async with sdk_session(json_envoy.url, token) as s:
            return {t.name for t in (await s.list_tools()).tools}

    assert anyio.run(names, READER_KEY) == {"echo", "get-sum"}
    assert anyio.run(names, ADMIN_KEY) == {"echo", "get-sum", "get-tiny-image", "pay"}


def test_filtered_json_body_is_plain_json_with_a_correct_length(json_envoy: Any) -> None:
    sess = open_session(json_envoy.url, READER_KEY)
    r = send(json_envoy.url, body=json.dumps(rpc("tools/list", id=5)), token=READER_KEY, headers=sess)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json"), r.headers
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(r.content)
    (msg,) = messages(r)
    assert msg["id"] == 5
    assert sorted(t["name"] for t in msg["result"]["tools"]) == ["echo", "get-sum"]


def test_prompts_list_filtered_on_json_responses(json_envoy: Any) -> None:
    async def go() -> set[str]:
        async with sdk_session(json_envoy.url, READER_KEY) as s:
            return {p.name for p in (await s.list_prompts()).prompts}

    assert anyio.run(go) == {"simple-prompt"}


def test_calls_on_the_json_peer(json_envoy: Any) -> None:
    async def go() -> Any:
        async with sdk_session(json_envoy.url, READER_KEY) as s:
            await s.list_tools()
            ok = await s.call_tool("echo", {"message": "json"})
            before = json_envoy.upstream_posts()
            with pytest.raises(MCPError) as ei:
                await s.call_tool("get-env", {})
            return ok, ei.value, json_envoy.upstream_posts() - before

    ok, denied, moved = anyio.run(go)
    assert [c.text for c in ok.content] == ["Echo: json"]
    assert denied.code == -32010 and denied.data.get("rule") == "no-env"
    assert moved == 0
