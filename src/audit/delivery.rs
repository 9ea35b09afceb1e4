//! Getting sealed events to the collector: batching, one callout at a time,
//! retries with backoff, and a bounded buffer whose losses are counted exactly.
//!
//! Pure: time comes in as `now_ms`, the callout is the caller's. Envoy gives
//! each worker VM its own `Delivery`; a callout per event costs most of the
//! throughput (DESIGN.md), so the root context sends batches from its tick.

use super::config::AuditConfig;
use super::event::SeqRange;
use std::collections::VecDeque;

/// First retry delay after a failed batch; doubled per consecutive failure.
pub const BACKOFF_BASE_MS: u64 = 250;
/// Longest wait between two attempts, so a recovered collector is found soon.
pub const BACKOFF_CAP_MS: u64 = 30_000;
/// Drop ranges kept exactly before further drops are folded into the last one,
/// so a long outage cannot grow the report without bound.
pub const MAX_DROP_RANGES: usize = 64;

/// One POST worth of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Pass back to [`Delivery::on_sent`] with the callout's outcome.
    pub token: u64,
    /// NDJSON: one event per line, each line ending in `\n`.
    pub body: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: usize,
}

/// What [`Delivery::push`] did with an event.
/// (Dropped when the buffer holds `max_buffered` events or the event would
/// take it over `max_buffered_bytes`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Buffered,
    /// The buffer was full; the event is lost and counted.
    Dropped,
}

/// What [`Delivery::on_sent`] made of a callout's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        count: usize,
    },
    /// Kept at the front of the buffer; no batch before `at_ms`.
    WillRetry {
        at_ms: u64,
    },
    /// The collector refused the batch as invalid; retrying cannot help, so its
    /// events are dropped (and counted) instead of blocking the queue forever.
    Rejected {
        count: usize,
    },
    /// The collector answered 413 (body too large) to a batch of several
    /// events: they go back to the front and leave again in batches of at
    /// most `cap` events, at once (the collector is up: no backoff).
    Split {
        cap: usize,
    },
    /// Not the batch in flight (answered after we gave up on it): ignored.
    Stale,
}

/// Counters for stats and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounters {
    /// Events accepted by `push`.
    pub pushed: u64,
    /// Events the collector acknowledged with 2xx.
    pub sent: u64,
    /// Failed batch attempts that will be retried.
    pub retried: u64,
    /// Events lost: buffer full, or in a batch the collector rejected.
    pub dropped: u64,
    /// Events held now (waiting + in flight).
    pub buffered: u64,
    /// Bytes of the events held now (their NDJSON lines).
    pub buffered_bytes: u64,
}

/// Losses since the last report, for a warning log and for the `dropped`
/// field of the next event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    pub count: u64,
    /// Sorted, disjoint. Exact unless `exact` is false, when the last range
    /// also covers seqs that other workers delivered.
    pub ranges: Vec<SeqRange>,
    pub exact: bool,
}

/// What a worker VM's delivery still held when its root context went away
/// (a policy swap): handed to the delivery that replaces it, which sends the
/// events and announces the losses as its own. Events keep their order (the
/// batch that was in flight first: it may have reached the collector, which
/// stores an event once however often it arrives).
#[derive(Debug, Default)]
pub struct Handover {
    events: Vec<Waiting>,
    unannounced: Option<DropReport>,
    unlogged: Option<DropReport>,
}

impl Handover {
    /// Events handed over.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.unannounced.is_none() && self.unlogged.is_none()
    }
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    line: String,
    since_ms: u64,
}

#[derive(Debug)]
struct InFlight {
    token: u64,
    events: Vec<Waiting>,
    /// If the host never calls back, give up on the callout after this.
    deadline_ms: u64,
}

/// The per-VM delivery state machine.
#[derive(Debug)]
pub struct Delivery {
    max_batch: usize,
    /// Body bytes per POST at most (one event larger than this goes alone).
    max_batch_bytes: usize,
    /// Events per POST now: `max_batch`, halved by each 413 and doubled back
    /// by each delivered batch, so one refused size is not tried again and
    /// again, and a collector that was only briefly strict gets full batches.
    batch_cap: usize,
    flush_ms: u64,
    max_buffered: usize,
    max_buffered_bytes: usize,
    /// Bytes of the lines held (waiting + in flight), kept as events come and go.
    held_bytes: usize,
    stuck_after_ms: u64,
    waiting: VecDeque<Waiting>,
    in_flight: Option<InFlight>,
    consecutive_failures: u32,
    retry_at_ms: u64,
    next_token: u64,
    counters: DeliveryCounters,
    /// Drops not yet in a warning log.
    unlogged: Option<DropReport>,
    /// Drops not yet announced in an event that made it into the buffer.
    unannounced: Option<DropReport>,
}

impl Delivery {
    pub fn new(cfg: &AuditConfig) -> Self {
        Delivery {
            max_batch: cfg.max_batch.max(1),
            max_batch_bytes: cfg.max_batch_bytes.max(1),
            batch_cap: cfg.max_batch.max(1),
            flush_ms: cfg.flush_ms,
            max_buffered: cfg.max_buffered.max(cfg.max_batch).max(1),
            max_buffered_bytes: cfg.max_buffered_bytes.max(1),
            held_bytes: 0,
            // Envoy answers 504 at `timeout_ms`; twice that means the answer is lost.
            stuck_after_ms: cfg.timeout_ms.saturating_mul(2),
            waiting: VecDeque::new(),
            in_flight: None,
            consecutive_failures: 0,
            retry_at_ms: 0,
            next_token: 1,
            counters: DeliveryCounters::default(),
            unlogged: None,
            unannounced: None,
        }
    }

    fn buffered(&self) -> usize {
        self.waiting.len() + self.in_flight.as_ref().map_or(0, |f| f.events.len())
    }

    /// Queue a sealed event. When the buffer is full, in events or in bytes,
    /// the *new* event is dropped: what is already buffered stays a run the
    /// collector will get whole, and the first dropped seq marks when the
    /// outage filled the buffer. The byte bound is what keeps a worker VM's
    /// memory (and so the VM) alive when callers send large events while the
    /// collector is down.
    pub fn push(&mut self, seq: u64, line: String, now_ms: u64) -> Pushed {
        if self.buffered() >= self.max_buffered
            || self.held_bytes.saturating_add(line_bytes(&line)) > self.max_buffered_bytes
        {
            self.record_drop(seq);
            return Pushed::Dropped;
        }
        self.counters.pushed += 1;
        self.held_bytes = self.held_bytes.saturating_add(line_bytes(&line));
        // This event carried `drops_to_announce()`, and it is now on its way.
        self.unannounced = None;
        self.waiting.push_back(Waiting {
            seq,
            line,
            since_ms: now_ms,
        });
        Pushed::Buffered
    }

    /// The batch to POST now, if any: none while one is in flight or during
    /// backoff; otherwise a full batch at once, or a partial one when its oldest
    /// event has waited `flush_ms`.
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if let Some(f) = &self.in_flight {
            if now_ms < f.deadline_ms {
                return None;
            }
            let token = f.token;
            self.on_sent(token, None, now_ms);
        }
        let oldest = self.waiting.front()?;
        if now_ms < self.retry_at_ms {
            return None;
        }
        let n = self.batch_len();
        let full = n < self.waiting.len() || n >= self.batch_cap;
        let retrying = self.consecutive_failures > 0;
        if !full && !retrying && now_ms.saturating_sub(oldest.since_ms) < self.flush_ms {
            return None;
        }
        let events: Vec<Waiting> = self.waiting.drain(..n).collect();
        let mut body = String::with_capacity(events.iter().map(|e| e.line.len() + 1).sum());
        for e in &events {
            body.push_str(&e.line);
            body.push('\n');
        }
        let token = self.next_token;
        self.next_token += 1;
        let batch = Batch {
            token,
            body,
            first_seq: events.first().map_or(0, |e| e.seq),
            last_seq: events.last().map_or(0, |e| e.seq),
            count: events.len(),
        };
        self.in_flight = Some(InFlight {
            token,
            events,
            deadline_ms: now_ms.saturating_add(self.stuck_after_ms),
        });
        Some(batch)
    }

    /// How many waiting events the next batch takes: up to `batch_cap`
    /// events and `max_batch_bytes` of body, and at least one (an event
    /// larger than `max_batch_bytes` goes alone; a 413 for it drops it).
    fn batch_len(&self) -> usize {
        let mut bytes = 0usize;
        let mut n = 0usize;
        for e in self.waiting.iter().take(self.batch_cap) {
            bytes = bytes.saturating_add(line_bytes(&e.line));
            if n > 0 && bytes > self.max_batch_bytes {
                break;
            }
            n += 1;
        }
        n
    }

    /// True when [`Delivery::next_batch`] would send a full batch now: nothing
    /// in flight, no backoff, a batch's worth of events (or bytes) waiting.
    /// Changes nothing.
    pub fn full_batch_due(&self, now_ms: u64) -> bool {
        if self.in_flight.is_some() || now_ms < self.retry_at_ms || self.waiting.is_empty() {
            return false;
        }
        let n = self.batch_len();
        n < self.waiting.len() || n >= self.batch_cap
    }

    /// The token of the batch in flight, if any (it is given up on by
    /// [`Delivery::next_batch`] once its answer is overdue).
    pub fn in_flight_token(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.token)
    }

    /// Report the callout's outcome: `status` is the collector's HTTP status,
    /// `None` when the callout could not be dispatched or never answered.
    /// Envoy reports its own timeout as 504.
    pub fn on_sent(&mut self, token: u64, status: Option<u16>, now_ms: u64) -> SendOutcome {
        let Some(flight) = self.in_flight.take_if(|f| f.token == token) else {
            return SendOutcome::Stale;
        };
        match status {
            Some(200..=299) => {
                self.consecutive_failures = 0;
                self.retry_at_ms = 0;
                self.batch_cap = self.batch_cap.saturating_mul(2).min(self.max_batch);
                self.release(&flight.events);
                self.counters.sent += flight.events.len() as u64;
                SendOutcome::Delivered {
                    count: flight.events.len(),
                }
            }
            // Too large for this collector: the events are fine, the batch
            // is not. Split it instead of dropping other callers' events
            // with the one that made it large.
            Some(413) if flight.events.len() > 1 => {
                let cap = (flight.events.len() / 2).max(1);
                self.batch_cap = cap;
                self.counters.retried += 1;
                self.consecutive_failures = 0;
                self.retry_at_ms = 0;
                for e in flight.events.into_iter().rev() {
                    self.waiting.push_front(e);
                }
                SendOutcome::Split { cap }
            }
            Some(s) if is_permanent_rejection(s) => {
                self.release(&flight.events);
                let count = flight.events.len();
                for e in &flight.events {
                    self.record_drop(e.seq);
                }
                // The collector is up and answering: no reason to back off.
                self.consecutive_failures = 0;
                self.retry_at_ms = 0;
                SendOutcome::Rejected { count }
            }
            _ => {
                self.counters.retried += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let exp = self.consecutive_failures.saturating_sub(1).min(20);
                let delay = BACKOFF_BASE_MS.saturating_mul(1 << exp).min(BACKOFF_CAP_MS);
                self.retry_at_ms = now_ms.saturating_add(delay);
                // Back to the front, in order: the retry carries the same events.
                for e in flight.events.into_iter().rev() {
                    self.waiting.push_front(e);
                }
                SendOutcome::WillRetry {
                    at_ms: self.retry_at_ms,
                }
            }
        }
    }

    /// True when the buffer is full: with `on_failure: closed` the filter
    /// refuses new requests until delivery catches up.
    pub fn is_saturated(&self) -> bool {
        self.buffered() >= self.max_buffered || self.held_bytes >= self.max_buffered_bytes
    }

    pub fn counters(&self) -> DeliveryCounters {
        DeliveryCounters {
            buffered: self.buffered() as u64,
            buffered_bytes: self.held_bytes as u64,
            ..self.counters
        }
    }

    /// Give up everything held: the batch in flight (its answer will not be
    /// waited for), the waiting events and the losses not yet announced or
    /// logged. Leaves this delivery empty.
    pub fn hand_over(&mut self) -> Handover {
        let mut events: Vec<Waiting> = self.in_flight.take().map(|f| f.events).unwrap_or_default();
        events.extend(self.waiting.drain(..));
        self.held_bytes = 0;
        Handover {
            events,
            unannounced: self.unannounced.take(),
            unlogged: self.unlogged.take(),
        }
    }

    /// Take over what another delivery handed over: its events join this
    /// buffer (those over this buffer's bounds are dropped, counted and
    /// announced like any other), its losses are announced and logged by this
    /// one. Returns how many events were dropped.
    pub fn adopt(&mut self, handover: Handover, now_ms: u64) -> usize {
        let mut dropped = 0;
        // Already counted by the delivery that lost them.
        if let Some(report) = handover.unannounced {
            merge_drops(&mut self.unannounced, report);
        }
        if let Some(report) = handover.unlogged {
            merge_drops(&mut self.unlogged, report);
        }
        for e in handover.events {
            let bytes = line_bytes(&e.line);
            if self.buffered() >= self.max_buffered
                || self.held_bytes.saturating_add(bytes) > self.max_buffered_bytes
            {
                self.record_drop(e.seq);
                dropped += 1;
                continue;
            }
            // Not `push`: these were sealed before; they announce nothing, so
            // the losses waiting for an announcement stay pending.
            self.counters.pushed += 1;
            self.held_bytes = self.held_bytes.saturating_add(bytes);
            self.waiting.push_back(Waiting {
                since_ms: e.since_ms.min(now_ms),
                ..e
            });
        }
        dropped
    }

    /// Events that left the buffer for good: their bytes no longer count.
    fn release(&mut self, events: &[Waiting]) {
        let bytes: usize = events.iter().map(|e| line_bytes(&e.line)).sum();
        self.held_bytes = self.held_bytes.saturating_sub(bytes);
    }

    pub fn dropped_total(&self) -> u64 {
        self.counters.dropped
    }

    /// Losses since the previous call, if any (then resets): for the warning log.
    pub fn take_drop_report(&mut self) -> Option<DropReport> {
        self.unlogged.take()
    }

    /// Seq ranges to put in the `dropped` field of the next event. They stay
    /// pending until an event is actually buffered by [`Delivery::push`], so an
    /// announcement is not lost with an announcing event that is dropped too.
    pub fn drops_to_announce(&self) -> Vec<SeqRange> {
        self.unannounced
            .as_ref()
            .map(|r| r.ranges.clone())
            .unwrap_or_default()
    }

    fn record_drop(&mut self, seq: u64) {
        self.counters.dropped += 1;
        add_drop(&mut self.unlogged, seq);
        add_drop(&mut self.unannounced, seq);
    }
}

/// Add `from`'s losses to `into`: ranges sorted and coalesced, at most
/// `MAX_DROP_RANGES` of them (the excess folded into the last, then inexact).
fn merge_drops(into: &mut Option<DropReport>, from: DropReport) {
    let report = into.get_or_insert(DropReport {
        count: 0,
        ranges: Vec::new(),
        exact: true,
    });
    report.count += from.count;
    report.exact &= from.exact;
    let mut all: Vec<SeqRange> = report.ranges.drain(..).chain(from.ranges).collect();
    crate::sort::sort_by(&mut all, |a, b| a.first < b.first);
    for r in all {
        let full = report.ranges.len() >= MAX_DROP_RANGES;
        match report.ranges.last_mut() {
            Some(last) if r.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(r.last);
            }
            Some(last) if full => {
                last.last = last.last.max(r.last);
                report.exact = false;
            }
            _ => report.ranges.push(r),
        }
    }
}

/// What one event adds to a batch body: its line and the newline after it.
fn line_bytes(line: &str) -> usize {
    line.len().saturating_add(1)
}

fn add_drop(report: &mut Option<DropReport>, seq: u64) {
    let report = report.get_or_insert(DropReport {
        count: 0,
        ranges: Vec::new(),
        exact: true,
    });
    report.count += 1;
    let full = report.ranges.len() >= MAX_DROP_RANGES;
    if let Some(last) = report.ranges.last_mut() {
        if seq == last.last.saturating_add(1) {
            last.last = seq;
            return;
        }
        if full {
            last.last = last.last.max(seq);
            report.exact = false;
            return;
        }
    }
    report.ranges.push(SeqRange {
        first: seq,
        last: seq,
    });
}

/// Statuses that say "this request is wrong", not "try later". 408 and 429 are
/// 4xx but temporary; 404 is most likely a misconfigured path that an operator
/// will fix, so those events wait in the buffer rather than vanish. 413 is
/// final only for a batch of one event (larger ones are split first).
fn is_permanent_rejection(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

#[cfg(test)]
mod tests {
    use super::super::config::{ArgumentsMode, OnFailure};
    use super::*;
    use serde_json::{json, Value};

    fn cfg(max_batch: usize, max_buffered: usize) -> AuditConfig {
        AuditConfig {
            cluster: "c".into(),
            path: "/v1/audit".into(),
            authority: "c".into(),
            max_batch,
            flush_ms: 200,
            max_buffered,
            on_failure: OnFailure::Open,
            arguments: ArgumentsMode::Hash,
            timeout_ms: 1_000,
            max_batch_bytes: 1 << 20,
            max_buffered_bytes: 16 << 20,
        }
    }

    /// Queue a sealed event given as a JSON value (its canonical line).
    fn push_value(d: &mut Delivery, v: &Value, now: u64) -> Pushed {
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        d.push(seq, crate::audit::event_line(v), now)
    }

    fn ev(seq: u64) -> Value {
        json!({"seq": seq, "chain": "n/b", "hash": "h"})
    }

    fn fill(d: &mut Delivery, seqs: impl IntoIterator<Item = u64>, now: u64) {
        for s in seqs {
            push_value(d, &ev(s), now);
        }
    }

    #[test]
    fn partial_batch_waits_for_flush_ms() {
        let mut d = Delivery::new(&cfg(10, 100));
        fill(&mut d, [1, 2], 1_000);
        assert_eq!(d.next_batch(1_199), None);
        let b = d.next_batch(1_200);
        assert_eq!(
            b.as_ref().map(|b| (b.count, b.first_seq, b.last_seq)),
            Some((2, 1, 2))
        );
    }

    #[test]
    fn full_batch_goes_at_once_and_caps_at_max_batch() {
        let mut d = Delivery::new(&cfg(3, 100));
        fill(&mut d, 1..=7, 0);
        let b = d.next_batch(0);
        assert_eq!(
            b.as_ref().map(|b| (b.count, b.first_seq, b.last_seq)),
            Some((3, 1, 3))
        );
        assert_eq!(b.map(|b| b.body.lines().count()), Some(3));
    }

    #[test]
    fn body_is_ndjson_of_canonical_lines() {
        let mut d = Delivery::new(&cfg(2, 10));
        push_value(&mut d, &json!({"seq": 1, "b": 2, "a": 1}), 0);
        push_value(&mut d, &json!({"seq": 2}), 0);
        let body = d.next_batch(0).map(|b| b.body);
        assert_eq!(
            body.as_deref(),
            Some("{\"a\":1,\"b\":2,\"seq\":1}\n{\"seq\":2}\n")
        );
    }

    #[test]
    fn only_one_batch_in_flight() {
        let mut d = Delivery::new(&cfg(2, 100));
        fill(&mut d, 1..=6, 0);
        let first = d.next_batch(0).map(|b| b.token).unwrap_or(0);
        assert_eq!(d.next_batch(10), None);
        assert_eq!(
            d.on_sent(first, Some(200), 20),
            SendOutcome::Delivered { count: 2 }
        );
        assert_eq!(d.next_batch(20).map(|b| b.first_seq), Some(3));
    }

    #[test]
    fn failed_batches_retry_the_same_events_with_capped_exponential_backoff() {
        let mut d = Delivery::new(&cfg(2, 100));
        fill(&mut d, 1..=2, 0);
        let mut now = 0;
        let mut delays = Vec::new();
        // Non-2xx, Envoy's timeout (504), and no response at all are all failures.
        for status in [
            Some(503),
            Some(504),
            None,
            Some(404),
            Some(429),
            Some(500),
            Some(500),
            Some(500),
            Some(500),
        ] {
            let b = d.next_batch(now);
            assert_eq!(
                b.as_ref().map(|b| (b.first_seq, b.last_seq)),
                Some((1, 2)),
                "at {now}"
            );
            let token = b.map_or(0, |b| b.token);
            let outcome = d.on_sent(token, status, now);
            assert!(
                matches!(outcome, SendOutcome::WillRetry { .. }),
                "{status:?}: {outcome:?}"
            );
            let SendOutcome::WillRetry { at_ms } = outcome else {
                return;
            };
            assert_eq!(d.next_batch(at_ms - 1), None, "backoff honoured");
            delays.push(at_ms - now);
            now = at_ms;
        }
        assert_eq!(
            delays,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(d.counters().retried, 9);
        let token = d.next_batch(now).map_or(0, |b| b.token);
        assert_eq!(
            d.on_sent(token, Some(204), now),
            SendOutcome::Delivered { count: 2 }
        );
        assert_eq!(d.counters().sent, 2);
        fill(&mut d, [3], now);
        assert_eq!(
            d.next_batch(now),
            None,
            "success resets backoff and flush timing"
        );
        assert!(d.next_batch(now + 200).is_some());
    }

    #[test]
    fn overflow_drops_newest_and_reports_exact_ranges() {
        let mut d = Delivery::new(&cfg(2, 4));
        // Seqs of this VM are not contiguous: other workers own 5, 8, 9.
        let outcomes: Vec<Pushed> = [1, 2, 3, 4, 6, 7, 10, 11]
            .iter()
            .map(|s| push_value(&mut d, &ev(*s), 0))
            .collect();
        assert_eq!(
            outcomes.iter().filter(|p| **p == Pushed::Dropped).count(),
            4
        );
        assert!(d.is_saturated());
        assert_eq!(d.dropped_total(), 4);
        let report = d.take_drop_report();
        let want = DropReport {
            count: 4,
            ranges: vec![
                SeqRange { first: 6, last: 7 },
                SeqRange {
                    first: 10,
                    last: 11,
                },
            ],
            exact: true,
        };
        assert_eq!(report, Some(want));
        assert_eq!(d.take_drop_report(), None, "a report is handed out once");
        assert_eq!(d.counters().buffered, 4);
    }

    #[test]
    fn announcement_stays_pending_until_an_event_is_buffered() {
        let mut d = Delivery::new(&cfg(1, 1));
        push_value(&mut d, &ev(1), 0);
        push_value(&mut d, &ev(2), 0);
        assert_eq!(d.drops_to_announce(), [SeqRange { first: 2, last: 2 }]);
        // The event that would announce 2 is dropped as well: 2 is not forgotten.
        push_value(&mut d, &ev(3), 0);
        assert_eq!(d.drops_to_announce(), [SeqRange { first: 2, last: 3 }]);
        let token = d.next_batch(0).map_or(0, |b| b.token);
        d.on_sent(token, Some(200), 0);
        assert_eq!(push_value(&mut d, &ev(4), 0), Pushed::Buffered);
        assert_eq!(d.drops_to_announce(), []);
        assert_eq!(
            d.take_drop_report().map(|r| r.count),
            Some(2),
            "the log still hears of both"
        );
    }

    #[test]
    fn in_flight_events_count_against_the_buffer() {
        let mut d = Delivery::new(&cfg(2, 3));
        fill(&mut d, 1..=3, 0);
        let token = d.next_batch(0).map_or(0, |b| b.token);
        assert_eq!(push_value(&mut d, &ev(4), 0), Pushed::Dropped);
        d.on_sent(token, Some(200), 0);
        assert!(!d.is_saturated());
        assert_eq!(push_value(&mut d, &ev(5), 0), Pushed::Buffered);
    }

    #[test]
    fn drop_ranges_are_bounded_and_flagged_inexact() {
        let mut d = Delivery::new(&cfg(1, 1));
        push_value(&mut d, &ev(1), 0);
        for s in (3..).step_by(2).take(MAX_DROP_RANGES + 10) {
            push_value(&mut d, &ev(s), 0);
        }
        let report = d.take_drop_report();
        let summary = report.map(|r| {
            (
                r.count,
                r.ranges.len(),
                r.exact,
                r.ranges.last().map(|l| l.last),
            )
        });
        let last_seq = 3 + 2 * (MAX_DROP_RANGES as u64 + 9);
        assert_eq!(
            summary,
            Some((
                MAX_DROP_RANGES as u64 + 10,
                MAX_DROP_RANGES,
                false,
                Some(last_seq)
            ))
        );
    }

    #[test]
    fn rejected_batch_is_dropped_and_does_not_block_the_queue() {
        let mut d = Delivery::new(&cfg(2, 10));
        fill(&mut d, 1..=3, 0);
        let token = d.next_batch(0).map_or(0, |b| b.token);
        assert_eq!(
            d.on_sent(token, Some(400), 5),
            SendOutcome::Rejected { count: 2 }
        );
        assert_eq!(
            d.take_drop_report().map(|r| r.ranges),
            Some(vec![SeqRange { first: 1, last: 2 }])
        );
        assert_eq!(d.next_batch(200).map(|b| b.first_seq), Some(3));
    }

    #[test]
    fn lost_callback_is_failed_at_twice_the_timeout_and_late_answer_is_stale() {
        let mut d = Delivery::new(&cfg(2, 10));
        fill(&mut d, 1..=2, 0);
        let token = d.next_batch(0).map_or(0, |b| b.token);
        assert_eq!(d.next_batch(1_999), None);
        assert_eq!(d.next_batch(2_000), None, "given up, now backing off");
        assert_eq!(d.counters().retried, 1);
        assert_eq!(d.on_sent(token, Some(200), 2_100), SendOutcome::Stale);
        let retry = d.next_batch(2_250);
        assert_eq!(
            retry.as_ref().map(|b| (b.first_seq, b.token != token)),
            Some((1, true))
        );
    }

    /// max_batch 100, generous event bounds; the byte bounds under test.
    fn byte_cfg(max_batch_bytes: usize, max_buffered_bytes: usize) -> AuditConfig {
        AuditConfig {
            max_batch_bytes,
            max_buffered_bytes,
            ..cfg(100, 1_000)
        }
    }

    /// An event whose line is exactly `bytes` long (plus its newline in a body).
    fn sized(d: &mut Delivery, seq: u64, bytes: usize) -> Pushed {
        d.push(seq, "x".repeat(bytes), 0)
    }

    /// Send the due batch, answer it with `status`; the seqs it carried.
    fn send(d: &mut Delivery, now: u64, status: u16) -> (Vec<u64>, SendOutcome) {
        let Some(b) = d.next_batch(now) else {
            return (Vec::new(), SendOutcome::Stale);
        };
        let seqs = (b.first_seq..=b.last_seq).take(b.count).collect();
        (seqs, d.on_sent(b.token, Some(status), now))
    }

    #[test]
    fn buffer_is_bounded_in_bytes_as_well_as_events() {
        // 10 events of 99 + 1 bytes fill 1,000 bytes; the 11th is dropped
        // although 990 more events would fit by count.
        let mut d = Delivery::new(&byte_cfg(4_096, 1_000));
        let pushed: Vec<Pushed> = (1..=11).map(|s| sized(&mut d, s, 99)).collect();
        assert_eq!(pushed.iter().filter(|p| **p == Pushed::Dropped).count(), 1);
        assert_eq!(pushed.last(), Some(&Pushed::Dropped));
        assert!(d.is_saturated(), "on_failure: closed refuses from here");
        assert_eq!(d.counters().buffered_bytes, 1_000);
        assert_eq!(
            d.drops_to_announce(),
            [SeqRange {
                first: 11,
                last: 11
            }]
        );
        // Delivered events free their bytes.
        let (sent, outcome) = send(&mut d, 200, 200);
        assert_eq!(outcome, SendOutcome::Delivered { count: 10 });
        assert_eq!(sent.len(), 10);
        assert_eq!(d.counters().buffered_bytes, 0);
        assert_eq!(sized(&mut d, 12, 99), Pushed::Buffered);
    }

    #[test]
    fn a_single_event_larger_than_the_buffer_is_dropped_not_kept() {
        let mut d = Delivery::new(&byte_cfg(4_096, 4_096));
        assert_eq!(sized(&mut d, 1, 5_000), Pushed::Dropped);
        assert_eq!(sized(&mut d, 2, 100), Pushed::Buffered);
        assert_eq!(d.drops_to_announce(), []);
        assert_eq!(d.dropped_total(), 1);
    }

    #[test]
    fn batches_are_split_by_bytes_and_an_oversized_event_goes_alone() {
        // max_batch_bytes 1,000: 4 events of 300 bytes make 3 per batch.
        let mut d = Delivery::new(&byte_cfg(1_000, 100_000));
        for s in 1..=4 {
            sized(&mut d, s, 299);
        }
        sized(&mut d, 5, 2_000);
        sized(&mut d, 6, 10);
        assert!(d.full_batch_due(0), "a byte-full batch leaves at once");
        let mut batches = Vec::new();
        for now in [0, 1, 2] {
            let Some(b) = d.next_batch(now) else {
                panic!("batch {now} not sent");
            };
            assert!(b.body.len() <= 1_000 || b.count == 1, "{}", b.body.len());
            batches.push((b.first_seq, b.count));
            d.on_sent(b.token, Some(200), now);
        }
        assert_eq!(batches, [(1, 3), (4, 1), (5, 1)]);
        // The last, small one waits for flush_ms like any partial batch.
        assert_eq!(d.next_batch(3), None);
        assert_eq!(d.next_batch(200).map(|b| b.first_seq), Some(6));
    }

    #[test]
    fn answer_413_splits_the_batch_and_every_event_gets_through() {
        // A collector that takes at most 2 events per POST; max_batch 8.
        let mut d = Delivery::new(&cfg(8, 100));
        fill(&mut d, 1..=8, 0);
        let mut delivered = Vec::new();
        let mut outcomes = Vec::new();
        for now in 200..220 {
            let Some(b) = d.next_batch(now) else {
                break;
            };
            let status = if b.count > 2 { 413 } else { 200 };
            let outcome = d.on_sent(b.token, Some(status), now);
            if status == 200 {
                delivered.extend(b.first_seq..=b.last_seq);
            }
            outcomes.push(outcome);
        }
        assert_eq!(delivered, (1..=8).collect::<Vec<_>>());
        assert_eq!(
            outcomes[..3],
            [
                SendOutcome::Split { cap: 4 },
                SendOutcome::Split { cap: 2 },
                SendOutcome::Delivered { count: 2 },
            ]
        );
        let c = d.counters();
        assert_eq!(
            (c.sent, c.dropped, c.buffered, c.buffered_bytes),
            (8, 0, 0, 0)
        );
        assert_eq!(d.take_drop_report(), None, "nothing lost");
    }

    #[test]
    fn answer_413_to_a_single_event_drops_only_that_event() {
        let mut d = Delivery::new(&cfg(4, 100));
        sized(&mut d, 1, 10);
        sized(&mut d, 2, 5_000);
        sized(&mut d, 3, 10);
        let mut delivered = Vec::new();
        for now in 200..220 {
            let Some(b) = d.next_batch(now) else {
                break;
            };
            let status = if b.body.len() > 1_000 { 413 } else { 200 };
            if let SendOutcome::Delivered { .. } = d.on_sent(b.token, Some(status), now) {
                delivered.extend(b.first_seq..=b.last_seq);
            }
        }
        assert_eq!(delivered, [1, 3]);
        assert_eq!(d.drops_to_announce(), [SeqRange { first: 2, last: 2 }]);
        assert_eq!(d.counters().buffered_bytes, 0);
    }

    #[test]
    fn handover_moves_every_held_event_and_pending_loss_to_the_adopter() {
        // The old delivery: 1..=2 in flight, 3..=4 waiting, 5 and 6 dropped
        // (max_buffered 4) and not yet announced.
        let mut old = Delivery::new(&cfg(2, 4));
        fill(&mut old, 1..=6, 0);
        assert!(old.next_batch(0).is_some());
        let handover = old.hand_over();
        assert_eq!(handover.len(), 4);
        assert_eq!(old.counters().buffered, 0);
        assert_eq!(old.counters().buffered_bytes, 0);
        assert_eq!(old.next_batch(10_000), None, "nothing left to send");
        assert_eq!(old.drops_to_announce(), [], "the adopter announces them");

        // The adopter already holds its own event 7.
        let mut new = Delivery::new(&cfg(10, 100));
        fill(&mut new, [7], 0);
        assert_eq!(new.adopt(handover, 0), 0);
        assert_eq!(new.drops_to_announce(), [SeqRange { first: 5, last: 6 }]);
        assert_eq!(new.take_drop_report().map(|r| r.count), Some(2));
        assert_eq!(
            new.dropped_total(),
            0,
            "counted once, by the VM that lost them"
        );
        let b = new.next_batch(200);
        let seqs: Vec<u64> = b
            .iter()
            .flat_map(|b| b.body.lines())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [7, 1, 2, 3, 4]);
        // The next event the adopter buffers carries the announcement.
        assert_eq!(push_value(&mut new, &ev(8), 0), Pushed::Buffered);
        assert_eq!(new.drops_to_announce(), []);
    }

    #[test]
    fn handed_over_events_beyond_the_adopters_buffer_are_dropped_and_announced() {
        let mut old = Delivery::new(&cfg(10, 100));
        fill(&mut old, 1..=5, 0);
        let mut new = Delivery::new(&cfg(2, 3));
        assert_eq!(new.adopt(old.hand_over(), 0), 2);
        assert_eq!(new.drops_to_announce(), [SeqRange { first: 4, last: 5 }]);
        assert_eq!(new.dropped_total(), 2);
        assert_eq!(new.counters().buffered, 3);
    }

    #[test]
    fn merged_losses_stay_sorted_coalesced_and_bounded() {
        let mut into = None;
        add_drop(&mut into, 10);
        add_drop(&mut into, 11);
        let mut from = None;
        for s in [3, 12, 20] {
            add_drop(&mut from, s);
        }
        if let Some(from) = from {
            merge_drops(&mut into, from);
        }
        let ranges = into.as_ref().map(|r| (r.count, r.ranges.clone(), r.exact));
        let want = vec![
            SeqRange { first: 3, last: 3 },
            SeqRange {
                first: 10,
                last: 12,
            },
            SeqRange {
                first: 20,
                last: 20,
            },
        ];
        assert_eq!(ranges, Some((5, want, true)));
        let mut many = None;
        for s in (0..2 * MAX_DROP_RANGES as u64).map(|i| i * 2) {
            add_drop(&mut many, s);
        }
        let mut into = None;
        if let Some(many) = many {
            merge_drops(&mut into, many);
        }
        assert_eq!(
            into.map(|r| (r.ranges.len(), r.exact)),
            Some((MAX_DROP_RANGES, false))
        );
    }

    #[test]
    fn counters_add_up() {
        let mut d = Delivery::new(&cfg(2, 3));
        fill(&mut d, 1..=5, 0);
        let t = d.next_batch(0).map_or(0, |b| b.token);
        d.on_sent(t, Some(200), 0);
        let c = d.counters();
        assert_eq!((c.pushed, c.sent, c.dropped, c.buffered), (3, 2, 2, 1));
        assert_eq!(c.pushed, c.sent + c.buffered);
    }
}
