#!/usr/bin/env bash
# The demo: server-everything behind Envoy + mcp-firewall (policies/demo.json),
# driven by the official MCP Python SDK (scripts/demo_client.py).
#
#   scripts/demo.sh            # everything below, then stops what it started
#   KEEP=1 scripts/demo.sh     # leave it running until Ctrl-C (try it with curl)
#
# Starts, on free loopback ports:
#   - server-everything (streamable HTTP)
#   - Envoy #1: mcp-firewall enforcing policies/demo.json
#   - Envoy #2: the same policy with "mode": "dry_run"
#   - the approval service (mcp-firewall approvals serve, SQLite in the temp dir)
#   - Envoy #3: policies/demo.json plus an approve rule for get-sum and an
#     `approval` section (hold mode): the client's call waits until the demo,
#     as the approver alice, approves it through the service
# Every process it starts is stopped on exit, on error and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
PIDS=()
WORK=""

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$WORK" ]]; then
    echo "[demo] logs: $WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "[demo] setup"
scripts/setup.sh
echo "[demo] cargo build --release --target wasm32-wasip1"
cargo build --release --target wasm32-wasip1
WASM=target/wasm32-wasip1/release/mcp_firewall.wasm
echo "[demo] filter: $WASM ($(stat -c %s "$WASM") bytes)"
echo "[demo] cargo build --release -p mcp-firewall-cli"
cargo build --release -p mcp-firewall-cli
CLI=target/release/mcp-firewall

WORK="$(mktemp -d -t mcp-firewall-demo.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
SERVER_PORT=$(port); ENF_PORT=$(port); ENF_ADMIN=$(port); DRY_PORT=$(port); DRY_ADMIN=$(port)
APR_PORT=$(port); APV_PORT=$(port); APV_ADMIN=$(port)

echo "[demo] server-everything on :$SERVER_PORT"
# A minimal environment: the server has a tool (get-env) that prints it.
env -i PATH="$PATH" HOME="$WORK" PORT="$SERVER_PORT" \
  node peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp \
  >"$WORK/server-everything.log" 2>&1 &
PIDS+=($!)
"$PY" tests/e2e/harness.py wait-port --port "$SERVER_PORT"

start_envoy() { # name listen admin policy [render options: --mode dry_run ...]
  local name=$1 listen=$2 admin=$3 policy=$4; shift 4
  "$PY" tests/e2e/harness.py render --template envoy --policy "$policy" \
    --listen "$listen" --admin "$admin" --upstream "$SERVER_PORT" "$@" >"$WORK/$name.json"
  # ENVOY_ENV: variables for this Envoy only (the approval token).
  env ${ENVOY_ENV:-} .venv/bin/envoy -c "$WORK/$name.json" --concurrency 1 --disable-hot-restart \
    -l info --component-log-level wasm:info --log-path "$WORK/$name.log" --file-flush-interval-msec 100 \
    >"$WORK/$name.stdout" 2>&1 &
  PIDS+=($!)
  if ! "$PY" tests/e2e/harness.py wait-ready --admin "$admin"; then
    echo "[demo] envoy $name did not start:" >&2
    tail -n 30 "$WORK/$name.log" "$WORK/$name.stdout" >&2 || true
    exit 1
  fi
  echo "[demo] envoy $name on :$listen (admin :$admin)"
}
start_envoy enforce "$ENF_PORT" "$ENF_ADMIN" policies/demo.json
start_envoy dry-run "$DRY_PORT" "$DRY_ADMIN" policies/demo.json --mode dry_run

# The approval service. Its config holds only the tokens' SHA-256: the
# filter's (random per run, handed to Envoy #3 in its environment, never
# written in the policy: approval.token_env) and the approver alice's.
ALICE_TOKEN=demo-alice-token
FILTER_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '=+/')
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
printf '{"storage": "sqlite:%s", "listen": "127.0.0.1:%s", "filter_tokens_sha256": ["%s"],
 "approvers": [{"subject": "alice@example.com", "token_sha256": "%s"}], "cookie_secure": false}\n' \
  "$WORK/approvals.db" "$APR_PORT" "$(sha "$FILTER_TOKEN")" "$(sha "$ALICE_TOKEN")" >"$WORK/approvals.json"
"$CLI" approvals serve --config "$WORK/approvals.json" >"$WORK/approvals.log" 2>&1 &
PIDS+=($!)
"$PY" tests/e2e/harness.py wait-port --port "$APR_PORT"
echo "[demo] approval service on :$APR_PORT (approver alice@example.com)"
# policies/demo.json, plus: the reader's get-sum needs a person's approval.
"$PY" -c '
import json, sys
p = json.load(open(sys.argv[1]))
p["rules"].append({"id": "sum-needs-approval", "effect": "approve", "roles": ["reader"], "tools": ["get-sum"]})
p["approval"] = {"cluster": "approvals", "token_env": "MCP_FIREWALL_APPROVAL_TOKEN", "mode": "hold",
                 "timeout_ms": 20000}
json.dump(p, sys.stdout, indent=1)
' policies/demo.json >"$WORK/demo-approval.json"
ENVOY_ENV="MCP_FIREWALL_APPROVAL_TOKEN=$FILTER_TOKEN" start_envoy approval "$APV_PORT" "$APV_ADMIN" \
  "$WORK/demo-approval.json" --approvals-port "$APR_PORT" --host-env MCP_FIREWALL_APPROVAL_TOKEN

"$PY" scripts/demo_client.py \
  --server "http://127.0.0.1:$SERVER_PORT/mcp" \
  --enforce "http://127.0.0.1:$ENF_PORT/mcp" \
  --dry-run "http://127.0.0.1:$DRY_PORT/mcp" \
  --approval "http://127.0.0.1:$APV_PORT/mcp" --approvals "http://127.0.0.1:$APR_PORT" \
  --approver-token "$ALICE_TOKEN" \
  --reader-key demo-reader-key --admin-key demo-admin-key

sleep 0.5  # the log file is flushed every 100 ms
echo "[demo] the dry-run Envoy's log (section 6):"
grep -o 'mcp-firewall dry-run.*rule=no-env.*' "$WORK/dry-run.log" | head -n 1 | sed 's/^/     /' || true

echo
echo "[demo] Envoy's own view (admin :$ENF_ADMIN/stats):"
curl -s "http://127.0.0.1:$ENF_ADMIN/stats?filter=mcp_firewall|vcluster.mcp_post.upstream_rq_total" \
  | grep -v ': 0$' | sed 's/^/   /' || true
echo "[demo] the approval Envoy's own view (admin :$APV_ADMIN/stats):"
curl -s "http://127.0.0.1:$APV_ADMIN/stats?filter=mcp_firewall.approval" \
  | grep -v ': 0$' | sed 's/^/   /' || true

if [[ "${KEEP:-0}" == "1" ]]; then
  cat <<EOF

[demo] still running (Ctrl-C to stop):
  enforcing  http://127.0.0.1:$ENF_PORT/mcp   (admin http://127.0.0.1:$ENF_ADMIN)
  dry-run    http://127.0.0.1:$DRY_PORT/mcp   (admin http://127.0.0.1:$DRY_ADMIN)
  approval   http://127.0.0.1:$APV_PORT/mcp   (admin http://127.0.0.1:$APV_ADMIN): the reader's get-sum waits
  approvers' page http://127.0.0.1:$APR_PORT/   (sign in with the token $ALICE_TOKEN)
  try: curl -si http://127.0.0.1:$ENF_PORT/mcp -H 'Authorization: Bearer demo-reader-key' \\
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
         -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-env","arguments":{}}}'
EOF
  wait
fi
