"""Every shipped policy survives Istio's delivery with the same meaning and the same hash.

No Istio runs here. `istio_xds.py` rebuilds, from Istio 1.30.3's source, what istiod
sends for a WasmPlugin: the YAML `pluginConfig` becomes a protobuf Struct (numbers
are doubles), then JSON text (jsonpb: keys sorted, Go number and string formatting)
inside a StringValue, in an ECDS TypedExtensionConfig with istiod's names,
`failure_policy: FAIL_CLOSED` and no `allow_on_headers_stop_iteration`. The real
Envoy loads it through ECDS (a watched file standing in for ADS), and for each policy
under policies/ we check:

* the filter logs `policy loaded ... sha256 X` with X what `mcp-firewall check`
  prints for the file as written, for istiod's text and for a harsher encoder's
  (shuffled keys, `100.0`-style numbers);
* every case of the policy's `.tests.json` gets the same answer through Envoy under
  the re-encoded policy as under the file's own text, and the answer the test file
  expects.

Identity: the example policies read the JWT payload header, which Istio's jwt_authn
writes after verifying a token; here the test writes it (there is no jwt_authn in
this Envoy, and nothing strips the header: that is deploy/istio's job).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mcp_raw import headers_for, messages

import harness
import istio_xds

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
WASM_PLUGIN = harness.REPO / "deploy" / "istio" / "wasmplugin.yaml"
POLICIES = sorted(p for p in (harness.REPO / "policies").rglob("*.json") if not p.name.endswith(".tests.json"))
# What deploy/istio/README.md tells users to add to a policy for Istio.
ISTIO_HOST = {"allow_on_headers_stop_iteration": False}
NAMESPACE, NAME, PLUGIN = "mcp", "mcp-firewall", "mcp_firewall"
FIREWALL_CODES = {-32010, -32011, -32012, -32013, -32014, -32020}
LOADED = re.compile(r"mcp-firewall: policy loaded: .* sha256 ([0-9a-f]{64})")


def cli_sha256(path: Path) -> str:
    out = subprocess.run([str(CLI), "check", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"sha256 ([0-9a-f]{64})", out.stdout)
    assert m, out.stdout
    return m.group(1)


def write_ecds(ecds_dir: Path, configuration: str, wasm: Path, version: str) -> None:
    res = istio_xds.ecds_resource(namespace=NAMESPACE, name=NAME, plugin_name=PLUGIN,
                                  configuration=configuration, wasm_file=str(wasm))
    tmp = ecds_dir / "ecds.json.tmp"
    tmp.write_text(json.dumps({"version_info": version, "resources": [res]}))
    os.replace(tmp, ecds_dir / "ecds.json")


def reloads(env: harness.Envoy) -> int:
    return sum(v for k, v in env.stats(r"extension_config_discovery\.http_filter\..*\.config_reload$").items())


def loaded_hashes(env: harness.Envoy) -> list[str]:
    return LOADED.findall(env.log_text())


def wait_reload(env: harness.Envoy, above: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while reloads(env) <= above:
        if time.monotonic() > deadline:
            raise AssertionError(f"ECDS never applied resource #{above + 1}:\n{env.log_text()[-4000:]}")
        time.sleep(0.05)


def istio_envoy(workdir: Path, ecds_dir: Path, upstream_port: int, tag: str) -> harness.Envoy:
    cfg = harness.hot_reload_config(upstream_port)
    fw = istio_xds.http_filter(NAMESPACE, NAME)
    fw["config_discovery"]["config_source"] = {
        "path_config_source": {"path": str(ecds_dir / "ecds.json"), "watched_directory": {"path": str(ecds_dir)}},
        "resource_api_version": "V3"}
    # The test plays jwt_authn (it writes the payload header), so nothing before
    # the firewall may strip it; only the router stays after it.
    filters = harness.http_filters(cfg)
    filters[:] = [fw, filters[-1]]
    return harness.Envoy(cfg, workdir, name=f"envoy-istio-{tag}")


def request_headers(policy: dict[str, Any], case: dict[str, Any]) -> dict[str, str] | None:
    """Headers that make the case's caller, or None when Envoy cannot be made to see it."""
    if "at" in case:
        return None  # decided at a given instant; through Envoy the clock is now
    h = headers_for()
    if "headers" in case:
        h.update(case["headers"])
        return h
    caller = case.get("caller") or {}
    jwt_header = policy.get("identity", {}).get("jwt_payload_header")
    if jwt_header is None:
        return None  # a role the CLI can pretend; over HTTP only a key or a token makes a caller
    claims = {"subject": "sub", "roles": "roles", "tenant": "tenant"} | policy["identity"].get("claims", {})
    payload = {claims["subject"]: caller.get("subject", "e2e-caller"), claims["roles"]: caller.get("roles", [])}
    if "tenant" in caller:
        payload[claims["tenant"]] = caller["tenant"]
    h[jwt_header] = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return h


def answer(env: harness.Envoy, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, tuple[Any, ...]]:
    """What the client sees: the HTTP status and each JSON-RPC error's code and rule."""
    r = httpx.post(env.url, content=json.dumps(body).encode(), headers=headers, timeout=15.0)
    try:
        msgs = messages(r)
    except ValueError:
        msgs = []
    errors = [m["error"] for m in msgs if isinstance(m, dict) and isinstance(m.get("error"), dict)]
    return r.status_code, tuple((e.get("code"), (e.get("data") or {}).get("rule")) for e in errors)


def check_expected(case: dict[str, Any], got: tuple[int, tuple[Any, ...]]) -> None:
    want, (status, errors) = case["expect"], got
    ours = [e for e in errors if e[0] in FIREWALL_CODES]
    if want.get("verdict") == "allow":
        assert not ours, (case["name"], got)  # the server answers it (here: no session)
        return
    if "status" in want:
        assert status == want["status"], (case["name"], got)
    if "code" in want:
        assert any(code == want["code"] for code, _ in errors), (case["name"], got)
    if want.get("verdict") in ("deny", "approval") and status == 200:
        assert [rule for _, rule in ours] == [want["rule"]], (case["name"], got)


def as_written(source: Path, workdir: Path) -> tuple[Path, str, dict[str, Any]]:
    """The policy file a user checks with the CLI, its text, and its value.

    A shipped policy gets the `envoy` section Istio needs (it cannot set
    allow_on_headers_stop_iteration); the WasmPlugin's pluginConfig has it."""
    if source.suffix == ".yaml":
        policy = yaml.safe_load(source.read_text())["spec"]["pluginConfig"]
        text = json.dumps(policy, indent=2)
    else:
        text = source.read_text()
        policy = json.loads(text)
        if "envoy" not in policy:
            policy["envoy"] = ISTIO_HOST
            text = text.rstrip().removesuffix("}").rstrip() + ',\n  "envoy": {"allow_on_headers_stop_iteration": false}\n}\n'
    assert json.loads(text) == policy and policy["envoy"] == ISTIO_HOST
    path = workdir / f"istio-{source.stem}.json"
    path.write_text(text)
    return path, text, policy


@pytest.mark.parametrize("source", POLICIES + [WASM_PLUGIN],
                         ids=lambda p: str(p.relative_to(harness.REPO)))
def test_policy_survives_istio_delivery_with_the_same_hash_and_answers(source: Path, workdir: Path, wasm: Path,
                                                                       mcp_server: Any) -> None:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    policy_path, text, policy = as_written(source, workdir)
    expected = cli_sha256(policy_path)
    tests_path = source.with_name(source.stem + ".tests.json")
    if source == WASM_PLUGIN:  # the same rules and limits as the demo, identity from a JWT
        tests_path = harness.REPO / "policies" / "demo.tests.json"
    cases = json.loads(tests_path.read_text())["cases"] if tests_path.exists() else []
    if source == WASM_PLUGIN:
        cases = [c for c in cases if "caller" in c and c["caller"]]

    encodings = {"istiod": istio_xds.istiod_plugin_config_json(policy),
                 "shuffled_doubles": istio_xds.other_encoder_json(policy, seed=13)}
    for name, enc in encodings.items():
        assert enc != text and json.loads(enc) == json.loads(text), f"{name}: other bytes, same JSON value"

    tag = source.stem
    ecds_dir = workdir / f"ecds-istio-{tag}"
    ecds_dir.mkdir(exist_ok=True)
    write_ecds(ecds_dir, text, wasm, "as-written")
    env = istio_envoy(workdir, ecds_dir, mcp_server.port, tag)
    try:
        wait_reload(env, 0)
        runnable = [(c, request_headers(policy, c)) for c in cases]
        runnable = [(c, h) for c, h in runnable if h is not None]
        completed = "cluster.mcp_server.upstream_rq_completed"
        before = env.stat(completed)
        baseline = [answer(env, c["message"], h) for c, h in runnable]
        # Under Istio the headers go upstream before the decision, a refused body
        # never does: the server answered exactly the requests the firewall allowed
        # (a refused one is reset before the server can answer it).
        allowed = sum(1 for c, _ in runnable if c["expect"].get("verdict") == "allow")
        assert env.stat(completed) - before == allowed, baseline
        for (case, _), got in zip(runnable, baseline):
            check_expected(case, got)

        for name, enc in encodings.items():
            before = reloads(env)
            write_ecds(ecds_dir, enc, wasm, name)
            wait_reload(env, before)
            again = [answer(env, c["message"], h) for c, h in runnable]
            assert again == baseline, f"{name}: same answers"
    finally:
        env.stop()
    # Envoy writes its log file every 10 s, and at exit: read it now. Each VM
    # that configures the plugin (main thread, worker) logs each load.
    log = env.log_text()
    assert "invalid policy" not in log
    hashes = loaded_hashes(env)
    assert len(hashes) >= 1 + len(encodings), log[-4000:]
    assert set(hashes) == {expected}, "every load, as written and re-encoded, has the hash the CLI prints"
    # A policy whose every case names its instant (a time window's edges) is
    # checked by its hash only: Envoy decides at the clock's time.
    assert runnable or all("at" in c for c in cases), "some case of the policy's tests ran through Envoy"


def test_a_policy_that_holds_headers_hangs_under_istios_resource(workdir: Path, wasm: Path, mcp_server: Any) -> None:
    """Why the `envoy` section exists: istiod's resource has no
    allow_on_headers_stop_iteration, and a filter that holds the headers is
    never given the body (fails if Istio or Envoy ever change that)."""
    policy = json.loads((harness.REPO / "policies" / "demo.json").read_text())
    assert "envoy" not in policy
    ecds_dir = workdir / "ecds-istio-hold"
    ecds_dir.mkdir(exist_ok=True)
    write_ecds(ecds_dir, istio_xds.istiod_plugin_config_json(policy), wasm, "holds")
    env = istio_envoy(workdir, ecds_dir, mcp_server.port, "hold")
    try:
        wait_reload(env, 0)
        h = headers_for() | {"authorization": "Bearer demo-reader-key"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(env.url, content=json.dumps(body).encode(), headers=h, timeout=3.0)
    finally:
        env.stop()
