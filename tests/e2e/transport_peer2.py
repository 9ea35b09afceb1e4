"""Scripted upstreams for test_transport_attack2.py (HTTP/1.1 and h2c): each
connection runs a small script once the request head is in, so a test decides
exactly which bytes the server sends and when (before the body, after it, an
interim head, a malformed head). Every byte a connection delivered is recorded
(``RawPeer.received``), as in transport_peer.py.

- ``ScriptPeer(script)``: HTTP/1.1; ``script(peer, io)`` runs on each
  connection once its first request head is read (``io.head``).
- ``H2Peer(scenario, secret)``: h2c (prior knowledge); ``scenario`` is one of
  ``early`` (a 200 with the secret in a header and the body as soon as the
  request HEADERS arrive), ``early204`` (a 204 whose HEADERS end the stream,
  the secret in a header, as soon as the request HEADERS arrive),
  ``early_reset`` (``early`` then RST_STREAM NO_ERROR, HTTP/2's "stop
  sending"), ``interim`` (an informational head, its status the request's
  ``x-interim`` header (100 if absent), with the secret in a header, when the
  HEADERS arrive; a clean answer once the request ends).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from transport_peer import SECRET, RawPeer


def result(body_id: object, text: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": body_id,
                       "result": {"content": [{"type": "text", "text": text}]}}).encode()


class Io:
    """One connection as a script sees it."""

    def __init__(self, peer: ScriptPeer, conn: socket.socket, buf: bytearray, pending: bytearray, head: bytes):
        self.peer, self.conn, self.buf, self.pending, self.head = peer, conn, buf, pending, head

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def body(self) -> bytes | None:
        """The rest of the request (content-length or chunked)."""
        return self.peer._read_body(self.conn, self.buf, self.pending, self.head)

    def read_for(self, seconds: float) -> None:
        """Record what arrives for `seconds` (the server busy, not answering yet)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.conn.settimeout(max(0.05, end - time.monotonic()))
            try:
                d = self.conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                return
            with self.peer._lock:
                self.buf.extend(d)
        self.conn.settimeout(30)

    def next_head(self) -> bool:
        """Read the next request head on this connection (keep-alive)."""
        head = self.peer._read_head(self.conn, self.buf, self.pending)
        if head is None:
            return False
        self.head = head
        return True

    def drain(self) -> None:
        self.conn.settimeout(30)
        self.peer._drain(self.conn, self.buf)


class ScriptPeer(RawPeer):
    def __init__(self, script: Callable[[ScriptPeer, Io], None]):
        self.script = script
        super().__init__("script")

    def _handle(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(30)
        pending = bytearray()
        try:
            head = self._read_head(conn, buf, pending)
            if head is not None:
                self.script(self, Io(self, conn, buf, pending, head))
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


class H2Peer(RawPeer):
    """h2c server; the HEADERS of every request are kept in ``h2_heads``."""

    def __init__(self, scenario: str, secret: str = SECRET):
        self.secret = secret
        self.h2_heads: list[list[tuple[bytes, bytes]]] = []
        super().__init__(scenario)

    def _handle(self, sock: socket.socket, buf: bytearray) -> None:
        sock.settimeout(30)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False))
        conn.initiate_connection()
        leak = [(b"x-leak", self.secret.encode())]
        bodies: dict[int, bytes] = {}
        try:
            sock.sendall(conn.data_to_send())
            while not self._stop:
                data = sock.recv(65536)
                if not data:
                    return
                with self._lock:
                    buf.extend(data)
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self._lock:
                            self.h2_heads.append(list(ev.headers))
                        sid = ev.stream_id
                        bodies[sid] = b""
                        if self.scenario in ("early", "early_reset"):
                            out = result(1, f"early answer {self.secret}")
                            conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/json")]
                                              + leak)
                            conn.send_data(sid, out, end_stream=True)
                            if self.scenario == "early_reset":
                                conn.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
                        elif self.scenario == "early204":
                            conn.send_headers(sid, [(b":status", b"204")] + leak, end_stream=True)
                        elif self.scenario == "interim":
                            code = dict(ev.headers).get(b"x-interim", b"100")
                            conn.send_headers(sid, [(b":status", code)] + leak)
                    elif isinstance(ev, h2.events.DataReceived):
                        bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and self.scenario == "interim":
                        try:
                            msg_id = json.loads(bodies.get(ev.stream_id) or b"{}").get("id")
                        except ValueError:
                            msg_id = None
                        out = result(msg_id, "clean answer")
                        conn.send_headers(ev.stream_id, [(b":status", b"200"), (b"content-type", b"application/json"),
                                                         (b"content-length", str(len(out)).encode())])
                        conn.send_data(ev.stream_id, out, end_stream=True)
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- HTTP/1.1 scripts

def on_head(raw: bytes) -> Callable[[ScriptPeer, Io], None]:
    """Send `raw` as soon as the request head is in; then record until the close."""
    def run(_peer: ScriptPeer, io: Io) -> None:
        io.send(raw)
        io.drain()
    return run


def after(seconds: float, raw: bytes) -> Callable[[ScriptPeer, Io], None]:
    """Record for `seconds` (the whole body arrives meanwhile), then send `raw`, then record."""
    def run(_peer: ScriptPeer, io: Io) -> None:
        io.read_for(seconds)
        io.send(raw)
        io.drain()
    return run


def pieces_on_head(head: bytes, parts: list[bytes], gap: float) -> Callable[[ScriptPeer, Io], None]:
    """The head at once, then each part `gap` seconds apart."""
    def run(_peer: ScriptPeer, io: Io) -> None:
        io.send(head)
        for p in parts:
            time.sleep(gap)
            io.send(p)
        io.drain()
    return run


def interim_then_answer(secret: str = SECRET) -> Callable[[ScriptPeer, Io], None]:
    """Per request on the connection: a 1xx head carrying `secret` as soon as the
    request head is in, its status the request's `x-interim` header (100 if
    absent); a clean JSON-RPC result once the body is read."""
    def run(_peer: ScriptPeer, io: Io) -> None:
        while True:
            code = b"100"
            for line in io.head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"x-interim":
                    code = v.strip()
            io.send(b"HTTP/1.1 " + code + b" Interim\r\nx-leak: " + secret.encode() + b"\r\n\r\n")
            body = io.body()
            if body is None:
                return
            try:
                msg_id = json.loads(body).get("id") if body else None
            except ValueError:
                msg_id = None
            out = result(msg_id, "clean answer")
            io.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(out)).encode() + b"\r\n\r\n" + out)
            if not io.next_head():
                return
    return run
