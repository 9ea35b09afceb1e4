"""DLP quality through Envoy, not only in the native scanner.

1. Spot check of the figures in docs/dlp.md: a deterministic sample of the
   shared corpus (every 5th item) is sent, one item per call, as echo's
   `message` through the compiled filter in a real Envoy with
   `dlp.requests: block`. A -32013 refusal counts as "found" (its findings'
   kinds give the label), a forwarded call as "nothing found". Item-level
   precision / recall per label (computed as ../shared/dlp/score.py does) must be
   within 0.02 of the native scanner (`mcp-firewall scan`) on the same items.
   Blocked calls must never reach the server: the upstream POST counter moves
   exactly once per forwarded item.
2. A placeholder key passes; a custom detector blocks; an invalid custom
   pattern fails `envoy --mode validate` naming `$.dlp.custom[0].pattern`.
3. E-mail + card number in a tool result are redacted on SSE (server-everything)
   and on JSON (the JSON-answering SDK peer); test_dlp.py covers a secret token
   on both, this covers personal data.

All calls go through the official SDK.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import sdk_session
from test_json_peer import json_peer  # noqa: F401  (fixture)

import harness

CORPUS = harness.REPO.parent / "shared" / "dlp" / "corpus.jsonl"
CLI = harness.REPO / "target" / "release" / "mcp-firewall"
SAMPLE_EVERY = 5
TOLERANCE = 0.02
# score.py's mapping of finding kinds to labels (used when a finding has no label)
PII_KINDS = {
    "email", "email_address", "emails", "credit_card", "creditcard", "card_number", "pan", "ssn", "us_ssn",
    "iban", "iban_code", "phone", "phone_number", "phones", "us_bank_number", "us_itin", "us_passport",
    "ip_address", "person", "location", "date_time",
}


def _policy(dlp: dict[str, Any]) -> dict[str, Any]:
    p = base_policy()
    p["dlp"] = dlp
    return p


def _label(finding: dict[str, Any]) -> str:
    if finding.get("label") in ("secret", "pii"):
        return str(finding["label"])
    kind = str(finding.get("kind", "")).strip().lower().replace("-", "_").replace(" ", "_")
    return "pii" if kind in PII_KINDS else "secret"


def _metrics(items: list[dict[str, Any]], found: dict[str, set[str]]) -> dict[str, dict[str, float]]:
    """Item-level precision / recall per label, as score.py computes them."""
    def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
        return {"tp": tp, "fp": fp, "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else math.nan,
                "recall": tp / (tp + fn) if tp + fn else math.nan}

    out: dict[str, dict[str, float]] = {}
    for label in ("secret", "pii"):
        tp = fp = fn = 0
        for c in items:
            hit = label in found[c["id"]]
            if c["label"] == label:
                tp += hit
                fn += not hit
            elif hit and label not in c.get("also", []):
                fp += 1
        out[label] = prf(tp, fp, fn)
    out["clean"] = prf(sum(1 for c in items if c["label"] == "clean" and not found[c["id"]]),
                       sum(1 for c in items if c["label"] != "clean" and not found[c["id"]]),
                       sum(1 for c in items if c["label"] == "clean" and found[c["id"]]))
    return out


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    if not CORPUS.exists():
        pytest.skip(f"the shared DLP corpus is not here ({CORPUS}): nothing to spot-check")
    items = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return items[::SAMPLE_EVERY]


def _native(items: list[dict[str, Any]]) -> dict[str, set[str]]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: cargo build --release -p mcp-firewall-cli")
    stdin = "".join(json.dumps({"id": c["id"], "text": c["text"]}, ensure_ascii=False) + "\n" for c in items)
    r = subprocess.run([str(CLI), "scan"], input=stdin.encode(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    found: dict[str, set[str]] = {c["id"]: set() for c in items}
    for line in r.stdout.decode().splitlines():
        o = json.loads(line)
        found[o["id"]] = {_label(f) for f in o.get("findings") or []}
    return found


def _through_envoy(env: harness.Envoy, items: list[dict[str, Any]]) -> tuple[dict[str, set[str]], int, int]:
    """(labels found per item, items forwarded, upstream POSTs during the calls)."""
    async def go() -> tuple[dict[str, set[str]], int, int]:
        found: dict[str, set[str]] = {}
        forwarded = 0
        async with sdk_session(env.url, READER_KEY) as s:
            await s.list_tools()
            before = env.upstream_posts()
            for c in items:
                try:
                    res = await s.call_tool("echo", {"message": c["text"]})
                except MCPError as e:
                    assert e.code == -32013, (c["id"], e.code, e.message, e.data)
                    findings = e.data.get("findings") or []
                    assert findings and all(f.get("path") == "/message" for f in findings), (c["id"], e.data)
                    assert c["text"] not in json.dumps(e.data), f"{c['id']}: the refusal repeats the value"
                    found[c["id"]] = {_label(f) for f in findings}
                    continue
                assert [x.text for x in res.content] == [f"Echo: {c['text']}"], c["id"]
                found[c["id"]] = set()
                forwarded += 1
            return found, forwarded, env.upstream_posts() - before

    return anyio.run(go)


def test_corpus_sample_figures_match_the_native_scanner(envoy_for: Any, sample: list[dict[str, Any]]) -> None:
    env = envoy_for(_policy({"requests": "block", "responses": "off"}))
    native = _native(sample)
    envoy, forwarded, moved = _through_envoy(env, sample)

    assert moved == forwarded, f"{len(sample) - forwarded} blocked calls, but the server got {moved} POSTs " \
                               f"for {forwarded} forwarded ones"

    by_label: dict[str, list[int]] = {}
    for c in sample:
        blocked_forwarded = by_label.setdefault(c["label"], [0, 0])
        blocked_forwarded[0 if envoy[c["id"]] else 1] += 1
    m_env, m_nat = _metrics(sample, envoy), _metrics(sample, native)
    table = [f"sample: every {SAMPLE_EVERY}th of {CORPUS.name}, {len(sample)} items",
             "label   blocked forwarded | envoy P    R     | native P   R"]
    for label in ("secret", "pii", "clean"):
        b, f = by_label.get(label, [0, 0])
        e, n = m_env[label], m_nat[label]
        table.append(f"{label:7} {b:7} {f:9} | {e['precision']:.3f} {e['recall']:.3f} | "
                     f"{n['precision']:.3f} {n['recall']:.3f}")
    differ = [c["id"] for c in sample if envoy[c["id"]] != native[c["id"]]]
    table.append(f"items judged differently: {differ}")
    print("\n".join(table))

    for label in ("secret", "pii", "clean"):
        for metric in ("precision", "recall"):
            e, n = m_env[label][metric], m_nat[label][metric]
            assert not math.isnan(e) and not math.isnan(n), f"{label} {metric} undefined on the sample"
            assert abs(e - n) <= TOLERANCE, f"{label} {metric}: envoy {e:.3f} vs native {n:.3f}\n" + "\n".join(table)


# --------------------------------------------------------------------------- single cases

async def _echo(env: harness.Envoy, message: str) -> tuple[Any, int]:
    async with sdk_session(env.url, READER_KEY) as s:
        await s.list_tools()
        before = env.upstream_posts()
        try:
            out: Any = await s.call_tool("echo", {"message": message})
        except MCPError as e:
            out = e
        return out, env.upstream_posts() - before


PLACEHOLDERS = [
    ("aws_doc_example", "use AKIAIOSFODNN7EXAMPLE as the access key id"),
    ("github_pat_xs", "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("env_reference", "password=${DB_PASSWORD}"),
    ("angle_placeholder", "Authorization: Bearer <token>"),
]


@pytest.mark.parametrize("name,message", PLACEHOLDERS, ids=[p[0] for p in PLACEHOLDERS])
def test_placeholder_key_passes(envoy_for: Any, name: str, message: str) -> None:
    env = envoy_for(_policy({"requests": "block", "responses": "off"}))
    out, moved = anyio.run(_echo, env, message)
    assert not isinstance(out, MCPError), f"{name}: placeholder refused: {out.code} {out.data}"
    assert [c.text for c in out.content] == [f"Echo: {message}"]
    assert moved == 1


CUSTOM = {"requests": "block", "responses": "off",
          "custom": [{"id": "acme-employee", "pattern": "ACME-[0-9]{8}", "label": "pii"}]}


@pytest.mark.parametrize("message,blocked", [
    ("ticket for employee ACME-12345678, thanks", True),
    ("ACME-00000001", True),
    ("ACME-1234567 is seven digits", False),
    ("acme-12345678 lower case", False),
], ids=["in_prose", "alone", "too_short", "lower_case"])
def test_custom_detector_blocks(envoy_for: Any, message: str, blocked: bool) -> None:
    env = envoy_for(_policy(CUSTOM))
    out, moved = anyio.run(_echo, env, message)
    if blocked:
        assert isinstance(out, MCPError) and out.code == -32013, out
        assert out.data.get("rule") == "dlp", out.data
        assert out.data.get("findings") == [{"kind": "acme-employee", "path": "/message"}], out.data
        assert "ACME-" not in json.dumps(out.data) + out.message
        assert moved == 0
    else:
        assert not isinstance(out, MCPError), (out.code, out.data)
        assert [c.text for c in out.content] == [f"Echo: {message}"]
        assert moved == 1


def test_invalid_custom_pattern_fails_envoy_validate(wasm: Path, workdir: Path) -> None:
    bad = _policy({"custom": [{"id": "acme-employee", "pattern": "ACME-[0-9{8}", "label": "pii"}]})
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=harness.free_port(), policy=bad, wasm=wasm)
    r = harness.envoy_validate(cfg, workdir, "validate-dlp-custom")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"envoy accepted an invalid custom pattern:\n{out[-3000:]}"
    assert "$.dlp.custom[0].pattern" in out, out[-3000:]


# --------------------------------------------------------------------------- PII in results

def _luhn_complete(prefix: str) -> str:
    digits = [int(d) for d in prefix]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return prefix + str((10 - total % 10) % 10)


CARD = _luhn_complete("453914880343646")  # a Visa-shaped number, Luhn-valid, not a public test card
CARD_SPACED = " ".join(CARD[i:i + 4] for i in range(0, 16, 4))
EMAIL = "jane.doe@acme-mail.com"
PII_MESSAGE = f"ship to {EMAIL}, pay with {CARD_SPACED}"
PII_REDACTED = "Echo: ship to [REDACTED:email], pay with [REDACTED:credit_card]"
RESPONSES_ONLY = {"requests": "off", "responses": "redact"}


def test_email_and_card_in_result_redacted_on_sse(envoy_for: Any) -> None:
    env = envoy_for(_policy(RESPONSES_ONLY))
    out, moved = anyio.run(_echo, env, PII_MESSAGE)
    assert not isinstance(out, MCPError), (out.code, out.data)
    assert [c.text for c in out.content] == [PII_REDACTED]
    assert moved == 1, "requests: off, the call itself is forwarded"


@pytest.fixture(scope="module")
def json_pii_envoy(json_peer: int, workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:  # noqa: F811
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=_policy(RESPONSES_ONLY), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-dlp-quality-json")
    yield env
    env.stop()


def test_email_and_card_in_result_redacted_on_json(json_pii_envoy: harness.Envoy) -> None:
    seen: list[Any] = []

    async def go() -> Any:
        async with sdk_session(json_pii_envoy.url, READER_KEY, seen=seen) as s:
            await s.list_tools()
            return await s.call_tool("echo", {"message": PII_MESSAGE})

    out = anyio.run(go)
    call_responses = [h for m, st, h in seen if m == "POST"]
    assert any(h.get("content-type", "").startswith("application/json") for h in call_responses), \
        "the peer must answer with JSON, not SSE"
    assert [c.text for c in out.content] == [PII_REDACTED]
    structured = json.dumps(out.structured_content or {})
    assert EMAIL not in structured and CARD_SPACED not in structured, structured
