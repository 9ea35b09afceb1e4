#!/usr/bin/env bash
# Instructions and simulated cache misses per exchange of the filter's core as
# Wasm under V8, the engine Envoy runs: a count that does not move with the
# machine's speed, for comparing two builds on a machine whose timings drift
# by more than the change (docs/performance.md, *Counted, not timed*). Not a
# test or a benchmark with a verdict.
#
#   CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --target wasm32-wasip1 \
#     --features fake-host --example profile_exchange
#   scripts/profile-callgrind.sh target/wasm32-wasip1/release/examples/profile_exchange.wasm \
#     [stateless] [4k] [audit] [metered] [list]
#
# It runs `node --no-liftoff --experimental-wasm-relaxed-simd scripts/profile-wasm.mjs WASM N ARGS` under
# valgrind's callgrind twice, side by side: N = BASE and N = BASE + COUNT
# exchanges, and divides the difference by COUNT, so Node's start, V8's
# compiling and the policy's compile mostly cancel out: the whole exchange's
# figure still moved by up to ~9,000 instructions between runs of one build,
# while BY_FUNCTION's sum over the module's own functions repeated within a
# few instructions. Compare builds by that sum. The caches
# simulated are one core of the machine it was written on (L1i 32 KiB, L1d
# 48 KiB, L2 2 MiB as the last level); the figures compare builds, they are not
# that CPU's. About two minutes; needs valgrind (`apt-get install valgrind`).
# BY_FUNCTION=1 adds the costs per Wasm function (V8's --log-code names where
# it put each one; scripts/callgrind_by_function.py), TOP=N of them, ranked by
# L1i misses, or by instructions with SORT=instructions. Calls out of V8's code
# (`memory.copy`, WASI calls) are in the whole exchange's figure, not in that sum.
# Run from the repository root (the example reads policies/demo.json).
set -euo pipefail

wasm=${1:?usage: scripts/profile-callgrind.sh PROFILE_EXCHANGE.wasm [example args]}
shift
base=${BASE:-100}
count=${COUNT:-6000}
command -v valgrind >/dev/null || {
  echo "profile-callgrind: valgrind is not installed (apt-get install valgrind)" >&2
  exit 2
}
[[ -f policies/demo.json ]] || {
  echo "profile-callgrind: run from the repository root (policies/demo.json)" >&2
  exit 2
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

run() {
  local out=/dev/null detail=() v8=()
  if [[ -n ${BY_FUNCTION:-} ]]; then
    out=$scratch/cg.$1
    detail=(--dump-instr=yes --compress-pos=no --compress-strings=no)
    v8=(--log-code "--logfile=$scratch/v8.$1" --no-logfile-per-isolate)
  fi
  # The summary line: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
  valgrind --tool=callgrind --cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 \
    --LL=2097152,16,64 --smc-check=all-non-file --callgrind-out-file="$out" "${detail[@]}" \
    node --no-liftoff --experimental-wasm-relaxed-simd "${v8[@]}" scripts/profile-wasm.mjs "$wasm" "$1" "${@:2}" \
    >"$scratch/out.$1" 2>&1
  grep -m1 'Collected :' "$scratch/out.$1" | sed 's/.*Collected : //' >"$scratch/sum.$1"
}
run "$base" "$@" &
first=$!
run "$((base + count))" "$@" &
second=$!
wait "$first" || { cat "$scratch/out.$base" >&2; exit 1; }
wait "$second" || { cat "$scratch/out.$((base + count))" >&2; exit 1; }
read -r -a a <"$scratch/sum.$base"
read -r -a b <"$scratch/sum.$((base + count))"
[[ ${#a[@]} -eq 9 && ${#b[@]} -eq 9 ]] || {
  echo "profile-callgrind: no callgrind summary (see valgrind's output above)" >&2
  cat "$scratch/out.$base" >&2
  exit 1
}
per() { echo $(((b[$1] - a[$1]) / count)); }
echo "$wasm $*: per exchange, over $count exchanges"
echo "  instructions   $(per 0)"
echo "  data reads     $(per 1)   writes $(per 2)"
echo "  L1i misses     $(per 3)"
echo "  L1d misses     $(( (b[4] + b[5] - a[4] - a[5]) / count ))"
echo "  L2 misses      code $(( (b[6] - a[6]) / count ))   data $(( (b[7] + b[8] - a[7] - a[8]) / count ))"
if [[ -n ${BY_FUNCTION:-} ]]; then
  python3 scripts/callgrind_by_function.py "$count" "$scratch/cg.$base" "$scratch/v8.$base" \
    "$scratch/cg.$((base + count))" "$scratch/v8.$((base + count))" "${TOP:-40}"
fi
