//! `mcp-firewall scan`: run the filter's own DLP detectors over JSON lines, for
//! measuring them against a labelled corpus (`score.py`), and
//! `mcp-firewall bench-dlp`: their native throughput on generated payloads.

use clap::Args;
use mcp_firewall::config::Errors;
use mcp_firewall::dlp::{self, Scanner};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Policy file whose `dlp` section (detectors, custom) configures the scanner.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// Load the scanner exactly as the filter would: `$.dlp` of the policy, or the defaults.
fn load_scanner(policy: Option<&PathBuf>) -> Result<Scanner, String> {
    let doc = match policy {
        Some(p) => {
            let raw = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(
                serde_json::from_slice::<Value>(&raw)
                    .map_err(|e| format!("{}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let mut errs = Errors::default();
    let section = doc.as_ref().and_then(|d| d.get("dlp"));
    match dlp::compile(section, "$.dlp", &mut errs) {
        Some(p) if errs.is_empty() => Ok(p.scanner),
        _ => Err(errs
            .0
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// Reads `{"id","text"}` lines on stdin, prints `{"id","findings":[{"kind","label"}]}`.
pub fn run(args: ScanArgs) -> ExitCode {
    let scanner = match load_scanner(args.policy.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-firewall scan: {e}");
            return ExitCode::from(2);
        }
    };
    let stdin = io::stdin();
    let mut out = BufWriter::new(io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mcp-firewall scan: stdin: {e}");
                return ExitCode::from(2);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let item: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("mcp-firewall scan: line {}: {e}", n + 1);
                return ExitCode::from(2);
            }
        };
        let text = item.get("text").and_then(Value::as_str).unwrap_or("");
        let findings: Vec<Value> = scanner
            .scan_text(text)
            .into_iter()
            .map(|m| json!({"kind": m.kind, "label": m.label.as_str()}))
            .collect();
        let id = item.get("id").cloned().unwrap_or(Value::Null);
        if writeln!(out, "{}", json!({"id": id, "findings": findings})).is_err() {
            return ExitCode::from(2);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds to spend on each payload (after one warm-up run).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Print one generated payload of this flavour (clean, trigger-heavy,
    /// dirty) and size in bytes instead of measuring, to inspect the generator.
    #[arg(long, num_args = 2, value_names = ["FLAVOUR", "BYTES"])]
    pub dump: Option<Vec<String>>,
    /// Measure only the cases named `SIZE-FLAVOUR` (`64KB-clean`), for
    /// instruction counts under `valgrind --tool=callgrind`.
    #[arg(long = "case")]
    pub cases: Vec<String>,
    /// Measure the adversarial payloads instead: every detector's trigger
    /// repeated back to back, against the clean payload of the same size, as
    /// arguments (request) and as a tool result (response).
    #[arg(long)]
    pub adversarial: bool,
    /// With --adversarial: print every payload's line, not only the worst.
    #[arg(long)]
    pub all: bool,
    /// With --adversarial: only the units whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// Deterministic pseudo-random numbers (xorshift64*), so payloads are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = self.below(items.len());
        items.get(i).copied().unwrap_or("")
    }
    fn pick_from(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| char::from(*alphabet.get(self.below(alphabet.len())).unwrap_or(&b'x')))
            .collect()
    }
    fn alnum(&mut self, n: usize) -> String {
        self.pick_from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            n,
        )
    }
    fn hex(&mut self, n: usize) -> String {
        self.pick_from(b"0123456789abcdef", n)
    }
    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-a{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(3),
            self.hex(12)
        )
    }
}

// --- Clean payloads ------------------------------------------------------------
//
// Realistic tool arguments: source files, SQL, chat prose, logs, YAML/JSON
// config, HTTP calls and file listings. The words that open detector work
// (`key`, `token`, `password`, `secret`, `auth`, `pass`, `credential`) occur
// the way they do in real code and config: a few lines in ten, as names
// (`cache_key`, `refresh_token()`, `password_hash`), templated values
// (`${DB_PASSWORD}`) and prose about them, never as a literal credential.

/// Everyday English, with a few trigger words at roughly their real frequency.
const PROSE: &[&str] = &[
    "the",
    "the",
    "the",
    "a",
    "a",
    "to",
    "to",
    "of",
    "of",
    "and",
    "and",
    "in",
    "is",
    "it",
    "for",
    "that",
    "on",
    "with",
    "as",
    "this",
    "we",
    "be",
    "was",
    "are",
    "not",
    "but",
    "have",
    "you",
    "from",
    "by",
    "can",
    "will",
    "should",
    "after",
    "before",
    "when",
    "if",
    "then",
    "our",
    "build",
    "test",
    "release",
    "deploy",
    "service",
    "request",
    "response",
    "error",
    "latency",
    "cluster",
    "node",
    "queue",
    "worker",
    "retry",
    "timeout",
    "users",
    "customer",
    "invoice",
    "report",
    "quarterly",
    "dashboard",
    "migration",
    "schema",
    "table",
    "index",
    "query",
    "cache",
    "memory",
    "disk",
    "upgrade",
    "version",
    "branch",
    "merge",
    "review",
    "comment",
    "issue",
    "bug",
    "fix",
    "feature",
    "flag",
    "rollout",
    "percent",
    "region",
    "europe",
    "backup",
    "restore",
    "monitor",
    "alert",
    "page",
    "incident",
    "postmortem",
    "meeting",
    "tomorrow",
    "yesterday",
    "please",
    "thanks",
    "looks",
    "good",
    "think",
    "maybe",
    "probably",
    "still",
    "again",
    "slow",
    "fast",
    "small",
    "large",
    "new",
    "old",
    "first",
    "last",
    "next",
    "because",
    "however",
    "although",
    "several",
    "between",
    "during",
    "without",
    "around",
    "about",
    "support",
    "team",
    "product",
    "design",
    "document",
    "spec",
    "api",
    "endpoint",
    "client",
    "server",
    "browser",
    "mobile",
    "android",
    "ios",
    "network",
    "packet",
    "connection",
    "pool",
    "thread",
    "process",
    "container",
    "image",
    "pipeline",
    "job",
    "step",
    "stage",
    "budget",
    "cost",
    "estimate",
    "schedule",
    "deadline",
    "key",
    "token",
    "password",
    "session",
    "login",
];

const IDENTS: &[&str] = &[
    "user", "order", "item", "count", "total", "result", "value", "data", "buf", "cfg", "client",
    "conn", "req", "resp", "payload", "offset", "limit", "page", "row", "entry", "path", "name",
    "status", "retries", "deadline", "elapsed", "batch", "chunk", "index", "node",
];

/// Lines of code in several languages; `{i}` an identifier, `{n}` a number, `{s}` a word.
const CODE: &[&str] = &[
    "fn process_{i}(input: &[u8]) -> Result<usize, Error> {",
    "    let {i} = {i}.iter().filter(|x| x.len() > {n}).count();",
    "    if {i} >= {n} { return Err(Error::TooLarge({i})); }",
    "    for (idx, {i}) in items.iter().enumerate() {",
    "        total += {i}.amount * {n};",
    "    }",
    "    Ok({i})",
    "}",
    "def handle_{i}(self, {i}, timeout={n}):",
    "    \"\"\"Return the {s} for the given {i}.\"\"\"",
    "    result = self.client.get(f\"/v1/{s}/{{{i}}}\", params={\"limit\": {n}})",
    "    return [row[\"{s}\"] for row in result.json()[\"items\"]]",
    "const {i} = await fetch(`${baseUrl}/api/{s}?page=${page}`);",
    "export function {i}Handler(req, res) { res.status({n}).json({ ok: true }); }",
    "import { {i} } from './{s}/{i}';",
    "    logger.info(\"processed %d {s} records in %dms\", count, elapsed)",
    "    // TODO: batch these calls once the {s} endpoint supports it",
    "    assert_eq!({i}.len(), {n});",
    "    match {i} { Some(v) => v, None => return Ok(()) }",
    "SELECT id, name, created_at FROM {s} WHERE status = 'active' LIMIT {n};",
    "#include <stdio.h>",
    "    for (int i = 0; i < {n}; i++) { sum += {i}[i]; }",
    "    let cache_key = format!(\"{s}:{}\", {i}.id);",
    "    let token = self.auth.refresh_token().await?;",
    "    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())",
    "    headers = {\"Authorization\": f\"Bearer {access_token}\"}",
    "    api_key = os.environ[\"API_KEY\"]",
    "    for key, value in sorted(settings.items()):",
    "    if (!session.token) { return redirect('/login'); }",
    "    secret_ref: SecretRef::new(\"{s}-credentials\"),",
];

const LOG: &[&str] = &[
    "INFO  http: GET /api/v1/{s}/{n} 200 {n}ms",
    "INFO  worker: job {s}-{n} finished in {n}ms",
    "WARN  pool: connection {n} idle for {n}s, closing",
    "DEBUG cache: miss for {s}:{n}",
    "ERROR {s}: request failed: connection reset by peer (attempt {n})",
    "INFO  scheduler: next run of {s} at 2024-05-{n}T03:00:00Z",
    "INFO  auth: token refreshed for service account {s}",
    "INFO  deploy: rolled out {s} v1.{n}.0 to 3/3 replicas",
];

const YAML: &[&str] = &[
    "{s}:",
    "  replicas: {n}",
    "  image: registry.internal/{s}:1.{n}.0",
    "  port: {n}",
    "  timeout_seconds: {n}",
    "  log_level: info",
    "  enabled: true",
    "  labels: [{s}, {s}]",
    "  resources: { cpu: \"{n}m\", memory: \"{n}Mi\" }",
    "  password: ${DB_PASSWORD}",
    "  api_key_file: /etc/{s}/api-key",
    "  auth: { mode: oidc, issuer: https://id.example.org }",
];

const SQL: &[&str] = &[
    "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id",
    "WHERE o.created_at >= now() - interval '{n} days' AND o.status IN ('paid', 'shipped')",
    "GROUP BY c.name HAVING count(*) > {n} ORDER BY sum(o.total) DESC LIMIT {n};",
    "UPDATE {s} SET updated_at = now(), retries = retries + 1 WHERE id = {n};",
    "CREATE INDEX CONCURRENTLY idx_{s}_created ON {s} (created_at);",
    "INSERT INTO audit_log (actor, action, target) VALUES ('{s}', 'update', '{s}/{n}');",
];

/// Fill a template line: `{i}` identifier, `{n}` number, `{s}` word.
fn fill(r: &mut Rng, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(p) = rest.find('{') {
        out.push_str(rest.get(..p).unwrap_or(""));
        let tail = rest.get(p..).unwrap_or("");
        if tail.starts_with("{i}") {
            out.push_str(r.pick(IDENTS));
        } else if tail.starts_with("{n}") {
            out.push_str(&(r.next() % 1000).to_string());
        } else if tail.starts_with("{s}") {
            out.push_str(r.pick(IDENTS));
            out.push('s');
        } else {
            out.push('{');
            rest = tail.get(1..).unwrap_or("");
            continue;
        }
        rest = tail.get(3..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// `min` to `min + spread - 1` filled lines of `from`.
fn lines(r: &mut Rng, from: &[&str], min: usize, spread: usize) -> String {
    let n = min + r.below(spread);
    (0..n)
        .map(|_| {
            let t = r.pick(from);
            fill(r, t)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `min` to `min + spread - 1` words of prose.
fn prose(r: &mut Rng, min: usize, spread: usize) -> String {
    let words = min + r.below(spread);
    let mut s = String::new();
    for w in 0..words {
        if w > 0 {
            s.push_str(if w % 13 == 0 { ". " } else { " " });
        }
        s.push_str(r.pick(PROSE));
    }
    s.push('.');
    s
}

fn file_path(r: &mut Rng) -> String {
    format!(
        "{}/{}/{}_{}.{}",
        r.pick(&["src", "lib", "app", "pkg", "internal"]),
        r.pick(IDENTS),
        r.pick(IDENTS),
        r.pick(IDENTS),
        r.pick(&["rs", "py", "ts", "go", "java", "md"])
    )
}

/// One realistic tool-call argument object, of a rotating kind.
fn clean_record(r: &mut Rng, i: usize) -> Value {
    match i % 7 {
        0 => json!({
            "tool": "write_file",
            "path": file_path(r),
            "content": lines(r, CODE, 12, 20),
        }),
        1 => json!({
            "tool": "run_query",
            "database": "analytics",
            "sql": lines(r, SQL, 3, 4),
            "timeout_ms": 30_000,
        }),
        2 => json!({
            "tool": "post_message",
            "channel": format!("#{}", r.pick(IDENTS)),
            "text": prose(r, 40, 80),
            "thread_ts": format!("17{}.{}", r.next() % 100_000_000, r.next() % 1_000_000),
        }),
        3 => json!({
            "tool": "search_logs",
            "request_id": r.uuid(),
            "lines": lines(r, LOG, 10, 15),
        }),
        4 => json!({
            "tool": "apply_config",
            "file": "deploy/values.yaml",
            "yaml": lines(r, YAML, 8, 10),
        }),
        5 => json!({
            "tool": "http_request",
            "method": "POST",
            "url": format!("https://api.example.com/v2/{}/{}?expand=items", r.pick(IDENTS), r.uuid()),
            "headers": {"Content-Type": "application/json", "Accept": "application/json", "X-Request-Id": r.uuid()},
            "body": {"name": r.pick(IDENTS), "amount": (r.next() % 100_000) as f64 / 100.0, "currency": "EUR", "note": prose(r, 12, 1)},
        }),
        _ => json!({
            "tool": "git_diff",
            "commit": r.hex(40),
            "parent": r.hex(40),
            "files": (0..4).map(|_| file_path(r)).collect::<Vec<_>>(),
            "sha256": r.hex(64),
            "summary": prose(r, 20, 1),
        }),
    }
}

// --- Trigger-heavy payloads ----------------------------------------------------
//
// The worst case for the prefilter: prose where one word in six is a trigger
// word, and an identifier with `key` in every record.

const TRIGGER_WORDS: &[&str] = &[
    "the", "request", "token", "refresh", "failed", "after", "deploy", "of", "service", "key",
    "rotation", "please", "review", "password", "policy", "and", "update", "config", "for",
    "cluster", "auth", "user", "session", "secret", "store", "release", "notes", "version", "bug",
    "fix", "timeout", "retry", "queue", "worker", "invoice", "total",
];

fn trigger_heavy_record(r: &mut Rng, i: usize) -> Value {
    let sentence: Vec<&str> = (0..24).map(|_| r.pick(TRIGGER_WORDS)).collect();
    json!({
        "id": i,
        "title": sentence.get(..6).unwrap_or(&[]).join(" "),
        "body": format!("{}. See https://docs.example.net/guide/{} for details; build #{}.", sentence.join(" "), r.alnum(8), r.next() % 100000),
        "path": format!("src/{}/{}.rs", r.pick(TRIGGER_WORDS), r.pick(TRIGGER_WORDS)),
        "commit": r.hex(40),
        "trace_id": r.uuid(),
        "amount": (r.next() % 100000) as f64 / 100.0,
        "created": 1_700_000_000 + r.next() % 10_000_000,
        "code": "fn main() { let key_len = config.key_length(); println!(\"{}\", key_len); }",
        "tags": [r.pick(TRIGGER_WORDS), r.pick(TRIGGER_WORDS), r.pick(TRIGGER_WORDS)],
    })
}

// --- Dirty payloads ------------------------------------------------------------

/// A clean record plus one secret or personal datum, of a rotating kind.
fn dirty_record(r: &mut Rng, i: usize) -> Value {
    let mut v = clean_record(r, i);
    let secret = match i % 6 {
        0 => format!("ghp_{}", r.alnum(36)),
        1 => format!(
            "AKIA{}",
            r.pick_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        ),
        2 => format!("postgres://app:{}@db.internal:5432/main", r.alnum(18)),
        3 => "card 4111 1111 1111 1111 exp 12/29".to_owned(),
        4 => format!(
            "mail {}@example-corp.com",
            r.pick_from(b"abcdefghijklmnopqrstuvwxyz", 8)
        ),
        _ => format!(
            "xoxb-{}-{}-{}",
            1_000_000_000 + r.next() % 1_000_000_000,
            1_000_000_000 + r.next() % 1_000_000_000,
            r.alnum(24)
        ),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "note".into(),
            Value::String(format!("please use {secret} for the deploy")),
        );
    }
    v
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Clean,
    TriggerHeavy,
    Dirty,
    /// Adversarial: one trigger repeated back to back (`sk-sk-sk-…`), which
    /// used to re-scan the same bytes from every trigger (2.5 s per MiB).
    TriggerRun,
}

impl Flavour {
    const ALL: [Flavour; 4] = [
        Flavour::Clean,
        Flavour::TriggerHeavy,
        Flavour::Dirty,
        Flavour::TriggerRun,
    ];
    fn name(self) -> &'static str {
        match self {
            Flavour::Clean => "clean",
            Flavour::TriggerHeavy => "trigger-heavy",
            Flavour::Dirty => "dirty",
            Flavour::TriggerRun => "trigger-run",
        }
    }
}

/// A `tools/call` arguments object of about `size` bytes: a batch of records.
fn payload(size: usize, flavour: Flavour) -> Value {
    if flavour == Flavour::TriggerRun {
        return json!({"batch": "export quarterly report", "items": ["sk-".repeat(size / 3)]});
    }
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64 ^ (flavour as u64) << 32);
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let rec = match flavour {
            Flavour::Clean => clean_record(&mut r, i),
            Flavour::TriggerHeavy => trigger_heavy_record(&mut r, i),
            Flavour::Dirty => dirty_record(&mut r, i),
            Flavour::TriggerRun => json!("sk-"),
        };
        len += rec.to_string().len() + 1;
        items.push(rec);
        i += 1;
    }
    json!({"batch": "export quarterly report", "items": items})
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), or `None`
/// elsewhere. On a shared machine wall time also counts waiting for a core;
/// CPU time measures the scanner.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Throughput of `scan_value` over generated JSON argument payloads.
pub fn bench(args: BenchArgs) -> ExitCode {
    if let Some(dump) = &args.dump {
        let flavour = Flavour::ALL
            .into_iter()
            .find(|f| dump.first().is_some_and(|d| d == f.name()));
        let size = dump.get(1).and_then(|s| s.parse::<usize>().ok());
        let (Some(flavour), Some(size)) = (flavour, size) else {
            eprintln!("mcp-firewall bench-dlp: --dump clean|trigger-heavy|dirty|trigger-run BYTES");
            return ExitCode::from(2);
        };
        println!("{:#}", payload(size, flavour));
        return ExitCode::SUCCESS;
    }
    let scanner = match load_scanner(None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-firewall bench-dlp: {e}");
            return ExitCode::from(2);
        }
    };
    if args.adversarial {
        return bench_adversarial(&scanner, &args);
    }
    println!(
        "{:<6} {:<14} {:>9} {:>7} {:>8} {:>8} {:>9}",
        "size", "kind", "bytes", "runs", "MB/s", "cpu-MB/s", "findings"
    );
    for (label, size) in [
        ("1KB", 1024usize),
        ("64KB", 64 * 1024),
        ("1MB", 1024 * 1024),
    ] {
        for flavour in Flavour::ALL {
            let name = format!("{label}-{}", flavour.name());
            if !args.cases.is_empty() && !args.cases.contains(&name) {
                continue;
            }
            let v = payload(size, flavour);
            let bytes = v.to_string().len();
            let findings = scanner.scan_value(&v).len();
            let start = Instant::now();
            let cpu_start = thread_cpu_ns();
            let mut runs = 0u64;
            while start.elapsed().as_secs_f64() < args.seconds || runs < 3 {
                std::hint::black_box(scanner.scan_value(std::hint::black_box(&v)));
                runs += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            let scanned = bytes as f64 * runs as f64;
            let mbps = scanned / secs / 1e6;
            // Bytes per CPU microsecond = MB per CPU second.
            let cpu_mbps = match (cpu_start, thread_cpu_ns()) {
                (Some(a), Some(b)) if b > a => format!("{:.1}", scanned / ((b - a) as f64 / 1e3)),
                _ => "-".to_owned(),
            };
            println!(
                "{:<6} {:<14} {:>9} {:>7} {:>8.1} {:>8} {:>9}",
                label,
                flavour.name(),
                bytes,
                runs,
                mbps,
                cpu_mbps,
                findings
            );
        }
    }
    ExitCode::SUCCESS
}

/// Which way a payload travels: what the filter does with it.
#[derive(Clone, Copy)]
enum Direction {
    /// `tools/call` arguments: `scan_value` (requests block).
    Request,
    /// A tool result's text content: `redact_result` (responses redact).
    Response,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
    /// The message for a payload: arguments, or a result with a text item.
    fn wrap(self, v: Value) -> Value {
        match self {
            Direction::Request => v,
            Direction::Response => {
                json!({"content": [{"type": "text", "text": v.to_string()}], "isError": false})
            }
        }
    }
    fn run(self, scanner: &Scanner, v: &Value) -> usize {
        match self {
            Direction::Request => scanner.scan_value(v).len(),
            Direction::Response => {
                let mut copy = v.clone();
                dlp::redact_result(scanner, &mut copy).len()
            }
        }
    }
}

/// MB per CPU second of `dir` over `v` (`seconds` after one warm-up run, at
/// least 3 runs); wall-clock where the thread's CPU time cannot be read. CPU
/// time, because the machine is shared: waiting for a core is not scanning.
fn measure(scanner: &Scanner, dir: Direction, v: &Value, seconds: f64) -> (f64, usize) {
    let bytes = v.to_string().len();
    let findings = dir.run(scanner, v);
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut runs = 0u64;
    while start.elapsed().as_secs_f64() < seconds || runs < 3 {
        std::hint::black_box(dir.run(scanner, std::hint::black_box(v)));
        runs += 1;
    }
    let scanned = bytes as f64 * runs as f64;
    match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (scanned / ((b - a) as f64 / 1e3), findings),
        _ => (scanned / start.elapsed().as_secs_f64() / 1e6, findings),
    }
}

/// Every adversarial payload against the clean one of the same size and
/// direction: MB/s and how many times slower per byte.
fn bench_adversarial(scanner: &Scanner, args: &BenchArgs) -> ExitCode {
    let units = dlp::adversarial::units();
    println!(
        "{:<6} {:<9} {:>10} {:>10} {:>7}  worst payload",
        "size", "direction", "clean", "worst", "ratio"
    );
    for (label, size) in [
        ("1KB", 1024usize),
        ("64KB", 64 * 1024),
        ("1MB", 1024 * 1024),
    ] {
        if !args.cases.is_empty() && !args.cases.iter().any(|c| c == label) {
            continue;
        }
        for dir in [Direction::Request, Direction::Response] {
            let clean = dir.wrap(payload(size, Flavour::Clean));
            let (clean_mbps, _) = measure(scanner, dir, &clean, args.seconds);
            let mut worst: Option<(f64, &str)> = None;
            for (name, unit) in &units {
                if args
                    .only
                    .as_ref()
                    .is_some_and(|o| !name.contains(o.as_str()))
                {
                    continue;
                }
                let v = dir.wrap(json!({"batch": "export quarterly report",
                    "items": [dlp::adversarial::payload(unit, size)]}));
                let (mbps, findings) = measure(scanner, dir, &v, args.seconds);
                if args.all {
                    let (spent, allowed) = scanner.work_of(&v);
                    println!(
                        "{:<6} {:<9} {:>10.1} {:>10.1} {:>7.1}  {} ({} findings, work {:.2} of allowed)",
                        label,
                        dir.name(),
                        clean_mbps,
                        mbps,
                        clean_mbps / mbps,
                        name,
                        findings,
                        spent as f64 / allowed.max(1) as f64
                    );
                }
                if worst.is_none_or(|(w, _)| mbps < w) {
                    worst = Some((mbps, name));
                }
            }
            if let Some((mbps, name)) = worst {
                println!(
                    "{:<6} {:<9} {:>10.1} {:>10.1} {:>7.1}  {}",
                    label,
                    dir.name(),
                    clean_mbps,
                    mbps,
                    clean_mbps / mbps,
                    name
                );
            }
        }
    }
    ExitCode::SUCCESS
}
