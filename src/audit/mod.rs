//! Tamper-evident audit trail: one hash-chained event per decided JSON-RPC
//! message, batched to a collector (POLICY.md "Audit events", docs/audit.md).
//!
//! Pure core, no proxy-wasm: the glue supplies shared data ([`SharedStore`]),
//! the clock and the callouts (`crate::host::RootHost`).
//!
//! - [`config`]: the `audit` policy section.
//! - [`event`]: the event shape, its hash, the reference way to seal it.
//! - `seal_cache`: the filter's fast way to the same bytes (events written
//!   ahead, the last event's members and SHA-256 midstates reused).
//! - [`chain`]: the chain shared by all worker VMs via CAS on shared data.
//! - [`delivery`]: batches, retries and exact loss accounting per VM.
//! - [`sink`]: one VM's end of the trail (seal, buffer, the batch in flight).
//! - [`root`]: the root context's orchestration over a `RootHost`: ticks,
//!   callouts and their answers, exported counters.

pub mod chain;
pub mod config;
pub mod delivery;
pub mod event;
pub mod root;
mod seal_cache;
pub mod sink;

pub use chain::{
    append, append_prepared, append_prepared_at, chain_id, head_key, AuditError, MemoryStore,
    SharedStore, StoreError, BOOT_KEY,
};
pub use config::{compile, ArgumentsMode, AuditConfig, OnFailure};
pub use delivery::{Batch, Delivery, DeliveryCounters, DropReport, Handover, Pushed, SendOutcome};
pub use event::{
    clip, event_hash, event_line, hash_matches, seal, unsealed_event, ApprovalStep, AuditApproval,
    AuditCatalogue, AuditDecision, AuditEvent, AuditFinding, AuditIdentity, AuditPin, AuditRequest,
    AuditResponse, EventFacts, SealedEvent, Segment, SegmentReason, SeqRange, Verdict, Via,
    GENESIS_PREV, MAX_CATALOGUE_RECORDS, MAX_PIN_RECORDS,
};
pub use root::AuditRoot;
pub use seal_cache::{prepare, HeadHashCache, PreparedEvent};
pub(crate) use seal_cache::{prepare_with, EventMemo};
pub use sink::{AuditSink, Recorded};
