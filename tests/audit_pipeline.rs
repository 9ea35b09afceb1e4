//! The audit core driven the way the proxy-wasm glue drives it: several worker
//! VMs sharing one chain through shared data, each with its own `Delivery`,
//! a flaky collector, a VM reload and a buffer overflow. Whatever happens, what
//! the collector ends up with must be a verifiable chain, and every loss must
//! be counted and announced.

use mcp_firewall::audit::{
    append_prepared, chain_id, compile, event_line, hash_matches, prepare, ArgumentsMode,
    AuditConfig, AuditDecision, AuditIdentity, Delivery, EventFacts, HeadHashCache, MemoryStore,
    Pushed, SendOutcome, SeqRange, SharedStore, Verdict, Via, GENESIS_PREV,
};
use mcp_firewall::config::Errors;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

fn config(max_batch: usize, max_buffered: usize) -> AuditConfig {
    let section = json!({"cluster": "audit_collector", "max_batch": max_batch, "max_buffered": max_buffered,
                         "flush_ms": 100});
    let mut errs = Errors::default();
    let compiled = compile(Some(&section), "$.audit", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    compiled.flatten().unwrap_or_else(unreachable_config)
}

/// Only reached after the assertion above failed; tests may not unwrap.
fn unreachable_config() -> AuditConfig {
    AuditConfig {
        cluster: String::new(),
        path: String::new(),
        authority: String::new(),
        max_batch: 1,
        flush_ms: 1,
        max_buffered: 1,
        on_failure: mcp_firewall::audit::OnFailure::Open,
        arguments: ArgumentsMode::Hash,
        timeout_ms: 10,
        max_batch_bytes: 1 << 20,
        max_buffered_bytes: 16 << 20,
    }
}

/// One worker VM as the glue would hold it in its root context.
struct Worker {
    chain: String,
    delivery: Delivery,
    first_event: bool,
    head_cache: HeadHashCache,
}

impl Worker {
    /// `on_configure`: resolve the process chain, start an empty buffer.
    fn start(store: &dyn SharedStore, cfg: &AuditConfig, now_ms: u64, entropy: u64) -> Worker {
        let chain = chain_id(store, "node-a", now_ms, entropy).unwrap_or_default();
        Worker {
            chain,
            delivery: Delivery::new(cfg),
            first_event: true,
            head_cache: HeadHashCache::default(),
        }
    }

    /// End of an exchange: build, seal, buffer.
    fn record(&mut self, store: &dyn SharedStore, subject: &str, now_ms: u64) -> Option<Pushed> {
        let dropped = self.delivery.drops_to_announce();
        let facts = EventFacts {
            ts_ms: now_ms,
            identity: AuditIdentity {
                subject: Some(subject.into()),
                tenant: None,
                roles: vec![],
                subject_sha256: None,
                tenant_sha256: None,
                via: Via::ApiKey,
            },
            method: "tools/call".into(),
            target: Some("get_issue".into()),
            id: Some(json!(now_ms)),
            arguments: Some(json!({"n": now_ms})),
            redacted_arguments: None,
            decision: AuditDecision {
                verdict: Verdict::Allow,
                rule: "read".into(),
                reason: "allowed".into(),
                dry_run: false,
            },
            findings: vec![],
            response: None,
            policy_sha256: "00".repeat(32),
            vm_start: std::mem::take(&mut self.first_event),
            dropped,
            pins: Vec::new(),
            catalogue: Vec::new(),
            approval: None,
        };
        // The filter's path: written once, sealed inside the CAS loop.
        let prepared = prepare(facts, ArgumentsMode::Hash);
        let sealed = append_prepared(store, &self.chain, &prepared, &mut self.head_cache).ok()?;
        Some(self.delivery.push(sealed.seq, sealed.line, now_ms))
    }
}

/// An idempotent collector that fails on demand.
#[derive(Default)]
struct Collector {
    seen: HashSet<String>,
    events: Vec<Value>,
}

impl Collector {
    fn post(&mut self, body: &str) -> u16 {
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            if !hash_matches(&v) {
                return 400;
            }
            let hash = v["hash"].as_str().unwrap_or_default().to_owned();
            if self.seen.insert(hash) {
                self.events.push(v);
            }
        }
        200
    }
}

/// seqs present, and the first broken link if any.
fn check(events: &[Value]) -> (Vec<u64>, Option<String>) {
    let by_seq: BTreeMap<u64, &Value> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap_or(0), e))
        .collect();
    let mut prev: Option<(u64, String)> = None;
    for (seq, e) in &by_seq {
        if !hash_matches(e) {
            return (
                by_seq.keys().copied().collect(),
                Some(format!("hash at {seq}")),
            );
        }
        let linked = match &prev {
            Some((p, h)) if p + 1 == *seq => e["prev"].as_str() == Some(h.as_str()),
            None if *seq == 1 => e["prev"] == GENESIS_PREV,
            _ => true, // a gap: reported through the seq list
        };
        if !linked {
            return (
                by_seq.keys().copied().collect(),
                Some(format!("prev at {seq}")),
            );
        }
        prev = Some((*seq, e["hash"].as_str().unwrap_or_default().to_owned()));
    }
    (by_seq.keys().copied().collect(), None)
}

#[test]
fn two_workers_and_a_flaky_collector_deliver_one_unbroken_chain() {
    let cfg = config(20, 1_000);
    let store = MemoryStore::new();
    let mut workers = [
        Worker::start(&store, &cfg, 0, 1),
        Worker::start(&store, &cfg, 0, 2),
    ];
    assert_eq!(
        workers[0].chain, workers[1].chain,
        "one chain per Envoy process"
    );
    let mut collector = Collector::default();
    let mut in_flight: Vec<Option<(u64, String)>> = vec![None, None];
    let mut posts = 0;
    for now in (0..300_000u64).step_by(10) {
        for (w, worker) in workers.iter_mut().enumerate() {
            if now < 5_000 && (now / 10 + w as u64) % 3 == 0 {
                assert_eq!(worker.record(&store, "ci-bot", now), Some(Pushed::Buffered));
            }
            // Callout answers arrive on a later tick, as in Envoy.
            if let Some((token, body)) = in_flight[w].take() {
                posts += 1;
                let status = match posts % 5 {
                    0 => None,      // dispatch failed / no answer
                    1 => Some(503), // collector down
                    2 => Some(504), // Envoy's callout timeout
                    _ => Some(collector.post(&body)),
                };
                worker.delivery.on_sent(token, status, now);
            }
            // The tick: at most one batch in flight per worker.
            if let Some(batch) = worker.delivery.next_batch(now) {
                in_flight[w] = Some((batch.token, batch.body));
            }
        }
    }
    let recorded: u64 = workers.iter().map(|w| w.delivery.counters().pushed).sum();
    let (seqs, broken) = check(&collector.events);
    assert_eq!(broken, None);
    assert_eq!(
        seqs,
        (1..=recorded).collect::<Vec<_>>(),
        "every event once, no gap"
    );
    for w in &workers {
        let c = w.delivery.counters();
        assert_eq!((c.dropped, c.buffered), (0, 0));
        assert!(c.retried > 0, "the flaky collector forced retries");
    }
}

#[test]
fn overflow_is_counted_and_announced_in_the_next_event() {
    let cfg = config(2, 2);
    let store = MemoryStore::new();
    let mut worker = Worker::start(&store, &cfg, 0, 1);
    let pushed: Vec<Option<Pushed>> = (0..5).map(|i| worker.record(&store, "a", i)).collect();
    assert_eq!(
        pushed,
        [
            Pushed::Buffered,
            Pushed::Buffered,
            Pushed::Dropped,
            Pushed::Dropped,
            Pushed::Dropped
        ]
        .map(Some)
    );
    assert!(
        worker.delivery.is_saturated(),
        "on_failure: closed refuses requests now"
    );
    let mut collector = Collector::default();
    let batch = worker
        .delivery
        .next_batch(0)
        .map(|b| (b.token, b.body))
        .unwrap_or_default();
    let status = collector.post(&batch.1);
    assert!(matches!(
        worker.delivery.on_sent(batch.0, Some(status), 1),
        SendOutcome::Delivered { count: 2 }
    ));
    assert_eq!(worker.record(&store, "a", 10), Some(Pushed::Buffered));
    let batch = worker
        .delivery
        .next_batch(200)
        .map(|b| (b.token, b.body))
        .unwrap_or_default();
    collector.post(&batch.1);
    let (seqs, broken) = check(&collector.events);
    assert_eq!((seqs, broken), (vec![1, 2, 6], None));
    let announcer = collector
        .events
        .iter()
        .find(|e| e["seq"] == 6)
        .cloned()
        .unwrap_or_default();
    let announced: Vec<SeqRange> =
        serde_json::from_value(announcer["dropped"].clone()).unwrap_or_default();
    assert_eq!(announced, [SeqRange { first: 3, last: 5 }]);
    assert_eq!(worker.delivery.dropped_total(), 3);
}

#[test]
fn reloaded_vm_continues_the_chain_and_marks_its_start() {
    let cfg = config(10, 100);
    let store = MemoryStore::new();
    let mut before = Worker::start(&store, &cfg, 0, 1);
    for t in 0..3 {
        before.record(&store, "a", t);
    }
    // The VM dies with three undelivered events; FAIL_RELOAD starts a new one.
    let mut after = Worker::start(&store, &cfg, 99, 2);
    assert_eq!(after.chain, before.chain);
    after.record(&store, "a", 100);
    let body = after
        .delivery
        .next_batch(1_000)
        .map(|b| b.body)
        .unwrap_or_default();
    let event: Value = serde_json::from_str(body.trim_end()).unwrap_or_default();
    assert_eq!(
        (event["seq"].clone(), event["segment"].clone()),
        (json!(4), json!({"reason": "vm_start"}))
    );
    assert_eq!(
        event_line(&event),
        body.trim_end(),
        "lines are canonical JSON"
    );
}
