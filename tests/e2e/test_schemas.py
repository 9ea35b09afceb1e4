"""Calls and results checked against the schemas the server declared, end to
end: the compiled filter in a real Envoy, a server on the official Python SDK
that declares an `inputSchema` with `$defs`/`$ref` and
`additionalProperties: false` and an `outputSchema` it breaks on purpose
(schema_server.py), the official SDK as the client.

Policy: `"schemas": {"input": "enforce", "output": "enforce"}`.

- Before any list the tools' schemas are unknown: a call is refused
  (-32010, rule `input-schema`, `unseen_calls: refuse`).
- After one list (in any session: the schemas are remembered for the
  upstream), a valid call runs; a call with an extra member is refused with
  the pointer `/extra`, one with a wrong nested type with `/items/2/name`;
  none of the refused calls reach the server (Envoy's upstream counter).
- A result whose `structuredContent` breaks the `outputSchema` is replaced
  by -32010 (rule `output-schema`, pointer `/temp`); a valid one reaches the
  SDK client, which validates it itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from conftest import ADMIN_KEY, base_policy
from mcp_raw import call, messages, open_session, rpc, sdk_session, send

import harness

HERE = Path(__file__).resolve().parent


def schemas_policy() -> dict[str, Any]:
    p = base_policy()
    p["rules"] = [
        {"id": "catalogue", "effect": "allow", "methods": ["tools/list"]},
        {"id": "agents", "effect": "allow", "roles": ["admin"], "tools": ["*"]},
    ]
    p["schemas"] = {"input": "enforce", "output": "enforce"}
    return p


def raw_call(url: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A call in a fresh session that never listed (the JSON-RPC answer)."""
    sess = open_session(url, ADMIN_KEY)
    r = send(url, body=json.dumps(call(tool, arguments, id=7)), token=ADMIN_KEY, headers=sess)
    assert r.status_code == 200, r.text
    return messages(r)[-1]


def refusal(answer: dict[str, Any]) -> tuple[Any, ...]:
    """(code, rule, pointer) of a refusal, or what the server answered."""
    if "error" in answer:
        err = answer["error"]
        data = err.get("data", {})
        return err.get("code"), data.get("rule"), data.get("pointer")
    return ("ran", answer["result"]["content"][0]["text"])


def test_calls_and_results_are_held_to_the_declared_schemas(workdir: Path, wasm: Path) -> None:
    from mcp import MCPError

    port = harness.free_port()
    server = harness.Proc(f"schemas-{port}", [sys.executable, str(HERE / "schema_server.py"), str(port)],
                          workdir / f"schemas-{port}.log")
    env = None
    try:
        harness._wait(lambda: harness.port_open(port), 30, "schema server", server)
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=port, policy=schemas_policy(), wasm=wasm)
        env = harness.Envoy(cfg, workdir, name="envoy-schemas")

        # Before any list: the schema is unknown, the call is refused.
        before = raw_call(env.url, "add_order", {"customer": "acme"})
        assert refusal(before) == (-32010, "input-schema", None), before
        assert "list the tools, then call again" in before["error"]["data"]["reason"]

        async def listing() -> tuple[list[str], Any, Any, MCPError]:
            async with sdk_session(env.url, ADMIN_KEY) as s:
                names = [t.name for t in (await s.list_tools()).tools]
                ok = await s.call_tool("add_order", {"customer": "acme", "items": [{"name": "tea", "qty": 2}]})
                weather = await s.call_tool("weather", {"city": "Oslo"})
                try:
                    await s.call_tool("add_order", {"customer": "acme", "extra": "x"})
                except MCPError as e:
                    return names, ok, weather, e
                raise AssertionError("a call with an extra member was not refused")

        names, ok, weather, refused = anyio.run(listing)
        assert names == ["add_order", "weather"], names
        assert ok.content[0].text == "ran add_order", ok
        assert weather.structured_content == {"temp": 21.5}, weather
        assert refused.code == -32010, refused.error
        assert refused.data["rule"] == "input-schema" and refused.data["pointer"] == "/extra", refused.data
        assert "additionalProperties" in refused.data["reason"], refused.data

        upstream_before = env.stat("cluster.mcp_server.upstream_rq_total")
        after = {
            "extra_member": refusal(raw_call(env.url, "add_order", {"customer": "a", "extra": 1})),
            "nested_wrong_type": refusal(raw_call(env.url, "add_order", {
                "customer": "a", "items": [{"name": "a"}, {"name": "b"}, {"name": 3}]})),
            "missing_required": refusal(raw_call(env.url, "add_order", {"items": []})),
        }
        assert after == {
            "extra_member": (-32010, "input-schema", "/extra"),
            "nested_wrong_type": (-32010, "input-schema", "/items/2/name"),
            "missing_required": (-32010, "input-schema", ""),
        }, after
        # Only the three sessions' initialize (and initialized) went upstream.
        went = env.stat("cluster.mcp_server.upstream_rq_total") - upstream_before
        assert went == 6, went

        # The server breaks its own output contract: the result is replaced.
        broken = raw_call(env.url, "weather", {"city": "Lies"})
        assert refusal(broken) == (-32010, "output-schema", "/temp"), broken
        assert "warm" not in json.dumps(broken), broken

        stats = env.stats(r"^wasmcustom\.mcp_firewall\.schemas\.")
        assert stats.get("wasmcustom.mcp_firewall.schemas.refused") == 5, stats
        assert stats.get("wasmcustom.mcp_firewall.schemas.results_blocked") == 1, stats
        assert stats.get("wasmcustom.mcp_firewall.schemas.remember_failed", 0) == 0, stats
        assert stats.get("wasmcustom.mcp_firewall.schemas.unverifiable", 0) == 0, stats
    finally:
        if env is not None:
            env.stop()
        server.stop()


def test_two_servers_on_one_cluster_keep_their_schemas_by_route(workdir: Path, wasm: Path) -> None:
    """One cluster, two MCP servers on two paths, each path a named route:
    listing the looser server (last) does not loosen the checks of calls to
    the stricter one, and the looser one keeps its own schema."""
    port = harness.free_port()
    server = harness.Proc(f"schemas-twin-{port}",
                          [sys.executable, str(HERE / "schema_server.py"), str(port), "--loose-twin"],
                          workdir / f"schemas-twin-{port}.log")
    env = None
    try:
        harness._wait(lambda: harness.port_open(port), 30, "schema server", server)
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=port, policy=schemas_policy(), wasm=wasm)
        vhost = harness._hcm(cfg)["route_config"]["virtual_hosts"][0]
        catch_all = vhost["routes"][-1]
        assert catch_all["match"] == {"prefix": "/"}, catch_all
        catch_all["name"] = "orders-strict"
        loose_route = {**catch_all, "name": "orders-loose", "match": {"prefix": "/loose/"}}
        vhost["routes"].insert(len(vhost["routes"]) - 1, loose_route)
        env = harness.Envoy(cfg, workdir, name="envoy-schemas-twin")
        loose_url = env.url.replace("/mcp", "/loose/mcp")

        async def list_both() -> tuple[list[str], list[str]]:
            async with sdk_session(env.url, ADMIN_KEY) as s:
                strict = [t.name for t in (await s.list_tools()).tools]
            async with sdk_session(loose_url, ADMIN_KEY) as s:
                loose = [t.name for t in (await s.list_tools()).tools]
            return strict, loose

        strict_names, loose_names = anyio.run(list_both)
        assert strict_names == ["add_order", "weather"], strict_names
        assert loose_names == ["add_order"], loose_names

        extra = {"customer": "a", "extra": 1}
        got = {
            "strict": refusal(raw_call(env.url, "add_order", extra)),
            "loose": refusal(raw_call(loose_url, "add_order", extra)),
        }
        assert got == {
            "strict": (-32010, "input-schema", "/extra"),
            "loose": ("ran", "ran add_order"),
        }, got

        # Envoy matches `/%6coose/mcp` with the strict route's `/` prefix and
        # the server decodes it to the loose app: a list read so would be
        # filed under the strict route. On a named route such paths are
        # refused before anything reaches the server.
        base = env.url.removesuffix("/mcp")
        upstream_before = env.stat("cluster.mcp_server.upstream_rq_total")
        # (httpx resolves dot segments itself: those are tested natively.)
        for path in ("/%6coose/mcp", "/loose%2Fmcp"):
            r = send(base + path, body=json.dumps(rpc("tools/list", {}, id=3)), token=ADMIN_KEY)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert r.json()["error"]["code"] == -32600, (path, r.text)
            assert "the request path holds a percent-escape" in r.text, (path, r.text)
        assert env.stat("cluster.mcp_server.upstream_rq_total") == upstream_before
        assert refusal(raw_call(env.url, "add_order", extra)) == (-32010, "input-schema", "/extra")
    finally:
        if env is not None:
            env.stop()
        server.stop()
