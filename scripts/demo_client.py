"""The demo's MCP client: the official Python SDK, unmodified, talking to
server-everything through Envoy + mcp-firewall (scripts/demo.sh starts them;
the compose demo, deploy/compose/, runs it in its `demo` service).

The caller's identity is an API key in `Authorization: Bearer ...`, passed through
the headers of the httpx2 client handed to the SDK's streamable HTTP transport.
Sections whose URL or file is not given are skipped: `--dry-run` (the dry-run
Envoy), `--files` (the filesystem server behind its stdio bridge), `--audit-trail`
(the collector's NDJSON, checked with `mcp-firewall audit verify`). Exit 1 when
anything comes out other than the demo says.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def title(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


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
    title("1. The server's tool list, as each caller sees it (tools/list is filtered per caller)")
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

    title("2. An allowed call: reader -> echo")
    async with session(a.enforce, a.reader_key) as s:
        res = await s.call_tool("echo", {"message": "hello through the firewall"})
        print(f"   {GREEN}allowed{RESET}: {res.content[0].text!r}")

    title("3. A denied call: reader -> get-env (would print the server's environment)")
    async with session(a.enforce, a.reader_key) as s:
        try:
            await s.call_tool("get-env", {})
            print(f"   {RED}UNEXPECTED: the call went through{RESET}")
            return 1
        except MCPError as e:
            show_error(e)
            print(f"   {DIM}the request never reached the server{RESET}")

    title("4. No API key at all")
    try:
        async with session(a.enforce, None) as s:
            print(f"   {RED}UNEXPECTED: initialized without identity{RESET}")
            return 1
    except BaseException as e:  # the SDK surfaces the 401's JSON-RPC error (maybe in an ExceptionGroup)
        mcp_err = first_mcp_error(e)
        msg = f"{mcp_err.code} {mcp_err}" if mcp_err else repr(e)
        print(f"   {RED}refused{RESET} with HTTP 401 before anything reached the server: {msg}")

    title("5. Sensitive data in arguments: reader -> echo with a GitHub token in the message")
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
        title("6. The same denied call under a dry-run policy (mode: dry_run, second Envoy)")
        responses: list[Any] = []
        async with session(a.dry_run, a.reader_key, responses) as s:
            del responses[:]
            res = await s.call_tool("get-env", {})
            verdicts = [r.headers.get("x-mcp-firewall-dry-run") for r in responses if r.request.method == "POST"]
            verdict = next((v for v in verdicts if v and v.startswith("deny")), None) or verdicts
            text = "".join(getattr(c, "text", "") or "" for c in res.content)
            print(f"   {YELLOW}not enforced{RESET}: the server ran get-env ({len(text)} characters, not shown)")
            print(f"   x-mcp-firewall-dry-run: {verdict}")

    if a.files:
        title("7. A server that only speaks stdio (filesystem server behind a stdio-to-HTTP bridge)")
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
        title("8. The audit trail the collector stored: mcp-firewall audit verify")
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
    ap.add_argument("--files", help="URL through Envoy + mcp-firewall to the filesystem server's bridge (section 7)")
    ap.add_argument("--audit-trail", help="the collector's NDJSON file, checked with `mcp-firewall audit verify`")
    ap.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for the URLs to accept connections")
    ap.add_argument("--reader-key", default="demo-reader-key")
    ap.add_argument("--admin-key", default="demo-admin-key")
    sys.exit(anyio.run(main, ap.parse_args()))
