"""HTTP transport corners against the filter in a real Envoy (attack session).

Three surfaces:

1. The "no-hold" path: the policy says ``"envoy": {"allow_on_headers_stop_iteration":
   false}`` and the Wasm config does not set the flag (what Istio's WasmPlugin runs).
   The request headers then reach the server before the body is decided. Does a
   refused body ever reach it? Does an answer the server sends before the request
   is decided reach the client unread (a server that answers on the headers, a
   GET whose headers do not end the stream asking server-everything to replay an
   answer the filter would refuse)?
2. Trailers over HTTP/1.1: a chunked request ending in a trailer section, and a
   server's HTTP/1 response trailer read by an HTTP/2 client (Envoy with
   ``enable_trailers`` on both sides, as an operator may set; without it Envoy's
   codec drops them).
3. ``Upgrade: websocket`` on a route where the operator enabled websocket
   upgrades, ``Upgrade: h2c``, ``CONNECT``, ``Expect: 100-continue`` and a
   status 600 from upstream.

Every test asserts the safe behaviour: a test that fails found a hole.
Peers: ``transport_peer.RawPeer`` (an HTTP/1.1 server that records every byte it
read) and the real server-everything. The cases with the same upstream and the
same Envoy configuration share one Envoy (``Shared``); each reads only what the
peer received since it began (``PeerSince``).
"""

from __future__ import annotations

import inspect
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import audit_support
import harness
import httpx
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp_raw import ACCEPT, call, open_session, rpc
from test_resumption import events
from transport_peer import SECRET, RawPeer

DENIED = json.dumps(call("get-env", {}, id=1)).encode()  # rule no-env denies it to everyone
ALLOWED = json.dumps(call("echo", {"message": "hi"}, id=1)).encode()
HIDDEN = b"get-env"


# --------------------------------------------------------------------------- Envoy and peers

def config(upstream: int, *, hold: bool = True, websocket: bool = False, trailers: bool = False,
           connect: bool = False, audit_port: int | None = None) -> dict[str, Any]:
    """envoy/envoy.yaml with the e2e policy; `hold=False` is the no-hold host (the
    flag absent from the Wasm config, the policy saying so); `audit_port` audits to
    a collector there; the other switches add what a platform engineer may
    plausibly add to the listener or the cluster."""
    policy = base_policy()
    if not hold:
        policy["envoy"] = {"allow_on_headers_stop_iteration": False}
    if audit_port is not None:
        policy["audit"] = {"cluster": audit_support.AUDIT_CLUSTER, "path": "/v1/audit", "authority": "audit",
                           "flush_ms": 100}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=upstream, policy=policy)
    if audit_port is not None:
        cfg["static_resources"]["clusters"].append(audit_support.collector_cluster(audit_port))
    if not hold:
        harness.firewall_filter(cfg)["typed_config"]["config"].pop("allow_on_headers_stop_iteration", None)
    hcm = harness._hcm(cfg)
    upgrades = []
    if websocket:
        upgrades.append({"upgrade_type": "websocket"})
    if connect:
        upgrades.append({"upgrade_type": "CONNECT"})
        hcm["http2_protocol_options"] = {"allow_connect": True}
    if upgrades:
        hcm["upgrade_configs"] = upgrades
    if trailers:
        hcm["http_protocol_options"] = {"enable_trailers": True}
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == harness.UPSTREAM_CLUSTER:
                c["typed_extension_protocol_options"] = {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}}}}
    return cfg


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary directory per test: test_transport_attack2.py imports it for the
    Envoy each of its cases starts through `serving`."""
    d = Path(tempfile.mkdtemp(prefix="mcp-fw-transport-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextmanager
def serving(scratch: Path, upstream: Any, cfg: dict[str, Any]) -> Iterator[harness.Envoy]:
    """An Envoy on `cfg` in front of `upstream` (a peer or server with `stop()`);
    both stopped at the end, the upstream even when Envoy did not start."""
    env = None
    try:
        env = harness.Envoy(cfg, scratch)
        yield env
    finally:
        if env is not None:
            env.stop()
        upstream.stop()


class Shared:
    """One upstream and one Envoy per configuration for this module: the cases
    with the same upstream (a RawPeer scenario, or server-everything) and the same
    `config` switches run against the same pair. Only one pair runs at a time:
    asking for another configuration stops the current pair first (the cases of a
    configuration sit next to each other in this file); `close()` stops the last
    one and removes every file. Each case opens its own client connections and
    sessions, and reads what the peer received through a `PeerSince` taken when it
    began, so nothing a case asserts comes from the case before it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mcp-fw-transport-"))
        self.started = 0  # Envoys started
        self._key: tuple[Any, ...] | None = None
        self._stack: ExitStack | None = None
        self._pair: tuple[harness.Envoy, Any] | None = None

    def get(self, upstream: str, **switches: Any) -> tuple[harness.Envoy, Any]:
        """(Envoy, the RawPeer or McpServer) for `upstream` ("server" or a RawPeer
        scenario) behind `config(**switches)`; a running Envoy, or the case fails."""
        args = inspect.signature(config).bind(0, **switches)
        args.apply_defaults()  # `hold=True` and no `hold` are one configuration
        key = (upstream, tuple(sorted((k, v) for k, v in args.arguments.items() if k != "upstream")))
        if key != self._key or self._pair is None:
            self.release()
            d = self.root / f"{self.started}-{upstream}"
            d.mkdir()
            stack = ExitStack()
            srv: Any = harness.McpServer(d) if upstream == "server" else RawPeer(upstream)
            self.started += 1
            env = stack.enter_context(serving(d, srv, config(srv.port, **switches)))
            self._key, self._stack, self._pair = key, stack, (env, srv)
        env = self._pair[0]
        assert env.proc.alive() and env.ready(), f"the shared Envoy is down:\n{env.log_text()[-3000:]}"
        return self._pair

    def release(self) -> None:
        stack, self._key, self._stack, self._pair = self._stack, None, None, None
        if stack is not None:
            stack.close()

    def close(self) -> None:
        try:
            self.release()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    pool = Shared()
    try:
        yield pool
    finally:
        pool.close()


class PeerSince:
    """A shared RawPeer as one case sees it: `all_bytes()` is every byte the peer
    read since the case began, on connections opened since and on connections
    Envoy opened before and reused (their bytes past what they held then)."""

    def __init__(self, peer: RawPeer):
        self.peer = peer
        self.marks = [len(b) for b in peer.received_list()]

    def all_bytes(self) -> bytes:
        now = self.peer.received_list()
        return b"".join(b[self.marks[i]:] if i < len(self.marks) else b for i, b in enumerate(now))


@contextmanager
def envoy_and_peer(shared: Shared, scenario: str, **switches: Any) -> Iterator[tuple[harness.Envoy, PeerSince]]:
    """The shared Envoy in front of a RawPeer(`scenario`); the peer as this case
    sees it. Envoy must still run when the case ends (a crash there would make
    the next case's "never reached" checks vacuous)."""
    env, peer = shared.get(scenario, **switches)
    yield env, PeerSince(peer)
    assert env.proc.alive(), f"Envoy exited during the case:\n{env.log_text()[-3000:]}"


@contextmanager
def envoy_and_server(shared: Shared, **switches: Any) -> Iterator[harness.Envoy]:
    """The shared Envoy in front of server-everything (each case opens its own
    session)."""
    env, _ = shared.get("server", **switches)
    yield env
    assert env.proc.alive(), f"Envoy exited during the case:\n{env.log_text()[-3000:]}"


# --------------------------------------------------------------------------- raw clients

def h1(port: int, first: bytes, then: bytes | None = None, wait: float = 1.0, read_for: float = 2.0) -> bytes:
    """Send `first`, and `then` `wait` seconds later; every byte the client got
    back until the connection closed or went quiet for `read_for` seconds."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_for)
    out = b""
    try:
        s.sendall(first)
        if then is not None:
            end = time.monotonic() + wait
            s.settimeout(0.1)
            while time.monotonic() < end:
                try:
                    d = s.recv(65536)
                    if not d:
                        break
                    out += d
                except socket.timeout:
                    pass
            try:
                s.sendall(then)
            except OSError:
                pass
        s.settimeout(read_for)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, OSError):
        pass
    finally:
        s.close()
    return out


def post_head(token: str = ADMIN_KEY, length: int | None = None, extra: bytes = b"", method: bytes = b"POST") -> bytes:
    h = (method + b" /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
         b"accept: application/json, text/event-stream\r\nauthorization: Bearer " + token.encode() + b"\r\n")
    if length is not None:
        h += b"content-length: " + str(length).encode() + b"\r\n"
    return h + extra + b"\r\n"


def chunks(body: bytes, n: int = 7) -> bytes:
    return b"".join(f"{len(body[i:i + n]):x}\r\n".encode() + body[i:i + n] + b"\r\n" for i in range(0, len(body), n))


def h2_exchange(port: int, headers: list[tuple[str, str]], data: list[bytes], end_stream_on_headers: bool = False,
                trailers: list[tuple[str, str]] | None = None, end: bool = True,
                read_for: float = 3.0) -> tuple[int | None, dict[bytes, bytes], bytes, list[tuple[bytes, bytes]]]:
    """One HTTP/2 stream: HEADERS, then each DATA frame, then (optionally)
    trailers; `end=False` never ends the stream. Returns (status, response
    headers, body, response trailers) read until the stream ends or `read_for`
    seconds pass."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_for)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", "/mcp"), (":scheme", "http"),
                            (":authority", "127.0.0.1")] + headers if headers[0][0] != ":method" else headers,
                      end_stream=end_stream_on_headers)
    for i, d in enumerate(data):
        last = i == len(data) - 1 and trailers is None and end
        conn.send_data(sid, d, end_stream=last)
    if trailers is not None:
        conn.send_headers(sid, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, head, body, tail = None, {}, b"", []
    deadline = time.monotonic() + read_for
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            done = False
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    head = dict(ev.headers)
                    status = int(head[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    tail = list(ev.headers)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
            if done:
                break
    except OSError:
        pass
    finally:
        sock.close()
    return status, head, body, tail


def auth_headers(token: str = ADMIN_KEY) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("accept", ACCEPT), ("authorization", f"Bearer {token}")]


# --------------------------------------------------------------------------- 1. the no-hold path

def test_no_hold_answer_sent_before_the_body_is_decided_is_scanned(scratch: Path) -> None:
    """No-hold host; a server that answers as soon as the request head is in (before
    any body byte; any server may, HTTP allows an early answer), with a GitHub token
    in a header and in the result. The client sends the head of a tools/call and the
    body one second later. The client must never read the token (the same answer
    after a decided body is redacted), and the trail, in the real collector, says
    what happened: one `response-unfilterable` event, without the token."""
    collector, collector_port, trail = audit_support.start_collector(scratch, "collector")
    try:
        peer = RawPeer("early")
        with serving(scratch, peer, config(peer.port, hold=False, audit_port=collector_port)) as env:
            out = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
            got = peer.all_bytes()
            trailed = audit_support.wait_until(lambda: audit_support.read_events(trail), lambda e: len(e) >= 1,
                                               30, "the reset's audit event")
            time.sleep(0.5)  # a second event, were one written, would have been flushed by now
            trailed = audit_support.read_events(trail)
    finally:
        collector.stop()
    assert b"POST /mcp" in got  # the head went upstream before the body: the no-hold path
    assert SECRET.encode() not in out, out.decode("latin-1")
    assert [(e["decision"]["verdict"], e["decision"]["rule"]) for e in trailed] == \
        [("deny", "response-unfilterable")], trailed
    assert SECRET not in trail.read_text()


def test_no_hold_get_that_has_not_ended_cannot_fetch_an_unfiltered_replay(shared: Shared) -> None:
    """No-hold host, the real server-everything (it keeps an event store). The reader
    lists tools (get-env is filtered out of its list), then opens the session's GET
    stream with the Last-Event-ID of that POST's first event, over HTTP/2 with
    HEADERS that do not end the stream. The server replays the list as it first
    wrote it; the filter must refuse that answer (as it does for a GET whose
    HEADERS end the stream, tests/e2e/test_resumption.py)."""
    with envoy_and_server(shared, hold=False) as env:
        session = open_session(env.url, READER_KEY)
        base = {"Accept": ACCEPT, "Authorization": f"Bearer {READER_KEY}", **session}
        r = httpx.post(env.url, content=json.dumps(rpc("tools/list", id=7)),
                       headers={**base, "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200 and b"get-env" not in r.content, r.text[:300]
        first_id = next(i for i, _ in events(r.text) if i)
        hdrs = [(":method", "GET"), (":path", "/mcp"), (":scheme", "http"), (":authority", "127.0.0.1"),
                ("accept", "text/event-stream"), ("authorization", f"Bearer {READER_KEY}"),
                ("mcp-session-id", session["Mcp-Session-Id"]),
                ("mcp-protocol-version", session["Mcp-Protocol-Version"]), ("last-event-id", first_id)]
        status, _, body, _ = h2_exchange(env.port, hdrs, [], end=False, read_for=3.0)
    assert HIDDEN not in body, (status, body[:400])


def test_no_hold_http1_get_declaring_a_body_cannot_fetch_an_unfiltered_replay(shared: Shared) -> None:
    """The same replay over HTTP/1.1: a GET that declares `content-length: 1` and never
    sends the byte (its headers do not end the stream)."""
    with envoy_and_server(shared, hold=False) as env:
        session = open_session(env.url, READER_KEY)
        base = {"Accept": ACCEPT, "Authorization": f"Bearer {READER_KEY}", **session}
        r = httpx.post(env.url, content=json.dumps(rpc("tools/list", id=7)),
                       headers={**base, "Content-Type": "application/json"}, timeout=30)
        first_id = next(i for i, _ in events(r.text) if i)
        head = (b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                b"authorization: Bearer " + READER_KEY.encode() + b"\r\nmcp-session-id: "
                + session["Mcp-Session-Id"].encode() + b"\r\nmcp-protocol-version: "
                + session["Mcp-Protocol-Version"].encode() + b"\r\nlast-event-id: " + first_id.encode()
                + b"\r\ncontent-length: 1\r\n\r\n")
        out = h1(env.port, head, read_for=3.0)
    assert HIDDEN not in out, out[:400].decode("latin-1")


NO_HOLD_BODIES = {
    "content_length_slow": (post_head(length=len(DENIED)) + DENIED[:20], DENIED[20:]),
    "chunked_7_byte_chunks": (post_head(extra=b"transfer-encoding: chunked\r\n") + chunks(DENIED[:50]),
                              chunks(DENIED[50:]) + b"0\r\n\r\n"),
    "chunked_with_trailer": (post_head(extra=b"transfer-encoding: chunked\r\n") + chunks(DENIED),
                             b"0\r\nx-trailer: 1\r\n\r\n"),
    "expect_100_continue": (post_head(length=len(DENIED), extra=b"expect: 100-continue\r\n"), DENIED),
    "past_max_request_bytes": (post_head(length=200_000) + b"[" * 1000, b" " * 199_000),
}


@pytest.mark.parametrize("shape", list(NO_HOLD_BODIES))
def test_no_hold_refused_http1_body_never_reaches_the_server(shared: Shared, shape: str) -> None:
    """No-hold host, a denied tools/call (get-env) over HTTP/1.1 in several shapes,
    part of the body sent a second after the head. The server may see the head (the
    documented cost of no-hold); it must never read one byte of the body."""
    first, then = NO_HOLD_BODIES[shape]
    with envoy_and_peer(shared, "record", hold=False) as (env, peer):
        out = h1(env.port, first, then=then, wait=1.0)
        time.sleep(0.3)
        got = peer.all_bytes()
    assert b"get-env" not in got and b"jsonrpc" not in got and b"[[[" not in got, got.decode("latin-1")
    assert b"HTTP/1.1 4" in out or b"HTTP/1.1 200" in out, out[:300]


def test_no_hold_refused_h2_body_in_many_frames_never_reaches_the_server(shared: Shared) -> None:
    """No-hold host, HTTP/2: the denied call in 1-byte DATA frames, and again ending
    in request trailers. The server never reads a body byte."""
    with envoy_and_peer(shared, "record", hold=False) as (env, peer):
        s1, _, b1, _ = h2_exchange(env.port, auth_headers(), [DENIED[i:i + 1] for i in range(len(DENIED))])
        s2, _, b2, _ = h2_exchange(env.port, auth_headers(), [DENIED], trailers=[("x-trailer", "1")])
        time.sleep(0.3)
        got = peer.all_bytes()
    assert (s1, s2) == (200, 400), (s1, b1[:200], s2, b2[:200])
    assert b"get-env" not in got and b"jsonrpc" not in got, got.decode("latin-1")


def test_no_hold_allowed_slow_body_reaches_the_server_exactly_as_decided(shared: Shared) -> None:
    """No-hold host, an allowed echo call in 7-byte chunks over a second: the server
    reads exactly the decided bytes, once."""
    with envoy_and_peer(shared, "record", hold=False) as (env, peer):
        out = h1(env.port, post_head(extra=b"transfer-encoding: chunked\r\n") + chunks(ALLOWED[:40]),
                 then=chunks(ALLOWED[40:]) + b"0\r\n\r\n", wait=1.0)
        got = peer.all_bytes()
    assert b"clean answer" in out, out[:300]
    assert got.count(b'"name": "echo"') == 1 and b"get-env" not in got, got.decode("latin-1")


# --------------------------------------------------------------------------- 2. HTTP/1 trailers

@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_chunked_http1_request_ending_in_trailers_is_refused_when_envoy_reads_trailers(shared: Shared,
                                                                                       hold: bool) -> None:
    """Envoy with `enable_trailers` on the listener: a chunked HTTP/1.1 call the
    policy allows (echo) whose body ends in a trailer section. Refused for the
    trailers alone (400, as the HTTP/2 trailers case); the server never reads the
    body."""
    with envoy_and_peer(shared, "record", hold=hold, trailers=True) as (env, peer):
        out = h1(env.port, post_head(token=ADMIN_KEY, extra=b"transfer-encoding: chunked\r\n")
                 + chunks(ALLOWED) + b"0\r\nx-trailer: 1\r\n\r\n")
        time.sleep(0.3)
        got = peer.all_bytes()
    assert out.startswith(b"HTTP/1.1 400"), out[:300]
    assert b"jsonrpc" not in got, got.decode("latin-1")


def test_http1_response_trailer_with_a_secret_never_reaches_an_h2_client(shared: Shared) -> None:
    """Envoy with `enable_trailers` on the upstream cluster and the listener; the
    server answers a chunked JSON result ending in `x-leak: <GitHub token>`; an
    HTTP/2 client reads the answer and its trailers."""
    with envoy_and_peer(shared, "trailers", trailers=True) as (env, _):
        status, head, body, tail = h2_exchange(env.port, auth_headers(), [ALLOWED])
    assert status == 200 and b"clean answer" in body, (status, body[:300])
    assert SECRET.encode() not in body + b"".join(k + v for k, v in tail + list(head.items())), tail


def test_upstream_status_600_answer_is_scanned(shared: Shared) -> None:
    """A server answering `HTTP/1.1 600` with a token in the result: the client reads
    it redacted (or not at all)."""
    with envoy_and_peer(shared, "status600") as (env, _):
        out = h1(env.port, post_head(length=len(ALLOWED)) + ALLOWED)
    assert SECRET.encode() not in out, out.decode("latin-1")


# --------------------------------------------------------------------------- 3. upgrades and CONNECT

# Section 3 runs its cases grouped by configuration (`Shared` keeps one Envoy per
# configuration running at a time): the h2c case has the configuration of the
# first WebSocket case (hold, default route, the `upgrade` peer), so it comes first.

def test_h2c_upgrade_header_opens_no_raw_channel(shared: Shared) -> None:
    """`Upgrade: h2c` on a denied POST: Envoy drops the upgrade and the filter
    decides the POST as any; nothing reaches the server."""
    with envoy_and_peer(shared, "upgrade") as (env, peer):
        out = h1(env.port, post_head(length=len(DENIED), extra=b"upgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\n"
                                     b"http2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n") + DENIED)
        got = peer.all_bytes()
    assert got == b"", got.decode("latin-1")
    assert SECRET.encode() not in out and b"101" not in out.split(b"\r\n")[0], out[:300]


WS_HEAD = (b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: application/json, text/event-stream\r\n"
           b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"sec-websocket-version: 13\r\nauthorization: Bearer " + ADMIN_KEY.encode() + b"\r\n\r\n")


@pytest.mark.parametrize("hold,websocket", [(True, False), (True, True), (False, False), (False, True)],
                         ids=["hold_default_route", "hold_websocket_route", "no_hold_default_route",
                              "no_hold_websocket_route"])
def test_websocket_upgrade_is_no_raw_channel(shared: Shared, hold: bool, websocket: bool) -> None:
    """`GET /mcp` with `Upgrade: websocket` (admin key); the server answers 101 and
    then raw bytes carrying a GitHub token; the client then sends a denied
    tools/call as raw bytes. Neither direction may pass undecided: the server never
    reads the client's bytes, the client never reads the token. On a route without
    `upgrade_configs` Envoy itself refuses the upgrade (403) before any filter; on
    one with them (an operator's addition) the filter refuses it (400)."""
    with envoy_and_peer(shared, "upgrade", hold=hold, websocket=websocket) as (env, peer):
        out = h1(env.port, WS_HEAD, then=DENIED, wait=1.0)
        time.sleep(0.3)
        got = peer.all_bytes()
    assert out.startswith(b"HTTP/1.1 400" if websocket else b"HTTP/1.1 403"), out[:300]
    assert b"get-env" not in got, got.decode("latin-1")
    assert SECRET.encode() not in out, out.decode("latin-1")


def test_h2c_upgrade_offer_on_an_allowed_post_is_served_as_http1(shared: Shared) -> None:
    """curl --http2 on http:// offers `Upgrade: h2c` on its first request. Envoy
    removes that offer before any filter, so the filter's refusal of `Upgrade`
    (a WebSocket) never reaches it: the allowed call is served as HTTP/1.1."""
    with envoy_and_peer(shared, "record") as (env, peer):
        out = h1(env.port, post_head(length=len(ALLOWED), extra=b"upgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\n"
                                     b"http2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n") + ALLOWED)
        got = peer.all_bytes()
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    assert ALLOWED in got and b"upgrade" not in got.lower(), got.decode("latin-1")


@pytest.mark.parametrize("h2_connect", [False, True], ids=["http1_connect", "h2_connect"])
def test_connect_never_reaches_the_server(shared: Shared, h2_connect: bool) -> None:
    """`CONNECT` with the admin key on a listener that allows CONNECT upgrades (an
    operator's addition): refused (405) by the filter, no tunnel; then bytes of a
    denied call sent into what would be the tunnel never reach the server."""
    with envoy_and_peer(shared, "upgrade", connect=True) as (env, peer):
        if h2_connect:
            status, _, body, _ = h2_exchange(env.port, [(":method", "CONNECT"), (":authority", "127.0.0.1:1"),
                                                        ("authorization", f"Bearer {ADMIN_KEY}")],
                                             [DENIED], read_for=2.0)
            seen = f"{status}".encode() + body
            assert status == 405, (status, body[:300])
        else:
            seen = h1(env.port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\nauthorization: Bearer "
                      + ADMIN_KEY.encode() + b"\r\n\r\n", then=DENIED, wait=1.0)
            assert seen.startswith(b"HTTP/1.1 405"), seen[:300]
        time.sleep(0.3)
        got = peer.all_bytes()
    assert got == b"", got.decode("latin-1")
    assert SECRET.encode() not in seen, seen[:300]
