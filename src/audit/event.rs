//! The audit event: its typed shape (POLICY.md "Audit events"), its hash,
//! and the reference way to seal it ([`seal`], [`event_line`]).
//!
//! A verifier reads and hashes an event as a `serde_json::Value`, not as the
//! structs: the hash covers every field of the line as it stands, including
//! fields a later version adds, so it is recomputed from the line alone. The
//! filter writes events from the typed members below, already in canonical
//! form, and hashes the very bytes it sends: the faster way to the same
//! bytes is [`super::seal_cache`], beside this module.

use super::config::ArgumentsMode;
use crate::json::{canonical, canonical_sha256_hex, canonical_without, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The member structs below declare their fields in code-point order of the
// JSON names, and JSON values inside them go through [`CanonicalValue`]:
// serialising them with serde_json is then already canonical JSON, which is
// what `seal_cache::prepare` relies on to write an event once instead of
// building a `Value` and re-serialising it
// (`seal_cache::tests::prepared_event_line_is_the_canonical_seal` checks the
// equivalence).

/// `prev` of the first event of a chain.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event as it appears on the wire (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Added field: the step of a human approval this event records
    /// (docs/policy.md#approval); absent on every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<AuditApproval>,
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
    /// Added field: tools whose definition differs from its pin (or that
    /// have none), with both digests: a call refused or warned by its pin,
    /// or the entries of a `tools/list` answer removed or warned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<AuditPin>,
    /// Added field: what the catalogue checks found in a `tools/list`
    /// answer's definitions or in a result, one record per finding (the
    /// check and the JSON pointer of the string, never the text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalogue: Vec<AuditCatalogue>,
}

/// One catalogue finding. `action`: what was done to the tool or result
/// it was found in: `removed` or `flagged` (a list's tool), `blocked`,
/// `wrapped` or `flagged` (a result); in dry run what enforcement would do
/// (the event's `decision.dry_run` says nothing was changed). `pointer`: a
/// JSON pointer into the tool definition (`tool` names it) or into the
/// answer (`/result/content/0/text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCatalogue {
    pub action: String,
    pub check: String,
    pub pointer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// Catalogue records kept in one event (the counters have them all).
pub const MAX_CATALOGUE_RECORDS: usize = 32;

/// A tool that does not match its pin. `expected`: the pin (null when the
/// tool has none); `actual`: the digest seen, `unseen`, `absent` or
/// `unavailable` (null for a call of an unpinned tool, whose definition is
/// not remembered); `action`: `removed` (from a list), `refused` (a call),
/// or `warned` (forwarded: `pins.mode: warn` or dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPin {
    pub action: String,
    pub actual: Option<String>,
    pub expected: Option<String>,
    pub tool: String,
}

/// Pin records kept in one event: a server listing thousands of unpinned
/// tools must not make one event outgrow a batch (the counters have them all).
pub const MAX_PIN_RECORDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditIdentity {
    pub roles: Vec<String>,
    pub subject: Option<String>,
    /// Added field: SHA-256 of the whole subject, present only when `subject`
    /// was clipped to [`CLIP_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_sha256: Option<String>,
    pub tenant: Option<String>,
    /// Added field: as `subject_sha256`, for `tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_sha256: Option<String>,
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
    /// The JSON-RPC id as received; null for notifications. An id whose
    /// canonical JSON is over [`CLIP_BYTES`] becomes a string: that JSON, clipped.
    #[serde(serialize_with = "canonical_option")]
    pub id: Option<Value>,
    /// Added field: SHA-256 of the whole id's canonical JSON, present only
    /// when `id` was clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_sha256: Option<String>,
    pub method: String,
    /// Added field: SHA-256 of the whole method, present only when clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_sha256: Option<String>,
    /// Tool, resource or prompt name; null for other methods.
    pub target: Option<String>,
    /// Added field: SHA-256 of the whole target, present only when clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_sha256: Option<String>,
}

/// Bytes kept of a caller-controlled string in an event (`request.method`,
/// `request.target`, `request.id`'s JSON, `identity.subject`,
/// `identity.tenant`). A longer one keeps its first `CLIP_BYTES` bytes (cut
/// on a character boundary) followed by `…`, and the SHA-256 of the whole
/// value goes beside it in `<field>_sha256`, so it can still be matched.
/// Why: a caller chooses these, up to the request size limit (1 MiB by
/// default); copied whole, a few denied calls fill a worker VM's audit
/// buffer while the collector is down, and one event can outgrow a batch.
pub const CLIP_BYTES: usize = 256;

/// `s` clipped to [`CLIP_BYTES`], with the SHA-256 of the whole of it if it
/// had to be (None: kept whole).
pub fn clip(s: String) -> (String, Option<String>) {
    if s.len() <= CLIP_BYTES {
        return (s, None);
    }
    let digest = sha256_hex(s.as_bytes());
    let mut end = CLIP_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut short = s;
    short.truncate(end);
    short.push('…');
    (short, Some(digest))
}

/// [`clip`] of an optional string.
fn clip_option(s: Option<String>) -> (Option<String>, Option<String>) {
    match s.map(clip) {
        Some((short, digest)) => (Some(short), digest),
        None => (None, None),
    }
}

/// A JSON-RPC id over [`CLIP_BYTES`] of canonical JSON becomes that JSON,
/// clipped, as a string; the SHA-256 is of the whole canonical JSON.
fn clip_id(id: Option<Value>) -> (Option<Value>, Option<String>) {
    let Some(id) = id else {
        return (None, None);
    };
    // Numbers and short strings, the ids clients send, are not serialised twice.
    let small = match &id {
        Value::String(s) => s.len() < CLIP_BYTES / 2,
        Value::Number(_) | Value::Null | Value::Bool(_) => true,
        Value::Array(_) | Value::Object(_) => false,
    };
    if small {
        return (Some(id), None);
    }
    let text = canonical(&id);
    if text.len() <= CLIP_BYTES {
        return (Some(id), None);
    }
    let (short, digest) = clip(text);
    (Some(Value::String(short)), digest)
}

/// The identity with its caller-controlled strings clipped (see [`CLIP_BYTES`]).
pub(super) fn clipped_identity(identity: AuditIdentity) -> AuditIdentity {
    let (subject, subject_sha256) = clip_option(identity.subject);
    let (tenant, tenant_sha256) = clip_option(identity.tenant);
    AuditIdentity {
        subject,
        subject_sha256: subject_sha256.or(identity.subject_sha256),
        tenant,
        tenant_sha256: tenant_sha256.or(identity.tenant_sha256),
        ..identity
    }
}

/// One step of a human approval, as the filter saw it: what the approval
/// service answered about this call, by whom it was decided, under which
/// approval id. Fields in code-point order (see the note at the top).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditApproval {
    /// The approver who approved or denied it, as the service names them.
    pub decided_by: Option<String>,
    /// `apr_` + 32 hex digits, once the service named one.
    pub id: Option<String>,
    /// The approver's reason, as given.
    pub reason: Option<String>,
    pub step: ApprovalStep,
}

/// What happened to the call at this step (docs/policy.md#approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStep {
    /// The filter asked the approval service (the callout left).
    Requested,
    /// A held call's request was approved; the filter now uses it.
    Approved,
    /// The call used the approval and went on (the exchange's final event).
    Used,
    /// Nobody decided yet: refused (async mode, or a hold that timed out).
    Pending,
    /// An approver denied it.
    Denied,
    /// The request expired before anyone decided or before it was used.
    Expired,
    /// The approval exists but this call could not use it (used already,
    /// or for another call).
    NotUsable,
    /// No usable answer from the service: refused (fail closed).
    Unavailable,
    /// The client went away while the call waited; nothing was used.
    Abandoned,
    /// The policy changed while the call waited: the approval, given under
    /// the old policy, was not used.
    PolicyChanged,
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
    /// The approval step this event records, if any.
    pub approval: Option<AuditApproval>,
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
    pub pins: Vec<AuditPin>,
    pub catalogue: Vec<AuditCatalogue>,
}

/// The `request` member: what of the arguments is recorded depends on `mode`.
/// Takes the request's fields out of `facts`.
pub(super) fn request_of(facts: &mut EventFacts, mode: ArgumentsMode) -> AuditRequest {
    let arguments = facts.arguments.as_ref();
    let args_sha256 = match mode {
        ArgumentsMode::Omit => None,
        ArgumentsMode::Hash | ArgumentsMode::Redacted => arguments.map(canonical_sha256_hex),
    };
    // Without a redacted copy we say nothing rather than fall back to raw values.
    let arguments = match mode {
        ArgumentsMode::Redacted => facts.redacted_arguments.take(),
        ArgumentsMode::Hash | ArgumentsMode::Omit => None,
    };
    let (id, id_sha256) = clip_id(facts.id.take());
    let (method, method_sha256) = clip(std::mem::take(&mut facts.method));
    let (target, target_sha256) = clip_option(facts.target.take());
    AuditRequest {
        args_sha256,
        arguments,
        id,
        id_sha256,
        method,
        method_sha256,
        target,
        target_sha256,
    }
}

/// The event without `seq`, `chain`, `prev` and `hash`, as a `Value`: what
/// [`seal`] takes. The filter itself uses [`super::prepare`], which writes
/// the same JSON without the intermediate `Value`.
pub fn unsealed_event(mut facts: EventFacts, mode: ArgumentsMode) -> Value {
    let request = request_of(&mut facts, mode);
    let event = AuditEvent {
        approval: facts.approval,
        seq: 0,
        chain: String::new(),
        ts_ms: facts.ts_ms,
        prev: String::new(),
        hash: String::new(),
        identity: clipped_identity(facts.identity),
        request,
        decision: facts.decision,
        findings: facts.findings,
        response: facts.response,
        policy_sha256: facts.policy_sha256,
        segment: facts.vm_start.then_some(Segment {
            reason: SegmentReason::VmStart,
        }),
        dropped: facts.dropped,
        pins: facts.pins,
        catalogue: facts.catalogue,
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
pub(crate) struct CanonicalValue<'a>(pub(crate) &'a Value);

impl Serialize for CanonicalValue<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                crate::sort::sort_by(&mut entries, |a, b| a.0 < b.0);
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

/// A sealed event as it travels: its seq, hash and NDJSON line (no newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    pub seq: u64,
    /// The previous event's hash, as linked.
    pub prev: String,
    pub hash: String,
    pub line: String,
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
                subject_sha256: None,
                tenant_sha256: None,
                via: Via::Jwt,
            },
            approval: None,
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
            pins: vec![],
            catalogue: vec![],
        }
    }

    #[test]
    fn caller_controlled_fields_are_clipped_with_their_sha256_kept() {
        let long_tool = "t".repeat(1 << 20);
        let long_id = json!("i".repeat(1 << 20));
        let id_text = canonical(&long_id);
        // 255 ASCII bytes then a 2-byte character: the cut falls inside it.
        let straddling = format!("{}\u{e9}tail", "a".repeat(255));
        // (case, change to the facts, JSON pointer, kept value, sha256 member, its value)
        type Case = (
            &'static str,
            Box<dyn Fn(&mut EventFacts)>,
            &'static str,
            Value,
            &'static str,
            Value,
        );
        let table: Vec<Case> = vec![
            (
                "short_target_kept_whole_without_sha",
                Box::new(|_| {}),
                "/request/target",
                json!("t"),
                "/request/target_sha256",
                Value::Null,
            ),
            (
                "megabyte_tool_name_clipped",
                Box::new({
                    let t = long_tool.clone();
                    move |f| f.target = Some(t.clone())
                }),
                "/request/target",
                json!(format!("{}…", "t".repeat(CLIP_BYTES))),
                "/request/target_sha256",
                json!(sha256_hex(long_tool.as_bytes())),
            ),
            (
                "exactly_clip_bytes_kept_whole",
                Box::new(|f| f.method = "m".repeat(CLIP_BYTES)),
                "/request/method",
                json!("m".repeat(CLIP_BYTES)),
                "/request/method_sha256",
                Value::Null,
            ),
            (
                "long_method_clipped",
                Box::new(|f| f.method = "m".repeat(CLIP_BYTES + 1)),
                "/request/method",
                json!(format!("{}…", "m".repeat(CLIP_BYTES))),
                "/request/method_sha256",
                json!(sha256_hex("m".repeat(CLIP_BYTES + 1).as_bytes())),
            ),
            (
                "cut_on_a_character_boundary",
                Box::new({
                    let s = straddling.clone();
                    move |f| f.identity.subject = Some(s.clone())
                }),
                "/identity/subject",
                json!(format!("{}…", "a".repeat(255))),
                "/identity/subject_sha256",
                json!(sha256_hex(straddling.as_bytes())),
            ),
            (
                "long_tenant_clipped",
                Box::new(|f| f.identity.tenant = Some("x".repeat(5_000))),
                "/identity/tenant",
                json!(format!("{}…", "x".repeat(CLIP_BYTES))),
                "/identity/tenant_sha256",
                json!(sha256_hex("x".repeat(5_000).as_bytes())),
            ),
            (
                "megabyte_id_becomes_its_clipped_json",
                Box::new({
                    let id = long_id.clone();
                    move |f| f.id = Some(id.clone())
                }),
                "/request/id",
                json!(format!("{}…", &id_text[..CLIP_BYTES])),
                "/request/id_sha256",
                json!(sha256_hex(id_text.as_bytes())),
            ),
            (
                "big_object_id_clipped_too",
                Box::new(|f| f.id = Some(json!({"k": "v".repeat(300)}))),
                "/request/id_sha256",
                json!(sha256_hex(
                    canonical(&json!({"k": "v".repeat(300)})).as_bytes()
                )),
                "/request/id_sha256",
                json!(sha256_hex(
                    canonical(&json!({"k": "v".repeat(300)})).as_bytes()
                )),
            ),
            (
                "numeric_id_kept",
                Box::new(|f| f.id = Some(json!(123_456_789))),
                "/request/id",
                json!(123_456_789),
                "/request/id_sha256",
                Value::Null,
            ),
        ];
        for (name, change, pointer, kept, sha_member, sha) in table {
            let mut f = facts("alice", "t");
            change(&mut f);
            let prev = "7".repeat(64);
            let event = seal(unsealed_event(f, ArgumentsMode::Hash), "n/1", 1, &prev)
                .unwrap_or(Value::Null);
            assert_eq!(event.pointer(pointer), Some(&kept), "{name}");
            assert_eq!(
                event.pointer(sha_member).cloned().unwrap_or(Value::Null),
                sha,
                "{name}"
            );
            assert!(hash_matches(&event), "{name}: the chain still verifies");
            assert!(
                event_line(&event).len() < 4_096,
                "{name}: the event stays small"
            );
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
