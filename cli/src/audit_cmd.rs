//! `mcp-firewall audit verify|show`: check and read a collected audit trail.
//!
//! Both take NDJSON as the collector (or Vector / Fluent Bit) stored it: events
//! of several chains interleaved, out of order, possibly re-delivered twice.

use clap::{Args, Subcommand};
use mcp_firewall::audit::{event_hash, GENESIS_PREV};
use mcp_firewall::json::{parse_strict, MAX_SUPPORTED_DEPTH};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Nesting limit for stored events: ours nest 3 deep plus redacted
/// arguments, which can be as deep as a policy lets a request body be.
const MAX_EVENT_DEPTH: usize = MAX_SUPPORTED_DEPTH;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Recompute every hash and check seq and prev links per chain; exit 1 on the first broken link of any chain.
    Verify(VerifyArgs),
    /// Print events as a table for incident response.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// NDJSON file of audit events.
    file: PathBuf,
    /// Accept chains that start after seq 1 (a rotated or trimmed file); their first prev is then unchecked.
    #[arg(long)]
    partial: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// NDJSON file of audit events.
    file: PathBuf,
    /// Only events of this identity subject.
    #[arg(long)]
    subject: Option<String>,
    /// Only events whose request target (tool, resource or prompt) is exactly
    /// this, or that record a pin mismatch of this tool (a tools/list answer's).
    #[arg(long)]
    tool: Option<String>,
    /// Only events that record tools whose definition differs from its pin
    /// (a rug pull): each is listed under its event with both digests.
    #[arg(long)]
    pins: bool,
    /// Only events with this verdict: allow, deny, approval, redacted.
    #[arg(long)]
    verdict: Option<String>,
    /// Only events at or after this time: RFC 3339 UTC (2025-01-31T12:00:00Z), a date, or epoch milliseconds.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Only events before this time (same formats as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
}

pub fn run(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify(a) => verify_cmd(&a),
        AuditCmd::Show(a) => show_cmd(&a),
    }
}

fn read(file: &PathBuf) -> Result<String, ExitCode> {
    std::fs::read_to_string(file).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", file.display());
        ExitCode::from(2)
    })
}

fn verify_cmd(a: &VerifyArgs) -> ExitCode {
    let text = match read(&a.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let report = verify(&text, a.partial);
    print!("{report}");
    if report.breaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What is wrong at one point of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A line that is not a JSON event with `chain` and `seq`.
    Unreadable { line: usize, msg: String },
    /// The stored hash is not the hash of the event: the event was altered.
    HashMismatch {
        chain: String,
        seq: u64,
        line: usize,
    },
    /// `prev` is not the hash of the event before: an event was replaced or re-chained.
    PrevMismatch {
        chain: String,
        seq: u64,
        line: usize,
    },
    /// Seqs strictly between `after` and `next` are missing. `announced_at`:
    /// the seq of an event in which the firewall declared them dropped.
    Gap {
        chain: String,
        after: u64,
        next: u64,
        announced_at: Option<u64>,
    },
    /// Two different events claim the same seq.
    Duplicate {
        chain: String,
        seq: u64,
        lines: (usize, usize),
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Unreadable { line, msg } => write!(f, "line {line}: not an audit event: {msg}"),
            Break::HashMismatch { chain, seq, line } => {
                write!(f, "chain {chain} seq {seq} (line {line}): hash mismatch: the event was altered")
            }
            Break::PrevMismatch { chain, seq, line } => write!(
                f,
                "chain {chain} seq {seq} (line {line}): prev mismatch: prev is not the hash of seq {}",
                seq.saturating_sub(1)
            ),
            Break::Gap { chain, after, next, announced_at } => {
                let missing = next - after - 1;
                write!(f, "chain {chain}: gap between {after} and {next} ({missing} missing")?;
                if *after == 0 {
                    write!(f, "; the chain does not start at seq 1, --partial accepts that")?;
                }
                match announced_at {
                    Some(s) => write!(f, "; announced as dropped by the firewall at seq {s})"),
                    None => write!(f, "; not announced by the firewall)"),
                }
            }
            Break::Duplicate { chain, seq, lines } => write!(
                f,
                "chain {chain} seq {seq}: duplicate: lines {} and {} are different events with the same seq",
                lines.0, lines.1
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub chain: String,
    /// Distinct events (identical re-deliveries counted once).
    pub events: usize,
    /// Identical copies beyond the first (at-least-once collectors store some).
    pub copies: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    /// The first broken link of this chain, if any.
    pub broken: Option<Break>,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub chains: Vec<ChainSummary>,
    /// Every chain's first break, then unreadable lines.
    pub breaks: Vec<Break>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: usize = self.chains.iter().map(|c| c.events).sum();
        writeln!(f, "{} chain(s), {events} event(s)", self.chains.len())?;
        for c in &self.chains {
            let status = if c.broken.is_some() { "BROKEN" } else { "ok" };
            write!(
                f,
                "  {status:<6} {}  seq {}..{}  {} event(s)  {} .. {}",
                c.chain,
                c.first_seq,
                c.last_seq,
                c.events,
                format_ts(c.first_ts_ms),
                format_ts(c.last_ts_ms)
            )?;
            if c.copies > 0 {
                write!(f, "  ({} identical re-delivered copies ignored)", c.copies)?;
            }
            writeln!(f)?;
        }
        for b in &self.breaks {
            writeln!(f, "FAIL {b}")?;
        }
        if self.breaks.is_empty() {
            writeln!(
                f,
                "OK: every hash recomputes, every prev links, no seq is missing"
            )?;
        }
        Ok(())
    }
}

/// One stored line, parsed.
struct Stored {
    line: usize,
    value: Value,
    stored_hash: String,
}

/// Check a whole NDJSON trail. Events are grouped by chain and sorted by seq,
/// so file order does not matter.
pub fn verify(text: &str, partial: bool) -> VerifyReport {
    let mut chains: BTreeMap<String, BTreeMap<u64, Vec<Stored>>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match read_event(raw) {
            Ok((chain, seq, value)) => {
                let stored_hash = value
                    .get("hash")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                chains
                    .entry(chain)
                    .or_default()
                    .entry(seq)
                    .or_default()
                    .push(Stored {
                        line,
                        value,
                        stored_hash,
                    });
            }
            Err(msg) => unreadable.push(Break::Unreadable { line, msg }),
        }
    }
    let mut report = VerifyReport::default();
    for (chain, events) in chains {
        let summary = verify_chain(&chain, &events, partial);
        report.breaks.extend(summary.broken.clone());
        report.chains.push(summary);
    }
    report.breaks.extend(unreadable);
    report
}

/// Parse one line into (chain, seq, event); the error says what is missing.
fn read_event(raw: &str) -> Result<(String, u64, Value), String> {
    let value = parse_strict(raw.as_bytes(), MAX_EVENT_DEPTH).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    let chain = value
        .get("chain")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    let chain = chain.ok_or("no \"chain\" string")?.to_owned();
    let seq = value.get("seq").and_then(Value::as_u64).filter(|s| *s >= 1);
    let seq = seq.ok_or("no \"seq\" number of at least 1")?;
    if value.get("hash").and_then(Value::as_str).is_none() {
        return Err("no \"hash\" string".into());
    }
    Ok((chain, seq, value))
}

fn verify_chain(chain: &str, events: &BTreeMap<u64, Vec<Stored>>, partial: bool) -> ChainSummary {
    let announced = announced_drops(events);
    let mut summary = ChainSummary {
        chain: chain.to_owned(),
        events: events.len(),
        copies: events.values().map(|v| v.len() - 1).sum(),
        first_seq: events.keys().next().copied().unwrap_or(0),
        last_seq: events.keys().next_back().copied().unwrap_or(0),
        first_ts_ms: u64::MAX,
        last_ts_ms: 0,
        broken: None,
    };
    let mut prev: Option<(u64, &str)> = None;
    for (&seq, copies) in events {
        for s in copies {
            let ts = s.value.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
            summary.first_ts_ms = summary.first_ts_ms.min(ts);
            summary.last_ts_ms = summary.last_ts_ms.max(ts);
        }
        if summary.broken.is_some() {
            continue;
        }
        summary.broken = check_link(chain, seq, copies, prev, partial, &announced);
        prev = copies.first().map(|s| (seq, s.stored_hash.as_str()));
    }
    if summary.first_ts_ms == u64::MAX {
        summary.first_ts_ms = 0;
    }
    summary
}

/// The first problem of the event(s) at `seq`, given the event before it.
fn check_link(
    chain: &str,
    seq: u64,
    copies: &[Stored],
    prev: Option<(u64, &str)>,
    partial: bool,
    announced: &[(u64, u64, u64)],
) -> Option<Break> {
    let first = copies.first()?;
    // Hash before anything else: a tampered field shows up at the tampered seq.
    if let Some(bad) = copies
        .iter()
        .find(|s| event_hash(&s.value).as_deref() != Some(s.stored_hash.as_str()))
    {
        return Some(Break::HashMismatch {
            chain: chain.into(),
            seq,
            line: bad.line,
        });
    }
    if let Some(other) = copies.iter().find(|s| s.stored_hash != first.stored_hash) {
        return Some(Break::Duplicate {
            chain: chain.into(),
            seq,
            lines: (first.line, other.line),
        });
    }
    let after = prev.map_or(0, |(s, _)| s);
    if seq != after + 1 && !(prev.is_none() && partial) {
        let announced_at = announced
            .iter()
            .find(|(first, last, _)| *first <= after + 1 && seq - 1 <= *last)
            .map(|(_, _, at)| *at);
        return Some(Break::Gap {
            chain: chain.into(),
            after,
            next: seq,
            announced_at,
        });
    }
    let expected_prev = match prev {
        Some((_, hash)) => Some(hash),
        None if seq == 1 => Some(GENESIS_PREV),
        None => None, // --partial: the event before is not in this file
    };
    let found_prev = first.value.get("prev").and_then(Value::as_str);
    if expected_prev.is_some() && found_prev != expected_prev {
        return Some(Break::PrevMismatch {
            chain: chain.into(),
            seq,
            line: first.line,
        });
    }
    None
}

/// `(first, last, announcing seq)` of every `dropped` range, merged where they
/// touch, so a gap spanning drops announced by two workers is still recognised.
fn announced_drops(events: &BTreeMap<u64, Vec<Stored>>) -> Vec<(u64, u64, u64)> {
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    for (&seq, copies) in events {
        let Some(list) = copies
            .first()
            .and_then(|s| s.value.get("dropped"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for r in list {
            if let (Some(a), Some(b)) = (
                r.get("first").and_then(Value::as_u64),
                r.get("last").and_then(Value::as_u64),
            ) {
                ranges.push((a.min(b), a.max(b), seq));
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64, u64)> = Vec::new();
    for (a, b, at) in ranges {
        match merged.last_mut() {
            Some(m) if a <= m.1.saturating_add(1) => {
                m.1 = m.1.max(b);
                m.2 = m.2.max(at);
            }
            _ => merged.push((a, b, at)),
        }
    }
    merged
}

fn show_cmd(a: &ShowArgs) -> ExitCode {
    let text = match read(&a.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let filter = ShowFilter {
        subject: a.subject.clone(),
        tool: a.tool.clone(),
        pins: a.pins,
        verdict: a.verdict.clone(),
        since: a.since,
        until: a.until,
    };
    let (table, shown, total) = show(&text, &filter);
    print!("{table}");
    println!("{shown} of {total} event(s) shown");
    ExitCode::SUCCESS
}

#[derive(Debug, Default, Clone)]
pub struct ShowFilter {
    pub subject: Option<String>,
    pub tool: Option<String>,
    pub pins: bool,
    pub verdict: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

/// The `pins` records of an event (tools that differ from their pin).
fn pin_records(e: &Value) -> &[Value] {
    e.get("pins")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

impl ShowFilter {
    fn keeps(&self, e: &Value) -> bool {
        let text = |p: &str| e.pointer(p).and_then(Value::as_str);
        let ts = e.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
        self.subject
            .as_deref()
            .is_none_or(|s| text("/identity/subject") == Some(s))
            && self.tool.as_deref().is_none_or(|t| {
                text("/request/target") == Some(t)
                    || pin_records(e)
                        .iter()
                        .any(|p| p.get("tool").and_then(Value::as_str) == Some(t))
            })
            && (!self.pins || !pin_records(e).is_empty())
            && self
                .verdict
                .as_deref()
                .is_none_or(|v| text("/decision/verdict") == Some(v))
            && self.since.is_none_or(|s| ts >= s)
            && self.until.is_none_or(|u| ts < u)
    }
}

const COLUMNS: [&str; 10] = [
    "TIME (UTC)",
    "CHAIN",
    "SEQ",
    "SUBJECT",
    "VIA",
    "METHOD",
    "TARGET",
    "VERDICT",
    "RULE",
    "RESPONSE",
];
/// Long values (resource URIs, reasons) are cut so one event stays one line.
const MAX_CELL: usize = 40;

/// The table of events matching `filter`, by time; plus (shown, total readable).
pub fn show(text: &str, filter: &ShowFilter) -> (String, usize, usize) {
    let mut events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect();
    let total = events.len();
    events.retain(|e| filter.keeps(e));
    events.sort_by_key(|e| {
        (
            e.get("ts_ms").and_then(Value::as_u64).unwrap_or(0),
            e.get("chain")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            e.get("seq").and_then(Value::as_u64).unwrap_or(0),
        )
    });
    let rows: Vec<([String; 10], Vec<String>)> =
        events.iter().map(|e| (row(e), pin_lines(e))).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for (r, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&COLUMNS.map(str::to_owned));
    for (r, pins) in &rows {
        out.push_str(&line(r));
        // A rug pull's records go under their event, digests whole.
        for p in pins {
            out.push_str(p);
            out.push('\n');
        }
    }
    (out, rows.len(), total)
}

/// One line per pin record: the tool, what was done, both digests (whole:
/// a digest cut short is no digest).
fn pin_lines(e: &Value) -> Vec<String> {
    pin_records(e)
        .iter()
        .map(|p| {
            let field = |k: &str| {
                let s = p.get(k).and_then(Value::as_str).unwrap_or("null");
                s.chars()
                    .map(|c| {
                        if c.is_control() || is_format_char(c) {
                            '?'
                        } else {
                            c
                        }
                    })
                    .collect::<String>()
            };
            format!(
                "    pin {} {}: expected {} actual {}",
                cell(&field("tool")),
                field("action"),
                field("expected"),
                field("actual")
            )
        })
        .collect()
}

fn row(e: &Value) -> [String; 10] {
    let text = |p: &str| cell(e.pointer(p).and_then(Value::as_str).unwrap_or("-"));
    let response = match e.get("response") {
        Some(r) if r.is_object() => {
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
            let error = if r.get("is_error").and_then(Value::as_bool) == Some(true) {
                " error"
            } else {
                ""
            };
            format!("{status}{error}")
        }
        _ => "-".into(),
    };
    // The chain's boot part is what tells two restarts apart; the node is usually obvious.
    let chain = e.get("chain").and_then(Value::as_str).unwrap_or("-");
    [
        format_ts(e.get("ts_ms").and_then(Value::as_u64).unwrap_or(0)),
        cell(chain),
        e.get("seq")
            .and_then(Value::as_u64)
            .map_or("-".into(), |s| s.to_string()),
        text("/identity/subject"),
        text("/identity/via"),
        text("/request/method"),
        text("/request/target"),
        text("/decision/verdict"),
        text("/decision/rule"),
        response,
    ]
}

/// Invisible characters that change how text around them reads: bidi
/// embeddings, overrides and isolates, zero-width joiners and marks, the BOM.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

fn cell(s: &str) -> String {
    // Control characters would let a crafted subject rewrite the terminal;
    // bidi and other formatting characters would make it read as another
    // (U+202E turns "nimda" into "admin" on screen).
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_control() || is_format_char(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    if clean.chars().count() <= MAX_CELL {
        clean
    } else {
        let cut: String = clean.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
/// The standard era-based conversion (400-year cycles of 146097 days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch milliseconds as `2025-01-31T12:00:00.123Z`.
pub fn format_ts(ms: u64) -> String {
    let secs = (ms / 1_000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60,
        ms % 1_000
    )
}

/// `--since`/`--until`: epoch ms, `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM[:SS[.fff]]Z`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad =
        || format!("{s:?} is not epoch milliseconds, YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |p: &str| p.parse::<u32>().map_err(|_| bad());
    let parts: Vec<&str> = date.split('-').collect();
    let [y, mo, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = 0u64;
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let hms: Vec<u32> = hms.split(':').map(num).collect::<Result<_, _>>()?;
        let (h, mi, sec) = match hms.as_slice() {
            [h, mi] => (*h, *mi, 0),
            [h, mi, sec] => (*h, *mi, *sec),
            _ => return Err(bad()),
        };
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        let frac_ms = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            num(&digits)?
        };
        ms = u64::from(h * 3_600 + mi * 60 + sec) * 1_000 + u64::from(frac_ms);
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let day_ms = u64::try_from(days).map_err(|_| bad())? * 86_400_000;
    Ok(day_ms + ms)
}

/// Sealed sample trails for this crate's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use mcp_firewall::audit::{
        append, chain_id, event_line, unsealed_event, ArgumentsMode, AuditDecision, AuditIdentity,
        AuditResponse, EventFacts, MemoryStore, Verdict, Via,
    };
    use serde_json::json;

    /// `n` events of one fresh chain, as NDJSON lines, subjects and tools varied.
    pub fn chain_lines(node: &str, n: u64) -> Vec<String> {
        let store = MemoryStore::new();
        let chain = chain_id(&store, node, 1_718_000_000_000, 42).unwrap_or_default();
        (1..=n)
            .filter_map(|i| {
                let facts = EventFacts {
                    ts_ms: 1_718_000_000_000 + i * 1_000,
                    identity: AuditIdentity {
                        subject: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
                        tenant: Some("acme".into()),
                        roles: vec!["reader".into()],
                        subject_sha256: None,
                        tenant_sha256: None,
                        via: Via::Jwt,
                    },
                    method: "tools/call".into(),
                    target: Some(
                        if i % 3 == 0 {
                            "delete_repo"
                        } else {
                            "get_issue"
                        }
                        .into(),
                    ),
                    id: Some(json!(i)),
                    arguments: Some(json!({"n": i})),
                    redacted_arguments: None,
                    decision: AuditDecision {
                        verdict: if i % 3 == 0 {
                            Verdict::Deny
                        } else {
                            Verdict::Allow
                        },
                        rule: if i % 3 == 0 { "default-deny" } else { "read" }.into(),
                        reason: "test".into(),
                        dry_run: false,
                    },
                    findings: vec![],
                    response: (i % 3 != 0).then_some(AuditResponse {
                        status: 200,
                        is_error: false,
                        bytes: 10,
                        redactions: 0,
                    }),
                    policy_sha256: "ab".repeat(32),
                    vm_start: false,
                    dropped: vec![],
                    pins: vec![],
                    catalogue: vec![],
                    approval: None,
                };
                append(&store, &chain, unsealed_event(facts, ArgumentsMode::Hash)).ok()
            })
            .map(|e| event_line(&e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::chain_lines;
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_show_no_character_that_changes_how_text_reads() {
        let cases = [
            ("escape_sequence", "ci\u{1b}[2Jbot", "ci?[2Jbot"),
            ("right_to_left_override", "\u{202e}nimda", "?nimda"),
            ("isolate", "a\u{2067}b\u{2069}", "a?b?"),
            ("zero_width_joiner", "ad\u{200d}min", "ad?min"),
            ("plain_text_kept", "ci-bot é", "ci-bot é"),
        ];
        for (name, raw, shown) in cases {
            assert_eq!(cell(raw), shown, "{name}");
        }
    }

    fn joined(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn edit(line: &str, f: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(line).unwrap_or_default();
        f(&mut v);
        v.to_string()
    }

    #[test]
    fn good_trail_verifies_with_summary() {
        let report = verify(&joined(&chain_lines("node-a", 5)), false);
        assert_eq!(report.breaks, vec![]);
        let c = &report.chains[0];
        assert_eq!(
            (c.chain.as_str(), c.events, c.first_seq, c.last_seq),
            ("node-a/1718000000000-000000000000002a", 5, 1, 5)
        );
        assert_eq!(
            (c.first_ts_ms, c.last_ts_ms),
            (1_718_000_001_000, 1_718_000_005_000)
        );
        assert!(report.to_string().contains("OK:"), "{report}");
    }

    #[test]
    fn interleaved_out_of_order_chains_verify() {
        let a = chain_lines("node-a", 6);
        let b = chain_lines("node-b", 4);
        let mut mixed: Vec<String> = a.iter().rev().cloned().collect();
        for (i, l) in b.iter().enumerate() {
            mixed.insert(i * 2, l.clone());
        }
        let report = verify(&joined(&mixed), false);
        assert_eq!(report.breaks, vec![]);
        assert_eq!(report.chains.len(), 2);
    }

    #[test]
    fn broken_trails_fail_at_the_right_seq() {
        let lines = chain_lines("n", 6);
        let chain = "n/1718000000000-000000000000002a".to_owned();
        let mut forged_rehashed = serde_json::from_str::<Value>(&lines[2]).unwrap_or_default();
        forged_rehashed["decision"]["verdict"] = json!("allow");
        let rehash = mcp_firewall::audit::event_hash(&forged_rehashed).unwrap_or_default();
        forged_rehashed["hash"] = json!(rehash);
        let table: Vec<(&str, Vec<String>, Break)> = vec![
            (
                "tampered_field_is_a_hash_mismatch_at_that_seq",
                {
                    let mut l = lines.clone();
                    l[3] = edit(&l[3], |v| v["identity"]["subject"] = json!("mallory"));
                    l
                },
                Break::HashMismatch {
                    chain: chain.clone(),
                    seq: 4,
                    line: 4,
                },
            ),
            (
                "tampered_and_rehashed_breaks_the_next_prev",
                {
                    let mut l = lines.clone();
                    l[2] = forged_rehashed.to_string();
                    l
                },
                Break::PrevMismatch {
                    chain: chain.clone(),
                    seq: 4,
                    line: 4,
                },
            ),
            (
                "deleted_line_is_a_gap",
                {
                    let mut l = lines.clone();
                    l.remove(2);
                    l
                },
                Break::Gap {
                    chain: chain.clone(),
                    after: 2,
                    next: 4,
                    announced_at: None,
                },
            ),
            (
                "missing_start_is_a_gap_from_zero",
                lines[2..].to_vec(),
                Break::Gap {
                    chain: chain.clone(),
                    after: 0,
                    next: 3,
                    announced_at: None,
                },
            ),
            (
                "conflicting_same_seq_is_a_duplicate",
                {
                    let mut l = lines.clone();
                    let mut other: Value = serde_json::from_str(&l[1]).unwrap_or_default();
                    other["ts_ms"] = json!(1);
                    other["hash"] =
                        json!(mcp_firewall::audit::event_hash(&other).unwrap_or_default());
                    l.push(other.to_string());
                    l
                },
                Break::Duplicate {
                    chain: chain.clone(),
                    seq: 2,
                    lines: (2, 7),
                },
            ),
        ];
        for (name, trail, want) in table {
            let report = verify(&joined(&trail), false);
            assert_eq!(report.breaks, vec![want], "{name}");
        }
    }

    #[test]
    fn identical_redelivery_is_not_a_break() {
        let mut lines = chain_lines("n", 3);
        lines.push(lines[1].clone());
        let report = verify(&joined(&lines), false);
        assert_eq!(report.breaks, vec![]);
        assert_eq!(report.chains[0].copies, 1);
    }

    #[test]
    fn partial_accepts_a_trail_that_starts_mid_chain_but_still_checks_links() {
        let lines = chain_lines("n", 6);
        assert_eq!(verify(&joined(&lines[2..]), true).breaks, vec![]);
        let mut holed = lines[2..].to_vec();
        holed.remove(1);
        assert!(matches!(
            verify(&joined(&holed), true).breaks[..],
            [Break::Gap {
                after: 3,
                next: 5,
                ..
            }]
        ));
    }

    #[test]
    fn gap_announced_by_the_firewall_says_so() {
        let store = mcp_firewall::audit::MemoryStore::new();
        let chain = mcp_firewall::audit::chain_id(&store, "n", 0, 0).unwrap_or_default();
        let mut lines = Vec::new();
        for i in 1..=4u64 {
            let mut ev = json!({"ts_ms": i});
            if i == 4 {
                ev["dropped"] = json!([{"first": 2, "last": 3}]);
            }
            let sealed = mcp_firewall::audit::append(&store, &chain, ev).unwrap_or_default();
            if i != 2 && i != 3 {
                lines.push(mcp_firewall::audit::event_line(&sealed));
            }
        }
        let report = verify(&joined(&lines), false);
        assert_eq!(
            report.breaks,
            vec![Break::Gap {
                chain,
                after: 1,
                next: 4,
                announced_at: Some(4)
            }]
        );
        assert!(report
            .to_string()
            .contains("announced as dropped by the firewall at seq 4"));
    }

    #[test]
    fn unreadable_lines_are_named() {
        let mut lines = chain_lines("n", 2);
        lines.push("not json".into());
        lines.push(r#"{"chain":"x"}"#.into());
        lines.push(r#"{"chain":"x","seq":1,"seq":2,"hash":"h"}"#.into());
        let got: Vec<usize> = verify(&joined(&lines), false)
            .breaks
            .iter()
            .filter_map(|b| match b {
                Break::Unreadable { line, .. } => Some(*line),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![3, 4, 5]);
    }

    #[test]
    fn show_filters_and_sorts_by_time() {
        let mut lines = chain_lines("n", 6);
        lines.reverse();
        let text = joined(&lines);
        let table = [
            ("no_filter_shows_all", ShowFilter::default(), 6),
            (
                "by_subject",
                ShowFilter {
                    subject: Some("alice".into()),
                    ..Default::default()
                },
                3,
            ),
            (
                "by_tool",
                ShowFilter {
                    tool: Some("delete_repo".into()),
                    ..Default::default()
                },
                2,
            ),
            (
                "by_verdict",
                ShowFilter {
                    verdict: Some("deny".into()),
                    ..Default::default()
                },
                2,
            ),
            (
                "by_time_window",
                ShowFilter {
                    since: Some(1_718_000_002_000),
                    until: Some(1_718_000_004_000),
                    ..Default::default()
                },
                2,
            ),
        ];
        for (name, filter, want) in table {
            let (out, shown, total) = show(&text, &filter);
            assert_eq!((shown, total), (want, 6), "{name}");
            assert_eq!(out.lines().count(), want + 1, "{name}");
        }
        let (out, _, _) = show(&text, &ShowFilter::default());
        let seqs: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        assert_eq!(seqs, ["1", "2", "3", "4", "5", "6"]);
        assert!(out.contains("2024-06-10T06:13:21.000Z"), "{out}");
    }

    #[test]
    fn show_finds_pin_changes_with_both_digests() {
        let old = format!("sha256:{}", "a".repeat(64));
        let new = format!("sha256:{}", "b".repeat(64));
        let lines = [
            json!({"chain": "c", "seq": 1, "ts_ms": 1, "request": {"method": "tools/list"}}),
            json!({"chain": "c", "seq": 2, "ts_ms": 2, "request": {"method": "tools/list"},
                   "pins": [{"tool": "echo", "action": "removed", "expected": old, "actual": new}]}),
            json!({"chain": "c", "seq": 3, "ts_ms": 3, "request": {"method": "tools/call", "target": "echo"},
                   "decision": {"rule": "pin", "verdict": "deny"},
                   "pins": [{"tool": "echo", "action": "refused", "expected": old, "actual": new}]}),
            json!({"chain": "c", "seq": 4, "ts_ms": 4, "request": {"method": "tools/call", "target": "add"}}),
        ]
        .map(|v| v.to_string())
        .join("\n");
        let cases = [
            (
                "pins_only",
                ShowFilter {
                    pins: true,
                    ..Default::default()
                },
                2,
            ),
            (
                "tool_matches_a_list_record",
                ShowFilter {
                    tool: Some("echo".into()),
                    ..Default::default()
                },
                2,
            ),
            ("everything", ShowFilter::default(), 4),
        ];
        for (name, filter, want) in cases {
            let (out, shown, _) = show(&lines, &filter);
            assert_eq!(shown, want, "{name}: {out}");
            assert!(
                out.contains(&format!(
                    "    pin echo removed: expected {old} actual {new}"
                )),
                "{name}: {out}"
            );
        }
    }

    #[test]
    fn show_neutralises_control_characters() {
        let line = r#"{"chain":"c","seq":1,"ts_ms":0,"identity":{"subject":"a\u001b[2Jb"}}"#;
        let (out, _, _) = show(line, &ShowFilter::default());
        assert!(out.contains("a?[2Jb") && !out.contains('\u{1b}'), "{out}");
    }

    #[test]
    fn times_parse_and_format_in_utc() {
        let table = [
            ("epoch_ms", "1718000001000", Ok(1_718_000_001_000)),
            ("date", "2024-06-10", Ok(1_717_977_600_000)),
            (
                "minutes",
                "2024-06-10T06:13Z",
                Ok(1_718_000_000_000 - 20_000),
            ),
            (
                "seconds_and_fraction",
                "2024-06-10T06:13:21.5Z",
                Ok(1_718_000_001_500),
            ),
            ("leap_day", "2024-02-29T00:00:00Z", Ok(1_709_164_800_000)),
            ("offset_refused", "2024-06-10T06:13:21+02:00", Err(())),
            ("month_13_refused", "2024-13-01", Err(())),
            ("garbage_refused", "yesterday", Err(())),
        ];
        for (name, input, want) in table {
            assert_eq!(parse_time(input).map_err(|_| ()), want, "{name}");
        }
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(1_709_164_800_123), "2024-02-29T00:00:00.123Z");
        for ms in [0, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&format_ts(ms)), Ok(ms));
        }
    }
}
