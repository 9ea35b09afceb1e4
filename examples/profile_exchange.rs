//! Profiling harness, not a test or a benchmark with a verdict: runs the
//! filter's core over one allowed `tools/call` exchange (the request of
//! scripts/bench.sh, its upstream answer) many times on the fake host, and
//! optionally seals every audit event onto an in-memory chain, so `perf`
//! can show where the per-request CPU goes without Envoy in the way.
//!
//!   cargo run --release --features fake-host --example profile_exchange -- [N] [audit] [metered]
//!
//! `stateless` sends no `Mcp-Session-Id` (as `scripts/bench.sh` does); otherwise
//! the session is bound by an `initialize` first, as an SDK client's is.
//! `4k` sends the 4,096-byte call of `scripts/bench.sh` (its `call-4k`
//! payload: ~4 KB of plain prose, no DLP finding) instead of the 109-byte one.
//! `audit` with `PROFILE_AUDIT_ARGUMENTS=omit` (or `redacted`) sets `audit.arguments`.
//! `cold=KB` evicts the caches before each exchange by writing over a
//! buffer of KB kibibytes (docs/performance.md, *Cold caches*, compares
//! sizes with Envoy); a second line gives the time inside the exchanges.
//! `metered` adds the rate limit and loop breaker of `METERED=1 scripts/bench.sh`
//! (counted in the fake host's shared data, never tripping). `list` exchanges
//! the benchmark's `tools/list` instead (admin key), answered with the JSON
//! in the file `PROFILE_LIST` names (scripts/bench.sh's 50-tool list:
//! `harness.bench_tools_list(50)` wrapped in a JSON-RPC answer with id 1).
//!   perf record -g target/release/examples/profile_exchange 200000 audit

use mcp_firewall::audit::{AuditConfig, AuditSink, MemoryStore};
use mcp_firewall::exchange::{Exchange, Request, Response};
use mcp_firewall::host::fake::FakeHost;
use mcp_firewall::policy::compile_str;
use std::rc::Rc;
use std::time::Instant;

const REQUEST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello bench"}}}"#;
const LIST_REQUEST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
const RESPONSE: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hello bench"}]}}"#;

const INITIALIZE: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"profile","version":"1"}}}"#;
const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"echo","version":"1"}}}"#;

/// The session the caller continues (as an SDK client does after `initialize`).
const SESSION: &str = "3f2a9c1e5b7d4e8fa0c6b2d4e1f3a5c7";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let audit = args.iter().any(|a| a == "audit");
    let metered = args.iter().any(|a| a == "metered");
    let list = args.iter().any(|a| a == "list");
    let four_k = args.iter().any(|a| a == "4k");
    // No session, as `scripts/bench.sh` sends its calls (stateless, 2026-07-28).
    let stateless = args.iter().any(|a| a == "stateless");
    // In Envoy a worker runs its own code, the kernel's and other requests'
    // between two of our callbacks, and they evict what the exchange left in
    // the caches: a warm loop hides that cost (docs/performance.md, *Cold
    // caches*). `cold=KB` writes one byte per 64 over a buffer of that size
    // before each exchange; only the exchanges are timed for the second line.
    let cold_kb: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("cold=").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let mut evict = vec![0u8; cold_kb * 1024];
    let mut inside = std::time::Duration::ZERO;
    let listed = match (list, std::env::var("PROFILE_LIST")) {
        (false, _) => Vec::new(),
        // Under Node's WASI only the working directory is visible: a path
        // outside it fails to open, and an empty answer would be timed as
        // if it were the list (it is ~150x cheaper).
        (true, Ok(path)) => {
            match std::fs::read(&path) {
                Ok(bytes) if !bytes.is_empty() => bytes,
                _ => {
                    eprintln!("list: cannot read {path} (under WASI: a path inside the working directory)");
                    std::process::exit(2);
                }
            }
        }
        (true, Err(_)) => {
            eprintln!("list: set PROFILE_LIST to a saved tools/list answer");
            std::process::exit(2);
        }
    };
    let call_4k = four_k_call();
    let (request, response, key) = match (list, four_k) {
        (true, _) => (LIST_REQUEST, listed.as_slice(), "Bearer demo-admin-key"),
        (false, true) => (call_4k.as_slice(), RESPONSE, "Bearer demo-reader-key"),
        (false, false) => (REQUEST, RESPONSE, "Bearer demo-reader-key"),
    };
    let Ok(text) = std::fs::read_to_string("policies/demo.json") else {
        eprintln!("run from the repository root (policies/demo.json)");
        std::process::exit(2);
    };
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if audit {
        doc["audit"] =
            serde_json::json!({"cluster": "audit_collector", "max_buffered": 1_000_000u64});
        // `hash` (the default), `redacted` or `omit`: what the event records
        // of the arguments (`omit` skips their SHA-256).
        if let Ok(mode) = std::env::var("PROFILE_AUDIT_ARGUMENTS") {
            doc["audit"]["arguments"] = mode.into();
        }
    }
    if metered {
        doc["rate_limits"] = serde_json::json!([
            {"id": "bench-agent-tool", "key": ["subject", "tool"], "tools": ["*"],
             "capacity": 1_000_000_000u64, "per_seconds": 1},
            {"id": "bench-loop", "key": ["subject", "tool", "arguments"], "tools": ["*"],
             "capacity": 1_000_000_000u64, "per_seconds": 1},
        ]);
    }
    let policy = match compile_str(doc.to_string().as_bytes()) {
        Ok(p) => Rc::new(p),
        Err(e) => {
            eprintln!("{e:?}");
            std::process::exit(2);
        }
    };
    let cfg: Option<AuditConfig> = policy.audit.clone();
    let store = MemoryStore::new();
    // One shared-data store for every exchange, as one Envoy worker has: the
    // meters then read and write a table that holds their entries.
    let shared = Rc::new(mcp_firewall::store::MemoryStore::new());
    let mut sink = cfg.map(|c| AuditSink::new(c, "profile"));
    // The client's `initialize`, whose answer issues SESSION: the filter binds
    // it to the caller, as it does for an SDK client before its first call.
    let mut opening = FakeHost::new()
        .header(":method", "POST")
        .header(":path", "/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", key);
    opening.store = shared.clone();
    let mut x = Exchange::new(policy.clone(), opening);
    x.request(Request::new(INITIALIZE))
        .respond(
            Response::new(INITIALIZED)
                .status("200")
                .content_type("application/json")
                .header("mcp-session-id", SESSION),
        )
        .done();
    if let Some(reply) = x.reply() {
        eprintln!("initialize was refused: {reply:?}");
        std::process::exit(1);
    }
    let start = Instant::now();
    let mut events = 0usize;
    for i in 0..n {
        let mut host = FakeHost::new()
            .header(":method", "POST")
            .header(":path", "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", key);
        if !stateless {
            host = host.header("mcp-session-id", SESSION);
        }
        host.store = shared.clone();
        for line in evict.iter_mut().step_by(64) {
            *line = line.wrapping_add(1);
        }
        std::hint::black_box(&evict);
        let exchange_start = Instant::now();
        let mut x = Exchange::new(policy.clone(), host);
        x.request(Request::new(request))
            .respond({
                // The head a server and Envoy's router give a real answer:
                // every line is read by the head checks.
                let answer = Response::new(response)
                    .status("200")
                    .content_type("application/json")
                    .header("date", "Sun, 06 Dec 2026 10:00:00 GMT")
                    .header("server", "uvicorn");
                match stateless {
                    true => answer,
                    false => answer.header("mcp-session-id", SESSION),
                }
                .header("x-envoy-upstream-service-time", "1")
            })
            .done();
        inside += exchange_start.elapsed();
        if let Some(reply) = x.reply() {
            eprintln!("exchange {i} was refused: {reply:?}");
            std::process::exit(1);
        }
        if let Some(sink) = sink.as_mut() {
            for facts in x.host.audited.drain(..) {
                sink.record(&store, facts, i as u64, || 1);
                events += 1;
            }
            while let Some(batch) = sink.due_batch(u64::MAX) {
                sink.dispatched(1, batch.token);
                sink.answered(Some(1), batch.token, Some(200), u64::MAX);
            }
        }
    }
    let el = start.elapsed();
    println!(
        "{n} exchanges, {events} audit events: {:.2} us per exchange",
        el.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "inside the exchanges: {:.2} us per exchange (caches evicted: {cold_kb} KB)",
        inside.as_secs_f64() * 1e6 / n as f64
    );
}

/// `scripts/bench.sh`'s `call-4k` body, built the same way: the prose repeated
/// and cut to fill 4,096 bytes, padded with dots.
fn four_k_call() -> Vec<u8> {
    const PROSE: &str =
        "The release adds pagination to the issue search and fixes the sort order of comments. \
Build times are shorter because the test suite now runs in parallel on two workers. \
Please review the migration notes before upgrading the staging cluster next week. \
Old configuration files are still read, but the loader prints a deprecation warning. ";
    let head = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":""#;
    let tail = r#"","format":"text"}}}"#;
    let room = 4096 - head.len() - tail.len();
    let mut text: String = PROSE.repeat(20).chars().take(room).collect();
    text.truncate(text.trim_end().len());
    text.push_str(&".".repeat(room - text.len()));
    format!("{head}{text}{tail}").into_bytes()
}
