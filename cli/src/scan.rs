//! `mcp-firewall scan`: run the filter's own DLP detectors over JSON lines, for
//! measuring them against a labelled corpus (`score.py`), and
//! `mcp-firewall bench-dlp`: their native throughput on generated payloads.

use clap::Args;
use mcp_firewall::dlp::{self, Scanner};
use mcp_firewall::policy::reader::Errors;
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
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = (self.next() % items.len() as u64) as usize;
        items.get(i).copied().unwrap_or("")
    }
    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| {
                char::from(
                    *A.get((self.next() % A.len() as u64) as usize)
                        .unwrap_or(&b'x'),
                )
            })
            .collect()
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                char::from(
                    *b"0123456789abcdef"
                        .get((self.next() % 16) as usize)
                        .unwrap_or(&b'0'),
                )
            })
            .collect()
    }
}

const WORDS: &[&str] = &[
    "the", "request", "token", "refresh", "failed", "after", "deploy", "of", "service", "key",
    "rotation", "please", "review", "password", "policy", "and", "update", "config", "for",
    "cluster", "auth", "user", "session", "secret", "store", "release", "notes", "version", "bug",
    "fix", "timeout", "retry", "queue", "worker", "invoice", "total",
];

/// One realistic tool-call argument object: prose, code, ids, numbers, URLs.
fn clean_record(r: &mut Rng, i: usize) -> Value {
    let sentence: Vec<&str> = (0..24).map(|_| r.pick(WORDS)).collect();
    json!({
        "id": i,
        "title": sentence[..6].join(" "),
        "body": format!("{}. See https://docs.example.net/guide/{} for details; build #{}.", sentence.join(" "), r.alnum(8), r.next() % 100000),
        "path": format!("src/{}/{}.rs", r.pick(WORDS), r.pick(WORDS)),
        "commit": r.hex(40),
        "trace_id": format!("{}-{}-{}-{}-{}", r.hex(8), r.hex(4), r.hex(4), r.hex(4), r.hex(12)),
        "amount": (r.next() % 100000) as f64 / 100.0,
        "created": 1_700_000_000 + r.next() % 10_000_000,
        "code": "fn main() { let key_len = config.key_length(); println!(\"{}\", key_len); }",
        "tags": [r.pick(WORDS), r.pick(WORDS), r.pick(WORDS)],
    })
}

/// A record carrying one secret or personal datum, of a rotating kind.
fn dirty_record(r: &mut Rng, i: usize) -> Value {
    let mut v = clean_record(r, i);
    let secret = match i % 6 {
        0 => format!("ghp_{}", r.alnum(36)),
        1 => format!(
            "AKIA{}",
            r.alnum(16)
                .to_ascii_uppercase()
                .replace(['0', '1', '8', '9'], "Q")
        ),
        2 => format!("postgres://app:{}@db.internal:5432/main", r.alnum(18)),
        3 => "card 4111 1111 1111 1111 exp 12/29".to_owned(),
        4 => format!("mail {}@example-corp.com", r.alnum(8).to_ascii_lowercase()),
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

/// A `tools/call` arguments object of about `size` bytes.
fn payload(size: usize, dirty: bool) -> Value {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64 ^ u64::from(dirty));
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let rec = if dirty {
            dirty_record(&mut r, i)
        } else {
            clean_record(&mut r, i)
        };
        len += rec.to_string().len() + 1;
        items.push(rec);
        i += 1;
    }
    json!({"query": "export quarterly report", "items": items})
}

/// Throughput of `scan_value` over generated JSON argument payloads.
pub fn bench(args: BenchArgs) -> ExitCode {
    let scanner = match load_scanner(None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-firewall bench-dlp: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{:<8} {:<6} {:>10} {:>8} {:>10} {:>9}",
        "size", "kind", "bytes", "runs", "MB/s", "findings"
    );
    for (label, size) in [
        ("1KB", 1024usize),
        ("64KB", 64 * 1024),
        ("1MB", 1024 * 1024),
    ] {
        for dirty in [false, true] {
            let v = payload(size, dirty);
            let bytes = v.to_string().len();
            let findings = scanner.scan_value(&v).len();
            let start = Instant::now();
            let mut runs = 0u64;
            while start.elapsed().as_secs_f64() < args.seconds || runs < 3 {
                std::hint::black_box(scanner.scan_value(std::hint::black_box(&v)));
                runs += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            let mbps = (bytes as f64 * runs as f64) / secs / 1e6;
            println!(
                "{:<8} {:<6} {:>10} {:>8} {:>10.1} {:>9}",
                label,
                if dirty { "dirty" } else { "clean" },
                bytes,
                runs,
                mbps,
                findings
            );
        }
    }
    ExitCode::SUCCESS
}
