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
            "resource_pattern_with_upper_case_host_names_its_normal_form",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny",
                "resources": ["file:///srv/docs/*", "https://Internal.Example.com/*"]}]}),
            "$.rules[0].resources[1]: \"https://Internal.Example.com/*\" is not in the normal form request URIs are compared in, so it never matches: write \"https://internal.example.com/*\"",
        ),
        (
            "resource_pattern_with_raw_non_ascii_names_its_normal_form",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny",
                "resources": ["file:///srv/Données RH/*"]}]}),
            "$.rules[0].resources[0]: \"file:///srv/Données RH/*\" is not in the normal form request URIs are compared in, so it never matches: write \"file:///srv/Donn%C3%A9es%20RH/*\"",
        ),
        (
            "resource_pattern_with_encoded_tilde_names_its_normal_form",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny",
                "resources": ["file:///srv/%7Eadmin/*"]}]}),
            "$.rules[0].resources[0]: \"file:///srv/%7Eadmin/*\" is not in the normal form",
        ),
        (
            "fullwidth_tool_pattern_never_matches",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny",
                "tools": ["delete_*", "\u{ff44}\u{ff45}lete_*"]}]}),
            "$.rules[0].tools[1]: \"\u{ff44}\u{ff45}lete_*\" never matches: a name that holds U+FF44",
        ),
        (
            "resource_pattern_with_fragment_is_refused",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny",
                "resources": ["file:///etc/passwd#top"]}]}),
            "$.rules[0].resources[0]: \"file:///etc/passwd#top\" holds a '#'",
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
            "pins_without_tools",
            json!({"version": 1, "rules": [], "pins": {}}),
            "$.pins.tools: required field is missing",
        ),
        (
            "pin_that_is_not_a_digest",
            json!({"version": 1, "rules": [], "pins": {"tools": {"echo": "sha256:abc"}}}),
            "$.pins.tools[\"echo\"]",
        ),
        (
            "catalogue_hold_of_zero",
            json!({"version": 1, "rules": [], "catalogue": {"hold_s": 0}}),
            "$.catalogue.hold_s: 0 is out of range 1..=2592000",
        ),
        (
            "catalogue_unknown_check",
            json!({"version": 1, "rules": [], "catalogue": {"descriptions": {"zero_width": "remove"}}}),
            "$.catalogue.descriptions.zero_width: unknown check",
        ),
        (
            "rate_limit_id_shared_with_a_rule",
            json!({"version": 1, "rules": [{"id": "x", "effect": "allow", "tools": ["*"]}],
                   "rate_limits": [{"id": "x", "key": ["subject"], "tools": ["*"], "capacity": 1, "per_seconds": 1}]}),
            "$.rate_limits[0].id: id \"x\" is used twice",
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
            "jwt_header_the_client_sets",
            json!({"version": 1, "rules": [], "identity": {"jwt_payload_header": "Authorization"}}),
            "$.identity.jwt_payload_header: \"Authorization\" is a header the client sends itself",
        ),
        (
            "resource_metadata_naming_the_mcp_endpoint",
            json!({"version": 1, "rules": [], "identity": {"resource_metadata": "https://mcp.example.com/mcp"}}),
            "$.identity.resource_metadata: \"https://mcp.example.com/mcp\": the metadata's path must start with /.well-known/oauth-protected-resource",
        ),
        (
            "resource_metadata_with_a_quote",
            json!({"version": 1, "rules": [], "identity": {"resource_metadata": "https://x/.well-known/oauth-protected-resource\"a"}}),
            "$.identity.resource_metadata: ",
        ),
        (
            "resource_metadata_not_a_url",
            json!({"version": 1, "rules": [], "identity": {"resource_metadata": "/.well-known/oauth-protected-resource"}}),
            "$.identity.resource_metadata: \"/.well-known/oauth-protected-resource\" is not an absolute http(s) URL",
        ),
        (
            "sessions_when_full_unknown",
            json!({"version": 1, "rules": [], "sessions": {"when_full": "evict"}}),
            "$.sessions.when_full: ",
        ),
        (
            "sessions_per_identity_zero",
            json!({"version": 1, "rules": [], "sessions": {"per_identity": 0}}),
            "$.sessions.per_identity: 0 is out of range",
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
        (
            "mode_words_are_case_sensitive",
            json!({"version": 1, "mode": "Enforce", "rules": []}),
            "$.mode: \"Enforce\" is not one of enforce, dry_run",
        ),
        (
            "bad_session_binding",
            json!({"version": 1, "rules": [], "sessions": {"binding": "strict"}}),
            "$.sessions.binding: \"strict\" is not one of enforce, off",
        ),
        (
            "bad_dlp_requests_action",
            json!({"version": 1, "rules": [], "dlp": {"requests": "drop"}}),
            "$.dlp.requests: \"drop\" is not one of block, redact, flag, off",
        ),
        (
            "bad_dlp_responses_action",
            json!({"version": 1, "rules": [], "dlp": {"responses": "Off"}}),
            "$.dlp.responses: \"Off\" is not one of block, redact, flag, off",
        ),
        (
            "bad_dlp_detector",
            json!({"version": 1, "rules": [], "dlp": {"detectors": ["secrets", "phi"]}}),
            "$.dlp.detectors[1]: \"phi\" is not one of secrets, pii",
        ),
        (
            "bad_custom_detector_label",
            json!({"version": 1, "rules": [], "dlp": {"custom": [{"id": "a", "pattern": "x", "label": "phi"}]}}),
            "$.dlp.custom[0].label: \"phi\" is not one of secret, pii",
        ),
        (
            "rule_without_target",
            json!({"version": 1, "rules": [{"id": "r", "effect": "allow"}]}),
            "$.rules[0]: a rule needs exactly one of tools, methods, resources, prompts",
        ),
        (
            "rule_with_two_targets",
            json!({"version": 1, "rules": [{"id": "r", "effect": "allow", "tools": ["x"], "methods": ["y"]}]}),
            "$.rules[0]: a rule targets exactly one kind: use one of tools, methods, resources, prompts",
        ),
        (
            "condition_leaf_without_operator",
            rule(json!({"when": {"arg": "/x"}})),
            "$.rules[0].when: a condition leaf needs one operator: eq, ne, in, not_in, lt, lte, gt, gte, matches, prefix, suffix, contains, max_len, exists, path_under, host_in",
        ),
        (
            "time_window_hours_not_a_clock",
            rule(json!({"when": {"all": [{"time": {"hours": "9-17", "utc_offset": "+01:00"}}]}})),
            "$.rules[0].when.all[0].time.hours: \"9-17\" is not HH:MM-HH:MM",
        ),
        (
            "time_window_offset_as_a_zone_name",
            rule(json!({"when": {"time": {"days": ["mon"], "utc_offset": "CET"}}})),
            "$.rules[0].when.time.utc_offset: \"CET\" is not a UTC offset",
        ),
        (
            "time_leaf_beside_an_arg",
            rule(json!({"when": {"time": {"days": ["mon"], "utc_offset": "+00:00"}, "arg": "/x"}})),
            "$.rules[0].when.arg: unknown field",
        ),
        (
            "condition_with_two_combinators",
            rule(json!({"when": {"all": [{"arg": "/x", "exists": true}], "not": {"arg": "/y", "exists": true}}})),
            "$.rules[0].when: a condition has exactly one of all, any, not; found all and not",
        ),
        (
            "rule_without_effect",
            json!({"version": 1, "rules": [{"id": "r", "tools": ["x"]}]}),
            "$.rules[0].effect: required field is missing",
        ),
        (
            "unknown_intent_class",
            rule(json!({"intents": ["dangerous"]})),
            "$.rules[0].intents[0]: unknown intent class \"dangerous\": use read, write, destructive, open-world",
        ),
        (
            "empty_intents_list",
            rule(json!({"intents": []})),
            "$.rules[0].intents: an empty intents list selects nothing",
        ),
        (
            "intents_not_a_list",
            rule(json!({"intents": "destructive"})),
            "$.rules[0].intents:",
        ),
        (
            "intent_listed_twice",
            rule(json!({"intents": ["write", "write"]})),
            "$.rules[0].intents[1]: \"write\" is listed twice",
        ),
        (
            "intents_on_a_methods_rule",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny", "methods": ["tools/call"], "intents": ["destructive"]}]}),
            "$.rules[0].intents: intents select tools: they cannot be combined with methods",
        ),
        (
            "intents_on_a_resources_rule",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny", "resources": ["file:///x"], "intents": ["write"]}]}),
            "$.rules[0].intents: intents select tools: they cannot be combined with resources",
        ),
        (
            "intents_on_a_prompts_rule",
            json!({"version": 1, "rules": [{"id": "r", "effect": "deny", "prompts": ["p"], "intents": ["read"]}]}),
            "$.rules[0].intents: intents select tools: they cannot be combined with prompts",
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
fn intents_alone_select_every_tool_and_with_tools_both_must_match() {
    use crate::catalogue::intents::{Intent, IntentSet};
    let p = compile(&json!({"version": 1, "rules": [
        {"id": "alone", "effect": "deny", "intents": ["destructive"]},
        {"id": "both", "effect": "approve", "tools": ["gh_*"], "intents": ["open-world", "write"]},
        {"id": "plain", "effect": "allow", "tools": ["x"]}
    ]}))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let [alone, both, plain] = &p.rules[..] else {
        panic!("three rules")
    };
    assert_eq!(alone.kind, RuleKind::Tools);
    assert!(alone.matches_name("anything_at_all"));
    assert_eq!(alone.intents, Some(IntentSet::of(&[Intent::Destructive])));
    assert!(both.matches_name("gh_x") && !both.matches_name("x"));
    assert_eq!(
        both.intents,
        Some(IntentSet::of(&[Intent::OpenWorld, Intent::Write]))
    );
    assert_eq!(plain.intents, None);
    assert!(p.selects_intents());
}

/// Every word of every keyword field is read as what it says.
#[test]
fn every_keyword_is_read_as_written() {
    let compiled = |extra: Value| {
        let mut doc = json!({"version": 1, "rules": [
            {"id": "a", "effect": "allow", "tools": ["x"]},
            {"id": "d", "effect": "deny", "methods": ["y"]},
            {"id": "p", "effect": "approve", "resources": ["mem:z"]},
            {"id": "q", "effect": "allow", "prompts": ["w"]}
        ]});
        if let (Some(o), Value::Object(e)) = (doc.as_object_mut(), extra) {
            o.extend(e);
        }
        compile(&doc).unwrap_or_else(|e| panic!("{e:?}"))
    };
    let p = compiled(json!({}));
    let effects: Vec<(Effect, RuleKind)> = p.rules.iter().map(|r| (r.effect, r.kind)).collect();
    assert_eq!(
        effects,
        vec![
            (Effect::Allow, RuleKind::Tools),
            (Effect::Deny, RuleKind::Methods),
            (Effect::Approve, RuleKind::Resources),
            (Effect::Allow, RuleKind::Prompts),
        ]
    );
    assert_eq!(compiled(json!({"mode": "enforce"})).mode, Mode::Enforce);
    assert_eq!(compiled(json!({"mode": "dry_run"})).mode, Mode::DryRun);
    for (word, want) in [
        ("reject", BatchMode::Reject),
        ("evaluate", BatchMode::Evaluate),
    ] {
        let p = compiled(json!({"limits": {"batches": word}}));
        assert_eq!(p.limits.batches, want, "{word}");
    }
    for (word, want) in [("enforce", true), ("off", false)] {
        let p = compiled(json!({"sessions": {"binding": word}}));
        assert_eq!(p.sessions.enforce, want, "{word}");
    }
    use crate::dlp::Action;
    for (word, want) in [
        ("block", Action::Block),
        ("redact", Action::Redact),
        ("flag", Action::Flag),
        ("off", Action::Off),
    ] {
        let p = compiled(json!({"dlp": {"requests": word, "responses": word}}));
        assert_eq!((p.dlp.requests, p.dlp.responses), (want, want), "{word}");
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

/// Istio delivers `pluginConfig` through a protobuf Struct (every number a
/// double) and other encoders print doubles as `100.0` or `1e+06`: the policy
/// must compile to the same thing, with the same hash, in every such form.
#[test]
fn numbers_reencoded_as_doubles_compile_to_the_same_policy_and_hash() {
    let text = |version: &str, bytes: &str, cap: &str| {
        format!(
            r#"{{"version": {version}, "limits": {{"max_request_bytes": {bytes}}},
               "rules": [{{"id": "cap", "effect": "allow", "tools": ["refund"],
                           "when": {{"arg": "/amount", "lte": {cap}}}}}]}}"#
        )
    };
    let written =
        compile_str(text("1", "1048576", "500").as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    let cases = [
        ("trailing_zero_fraction", text("1.0", "1048576.0", "500.0")),
        ("exponent_form", text("1e0", "1.048576e+06", "5e2")),
        ("upper_case_exponent", text("1E0", "1.048576E6", "5.00E2")),
    ];
    for (name, doc) in cases {
        let p = compile_str(doc.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(p.sha256, written.sha256, "{name}: same policy, same hash");
        assert_eq!(p.limits, written.limits, "{name}");
        assert_eq!(p.limits.max_request_bytes, 1_048_576, "{name}");
    }
}

#[test]
fn a_fractional_or_inexact_number_is_still_not_a_whole_number() {
    let cases = [
        ("fraction", "1048576.5"),
        // 2^53 + 2 as a double: no longer names exactly one integer.
        ("beyond_two_to_the_53", "9007199254740994.0"),
    ];
    for (name, bytes) in cases {
        let doc =
            format!(r#"{{"version": 1, "limits": {{"max_request_bytes": {bytes}}}, "rules": []}}"#);
        let errs = match compile_str(doc.as_bytes()) {
            Ok(_) => panic!("{name}: must be refused"),
            Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert!(
            errs.iter()
                .any(|e| e.contains("$.limits.max_request_bytes")),
            "{name}: {errs:?}"
        );
    }
}

#[test]
fn envoy_section_says_whether_request_headers_may_be_held() {
    let with = |envoy: Value| compile(&json!({"version": 1, "rules": [], "envoy": envoy}));
    let held = |r: Result<CompiledPolicy, Vec<ConfigError>>| r.map(|p| p.hold_headers);
    assert_eq!(
        compile(&json!({"version": 1, "rules": []}))
            .map(|p| p.hold_headers)
            .ok(),
        Some(true),
        "absent: held"
    );
    assert_eq!(held(with(json!({}))).ok(), Some(true));
    assert_eq!(
        held(with(json!({"allow_on_headers_stop_iteration": false}))).ok(),
        Some(false)
    );
    assert_eq!(
        held(with(json!({"allow_on_headers_stop_iteration": true}))).ok(),
        Some(true)
    );
    let errs = |v: Value| errors_of(json!({"version": 1, "rules": [], "envoy": v}));
    assert!(errs(json!({"allow_on_headers_stop_iteration": "no"}))
        .iter()
        .any(|e| e.contains("$.envoy.allow_on_headers_stop_iteration")));
    assert!(errs(json!({"allow_on_header_stop_iteration": false}))
        .iter()
        .any(
            |e| e.contains("$.envoy.allow_on_header_stop_iteration") && e.contains("unknown field")
        ));
    assert!(errs(json!(false)).iter().any(|e| e.contains("$.envoy")));
}

#[test]
fn rate_limit_headers_are_off_by_default_and_need_held_headers_and_no_batches() {
    let with = |envoy: Value, limits: Value| json!({"version": 1, "rules": [], "envoy": envoy, "limits": limits});
    let exported = |doc: Value| compile(&doc).map(|p| p.rate_limit_headers).ok();
    assert_eq!(exported(json!({"version": 1, "rules": []})), Some(false));
    assert_eq!(
        exported(with(json!({"rate_limit_headers": true}), json!({}))),
        Some(true)
    );
    assert_eq!(
        exported(with(
            json!({"rate_limit_headers": false}),
            json!({"batches": "evaluate"})
        )),
        Some(false)
    );
    let cases: [(&str, Value, Value, &str); 3] = [
        (
            "headers_let_go_before_the_body",
            json!({"rate_limit_headers": true, "allow_on_headers_stop_iteration": false}),
            json!({}),
            "$.envoy.rate_limit_headers: needs $.envoy.allow_on_headers_stop_iteration true",
        ),
        (
            "batches_evaluated",
            json!({"rate_limit_headers": true}),
            json!({"batches": "evaluate"}),
            "$.envoy.rate_limit_headers: needs $.limits.batches reject",
        ),
        (
            "not_a_boolean",
            json!({"rate_limit_headers": "yes"}),
            json!({}),
            "$.envoy.rate_limit_headers: expected true or false, found a string",
        ),
    ];
    for (name, envoy, limits, want) in cases {
        let errs = errors_of(with(envoy, limits));
        assert!(errs.iter().any(|e| e.starts_with(want)), "{name}: {errs:?}");
    }
}

#[test]
fn result_cap_mistakes_are_named_by_their_path() {
    let with = |limits: Value| json!({"version": 1, "rules": [], "limits": limits});
    let caps = |entries: Value| with(json!({"result_caps": entries}));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "zero_cap_is_refused",
            caps(json!([{"tools": ["fetch"], "max_bytes": 0}])),
            "$.limits.result_caps[0].max_bytes: 0 is out of range 1..=268435456",
        ),
        (
            "negative_cap_is_refused",
            caps(json!([{"tools": ["fetch"], "max_bytes": -1}])),
            "$.limits.result_caps[0].max_bytes: expected a whole number",
        ),
        (
            "fractional_cap_is_refused",
            caps(json!([{"tools": ["fetch"], "max_bytes": 1.5}])),
            "$.limits.result_caps[0].max_bytes: expected a whole number",
        ),
        (
            "cap_above_the_largest_response_is_refused",
            caps(json!([{"tools": ["fetch"], "max_bytes": 268435457}])),
            "$.limits.result_caps[0].max_bytes: 268435457 is out of range",
        ),
        (
            "cap_above_max_response_bytes_never_applies",
            with(json!({"max_response_bytes": 1000, "result_caps": [{"tools": ["fetch"], "max_bytes": 1001}]})),
            "$.limits.result_caps[0].max_bytes: 1001 is above limits.max_response_bytes (1000)",
        ),
        (
            "default_above_max_response_bytes_never_applies",
            with(json!({"max_result_bytes": 9 << 20})),
            "$.limits.max_result_bytes: 9437184 is above limits.max_response_bytes (8388608)",
        ),
        (
            "zero_default_is_refused",
            with(json!({"max_result_bytes": 0})),
            "$.limits.max_result_bytes: 0 is out of range",
        ),
        (
            "pattern_no_tool_name_matches",
            caps(json!([{"tools": ["web/fetch"], "max_bytes": 10}])),
            "$.limits.result_caps[0].tools[0]: \"web/fetch\" never matches",
        ),
        (
            "empty_pattern",
            caps(json!([{"tools": ["fetch", ""], "max_bytes": 10}])),
            "$.limits.result_caps[0].tools[1]: patterns must not be empty strings",
        ),
        (
            "no_patterns",
            caps(json!([{"tools": [], "max_bytes": 10}])),
            "$.limits.result_caps[0].tools: needs at least one pattern",
        ),
        (
            "tools_missing",
            caps(json!([{"max_bytes": 10}])),
            "$.limits.result_caps[0].tools: required field is missing",
        ),
        (
            "max_bytes_missing",
            caps(json!([{"tools": ["fetch"]}])),
            "$.limits.result_caps[0].max_bytes: required field is missing",
        ),
        (
            "unknown_member",
            caps(json!([{"tools": ["fetch"], "max_bytes": 10, "action": "truncate"}])),
            "$.limits.result_caps[0].action: unknown field",
        ),
        (
            "not_an_array",
            caps(json!({"fetch": 10})),
            "$.limits.result_caps: expected an array, found an object",
        ),
        (
            "entry_after_a_catch_all_never_applies",
            caps(json!([{"tools": ["*"], "max_bytes": 10}, {"tools": ["fetch"], "max_bytes": 5}])),
            "$.limits.result_caps[1]: never applies: $.limits.result_caps[0] matches every tool first",
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
fn the_first_matching_result_cap_applies_else_the_default() {
    let p = compile(&json!({"version": 1, "rules": [], "limits": {
        "result_caps": [
            {"tools": ["fetch_page"], "max_bytes": 300},
            {"tools": ["fetch*", "get_?"], "max_bytes": 200},
            {"tools": ["fetch_page", "big"], "max_bytes": 5000}
        ],
        "max_result_bytes": 1000
    }}))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let no_default = compile(&json!({"version": 1, "rules": [], "limits": {
        "result_caps": [{"tools": ["fetch*"], "max_bytes": 64}]
    }}))
    .unwrap_or_else(|e| panic!("{e:?}"));
    type Want = Option<(usize, CapSource)>;
    let cases: Vec<(&str, &CompiledPolicy, &str, Want)> = vec![
        (
            "exact_entry_first",
            &p,
            "fetch_page",
            Some((300, CapSource::Entry(0))),
        ),
        (
            "glob_entry",
            &p,
            "fetch_url",
            Some((200, CapSource::Entry(1))),
        ),
        (
            "question_mark_is_one_character",
            &p,
            "get_x",
            Some((200, CapSource::Entry(1))),
        ),
        (
            "question_mark_is_not_two",
            &p,
            "get_xy",
            Some((1000, CapSource::Default)),
        ),
        (
            "later_entry_when_earlier_ones_miss",
            &p,
            "big",
            Some((5000, CapSource::Entry(2))),
        ),
        (
            "default_when_none_match",
            &p,
            "echo",
            Some((1000, CapSource::Default)),
        ),
        (
            "case_sensitive",
            &p,
            "Fetch_url",
            Some((1000, CapSource::Default)),
        ),
        ("no_default_no_cap", &no_default, "echo", None),
        (
            "no_default_entry_still_caps",
            &no_default,
            "fetch",
            Some((64, CapSource::Entry(0))),
        ),
    ];
    for (name, policy, tool, want) in cases {
        let got = policy
            .limits
            .result_cap(tool)
            .map(|c| (c.max_bytes, c.source));
        assert_eq!(got, want, "{name}");
    }
    // A task's result: the smallest cap anywhere in the policy.
    let strictest = p
        .limits
        .strictest_result_cap()
        .map(|c| (c.max_bytes, c.source));
    assert_eq!(strictest, Some((200, CapSource::Entry(1))));
    assert_eq!(Limits::default().strictest_result_cap(), None);
}
