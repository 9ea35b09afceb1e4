#!/usr/bin/env bash
# Instructions per request of the whole Envoy process (its code, V8, the module's
# compiled code; user space, both threads), counted under valgrind, for the rows and
# payloads of scripts/bench.sh. A count does not move with the machine's speed or with
# what else runs, so two builds' difference of ~1% reads in one run, where Envoy CPU
# needs many alternating rounds (docs/performance.md, *Counted in Envoy*). Instructions
# are not time: a request's cache misses are not in them. Not a test: it prints figures,
# and asserts only that every request was answered by the upstream.
#
#   scripts/count-envoy.sh                          # rows baseline native noop-wasm rules, call-109
#   ROWS="rules" PAYLOADS="call-109 call-4k" scripts/count-envoy.sh
#   WASM=/tmp/old.wasm ROWS=rules scripts/count-envoy.sh   # another build in the rules row
#   ENVOY_BIN=/path/to/envoy ...                    # another Envoy binary
#   KEEP=DIR ...                                    # keep each window's callgrind dump in DIR
#   CACHE=1 ...                                     # also simulated cache misses per request
#
# Rows: baseline native noop-wasm flow-wasm rules when audit metered (as scripts/bench.sh:
# noop-wasm and flow-wasm need their builds in target/bench-noop and target/bench-flow,
# audit the CLI's collector in target/release). Payloads: call-109 call-4k list-50.
# Each Envoy (--concurrency 1) runs under callgrind with instrumentation off; after W
# warm-up requests (one keep-alive connection, one at a time) it is counted over N
# requests and again over 2N, and the figure is (2N - N) / N, so what a window costs
# once (the dump) cancels out. An audit row's window ends when its events are delivered.
# About 30 s a row and payload (CACHE=1: about twice that). Needs valgrind (apt-get
# install valgrind). CACHE=1 simulates one core's caches as scripts/profile-callgrind.sh
# does (L1i 32 KiB, L1d 48 KiB, last level 2 MiB) for the whole process, and prints per
# request the first-level instruction misses and the last-level misses (code and data):
# a count of where a request waits for memory, which instructions leave out; the model
# is not the machine's (one core, no prefetcher, both threads in one cache).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

ROWS=${ROWS:-baseline native noop-wasm rules}
PAYLOADS=${PAYLOADS:-call-109}
N=${N:-400}
W=${W:-100}
PY=.venv/bin/python
WASM=${WASM:-target/wasm32-wasip1/release/mcp_firewall.wasm}
NOOP_WASM=${NOOP_WASM:-target/bench-noop/wasm32-wasip1/release/mcp_firewall.wasm}
FLOW_WASM=${FLOW_WASM:-target/bench-flow/wasm32-wasip1/release/mcp_firewall.wasm}
CLI=${CLI:-target/release/mcp-firewall}
command -v valgrind >/dev/null || { echo "[count-envoy] valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[[ -x .venv/bin/python ]] || { echo "[count-envoy] run scripts/setup.sh first" >&2; exit 2; }
# .venv/bin/envoy is a Python launcher: valgrind must run the binary itself.
# ENVOY_BIN= counts another Envoy binary (an older release's, for one).
ENVOY=${ENVOY_BIN:-$("$PY" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')}
[[ -x $ENVOY ]] || { echo "[count-envoy] no Envoy binary at $ENVOY" >&2; exit 2; }

WORK="$(mktemp -d -t mcp-firewall-count.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
"$PY" scripts/bench_payloads.py "$WORK" "${POLICY:-policies/demo.json}"

start_upstream --list-tools 50
if [[ " $ROWS " == *" audit "* ]]; then
  [[ -x $CLI ]] || { echo "[count-envoy] the audit row needs $CLI (cargo build --release -p mcp-firewall-cli)" >&2; exit 2; }
  COL_PORT=$(port)
  "$CLI" collector --listen "127.0.0.1:$COL_PORT" --out "$WORK/audit.ndjson" >"$WORK/collector.log" 2>&1 &
  PIDS+=($!)
  "$PY" tests/e2e/harness.py wait-port --port "$COL_PORT"
fi

echo "[count-envoy] $(git rev-parse --short HEAD 2>/dev/null || echo '?'), N=$N (and 2N) after $W warm-up requests, Envoy --concurrency 1 under callgrind"
for row in $ROWS; do
  args=()
  policy=$WORK/rules.policy.json
  case $row in
    baseline) args=(--no-filter) ;;
    native) args=(--native-mcp) ;;
    noop-wasm) args=(--wasm "$NOOP_WASM") ;;
    flow-wasm) args=(--wasm "$FLOW_WASM") ;;
    rules) ;;
    when | audit | metered) policy=$WORK/$row.policy.json ;;
    *) echo "[count-envoy] unknown row $row" >&2; exit 2 ;;
  esac
  for f in "$WASM" "${args[@]:1}"; do
    [[ -e $f ]] || { echo "[count-envoy] missing $f (build it first)" >&2; exit 2; }
  done
  listen=$(port); admin=$(port)
  "$PY" tests/e2e/harness.py render --template envoy --policy "$policy" --wasm "$WASM" \
    --listen "$listen" --admin "$admin" --upstream "$UP_PORT" "${args[@]}" >"$WORK/$row.json"
  if [[ $row == audit ]]; then
    add_audit_collector "$WORK/$row.json" "$COL_PORT"
  fi
  cache=(--cache-sim=no)
  if [[ -n ${CACHE:-} ]]; then
    cache=(--cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 --LL=2097152,16,64)
  fi
  valgrind --tool=callgrind "${cache[@]}" --instr-atstart=no --smc-check=all-non-file \
    --callgrind-out-file="$WORK/$row.cg" "$ENVOY" -c "$WORK/$row.json" --concurrency 1 \
    --disable-hot-restart -l error >"$WORK/$row.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  "$PY" tests/e2e/harness.py wait-ready --admin "$admin" --timeout 300
  for payload in $PAYLOADS; do
    "$PY" - "$WORK" "$row" "$payload" "$listen" "$admin" "$pid" "$N" "$W" <<'EOF'
import glob, http.client, os, shutil, subprocess, sys, time, urllib.request
work, row, payload, listen, admin, pid, n, w = sys.argv[1:9]
n, w = int(n), int(w)
key = {"call-109": "demo-reader-key", "call-4k": "demo-reader-key", "list-50": "demo-admin-key"}
expect = {"call-109": b"Echo: hello bench", "call-4k": b"Echo: hello bench",
          "list-50": b'"name":"export_milestones"'}
if payload not in key:
    sys.exit(f"[count-envoy] unknown payload {payload} (call-109 call-4k list-50)")
body = open(f"{work}/{payload}.body", "rb").read()
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "Authorization": f"Bearer {key[payload]}"}
if payload == "list-50":
    headers["x-bench-answer"] = "tools-list"
conn = http.client.HTTPConnection("127.0.0.1", int(listen), timeout=120)

def send(count):
    for _ in range(count):
        conn.request("POST", "/mcp", body=body, headers=headers)
        r = conn.getresponse()
        answer = r.read()
        if r.status != 200 or expect[payload] not in answer:
            sys.exit(f"[count-envoy] {row}/{payload}: not answered by the upstream: {r.status} {answer[:500]!r}")

def sent():
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=audit.sent$") as r:
        lines = r.read().decode().split()
    return lines[-1] if lines else ""

def control(*a):
    subprocess.run(["callgrind_control", *a, pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def delivered():
    # Until audit.sent stops moving: the events sent so far are delivered.
    last = None
    for _ in range(60):
        time.sleep(0.5)
        now = sent()
        if now == last:
            break
        last = now

def counted(count):
    before = set(glob.glob(f"{work}/{row}.cg*"))
    control("-z")
    control("-i", "on")
    send(count)
    if row == "audit":
        # The window holds the delivery of its own events.
        delivered()
    control("-i", "off")
    control("-d")
    for _ in range(100):
        new = set(glob.glob(f"{work}/{row}.cg*")) - before
        if new:
            break
        time.sleep(0.1)
    (dump,) = new
    if os.environ.get("KEEP"):
        shutil.copy(dump, f"{os.environ['KEEP']}/{row}-{payload}-{count}.cg")
    for _ in range(100):
        text = open(dump).read()
        # Written last: the file is whole once it is there.
        totals = [l for l in text.splitlines() if l.startswith("totals:")]
        if totals:
            # Ir, then with the cache simulated: Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
            return [int(x) for x in totals[-1].split()[1:]]
        time.sleep(0.1)
    sys.exit(f"[count-envoy] no total in {dump}")

send(w)
if row == "audit":
    # The warm-up's events are delivered outside the windows.
    delivered()
once, twice = counted(n), counted(2 * n)
per = [(b - a) / n for a, b in zip(once, twice)]
misses = ""
if len(per) >= 9:
    misses = f"  L1i misses {per[3]:8,.0f}  last-level misses code {per[6]:6,.0f} data {per[7] + per[8]:6,.0f}"
print(f"[count-envoy] {payload:8} {row:10} {per[0]:12,.0f} instructions/request  (window of {n}: {once[0] / n:,.0f}){misses}")
with open(f"{work}/results.tsv", "a") as f:
    f.write(f"{payload}\t{row}\t{per[0]:.0f}\n")
EOF
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # Forgotten once reaped: cleanup must not signal a number the system may reuse.
  kept=()
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
done

"$PY" - "$WORK/results.tsv" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    payload, row, per = line.split("\t")
    rows.setdefault(payload, {})[row] = float(per)
print("\n| payload | row | instructions/request | x native | x no filter |\n|---|---|---:|---:|---:|")
for payload, by_row in rows.items():
    for row, per in by_row.items():
        nat = by_row.get("native")
        base = by_row.get("baseline")
        ratio = lambda d: f"{per / d:.3f}" if d else "-"
        print(f"| {payload} | {row} | {per:,.0f} | {ratio(nat)} | {ratio(base)} |")
EOF
