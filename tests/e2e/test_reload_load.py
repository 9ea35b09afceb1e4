"""Reload under load (issue #18): the policy is swapped ten times by ECDS while
1,000 calls run on two worker VMs, twenty of them held mid-body across a swap,
every answer an SSE stream from server-everything, audit on. Then a revoked
key and the kill switch are swapped in while requests are held mid-body.

What must hold:
- no 5xx, ever;
- every call is decided by a policy that was in force when it was decided:
  each generation of the policy allows `echo` by its own rule (`gen-<k>`), and
  the rule in a call's audit event lies between the last swap Envoy had
  confirmed (with a margin for its workers) before the call's last byte was
  sent and the last swap started before its answer came;
- held requests meet the revoked key (401) and the kill switch;
- `audit verify` passes on the collected trail, with no unannounced gap and
  nothing dropped;
- session bindings are intact: another identity presenting a session opened
  before the swaps is refused, its owner goes on.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from audit_support import Collector, audit_stats, read_events, verify, wait_until
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp_raw import call, messages, open_session, rpc, send
from test_audit_reload import hot_audited  # noqa: F401 - the fixture
from test_reload_more import hot  # noqa: F401 - the fixture hot_audited builds on
from test_reload_gap import HeldRequest

CALLS = 1_000
WORKERS = 8
SWAPS = 10
HELD = 20
CONFIRM_MARGIN_S = 0.5  # a confirmed reload reaches every worker within this


def generation(k: int) -> dict[str, Any]:
    p = base_policy()
    for r in p["rules"]:
        if r["id"] == "read-tools":
            r["tools"] = [t for t in r["tools"] if t != "echo"]
    p["rules"].append({"id": f"gen-{k}", "effect": "allow", "roles": ["reader", "admin"], "tools": ["echo"]})
    p["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
                  "flush_ms": 200, "max_batch": 500}
    return p


def test_ten_swaps_under_load_decide_every_call_by_a_policy_in_force(hot_audited: Any, workdir: Path) -> None:  # noqa: F811
    col = Collector(workdir, "reload-load")
    col.start()
    try:
        h = hot_audited(generation(0), col, concurrency=2)
        sessions = [open_session(h.url, READER_KEY) for _ in range(4)]
        swaps_started: list[float] = [0.0]  # [k] = when swap k was started (k = 0: the start)
        swaps_confirmed: list[float] = [0.0]
        lock = threading.Lock()
        stop = threading.Event()

        def swapper() -> None:
            for k in range(1, SWAPS + 1):
                time.sleep(0.6)
                started = time.monotonic()
                with lock:
                    swaps_started.append(started)
                h.swap(generation(k))  # returns once Envoy reports the reload
                with lock:
                    swaps_confirmed.append(time.monotonic())
            stop.set()

        def bounds(sent: float, answered: float) -> tuple[int, int]:
            with lock:
                lo = max(k for k, t in enumerate(swaps_confirmed) if t + CONFIRM_MARGIN_S <= sent or k == 0)
                hi = max(k for k, t in enumerate(swaps_started) if t <= answered)
            return lo, hi

        results: dict[int, tuple[int, float, float]] = {}  # id -> (status, sent, answered)

        def caller(w: int) -> None:
            with httpx.Client(timeout=30) as c:
                for i in range(CALLS // WORKERS):
                    rid = 1 + w * (CALLS // WORKERS) + i
                    sess = sessions[rid % len(sessions)]
                    body = json.dumps(call("echo", {"message": f"load {rid}"}, id=rid))
                    sent = time.monotonic()
                    r = c.post(h.url, content=body, headers={
                        "content-type": "application/json", "accept": "application/json, text/event-stream",
                        "authorization": f"Bearer {READER_KEY}", **sess})
                    answered = time.monotonic()
                    results[rid] = (r.status_code, sent, answered)
                    time.sleep(0.06)

        def holder() -> None:
            for j in range(HELD):
                rid = 10_000 + j
                body = json.dumps(call("echo", {"message": "held " + " " * 4096}, id=rid)).encode()
                held = HeldRequest(h.url, READER_KEY, body, sessions[j % len(sessions)])
                time.sleep(0.45)  # across a swap, most of the time
                sent = time.monotonic()
                status, _ = held.finish()
                results[rid] = (status, sent, time.monotonic())

        t = threading.Thread(target=swapper)
        t.start()
        with ThreadPoolExecutor(WORKERS + 1) as pool:
            futures = [pool.submit(caller, w) for w in range(WORKERS)] + [pool.submit(holder)]
            for f in futures:
                f.result()
        t.join()
        assert stop.is_set() and len(swaps_confirmed) == SWAPS + 1

        assert len(results) == CALLS + HELD
        bad = {rid: st for rid, (st, _, _) in results.items() if st != 200}
        assert not bad, f"calls not answered 200 (a 5xx is never acceptable): {dict(list(bad.items())[:10])}"

        # Bindings intact after ten swaps.
        for sess in sessions:
            r = send(h.url, body=json.dumps(rpc("tools/list", id=1)), token=ADMIN_KEY, headers=sess)
            assert messages(r)[-1]["error"]["data"]["rule"] == "session-binding", r.text[:300]
            r = send(h.url, body=json.dumps(rpc("tools/list", id=2)), token=READER_KEY, headers=sess)
            assert "tools" in messages(r)[-1]["result"], r.text[:300]

        # Held requests meet a revoked key, then the kill switch.
        revoked = generation(SWAPS + 1)
        revoked["identity"]["api_keys"] = [k for k in revoked["identity"]["api_keys"]
                                           if k["subject"] != "e2e-reader"]
        killed = generation(SWAPS + 2)
        killed["kill_switch"] = True
        for policy, want in [(revoked, 401), (killed, "kill-switch")]:
            token = READER_KEY if want == 401 else ADMIN_KEY
            held = [HeldRequest(h.url, token, json.dumps(call("echo", {"message": "late"}, id=20_000 + i)).encode(),
                                {}) for i in range(5)]
            h.swap(policy)
            time.sleep(CONFIRM_MARGIN_S)
            for req in held:
                status, msg = req.finish()
                if want == 401:
                    assert status == 401, (status, msg)
                else:
                    assert msg["error"]["data"]["rule"] == "kill-switch", (status, msg)
                assert status < 500

        # The trail: every call's event, each decided by a generation in force.
        expected = CALLS + HELD
        events = wait_until(lambda: read_events(col.out),
                            lambda e: len([x for x in e if (x.get("decision") or {}).get("rule", "").startswith("gen-")]) >= expected,
                            60, f"{expected} echo events", lambda e: f"{len(e)} events, stats {audit_stats(h.env)}")
        by_id: dict[int, str] = {}
        for e in events:
            rule = (e.get("decision") or {}).get("rule", "")
            rid = (e.get("request") or {}).get("id")
            if rule.startswith("gen-") and isinstance(rid, int):
                by_id[rid] = rule
        outside: list[tuple[int, str, tuple[int, int]]] = []
        for rid, (_, sent, answered) in results.items():
            lo, hi = bounds(sent, answered)
            k = int(by_id[rid].split("-")[1])
            if not lo <= k <= hi:
                outside.append((rid, by_id[rid], (lo, hi)))
        assert not outside, f"decided by a policy not in force: {outside[:10]}"
        held_gens = {int(by_id[10_000 + j].split("-")[1]) for j in range(HELD)}
        assert len(held_gens) > 1, "the held requests must span swaps"

        time.sleep(0.5)
        v = verify(col.out)
        assert v.returncode == 0, v.stdout + v.stderr
        assert "not announced" not in v.stdout, v.stdout
        assert audit_stats(h.env)["dropped"] == 0, audit_stats(h.env)
        seqs = sorted({e["seq"] for e in read_events(col.out)})
        assert seqs == list(range(1, len(seqs) + 1)), "no gap in the chain"
    finally:
        col.stop()
