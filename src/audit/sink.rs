//! One worker VM's end of the audit trail: seals events onto the shared chain
//! and hands them to [`Delivery`]. The root context owns it; HTTP contexts of
//! the same VM reach it through the host (same thread, so no shared queue is
//! needed between them; the chain itself is shared through CAS).

use super::{
    append_prepared_at, chain_id, head_key, prepare_with, AuditConfig, AuditError, Batch, Delivery,
    EventFacts, EventMemo, OnFailure, Pushed, SendOutcome, SharedStore,
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

    /// A batch to POST now, if one is due and none is in flight.
    pub fn due_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if self.in_flight.is_some() {
            return None;
        }
        self.delivery.next_batch(now_ms)
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

    pub fn delivery(&mut self) -> &mut Delivery {
        &mut self.delivery
    }
}
