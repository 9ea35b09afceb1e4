"""The audit trail cannot be made to lose events (issue #12, item 7), end to end.

Real Envoy + the compiled filter in front of server-everything; the audit
callouts go to the project's own collector (`mcp-firewall collector`), which a
test keeps down, or runs with a small `--max-body-bytes` so that it answers 413
to large batches. What it stored is checked with `mcp-firewall audit verify`.

- denied calls with ~1 MB tool names and ids while the collector is down: the
  VM keeps serving, and once the collector is back every event is there, with
  the caller's strings clipped and their SHA-256 kept;
- a byte-bounded buffer (`max_buffered_bytes`) that fills: what is missing is
  exactly what Envoy counted as dropped, and the trail announces it;
- a collector that answers 413 to large batches: batches are split, every event
  gets through, none is dropped;
- GET and DELETE on another caller's session (hijack attempts) and the owner's
  DELETE that ends the session are in the trail;
- the chain id starts with the Envoy node id (`--service-node`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_support import (
    CLI,
    Collector,
    audit_envoy,
    audit_stats,
    expand,
    method,
    read_events,
    runs,
    verify,
    verify_gaps,
    wait_until,
)
from conftest import ADMIN_KEY, READER_KEY, policy_variant
from mcp_raw import call, messages, open_session, send

import harness

CLIP_BYTES = 256  # src/audit/event.rs CLIP_BYTES, documented in docs/audit.md
MEGABYTE_ISH = 1_000_000  # under limits.max_request_bytes (1 MiB) with the rest of the call


@pytest.fixture(scope="module", autouse=True)
def cli() -> Path:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run `cargo build --release -p mcp-firewall-cli` (scripts/test.sh does)")
    return CLI


@pytest.fixture
def stack(workdir: Path, mcp_server: harness.McpServer, wasm: Path,
          request: pytest.FixtureRequest) -> Iterator[Any]:
    """start(name, audit, collector_args, envoy_args) -> (Envoy, Collector not started); all stopped after."""
    started: list[Any] = []

    def start(name: str, audit: dict[str, Any], *, envoy_args: tuple[str, ...] = (),
              policy: dict[str, Any] | None = None) -> tuple[harness.Envoy, Collector]:
        col = Collector(workdir, f"{request.node.name}-{name}-collector")
        started.append(col)
        env = audit_envoy(workdir, mcp_server, wasm, col.port, name=f"{request.node.name}-{name}", audit=audit,
                          extra_args=envoy_args, policy=policy)
        started.append(env)
        return env, col

    yield start
    for p in reversed(started):
        if isinstance(p, Collector):
            if p.alive():
                p.stop()
        else:
            p.stop()


def start_collector(col: Collector, *args: str) -> None:
    """Collector.start with extra command-line arguments (e.g. --max-body-bytes)."""
    col.starts += 1
    col.proc = harness.Proc(
        f"{col.name}-{col.starts}",
        [str(CLI), "collector", "--listen", f"127.0.0.1:{col.port}", "--out", str(col.out), *args],
        col.workdir / f"{col.name}-{col.starts}.log")
    harness._wait(lambda: harness.port_open(col.port), 30, f"collector {col.name}", col.proc)


def sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def wait_accounted(env: harness.Envoy, total: int, timeout: float = 60.0) -> dict[str, int]:
    """Every sealed event either acknowledged by the collector or counted dropped."""
    return wait_until(lambda: audit_stats(env), lambda s: s["sent"] + s["dropped"] >= total and s["buffered"] == 0,
                      timeout, f"{total} events sent or dropped")


def test_megabyte_tool_names_and_ids_with_the_collector_down_lose_nothing(stack: Any) -> None:
    # The fixture policy takes 64 KiB requests; a caller here may send 2 MiB.
    env, col = stack("mb", {"flush_ms": 50}, policy=policy_variant(**{"limits.max_request_bytes": 2 << 20}))
    # The collector is down (never started: nothing listens on its port).
    assert not harness.port_open(col.port)
    sent: list[tuple[str, str]] = []  # (kind, the caller's string)
    for i in range(40):
        # Tool and prompt names and methods over 128 bytes are refused as
        # malformed before any decision (the event then holds none of them);
        # a resource URI and an id are not.
        big = f"{i}-" + "x" * MEGABYTE_ISH
        if i % 2 == 0:
            msg = {"jsonrpc": "2.0", "id": i, "method": "resources/read", "params": {"uri": "file:///" + big}}
            sent.append(("target", "file:///" + big))
        else:
            msg = {"jsonrpc": "2.0", "id": "id-" + big, "method": "tools/call",
                   "params": {"name": "get-env", "arguments": {}}}
            sent.append(("id", "id-" + big))
        r = send(env.url, body=json.dumps(msg), token=READER_KEY, timeout=60)
        # Denied by policy: the VM is alive and deciding.
        assert r.status_code == 200, (i, r.status_code, r.text[:300])
        assert messages(r)[0]["error"]["code"] == -32010, r.text[:300]
    # Still deciding after all of that.
    r = send(env.url, body=json.dumps(call("get-env", {}, id=99)), token=READER_KEY)
    assert r.status_code == 200 and messages(r)[0]["error"]["data"]["rule"] == "no-env", r.text[:300]
    assert "panicked" not in env.log_text(), "the VM aborted"
    # The gauge is exported on the tick.
    stats = wait_until(lambda: audit_stats(env), lambda s: s["buffered"] >= 41, 10, "41 events buffered")
    assert stats["dropped"] == 0 and stats["sent"] == 0, stats

    start_collector(col)
    stats = wait_accounted(env, 41)
    assert stats["dropped"] == 0 and stats["sent"] == 41, stats
    v = verify(col.out)
    assert v.returncode == 0, v.stdout + v.stderr
    events = read_events(col.out)
    assert [e["seq"] for e in events] == list(range(1, 42))
    for (kind, value), e in zip(sent, events):
        req = e["request"]
        if kind == "id":
            value = json.dumps(value)
        kept = req[kind] if kind != "id" else req["id"]
        assert kept == value[:CLIP_BYTES] + "…", (kind, str(kept)[:80])
        assert req[f"{kind}_sha256"] == sha256(value), kind
        assert len(json.dumps(e)) < 4096, "a clipped event stays small"
    assert col.out.stat().st_size < 41 * 4096


def test_byte_bounded_buffer_drops_exactly_what_it_counts_and_announces_it(stack: Any) -> None:
    # 16 KiB of buffer per worker VM: the ~1 KB events of denied calls fill it fast.
    env, col = stack("bytes", {"flush_ms": 50, "max_buffered_bytes": 16384, "max_batch_bytes": 8192})
    n = 60
    for i in range(n):
        r = send(env.url, body=json.dumps(call("get-env", {"n": i}, id=i)), token=READER_KEY)
        assert r.status_code == 200 and "-32010" in r.text, r.text[:300]
    stats = audit_stats(env)
    assert stats["dropped"] > 0, stats
    start_collector(col)
    # What the buffer held reaches the collector (after the retry backoff).
    stats = wait_until(lambda: audit_stats(env), lambda s: s["buffered"] == 0, 60, "buffer drained")
    assert stats["sent"] + stats["dropped"] == n, stats
    dropped_while_down = stats["dropped"]
    # One more event once the collector is back: it announces the loss.
    r = send(env.url, body=json.dumps(call("get-env", {"n": "after"}, id=1000)), token=READER_KEY)
    assert r.status_code == 200 and "-32010" in r.text, r.text[:300]
    stats = wait_accounted(env, n + 1)
    assert stats["dropped"] == dropped_while_down, stats
    events = read_events(col.out)
    seqs = sorted(e["seq"] for e in events)
    missing = sorted(set(range(1, n + 2)) - set(seqs))
    assert len(missing) == stats["dropped"] and len(seqs) == stats["sent"], (missing, stats)
    announced = expand([(r["first"], r["last"]) for e in events for r in e.get("dropped", [])])
    assert announced == missing, (runs(announced), runs(missing))
    v = verify(col.out)
    gaps = verify_gaps(v.stdout)
    assert gaps and all("announced" in rest for *_, rest in gaps), v.stdout


def test_collector_answering_413_gets_every_event_through_split_batches(stack: Any) -> None:
    # Batches of up to 100 events (~100 KB) leave every second; the collector takes 8 KiB.
    env, col = stack("413", {"flush_ms": 1000, "max_batch": 100})
    start_collector(col, "--max-body-bytes", "8192")
    n = 60
    for i in range(n):
        r = send(env.url, body=json.dumps(call("get-env", {"n": i}, id=i)), token=READER_KEY)
        assert r.status_code == 200
    stats = wait_accounted(env, n)
    assert stats["sent"] == n and stats["dropped"] == 0, stats
    # The collector is up throughout: every retry was a 413 that split a batch.
    assert stats["retried"] > 0, f"the collector never refused a batch: {stats}"
    v = verify(col.out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert sorted(e["seq"] for e in read_events(col.out)) == list(range(1, n + 1))


def test_hijack_attempts_and_session_termination_are_in_the_trail(stack: Any) -> None:
    env, col = stack("sess", {"flush_ms": 50})
    start_collector(col)
    owner = open_session(env.url, READER_KEY)
    before = env.upstream_requests()
    for verb in ("GET", "DELETE"):
        r = send(env.url, method=verb, token=ADMIN_KEY, headers=owner, content_type=None, timeout=10)
        assert r.status_code == 403, (verb, r.status_code, r.text[:300])
    assert env.upstream_requests() == before, "a hijack attempt reached the server"
    r = send(env.url, method="DELETE", token=READER_KEY, headers=owner, content_type=None, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text[:300])

    def http_events(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str, int]]:
        return [(method(e), e["identity"]["subject"], e["decision"]["verdict"], e["decision"]["rule"],
                 (e.get("response") or {}).get("status", 0))
                for e in events if (method(e) or "").startswith("(http ")]

    want = [("(http GET)", "e2e-admin", "deny", "session-binding", 403),
            ("(http DELETE)", "e2e-admin", "deny", "session-binding", 403),
            ("(http DELETE)", "e2e-reader", "allow", "session-binding", 200)]
    got = wait_until(lambda: http_events(read_events(col.out)), lambda g: len(g) >= 3, 20, "GET/DELETE events")
    assert got == want, got
    v = verify(col.out)
    assert v.returncode == 0, v.stdout + v.stderr


def test_chain_id_starts_with_the_envoy_node_id(stack: Any) -> None:
    env, col = stack("node", {"flush_ms": 50}, envoy_args=("--service-node", "gw-node-7", "--service-cluster", "gw"))
    start_collector(col)
    r = send(env.url, body=json.dumps(call("get-env", {}, id=1)), token=READER_KEY)
    assert r.status_code == 200
    events = wait_until(lambda: read_events(col.out), lambda e: len(e) >= 1, 20, "one event")
    assert events[0]["chain"].startswith("gw-node-7/"), events[0]["chain"]
