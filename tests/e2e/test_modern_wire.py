"""The 2026-07-28 ("modern") MCP wire through the firewall, with the SDK's own
high-level client: `mcp.Client` (mode "auto": `server/discover`, then
stateless requests that carry `Mcp-Method` / `Mcp-Name` headers the filter must
check against the body) against the JSON peer (the same SDK's MCPServer).

`server/discover` is part of the filter's base protocol (with initialize, ping
and notifications/*), so the modern wire works with any policy; a policy that
denies `server/discover` makes the SDK fall back to the 2025-11-25 handshake.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import READER_KEY, base_policy
from mcp import Client, MCPError
from test_json_peer import json_peer  # noqa: F401  (fixture)

import harness

MODERN = "2026-07-28"


def modern_policy() -> dict[str, Any]:
    return base_policy()


def no_discover_policy() -> dict[str, Any]:
    p = base_policy()
    p["rules"].insert(0, {"id": "no-discover", "effect": "deny", "methods": ["server/discover"]})
    return p


async def session_through(url: str, token: str, sent: list[dict[str, str]]) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async def keep(req: Any) -> None:
        sent.append({k: v for k, v in req.headers.items() if k.startswith("mcp-")})

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                  event_hooks={"request": [keep]}) as hc:
        async with Client(streamable_http_client(url, http_client=hc)) as c:
            version = c.session.protocol_version
            names = {t.name for t in (await c.list_tools()).tools}
            echoed = await c.call_tool("echo", {"message": "modern"})
            with pytest.raises(MCPError) as ei:
                await c.call_tool("get-env", {})
            return version, names, echoed, ei.value


def test_modern_wire_through_the_firewall(json_peer: int, workdir: Any, wasm: Any) -> None:  # noqa: F811
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=modern_policy(), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-modern")
    sent: list[dict[str, str]] = []
    try:
        version, names, echoed, denied = anyio.run(session_through, env.url, READER_KEY, sent)
    finally:
        env.stop()
    assert version == MODERN, f"negotiated {version} through the firewall"
    assert {"mcp-method": "tools/call", "mcp-name": "echo", "mcp-protocol-version": MODERN} in sent, sent
    assert names == {"echo", "get-sum"}
    assert [c.text for c in echoed.content] == ["Echo: modern"]
    assert denied.code == -32010 and denied.data.get("rule") == "no-env"


def test_with_discover_denied_the_sdk_falls_back_to_the_handshake(json_peer: int, workdir: Any,  # noqa: F811
                                                                  wasm: Any) -> None:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=no_discover_policy(), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-modern-default")
    sent: list[dict[str, str]] = []
    try:
        version, names, _, _ = anyio.run(session_through, env.url, READER_KEY, sent)
    finally:
        env.stop()
    assert version == "2025-11-25", version
    assert names == {"echo", "get-sum"}
