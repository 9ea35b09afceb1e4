//! The canonicalisers conditions rely on: resource URIs, filesystem paths
//! under a directory, URL hosts against a host list.
//!
//! The input is UTF-8 text (it comes out of a JSON string); it is used whole,
//! and also split at its first newline into a value and a second operand (a
//! directory or a configured host), so the fuzzer varies both sides.
//!
//! Invariants:
//! * nothing panics;
//! * `normalize_resource_uri` is idempotent: an accepted output normalises to
//!   itself (otherwise a rule written in canonical form can miss);
//! * `path_under(x, "/srv")` true implies the canonical path is `/srv` or
//!   starts with `/srv/` (no `/srv-evil`, no escape through `..`), and more
//!   generally `path_under(x, d)` agrees with comparing `canonical_path`s;
//! * `canonical_host` is idempotent, and a URL's own host is in the list made
//!   of that host (`host_in(u, [url_host(u)])`), so a configured host written
//!   the way we print it always matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::canon::{
    canonical_host, canonical_path, canonical_path_under, host_in, normalize_resource_uri,
    path_under, url_host,
};

fn check_uri(s: &str) {
    if let Ok(n) = normalize_resource_uri(s) {
        assert_eq!(
            normalize_resource_uri(&n),
            Ok(n.clone()),
            "normalisation not idempotent: {s:?} -> {n:?}"
        );
    }
}

fn check_path(value: &str, dir: &str) {
    if path_under(value, "/srv") == Ok(true) {
        match canonical_path(value) {
            Ok(p) => assert!(
                p == "/srv" || p.starts_with("/srv/"),
                "{value:?} is under /srv but canonicalises to {p:?}"
            ),
            Err(e) => panic!("path_under accepted {value:?} but canonical_path refuses: {e}"),
        }
    }
    if let (Ok(under), Ok(p), Ok(d)) = (
        path_under(value, dir),
        canonical_path(value),
        canonical_path(dir),
    ) {
        assert_eq!(
            under,
            canonical_path_under(&p, &d),
            "{value:?} under {dir:?}"
        );
        if under && d != "/" {
            assert!(
                p == d || p.starts_with(&format!("{d}/")),
                "{p:?} under {d:?}"
            );
        }
    }
}

fn check_host(url: &str, configured: &str) {
    if let Ok(h) = canonical_host(configured) {
        assert_eq!(
            canonical_host(&h),
            Ok(h.clone()),
            "canonical_host not idempotent: {configured:?} -> {h:?}"
        );
    }
    let _ = host_in(url, &[configured.to_owned()]);
    if let Ok(h) = url_host(url) {
        assert_eq!(
            host_in(url, &[h.clone()]),
            Ok(true),
            "{url:?} has host {h:?} but is not in [{h:?}]"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = s.split_once('\n').unwrap_or((s, "/srv"));
    for x in [s, a] {
        check_uri(x);
        check_path(x, b);
        check_host(x, b);
    }
    check_host(s, s);
});
