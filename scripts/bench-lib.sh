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

# require_answered TAG NAME PORT BODY: the figure only means something if the
# benchmark call is allowed and answered by the upstream (demo reader's key).
require_answered() {
  local answer
  answer=$(curl -s -X POST "http://127.0.0.1:$3/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H 'Authorization: Bearer demo-reader-key' -d "$4")
  if [[ "$answer" != *'Echo: hello bench'* ]]; then
    echo "[$1] $2: the benchmark request is not answered by the upstream: $answer" >&2
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
