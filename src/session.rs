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

use crate::config::{keywords, Errors, ObjReader};
use crate::identity::Caller;
use crate::json::sha256_hex;
use crate::store::{SharedStore, StoreError};
use serde_json::Value;

pub const WAYS: u64 = 4;
const KEY_PREFIX: &str = "mcp_firewall/session";
/// Re-stamping `last_seen` on every request would make every request a
/// shared-data write; once a minute is enough for idle eviction.
const TOUCH_EVERY_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    pub enforce: bool,
    pub capacity: u64,
    pub idle_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            enforce: true,
            capacity: 65_536,
            idle_timeout_ms: 3_600_000,
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
    let sets = (cfg.capacity / WAYS).max(1);
    let set = u64::from_str_radix(digest.get(32..48).unwrap_or("0"), 16).unwrap_or(0) % sets;
    let keys: Vec<String> = (0..WAYS)
        .map(|w| format!("{KEY_PREFIX}/{set}/{w}"))
        .collect();
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
                    if now_ms.saturating_sub(e.last_seen_ms) > TOUCH_EVERY_MS {
                        // Losing this race only delays the touch; ignore it.
                        let _ = store.set(key, &encode(&session, &identity, now_ms), cas);
                    }
                    return Binding::Bound;
                }
                Some(e) if now_ms.saturating_sub(e.last_seen_ms) <= cfg.idle_timeout_ms => {}
                _ => {
                    if free.is_none() {
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
            enforce: true,
            capacity: 8,
            idle_timeout_ms: 1_000,
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
            enforce: true,
            capacity: 4,
            idle_timeout_ms: 1_000,
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
}
