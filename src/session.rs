//! Session binding for 2025-era streamable HTTP sessions (`Mcp-Session-Id`).
//!
//! A session id is a bearer secret: whoever presents it continues the
//! session. We bind each id to the identity that first used it (or to the
//! caller whose `initialize` the server answered with it), so a stolen id is
//! useless to anyone else. Stateless 2026-07-28 requests carry no id and are
//! unaffected.
//!
//! Memory is bounded: bindings live in proxy-wasm shared data (shared by all
//! worker VMs, kept across VM reloads) in a fixed table of `capacity` entries,
//! 4-way set associative by the hash of the id. An entry idle longer than
//! `idle_timeout_ms` may be reused. When all four entries of a set are in
//! active use, a *new* session is refused (fail closed) rather than evicting a
//! live binding: eviction on demand would let an attacker flush the victim's
//! binding and then present the stolen id as "first seen".
//!
//! One identity holds at most `per_identity` live bindings, so no single
//! caller (and not all anonymous callers together: they are one identity)
//! can fill the table. Each identity's bindings are listed under its
//! fingerprint and counted when it is issued a new session.
//!
//! A reload may change `capacity`, and with it the set an id falls in: the
//! capacities the table was used with are recorded, and a lookup searches
//! the id's set under each (a new binding goes to the current layout), so a
//! capacity change forgets no binding.

use crate::config::{keywords, Errors, ObjReader};
use crate::identity::Caller;
use crate::json::sha256_hex;
use crate::store::{SharedStore, StoreError};
use serde_json::Value;

pub const WAYS: u64 = 4;
const KEY_PREFIX: &str = "mcp_firewall/session";
/// The capacities the table has been used with, oldest first.
const LAYOUTS_KEY: &str = "mcp_firewall/session-layouts";
/// How many capacities are remembered. An operator who changes `capacity`
/// more often than this while sessions live loses the oldest layout's
/// bindings (documented); each layout searched costs four lookups.
const MAX_LAYOUTS: usize = 8;
/// Per identity: the digests of the sessions bound to it, with when.
const OWNER_PREFIX: &str = "mcp_firewall/session-owner";
/// Re-stamping `last_seen` on every request would make every request a
/// shared-data write; once a minute is enough for idle eviction, or twice
/// per idle timeout when that is shorter ([`touch_every_ms`]).
const TOUCH_EVERY_MS: u64 = 60_000;
/// How long a binding the table confirmed is taken as still bound without
/// asking the table again ([`BoundMemo`]), at most.
const MEMO_FRESH_MS: u64 = 1_000;
/// The bytes of keys one VM's [`BoundMemo`] holds; full, it starts over.
const MEMO_BYTES: usize = 256 * 1024;
/// Longer ids (and callers) are looked up in the table every time.
const MEMO_KEY_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    pub enforce: bool,
    pub capacity: u64,
    pub idle_timeout_ms: u64,
    /// Live bindings one identity may hold.
    pub per_identity: u64,
    /// What the answer issuing a session that cannot be bound becomes.
    pub when_full: WhenFull,
}

/// `sessions.when_full`: a session the server issued that cannot be bound
/// (table set full, the identity's cap reached, shared data failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The answer to `initialize` is replaced by a refusal and its
    /// `Mcp-Session-Id` removed: the caller never holds an unbound session
    /// (fail closed, the default).
    Refuse,
    /// The session passes unbound (anyone presenting its id continues it);
    /// counted in `sessions.unbound_at_issuance` and logged.
    PassUnbound,
}

keywords!(WhenFull {
    Refuse => "refuse",
    PassUnbound => "pass_unbound",
});

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            enforce: true,
            capacity: 65_536,
            idle_timeout_ms: 3_600_000,
            per_identity: 1_024,
            when_full: WhenFull::Refuse,
        }
    }
}

/// `sessions.binding`: whether session ids are bound to their first caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingMode {
    Enforce,
    Off,
}

keywords!(BindingMode {
    Enforce => "enforce",
    Off => "off",
});

/// Compile the `sessions` section found at `path` (`$.sessions`); `section` is
/// `None` when it is absent. Mistakes are recorded in `errs`.
pub(crate) fn compile(section: Option<&Value>, path: &str, errs: &mut Errors) -> SessionConfig {
    let mut out = SessionConfig::default();
    let Some(v) = section else { return out };
    let Some(mut r) = ObjReader::new(v, path, errs) else {
        return out;
    };
    if let Some(b) = r.keyword::<BindingMode>("binding", errs) {
        out.enforce = b == BindingMode::Enforce;
    }
    // Shared data cannot be deleted in the proxy-wasm ABI, so the table size is
    // the memory bound: about 100 bytes per entry.
    if let Some(n) = r.uint("capacity", WAYS, 1 << 22, errs) {
        out.capacity = n;
    }
    if let Some(n) = r.uint("idle_timeout_s", 1, 7 * 86_400, errs) {
        out.idle_timeout_ms = n * 1000;
    }
    // The list of one identity's sessions is one shared-data value read on
    // every issuance to it: about 60 bytes per session.
    if let Some(n) = r.uint("per_identity", 1, 65_536, errs) {
        out.per_identity = n;
    }
    if let Some(w) = r.keyword::<WhenFull>("when_full", errs) {
        out.when_full = w;
    }
    r.finish(errs);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The id is bound to this caller (now or before).
    Bound,
    /// The id is bound to another identity.
    Stolen,
    /// No entry of the set is free: a new session cannot be bound now.
    TableFull,
    /// The caller already holds `per_identity` live sessions.
    IdentityFull,
    /// Shared data failed; the caller fails closed.
    Unavailable,
    /// No binding for the id, and none was made ([`Unknown::PassUnbound`]).
    Unbound,
}

/// What a lookup does with an id that has no binding yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Bind it to the caller: only for an id the server just issued (its
    /// answer to `initialize`), so nobody else can be "first" to present it.
    Bind,
    /// Leave it: a request's id is never bound (the server did not issue it
    /// to this caller, or the request may yet be refused); the server answers
    /// an id it does not know. An invented id takes no room in the table.
    PassUnbound,
}

/// How stale a binding's `last_seen` may get while it is in use. A fixed
/// minute let a binding with a shorter idle timeout look idle while its owner
/// used it every second, and be taken by another session of its set.
fn touch_every_ms(cfg: &SessionConfig) -> u64 {
    TOUCH_EVERY_MS.min(cfg.idle_timeout_ms / 2)
}

/// How long [`BoundMemo`] trusts a confirmation: short enough that the
/// touches it skips never let `last_seen` fall behind by an idle timeout
/// (memo + touch interval stay under three quarters of it).
fn memo_fresh_ms(cfg: &SessionConfig) -> u64 {
    MEMO_FRESH_MS.min(cfg.idle_timeout_ms / 4)
}

/// Per VM: the (session id, caller) pairs the shared table confirmed bound,
/// with when. A client continuing its session presents the same id on every
/// request, and asking the table costs two SHA-256, up to five shared-data
/// reads (hostcalls that lock and copy) and a dozen allocations each time:
/// the largest part of a small call's work. A binding never moves to
/// another caller while it is in use (only an idle one is reused), so a
/// confirmation stays true for the short time it is trusted
/// ([`memo_fresh_ms`]). Only `Bound` is remembered: a stolen or unknown id
/// is asked about every time. Keys are the raw id and caller, compared
/// byte for byte (no hash to collide), held in this VM's memory only, gone
/// with the policy they were confirmed under. Interior mutability: one
/// Wasm VM is one thread.
#[derive(Debug, Default)]
pub struct BoundMemo {
    confirmed: std::cell::RefCell<BoundMemoInner>,
}

#[derive(Debug, Default)]
struct BoundMemoInner {
    at: std::collections::HashMap<Box<[u8]>, u64>,
    bytes: usize,
}

/// The id and the caller, each preceded by its length (no separator a
/// subject could contain makes two pairs one key).
fn memo_key(session_id: &str, caller: &Caller) -> Vec<u8> {
    let parts = [
        session_id,
        caller.via.as_str(),
        caller.subject.as_deref().unwrap_or(""),
        caller.tenant.as_deref().unwrap_or(""),
    ];
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        key.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_le_bytes());
        key.extend_from_slice(p.as_bytes());
    }
    // `None` and `Some("")` differ for the table's fingerprint too.
    key.push(u8::from(caller.subject.is_some()) | (u8::from(caller.tenant.is_some()) << 1));
    key
}

/// [`check_and_bind`] of a request's id ([`Unknown::PassUnbound`]), with a
/// binding the table confirmed in the last [`memo_fresh_ms`] taken from
/// `memo` instead of the table.
pub fn check_request(
    store: &dyn SharedStore,
    cfg: &SessionConfig,
    memo: &BoundMemo,
    session_id: &str,
    caller: &Caller,
    now_ms: u64,
) -> Binding {
    let key = memo_key(session_id, caller);
    let fresh = memo_fresh_ms(cfg);
    let remembered = memo
        .confirmed
        .try_borrow()
        .ok()
        .and_then(|m| m.at.get(key.as_slice()).copied());
    // A clock that went backwards trusts nothing remembered.
    if remembered
        .and_then(|at| now_ms.checked_sub(at))
        .is_some_and(|age| age < fresh)
    {
        return Binding::Bound;
    }
    let binding = check_and_bind(store, cfg, session_id, caller, now_ms, Unknown::PassUnbound);
    if binding == Binding::Bound && key.len() <= MEMO_KEY_MAX {
        if let Ok(mut m) = memo.confirmed.try_borrow_mut() {
            let size = key.len() + 32;
            if remembered.is_none() {
                if m.bytes + size > MEMO_BYTES {
                    m.at.clear();
                    m.bytes = 0;
                }
                m.bytes += size;
            }
            m.at.insert(key.into_boxed_slice(), now_ms);
        }
    }
    binding
}

/// A stable, non-reversible fingerprint of who the caller is.
pub fn identity_fingerprint(caller: &Caller) -> String {
    let text = format!(
        "{}\u{0}{}\u{0}{}",
        caller.via.as_str(),
        caller.subject.as_deref().unwrap_or(""),
        caller.tenant.as_deref().unwrap_or("")
    );
    sha256_hex(text.as_bytes()).chars().take(32).collect()
}

struct Entry {
    session: String,
    identity: String,
    last_seen_ms: u64,
}

fn parse_entry(bytes: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('|');
    let session = parts.next()?.to_owned();
    let identity = parts.next()?.to_owned();
    let last_seen_ms = parts.next()?.parse().ok()?;
    Some(Entry {
        session,
        identity,
        last_seen_ms,
    })
}

fn encode(session: &str, identity: &str, now_ms: u64) -> Vec<u8> {
    format!("{session}|{identity}|{now_ms}").into_bytes()
}

/// The four table keys of the set `digest` (hex SHA-256 of the id) falls in
/// when the table has `capacity` entries.
fn set_keys(digest: &str, capacity: u64) -> Vec<String> {
    let sets = (capacity / WAYS).max(1);
    let set = u64::from_str_radix(digest.get(32..48).unwrap_or("0"), 16).unwrap_or(0) % sets;
    (0..WAYS)
        .map(|w| format!("{KEY_PREFIX}/{set}/{w}"))
        .collect()
}

/// The capacities the table has been used with (see the module comment).
fn layouts(store: &dyn SharedStore) -> Result<(Vec<u64>, Option<u32>), StoreError> {
    let (value, cas) = store.get(LAYOUTS_KEY)?;
    let text = value
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default();
    let caps = text.split(',').filter_map(|c| c.parse().ok()).collect();
    Ok((caps, cas))
}

/// Record `capacity` as a layout of the table, before the first binding made
/// under it, so a later capacity still finds that binding.
fn record_layout(store: &dyn SharedStore, capacity: u64) -> Result<(), StoreError> {
    for _ in 0..8 {
        let (mut caps, cas) = layouts(store)?;
        if caps.contains(&capacity) {
            return Ok(());
        }
        caps.push(capacity);
        if caps.len() > MAX_LAYOUTS {
            caps.remove(0);
        }
        let text = caps
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match store.set(LAYOUTS_KEY, text.as_bytes(), cas) {
            Err(StoreError::CasMismatch) => continue,
            other => return other,
        }
    }
    Err(StoreError::CasMismatch)
}

/// Every table key an id may be bound in: its set under each layout.
fn search_keys(digest: &str, layouts: &[u64], capacity: u64) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for cap in layouts.iter().chain(std::iter::once(&capacity)) {
        for k in set_keys(digest, *cap) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// Whether the session of `digest` is still bound to `identity` (not idle).
fn still_bound(
    store: &dyn SharedStore,
    cfg: &SessionConfig,
    layouts: &[u64],
    digest: &str,
    identity: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let session = digest.get(..32).unwrap_or(digest);
    for key in search_keys(digest, layouts, cfg.capacity) {
        let (value, _) = store.get(&key)?;
        if let Some(e) = value.as_deref().and_then(parse_entry) {
            if e.session == session {
                return Ok(e.identity == identity
                    && now_ms.saturating_sub(e.last_seen_ms) <= cfg.idle_timeout_ms);
            }
        }
    }
    Ok(false)
}

/// Count the session of `digest` against its identity's `per_identity`
/// live bindings: `Ok(false)` when the identity already holds that many.
/// The list holds each session's digest and when it was bound; one bound
/// within the idle timeout is live for sure, an older one is looked up.
fn reserve_for_identity(
    store: &dyn SharedStore,
    cfg: &SessionConfig,
    layouts: &[u64],
    identity: &str,
    digest: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let key = format!("{OWNER_PREFIX}/{identity}");
    let mine = digest.get(..48).unwrap_or(digest);
    for _ in 0..8 {
        let (value, cas) = store.get(&key)?;
        let text = value
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default();
        let mut listed: Vec<(&str, u64)> = text
            .split(',')
            .filter_map(|item| {
                let (d, at) = item.split_once(':')?;
                Some((d, at.parse().ok()?))
            })
            .collect();
        if listed.iter().any(|(d, _)| *d == mine) {
            return Ok(true);
        }
        let mut live = Vec::with_capacity(listed.len() + 1);
        for (d, at) in listed.drain(..) {
            if now_ms.saturating_sub(at) <= cfg.idle_timeout_ms
                || still_bound(store, cfg, layouts, d, identity, now_ms)?
            {
                live.push((d, at));
            }
        }
        if live.len() as u64 >= cfg.per_identity {
            return Ok(false);
        }
        live.push((mine, now_ms));
        let out = live
            .iter()
            .map(|(d, at)| format!("{d}:{at}"))
            .collect::<Vec<_>>()
            .join(",");
        match store.set(&key, out.as_bytes(), cas) {
            Ok(()) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Check the caller may use `session_id`; an id with no binding is bound or
/// passed as `unknown` says.
pub fn check_and_bind(
    store: &dyn SharedStore,
    cfg: &SessionConfig,
    session_id: &str,
    caller: &Caller,
    now_ms: u64,
    unknown: Unknown,
) -> Binding {
    let digest = sha256_hex(session_id.as_bytes());
    let session: String = digest.chars().take(32).collect();
    let identity = identity_fingerprint(caller);
    let Ok((known_layouts, _)) = layouts(store) else {
        return Binding::Unavailable;
    };
    let keys = search_keys(&digest, &known_layouts, cfg.capacity);
    // A new binding goes to the current layout only.
    let current = set_keys(&digest, cfg.capacity);
    // Bounded retries: each retry means another worker wrote this set meanwhile.
    for _ in 0..8 {
        let mut free: Option<(&String, Option<u32>)> = None;
        let mut raced = false;
        for key in &keys {
            let (value, cas) = match store.get(key) {
                Ok(r) => r,
                Err(_) => return Binding::Unavailable,
            };
            match value.as_deref().and_then(parse_entry) {
                Some(e) if e.session == session => {
                    if e.identity != identity {
                        return Binding::Stolen;
                    }
                    if now_ms.saturating_sub(e.last_seen_ms) > touch_every_ms(cfg) {
                        // Losing this race only delays the touch; ignore it.
                        let _ = store.set(key, &encode(&session, &identity, now_ms), cas);
                    }
                    return Binding::Bound;
                }
                Some(e) if now_ms.saturating_sub(e.last_seen_ms) <= cfg.idle_timeout_ms => {}
                _ => {
                    if free.is_none() && current.contains(key) {
                        free = Some((key, cas));
                    }
                }
            }
        }
        if unknown == Unknown::PassUnbound {
            return Binding::Unbound;
        }
        let Some((key, cas)) = free else {
            return Binding::TableFull;
        };
        if record_layout(store, cfg.capacity).is_err() {
            return Binding::Unavailable;
        }
        match reserve_for_identity(store, cfg, &known_layouts, &identity, &digest, now_ms) {
            Ok(true) => {}
            Ok(false) => return Binding::IdentityFull,
            Err(_) => return Binding::Unavailable,
        }
        match store.set(key, &encode(&session, &identity, now_ms), cas) {
            Ok(()) => {}
            Err(StoreError::CasMismatch) => raced = true,
            Err(StoreError::Host(_)) => return Binding::Unavailable,
        }
        if !raced {
            // A never-written key has no CAS token, so two workers can both
            // "win" it; read back to learn whose write stuck.
            match store.get(key) {
                Ok((Some(v), _)) => match parse_entry(&v) {
                    Some(e) if e.session == session && e.identity == identity => {
                        return Binding::Bound
                    }
                    Some(e) if e.session == session => return Binding::Stolen,
                    _ => {}
                },
                Ok(_) => {}
                Err(_) => return Binding::Unavailable,
            }
        }
    }
    Binding::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use crate::store::MemoryStore;

    fn who(subject: &str) -> Caller {
        Caller {
            subject: Some(subject.into()),
            tenant: None,
            roles: vec![],
            via: Via::ApiKey,
        }
    }

    #[test]
    fn session_binding_table() {
        let cfg = SessionConfig {
            capacity: 8,
            idle_timeout_ms: 1_000,
            ..SessionConfig::default()
        };
        let store = MemoryStore::default();
        let steps: Vec<(&str, &str, &str, u64, Binding)> = vec![
            ("first_use_binds", "s1", "alice", 0, Binding::Bound),
            ("same_identity_continues", "s1", "alice", 10, Binding::Bound),
            ("stolen_id_is_refused", "s1", "mallory", 20, Binding::Stolen),
            (
                "other_session_binds_independently",
                "s2",
                "mallory",
                30,
                Binding::Bound,
            ),
            ("still_refused_later", "s1", "mallory", 500, Binding::Stolen),
            (
                "idle_binding_still_protects_its_owner_until_reused",
                "s1",
                "alice",
                900,
                Binding::Bound,
            ),
        ];
        for (name, sid, subject, now, want) in steps {
            assert_eq!(
                check_and_bind(&store, &cfg, sid, &who(subject), now, Unknown::Bind),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn full_set_refuses_new_sessions_instead_of_evicting_live_ones() {
        // capacity 4 = one set of four ways.
        let cfg = SessionConfig {
            capacity: 4,
            idle_timeout_ms: 1_000,
            ..SessionConfig::default()
        };
        let store = MemoryStore::default();
        for i in 0..4 {
            assert_eq!(
                check_and_bind(
                    &store,
                    &cfg,
                    &format!("live{i}"),
                    &who("a"),
                    0,
                    Unknown::Bind
                ),
                Binding::Bound
            );
        }
        assert_eq!(
            check_and_bind(&store, &cfg, "new", &who("b"), 10, Unknown::Bind),
            Binding::TableFull
        );
        // The victim's binding survived the flood attempt.
        assert_eq!(
            check_and_bind(&store, &cfg, "live0", &who("b"), 20, Unknown::Bind),
            Binding::Stolen
        );
        // After the idle timeout an entry is reused.
        assert_eq!(
            check_and_bind(&store, &cfg, "new", &who("b"), 5_000, Unknown::Bind),
            Binding::Bound
        );
    }

    #[test]
    fn fingerprint_separates_subjects_and_channels() {
        let mut jwt_alice = who("alice");
        jwt_alice.via = Via::Jwt;
        assert_ne!(
            identity_fingerprint(&who("alice")),
            identity_fingerprint(&who("bob"))
        );
        assert_ne!(
            identity_fingerprint(&who("alice")),
            identity_fingerprint(&jwt_alice)
        );
    }

    #[test]
    fn one_identity_holds_at_most_per_identity_live_sessions() {
        let cfg = SessionConfig {
            capacity: 1024,
            idle_timeout_ms: 100_000,
            per_identity: 2,
            ..SessionConfig::default()
        };
        let store = MemoryStore::default();
        let bind = |sid: &str, subject: &str, now: u64| {
            check_and_bind(&store, &cfg, sid, &who(subject), now, Unknown::Bind)
        };
        let steps: Vec<(&str, &str, &str, u64, Binding)> = vec![
            ("first_binds", "a1", "alice", 0, Binding::Bound),
            ("second_binds", "a2", "alice", 10, Binding::Bound),
            (
                "third_is_over_the_cap",
                "a3",
                "alice",
                20,
                Binding::IdentityFull,
            ),
            (
                "another_identity_is_unaffected",
                "b1",
                "bob",
                30,
                Binding::Bound,
            ),
            (
                "a_held_session_continues",
                "a1",
                "alice",
                40,
                Binding::Bound,
            ),
            // a2 is used past the touch interval, a1 is not: a1 idles out.
            ("touch_a2", "a2", "alice", 70_000, Binding::Bound),
            (
                "still_full_before_a1_idles_out",
                "a3",
                "alice",
                90_000,
                Binding::IdentityFull,
            ),
            (
                "a1_idled_out_frees_a_place",
                "a3",
                "alice",
                150_000,
                Binding::Bound,
            ),
            (
                "a2_was_touched_so_it_still_counts",
                "a4",
                "alice",
                160_000,
                Binding::IdentityFull,
            ),
        ];
        for (name, sid, subject, now, want) in steps {
            assert_eq!(bind(sid, subject, now), want, "{name}");
        }
    }

    #[test]
    fn a_capacity_change_forgets_no_binding() {
        let store = MemoryStore::default();
        let small = SessionConfig {
            capacity: 256,
            ..SessionConfig::default()
        };
        let ids: Vec<String> = (0..20).map(|i| format!("sess-{i}")).collect();
        for id in &ids {
            assert_eq!(
                check_and_bind(&store, &small, id, &who("alice"), 0, Unknown::Bind),
                Binding::Bound,
                "{id}"
            );
        }
        for capacity in [1024, 8, 65_536] {
            let changed = SessionConfig {
                capacity,
                ..SessionConfig::default()
            };
            for id in &ids {
                let thief = check_and_bind(
                    &store,
                    &changed,
                    id,
                    &who("mallory"),
                    10,
                    Unknown::PassUnbound,
                );
                assert_eq!(thief, Binding::Stolen, "{id} at capacity {capacity}");
                let owner = check_and_bind(
                    &store,
                    &changed,
                    id,
                    &who("alice"),
                    20,
                    Unknown::PassUnbound,
                );
                assert_eq!(owner, Binding::Bound, "{id} at capacity {capacity}");
            }
        }
        // A session issued under the new capacity is bound there and found by the old.
        let big = SessionConfig {
            capacity: 1024,
            ..SessionConfig::default()
        };
        assert_eq!(
            check_and_bind(&store, &big, "new", &who("bob"), 30, Unknown::Bind),
            Binding::Bound
        );
        assert_eq!(
            check_and_bind(
                &store,
                &small,
                "new",
                &who("mallory"),
                40,
                Unknown::PassUnbound
            ),
            Binding::Stolen
        );
    }

    /// The table, counting how often it is read.
    struct Counted {
        table: MemoryStore,
        reads: std::cell::Cell<usize>,
    }

    impl SharedStore for Counted {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.reads.set(self.reads.get() + 1);
            self.table.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.table.set(key, value, cas)
        }
    }

    #[test]
    fn a_confirmed_binding_is_remembered_briefly_and_only_for_its_owner() {
        let cfg = SessionConfig {
            capacity: 8,
            idle_timeout_ms: 60_000,
            ..SessionConfig::default()
        };
        let store = Counted {
            table: MemoryStore::default(),
            reads: std::cell::Cell::new(0),
        };
        let memo = BoundMemo::default();
        assert_eq!(
            check_and_bind(&store, &cfg, "s1", &who("alice"), 1_000, Unknown::Bind),
            Binding::Bound
        );
        let mut tenant_alice = who("alice");
        tenant_alice.tenant = Some(String::new());
        // (case, id, caller, now, expected, whether the table was read)
        let steps: Vec<(&str, &str, Caller, u64, Binding, bool)> = vec![
            (
                "first_request_asks_the_table",
                "s1",
                who("alice"),
                2_000,
                Binding::Bound,
                true,
            ),
            (
                "the_next_is_remembered",
                "s1",
                who("alice"),
                2_500,
                Binding::Bound,
                false,
            ),
            (
                "another_caller_asks_and_is_refused",
                "s1",
                who("mallory"),
                2_600,
                Binding::Stolen,
                true,
            ),
            (
                "a_stolen_id_is_never_remembered",
                "s1",
                who("mallory"),
                2_700,
                Binding::Stolen,
                true,
            ),
            (
                "an_empty_tenant_is_asked_about_as_none",
                "s1",
                tenant_alice,
                2_750,
                Binding::Bound,
                true,
            ),
            (
                "an_unknown_id_asks_each_time",
                "s9",
                who("alice"),
                2_800,
                Binding::Unbound,
                true,
            ),
            (
                "still_remembered",
                "s1",
                who("alice"),
                2_999,
                Binding::Bound,
                false,
            ),
            (
                "a_second_on_it_asks_again",
                "s1",
                who("alice"),
                3_000,
                Binding::Bound,
                true,
            ),
            (
                "a_clock_gone_back_asks",
                "s1",
                who("alice"),
                2_900,
                Binding::Bound,
                true,
            ),
        ];
        for (name, sid, caller, now, want, asks) in steps {
            let before = store.reads.get();
            assert_eq!(
                check_request(&store, &cfg, &memo, sid, &caller, now),
                want,
                "{name}"
            );
            assert_eq!(store.reads.get() > before, asks, "{name}");
        }
    }

    #[test]
    fn a_binding_in_use_is_never_idle_however_short_the_timeout() {
        // One set of four ways; the owner keeps using s1 every 400 ms.
        let cfg = SessionConfig {
            capacity: 4,
            idle_timeout_ms: 1_000,
            ..SessionConfig::default()
        };
        let store = MemoryStore::default();
        let memo = BoundMemo::default();
        assert_eq!(
            check_and_bind(&store, &cfg, "s1", &who("alice"), 0, Unknown::Bind),
            Binding::Bound
        );
        for now in (400..=4_000).step_by(400) {
            assert_eq!(
                check_request(&store, &cfg, &memo, "s1", &who("alice"), now),
                Binding::Bound,
                "alice at {now}"
            );
        }
        for i in 0..3 {
            assert_eq!(
                check_and_bind(
                    &store,
                    &cfg,
                    &format!("new{i}"),
                    &who("bob"),
                    4_100,
                    Unknown::Bind
                ),
                Binding::Bound
            );
        }
        assert_eq!(
            check_and_bind(&store, &cfg, "new3", &who("bob"), 4_100, Unknown::Bind),
            Binding::TableFull,
            "the owner's binding is live: not reused"
        );
        assert_eq!(
            check_request(&store, &cfg, &memo, "s1", &who("mallory"), 4_200),
            Binding::Stolen
        );
    }
}
