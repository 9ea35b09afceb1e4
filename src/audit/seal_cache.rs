//! The filter's fast way to seal an event: written ahead, sealed with what
//! the previous event left. Speed only; the contract (members, canonical
//! bytes, hash) is [`super::event`], and [`super::seal`] + [`super::event_line`]
//! is the reference these bytes are held to (the tests below).
//!
//! - [`PreparedEvent`]: an event's members written once, before the
//!   compare-and-swap loop on the chain head; [`Sealer`] hashes the head
//!   (the members before `prev`) once and only the tail inside the loop.
//! - [`EventMemo`]: one worker VM's last members, reused when equal.
//! - [`HeadHashCache`]: the SHA-256 midstates of the last head, reused for
//!   the whole blocks the next head shares.

use super::config::ArgumentsMode;
use super::event::{
    clipped_identity, request_of, AuditDecision, AuditFinding, AuditIdentity, EventFacts,
    SealedEvent, Segment, SegmentReason,
};
use crate::json::{canonical, lower_hex};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::rc::Rc;

/// Members only the chain decides; [`PreparedEvent`] never carries them.
const CHAIN_MEMBERS: [&str; 4] = ["chain", "hash", "prev", "seq"];

/// `segment` of seq 1, whatever the event said (see [`super::seal`]).
const PROCESS_START_SEGMENT: &[u8] = br#"{"reason":"process_start"}"#;

/// The first member whose value depends on the chain head. Every member whose
/// key sorts before it (with canonical key order: `approval`, `chain`, `decision`,
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
pub(crate) struct EventMemo {
    decision: Option<(AuditDecision, Rc<Vec<u8>>)>,
    findings: Option<(Vec<AuditFinding>, Rc<Vec<u8>>)>,
    identity: Option<(AuditIdentity, Rc<Vec<u8>>)>,
    policy_sha256: Option<(String, Rc<Vec<u8>>)>,
    /// Hash states of the last event's head.
    pub(crate) head_hashes: HeadHashCache,
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
pub(crate) fn prepare_with(
    mut facts: EventFacts,
    mode: ArgumentsMode,
    memo: &mut EventMemo,
) -> PreparedEvent {
    let request = request_of(&mut facts, mode);
    // Already in code-point order of the keys.
    let mut members: Vec<(Cow<'static, str>, Member)> = Vec::with_capacity(10);
    if let Some(a) = &facts.approval {
        members.push(("approval".into(), Member::Own(member(a))));
    }
    if !facts.catalogue.is_empty() {
        members.push(("catalogue".into(), Member::Own(member(&facts.catalogue))));
    }
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
        remembered(&mut memo.identity, clipped_identity(facts.identity)),
    ));
    if !facts.pins.is_empty() {
        members.push(("pins".into(), Member::Own(member(&facts.pins))));
    }
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
    pub(crate) fn from_value(v: &Value) -> Option<Self> {
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
        crate::sort::sort_by(&mut members, |a, b| a.0 < b.0);
        Some(PreparedEvent { members })
    }

    /// The event as the `seq`th of `chain` after `prev`: exactly the bytes
    /// [`super::seal`] + [`super::event_line`] produce for the same event,
    /// hashed once.
    pub fn seal(&self, chain: &str, seq: u64, prev: &str) -> SealedEvent {
        self.sealer(chain, &mut HeadHashCache::default())
            .seal(seq, prev)
    }

    /// Everything of sealing that does not depend on the chain head: the
    /// members before `prev` written and hashed (reusing `cache` for the
    /// blocks they share with the previous event's).
    pub(crate) fn sealer(&self, chain: &str, cache: &mut HeadHashCache) -> Sealer<'_> {
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
pub(crate) struct Sealer<'a> {
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
    pub(crate) fn seal(&self, seq: u64, prev: &str) -> SealedEvent {
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
        crate::sort::sort_by(&mut rest, |a, b| a.0.as_ref() < b.0.as_ref());
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
    pub(crate) fn absorb(&mut self, head: &[u8]) -> Sha256 {
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
    #[cfg(test)]
    pub(crate) fn cached_blocks(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::tests::facts;
    use super::super::event::{
        event_line, hash_matches, seal, unsealed_event, ApprovalStep, AuditApproval, SeqRange,
    };
    use super::*;
    use serde_json::json;

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
            f.approval = Some(AuditApproval {
                decided_by: Some("alice@example.com".into()),
                id: Some(format!("apr_{}", "0a".repeat(16))),
                reason: Some("ok \"checked\"\n".into()),
                step: ApprovalStep::Approved,
            });
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
            (
                "every_caller_controlled_field_clipped",
                {
                    let mut f = facts(&"s\u{e9}".repeat(400), &"t".repeat(1 << 20));
                    f.method = "m".repeat(300);
                    f.id = Some(json!("i".repeat(1_000)));
                    f.identity.tenant = Some("\u{1f600}".repeat(100));
                    f
                },
                ArgumentsMode::Hash,
                3,
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
                "an_approval_step",
                "node/1-a",
                with(|f| {
                    f.approval = Some(AuditApproval {
                        decided_by: None,
                        id: None,
                        reason: None,
                        step: ApprovalStep::Requested,
                    })
                }),
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
}
