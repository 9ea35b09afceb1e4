use super::*;
use crate::identity::Via;
use crate::json::sha256_hex;

fn caller(subject: Option<&str>, tenant: Option<&str>) -> Caller {
    Caller {
        subject: subject.map(str::to_owned),
        tenant: tenant.map(str::to_owned),
        roles: vec!["ops".into()],
        via: Via::ApiKey,
    }
}

fn compiled(section: Value) -> Result<ApprovalConfig, Vec<String>> {
    let mut errs = Errors::default();
    match compile(Some(&section), "$.approval", &mut errs) {
        Some(Some(c)) if errs.is_empty() => Ok(c),
        _ => Err(errs.0.iter().map(ToString::to_string).collect()),
    }
}

#[test]
fn binding_of_a_call() {
    let args = json!({"replicas": 3, "name": "web"});
    let b = Binding::of(
        &caller(Some("ops-bot"), Some("acme")),
        "tools/call",
        Some("scale"),
        Some(&args),
        "p".repeat(64).as_str(),
    );
    let want = Binding {
        subject: "ops-bot".into(),
        tenant: "acme".into(),
        tool: "scale".into(),
        args_sha256: sha256_hex(br#"{"name":"web","replicas":3}"#),
        policy_sha256: "p".repeat(64),
    };
    assert_eq!(b, Ok(want));
}

#[test]
fn args_sha256_is_canonical() {
    let cases = [
        (
            "key_order_does_not_matter",
            json!({"a": 1, "b": 2}),
            json!({"b": 2, "a": 1}),
            true,
        ),
        (
            "integral_float_is_the_integer",
            json!({"n": 1}),
            json!({"n": 1.0}),
            true,
        ),
        (
            "other_arguments_other_binding",
            json!({"n": 1}),
            json!({"n": 2}),
            false,
        ),
        (
            "nested_order",
            json!({"o": {"x": 1, "y": [1, 2]}}),
            json!({"o": {"y": [1, 2], "x": 1}}),
            true,
        ),
        (
            "array_order_matters",
            json!({"y": [1, 2]}),
            json!({"y": [2, 1]}),
            false,
        ),
    ];
    for (name, a, b, same) in cases {
        assert_eq!(
            args_sha256(Some(&a)) == args_sha256(Some(&b)),
            same,
            "{name}"
        );
    }
    // Absent and null arguments are the empty object, as for rate limit keys.
    let empty = sha256_hex(b"{}");
    assert_eq!(args_sha256(None), empty);
    assert_eq!(args_sha256(Some(&Value::Null)), empty);
    assert_eq!(args_sha256(Some(&json!({}))), empty);
}

#[test]
fn binding_names_what_is_approved() {
    let c = caller(Some("s"), None);
    let cases = [
        (
            "tool_call_is_its_name",
            "tools/call",
            Some("scale"),
            Ok("scale"),
        ),
        (
            "resource_names_the_method",
            "resources/read",
            Some("file:///x"),
            Ok("resources/read file:///x"),
        ),
        (
            "method_alone",
            "logging/setLevel",
            None,
            Ok("logging/setLevel"),
        ),
    ];
    for (name, method, target, want) in cases {
        let got = Binding::of(&c, method, target, None, "p").map(|b| b.tool);
        assert_eq!(got.as_deref(), want, "{name}");
    }
    assert_eq!(
        Binding::of(&c, "tools/call", Some("x"), None, "p").map(|b| b.tenant),
        Ok(String::new())
    );
    assert!(Binding::of(&caller(None, None), "tools/call", Some("x"), None, "p").is_err());
    assert!(Binding::of(&caller(Some(""), None), "tools/call", Some("x"), None, "p").is_err());
    let long = "t".repeat(MAX_NAME_BYTES + 1);
    assert!(Binding::of(&c, "tools/call", Some(&long), None, "p").is_err());
}

#[test]
fn config_defaults_and_errors() {
    let c = compiled(json!({"cluster": "approvals", "token": "tok"}))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        c,
        ApprovalConfig {
            cluster: "approvals".into(),
            path: DEFAULT_PATH.into(),
            authority: "approvals".into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            mode: ApprovalMode::Hold,
            ttl_ms: None,
            show_arguments: false,
            token: TokenSource::Plain("tok".into()),
        }
    );
    assert_eq!(format!("{:?}", c.token), "Plain(<redacted>)");
    let cases = [
        (
            "needs_a_token",
            json!({"cluster": "a"}),
            "$.approval: needs token or token_env",
        ),
        (
            "not_both_tokens",
            json!({"cluster": "a", "token": "t", "token_env": "E"}),
            "$.approval.token: give token or token_env, not both",
        ),
        (
            "cluster_required",
            json!({"token": "t"}),
            "$.approval.cluster",
        ),
        (
            "unknown_mode",
            json!({"cluster": "a", "token": "t", "mode": "later"}),
            "$.approval.mode",
        ),
        (
            "hold_beyond_the_services_longest_poll",
            json!({"cluster": "a", "token": "t", "timeout_ms": 120001}),
            "$.approval.timeout_ms",
        ),
        (
            "path_must_be_absolute",
            json!({"cluster": "a", "token": "t", "path": "v1"}),
            "$.approval.path: must start with",
        ),
        (
            "token_with_newline",
            json!({"cluster": "a", "token": "t\r\nx: y"}),
            "$.approval.token: must not contain",
        ),
        (
            "unknown_member",
            json!({"cluster": "a", "token": "t", "tokens": "t"}),
            "$.approval.tokens",
        ),
        (
            "ttl_zero",
            json!({"cluster": "a", "token": "t", "ttl_ms": 0}),
            "$.approval.ttl_ms",
        ),
    ];
    for (name, section, want) in cases {
        let errs = compiled(section).err().unwrap_or_default();
        assert!(errs.iter().any(|e| e.starts_with(want)), "{name}: {errs:?}");
    }
    let c = compiled(json!({"cluster": "a", "token_env": "MCPFW_TEST_UNSET_TOKEN", "mode": "async", "ttl_ms": 60000, "show_arguments": true}))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        (c.mode, c.ttl_ms, c.show_arguments),
        (ApprovalMode::Async, Some(60000), true)
    );
    assert_eq!(c.token.resolve(), None, "an unset variable is no token");
    assert_eq!(callout_timeout_ms(&c), DEFAULT_TIMEOUT_MS);
}

#[test]
fn request_body_per_mode() {
    let ask = Ask {
        rule: RuleId::policy("scale"),
        binding: Binding::of(
            &caller(Some("s"), Some("t")),
            "tools/call",
            Some("scale"),
            None,
            "p",
        )
        .unwrap_or_else(|e| panic!("{e}")),
        id: json!(1),
        method: "tools/call".into(),
        target: Some("scale".into()),
        arguments: None,
        findings: vec![("email".into(), "/to".into())],
    };
    let mut cfg =
        compiled(json!({"cluster": "a", "token": "t", "timeout_ms": 3000, "ttl_ms": 9000}))
            .unwrap_or_else(|e| panic!("{e:?}"));
    let body: Value = serde_json::from_slice(&ask.request_body(&cfg)).unwrap_or_default();
    assert_eq!(
        body,
        json!({"binding": {"subject": "s", "tenant": "t", "tool": "scale", "args_sha256": sha256_hex(b"{}"), "policy_sha256": "p"},
               "rule": "scale", "consume": false, "wait_ms": 3000, "ttl_ms": 9000,
               "summary": {"method": "tools/call", "target": "scale", "findings": [{"kind": "email", "path": "/to"}]}})
    );
    assert_eq!(
        callout_timeout_ms(&cfg),
        4000,
        "a hold's callout outlives its long poll"
    );
    cfg.mode = ApprovalMode::Async;
    let body: Value = serde_json::from_slice(&ask.request_body(&cfg)).unwrap_or_default();
    assert_eq!(body.get("wait_ms"), None, "async never waits");
    assert_eq!(body["consume"], json!(true), "async uses at once");
    assert_eq!(use_path(&cfg, ID), format!("/v1/approvals/{ID}/use"));
    assert_eq!(
        serde_json::from_slice::<Value>(&ask.binding.use_body()).unwrap_or_default(),
        json!({"binding": ask.binding.to_json()})
    );
}

const ID: &str = "apr_0123456789abcdef0123456789abcdef";

fn answer(state: &str, consumed: Value) -> Vec<u8> {
    json!({"approval_id": ID, "state": state, "consumed": consumed, "rule": "scale",
           "created_at_ms": 1, "expires_at_ms": 2, "decided_by": "alice", "decided_at_ms": 2,
           "reason": "ok\nfine", "used_at_ms": null})
    .to_string()
    .into_bytes()
}

#[test]
fn reading_answers() {
    let unavailable = |a: &Answer| matches!(a, Answer::Unavailable(_));
    let refused = |state: &str| {
        let state = state.to_owned();
        move |a: &Answer| matches!(a, Answer::Refused { state: s, .. } if *s == state)
    };
    let used = |a: &Answer| {
        *a == Answer::Used {
            approval_id: ID.into(),
            decided_by: Some("alice".into()),
            reason: Some("okfine".into()),
        }
    };
    let approved = |a: &Answer| {
        *a == Answer::Approved {
            approval_id: ID.into(),
            decided_by: Some("alice".into()),
            reason: Some("okfine".into()),
        }
    };
    type Check = Box<dyn Fn(&Answer) -> bool>;
    type Case = (&'static str, Option<u16>, Option<Vec<u8>>, Check);
    let cases: Vec<Case> = vec![
        ("consumed_is_used", Some(200), Some(answer("used", json!(true))), Box::new(used)),
        ("created_and_consumed", Some(201), Some(answer("used", json!(true))), Box::new(used)),
        ("pending", Some(201), Some(answer("pending", json!(false))), Box::new(refused("pending"))),
        ("denied", Some(200), Some(answer("denied", json!(false))), Box::new(refused("denied"))),
        ("expired", Some(200), Some(answer("expired", json!(false))), Box::new(refused("expired"))),
        ("replayed_used_answer_is_not_consumed", Some(200), Some(answer("used", json!(false))), Box::new(refused("used"))),
        ("approved_and_not_used_yet", Some(200), Some(answer("approved", json!(false))), Box::new(approved)),
        ("consumed_with_another_state", Some(200), Some(answer("approved", json!(true))), Box::new(unavailable)),
        ("consumed_not_a_bool", Some(200), Some(answer("used", json!("true"))), Box::new(unavailable)),
        ("http_500", Some(500), Some(answer("used", json!(true))), Box::new(unavailable)),
        ("http_401", Some(401), Some(br#"{"error":"unauthenticated"}"#.to_vec()), Box::new(unavailable)),
        ("timeout_504", Some(504), None, Box::new(unavailable)),
        ("no_answer", None, None, Box::new(unavailable)),
        ("garbage", Some(200), Some(b"<html>ok</html>".to_vec()), Box::new(unavailable)),
        ("empty_body", Some(200), None, Box::new(unavailable)),
        ("unknown_state", Some(200), Some(br#"{"approval_id":"apr_0123456789abcdef0123456789abcdef","state":"yes","consumed":true}"#.to_vec()), Box::new(unavailable)),
        ("forged_id_shape", Some(200), Some(br#"{"approval_id":"apr_x","state":"used","consumed":true}"#.to_vec()), Box::new(unavailable)),
        ("array", Some(200), Some(b"[]".to_vec()), Box::new(unavailable)),
        (
            "consumed_twice_last_one_true",
            Some(200),
            Some(br#"{"approval_id":"apr_0123456789abcdef0123456789abcdef","state":"used","consumed":false,"consumed":true}"#.to_vec()),
            Box::new(unavailable),
        ),
    ];
    for (name, status, body, check) in cases {
        let got = read_answer(status, body.as_deref());
        assert!(check(&got), "{name}: {got:?}");
    }
}

#[test]
fn reading_the_answer_to_a_use() {
    let used =
        br#"{"approval_id":"apr_0123456789abcdef0123456789abcdef","state":"used","consumed":true}"#;
    let used_other =
        br#"{"approval_id":"apr_ffffffffffffffffffffffffffffffff","state":"used","consumed":true}"#;
    let refused = |state: &'static str| move |a: &Answer| matches!(a, Answer::Refused { state: s, approval_id, .. } if s == state && approval_id == ID);
    let approved = answer("approved", json!(false));
    type Check = Box<dyn Fn(&Answer) -> bool>;
    type Case<'a> = (&'a str, Option<u16>, Option<&'a [u8]>, Check);
    let cases: Vec<Case> = vec![
        ("this_approval_used", Some(200), Some(used), Box::new(|a| matches!(a, Answer::Used { approval_id, .. } if approval_id == ID))),
        ("another_approval_used_is_no_release", Some(200), Some(used_other), Box::new(|a| matches!(a, Answer::Unavailable(_)))),
        ("used_already", Some(409), Some(br#"{"approval_id":"x","state":"used","consumed":false,"error":"approval is used"}"#), Box::new(refused("used"))),
        ("expired_meanwhile", Some(409), Some(br#"{"state":"expired","consumed":false}"#), Box::new(refused("expired"))),
        ("for_another_call", Some(409), Some(br#"{"consumed":false,"error":"approval is for another call"}"#), Box::new(|a| matches!(a, Answer::Unavailable(_)))),
        ("approved_answer_is_no_use", Some(200), Some(&approved), Box::new(|a| matches!(a, Answer::Unavailable(_)))),
        ("unknown_id", Some(404), Some(br#"{"error":"unknown approval id"}"#), Box::new(|a| matches!(a, Answer::Unavailable(_)))),
        ("no_answer", None, None, Box::new(|a| matches!(a, Answer::Unavailable(_)))),
    ];
    for (name, status, body, check) in cases {
        let got = read_use_answer(status, body, ID);
        assert!(check(&got), "{name}: {got:?}");
    }
}

#[test]
fn approval_ids_are_well_formed() {
    assert!(well_formed_id(ID));
    for bad in [
        "",
        "apr_",
        "apr_0123456789ABCDEF0123456789abcdef",
        "xyz_0123456789abcdef0123456789abcdef",
        "apr_0123456789abcdef0123456789abcde",
    ] {
        assert!(!well_formed_id(bad), "{bad}");
    }
}
