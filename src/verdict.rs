//! THE decision on a request. From what Envoy established (the request
//! headers, the caller's identity, the session binding, the audit trail's
//! back-pressure) and the body, one function per phase decides everything the
//! filter will do with the request: refuse it before any policy, refuse
//! messages by rule, kill switch, session binding or DLP, rewrite redacted
//! arguments, and which answers the response side must filter or scan.
//!
//! The filter (`filter.rs`) only applies the verdict: counters, audit events,
//! host calls. The CLI (`explain`, `test`) calls [`judge`], the same two
//! phases in a row, so what it prints is what the filter does (a test runs
//! every example case through both and requires the same answer).
//!
//! Two phases because Envoy gives the headers first: a request refused on its
//! headers is answered before its body is read (and buffered). Dry run is a
//! property of how a verdict is applied, not of the decision: the verdict is
//! the enforced one, and only the work whose *result* differs in dry run
//! (redacting instead of scanning, scanning a refused request so the audit
//! shows what DLP would have done) reads the policy's mode.

use crate::decide::{decide_message, kill_switch, Catalogue, Decision, Verdict as Outcome};
use crate::dlp::{Action as DlpAction, Finding};
use crate::identity::{Caller, IdentityError, Via};
use crate::json::case_variant;
use crate::jsonrpc::{self, id_key, AnswerMember, Body, Message};
use crate::media_type::{self, MediaTypeError};
use crate::policy::{BatchMode, CompiledPolicy, Mode};
use crate::reply::{self, LocalReply};
use crate::response::ResponsePlan;
use crate::rule_id::RuleId;
use serde_json::{json, Value};

/// Request headers the filter reads, so a server cannot be shown a second
/// copy the filter did not check (servers pick the first, the last, or join
/// them). Envoy joins `content-type` and `authorization` lines itself.
pub const SINGLE_HEADERS: [&str; 9] = [
    "authorization",
    "content-type",
    "content-encoding",
    "content-length",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// What the filter reads from the request headers (the JWT payload and the
/// credential go to identity resolution, the session id to the binding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `:method`.
    pub method: String,
    /// `content-type` ("" when absent).
    pub content_type: String,
    pub content_encoding: Option<String>,
    pub content_length: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    /// The first header of [`SINGLE_HEADERS`] (or the JWT payload header)
    /// that came on more than one line.
    pub repeated_header: Option<String>,
    /// The `Mcp-Session-Id` the request named.
    pub session_id: Option<String>,
    /// The headers ended the stream: no body follows.
    pub ends_stream: bool,
}

/// What binding the request's `Mcp-Session-Id` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// No id, binding off, or the id is this caller's.
    Fine,
    /// The id is bound to another identity.
    Stolen,
    /// No room to bind a new session now.
    TableFull,
    /// Shared data failed.
    Unavailable,
}

/// A refusal before any policy: HTTP status, JSON-RPC code, why, and the
/// filter's own rule id for counters and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u32,
    pub code: i64,
    pub message: String,
    pub rule: RuleId,
}

impl Refusal {
    pub fn new(status: u32, code: i64, rule: RuleId, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            rule,
        }
    }

    fn invalid(rule: RuleId, message: impl Into<String>) -> Self {
        Refusal::new(400, reply::INVALID_REQUEST, rule, message)
    }

    /// The body is larger than `limits.max_request_bytes` (also checked while
    /// it streams in, before it is whole).
    pub fn too_large(policy: &CompiledPolicy) -> Self {
        Refusal::new(
            413,
            reply::INVALID_REQUEST,
            RuleId::TooLarge,
            format!(
                "body larger than limits.max_request_bytes ({})",
                policy.limits.max_request_bytes
            ),
        )
    }

    /// What the caller receives.
    pub fn reply(&self) -> LocalReply {
        let body = reply::error_object(None, self.code, &self.message, None);
        LocalReply::json(self.status, &body, None)
    }
}

/// The verdict on the request headers.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadVerdict {
    /// Refused before any policy.
    Refuse(Refusal),
    /// A GET or DELETE refused by the kill switch or a standing refusal (403).
    Deny(Decision),
    /// A GET or DELETE: nothing to decide in a body. When the headers did not
    /// end the stream it is held until it ends, forwarded only if no body byte
    /// came. `strip_credential`: remove the `Authorization` the caller was
    /// identified by before it goes on.
    Stream {
        hold_until_end: bool,
        strip_credential: bool,
    },
    /// A POST: read the whole body, then [`judge_body`]. `may_rewrite` when
    /// DLP may redact it (its length may change); `strip_credential` as above.
    ReadBody {
        may_rewrite: bool,
        strip_credential: bool,
    },
}

/// A refusal that holds for every message of the request whatever it says:
/// a stolen session id, or an audit trail that cannot take events under
/// `audit.on_failure: closed`.
pub fn standing_refusal(session: SessionCheck, audit_refuses: bool) -> Option<Decision> {
    let why = match session {
        SessionCheck::Fine if audit_refuses => {
            return Some(Decision::deny(
                RuleId::AuditUnavailable,
                "the audit trail cannot take more events (audit.on_failure: closed)",
            ))
        }
        SessionCheck::Fine => return None,
        SessionCheck::Stolen => "this Mcp-Session-Id is bound to another identity",
        SessionCheck::TableFull => "too many active sessions to bind a new one; retry later",
        SessionCheck::Unavailable => {
            "session bindings are unavailable; refusing rather than guessing"
        }
    };
    Some(Decision::deny(RuleId::SessionBinding, why))
}

/// Decide on the request headers.
pub fn judge_head(
    policy: &CompiledPolicy,
    head: &RequestHead,
    identity: &Result<Caller, IdentityError>,
    standing: Option<&Decision>,
) -> HeadVerdict {
    if let Some(name) = &head.repeated_header {
        return HeadVerdict::Refuse(Refusal::invalid(
            RuleId::Protocol,
            format!("header {name} sent more than once"),
        ));
    }
    let caller = match identity {
        Ok(c) => c,
        Err(e) => {
            return HeadVerdict::Refuse(Refusal::new(
                401,
                reply::DENIED,
                RuleId::Identity,
                e.message(),
            ))
        }
    };
    match head.method.as_str() {
        "POST" => {}
        // GET opens the server's SSE stream, DELETE ends a session: no body to decide.
        "GET" | "DELETE" => {
            if let Some(d) = kill_switch(policy, caller).or_else(|| standing.cloned()) {
                return HeadVerdict::Deny(d);
            }
            return HeadVerdict::Stream {
                hold_until_end: !head.ends_stream,
                strip_credential: strips_credential(policy, caller),
            };
        }
        _ => {
            return HeadVerdict::Refuse(Refusal::new(
                405,
                reply::INVALID_REQUEST,
                RuleId::HttpMethod,
                "only POST, GET and DELETE are allowed on an MCP endpoint",
            ))
        }
    }
    if let Err(msg) = check_request_media_type(&head.content_type) {
        return HeadVerdict::Refuse(Refusal::new(
            415,
            reply::INVALID_REQUEST,
            RuleId::MediaType,
            msg,
        ));
    }
    if let Some(enc) = &head.content_encoding {
        // We must decide on exactly the bytes the server will read; we do
        // not decompress, so any coding other than identity is refused.
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return HeadVerdict::Refuse(Refusal::new(
                415,
                reply::INVALID_REQUEST,
                RuleId::MediaType,
                "Content-Encoding other than identity is refused",
            ));
        }
    }
    if let Some(len) = &head.content_length {
        if len
            .trim()
            .parse::<u64>()
            .map_or(true, |n| n > policy.limits.max_request_bytes as u64)
        {
            return HeadVerdict::Refuse(Refusal::too_large(policy));
        }
    }
    if head.ends_stream {
        return HeadVerdict::Refuse(Refusal::new(400, -32700, RuleId::Protocol, "empty body"));
    }
    HeadVerdict::ReadBody {
        may_rewrite: policy.dlp.requests == DlpAction::Redact,
        strip_credential: strips_credential(policy, caller),
    }
}

/// The caller's API key came in `Authorization` and is the firewall's, not
/// the server's (unless `identity.forward_api_key`).
fn strips_credential(policy: &CompiledPolicy, caller: &Caller) -> bool {
    caller.via == Via::ApiKey && !policy.identity.forward_api_key
}

/// A POST body must be JSON the server reads exactly as we do (see `media_type`).
fn check_request_media_type(content_type: &str) -> Result<(), &'static str> {
    match media_type::parse(content_type) {
        Ok(m) if m.is_utf8_json() => Ok(()),
        Ok(m) if m.essence == "application/json" => Err(
            "MCP POST bodies must be UTF-8: a charset other than utf-8 is refused \
             (the server would read other text than the firewall decided on)",
        ),
        Err(MediaTypeError::AmbiguousCharset) => Err("Content-Type names a charset more than once"),
        _ => Err("MCP POST bodies must be Content-Type: application/json"),
    }
}

/// The verdict on one JSON-RPC message of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageVerdict {
    /// The rules' decision (or the kill switch's, or a standing refusal's).
    pub decision: Decision,
    /// DLP findings in the arguments (kinds and JSON pointers, never values).
    pub findings: Vec<Finding>,
    /// DLP refuses the message (`dlp.requests: block`).
    pub dlp_refused: bool,
    /// The arguments after redaction, when DLP redacted them.
    pub redacted_arguments: Option<Value>,
    /// What the audit records of the message: its method (or "(response)"),
    /// target name, id and the arguments as sent (target and arguments only
    /// when the policy has an audit section).
    pub method: String,
    pub target: Option<String>,
    pub id: Option<Value>,
    pub arguments: Option<Value>,
}

impl MessageVerdict {
    /// The decision as enforced: DLP's refusal over the rules' allow.
    pub fn enforced(&self) -> Decision {
        if self.dlp_refused {
            Decision::deny(RuleId::Dlp, "sensitive data in the arguments")
        } else {
            self.decision.clone()
        }
    }
}

/// What enforcing a body verdict means.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyOutcome {
    /// Refused before any policy (not JSON-RPC, ambiguous, a refused batch...).
    Refuse(Refusal),
    /// A message refused by rule, kill switch or standing refusal: the reply.
    Deny(LocalReply),
    /// A message refused by DLP: the reply.
    DlpBlock(LocalReply),
    /// Forward, with the body rewritten when DLP redacted arguments.
    Forward { rewritten: Option<Vec<u8>> },
}

/// The verdict on a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyVerdict {
    pub outcome: BodyOutcome,
    /// One per message, in body order (empty when refused before policy).
    pub messages: Vec<MessageVerdict>,
    /// The kill switch refused: enforced in dry run too.
    pub killed: bool,
    /// What the response side must filter (lists) and scan (results).
    pub plan: ResponsePlan,
    /// Ids of the requests the body carries (what answers may carry).
    pub request_ids: Vec<Value>,
}

impl BodyVerdict {
    fn refused(r: Refusal) -> Self {
        BodyVerdict {
            outcome: BodyOutcome::Refuse(r),
            messages: Vec::new(),
            killed: false,
            plan: ResponsePlan::default(),
            request_ids: Vec::new(),
        }
    }

    /// Some message was refused by the rules (kill switch and standing refusals included).
    pub fn policy_refused(&self) -> bool {
        self.messages
            .iter()
            .any(|m| m.decision.verdict != Outcome::Allow)
    }

    /// Some message carries data DLP refuses.
    pub fn dlp_refused(&self) -> bool {
        self.messages.iter().any(|m| m.dlp_refused)
    }
}

/// Decide on a whole request body, the headers having been judged
/// [`HeadVerdict::ReadBody`]. `standing` refuses every message (after the kill switch).
pub fn judge_body(
    policy: &CompiledPolicy,
    caller: &Caller,
    head: &RequestHead,
    standing: Option<&Decision>,
    bytes: &[u8],
) -> BodyVerdict {
    if bytes.len() > policy.limits.max_request_bytes {
        return BodyVerdict::refused(Refusal::too_large(policy));
    }
    let body = match jsonrpc::parse_body(bytes, policy.limits.max_json_depth) {
        Ok(b) => b,
        Err(e) => {
            return BodyVerdict::refused(Refusal::new(400, e.code(), RuleId::Protocol, e.message()))
        }
    };
    if let Err(msg) = check_standard_headers(head, &body) {
        return BodyVerdict::refused(Refusal::new(
            400,
            reply::HEADER_MISMATCH,
            RuleId::HeaderMismatch,
            msg,
        ));
    }
    let mut messages: Vec<Message> = match body {
        Body::Single(m) => vec![m],
        Body::Batch(_) if policy.limits.batches == BatchMode::Reject => {
            return BodyVerdict::refused(Refusal::invalid(
                RuleId::Protocol,
                "batches are refused (limits.batches: reject)",
            ));
        }
        Body::Batch(ms) => ms,
    };
    if let Some(msg) = case_variant_of_condition_member(policy, &messages) {
        return BodyVerdict::refused(Refusal::invalid(RuleId::Protocol, msg));
    }
    let mut verdicts = Vec::with_capacity(messages.len());
    for m in &messages {
        let decision = match decide_message(policy, caller, m) {
            // A standing refusal refuses every message, after the kill switch.
            Ok(d) if d.rule != RuleId::KillSwitch => standing.cloned().unwrap_or(d),
            Ok(d) => d,
            Err(e) => {
                return BodyVerdict::refused(Refusal::new(
                    400,
                    e.code(),
                    RuleId::Protocol,
                    e.message(),
                ))
            }
        };
        verdicts.push(MessageVerdict::of(m, decision, policy.audit.is_some()));
    }
    let mut verdict = BodyVerdict {
        outcome: BodyOutcome::Forward { rewritten: None },
        killed: verdicts
            .iter()
            .any(|v| v.decision.rule == RuleId::KillSwitch),
        messages: verdicts,
        plan: ResponsePlan::default(),
        request_ids: Vec::new(),
    };
    let dry_run = policy.mode == Mode::DryRun;
    if verdict.policy_refused() {
        let refused: Vec<Option<Refused>> = verdict
            .messages
            .iter()
            .map(|v| (v.decision.verdict != Outcome::Allow).then(|| Refused::of(&v.decision)))
            .collect();
        verdict.outcome = BodyOutcome::Deny(refusal(&messages, &refused));
        // Enforced, nothing else is looked at. In dry run the request goes on:
        // DLP still runs so the audit shows what it would have done.
        if verdict.killed || !dry_run {
            return verdict;
        }
    }
    let redacted = scan_arguments(policy, &mut messages, &mut verdict.messages);
    if verdict.dlp_refused() && !verdict.policy_refused() {
        let refused: Vec<Option<Refused>> = verdict
            .messages
            .iter()
            .zip(&messages)
            .map(|(v, _)| {
                v.dlp_refused.then(|| Refused {
                    error: reply::sensitive_data_error(&v.findings, "the arguments"),
                    rule: RuleId::Dlp,
                })
            })
            .collect();
        verdict.outcome = BodyOutcome::DlpBlock(refusal(&messages, &refused));
    } else if redacted && !verdict.policy_refused() {
        let doc = match messages.as_slice() {
            [single] => message_value(single),
            many => Value::Array(many.iter().map(message_value).collect()),
        };
        verdict.outcome = BodyOutcome::Forward {
            rewritten: Some(doc.to_string().into_bytes()),
        };
    }
    for m in &messages {
        let Message::Request { id, method, params } = m else {
            continue;
        };
        verdict.request_ids.push(id.clone());
        if let Some(cat) = Catalogue::for_list_method(method) {
            verdict.plan.lists.push((id_key(id), cat));
        } else if method == "completion/complete"
            && !crate::decide::completion_ref_visible(policy, caller, params)
        {
            verdict.plan.hidden_completions.push(id_key(id));
        } else if policy.dlp.responses != DlpAction::Off && scans_result_of(policy, m) {
            verdict.plan.scans.push(id_key(id));
        }
    }
    verdict
}

/// A member on a path a `when` condition reads, spelled in another case
/// (`Force` where a rule tests `/force`): the condition finds nothing (and an
/// absent member may satisfy `not exists`), while a server matching names
/// case-insensitively reads it as that member. Refused, whatever the rule.
/// Only the members on the paths are compared: `{"env": {"PATH": ..}}` is no
/// variant of a rule's `/path`.
fn case_variant_of_condition_member(
    policy: &CompiledPolicy,
    messages: &[Message],
) -> Option<String> {
    for m in messages {
        let params = m.params();
        for path in &policy.condition_paths {
            let mut at = match path.in_arguments {
                true => params.get("arguments"),
                false => Some(params),
            };
            for token in &path.tokens {
                at = match at {
                    Some(Value::Object(o)) => {
                        if let Some((member, name)) = case_variant(o, &[token.as_str()]) {
                            return Some(format!(
                                "member {member:?} differs only in case from {name:?}, which the \
                                 policy reads (a server that matches names case-insensitively \
                                 would read it as {name:?})"
                            ));
                        }
                        o.get(token)
                    }
                    Some(Value::Array(items)) => {
                        token.parse::<usize>().ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                };
            }
        }
    }
    None
}

/// Both phases in a row, for a caller already known: what the filter does
/// with this request when nothing stands against it (no session binding
/// refused, the audit trail healthy). The CLI's `explain` and `test`.
pub fn judge(
    policy: &CompiledPolicy,
    identity: &Result<Caller, IdentityError>,
    head: &RequestHead,
    body: &[u8],
) -> Judgement {
    // judge_head refuses an unknown caller, so a body is read only with one.
    match (judge_head(policy, head, identity, None), identity) {
        (HeadVerdict::ReadBody { .. }, Ok(caller)) => {
            Judgement::Body(judge_body(policy, caller, head, None, body))
        }
        (verdict, _) => Judgement::Head(verdict),
    }
}

/// What [`judge`] decided: on the headers, or on the body.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Head(HeadVerdict),
    Body(BodyVerdict),
}

/// The caller of a request nobody identified, in dry run (nothing is refused
/// for it, so it is decided as the least privileged caller there is).
pub fn anonymous() -> Caller {
    Caller {
        subject: None,
        tenant: None,
        roles: Vec::new(),
        via: Via::Anonymous,
    }
}

impl MessageVerdict {
    /// `audited`: whether the audit will record the message (only then are
    /// its target and arguments copied: arguments can be a megabyte).
    fn of(m: &Message, decision: Decision, audited: bool) -> Self {
        let target = m.method().filter(|_| audited).and_then(|method| {
            jsonrpc::target_of(method, m.params())
                .ok()
                .and_then(|t| t.name().map(str::to_owned))
        });
        MessageVerdict {
            decision,
            findings: Vec::new(),
            dlp_refused: false,
            redacted_arguments: None,
            method: m.method().unwrap_or("(response)").to_owned(),
            target,
            id: m.id().cloned(),
            arguments: m.params().get("arguments").filter(|_| audited).cloned(),
        }
    }
}

/// Whether DLP looks at the answer to this message: tool calls (unless the
/// tool is exempt), prompts and resource reads.
pub fn scans_result_of(policy: &CompiledPolicy, m: &Message) -> bool {
    match m.method() {
        Some("tools/call") => match m.params().get("name").and_then(Value::as_str) {
            Some(tool) => !policy.dlp.is_exempt(tool),
            None => true,
        },
        Some("prompts/get") | Some("resources/read") => true,
        _ => false,
    }
}

/// DLP on the arguments: findings and refusals into `verdicts`, redaction in
/// place (enforced only: dry run never changes what the server reads).
/// Returns whether any arguments were redacted.
fn scan_arguments(
    policy: &CompiledPolicy,
    messages: &mut [Message],
    verdicts: &mut [MessageVerdict],
) -> bool {
    let action = policy.dlp.requests;
    if action == DlpAction::Off {
        return false;
    }
    let redact = action == DlpAction::Redact && policy.mode != Mode::DryRun;
    let mut redacted = false;
    for (m, v) in messages.iter_mut().zip(verdicts.iter_mut()) {
        let scanned = scans_result_of(policy, m) && m.method() != Some("resources/read");
        let args = match m {
            Message::Request { params, .. } | Message::Notification { params, .. } if scanned => {
                params.get_mut("arguments")
            }
            _ => None,
        };
        let Some(args) = args else {
            continue;
        };
        v.findings = if redact {
            policy.dlp.scanner.redact_value(args)
        } else {
            policy.dlp.scanner.scan_value(args)
        };
        if v.findings.is_empty() {
            continue;
        }
        match action {
            DlpAction::Block => v.dlp_refused = true,
            DlpAction::Redact if redact => {
                v.redacted_arguments = Some(args.clone());
                redacted = true;
            }
            _ => {}
        }
    }
    redacted
}

/// MCP standard headers (SEP-2243) must agree with the body: an
/// intermediary may route or rate-limit on them, so disagreement is smuggling.
fn check_standard_headers(head: &RequestHead, body: &Body) -> Result<(), String> {
    if head.mcp_method.is_none() && head.mcp_name.is_none() {
        return Ok(());
    }
    let Body::Single(m) = body else {
        return Err("Mcp-Method/Mcp-Name headers are only defined for a single message".into());
    };
    if let Some(h) = &head.mcp_method {
        if m.method() != Some(h.as_str()) {
            return Err("Mcp-Method header disagrees with the body".into());
        }
    }
    if let Some(h) = &head.mcp_name {
        let name = decode_mcp_name(h).ok_or("Mcp-Name header has an invalid base64 value")?;
        let params = m.params();
        let body_name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str);
        if body_name != Some(name.as_str()) {
            return Err("Mcp-Name header disagrees with the body".into());
        }
    }
    Ok(())
}

/// `Mcp-Name` is the plain name, or `=?base64?<b64 of UTF-8>?=` (SEP-2243;
/// the sentinel is case-sensitive, anything else is a literal value).
fn decode_mcp_name(h: &str) -> Option<String> {
    use base64::Engine;
    match h
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(h.to_owned()),
    }
}

/// A message as JSON again (after redaction). Our parser refuses members
/// JSON-RPC does not define, so nothing is lost.
fn message_value(m: &Message) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("jsonrpc".into(), json!("2.0"));
    match m {
        Message::Request { id, method, params } => {
            o.insert("id".into(), id.clone());
            o.insert("method".into(), json!(method));
            if !params.is_null() {
                o.insert("params".into(), params.clone());
            }
        }
        Message::Notification { method, params } => {
            o.insert("method".into(), json!(method));
            if !params.is_null() {
                o.insert("params".into(), params.clone());
            }
        }
        // A client's answer rides along in a rewritten batch unchanged.
        Message::Response { id, answer } => {
            o.insert("id".into(), id.clone());
            match answer {
                AnswerMember::Result(r) => o.insert("result".into(), r.clone()),
                AnswerMember::Error(e) => o.insert("error".into(), e.clone()),
            };
        }
    }
    Value::Object(o)
}

/// Why one message of a body is refused: its JSON-RPC `error` member and rule.
struct Refused {
    error: Value,
    rule: RuleId,
}

impl Refused {
    fn of(d: &Decision) -> Self {
        Refused {
            error: reply::decision_error_member(d),
            rule: d.rule.clone(),
        }
    }
}

/// The reply to a refused single message or batch (`refused[i]` for `messages[i]`).
fn refusal(messages: &[Message], refused: &[Option<Refused>]) -> LocalReply {
    let first_rule = refused.iter().flatten().next().map(|r| r.rule.as_str());
    if let ([m], [r]) = (messages, refused) {
        return match (m, r) {
            (Message::Request { id, .. }, Some(r)) => LocalReply::json(
                200,
                &reply::with_error(Some(id), r.error.clone()),
                Some(r.rule.as_str()),
            ),
            // A notification has no id to answer: 403 with an empty body.
            _ => LocalReply::empty(403, first_rule),
        };
    }
    // A batch is refused whole; every request id gets an answer.
    let batch = Decision::deny(
        RuleId::Batch,
        "another message in the same batch was refused",
    );
    let mut answers = Vec::new();
    for (m, r) in messages.iter().zip(refused) {
        let Message::Request { id, .. } = m else {
            continue;
        };
        let error = match r {
            Some(r) => r.error.clone(),
            None => reply::decision_error_member(&batch),
        };
        answers.push(reply::with_error(Some(id), error));
    }
    if answers.is_empty() {
        return LocalReply::empty(403, first_rule);
    }
    LocalReply::json(200, &Value::Array(answers), first_rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::sha256_hex;
    use serde_json::json;

    /// A batch whose arguments are redacted is re-serialised whole: a client's
    /// answer to a server request in it keeps its `result` or `error`.
    #[test]
    fn redacted_batch_keeps_the_clients_answers() {
        let policy = match crate::policy::compile(&json!({
            "version": 1,
            "identity": {"api_keys": [{"sha256": sha256_hex(b"k"), "subject": "s", "roles": ["r"]}]},
            "rules": [{"id": "echo", "effect": "allow", "tools": ["echo"]}],
            "dlp": {"requests": "redact"},
            "limits": {"batches": "evaluate"}
        })) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        };
        let caller = Caller {
            subject: Some("s".into()),
            tenant: None,
            roles: vec!["r".into()],
            via: Via::ApiKey,
        };
        let body = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "echo", "arguments": {"m": "glpat-_bkBl5pR8VAr0_UnPKWu"}}},
            {"jsonrpc": "2.0", "id": "s1", "result": {"action": "accept", "content": {"x": 1}}},
            {"jsonrpc": "2.0", "id": "s2", "error": {"code": -1, "message": "declined"}}
        ])
        .to_string();
        let v = judge_body(
            &policy,
            &caller,
            &RequestHead::default(),
            None,
            body.as_bytes(),
        );
        let BodyOutcome::Forward {
            rewritten: Some(bytes),
        } = v.outcome
        else {
            panic!("not forwarded with a rewrite: {:?}", v.outcome)
        };
        let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(!sent.to_string().contains("glpat-"), "{sent}");
        assert_eq!(
            sent[1]["result"],
            json!({"action": "accept", "content": {"x": 1}})
        );
        assert_eq!(sent[2]["error"]["message"], json!("declined"));
    }
}
