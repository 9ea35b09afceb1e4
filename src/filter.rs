//! The per-request state machine: request headers → buffered body → decision
//! → local reply or continue → response rewriting. All host access goes
//! through `Host`, so the whole pipeline runs natively in tests.

use crate::audit::{
    AuditDecision, AuditFinding, AuditIdentity, AuditResponse, EventFacts, Verdict as AuditVerdict,
};
use crate::decide::{Decision, Verdict};
use crate::dlp::Action as DlpAction;
use crate::host::{Counter, Flow, Host, HostError, LogLevel};
use crate::identity::{self, Caller, IdentityError, IdentityInputs, Via};
use crate::json::parse_strict_folded;
use crate::jsonrpc::{self, id_key};
use crate::media_type::{self, MediaType};
use crate::policy::{CompiledPolicy, Mode};
use crate::reply::{self, LocalReply};
use crate::response::{case_variant_in_answer, rewrite_message, ResponsePlan};
use crate::rule_id::RuleId;
use crate::session::{self, Binding};
use crate::sse::{parse_event, SseFramer};
use crate::verdict::{
    self, anonymous, judge_body, judge_head, BodyOutcome, BodyVerdict, HeadVerdict, MessageVerdict,
    Refusal, RequestHead, SessionCheck, SINGLE_HEADERS,
};
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
    /// The request headers the body's verdict reads (Mcp-Method, Mcp-Name).
    head: RequestHead,
    plan: ResponsePlan,
    dry_run_note: Option<String>,
    /// Set on request headers when the request must be refused whatever it
    /// says (stolen session id, audit trail unavailable under `closed`).
    standing: Option<Decision>,
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
    /// A response rewrite failed and the stream was reset: nothing more passes.
    abandoned: bool,
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
            head: RequestHead::default(),
            plan: ResponsePlan::default(),
            dry_run_note: None,
            standing: None,
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
            abandoned: false,
            json_buffered: 0,
            json_done: false,
        }
    }

    fn dry_run(&self) -> bool {
        self.policy.mode == Mode::DryRun
    }

    fn reply(&mut self, host: &mut dyn Host, r: LocalReply) -> Flow {
        self.phase = Phase::Replied;
        if let Err(e) = host.send_reply(&r) {
            // Nothing was forwarded and nothing will be: the stream goes.
            self.host_write_failed(host, "the reply", &e);
            host.reset_stream();
        }
        Flow::Pause
    }

    /// A write the verdict requires was refused by the host: counted, logged.
    fn host_write_failed(&self, host: &mut dyn Host, what: &str, e: &HostError) {
        host.count(Counter::RefusedHostWrite, 1);
        host.log(
            LogLevel::Error,
            &format!("mcp-firewall: the host refused to write {what} ({e}); failing closed"),
        );
    }

    /// A rewrite of the request the verdict requires could not be applied:
    /// the request is refused, never forwarded as it came.
    fn refuse_unwritable(&mut self, host: &mut dyn Host, what: &str, e: &HostError) -> Flow {
        self.host_write_failed(host, what, e);
        let refusal = Refusal::new(
            500,
            reply::INTERNAL_ERROR,
            RuleId::HostWrite,
            "a change the firewall's decision requires could not be applied; refused rather than forwarded unchanged",
        );
        let reply = refusal.reply();
        for mut p in std::mem::take(&mut self.audit_pending) {
            p.decision = Decision::deny(RuleId::HostWrite, refusal.message.clone());
            let facts = self.facts(host, p, Some(response_of(&reply)));
            host.audit(facts);
        }
        self.reply(host, reply)
    }

    /// A response rewrite the plan requires could not be applied: the stream
    /// is reset (the client sees an error, not what was not filtered) and
    /// whatever else the server sends is dropped.
    fn abandon_response(&mut self, host: &mut dyn Host, what: &str, e: &HostError) {
        self.host_write_failed(host, what, e);
        host.reset_stream();
        self.response = ResponseMode::Broken;
        self.abandoned = true;
    }

    /// Answer a refusal made before any policy: counted by its rule, audited
    /// when audit is on.
    fn refuse(&mut self, host: &mut dyn Host, r: &Refusal) -> Flow {
        let counter = match r.rule {
            RuleId::Identity => Counter::RefusedIdentity,
            RuleId::TooLarge => Counter::RefusedTooLarge,
            RuleId::MediaType => Counter::RefusedMediaType,
            RuleId::HttpMethod => Counter::RefusedHttpMethod,
            RuleId::HeaderMismatch => Counter::RefusedHeaderMismatch,
            _ => Counter::RefusedProtocol,
        };
        host.count(counter, 1);
        let reply = r.reply();
        if self.policy.audit.is_some() {
            let pending = PendingAudit {
                method: String::from("(refused before decision)"),
                target: None,
                id: None,
                arguments: None,
                decision: Decision::deny(r.rule.clone(), r.message.clone()),
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
                rule: p.decision.rule.as_str().to_owned(),
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
        let head = self.read_head(host, end_of_stream);
        let mut identity = self.resolve_identity(host);
        if head.repeated_header.is_none() && self.dry_run() {
            if let Err(e) = &identity {
                self.note_dry_run(host, &format!("unauthenticated ({})", e.message()));
                identity = Ok(anonymous());
            }
        }
        // The binding is a shared-data write: made only for a request whose
        // caller is known and whose headers are not ambiguous.
        let standing = match (&identity, &head.repeated_header) {
            (Ok(caller), None) => self.standing_refusal(host, caller),
            _ => None,
        };
        self.caller = identity.as_ref().ok().cloned();
        match judge_head(&self.policy, &head, &identity, standing.as_ref()) {
            HeadVerdict::Refuse(r) => self.refuse(host, &r),
            HeadVerdict::Deny(d) => {
                if d.rule == RuleId::KillSwitch {
                    host.count(Counter::RefusedKillSwitch, 1);
                }
                let body = reply::decision_error(None, &d);
                self.reply(host, LocalReply::json(403, &body, Some(d.rule.as_str())))
            }
            HeadVerdict::Stream { hold_until_end } => {
                self.answers_from_elsewhere = true;
                if hold_until_end {
                    // Neither GET nor DELETE has a body, and one that came
                    // anyway would reach the server undecided. Headers that do
                    // not end the stream (an HTTP/2 client may send the end in
                    // an empty DATA frame) are held until it ends.
                    self.phase = Phase::AwaitingNoBody;
                    return Flow::Pause;
                }
                self.phase = Phase::Passthrough;
                Flow::Continue
            }
            HeadVerdict::ReadBody { may_rewrite } => {
                if may_rewrite && !self.dry_run() {
                    // Redaction may change the body's length, and headers cannot
                    // be touched from body callbacks: drop content-length now
                    // (the upstream request is then sent chunked).
                    if let Err(e) = host.set_request_header("content-length", None) {
                        return self.refuse_unwritable(host, "the request's content-length", &e);
                    }
                }
                self.standing = standing;
                self.head = head;
                self.phase = Phase::Body;
                // Hold the headers: the router must not open an upstream request
                // before the body is decided (Envoy needs allow_on_headers_stop_iteration).
                Flow::Pause
            }
        }
    }

    /// Everything the verdict reads from the request headers, read now:
    /// Envoy refuses header reads from body callbacks.
    fn read_head(&self, host: &dyn Host, end_of_stream: bool) -> RequestHead {
        let jwt = self.policy.identity.jwt_payload_header.as_deref();
        let repeated_header = SINGLE_HEADERS
            .iter()
            .copied()
            .chain(jwt)
            .find(|name| host.request_header_lines(name) > 1)
            .map(str::to_owned);
        RequestHead {
            method: host.request_header(":method").unwrap_or_default(),
            content_type: host.request_header("content-type").unwrap_or_default(),
            content_encoding: host.request_header("content-encoding"),
            content_length: host.request_header("content-length"),
            mcp_method: host.request_header("mcp-method"),
            mcp_name: host.request_header("mcp-name"),
            repeated_header,
            ends_stream: end_of_stream,
        }
    }

    fn resolve_identity(&self, host: &dyn Host) -> Result<Caller, IdentityError> {
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
        let resolved = identity::resolve(&self.policy.identity, &inputs);
        // The mTLS peer is only consulted when neither an API key nor a JWT
        // identified the caller (it ranks after them), saving a property
        // lookup on most requests.
        if matches!(&resolved, Ok(c) if c.via != Via::Anonymous) {
            return resolved;
        }
        let san = host
            .property(&["connection", "uri_san_peer_certificate"])
            .and_then(|b| String::from_utf8(b).ok());
        match san {
            Some(san) => {
                let inputs = IdentityInputs {
                    peer_uri_san: Some(san),
                    ..inputs
                };
                identity::resolve(&self.policy.identity, &inputs)
            }
            None => resolved,
        }
    }

    /// The session binding and the audit trail's back-pressure, as a refusal
    /// that holds for the whole request (noted, not enforced, in dry run).
    fn standing_refusal(&mut self, host: &mut dyn Host, caller: &Caller) -> Option<Decision> {
        let session = self.check_session(host, caller);
        let audit_refuses = session == SessionCheck::Fine && host.audit_refuses();
        if audit_refuses {
            host.count(Counter::RefusedAuditUnavailable, 1);
        }
        let d = verdict::standing_refusal(session, audit_refuses)?;
        if self.dry_run() {
            self.note_dry_run(host, &format!("deny rule={}", d.rule));
            return None;
        }
        if d.rule == RuleId::SessionBinding {
            host.count(Counter::RefusedSessionBinding, 1);
        }
        Some(d)
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
                return self.refuse(
                    host,
                    &Refusal::new(
                        400,
                        reply::INVALID_REQUEST,
                        RuleId::Protocol,
                        "GET and DELETE requests to an MCP endpoint carry no body",
                    ),
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
            // Refused while it streams in, before Envoy buffers more of it.
            return self.refuse(host, &Refusal::too_large(&self.policy));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let Some(bytes) = host.request_body(body_size) else {
            let r = Refusal::new(400, -32700, RuleId::Protocol, "request body unavailable");
            return self.refuse(host, &r);
        };
        let caller = self.caller.clone().unwrap_or_else(anonymous);
        let verdict = judge_body(
            &self.policy,
            &caller,
            &self.head,
            self.standing.as_ref(),
            &bytes,
        );
        self.apply_body_verdict(host, verdict, body_size)
    }

    /// Request trailers end the stream without a final body callback. MCP never
    /// sends trailers; deciding on a body Envoy would then forward unchecked is
    /// not an option, so a request that is still being read is refused.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        match self.phase {
            Phase::Body | Phase::AwaitingNoBody => self.refuse(
                host,
                &Refusal::new(
                    400,
                    reply::INVALID_REQUEST,
                    RuleId::Protocol,
                    "trailers are not accepted on MCP requests",
                ),
            ),
            Phase::Replied => Flow::Pause,
            _ => Flow::Continue,
        }
    }

    /// Apply the verdict on the body: counters, audit, the reply or the
    /// rewritten body, and the plan for the response. Dry run forwards what
    /// enforcement would refuse (except the kill switch) and rewrites nothing.
    fn apply_body_verdict(
        &mut self,
        host: &mut dyn Host,
        mut v: BodyVerdict,
        body_size: usize,
    ) -> Flow {
        let outcome = std::mem::replace(&mut v.outcome, BodyOutcome::Forward { rewritten: None });
        let (reply, rewritten) = match outcome {
            BodyOutcome::Refuse(r) => return self.refuse(host, &r),
            BodyOutcome::Deny(r) | BodyOutcome::DlpBlock(r) => (Some(r), None),
            BodyOutcome::Forward { rewritten } => (None, rewritten),
        };
        for m in &v.messages {
            let counter = match m.decision.verdict {
                Verdict::Allow => Counter::DecisionAllow,
                Verdict::Deny => Counter::DecisionDeny,
                Verdict::Approval => Counter::DecisionApproval,
            };
            host.count(counter, 1);
        }
        if self.policy.audit.is_some() {
            let action = self.policy.dlp.requests;
            self.audit_pending = v
                .messages
                .iter()
                .map(|m| PendingAudit::of(m, action))
                .collect();
        }
        let policy_refused = v.policy_refused();
        if v.killed {
            host.count(Counter::RefusedKillSwitch, 1);
        }
        // The kill switch is an operator's emergency brake: it holds in dry-run too.
        let enforce = !self.dry_run() || v.killed;
        if !enforce {
            if policy_refused {
                host.count(Counter::DryRunUnenforced, 1);
            }
            let note = v
                .messages
                .iter()
                .map(|m| format!("{} rule={}", m.decision.verdict.as_str(), m.decision.rule))
                .collect::<Vec<_>>()
                .join(", ");
            self.note_dry_run(host, &note);
        } else if policy_refused {
            for m in v
                .messages
                .iter()
                .filter(|m| m.decision.verdict != Verdict::Allow)
            {
                let d = &m.decision;
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
            let r = reply.unwrap_or_else(|| LocalReply::empty(403, None));
            // A refused exchange is over now: audit it at once.
            for p in std::mem::take(&mut self.audit_pending) {
                let facts = self.facts(host, p, Some(response_of(&r)));
                host.audit(facts);
            }
            return self.reply(host, r);
        }
        for m in &v.messages {
            for f in &m.findings {
                host.count_finding(&f.kind);
            }
        }
        if v.dlp_refused() {
            if !enforce {
                self.note_dry_run(host, "deny rule=dlp");
            } else {
                host.count(Counter::DecisionDeny, 1);
                let r = reply.unwrap_or_else(|| LocalReply::empty(403, None));
                let pending = std::mem::take(&mut self.audit_pending);
                for (mut p, m) in pending.into_iter().zip(&v.messages) {
                    p.decision = m.enforced();
                    let facts = self.facts(host, p, Some(response_of(&r)));
                    host.audit(facts);
                }
                return self.reply(host, r);
            }
        }
        if let Some(body) = rewritten {
            if let Err(e) = host.set_request_body(body_size, &body) {
                return self.refuse_unwritable(host, "the redacted request body", &e);
            }
        }
        self.forwarded_ids = v.request_ids;
        self.plan = v.plan;
        if self.dry_run() {
            // Dry run never changes what the caller sees: lists stay whole and
            // results are only scanned (flag), so the audit shows what would happen.
            self.plan.lists.clear();
        }
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    /// Bind `Mcp-Session-Id` to the caller, or find it is another's.
    fn check_session(&self, host: &mut dyn Host, caller: &Caller) -> SessionCheck {
        if !self.policy.sessions.enforce {
            return SessionCheck::Fine;
        }
        let Some(sid) = host.request_header("mcp-session-id") else {
            return SessionCheck::Fine;
        };
        let now = host.now_ms();
        match session::check_and_bind(host, &self.policy.sessions, &sid, caller, now) {
            Binding::Bound => SessionCheck::Fine,
            Binding::Stolen => SessionCheck::Stolen,
            Binding::TableFull => SessionCheck::TableFull,
            Binding::Unavailable => SessionCheck::Unavailable,
        }
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
            // Informational only: a refused write changes nothing the client reads.
            let _ = host.set_response_header(DRY_RUN_HEADER, Some(&clean));
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
            if let Err(e) = host.set_response_header("content-length", None) {
                self.abandon_response(host, "the response's content-length", &e);
            } else if self.response == ResponseMode::Refuse {
                if let Err(e) = host.set_response_header("content-type", Some("application/json")) {
                    self.abandon_response(host, "the response's content-type", &e);
                }
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
        if self.abandoned {
            // The rewrite failed and the stream was reset: hold every byte.
            return Flow::Pause;
        }
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
    fn replace_response_body(&mut self, host: &mut dyn Host, size: usize, bytes: &[u8]) {
        if self.dry_run() {
            return;
        }
        if let Err(e) = host.set_response_body(size, bytes) {
            self.abandon_response(host, "the response body", &e);
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
                        action: action.as_str().into(),
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
        if self.abandoned {
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// Rewrite a server JSON-RPC document; `None` = forward unchanged.
    fn rewrite_document(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        // Folded: two members one to a case-insensitive client are refused too.
        let mut doc = match parse_strict_folded(bytes, self.policy.limits.max_json_depth) {
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
        let variant = objects
            .iter()
            .find_map(|m| case_variant_in_answer(&self.plan, m));
        if let Some(why) = variant {
            return Some(self.unfilterable(&why).to_string().into_bytes());
        }
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
    /// The audit record of one decided message; `action` is `dlp.requests`.
    fn of(m: &MessageVerdict, action: DlpAction) -> Self {
        PendingAudit {
            method: m.method.clone(),
            target: m.target.clone(),
            id: m.id.clone(),
            arguments: m.arguments.clone(),
            decision: m.decision.clone(),
            findings: m
                .findings
                .iter()
                .map(|f| AuditFinding {
                    kind: f.kind.clone(),
                    path: f.path.clone(),
                    action: action.as_str().into(),
                })
                .collect(),
            redacted: m.redacted_arguments.is_some(),
            redacted_arguments: m.redacted_arguments.clone(),
            redactions: 0,
        }
    }
}

fn response_of(r: &LocalReply) -> AuditResponse {
    AuditResponse {
        status: u16::try_from(r.status).unwrap_or(0),
        is_error: true,
        bytes: r.body.len() as u64,
        redactions: 0,
    }
}

#[cfg(test)]
mod tests;
