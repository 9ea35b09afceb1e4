//! The per-request state machine: request headers → buffered body → decision
//! → local reply or continue → response rewriting. All host access goes
//! through `Host`, so the whole pipeline runs natively in tests.

use crate::audit::{
    AuditDecision, AuditFinding, AuditIdentity, AuditResponse, EventFacts, Verdict as AuditVerdict,
};
use crate::decide::{decide_message, Catalogue, Decision, Verdict};
use crate::dlp::Action as DlpAction;
use crate::host::{Counter, Flow, Host, LogLevel};
use crate::identity::{self, Caller, IdentityInputs, Via};
use crate::json::parse_strict;
use crate::jsonrpc::{self, id_key, Body, Message};
use crate::media_type::{self, MediaType, MediaTypeError};
use crate::policy::{BatchMode, CompiledPolicy, Mode};
use crate::reply::{self, LocalReply};
use crate::response::{rewrite_message, ResponsePlan};
use crate::session::{self, Binding};
use crate::sse::{parse_event, SseFramer};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Response header that reports a dry-run decision to the caller.
pub const DRY_RUN_HEADER: &str = "x-mcp-firewall-dry-run";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Headers,
    Body,
    /// The request went upstream; the response may need rewriting.
    Forwarded,
    /// The filter answered; nothing reached the upstream.
    Replied,
    /// GET / DELETE: nothing to decide on the body.
    Passthrough,
    /// GET / DELETE whose headers did not end the stream: held until it ends,
    /// forwarded only if not one body byte came.
    AwaitingNoBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    Pass,
    Json,
    Sse,
    /// A 2xx answer to a list request in a content type we cannot filter.
    Refuse,
    /// An SSE stream that broke a limit: everything after is dropped.
    Broken,
}

pub struct RequestFilter {
    policy: Rc<CompiledPolicy>,
    phase: Phase,
    caller: Option<Caller>,
    mcp_method: Option<String>,
    mcp_name: Option<String>,
    plan: ResponsePlan,
    dry_run_note: Option<String>,
    /// Set on request headers when the request must be refused whatever it
    /// says (stolen session id, audit trail unavailable under `closed`).
    session_refusal: Option<Decision>,
    /// Audit facts of forwarded messages, completed when the exchange ends.
    audit_pending: Vec<PendingAudit>,
    response_status: Option<u16>,
    response: ResponseMode,
    framer: SseFramer,
    response_seen: usize,
    /// Counted while rewriting (which only reads `self`), flushed to the host per callback.
    removed_count: Cell<u64>,
    unfilterable_count: Cell<u64>,
    /// Bytes of a JSON response Envoy holds for us, and whether it was finished.
    json_buffered: usize,
    json_done: bool,
    /// Ids of the requests forwarded upstream (for refusals of their responses).
    forwarded_ids: Vec<Value>,
    /// A GET or DELETE: its response may carry answers to requests decided in
    /// other exchanges (a server with an event store replays them when a GET
    /// names a `Last-Event-ID`). Their plans are not ours to know, so every
    /// answer in it is unfilterable; notifications and server requests pass.
    answers_from_elsewhere: bool,
    /// DLP findings in results: (request id key, findings, action), flushed per callback.
    result_findings: RefCell<Vec<(String, Vec<crate::dlp::Finding>, DlpAction)>>,
}

impl RequestFilter {
    pub fn new(policy: Rc<CompiledPolicy>) -> Self {
        let cap = policy.limits.max_response_bytes;
        RequestFilter {
            policy,
            phase: Phase::Headers,
            caller: None,
            mcp_method: None,
            mcp_name: None,
            plan: ResponsePlan::default(),
            dry_run_note: None,
            session_refusal: None,
            audit_pending: Vec::new(),
            response_status: None,
            response: ResponseMode::Pass,
            framer: SseFramer::new(cap),
            response_seen: 0,
            removed_count: Cell::new(0),
            unfilterable_count: Cell::new(0),
            result_findings: RefCell::new(Vec::new()),
            forwarded_ids: Vec::new(),
            answers_from_elsewhere: false,
            json_buffered: 0,
            json_done: false,
        }
    }

    fn dry_run(&self) -> bool {
        self.policy.mode == Mode::DryRun
    }

    fn reply(&mut self, host: &mut dyn Host, r: LocalReply) -> Flow {
        self.phase = Phase::Replied;
        host.send_reply(&r);
        Flow::Pause
    }

    fn protocol_error(&mut self, host: &mut dyn Host, status: u32, code: i64, msg: &str) -> Flow {
        let counter = match (status, code) {
            (401, _) => Counter::RefusedIdentity,
            (413, _) => Counter::RefusedTooLarge,
            (415, _) => Counter::RefusedMediaType,
            (405, _) => Counter::RefusedHttpMethod,
            (_, reply::HEADER_MISMATCH) => Counter::RefusedHeaderMismatch,
            _ => Counter::RefusedProtocol,
        };
        host.count(counter, 1);
        let body = reply::error_object(None, code, msg, None);
        let reply = LocalReply::json(status, &body, None);
        if self.policy.audit.is_some() {
            let rule = match counter {
                Counter::RefusedIdentity => "identity",
                Counter::RefusedTooLarge => "too-large",
                Counter::RefusedMediaType => "media-type",
                Counter::RefusedHttpMethod => "http-method",
                Counter::RefusedHeaderMismatch => "header-mismatch",
                _ => "protocol",
            };
            let pending = PendingAudit {
                method: String::from("(refused before decision)"),
                target: None,
                id: None,
                arguments: None,
                decision: Decision::deny(rule, msg),
                findings: Vec::new(),
                redacted: false,
                redacted_arguments: None,
                redactions: 0,
            };
            let facts = self.facts(host, pending, Some(response_of(&reply)));
            host.audit(facts);
        }
        self.reply(host, reply)
    }

    fn facts(
        &self,
        host: &dyn Host,
        p: PendingAudit,
        response: Option<AuditResponse>,
    ) -> EventFacts {
        let caller = self.caller.clone().unwrap_or_else(anonymous);
        EventFacts {
            ts_ms: host.now_ms(),
            identity: AuditIdentity {
                subject: caller.subject,
                tenant: caller.tenant,
                roles: caller.roles,
                via: caller.via,
            },
            method: p.method,
            target: p.target,
            id: p.id,
            arguments: p.arguments,
            redacted_arguments: p.redacted_arguments,
            decision: AuditDecision {
                verdict: match p.decision.verdict {
                    Verdict::Allow if p.redacted => AuditVerdict::Redacted,
                    Verdict::Allow => AuditVerdict::Allow,
                    Verdict::Deny => AuditVerdict::Deny,
                    Verdict::Approval => AuditVerdict::Approval,
                },
                rule: p.decision.rule,
                reason: p.decision.reason,
                dry_run: self.dry_run(),
            },
            findings: p.findings,
            response,
            policy_sha256: self.policy.sha256.clone(),
            vm_start: false,
            dropped: Vec::new(),
        }
    }

    /// The exchange is over (Envoy's log phase): audit what was forwarded.
    pub fn on_done(&mut self, host: &mut dyn Host) {
        let pending = std::mem::take(&mut self.audit_pending);
        let status = self.response_status.unwrap_or(0);
        for p in pending {
            let response = AuditResponse {
                status,
                is_error: !(200..300).contains(&status),
                bytes: self.response_seen as u64,
                redactions: p.redactions,
            };
            let facts = self.facts(host, p, Some(response));
            host.audit(facts);
        }
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        if let Some(name) = self.repeated_singleton_header(host) {
            let msg = format!("header {name} sent more than once");
            return self.protocol_error(host, 400, reply::INVALID_REQUEST, &msg);
        }
        let method = host.request_header(":method").unwrap_or_default();
        let inputs = IdentityInputs {
            authorization: host.request_header("authorization"),
            jwt_payload: self
                .policy
                .identity
                .jwt_payload_header
                .as_deref()
                .and_then(|h| host.request_header(h)),
            peer_uri_san: None,
        };
        let mut resolved = identity::resolve(&self.policy.identity, &inputs);
        // The mTLS peer is only consulted when neither an API key nor a JWT
        // identified the caller (it ranks after them), saving a property
        // lookup on most requests.
        if !matches!(&resolved, Ok(c) if c.via != Via::Anonymous) {
            let san = host
                .property(&["connection", "uri_san_peer_certificate"])
                .and_then(|b| String::from_utf8(b).ok());
            if san.is_some() {
                let inputs = IdentityInputs {
                    peer_uri_san: san,
                    ..inputs
                };
                resolved = identity::resolve(&self.policy.identity, &inputs);
            }
        }
        match resolved {
            Ok(c) => self.caller = Some(c),
            Err(e) if self.dry_run() => {
                self.note_dry_run(host, &format!("unauthenticated ({})", e.message()));
                self.caller = Some(anonymous());
            }
            Err(e) => return self.protocol_error(host, 401, reply::DENIED, &e.message()),
        }
        self.session_refusal = self.check_session(host);
        if self.session_refusal.is_none() && host.audit_refuses() {
            host.count(Counter::RefusedAuditUnavailable, 1);
            self.session_refusal = Some(Decision::deny(
                "audit-unavailable",
                "the audit trail cannot take more events (audit.on_failure: closed)",
            ));
        }
        if let Some(d) = &self.session_refusal {
            if self.dry_run() {
                let note = format!("deny rule={}", d.rule);
                self.session_refusal = None;
                self.note_dry_run(host, &note);
            } else if d.rule == "session-binding" {
                host.count(Counter::RefusedSessionBinding, 1);
            }
        }
        match method.as_str() {
            "POST" => {}
            // GET opens the server's SSE stream, DELETE ends a session: no body to decide.
            "GET" | "DELETE" => {
                let caller = self.caller.clone().unwrap_or_else(anonymous);
                let refusal = crate::decide::kill_switch(&self.policy, &caller)
                    .or_else(|| self.session_refusal.clone());
                if let Some(d) = refusal {
                    if d.rule == "kill-switch" {
                        host.count(Counter::RefusedKillSwitch, 1);
                    }
                    let body = reply::decision_error(None, &d);
                    return self.reply(host, LocalReply::json(403, &body, Some(&d.rule)));
                }
                self.answers_from_elsewhere = true;
                if !end_of_stream {
                    // Neither has a body, and one that came anyway would reach
                    // the server undecided. Headers that do not end the stream
                    // (an HTTP/2 client may send the end in an empty DATA
                    // frame) are held until it ends.
                    self.phase = Phase::AwaitingNoBody;
                    return Flow::Pause;
                }
                self.phase = Phase::Passthrough;
                return Flow::Continue;
            }
            _ => {
                return self.protocol_error(
                    host,
                    405,
                    reply::INVALID_REQUEST,
                    "only POST, GET and DELETE are allowed on an MCP endpoint",
                )
            }
        }
        let content_type = host.request_header("content-type").unwrap_or_default();
        if let Err(msg) = check_request_media_type(&content_type) {
            return self.protocol_error(host, 415, reply::INVALID_REQUEST, msg);
        }
        if let Some(enc) = host.request_header("content-encoding") {
            // We must decide on exactly the bytes the server will read; we do
            // not decompress, so any coding other than identity is refused.
            if !enc.trim().eq_ignore_ascii_case("identity") {
                return self.protocol_error(
                    host,
                    415,
                    reply::INVALID_REQUEST,
                    "Content-Encoding other than identity is refused",
                );
            }
        }
        if let Some(len) = host.request_header("content-length") {
            if len
                .trim()
                .parse::<u64>()
                .map_or(true, |n| n > self.policy.limits.max_request_bytes as u64)
            {
                return self.too_large(host);
            }
        }
        if self.policy.dlp.requests == DlpAction::Redact && !self.dry_run() {
            // Redaction may change the body's length, and headers cannot be
            // touched from body callbacks: drop content-length now (the
            // upstream request is then sent chunked).
            host.set_request_header("content-length", None);
        }
        self.mcp_method = host.request_header("mcp-method");
        self.mcp_name = host.request_header("mcp-name");
        if end_of_stream {
            return self.protocol_error(host, 400, -32700, "empty body");
        }
        self.phase = Phase::Body;
        // Hold the headers: the router must not open an upstream request
        // before the body is decided (Envoy needs allow_on_headers_stop_iteration).
        Flow::Pause
    }

    /// A header the filter reads that came on more than one line. Servers
    /// pick different copies (first, last, all joined), so a second copy of the
    /// session id, the credential or the body's description could carry what
    /// the filter never checked: refused whatever the copies say.
    fn repeated_singleton_header(&self, host: &dyn Host) -> Option<String> {
        const SINGLETONS: [&str; 9] = [
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
        let jwt = self.policy.identity.jwt_payload_header.as_deref();
        SINGLETONS
            .iter()
            .copied()
            .chain(jwt)
            .find(|name| host.request_header_lines(name) > 1)
            .map(str::to_owned)
    }

    fn too_large(&mut self, host: &mut dyn Host) -> Flow {
        let msg = format!(
            "body larger than limits.max_request_bytes ({})",
            self.policy.limits.max_request_bytes
        );
        self.protocol_error(host, 413, reply::INVALID_REQUEST, &msg)
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self.phase {
            Phase::Body => {}
            Phase::AwaitingNoBody if body_size > 0 => {
                return self.protocol_error(
                    host,
                    400,
                    reply::INVALID_REQUEST,
                    "GET and DELETE requests to an MCP endpoint carry no body",
                )
            }
            Phase::AwaitingNoBody if end_of_stream => {
                self.phase = Phase::Passthrough;
                return Flow::Continue;
            }
            Phase::AwaitingNoBody | Phase::Replied => return Flow::Pause,
            _ => return Flow::Continue,
        }
        if body_size > self.policy.limits.max_request_bytes {
            return self.too_large(host);
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let Some(bytes) = host.request_body(body_size) else {
            return self.protocol_error(host, 400, -32700, "request body unavailable");
        };
        self.decide_body(host, &bytes, body_size)
    }

    /// Request trailers end the stream without a final body callback. MCP never
    /// sends trailers; deciding on a body Envoy would then forward unchecked is
    /// not an option, so a request that is still being read is refused.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        match self.phase {
            Phase::Body | Phase::AwaitingNoBody => self.protocol_error(
                host,
                400,
                reply::INVALID_REQUEST,
                "trailers are not accepted on MCP requests",
            ),
            Phase::Replied => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    fn decide_body(&mut self, host: &mut dyn Host, bytes: &[u8], body_size: usize) -> Flow {
        let body = match jsonrpc::parse_body(bytes, self.policy.limits.max_json_depth) {
            Ok(b) => b,
            Err(e) => return self.protocol_error(host, 400, e.code(), e.message()),
        };
        if let Err(msg) = self.check_standard_headers(&body) {
            return self.protocol_error(host, 400, reply::HEADER_MISMATCH, &msg);
        }
        let mut messages: Vec<Message> = match body {
            Body::Single(m) => vec![m],
            Body::Batch(_) if self.policy.limits.batches == BatchMode::Reject => {
                return self.protocol_error(
                    host,
                    400,
                    reply::INVALID_REQUEST,
                    "batches are refused (limits.batches: reject)",
                );
            }
            Body::Batch(ms) => ms,
        };
        let caller = self.caller.clone().unwrap_or_else(anonymous);
        let mut decisions = Vec::with_capacity(messages.len());
        for m in &messages {
            match decide_message(&self.policy, &caller, m) {
                // A stolen session id refuses every message, after the kill switch.
                Ok(d) if d.rule != "kill-switch" && self.session_refusal.is_some() => {
                    decisions.push(self.session_refusal.clone().unwrap_or(d))
                }
                Ok(d) => decisions.push(d),
                Err(e) => return self.protocol_error(host, 400, e.code(), e.message()),
            }
        }
        for d in &decisions {
            let counter = match d.verdict {
                Verdict::Allow => Counter::DecisionAllow,
                Verdict::Deny => Counter::DecisionDeny,
                Verdict::Approval => Counter::DecisionApproval,
            };
            host.count(counter, 1);
        }
        if self.policy.audit.is_some() {
            self.audit_pending = messages
                .iter()
                .zip(&decisions)
                .map(|(m, d)| PendingAudit::of(m, d))
                .collect();
        }
        let refused = decisions.iter().any(|d| d.verdict != Verdict::Allow);
        // The kill switch is an operator's emergency brake: it holds in dry-run too.
        let killed = decisions.iter().any(|d| d.rule == "kill-switch");
        if killed {
            host.count(Counter::RefusedKillSwitch, 1);
        }
        if self.dry_run() && !killed {
            if refused {
                host.count(Counter::DryRunUnenforced, 1);
            }
            let note = decisions
                .iter()
                .map(|d| format!("{} rule={}", d.verdict.as_str(), d.rule))
                .collect::<Vec<_>>()
                .join(", ");
            self.note_dry_run(host, &note);
        } else if refused {
            for d in decisions.iter().filter(|d| d.verdict != Verdict::Allow) {
                host.log(
                    LogLevel::Debug,
                    &format!(
                        "mcp-firewall: {} rule={}: {}",
                        d.verdict.as_str(),
                        d.rule,
                        d.reason
                    ),
                );
            }
            let refused: Vec<Option<Refused>> = decisions
                .iter()
                .map(|d| (d.verdict != Verdict::Allow).then(|| Refused::of(d)))
                .collect();
            let r = refusal(&messages, &refused);
            // A refused exchange is over now: audit it at once.
            for p in std::mem::take(&mut self.audit_pending) {
                let facts = self.facts(host, p, Some(response_of(&r)));
                host.audit(facts);
            }
            return self.reply(host, r);
        }
        if let Some(flow) = self.scan_arguments(host, &mut messages, body_size) {
            return flow;
        }
        for m in &messages {
            let Message::Request { id, method, .. } = m else {
                continue;
            };
            self.forwarded_ids.push(id.clone());
            // Dry-run never changes what the caller sees: lists stay whole and
            // results are only scanned (flag), so the audit shows what would happen.
            if let Some(cat) = Catalogue::for_list_method(method) {
                if !self.dry_run() {
                    self.plan.lists.push((id_key(id), cat));
                }
            } else if self.policy.dlp.responses != DlpAction::Off && self.scans_result_of(m) {
                self.plan.scans.push(id_key(id));
            }
        }
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    /// Whether DLP looks at this message: tool calls (unless the tool is
    /// exempt), prompts and resource reads.
    fn scans_result_of(&self, m: &Message) -> bool {
        match m.method() {
            Some("tools/call") => match m.params().get("name").and_then(Value::as_str) {
                Some(tool) => !self.policy.dlp.is_exempt(tool),
                None => true,
            },
            Some("prompts/get") | Some("resources/read") => true,
            _ => false,
        }
    }

    /// DLP on the arguments of allowed messages. `Some(flow)` when the body was
    /// refused (block); redaction rewrites the body in place.
    fn scan_arguments(
        &mut self,
        host: &mut dyn Host,
        messages: &mut [Message],
        body_size: usize,
    ) -> Option<Flow> {
        let action = self.policy.dlp.requests;
        if action == DlpAction::Off {
            return None;
        }
        let mut refused: Vec<Option<Refused>> = Vec::with_capacity(messages.len());
        let mut redacted = false;
        for (i, m) in messages.iter_mut().enumerate() {
            let scanned = self.scans_result_of(m) && m.method() != Some("resources/read");
            let args = match m {
                Message::Request { params, .. } | Message::Notification { params, .. }
                    if scanned =>
                {
                    params.get_mut("arguments")
                }
                _ => None,
            };
            let Some(args) = args else {
                refused.push(None);
                continue;
            };
            let enforce = !self.dry_run();
            let findings = if action == DlpAction::Redact && enforce {
                self.policy.dlp.scanner.redact_value(args)
            } else {
                self.policy.dlp.scanner.scan_value(args)
            };
            for f in &findings {
                host.count_finding(&f.kind);
            }
            if let Some(p) = self.audit_pending.get_mut(i) {
                p.findings.extend(findings.iter().map(|f| AuditFinding {
                    kind: f.kind.clone(),
                    path: f.path.clone(),
                    action: dlp_action_name(action).into(),
                }));
                if action == DlpAction::Redact && enforce && !findings.is_empty() {
                    p.redacted = true;
                    p.redacted_arguments = Some(args.clone());
                }
            }
            if findings.is_empty() {
                refused.push(None);
                continue;
            }
            match action {
                DlpAction::Block => refused.push(Some(Refused {
                    error: reply::sensitive_data_error(&findings, "the arguments"),
                    rule: "dlp".into(),
                })),
                DlpAction::Redact => {
                    redacted = true;
                    refused.push(None);
                }
                _ => refused.push(None),
            }
        }
        if refused.iter().any(Option::is_some) {
            if self.dry_run() {
                self.note_dry_run(host, "deny rule=dlp");
                return None;
            }
            host.count(Counter::DecisionDeny, 1);
            let r = refusal(messages, &refused);
            for (p, why) in std::mem::take(&mut self.audit_pending)
                .into_iter()
                .zip(&refused)
            {
                let mut p = p;
                if why.is_some() {
                    p.decision = Decision::deny("dlp", "sensitive data in the arguments");
                }
                let facts = self.facts(host, p, Some(response_of(&r)));
                host.audit(facts);
            }
            return Some(self.reply(host, r));
        }
        if redacted {
            let doc = match messages {
                [single] => message_value(single),
                many => Value::Array(many.iter().map(message_value).collect()),
            };
            host.set_request_body(body_size, doc.to_string().as_bytes());
        }
        None
    }

    /// Bind `Mcp-Session-Id` to the caller, or refuse it if it belongs to another.
    fn check_session(&self, host: &mut dyn Host) -> Option<Decision> {
        if !self.policy.sessions.enforce {
            return None;
        }
        let sid = host.request_header("mcp-session-id")?;
        let caller = self.caller.as_ref()?;
        let now = host.now_ms();
        let why = match session::check_and_bind(host, &self.policy.sessions, &sid, caller, now) {
            Binding::Bound => return None,
            Binding::Stolen => "this Mcp-Session-Id is bound to another identity",
            Binding::TableFull => "too many active sessions to bind a new one; retry later",
            Binding::Unavailable => {
                "session bindings are unavailable; refusing rather than guessing"
            }
        };
        Some(Decision::deny("session-binding", why))
    }

    /// MCP standard headers (SEP-2243) must agree with the body: an
    /// intermediary may route or rate-limit on them, so disagreement is smuggling.
    fn check_standard_headers(&self, body: &Body) -> Result<(), String> {
        if self.mcp_method.is_none() && self.mcp_name.is_none() {
            return Ok(());
        }
        let Body::Single(m) = body else {
            return Err("Mcp-Method/Mcp-Name headers are only defined for a single message".into());
        };
        if let Some(h) = &self.mcp_method {
            if m.method() != Some(h.as_str()) {
                return Err("Mcp-Method header disagrees with the body".into());
            }
        }
        if let Some(h) = &self.mcp_name {
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

    fn note_dry_run(&mut self, host: &mut dyn Host, note: &str) {
        host.log(
            LogLevel::Info,
            &format!("mcp-firewall dry-run (not enforced): {note}"),
        );
        self.dry_run_note = Some(match self.dry_run_note.take() {
            Some(prev) => format!("{prev}, {note}"),
            None => note.to_owned(),
        });
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Flow {
        self.response_status = host.response_header(":status").and_then(|s| s.parse().ok());
        // Bind a session id at issuance (the server's answer to initialize),
        // so nobody else can be "first" to present it.
        if let (true, Some(caller), Some(sid)) = (
            self.policy.sessions.enforce && self.phase == Phase::Forwarded,
            self.caller.as_ref(),
            host.response_header("mcp-session-id"),
        ) {
            let now = host.now_ms();
            if session::check_and_bind(host, &self.policy.sessions, &sid, caller, now)
                != Binding::Bound
            {
                host.log(LogLevel::Warn, "mcp-firewall: server issued a session id that could not be bound to its caller");
            }
        }
        if let Some(note) = &self.dry_run_note {
            // Header values must not carry CR/LF; notes are built from escaped text.
            let clean: String = note.chars().filter(|c| !c.is_control()).collect();
            host.set_response_header(DRY_RUN_HEADER, Some(&clean));
        }
        let planned = self.phase == Phase::Forwarded && !self.plan.is_empty();
        let replayable = self.phase == Phase::Passthrough && self.answers_from_elsewhere;
        if !planned && !replayable {
            return Flow::Continue;
        }
        let status_ok = host
            .response_header(":status")
            .is_some_and(|s| s.starts_with('2'));
        let content_type = host.response_header("content-type").unwrap_or_default();
        // A charset other than UTF-8 would make the client read other text than
        // the one we filtered and scanned: such a body is one we cannot read.
        let readable = media_type::parse(&content_type)
            .ok()
            .filter(MediaType::is_utf8);
        self.response = match readable.as_ref().map(|m| m.essence.as_str()) {
            Some("application/json") => ResponseMode::Json,
            Some("text/event-stream") => ResponseMode::Sse,
            _ if status_ok => ResponseMode::Refuse,
            _ => ResponseMode::Pass,
        };
        if self.response != ResponseMode::Pass && !self.dry_run() {
            // The body may change length: a stale content-length would make the
            // client wait for bytes that never come. (Dry-run never changes it.)
            host.set_response_header("content-length", None);
            if self.response == ResponseMode::Refuse {
                host.set_response_header("content-type", Some("application/json"));
            }
        }
        Flow::Continue
    }

    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self.response {
            // SSE counts its own chunks; a buffered JSON body arrives whole at the end.
            ResponseMode::Sse => {}
            ResponseMode::Json | ResponseMode::Refuse if end_of_stream => {
                self.response_seen = body_size
            }
            ResponseMode::Json | ResponseMode::Refuse => {}
            ResponseMode::Pass | ResponseMode::Broken => {
                self.response_seen = self.response_seen.saturating_add(body_size)
            }
        }
        let flow = self.response_body(host, body_size, end_of_stream);
        self.flush_response_counts(host);
        flow
    }

    /// Hand what the response callbacks counted to the host: list entries
    /// removed, responses that could not be inspected, DLP findings.
    fn flush_response_counts(&mut self, host: &mut dyn Host) {
        host.count(Counter::ListEntriesRemoved, self.removed_count.take());
        host.count(
            Counter::ResponseUnfilterable,
            self.unfilterable_count.take(),
        );
        self.flush_result_findings(host);
    }

    /// Replace (part of) the response body, except in dry-run: dry-run never
    /// changes what the caller sees, so a response the filter would refuse as
    /// uninspectable is only counted (`response_unfilterable`) and forwarded.
    fn replace_response_body(&self, host: &mut dyn Host, size: usize, bytes: &[u8]) {
        if !self.dry_run() {
            host.set_response_body(size, bytes);
        }
    }

    /// Count DLP findings in results and attach them to the pending audit events.
    fn flush_result_findings(&mut self, host: &mut dyn Host) {
        for (id, findings, action) in self.result_findings.take() {
            for f in &findings {
                host.count_finding(&f.kind);
            }
            let pending = self
                .audit_pending
                .iter_mut()
                .find(|p| p.id.as_ref().map(id_key).as_deref() == Some(id.as_str()));
            if let Some(p) = pending {
                if action == DlpAction::Redact {
                    p.redactions += findings.len() as u64;
                }
                p.findings
                    .extend(findings.into_iter().map(|f| AuditFinding {
                        kind: f.kind,
                        path: format!("/result{}", f.path),
                        action: dlp_action_name(action).into(),
                    }));
            }
        }
    }

    fn response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self.response {
            ResponseMode::Pass => Flow::Continue,
            ResponseMode::Json | ResponseMode::Refuse => {
                self.json_response(host, body_size, end_of_stream)
            }
            ResponseMode::Sse => self.sse_response(host, body_size, end_of_stream),
            ResponseMode::Broken => {
                self.replace_response_body(host, body_size, b"");
                Flow::Continue
            }
        }
    }

    fn unfilterable(&self, why: &str) -> Value {
        self.unfilterable_for(why, None)
    }

    /// The refusal that replaces what cannot be inspected. It echoes the
    /// request id when the exchange had exactly one, else the id of the one
    /// answer it replaces (a replayed answer on a GET stream), so the client
    /// can match the refusal to its request.
    fn unfilterable_for(&self, why: &str, answer_id: Option<&Value>) -> Value {
        self.unfilterable_count
            .set(self.unfilterable_count.get() + 1);
        let id = match self.forwarded_ids.as_slice() {
            [one] => Some(one),
            [] => answer_id,
            _ => None,
        };
        reply::error_object(
            id,
            reply::DENIED,
            why,
            Some(json!({"rule": "response-unfilterable", "reason": why})),
        )
    }

    fn json_response(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if self.response == ResponseMode::Refuse {
            // Hold the body and answer once, at its end (or at the trailers),
            // like a JSON body; past the size limit, answer now.
            if !end_of_stream && body_size <= self.policy.limits.max_response_bytes {
                self.json_buffered = body_size;
                return Flow::Pause;
            }
            self.finish_refused(host, body_size);
            return Flow::Continue;
        }
        if body_size > self.policy.limits.max_response_bytes {
            let err = self.unfilterable("response larger than limits.max_response_bytes");
            self.replace_response_body(host, body_size, err.to_string().as_bytes());
            self.response = ResponseMode::Broken;
            return Flow::Continue;
        }
        if !end_of_stream {
            self.json_buffered = body_size;
            return Flow::Pause;
        }
        self.finish_json(host, body_size);
        Flow::Continue
    }

    /// The whole buffered JSON body is here: rewrite it, or refuse it if it
    /// cannot be read (never forward what was not inspected).
    fn finish_json(&mut self, host: &mut dyn Host, body_size: usize) {
        self.json_done = true;
        let out = match host.response_body(body_size) {
            Some(bytes) => self.rewrite_document(&bytes),
            None => Some(
                self.unfilterable("response body unavailable")
                    .to_string()
                    .into_bytes(),
            ),
        };
        if let Some(out) = out {
            self.replace_response_body(host, body_size, &out);
        }
    }

    /// A list result in a content type the filter cannot read: replace the
    /// whole held body with the refusal, drop whatever else comes.
    fn finish_refused(&mut self, host: &mut dyn Host, body_size: usize) {
        self.json_done = true;
        let err = self.unfilterable("list result in a content type the filter cannot inspect");
        self.replace_response_body(host, body_size, err.to_string().as_bytes());
        self.response = ResponseMode::Broken;
    }

    /// Response trailers end the stream without a final body callback: finish a
    /// buffered JSON (or refused) body here (a body still held would otherwise
    /// be flushed unchanged). An unfinished SSE event is dropped, not forwarded.
    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        if !self.json_done {
            let size = self.json_buffered;
            match self.response {
                ResponseMode::Json => self.finish_json(host, size),
                ResponseMode::Refuse => self.finish_refused(host, size),
                _ => {}
            }
            self.flush_response_counts(host);
        }
        Flow::Continue
    }

    /// Rewrite a server JSON-RPC document; `None` = forward unchanged.
    fn rewrite_document(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut doc = match parse_strict(bytes, self.policy.limits.max_json_depth) {
            Ok(d) => d,
            Err(_) => {
                return Some(
                    self.unfilterable("server response is not strict JSON")
                        .to_string()
                        .into_bytes(),
                )
            }
        };
        let caller = self.caller.as_ref()?;
        let objects = jsonrpc::response_objects(&mut doc);
        // An answer we cannot tie to a request of this exchange is one whose
        // plan we do not know: `"5"` or `5.0` for id 5 (a client matching
        // `Number(id)` takes it), or no id at all. Never passed on unchecked.
        let mut unmatched = objects.iter().filter(|m| {
            !m.contains_key("method")
                && !m
                    .get("id")
                    .is_some_and(|id| self.forwarded_ids.contains(id))
        });
        if let Some(first) = unmatched.next() {
            let only_id = match unmatched.next() {
                None => first.get("id"),
                Some(_) => None,
            };
            return Some(
                self.unfilterable_for(
                    "server answer whose id matches no request of this exchange",
                    only_id,
                )
                .to_string()
                .into_bytes(),
            );
        }
        let mut changed = false;
        for msg in objects {
            let id = msg.get("id").map(id_key);
            let r = rewrite_message(&self.policy, caller, &self.plan, msg);
            changed |= r.changed;
            if let (Some(id), Some(action)) = (id, r.action) {
                self.result_findings
                    .borrow_mut()
                    .push((id, r.findings, action));
            }
            self.removed_count
                .set(self.removed_count.get() + r.removed_entries as u64);
        }
        changed.then(|| doc.to_string().into_bytes())
    }

    fn sse_response(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        let chunk = host.response_body(body_size).unwrap_or_default();
        self.response_seen = self.response_seen.saturating_add(chunk.len());
        let mut events = match self.framer.push(&chunk) {
            Ok(evs) => evs,
            Err(_) => {
                self.response = ResponseMode::Broken;
                let err = self.unfilterable("server event larger than limits.max_response_bytes");
                let out = format!("event: message\ndata: {err}\n\n");
                self.replace_response_body(host, body_size, out.as_bytes());
                return Flow::Continue;
            }
        };
        if end_of_stream {
            let rest = self.framer.finish();
            if !rest.is_empty() {
                events.push(rest);
            }
        }
        let mut out = Vec::with_capacity(chunk.len());
        let cap = self.policy.limits.max_response_bytes;
        for raw in events {
            if raw.len() > cap {
                let err = self.unfilterable("server event larger than limits.max_response_bytes");
                out.extend(format!("event: message\ndata: {err}\n\n").into_bytes());
                continue;
            }
            out.extend(self.rewrite_event(&raw));
        }
        self.replace_response_body(host, body_size, &out);
        Flow::Continue
    }

    fn rewrite_event(&self, raw: &[u8]) -> Vec<u8> {
        let Some(mut event) = parse_event(raw) else {
            return self.unfilterable_event();
        };
        let Some(data) = event.data.as_deref().filter(|d| !d.trim().is_empty()) else {
            return raw.to_vec();
        };
        match self.rewrite_document(data.as_bytes()) {
            None => raw.to_vec(),
            Some(new) => {
                event.data = Some(String::from_utf8_lossy(&new).into_owned());
                event.to_bytes()
            }
        }
    }

    fn unfilterable_event(&self) -> Vec<u8> {
        format!(
            "event: message\ndata: {}\n\n",
            self.unfilterable("server event is not UTF-8")
        )
        .into_bytes()
    }
}

/// What an audit event needs of one decided message, kept until the exchange ends.
struct PendingAudit {
    method: String,
    target: Option<String>,
    id: Option<Value>,
    arguments: Option<Value>,
    decision: Decision,
    findings: Vec<AuditFinding>,
    /// The arguments were redacted before forwarding (verdict `redacted`).
    redacted: bool,
    redacted_arguments: Option<Value>,
    /// Matches replaced in the response.
    redactions: u64,
}

impl PendingAudit {
    fn of(m: &Message, d: &Decision) -> Self {
        let target = m.method().and_then(|method| {
            jsonrpc::target_of(method, m.params())
                .ok()
                .and_then(|t| t.name().map(str::to_owned))
        });
        let arguments = m.params().get("arguments").cloned();
        PendingAudit {
            method: m.method().unwrap_or("(response)").to_owned(),
            target,
            id: m.id().cloned(),
            arguments,
            decision: d.clone(),
            findings: Vec::new(),
            redacted: false,
            redacted_arguments: None,
            redactions: 0,
        }
    }
}

fn dlp_action_name(a: DlpAction) -> &'static str {
    match a {
        DlpAction::Block => "block",
        DlpAction::Redact => "redact",
        DlpAction::Flag => "flag",
        DlpAction::Off => "off",
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
        // Responses are not scanned, so never rewritten; kept for completeness.
        Message::Response { id } => {
            o.insert("id".into(), id.clone());
        }
    }
    Value::Object(o)
}

fn response_of(r: &LocalReply) -> AuditResponse {
    AuditResponse {
        status: u16::try_from(r.status).unwrap_or(0),
        is_error: true,
        bytes: r.body.len() as u64,
        redactions: 0,
    }
}

fn anonymous() -> Caller {
    Caller {
        subject: None,
        tenant: None,
        roles: Vec::new(),
        via: Via::Anonymous,
    }
}

/// Why one message of a body is refused: its JSON-RPC `error` member and rule.
struct Refused {
    error: Value,
    rule: String,
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
                Some(&r.rule),
            ),
            // A notification has no id to answer: 403 with an empty body.
            _ => LocalReply::empty(403, first_rule),
        };
    }
    // A batch is refused whole; every request id gets an answer.
    let batch = Decision::deny("batch", "another message in the same batch was refused");
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

/// A POST body must be JSON the server reads exactly as we do (see `media_type`).
fn check_request_media_type(content_type: &str) -> Result<(), &'static str> {
    match media_type::parse(content_type) {
        Ok(m) if m.is_utf8_json() => Ok(()),
        Ok(m) if m.essence == "application/json" => Err(
            "MCP POST bodies must be UTF-8: a charset other than utf-8 is refused \
             (the server would read other text than the firewall decided on)",
        ),
        Err(MediaTypeError::RepeatedCharset) => Err("Content-Type names a charset more than once"),
        _ => Err("MCP POST bodies must be Content-Type: application/json"),
    }
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

#[cfg(test)]
mod tests;
