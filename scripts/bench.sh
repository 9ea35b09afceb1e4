#!/usr/bin/env bash
# Throughput of Envoy with mcp-firewall vs the same Envoy config without it (and
# vs a no-op build of the same module, to separate Envoy's Wasm cost from ours).
# Not a test: it prints figures, it asserts only that every answer was a 2xx.
#
#   scripts/bench.sh                 # 10 s per side
#   DURATION=30 CONNECTIONS=64 scripts/bench.sh
#   SKIP_BUILD=1 scripts/bench.sh    # measure the .wasm already built
#   ROUNDS=1 scripts/bench.sh        # one run per side instead of two, interleaved
#   METERED=1 scripts/bench.sh       # also: the firewall with a rate limit and the
#                                    # loop breaker, neither tripping (issue #14)
#
# Same run, same machine, loopback only:
#   load      wrk (1 thread), the same ~110-byte allowed tools/call POST every time
#             (API key of the demo's reader, policies/demo.json)
#   baseline  envoy/envoy.yaml without the mcp_firewall filter (render --no-filter)
#   noop-wasm the firewall's config with the module built `--features bench-noop`:
#             Envoy still creates a Wasm context per stream and calls into the VM
#             for every callback, but each continues at once: the floor any
#             proxy-wasm filter pays here, before deciding anything
#   firewall  envoy/envoy.yaml as committed (header_mutation + mcp_firewall + router)
#   upstream  a second Envoy answering every request itself with a fixed JSON-RPC
#             result (direct_response): a Node or Python MCP server would be the
#             bottleneck and hide the filter's cost.
# Both Envoys under test run with --concurrency 2 and share the 2 cores with wrk
# and the upstream, so absolute numbers are low; the ratio is the figure.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}        # baseline, firewall, baseline, firewall, ...: drift hits both sides
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
PY=.venv/bin/python
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ensure_wrk bench
scripts/setup.sh
NOOP_DIR=target/bench-noop
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  cargo build --release --target wasm32-wasip1
  # The floor: the same module built with every HTTP callback continuing at once.
  cargo build --release --target wasm32-wasip1 --features bench-noop --target-dir "$NOOP_DIR"
fi
WASM=target/wasm32-wasip1/release/mcp_firewall.wasm
NOOP_WASM=$NOOP_DIR/wasm32-wasip1/release/mcp_firewall.wasm

WORK="$(mktemp -d -t mcp-firewall-bench.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
UP_PORT=$(port); UP_ADMIN=$(port)

# ---- upstream: Envoy answering a fixed JSON-RPC result ------------------------------
"$PY" tests/e2e/harness.py render-upstream --port "$UP_PORT" --admin "$UP_ADMIN" >"$WORK/upstream.json"
.venv/bin/envoy -c "$WORK/upstream.json" --concurrency 1 --disable-hot-restart -l error \
  >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$PY" tests/e2e/harness.py wait-ready --admin "$UP_ADMIN"

# ---- the request ---------------------------------------------------------------------
BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello bench"}}}'
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer demo-reader-key"
EOF

# The demo policy plus a per-subject-and-tool rate limit and the loop breaker
# (subject, tool, arguments: every request of the load is the same call), both
# far too large to trip: what counting costs, not what refusing does.
"$PY" - "${POLICY:-policies/demo.json}" >"$WORK/metered-policy.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
p["rate_limits"] = [
    {"id": "bench-agent-tool", "key": ["subject", "tool"], "tools": ["*"], "capacity": 1000000000, "per_seconds": 1},
    {"id": "bench-loop", "key": ["subject", "tool", "arguments"], "tools": ["*"], "capacity": 1000000000,
     "per_seconds": 1},
]
print(json.dumps(p))
EOF

declare -A RPS
declare -A TOTAL=([baseline]=0 [noop-wasm]=0 [firewall]=0 [metered]=0)
run_side() { # name [render args...]
  local name=$1; shift
  local listen admin pid policy=${POLICY:-policies/demo.json}
  [[ $name == metered ]] && policy=$WORK/metered-policy.json
  listen=$(port); admin=$(port)
  "$PY" tests/e2e/harness.py render --template envoy --policy "$policy" \
    --listen "$listen" --admin "$admin" --upstream "$UP_PORT" "$@" >"$WORK/$name.json"
  .venv/bin/envoy -c "$WORK/$name.json" --concurrency 2 --disable-hot-restart -l error \
    >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  "$PY" tests/e2e/harness.py wait-ready --admin "$admin"

  require_answered bench "$name" "$listen" "$BODY"

  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/post.lua" "http://127.0.0.1:$listen/mcp" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$listen/mcp" \
    >"$WORK/$name.wrk"
  require_all_2xx bench "$name" "$WORK/$name.wrk"
  RPS[$name]=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$name.wrk")
  TOTAL[$name]=$("$PY" -c "print(${TOTAL[$name]} + ${RPS[$name]})")
  local p50 p99
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name.wrk")
  printf '[bench] %-9s %10s req/s   p50 %8s   p99 %8s\n' "$name" "${RPS[$name]}" "$p50" "$p99"
  local cx
  cx=$(curl -s "http://127.0.0.1:$admin/stats?filter=^cluster.mcp_server.upstream_cx_total$" | awk '{print $2}')
  printf '[bench] %-9s upstream connections opened: %s\n' "$name" "$cx"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "[bench] wrk -t1 -c$CONNECTIONS -d${DURATION}s, ${#BODY}-byte tools/call, Envoy --concurrency 2, $(nproc) cores"
for ((round = 1; round <= ROUNDS; round++)); do
  run_side baseline --no-filter
  run_side noop-wasm --wasm "$NOOP_WASM"
  run_side firewall
  if [[ "${METERED:-0}" == "1" ]]; then run_side metered; fi
done

"$PY" - "${TOTAL[baseline]}" "${TOTAL[firewall]}" "$(stat -c %s "$WASM")" "$ROUNDS" "${TOTAL[noop-wasm]}" <<'EOF'
import sys
rounds = int(sys.argv[4])
base, fw, size = float(sys.argv[1]) / rounds, float(sys.argv[2]) / rounds, int(sys.argv[3])
noop = float(sys.argv[5]) / rounds
print(f"[bench] baseline (no filter): {base:,.0f} req/s (mean of {rounds})")
print(f"[bench] no-op wasm (floor):   {noop:,.0f} req/s (mean of {rounds})")
print(f"[bench] mcp-firewall:         {fw:,.0f} req/s (mean of {rounds})")
print(f"[bench] ratio no-op wasm/baseline: {noop / base:.2f}x")
print(f"[bench] ratio firewall/baseline: {fw / base:.2f}x")
print(f"[bench] wasm size: {size} bytes")
EOF
if [[ "${METERED:-0}" == "1" ]]; then
  "$PY" -c "import sys; m, f = float(sys.argv[1]), float(sys.argv[2]); print(f'[bench] with a rate limit and the loop breaker: {m / int(sys.argv[3]):,.0f} req/s, {m / f:.3f}x the firewall without them')" \
    "${TOTAL[metered]}" "${TOTAL[firewall]}" "$ROUNDS"
fi
