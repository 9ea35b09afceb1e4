"""Intent classes end to end: the compiled filter in a real Envoy, a server
on the official Python SDK whose annotations disagree with the tools' names
(intents_server.py), the official SDK as the client.

Policy: agents (the e2e admin key) may call any tool, but a rule denies
every `destructive` tool (`intents` alone, no `tools`); open-world writes
need approval (no approval service: refused with -32011).

- Before any list every tool might be destructive (its annotations are not
  known): `get_time` and `send_email` are refused (-32010, rule
  `no-destroy`), `delete_repo` too, by its name.
- `tools/list` hides `get_weather` (`destructiveHint: true`) and
  `delete_repo` (`readOnlyHint: true` cannot clear a delete), keeps
  `get_time` and `send_email`.
- After that list (in any session: what it showed is remembered for the
  upstream), `get_time` passes, `send_email` is an open-world write
  (-32011), `get_weather` and `delete_repo` stay refused; the refused calls
  never reach the server (its answers say which did).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from conftest import ADMIN_KEY, base_policy
from mcp_raw import call, messages, open_session, sdk_session, send

import harness

HERE = Path(__file__).resolve().parent


def intents_policy() -> dict[str, Any]:
    p = base_policy()
    p["rules"] = [
        {"id": "catalogue", "effect": "allow", "methods": ["tools/list"]},
        {"id": "agents", "effect": "allow", "roles": ["admin"], "tools": ["*"]},
        {"id": "no-destroy", "effect": "deny", "roles": ["admin"], "intents": ["destructive"]},
        {"id": "ask-open-world-writes", "effect": "approve", "intents": ["open-world", "write"]},
    ]
    return p


def raw_call(url: str, tool: str) -> dict[str, Any]:
    """A call in a fresh session that never listed (the JSON-RPC answer)."""
    sess = open_session(url, ADMIN_KEY)
    r = send(url, body=json.dumps(call(tool, {}, id=7)), token=ADMIN_KEY, headers=sess)
    assert r.status_code == 200, r.text
    return messages(r)[-1]


def outcome(answer: dict[str, Any]) -> tuple[Any, ...]:
    """(code, rule) of a refusal, or the text the server answered."""
    if "error" in answer:
        err = answer["error"]
        return err.get("code"), err.get("data", {}).get("rule")
    return ("ran", answer["result"]["content"][0]["text"])


def test_deny_destructive_removes_and_refuses_by_names_and_annotations(workdir: Path, wasm: Path) -> None:
    port = harness.free_port()
    server = harness.Proc(f"intents-{port}", [sys.executable, str(HERE / "intents_server.py"), str(port)],
                          workdir / f"intents-{port}.log")
    env = None
    try:
        harness._wait(lambda: harness.port_open(port), 30, "intents server", server)
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=port, policy=intents_policy(), wasm=wasm)
        env = harness.Envoy(cfg, workdir, name="envoy-intents")

        # Before any list: nothing is known of the annotations.
        before = {t: outcome(raw_call(env.url, t)) for t in ["get_time", "send_email", "delete_repo"]}
        assert before == {
            "get_time": (-32010, "no-destroy"),
            "send_email": (-32010, "no-destroy"),
            "delete_repo": (-32010, "no-destroy"),
        }, before
        reason = raw_call(env.url, "get_time")["error"]["data"]["reason"]
        assert "annotations not seen yet" in reason, reason

        async def listing() -> tuple[list[str], Any]:
            async with sdk_session(env.url, ADMIN_KEY) as s:
                names = [t.name for t in (await s.list_tools()).tools]
                return names, await s.call_tool("get_time", {})
        names, got = anyio.run(listing)
        assert names == ["send_email", "get_time"], names
        assert got.content[0].text == "ran get_time", got

        after = {t: outcome(raw_call(env.url, t)) for t in ["get_time", "send_email", "get_weather", "delete_repo"]}
        assert after == {
            "get_time": ("ran", "ran get_time"),
            "send_email": (-32011, "ask-open-world-writes"),
            "get_weather": (-32010, "no-destroy"),
            "delete_repo": (-32010, "no-destroy"),
        }, after
        reason = raw_call(env.url, "get_weather")["error"]["data"]["reason"]
        assert "destructive (annotations seen in a tools/list)" in reason, reason
        assert env.stats(r"^wasmcustom\.mcp_firewall\.intents\.").get(
            "wasmcustom.mcp_firewall.intents.remember_failed", 0) == 0
    finally:
        if env is not None:
            env.stop()
        server.stop()
