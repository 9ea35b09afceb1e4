//! The hash chain shared by every worker VM of one Envoy process.
//!
//! Each Envoy worker thread runs its own Wasm VM; the only state they share is
//! proxy-wasm "shared data": a per-process key/value map where `get` returns a
//! CAS token and `set` with that token fails if anyone wrote in between. The
//! chain head (`seq`, `hash` of the last event) lives there, and appending is an
//! optimistic read–seal–compare-and-set loop, so two workers never hand out the
//! same seq and never skip one.
//!
//! One quirk of Envoy's shared data shapes the design: `set` on a key that does
//! not exist yet always succeeds, whatever CAS token is given. Creation is
//! therefore never raced: only the VM that mints a boot id creates that chain's
//! head, before it publishes the chain id (see [`chain_id`]).

use super::event::{seal, SealedEvent, GENESIS_PREV};
use super::seal_cache::{HeadHashCache, PreparedEvent};
use crate::json::is_lower_hex;
pub use crate::store::{MemoryStore, SharedStore, StoreError};
use serde_json::Value;
use std::fmt;

/// Key of the chain id of this Envoy process (shared data dies with the process).
pub const BOOT_KEY: &str = "mcp-firewall.audit.v1.chain";

/// How many times [`append`] re-reads the head after losing a CAS race. Each
/// loss means another worker appended, so a handful of workers converge in a
/// few rounds; the bound keeps a pathological host from spinning a request.
pub const MAX_APPEND_ATTEMPTS: u32 = 16;

/// Key of the head of `chain`.
pub fn head_key(chain: &str) -> String {
    format!("mcp-firewall.audit.v1.head.{chain}")
}

/// Why an event could not be put on the chain. The caller counts these; the
/// event is then not sealed, so the chain itself stays gap-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditError {
    Store(StoreError),
    /// Lost the CAS race this many times in a row.
    Contended(u32),
    /// No head for this chain: [`chain_id`] was not called, or for another chain.
    ChainNotInitialized(String),
    /// The head's bytes are not `<seq> <64 hex>`.
    CorruptHead(String),
    /// The unsealed event is not a JSON object.
    NotAnObject,
    /// `get` returned a value without a CAS token; writing would be blind.
    NoCasToken,
    /// seq would pass u64::MAX (unreachable in practice; refused rather than wrapped).
    SeqExhausted,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Store(StoreError::CasMismatch) => write!(f, "shared data CAS mismatch"),
            AuditError::Store(StoreError::Host(m)) => write!(f, "shared data error: {m}"),
            AuditError::Contended(n) => write!(f, "chain head still contended after {n} attempts"),
            AuditError::ChainNotInitialized(c) => {
                write!(f, "audit chain {c:?} has no head in shared data")
            }
            AuditError::CorruptHead(c) => {
                write!(f, "audit chain {c:?} has an unreadable head in shared data")
            }
            AuditError::NotAnObject => write!(f, "audit event is not a JSON object"),
            AuditError::NoCasToken => write!(f, "shared data returned no CAS token"),
            AuditError::SeqExhausted => write!(f, "audit seq exhausted"),
        }
    }
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Store(e)
    }
}

fn encode_head(seq: u64, hash: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(hash.len() + 21);
    // Writing a number into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut head, &seq);
    head.push(b' ');
    head.extend_from_slice(hash.as_bytes());
    head
}

fn decode_head(bytes: &[u8]) -> Option<(u64, &str)> {
    let space = bytes.iter().position(|b| *b == b' ')?;
    let (seq, hash) = (bytes.get(..space)?, bytes.get(space + 1..)?);
    let seq = std::str::from_utf8(seq).ok()?.parse::<u64>().ok()?;
    let is_hex = hash.len() == 64 && is_lower_hex(hash);
    // Hex digits are ASCII, so this cannot fail once checked.
    is_hex
        .then(|| std::str::from_utf8(hash).ok())
        .flatten()
        .map(|h| (seq, h))
}

/// Seal `unsealed` as the next event of `chain` and advance the shared head.
///
/// Returns the sealed event (with `seq`, `chain`, `prev`, `hash`). On error
/// nothing was written: no seq was consumed, so the chain has no gap.
pub fn append(store: &dyn SharedStore, chain: &str, unsealed: Value) -> Result<Value, AuditError> {
    let prepared = PreparedEvent::from_value(&unsealed).ok_or(AuditError::NotAnObject)?;
    let sealed = append_prepared(store, chain, &prepared, &mut HeadHashCache::default())?;
    // The head has moved: build the returned value from the same facts rather
    // than parse the line back (a parse could fail, e.g. past serde_json's
    // nesting limit, after the seq was already taken).
    Ok(seal(unsealed, chain, sealed.seq, &sealed.prev).unwrap_or(Value::Null))
}

/// [`append`] for an event already written by [`super::prepare`]: the filter's
/// path. Only the part of the event from `prev` on is hashed inside the
/// compare-and-swap loop; the part before it is hashed once, from where
/// `cache` (the previous event's head) says it differs.
pub fn append_prepared(
    store: &dyn SharedStore,
    chain: &str,
    prepared: &PreparedEvent,
    cache: &mut HeadHashCache,
) -> Result<SealedEvent, AuditError> {
    append_prepared_at(store, chain, &head_key(chain), prepared, cache)
}

/// [`append_prepared`] with the chain's [`head_key`] already built (a worker
/// VM builds it once, not per event).
pub fn append_prepared_at(
    store: &dyn SharedStore,
    chain: &str,
    key: &str,
    prepared: &PreparedEvent,
    cache: &mut HeadHashCache,
) -> Result<SealedEvent, AuditError> {
    let sealer = prepared.sealer(chain, cache);
    for _ in 0..MAX_APPEND_ATTEMPTS {
        let (bytes, cas) = store.get(key)?;
        let Some(bytes) = bytes else {
            return Err(AuditError::ChainNotInitialized(chain.to_owned()));
        };
        // Without a token `set` would overwrite unconditionally and could
        // hand out a seq twice; refuse instead.
        let Some(cas) = cas else {
            return Err(AuditError::NoCasToken);
        };
        let (last_seq, last_hash) =
            decode_head(&bytes).ok_or_else(|| AuditError::CorruptHead(chain.to_owned()))?;
        let seq = last_seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
        let sealed = sealer.seal(seq, last_hash);
        match store.set(key, &encode_head(seq, &sealed.hash), Some(cas)) {
            Ok(()) => return Ok(sealed),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuditError::Contended(MAX_APPEND_ATTEMPTS))
}

/// The chain id of this Envoy process: `<node id>/<boot id>`.
///
/// The first VM to ask mints a boot id from `now_ms` and `entropy`, creates the
/// chain head, then publishes the id; every later VM (other workers, VMs
/// reloaded after a crash or a new config) adopts the published one. Shared
/// data dies with the process, so an Envoy restart mints a new chain at seq 1.
///
/// Two VMs that both find no id at the very same moment both mint; each re-reads
/// after publishing and adopts whatever id is stored, which leaves at most a
/// short orphan chain in a race that is hard to hit. Call it from
/// `on_vm_start`/`on_configure`, not per request: it costs two host calls.
pub fn chain_id(
    store: &dyn SharedStore,
    node_id: &str,
    now_ms: u64,
    entropy: u64,
) -> Result<String, AuditError> {
    if let Some(existing) = published_chain(store)? {
        return Ok(existing);
    }
    let node = if node_id.is_empty() {
        "unknown-node"
    } else {
        node_id
    };
    let chain = format!("{node}/{now_ms}-{entropy:016x}");
    // Head first: anyone who can read the id can also read its head.
    store.set(&head_key(&chain), &encode_head(0, GENESIS_PREV), None)?;
    store.set(BOOT_KEY, chain.as_bytes(), None)?;
    Ok(published_chain(store)?.unwrap_or(chain))
}

/// The published chain id, if it is usable (has a readable head).
fn published_chain(store: &dyn SharedStore) -> Result<Option<String>, AuditError> {
    let (bytes, _) = store.get(BOOT_KEY)?;
    let Some(chain) = bytes
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|c| !c.is_empty())
    else {
        return Ok(None);
    };
    let (head, _) = store.get(&head_key(&chain))?;
    Ok(head.filter(|h| decode_head(h).is_some()).map(|_| chain))
}

#[cfg(test)]
mod tests {
    use super::super::event::{event_hash, hash_matches};
    use super::*;
    use serde_json::json;
    use std::cell::Cell;
    use std::sync::Arc;

    fn store_with_chain() -> (MemoryStore, String) {
        let store = MemoryStore::new();
        let chain = chain_id(&store, "node-a", 1_000, 0xfeed).unwrap_or_default();
        (store, chain)
    }

    /// Checks the chain property on a set of sealed events: seqs 1..=n exactly
    /// once, each `prev` the `hash` of the one before, every hash recomputable.
    fn assert_unbroken(mut events: Vec<Value>) {
        events.sort_by_key(|e| e["seq"].as_u64());
        let mut prev = GENESIS_PREV.to_owned();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["seq"].as_u64(),
                Some(i as u64 + 1),
                "gap or duplicate at index {i}"
            );
            assert_eq!(
                e["prev"].as_str(),
                Some(prev.as_str()),
                "broken link at seq {}",
                i + 1
            );
            assert!(hash_matches(e), "bad hash at seq {}", i + 1);
            prev = e["hash"].as_str().unwrap_or_default().to_owned();
        }
    }

    #[test]
    fn chain_id_is_node_slash_boot_and_stable_within_the_process() {
        let store = MemoryStore::new();
        let first = chain_id(&store, "node-a", 1_718_000_000_000, 0xabc);
        assert_eq!(
            first.as_deref(),
            Ok("node-a/1718000000000-0000000000000abc")
        );
        // A reloaded VM asks again with a new clock and new entropy: same chain.
        assert_eq!(chain_id(&store, "node-a", 1_718_000_999_999, 0x999), first);
    }

    #[test]
    fn new_process_gets_a_new_chain_starting_at_seq_one() {
        let (store, chain) = store_with_chain();
        for _ in 0..3 {
            assert!(append(&store, &chain, json!({})).is_ok());
        }
        let restarted = MemoryStore::new();
        let next = chain_id(&restarted, "node-a", 2_000, 0xbeef).unwrap_or_default();
        assert_ne!(next, chain);
        let first = append(&restarted, &next, json!({})).unwrap_or_default();
        assert_eq!(
            (first["seq"].as_u64(), first["prev"].as_str()),
            (Some(1), Some(GENESIS_PREV))
        );
    }

    #[test]
    fn empty_node_id_is_named_unknown_node() {
        let store = MemoryStore::new();
        assert_eq!(
            chain_id(&store, "", 5, 1).map(|c| c.starts_with("unknown-node/5-")),
            Ok(true)
        );
    }

    #[test]
    fn appends_link_each_event_to_the_previous() {
        let (store, chain) = store_with_chain();
        let events: Vec<Value> = (0..5)
            .filter_map(|i| append(&store, &chain, json!({"ts_ms": i})).ok())
            .collect();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0]["segment"], json!({"reason": "process_start"}));
        assert_unbroken(events);
    }

    #[test]
    fn append_errors_are_typed_and_consume_no_seq() {
        let (store, chain) = store_with_chain();
        let table = [
            (
                "non_object",
                append(&store, &chain, json!([])),
                AuditError::NotAnObject,
            ),
            (
                "unknown_chain",
                append(&store, "other/1", json!({})),
                AuditError::ChainNotInitialized("other/1".into()),
            ),
        ];
        for (name, got, want) in table {
            assert_eq!(got, Err(want), "{name}");
        }
        let _ = store.set(&head_key("bad/1"), b"seven deadbeef", None);
        assert_eq!(
            append(&store, "bad/1", json!({})),
            Err(AuditError::CorruptHead("bad/1".into()))
        );
        let first = append(&store, &chain, json!({})).unwrap_or_default();
        assert_eq!(first["seq"], 1);
    }

    /// A store that lets another "worker" append between our get and our set,
    /// a fixed number of times: the deterministic version of the race.
    struct Interleaving<'a> {
        inner: &'a MemoryStore,
        chain: String,
        races_left: Cell<u32>,
        rival_events: std::cell::RefCell<Vec<Value>>,
    }

    impl SharedStore for Interleaving<'_> {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if self.races_left.get() > 0 {
                self.races_left.set(self.races_left.get() - 1);
                let rival = append(self.inner, &self.chain, json!({"by": "rival"}));
                self.rival_events.borrow_mut().extend(rival.ok());
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn losing_a_cas_race_retries_on_the_new_head() {
        let (store, chain) = store_with_chain();
        let racy = Interleaving {
            inner: &store,
            chain: chain.clone(),
            races_left: Cell::new(3),
            rival_events: Default::default(),
        };
        let ours = append(&racy, &chain, json!({"by": "us"}));
        let mut all = racy.rival_events.take();
        assert_eq!(all.len(), 3);
        let ours = ours.unwrap_or_default();
        assert_eq!(ours["seq"], 4, "we lost three races, so we come fourth");
        all.push(ours);
        assert_unbroken(all);
    }

    #[test]
    fn persistent_contention_gives_up_with_an_error_and_no_gap() {
        let (store, chain) = store_with_chain();
        let racy = Interleaving {
            inner: &store,
            chain: chain.clone(),
            races_left: Cell::new(MAX_APPEND_ATTEMPTS),
            rival_events: Default::default(),
        };
        assert_eq!(
            append(&racy, &chain, json!({})),
            Err(AuditError::Contended(MAX_APPEND_ATTEMPTS))
        );
        let mut all = racy.rival_events.take();
        all.extend(append(&store, &chain, json!({})).ok());
        assert_eq!(all.len() as u32, MAX_APPEND_ATTEMPTS + 1);
        assert_unbroken(all);
    }

    #[test]
    // Threads: the unit tests also run as Wasm (scripts/test.sh), which has none.
    #[cfg_attr(target_arch = "wasm32", ignore = "threads")]
    fn concurrent_workers_never_duplicate_or_skip_a_seq() {
        let (store, chain) = store_with_chain();
        let store = Arc::new(store);
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (store, chain) = (Arc::clone(&store), chain.clone());
                std::thread::spawn(move || {
                    let mut sealed = Vec::new();
                    let mut failed = 0;
                    for i in 0..250 {
                        match append(store.as_ref(), &chain, json!({"worker": w, "i": i})) {
                            Ok(e) => sealed.push(e),
                            Err(AuditError::Contended(_)) => failed += 1,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((sealed, failed))
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            let joined = w.join().map_err(|_| "worker panicked");
            assert!(matches!(joined, Ok(Ok(_))), "worker failed: {joined:?}");
            if let Ok(Ok((sealed, _failed))) = joined {
                all.extend(sealed);
            }
        }
        assert!(
            all.len() > 900,
            "contention should be rare: only {} sealed",
            all.len()
        );
        assert_unbroken(all);
    }

    #[test]
    fn memory_store_has_envoy_cas_semantics() {
        let s = MemoryStore::new();
        assert_eq!(s.get("k"), Ok((None, None)));
        assert_eq!(
            s.set("k", b"a", Some(42)),
            Ok(()),
            "absent key ignores the token"
        );
        let (_, cas) = s.get("k").unwrap_or_default();
        assert_eq!(s.set("k", b"b", cas), Ok(()));
        assert_eq!(
            s.set("k", b"c", cas),
            Err(StoreError::CasMismatch),
            "stale token"
        );
        assert_eq!(
            s.set("k", b"d", None),
            Ok(()),
            "no token writes unconditionally"
        );
        assert_eq!(s.get("k").map(|(v, _)| v), Ok(Some(b"d".to_vec())));
        let _ = event_hash(&json!({}));
    }
}
