#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run execs this file):
#   setup -> rustfmt -> clippy -> cargo test (native, then as Wasm) -> wasm build -> CLI build
#   -> end-to-end (pytest, two workers; E2E_WORKERS=0 for one process)
# Extra arguments go to pytest, e.g. scripts/test.sh -k jwt
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$SECONDS
step() { printf '\n==> [%ss] %s\n' "$((SECONDS - t0))" "$*"; }

step "setup (scripts/setup.sh)"
scripts/setup.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --features fake-host -- -D warnings"
cargo clippy --workspace --all-targets --features fake-host -- -D warnings

step "cargo test --workspace"
cargo test --workspace

step "cargo test --lib --target wasm32-wasip1   (the unit tests as Wasm under Node's V8, with the module's allocator)"
# A failed test aborts the run there (no unwinding in Wasm); --nocapture so that
# its panic message is printed before the abort.
CARGO_TARGET_WASM32_WASIP1_RUNNER="bash scripts/wasm-test-runner.sh" \
  cargo test --lib --target wasm32-wasip1 -- --test-threads=1 --nocapture

step "cargo build --release --target wasm32-wasip1   (the filter)"
cargo build --release --target wasm32-wasip1
ls -l target/wasm32-wasip1/release/mcp_firewall.wasm

step "cargo build --release -p mcp-firewall-cli"
cargo build --release -p mcp-firewall-cli

step "end-to-end: real Envoy + mcp_firewall.wasm + server-everything + official MCP SDK (pytest tests/e2e)"
set +e
# Two workers, each running whole files (--dist loadfile): a file's tests
# keep the order and the shared fixtures they were written with, and the
# suite's waits (Envoy starts, timeouts, the compose build) overlap. On the
# 2-core machine of the seventeenth session one worker took 1,508 s, two
# 1,008 s. E2E_WORKERS=0 runs it in one process, as before.
.venv/bin/python -m pytest -c tests/e2e/pytest.ini -p no:cacheprovider --durations=10 \
  -n "${E2E_WORKERS:-2}" --dist loadfile tests/e2e "$@"
rc=$?
set -e
# pytest removes each run's directories (tmp_path_retention_policy) but
# leaves its own parent behind: removed when empty, kept with a failed
# test's directory in it.
rmdir "${TMPDIR:-/tmp}/pytest-of-$(id -un)" 2>/dev/null || true
case $rc in
  0) ;;
  5) echo "test.sh: pytest collected no end-to-end test: that is a failure" >&2; rc=1 ;;
  *) echo "test.sh: end-to-end tests failed (pytest exit $rc)" >&2 ;;
esac
step "done (exit $rc)"
exit $rc
