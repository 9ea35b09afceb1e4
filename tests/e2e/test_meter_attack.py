"""Attacks on rate limits, the loop breaker and budgets (docs/policy.md, "Rate
limits and budgets"), through the compiled filter in a real Envoy.

Upstream: meter_peer.py, a recording JSON-RPC peer that answers every tool,
prompt and resource and writes down every POST body it receives, so each test
counts what really reached the server. Each test asserts the safe behaviour:
a failing test is a finding.

Envoys (one per configuration, shared by the tests that need it):
- `main`: enforce, `limits.batches: evaluate`, one meter per test (tool names
  are unique per test, so tests do not share buckets);
- `dry`: the same in dry run;
- `racing`: two workers, exact connection balance, HTTP/1.1 and h2c clients
  racing a global rate limit and a global budget with costs;
- `hot`: the policy served through ECDS from a watched file (hot reload).
Every process and temp file is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import sha256_hex
from mcp_raw import ACCEPT, messages, open_session, sdk_session

import harness
from meter_peer import RecordingPeer

RATE_LIMITED = -32012
CLI = harness.REPO / "target" / "release" / "mcp-firewall"

# token -> (subject, roles, tenant or None)
KEYS: dict[str, tuple[str, list[str], str | None]] = {
    "mk-admin": ("m-admin", ["admin"], "acme"),
    "mk-a": ("a", ["user"], "bc"),          # subject "a" + tenant "bc"
    "mk-b": ("ab", ["user"], "c"),          # subject "ab" + tenant "c": the same bytes joined
    "mk-te": ("u1", ["user"], ""),          # empty tenant
    "mk-tn": ("u2", ["user"], None),        # no tenant
    "mk-se": ("", ["user"], "zz"),          # empty subject
    "mk-victim": ("victim-subject", ["user"], "victim-tenant"),
    "mk-other": ("other", ["user"], "acme"),
}
ADMIN = "mk-admin"


def meter_policy(mode: str = "enforce") -> dict[str, Any]:
    keys = []
    for token, (subject, roles, tenant) in KEYS.items():
        k: dict[str, Any] = {"sha256": sha256_hex(token), "subject": subject, "roles": roles}
        if tenant is not None:
            k["tenant"] = tenant
        keys.append(k)
    g = {"per_seconds": 3600}
    return {
        "version": 1,
        "mode": mode,
        "identity": {"api_keys": keys, "anonymous_roles": ["anon"]},
        "rules": [
            {"id": "lists", "effect": "allow", "methods": ["tools/list", "prompts/list", "resources/list"]},
            {"id": "tools", "effect": "allow", "tools": ["*"]},
            {"id": "prompts", "effect": "allow", "prompts": ["*"]},
            {"id": "resources", "effect": "allow", "resources": ["res://**"]},
            {"id": "web", "effect": "allow", "resources": ["https://*/**"]},
            {"id": "no-internal", "effect": "deny", "resources": ["https://internal.example.com/**"]},
            {"id": "plain-web", "effect": "allow", "resources": ["http://*/**"]},
            {"id": "no-metadata", "effect": "deny", "resources": ["http://169.254.169.254/**"]},
            {"id": "no-forbidden", "effect": "deny", "tools": ["forbidden_*"]},
        ],
        "limits": {"batches": "evaluate"},
        "rate_limits": [
            {"id": "batch-cap", "key": ["global"], "tools": ["batch_a"], "capacity": 3, **g},
            {"id": "create-cap", "key": ["global"], "tools": ["create_x"], "capacity": 2, **g},
            {"id": "notif-cap", "key": ["global"], "tools": ["notif_tool"], "capacity": 1, **g},
            {"id": "oddid-cap", "key": ["global"], "tools": ["oddid"], "capacity": 1, **g},
            {"id": "prompt-cap", "key": ["global"], "methods": ["prompts/get"], "capacity": 2, **g},
            {"id": "res-cap", "key": ["global"], "resources": ["res://data/**"], "capacity": 2, **g},
            {"id": "web-cap", "key": ["global"], "resources": ["https://data.example.com/**"], "capacity": 1, **g},
            {"id": "sep-cap", "key": ["subject", "tenant"], "tools": ["sep_tool"], "capacity": 1, **g},
            {"id": "tenant-cap", "key": ["tenant"], "tools": ["tenant_tool"], "capacity": 1, **g},
            {"id": "subj-cap", "key": ["subject"], "tools": ["subj_tool"], "capacity": 1, **g},
            {"id": "loop", "key": ["subject", "tool", "arguments"], "tools": ["loop_tool"], "capacity": 2, **g},
            {"id": "gb-rl", "key": ["global"], "tools": ["gb_*"], "capacity": 5, **g},
            {"id": "sess-cap", "key": ["session"], "tools": ["sess_tool"], "capacity": 1, **g},
            {"id": "leak-cap", "key": ["subject", "arguments"], "tools": ["leak_tool"], "capacity": 1, **g},
            {"id": "deny-cap", "key": ["global"], "tools": ["forbidden_x", "deny_ok"], "capacity": 1, **g},
            {"id": "dry-cap", "key": ["global"], "tools": ["dry_tool"], "capacity": 1, **g},
            {"id": "sdk-cap", "key": ["subject", "tool"], "tools": ["sdk_*"], "capacity": 2, **g},
        ],
        "budgets": [
            {"id": "gb-budget", "key": ["global"], "tools": ["gb_expensive"], "period": "day", "limit": 2},
            {"id": "daily", "key": ["subject"], "tools": ["cost_*"], "period": "day", "limit": 10,
             "costs": {"cost_big": 4}, "expose_remaining": True},
            {"id": "forge-budget", "key": ["subject"], "tools": ["forge_budgeted"], "period": "day", "limit": 5,
             "expose_remaining": True},
            {"id": "dry-budget", "key": ["subject"], "tools": ["dry_cost"], "period": "day", "limit": 1,
             "expose_remaining": True},
        ],
    }


# --------------------------------------------------------------------------- processes


class Peer(RecordingPeer):
    def __init__(self, workdir: Path):
        super().__init__(workdir, "meter-peer")

    def calls(self, pred: Any) -> list[dict[str, Any]]:
        return [m for m in self.seen() if pred(m)]

    def tool_calls(self, name: str) -> list[dict[str, Any]]:
        return self.calls(lambda m: m.get("method") == "tools/call"
                          and isinstance(m.get("params"), dict) and m["params"].get("name") == name)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mcpfw-meter-attack-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def peer(scratch: Path) -> Iterator[Peer]:
    p = Peer(scratch)
    yield p
    p.stop()


def start_envoy(scratch: Path, wasm: Path, peer: Peer, policy: dict[str, Any], name: str,
                concurrency: int = 1) -> harness.Envoy:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=peer.port, policy=policy, wasm=wasm)
    if concurrency > 1:
        for listener in cfg["static_resources"]["listeners"]:
            listener["connection_balance_config"] = {"exact_balance": {}}
    return harness.Envoy(cfg, scratch, name=name, concurrency=concurrency)


@pytest.fixture(scope="module")
def main(scratch: Path, wasm: Path, peer: Peer) -> Iterator[harness.Envoy]:
    env = start_envoy(scratch, wasm, peer, meter_policy(), "envoy-meter-main")
    yield env
    env.stop()


@pytest.fixture(scope="module")
def dry(scratch: Path, wasm: Path, peer: Peer) -> Iterator[harness.Envoy]:
    env = start_envoy(scratch, wasm, peer, meter_policy("dry_run"), "envoy-meter-dry")
    yield env
    env.stop()


# --------------------------------------------------------------------------- raw HTTP


def post(env: harness.Envoy, body: Any, token: str | None = ADMIN, headers: dict[str, str] | None = None,
         http2: bool = False, client: httpx.Client | None = None) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    if client is not None:
        return client.post(env.url, content=data, headers=h)
    with httpx.Client(timeout=30, http1=not http2, http2=http2) as c:
        return c.post(env.url, content=data, headers=h)


def raw_post(env: harness.Envoy, body: str, header_lines: list[str]) -> str:
    """One HTTP/1.1 POST written byte for byte (header values an HTTP client would refuse);
    returns the status line and the body's start."""
    data = body.encode()
    head = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{env.port}", f"Accept: {ACCEPT}",
            "Content-Type: application/json", f"Content-Length: {len(data)}", "Connection: close", *header_lines]
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    text = out.decode(errors="replace")
    return text.split("\r\n", 1)[0] + " | " + text.split("\r\n\r\n", 1)[-1][:200]


def tcall(name: str, args: Any = None, id: Any = 1, with_id: bool = True) -> dict[str, Any]:
    m: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": args or {}}}
    if with_id:
        m["id"] = id
    return m


def errors_of(r: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for m in messages(r) if r.content else []:
        for x in m if isinstance(m, list) else [m]:
            if isinstance(x, dict) and "error" in x:
                out.append(x["error"])
    return out


def limited(r: httpx.Response, rule: str) -> bool:
    return any(e.get("code") == RATE_LIMITED and (e.get("data") or {}).get("rule") == rule for e in errors_of(r))


def ok(r: httpx.Response) -> bool:
    if r.status_code != 200:
        return False
    ms = messages(r)
    flat = [x for m in ms for x in (m if isinstance(m, list) else [m])]
    return bool(flat) and all("result" in x for x in flat)


# --------------------------------------------------------------------------- 1. more than capacity


def test_a_batch_cannot_carry_more_calls_than_the_capacity(main: harness.Envoy, peer: Peer) -> None:
    """batch-cap: 3 an hour. A batch of 4 is refused whole; a batch of 3 passes; then nothing."""
    four = [tcall("batch_a", {"i": i}, id=i) for i in range(4)]
    r = post(main, four)
    assert r.status_code == 200 and limited(r, "batch-cap"), r.text[:500]
    assert len(peer.tool_calls("batch_a")) == 0, "a refused batch reached the server"
    # Ids of mixed types and a notification in the same batch.
    three = [tcall("batch_a", {"i": 1}, id=1), tcall("batch_a", {"i": 2}, id="2x"), tcall("batch_a", {"i": 3}, id=3.5)]
    r = post(main, three)
    for extra in ([tcall("batch_a", {"i": 4}, id=9)], tcall("batch_a", {"i": 5}, id=10),
                  [tcall("batch_a", {"i": 6}, with_id=False), tcall("ping_only", id=11)]):
        post(main, extra)
    got = len(peer.tool_calls("batch_a"))
    assert got <= 3, f"{got} batch_a calls reached the server (capacity 3)"


def test_a_tools_call_sent_as_a_notification_is_counted_or_refused(main: harness.Envoy, peer: Peer) -> None:
    """notif-cap: 1. A `tools/call` without an id (a JSON-RPC notification) must not
    be a way to reach the server past the limit."""
    for i in range(3):
        post(main, tcall("notif_tool", {"i": i}, with_id=False))
    post(main, [tcall("notif_tool", {"i": 9}, with_id=False), tcall("notif_other", id=1)])
    r = post(main, tcall("notif_tool", {"i": 10}, id=5))
    got = peer.tool_calls("notif_tool")
    assert len(got) <= 1, f"{len(got)} notif_tool messages reached the server (capacity 1): {got}; last: {r.text[:300]}"


def test_odd_ids_do_not_escape_the_count(main: harness.Envoy, peer: Peer) -> None:
    """oddid-cap: 1. Requests with null, empty, fractional, boolean, object ids, the same id twice."""
    for raw_id in ["null", '""', "1.5", "true", "{}", "[]", "-0", "1e0", "1", "1", '"1"']:
        body = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"oddid","arguments":{}}}' % raw_id
        post(main, body)
    got = peer.tool_calls("oddid")
    assert len(got) <= 1, f"{len(got)} oddid calls reached the server (capacity 1): {[m.get('id') for m in got]}"


# --------------------------------------------------------------------------- 2. uncounted spellings


def folded(name: Any) -> str:
    """What a lenient server could read the name as (NFKC, invisible and surrounding
    space removed); case is kept: globs are documented as case-sensitive."""
    if not isinstance(name, str):
        return ""
    n = unicodedata.normalize("NFKC", name)
    n = "".join(ch for ch in n if unicodedata.category(ch) not in ("Cf", "Cc"))
    return n.strip()


def test_tool_name_spellings_are_counted_or_refused(main: harness.Envoy, peer: Peer) -> None:
    """create-cap: 2 on `create_x`. Escapes, whitespace, control, fullwidth and zero-width
    look-alikes, duplicate and case-twin `name` members, an escaped method."""
    bodies = [
        r'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0063reate_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create\u005fx","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":3,"method":"tools\/call","params":{"name":"create_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":" create_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"create_x ","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"create_x\u0000","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"\uff43reate_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"create_x\u200b","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"zzz","name":"create_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"Name":"create_x","name":"zzz","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"zzz"},"params":{"name":"create_x"}}',
        r'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"create_x\t","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"create_x\n","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"cre\u00adate_x","arguments":{}}}',
        r'{"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":["create_x"],"arguments":{}}}',
    ]
    statuses = []
    for b in bodies:
        r = post(main, b)
        statuses.append((r.status_code, (errors_of(r) or [{}])[0].get("code")))
    got = peer.calls(lambda m: m.get("method") == "tools/call" and isinstance(m.get("params"), dict)
                     and folded(m["params"].get("name")) == "create_x")
    names = [m["params"].get("name") for m in got]
    assert len(got) <= 2, f"{len(got)} calls a lenient server reads as create_x (capacity 2): {names!r}; {statuses}"


def test_method_spellings_of_a_methods_limit_are_counted_or_refused(main: harness.Envoy, peer: Peer) -> None:
    """prompt-cap: 2 on `prompts/get` (a `methods` limit)."""
    bodies = [
        r'{"jsonrpc":"2.0","id":1,"method":"prompts\/get","params":{"name":"p1"}}',
        r'{"jsonrpc":"2.0","id":2,"method":"prompts/\u0067et","params":{"name":"p2"}}',
        r'{"jsonrpc":"2.0","id":3,"method":"prompts/get ","params":{"name":"p3"}}',
        r'{"jsonrpc":"2.0","id":4,"method":" prompts/get","params":{"name":"p4"}}',
        r'{"jsonrpc":"2.0","id":5,"method":"prompts/get\u0000","params":{"name":"p5"}}',
        r'{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"p6"}}',
        r'{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{}}',
        r'{"jsonrpc":"2.0","id":8,"method":"prompts/get"}',
        r'{"jsonrpc":"2.0","id":9,"method":"zzz","method":"prompts/get","params":{"name":"p9"}}',
        r'{"jsonrpc":"2.0","id":10,"Method":"prompts/get","params":{"name":"p10"}}',
    ]
    for b in bodies:
        post(main, b)
    got = peer.calls(lambda m: folded(m.get("method")) == "prompts/get" or folded(m.get("Method")) == "prompts/get")
    assert len(got) <= 2, f"{len(got)} prompts/get reached the server (capacity 2): {got}"


def normal_uri(uri: Any) -> str:
    if not isinstance(uri, str):
        return ""
    p = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(p.path)
    segs: list[str] = []
    for s in path.split("/"):
        if s == "..":
            if len(segs) > 1:
                segs.pop()
        elif s != ".":
            segs.append(s)
    return f"{p.scheme.lower()}://{p.netloc.lower()}{'/'.join(segs)}"


def test_resource_uri_spellings_are_counted_or_refused(main: harness.Envoy, peer: Peer) -> None:
    """res-cap: 2 on `res://data/**` (rules allow `res://**`)."""
    uris = ["res://data/x", "RES://DATA/x", "res://data/%78", "res://data/a/../x", "res://data/./x",
            "res://data/x#frag", "Res://Data/%2e/x", "res://data/x%23", "res://data/q/%2E%2E/x",
            "res://user@data/x", "res://data:/x", "res://data./x"]
    for i, u in enumerate(uris):
        post(main, {"jsonrpc": "2.0", "id": i, "method": "resources/read", "params": {"uri": u}})
        post(main, {"jsonrpc": "2.0", "id": 100 + i, "method": "resources/subscribe", "params": {"uri": u}})
    got = peer.calls(lambda m: m.get("method") == "resources/read"
                     and normal_uri((m.get("params") or {}).get("uri")) in ("res://data/x",))
    assert len(got) <= 2, f"{len(got)} reads of res://data/x reached the server (capacity 2): " \
        f"{[m['params']['uri'] for m in got]}"


def web_host(uri: Any) -> tuple[str, str]:
    """(host, path) an HTTP client fetching the URI connects to and asks for: userinfo
    dropped, the root label's dot dropped, the default port dropped."""
    if not isinstance(uri, str):
        return "", ""
    p = urllib.parse.urlsplit(uri)
    host = (p.hostname or "").rstrip(".")
    return host, p.path


HTTPS_SPELLINGS = ["https://{h}/a", "https://x@{h}/a", "https://{h}./a", "https://user:pw@{h}./a",
                   "https://{H}:443/a", "https://{h}.:443/a"]


def test_https_resource_spellings_are_counted_by_a_resources_limit(main: harness.Envoy, peer: Peer) -> None:
    """web-cap: 1 on `https://data.example.com/**`. Userinfo and the FQDN's trailing dot
    name the same host to any HTTP client a server fetches with."""
    for i, u in enumerate(HTTPS_SPELLINGS):
        u = u.format(h="data.example.com", H="DATA.example.com")
        post(main, {"jsonrpc": "2.0", "id": i, "method": "resources/read", "params": {"uri": u}})
    got = peer.calls(lambda m: m.get("method") == "resources/read"
                     and web_host((m.get("params") or {}).get("uri")) == ("data.example.com", "/a"))
    assert len(got) <= 1, f"{len(got)} reads of https://data.example.com/a reached the server (capacity 1): " \
        f"{[m['params']['uri'] for m in got]}"


def test_https_resource_spellings_do_not_pass_a_deny_rule(main: harness.Envoy, peer: Peer) -> None:
    """Beside the meters (same glob matching): rule no-internal denies
    `https://internal.example.com/**`; rule web allows `https://*/**`."""
    for i, u in enumerate(HTTPS_SPELLINGS):
        u = u.format(h="internal.example.com", H="INTERNAL.example.com")
        post(main, {"jsonrpc": "2.0", "id": i, "method": "resources/read", "params": {"uri": u}})
    got = peer.calls(lambda m: m.get("method") == "resources/read"
                     and web_host((m.get("params") or {}).get("uri"))[0] == "internal.example.com")
    assert not got, f"denied host reached the server: {[m['params']['uri'] for m in got]}"


# Spellings a WHATWG client (Node's fetch, browsers) reads as the denied host: the
# number forms of an IPv4 address, the IPv4-mapped IPv6 literal, a trailing dot,
# and the forms without `//` or with an empty authority.
WHATWG_SPELLINGS = [
    "http://2852039166/meta-probe", "http://0xa9fea9fe/meta-probe", "http://0251.0376.0251.0376/meta-probe",
    "http://169.254.43518/meta-probe", "http://0xa9.254.169.254/meta-probe",
    "http://[::ffff:169.254.169.254]/meta-probe", "http://[::ffff:a9fe:a9fe]/meta-probe",
    "http://169.254.169.254./meta-probe", "HTTP://169.254.169.254:80/meta-probe",
    "http:169.254.169.254/meta-probe", "http:/169.254.169.254/meta-probe", "http:///169.254.169.254/meta-probe",
    "https:internal.example.com/meta-probe", "https:///internal.example.com/meta-probe",
    "https://%69nternal.example.com/meta-probe", "https://internal.example.com.:443/meta-probe",
]


def test_whatwg_spellings_of_a_denied_host_never_reach_the_server(main: harness.Envoy, peer: Peer) -> None:
    """Rule no-metadata denies `http://169.254.169.254/**` (plain-web allows `http://*/**`),
    no-internal `https://internal.example.com/**`. Every spelling below is that host to a
    WHATWG client, so none may be read: each is denied or refused."""
    for i, u in enumerate(WHATWG_SPELLINGS):
        r = post(main, {"jsonrpc": "2.0", "id": i, "method": "resources/read", "params": {"uri": u}})
        assert "error" in r.json(), (u, r.text[:300])
    got = peer.calls(lambda m: m.get("method") == "resources/read"
                     and "meta-probe" in str((m.get("params") or {}).get("uri")))
    assert not got, f"spellings of a denied host reached the server: {[m['params']['uri'] for m in got]}"


def test_the_loop_breaker_reads_escapes_and_absent_arguments_as_one(main: harness.Envoy, peer: Peer) -> None:
    """loop: 2 per subject, tool and arguments."""
    post(main, tcall("loop_tool", {"q": "a", "n": 1}, id=1))
    post(main, r'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"loop_tool","arguments":{"n":1.0,"q":"\u0061"}}}')
    r3 = post(main, r'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"loop_tool","arguments":{"n":1e0,"q":"a"}}}')
    assert limited(r3, "loop"), r3.text[:300]
    post(main, r'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"loop_tool","arguments":{"q":"a","q":"a","n":1}}}')
    # absent, null and {} are one
    for i, b in enumerate([r'{"name":"loop_tool"}', r'{"name":"loop_tool","arguments":null}',
                           r'{"name":"loop_tool","arguments":{}}']):
        post(main, '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}' % (10 + i, b))
    same = peer.calls(lambda m: m.get("method") == "tools/call" and (m.get("params") or {}).get("name") == "loop_tool"
                      and (m["params"].get("arguments") or {}) == {"q": "a", "n": 1})
    empty = peer.calls(lambda m: m.get("method") == "tools/call" and (m.get("params") or {}).get("name") == "loop_tool"
                       and not (m["params"].get("arguments") or {}))
    assert len(same) <= 2 and len(empty) <= 2, (same, empty)


# --------------------------------------------------------------------------- 3. another caller's bucket


def test_subject_and_tenant_joined_differently_are_different_buckets(main: harness.Envoy, peer: Peer) -> None:
    """sep-cap: 1 per (subject, tenant). ("a", "bc") and ("ab", "c") are two callers."""
    assert ok(post(main, tcall("sep_tool", id=1), token="mk-a"))
    r = post(main, tcall("sep_tool", id=1), token="mk-b")
    assert ok(r), f"caller (ab, c) was refused by the bucket of (a, bc): {r.text[:300]}"
    assert limited(post(main, tcall("sep_tool", id=2), token="mk-a"), "sep-cap")


def test_anonymous_callers_do_not_spend_the_bucket_of_a_key_with_an_empty_subject(main: harness.Envoy) -> None:
    """subj-cap: 1 per subject. An API key whose subject is "" (accepted by `check`) and
    anonymous callers (no subject) are different callers."""
    assert ok(post(main, tcall("subj_tool", id=1), token=None)), "anonymous call refused"
    r = post(main, tcall("subj_tool", id=2), token="mk-se")
    assert ok(r), f"the key with subject \"\" was refused by the anonymous callers' bucket: {r.text[:300]}"


def test_a_caller_with_no_tenant_does_not_spend_the_bucket_of_the_empty_tenant(main: harness.Envoy) -> None:
    """tenant-cap: 1 per tenant. A key with tenant "" and a key with no tenant."""
    assert ok(post(main, tcall("tenant_tool", id=1), token="mk-te"))
    r = post(main, tcall("tenant_tool", id=2), token="mk-tn")
    assert ok(r), f"the tenant-less key was refused by the bucket of tenant \"\": {r.text[:300]}"


def test_a_session_bucket_cannot_be_spent_by_another_caller_or_a_header_variant(main: harness.Envoy,
                                                                                  peer: Peer) -> None:
    """sess-cap: 1 per session. Another identity presenting the victim's session id is
    refused without spending it; header-name case and surrounding space are one session."""
    victim = open_session(main.url, "mk-victim")
    sid = victim["Mcp-Session-Id"]
    r = post(main, tcall("sess_tool", id=1), token="mk-other", headers=victim)
    assert not ok(r), "another identity continued the victim's session"
    r = post(main, tcall("sess_tool", id=2), token="mk-victim", headers=victim)
    assert ok(r), f"the victim's session bucket was spent by another caller: {r.text[:300]}"
    before = len(peer.tool_calls("sess_tool"))
    statuses = []
    for line in (f"MCP-SESSION-ID: {sid}", f"mcp-session-id:  {sid} ", f"Mcp-Session-Id:\t{sid}\t"):
        statuses.append(raw_post(main, json.dumps(tcall("sess_tool", id=3)), [
            "Authorization: Bearer mk-victim", f"Mcp-Protocol-Version: {victim['Mcp-Protocol-Version']}", line]))
    assert len(peer.tool_calls("sess_tool")) == before, \
        f"a header variant of the session got a fresh bucket: {statuses}"


# --------------------------------------------------------------------------- give back, deny, refusal contents


def test_a_refused_request_gives_back_exactly_what_it_took(main: harness.Envoy, peer: Peer) -> None:
    """gb-rl: 5 global on gb_*; gb-budget: 2 a day on gb_expensive. The third expensive call
    is refused by the budget and gives its rate-limit token back: 3 cheap calls still pass, not 4."""
    kinds = [ok(post(main, tcall("gb_expensive", {"i": i}, id=i))) for i in range(3)]
    assert kinds == [True, True, False], kinds
    # A batch whose second element runs out gives back the first's token too.
    r = post(main, [tcall("gb_cheap", {"i": 100}, id=100), tcall("gb_expensive", {"i": 101}, id=101)])
    assert limited(r, "gb-budget"), r.text[:300]
    cheap = [ok(post(main, tcall("gb_cheap", {"i": i}, id=i))) for i in range(5)]
    assert cheap == [True, True, True, False, False], cheap
    assert len(peer.tool_calls("gb_expensive")) == 2 and len(peer.tool_calls("gb_cheap")) == 3


def test_denied_calls_in_a_batch_consume_nothing_and_reach_nothing(main: harness.Envoy, peer: Peer) -> None:
    """deny-cap: 1 over forbidden_x (denied by rule) and deny_ok."""
    r = post(main, [tcall("deny_ok", id=1), tcall("forbidden_x", id=2)])
    assert any(e.get("code") == -32010 for e in errors_of(r)), r.text[:300]
    assert ok(post(main, tcall("deny_ok", id=3))), "a refused batch consumed the bucket"
    assert len(peer.tool_calls("forbidden_x")) == 0 and len(peer.tool_calls("deny_ok")) == 1


def test_a_refusal_carries_no_key_part_and_never_reaches_the_server(main: harness.Envoy, peer: Peer) -> None:
    args = {"note": "hunter2-meter-canary"}
    assert ok(post(main, tcall("leak_tool", args, id=1), token="mk-victim"))
    r = post(main, tcall("leak_tool", args, id=2), token="mk-victim")
    assert limited(r, "leak-cap"), r.text[:300]
    blob = r.text + json.dumps(dict(r.headers))
    for secret in ("hunter2", "victim-subject", "victim-tenant", "mk-victim", "meter2", "salt"):
        assert secret not in blob, f"the refusal leaks {secret!r}: {blob[:600]}"
    err = errors_of(r)[0]
    assert set(err["data"]) <= {"rule", "retry_after_ms"}, err
    assert r.headers.get("x-mcp-firewall-rule") == "leak-cap", dict(r.headers)
    assert "x-mcp-firewall-budget-remaining" not in r.headers
    assert len(peer.tool_calls("leak_tool")) == 1


# --------------------------------------------------------------------------- 4. headers that lie


def test_a_server_cannot_forge_the_budget_remaining_header(main: harness.Envoy) -> None:
    """forge_plain has no budget: the client must not see a remaining budget; forge_budgeted
    (limit 5) must show 4, not the server's 999999."""
    r = post(main, tcall("forge_plain", id=1))
    assert ok(r), r.text[:300]
    r2 = post(main, tcall("forge_budgeted", id=2))
    assert ok(r2), r2.text[:300]
    seen = (r.headers.get_list("x-mcp-firewall-budget-remaining"),
            r2.headers.get_list("x-mcp-firewall-budget-remaining"))
    assert seen == ([], ["4"]), f"client saw (unmetered call, budgeted call with 4 left): {seen}"


def test_a_server_cannot_forge_the_rule_or_dry_run_header(main: harness.Envoy) -> None:
    """The firewall's own verdict headers on an answer come from the firewall only."""
    r = post(main, tcall("forge_other", id=1))
    assert ok(r), r.text[:300]
    forged = {k: r.headers.get_list(k) for k in ("x-mcp-firewall-rule", "x-mcp-firewall-dry-run") if k in r.headers}
    assert not forged, f"the server's forged firewall headers reached the client: {forged}"


def test_the_budget_header_of_a_batch_and_after_a_refusal_tells_the_truth(main: harness.Envoy, peer: Peer) -> None:
    """daily: 10 per subject, cost_big costs 4, other cost_* 1 (caller mk-other)."""
    r = post(main, [tcall("cost_big", id=1), tcall("cost_a", id=2)], token="mk-other")
    assert ok(r), r.text[:300]
    assert r.headers.get_list("x-mcp-firewall-budget-remaining") == ["5"], dict(r.headers)
    r = post(main, [tcall("cost_big", id=3), tcall("cost_big", id=4)], token="mk-other")
    assert limited(r, "daily") and "x-mcp-firewall-budget-remaining" not in r.headers, (r.text[:300], dict(r.headers))
    r = post(main, tcall("cost_a", id=5), token="mk-other")
    assert r.headers.get_list("x-mcp-firewall-budget-remaining") == ["4"], dict(r.headers)
    assert len(peer.tool_calls("cost_big")) == 1 and len(peer.tool_calls("cost_a")) == 2


def test_the_sdk_client_is_held_to_subject_and_tool(main: harness.Envoy, peer: Peer) -> None:
    """sdk-cap: 2 per subject and tool, driven by the official SDK over two sessions of one subject."""
    from mcp.shared.exceptions import MCPError

    async def go() -> list[str]:
        out = []
        for _ in range(2):
            async with sdk_session(main.url, "mk-other") as s:
                for i in range(2):
                    try:
                        await s.call_tool("sdk_one", {"i": i})
                        out.append("ok")
                    except MCPError as e:
                        out.append(str(e.error.data.get("rule")))
        return out

    assert anyio.run(go) == ["ok", "ok", "sdk-cap", "sdk-cap"]
    assert len(peer.tool_calls("sdk_one")) == 2


# --------------------------------------------------------------------------- dry run


def test_dry_run_reports_every_call_over_the_limit(dry: harness.Envoy, peer: Peer) -> None:
    before = len(peer.tool_calls("dry_tool"))
    notes = []
    for i in range(3):
        r = post(dry, tcall("dry_tool", {"i": i}, id=i))
        assert ok(r), r.text[:300]
        notes.append(r.headers.get("x-mcp-firewall-dry-run"))
    assert notes[1:] == ["deny rule=dry-cap", "deny rule=dry-cap"], notes
    assert len(peer.tool_calls("dry_tool")) - before == 3
    # A dry-run budget: remaining says what enforcement would have left, never more.
    hdrs = [post(dry, tcall("dry_cost", id=i), token="mk-other").headers for i in range(3)]
    shown = [h.get("x-mcp-firewall-budget-remaining") for h in hdrs]
    assert shown[0] == "0" and shown[1] in (None, "0") and shown[2] in (None, "0"), shown
    assert [h.get("x-mcp-firewall-dry-run") for h in hdrs][1:] == ["deny rule=dry-budget"] * 2


# --------------------------------------------------------------------------- racing workers


def test_two_workers_h1_and_h2_clients_and_batches_never_exceed_capacity_or_budget(
        scratch: Path, wasm: Path, peer: Peer) -> None:
    """race-rl: 40 global; race-budget: 60 a day, race_big costs 3. 12 clients (half h2c,
    each connection's streams multiplexed) race singles and batches through two workers."""
    policy = meter_policy()
    policy["rate_limits"] = [{"id": "race-rl", "key": ["global"], "tools": ["race_*"], "capacity": 40,
                              "per_seconds": 3600}]
    policy["budgets"] = [{"id": "race-budget", "key": ["global"], "tools": ["race_*"], "period": "day",
                          "limit": 60, "costs": {"race_big": 3}}]
    env = start_envoy(scratch, wasm, peer, policy, "envoy-meter-race", concurrency=2)
    try:
        refusals: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            h2 = n % 2 == 0
            with httpx.Client(timeout=30, http1=not h2, http2=h2) as c:
                for i in range(14):
                    if i % 3 == 0:
                        body: Any = [tcall("race_small", {"n": n, "i": i}, id=1), tcall("race_big", {"n": n, "i": i}, id=2)]
                    elif i % 3 == 1:
                        body = tcall("race_big", {"n": n, "i": i}, id=i)
                    else:
                        body = tcall("race_small", {"n": n, "i": i}, id=i)
                    r = post(env, body, client=c)
                    for e in errors_of(r):
                        with lock:
                            refusals.append((e.get("data") or {}).get("rule"))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        big, small = len(peer.tool_calls("race_big")), len(peer.tool_calls("race_small"))
        cost = 3 * big + small
        assert big + small <= 40, f"{big + small} calls passed a capacity of 40"
        assert cost <= 60, f"cost {cost} passed a budget of 60 (big {big}, small {small})"
        assert cost >= 58 or big + small == 40, f"limits never reached: {big} big, {small} small"
        assert set(refusals) <= {"race-rl", "race-budget", "batch"}, set(refusals)
    finally:
        env.stop()


# --------------------------------------------------------------------------- hot reload


def ecds(policy: dict[str, Any], wasm: Path, scratch: Path) -> str:
    src = scratch / "hot-policy.json"
    src.write_text(json.dumps(policy))
    out = subprocess.run([str(CLI), "envoy-config", str(src), "--ecds", "--wasm", str(wasm)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


STAT = "extension_config_discovery.http_filter.mcp_firewall.config_reload"


def reload(env: harness.Envoy, ecds_dir: Path, text: str) -> None:
    before = env.stat(STAT)
    tmp = ecds_dir / "mcp_firewall.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, ecds_dir / "mcp_firewall.json")
    deadline = time.monotonic() + 30
    while env.stat(STAT) <= before:
        assert time.monotonic() < deadline, "reload not picked up"
        time.sleep(0.05)
    time.sleep(0.2)


def test_hot_reload_never_hands_out_fresh_buckets_or_budgets(scratch: Path, wasm: Path, peer: Peer) -> None:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: cargo build --release -p mcp-firewall-cli")
    ecds_dir = scratch / "ecds"
    ecds_dir.mkdir(exist_ok=True)

    def policy(capacity: int = 2, limit: int = 2, mode: str = "enforce", extra_rule: bool = False,
               tools: list[str] | None = None, roles: list[str] | None = None) -> dict[str, Any]:
        p = meter_policy(mode)
        rl: dict[str, Any] = {"id": "hr-cap", "key": ["global"], "tools": tools or ["hr_tool"],
                              "capacity": capacity, "per_seconds": 3600}
        if roles:
            rl["roles"] = roles
        p["rate_limits"] = [rl]
        p["budgets"] = [{"id": "hr-budget", "key": ["subject"], "tools": ["hr_b"], "period": "day", "limit": limit}]
        if extra_rule:
            p["rules"].append({"id": "unrelated", "effect": "deny", "tools": ["never_called"]})
        return p

    (ecds_dir / "mcp_firewall.json").write_text(ecds(policy(), wasm, scratch))
    cfg = harness.hot_reload_config(peer.port, ecds_dir / "mcp_firewall.json")
    env = harness.Envoy(cfg, scratch, name="envoy-meter-hot")
    try:
        steps: list[tuple[str, bool]] = []

        def hr(label: str, name: str = "hr_tool") -> None:
            steps.append((label, ok(post(env, tcall(name, {"t": time.time()}, id=1)))))

        hr("1"), hr("2"), hr("3 over")
        reload(env, ecds_dir, ecds(policy(extra_rule=True), wasm, scratch))
        hr("after unrelated reload")
        reload(env, ecds_dir, ecds(policy(capacity=3, tools=["hr_tool", "hr_other"], roles=["admin"]), wasm, scratch))
        hr("after capacity 3 + selector + roles")
        reload(env, ecds_dir, ecds(policy(mode="dry_run"), wasm, scratch))
        hr("dry run (forwarded)")
        reload(env, ecds_dir, ecds(policy(), wasm, scratch))
        hr("back to enforce")
        b = [ok(post(env, tcall("hr_b", id=i))) for i in range(3)]
        reload(env, ecds_dir, ecds(policy(limit=3), wasm, scratch))
        b += [ok(post(env, tcall("hr_b", id=i))) for i in range(2)]
        reload(env, ecds_dir, ecds(policy(limit=3, capacity=5), wasm, scratch))
        b += [ok(post(env, tcall("hr_b", id=9)))]
        assert steps == [("1", True), ("2", True), ("3 over", False), ("after unrelated reload", False),
                         ("after capacity 3 + selector + roles", False), ("dry run (forwarded)", True),
                         ("back to enforce", False)], steps
        assert b == [True, True, False, True, False, False], b
        assert len(peer.tool_calls("hr_tool")) == 3 and len(peer.tool_calls("hr_b")) == 3
    finally:
        env.stop()


# --------------------------------------------------------------------------- approvals


def test_an_approved_call_is_charged_when_released_and_pending_asks_consume_nothing(
        scratch: Path, wasm: Path, peer: Peer) -> None:
    """appr-cap: 1 global on appr_tool, which needs approval (async mode, the real
    approval service). Asking twice while pending consumes nothing; the approved retry
    consumes the one token; a second approved call finds the bucket empty (-32012)."""
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: cargo build --release -p mcp-firewall-cli")
    from test_approvals_page import ALICE, FILTER, Service

    svc_dir = scratch / "approvals"
    svc_dir.mkdir(exist_ok=True)
    svc = Service(svc_dir)
    env = None
    try:
        policy = meter_policy()
        policy["rules"].append({"id": "appr", "effect": "approve", "tools": ["appr_tool"]})
        policy["approval"] = {"cluster": "approvals", "token": FILTER, "mode": "async", "timeout_ms": 2000}
        policy["rate_limits"] = [{"id": "appr-cap", "key": ["global"], "tools": ["appr_tool"], "capacity": 1,
                                  "per_seconds": 3600}]
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=peer.port, policy=policy, wasm=wasm)
        cfg["static_resources"]["clusters"].append(harness.loopback_cluster("approvals", svc.port))
        env = harness.Envoy(cfg, scratch, name="envoy-meter-approvals")

        def ask(args: dict[str, Any]) -> tuple[int | None, Any]:
            r = post(env, tcall("appr_tool", args, id=1), token="mk-other")
            e = (errors_of(r) or [{}])[0]
            return e.get("code"), (e.get("data") or {})

        def approve(apr: str) -> None:
            status, answer = svc.call("POST", f"/v1/approvals/{apr}/decision", {"approve": True, "reason": "ok"},
                                      token=ALICE)
            assert status == 200, answer

        code, data = ask({"a": 1})
        assert code == -32011, (code, data)
        apr1 = data["approval_id"]
        assert ask({"a": 1})[0] == -32011
        approve(apr1)
        code, data = ask({"a": 1})
        assert code is None, f"the first approved call was refused: {code} {data}"
        code, data = ask({"a": 2})
        assert code == -32011, (code, data)
        approve(data["approval_id"])
        code, data = ask({"a": 2})
        assert code == RATE_LIMITED and data.get("rule") == "appr-cap", (code, data)
        assert len(peer.tool_calls("appr_tool")) == 1
    finally:
        if env is not None:
            env.stop()
        svc.proc.stop()
