"""The official TypeScript client's own reconnect cannot carry an answer around the firewall.

server-everything (streamable HTTP) keeps an in-memory event store. The
TypeScript SDK's ``StreamableHTTPClientTransport``, when a POST stream on which it
saw an event id drops before its answer, reconnects by itself with a GET that names
the last id in ``Last-Event-ID``; the server then replays every event it stored
after that id, whichever stream it was written to, exactly as first written.

peers/ts-reconnect-client.mjs drives that client: a long tool call with progress,
then ``tools/list`` and an ``echo`` of a secret on their own POSTs while the long
call runs. Envoy's route timeout for POSTs (GETs keep none) cuts the long call's
stream in the middle; the client reconnects with GET + Last-Event-ID.

- Controls (straight to server-everything, the client's HTTP stack cutting the
  POST; and the same Envoy with the firewall removed): the replay hands the client
  the whole catalogue and the secret, and the long call's result.
- Through the firewall: the POSTs' own answers are filtered and redacted as
  always; every answer on the GET stream is replaced by the documented
  ``response-unfilterable`` refusal under its id (the long call ends with it), the
  progress notifications stored after the cut still arrive.
"""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import READER_KEY, base_policy

import harness

CLIENT = harness.REPO / "peers" / "ts-reconnect-client.mjs"
HIDDEN = "get-env"  # denied to everyone by the e2e policy's rule no-env
LONG = "trigger-long-running-operation"
TOKEN = "ghp_" + "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(36))
MESSAGE = f"deploy with {TOKEN} please"
REDACTED = "Echo: deploy with [REDACTED:github_pat] please"
# The long call runs 4 s with a progress notification every 2 s; Envoy cuts a
# POST's response after 1 s (after the priming event, before any progress); the
# client reconnects 4.5 s after the cut, when the call has ended on the server
# (its progress and result are stored, not delivered).
DURATION_S, STEPS = 4, 2
POST_TIMEOUT = "1s"
RECONNECT_DELAY_MS = 4500


def policy() -> dict[str, Any]:
    """The e2e policy, the reader allowed the long tool, results redacted."""
    p = base_policy()
    p["rules"].insert(0, {"id": "long-ops", "effect": "allow", "roles": ["reader"], "tools": [LONG]})
    p["dlp"] = {"requests": "off", "responses": "redact"}
    return p


def cut_posts(cfg: dict[str, Any]) -> dict[str, Any]:
    """POST responses get a route timeout (Envoy resets a stream still open when it
    fires); GET streams keep none, as in the template."""
    vhost = harness._hcm(cfg)["route_config"]["virtual_hosts"][0]
    cluster = vhost["routes"][0]["route"]["cluster"]
    vhost["routes"] = [
        {"match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
         "route": {"cluster": cluster, "timeout": POST_TIMEOUT}},
        {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}},
    ]
    return cfg


@pytest.fixture(scope="module")
def envoys(workdir: Path, wasm: Path, mcp_server: harness.McpServer) -> Iterator[dict[str, harness.Envoy]]:
    running: dict[str, harness.Envoy] = {}
    try:
        for name, with_filter in (("bare", False), ("firewall", True)):
            cfg = cut_posts(harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                                           upstream_port=mcp_server.port, policy=policy(), wasm=wasm,
                                           with_filter=with_filter))
            running[name] = harness.Envoy(cfg, workdir, name=f"envoy-ts-reconnect-{name}")
        yield running
    finally:
        for env in running.values():
            env.stop()


def run_client(url: str, **extra: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is needed for the TypeScript SDK client"
    arg = {"url": url, "key": READER_KEY, "message": MESSAGE, "duration": DURATION_S, "steps": STEPS,
           "reconnectDelayMs": RECONNECT_DELAY_MS, **extra}
    done = subprocess.run([node, str(CLIENT), json.dumps(arg)], capture_output=True, text=True, timeout=60,
                          cwd=CLIENT.parent)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "fatal" not in out, out["fatal"]
    return out


def resumed(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The GETs the client sent on its own with a Last-Event-ID."""
    return [r for r in out["requests"] if r["method"] == "GET" and r["lastEventId"]]


def answers(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["message"] for r in out["received"] if "id" in r["message"] and "method" not in r["message"]]


def answers_to(out: dict[str, Any], pred: Any) -> list[dict[str, Any]]:
    return [a for a in answers(out) if pred(a)]


def is_catalogue(a: dict[str, Any]) -> bool:
    return isinstance(a.get("result"), dict) and "tools" in a["result"]


def is_echo(a: dict[str, Any]) -> bool:
    return "Echo:" in json.dumps(a.get("result"))


def assert_the_post_dropped_and_the_client_resumed(out: dict[str, Any]) -> None:
    gets = resumed(out)
    assert gets, f"the client never resumed with GET + Last-Event-ID: {out['requests']}"
    assert all(g["status"] == 200 for g in gets), gets
    assert any("SSE stream disconnected" in e["error"] for e in out["errors"]), out["errors"]
    # The progress stored after the cut came back on the GET: all steps arrived,
    # none before the client resumed.
    assert [p["progress"] for p in out["progress"]] == list(range(1, STEPS + 1)), out["progress"]
    assert all(p["at"] >= gets[0]["at"] for p in out["progress"]), (out["progress"], gets)


def assert_the_replay_hands_the_client_everything(out: dict[str, Any]) -> None:
    assert_the_post_dropped_and_the_client_resumed(out)
    # On their POSTs, nothing filtered: the control is what the server sends.
    assert HIDDEN in out["listed"] and out["echoed"] == [f"Echo: {MESSAGE}"]
    # The long call ends with its result, which came on the GET.
    assert out["longCall"]["result"]["content"][0]["text"].startswith("Long running operation completed"), out
    # The replay gave the client both answers a second time, the whole catalogue
    # and the secret included (the SDK drops them as answers to unknown ids).
    catalogues = answers_to(out, is_catalogue)
    assert len(catalogues) == 2 and all(HIDDEN in json.dumps(c) for c in catalogues), catalogues
    echoes = answers_to(out, is_echo)
    assert len(echoes) == 2 and all(TOKEN in json.dumps(e) for e in echoes), echoes
    assert any("unknown message ID" in e["error"] for e in out["errors"]), out["errors"]
    # The two replayed priming events (`data: {}`, see below) fail the SDK's schema.
    assert sum("invalid_union" in e["error"] for e in out["errors"]) == 2, out["errors"]


def test_control_direct_the_replay_hands_the_client_the_catalogue_and_the_secret(
        mcp_server: harness.McpServer) -> None:
    """No proxy at all: the client's own HTTP stack cuts the silent POST (undici's
    bodyTimeout, the same 1 s); the SDK's reconnect replays the answers."""
    assert_the_replay_hands_the_client_everything(run_client(mcp_server.url, cutPostMs=1000))


def test_control_the_replay_hands_the_client_the_catalogue_and_the_secret(envoys: dict[str, harness.Envoy]) -> None:
    """Envoy without the firewall, the same route timeout as below."""
    assert_the_replay_hands_the_client_everything(run_client(envoys["bare"].url))


def test_firewall_the_replay_is_refused_and_notifications_flow(envoys: dict[str, harness.Envoy]) -> None:
    env = envoys["firewall"]
    before = env.stat("wasmcustom.mcp_firewall.responses.unfilterable")
    out = run_client(env.url)
    assert_the_post_dropped_and_the_client_resumed(out)
    # On their own POSTs the answers were filtered and redacted as usual.
    assert HIDDEN not in out["listed"] and LONG in out["listed"]
    assert out["echoed"] == [REDACTED]
    # Nothing the client received holds the hidden tool or the secret.
    seen = json.dumps(out["received"])
    assert HIDDEN not in seen and TOKEN not in seen
    # The long call ends with the documented refusal, not its result.
    err = out["longCall"].get("error")
    assert err and err["code"] == -32010 and err["data"]["rule"] == "response-unfilterable", out["longCall"]
    # Each replayed answer was replaced under its id: the list and the echo
    # were received once as answers (their POSTs), once as refusals (the GET).
    refused = [a for a in answers(out) if a.get("error", {}).get("data", {}).get("rule") == "response-unfilterable"]
    assert len(answers_to(out, is_catalogue)) == 1 and len(answers_to(out, is_echo)) == 1, answers(out)
    assert len(refused) == 3, refused
    # Counted: the three answers, and the two priming events of the list's and the
    # echo's streams, which server-everything's store keeps as the message `{}`
    # and replays as `data: {}` (no JSON-RPC message: refused under id null,
    # which the SDK's schema rejects, as it rejects the `{}` itself without the
    # firewall).
    assert env.stat("wasmcustom.mcp_firewall.responses.unfilterable") == before + 5
    assert sum("invalid_union" in e["error"] for e in out["errors"]) == 2, out["errors"]
