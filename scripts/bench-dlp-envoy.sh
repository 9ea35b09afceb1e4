#!/usr/bin/env bash
# Latency DLP adds in Envoy: a 64 KB tools/call of realistic clean text through
# Envoy + mcp-firewall, with request scanning on vs off. Not a test: it prints
# figures (they go to docs/dlp.md); it asserts only that every answer was a 2xx
# from the upstream and that the body is clean (so "block" scans it all and
# forwards it, which is the cost a clean call pays).
#
#   scripts/bench-dlp-envoy.sh
#   DURATION=20 ROUNDS=5 CONNECTIONS=1 scripts/bench-dlp-envoy.sh
#   SKIP_BUILD=1 scripts/bench-dlp-envoy.sh
#
# Same run, same machine, loopback only:
#   load      wrk (1 thread, CONNECTIONS connections, 1 by default so the figure is
#             per-request latency, not queueing), a lua script posting the body
#   upstream  an Envoy answering every request itself with a fixed JSON-RPC result
#             (direct_response, as scripts/bench.sh): the filter's cost is not hidden
#             behind a Node server
#   dlp-on    envoy/envoy.yaml, policies/demo.json with dlp {requests: block}
#             (responses keep their default, redact: the result is ~70 bytes)
#   dlp-off   the same with dlp {requests: off, responses: off}
#   Both policies raise limits.max_request_bytes to 1 MiB (Envoy's own buffer limit).
# The two sides alternate ROUNDS times; the medians of their p50 and p99 are reported.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-1}
WARMUP=${WARMUP:-2}
BODY_KB=${BODY_KB:-64}
PY=.venv/bin/python
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ensure_wrk bench-dlp-envoy
scripts/setup.sh >/dev/null
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  cargo build --quiet --release --target wasm32-wasip1
  cargo build --quiet --release -p mcp-firewall-cli
fi

WORK="$(mktemp -d -t mcp-firewall-bench-dlp.XXXXXX)"
port() { "$PY" tests/e2e/harness.py free-port; }
UP_PORT=$(port); UP_ADMIN=$(port)

# ---- upstream: Envoy answering a fixed JSON-RPC result ------------------------------
"$PY" tests/e2e/harness.py render-upstream --port "$UP_PORT" --admin "$UP_ADMIN" --text "Echo: received" >"$WORK/upstream.json"
.venv/bin/envoy -c "$WORK/upstream.json" --concurrency 1 --disable-hot-restart -l error \
  >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$PY" tests/e2e/harness.py wait-ready --admin "$UP_ADMIN"

# ---- the body: ~64 KB of realistic clean text, deterministic --------------------------
"$PY" - "$BODY_KB" "$WORK/body.json" "$WORK/text.jsonl" <<'EOF'
import json, sys
kb, out, scan_in = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# What an agent sends a tool: prose about a change, code, log lines, a diff, ids.
# The trigger words of the secret rules (token, key, password, secret, auth) appear
# as they do in real engineering text, with no value that is a secret.
parts = [
  "The deploy pipeline failed on the staging cluster after the cache layer was upgraded. "
  "The token bucket that rate limits the API gateway was refilled too slowly, so requests "
  "queued behind the auth middleware and the health check timed out after thirty seconds. ",
  "We rotate the signing key every ninety days; the next rotation is scheduled for the first "
  "Monday of the quarter and the runbook lists who approves it. No password is stored in the "
  "repository: the service reads its secret from the vault at start-up. ",
  "def retry(fn, attempts=5, backoff=0.2):\n    for i in range(attempts):\n        try:\n"
  "            return fn()\n        except TimeoutError:\n            time.sleep(backoff * 2 ** i)\n"
  "    raise RuntimeError('gave up after %d attempts' % attempts)\n",
  "2026-11-21T10:42:17Z INFO  worker-3 processed batch 8812 in 412 ms (1024 items, 0 errors)\n"
  "2026-11-21T10:42:18Z WARN  worker-1 slow upstream: p99 1.8 s over the last 5 minutes\n",
  "--- a/src/cache.rs\n+++ b/src/cache.rs\n@@ -41,7 +41,7 @@ impl Cache {\n"
  "-        let ttl = Duration::from_secs(30);\n+        let ttl = Duration::from_secs(300);\n",
  "Commit 3f2a9c1d0b8e7f6a5c4d3e2f1a0b9c8d7e6f5a4b fixed issue #4711; the release notes mention "
  "request id 7c9e6679-7425-40de-944b-e07fc1f90ae7 and build 2026.11.21-rc2. Prices went from "
  "19.99 to 24.50 EUR for 1,250 units; the p50 latency is 12.5 ms. ",
]
text, i = "", 0
while len(text.encode()) < kb * 1024 - 200:
    text += parts[i % len(parts)]
    i += 1
body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": text}}}
data = json.dumps(body, separators=(",", ":"))
open(out, "w").write(data)
open(scan_in, "w").write(json.dumps({"id": "body", "text": text}) + "\n")
print(f"[bench-dlp-envoy] body: {len(data.encode())} bytes", file=sys.stderr)
EOF
findings=$(target/release/mcp-firewall scan <"$WORK/text.jsonl")
if [[ "$findings" != *'"findings":[]'* ]]; then
  echo "[bench-dlp-envoy] the benchmark text is not clean for the scanner: $findings" >&2
  exit 1
fi

cat >"$WORK/post.lua" <<EOF
local f = assert(io.open("$WORK/body.json", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer demo-reader-key"
EOF

# ---- the two Envoys -------------------------------------------------------------------
declare -A LISTEN ADMIN
start_side() { # name dlp-json
  local name=$1 dlp=$2 listen admin
  listen=$(port); admin=$(port)
  "$PY" - "$dlp" >"$WORK/$name.policy.json" <<'EOF'
import json, sys
p = json.load(open("policies/demo.json"))
p["dlp"] = json.loads(sys.argv[1])
p["limits"]["max_request_bytes"] = 1048576
print(json.dumps(p))
EOF
  "$PY" tests/e2e/harness.py render --template envoy --policy "$WORK/$name.policy.json" \
    --listen "$listen" --admin "$admin" --upstream "$UP_PORT" >"$WORK/$name.json"
  .venv/bin/envoy -c "$WORK/$name.json" --concurrency 1 --disable-hot-restart -l error \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  "$PY" tests/e2e/harness.py wait-ready --admin "$admin"
  LISTEN[$name]=$listen; ADMIN[$name]=$admin
  local answer
  answer=$(curl -s -X POST "http://127.0.0.1:$listen/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H 'Authorization: Bearer demo-reader-key' \
    --data-binary @"$WORK/body.json")
  if [[ "$answer" != *'Echo: received'* ]]; then
    echo "[bench-dlp-envoy] $name: the 64 KB call is not answered by the upstream: ${answer:0:300}" >&2
    exit 1
  fi
}
start_side dlp-on '{"requests": "block"}'
start_side dlp-off '{"requests": "off", "responses": "off"}'

run_once() { # name round
  local name=$1 round=$2 out="$WORK/$1.$2.wrk"
  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/post.lua" "http://127.0.0.1:${LISTEN[$name]}/mcp" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:${LISTEN[$name]}/mcp" >"$out"
  if grep -q "Non-2xx\|Socket errors" "$out"; then
    echo "[bench-dlp-envoy] $name: errors under load:" >&2
    cat "$out" >&2
    exit 1
  fi
  printf '[bench-dlp-envoy] round %s %-8s %9s req/s  p50 %8s  p99 %8s\n' "$round" "$name" \
    "$(awk '/^Requests\/sec/ {print $2}' "$out")" "$(awk '$1=="50%" {print $2}' "$out")" \
    "$(awk '$1=="99%" {print $2}' "$out")"
}

echo "[bench-dlp-envoy] wrk -t1 -c$CONNECTIONS -d${DURATION}s x $ROUNDS rounds, Envoys --concurrency 1," \
     "$(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  run_once dlp-on "$r"
  run_once dlp-off "$r"
done

"$PY" - "$WORK" "$ROUNDS" <<'EOF'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
unit = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}
def lat(text, pct):
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * unit[m.group(2)]
res = {}
for side in ("dlp-on", "dlp-off"):
    runs = [open(f"{work}/{side}.{r}.wrk").read() for r in range(1, rounds + 1)]
    res[side] = {p: statistics.median(lat(t, p) for t in runs) for p in (50, 99)}
    res[side]["rps"] = statistics.median(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)) for t in runs)
for side, v in res.items():
    print(f"[bench-dlp-envoy] {side:8} median p50 {v[50]/1000:7.3f} ms  p99 {v[99]/1000:7.3f} ms  {v['rps']:8.1f} req/s")
d50, d99 = res["dlp-on"][50] - res["dlp-off"][50], res["dlp-on"][99] - res["dlp-off"][99]
print(f"[bench-dlp-envoy] added by DLP: p50 {d50/1000:+.3f} ms, p99 {d99/1000:+.3f} ms per request (target <= 1 ms)")
EOF
