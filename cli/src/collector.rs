//! `mcp-firewall collector`: a small, durable audit collector for tests, demos
//! and single-node setups.
//!
//! Durability policy: a batch is answered 2xx only after its new lines were
//! written with one `write` and flushed to disk with `fsync` (`sync_data`), so
//! an acknowledged event survives a crash or power loss of this host. A batch
//! that fails to write is cut back off the file and answered 500; the firewall
//! keeps it and retries. Requests are handled one at a time, so lines of two
//! batches never interleave.
//!
//! Idempotency: the firewall re-sends a whole batch when an answer is lost.
//! An event's hash covers its chain and seq, so the set of stored hashes
//! (rebuilt from the file at start) recognises every re-delivery.

use clap::Args;
use mcp_firewall::audit::hash_matches;
use mcp_firewall::json::{parse_strict, sha256_hex};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tiny_http::{Header, Method, Request, Response, Server};

/// Same nesting limit as `audit verify`, so nothing is stored that it cannot read.
const MAX_EVENT_DEPTH: usize = 64;

#[derive(Args)]
pub struct CollectorArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: String,
    /// NDJSON file to append events to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
}

pub fn run(args: CollectorArgs) -> ExitCode {
    let collector = match Collector::open(&args.out) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", args.out.display());
            return ExitCode::from(2);
        }
    };
    let server = match Server::http(&args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    println!(
        "mcp-firewall collector listening on http://{}, appending to {} ({} events already stored)",
        server.server_addr(),
        args.out.display(),
        collector.stored()
    );
    // Scripts wait for this line to learn the port.
    let _ = io::stdout().flush();
    serve(&server, collector, args.max_body_bytes);
    ExitCode::SUCCESS
}

/// Handle requests until the server is unblocked.
pub fn serve(server: &Server, mut collector: Collector, max_body_bytes: usize) {
    for request in server.incoming_requests() {
        handle(&mut collector, request, max_body_bytes);
    }
}

fn handle(collector: &mut Collector, mut request: Request, max_body_bytes: usize) {
    let (status, body) = answer(collector, &mut request, max_body_bytes);
    let mut response = Response::from_string(body.to_string()).with_status_code(status);
    if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        response.add_header(h);
    }
    if status == 405 {
        if let Ok(h) = Header::from_bytes(&b"Allow"[..], &b"POST"[..]) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        // The events are stored either way; the sender will re-send and be deduplicated.
        eprintln!("warning: could not answer {status}: {e}");
    }
}

fn answer(collector: &mut Collector, request: &mut Request, max_body_bytes: usize) -> (u16, Value) {
    if *request.method() != Method::Post {
        return (405, json!({"error": "POST NDJSON audit events"}));
    }
    let content_type = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    // Accept the NDJSON names in use and plain JSON (curl, Fluent Bit's json format).
    if let Some(ct) = content_type {
        let ok = [
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "application/json",
        ]
        .iter()
        .any(|t| ct.starts_with(t));
        if !ok {
            return (
                415,
                json!({"error": format!("content type {ct} is not application/x-ndjson")}),
            );
        }
    }
    let mut body = Vec::new();
    let limit = u64::try_from(max_body_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return (400, json!({"error": format!("cannot read body: {e}")}));
    }
    if body.len() > max_body_bytes {
        return (
            413,
            json!({"error": format!("body larger than {max_body_bytes} bytes")}),
        );
    }
    match collector.ingest(&body) {
        Ok(Ingested {
            accepted,
            duplicates,
        }) => (200, json!({"accepted": accepted, "duplicates": duplicates})),
        Err(IngestError::BadLine { line, msg }) => {
            (400, json!({"error": format!("line {line}: {msg}")}))
        }
        Err(IngestError::Io(e)) => {
            eprintln!("error: write to audit file failed, answered 500: {e}");
            (500, json!({"error": "could not store the batch durably"}))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Ingested {
    /// New events written.
    pub accepted: usize,
    /// Events already stored (re-delivery), not written again.
    pub duplicates: usize,
}

#[derive(Debug)]
pub enum IngestError {
    /// The batch is refused whole, nothing written (1-based line in the body).
    BadLine {
        line: usize,
        msg: String,
    },
    Io(io::Error),
}

/// The audit file and the index of what it holds.
pub struct Collector {
    file: File,
    /// Bytes of complete lines in the file: where a failed write is cut back to.
    len: u64,
    hashes: HashSet<String>,
}

impl Collector {
    /// Open (or create) `path` and index the events it holds. A trailing
    /// partial line can only come from a write that failed or a crash before
    /// fsync, i.e. a batch never acknowledged: it is cut off (and logged) so
    /// the next line does not glue onto it, and the sender will re-send it.
    pub fn open(path: &Path) -> io::Result<Collector> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            // Make the new directory entry itself durable, not just the file's bytes.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut text)?;
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            eprintln!(
                "warning: {}: cutting {} bytes of an unfinished last line (never acknowledged)",
                path.display(),
                text.len() - complete
            );
            file.set_len(complete as u64)?;
            file.sync_data()?;
        }
        let mut hashes = HashSet::new();
        for (i, raw) in text[..complete].split(|b| *b == b'\n').enumerate() {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match check_event(raw) {
                Ok(hash) => {
                    hashes.insert(hash);
                }
                Err(msg) => eprintln!(
                    "warning: {} line {}: {msg}; kept, not indexed",
                    path.display(),
                    i + 1
                ),
            }
        }
        Ok(Collector {
            file,
            len: complete as u64,
            hashes,
        })
    }

    /// Distinct events stored.
    pub fn stored(&self) -> usize {
        self.hashes.len()
    }

    /// Validate a whole NDJSON body, then durably append the events not yet stored.
    pub fn ingest(&mut self, body: &[u8]) -> Result<Ingested, IngestError> {
        let mut fresh: Vec<(&[u8], String)> = Vec::new();
        let mut duplicates = 0;
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let hash = check_event(raw).map_err(|msg| IngestError::BadLine { line: i + 1, msg })?;
            if self.hashes.contains(&hash) || fresh.iter().any(|(_, h)| *h == hash) {
                duplicates += 1;
            } else {
                fresh.push((raw, hash));
            }
        }
        if fresh.is_empty() {
            return Ok(Ingested {
                accepted: 0,
                duplicates,
            });
        }
        let mut out = Vec::with_capacity(fresh.iter().map(|(l, _)| l.len() + 1).sum());
        for (line, _) in &fresh {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if let Err(e) = self
            .file
            .write_all(&out)
            .and_then(|()| self.file.sync_data())
        {
            // Leave only whole, acknowledged lines behind; if even that fails,
            // the next start cuts the partial line.
            let _ = self.file.set_len(self.len);
            return Err(IngestError::Io(e));
        }
        self.len += out.len() as u64;
        let accepted = fresh.len();
        self.hashes.extend(fresh.into_iter().map(|(_, h)| h));
        Ok(Ingested {
            accepted,
            duplicates,
        })
    }
}

/// The event's hash if `raw` is a sealed audit event whose hash recomputes.
/// Checking the hash here catches corruption in transit at the door, while the
/// sender still holds the batch.
fn check_event(raw: &[u8]) -> Result<String, String> {
    if let Some(hash) = check_line_as_written(raw) {
        return Ok(hash);
    }
    let v = parse_strict(raw, MAX_EVENT_DEPTH).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    if v.get("chain")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("no \"chain\" string".into());
    }
    if v.get("seq").and_then(Value::as_u64).is_none_or(|s| s == 0) {
        return Err("no \"seq\" number of at least 1".into());
    }
    let hash = v
        .get("hash")
        .and_then(Value::as_str)
        .ok_or("no \"hash\" string")?;
    if !hash_matches(&v) {
        return Err("\"hash\" is not the hash of the event".into());
    }
    Ok(hash.to_owned())
}

/// The top-level members the fast path needs; serde rejects a duplicate of
/// either and checks the syntax of everything it skips.
#[derive(serde::Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    chain: std::borrow::Cow<'a, str>,
    seq: u64,
    /// The top-level `hash`: it must be the member the fast path cut out, or
    /// a nested `"hash"` member placed first could pose as the event's hash.
    #[serde(borrow)]
    hash: std::borrow::Cow<'a, str>,
}

/// Fast path for a line exactly as the filter writes it: canonical JSON, so
/// the event's hash is the SHA-256 of the line's own bytes with the member
/// `,"hash":"<64 hex>"` cut out. That costs one SHA-256 instead of building
/// the event as a tree and serialising it again, which made the collector
/// spend ~14 µs of CPU per event next to the Envoy it serves. `None` when the
/// line is not in that shape (re-serialised by a shipper in between, a nested
/// `hash` member before the top-level one, a wrong hash, too deep, …): the
/// caller then runs the full recomputation, which also names what is wrong.
/// A line accepted here has exactly the bytes its producer hashed, so
/// corruption in transit is caught and the stored hash is the one a verifier
/// recomputes for a conforming producer; but a producer that hashed
/// non-canonical bytes (keys out of order, duplicate keys, a lone surrogate
/// escape) is only caught by `audit verify`, which checks the canonical form.
/// The collector authenticates nobody: anyone who can POST to it can store
/// lines, which is why verification is a separate, offline step.
fn check_line_as_written(raw: &[u8]) -> Option<String> {
    const MEMBER: &str = ",\"hash\":\"";
    let at = std::str::from_utf8(raw).ok()?.find(MEMBER)?;
    let hex_start = at + MEMBER.len();
    let hash = raw.get(hex_start..hex_start + 64)?;
    if raw.get(hex_start + 64) != Some(&b'"')
        || !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let hash = std::str::from_utf8(hash).ok()?;
    let mut unhashed = Vec::with_capacity(raw.len());
    unhashed.extend_from_slice(raw.get(..at)?);
    unhashed.extend_from_slice(raw.get(hex_start + 65..)?);
    let matches = sha256_hex(&unhashed) == hash;
    if !matches || deeper_than(raw, MAX_EVENT_DEPTH) {
        return None;
    }
    let head: LineHead = serde_json::from_slice(raw).ok()?;
    if head.chain.is_empty() || head.seq == 0 || head.hash != hash {
        return None;
    }
    Some(hash.to_owned())
}

/// Whether objects and arrays nest more than `limit` deep. Fewer than `limit`
/// opening brackets in all (the usual event has about six) settle it with one
/// vectorisable count; only otherwise is the text walked.
fn deeper_than(raw: &[u8], limit: usize) -> bool {
    let openers = raw.iter().filter(|&&b| b == b'{' || b == b'[').count();
    openers > limit && nesting_depth(raw) > limit
}

/// Deepest nesting of objects and arrays in a JSON text (strings skipped).
fn nesting_depth(raw: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod bench;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_cmd::fixtures::chain_lines;
    use crate::audit_cmd::verify;
    use std::net::{SocketAddr, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-fw-collector-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir.join("audit.ndjson")
    }

    fn body(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// A collector on an ephemeral port, served from a thread, as `run` does.
    struct Running {
        server: Arc<Server>,
        addr: SocketAddr,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(path: &Path) -> Option<Running> {
            let collector = Collector::open(path).ok()?;
            let server = Arc::new(Server::http("127.0.0.1:0").ok()?);
            let addr = server.server_addr().to_ip()?;
            let s = Arc::clone(&server);
            let thread = std::thread::spawn(move || serve(&s, collector, 1 << 20));
            Some(Running {
                server,
                addr,
                thread: Some(thread),
            })
        }

        /// POST with a minimal HTTP/1.1 client; returns (status, body).
        fn post(&self, content_type: &str, body: &str) -> (u16, String) {
            let attempt = || -> io::Result<String> {
                let mut s = TcpStream::connect(self.addr)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(
                    s,
                    "POST /v1/audit HTTP/1.1\r\nHost: audit\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            };
            let raw = attempt().unwrap_or_default();
            let status = raw
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = raw
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            (status, body)
        }

        fn stop(mut self) {
            self.server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn redelivered_batch_is_stored_once_even_across_a_restart() {
        let path = temp_file("idempotent");
        let lines = chain_lines("node-a", 5);
        let running = Running::start(&path);
        assert!(running.is_some(), "collector did not start");
        let Some(running) = running else { return };
        let first = running.post("application/x-ndjson", &body(&lines[..3]));
        assert_eq!(first, (200, r#"{"accepted":3,"duplicates":0}"#.to_owned()));
        let again = running.post("application/x-ndjson", &body(&lines[..3]));
        assert_eq!(again, (200, r#"{"accepted":0,"duplicates":3}"#.to_owned()));
        running.stop();

        // A new process loads the index from the file.
        let restarted = Running::start(&path);
        assert!(restarted.is_some(), "restart failed");
        let Some(restarted) = restarted else { return };
        let overlap = restarted.post("application/x-ndjson", &body(&lines[1..5]));
        assert_eq!(
            overlap,
            (200, r#"{"accepted":2,"duplicates":2}"#.to_owned())
        );
        restarted.stop();

        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(stored, body(&lines));
        assert_eq!(verify(&stored, false).breaks, vec![]);
    }

    #[test]
    fn lines_as_written_take_the_fast_path_and_anything_else_the_full_check() {
        let lines = chain_lines("node-a", 3);
        let line = lines[1].as_bytes();
        let v: Value = serde_json::from_slice(line).unwrap_or_default();
        let hash = v["hash"].as_str().unwrap_or_default().to_owned();
        // Same event, keys in another order: its hash still recomputes by the
        // canonical definition, but its bytes are not the ones hashed.
        let mut reordered = String::from("{\"hash\":");
        reordered.push_str(&serde_json::to_string(&hash).unwrap_or_default());
        if let Some(obj) = v.as_object() {
            for (k, val) in obj.iter().rev().filter(|(k, _)| *k != "hash") {
                reordered.push_str(&format!(",{}:{}", json!(k), val));
            }
        }
        reordered.push('}');
        let flipped = String::from_utf8_lossy(line).replacen("alice", "alicf", 1);
        // Correctly hashed, but deeper than `audit verify` reads.
        let mut too_deep = v.clone();
        too_deep["request"]["arguments"] = (0..70).fold(json!(1), |acc, _| json!([acc]));
        too_deep["hash"] = json!(mcp_firewall::audit::event_hash(&too_deep));
        let too_deep = mcp_firewall::audit::event_line(&too_deep);
        // (case, line, fast path's answer, full check's answer)
        type Case = (&'static str, Vec<u8>, Option<String>, Result<String, ()>);
        let mut table: Vec<Case> = vec![
            (
                "line_as_the_filter_wrote_it",
                line.to_vec(),
                Some(hash.clone()),
                Ok(hash.clone()),
            ),
            (
                "reordered_keys",
                reordered.into_bytes(),
                None,
                Ok(hash.clone()),
            ),
            ("one_byte_changed", flipped.into_bytes(), None, Err(())),
            ("too_deep", too_deep.into_bytes(), None, Err(())),
        ];
        // A nested `hash` member placed before the top-level one, carrying the
        // SHA-256 of the rest of the line: without the top-level check it would
        // be stored under that hash and shadow the genuine event.
        let poison = {
            let mut body = String::from_utf8_lossy(line).into_owned();
            let at = body.find("\"decision\":{").unwrap_or(0) + "\"decision\":{".len();
            body.insert_str(at, "\"x\":0,");
            let cut_at = at + "\"x\":0".len();
            let digest = sha256_hex(body.as_bytes());
            body.insert_str(cut_at, &format!(",\"hash\":\"{digest}\""));
            body
        };
        table.push((
            "nested_hash_member_first",
            poison.into_bytes(),
            None,
            Err(()),
        ));
        for (name, raw, fast, full) in table {
            assert_eq!(check_line_as_written(&raw), fast, "{name}");
            assert_eq!(check_event(&raw).map_err(|_| ()), full, "{name}");
        }
        assert_eq!(nesting_depth(br#"{"a":"[[[{{{","b":[{"c":"\"]"}]}"#), 3);
    }

    #[test]
    fn bad_requests_are_refused_whole() {
        let path = temp_file("refusals");
        let lines = chain_lines("node-a", 2);
        let mut tampered: Value = serde_json::from_str(&lines[1]).unwrap_or_default();
        tampered["decision"]["verdict"] = json!("deny");
        let table = [
            (
                "not_json",
                "application/x-ndjson",
                format!("{}\nnot json\n", lines[0]),
                400,
                "line 2",
            ),
            (
                "json_but_not_an_event",
                "application/x-ndjson",
                "{\"a\":1}\n".to_owned(),
                400,
                "chain",
            ),
            (
                "tampered_event",
                "application/x-ndjson",
                format!("{tampered}\n"),
                400,
                "hash",
            ),
            (
                "wrong_content_type",
                "text/html",
                body(&lines),
                415,
                "content type",
            ),
        ];
        let running = Running::start(&path);
        assert!(running.is_some(), "collector did not start");
        let Some(running) = running else { return };
        for (name, ct, payload, want_status, want_text) in table {
            let (status, answer) = running.post(ct, &payload);
            assert_eq!(status, want_status, "{name}: {answer}");
            assert!(answer.contains(want_text), "{name}: {answer}");
        }
        running.stop();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            "",
            "nothing of a refused batch is stored"
        );
    }

    #[test]
    fn unfinished_last_line_is_cut_at_open() {
        let path = temp_file("partial");
        let lines = chain_lines("node-a", 2);
        let _ = std::fs::write(&path, format!("{}\n{}", lines[0], &lines[1][..20]));
        let collector = Collector::open(&path);
        assert_eq!(collector.as_ref().map(Collector::stored).ok(), Some(1));
        let ingested = collector
            .ok()
            .map(|mut c| c.ingest(body(&lines).as_bytes()).ok());
        assert_eq!(
            ingested,
            Some(Some(Ingested {
                accepted: 1,
                duplicates: 1
            }))
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            body(&lines)
        );
    }

    #[test]
    fn duplicates_within_one_batch_are_stored_once() {
        let path = temp_file("inbatch");
        let lines = chain_lines("node-a", 1);
        let got = Collector::open(&path).ok().map(|mut c| {
            c.ingest(body(&[lines[0].clone(), lines[0].clone()]).as_bytes())
                .ok()
        });
        assert_eq!(
            got,
            Some(Some(Ingested {
                accepted: 1,
                duplicates: 1
            }))
        );
    }
}
