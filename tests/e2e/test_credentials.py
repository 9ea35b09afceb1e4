"""Credential isolation: the caller's key for the firewall never reaches the MCP
server; the server gets its own credential, injected by Envoy's credential_injector
from a secret (envoy/credentials-example.yaml, loaded as committed).

The Go peer (peers/hostile/go_server.go) prints the Authorization header of every
tools/call it receives (`SAW-AUTH <value>`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN_KEY, base_policy
from mcp_raw import call
from test_hostile_peers import Peer, envoy_in_front, go_peer, post  # noqa: F401  (fixture)

import harness


def seen_credentials(peer: Peer, count: int) -> list[str]:
    """The Authorization values the peer saw, once there are `count` of them."""
    def read() -> list[str]:
        return [line[len("SAW-AUTH "):] if line.startswith("SAW-AUTH ") else ""
                for line in peer.proc.log_text().splitlines() if line.startswith("SAW-AUTH")]
    deadline = time.monotonic() + 5
    while len(read()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return read()


@pytest.fixture(scope="module")
def injecting_envoy(go_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:  # noqa: F811
    env = envoy_in_front(go_peer, workdir, wasm, "envoy-credentials", template="credentials-example")
    yield env
    env.stop()


@pytest.fixture(scope="module")
def plain_envoy(go_peer: Peer, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:  # noqa: F811
    env = envoy_in_front(go_peer, workdir, wasm, "envoy-no-injector")
    yield env
    env.stop()


def echo(url: str) -> None:
    r = post(url, json.dumps(call("echo", {"message": "who am I"})), [("Content-Type", "application/json")])
    assert r.status_code == 200 and "result" in r.json(), r.text


def test_the_peer_reports_the_credential_it_gets(go_peer: Peer) -> None:  # noqa: F811
    """Control: straight to the peer, the caller's key is what it sees."""
    before = len(seen_credentials(go_peer, 0))
    echo(go_peer.url)
    assert seen_credentials(go_peer, before + 1)[before:] == [f"Bearer {ADMIN_KEY}"]


def test_the_server_gets_its_own_credential_never_the_callers(injecting_envoy: harness.Envoy,
                                                              go_peer: Peer) -> None:  # noqa: F811
    before = len(seen_credentials(go_peer, 0))
    echo(injecting_envoy.url)
    seen = seen_credentials(go_peer, before + 1)[before:]
    assert seen == ["Bearer upstream-example-credential"], seen


def test_without_an_injector_the_server_gets_no_credential(plain_envoy: harness.Envoy,
                                                           go_peer: Peer) -> None:  # noqa: F811
    before = len(seen_credentials(go_peer, 0))
    echo(plain_envoy.url)
    assert seen_credentials(go_peer, before + 1)[before:] == [""]


def test_oauth_discovery_works_through_the_firewall(envoy_for: Any) -> None:
    """`identity.resource_metadata`: a 401 names the metadata (RFC 9728 §5.1),
    and a GET of its path reaches the server with no identity; nothing else
    does (the MCP endpoint still answers 401)."""
    url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    p = base_policy()
    p["identity"]["resource_metadata"] = url
    env = envoy_for(p)
    r = httpx.post(env.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"accept": "application/json, text/event-stream"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{url}"'
    base = env.url.rsplit("/", 1)[0]
    meta = httpx.get(base + "/.well-known/oauth-protected-resource/mcp")
    # server-everything serves no metadata: its own 404 shows the GET reached it.
    assert meta.status_code == 404 and "www-authenticate" not in meta.headers, (meta.status_code, meta.text[:200])
    assert "x-mcp-firewall-rule" not in meta.headers
    other = httpx.get(base + "/.well-known/oauth-protected-resource/other")
    assert other.status_code == 401, other.text
