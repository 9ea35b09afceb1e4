//! The policy: every section is compiled by the module that owns it, with the
//! strict reader of [`crate::config`] (`identity`, `session`, `dlp`, `audit`;
//! `rules` and `limits` here), and assembled into a `CompiledPolicy` that the
//! filter uses read-only. A policy with any error is refused whole, with every
//! error named by its JSON path.

mod limits;
mod rules;

pub use limits::{BatchMode, Cap, CapSource, Limits, ResultCap};
pub(crate) use rules::{compile_roles, compile_target, globs, rule_id_problem};
pub use rules::{Effect, Rule, RuleKind};

use crate::config::{keywords, ConfigError, Errors, ObjReader};
use crate::json::{
    canonical, integral_numbers, parse_strict, sha256_hex, JsonError, MAX_SUPPORTED_DEPTH,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    DryRun,
}

keywords!(Mode {
    Enforce => "enforce",
    DryRun => "dry_run",
});

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
    /// The session bindings this VM confirmed lately (see `BoundMemo`).
    pub session_memo: crate::session::BoundMemo,
    pub dlp: crate::dlp::DlpPolicy,
    /// `$.catalogue`: the poisoning checks of tool definitions and results
    /// and what each one does (defaults: definitions flagged, the precise
    /// result checks flagged), applied in `response` (lists, results) and
    /// `verdict` (calls of removed tools).
    pub catalogue: crate::catalogue::CataloguePolicy,
    /// `None` = audit off.
    pub audit: Option<crate::audit::AuditConfig>,
    /// `None` = no approval service: `approve` rules refuse with -32011.
    pub approval: Option<crate::approval::ApprovalConfig>,
    /// `rate_limits` and `budgets`.
    pub meters: crate::meter::MeterPolicy,
    /// `None` = pins off.
    pub pins: Option<crate::catalogue::pins::PinPolicy>,
    /// `$.schemas`: calls and results checked against the schemas their
    /// server declared (default: off).
    pub schemas: crate::catalogue::schemas::SchemaPolicy,
    /// `$.envoy.allow_on_headers_stop_iteration` (default true): whether the
    /// host was configured to let the filter hold request and response headers
    /// while it reads the body. Envoy honours a `Pause` from a headers callback
    /// only with that PluginConfig flag; without it the body callbacks never
    /// run and the exchange hangs. Istio's WasmPlugin cannot set the flag, so
    /// there the filter lets the headers go and holds only the body.
    pub hold_headers: bool,
    /// `$.envoy.rate_limit_headers` (default false): export each forwarded
    /// request's descriptor entries (subject, tenant, method, tool) in request
    /// headers for Envoy's global rate limit filter (see `descriptors`).
    pub rate_limit_headers: bool,
    /// SHA-256 of the canonical JSON of the policy document (numbers with an
    /// integral value written as integers).
    pub sha256: String,
    /// Every path a `when` condition reads (JSON pointers into `params` and
    /// `params.arguments`): a request spelling a member on one of them in
    /// another case is refused (see `verdict`).
    pub condition_paths: Vec<crate::condition::MemberPath>,
}

impl CompiledPolicy {
    /// Some rule selects `intents`: only then are the tools' annotations
    /// read from lists, remembered per upstream and looked up for calls.
    pub fn selects_intents(&self) -> bool {
        self.rules.iter().any(|r| r.intents.is_some())
    }
}

/// Sections of POLICY.md that this build does not enforce yet. Accepting them
/// silently would let a team believe something is enforced that is not.
const NOT_YET_SUPPORTED: &[&str] = &[];

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
    // A control plane may hand us `100` as `100.0` or `1e+06` (Istio's
    // pluginConfig goes through a protobuf Struct of doubles): compile, and
    // hash, the same document whichever form arrived.
    let doc = &integral_numbers(doc);
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
    let mode = root.keyword("mode", errs).unwrap_or(Mode::Enforce);
    let identity = crate::identity::compile(root.get("identity"), "$.identity", errs);
    let rules = match root.required("rules", errs) {
        Some(v) => rules::compile(v, errs),
        None => Vec::new(),
    };
    let limits = limits::compile(root.get("limits"), errs);
    let kill_switch = root.boolean("kill_switch", errs).unwrap_or(false);
    let (hold_headers, rate_limit_headers) = compile_envoy(root.get("envoy"), &limits, errs);
    let disabled_subjects = root.strings("disabled", errs).unwrap_or_default();
    let sessions = crate::session::compile(root.get("sessions"), "$.sessions", errs);
    let audit = crate::audit::compile(root.get("audit"), "$.audit", errs).flatten();
    let approval = crate::approval::compile(root.get("approval"), "$.approval", errs).flatten();
    // DLP is on by default (requests block, responses redact) when the section is absent.
    let dlp = crate::dlp::compile(root.get("dlp"), "$.dlp", errs);
    let catalogue = crate::catalogue::compile(root.get("catalogue"), "$.catalogue", errs);
    let meters = crate::meter::compile(root.get("rate_limits"), root.get("budgets"), errs);
    let pins = crate::catalogue::pins::compile(root.get("pins"), "$.pins", errs);
    let schemas = crate::catalogue::schemas::compile(root.get("schemas"), "$.schemas", errs);
    // One id names one thing in refusals, stats and audit events.
    let mut seen: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    for (i, id) in meters.ids().enumerate() {
        if seen.contains(&id.as_str()) {
            let path = match i.checked_sub(meters.rate_limits.len()) {
                None => format!("$.rate_limits[{i}].id"),
                Some(b) => format!("$.budgets[{b}].id"),
            };
            errs.push(path, format!("id {:?} is used twice", id.as_str()));
        }
        seen.push(id.as_str());
    }
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
    let catalogue = catalogue?;
    let schemas = schemas?;
    let mut condition_paths = Vec::new();
    for cond in rules.iter().filter_map(|r| r.when.as_ref()) {
        cond.member_paths(&mut condition_paths);
    }
    crate::sort::sort(&mut condition_paths);
    condition_paths.dedup();
    Some(CompiledPolicy {
        condition_paths,
        mode,
        identity,
        rules,
        limits,
        kill_switch,
        hold_headers,
        rate_limit_headers,
        disabled_subjects,
        sessions,
        session_memo: crate::session::BoundMemo::default(),
        dlp,
        catalogue,
        audit,
        approval,
        meters,
        pins,
        schemas,
        sha256: sha256_hex(canonical(doc).as_bytes()),
    })
}

/// The `envoy` section at `$.envoy`: how the host that runs the filter was
/// configured: `allow_on_headers_stop_iteration` (default true) and
/// `rate_limit_headers` (default false), as `(hold_headers, rate_limit_headers)`.
fn compile_envoy(v: Option<&Value>, limits: &Limits, errs: &mut Errors) -> (bool, bool) {
    let Some(v) = v else { return (true, false) };
    let Some(mut r) = ObjReader::new(v, "$.envoy", errs) else {
        return (true, false);
    };
    let hold = r
        .boolean("allow_on_headers_stop_iteration", errs)
        .unwrap_or(true);
    let export = r.boolean("rate_limit_headers", errs).unwrap_or(false);
    let path = r.field_path("rate_limit_headers");
    r.finish(errs);
    if export && !hold {
        // Envoy's rate limit filter reads the headers when they pass this
        // filter: let go before the body is read, they name no method or tool.
        errs.push(
            &path,
            "needs $.envoy.allow_on_headers_stop_iteration true: when the request headers go on before the body is decided, Envoy's rate limit filter runs before the method and the tool are known",
        );
    }
    if export && limits.batches == BatchMode::Evaluate {
        // One HTTP request is one hit for the rate limit filter, and it
        // carries one value per header: a batch of calls would count once.
        errs.push(
            &path,
            "needs $.limits.batches reject: a batch is one request to Envoy's rate limit filter, so its calls would be counted once",
        );
    }
    (hold, export)
}

#[cfg(test)]
mod tests;
