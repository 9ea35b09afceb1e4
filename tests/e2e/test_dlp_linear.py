"""Linear DLP through the real Envoy: adversarial tool arguments (one detector's
trigger repeated back to back) cost about what clean text of the same size costs.

Each payload goes out as a ~900 KB `tools/call` of server-everything's `echo`,
which sends it back: the request is scanned (requests: block) and, being
clean, forwarded; the echoed result is scanned again (responses: redact). The
figures are printed (run with -s to see them); the assertions are loose bounds
that only a return of the old blow-up would break (1 MiB of `sk-` took 4.8 s
in Envoy before), not a benchmark: scripts/bench-dlp.sh --adversarial is that.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from conftest import READER_KEY, policy_variant
from mcp_raw import call, messages, open_session, send

import harness

SIZE = 900 * 1024
# The slowest units of `bench-dlp --adversarial` natively, and the one the issue named.
UNITS = ["sk-", ".atlasv1.", "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.", "!a@", "hvs.", " -u a:b", "password=",
         "9|", "sha256~", "dp.ct."]


def _clean_text(size: int) -> str:
    dump = subprocess.run([str(harness.REPO / "target" / "release" / "mcp-firewall"), "bench-dlp", "--dump",
                           "clean", str(size)], check=True, capture_output=True, text=True).stdout
    return json.dumps(json.loads(dump))[:size]


def _timed_echo(env: Any, sess: dict[str, str], text: str, id: int) -> tuple[float, dict[str, Any]]:
    body = json.dumps(call("echo", {"message": text}, id=id))
    t0 = time.perf_counter()
    r = send(env.url, body=body, token=READER_KEY, headers=sess, timeout=60)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text[:300]
    (msg,) = messages(r)
    return elapsed, msg


def test_adversarial_arguments_cost_about_what_clean_text_costs(envoy_for: Any) -> None:
    policy = policy_variant(dlp={"requests": "block", "responses": "redact"})
    policy["limits"] = {**policy.get("limits", {}), "max_request_bytes": 1048576, "max_response_bytes": 8388608}
    env = envoy_for(policy)
    sess = open_session(env.url, READER_KEY)
    clean = _clean_text(SIZE)
    # Warm up, then the clean baseline: best of three.
    _timed_echo(env, sess, clean, 1)
    base = min(_timed_echo(env, sess, clean, 2 + i)[0] for i in range(3))
    print(f"\n[dlp-linear] clean {len(clean)} bytes: {base * 1000:.0f} ms")
    worst = 0.0
    for n, unit in enumerate(UNITS):
        text = (unit * (SIZE // len(unit) + 1))[:SIZE]
        took, msg = _timed_echo(env, sess, text, 100 + n)
        worst = max(worst, took)
        outcome = "error %s" % msg["error"].get("code") if "error" in msg else "answered"
        print(f"[dlp-linear] {unit!r:40} {took * 1000:7.0f} ms  {took / base:5.1f}x clean  ({outcome})")
        # Every payload is answered, never held: a refusal is fine (fail closed),
        # the old blow-up (seconds per MiB, other callers stalled) is not.
        assert "result" in msg or msg.get("error", {}).get("code") == -32013, msg
        assert took < 3.0, f"{unit!r}: {took:.2f} s for {SIZE} bytes"
