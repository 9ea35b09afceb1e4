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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub max_json_depth: usize,
    pub batches: BatchMode,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_json_depth: 64,
            batches: BatchMode::Reject,
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
    r.finish(errs);
    out
}
