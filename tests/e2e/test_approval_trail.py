"""Human approval on the audit trail, end to end: a real Envoy with the compiled
filter, the real approval service (`mcp-firewall approvals serve`, SQLite), the
real collector (`mcp-firewall collector`), server-everything and the official
MCP Python SDK as the client. The approver acts as a script would (docs/
approvals.md): reads the pending requests on the page with their bearer token
and decides with `POST /v1/approvals/{id}/decision`.

Asserted on the collector's trail (each event's `approval` member and
`decision`), on the service's own history and on what reached the server:
- held, approved: requested -> approved (by alice, her reason) -> used (allow,
  with the server's response);
- held, denied: requested -> denied (by alice, her reason);
- held, expired: requested -> expired;
- async: requested/pending, approved, the retry requested/used, the next retry
  requested/pending under a new approval id;
- a client that went away while held: abandoned on the trail, nothing used;
  approved afterwards, the client's retry uses that approval;
- a hot reload while a call is held (ECDS): the approve rule replaced by a deny
  -> the approved call is refused with the new policy's -32010 and the approval
  is never used; the approve rule kept (another rule changed) -> -32011 "the
  policy changed", never used, and the call sent again asks anew;
- a batch carrying an approve-rule call is refused -32011 without asking.
Every process started here is stopped and its temp dir removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from audit_support import AUDIT_CLUSTER, Collector, collector_cluster, read_events, verify, wait_until
from conftest import READER_KEY, policy_variant
from mcp_raw import call as rpc_call
from mcp_raw import messages, open_session, send
from test_approvals import APPROVAL, TOOL, call
from test_approvals_page import ALICE, CLI, FILTER, Service
from test_hot_reload import STAT_PREFIX as ECDS_STAT, discovery_response, swap_in, wait_stat

import harness

DENIED = -32010
RULE = "sum-needs-approval"
REASON = "checked the sum"


def args_sha(args: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of integer arguments (the binding's and the trail's)."""
    return hashlib.sha256(json.dumps(args, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def policy(**approval: Any) -> dict[str, Any]:
    p = policy_variant(**{"limits.batches": "evaluate"})
    p["rules"].append({"id": RULE, "effect": "approve", "roles": ["reader"], "tools": [TOOL]})
    p["approval"] = {"cluster": "approvals", "token": FILTER, **approval}
    p["audit"] = {"cluster": AUDIT_CLUSTER, "path": "/v1/audit", "authority": "audit", "flush_ms": 50}
    return p


def approvals_cluster(port: int) -> dict[str, Any]:
    return {"name": "approvals", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "approvals", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


@dataclass
class Rig:
    workdir: Path
    svc: Service
    collector: Collector
    envoys: dict[str, harness.Envoy]
    mcp_server: harness.McpServer
    wasm: Path

    def envoy(self, name: str, p: dict[str, Any]) -> harness.Envoy:
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=self.mcp_server.port, policy=p, wasm=self.wasm)
        cfg["static_resources"]["clusters"] += [approvals_cluster(self.svc.port),
                                                collector_cluster(self.collector.port)]
        env = harness.Envoy(cfg, self.workdir, name=name)
        self.envoys[name] = env
        return env

    def trail(self, args: dict[str, Any], count: int, what: str) -> list[dict[str, Any]]:
        """The events of tools/call get-sum with these arguments, once there are `count`."""
        sha = args_sha(args)

        def mine() -> list[dict[str, Any]]:
            return [e for e in read_events(self.collector.out)
                    if e["request"].get("target") == TOOL and e["request"].get("args_sha256") == sha]

        return wait_until(mine, lambda es: len(es) >= count, 20, what,
                          describe=lambda es: json.dumps([summary(e) for e in es]))


def summary(e: dict[str, Any]) -> dict[str, Any]:
    a = e.get("approval") or {}
    return {"verdict": e["decision"]["verdict"], "rule": e["decision"]["rule"], "step": a.get("step"),
            "id": a.get("id"), "by": a.get("decided_by"), "reason": a.get("reason")}


def steps(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["decision"]["verdict"], (e.get("approval") or {}).get("step")) for e in events]


# ---------------------------------------------------------------- the approver, as a script

def pending_id(svc: Service, args: dict[str, Any], timeout: float = 20) -> str:
    """The id of the pending request for get-sum with these arguments, read from the
    approvers' page with alice's bearer token (the arguments are shown by their SHA-256)."""
    sha = args_sha(args)

    def read() -> str | None:
        req = urllib.request.Request(svc.url + "/", headers={"authorization": f"Bearer {ALICE}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            html = r.read().decode()
        for section in html.split('<section class="request"')[1:]:
            m = re.search(r'data-id="(apr_[0-9a-f]{32})"', section)
            if m and sha in section:
                return m.group(1)
        return None

    return wait_until(read, lambda v: v is not None, timeout, f"a pending request for {args}") or ""


def decide(svc: Service, apr: str, approve: bool, reason: str) -> None:
    status, answer = svc.call("POST", f"/v1/approvals/{apr}/decision", {"approve": approve, "reason": reason},
                              token=ALICE)
    assert status == 200, answer


def history(svc: Service, apr: str) -> list[str]:
    status, events = svc.call("GET", f"/v1/approvals/{apr}/events")
    assert status == 200, events
    return [e["kind"] for e in events["events"]]


def held_in_background(url: str, args: dict[str, Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["outcome"] = anyio.run(call, url, args)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def finished(t: threading.Thread, out: dict[str, Any]) -> tuple[str, Any]:
    t.join(60)
    assert not t.is_alive(), "the held call never completed"
    return out["outcome"]


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def rig(wasm: Path, mcp_server: harness.McpServer):
    if not CLI.exists():
        pytest.fail(f"{CLI} missing: cargo build --release -p mcp-firewall-cli")
    with tempfile.TemporaryDirectory(prefix="mcpfw-approval-trail-") as d:
        workdir = Path(d)
        svc = Service(workdir)
        collector = Collector(workdir, "collector")
        r = Rig(workdir, svc, collector, {}, mcp_server, wasm)
        try:
            collector.start()
            # The SDK's read timeout (60 s) exceeds the hold's 20 s.
            r.envoy("hold", policy(mode="hold", timeout_ms=20_000))
            r.envoy("expiring", policy(mode="hold", timeout_ms=10_000, ttl_ms=1_500))
            r.envoy("async", policy(mode="async", timeout_ms=2_000))
            yield r
        finally:
            for e in r.envoys.values():
                e.stop()
            collector.stop()
            svc.proc.stop()


@pytest.fixture()
def hot(rig: Rig):
    """envoy/hot-reload.yaml (the policy through ECDS from a watched file) with
    the approval service's and the collector's clusters."""
    ecds_dir = rig.workdir / "ecds"
    ecds_dir.mkdir(exist_ok=True)
    swap_in(ecds_dir, discovery_response(policy(mode="hold", timeout_ms=20_000), rig.wasm, rig.workdir))
    cfg = harness.hot_reload_config(rig.mcp_server.port, ecds_dir / "mcp_firewall.json")
    cfg["static_resources"]["clusters"] += [approvals_cluster(rig.svc.port), collector_cluster(rig.collector.port)]
    env = harness.Envoy(cfg, rig.workdir, name="envoy-hot-approval")
    try:
        yield env, ecds_dir
    finally:
        env.stop()


def reload(env: harness.Envoy, ecds_dir: Path, p: dict[str, Any], rig: Rig) -> None:
    pattern = "^" + ECDS_STAT.replace(".", r"\.") + "config_reload$"
    before = env.stats(pattern).get(ECDS_STAT + "config_reload", 0)
    swap_in(ecds_dir, discovery_response(p, rig.wasm, rig.workdir))
    wait_stat(env, "config_reload", before)


# ---------------------------------------------------------------- every step on the trail

def test_held_call_approved_requested_approved_by_alice_then_used(rig: Rig) -> None:
    env = rig.envoys["hold"]
    args = {"a": 2, "b": 40}
    t, out = held_in_background(env.url, args)
    apr = pending_id(rig.svc, args)
    decide(rig.svc, apr, True, REASON)
    outcome = finished(t, out)
    assert outcome[0] == "ok" and "42" in json.dumps(outcome[1].model_dump()), outcome
    events = rig.trail(args, 3, "requested, approved, used")
    assert steps(events) == [("approval", "requested"), ("approval", "approved"), ("allow", "used")], \
        [summary(e) for e in events]
    requested, approved, used = events
    assert requested["approval"]["id"] is None and "response" not in requested
    for e in (approved, used):
        assert e["approval"] == {"step": e["approval"]["step"], "id": apr, "decided_by": "alice@example.com",
                                 "reason": REASON}, e["approval"]
        assert e["decision"]["rule"] == RULE
    assert "approved by alice@example.com: " + REASON in used["decision"]["reason"], used["decision"]
    assert used["response"]["status"] == 200 and not used["response"]["is_error"], used
    assert used["identity"]["subject"] == "e2e-reader"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert history(rig.svc, apr) == ["requested", "approved", "used"]


def test_held_call_denied_names_the_approver_and_reason(rig: Rig) -> None:
    env = rig.envoys["hold"]
    args = {"a": 5, "b": 5}
    before = env.upstream_posts()
    t, out = held_in_background(env.url, args)
    apr = pending_id(rig.svc, args)
    decide(rig.svc, apr, False, "no sums today")
    outcome = finished(t, out)
    assert outcome[0] == "error" and outcome[1].code == APPROVAL, outcome
    assert outcome[1].message == "denied by approver", outcome
    events = rig.trail(args, 2, "requested, denied")
    assert steps(events) == [("approval", "requested"), ("approval", "denied")], [summary(e) for e in events]
    denied = events[1]
    assert denied["approval"] == {"step": "denied", "id": apr, "decided_by": "alice@example.com",
                                  "reason": "no sums today"}, denied
    assert "denied by alice@example.com: no sums today" in denied["decision"]["reason"], denied["decision"]
    assert denied["response"]["is_error"], denied
    assert env.upstream_posts() - before == 2, "initialize and initialized only: the call never reached the server"
    assert history(rig.svc, apr) == ["requested", "denied"]


def test_held_call_expired_is_on_the_trail(rig: Rig) -> None:
    env = rig.envoys["expiring"]
    args = {"a": 1, "b": 1}
    outcome = anyio.run(call, env.url, args)
    assert outcome[0] == "error" and outcome[1].message == "approval expired", outcome
    events = rig.trail(args, 2, "requested, expired")
    assert steps(events) == [("approval", "requested"), ("approval", "expired")], [summary(e) for e in events]
    apr = events[1]["approval"]["id"]
    assert apr and apr.startswith("apr_") and events[1]["approval"]["decided_by"] is None, events[1]
    assert outcome[1].data["approval_id"] == apr
    wait_until(lambda: history(rig.svc, apr), lambda h: h == ["requested", "expired"], 10, "the service's history")


def test_async_approved_then_retried_once_used_then_again_refused(rig: Rig) -> None:
    env = rig.envoys["async"]
    args = {"a": 20, "b": 22}
    first = anyio.run(call, env.url, args)
    assert first[0] == "error" and first[1].data["state"] == "pending", first
    apr = first[1].data["approval_id"]
    assert steps(rig.trail(args, 2, "first attempt")) == [("approval", "requested"), ("approval", "pending")]
    decide(rig.svc, apr, True, REASON)
    retry = anyio.run(call, env.url, args)
    assert retry[0] == "ok", retry
    again = anyio.run(call, env.url, args)
    assert again[0] == "error" and again[1].code == APPROVAL and again[1].data["state"] == "pending", again
    events = rig.trail(args, 6, "three attempts")
    assert steps(events) == [("approval", "requested"), ("approval", "pending"),
                             ("approval", "requested"), ("allow", "used"),
                             ("approval", "requested"), ("approval", "pending")], [summary(e) for e in events]
    assert events[1]["approval"]["id"] == apr and events[1]["approval"]["decided_by"] is None
    assert events[3]["approval"] == {"step": "used", "id": apr, "decided_by": "alice@example.com",
                                     "reason": REASON}, events[3]
    assert events[3]["response"]["status"] == 200
    fresh = events[5]["approval"]["id"]
    assert fresh not in (None, apr) and again[1].data["approval_id"] == fresh, events[5]
    assert history(rig.svc, apr) == ["requested", "approved", "used"]
    assert history(rig.svc, fresh) == ["requested"]


# ---------------------------------------------------------------- a client that goes away

def test_a_client_gone_while_held_spends_nothing_and_its_retry_uses_the_approval(rig: Rig) -> None:
    env = rig.envoys["hold"]
    args = {"a": 30, "b": 12}
    session = open_session(env.url, READER_KEY)
    body = json.dumps(rpc_call(TOOL, args, id=7))
    # The client gives up after 1.5 s of a 20 s hold: httpx closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        send(env.url, body=body, token=READER_KEY, headers=session, timeout=1.5)
    events = rig.trail(args, 2, "requested, abandoned")
    assert steps(events) == [("approval", "requested"), ("approval", "abandoned")], [summary(e) for e in events]
    assert events[1]["approval"]["id"] is None
    apr = pending_id(rig.svc, args)
    decide(rig.svc, apr, True, REASON)
    # Whatever the service's long poll does with the closed callout, the
    # approval is not used: it waits, approved, for the retry.
    time.sleep(0.5)
    status, state = rig.svc.call("GET", f"/v1/approvals/{apr}")
    assert status == 200 and state["state"] == "approved" and state["used_at_ms"] is None, state
    before = env.upstream_posts()
    retry = anyio.run(call, env.url, args)
    assert retry[0] == "ok" and "42" in json.dumps(retry[1].model_dump()), retry
    # initialize, initialized, the call (and the SDK's own tools/list after it).
    assert env.upstream_posts() - before >= 3
    events = rig.trail(args, 5, "the retry's requested, approved, used")
    assert steps(events[2:]) == [("approval", "requested"), ("approval", "approved"), ("allow", "used")], \
        [summary(e) for e in events]
    assert {e["approval"]["id"] for e in events[3:]} == {apr}
    assert history(rig.svc, apr) == ["requested", "approved", "used"]


# ---------------------------------------------------------------- hot reload while held

def test_reload_revoking_the_approve_rule_refuses_the_approved_held_call(rig: Rig, hot: Any) -> None:
    env, ecds_dir = hot
    args = {"a": 3, "b": 4}
    before = rig.mcp_server.posts_received()
    t, out = held_in_background(env.url, args)
    apr = pending_id(rig.svc, args)
    revoked = policy(mode="hold", timeout_ms=20_000)
    revoked["rules"] = [r for r in revoked["rules"] if r["id"] != RULE]
    revoked["rules"].append({"id": "no-sums", "effect": "deny", "tools": [TOOL]})
    reload(env, ecds_dir, revoked, rig)
    # The approver, who saw the request under the old policy, approves it.
    decide(rig.svc, apr, True, REASON)
    outcome = finished(t, out)
    assert outcome[0] == "error" and outcome[1].code == DENIED, outcome
    assert outcome[1].data["rule"] == "no-sums", outcome
    assert rig.mcp_server.posts_received() - before == 2, "initialize and initialized: the call never reached the server"
    events = rig.trail(args, 3, "requested, approved, refused by the new policy")
    assert steps(events) == [("approval", "requested"), ("approval", "approved"), ("deny", "policy_changed")], \
        [summary(e) for e in events]
    assert events[2]["decision"]["rule"] == "no-sums" and events[2]["approval"]["id"] == apr
    assert events[2]["policy_sha256"] != events[0]["policy_sha256"], "decided under the new policy"
    status, state = rig.svc.call("GET", f"/v1/approvals/{apr}")
    assert state["state"] == "approved" and state["used_at_ms"] is None, state
    assert history(rig.svc, apr) == ["requested", "approved"], "never used"


def test_reload_keeping_the_approve_rule_asks_anew_under_the_new_policy(rig: Rig, hot: Any) -> None:
    env, ecds_dir = hot
    args = {"a": 6, "b": 7}
    t, out = held_in_background(env.url, args)
    apr = pending_id(rig.svc, args)
    same_rule = policy(mode="hold", timeout_ms=20_000)
    same_rule["rules"].append({"id": "echo-too", "effect": "allow", "roles": ["reader"], "tools": ["echo"]})
    reload(env, ecds_dir, same_rule, rig)
    decide(rig.svc, apr, True, REASON)
    outcome = finished(t, out)
    assert outcome[0] == "error" and outcome[1].code == APPROVAL, outcome
    assert "policy changed" in outcome[1].data["reason"], outcome
    assert history(rig.svc, apr) == ["requested", "approved"], "the old policy's approval was not used"
    events = rig.trail(args, 3, "requested, approved, policy changed")
    assert steps(events) == [("approval", "requested"), ("approval", "approved"), ("approval", "policy_changed")]
    # Sent again, the call is another binding (the new policy's SHA-256): a new
    # request, which approved lets it through.
    t, out = held_in_background(env.url, args)
    fresh = wait_until(lambda: pending_id(rig.svc, args), lambda v: v != apr, 20, "a new request")
    decide(rig.svc, fresh, True, REASON)
    outcome = finished(t, out)
    assert outcome[0] == "ok", outcome
    events = rig.trail(args, 6, "the call sent again")
    assert steps(events[3:]) == [("approval", "requested"), ("approval", "approved"), ("allow", "used")]
    assert events[5]["policy_sha256"] == events[2]["policy_sha256"] != events[0]["policy_sha256"]


# ---------------------------------------------------------------- batches

def test_a_batch_with_an_approve_rule_call_is_refused_without_asking(rig: Rig) -> None:
    env = rig.envoys["hold"]
    args = {"a": 8, "b": 9}
    created = rig.svc.call("GET", "/v1/stats")[1]["created"]
    before = env.upstream_posts()
    session = open_session(env.url, READER_KEY)
    batch = [rpc_call(TOOL, args, id=1), rpc_call("echo", {"message": "hi"}, id=2)]
    r = send(env.url, body=json.dumps(batch), token=READER_KEY, headers=session)
    assert r.status_code == 200, r.text[:300]
    answers = {m.get("id"): m for m in messages(r)[-1]} if isinstance(messages(r)[-1], list) else {}
    assert answers, r.text[:500]
    err = answers[1]["error"]
    assert err["code"] == APPROVAL and err["data"]["approval_id"] is None, err
    assert "inside a batch" in err["data"]["reason"], err
    # All or nothing: the batch's other, allowed call is refused with it.
    assert answers[2]["error"]["code"] == DENIED and answers[2]["error"]["data"]["rule"] == "batch", answers[2]
    assert rig.svc.call("GET", "/v1/stats")[1]["created"] == created, "the service was never asked"
    assert env.upstream_posts() - before == 2, "initialize and initialized only: the batch never went upstream"
    events = rig.trail(args, 1, "the batch's refusal")
    assert [e["decision"]["verdict"] for e in events] == ["approval"] and "approval" not in events[0], events


def test_the_trail_verifies(rig: Rig) -> None:
    """Every event above, approval members included, is on one intact chain."""
    time.sleep(0.3)
    out = verify(rig.collector.out)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(e.get("approval") for e in read_events(rig.collector.out))
