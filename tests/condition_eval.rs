//! Evaluation of `when` conditions: one named test per behaviour, fail-closed
//! cases included. `T`/`F`/`E` are the expected outcome (true, false, error).

use mcp_firewall::condition::{compile, CondInput, Condition, Outcome};
use mcp_firewall::config::Errors;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    T,
    F,
    E,
}
use Want::{E, F, T};

fn parse(text: &str) -> Value {
    let parsed = serde_json::from_str(text);
    assert!(parsed.is_ok(), "test fixture is not JSON: {text}");
    parsed.unwrap_or(Value::Null)
}

fn compiled(when: &str) -> Option<Condition> {
    let mut errs = Errors::default();
    let c = compile(&parse(when), "$.when", &mut errs);
    assert!(errs.is_empty(), "{when}: {:?}", errs.0);
    assert!(c.is_some(), "{when}: no condition and no error");
    c
}

fn kind(o: &Outcome) -> Want {
    match o {
        Outcome::True => T,
        Outcome::False => F,
        Outcome::Error(_) => E,
    }
}

/// Evaluates `when` against `params` (whose `arguments` member, if any, is
/// what `arg` pointers address) and checks that `explain` agrees with `eval`.
fn check_params((when, params): (&str, &str), want: Want) {
    let Some(cond) = compiled(when) else {
        return; // compiled() has failed the test already
    };
    let params = parse(params);
    let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
    let input = CondInput {
        arguments: &arguments,
        params: &params,
        now_ms: 0,
    };
    let outcome = cond.eval(&input);
    let (explained, line) = cond.explain(&input);
    assert_eq!(
        kind(&outcome),
        want,
        "{when} on {params}: {outcome:?} ({line})"
    );
    assert_eq!(outcome, explained, "eval and explain disagree: {line}");
}

fn check((when, arguments): (&str, &str), want: Want) {
    let params = if arguments == "absent" {
        "{}".to_owned()
    } else {
        format!(r#"{{"arguments": {arguments}}}"#)
    };
    check_params((when, &params), want)
}

macro_rules! table {
    ($check:ident { $($name:ident: $input:expr => $want:expr;)* }) => {
        $( #[test] fn $name() { $check($input, $want) } )*
    };
}

const CAP: &str = r#"{"arg": "/amount", "lte": 500}"#;

table!(check {
    // Numbers compare as numbers; strings never stand in for numbers.
    lte_allows_amount_under_cap: (CAP, r#"{"amount": 200}"#) => T;
    lte_allows_amount_at_cap: (CAP, r#"{"amount": 500}"#) => T;
    lte_refuses_amount_over_cap: (CAP, r#"{"amount": 1000}"#) => F;
    lte_allows_float_equal_to_integer_cap: (CAP, r#"{"amount": 500.0}"#) => T;
    lte_refuses_float_just_over_cap: (CAP, r#"{"amount": 500.01}"#) => F;
    lte_refuses_amount_sent_as_string_over_cap: (CAP, r#"{"amount": "1000"}"#) => E;
    lte_errors_on_amount_sent_as_string_under_cap: (CAP, r#"{"amount": "100"}"#) => E;
    lte_errors_on_exponent_string: (CAP, r#"{"amount": "1e3"}"#) => E;
    lte_errors_on_padded_number_string: (CAP, r#"{"amount": " 1000"}"#) => E;
    lte_errors_on_underscored_number_string: (CAP, r#"{"amount": "1_000"}"#) => E;
    lte_errors_on_hex_number_string: (CAP, r#"{"amount": "0x3e8"}"#) => E;
    lte_errors_on_boolean: (CAP, r#"{"amount": true}"#) => E;
    lte_errors_on_null: (CAP, r#"{"amount": null}"#) => E;
    lte_errors_on_array_of_number: (CAP, r#"{"amount": [1]}"#) => E;
    lte_accepts_negative_amount: (CAP, r#"{"amount": -5}"#) => T;
    lt_compares_big_integers_exactly: (r#"{"arg": "/n", "lt": 9007199254740993}"#, r#"{"n": 9007199254740992}"#) => T;
    lt_compares_huge_integer_with_float_exactly: (r#"{"arg": "/n", "lt": 18446744073709551615}"#, r#"{"n": 1.8446744073709552e19}"#) => F;
    gt_holds_for_larger_value: (r#"{"arg": "/n", "gt": -2}"#, r#"{"n": -1}"#) => T;
    gt_refuses_equal_value: (r#"{"arg": "/n", "gt": 3}"#, r#"{"n": 3.0}"#) => F;
    gte_accepts_equal_value: (r#"{"arg": "/n", "gte": 0.5}"#, r#"{"n": 0.5}"#) => T;
    gte_refuses_smaller_value: (r#"{"arg": "/n", "gte": 1}"#, r#"{"n": 0.999}"#) => F;
    lt_refuses_negative_zero_below_zero: (r#"{"arg": "/n", "lt": 0}"#, r#"{"n": -0.0}"#) => F;

    // eq / ne / in / not_in: same JSON type required, numbers by value.
    eq_compares_numbers_numerically: (r#"{"arg": "/n", "eq": 1}"#, r#"{"n": 1.0}"#) => T;
    eq_holds_for_true: (r#"{"arg": "/public", "eq": true}"#, r#"{"public": true}"#) => T;
    eq_fails_for_false: (r#"{"arg": "/public", "eq": true}"#, r#"{"public": false}"#) => F;
    eq_errors_on_string_true: (r#"{"arg": "/public", "eq": true}"#, r#"{"public": "true"}"#) => E;
    eq_errors_on_number_for_string: (r#"{"arg": "/n", "eq": "5"}"#, r#"{"n": 5}"#) => E;
    eq_is_case_sensitive: (r#"{"arg": "/c", "eq": "usd"}"#, r#"{"c": "USD"}"#) => F;
    eq_does_not_normalise_unicode: (r#"{"arg": "/c", "eq": "é"}"#, "{\"c\": \"e\u{0301}\"}") => F;
    eq_compares_arrays_numerically: (r#"{"arg": "/a", "eq": [1, 2]}"#, r#"{"a": [1.0, 2]}"#) => T;
    eq_compares_objects_by_members: (r#"{"arg": "/o", "eq": {"k": 1}}"#, r#"{"o": {"k": 1, "x": 2}}"#) => F;
    eq_null_holds_for_null: (r#"{"arg": "/n", "eq": null}"#, r#"{"n": null}"#) => T;
    ne_fails_for_equal_value: (r#"{"arg": "/env", "ne": "prod"}"#, r#"{"env": "prod"}"#) => F;
    ne_holds_for_other_value: (r#"{"arg": "/env", "ne": "prod"}"#, r#"{"env": "dev"}"#) => T;
    ne_errors_on_other_type: (r#"{"arg": "/env", "ne": "prod"}"#, r#"{"env": ["prod"]}"#) => E;
    in_holds_for_listed_value: (r#"{"arg": "/c", "in": ["usd", "eur"]}"#, r#"{"c": "eur"}"#) => T;
    in_fails_for_unlisted_value: (r#"{"arg": "/c", "in": ["usd", "eur"]}"#, r#"{"c": "gbp"}"#) => F;
    in_is_case_sensitive: (r#"{"arg": "/c", "in": ["usd", "eur"]}"#, r#"{"c": "EUR"}"#) => F;
    in_errors_on_type_not_listed: (r#"{"arg": "/c", "in": ["usd", "eur"]}"#, r#"{"c": 1}"#) => E;
    in_mixed_list_compares_numbers_numerically: (r#"{"arg": "/c", "in": ["a", 2]}"#, r#"{"c": 2.0}"#) => T;
    not_in_fails_for_listed_value: (r#"{"arg": "/c", "not_in": ["root", "admin"]}"#, r#"{"c": "root"}"#) => F;
    not_in_holds_for_unlisted_value: (r#"{"arg": "/c", "not_in": ["root", "admin"]}"#, r#"{"c": "bob"}"#) => T;
    not_in_errors_on_other_type: (r#"{"arg": "/c", "not_in": ["root"]}"#, r#"{"c": null}"#) => E;

    // String operators.
    matches_holds_for_whole_match: (r#"{"arg": "/id", "matches": "[a-z]+"}"#, r#"{"id": "abc"}"#) => T;
    matches_must_match_the_whole_value: (r#"{"arg": "/id", "matches": "[a-z]+"}"#, r#"{"id": "abc; rm -rf /"}"#) => F;
    matches_whole_value_even_with_alternation: (r#"{"arg": "/id", "matches": "a|ab"}"#, r#"{"id": "ab"}"#) => T;
    matches_anchors_every_alternative: (r#"{"arg": "/id", "matches": "x|abc"}"#, r#"{"id": "xabc"}"#) => F;
    matches_multiline_flag_does_not_unanchor: (r#"{"arg": "/id", "matches": "(?m)^ok$"}"#, "{\"id\": \"ok\\nevil\"}") => F;
    matches_errors_on_number: (r#"{"arg": "/id", "matches": "[0-9]+"}"#, r#"{"id": 12}"#) => E;
    matches_errors_on_value_over_64_kib: (r#"{"arg": "/id", "matches": "a*"}"#, &format!(r#"{{"id": "{}"}}"#, "a".repeat(65537))) => E;
    prefix_holds: (r#"{"arg": "/p", "prefix": "/srv/"}"#, r#"{"p": "/srv/x"}"#) => T;
    prefix_fails: (r#"{"arg": "/p", "prefix": "/srv/"}"#, r#"{"p": "/etc/x"}"#) => F;
    prefix_errors_on_number: (r#"{"arg": "/p", "prefix": "1"}"#, r#"{"p": 12}"#) => E;
    suffix_holds: (r#"{"arg": "/p", "suffix": ".md"}"#, r#"{"p": "a.md"}"#) => T;
    suffix_is_case_sensitive: (r#"{"arg": "/p", "suffix": ".md"}"#, r#"{"p": "a.MD"}"#) => F;
    contains_holds: (r#"{"arg": "/q", "contains": "drop"}"#, r#"{"q": "x; drop table"}"#) => T;
    contains_fails: (r#"{"arg": "/q", "contains": "drop"}"#, r#"{"q": "select"}"#) => F;
    max_len_counts_chars_not_bytes: (r#"{"arg": "/s", "max_len": 3}"#, r#"{"s": "ééé"}"#) => T;
    max_len_fails_over_limit: (r#"{"arg": "/s", "max_len": 3}"#, r#"{"s": "abcd"}"#) => F;
    max_len_errors_on_array: (r#"{"arg": "/s", "max_len": 3}"#, r#"{"s": ["a"]}"#) => E;

    // exists, missing values, pointers.
    exists_true_holds_for_present: (r#"{"arg": "/x", "exists": true}"#, r#"{"x": 0}"#) => T;
    exists_true_fails_for_missing: (r#"{"arg": "/x", "exists": true}"#, r#"{}"#) => F;
    exists_false_holds_for_missing: (r#"{"arg": "/x", "exists": false}"#, r#"{}"#) => T;
    exists_counts_null_as_present: (r#"{"arg": "/x", "exists": true}"#, r#"{"x": null}"#) => T;
    exists_false_holds_without_arguments: (r#"{"arg": "/x", "exists": false}"#, "absent") => T;
    missing_arg_errors: (CAP, r#"{"total": 100}"#) => E;
    missing_arguments_object_errors: (CAP, "absent") => E;
    missing_arg_errors_for_negative_operators_too: (r#"{"arg": "/c", "not_in": ["root"]}"#, r#"{}"#) => E;
    pointer_reaches_nested_member: (r#"{"arg": "/a/b", "eq": 1}"#, r#"{"a": {"b": 1}}"#) => T;
    pointer_reaches_array_element: (r#"{"arg": "/list/1", "eq": "b"}"#, r#"{"list": ["a", "b"]}"#) => T;
    pointer_refuses_leading_zero_index: (r#"{"arg": "/list/01", "eq": "b"}"#, r#"{"list": ["a", "b"]}"#) => E;
    pointer_refuses_dash_index: (r#"{"arg": "/list/-", "eq": "b"}"#, r#"{"list": ["a", "b"]}"#) => E;
    pointer_unescapes_tilde_and_slash: (r#"{"arg": "/a~1b~0c", "eq": 1}"#, r#"{"a/b~c": 1}"#) => T;
    pointer_through_scalar_is_missing: (r#"{"arg": "/a/b", "eq": 1}"#, r#"{"a": 1}"#) => E;
    empty_pointer_addresses_all_arguments: (r#"{"arg": "", "eq": {"a": 1}}"#, r#"{"a": 1}"#) => T;

    // Combinators: left to right, short-circuit, errors fail closed.
    all_holds_when_every_child_holds: (r#"{"all": [{"arg": "/amount", "lte": 500}, {"arg": "/c", "in": ["usd"]}]}"#, r#"{"amount": 5, "c": "usd"}"#) => T;
    all_fails_when_one_child_fails: (r#"{"all": [{"arg": "/amount", "lte": 500}, {"arg": "/c", "in": ["usd"]}]}"#, r#"{"amount": 5, "c": "gbp"}"#) => F;
    all_short_circuits_exists_guard: (r#"{"all": [{"arg": "/x", "exists": true}, {"arg": "/x", "eq": 1}]}"#, r#"{}"#) => F;
    all_short_circuits_before_error: (r#"{"all": [{"arg": "/x", "eq": 2}, {"arg": "/missing", "eq": 1}]}"#, r#"{"x": 1}"#) => F;
    all_errors_when_error_comes_before_false: (r#"{"all": [{"arg": "/missing", "eq": 1}, {"arg": "/x", "eq": 2}]}"#, r#"{"x": 1}"#) => E;
    all_errors_when_a_later_child_errors: (r#"{"all": [{"arg": "/x", "eq": 1}, {"arg": "/missing", "eq": 1}]}"#, r#"{"x": 1}"#) => E;
    any_short_circuits_before_error: (r#"{"any": [{"arg": "/x", "eq": 1}, {"arg": "/missing", "eq": 1}]}"#, r#"{"x": 1}"#) => T;
    any_errors_when_error_comes_before_true: (r#"{"any": [{"arg": "/missing", "eq": 1}, {"arg": "/x", "eq": 1}]}"#, r#"{"x": 1}"#) => E;
    any_fails_when_no_child_holds: (r#"{"any": [{"arg": "/x", "eq": 2}, {"arg": "/x", "eq": 3}]}"#, r#"{"x": 1}"#) => F;
    not_negates_true: (r#"{"not": {"arg": "/x", "eq": 1}}"#, r#"{"x": 1}"#) => F;
    not_negates_false: (r#"{"not": {"arg": "/x", "eq": 1}}"#, r#"{"x": 2}"#) => T;
    not_of_error_is_error: (r#"{"not": {"arg": "/x", "eq": 1}}"#, r#"{}"#) => E;
    not_of_wrong_type_is_error: (r#"{"not": {"arg": "/amount", "gt": 500}}"#, r#"{"amount": "9999"}"#) => E;
    nested_combinators_decide: (r#"{"all": [{"any": [{"arg": "/r", "eq": "eu"}, {"arg": "/r", "eq": "us"}]}, {"not": {"arg": "/dry", "eq": false}}]}"#, r#"{"r": "us", "dry": true}"#) => T;

    // Canonicalising operators.
    path_under_holds_inside_dir: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": "/srv/work/a/b.txt"}"#) => T;
    path_under_fails_after_dotdot_escape: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": "/srv/work/../../etc/passwd"}"#) => F;
    path_under_fails_for_prefix_sibling: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": "/srv/workspace-evil/a"}"#) => F;
    path_under_errors_on_backslash: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": "/srv/work/..\\..\\etc"}"#) => E;
    path_under_errors_on_relative_path: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": "a.txt"}"#) => E;
    path_under_errors_on_number: (r#"{"arg": "/path", "path_under": "/srv/work"}"#, r#"{"path": 1}"#) => E;
    host_in_holds_for_listed_host: (r#"{"arg": "/url", "host_in": ["api.example.com"]}"#, r#"{"url": "https://API.example.com/v1"}"#) => T;
    host_in_fails_behind_userinfo: (r#"{"arg": "/url", "host_in": ["api.example.com"]}"#, r#"{"url": "https://api.example.com@evil.com/"}"#) => F;
    host_in_catches_decimal_loopback: (r#"{"arg": "/url", "host_in": ["127.0.0.1", "localhost"]}"#, r#"{"url": "http://2130706433/admin"}"#) => T;
    host_in_catches_mapped_loopback_from_short_config: (r#"{"arg": "/url", "host_in": ["127.1"]}"#, r#"{"url": "http://[::ffff:127.0.0.1]/"}"#) => T;
    host_in_errors_on_backslash_trick: (r#"{"arg": "/url", "host_in": ["good.com"]}"#, r#"{"url": "https://evil.com\\@good.com/"}"#) => E;
});

// `param` addresses the whole params object (resource rules: `/uri`).
table!(check_params {
    param_prefix_holds_for_resource_uri: (r#"{"param": "/uri", "prefix": "file:///srv/"}"#, r#"{"uri": "file:///srv/docs/a.md"}"#) => T;
    param_prefix_fails_for_other_uri: (r#"{"param": "/uri", "prefix": "file:///srv/"}"#, r#"{"uri": "file:///etc/passwd"}"#) => F;
    param_missing_errors: (r#"{"param": "/uri", "prefix": "file:///srv/"}"#, r#"{"name": "x"}"#) => E;
    param_reaches_into_arguments: (r#"{"param": "/arguments/x", "eq": 1}"#, r#"{"arguments": {"x": 1}}"#) => T;
    param_host_in_reads_resource_uri: (r#"{"param": "/uri", "host_in": ["docs.example.com"]}"#, r#"{"uri": "https://docs.example.com/a"}"#) => T;
    param_path_under_errors_on_uri_value: (r#"{"param": "/uri", "path_under": "/srv"}"#, r#"{"uri": "file:///srv/a"}"#) => E;
    arg_does_not_see_params: (r#"{"arg": "/uri", "exists": true}"#, r#"{"uri": "file:///srv/a", "arguments": {}}"#) => F;
});

// --- explanations ------------------------------------------------------------

fn explain(when: &str, arguments: Value) -> (Outcome, String) {
    let Some(cond) = compiled(when) else {
        return (Outcome::Error("did not compile".into()), String::new());
    };
    let params = json!({ "arguments": arguments });
    cond.explain(&CondInput {
        arguments: &arguments,
        params: &params,
        now_ms: 0,
    })
}

#[test]
fn explain_names_pointer_operator_and_value_when_false() {
    let (outcome, line) = explain(CAP, json!({"amount": 1000}));
    assert_eq!(outcome, Outcome::False);
    assert_eq!(
        line,
        "arg /amount lte 500: found 1000, does not hold → false"
    );
}

#[test]
fn explain_says_why_a_string_amount_is_an_error() {
    let (outcome, line) = explain(CAP, json!({"amount": "1000"}));
    assert_eq!(
        outcome,
        Outcome::Error("arg /amount lte 500: expected a number, found a string".into())
    );
    assert_eq!(
        line,
        "arg /amount lte 500: expected a number, found a string (value \"1000\") → error"
    );
}

#[test]
fn explain_says_missing() {
    let (_, line) = explain(CAP, json!({}));
    assert_eq!(line, "arg /amount lte 500: missing → error");
}

#[test]
fn explain_names_the_deciding_leaf_inside_combinators() {
    let when =
        r#"{"all": [{"arg": "/c", "in": ["usd"]}, {"not": {"arg": "/public", "eq": true}}]}"#;
    let (outcome, line) = explain(when, json!({"c": "usd", "public": true}));
    assert_eq!(outcome, Outcome::False);
    assert_eq!(
        line,
        "all[1]: not: arg /public eq true: found true, holds → false"
    );
}

#[test]
fn explain_names_the_error_that_stopped_any() {
    let when =
        r#"{"any": [{"arg": "/x", "eq": 2}, {"arg": "/y", "eq": 1}, {"arg": "/x", "eq": 1}]}"#;
    let (outcome, line) = explain(when, json!({"x": 1}));
    assert!(matches!(outcome, Outcome::Error(_)));
    assert_eq!(line, "any[1]: arg /y eq 1: missing → error");
}

#[test]
fn explain_shows_the_canonical_form_decided_on() {
    let when = r#"{"arg": "/path", "path_under": "/srv/work"}"#;
    let (_, line) = explain(when, json!({"path": "/srv/work/%2e%2E/etc"}));
    assert_eq!(
        line,
        "arg /path path_under \"/srv/work\": found \"/srv/work/%2e%2E/etc\", does not hold \
         (read as \"/srv/etc\") → false"
    );
}

#[test]
fn explain_never_shows_a_long_value() {
    let secret = format!("sk-{}", "x".repeat(80));
    let (_, line) = explain(
        r#"{"arg": "/key", "max_len": 10}"#,
        json!({ "key": secret }),
    );
    assert!(!line.contains("xxxxxxxxxx"), "{line}");
    assert_eq!(
        line,
        "arg /key max_len 10: found a string of 83 chars, does not hold → false"
    );
}

#[test]
fn error_outcome_never_holds_the_value() {
    let (outcome, _) = explain(CAP, json!({"amount": "secret-token-123"}));
    match outcome {
        Outcome::Error(msg) => assert!(!msg.contains("secret"), "{msg}"),
        other => assert_eq!(other, Outcome::Error(String::new())),
    }
}

#[test]
fn eval_is_deterministic_and_reusable() {
    let Some(cond) =
        compiled(r#"{"any": [{"arg": "/x", "eq": 1}, {"arg": "/x", "matches": "a+"}]}"#)
    else {
        return; // compiled() has failed the test already
    };
    let args = [
        json!({"x": 1}),
        json!({"x": "aaa"}),
        json!({"x": "b"}),
        json!({}),
    ];
    let first: Vec<Outcome> = args
        .iter()
        .map(|a| {
            cond.eval(&CondInput {
                arguments: a,
                params: &Value::Null,
                now_ms: 0,
            })
        })
        .collect();
    for _ in 0..3 {
        let again: Vec<Outcome> = args
            .iter()
            .map(|a| {
                cond.eval(&CondInput {
                    arguments: a,
                    params: &Value::Null,
                    now_ms: 0,
                })
            })
            .collect();
        assert_eq!(first, again);
    }
    // "aaa" and "b" are strings: `eq: 1` errors on them before `matches` is
    // reached, and an error before the deciding child makes `any` an error.
    assert_eq!(first.iter().map(kind).collect::<Vec<_>>(), vec![T, E, E, E]);
}

// --- time windows --------------------------------------------------------------

/// A `time` leaf beside argument leaves: it never errors, `not` of it is a
/// plain negation, and its explanation shows the request's time on the
/// window's clock (never an argument).
#[test]
fn time_leaves_combine_like_any_leaf_and_explain_the_local_time() {
    let when = r#"{"all": [{"arg": "/force", "eq": true},
                           {"not": {"time": {"days": ["sat", "sun"], "utc_offset": "-05:00"}}}]}"#;
    let Some(cond) = compiled(when) else {
        return;
    };
    let arguments = json!({"force": true});
    let params = json!({ "arguments": arguments });
    // 2026-12-05T03:00:00Z is Friday 22:00 at -05:00, 07:00Z Saturday 02:00.
    let cases = [
        (
            1_796_439_600_000,
            Outcome::True,
            "request at 2026-12-04 fri 22:00 -05:00, does not hold → true",
        ),
        (
            1_796_454_000_000,
            Outcome::False,
            "request at 2026-12-05 sat 02:00 -05:00, holds → false",
        ),
    ];
    for (now_ms, want, tail) in cases {
        let input = CondInput {
            arguments: &arguments,
            params: &params,
            now_ms,
        };
        assert_eq!(cond.eval(&input), want);
        let (outcome, line) = cond.explain(&input);
        assert_eq!(outcome, want);
        assert_eq!(
            line,
            format!("all[1]: not: time sat,sun all day -05:00: {tail}")
        );
    }
}
