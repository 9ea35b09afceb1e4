"""HTTP/2 request framing the SDKs do not produce, through Envoy (raw h2c):
request trailers, and GET/DELETE streams that end on a DATA frame.

With trailers, the last DATA frame does not end the stream, so the filter's
body callback never sees end_of_stream; Envoy then calls the trailers callback.
Were that to continue, Envoy would forward the buffered, undecided body. The
filter refuses such a request instead (400, -32600) and nothing reaches the
server.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import h2.config
import h2.connection
import h2.events
from conftest import ADMIN_KEY
from mcp_raw import call


def h2_post_with_trailers(port: int, body: bytes, token: str) -> tuple[int, bytes]:
    return h2_request(port, "POST", body, token, trailers=True)


def h2_request(port: int, method: str, body: bytes, token: str, trailers: bool) -> tuple[int, bytes]:
    """HEADERS without END_STREAM, one DATA frame with `body` (possibly empty),
    then the end of the stream: on that DATA frame, or on a trailers frame."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", method), (":path", "/mcp"), (":scheme", "http"),
                            (":authority", "127.0.0.1"), ("content-type", "application/json"),
                            ("accept", "application/json, text/event-stream"),
                            ("authorization", f"Bearer {token}")])
    conn.send_data(sid, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(sid, [("x-trailer", "1")], end_stream=True)
    sock.sendall(conn.data_to_send())
    status, data, done = 0, b"", False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    return status, data


def test_request_ending_in_trailers_is_refused_and_never_reaches_the_server(envoy: Any) -> None:
    before = envoy.upstream_posts()
    body = json.dumps(call("get-env", {}, id=9)).encode()
    status, data = h2_post_with_trailers(envoy.port, body, ADMIN_KEY)
    assert status == 400, (status, data[:300])
    assert json.loads(data)["error"]["code"] == -32600, data[:300]
    assert envoy.upstream_posts() == before


def test_get_whose_headers_do_not_end_the_stream_passes_only_without_a_body(envoy: Any) -> None:
    """GET and DELETE have no body; an HTTP/2 client may still end the stream with
    an empty DATA frame instead of on HEADERS. That GET is held and then forwarded
    (the server answers it); one whose DATA frame carries bytes is refused by the
    filter and never reaches the server."""
    before = envoy.upstream_requests()
    status, data = h2_request(envoy.port, "GET", b"", ADMIN_KEY, trailers=False)
    assert envoy.upstream_requests() == before + 1, (status, data[:300])
    assert b"carry no body" not in data, data[:300]

    before = envoy.upstream_requests()
    status, data = h2_request(envoy.port, "GET", b'{"jsonrpc":"2.0"}', ADMIN_KEY, trailers=False)
    assert status == 400, (status, data[:300])
    assert json.loads(data)["error"]["code"] == -32600, data[:300]
    assert envoy.upstream_requests() == before

