//! The whole per-request state machine (`RequestFilter`) on the in-memory fake
//! host: request headers, the request body in chunks (or ended by trailers),
//! response headers, the response body in chunks (or ended by trailers), and
//! the log phase, under a few fixed policies. The exchange is driven by
//! `mcp_firewall::exchange`, the driver the filter's unit tests use.
//!
//! Input layout, chosen so seeds are easy to write by hand (five control bytes,
//! then the request body, a 0xFF byte, then the response body; 0xFF never
//! occurs in UTF-8, so a JSON body never needs it):
//! * byte 0: bits 0-1 the policy (`% 3`: demo.json as shipped; demo + DLP
//!   redact on requests, block on responses, batches evaluated, audit on;
//!   demo in dry-run with small limits, batches evaluated, audit closed),
//!   bit 2 the audit trail refuses (`audit_down`), bit 3 the request ends with
//!   trailers instead of an end-of-stream body callback, bit 4 the same for
//!   the response, bit 5 an `Mcp-Session-Id` request header, bit 6 a correct
//!   `Content-Length` request header, bit 7 drive the response side even after
//!   a local reply;
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
//! * the last response body callback never holds data back (Envoy would never
//!   send it), and after a local reply the filter leaves the response alone;
//! * whatever the filter rewrote in a JSON response (it differs from what the
//!   upstream sent) is valid JSON, and in an event stream every event that is
//!   not one of the upstream's, byte for byte, carries valid JSON data;
//! * without an audit section nothing is audited.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::exchange::{Exchange, Request, Response};
use mcp_firewall::host::fake::FakeHost;
use mcp_firewall::host::Flow;
use mcp_firewall::json::parse_strict;
use mcp_firewall::policy::{compile_str, CompiledPolicy};
use mcp_firewall::sse::{parse_event, SseFramer};
use serde_json::{json, Value};
use std::rc::Rc;

const DEMO: &str = include_str!("../../policies/demo.json");

fn compile_variant(patch: Value) -> Rc<CompiledPolicy> {
    let mut doc: Value = serde_json::from_str(DEMO).expect("policies/demo.json is JSON");
    if let (Some(d), Value::Object(p)) = (doc.as_object_mut(), patch) {
        d.extend(p);
    }
    match compile_str(doc.to_string().as_bytes()) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("fixed fuzz policy does not compile: {e:?}"),
    }
}

thread_local! {
    static POLICIES: [Rc<CompiledPolicy>; 3] = [
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
    ];
}

fn pick<'a>(bits: u8, options: &[Option<&'a str>; 4]) -> Option<&'a str> {
    options[usize::from(bits & 3)]
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

fuzz_target!(|data: &[u8]| {
    let [flags, req_chunk, hdr, resp, resp_chunk, rest @ ..] = data else {
        return;
    };
    let (request, response) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let policy = POLICIES.with(|p| p[usize::from(flags & 3) % 3].clone());

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

    let is_post = method == Some("POST");
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
    if flows.request() == Flow::Continue && is_post {
        assert!(!replied, "continued after a local reply");
        let decided_on_body = flows.request_trailers.is_none() && !flows.request_body.is_empty();
        assert!(decided_on_body, "a POST continued without a final body callback");
        if let Err(e) = parse_strict(x.upstream(), policy.limits.max_json_depth) {
            panic!(
                "forwarded request body is not strict JSON ({e:?}): {:?}",
                String::from_utf8_lossy(x.upstream())
            );
        }
    }

    // Response side: the upstream's answer (or, with bit 7, whatever Envoy
    // would pass through after a local reply).
    if let Some(body) = response.filter(|_| x.forwarded() || flags & 0x80 != 0) {
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
        let mut answer = Response::new(body).content_type(ct).chunk(usize::from(*resp_chunk));
        if let Some(s) = pick(resp >> 2, &[Some("200"), Some("202"), Some("500"), None]) {
            answer = answer.status(s);
        }
        if resp & 0x40 != 0 {
            answer = answer.header("mcp-session-id", "session-2");
        }
        if flags & 0x10 != 0 && !body.is_empty() {
            answer = answer.trailers();
        }
        x.respond(answer);
        assert_eq!(x.flows.response_headers, Some(Flow::Continue), "response headers held back");
        if !body.is_empty() {
            assert_eq!(x.flows.response(), Flow::Continue, "the last response callback held data back");
            assert!(x.host.response_chunk.is_empty(), "response bytes never sent downstream");
        }
        let out = x.downstream();
        if replied {
            assert_eq!(out, body, "the response to a local reply was changed");
        }
        if out != body {
            let ct_now = x
                .host
                .response_headers
                .get("content-type")
                .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
                .unwrap_or_default();
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
                    let data = parse_event(&ev).and_then(|e| e.data);
                    let ok = data
                        .as_deref()
                        .is_some_and(|d| serde_json::from_str::<Value>(d).is_ok());
                    assert!(
                        ok,
                        "rewritten SSE event without JSON data: {:?}",
                        String::from_utf8_lossy(&ev)
                    );
                }
            }
        }
    }
    x.done();
    check_reply(&x.host);
    if policy.audit.is_none() {
        assert!(x.host.audited.is_empty(), "audited without an audit section");
    }
});
