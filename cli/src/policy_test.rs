//! Policy test files (`*.tests.json`) and the answer a request gets.
//!
//! A case is a request as the filter sees it: the caller (as roles, or as the
//! request's headers so the API-key/JWT mapping is tested too), the JSON-RPC
//! body, when it is decided (`at`, RFC 3339; the machine's clock when not
//! given), and what the caller must receive. The answer comes from
//! `verdict::judge`, the function the filter itself applies; a test in this
//! module runs every case of every shipped test file through the filter on
//! the in-memory host and requires the same answer.
//!
//! Test files are read as strictly as policies: an unknown key, a case
//! without `expect` or an empty `expect` is an error named by its JSON path.

use mcp_firewall::catalogue::pins::SeenTools;
use mcp_firewall::config::{index, Errors, ObjReader};
use mcp_firewall::decide::Verdict;
use mcp_firewall::identity::{self, Caller, IdentityError, IdentityInputs, Via};
use mcp_firewall::json::parse_strict;
use mcp_firewall::policy::CompiledPolicy;
use mcp_firewall::reply::LocalReply;
use mcp_firewall::time_window::parse_timestamp;
use mcp_firewall::verdict::{judge, BodyOutcome, HeadVerdict, Judgement, RequestHead};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Who calls, as a test case or `explain --caller` gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallerSpec {
    /// Already resolved (`{"roles": [...], "subject": ..., "tenant": ..., "via": ...}`).
    Resolved(Caller),
    /// Request headers (lower-cased names) the filter resolves the caller from.
    Headers(BTreeMap<String, String>),
}

/// One case of a test file.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub caller: CallerSpec,
    pub message: Value,
    /// When the request is decided (ms since the Unix epoch); `None`: now.
    pub at: Option<u64>,
    pub expect: Expect,
}

/// What a case requires; every given member must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub verdict: Option<String>,
    pub rule: Option<String>,
    pub refused: Option<bool>,
    pub code: Option<i64>,
    pub status: Option<u32>,
    pub redacted: Option<bool>,
}

/// A test file: its policy and cases.
pub struct TestFile {
    pub policy_path: PathBuf,
    pub cases: Vec<Case>,
}

/// What the caller gets for a request, in the terms a case states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Refused before any policy (not JSON-RPC, a header, identity, limits).
    pub refused: bool,
    /// `allow`, `deny` or `approval` (`deny` too when refused before policy).
    pub verdict: &'static str,
    /// The rule that decided (the first refused message's, else the first message's).
    pub rule: String,
    /// HTTP status of the filter's own reply; `None` when forwarded.
    pub status: Option<u32>,
    /// JSON-RPC error code of the reply (the first error of a batch).
    pub code: Option<i64>,
    /// Forwarded with arguments redacted.
    pub redacted: bool,
}

impl Answer {
    /// Whether the answer is what `expect` asks for.
    pub fn meets(&self, e: &Expect) -> bool {
        e.verdict.as_deref().is_none_or(|v| v == self.verdict)
            && e.rule.as_deref().is_none_or(|r| r == self.rule)
            && e.refused.is_none_or(|r| r == self.refused)
            && e.code.is_none_or(|c| Some(c) == self.code)
            && e.status.is_none_or(|s| Some(s) == self.status)
            && e.redacted.is_none_or(|r| r == self.redacted)
    }

    /// One line, e.g. `deny rule=dlp (HTTP 200, JSON-RPC -32013)`.
    pub fn describe(&self) -> String {
        let mut out = match self.refused {
            true => format!("refused before policy, rule={}", self.rule),
            false => format!("{} rule={}", self.verdict, self.rule),
        };
        match (self.status, self.code) {
            (Some(s), Some(c)) => out.push_str(&format!(" (HTTP {s}, JSON-RPC {c})")),
            (Some(s), None) => out.push_str(&format!(" (HTTP {s}, no body)")),
            _ if self.redacted => out.push_str(" (forwarded, arguments redacted)"),
            _ => out.push_str(" (forwarded)"),
        }
        out
    }

    /// The answer a reply of the filter's gives (its status, its first
    /// error's code and rule): what the client would see.
    pub fn of_reply(reply: &LocalReply, refused: bool) -> Answer {
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let first = match &body {
            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let code = first["error"]["code"].as_i64();
        let verdict = match code {
            Some(mcp_firewall::reply::APPROVAL) => "approval",
            _ => "deny",
        };
        let rule = first["error"]["data"]["rule"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| reply.rule.clone())
            .unwrap_or_default();
        Answer {
            refused,
            verdict,
            rule,
            status: Some(reply.status),
            code,
            redacted: false,
        }
    }
}

/// The answer to a judged request.
pub fn answer_of(j: &Judgement) -> Answer {
    match j {
        Judgement::Head(HeadVerdict::Refuse(r)) => Answer {
            rule: r.rule.as_str().to_owned(),
            ..Answer::of_reply(&r.reply(), true)
        },
        Judgement::Head(HeadVerdict::Deny(d)) => Answer {
            refused: false,
            verdict: d.verdict.as_str(),
            rule: d.rule.as_str().to_owned(),
            status: Some(403),
            code: Some(match d.verdict {
                Verdict::Approval => mcp_firewall::reply::APPROVAL,
                _ => mcp_firewall::reply::DENIED,
            }),
            redacted: false,
        },
        Judgement::Head(_) => Answer {
            refused: false,
            verdict: "allow",
            rule: String::new(),
            status: None,
            code: None,
            redacted: false,
        },
        Judgement::Body(v) => match &v.outcome {
            BodyOutcome::Refuse(r) => Answer {
                rule: r.rule.as_str().to_owned(),
                ..Answer::of_reply(&r.reply(), true)
            },
            BodyOutcome::Deny(reply) | BodyOutcome::DlpBlock(reply) => {
                Answer::of_reply(reply, false)
            }
            // Forwarded only once a person approves; what the caller sees
            // until then (and after a denial) is -32011.
            BodyOutcome::Approve { ask, .. } => Answer {
                refused: false,
                verdict: "approval",
                rule: ask.rule.as_str().to_owned(),
                status: Some(200),
                code: Some(mcp_firewall::reply::APPROVAL),
                redacted: false,
            },
            BodyOutcome::Forward { rewritten } => Answer {
                refused: false,
                verdict: "allow",
                rule: v
                    .messages
                    .first()
                    .map(|m| m.decision.rule.as_str().to_owned())
                    .unwrap_or_default(),
                status: None,
                code: None,
                redacted: rewritten.is_some(),
            },
        },
    }
}

/// The machine's clock in milliseconds since the Unix epoch: when a request
/// is decided if `--at` or a case's `at` does not say.
pub fn machine_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A POST with these headers (each on one line), decided at `now_ms`, as
/// the filter reads it.
pub fn request_head(
    policy: &CompiledPolicy,
    headers: &BTreeMap<String, String>,
    now_ms: u64,
) -> RequestHead {
    let get = |k: &str| headers.get(k).cloned();
    RequestHead {
        conversation: match &policy.limits.conversation_header {
            Some(name) => get(name),
            None => get("mcp-session-id"),
        },
        method: get(":method").unwrap_or_else(|| "POST".into()),
        path: get(":path"),
        last_event_id: get("last-event-id"),
        content_type: get("content-type").unwrap_or_else(|| "application/json".into()),
        content_encoding: get("content-encoding"),
        content_length: get("content-length"),
        mcp_method: get("mcp-method"),
        mcp_name: get("mcp-name"),
        repeated_header: None,
        session_id: get("mcp-session-id"),
        protocol_version: get("mcp-protocol-version"),
        mcp_params: headers
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("mcp-param-")
                    .map(|name| (name.to_owned(), v.clone()))
            })
            .collect(),
        upgrade: get("upgrade"),
        ends_stream: false,
        // The CLI's definitions seen (`SeenTools`) hold for any upstream.
        upstream: None,
        route_path_problem: None,
        now_ms,
    }
}

/// Decide a request for a case's caller at `now_ms` exactly as the filter does.
pub fn judge_case(
    policy: &CompiledPolicy,
    caller: &CallerSpec,
    seen: &dyn SeenTools,
    body: &[u8],
    now_ms: u64,
) -> (Judgement, Result<Caller, IdentityError>) {
    let (identity, headers) = match caller {
        CallerSpec::Resolved(c) => (Ok(c.clone()), BTreeMap::new()),
        CallerSpec::Headers(h) => {
            let inputs = IdentityInputs {
                authorization: h.get("authorization").cloned(),
                jwt_payload: policy
                    .identity
                    .jwt_payload_header
                    .as_deref()
                    .and_then(|name| h.get(name).cloned()),
                peer_uri_san: None,
            };
            (identity::resolve(&policy.identity, &inputs), h.clone())
        }
    };
    let head = request_head(policy, &headers, now_ms);
    (judge(policy, &identity, &head, seen, body), identity)
}

/// Read `--caller` / a case's `caller` object.
pub fn read_caller(v: &Value, path: &str, errs: &mut Errors) -> Option<Caller> {
    let mut r = ObjReader::new(v, path, errs)?;
    let subject = r.string("subject", errs).map(str::to_owned);
    let tenant = r.string("tenant", errs).map(str::to_owned);
    let roles = r.strings("roles", errs).unwrap_or_default();
    let via = match r.string("via", errs) {
        None => Via::ApiKey,
        Some(text) => match [Via::ApiKey, Via::Jwt, Via::Mtls, Via::Anonymous]
            .into_iter()
            .find(|v| v.as_str() == text)
        {
            Some(v) => v,
            None => {
                errs.push(
                    r.field_path("via"),
                    format!("unknown via {text:?}: use api_key, jwt, mtls or anonymous"),
                );
                return None;
            }
        },
    };
    r.finish(errs);
    Some(Caller {
        subject,
        tenant,
        roles,
        via,
    })
}

fn read_headers(v: &Value, path: &str, errs: &mut Errors) -> Option<BTreeMap<String, String>> {
    let Value::Object(m) = v else {
        errs.push(path, "expected an object of header names to values");
        return None;
    };
    let mut out = BTreeMap::new();
    for (k, x) in m {
        match x.as_str() {
            Some(s) => {
                out.insert(k.to_ascii_lowercase(), s.to_owned());
            }
            None => errs.push(format!("{path}.{k}"), "header values are strings"),
        }
    }
    Some(out)
}

fn read_expect(v: &Value, path: &str, errs: &mut Errors) -> Option<Expect> {
    let mut r = ObjReader::new(v, path, errs)?;
    let e = Expect {
        verdict: r.string("verdict", errs).map(str::to_owned),
        rule: r.string("rule", errs).map(str::to_owned),
        refused: r.boolean("refused", errs),
        code: read_code(&mut r, errs),
        status: r
            .uint("status", 100, 599, errs)
            .and_then(|s| u32::try_from(s).ok()),
        redacted: r.boolean("redacted", errs),
    };
    r.finish(errs);
    if let Some(verdict) = &e.verdict {
        if !["allow", "deny", "approval"].contains(&verdict.as_str()) {
            errs.push(
                format!("{path}.verdict"),
                "expected one of allow, deny, approval",
            );
        }
    }
    if e == Expect::default() {
        errs.push(
            path,
            "states nothing to check: give verdict, rule, refused, code, status or redacted",
        );
    }
    Some(e)
}

/// A JSON-RPC error code: a (negative) integer.
fn read_code(r: &mut ObjReader, errs: &mut Errors) -> Option<i64> {
    let path = r.field_path("code");
    let v = r.get("code")?;
    let code = v.as_i64();
    if code.is_none() {
        errs.push(path, "expected a JSON-RPC error code (an integer)");
    }
    code
}

fn read_case(v: &Value, path: &str, i: usize, errs: &mut Errors) -> Option<Case> {
    let before = errs.0.len();
    let mut r = ObjReader::new(v, path, errs)?;
    let name = r
        .string("name", errs)
        .map_or_else(|| format!("case {i}"), str::to_owned);
    let caller = match (r.get("caller"), r.get("headers")) {
        (Some(_), Some(_)) => {
            errs.push(
                path,
                "give the caller as \"caller\" or as \"headers\", not both",
            );
            None
        }
        (Some(c), None) => read_caller(c, &r.field_path("caller"), errs).map(CallerSpec::Resolved),
        (None, Some(h)) => read_headers(h, &r.field_path("headers"), errs).map(CallerSpec::Headers),
        (None, None) => Some(CallerSpec::Resolved(Caller {
            subject: None,
            tenant: None,
            roles: Vec::new(),
            via: Via::ApiKey,
        })),
    };
    let message = r.get("message").cloned();
    if message.is_none() {
        errs.push(r.field_path("message"), "required field is missing");
    }
    let at = r.string("at", errs).and_then(|text| {
        parse_timestamp(text)
            .map_err(|msg| errs.push(r.field_path("at"), msg))
            .ok()
    });
    let expect = match r.get("expect") {
        Some(e) => read_expect(e, &r.field_path("expect"), errs),
        None => {
            errs.push(r.field_path("expect"), "required field is missing");
            None
        }
    };
    r.finish(errs);
    if errs.0.len() != before {
        return None;
    }
    Some(Case {
        name,
        caller: caller?,
        message: message?,
        at,
        expect: expect?,
    })
}

/// Read a test file; every mistake is reported with its JSON path.
pub fn read_test_file(path: &Path) -> Result<TestFile, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc = parse_strict(&text, 64).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut errs = Errors::default();
    let mut cases = Vec::new();
    let mut policy = None;
    if let Some(mut r) = ObjReader::new(&doc, "$", &mut errs) {
        policy = r.string("policy", &mut errs).map(str::to_owned);
        if policy.is_none() {
            errs.push("$.policy", "required field is missing");
        }
        match r.get("cases") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(c) = read_case(item, &index("$.cases", i), i, &mut errs) {
                        cases.push(c);
                    }
                }
            }
            Some(_) => errs.push("$.cases", "expected an array of cases"),
            None => errs.push("$.cases", "required field is missing"),
        }
        r.finish(&mut errs);
    }
    if !errs.is_empty() {
        let mut out = format!("{}: {} error(s)", path.display(), errs.0.len());
        for e in errs.0 {
            out.push_str(&format!("\n  {e}"));
        }
        return Err(out);
    }
    let policy_rel = policy.unwrap_or_default();
    Ok(TestFile {
        policy_path: path.parent().unwrap_or(Path::new(".")).join(policy_rel),
        cases,
    })
}

#[cfg(test)]
mod agreement {
    //! Every case of every shipped test file, and a table of refusals of our
    //! own, through the CLI's answer (`verdict::judge`) and through the
    //! filter's request state machine on the in-memory host: the same verdict,
    //! rule, status, code and rewrite, or the test fails.
    use super::*;
    use mcp_firewall::audit::Verdict as AuditVerdict;
    use mcp_firewall::exchange::{Exchange, Request};
    use mcp_firewall::host::fake::FakeHost;
    use mcp_firewall::json::sha256_hex;
    use mcp_firewall::policy::compile;
    use std::rc::Rc;

    /// The token the filter side presents for a case given as resolved roles.
    const CASE_TOKEN: &str = "agreement-case-caller";

    /// The policy with an audit section (the filter's audit records which rule
    /// decided a forwarded message) and, for a caller given as roles, an API
    /// key that resolves to exactly that caller. Neither changes a decision.
    fn policy_for(doc: &Value, caller: &CallerSpec) -> CompiledPolicy {
        let mut doc = doc.clone();
        let Some(root) = doc.as_object_mut() else {
            panic!("policy is not an object");
        };
        root.entry("audit")
            .or_insert(serde_json::json!({"cluster": "audit_collector"}));
        if let CallerSpec::Resolved(c) = caller {
            let identity = root
                .entry("identity")
                .or_insert(serde_json::json!({}))
                .as_object_mut()
                .map(|i| i.entry("api_keys").or_insert(serde_json::json!([])));
            let mut key = serde_json::json!({
                "sha256": sha256_hex(CASE_TOKEN.as_bytes()),
                "subject": c.subject.clone().unwrap_or_else(|| "case-caller".into()),
                "roles": c.roles,
            });
            if let (Some(t), Some(k)) = (&c.tenant, key.as_object_mut()) {
                k.insert("tenant".into(), serde_json::json!(t));
            }
            match identity.and_then(Value::as_array_mut) {
                Some(keys) => keys.push(key),
                None => panic!("identity.api_keys is not an array"),
            }
        }
        match compile(&doc) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// What the filter answers, read from the in-memory host alone.
    fn filter_answer(
        policy: CompiledPolicy,
        caller: &CallerSpec,
        body: &[u8],
        now_ms: u64,
    ) -> (Answer, Vec<u8>) {
        let mut host = FakeHost::new()
            .header(":method", "POST")
            .header("content-type", "application/json");
        host.now_ms = now_ms;
        match caller {
            CallerSpec::Resolved(_) => {
                host = host.header("authorization", &format!("Bearer {CASE_TOKEN}"));
            }
            CallerSpec::Headers(h) => {
                for (k, v) in h {
                    host = host.header(k, v);
                }
            }
        }
        let mut x = Exchange::new(Rc::new(policy), host);
        x.request(Request::new(body));
        let refused_before_policy = x
            .host
            .audited
            .iter()
            .find(|e| e.method == "(refused before decision)");
        if let Some(reply) = x.reply() {
            let mut answer = Answer::of_reply(reply, refused_before_policy.is_some());
            if let Some(e) = refused_before_policy {
                answer.rule = e.decision.rule.clone();
            }
            return (answer, Vec::new());
        }
        assert!(x.forwarded(), "neither replied nor forwarded");
        x.done();
        let first = x.host.audited.first();
        let answer = Answer {
            refused: false,
            verdict: "allow",
            rule: first.map(|e| e.decision.rule.clone()).unwrap_or_default(),
            status: None,
            code: None,
            redacted: first.is_some_and(|e| e.decision.verdict == AuditVerdict::Redacted),
        };
        (answer, x.upstream().to_vec())
    }

    fn shipped_test_files() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut stack = vec![root.join("../policies"), root.join("tests/fixtures")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".tests.json") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_case_gets_the_same_answer_from_the_cli_and_the_filter() {
        let files = shipped_test_files();
        assert!(files.len() >= 6, "test files found: {files:?}");
        let mut checked = 0;
        for path in files {
            let file = match read_test_file(&path) {
                Ok(f) => f,
                Err(e) => panic!("{e}"),
            };
            let text = std::fs::read(&file.policy_path).unwrap_or_default();
            let doc: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            for case in &file.cases {
                let body = case.message.to_string();
                // One instant for both sides: a case without `at` is decided
                // at the machine's time, which both must then read alike.
                let now_ms = case.at.unwrap_or_else(machine_now_ms);
                let (judged, _) = judge_case(
                    &policy_for(&doc, &case.caller),
                    &case.caller,
                    &mcp_firewall::catalogue::pins::NothingSeen,
                    body.as_bytes(),
                    now_ms,
                );
                let cli = answer_of(&judged);
                let (filter, forwarded) = filter_answer(
                    policy_for(&doc, &case.caller),
                    &case.caller,
                    body.as_bytes(),
                    now_ms,
                );
                assert_eq!(cli, filter, "{}: {}", path.display(), case.name);
                if let Judgement::Body(v) = &judged {
                    if let BodyOutcome::Forward { rewritten } = &v.outcome {
                        let want = rewritten
                            .clone()
                            .unwrap_or_else(|| body.clone().into_bytes());
                        assert_eq!(
                            String::from_utf8_lossy(&forwarded),
                            String::from_utf8_lossy(&want),
                            "{}: {}: the body the server reads",
                            path.display(),
                            case.name
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 66, "only {checked} cases checked");
    }
}

#[cfg(test)]
mod reading {
    use super::*;

    /// Read `cases` (a JSON array's text) as a test file; the error text if refused.
    fn errors_of(cases: &str) -> String {
        let dir = std::env::temp_dir().join(format!(
            "mcp-fw-policy-test-{}-{}",
            std::process::id(),
            cases.len()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("t.tests.json");
        let _ = std::fs::write(
            &path,
            format!(r#"{{"policy": "p.json", "cases": {cases}}}"#),
        );
        let out = match read_test_file(&path) {
            Ok(f) => format!("ok: {} cases", f.cases.len()),
            Err(e) => e,
        };
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn test_files_are_read_strictly_with_json_paths() {
        let msg = r#""message": {"jsonrpc": "2.0", "id": 1, "method": "ping"}"#;
        let cases = [
            (
                "unknown_key_in_a_case",
                format!(r#"[{{{msg}, "expect": {{"verdict": "allow"}}, "expcet": 1}}]"#),
                "$.cases[0].expcet: unknown field",
            ),
            (
                "unknown_key_in_expect",
                format!(r#"[{{{msg}, "expect": {{"verdict": "allow", "rul": "x"}}}}]"#),
                "$.cases[0].expect.rul: unknown field",
            ),
            (
                "case_without_expect",
                format!(r#"[{{{msg}}}]"#),
                "$.cases[0].expect: required field is missing",
            ),
            (
                "empty_expect",
                format!(r#"[{{{msg}, "expect": {{}}}}]"#),
                "$.cases[0].expect: states nothing to check",
            ),
            (
                "unknown_verdict",
                format!(r#"[{{{msg}, "expect": {{"verdict": "permit"}}}}]"#),
                "$.cases[0].expect.verdict: expected one of allow, deny, approval",
            ),
            (
                "caller_and_headers",
                format!(
                    r#"[{{{msg}, "caller": {{}}, "headers": {{}}, "expect": {{"verdict": "allow"}}}}]"#
                ),
                "$.cases[0]: give the caller as \"caller\" or as \"headers\", not both",
            ),
            (
                "at_not_rfc_3339",
                format!(
                    r#"[{{{msg}, "at": "2026-12-05 10:00", "expect": {{"verdict": "allow"}}}}]"#
                ),
                "$.cases[0].at: \"2026-12-05 10:00\" is not an RFC 3339 time",
            ),
            (
                "at_not_a_string",
                format!(r#"[{{{msg}, "at": 1796464800000, "expect": {{"verdict": "allow"}}}}]"#),
                "$.cases[0].at: expected a string, found a number",
            ),
            (
                "unknown_key_in_caller",
                format!(
                    r#"[{{{msg}, "caller": {{"role": ["x"]}}, "expect": {{"verdict": "allow"}}}}]"#
                ),
                "$.cases[0].caller.role: unknown field",
            ),
        ];
        for (name, text, want) in cases {
            let got = errors_of(&text);
            assert!(got.contains(want), "{name}: {got}");
        }
        assert_eq!(
            errors_of(&format!(
                r#"[{{{msg}, "headers": {{"Authorization": "Bearer k"}}, "expect": {{"code": -32010}}}}]"#
            )),
            "ok: 1 cases"
        );
    }
}
