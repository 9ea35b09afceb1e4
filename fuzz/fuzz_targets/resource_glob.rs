//! Resource patterns and the globs rules match with, through the URI
//! normalisation requests are decided on (`glob`, `canon::resource_pattern_problem`,
//! `canon::normalize_resource_uri`, `decide::decide_message`).
//!
//! The input is UTF-8 text split at its first two newlines into a pattern, a
//! URI (or any text) and a suffix; missing parts are empty.
//!
//! Invariants:
//! * nothing panics;
//! * `Glob::matches` agrees with a plain dynamic-programming matcher written
//!   from the documented semantics, for names (`*` any run, `?` one
//!   character) and for URIs (`*` and `?` never match `/`, `?` or `#`; `**`
//!   any run): no separator is crossed by a one-segment star;
//! * `matches_some_extension_of(p)` holds when `p + suffix` matches, and
//!   `matches_every_extension_of(p)` implies `p + suffix` matches (what
//!   `resources/templates/list` filtering relies on);
//! * a pattern `check` accepts (`resource_pattern_problem` is `None`) and
//!   holding no wildcard is its own normal form, so it matches the URIs that
//!   normalise to it; a policy using an accepted pattern compiles;
//! * spellings of one URI decide alike: appending a fragment, upper-casing
//!   the scheme, percent-encoding an unreserved character of the path or
//!   query normalise to the same text (or are all refused), and a
//!   `resources/read` of each is decided by the same rule with the same
//!   effect under a policy that allows and denies with the fuzzed pattern.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::canon::{normalize_resource_uri, resource_pattern_problem};
use mcp_firewall::catalogue::intents::Annotated;
use mcp_firewall::decide::decide_message;
use mcp_firewall::glob::{Glob, GlobKind};
use mcp_firewall::identity::{Caller, Via};
use mcp_firewall::jsonrpc::Message;
use mcp_firewall::policy::compile_str;
use serde_json::json;

/// The documented semantics, as a table: `m[i][j]` = pattern[..i] matches text[..j].
fn reference(pattern: &str, text: &str, kind: GlobKind) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum T {
        Lit(char),
        One,
        Seg,
        Any,
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match (c, kind) {
            ('*', GlobKind::Name) => T::Any,
            ('*', GlobKind::Uri) if chars.peek() == Some(&'*') => {
                chars.next();
                T::Any
            }
            ('*', GlobKind::Uri) => T::Seg,
            ('?', _) => T::One,
            (c, _) => T::Lit(c),
        });
    }
    let sep = |c: char| kind == GlobKind::Uri && matches!(c, '/' | '?' | '#');
    let text: Vec<char> = text.chars().collect();
    let (n, m) = (toks.len(), text.len());
    let mut t = vec![vec![false; m + 1]; n + 1];
    t[0][0] = true;
    for i in 1..=n {
        for j in 0..=m {
            t[i][j] = match toks[i - 1] {
                T::Any => t[i - 1][j] || (j > 0 && t[i][j - 1]),
                T::Seg => t[i - 1][j] || (j > 0 && !sep(text[j - 1]) && t[i][j - 1]),
                T::One => j > 0 && !sep(text[j - 1]) && t[i - 1][j - 1],
                T::Lit(c) => j > 0 && text[j - 1] == c && t[i - 1][j - 1],
            };
        }
    }
    t[n][m]
}

/// The same URI spelled otherwise: with a fragment, the scheme upper-cased,
/// one unreserved character of the path or query percent-encoded (`pick`
/// chooses which).
fn spellings(uri: &str, pick: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Some((scheme, rest)) = uri.split_once(':') else {
        return out;
    };
    if !uri.contains('#') {
        out.push(format!("{uri}#frag"));
    }
    out.push(format!("{}:{rest}", scheme.to_ascii_uppercase()));
    // The path starts after the authority (after `//` up to the next `/`, `?`
    // or `#`), or right after the scheme; the fragment is left alone.
    let start = match rest.strip_prefix("//") {
        Some(after) => 2 + after.find(['/', '?', '#']).unwrap_or(after.len()),
        None => 0,
    };
    let end = rest.find('#').unwrap_or(rest.len());
    let candidates: Vec<usize> = rest
        .char_indices()
        .filter(|(i, c)| {
            *i >= start
                && *i < end
                // Not a digit of an escape already there.
                && !rest[..*i].ends_with('%')
                && !rest.get(..i.saturating_sub(1)).is_some_and(|r| r.ends_with('%'))
                && (c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        })
        .map(|(i, _)| i)
        .collect();
    if !candidates.is_empty() {
        let i = candidates[pick % candidates.len()];
        let b = rest.as_bytes()[i];
        out.push(format!("{scheme}:{}%{b:02X}{}", &rest[..i], &rest[i + 1..]));
    }
    out
}

fn reader() -> Caller {
    Caller {
        subject: Some("r".into()),
        tenant: None,
        roles: vec!["reader".into()],
        via: Via::ApiKey,
    }
}

fn read(uri: &str) -> Message {
    Message::Request {
        id: json!(1),
        method: "resources/read".into(),
        params: json!({ "uri": uri }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.splitn(3, '\n');
    let pattern = parts.next().unwrap_or("");
    let uri = parts.next().unwrap_or("");
    let suffix = parts.next().unwrap_or("");
    // The reference is quadratic: keep its table small.
    if pattern.len() > 64 || uri.len() > 256 || suffix.len() > 64 {
        return;
    }

    for kind in [GlobKind::Name, GlobKind::Uri] {
        let g = Glob::of_kind(pattern, kind);
        for text in [uri, suffix, pattern] {
            assert_eq!(
                g.matches(text),
                reference(pattern, text, kind),
                "{kind:?} glob {pattern:?} on {text:?}"
            );
        }
        let extended = format!("{uri}{suffix}");
        if g.matches(&extended) {
            assert!(
                g.matches_some_extension_of(uri),
                "{kind:?} {pattern:?} matches {extended:?} but no extension of {uri:?}"
            );
        }
        if g.matches_every_extension_of(uri) {
            assert!(
                g.matches(&extended),
                "{kind:?} {pattern:?} matches every extension of {uri:?} but not {extended:?}"
            );
        }
    }

    // The compiler refuses an empty pattern before asking for its problem.
    let accepted = !pattern.is_empty() && resource_pattern_problem(pattern).is_none();
    if accepted && !pattern.contains(['*', '?']) {
        assert_eq!(
            normalize_resource_uri(pattern).as_deref(),
            Ok(pattern),
            "accepted pattern {pattern:?} is not in normal form"
        );
    }

    let normal = normalize_resource_uri(uri);
    for (i, other) in spellings(uri, suffix.len()).iter().enumerate() {
        match (&normal, normalize_resource_uri(other)) {
            (Ok(a), Ok(b)) => assert_eq!(a, &b, "{uri:?} and {other:?} normalise apart"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{uri:?} -> {a:?} but {other:?} (spelling {i}) -> {b:?}"),
        }
    }

    // A policy deciding with the pattern: compiled only if check accepts it.
    let doc = json!({
        "version": 1,
        "identity": {"api_keys": [], "anonymous_roles": []},
        // No detectors: building the DLP scanner's patterns for every input
        // would be most of the run's time (48 inputs a second with them).
        "dlp": {"requests": "off", "responses": "off", "detectors": []},
        "rules": [
            {"id": "allow-pattern", "effect": "allow", "roles": ["reader"], "resources": [pattern]},
            {"id": "no-secrets", "effect": "deny", "resources": ["file:///srv/secret/**"]},
            {"id": "srv", "effect": "allow", "roles": ["reader"], "resources": ["file:///srv/*/*"]}
        ]
    });
    let policy = match compile_str(doc.to_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            assert!(!accepted, "accepted pattern {pattern:?} does not compile: {e:?}");
            return;
        }
    };
    let caller = reader();
    // No rule here reads the time: any instant decides alike.
    let Ok(first) = decide_message(&policy, &caller, &read(uri), 0, Annotated::Unseen) else {
        return;
    };
    for other in spellings(uri, suffix.len()) {
        if let Ok(d) = decide_message(&policy, &caller, &read(&other), 0, Annotated::Unseen) {
            assert_eq!(
                (d.verdict, &d.rule),
                (first.verdict, &first.rule),
                "{uri:?} and {other:?} decided apart"
            );
        }
    }
});
