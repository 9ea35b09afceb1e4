//! JSON-RPC error replies the filter sends instead of forwarding a request.
//! Codes and `error.data` members are the user contract (POLICY.md "What the caller sees").

use crate::decide::{Decision, Verdict};
use serde_json::{json, Map, Value};

pub const DENIED: i64 = -32010;
pub const APPROVAL: i64 = -32011;
pub const HEADER_MISMATCH: i64 = -32001;
pub const INVALID_REQUEST: i64 = -32600;

/// A reply the filter answers with itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u32,
    /// Empty for a denied notification (HTTP 403, no body).
    pub body: Vec<u8>,
    /// Set on refusals so clients and operators can tell the filter answered.
    pub rule: Option<String>,
}

impl LocalReply {
    pub fn json(status: u32, body: &Value, rule: Option<&str>) -> Self {
        LocalReply {
            status,
            body: body.to_string().into_bytes(),
            rule: rule.map(str::to_owned),
        }
    }
    pub fn empty(status: u32, rule: Option<&str>) -> Self {
        LocalReply {
            status,
            body: Vec::new(),
            rule: rule.map(str::to_owned),
        }
    }
}

pub fn error_object(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), json!(code));
    err.insert("message".into(), json!(message));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err})
}

/// The JSON-RPC error for a refused policy decision.
pub fn decision_error(id: Option<&Value>, d: &Decision) -> Value {
    match d.verdict {
        Verdict::Approval => error_object(
            id,
            APPROVAL,
            "approval required",
            // No approver is configured in this build, so nothing is pending.
            Some(json!({"rule": d.rule, "reason": d.reason, "approval_id": Value::Null})),
        ),
        _ => error_object(
            id,
            DENIED,
            "denied by policy",
            Some(json!({"rule": d.rule, "reason": d.reason})),
        ),
    }
}
