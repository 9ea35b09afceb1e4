//! Which policy is in force for a filter when a request is decided.
//!
//! A hot reload (ECDS, an Istio `WasmPlugin` edit) starts a new root context
//! in the same VM with the new policy, while the old root lives on for the
//! streams it created: without help, a request whose body is still arriving
//! would be decided under the policy its stream started with, so a kill
//! switch or a revoked key could be outwaited. A stream therefore asks this
//! registry, when it decides, for the policy in force for its filter.
//!
//! What is in force is what the worker uses for new streams, and one VM is
//! one worker: streams are created one after another, and after Envoy
//! switches a worker's filter chain to another root, only that root creates
//! streams. The current root is the last one configured, or one Envoy
//! brought back: a swap back to a configuration whose root is still alive
//! (one of its streams still open) reuses that root without configuring it
//! again, and it simply starts creating streams again.
//!
//! The host names a filter only by its plugin `name` and `root_id`, and two
//! filters of one configuration (two listeners built from one template) can
//! share both. They are told apart from a swap back by their history: a root
//! brought back had served traffic before the current one took over; a
//! second filter's root was configured with it, before any traffic. A root
//! that creates streams but cannot be the current one marks the name
//! ambiguous for good (the glue logs it once), and its streams, like every
//! stream of that name, then decide under their own policy.
//!
//! Right after a root is configured, the worker may still create a few
//! streams on the old root before its filter chain switches
//! ([`SWITCH_GRACE_MS`]): those are the old root's, not a swap back.

use crate::host::InForce;
use crate::policy::CompiledPolicy;
use std::rc::Rc;

/// How long after a root is configured the worker may still create streams
/// on the old one (the switch of its filter chain is posted after the
/// configuration), and how long the newer policy's record in shared data is
/// taken for this VM's own still on its way.
pub const SWITCH_GRACE_MS: u64 = 1_000;
/// See [`PolicyRegistry::stream_created`]: more returns of older roots than
/// this within the window is two filters under one name, not reloads.
const MAX_RETURNS: usize = 3;
const RETURNS_WINDOW_MS: u64 = 60_000;

/// Shared-data key under which each root records its filter's newest policy
/// (`<configured ms>:<policy sha256>`), for the VMs of other Wasm modules
/// with the same `vm_id` (a reload that brings a new module starts a new VM,
/// and a VM's memory is its own): `filter_digest` is the filter key's digest.
pub fn generation_key(filter_digest: &str) -> String {
    format!("mcp_firewall/filter-generation/{filter_digest}")
}

pub fn generation_record(configured_ms: u64, sha256: &str) -> String {
    format!("{configured_ms}:{sha256}")
}

fn parse_record(record: &str) -> Option<(u64, &str)> {
    let (ms, sha) = record.split_once(':')?;
    Some((ms.parse().ok()?, sha))
}

#[derive(Debug)]
struct Root {
    serial: u64,
    policy: Rc<CompiledPolicy>,
    /// When it created its first stream.
    first_stream_ms: Option<u64>,
}

#[derive(Debug)]
struct Filter {
    key: String,
    roots: Vec<Root>,
    current: u64,
    /// Since when `current` is in force (its configuration, or its return).
    since_ms: u64,
    /// `current` came by a configuration (the switch grace applies).
    configured: bool,
    ambiguous: bool,
    /// When roots came back (most recent last), to tell two filters
    /// taking turns from an operator's toggles.
    returns_ms: Vec<u64>,
}

impl Filter {
    fn root(&self, serial: u64) -> Option<&Root> {
        self.roots.iter().find(|r| r.serial == serial)
    }
}

/// One per VM (the glue keeps it in a thread local).
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    filters: Vec<Filter>,
}

impl PolicyRegistry {
    /// Root `root` of filter `key` was configured with `policy` at `now_ms`.
    pub fn configured(&mut self, key: &str, root: u64, policy: Rc<CompiledPolicy>, now_ms: u64) {
        let info = Root {
            serial: root,
            policy,
            first_stream_ms: None,
        };
        match self.filters.iter_mut().find(|f| f.key == key) {
            Some(f) => {
                f.roots.retain(|r| r.serial != root);
                f.roots.push(info);
                f.current = root;
                f.since_ms = now_ms;
                f.configured = true;
            }
            None => self.filters.push(Filter {
                key: key.to_owned(),
                roots: vec![info],
                current: root,
                since_ms: now_ms,
                configured: true,
                ambiguous: false,
                returns_ms: Vec::new(),
            }),
        }
    }

    /// Root `root` of `key` is gone (its `on_done`).
    pub fn retired(&mut self, key: &str, root: u64) {
        if let Some(f) = self.filters.iter_mut().find(|f| f.key == key) {
            f.roots.retain(|r| r.serial != root);
        }
    }

    /// Root `root` of `key` created a stream at `now_ms`. `true` when this
    /// marked the key ambiguous (the caller logs it, once).
    pub fn stream_created(&mut self, key: &str, root: u64, now_ms: u64) -> bool {
        let Some(f) = self.filters.iter_mut().find(|f| f.key == key) else {
            return false;
        };
        let Some(info) = f.roots.iter_mut().find(|r| r.serial == root) else {
            return false;
        };
        let first = *info.first_stream_ms.get_or_insert(now_ms);
        if root == f.current || f.ambiguous {
            return false;
        }
        if f.configured && now_ms <= f.since_ms + SWITCH_GRACE_MS {
            // The worker has not switched to the configured root yet.
            return false;
        }
        if first < f.since_ms {
            // It served before the current root took over, and serves again:
            // Envoy brought it back (a swap back to its configuration)... or
            // two filters under one name take turns. Turns come with the
            // traffic, toggles with an operator: more than `MAX_RETURNS`
            // within `RETURNS_WINDOW_MS` is taken for two filters.
            f.returns_ms
                .retain(|t| now_ms.saturating_sub(*t) <= RETURNS_WINDOW_MS);
            f.returns_ms.push(now_ms);
            if f.returns_ms.len() > MAX_RETURNS {
                f.ambiguous = true;
                return true;
            }
            f.current = root;
            f.since_ms = now_ms;
            f.configured = false;
            return false;
        }
        // Configured before any traffic, never current, serving: a second
        // filter under the same name.
        f.ambiguous = true;
        true
    }

    /// The current policy for a stream of root `root`, created at
    /// `created_ms`, when it is another root's: `None` = its own.
    pub fn in_force(&self, key: &str, root: u64, created_ms: u64) -> Option<Rc<CompiledPolicy>> {
        let f = self.filters.iter().find(|f| f.key == key)?;
        if f.ambiguous || f.current == root {
            return None;
        }
        let served_before = f
            .root(root)
            .and_then(|r| r.first_stream_ms)
            .is_some_and(|first| first < f.since_ms);
        let predates = created_ms <= f.since_ms + SWITCH_GRACE_MS;
        (served_before && predates)
            .then(|| f.root(f.current).map(|r| r.policy.clone()))
            .flatten()
    }

    /// What a stream of root `root` (policy `own_sha`), created at
    /// `created_ms` and deciding at `now_ms`, decides under, given the
    /// filter's generation record in shared data (`None` when there is
    /// none): the current policy of this VM when it is another root's; a
    /// newer one configured in another VM (a record newer than what this VM
    /// has in force, with another policy) cannot be adopted, and the request
    /// is refused rather than decided under a replaced policy.
    pub fn decide(
        &self,
        key: &str,
        root: u64,
        own_sha: &str,
        created_ms: u64,
        now_ms: u64,
        record: Option<&str>,
    ) -> InForce {
        if let Some(p) = self.in_force(key, root, created_ms) {
            return InForce::Newer(p);
        }
        let Some(f) = self.filters.iter().find(|f| f.key == key) else {
            return InForce::Own;
        };
        let Some((at, sha)) = record.and_then(parse_record) else {
            return InForce::Own;
        };
        // A policy some root of this VM holds is not another module's (a
        // swap back to a live root is configured again on Envoy's main
        // thread, whose record names it).
        let known_here = f.roots.iter().any(|r| r.policy.sha256 == sha);
        let own_first = f.root(root).and_then(|r| r.first_stream_ms);
        let elsewhere = !f.ambiguous
            && sha != own_sha
            && !known_here
            && at > f.since_ms
            && own_first.is_some_and(|first| first < at)
            && created_ms <= at + SWITCH_GRACE_MS
            // The other workers' VMs of this module configure the new root a
            // little later than the first: only a record older than that is
            // another module's (a newer one may be this VM's own, on its way).
            && now_ms > at + SWITCH_GRACE_MS;
        match elsewhere {
            true => InForce::Elsewhere,
            false => InForce::Own,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kill: bool, n: u64) -> Rc<CompiledPolicy> {
        let doc = serde_json::json!({"version": 1, "kill_switch": kill,
            "rules": [{"id": format!("r{n}"), "effect": "allow", "tools": ["x"]}]});
        match crate::policy::compile(&doc) {
            Ok(p) => Rc::new(p),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn adopts(r: &PolicyRegistry, root: u64, created: u64, want: &Rc<CompiledPolicy>) -> bool {
        r.in_force("fw", root, created)
            .is_some_and(|p| Rc::ptr_eq(&p, want))
    }

    #[test]
    fn a_reload_is_adopted_by_held_streams() {
        let (old, new) = (policy(false, 1), policy(true, 2));
        let mut r = PolicyRegistry::default();
        r.configured("fw", 1, old.clone(), 0);
        assert!(!r.stream_created("fw", 1, 10));
        r.configured("fw", 2, new.clone(), 5_000);
        assert!(adopts(&r, 1, 10, &new), "a held stream adopts the reload");
        // The worker still creating on the old root before it switches.
        assert!(!r.stream_created("fw", 1, 5_001));
        assert!(
            adopts(&r, 1, 5_001, &new),
            "a switch-window stream adopts too"
        );
        assert!(
            r.in_force("fw", 2, 6_000).is_none(),
            "the current root keeps its own"
        );
        r.retired("fw", 1);
        assert!(
            r.in_force("fw", 1, 10).is_none(),
            "a retired root adopts nothing"
        );
    }

    /// Review H1: A, then K (kill switch), then back to A, which Envoy serves
    /// from A's root again without configuring it; then K again.
    #[test]
    fn a_swap_back_brings_the_old_root_back_and_later_reloads_still_apply() {
        let (a, k) = (policy(false, 1), policy(true, 2));
        let mut r = PolicyRegistry::default();
        r.configured("fw", 1, a.clone(), 0);
        r.stream_created("fw", 1, 100); // a long GET keeps root 1 alive
        r.configured("fw", 2, k.clone(), 10_000);
        r.stream_created("fw", 2, 10_500);
        assert!(
            adopts(&r, 1, 100, &k),
            "A's held stream meets the kill switch"
        );
        // Swap back: root 1 creates streams again, no configuration.
        assert!(
            !r.stream_created("fw", 1, 20_000),
            "a swap back is not a second filter"
        );
        assert!(r.in_force("fw", 1, 20_000).is_none(), "A is current again");
        assert!(
            adopts(&r, 2, 10_500, &a),
            "K's held stream is decided under A"
        );
        // A held request of A, then K again (brought back too).
        assert!(!r.stream_created("fw", 1, 25_000));
        assert!(!r.stream_created("fw", 2, 30_000));
        assert!(
            adopts(&r, 1, 25_000, &k),
            "the kill switch again reaches held streams"
        );
        // And a real new configuration still applies.
        let n = policy(false, 3);
        r.configured("fw", 3, n.clone(), 40_000);
        assert!(adopts(&r, 1, 25_000, &n));
    }

    /// Review F2: two filters under one name, configured together.
    #[test]
    fn a_second_filter_of_the_same_name_is_never_adopted_from() {
        let (strict, lax) = (policy(false, 1), policy(false, 2));
        let mut d = PolicyRegistry::default();
        d.configured("fw", 1, strict.clone(), 0);
        d.configured("fw", 2, lax.clone(), 1);
        assert!(!d.stream_created("fw", 2, 50));
        assert!(
            !d.stream_created("fw", 1, 100),
            "within the switch grace: no verdict yet"
        );
        assert!(
            d.in_force("fw", 1, 100).is_none(),
            "strict never served before: no adoption"
        );
        assert!(
            d.stream_created("fw", 1, 5_000),
            "strict keeps serving: ambiguous, logged once"
        );
        assert!(!d.stream_created("fw", 1, 6_000));
        d.configured("fw", 3, policy(false, 3), 10_000);
        assert!(
            d.in_force("fw", 1, 5_000).is_none(),
            "ambiguous name: own policy"
        );
    }

    /// Review (third pass) F1: two filters under one name, after one of them
    /// is reloaded, take turns creating streams: that is not a swap back.
    #[test]
    fn two_filters_taking_turns_after_a_reload_are_found_out() {
        let (strict, lax) = (policy(false, 1), policy(false, 2));
        let mut d = PolicyRegistry::default();
        d.configured("fw", 1, strict.clone(), 0);
        d.configured("fw", 2, lax.clone(), 1);
        d.stream_created("fw", 2, 10); // lax serves
        d.configured("fw", 3, policy(false, 3), 5_000); // strict reloaded
        d.stream_created("fw", 3, 5_100);
        let mut logged = false;
        for i in 0..6u64 {
            logged |= d.stream_created("fw", 2, 7_000 + i * 100);
            logged |= d.stream_created("fw", 3, 7_050 + i * 100);
        }
        assert!(logged, "turns taken: ambiguous, logged");
        assert!(d.in_force("fw", 3, 7_000).is_none());
        assert!(d.in_force("fw", 2, 7_000).is_none());
    }

    /// A reload that brought a new Wasm module is configured in another VM:
    /// this VM only sees its record in shared data.
    #[test]
    fn a_newer_policy_in_another_vm_refuses_held_requests() {
        let own = policy(false, 1);
        let mut r = PolicyRegistry::default();
        r.configured("fw", 1, own.clone(), 0);
        r.stream_created("fw", 1, 10);
        let newer = generation_record(5_000, "f00d");
        let mine = generation_record(0, &own.sha256);
        // (name, record, stream created, decided at, refused as elsewhere)
        let cases: Vec<(&str, Option<&str>, u64, u64, bool)> = vec![
            ("no_record", None, 10, 9_000, false),
            ("own_record", Some(&mine), 10, 9_000, false),
            (
                "newer_elsewhere_refuses_a_held_stream",
                Some(&newer),
                10,
                9_000,
                true,
            ),
            (
                "a_fresh_record_may_be_this_vms_own_on_its_way",
                Some(&newer),
                10,
                5_500,
                false,
            ),
            (
                "a_stream_begun_well_after_it_is_not_held_across_it",
                Some(&newer),
                9_000,
                9_500,
                false,
            ),
            ("garbage_record", Some("x"), 10, 9_000, false),
        ];
        for (name, record, created, now, elsewhere) in cases {
            let got = r.decide("fw", 1, &own.sha256, created, now, record);
            assert_eq!(matches!(got, InForce::Elsewhere), elsewhere, "{name}");
        }
    }
}
