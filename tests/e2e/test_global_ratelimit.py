"""Limits that hold across Envoys: two real Envoys, each with mcp-firewall and
Envoy's rate limit filter (envoy/global-ratelimit.yaml, loaded as committed),
ask one rate limit service that speaks the real gRPC protocol
(tests/e2e/ratelimit_service.py on PyPI xds-protos + grpcio) and counts in one
real Redis, with the limits of envoy/ratelimit-config.yaml (get-sum: 3 calls a
day per subject).

The MCP peer is the official SDK's JSON server (tests/e2e/json_server.py), here
logging the header names of every request it receives; the client is the
official MCP Python SDK.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import call, headers_for, open_session, rpc, sdk_session, send

import harness

HERE = Path(__file__).resolve().parent
SERVICE_CONFIG = harness.ENVOY_DIR / "ratelimit-config.yaml"
PREFIX = "x-mcp-firewall-ratelimit-"
# envoy/ratelimit-config.yaml: get-sum, per subject, a day.
GET_SUM_PER_DAY = 3


def redis_server() -> str:
    """The redis-server binary; installed from Debian's packages on first use."""
    found = shutil.which("redis-server")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True,
                       capture_output=True, timeout=600)
        found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is missing and could not be installed (scripts/setup.sh installs it)")
    return found


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = harness.free_port()
    work = tmp_path_factory.mktemp("redis")
    # No persistence: nothing is written besides the log, in the test's directory.
    proc = harness.Proc("redis", [redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(work)],
                        work / "redis.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, "redis", proc)
        yield port
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def service(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(gRPC port, the file of the requests it received)."""
    work = tmp_path_factory.mktemp("ratelimit")
    port = harness.free_port()
    log = work / "requests.jsonl"
    log.touch()
    proc = harness.Proc("ratelimit", [sys.executable, str(HERE / "ratelimit_service.py"), str(port),
                                      str(redis_port), str(SERVICE_CONFIG), str(log)], work / "service.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, "rate limit service", proc)
        yield port, log
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, the file of the header names it received)."""
    work = tmp_path_factory.mktemp("peer")
    port = harness.free_port()
    log = work / "headers.jsonl"
    log.touch()
    proc = harness.Proc("json-peer-headers", [sys.executable, str(HERE / "json_server.py"), str(port), str(log)],
                        work / "peer.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, "json peer", proc)
        yield port, log
    finally:
        proc.stop()


def exporting_policy() -> dict[str, Any]:
    p = base_policy()
    p["envoy"] = {"allow_on_headers_stop_iteration": True, "rate_limit_headers": True}
    return p


@pytest.fixture(scope="module")
def envoys(service: tuple[int, Path], peer: tuple[int, Path], wasm: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[harness.Envoy]]:
    work = tmp_path_factory.mktemp("envoys")
    started: list[harness.Envoy] = []
    try:
        for name in ["envoy-rl-a", "envoy-rl-b"]:
            cfg = harness.render("global-ratelimit", listen_port=harness.free_port(),
                                 admin_port=harness.free_port(), upstream_port=peer[0],
                                 policy=exporting_policy(), wasm=wasm)
            for cluster in cfg["static_resources"]["clusters"]:
                if cluster["name"] == "ratelimit":
                    ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    ep["address"]["socket_address"]["port_value"] = service[0]
            started.append(harness.Envoy(cfg, work, name=name))
        yield started
    finally:
        for env in started:
            env.stop()


def sdk_calls(url: str, token: str, tool: str, arguments: dict[str, Any], times: int) -> list[str]:
    """Each call's outcome through the official SDK: "ok", or "error <code>: <message>"."""
    async def go() -> list[str]:
        out = []
        async with sdk_session(url, token) as s:
            for _ in range(times):
                try:
                    r = await s.call_tool(tool, arguments)
                    out.append("ok" if not r.is_error else f"tool error {r.content}")
                except MCPError as e:
                    out.append(f"error {e.error.code}: {e.error.message}")
        return out
    return anyio.run(go)


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


SUM = {"a": 1, "b": 2}


def test_two_envoys_share_one_limit_per_subject_and_tool(envoys: list[harness.Envoy]) -> None:
    a, b = envoys
    # The window is a UTC day: do not start seconds before it rolls over.
    to_midnight = 86400 - int(time.time()) % 86400
    if to_midnight < 30:
        time.sleep(to_midnight + 1)
    # Two calls through one Envoy, one through the other: the day's three.
    assert sdk_calls(a.url, READER_KEY, "get-sum", SUM, 2) == ["ok", "ok"]
    assert sdk_calls(b.url, READER_KEY, "get-sum", SUM, 1) == ["ok"]
    # The next one is refused on either Envoy: the count is the service's.
    for env in (a, b):
        [outcome] = sdk_calls(env.url, READER_KEY, "get-sum", SUM, 1)
        assert outcome.startswith("error -32012: rate limited"), outcome
    over = sum(e.stat("cluster.mcp_server.ratelimit.over_limit") for e in envoys)
    ok = sum(e.stat("cluster.mcp_server.ratelimit.ok") for e in envoys)
    assert over == 2, over
    assert ok >= GET_SUM_PER_DAY, ok
    # Another tool for the same caller, and the same tool for another caller,
    # are other descriptors with their own counters.
    assert sdk_calls(b.url, READER_KEY, "echo", {"message": "hi"}, 2) == ["ok", "ok"]
    assert sdk_calls(a.url, ADMIN_KEY, "get-sum", SUM, 3) == ["ok", "ok", "ok"]
    [outcome] = sdk_calls(b.url, ADMIN_KEY, "get-sum", SUM, 1)
    assert outcome.startswith("error -32012"), outcome


def test_the_429_is_a_json_rpc_error_and_never_reaches_the_server(envoys: list[harness.Envoy],
                                                                   peer: tuple[int, Path]) -> None:
    a, _ = envoys
    # The reader's get-sum is spent by the test above (a fresh Redis per module).
    sess = open_session(a.url, READER_KEY)
    before = a.upstream_posts()
    r = send(a.url, body=json.dumps(call("get-sum", SUM, id=41)), token=READER_KEY, headers=sess)
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-envoy-ratelimited") == "true"
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None, body
    assert body["error"]["code"] == -32012 and body["error"]["data"] == {"rule": "global-rate-limit"}, body
    assert a.upstream_posts() == before


def test_the_service_receives_what_the_filter_exported_never_what_the_client_sent(
        envoys: list[harness.Envoy], service: tuple[int, Path]) -> None:
    _, b = envoys
    log = service[1]
    sess = open_session(b.url, ADMIN_KEY)
    start = len(received(log))
    forged = {PREFIX + "subject": "someone-else", PREFIX + "tool": "not-a-tool", PREFIX + "tenant": "other",
              PREFIX + "method": "initialize"}
    r = send(b.url, body=json.dumps(call("echo", {"message": "x"}, id=7)), token=ADMIN_KEY,
             headers={**sess, **forged})
    assert r.status_code == 200, r.text
    # A tools/list names no tool: only the tenant's descriptor applies, and a
    # forged tool header does not make one.
    r = send(b.url, body=json.dumps(rpc("tools/list", id=8)), token=ADMIN_KEY, headers={**sess, **forged})
    assert r.status_code == 200, r.text
    got = received(log)[start:]
    assert got == [
        {"domain": "mcp", "descriptors": [[["subject", "e2e-admin"], ["tool", "echo"]], [["tenant", "acme"]]]},
        {"domain": "mcp", "descriptors": [[["tenant", "acme"]]]},
    ], got


def test_a_refused_call_asks_the_service_nothing(envoys: list[harness.Envoy], service: tuple[int, Path]) -> None:
    a, _ = envoys
    sess = open_session(a.url, READER_KEY)
    start = len(received(service[1]))
    r = send(a.url, body=json.dumps(call("get-env", {}, id=9)), token=READER_KEY, headers=sess)
    assert r.status_code == 200 and r.json()["error"]["code"] == -32010, r.text
    # A GET (the server's stream) is exported nothing either, forged header or not.
    with httpx.Client(timeout=5) as c:
        with c.stream("GET", a.url, headers={**headers_for(READER_KEY, None, None), **sess,
                                              PREFIX + "subject": "someone-else"}) as g:
            assert g.status_code in (200, 405), g.status_code
    assert received(service[1])[start:] == []


def test_the_upstream_never_sees_the_descriptor_headers(envoys: list[harness.Envoy],
                                                        peer: tuple[int, Path]) -> None:
    seen = received(peer[1])
    assert len(seen) >= 10, seen  # the calls of the tests above reached it
    leaked = [s for s in seen if any(h.startswith(PREFIX) for h in s["headers"])]
    assert leaked == [], leaked


def test_the_export_needs_the_headers_held(workdir: Path, wasm: Path) -> None:
    """Under Istio (allow_on_headers_stop_iteration false) the rate limit filter
    would run before the tool is known: the policy is refused, naming the path."""
    p = exporting_policy()
    p["envoy"]["allow_on_headers_stop_iteration"] = False
    cfg = harness.render("global-ratelimit", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=harness.free_port(), policy=p, wasm=wasm)
    r = harness.envoy_validate(cfg, workdir, name="validate-rl-istio")
    assert r.returncode != 0
    assert "$.envoy.rate_limit_headers: needs $.envoy.allow_on_headers_stop_iteration true" in r.stdout + r.stderr
