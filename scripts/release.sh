#!/usr/bin/env bash
# The release artefacts, built from this checkout into dist/:
#   mcp_firewall.wasm          the filter (cargo build --release --target wasm32-wasip1)
#   mcp_firewall.wasm.sha256   its SHA-256 (what WasmPlugin.sha256 and Envoy's
#                              remote code source name)
#   mcp-firewall-<target>      the CLI for this machine's target, and its .sha256
#   CHANGELOG.md               the changes, as released
#   wasmplugin.yaml            with REGISTRY set: the OCI image pushed there and
#                              read back (scripts/istio-oci.sh), its digest in
#                              the WasmPlugin's url and sha256
#
#   scripts/release.sh                      # wasm, CLI, checksums
#   REGISTRY=127.0.0.1:5000 scripts/release.sh   # and the OCI image
#
# Refuses to run with uncommitted changes: an artefact names the commit it
# was built from (dist/COMMIT).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain)" ]; then
  echo "release.sh: the working tree has uncommitted changes; commit them first" >&2
  exit 1
fi

DIST=dist
rm -rf "$DIST"
mkdir -p "$DIST"

cargo build --release --locked --target wasm32-wasip1
cargo build --release --locked -p mcp-firewall-cli

host=$(rustc -vV | sed -n 's/^host: //p')
cp target/wasm32-wasip1/release/mcp_firewall.wasm "$DIST/mcp_firewall.wasm"
cp target/release/mcp-firewall "$DIST/mcp-firewall-$host"
cp CHANGELOG.md "$DIST/CHANGELOG.md"
git rev-parse HEAD > "$DIST/COMMIT"
(cd "$DIST" && sha256sum mcp_firewall.wasm > mcp_firewall.wasm.sha256 \
            && sha256sum "mcp-firewall-$host" > "mcp-firewall-$host.sha256")

# The CLI and the filter come from one workspace version.
"$DIST/mcp-firewall-$host" --version

if [ -n "${REGISTRY:-}" ]; then
  MCP_FIREWALL_WASM="$PWD/$DIST/mcp_firewall.wasm" \
    scripts/istio-oci.sh "$REGISTRY" "mcp-firewall:$(git describe --tags --always)" > "$DIST/wasmplugin.yaml"
fi

echo "release.sh: artefacts of $(cat "$DIST/COMMIT") in $DIST/:"
ls -l "$DIST"
cat "$DIST"/*.sha256
