//! The poisoning checks on arbitrary tool definitions and result texts.
//!
//! Invariants:
//! * no input panics (the checks run on whatever a server lists or returns);
//! * a finding never holds the text it was found in: its reason is one of
//!   the fixed reasons, and its pointer names a string of the input;
//! * the checks do not depend on where a string sits: the same text as a
//!   description and as a result's text item gives the same set of checks
//!   (shadowing aside, which only definitions have).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::catalogue::{Check, Inspector, OtherTools};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let inspector = Inspector::default();
    let others = OtherTools::new(["send_email", "get_file_contents", "fetch"]);
    if let Ok(tool) = serde_json::from_slice::<Value>(data) {
        for f in inspector.inspect_tool(&tool, &others) {
            assert!(tool.pointer(&f.pointer).is_some() || f.pointer.is_empty(), "{f:?}");
        }
        let _ = inspector.inspect_result(&tool);
    }
    let text = String::from_utf8_lossy(data);
    let as_result: BTreeSet<Check> = inspector.inspect_text(&text).iter().map(|f| f.check).collect();
    let as_tool: BTreeSet<Check> = inspector
        .inspect_tool(&json!({"description": text}), &OtherTools::default())
        .iter()
        .map(|f| f.check)
        .collect();
    assert_eq!(as_result, as_tool, "the same text read differently as a result and as a description");
    for f in inspector.inspect_text(&text) {
        assert!(f.reason.len() < 80 && !f.reason.is_empty());
    }
});
