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
use crate::json::{canonical, canonical_without, sha256_hex};
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
pub(super) fn request_of(facts: &mut EventFacts, mode: ArgumentsMode) -> AuditRequest {
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
/// [`seal`] takes. The filter itself uses [`super::prepare`], which writes
/// the same JSON without the intermediate `Value`.
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
pub(crate) struct CanonicalValue<'a>(pub(crate) &'a Value);

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
