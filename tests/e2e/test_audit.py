"""Audit trail end to end: the filter in Envoy batches one event per decided
message to the project's own collector (`mcp-firewall collector`, built by
scripts/test.sh) through an Envoy cluster; `mcp-firewall audit verify` checks the
hash chain of what arrived, and notices a tampered copy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from audit_support import read_events
from conftest import READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import messages, open_session, sdk_session, send

import harness

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
SECRET_ARG = "hello audit 7c1f"  # must never appear in the trail in clear (arguments: hash)


def canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(scope="module")
def collector(workdir: Path) -> Iterator[tuple[int, Path]]:
    from audit_support import start_collector

    proc, port, out = start_collector(workdir, "audit")
    try:
        yield port, out
    finally:
        proc.stop()


def wait_for(path: Path, pred: Any, what: str, env: harness.Envoy, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events are sent in batches from a timer (flush_ms): wait until `pred` holds."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(path)
        if pred(events):
            return events
        if time.monotonic() > deadline:
            stats = {k: v for k, v in env.stats("wasmcustom|audit_collector.*upstream_rq_total|upstream_cx_total").items() if v or "audit" in k}
            raise AssertionError(f"{what}: not in the audit trail after {timeout:.0f}s; Envoy audit stats {stats}; "
                                 f"got {len(events)} events:\n"
                                 + "\n".join(canonical(e) for e in events[-10:]))
        time.sleep(0.1)


def find(events: list[dict[str, Any]], method: str, target: str | None) -> list[dict[str, Any]]:
    return [e for e in events if (e.get("request") or {}).get("method") == method
            and (e.get("request") or {}).get("target") == target]


def protocol_refusals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A body refused before any decision (here: duplicate keys) is audited too, without
    trusting anything from that body (no id, no method)."""
    return [e for e in events if e["decision"]["rule"] == "protocol" and "duplicate" in e["decision"]["reason"]]


def test_the_trail_reader_ends_lines_only_at_newlines(tmp_path: Path) -> None:
    # serde_json leaves U+2028, U+0085 and \x1c-\x1e raw inside a string; each
    # is a line break to Python's `str.splitlines`.
    events = [{"seq": 1, "reason": "a\u2028b\u0085c\x1cd\x1de\x1ef\u2029"}, {"seq": 2, "reason": "g"}]
    trail = tmp_path / "audit.ndjson"
    trail.write_bytes(b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events) + b'{"seq":')
    assert read_events(trail) == events


def test_audit_trail_of_allowed_denied_and_refused_messages(collector: tuple[int, Path], workdir: Path,
                                                            mcp_server: Any, wasm: Path) -> None:
    port, out = collector
    policy = base_policy()
    policy["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
                       "flush_ms": 50, "arguments": "hash"}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
    cfg["static_resources"]["clusters"].append({
        "name": "audit_collector", "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "audit_collector", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
    env = harness.Envoy(cfg, workdir, name="envoy-audit")
    try:
        async def go() -> MCPError:
            async with sdk_session(env.url, READER_KEY) as s:
                await s.list_tools()
                await s.call_tool("echo", {"message": SECRET_ARG})
                with pytest.raises(MCPError) as ei:
                    await s.call_tool("get-env", {})
                return ei.value

        denied = anyio.run(go)
        assert denied.code == -32010
        dup = send(env.url, token=READER_KEY,
                   body=b'{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo","name":"get-env"}}')
        assert dup.status_code == 400

        events = wait_for(out, lambda ev: find(ev, "tools/call", "echo") and find(ev, "tools/call", "get-env")
                          and protocol_refusals(ev),
                          "echo, get-env and the duplicate-key request", env)
    finally:
        env.stop()

    allowed = find(events, "tools/call", "echo")
    assert len(allowed) == 1, allowed
    a = allowed[0]
    assert a["decision"]["verdict"] == "allow" and a["decision"]["rule"] == "read-tools", a
    assert a["decision"]["dry_run"] is False
    assert a["identity"]["subject"] == "e2e-reader" and a["identity"]["via"] == "api_key", a
    assert a["identity"]["roles"] == ["reader"] and a["identity"]["tenant"] == "acme", a
    assert a["request"]["args_sha256"] == hashlib.sha256(canonical({"message": SECRET_ARG}).encode()).hexdigest()
    assert (a.get("response") or {}).get("status") == 200, a

    denied_ev = find(events, "tools/call", "get-env")
    assert len(denied_ev) == 1, denied_ev
    assert denied_ev[0]["decision"]["verdict"] == "deny" and denied_ev[0]["decision"]["rule"] == "no-env"

    refused = protocol_refusals(events)
    assert len(refused) == 1 and refused[0]["decision"]["verdict"] == "deny", refused
    assert refused[0]["response"]["status"] == 400, refused

    assert all(len(e.get("policy_sha256") or "") == 64 for e in events)
    assert len({e["policy_sha256"] for e in events}) == 1, "one policy in force"

    raw = out.read_text()
    assert SECRET_ARG not in raw, "arguments: hash must not put arguments in clear"
    assert READER_KEY not in raw, "plain API keys never appear in audit"

    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, len(seqs) + 1)), seqs

    ok = subprocess.run([str(CLI), "audit", "verify", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Tamper: turn the deny into an allow in a copy; verify must notice.
    tampered = workdir / "audit-tampered.ndjson"
    lines = raw.splitlines()
    idx = next(i for i, line in enumerate(lines) if '"target":"get-env"' in line)
    assert '"verdict":"deny"' in lines[idx]
    lines[idx] = lines[idx].replace('"verdict":"deny"', '"verdict":"allow"')
    tampered.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([str(CLI), "audit", "verify", str(tampered)], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr

    # Drop: remove one event; verify reports the gap.
    dropped = workdir / "audit-dropped.ndjson"
    dropped.write_text("\n".join(line for i, line in enumerate(raw.splitlines()) if i != idx) + "\n")
    gap = subprocess.run([str(CLI), "audit", "verify", str(dropped)], capture_output=True, text=True)
    assert gap.returncode == 1, gap.stdout + gap.stderr


def audit_envoy(policy_audit: dict[str, Any], collector_port: int, workdir: Path, mcp_server: Any, wasm: Path,
                name: str) -> harness.Envoy:
    policy = base_policy()
    policy["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit", **policy_audit}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
    cfg["static_resources"]["clusters"].append({
        "name": "audit_collector", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "audit_collector", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": collector_port}}}}]}]}})
    return harness.Envoy(cfg, workdir, name=name)


def start_collector(port: int, out: Path, workdir: Path, name: str) -> harness.Proc:
    proc = harness.Proc(name, [str(CLI), "collector", "--listen", f"127.0.0.1:{port}", "--out", str(out)],
                        workdir / f"{name}.log")
    harness._wait(lambda: harness.port_open(port), 30, name, proc)
    return proc


def echo_once(env: harness.Envoy, sess: dict[str, str], n: int) -> dict[str, Any]:
    r = send(env.url, body=json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                                       "params": {"name": "echo", "arguments": {"message": f"m{n}"}}}),
             token=READER_KEY, headers=sess)
    msgs = [m for m in messages(r) if isinstance(m, dict) and m.get("id") == n]
    assert msgs, r.text[:300]
    return msgs[0]


def test_collector_down_with_on_failure_closed_refuses_then_recovers(workdir: Path, mcp_server: Any,
                                                                    wasm: Path) -> None:
    """Threat checklist "collector down": with on_failure closed the firewall refuses
    new MCP requests (rule audit-unavailable) once its buffer is full: nothing is
    served unaudited. When the collector is back the buffer drains and requests pass
    again; every request that was served is in the trail.

    Measured: the audit event of a refusal made while the buffer is full cannot be
    buffered either; it is dropped and the next event announces the gap, so
    `audit verify` reports "announced as dropped" for exactly those seqs.
    """
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    port = harness.free_port()  # nobody listens yet
    out = workdir / "audit-closed.ndjson"
    env = audit_envoy({"on_failure": "closed", "max_buffered": 4, "max_batch": 2, "flush_ms": 20,
                       "timeout_ms": 500}, port, workdir, mcp_server, wasm, "envoy-audit-closed")
    collector = None
    served: list[int] = []
    try:
        sess = open_session(env.url, READER_KEY)
        refused = None
        for n in range(10, 60):
            before = env.upstream_requests()
            msg = echo_once(env, sess, n)
            if "error" in msg:
                refused = msg
                assert msg["error"]["data"]["rule"] == "audit-unavailable", msg
                assert env.upstream_requests() == before, "a refused request reached the server"
                break
            served.append(n)
        assert refused is not None, "50 requests served while no collector could take their audit events"

        collector = start_collector(port, out, workdir, "collector-late")
        deadline = time.monotonic() + 60
        n = 100
        while "error" in echo_once(env, sess, n):
            assert time.monotonic() < deadline, "still refusing 60 s after the collector came back"
            time.sleep(0.2)
            n += 1
        served.append(n)
        events = wait_for(out, lambda ev: {s for s in served} <= {(e.get("request") or {}).get("id") for e in ev},
                          f"every served request ({served})", env)
    finally:
        env.stop()
        if collector is not None:
            collector.stop()
    calls = {e["request"]["id"]: e for e in events if e["request"]["method"] == "tools/call"}
    assert all(calls[s]["decision"]["verdict"] == "allow" for s in served), calls
    v = subprocess.run([str(CLI), "audit", "verify", str(out)], capture_output=True, text=True)
    problems = [line for line in v.stdout.splitlines() if "FAIL" in line]
    assert v.returncode == 0 or all("announced as dropped" in line for line in problems), v.stdout + v.stderr


def test_envoy_restart_starts_a_new_chain_and_both_verify(workdir: Path, mcp_server: Any, wasm: Path) -> None:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    port = harness.free_port()
    out = workdir / "audit-restart.ndjson"
    collector = start_collector(port, out, workdir, "collector-restart")
    try:
        chains = set()
        for round_ in range(2):
            env = audit_envoy({"flush_ms": 20}, port, workdir, mcp_server, wasm, f"envoy-audit-restart-{round_}")
            try:
                sess = open_session(env.url, READER_KEY)
                echo_once(env, sess, 200 + round_)
                events = wait_for(out, lambda ev, r=round_: any((e.get("request") or {}).get("id") == 200 + r
                                                                for e in ev), f"round {round_}", env)
            finally:
                env.stop()
            chains = {e["chain"] for e in events}
        assert len(chains) == 2, f"an Envoy restart starts a new chain: {chains}"
        for chain in chains:
            assert min(e["seq"] for e in events if e["chain"] == chain) == 1
    finally:
        collector.stop()
    ok = subprocess.run([str(CLI), "audit", "verify", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 chain" in ok.stdout, ok.stdout
