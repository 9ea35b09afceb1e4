"""Human approval end to end: a real Envoy with the compiled filter, the real
approval service (`mcp-firewall approvals serve` on a temp SQLite file),
server-everything, the official MCP Python SDK as the client, and Debian's
headless Chromium clicking on the approvers' page (peers/browser/).

HOLD mode: the call pauses; a person approves it on the page; the held call
completes (the time from the click to the call's completion is printed); a
denial on the page refuses it; a request nobody decides expires (short
`ttl_ms`) and the held call is refused; the service down is a refusal counted
as `approval.unavailable`. ASYNC mode: the first call gets -32011 with an
`approval_id`; approved through the service's decision API, exactly one retry
passes; a second identical retry is a new request; other arguments are a new
request. Every refused call leaves the server's request counter unchanged.
Every process started here is stopped and its temp dir removed.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import READER_KEY, policy_variant
from mcp_raw import sdk_session
from test_approvals_page import ALICE, CLI, FILTER, Service, browse, ensure_chromium, ensure_driver

import harness

APPROVAL = -32011
TOOL = "get-sum"
STAT = "wasmcustom.mcp_firewall.approval."


def approval_policy(**approval: Any) -> dict[str, Any]:
    p = policy_variant()
    # The reader may sum, but only with a person's approval (approve beats allow).
    p["rules"].append({"id": "sum-needs-approval", "effect": "approve", "roles": ["reader"], "tools": [TOOL]})
    p["approval"] = {"cluster": "approvals", "token": FILTER, **approval}
    return p


def envoy_with(policy: dict[str, Any], service_port: int, workdir: Path, wasm: Path,
               mcp_server: harness.McpServer, name: str) -> harness.Envoy:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
    cfg["static_resources"]["clusters"].append({
        "name": "approvals", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "approvals", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": service_port}}}}]}]},
    })
    return harness.Envoy(cfg, workdir, name=name)


async def call(url: str, args: dict[str, Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", the JSON-RPC error) of one SDK tool call."""
    from mcp.shared.exceptions import MCPError

    async with sdk_session(url, READER_KEY) as s:
        try:
            return "ok", await s.call_tool(TOOL, args)
        except MCPError as e:
            return "error", e.error


@pytest.fixture(scope="module")
def setup(wasm: Path, mcp_server: harness.McpServer):
    if not CLI.exists():
        pytest.fail(f"{CLI} missing: cargo build --release -p mcp-firewall-cli")
    ensure_chromium()
    ensure_driver()
    with tempfile.TemporaryDirectory(prefix="mcpfw-approve-e2e-") as d:
        workdir = Path(d)
        svc = Service(workdir)
        envoys: dict[str, harness.Envoy] = {}
        try:
            # The SDK's read timeout (60 s) exceeds the hold's 20 s.
            envoys["hold"] = envoy_with(approval_policy(mode="hold", timeout_ms=20_000), svc.port,
                                        workdir, wasm, mcp_server, "envoy-hold")
            envoys["expiring"] = envoy_with(approval_policy(mode="hold", timeout_ms=10_000, ttl_ms=1_500),
                                            svc.port, workdir, wasm, mcp_server, "envoy-expiring")
            envoys["async"] = envoy_with(approval_policy(mode="async", timeout_ms=2_000), svc.port,
                                         workdir, wasm, mcp_server, "envoy-async")
            envoys["down"] = envoy_with(approval_policy(mode="hold", timeout_ms=2_000), harness.free_port(),
                                        workdir, wasm, mcp_server, "envoy-down")
            yield svc, workdir, envoys
        finally:
            for e in envoys.values():
                e.stop()
            svc.proc.stop()


def held_call_decided_on_the_page(svc: Service, workdir: Path, env: harness.Envoy, args: dict[str, Any],
                                  decision: str, reason: str) -> tuple[tuple[str, Any], dict[str, Any], float]:
    """Start the call, let the browser decide it once it shows up; returns the
    call's outcome, the browser's click result and the wall time it completed at."""
    out: dict[str, Any] = {}

    async def go() -> None:
        async def client() -> None:
            out["outcome"] = await call(env.url, args)
            out["done_ms"] = time.time() * 1000

        async def person() -> None:
            run = await anyio.to_thread.run_sync(lambda: browse(svc, workdir, [
                {"do": "login", "token": ALICE},
                {"do": "decide_when_pending", "tool": TOOL, "decision": decision, "reason": reason},
            ]))
            out["click"] = run["results"][1]

        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            tg.start_soon(person)

    anyio.run(go)
    return out["outcome"], out["click"], out["done_ms"]


def test_hold_a_click_on_the_page_releases_the_held_call(setup, mcp_server: harness.McpServer) -> None:
    svc, workdir, envoys = setup
    env = envoys["hold"]
    before = env.upstream_posts()
    outcome, click, done_ms = held_call_decided_on_the_page(svc, workdir, env, {"a": 2, "b": 40},
                                                            "approve", "checked")
    assert outcome[0] == "ok", outcome
    assert "42" in json.dumps(outcome[1].model_dump()), outcome
    figure = done_ms - click["clicked_at_ms"]
    print(f"\nclick -> held call completed: {figure:.0f} ms (hold mode, page approve, SQLite)")
    assert 0 < figure < 5_000, figure
    assert env.stat(STAT + "requested") >= 1 and env.stat(STAT + "granted") == 1
    assert env.upstream_posts() > before
    status, events = svc.call("GET", f"/v1/approvals/{click['id']}/events")
    assert [e["kind"] for e in events["events"]] == ["requested", "approved", "used"], events


def test_hold_a_denial_on_the_page_refuses_the_call(setup) -> None:
    svc, workdir, envoys = setup
    env = envoys["hold"]
    refused_before = env.stat(STAT + "refused")
    outcome, click, _ = held_call_decided_on_the_page(svc, workdir, env, {"a": 5, "b": 5}, "deny", "no sums today")
    assert outcome[0] == "error", outcome
    err = outcome[1]
    assert err.code == APPROVAL and err.message == "denied by approver", err
    assert err.data["rule"] == "sum-needs-approval" and err.data["approval_id"] == click["id"], err
    assert "no sums today" in err.data["reason"] and "alice@example.com" in err.data["reason"], err
    assert env.stat(STAT + "refused") == refused_before + 1


def test_hold_an_undecided_request_expires_and_the_call_is_refused(setup) -> None:
    _, _, envoys = setup
    env = envoys["expiring"]
    before = env.upstream_posts()
    t0 = time.monotonic()
    outcome = anyio.run(call, env.url, {"a": 1, "b": 1})
    waited = time.monotonic() - t0
    assert outcome[0] == "error" and outcome[1].code == APPROVAL, outcome
    assert outcome[1].message == "approval expired", outcome
    assert 1.0 < waited < 8.0, waited  # the ttl (1.5 s), not the hold (10 s)
    # initialize and notifications/initialized went on; the call did not.
    assert env.upstream_posts() - before == 2


def test_the_service_down_is_a_counted_refusal(setup) -> None:
    _, _, envoys = setup
    env = envoys["down"]
    before = env.upstream_posts()
    outcome = anyio.run(call, env.url, {"a": 1, "b": 2})
    assert outcome[0] == "error" and outcome[1].code == APPROVAL, outcome
    assert outcome[1].message == "approval unavailable", outcome
    assert outcome[1].data["approval_id"] is None
    assert env.stat(STAT + "unavailable") == 1
    assert env.upstream_posts() - before == 2


def test_async_one_approval_lets_exactly_one_retry_through(setup) -> None:
    svc, _, envoys = setup
    env = envoys["async"]
    args = {"a": 20, "b": 22}
    first = anyio.run(call, env.url, args)
    assert first[0] == "error" and first[1].code == APPROVAL, first
    apr = first[1].data["approval_id"]
    assert first[1].data["state"] == "pending" and apr.startswith("apr_"), first
    # Asking again before a decision finds the same request.
    again = anyio.run(call, env.url, args)
    assert again[1].data["approval_id"] == apr, again
    status, decided = svc.call("POST", f"/v1/approvals/{apr}/decision",
                               {"approve": True, "reason": "fine"}, token=ALICE)
    assert status == 200, decided
    assert svc.call("GET", f"/v1/approvals/{apr}")[1]["state"] == "approved"
    before = env.upstream_posts()
    retry = anyio.run(call, env.url, args)
    assert retry[0] == "ok", retry
    assert env.upstream_posts() - before >= 3  # initialize, initialized, the call
    # The approval is spent: the same call again is a new request.
    before = env.upstream_posts()
    replay = anyio.run(call, env.url, args)
    assert env.upstream_posts() - before == 2, "the replay never reached the server"
    assert replay[0] == "error" and replay[1].code == APPROVAL, replay
    assert replay[1].data["approval_id"] != apr, replay
    # Other arguments: another binding, another request.
    other = anyio.run(call, env.url, {"a": 20, "b": 23})
    assert other[0] == "error" and other[1].data["approval_id"] not in (apr, replay[1].data["approval_id"]), other
    assert env.stat(STAT + "granted") == 1


def test_async_an_approval_that_expired_is_never_used(setup) -> None:
    svc, _, envoys = setup
    env = envoys["async"]
    args = {"a": 7, "b": 8}
    first = anyio.run(call, env.url, args)
    apr = first[1].data["approval_id"]
    # Expire it at the service: it was asked with the service's default ttl,
    # so ask for the same binding's history instead and decide too late by
    # waiting out a request created with a short ttl through the API.
    status, created = svc.call("POST", "/v1/approvals", {
        "binding": {"subject": "reader-bot", "tenant": "", "tool": TOOL,
                    "args_sha256": "0" * 64, "policy_sha256": "0" * 64},
        "rule": "sum-needs-approval", "summary": {"method": "tools/call", "target": TOOL}, "ttl_ms": 200})
    assert status == 201, created
    time.sleep(0.5)
    status, late = svc.call("POST", f"/v1/approvals/{created['approval_id']}/decision",
                            {"approve": True, "reason": "late"}, token=ALICE)
    assert status != 200, late
    # The real call's request is still pending, never approved: refused.
    again = anyio.run(call, env.url, args)
    assert again[0] == "error" and again[1].data["approval_id"] == apr, again
