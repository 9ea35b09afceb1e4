//! What the upstreams of this Envoy listed, as the catalogue checks remember
//! it in shared data (one Envoy process; every worker VM reads the same):
//!
//! - the tool names each upstream cluster listed: the *other servers'* tools
//!   that `shadowing` compares a definition with (a gateway is one Envoy in
//!   front of several clusters; what one cluster listed is another server to
//!   the next), and what `unlisted_calls: refuse` asks about;
//! - the tools a list of the cluster had removed for poisoning, with the
//!   checks that removed them and when: their calls are refused while the
//!   policy still removes for one of those checks and `catalogue.hold_s` has
//!   not passed, whatever later lists show (a server may show each caller its
//!   own list: a clean definition shown to A must not clear the poisoned one
//!   shown to B, as with pins' held definitions).
//!
//! Bounded: at most [`MAX_UPSTREAMS`] clusters are registered (their names
//! offered to the others), [`MAX_NAMES`] names and [`MAX_REMOVED`] removed
//! tools per cluster; past the last, every call of the cluster is refused
//! while the hold lasts (a server with that many poisoned tools is not one to
//! call). Names are remembered only when they are valid MCP tool names (a
//! call can name no other: the request parser refuses it).

use super::poison::Check;
use crate::json::sha256_hex;
use crate::jsonrpc::{name_problem, NameKind};
use crate::store::{SharedStore, StoreError};

/// Clusters whose names are offered to the others.
pub const MAX_UPSTREAMS: usize = 32;
/// Names remembered per cluster (union of every list it answered).
pub const MAX_NAMES: usize = 1024;
/// Removed tools remembered per cluster before all of its calls are refused.
pub const MAX_REMOVED: usize = 256;

const REGISTRY_KEY: &str = "mcp_firewall/catalogue/upstreams";
const KEY_PREFIX: &str = "mcp_firewall/catalogue/listed";
const ATTEMPTS: usize = 4;

/// What a call of a tool is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// No list of the upstream showed the tool.
    Unlisted,
    /// A list showed it, and no list removed it within the hold (or the
    /// policy no longer removes for what was found).
    Listed,
    /// A list removed it for `checks`, last at `at_ms`.
    Removed { checks: Vec<Check>, at_ms: u64 },
    /// More tools of the upstream were removed than are remembered: every
    /// call of it is held, last at `at_ms`.
    Overflow { at_ms: u64 },
    /// Shared data failed or the upstream is unknown: nothing can be said.
    Unavailable,
}

/// One upstream's record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub names: Vec<String>,
    /// (tool, checks that removed it, last removal in ms since the epoch).
    pub removed: Vec<(String, Vec<Check>, u64)>,
    /// When more than [`MAX_REMOVED`] were removed: the last such time.
    pub overflow_at: Option<u64>,
}

impl Record {
    /// What a call of `tool` meets.
    pub fn judge(&self, tool: &str) -> Listed {
        if let Some(at_ms) = self.overflow_at {
            return Listed::Overflow { at_ms };
        }
        // Any case of a removed name: a server matching names without case
        // runs the removed tool for `Control` (eleventh review M1).
        if let Some((_, checks, at)) = self
            .removed
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(tool))
        {
            return Listed::Removed {
                checks: checks.clone(),
                at_ms: *at,
            };
        }
        match self.names.iter().any(|n| n == tool) {
            true => Listed::Listed,
            false => Listed::Unlisted,
        }
    }

    /// Add what one list showed; whether anything changed. `removed`: the
    /// tools this list removed and why; `now_ms` the time; `hold_ms` drops
    /// removals older than the hold first.
    fn record(
        &mut self,
        names: &[String],
        removed: &[(String, Vec<Check>)],
        now_ms: u64,
        hold_ms: u64,
    ) -> bool {
        let mut changed = false;
        let live = |at: u64| now_ms < at.saturating_add(hold_ms);
        let before = self.removed.len();
        self.removed.retain(|(_, _, at)| live(*at));
        changed |= before != self.removed.len();
        if self.overflow_at.is_some_and(|at| !live(at)) {
            self.overflow_at = None;
            changed = true;
        }
        // A set, not a scan of the names per name: a list of 42,000 names
        // against a record of 1,000 was 42 million comparisons.
        let mut known: std::collections::HashSet<String> = self.names.iter().cloned().collect();
        for n in names {
            if self.names.len() >= MAX_NAMES {
                break;
            }
            if rememberable(n) && known.insert(n.clone()) {
                self.names.push(n.clone());
                changed = true;
            }
        }
        for (tool, checks) in removed {
            if !rememberable(tool) {
                continue;
            }
            let room = self.removed.len() < MAX_REMOVED;
            match self.removed.iter_mut().find(|(n, _, _)| n == tool) {
                Some((_, old, at)) => {
                    let mut merged = old.clone();
                    merged.extend(checks.iter().copied());
                    crate::sort::sort(&mut merged);
                    merged.dedup();
                    // Refreshed at most once a second: every list of a
                    // poisoned tool would otherwise take the exclusive lock.
                    if merged != *old || now_ms.saturating_sub(*at) >= 1000 {
                        *old = merged;
                        *at = now_ms;
                        changed = true;
                    }
                }
                None if room => {
                    let mut checks = checks.clone();
                    crate::sort::sort(&mut checks);
                    checks.dedup();
                    self.removed.push((tool.clone(), checks, now_ms));
                    changed = true;
                }
                None => {
                    if self.overflow_at != Some(now_ms) {
                        self.overflow_at = Some(now_ms);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// One line per fact: `n <name>`, `r <checks,…> <ms> <name>`,
    /// `o <ms>`. Names are valid MCP tool names (no space, no newline).
    fn encode(&self) -> String {
        let mut out = String::new();
        for n in &self.names {
            out.push_str("n ");
            out.push_str(n);
            out.push('\n');
        }
        for (n, checks, at) in &self.removed {
            let words: Vec<&str> = checks.iter().map(|c| c.as_str()).collect();
            out.push_str(&format!("r {} {at} {n}\n", words.join(",")));
        }
        if let Some(at) = self.overflow_at {
            out.push_str(&format!("o {at}\n"));
        }
        out
    }

    /// A value this module did not write says nothing: `None` (the caller
    /// treats it as unavailable, never as a clean record).
    fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut r = Record::default();
        for line in text.lines() {
            let mut parts = line.splitn(2, ' ');
            let (tag, rest) = (parts.next()?, parts.next()?);
            match tag {
                "n" => r.names.push(rest.to_owned()),
                "r" => {
                    let mut f = rest.splitn(3, ' ');
                    let (checks, at, name) = (f.next()?, f.next()?, f.next()?);
                    let checks = checks
                        .split(',')
                        .map(|w| w.parse::<Check>().ok())
                        .collect::<Option<Vec<_>>>()?;
                    r.removed.push((name.to_owned(), checks, at.parse().ok()?));
                }
                "o" => r.overflow_at = Some(rest.parse().ok()?),
                _ => return None,
            }
        }
        Some(r)
    }
}

fn rememberable(name: &str) -> bool {
    name_problem(NameKind::Tool, name).is_none()
}

/// One key per upstream cluster. Hashed: a cluster name may hold `/`.
fn key(upstream: &str) -> String {
    let h = sha256_hex(upstream.as_bytes());
    format!("{KEY_PREFIX}/{}", h.get(..32).unwrap_or(&h))
}

/// The record of `upstream` (`Ok(None)`: nothing remembered yet).
pub fn read<S: SharedStore + ?Sized>(
    store: &S,
    upstream: &str,
) -> Result<Option<Record>, StoreError> {
    match store.get(&key(upstream))? {
        (Some(b), _) => Record::decode(&b)
            .map(Some)
            .ok_or_else(|| StoreError::Host("unreadable catalogue record".into())),
        (None, _) => Ok(None),
    }
}

/// The names every registered upstream but `own` listed: the other
/// servers' tools for `shadowing`. What cannot be read is left out (the
/// shadowing check then sees fewer names; nothing else depends on it).
pub fn other_names<S: SharedStore + ?Sized>(store: &S, own: Option<&str>) -> Vec<String> {
    let Ok((Some(reg), _)) = store.get(REGISTRY_KEY) else {
        return Vec::new();
    };
    let Ok(reg) = String::from_utf8(reg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for upstream in reg.lines().filter(|u| Some(*u) != own) {
        if let Ok(Some(r)) = read(store, upstream) {
            out.extend(r.names);
        }
    }
    out
}

/// Remember what one list of `upstream` showed at `now_ms`: its names, and
/// the tools it removed for which checks. Written with the read's token,
/// again on a mismatch; a record that was removed is read back (Envoy writes
/// a key that did not exist without comparing tokens).
pub fn remember<S: SharedStore + ?Sized>(
    store: &S,
    upstream: &str,
    names: &[String],
    removed: &[(String, Vec<Check>)],
    now_ms: u64,
    hold_ms: u64,
) -> Result<(), StoreError> {
    register(store, upstream)?;
    let k = key(upstream);
    for _ in 0..ATTEMPTS {
        let (old, cas) = store.get(&k)?;
        // What cannot be read is replaced: it holds nothing this module can use.
        let mut record = old.and_then(|b| Record::decode(&b)).unwrap_or_default();
        if !record.record(names, removed, now_ms, hold_ms) {
            return Ok(());
        }
        match store.set(&k, record.encode().as_bytes(), cas) {
            Ok(()) => {}
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
        if removed.is_empty() {
            return Ok(());
        }
        match read(store, upstream)? {
            Some(r) if removed.iter().all(|(t, _)| !rememberable(t) || held(&r, t)) => {
                return Ok(())
            }
            _ => continue,
        }
    }
    Err(StoreError::CasMismatch)
}

fn held(r: &Record, tool: &str) -> bool {
    r.overflow_at.is_some() || r.removed.iter().any(|(n, _, _)| n == tool)
}

/// Add `upstream` to the registry (bounded; past the bound it is not
/// offered to the others, its own record still kept).
fn register<S: SharedStore + ?Sized>(store: &S, upstream: &str) -> Result<(), StoreError> {
    if upstream.contains('\n') {
        return Ok(());
    }
    for _ in 0..ATTEMPTS {
        let (old, cas) = store.get(REGISTRY_KEY)?;
        let text = old
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        if text.lines().any(|u| u == upstream) || text.lines().count() >= MAX_UPSTREAMS {
            return Ok(());
        }
        let new = format!("{text}{upstream}\n");
        match store.set(REGISTRY_KEY, new.as_bytes(), cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const HOLD: u64 = 60_000;
    const NOW: u64 = 1_800_000_000_000;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_removal_holds_over_a_clean_list_until_the_hold_passes() {
        let store = MemoryStore::new();
        let poisoned = vec![("exfil".to_owned(), vec![Check::ModelInstructions])];
        let ok = |r: Result<(), StoreError>| assert_eq!(r, Ok(()));
        ok(remember(
            &store,
            "up",
            &names(&["exfil", "echo"]),
            &poisoned,
            NOW,
            HOLD,
        ));
        // (name, what a later clean list at `at` leaves, tool judged)
        let cases = [
            ("removed_tool_refused", NOW + 1, "exfil", true),
            ("any_case_of_its_name_refused", NOW + 1, "Exfil", true),
            ("another_tool_is_not", NOW + 1, "echo", false),
            (
                "clean_list_within_hold_keeps_it",
                NOW + 2_000,
                "exfil",
                true,
            ),
            (
                "clean_list_after_hold_clears_it",
                NOW + HOLD + 1,
                "exfil",
                false,
            ),
        ];
        for (name, at, tool, removed) in cases {
            ok(remember(
                &store,
                "up",
                &names(&["exfil", "echo"]),
                &[],
                at,
                HOLD,
            ));
            let r = match read(&store, "up") {
                Ok(Some(r)) => r,
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(
                matches!(r.judge(tool), Listed::Removed { .. }),
                removed,
                "{name}"
            );
        }
    }

    #[test]
    fn names_of_other_upstreams_are_offered_not_ones_own() {
        let store = MemoryStore::new();
        for (up, n) in [("mail", "send_email"), ("evil", "send_mail_v2")] {
            assert_eq!(
                remember(&store, up, &names(&[n, "bad name\n"]), &[], NOW, HOLD),
                Ok(())
            );
        }
        assert_eq!(other_names(&store, Some("evil")), ["send_email"]);
        assert_eq!(other_names(&store, None).len(), 2);
        let r = read(&store, "mail").ok().flatten().unwrap_or_default();
        assert_eq!(r.judge("send_email"), Listed::Listed);
        assert_eq!(r.judge("other"), Listed::Unlisted);
    }

    #[test]
    fn too_many_removals_hold_every_call_of_the_upstream() {
        let store = MemoryStore::new();
        let removed: Vec<(String, Vec<Check>)> = (0..=MAX_REMOVED)
            .map(|i| (format!("t{i}"), vec![Check::Html]))
            .collect();
        assert_eq!(remember(&store, "up", &[], &removed, NOW, HOLD), Ok(()));
        let r = read(&store, "up").ok().flatten().unwrap_or_default();
        assert_eq!(r.judge("anything"), Listed::Overflow { at_ms: NOW });
    }

    #[test]
    fn a_record_round_trips_and_garbage_is_unavailable() {
        let r = Record {
            names: names(&["a", "b.c"]),
            removed: vec![("b.c".into(), vec![Check::Html, Check::Exfiltration], 7)],
            overflow_at: None,
        };
        assert_eq!(Record::decode(r.encode().as_bytes()), Some(r));
        let store = MemoryStore::new();
        assert_eq!(store.set(&key("up"), b"x y", None), Ok(()));
        assert!(read(&store, "up").is_err());
    }
}
