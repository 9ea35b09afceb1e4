//! Our strict JSON reader against the reference reader it wraps.
//!
//! Invariants:
//! * `parse_strict` and `parse_strict_folded` (the direct reader, then
//!   serde_json's where it declines) give exactly what serde_json's reader
//!   alone gives through the same checks: the same value (and the same text
//!   written back: `-0.0` equals `0.0`), or the same refusal;
//! * when `parse_strict` accepts, `serde_json::from_slice` accepts too and
//!   gives an equal value: the strict reader may only refuse more (duplicate
//!   keys, depth, invalid UTF-8), never read something differently;
//! * `canonical()` of an accepted value parses back (strictly, and with
//!   serde_json) to an equal value, and is a fixed point: the canonical form of
//!   the re-read value is byte-identical. Pins and the audit chain hash this
//!   text, so a value whose canonical form drifts would break a pin or a chain;
//! * `json::to_bytes` writes what `to_string` writes (rewritten bodies);
//! * `response::mark_private`, when it splices the private mark into an
//!   accepted text whose `result` object has no `cacheScope`, gives a text
//!   the strict reader accepts and reads as that value with
//!   `result.cacheScope = "private"`: what writing the document out says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::json::{
    canonical, parse_strict, parse_strict_by_reference, parse_strict_folded, to_bytes, KeyCheck,
};
use mcp_firewall::response::mark_private;
use serde_json::Value;

const DEPTH: usize = 32;

fuzz_target!(|data: &[u8]| {
    for keys in [KeyCheck::Exact, KeyCheck::Folded] {
        let direct = match keys {
            KeyCheck::Exact => parse_strict(data, DEPTH),
            KeyCheck::Folded => parse_strict_folded(data, DEPTH),
        };
        let reference = parse_strict_by_reference(data, DEPTH, keys);
        assert_eq!(direct, reference, "the direct reader and the reference differ");
        if let (Ok(d), Ok(r)) = (&direct, &reference) {
            assert_eq!(d.to_string(), r.to_string(), "the same value written differently");
        }
    }
    let Ok(ours) = parse_strict(data, DEPTH) else {
        return;
    };
    match serde_json::from_slice::<Value>(data) {
        Ok(reference) => assert_eq!(ours, reference, "serde_json reads the input differently"),
        Err(e) => panic!("parse_strict accepted what serde_json refuses: {e}"),
    }

    let text = canonical(&ours);
    let strict = match parse_strict(text.as_bytes(), DEPTH) {
        Ok(v) => v,
        Err(e) => panic!("canonical form refused by parse_strict: {e}\n{text}"),
    };
    assert_eq!(
        strict, ours,
        "canonical form reads back differently\n{text}"
    );
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => assert_eq!(v, ours, "serde_json reads the canonical form differently"),
        Err(e) => panic!("canonical form refused by serde_json: {e}\n{text}"),
    }
    assert_eq!(
        canonical(&strict),
        text,
        "canonical form is not a fixed point"
    );

    assert_eq!(
        to_bytes(&ours),
        ours.to_string().into_bytes(),
        "to_bytes and to_string differ"
    );
    let unscoped = ours
        .get("result")
        .and_then(Value::as_object)
        .is_some_and(|r| !r.contains_key("cacheScope"));
    if let (true, Some(spliced)) = (unscoped, mark_private(data)) {
        let mut want = ours.clone();
        want["result"]["cacheScope"] = Value::String("private".into());
        match parse_strict(&spliced, DEPTH) {
            Ok(v) => assert_eq!(v, want, "the spliced mark reads differently"),
            Err(e) => panic!(
                "the spliced text is refused: {e}\n{}",
                String::from_utf8_lossy(&spliced)
            ),
        }
    }
});
