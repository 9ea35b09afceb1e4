"""The .wasm as an OCI image istio-agent can fetch (scripts/istio-oci.sh).

Opt-in: it needs a Docker daemon (or root to start a private dockerd) and
Debian's docker-registry, and takes about a minute, so the default suite stays
Docker-free. Run it with MCP_FIREWALL_OCI_TEST=1.

The script builds deploy/istio/Dockerfile, pushes to a local registry this test
starts, pulls the image back by digest and compares the module. The test then
reads the registry as Istio 1.30.3's fetcher does (pkg/wasm/imagefetcher.go): a
Docker v2 manifest whose last layer is a tar.gzip holding `plugin.wasm`, and
the manifest digest (what WasmPlugin.sha256 pins) written into the WasmPlugin
the script prints, which still validates against the CRD schema.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_istio_manifests import validate_manifest

import harness

SCRIPT = harness.REPO / "scripts" / "istio-oci.sh"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

pytestmark = pytest.mark.skipif(os.environ.get("MCP_FIREWALL_OCI_TEST") != "1",
                                reason="needs dockerd and docker-registry; opt in with MCP_FIREWALL_OCI_TEST=1")


def get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


@pytest.fixture()
def registry(tmp_path: Path) -> Any:
    if shutil.which("docker-registry") is None or shutil.which("docker") is None:
        pytest.skip("docker-registry or docker is not installed (Debian: docker-registry, docker.io)")
    port = harness.free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(yaml.safe_dump({"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(tmp_path / "reg")}},
                                   "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = harness.Proc("docker-registry", ["docker-registry", "serve", str(cfg)], tmp_path / "registry.log")
    try:
        deadline = time.monotonic() + 15
        while not harness.port_open(port):
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {proc.log_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def test_image_round_trips_through_a_registry_in_istios_layout(registry: str, wasm: Path) -> None:
    out = subprocess.run([str(SCRIPT), registry, "mcp-firewall:e2e"], capture_output=True, text=True, timeout=600)
    if out.returncode == 2:
        pytest.skip(f"no Docker daemon could be used: {out.stderr[-1000:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    plugin = yaml.safe_load(out.stdout)
    assert validate_manifest(plugin) == []
    spec = plugin["spec"]
    assert spec["url"] == f"oci://{registry}/mcp-firewall:e2e"

    manifest = get(f"http://{registry}/v2/mcp-firewall/manifests/e2e", DOCKER_V2)
    assert hashlib.sha256(manifest).hexdigest() == spec["sha256"], "WasmPlugin.sha256 pins the manifest digest"
    doc = yaml.safe_load(manifest)
    assert doc["mediaType"] == DOCKER_V2
    layer = doc["layers"][-1]
    assert layer["mediaType"] == DOCKER_LAYER
    blob = get(f"http://{registry}/v2/mcp-firewall/blobs/{layer['digest']}")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        assert list(members) == ["plugin.wasm"]
        got = tar.extractfile(members["plugin.wasm"])
        assert got is not None and got.read() == wasm.read_bytes()
