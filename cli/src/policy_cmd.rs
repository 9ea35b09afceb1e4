//! Policy toolchain: `check`, `explain`, `test`, `hash-key`, `envoy-config`.
//! Every command goes through the filter's own compiler and verdict
//! (`verdict::judge`): what `explain` and `test` say is what the filter does.

use crate::policy_test::{
    answer_of, judge_case, machine_now_ms, read_caller, read_test_file, CallerSpec, Expect,
};
use clap::Args;
use mcp_firewall::catalogue::intents::classify;
use mcp_firewall::catalogue::pins::{NothingSeen, SeenTools};
use mcp_firewall::config::Errors;
use mcp_firewall::decide::{call_of, decide_traced};
use mcp_firewall::identity::Caller;
use mcp_firewall::json::{parse_strict, sha256_hex};
use mcp_firewall::jsonrpc::Target;
use mcp_firewall::jsonrpc::{parse_body, Body};
use mcp_firewall::policy::{compile_str, CompiledPolicy, Mode};
use mcp_firewall::time_window::parse_timestamp;
use mcp_firewall::verdict::{BodyOutcome, BodyVerdict, HeadVerdict, Judgement};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn load_policy(path: &Path) -> Result<CompiledPolicy, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    compile_str(&text).map_err(|errs| {
        let mut out = format!("{}: {} error(s)", path.display(), errs.len());
        for e in errs {
            out.push_str(&format!("\n  {e}"));
        }
        out
    })
}

#[derive(Args)]
pub struct CheckArgs {
    /// Policy files (JSON) to validate, or directories searched for `*.json`
    /// policies (test files, `*.tests.json`, are skipped).
    #[arg(required = true)]
    policies: Vec<PathBuf>,
}

/// The policies under `target`: itself if a file, else every `*.json` that
/// is not a test file, in name order.
fn policy_files(target: &Path) -> Result<Vec<PathBuf>, String> {
    if !target.is_dir() {
        return Ok(vec![target.to_path_buf()]);
    }
    let out: Vec<PathBuf> = files_under(target)?
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".tests.json")
        })
        .collect();
    if out.is_empty() {
        return Err(format!("no *.json policies under {}", target.display()));
    }
    Ok(out)
}

/// Every file under `dir`, depth first, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn check(args: CheckArgs) -> ExitCode {
    let mut ok = true;
    for target in &args.policies {
        let files = match policy_files(target) {
            Ok(f) => f,
            Err(msg) => {
                ok = false;
                println!("{msg}");
                continue;
            }
        };
        for p in files {
            match load_policy(&p) {
                Ok(policy) => println!(
                    "{}: ok ({} rules, mode {}, sha256 {})",
                    p.display(),
                    policy.rules.len(),
                    policy.mode.as_str(),
                    policy.sha256
                ),
                Err(msg) => {
                    ok = false;
                    println!("{msg}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Policy file.
    policy: PathBuf,
    /// The caller as JSON: {"subject": "...", "roles": [...], "tenant": "..."}.
    #[arg(long, conflicts_with = "headers")]
    caller: Option<String>,
    /// A request header (`name: value`, repeatable) to resolve the caller from
    /// as the filter does, e.g. `--header 'authorization: Bearer …'`.
    #[arg(long = "header", id = "headers")]
    headers: Vec<String>,
    /// When the request is decided, RFC 3339 (`2026-12-05T10:00:00Z`,
    /// `2026-12-05T11:00:00+01:00`), for `time` conditions; default now.
    #[arg(long)]
    at: Option<String>,
    /// A saved `tools/list` answer of the server: a call of a pinned tool is
    /// checked against it, as the filter does after that list. Without it
    /// nothing was listed yet (what a freshly started Envoy knows: a call of
    /// a pinned tool is refused, actual "unseen").
    #[arg(long)]
    tools_list: Option<PathBuf>,
    /// The JSON-RPC message (single or batch); `-` or omitted reads stdin.
    message: Option<String>,
}

fn caller_spec(caller: Option<&str>, headers: &[String]) -> Result<CallerSpec, String> {
    if !headers.is_empty() {
        let mut map = BTreeMap::new();
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or(format!("--header {h:?}: expected `name: value`"))?;
            map.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        return Ok(CallerSpec::Headers(map));
    }
    let text = caller.unwrap_or("{}");
    let v = parse_strict(text.as_bytes(), 8).map_err(|e| format!("--caller: {e}"))?;
    let mut errs = Errors::default();
    match read_caller(&v, "--caller", &mut errs) {
        Some(c) if errs.is_empty() => Ok(CallerSpec::Resolved(c)),
        _ => Err(errs
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// The explanation of each message: the decision and the conditions on the way.
/// (Only printed: the answer is the verdict's.)
fn traces(
    policy: &CompiledPolicy,
    caller: &Caller,
    seen: &dyn SeenTools,
    body: &[u8],
    now_ms: u64,
) -> Vec<Vec<String>> {
    let Ok(parsed) = parse_body(body, policy.limits.max_json_depth) else {
        return Vec::new();
    };
    let messages = match parsed {
        Body::Single(m) => vec![m],
        Body::Batch(ms) => ms,
    };
    messages
        .iter()
        .map(|m| {
            let mut trace = Vec::new();
            if let Ok(mut call) = call_of(m) {
                if let Target::Tool(tool) = &call.target {
                    // The tool's classes, whether or not a rule selects
                    // intents: what the CLI knows of its annotations is
                    // the saved list's (or nothing, as a fresh Envoy).
                    call.annotated = seen.annotated(None, tool);
                    trace.push(format!(
                        "intents: tool {tool:?}: {}",
                        classify(tool, call.annotated).describe()
                    ));
                }
                decide_traced(policy, caller, &call, now_ms, Some(&mut trace));
            }
            trace
        })
        .collect()
}

/// Print what the filter does with a request, message by message, then the answer.
fn print_judgement(
    policy: &CompiledPolicy,
    j: &Judgement,
    caller: Option<&Caller>,
    seen: &dyn SeenTools,
    body: &[u8],
    now_ms: u64,
) {
    if let Judgement::Body(v) = j {
        let traces = match caller {
            Some(c) => traces(policy, c, seen, body, now_ms),
            None => Vec::new(),
        };
        for (i, m) in v.messages.iter().enumerate() {
            let d = &m.decision;
            println!(
                "{}  rule={}\n  {}",
                d.verdict.as_str().to_uppercase(),
                d.rule,
                d.reason
            );
            for line in traces.get(i).into_iter().flatten() {
                match line.strip_prefix("intents: ") {
                    Some(classes) => println!("  intents: {classes}"),
                    None => println!("  condition: {line}"),
                }
            }
            for c in v.charges.iter().filter(|c| c.message == i) {
                println!("  consumes: {}", policy.meters.describe(c));
            }
            if let Some(p) = &m.pin {
                let what = match d.rule {
                    mcp_firewall::rule_id::RuleId::Pin => "refused, JSON-RPC -32014",
                    _ => "forwarded (pins.mode: warn), audited and counted",
                };
                println!(
                    "  pin: tool {:?} expected {} actual {}: {what}",
                    p.tool,
                    p.expected_str().unwrap_or("(no pin)"),
                    p.actual_str().unwrap_or("(not remembered: unpinned)")
                );
            }
            for (f, root) in m.findings.iter().zip(&m.finding_roots) {
                println!(
                    "  dlp: {} at {root}{} ({})",
                    f.kind,
                    f.path,
                    policy.dlp.requests.as_str()
                );
            }
        }
    }
    if let Judgement::Body(v) = j {
        if let (Some(ask), Some(cfg)) = (v.approval(), policy.approval.as_ref()) {
            let b = &ask.binding;
            println!(
                "approval required by rule {}: the filter asks the approval service ({} mode) for \
                 subject={:?} tenant={:?} tool={:?} args_sha256={} policy_sha256={}; forwarded \
                 only if an approval for exactly this call is used, else JSON-RPC -32011",
                ask.rule,
                cfg.mode.as_str(),
                b.subject,
                b.tenant,
                b.tool,
                b.args_sha256,
                b.policy_sha256
            );
        }
    }
    let answer = answer_of(j);
    if answer.refused {
        if let Some(msg) = refusal_message(j) {
            println!("REFUSED before policy: {msg}");
        }
    }
    let dry_run = if policy.mode == Mode::DryRun && answer.status.is_some() {
        " [dry run: not enforced unless rule=kill-switch]"
    } else {
        ""
    };
    println!("answer: {}{dry_run}", answer.describe());
}

fn refusal_message(j: &Judgement) -> Option<&str> {
    match j {
        Judgement::Head(HeadVerdict::Refuse(r))
        | Judgement::Body(BodyVerdict {
            outcome: BodyOutcome::Refuse(r),
            ..
        }) => Some(&r.message),
        _ => None,
    }
}

pub fn explain(args: ExplainArgs) -> ExitCode {
    let run = || -> Result<bool, String> {
        let policy = load_policy(&args.policy)?;
        let spec = caller_spec(args.caller.as_deref(), &args.headers)?;
        let now_ms = match args.at.as_deref() {
            Some(text) => parse_timestamp(text).map_err(|e| format!("--at: {e}"))?,
            None => machine_now_ms(),
        };
        let body = match args.message.as_deref() {
            None | Some("-") => {
                let mut s = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut s)
                    .map_err(|e| e.to_string())?;
                s
            }
            Some(m) => m.as_bytes().to_vec(),
        };
        let listed = match &args.tools_list {
            Some(p) => {
                Some(crate::pin_cmd::saved_list(p).map_err(|e| format!("--tools-list: {e}"))?)
            }
            None => None,
        };
        let seen: &dyn SeenTools = match &listed {
            Some(l) => l,
            None => &NothingSeen,
        };
        let (j, identity) = judge_case(&policy, &spec, seen, &body, now_ms);
        print_judgement(&policy, &j, identity.as_ref().ok(), seen, &body, now_ms);
        Ok(!answer_of(&j).refused)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        // Refused before any policy: the request is not one the filter decides.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            println!("{e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Args)]
pub struct TestArgs {
    /// A `*.tests.json` file, a policy (its sibling `<name>.tests.json` is run),
    /// or a directory searched for `*.tests.json`.
    target: PathBuf,
}

fn test_files(target: &Path) -> Result<Vec<PathBuf>, String> {
    if target.is_dir() {
        return Ok(files_under(target)?
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tests.json"))
            .collect());
    }
    let name = target.to_string_lossy();
    if name.ends_with(".tests.json") {
        return Ok(vec![target.to_path_buf()]);
    }
    let sibling = PathBuf::from(format!("{}.tests.json", name.trim_end_matches(".json")));
    if sibling.exists() {
        Ok(vec![sibling])
    } else {
        Err(format!(
            "no test file for {name} (expected {})",
            sibling.display()
        ))
    }
}

/// Run one test file; returns (passed, failed).
fn run_test_file(path: &Path) -> Result<(usize, usize), String> {
    let file = read_test_file(path)?;
    let policy = load_policy(&file.policy_path)?;
    let (mut passed, mut failed) = (0, 0);
    println!("{} (policy {})", path.display(), file.policy_path.display());
    for case in &file.cases {
        let body = case.message.to_string();
        let now_ms = case.at.unwrap_or_else(machine_now_ms);
        // Nothing listed: a case calling a pinned tool is refused (unseen).
        let (j, _) = judge_case(&policy, &case.caller, &NothingSeen, body.as_bytes(), now_ms);
        let answer = answer_of(&j);
        if answer.meets(&case.expect) {
            passed += 1;
            println!("  ok    {}", case.name);
        } else {
            failed += 1;
            println!(
                "  FAIL  {}: expected {}, got {}",
                case.name,
                describe_expect(&case.expect),
                answer.describe()
            );
        }
    }
    Ok((passed, failed))
}

fn describe_expect(e: &Expect) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &e.verdict {
        parts.push(format!("verdict {v}"));
    }
    if let Some(r) = &e.rule {
        parts.push(format!("rule={r}"));
    }
    if let Some(r) = e.refused {
        parts.push(format!("refused={r}"));
    }
    if let Some(c) = e.code {
        parts.push(format!("JSON-RPC {c}"));
    }
    if let Some(s) = e.status {
        parts.push(format!("HTTP {s}"));
    }
    if let Some(r) = e.redacted {
        parts.push(format!("redacted={r}"));
    }
    parts.join(", ")
}

pub fn test(args: TestArgs) -> ExitCode {
    let files = match test_files(&args.target) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            println!("no *.tests.json files under {}", args.target.display());
            return ExitCode::from(1);
        }
        Err(e) => {
            println!("{e}");
            return ExitCode::from(1);
        }
    };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for f in files {
        match run_test_file(&f) {
            Ok((p, fl)) => {
                passed += p;
                failed += fl;
            }
            Err(e) => {
                broken += 1;
                println!("{e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Args)]
pub struct HashKeyArgs {
    /// Subject to put in the printed entry.
    #[arg(long, default_value = "CHANGE-ME")]
    subject: String,
    /// Roles for the entry (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Tenant for the entry.
    #[arg(long)]
    tenant: Option<String>,
}

pub fn hash_key(args: HashKeyArgs) -> ExitCode {
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut token) {
        eprintln!("reading the token from stdin: {e}");
        return ExitCode::from(1);
    }
    // Strip the newline `echo` or a terminal adds; the filter hashes the bare token.
    let token = token.trim_end_matches(['\n', '\r']);
    if token.is_empty() || token.contains(char::is_whitespace) {
        eprintln!("the token must be one non-empty word on stdin");
        return ExitCode::from(1);
    }
    let mut entry = json!({"sha256": sha256_hex(token.as_bytes()), "subject": args.subject, "roles": args.roles});
    if let (Some(t), Some(o)) = (args.tenant, entry.as_object_mut()) {
        o.insert("tenant".into(), json!(t));
    }
    println!("{entry}");
    ExitCode::SUCCESS
}

#[derive(Args)]
pub struct EnvoyConfigArgs {
    /// Policy file; validated before anything is printed.
    policy: PathBuf,
    /// Path of the compiled filter as Envoy sees it.
    #[arg(long, default_value = "/etc/envoy/mcp_firewall.wasm")]
    wasm: String,
    /// Envoy VM id (filters sharing one id share a VM).
    #[arg(long, default_value = "mcp_firewall")]
    vm_id: String,
    /// The filter's name (and root_id): give each firewall filter of one
    /// Envoy its own, and keep it across reloads of that filter.
    #[arg(long, default_value = "mcp_firewall")]
    name: String,
    /// Print an ECDS DiscoveryResponse (JSON) for hot reload through a
    /// `path_config_source` instead of the static filter entry (YAML).
    #[arg(long, conflicts_with = "full")]
    ecds: bool,
    /// Print a complete minimal Envoy bootstrap (listener, filters, the MCP
    /// server's cluster) instead of the filter entry alone.
    #[arg(long)]
    full: bool,
    /// Spaces before the entry's `- name:`: the default pastes under
    /// `http_filters:` as envoy/envoy.yaml indents it.
    #[arg(long, default_value_t = 10)]
    indent: usize,
    /// With --full: where the MCP server listens (host:port).
    #[arg(long, default_value = "127.0.0.1:3001")]
    upstream: String,
    /// With --full: the port Envoy listens on.
    #[arg(long, default_value_t = 10000)]
    listen_port: u16,
    /// With --full: send the audit trail to the collector at host:port
    /// (`mcp-firewall collector`). Adds the collector's cluster, named as the
    /// policy's `audit.cluster`; a policy without an `audit` section gets
    /// `{"cluster": "audit_collector"}` (every other audit setting at its
    /// default) in the printed bootstrap, the file is left as it is.
    #[arg(long, requires = "full", value_name = "HOST:PORT")]
    audit_collector: Option<String>,
}

/// `host:port` of a `--upstream` or `--audit-collector` argument.
fn host_port(flag: &str, arg: &str) -> Result<(String, u16), String> {
    arg.rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("{flag}: expected host:port, got {arg:?}"))
}

/// The `envoy.filters.http.wasm` config carrying a policy. The one place the
/// deployment settings live: both output forms are rendered from it.
fn wasm_filter_config(policy_json: &str, wasm: &str, vm_id: &str, name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            // A reload keeps the name: it is how a request held across one
            // finds the newer policy of its own filter.
            "name": name,
            "root_id": name,
            // The filter pauses on request headers until the body is decided.
            "allow_on_headers_stop_iteration": true,
            // A crashed VM is reloaded and keeps enforcing; never FAIL_OPEN.
            "failure_policy": "FAIL_RELOAD",
            "vm_config": {
                "vm_id": vm_id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm}}
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": policy_json
            }
        }
    })
}

/// Block-style YAML for a JSON value. Scalars are written as JSON literals,
/// which YAML reads back unchanged (a JSON string is a double-quoted scalar).
fn to_yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if k.starts_with('@') {
                    Value::String(k.clone()).to_string()
                } else {
                    k.clone()
                };
                match x {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        to_yaml(x, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", yaml_scalar(x))),
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                let mut inner = String::new();
                to_yaml(x, indent + 2, &mut inner);
                let trimmed = inner.trim_start();
                out.push_str(&format!("{pad}- {trimmed}"));
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", yaml_scalar(scalar))),
    }
}

/// A JSON literal as a YAML double-quoted scalar. JSON leaves U+0085, U+2028
/// and U+2029 unescaped, but YAML folds them into spaces as line breaks, so
/// the policy Envoy loads would differ from the one `check` read: they are
/// written as `\u` escapes, which both read back as the character.
fn yaml_scalar(v: &Value) -> String {
    v.to_string()
        .replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

pub fn envoy_config(args: EnvoyConfigArgs) -> ExitCode {
    let policy_text = match std::fs::read(&args.policy) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", args.policy.display());
            return ExitCode::from(1);
        }
    };
    let policy = match load_policy(&args.policy) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&policy_text) else {
        return ExitCode::from(1);
    };
    // The collector's cluster and, if the policy has none, the audit section
    // that names it. The amended policy is compiled again: what Envoy loads
    // is always a policy `check` accepts.
    let mut audit = None;
    if let Some(arg) = &args.audit_collector {
        let addr = match host_port("--audit-collector", arg) {
            Ok(a) => a,
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(2);
            }
        };
        if let Some(obj) = doc.as_object_mut() {
            obj.entry("audit")
                .or_insert_with(|| json!({"cluster": DEFAULT_AUDIT_CLUSTER}));
        }
        if let Err(errs) = compile_str(doc.to_string().as_bytes()) {
            eprintln!("{}: with the audit section added:", args.policy.display());
            for e in errs {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
        let cluster = doc
            .pointer("/audit/cluster")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_AUDIT_CLUSTER)
            .to_owned();
        audit = Some((cluster, addr));
    }
    let filter = wasm_filter_config(&doc.to_string(), &args.wasm, &args.vm_id, &args.name);
    if args.ecds {
        let response = json!({
            "version_info": policy.sha256,
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": args.name,
                "typed_config": filter
            }]
        });
        println!("{response}");
        return ExitCode::SUCCESS;
    }
    let jwt = policy.identity.jwt_payload_header.clone();
    // jwt_authn writes the payload header; a client-sent copy must be gone
    // before it, or a caller could name themselves (as envoy/envoy.yaml does).
    let strip_jwt = jwt.as_ref().map(|h| {
        json!({
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": h}]}
            }
        })
    });
    let entry = json!({"name": args.name, "typed_config": filter});
    if args.full {
        let (host, port) = match host_port("--upstream", &args.upstream) {
            Ok(a) => a,
            Err(msg) => {
                eprintln!("{msg}");
                return ExitCode::from(2);
            }
        };
        print!(
            "{}",
            full_bootstrap(entry, strip_jwt, &host, port, args.listen_port, audit)
        );
        return ExitCode::SUCCESS;
    }
    let pad = " ".repeat(args.indent);
    let mut out = format!(
        "{pad}# mcp-firewall HTTP filter; place it before envoy.filters.http.router.\n\
         {pad}# allow_on_headers_stop_iteration: the filter holds the headers until it has decided the body.\n\
         {pad}# failure_policy FAIL_RELOAD: a crashed VM is reloaded and keeps enforcing (never FAIL_OPEN).\n\
         {pad}# Keep the HTTP connection manager's proxy_100_continue false: a Wasm filter never sees interim heads.\n"
    );
    if policy.rate_limit_headers {
        out.push_str(&format!(
            "{pad}# envoy.rate_limit_headers is on: the route must remove {} before the upstream\n\
             {pad}# (request_headers_to_remove; see envoy/envoy.yaml), or the server reads who called.\n",
            mcp_firewall::descriptors::HEADERS.join(", ")
        ));
    }
    if let Some(h) = &jwt {
        out.push_str(&format!(
            "{pad}# identity.jwt_payload_header is {h:?}: Envoy must remove client copies of it\n\
             {pad}# before jwt_authn writes it (the header_mutation entry below; jwt_authn goes between).\n"
        ));
    }
    let entries: Vec<Value> = strip_jwt.into_iter().chain([entry]).collect();
    to_yaml(&Value::Array(entries), args.indent, &mut out);
    print!("{out}");
    ExitCode::SUCCESS
}

/// The cluster name an `--audit-collector` adds to a policy without `audit`.
const DEFAULT_AUDIT_CLUSTER: &str = "audit_collector";

/// A plain HTTP/1.1 cluster of one endpoint, resolved by DNS (a container
/// name, `localhost`, or an IP address).
fn dns_cluster(name: &str, host: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        ]}]}
    })
}

/// A complete minimal Envoy bootstrap around the filter entry: one listener,
/// the MCP server's cluster, no route timeout (MCP streams stay open).
fn full_bootstrap(
    entry: Value,
    strip_jwt: Option<Value>,
    host: &str,
    port: u16,
    listen_port: u16,
    audit: Option<(String, (String, u16))>,
) -> String {
    let mut filters: Vec<Value> = strip_jwt.into_iter().collect();
    filters.push(entry);
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let mut bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{
                "name": "mcp",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "mcp",
                        // A CGI-style server reads mcp_session_id as
                        // Mcp-Session-Id; the firewall would never see it.
                        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                        // Envoy's default, written out: a Wasm filter never
                        // sees an interim head (100, 102, 103), so with it on
                        // the server's would reach the client unscanned.
                        "proxy_100_continue": false,
                        "route_config": {"name": "mcp", "virtual_hosts": [{
                            "name": "mcp", "domains": ["*"],
                            // Written by the filter for the global rate limit
                            // filter (envoy.rate_limit_headers); the server
                            // must not read who called. Removed by the router.
                            "request_headers_to_remove": mcp_firewall::descriptors::HEADERS,
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "mcp_server", "timeout": "0s"}}]
                        }]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": [dns_cluster("mcp_server", host, port)]
        }
    });
    if let Some((name, (host, port))) = &audit {
        if let Some(clusters) = bootstrap
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
        {
            clusters.push(dns_cluster(name, host, *port));
        }
    }
    let mut out = String::from(
        "# A minimal Envoy in front of one MCP server, with mcp-firewall (mcp-firewall envoy-config --full).\n",
    );
    match &audit {
        Some((name, (host, port))) => out.push_str(&format!(
            "# Run: envoy -c this.yaml --disable-hot-restart. TLS and jwt_authn are yours to add\n\
             # (see envoy/*.yaml in the repository). Audit events go to cluster {name} ({host}:{port}).\n"
        )),
        None => out.push_str(
            "# Run: envoy -c this.yaml --disable-hot-restart. TLS, jwt_authn and the audit collector's cluster\n\
             # are yours to add (see envoy/*.yaml in the repository, or --audit-collector).\n",
        ),
    }
    to_yaml(&bootstrap, 0, &mut out);
    out
}
