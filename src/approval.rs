//! Human approval, the filter's side (POLICY.md "Approval", docs/approvals.md
//! for the service): the `approval` policy section, the binding that names
//! one call, the callout's request body, and what the service's answer means.
//! Pure: the request gate (`filter`) sends the callout and applies the answer.
//!
//! The service is the only judge of whether an approval exists: nothing the
//! client sends (an `approval_id`, a header) is read. The filter asks with the
//! binding it computed itself and forwards a call only when the answer says
//! `consumed: true` — this call used an approval for exactly this binding.
//! Anything else is a refusal (fail closed).

use crate::config::{header_safe, keywords, Errors, ObjReader};
use crate::identity::Caller;
use crate::json::{canonical_sha256_hex, integral_numbers};
use crate::rule_id::RuleId;
use serde_json::{json, Map, Value};

/// How a call that needs an approval waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// The request is held (one long-poll callout) up to `timeout_ms` for
    /// the decision, then forwarded or refused. Works with any client.
    Hold,
    /// Refused at once with -32011 and the `approval_id`; the client sends
    /// the same call again once approved, and exactly one retry passes.
    Async,
}

keywords!(ApprovalMode {
    Hold => "hold",
    Async => "async",
});

/// A compiled `approval` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// Envoy cluster of the approval service (the callout target).
    pub cluster: String,
    pub path: String,
    /// `:authority` of the callout; defaults to the cluster name.
    pub authority: String,
    /// `hold`: how long a call waits for a decision (the service's long
    /// poll; the callout's own timeout is one second longer). `async`: how
    /// long the filter waits for the service's answer.
    pub timeout_ms: u64,
    pub mode: ApprovalMode,
    /// How long a request may stay pending at the service (`None`: the
    /// service's `default_ttl_ms`).
    pub ttl_ms: Option<u64>,
    /// Whether approvers see the arguments; otherwise only their SHA-256
    /// and DLP findings (kind and path).
    pub show_arguments: bool,
    /// Where the filter's bearer token for the service comes from.
    pub token: TokenSource,
}

/// The filter's credential for the approval service.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token`: written in the policy (anyone who can read the Envoy
    /// configuration can read it).
    Plain(String),
    /// `token_env`: the name of an environment variable of the Wasm VM,
    /// which Envoy fills from its own environment
    /// (`vm_config.environment_variables.host_env_keys`): the secret stays
    /// out of the policy and the Envoy configuration.
    Env(String),
}

impl std::fmt::Debug for TokenSource {
    // Never print a credential (policy dumps, test failures).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Plain(_) => f.write_str("Plain(<redacted>)"),
            TokenSource::Env(name) => write!(f, "Env({name:?})"),
        }
    }
}

impl TokenSource {
    /// The token itself; `None` when the variable is unset or empty (the
    /// call is then refused as the service being unavailable).
    pub fn resolve(&self) -> Option<String> {
        match self {
            TokenSource::Plain(t) => Some(t.clone()),
            TokenSource::Env(name) => std::env::var(name).ok().filter(|t| !t.is_empty()),
        }
    }
}

pub const DEFAULT_PATH: &str = "/v1/approvals";
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The service's longest long poll (docs/approvals.md `wait_ms`).
pub const MAX_WAIT_MS: u64 = 120_000;
/// The service's longest request TTL by default (`max_ttl_ms`).
pub const MAX_TTL_MS: u64 = 86_400_000;
/// Longest subject, tenant or target the service accepts.
pub const MAX_NAME_BYTES: usize = 1024;
/// Largest arguments shown to approvers (the service takes 256 KiB bodies);
/// larger ones are shown by their SHA-256 only.
pub const MAX_SHOWN_ARGUMENT_BYTES: usize = 128 * 1024;

/// Compile the `approval` section at `path`. `Some(None)`: absent (approval
/// rules refuse with -32011). `None`: errors were recorded.
pub fn compile(
    section: Option<&Value>,
    path: &str,
    errs: &mut Errors,
) -> Option<Option<ApprovalConfig>> {
    let Some(section) = section else {
        return Some(None);
    };
    let before = errs.0.len();
    let mut r = ObjReader::new(section, path, errs)?;
    let (cluster, req_path, authority) = crate::config::callout_target(&mut r, DEFAULT_PATH, errs);
    let timeout_ms = r
        .uint("timeout_ms", 10, MAX_WAIT_MS, errs)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    let mode = r.keyword("mode", errs).unwrap_or(ApprovalMode::Hold);
    let ttl_ms = r.uint("ttl_ms", 1, MAX_TTL_MS, errs);
    let show_arguments = r.boolean("show_arguments", errs).unwrap_or(false);
    let plain = r.string("token", errs).map(str::to_owned);
    let env = r.string("token_env", errs).map(str::to_owned);
    let token = match (plain, env) {
        (Some(t), None) => {
            header_safe(&t, &r.field_path("token"), errs);
            Some(TokenSource::Plain(t))
        }
        (None, Some(name)) => {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                errs.push(
                    r.field_path("token_env"),
                    "must be an environment variable name",
                );
            }
            Some(TokenSource::Env(name))
        }
        (Some(_), Some(_)) => {
            errs.push(r.field_path("token"), "give token or token_env, not both");
            None
        }
        (None, None) => {
            errs.push(
                path,
                "needs token or token_env: the approval service accepts only an authenticated filter",
            );
            None
        }
    };
    r.finish(errs);
    if errs.0.len() > before {
        return None;
    }
    let cluster = cluster?;
    Some(Some(ApprovalConfig {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path: req_path,
        timeout_ms,
        mode,
        ttl_ms,
        show_arguments,
        token: token?,
    }))
}

/// What one approval is for: this caller, this call, these arguments, under
/// this policy. An approval is good for one call with an equal binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub subject: String,
    pub tenant: String,
    /// The tool's name for `tools/call`; for other methods an approve rule
    /// matches (resources, prompts, methods), `<method> <target>` or the
    /// method alone, so one approval never covers another kind of call.
    pub tool: String,
    pub args_sha256: String,
    pub policy_sha256: String,
}

impl Binding {
    /// The binding of a call, or why the caller cannot be asked for (an
    /// anonymous caller, names longer than the service accepts).
    pub fn of(
        caller: &Caller,
        method: &str,
        target: Option<&str>,
        arguments: Option<&Value>,
        policy_sha256: &str,
    ) -> Result<Binding, &'static str> {
        let subject = match caller.subject.as_deref() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => return Err("an anonymous caller cannot be approved"),
        };
        let tool = match (method, target) {
            ("tools/call", Some(t)) => t.to_owned(),
            (m, Some(t)) => format!("{m} {t}"),
            (m, None) => m.to_owned(),
        };
        let tenant = caller.tenant.clone().unwrap_or_default();
        if subject.len() > MAX_NAME_BYTES
            || tenant.len() > MAX_NAME_BYTES
            || tool.len() > MAX_NAME_BYTES
        {
            return Err("the caller's or the target's name is too long to be approved");
        }
        Ok(Binding {
            subject,
            tenant,
            tool,
            args_sha256: args_sha256(arguments),
            policy_sha256: policy_sha256.to_owned(),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "tenant": self.tenant,
            "tool": self.tool,
            "args_sha256": self.args_sha256,
            "policy_sha256": self.policy_sha256,
        })
    }
}

/// SHA-256 of the canonical JSON of `params.arguments` (absent or null read
/// as `{}`; integral numbers written as integers), as the rate limits'
/// `arguments` key part reads them: `{"n": 1}` and `{"n": 1.0}` are one call.
pub fn args_sha256(arguments: Option<&Value>) -> String {
    let args = match arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a) => integral_numbers(a),
    };
    canonical_sha256_hex(&args)
}

/// What the verdict asks of the approval service for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The approve rule that matched.
    pub rule: RuleId,
    pub binding: Binding,
    /// The JSON-RPC id the refusal answers.
    pub id: Value,
    pub method: String,
    pub target: Option<String>,
    /// The arguments, only when the policy shows them to approvers.
    pub arguments: Option<Value>,
    /// DLP findings in the call (kind and path), never a value.
    pub findings: Vec<(String, String)>,
}

impl Ask {
    /// The body of `POST <path>`: find or create the request for this
    /// binding, wait for it in `hold` mode, and use it if approved.
    pub fn request_body(&self, cfg: &ApprovalConfig) -> Vec<u8> {
        let mut summary = json!({
            "method": self.method,
            "target": self.target.as_deref().unwrap_or(&self.method),
        });
        if let Some(a) = &self.arguments {
            summary["arguments"] = a.clone();
        }
        if !self.findings.is_empty() {
            summary["findings"] = self
                .findings
                .iter()
                .map(|(kind, path)| json!({"kind": kind, "path": path}))
                .collect();
        }
        // A held call waits without using: the approval is used by a second
        // callout (`use_body`) only once the filter has checked, after the
        // wait, that the call can still go on (its client is still there, the
        // policy is the one it was asked under). Used inside the long poll, a
        // client that went away, or a policy that changed, would spend it.
        // An async attempt is never waited on: it uses at once.
        let mut body = json!({
            "binding": self.binding.to_json(),
            "rule": self.rule.as_str(),
            "summary": summary,
            "consume": cfg.mode == ApprovalMode::Async,
        });
        if let Some(ttl) = cfg.ttl_ms {
            body["ttl_ms"] = json!(ttl);
        }
        if cfg.mode == ApprovalMode::Hold {
            body["wait_ms"] = json!(cfg.timeout_ms);
        }
        body.to_string().into_bytes()
    }
}

/// `POST <path>/<id>/use`: use the approval a held call was granted.
pub fn use_path(cfg: &ApprovalConfig, approval_id: &str) -> String {
    format!("{}/{approval_id}/use", cfg.path.trim_end_matches('/'))
}

impl Binding {
    /// The body of `POST <path>/<id>/use`.
    pub fn use_body(&self) -> Vec<u8> {
        json!({"binding": self.to_json()}).to_string().into_bytes()
    }
}

/// The timeout of a use (`use_path`): the service answers at once, so the
/// shorter of `timeout_ms` and the default.
pub fn use_timeout_ms(cfg: &ApprovalConfig) -> u64 {
    cfg.timeout_ms.min(DEFAULT_TIMEOUT_MS)
}

/// The callout's own timeout: a held call's long poll plus a second for the
/// answer to travel; in `async` mode, `timeout_ms` itself.
pub fn callout_timeout_ms(cfg: &ApprovalConfig) -> u64 {
    match cfg.mode {
        ApprovalMode::Hold => cfg.timeout_ms + 1_000,
        ApprovalMode::Async => cfg.timeout_ms,
    }
}

/// What the service's answer means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `consumed: true`: this call used the approval; forward it.
    Used {
        approval_id: String,
        decided_by: Option<String>,
        reason: Option<String>,
    },
    /// Approved and unused, not used by this answer (a held call's long
    /// poll, which does not use): the filter may use it now (`use_path`).
    Approved {
        approval_id: String,
        decided_by: Option<String>,
        reason: Option<String>,
    },
    /// A well-formed answer without `consumed: true`: refused with -32011.
    Refused {
        approval_id: String,
        /// `pending`, `denied`, `expired`, `used`, or `approved` when an
        /// approved request could not be used by this call.
        state: String,
        decided_by: Option<String>,
        reason: Option<String>,
    },
    /// No usable answer (down, timeout, 4xx/5xx, not this JSON).
    Unavailable(String),
}

/// Longest approver name or reason copied from an answer into a reply or
/// an audit event.
const MAX_ANSWER_TEXT: usize = 500;

/// Read the service's answer: `status` is the callout's `:status` (`None`
/// when Envoy delivered no answer), `body` its body.
pub fn read_answer(status: Option<u16>, body: Option<&[u8]>) -> Answer {
    let status = match status {
        None => return Answer::Unavailable("no answer from the approval service".into()),
        Some(s) => s,
    };
    if !(200..300).contains(&status) {
        return Answer::Unavailable(format!("the approval service answered HTTP {status}"));
    }
    // Strict, as a request body is read: with a member twice
    // (`"consumed":false,"consumed":true`) which one counts is the reader's
    // choice, and an answer that leaves it open releases nothing.
    let doc: Value = match body.map(|b| crate::json::parse_strict(b, 16)) {
        Some(Ok(v)) => v,
        _ => {
            return Answer::Unavailable(
                "the approval service answered something that is not JSON".into(),
            )
        }
    };
    let text = |key: &str| -> Option<String> {
        doc.get(key).and_then(Value::as_str).map(|s| {
            let clean: String = s.chars().filter(|c| !c.is_control()).collect();
            clip_chars(&clean, MAX_ANSWER_TEXT)
        })
    };
    let (Some(approval_id), Some(state)) = (
        doc.get("approval_id")
            .and_then(Value::as_str)
            .filter(|id| well_formed_id(id))
            .map(str::to_owned),
        doc.get("state")
            .and_then(Value::as_str)
            .filter(|s| matches!(*s, "pending" | "approved" | "denied" | "expired" | "used")),
    ) else {
        return Answer::Unavailable(
            "the approval service's answer lacks a well-formed approval_id or state".into(),
        );
    };
    let consumed = match doc.get("consumed") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Answer::Unavailable(
                "the approval service's answer lacks consumed (true or false)".into(),
            )
        }
    };
    let (decided_by, reason) = (text("decided_by"), text("reason"));
    // Only the answer that used the approval says both; `consumed: true`
    // with any other state is not an answer this contract has.
    match (consumed, state) {
        (true, "used") => Answer::Used {
            approval_id,
            decided_by,
            reason,
        },
        (true, _) => Answer::Unavailable(format!(
            "the approval service answered consumed with state {state}"
        )),
        (false, "approved") => Answer::Approved {
            approval_id,
            decided_by,
            reason,
        },
        (false, _) => Answer::Refused {
            approval_id,
            state: state.to_owned(),
            decided_by,
            reason,
        },
    }
}

/// Read the answer to `POST <path>/<approval_id>/use`: 200 with
/// `consumed: true` for this very approval is the only release; 409 names
/// why the approval could not be used (its state, or another call's
/// binding); anything else is unavailable.
pub fn read_use_answer(status: Option<u16>, body: Option<&[u8]>, approval_id: &str) -> Answer {
    if status == Some(409) {
        let doc: Option<Value> = body.and_then(|b| crate::json::parse_strict(b, 16).ok());
        let state = doc
            .as_ref()
            .and_then(|d| d.get("state"))
            .and_then(Value::as_str)
            .filter(|s| matches!(*s, "pending" | "approved" | "denied" | "expired" | "used"));
        return match state {
            Some(state) => Answer::Refused {
                approval_id: approval_id.to_owned(),
                state: state.to_owned(),
                decided_by: None,
                reason: None,
            },
            // No state: the approval is for another call (the service does
            // not tell its state then), which a request found by this very
            // binding never is: not an answer this contract has.
            None => Answer::Unavailable(
                "the approval service refused the use of an approval without naming its state"
                    .into(),
            ),
        };
    }
    match read_answer(status, body) {
        Answer::Used {
            approval_id: used,
            decided_by,
            reason,
        } if used == approval_id => Answer::Used {
            approval_id: used,
            decided_by,
            reason,
        },
        Answer::Used { .. } | Answer::Approved { .. } => Answer::Unavailable(
            "the approval service's answer to a use was not this approval used".into(),
        ),
        other => other,
    }
}

/// `apr_` + 32 lower-case hex digits, as the service mints them.
pub fn well_formed_id(id: &str) -> bool {
    id.strip_prefix("apr_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn clip_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
