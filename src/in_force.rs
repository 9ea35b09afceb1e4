//! Which policy is in force for a filter when a request is decided.
//!
//! A hot reload (ECDS, an Istio `WasmPlugin` edit) starts a new root context
//! in the same VM with the new policy, while the old root lives on for the
//! streams it created: without help, a request whose body is still arriving
//! would be decided under the policy its stream started with, so a kill
//! switch or a revoked key could be outwaited. A stream therefore asks this
//! registry, when it decides, for the newer policy of its filter.
//!
//! The host names a filter only by its plugin `name` and `root_id`, and two
//! different filters (two listeners built from one template) can share both.
//! Adopting the other filter's policy would decide one listener's traffic
//! under the other's rules, so a newer root is taken for a successor only
//! when the evidence says so:
//! * the stream's own root served traffic before the newer one was
//!   configured (a reload replaces a filter that was in use; two filters of
//!   one configuration are configured together, before any traffic);
//! * the stream itself was created before the newer root was configured, or
//!   within [`SWITCH_GRACE_MS`] after it (Envoy configures the new root on a
//!   worker shortly before that worker's filter chains switch to it, and a
//!   stream created in between still belongs to the old root);
//! * no older root of the same key has gone on creating streams longer than
//!   that grace after a newer one was configured: that is a second filter
//!   under the same name. The key is then marked ambiguous for good (the
//!   glue logs it once, as an error naming the fix), and its streams decide
//!   under their own policy.

use crate::host::InForce;
use crate::policy::CompiledPolicy;
use std::rc::Rc;

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

/// How long after a newer root is configured an older root may still create
/// streams (the worker's switch to the new filter chain) before the two are
/// taken for different filters.
pub const SWITCH_GRACE_MS: u64 = 1_000;

#[derive(Debug)]
struct Filter {
    key: String,
    newest: Rc<CompiledPolicy>,
    newest_root: u64,
    configured_ms: u64,
    ambiguous: bool,
    /// Roots of this key still alive, with when each created its first stream.
    roots: Vec<(u64, Option<u64>)>,
}

/// One per VM (the glue keeps it in a thread local).
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    filters: Vec<Filter>,
}

impl PolicyRegistry {
    /// Root `root` of filter `key` was configured with `policy` at `now_ms`.
    pub fn configured(&mut self, key: &str, root: u64, policy: Rc<CompiledPolicy>, now_ms: u64) {
        match self.filters.iter_mut().find(|f| f.key == key) {
            Some(f) => {
                f.newest = policy;
                f.newest_root = root;
                f.configured_ms = now_ms;
                f.roots.push((root, None));
            }
            None => self.filters.push(Filter {
                key: key.to_owned(),
                newest: policy,
                newest_root: root,
                configured_ms: now_ms,
                ambiguous: false,
                roots: vec![(root, None)],
            }),
        }
    }

    /// Root `root` of `key` is gone (its `on_done`).
    pub fn retired(&mut self, key: &str, root: u64) {
        if let Some(f) = self.filters.iter_mut().find(|f| f.key == key) {
            f.roots.retain(|(r, _)| *r != root);
        }
    }

    /// Root `root` of `key` created a stream at `now_ms`. `true` when this
    /// marked the key ambiguous (the caller logs it, once).
    pub fn stream_created(&mut self, key: &str, root: u64, now_ms: u64) -> bool {
        let Some(f) = self.filters.iter_mut().find(|f| f.key == key) else {
            return false;
        };
        if let Some((_, first)) = f.roots.iter_mut().find(|(r, _)| *r == root) {
            first.get_or_insert(now_ms);
        }
        let stale = root != f.newest_root && now_ms > f.configured_ms + SWITCH_GRACE_MS;
        if stale && !f.ambiguous {
            f.ambiguous = true;
            return true;
        }
        false
    }

    /// What a stream of root `root` (policy `own_sha`), created at
    /// `created_ms` and deciding at `now_ms`, decides under, given the filter's generation record in
    /// shared data (`None` when there is none): a newer policy of this VM is
    /// adopted; a newer one configured in another VM (a record newer than
    /// every root of this VM, with another policy) cannot be, and the
    /// request is refused rather than decided under a replaced policy.
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
        let own_first = f
            .roots
            .iter()
            .find(|(r, _)| *r == root)
            .and_then(|(_, first)| *first);
        let elsewhere = !f.ambiguous
            && sha != own_sha
            && sha != f.newest.sha256
            && at > f.configured_ms
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

    /// The newer policy a stream of root `root`, created at `created_ms`,
    /// decides under; `None` = its own.
    pub fn in_force(&self, key: &str, root: u64, created_ms: u64) -> Option<Rc<CompiledPolicy>> {
        let f = self.filters.iter().find(|f| f.key == key)?;
        if f.ambiguous || f.newest_root == root {
            return None;
        }
        let served_before = f
            .roots
            .iter()
            .find(|(r, _)| *r == root)
            .and_then(|(_, first)| *first)
            .is_some_and(|first| first < f.configured_ms);
        let predates = created_ms <= f.configured_ms + SWITCH_GRACE_MS;
        (served_before && predates).then(|| f.newest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kill: bool) -> Rc<CompiledPolicy> {
        let doc = serde_json::json!({"version": 1, "rules": [], "kill_switch": kill});
        match crate::policy::compile(&doc) {
            Ok(p) => Rc::new(p),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Steps on one registry: (what happens, then what a stream sees).
    #[test]
    fn a_reload_is_adopted_and_a_second_filter_of_the_same_name_never_is() {
        let old = policy(false);
        let new = policy(true);
        // A reload: root 1 serves traffic, root 2 replaces it.
        let mut r = PolicyRegistry::default();
        r.configured("fw", 1, old.clone(), 0);
        assert!(!r.stream_created("fw", 1, 10));
        r.configured("fw", 2, new.clone(), 5_000);
        let held = r.in_force("fw", 1, 10);
        assert!(
            held.is_some_and(|p| Rc::ptr_eq(&p, &new)),
            "held stream adopts the reload"
        );
        // A stream the old root created while the worker switched (race).
        assert!(!r.stream_created("fw", 1, 5_001));
        assert!(
            r.in_force("fw", 1, 5_001).is_some(),
            "switch-window stream adopts too"
        );
        assert!(
            r.in_force("fw", 2, 6_000).is_none(),
            "the newest root's streams keep theirs"
        );
        r.retired("fw", 1);
        assert!(
            r.in_force("fw", 1, 10).is_none(),
            "a retired root adopts nothing"
        );

        // Two filters under one name: configured together, both serve.
        let mut d = PolicyRegistry::default();
        d.configured("fw", 1, old.clone(), 0);
        d.configured("fw", 2, new.clone(), 1);
        assert!(!d.stream_created("fw", 1, 100));
        assert!(
            d.in_force("fw", 1, 100).is_none(),
            "A never served before B: no adoption"
        );
        assert!(
            d.stream_created("fw", 1, 5_000),
            "A keeps serving: ambiguous, logged once"
        );
        assert!(!d.stream_created("fw", 1, 6_000));
        // B is reloaded later: A still never adopts it.
        d.configured("fw", 3, policy(false), 10_000);
        assert!(
            d.in_force("fw", 1, 5_000).is_none(),
            "ambiguous key: own policy"
        );
    }

    /// A reload that brought a new Wasm module is configured in another VM:
    /// this VM only sees its record in shared data.
    #[test]
    fn a_newer_policy_in_another_vm_refuses_held_requests() {
        let own = policy(false);
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
