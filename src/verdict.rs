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

use crate::approval::{Ask, Binding};
use crate::catalogue::intents::Annotated;
use crate::catalogue::listed::Listed;
use crate::catalogue::pins::{PinMismatch, PinMode, SeenTools};
use crate::catalogue::schemas::{self, Known, SchemaFinding, SchemaMode, Side};
use crate::catalogue::UnlistedCalls;
use crate::decide::{decide_message, kill_switch, Catalogue, Decision, Verdict as Outcome};
use crate::dlp::{Action as DlpAction, Finding};
use crate::identity::{Caller, IdentityError, Via};
use crate::json::case_variant;
use crate::jsonrpc::{self, id_key, AnswerMember, Body, Message};
use crate::media_type::{self, MediaTypeError};
use crate::meter::table::{Refused as MeterRefused, Shortfall};
use crate::meter::{self, Charge, Conversation};
use crate::policy::{BatchMode, CompiledPolicy, Mode};
use crate::reply::{self, LocalReply};
use crate::response::ResultKind;
use crate::response::{CappedAnswer, ResponsePlan, SchemaResult};
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
    /// `:path` (read for the OAuth metadata path only).
    pub path: Option<String>,
    /// `Last-Event-ID`: a GET naming one asks the server to replay a stream.
    pub last_event_id: Option<String>,
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
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// Every `Mcp-Param-{Name}` line: (lower-case name after the prefix, value).
    pub mcp_params: Vec<(String, String)>,
    /// The caller's conversation for rate limits keyed by `session`: the
    /// header `limits.conversation_header` names, else the `Mcp-Session-Id`.
    pub conversation: Option<String>,
    /// `Upgrade`: a request to switch protocols (a WebSocket, `h2c`).
    pub upgrade: Option<String>,
    /// The headers ended the stream: no body follows.
    pub ends_stream: bool,
    /// The upstream the request is routed to (Envoy's cluster and route
    /// name, [`crate::catalogue::upstream_key`]), read only when the policy
    /// remembers what lists show (pins, catalogue findings, intents,
    /// schemas): what a call is checked against is what this upstream
    /// listed.
    pub upstream: Option<String>,
    /// Why the request's path is not one Envoy's route match and the server
    /// read alike ([`crate::canon::route_path_problem`]), when the upstream
    /// is told apart by its route's name: refused, since a server decoding
    /// it otherwise would answer for another route's memory.
    pub route_path_problem: Option<&'static str>,
    /// When the request is decided, in milliseconds since the Unix epoch
    /// (UTC): the host's clock in the filter, `--at` or a case's `at` in the
    /// CLI. `time` conditions read it; given here so the verdict stays a pure
    /// function of what it is given.
    pub now_ms: u64,
}

/// What binding the request's `Mcp-Session-Id` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// No id, binding off, or the id is this caller's.
    Fine,
    /// The id is bound to another identity.
    Stolen,
    /// No caller holds the id here (`when_full: refuse`): never issued
    /// through this Envoy, forgotten by a restart, or idle past its timeout
    /// and its entry reused. Refused with 404, as a server refuses a session
    /// it does not know, so the client opens a new one; passed, it would be
    /// anyone's to continue.
    Unknown,
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
    /// A 401's `WWW-Authenticate` value, when the policy names more than
    /// `Bearer` (the resource metadata).
    pub challenge: Option<String>,
}

impl Refusal {
    pub fn new(status: u32, code: i64, rule: RuleId, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            rule,
            challenge: None,
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
        // A session refusal names its rule as the same refusal of a message
        // does (`data.rule`): a client tells a stolen id from an unknown one.
        let data = (self.rule == RuleId::SessionBinding)
            .then(|| serde_json::json!({"rule": self.rule.as_str(), "reason": self.message}));
        let body = reply::error_object(None, self.code, &self.message, data);
        let mut r = LocalReply::json(self.status, &body, None);
        r.challenge = self.challenge.clone();
        r
    }
}

/// The verdict on the request headers.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadVerdict {
    /// Refused before any policy.
    Refuse(Refusal),
    /// A GET or DELETE refused by the kill switch or a standing refusal (403).
    Deny(Decision),
    /// A GET of the OAuth protected-resource metadata (`identity.resource_metadata`):
    /// not MCP, passed as it is, with no identity; held until the stream
    /// ends when the headers did not end it (no body may follow).
    Public { hold_until_end: bool },
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
        SessionCheck::Unknown => {
            "this Mcp-Session-Id is bound to no caller here (never issued through this proxy, \
             forgotten on restart, or idle past sessions.idle_timeout_s); open a new session"
        }
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
    if let Some(problem) = head.route_path_problem {
        return HeadVerdict::Refuse(Refusal::invalid(
            RuleId::Protocol,
            format!(
                "the request path {problem}: what lists teach the filter is kept per route, \
                 and a server that reads the path otherwise than the route match could \
                 answer for another route"
            ),
        ));
    }
    if head.upgrade.is_some() {
        // MCP's streamable HTTP never switches protocols. Where a route
        // allows it (`upgrade_configs`), the bytes after a 101 are no HTTP
        // message the filter reads: a channel around every decision.
        return HeadVerdict::Refuse(Refusal::invalid(
            RuleId::Protocol,
            "the request asks to switch protocols (Upgrade): MCP's streamable HTTP never does"
                .to_owned(),
        ));
    }
    if head.method == "GET"
        && head.path.is_some()
        && head.path.as_deref() == policy.identity.metadata_path()
        && head.session_id.is_none()
        && head.last_event_id.is_none()
        && !policy.kill_switch
    {
        // The OAuth protected-resource metadata is public by design (RFC
        // 9728): a client without a token fetches it to learn how to get one.
        // Only a plain GET: a server that serves its MCP endpoint on every
        // path would open a session's stream for one naming a session id or
        // a replay, and the response side refuses any event stream.
        return HeadVerdict::Public {
            hold_until_end: !head.ends_stream,
        };
    }
    let caller = match identity {
        Ok(c) => c,
        Err(e) => {
            let mut r = Refusal::new(401, reply::DENIED, RuleId::Identity, e.message());
            r.challenge = policy
                .identity
                .resource_metadata
                .as_deref()
                .map(|url| format!("Bearer resource_metadata=\"{url}\""));
            return HeadVerdict::Refuse(r);
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

/// [`MessageVerdict::method`] of a client's answer (a message with no method).
pub const ANSWER: &str = "(response)";

/// The verdict on one JSON-RPC message of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageVerdict {
    /// The rules' decision (or the kill switch's, or a standing refusal's).
    pub decision: Decision,
    /// DLP findings in what the message carries (kinds and JSON pointers,
    /// never values): pointers into the arguments, or, for the other
    /// channels, starting with the member (`/_meta/...`, `/uri`,
    /// `/result/...`).
    pub findings: Vec<Finding>,
    /// Where each finding's pointer starts, one per finding: `"/arguments"`,
    /// `"/params"`, or `""` for a client's answer (its pointer starts at the
    /// message). `findings[i].path` under `finding_roots[i]` is a pointer
    /// into the message.
    pub finding_roots: Vec<&'static str>,
    /// DLP refuses the message (`dlp.requests: block`).
    pub dlp_refused: bool,
    /// DLP redacted something the message carries (its arguments, `_meta`,
    /// input responses, or a client's answer) before it goes on.
    pub redacted: bool,
    /// The arguments after redaction, when DLP redacted the message and it
    /// has arguments (what the audit records under `arguments: redacted`).
    pub redacted_arguments: Option<Value>,
    /// What the audit records of the message: its method (or "(response)"),
    /// target name, id and the arguments as sent (target and arguments only
    /// when the policy has an audit section).
    pub method: String,
    /// A request (answerable by its id), not a notification or a client's answer.
    pub request: bool,
    pub target: Option<String>,
    pub id: Option<Value>,
    pub arguments: Option<Value>,
    /// A `tools/call` whose tool does not match its pin: refused (rule
    /// `pin`) under `pins.mode: enforce`, only recorded under `warn`.
    pub pin: Option<PinMismatch>,
    /// A `tools/call` whose arguments did not pass its tool's declared
    /// `inputSchema` (or could not be checked): refused (rule
    /// `input-schema`) when `enforced`, else only recorded.
    pub schema: Option<SchemaFinding>,
    /// The called tool and what was known of its schemas, when its result
    /// is to be checked (`schemas.output` not `off`).
    pub declared: Option<(String, Known)>,
}

impl MessageVerdict {
    /// The decision as enforced: DLP's refusal over the rules' allow.
    pub fn enforced(&self) -> Decision {
        if self.dlp_refused {
            Decision::deny(RuleId::Dlp, "sensitive data in the request")
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
    /// A single call an `approve` rule matched, with an approval service
    /// configured (enforced, not dry run): ask the service for `ask`; the
    /// call goes on (rewritten as for `Forward`, charging `charges`) only
    /// when the service's answer says this call used an approval.
    Approve {
        ask: Box<Ask>,
        rewritten: Option<Vec<u8>>,
    },
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
    /// The rate limits and budgets the body consumes if it goes on (its
    /// allowed messages'; none when it is refused). Consuming them is the
    /// filter's step, in shared data; a shortfall comes back through
    /// [`BodyVerdict::metered_out`].
    pub charges: Vec<Charge>,
}

impl BodyVerdict {
    fn refused(r: Refusal) -> Self {
        BodyVerdict {
            outcome: BodyOutcome::Refuse(r),
            messages: Vec::new(),
            killed: false,
            plan: ResponsePlan::default(),
            request_ids: Vec::new(),
            charges: Vec::new(),
        }
    }

    /// A charge could not be consumed: its message is refused -32012 (the
    /// rest of a batch with it, as any refusal refuses a batch), decided
    /// deny by the meter's rule for counters and audit.
    pub fn metered_out(&mut self, refused: &MeterRefused) {
        let Some(charge) = self.charges.get(refused.charge) else {
            return;
        };
        let (rule, reason, data) = match refused.why {
            Shortfall::Exhausted {
                retry_after_ms,
                resets_at_ms,
            } => {
                let mut data =
                    json!({"rule": charge.rule.as_str(), "retry_after_ms": retry_after_ms});
                let reason = match resets_at_ms {
                    Some(at) => {
                        let at = crate::meter::calendar::rfc3339(at);
                        data["resets_at"] = json!(at);
                        format!("budget exhausted; it resets at {at}")
                    }
                    None => format!("rate limited; retry after {retry_after_ms} ms"),
                };
                (charge.rule.clone(), reason, data)
            }
            Shortfall::TableFull | Shortfall::Unavailable => {
                let reason = match refused.why {
                    Shortfall::TableFull => {
                        "no room to count a new rate-limit key (limits.metered_keys); retry later"
                    }
                    _ => "rate limits cannot be counted now; refusing rather than guessing",
                };
                let data =
                    json!({"rule": RuleId::RateLimitUnavailable.as_str(), "retry_after_ms": 1000});
                (RuleId::RateLimitUnavailable, reason.to_owned(), data)
            }
        };
        let message = match &data["resets_at"] {
            Value::Null => "rate limited",
            _ => "budget exhausted",
        };
        let error = json!({"code": reply::RATE_LIMITED, "message": message, "data": data});
        let refused_at = charge.message;
        let answers: Vec<(Option<&Value>, Option<Refused>)> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let id = m.id.as_ref().filter(|_| m.request);
                let r = (i == refused_at).then(|| Refused {
                    error: error.clone(),
                    rule: rule.clone(),
                });
                (id, r)
            })
            .collect();
        self.outcome = BodyOutcome::Deny(refusal(&answers));
        if let Some(m) = self.messages.get_mut(refused_at) {
            m.decision = Decision::deny(rule, reason);
        }
        self.charges.clear();
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

    /// Enforced, the request is answered by the filter: neither forwarded
    /// nor sent for approval.
    pub fn refuses(&self) -> bool {
        match self.outcome {
            BodyOutcome::Forward { .. } => self.policy_refused() || self.dlp_refused(),
            BodyOutcome::Approve { .. } => false,
            _ => true,
        }
    }

    /// What the approval service is asked, when the body waits for it.
    pub fn approval(&self) -> Option<&Ask> {
        match &self.outcome {
            BodyOutcome::Approve { ask, .. } => Some(ask),
            _ => None,
        }
    }
}

/// Decide on a whole request body, the headers having been judged
/// [`HeadVerdict::ReadBody`]. `standing` refuses every message (after the kill switch).
pub fn judge_body(
    policy: &CompiledPolicy,
    caller: &Caller,
    head: &RequestHead,
    standing: Option<&Decision>,
    seen: &dyn SeenTools,
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
    // Numbers are decided as doubles (conditions, approval bindings, the
    // loop breaker), while the bytes go on as sent: a literal more precise
    // than its double (`100.00000000000000000001` under `lte: 100`, an
    // integer past 64 bits) would be decided as one number and read by a
    // server as another (tenth review H1). Only a body holding a double at
    // all is read again for its literals.
    if messages
        .iter()
        .any(|m| crate::json::holds_double(m.params()))
        && crate::json::has_lossy_number(bytes)
    {
        return BodyVerdict::refused(Refusal::invalid(
            RuleId::Protocol,
            "a number is more precise than a double, so it cannot be decided exactly: send it as a string"
                .to_owned(),
        ));
    }
    let mut verdicts = Vec::with_capacity(messages.len());
    // One budget for the schema checks of every call of the body, and one
    // for compiling the schemas the VM's cache no longer holds.
    let schema_budget = std::cell::Cell::new(crate::catalogue::schema::CheckBudget::default());
    let compile_budget = std::cell::Cell::new(schemas::CompileBudget::default());
    for m in &messages {
        // What lists of this upstream showed of a called tool's annotations,
        // read only when a rule selects intents.
        let annotated = match (policy.selects_intents(), m.method()) {
            (true, Some("tools/call")) => match m.params().get("name").and_then(Value::as_str) {
                Some(tool) => seen.annotated(head.upstream.as_deref(), tool),
                None => Annotated::Unseen,
            },
            _ => Annotated::Unseen,
        };
        let decision = match decide_message(policy, caller, m, head.now_ms, annotated)
            .and_then(|d| decide_listened_resources(policy, caller, m, d, head.now_ms))
        {
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
        // Pins (rules → pins → DLP → approval → rate limits): a call the
        // rules let through is checked against its pin.
        let pin = match decision.verdict {
            Outcome::Allow | Outcome::Approval => pin_check(policy, head, seen, m),
            Outcome::Deny => None,
        };
        let decision = match (&pin, policy.pins.as_ref().map(|p| p.mode)) {
            (Some(p), Some(PinMode::Enforce)) => Decision::deny(RuleId::Pin, p.reason()),
            _ => decision,
        };
        // The catalogue checks (rules → pins → catalogue → DLP): a call of a
        // tool a list removed as poisoned is refused like its listing.
        let decision = match decision.verdict {
            Outcome::Allow | Outcome::Approval => match catalogue_check(policy, head, seen, m) {
                Some(reason) => Decision::deny(RuleId::Catalogue, reason),
                None => decision,
            },
            Outcome::Deny => decision,
        };
        // The declared schemas (rules → pins → catalogue → schemas → DLP):
        // a call whose arguments do not validate against its tool's
        // `inputSchema` is refused under `schemas.input: enforce`.
        let (schema, declared) = match decision.verdict {
            Outcome::Allow | Outcome::Approval => {
                schema_check(policy, head, seen, m, (&schema_budget, &compile_budget))
            }
            Outcome::Deny => (None, None),
        };
        let decision = match &schema {
            Some(f) if f.enforced => Decision::deny(RuleId::InputSchema, f.reason.clone()),
            _ => decision,
        };
        // The target is also what the rate limit descriptors export.
        let named = policy.audit.is_some() || policy.rate_limit_headers;
        let mut v = MessageVerdict::of(m, decision, policy.audit.is_some(), named);
        v.pin = pin;
        v.schema = schema;
        v.declared = declared;
        verdicts.push(v);
    }
    let mut verdict = BodyVerdict {
        outcome: BodyOutcome::Forward { rewritten: None },
        killed: verdicts
            .iter()
            .any(|v| v.decision.rule == RuleId::KillSwitch),
        messages: verdicts,
        plan: ResponsePlan::default(),
        request_ids: Vec::new(),
        charges: Vec::new(),
    };
    let dry_run = policy.mode == Mode::DryRun;
    // Approval (rules → DLP → approval → rate limits): the binding of the
    // one call to ask for, or the reason it cannot be asked for.
    let mut ask = match (&policy.approval, dry_run) {
        (Some(_), false) => approval_binding(policy, caller, &messages, &mut verdict.messages),
        _ => None,
    };
    if verdict.policy_refused() && ask.is_none() {
        let refused: Vec<_> = verdict
            .messages
            .iter()
            .zip(&messages)
            .map(|(v, m)| {
                let r = (v.decision.verdict != Outcome::Allow).then(|| Refused::of_verdict(v));
                (answerable_id(m), r)
            })
            .collect();
        verdict.outcome = BodyOutcome::Deny(refusal(&refused));
        // Enforced, nothing else is looked at. In dry run the request goes on:
        // DLP still runs so the audit shows what it would have done.
        if verdict.killed || !dry_run {
            return verdict;
        }
    }
    let redacted = scan_arguments(policy, &mut messages, &mut verdict.messages);
    // Every message but the one sent for approval allowed.
    let rules_refuse = verdict.policy_refused() && ask.is_none();
    if verdict.dlp_refused() && !rules_refuse {
        let refused: Vec<_> = verdict
            .messages
            .iter()
            .zip(&messages)
            .map(|(v, m)| {
                let r = v.dlp_refused.then(|| Refused {
                    error: reply::sensitive_data_error(&v.findings, "the request"),
                    rule: RuleId::Dlp,
                });
                (answerable_id(m), r)
            })
            .collect();
        verdict.outcome = BodyOutcome::DlpBlock(refusal(&refused));
    } else if redacted && !rules_refuse {
        let doc = match messages.as_slice() {
            [single] => message_value(single),
            many => Value::Array(many.iter().map(message_value).collect()),
        };
        verdict.outcome = BodyOutcome::Forward {
            rewritten: Some(crate::json::to_bytes(&doc)),
        };
    }
    for (m, v) in messages.iter().zip(&verdict.messages) {
        let Message::Request { id, method, params } = m else {
            continue;
        };
        verdict.request_ids.push(id.clone());
        // The call's result is held to the `outputSchema` known when the
        // call went out.
        if let Some((tool, known)) = &v.declared {
            verdict.plan.schema_results.push(SchemaResult {
                id: id_key(id),
                tool: tool.clone(),
                known: known.clone(),
                task: method == "tools/call" && params.get("task").is_some_and(Value::is_object),
            });
        }
        // The answer's size cap, read before any scan of it (first matching
        // `result_caps` entry, else `max_result_bytes`).
        let capped = match method.as_str() {
            "tools/call" => params.get("name").and_then(Value::as_str).and_then(|tool| {
                policy.limits.result_cap(tool).map(|cap| CappedAnswer {
                    tool: Some(tool.to_owned()),
                    cap,
                })
            }),
            // A task's result is a tool's result, but its id names no
            // tool: the smallest cap, so no capped tool's result comes back
            // larger by way of a task.
            "tasks/result" => policy
                .limits
                .strictest_result_cap()
                .map(|cap| CappedAnswer { tool: None, cap }),
            _ => None,
        };
        if let Some(c) = capped {
            verdict.plan.result_caps.push((id_key(id), c));
        }
        if let (Some(kind), true) = (
            ResultKind::of_method(method),
            policy.catalogue.inspects_results(),
        ) {
            verdict.plan.inspected_results.push((id_key(id), kind));
        }
        if let Some(cat) = Catalogue::for_list_method(method) {
            verdict.plan.lists.push((id_key(id), cat));
            if cat == Catalogue::Tools && policy.pins.is_some() {
                let first_page = params.get("cursor").is_none_or(Value::is_null);
                verdict.plan.pinned_lists.push((id_key(id), first_page));
            }
            if cat == Catalogue::Tools && policy.schemas.active() {
                verdict.plan.schema_lists.push(id_key(id));
            }
            // Every page, for every caller, before the caller's view is cut.
            if policy.catalogue.inspects_definitions() {
                verdict.plan.catalogue_lists.push((id_key(id), cat));
            }
            // The entries kept are text the client reads too (a description
            // naming a key, a prompt's arguments): scanned after filtering.
            if policy.dlp.responses != DlpAction::Off {
                verdict.plan.scans.push(id_key(id));
            }
        } else if method == "completion/complete"
            && !crate::decide::completion_ref_visible(policy, caller, params)
        {
            verdict.plan.hidden_completions.push(id_key(id));
            // Emptying `completion` leaves the rest of the answer (an error's
            // message, `_meta`) for the client to read: scanned like every
            // answer (the attack on the member check found it unscanned).
            if policy.dlp.responses != DlpAction::Off {
                verdict.plan.scans.push(id_key(id));
            }
        } else if policy.dlp.responses != DlpAction::Off && !exempt_call(policy, m) {
            // Every answer is text the client reads (an initialize's
            // `instructions`, a completion's values, a ping's stream), not
            // only tool results: a hostile server picks the channel.
            verdict.plan.scans.push(id_key(id));
        }
    }
    // DLP's refusal (DlpBlock) stands: nobody is asked to approve it.
    if let (Some(mut a), BodyOutcome::Forward { rewritten }) = (ask.take(), &mut verdict.outcome) {
        let rewritten = rewritten.take();
        // Approvers see what is forwarded (after redaction) when the policy
        // lets them, and DLP findings (kind and path) in any case.
        if let (Some(m), Some(v)) = (messages.first(), verdict.messages.first()) {
            if policy.approval.as_ref().is_some_and(|c| c.show_arguments) {
                a.arguments = m
                    .params()
                    .get("arguments")
                    .filter(|args| canonical_len(args) <= crate::approval::MAX_SHOWN_ARGUMENT_BYTES)
                    .cloned()
                    .map(|mut shown| {
                        // Under `dlp.requests: flag` the server gets what DLP
                        // found, but the approval service keeps and shows what
                        // it is sent: approvers read the kind and path (below),
                        // never the value. (`redact` already took it out.)
                        if !v.findings.is_empty() {
                            policy.dlp.scanner.redact_value(&mut shown);
                        }
                        shown
                    });
            }
            a.findings = v
                .findings
                .iter()
                .map(|f| (f.kind.clone(), f.path.clone()))
                .collect();
        }
        verdict.outcome = BodyOutcome::Approve {
            ask: Box::new(a),
            rewritten,
        };
    }
    // Notifications and server requests ride on the stream of any request;
    // the answer to notifications alone (202, no body) is read too: a body a
    // server sends there anyway reaches the client (the TypeScript SDK puts
    // a failed POST's body in the error its caller gets).
    verdict.plan.server_messages = policy.dlp.responses != DlpAction::Off;
    verdict.plan.inspected_server_messages = policy.catalogue.inspects_results();
    // Limits apply after the decision: what is refused consumes nothing. In
    // dry run the request goes on, so what it would consume is consumed.
    let forwards = matches!(
        verdict.outcome,
        BodyOutcome::Forward { .. } | BodyOutcome::Approve { .. }
    ) || dry_run;
    let asked = verdict.approval().is_some();
    if forwards && !policy.meters.is_empty() {
        let conversation = Conversation(head.conversation.as_deref());
        for (i, (m, v)) in messages.iter().zip(&verdict.messages).enumerate() {
            // A call sent for approval is charged when it is released.
            let goes_on = v.decision.verdict == Outcome::Allow
                || (asked && v.decision.verdict == Outcome::Approval);
            if !goes_on || v.dlp_refused {
                continue;
            }
            if let Ok(call) = crate::decide::call_of(m) {
                meter::charges(
                    &policy.meters,
                    caller,
                    conversation,
                    &call,
                    i,
                    &mut verdict.charges,
                );
            }
        }
    }
    verdict
}

/// The approval to ask for: the body is one request whose rules' decision is
/// approval. Otherwise (a batch, a notification, an anonymous caller) each
/// approval decision stays a refusal (-32011, no `approval_id`) and its
/// reason says why no approval can be asked for.
fn approval_binding(
    policy: &CompiledPolicy,
    caller: &Caller,
    messages: &[Message],
    verdicts: &mut [MessageVerdict],
) -> Option<Ask> {
    let why = match (messages, &mut *verdicts) {
        ([Message::Request { id, method, params }], [v])
            if v.decision.verdict == Outcome::Approval =>
        {
            let target = crate::decide::call_of(&messages[0])
                .ok()
                .and_then(|c| c.target.name().map(str::to_owned));
            match Binding::of(
                caller,
                method,
                target.as_deref(),
                params.get("arguments"),
                &policy.sha256,
            ) {
                Ok(binding) => {
                    return Some(Ask {
                        rule: v.decision.rule.clone(),
                        binding,
                        id: id.clone(),
                        method: method.clone(),
                        target,
                        arguments: None,
                        findings: Vec::new(),
                    })
                }
                Err(why) => why,
            }
        }
        ([_], _) => "a notification cannot wait for an approval",
        _ => "no approval is asked for a call inside a batch: send it on its own",
    };
    for v in verdicts
        .iter_mut()
        .filter(|v| v.decision.verdict == Outcome::Approval)
    {
        v.decision.reason = format!("{}; {why}", v.decision.reason);
    }
    None
}

fn canonical_len(v: &Value) -> usize {
    crate::json::canonical(v).len()
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

/// `subscriptions/listen` (2026-07-28 `basic/patterns/subscriptions`)
/// replaces `resources/subscribe`: the URIs a client wants updates for ride
/// in `params.notifications.resourceSubscriptions`. The listen is decided by
/// `methods` rules like any method; each URI in it is then decided as a
/// `resources/subscribe` of that URI would be (resource rules, the URI
/// normalised), and the first that is not allowed decides the listen: a
/// caller may not subscribe through a listen to what it may not subscribe to.
fn decide_listened_resources(
    policy: &CompiledPolicy,
    caller: &Caller,
    m: &Message,
    decision: Decision,
    now_ms: u64,
) -> Result<Decision, jsonrpc::ProtocolError> {
    if m.method() != Some("subscriptions/listen")
        || decision.verdict != Outcome::Allow
        || decision.rule == RuleId::KillSwitch
    {
        return Ok(decision);
    }
    let invalid = |why: String| jsonrpc::ProtocolError::Invalid(why);
    let variant = |o: &serde_json::Map<String, Value>, name: &'static str| {
        case_variant(o, &[name]).map(|(member, name)| {
            invalid(format!(
                "member {member:?} differs only in case from {name:?} (a server that matches \
                 names case-insensitively would read it as {name:?})"
            ))
        })
    };
    let Some(params) = m.params().as_object() else {
        return Ok(decision);
    };
    if let Some(e) = variant(params, "notifications") {
        return Err(e);
    }
    let Some(notifications) = params.get("notifications").and_then(Value::as_object) else {
        return Ok(decision);
    };
    if let Some(e) = variant(notifications, "resourceSubscriptions") {
        return Err(e);
    }
    let uris = match notifications.get("resourceSubscriptions") {
        None => return Ok(decision),
        Some(Value::Array(uris)) => uris,
        Some(_) => {
            return Err(invalid(
                "subscriptions/listen resourceSubscriptions must be an array of URIs".into(),
            ))
        }
    };
    for uri in uris {
        let Value::String(_) = uri else {
            return Err(invalid(
                "subscriptions/listen resourceSubscriptions must be an array of URIs".into(),
            ));
        };
        let subscribe = Message::Request {
            id: json!(0),
            method: "resources/subscribe".into(),
            params: json!({ "uri": uri }),
        };
        let d = decide_message(policy, caller, &subscribe, now_ms, Annotated::Unseen)?;
        if d.verdict != Outcome::Allow {
            return Ok(d);
        }
    }
    Ok(decision)
}

/// Both phases in a row, for a caller already known: what the filter does
/// with this request when nothing stands against it (no session binding
/// refused, the audit trail healthy). The CLI's `explain` and `test`.
pub fn judge(
    policy: &CompiledPolicy,
    identity: &Result<Caller, IdentityError>,
    head: &RequestHead,
    seen: &dyn SeenTools,
    body: &[u8],
) -> Judgement {
    // judge_head refuses an unknown caller, so a body is read only with one.
    match (judge_head(policy, head, identity, None), identity) {
        (HeadVerdict::ReadBody { .. }, Ok(caller)) => {
            Judgement::Body(judge_body(policy, caller, head, None, seen, body))
        }
        (verdict, _) => Judgement::Head(verdict),
    }
}

/// What [`judge`] decided: on the headers, or on the body.
// One per `explain` / `test` case in the CLI, never on the filter's path:
// boxing the body's verdict would only make the CLI's patterns clumsier.
#[allow(clippy::large_enum_variant)]
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
    /// its arguments copied: they can be a megabyte); `named`: whether its
    /// target is read (for the audit or the rate limit descriptors).
    fn of(m: &Message, decision: Decision, audited: bool, named: bool) -> Self {
        let target = m.method().filter(|_| named).and_then(|method| {
            jsonrpc::target_of(method, m.params())
                .ok()
                .and_then(|t| t.name().map(str::to_owned))
        });
        MessageVerdict {
            decision,
            findings: Vec::new(),
            finding_roots: Vec::new(),
            dlp_refused: false,
            redacted: false,
            redacted_arguments: None,
            method: m.method().unwrap_or(ANSWER).to_owned(),
            request: matches!(m, Message::Request { .. }),
            target,
            id: m.id().cloned(),
            arguments: m.params().get("arguments").filter(|_| audited).cloned(),
            pin: None,
            schema: None,
            declared: None,
        }
    }
}

/// Whether DLP looks at the answer to this message (and at the
/// notifications on its stream): tool calls (unless the tool is exempt),
/// prompts and resource reads; `tasks/*` (a task's result is a tool call's
/// result, its status message server text; the filter does not know which
/// tool a task id belongs to, so an exempt tool's task is scanned too); and
/// `subscriptions/listen`, whose stream carries the change notifications.
/// A `tools/call` of a tool `dlp.exempt_tools` names: neither its arguments
/// nor its answer are scanned.
fn exempt_call(policy: &CompiledPolicy, m: &Message) -> bool {
    m.method() == Some("tools/call")
        && m.params()
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|tool| policy.dlp.is_exempt(tool))
}

pub fn scans_result_of(policy: &CompiledPolicy, m: &Message) -> bool {
    match m.method() {
        Some("tools/call") => match m.params().get("name").and_then(Value::as_str) {
            Some(tool) => !policy.dlp.is_exempt(tool),
            None => true,
        },
        Some("prompts/get") | Some("resources/read") | Some("subscriptions/listen") => true,
        Some(method) => method.starts_with("tasks/"),
        None => false,
    }
}

/// Where caller data rides to the server in one message, for DLP: the
/// members of `params` (or of a client's answer) that are scanned, and
/// whether a finding there may be redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    /// `params.arguments` of a tool call or prompt (findings' paths are
    /// pointers into the arguments, as they always were).
    Arguments,
    /// Any other member of `params`: `_meta` of every message, a resource
    /// URI, a completion's `argument` and `context`, a retried request's
    /// `inputResponses` (findings' paths start with the member:
    /// `/_meta/...`, `/uri`, `/inputResponses/...`).
    Param(String),
    /// The JSON-RPC `id` of a request or answer, when it is a string or a
    /// number the caller chose: the server reads it (and may log or echo it).
    Id,
    /// The method name (a notification's method is the caller's text too:
    /// `notifications/<anything>` passes the base protocol).
    Method,
    /// The `result` or `error` of a client's answer to a server request (an
    /// elicitation result a user typed a card number into); paths start with
    /// `/result` or `/error`.
    Answer,
}

impl Channel {
    /// A URI named the resource the rules decided on: a redacted URI names
    /// another resource (and no longer matches `Mcp-Name`), so a finding in
    /// it refuses the request even under `dlp.requests: redact`.
    /// The same holds for a tool's or prompt's `name`: the rules decided on it.
    fn rewritable(&self) -> bool {
        // Nor can an id be (the answer must carry it back), nor the
        // server's `requestState` (it checks what it issued).
        !matches!(self, Channel::Param(m) if m == "uri" || m == "name" || m == "requestState")
            && *self != Channel::Id
            && *self != Channel::Method
    }
}

/// The channels of `m` DLP scans on the request side. Every message's
/// `_meta`; tool calls (unless the tool is exempt: the whole message is)
/// and prompts: arguments; the three requests a server may answer with an
/// `InputRequiredResult` (MRTR, 2026-07-28 `basic/patterns/mrtr`): the
/// `inputResponses` of the retry. `requestState` is the server's opaque blob
/// ("Clients MUST NOT inspect, parse, modify"), but nothing makes the caller
/// send back what the server issued: it is scanned, and a finding there is
/// refused, never redacted (that would break a genuine retry).
fn request_channels(policy: &CompiledPolicy, m: &Message) -> Vec<Channel> {
    let method = match m {
        Message::Response { .. } => return vec![Channel::Answer, Channel::Id],
        _ => m.method().unwrap_or_default(),
    };
    if exempt_call(policy, m) {
        return Vec::new();
    }
    let arguments = matches!(method, "tools/call" | "prompts/get");
    let mut channels: Vec<Channel> = vec![Channel::Id, Channel::Method];
    if arguments {
        channels.push(Channel::Arguments);
    }
    // Every other member of `params` is caller data too (a cursor, a
    // cancellation's reason, a progress message, an extra member a server
    // reads): all of it is scanned, not a list of the members we know.
    channels.extend(
        m.params()
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys())
            // `requestState` too: the caller can write anything there.
            .filter(|k| !(arguments && *k == "arguments"))
            .map(|k| Channel::Param(k.clone())),
    );
    channels
}

/// DLP on everything the caller sends the server (see [`request_channels`]):
/// findings and refusals into `verdicts`, redaction in place (enforced only:
/// dry run never changes what the server reads). Returns whether anything
/// was redacted.
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
        let mut changed = false;
        for channel in &request_channels(policy, m) {
            // A copy of the method to scan (a finding there refuses, it is never rewritten).
            let mut method_value: Value;
            let (value, prefix) = match (channel, &mut *m) {
                (
                    Channel::Arguments,
                    Message::Request { params, .. } | Message::Notification { params, .. },
                ) => (params.get_mut("arguments"), String::new()),
                (
                    Channel::Param(member),
                    Message::Request { params, .. } | Message::Notification { params, .. },
                ) => (
                    params.get_mut(member.as_str()),
                    // A JSON pointer token: `~` and `/` escaped.
                    {
                        let mut token = String::with_capacity(member.len());
                        crate::dlp::push_pointer_token(&mut token, member);
                        token
                    },
                ),
                (Channel::Id, Message::Request { id, .. } | Message::Response { id, .. })
                    if id.is_string() || id.is_number() =>
                {
                    (Some(id), "id".to_owned())
                }
                (
                    Channel::Method,
                    Message::Request { method, .. } | Message::Notification { method, .. },
                ) => {
                    method_value = Value::String(method.clone());
                    (Some(&mut method_value), "method".to_owned())
                }
                (Channel::Answer, Message::Response { answer, .. }) => match answer {
                    AnswerMember::Result(r) => (Some(r), "result".to_owned()),
                    AnswerMember::Error(e) => (Some(e), "error".to_owned()),
                },
                _ => (None, String::new()),
            };
            let Some(value) = value else {
                continue;
            };
            let rewrite = redact && channel.rewritable();
            let mut found = match (rewrite, channel) {
                // A client's answer may carry a sampled image or audio: its
                // base64 payload is not text (what a result skips).
                (true, Channel::Answer) => crate::dlp::redact_result(&policy.dlp.scanner, value),
                (false, Channel::Answer) => crate::dlp::scan_result(&policy.dlp.scanner, value),
                (true, _) => policy.dlp.scanner.redact_value(value),
                (false, _) => policy.dlp.scanner.scan_value(value),
            };
            if found.is_empty() {
                continue;
            }
            match action {
                DlpAction::Block => v.dlp_refused = true,
                DlpAction::Redact if rewrite => changed = true,
                // Not rewritable: refused (in dry run, only audited).
                DlpAction::Redact if redact => v.dlp_refused = true,
                _ => {}
            }
            if !prefix.is_empty() {
                for f in &mut found {
                    f.path = format!("/{prefix}{}", f.path);
                }
            }
            let root = match channel {
                Channel::Arguments => "/arguments",
                Channel::Param(_) => "/params",
                Channel::Answer | Channel::Id | Channel::Method => "",
            };
            v.finding_roots.extend(found.iter().map(|_| root));
            v.findings.extend(found);
        }
        if changed {
            v.redacted = true;
            v.redacted_arguments = match &*m {
                Message::Response { .. } => None,
                _ => m.params().get("arguments").cloned(),
            };
            redacted = true;
        }
    }
    redacted
}

/// The `_meta` member that carries a 2026-07-28 request's protocol version.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// MCP's request metadata headers must agree with the body: an intermediary
/// may route or rate-limit on them, so disagreement is smuggling. The
/// 2026-07-28 revision (`basic/transports/streamable-http`, Server
/// Validation) requires rejecting, with 400 and `HeaderMismatch` (-32020),
/// a request whose `Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version` or
/// `Mcp-Param-{Name}` headers disagree with the body or hold invalid
/// characters.
fn check_standard_headers(head: &RequestHead, body: &Body) -> Result<(), String> {
    check_protocol_version(head, body)?;
    check_required_headers(head, body)?;
    if head.mcp_method.is_none() && head.mcp_name.is_none() && head.mcp_params.is_empty() {
        return Ok(());
    }
    let Body::Single(m) = body else {
        return Err(
            "Mcp-Method/Mcp-Name/Mcp-Param-* headers are only defined for a single message".into(),
        );
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
    check_param_headers(&head.mcp_params, m)
}

/// `MCP-Protocol-Version` "MUST match the `io.modelcontextprotocol/protocolVersion`
/// field carried in the request body's `_meta`" (2026-07-28, Protocol
/// Version Header). A body that carries the field needs the header ("a
/// required standard header ... is missing" is a validation failure); a body
/// without it is an earlier revision's, whose clients send the header after
/// `initialize` with nothing in the body to compare it to.
fn check_protocol_version(head: &RequestHead, body: &Body) -> Result<(), String> {
    let messages: &[Message] = match body {
        Body::Single(m) => std::slice::from_ref(m),
        Body::Batch(ms) => ms,
    };
    for m in messages {
        let Some(meta) = m.params().get("_meta") else {
            continue;
        };
        let Some(in_body) = meta.get(META_PROTOCOL_VERSION) else {
            continue;
        };
        match (&head.protocol_version, in_body.as_str()) {
            (_, None) => return Err(format!("_meta {META_PROTOCOL_VERSION:?} must be a string")),
            (None, Some(_)) => {
                return Err(format!(
                    "MCP-Protocol-Version header missing while the body's _meta names {META_PROTOCOL_VERSION:?}"
                ))
            }
            (Some(h), Some(v)) if h.trim() != v => {
                return Err("MCP-Protocol-Version header disagrees with the body's _meta".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// A request of the 2026-07-28 revision (its `_meta` names a protocol
/// version) must carry `Mcp-Method`, and `Mcp-Name` for `tools/call`,
/// `resources/read` and `prompts/get` ("These headers are REQUIRED for
/// compliance"; "a required standard header ... is missing" is a validation
/// failure). An intermediary after the filter may route on them: one that
/// finds none falls back to whatever it does by default, which the policy
/// never saw. Earlier revisions' requests (no version in `_meta`) need none.
fn check_required_headers(head: &RequestHead, body: &Body) -> Result<(), String> {
    let Body::Single(Message::Request { method, params, .. }) = body else {
        return Ok(());
    };
    if params
        .get("_meta")
        .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
        .is_none()
    {
        return Ok(());
    }
    if head.mcp_method.is_none() {
        return Err(
            "Mcp-Method header missing on a request that names its protocol version in _meta"
                .into(),
        );
    }
    let named = matches!(
        method.as_str(),
        "tools/call" | "resources/read" | "prompts/get"
    );
    if named && head.mcp_name.is_none() {
        return Err(format!(
            "Mcp-Name header missing on a {method} that names its protocol version in _meta"
        ));
    }
    Ok(())
}

/// `Mcp-Param-{Name}` headers (SEP-2243's custom headers, 2026-07-28 Custom
/// Headers from Tool Parameters): the value, base64-decoded when in the
/// sentinel form, must hold only the characters the revision allows and
/// equal a primitive argument of the call. Which argument a name mirrors is
/// said by the tool's `inputSchema` (`x-mcp-header`), which the filter does
/// not hold for this request (it decides each request alone); so it checks
/// what holds whatever the schema says: the header must equal the string
/// form of some string, integer or boolean argument reachable through
/// object members only (the only place `x-mcp-header` may point). A value
/// found nowhere in the arguments disagrees with the body for any schema.
/// Integers compare numerically ("42" and 42.0 are equal, as the revision
/// recommends).
fn check_param_headers(params: &[(String, String)], m: &Message) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for (name, raw) in params {
        if seen.contains(&name.as_str()) {
            return Err(format!("header Mcp-Param-{name} sent more than once"));
        }
        seen.push(name);
        let value = decode_param_value(raw)
            .ok_or_else(|| format!("Mcp-Param-{name} header has invalid characters or base64"))?;
        let arguments = match m.method() {
            Some("tools/call") => jsonrpc::arguments(m.params()),
            _ => {
                return Err(format!(
                    "Mcp-Param-{name} header on a message that is not a tools/call"
                ))
            }
        };
        if !argument_mirrors(arguments, &value, 0) {
            return Err(format!(
                "Mcp-Param-{name} header matches no argument in the body"
            ));
        }
    }
    Ok(())
}

/// A header value as the revision allows it: the `=?base64?...?=` sentinel
/// decoded to UTF-8, or a plain value of visible ASCII, space and tab
/// without leading or trailing whitespace (a client must base64 anything
/// else, "Value Encoding").
fn decode_param_value(raw: &str) -> Option<String> {
    if raw.starts_with("=?base64?") && raw.ends_with("?=") {
        return decode_mcp_name(raw);
    }
    let plain = raw
        .bytes()
        .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
        && raw.trim() == raw;
    plain.then(|| raw.to_owned())
}

/// Whether `value` is the header form of a primitive reachable from `v`
/// through object members only (depth-capped like the parser's limit).
fn argument_mirrors(v: &Value, value: &str, depth: usize) -> bool {
    match v {
        Value::String(s) => s == value,
        Value::Bool(b) => value == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_f64(), value.parse::<f64>()) {
            (Some(a), Ok(b)) => {
                a == b
                    && value
                        .bytes()
                        .all(|c| c.is_ascii_digit() || c == b'-' || c == b'.')
            }
            _ => false,
        },
        Value::Object(o) if depth < 64 => o.values().any(|x| argument_mirrors(x, value, depth + 1)),
        _ => false,
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
    /// A message refused by its decision: -32014 with the digests when its
    /// pin refused it, else the decision's error.
    fn of_verdict(v: &MessageVerdict) -> Self {
        let error = match (&v.decision.rule, &v.pin, &v.schema) {
            (RuleId::Pin, Some(p), _) => reply::pin_error(p),
            (RuleId::InputSchema, _, Some(f)) => f.error(),
            _ => reply::decision_error_member(&v.decision),
        };
        Refused {
            error,
            rule: v.decision.rule.clone(),
        }
    }
}

/// A `tools/call` checked against `pins` (none when the policy has none or
/// the message is not a call): its tool's remembered definition on the
/// request's upstream.
fn pin_check(
    policy: &CompiledPolicy,
    head: &RequestHead,
    seen: &dyn SeenTools,
    m: &Message,
) -> Option<PinMismatch> {
    let pins = policy.pins.as_ref()?;
    if m.method() != Some("tools/call") {
        return None;
    }
    let tool = m.params().get("name").and_then(Value::as_str)?;
    pins.check(tool, head.now_ms, || {
        seen.seen(head.upstream.as_deref(), tool)
    })
}

/// A `tools/call` checked against the schemas its server declared (none
/// when `schemas` is off or the message is not a call): the input check's
/// finding, and the tool with what is known of it when its result is to be
/// checked too. Shared data is read once per call; the compiled schemas come
/// from the VM's cache.
fn schema_check(
    policy: &CompiledPolicy,
    head: &RequestHead,
    seen: &dyn SeenTools,
    m: &Message,
    (budget, compiling): (
        &std::cell::Cell<crate::catalogue::schema::CheckBudget>,
        &std::cell::Cell<schemas::CompileBudget>,
    ),
) -> (Option<SchemaFinding>, Option<(String, Known)>) {
    let sp = &policy.schemas;
    if !sp.active() || m.method() != Some("tools/call") {
        return (None, None);
    }
    let Some(tool) = m.params().get("name").and_then(Value::as_str) else {
        return (None, None);
    };
    let known = seen.schemas(head.upstream.as_deref(), tool, compiling);
    let finding = match sp.input {
        SchemaMode::Off => None,
        mode => schemas::check(
            sp,
            Side::Input,
            mode,
            tool,
            &known,
            m.params().get("arguments"),
            budget,
        )
        .map(|f| f.screened(&policy.dlp.scanner)),
    };
    let declared = (sp.output != SchemaMode::Off).then(|| (tool.to_owned(), known));
    (finding, declared)
}

/// A `tools/call` judged by what the catalogue checks remember of its tool
/// on the request's upstream (only when the policy removes tools or refuses
/// unlisted calls): the reason it is refused, if it is.
fn catalogue_check(
    policy: &CompiledPolicy,
    head: &RequestHead,
    seen: &dyn SeenTools,
    m: &Message,
) -> Option<String> {
    let cat = &policy.catalogue;
    if !cat.guards_calls() || m.method() != Some("tools/call") {
        return None;
    }
    let tool = m.params().get("name").and_then(Value::as_str)?;
    let live = |at: u64| head.now_ms < at.saturating_add(cat.hold_ms);
    let unlisted = || {
        match cat.unlisted_calls {
        UnlistedCalls::Refuse => Some(format!(
            "tool {tool:?}: no tools/list of this server showed it to this Envoy yet (catalogue.unlisted_calls: refuse); list the tools, then call again"
        )),
        UnlistedCalls::Allow => None,
    }
    };
    match seen.listed(head.upstream.as_deref(), tool) {
        Listed::Listed => None,
        Listed::Unlisted => unlisted(),
        Listed::Removed { checks, at_ms } if live(at_ms) && cat.still_removes(&checks) => {
            let words: Vec<&str> = checks.iter().map(|c| c.as_str()).collect();
            Some(format!(
                "tool {tool:?} was removed from a tools/list of this server as poisoned ({}); its calls are refused until {} (ms since the epoch, catalogue.hold_s)",
                words.join(", "),
                at_ms.saturating_add(cat.hold_ms)
            ))
        }
        Listed::Removed { .. } => None,
        Listed::Overflow { at_ms } if live(at_ms) => Some(format!(
            "more than {} tools of this server were removed as poisoned; all its calls are refused until {} (ms since the epoch, catalogue.hold_s)",
            crate::catalogue::listed::MAX_REMOVED,
            at_ms.saturating_add(cat.hold_ms)
        )),
        Listed::Overflow { .. } => unlisted(),
        Listed::Unavailable => Some(format!(
            "tool {tool:?}: what this server listed cannot be read; refusing rather than guessing"
        )),
    }
}

/// The id a refusal answers: a request's (a notification or a client's
/// answer has none to answer).
fn answerable_id(m: &Message) -> Option<&Value> {
    match m {
        Message::Request { id, .. } => Some(id),
        _ => None,
    }
}

/// The reply to a refused single message or batch: per message, its id when
/// it is a request (what can be answered) and its refusal if it has one.
fn refusal(messages: &[(Option<&Value>, Option<Refused>)]) -> LocalReply {
    let first_rule = messages
        .iter()
        .find_map(|(_, r)| r.as_ref())
        .map(|r| r.rule.as_str());
    if let [(id, r)] = messages {
        return match (id, r) {
            (Some(id), Some(r)) => LocalReply::json(
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
    for (id, r) in messages {
        let Some(id) = id else {
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
            &crate::catalogue::pins::NothingSeen,
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

    /// A number literal more precise than its double is refused before any
    /// rule reads it: `lte: 100` decided on 100.0 while a server reading
    /// decimals reads more than 100 (tenth review H1).
    #[test]
    fn numbers_no_double_holds_exactly_are_refused() {
        let policy = match crate::policy::compile(&json!({
            "version": 1,
            "identity": {"anonymous_roles": ["any"]},
            "rules": [{"id": "small-refunds", "effect": "allow", "tools": ["refund"],
                       "when": {"arg": "/amount", "lte": 100}}]
        })) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        };
        let caller = Caller {
            subject: None,
            tenant: None,
            roles: vec!["any".into()],
            via: Via::Anonymous,
        };
        // (behaviour, amount literal, forwarded, refused as invalid)
        for (name, amount, forwarded, invalid) in [
            ("a_short_decimal", "99.5", true, false),
            ("exactly_the_cap", "100", true, false),
            ("over_the_cap", "100.5", false, false),
            (
                "past_the_cap_in_digits_no_double_holds",
                "100.00000000000000000001",
                false,
                true,
            ),
            (
                "an_integer_past_64_bits",
                "18446744073709551617",
                false,
                true,
            ),
            (
                "a_long_literal_inside_a_string",
                "\"100.00000000000000000001\"",
                false,
                false,
            ),
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"refund","arguments":{{"amount":{amount}}}}}}}"#
            );
            let v = judge_body(
                &policy,
                &caller,
                &RequestHead::default(),
                None,
                &crate::catalogue::pins::NothingSeen,
                body.as_bytes(),
            );
            assert_eq!(!v.refuses(), forwarded, "{name}: {:?}", v.outcome);
            let refused_invalid = matches!(&v.outcome, BodyOutcome::Refuse(r) if r.code == -32600 && r.message.contains("more precise than a double"));
            assert_eq!(refused_invalid, invalid, "{name}: {:?}", v.outcome);
        }
    }

    const SECRET: &str = "glpat-_bkBl5pR8VAr0_UnPKWu";

    fn channels_policy(requests: &str, mode: &str) -> CompiledPolicy {
        match crate::policy::compile(&json!({
            "version": 1,
            "mode": mode,
            "identity": {"anonymous_roles": ["any"]},
            "rules": [{"id": "all", "effect": "allow", "methods": ["*"]}],
            "dlp": {"requests": requests, "exempt_tools": ["raw"]}
        })) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Every channel that carries caller data to the server is scanned:
    /// arguments, `_meta`, resource URIs, completion values, a retried
    /// request's input responses, and the client's answers to server
    /// requests. (Before, only `tools/call` and `prompts/get` arguments were.)
    #[test]
    fn request_channels_are_scanned() {
        let s = SECRET;
        // (name, dlp.requests, body, refused, rewritten, finding paths)
        type Case<'a> = (&'a str, &'a str, Value, bool, bool, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "tool_arguments_block",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"m": s}}}),
                true,
                false,
                vec!["/m"],
            ),
            (
                "meta_of_a_tool_call_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {}, "_meta": {"note": s}}}),
                true,
                false,
                vec!["/_meta/note"],
            ),
            (
                "a_string_id_is_caller_data",
                "redact",
                json!({"jsonrpc": "2.0", "id": s, "method": "ping"}),
                true,
                false,
                vec!["/id"],
            ),
            (
                "a_notification_method_is_caller_data",
                "redact",
                json!({"jsonrpc": "2.0", "method": format!("notifications/{s}")}),
                true,
                false,
                vec!["/method"],
            ),
            (
                "a_card_number_as_a_numeric_id",
                "block",
                json!({"jsonrpc": "2.0", "id": 4111111111111111_u64, "method": "ping"}),
                true,
                false,
                vec!["/id"],
            ),
            (
                "an_extra_member_of_a_tool_call_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {}, "note": s}}),
                true,
                false,
                vec!["/note"],
            ),
            (
                "a_list_cursor_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": s}}),
                true,
                false,
                vec!["/cursor"],
            ),
            (
                "a_cancellation_reason_blocks",
                "block",
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": 3, "reason": s}}),
                true,
                false,
                vec!["/reason"],
            ),
            (
                "an_extra_member_is_redacted_under_redact",
                "redact",
                json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": s}}),
                false,
                true,
                vec!["/x"],
            ),
            (
                "meta_of_a_list_request_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                       "params": {"_meta": {"trace": s}}}),
                true,
                false,
                vec!["/_meta/trace"],
            ),
            (
                "meta_is_redacted_under_redact",
                "redact",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                       "params": {"_meta": {"trace": s}}}),
                false,
                true,
                vec!["/_meta/trace"],
            ),
            (
                "resource_uri_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                       "params": {"uri": format!("https://h/x?token={s}")}}),
                true,
                false,
                vec!["/uri"],
            ),
            (
                "resource_uri_is_refused_not_redacted",
                "redact",
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                       "params": {"uri": format!("https://h/x?token={s}")}}),
                true,
                false,
                vec!["/uri"],
            ),
            (
                "completion_value_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "completion/complete",
                       "params": {"ref": {"type": "ref/prompt", "name": "p"},
                                  "argument": {"name": "a", "value": s}}}),
                true,
                false,
                vec!["/argument/value"],
            ),
            (
                "completion_context_is_redacted",
                "redact",
                json!({"jsonrpc": "2.0", "id": 1, "method": "completion/complete",
                       "params": {"ref": {"type": "ref/prompt", "name": "p"},
                                  "argument": {"name": "a", "value": "x"},
                                  "context": {"arguments": {"b": s}}}}),
                false,
                true,
                vec!["/context/arguments/b"],
            ),
            (
                "prompt_arguments_block",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get",
                       "params": {"name": "p", "arguments": {"a": s}}}),
                true,
                false,
                vec!["/a"],
            ),
            (
                "input_responses_of_a_retry_block",
                "block",
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"m": "hi"},
                                  "inputResponses": {"card": {"action": "accept",
                                                              "content": {"number": s}}},
                                  "requestState": "opaque"}}),
                true,
                false,
                vec!["/inputResponses/card/content/number"],
            ),
            (
                "client_answer_to_an_elicitation_blocks",
                "block",
                json!({"jsonrpc": "2.0", "id": "srv-1",
                       "result": {"action": "accept", "content": {"number": s}}}),
                true,
                false,
                vec!["/result/content/number"],
            ),
            (
                "client_error_answer_is_redacted",
                "redact",
                json!({"jsonrpc": "2.0", "id": "srv-1",
                       "error": {"code": -1, "message": format!("bad {s}")}}),
                false,
                true,
                vec!["/error/message"],
            ),
            (
                "exempt_tool_is_not_scanned_at_all",
                "block",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "raw", "arguments": {"m": s}, "_meta": {"n": s}}}),
                false,
                false,
                vec![],
            ),
            (
                // The caller can write anything there (review M1): refused,
                // never redacted (the server checks what it issued).
                "request_state_is_refused_not_redacted",
                "redact",
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {}, "requestState": s}}),
                true,
                false,
                vec!["/requestState"],
            ),
        ];
        for (name, requests, body, refused, rewritten, paths) in cases {
            let policy = channels_policy(requests, "enforce");
            let v = judge_body(
                &policy,
                &anonymous(),
                &RequestHead::default(),
                None,
                &crate::catalogue::pins::NothingSeen,
                body.to_string().as_bytes(),
            );
            let found: Vec<&str> = v
                .messages
                .iter()
                .flat_map(|m| &m.findings)
                .map(|f| f.path.as_str())
                .collect();
            assert_eq!(found, paths, "{name}");
            assert_eq!(
                matches!(v.outcome, BodyOutcome::DlpBlock(_)),
                refused,
                "{name}: {:?}",
                v.outcome
            );
            match &v.outcome {
                BodyOutcome::Forward {
                    rewritten: Some(bytes),
                } => {
                    assert!(rewritten, "{name}: rewritten");
                    let sent = String::from_utf8_lossy(bytes);
                    assert!(!sent.contains(SECRET), "{name}: {sent}");
                    assert!(v.messages[0].redacted, "{name}: audited as redacted");
                }
                _ => assert!(!rewritten, "{name}: not rewritten: {:?}", v.outcome),
            }
        }
    }

    /// Dry run never changes what the server reads, and refuses nothing: a
    /// secret in a URI is only reported.
    #[test]
    fn dry_run_reports_request_channels_without_refusing() {
        let policy = channels_policy("redact", "dry_run");
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                          "params": {"uri": format!("https://h/x?token={SECRET}"), "_meta": {"n": SECRET}}});
        let v = judge_body(
            &policy,
            &anonymous(),
            &RequestHead::default(),
            None,
            &crate::catalogue::pins::NothingSeen,
            body.to_string().as_bytes(),
        );
        assert_eq!(v.outcome, BodyOutcome::Forward { rewritten: None });
        let paths: Vec<&str> = v.messages[0]
            .findings
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, vec!["/_meta/n", "/uri"]);
        assert_eq!(v.messages[0].finding_roots, vec!["/params", "/params"]);
    }

    /// `MCP-Protocol-Version` and `Mcp-Param-*` agree with the body or the
    /// request is refused 400 / -32020 (2026-07-28, Server Validation).
    #[test]
    fn metadata_headers_must_agree_with_the_body() {
        let call = |args: Value, version: Option<&str>| {
            let mut params = json!({"name": "sql", "arguments": args});
            if let Some(v) = version {
                params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": v});
            }
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        };
        let params = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // (name, MCP-Protocol-Version, Mcp-Param-*, body, refused)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<(String, String)>, Value, bool);
        let cases: Vec<Case> = vec![
            (
                "version_agrees",
                Some("2026-07-28"),
                vec![],
                call(json!({}), Some("2026-07-28")),
                false,
            ),
            (
                "version_disagrees",
                Some("2025-11-25"),
                vec![],
                call(json!({}), Some("2026-07-28")),
                true,
            ),
            (
                "version_header_missing_for_a_modern_body",
                None,
                vec![],
                call(json!({}), Some("2026-07-28")),
                true,
            ),
            (
                "version_in_body_not_a_string",
                Some("1"),
                vec![],
                call(json!({}), None).tap_meta(json!(1)),
                true,
            ),
            (
                "legacy_body_without_meta_version_passes",
                Some("2025-06-18"),
                vec![],
                call(json!({}), None),
                false,
            ),
            (
                "param_matches_a_string_argument",
                None,
                params(&[("region", "us-west1")]),
                call(json!({"region": "us-west1", "q": "x"}), None),
                false,
            ),
            (
                "param_matches_a_nested_argument",
                None,
                params(&[("tenant", "acme")]),
                call(json!({"ctx": {"tenant": "acme"}}), None),
                false,
            ),
            (
                "param_matches_an_integer_numerically",
                None,
                params(&[("n", "42")]),
                call(json!({"n": 42.0}), None),
                false,
            ),
            (
                "param_matches_a_boolean",
                None,
                params(&[("dry", "true")]),
                call(json!({"dry": true}), None),
                false,
            ),
            (
                "param_in_base64_agrees",
                None,
                params(&[("g", "=?base64?SGVsbG8sIOS4lueVjA==?=")]),
                call(json!({"g": "Hello, 世界"}), None),
                false,
            ),
            (
                "param_disagrees_with_every_argument",
                None,
                params(&[("region", "us-west1")]),
                call(json!({"region": "eu-west1"}), None),
                true,
            ),
            (
                "param_inside_an_array_is_not_reachable",
                None,
                params(&[("region", "us")]),
                call(json!({"r": ["us"]}), None),
                true,
            ),
            (
                "param_with_invalid_base64",
                None,
                params(&[("region", "=?base64?***?=")]),
                call(json!({"region": "x"}), None),
                true,
            ),
            (
                "param_with_a_non_ascii_plain_value",
                None,
                params(&[("region", "ü")]),
                call(json!({"region": "ü"}), None),
                true,
            ),
            (
                "param_sent_twice",
                None,
                params(&[("region", "us"), ("region", "us")]),
                call(json!({"region": "us"}), None),
                true,
            ),
            (
                "param_on_a_list_request",
                None,
                params(&[("x", "1")]),
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                true,
            ),
        ];
        let policy = channels_policy("block", "enforce");
        for (name, version, mcp_params, body, refused) in cases {
            // The standard headers a conforming client sends with the body
            // (required of a 2026-07-28 request: see the next test).
            let head = RequestHead {
                protocol_version: version.map(str::to_owned),
                mcp_params,
                mcp_method: body["method"].as_str().map(str::to_owned),
                mcp_name: body["params"]["name"].as_str().map(str::to_owned),
                ..RequestHead::default()
            };
            let v = judge_body(
                &policy,
                &anonymous(),
                &head,
                None,
                &crate::catalogue::pins::NothingSeen,
                body.to_string().as_bytes(),
            );
            let mismatch = matches!(&v.outcome, BodyOutcome::Refuse(r) if r.code == reply::HEADER_MISMATCH && r.status == 400);
            assert_eq!(mismatch, refused, "{name}: {:?}", v.outcome);
        }
    }

    /// A 2026-07-28 request must carry `Mcp-Method` (and `Mcp-Name` for a
    /// named call); an earlier revision's request needs neither.
    #[test]
    fn modern_requests_need_the_standard_headers() {
        let modern = |method: &str, params: Value| {
            let mut params = params;
            params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        };
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {}}});
        let call = modern("tools/call", json!({"name": "echo", "arguments": {}}));
        let read = modern("resources/read", json!({"uri": "file:///a"}));
        let list = modern("tools/list", json!({}));
        // (name, Mcp-Method, Mcp-Name, body, refused)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a Value, bool);
        let cases: Vec<Case> = vec![
            (
                "call_with_both",
                Some("tools/call"),
                Some("echo"),
                &call,
                false,
            ),
            ("call_without_mcp_method", None, Some("echo"), &call, true),
            (
                "call_without_mcp_name",
                Some("tools/call"),
                None,
                &call,
                true,
            ),
            (
                "read_without_mcp_name",
                Some("resources/read"),
                None,
                &read,
                true,
            ),
            (
                "read_with_both",
                Some("resources/read"),
                Some("file:///a"),
                &read,
                false,
            ),
            (
                "list_needs_no_mcp_name",
                Some("tools/list"),
                None,
                &list,
                false,
            ),
            ("list_without_mcp_method", None, None, &list, true),
            ("legacy_call_needs_neither", None, None, &legacy, false),
        ];
        let policy = channels_policy("block", "enforce");
        for (name, method, mcp_name, body, refused) in cases {
            let head = RequestHead {
                protocol_version: Some("2026-07-28".into()),
                mcp_method: method.map(str::to_owned),
                mcp_name: mcp_name.map(str::to_owned),
                ..RequestHead::default()
            };
            let v = judge_body(
                &policy,
                &anonymous(),
                &head,
                None,
                &crate::catalogue::pins::NothingSeen,
                body.to_string().as_bytes(),
            );
            let mismatch =
                matches!(&v.outcome, BodyOutcome::Refuse(r) if r.code == reply::HEADER_MISMATCH);
            assert_eq!(mismatch, refused, "{name}: {:?}", v.outcome);
        }
    }

    /// A listen is decided by `methods` rules, and each URI it subscribes to
    /// as a `resources/subscribe` of that URI would be.
    #[test]
    fn listen_subscribes_only_to_allowed_resources() {
        let policy = match crate::policy::compile(&json!({
            "version": 1,
            "identity": {"anonymous_roles": ["any"]},
            "rules": [
                {"id": "listen", "effect": "allow", "methods": ["subscriptions/listen"]},
                {"id": "docs", "effect": "allow", "resources": ["file:///srv/docs/*"]},
                {"id": "no-secret", "effect": "deny", "resources": ["file:///srv/docs/secret*"]}
            ]
        })) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        };
        let listen = |notifications: Value| {
            json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                   "params": {"notifications": notifications}})
        };
        // (name, body, Ok(rule) or Err(()) for a protocol refusal)
        let cases: Vec<(&str, Value, Result<&str, ()>)> = vec![
            (
                "list_changes_only",
                listen(json!({"toolsListChanged": true})),
                Ok("listen"),
            ),
            (
                "allowed_resource",
                listen(json!({"resourceSubscriptions": ["file:///srv/docs/a"]})),
                Ok("listen"),
            ),
            (
                "denied_resource",
                listen(
                    json!({"resourceSubscriptions": ["file:///srv/docs/a", "file:///srv/docs/secret.txt"]}),
                ),
                Ok("no-secret"),
            ),
            (
                "resource_no_rule_allows",
                listen(json!({"resourceSubscriptions": ["file:///etc/passwd"]})),
                Ok("default-deny"),
            ),
            (
                "climbing_resource",
                listen(json!({"resourceSubscriptions": ["file:///../etc/passwd"]})),
                Ok("resource-uri"),
            ),
            (
                "uri_not_a_string",
                listen(json!({"resourceSubscriptions": [5]})),
                Err(()),
            ),
            (
                "subscriptions_not_an_array",
                listen(json!({"resourceSubscriptions": "file:///srv/docs/a"})),
                Err(()),
            ),
            (
                "subscriptions_in_other_case",
                listen(json!({"ResourceSubscriptions": ["file:///etc/passwd"]})),
                Err(()),
            ),
            (
                "notifications_in_other_case",
                json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                    "params": {"Notifications": {"resourceSubscriptions": ["file:///etc/passwd"]}}}),
                Err(()),
            ),
        ];
        for (name, body, want) in cases {
            let v = judge_body(
                &policy,
                &anonymous(),
                &RequestHead::default(),
                None,
                &crate::catalogue::pins::NothingSeen,
                body.to_string().as_bytes(),
            );
            match want {
                Ok(rule) => assert_eq!(v.messages[0].decision.rule.as_str(), rule, "{name}"),
                Err(()) => assert!(
                    matches!(v.outcome, BodyOutcome::Refuse(_)),
                    "{name}: {:?}",
                    v.outcome
                ),
            }
        }
    }

    trait TapMeta {
        fn tap_meta(self, version: Value) -> Value;
    }
    impl TapMeta for Value {
        fn tap_meta(mut self, version: Value) -> Value {
            self["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": version});
            self
        }
    }
}
