"""policy.schema.json against the filter's own compiler (`mcp-firewall check`).

The schema is for editors and CI; the compiler is the authority. So:
(a) every policy in the repository that the compiler accepts validates against
    the schema (a schema that refused a working policy would be worse than none);
(b) on a table of valid and invalid policies, schema and compiler give the same
    answer;
(c) the few mistakes only the compiler can catch (a bad regex, a URI not in
    normal form, a duplicate id, one bound below another) are listed: the schema
    accepts them and the compiler refuses them, so nobody mistakes a schema pass
    for a `check` pass.

No Envoy and no Wasm: the compiler runs in the release CLI (the same code the
filter's on_configure runs; `test_config.py` shows Envoy agrees with it).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import harness

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
SCHEMA_PATH = harness.REPO / "policy.schema.json"

POLICY_DIRS = ["policies", "examples", "tests/e2e/fixtures", "cli/tests/fixtures"]
REPO_POLICIES = sorted(
    p for d in POLICY_DIRS for p in (harness.REPO / d).rglob("*.json") if not p.name.endswith(".tests.json")
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def compiler_accepts(policy: Any, tmp_path: Path, name: str = "policy") -> tuple[bool, str]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run `cargo build --release -p mcp-firewall-cli` (scripts/test.sh does)")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(policy) if not isinstance(policy, str) else policy)
    r = subprocess.run([str(CLI), "check", str(path)], capture_output=True, text=True, timeout=30)
    return r.returncode == 0, r.stdout + r.stderr


def schema_errors(v: jsonschema.Draft202012Validator, policy: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:160]}" for e in v.iter_errors(policy)]


def test_the_schema_is_a_valid_draft_2020_12_schema_with_a_repo_relative_id() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "policy.schema.json", "the $id names the file in the repository, not a URL outside it"


def test_the_repository_holds_policies_to_check() -> None:
    assert len(REPO_POLICIES) >= 8, REPO_POLICIES


@pytest.mark.parametrize("path", REPO_POLICIES, ids=[str(p.relative_to(harness.REPO)) for p in REPO_POLICIES])
def test_every_policy_the_compiler_accepts_validates_against_the_schema(
        path: Path, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = json.loads(path.read_text())
    ok, out = compiler_accepts(policy, tmp_path)
    errors = schema_errors(validator, policy)
    if ok:
        assert errors == [], f"{path}: the compiler accepts it, the schema refuses it: {errors}"
    else:
        # A deliberately broken fixture (cli/tests/fixtures/three-mistakes.json):
        # the schema must refuse it too.
        assert errors, f"{path}: the compiler refuses it ({out.strip()}), the schema accepts it"


# --------------------------------------------------------------------------- the agreement table

def base(**top: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"version": 1, "rules": []}
    p.update(copy.deepcopy(top))
    return p


def rule(**fields: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"id": "r", "effect": "allow", "tools": ["get_*"]}
    r.update(fields)
    return {k: v for k, v in r.items() if v is not None}


def with_rule(**fields: Any) -> dict[str, Any]:
    return base(rules=[rule(**fields)])


def leaf(**fields: Any) -> dict[str, Any]:
    return with_rule(when=fields)


HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

VALID = {
    "minimal_policy_is_version_and_empty_rules": base(),
    "dry_run_mode_is_a_mode": base(mode="dry_run"),
    "envoy_section_for_istio": base(envoy={"allow_on_headers_stop_iteration": False}),
    "envoy_rate_limit_headers": base(envoy={"rate_limit_headers": True}),
    "envoy_rate_limit_headers_with_held_headers_said": base(
        envoy={"allow_on_headers_stop_iteration": True, "rate_limit_headers": True}),
    "envoy_rate_limit_headers_off_under_istio": base(
        envoy={"allow_on_headers_stop_iteration": False, "rate_limit_headers": False}),
    # istiod hands a policy over as a protobuf Struct: every number a double.
    "whole_number_written_as_64_0": base(limits={"max_json_depth": 64.0}),
    "version_written_as_1_0": {"version": 1.0, "rules": []},
    "sessions_cap_and_when_full": base(sessions={"per_identity": 8, "when_full": "pass_unbound"}),
    "pins_enforced": base(pins={"mode": "enforce", "tools": {"get-sum": "sha256:" + "0a" * 32}}),
    "pins_warned_with_none_listed": base(pins={"mode": "warn", "tools": {}}),
    "pins_held_an_hour": base(pins={"tools": {}, "hold_s": 3600}),
    "catalogue_defaults": base(catalogue={}),
    "catalogue_removing_and_blocking": base(catalogue={
        "descriptions": {"model_instructions": "remove", "shadowing": "flag"},
        "results": {"model_instructions": "block", "exfiltration": "wrap", "encoded_blob": "off"},
        "link_hosts": ["github.com", "*.githubusercontent.com"], "hold_s": 3600, "unlisted_calls": "refuse",
        "other_tools": ["send_email", "files.read"]}),
    "catalogue_one_word_each": base(catalogue={"descriptions": "remove", "results": "wrap"}),
    "each_rule_kind_with_globs": base(rules=[
        rule(id="t", tools=["get_*", "search_?"]),
        rule(id="m", tools=None, methods=["tools/list", "notifications/*"]),
        rule(id="p", tools=None, prompts=["Code Review", "summ*"]),
        rule(id="u", tools=None, resources=["file:///srv/docs/**", "https://api.example.com/*"]),
    ]),
    "every_effect_with_roles": base(rules=[
        rule(id="a", effect="allow", roles=["reader"]),
        rule(id="d", effect="deny", tools=["delete_*"]),
        rule(id="ap", effect="approve", roles=["ops"], tools=["scale_*"]),
    ]),
    "rule_id_with_every_allowed_punctuation": with_rule(id="team.a/read-tools:v2_1"),
    "intents_alone_and_with_tools": base(rules=[
        rule(id="no-destroy", effect="deny", tools=None, roles=["agent"], intents=["destructive"]),
        rule(id="ask", effect="approve", tools=["gh_*"], intents=["open-world", "write"]),
        rule(id="read", effect="allow", tools=None, intents=["read"]),
    ]),
    "time_window_of_weekday_hours": leaf(time={"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:30",
                                               "utc_offset": "+01:00"}),
    "time_window_wrapping_midnight_at_minus_14": leaf(time={"hours": "22:00-06:00", "utc_offset": "-14:00"}),
    "time_window_of_days_only_to_24_00": with_rule(when={"not": {"time": {"days": ["sat", "sun"],
                                                                          "hours": "00:00-24:00",
                                                                          "utc_offset": "+05:45"}}}),
    "every_operator_in_one_all": with_rule(when={"all": [
        {"arg": "/a", "eq": "x"}, {"arg": "/b", "ne": False}, {"arg": "/c", "in": [1, "1"]},
        {"arg": "/d", "not_in": ["x"]}, {"arg": "/e", "lt": 5}, {"arg": "/f", "lte": 5.5},
        {"arg": "/g", "gt": -1}, {"arg": "/h", "gte": 0}, {"arg": "/i", "matches": "[a-z]+"},
        {"arg": "/j", "prefix": "p"}, {"arg": "/k", "suffix": "s"}, {"arg": "/l", "contains": "c"},
        {"arg": "/m", "max_len": 10}, {"arg": "/n", "exists": True}, {"arg": "/o", "path_under": "/srv"},
        {"param": "/uri", "host_in": ["api.github.com", "10.0.0.1"]},
    ]}),
    "nested_any_and_not_with_escaped_pointer": with_rule(when={"any": [
        {"not": {"arg": "/a~1b/c~0d", "exists": True}}, {"arg": "", "eq": {}}]}),
    "identity_section_in_full": base(identity={
        "jwt_payload_header": "x-jwt-payload",
        "claims": {"subject": "sub", "roles": "/realm_access/roles", "tenant": "tid"},
        "api_keys": [{"sha256": HEX, "subject": "ci-bot", "roles": ["reader"], "tenant": "acme"}],
        "anonymous_roles": ["guest"], "forward_api_key": True,
        "resource_metadata": "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"}),
    "limits_at_their_bounds": base(limits={"max_request_bytes": 64 << 20, "max_response_bytes": 1,
                                           "max_json_depth": 120, "batches": "evaluate"}),
    "result_caps_per_tool_with_a_default": base(limits={
        "result_caps": [{"tools": ["fetch", "fetch_*"], "max_bytes": 65536}, {"tools": ["get_?"], "max_bytes": 1}],
        "max_result_bytes": 1048576}),
    "result_caps_without_a_default": base(limits={"result_caps": [{"tools": ["*"], "max_bytes": 8388608}]}),
    "sessions_at_their_bounds": base(sessions={"binding": "off", "capacity": 4, "idle_timeout_s": 604800,
                                               "per_identity": 65536, "when_full": "pass_unbound"}),
    "dlp_in_full": base(dlp={"requests": "flag", "responses": "off", "detectors": [],
                             "custom": [{"id": "acme.emp-1", "pattern": "ACME-[0-9]{8}", "label": "pii"}],
                             "exempt_tools": ["render_*"]}),
    "approval_minimal": base(approval={"cluster": "approvals", "token": "filter-token"}),
    "approval_in_full": base(approval={"cluster": "approvals", "path": "/v1/approvals", "authority": "approvals",
                                       "timeout_ms": 20000, "mode": "async", "ttl_ms": 300000,
                                       "show_arguments": True, "token_env": "MCP_FIREWALL_APPROVAL_TOKEN"}),
    "audit_in_full": base(audit={"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
                                 "max_batch": 10000, "flush_ms": 60000, "max_buffered": 1000000,
                                 "on_failure": "closed", "arguments": "redacted", "timeout_ms": 10,
                                 "max_batch_bytes": 4096, "max_buffered_bytes": 1 << 30}),
    "kill_switch_and_disabled_subjects": base(kill_switch=True, disabled=["spiffe://x/agent"]),
    "rate_limits_loop_breaker_and_budgets": base(
        rate_limits=[
            {"id": "agent-tool", "key": ["subject", "tool"], "tools": ["*"], "capacity": 60, "per_seconds": 300},
            {"id": "loop", "key": ["subject", "tool", "arguments"], "tools": ["*"], "capacity": 5,
             "per_seconds": 60},
            {"id": "per-conversation", "key": ["session"], "roles": ["agent"], "methods": ["tools/call"],
             "capacity": 100, "per_seconds": 60},
            {"id": "deletes", "key": ["global"], "tools": ["delete_*"], "capacity": 10, "per_seconds": 31622400},
        ],
        budgets=[{"id": "daily", "key": ["tenant"], "tools": ["*"], "period": "day", "limit": 1000,
                  "costs": {"create_refund": 10}, "default_cost": 1, "expose_remaining": True},
                 {"id": "monthly", "key": ["global"], "prompts": ["*"], "period": "month", "limit": 5}],
        limits={"metered_keys": 4, "conversation_header": "x-conversation-id"}),
}

INVALID = {
    "intents_unknown_class": with_rule(intents=["dangerous"]),
    "intents_empty": with_rule(intents=[]),
    "intents_twice": with_rule(intents=["write", "write"]),
    "intents_with_methods": with_rule(tools=None, methods=["tools/call"], intents=["write"]),
    "intents_with_prompts": with_rule(tools=None, prompts=["p"], intents=["read"]),
    "version_missing": {"rules": []},
    "rules_missing": {"version": 1},
    "version_2_is_not_read": base(version=2),
    "unknown_top_level_field": base(polcy=1),
    "dollar_schema_member_is_an_unknown_field": base(**{"$schema": "./policy.schema.json"}),
    "mode_strict_is_no_mode": base(mode="strict"),
    "envoy_section_unknown_member": base(envoy={"allow_on_headers": False}),
    "envoy_rate_limit_headers_not_a_boolean": base(envoy={"rate_limit_headers": "yes"}),
    "envoy_rate_limit_headers_with_headers_let_go": base(
        envoy={"allow_on_headers_stop_iteration": False, "rate_limit_headers": True}),
    "sessions_when_full_unknown": base(sessions={"when_full": "evict"}),
    "rule_without_a_kind": with_rule(tools=None),
    "rule_with_two_kinds": with_rule(methods=["tools/list"]),
    "rule_id_missing": with_rule(id=None),
    "rule_id_with_a_space": with_rule(id="read tools"),
    "rule_id_reserved_for_the_filter": with_rule(id="default-deny"),
    "effect_permit_is_no_effect": with_rule(effect="permit"),
    "empty_pattern_list": with_rule(tools=[]),
    "hyphenated_tool_is_fine_but_a_slash_never_matches": with_rule(tools=["github/get_issue"]),
    "fullwidth_tool_pattern_never_matches": with_rule(tools=["\uff44elete_*"]),
    "method_pattern_with_a_space": with_rule(tools=None, methods=["tools list"]),
    "resource_pattern_with_a_fragment": with_rule(tools=None, resources=["file:///srv/a#b"]),
    "empty_roles_match_nobody": with_rule(roles=[]),
    "unknown_rule_field": with_rule(role=["reader"]),
    "condition_without_operator": leaf(arg="/a"),
    "condition_with_two_operators": leaf(arg="/a", eq=1, ne=2),
    "condition_with_arg_and_param": leaf(arg="/a", param="/b", eq=1),
    "condition_pointer_without_leading_slash": leaf(arg="amount", lte=5),
    "condition_pointer_with_a_bad_escape": leaf(arg="/a~2", eq=1),
    "lte_against_a_string": leaf(arg="/a", lte="500"),
    "in_with_an_empty_list": leaf(arg="/a", **{"in": []}),
    "exists_not_a_boolean": leaf(arg="/a", exists="yes"),
    "max_len_negative": leaf(arg="/a", max_len=-1),
    "path_under_a_relative_directory": leaf(arg="/p", path_under="srv/data"),
    "empty_all": with_rule(when={"all": []}),
    "time_without_utc_offset": leaf(time={"hours": "09:00-17:00"}),
    "time_with_neither_days_nor_hours": leaf(time={"utc_offset": "+01:00"}),
    "time_offset_as_a_zone_name": leaf(time={"days": ["mon"], "utc_offset": "Europe/Paris"}),
    "time_offset_beyond_14_hours": leaf(time={"days": ["mon"], "utc_offset": "+14:30"}),
    "time_hours_with_one_digit": leaf(time={"hours": "9:00-17:00", "utc_offset": "+00:00"}),
    "time_hours_starting_at_24_00": leaf(time={"hours": "24:00-06:00", "utc_offset": "+00:00"}),
    "time_day_capitalised": leaf(time={"days": ["Mon"], "utc_offset": "+00:00"}),
    "time_day_listed_twice": leaf(time={"days": ["mon", "mon"], "utc_offset": "+00:00"}),
    "time_days_empty": leaf(time={"days": [], "utc_offset": "+00:00"}),
    "time_beside_an_operator": leaf(time={"days": ["mon"], "utc_offset": "+00:00"}, eq=1),
    "time_with_a_zone_member": leaf(time={"days": ["mon"], "utc_offset": "+00:00", "tz": "CET"}),
    "all_and_any_together": with_rule(when={"all": [{"arg": "/a", "eq": 1}], "any": [{"arg": "/a", "eq": 1}]}),
    "api_key_sha256_upper_case": base(identity={"api_keys": [{"sha256": HEX.upper(), "subject": "s"}]}),
    "api_key_without_subject": base(identity={"api_keys": [{"sha256": HEX}]}),
    "jwt_payload_header_the_client_sets": base(identity={"jwt_payload_header": "authorization"}),
    "jwt_payload_header_not_a_header_name": base(identity={"jwt_payload_header": "x jwt"}),
    "empty_claim_name": base(identity={"claims": {"roles": ""}}),
    "resource_metadata_outside_well_known": base(identity={"resource_metadata": "https://a.example/meta"}),
    "resource_metadata_with_a_query": base(identity={
        "resource_metadata": "https://a.example/.well-known/oauth-protected-resource?x=1"}),
    "max_request_bytes_zero": base(limits={"max_request_bytes": 0}),
    "max_json_depth_above_120": base(limits={"max_json_depth": 121}),
    "batches_allow_is_no_batch_mode": base(limits={"batches": "allow"}),
    "sessions_capacity_below_one_set": base(sessions={"capacity": 3}),
    "sessions_per_identity_zero": base(sessions={"per_identity": 0}),
    "sessions_when_full_drop": base(sessions={"when_full": "drop"}),
    "dlp_requests_warn": base(dlp={"requests": "warn"}),
    "dlp_detector_unknown": base(dlp={"detectors": ["secrets", "pci"]}),
    "dlp_custom_without_label": base(dlp={"custom": [{"id": "x", "pattern": "X-[0-9]+"}]}),
    "dlp_custom_label_unknown": base(dlp={"custom": [{"id": "x", "pattern": "X-[0-9]+", "label": "card"}]}),
    "dlp_custom_id_with_a_slash": base(dlp={"custom": [{"id": "a/b", "pattern": "X-[0-9]+", "label": "pii"}]}),
    "audit_without_cluster": base(audit={"path": "/v1/audit"}),
    "audit_cluster_with_a_space": base(audit={"cluster": "audit collector"}),
    "audit_path_not_absolute": base(audit={"cluster": "c", "path": "v1/audit"}),
    "audit_on_failure_retry": base(audit={"cluster": "c", "on_failure": "retry"}),
    "audit_timeout_below_10ms": base(audit={"cluster": "c", "timeout_ms": 9}),
    "audit_max_batch_bytes_below_4096": base(audit={"cluster": "c", "max_batch_bytes": 4095}),
    "rate_limit_capacity_zero": base(rate_limits=[{"id": "r", "key": ["subject"], "tools": ["*"], "capacity": 0,
                                                   "per_seconds": 60}]),
    "rate_limit_period_over_a_year": base(rate_limits=[{"id": "r", "key": ["subject"], "tools": ["*"],
                                                        "capacity": 1, "per_seconds": 31622401}]),
    "rate_limit_key_unknown": base(rate_limits=[{"id": "r", "key": ["ip"], "tools": ["*"], "capacity": 1,
                                                 "per_seconds": 60}]),
    "rate_limit_without_target": base(rate_limits=[{"id": "r", "key": ["global"], "capacity": 1, "per_seconds": 60}]),
    "budget_keyed_by_tool": base(budgets=[{"id": "b", "key": ["tool"], "tools": ["*"], "period": "day", "limit": 1}]),
    "budget_period_week": base(budgets=[{"id": "b", "key": ["tenant"], "tools": ["*"], "period": "week", "limit": 1}]),
    "budget_negative_cost": base(budgets=[{"id": "b", "key": ["tenant"], "tools": ["*"], "period": "day", "limit": 9,
                                           "costs": {"refund": -1}}]),
    "result_cap_zero": base(limits={"result_caps": [{"tools": ["fetch"], "max_bytes": 0}]}),
    "result_cap_negative": base(limits={"result_caps": [{"tools": ["fetch"], "max_bytes": -1}]}),
    "result_cap_without_tools": base(limits={"result_caps": [{"max_bytes": 10}]}),
    "result_cap_with_no_patterns": base(limits={"result_caps": [{"tools": [], "max_bytes": 10}]}),
    "result_cap_pattern_with_a_slash": base(limits={"result_caps": [{"tools": ["web/fetch"], "max_bytes": 10}]}),
    "result_cap_truncate_is_no_member": base(limits={"result_caps": [{"tools": ["fetch"], "max_bytes": 10,
                                                                        "action": "truncate"}]}),
    "result_caps_as_a_map": base(limits={"result_caps": {"fetch": 10}}),
    "max_result_bytes_zero": base(limits={"max_result_bytes": 0}),
    "metered_keys_below_one_set": base(limits={"metered_keys": 3}),
    "pins_without_tools": base(pins={}),
    "pin_without_its_prefix": base(pins={"tools": {"echo": "a" * 64}}),
    "pin_in_upper_case_hex": base(pins={"tools": {"echo": "sha256:" + "A" * 64}}),
    "pin_for_a_glob": base(pins={"tools": {"get_*": "sha256:" + "a" * 64}}),
    "pins_unknown_member": base(pins={"tools": {}, "prompts": {}}),
    "pins_mode_block": base(pins={"mode": "block", "tools": {}}),
    "pins_never_held": base(pins={"tools": {}, "hold_s": 0}),
    "pins_held_past_30_days": base(pins={"tools": {}, "hold_s": 2592001}),
    "catalogue_result_action_on_descriptions": base(catalogue={"descriptions": {"html": "block"}}),
    "catalogue_shadowing_on_results": base(catalogue={"results": {"shadowing": "flag"}}),
    "catalogue_unknown_check": base(catalogue={"descriptions": {"zero_width": "remove"}}),
    "catalogue_link_host_a_url": base(catalogue={"link_hosts": ["https://github.com/"]}),
    "catalogue_never_held": base(catalogue={"hold_s": 0}),
    "catalogue_held_past_30_days": base(catalogue={"hold_s": 2592001}),
    "catalogue_unlisted_calls_deny": base(catalogue={"unlisted_calls": "deny"}),
    "catalogue_other_tool_with_a_space": base(catalogue={"other_tools": ["send email"]}),
    "catalogue_unknown_member": base(catalogue={"result": "flag"}),
    "approval_without_cluster": base(approval={"token": "t"}),
    "approval_without_token": base(approval={"cluster": "approvals"}),
    "approval_with_both_tokens": base(approval={"cluster": "approvals", "token": "t", "token_env": "T"}),
    "approval_mode_later": base(approval={"cluster": "approvals", "token": "t", "mode": "later"}),
    "approval_hold_beyond_the_services_longest_poll": base(approval={"cluster": "a", "token": "t",
                                                                     "timeout_ms": 120001}),
    "approval_unknown_member": base(approval={"cluster": "approvals", "token": "t", "tokens": ["t"]}),
    "kill_switch_as_a_string": base(kill_switch="true"),
    "disabled_not_a_list": base(disabled="agent"),
}

# The schema accepts these; only the compiler can refuse them. Documented in
# docs/policy.md ("What only `check` catches").
COMPILER_ONLY = {
    "dlp_custom_pattern_not_a_regex": base(dlp={"custom": [{"id": "x", "pattern": "(", "label": "pii"}]}),
    "dlp_custom_pattern_matching_the_empty_string": base(dlp={"custom": [{"id": "x", "pattern": "a*", "label": "pii"}]}),
    "matches_not_a_regex": leaf(arg="/a", matches="(unclosed"),
    "resource_pattern_not_in_normal_form": with_rule(tools=None, resources=["https://Internal.Example.com/*"]),
    "resource_pattern_climbing_above_its_root": with_rule(tools=None, resources=["file:///../etc/*"]),
    "duplicate_rule_ids": base(rules=[rule(id="a"), rule(id="a")]),
    "duplicate_api_keys": base(identity={"api_keys": [{"sha256": HEX, "subject": "a"}, {"sha256": HEX, "subject": "b"}]}),
    "duplicate_dlp_custom_ids": base(dlp={"custom": [{"id": "x", "pattern": "X-[0-9]+", "label": "pii"},
                                                     {"id": "x", "pattern": "Y-[0-9]+", "label": "pii"}]}),
    "audit_max_buffered_below_max_batch": base(audit={"cluster": "c", "max_batch": 100, "max_buffered": 99}),
    "audit_max_buffered_bytes_below_max_batch_bytes": base(audit={"cluster": "c", "max_batch_bytes": 8192,
                                                                  "max_buffered_bytes": 4096}),
    "path_under_climbing_above_root": leaf(arg="/p", path_under="/../x"),
    "host_in_with_a_backslash": leaf(param="/uri", host_in=["a\\b.example"]),
    "jwt_payload_header_the_client_sets_in_capitals": base(identity={"jwt_payload_header": "Authorization"}),
    "time_hours_starting_where_they_end": leaf(time={"hours": "09:00-09:00", "utc_offset": "+00:00"}),
    "rate_limit_key_global_with_another_part": base(rate_limits=[{"id": "r", "key": ["global", "tool"],
                                                                  "tools": ["*"], "capacity": 1, "per_seconds": 1}]),
    "rate_limit_id_shared_with_a_rule": base(rules=[rule(id="a")], rate_limits=[
        {"id": "a", "key": ["subject"], "tools": ["*"], "capacity": 1, "per_seconds": 1}]),
    "envoy_rate_limit_headers_with_batches_evaluated": base(envoy={"rate_limit_headers": True},
                                                            limits={"batches": "evaluate"}),
    "result_cap_above_max_response_bytes": base(limits={"max_response_bytes": 4096,
                                                        "result_caps": [{"tools": ["fetch"], "max_bytes": 8192}]}),
    "max_result_bytes_above_the_default_max_response_bytes": base(limits={"max_result_bytes": 9 << 20}),
    "result_cap_after_a_catch_all": base(limits={"result_caps": [{"tools": ["*"], "max_bytes": 10},
                                                                 {"tools": ["fetch"], "max_bytes": 5}]}),
    "conditions_nested_deeper_than_32": with_rule(when=json.loads(
        '{"not":' * 32 + '{"arg": "/a", "eq": 1}' + "}" * 32)),
}


# --------------------------------------------------------------------------- policies in the docs

DOCS = [harness.REPO / "docs" / "policy.md", harness.REPO / "README.md"]


def doc_json_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", text, re.S)):
            out.append((f"{doc.name}#{i}", block))
    return out


DOC_BLOCKS = doc_json_blocks()


def doc_policies() -> list[tuple[str, Any]]:
    """Every ```json block of the docs that is a whole policy (has "version")."""
    out = []
    for name, block in DOC_BLOCKS:
        try:
            doc = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "version" in doc:
            out.append((name, doc))
    return out


def doc_conditions() -> list[tuple[str, Any]]:
    """Blocks of one condition per line (the operator examples)."""
    out = []
    for name, block in DOC_BLOCKS:
        # README's examples end in `   // comment`; a URI's `//` has no space before it.
        lines = [re.sub(r"\s+//\s.*$", "", ln).strip() for ln in block.strip().splitlines()]
        try:
            conds = [json.loads(ln) for ln in lines if ln]
        except json.JSONDecodeError:
            continue
        if len(conds) > 1 and all(isinstance(c, dict) and ("arg" in c or "param" in c or "all" in c
                                                          or "any" in c or "not" in c or "time" in c)
                                  for c in conds):
            out.extend((f"{name}:{j}", c) for j, c in enumerate(conds))
    return out


DOC_POLICIES = doc_policies()
DOC_CONDITIONS = doc_conditions()


def test_the_docs_hold_policies_and_conditions() -> None:
    names = {n.split("#")[0] for n, _ in DOC_POLICIES}
    assert names == {"policy.md", "README.md"}, names
    assert len(DOC_POLICIES) >= 3 and len(DOC_CONDITIONS) >= 6, (DOC_POLICIES, DOC_CONDITIONS)


@pytest.mark.parametrize("name", [n for n, _ in DOC_POLICIES])
def test_every_policy_in_the_docs_is_accepted_by_both(
        name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = dict(DOC_POLICIES)[name]
    ok, out = compiler_accepts(policy, tmp_path)
    assert ok, f"{name}: {out}"
    assert schema_errors(validator, policy) == []


@pytest.mark.parametrize("name", [n for n, _ in DOC_CONDITIONS])
def test_every_condition_in_the_docs_is_accepted_by_both(
        name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = with_rule(when=dict(DOC_CONDITIONS)[name])
    ok, out = compiler_accepts(policy, tmp_path)
    assert ok, f"{name}: {out}"
    assert schema_errors(validator, policy) == []


def test_the_agreement_table_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 30


@pytest.mark.parametrize("name", sorted(VALID))
def test_schema_and_compiler_accept(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = VALID[name]
    ok, out = compiler_accepts(policy, tmp_path)
    assert ok, f"compiler refuses {name}: {out}"
    assert schema_errors(validator, policy) == []


@pytest.mark.parametrize("name", sorted(INVALID))
def test_schema_and_compiler_refuse(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = INVALID[name]
    ok, out = compiler_accepts(policy, tmp_path)
    assert not ok, f"compiler accepts {name}"
    assert schema_errors(validator, policy), f"schema accepts {name}; the compiler said: {out.strip()}"


@pytest.mark.parametrize("name", sorted(COMPILER_ONLY))
def test_only_the_compiler_refuses(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    policy = COMPILER_ONLY[name]
    ok, out = compiler_accepts(policy, tmp_path)
    assert not ok, f"compiler accepts {name}: it is no compiler-only case"
    assert schema_errors(validator, policy) == [], (
        f"the schema now refuses {name}: move it to INVALID")
