#!/usr/bin/env bash
# Fuzz the parsers, canonicalisers and policy compiler with cargo-fuzz (libFuzzer).
# Not part of CI: run it by hand, e.g. after touching src/json.rs or src/canon.rs.
#
#   scripts/fuzz.sh                   every target, 60 s each, one after the other
#   scripts/fuzz.sh canon 300         one target for 300 s
#   scripts/fuzz.sh regress           replay fuzz/regressions/ and the seed corpus once
#   scripts/fuzz.sh list              the target names
#
# Environment:
#   SANITIZER=address|none   default address. If your toolchain refuses
#                            -Zsanitizer=address, use none (panics and
#                            assertions are still caught, memory errors in
#                            unsafe code are not; the core has no unsafe).
#   FUZZ_ARGS="..."          extra libFuzzer flags, e.g. "-max_len=512".
#
# Nightly: cargo-fuzz passes nightly-only rustc flags (-Zsanitizer, sancov).
# scripts/setup.sh installs stable Rust only, so we set RUSTC_BOOTSTRAP=1, which
# lets stable rustc accept them (checked with rustc 1.95). With a nightly
# toolchain you can drop it and run `cargo +nightly fuzz run <target> -j 1 --
# -max_total_time=120` yourself (docs/running.md, "Fuzzing").
#
# Needs cargo-fuzz:  cargo install cargo-fuzz --locked
#
# Runs one job in one worker (-jobs=1 -workers=1): the machines here have two
# cores shared with other work. libFuzzer then writes the run's output to a log
# file instead of the terminal; we print its summary and where the log is.
#
# What a run leaves behind (all under fuzz/, all git-ignored):
#   fuzz/target/corpus-work/<target>/  inputs libFuzzer found (the committed
#                                      seeds in fuzz/corpus/<target>/ stay small)
#   fuzz/target/logs/<target>.log      the full libFuzzer output
#   fuzz/artifacts/<target>/           crash-* / oom-* / timeout-* inputs
# A crash: minimise it (`RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> <file>`),
# copy it to fuzz/regressions/<target>/ with a name that says what it breaks,
# and fix the bug; `scripts/fuzz.sh regress` then proves the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export RUSTC_BOOTSTRAP=1
sanitizer=${SANITIZER:-address}
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

mapfile -t all_targets < <(cargo fuzz list --fuzz-dir fuzz)

usage() {
  sed -n '2,9p' "$0" >&2
  exit 2
}

build() {
  cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" "$@"
}

run_one() {
  local t=$1 secs=$2
  local work=fuzz/target/corpus-work/$t log_dir=fuzz/target/logs
  mkdir -p "$work" "$log_dir" "fuzz/corpus/$t"
  echo "==> $t for ${secs}s (sanitizer: $sanitizer)"
  # The scratch corpus comes first: libFuzzer writes new inputs to the first
  # directory only, so the committed seeds are read but never grown.
  local rc=0
  (cd "$log_dir" && cargo fuzz run --fuzz-dir "$root/fuzz" --sanitizer "$sanitizer" "$t" \
    "$root/$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 "${extra[@]}") >/dev/null 2>&1 || rc=$?
  # With -jobs libFuzzer logs to fuzz-<job>.log in the working directory.
  mv -f "$log_dir/fuzz-0.log" "$log_dir/$t.log" 2>/dev/null || true
  if grep -q '^Done [0-9]* runs' "$log_dir/$t.log" 2>/dev/null; then
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs|stat::number_of_executed_units)' "$log_dir/$t.log" || true
  fi
  if [ "$rc" -ne 0 ] || grep -qE 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log_dir/$t.log" 2>/dev/null; then
    echo "fuzz.sh: $t FAILED (exit $rc); see $log_dir/$t.log and fuzz/artifacts/$t/" >&2
    grep -m1 -A4 -E 'panicked at|ERROR: ' "$log_dir/$t.log" >&2 || true
    return 1
  fi
}

# Run every saved regression input and seed once: no mutation, exit non-zero on
# the first input that still breaks an invariant.
regress() {
  local failed=0
  for t in "${all_targets[@]}"; do
    local inputs=()
    for d in "fuzz/regressions/$t" "fuzz/corpus/$t"; do
      [ -d "$d" ] && while IFS= read -r -d '' f; do inputs+=("$root/$f"); done < <(find "$d" -type f -print0)
    done
    [ ${#inputs[@]} -eq 0 ] && continue
    printf '==> %s: %d inputs ... ' "$t" "${#inputs[@]}"
    if cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "${inputs[@]}" -- -runs=1 \
      >"fuzz/target/regress-$t.log" 2>&1; then
      echo ok
    else
      echo "FAILED (fuzz/target/regress-$t.log)"
      grep -m1 -A4 -E 'panicked at|ERROR: |Running: ' "fuzz/target/regress-$t.log" || true
      failed=1
    fi
  done
  return $failed
}

case "${1:-all}" in
  -h | --help) usage ;;
  list) printf '%s\n' "${all_targets[@]}" ;;
  regress) build && regress ;;
  all)
    secs=${2:-60}
    build
    status=0
    for t in "${all_targets[@]}"; do run_one "$t" "$secs" || status=1; done
    exit $status
    ;;
  *)
    t=$1
    printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t" || {
      echo "fuzz.sh: unknown target '$t'; targets: ${all_targets[*]}" >&2
      exit 2
    }
    build "$t"
    run_one "$t" "${2:-60}"
    ;;
esac
