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
