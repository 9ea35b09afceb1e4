//! `limits.result_caps` and `limits.max_result_bytes` over the fake host: an
//! answer to a `tools/call` larger than its tool's cap (the first matching
//! entry, else the default) is replaced by -32010 `result-cap` naming the cap
//! and the size, before DLP reads it; dry run counts, audits and forwards; an
//! SSE stream is held to the cap message by message.

use super::*;
use crate::exchange::{Exchange, Request, Response};
use crate::host::fake::FakeHost;
use crate::host::Counter;
use crate::json::sha256_hex;
use serde_json::{json, Value};

fn policy(mode: &str, limits: Value) -> Rc<CompiledPolicy> {
    let doc = json!({
        "version": 1,
        "mode": mode,
        "identity": {"api_keys": [{"sha256": sha256_hex(b"admin-key"), "subject": "adam", "roles": ["admin"]}]},
        "rules": [{"id": "all", "effect": "allow", "methods": ["*"]}],
        "limits": limits,
        "audit": {"cluster": "c", "path": "/", "authority": "a"}
    });
    match crate::policy::compile(&doc) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("{e:?}"),
    }
}

/// `fetch_page` 300 bytes, any other `fetch*` 200, everything else 1000.
fn caps() -> Value {
    json!({
        "result_caps": [
            {"tools": ["fetch_page"], "max_bytes": 300},
            {"tools": ["fetch*", "download"], "max_bytes": 200}
        ],
        "max_result_bytes": 1000
    })
}

fn host() -> FakeHost {
    FakeHost::new()
        .header(":method", "POST")
        .header("content-type", "application/json")
        .header("authorization", "Bearer admin-key")
}

fn count(h: &FakeHost, c: Counter) -> u64 {
    h.counters.get(&c).copied().unwrap_or(0)
}

/// A `tools/call` answer whose message is exactly `size` bytes long.
fn answer_of_size(id: u64, size: usize) -> String {
    let shell =
        json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": ""}]}})
            .to_string();
    let text = "a".repeat(size.saturating_sub(shell.len()));
    let out = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
        .to_string();
    assert_eq!(out.len(), size);
    out
}

/// Send `request`; the server answers `events` (one JSON body, or one SSE
/// event each). What the client read (each message) and the host.
fn exchange(
    p: &Rc<CompiledPolicy>,
    request: &Value,
    events: &[String],
    sse: bool,
) -> (Vec<Value>, FakeHost) {
    let mut x = Exchange::new(p.clone(), host());
    let body = request.to_string();
    assert!(x.request(Request::new(body.as_bytes())).forwarded());
    let (ct, body) = match sse {
        true => (
            "text/event-stream",
            events
                .iter()
                .map(|e| format!("event: message\ndata: {e}\n\n"))
                .collect::<String>(),
        ),
        false => ("application/json", events.concat()),
    };
    let out = x
        .respond(
            Response::new(body.as_bytes())
                .status("200")
                .content_type(ct)
                .chunk(37),
        )
        .downstream()
        .to_vec();
    x.done();
    let text = String::from_utf8_lossy(&out).into_owned();
    let messages = match sse {
        true => text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::Null))
            .collect(),
        false => vec![serde_json::from_str(&text).unwrap_or(Value::Null)],
    };
    (messages, std::mem::take(&mut x.host))
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

/// What a case expects of the answer: passed unchanged, or refused naming
/// the cap, where it is set, and the size.
#[derive(Debug)]
enum Want {
    Passes,
    Refused {
        max_bytes: u64,
        source: &'static str,
    },
}

#[test]
fn answers_are_held_to_their_tools_cap() {
    let enforce = policy("enforce", caps());
    let dry_run = policy("dry_run", caps());
    let uncapped = policy("enforce", json!({}));
    let cases: Vec<(&str, &Rc<CompiledPolicy>, &str, usize, Want)> = vec![
        ("under_its_cap_passes", &enforce, "fetch", 150, Want::Passes),
        (
            "exactly_its_cap_passes",
            &enforce,
            "fetch",
            200,
            Want::Passes,
        ),
        (
            "over_its_cap_is_refused_with_cap_and_size",
            &enforce,
            "fetch_url",
            201,
            Want::Refused {
                max_bytes: 200,
                source: "limits.result_caps[1]",
            },
        ),
        (
            "second_pattern_of_an_entry_matches_too",
            &enforce,
            "download",
            400,
            Want::Refused {
                max_bytes: 200,
                source: "limits.result_caps[1]",
            },
        ),
        (
            "first_matching_entry_wins_over_a_broader_later_one",
            &enforce,
            "fetch_page",
            250,
            Want::Passes,
        ),
        (
            "first_matching_entry_refuses_past_its_own_cap",
            &enforce,
            "fetch_page",
            301,
            Want::Refused {
                max_bytes: 300,
                source: "limits.result_caps[0]",
            },
        ),
        (
            "a_tool_no_entry_matches_gets_the_default",
            &enforce,
            "echo",
            1001,
            Want::Refused {
                max_bytes: 1000,
                source: "limits.max_result_bytes",
            },
        ),
        (
            "a_tool_no_entry_matches_passes_under_the_default",
            &enforce,
            "echo",
            999,
            Want::Passes,
        ),
        (
            "globs_are_case_sensitive_as_rules_are",
            &enforce,
            "FETCH",
            900,
            Want::Passes,
        ),
        (
            "dry_run_forwards_what_it_would_refuse",
            &dry_run,
            "fetch",
            5000,
            Want::Passes,
        ),
        (
            "no_cap_configured_passes_what_max_response_bytes_allows",
            &uncapped,
            "fetch",
            100_000,
            Want::Passes,
        ),
    ];
    for (name, p, tool, size, want) in cases {
        for sse in [false, true] {
            let answer = answer_of_size(9, size);
            let (got, h) = exchange(p, &call(9, tool), std::slice::from_ref(&answer), sse);
            let over = p
                .limits
                .result_cap(tool)
                .is_some_and(|c| size > c.max_bytes);
            match &want {
                Want::Passes => {
                    assert_eq!(
                        got,
                        [serde_json::from_str::<Value>(&answer).unwrap_or_default()],
                        "{name} sse={sse}"
                    );
                }
                Want::Refused { max_bytes, source } => {
                    let [v] = got.as_slice() else {
                        panic!("{name} sse={sse}: {got:?}")
                    };
                    assert!(v.get("result").is_none(), "{name} sse={sse}");
                    assert_eq!(v["id"], json!(9), "{name} sse={sse}");
                    let e = &v["error"];
                    assert_eq!(e["code"], json!(-32010), "{name} sse={sse}");
                    assert_eq!(e["data"]["rule"], json!("result-cap"), "{name} sse={sse}");
                    assert_eq!(e["data"]["tool"], json!(tool), "{name} sse={sse}");
                    assert_eq!(e["data"]["max_bytes"], json!(max_bytes), "{name} sse={sse}");
                    assert_eq!(e["data"]["bytes"], json!(size), "{name} sse={sse}");
                    let reason = e["data"]["reason"].as_str().unwrap_or_default();
                    for part in [tool, source, &size.to_string(), &max_bytes.to_string()] {
                        assert!(reason.contains(part), "{name} sse={sse}: {reason}");
                    }
                    // The reason says sizes, never a byte of what was refused.
                    assert!(!e.to_string().contains("aaaa"), "{name} sse={sse}");
                }
            }
            // Counted and audited whenever the cap was passed, dry run too.
            assert_eq!(
                count(&h, Counter::ResultCapRefused),
                u64::from(over),
                "{name} sse={sse}"
            );
            let records: Vec<_> = h
                .audited
                .iter()
                .flat_map(|e| e.catalogue.iter())
                .filter(|r| r.check == "result_cap")
                .collect();
            assert_eq!(records.len(), usize::from(over), "{name} sse={sse}");
            if let Some(r) = records.first() {
                assert_eq!(r.action, "blocked", "{name} sse={sse}");
                assert_eq!(r.tool.as_deref(), Some(tool), "{name} sse={sse}");
            }
            if let Some(e) = h.audited.first() {
                assert_eq!(
                    e.decision.dry_run,
                    p.mode == crate::policy::Mode::DryRun,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn an_sse_stream_is_held_to_the_cap_message_by_message() {
    let p = policy("enforce", caps());
    // A notification larger than the cap is no result: it passes (it is
    // bounded by max_response_bytes, and DLP reads it). The stream's one
    // answer is over the cap and is replaced; nothing else changes.
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "data": "b".repeat(500)}})
    .to_string();
    let answer = answer_of_size(9, 260);
    let (got, h) = exchange(&p, &call(9, "fetch"), &[progress.clone(), answer], true);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        serde_json::from_str::<Value>(&progress).unwrap_or_default()
    );
    assert_eq!(got[1]["error"]["data"]["rule"], json!("result-cap"));
    assert_eq!(got[1]["error"]["data"]["bytes"], json!(260));
    assert_eq!(count(&h, Counter::ResultCapRefused), 1);
}

#[test]
fn an_error_answer_and_a_tasks_result_are_capped_too() {
    let p = policy("enforce", caps());
    // An error carries text the model reads as a result does.
    let big_error = json!({"jsonrpc": "2.0", "id": 9,
        "error": {"code": -32000, "message": "c".repeat(400)}})
    .to_string();
    let (got, _) = exchange(
        &p,
        &call(9, "fetch"),
        std::slice::from_ref(&big_error),
        false,
    );
    assert_eq!(
        got[0]["error"]["data"]["rule"],
        json!("result-cap"),
        "{got:?}"
    );
    assert_eq!(got[0]["error"]["data"]["bytes"], json!(big_error.len()));
    // A task id names no tool: the smallest cap of the policy (200) holds.
    let task =
        json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/result", "params": {"taskId": "t1"}});
    for (size, refused) in [(200, false), (250, true)] {
        let (got, _) = exchange(&p, &task, &[answer_of_size(4, size)], false);
        let e = &got[0]["error"];
        assert_eq!(
            e["data"]["rule"] == json!("result-cap"),
            refused,
            "{size}: {got:?}"
        );
        if refused {
            assert_eq!(e["data"]["tool"], Value::Null);
            assert_eq!(e["data"]["max_bytes"], json!(200));
            assert!(
                e["data"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("task"),
                "{e}"
            );
        }
    }
}

#[test]
fn an_answer_over_its_cap_costs_no_scan() {
    // The same e-mail address under the cap is redacted (DLP read it); over
    // the cap the answer is refused before DLP: nothing found, nothing
    // counted, the address never in what the client reads.
    let p = policy("enforce", caps());
    for (size, refused) in [(190, false), (400, true)] {
        let pii = "write to jane.doe@example.com ";
        let shell = answer_of_size(9, size - pii.len());
        let answer = shell.replacen("\"text\":\"", &format!("\"text\":\"{pii}"), 1);
        assert_eq!(answer.len(), size);
        let (got, h) = exchange(&p, &call(9, "fetch"), &[answer], false);
        let found: u64 = h.findings.values().sum();
        assert_eq!(found == 0, refused, "{size}: {:?}", h.findings);
        assert!(!got[0].to_string().contains("jane.doe"), "{size}");
        assert_eq!(
            got[0]["error"]["data"]["rule"] == json!("result-cap"),
            refused,
            "{size}"
        );
    }
}

#[test]
fn a_batch_answer_measures_each_message_alone() {
    // Under `batches: evaluate` one JSON body may answer several calls:
    // each answer is held to its own tool's cap, measured as compact JSON.
    let mut limits = caps();
    if let Some(o) = limits.as_object_mut() {
        o.insert("batches".into(), json!("evaluate"));
    }
    let p = policy("enforce", limits);
    let batch = json!([call(1, "fetch"), call(2, "echo")]);
    let small = answer_of_size(1, 150);
    let large = answer_of_size(2, 1100);
    let (got, h) = exchange(&p, &batch, &[format!("[{small},{large}]")], false);
    let Some(answers) = got[0].as_array() else {
        panic!("{got:?}")
    };
    assert_eq!(
        answers[0],
        serde_json::from_str::<Value>(&small).unwrap_or_default()
    );
    assert_eq!(answers[1]["error"]["data"]["rule"], json!("result-cap"));
    assert_eq!(answers[1]["error"]["data"]["bytes"], json!(1100));
    assert_eq!(count(&h, Counter::ResultCapRefused), 1);
}
