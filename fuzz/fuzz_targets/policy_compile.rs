//! The policy compiler on arbitrary configuration text (Envoy hands the plugin
//! configuration to `on_configure` verbatim).
//!
//! Invariants: never panics (a panic at configure time leaves the listener
//! without a filter); a refusal always names at least one error, every error
//! path is a JSON path rooted at `$`, and every message says something.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::policy::compile_str;

fuzz_target!(|data: &[u8]| {
    if let Err(errors) = compile_str(data) {
        assert!(!errors.is_empty(), "refused without an error");
        for e in &errors {
            assert!(e.path.starts_with('$'), "error path not rooted at $: {e:?}");
            assert!(!e.msg.is_empty(), "error without a message: {e:?}");
        }
    }
});
