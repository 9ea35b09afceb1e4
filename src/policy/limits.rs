//! The `limits` section: sizes, JSON depth and batches.

use crate::config::{keywords, Errors, ObjReader};
use crate::json::MAX_SUPPORTED_DEPTH;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    Reject,
    Evaluate,
}

keywords!(BatchMode {
    Reject => "reject",
    Evaluate => "evaluate",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub max_json_depth: usize,
    pub batches: BatchMode,
    /// Entries of the rate-limit and budget table (see `meter::table`).
    pub metered_keys: u64,
    /// The request header naming the caller's conversation, for rate limits
    /// keyed by `session` (lower case); `None` = `Mcp-Session-Id`.
    pub conversation_header: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_json_depth: 64,
            batches: BatchMode::Reject,
            metered_keys: 16_384,
            conversation_header: None,
        }
    }
}

/// Compile the `limits` section at `$.limits` (`None` when absent: the defaults).
pub(crate) fn compile(v: Option<&Value>, errs: &mut Errors) -> Limits {
    let mut out = Limits::default();
    let Some(v) = v else { return out };
    let Some(mut r) = ObjReader::new(v, "$.limits", errs) else {
        return out;
    };
    // Envoy buffers the whole body for us; 64 MiB keeps a hostile client from
    // making one request pin a worker's memory.
    if let Some(n) = r.uint("max_request_bytes", 1, 64 << 20, errs) {
        out.max_request_bytes = n as usize;
    }
    if let Some(n) = r.uint("max_response_bytes", 1, 256 << 20, errs) {
        out.max_response_bytes = n as usize;
    }
    if let Some(n) = r.uint("max_json_depth", 2, MAX_SUPPORTED_DEPTH as u64, errs) {
        out.max_json_depth = n as usize;
    }
    if let Some(b) = r.keyword("batches", errs) {
        out.batches = b;
    }
    // Shared data cannot be deleted in the proxy-wasm ABI, so the table size
    // is the memory bound: about 60 bytes per entry.
    if let Some(n) = r.uint(
        "metered_keys",
        crate::meter::table::WAYS as u64,
        1 << 22,
        errs,
    ) {
        out.metered_keys = n;
    }
    if let Some(h) = r.string("conversation_header", errs) {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid && !h.starts_with(':') {
            out.conversation_header = Some(h.to_owned());
        } else {
            errs.push(
                "$.limits.conversation_header",
                "a header name in lower case: letters, digits and -",
            );
        }
    }
    r.finish(errs);
    out
}
