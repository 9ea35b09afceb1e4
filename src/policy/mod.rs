//! The policy: phase one reads the raw JSON (with [`crate::config`]'s strict
//! reader), phase two compiles it into a `CompiledPolicy` that the filter uses
//! read-only. A policy with any error is refused whole, with every error named
//! by its JSON path.

use crate::config::{index, string_list, ConfigError, Errors, ObjReader};
use crate::glob::Glob;
use crate::json::{canonical, parse_strict, sha256_hex, JsonError, MAX_SUPPORTED_DEPTH};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    Approve,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Approve => "approve",
        }
    }
}

/// What a rule's patterns are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Tools,
    Methods,
    Resources,
    Prompts,
}

impl RuleKind {
    pub fn field(self) -> &'static str {
        match self {
            RuleKind::Tools => "tools",
            RuleKind::Methods => "methods",
            RuleKind::Resources => "resources",
            RuleKind::Prompts => "prompts",
        }
    }
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub kind: RuleKind,
    pub patterns: Vec<Glob>,
    /// `None` = any identity.
    pub roles: Option<Vec<String>>,
    /// `None` = always.
    pub when: Option<crate::condition::Condition>,
}

impl Rule {
    pub fn applies_to_roles(&self, caller_roles: &[String]) -> bool {
        match &self.roles {
            None => true,
            Some(roles) => roles.iter().any(|r| caller_roles.contains(r)),
        }
    }
    pub fn matches_name(&self, name: &str) -> bool {
        self.patterns.iter().any(|g| g.matches(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    Reject,
    Evaluate,
}

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

#[derive(Debug)]
pub struct CompiledPolicy {
    pub mode: Mode,
    pub identity: crate::identity::IdentityConfig,
    pub rules: Vec<Rule>,
    pub limits: Limits,
    /// Emergency brake: refuse every MCP message (rule `kill-switch`), even in dry-run.
    pub kill_switch: bool,
    /// Subjects refused outright (rule `kill-switch`), e.g. a compromised agent.
    pub disabled_subjects: Vec<String>,
    pub sessions: crate::session::SessionConfig,
    pub dlp: crate::dlp::DlpPolicy,
    /// `None` = audit off.
    pub audit: Option<crate::audit::AuditConfig>,
    /// SHA-256 of the canonical JSON of the policy document.
    pub sha256: String,
}

/// Rule ids the filter itself uses in decisions; a policy may not take them.
pub const RESERVED_RULE_IDS: &[&str] = &[
    "default-deny",
    "base-protocol",
    "batch",
    "resource-uri",
    "kill-switch",
    "response-unfilterable",
    "session-binding",
    "audit-unavailable",
    "protocol",
    "identity",
    "too-large",
    "media-type",
    "http-method",
    "header-mismatch",
    "dlp",
];

/// Sections of POLICY.md that this build does not enforce yet. Accepting them
/// silently would let a team believe something is enforced that is not.
const NOT_YET_SUPPORTED: &[&str] = &["rate_limits", "pins", "approval"];

/// Parse and compile policy text (the plugin configuration).
pub fn compile_str(text: &[u8]) -> Result<CompiledPolicy, Vec<ConfigError>> {
    let doc = parse_strict(text, MAX_SUPPORTED_DEPTH).map_err(|e| {
        let msg = match e {
            JsonError::Syntax(m) => format!("policy is not valid JSON: {m}"),
            other => format!("policy is not acceptable JSON: {other}"),
        };
        vec![ConfigError {
            path: "$".into(),
            msg,
        }]
    })?;
    compile(&doc)
}

pub fn compile(doc: &Value) -> Result<CompiledPolicy, Vec<ConfigError>> {
    let mut errs = Errors::default();
    let policy = compile_inner(doc, &mut errs);
    match policy {
        Some(p) if errs.is_empty() => Ok(p),
        _ => {
            if errs.is_empty() {
                errs.push("$", "policy could not be compiled");
            }
            Err(errs.0)
        }
    }
}

fn compile_inner(doc: &Value, errs: &mut Errors) -> Option<CompiledPolicy> {
    let mut root = ObjReader::new(doc, "$", errs)?;
    match root.required("version", errs) {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => errs.push(
            "$.version",
            format!("unsupported version {other}; this filter reads version 1"),
        ),
        None => {}
    }
    let mode = match root.choice("mode", &["enforce", "dry_run"], errs) {
        Some("dry_run") => Mode::DryRun,
        _ => Mode::Enforce,
    };
    let identity = crate::identity::compile(root.get("identity"), "$.identity", errs);
    let rules = match root.required("rules", errs) {
        Some(v) => compile_rules(v, errs),
        None => Vec::new(),
    };
    let limits = compile_limits(root.get("limits"), errs);
    let kill_switch = root.boolean("kill_switch", errs).unwrap_or(false);
    let disabled_subjects = root.strings("disabled", errs).unwrap_or_default();
    let sessions = crate::session::compile(root.get("sessions"), "$.sessions", errs);
    let audit = crate::audit::compile(root.get("audit"), "$.audit", errs).flatten();
    // DLP is on by default (requests block, responses redact) when the section is absent.
    let dlp = crate::dlp::compile(root.get("dlp"), "$.dlp", errs);
    for section in NOT_YET_SUPPORTED {
        if root.get(section).is_some() {
            errs.push(
                format!("$.{section}"),
                "not supported yet by this build of mcp-firewall; remove it (it would not be enforced)",
            );
        }
    }
    root.finish(errs);
    let dlp = dlp?;
    Some(CompiledPolicy {
        mode,
        identity,
        rules,
        limits,
        kill_switch,
        disabled_subjects,
        sessions,
        dlp,
        audit,
        sha256: sha256_hex(canonical(doc).as_bytes()),
    })
}

fn compile_rules(v: &Value, errs: &mut Errors) -> Vec<Rule> {
    let Value::Array(items) = v else {
        errs.push("$.rules", "expected an array of rules");
        return Vec::new();
    };
    let mut out: Vec<Rule> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = index("$.rules", i);
        if let Some(rule) = compile_rule(item, &p, errs) {
            if out.iter().any(|r| r.id == rule.id) {
                errs.push(
                    format!("{p}.id"),
                    format!("rule id {:?} is used twice", rule.id),
                );
            }
            out.push(rule);
        }
    }
    out
}

fn compile_rule(v: &Value, p: &str, errs: &mut Errors) -> Option<Rule> {
    let mut r = ObjReader::new(v, p, errs)?;
    let before = errs.0.len();
    let id = r.string("id", errs).map(str::to_owned);
    if !r.has("id") {
        errs.push(format!("{p}.id"), "required field is missing");
    }
    if let Some(id) = &id {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        {
            errs.push(
                format!("{p}.id"),
                "rule ids are non-empty and use letters, digits and - _ . : /",
            );
        } else if RESERVED_RULE_IDS.contains(&id.as_str()) {
            errs.push(
                format!("{p}.id"),
                format!("{id:?} is reserved for the filter's own decisions"),
            );
        }
    }
    let effect = match r.choice("effect", &["allow", "deny", "approve"], errs) {
        Some("allow") => Some(Effect::Allow),
        Some("deny") => Some(Effect::Deny),
        Some(_) => Some(Effect::Approve),
        None => {
            if !r.has("effect") {
                errs.push(format!("{p}.effect"), "required field is missing");
            }
            None
        }
    };
    let mut kinds = Vec::new();
    for kind in [
        RuleKind::Tools,
        RuleKind::Methods,
        RuleKind::Resources,
        RuleKind::Prompts,
    ] {
        let fp = format!("{p}.{}", kind.field());
        if let Some(list) = r.strings(kind.field(), errs) {
            if list.is_empty() {
                errs.push(&fp, "needs at least one pattern");
            }
            if list.iter().any(String::is_empty) {
                errs.push(&fp, "patterns must not be empty strings");
            }
            kinds.push((kind, list));
        }
    }
    let target = match kinds.len() {
        1 => kinds.pop(),
        0 => {
            errs.push(
                p,
                "a rule needs exactly one of tools, methods, resources, prompts",
            );
            None
        }
        _ => {
            errs.push(
                p,
                "a rule targets exactly one kind: use one of tools, methods, resources, prompts",
            );
            None
        }
    };
    let roles = match r.get("roles") {
        None => None,
        Some(v) => {
            let list = string_list(v, &format!("{p}.roles"), errs);
            if matches!(&list, Some(l) if l.is_empty()) {
                errs.push(
                    format!("{p}.roles"),
                    "an empty roles list matches nobody; omit roles to mean any identity",
                );
            }
            list
        }
    };
    let when = r
        .get("when")
        .and_then(|w| crate::condition::compile(w, &format!("{p}.when"), errs));
    r.finish(errs);
    let (kind, list) = target?;
    if errs.0.len() != before {
        return None;
    }
    Some(Rule {
        id: id?,
        effect: effect?,
        kind,
        patterns: list.iter().map(|s| Glob::new(s)).collect(),
        roles,
        when,
    })
}

fn compile_limits(v: Option<&Value>, errs: &mut Errors) -> Limits {
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
    if let Some(b) = r.choice("batches", &["reject", "evaluate"], errs) {
        out.batches = if b == "evaluate" {
            BatchMode::Evaluate
        } else {
            BatchMode::Reject
        };
    }
    r.finish(errs);
    out
}

#[cfg(test)]
mod tests;
