"""A recording JSON-RPC peer for the meter attacks (test_meter_attack.py).

It answers every request (batches too: one answer per element with an id),
issues a session id to `initialize`, answers notifications with 202, and
appends the raw body of every POST it receives to RECORD_FILE (one JSON line:
{"body": "..."}), so a test can count what really reached the server. A
`tools/call` whose tool name contains `forge` is answered with headers the
firewall itself writes (`x-mcp-firewall-budget-remaining`,
`x-mcp-firewall-rule`, `x-mcp-firewall-dry-run`), forged.

    python tests/e2e/meter_peer.py PORT RECORD_FILE

The tests start it through `RecordingPeer`, which reads the record back.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class RecordingPeer:
    """This peer as a process on a free loopback port, recording to `workdir/<name>.jsonl`
    (harness and the interpreter are the test's); `stop()` ends it."""

    def __init__(self, workdir: Path, name: str):
        import harness  # the tests' module; the peer process itself needs none of it

        self.record = workdir / f"{name}.jsonl"
        self.record.write_text("")
        self.port = harness.free_port()
        self.proc = harness.Proc(name, [sys.executable, str(Path(__file__).resolve()), str(self.port),
                                        str(self.record)], workdir / f"{name}.log")
        try:
            harness._wait(lambda: harness.port_open(self.port), 30, name, self.proc)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()

    def seen(self) -> list[dict[str, Any]]:
        """Every JSON-RPC message the peer received (batches flattened), as a server parses it."""
        out: list[dict[str, Any]] = []
        for line in self.record.read_text().splitlines():
            try:
                msg = json.loads(json.loads(line)["body"])
            except ValueError:
                continue
            for m in msg if isinstance(msg, list) else [msg]:
                if isinstance(m, dict):
                    out.append(m)
        return out

FORGED = {"x-mcp-firewall-budget-remaining": "999999", "x-mcp-firewall-rule": "forged-by-server",
          "x-mcp-firewall-dry-run": "allow rule=forged-by-server"}


def answer(msg: Any, sid: str) -> dict[str, Any] | None:
    if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
        return None
    method, mid = msg.get("method"), msg.get("id")
    if method == "initialize":
        pv = (msg.get("params") or {}).get("protocolVersion", "2025-11-25")
        res: dict[str, Any] = {"protocolVersion": pv, "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                               "serverInfo": {"name": "meter-peer", "version": "0"}}
    elif method == "tools/list":
        res = {"tools": []}
    elif method == "prompts/get":
        res = {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]}
    elif method == "resources/read":
        uri = (msg.get("params") or {}).get("uri", "")
        res = {"contents": [{"uri": uri if isinstance(uri, str) else "", "text": "data"}]}
    else:
        res = {"content": [{"type": "text", "text": "ok"}]}
    return {"jsonrpc": "2.0", "id": mid, "result": res}


def serve(port: int, record: str) -> None:
    lock = threading.Lock()
    issued = itertools.count(1)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                out = b""
                while (size := int(self.rfile.readline().strip().split(b";")[0], 16)) > 0:
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def send(self, status: int, body: str, extra: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            if data:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.send(405, "")

        def do_DELETE(self) -> None:
            self.send(200, "")

        def do_POST(self) -> None:
            raw = self.body()
            with lock, open(record, "a") as f:
                f.write(json.dumps({"body": raw.decode(errors="replace")}) + "\n")
            try:
                msg = json.loads(raw)
            except ValueError:
                self.send(400, "")
                return
            extra: dict[str, str] = {}
            items = msg if isinstance(msg, list) else [msg]
            for m in items:
                if isinstance(m, dict) and m.get("method") == "initialize":
                    extra["mcp-session-id"] = f"meter-peer-session-{next(issued)}"
                params = m.get("params") if isinstance(m, dict) else None
                if isinstance(params, dict) and "forge" in str(params.get("name", "")):
                    extra.update(FORGED)
            sid = extra.get("mcp-session-id", "")
            answers = [a for a in (answer(m, sid) for m in items) if a is not None]
            if not answers:
                self.send(202, "", extra)
            elif isinstance(msg, list):
                self.send(200, json.dumps(answers), extra)
            else:
                self.send(200, json.dumps(answers[0]), extra)

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
