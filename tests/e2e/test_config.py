"""Policies and Envoy configs as Envoy itself sees them.

`envoy --mode validate` instantiates the Wasm plugin and runs its on_configure
(checked on Envoy 1.40: a plugin whose on_configure returns false makes validate
exit 1 with "Unable to create Wasm plugin mcp_firewall", after the plugin's own
log lines). So a bad policy is caught before any traffic, with the filter's
message naming the JSON path.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES, base_policy

import harness

POLICY_FILES = sorted(p for p in (harness.REPO / "policies").rglob("*.json") if not p.name.endswith(".tests.json")) \
    + [FIXTURES / "policy.json"]


def validate(policy: Any, workdir: Path, template: str = "envoy", name: str = "validate") -> Any:
    cfg = harness.render(template, listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=harness.free_port(), policy=policy)
    return harness.envoy_validate(cfg, workdir, name)


@pytest.mark.parametrize("path", POLICY_FILES, ids=[p.stem for p in POLICY_FILES])
def test_policy_files_validate(path: Path, wasm: Path, workdir: Path) -> None:
    r = validate(json.loads(path.read_text()), workdir, name=f"validate-{path.stem}")
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("template", ["envoy", "jwt-example"])
def test_committed_envoy_configs_validate_as_written(template: str, wasm: Path, workdir: Path) -> None:
    """The templates with only ports and the Wasm path changed (their own inline policy)."""
    r = validate(None, workdir, template=template, name=f"validate-{template}")
    assert r.returncode == 0, r.stderr[-3000:]


def test_envoy_yaml_embeds_policies_demo_json() -> None:
    demo = json.loads((harness.REPO / "policies" / "demo.json").read_text())
    assert harness.template_policy("envoy") == demo


def test_failure_policy_is_never_fail_open() -> None:
    for template in ("envoy", "jwt-example"):
        cfg = harness.firewall_filter(harness.load_template(template))["typed_config"]["config"]
        assert cfg["failure_policy"] == "FAIL_RELOAD", template
        assert cfg["allow_on_headers_stop_iteration"] is True, template


def bad(mutate: Any) -> dict[str, Any]:
    p = base_policy()
    mutate(p)
    return p


BAD_POLICIES = [
    ("unknown-effect", bad(lambda p: p["rules"][0].update(effect="permit")), ["$.rules[0].effect"]),
    ("typo-in-rule-field", bad(lambda p: p["rules"][1].update(tool=["echo"])), ["$.rules[1]", "tool"]),
    ("unknown-top-level-field", bad(lambda p: p.update(rulez=[])), ["rulez"]),
    ("wrong-version", bad(lambda p: p.update(version=2)), ["$.version"]),
    ("bad-mode", bad(lambda p: p.update(mode="permissive")), ["$.mode"]),
    ("bad-batches", bad(lambda p: p["limits"].update(batches="sometimes")), ["$.limits.batches"]),
    ("api-key-not-hex", bad(lambda p: p["identity"]["api_keys"][0].update(sha256="secret")),
     ["$.identity.api_keys[0].sha256"]),
]


@pytest.mark.parametrize("name,policy,expected", BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES])
def test_validate_rejects_bad_policy_naming_the_json_path(name: str, policy: dict[str, Any], expected: list[str],
                                                          wasm: Path, workdir: Path) -> None:
    r = validate(policy, workdir, name=f"validate-bad-{name}")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"envoy accepted a bad policy:\n{out[-3000:]}"
    assert "mcp_firewall" in out
    for fragment in expected:
        assert fragment in out, f"{fragment!r} not in envoy's output:\n{out[-3000:]}"


def test_validate_rejects_a_policy_that_is_not_json(wasm: Path, workdir: Path) -> None:
    r = validate("{version: 1", workdir, name="validate-not-json")
    assert r.returncode != 0
    assert "Unable to create Wasm plugin mcp_firewall" in r.stdout + r.stderr


def test_envoy_refuses_to_start_with_a_bad_policy_and_serves_nothing(wasm: Path, workdir: Path,
                                                                     mcp_server: Any) -> None:
    """Same policy error at normal startup: Envoy exits; no listener ever serves traffic."""
    policy = bad(lambda p: p["rules"][0].update(effect="permit"))
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy)
    with pytest.raises(RuntimeError) as ei:
        harness.Envoy(cfg, workdir, name="envoy-bad-policy")
    assert "$.rules[0].effect" in str(ei.value)


CLI = harness.REPO / "target" / "release" / "mcp-firewall"


def envoy_config(*args: str) -> str:
    out = subprocess.run([str(CLI), "envoy-config", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_envoy_config_entry_pastes_under_http_filters_as_the_example_names_it() -> None:
    """The default indentation is envoy/envoy.yaml's for `http_filters:` items."""
    printed = envoy_config(str(FIXTURES / "policy.json"), "--wasm", "/x/f.wasm")
    doc = yaml.safe_load("hcm:\n" + " " * 10 + "http_filters:\n" + printed)
    entry = doc["hcm"]["http_filters"][0]
    example = harness.firewall_filter(harness.load_template("envoy"))
    assert entry["name"] == example["name"] == "mcp_firewall"
    assert json.loads(entry["typed_config"]["config"]["configuration"]["value"]) == base_policy()


def test_envoy_config_reminds_about_the_jwt_header_and_removes_it(workdir: Path) -> None:
    p = base_policy()
    p["identity"]["jwt_payload_header"] = "x-jwt-payload"
    path = workdir / "jwt-policy.json"
    path.write_text(json.dumps(p))
    printed = envoy_config(str(path))
    assert "Envoy must remove client copies of it" in printed
    doc = yaml.safe_load("hcm:\n" + " " * 10 + "http_filters:\n" + printed)
    strip, fw = doc["hcm"]["http_filters"]
    assert strip["typed_config"]["mutations"]["request_mutations"] == [{"remove": "x-jwt-payload"}]
    assert fw["name"] == "mcp_firewall"


def test_envoy_config_full_is_a_bootstrap_envoy_accepts(wasm: Path, workdir: Path) -> None:
    out = workdir / "full.yaml"
    out.write_text(envoy_config(str(harness.REPO / "policies" / "demo.json"), "--full", "--wasm", str(wasm),
                                "--upstream", "127.0.0.1:3001", "--listen-port", str(harness.free_port())))
    r = subprocess.run([str(harness.ENVOY_BIN), "--mode", "validate", "-c", str(out), "-l", "info"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "policy loaded" in r.stdout + r.stderr


def test_envoy_config_full_with_audit_collector_is_a_bootstrap_envoy_accepts(wasm: Path, workdir: Path) -> None:
    """What the compose demo's `config` service renders: a DNS name for the MCP
    server and the collector, the policy's audit section added."""
    out = workdir / "full-audit.yaml"
    out.write_text(envoy_config(str(harness.REPO / "policies" / "demo.json"), "--full", "--wasm", str(wasm),
                                "--upstream", "localhost:3001", "--listen-port", str(harness.free_port()),
                                "--audit-collector", "localhost:8600"))
    doc = yaml.safe_load(out.read_text())
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert set(clusters) == {"mcp_server", "audit_collector"}, clusters
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fw = next(f for f in hcm["http_filters"] if f["name"] == "mcp_firewall")
    policy = json.loads(fw["typed_config"]["config"]["configuration"]["value"])
    demo = json.loads((harness.REPO / "policies" / "demo.json").read_text())
    assert policy == {**demo, "audit": {"cluster": "audit_collector"}}
    r = subprocess.run([str(harness.ENVOY_BIN), "--mode", "validate", "-c", str(out), "-l", "info"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "policy loaded" in r.stdout + r.stderr
