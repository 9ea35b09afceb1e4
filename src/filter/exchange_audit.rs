//! The audit of one exchange: an event per decided message, sent at once when
//! the filter answered itself, or when the exchange ends (Envoy's log phase)
//! with the response's status, size and what DLP found or redacted in it.

use crate::audit::{
    AuditApproval, AuditCatalogue, AuditDecision, AuditFinding, AuditIdentity, AuditPin,
    AuditResponse, EventFacts, Verdict as AuditVerdict, MAX_CATALOGUE_RECORDS, MAX_PIN_RECORDS,
};
use crate::catalogue::pins::{ListCheck, PinMismatch};
use crate::catalogue::{DescriptionAction, ResultAction};
use crate::decide::{Decision, Verdict};
use crate::dlp::{Action as DlpAction, Finding};
use crate::host::Host;
use crate::identity::Caller;
use crate::jsonrpc::id_key;
use crate::policy::{CompiledPolicy, Mode};
use crate::reply::LocalReply;
use crate::response::{ListInspection, ResultInspection, ResultKind};
use crate::rule_id::RuleId;
use crate::verdict::{anonymous, MessageVerdict};
use serde_json::Value;
use std::rc::Rc;

/// What an audit event needs of one decided message, kept until the exchange ends.
#[derive(Clone)]
pub(crate) struct PendingAudit {
    method: String,
    target: Option<String>,
    /// As sent: the answer's records are matched to the call by it.
    id: Option<Value>,
    /// What the trail says instead of `id` when DLP found something in it.
    id_written: Option<String>,
    arguments: Option<Value>,
    pub decision: Decision,
    findings: Vec<AuditFinding>,
    /// The message was redacted before forwarding (verdict `redacted`).
    redacted: bool,
    redacted_arguments: Option<Value>,
    /// Matches replaced in the response.
    redactions: u64,
    /// The human approval step this event records (approval calls only).
    pub approval: Option<AuditApproval>,
    /// Tools that differ from their pin: the call's, or a list answer's.
    pins: Vec<AuditPin>,
    /// What the catalogue checks found in the answer.
    catalogue: Vec<AuditCatalogue>,
}

/// The audit record of a tool that does not match its pin.
pub(crate) fn audit_pin(m: &PinMismatch, action: &str) -> AuditPin {
    // A tool name in a list answer is the server's text: clipped like the
    // caller's strings (a name longer than MCP allows is no name a pin holds).
    let (tool, _) = crate::audit::clip(m.tool.clone());
    AuditPin {
        action: action.to_owned(),
        actual: m.actual_str().map(str::to_owned),
        expected: m.expected_str().map(str::to_owned),
        tool,
    }
}

/// What a call's schema finding did: refused it, or let it go (`warn`,
/// `unseen_calls: allow`, dry run).
fn action_of_call(m: &MessageVerdict) -> &'static str {
    match m.decision.rule {
        RuleId::InputSchema => "refused",
        _ => "warned",
    }
}

/// The audit record of a schema finding, among the catalogue records:
/// `check` is `input_schema` or `output_schema`, `pointer` where the value
/// failed (`""` when nothing could be checked), never the value.
fn audit_schema(f: &crate::catalogue::schemas::SchemaFinding, action: &str) -> AuditCatalogue {
    let check = match f.side {
        crate::catalogue::schemas::Side::Input => "input_schema",
        crate::catalogue::schemas::Side::Output => "output_schema",
    };
    AuditCatalogue {
        action: action.to_owned(),
        check: check.to_owned(),
        pointer: crate::audit::clip(f.pointer.clone().unwrap_or_default()).0,
        tool: Some(crate::audit::clip(f.tool.clone()).0),
    }
}

/// What the trail and the log say of a decided message's caller-given
/// names and of its reason.
pub(crate) struct ScreenedMessage {
    pub method: String,
    pub target: Option<String>,
    /// What is written instead of the id, when DLP found something in it.
    pub id_written: Option<String>,
    pub decision: Decision,
}

impl ScreenedMessage {
    /// The method, the target and the id are the caller's text, written to
    /// the trail as they are: where DLP found something in one, it is
    /// written as what was found instead, there and in the reason. A message
    /// the rules (or the protocol) refused was never scanned, and its reason
    /// may quote it (`no rule allows "tools/ghp_…"`): all four are read here
    /// instead (a refusal is rare; an allowed message's channels were
    /// scanned before it was allowed).
    pub fn of(m: &MessageVerdict, scanner: &crate::dlp::Scanner) -> Self {
        let refused = m.decision.verdict != Verdict::Allow;
        let found_in = |root: &str, paths: &[&str], raw: &str| {
            m.findings
                .iter()
                .zip(&m.finding_roots)
                .find(|(f, r)| **r == root && paths.contains(&f.path.as_str()))
                .map(|(f, _)| format!("[REDACTED:{}]", f.kind))
                .or_else(|| {
                    let read = refused.then(|| scanner.redacted(raw))?;
                    (read != raw).then_some(read)
                })
        };
        let mut decision = m.decision.clone();
        let mut screened = |raw: &str, redacted: Option<String>| match redacted {
            Some(r) => {
                if !raw.is_empty() {
                    // The reason quotes a long name cut short (`decide::clip`),
                    // maybe inside the secret, where no detector finds it.
                    let (cut, cut_read) = (crate::decide::clip(raw), crate::decide::clip(&r));
                    decision.reason = decision.reason.replace(&cut, &cut_read).replace(raw, &r);
                }
                r
            }
            None => raw.to_owned(),
        };
        let method = screened(&m.method, found_in("", &["/method"], &m.method));
        let target = m.target.as_deref().map(|t| {
            let found = found_in("/params", &["/name", "/uri"], t);
            screened(t, found)
        });
        let id_text = m.id.as_ref().and_then(Value::as_str);
        let id_written = found_in("", &["/id"], id_text.unwrap_or_default());
        if let (Some(text), Some(r)) = (id_text.filter(|t| !t.is_empty()), &id_written) {
            decision.reason = decision.reason.replace(text, r);
        }
        if refused {
            decision.reason = scanner.redacted(&decision.reason);
        }
        ScreenedMessage {
            method,
            target,
            id_written,
            decision,
        }
    }
}

impl PendingAudit {
    /// The audit record of one decided message; `action` is `dlp.requests`.
    pub fn of(m: &MessageVerdict, action: DlpAction, scanner: &crate::dlp::Scanner) -> Self {
        let ScreenedMessage {
            method,
            target,
            id_written,
            decision,
        } = ScreenedMessage::of(m, scanner);
        PendingAudit {
            method,
            target,
            id: m.id.clone(),
            id_written,
            arguments: m.arguments.clone(),
            decision,
            findings: m
                .findings
                .iter()
                .map(|f| AuditFinding {
                    kind: f.kind.clone(),
                    path: f.path.clone(),
                    action: action.as_str().into(),
                })
                .collect(),
            redacted: m.redacted,
            redacted_arguments: m.redacted_arguments.clone(),
            redactions: 0,
            pins: m
                .pin
                .iter()
                .map(|p| {
                    let action = match m.decision.rule {
                        RuleId::Pin => "refused",
                        _ => "warned",
                    };
                    audit_pin(p, action)
                })
                .collect(),
            approval: None,
            catalogue: m
                .schema
                .iter()
                .map(|f| audit_schema(f, action_of_call(m)))
                .collect(),
        }
    }

    /// A GET or DELETE: an HTTP exchange that carries no JSON-RPC message,
    /// named `(http <METHOD>)` in `request.method` (parenthesised like
    /// `(refused before decision)`, so it reads as no JSON-RPC method).
    pub fn http(method: &str, decision: Decision) -> Self {
        PendingAudit {
            method: format!("(http {method})"),
            ..Self::refused_before_decision(decision)
        }
    }

    /// A request refused before any message was decided.
    pub fn refused_before_decision(decision: Decision) -> Self {
        PendingAudit {
            method: String::from("(refused before decision)"),
            target: None,
            id: None,
            id_written: None,
            arguments: None,
            decision,
            findings: Vec::new(),
            redacted: false,
            redacted_arguments: None,
            redactions: 0,
            pins: Vec::new(),
            approval: None,
            catalogue: Vec::new(),
        }
    }
}

pub(crate) struct ExchangeAudit {
    policy: Rc<CompiledPolicy>,
    /// Events of forwarded messages, completed when the exchange ends.
    pending: Vec<PendingAudit>,
    response_status: Option<u16>,
}

impl ExchangeAudit {
    pub fn new(policy: Rc<CompiledPolicy>) -> Self {
        ExchangeAudit {
            policy,
            pending: Vec::new(),
            response_status: None,
        }
    }

    /// The policy Envoy configured since the exchange began decides it (see
    /// the request gate); its events carry that policy's hash.
    pub fn adopt(&mut self, policy: Rc<CompiledPolicy>) {
        self.policy = policy;
    }

    pub fn enabled(&self) -> bool {
        self.policy.audit.is_some()
    }

    /// Keep the messages' events until the exchange ends (audit on only).
    pub fn hold(&mut self, pending: Vec<PendingAudit>) {
        if self.enabled() {
            self.pending = pending;
        }
    }

    /// The held events, taken (to be completed and sent now).
    pub fn take_held(&mut self) -> Vec<PendingAudit> {
        std::mem::take(&mut self.pending)
    }

    pub fn set_response_status(&mut self, status: Option<u16>) {
        self.response_status = status;
    }

    /// A copy of the first held event with `decision`: a step of the
    /// exchange recorded before it ends (an approval requested).
    pub fn held_first(&self, decision: Decision) -> Option<PendingAudit> {
        self.pending.first().map(|p| PendingAudit {
            decision,
            ..p.clone()
        })
    }

    /// The decision the held events end with (a call released by an
    /// approval), and the approval step they record.
    pub fn set_held_decision(&mut self, decision: Decision, approval: Option<AuditApproval>) {
        for p in &mut self.pending {
            p.decision = decision.clone();
            p.approval = approval.clone();
        }
    }

    /// Send one event now, with no response (a step of an exchange that
    /// goes on, or of one whose client went away).
    pub fn send_step(&self, host: &mut dyn Host, caller: Option<&Caller>, p: PendingAudit) {
        let facts = self.facts(host, caller, p, None);
        host.audit(facts);
    }

    /// Send one event now, answered by the filter's own reply.
    pub fn send_replied(
        &self,
        host: &mut dyn Host,
        caller: Option<&Caller>,
        p: PendingAudit,
        reply: &LocalReply,
    ) {
        let facts = self.facts(host, caller, p, Some(response_of(reply)));
        host.audit(facts);
    }

    /// Attach DLP findings in results to the events of their requests.
    pub fn attach_result_findings(
        &mut self,
        found: Vec<(String, Vec<Finding>, DlpAction, &'static str)>,
    ) {
        for (id, findings, action, member) in found {
            let pending = self
                .pending
                .iter_mut()
                .find(|p| p.id.as_ref().map(id_key).as_deref() == Some(id.as_str()));
            if let Some(p) = pending {
                if action == DlpAction::Redact {
                    p.redactions += findings.len() as u64;
                }
                p.findings
                    .extend(findings.into_iter().map(|f| AuditFinding {
                        kind: f.kind,
                        path: format!("/{member}{}", f.path),
                        action: action.as_str().into(),
                    }));
            }
        }
    }

    /// Attach what pins found in list answers to the events of their requests.
    pub fn attach_pin_checks(
        &mut self,
        checks: &[(String, ListCheck)],
        scanner: &crate::dlp::Scanner,
    ) {
        for (id, check) in checks {
            let pending = self
                .pending
                .iter_mut()
                .find(|p| p.id.as_ref().map(id_key).as_deref() == Some(id.as_str()));
            let Some(p) = pending else { continue };
            // Under enforce every mismatch is removed; under warn or dry run none.
            let action = match check.removed > 0 {
                true => "removed",
                false => "warned",
            };
            let room = MAX_PIN_RECORDS.saturating_sub(p.pins.len());
            p.pins
                .extend(check.mismatches.iter().take(room).map(|m| AuditPin {
                    // The server's name for it (`{"name": "ghp_…"}`).
                    tool: crate::audit::clip(scanner.redacted(&m.tool)).0,
                    ..audit_pin(m, action)
                }));
        }
    }

    /// Attach what the catalogue checks found in list answers and results
    /// to the events of their requests: one record per finding, at most
    /// [`MAX_CATALOGUE_RECORDS`] per event.
    pub fn attach_catalogue(
        &mut self,
        lists: &[(String, ListInspection)],
        results: &[(String, ResultInspection)],
        scanner: &crate::dlp::Scanner,
    ) {
        // A pointer names the server's members and a tool name is the
        // server's text (`{"ghp_…": {"description": "<poison>"}}`): screened
        // as DLP reads them before they are written to the trail.
        let pointer = |p: &str| crate::audit::clip(scanner.redacted_pointer(p)).0;
        let records = lists
            .iter()
            .flat_map(|(id, l)| {
                l.tools.iter().flat_map(move |t| {
                    let action = match (t.action, t.removed) {
                        (DescriptionAction::Remove, _) => "removed",
                        _ => "flagged",
                    };
                    // A tool name is the server's text: clipped like the caller's.
                    let tool = t
                        .names
                        .first()
                        .map(|n| crate::audit::clip(scanner.redacted(n)).0);
                    t.findings.iter().map(move |f| {
                        (
                            id,
                            AuditCatalogue {
                                action: action.to_owned(),
                                check: f.check.as_str().to_owned(),
                                pointer: pointer(&f.pointer),
                                tool: tool.clone(),
                            },
                        )
                    })
                })
            })
            .chain(results.iter().flat_map(|(id, r)| {
                let action = match (r.action, r.kind) {
                    // The answer stays; its instructions are dropped.
                    (ResultAction::Block, ResultKind::Initialize) => "removed",
                    (ResultAction::Block, _) => "blocked",
                    (ResultAction::Wrap, _) => "wrapped",
                    _ => "flagged",
                };
                r.findings.iter().map(move |f| {
                    (
                        id,
                        AuditCatalogue {
                            action: action.to_owned(),
                            check: f.check.as_str().to_owned(),
                            pointer: pointer(&f.pointer),
                            tool: None,
                        },
                    )
                })
            }));
        for (id, record) in records {
            self.push_catalogue(id, record);
        }
    }

    /// One catalogue record on the event of the call answered under `id`
    /// (at most [`MAX_CATALOGUE_RECORDS`] per event).
    fn push_catalogue(&mut self, id: &str, record: AuditCatalogue) {
        let pending = self
            .pending
            .iter_mut()
            .find(|p| p.id.as_ref().map(id_key).as_deref() == Some(id));
        if let Some(p) = pending {
            if p.catalogue.len() < MAX_CATALOGUE_RECORDS {
                p.catalogue.push(record);
            }
        }
    }

    /// Attach results whose `structuredContent` failed its `outputSchema`
    /// to the events of their calls.
    pub fn attach_schema_results(
        &mut self,
        results: &[(String, crate::catalogue::schemas::SchemaFinding, bool)],
    ) {
        for (id, f, applied) in results {
            let action = match applied {
                true => "blocked",
                false => "warned",
            };
            self.push_catalogue(id, audit_schema(f, action));
        }
    }

    /// Answers over their size cap: a record among the call's catalogue
    /// records (`check: "result_cap"`, `action: "blocked"`, the tool; no
    /// pointer: the whole answer was refused). In dry run the action is
    /// what enforcement did not do, as for the catalogue checks: the
    /// event's `decision.dry_run` says nothing changed.
    pub fn attach_result_caps(&mut self, caps: &[(String, crate::response::CapExceeded)]) {
        for (id, over) in caps {
            let record = AuditCatalogue {
                action: "blocked".to_owned(),
                check: "result_cap".to_owned(),
                pointer: String::new(),
                tool: over
                    .answer
                    .tool
                    .as_ref()
                    .map(|t| crate::audit::clip(t.clone()).0),
            };
            self.push_catalogue(id, record);
        }
    }

    /// The exchange is over (Envoy's log phase): audit what was forwarded.
    pub fn on_done(&mut self, host: &mut dyn Host, caller: Option<&Caller>, response_bytes: usize) {
        let status = self.response_status.unwrap_or(0);
        for p in std::mem::take(&mut self.pending) {
            let response = AuditResponse {
                status,
                is_error: !(200..300).contains(&status),
                bytes: response_bytes as u64,
                redactions: p.redactions,
            };
            let facts = self.facts(host, caller, p, Some(response));
            host.audit(facts);
        }
    }

    fn facts(
        &self,
        host: &dyn Host,
        caller: Option<&Caller>,
        p: PendingAudit,
        response: Option<AuditResponse>,
    ) -> EventFacts {
        let caller = caller.cloned().unwrap_or_else(anonymous);
        EventFacts {
            ts_ms: host.now_ms(),
            identity: AuditIdentity {
                subject: caller.subject,
                tenant: caller.tenant,
                roles: caller.roles,
                subject_sha256: None,
                tenant_sha256: None,
                via: caller.via,
            },
            approval: p.approval,
            method: p.method,
            target: p.target,
            id: match p.id_written {
                Some(written) => Some(Value::String(written)),
                None => p.id,
            },
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
                dry_run: self.policy.mode == Mode::DryRun,
            },
            findings: p.findings,
            response,
            policy_sha256: self.policy.sha256.clone(),
            vm_start: false,
            dropped: Vec::new(),
            pins: p.pins,
            catalogue: p.catalogue,
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
