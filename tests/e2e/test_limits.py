"""Size limits as the client sees them, in a real Envoy.

- `limits.max_response_bytes`: a list result the filter would have to hold and
  rewrite beyond the limit is refused (fail closed), on SSE and on JSON responses.
- `limits.max_request_bytes` above Envoy's own buffer limit: Envoy answers 413
  itself (text/plain) once the paused filter's buffer passes the listener's
  `per_connection_buffer_limit_bytes` (1 MiB by default). Either way the request
  never reaches the server; raise that listener setting with the policy limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import ADMIN_KEY, policy_variant
from mcp_raw import call, messages, open_session, rpc, send
from test_json_peer import json_envoy, json_peer  # noqa: F401  (fixtures)

import harness

SMALL_RESPONSES = {"limits.max_response_bytes": 4096}


def assert_unfilterable(r: Any, id_: int) -> None:
    msgs = messages(r)
    assert msgs, r.text[:500]
    errors = [m for m in msgs if isinstance(m, dict) and "error" in m]
    assert errors and not any("result" in m for m in msgs), \
        f"an over-limit list must not be passed through: {r.text[:500]}"
    err = errors[0]
    assert err["error"]["data"]["rule"] == "response-unfilterable", err
    assert err.get("id") == id_, f"the refusal must echo the request id {id_}: {err}"


def test_sse_list_over_max_response_bytes_is_refused(envoy_for: Any) -> None:
    """server-everything's tools/list for an admin is one ~8 KB SSE event."""
    env = envoy_for(policy_variant(**SMALL_RESPONSES))
    sess = open_session(env.url, ADMIN_KEY)
    r = send(env.url, body=json.dumps(rpc("tools/list", id=7)), token=ADMIN_KEY, headers=sess)
    assert r.status_code == 200
    assert len(r.content) < 4096 or "response-unfilterable" in r.text, \
        f"{len(r.content)} bytes of list passed a 4096-byte limit"
    assert_unfilterable(r, 7)


def test_json_list_over_max_response_bytes_is_refused(json_peer: int, workdir: Path, wasm: Path) -> None:  # noqa: F811
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=policy_variant(**{"limits.max_response_bytes": 256}),
                         wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-json-small-responses")
    try:
        sess = open_session(env.url, ADMIN_KEY)
        r = send(env.url, body=json.dumps(rpc("tools/list", id=9)), token=ADMIN_KEY, headers=sess)
    finally:
        env.stop()
    assert_unfilterable(r, 9)


def test_body_above_envoys_buffer_limit_gets_envoys_413(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(**{"limits.max_request_bytes": 4 << 20}))
    before = env.upstream_requests()
    r = send(env.url, body=json.dumps(call("echo", {"message": "x" * 1_500_000}, id=3)), token=ADMIN_KEY)
    assert r.status_code == 413, r.text[:300]
    assert env.upstream_requests() == before
