#!/usr/bin/env bash
# DLP scanning throughput, natively, on deterministic JSON argument payloads
# (1 KB, 64 KB, 1 MB; clean, trigger-heavy and dirty; the generator is described
# in cli/src/scan.rs and docs/dlp.md). Not a test: numbers go to docs/dlp.md.
# Inspect a payload: target/release/mcp-firewall bench-dlp --dump clean 4096
#
# Then the adversarial table: every detector's trigger repeated back to back
# (the units are listed by src/dlp/adversarial.rs: each rule's trigger literals
# in both cases, trigger + token bytes, and the personal-data anchors), as
# arguments (request) and as a tool result (response), against the clean
# payload of the same size; one line per size and direction with the slowest
# payload, in MB per CPU second. ADVERSARIAL=0 skips it; ALL=1 prints every
# payload's line (about 800 per size and direction).
#
#   scripts/bench-dlp.sh            # the shipped release profile (Cargo.toml, as for the wasm)
#   OPT3=1 scripts/bench-dlp.sh     # force opt-level 3 in a separate target dir (the shipped
#                                   # profile is 3 too since 2026-11-22; use CARGO_PROFILE_RELEASE_OPT_LEVEL=z to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_CASE="${SECONDS_PER_CASE:-1}"
if [[ "${OPT3:-0}" == "1" ]]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
  TARGET_DIR="${TARGET_DIR:-target/opt3}"
else
  TARGET_DIR="${TARGET_DIR:-target}"
fi
cargo build --quiet --release -p mcp-firewall-cli --target-dir "$TARGET_DIR"
# The label reports the opt-level actually built: the override if set, else
# what [profile.release] in Cargo.toml ships.
SHIPPED_OPT="$(awk '/^\[profile\.release\]/{p=1; next} /^\[/{p=0} p && $1 == "opt-level" {gsub(/"/, "", $3); print $3}' Cargo.toml)"
echo "# $(uname -m), $(nproc) cores, opt-level ${CARGO_PROFILE_RELEASE_OPT_LEVEL:-${SHIPPED_OPT:-?} (shipped profile)}"
"$TARGET_DIR/release/mcp-firewall" bench-dlp --seconds "$SECONDS_PER_CASE"
if [[ "${ADVERSARIAL:-1}" == "1" ]]; then
  echo
  echo "# adversarial: each detector's trigger repeated, the slowest payload per size and direction (MB per CPU second)"
  ALL_FLAG=()
  if [[ "${ALL:-0}" == "1" ]]; then ALL_FLAG=(--all); fi
  "$TARGET_DIR/release/mcp-firewall" bench-dlp --adversarial --seconds "${ADVERSARIAL_SECONDS:-0.02}" "${ALL_FLAG[@]}"
fi
