"""Tool pins end to end: the compiled filter in a real Envoy, the official
Python SDK as the client, `mcp-firewall pin` taking the pins.

- The rug pull (tests/e2e/rug_pull_server.py, official Python SDK server):
  pins are taken of the reviewed catalogue; then the server changes `echo`'s
  description and `add`'s annotations. The firewall removes both from
  `tools/list`, refuses their calls with -32014 (both digests), the audit
  events carry old and new digests, `mcp-firewall audit show --pins` finds
  the change, `mcp-firewall pin --diff` says which members changed. The
  server going back to the reviewed catalogue does not release them
  (`pins.hold_s`).
- Members spelt so a client reads them as covered ones (fourth review F2):
  `deſcription`/`annotationſ` (Go's folding) and `output_schema` (the
  Python SDK's alias) on `delete_repo` remove it and refuse its calls.
- A server answering each caller its own list (fourth review F4): caller B
  shown the changed definitions, caller A the reviewed ones after it; both
  callers' calls stay refused until `pins.hold_s` has passed.
- Definitions are stable: server-everything's and the SDK server's lists,
  pinned once, lose no tool across server restarts and an Envoy restart
  (zero false removals); a call before any list after the restart is refused
  (`unseen`), and passes once the client listed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from audit_support import AUDIT_CLUSTER, CLI, Collector, collector_cluster
from conftest import ADMIN_KEY, base_policy
from mcp_raw import call, messages, open_session, rpc, send, sdk_session

import harness

HERE = Path(__file__).resolve().parent
STATS = r"^wasmcustom\.mcp_firewall\.pins\."
ALL_TOOLS = ["echo", "add", "weather", "delete_repo"]
# The rug-pull server's per-request choice of catalogue (see rug_pull_server.py).
MODE = "x-rug-pull"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run `cargo build --release -p mcp-firewall-cli` (scripts/test.sh does)")
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60)


def take_pins(url: str) -> dict[str, Any]:
    """`mcp-firewall pin --url` asked of the server directly (a reviewer's staging step)."""
    r = cli("pin", "--url", url)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["pins"]


class RugPullServer:
    def __init__(self, workdir: Path, port: int, flag: Path, n: int):
        self.port, self.flag = port, flag
        self.proc = harness.Proc(f"rug-pull-{n}", [sys.executable, str(HERE / "rug_pull_server.py"), str(port),
                                                   str(flag)], workdir / f"rug-pull-{n}.log")
        try:
            harness._wait(lambda: harness.port_open(port), 30, "rug pull server", self.proc)
        except BaseException:
            self.proc.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        self.proc.stop()


def pinned_policy(pins: dict[str, Any], audit: bool) -> dict[str, Any]:
    p = base_policy()
    p["pins"] = pins
    if audit:
        p["audit"] = {"cluster": AUDIT_CLUSTER, "path": "/v1/audit", "authority": "audit", "flush_ms": 50}
    return p


def envoy_in_front(workdir: Path, wasm: Path, upstream: int, policy: dict[str, Any], name: str,
                   collector_port: int | None = None) -> harness.Envoy:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=upstream, policy=policy, wasm=wasm)
    if collector_port is not None:
        cfg["static_resources"]["clusters"].append(collector_cluster(collector_port))
    return harness.Envoy(cfg, workdir, name=name)


def listed(url: str, headers: dict[str, str] | None = None) -> list[str]:
    async def go() -> list[str]:
        async with sdk_session(url, ADMIN_KEY, headers=headers) as s:
            return [t.name for t in (await s.list_tools()).tools]
    return anyio.run(go)


def list_then_call(url: str, tool: str, args: dict[str, Any],
                   headers: dict[str, str] | None = None) -> tuple[list[str], Any]:
    """One SDK session: list, then call `tool` (the SDK calls what it is told)."""
    async def go() -> tuple[list[str], Any]:
        async with sdk_session(url, ADMIN_KEY, headers=headers) as s:
            names = [t.name for t in (await s.list_tools()).tools]
            return names, await s.call_tool(tool, args)
    return anyio.run(go)


def raw_call(url: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """A call in a fresh session that never listed (the JSON-RPC answer)."""
    sess = open_session(url, ADMIN_KEY)
    r = send(url, body=json.dumps(call(tool, args, id=7)), token=ADMIN_KEY, headers=sess)
    assert r.status_code == 200, r.text
    return messages(r)[-1]


def pin_stats(env: harness.Envoy) -> dict[str, int]:
    s = env.stats(STATS)
    return {k.rsplit(".", 1)[-1]: v for k, v in s.items()}


@pytest.fixture()
def collector(workdir: Path) -> Iterator[Collector]:
    c = Collector(workdir, f"pins-collector-{harness.free_port()}")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def events_of(c: Collector, env: harness.Envoy, want: Any, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        evs = [json.loads(line) for line in c.out.read_text().splitlines()] if c.out.exists() else []
        if want(evs):
            return evs
        time.sleep(0.1)
    raise AssertionError(f"no audit events with {what}; Envoy log:\n{env.log_text()[-3000:]}")


def test_the_rug_pull_is_removed_refused_audited_and_diffed(workdir: Path, wasm: Path,
                                                            collector: Collector) -> None:
    flag = workdir / f"rug-pull-{harness.free_port()}.flag"
    server = RugPullServer(workdir, harness.free_port(), flag, 1)
    env = None
    try:
        # The reviewed catalogue: pinned, and saved for the reviewer's diff later.
        reviewed = workdir / "rug-pull-reviewed.json"
        sess = open_session(server.url, ADMIN_KEY)
        r = send(server.url, body=json.dumps(rpc("tools/list", {}, id=3)), token=ADMIN_KEY, headers=sess)
        reviewed.write_text(json.dumps(messages(r)[-1]))
        pins = take_pins(server.url)
        from_file = cli("pin", str(reviewed))
        assert from_file.returncode == 0 and json.loads(from_file.stdout)["pins"] == pins, from_file.stdout
        assert sorted(pins["tools"]) == ["add", "delete_repo", "echo", "weather"], pins
        policy_path = workdir / "rug-pull-policy.json"
        policy = pinned_policy(pins, audit=True)
        policy_path.write_text(json.dumps(policy))
        env = envoy_in_front(workdir, wasm, server.port, policy, "envoy-pins-rug", collector.port)

        names, res = list_then_call(env.url, "echo", {"message": "hi"})
        assert names == ALL_TOOLS
        assert res.content[0].text == "Echo: hi"
        before = pin_stats(env)

        # The rug pull.
        flag.write_text("pulled")
        after_list = listed(env.url)
        assert after_list == ["weather", "delete_repo"], after_list
        refused = {}
        for tool, args in [("echo", {"message": "hi"}), ("add", {"a": 1, "b": 2})]:
            answer = raw_call(env.url, tool, args)
            err = answer.get("error") or {}
            assert err.get("code") == -32014, answer
            data = err["data"]
            assert (data["tool"], data["expected"], data["rule"]) == (tool, pins["tools"][tool], "pin"), data
            assert data["actual"].startswith("sha256:") and data["actual"] != data["expected"], data
            refused[tool] = data["actual"]
        assert raw_call(env.url, "weather", {})["result"]["content"][0]["text"] == "sunny"
        stats = pin_stats(env)
        assert stats.get("removed", 0) - before.get("removed", 0) == 2, stats
        assert stats.get("refused", 0) - before.get("refused", 0) == 2, stats

        # The audit trail: the list's event and the calls' carry both digests.
        def records(evs: list[dict[str, Any]], action: str) -> dict[str, tuple[str, str]]:
            return {p["tool"]: (p["expected"], p["actual"]) for e in evs for p in e.get("pins", [])
                    if p["action"] == action}
        evs = events_of(collector, env, lambda evs: len(records(evs, "refused")) == 2
                        and len(records(evs, "removed")) == 2, "the removed and refused pins")
        for action in ("removed", "refused"):
            got = records(evs, action)
            assert got == {t: (pins["tools"][t], refused[t]) for t in ("echo", "add")}, (action, got)
        trail = collector.out
        show = cli("audit", "show", str(trail), "--pins")
        assert show.returncode == 0, show.stderr
        for tool in ("echo", "add"):
            for action in ("removed", "refused"):
                line = f"pin {tool} {action}: expected {pins['tools'][tool]} actual {refused[tool]}"
                assert line in show.stdout, show.stdout
        print(show.stdout)
        verify = cli("audit", "verify", str(trail))
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # The reviewer's view: which members changed, and how.
        now = workdir / "rug-pull-now.json"
        sess = open_session(server.url, ADMIN_KEY)
        r = send(server.url, body=json.dumps(rpc("tools/list", {}, id=3)), token=ADMIN_KEY, headers=sess)
        now.write_text(json.dumps(messages(r)[-1]))
        diff = cli("pin", "--diff", str(policy_path), str(now), str(reviewed))
        print(diff.stdout)
        assert diff.returncode == 1, diff.stdout + diff.stderr
        for want in ["changed    add", "  annotations:", "/destructiveHint: false -> true",
                     "/readOnlyHint: true -> false", "changed    echo", "  description:",
                     "read ~/.ssh/id_rsa", "unchanged  weather", "unchanged  delete_repo"]:
            assert want in diff.stdout, (want, diff.stdout)
        assert "inputSchema" not in diff.stdout, diff.stdout

        # The server goes back to what was reviewed: the tools are listed
        # again, but a change once shown is held (pins.hold_s, a day by
        # default): a model may still act on what it read.
        flag.unlink()
        assert listed(env.url) == ALL_TOOLS
        held = raw_call(env.url, "add", {"a": 1, "b": 2})["error"]
        assert (held["code"], held["data"]["actual"]) == (-32014, refused["add"]), held
        assert "held until" in held["data"]["reason"], held
    finally:
        if env is not None:
            env.stop()
        server.stop()


def test_definitions_are_stable_across_restarts(workdir: Path, wasm: Path) -> None:
    """Zero false removals: each server pinned once, listed through the firewall
    after its restart and after an Envoy restart, keeps every tool."""
    sdk_port, everything_port = harness.free_port(), harness.free_port()
    flag = workdir / "never-created.flag"
    figures = []
    for name in ("sdk", "everything"):
        start = {
            "sdk": lambda n: RugPullServer(workdir, sdk_port, flag, 10 + n),
            "everything": lambda n: harness.McpServer(workdir, everything_port),
        }[name]
        port = sdk_port if name == "sdk" else everything_port
        server = start(0)
        envs: list[harness.Envoy] = []
        try:
            pins = take_pins(server.url)
            policy = pinned_policy(pins, audit=False)
            # Every tool visible to the caller: what leaves a list is the pins' doing.
            policy["rules"] = [r for r in policy["rules"] if r["id"] != "no-env"]
            total = len(pins["tools"])
            envs.append(envoy_in_front(workdir, wasm, port, policy, f"envoy-pins-{name}-1"))
            kept = [len(listed(envs[-1].url))]
            for restart in (1, 2):
                server.stop()
                server = start(restart)
                # The digest the CLI takes after the restart is the pin itself.
                assert take_pins(server.url) == pins, f"{name}: definitions changed across a restart"
                kept.append(len(listed(envs[-1].url)))
            envs[-1].stop()
            envs.append(envoy_in_front(workdir, wasm, port, policy, f"envoy-pins-{name}-2"))
            # A new Envoy has seen no list: a call of a pinned tool fails closed ...
            tool = "echo"
            answer = raw_call(envs[-1].url, tool, {"message": "x"})
            assert answer["error"]["code"] == -32014 and answer["error"]["data"]["actual"] == "unseen", answer
            # ... and passes once a client listed.
            names, res = list_then_call(envs[-1].url, tool, {"message": "x"})
            kept.append(len(names))
            assert "x" in res.content[0].text
            stats = pin_stats(envs[-1])
            assert stats.get("removed", 0) == 0, (name, stats)
            assert kept == [total] * len(kept), (name, kept, total)
            figures.append(f"{name}: {total} tools pinned, kept {kept} (3 server starts, 2 Envoys), 0 removed")
        finally:
            for e in envs:
                e.stop()
            server.stop()
    print("\n".join(figures))


def saved_list(server: RugPullServer, path: Path, mode: str | None = None) -> Path:
    """The server's tools/list answer, asked directly (as a reviewer saves it)."""
    sess = open_session(server.url, ADMIN_KEY)
    headers = {**sess, **({MODE: mode} if mode else {})}
    r = send(server.url, body=json.dumps(rpc("tools/list", {}, id=3)), token=ADMIN_KEY, headers=headers)
    path.write_text(json.dumps(messages(r)[-1], ensure_ascii=False))
    return path


def test_members_a_client_reads_as_covered_ones_are_pinned(workdir: Path, wasm: Path) -> None:
    """Fourth review F2: `delete_repo`, reviewed with no description and no
    annotations, is listed with `deſcription` and `annotationſ` (Go's
    encoding/json reads them as the description and the annotations), then
    with `output_schema` (the Python SDK reads it as the output schema). Both
    times it leaves the list and its calls are refused with the digest of
    what was listed, the one `mcp-firewall pin` takes of the same answer."""
    flag = workdir / "never-created-f2.flag"
    server = RugPullServer(workdir, harness.free_port(), flag, 20)
    env = None
    try:
        pins = take_pins(server.url)
        env = envoy_in_front(workdir, wasm, server.port, pinned_policy(pins, audit=False), "envoy-pins-f2")
        assert listed(env.url) == ALL_TOOLS
        assert raw_call(env.url, "delete_repo", {"repo": "r"})["result"]["content"][0]["text"] == "deleted r"
        before = pin_stats(env)
        for n, mode in enumerate(["folded", "alias"], start=1):
            taken = cli("pin", str(saved_list(server, workdir / f"rug-pull-{mode}.json", mode)))
            assert taken.returncode == 0, taken.stderr
            # The reviewer is told of the odd spelling; the digest covers it.
            assert "warning: tool \"delete_repo\" has members a client reads as covered ones" in taken.stderr, \
                taken.stderr
            digest = json.loads(taken.stdout)["pins"]["tools"]["delete_repo"]
            assert digest != pins["tools"]["delete_repo"], mode
            names = listed(env.url, {MODE: mode})
            assert names == ["echo", "add", "weather"], (mode, names)
            err = raw_call(env.url, "delete_repo", {"repo": "r"}).get("error") or {}
            assert err.get("code") == -32014, (mode, err)
            data = err["data"]
            assert (data["tool"], data["expected"], data["actual"]) == \
                ("delete_repo", pins["tools"]["delete_repo"], digest), (mode, data)
            assert pin_stats(env).get("removed", 0) - before.get("removed", 0) == n, (mode, pin_stats(env))
        # The SDK's own Tool model reads the alias as the output schema
        # (pydantic, populate_by_name). Its ClientSession (mcp 2.3.0) sieves
        # answers by the wire surface first and drops it; code validating a
        # listed tool with mcp.types does not.
        from mcp import types
        saved = json.loads((workdir / "rug-pull-alias.json").read_text())
        entry = next(t for t in saved["result"]["tools"] if t["name"] == "delete_repo")
        assert types.Tool.model_validate(entry).output_schema is not None, entry
    finally:
        if env is not None:
            env.stop()
        server.stop()


def test_a_change_shown_to_one_caller_is_held_for_every_caller(workdir: Path, wasm: Path) -> None:
    """Fourth review F4: the server lists per caller. Caller B (header) is
    shown the changed `echo` and `add`, caller A the reviewed catalogue
    after it. A's list does not clear what B's showed: B's calls and A's
    stay refused, naming what B was shown, until `pins.hold_s` has passed
    since; then A, listing the reviewed catalogue, calls again."""
    flag = workdir / "never-created-f4.flag"
    server = RugPullServer(workdir, harness.free_port(), flag, 30)
    env = None
    hold_s = 4
    try:
        pins = take_pins(server.url)
        pulled = json.loads(cli("pin", str(saved_list(server, workdir / "rug-pull-b.json", "pulled"))).stdout)
        pulled_digests = pulled["pins"]["tools"]
        policy = pinned_policy({**pins, "hold_s": hold_s}, audit=False)
        env = envoy_in_front(workdir, wasm, server.port, policy, "envoy-pins-f4")
        b = {MODE: "pulled"}
        assert listed(env.url, b) == ["weather", "delete_repo"]
        shown_to_b = time.monotonic()
        assert listed(env.url) == ALL_TOOLS
        for caller in ("B", "A"):
            for tool, args in [("echo", {"message": "hi"}), ("add", {"a": 1, "b": 2})]:
                err = raw_call(env.url, tool, args).get("error") or {}
                assert err.get("code") == -32014, (caller, tool, err)
                assert (err["data"]["expected"], err["data"]["actual"]) == \
                    (pins["tools"][tool], pulled_digests[tool]), (caller, tool, err["data"])
                assert "held until" in err["data"]["reason"], err["data"]
        assert raw_call(env.url, "weather", {})["result"]["content"][0]["text"] == "sunny"
        # Recovery: the hold passes (counted from the last list showing the change).
        time.sleep(max(0.0, shown_to_b + hold_s + 0.5 - time.monotonic()))
        names, res = list_then_call(env.url, "echo", {"message": "back"})
        assert names == ALL_TOOLS and res.content[0].text == "Echo: back", (names, res)
        # B shown the change again: held again.
        assert listed(env.url, b) == ["weather", "delete_repo"]
        assert listed(env.url) == ALL_TOOLS
        err = raw_call(env.url, "echo", {"message": "x"}).get("error") or {}
        assert (err.get("code"), (err.get("data") or {}).get("actual")) == (-32014, pulled_digests["echo"]), err
    finally:
        if env is not None:
            env.stop()
        server.stop()
