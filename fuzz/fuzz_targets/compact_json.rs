//! `compact_object_members` (the audit collector's one-pass check of a line as
//! its writer hashed it) against serde_json.
//!
//! Invariants:
//! * when it accepts, serde_json reads the text too, as an object nested at
//!   most `DEPTH` deep, and the members it handed over are that object's: as
//!   many (keys unique: every object's keys are in increasing order), each
//!   value's text reading back to the same value;
//! * when serde_json reads an object within the depth and writes it back byte
//!   for byte (a compact text with sorted keys, as serde_json and `canonical`
//!   write it), it accepts unless a key needs an escape (refused on purpose):
//!   the collector's fast path never refuses what the filter writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::json::compact::compact_object_members;
use serde_json::Value;

const DEPTH: usize = 16;

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

fn keys_need_no_escape(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, x)| {
            serde_json::to_string(k).is_ok_and(|q| q.len() == k.len() + 2) && keys_need_no_escape(x)
        }),
        Value::Array(a) => a.iter().all(keys_need_no_escape),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut members: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let ours = compact_object_members(data, DEPTH, |k, v| {
        members.push((k.to_vec(), v.to_vec()));
        true
    });
    let reference = serde_json::from_slice::<Value>(data);
    if ours {
        let v = match &reference {
            Ok(v) => v,
            Err(e) => panic!("accepted what serde_json refuses: {e}"),
        };
        let Some(object) = v.as_object() else {
            panic!("accepted a value that is not an object")
        };
        assert!(depth_of(v) <= DEPTH, "accepted a text nested too deep");
        assert_eq!(members.len(), object.len(), "a duplicate key or a lost member");
        for (k, text) in &members {
            let key = String::from_utf8_lossy(k);
            let value: Value = serde_json::from_slice(text).unwrap_or(Value::Null);
            assert_eq!(object.get(key.as_ref()), Some(&value), "member {key}");
        }
    } else if let Ok(v) = &reference {
        let compact = serde_json::to_vec(v).is_ok_and(|text| text == data);
        // Refused on purpose: a key written with an escape.
        let plain_keys = v.is_object() && keys_need_no_escape(v);
        assert!(
            !(compact && plain_keys && depth_of(v) <= DEPTH),
            "refused a compact object serde_json reads and writes identically"
        );
    }
});
