"""Rate limits, the loop breaker and budgets, through the compiled filter in a
real Envoy in front of server-everything, driven by the official Python SDK.

The buckets live in proxy-wasm shared data with compare-and-swap, so they are
exact across the worker VMs of one Envoy: with two workers (connections
balanced exactly between them) and 16 SDK sessions racing, a capacity of 100
lets 100 calls through, not 100 per worker.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, policy_variant
from mcp_raw import sdk_session

import harness

RATE_LIMITED = -32012


def with_meters(rate_limits: list[dict[str, Any]] | None = None, budgets: list[dict[str, Any]] | None = None,
                **changes: Any) -> dict[str, Any]:
    p = policy_variant(**changes)
    if rate_limits is not None:
        p["rate_limits"] = rate_limits
    if budgets is not None:
        p["budgets"] = budgets
    return p


async def outcome(session: Any, tool: str, args: dict[str, Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", the JSON-RPC error) of one SDK tool call."""
    from mcp.shared.exceptions import MCPError

    try:
        return "ok", await session.call_tool(tool, args)
    except MCPError as e:
        return "error", e.error


@pytest.fixture(scope="module")
def two_workers(workdir: Path, wasm: Path, mcp_server: harness.McpServer) -> Any:
    """An Envoy with two workers, each new connection handed to the less busy
    one (exact balance), enforcing a global cap of 100 echo calls an hour."""
    policy = with_meters([{"id": "echo-cap", "key": ["global"], "tools": ["echo"],
                           "capacity": 100, "per_seconds": 3600}])
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
    for listener in cfg["static_resources"]["listeners"]:
        listener["connection_balance_config"] = {"exact_balance": {}}
    env = harness.Envoy(cfg, workdir, name="envoy-rate-2w", concurrency=2)
    yield env
    env.stop()


def test_a_capacity_of_100_lets_exactly_100_through_across_two_workers(two_workers: harness.Envoy) -> None:
    results: list[tuple[str, Any]] = []

    async def client(n: int) -> None:
        async with sdk_session(two_workers.url, ADMIN_KEY) as s:
            for i in range(20):
                results.append(await outcome(s, "echo", {"message": f"c{n}-{i}"}))

    async def race() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(16):
                tg.start_soon(client, n)

    anyio.run(race)
    passed = [r for kind, r in results if kind == "ok"]
    refused = [r for kind, r in results if kind == "error"]
    assert len(results) == 320
    assert len(passed) == 100, f"{len(passed)} passed"
    assert all(e.code == RATE_LIMITED and e.data["rule"] == "echo-cap" for e in refused), refused[:3]
    assert all(e.data["retry_after_ms"] > 0 for e in refused)
    assert two_workers.stat("wasmcustom.mcp_firewall.rate_limited.echo-cap") == 220


def test_a_denied_call_consumes_nothing(envoy_for: Any) -> None:
    env = envoy_for(with_meters([{"id": "per-agent", "key": ["subject"], "tools": ["*"],
                                  "capacity": 2, "per_seconds": 3600}]))

    async def go() -> list[tuple[str, Any]]:
        async with sdk_session(env.url, READER_KEY) as s:
            denied = [await outcome(s, "get-env", {}) for _ in range(5)]
            assert all(k == "error" and e.code == -32010 for k, e in denied), denied
            return [await outcome(s, "echo", {"message": str(i)}) for i in range(3)]

    kinds = [k for k, _ in anyio.run(go)]
    assert kinds == ["ok", "ok", "error"]


def test_the_loop_breaker_refuses_the_same_call_repeated(envoy_for: Any) -> None:
    env = envoy_for(with_meters([{"id": "loop", "key": ["subject", "tool", "arguments"], "tools": ["*"],
                                  "capacity": 3, "per_seconds": 600}]))

    async def go() -> tuple[list[str], tuple[str, Any], tuple[str, Any]]:
        async with sdk_session(env.url, ADMIN_KEY) as s:
            same = [(await outcome(s, "get-sum", {"a": 1, "b": 2}))[0] for _ in range(4)]
            other_args = await outcome(s, "get-sum", {"a": 2, "b": 2})
            reordered = await outcome(s, "get-sum", {"b": 2, "a": 1})
            return same, other_args, reordered

    same, other_args, reordered = anyio.run(go)
    assert same == ["ok", "ok", "ok", "error"]
    assert other_args[0] == "ok"
    # The same arguments in another member order are the same call.
    assert reordered[0] == "error" and reordered[1].data["rule"] == "loop"


def test_a_budget_counts_costs_says_what_is_left_and_when_it_resets(envoy_for: Any) -> None:
    env = envoy_for(with_meters(budgets=[{"id": "daily", "key": ["subject"], "tools": ["*"], "period": "day",
                                          "limit": 5, "costs": {"get-sum": 3}, "expose_remaining": True}]))
    seen: list[Any] = []

    async def go() -> list[tuple[str, Any]]:
        async with sdk_session(env.url, ADMIN_KEY, seen=seen) as s:
            return [await outcome(s, "get-sum", {"a": 1, "b": 1}),
                    await outcome(s, "echo", {"message": "x"}),
                    await outcome(s, "get-sum", {"a": 1, "b": 1}),
                    await outcome(s, "echo", {"message": "y"})]

    results = anyio.run(go)
    assert [k for k, _ in results] == ["ok", "ok", "error", "ok"]
    err = results[2][1]
    assert err.code == RATE_LIMITED and err.message == "budget exhausted" and err.data["rule"] == "daily"
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).date()
    assert err.data["resets_at"] == f"{tomorrow.isoformat()}T00:00:00Z"
    remaining = [h.get("x-mcp-firewall-budget-remaining") for m, st, h in seen
                 if m == "POST" and "x-mcp-firewall-budget-remaining" in h]
    # 5 - 3, then - 1, (refused: no header), then - 1.
    assert remaining == ["2", "1", "0"], remaining


def test_dry_run_counts_but_never_refuses(envoy_for: Any) -> None:
    env = envoy_for(with_meters([{"id": "tiny", "key": ["subject"], "tools": ["echo"],
                                  "capacity": 1, "per_seconds": 3600}], mode="dry_run"))
    seen: list[Any] = []

    async def go() -> list[str]:
        async with sdk_session(env.url, ADMIN_KEY, seen=seen) as s:
            return [(await outcome(s, "echo", {"message": str(i)}))[0] for i in range(3)]

    assert anyio.run(go) == ["ok", "ok", "ok"]
    notes = [h.get("x-mcp-firewall-dry-run") for m, st, h in seen if "x-mcp-firewall-dry-run" in h]
    assert notes.count("deny rule=tiny") == 2, notes
