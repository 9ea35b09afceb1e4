"""Audit delivery under load and outages, end to end.

Real Envoy + the compiled filter in front of server-everything, driven by the
official MCP Python SDK client (one session, many ``call_tool``s); the audit
callouts go to the project's own collector (``mcp-firewall collector``), which
the tests stop and start again on the same port and file. What the collector
stored is checked with ``mcp-firewall audit verify`` and counted event by event
against what the client saw and what Envoy's stats and logs say.

- 1,000 calls of mixed verdicts, two worker VMs on one chain: every message in
  the trail exactly once, seq 1..N, verdicts as the client saw them.
- a 10 s collector outage mid-run: nothing lost, nothing stored twice, retried.
- a tiny buffer with ``on_failure: open``: calls keep succeeding; what is missing
  is exactly what Envoy counted and logged as dropped, and the trail says so.
- ``on_failure: closed``: refusals (-32010 ``audit-unavailable``) that never reach
  the server while the buffer is full, service again once it drained.
- tampering with the stored trail: altered field, deleted line, re-hashed event.

Tests 3 and 4 run Envoy with ``--concurrency 1``: the buffer, and so the
saturation that ``on_failure`` acts on, is per worker VM, and which worker
accepts a connection is up to the kernel; with one worker the moment the buffer
fills is the client's to know.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from audit_support import (
    CLI,
    Collector,
    audit_envoy,
    audit_stats,
    drop_reports,
    expand,
    method,
    read_events,
    read_lines,
    runs,
    verify,
    verify_gaps,
    wait_until,
)
from conftest import READER_KEY
from mcp import MCPError
from mcp_raw import sdk_session, send

import harness

# A GitHub PAT shape, random per run (as in test_dlp.py): DLP blocks it in arguments.
TOKEN = "ghp_" + "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(36))

# (tool, arguments for call i). Outcomes follow tests/e2e/fixtures/policy.json for
# the reader key: echo / get-sum allowed by "read-tools", get-env denied by "no-env",
# get-tiny-image matches no rule ("default-deny"), a secret in echo's arguments is
# refused by DLP (-32013, audited as deny / "dlp").
KINDS: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
    ("echo", lambda i: {"message": f"call {i}"}),
    ("get-sum", lambda i: {"a": i, "b": 1}),
    ("get-env", lambda i: {}),
    ("get-tiny-image", lambda i: {}),
    ("echo", lambda i: {"message": f"call {i} with {TOKEN}"}),
]
DESIGNED = {("echo", "allow", "-"), ("get-sum", "allow", "-"), ("get-env", "deny", "no-env"),
            ("get-tiny-image", "deny", "default-deny"), ("echo", "deny", "dlp")}
# initialize, notifications/initialized and the explicit tools/list of one SDK session
# (list_tools first, so call_tool never fetches the list by itself), and the DELETE
# with which the SDK ends the session on close (audited as "(http DELETE)").
SESSION_MESSAGES = {"initialize": 1, "notifications/initialized": 1, "tools/list": 1, "(http DELETE)": 1}
REFUSED_METHOD = "(refused before decision)"
DUPLICATE_KEYS = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","name":"get-env"}}'


@pytest.fixture(scope="module", autouse=True)
def cli() -> Path:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run `cargo build --release -p mcp-firewall-cli` (scripts/test.sh does)")
    return CLI


@dataclass
class Run:
    """What the client saw."""
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (tool, allow|deny, rule or "-")
    codes: Counter[int] = field(default_factory=Counter)
    audit_refusals: int = 0  # -32010 with rule audit-unavailable (on_failure: closed)
    raw_refusals: int = 0  # duplicate-key bodies refused with HTTP 400

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values()) + self.audit_refusals


async def call_one(session: Any, i: int, run: Run) -> str:
    """Call kind i % 5; record the outcome the client saw; returns it as "ok" or the rule."""
    tool, args = KINDS[i % len(KINDS)]
    try:
        await session.call_tool(tool, args(i))
    except MCPError as e:
        rule = (e.data or {}).get("rule", "?") if isinstance(e.data, dict) else "?"
        run.codes[e.code] += 1
        if rule == "audit-unavailable":
            assert e.code == -32010, e
            run.audit_refusals += 1
        else:
            run.outcomes[(tool, "deny", rule)] += 1
        return rule
    run.outcomes[(tool, "allow", "-")] += 1
    return "ok"


async def mixed_calls(url: str, n: int, run: Run, *, raw_every: int = 0,
                      before: Callable[[int], Awaitable[None]] | None = None) -> None:
    """One SDK session: tools/list, then n calls of mixed kinds; every `raw_every` calls
    one duplicate-key POST (a protocol refusal the SDK cannot produce)."""
    async with sdk_session(url, READER_KEY) as s:
        await s.list_tools()
        for i in range(n):
            if before is not None:
                await before(i)
            await call_one(s, i, run)
            if raw_every and (i + 1) % raw_every == 0:
                r = await anyio.to_thread.run_sync(lambda: send(url, token=READER_KEY, body=DUPLICATE_KEYS))
                assert r.status_code == 400, (r.status_code, r.text[:300])
                run.raw_refusals += 1


def audited_outcomes(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        if method(e) == "tools/call":
            d = e["decision"]
            out[(e["request"]["target"], d["verdict"], "-" if d["verdict"] == "allow" else d["rule"])] += 1
    return out


def method_counts(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(method(e) for e in events)


def expected_methods(run: Run, tools_calls: int) -> Counter[str]:
    c = Counter(SESSION_MESSAGES)
    c["tools/call"] = tools_calls
    if run.raw_refusals:
        c[REFUSED_METHOD] = run.raw_refusals
    return c


def wait_delivered(env: harness.Envoy, collector: Collector, total: int, timeout: float = 90.0) -> dict[str, int]:
    """Every one of `total` sealed events is accounted for by the filter (acknowledged
    or dropped), nothing is buffered, and the file holds the acknowledged ones."""
    def probe() -> tuple[dict[str, int], int]:
        return audit_stats(env), len(read_lines(collector.out))

    st, _ = wait_until(
        probe, lambda v: v[0]["sent"] + v[0]["dropped"] >= total and v[0]["buffered"] == 0
        and v[1] >= v[0]["sent"], timeout, f"delivery of {total} audit events",
        lambda v: f"Envoy audit stats {v[0]}, {v[1]} lines stored; collector alive {collector.alive()}")
    return st


def assert_whole(events: list[dict[str, Any]], lines: list[str], total: int) -> None:
    """One chain, seq 1..total, each exactly once."""
    chains = {e["chain"] for e in events}
    assert len(chains) == 1, chains
    seqs = Counter(e["seq"] for e in events)
    dups = {s: n for s, n in seqs.items() if n > 1}
    assert not dups, f"stored more than once: {dups}"
    missing = sorted(set(range(1, total + 1)) - set(seqs))
    extra = sorted(set(seqs) - set(range(1, total + 1)))
    assert not missing and not extra, f"missing seqs {runs(missing)}, unexpected seqs {runs(extra)}"
    assert len(lines) == total


# --------------------------------------------------------------------------- 1. 1,000 mixed calls

@dataclass
class MixedTrail:
    path: Path
    run: Run
    events: list[dict[str, Any]]
    stats: dict[str, int]
    total: int


@pytest.fixture(scope="module")
def mixed_trail(workdir: Path, mcp_server: harness.McpServer, wasm: Path) -> Iterator[MixedTrail]:
    collector = Collector(workdir, "audit-mixed")
    collector.start()
    env = audit_envoy(workdir, mcp_server, wasm, collector.port, name="envoy-audit-mixed", concurrency=2,
                      audit={"max_batch": 100, "flush_ms": 200, "max_buffered": 10000, "on_failure": "open",
                             "arguments": "hash", "timeout_ms": 5000})
    try:
        run = Run()
        anyio.run(lambda: mixed_calls(env.url, 1000, run, raw_every=100))
        total = sum(SESSION_MESSAGES.values()) + run.calls + run.raw_refusals
        stats = wait_delivered(env, collector, total)
        yield MixedTrail(collector.out, run, read_events(collector.out), stats, total)
    finally:
        env.stop()
        collector.stop()


def test_1000_mixed_calls_two_workers_one_whole_chain(mixed_trail: MixedTrail) -> None:
    t = mixed_trail
    # The client saw the designed mix: 200 of each kind.
    assert set(t.run.outcomes) == DESIGNED and set(t.run.outcomes.values()) == {200}, t.run.outcomes
    assert t.run.audit_refusals == 0 and t.run.raw_refusals == 10

    v = verify(t.path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert f"{t.total} event(s)" in v.stdout and "re-delivered" not in v.stdout, v.stdout

    assert_whole(t.events, read_lines(t.path), t.total)
    assert method_counts(t.events) == expected_methods(t.run, 1000)
    # Per verdict and rule, exactly what the client saw.
    assert audited_outcomes(t.events) == t.run.outcomes
    allow_rules = Counter(e["decision"]["rule"] for e in t.events
                          if method(e) == "tools/call" and e["decision"]["verdict"] == "allow")
    assert allow_rules == Counter({"read-tools": 400}), allow_rules
    refused = [e for e in t.events if method(e) == REFUSED_METHOD]
    assert all(e["decision"]["verdict"] == "deny" and e["decision"]["rule"] == "protocol"
               and e["response"]["status"] == 400 for e in refused), refused[:3]
    assert TOKEN not in t.path.read_text(), "the blocked secret must not be in the trail"

    # Both worker VMs appended to the one chain: seq 1 starts the process's chain,
    # the other VM marks its first event vm_start.
    segments = sorted((e["seq"], e["segment"]["reason"]) for e in t.events if "segment" in e)
    assert [r for _, r in segments] == ["process_start", "vm_start"] and segments[0][0] == 1, segments

    assert t.stats["sent"] == t.total, t.stats
    assert t.stats["dropped"] == 0 and t.stats["append_failed"] == 0, t.stats


# --------------------------------------------------------------------------- 2. outage

OUTAGE_S = 10.0


def test_collector_outage_of_10s_loses_nothing_and_stores_nothing_twice(workdir: Path, mcp_server: harness.McpServer,
                                                                       wasm: Path) -> None:
    collector = Collector(workdir, "audit-outage")
    collector.start()
    env = audit_envoy(workdir, mcp_server, wasm, collector.port, name="envoy-audit-outage", concurrency=2,
                      audit={"max_batch": 100, "flush_ms": 200, "max_buffered": 10000, "on_failure": "open",
                             "timeout_ms": 2000})
    run = Run()
    outage: dict[str, Any] = {"calls_during": 0, "buffered_seen": []}

    async def before(i: int) -> None:
        if i == 300:
            collector.stop()
            outage["t0"], outage["t0_ms"] = time.monotonic(), time.time() * 1000
        elif "t0" in outage and "t1" not in outage:
            due = outage["t0"] + OUTAGE_S
            if i == 700 and time.monotonic() < due:
                # Load shaping, not an assertion: keep calls coming after the restart too.
                await anyio.sleep(due - time.monotonic())
            if time.monotonic() >= due:
                outage["t1_ms"] = time.time() * 1000
                collector.start()
                outage["t1"] = time.monotonic()
                outage["retried_at_restart"] = audit_stats(env)["retried"]
            else:
                outage["calls_during"] += 1
                if i % 50 == 0:
                    outage["buffered_seen"].append(audit_stats(env)["buffered"])

    try:
        anyio.run(lambda: mixed_calls(env.url, 1000, run, before=before))
        assert "t1" in outage, "the collector was never restarted during the run"
        total = sum(SESSION_MESSAGES.values()) + run.calls
        stats = wait_delivered(env, collector, total, timeout=120)
    finally:
        env.stop()
        collector.stop()

    print(f"\n[outage] {total} events, stats {stats}, outage {outage}")
    # The premise: a real outage in the middle of the run.
    assert outage["t1"] - outage["t0"] >= OUTAGE_S
    assert outage["calls_during"] >= 100, outage
    assert outage["retried_at_restart"] > 0, f"no delivery failed during the outage: {outage}"
    assert set(run.outcomes) == DESIGNED and run.calls == 1000 and run.audit_refusals == 0, run

    events = read_events(collector.out)
    v = verify(collector.out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "re-delivered" not in v.stdout, v.stdout
    assert_whole(events, read_lines(collector.out), total)
    assert method_counts(events) == expected_methods(run, 1000)
    assert audited_outcomes(events) == run.outcomes
    assert stats["retried"] > 0 and stats["dropped"] == 0 and stats["append_failed"] == 0, stats
    assert stats["sent"] == total, stats
    # The calls made while the collector was down are in the trail.
    during = [e for e in events if method(e) == "tools/call" and outage["t0_ms"] <= e["ts_ms"] <= outage["t1_ms"]]
    assert len(during) >= outage["calls_during"], (len(during), outage)


# --------------------------------------------------------------------------- 3. on_failure: open

def test_tiny_buffer_open_drops_exactly_what_it_counts_and_logs(workdir: Path, mcp_server: harness.McpServer,
                                                                wasm: Path) -> None:
    collector = Collector(workdir, "audit-open")
    collector.start()
    env = audit_envoy(workdir, mcp_server, wasm, collector.port, name="envoy-audit-open", concurrency=1,
                      audit={"max_batch": 10, "flush_ms": 20, "max_buffered": 20, "on_failure": "open",
                             "timeout_ms": 1000})
    run = Run()

    sent_at_stop = 0

    async def before(i: int) -> None:
        nonlocal sent_at_stop
        if i == 100:
            # Everything so far is delivered before the outage starts.
            sent_at_stop = (await anyio.to_thread.run_sync(lambda: wait_delivered(env, collector, 3 + 100)))["sent"]
            collector.stop()
        elif i == 250:
            collector.start()
            # Let the next retry find it before more calls: drops that happen after
            # the last buffered event are announced only by a later event, so the
            # tail of the run must be delivered for the trail to be complete.
            await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: audit_stats(env), lambda st: st["sent"] > sent_at_stop and st["buffered"] == 0, 60,
                "delivery resumed after the restart"))

    try:
        anyio.run(lambda: mixed_calls(env.url, 350, run, before=before))
        total = sum(SESSION_MESSAGES.values()) + run.calls
        stats = wait_delivered(env, collector, total, timeout=120)
        # The warning for the last drops is logged on a later tick; Envoy writes its log lazily.
        reports = wait_until(lambda: drop_reports(env), lambda r: sum(n for n, _, _ in r) >= stats["dropped"],
                             30, "drop warnings in Envoy's log")
    finally:
        env.stop()
        collector.stop()

    print(f"\n[open] {total} events, stats {stats}, drop warnings {reports}")
    # Calls kept being served while events were dropped.
    assert set(run.outcomes) == DESIGNED and run.calls == 350 and run.audit_refusals == 0, run
    assert stats["dropped"] > 0, f"a 150-call outage with max_buffered 20 dropped nothing: {stats}"

    events = read_events(collector.out)
    lines = read_lines(collector.out)
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs)) == len(lines), "stored twice"
    assert max(seqs) == total, (max(seqs), total)
    missing = sorted(set(range(1, total + 1)) - set(seqs))
    assert len(missing) == stats["dropped"], (runs(missing), stats)
    assert stats["sent"] + stats["dropped"] == total, stats

    # Envoy's warnings name exactly the missing seqs, and count them exactly.
    assert all(exact for _, _, exact in reports), reports
    assert sum(n for n, _, _ in reports) == stats["dropped"], reports
    logged = expand([r for _, ranges, _ in reports for r in ranges])
    assert sorted(logged) == missing, (reports, runs(missing))

    # The trail itself announces them (the `dropped` field of later events).
    announced = expand([(d["first"], d["last"]) for e in events for d in e.get("dropped", [])])
    assert sorted(announced) == missing, (runs(announced), runs(missing))

    # audit verify: exit 1, and its gap (the first broken link of the chain) is the
    # first logged range, recognised as announced by the firewall.
    v = verify(collector.out)
    assert v.returncode == 1, v.stdout + v.stderr
    gaps = verify_gaps(v.stdout)
    first = runs(missing)[0]
    assert gaps and gaps[0][:3] == (first[0] - 1, first[1] + 1, first[1] - first[0] + 1), (v.stdout, runs(missing))
    assert "announced as dropped by the firewall" in gaps[0][3], v.stdout
    # Every gap of the file is a logged range (verify reports the first per chain;
    # the rest are checked above against the events themselves).
    assert all((a + 1, b - 1) in runs(missing) for a, b, _, _ in gaps), (gaps, runs(missing))


# --------------------------------------------------------------------------- 4. on_failure: closed

def test_closed_refuses_while_buffer_full_and_recovers(workdir: Path, mcp_server: harness.McpServer,
                                                       wasm: Path) -> None:
    collector = Collector(workdir, "audit-closed-sdk")
    collector.start()
    env = audit_envoy(workdir, mcp_server, wasm, collector.port, name="envoy-audit-closed-sdk", concurrency=1,
                      audit={"max_batch": 5, "flush_ms": 20, "max_buffered": 10, "on_failure": "closed",
                             "timeout_ms": 1000})
    run = Run()
    refused_moved: list[int] = []  # upstream POSTs during each refused call
    served_while_down = 0
    recovered_after_s = None

    async def go() -> None:
        nonlocal served_while_down, recovered_after_s
        async with sdk_session(env.url, READER_KEY) as s:
            await s.list_tools()
            i = 0
            for _ in range(20):
                assert await call_one(s, 0, run) == "ok"
            await anyio.to_thread.run_sync(lambda: wait_delivered(env, collector, 3 + 20))
            collector.stop()
            # Until the buffer (10 events) is full, calls are served; then refused.
            while True:
                before = env.upstream_posts()
                outcome = await call_one(s, i, run)
                if outcome == "audit-unavailable":
                    refused_moved.append(env.upstream_posts() - before)
                    break
                served_while_down += 1
                i += 1
                assert served_while_down <= 10, "served more calls than the buffer can hold, collector down"
            # Still down: every call is refused, whatever its kind, and reaches nothing.
            for j in range(10):
                before = env.upstream_posts()
                assert await call_one(s, j, run) == "audit-unavailable"
                refused_moved.append(env.upstream_posts() - before)
            collector.start()
            t1 = time.monotonic()
            # The buffer drains at the next retry (backoff); until then calls are refused.
            while True:
                before = env.upstream_posts()
                outcome = await call_one(s, 0, run)
                if outcome != "audit-unavailable":
                    assert outcome == "ok"
                    recovered_after_s = time.monotonic() - t1
                    break
                refused_moved.append(env.upstream_posts() - before)
                assert time.monotonic() - t1 < 60, "still refusing 60 s after the collector came back"
                await anyio.sleep(0.1)
            # The buffer holds 10 events and a batch is fsynced before it is
            # acknowledged: calls can outrun delivery and be refused again,
            # which must hold the same way (nothing reaches the server).
            for j in range(20):
                before = env.upstream_posts()
                if await call_one(s, j, run) == "audit-unavailable":
                    refused_moved.append(env.upstream_posts() - before)

    try:
        anyio.run(go)
        total = sum(SESSION_MESSAGES.values()) + run.calls
        stats = wait_delivered(env, collector, total, timeout=60)
    finally:
        env.stop()
        collector.stop()

    print(f"\n[closed] {total} events, {run.audit_refusals} refused, {served_while_down} served while down, "
          f"recovered {recovered_after_s:.1f}s after restart, stats {stats}")
    assert run.audit_refusals >= 11, run
    assert refused_moved == [0] * run.audit_refusals, f"refused calls reached the MCP server: {refused_moved}"
    assert run.codes[-32010] >= run.audit_refusals
    assert 0 < served_while_down <= 10, served_while_down
    assert stats["refused"] == run.audit_refusals, (stats, run.audit_refusals)

    # Served calls are all in the trail; the refusals' own events could not be
    # buffered (the buffer was full): dropped, counted, announced.
    events = read_events(collector.out)
    served = sum(run.outcomes.values())
    assert audited_outcomes(events) == run.outcomes, (audited_outcomes(events), run.outcomes)
    assert sum(1 for e in events if method(e) == "tools/call") == served
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs)) == len(read_lines(collector.out))
    missing = sorted(set(range(1, total + 1)) - set(seqs))
    assert len(missing) == stats["dropped"] == run.audit_refusals, (runs(missing), stats, run.audit_refusals)
    v = verify(collector.out)
    assert v.returncode == 1, v.stdout
    gaps = verify_gaps(v.stdout)
    assert gaps and all("announced as dropped by the firewall" in g[3] for g in gaps), v.stdout
    assert recovered_after_s is not None


# --------------------------------------------------------------------------- 5. tampering

def _line_of(lines: list[str], seq: int) -> int:
    return next(i for i, line in enumerate(lines) if json.loads(line)["seq"] == seq)


def test_tampered_trail_fails_at_the_altered_seq_and_names_a_deleted_one(mixed_trail: MixedTrail,
                                                                         workdir: Path) -> None:
    lines = read_lines(mixed_trail.path)
    chain = json.loads(lines[0])["chain"]
    # A denied call in the middle of the chain.
    target = next(e["seq"] for e in sorted(mixed_trail.events, key=lambda e: e["seq"])
                  if e["seq"] > 500 and method(e) == "tools/call" and e["decision"]["verdict"] == "deny")
    idx = _line_of(lines, target)

    # 1. One field of one event edited (deny -> allow): hash mismatch at that seq.
    altered = json.loads(lines[idx])
    altered["decision"]["verdict"] = "allow"
    edited = list(lines)
    edited[idx] = json.dumps(altered, sort_keys=True, separators=(",", ":"))
    p = workdir / "audit-mixed-edited.ndjson"
    p.write_text("\n".join(edited) + "\n")
    v = verify(p)
    assert v.returncode == 1, v.stdout
    fails = [line for line in v.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL chain {chain} seq {target} (line {idx + 1}): hash mismatch: the event was altered"], v.stdout

    # 2. The same edit with the hash recomputed: the next event's prev no longer links.
    altered.pop("hash")
    canon = json.dumps(altered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    altered["hash"] = hashlib.sha256(canon.encode()).hexdigest()
    edited[idx] = json.dumps(altered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    p.write_text("\n".join(edited) + "\n")
    v = verify(p)
    assert v.returncode == 1, v.stdout
    fails = [line for line in v.stdout.splitlines() if line.startswith("FAIL")]
    nxt = _line_of(lines, target + 1)
    assert fails == [f"FAIL chain {chain} seq {target + 1} (line {nxt + 1}): prev mismatch: "
                     f"prev is not the hash of seq {target}"], v.stdout

    # 3. One line deleted: the gap is named, and not as a declared drop.
    p = workdir / "audit-mixed-deleted.ndjson"
    p.write_text("\n".join(line for i, line in enumerate(lines) if i != idx) + "\n")
    v = verify(p)
    assert v.returncode == 1, v.stdout
    assert verify_gaps(v.stdout) == [(target - 1, target + 1, 1, "; not announced by the firewall")], v.stdout
    assert f"{mixed_trail.total - 1} event(s)" in v.stdout


# --------------------------------------------------------------------------- 6. the buffered gauge

def test_buffered_gauge_counts_the_events_of_every_worker_vm(workdir: Path, mcp_server: harness.McpServer,
                                                            wasm: Path) -> None:
    port = harness.free_port()  # no collector listens: nothing can leave
    env = audit_envoy(workdir, mcp_server, wasm, port, name="envoy-audit-gauge", concurrency=2,
                      audit={"max_batch": 100, "flush_ms": 50, "max_buffered": 10000, "timeout_ms": 1000})
    try:
        run = Run()

        async def go() -> None:
            async with sdk_session(env.url, READER_KEY) as s:
                await s.list_tools()
                for i in range(20):
                    await call_one(s, 0, run)

        anyio.run(go)
        held = sum(SESSION_MESSAGES.values()) + run.calls
        # The premise: delivery was tried and failed, nothing was sent or dropped.
        st = wait_until(lambda: audit_stats(env), lambda st: st["retried"] >= 2, 30, "failed delivery attempts")
        assert st["sent"] == 0 and st["dropped"] == 0, st
        seen: list[int] = []

        def read() -> list[int]:
            seen.append(audit_stats(env)["buffered"])
            return seen

        wait_until(read, lambda v: v[-1] == held, 10, f"the buffered gauge showing the {held} events Envoy holds",
                   lambda v: f"readings {sorted(Counter(v).items())}")
        samples = []
        for _ in range(20):
            samples.append(audit_stats(env)["buffered"])
            time.sleep(0.1)
        assert audit_stats(env)["sent"] == 0
    finally:
        env.stop()
    assert samples == [held] * 20, f"{held} events held, gauge read {samples}"


# --------------------------------------------------------------------------- 7. sustained load

def test_sustained_load_with_a_healthy_collector_drops_nothing(workdir: Path, mcp_server: harness.McpServer,
                                                               wasm: Path) -> None:
    """max_batch 10, flush_ms 500: a batch of 10 should leave as soon as 10 wait, so a
    fast local collector keeps up with one SDK client (tens of calls/s) and a
    100-event buffer never fills."""
    collector = Collector(workdir, "audit-sustained")
    collector.start()
    env = audit_envoy(workdir, mcp_server, wasm, collector.port, name="envoy-audit-sustained", concurrency=1,
                      audit={"max_batch": 10, "flush_ms": 500, "max_buffered": 100, "timeout_ms": 5000})
    try:
        run = Run()
        started = time.monotonic()

        async def go() -> None:
            async with sdk_session(env.url, READER_KEY) as s:
                await s.list_tools()
                for _ in range(600):
                    await call_one(s, 0, run)

        anyio.run(go)
        rate = run.calls / (time.monotonic() - started)
        total = sum(SESSION_MESSAGES.values()) + run.calls
        stats = wait_delivered(env, collector, total, timeout=120)
    finally:
        env.stop()
        collector.stop()
    assert run.outcomes == Counter({("echo", "allow", "-"): 600}), run
    assert stats["retried"] == 0, f"the collector failed requests: {stats}"
    assert stats["dropped"] == 0, f"{stats['dropped']} of {total} events dropped at {rate:.0f} calls/s: {stats}"
    assert len(read_lines(collector.out)) == total
