#!/usr/bin/env bash
# cargo's runner for the library's unit tests built as Wasm (scripts/test.sh):
# the test binary runs under Node's V8 and WASI (scripts/profile-wasm.mjs).
# Node 20 crashed (SIGSEGV, SIGBUS in its interpreter with a smashed stack)
# around the end of the whole unit suite in three runs of three on 2026-12-06,
# CI's among them; with --single-threaded (no background compiler or GC
# threads) three runs of three passed. And should Node still crash after the
# program has stated its exit code, that code (written to a file first) is
# the run's: a failed test still fails it; a crash before leaves no code, and
# the run fails with Node's status.
set -u
code_file=$(mktemp -t mcp-firewall-wasm-exit.XXXXXX)
trap 'rm -f "$code_file"' EXIT
MCP_FIREWALL_WASM_EXIT_FILE="$code_file" node --no-liftoff --single-threaded \
  "$(dirname "$0")/profile-wasm.mjs" "$@"
node_status=$?
code=$(cat "$code_file")
if [[ -z $code ]]; then
  exit "$node_status"
fi
if [[ $node_status != "$code" ]]; then
  echo "[wasm-test-runner] the program exited $code; Node then ended with status $node_status in its teardown" >&2
fi
exit "$code"
