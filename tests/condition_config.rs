//! Configuration errors of `when`: each names the exact JSON path. Expected
//! errors are `(path, text the message contains)`; the list must match exactly.

use mcp_firewall::condition::compile;
use mcp_firewall::config::Errors;
use serde_json::Value;

const AT: &str = "$.rules[2].when";

fn check(when: &str, want: &[(&str, &str)]) {
    let parsed: Result<Value, _> = serde_json::from_str(when);
    assert!(parsed.is_ok(), "fixture is not JSON: {when}");
    let v = parsed.unwrap_or(Value::Null);
    let mut errs = Errors::default();
    let compiled = compile(&v, AT, &mut errs);
    let got: Vec<(String, String)> = errs.0.into_iter().map(|e| (e.path, e.msg)).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{when}: got {got:#?}, want {want:#?}"
    );
    for ((path, msg), (want_path, want_msg)) in got.iter().zip(want) {
        assert_eq!(path, want_path, "{when}: {msg}");
        assert!(
            msg.contains(want_msg),
            "{when}: {path}: {msg:?} lacks {want_msg:?}"
        );
    }
    assert_eq!(
        compiled.is_some(),
        want.is_empty(),
        "{when}: compiled only if clean"
    );
}

macro_rules! table {
    ($($name:ident: $when:expr => [$(($path:expr, $msg:expr)),* $(,)?];)*) => {
        $( #[test] fn $name() { check($when, &[$(($path, $msg)),*]) } )*
    };
}

table! {
    accepts_policy_example: r#"{"all": [{"arg": "/amount", "lte": 500}, {"arg": "/currency", "in": ["usd", "eur"]}]}"# => [];
    accepts_every_operator: r#"{"all": [
        {"arg": "/a", "eq": 1}, {"arg": "/a", "ne": "x"}, {"arg": "/a", "in": [1]}, {"arg": "/a", "not_in": [1]},
        {"arg": "/a", "lt": 1}, {"arg": "/a", "lte": 1.5}, {"arg": "/a", "gt": -1}, {"arg": "/a", "gte": 0},
        {"arg": "/a", "matches": "[a-z]+"}, {"arg": "/a", "prefix": "x"}, {"arg": "/a", "suffix": "x"},
        {"arg": "/a", "contains": "x"}, {"arg": "/a", "max_len": 0}, {"arg": "/a", "exists": false},
        {"arg": "/a", "path_under": "/srv"}, {"arg": "/a", "host_in": ["a.example", "::1", "127.1"]},
        {"param": "/uri", "prefix": "file:///srv/"}, {"not": {"any": [{"arg": "", "eq": null}]}}]}"# => [];

    lte_with_string_is_error_at_operator: r#"{"all": [{"arg": "/x", "eq": 1}, {"arg": "/amount", "lte": "500"}]}"#
        => [("$.rules[2].when.all[1].lte", "expected a number, found a string")];
    gt_with_boolean_is_error: r#"{"arg": "/x", "gt": true}"# => [("$.rules[2].when.gt", "expected a number, found a boolean")];
    in_with_non_array_is_error: r#"{"arg": "/c", "in": "usd"}"# => [("$.rules[2].when.in", "expected a non-empty array, found a string")];
    in_with_empty_array_is_error: r#"{"arg": "/c", "in": []}"# => [("$.rules[2].when.in", "found an empty array")];
    not_in_with_object_is_error: r#"{"arg": "/c", "not_in": {"a": 1}}"# => [("$.rules[2].when.not_in", "found an object")];
    max_len_negative_is_error: r#"{"arg": "/s", "max_len": -1}"# => [("$.rules[2].when.max_len", "found -1")];
    max_len_fraction_is_error: r#"{"arg": "/s", "max_len": 2.5}"# => [("$.rules[2].when.max_len", "found 2.5")];
    max_len_string_is_error: r#"{"arg": "/s", "max_len": "10"}"# => [("$.rules[2].when.max_len", "found a string")];
    exists_with_string_is_error: r#"{"arg": "/s", "exists": "yes"}"# => [("$.rules[2].when.exists", "expected true or false")];
    prefix_with_number_is_error: r#"{"arg": "/s", "prefix": 1}"# => [("$.rules[2].when.prefix", "expected a string, found a number")];
    matches_invalid_regex_is_error: r#"{"arg": "/s", "matches": "(a"}"# => [("$.rules[2].when.matches", "invalid regex")];
    matches_unbalanced_escape_attempt_is_error: r#"{"arg": "/s", "matches": "a)|(b"}"# => [("$.rules[2].when.matches", "invalid regex")];
    matches_pattern_too_long_is_error: &format!(r#"{{"arg": "/s", "matches": "{}"}}"#, "a".repeat(1025))
        => [("$.rules[2].when.matches", "longer than 1024")];
    matches_number_is_error: r#"{"arg": "/s", "matches": 5}"# => [("$.rules[2].when.matches", "expected a string")];
    path_under_relative_dir_is_error: r#"{"arg": "/p", "path_under": "srv/work"}"# => [("$.rules[2].when.path_under", "relative path")];
    path_under_climbing_dir_is_error: r#"{"arg": "/p", "path_under": "/srv/../../x"}"# => [("$.rules[2].when.path_under", "climbs above")];
    path_under_number_is_error: r#"{"arg": "/p", "path_under": 1}"# => [("$.rules[2].when.path_under", "expected an absolute directory path")];
    host_in_bad_host_names_its_index: r#"{"arg": "/u", "host_in": ["good.com", "bücher.de"]}"# => [("$.rules[2].when.host_in[1]", "non-ASCII")];
    host_in_non_string_names_its_index: r#"{"arg": "/u", "host_in": [1, "good.com", null]}"#
        => [("$.rules[2].when.host_in[0]", "found a number"), ("$.rules[2].when.host_in[2]", "found null")];
    host_in_invalid_ipv4_is_error: r#"{"arg": "/u", "host_in": ["256.1.1.1"]}"# => [("$.rules[2].when.host_in[0]", "over 255")];
    host_in_empty_list_is_error: r#"{"arg": "/u", "host_in": []}"# => [("$.rules[2].when.host_in", "non-empty array")];

    two_operators_is_error_at_leaf: r#"{"arg": "/x", "lte": 5, "gte": 1}"# => [("$.rules[2].when", "exactly one operator; found lte and gte")];
    no_operator_is_error_at_leaf: r#"{"arg": "/x"}"# => [("$.rules[2].when", "needs one operator")];
    misspelt_operator_is_reported_twice: r#"{"arg": "/x", "equals": 5}"#
        => [("$.rules[2].when", "needs one operator"), ("$.rules[2].when.equals", "unknown field")];
    unknown_field_in_leaf_is_error: r#"{"arg": "/x", "eq": 1, "note": "why"}"# => [("$.rules[2].when.note", "unknown field")];
    both_arg_and_param_is_error: r#"{"arg": "/x", "param": "/uri", "eq": 1}"# => [("$.rules[2].when", "exactly one of arg, param")];
    neither_arg_nor_param_is_error: r#"{"eq": 1}"# => [("$.rules[2].when", "leaf with arg, param or time")];
    arg_not_a_string_is_error: r#"{"arg": 5, "eq": 1}"# => [("$.rules[2].when.arg", "expected a string, found a number")];
    pointer_without_slash_is_error: r#"{"arg": "amount", "lte": 5}"# => [("$.rules[2].when.arg", "RFC 6901")];
    pointer_with_bad_tilde_is_error: r#"{"param": "/a~2b", "eq": 1}"# => [("$.rules[2].when.param", "'~' must be followed by 0 or 1")];

    when_not_an_object_is_error: r#""amount <= 500""# => [("$.rules[2].when", "expected a condition object, found a string")];
    empty_all_is_error: r#"{"all": []}"# => [("$.rules[2].when.all", "non-empty array of conditions, found an empty array")];
    any_not_array_is_error: r#"{"any": {"arg": "/x", "eq": 1}}"# => [("$.rules[2].when.any", "found an object")];
    not_with_array_is_error: r#"{"not": [{"arg": "/x", "eq": 1}]}"# => [("$.rules[2].when.not", "expected a condition object, found an array")];
    two_combinators_is_error: r#"{"all": [{"arg": "/x", "eq": 1}], "any": [{"arg": "/x", "eq": 1}]}"#
        => [("$.rules[2].when", "exactly one of all, any, not; found all and any")];
    combinator_with_leaf_field_is_error: r#"{"all": [{"arg": "/x", "eq": 1}], "arg": "/y"}"# => [("$.rules[2].when.arg", "unknown field")];
    nested_error_names_full_path: r#"{"any": [{"arg": "/x", "eq": 1}, {"not": {"all": [{"arg": "/y", "exists": true}, {"arg": "/y", "matches": "["}]}}]}"#
        => [("$.rules[2].when.any[1].not.all[1].matches", "invalid regex")];
    accepts_time_windows_under_combinators: r#"{"all": [{"arg": "/force", "eq": true},
        {"not": {"time": {"days": ["sat", "sun"], "utc_offset": "+00:00"}}},
        {"any": [{"time": {"hours": "22:00-06:00", "utc_offset": "-05:30"}}, {"time": {"days": ["mon"], "hours": "00:00-24:00", "utc_offset": "+14:00"}}]}]}"# => [];
    time_errors_name_their_member: r#"{"any": [{"arg": "/x", "eq": 1}, {"time": {"days": ["mon", "Tue", "mon"], "hours": "17:00-09:00:00", "utc_offset": "+15:00"}}]}"#
        => [("$.rules[2].when.any[1].time.days[1]", "\"Tue\" is not one of mon, tue, wed, thu, fri, sat, sun"),
            ("$.rules[2].when.any[1].time.days[2]", "\"mon\" is listed twice"),
            ("$.rules[2].when.any[1].time.hours", "is not HH:MM-HH:MM"),
            ("$.rules[2].when.any[1].time.utc_offset", "between -14:00 and +14:00")];
    time_without_offset_is_error: r#"{"time": {"hours": "09:00-17:00"}}"# => [("$.rules[2].when.time.utc_offset", "required field is missing")];
    time_with_nothing_to_test_is_error: r#"{"time": {"utc_offset": "+01:00"}}"# => [("$.rules[2].when.time", "needs days, hours or both")];
    time_not_an_object_is_error: r#"{"time": "09:00-17:00"}"# => [("$.rules[2].when.time", "expected an object, found a string")];
    time_beside_an_operator_is_error: r#"{"time": {"days": ["mon"], "utc_offset": "+00:00"}, "eq": 1}"# => [("$.rules[2].when.eq", "unknown field")];
    time_beside_a_combinator_is_error: r#"{"not": {"arg": "/x", "eq": 1}, "time": {"days": ["mon"], "utc_offset": "+00:00"}}"# => [("$.rules[2].when.time", "unknown field")];
    every_error_is_reported_at_once: r#"{"all": [{"arg": "/a", "lt": "1"}, {"arg": "b", "eq": 1}, {"arg": "/c", "in": 3, "x": 1}]}"#
        => [("$.rules[2].when.all[0].lt", "expected a number"),
            ("$.rules[2].when.all[1].arg", "RFC 6901"),
            ("$.rules[2].when.all[2].in", "non-empty array"),
            ("$.rules[2].when.all[2].x", "unknown field")];
}

#[test]
fn nesting_deeper_than_limit_is_error_at_the_deepest_path() {
    let depth = 33;
    let mut when = String::from(r#"{"arg": "/x", "eq": 1}"#);
    let mut path = String::from(AT);
    for _ in 1..depth {
        when = format!(r#"{{"not": {when}}}"#);
        path.push_str(".not");
    }
    check(&when, &[(&path, "nested deeper than 32")]);
}

#[test]
fn nesting_at_the_limit_compiles() {
    let mut when = String::from(r#"{"arg": "/x", "eq": 1}"#);
    for _ in 1..32 {
        when = format!(r#"{{"not": {when}}}"#);
    }
    check(&when, &[]);
}
