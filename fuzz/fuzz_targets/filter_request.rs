//! The whole per-request state machine (`RequestFilter`) on the in-memory fake
//! host: request headers, the request body in chunks (or ended by trailers),
//! response headers, the response body in chunks (or ended by trailers), and
//! the log phase, under a few fixed policies. The exchange is driven by
//! `mcp_firewall::exchange`, the driver the filter's unit tests use.
//!
//! Input layout, chosen so seeds are easy to write by hand (five control bytes,
//! then the request side, a 0xFF byte, then the response side; 0xFF and 0xFE
//! never occur in UTF-8, so a JSON body never needs them):
//! * byte 0: bits 0-1 the policy (demo.json as shipped; demo + DLP redact on
//!   requests, block on responses, batches evaluated, audit on; demo in
//!   dry-run with small limits, batches evaluated, audit closed; demo + the
//!   resource, prompt, method and condition rules of `RICH` with sessions of
//!   one per identity), bit 2 the audit trail refuses (`audit_down`), bit 3
//!   the request ends with trailers instead of an end-of-stream body
//!   callback, bit 4 the same for the response, bit 5 an `Mcp-Session-Id`
//!   request header, bit 6 a correct `Content-Length` request header, bit 7
//!   drive the response side even after a local reply;
//! * byte 1: request chunk size (0 = the whole body at once);
//! * byte 2: bits 0-1 `Authorization` (none, reader key, admin key, unknown
//!   key), bits 2-3 `Content-Type` (json, json with charset, text/plain,
//!   none), bits 4-5 `Mcp-Method` (none, tools/call, tools/list, initialize),
//!   bits 6-7 the HTTP method (POST, GET, DELETE, PUT);
//! * byte 3: bits 0-1 response `Content-Type` (json, text/event-stream,
//!   text/plain, json in upper case with charset), bits 2-3 `:status` (200,
//!   202, 500, none), bit 4 `Mcp-Name: echo`, bit 5 the same in the base64
//!   form, bit 6 a response `Mcp-Session-Id`, bit 7 `Content-Encoding: gzip`;
//! * byte 4: response chunk size (0 = the whole body at once).
//!
//! Each side (request, response) may start with a header block ended by a
//! 0xFE byte: `name: value` lines separated by `\n`, applied after the
//! headers the control bytes chose, so the fuzzer writes any header
//! (`content-type`, `mcp-method`, `mcp-name`, `mcp-param-*`,
//! `mcp-protocol-version`, `mcp-session-id`, `:method`, `authorization`, the
//! response's `content-type`, `content-encoding`, `content-length`...). A
//! name given twice in a request block is a header sent on two lines; a line
//! without `:` removes that header; lines with CR or NUL are dropped (Envoy's
//! codecs refuse them). Two request pseudo-headers drive the host instead:
//! `x-fuzz-swap: N` configures policy N while the body is read (a hot reload
//! the body callback adopts), `x-fuzz-bound: ID` binds session ID to the
//! admin key's identity before the exchange (so a reader presenting it holds
//! a stolen id, and a full per-identity table is reachable).
//!
//! Invariants (a violation panics):
//! * no callback panics, and the fake host's own checks hold: request headers
//!   are neither read nor written after the headers callback (Envoy answers
//!   BadArgument there, so the filter must have read them once);
//! * at most one local reply per exchange (Envoy cannot send two), and its
//!   body, when not empty, is valid JSON (it is a JSON-RPC error the client
//!   parses);
//! * fail closed on requests: a POST's headers callback never continues (the
//!   router must not open an upstream request before the body is decided; the
//!   driver checks the same of any request whose headers a body follows), and
//!   no body callback before the end of the stream continues (Envoy would
//!   stream undecided bytes upstream); trailers on an undecided body refuse it;
//! * when the final request callback of a POST continues (the body goes
//!   upstream), there is no local reply and the forwarded body, possibly
//!   redacted, is strict JSON within the policy's depth limit (the server must
//!   read exactly what was decided on);
//! * the filter agrees with THE decision: a forwarded POST is one `verdict::judge`
//!   (under the policy in force when the body was decided, the caller
//!   resolved from the headers sent) does not refuse before policy (media
//!   type, charset, header checks, ids, names, case variants...), and, unless
//!   the policy is in dry run, neither denies nor DLP-blocks; what the server
//!   reads is the verdict's rewritten body, or the body as sent (dry run
//!   never rewrites). A kill switch holds in dry run too;
//! * a forwarded body reads as JSON-RPC again (`parse_body`): ids within
//!   ±(2^53-1) and distinct in a batch, method names printable ASCII, every
//!   `tools/call` name within MCP's tool-name characters and every
//!   `prompts/get` name printable ASCII;
//! * the last response body callback never holds data back (Envoy would never
//!   send it), and after a local reply the filter leaves the response alone;
//! * whatever the filter rewrote in a JSON response (it differs from what the
//!   upstream sent) is valid JSON, and in an event stream every event that is
//!   not one of the upstream's, byte for byte, carries valid JSON data;
//! * an enforced list answer the client receives (the JSON body, or an
//!   event's data, as the content type it receives says) holds only entries
//!   the caller may see (`decide::visible`), and no
//!   member spelled in another case beside the list;
//! * without an audit section nothing is audited.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::catalogue::intents::{entry_annotations, Annotated};
use mcp_firewall::decide::{visible, Catalogue};
use mcp_firewall::exchange::{Exchange, Request, Response};
use mcp_firewall::host::fake::FakeHost;
use mcp_firewall::host::Flow;
use mcp_firewall::identity::{self, Caller, IdentityInputs};
use mcp_firewall::json::parse_strict;
use mcp_firewall::jsonrpc::{self, id_key, name_problem, Body, Message, NameKind};
use mcp_firewall::policy::{compile_str, CompiledPolicy, Mode};
use mcp_firewall::session::{self, Unknown};
use mcp_firewall::sse::{parse_event, SseFramer};
use mcp_firewall::verdict::{self, BodyOutcome, Judgement, RequestHead, SINGLE_HEADERS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

const DEMO: &str = include_str!("../../policies/demo.json");

/// Merge `patch` into demo.json: objects one level deep (so `identity`
/// keeps its keys), arrays appended (so `rules` keeps demo's), the rest replaced.
fn compile_variant(patch: Value) -> Rc<CompiledPolicy> {
    let mut doc: Value = serde_json::from_str(DEMO).expect("policies/demo.json is JSON");
    if let (Some(d), Value::Object(p)) = (doc.as_object_mut(), patch) {
        for (k, v) in p {
            match (d.get_mut(&k), v) {
                (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
                (Some(Value::Array(old)), Value::Array(new)) => old.extend(new),
                (_, v) => {
                    d.insert(k, v);
                }
            }
        }
    }
    match compile_str(doc.to_string().as_bytes()) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("fixed fuzz policy does not compile: {e:?}"),
    }
}

thread_local! {
    static POLICIES: [Rc<CompiledPolicy>; 4] = [
        compile_variant(json!({})),
        compile_variant(json!({
            "dlp": {"requests": "redact", "responses": "block"},
            "audit": {"cluster": "audit_collector"},
            "limits": {"max_request_bytes": 65536, "max_json_depth": 32, "batches": "evaluate"}
        })),
        compile_variant(json!({
            "mode": "dry_run",
            "dlp": {"requests": "block", "responses": "redact"},
            "audit": {"cluster": "audit_collector", "on_failure": "closed"},
            "limits": {"max_request_bytes": 1024, "max_response_bytes": 1024,
                       "max_json_depth": 16, "batches": "evaluate"}
        })),
        compile_variant(json!({
            "identity": {"resource_metadata": "https://mcp.example/.well-known/oauth-protected-resource"},
            "rules": [
                {"id": "files", "effect": "allow", "roles": ["reader", "admin"], "resources": ["file:///srv/**", "https://*.example.com/*"]},
                {"id": "no-secrets", "effect": "deny", "resources": ["file:///srv/secret/*"]},
                {"id": "prompts", "effect": "allow", "roles": ["reader"], "prompts": ["Code Review", "summar*"]},
                {"id": "no-admin-prompt", "effect": "deny", "prompts": ["admin*"]},
                {"id": "wire", "effect": "allow", "methods": ["initialize", "ping", "notifications/*",
                    "resources/subscribe", "subscriptions/listen", "completion/complete", "tasks/*"]},
                {"id": "workspace", "effect": "allow", "roles": ["reader"], "tools": ["read_file"],
                    "when": {"arg": "/path", "path_under": "/workspace"}},
                // The host's clock (2023-11-14 23:13 at +01:00, a Tuesday)
                // is inside this window: reads under /workspace/prod are
                // refused, a decision the comparison with verdict::judge
                // below makes only if both read the same time.
                {"id": "no-prod-reads-at-night", "effect": "deny", "tools": ["read_file"],
                    "when": {"all": [{"arg": "/path", "prefix": "/workspace/prod"},
                                     {"time": {"days": ["tue"], "hours": "22:00-06:00", "utc_offset": "+01:00"}}]}}
            ],
            "dlp": {"requests": "redact", "responses": "redact"},
            "sessions": {"per_identity": 1},
            "audit": {"cluster": "audit_collector"},
            "limits": {"batches": "evaluate"}
        })),
    ];
}

fn policy_at(n: usize) -> Rc<CompiledPolicy> {
    POLICIES.with(|p| p[n % p.len()].clone())
}

fn pick<'a>(bits: u8, options: &[Option<&'a str>; 4]) -> Option<&'a str> {
    options[usize::from(bits & 3)]
}

/// `name: value` lines of a header block; `None` = remove the header.
fn header_lines(block: &[u8]) -> Vec<(String, Option<String>)> {
    let text = String::from_utf8_lossy(block);
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.contains(['\r', '\0']) || line.is_empty() {
            continue;
        }
        // A pseudo-header (`:method`) starts with the colon that is no separator.
        let sep = line.get(1..).and_then(|r| r.find(':')).map(|i| i + 1);
        match sep {
            Some(i) => {
                let (name, value) = (&line[..i], &line[i + 1..]);
                let value = value.trim_start_matches([' ', '\t']);
                out.push((name.trim().to_ascii_lowercase(), Some(value.to_owned())));
            }
            None => out.push((line.trim().to_ascii_lowercase(), None)),
        }
    }
    out
}

/// A side's header block (before the first 0xFE) and body.
fn split_block(side: &[u8]) -> (Vec<(String, Option<String>)>, &[u8]) {
    match side.iter().position(|&b| b == 0xFE) {
        Some(i) => (header_lines(&side[..i]), &side[i + 1..]),
        None => (Vec::new(), side),
    }
}

fn check_reply(host: &FakeHost) {
    assert!(host.replies.len() <= 1, "more than one local reply: {:?}", host.replies);
    for r in &host.replies {
        if !r.body.is_empty() {
            if let Err(e) = serde_json::from_slice::<Value>(&r.body) {
                panic!(
                    "local reply body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&r.body)
                );
            }
        }
    }
}

/// Events of an SSE stream as the framer cuts them (the unterminated tail last).
fn sse_events(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut f = SseFramer::new(usize::MAX);
    let mut evs = f.push(bytes).unwrap_or_default();
    let rest = f.finish();
    if !rest.is_empty() {
        evs.push(rest);
    }
    evs
}

/// The request head as the filter reads it in its headers callback (under
/// the policy configured then), from the headers the client sent.
fn head_of(
    sent: &BTreeMap<String, String>,
    repeated: &BTreeSet<String>,
    at_headers: &CompiledPolicy,
    ends_stream: bool,
    now_ms: u64,
) -> RequestHead {
    let get = |k: &str| sent.get(k).cloned();
    let mut single: Vec<&str> = SINGLE_HEADERS.to_vec();
    if let Some(jwt) = at_headers.identity.jwt_payload_header.as_deref() {
        single.push(jwt);
    }
    let mut mcp_params = Vec::new();
    for (k, v) in sent.range("mcp-param-".to_owned()..) {
        let Some(name) = k.strip_prefix("mcp-param-") else {
            break;
        };
        mcp_params.push((name.to_owned(), v.clone()));
        if repeated.contains(k) {
            mcp_params.push((name.to_owned(), v.clone()));
        }
    }
    RequestHead {
        method: get(":method").unwrap_or_default(),
        path: at_headers.identity.resource_metadata.as_ref().and_then(|_| get(":path")),
        content_type: get("content-type").unwrap_or_default(),
        content_encoding: get("content-encoding"),
        content_length: get("content-length"),
        mcp_method: get("mcp-method"),
        mcp_name: get("mcp-name"),
        repeated_header: single.iter().find(|h| repeated.contains(**h)).map(|h| (*h).to_owned()),
        session_id: get("mcp-session-id").filter(|s| !s.trim().is_empty()),
        conversation: match &at_headers.limits.conversation_header {
            Some(name) => get(name),
            None => get("mcp-session-id").filter(|s| !s.trim().is_empty()),
        },
        last_event_id: get("last-event-id"),
        protocol_version: get("mcp-protocol-version"),
        mcp_params,
        upgrade: get("upgrade"),
        ends_stream,
        // The fake host names no cluster: pinned calls meet `unavailable`
        // there, as `NothingSeen` gives `unseen` here; both refuse.
        upstream: None,
        // No route either: the path is never checked for one.
        route_path_problem: None,
        now_ms,
    }
}

/// A forwarded body reads as JSON-RPC again, and every name in it is one the
/// filter would have let reach the rules.
fn check_forwarded_names(upstream: &[u8], depth: usize) {
    let body = match jsonrpc::parse_body(upstream, depth) {
        Ok(b) => b,
        Err(e) => panic!(
            "forwarded body is not JSON-RPC the filter accepts ({e:?}): {:?}",
            String::from_utf8_lossy(upstream)
        ),
    };
    let messages = match body {
        Body::Single(m) => vec![m],
        Body::Batch(ms) => ms,
    };
    for m in &messages {
        let Some(method) = m.method() else { continue };
        assert!(name_problem(NameKind::Method, method).is_none(), "forwarded method {method:?}");
        let kind = match method {
            "tools/call" => NameKind::Tool,
            "prompts/get" => NameKind::Prompt,
            _ => continue,
        };
        let name = m.params().get("name").and_then(Value::as_str);
        assert!(
            name.is_some_and(|n| name_problem(kind, n).is_none()),
            "forwarded {method} names {name:?}"
        );
        if let Message::Request { id, .. } = m {
            assert!(
                id.as_i64().map_or(id.is_string(), |i| i.abs() <= jsonrpc::MAX_EXACT_ID),
                "forwarded id {id}"
            );
        }
    }
}

/// Every list answer to one of `lists` in `doc` holds only entries the caller may see.
fn check_list_answer(
    doc: &Value,
    lists: &[(String, Catalogue)],
    policy: &CompiledPolicy,
    caller: &Caller,
) {
    let answers: Vec<&Value> = match doc {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    for a in answers {
        let Some(id) = a.get("id").map(id_key) else { continue };
        let Some((_, cat)) = lists.iter().find(|(k, _)| *k == id) else { continue };
        let Some(result) = a.get("result").and_then(Value::as_object) else { continue };
        let (member, name_member) = cat.members();
        for (k, v) in result {
            assert!(
                k == member || !k.eq_ignore_ascii_case(member) || v.is_null(),
                "list answer carries {k:?} beside {member:?}: {a}"
            );
        }
        let Some(entries) = result.get(member).and_then(Value::as_array) else { continue };
        for e in entries {
            let name = e.get(name_member).and_then(Value::as_str);
            assert!(
                name.is_some_and(|n| {
                    // As the filter judged it: by the entry's own annotations
                    // when a rule selects intents.
                    let annotated = match (*cat, policy.selects_intents()) {
                        (Catalogue::Tools, true) => Annotated::Seen(entry_annotations(n, e)),
                        _ => Annotated::Unseen,
                    };
                    visible(policy, caller, *cat, n, annotated)
                }),
                "the client received a list entry it may not see: {e}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, req_chunk, hdr, resp, resp_chunk, rest @ ..] = data else {
        return;
    };
    let (request_side, response_side) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (request_block, request) = split_block(request_side);
    let policy = policy_at(usize::from(flags & 3));

    let mut host = FakeHost::new();
    let mut set = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            host.request_headers.insert(k.to_owned(), v.to_owned());
        }
    };
    let method = pick(hdr >> 6, &[Some("POST"), Some("GET"), Some("DELETE"), Some("PUT")]);
    set(":method", method);
    set(":path", Some("/mcp"));
    set(
        "authorization",
        pick(
            *hdr,
            &[None, Some("Bearer demo-reader-key"), Some("Bearer demo-admin-key"), Some("Bearer nope")],
        ),
    );
    set(
        "content-type",
        pick(
            hdr >> 2,
            &[Some("application/json"), Some("application/json; charset=utf-8"), Some("text/plain"), None],
        ),
    );
    set("mcp-method", pick(hdr >> 4, &[None, Some("tools/call"), Some("tools/list"), Some("initialize")]));
    if resp & 0x10 != 0 {
        set("mcp-name", Some("echo"));
    }
    if resp & 0x20 != 0 {
        set("mcp-name", Some("=?base64?ZWNobw==?="));
    }
    if resp & 0x80 != 0 {
        set("content-encoding", Some("gzip"));
    }
    if flags & 0x20 != 0 {
        set("mcp-session-id", Some("session-1"));
    }
    let len = request.len().to_string();
    if flags & 0x40 != 0 {
        set("content-length", Some(&len));
    }
    host.request_headers.insert("accept".into(), "application/json, text/event-stream".into());
    host.audit_down = flags & 0x04 != 0;
    host.now_ms = 1_700_000_000_000;

    // The request's header block.
    let mut swap = None;
    let mut in_block = BTreeSet::new();
    for (name, value) in request_block {
        match (name.as_str(), value) {
            ("x-fuzz-swap", Some(v)) => swap = v.trim().parse::<usize>().ok().map(policy_at),
            ("x-fuzz-bound", Some(sid)) => {
                let admin = IdentityInputs {
                    authorization: Some("Bearer demo-admin-key".into()),
                    ..Default::default()
                };
                if let Ok(caller) = identity::resolve(&policy.identity, &admin) {
                    let _ = session::check_and_bind(
                        &host,
                        &policy.sessions,
                        &sid,
                        &caller,
                        host.now_ms,
                        Unknown::Bind,
                    );
                }
            }
            (_, None) => {
                host.request_headers.remove(&name);
                host.repeated_request_headers.remove(&name);
            }
            (_, Some(v)) => {
                match (in_block.contains(&name), host.request_headers.get(&name)) {
                    (true, Some(first)) => {
                        let both = format!("{first}, {v}");
                        host.request_headers.insert(name.clone(), both);
                        host.repeated_request_headers.insert(name.clone());
                    }
                    _ => {
                        host.request_headers.insert(name.clone(), v);
                    }
                }
                in_block.insert(name);
            }
        }
    }
    let method = host.request_headers.get(":method").cloned();
    let sent = host.request_headers.clone();
    let sent_repeated = host.repeated_request_headers.clone();
    host.policy_in_force = swap.clone();
    // The policy the body is decided under.
    let deciding = swap.unwrap_or_else(|| policy.clone());

    let is_post = method.as_deref() == Some("POST");
    let mut x = Exchange::new(policy.clone(), host);

    // Request side, as Envoy drives it (the driver asserts that headers with a
    // body to come pause). The trailers bit means nothing without a body.
    let trailers = flags & 0x08 != 0 && !request.is_empty();
    let mut req = Request::new(request).chunk(usize::from(*req_chunk));
    if trailers {
        req = req.trailers();
    }
    x.request(req);
    check_reply(&x.host);
    let flows = &x.flows;
    if is_post {
        assert_eq!(flows.request_headers, Some(Flow::Pause), "a POST's headers continued before its body was decided");
        // Every body callback but an end-of-stream one must hold the body.
        let undecided = match trailers {
            true => &flows.request_body[..],
            false => &flows.request_body[..flows.request_body.len().saturating_sub(1)],
        };
        assert!(undecided.iter().all(|f| *f == Flow::Pause), "a body callback continued before the end of the stream");
        if let Some(flow) = flows.request_trailers {
            assert_eq!(flow, Flow::Pause, "trailers on an undecided body continued");
            assert!(x.reply().is_some(), "trailers on an undecided body were not refused");
        }
    }
    let replied = x.reply().is_some();
    // What the response side must have enforced: the lists of the verdict
    // and the caller they were filtered for.
    let mut enforced_lists: Option<(Vec<(String, Catalogue)>, Caller)> = None;
    if flows.request() == Flow::Continue && is_post {
        assert!(!replied, "continued after a local reply");
        let decided_on_body = flows.request_trailers.is_none() && !flows.request_body.is_empty();
        assert!(decided_on_body, "a POST continued without a final body callback");
        if let Err(e) = parse_strict(x.upstream(), deciding.limits.max_json_depth) {
            panic!(
                "forwarded request body is not strict JSON ({e:?}): {:?}",
                String::from_utf8_lossy(x.upstream())
            );
        }
        check_forwarded_names(x.upstream(), deciding.limits.max_json_depth);

        // The same request through THE decision.
        let head = head_of(
            &sent,
            &sent_repeated,
            &policy,
            request.is_empty() && !trailers,
            x.host.now_ms,
        );
        let same_jwt = deciding.identity.jwt_payload_header == policy.identity.jwt_payload_header;
        let inputs = IdentityInputs {
            authorization: sent.get("authorization").cloned(),
            jwt_payload: policy
                .identity
                .jwt_payload_header
                .as_deref()
                .filter(|_| same_jwt)
                .and_then(|h| sent.get(h).cloned()),
            peer_uri_san: None,
        };
        let dry_run = deciding.mode == Mode::DryRun;
        let mut identity = identity::resolve(&deciding.identity, &inputs);
        if dry_run && head.repeated_header.is_none() {
            identity = identity.or_else(|_| Ok(verdict::anonymous()));
        }
        match verdict::judge(&deciding, &identity, &head, &mcp_firewall::catalogue::pins::NothingSeen, request) {
            Judgement::Head(v) => panic!("forwarded a POST refused on its headers: {v:?}"),
            Judgement::Body(v) => {
                let rewritten = match &v.outcome {
                    BodyOutcome::Refuse(r) => panic!("forwarded a body refused before policy: {r:?}"),
                    _ if v.killed => panic!("forwarded a body the kill switch refused"),
                    BodyOutcome::Deny(r) | BodyOutcome::DlpBlock(r) if !dry_run => {
                        panic!("forwarded a body the verdict refused: {r:?}")
                    }
                    BodyOutcome::Forward { rewritten: Some(b) } if !dry_run => b.as_slice(),
                    _ => request,
                };
                assert!(
                    x.upstream() == rewritten,
                    "the server read {:?}, the verdict forwards {:?}",
                    String::from_utf8_lossy(x.upstream()),
                    String::from_utf8_lossy(rewritten)
                );
                if let (false, Ok(caller)) = (dry_run, identity) {
                    enforced_lists = Some((v.plan.lists.clone(), caller));
                }
            }
        }
    }

    // Response side: the upstream's answer (or, with bit 7, whatever Envoy
    // would pass through after a local reply).
    if let Some(side) = response_side.filter(|_| x.forwarded() || flags & 0x80 != 0) {
        let (response_block, body) = split_block(side);
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let ct = pick(
            *resp,
            &[
                Some("application/json"),
                Some("text/event-stream"),
                Some("text/plain"),
                Some("Application/JSON; charset=utf-8"),
            ],
        )
        .unwrap_or_default();
        headers.insert("content-type".into(), ct.into());
        if let Some(s) = pick(resp >> 2, &[Some("200"), Some("202"), Some("500"), None]) {
            headers.insert(":status".into(), s.into());
        }
        if resp & 0x40 != 0 {
            headers.insert("mcp-session-id".into(), "session-2".into());
        }
        for (name, value) in response_block {
            match value {
                Some(v) => headers.insert(name, v),
                None => headers.remove(&name),
            };
        }
        let mut answer = Response::new(body).chunk(usize::from(*resp_chunk));
        for (k, v) in &headers {
            answer = answer.header(k, v);
        }
        if flags & 0x10 != 0 && !body.is_empty() {
            answer = answer.trailers();
        }
        x.respond(answer);
        if body.is_empty() {
            // Headers that end the stream: no callback follows to release them.
            assert_eq!(
                x.flows.response_headers,
                Some(Flow::Continue),
                "the headers of a response without a body were held"
            );
        } else {
            assert_eq!(x.flows.response(), Flow::Continue, "the last response callback held data back");
            assert!(x.host.response_chunk.is_empty(), "response bytes never sent downstream");
        }
        let out = x.downstream();
        if replied {
            assert_eq!(out, body, "the response to a local reply was changed");
        }
        let ct_now = x
            .host
            .response_headers
            .get("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        if out != body {
            if ct_now == "application/json" {
                if let Err(e) = serde_json::from_slice::<Value>(out) {
                    panic!(
                        "rewritten JSON response is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(out)
                    );
                }
            } else if ct_now == "text/event-stream" {
                let upstream = sse_events(body);
                for ev in sse_events(out) {
                    if upstream.contains(&ev) {
                        continue;
                    }
                    // An event with no data is never dispatched by a client
                    // (the filter drops a sensitive `id`/`event` from one).
                    let ok = parse_event(&ev).is_some_and(|e| {
                        e.data
                            .as_deref()
                            .is_none_or(|d| serde_json::from_str::<Value>(d).is_ok())
                    });
                    assert!(
                        ok,
                        "rewritten SSE event with data that is not JSON: {:?}",
                        String::from_utf8_lossy(&ev)
                    );
                }
            }
        }
        // A list answer the client reads, wherever the filter let it through.
        if let Some((lists, caller)) = enforced_lists.as_ref().filter(|(l, _)| !l.is_empty()) {
            // Read as the client reads it: by the content type it receives
            // (an event stream's lines that are no `data:` field are ignored).
            let mut docs: Vec<Value> = Vec::new();
            if ct_now == "application/json" {
                docs.extend(serde_json::from_slice::<Value>(out).ok());
            } else if ct_now == "text/event-stream" {
                for ev in sse_events(out) {
                    if let Some(d) = parse_event(&ev).and_then(|e| e.data) {
                        if let Ok(doc) = serde_json::from_str::<Value>(&d) {
                            docs.push(doc);
                        }
                    }
                }
            }
            for doc in &docs {
                check_list_answer(doc, lists, &deciding, caller);
            }
        }
    }
    x.done();
    check_reply(&x.host);
    if std::env::var_os("FUZZ_TRACE").is_some() {
        // For whoever writes a seed: what the exchange came to.
        let reply = x.reply().map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
        eprintln!(
            "reply: {reply:?}\nupstream: {:?}\ndownstream: {:?}",
            String::from_utf8_lossy(x.upstream()),
            String::from_utf8_lossy(x.downstream())
        );
    }
    if deciding.audit.is_none() && policy.audit.is_none() {
        assert!(x.host.audited.is_empty(), "audited without an audit section");
    }
});
