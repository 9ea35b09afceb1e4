#!/usr/bin/env bash
# cargo's runner for the library's unit tests built as Wasm (scripts/test.sh):
# the test binary runs under Node's V8 and WASI (scripts/profile-wasm.mjs).
# Node 20 crashed (SIGSEGV, SIGBUS in its interpreter with a smashed stack)
# around the end of the whole unit suite in three runs of three on 2026-12-06,
# CI's among them; with --single-threaded (no background compiler or GC
# threads) seven runs of seven passed. Should Node still crash:
# - after the program has stated its exit code (written to a file first),
#   that code is the run's: a failed test still fails it;
# - before, killed by a signal, the whole binary runs once more, and that
#   second run's verdict stands. A failed test is never retried: it ends
#   in a recorded code or a Wasm trap (Node exits 1), not in a signal.
set -u
code_file=$(mktemp -t mcp-firewall-wasm-exit.XXXXXX)
trap 'rm -f "$code_file"' EXIT
run() {
  : >"$code_file"
  MCP_FIREWALL_WASM_EXIT_FILE="$code_file" node --no-liftoff --single-threaded --experimental-wasm-relaxed-simd \
    "$(dirname "$0")/profile-wasm.mjs" "$@"
}
run "$@"
node_status=$?
code=$(cat "$code_file")
if [[ -z $code && $node_status -gt 128 ]]; then
  echo "[wasm-test-runner] Node was killed by signal $((node_status - 128)) before the program ended; running it once more" >&2
  run "$@"
  node_status=$?
  code=$(cat "$code_file")
fi
if [[ -z $code ]]; then
  exit "$node_status"
fi
if [[ $node_status != "$code" ]]; then
  echo "[wasm-test-runner] the program exited $code; Node then ended with status $node_status in its teardown" >&2
fi
exit "$code"
