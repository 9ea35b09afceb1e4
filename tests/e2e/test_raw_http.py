"""The threat table, over raw HTTP, through the compiled filter in a real Envoy.

Raw HTTP (httpx) on purpose: an MCP SDK cannot send a batch, a duplicate key,
a `\\u`-escaped name, disagreeing Mcp-* headers, a gzip body, an odd method or
content type, invalid UTF-8 or a body cut in one-byte chunks. Every case says
what the caller must see and whether the MCP server may see the request: for
the refused ones, `cluster.mcp_server.upstream_rq_total` (all requests) and
`vhost.mcp.vcluster.mcp_post.upstream_rq_total` (POSTs) must not move.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, READER_KEY, REVOKED_KEY, base_policy, policy_variant
from mcp_raw import call, messages, open_session, rpc, send

POLICIES = {
    "base": base_policy,
    "evaluate": lambda: policy_variant(**{"limits.batches": "evaluate"}),
}

UNCHANGED = "unchanged"  # the MCP server never sees the request
REACHED = "reached"      # the request went on to the MCP server


@dataclass
class Case:
    name: str
    body: Any                      # bytes/str sent as is; list[bytes] = chunked; dict/list = json.dumps
    status: int
    upstream: str
    token: str | None = READER_KEY
    method: str = "POST"
    headers: dict[str, str | bytes] = field(default_factory=dict)  # bytes: sent as is (non-UTF-8 cases)
    content_type: str | None = "application/json"
    policy: str = "base"
    code: int | None = None        # expected JSON-RPC error code (single response)
    rule: str | None = None        # expected error.data.rule
    any_error: bool = False        # a JSON-RPC error object of any code is expected
    empty_body: bool = False
    batch_errors: dict[int, int | None] | None = None  # id -> code (None = any error)
    batch_rules: dict[int, str] | None = None
    session: bool = False          # open a real MCP session first (the call must reach the server)
    result_text: str | None = None  # expected text of the server's tools/call result
    why: str = ""


def deep(n: int) -> Any:
    v: Any = "bottom"
    for _ in range(n):
        v = [v]
    return v


ECHO = call("echo", {"message": "hi"}, id=1)

CASES = [
    # ---- identity --------------------------------------------------------------------------
    Case("missing-identity-401", ECHO, 401, UNCHANGED, token=None, any_error=True,
         why="no API key, no JWT payload, anonymous_roles empty"),
    Case("revoked-key-401", ECHO, 401, UNCHANGED, token=REVOKED_KEY, any_error=True,
         why="the key's line was removed from the policy"),
    Case("wrong-key-401", ECHO, 401, UNCHANGED, token="not-a-key", any_error=True),
    # ---- policy outcomes -------------------------------------------------------------------
    Case("denied-tool-names-rule", call("get-env", id=5), 200, UNCHANGED, code=-32010, rule="no-env"),
    Case("default-deny-tool-not-allowed-for-role", call("get-tiny-image", id=6), 200, UNCHANGED,
         code=-32010, rule="default-deny"),
    Case("approval-required-without-approval-config", call("trigger-long-running-operation", id=7),
         200, UNCHANGED, token=ADMIN_KEY, code=-32011, rule="long-ops-need-approval",
         why="approve rule, no approval section: refused with -32011"),
    Case("denied-notification-403-empty", rpc("notifications/roots/list_changed", id=None), 403, UNCHANGED,
         empty_body=True),
    # ---- name tricks -----------------------------------------------------------------------
    Case("escaped-name-decided-as-echo",
         rb'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"\u0065cho","arguments":{"message":"escaped"}}}',
         200, REACHED, session=True, result_text="Echo: escaped",
         why="\\u0065cho decodes to echo: allowed, and the server runs echo"),
    Case("escaped-forbidden-name-denied",
         rb'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"\u0067et-env","arguments":{}}}',
         200, UNCHANGED, code=-32010, rule="no-env"),
    Case("escaped-method-denied",
         rb'{"jsonrpc":"2.0","id":13,"method":"tools\/call","params":{"name":"get-\u0065nv","arguments":{}}}',
         200, UNCHANGED, code=-32010, rule="no-env"),
    Case("case-lookalike-not-allowed", call("Echo", {"message": "x"}, id=14), 200, UNCHANGED,
         code=-32010, rule="default-deny", why="globs are case-sensitive"),
    Case("unicode-lookalike-not-allowed", call("\u0435cho", {"message": "x"}, id=15), 400, UNCHANGED,
         code=-32600, why="Cyrillic U+0435 is no character MCP gives tool names: refused before any rule"),
    Case("glob-chars-in-name-are-refused", call("ech*", {"message": "x"}, id=16), 400, UNCHANGED,
         code=-32600, why="'*' is no character MCP gives tool names"),
    Case("duplicate-key-smuggling",
         b'{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","name":"get-env","arguments":{}}}',
         400, UNCHANGED, code=-32600),
    Case("duplicate-top-level-method",
         b'{"jsonrpc":"2.0","id":18,"method":"tools/list","method":"tools/call","params":{"name":"get-env"}}',
         400, UNCHANGED, code=-32600),
    # ---- Mcp-Method / Mcp-Name headers --------------------------------------------------------
    Case("mcp-name-disagrees-with-body", call("get-env", id=21), 400, UNCHANGED, code=-32020,
         headers={"Mcp-Method": "tools/call", "Mcp-Name": "echo"}),
    Case("mcp-method-disagrees-with-body", call("echo", {"message": "x"}, id=22), 400, UNCHANGED,
         code=-32020, headers={"Mcp-Method": "tools/list"}),
    Case("mcp-name-base64-agrees-accepted", call("echo", {"message": "b64"}, id=23), 200, REACHED,
         session=True, result_text="Echo: b64",
         headers={"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?" + base64.b64encode(b"echo").decode() + "?="}),
    Case("mcp-name-base64-disagrees", call("get-env", id=24), 400, UNCHANGED, code=-32020,
         headers={"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?" + base64.b64encode(b"echo").decode() + "?="}),
    Case("mcp-name-base64-utf8-agrees-then-refused", call("\u0435cho", {"message": "x"}, id=25), 400, UNCHANGED,
         code=-32600,
         headers={"Mcp-Method": "tools/call",
                  "Mcp-Name": "=?base64?" + base64.b64encode("\u0435cho".encode()).decode() + "?="},
         why="header and body agree on the Cyrillic name; the name is then refused (outside MCP's tool-name characters)"),
    Case("mcp-name-base64-utf8-disagrees", call("\u0435cho", {"message": "x"}, id=26), 400, UNCHANGED,
         code=-32020,
         headers={"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?" + base64.b64encode(b"echo").decode() + "?="}),
    Case("path-chars-in-tool-name", call("../echo", {"message": "x"}, id=27), 400, UNCHANGED,
         code=-32600, why="'/' is no character MCP gives tool names"),
    # ---- batches ---------------------------------------------------------------------------
    Case("batch-rejected-by-default", [call("echo", {"message": "a"}, id=31), call("echo", {"message": "b"}, id=32)],
         400, UNCHANGED, code=-32600),
    Case("batch-smuggling-denied-call-under-evaluate",
         [call("echo", {"message": "a"}, id=33), call("get-env", id=34)], 200, UNCHANGED, policy="evaluate",
         batch_errors={33: None, 34: -32010}, batch_rules={34: "no-env"},
         why="one refused element refuses the whole batch; every id is answered"),
    Case("empty-batch-under-evaluate", b"[]", 400, UNCHANGED, policy="evaluate", code=-32600),
    Case("two-concatenated-messages", json.dumps(call("echo", {"message": "a"}, id=35))
         + json.dumps(call("get-env", id=36)), 400, UNCHANGED, code=-32700,
         why="trailing data after the first JSON value"),
    Case("client-sent-response-frame-passes", {"jsonrpc": "2.0", "id": 37, "result": {}}, 202, REACHED,
         session=True, why="a JSON-RPC response from the client is base protocol (the server answers 202)"),
    # ---- body encoding and size -------------------------------------------------------------
    Case("gzip-body-415", gzip.compress(json.dumps(ECHO).encode()), 415, UNCHANGED, code=-32600,
         headers={"Content-Encoding": "gzip"}),
    Case("oversized-body-413", call("echo", {"message": "a" * 70_000}, id=41), 413, UNCHANGED,
         why="max_request_bytes 65536"),
    Case("malformed-json-32700", b'{"jsonrpc":"2.0","id":42,"method":"tools/call",', 400, UNCHANGED, code=-32700),
    Case("not-jsonrpc-2-32600", {"jsonrpc": "1.0", "id": 43, "method": "tools/list"}, 400, UNCHANGED, code=-32600),
    Case("invalid-utf8-32600",
         b'{"jsonrpc":"2.0","id":44,"method":"tools/call","params":{"name":"echo","arguments":{"message":"\xff\xfe"}}}',
         400, UNCHANGED, code=-32600),
    Case("json-too-deep-32600", call("echo", {"message": "x", "deep": deep(40)}, id=45), 400, UNCHANGED,
         code=-32600, why="max_json_depth 32"),
    Case("tiny-chunks-denied", [bytes([b]) for b in json.dumps(call("get-env", id=46)).encode()], 200, UNCHANGED,
         code=-32010, rule="no-env", why="Transfer-Encoding: chunked, one byte per chunk"),
    Case("tiny-chunks-allowed", [bytes([b]) for b in json.dumps(call("echo", {"message": "chunky"}, id=47)).encode()],
         200, REACHED, session=True, result_text="Echo: chunky"),
    # ---- HTTP method and content type -------------------------------------------------------
    Case("content-type-text-plain-415", ECHO, 415, UNCHANGED, content_type="text/plain", code=-32600),
    Case("content-type-missing-415", ECHO, 415, UNCHANGED, content_type=None, code=-32600),
    Case("content-type-with-charset-accepted", call("echo", {"message": "cs"}, id=48), 200, REACHED,
         session=True, result_text="Echo: cs", content_type="application/json; charset=utf-8"),
    Case("content-type-lookalike-415", ECHO, 415, UNCHANGED, content_type="application/jsonp", code=-32600),
    Case("method-not-a-string-32600", {"jsonrpc": "2.0", "id": 49, "method": 5}, 400, UNCHANGED, code=-32600),
    Case("put-405", ECHO, 405, UNCHANGED, method="PUT"),
    Case("get-without-identity-401", None, 401, UNCHANGED, method="GET", token=None, content_type=None,
         any_error=True),
    Case("get-passes-identity-check", None, 400, REACHED, method="GET", content_type=None,
         why="the server (not the firewall) answers 400: no session id"),
    Case("delete-passes-identity-check", None, 400, REACHED, method="DELETE", content_type=None,
         why="the server (not the firewall) answers 400: no session id"),
    Case("non-utf8-header-value-is-no-crash", ECHO, 200, REACHED, headers={"x-note": b"caf\xe9"}, session=True,
         result_text="Echo: hi",
         why="a header value that is not UTF-8 (byte 0xE9) must not kill the VM; unread headers are ignored"),
    Case("non-utf8-authorization-401", ECHO, 401, UNCHANGED, token=None,
         headers={"authorization": b"Bearer caf\xe9"}, any_error=True,
         why="an identity header that is not UTF-8 counts as absent"),
    Case("get-with-a-body-400", ECHO, 400, UNCHANGED, method="GET", code=-32600,
         why="a body on GET would reach the server undecided"),
    Case("delete-with-a-body-400", ECHO, 400, UNCHANGED, method="DELETE", code=-32600,
         why="a body on DELETE would reach the server undecided"),
]


def encode_body(body: Any) -> Any:
    if body is None or isinstance(body, (bytes, str)):
        return body
    if isinstance(body, list) and body and isinstance(body[0], bytes):
        return iter(body)
    return json.dumps(body)


def sent_message(body: Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def error_of(msg: Any) -> dict[str, Any]:
    assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0", f"not a JSON-RPC message: {msg!r}"
    assert "error" in msg and isinstance(msg["error"], dict), f"not a JSON-RPC error: {msg!r}"
    return msg["error"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw(case: Case, envoy_for: Any, mcp_server: Any) -> None:
    env = envoy_for(POLICIES[case.policy]())
    headers = dict(case.headers)
    if case.session:
        headers.update(open_session(env.url, case.token or READER_KEY))

    before = (env.upstream_requests(), env.upstream_posts(), mcp_server.posts_received())
    r = send(env.url, method=case.method, body=encode_body(case.body), token=case.token, headers=headers,
             content_type=case.content_type)
    after = (env.upstream_requests(), env.upstream_posts(), mcp_server.posts_received())
    where = f"{case.name}: HTTP {r.status_code} {dict(r.headers)} {r.text[:600]!r}"

    assert r.status_code == case.status, where

    if case.upstream == UNCHANGED:
        assert after == before, f"{where}\nupstream counters moved (cluster, POSTs, server log): {before} -> {after}"
    else:
        assert after[0] > before[0], f"{where}\nthe request never reached the MCP server"

    if case.empty_body:
        assert r.content == b"", where
    if case.code is not None or case.any_error:
        msgs = messages(r)
        assert len(msgs) == 1, where
        err = error_of(msgs[0])
        if case.code is not None:
            assert err.get("code") == case.code, where
        sent = sent_message(case.body)
        if isinstance(sent, dict) and "id" in sent and case.status == 200:
            assert msgs[0].get("id") == sent["id"], f"{where}\nthe error must echo the request id"
        if case.rule is not None:
            data = err.get("data") or {}
            assert data.get("rule") == case.rule, where
            assert isinstance(data.get("reason"), str) and data["reason"], f"{where}\nerror.data.reason missing"
    if case.batch_errors is not None:
        assert r.headers.get("content-type", "").startswith("application/json"), where
        answers = json.loads(r.content)
        assert isinstance(answers, list), where
        by_id = {a.get("id"): a for a in answers}
        assert set(by_id) == set(case.batch_errors), f"{where}\nevery id must be answered exactly once"
        for id_, code in case.batch_errors.items():
            err = error_of(by_id[id_])
            if code is not None:
                assert err.get("code") == code, where
        for id_, rule in (case.batch_rules or {}).items():
            assert (error_of(by_id[id_]).get("data") or {}).get("rule") == rule, where
    if case.result_text is not None:
        results = [m for m in messages(r) if isinstance(m, dict) and "result" in m]
        assert results, f"{where}\nno JSON-RPC result from the server"
        texts = [c.get("text") for c in results[-1]["result"].get("content", [])]
        assert case.result_text in texts, where


def test_revoked_key_is_accepted_while_listed(envoy_for: Any) -> None:
    """Control for revoked-key-401: the same key works while its line is in the policy,
    so the 401 above comes from the revocation, not from a malformed key."""
    from conftest import sha256_hex

    p = base_policy()
    p["identity"]["api_keys"].append({"sha256": sha256_hex(REVOKED_KEY), "subject": "soon-revoked",
                                      "roles": ["reader"]})
    env = envoy_for(p)
    sess = open_session(env.url, REVOKED_KEY)
    r = send(env.url, body=json.dumps(call("echo", {"message": "still valid"}, id=3)), token=REVOKED_KEY,
             headers=sess)
    assert r.status_code == 200, r.text
    texts = [c.get("text") for m in messages(r) if "result" in m for c in m["result"]["content"]]
    assert "Echo: still valid" in texts


def test_a_header_name_with_an_underscore_is_refused_before_the_firewall(envoy: Any) -> None:
    """`mcp_session_id` is `Mcp-Session-Id` to a CGI-style server (Rack, PHP:
    HTTP_MCP_SESSION_ID) but a header the firewall never reads; the shipped
    Envoy configs refuse such names (fresh-eyes review F7)."""
    before = envoy.upstream_requests()
    r = httpx.post(envoy.url, content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
                   headers={"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}",
                            "mcp_session_id": "victim-session"})
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert envoy.upstream_requests() == before
