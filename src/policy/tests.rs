//! Policy compiler tests; compiled only as `#[cfg(test)] mod tests;` in policy/mod.rs.

use super::*;
use serde_json::json;

fn errors_of(doc: Value) -> Vec<String> {
    match compile(&doc) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_policy_compiles_with_defaults() {
    let p = compile(&json!({"version": 1, "rules": []})).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.limits, Limits::default());
    assert_eq!(p.identity.jwt_payload_header, None);
    assert_eq!(p.sha256.len(), 64);
}

#[test]
fn config_error_table() {
    let rule = |extra: Value| {
        let mut r = json!({"id": "r", "effect": "allow", "tools": ["x"]});
        if let (Some(o), Value::Object(e)) = (r.as_object_mut(), extra) {
            o.extend(e);
        }
        json!({"version": 1, "rules": [r]})
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing_version",
            json!({"rules": []}),
            "$.version: required field is missing",
        ),
        (
            "wrong_version",
            json!({"version": 2, "rules": []}),
            "$.version: unsupported version 2",
        ),
        (
            "missing_rules",
            json!({"version": 1}),
            "$.rules: required field is missing",
        ),
        (
            "unknown_top_level_field",
            json!({"version": 1, "rules": [], "rulez": []}),
            "$.rulez: unknown field",
        ),
        (
            "bad_mode",
            json!({"version": 1, "rules": [], "mode": "audit"}),
            "$.mode: \"audit\" is not one of enforce, dry_run",
        ),
        (
            "bad_effect",
            rule(json!({"effect": "permit"})),
            "$.rules[0].effect: \"permit\" is not one of allow, deny, approve",
        ),
        (
            "unknown_rule_field",
            rule(json!({"tool": ["x"]})),
            "$.rules[0].tool: unknown field",
        ),
        (
            "two_target_kinds",
            rule(json!({"methods": ["ping"]})),
            "$.rules[0]: a rule targets exactly one kind",
        ),
        (
            "no_target_kind",
            json!({"version": 1, "rules": [{"id": "r", "effect": "allow"}]}),
            "$.rules[0]: a rule needs exactly one of",
        ),
        (
            "empty_patterns",
            rule(json!({"tools": []})),
            "$.rules[0].tools: needs at least one pattern",
        ),
        (
            "non_string_pattern",
            rule(json!({"tools": ["ok", 3]})),
            "$.rules[0].tools[1]: expected a string, found a number",
        ),
        (
            "empty_roles",
            rule(json!({"roles": []})),
            "$.rules[0].roles: an empty roles list matches nobody",
        ),
        (
            "reserved_rule_id",
            rule(json!({"id": "default-deny"})),
            "$.rules[0].id: \"default-deny\" is reserved",
        ),
        (
            "bad_rule_id_chars",
            rule(json!({"id": "a b"})),
            "$.rules[0].id: rule ids are non-empty",
        ),
        (
            "duplicate_rule_id",
            json!({"version": 1, "rules": [{"id": "a", "effect": "allow", "tools": ["x"]}, {"id": "a", "effect": "deny", "tools": ["y"]}]}),
            "$.rules[1].id: rule id \"a\" is used twice",
        ),
        (
            "when_with_unknown_operator",
            rule(json!({"when": {"arg": "/a", "equals": 1}})),
            "$.rules[0].when",
        ),
        (
            "when_with_bad_regex",
            rule(json!({"when": {"arg": "/a", "matches": "("}})),
            "$.rules[0].when.matches",
        ),
        (
            "dlp_bad_action",
            json!({"version": 1, "rules": [], "dlp": {"requests": "drop"}}),
            "$.dlp.requests",
        ),
        (
            "dlp_invalid_custom_pattern",
            json!({"version": 1, "rules": [], "dlp": {"custom": [{"id": "x", "pattern": "(", "label": "pii"}]}}),
            "$.dlp.custom[0].pattern",
        ),
        (
            "rate_limits_not_supported_yet",
            json!({"version": 1, "rules": [], "rate_limits": []}),
            "$.rate_limits: not supported yet",
        ),
        (
            "audit_without_cluster",
            json!({"version": 1, "rules": [], "audit": {}}),
            "$.audit.cluster",
        ),
        (
            "api_key_not_hex",
            json!({"version": 1, "rules": [], "identity": {"api_keys": [{"sha256": "XYZ", "subject": "s"}]}}),
            "$.identity.api_keys[0].sha256: expected 64 lower-case hex characters",
        ),
        (
            "api_key_without_subject",
            json!({"version": 1, "rules": [], "identity": {"api_keys": [{"sha256": "a".repeat(64)}]}}),
            "$.identity.api_keys[0].subject: required field is missing",
        ),
        (
            "bad_jwt_header_name",
            json!({"version": 1, "rules": [], "identity": {"jwt_payload_header": "x jwt"}}),
            "$.identity.jwt_payload_header: \"x jwt\" is not a valid HTTP header name",
        ),
        (
            "limit_out_of_range",
            json!({"version": 1, "rules": [], "limits": {"max_json_depth": 1000}}),
            "$.limits.max_json_depth: 1000 is out of range 2..=120",
        ),
        (
            "bad_batches",
            json!({"version": 1, "rules": [], "limits": {"batches": "allow"}}),
            "$.limits.batches: \"allow\" is not one of reject, evaluate",
        ),
    ];
    for (name, doc, want) in cases {
        let errs = errors_of(doc);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{name}: want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn every_mistake_is_reported_at_once() {
    let errs = errors_of(json!({
        "version": 1,
        "mode": "loud",
        "rules": [
            {"id": "a", "effect": "allow", "tools": ["x"], "rolez": ["r"]},
            {"id": "b", "effect": "maybe", "tools": ["y"]}
        ],
        "limits": {"max_request_bytes": 0}
    }));
    let paths: Vec<&str> = errs.iter().filter_map(|e| e.split(':').next()).collect();
    assert_eq!(
        paths,
        vec![
            "$.mode",
            "$.rules[0].rolez",
            "$.rules[1].effect",
            "$.limits.max_request_bytes"
        ],
        "{errs:?}"
    );
}

#[test]
fn policy_text_with_duplicate_keys_is_refused() {
    let errs = compile_str(
        br#"{"version":1,"rules":[],"rules":[{"id":"all","effect":"allow","methods":["*"]}]}"#,
    )
    .err()
    .unwrap_or_default();
    assert_eq!(errs.first().map(|e| e.path.as_str()), Some("$"));
    assert!(
        errs.first().is_some_and(|e| e.msg.contains("duplicate")),
        "{errs:?}"
    );
}
