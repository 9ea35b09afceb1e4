"""Fixtures: one real MCP server for the session, one real Envoy per distinct config.

Everything is started on free loopback ports and stopped at the end of the session,
also when a test fails (pytest finalizers run on failure and on Ctrl-C).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"

READER_KEY = "e2e-reader-key"
ADMIN_KEY = "e2e-admin-key"
REVOKED_KEY = "e2e-revoked-key"  # was a valid key; revoking = removing its line from the policy


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def base_policy() -> dict[str, Any]:
    """tests/e2e/fixtures/policy.json (a fresh copy each call)."""
    return json.loads((FIXTURES / "policy.json").read_text())


def policy_variant(**changes: Any) -> dict[str, Any]:
    """The base policy with dotted-path changes, e.g. policy_variant(**{"limits.batches": "evaluate"})."""
    p = base_policy()
    for dotted, value in changes.items():
        node = p
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return p


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def wasm() -> Path:
    """The compiled filter. Missing = a failure, never a skip: scripts/test.sh builds it first."""
    if not harness.WASM.exists():
        pytest.fail(f"{harness.WASM} is missing: run `cargo build --release --target wasm32-wasip1` "
                    "(scripts/test.sh does)")
    data = harness.WASM.read_bytes()
    if b"proxy_on_request_headers" not in data:
        pytest.fail(f"{harness.WASM} ({len(data)} bytes) exports no proxy-wasm HTTP callbacks: "
                    "the filter is not built yet")
    return harness.WASM


@pytest.fixture(scope="session")
def mcp_server(workdir: Path) -> Iterator[harness.McpServer]:
    if not harness.SERVER_JS.exists():
        pytest.fail(f"{harness.SERVER_JS} is missing: run scripts/setup.sh")
    srv = harness.McpServer(workdir)
    yield srv
    srv.stop()


EnvoyFactory = Callable[..., harness.Envoy]


@pytest.fixture(scope="session")
def envoy_for(workdir: Path, wasm: Path, mcp_server: harness.McpServer) -> Iterator[EnvoyFactory]:
    """envoy_for(policy, template="envoy", jwks=None) -> a running Envoy with that config.

    Envoys are cached per distinct config for the whole session (startup with Wasm
    takes ~0.5 s); tests compare counters before/after, so sharing one is safe with
    the tests running one at a time. Under pytest-xdist (scripts/test.sh) each
    worker is its own session, with its own server and Envoys.
    """
    running: dict[str, harness.Envoy] = {}

    def get(policy: dict[str, Any] | str | None, template: str = "envoy", jwks: str | None = None) -> harness.Envoy:
        key = json.dumps([policy, template, jwks], sort_keys=True)
        env = running.get(key)
        if env is not None and env.proc.alive():
            return env
        cfg = harness.render(template, listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=mcp_server.port, policy=policy, wasm=wasm, jwks=jwks)
        env = harness.Envoy(cfg, workdir, name=f"envoy-{len(running)}")
        running[key] = env
        return env

    yield get
    for env in running.values():
        env.stop()


@pytest.fixture(scope="session")
def envoy(envoy_for: EnvoyFactory) -> harness.Envoy:
    """Envoy + mcp-firewall with tests/e2e/fixtures/policy.json in front of server-everything."""
    return envoy_for(base_policy())
