"""Reading one HTTP/1.1 request off a stream, for the scripted peers
(channels_server.py, split_sse_server.py, test_list_splice_attack.py): they
answer with bytes a real MCP server would not send, so they speak HTTP
themselves."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    """The next request's headers (names lower-cased) and body (by
    content-length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return headers, body


async def read_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
    """The next JSON-RPC request a client sends; what has no id (a
    notification, a response) is answered 202 on the way."""
    while True:
        _, body = await read_request(reader)
        msg = json.loads(body) if body else {}
        if msg.get("id") is not None:
            return msg
        writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()


def json_answer(body: bytes, headers: bytes = b"") -> bytes:
    """A 200 with `body` as application/json (and any extra header lines, each ending in CRLF)."""
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + headers
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
