"""A server that only speaks stdio, behind Envoy and the firewall.

Many MCP servers run over stdio; Envoy speaks HTTP. The path a platform team
takes is a standard stdio-to-streamable-HTTP bridge in front of the server:
here `supergateway` (npm; chosen over PyPI's `mcp-proxy`, which pins the
Python MCP SDK below 2 and so cannot share this suite's environment) runs the
official filesystem server (`@modelcontextprotocol/server-filesystem`) over
stdio and serves it at `/mcp`; Envoy with the firewall sits in front. Driven
by the official Python SDK client:

- the reader's tool list is filtered to what the policy allows;
- a read under the allowed directory passes (a `path_under` condition), one
  outside it and a write are refused and never reach the bridge;
- a secret in a file read is redacted in the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import sdk_session

import harness

BRIDGE = harness.REPO / "peers" / "node_modules" / ".bin" / "supergateway"
FILESYSTEM = harness.REPO / "peers" / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
SECRET = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"


@pytest.fixture()
def files(workdir: Path) -> Path:
    root = workdir / "served"
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "private").mkdir(exist_ok=True)
    (root / "docs" / "readme.txt").write_text("hello docs\n")
    (root / "docs" / "deploy.env").write_text(f"GITHUB_TOKEN={SECRET}\n")
    (root / "private" / "keys.txt").write_text("nothing for readers\n")
    return root


@pytest.fixture()
def bridge(workdir: Path, files: Path) -> Iterator[int]:
    if not BRIDGE.exists() or not FILESYSTEM.exists():
        pytest.fail("supergateway or server-filesystem missing: scripts/setup.sh runs npm ci in peers/")
    port = harness.free_port()
    proc = harness.Proc("supergateway", [
        str(BRIDGE), "--stdio", f"node {FILESYSTEM} {files}", "--outputTransport", "streamableHttp",
        "--port", str(port), "--streamableHttpPath", "/mcp", "--stateful"],
        workdir / "supergateway.log", cwd=workdir)
    try:
        harness._wait(lambda: harness.port_open(port), 30, "supergateway", proc)
        yield port
    finally:
        proc.stop()


def policy(root: Path) -> dict[str, Any]:
    p = base_policy()
    p["rules"] = [
        {"id": "catalogue", "effect": "allow", "methods": ["tools/list"]},
        {"id": "read-docs", "effect": "allow", "roles": ["reader"], "tools": ["read_text_file"],
         "when": {"arg": "/path", "path_under": str(root / "docs")}},
        {"id": "list-dirs", "effect": "allow", "roles": ["reader"], "tools": ["list_allowed_directories"]},
    ]
    return p


def test_a_stdio_server_behind_a_bridge_is_decided_like_any_other(bridge: int, files: Path, workdir: Path,
                                                                   wasm: Path) -> None:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=bridge, policy=policy(files), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-stdio-bridge")
    try:
        async def go() -> dict[str, Any]:
            got: dict[str, Any] = {}
            async with sdk_session(env.url, READER_KEY) as s:
                got["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                got["docs"] = (await s.call_tool("read_text_file", {"path": str(files / "docs" / "readme.txt")})).content[0].text
                got["secret"] = (await s.call_tool("read_text_file", {"path": str(files / "docs" / "deploy.env")})).content[0].text
                before = env.upstream_posts()
                for name, tool, args in [
                    ("outside", "read_text_file", {"path": str(files / "private" / "keys.txt")}),
                    ("climb", "read_text_file", {"path": str(files / "docs" / ".." / "private" / "keys.txt")}),
                    ("write", "write_file", {"path": str(files / "docs" / "x.txt"), "content": "x"}),
                ]:
                    try:
                        await s.call_tool(tool, args)
                        got[name] = "passed"
                    except MCPError as e:
                        got[name] = (e.code, (e.data or {}).get("rule"))
                got["moved"] = env.upstream_posts() - before
            return got

        got = anyio.run(go)
    finally:
        env.stop()
    assert got["tools"] == ["list_allowed_directories", "read_text_file"], got["tools"]
    assert got["docs"].strip() == "hello docs"
    assert SECRET not in got["secret"] and "[REDACTED:github_pat]" in got["secret"], got["secret"]
    assert got["outside"] == (-32010, "default-deny"), got
    assert got["climb"] == (-32010, "default-deny"), got
    assert got["write"] == (-32010, "default-deny"), got
    assert got["moved"] == 0, "a refused call reached the bridge"
    assert not (files / "docs" / "x.txt").exists()
