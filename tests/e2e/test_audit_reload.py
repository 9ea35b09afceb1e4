"""A policy swap loses no audit event (issue #18, item 2), end to end.

envoy/hot-reload.yaml (ECDS from a watched file, as test_hot_reload.py and
test_reload_more.py use it) plus a static cluster for the project's collector
(`mcp-firewall collector`). The policy audits with a long `flush_ms`, so when
the policy is swapped the old policy's root context still holds buffered
events, and one call is in flight across the swap. Envoy keeps the VM, starts a
root context for the new policy and ends the old one: what the old one held
must reach the collector through the new one, and `mcp-firewall audit verify`
must find the chain whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from audit_support import Collector, audit_stats, collector_cluster, method, read_events, verify, wait_until
from conftest import READER_KEY, base_policy
from mcp_raw import call, sdk_session, send
from test_reload_more import LONG, HotEnvoy, hot  # noqa: F401 - hot: the fixture


def audited(policy: dict[str, Any]) -> dict[str, Any]:
    policy["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
                       "flush_ms": 5000, "max_batch": 1000}
    return policy


@pytest.fixture()
def hot_audited(hot: Callable[..., HotEnvoy]) -> Callable[..., HotEnvoy]:
    """test_reload_more's hot-reload Envoy with the collector's cluster added."""
    def start(policy: dict[str, Any], col: Collector, concurrency: int = 1) -> HotEnvoy:
        return hot(policy, clusters=(collector_cluster(col.port),), concurrency=concurrency)

    return start


def test_policy_swap_with_a_call_in_flight_loses_no_seq(hot_audited: Any, workdir: Path) -> None:
    col = Collector(workdir, "audit-reload")
    col.start()
    try:
        old = audited(base_policy())
        old["rules"].append({"id": "long-ops", "effect": "allow", "roles": ["reader"], "tools": [LONG]})
        old["rules"] = [r for r in old["rules"] if r["id"] != "long-ops-need-approval"]
        new = json.loads(json.dumps(old))
        new["rules"].append({"id": "no-sum", "effect": "deny", "tools": ["get-sum"]})
        h = hot_audited(old, col)

        # Denied calls under the old policy: their events wait for flush_ms (5 s).
        for i in range(20):
            r = send(h.url, body=json.dumps(call("get-env", {"n": i}, id=i)), token=READER_KEY)
            assert r.status_code == 200 and "-32010" in r.text, r.text[:300]
        assert read_events(col.out) == [], "premise: nothing delivered before the swap"

        async def go() -> dict[str, Any]:
            got: dict[str, Any] = {}
            progressed = anyio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                progressed.set()

            async with sdk_session(h.url, READER_KEY) as s:
                await s.list_tools()

                async def long_call() -> None:
                    got["result"] = await s.call_tool(LONG, {"duration": 3, "steps": 3},
                                                      progress_callback=on_progress)
                    got["done_at"] = time.monotonic()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(long_call)
                    with anyio.fail_after(20):
                        await progressed.wait()  # in flight
                    await anyio.to_thread.run_sync(h.swap, new)
                    got["reloaded_at"] = time.monotonic()
            return got

        got = anyio.run(go)
        assert got["reloaded_at"] < got["done_at"], "the reload must land while the call is in flight"
        # Calls under the new policy.
        for i in range(5):
            r = send(h.url, body=json.dumps(call("get-sum", {"a": 1, "b": i}, id=100 + i)), token=READER_KEY)
            assert r.status_code == 200 and "no-sum" in r.text, r.text[:300]

        # 20 + initialize, initialized, tools/list, the long call, the session's DELETE + 5.
        total = 20 + 5 + 5
        events = wait_until(lambda: read_events(col.out), lambda e: len({x["seq"] for x in e}) >= total, 40,
                            f"{total} events", lambda e: f"{len(e)} events, stats {audit_stats(h.env)}")
        seqs = sorted({e["seq"] for e in events})
        assert seqs == list(range(1, total + 1)), seqs
        first = next(e for e in events if e["seq"] == 1)
        assert first.get("segment", {}).get("reason") == "process_start", first
        v = verify(col.out)
        assert v.returncode == 0, v.stdout + v.stderr
        assert "not announced" not in v.stdout
        long_calls = [e for e in events if method(e) == "tools/call" and e["request"]["target"] == LONG]
        assert len(long_calls) == 1 and long_calls[0]["decision"]["rule"] == "long-ops", long_calls
        stats = audit_stats(h.env)
        assert stats["dropped"] == 0, stats
    finally:
        col.stop()
