"""A JSON-RPC peer over plain HTTP that answers as a scenario file says, for the attacks
on what reaches the audit trail (test_trail_attack*.py): the file is re-read on every
request, so one running peer serves every case of a module.

Scenario members (all optional): `list` (a tools/list result), `call` (the raw answer to
any other request, `@ID@` replaced by the request's id), `status`, `ctype` and `headers`
for that answer, `sid` (the session id an initialize is issued), `get` (an SSE body for
GET; otherwise GET is 405). `--record` appends every POST it receives (head and body) to
`<scenario>.seen`; `--lists-not-called` answers a tools/list with `list` only, never with
`call`.

    python tests/e2e/scenario_peer.py PORT SCENARIO_FILE NAME [--record] [--lists-not-called]
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def serve(port: int, scenario_file: Path, name: str, record: bool = False, lists_not_called: bool = False) -> None:
    seen = scenario_file.with_suffix(".seen")
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

        def send(self, status: int, body: str, ctype: str | None = "application/json",
                 extra: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            if ctype:
                self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            scen = json.loads(scenario_file.read_text())
            if "get" in scen:
                self.send(200, scen["get"], "text/event-stream")
            else:
                self.send(405, "")

        def do_DELETE(self) -> None:
            self.send(200, "")

        def do_POST(self) -> None:
            raw = self.body()
            if record:
                with lock, open(seen, "a") as f:
                    f.write(json.dumps({"headers": str(self.headers), "body": raw.decode(errors="replace")}) + "\n")
            scen = json.loads(scenario_file.read_text())
            msg = json.loads(raw)
            if isinstance(msg, list):
                msg = msg[0]
            method, mid = msg.get("method"), msg.get("id")
            if method == "initialize":
                with lock:
                    sid = scen.get("sid") or f"{name}-{next(issued)}"
                res = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                       "serverInfo": {"name": name, "version": "0"}}
                self.send(200, json.dumps({"jsonrpc": "2.0", "id": mid, "result": res}), extra={"mcp-session-id": sid})
            elif mid is None:
                self.send(202, "")
            elif method == "tools/list" and "list" in scen:
                self.send(200, json.dumps({"jsonrpc": "2.0", "id": mid, "result": scen["list"]}))
            elif "call" in scen and not (lists_not_called and method == "tools/list"):
                self.send(scen.get("status", 200), scen["call"].replace("@ID@", json.dumps(mid)),
                          scen.get("ctype", "application/json"), scen.get("headers"))
            else:
                self.send(200, json.dumps({"jsonrpc": "2.0", "id": mid,
                                           "result": {"content": [{"type": "text", "text": "ok"}]}}))

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


def start(workdir: Path, name: str, *flags: str) -> tuple[Any, int, Path]:
    """This peer in a subprocess on a free port, its scenario `<name>-scenario.json` in
    `workdir` (`{}` to begin with), once it listens: its process (the caller stops it),
    its port and its scenario file. `flags`: `--record`, `--lists-not-called`."""
    import harness

    scenario = workdir / f"{name}-scenario.json"
    scenario.write_text("{}")
    port = harness.free_port()
    proc = harness.Proc(name, [sys.executable, str(Path(__file__).resolve()), str(port), str(scenario), name, *flags],
                        workdir / f"{name}.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, name, proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port, scenario


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], record="--record" in sys.argv,
          lists_not_called="--lists-not-called" in sys.argv)
