"""envoy/hot-reload.yaml: the policy comes from a watched file through Envoy's ECDS.

The DiscoveryResponse is produced by the project's CLI (`mcp-firewall envoy-config
--ecds`) and swapped in with an atomic rename, as the YAML's comment tells users to.
Waiting for Envoy to pick a file up is bounded polling of its own ECDS counters
(no sleeps asserted on).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import READER_KEY, base_policy
from mcp_raw import call, messages, open_session, send

import harness

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
STAT_PREFIX = "extension_config_discovery.http_filter.mcp_firewall."


def discovery_response(policy: dict[str, Any], wasm: Path, workdir: Path) -> str:
    src = workdir / "hot-reload-policy.json"
    src.write_text(json.dumps(policy))
    out = subprocess.run([str(CLI), "envoy-config", str(src), "--ecds", "--wasm", str(wasm)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def swap_in(ecds_dir: Path, text: str) -> None:
    tmp = ecds_dir / "mcp_firewall.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, ecds_dir / "mcp_firewall.json")


def wait_stat(env: harness.Envoy, suffix: str, above: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        stats = env.stats("^" + STAT_PREFIX.replace(".", r"\.") + suffix + "$")
        value = stats.get(STAT_PREFIX + suffix, 0)
        if value > above:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{STAT_PREFIX}{suffix} stayed at {value} for {timeout:.0f}s; "
                                 f"ECDS stats: {env.stats('extension_config_discovery')}")
        time.sleep(0.1)


def tiny_image_for_reader(env: harness.Envoy) -> dict[str, Any]:
    sess = open_session(env.url, READER_KEY)
    r = send(env.url, body=json.dumps(call("get-tiny-image", id=4)), token=READER_KEY, headers=sess)
    assert r.status_code == 200, r.text[:300]
    return messages(r)[-1]


@pytest.fixture()
def hot_envoy(workdir: Path, wasm: Path, mcp_server: Any) -> Any:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    ecds_dir = workdir / "ecds"
    ecds_dir.mkdir(exist_ok=True)
    swap_in(ecds_dir, discovery_response(base_policy(), wasm, workdir))

    cfg = harness.hot_reload_config(mcp_server.port, ecds_dir / "mcp_firewall.json")
    env = harness.Envoy(cfg, workdir, name="envoy-hot-reload")
    yield env, ecds_dir
    env.stop()


def test_policy_change_applies_without_restart_and_a_bad_one_is_refused(hot_envoy: Any, wasm: Path,
                                                                         workdir: Path) -> None:
    env, ecds_dir = hot_envoy
    pid = env.proc.pid

    first = tiny_image_for_reader(env)
    assert first["error"]["data"]["rule"] == "default-deny", first

    # 1. A good new policy: readers may now call get-tiny-image.
    relaxed = base_policy()
    relaxed["rules"].append({"id": "reader-images", "effect": "allow", "roles": ["reader"],
                             "tools": ["get-tiny-image"]})
    reloads = env.stats(STAT_PREFIX.replace(".", r"\.")).get(STAT_PREFIX + "config_reload", 0)
    swap_in(ecds_dir, discovery_response(relaxed, wasm, workdir))
    wait_stat(env, "config_reload", reloads)
    second = tiny_image_for_reader(env)
    assert "result" in second, second

    # 2. A policy with an error: rejected, the last good policy keeps serving.
    good = json.loads(discovery_response(relaxed, wasm, workdir))
    bad_resp = copy.deepcopy(good)
    broken = copy.deepcopy(relaxed)
    broken["rules"][0]["effect"] = "permit"
    bad_resp["resources"][0]["typed_config"]["config"]["configuration"]["value"] = json.dumps(broken)
    rejected = env.stats(STAT_PREFIX.replace(".", r"\.")).get(STAT_PREFIX + "update_rejected", 0)
    swap_in(ecds_dir, json.dumps(bad_resp))
    wait_stat(env, "update_rejected", rejected)
    third = tiny_image_for_reader(env)
    assert "result" in third, f"the last good policy must keep serving: {third}"

    assert env.proc.pid == pid and env.proc.alive(), "no restart"
    env.stop()
    assert "$.rules[0].effect" in env.log_text(), "the rejected policy's error, with its JSON path, is logged"
