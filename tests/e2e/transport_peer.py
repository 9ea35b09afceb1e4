"""A scripted HTTP/1.1 upstream for test_transport_attack.py: it speaks HTTP
itself (bytes no MCP SDK server sends) and records every byte each
connection delivered, so a test can say exactly what reached the server.

Scenarios (``RawPeer(scenario)``):

- ``record``: read each request whole (content-length or chunked), answer a
  clean JSON-RPC result; the bytes read are recorded.
- ``early``: answer as soon as the request head is in, before reading any
  body: 200 application/json whose result and one header carry ``SECRET``;
  then keep reading until the connection closes (recorded).
- ``upgrade``: answer any request head with ``101 Switching Protocols`` and
  then raw bytes carrying ``SECRET``; then record everything the client
  side sends until the connection closes.
- ``trailers``: read the request, answer a chunked clean JSON result that
  ends in a trailer line carrying ``SECRET``.
- ``status600``: read the request, answer ``HTTP/1.1 600`` with a JSON body
  carrying ``SECRET``.
"""

from __future__ import annotations

import json
import socket
import threading
import time

SECRET = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"


def _result(body_id: object, text: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": body_id,
                       "result": {"content": [{"type": "text", "text": text}]}}).encode()


class RawPeer:
    def __init__(self, scenario: str):
        self.scenario = scenario
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytearray] = []  # one per connection, every byte read
        self.heads: list[bytes] = []  # every request head read
        self._lock = threading.Lock()
        self._stop = False
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    # ------------------------------------------------------------------ plumbing

    def all_bytes(self) -> bytes:
        with self._lock:
            return b"".join(bytes(b) for b in self.received)

    def received_list(self) -> list[bytes]:
        """Every connection's bytes so far, one item a connection, in the order
        they were accepted."""
        with self._lock:
            return [bytes(b) for b in self.received]

    def connections(self) -> int:
        with self._lock:
            return len(self.received)

    def stop(self) -> None:
        self._stop = True
        # Closing a listening socket does not wake a thread blocked in accept();
        # shutting it down first does, so the join below does not wait it out.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2)
        self._accept.join(timeout=2)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self._lock:
                self.received.append(buf)
                self._conns.append(conn)
            t = threading.Thread(target=self._handle, args=(conn, buf), daemon=True)
            self._threads.append(t)
            t.start()

    def _recv(self, conn: socket.socket, buf: bytearray, pending: bytearray) -> bool:
        try:
            data = conn.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        with self._lock:
            buf.extend(data)
        pending.extend(data)
        return True

    def _read_head(self, conn: socket.socket, buf: bytearray, pending: bytearray) -> bytes | None:
        while b"\r\n\r\n" not in pending:
            if not self._recv(conn, buf, pending):
                return None
        head, _, rest = bytes(pending).partition(b"\r\n\r\n")
        pending[:] = rest
        with self._lock:
            self.heads.append(head)
        return head

    def _read_body(self, conn: socket.socket, buf: bytearray, pending: bytearray, head: bytes) -> bytes | None:
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(pending) < n:
                if not self._recv(conn, buf, pending):
                    return None
            body = bytes(pending[:n])
            pending[:] = pending[n:]
            return body
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in pending:
                    if not self._recv(conn, buf, pending):
                        return None
                size_line, _, rest = bytes(pending).partition(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                pending[:] = rest
                if size == 0:
                    while b"\r\n\r\n" not in b"\r\n" + pending:
                        if not self._recv(conn, buf, pending):
                            return None
                    idx = (b"\r\n" + pending).index(b"\r\n\r\n")
                    pending[:] = pending[idx + 2:]
                    return body
                while len(pending) < size + 2:
                    if not self._recv(conn, buf, pending):
                        return None
                body += bytes(pending[:size])
                pending[:] = pending[size + 2:]
        return b""

    def _drain(self, conn: socket.socket, buf: bytearray) -> None:
        pending = bytearray()
        while not self._stop and self._recv(conn, buf, pending):
            pass

    def _handle(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(30)
        pending = bytearray()
        try:
            while not self._stop:
                head = self._read_head(conn, buf, pending)
                if head is None:
                    return
                if self.scenario == "early":
                    body = _result(1, f"early answer {SECRET}")
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-leak: " + SECRET.encode()
                                 + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                    self._drain(conn, buf)
                    return
                if self.scenario == "upgrade":
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                                 b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    time.sleep(0.2)
                    conn.sendall(b"raw bytes after 101: " + SECRET.encode() + b"\n")
                    self._drain(conn, buf)
                    return
                body = self._read_body(conn, buf, pending, head)
                if body is None:
                    return
                try:
                    msg_id = json.loads(body).get("id") if body else None
                except ValueError:
                    msg_id = None
                if self.scenario == "trailers":
                    out = _result(msg_id, "clean answer")
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                                 b"trailer: x-leak\r\n\r\n" + f"{len(out):x}\r\n".encode() + out
                                 + b"\r\n0\r\nx-leak: " + SECRET.encode() + b"\r\n\r\n")
                elif self.scenario == "status600":
                    out = _result(msg_id, f"odd status {SECRET}")
                    conn.sendall(b"HTTP/1.1 600 Odd\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(out)).encode() + b"\r\n\r\n" + out)
                else:
                    out = _result(msg_id, "clean answer")
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(out)).encode() + b"\r\n\r\n" + out)
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
