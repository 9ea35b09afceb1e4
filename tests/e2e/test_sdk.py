"""What an ordinary MCP client sees through the firewall.

The client is the official Python SDK (`mcp` on PyPI), unmodified:
`mcp.ClientSession` over `mcp.client.streamable_http.streamable_http_client`; the
caller's identity goes in through the headers of the `httpx2.AsyncClient` handed
to it. The server is `@modelcontextprotocol/server-everything` (it answers every
request with SSE, so the list filtering below is on SSE responses).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, policy_variant
from mcp import MCPError
from mcp_raw import sdk_session

import harness


def run(fn: Any, *args: Any) -> Any:
    return anyio.run(fn, *args)


async def tool_names(url: str, token: str | None) -> set[str]:
    async with sdk_session(url, token) as s:
        return {t.name for t in (await s.list_tools()).tools}


def test_allowed_call_returns_the_server_result(envoy: Any, mcp_server: Any) -> None:
    async def go() -> Any:
        async with sdk_session(envoy.url, READER_KEY) as s:
            await s.list_tools()  # the SDK lists tools once on its first call_tool: do it now
            before = envoy.upstream_posts()
            res = await s.call_tool("echo", {"message": "hello through the firewall"})
            return res, envoy.upstream_posts() - before

    res, posts = run(go)
    assert not res.is_error
    assert [c.text for c in res.content] == ["Echo: hello through the firewall"]
    assert posts == 1, "the allowed call must reach the server exactly once"


def test_denied_call_names_the_rule_and_never_reaches_the_server(envoy: Any, mcp_server: Any) -> None:
    async def go() -> Any:
        async with sdk_session(envoy.url, READER_KEY) as s:
            await s.list_tools()
            before = (envoy.upstream_posts(), mcp_server.posts_received())
            with pytest.raises(MCPError) as ei:
                await s.call_tool("get-env", {})
            after = (envoy.upstream_posts(), mcp_server.posts_received())
            # the session is still usable after a denial
            ok = await s.call_tool("echo", {"message": "still here"})
            return ei.value, before, after, ok

    err, before, after, ok = run(go)
    assert err.code == -32010, err
    assert isinstance(err.data, dict) and err.data.get("rule") == "no-env", err.data
    assert err.data.get("reason"), err.data
    assert after == before, f"the denied call reached the server: {before} -> {after}"
    assert [c.text for c in ok.content] == ["Echo: still here"]


def test_call_outside_the_role_is_denied_by_default(envoy: Any) -> None:
    async def go() -> MCPError:
        async with sdk_session(envoy.url, READER_KEY) as s:
            with pytest.raises(MCPError) as ei:
                await s.call_tool("get-tiny-image", {})
            return ei.value

    err = run(go)
    assert err.code == -32010
    assert err.data.get("rule") == "default-deny"


def test_admin_may_call_what_the_reader_may_not(envoy: Any) -> None:
    async def go() -> Any:
        async with sdk_session(envoy.url, ADMIN_KEY) as s:
            return await s.call_tool("get-sum", {"a": 2, "b": 40}), await s.call_tool("get-tiny-image", {})

    total, image = run(go)
    assert not total.is_error and "42" in total.content[0].text
    assert not image.is_error and any(c.type == "image" for c in image.content)


def test_tools_list_is_filtered_per_role(envoy: Any, mcp_server: Any) -> None:
    unfiltered = run(tool_names, mcp_server.url, None)  # straight to the server, no Envoy
    reader = run(tool_names, envoy.url, READER_KEY)
    admin = run(tool_names, envoy.url, ADMIN_KEY)

    assert {"echo", "get-sum", "get-env", "get-tiny-image"} <= unfiltered, unfiltered
    assert reader == {"echo", "get-sum"}, reader
    # admin-tools allows "*"; no-env denies get-env unconditionally for everyone.
    assert admin == unfiltered - {"get-env"}, (admin, unfiltered)
    assert reader < admin


async def catalogue(url: str, token: str | None) -> tuple[set[str], set[str]]:
    async with sdk_session(url, token) as s:
        prompts = {p.name for p in (await s.list_prompts()).prompts}
        resources = {str(r.uri) for r in (await s.list_resources()).resources}
        return prompts, resources


def test_prompts_list_is_filtered_per_role(envoy: Any, mcp_server: Any) -> None:
    all_prompts, _ = run(catalogue, mcp_server.url, None)
    assert "simple-prompt" in all_prompts and len(all_prompts) > 1, all_prompts
    assert run(catalogue, envoy.url, READER_KEY)[0] == {"simple-prompt"}
    assert run(catalogue, envoy.url, ADMIN_KEY)[0] == {"simple-prompt"}


def test_resources_list_is_filtered_per_role(envoy: Any, mcp_server: Any) -> None:
    _, all_resources = run(catalogue, mcp_server.url, None)
    # rule "docs": admin, resources demo://resource/static/document/f*
    docs = {u for u in all_resources if u.startswith("demo://resource/static/document/f")}
    assert docs and docs != all_resources, all_resources
    assert run(catalogue, envoy.url, READER_KEY)[1] == set()
    assert run(catalogue, envoy.url, ADMIN_KEY)[1] == docs


def test_resources_read_follows_the_resource_rules(envoy: Any) -> None:
    async def go(token: str) -> Any:
        async with sdk_session(envoy.url, token) as s:
            try:
                return await s.read_resource("demo://resource/static/document/features.md")
            except MCPError as e:
                return e

    admin, reader = run(go, ADMIN_KEY), run(go, READER_KEY)
    assert not isinstance(admin, MCPError), admin
    assert admin.contents, admin
    assert isinstance(reader, MCPError) and reader.code == -32010, reader
    assert reader.data.get("rule") == "default-deny", reader.data


def test_missing_identity_cannot_even_initialize(envoy: Any, mcp_server: Any) -> None:
    async def go() -> None:
        async with sdk_session(envoy.url, None):
            pass

    before = envoy.upstream_requests()
    with pytest.raises(BaseException) as ei:  # MCPError, possibly wrapped in an ExceptionGroup
        run(go)
    assert "MCPError" in repr(ei.value) or isinstance(ei.value, MCPError), repr(ei.value)
    assert envoy.upstream_requests() == before


def test_sdk_get_stream_and_delete_pass_the_firewall(envoy: Any) -> None:
    """The SDK opens GET /mcp (server-to-client SSE) and DELETEs the session on close."""
    seen: list[Any] = []

    async def go() -> None:
        async with sdk_session(envoy.url, READER_KEY, seen=seen) as s:
            await s.list_tools()

    run(go)
    methods = {(m, status) for m, status, _ in seen}
    assert ("DELETE", 200) in methods, seen
    assert all(status < 400 for _, status, _ in seen), seen


def test_dry_run_reports_the_deny_but_the_call_reaches_the_server(workdir: Any, mcp_server: Any) -> None:
    # Its own Envoy, stopped before its log is read: Envoy flushes log files on a
    # timer (10 s by default) and at exit, so reading after stop() is deterministic.
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy_variant(mode="dry_run"))
    env = harness.Envoy(cfg, workdir, name="envoy-dry-run-log")
    seen: list[Any] = []

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY, seen=seen) as s:
            await s.list_tools()
            before = env.upstream_posts()
            del seen[:]
            res = await s.call_tool("get-env", {})
            return res, env.upstream_posts() - before

    try:
        res, posts = run(go)
    finally:
        env.stop()
    assert not res.is_error, res
    # get-env ran on the server: its result lists the server's environment (PORT is set).
    assert any("PORT" in (c.text or "") for c in res.content), res
    assert posts >= 1, "dry_run must not block"
    verdicts = [h.get("x-mcp-firewall-dry-run") for m, _, h in seen if m == "POST"]
    assert any(v and v.startswith("deny") and "rule=no-env" in v for v in verdicts), seen
    logged = [line for line in env.log_text().splitlines() if "dry-run" in line and "no-env" in line]
    assert logged, "the would-be decision must be logged"


def test_dry_run_does_not_mark_allowed_calls_as_denied(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(mode="dry_run"))
    seen: list[Any] = []

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY, seen=seen) as s:
            del seen[:]
            return await s.call_tool("echo", {"message": "dry"})

    res = run(go)
    assert [c.text for c in res.content] == ["Echo: dry"]
    verdicts = [h.get("x-mcp-firewall-dry-run") for m, _, h in seen if m == "POST"]
    assert not any(v and v.startswith("deny") for v in verdicts), seen


def test_dry_run_does_not_filter_tools_list(envoy_for: Any, mcp_server: Any) -> None:
    """dry_run "computes and audits every decision but never blocks" (POLICY.md): a
    trial policy must not change what clients see, so lists pass unfiltered."""
    unfiltered = run(tool_names, mcp_server.url, None)
    env = envoy_for(policy_variant(mode="dry_run"))
    assert run(tool_names, env.url, READER_KEY) == unfiltered
