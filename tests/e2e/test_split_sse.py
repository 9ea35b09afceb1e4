"""SSE frames split across body chunks (mid-line, mid-UTF-8 character, mid-CRLF),
through the compiled filter in a real Envoy.

The peer is tests/e2e/split_sse_server.py: it writes each SSE response in pieces
of a few bytes, flushed separately. Raw HTTP drives it (it is not a full MCP
server, so the SDK is not used here). Envoy's `upstream_rq_total` and the filter's
own answer are what is checked: the list must come out filtered, whole, parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp_raw import call, messages, rpc, send

import harness

HERE = Path(__file__).resolve().parent
SPLITS = [("1-byte-lf", 1, "lf"), ("3-byte-crlf", 3, "crlf"), ("7-byte-lf", 7, "lf"), ("2-byte-crlf", 2, "crlf")]


@pytest.fixture(scope="module", params=SPLITS, ids=[s[0] for s in SPLITS])
def split_envoy(request: Any, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    name, piece, eol = request.param
    port = harness.free_port()
    peer = harness.Proc(f"split-{name}", [sys.executable, str(HERE / "split_sse_server.py"), str(port), str(piece), eol],
                        workdir / f"split-sse-{name}.log")
    env = None
    try:
        harness._wait(lambda: harness.port_open(port), 30, "split SSE peer", peer)
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=port, policy=base_policy(), wasm=wasm)
        env = harness.Envoy(cfg, workdir, name=f"envoy-split-{name}")
        yield env
    finally:
        if env is not None:
            env.stop()
        peer.stop()


def session(who: str) -> dict[str, str]:
    """The peer keeps no sessions: no id (one nobody was issued is refused 404)."""
    return {"Mcp-Protocol-Version": "2025-11-25"}


def only(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text[:300]
    msgs = messages(r)
    assert len(msgs) == 1, f"expected one message, got {msgs!r}"
    return msgs[0]


def test_split_tools_list_is_filtered_and_whole(split_envoy: Any) -> None:
    reader = only(send(split_envoy.url, body=json.dumps(rpc("tools/list", id=2)), token=READER_KEY, headers=session("reader")))
    admin = only(send(split_envoy.url, body=json.dumps(rpc("tools/list", id=3)), token=ADMIN_KEY, headers=session("admin")))
    assert reader["id"] == 2 and admin["id"] == 3
    assert sorted(t["name"] for t in reader["result"]["tools"]) == ["echo", "get-sum"]
    assert sorted(t["name"] for t in admin["result"]["tools"]) == [
        "echo", "get-annotated-message", "get-sum", "get-tiny-image"]
    # multi-byte characters cut across chunks come out intact
    assert all(t["description"].endswith("caf\u00e9 \u2603") for t in admin["result"]["tools"])


def test_split_prompts_list_is_filtered(split_envoy: Any) -> None:
    msg = only(send(split_envoy.url, body=json.dumps(rpc("prompts/list", id=4)), token=READER_KEY, headers=session("reader")))
    assert [p["name"] for p in msg["result"]["prompts"]] == ["simple-prompt"]


def test_split_call_result_passes_unchanged(split_envoy: Any) -> None:
    msg = only(send(split_envoy.url, body=json.dumps(call("echo", {"message": "split \u00e9"}, id=5)),
                    token=READER_KEY, headers=session("reader")))
    assert msg["result"]["content"][0]["text"] == "Echo: split \u00e9"
