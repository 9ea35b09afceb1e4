//! The root context's side of audit delivery: when batches leave, what a
//! callout's answer does, the tick period, exporting the counters. The glue
//! calls one method per callback with its [`RootHost`]; HTTP contexts of the
//! same VM reach [`AuditRoot::record`] through their `Host`.
//!
//! Why the root context: Envoy hands a callout's answer to the context that
//! dispatched it, and an HTTP context may be gone by then; a callout per event
//! costs most of the throughput (DESIGN.md), so batches leave from here.

use super::{AuditConfig, AuditSink, EventFacts, Handover, Recorded};
use crate::host::{Callout, Counter, Gauge, LogLevel, RootHost};
use std::time::Duration;

/// A tick brought forward to send a full batch at once (see
/// [`AuditSink::wants_prompt_tick`]).
pub const PROMPT_TICK: Duration = Duration::from_millis(1);

/// The root context's regular tick: it sends partial batches after `flush_ms`.
pub fn tick_period(flush_ms: u64) -> Duration {
    Duration::from_millis(flush_ms.max(10))
}

/// The delivery counters exported to Envoy, in `AuditRoot::exported` order.
const EXPORTED: [Counter; 4] = [
    Counter::AuditSent,
    Counter::AuditRetried,
    Counter::AuditDropped,
    Counter::AuditAppendFailed,
];

/// Where the host keeps the Envoy node id, first match wins. Envoy 1.40
/// serves it as `xds.node.id` and answers nothing for the older `node.id`
/// (measured: `--service-node gw-1` gives `["xds","node","id"]` = "gw-1" and
/// `["node","id"]` = not found), so reading only `node.id` named every chain
/// `envoy/…`. `node.id` stays second for hosts that still serve it.
const NODE_ID_PATHS: [&[&str]; 2] = [&["xds", "node", "id"], &["node", "id"]];

/// The chain's first half: the Envoy node id, or `envoy` when the host names none.
fn node_id(host: &impl RootHost) -> String {
    NODE_ID_PATHS
        .iter()
        .find_map(|path| {
            host.property(path)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "envoy".to_owned())
}

/// One worker VM's audit delivery, owned by its root context.
#[derive(Debug)]
pub struct AuditRoot {
    sink: AuditSink,
    /// What Envoy has been told of `EXPORTED` so far; a counter advances
    /// only when its export succeeded, so a refused one is sent next tick.
    exported: [u64; 4],
    /// This VM's share of the `audit.buffered` gauge, as exported.
    buffered_reported: u64,
    /// The tick still runs at `PROMPT_TICK`: restoring `flush_ms` failed.
    restore_tick: bool,
    /// The root context is gone ([`AuditRoot::retire`]): whatever is still
    /// recorded here (an exchange that outlived it) is handed over at once.
    retired: bool,
}

impl AuditRoot {
    /// `on_configure` with an `audit` section: join the chain (retried on the
    /// first event if shared data refuses now) and start the tick.
    pub fn configure(cfg: AuditConfig, host: &mut impl RootHost) -> Self {
        let node = node_id(host);
        let flush = cfg.flush_ms;
        let mut sink = AuditSink::new(cfg, &node);
        if let Err(e) = sink.start(&*host, host.now_ms(), host.entropy()) {
            host.log(
                LogLevel::Warn,
                &format!("mcp-firewall: audit chain not started yet: {e}"),
            );
        }
        // The tick drives batching (callouts must leave from the root context).
        // Without it batches leave only when an earlier one is answered, so a
        // refusal is an error in the log; the policy itself still loads.
        if let Err(e) = host.set_tick_period(tick_period(flush)) {
            host.log(
                LogLevel::Error,
                &format!("mcp-firewall: audit tick not started: {e}"),
            );
        }
        AuditRoot {
            sink,
            exported: [0; 4],
            buffered_reported: 0,
            restore_tick: false,
            retired: false,
        }
    }

    /// The root context goes away (Envoy's `on_done`: the policy was swapped
    /// or the filter removed). Its tick and callout answers stop with it, so
    /// what it holds is handed to the root that replaces it instead of dying
    /// with it; the counters are exported first (the gauge gives back this
    /// VM's share, which the adopter then adds).
    pub fn retire(&mut self, host: &mut impl RootHost) -> Handover {
        self.retired = true;
        // Losses not yet logged or announced go too: the adopter does both.
        let handover = self.sink.hand_over();
        self.export_counters(host);
        handover
    }

    /// True once [`AuditRoot::retire`] ran: the glue hands over anything
    /// recorded after it.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Take over what a retired root of this VM held: sent from here with
    /// this root's own events; what does not fit is dropped, counted and
    /// announced like any other loss.
    pub fn adopt(&mut self, host: &mut impl RootHost, handover: Handover) {
        let events = handover.len();
        let dropped = self.sink.adopt(handover, host.now_ms());
        if dropped > 0 {
            host.log(
                LogLevel::Warn,
                &format!("mcp-firewall: {dropped} of {events} audit events handed over by a replaced policy did not fit the buffer"),
            );
        }
        if self.sink.wants_prompt_tick(host.now_ms()) && host.set_tick_period(PROMPT_TICK).is_err()
        {
            self.sink.prompt_tick_fired();
        }
        self.export_counters(host);
    }

    /// Seal and buffer one event (called from an HTTP context of this VM).
    pub fn record(&mut self, host: &mut impl RootHost, facts: EventFacts) {
        // The event's own timestamp is "now": one clock hostcall per event, not two.
        let now = facts.ts_ms;
        match self.sink.record(&*host, facts, now, || host.entropy()) {
            // When a full batch waits with no callout in flight, the root's
            // tick is brought forward (the host sets the tick of the calling
            // context's root). A dropped event (counted by Delivery, reported
            // with its seq range on the next tick) means a full buffer:
            // exactly when a batch should not wait for the regular tick once
            // backoff is over.
            Recorded::Buffered | Recorded::Dropped => {
                if self.sink.wants_prompt_tick(now) && host.set_tick_period(PROMPT_TICK).is_err() {
                    // The regular tick still sends the batch; the next event
                    // that finds it waiting asks again.
                    self.sink.prompt_tick_fired();
                }
            }
            Recorded::Failed(e) => host.log(
                LogLevel::Error,
                &format!("mcp-firewall: audit event not sealed: {e}"),
            ),
        }
    }

    /// `on_failure: closed` refuses new MCP requests while nothing can be buffered.
    pub fn refuses_traffic(&self) -> bool {
        self.sink.refuses_traffic()
    }

    /// `on_tick`: send the due batch, put the tick back to `flush_ms` after a
    /// brought-forward one, log drops, export the counters.
    pub fn on_tick(&mut self, host: &mut impl RootHost) {
        self.flush(host);
        if self.sink.prompt_tick_fired() || self.restore_tick {
            // Left at PROMPT_TICK the VM would tick every millisecond for
            // good: on a refusal, try again on the next tick.
            self.restore_tick = match host.set_tick_period(tick_period(self.sink.cfg.flush_ms)) {
                Ok(()) => false,
                Err(e) => {
                    host.log(
                        LogLevel::Warn,
                        &format!("mcp-firewall: audit tick period not restored: {e}"),
                    );
                    true
                }
            };
        }
        if let Some(report) = self.sink.delivery().take_drop_report() {
            let ranges: Vec<String> = report
                .ranges
                .iter()
                .map(|r| format!("{}-{}", r.first, r.last))
                .collect();
            host.log(
                LogLevel::Warn,
                &format!(
                    "mcp-firewall: {} audit events dropped (seq {}{})",
                    report.count,
                    ranges.join(", "),
                    if report.exact { "" } else { ", approximate" }
                ),
            );
        }
        self.export_counters(host);
    }

    /// `on_http_call_response` for callout `call_id`: settle the batch it
    /// carried, then send the next due one.
    pub fn on_callout_answer(&mut self, host: &mut impl RootHost, call_id: u32) {
        // A failed or timed-out callout has no :status (or Envoy's 504): both retry.
        let status = host
            .callout_header(":status")
            .and_then(|s| s.parse::<u16>().ok());
        if let Some(token) = self.sink.token_for(call_id) {
            self.sink
                .answered(Some(call_id), token, status, host.now_ms());
        }
        // Chain the next batch now rather than waiting for the tick: under load
        // one batch per tick would cap delivery at max_batch per flush_ms.
        self.flush(host);
    }

    /// Send the due batch, if any (at most one in flight per VM).
    fn flush(&mut self, host: &mut impl RootHost) {
        let now = host.now_ms();
        let Some(batch) = self.sink.due_batch(now) else {
            return;
        };
        let cfg = &self.sink.cfg;
        let callout = Callout {
            cluster: &cfg.cluster,
            headers: vec![
                (":method", "POST"),
                (":path", cfg.path.as_str()),
                (":authority", cfg.authority.as_str()),
                ("content-type", "application/x-ndjson"),
            ],
            body: batch.body.as_bytes(),
            timeout: Duration::from_millis(cfg.timeout_ms),
        };
        match host.dispatch(&callout) {
            Ok(call_id) => self.sink.dispatched(call_id, batch.token),
            Err(e) => {
                // A failed attempt like any other: the same events are retried
                // after the backoff, never dropped for it.
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "mcp-firewall: audit callout to {:?} not dispatched: {e}",
                        cfg.cluster
                    ),
                );
                self.sink.answered(None, batch.token, None, now);
            }
        }
    }

    /// Add what changed since the last export to Envoy's counters and gauge.
    fn export_counters(&mut self, host: &mut impl RootHost) {
        let c = self.sink.delivery().counters();
        let now = [c.sent, c.retried, c.dropped, self.sink.append_failures];
        for ((counter, exported), value) in EXPORTED.into_iter().zip(&mut self.exported).zip(now) {
            let delta = value.saturating_sub(*exported);
            if delta == 0 || host.count(counter, delta).is_ok() {
                *exported = value;
            }
        }
        // One gauge, several worker VMs: each adds the change of its own
        // buffer, so the gauge reads the sum (record_metric would show
        // whichever VM ticked last).
        let delta = i64::try_from(c.buffered).unwrap_or(i64::MAX)
            - i64::try_from(self.buffered_reported).unwrap_or(i64::MAX);
        if delta != 0 && host.add_to_gauge(Gauge::AuditBuffered, delta).is_ok() {
            self.buffered_reported = c.buffered;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::tests::facts;
    use super::super::{ArgumentsMode, OnFailure};
    use super::*;
    use crate::host::root::fake::FakeRootHost;

    const FLUSH: Duration = Duration::from_millis(500);

    /// max_batch 3, flush_ms 500, max_buffered 6, timeout_ms 1000.
    fn cfg() -> AuditConfig {
        AuditConfig {
            cluster: "audit_collector".into(),
            path: "/v1/audit".into(),
            authority: "collector".into(),
            max_batch: 3,
            flush_ms: 500,
            max_buffered: 6,
            on_failure: OnFailure::Open,
            arguments: ArgumentsMode::Hash,
            timeout_ms: 1_000,
            max_batch_bytes: 1 << 20,
            max_buffered_bytes: 16 << 20,
        }
    }

    /// One thing the host does to the core, or one thing a test checks.
    #[derive(Debug, Clone)]
    enum Step {
        /// HTTP contexts record this many events.
        Record(usize),
        /// The clock moves on.
        Wait(u64),
        Tick,
        /// The last callout is answered with this `:status` (None: no status,
        /// as when the connection failed).
        Answer(Option<&'static str>),
        /// An answer for a callout this VM did not send.
        AnswerUnknown,
        /// Callout `n` (0-based) is answered late, after it was given up on.
        LateAnswer(usize, &'static str),
        RefuseDispatch(bool),
        RefuseTick(bool),
        RefuseStats(bool),
        /// Checks: callouts sent so far, and the seqs the last one carried.
        Callouts(usize),
        LastBatch(&'static [u64]),
        /// The tick period in force.
        Period(Duration),
        /// How many times the tick period was set so far.
        PeriodsSet(usize),
        /// Exported to Envoy so far.
        Counted(Counter, u64),
        /// This VM's share of the `audit.buffered` gauge.
        Buffered(i64),
        /// A warning containing this text was logged.
        Warned(&'static str),
        Warnings(usize),
    }
    use Step::*;

    fn seqs(body: &[u8]) -> Vec<u64> {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("seq").and_then(serde_json::Value::as_u64))
            .collect()
    }

    fn run(name: &str, steps: &[Step]) {
        let mut host = FakeRootHost::new();
        host.now_ms = 1_000_000;
        let mut root = AuditRoot::configure(cfg(), &mut host);
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{name}: step {i} {step:?}");
            match step.clone() {
                Record(n) => {
                    for _ in 0..n {
                        let mut f = facts("alice", "t");
                        f.ts_ms = host.now_ms;
                        root.record(&mut host, f);
                    }
                }
                Wait(ms) => host.now_ms += ms,
                Tick => root.on_tick(&mut host),
                Answer(status) => {
                    let id = host.callouts.last().map(|c| c.id);
                    let Some(id) = id else {
                        panic!("{at}: nothing was sent");
                    };
                    host.answer_headers.clear();
                    if let Some(s) = status {
                        host.answer_headers.insert(":status".into(), s.into());
                    }
                    root.on_callout_answer(&mut host, id);
                }
                AnswerUnknown => root.on_callout_answer(&mut host, 7),
                LateAnswer(n, status) => {
                    let Some(id) = host.callouts.get(n).map(|c| c.id) else {
                        panic!("{at}: callout {n} was not sent");
                    };
                    host.answer_headers.clear();
                    host.answer_headers.insert(":status".into(), status.into());
                    root.on_callout_answer(&mut host, id);
                }
                RefuseDispatch(on) => host.refuse_dispatch = on,
                RefuseTick(on) => host.refuse_tick = on,
                RefuseStats(on) => host.refuse_stats = on,
                Callouts(n) => assert_eq!(host.callouts.len(), n, "{at}"),
                LastBatch(want) => {
                    let got = host.callouts.last().map(|c| seqs(&c.body));
                    assert_eq!(got.as_deref(), Some(want), "{at}");
                }
                Period(p) => assert_eq!(host.tick_period(), Some(p), "{at}"),
                PeriodsSet(n) => assert_eq!(host.tick_periods.len(), n, "{at}"),
                Counted(c, n) => {
                    assert_eq!(host.counters.get(&c).copied().unwrap_or(0), n, "{at}");
                }
                Buffered(n) => {
                    let got = host.gauges.get(&Gauge::AuditBuffered).copied();
                    assert_eq!(got.unwrap_or(0), n, "{at}");
                }
                Warned(text) => {
                    let warnings = host.logged(LogLevel::Warn);
                    assert!(
                        warnings.iter().any(|w| w.contains(text)),
                        "{at}: {warnings:?}"
                    );
                }
                Warnings(n) => assert_eq!(host.logged(LogLevel::Warn).len(), n, "{at}"),
            }
        }
    }

    #[test]
    fn root_side_audit_delivery() {
        let table: Vec<(&str, Vec<Step>)> = vec![
            (
                "configure_starts_the_tick_at_flush_ms",
                vec![Period(FLUSH), PeriodsSet(1), Callouts(0)],
            ),
            (
                "tick_sends_a_partial_batch_once_flush_ms_has_passed",
                vec![
                    Record(2),
                    Tick,
                    Callouts(0),
                    Wait(499),
                    Tick,
                    Callouts(0),
                    Wait(1),
                    Tick,
                    Callouts(1),
                    LastBatch(&[1, 2]),
                    PeriodsSet(1),
                ],
            ),
            (
                "full_batch_brings_the_tick_forward_and_the_next_tick_restores_flush_ms",
                vec![
                    Record(2),
                    Period(FLUSH),
                    Record(1),
                    Period(PROMPT_TICK),
                    Callouts(0),
                    Tick,
                    Callouts(1),
                    LastBatch(&[1, 2, 3]),
                    Period(FLUSH),
                    PeriodsSet(3),
                    Tick,
                    PeriodsSet(3),
                ],
            ),
            (
                "full_batch_waiting_behind_one_in_flight_leaves_the_tick_alone",
                vec![
                    Record(3),
                    Tick,
                    Callouts(1),
                    Record(3),
                    Period(FLUSH),
                    PeriodsSet(3),
                ],
            ),
            (
                "answer_2xx_counts_the_batch_sent_and_chains_the_next_due_one",
                vec![
                    Record(3),
                    Tick,
                    Record(3),
                    Callouts(1),
                    Answer(Some("200")),
                    Callouts(2),
                    LastBatch(&[4, 5, 6]),
                    Answer(Some("204")),
                    Callouts(2),
                    Tick,
                    Counted(Counter::AuditSent, 6),
                    Counted(Counter::AuditRetried, 0),
                    Buffered(0),
                ],
            ),
            (
                "answer_5xx_retries_the_same_events_after_the_backoff",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("503")),
                    Callouts(1),
                    Wait(249),
                    Tick,
                    Callouts(1),
                    Wait(1),
                    Tick,
                    Callouts(2),
                    LastBatch(&[1, 2, 3]),
                    Counted(Counter::AuditRetried, 1),
                    Buffered(3),
                    Answer(Some("200")),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Buffered(0),
                ],
            ),
            (
                "answer_504_from_envoys_timeout_is_retried",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("504")),
                    Wait(250),
                    Tick,
                    Callouts(2),
                    LastBatch(&[1, 2, 3]),
                    Counted(Counter::AuditRetried, 1),
                ],
            ),
            (
                "answer_400_drops_the_batch_logs_its_seqs_and_goes_on",
                vec![
                    Record(3),
                    Tick,
                    Record(1),
                    Answer(Some("400")),
                    Callouts(1),
                    Tick,
                    Warned("3 audit events dropped (seq 1-3)"),
                    Counted(Counter::AuditDropped, 3),
                    Counted(Counter::AuditRetried, 0),
                    Wait(500),
                    Tick,
                    Callouts(2),
                    LastBatch(&[4]),
                ],
            ),
            (
                "answer_413_splits_the_batch_and_sends_the_halves_at_once",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("413")),
                    Callouts(2),
                    LastBatch(&[1]),
                    Answer(Some("200")),
                    Callouts(3),
                    LastBatch(&[2, 3]),
                    Answer(Some("200")),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Counted(Counter::AuditDropped, 0),
                    Counted(Counter::AuditRetried, 1),
                    Warnings(0),
                ],
            ),
            (
                "answer_413_to_one_event_drops_it_and_announces_it",
                vec![
                    Record(1),
                    Wait(500),
                    Tick,
                    Answer(Some("413")),
                    Tick,
                    Warned("1 audit events dropped (seq 1-1)"),
                    Counted(Counter::AuditDropped, 1),
                ],
            ),
            (
                "answer_without_a_status_is_retried",
                vec![
                    Record(3),
                    Tick,
                    Answer(None),
                    Wait(250),
                    Tick,
                    LastBatch(&[1, 2, 3]),
                    Counted(Counter::AuditRetried, 1),
                ],
            ),
            (
                "answer_with_a_garbled_status_is_retried",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("2OO")),
                    Wait(250),
                    Tick,
                    Callouts(2),
                    LastBatch(&[1, 2, 3]),
                    Counted(Counter::AuditRetried, 1),
                ],
            ),
            (
                "lost_answer_is_given_up_after_twice_the_timeout_and_retried",
                vec![
                    Record(3),
                    Tick,
                    Callouts(1),
                    Wait(1_999),
                    Tick,
                    Callouts(1),
                    Counted(Counter::AuditRetried, 0),
                    Wait(1),
                    Tick,
                    Counted(Counter::AuditRetried, 1),
                    Callouts(1),
                    Wait(250),
                    Tick,
                    Callouts(2),
                    LastBatch(&[1, 2, 3]),
                    LateAnswer(0, "200"),
                    Tick,
                    Counted(Counter::AuditSent, 0),
                    Callouts(2),
                    Answer(Some("200")),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Buffered(0),
                ],
            ),
            (
                "answer_for_an_unknown_callout_settles_nothing",
                vec![
                    Record(3),
                    Tick,
                    AnswerUnknown,
                    Callouts(1),
                    Tick,
                    Counted(Counter::AuditSent, 0),
                    Counted(Counter::AuditRetried, 0),
                    Buffered(3),
                ],
            ),
            (
                "refused_dispatch_is_a_failed_batch_retried_after_the_backoff",
                vec![
                    RefuseDispatch(true),
                    Record(3),
                    Tick,
                    Callouts(0),
                    Warned("audit callout to \"audit_collector\" not dispatched: BadArgument"),
                    Counted(Counter::AuditRetried, 1),
                    Counted(Counter::AuditDropped, 0),
                    Buffered(3),
                    RefuseDispatch(false),
                    Wait(249),
                    Tick,
                    Callouts(0),
                    Wait(1),
                    Tick,
                    Callouts(1),
                    LastBatch(&[1, 2, 3]),
                ],
            ),
            (
                "refused_prompt_tick_is_asked_again_by_the_next_event",
                vec![
                    RefuseTick(true),
                    Record(3),
                    Period(FLUSH),
                    RefuseTick(false),
                    Record(1),
                    Period(PROMPT_TICK),
                    Tick,
                    LastBatch(&[1, 2, 3]),
                    Period(FLUSH),
                ],
            ),
            (
                "refused_restore_of_flush_ms_is_tried_again_on_the_next_tick",
                vec![
                    Record(3),
                    Period(PROMPT_TICK),
                    RefuseTick(true),
                    Tick,
                    Callouts(1),
                    Warned("audit tick period not restored: InternalFailure"),
                    RefuseTick(false),
                    Tick,
                    Period(FLUSH),
                    PeriodsSet(3),
                    Tick,
                    PeriodsSet(3),
                ],
            ),
            (
                "counters_are_exported_once_as_deltas",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("200")),
                    Record(2),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Buffered(2),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Buffered(2),
                    Wait(500),
                    Tick,
                    Answer(Some("500")),
                    Tick,
                    Counted(Counter::AuditRetried, 1),
                    Buffered(2),
                ],
            ),
            (
                "refused_counter_export_is_sent_on_the_next_tick",
                vec![
                    Record(3),
                    Tick,
                    Answer(Some("200")),
                    RefuseStats(true),
                    Tick,
                    Counted(Counter::AuditSent, 0),
                    RefuseStats(false),
                    Tick,
                    Counted(Counter::AuditSent, 3),
                    Buffered(0),
                ],
            ),
            (
                "full_buffer_drops_the_newest_and_logs_them_on_the_tick",
                vec![
                    RefuseDispatch(true),
                    Record(8),
                    Tick,
                    Counted(Counter::AuditDropped, 2),
                    Warned("2 audit events dropped (seq 7-8)"),
                    Buffered(6),
                    Tick,
                    Warnings(2),
                ],
            ),
        ];
        for (name, steps) in &table {
            run(name, steps);
        }
    }

    #[test]
    fn callout_is_a_post_of_ndjson_to_the_configured_cluster() {
        let mut host = FakeRootHost::new();
        let mut root = AuditRoot::configure(cfg(), &mut host);
        for _ in 0..3 {
            root.record(&mut host, facts("alice", "t"));
        }
        root.on_tick(&mut host);
        let Some(sent) = host.callouts.first() else {
            panic!("no callout");
        };
        assert_eq!(sent.cluster, "audit_collector");
        let headers: Vec<(&str, &str)> = sent
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                (":method", "POST"),
                (":path", "/v1/audit"),
                (":authority", "collector"),
                ("content-type", "application/x-ndjson"),
            ]
        );
        assert_eq!(sent.timeout, Duration::from_millis(1_000));
        let body = String::from_utf8_lossy(&sent.body);
        assert_eq!(body.matches('\n').count(), 3);
        assert!(body.ends_with('\n'), "NDJSON: every line ends in a newline");
        assert_eq!(seqs(&sent.body), [1, 2, 3]);
    }

    #[test]
    fn chain_is_named_after_the_node_id_or_envoy() {
        // (case, properties the host serves, chain prefix)
        type Props = &'static [(&'static str, &'static [u8])];
        let table: [(&str, Props, &str); 7] = [
            (
                "envoy_1_40_serves_xds_node_id",
                &[("xds.node.id", b"gw-7")],
                "\"chain\":\"gw-7/",
            ),
            (
                "older_host_serves_node_id",
                &[("node.id", b"node-a")],
                "\"chain\":\"node-a/",
            ),
            (
                "xds_node_id_wins_over_node_id",
                &[("xds.node.id", b"gw-7"), ("node.id", b"node-a")],
                "\"chain\":\"gw-7/",
            ),
            (
                "empty_xds_node_id_falls_back_to_node_id",
                &[("xds.node.id", b""), ("node.id", b"node-a")],
                "\"chain\":\"node-a/",
            ),
            ("no_node_id", &[], "\"chain\":\"envoy/"),
            (
                "empty_node_id",
                &[("xds.node.id", b"")],
                "\"chain\":\"envoy/",
            ),
            (
                "node_id_not_utf8",
                &[("xds.node.id", b"n\xff")],
                "\"chain\":\"envoy/",
            ),
        ];
        for (name, props, want) in table {
            let mut host = FakeRootHost::new();
            for (path, value) in props {
                host.properties.insert((*path).into(), value.to_vec());
            }
            let mut root = AuditRoot::configure(cfg(), &mut host);
            for _ in 0..3 {
                root.record(&mut host, facts("alice", "t"));
            }
            root.on_tick(&mut host);
            let body = host
                .callouts
                .first()
                .map(|c| String::from_utf8_lossy(&c.body).into_owned())
                .unwrap_or_default();
            assert!(body.contains(want), "{name}: {body}");
        }
    }

    #[test]
    fn a_replaced_root_hands_every_event_to_its_successor() {
        let mut host = FakeRootHost::new();
        host.now_ms = 1_000_000;
        let mut old = AuditRoot::configure(cfg(), &mut host);
        for _ in 0..2 {
            old.record(&mut host, facts("alice", "t"));
        }
        // The policy is swapped: Envoy configures the new root, ends the old.
        let mut new = AuditRoot::configure(cfg(), &mut host);
        let first = old.retire(&mut host);
        assert!(old.is_retired());
        // An exchange that outlived the old root records into it: handed over too.
        old.record(&mut host, facts("bob", "t"));
        let late = old.retire(&mut host);
        assert_eq!((first.len(), late.len()), (2, 1));
        new.record(&mut host, facts("carol", "t"));
        new.adopt(&mut host, first);
        new.adopt(&mut host, late);
        host.now_ms += 500;
        new.on_tick(&mut host);
        let mut sent: Vec<u64> = host.callouts.iter().flat_map(|c| seqs(&c.body)).collect();
        host.answer_headers.insert(":status".into(), "200".into());
        while let Some(id) = host.callouts.last().map(|c| c.id) {
            let before = host.callouts.len();
            new.on_callout_answer(&mut host, id);
            if host.callouts.len() == before {
                break;
            }
            sent.extend(
                host.callouts
                    .last()
                    .map(|c| seqs(&c.body))
                    .unwrap_or_default(),
            );
        }
        sent.sort_unstable();
        assert_eq!(sent, [1, 2, 3, 4], "one chain, no seq lost");
        new.on_tick(&mut host);
        assert_eq!(host.counters.get(&Counter::AuditSent).copied(), Some(4));
        assert_eq!(host.counters.get(&Counter::AuditDropped).copied(), None);
        assert_eq!(host.gauges.get(&Gauge::AuditBuffered).copied(), Some(0));
    }

    #[test]
    fn tick_period_is_flush_ms_with_a_10_ms_floor() {
        let table = [
            ("zero", 0, 10),
            ("below_floor", 9, 10),
            ("at_floor", 10, 10),
            ("flush_ms", 500, 500),
        ];
        for (name, flush_ms, want) in table {
            assert_eq!(tick_period(flush_ms), Duration::from_millis(want), "{name}");
        }
    }

    #[test]
    fn refused_tick_at_configure_is_an_error_in_the_log() {
        let mut host = FakeRootHost::new();
        host.refuse_tick = true;
        let _root = AuditRoot::configure(cfg(), &mut host);
        assert_eq!(
            host.logged(LogLevel::Error),
            ["mcp-firewall: audit tick not started: InternalFailure"]
        );
    }

    #[test]
    fn unsealable_event_is_logged_and_exported_as_an_append_failure() {
        let mut host = FakeRootHost::new();
        host.refuse_shared_data = true;
        let mut root = AuditRoot::configure(cfg(), &mut host);
        assert_eq!(
            host.logged(LogLevel::Warn),
            ["mcp-firewall: audit chain not started yet: shared data error: InternalFailure"]
        );
        root.record(&mut host, facts("alice", "t"));
        assert_eq!(
            host.logged(LogLevel::Error),
            ["mcp-firewall: audit event not sealed: shared data error: InternalFailure"]
        );
        root.on_tick(&mut host);
        assert_eq!(host.counters.get(&Counter::AuditAppendFailed), Some(&1));
        // Shared data is back: the chain starts on the next event.
        host.refuse_shared_data = false;
        let event = facts("alice", "t");
        host.now_ms = event.ts_ms;
        root.record(&mut host, event);
        host.now_ms += 500;
        root.on_tick(&mut host);
        assert_eq!(host.callouts.len(), 1);
    }
}
