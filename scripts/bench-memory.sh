#!/usr/bin/env bash
# Memory of Envoy with mcp-firewall under load (issue #17 item 3): the resident
# set of the Envoy process (--concurrency 2, so two worker VMs) after start-up,
# after a warm-up, and after REQUESTS more allowed calls and lists, against the
# same Envoy without the filter. Not a test: it prints figures, and asserts
# only that every answer was a 2xx.
#
#   scripts/bench-memory.sh               # 100,000 requests (half calls, half lists)
#   REQUESTS=20000 scripts/bench-memory.sh
#   SKIP_BUILD=1 scripts/bench-memory.sh  # measure the .wasm already built
#
# The load is the benchmark's (scripts/bench.sh): the 109-byte tools/call with
# the demo reader's key, and the 50-tool tools/list with the admin key (lists
# are where the per-VM memos of the catalogue checks and DLP live, bounded at
# 256 KiB each), answered by a second Envoy (direct_response).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
CONNECTIONS=${CONNECTIONS:-16}
PY=.venv/bin/python
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ensure_wrk bench-memory
if [[ "${SKIP_SETUP:-0}" != "1" ]]; then scripts/setup.sh; fi
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then cargo build --release --target wasm32-wasip1; fi
WASM=target/wasm32-wasip1/release/mcp_firewall.wasm

WORK="$(mktemp -d -t mcp-firewall-memory.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_upstream --list-tools 50

CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello bench"}}}'
LIST='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
lua() { # file body key [extra header]
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '$2'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    echo 'wrk.headers["Accept"] = "application/json, text/event-stream"'
    echo "wrk.headers[\"Authorization\"] = \"Bearer $3\""
    if [[ -n "${4:-}" ]]; then echo "wrk.headers[\"x-bench-answer\"] = \"$4\""; fi
  } >"$1"
}
lua "$WORK/call.lua" "$CALL" demo-reader-key
lua "$WORK/list.lua" "$LIST" demo-admin-key tools-list

# load URL LUA N: about N requests (wrk runs for a time; it is sized from a
# first second's rate), every answer a 2xx.
load() {
  local url=$1 script=$2 n=$3 rate secs
  wrk -t1 -c"$CONNECTIONS" -d1s -s "$script" "$url" >"$WORK/probe.wrk"
  require_all_2xx bench-memory probe "$WORK/probe.wrk"
  rate=$(awk '/^Requests\/sec/ {print int($2)}' "$WORK/probe.wrk")
  secs=$(( n / (rate > 0 ? rate : 1) + 1 ))
  wrk -t1 -c"$CONNECTIONS" -d"${secs}s" -s "$script" "$url" >"$WORK/load.wrk"
  require_all_2xx bench-memory load "$WORK/load.wrk"
  awk '/requests in/ {print $1}' "$WORK/load.wrk"
}

run() { # name [render args...]
  local name=$1; shift
  local listen admin pid start warm after done_calls done_lists
  listen=$(port); admin=$(port)
  "$PY" tests/e2e/harness.py render --template envoy --policy policies/demo.json --wasm "$WASM" \
    --listen "$listen" --admin "$admin" --upstream "$UP_PORT" "$@" >"$WORK/$name.json"
  .venv/bin/envoy -c "$WORK/$name.json" --concurrency 2 --disable-hot-restart -l error \
    >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  "$PY" tests/e2e/harness.py wait-ready --admin "$admin"
  local url="http://127.0.0.1:$listen/mcp"
  start=$(rss_kib "$pid")
  load "$url" "$WORK/call.lua" 2000 >/dev/null
  load "$url" "$WORK/list.lua" 2000 >/dev/null
  warm=$(rss_kib "$pid")
  done_calls=$(load "$url" "$WORK/call.lua" $(( REQUESTS / 2 )))
  done_lists=$(load "$url" "$WORK/list.lua" $(( REQUESTS / 2 )))
  after=$(rss_kib "$pid")
  printf '[bench-memory] %-9s RSS %7d KiB at start, %7d KiB warm, %7d KiB after %d calls + %d lists (%+d KiB since warm)\n' \
    "$name" "$start" "$warm" "$after" "$done_calls" "$done_lists" $(( after - warm ))
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "[bench-memory] Envoy --concurrency 2, wrk -c$CONNECTIONS, ~$REQUESTS requests after a 4,000-request warm-up"
run no-filter --no-filter
run firewall
echo "[bench-memory] wasm size: $(stat -c %s "$WASM") bytes"
