//! `mcp-firewall collector`: a small, durable audit collector for tests, demos
//! and single-node setups.
//!
//! Durability policy: a batch is answered 2xx only after its new lines were
//! written with one `write` and flushed to disk with `fsync` (`sync_data`), so
//! an acknowledged event survives a crash or power loss of this host. A batch
//! that fails to write is cut back off the file and answered 500; the firewall
//! keeps it and retries. Requests are read concurrently, batches appended
//! one at a time, so lines of two batches never interleave.
//!
//! Idempotency: the firewall re-sends a whole batch when an answer is lost.
//! An event's hash covers its chain and seq, so the set of stored hashes
//! (rebuilt from the file at start) recognises every re-delivery, and the
//! same event twice within one batch. A batch that is refused or fails to
//! write leaves the set as it was.

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mcp_firewall::audit::hash_matches;
use mcp_firewall::json::compact::compact_object_members;
use mcp_firewall::json::{digest_from_hex, parse_strict, sha256_of, MAX_SUPPORTED_DEPTH};
use memchr::memmem;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashSet;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Same nesting limit as `audit verify`, so nothing is stored that it cannot
/// read: the deepest a policy lets a request be (`limits.max_json_depth`), as
/// an event with `arguments: redacted` nests its arguments as deep as the
/// request body does.
const MAX_EVENT_DEPTH: usize = MAX_SUPPORTED_DEPTH;

/// Largest body buffer reserved on the strength of Content-Length alone.
const MAX_BODY_PRESIZE: u64 = 4 << 20;

/// Largest batch buffer kept between batches.
const MAX_KEPT_OUT: usize = 4 << 20;

/// A client gets this long to send a request's headers, and again its body;
/// then the connection is closed (408 for a body).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more wait in the listen backlog. With
/// [`MAX_CONNECTION_LIFE`] this bounds what clients that never read their
/// answers can hold (file descriptors, unsent answers).
const MAX_CONNECTIONS: usize = 128;

/// A connection is closed after this long, whatever it is doing (a request
/// cut off is re-sent by the firewall and deduplicated here).
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(120);

/// Bodies read into memory at once: at most this many × `--max-body-bytes`.
const MAX_BODIES_IN_MEMORY: usize = 8;

/// Of a body over the limit, up to this many bytes more than the limit are
/// read and discarded so the sender gets its 413 (closing with unread bytes
/// makes the kernel reset the connection, and the 413 with it); a larger
/// announced body is refused before reading and the connection closed.
const MAX_DISCARDED: u64 = 64 << 20;

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
    let listener = match std::net::TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| args.listen.clone(), |a| a.to_string());
    println!(
        "mcp-firewall collector listening on http://{addr}, appending to {} ({} events already stored)",
        args.out.display(),
        collector.stored()
    );
    // Scripts wait for this line to learn the port.
    let _ = io::stdout().flush();
    match serve(
        listener,
        collector,
        args.max_body_bytes,
        std::future::pending(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: collector stopped: {e}");
            ExitCode::from(2)
        }
    }
}

/// Serve HTTP/1.1 on `listener` (hyper, on one thread) until `shutdown`
/// completes. Connections are read concurrently, so a slow client holds up
/// nobody; batches are appended one at a time, on this thread, so lines of
/// two batches never interleave.
pub fn serve(
    listener: std::net::TcpListener,
    collector: Collector,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let collector = Rc::new(RefCell::new(collector));
    // Arc only because tokio's owned permits want one; everything is on one thread.
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let bodies = Rc::new(Semaphore::new(MAX_BODIES_IN_MEMORY));
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let accept_loop = async {
            loop {
                let Ok(slot) = Arc::clone(&connections).acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        eprintln!("warning: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // An answer is written as headers then body: without this, Nagle
                // holds the body back until the sender's delayed ACK (~40 ms a batch).
                let _ = stream.set_nodelay(true);
                let collector = Rc::clone(&collector);
                let bodies = Rc::clone(&bodies);
                tokio::task::spawn_local(async move {
                    let service = service_fn(move |request| {
                        let (collector, bodies) = (Rc::clone(&collector), Rc::clone(&bodies));
                        async move {
                            Ok::<_, Infallible>(
                                handle(&collector, &bodies, request, max_body_bytes).await,
                            )
                        }
                    });
                    // A connection that breaks off is the client's business:
                    // whatever it sent was answered or not stored.
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
                    drop(slot);
                });
            }
        };
        let (mut accept_loop, mut shutdown) = (pin!(accept_loop), pin!(shutdown));
        poll_fn(|cx| match shutdown.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => accept_loop.as_mut().poll(cx),
        })
        .await;
        Ok(())
    })
}

async fn handle(
    collector: &RefCell<Collector>,
    bodies: &Semaphore,
    request: Request<Incoming>,
    max_body_bytes: usize,
) -> Response<Full<Bytes>> {
    let (status, body) = answer(collector, bodies, request, max_body_bytes).await;
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == 405 {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

async fn answer(
    collector: &RefCell<Collector>,
    bodies: &Semaphore,
    request: Request<Incoming>,
    max_body_bytes: usize,
) -> (u16, Value) {
    if request.method() != Method::POST {
        return (405, json!({"error": "POST NDJSON audit events"}));
    }
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
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
    let too_large = || {
        (
            413,
            json!({"error": format!("body larger than {max_body_bytes} bytes")}),
        )
    };
    let limit = u64::try_from(max_body_bytes).unwrap_or(u64::MAX);
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    // Far too large: refused before reading; the connection is closed, not drained.
    if announced.is_some_and(|n| n > limit.saturating_add(MAX_DISCARDED)) {
        return too_large();
    }
    let Ok(_reading) = bodies.acquire().await else {
        return (503, json!({"error": "the collector is shutting down"}));
    };
    // Room for the announced body up front: growing from empty reallocates
    // and copies a batch ~8 times. Capped, because the length is the
    // client's word until the bytes arrive.
    let presize = announced.unwrap_or(0).min(limit).min(MAX_BODY_PRESIZE);
    let read =
        tokio::time::timeout(READ_TIMEOUT, read_body(request.into_body(), limit, presize)).await;
    let body = match read {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return too_large(),
        Ok(Err(e)) => return (400, json!({"error": format!("cannot read body: {e}")})),
        Err(_) => {
            return (
                408,
                json!({"error": format!("body not received within {}s", READ_TIMEOUT.as_secs())}),
            )
        }
    };
    // No await while the collector is borrowed: one batch at a time.
    let ingested = collector.borrow_mut().ingest(&body);
    match ingested {
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

/// The body if it is at most `limit` bytes; `None` when it is larger, after
/// reading and discarding up to [`MAX_DISCARDED`] bytes past the limit so the
/// answer reaches the sender (see there).
async fn read_body(
    mut body: Incoming,
    limit: u64,
    presize: u64,
) -> Result<Option<Vec<u8>>, hyper::Error> {
    let mut kept = Vec::with_capacity(usize::try_from(presize).unwrap_or(0));
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len() as u64);
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > limit.saturating_add(MAX_DISCARDED) {
            return Ok(None);
        } else {
            kept = Vec::new();
        }
    }
    Ok((seen <= limit).then_some(kept))
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

/// An event's hash as bytes: the index key (no hex string per event).
type Digest = [u8; 32];

/// The audit file and the index of what it holds.
pub struct Collector {
    file: File,
    /// Bytes of complete lines in the file: where a failed write is cut back to.
    len: u64,
    hashes: HashSet<Digest>,
    /// The new lines of a batch, kept between batches so its capacity is reused.
    out: Vec<u8>,
    /// A failed write could not be cut back: the file may end in part of a
    /// line, which the next batch would glue onto. Every batch is then
    /// refused (500, the sender keeps it) until a restart cuts the fragment.
    unsound_tail: bool,
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
        for (i, raw) in lines(&text[..complete]).enumerate() {
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
            out: Vec::new(),
            unsound_tail: false,
        })
    }

    /// Distinct events stored.
    pub fn stored(&self) -> usize {
        self.hashes.len()
    }

    /// Validate a whole NDJSON body, then durably append the events not yet stored.
    pub fn ingest(&mut self, body: &[u8]) -> Result<Ingested, IngestError> {
        let mut fresh: Vec<(&[u8], Digest)> = Vec::new();
        let stored = self
            .index_batch(body, &mut fresh)
            .and_then(|duplicates| self.append(&fresh).map(|()| duplicates));
        match stored {
            Ok(duplicates) => Ok(Ingested {
                accepted: fresh.len(),
                duplicates,
            }),
            Err(e) => {
                // Nothing of the batch is stored: forget what it added to the index.
                for (_, hash) in &fresh {
                    self.hashes.remove(hash);
                }
                Err(e)
            }
        }
    }

    /// Check every line of `body` and add the new events to the index (one
    /// lookup each, which also catches a line repeated within the batch);
    /// `fresh` gets the lines to write. Returns the number of duplicates.
    fn index_batch<'b>(
        &mut self,
        body: &'b [u8],
        fresh: &mut Vec<(&'b [u8], Digest)>,
    ) -> Result<usize, IngestError> {
        let mut duplicates = 0;
        for (i, raw) in lines(body).enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let hash = check_event(raw).map_err(|msg| IngestError::BadLine { line: i + 1, msg })?;
            if self.hashes.insert(hash) {
                fresh.push((raw, hash));
            } else {
                duplicates += 1;
            }
        }
        Ok(duplicates)
    }

    /// Write `fresh` with one `write` and fsync it; on failure cut the file
    /// back to its acknowledged lines.
    fn append(&mut self, fresh: &[(&[u8], Digest)]) -> Result<(), IngestError> {
        if fresh.is_empty() {
            return Ok(());
        }
        if self.unsound_tail {
            return Err(IngestError::Io(io::Error::other(
                "an earlier failed write could not be cut back; restart the collector to cut it",
            )));
        }
        if self.out.capacity() > MAX_KEPT_OUT {
            self.out = Vec::new();
        }
        self.out.clear();
        for (line, _) in fresh {
            self.out.extend_from_slice(line);
            self.out.push(b'\n');
        }
        if let Err(e) = self
            .file
            .write_all(&self.out)
            .and_then(|()| self.file.sync_data())
        {
            // Leave only whole, acknowledged lines behind; if even that fails,
            // refuse further batches: the next start cuts the partial line.
            if let Err(cut) = self.file.set_len(self.len) {
                eprintln!(
                    "error: cannot cut a failed write back off the audit file ({cut}); refusing batches until restarted"
                );
                self.unsound_tail = true;
            }
            return Err(IngestError::Io(e));
        }
        self.len += self.out.len() as u64;
        Ok(())
    }
}

/// The lines of an NDJSON text, split at `\n` (a vectorised search: the
/// bodies are tens of kilobytes); after a final `\n` comes one empty line.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => rest.take(),
        }
    })
}

/// The event's hash if `raw` is a sealed audit event whose hash recomputes.
/// Checking the hash here catches corruption in transit at the door, while the
/// sender still holds the batch.
fn check_event(raw: &[u8]) -> Result<Digest, String> {
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
    // A hash that matches was written by `sha256_hex`: 64 lower-case hex digits.
    digest_from_hex(hash.as_bytes()).ok_or_else(|| "\"hash\" is not 64 hex digits".into())
}

/// Fast path for a line exactly as the filter writes it: canonical JSON, so
/// the event's hash is the SHA-256 of the line's own bytes with the member
/// `,"hash":"<64 hex>"` cut out. That costs one SHA-256 (over the two slices
/// around the member, nothing copied) and one syntax pass instead of building
/// the event as a tree and serialising it again, which made the collector
/// spend ~14 µs of CPU per event next to the Envoy it serves. `None` when the
/// line is not in that shape (re-serialised by a shipper in between, a nested
/// `hash` member before the top-level one, a wrong hash, too deep, any
/// whitespace or escaped top-level key, …): the caller then runs the full
/// recomputation, which also names what is wrong. A line accepted here is
/// valid UTF-8 and JSON, and has exactly the bytes its producer hashed, so
/// corruption in transit is caught and the stored hash is the one a verifier
/// recomputes for a conforming producer; but a producer that hashed
/// non-canonical bytes (keys out of order, duplicate keys) is only caught by
/// `audit verify`, which checks the canonical form. The collector
/// authenticates nobody: anyone who can POST to it can store lines, which is
/// why verification is a separate, offline step.
fn check_line_as_written(raw: &[u8]) -> Option<Digest> {
    const MEMBER: &[u8] = b",\"hash\":\"";
    // Built once: building a searcher costs more than searching one line.
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(MEMBER));
    let at = FINDER.find(raw)?;
    let hex_start = at + MEMBER.len();
    let hex = raw.get(hex_start..hex_start + 64)?;
    let hash = digest_from_hex(hex)?;
    if raw.get(hex_start + 64) != Some(&b'"') {
        return None;
    }
    if sha256_of(&[raw.get(..at)?, raw.get(hex_start + 65..)?]) != hash {
        return None;
    }
    // The whole line's syntax and depth, and the top-level members, in one
    // pass. Keys must come in strictly increasing order, so each of the
    // three is seen at most once.
    let (mut chain, mut seq, mut top_hash) = (None, None, None);
    let syntax_ok = compact_object_members(raw, MAX_EVENT_DEPTH, |key, value| {
        match key {
            b"chain" => chain = Some(value),
            b"seq" => seq = Some(value),
            b"hash" => top_hash = Some(value),
            _ => {}
        }
        true
    });
    fn string(value: &[u8]) -> Option<&[u8]> {
        value.strip_prefix(b"\"")?.strip_suffix(b"\"")
    }
    // A non-empty string (an escape decodes to at least one character).
    let chain_ok = chain.and_then(string).is_some_and(|c| !c.is_empty());
    // An integer of at least 1 (the grammar was checked: no sign, no leading zero).
    let seq_ok = seq
        .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
        .is_some_and(|s| s >= 1);
    // The top-level `hash` must be the member cut out above, or a nested
    // `"hash"` member placed first could pose as the event's hash.
    let hash_ok = top_hash.and_then(string) == Some(hex);
    (syntax_ok && chain_ok && seq_ok && hash_ok).then_some(hash)
}

#[cfg(test)]
mod bench;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_cmd::fixtures::chain_lines;
    use crate::audit_cmd::verify;
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-fw-collector-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir.join("audit.ndjson")
    }

    /// Removes a test's scratch directory when the test ends, pass or fail.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cleanup(path: &Path) -> Cleanup {
        Cleanup(path.parent().map(Path::to_path_buf).unwrap_or_default())
    }

    fn body(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// A collector on an ephemeral port, served from a thread, as `run` does.
    struct Running {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        addr: SocketAddr,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    /// A collector started on a fresh file named after the test.
    fn serving(name: &str) -> (PathBuf, Running) {
        let path = temp_file(name);
        let Some(running) = Running::start(&path) else {
            panic!("collector did not start");
        };
        (path, running)
    }

    /// Stop `running` and remove its file's directory.
    fn stop_and_clean(running: Running, path: &Path) {
        running.stop();
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    impl Running {
        fn start(path: &Path) -> Option<Running> {
            let collector = Collector::open(path).ok()?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let addr = listener.local_addr().ok()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = serve(listener, collector, 1 << 20, shutdown) {
                    eprintln!("collector under test stopped: {e}");
                }
            });
            Some(Running {
                stop: Some(stop),
                addr,
                thread: Some(thread),
            })
        }

        /// POST with a minimal HTTP/1.1 client; returns (status, body).
        fn post(&self, content_type: &str, body: &str) -> (u16, String) {
            self.send(&format!(
                "POST /v1/audit HTTP/1.1\r\nHost: audit\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ))
        }

        /// Send `request` as it is; returns (status, body).
        fn send(&self, request: &str) -> (u16, String) {
            let attempt = || -> io::Result<String> {
                let mut s = TcpStream::connect(self.addr)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.write_all(request.as_bytes())?;
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
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn body_over_the_limit_is_refused_and_nothing_of_it_stored() {
        // The limit is 1 MiB here; the body is announced and sent whole, as
        // Envoy sends it: it is read and discarded, so the 413 reaches the
        // sender every time (closing on unread bytes makes the kernel reset
        // the connection, and the 413 is lost with it).
        let path = temp_file("too-large");
        let Some(running) = Running::start(&path) else {
            panic!("collector did not start");
        };
        let lines = chain_lines("node-a", 1);
        let oversized = format!("{}{}", body(&lines), "\n".repeat(2 << 20));
        for _ in 0..20 {
            let refused = running.post("application/x-ndjson", &oversized);
            assert_eq!(refused.0, 413, "{refused:?}");
        }
        let refused = running.post("application/x-ndjson", &oversized);
        assert_eq!(refused.0, 413, "{refused:?}");
        let after = running.post("application/x-ndjson", &body(&lines));
        assert_eq!(after, (200, r#"{"accepted":1,"duplicates":0}"#.to_owned()));
        running.stop();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            body(&lines)
        );
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn refused_bodies_leave_the_collector_serving() {
        // Each request is refused without its body being read or buffered;
        // a Content-Length of ~90 TB once made the old server allocate it
        // while discarding the body, and abort.
        let (path, running) = serving("hostile-lengths");
        let chunked_over_limit = format!(
            "POST /v1/audit HTTP/1.1\r\nHost: audit\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}",
            "100000\r\n".to_owned() + &"x".repeat(1 << 20) + "\r\n" + "10\r\n" + &"x".repeat(16) + "\r\n0\r\n\r\n"
        );
        let table: Vec<(&str, String, u16)> = vec![
            (
                "absurd_content_length",
                "POST /v1/audit HTTP/1.1\r\nHost: audit\r\nContent-Type: application/x-ndjson\r\nContent-Length: 99999999999999\r\n\r\n".to_owned(),
                413,
            ),
            (
                "content_length_past_u64",
                "POST /v1/audit HTTP/1.1\r\nHost: audit\r\nContent-Length: 999999999999999999999999\r\n\r\n".to_owned(),
                400,
            ),
            ("chunked_body_past_the_limit", chunked_over_limit, 413),
        ];
        for (name, request, want) in table {
            let (status, answer) = running.send(&request);
            assert_eq!(status, want, "{name}: {answer}");
            let lines = chain_lines(name, 1);
            let after = running.post("application/x-ndjson", &body(&lines));
            assert_eq!(
                after.0, 200,
                "{name}: the collector stopped serving: {after:?}"
            );
        }
        stop_and_clean(running, &path);
    }

    #[test]
    fn a_stalled_sender_holds_up_no_other() {
        let (path, running) = serving("stalled");
        // Announces 100 bytes, sends 10, then waits.
        let mut stalled = TcpStream::connect(running.addr).ok();
        if let Some(s) = stalled.as_mut() {
            let _ = s.write_all(
                b"POST /v1/audit HTTP/1.1\r\nHost: audit\r\nContent-Length: 100\r\n\r\n0123456789",
            );
        }
        assert!(stalled.is_some(), "could not connect");
        let lines = chain_lines("node-a", 3);
        let started = std::time::Instant::now();
        let answer = running.post("application/x-ndjson", &body(&lines));
        assert_eq!(answer, (200, r#"{"accepted":3,"duplicates":0}"#.to_owned()));
        // Well under READ_TIMEOUT: the other sender was never waited for.
        assert!(
            started.elapsed() < READ_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        drop(stalled);
        stop_and_clean(running, &path);
    }

    #[test]
    fn redelivered_batch_is_stored_once_even_across_a_restart() {
        let path = temp_file("idempotent");
        let _cleanup = cleanup(&path);
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

    /// Lower-case hex of a digest, as events carry it.
    fn hex(d: Digest) -> String {
        mcp_firewall::json::lower_hex(&d)
    }

    /// `v` sealed again: its hash recomputed, written canonically.
    fn resealed(mut v: Value) -> Vec<u8> {
        v["hash"] = json!(mcp_firewall::audit::event_hash(&v));
        mcp_firewall::audit::event_line(&v).into_bytes()
    }

    /// `raw` with its `,"hash":"…"` member set to the SHA-256 of the rest of
    /// its bytes, as a producer hashing exactly what it wrote would set it.
    fn hashed_as_written(raw: &[u8]) -> Vec<u8> {
        let member = b",\"hash\":\"";
        let at = memchr::memmem::find(raw, member).unwrap_or(0);
        let hex_at = at + member.len();
        let digest = sha256_of(&[&raw[..at], &raw[hex_at + 65..]]);
        let mut out = raw.to_vec();
        out[hex_at..hex_at + 64].copy_from_slice(hex(digest).as_bytes());
        out
    }

    #[test]
    fn lines_as_written_take_the_fast_path_and_anything_else_the_full_check() {
        let lines = chain_lines("node-a", 3);
        let line = lines[1].as_bytes();
        let text = String::from_utf8_lossy(line).into_owned();
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
        let flipped = text.replacen("alice", "alicf", 1);
        // Arguments nested `n` deep put the deepest value at level 2 + n.
        let nested_args = |n: usize| {
            let mut deep = v.clone();
            deep["request"]["arguments"] = (0..n).fold(json!(1), |acc, _| json!([acc]));
            resealed(deep)
        };
        let mut brackets_in_a_string = v.clone();
        brackets_in_a_string["request"]["arguments"] = json!({ "q": "[{".repeat(100) });
        let brackets_in_a_string = resealed(brackets_in_a_string);
        let hash_of = |raw: &[u8]| {
            let v: Value = serde_json::from_slice(raw).unwrap_or_default();
            v["hash"].as_str().unwrap_or_default().to_owned()
        };
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
            (
                "exactly_as_deep_as_verify_reads",
                nested_args(MAX_EVENT_DEPTH - 2),
                Some(hash_of(&nested_args(MAX_EVENT_DEPTH - 2))),
                Ok(hash_of(&nested_args(MAX_EVENT_DEPTH - 2))),
            ),
            (
                "one_level_deeper",
                nested_args(MAX_EVENT_DEPTH - 1),
                None,
                Err(()),
            ),
            ("far_too_deep", nested_args(200), None, Err(())),
            (
                "brackets_inside_strings_do_not_nest",
                brackets_in_a_string.clone(),
                Some(hash_of(&brackets_in_a_string)),
                Ok(hash_of(&brackets_in_a_string)),
            ),
        ];
        // The line with the value of its (first) member `key` replaced.
        let with_member = |key: &str, value: &str| -> Vec<u8> {
            let from = text.find(&format!("\"{key}\":")).unwrap_or(0) + key.len() + 3;
            let rest = &text[from..];
            let len = match rest.strip_prefix('"') {
                Some(string) => string.find('"').map_or(0, |n| n + 2),
                None => rest.find([',', '}']).unwrap_or(0),
            };
            format!("{}{value}{}", &text[..from], &rest[len..]).into_bytes()
        };
        // Hashed right over their own bytes, but not what a producer may store.
        let as_written: [(&'static str, Vec<u8>); 14] = [
            ("seq_zero", with_member("seq", "0")),
            ("seq_not_an_integer", with_member("seq", "2.0")),
            ("empty_chain", with_member("chain", "\"\"")),
            ("chain_not_a_string", with_member("chain", "7")),
            (
                "invalid_utf8_in_a_string",
                text.replacen("alice", "al\u{7f}ce", 1)
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == 0x7f { 0xff } else { b })
                    .collect(),
            ),
            (
                "syntax_error_in_a_member",
                text.replacen("\"decision\":{", "\"decision\":{,", 1)
                    .into_bytes(),
            ),
            (
                "duplicate_top_level_chain",
                text.replacen('{', "{\"chain\":\"other\",", 1).into_bytes(),
            ),
            (
                "duplicate_top_level_seq",
                text.replacen('{', "{\"seq\":7,", 1).into_bytes(),
            ),
            ("trailing_data", format!("{text} {{}}").into_bytes()),
            // `audit verify` refuses these: keys out of order or repeated.
            (
                "duplicate_top_level_member",
                text.replacen('{', "{\"decision\":1,", 1).into_bytes(),
            ),
            (
                "duplicate_nested_member",
                text.replacen("\"decision\":{", "\"decision\":{\"rule\":\"x\",", 1)
                    .into_bytes(),
            ),
            (
                "top_level_key_out_of_order",
                text.replacen('{', "{\"zzz\":1,", 1).into_bytes(),
            ),
            (
                "nested_key_out_of_order",
                text.replacen("\"decision\":{", "\"decision\":{\"zzz\":1,", 1)
                    .into_bytes(),
            ),
            ("not_an_object_at_the_top", format!("[{text}]").into_bytes()),
        ];
        for (name, raw) in as_written {
            table.push((name, hashed_as_written(&raw), None, Err(())));
        }
        // A nested `hash` member placed before the top-level one, carrying the
        // SHA-256 of the rest of the line: without the top-level check it would
        // be stored under that hash and shadow the genuine event.
        let poison = {
            let mut body = text.clone();
            let at = body.find("\"decision\":{").unwrap_or(0) + "\"decision\":{".len();
            body.insert_str(at, "\"x\":0,");
            let cut_at = at + "\"x\":0".len();
            let digest = hex(sha256_of(&[body.as_bytes()]));
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
            assert_eq!(check_line_as_written(&raw).map(hex), fast, "{name}");
            assert_eq!(check_event(&raw).map(hex).map_err(|_| ()), full, "{name}");
        }
    }

    /// Lines as the filter seals them (`prepare` + `seal`, the path it runs),
    /// over the shapes an event takes: every one must take the fast path, so
    /// real traffic never falls back to the full check.
    #[test]
    fn events_sealed_by_the_filter_take_the_fast_path() {
        use mcp_firewall::audit::{
            prepare, ArgumentsMode, AuditDecision, AuditFinding, AuditIdentity, AuditResponse,
            EventFacts, SeqRange, Verdict, Via, GENESIS_PREV,
        };
        let facts = |subject: &str, arguments: Value, vm_start: bool| EventFacts {
            ts_ms: 1_718_000_000_123,
            identity: AuditIdentity {
                roles: vec!["reader".into(), "ops \"x\"".into()],
                subject: Some(subject.into()),
                tenant: None,
                subject_sha256: None,
                tenant_sha256: None,
                via: Via::Jwt,
            },
            method: "tools/call".into(),
            target: Some("get_issue".into()),
            id: Some(json!("req-\u{e9}")),
            arguments: Some(arguments.clone()),
            redacted_arguments: Some(arguments),
            decision: AuditDecision {
                dry_run: false,
                reason: "rule \"read\" matched\n".into(),
                rule: "read".into(),
                verdict: Verdict::Redacted,
            },
            findings: vec![AuditFinding {
                action: "redact".into(),
                kind: "aws_access_key".into(),
                path: "$.params.arguments[\"k\\\\y\"]".into(),
            }],
            response: Some(AuditResponse {
                bytes: 1234,
                is_error: false,
                redactions: 1,
                status: 200,
            }),
            policy_sha256: "ab".repeat(32),
            vm_start,
            dropped: vec![SeqRange { first: 3, last: 9 }],
            pins: Vec::new(),
            catalogue: Vec::new(),
            approval: None,
        };
        let odd_args = json!({
            "q": "quote \" backslash \\ control \u{1} tab \t é 😀 \u{2028}",
            "n": [-3, 0, 1.5e-7, 12345678901234567890u64, null, true, false],
            "deep": [[[{"a": {}}], []]],
        });
        let table = [
            (
                "plain",
                facts("alice", json!({"n": 1}), false),
                ArgumentsMode::Hash,
                7,
            ),
            (
                "first_of_a_chain",
                facts("bob", json!({}), true),
                ArgumentsMode::Hash,
                1,
            ),
            (
                "vm_start",
                facts("bob", json!({}), true),
                ArgumentsMode::Omit,
                42,
            ),
            (
                "redacted_arguments_with_escapes",
                facts("al\"i\\ce\u{7}", odd_args, false),
                ArgumentsMode::Redacted,
                2,
            ),
        ];
        for (name, facts, mode, seq) in table {
            let sealed = prepare(facts, mode).seal("node-a/1718000000000-2a", seq, GENESIS_PREV);
            let want = digest_from_hex(sealed.hash.as_bytes());
            assert!(want.is_some(), "{name}");
            assert_eq!(
                check_line_as_written(sealed.line.as_bytes()),
                want,
                "{name}: {}",
                sealed.line
            );
            assert_eq!(check_event(sealed.line.as_bytes()).ok(), want, "{name}");
        }
    }

    #[test]
    fn bad_requests_are_refused_whole() {
        let path = temp_file("refusals");
        let _cleanup = cleanup(&path);
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
        let _cleanup = cleanup(&path);
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

    /// What `ingest` answers, as comparable values.
    fn outcome(r: Result<Ingested, IngestError>) -> Result<(usize, usize), String> {
        match r {
            Ok(i) => Ok((i.accepted, i.duplicates)),
            Err(IngestError::BadLine { line, .. }) => Err(format!("bad line {line}")),
            Err(IngestError::Io(_)) => Err("io".into()),
        }
    }

    #[test]
    fn ingest_stores_each_event_once_and_refused_batches_leave_no_trace() {
        let l = chain_lines("node-a", 3);
        let joined =
            |idx: &[usize]| -> String { idx.iter().map(|&i| format!("{}\n", l[i])).collect() };
        let bad = format!("{}\nnot json\n", l[0]);
        // (case, earlier bodies, body, answer, lines in the file afterwards)
        type Case<'a> = (
            &'a str,
            Vec<String>,
            String,
            Result<(usize, usize), String>,
            Vec<usize>,
        );
        let table: Vec<Case> = vec![
            (
                "new_events",
                vec![],
                joined(&[0, 1]),
                Ok((2, 0)),
                vec![0, 1],
            ),
            (
                "repeated_within_one_batch",
                vec![],
                joined(&[0, 0, 1, 0]),
                Ok((2, 2)),
                vec![0, 1],
            ),
            (
                "already_stored",
                vec![joined(&[0, 1])],
                joined(&[1, 0]),
                Ok((0, 2)),
                vec![0, 1],
            ),
            (
                "overlapping_an_earlier_batch",
                vec![joined(&[0, 1])],
                joined(&[1, 2]),
                Ok((1, 1)),
                vec![0, 1, 2],
            ),
            (
                "blank_lines_and_crlf",
                vec![],
                format!("{}\r\n\n  \n{}", l[0], l[1]),
                Ok((2, 0)),
                vec![0, 1],
            ),
            ("empty_body", vec![], String::new(), Ok((0, 0)), vec![]),
            (
                "a_bad_line_refuses_the_batch",
                vec![],
                bad.clone(),
                Err("bad line 2".into()),
                vec![],
            ),
            (
                "events_of_a_refused_batch_are_new_later",
                vec![bad.clone()],
                joined(&[0]),
                Ok((1, 0)),
                vec![0],
            ),
            (
                "a_refused_batch_after_stored_events",
                vec![joined(&[1])],
                format!("{}{}", joined(&[2, 1]), "{}\n"),
                Err("bad line 3".into()),
                vec![1],
            ),
        ];
        for (name, earlier, body, want, stored) in table {
            let path = temp_file(name);
            let Ok(mut c) = Collector::open(&path) else {
                panic!("{name}: open failed");
            };
            for e in &earlier {
                let _ = c.ingest(e.as_bytes());
            }
            assert_eq!(outcome(c.ingest(body.as_bytes())), want, "{name}");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(text, joined(&stored), "{name}: file");
            assert_eq!(c.stored(), stored.len(), "{name}: index");
            // A new process indexes the same events from the file.
            let reopened = Collector::open(&path).map(|c| c.stored()).ok();
            assert_eq!(reopened, Some(stored.len()), "{name}: reopened");
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn a_batch_that_fails_to_write_is_not_indexed_nor_appended_to() {
        let path = temp_file("write-fails");
        let l = chain_lines("node-a", 2);
        let Ok(mut c) = Collector::open(&path) else {
            panic!("open failed");
        };
        // A descriptor open for reading only: the write fails (EBADF), and so
        // does cutting it back (EINVAL).
        match File::open(&path) {
            Ok(read_only) => c.file = read_only,
            Err(e) => panic!("{e}"),
        }
        assert_eq!(outcome(c.ingest(body(&l).as_bytes())), Err("io".into()));
        assert_eq!(c.stored(), 0);
        // The file might end in part of a line now: nothing is appended to it,
        // even once it is writable again, until a restart cuts the fragment.
        match OpenOptions::new().append(true).open(&path) {
            Ok(writable) => c.file = writable,
            Err(e) => panic!("{e}"),
        }
        assert_eq!(outcome(c.ingest(body(&l).as_bytes())), Err("io".into()));
        let Ok(mut c) = Collector::open(&path) else {
            panic!("reopen failed");
        };
        assert_eq!(outcome(c.ingest(body(&l).as_bytes())), Ok((2, 0)));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), body(&l));
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
