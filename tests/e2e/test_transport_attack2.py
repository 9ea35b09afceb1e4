"""Attack on 2abcd44/3b769e8 in a real Envoy with the compiled filter (second
transport attack session).

1. The no-hold fix (`refuse_undecided_answer`): an answer the server sends while
   the request is undecided (its body still coming, a call held for approval)
   must never reach the client: answers that end in their head (204, 202, 401),
   an answer in one-byte chunks, an HTTP/2 upstream (HEADERS ending the stream,
   RST_STREAM NO_ERROR after an early answer), and malformed answers that make
   Envoy answer itself (code_details not `via_upstream`): no server text in them.
   Normal traffic (the official Python SDK) in hold and no-hold modes unchanged.
2. Interim (1xx) heads: proxy-wasm has no 1xx callback, so whatever Envoy
   forwards of a 100/102/103 head is never read by the filter. Envoy's default
   (`proxy_100_continue: false`) drops the server's 1xx and answers 100 itself;
   with `proxy_100_continue: true` (an HCM setting an operator may set, and
   Istio's default) the server's 100, 102 and 103 heads and their header lines
   reach the client, in hold and no-hold modes, HTTP/1.1 and HTTP/2 on either
   side: a configuration the filter cannot cover, documented as one to avoid.
3. The Upgrade refusal: header case and whitespace, repeated lines, lists,
   `Connection: upgrade` alone, HTTP/1.0, HTTP/2 extended CONNECT
   (`:protocol websocket`) with `allow_connect` and websocket upgrades on; a
   server answering 101 to whatever reaches it; normal clients never refused.

Every test asserts the safe behaviour: a failing test is a hole.
Peers: transport_peer2.ScriptPeer / H2Peer (scripted HTTP/1.1 and h2c), the real
server-everything, the real approval service (`mcp-firewall approvals serve`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import harness
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp_raw import ACCEPT, sdk_session
from test_approvals_page import CLI, FILTER, Service
from test_transport_attack import ALLOWED, DENIED, auth_headers, config, h1, post_head, serving
from test_transport_attack import scratch  # noqa: F401  (the fixture: a temp directory a test)
from transport_peer2 import SECRET, H2Peer, ScriptPeer, after, interim_then_answer, on_head, pieces_on_head

S = SECRET.encode()
LEAK = b"x-leak: " + S + b"\r\n"
UNFILTERABLE = "wasmcustom.mcp_firewall.responses.unfilterable"


# --------------------------------------------------------------------------- Envoy, peers, clients

def config2(upstream: int, *, hold: bool = True, h2_upstream: bool = False, proxy_100: bool = False,
            websocket: bool = False, connect: bool = False, policy: dict[str, Any] | None = None,
            approvals_port: int | None = None) -> dict[str, Any]:
    """test_transport_attack.config plus: an h2c cluster, `proxy_100_continue` on
    the listener, another policy (kept no-hold when `hold=False`), the cluster
    `approvals`."""
    cfg = config(upstream, hold=hold, websocket=websocket, connect=connect)
    if policy is not None:
        if not hold:
            policy = {**policy, "envoy": {"allow_on_headers_stop_iteration": False}}
        harness.firewall_filter(cfg)["typed_config"]["config"]["configuration"]["value"] = json.dumps(policy)
    if h2_upstream:
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == harness.UPSTREAM_CLUSTER:
                opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                c["typed_extension_protocol_options"] = {opts: {
                    "@type": f"type.googleapis.com/{opts}", "explicit_http_config": {"http2_protocol_options": {}}}}
    if proxy_100:
        harness._hcm(cfg)["proxy_100_continue"] = True
    if approvals_port is not None:
        cfg["static_resources"]["clusters"].append(harness.loopback_cluster("approvals", approvals_port))
    return cfg


@contextmanager
def running(scratch: Path, peer: Any, **switches: Any) -> Iterator[harness.Envoy]:
    with serving(scratch, peer, config2(peer.port, **switches)) as env:
        yield env


def h2_events(port: int, headers: list[tuple[str, str]], data: list[bytes], end: bool = True,
              read_for: float = 3.0) -> list[Any]:
    """One HTTP/2 stream (HEADERS, each DATA frame); every event read back
    (interim heads included), and any protocol error as a string."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_for)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=not data and end)
    for i, d in enumerate(data):
        conn.send_data(sid, d, end_stream=i == len(data) - 1 and end)
    sock.sendall(conn.data_to_send())
    evs: list[Any] = []
    deadline = time.monotonic() + read_for
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                evs.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            sock.sendall(conn.data_to_send())
            if any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in evs):
                break
    except (OSError, h2.exceptions.ProtocolError) as e:
        evs.append(repr(e))
    finally:
        sock.close()
    return evs


def h2_text(evs: list[Any]) -> bytes:
    """Every byte of every head and DATA frame the client read."""
    out = b""
    for e in evs:
        if hasattr(e, "headers") and e.headers:
            out += b"".join(k + b": " + v + b"\n" for k, v in e.headers)
        if isinstance(e, h2.events.DataReceived):
            out += e.data
    return out


def post_h2(extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", "/mcp"), (":authority", "127.0.0.1"),
            *auth_headers(), *extra]


# --------------------------------------------------------------------------- 1. the no-hold fix

HEAD_ONLY = {
    "204_headers_end_the_answer": b"HTTP/1.1 204 No Content\r\n" + LEAK + b"\r\n",
    "202_empty_body": b"HTTP/1.1 202 Accepted\r\n" + LEAK + b"content-length: 0\r\n\r\n",
    "401_www_authenticate": b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"" + S
                            + b"\"\r\ncontent-length: 0\r\n\r\n",
}


@pytest.mark.parametrize("answer", list(HEAD_ONLY))
def test_no_hold_answer_that_ends_in_its_head_sent_before_the_body_never_reaches_the_client(
        scratch: Path, answer: str) -> None:
    """No-hold host; the server answers the request head at once with a head-only
    answer carrying a GitHub token in a header; the client sends the body a second
    later. The client reads no byte of the token; the reset is counted."""
    with running(scratch, ScriptPeer(on_head(HEAD_ONLY[answer])), hold=False) as env:
        out = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
        counted = env.stat(UNFILTERABLE)
    assert S not in out, out.decode("latin-1")
    assert counted == 1, counted


def test_no_hold_answer_in_one_byte_chunks_sent_before_the_body_never_reaches_the_client(scratch: Path) -> None:
    """The early answer's head alone, then its JSON body in one-byte chunks 5 ms
    apart (the token spread over 40 chunks)."""
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"' + S + b'"}]}}'
    parts = [b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body))] + [b"0\r\n\r\n"]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    with running(scratch, ScriptPeer(pieces_on_head(head, parts, 0.005)), hold=False) as env:
        out = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
    assert S not in out and b"jsonrpc" not in out, out.decode("latin-1")


@pytest.mark.parametrize("scenario", ["early", "early204", "early_reset"])
def test_no_hold_h2_upstream_answer_before_the_body_never_reaches_the_client(scratch: Path, scenario: str) -> None:
    """h2c upstream answering the request HEADERS at once: a 200 with the token in
    a header and the body; a 204 whose HEADERS end the stream; the 200 followed by
    RST_STREAM NO_ERROR. HTTP/1.1 and HTTP/2 clients, body sent a second later
    (HTTP/1.1) or never ended (HTTP/2)."""
    with running(scratch, H2Peer(scenario), hold=False, h2_upstream=True) as env:
        out1 = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
        evs = h2_events(env.port, post_h2(), [ALLOWED[:10]], end=False)
    assert S not in out1, out1.decode("latin-1")
    assert S not in h2_text(evs), evs


def test_no_hold_answer_while_the_call_waits_for_approval_never_reaches_the_client(scratch: Path) -> None:
    """No-hold host, the real approval service, a held `approve` call (the admin's
    trigger-long-running-operation, rule long-ops-need-approval, timeout 4 s).
    The server answers 1.5 s after the request head (the body whole, held at the
    filter for the approver) with the token in a header and the result. The client
    reads no byte of it; the server reads no byte of the held body; the pending
    approval is never used."""
    if not CLI.exists():
        pytest.fail(f"{CLI} missing: cargo build --release -p mcp-firewall-cli")
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 1}}}).encode()
    early = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": SECRET}]}})
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + LEAK
              + f"content-length: {len(early)}\r\n\r\n{early}".encode())
    policy = {**base_policy(), "approval": {"cluster": "approvals", "token": FILTER, "mode": "hold",
                                            "timeout_ms": 4000}}
    svc = Service(scratch)
    peer = ScriptPeer(after(1.5, answer))
    try:
        with running(scratch, peer, hold=False, policy=policy, approvals_port=svc.port) as env:
            out = h1(env.port, post_head(token=ADMIN_KEY, length=len(call)) + call, read_for=6.0)
            counted = env.stat(UNFILTERABLE)
            got = peer.all_bytes()
            stats = svc.call("GET", "/v1/stats")[1]
    finally:
        svc.proc.stop()
    assert b"POST /mcp" in got and b"trigger-long-running-operation" not in got, got.decode("latin-1")
    assert S not in out, out.decode("latin-1")
    assert counted == 1, counted
    assert (stats["created"], stats["used"]) == (1, 0), stats  # held for an approver, never used


MALFORMED = {
    "control_byte_in_a_header_name": b"HTTP/1.1 200 OK\r\n" + LEAK + b"x bad\x01: " + S + b"\r\n\r\n",
    "token_in_the_status_code": b"HTTP/1.1 2" + S + b" OK\r\n" + LEAK + b"\r\n",
    "token_as_the_status_line": S + b"\r\n" + LEAK + b"\r\n",
    "head_cut_then_close": b"HTTP/1.1 200 OK\r\n" + LEAK,
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_no_hold_malformed_early_answer_becomes_an_envoy_reply_without_server_text(scratch: Path, shape: str) -> None:
    """The server answers the head at once with a malformed answer carrying the
    token, then closes: Envoy answers itself (code_details not via_upstream, which
    the filter lets pass). That reply must hold no server text."""
    def run(_peer: Any, io: Any) -> None:
        io.send(MALFORMED[shape])
        time.sleep(0.1)

    with running(scratch, ScriptPeer(run), hold=False) as env:
        out = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
    assert S not in out, out.decode("latin-1")
    assert out.startswith((b"HTTP/1.1 502", b"HTTP/1.1 503")) or out == b"", out.decode("latin-1")


def test_dry_run_no_hold_early_answer_passes_and_is_noted(scratch: Path) -> None:
    """Dry run is documented to pass an undecided answer unread and note it in the
    dry-run header: the note must be there."""
    policy = {**base_policy(), "mode": "dry_run"}
    with running(scratch, ScriptPeer(on_head(HEAD_ONLY["202_empty_body"])), hold=False, policy=policy) as env:
        out = h1(env.port, post_head(length=len(ALLOWED)), then=ALLOWED, wait=1.0)
    assert b"before the request was decided" in out, out.decode("latin-1")


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_normal_sdk_traffic_is_unchanged(scratch: Path, hold: bool) -> None:
    """The official Python SDK client through envoy/envoy.yaml (hold) and the
    no-hold host to server-everything: list tools (get-env filtered out for the
    reader), echo, get-sum; nothing reset, nothing counted unfilterable."""
    srv = harness.McpServer(scratch)

    async def session() -> tuple[list[str], str, str]:
        async with sdk_session(env.url, READER_KEY) as s:
            tools = [t.name for t in (await s.list_tools()).tools]
            echo = (await s.call_tool("echo", {"message": "hi"})).content[0].text
            total = (await s.call_tool("get-sum", {"a": 2, "b": 40})).content[0].text
            return tools, echo, total

    with running(scratch, srv, hold=hold) as env:
        tools, echo, total = anyio.run(session)
        counted = env.stat(UNFILTERABLE)
    assert "echo" in tools and "get-env" not in tools, tools
    assert "hi" in echo and "42" in total, (echo, total)
    assert counted == 0, counted


# --------------------------------------------------------------------------- 2. interim (1xx) heads

INTERIM_CODES = ["100", "102", "103"]


@pytest.mark.parametrize("upstream", ["h1", "h2"])
@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_interim_head_from_the_server_never_reaches_the_client(scratch: Path, hold: bool, upstream: str) -> None:
    """The server sends an interim head (100, 102, 103, the status the request's
    x-interim asks for) with the token in a header as soon as the request head
    is in, then a clean answer. HTTP/1.1 and HTTP/2 clients send an allowed echo
    call (with `Expect: 100-continue` for 100). No client reads the token.

    Under envoy/envoy.yaml (`proxy_100_continue: false`, Envoy's default). With
    `proxy_100_continue: true` all 24 combinations leaked when this attack was
    written: no Wasm filter is handed an interim head, so that setting must stay
    off (docs/policy.md, Common traps; deploy/istio/README.md for Istio, which
    turns it on). `config2(proxy_100=True)` reproduces it."""
    peer = ScriptPeer(interim_then_answer()) if upstream == "h1" else H2Peer("interim")
    seen: dict[str, bytes] = {}
    with running(scratch, peer, hold=hold, h2_upstream=upstream == "h2") as env:
        for code in INTERIM_CODES:
            expect = b"expect: 100-continue\r\n" if code == "100" else b""
            seen[f"h1-{code}"] = h1(env.port, post_head(length=len(ALLOWED), extra=b"x-interim: " + code.encode()
                                                        + b"\r\n" + expect) + ALLOWED, read_for=1.5)
            extra = [("x-interim", code)] + ([("expect", "100-continue")] if code == "100" else [])
            seen[f"h2-{code}"] = h2_text(h2_events(env.port, post_h2(extra), [ALLOWED]))
    leaked = {k: v[:120] for k, v in seen.items() if S in v}
    answered = [k for k, v in seen.items() if b"clean answer" not in v]
    assert not answered, answered  # every call was answered: the interim head was really sent
    assert not leaked, sorted(leaked)


# --------------------------------------------------------------------------- 3. the Upgrade refusal

A = b"authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"


def ws_get(extra: bytes, version: bytes = b"1.1") -> bytes:
    return (b"GET /mcp HTTP/" + version + b"\r\nhost: 127.0.0.1\r\naccept: application/json, text/event-stream\r\n"
            + A + b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n" + extra + b"\r\n")


UPGRADES = {
    "upper_case": ws_get(b"UPGRADE: WebSocket\r\nCONNECTION: UPGRADE\r\n"),
    "padded_values": ws_get(b"upgrade:   websocket   \r\nconnection:  upgrade \r\n"),
    "tab_before_value": ws_get(b"upgrade:\twebsocket\r\nconnection: upgrade\r\n"),
    "two_upgrade_lines": ws_get(b"upgrade: foo\r\nupgrade: websocket\r\nconnection: upgrade\r\n"),
    "h2c_line_then_websocket_line": ws_get(b"upgrade: h2c\r\nupgrade: websocket\r\nconnection: upgrade\r\n"),
    "list_websocket_h2c": ws_get(b"upgrade: websocket, h2c\r\nconnection: upgrade\r\n"),
    "list_h2c_websocket": ws_get(b"upgrade: h2c, websocket\r\nconnection: upgrade\r\n"),
    "connection_token_list": ws_get(b"upgrade: websocket\r\nconnection: keep-alive, Upgrade\r\n"),
    "two_connection_lines": ws_get(b"upgrade: websocket\r\nconnection: keep-alive\r\nconnection: upgrade\r\n"),
    "connection_upgrade_alone": ws_get(b"connection: upgrade\r\n"),
    "upgrade_without_connection": ws_get(b"upgrade: websocket\r\n"),
    "empty_upgrade": ws_get(b"upgrade: \r\nconnection: upgrade\r\n"),
    "http_1_0": ws_get(b"upgrade: websocket\r\nconnection: upgrade\r\n", b"1.0"),
    "obs_fold": ws_get(b"upgrade:\r\n websocket\r\nconnection: upgrade\r\n"),
    "space_before_colon": ws_get(b"upgrade : websocket\r\nconnection: upgrade\r\n"),
    "post_with_body": post_head(length=len(DENIED), extra=b"upgrade: websocket\r\nconnection: upgrade\r\n") + DENIED,
}
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" + LEAK + b"\r\n"


def switch_then_raw(_peer: Any, io: Any, read_body: bool = False) -> None:
    """101 (the token in a header), then raw bytes with it: to whatever head came,
    or (`read_body`) to an ordinary POST once its body is read whole."""
    if read_body:
        io.body()
    io.send(SWITCH)
    time.sleep(0.2)
    io.send(b"raw bytes after 101: " + S + b"\n")
    io.drain()


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_upgrade_variants_on_a_websocket_route_open_no_raw_channel(scratch: Path, hold: bool) -> None:
    """A listener with websocket upgrades on; a server that answers 101 (token in a
    header, then raw bytes with it) to whatever reaches it. Each variant, then a
    denied call as raw bytes a second later: the server never reads an Upgrade
    header nor the call; the client never reads the token nor the raw bytes. (A
    variant Envoy strips to a plain GET reaches the server; its 101 then reaches
    the client as a bodiless head without the server's lines: no channel.)"""
    bad: dict[str, Any] = {}
    peer = ScriptPeer(switch_then_raw)
    # One Envoy for every variant: each opens its own upstream connection, read
    # by what the peer holds past the connections before it.
    with running(scratch, peer, hold=hold, websocket=True) as env:
        for name, req in UPGRADES.items():
            seen = len(peer.received_list())
            out = h1(env.port, req, then=DENIED, wait=0.7, read_for=1.0)
            got = b"".join(peer.received_list()[seen:])
            if S in out or b"raw bytes" in out or b"get-env" in got or b"\nupgrade:" in got.lower():
                bad[name] = (out[:160], got[:200])
        everything = peer.all_bytes()
    assert b"get-env" not in everything and b"\nupgrade:" not in everything.lower(), everything[:400]
    assert not bad, bad


@pytest.mark.parametrize("protocol", ["websocket", "connect-udp"])
@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_h2_extended_connect_opens_no_raw_channel(scratch: Path, hold: bool, protocol: str) -> None:
    """HTTP/2 extended CONNECT (`:protocol`) on a listener with `allow_connect` and
    websocket and CONNECT upgrades: refused (400 from the filter, or Envoy's own
    403/404); the server reads nothing; the client never reads the token."""
    peer = ScriptPeer(switch_then_raw)
    with running(scratch, peer, hold=hold, websocket=True, connect=True) as env:
        evs = h2_events(env.port, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                                   (":path", "/mcp"), (":authority", "127.0.0.1"), ("sec-websocket-version", "13"),
                                   ("authorization", f"Bearer {ADMIN_KEY}")], [DENIED], end=False)
        got = peer.all_bytes()
    assert got == b"", got.decode("latin-1")
    assert S not in h2_text(evs), evs
    status = [dict(e.headers).get(b":status") for e in evs if isinstance(e, h2.events.ResponseReceived)]
    assert status in ([b"400"], [b"403"], [b"404"], []), status


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_curl_http2_on_plain_http_is_never_refused(scratch: Path, hold: bool) -> None:
    """curl --http2 on http:// (an `Upgrade: h2c` offer) and --http2-prior-knowledge
    send initialize to server-everything: 200 with the server's answer, both modes."""
    srv = harness.McpServer(scratch)
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "0"}}})
    codes = {}
    with running(scratch, srv, hold=hold) as env:
        for flag in ("--http2", "--http2-prior-knowledge"):
            r = subprocess.run(["curl", "-sS", flag, "-o", "-", "-w", "\n%{http_code} %{http_version}", "-X", "POST",
                                "-H", "content-type: application/json", "-H", f"accept: {ACCEPT}",
                                "-H", f"authorization: Bearer {READER_KEY}", "--data", init, env.url],
                               capture_output=True, text=True, timeout=30)
            codes[flag] = (r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr, "serverInfo" in r.stdout)
    assert codes == {"--http2": ("200 1.1", True), "--http2-prior-knowledge": ("200 2", True)}, codes


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no_hold"])
def test_unasked_101_to_an_allowed_post_is_no_answer_the_client_gets(scratch: Path, hold: bool) -> None:
    """The server answers an allowed echo POST (no Upgrade anywhere) with 101 and
    raw bytes. No token, no raw bytes reach the client, and no 101 head either:
    it is no MCP answer (an HTTP/2 client gets a 1xx head then DATA with
    END_STREAM, a protocol error that fails its whole connection)."""
    with running(scratch, ScriptPeer(lambda p, io: switch_then_raw(p, io, read_body=True)), hold=hold) as env:
        out = h1(env.port, post_head(length=len(ALLOWED)) + ALLOWED, read_for=1.5)
    with running(scratch, ScriptPeer(lambda p, io: switch_then_raw(p, io, read_body=True)), hold=hold) as env:
        evs = h2_events(env.port, post_h2(), [ALLOWED])
    assert S not in out and b"raw bytes" not in out and S not in h2_text(evs), (out, evs)
    heads = [e.headers[0] for e in evs if isinstance(e, (h2.events.ResponseReceived,
                                                           h2.events.InformationalResponseReceived))]
    assert not out.startswith(b"HTTP/1.1 101"), out.decode("latin-1")
    assert (b":status", b"101") not in heads and not any(isinstance(e, str) for e in evs), evs
