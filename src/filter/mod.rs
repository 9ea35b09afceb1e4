//! The per-request state machine: request headers → buffered body → the
//! verdict (`verdict.rs`) applied → local reply or continue → the response
//! rewritten. This module is the request gate; `rewriter` owns the response
//! side, `exchange_audit` the exchange's events. All host access goes through
//! `Host`, so the whole pipeline runs natively in tests.

use crate::approval::{self, Answer, ApprovalConfig, ApprovalMode, Ask};
use crate::audit::{ApprovalStep, AuditApproval};
use crate::catalogue::pins::{self, ListCheck, Remembered};
use crate::catalogue::{listed, Check, DescriptionAction, OtherTools, ResultAction};
use crate::decide::{Catalogue, Decision, Verdict};
use crate::descriptors::{self, Descriptors};
use crate::dlp::Action as DlpAction;
use crate::host::{Callout, Counter, Flow, Host, HostError, InForce, LogLevel, ResponsePart};
use crate::identity::{self, Caller, IdentityError, IdentityInputs, Via};
use crate::policy::{CompiledPolicy, Mode};
use crate::reply::{self, LocalReply};
use crate::response::{ListInspection, ResultInspection};
use crate::response_head;
use crate::rule_id::RuleId;
use crate::session::{self, Binding, Unknown, WhenFull};
use crate::verdict::{
    self, anonymous, judge_body, judge_head, BodyOutcome, BodyVerdict, HeadVerdict, Refusal,
    RequestHead, SessionCheck, SINGLE_HEADERS,
};
use std::rc::Rc;

mod exchange_audit;
mod rewriter;

use exchange_audit::{ExchangeAudit, PendingAudit, ScreenedMessage};
use rewriter::ResponseRewriter;

/// Response header that reports a dry-run decision to the caller.
pub const DRY_RUN_HEADER: &str = "x-mcp-firewall-dry-run";
/// The least a budget that exposes it has left after the request.
pub const BUDGET_HEADER: &str = "x-mcp-firewall-budget-remaining";
/// A response line name and the values it keeps (none: the name is removed).
type LineRewrite = (String, Vec<String>);

/// The names of every header the filter writes on answers begin so.
const OWN_HEADER_PREFIX: &str = "x-mcp-firewall-";

/// Remember `name` when it is in the filter's own namespace
/// ([`OWN_HEADER_PREFIX`], any case), once.
fn note_own_line(own: &mut Vec<String>, name: &str) {
    let ours = name
        .get(..OWN_HEADER_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(OWN_HEADER_PREFIX));
    if ours && !own.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        own.push(name.to_owned());
    }
}

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
    /// The whole body is held while the approval service is asked
    /// (`awaiting`); its answer continues the request or replies.
    AwaitingApproval,
}

/// A call held for the approval service's answer.
struct AwaitingApproval {
    call_id: u32,
    ask: Box<Ask>,
    /// The body's verdict, applied when the call is released (its rate
    /// limits are consumed then, and its answers planned).
    verdict: BodyVerdict,
    /// The body as received: decided again if the policy changes while the
    /// call waits (a permission revoked meanwhile is not outwaited).
    body: Vec<u8>,
    stage: Stage,
}

/// Which of the approval's callouts the held call waits for.
enum Stage {
    /// `POST <path>`: find or create the request (held: and wait for it).
    Asked,
    /// `POST <path>/<id>/use`: a held call's approved request, being used.
    Using {
        approval_id: String,
        decided_by: Option<String>,
        reason: Option<String>,
    },
}

/// The approval member of an audit event.
fn approval_step(
    step: ApprovalStep,
    id: Option<&str>,
    decided_by: Option<&str>,
    reason: Option<&str>,
) -> AuditApproval {
    AuditApproval {
        decided_by: decided_by.map(str::to_owned),
        id: id.map(str::to_owned),
        reason: reason.map(str::to_owned),
        step,
    }
}

/// What a stream that adopted a newer policy started under: the request
/// must pass that policy too (see `adopt_policy_in_force`).
struct StartedUnder {
    policy: Rc<CompiledPolicy>,
    caller: Option<Rc<Caller>>,
    standing: Option<Decision>,
}

/// One HTTP exchange on an MCP endpoint: the request gate (this type's own
/// state: the caller, the headers the body's verdict reads, a standing
/// refusal, the dry-run note), the response rewriter, and the exchange's audit.
pub struct RequestFilter {
    policy: Rc<CompiledPolicy>,
    phase: Phase,
    /// Shared with the response rewriter (read for list visibility).
    caller: Option<Rc<Caller>>,
    /// The request headers the body's verdict reads (Mcp-Method, Mcp-Name).
    head: RequestHead,
    /// The upstream's key is read when an answer's list needs it, not on the
    /// headers (see [`UpstreamNeed::Lists`]); the path was found plain there.
    upstream_later: bool,
    dry_run_note: Option<String>,
    /// Set on request headers when the request must be refused whatever it
    /// says (stolen session id, audit trail unavailable under `closed`).
    standing: Option<Decision>,
    /// The request is an `initialize`: an `Mcp-Session-Id` on its answer
    /// other than the one it presented is the server issuing a session.
    opens_session: bool,
    /// The request's `:scheme` and `:authority`: a redirect may keep the
    /// client on them (see `screen_response_head`).
    origin: (Option<String>, Option<String>),
    /// What identified the caller, kept from the headers (Envoy refuses
    /// header reads from body callbacks): a policy swapped in while the body
    /// was read resolves the caller again from it.
    identity_inputs: IdentityInputs,
    /// The header edits made on the headers, which a policy adopted later
    /// cannot make any more (see `adopt_policy_in_force`).
    credential_removed: bool,
    length_removable: bool,
    /// The policy the stream started under, its caller and standing refusal,
    /// once a newer one was adopted: the request must pass both.
    started_under: Option<StartedUnder>,
    /// What the budgets that expose it have left after this request
    /// (`x-mcp-firewall-budget-remaining`).
    budget_remaining: Option<u64>,
    /// A call held for the approval service's answer.
    awaiting: Option<AwaitingApproval>,
    rewriter: ResponseRewriter,
    audit: ExchangeAudit,
}

impl RequestFilter {
    pub fn new(policy: Rc<CompiledPolicy>) -> Self {
        RequestFilter {
            phase: Phase::Headers,
            caller: None,
            head: RequestHead::default(),
            upstream_later: false,
            dry_run_note: None,
            standing: None,
            opens_session: false,
            origin: (None, None),
            identity_inputs: IdentityInputs::default(),
            credential_removed: false,
            length_removable: false,
            started_under: None,
            budget_remaining: None,
            awaiting: None,
            rewriter: ResponseRewriter::new(policy.clone()),
            audit: ExchangeAudit::new(policy.clone()),
            policy,
        }
    }

    fn dry_run(&self) -> bool {
        self.policy.mode == Mode::DryRun
    }

    /// The headers' flow while the filter waits for the body (or for the end
    /// of a stream that must carry none). Holding them keeps the router from
    /// opening an upstream request before the decision, but Envoy honours a
    /// headers `Pause` only with `allow_on_headers_stop_iteration`; a host
    /// without it (Istio's WasmPlugin cannot set it) would never call the body
    /// callbacks. There the headers go on and only the body is held
    /// (StopIterationAndBuffer): the server sees a request start, never an
    /// undecided body, and a refused one is reset.
    fn hold_headers(&self) -> Flow {
        match self.policy.hold_headers {
            true => Flow::Pause,
            false => Flow::Continue,
        }
    }

    fn reply(&mut self, host: &mut dyn Host, r: LocalReply) -> Flow {
        self.phase = Phase::Replied;
        if let Err(e) = host.send_reply(&r) {
            // Nothing was forwarded and nothing will be: the stream goes.
            host_write_failed(host, "the reply", &e);
            host.reset_stream();
        }
        Flow::Pause
    }

    /// A rewrite of the request the verdict requires could not be applied:
    /// the request is refused, never forwarded as it came.
    fn refuse_unwritable(&mut self, host: &mut dyn Host, what: &str, e: &HostError) -> Flow {
        host_write_failed(host, what, e);
        let refusal = Refusal::new(
            500,
            reply::INTERNAL_ERROR,
            RuleId::HostWrite,
            "a change the firewall's decision requires could not be applied; refused rather than forwarded unchanged",
        );
        let reply = refusal.reply();
        for mut p in self.audit.take_held() {
            p.decision = Decision::deny(RuleId::HostWrite, refusal.message.clone());
            self.audit
                .send_replied(host, self.caller.as_deref(), p, &reply);
        }
        self.reply(host, reply)
    }

    /// Say why at info, once per refused request (rate-limited per VM): the
    /// rule and the subject only. Reasons can quote argument values, so they
    /// stay in the reply and the audit, never in the log.
    fn log_refusal(&self, host: &mut dyn Host, rule: &RuleId, status: u32) {
        let subject = self
            .caller
            .as_deref()
            .and_then(|c| c.subject.as_deref())
            .unwrap_or("-");
        host.log_refusal(&format!(
            "mcp-firewall: refused rule={rule} subject={subject:?} http={status}"
        ));
    }

    /// Answer a refusal made before any policy: counted by its rule, audited
    /// when audit is on.
    fn refuse(&mut self, host: &mut dyn Host, r: &Refusal) -> Flow {
        self.log_refusal(host, &r.rule, r.status);
        let counter = match r.rule {
            RuleId::Identity => Counter::RefusedIdentity,
            RuleId::TooLarge => Counter::RefusedTooLarge,
            RuleId::MediaType => Counter::RefusedMediaType,
            RuleId::HttpMethod => Counter::RefusedHttpMethod,
            RuleId::HeaderMismatch => Counter::RefusedHeaderMismatch,
            RuleId::SessionBinding => Counter::RefusedSessionBinding,
            _ => Counter::RefusedProtocol,
        };
        host.count(counter, 1);
        let reply = r.reply();
        // A DELETE held for its termination event that turns out to carry a
        // body is refused instead: this refusal is its one event.
        drop(self.audit.take_held());
        if self.audit.enabled() {
            // The reason may quote the caller's text (`duplicate object key
            // "ghp_…"`): the trail holds it as DLP reads it. The caller's
            // own refusal keeps it (it is what they sent).
            let p = PendingAudit::refused_before_decision(Decision::deny(
                r.rule.clone(),
                self.policy.dlp.scanner.redacted(&r.message),
            ));
            self.audit
                .send_replied(host, self.caller.as_deref(), p, &reply);
        }
        self.reply(host, reply)
    }

    /// The exchange is over (Envoy's log phase): audit what was forwarded.
    pub fn on_done(&mut self, host: &mut dyn Host) {
        self.abandon_held_call(host, "the client went away");
        let seen = self.rewriter.bytes_seen();
        self.audit.on_done(host, self.caller.as_deref(), seen);
    }

    /// The stream ends while a call waits for the approval service (`cause`:
    /// why): nothing was forwarded; the trail says so. A held call's approval
    /// is used only by a second callout sent after the decision, so one
    /// approved after this stays usable by the client's retry; only a use
    /// already in flight may be spent.
    fn abandon_held_call(&mut self, host: &mut dyn Host, cause: &str) {
        let Some(w) = self.awaiting.take() else {
            return;
        };
        let (why, id) = match &w.stage {
            Stage::Asked => (
                format!("{cause} while the call waited for its approval; not forwarded, nothing used"),
                None,
            ),
            Stage::Using { approval_id, .. } => (
                format!("{cause} while approval {approval_id} was being used; not forwarded (the approval may be spent)"),
                Some(approval_id.as_str()),
            ),
        };
        let decision = Decision {
            verdict: Verdict::Approval,
            rule: w.ask.rule.clone(),
            reason: why,
        };
        for mut p in self.audit.take_held() {
            p.decision = decision.clone();
            p.approval = Some(approval_step(ApprovalStep::Abandoned, id, None, None));
            self.audit.send_step(host, self.caller.as_deref(), p);
        }
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        self.upstream_later = self.upstream_can_wait(host);
        let head = self.read_head(host, end_of_stream);
        self.origin = (
            host.request_header(":scheme"),
            host.request_header(":authority"),
        );
        self.identity_inputs = self.read_identity_inputs(host);
        let mut identity = self.resolve_identity(host);
        // A credential that identified nobody (in dry run the request goes on
        // as anonymous): still the caller's, never the server's.
        let mut unidentified_credential = false;
        if head.repeated_header.is_none() && self.dry_run() {
            if let Err(e) = &identity {
                self.note_dry_run(host, &format!("unauthenticated ({})", e.message()));
                identity = Ok(anonymous());
                unidentified_credential = host.request_header("authorization").is_some();
            }
        }
        // The binding is a shared-data write: made only for a request whose
        // caller is known and whose headers are not ambiguous.
        let standing = match (&identity, &head.repeated_header) {
            (Ok(caller), None) => self.standing_refusal(host, caller, head.session_id.as_deref()),
            _ => Ok(None),
        };
        let standing = match standing {
            Ok(d) => d,
            Err(r) => {
                self.caller = identity.ok().map(Rc::new);
                return self.refuse(host, &r);
            }
        };
        self.caller = identity.as_ref().ok().cloned().map(Rc::new);
        let verdict = judge_head(&self.policy, &head, &identity, standing.as_ref());
        let forwarded = matches!(
            verdict,
            HeadVerdict::ReadBody { .. } | HeadVerdict::Stream { .. }
        );
        // Only when asked for: removing a header is a hostcall per request.
        if forwarded && host.request_header("accept-encoding").is_some() {
            // The filter reads answers as the client will, and it does not
            // inflate: ask the server for none. A refused write is safe: a
            // compressed answer is then refused as one the filter cannot read.
            let _ = host.set_request_header("accept-encoding", None);
        }
        let strips = match &verdict {
            HeadVerdict::ReadBody {
                strip_credential, ..
            }
            | HeadVerdict::Stream {
                strip_credential, ..
            } => {
                *strip_credential
                    || (unidentified_credential && !self.policy.identity.forward_api_key)
            }
            _ => false,
        };
        if strips {
            // The caller's key is the firewall's, not the server's. In dry run
            // too: this is the credential boundary, not a decision.
            if let Err(e) = host.set_request_header("authorization", None) {
                return self.refuse_unwritable(host, "the caller's credential away", &e);
            }
            self.credential_removed = true;
        }
        self.length_removable = host.request_header("content-length").is_none();
        if let Err(e) = strip_descriptors(host) {
            return self.refuse_unwritable(
                host,
                "the client's rate limit descriptor headers away",
                &e,
            );
        }
        match verdict {
            HeadVerdict::Refuse(r) => self.refuse(host, &r),
            HeadVerdict::Deny(d) => self.deny_before_body(host, &head.method, d),
            HeadVerdict::Public { hold_until_end } => {
                // Nobody was identified; a credential sent anyway is still the
                // caller's, never the server's.
                if host.request_header("authorization").is_some() {
                    if let Err(e) = host.set_request_header("authorization", None) {
                        return self.refuse_unwritable(host, "the caller's credential away", &e);
                    }
                }
                self.rewriter.expect_metadata();
                self.head = head;
                self.phase = match hold_until_end {
                    true => Phase::AwaitingNoBody,
                    false => Phase::Passthrough,
                };
                match hold_until_end {
                    true => self.hold_headers(),
                    false => Flow::Continue,
                }
            }
            HeadVerdict::Stream { hold_until_end, .. } => {
                if head.method == "DELETE" && self.audit.enabled() {
                    // Ending a session is a change of state on the server like
                    // a tool call: the trail records who ended which exchange
                    // and what the server answered (when the exchange ends).
                    self.audit.hold(vec![PendingAudit::http(
                        &head.method,
                        Decision {
                            verdict: Verdict::Allow,
                            rule: RuleId::SessionBinding,
                            reason: "DELETE ends the session; its binding lets this caller do so"
                                .into(),
                        },
                    )]);
                }
                let caller = self.caller.clone().unwrap_or_else(|| Rc::new(anonymous()));
                self.rewriter.expect_replays(caller);
                self.head = head;
                if hold_until_end {
                    // Neither GET nor DELETE has a body, and one that came
                    // anyway would reach the server undecided. Headers that do
                    // not end the stream (an HTTP/2 client may send the end in
                    // an empty DATA frame) are held until it ends.
                    self.phase = Phase::AwaitingNoBody;
                    return self.hold_headers();
                }
                self.phase = Phase::Passthrough;
                Flow::Continue
            }
            HeadVerdict::ReadBody { may_rewrite, .. } => {
                if may_rewrite && !self.dry_run() {
                    // Redaction may change the body's length, and headers cannot
                    // be touched from body callbacks: drop content-length now
                    // (the upstream request is then sent chunked).
                    if let Err(e) = host.set_request_header("content-length", None) {
                        return self.refuse_unwritable(host, "the request's content-length", &e);
                    }
                    self.length_removable = true;
                }
                self.standing = standing;
                self.head = head;
                self.phase = Phase::Body;
                // Hold the headers: the router must not open an upstream request
                // before the body is decided (Envoy needs allow_on_headers_stop_iteration).
                self.hold_headers()
            }
        }
    }

    /// Everything the verdict reads from the request headers, read now:
    /// Envoy refuses header reads from body callbacks. The upstream too,
    /// unless it can wait for an answer's list (`upstream_later`).
    fn read_head(&self, host: &dyn Host, end_of_stream: bool) -> RequestHead {
        let repeated_header = match self.policy.identity.jwt_payload_header.as_deref() {
            None => host.repeated_request_header(&SINGLE_HEADERS),
            Some(jwt) => {
                let mut names = SINGLE_HEADERS.to_vec();
                names.push(jwt);
                host.repeated_request_header(&names)
            }
        };
        // An empty value names no session: a server reads it as absent
        // and issues one (the SDKs test the id for truthiness).
        let session_id = host
            .request_header("mcp-session-id")
            .filter(|s| !s.trim().is_empty());
        let conversation = match &self.policy.limits.conversation_header {
            Some(name) => host.request_header(name),
            None => session_id.clone(),
        };
        let read = match self.upstream_later {
            true => Ok(None),
            false => self.upstream(host),
        };
        let (upstream, route_path_problem) = match read {
            Ok(u) => (u, None),
            Err(problem) => (None, Some(problem)),
        };
        RequestHead {
            method: host.request_header(":method").unwrap_or_default(),
            path: self
                .policy
                .identity
                .resource_metadata
                .as_ref()
                .and_then(|_| host.request_header(":path")),
            content_type: host.request_header("content-type").unwrap_or_default(),
            content_encoding: host.request_header("content-encoding"),
            content_length: host.request_header("content-length"),
            mcp_method: host.request_header("mcp-method"),
            mcp_name: host.request_header("mcp-name"),
            repeated_header,
            session_id,
            conversation,
            last_event_id: host.request_header("last-event-id"),
            protocol_version: host.request_header("mcp-protocol-version"),
            mcp_params: host
                .request_headers_with_prefix("mcp-param-")
                .into_iter()
                .map(|(k, v)| (k["mcp-param-".len()..].to_owned(), v))
                .collect(),
            upgrade: host.request_header("upgrade"),
            ends_stream: end_of_stream,
            upstream,
            route_path_problem,
            // Read when the body is decided (on_request_body), the only
            // decision that reads the time: no clock hostcall for the headers.
            now_ms: 0,
        }
    }

    /// Whether the upstream can wait for an answer's list: only lists need
    /// it and the path is plain (whatever the route's name, the path check
    /// then passes). Otherwise it is read on the headers.
    fn upstream_can_wait(&self, host: &dyn Host) -> bool {
        UpstreamNeed::of(&self.policy) == UpstreamNeed::Lists
            && host
                .request_header(":path")
                .is_some_and(|p| crate::canon::route_path_problem(&p).is_none())
    }

    /// The upstream left for an answer's list, read now (any callback may
    /// read Envoy's properties; only header reads are refused outside the
    /// headers' callbacks, and the path was checked there).
    fn read_upstream_later(&mut self, host: &dyn Host) {
        if std::mem::take(&mut self.upstream_later) {
            self.head.upstream = routed_to(host)
                .map(|(cluster, route)| crate::catalogue::upstream_key(&cluster, &route));
        }
    }

    /// The upstream for a body's verdict, where the headers did not read it.
    fn upstream_for_body(&mut self, host: &dyn Host) {
        if self.upstream_later {
            // A policy adopted since the headers may need it for calls;
            // otherwise only an answer's list reads it.
            if UpstreamNeed::of(&self.policy) == UpstreamNeed::Calls {
                self.read_upstream_later(host);
            }
        } else if self.head.upstream.is_none() {
            // A policy adopted since the headers may pin tools.
            // Envoy refuses header reads from body callbacks: on a named
            // route the path cannot be checked here, so no upstream is
            // known and what the call is checked against is unavailable
            // (refused where the policy enforces).
            self.head.upstream = self.upstream(host).ok().flatten();
        }
    }

    /// The upstream the route sends this request to, when the policy pins
    /// tools, keeps catalogue findings, selects intents or checks schemas
    /// (what each remembers is kept per upstream; a property read costs a
    /// hostcall). Envoy resolves the route before the filter chain runs and
    /// records it and its cluster in the stream info, which the wasm host
    /// exposes as `xds.route_name` and `xds.cluster_name`: both come from
    /// Envoy's configuration, never from the caller, so callers cannot mint
    /// new memories. The cluster alone would let one MCP server's list teach
    /// the filter about another served on another path of the same cluster
    /// (a Kubernetes service hosting several, in Istio one cluster per
    /// service); a named route per server keeps them apart
    /// ([`crate::catalogue::upstream_key`]). But the route is matched on
    /// the path as sent, and a server may read it otherwise (`/%6coose/mcp`
    /// matched `/` and reached the server at `/loose/`; twenty-ninth
    /// review): on a named route a path not in plain form is the error.
    fn upstream(&self, host: &dyn Host) -> Result<Option<String>, &'static str> {
        if UpstreamNeed::of(&self.policy) == UpstreamNeed::Nothing {
            return Ok(None);
        }
        let Some((cluster, route)) = routed_to(host) else {
            return Ok(None);
        };
        if !route.is_empty() {
            let path = host.request_header(":path").unwrap_or_default();
            if let Some(problem) = crate::canon::route_path_problem(&path) {
                return Err(problem);
            }
        }
        Ok(Some(crate::catalogue::upstream_key(&cluster, &route)))
    }

    /// A refusal decided on the headers (kill switch, stolen session, audit
    /// back-pressure): answered 403 and audited.
    fn deny_before_body(&mut self, host: &mut dyn Host, method: &str, d: Decision) -> Flow {
        self.log_refusal(host, &d.rule, 403);
        if d.rule == RuleId::KillSwitch {
            host.count(Counter::RefusedKillSwitch, 1);
        }
        let body = reply::decision_error(None, &d);
        let reply = LocalReply::json(403, &body, Some(d.rule.as_str()));
        // A GET or DELETE on another caller's session is a hijack
        // attempt: the trail records it like any refusal, named by
        // its HTTP method (there is no JSON-RPC message to name it).
        if self.audit.enabled() {
            let p = PendingAudit::http(method, d);
            self.audit
                .send_replied(host, self.caller.as_deref(), p, &reply);
        }
        self.reply(host, reply)
    }

    /// The request headers identity is resolved from (the mTLS peer is a
    /// property, readable at any time).
    fn read_identity_inputs(&self, host: &dyn Host) -> IdentityInputs {
        IdentityInputs {
            authorization: host.request_header("authorization"),
            jwt_payload: self
                .policy
                .identity
                .jwt_payload_header
                .as_deref()
                .and_then(|h| host.request_header(h)),
            peer_uri_san: None,
        }
    }

    /// Decide with the policy Envoy configured since the stream began, if
    /// there is one: a request is decided under the policy in force when it
    /// is decided, so a kill switch, a `disabled` subject or a revoked key
    /// applies to a request whose body is still arriving, however long its
    /// sender holds it open. The caller is resolved again and the headers
    /// judged again; `Some` is the refusal already answered. Header edits can
    /// no longer be made (Envoy refuses them from body callbacks): a newer
    /// policy that needs one it was not given is refused, never forwarded
    /// unchanged.
    fn adopt_policy_in_force(&mut self, host: &mut dyn Host) -> Option<Flow> {
        let newer = match host.policy_in_force() {
            InForce::Own => return None,
            InForce::Newer(p) if Rc::ptr_eq(&p, &self.policy) => return None,
            InForce::Newer(p) => p,
            InForce::Elsewhere => {
                let r = policy_changed("(a new filter module)");
                return Some(self.refuse(host, &r));
            }
        };
        if newer.identity.jwt_payload_header != self.policy.identity.jwt_payload_header {
            // The payload was read under the old header name: not the caller's
            // identity under the new one.
            self.identity_inputs.jwt_payload = None;
        }
        // Which root is in force is inferred from what the host shows (see
        // `in_force`), and an inference can be wrong: the request must also
        // pass the policy it started under, so a wrong one can only refuse.
        self.started_under = Some(StartedUnder {
            policy: self.policy.clone(),
            caller: self.caller.clone(),
            standing: self.standing.clone(),
        });
        self.policy = newer.clone();
        self.rewriter.adopt(newer.clone());
        self.audit.adopt(newer);
        let mut identity = self.resolve_identity(host);
        if self.dry_run() {
            if let Err(e) = &identity {
                self.note_dry_run(host, &format!("unauthenticated ({})", e.message()));
                identity = Ok(anonymous());
            }
        }
        let standing = match (&identity, &self.head.repeated_header) {
            (Ok(caller), None) => {
                let sid = self.head.session_id.clone();
                self.standing_refusal(host, caller, sid.as_deref())
            }
            _ => Ok(None),
        };
        let standing = match standing {
            Ok(d) => d,
            Err(r) => {
                self.caller = identity.ok().map(Rc::new);
                return Some(self.refuse(host, &r));
            }
        };
        self.caller = identity.as_ref().ok().cloned().map(Rc::new);
        let head = std::mem::take(&mut self.head);
        let verdict = judge_head(&self.policy, &head, &identity, standing.as_ref());
        self.head = head;
        let needs_edit = match &verdict {
            HeadVerdict::Refuse(r) => return Some(self.refuse(host, r)),
            HeadVerdict::Deny(d) => {
                let method = self.head.method.clone();
                return Some(self.deny_before_body(host, &method, d.clone()));
            }
            HeadVerdict::ReadBody {
                may_rewrite,
                strip_credential,
            } => {
                (*strip_credential && !self.credential_removed)
                    || (*may_rewrite && !self.dry_run() && !self.length_removable)
            }
            HeadVerdict::Stream {
                strip_credential, ..
            } => *strip_credential && !self.credential_removed,
            HeadVerdict::Public { .. } => false,
        };
        if needs_edit {
            let r = policy_changed("and now needs a header change that can no longer be made");
            return Some(self.refuse(host, &r));
        }
        self.standing = standing;
        None
    }

    fn resolve_identity(&self, host: &dyn Host) -> Result<Caller, IdentityError> {
        let resolved = identity::resolve(&self.policy.identity, &self.identity_inputs);
        // The mTLS peer is only consulted when neither an API key nor a JWT
        // identified the caller (it ranks after them), saving a property
        // lookup on most requests.
        if matches!(&resolved, Ok(c) if c.via != Via::Anonymous) {
            return resolved;
        }
        let san = host
            .property(&["connection", "uri_san_peer_certificate"])
            .and_then(|b| String::from_utf8(b).ok());
        let Some(first) = san else {
            return resolved;
        };
        // The attribute holds the first URI SAN only; the others are in the
        // x-forwarded-client-cert element Envoy writes when configured to
        // (identity::uri_sans_from_xfcc). A disabled SAN anywhere refuses.
        if host.request_header_lines("x-forwarded-client-cert") > 1 {
            return Err(IdentityError::BadClientCert(
                "x-forwarded-client-cert sent on more than one line",
            ));
        }
        let san = match host.request_header("x-forwarded-client-cert") {
            None => first,
            Some(xfcc) => {
                let digest = host
                    .property(&["connection", "sha256_peer_certificate_digest"])
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let sans = identity::uri_sans_from_xfcc(&xfcc, &digest, &first)
                    .map_err(IdentityError::BadClientCert)?;
                identity::subject_san(&sans, &self.policy.disabled_subjects)
                    .map_or(first, str::to_owned)
            }
        };
        // Only an mTLS caller pays for a copy of the inputs.
        let inputs = IdentityInputs {
            peer_uri_san: Some(san),
            ..self.identity_inputs.clone()
        };
        identity::resolve(&self.policy.identity, &inputs)
    }

    /// The session binding and the audit trail's back-pressure, as a refusal
    /// that holds for the whole request (noted, not enforced, in dry run).
    /// `Err`: the request is refused whole before its body (an unknown
    /// session: 404, what a server answers for a session it does not know).
    fn standing_refusal(
        &mut self,
        host: &mut dyn Host,
        caller: &Caller,
        session_id: Option<&str>,
    ) -> Result<Option<Decision>, Refusal> {
        let session = self.check_session(host, caller, session_id);
        let audit_refuses = session == SessionCheck::Fine && host.audit_refuses();
        if audit_refuses {
            host.count(Counter::RefusedAuditUnavailable, 1);
        }
        let Some(d) = verdict::standing_refusal(session, audit_refuses) else {
            return Ok(None);
        };
        if self.dry_run() {
            self.note_dry_run(host, &format!("deny rule={}", d.rule));
            return Ok(None);
        }
        if session == SessionCheck::Unknown {
            return Err(Refusal::new(404, reply::DENIED, d.rule, d.reason));
        }
        if d.rule == RuleId::SessionBinding {
            host.count(Counter::RefusedSessionBinding, 1);
        }
        Ok(Some(d))
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
                if let Some(refused) = self.adopt_policy_in_force(host) {
                    return refused;
                }
                self.phase = Phase::Passthrough;
                return Flow::Continue;
            }
            Phase::AwaitingNoBody | Phase::Replied | Phase::AwaitingApproval => return Flow::Pause,
            _ => return Flow::Continue,
        }
        if body_size > self.policy.limits.max_request_bytes {
            // Refused while it streams in, before Envoy buffers more of it.
            return self.refuse(host, &Refusal::too_large(&self.policy));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        if let Some(refused) = self.adopt_policy_in_force(host) {
            return refused;
        }
        let Some(bytes) = host.request_body(body_size) else {
            let r = Refusal::new(400, -32700, RuleId::Protocol, "request body unavailable");
            return self.refuse(host, &r);
        };
        // A body is decided when it is whole, which may be long after its
        // headers (and under a policy adopted since): `time` conditions read
        // the time of this decision.
        self.head.now_ms = host.now_ms();
        self.upstream_for_body(host);
        let anonymous_caller;
        let caller = match self.caller.as_deref() {
            Some(c) => c,
            None => {
                anonymous_caller = anonymous();
                &anonymous_caller
            }
        };
        // The definitions this upstream listed last, in shared data: what a
        // call of a pinned tool is checked against.
        let seen = Remembered(&*host);
        let verdict = judge_body(
            &self.policy,
            caller,
            &self.head,
            self.standing.as_ref(),
            &seen,
            &bytes,
        );
        let verdict = match self.started_under.take() {
            Some(own) if !verdict.refuses() => {
                let own_caller = own.caller.unwrap_or_else(|| Rc::new(anonymous()));
                let first = judge_body(
                    &own.policy,
                    &own_caller,
                    &self.head,
                    own.standing.as_ref(),
                    &seen,
                    &bytes,
                );
                match first.refuses() {
                    true => first,
                    false => verdict,
                }
            }
            _ => verdict,
        };
        // A call sent for approval consumes its limits when it is released.
        let verdict = match verdict.approval() {
            Some(_) => verdict,
            None => self.consume_meters(host, verdict),
        };
        self.apply_body_verdict(host, verdict, body_size, bytes)
    }

    /// Consume the rate limits and budgets the verdict charges (every one or
    /// none); a shortfall turns the verdict into a -32012 refusal.
    fn consume_meters(&mut self, host: &mut dyn Host, mut v: BodyVerdict) -> BodyVerdict {
        if v.charges.is_empty() {
            return v;
        }
        // The instant the body was decided at: a budget's day is the day a
        // time window saw.
        let now = self.head.now_ms;
        let slots = self.policy.limits.metered_keys;
        // std seeds RandomState from WASI random_get: asked only by the first
        // metered request of the process (to mint the table's secret).
        let entropy = || {
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now)
        };
        match crate::meter::table::consume(host, slots, &v.charges, now, entropy) {
            Ok(consumed) => self.budget_remaining = consumed.budget_remaining,
            Err(refused) => {
                v.metered_out(&refused);
                if let Some(m) = v
                    .messages
                    .iter()
                    .find(|m| m.decision.verdict != Verdict::Allow)
                {
                    host.count_limited(m.decision.rule.as_str());
                }
            }
        }
        v
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
            Phase::Replied | Phase::AwaitingApproval => Flow::Pause,
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
        bytes: Vec<u8>,
    ) -> Flow {
        let outcome = std::mem::replace(&mut v.outcome, BodyOutcome::Forward { rewritten: None });
        // The rules' refusal; DLP's (which may stand beside an approval
        // decision) is applied below, as is a call sent for approval.
        let mut policy_refused = v.policy_refused();
        let (reply, rewritten, ask) = match outcome {
            BodyOutcome::Refuse(r) => return self.refuse(host, &r),
            BodyOutcome::Deny(r) => (Some(r), None, None),
            BodyOutcome::DlpBlock(r) => {
                policy_refused = policy_refused && self.policy.approval.is_none();
                (Some(r), None, None)
            }
            BodyOutcome::Forward { rewritten } => (None, rewritten, None),
            BodyOutcome::Approve { ask, rewritten } => {
                policy_refused = false;
                (None, rewritten, Some(ask))
            }
        };
        for m in &v.messages {
            let counter = match m.decision.verdict {
                Verdict::Allow => Counter::DecisionAllow,
                Verdict::Deny => Counter::DecisionDeny,
                Verdict::Approval => Counter::DecisionApproval,
            };
            host.count(counter, 1);
            if m.pin.is_some() {
                let counter = match m.decision.rule {
                    RuleId::Pin => Counter::PinRefused,
                    _ => Counter::PinWarned,
                };
                host.count(counter, 1);
            }
            if m.decision.rule == RuleId::Catalogue {
                host.count(Counter::CatalogueRefused, 1);
            }
            if m.schema.is_some() {
                let counter = match m.decision.rule {
                    RuleId::InputSchema => Counter::SchemasRefused,
                    _ => Counter::SchemasWarned,
                };
                host.count(counter, 1);
            }
        }
        let action = self.policy.dlp.requests;
        if self.audit.enabled() {
            self.audit.hold(
                v.messages
                    .iter()
                    .map(|m| PendingAudit::of(m, action, &self.policy.dlp.scanner))
                    .collect(),
            );
        }
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
                // The reason may quote the caller's text (`no rule allows "…"`).
                let d = ScreenedMessage::of(m, &self.policy.dlp.scanner).decision;
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
            if let Some(m) = v
                .messages
                .iter()
                .find(|m| m.decision.verdict != Verdict::Allow)
            {
                self.log_refusal(host, &m.decision.rule, r.status);
            }
            // A refused exchange is over now: audit it at once.
            for p in self.audit.take_held() {
                self.audit.send_replied(host, self.caller.as_deref(), p, &r);
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
                self.log_refusal(host, &RuleId::Dlp, r.status);
                for (mut p, m) in self.audit.take_held().into_iter().zip(&v.messages) {
                    p.decision = m.enforced();
                    self.audit.send_replied(host, self.caller.as_deref(), p, &r);
                }
                return self.reply(host, r);
            }
        }
        if let Some(body) = rewritten {
            if let Err(e) = host.set_request_body(body_size, &body) {
                return self.refuse_unwritable(host, "the redacted request body", &e);
            }
        }
        if self.policy.rate_limit_headers {
            if let Err(e) = self.export_descriptors(host, &v.messages) {
                return self.refuse_unwritable(host, "the rate limit descriptors", &e);
            }
        }
        if let Some(ask) = ask {
            return self.ask_approval(host, ask, v, bytes);
        }
        self.go_on(v)
    }

    /// The body goes upstream: plan what its answers need.
    fn go_on(&mut self, v: BodyVerdict) -> Flow {
        // Only the answer to an initialize issues a session: every other
        // answer may echo an id the caller merely presented.
        self.opens_session = matches!(v.messages.as_slice(), [m] if m.method == "initialize");
        // Dry run keeps the whole plan: what a list teaches (the intents of
        // its tools) is learnt as under enforcement, so the calls that follow
        // are decided alike; the response side changes no byte (lists stay
        // whole, results are only scanned).
        let caller = self.caller.clone().unwrap_or_else(|| Rc::new(anonymous()));
        self.rewriter.expect_answers(caller, v.plan, v.request_ids);
        self.phase = Phase::Forwarded;
        Flow::Continue
    }

    /// Ask the approval service about the one call of this body (POLICY.md
    /// "Approval"): one callout, the request held until it answers. A
    /// callout that cannot be sent is a refusal, as the service being down.
    fn ask_approval(
        &mut self,
        host: &mut dyn Host,
        ask: Box<Ask>,
        v: BodyVerdict,
        body: Vec<u8>,
    ) -> Flow {
        let Some(cfg) = self.policy.approval.clone() else {
            // The verdict asks only under a policy with an approval section.
            return self.approval_unavailable(host, &ask, "no approval service is configured");
        };
        host.count(Counter::ApprovalRequested, 1);
        let request = ask.request_body(&cfg);
        let timeout = approval::callout_timeout_ms(&cfg);
        let call_id = match send_approval_callout(host, &cfg, &cfg.path, &request, timeout) {
            Ok(id) => id,
            Err(why) => return self.approval_unavailable(host, &ask, &why),
        };
        let how = match cfg.mode {
            ApprovalMode::Hold => {
                format!("held up to {} ms for a decision", cfg.timeout_ms)
            }
            ApprovalMode::Async => "answered at once unless already approved".into(),
        };
        let step = Decision {
            verdict: Verdict::Approval,
            rule: ask.rule.clone(),
            reason: format!(
                "approval requested from the approval service (args_sha256 {}); {how}",
                ask.binding.args_sha256
            ),
        };
        if let Some(mut p) = self.audit.held_first(step) {
            p.approval = Some(approval_step(ApprovalStep::Requested, None, None, None));
            self.audit.send_step(host, self.caller.as_deref(), p);
        }
        self.awaiting = Some(AwaitingApproval {
            call_id,
            ask,
            verdict: v,
            body,
            stage: Stage::Asked,
        });
        self.phase = Phase::AwaitingApproval;
        Flow::Pause
    }

    /// The approval service answered callout `call_id` (`status`: its
    /// `:status`, `None` when Envoy delivered no answer). Forward the held
    /// call only if the answer says it used an approval; a held call's
    /// approved request is used first (a second callout); anything else
    /// refuses it.
    pub fn on_approval_answer(
        &mut self,
        host: &mut dyn Host,
        call_id: u32,
        status: Option<u16>,
        body: Option<&[u8]>,
    ) {
        match &self.awaiting {
            Some(w) if w.call_id == call_id && self.phase == Phase::AwaitingApproval => {}
            _ => {
                host.log(
                    LogLevel::Warn,
                    "mcp-firewall: an approval answer for no waiting call was ignored",
                );
                return;
            }
        }
        let Some(w) = self.awaiting.take() else {
            return;
        };
        let answer = match &w.stage {
            Stage::Asked => approval::read_answer(status, body),
            Stage::Using { approval_id, .. } => {
                approval::read_use_answer(status, body, approval_id)
            }
        };
        let hold = matches!(
            self.policy.approval.as_ref().map(|c| c.mode),
            Some(ApprovalMode::Hold)
        );
        match answer {
            Answer::Used {
                approval_id,
                decided_by,
                reason,
            } => {
                // The use's answer does not repeat who approved: the
                // approved answer before it said so.
                let (decided_by, reason) = match &w.stage {
                    Stage::Using {
                        decided_by: d,
                        reason: r,
                        ..
                    } => (
                        decided_by.or_else(|| d.clone()),
                        reason.or_else(|| r.clone()),
                    ),
                    Stage::Asked => (decided_by, reason),
                };
                self.release(host, w, &approval_id, decided_by, reason)
            }
            Answer::Approved {
                approval_id,
                decided_by,
                reason,
            } if hold && matches!(w.stage, Stage::Asked) => {
                self.use_approval(host, w, approval_id, decided_by, reason)
            }
            Answer::Approved {
                approval_id,
                decided_by,
                reason,
            } => {
                // Async: an approval the service did not use for this
                // attempt (another attempt raced it): not this call's.
                self.refused_by_service(host, &w, approval_id, "approved", decided_by, reason)
            }
            Answer::Refused {
                approval_id,
                state,
                decided_by,
                reason,
            } => self.refused_by_service(host, &w, approval_id, &state, decided_by, reason),
            Answer::Unavailable(why) => {
                self.approval_unavailable(host, &w.ask, &why);
            }
        }
    }

    /// The service named an approval this call may not use (pending,
    /// denied, expired, used, another call's): -32011 with its id and state.
    fn refused_by_service(
        &mut self,
        host: &mut dyn Host,
        w: &AwaitingApproval,
        approval_id: String,
        state: &str,
        decided_by: Option<String>,
        reason: Option<String>,
    ) {
        let (message, step, why) = match state {
            "pending" => (
                "approval required",
                ApprovalStep::Pending,
                format!("approval {approval_id} is pending: send the same call again once it is approved"),
            ),
            "denied" => (
                "denied by approver",
                ApprovalStep::Denied,
                format!(
                    "approval {approval_id} was denied by {}{}",
                    decided_by.as_deref().unwrap_or("an approver"),
                    reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
            ),
            "expired" => (
                "approval expired",
                ApprovalStep::Expired,
                format!("approval {approval_id} expired before it was used; send the call again for a new one"),
            ),
            other => (
                "approval required",
                ApprovalStep::NotUsable,
                format!("approval {approval_id} is {other} and cannot be used by this call; send it again for a new one"),
            ),
        };
        host.count(Counter::ApprovalRefused, 1);
        let audit = approval_step(
            step,
            Some(&approval_id),
            decided_by.as_deref(),
            reason.as_deref(),
        );
        self.approval_reply(
            host,
            &w.ask,
            message,
            &why,
            Some((&approval_id, state)),
            audit,
        );
    }

    /// Whether the policy in force is the one the held call was asked
    /// under (its SHA-256 is in the binding).
    fn same_policy_in_force(&self, host: &dyn Host) -> bool {
        match host.policy_in_force() {
            InForce::Own => true,
            InForce::Newer(p) => p.sha256 == self.policy.sha256,
            InForce::Elsewhere => false,
        }
    }

    /// A held call's request was approved: record who approved it, then use
    /// it (a second callout) if the call can still go on under the policy
    /// in force; it is never used for a call that will not be forwarded.
    fn use_approval(
        &mut self,
        host: &mut dyn Host,
        w: AwaitingApproval,
        approval_id: String,
        decided_by: Option<String>,
        reason: Option<String>,
    ) {
        let step = Decision {
            verdict: Verdict::Approval,
            rule: w.ask.rule.clone(),
            reason: format!(
                "approved by {}{} (approval {approval_id}); the filter uses it for this call",
                decided_by.as_deref().unwrap_or("an approver"),
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        };
        if let Some(mut p) = self.audit.held_first(step) {
            p.approval = Some(approval_step(
                ApprovalStep::Approved,
                Some(&approval_id),
                decided_by.as_deref(),
                reason.as_deref(),
            ));
            self.audit.send_step(host, self.caller.as_deref(), p);
        }
        if !self.same_policy_in_force(host) {
            return self.policy_changed_while_held(host, w, &approval_id);
        }
        // The same policy, but what a call is checked against besides it
        // may have changed while it waited: a list shown meanwhile put its
        // tool on a pin hold (ninth review H1). Judged again before the
        // approval is used; a refusal now answers the call and leaves the
        // approval unused.
        let v = self.judge_held_again(host, &w);
        let step = approval_step(
            ApprovalStep::NotUsable,
            Some(&approval_id),
            decided_by.as_deref(),
            reason.as_deref(),
        );
        let why = format!("approval {approval_id} was not used: the call is refused now");
        if self.refused_held(host, v, &step, RuleId::Pin, &why) {
            host.count(Counter::ApprovalRefused, 1);
            return;
        }
        let Some(cfg) = self.policy.approval.clone() else {
            self.approval_unavailable(host, &w.ask, "no approval service is configured");
            return;
        };
        let path = approval::use_path(&cfg, &approval_id);
        let body = w.ask.binding.use_body();
        let timeout = approval::use_timeout_ms(&cfg);
        match send_approval_callout(host, &cfg, &path, &body, timeout) {
            Ok(call_id) => {
                self.awaiting = Some(AwaitingApproval {
                    call_id,
                    stage: Stage::Using {
                        approval_id,
                        decided_by,
                        reason,
                    },
                    ..w
                });
            }
            Err(why) => {
                self.approval_unavailable(host, &w.ask, &why);
            }
        }
    }

    /// The policy changed while the call waited for its approval. The
    /// approval was given for the call under the policy it was asked under
    /// (its SHA-256 is in the binding) and is not used. The call is decided
    /// again under the policy now in force: refused with that policy's own
    /// answer if it refuses it (a permission revoked while the call waited
    /// is not outwaited), else -32011: sent again, it is decided, and
    /// approved, under the new policy.
    fn policy_changed_while_held(
        &mut self,
        host: &mut dyn Host,
        w: AwaitingApproval,
        approval_id: &str,
    ) {
        host.count(Counter::ApprovalRefused, 1);
        let why = format!(
            "the policy changed while the call waited; approval {approval_id} was for the policy it was asked under and was not used: send the call again (a new approval is needed)"
        );
        let step = approval_step(ApprovalStep::PolicyChanged, Some(approval_id), None, None);
        if self.adopt_policy_in_force(host).is_some() {
            // Refused on its headers under the new policy (a revoked key,
            // the kill switch): answered and audited already.
            return;
        }
        self.started_under = None;
        let v = self.judge_held_again(host, &w);
        if self.refused_held(host, v, &step, RuleId::PolicyChanged, &why) {
            return;
        }
        self.approval_reply(host, &w.ask, "approval required", &why, None, step);
    }

    /// The held call's body judged again, now: under the policy in force and
    /// against what the upstream listed last (pins).
    fn judge_held_again(&mut self, host: &mut dyn Host, w: &AwaitingApproval) -> BodyVerdict {
        self.head.now_ms = host.now_ms();
        let caller = self.caller.clone().unwrap_or_else(|| Rc::new(anonymous()));
        self.upstream_for_body(host);
        let seen = Remembered(&*host);
        judge_body(
            &self.policy,
            &caller,
            &self.head,
            self.standing.as_ref(),
            &seen,
            &w.body,
        )
    }

    /// If `v` refuses the held call (outside dry run), answer it with that
    /// refusal, on the trail with the approval `step` it overrode, and say
    /// so; the approval is not used.
    fn refused_held(
        &mut self,
        host: &mut dyn Host,
        v: BodyVerdict,
        step: &AuditApproval,
        fallback: RuleId,
        why: &str,
    ) -> bool {
        let reply = match (v.refuses() && !self.dry_run(), v.outcome) {
            (true, BodyOutcome::Refuse(r)) => {
                self.refuse(host, &r);
                return true;
            }
            (true, BodyOutcome::Deny(r) | BodyOutcome::DlpBlock(r)) => r,
            _ => return false,
        };
        host.count(Counter::DecisionDeny, 1);
        let decision = v
            .messages
            .first()
            .map(|m| m.enforced())
            .unwrap_or_else(|| Decision::deny(fallback, why.to_owned()));
        self.log_refusal(host, &decision.rule, reply.status);
        for mut p in self.audit.take_held() {
            p.decision = decision.clone();
            p.approval = Some(step.clone());
            self.audit
                .send_replied(host, self.caller.as_deref(), p, &reply);
        }
        self.reply(host, reply);
        true
    }

    /// The service says this call used an approval: the call goes on under
    /// the policy it was asked under, if that is still the policy in force
    /// (its SHA-256 is in the binding: an approval under another policy is
    /// another binding), with its rate limits consumed now.
    fn release(
        &mut self,
        host: &mut dyn Host,
        w: AwaitingApproval,
        approval_id: &str,
        decided_by: Option<String>,
        reason: Option<String>,
    ) {
        if !self.same_policy_in_force(host) {
            // Only when the policy changed between the use and its answer
            // (a held call checks before it uses): the approval is spent.
            return self.policy_changed_while_held(host, w, approval_id);
        }
        // Judged again, as before the use: a list shown while the use was
        // on its way may have put the tool on a pin or catalogue hold (tenth
        // review M1). The approval is spent; the call is still refused.
        let again = self.judge_held_again(host, &w);
        let spent = approval_step(
            ApprovalStep::NotUsable,
            Some(approval_id),
            decided_by.as_deref(),
            reason.as_deref(),
        );
        let why = format!("approval {approval_id} was used, but the call is refused now");
        if self.refused_held(host, again, &spent, RuleId::Pin, &why) {
            host.count(Counter::ApprovalRefused, 1);
            return;
        }
        host.count(Counter::ApprovalGranted, 1);
        let by = decided_by.as_deref().unwrap_or("an approver");
        let used = approval_step(
            ApprovalStep::Used,
            Some(approval_id),
            decided_by.as_deref(),
            reason.as_deref(),
        );
        let reason = format!(
            "approved by {by}{} (approval {approval_id}, used by this call)",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        let mut v = self.consume_meters(host, w.verdict);
        if matches!(v.outcome, BodyOutcome::Deny(_)) {
            // A rate limit ran out while the call waited: -32012 like any
            // call over its limit (the approval is spent).
            let Some(m) = v.messages.first().cloned() else {
                return;
            };
            let r =
                match std::mem::replace(&mut v.outcome, BodyOutcome::Forward { rewritten: None }) {
                    BodyOutcome::Deny(r) => r,
                    _ => LocalReply::empty(403, None),
                };
            host.count(Counter::DecisionDeny, 1);
            self.log_refusal(host, &m.decision.rule, r.status);
            // As screened for the trail as any refused message's.
            let refused = ScreenedMessage::of(&m, &self.policy.dlp.scanner).decision;
            for mut p in self.audit.take_held() {
                p.decision = refused.clone();
                p.decision.reason = format!("{}; {reason}", p.decision.reason);
                p.approval = Some(used.clone());
                self.audit.send_replied(host, self.caller.as_deref(), p, &r);
            }
            self.reply(host, r);
            return;
        }
        self.audit.set_held_decision(
            Decision {
                verdict: Verdict::Allow,
                rule: w.ask.rule.clone(),
                reason,
            },
            Some(used),
        );
        let _ = self.go_on(v);
        if let Err(e) = host.resume_request() {
            // Nothing went upstream: the client must not wait forever.
            host_write_failed(host, "the approved request onwards", &e);
            host.reset_stream();
        }
    }

    /// The approval service could not be asked or gave no usable answer:
    /// refused (fail closed), counted `approval.unavailable`.
    fn approval_unavailable(&mut self, host: &mut dyn Host, ask: &Ask, why: &str) -> Flow {
        host.count(Counter::ApprovalUnavailable, 1);
        host.log(
            LogLevel::Warn,
            &format!("mcp-firewall: approval refused rule={}: {why}", ask.rule),
        );
        let why = format!("approval unavailable: {why}; refused");
        let step = approval_step(ApprovalStep::Unavailable, None, None, None);
        self.approval_reply(host, ask, "approval unavailable", &why, None, step)
    }

    /// Answer the held call -32011 (POLICY.md: `rule`, `approval_id`), audit
    /// the step with verdict `approval`.
    fn approval_reply(
        &mut self,
        host: &mut dyn Host,
        ask: &Ask,
        message: &str,
        why: &str,
        approval: Option<(&str, &str)>,
        step: AuditApproval,
    ) -> Flow {
        let body = reply::approval_error(&ask.id, &ask.rule, message, why, approval);
        let r = LocalReply::json(200, &body, Some(ask.rule.as_str()));
        self.log_refusal(host, &ask.rule, r.status);
        let decision = Decision {
            verdict: Verdict::Approval,
            rule: ask.rule.clone(),
            reason: why.to_owned(),
        };
        for mut p in self.audit.take_held() {
            p.decision = decision.clone();
            p.approval = Some(step.clone());
            self.audit.send_replied(host, self.caller.as_deref(), p, &r);
        }
        self.reply(host, r)
    }

    /// Hand Envoy's rate limit filter the descriptor entries of a body that
    /// goes on (`$.envoy.rate_limit_headers`): written into the held request
    /// headers, which the filters after this one read once it continues. A
    /// batch is never exported (the policy refuses batches with the export);
    /// a body whose headers cannot be written is refused, never forwarded
    /// outside the limits.
    fn export_descriptors(
        &self,
        host: &mut dyn Host,
        messages: &[verdict::MessageVerdict],
    ) -> Result<(), HostError> {
        let [m] = messages else { return Ok(()) };
        let method = Some(m.method.as_str()).filter(|&mth| mth != verdict::ANSWER);
        let caller = self.caller.clone().unwrap_or_else(|| Rc::new(anonymous()));
        let d = Descriptors::of(&caller, method, m.target.as_deref());
        for (name, value) in d.headers() {
            if value.is_some() {
                host.set_held_request_header(name, value)?;
            }
        }
        Ok(())
    }

    /// Whether `Mcp-Session-Id` is another caller's. A request never binds
    /// an id (only the server's answer to `initialize` does, on the response
    /// side): an id nobody holds passes unbound and the server answers it, so
    /// invented ids neither fill the table nor claim a session before its owner.
    fn check_session(
        &self,
        host: &mut dyn Host,
        caller: &Caller,
        session_id: Option<&str>,
    ) -> SessionCheck {
        let (true, Some(sid)) = (self.policy.sessions.enforce, session_id) else {
            return SessionCheck::Fine;
        };
        let now = host.now_ms();
        let sessions = &self.policy.sessions;
        let memo = &self.policy.session_memo;
        match session::check_request(host, sessions, memo, sid, caller, now) {
            Binding::Bound => SessionCheck::Fine,
            // An unbound id is anyone's: it passes only where the policy lets
            // unbound sessions pass.
            Binding::Unbound => match sessions.when_full {
                WhenFull::Refuse => SessionCheck::Unknown,
                WhenFull::PassUnbound => SessionCheck::Fine,
            },
            Binding::Stolen => SessionCheck::Stolen,
            Binding::TableFull | Binding::IdentityFull => SessionCheck::TableFull,
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

    /// `end_of_stream`: the headers end the response (no body follows).
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        if matches!(
            self.phase,
            Phase::Body | Phase::AwaitingNoBody | Phase::AwaitingApproval
        ) && self.refuse_undecided_answer(host)
        {
            return Flow::Pause;
        }
        let status = host.response_header(":status").and_then(|s| s.parse().ok());
        self.audit.set_response_status(status);
        // Before the session is bound: an id removed here is never bound.
        if matches!(self.phase, Phase::Forwarded | Phase::Passthrough)
            && !self.screen_response_head(host, status, end_of_stream)
        {
            return Flow::Pause;
        }
        // Bind a session id at issuance (the server's answer to initialize),
        // so nobody else can be "first" to present it.
        // An answer carrying the id the request presented is an echo (that
        // id was checked on the request side); any other id it carries is
        // the server issuing one, whatever the request said.
        let issued = host
            .response_header("mcp-session-id")
            .filter(|sid| self.head.session_id.as_deref() != Some(sid.as_str()));
        if let (true, Some(caller), Some(sid)) = (
            self.policy.sessions.enforce && self.phase == Phase::Forwarded && self.opens_session,
            self.caller.as_deref(),
            issued,
        ) {
            let now = host.now_ms();
            let sessions = &self.policy.sessions;
            let why = match session::check_and_bind(host, sessions, &sid, caller, now, Unknown::Bind) {
                Binding::Bound => None,
                Binding::IdentityFull => Some("this caller holds sessions.per_identity live sessions already; end one (DELETE) or retry later"),
                Binding::TableFull => Some("too many active sessions to bind a new one (sessions.capacity); retry later"),
                _ => Some("the session could not be bound to its caller; retry later"),
            };
            match (why, sessions.when_full) {
                (None, _) => {}
                (Some(why), WhenFull::Refuse) if !self.dry_run() => {
                    // An unbound id is continued by whoever presents it: the
                    // caller never learns it. The server's session idles out.
                    host.count(Counter::SessionRefusedAtIssuance, 1);
                    host.log(
                        LogLevel::Warn,
                        &format!("mcp-firewall: session not issued: {why}"),
                    );
                    if let Err(e) = host.set_response_header("mcp-session-id", None) {
                        host_write_failed(host, "the unbound session id away", &e);
                        host.reset_stream();
                        self.rewriter.abandon_all();
                    } else {
                        self.rewriter.refuse_answers(why);
                    }
                }
                (Some(why), _) => {
                    // The id then passes unbound for anyone who presents it: an
                    // operator must see it (sessions.capacity, per_identity).
                    host.count(Counter::SessionUnboundAtIssuance, 1);
                    host.log(LogLevel::Warn, &format!("mcp-firewall: server issued a session id that could not be bound to its caller: {why}"));
                }
            }
        }
        if let Some(left) = self.budget_remaining {
            // Informational only, like the dry-run note.
            let _ = host.set_response_header(BUDGET_HEADER, Some(&left.to_string()));
        }
        if let Some(note) = &self.dry_run_note {
            // Header values must not carry CR/LF; notes are built from escaped text.
            let clean: String = note.chars().filter(|c| !c.is_control()).collect();
            // Informational only: a refused write changes nothing the client reads.
            let _ = host.set_response_header(DRY_RUN_HEADER, Some(&clean));
        }
        // Our own local replies pass back through this filter too: only a
        // response from upstream is the server's to read.
        let mut flow = Flow::Continue;
        if matches!(self.phase, Phase::Forwarded | Phase::Passthrough) {
            if self.rewriter.inspects_lists() {
                self.read_upstream_later(host);
                self.rewriter.set_others(self.other_tools(host));
            }
            flow = self.rewriter.on_headers(host, end_of_stream);
        }
        self.flush_response_counts(host);
        flow
    }

    /// An answer came while the request is still undecided: its body still
    /// streaming in or held, a GET or DELETE not yet ended, a call waiting
    /// for its approval. Only without `allow_on_headers_stop_iteration`
    /// (Istio), where the request's head goes upstream before its body is
    /// decided, can the server answer then, and nothing of such an answer
    /// was planned: its head, body and trailers would pass unread (a
    /// helper's attack in a real Envoy: a secret answered before the body
    /// was sent, an event store's replay of an unfiltered list to a GET
    /// kept open, a 101 to a WebSocket upgrade). The stream is reset: with
    /// the request undecided there is no id to answer. Envoy's own local
    /// replies (503 for an upstream it cannot reach) are not the server's
    /// text and pass. `true`: refused.
    fn refuse_undecided_answer(&mut self, host: &mut dyn Host) -> bool {
        // Envoy names how the response came about; only the router's copy of
        // an upstream's answer says `via_upstream`. Unreadable: the server's.
        let from_server = host
            .property(&["response", "code_details"])
            .is_none_or(|d| d == b"via_upstream");
        if !from_server {
            return false;
        }
        host.count(Counter::ResponseUnfilterable, 1);
        if self.dry_run() {
            self.note_dry_run(
                host,
                "the server answered before the request was decided; passed unread",
            );
            return false;
        }
        host.log(
            LogLevel::Warn,
            "mcp-firewall: the server answered before the request was decided \
             (envoy.allow_on_headers_stop_iteration is false); the stream is reset",
        );
        host.reset_stream();
        self.rewriter.abandon_all();
        // Nothing was decided, but the trail must still show that this
        // server answered a request it had not been let have: a server that
        // does so is either broken or trying the no-hold window. A held
        // call's own events say it instead (and are its only events).
        if self.awaiting.is_none() && self.audit.enabled() {
            let p = PendingAudit::refused_before_decision(Decision::deny(
                RuleId::ResponseUnfilterable,
                "the server answered before the request was decided; the stream was reset",
            ));
            self.audit.send_step(host, self.caller.as_deref(), p);
        }
        self.abandon_held_call(host, "the server answered before the call was released");
        self.phase = Phase::Replied;
        true
    }

    /// The response's head is the server's text too, and clients show it:
    /// both SDKs put a redirect's target and an unexpected content type in
    /// the error their caller gets, the TypeScript SDK hands over any
    /// session id an answer carries (helpers' attacks in a real Envoy). So:
    /// a redirect that would take the client off this origin (past the
    /// filter) is refused, and so is any 3xx but a 307/308 on it; lines are
    /// screened ([`response_head::screen`]); a session id on an answer that
    /// opened no session and differs from the one the request presented is
    /// removed (only `initialize` issues one, and the filter binds it then).
    /// `false`: a header could not be written, the stream was reset.
    fn screen_response_head(
        &mut self,
        host: &mut dyn Host,
        status: Option<u16>,
        end_of_stream: bool,
    ) -> bool {
        let dry_run = self.dry_run();
        let mut rewrites: Vec<(String, Vec<String>)> = Vec::new();
        let not_an_answer = match status {
            // A final 1xx can only be a 101 (Envoy keeps other informational
            // heads from the filters), and no request the filter lets go asks
            // to switch protocols: clients take it as a broken stream (an
            // HTTP/2 client got a 101 and then data, a protocol error).
            Some(s) if s < 200 => Some((
                "the server switched protocols unasked",
                "the server switched protocols unasked, not an MCP answer",
            )),
            Some(s) if (300..400).contains(&s) => {
                let location = host.response_header("location").unwrap_or_default();
                let (scheme, authority) = &self.origin;
                let stays = matches!(s, 307 | 308)
                    && response_head::same_origin(
                        &location,
                        scheme.as_deref(),
                        authority.as_deref(),
                    );
                (!stays).then_some((
                    "the server answered with a redirect off this origin",
                    "the server answered with a redirect off this origin, not an MCP answer",
                ))
            }
            _ => None,
        };
        if let Some((what, refusal)) = not_an_answer {
            host.log(
                LogLevel::Warn,
                &format!(
                    "mcp-firewall: {what}; {}",
                    if dry_run {
                        "passed (dry run)"
                    } else {
                        "refused"
                    }
                ),
            );
            if !dry_run {
                if let Err(e) = host.set_response_header(":status", Some("502")) {
                    host_write_failed(host, "a status that is no answer away", &e);
                    host.reset_stream();
                    self.rewriter.abandon_all();
                    return false;
                }
                // A redirect's target, or the protocol a 101 switched to.
                for name in ["location", "upgrade", "connection"] {
                    rewrites.push((name.into(), Vec::new()));
                }
                match end_of_stream {
                    // No body to put the refusal in: counted here.
                    true => host.count(Counter::ResponseUnfilterable, 1),
                    false => self.rewriter.refuse_unreadable(refusal),
                }
            }
        }
        let (screened, own) = self.read_lines(host, ResponsePart::Headers, dry_run);
        rewrites.extend(screened);
        if !self.opens_session {
            let moved = host
                .response_header("mcp-session-id")
                .filter(|sid| self.head.session_id.as_deref() != Some(sid.as_str()));
            // After the screen's own rewrite of the name, which it overrides.
            if moved.is_some() {
                host.log(
                    LogLevel::Warn,
                    match dry_run {
                        true => "mcp-firewall: a session id on an answer that opened no session; kept (dry run)",
                        false => "mcp-firewall: a session id on an answer that opened no session; removed",
                    },
                );
                rewrites.push(("mcp-session-id".into(), Vec::new()));
            }
        }
        if dry_run {
            return self.write_lines(host, ResponsePart::Headers, &own);
        }
        rewrites.extend(own);
        self.write_lines(host, ResponsePart::Headers, &rewrites)
    }

    /// The server's header or trailer lines, read once: what DLP's screen
    /// writes back (nothing in dry run, or with DLP off on answers), and
    /// the removal of every line in the filter's own namespace. Only the
    /// filter writes its own headers (the refusal's rule, the dry-run note,
    /// a budget's remaining units): a server's copies would tell the client
    /// a verdict or a budget nobody decided, so they go in dry run too.
    fn read_lines(
        &self,
        host: &mut dyn Host,
        part: ResponsePart,
        dry_run: bool,
    ) -> (Vec<LineRewrite>, Vec<LineRewrite>) {
        let mut own = Vec::new();
        let screened = match self.policy.dlp.responses {
            DlpAction::Off => {
                host.for_each_response_line(part, &mut |name, _| note_own_line(&mut own, name));
                Vec::new()
            }
            _ => self.screen_lines(host, part, dry_run, &mut own),
        };
        (screened, own.into_iter().map(|n| (n, Vec::new())).collect())
    }

    /// Screen the response's header or trailer lines with DLP; counted and
    /// logged by kind. What to write back (nothing in dry run).
    fn screen_lines(
        &self,
        host: &mut dyn Host,
        part: ResponsePart,
        dry_run: bool,
        own: &mut Vec<String>,
    ) -> Vec<(String, Vec<String>)> {
        // Copied into one buffer, not a `String` per name and value: this
        // runs on every response, and each allocation counts under V8.
        let mut buf = String::new();
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        host.for_each_response_line(part, &mut |name, value| {
            note_own_line(own, name);
            let start = buf.len();
            buf.push_str(name);
            let mid = buf.len();
            buf.push_str(value);
            spans.push((start, mid, buf.len()));
        });
        let lines: Vec<(&str, &str)> = spans
            .iter()
            .map(|&(a, b, c)| {
                (
                    buf.get(a..b).unwrap_or_default(),
                    buf.get(b..c).unwrap_or_default(),
                )
            })
            .collect();
        let screened = response_head::screen(&self.policy.dlp.scanner, &lines);
        for kind in &screened.kinds {
            host.count_finding(kind);
        }
        if !screened.rewrites.is_empty() {
            let what = match part {
                ResponsePart::Headers => "headers",
                ResponsePart::Trailers => "trailers",
            };
            host.log(
                LogLevel::Warn,
                &format!(
                    "mcp-firewall: the server's response {what}: sensitive data ({}) in some lines, {} line(s) a client reads otherwise; {}",
                    screened.kinds.join(", "),
                    screened.unreadable,
                    if dry_run { "kept (dry run)" } else { "removed" }
                ),
            );
        }
        match dry_run {
            true => Vec::new(),
            false => screened.rewrites,
        }
    }

    /// Write `rewrites` back; `false` (the stream reset) when the host refused.
    fn write_lines(
        &mut self,
        host: &mut dyn Host,
        part: ResponsePart,
        rewrites: &[(String, Vec<String>)],
    ) -> bool {
        for (name, kept) in rewrites {
            let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
            if let Err(e) = host.set_response_lines(part, name, &kept) {
                host_write_failed(host, "a response header away", &e);
                host.reset_stream();
                self.rewriter.abandon_all();
                return false;
            }
        }
        true
    }

    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let flow = self.rewriter.on_body(host, body_size, end_of_stream);
        self.flush_response_counts(host);
        flow
    }

    /// Response trailers end the stream without a final body callback (see
    /// the rewriter: a held body is finished here, never flushed unchanged).
    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        // Trailers are header lines after the body (HTTP/2, chunked HTTP/1):
        // the server's text as its head is.
        if matches!(self.phase, Phase::Forwarded | Phase::Passthrough) {
            let (mut rewrites, own) = self.read_lines(host, ResponsePart::Trailers, self.dry_run());
            rewrites.extend(own);
            if !self.write_lines(host, ResponsePart::Trailers, &rewrites) {
                return Flow::Pause;
            }
        }
        let flow = self.rewriter.on_trailers(host);
        self.flush_response_counts(host);
        flow
    }

    /// Hand what the response side counted to the host (list entries removed,
    /// responses that could not be inspected, DLP findings) and the findings
    /// to the exchange's audit.
    fn flush_response_counts(&mut self, host: &mut dyn Host) {
        if self.rewriter.counted_nothing() {
            // Every step below is a no-op then; skipping them (and the
            // counts' move and drop) spares most answers the code they would
            // touch (docs/performance.md, *Counted, not timed*).
            return;
        }
        let counts = self.rewriter.take_counts();
        host.count(Counter::ListEntriesRemoved, counts.removed_entries);
        host.count(Counter::ResponseUnfilterable, counts.unfilterable);
        for (_, findings, _, _) in &counts.result_findings {
            for f in findings {
                host.count_finding(&f.kind);
            }
        }
        self.audit.attach_result_findings(counts.result_findings);
        if !(counts.pin_checks.is_empty()
            && counts.catalogue_lists.is_empty()
            && counts.intents.is_empty()
            && counts.schemas_declared.is_empty())
        {
            // What is remembered per upstream; a list's answer reads it here.
            self.read_upstream_later(host);
        }
        self.remember_definitions(host, &counts.pin_checks);
        self.audit
            .attach_pin_checks(&counts.pin_checks, &self.policy.dlp.scanner);
        self.count_catalogue(host, &counts.catalogue_lists, &counts.catalogue_results);
        self.remember_intents(host, &counts.intents);
        self.remember_schemas(host, &counts.schemas_declared);
        for (_, _, applied) in &counts.schema_results {
            let counter = match applied {
                true => Counter::SchemasResultsBlocked,
                false => Counter::SchemasResultsWarned,
            };
            host.count(counter, 1);
        }
        self.audit.attach_schema_results(&counts.schema_results);
        host.count(Counter::ResultCapRefused, counts.result_caps.len() as u64);
        self.audit.attach_result_caps(&counts.result_caps);
        self.audit.attach_catalogue(
            &counts.catalogue_lists,
            &counts.catalogue_results,
            &self.policy.dlp.scanner,
        );
    }

    /// Remember, for this upstream, the classes the annotations of the
    /// listed tools gave: what `intents` rules judge the calls that follow
    /// by. What cannot be remembered is counted and logged; those calls then
    /// meet what was remembered before or nothing (unseen: deny and approve
    /// rules on intents match, allow rules on intents do not).
    fn remember_intents(
        &mut self,
        host: &mut dyn Host,
        seen: &[(String, crate::catalogue::intents::IntentSet)],
    ) {
        if seen.is_empty() {
            return;
        }
        let result = match self.head.upstream.as_deref() {
            Some(upstream) => crate::catalogue::intents::remember(&*host, upstream, seen),
            None => Err(crate::store::StoreError::Host("no upstream cluster".into())),
        };
        if let Err(e) = result {
            host.count(Counter::IntentsRememberFailed, 1);
            host.log(
                LogLevel::Warn,
                &format!("mcp-firewall: the tools' annotations a tools/list showed could not be remembered for intents rules ({e:?})"),
            );
        }
    }

    /// Remember, for this upstream, the schemas the listed tools declared:
    /// what their calls and results are checked against. A tool whose schema
    /// holds a keyword the validator cannot check (and the policy does not
    /// ignore) is counted and logged once per list page here; its calls are
    /// refused under `enforce` with a reason naming the keyword. What cannot
    /// be remembered is counted and logged; the calls then meet what was
    /// remembered before or nothing (unseen).
    fn remember_schemas(
        &mut self,
        host: &mut dyn Host,
        declared: &[crate::catalogue::schemas::Declared],
    ) {
        if declared.is_empty() {
            return;
        }
        use crate::catalogue::schemas::Listed;
        let sp = &self.policy.schemas;
        let unverifiable: Vec<&str> = declared
            .iter()
            .filter(|d| match &d.listed {
                Listed::TooLarge => true,
                Listed::Compiled(places) => sp.first_unchecked(places).is_some(),
                // Compiled at its first call, where what it cannot check
                // refuses or warns as for any tool.
                Listed::Deferred => false,
            })
            .map(|d| d.tool.as_str())
            .collect();
        if !unverifiable.is_empty() {
            host.count(Counter::SchemasUnverifiable, unverifiable.len() as u64);
            // The server's names: read by the detectors before they are logged.
            let scanner = &self.policy.dlp.scanner;
            let shown: Vec<String> = unverifiable
                .iter()
                .take(8)
                .map(|t| scanner.redacted(t))
                .collect();
            host.log(
                LogLevel::Warn,
                &format!(
                    "mcp-firewall: {} listed tool(s) declare schemas that cannot be fully checked (larger than the limit, or a keyword the validator does not implement; see schemas.ignore_keywords): {}",
                    unverifiable.len(),
                    shown.join(", ")
                ),
            );
        }
        let result = match self.head.upstream.as_deref() {
            Some(upstream) => crate::catalogue::schemas::remember(&*host, upstream, declared),
            None => Err(crate::store::StoreError::Host("no upstream cluster".into())),
        };
        if let Err(e) = result {
            host.count(Counter::SchemasRememberFailed, 1);
            host.log(
                LogLevel::Warn,
                &format!("mcp-firewall: the schemas a tools/list declared could not be remembered ({e:?})"),
            );
        }
    }

    /// The other servers' tool names `shadowing` compares a definition with:
    /// what the other upstream clusters of this Envoy listed (shared data)
    /// and `catalogue.other_tools`. Read once per list exchange, and only
    /// when `shadowing` is not `off`.
    fn other_tools(&self, host: &dyn Host) -> OtherTools {
        let cat = &self.policy.catalogue;
        if cat.description_action(Check::Shadowing) == DescriptionAction::Off {
            return OtherTools::default();
        }
        let listed = listed::other_names(host, self.head.upstream.as_deref());
        OtherTools::new(
            listed
                .iter()
                .map(String::as_str)
                .chain(cat.other_tools.iter().map(String::as_str)),
        )
    }

    /// Count what the catalogue checks found, and remember for this
    /// upstream the names its lists showed and the tools they removed:
    /// what the calls that follow are judged by, and the other servers'
    /// names for the next upstream's lists. A record that cannot be written
    /// is counted and logged; calls then meet what was remembered before.
    fn count_catalogue(
        &mut self,
        host: &mut dyn Host,
        lists: &[(String, ListInspection)],
        results: &[(String, ResultInspection)],
    ) {
        for (_, r) in results {
            let counter = match r.action {
                ResultAction::Block => Counter::CatalogueResultsBlocked,
                ResultAction::Wrap => Counter::CatalogueResultsWrapped,
                _ => Counter::CatalogueResultsFlagged,
            };
            host.count(counter, 1);
        }
        for (_, l) in lists {
            let removed = l
                .tools
                .iter()
                .filter(|t| t.action == DescriptionAction::Remove)
                .count();
            host.count(Counter::CatalogueRemoved, removed as u64);
            host.count(Counter::CatalogueFlagged, (l.tools.len() - removed) as u64);
            let cat = &self.policy.catalogue;
            // Calls are refused by tool name; a prompt or resource with a
            // finding is only taken out of its list (docs/catalogue.md).
            if !cat.remembers() || l.catalogue != Catalogue::Tools {
                continue;
            }
            let Some(upstream) = self.head.upstream.as_deref() else {
                host.count(Counter::CatalogueRememberFailed, 1);
                continue;
            };
            // Remembered in dry run too: the calls' decisions then show
            // what enforcement would refuse.
            let removals: Vec<(String, Vec<Check>)> = l
                .tools
                .iter()
                .filter(|t| t.action == DescriptionAction::Remove)
                .flat_map(|t| {
                    let checks: Vec<Check> = t
                        .findings
                        .iter()
                        .map(|f| f.check)
                        .filter(|c| cat.description_action(*c) == DescriptionAction::Remove)
                        .collect();
                    t.names.iter().map(move |n| (n.clone(), checks.clone()))
                })
                .collect();
            let now = host.now_ms();
            if let Err(e) =
                listed::remember(&*host, upstream, &l.names, &removals, now, cat.hold_ms)
            {
                host.count(Counter::CatalogueRememberFailed, 1);
                host.log(
                    LogLevel::Warn,
                    &format!("mcp-firewall: what a tools/list showed could not be remembered for the catalogue checks ({e:?})"),
                );
            }
        }
    }

    /// Count what pins found in list answers and remember, for this
    /// upstream, the definitions of the pinned tools they held: what the
    /// calls that follow are checked against. A definition that cannot be
    /// remembered is counted and logged; the calls then meet what was
    /// remembered before or nothing (`unseen`), never a definition unchecked.
    fn remember_definitions(&mut self, host: &mut dyn Host, checks: &[(String, ListCheck)]) {
        for (_, check) in checks {
            host.count(Counter::PinRemoved, check.removed as u64);
            let warned = check.mismatches.len().saturating_sub(check.removed);
            host.count(Counter::PinWarned, warned as u64);
            let (Some(upstream), Some(policy)) =
                (self.head.upstream.as_deref(), self.policy.pins.as_ref())
            else {
                if !check.seen.is_empty() {
                    host.count(Counter::PinRememberFailed, 1);
                }
                continue;
            };
            // The time a changed definition was shown: it is held from then.
            let now = match check.seen.is_empty() {
                true => 0,
                false => host.now_ms(),
            };
            for (tool, seen) in &check.seen {
                if let Err(e) = pins::remember(&*host, policy, upstream, tool, seen, now) {
                    host.count(Counter::PinRememberFailed, 1);
                    host.log(
                        LogLevel::Warn,
                        &format!("mcp-firewall: the definition of a pinned tool could not be remembered ({e:?})"),
                    );
                }
            }
        }
    }
}

/// When the filter must know the request's upstream: what the policy keeps
/// per upstream, and whether a call's verdict reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamNeed {
    /// Nothing is kept per upstream.
    Nothing,
    /// Only what lists showed, for `shadowing` (the catalogue's default):
    /// read when an answer holds a list. The two property reads are
    /// hostcalls of ~15,000 Envoy instructions together (docs/performance.md,
    /// *Counted in Envoy*), and a call's verdict under such a policy never
    /// reads the upstream.
    Lists,
    /// Pins, removed tools, intents or schemas: a call's verdict reads what
    /// its upstream listed.
    Calls,
}

impl UpstreamNeed {
    fn of(policy: &CompiledPolicy) -> UpstreamNeed {
        if policy.pins.is_some()
            || policy.catalogue.guards_calls()
            || policy.selects_intents()
            || policy.schemas.active()
        {
            UpstreamNeed::Calls
        } else if policy.catalogue.remembers() {
            UpstreamNeed::Lists
        } else {
            UpstreamNeed::Nothing
        }
    }
}

/// The cluster Envoy routes the request to, and its route's name (empty
/// when unnamed): none without a cluster.
fn routed_to(host: &dyn Host) -> Option<(String, String)> {
    let cluster = host
        .property(&["xds", "cluster_name"])
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|c| !c.is_empty())?;
    // A route without a name, or a host that cannot say, leaves the
    // cluster as the key: what the filter did before routes were read.
    let route = host
        .property(&["xds", "route_name"])
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    Some((cluster, route))
}

/// The refusal of a request that cannot be decided under the policy now in
/// force (see `adopt_policy_in_force`): 503, sent again it is decided anew.
fn policy_changed(why: &str) -> Refusal {
    Refusal::new(
        503,
        reply::INTERNAL_ERROR,
        RuleId::PolicyChanged,
        format!("the policy changed while this request was read {why}; send it again"),
    )
}

/// Remove every rate limit descriptor header the client sent (on every
/// request, whatever the policy: a caller never chooses its own descriptor,
/// also not while the export is being switched on). Only when there is one:
/// each removal is a hostcall.
fn strip_descriptors(host: &mut dyn Host) -> Result<(), HostError> {
    let sent = host.request_headers_with_prefix(descriptors::PREFIX);
    for name in descriptors::HEADERS {
        if sent.iter().any(|(k, _)| k == name) {
            host.set_request_header(name, None)?;
        }
    }
    Ok(())
}

/// Send one callout to the approval service with the filter's token; its
/// id, or why it was not sent (then the call is refused as unavailable).
fn send_approval_callout(
    host: &mut dyn Host,
    cfg: &ApprovalConfig,
    path: &str,
    body: &[u8],
    timeout_ms: u64,
) -> Result<u32, String> {
    let Some(token) = cfg.token.resolve() else {
        return Err(
            "the filter's token for the approval service is not set (approval.token_env)".into(),
        );
    };
    let authorization = format!("Bearer {token}");
    let callout = Callout {
        cluster: &cfg.cluster,
        headers: vec![
            (":method", "POST"),
            (":path", path),
            (":authority", &cfg.authority),
            ("content-type", "application/json"),
            ("authorization", &authorization),
        ],
        body,
        timeout: std::time::Duration::from_millis(timeout_ms),
    };
    host.dispatch_callout(&callout)
        .map_err(|e| format!("the callout to the approval service was not sent ({e})"))
}

/// A write the verdict requires was refused by the host: counted, logged.
fn host_write_failed(host: &mut dyn Host, what: &str, e: &HostError) {
    host.count(Counter::RefusedHostWrite, 1);
    host.log(
        LogLevel::Error,
        &format!("mcp-firewall: the host refused to write {what} ({e}); failing closed"),
    );
}

#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod result_cap_tests;
#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;
