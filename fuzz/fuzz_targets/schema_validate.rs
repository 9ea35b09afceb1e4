//! The schema validator on arbitrary schemas and instances: a JSON array
//! `[schema, instance]` (anything else is read as a schema checked against
//! itself).
//!
//! Invariants:
//! * no schema compiles or validates into a panic or a hang (the step and
//!   depth bounds hold whatever a server declares);
//! * a violation's pointer names a value of the instance, or the instance
//!   itself (`""`), unless the check stopped on its bounds (`$schema`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::catalogue::schema::Schema;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (schema, instance) = match &doc {
        Value::Array(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
        other => (other, other),
    };
    let compiled = Schema::compile(schema);
    if let Err(v) = compiled.validate(instance) {
        assert!(
            v.keyword == "$schema"
                || v.keyword == "propertyNames"
                || instance.pointer(&v.pointer).is_some(),
            "{v:?}"
        );
    }
});
