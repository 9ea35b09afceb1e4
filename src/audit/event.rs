//! The audit event: its typed shape (POLICY.md "Audit events") and its hash.
//!
//! A verifier reads and hashes an event as a `serde_json::Value`, not as the
//! structs: the hash covers every field of the line as it stands, including
//! fields a later version adds, so it is recomputed from the line alone. The
//! filter writes events from the typed members below, already in canonical
//! form ([`prepare`], [`PreparedEvent::sealer`]), and hashes the very bytes
//! it sends.

use super::config::ArgumentsMode;
use crate::json::{canonical, canonical_without, lower_hex, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::rc::Rc;

// The member structs below declare their fields in code-point order of the
// JSON names, and JSON values inside them go through [`CanonicalValue`]:
// serialising them with serde_json is then already canonical JSON, which is
// what [`prepare`] relies on to write an event once instead of building a
// `Value` and re-serialising it (`prepared_event_line_is_the_canonical_seal`
// checks the equivalence).

/// `prev` of the first event of a chain.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event as it appears on the wire (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub chain: String,
    pub ts_ms: u64,
    pub prev: String,
    pub hash: String,
    pub identity: AuditIdentity,
    pub request: AuditRequest,
    pub decision: AuditDecision,
    pub findings: Vec<AuditFinding>,
    /// Absent when no response was seen (refused requests, notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AuditResponse>,
    pub policy_sha256: String,
    /// Added field: marks where a chain or a worker VM starts, see [`SegmentReason`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// Added field: seqs this worker VM sealed but could not deliver (buffer
    /// overflow or a batch the collector refused), announced in its next event
    /// so a verifier can tell a known loss from a deletion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<SeqRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditIdentity {
    pub roles: Vec<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub via: Via,
}

/// Which identity source of POLICY.md "Identity" applied (the filter's own type).
pub use crate::identity::Via;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRequest {
    /// SHA-256 of the canonical JSON of `params.arguments`; null when there are
    /// none or `arguments: omit`.
    pub args_sha256: Option<String>,
    /// Only with `arguments: redacted`: the arguments after DLP redaction.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "canonical_option"
    )]
    pub arguments: Option<Value>,
    /// The JSON-RPC id as received; null for notifications.
    #[serde(serialize_with = "canonical_option")]
    pub id: Option<Value>,
    pub method: String,
    /// Tool, resource or prompt name; null for other methods.
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDecision {
    pub dry_run: bool,
    pub reason: String,
    pub rule: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    Approval,
    Redacted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Approval => "approval",
            Verdict::Redacted => "redacted",
        }
    }
}

/// A DLP finding: kind and JSON path only, never the matched value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    pub action: String,
    pub kind: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResponse {
    pub bytes: u64,
    pub is_error: bool,
    pub redactions: u64,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub reason: SegmentReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentReason {
    /// seq 1 of a chain: this Envoy process configured the filter for the first time.
    ProcessStart,
    /// The first event a (re)started worker VM appends. A gap just before it
    /// points at a VM that died with undelivered events in its buffer.
    VmStart,
}

/// An inclusive range of seqs of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// What the filter knows when an exchange completes; everything but the chain fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts {
    pub ts_ms: u64,
    pub identity: AuditIdentity,
    pub method: String,
    pub target: Option<String>,
    pub id: Option<Value>,
    /// `params.arguments` as received (hashed, never copied into the event).
    pub arguments: Option<Value>,
    /// The same after DLP redaction; used only with `arguments: redacted`.
    pub redacted_arguments: Option<Value>,
    pub decision: AuditDecision,
    pub findings: Vec<AuditFinding>,
    pub response: Option<AuditResponse>,
    pub policy_sha256: String,
    /// Set on the first event this worker VM appends.
    pub vm_start: bool,
    /// From [`super::Delivery::take_drop_report`], to announce earlier losses.
    pub dropped: Vec<SeqRange>,
}

/// The `request` member: what of the arguments is recorded depends on `mode`.
/// Takes the request's fields out of `facts`.
fn request_of(facts: &mut EventFacts, mode: ArgumentsMode) -> AuditRequest {
    let arguments = facts.arguments.as_ref();
    let args_sha256 = match mode {
        ArgumentsMode::Omit => None,
        ArgumentsMode::Hash | ArgumentsMode::Redacted => {
            arguments.map(|a| sha256_hex(canonical(a).as_bytes()))
        }
    };
    // Without a redacted copy we say nothing rather than fall back to raw values.
    let arguments = match mode {
        ArgumentsMode::Redacted => facts.redacted_arguments.take(),
        ArgumentsMode::Hash | ArgumentsMode::Omit => None,
    };
    AuditRequest {
        args_sha256,
        arguments,
        id: facts.id.take(),
        method: std::mem::take(&mut facts.method),
        target: facts.target.take(),
    }
}

/// The event without `seq`, `chain`, `prev` and `hash`, as a `Value`: what
/// [`seal`] takes. The filter itself uses [`prepare`], which writes the same
/// JSON without the intermediate `Value`.
pub fn unsealed_event(mut facts: EventFacts, mode: ArgumentsMode) -> Value {
    let request = request_of(&mut facts, mode);
    let event = AuditEvent {
        seq: 0,
        chain: String::new(),
        ts_ms: facts.ts_ms,
        prev: String::new(),
        hash: String::new(),
        identity: facts.identity,
        request,
        decision: facts.decision,
        findings: facts.findings,
        response: facts.response,
        policy_sha256: facts.policy_sha256,
        segment: facts.vm_start.then_some(Segment {
            reason: SegmentReason::VmStart,
        }),
        dropped: facts.dropped,
    };
    let mut v = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for k in ["seq", "chain", "prev", "hash"] {
            m.remove(k);
        }
    }
    v
}

/// Serialises a JSON value as canonical JSON (object keys in code-point
/// order) whatever serde_json's map order is: the `preserve_order` feature,
/// if any crate in a build turned it on, would otherwise change the bytes.
pub struct CanonicalValue<'a>(pub &'a Value);

impl Serialize for CanonicalValue<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = ser.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, &CanonicalValue(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = ser.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&CanonicalValue(v))?;
                }
                seq.end()
            }
            other => other.serialize(ser),
        }
    }
}

fn canonical_option<S: serde::Serializer>(v: &Option<Value>, ser: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => CanonicalValue(v).serialize(ser),
        None => ser.serialize_none(),
    }
}

/// Members only the chain decides; [`PreparedEvent`] never carries them.
const CHAIN_MEMBERS: [&str; 4] = ["chain", "hash", "prev", "seq"];

/// `segment` of seq 1, whatever the event said (see [`seal`]).
const PROCESS_START_SEGMENT: &[u8] = br#"{"reason":"process_start"}"#;

/// The first member whose value depends on the chain head. Every member whose
/// key sorts before it (with canonical key order: `chain`, `decision`,
/// `findings`, `identity`, `policy_sha256`) is fixed before sealing starts.
const FIRST_HEAD_DEPENDENT: &str = "prev";

/// SHA-256 works on 64-byte blocks, strictly in order.
const SHA256_BLOCK: usize = 64;

/// Blocks of a head whose intermediate hash states [`HeadHashCache`] keeps.
const MAX_CACHED_BLOCKS: usize = 16;

/// An event written ahead of sealing: the canonical JSON of each top-level
/// member except the chain ones, keys in code-point order.
///
/// Sealing happens inside the compare-and-swap loop on the shared chain head
/// (another worker may win and force a retry), so everything that does not
/// depend on `seq` and `prev` is done once, here and in [`PreparedEvent::sealer`],
/// before the loop; sealing then hashes only what follows `prev`, and the
/// hashed bytes become the NDJSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    members: Vec<(Cow<'static, str>, Member)>,
}

/// One member's canonical JSON: written for this event, or shared, when
/// [`EventMemo`] hands the same bytes to consecutive events.
#[derive(Debug, Clone)]
enum Member {
    Own(Vec<u8>),
    Shared(Rc<Vec<u8>>),
}

/// Equal bytes are the same member, written or shared.
impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Member {}

impl Member {
    fn bytes(&self) -> &[u8] {
        match self {
            Member::Own(b) => b,
            Member::Shared(b) => b,
        }
    }
}

/// A sealed event as it travels: its seq, hash and NDJSON line (no newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    pub seq: u64,
    /// The previous event's hash, as linked.
    pub prev: String,
    pub hash: String,
    pub line: String,
}

/// Serialise one member value; writing into a Vec fails only for maps with
/// non-string keys, which none of the event types have.
fn member<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec())
}

/// What one worker VM remembers of the events it wrote last, to write and
/// hash less for the next: consecutive events mostly share the caller, the
/// decision and the policy, which are also the members hashed first (see
/// [`HeadHashCache`]). Only equal values are reused, so the bytes are exactly
/// what writing them again gives.
#[derive(Debug, Default)]
pub struct EventMemo {
    decision: Option<(AuditDecision, Rc<Vec<u8>>)>,
    findings: Option<(Vec<AuditFinding>, Rc<Vec<u8>>)>,
    identity: Option<(AuditIdentity, Rc<Vec<u8>>)>,
    policy_sha256: Option<(String, Rc<Vec<u8>>)>,
    /// Hash states of the last event's head.
    pub head_hashes: HeadHashCache,
}

/// The member for `value`: the remembered bytes if `slot` holds an equal
/// value, else newly written ones (then remembered).
fn remembered<T: PartialEq + Serialize>(slot: &mut Option<(T, Rc<Vec<u8>>)>, value: T) -> Member {
    match slot {
        Some((last, bytes)) if *last == value => Member::Shared(bytes.clone()),
        _ => {
            let bytes = Rc::new(member(&value));
            *slot = Some((value, bytes.clone()));
            Member::Shared(bytes)
        }
    }
}

/// The filter's event for `facts`, written once (see [`PreparedEvent`]).
pub fn prepare(facts: EventFacts, mode: ArgumentsMode) -> PreparedEvent {
    prepare_with(facts, mode, &mut EventMemo::default())
}

/// [`prepare`], reusing what `memo` holds of the previous event.
pub fn prepare_with(
    mut facts: EventFacts,
    mode: ArgumentsMode,
    memo: &mut EventMemo,
) -> PreparedEvent {
    let request = request_of(&mut facts, mode);
    // Already in code-point order of the keys.
    let mut members: Vec<(Cow<'static, str>, Member)> = Vec::with_capacity(9);
    members.push((
        "decision".into(),
        remembered(&mut memo.decision, facts.decision),
    ));
    if !facts.dropped.is_empty() {
        members.push(("dropped".into(), Member::Own(member(&facts.dropped))));
    }
    members.push((
        "findings".into(),
        remembered(&mut memo.findings, facts.findings),
    ));
    members.push((
        "identity".into(),
        remembered(&mut memo.identity, facts.identity),
    ));
    members.push((
        "policy_sha256".into(),
        remembered(&mut memo.policy_sha256, facts.policy_sha256),
    ));
    members.push(("request".into(), Member::Own(member(&request))));
    if let Some(r) = &facts.response {
        members.push(("response".into(), Member::Own(member(r))));
    }
    if facts.vm_start {
        let segment = Segment {
            reason: SegmentReason::VmStart,
        };
        members.push(("segment".into(), Member::Own(member(&segment))));
    }
    members.push(("ts_ms".into(), Member::Own(member(&facts.ts_ms))));
    PreparedEvent { members }
}

/// Append `"key":value` to an object that `out` opened, after a comma unless
/// it is the first member.
// The key is taken as a `Cow` on purpose: whether it is borrowed decides
// whether it needs escaping (see `write_key`).
#[allow(clippy::ptr_arg)]
fn write_member(out: &mut Vec<u8>, key: &Cow<'static, str>, value: &[u8]) {
    if out.len() > 1 {
        out.push(b',');
    }
    write_key(out, key);
    out.extend_from_slice(value);
}

/// Append `"key":`. Borrowed keys are this module's literal member names
/// (lower-case ASCII and `_`: nothing to escape); owned ones come from a
/// JSON object ([`PreparedEvent::from_value`]) and are escaped as serde_json does.
#[allow(clippy::ptr_arg)]
fn write_key(out: &mut Vec<u8>, key: &Cow<'static, str>) {
    match key {
        Cow::Borrowed(name) => {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(name) => {
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
        }
    }
    out.push(b':');
}

const CHAIN_KEY: Cow<'static, str> = Cow::Borrowed("chain");
const PREV_KEY: Cow<'static, str> = Cow::Borrowed(FIRST_HEAD_DEPENDENT);
const SEQ_KEY: Cow<'static, str> = Cow::Borrowed("seq");
const SEGMENT_KEY: Cow<'static, str> = Cow::Borrowed("segment");

impl PreparedEvent {
    /// Any JSON object as an unsealed event (its chain members are ignored);
    /// `None` for anything else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let m = v.as_object()?;
        let mut members: Vec<(Cow<'static, str>, Member)> = m
            .iter()
            .filter(|(k, _)| !CHAIN_MEMBERS.contains(&k.as_str()))
            .map(|(k, v)| {
                (
                    Cow::Owned(k.clone()),
                    Member::Own(canonical(v).into_bytes()),
                )
            })
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(PreparedEvent { members })
    }

    /// The event as the `seq`th of `chain` after `prev`: exactly the bytes
    /// [`seal`] + [`event_line`] produce for the same event, hashed once.
    pub fn seal(&self, chain: &str, seq: u64, prev: &str) -> SealedEvent {
        self.sealer(chain, &mut HeadHashCache::default())
            .seal(seq, prev)
    }

    /// Everything of sealing that does not depend on the chain head: the
    /// members before `prev` written and hashed (reusing `cache` for the
    /// blocks they share with the previous event's).
    pub fn sealer(&self, chain: &str, cache: &mut HeadHashCache) -> Sealer<'_> {
        let split = self
            .members
            .partition_point(|(k, _)| k.as_ref() < FIRST_HEAD_DEPENDENT);
        let (before, after) = self.members.split_at(split);
        let chain_json = member(chain);
        let size: usize = before
            .iter()
            .map(|(k, v)| k.len() + v.bytes().len() + 4)
            .sum();
        let mut head = Vec::with_capacity(size + chain_json.len() + 12);
        head.push(b'{');
        let mut chain_written = false;
        // Where `,"hash":…` goes: before the first member whose key sorts after
        // "hash". `chain` always precedes it, so it is never the first member,
        // and `prev` always follows it, so it is never past the head.
        let mut hash_at = None;
        for (k, v) in before {
            if !chain_written && k.as_ref() > "chain" {
                write_member(&mut head, &CHAIN_KEY, &chain_json);
                chain_written = true;
            }
            if hash_at.is_none() && k.as_ref() > "hash" {
                hash_at = Some(head.len());
            }
            write_member(&mut head, k, v.bytes());
        }
        if !chain_written {
            write_member(&mut head, &CHAIN_KEY, &chain_json);
        }
        let hash_at = hash_at.unwrap_or(head.len());
        let state = cache.absorb(&head);
        Sealer {
            head,
            hash_at,
            state,
            after,
        }
    }
}

/// A [`PreparedEvent`] with its head written and hashed, ready to be sealed
/// against whatever chain head the compare-and-swap loop reads.
pub struct Sealer<'a> {
    /// `{` and the members before `prev`, without `hash`.
    head: Vec<u8>,
    /// Where the `hash` member goes in the line.
    hash_at: usize,
    /// SHA-256 state after absorbing `head`.
    state: Sha256,
    /// Members after `prev`, in key order.
    after: &'a [(Cow<'static, str>, Member)],
}

/// A value of the part of an event sealing writes.
enum TailValue<'a> {
    Written(&'a [u8]),
    Prev,
    Seq,
}

impl Sealer<'_> {
    pub fn seal(&self, seq: u64, prev: &str) -> SealedEvent {
        let mut rest: Vec<(&Cow<'static, str>, TailValue)> =
            Vec::with_capacity(self.after.len() + 3);
        rest.push((&PREV_KEY, TailValue::Prev));
        rest.extend(
            self.after
                .iter()
                // The first event of a chain marks the process start, whatever the caller said.
                .filter(|(k, _)| !(seq == 1 && k == "segment"))
                .map(|(k, v)| (k, TailValue::Written(v.bytes()))),
        );
        rest.push((&SEQ_KEY, TailValue::Seq));
        if seq == 1 {
            rest.push((&SEGMENT_KEY, TailValue::Written(PROCESS_START_SEGMENT)));
        }
        rest.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let size: usize = rest
            .iter()
            .map(|(k, v)| match v {
                TailValue::Written(v) => k.len() + v.len() + 4,
                TailValue::Prev => prev.len() + 12,
                TailValue::Seq => 26,
            })
            .sum();
        // Starts past the head's last member, so every member takes a comma.
        let mut tail = Vec::with_capacity(size + 2);
        for (k, v) in rest {
            tail.push(b',');
            write_key(&mut tail, k);
            match v {
                TailValue::Written(v) => tail.extend_from_slice(v),
                // Writing a str or a number into a Vec cannot fail.
                TailValue::Prev => {
                    let _ = serde_json::to_writer(&mut tail, prev);
                }
                TailValue::Seq => {
                    let _ = serde_json::to_writer(&mut tail, &seq);
                }
            }
        }
        tail.push(b'}');
        let mut state = self.state.clone();
        state.update(&tail);
        let hash = lower_hex(&state.finalize());

        let (before_hash, after_hash) = self.head.split_at(self.hash_at);
        let mut line = Vec::with_capacity(self.head.len() + tail.len() + 76);
        line.extend_from_slice(before_hash);
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.push(b'"');
        line.extend_from_slice(after_hash);
        line.extend_from_slice(&tail);
        SealedEvent {
            seq,
            prev: prev.to_owned(),
            hash,
            // Only serde_json output and ASCII punctuation were written.
            line: String::from_utf8(line).unwrap_or_default(),
        }
    }
}

/// Intermediate SHA-256 states of the last event head one worker VM hashed,
/// one per 64-byte block.
///
/// Consecutive events of a VM mostly share their head (same chain, caller,
/// decision and policy), and SHA-256 consumes its input block by block, so
/// the state after a shared run of whole blocks is the same for both events:
/// reusing it gives exactly the hash a fresh computation gives, for the bytes
/// compared equal, and under V8 saves ~3.7K instructions per block. Bounded
/// to `MAX_CACHED_BLOCKS` (16).
#[derive(Default, Clone)]
pub struct HeadHashCache {
    /// The cached head's first whole blocks.
    blocks: Vec<u8>,
    /// `states[i]`: the state after absorbing `blocks[..(i + 1) * 64]`.
    states: Vec<Sha256>,
}

impl std::fmt::Debug for HeadHashCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadHashCache")
            .field("blocks", &self.states.len())
            .finish()
    }
}

impl HeadHashCache {
    /// The SHA-256 state after absorbing `head`, starting from the longest
    /// run of whole blocks it shares with the previous head; then remember
    /// `head`'s blocks for the next event.
    pub fn absorb(&mut self, head: &[u8]) -> Sha256 {
        let shared = self
            .blocks
            .chunks_exact(SHA256_BLOCK)
            .zip(head.chunks_exact(SHA256_BLOCK))
            .take_while(|(cached, new)| cached == new)
            .count();
        self.blocks.truncate(shared * SHA256_BLOCK);
        self.states.truncate(shared);
        let mut state = self.states.last().cloned().unwrap_or_default();
        let mut rest = head.get(shared * SHA256_BLOCK..).unwrap_or_default();
        while self.states.len() < MAX_CACHED_BLOCKS {
            let Some((block, more)) = rest.split_first_chunk::<SHA256_BLOCK>() else {
                break;
            };
            state.update(block);
            self.blocks.extend_from_slice(block);
            self.states.push(state.clone());
            rest = more;
        }
        state.update(rest);
        state
    }

    /// Whole blocks remembered.
    pub fn cached_blocks(&self) -> usize {
        self.states.len()
    }
}

/// The chain hash of an event: SHA-256 of its canonical JSON without `hash`.
/// `None` when `event` is not a JSON object.
pub fn event_hash(event: &Value) -> Option<String> {
    if !event.is_object() {
        return None;
    }
    // Hash the event without `hash`, without cloning it.
    Some(sha256_hex(
        canonical_without(event, Some("hash")).as_bytes(),
    ))
}

/// Put the chain fields into `unsealed` and compute its hash. Fields of the
/// same names already present are overwritten: only the chain decides them.
pub fn seal(unsealed: Value, chain: &str, seq: u64, prev: &str) -> Option<Value> {
    let Value::Object(mut m) = unsealed else {
        return None;
    };
    m.insert("seq".into(), Value::from(seq));
    m.insert("chain".into(), Value::from(chain));
    m.insert("prev".into(), Value::from(prev));
    m.remove("hash");
    if seq == 1 {
        // The first event of a chain marks the process start, whatever the caller said.
        m.insert(
            "segment".into(),
            serde_json::json!({"reason": "process_start"}),
        );
    }
    let mut v = Value::Object(m);
    let hash = event_hash(&v)?;
    if let Value::Object(m) = &mut v {
        m.insert("hash".into(), Value::from(hash));
    }
    Some(v)
}

/// The NDJSON line of a sealed event (no newline): canonical JSON, so the line
/// itself is what was hashed, plus the hash.
pub fn event_line(sealed: &Value) -> String {
    canonical(sealed)
}

/// True when the stored `hash` of `event` matches its recomputation.
pub fn hash_matches(event: &Value) -> bool {
    match (event.get("hash").and_then(Value::as_str), event_hash(event)) {
        (Some(stored), Some(computed)) => stored == computed,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn facts(subject: &str, tool: &str) -> EventFacts {
        EventFacts {
            ts_ms: 1_718_000_000_000,
            identity: AuditIdentity {
                subject: Some(subject.into()),
                tenant: Some("acme".into()),
                roles: vec!["reader".into()],
                via: Via::Jwt,
            },
            method: "tools/call".into(),
            target: Some(tool.into()),
            id: Some(json!(7)),
            arguments: Some(json!({"q": "secret-ish", "n": 1})),
            redacted_arguments: Some(json!({"q": "[REDACTED:secret]", "n": 1})),
            decision: AuditDecision {
                verdict: Verdict::Allow,
                rule: "read".into(),
                reason: "allowed by rule read".into(),
                dry_run: false,
            },
            findings: vec![],
            response: Some(AuditResponse {
                status: 200,
                is_error: false,
                bytes: 321,
                redactions: 0,
            }),
            policy_sha256: "ab".repeat(32),
            vm_start: false,
            dropped: vec![],
        }
    }

    #[test]
    fn arguments_mode_controls_what_of_the_arguments_is_recorded() {
        let hash_of_args = sha256_hex(canonical(&json!({"n": 1, "q": "secret-ish"})).as_bytes());
        let table = [
            (
                "hash_records_only_the_hash",
                ArgumentsMode::Hash,
                json!(hash_of_args),
                None,
            ),
            (
                "redacted_records_hash_and_redacted_copy",
                ArgumentsMode::Redacted,
                json!(hash_of_args),
                Some(json!({"q": "[REDACTED:secret]", "n": 1})),
            ),
            (
                "omit_records_nothing",
                ArgumentsMode::Omit,
                Value::Null,
                None,
            ),
        ];
        for (name, mode, want_hash, want_args) in table {
            let v = unsealed_event(facts("alice", "get_issue"), mode);
            assert_eq!(v["request"]["args_sha256"], want_hash, "{name}");
            assert_eq!(v["request"].get("arguments").cloned(), want_args, "{name}");
            assert!(
                !canonical(&v).contains("secret-ish\""),
                "{name}: raw argument leaked"
            );
        }
    }

    #[test]
    fn prepared_event_line_is_the_canonical_seal() {
        // The filter writes events with `prepare` + `PreparedEvent::seal`; the
        // verifier and the spec go through `Value` + canonical JSON. Both must
        // give the same bytes, for every optional member and escaping case.
        let rich = || {
            let mut f = facts("al\"ice\u{e9}\u{1f600}", "get/issue\n");
            f.id = Some(json!("req-\u{7f}"));
            f.redacted_arguments = Some(json!({"z": [1.5, {"b": null, "a": true}], "A": "x"}));
            f.findings = vec![AuditFinding {
                action: "redact".into(),
                kind: "email".into(),
                path: "$.params.arguments.to".into(),
            }];
            f.dropped = vec![SeqRange { first: 3, last: 9 }];
            f.vm_start = true;
            f
        };
        let table: Vec<(&str, EventFacts, ArgumentsMode, u64)> = vec![
            ("plain_event", facts("alice", "t"), ArgumentsMode::Hash, 5),
            ("every_optional_member", rich(), ArgumentsMode::Redacted, 5),
            ("first_event_of_a_chain", rich(), ArgumentsMode::Redacted, 1),
            (
                "no_response_no_arguments",
                {
                    let mut f = facts("bob", "t");
                    f.response = None;
                    f.arguments = None;
                    f.id = None;
                    f
                },
                ArgumentsMode::Omit,
                2,
            ),
        ];
        for (name, f, mode, seq) in table {
            let prev = "7".repeat(64);
            let reference = seal(unsealed_event(f.clone(), mode), "node/1-a", seq, &prev)
                .unwrap_or(Value::Null);
            let sealed = prepare(f, mode).seal("node/1-a", seq, &prev);
            assert_eq!(sealed.line, event_line(&reference), "{name}");
            assert_eq!(json!(sealed.hash), reference["hash"], "{name}");
            assert_eq!(sealed.seq, seq, "{name}");
            let reread: Value = serde_json::from_str(&sealed.line).unwrap_or(Value::Null);
            assert!(hash_matches(&reread), "{name}");
        }
    }

    #[test]
    fn sealing_with_what_the_previous_event_left_gives_the_fresh_bytes() {
        // One VM's memo, carried from event to event as the sink does: every
        // event must seal to exactly what a cold computation gives, whether its
        // head equals the last one, shares only some blocks, is shorter,
        // longer than the cache bound, or belongs to another chain.
        let with = |edit: fn(&mut EventFacts)| {
            let mut f = facts("alice", "t");
            edit(&mut f);
            f
        };
        let table: Vec<(&str, &str, EventFacts)> = vec![
            ("first_event_cold_cache", "node/1-a", facts("alice", "t")),
            ("same_head_again", "node/1-a", facts("alice", "t")),
            ("other_tool_same_head", "node/1-a", facts("alice", "u")),
            ("other_subject", "node/1-a", facts("bob", "t")),
            (
                "other_rule",
                "node/1-a",
                with(|f| f.decision.rule = "write".into()),
            ),
            (
                "longer_head_with_findings",
                "node/1-a",
                with(|f| {
                    f.findings = (0..3)
                        .map(|i| AuditFinding {
                            action: "flag".into(),
                            kind: "email".into(),
                            path: format!("$.params.arguments.to[{i}]"),
                        })
                        .collect();
                }),
            ),
            (
                "head_longer_than_the_cache_bound",
                "node/1-a",
                with(|f| f.identity.roles = (0..200).map(|i| format!("role-{i}")).collect()),
            ),
            (
                "same_over_long_head_again",
                "node/1-a",
                with(|f| f.identity.roles = (0..200).map(|i| format!("role-{i}")).collect()),
            ),
            ("back_to_short_head", "node/1-a", facts("alice", "t")),
            (
                "other_policy",
                "node/1-a",
                with(|f| f.policy_sha256 = "cd".repeat(32)),
            ),
            (
                "dropped_range_announced",
                "node/1-a",
                with(|f| f.dropped = vec![SeqRange { first: 2, last: 4 }]),
            ),
            ("other_chain", "node/2-b", facts("alice", "t")),
        ];
        let mut memo = EventMemo::default();
        let prev = "5".repeat(64);
        for (name, chain, f) in table {
            let cold = prepare(f.clone(), ArgumentsMode::Hash).seal(chain, 7, &prev);
            let warm = prepare_with(f, ArgumentsMode::Hash, &mut memo)
                .sealer(chain, &mut memo.head_hashes)
                .seal(7, &prev);
            assert_eq!(warm, cold, "{name}");
            assert!(
                memo.head_hashes.cached_blocks() <= MAX_CACHED_BLOCKS,
                "{name}"
            );
            let reread: Value = serde_json::from_str(&warm.line).unwrap_or(Value::Null);
            assert!(hash_matches(&reread), "{name}");
        }
    }

    #[test]
    fn head_hash_state_equals_hashing_the_head_whole() {
        let mut cache = HeadHashCache::default();
        let heads: [&[u8]; 5] = [b"", &[b'a'; 63], &[b'a'; 64], &[b'a'; 200], &[b'b'; 2000]];
        for head in heads.iter().chain(heads.iter().rev()) {
            let fresh = Sha256::digest(head);
            assert_eq!(cache.absorb(head).finalize(), fresh, "{} bytes", head.len());
        }
    }

    #[test]
    fn redacted_mode_without_redacted_copy_records_no_arguments() {
        let mut f = facts("alice", "get_issue");
        f.redacted_arguments = None;
        let v = unsealed_event(f, ArgumentsMode::Redacted);
        assert_eq!(v["request"].get("arguments"), None);
    }

    #[test]
    fn sealed_event_has_every_policy_md_field_and_round_trips_as_struct() {
        let sealed = seal(
            unsealed_event(facts("alice", "get_issue"), ArgumentsMode::Hash),
            "n/b",
            2,
            &"1".repeat(64),
        )
        .unwrap_or(Value::Null);
        for field in [
            "seq",
            "chain",
            "ts_ms",
            "prev",
            "hash",
            "identity",
            "request",
            "decision",
            "findings",
            "response",
            "policy_sha256",
        ] {
            assert!(sealed.get(field).is_some(), "missing {field}");
        }
        assert_eq!(sealed["identity"]["via"], "jwt");
        assert_eq!(sealed["decision"]["verdict"], "allow");
        assert_eq!(sealed.get("segment"), None);
        let typed: Result<AuditEvent, _> = serde_json::from_value(sealed.clone());
        assert!(
            matches!(typed, Ok(ref e) if e.seq == 2 && e.chain == "n/b"),
            "{typed:?}"
        );
    }

    #[test]
    fn hash_is_recomputable_from_the_line_alone() {
        let sealed = seal(
            unsealed_event(facts("alice", "t"), ArgumentsMode::Hash),
            "n/b",
            1,
            GENESIS_PREV,
        )
        .unwrap_or(Value::Null);
        let line = event_line(&sealed);
        let reparsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        assert!(hash_matches(&reparsed));
        let mut without: Value = reparsed.clone();
        if let Value::Object(m) = &mut without {
            m.remove("hash");
        }
        assert_eq!(
            Some(sha256_hex(canonical(&without).as_bytes())),
            reparsed["hash"].as_str().map(str::to_owned)
        );
    }

    #[test]
    fn changing_any_field_breaks_the_hash() {
        let sealed = seal(
            unsealed_event(facts("alice", "t"), ArgumentsMode::Hash),
            "n/b",
            3,
            GENESIS_PREV,
        )
        .unwrap_or(Value::Null);
        type Edit = (&'static str, fn(&mut Value));
        let edits: [Edit; 4] = [
            ("subject", |v| v["identity"]["subject"] = json!("mallory")),
            ("verdict", |v| v["decision"]["verdict"] = json!("deny")),
            ("seq", |v| v["seq"] = json!(4)),
            ("added_field", |v| v["note"] = json!("x")),
        ];
        for (name, edit) in edits {
            let mut v = sealed.clone();
            edit(&mut v);
            assert!(!hash_matches(&v), "{name}");
        }
        assert!(hash_matches(&sealed));
    }

    #[test]
    fn first_event_of_a_chain_is_marked_process_start() {
        let mut f = facts("a", "t");
        f.vm_start = true;
        let u = unsealed_event(f, ArgumentsMode::Hash);
        assert_eq!(u["segment"], json!({"reason": "vm_start"}));
        let first = seal(u.clone(), "n/b", 1, GENESIS_PREV).unwrap_or(Value::Null);
        assert_eq!(first["segment"], json!({"reason": "process_start"}));
        let later = seal(u, "n/b", 9, GENESIS_PREV).unwrap_or(Value::Null);
        assert_eq!(later["segment"], json!({"reason": "vm_start"}));
    }

    #[test]
    fn seal_refuses_non_objects() {
        assert_eq!(seal(json!([1]), "c", 1, GENESIS_PREV), None);
        assert_eq!(event_hash(&json!("x")), None);
    }
}
