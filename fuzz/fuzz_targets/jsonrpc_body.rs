//! The request-body parser the filter runs on every POST, then the step that
//! turns a message into what the rules see (target, normalised resource URI).
//!
//! Invariants:
//! * neither `parse_body` nor `call_of` panics (a panic kills the Wasm VM);
//! * whatever `parse_body` accepts survives a round trip: the document
//!   re-serialised by serde_json (what a server or our own rewriting would
//!   emit) is still accepted by `parse_strict` with the same depth limit, reads
//!   as the same value, and `parse_body` reads it as the same messages. A
//!   failure here means two spellings of one document are decided differently;
//! * no object in an accepted body has two keys equal under ASCII case
//!   folding (a weaker fold than the one parse_body applies, computed here
//!   independently): a case-insensitive decoder would read one as the other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::decide::call_of;
use mcp_firewall::json::parse_strict;
use mcp_firewall::jsonrpc::{name_problem, parse_body, Body, Message, NameKind, MAX_EXACT_ID};
use std::collections::HashSet;
use serde_json::Value;

const DEPTH: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_body(data, DEPTH) else {
        return;
    };
    let messages = match &body {
        Body::Single(m) => std::slice::from_ref(m),
        Body::Batch(ms) => ms.as_slice(),
    };
    let mut ids = HashSet::new();
    for m in messages {
        if let Some(id) = m.id() {
            let ok = id.is_string() || id.as_i64().is_some_and(|i| i.abs() <= MAX_EXACT_ID);
            assert!(ok, "accepted id {id}");
            let text = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
            let first = ids.insert((matches!(m, Message::Request { .. }), text));
            assert!(
                first || matches!(body, Body::Single(_)),
                "accepted a batch repeating the id {id}"
            );
        }
        if let Some(method) = m.method() {
            assert_eq!(name_problem(NameKind::Method, method), None, "accepted method {method:?}");
        }
        if call_of(m).is_ok() {
            let kind = match m.method() {
                Some("tools/call") => NameKind::Tool,
                Some("prompts/get") => NameKind::Prompt,
                _ => continue,
            };
            let name = m.params().get("name").and_then(Value::as_str).unwrap_or_default();
            assert_eq!(name_problem(kind, name), None, "rules would see the name {name:?}");
        }
    }

    // parse_body does not hand back the document, so read it again (it must
    // succeed: parse_body just did the same).
    let doc = match parse_strict(data, DEPTH) {
        Ok(doc) => doc,
        Err(e) => panic!("parse_body accepted what parse_strict refuses: {e}"),
    };
    assert_no_ascii_folded_keys(&doc);
    let again = match serde_json::to_vec(&doc) {
        Ok(bytes) => bytes,
        Err(e) => panic!("serde_json cannot serialise an accepted document: {e}"),
    };
    match parse_strict(&again, DEPTH) {
        Ok(v) => assert_eq!(v, doc, "re-serialised document reads differently"),
        Err(e) => panic!(
            "re-serialised document refused: {e}\n{}",
            String::from_utf8_lossy(&again)
        ),
    }
    assert_eq!(
        parse_body(&again, DEPTH).ok(),
        Some(body),
        "re-serialised body parses to different messages"
    );
});

fn assert_no_ascii_folded_keys(v: &Value) {
    match v {
        Value::Object(m) => {
            let mut folded: Vec<String> = m.keys().map(|k| k.to_ascii_lowercase()).collect();
            folded.sort();
            let n = folded.len();
            folded.dedup();
            assert_eq!(folded.len(), n, "accepted keys that fold together: {:?}", m.keys());
            m.values().for_each(assert_no_ascii_folded_keys);
        }
        Value::Array(items) => items.iter().for_each(assert_no_ascii_folded_keys),
        _ => {}
    }
}
