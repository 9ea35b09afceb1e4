"""The benchmark's payloads and policies, written into a work directory: shared by
scripts/bench.sh (timed rows) and scripts/count-envoy.sh (counted rows), so both
send the same bytes under the same policies.

    python3 scripts/bench_payloads.py WORK POLICY
"""
import json, sys
work, policy = sys.argv[1], sys.argv[2]

def dump(name, value):
    with open(f"{work}/{name}", "w") as f:
        f.write(value)

# The payloads, exactly as sent (no trailing newline).
dump("call-109.body", '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello bench"}}}')
prose = ("The release adds pagination to the issue search and fixes the sort order of comments. "
         "Build times are shorter because the test suite now runs in parallel on two workers. "
         "Please review the migration notes before upgrading the staging cluster next week. "
         "Old configuration files are still read, but the loader prints a deprecation warning. ")
head = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"'
tail = '","format":"text"}}}'
text = (prose * 20)[: 4096 - len(head) - len(tail)].rstrip() 
text += "." * (4096 - len(head) - len(tail) - len(text))
dump("call-4k.body", head + text + tail)
dump("list-50.body", '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')
dump("session-109.body", open(f"{work}/call-109.body").read())
dump("initialize.body", '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
     '"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}')

base = json.load(open(policy))
dump("rules.policy.json", json.dumps(base))
# (b): the rule that allows the benchmark's call holds only under a condition set a
# deployment could write for an echo/notes tool; the calls of the benchmark meet it,
# so every leaf is evaluated (any: the get-sum leaf is false, then all of the rest).
when = json.loads(json.dumps(base))
for rule in when["rules"]:
    if rule["id"] == "read-tools":
        rule["when"] = {"any": [
            {"param": "/name", "eq": "get-sum"},
            {"all": [
                {"arg": "/message", "max_len": 8192},
                {"arg": "/message", "matches": "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*"},
                {"not": {"arg": "/message", "contains": "-----BEGIN"}},
                {"any": [{"arg": "/format", "exists": False}, {"arg": "/format", "in": ["text", "markdown"]}]},
            ]},
        ]}
        break
else:
    sys.exit("bench: the policy has no rule 'read-tools' for the `when` row")
dump("when.policy.json", json.dumps(when))
audit = json.loads(json.dumps(base))
audit["audit"] = {"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
                  "max_batch": 100, "flush_ms": 200, "max_buffered": 10000, "on_failure": "open",
                  "arguments": "hash", "timeout_ms": 5000}
dump("audit.policy.json", json.dumps(audit))
# metered: (a) plus a per-subject-and-tool rate limit and the loop breaker (subject,
# tool, arguments: every request of a load is the same call), both far too large to
# trip: what counting costs, not what refusing does.
metered = json.loads(json.dumps(base))
metered["rate_limits"] = [
    {"id": "bench-agent-tool", "key": ["subject", "tool"], "tools": ["*"], "capacity": 1000000000, "per_seconds": 1},
    {"id": "bench-loop", "key": ["subject", "tool", "arguments"], "tools": ["*"], "capacity": 1000000000,
     "per_seconds": 1},
]
dump("metered.policy.json", json.dumps(metered))
