//! The root context's door to the host: what audit delivery needs from it
//! (callouts, the tick, stats, the clock, shared data). The wasm glue
//! implements it with proxy-wasm hostcalls; tests use [`fake::FakeRootHost`].
//!
//! Every write returns a `Result`, and the caller decides what a failure
//! means (`audit::root` says, per call, what it does with one).

use super::{Counter, LogLevel};
use crate::store::SharedStore;
use std::fmt;
use std::time::Duration;

/// A hostcall the host refused, named for the log (the proxy-wasm status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One HTTP request to an Envoy cluster, sent from the root context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout<'a> {
    pub cluster: &'a str,
    /// Pseudo-headers included (`:method`, `:path`, `:authority`).
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
    /// Envoy answers 504 itself when the upstream takes longer.
    pub timeout: Duration,
}

/// Envoy gauges the filter keeps; names are fixed here, as for [`Counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gauge {
    /// Audit events held by the worker VMs (each VM adds its own change).
    AuditBuffered,
}

impl Gauge {
    pub fn name(self) -> &'static str {
        match self {
            Gauge::AuditBuffered => "mcp_firewall.audit.buffered",
        }
    }
}

pub trait RootHost: SharedStore {
    /// Wall-clock milliseconds since the Unix epoch (the host's clock).
    fn now_ms(&self) -> u64;
    /// Fresh entropy (the audit chain's boot id).
    fn entropy(&self) -> u64;
    /// A host property such as `["node", "id"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Best effort: when the host cannot log there is nowhere to say so.
    fn log(&self, level: LogLevel, msg: &str);
    /// Run the root context's tick every `period` from now on.
    fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError>;
    /// Send `callout`; its answer comes back to this root context under the
    /// returned id.
    fn dispatch(&mut self, callout: &Callout<'_>) -> Result<u32, HostError>;
    /// A header of the callout answer being delivered (`:status` included);
    /// only valid while the host delivers that answer.
    fn callout_header(&self, name: &str) -> Option<String>;
    /// Add to one of the filter's Envoy counters.
    fn count(&mut self, counter: Counter, by: u64) -> Result<(), HostError>;
    /// Add `delta` (may be negative) to a gauge.
    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) -> Result<(), HostError>;
}

#[cfg(any(test, feature = "fake-host"))]
pub mod fake {
    //! In-memory root host: records what the core asked of it and fails the
    //! writes a test switches off.
    use super::*;
    use crate::store::{MemoryStore, StoreError};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A callout the core sent, owned.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SentCallout {
        pub id: u32,
        pub cluster: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub timeout: Duration,
    }

    impl SentCallout {
        /// What a fake host records of a callout it was asked to send.
        pub fn of(id: u32, callout: &Callout<'_>) -> Self {
            SentCallout {
                id,
                cluster: callout.cluster.to_owned(),
                headers: callout
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body: callout.body.to_vec(),
                timeout: callout.timeout,
            }
        }
    }

    #[derive(Debug, Default)]
    pub struct FakeRootHost {
        pub now_ms: u64,
        pub store: MemoryStore,
        pub properties: BTreeMap<String, Vec<u8>>,
        pub logs: RefCell<Vec<(LogLevel, String)>>,
        /// Every tick period set, in order.
        pub tick_periods: Vec<Duration>,
        pub callouts: Vec<SentCallout>,
        /// Headers of the answer being delivered (set by the test before
        /// calling the core's answer handler).
        pub answer_headers: BTreeMap<String, String>,
        pub counters: BTreeMap<Counter, u64>,
        pub gauges: BTreeMap<Gauge, i64>,
        /// Writes the host refuses while set.
        pub refuse_dispatch: bool,
        pub refuse_tick: bool,
        pub refuse_stats: bool,
        pub refuse_shared_data: bool,
    }

    impl FakeRootHost {
        pub fn new() -> Self {
            Self::default()
        }

        /// The tick period in force (the last one set).
        pub fn tick_period(&self) -> Option<Duration> {
            self.tick_periods.last().copied()
        }

        /// Log lines at `level`, in order.
        pub fn logged(&self, level: LogLevel) -> Vec<String> {
            self.logs
                .borrow()
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    impl SharedStore for FakeRootHost {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            if self.refuse_shared_data {
                return Err(StoreError::Host("InternalFailure".into()));
            }
            self.store.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.refuse_shared_data {
                return Err(StoreError::Host("InternalFailure".into()));
            }
            self.store.set(key, value, cas)
        }
    }

    impl RootHost for FakeRootHost {
        fn now_ms(&self) -> u64 {
            self.now_ms
        }
        fn entropy(&self) -> u64 {
            0x5eed
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.properties.get(&path.join(".")).cloned()
        }
        fn log(&self, level: LogLevel, msg: &str) {
            self.logs.borrow_mut().push((level, msg.to_owned()));
        }
        fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError> {
            if self.refuse_tick {
                return Err(HostError("InternalFailure".into()));
            }
            self.tick_periods.push(period);
            Ok(())
        }
        fn dispatch(&mut self, callout: &Callout<'_>) -> Result<u32, HostError> {
            if self.refuse_dispatch {
                return Err(HostError("BadArgument".into()));
            }
            let id = 100 + u32::try_from(self.callouts.len()).unwrap_or(u32::MAX - 100);
            self.callouts.push(SentCallout::of(id, callout));
            Ok(id)
        }
        fn callout_header(&self, name: &str) -> Option<String> {
            self.answer_headers.get(name).cloned()
        }
        fn count(&mut self, counter: Counter, by: u64) -> Result<(), HostError> {
            if self.refuse_stats {
                return Err(HostError("NotFound".into()));
            }
            *self.counters.entry(counter).or_default() += by;
            Ok(())
        }
        fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) -> Result<(), HostError> {
            if self.refuse_stats {
                return Err(HostError("NotFound".into()));
            }
            *self.gauges.entry(gauge).or_default() += delta;
            Ok(())
        }
    }
}
