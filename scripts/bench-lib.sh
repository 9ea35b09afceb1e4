# Shared by the benchmark scripts (sourced, not run): process bookkeeping,
# cleanup on exit or Ctrl-C, and wrk installed on demand.
#   PIDS+=($!)   after starting a background process; WORK: a temp dir, removed at exit.
PIDS=()
WORK=""

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "$WORK" ]] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ensure_wrk TAG: install Debian's wrk when it is missing.
ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    echo "[$1] apt-get install wrk"
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
}

# require_answered TAG NAME PORT BODY [EXPECT [KEY [CURL_ARGS...]]]: the figure only
# means something if the benchmark call is allowed and answered by the upstream.
# BODY: the JSON itself, or @file. EXPECT: a substring of the answer (default: the
# fast upstream's echo text). KEY: the API key (default: the demo's reader).
require_answered() {
  local tag=$1 name=$2 port=$3 body=$4 expect="${5:-Echo: hello bench}" key="${6:-demo-reader-key}"
  shift $(($# < 6 ? $# : 6))
  local answer
  answer=$(curl -s -X POST "http://127.0.0.1:$port/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Authorization: Bearer $key" "$@" \
    --data-binary "$body")
  if [[ "$answer" != *"$expect"* ]]; then
    echo "[$tag] $name: the benchmark request is not answered by the upstream: ${answer:0:2000}" >&2
    exit 1
  fi
}

# require_all_2xx TAG NAME WRK_OUTPUT: every answer under load was a 2xx.
require_all_2xx() {
  if grep -q "Non-2xx" "$3"; then
    echo "[$1] $2: non-2xx answers under load:" >&2
    cat "$3" >&2
    exit 1
  fi
}

# start_upstream [ARGS...]: the benchmarks' upstream, an Envoy answering every request
# itself (tests/e2e/harness.py render-upstream ARGS), on UP_PORT (admin UP_ADMIN), in
# PIDS. Needs PY and WORK.
start_upstream() {
  UP_PORT=$("$PY" tests/e2e/harness.py free-port)
  UP_ADMIN=$("$PY" tests/e2e/harness.py free-port)
  "$PY" tests/e2e/harness.py render-upstream --port "$UP_PORT" --admin "$UP_ADMIN" "$@" \
    >"$WORK/upstream.json"
  .venv/bin/envoy -c "$WORK/upstream.json" --concurrency 1 --disable-hot-restart -l error \
    >"$WORK/upstream.log" 2>&1 &
  PIDS+=($!)
  "$PY" tests/e2e/harness.py wait-ready --admin "$UP_ADMIN"
}

# add_audit_collector CONFIG PORT: the cluster `audit_collector` (the collector on
# PORT, loopback) added to the rendered Envoy config CONFIG, for an audit row.
add_audit_collector() {
  "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
sys.path.insert(0, "tests/e2e")
from harness import loopback_cluster
path, port = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(path))
cfg["static_resources"]["clusters"].append(loopback_cluster("audit_collector", port))
json.dump(cfg, open(path, "w"), indent=1)
PYEOF
}
