//! Policy toolchain: `check`, `explain`, `test`, `hash-key`, `envoy-config`.
//! Every command goes through the filter's own compiler and decision code.

use clap::Args;
use mcp_firewall::decide::{call_of, decide_traced, kill_switch, Verdict};
use mcp_firewall::identity::{Caller, Via};
use mcp_firewall::json::{parse_strict, sha256_hex};
use mcp_firewall::jsonrpc::{parse_body, Body};
use mcp_firewall::policy::{compile_str, CompiledPolicy};
use serde_json::{json, Value};
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
    /// Policy files (JSON) to validate.
    #[arg(required = true)]
    policies: Vec<PathBuf>,
}

pub fn check(args: CheckArgs) -> ExitCode {
    let mut ok = true;
    for p in &args.policies {
        match load_policy(p) {
            Ok(policy) => println!(
                "{}: ok ({} rules, mode {:?}, sha256 {})",
                p.display(),
                policy.rules.len(),
                policy.mode,
                policy.sha256
            ),
            Err(msg) => {
                ok = false;
                println!("{msg}");
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
    #[arg(long, default_value = "{}")]
    caller: String,
    /// The JSON-RPC message (single or batch); `-` or omitted reads stdin.
    message: Option<String>,
}

fn parse_caller(text: &str) -> Result<Caller, String> {
    let v = parse_strict(text.as_bytes(), 8).map_err(|e| format!("--caller: {e}"))?;
    let Value::Object(m) = &v else {
        return Err("--caller must be a JSON object".into());
    };
    for k in m.keys() {
        if !["subject", "roles", "tenant", "via"].contains(&k.as_str()) {
            return Err(format!("--caller: unknown field {k:?}"));
        }
    }
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let roles = match m.get("roles") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_owned)
                    .ok_or("--caller: roles must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("--caller: roles must be an array of strings".into()),
    };
    let via = match m.get("via") {
        None => Via::ApiKey,
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            format!("--caller: unknown via {v}: use api_key, jwt, mtls or anonymous")
        })?,
    };
    Ok(Caller {
        subject: s("subject"),
        tenant: s("tenant"),
        roles,
        via,
    })
}

/// One message's decision plus the conditions evaluated on the way.
type Explained = (Verdict, String, String, Vec<String>);

/// Decide a body for a caller exactly as the filter does; one entry per message.
fn decide_body(
    policy: &CompiledPolicy,
    caller: &Caller,
    body: &[u8],
) -> Result<Vec<Explained>, String> {
    let parsed = parse_body(body, policy.limits.max_json_depth)
        .map_err(|e| format!("refused before policy ({}): {}", e.code(), e.message()))?;
    let messages = match parsed {
        Body::Single(m) => vec![m],
        Body::Batch(ms) => ms,
    };
    messages
        .iter()
        .map(|m| {
            if let Some(d) = kill_switch(policy, caller) {
                return Ok((d.verdict, d.rule, d.reason, Vec::new()));
            }
            let call = call_of(m)
                .map_err(|e| format!("refused before policy ({}): {}", e.code(), e.message()))?;
            let mut trace = Vec::new();
            let d = decide_traced(policy, caller, &call, Some(&mut trace));
            Ok((d.verdict, d.rule, d.reason, trace))
        })
        .collect()
}

pub fn explain(args: ExplainArgs) -> ExitCode {
    let run = || -> Result<(), String> {
        let policy = load_policy(&args.policy)?;
        let caller = parse_caller(&args.caller)?;
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
        for (verdict, rule, reason, trace) in decide_body(&policy, &caller, &body)? {
            println!(
                "{}  rule={rule}\n  {reason}",
                verdict.as_str().to_uppercase()
            );
            for line in trace {
                println!("  condition: {line}");
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
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
        let mut out = Vec::new();
        let mut stack = vec![target.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".tests.json") {
                    out.push(p);
                }
            }
        }
        out.sort();
        return Ok(out);
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
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc = parse_strict(&text, 64).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy_rel = doc
        .get("policy")
        .and_then(Value::as_str)
        .ok_or(format!("{}: needs \"policy\"", path.display()))?;
    let policy_path = path.parent().unwrap_or(Path::new(".")).join(policy_rel);
    let policy = load_policy(&policy_path)?;
    let cases = doc
        .get("cases")
        .and_then(Value::as_array)
        .ok_or(format!("{}: needs \"cases\"", path.display()))?;
    let (mut passed, mut failed) = (0, 0);
    println!("{} (policy {})", path.display(), policy_path.display());
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(format!("case {i}"));
        let caller = case.get("caller").cloned().unwrap_or(json!({}));
        let message = case.get("message").cloned().unwrap_or(Value::Null);
        let expect = case.get("expect").cloned().unwrap_or(Value::Null);
        let outcome = parse_caller(&caller.to_string())
            .and_then(|c| decide_body(&policy, &c, message.to_string().as_bytes()));
        let want_verdict = expect.get("verdict").and_then(Value::as_str);
        let want_rule = expect.get("rule").and_then(Value::as_str);
        let want_refused = expect
            .get("refused")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (ok, got) = match &outcome {
            Err(e) => (want_refused, e.clone()),
            Ok(ds) => {
                let (v, r, _, _) = ds.first().cloned().unwrap_or((
                    Verdict::Deny,
                    String::new(),
                    String::new(),
                    Vec::new(),
                ));
                let ok = !want_refused
                    && want_verdict.is_none_or(|w| w == v.as_str())
                    && want_rule.is_none_or(|w| w == r);
                (ok, format!("{} rule={r}", v.as_str()))
            }
        };
        if ok {
            passed += 1;
            println!("  ok    {name}");
        } else {
            failed += 1;
            println!("  FAIL  {name}: expected {expect}, got {got}");
        }
    }
    Ok((passed, failed))
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
    /// Print an ECDS DiscoveryResponse (JSON) for hot reload through a
    /// `path_config_source` instead of the static filter entry (YAML).
    #[arg(long)]
    ecds: bool,
}

/// The `envoy.filters.http.wasm` config carrying a policy. The one place the
/// deployment settings live: both output forms are rendered from it.
fn wasm_filter_config(policy_json: &str, wasm: &str, vm_id: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "mcp_firewall",
            "root_id": "mcp_firewall",
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
                    _ => out.push_str(&format!("{pad}{key}: {x}\n")),
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
        scalar => out.push_str(&format!("{pad}{scalar}\n")),
    }
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
    let Ok(doc) = serde_json::from_slice::<Value>(&policy_text) else {
        return ExitCode::from(1);
    };
    let filter = wasm_filter_config(&doc.to_string(), &args.wasm, &args.vm_id);
    if args.ecds {
        let response = json!({
            "version_info": policy.sha256,
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": "mcp_firewall",
                "typed_config": filter
            }]
        });
        println!("{response}");
        return ExitCode::SUCCESS;
    }
    let mut out = String::from(
        "# mcp-firewall HTTP filter; place it before envoy.filters.http.router.\n\
         # allow_on_headers_stop_iteration: the filter holds the headers until it has decided the body.\n\
         # failure_policy FAIL_RELOAD: a crashed VM is reloaded and keeps enforcing (never FAIL_OPEN).\n",
    );
    to_yaml(
        &json!([{"name": "envoy.filters.http.wasm", "typed_config": filter}]),
        0,
        &mut out,
    );
    print!("{out}");
    ExitCode::SUCCESS
}
