"""The demo's MCP client: the official Python SDK, unmodified, talking to
server-everything through Envoy + mcp-firewall (scripts/demo.sh starts them;
the compose demo, deploy/compose/, runs it in its `demo` service).

The caller's identity is an API key in `Authorization: Bearer ...`, passed through
the headers of the httpx2 client handed to the SDK's streamable HTTP transport.
Sections whose URL or file is not given are skipped: `--dry-run` (the dry-run
Envoy), `--approval` and `--approvals` (an Envoy whose policy makes get-sum need a
person's approval, and the approval service: the demo plays the approver with
`--approver-token`, as a script of an approver would), `--files` (the filesystem
server behind its stdio bridge), `--audit-trail` (the collector's NDJSON, checked
with `mcp-firewall audit verify`). Exit 1 when anything comes out other than the
demo says.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

BOLD, DIM, GREEN, RED, YELLOW, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = YELLOW = RESET = ""


# A made-up GitHub token: the shape DLP knows, the value nobody's.
TOKEN = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"


SECTION = 0


def title(text: str) -> None:
    global SECTION
    SECTION += 1
    print(f"\n{BOLD}== {SECTION}. {text}{RESET}", flush=True)


def wait_for(urls: list[str], seconds: float) -> None:
    """Until each URL's host:port accepts a connection (Envoy, the servers starting)."""
    deadline = time.monotonic() + seconds
    for url in urls:
        u = urlsplit(url)
        while True:
            try:
                with socket.create_connection((u.hostname or "", u.port or 80), timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url}: nothing listens after {seconds:.0f} s")
                time.sleep(0.5)


@asynccontextmanager
async def session(url: str, key: str | None, responses: list[Any] | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def keep(resp: httpx2.Response) -> None:
        if responses is not None:
            responses.append(resp)

    async with httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [keep]}) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s


async def tool_names(url: str, key: str) -> list[str]:
    async with session(url, key) as s:
        return sorted(t.name for t in (await s.list_tools()).tools)


def first_mcp_error(e: BaseException) -> MCPError | None:
    if isinstance(e, MCPError):
        return e
    for sub in getattr(e, "exceptions", []):
        found = first_mcp_error(sub)
        if found:
            return found
    return None


def show_error(e: MCPError) -> None:
    data = e.data if isinstance(e.data, dict) else {}
    print(f"   {RED}refused{RESET}: JSON-RPC error {e.code} ({e.message})")
    print(f"   rule   = {data.get('rule')}")
    print(f"   reason = {data.get('reason')}")


async def main(a: argparse.Namespace) -> int:
    if a.wait:
        wait_for([u for u in (a.server, a.enforce, a.dry_run, a.files) if u], a.wait)
    title("The server's tool list, as each caller sees it (tools/list is filtered per caller)")
    direct = await tool_names(a.server, "")
    reader = await tool_names(a.enforce, a.reader_key)
    admin = await tool_names(a.enforce, a.admin_key)
    print(f"   server-everything offers {len(direct)} tools (asked directly, no firewall)")
    print(f"   reader sees {len(reader)}: {', '.join(reader)}")
    print(f"   admin  sees {len(admin)}: {', '.join(admin)}")
    if reader != ["echo", "get-sum"] or "get-env" in admin or not set(admin) < set(direct):
        print(f"   {RED}UNEXPECTED: the lists were not filtered as policies/demo.json says{RESET}")
        return 1
    hidden = sorted(set(direct) - set(admin))
    print(f"   {DIM}hidden from everyone (rule no-env denies it unconditionally): {', '.join(hidden)}{RESET}")

    title("An allowed call: reader -> echo")
    async with session(a.enforce, a.reader_key) as s:
        res = await s.call_tool("echo", {"message": "hello through the firewall"})
        print(f"   {GREEN}allowed{RESET}: {res.content[0].text!r}")

    title("A denied call: reader -> get-env (would print the server's environment)")
    async with session(a.enforce, a.reader_key) as s:
        try:
            await s.call_tool("get-env", {})
            print(f"   {RED}UNEXPECTED: the call went through{RESET}")
            return 1
        except MCPError as e:
            show_error(e)
            print(f"   {DIM}the request never reached the server{RESET}")

    title("No API key at all")
    try:
        async with session(a.enforce, None) as s:
            print(f"   {RED}UNEXPECTED: initialized without identity{RESET}")
            return 1
    except BaseException as e:  # the SDK surfaces the 401's JSON-RPC error (maybe in an ExceptionGroup)
        mcp_err = first_mcp_error(e)
        msg = f"{mcp_err.code} {mcp_err}" if mcp_err else repr(e)
        print(f"   {RED}refused{RESET} with HTTP 401 before anything reached the server: {msg}")

    title("Sensitive data in arguments: reader -> echo with a GitHub token in the message")
    async with session(a.enforce, a.reader_key) as s:
        try:
            await s.call_tool("echo", {"message": f"deploy with {TOKEN} please"})
            print(f"   {RED}UNEXPECTED: the call went through{RESET}")
            return 1
        except MCPError as e:
            data = e.data if isinstance(e.data, dict) else {}
            print(f"   {RED}blocked{RESET}: JSON-RPC error {e.code} ({e.message}), rule = {data.get('rule')}")
            print(f"   findings = {json.dumps(data.get('findings'))}")
            print(f"   {DIM}the token never reached the server{RESET}")
            if e.code != -32013:
                return 1

    if a.dry_run:
        title("The same denied call under a dry-run policy (mode: dry_run, second Envoy)")
        responses: list[Any] = []
        async with session(a.dry_run, a.reader_key, responses) as s:
            del responses[:]
            res = await s.call_tool("get-env", {})
            verdicts = [r.headers.get("x-mcp-firewall-dry-run") for r in responses if r.request.method == "POST"]
            verdict = next((v for v in verdicts if v and v.startswith("deny")), None) or verdicts
            text = "".join(getattr(c, "text", "") or "" for c in res.content)
            print(f"   {YELLOW}not enforced{RESET}: the server ran get-env ({len(text)} characters, not shown)")
            print(f"   x-mcp-firewall-dry-run: {verdict}")

    if a.approval and a.approvals and a.approver_token:
        if await approval_section(a) != 0:
            return 1

    if a.files:
        title("A server that only speaks stdio (filesystem server behind a stdio-to-HTTP bridge)")
        reader_files = await tool_names(a.files, a.reader_key)
        async with session(a.files, a.admin_key) as s:
            admin_files = sorted(t.name for t in (await s.list_tools()).tools)
            print(f"   reader sees {len(reader_files)} of its tools, admin {len(admin_files)} "
                  f"(policies/demo.json allows the reader only echo and get-sum)")
            readme = (await s.call_tool("read_text_file", {"path": "/srv/docs/readme.txt"})).content[0].text
            print(f"   {GREEN}allowed{RESET}: admin reads /srv/docs/readme.txt: {readme.strip()!r}")
            env = (await s.call_tool("read_text_file", {"path": "/srv/docs/deploy.env"})).content[0].text
            print(f"   {YELLOW}redacted{RESET}: admin reads /srv/docs/deploy.env: {env.strip()!r}")
            if reader_files or TOKEN in env or "[REDACTED:" not in env:
                print(f"   {RED}UNEXPECTED: the answer was not filtered or redacted{RESET}")
                return 1

    if a.audit_trail:
        title("The audit trail the collector stored: mcp-firewall audit verify")
        events = settled_lines(a.audit_trail)
        verify = subprocess.run(["mcp-firewall", "audit", "verify", a.audit_trail], capture_output=True, text=True)
        print("   " + (verify.stdout + verify.stderr).strip().replace("\n", "\n   "))
        verdicts: dict[str, int] = {}
        for line in events:
            v = json.loads(line)["decision"]["verdict"]
            verdicts[v] = verdicts.get(v, 0) + 1
        print(f"   {len(events)} events: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())))
        if verify.returncode != 0 or not events:
            print(f"   {RED}UNEXPECTED: audit verify exit {verify.returncode}, {len(events)} events{RESET}")
            return 1
    return 0


async def approval_section(a: argparse.Namespace) -> int:
    """A held call, approved by an approver through the approval service, then completed."""
    title("A call that needs a person's approval: reader -> get-sum (rule sum-needs-approval, hold mode)")
    args = {"a": 2, "b": 40}
    approver = {"Authorization": f"Bearer {a.approver_token}"}
    out: dict[str, Any] = {}

    async def caller() -> None:
        t0 = time.monotonic()
        async with session(a.approval, a.reader_key) as s:
            out["result"] = await s.call_tool("get-sum", args)
        out["waited"] = time.monotonic() - t0

    async with httpx2.AsyncClient(base_url=a.approvals, headers=approver, timeout=10) as svc:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            # The approver's view: the pending requests on the service's page
            # (read with the approver's token, as a script of theirs would).
            row = None
            for _ in range(100):
                page = (await svc.get("/")).text
                row = pending_row(page, "get-sum", "reader-bot")
                if row:
                    break
                await anyio.sleep(0.1)
            if row is None:
                print(f"   {RED}UNEXPECTED: no pending request for get-sum on the approvers' page{RESET}")
                tg.cancel_scope.cancel()
                return 1
            print(f"   {YELLOW}held{RESET}: the firewall holds the call until a person decides")
            print(f"   the approvers' page shows it: {row['tool']} asked by {row['subject']}, "
                  f"rule {row['rule']}, approval {row['id']}")
            print(f"   {DIM}arguments {row['args']}{RESET}")
            decided = await svc.post(f"/v1/approvals/{row['id']}/decision",
                                     json={"approve": True, "reason": "2 + 40 is fine"})
            print(f"   alice@example.com approves it (POST /v1/approvals/{row['id']}/decision with her "
                  f"token): HTTP {decided.status_code}")
        res = out.get("result")
        text = res.content[0].text if res is not None and res.content else ""
        print(f"   {GREEN}approved{RESET}: the held call completed, {out.get('waited', 0):.1f} s after it was sent: {text!r}")
        history = (await svc.get(f"/v1/approvals/{row['id']}/events")).json().get("events", [])
        steps = ", ".join(f"{e['kind']}" + (f" by {e['actor']}" if e.get("actor") and e["kind"] != "used" else "")
                          for e in history)
        print(f"   the service's record of approval {row['id']}: {steps}")
        if decided.status_code != 200 or "42" not in text or [e["kind"] for e in history] != [
                "requested", "approved", "used"]:
            print(f"   {RED}UNEXPECTED: the approval did not go as described{RESET}")
            return 1
    return 0


def pending_row(page: str, tool: str, subject: str) -> dict[str, str] | None:
    """The first pending request for `tool` asked by `subject` on the approvers' page."""
    def text(cls: str, section: str) -> str:
        m = re.search(rf'class="{cls}"[^>]*>(.*?)</', section, re.S)
        return html.unescape(m.group(1)).strip() if m else ""

    for section in page.split('<section class="request"')[1:]:
        m = re.search(r'data-id="(apr_[0-9a-f]{32})"', section)
        if m and text("tool", section) == tool and text("subject", section) == subject:
            hidden = re.search(r'class="hidden-args">(.*?)</dd>', section, re.S)
            args = text("arguments", section) or html.unescape(re.sub(r"<[^>]+>", "", hidden.group(1) if hidden else ""))
            return {"id": m.group(1), "tool": tool, "subject": subject, "rule": text("rule", section),
                    "args": args}
    return None


def settled_lines(path: str, quiet_s: float = 1.5, limit_s: float = 20) -> list[str]:
    """The trail's lines once it stopped growing for quiet_s: Envoy sends events in
    batches every 200 ms (audit.flush_ms), the last ones just after the last answer."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line for line in f if line.strip()]
        except FileNotFoundError:
            lines = []
        now = time.monotonic()
        if len(lines) != last:
            last, since = len(lines), now
        elif now - since >= quiet_s or now > deadline:
            return lines
        time.sleep(0.25)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the SDK's own warnings would clutter the demo
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server", required=True, help="server-everything's own URL (no firewall)")
    ap.add_argument("--enforce", required=True, help="URL through Envoy + mcp-firewall (policies/demo.json)")
    ap.add_argument("--dry-run", help="URL through Envoy + mcp-firewall, mode dry_run (section 6)")
    ap.add_argument("--approval", help="URL through Envoy + mcp-firewall whose policy makes get-sum need approval")
    ap.add_argument("--approvals", help="the approval service's base URL (mcp-firewall approvals serve)")
    ap.add_argument("--approver-token", help="an approver's token for the approval service (the demo approves)")
    ap.add_argument("--files", help="URL through Envoy + mcp-firewall to the filesystem server's bridge (section 7)")
    ap.add_argument("--audit-trail", help="the collector's NDJSON file, checked with `mcp-firewall audit verify`")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for the URLs to accept connections")
    ap.add_argument("--reader-key", default="demo-reader-key")
    ap.add_argument("--admin-key", default="demo-admin-key")
    sys.exit(anyio.run(main, ap.parse_args()))
