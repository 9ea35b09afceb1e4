#!/usr/bin/env bash
# Throughput of Envoy + mcp-firewall with the audit trail on (batched, collector
# running) vs the same Envoy and policy with audit off.
# Not a test: it prints figures; it asserts only that every answer was a 2xx and
# that, with audit on, every event the filter sealed reached the collector and
# verifies (`mcp-firewall audit verify` exit 0, nothing dropped).
#
#   scripts/bench-audit.sh                       # 10 s per side, 2 rounds
#   DURATION=30 ROUNDS=3 CONNECTIONS=64 scripts/bench-audit.sh
#   SKIP_BUILD=1 scripts/bench-audit.sh          # measure what is already built
#   SKIP_SETUP=1 ...                             # do not run scripts/setup.sh first
#
# Same approach and load as scripts/bench.sh:
#   load       wrk (1 thread), the same ~110-byte allowed tools/call POST every time
#              (API key of the demo's reader, policies/demo.json)
#   audit-off  envoy/envoy.yaml as committed, policies/demo.json (no audit section)
#   audit-on   the same + "audit": {max_batch 100, flush_ms 200, max_buffered 10000,
#              on_failure open, arguments hash} and a static cluster to the bundled
#              collector (`mcp-firewall collector`, fsync per batch) on loopback
#   upstream   a second Envoy answering every request itself (direct_response)
# Rounds alternate off/on so drift on a shared machine hits both sides alike; the
# ratio is of the summed requests/s. Envoys under test run --concurrency 2 (or
# CONCURRENCY) and share the cores with wrk, the upstream and the collector, so
# Envoy's CPU time per request is printed too: it is less sensitive to other load
# on a shared machine than requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
CONCURRENCY=${CONCURRENCY:-2}  # Envoy workers under test (2 = two VMs appending to one chain)
PY=.venv/bin/python
CLI=target/release/mcp-firewall
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ensure_wrk bench-audit
if [[ "${SKIP_SETUP:-0}" != "1" ]]; then scripts/setup.sh; fi
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  cargo build --release --target wasm32-wasip1
  cargo build --release -p mcp-firewall-cli
fi

WORK="$(mktemp -d -t mcp-firewall-bench-audit.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
UP_PORT=$(port); UP_ADMIN=$(port)

# ---- upstream: Envoy answering a fixed JSON-RPC result (as scripts/bench.sh) --------
"$PY" tests/e2e/harness.py render-upstream --port "$UP_PORT" --admin "$UP_ADMIN" >"$WORK/upstream.json"
.venv/bin/envoy -c "$WORK/upstream.json" --concurrency 1 --disable-hot-restart -l error \
  >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$PY" tests/e2e/harness.py wait-ready --admin "$UP_ADMIN"

# ---- the collector -------------------------------------------------------------------
COL_PORT=$(port)
"$CLI" collector --listen "127.0.0.1:$COL_PORT" --out "$WORK/audit.ndjson" >"$WORK/collector.log" 2>&1 &
COL_PID=$!
PIDS+=("$COL_PID")
"$PY" tests/e2e/harness.py wait-port --port "$COL_PORT"

# ---- policies ------------------------------------------------------------------------
cp policies/demo.json "$WORK/audit-off.policy.json"
"$PY" - <<EOF >"$WORK/audit-on.policy.json"
import json
p = json.load(open("policies/demo.json"))
p["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
              "max_batch": 100, "flush_ms": 200, "max_buffered": 10000, "on_failure": "open",
              "arguments": "hash", "timeout_ms": 5000}
print(json.dumps(p))
EOF

# ---- the request ---------------------------------------------------------------------
BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello bench"}}}'
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer demo-reader-key"
EOF

cpu_ms() { # pid -> user+system CPU time of the process so far, in ms
  awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"
}

stat_of() { # admin-port stat-name
  curl -s "http://127.0.0.1:$1/stats?filter=^$(sed 's/\./\\./g' <<<"$2")\$" | awk '{print $2+0}'
}

declare -A SUM ENVOY_CPU COL_CPU REQS RPS
for side in audit-off audit-on; do SUM[$side]=0; ENVOY_CPU[$side]=0; COL_CPU[$side]=0; REQS[$side]=0; RPS[$side]=""; done
run_side() { # name round
  local name=$1 round=$2
  local listen admin pid
  listen=$(port); admin=$(port)
  "$PY" tests/e2e/harness.py render --template envoy --policy "$WORK/$name.policy.json" \
    --listen "$listen" --admin "$admin" --upstream "$UP_PORT" >"$WORK/$name.json"
  if [[ $name == audit-on ]]; then
    "$PY" - "$WORK/$name.json" "$COL_PORT" <<'EOF'
import json, sys
path, port = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(path))
cfg["static_resources"]["clusters"].append({
  "name": "audit_collector", "type": "STATIC", "connect_timeout": "1s",
  "load_assignment": {"cluster_name": "audit_collector", "endpoints": [{"lb_endpoints": [
    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
json.dump(cfg, open(path, "w"), indent=1)
EOF
  fi
  .venv/bin/envoy -c "$WORK/$name.json" --concurrency "$CONCURRENCY" --disable-hot-restart -l warn \
    >"$WORK/$name-$round.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  "$PY" tests/e2e/harness.py wait-ready --admin "$admin"

  require_answered bench-audit "$name" "$listen" "$BODY"

  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/post.lua" "http://127.0.0.1:$listen/mcp" >/dev/null
  local envoy_cpu0 col_cpu0
  envoy_cpu0=$(cpu_ms "$pid"); col_cpu0=$(cpu_ms "$COL_PID")
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$listen/mcp" \
    >"$WORK/$name-$round.wrk"
  local envoy_cpu col_cpu requests
  envoy_cpu=$(( $(cpu_ms "$pid") - envoy_cpu0 )); col_cpu=$(( $(cpu_ms "$COL_PID") - col_cpu0 ))
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name-$round.wrk")
  require_all_2xx bench-audit "$name" "$WORK/$name-$round.wrk"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$name-$round.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$name-$round.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name-$round.wrk")
  SUM[$name]=$("$PY" -c "print(${SUM[$name]} + $rps)")
  RPS[$name]="${RPS[$name]} $rps"
  ENVOY_CPU[$name]=$(( ${ENVOY_CPU[$name]} + envoy_cpu )); COL_CPU[$name]=$(( ${COL_CPU[$name]} + col_cpu ))
  REQS[$name]=$(( ${REQS[$name]} + requests ))
  printf '[bench-audit] round %s %-9s %10s req/s   p50 %8s   p99 %8s   Envoy CPU %5.0f us/req   collector CPU %4.0f us/req\n' \
    "$round" "$name" "$rps" "$p50" "$p99" "$("$PY" -c "print($envoy_cpu * 1000 / $requests)")" \
    "$("$PY" -c "print($col_cpu * 1000 / $requests)")"

  if [[ $name == audit-on ]]; then
    # Delivery keeps up: wait until the acknowledged count stops moving, then every
    # sealed event must be in the file (nothing dropped, nothing failed to seal).
    local sent=-1 now dropped failed
    for _ in $(seq 1 60); do
      sleep 1
      now=$(stat_of "$admin" wasmcustom.mcp_firewall.audit.sent)
      [[ "$now" == "$sent" ]] && break
      sent=$now
    done
    dropped=$(stat_of "$admin" wasmcustom.mcp_firewall.audit.dropped)
    failed=$(stat_of "$admin" wasmcustom.mcp_firewall.audit.append_failed)
    printf '[bench-audit] round %s audit-on  events delivered %s, dropped %s, append_failed %s, retried %s\n' \
      "$round" "$sent" "$dropped" "$failed" "$(stat_of "$admin" wasmcustom.mcp_firewall.audit.retried)"
    if [[ "$dropped" != 0 || "$failed" != 0 ]]; then
      echo "[bench-audit] audit events were lost under load" >&2
      exit 1
    fi
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "[bench-audit] wrk -t1 -c$CONNECTIONS -d${DURATION}s x $ROUNDS rounds, ${#BODY}-byte tools/call," \
  "Envoy --concurrency $CONCURRENCY, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  run_side audit-off "$round"
  run_side audit-on "$round"
done

# One chain per audit-on Envoy process; every chain must verify.
if ! "$CLI" audit verify "$WORK/audit.ndjson" >"$WORK/verify.txt"; then
  echo "[bench-audit] audit verify failed:" >&2
  cat "$WORK/verify.txt" >&2
  exit 1
fi
head -1 "$WORK/verify.txt" | sed 's/^/[bench-audit] audit verify: /'

"$PY" - "${SUM[audit-off]}" "${SUM[audit-on]}" "$ROUNDS" \
  "${ENVOY_CPU[audit-off]}" "${REQS[audit-off]}" "${ENVOY_CPU[audit-on]}" "${COL_CPU[audit-on]}" "${REQS[audit-on]}" \
  "${RPS[audit-off]}" "${RPS[audit-on]}" <<'EOF'
import statistics, sys
off, on, rounds = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
cpu_off, req_off, cpu_on, col_on, req_on = map(int, sys.argv[4:9])
pairs = [b / a for a, b in zip(map(float, sys.argv[9].split()), map(float, sys.argv[10].split()))]
print(f"[bench-audit] audit off: {off / rounds:,.0f} req/s (mean of {rounds}), "
      f"Envoy CPU {cpu_off * 1000 / req_off:.0f} us/req")
print(f"[bench-audit] audit on:  {on / rounds:,.0f} req/s (mean of {rounds}), "
      f"Envoy CPU {cpu_on * 1000 / req_on:.0f} us/req + collector {col_on * 1000 / req_on:.0f} us/req")
print(f"[bench-audit] ratio on/off: {on / off:.2f}x (target >= 0.95x)")
# Each on round runs right after its off round, so a pair shares the machine's
# speed of the moment; the median pair is robust to a round that hit a slow spell.
print(f"[bench-audit] ratio per round: {' '.join(f'{r:.2f}' for r in pairs)}; "
      f"median {statistics.median(pairs):.2f}x")
print(f"[bench-audit] Envoy CPU per request on/off: {cpu_on * req_off / (cpu_off * req_on):.2f}x")
EOF
