"""More hot reload through envoy/hot-reload.yaml (ECDS from a watched file), as
test_hot_reload.py does it: the DiscoveryResponse comes from the project's CLI
(`mcp-firewall envoy-config --ecds`) and is swapped in with an atomic rename.

- revoking an API key = removing its line: that key gets 401 within seconds,
  another key keeps working;
- the kill switch turned on by a reload refuses every message (rule
  `kill-switch`), and turned off again lets traffic through;
- a call in flight during a reload finishes under the policy it started with,
  while a new call gets the new policy.

The rendered copy of hot-reload.yaml gets the same POST virtual cluster as
envoy/envoy.yaml (a per-method upstream counter; nothing else changes), so the
tests can prove a refused call never reached the server even while the SDK
holds a GET stream open. Calls go through the official SDK.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, REVOKED_KEY, base_policy, sha256_hex
from mcp import MCPError
from mcp_raw import rpc, sdk_session, send
from test_hot_reload import CLI, STAT_PREFIX, discovery_response, swap_in

import harness

RELOAD_WITHIN_S = 5.0


class HotEnvoy:
    def __init__(self, env: harness.Envoy, ecds_dir: Path, wasm: Path, workdir: Path):
        self.env, self.ecds_dir, self.wasm, self.workdir = env, ecds_dir, wasm, workdir

    @property
    def url(self) -> str:
        return self.env.url

    def upstream_posts(self) -> int:
        return self.env.upstream_posts()

    def reloads(self) -> int:
        return self.env.stats("^" + STAT_PREFIX.replace(".", r"\.") + "config_reload$").get(
            STAT_PREFIX + "config_reload", 0)

    def swap(self, policy: dict[str, Any]) -> float:
        """Swap the policy in; wait until Envoy reports the reload. Returns the swap time."""
        before = self.reloads()
        text = discovery_response(policy, self.wasm, self.workdir)
        t0 = time.monotonic()
        swap_in(self.ecds_dir, text)
        deadline = t0 + RELOAD_WITHIN_S
        while self.reloads() <= before:
            assert time.monotonic() < deadline, f"no ECDS reload within {RELOAD_WITHIN_S}s: " \
                                                f"{self.env.stats('extension_config_discovery')}"
            time.sleep(0.05)
        return t0


@pytest.fixture()
def hot(workdir: Path, wasm: Path, mcp_server: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., HotEnvoy]]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    started: list[harness.Envoy] = []

    def start(policy: dict[str, Any], clusters: tuple[dict[str, Any], ...] = (), concurrency: int = 1) -> HotEnvoy:
        """`clusters`: more static clusters (the audit collector's)."""
        name = f"reload-more-{request.node.name}".replace("[", "-").replace("]", "")
        ecds_dir = workdir / f"ecds-{name}"
        ecds_dir.mkdir(exist_ok=True)
        swap_in(ecds_dir, discovery_response(policy, wasm, workdir))
        cfg = harness.hot_reload_config(mcp_server.port, ecds_dir / "mcp_firewall.json")
        cfg["static_resources"]["clusters"].extend(clusters)
        hcm = harness._hcm(cfg)
        hcm["route_config"]["virtual_hosts"][0]["virtual_clusters"] = [
            {"name": "mcp_post", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]}]
        env = harness.Envoy(cfg, workdir, name=f"envoy-{name}", concurrency=concurrency)
        started.append(env)
        return HotEnvoy(env, ecds_dir, wasm, workdir)

    yield start
    for env in started:
        env.stop()


async def _echo(url: str, token: str, text: str) -> Any:
    async with sdk_session(url, token) as s:
        return await s.call_tool("echo", {"message": text})


# --------------------------------------------------------------------------- key revocation

def _status_with(url: str, token: str) -> int:
    """200 when an SDK session with this key echoes; else the HTTP status the SDK got
    (it surfaces a 401's JSON-RPC body as an MCPError, so the status is read from
    the responses it received)."""
    seen: list[Any] = []

    async def go() -> int:
        async with sdk_session(url, token, seen=seen) as s:
            res = await s.call_tool("echo", {"message": "who am i"})
        assert [c.text for c in res.content] == ["Echo: who am i"], res
        return 200

    try:
        return anyio.run(go)
    except BaseException:  # noqa: BLE001 - the SDK raises exception groups
        statuses = [status for _, status, _ in seen]
        if 401 in statuses:
            return 401
        raise


def test_revoked_key_gets_401_within_seconds_other_key_still_works(hot: Any) -> None:
    with_key = base_policy()
    with_key["identity"]["api_keys"].append(
        {"sha256": sha256_hex(REVOKED_KEY), "subject": "e2e-soon-revoked", "roles": ["reader"]})
    h = hot(with_key)
    assert _status_with(h.url, REVOKED_KEY) == 200, "the key works before it is revoked"

    t0 = h.swap(base_policy())  # the same policy without that line
    deadline = t0 + RELOAD_WITHIN_S
    while True:
        # raw request: checks the HTTP status alone, no session needed
        before = h.upstream_posts()
        r = send(h.url, body=json.dumps(rpc("tools/list", id=1)), token=REVOKED_KEY)
        if r.status_code == 401:
            assert h.upstream_posts() == before, "a 401 request reached the server"
            break
        assert time.monotonic() < deadline, f"revoked key still answered {r.status_code} after {RELOAD_WITHIN_S}s"
        time.sleep(0.1)
    revoked_after = time.monotonic() - t0
    assert _status_with(h.url, REVOKED_KEY) == 401, "the SDK sees 401 too"
    assert _status_with(h.url, READER_KEY) == 200, "the other key keeps working"
    assert revoked_after < RELOAD_WITHIN_S


# --------------------------------------------------------------------------- kill switch

def test_kill_switch_on_and_off_by_hot_reload(hot: Any) -> None:
    h = hot(base_policy())

    async def before_kill() -> Any:
        return await _echo(h.url, ADMIN_KEY, "before")

    assert [c.text for c in anyio.run(before_kill).content] == ["Echo: before"]

    killed = base_policy()
    killed["kill_switch"] = True

    async def while_killed() -> list[tuple[str, Any]]:
        """A session opened before the switch, then every kind of call on it."""
        out: list[tuple[str, Any]] = []
        async with sdk_session(h.url, ADMIN_KEY) as s:
            await s.list_tools()
            await anyio.to_thread.run_sync(h.swap, killed)
            for name, act in [("tools/call echo", lambda: s.call_tool("echo", {"message": "x"})),
                              ("tools/call get-sum", lambda: s.call_tool("get-sum", {"a": 1, "b": 2})),
                              ("tools/list", lambda: s.list_tools()),
                              ("prompts/list", lambda: s.list_prompts()),
                              ("resources/read", lambda: s.read_resource("demo://resource/dynamic/text/1")),
                              ("ping", lambda: s.send_ping())]:
                before = h.upstream_posts()
                try:
                    res: Any = await act()
                except MCPError as e:
                    res = e
                out.append((name, res, h.upstream_posts() - before))
        return out

    for name, res, moved in anyio.run(while_killed):
        assert isinstance(res, MCPError), f"{name} under the kill switch answered {res}"
        assert res.code == -32010 and res.data.get("rule") == "kill-switch", (name, res.code, res.data)
        assert moved == 0, f"{name} reached the server under the kill switch"

    # a fresh client cannot even initialize
    before = h.upstream_posts()
    r = send(h.url, body=json.dumps(rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                       "clientInfo": {"name": "t", "version": "0"}}, id=1)),
             token=READER_KEY)
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    assert body.get("error", {}).get("data", {}).get("rule") == "kill-switch", (r.status_code, r.text[:300])
    assert h.upstream_posts() == before

    h.swap(base_policy())  # off again
    assert [c.text for c in anyio.run(_echo, h.url, ADMIN_KEY, "after").content] == ["Echo: after"]


# --------------------------------------------------------------------------- in-flight call

LONG = "trigger-long-running-operation"


def test_call_in_flight_finishes_under_the_old_policy(hot: Any) -> None:
    """Start a 6 s operation allowed by the old policy, swap in a policy denying it
    once the server reports progress, the call still completes; a new call is denied."""
    old = base_policy()
    old["rules"] = [r for r in old["rules"] if r["id"] != "long-ops-need-approval"]
    old["rules"].append({"id": "long-ops", "effect": "allow", "roles": ["reader"], "tools": [LONG]})
    new = base_policy()
    new["rules"] = [r for r in new["rules"] if r["id"] != "long-ops-need-approval"]
    new["rules"].append({"id": "no-long-ops", "effect": "deny", "tools": [LONG]})
    h = hot(old)

    async def go() -> dict[str, Any]:
        got: dict[str, Any] = {}
        progressed = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        async with sdk_session(h.url, READER_KEY) as s:
            await s.list_tools()

            async def long_call() -> None:
                got["result"] = await s.call_tool(LONG, {"duration": 6, "steps": 6},
                                                  progress_callback=on_progress)
                got["done_at"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                with anyio.fail_after(20):
                    await progressed.wait()  # the server is running it: the call is in flight
                got["swapped_at"] = await anyio.to_thread.run_sync(h.swap, new)
                got["reloaded_at"] = time.monotonic()
                before = h.upstream_posts()
                try:
                    await s.call_tool(LONG, {"duration": 1, "steps": 1})
                except MCPError as e:
                    got["new_call"] = e
                got["new_call_moved"] = h.upstream_posts() - before
                got["new_call_at"] = time.monotonic()
        return got

    got = anyio.run(go)
    assert got["reloaded_at"] < got["done_at"], "the reload must land while the call is in flight"
    res = got["result"]
    assert not res.is_error, res
    assert [c.text for c in res.content] == ["Long running operation completed. Duration: 6 seconds, Steps: 6."]
    err = got.get("new_call")
    assert isinstance(err, MCPError), "a new call after the reload must be refused"
    assert err.code == -32010 and err.data.get("rule") == "no-long-ops", err.data
    assert got["new_call_moved"] == 0
    assert got["new_call_at"] < got["done_at"], "the new call was refused while the old one was still running"
