use super::*;
use crate::identity::Via;
use serde_json::json;

fn compile_meters(doc: Value) -> Result<MeterPolicy, Vec<String>> {
    let mut errs = Errors::default();
    let m = compile(doc.get("rate_limits"), doc.get("budgets"), &mut errs);
    match errs.is_empty() {
        true => Ok(m),
        false => Err(errs.0.iter().map(ToString::to_string).collect()),
    }
}

#[test]
fn bad_meters_are_refused_at_their_path() {
    let rl = |extra: Value| {
        let mut r = json!({"id": "r", "key": ["subject"], "tools": ["*"], "capacity": 5, "per_seconds": 60});
        if let (Some(o), Value::Object(e)) = (r.as_object_mut(), extra) {
            o.extend(e);
        }
        json!({"rate_limits": [r]})
    };
    let cases = [
        (
            "zero_capacity",
            rl(json!({"capacity": 0})),
            "$.rate_limits[0].capacity: 0 is out of range",
        ),
        (
            "negative_capacity",
            rl(json!({"capacity": -1})),
            "$.rate_limits[0].capacity: expected a whole number",
        ),
        (
            "period_over_a_year",
            rl(json!({"per_seconds": 366 * 86_400 + 1})),
            "$.rate_limits[0].per_seconds",
        ),
        (
            "unknown_key_part",
            rl(json!({"key": ["subject", "ip"]})),
            "$.rate_limits[0].key[1]: \"ip\" is not one of",
        ),
        (
            "key_part_twice",
            rl(json!({"key": ["tool", "tool"]})),
            "$.rate_limits[0].key[1]: \"tool\" is listed twice",
        ),
        (
            "empty_key",
            rl(json!({"key": []})),
            "$.rate_limits[0].key: needs at least one part",
        ),
        (
            "global_with_others",
            rl(json!({"key": ["global", "tool"]})),
            "$.rate_limits[0].key: \"global\" stands alone",
        ),
        (
            "raw_header_key",
            rl(json!({"key": ["header:x-user"]})),
            "$.rate_limits[0].key[0]",
        ),
        (
            "unknown_field",
            rl(json!({"burst": 3})),
            "$.rate_limits[0].burst: unknown field",
        ),
        (
            "no_target",
            json!({"rate_limits": [{"id": "r", "key": ["global"], "capacity": 1, "per_seconds": 1}]}),
            "$.rate_limits[0]: a rule needs exactly one of",
        ),
        (
            "built_in_id",
            rl(json!({"id": "rate-limit-unavailable"})),
            "$.rate_limits[0].id: \"rate-limit-unavailable\" is reserved",
        ),
        (
            "not_an_array",
            json!({"rate_limits": {}}),
            "$.rate_limits: expected an array",
        ),
        (
            "budget_per_tool",
            json!({"budgets": [{"id": "b", "key": ["subject", "tool"], "tools": ["*"], "period": "day", "limit": 5}]}),
            "$.budgets[0].key[1]: \"tool\" is not a key of this meter",
        ),
        (
            "budget_period_week",
            json!({"budgets": [{"id": "b", "key": ["tenant"], "tools": ["*"], "period": "week", "limit": 5}]}),
            "$.budgets[0].period: \"week\" is not one of day, month",
        ),
        (
            "budget_cost_of_no_tool_name",
            json!({"budgets": [{"id": "b", "key": ["tenant"], "tools": ["*"], "period": "day", "limit": 5, "costs": {"a b": 1}}]}),
            "$.budgets[0].costs.a b",
        ),
        (
            "budget_negative_cost",
            json!({"budgets": [{"id": "b", "key": ["tenant"], "tools": ["*"], "period": "day", "limit": 5, "costs": {"refund": -3}}]}),
            "$.budgets[0].costs.refund: expected a whole number",
        ),
    ];
    for (name, doc, want) in cases {
        match compile_meters(doc) {
            Ok(_) => panic!("{name}: compiled"),
            Err(errs) => assert!(errs.iter().any(|e| e.starts_with(want)), "{name}: {errs:?}"),
        }
    }
}

fn caller(subject: &str, roles: &[&str]) -> Caller {
    Caller {
        subject: Some(subject.into()),
        tenant: Some("acme".into()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        via: Via::ApiKey,
    }
}

fn charges_of(
    meters: &MeterPolicy,
    who: &Caller,
    conversation: Option<&str>,
    msg: Value,
) -> Vec<Charge> {
    let Ok(crate::jsonrpc::Body::Single(m)) =
        crate::jsonrpc::parse_body(msg.to_string().as_bytes(), 64)
    else {
        panic!("a message")
    };
    let Ok(call) = crate::decide::call_of(&m) else {
        panic!("a call")
    };
    let mut out = Vec::new();
    charges(meters, who, Conversation(conversation), &call, 0, &mut out);
    out
}

/// The name of the first meter a `tools/call` with `params` consumes.
fn first_meter_name(meters: &MeterPolicy, who: &Caller, params: Value) -> Vec<u8> {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    charges_of(meters, who, None, msg)
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn call(tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

#[test]
fn meters_select_like_rules_and_key_by_their_parts() {
    let meters = match compile_meters(json!({
        "rate_limits": [
            {"id": "per-agent-tool", "key": ["subject", "tool"], "tools": ["*"], "capacity": 60, "per_seconds": 300},
            {"id": "refund-loop", "key": ["subject", "tool", "arguments"], "tools": ["create_refund"], "capacity": 3, "per_seconds": 60},
            {"id": "finance-only", "key": ["global"], "roles": ["finance"], "tools": ["create_*"], "capacity": 10, "per_seconds": 60},
            {"id": "per-conversation", "key": ["session"], "methods": ["tools/call"], "capacity": 100, "per_seconds": 60}
        ],
        "budgets": [
            {"id": "daily", "key": ["tenant"], "tools": ["*"], "period": "day", "limit": 1000,
             "costs": {"create_refund": 10}, "expose_remaining": true}
        ]
    })) {
        Ok(m) => m,
        Err(e) => panic!("{e:?}"),
    };
    let ana = caller("ana", &["finance"]);
    let bob = caller("bob", &[]);
    let refund = |amount: i64| {
        call(
            "create_refund",
            json!({"amount": amount, "currency": "usd"}),
        )
    };
    let ids = |cs: &[Charge]| {
        cs.iter()
            .map(|c| c.rule.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let digest_of = |cs: &[Charge], id: &str| {
        cs.iter()
            .find(|c| c.rule.as_str() == id)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    };

    let a = charges_of(&meters, &ana, Some("s1"), refund(10));
    assert_eq!(
        ids(&a),
        [
            "per-agent-tool",
            "refund-loop",
            "finance-only",
            "per-conversation",
            "daily"
        ]
    );
    assert_eq!(
        a.iter()
            .find(|c| c.rule.as_str() == "daily")
            .map(|c| c.meter),
        Some(Meter::Budget {
            limit: 1000,
            cost: 10,
            period: Period::Day,
            expose_remaining: true
        })
    );
    // Roles select: bob is no finance caller.
    assert!(!ids(&charges_of(&meters, &bob, None, refund(10))).contains(&"finance-only".to_owned()));
    // (name, other call, meter, same key?)
    let cases = [
        (
            "same_call_same_loop_key",
            charges_of(&meters, &ana, Some("s1"), refund(10)),
            "refund-loop",
            true,
        ),
        (
            "other_arguments_other_loop_key",
            charges_of(&meters, &ana, Some("s1"), refund(11)),
            "refund-loop",
            false,
        ),
        (
            "member_order_does_not_matter",
            charges_of(
                &meters,
                &ana,
                Some("s1"),
                call("create_refund", json!({"currency": "usd", "amount": 10})),
            ),
            "refund-loop",
            true,
        ),
        (
            "other_subject_other_key",
            charges_of(&meters, &bob, Some("s1"), refund(10)),
            "per-agent-tool",
            false,
        ),
        (
            "other_conversation_other_key",
            charges_of(&meters, &ana, Some("s2"), refund(10)),
            "per-conversation",
            false,
        ),
        (
            "same_tenant_same_budget",
            charges_of(&meters, &bob, None, refund(3)),
            "daily",
            true,
        ),
        (
            "global_is_one_meter",
            charges_of(&meters, &caller("cy", &["finance"]), None, refund(1)),
            "finance-only",
            true,
        ),
    ];
    for (name, other, meter, same) in cases {
        assert_eq!(
            digest_of(&a, meter) == digest_of(&other, meter),
            same,
            "{name}"
        );
        assert!(!digest_of(&other, meter).is_empty(), "{name}");
    }
    // A default cost for tools without one; no charge for a list.
    let echo = charges_of(&meters, &ana, None, call("echo", json!({})));
    assert!(echo
        .iter()
        .any(|c| matches!(c.meter, Meter::Budget { cost: 1, .. })));
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert!(charges_of(&meters, &ana, None, list).is_empty());
}

/// An anonymous caller and a key whose subject is "" are two callers; a
/// tenant "" is not the absence of one (a helper's attack in a real Envoy:
/// an anonymous call emptied the ""-subject key's bucket).
#[test]
fn an_absent_subject_or_tenant_is_not_an_empty_one() {
    let meters = match compile_meters(json!({"rate_limits": [
        {"id": "per-subject", "key": ["subject"], "tools": ["*"], "capacity": 1, "per_seconds": 60},
        {"id": "per-tenant", "key": ["tenant"], "tools": ["*"], "capacity": 1, "per_seconds": 60}
    ]})) {
        Ok(m) => m,
        Err(e) => panic!("{e:?}"),
    };
    let who = |subject: Option<&str>, tenant: Option<&str>| Caller {
        subject: subject.map(str::to_owned),
        tenant: tenant.map(str::to_owned),
        roles: Vec::new(),
        via: Via::ApiKey,
    };
    let name = |c: &Caller, meter: &str| {
        charges_of(&meters, c, None, call("echo", json!({})))
            .into_iter()
            .find(|ch| ch.rule.as_str() == meter)
            .map(|ch| ch.name)
            .unwrap_or_default()
    };
    // (case, one caller, the other, the meter, whether they share it)
    let cases = [
        (
            "absent_and_empty_subject",
            who(None, None),
            who(Some(""), None),
            "per-subject",
            false,
        ),
        (
            "absent_and_empty_tenant",
            who(Some("a"), None),
            who(Some("a"), Some("")),
            "per-tenant",
            false,
        ),
        (
            "two_anonymous_callers",
            who(None, None),
            who(None, None),
            "per-subject",
            true,
        ),
        (
            "one_subject_twice",
            who(Some(""), Some("t")),
            who(Some(""), Some("u")),
            "per-subject",
            true,
        ),
    ];
    for (case, one, other, meter, shared) in cases {
        let (a, b) = (name(&one, meter), name(&other, meter));
        assert!(!a.is_empty() && !b.is_empty(), "{case}");
        assert_eq!(a == b, shared, "{case}");
    }
}

#[test]
fn keys_hold_no_caller_text() {
    let Ok(meters) = compile_meters(json!({"rate_limits": [
        {"id": "r", "key": ["subject", "tool", "arguments"], "tools": ["*"], "capacity": 1, "per_seconds": 1}
    ]})) else {
        panic!("compiles")
    };
    let secret = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let cs = charges_of(
        &meters,
        &caller(secret, &[]),
        Some(secret),
        call("t", json!({"token": secret})),
    );
    let [c] = cs.as_slice() else {
        panic!("one charge")
    };
    // The name holds the key's values; the table keeps only its keyed hash.
    let store = crate::store::MemoryStore::new();
    let slots = 64;
    assert!(crate::meter::table::consume(&store, slots, &cs, 0, || 7).is_ok());
    let kept: Vec<u8> = (0..slots / 4)
        .filter_map(|set| {
            crate::store::SharedStore::get(&store, &format!("mcp_firewall/meter2/{slots}/{set}"))
                .ok()
                .and_then(|(v, _)| v)
        })
        .flatten()
        .collect();
    assert_eq!(kept.len(), 40, "one entry: digest and three numbers");
    assert!(!kept.windows(3).any(|w| w == b"ghp"), "{kept:?}");
    let _ = c;
}

#[test]
fn a_meter_changing_kind_or_period_under_one_id_starts_new_entries() {
    let rl = json!({"rate_limits": [{"id": "m", "key": ["subject"], "tools": ["*"], "capacity": 5, "per_seconds": 60}]});
    let day = json!({"budgets": [{"id": "m", "key": ["subject"], "tools": ["*"], "period": "day", "limit": 5}]});
    let month = json!({"budgets": [{"id": "m", "key": ["subject"], "tools": ["*"], "period": "month", "limit": 5}]});
    let ana = caller("ana", &[]);
    let digests: Vec<Vec<u8>> = [rl, day, month]
        .into_iter()
        .map(|doc| {
            let Ok(m) = compile_meters(doc) else {
                panic!("compiles")
            };
            charges_of(&m, &ana, None, call("echo", json!({})))
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_ne!(digests[0], digests[1]);
    assert_ne!(digests[1], digests[2]);
    assert_ne!(digests[0], digests[2]);
}

#[test]
fn the_loop_breaker_reads_only_the_arguments_as_the_server_does() {
    let Ok(meters) = compile_meters(json!({"rate_limits": [
        {"id": "loop", "key": ["subject", "tool", "arguments"], "tools": ["*"], "capacity": 3, "per_seconds": 60}
    ]})) else {
        panic!("compiles")
    };
    let ana = caller("ana", &[]);
    let digest = |params: Value| first_meter_name(&meters, &ana, params);
    // (name, params, same loop key as `{"name": "t", "arguments": {}}`)
    let cases = [
        ("absent_arguments", json!({"name": "t"}), true),
        (
            "null_arguments",
            json!({"name": "t", "arguments": null}),
            true,
        ),
        (
            "a_fresh_progress_token_each_call",
            json!({"name": "t", "_meta": {"progressToken": 91}}),
            true,
        ),
        (
            "other_arguments",
            json!({"name": "t", "arguments": {"a": 1}}),
            false,
        ),
    ];
    let empty = digest(json!({"name": "t", "arguments": {}}));
    for (name, params, same) in cases {
        assert_eq!(digest(params) == empty, same, "{name}");
    }
    assert_eq!(
        digest(json!({"name": "t", "arguments": {"n": 1}})),
        digest(json!({"name": "t", "arguments": {"n": 1.0}})),
        "a whole-number float is the integer"
    );
}

#[test]
fn arguments_share_a_loop_meter_exactly_when_they_are_the_same_data() {
    let Ok(meters) = compile_meters(json!({"rate_limits": [
        {"id": "loop", "key": ["subject", "tool", "arguments", "method"], "tools": ["*"], "capacity": 3, "per_seconds": 60}
    ]})) else {
        panic!("compiles")
    };
    let ana = caller("ana", &[]);
    let name = |arguments: Value| {
        first_meter_name(&meters, &ana, json!({"name": "t", "arguments": arguments}))
    };
    let long = "x".repeat(4096);
    // (case, two arguments, one meter)
    let cases = [
        (
            "members_in_another_order",
            json!({"a": 1, "b": "x"}),
            json!({"b": "x", "a": 1}),
            true,
        ),
        (
            "a_whole_double_is_the_integer",
            json!({"n": [100.0, -0.0]}),
            json!({"n": [100, 0]}),
            true,
        ),
        (
            "an_escape_is_the_character",
            serde_json::from_str(r#"{"s":"\u0041\n"}"#).unwrap_or(Value::Null),
            json!({"s": "A\n"}),
            true,
        ),
        (
            "a_string_is_not_the_number",
            json!({"n": "1"}),
            json!({"n": 1}),
            false,
        ),
        (
            "one_string_is_not_two",
            json!({"s": ["ab"]}),
            json!({"s": ["a", "b"]}),
            false,
        ),
        (
            "a_name_does_not_run_into_its_value",
            json!({"ab": ""}),
            json!({"a": "b"}),
            false,
        ),
        (
            "nesting_is_kept",
            json!({"a": [[1], 2]}),
            json!({"a": [[1, 2]]}),
            false,
        ),
        (
            "null_is_not_empty",
            json!({"a": null}),
            json!({"a": {}}),
            false,
        ),
        (
            "false_is_not_zero",
            json!({"a": false}),
            json!({"a": 0}),
            false,
        ),
        (
            "a_fraction_stays_a_fraction",
            json!({"n": 1.5}),
            json!({"n": 1}),
            false,
        ),
        (
            "the_same_text_with_a_key_after_it",
            json!({"a": "x\u{1}"}),
            json!({"a": "x"}),
            false,
        ),
        (
            "a_huge_integer_is_the_double_it_reads_as",
            json!({"n": [100_000_000_000_000_000_u64, 4_611_686_018_427_387_905_u64]}),
            serde_json::from_str(r#"{"n":[1e17,4.611686018427388e18]}"#).unwrap_or(Value::Null),
            true,
        ),
        (
            "2_53_plus_one_is_the_double_2_53",
            json!({"n": 9_007_199_254_740_993_u64}),
            json!({"n": 9_007_199_254_740_992_u64}),
            true,
        ),
        (
            "2_53_as_a_double_is_the_integer",
            serde_json::from_str(r#"{"n":9007199254740992.0}"#).unwrap_or(Value::Null),
            json!({"n": 9_007_199_254_740_992_u64}),
            true,
        ),
        (
            "an_integer_below_2_53_stays_exact",
            json!({"n": 9_007_199_254_740_991_u64}),
            json!({"n": 9_007_199_254_740_992_u64}),
            false,
        ),
        // Past 64 bytes the data is digested: the same rules hold.
        (
            "long_members_in_another_order",
            json!({"a": 1, "text": long.clone()}),
            json!({"text": long.clone(), "a": 1.0}),
            true,
        ),
        (
            "long_text_differing_in_its_last_byte",
            json!({"text": long.clone()}),
            json!({"text": format!("{}y", &long[..long.len() - 1])}),
            false,
        ),
        (
            "long_text_is_not_the_short_data_it_digests_to",
            json!({"text": long.clone()}),
            json!({"text": "h"}),
            false,
        ),
    ];
    for (case, a, b, same) in cases {
        let (x, y) = (name(a), name(b));
        assert!(!x.is_empty(), "{case}");
        assert_eq!(x == y, same, "{case}");
    }
}

#[test]
fn the_room_made_for_arguments_holds_what_is_written() {
    let long = "x".repeat(5000);
    for (name, v) in [
        ("empty object", json!({})),
        ("short string", json!({"a": "b"})),
        ("long string", json!({"message": long})),
        ("longest double", json!({"n": -2.2250738585072014e-308})),
        ("large integers", json!([u64::MAX, i64::MIN, 1e300, -0.0])),
        (
            "nested",
            json!({"a": [null, true, {"b": [1.5, "c", {}]}], "é": "ü"}),
        ),
    ] {
        let mut out = Vec::new();
        write_data(&v, &mut out);
        assert!(
            data_len_bound(&v) >= out.len(),
            "{name}: {} < {}",
            data_len_bound(&v),
            out.len()
        );
        assert!(arguments_room(&v) <= data_len_bound(&v), "{name}");
    }
    // Many short numbers: the bound is ~12 times what is written; the room
    // made ahead stays capped (thirty-sixth review).
    let zeros = json!({"n": vec![0; 520_000]});
    assert!(data_len_bound(&zeros) > 18_000_000);
    assert_eq!(arguments_room(&zeros), ARGUMENTS_ROOM_MAX);
}
