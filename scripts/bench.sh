#!/usr/bin/env bash
# Throughput and Envoy CPU per request of Envoy with mcp-firewall, against the same
# Envoy with no filter, with Envoy's own (C++) `mcp` filter, and with a no-op build
# of our module, for three payloads, in one run (issue #17, item 1).
# Not a test: it prints figures; it asserts only that every answer was a 2xx, that
# every payload is answered by the upstream on every row, and that with audit on
# nothing was dropped and the chain verifies.
#
#   scripts/bench.sh                       # 5 rounds x 6 s per row and payload: ~15 min
#   ROUNDS=7 DURATION=10 scripts/bench.sh  # longer
#   SKIP_BUILD=1 scripts/bench.sh          # measure the .wasm and CLI already built
#   SKIP_SETUP=1 ...                       # do not run scripts/setup.sh first
#   PAYLOADS="call-4k" scripts/bench.sh    # a subset of call-109 call-4k list-50 (or session-109)
#   METERED=1 scripts/bench.sh             # one more row: (a) with a rate limit and the
#                                          # loop breaker, neither tripping (issue #14)
#   ROWS="rules metered" ROUNDS=20 ...     # only these rows (more rounds in the time of a
#                                          # full run, where two rows' difference is small)
#   RESTART=0 ...                          # one Envoy per row for the whole run, not one
#                                          # per row and round (see "the Envoys under test")
#   CLI=/path/to/mcp-firewall ...          # the collector of row (c) (default target/release)
#
# Rows (every Envoy is envoy/envoy.yaml rendered by tests/e2e/harness.py render; only
# the filter between header_mutation and the router changes):
#   baseline   no filter (render --no-filter)
#   native     Envoy 1.40's envoy.filters.http.mcp in the firewall's place (render
#              --native-mcp): {"@type": ".../envoy.extensions.filters.http.mcp.v3.Mcp",
#              "traffic_mode": "PASS_THROUGH"}: it buffers a JSON POST's body (8 KiB at
#              most, its default) and parses the request into dynamic metadata, then
#              lets it through; it decides nothing and never reads the answer
#   noop-wasm  our module built `--features bench-noop`: Envoy creates a Wasm context
#              per stream and calls into the VM for every callback, each continues at
#              once: the floor any proxy-wasm filter pays here
#   (a) rules  policies/demo.json: rules, DLP and catalogue checks at their defaults
#   (b) when   (a) + a `when` condition set on the rule that allows the call (the tool
#              name, the message's length, a character-class regex over it, no PEM
#              header in it, an optional `format` enum): every leaf is evaluated
#   (c) audit  (a) + audit on (batched, fsync per batch) to the bundled collector
#              (`mcp-firewall collector`) on loopback; (a), not (b), so that (c)/(a)
#              is the audit trail's cost alone ((b)/(a) is the `when` set's). The
#              row's CPU window ends when every event of the window has been
#              delivered (audit.sent stops moving), so the delivery is in it; nothing
#              may be dropped, and the chains must verify (`mcp-firewall audit
#              verify`) at the end
#   metered    (METERED=1) (a) + a per-subject-and-tool rate limit and the loop breaker
#   flow-wasm  (FLOW=1) our module built `--features bench-flow`: the firewall's flow
#              through Envoy (every header read, both bodies held and read whole, the
#              key and the answer's content-length removed) with nothing parsed or
#              decided; between noop-wasm and it lies what holding costs Envoy, above
#              it what deciding costs
# Payloads (wrk -t1 -c$CONNECTIONS, the same request every time):
#   call-109   the 109-byte tools/call of echo {"message":"hello bench"}, demo reader's key
#   call-4k    a 4,096-byte tools/call of echo: a message of ~4 KB of plain English
#              prose (no DLP finding), demo reader's key
#   session-109  call-109 in a session (Mcp-Session-Id), as a 2025-era SDK client
#              sends it: each row's Envoy first forwards an initialize whose answer
#              issues the session (the firewall binds it to the reader); not in the
#              default set
#   list-50    tools/list (the demo's admin key, whose rules reach every tool, so no
#              row removes any); the upstream answers a 50-tool list (~35 KB)
#   upstream   a second Envoy answering every request itself (direct_response; the
#              tools/list answer on the header x-bench-answer the list load sets): a
#              Node or Python MCP server would be the bottleneck and hide the filters
# Every row's Envoy is started afresh for each round (RESTART=0: once for the run; idle
# ones cost nothing); each round measures, per payload, every row in turn (baseline,
# native, noop-wasm, a, b, c [, metered]; even rounds in the reverse order), each after
# a WARMUP-second wrk run, so drift hits every row alike.
# Per row: the median of the rounds' req/s; the ratio to no filter and to native as
# the median of the per-round ratios (a row against the rows measured next to it);
# and Envoy's CPU per request: utime + stime of that Envoy's process (/proc/PID/stat)
# over the measured window, divided by the requests wrk completed: other processes on
# the cores (wrk, the upstream, the collector) do not count in it.
# Envoys under test run --concurrency 2 (CONCURRENCY) as before: on 2 cores shared
# with wrk and the upstream absolute numbers are low; the ratios are the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-2}
PAYLOADS=${PAYLOADS:-call-109 call-4k list-50}
PY=.venv/bin/python
CLI=${CLI:-target/release/mcp-firewall}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ensure_wrk bench
if [[ "${SKIP_SETUP:-0}" != "1" ]]; then scripts/setup.sh; fi
NOOP_DIR=target/bench-noop
FLOW_DIR=target/bench-flow
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  cargo build --release --target wasm32-wasip1
  # The floor: the same module built with every HTTP callback continuing at once.
  cargo build --release --target wasm32-wasip1 --features bench-noop --target-dir "$NOOP_DIR"
  if [[ "${FLOW:-0}" == "1" ]]; then
    cargo build --release --target wasm32-wasip1 --features bench-flow --target-dir "$FLOW_DIR"
  fi
  cargo build --release -p mcp-firewall-cli
fi
WASM=target/wasm32-wasip1/release/mcp_firewall.wasm
NOOP_WASM=$NOOP_DIR/wasm32-wasip1/release/mcp_firewall.wasm
FLOW_WASM=$FLOW_DIR/wasm32-wasip1/release/mcp_firewall.wasm
for f in "$WASM" "$NOOP_WASM" "$CLI"; do
  [[ -e $f ]] || { echo "[bench] missing $f (build it, or run without SKIP_BUILD=1)" >&2; exit 1; }
done

SIDES=(baseline native noop-wasm rules when audit)
if [[ "${METERED:-0}" == "1" ]]; then SIDES+=(metered); fi
if [[ "${FLOW:-0}" == "1" ]]; then
  [[ -e $FLOW_WASM ]] || { echo "[bench] missing $FLOW_WASM (build it, or run without SKIP_BUILD=1)" >&2; exit 1; }
  SIDES=(baseline native noop-wasm flow-wasm "${SIDES[@]:3}")
fi
if [[ -n "${ROWS:-}" ]]; then
  kept=()
  for side in "${SIDES[@]}"; do
    [[ " $ROWS " == *" $side "* ]] && kept+=("$side")
  done
  [[ ${#kept[@]} -gt 0 ]] || { echo "[bench] ROWS=\"$ROWS\" names none of: ${SIDES[*]}" >&2; exit 1; }
  SIDES=("${kept[@]}")
fi

WORK="$(mktemp -d -t mcp-firewall-bench.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system time of a process, in ticks
stat_of() { # admin-port stat-name
  curl -s "http://127.0.0.1:$1/stats?filter=^$(sed 's/\./\\./g' <<<"$2")\$" | awk '{print $2+0}'
}

# ---- upstream: Envoy answering a fixed JSON-RPC result, or the 50-tool list ---------
start_upstream --list-tools 50

# ---- the collector of row (c) --------------------------------------------------------
COL_PORT=$(port)
"$CLI" collector --listen "127.0.0.1:$COL_PORT" --out "$WORK/audit.ndjson" >"$WORK/collector.log" 2>&1 &
COL_PID=$!
PIDS+=("$COL_PID")
"$PY" tests/e2e/harness.py wait-port --port "$COL_PORT"

# ---- payloads and policies -----------------------------------------------------------
"$PY" scripts/bench_payloads.py "$WORK" "${POLICY:-policies/demo.json}"

SESSION=$("$PY" -c 'import sys; sys.path.insert(0, "tests/e2e"); import harness; print(harness.BENCH_SESSION)')
declare -A KEY=([call-109]=demo-reader-key [call-4k]=demo-reader-key [list-50]=demo-admin-key
  [session-109]=demo-reader-key)
declare -A EXPECT=([call-109]='Echo: hello bench' [call-4k]='Echo: hello bench' [list-50]='"name":"export_milestones"'
  [session-109]='Echo: hello bench')
declare -A EXTRA=([call-109]='' [call-4k]='' [list-50]='x-bench-answer: tools-list'
  [session-109]="mcp-session-id: $SESSION")
for payload in $PAYLOADS; do
  [[ -n ${KEY[$payload]:-} ]] || { echo "[bench] unknown payload $payload (call-109 call-4k list-50 session-109)" >&2; exit 1; }
  {
    echo "local f = assert(io.open('$WORK/$payload.body', 'rb'))"
    echo "wrk.body = f:read('*a')"
    echo "f:close()"
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    echo 'wrk.headers["Accept"] = "application/json, text/event-stream"'
    echo "wrk.headers[\"Authorization\"] = \"Bearer ${KEY[$payload]}\""
    if [[ -n ${EXTRA[$payload]} ]]; then
      echo "wrk.headers[\"${EXTRA[$payload]%%: *}\"] = \"${EXTRA[$payload]#*: }\""
    fi
  } >"$WORK/$payload.lua"
done

# ---- the Envoys under test: one per row ----------------------------------------------
# Every round starts each row's Envoy afresh (RESTART=0: once for the whole run). A
# process keeps its placement for its life (where V8 puts the module's code, how its
# memory meets the caches): the same two builds measured 0.990x and then 0.911x in two
# 21-round runs half an hour apart, one row's median moving 15 us while the other's stayed
# (docs/performance.md). Alternating rounds cannot cancel what stays with a process.
declare -A LISTEN ADMIN PID
start_envoys() {
  local side policy args payload extra
  for side in "${SIDES[@]}"; do
    LISTEN[$side]=$(port); ADMIN[$side]=$(port)
    args=()
    case $side in
      baseline) args=(--no-filter) ;;
      native) args=(--native-mcp) ;;
      noop-wasm) args=(--wasm "$NOOP_WASM") ;;
      flow-wasm) args=(--wasm "$FLOW_WASM") ;;
    esac
    policy=$WORK/rules.policy.json
    [[ -f $WORK/$side.policy.json ]] && policy=$WORK/$side.policy.json
    "$PY" tests/e2e/harness.py render --template envoy --policy "$policy" --wasm "$WASM" \
      --listen "${LISTEN[$side]}" --admin "${ADMIN[$side]}" --upstream "$UP_PORT" "${args[@]}" >"$WORK/$side.json"
    if [[ $side == audit ]]; then
      add_audit_collector "$WORK/$side.json" "$COL_PORT"
    fi
    .venv/bin/envoy -c "$WORK/$side.json" --concurrency "$CONCURRENCY" --disable-hot-restart -l error \
      >>"$WORK/$side.log" 2>&1 &
    PID[$side]=$!
    PIDS+=("${PID[$side]}")
  done
  for side in "${SIDES[@]}"; do
    "$PY" tests/e2e/harness.py wait-ready --admin "${ADMIN[$side]}" --timeout 120
    if [[ " $PAYLOADS " == *" session-109 "* ]]; then
      # Open the session the load continues (bound to the reader by the firewall rows).
      require_answered bench "$side/initialize" "${LISTEN[$side]}" "@$WORK/initialize.body" \
        '"protocolVersion"' demo-reader-key -H 'x-bench-answer: initialize'
    fi
    for payload in $PAYLOADS; do
      extra=()
      [[ -n ${EXTRA[$payload]} ]] && extra=(-H "${EXTRA[$payload]}")
      require_answered bench "$side/$payload" "${LISTEN[$side]}" "@$WORK/$payload.body" \
        "${EXPECT[$payload]}" "${KEY[$payload]}" "${extra[@]}"
    done
  done
}
# Stops the rows' Envoys (an audit row's events of the round are delivered by then:
# measure waits for audit.sent to settle; each process's chains end with it).
stop_envoys() {
  local side pid kept=()
  for side in "${SIDES[@]}"; do kill -TERM "${PID[$side]}" 2>/dev/null || true; done
  for side in "${SIDES[@]}"; do wait "${PID[$side]}" 2>/dev/null || true; done
  # Forgotten once reaped: cleanup must not signal a number the system may reuse.
  for pid in "${PIDS[@]}"; do
    [[ " ${PID[*]} " == *" $pid "* ]] || kept+=("$pid")
  done
  PIDS=("${kept[@]}")
}
start_envoys
# ---- measure ------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
measure() { # round payload side
  local round=$1 payload=$2 side=$3
  local url="http://127.0.0.1:${LISTEN[$side]}/mcp" pid=${PID[$side]} out="$WORK/$round-$payload-$side.wrk"
  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/$payload.lua" "$url" >"$out.warmup"
  require_all_2xx bench "$side/$payload (warm-up)" "$out.warmup"
  local cpu0 col0 cpu col
  cpu0=$(cpu_ticks "$pid"); col0=$(cpu_ticks "$COL_PID")
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/$payload.lua" "$url" >"$out"
  if [[ $side == audit ]]; then
    # Delivery of this window's events belongs to it: wait until the delivered count
    # stops moving (batches go every 200 ms), then nothing may have been dropped.
    local sent=-1 now
    for _ in $(seq 1 40); do
      now=$(stat_of "${ADMIN[$side]}" wasmcustom.mcp_firewall.audit.sent)
      [[ "$now" == "$sent" ]] && break
      sent=$now
      sleep 0.5
    done
    local dropped failed
    dropped=$(stat_of "${ADMIN[$side]}" wasmcustom.mcp_firewall.audit.dropped)
    failed=$(stat_of "${ADMIN[$side]}" wasmcustom.mcp_firewall.audit.append_failed)
    if [[ "$dropped" != 0 || "$failed" != 0 ]]; then
      echo "[bench] audit events were lost under load: dropped $dropped, append_failed $failed" >&2
      exit 1
    fi
  fi
  cpu=$(($(cpu_ticks "$pid") - cpu0)); col=$(($(cpu_ticks "$COL_PID") - col0))
  require_all_2xx bench "$side/$payload" "$out"
  local requests rps p50 p99
  requests=$(awk '/requests in/ {print $1}' "$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$payload" "$side" "$rps" "$requests" "$cpu" "$col" \
    "$p50" "$p99" >>"$RESULTS"
  printf '[bench] round %s %-8s %-9s %10s req/s   p50 %8s   p99 %8s   Envoy CPU %6s us/req%s\n' \
    "$round" "$payload" "$side" "$rps" "$p50" "$p99" \
    "$(awk -v t="$cpu" -v r="$requests" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}')" \
    "$([[ $side == audit ]] && awk -v t="$col" -v r="$requests" -v hz="$HZ" \
      'BEGIN {printf "   collector %.1f us/req", t * 1e6 / hz / r}')"
}

declare -A BYTES
for payload in $PAYLOADS; do BYTES[$payload]=$(stat -c %s "$WORK/$payload.body"); done
echo "[bench] $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%d), $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "[bench] wrk -t1 -c$CONNECTIONS, ${WARMUP}s warm-up + ${DURATION}s measured per row and payload, $ROUNDS rounds;" \
  "Envoy --concurrency $CONCURRENCY; rows: ${SIDES[*]}"
for payload in $PAYLOADS; do echo "[bench] payload $payload: ${BYTES[$payload]}-byte request"; done
START=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round > 1)) && [[ "${RESTART:-1}" == "1" ]]; then
    stop_envoys
    start_envoys
  fi
  # Odd rounds take the rows in order, even rounds in reverse: a row measured
  # right after another (rules, then metered) is not always the second one.
  # The same build in two rows of one 7-round run read up to 2.5 us apart.
  ORDER=("${SIDES[@]}")
  if ((round % 2 == 0)); then
    ORDER=()
    for ((k = ${#SIDES[@]} - 1; k >= 0; k--)); do ORDER+=("${SIDES[k]}"); done
  fi
  for payload in $PAYLOADS; do
    for side in "${ORDER[@]}"; do measure "$round" "$payload" "$side"; done
  done
done
echo "[bench] measured in $((SECONDS - START)) s"

# One chain per audit-on worker VM; every chain must verify.
if [[ " ${SIDES[*]} " == *" audit "* ]]; then
  if ! "$CLI" audit verify "$WORK/audit.ndjson" >"$WORK/verify.txt" 2>&1; then
    echo "[bench] audit verify failed:" >&2
    cat "$WORK/verify.txt" >&2
    exit 1
  fi
  head -1 "$WORK/verify.txt" | sed 's/^/[bench] audit verify: /'
fi

# ---- report -------------------------------------------------------------------------
"$PY" - "$RESULTS" "$HZ" "$(stat -c %s "$WASM")" "$PAYLOADS" "${SIDES[*]}" <<'EOF'
import collections, statistics, sys
path, hz, wasm_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payloads, sides = sys.argv[4].split(), sys.argv[5].split()
rps, cpu, col = {}, {}, {}
for line in open(path):
    rnd, payload, side, r, requests, ticks, col_ticks, _p50, _p99 = line.rstrip("\n").split("\t")
    key = (payload, side, int(rnd))
    rps[key] = float(r)
    cpu[key] = int(ticks) * 1e6 / hz / int(requests)
    col[key] = int(col_ticks) * 1e6 / hz / int(requests)
rounds = sorted({k[2] for k in rps})
med = statistics.median
LABEL = {"baseline": "no filter", "native": "Envoy `mcp` filter (native, C++)", "noop-wasm": "no-op wasm",
         "flow-wasm": "flow-only wasm (holds and reads, decides nothing)",
         "rules": "(a) rules + DLP (demo policy)", "when": "(b) = (a) + `when` conditions",
         "audit": "(c) = (a) + audit on", "metered": "(a) + rate limit + loop breaker"}
PAYLOAD = {"call-109": "109 B `tools/call`", "call-4k": "4 KB `tools/call`", "list-50": "50-tool `tools/list`",
           "session-109": "109 B `tools/call` in a session"}

def ratio(payload, side, other, table=rps):
    """Median over rounds of side/other within the same round."""
    return med([table[(payload, side, r)] / table[(payload, other, r)] for r in rounds])

def ratio_cell(payload, side, other):
    return f"{ratio(payload, side, other):.2f}x" if other in sides else "-"

print()
print("[bench] every round (req/s, and x native in the same round):")
for payload in payloads:
    for side in sides:
        cells = "  ".join(f"{rps[(payload, side, r)]:>9,.0f}" + (
                          f" ({rps[(payload, side, r)] / rps[(payload, 'native', r)]:.2f})" if "native" in sides else "")
                          for r in rounds)
        print(f"[bench]   {payload:<8} {side:<9} {cells}")
print()
print(f"Median of {len(rounds)} alternating rounds; ratios: median of the per-round ratios; "
      "Envoy CPU: that Envoy's utime+stime per completed request.")
print()
print("| payload | row | req/s | vs no filter | vs native | Envoy CPU µs/req |")
print("|---|---|---:|---:|---:|---:|")
for payload in payloads:
    for side in sides:
        r = med([rps[(payload, side, x)] for x in rounds])
        c = med([cpu[(payload, side, x)] for x in rounds])
        extra = ""
        if side == "audit":
            extra = f" + collector {med([col[(payload, side, x)] for x in rounds]):.1f}"
        print(f"| {PAYLOAD[payload]} | {LABEL[side]} | {r:,.0f} | {ratio_cell(payload, side, 'baseline')} "
              f"| {ratio_cell(payload, side, 'native')} | {c:.1f}{extra} |")
print()
if "call-4k" in payloads and {"rules", "native"} <= set(sides):
    per = [rps[("call-4k", "rules", r)] / rps[("call-4k", "native", r)] for r in rounds]
    print(f"[bench] target: row (a), 4 KB call, >= 1.0x native: {med(per):.2f}x "
          f"(rounds {' '.join(f'{x:.2f}' for x in per)})")
for payload in payloads if {"rules", "audit", "when"} <= set(sides) else []:
    per = [cpu[(payload, "audit", r)] / cpu[(payload, "rules", r)] for r in rounds]
    per_b = [cpu[(payload, "when", r)] / cpu[(payload, "rules", r)] for r in rounds]
    print(f"[bench] target: Envoy CPU per request, (c)/(a) <= 1.05x, {payload}: {med(per):.2f}x "
          f"(rounds {' '.join(f'{x:.2f}' for x in per)}); the `when` set, (b)/(a): {med(per_b):.2f}x")
if {"metered", "rules"} <= set(sides):
    for payload in payloads:
        per = [rps[(payload, "metered", r)] / rps[(payload, "rules", r)] for r in rounds]
        per_cpu = [cpu[(payload, "metered", r)] / cpu[(payload, "rules", r)] for r in rounds]
        print(f"[bench] with a rate limit and the loop breaker, {payload}: {med(per):.3f}x (a) "
              f"(rounds {' '.join(f'{x:.3f}' for x in per)}); Envoy CPU {med(per_cpu):.3f}x (a)")
print(f"[bench] wasm size: {wasm_size} bytes")
EOF
