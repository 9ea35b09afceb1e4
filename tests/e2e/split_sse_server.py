"""A deliberately awkward MCP peer: it answers list requests with SSE cut into
tiny pieces, flushed one by one, so each piece reaches the filter as its own
body chunk (frames split mid-line, mid-UTF-8 character, mid-CRLF).

Real servers rarely do this on loopback, so this peer is what lets the e2e suite
check the filter's incremental SSE framing inside a real Envoy. It speaks just
enough streamable HTTP for raw tests: initialize (JSON), tools/list and
prompts/list (SSE), tools/call echo (SSE), notifications (202).

    python tests/e2e/split_sse_server.py PORT PIECE_BYTES LINE_ENDING(lf|crlf)
"""

from __future__ import annotations

import asyncio
import json
import sys

from http1_request import json_answer, read_call

TOOLS = [
    {"name": name, "description": f"the {name} tool \u2014 caf\u00e9 \u2603", "inputSchema": {"type": "object"}}
    for name in ["echo", "get-sum", "get-env", "get-tiny-image", "get-annotated-message"]
]
PROMPTS = [{"name": "simple-prompt"}, {"name": "other-prompt"}]


def sse(messages: list[dict], eol: bytes) -> bytes:
    out = b": priming comment" + eol + eol
    for i, m in enumerate(messages):
        data = json.dumps(m, ensure_ascii=False).encode()
        out += b"event: message" + eol + b"id: " + str(i).encode() + eol + b"data: " + data + eol + eol
    return out


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: int, eol: bytes) -> None:
    try:
        while True:
            msg = await read_call(reader, writer)
            method, id_ = msg.get("method"), msg.get("id")
            if method == "initialize":
                res = json.dumps({"jsonrpc": "2.0", "id": id_, "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}},
                    "serverInfo": {"name": "split-sse", "version": "0"}}}).encode()
                writer.write(json_answer(res, b"mcp-session-id: split-1\r\n"))
                await writer.drain()
                continue
            if method == "tools/list":
                result = {"tools": TOOLS}
            elif method == "prompts/list":
                result = {"prompts": PROMPTS}
            elif method == "tools/call":
                text = "Echo: " + str(((msg.get("params") or {}).get("arguments") or {}).get("message"))
                result = {"content": [{"type": "text", "text": text}]}
            else:
                result = {}
            payload = sse([{"jsonrpc": "2.0", "id": id_, "result": result}], eol)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            await writer.drain()
            for i in range(0, len(payload), piece):
                part = payload[i:i + piece]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.002)  # a separate TCP segment, so a separate body chunk in Envoy
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, piece: int, eol: bytes) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, piece, eol), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), b"\r\n" if sys.argv[3] == "crlf" else b"\n"))
