"""Raw HTTP helpers (httpx) for the cases an MCP SDK cannot produce on purpose:
batches, duplicate keys, escaped names, disagreeing Mcp-* headers, gzip bodies,
odd content types and methods, invalid UTF-8, tiny chunks.

And small helpers around the official SDK client (mcp.ClientSession over
mcp.client.streamable_http.streamable_http_client), which is used unmodified:
identity goes in through the headers of the httpx2.AsyncClient handed to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-11-25"


def headers_for(token: str | None = None, extra: dict[str, str] | None = None,
                content_type: str | None = "application/json") -> dict[str, str]:
    h = {"Accept": ACCEPT}
    if content_type is not None:
        h["Content-Type"] = content_type
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(extra or {})
    return h


def send(url: str, *, method: str = "POST", body: bytes | str | Iterable[bytes] | None = None,
         token: str | None = None, headers: dict[str, str] | None = None,
         content_type: str | None = "application/json", timeout: float = 30.0) -> httpx.Response:
    """One HTTP request; the body is sent exactly as given (bytes, or an iterable = chunked)."""
    if isinstance(body, str):
        body = body.encode()
    with httpx.Client(timeout=timeout) as c:
        return c.request(method, url, content=body, headers=headers_for(token, headers, content_type))


def rpc(method: str, params: dict[str, Any] | None = None, id: int | str | None = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return msg


def call(name: str, arguments: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": arguments or {}}, id)


def messages(resp: httpx.Response) -> list[Any]:
    """JSON-RPC messages in a response: a JSON body, or the data of each SSE event."""
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        out: list[Any] = []
        for event in resp.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip(" ") if line.startswith("data:") else ""
                             for line in event.split("\n") if line.startswith("data:"))
            if data.strip():
                out.append(json.loads(data))
        return out
    if not resp.content:
        return []
    return [json.loads(resp.content)]


def open_session(url: str, token: str) -> dict[str, str]:
    """Raw initialize + notifications/initialized; returns the session headers to reuse."""
    init = rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": {"name": "mcp-firewall-e2e-raw", "version": "0"}}, id=0)
    r = send(url, body=json.dumps(init), token=token)
    if r.status_code != 200 or "mcp-session-id" not in r.headers:
        raise AssertionError(f"raw initialize failed: {r.status_code} {r.headers} {r.text[:500]}")
    sess = {"Mcp-Session-Id": r.headers["mcp-session-id"], "Mcp-Protocol-Version": PROTOCOL_VERSION}
    r2 = send(url, body=json.dumps(rpc("notifications/initialized", id=None)), token=token, headers=sess)
    if r2.status_code not in (200, 202):
        raise AssertionError(f"notifications/initialized failed: {r2.status_code} {r2.text[:500]}")
    return sess


# --------------------------------------------------------------------------- official SDK

@asynccontextmanager
async def sdk_session(url: str, token: str | None = None, headers: dict[str, str] | None = None,
                      seen: list[Any] | None = None, logging_callback: Any = None) -> AsyncIterator[Any]:
    """An initialized mcp.ClientSession through ``url``, settled.

    ``logging_callback``: the session's handler of the server's log messages.
    ``seen``: if given, every HTTP response the SDK receives is appended as
    (method, status, headers) so tests can look at headers the SDK does not surface.

    Settled: the SDK sends `notifications/initialized` in the background after
    initialize() returns; we wait until its answer came back, so a test that reads
    Envoy's counters afterwards does not count it by chance.
    """
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    initialized = anyio.Event()

    async def record(resp: Any) -> None:
        if seen is not None:
            seen.append((resp.request.method, resp.status_code, dict(resp.headers)))
        if resp.request.method == "POST" and b'"notifications/initialized"' in (resp.request.content or b""):
            initialized.set()

    timeout = httpx2.Timeout(30.0, read=60.0)
    async with httpx2.AsyncClient(headers=h, timeout=timeout, event_hooks={"response": [record]}) as hc:
        async with streamable_http_client(url, http_client=hc) as (read, write):
            extra = {"logging_callback": logging_callback} if logging_callback is not None else {}
            async with ClientSession(read, write, **extra) as session:
                await session.initialize()
                with anyio.fail_after(30):
                    await initialized.wait()
                yield session
