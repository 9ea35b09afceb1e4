"""The approvers' page of `mcp-firewall approvals serve` in a real browser.

Debian's headless Chromium, driven by playwright-core (peers/browser/, `npm ci`
there on first use; Chromium itself is `apt-get install chromium`, also on first
use, not in scripts/setup.sh). The test does what the filter would (creates
requests through the API, long-polls, uses an approval) and what an approver
would (types the token, clicks approve / deny), and asserts on both sides:
approve → the long poll answers approved and one use passes; deny; expiry (a
stale form clicked after the request expired is refused); the approver's own
call has no buttons and cannot be decided; tool names and subjects full of
markup are shown as text (no element, no dialog). With UPDATE_SCREENSHOT=1 it
saves the README's screenshot to docs/approvals.png. Every process it starts (the service,
Chromium through Node) is stopped and its temp dir removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import harness

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
PEER = harness.REPO / "peers" / "browser"
DRIVER = Path(__file__).with_name("approvals_browser.mjs")
CHROMIUM = Path("/usr/lib/chromium/chromium")
# The README's picture is rewritten only when asked (UPDATE_SCREENSHOT=1), so a
# test run leaves the tree clean; otherwise the screenshot goes to the temp dir.
README_SCREENSHOT = harness.REPO / "docs" / "approvals.png"

FILTER, ALICE, BOB = "filter-e2e-token", "alice-e2e-token", "bob-e2e-token"
# Long enough for the browser to start and load the page with the request
# still pending; the test then waits past it and clicks the stale form.
EXPIRING_TTL_MS = 10_000
XSS_TOOL = "<img src=x onerror=alert(1)>"
XSS_SUBJECT = "<script>alert(2)</script>@evil"


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Debian's chromium is not installed and cannot be (not root, or no apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        if r.returncode != 0:
            pytest.skip(f"apt-get could not install chromium: {r.stderr[-500:]}")
    assert CHROMIUM.exists(), "chromium installed but not at /usr/lib/chromium/chromium"


def ensure_driver() -> None:
    if (PEER / "node_modules" / "playwright-core" / "package.json").exists():
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"npm ci in {PEER} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


class Service:
    def __init__(self, workdir: Path):
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "storage": f"sqlite:{workdir / 'approvals.db'}",
            "filter_tokens_sha256": [sha(FILTER)],
            "approvers": [{"subject": "alice@example.com", "token_sha256": sha(ALICE)},
                          {"subject": "bob@example.com", "token_sha256": sha(BOB)}],
            # Plain http on loopback in this test; a deployment keeps the default (true).
            "cookie_secure": False,
        }
        (workdir / "approvals.json").write_text(json.dumps(config))
        self.proc = harness.Proc("approvals", [str(CLI), "approvals", "serve", "--config",
                                               str(workdir / "approvals.json"), "--listen",
                                               f"127.0.0.1:{self.port}"], workdir / "approvals.log")
        harness._wait(lambda: harness.port_open(self.port), 30, "approval service", self.proc)

    def call(self, method: str, path: str, body: Any = None, token: str = FILTER,
             timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"authorization": f"Bearer {token}",
                                              "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def create(self, subject: str, tool: str, args: dict[str, Any] | None, *, show_args: bool = True,
               ttl_ms: int | None = None, findings: list[dict[str, str]] | None = None,
               tenant: str = "acme") -> tuple[str, dict[str, Any]]:
        binding = {"subject": subject, "tenant": tenant, "tool": tool,
                   "args_sha256": sha(json.dumps(args, sort_keys=True)), "policy_sha256": sha("policy")}
        summary: dict[str, Any] = {"method": "tools/call", "target": tool}
        if show_args:
            summary["arguments"] = args
        if findings:
            summary["findings"] = findings
        body: dict[str, Any] = {"binding": binding, "rule": f"approve-{tool[:20]}", "summary": summary}
        if ttl_ms:
            body["ttl_ms"] = ttl_ms
        status, answer = self.call("POST", "/v1/approvals", body)
        assert status == 201, answer
        return answer["approval_id"], binding


def browse(service: Service, workdir: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir))
    plan = workdir / "plan.json"
    plan.write_text(json.dumps({"url": service.url, "chromium": str(CHROMIUM),
                                "profile": str(profile), "steps": steps}))
    r = subprocess.run(["node", str(DRIVER), str(plan)], capture_output=True, text=True, timeout=180,
                       start_new_session=True)
    assert r.returncode == 0, f"browser driver failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    shutil.rmtree(profile, ignore_errors=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def service():
    if not CLI.exists():
        pytest.fail(f"{CLI} missing: cargo build --release -p mcp-firewall-cli")
    ensure_chromium()
    ensure_driver()
    with tempfile.TemporaryDirectory(prefix="mcpfw-approvals-") as d:
        workdir = Path(d)
        s = Service(workdir)
        try:
            yield s, workdir
        finally:
            s.proc.stop()


def test_approver_decides_on_the_page_and_the_filter_sees_it(service) -> None:
    svc, workdir = service
    # What the README shows: realistic requests, arguments shown or hidden by policy.
    refund, refund_binding = svc.create("agent-billing@acme", "create_refund",
                                        {"order": "A-1042", "amount": 120, "currency": "EUR"})
    merge, _ = svc.create("ci-bot@acme", "merge_pull_request", {"repo": "payments", "pr": 311})
    export, _ = svc.create("agent-support@acme", "export_customer_data", {"customer": "c-77"},
                           show_args=False, findings=[{"kind": "email", "path": "/customer_note"}])
    own, _ = svc.create("alice@example.com", "delete_branch", {"branch": "release-1.2"})
    screenshot = README_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else workdir / "approvals.png"
    shot = browse(svc, workdir, [{"do": "login", "token": ALICE},
                                 {"do": "screenshot", "path": str(screenshot), "full": True}])
    assert shot["results"][0]["viewer"] == "alice@example.com", shot
    assert screenshot.stat().st_size > 10_000

    # Caller-controlled markup, a request that will expire, and one to deny.
    xss, _ = svc.create(XSS_SUBJECT, XSS_TOOL, {"q": "<b>bold</b>\"'&"})
    expiring, expiring_binding = svc.create("agent-ops@acme", "restart_service", {"name": "db"},
                                            ttl_ms=EXPIRING_TTL_MS)
    expires_at = svc.call("GET", f"/v1/approvals/{expiring}")[1]["expires_at_ms"]

    # The filter's hold mode: a long poll on the refund while the approver clicks.
    polled: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: polled.update(
        answer=svc.call("GET", f"/v1/approvals/{refund}?wait_ms=60000", timeout=90)))
    poller.start()
    t0 = time.monotonic()
    run = browse(svc, workdir, [
        {"do": "login", "token": ALICE},
        {"do": "inspect"},
        {"do": "approve", "id": refund, "reason": "order checked"},
        {"do": "deny", "id": merge, "reason": "not during the freeze"},
        {"do": "sleep_until", "epoch_ms": expires_at + 500},
        # The form was loaded before the request expired.
        {"do": "approve", "id": expiring, "reason": "late"},
        {"do": "reload"},
        {"do": "inspect"},
    ])
    poller.join(timeout=90)
    login, before, approved, denied, _, stale, _, after = run["results"]
    assert run["dialogs"] == [], "a script ran on the page"

    # Escaping: the markup is text, never an element.
    assert before["viewer"] == "alice@example.com"
    assert before["images"] == 0 and before["scripts"] == 0
    rows = {r["id"]: r for r in before["pending"]}
    assert rows[xss]["tool"] == XSS_TOOL and rows[xss]["subject"] == XSS_SUBJECT
    assert rows[xss]["arguments"] is not None and "<b>bold</b>" in rows[xss]["arguments"]
    # Arguments hidden by policy: only their digest.
    assert rows[export]["arguments"] is None and sha(json.dumps({"customer": "c-77"})) in rows[export]["hidden_args"]
    # The approver's own call: no buttons.
    assert not rows[own]["approve_button"] and not rows[own]["deny_button"] and rows[own]["own"]
    assert rows[refund]["approve_button"] and rows[refund]["deny_button"]

    # Approve: the long poll answered approved, and one use passes.
    assert approved["url"].rstrip("/") == svc.url and approved["status"] == 200
    status, answer = polled["answer"]
    assert status == 200 and answer["state"] == "approved", answer
    assert answer["decided_by"] == "alice@example.com" and answer["reason"] == "order checked"
    assert time.monotonic() - t0 < 60
    assert svc.call("POST", f"/v1/approvals/{refund}/use", {"binding": refund_binding})[0] == 200
    assert svc.call("POST", f"/v1/approvals/{refund}/use", {"binding": refund_binding})[0] == 409

    # Deny.
    assert denied["status"] == 200
    assert svc.call("GET", f"/v1/approvals/{merge}")[1]["state"] == "denied"

    # Expiry: the stale click is refused, nothing became usable.
    assert stale["status"] == 409 and "expired" in (stale["alert"] or ""), stale
    assert svc.call("GET", f"/v1/approvals/{expiring}")[1]["state"] == "expired"
    assert svc.call("POST", f"/v1/approvals/{expiring}/use", {"binding": expiring_binding})[0] == 409

    history = {r["id"]: r for r in after["history"]}
    assert history[refund]["state"] == "approved" and history[refund]["by"] == "alice@example.com"
    assert history[merge]["state"] == "denied" and history[merge]["reason"] == "not during the freeze"
    assert history[expiring]["state"] == "expired"
    assert {r["id"] for r in after["pending"]} == {export, own, xss}

    # Self-approval through the API is refused too; bob can decide it.
    status, answer = svc.call("POST", f"/v1/approvals/{own}/decision", {"approve": True}, token=ALICE)
    assert status == 403, answer
    assert svc.call("POST", f"/v1/approvals/{own}/decision", {"approve": True}, token=BOB)[0] == 200
    events = [e["kind"] for e in svc.call("GET", f"/v1/approvals/{own}/events")[1]["events"]]
    assert events == ["requested", "decision_refused", "approved"]
    assert login["viewer"] == "alice@example.com", login
