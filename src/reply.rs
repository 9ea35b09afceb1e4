//! JSON-RPC error replies the filter sends instead of forwarding a request.
//! Codes and `error.data` members are the user contract (POLICY.md "What the caller sees").

use crate::decide::{Decision, Verdict};
use serde_json::{json, Map, Value};

pub const DENIED: i64 = -32010;
pub const APPROVAL: i64 = -32011;
/// Rate limited or budget exhausted (`error.data`: `rule`, `retry_after_ms`).
pub const RATE_LIMITED: i64 = -32012;
/// `HeaderMismatch` of the released 2026-07-28 revision (HTTP 400); the draft
/// SEP-2243 used -32001, which this filter answered before.
pub const HEADER_MISMATCH: i64 = -32020;
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0 internal error: the firewall could not apply its own decision.
pub const INTERNAL_ERROR: i64 = -32603;
pub const SENSITIVE_DATA: i64 = -32013;
/// A tool call refused by its pin (`error.data`: `tool`, `expected`, `actual`).
pub const PIN_MISMATCH: i64 = -32014;

/// The `error` member for a call refused by its pin (-32014).
pub fn pin_error(m: &crate::catalogue::pins::PinMismatch) -> Value {
    json!({
        "code": PIN_MISMATCH,
        "message": "tool not pinned or its definition changed",
        "data": m.error_data(),
    })
}

/// The `error` member for a result the catalogue checks refused (-32010,
/// rule `catalogue`): the checks and JSON pointers found, never the text.
pub fn catalogue_error(findings: &[crate::catalogue::Finding]) -> Value {
    let list: Vec<Value> = findings
        .iter()
        .map(|f| json!({"check": f.check.as_str(), "path": f.pointer}))
        .collect();
    let mut checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
    crate::sort::sort(&mut checks);
    checks.dedup();
    json!({
        "code": DENIED,
        "message": "result refused: the catalogue checks found injected content in it",
        "data": {
            "rule": crate::rule_id::RuleId::Catalogue.as_str(),
            "reason": format!("the catalogue checks found {} in the result (catalogue.results: block)", checks.join(", ")),
            "findings": list,
        }
    })
}

/// The `error` member for sensitive data (-32013): kinds and JSON pointers, never values.
pub fn sensitive_data_error(findings: &[crate::dlp::Finding], whereabouts: &str) -> Value {
    let list: Vec<Value> = findings
        .iter()
        .map(|f| json!({"kind": f.kind, "path": f.path}))
        .collect();
    json!({
        "code": SENSITIVE_DATA,
        "message": format!("sensitive data in {whereabouts}"),
        "data": {"rule": "dlp", "findings": list}
    })
}

/// A reply the filter answers with itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u32,
    /// Empty for a denied notification (HTTP 403, no body).
    pub body: Vec<u8>,
    /// Set on refusals so clients and operators can tell the filter answered.
    pub rule: Option<String>,
    /// A 401's `WWW-Authenticate` value (`Bearer` when `None`).
    pub challenge: Option<String>,
}

impl LocalReply {
    pub fn json(status: u32, body: &Value, rule: Option<&str>) -> Self {
        LocalReply {
            status,
            body: crate::json::to_bytes(body),
            rule: rule.map(str::to_owned),
            challenge: None,
        }
    }
    /// The reply's headers: its content type, the rule that refused (so
    /// clients and operators can tell the filter answered), and on a 401 the
    /// `WWW-Authenticate` challenge RFC 6750 §3 requires (MCP clients start
    /// their OAuth discovery from it).
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut headers = Vec::new();
        if !self.body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(rule) = self.rule.as_deref() {
            headers.push(("x-mcp-firewall-rule", rule));
        }
        if self.status == 401 {
            headers.push((
                "www-authenticate",
                self.challenge.as_deref().unwrap_or("Bearer"),
            ));
        }
        headers
    }

    pub fn empty(status: u32, rule: Option<&str>) -> Self {
        LocalReply {
            status,
            body: Vec::new(),
            rule: rule.map(str::to_owned),
            challenge: None,
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

/// The -32011 answer to a call the approval service did not let through
/// (pending, denied, expired, used, or the service unavailable).
/// `approval`: the approval's id and state, when the service named one.
pub fn approval_error(
    id: &Value,
    rule: &crate::rule_id::RuleId,
    message: &str,
    reason: &str,
    approval: Option<(&str, &str)>,
) -> Value {
    let (approval_id, state) = match approval {
        Some((id, state)) => (json!(id), json!(state)),
        None => (Value::Null, Value::Null),
    };
    let mut data = json!({"rule": rule.as_str(), "reason": reason, "approval_id": approval_id});
    if !state.is_null() {
        data["state"] = state;
    }
    with_error(
        Some(id),
        json!({"code": APPROVAL, "message": message, "data": data}),
    )
}

/// The JSON-RPC error for a refused policy decision.
pub fn decision_error(id: Option<&Value>, d: &Decision) -> Value {
    with_error(id, decision_error_member(d))
}

/// A JSON-RPC response carrying `error` (the member itself).
pub fn with_error(id: Option<&Value>, error: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error})
}

/// The `error` member for a refused policy decision.
pub fn decision_error_member(d: &Decision) -> Value {
    match d.verdict {
        Verdict::Approval => json!({
            "code": APPROVAL,
            "message": "approval required",
            // No approval was asked for (no approval service, a batch, an
            // anonymous caller): nothing is pending. The reason says which.
            "data": {"rule": d.rule.as_str(), "reason": d.reason, "approval_id": Value::Null}
        }),
        _ => json!({
            "code": DENIED,
            "message": "denied by policy",
            "data": {"rule": d.rule.as_str(), "reason": d.reason}
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_headers() {
        let cases = [
            (
                "refusal_names_its_rule",
                LocalReply::json(200, &json!({}), Some("no-env")),
                vec![
                    ("content-type", "application/json"),
                    ("x-mcp-firewall-rule", "no-env"),
                ],
            ),
            (
                "unauthenticated_is_challenged",
                LocalReply::json(401, &json!({}), None),
                vec![
                    ("content-type", "application/json"),
                    ("www-authenticate", "Bearer"),
                ],
            ),
            (
                "denied_notification_has_no_body",
                LocalReply::empty(403, Some("x")),
                vec![("x-mcp-firewall-rule", "x")],
            ),
        ];
        for (name, reply, want) in cases {
            assert_eq!(reply.headers(), want, "{name}");
        }
    }
}
