#!/usr/bin/env bash
# The approval service with 1,000 pending requests: how long the approvers'
# page and the filter's API take. Not a test: it prints figures, asserts
# only that every answer had the expected status.
#
#   scripts/bench-approvals.sh                 # 1,000 pending, SQLite in a temp dir
#   PENDING=5000 PAGE_LOADS=50 scripts/bench-approvals.sh
#   SKIP_BUILD=1 scripts/bench-approvals.sh    # measure what is already built
#
# One client on loopback, one request at a time over a kept-alive connection
# (http.client), so each figure is the service's latency, not a queue's.
# The page is rendered with every pending request on it (as an approver sees it).
set -euo pipefail
cd "$(dirname "$0")/.."

PENDING=${PENDING:-1000}
PAGE_LOADS=${PAGE_LOADS:-30}
CLI=target/release/mcp-firewall
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p mcp-firewall-cli >&2
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

filter_token=bench-filter-token
approver_token=bench-approver-token
cat > "$work/approvals.json" <<JSON
{"storage": "sqlite:$work/approvals.db",
 "filter_tokens_sha256": ["$(printf %s "$filter_token" | sha256sum | cut -d' ' -f1)"],
 "approvers": [{"subject": "alice@example.com",
                "token_sha256": "$(printf %s "$approver_token" | sha256sum | cut -d' ' -f1)"}],
 "cookie_secure": false}
JSON
"$CLI" approvals serve --config "$work/approvals.json" --listen 127.0.0.1:0 > "$work/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.05; done
addr=$(grep -o '127.0.0.1:[0-9]*' "$work/out" | head -1)
[ -n "$addr" ] || { cat "$work/out" >&2; exit 1; }
echo "service: $("$CLI" --version | head -1), SQLite, $(nproc) cores, listening on $addr"

python3 - "$addr" "$PENDING" "$PAGE_LOADS" "$filter_token" "$approver_token" <<'PY'
import hashlib, http.client, json, statistics, sys, time

addr, pending, loads, filter_token, approver_token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
host, port = addr.split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=30)

def call(method, path, body=None, token=filter_token, expect=200):
    t = time.perf_counter()
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    assert r.status == expect, (method, path, r.status, data[:300])
    return dt, data

def sha(s): return hashlib.sha256(s.encode()).hexdigest()

def report(name, ms):
    ms = sorted(ms)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"  {name:<44} n={len(ms):<5} median {statistics.median(ms):7.2f} ms   p95 {p(0.95):7.2f} ms   max {ms[-1]:7.2f} ms")

create, ids = [], []
t0 = time.perf_counter()
for i in range(pending):
    args = {"order": f"A-{i}", "amount": 100 + i}
    body = {"binding": {"subject": f"agent-{i % 37}@acme", "tenant": "acme", "tool": "create_refund",
                        "args_sha256": sha(json.dumps(args)), "policy_sha256": sha("policy")},
            "rule": "big-refund", "summary": {"method": "tools/call", "target": "create_refund", "arguments": args}}
    dt, data = call("POST", "/v1/approvals", body, expect=201)
    create.append(dt)
    ids.append(json.loads(data)["approval_id"])
print(f"created {pending} pending requests in {time.perf_counter() - t0:.2f} s")
print("latency, one request at a time:")
report("POST /v1/approvals (create, fsync)", create)

page = []
size = 0
for _ in range(loads):
    dt, data = call("GET", "/", token=approver_token)
    page.append(dt)
    size = len(data)
assert data.count(b'class="request"') == pending, "not every pending request is on the page"
report(f"GET / (page, {pending} pending, {size // 1024} KiB)", page)

get = [call("GET", f"/v1/approvals/{ids[i * 7 % pending]}")[0] for i in range(200)]
report("GET /v1/approvals/{id}", get)

found = []
for i in range(200):
    args = {"order": f"A-{i}", "amount": 100 + i}
    body = {"binding": {"subject": f"agent-{i % 37}@acme", "tenant": "acme", "tool": "create_refund",
                        "args_sha256": sha(json.dumps(args)), "policy_sha256": sha("policy")},
            "rule": "big-refund", "summary": {"method": "tools/call", "target": "create_refund"}}
    found.append(call("POST", "/v1/approvals", body, expect=200)[0])
report("POST /v1/approvals (finds the open request)", found)

decide = [call("POST", f"/v1/approvals/{ids[i]}/decision", {"approve": True, "reason": "bench"},
               token=approver_token)[0] for i in range(100)]
report("POST /v1/approvals/{id}/decision (approve)", decide)
use = []
for i in range(100):
    args = {"order": f"A-{i}", "amount": 100 + i}
    binding = {"subject": f"agent-{i % 37}@acme", "tenant": "acme", "tool": "create_refund",
               "args_sha256": sha(json.dumps(args)), "policy_sha256": sha("policy")}
    use.append(call("POST", f"/v1/approvals/{ids[i]}/use", {"binding": binding})[0])
report("POST /v1/approvals/{id}/use", use)
page2 = [call("GET", "/", token=approver_token)[0] for _ in range(loads)]
report(f"GET / ({pending - 100} pending + 100 in history)", page2)
PY
