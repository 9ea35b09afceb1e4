#!/usr/bin/env bash
# Build the filter's OCI image (deploy/istio/Dockerfile), push it to a registry,
# pull it back by digest, check the module came back byte for byte, and print a
# WasmPlugin (deploy/istio/wasmplugin.yaml) with `url` and `sha256` set.
#
#   scripts/istio-oci.sh REGISTRY_HOST:PORT [NAME:TAG] > wasmplugin.yaml
#
# REGISTRY: e.g. a local Debian `docker-registry` (127.0.0.1 needs no TLS).
# Docker: the daemon at DOCKER_HOST (or the default socket) if one answers;
# otherwise, as root, a private dockerd is started for the run (own data root
# and socket under a temp dir, vfs storage, no network setup) and stopped after.
# Needs target/wasm32-wasip1/release/mcp_firewall.wasm (cargo build --release
# --target wasm32-wasip1). Not part of scripts/test.sh: nothing else needs Docker.
set -euo pipefail

REGISTRY=${1:?usage: scripts/istio-oci.sh REGISTRY_HOST:PORT [NAME:TAG]}
NAME_TAG=${2:-mcp-firewall:dev}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WASM=${MCP_FIREWALL_WASM:-$REPO/target/wasm32-wasip1/release/mcp_firewall.wasm}
[ -f "$WASM" ] || { echo "no $WASM: cargo build --release --target wasm32-wasip1" >&2; exit 1; }

TMP=$(mktemp -d)
DOCKERD_PID=
cleanup() {
  if [ -n "$DOCKERD_PID" ]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
  rm -rf "$TMP" 2>/dev/null || true
}
trap cleanup EXIT

if ! docker version >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "no Docker daemon answers and dockerd is not installed" >&2; exit 2; }
  export DOCKER_HOST="unix://$TMP/docker.sock"
  dockerd --data-root "$TMP/data" --exec-root "$TMP/exec" --pidfile "$TMP/docker.pid" \
    -H "$DOCKER_HOST" --storage-driver vfs --bridge none --iptables=false --ip-masq=false \
    >"$TMP/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
  docker version >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -20 "$TMP/dockerd.log" >&2; exit 2; }
fi

REF="$REGISTRY/$NAME_TAG"
mkdir "$TMP/ctx"
cp "$WASM" "$TMP/ctx/plugin.wasm"
cp "$REPO/deploy/istio/Dockerfile" "$TMP/ctx/Dockerfile"
# The classic builder: no buildx plugin needed, and it writes the Docker v2
# manifest and tar.gzip layer istio-agent reads.
DOCKER_BUILDKIT=0 docker build -q -t "$REF" "$TMP/ctx" >&2
docker push "$REF" >&2
DIGEST=$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$REF" | grep -m1 "^${REF%:*}@" | cut -d@ -f2)
[ -n "$DIGEST" ] || { echo "push reported no digest" >&2; exit 1; }

# Pull it back by digest from the registry alone, and compare the module.
docker rmi "$REF" >/dev/null
docker pull -q "${REF%:*}@$DIGEST" >&2
CID=$(docker create "${REF%:*}@$DIGEST" /plugin.wasm)
docker cp "$CID:/plugin.wasm" "$TMP/back.wasm" >/dev/null
docker rm "$CID" >/dev/null
docker rmi "${REF%:*}@$DIGEST" >/dev/null || true
cmp -s "$WASM" "$TMP/back.wasm" || { echo "the pulled image holds another module" >&2; exit 1; }

echo "pushed $REF, digest $DIGEST; pulled back, plugin.wasm identical" >&2
HEX=${DIGEST#sha256:}
sed -e "s|^  url: .*|  url: oci://$REF|" \
    -e "s|^  imagePullPolicy: IfNotPresent|  sha256: $HEX\n  imagePullPolicy: IfNotPresent|" \
    "$REPO/deploy/istio/wasmplugin.yaml"
