"""Per-tool caps on the size of tool results, end to end: the compiled filter
in a real Envoy in front of server-everything (the official TypeScript SDK's
reference server, which answers every call on an SSE stream), driven by the
official Python SDK client.

Policy: `echo` results at most 1024 bytes, every other tool 64 KiB
(`limits.result_caps` + `limits.max_result_bytes`).

- `echo` of a short message runs; `echo` of a 4000-character message comes
  back larger than 1024 bytes and is replaced by -32010, rule `result-cap`,
  whose `data` names the cap, the size and the tool, never the text;
  `get-sum` (the default cap) runs.
- The server did run the refused call (the cap reads its answer), and the
  refusal is counted in `mcp_firewall.result_caps.refused`.
- Under `mode: dry_run` the same oversized answer reaches the client whole,
  and is counted all the same.
"""

from __future__ import annotations

from typing import Any

import anyio
from conftest import ADMIN_KEY, policy_variant
from mcp_raw import sdk_session

CAPS = {
    "limits.result_caps": [{"tools": ["echo"], "max_bytes": 1024}],
    "limits.max_result_bytes": 65536,
}
STAT = "wasmcustom.mcp_firewall.result_caps.refused"
LONG = "y" * 4000


async def three_calls(url: str) -> tuple[Any, Any, Any]:
    """echo short, echo long (the error, or the result in dry run), get-sum."""
    from mcp import MCPError

    async with sdk_session(url, ADMIN_KEY) as s:
        short = await s.call_tool("echo", {"message": "hello"})
        try:
            long: Any = await s.call_tool("echo", {"message": LONG})
        except MCPError as e:
            long = e
        total = await s.call_tool("get-sum", {"a": 2, "b": 3})
        return short, long, total


def test_a_result_over_its_tools_cap_is_refused_and_others_pass(envoy_for: Any) -> None:
    from mcp import MCPError

    env = envoy_for(policy_variant(**CAPS))
    refused_before = env.stat(STAT)
    upstream_before = env.upstream_requests()
    short, long, total = anyio.run(three_calls, env.url)

    assert short.content[0].text == "Echo: hello", short
    assert "5" in total.content[0].text, total
    assert isinstance(long, MCPError), f"an echo result past its 1024-byte cap reached the client: {long}"
    assert long.code == -32010, long.error
    data = long.data
    assert data["rule"] == "result-cap", data
    assert data["tool"] == "echo" and data["max_bytes"] == 1024, data
    assert data["bytes"] > 4000, data
    assert "limits.result_caps[0]" in data["reason"] and str(data["bytes"]) in data["reason"], data
    assert "yyyy" not in str(long.error), "the refusal must not carry the result's text"

    assert env.stat(STAT) - refused_before == 1
    # The server ran all three calls (a cap reads the answer, it does not
    # stop the call): initialize, initialized and the three calls went
    # upstream, beside the SDK's GET stream and closing DELETE.
    assert env.upstream_requests() - upstream_before >= 5


def test_dry_run_forwards_an_oversized_result_and_counts_it(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(**CAPS, mode="dry_run"))
    refused_before = env.stat(STAT)
    short, long, total = anyio.run(three_calls, env.url)

    assert short.content[0].text == "Echo: hello", short
    assert not isinstance(long, Exception), long
    assert long.content[0].text == f"Echo: {LONG}", "dry run must forward the result whole"
    assert "5" in total.content[0].text, total
    assert env.stat(STAT) - refused_before == 1
