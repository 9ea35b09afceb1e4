//! One worker VM's end of the audit trail: seals events onto the shared chain
//! and hands them to [`Delivery`]. The root context's [`super::AuditRoot`]
//! owns it; HTTP contexts of the same VM reach it through the host (same
//! thread, so no shared queue is needed between them; the chain itself is
//! shared through CAS).

use super::{
    append_prepared_at, chain_id, head_key, prepare_with, AuditConfig, AuditError, Batch, Delivery,
    EventFacts, EventMemo, Handover, OnFailure, Pushed, SendOutcome, SharedStore,
};

#[derive(Debug)]
pub struct AuditSink {
    pub cfg: AuditConfig,
    node_id: String,
    /// The chain joined, and the shared-data key of its head (built once).
    chain: Option<(String, String)>,
    delivery: Delivery,
    /// The next event appended is this VM's first (marked `vm_start`).
    first_event: bool,
    /// Events that could not be sealed (shared data refused); counted, logged.
    pub append_failures: u64,
    /// The batch on the wire: (callout id, batch token).
    in_flight: Option<(u32, u64)>,
    /// What of the last event is reused for the next one.
    memo: EventMemo,
    /// The root context's tick was brought forward to send a full batch.
    prompt_tick: bool,
}

/// What happened to one recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Buffered,
    /// Over `max_buffered`: dropped and counted by `Delivery`.
    Dropped,
    /// Not sealed at all; the error says why.
    Failed(String),
}

impl AuditSink {
    pub fn new(cfg: AuditConfig, node_id: &str) -> Self {
        let delivery = Delivery::new(&cfg);
        AuditSink {
            cfg,
            node_id: node_id.to_owned(),
            chain: None,
            delivery,
            first_event: true,
            append_failures: 0,
            in_flight: None,
            memo: EventMemo::default(),
            prompt_tick: false,
        }
    }

    /// Join (or start) this Envoy process's chain. Retried lazily if it fails.
    pub fn start(
        &mut self,
        store: &dyn SharedStore,
        now_ms: u64,
        entropy: u64,
    ) -> Result<&str, AuditError> {
        if self.chain.is_none() {
            let chain = chain_id(store, &self.node_id, now_ms, entropy)?;
            let key = head_key(&chain);
            self.chain = Some((chain, key));
        }
        Ok(self.chain.as_ref().map_or("", |(chain, _)| chain.as_str()))
    }

    /// Seal `facts` onto the chain and buffer the event. `entropy` is asked
    /// for only if the chain still has to be started (it costs hostcalls).
    pub fn record(
        &mut self,
        store: &dyn SharedStore,
        mut facts: EventFacts,
        now_ms: u64,
        entropy: impl FnOnce() -> u64,
    ) -> Recorded {
        if self.chain.is_none() {
            if let Err(e) = self.start(store, now_ms, entropy()) {
                self.append_failures += 1;
                return Recorded::Failed(e.to_string());
            }
        }
        let Some((chain, key)) = &self.chain else {
            self.append_failures += 1;
            return Recorded::Failed("audit chain not started".into());
        };
        facts.vm_start = self.first_event;
        facts.dropped = self.delivery.drops_to_announce();
        let prepared = prepare_with(facts, self.cfg.arguments, &mut self.memo);
        let appended = append_prepared_at(store, chain, key, &prepared, &mut self.memo.head_hashes);
        match appended {
            Ok(sealed) => {
                self.first_event = false;
                match self.delivery.push(sealed.seq, sealed.line, now_ms) {
                    Pushed::Buffered => Recorded::Buffered,
                    Pushed::Dropped => Recorded::Dropped,
                }
            }
            Err(e) => {
                self.append_failures += 1;
                Recorded::Failed(e.to_string())
            }
        }
    }

    /// `on_failure: closed` refuses new MCP requests while nothing can be buffered.
    pub fn refuses_traffic(&self) -> bool {
        self.cfg.on_failure == OnFailure::Closed && self.delivery.is_saturated()
    }

    /// Whether to bring the root context's tick forward now: a full batch
    /// waits and nothing else will send it (no callout in flight whose answer
    /// chains the next batch), so without it the batch would wait for the
    /// regular tick, up to `flush_ms`, while the buffer keeps filling. True
    /// once until [`AuditSink::prompt_tick_fired`].
    pub fn wants_prompt_tick(&mut self, now_ms: u64) -> bool {
        if self.prompt_tick || self.in_flight.is_some() || !self.delivery.full_batch_due(now_ms) {
            return false;
        }
        self.prompt_tick = true;
        true
    }

    /// The tick ran; true if it was one brought forward (the caller restores
    /// the regular period).
    pub fn prompt_tick_fired(&mut self) -> bool {
        std::mem::take(&mut self.prompt_tick)
    }

    /// A batch to POST now, if one is due and none is in flight.
    pub fn due_batch(&mut self, now_ms: u64) -> Option<Batch> {
        // Delivery holds the batch in flight until its answer is overdue (2 ×
        // timeout_ms), then counts it failed and retries it: forget that
        // callout too, so a lost answer cannot stop this VM's delivery for
        // good (its late answer, if any, is then for an unknown id).
        let batch = self.delivery.next_batch(now_ms);
        if let Some((_, token)) = self.in_flight {
            if self.delivery.in_flight_token() != Some(token) {
                self.in_flight = None;
            }
        }
        batch
    }

    pub fn dispatched(&mut self, call_id: u32, token: u64) {
        self.in_flight = Some((call_id, token));
    }

    /// The callout for `call_id` answered (`status` None = no answer / dispatch failed).
    pub fn answered(
        &mut self,
        call_id: Option<u32>,
        token: u64,
        status: Option<u16>,
        now_ms: u64,
    ) -> SendOutcome {
        if call_id.is_none() || self.in_flight.map(|(c, _)| Some(c)) == Some(call_id) {
            self.in_flight = None;
        }
        self.delivery.on_sent(token, status, now_ms)
    }

    pub fn token_for(&self, call_id: u32) -> Option<u64> {
        self.in_flight
            .filter(|(c, _)| *c == call_id)
            .map(|(_, t)| t)
    }

    /// Everything held, for the sink that replaces this one (the batch in
    /// flight included: its answer will not be waited for).
    pub fn hand_over(&mut self) -> Handover {
        self.in_flight = None;
        self.prompt_tick = false;
        self.delivery.hand_over()
    }

    /// Take over what a replaced sink held; returns how many of its events
    /// did not fit (dropped, counted and announced here).
    pub fn adopt(&mut self, handover: Handover, now_ms: u64) -> usize {
        self.delivery.adopt(handover, now_ms)
    }

    pub fn delivery(&mut self) -> &mut Delivery {
        &mut self.delivery
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::tests::facts;
    use super::super::{ArgumentsMode, MemoryStore};
    use super::*;

    fn sink(max_batch: usize) -> AuditSink {
        AuditSink::new(
            AuditConfig {
                cluster: "c".into(),
                path: "/v1/audit".into(),
                authority: "c".into(),
                max_batch,
                flush_ms: 500,
                max_buffered: 100,
                on_failure: OnFailure::Open,
                arguments: ArgumentsMode::Hash,
                timeout_ms: 1_000,
                max_batch_bytes: 1 << 20,
                max_buffered_bytes: 16 << 20,
            },
            "node-a",
        )
    }

    /// What `AuditRoot`'s flush does: send the due batch, if any.
    fn flush(s: &mut AuditSink, now: u64, call_id: u32) {
        if let Some(batch) = s.due_batch(now) {
            s.dispatched(call_id, batch.token);
        }
    }

    #[test]
    fn tick_is_brought_forward_once_per_full_batch_nothing_else_sends() {
        // max_batch 3. Each step does what AuditRoot does (the tick and a
        // callout's answer both flush), then asks `wants_prompt_tick`.
        enum Step {
            Record,
            TickFires,
            Answer(u16),
        }
        let table: Vec<(&str, Step, bool)> = vec![
            ("one_event_waits", Step::Record, false),
            ("two_events_wait", Step::Record, false),
            ("third_event_fills_a_batch", Step::Record, true),
            ("already_brought_forward", Step::Record, false),
            ("tick_sends_the_batch", Step::TickFires, false),
            ("waiting_while_one_is_in_flight", Step::Record, false),
            (
                "answer_finds_no_full_batch_to_chain",
                Step::Answer(200),
                false,
            ),
            (
                "the_event_that_fills_it_brings_the_tick_forward",
                Step::Record,
                true,
            ),
            ("tick_sends_it", Step::TickFires, false),
            (
                "failed_the_batch_waits_for_its_backoff",
                Step::Answer(503),
                false,
            ),
            ("no_tick_forward_during_backoff", Step::Record, false),
        ];
        let store = MemoryStore::new();
        let mut s = sink(3);
        for (i, (name, step, want)) in table.into_iter().enumerate() {
            let now = 1_000 + i as u64;
            let call_id = 10 + i as u32;
            match step {
                Step::Record => {
                    let recorded = s.record(&store, facts("alice", "t"), now, || 7);
                    assert_eq!(recorded, Recorded::Buffered, "{name}");
                }
                Step::TickFires => {
                    flush(&mut s, now, call_id);
                    assert!(
                        s.prompt_tick_fired(),
                        "{name}: this tick was brought forward"
                    );
                    assert!(!s.prompt_tick_fired(), "{name}: and says so once");
                }
                Step::Answer(status) => {
                    let Some((id, token)) = s.in_flight else {
                        panic!("{name}: nothing in flight to answer");
                    };
                    s.answered(Some(id), token, Some(status), now);
                    flush(&mut s, now, call_id);
                }
            }
            assert_eq!(s.wants_prompt_tick(now), want, "{name}");
        }
    }
}
