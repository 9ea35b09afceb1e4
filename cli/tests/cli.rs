//! The CLI as a user runs it: the real binary, real files, exit codes and output.

use std::io::Write;
use std::process::{Command, Stdio};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

// Test support outside a #[test] fn (which clippy.toml already allows): a
// binary that cannot be spawned or fed should stop the test loudly.
#[allow(clippy::expect_used)]
fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-firewall"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcp-firewall");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_prints_every_mistake_with_its_path() {
    let (code, out) = run(&["check", &fixture("three-mistakes.json")], "");
    assert_eq!(code, 1, "{out}");
    for path in ["$.mode:", "$.rules[0].effect:", "$.rules[1].tool:"] {
        assert!(out.contains(path), "missing {path} in {out}");
    }
}

#[test]
fn check_accepts_a_good_policy() {
    let (code, out) = run(&["check", &fixture("small.json")], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (2 rules"), "{out}");
}

#[test]
fn explain_names_the_rule_that_fired() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}"#;
    let (code, out) = run(
        &[
            "explain",
            &fixture("small.json"),
            "--caller",
            r#"{"roles":["reader"]}"#,
            msg,
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("DENY  rule=no-delete"), "{out}");
}

/// Each DLP finding is printed under the channel it was found in: the
/// arguments, or another member of `params` (`_meta` here).
#[test]
fn explain_prints_findings_under_their_channel() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","arguments":{"m":"glpat-_bkBl5pR8VAr0_UnPKWu"},"_meta":{"trace":"glpat-_bkBl5pR8VAr0_UnPKWu"}}}"#;
    let (_, out) = run(
        &[
            "explain",
            &fixture("small.json"),
            "--caller",
            r#"{"roles":["reader"]}"#,
            msg,
        ],
        "",
    );
    assert!(out.contains(" at /arguments/m "), "{out}");
    assert!(out.contains(" at /params/_meta/trace "), "{out}");
    assert!(!out.contains("glpat-"), "{out}");
}

#[test]
fn explain_reads_the_message_from_stdin() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x"}}"#;
    let (_, out) = run(
        &[
            "explain",
            &fixture("small.json"),
            "--caller",
            r#"{"roles":["reader"]}"#,
        ],
        msg,
    );
    assert!(out.starts_with("ALLOW  rule=read"), "{out}");
}

#[test]
fn test_command_passes_good_expectations() {
    let (code, out) = run(&["test", &fixture("small.json")], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
}

#[test]
fn test_command_fails_on_wrong_expectation() {
    let (code, out) = run(&["test", &fixture("failing")], "");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  wrong expectation"), "{out}");
}

#[test]
fn hash_key_prints_entry_without_the_token() {
    let (code, out) = run(
        &["hash-key", "--subject", "ci-bot", "--role", "reader"],
        "test\n",
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        v["sha256"],
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    assert_eq!(v["subject"], "ci-bot");
    assert!(!out.contains("\"test\""));
}

#[test]
fn envoy_config_embeds_a_policy_that_round_trips() {
    let (code, out) = run(
        &[
            "envoy-config",
            &fixture("small.json"),
            "--wasm",
            "/x/f.wasm",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("value: "))
        .expect("value line");
    let literal = line.trim_start().trim_start_matches("value: ");
    let inner: String = serde_json::from_str(literal).expect("JSON string literal");
    let policy: serde_json::Value = serde_json::from_str(&inner).expect("policy JSON");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("small.json")).expect("read"))
            .expect("json");
    assert_eq!(policy, original);
}

#[test]
fn envoy_config_refuses_a_broken_policy() {
    let (code, out) = run(&["envoy-config", &fixture("three-mistakes.json")], "");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("$.rules[0].effect"), "{out}");
}

#[test]
fn shipped_policies_pass_their_policy_tests() {
    let dir = format!("{}/../policies", env!("CARGO_MANIFEST_DIR"));
    let (code, out) = run(&["test", &dir], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn explain_shows_the_condition_that_decided() {
    let policy = format!(
        "{}/../policies/examples/payments.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_refund","arguments":{"amount":"1000","currency":"usd"}}}"#;
    let (_, out) = run(
        &[
            "explain",
            &policy,
            "--caller",
            r#"{"roles":["support"]}"#,
            msg,
        ],
        "",
    );
    assert!(out.starts_with("DENY  rule=default-deny"), "{out}");
    assert!(out.contains("condition: rule \"support-refund\""), "{out}");
    assert!(out.contains("/amount"), "{out}");
}

#[test]
fn explain_decides_at_the_time_given_and_shows_it_on_the_window_clock() {
    let policy = format!(
        "{}/../policies/examples/change-window.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let msg = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{}}}"#;
    let explain = |at: &str| {
        run(
            &[
                "explain",
                &policy,
                "--caller",
                r#"{"roles":["ops"]}"#,
                "--at",
                at,
                msg,
            ],
            "",
        )
    };
    // Thursday 10:00 at +01:00, given in UTC and in the window's own offset.
    for at in ["2026-12-03T09:00:00Z", "2026-12-03T10:00:00+01:00"] {
        let (code, out) = explain(at);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.starts_with("ALLOW  rule=deploy-in-hours"),
            "{at}: {out}"
        );
    }
    let (code, out) = explain("2026-12-05T10:00:00Z");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("DENY  rule=default-deny"), "{out}");
    assert!(
        out.contains(
            "condition: rule \"deploy-in-hours\" (allow): time mon,tue,wed,thu,fri 09:00-17:30 \
             +01:00: request at 2026-12-05 sat 11:00 +01:00, does not hold → false"
        ),
        "{out}"
    );
    let (code, out) = explain("tomorrow");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("--at: \"tomorrow\" is not an RFC 3339 time"),
        "{out}"
    );
}

#[test]
fn envoy_config_ecds_is_a_discovery_response_with_the_policy() {
    let (code, out) = run(&["envoy-config", &fixture("small.json"), "--ecds"], "");
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let res = &v["resources"][0];
    assert_eq!(res["name"], "mcp_firewall");
    assert_eq!(
        res["@type"],
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    );
    let cfg = &res["typed_config"]["config"];
    assert_eq!(cfg["failure_policy"], "FAIL_RELOAD");
    let policy: serde_json::Value =
        serde_json::from_str(cfg["configuration"]["value"].as_str().expect("value"))
            .expect("policy");
    assert_eq!(policy["rules"][1]["id"], "no-delete");
    assert_eq!(v["version_info"].as_str().map(str::len), Some(64));
}

#[test]
fn envoy_config_escapes_the_line_separators_yaml_would_fold() {
    // YAML reads U+0085, U+2028 and U+2029 as line breaks and folds them into
    // spaces: the policy Envoy loaded would differ from the one `check` read.
    let dir = std::env::temp_dir().join(format!("mcp-fw-cli-yaml-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("policy.json");
    let policy = serde_json::json!({
        "version": 1,
        "identity": {"api_keys": [{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                   "subject": "a\u{2028}b\u{2029}c\u{85}d", "roles": ["reader"]}]},
        "rules": [{"id": "read", "effect": "allow", "roles": ["reader"], "tools": ["get_*"]}]
    });
    let _ = std::fs::write(&path, policy.to_string());
    let (code, out) = run(&["envoy-config", &path.to_string_lossy()], "");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(['\u{85}', '\u{2028}', '\u{2029}']), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("value: "))
        .unwrap_or_default();
    let inner: String =
        serde_json::from_str(line.trim_start().trim_start_matches("value: ")).unwrap_or_default();
    let loaded: serde_json::Value = serde_json::from_str(&inner).unwrap_or_default();
    assert_eq!(loaded, policy);
}

/// The policy embedded in `envoy-config` output (its `value:` line).
#[allow(clippy::expect_used)]
fn embedded_policy(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("value: "))
        .expect("value line");
    let literal = line.trim_start().trim_start_matches("value: ");
    let inner: String = serde_json::from_str(literal).expect("JSON string literal");
    serde_json::from_str(&inner).expect("policy JSON")
}

#[test]
fn envoy_config_full_with_audit_collector_adds_the_section_and_the_cluster() {
    let (code, out) = run(
        &[
            "envoy-config",
            &fixture("small.json"),
            "--full",
            "--audit-collector",
            "collector:8600",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let policy = embedded_policy(&out);
    assert_eq!(
        policy["audit"],
        serde_json::json!({"cluster": "audit_collector"})
    );
    assert_eq!(
        policy["rules"][1]["id"], "no-delete",
        "the rest is the file's"
    );
    assert!(
        out.contains("name: \"audit_collector\"") || out.contains("name: audit_collector"),
        "{out}"
    );
    assert!(out.contains("\"collector\""), "{out}");
    assert!(out.contains("port_value: 8600"), "{out}");
}

#[test]
fn envoy_config_audit_collector_needs_full_and_a_port() {
    let (code, out) = run(
        &[
            "envoy-config",
            &fixture("small.json"),
            "--audit-collector",
            "c:1",
        ],
        "",
    );
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(
        &[
            "envoy-config",
            &fixture("small.json"),
            "--full",
            "--audit-collector",
            "collector",
        ],
        "",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--audit-collector: expected host:port"),
        "{out}"
    );
}

#[test]
fn envoy_config_keeps_the_rate_limit_descriptors_from_the_server() {
    // With envoy.rate_limit_headers the filter writes the caller's subject and
    // tenant into request headers for Envoy's rate limit filter: the route
    // must remove them before the upstream (--full does; the bare entry says so).
    let dir = std::env::temp_dir().join(format!("mcp-fw-cli-rlh-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("policy.json");
    let policy = serde_json::json!({
        "version": 1,
        "identity": {"api_keys": [{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                   "subject": "agent", "roles": ["reader"]}]},
        "rules": [{"id": "read", "effect": "allow", "roles": ["reader"], "tools": ["get_*"]}],
        "envoy": {"allow_on_headers_stop_iteration": true, "rate_limit_headers": true}
    });
    let _ = std::fs::write(&path, policy.to_string());
    let (full_code, full) = run(&["envoy-config", &path.to_string_lossy(), "--full"], "");
    let (bare_code, bare) = run(&["envoy-config", &path.to_string_lossy()], "");
    let (off_code, off) = run(&["envoy-config", &fixture("small.json")], "");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        (full_code, bare_code, off_code),
        (0, 0, 0),
        "{full}{bare}{off}"
    );
    let removed = full
        .split("request_headers_to_remove:")
        .nth(1)
        .unwrap_or_default();
    for h in mcp_firewall::descriptors::HEADERS {
        assert!(removed.contains(h), "{h} not removed:\n{full}");
        assert!(bare.contains(h), "{h} not named:\n{bare}");
        assert!(!off.contains(h), "named without the export:\n{off}");
    }
    assert!(bare.contains("request_headers_to_remove"), "{bare}");
    // No Wasm filter sees an interim head: the bootstrap keeps Envoy from
    // passing the server's on (test_transport_attack2.py).
    assert!(full.contains("proxy_100_continue: false"), "{full}");
    assert!(bare.contains("proxy_100_continue false"), "{bare}");
}
