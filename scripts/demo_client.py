"""The demo's MCP client: the official Python SDK, unmodified, talking to
server-everything through Envoy + mcp-firewall (scripts/demo.sh starts them).

The caller's identity is an API key in `Authorization: Bearer ...`, passed through
the headers of the httpx2 client handed to the SDK's streamable HTTP transport.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

BOLD, DIM, GREEN, RED, YELLOW, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = YELLOW = RESET = ""


def title(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}")


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
    title("1. The server's tool list, as each caller sees it (tools/list is filtered per caller)")
    direct = await tool_names(a.server, "")
    reader = await tool_names(a.enforce, a.reader_key)
    admin = await tool_names(a.enforce, a.admin_key)
    print(f"   server-everything offers {len(direct)} tools (asked directly, no firewall)")
    print(f"   reader sees {len(reader)}: {', '.join(reader)}")
    print(f"   admin  sees {len(admin)}: {', '.join(admin)}")
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

    title("5. The same denied call under a dry-run policy (mode: dry_run, second Envoy)")
    responses: list[Any] = []
    async with session(a.dry_run, a.reader_key, responses) as s:
        del responses[:]
        res = await s.call_tool("get-env", {})
        verdicts = [r.headers.get("x-mcp-firewall-dry-run") for r in responses if r.request.method == "POST"]
        verdict = next((v for v in verdicts if v and v.startswith("deny")), None) or verdicts
        text = "".join(getattr(c, "text", "") or "" for c in res.content)
        print(f"   {YELLOW}not enforced{RESET}: the server ran get-env ({len(text)} characters, not shown)")
        print(f"   x-mcp-firewall-dry-run: {verdict}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the SDK's own warnings would clutter the demo
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server", required=True, help="server-everything's own URL (no firewall)")
    ap.add_argument("--enforce", required=True, help="URL through Envoy + mcp-firewall (policies/demo.json)")
    ap.add_argument("--dry-run", required=True, help="URL through Envoy + mcp-firewall, mode dry_run")
    ap.add_argument("--reader-key", default="demo-reader-key")
    ap.add_argument("--admin-key", default="demo-admin-key")
    sys.exit(anyio.run(main, ap.parse_args()))
