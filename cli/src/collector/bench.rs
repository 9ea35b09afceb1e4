//! CPU cost of the collector per event: a benchmark, not a timed test (it
//! asserts only that every batch was stored). Run it alone, in release
//! (`--bin`: building the integration tests too would build the library twice,
//! with the release profile's `panic = "abort"` and without, and fail):
//!
//! ```text
//! cargo test --release -p mcp-firewall-cli --bin mcp-firewall -- --ignored --exact \
//!     collector::bench::cpu_per_event --nocapture
//! BENCH_EVENTS=20000 BENCH_BATCH=100 BENCH_ROUNDS=5 BENCH_DISK_DIR=/var/tmp ...   # the knobs
//! BENCH_PHASES=tmpfs,disk,http,http-disk ...   # which measurements (default all)
//! BENCH_LINES=/dev/shm/bench-lines.ndjson ...   # seal the events once, reuse them
//! ```
//!
//! Events are sealed by the crate's own audit code (`chain_lines`), about the
//! size of the filter's (~650-750 bytes), BENCH_EVENTS of them in
//! BENCH_BATCH-event NDJSON bodies. Measured:
//! - `ingest` on a tmpfs file (BENCH_TMPFS_DIR, default /dev/shm): checking,
//!   index, write and fsync, the latter nearly free there;
//! - re-delivery of the same batches (all duplicates: nothing written);
//! - `Collector::open` of the file written (the index rebuilt at start);
//! - `ingest` on a file of BENCH_DISK_DIR (default the temp dir), with a real
//!   fsync per batch;
//! - the whole HTTP path, on tmpfs and on the disk: a keep-alive client
//!   thread posts the batches as Envoy does and the collector's CPU is the
//!   process's minus the client thread's.
//!
//! CPU time is from getrusage, user and system apart, in µs per event; each
//! is measured BENCH_ROUNDS times and the round of least CPU is shown (the
//! machine may be busy with other work), with the median total.

use super::{serve, Collector};
use crate::audit_cmd::fixtures::chain_lines;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Default)]
struct Cpu {
    user_us: f64,
    sys_us: f64,
}

fn rusage(who: libc::c_int) -> Cpu {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Cpu {
        user_us: us(ru.ru_utime),
        sys_us: us(ru.ru_stime),
    }
}

fn since(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        user_us: b.user_us - a.user_us,
        sys_us: b.sys_us - a.sys_us,
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, cpu: Cpu, wall: Duration, events: usize) {
    let n = events as f64;
    println!(
        "[bench-collector] {what:<28} user {:6.2} us/event  sys {:6.2} us/event  total {:6.2} us/event  wall {:6.2} us/event",
        cpu.user_us / n,
        cpu.sys_us / n,
        (cpu.user_us + cpu.sys_us) / n,
        wall.as_secs_f64() * 1e6 / n
    );
}

fn fresh_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let dir = dir.join(format!("mcp-fw-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir.join("audit.ndjson")
}

/// Ingest every body on this thread; returns its CPU and wall time.
fn ingest_all(collector: &mut Collector, bodies: &[Vec<u8>]) -> (Cpu, Duration, usize) {
    let (t0, c0) = (Instant::now(), rusage(libc::RUSAGE_THREAD));
    let mut accepted = 0;
    for b in bodies {
        accepted += collector.ingest(b).map(|i| i.accepted).unwrap_or(0);
    }
    (
        since(c0, rusage(libc::RUSAGE_THREAD)),
        t0.elapsed(),
        accepted,
    )
}

/// POST each body over one keep-alive connection, with the headers Envoy's
/// callout sends; returns how many were answered 200.
fn post_all(addr: std::net::SocketAddr, bodies: &[Vec<u8>]) -> usize {
    let Ok(stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return 0;
    };
    let mut reader = BufReader::new(stream);
    let mut ok = 0;
    for body in bodies {
        let head = format!(
            "POST /v1/audit HTTP/1.1\r\nhost: audit\r\ncontent-type: application/x-ndjson\r\n\
             content-length: {}\r\nx-forwarded-proto: http\r\n\
             x-request-id: 6f0e2d5c-8a5e-4c1b-9b7a-3f1d2e4c5b6a\r\n\
             x-envoy-expected-rq-timeout-ms: 5000\r\n\r\n",
            body.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body))
            .is_err()
        {
            break;
        }
        let (mut status, mut length, mut line) = (0u16, 0usize, String::new());
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return ok;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
                status = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut answer = vec![0; length];
        if reader.read_exact(&mut answer).is_err() {
            break;
        }
        ok += usize::from(status == 200);
    }
    ok
}

/// The collector's CPU for one round of the HTTP path: one keep-alive
/// connection, one batch at a time, as Envoy's callouts come.
fn http_round(dir: &std::path::Path, bodies: &Arc<Vec<Vec<u8>>>) -> (Cpu, Duration) {
    let path = fresh_file(dir, "http");
    let collector = Collector::open(&path).expect("open");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve(listener, collector, 32 << 20, shutdown).expect("serve");
    });
    let b = Arc::clone(bodies);
    let (t0, p0) = (Instant::now(), rusage(libc::RUSAGE_SELF));
    let client = std::thread::spawn(move || {
        let c0 = rusage(libc::RUSAGE_THREAD);
        let ok = post_all(addr, &b);
        (ok, since(c0, rusage(libc::RUSAGE_THREAD)))
    });
    let (ok, client_cpu) = client.join().expect("client");
    let (wall, process) = (t0.elapsed(), since(p0, rusage(libc::RUSAGE_SELF)));
    let _ = stop.send(());
    let _ = thread.join();
    assert_eq!(ok, bodies.len(), "every batch answered 200");
    if let Some(d) = path.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
    let collector_cpu = Cpu {
        user_us: process.user_us - client_cpu.user_us,
        sys_us: process.sys_us - client_cpu.sys_us,
    };
    (collector_cpu, wall)
}

/// Report the round of least CPU (the one least disturbed by other load on
/// the machine) and the median total.
fn report_rounds(what: &str, mut rounds: Vec<(Cpu, Duration)>, events: usize) {
    let total = |c: &Cpu| c.user_us + c.sys_us;
    rounds.sort_by(|a, b| total(&a.0).total_cmp(&total(&b.0)));
    let median = rounds.get(rounds.len() / 2).map_or(0.0, |r| total(&r.0));
    if let Some((cpu, wall)) = rounds.first() {
        report(what, *cpu, *wall, events);
        println!(
            "[bench-collector] {:<28} median total {:6.2} us/event over {} rounds",
            "",
            median / events as f64,
            rounds.len()
        );
    }
}

#[test]
#[ignore = "benchmark: run alone in release, see the module doc"]
fn cpu_per_event() {
    let events = env_or("BENCH_EVENTS", 20_000);
    let batch = env_or("BENCH_BATCH", 100).max(1);
    let rounds = env_or("BENCH_ROUNDS", 5).max(1);
    let tmpfs = PathBuf::from(std::env::var("BENCH_TMPFS_DIR").unwrap_or("/dev/shm".into()));
    let disk = std::env::var("BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());

    // Sealing the events costs far more than checking them: with BENCH_LINES
    // set they are sealed once, kept in that file and read back on later runs,
    // so that `perf stat` of a run counts little but the collector's work.
    let cached = std::env::var("BENCH_LINES").ok().map(PathBuf::from);
    let lines: Vec<String> = match cached.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) if text.lines().count() == events => {
            text.lines().map(str::to_owned).collect()
        }
        _ => {
            let lines = chain_lines("bench-node", events as u64);
            if let Some(path) = &cached {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                std::fs::write(path, text).expect("write BENCH_LINES");
            }
            lines
        }
    };
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(batch)
        .map(|c| {
            c.iter()
                .flat_map(|l| [l.as_bytes(), b"\n"])
                .flatten()
                .copied()
                .collect()
        })
        .collect();
    println!(
        "[bench-collector] {events} events of {} bytes on average, {} bodies of {batch}, best of {rounds} rounds",
        bytes / events.max(1),
        bodies.len()
    );

    let phases = std::env::var("BENCH_PHASES").unwrap_or("tmpfs,disk,http,http-disk".into());
    let wanted = |phase: &str| phases.split(',').any(|p| p == phase);
    for (what, dir) in [("tmpfs", &tmpfs), ("disk", &disk)] {
        if !wanted(what) {
            continue;
        }
        let (mut new, mut dup, mut open) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let path = fresh_file(dir, what);
            let mut collector = Collector::open(&path).expect("open");
            let (cpu, wall, accepted) = ingest_all(&mut collector, &bodies);
            assert_eq!(accepted, events, "{what}");
            new.push((cpu, wall));
            if what == "tmpfs" {
                let (cpu, wall, accepted) = ingest_all(&mut collector, &bodies);
                assert_eq!(accepted, 0);
                dup.push((cpu, wall));
                drop(collector);
                let (t0, c0) = (Instant::now(), rusage(libc::RUSAGE_THREAD));
                let reopened = Collector::open(&path).expect("reopen");
                open.push((since(c0, rusage(libc::RUSAGE_THREAD)), t0.elapsed()));
                assert_eq!(reopened.stored(), events);
            }
            if let Some(d) = path.parent() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        report_rounds(&format!("ingest, new, {what}"), new, events);
        if what == "tmpfs" {
            report_rounds("ingest, all duplicates", dup, events);
            report_rounds("open (index rebuild)", open, events);
        }
    }

    let bodies = Arc::new(bodies);
    for (phase, what, dir) in [("http", "tmpfs", &tmpfs), ("http-disk", "disk", &disk)] {
        if wanted(phase) {
            let http = (0..rounds).map(|_| http_round(dir, &bodies)).collect();
            report_rounds(&format!("HTTP path, {what}, collector"), http, events);
        }
    }
}
