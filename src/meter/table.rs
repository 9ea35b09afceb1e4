//! The meters' state in proxy-wasm shared data, exact across worker VMs.
//!
//! Every worker of an Envoy runs its own VM; shared data is the only memory
//! they share, with compare-and-swap. A meter lives in a fixed table of
//! `slots` entries, 4-way set associative by its digest, one shared-data key
//! per set: a consumption reads the set, changes one entry, and writes it
//! back only if nobody wrote the set meanwhile (else it reads again). So a
//! capacity of 100 lets exactly 100 calls through however many workers race.
//!
//! Memory is bounded by `slots`. An entry may be reused only when it means
//! nothing any more: a bucket refilled to its capacity (the same as a fresh
//! one) or a budget whose period has ended. When the four entries of a set
//! are all live, a *new* meter is refused (fail closed): evicting a live one
//! would hand its caller a fresh bucket.
//!
//! Time: a clock that goes backwards never refills a bucket or resets a
//! budget early (the stored time and period are kept until the clock passes
//! them again).

use super::calendar::{period_of, period_start};
use super::{Charge, Meter};
use crate::store::{SharedStore, StoreError};

pub const WAYS: usize = 4;
/// The table's keys. `meter2`: entries are binary with keyed digests (the
/// text entries with SHA-256 digests of earlier builds are never read as
/// these: an upgrade starts the table afresh, as a new `slots` does).
const PREFIX: &str = "mcp_firewall/meter2";
const SALT_KEY: &str = "mcp_firewall/meter-salt";
/// One token, in the thousandths buckets count in (a refill of a fraction of
/// a token per millisecond must not be lost to rounding).
const TOKEN: u64 = 1000;
/// CAS rounds before giving up (each lost round means another worker wrote
/// the same set meanwhile; with a handful of workers a few rounds suffice).
const TRIES: usize = 32;
/// The CAS token sent when the set's key does not exist yet. Envoy writes an
/// absent key whatever the token, so two workers creating the same set would
/// both "win" and one consumption would be lost; with a non-zero token, the
/// second writer finds the key present under another token and reads again.
/// Envoy hands out tokens from one counter starting at 1, so a key holding
/// exactly this one is reached only after 2^32 - 1 writes of the process and
/// only then could such a race go unseen.
const CREATE_CAS: u32 = u32::MAX;

/// Why a charge was not consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// The bucket is empty or the budget spent: try again after
    /// `retry_after_ms`; a budget says when it resets (ms since the epoch).
    Exhausted {
        retry_after_ms: u64,
        resets_at_ms: Option<u64>,
    },
    /// No room for a new meter: its set holds four live ones.
    TableFull,
    /// Shared data failed (or kept racing): refused rather than guessed.
    Unavailable,
}

/// A charge that could not be consumed (`charge` indexes the slice given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub charge: usize,
    pub why: Shortfall,
}

/// Every charge consumed: the least budget left among those that expose it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    pub budget_remaining: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    digest: Digest,
    /// Bucket: thousandths of tokens left. Budget: units used.
    amount: u64,
    /// Bucket: when `amount` was last brought up to date. Budget: its period.
    at: u64,
    /// From when the entry means nothing and may be reused.
    free_at: u64,
}

/// A meter's digest: its name hashed with the process's secret.
type Digest = [u8; 16];

/// One entry's bytes: the digest, then amount, at and free_at (little-endian).
const ENTRY_BYTES: usize = 16 + 3 * 8;
/// A whole set's bytes.
const SET_BYTES: usize = WAYS * ENTRY_BYTES;

/// The entries of one set, at most [`WAYS`]. Fixed size, on the stack: a
/// metered request reads and writes a set per meter, and the vectors this
/// replaced were a third of the meters' allocations.
#[derive(Debug, Default)]
struct Set {
    entries: [Entry; WAYS],
    len: usize,
}

impl Set {
    fn entries(&self) -> &[Entry] {
        self.entries.get(..self.len).unwrap_or_default()
    }

    fn entries_mut(&mut self) -> &mut [Entry] {
        self.entries.get_mut(..self.len).unwrap_or_default()
    }

    /// Adds an entry if there is room.
    fn push(&mut self, e: Entry) -> bool {
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = e;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The set's bytes as stored, written into `out`.
    fn encode<'a>(&self, out: &'a mut [u8; SET_BYTES]) -> &'a [u8] {
        for (e, at) in self.entries().iter().zip(out.chunks_exact_mut(ENTRY_BYTES)) {
            at[..16].copy_from_slice(&e.digest);
            at[16..24].copy_from_slice(&e.amount.to_le_bytes());
            at[24..32].copy_from_slice(&e.at.to_le_bytes());
            at[32..40].copy_from_slice(&e.free_at.to_le_bytes());
        }
        out.get(..self.len * ENTRY_BYTES).unwrap_or_default()
    }
}

fn parse(value: &[u8]) -> Set {
    // A set written by this module is at most four whole entries; anything
    // else is not this table's and reads as empty (the set is then
    // rewritten whole).
    let mut set = Set::default();
    if value.len() % ENTRY_BYTES != 0 || value.len() > SET_BYTES {
        return set;
    }
    for e in value.chunks_exact(ENTRY_BYTES) {
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&e[..16]);
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&e[at..at + 8]);
            u64::from_le_bytes(b)
        };
        set.push(Entry {
            digest,
            amount: word(16),
            at: word(24),
            free_at: word(32),
        });
    }
    set
}

/// A meter's digest: SipHash-1-3 with 128-bit output over its name, keyed
/// with this process's secret [`salt`]. Keyed, so that neither a meter's
/// name nor its set can be chosen offline: meter ids come back in every
/// refusal, and with a public hash a caller could pick arguments that fill
/// the set a victim's meter lives in (refusing every call of theirs), or
/// whose digest is another caller's. 128 bits: two names meet by chance
/// never, and on purpose only by knowing the secret.
/// One and three rounds, as Rust's own `HashMap` keys its hashing against
/// chosen collisions: a name holds a loop breaker's whole arguments, and
/// SipHash-2-4 spent twice the instructions on a 4 KB call's.
fn digest(salt: SetKeys, name: &[u8]) -> Digest {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(salt.0, salt.1);
    h.write(name);
    h.finish128().as_bytes()
}

/// The shared-data key of the set `digest` falls in. The table size is part
/// of the key: a policy that changes it starts a new table (the old one's
/// meters start full again; documented). The digest is keyed already, so
/// its first eight bytes choose the set.
fn set_key(slots: u64, digest: &Digest) -> SetKey {
    let sets = (slots / WAYS as u64).max(1);
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest[..8]);
    let set = u64::from_le_bytes(low) % sets;
    // Written by hand, on the stack: `format!` was a fifth of what a meter
    // cost, and the key lives for one update.
    let mut key = SetKey {
        bytes: [0; SET_KEY_MAX],
        len: 0,
    };
    key.push(PREFIX.as_bytes());
    key.push(b"/");
    key.push_decimal(slots);
    key.push(b"/");
    key.push_decimal(set);
    key
}

/// The longest set key: the prefix, two slashes and two `u64` in decimal.
const SET_KEY_MAX: usize = PREFIX.len() + 2 + 2 * 20;

/// A set's shared-data key (ASCII), built on the stack.
struct SetKey {
    bytes: [u8; SET_KEY_MAX],
    len: usize,
}

impl SetKey {
    fn push(&mut self, b: &[u8]) {
        if let Some(to) = self.bytes.get_mut(self.len..self.len + b.len()) {
            to.copy_from_slice(b);
            self.len += b.len();
        }
    }

    fn push_decimal(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    /// The key; `None` never happens (only ASCII is written), and would
    /// refuse the meter rather than write under another key.
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes.get(..self.len)?).ok()
    }
}

/// The process's secret as the two SipHash keys (its 32 hex digits).
#[derive(Clone, Copy)]
struct SetKeys(u64, u64);

impl SetKeys {
    fn of(salt: &str) -> SetKeys {
        let half = |range: std::ops::Range<usize>| {
            salt.get(range)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        };
        SetKeys(half(0..16), half(16..32))
    }
}

/// This Envoy process's secret for [`digest`], shared by every worker: the
/// first to need it mints it (random, from the VM's entropy), the others
/// read it. Shared data dies with the process, and so does the table.
fn salt(store: &dyn SharedStore, entropy: impl FnOnce() -> u64) -> Result<SetKeys, Shortfall> {
    // Read (and its hex parsed) once per VM: it never changes while the
    // process (and so this VM) lives, and a shared-data read per metered
    // request is a lock and a copy.
    if let Some(k) = SALT.with(std::cell::Cell::get) {
        return Ok(k);
    }
    let k = SetKeys::of(&read_or_mint_salt(store, entropy())?);
    SALT.with(|c| c.set(Some(k)));
    Ok(k)
}

thread_local! {
    /// This VM's copy of the process's [`salt`] (a VM is one thread).
    static SALT: std::cell::Cell<Option<SetKeys>> = const { std::cell::Cell::new(None) };
}

fn read_or_mint_salt(store: &dyn SharedStore, entropy: u64) -> Result<String, Shortfall> {
    for _ in 0..TRIES {
        match store.get(SALT_KEY).map_err(|_| Shortfall::Unavailable)? {
            (Some(v), _) if v.len() == 32 => {
                return String::from_utf8(v).map_err(|_| Shortfall::Unavailable)
            }
            (_, cas) => {
                let mint = format!(
                    "{entropy:016x}{:016x}",
                    entropy.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15
                );
                match store.set(SALT_KEY, mint.as_bytes(), Some(cas.unwrap_or(CREATE_CAS))) {
                    Ok(()) | Err(StoreError::CasMismatch) => continue,
                    Err(StoreError::Host(_)) => return Err(Shortfall::Unavailable),
                }
            }
        }
    }
    Err(Shortfall::Unavailable)
}

/// What one consumption does to an entry.
enum Step {
    /// Write this entry; a budget's remaining units with it.
    Write(Entry, Option<u64>),
    Refuse(Shortfall),
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

/// A bucket's thousandths of tokens and their time, brought up to `now`.
fn refilled(state: Option<(u64, u64)>, now: u64, capacity: u64, per_ms: u64) -> (u64, u64) {
    let full = capacity * TOKEN;
    let Some((tokens, last)) = state else {
        return (full, now);
    };
    let tokens = tokens.min(full);
    if now <= last {
        return (tokens, last);
    }
    let gained = (u128::from(now - last) * u128::from(full)) / u128::from(per_ms.max(1));
    if u128::from(tokens) + gained >= u128::from(full) {
        return (full, now);
    }
    // Only the time that bought whole thousandths is spent: the rest carries
    // over, so frequent calls still refill at the configured rate.
    let spent = (gained * u128::from(per_ms)) / u128::from(full.max(1));
    (tokens + gained as u64, last + spent as u64)
}

fn bucket_free_at(tokens: u64, last: u64, capacity: u64, per_ms: u64) -> u64 {
    let full = capacity * TOKEN;
    let missing = u128::from(full.saturating_sub(tokens));
    last.saturating_add(ceil_div(missing * u128::from(per_ms), u128::from(full)) as u64)
}

fn take(meter: Meter, state: Option<(u64, u64)>, digest: Digest, now: u64) -> Step {
    match meter {
        Meter::Bucket { capacity, per_ms } => {
            let (tokens, last) = refilled(state, now, capacity, per_ms);
            if tokens < TOKEN {
                let full = u128::from(capacity * TOKEN);
                let wait = ceil_div(u128::from(TOKEN - tokens) * u128::from(per_ms), full) as u64;
                return Step::Refuse(Shortfall::Exhausted {
                    retry_after_ms: last.saturating_add(wait).saturating_sub(now).max(1),
                    resets_at_ms: None,
                });
            }
            let left = tokens - TOKEN;
            Step::Write(
                Entry {
                    digest,
                    amount: left,
                    at: last,
                    free_at: bucket_free_at(left, last, capacity, per_ms),
                },
                None,
            )
        }
        Meter::Budget {
            limit,
            cost,
            period,
            ..
        } => {
            let (current, _) = period_of(period, now);
            // A stored period later than the clock's (the clock went back)
            // is kept: the budget does not reset until the clock passes it.
            let (used, at) = match state {
                Some((used, at)) if at >= current => (used, at),
                _ => (0, current),
            };
            let ends = period_end(period, at);
            if used.saturating_add(cost) > limit {
                return Step::Refuse(Shortfall::Exhausted {
                    retry_after_ms: ends.saturating_sub(now).max(1),
                    resets_at_ms: Some(ends),
                });
            }
            let used = used + cost;
            Step::Write(
                Entry {
                    digest,
                    amount: used,
                    at,
                    free_at: ends,
                },
                Some(limit - used),
            )
        }
    }
}

/// The first millisecond after period number `at`.
fn period_end(period: super::Period, at: u64) -> u64 {
    period_start(period, at.saturating_add(1))
}

/// Give back what [`take`] took (a later charge of the same request was refused).
fn give_back(meter: Meter, entry: &mut Entry) {
    match meter {
        Meter::Bucket { capacity, per_ms } => {
            entry.amount = (entry.amount + TOKEN).min(capacity * TOKEN);
            entry.free_at = bucket_free_at(entry.amount, entry.at, capacity, per_ms);
        }
        Meter::Budget { cost, .. } => entry.amount = entry.amount.saturating_sub(cost),
    }
}

enum Change<'a> {
    Take(u64),
    GiveBack(&'a Meter),
}

/// Apply one change to the entry of `charge` in its set, with CAS retries.
fn update(
    store: &dyn SharedStore,
    slots: u64,
    salt: SetKeys,
    charge: &Charge,
    change: Change,
) -> Result<Option<u64>, Shortfall> {
    let digest = digest(salt, &charge.name);
    let set_key = set_key(slots, &digest);
    let key = set_key.as_str().ok_or(Shortfall::Unavailable)?;
    let mut written = [0u8; SET_BYTES];
    for _ in 0..TRIES {
        let (value, cas) = store.get(key).map_err(|_| Shortfall::Unavailable)?;
        let mut set = value.as_deref().map(parse).unwrap_or_default();
        let found = set.entries().iter().position(|e| e.digest == digest);
        let remaining = match &change {
            Change::Take(now) => {
                let state = found
                    .and_then(|i| set.entries().get(i))
                    .map(|e| (e.amount, e.at));
                let (entry, remaining) = match take(charge.meter, state, digest, *now) {
                    Step::Write(e, r) => (e, r),
                    Step::Refuse(why) => return Err(why),
                };
                let slot = match found {
                    Some(i) => set.entries_mut().get_mut(i),
                    None if set.push(entry) => None,
                    None => match set.entries_mut().iter_mut().find(|e| e.free_at <= *now) {
                        Some(e) => Some(e),
                        None => return Err(Shortfall::TableFull),
                    },
                };
                if let Some(e) = slot {
                    *e = entry;
                }
                remaining
            }
            Change::GiveBack(meter) => {
                let Some(e) = found.and_then(|i| set.entries_mut().get_mut(i)) else {
                    return Ok(None);
                };
                give_back(**meter, e);
                None
            }
        };
        match store.set(
            key,
            set.encode(&mut written),
            Some(cas.unwrap_or(CREATE_CAS)),
        ) {
            Ok(()) => return Ok(remaining),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host(_)) => return Err(Shortfall::Unavailable),
        }
    }
    Err(Shortfall::Unavailable)
}

/// Consume every charge, or none: when one is refused, those already taken
/// are given back, so a refused request consumes nothing.
/// `entropy` seeds the process's secret the first time any worker needs it
/// (called only then).
pub fn consume(
    store: &dyn SharedStore,
    slots: u64,
    charges: &[Charge],
    now_ms: u64,
    entropy: impl FnOnce() -> u64,
) -> Result<Consumed, Refused> {
    let mut out = Consumed::default();
    let salt = salt(store, entropy).map_err(|why| Refused { charge: 0, why })?;
    for (i, charge) in charges.iter().enumerate() {
        match update(store, slots, salt, charge, Change::Take(now_ms)) {
            Ok(remaining) => {
                if let (
                    Meter::Budget {
                        expose_remaining: true,
                        ..
                    },
                    Some(r),
                ) = (charge.meter, remaining)
                {
                    out.budget_remaining = Some(out.budget_remaining.map_or(r, |m| m.min(r)));
                }
            }
            Err(why) => {
                for taken in &charges[..i] {
                    // Best effort: a give-back that fails leaves the meter
                    // fuller than it should be, never emptier (fail closed).
                    let _ = update(store, slots, salt, taken, Change::GiveBack(&taken.meter));
                }
                return Err(Refused { charge: i, why });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::Period;
    use crate::rule_id::RuleId;
    use crate::store::MemoryStore;

    fn bucket(name: &str, capacity: u64, per_s: u64) -> Charge {
        Charge {
            rule: RuleId::policy("rl"),
            message: 0,
            name: name.as_bytes().to_vec(),
            meter: Meter::Bucket {
                capacity,
                per_ms: per_s * 1000,
            },
        }
    }

    fn budget(name: &str, limit: u64, cost: u64) -> Charge {
        Charge {
            rule: RuleId::policy("b"),
            message: 0,
            name: name.as_bytes().to_vec(),
            meter: Meter::Budget {
                limit,
                cost,
                period: Period::Day,
                expose_remaining: true,
            },
        }
    }

    const D1: &str = "00000000000000010000000000000000";
    const D2: &str = "00000000000000020000000000000000";

    fn passes(store: &MemoryStore, charges: &[Charge], now: u64) -> bool {
        consume(store, 1024, charges, now, || 7).is_ok()
    }

    #[test]
    fn set_keys_are_written_as_format_would() {
        for (slots, first) in [(1u64, 0u8), (4, 3), (1024, 255), (u64::MAX, 7)] {
            let mut d = [0u8; 16];
            d[0] = first;
            d[7] = 0x80;
            let mut low = [0u8; 8];
            low.copy_from_slice(&d[..8]);
            let set = u64::from_le_bytes(low) % (slots / WAYS as u64).max(1);
            assert_eq!(
                set_key(slots, &d).as_str(),
                Some(format!("{PREFIX}/{slots}/{set}").as_str())
            );
        }
    }

    #[test]
    fn entries_read_back_as_written_and_foreign_bytes_as_none() {
        let e = Entry {
            digest: [9; 16],
            amount: u64::MAX,
            at: 1,
            free_at: 1 << 40,
        };
        let mut set = Set::default();
        assert!(set.push(e) && set.push(e));
        let mut bytes = [0u8; SET_BYTES];
        let two = set.encode(&mut bytes);
        assert_eq!(two.len(), 2 * ENTRY_BYTES);
        assert_eq!(parse(two).entries(), &[e, e]);
        assert!(
            parse(b"0123abcd:1:2:3").entries().is_empty(),
            "a text entry of an older build"
        );
        let five = [7u8; 5 * ENTRY_BYTES];
        assert!(
            parse(&five).entries().is_empty(),
            "more entries than a set holds is not this table's"
        );
        let mut full = Set::default();
        assert!((0..WAYS).all(|_| full.push(e)));
        assert!(!full.push(e), "a fifth entry has no room");
    }

    #[test]
    fn a_bucket_lets_its_capacity_through_then_refills_evenly() {
        let store = MemoryStore::new();
        let c = [bucket(D1, 3, 30)];
        let t0 = 1_000_000;
        assert!((0..3).all(|_| passes(&store, &c, t0)));
        let Err(r) = consume(&store, 1024, &c, t0, || 7) else {
            panic!("a fourth call within the period passed")
        };
        assert_eq!(
            r.why,
            Shortfall::Exhausted {
                retry_after_ms: 10_000,
                resets_at_ms: None
            }
        );
        assert!(!passes(&store, &c, t0 + 9_999));
        assert!(passes(&store, &c, t0 + 10_000));
        assert!(!passes(&store, &c, t0 + 10_001));
    }

    #[test]
    fn frequent_calls_do_not_lose_the_refill_to_rounding() {
        // 100 per 300 s: a third of a thousandth per millisecond.
        let store = MemoryStore::new();
        let c = [bucket(D1, 100, 300)];
        let t0 = 5_000;
        assert!((0..100).all(|_| passes(&store, &c, t0)));
        // A refused call every millisecond for 3 s refills one token.
        let passed = (1..=3_000).filter(|ms| passes(&store, &c, t0 + ms)).count();
        assert_eq!(passed, 1);
    }

    #[test]
    fn a_clock_going_backwards_never_refills_early() {
        let store = MemoryStore::new();
        let c = [bucket(D1, 1, 60)];
        assert!(passes(&store, &c, 100_000));
        assert!(!passes(&store, &c, 50_000));
        assert!(!passes(&store, &c, 159_999));
        assert!(passes(&store, &c, 160_000));
    }

    #[test]
    fn a_refused_request_gives_back_what_its_other_charges_took() {
        let store = MemoryStore::new();
        let roomy = bucket(D1, 2, 60);
        let empty = bucket(D2, 1, 60);
        assert!(passes(&store, std::slice::from_ref(&empty), 0));
        let both = [roomy.clone(), empty];
        let Err(r) = consume(&store, 1024, &both, 0, || 7) else {
            panic!("passed with an empty bucket")
        };
        assert_eq!(r.charge, 1);
        // The roomy bucket still holds both its tokens.
        assert!(passes(&store, std::slice::from_ref(&roomy), 0));
        assert!(passes(&store, std::slice::from_ref(&roomy), 0));
        assert!(!passes(&store, &[roomy], 0));
    }

    #[test]
    fn a_budget_counts_costs_says_what_is_left_and_resets_at_midnight_utc() {
        let store = MemoryStore::new();
        let day = 86_400_000;
        let noon = 20_000 * day + day / 2;
        let refund = [budget(D1, 25, 10)];
        assert_eq!(
            consume(&store, 1024, &refund, noon, || 7).map(|c| c.budget_remaining),
            Ok(Some(15))
        );
        assert_eq!(
            consume(&store, 1024, &refund, noon, || 7).map(|c| c.budget_remaining),
            Ok(Some(5))
        );
        let Err(r) = consume(&store, 1024, &refund, noon, || 7) else {
            panic!("over budget passed")
        };
        assert_eq!(
            r.why,
            Shortfall::Exhausted {
                retry_after_ms: day / 2,
                resets_at_ms: Some(20_001 * day)
            }
        );
        // A cheaper call still fits.
        assert!(passes(&store, &[budget(D1, 25, 5)], noon));
        assert!(passes(&store, &refund, 20_001 * day));
        // Back before midnight (the clock went back): still the new day's count.
        assert_eq!(
            consume(&store, 1024, &refund, 20_001 * day - 1, || 7).map(|c| c.budget_remaining),
            Ok(Some(5))
        );
    }

    #[test]
    fn a_full_set_refuses_new_meters_and_reuses_only_spent_ones() {
        let store = MemoryStore::new();
        // A table of one set: every digest falls in it.
        let slots = 4;
        let digests: Vec<String> = (0..5).map(|i| format!("{i:032x}")).collect();
        for d in &digests[..4] {
            assert!(consume(&store, slots, &[bucket(d, 1, 60)], 0, || 7).is_ok());
        }
        let Err(r) = consume(&store, slots, &[bucket(&digests[4], 1, 60)], 0, || 7) else {
            panic!("a fifth meter evicted a live one")
        };
        assert_eq!(r.why, Shortfall::TableFull);
        // Live meters are still there, still empty.
        assert!(consume(&store, slots, &[bucket(&digests[0], 1, 60)], 1, || 7).is_err());
        // Once one has refilled completely it means nothing and may be reused.
        assert!(consume(&store, slots, &[bucket(&digests[4], 1, 60)], 60_000, || 7).is_ok());
    }

    /// Two "workers" interleave: each reads, then the other writes first.
    #[test]
    fn a_write_that_lost_the_race_reads_again() {
        struct Racing {
            inner: MemoryStore,
            interfere: std::cell::Cell<bool>,
        }
        impl SharedStore for Racing {
            fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
                let got = self.inner.get(key);
                if key != SALT_KEY && self.interfere.replace(false) {
                    // Another worker consumes from the same bucket right after our read.
                    let _ = consume(&self.inner, 1024, &[bucket(D1, 2, 60)], 0, || 7);
                }
                got
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
                self.inner.set(key, value, cas)
            }
        }
        // Both on a never-written set (the creation race) and on an existing one.
        for pre_existing in [false, true] {
            let store = Racing {
                inner: MemoryStore::new(),
                interfere: std::cell::Cell::new(false),
            };
            if pre_existing {
                let _ = consume(&store.inner, 1024, &[bucket(D2, 9, 60)], 0, || 7);
            }
            store.interfere.set(true);
            assert!(consume(&store, 1024, &[bucket(D1, 2, 60)], 0, || 7).is_ok());
            // Two calls were made (ours and the interfering one): the bucket is empty.
            assert!(
                consume(&store, 1024, &[bucket(D1, 2, 60)], 0, || 7).is_err(),
                "pre_existing={pre_existing}"
            );
        }
    }
}
