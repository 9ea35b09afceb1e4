//! What `schemas` costs natively: compiling a tool's declared schemas (once
//! per list and VM), and per call the shared-data read, the cache lookup and
//! the validation of the arguments.
//!
//! `cargo run --release --example bench_schemas` prints medians of several
//! rounds (wall clock; the machine is shared, so read them as orders of
//! magnitude).

use mcp_firewall::catalogue::schema::Schema;
use mcp_firewall::catalogue::schemas::{
    check, declared, recall, remember, CompileBudget, SchemaMode, SchemaPolicy, Side,
};
use mcp_firewall::store::MemoryStore;
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::time::Instant;

/// A schema as the Python SDK writes one for a model with a nested list of
/// items, an optional member, an enum and bounds (1.1 KB of JSON).
fn order_schema() -> Value {
    json!({
        "type": "object",
        "title": "add_orderArguments",
        "properties": {
            "customer": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_-]+$", "title": "Customer"},
            "items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/$defs/Item"}, "title": "Items"},
            "priority": {"enum": ["low", "normal", "high"], "default": "normal", "title": "Priority"},
            "note": {"anyOf": [{"type": "string", "maxLength": 500}, {"type": "null"}], "default": null, "title": "Note"},
            "deliver_by": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}], "default": null},
            "express": {"type": "boolean", "default": false}
        },
        "required": ["customer", "items"],
        "additionalProperties": false,
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "name": {"type": "string", "maxLength": 200},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 1000}
                },
                "required": ["sku", "qty"],
                "additionalProperties": false
            }
        }
    })
}

fn arguments(items: usize) -> Value {
    let list: Vec<Value> = (0..items)
        .map(|i| json!({"sku": format!("ABC-{:04}", i % 10_000), "name": "a cup of tea", "qty": 2}))
        .collect();
    json!({"customer": "acme_corp", "items": list, "priority": "high", "note": null, "express": true})
}

fn median_ns(rounds: usize, iters: u32, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let schema = order_schema();
    let text = serde_json::to_string(&schema).unwrap_or_default();
    let compile = median_ns(9, 2_000, || {
        black_box(Schema::compile(black_box(&schema)));
    });
    println!(
        "compile one inputSchema ({} bytes): {:.1} µs",
        text.len(),
        compile / 1000.0
    );

    let compiled = Schema::compile(&schema);
    for items in [1usize, 10, 100] {
        let args = arguments(items);
        let bytes = args.to_string().len();
        assert!(compiled.validate(&args).is_ok());
        let v = median_ns(9, 5_000, || {
            black_box(compiled.validate(black_box(&args)).is_ok());
        });
        println!(
            "validate arguments with {items} items ({bytes} bytes): {:.2} µs",
            v / 1000.0
        );
    }
    let mut bad = arguments(10);
    bad["items"][7]["colour"] = json!("red");
    let v = median_ns(9, 5_000, || {
        black_box(compiled.validate(black_box(&bad)).is_err());
    });
    println!(
        "validate arguments failing at /items/7/colour: {:.2} µs",
        v / 1000.0
    );

    // Per call as the filter does it: the shared-data read (copying the
    // stored schemas), the VM cache by digest, the check.
    let store = MemoryStore::new();
    let mut entry = Map::new();
    entry.insert("name".into(), json!("add_order"));
    entry.insert("inputSchema".into(), schema.clone());
    let d = declared("add_order", &entry, &mut CompileBudget::default());
    if remember(&store, "orders", &[d]).is_err() {
        return;
    }
    let policy = SchemaPolicy {
        input: SchemaMode::Enforce,
        ..SchemaPolicy::default()
    };
    let args = arguments(1);
    let per_call = median_ns(9, 5_000, || {
        let known = recall(&store, "orders", "add_order", &Default::default());
        black_box(check(
            &policy,
            Side::Input,
            SchemaMode::Enforce,
            "add_order",
            &known,
            Some(&args),
            &Default::default(),
        ));
    });
    println!(
        "per call (read + cache + validate, 1 item): {:.2} µs",
        per_call / 1000.0
    );
    let read_only = median_ns(9, 5_000, || {
        black_box(recall(&store, "orders", "add_order", &Default::default()));
    });
    println!(
        "  of which the read and the cache lookup: {:.2} µs",
        read_only / 1000.0
    );
}
