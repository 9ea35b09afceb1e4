//! The response side of one exchange: what the server answers is read as the
//! client will read it, and every answer the request side planned a check for
//! is filtered (lists) or scanned (results). What cannot be read is replaced
//! by the documented refusal (`response-unfilterable`), never passed on.
//!
//! The rewriter owns its state; what it counted (entries removed, refusals,
//! DLP findings in results) is taken by the filter after each callback for
//! the host's counters and the exchange's audit.

use super::host_write_failed;
use crate::catalogue::pins::ListCheck;
use crate::catalogue::OtherTools;
use crate::decide::Catalogue;
use crate::dlp::{Action as DlpAction, Finding};
use crate::host::{Flow, Host, HostError};
use crate::identity::Caller;
use crate::json::parse_strict_folded;
use crate::jsonrpc::{self, id_key};
use crate::media_type;
use crate::policy::{CompiledPolicy, Mode};
use crate::reply;
use crate::response::{
    case_variant_in_answer, check_result_cap, rewrite_message, CapExceeded, ListInspection,
    ResponsePlan, ResultInspection,
};
use crate::sse::{parse_event, SseFramer};
use serde_json::{json, Value};
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Pass,
    Json,
    Sse,
    /// An answer in a content type, charset or coding we cannot read.
    Refuse,
    /// The stream broke a limit (or a write failed): everything after is dropped.
    Broken,
}

/// Why every answer of a response is replaced, whatever it holds.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `session-binding`: the session the answer issues could not be bound.
    SessionBinding(&'static str),
    /// `response-unfilterable`: the head says the response is no answer.
    Unfilterable(&'static str),
}

/// What the rewriter counted since it was last asked.
#[derive(Debug, Default)]
pub(crate) struct ResponseCounts {
    pub removed_entries: u64,
    pub unfilterable: u64,
    /// DLP findings in answers: (request id key, findings, action, the
    /// member scanned: "result" or "error").
    pub result_findings: Vec<(String, Vec<Finding>, DlpAction, &'static str)>,
    /// What pins found in `tools/list` answers: (request id key, check).
    pub pin_checks: Vec<(String, ListCheck)>,
    /// What the catalogue checks found in `tools/list` answers and in
    /// results: (request id key, inspection).
    pub catalogue_lists: Vec<(String, ListInspection)>,
    pub catalogue_results: Vec<(String, ResultInspection)>,
    /// The annotation classes of the `tools/list` entries read (only when a
    /// rule selects `intents`), remembered per upstream.
    pub intents: Vec<(String, crate::catalogue::intents::IntentSet)>,
    /// The schemas the `tools/list` entries read declared (only when
    /// `schemas` is on), remembered per upstream.
    pub schemas_declared: Vec<crate::catalogue::schemas::Declared>,
    /// Results whose `structuredContent` failed its `outputSchema`:
    /// (request id key, finding, whether the result was replaced).
    pub schema_results: Vec<(String, crate::catalogue::schemas::SchemaFinding, bool)>,
    /// Answers over their size cap: (request id key, what was found).
    pub result_caps: Vec<(String, CapExceeded)>,
}

impl ResponseCounts {
    /// Nothing was counted, found or listed: what most answers leave.
    /// Destructured whole, so a field added to the struct must be named here.
    pub fn is_empty(&self) -> bool {
        let ResponseCounts {
            removed_entries,
            unfilterable,
            result_findings,
            pin_checks,
            catalogue_lists,
            catalogue_results,
            intents,
            schemas_declared,
            schema_results,
            result_caps,
        } = self;
        *removed_entries == 0
            && *unfilterable == 0
            && result_findings.is_empty()
            && pin_checks.is_empty()
            && catalogue_lists.is_empty()
            && catalogue_results.is_empty()
            && intents.is_empty()
            && schemas_declared.is_empty()
            && schema_results.is_empty()
            && result_caps.is_empty()
    }
}

pub(crate) struct ResponseRewriter {
    /// The event being read is one clients ignore (its type is not
    /// `message`): it is filtered, but the schemas and annotations it lists
    /// are not remembered (pins' and the catalogue checks' findings still
    /// are: they can only hold more calls).
    reading_ignored_event: bool,
    policy: Rc<CompiledPolicy>,
    caller: Option<Rc<Caller>>,
    plan: ResponsePlan,
    /// Ids of the requests forwarded upstream (what answers may carry).
    forwarded_ids: Vec<Value>,
    /// Whether the response is read at all (a plan, or a stream of replays).
    armed: bool,
    mode: Reading,
    framer: SseFramer,
    /// Bytes of the response seen (for the audit).
    seen: usize,
    /// Bytes of a JSON response Envoy holds for us, and whether it was finished.
    json_buffered: usize,
    json_done: bool,
    /// A response rewrite failed and the stream was reset: nothing more passes.
    abandoned: bool,
    /// The response's `content-length` is past `limits.max_response_bytes`.
    declared_too_large: bool,
    /// Every answer is replaced by this refusal: the session the answer
    /// issues could not be bound to its caller, or the response is no
    /// answer at all (a redirect).
    refusal: Option<Refusal>,
    /// The public OAuth metadata GET: only a plain JSON document may come
    /// back, never an event stream or a JSON-RPC message.
    metadata_only: bool,
    /// The other servers' tool names, for `shadowing` in list answers.
    others: OtherTools,
    counts: ResponseCounts,
}

impl ResponseRewriter {
    pub fn new(policy: Rc<CompiledPolicy>) -> Self {
        let cap = policy.limits.max_response_bytes;
        ResponseRewriter {
            reading_ignored_event: false,
            policy,
            caller: None,
            plan: ResponsePlan::default(),
            forwarded_ids: Vec::new(),
            armed: false,
            mode: Reading::Pass,
            framer: SseFramer::new(cap),
            seen: 0,
            json_buffered: 0,
            json_done: false,
            abandoned: false,
            declared_too_large: false,
            refusal: None,
            metadata_only: false,
            others: OtherTools::default(),
            counts: ResponseCounts::default(),
        }
    }

    /// The policy Envoy configured since the exchange began decides it (see
    /// the request gate): its limits and lists apply to the answers. Called
    /// before anything of the response was read.
    pub fn adopt(&mut self, policy: Rc<CompiledPolicy>) {
        self.framer = SseFramer::new(policy.limits.max_response_bytes);
        self.policy = policy;
    }

    /// Replace whatever the server answers with a `session-binding` refusal
    /// (the request gate removed the session id it issued).
    pub fn refuse_answers(&mut self, why: &'static str) {
        self.armed = true;
        self.refusal = Some(Refusal::SessionBinding(why));
    }

    /// Replace whatever body the response has with the `response-unfilterable`
    /// refusal: its head already says it is no MCP answer (a redirect).
    pub fn refuse_unreadable(&mut self, why: &'static str) {
        self.armed = true;
        self.refusal = Some(Refusal::Unfilterable(why));
    }

    /// The public GET of the OAuth metadata (no identity): its answer must be
    /// the metadata document, not MCP traffic (a server serving its MCP
    /// endpoint on every path would answer MCP there).
    pub fn expect_metadata(&mut self) {
        self.armed = true;
        self.metadata_only = true;
    }

    /// The stream was reset: hold every byte that still comes.
    pub fn abandon_all(&mut self) {
        self.mode = Reading::Broken;
        self.abandoned = true;
    }

    /// The request was forwarded with this plan for its answers.
    pub fn expect_answers(&mut self, caller: Rc<Caller>, plan: ResponsePlan, ids: Vec<Value>) {
        // Read even when nothing is planned for this request's own answer:
        // its stream may carry answers to the caller's other requests, which
        // the TS and Go SDKs take by id whatever stream brings them (a
        // `ping`'s stream, under `dlp.responses: off`, delivered another
        // call's unchecked result and a rug-pulled list; thirty-fourth
        // review). An exchange of notifications or client responses is read
        // too when DLP or the result checks are on (`server_messages`): the
        // TypeScript SDK puts a failed POST's body in its caller's error.
        self.armed = !plan.is_empty() || !ids.is_empty();
        self.caller = Some(caller);
        self.plan = plan;
        self.plan.no_requests = ids.is_empty();
        self.forwarded_ids = ids;
    }

    /// A GET or DELETE was forwarded: its response may carry answers to
    /// requests decided in other exchanges (a server with an event store
    /// replays them when a GET names a `Last-Event-ID`). Their plans are not
    /// ours to know, so every answer in it is unfilterable; notifications and
    /// server requests (earlier revisions send them on the GET stream) pass,
    /// DLP-scanned like those on a scanned call's stream.
    pub fn expect_replays(&mut self, caller: Rc<Caller>) {
        self.armed = true;
        self.caller = Some(caller);
        self.plan.server_messages = self.policy.dlp.responses != DlpAction::Off;
        self.plan.inspected_server_messages = self.policy.catalogue.inspects_results();
        self.plan.no_requests = true;
    }

    /// Whether a `tools/list` answer will be read by the catalogue checks
    /// (then the filter looks up the other servers' names first).
    pub fn inspects_lists(&self) -> bool {
        self.plan
            .catalogue_lists
            .iter()
            .any(|(_, c)| *c == Catalogue::Tools)
    }

    /// The other servers' tool names, read by the filter from shared data.
    pub fn set_others(&mut self, others: OtherTools) {
        self.others = others;
    }

    pub fn bytes_seen(&self) -> usize {
        self.seen
    }

    /// Nothing counted since the last [`Self::take_counts`].
    pub fn counted_nothing(&self) -> bool {
        self.counts.is_empty()
    }

    /// What was counted since the last call.
    pub fn take_counts(&mut self) -> ResponseCounts {
        std::mem::take(&mut self.counts)
    }

    fn dry_run(&self) -> bool {
        self.policy.mode == Mode::DryRun
    }

    /// `Pause` holds the response headers while a JSON body is read whole:
    /// the client then gets the answer or the refusal, never a head whose
    /// body is cut off. (A body past the listener's buffer limit makes Envoy
    /// answer 500 itself while the headers are still held; with them sent,
    /// it could only reset the stream mid-body.)
    pub fn on_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        if !self.armed {
            return Flow::Continue;
        }
        if end_of_stream {
            // Headers that end the response (`Content-Length: 0`, a bodiless
            // 202 or 500) carry no answer to filter or scan, and no body
            // callback will come to release them: held, Envoy would stall the
            // client until the stream idle timeout.
            self.mode = Reading::Pass;
            return Flow::Continue;
        }
        // A declared length past the limit is refused before one byte is held
        // (read before the length is removed below).
        self.declared_too_large = host
            .response_header("content-length")
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| n > self.policy.limits.max_response_bytes);
        let content_type = host.response_header("content-type").unwrap_or_default();
        // A charset other than UTF-8 would make the client read other text than
        // the one we filtered and scanned: such a body is one we cannot read.
        // Nor can we read a body in a content coding: the client inflates
        // what we would only see compressed (a stored deflate block can even
        // look like text). The request asked for none (see the request gate).
        let encoded = host
            .response_header("content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let readable = media_type::parse(&content_type)
            .ok()
            .filter(|m| m.is_utf8() && !encoded);
        self.mode = match readable.as_ref().map(|m| m.essence.as_str()) {
            _ if self.refusal.is_some() => Reading::Refuse,
            Some("text/event-stream") if self.metadata_only => Reading::Refuse,
            Some("application/json") => Reading::Json,
            Some("text/event-stream") => Reading::Sse,
            // Whatever the status: an error page is text a client shows too
            // (the TypeScript SDK puts a failed POST's body in its error), so
            // one the filter cannot read is replaced (an empty one passes).
            _ => Reading::Refuse,
        };
        if self.mode != Reading::Pass && !self.dry_run() {
            // The body may change length: a stale content-length would make the
            // client wait for bytes that never come. (Dry-run never changes it.)
            if let Err(e) = host.set_response_header("content-length", None) {
                self.abandon(host, "the response's content-length", &e);
            } else if self.mode == Reading::Refuse {
                // The refusal replaces the body in plain JSON: a content coding
                // left on it would make the client inflate plain text.
                let plain = match encoded {
                    true => host.set_response_header("content-encoding", None),
                    false => Ok(()),
                };
                if let Err(e) = plain.and_then(|()| {
                    host.set_response_header("content-type", Some("application/json"))
                }) {
                    self.abandon(host, "the response's content-type or content-encoding", &e);
                }
            }
        }
        match self.mode {
            // A host that cannot hold headers (no allow_on_headers_stop_iteration,
            // as under Istio's WasmPlugin) would never hand us the body: there
            // the head goes now and the body alone is held. A body past
            // Envoy's buffer then ends in a reset stream, not a clean 500.
            Reading::Json | Reading::Refuse if !self.abandoned && self.policy.hold_headers => {
                Flow::Pause
            }
            _ => Flow::Continue,
        }
    }

    pub fn on_body(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        match self.mode {
            // SSE counts its own chunks; a buffered JSON body arrives whole at the end.
            Reading::Sse => {}
            Reading::Json | Reading::Refuse if end_of_stream => self.seen = body_size,
            Reading::Json | Reading::Refuse => {}
            Reading::Pass | Reading::Broken => self.seen = self.seen.saturating_add(body_size),
        }
        let flow = match self.mode {
            Reading::Pass => Flow::Continue,
            Reading::Json | Reading::Refuse => self.json_body(host, body_size, end_of_stream),
            Reading::Sse => self.sse_body(host, body_size, end_of_stream),
            Reading::Broken => {
                self.replace_body(host, body_size, b"");
                Flow::Continue
            }
        };
        if self.abandoned {
            // The rewrite failed and the stream was reset: hold every byte.
            return Flow::Pause;
        }
        flow
    }

    /// Response trailers end the stream without a final body callback: finish a
    /// buffered JSON (or refused) body here (a body still held would otherwise
    /// be flushed unchanged). An unfinished SSE event is dropped, not forwarded.
    pub fn on_trailers(&mut self, host: &mut dyn Host) -> Flow {
        if !self.json_done {
            let size = self.json_buffered;
            match self.mode {
                Reading::Json => self.finish_json(host, size),
                Reading::Refuse => self.finish_refused(host, size),
                _ => {}
            }
        }
        if self.abandoned {
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// A response rewrite the plan requires could not be applied: the stream
    /// is reset (the client sees an error, not what was not filtered) and
    /// whatever else the server sends is dropped.
    fn abandon(&mut self, host: &mut dyn Host, what: &str, e: &HostError) {
        host_write_failed(host, what, e);
        host.reset_stream();
        self.mode = Reading::Broken;
        self.abandoned = true;
    }

    /// Replace (part of) the response body, except in dry-run: dry-run never
    /// changes what the caller sees, so a response the filter would refuse as
    /// uninspectable is only counted (`response_unfilterable`) and forwarded.
    fn replace_body(&mut self, host: &mut dyn Host, size: usize, bytes: &[u8]) {
        if self.dry_run() {
            return;
        }
        if let Err(e) = host.set_response_body(size, bytes) {
            self.abandon(host, "the response body", &e);
        }
    }

    fn unfilterable(&mut self, why: &str) -> Value {
        self.unfilterable_for(why, None)
    }

    /// The refusal that replaces what cannot be inspected. It echoes the
    /// request id when the exchange had exactly one, else the id of the one
    /// answer it replaces (a replayed answer on a GET stream), so the client
    /// can match the refusal to its request.
    fn unfilterable_for(&mut self, why: &str, answer_id: Option<&Value>) -> Value {
        self.counts.unfilterable += 1;
        let id = match self.forwarded_ids.as_slice() {
            [one] => Some(one),
            [] => answer_id,
            _ => None,
        };
        reply::error_object(
            id,
            reply::DENIED,
            why,
            Some(json!({"rule": "response-unfilterable", "reason": why})),
        )
    }

    fn json_body(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        if self.mode == Reading::Refuse {
            // Hold the body and answer once, at its end (or at the trailers),
            // like a JSON body; past the size limit, answer now.
            if !end_of_stream && body_size <= self.policy.limits.max_response_bytes {
                self.json_buffered = body_size;
                return Flow::Pause;
            }
            self.finish_refused(host, body_size);
            return Flow::Continue;
        }
        if body_size > self.policy.limits.max_response_bytes || self.declared_too_large {
            let err = self.unfilterable("response larger than limits.max_response_bytes");
            self.replace_body(host, body_size, err.to_string().as_bytes());
            self.mode = Reading::Broken;
            return Flow::Continue;
        }
        if !end_of_stream {
            self.json_buffered = body_size;
            return Flow::Pause;
        }
        self.finish_json(host, body_size);
        Flow::Continue
    }

    /// The whole buffered JSON body is here: rewrite it, or refuse it if it
    /// cannot be read (never forward what was not inspected).
    fn finish_json(&mut self, host: &mut dyn Host, body_size: usize) {
        self.json_done = true;
        let out = match host.response_body(body_size) {
            Some(bytes) => self.rewrite_document(&bytes),
            None => Some(
                self.unfilterable("response body unavailable")
                    .to_string()
                    .into_bytes(),
            ),
        };
        if let Some(out) = out {
            self.replace_body(host, body_size, &out);
        }
    }

    /// A 2xx answer in a content type the filter cannot read: replace the
    /// whole held body with the refusal, drop whatever else comes.
    fn finish_refused(&mut self, host: &mut dyn Host, body_size: usize) {
        self.json_done = true;
        if body_size == 0 {
            // Nothing to read, nothing to refuse (a session's DELETE answered
            // 200 with no body and no content type).
            self.mode = Reading::Broken;
            return;
        }
        let err = match self.refusal {
            Some(Refusal::SessionBinding(why)) => reply::error_object(
                self.forwarded_ids.first(),
                reply::DENIED,
                why,
                Some(json!({"rule": "session-binding", "reason": why})),
            ),
            Some(Refusal::Unfilterable(why)) => self.unfilterable(why),
            None => self.unfilterable("an answer in a content type the filter cannot inspect"),
        };
        self.replace_body(host, body_size, err.to_string().as_bytes());
        self.mode = Reading::Broken;
    }

    /// Rewrite a server JSON-RPC document; `None` = forward unchanged.
    fn rewrite_document(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        // Folded: two members one to a case-insensitive client are refused too.
        let Ok(mut doc) = parse_strict_folded(bytes, self.policy.limits.max_json_depth) else {
            let err = self.unfilterable("server response is not strict JSON");
            return Some(err.to_string().into_bytes());
        };
        if self.metadata_only {
            // The metadata is a plain JSON object (RFC 9728 §3.2); a JSON-RPC
            // message here is the MCP endpoint answering without identity.
            let is_rpc = |v: &Value| v.as_object().is_some_and(|o| o.contains_key("jsonrpc"));
            let rpc = is_rpc(&doc) || doc.as_array().is_some_and(|a| a.iter().any(is_rpc));
            return rpc.then(|| {
                self.unfilterable("a JSON-RPC message answering the public metadata path")
                    .to_string()
                    .into_bytes()
            });
        }
        // A JSON-RPC message is an object, a batch a non-empty array of them.
        // Anything else holds no message the checks read, yet a client's
        // parse error quotes it back to its caller (the Python SDK's
        // `input_value='ghp_…'` for a body that is one string; the attack on
        // the member check): refused, not passed unread.
        let shaped = match &doc {
            Value::Object(_) => true,
            Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_object),
            _ => false,
        };
        if !shaped {
            let err =
                self.unfilterable("server response is not a JSON-RPC message or a batch of them");
            return Some(err.to_string().into_bytes());
        }
        // A batch answer (an array) carries several messages in one text:
        // each is then measured alone (see `compact_len`).
        let batch = doc.is_array();
        let objects = jsonrpc::response_objects(&mut doc);
        if let Some(why) = objects
            .iter()
            .find_map(|m| case_variant_in_answer(&self.plan, m))
        {
            return Some(self.unfilterable(&why).to_string().into_bytes());
        }
        // An answer we cannot tie to a request of this exchange is one whose
        // plan we do not know: `"5"` or `5.0` for id 5 (a client matching
        // `Number(id)` takes it), or no id at all. Never passed on unchecked.
        let unmatched: Vec<Option<Value>> = objects
            .iter()
            .filter(|m| {
                !m.contains_key("method")
                    && !jsonrpc::is_anonymous_error(m)
                    && !m
                        .get("id")
                        .is_some_and(|id| self.forwarded_ids.contains(id))
            })
            .map(|m| m.get("id").cloned())
            .collect();
        if !unmatched.is_empty() {
            let only_id = match unmatched.as_slice() {
                [one] => one.as_ref(),
                _ => None,
            };
            let why = "server answer whose id matches no request of this exchange";
            return Some(self.unfilterable_for(why, only_id).to_string().into_bytes());
        }
        let caller = self.caller.clone()?;
        let caller = caller.as_ref();
        let mut changed = false;
        let mut marked_private = false;
        for msg in objects {
            // The envelope of a server message is text too: a server request's
            // id or a notification's method carrying sensitive data (second
            // review M2) replaces the whole message; there is nothing of it
            // a client could use after redaction.
            if self.plan.server_messages
                && !self.dry_run()
                && msg.contains_key("method")
                && ["id", "method"].iter().any(|k| {
                    msg.get(*k)
                        .filter(|v| v.is_string())
                        .is_some_and(|v| !self.policy.dlp.scanner.scan_value(v).is_empty())
                })
            {
                let err = self.unfilterable_for(
                    "server message whose id or method carries sensitive data",
                    None,
                );
                *msg = err.as_object().cloned().unwrap_or_default();
                changed = true;
                continue;
            }
            // A notification or server request on the stream belongs to the
            // exchange's scanned call: its findings go to that call's audit
            // (on a GET stream there is none: "" names no request, so they
            // are only counted). So does an error with a null id or none,
            // which `rewrite_message` scans as answering a scanned call: keyed
            // by its own id, its findings were counted under "null" and
            // audited nowhere, or (no id) neither (a helper's attack,
            // eighteenth session).
            let server_message = msg.contains_key("method");
            let id = match server_message || jsonrpc::is_anonymous_error(msg) {
                true => Some(
                    self.plan
                        .scans
                        .first()
                        .or(self.plan.inspected_results.first().map(|(k, _)| k))
                        .cloned()
                        .unwrap_or_default(),
                ),
                false => msg.get("id").map(id_key),
            };
            // The size cap first: an answer over it is refused whole, so it
            // costs no schema check, DLP scan or catalogue read (in dry run
            // it is counted and audited, then read as any other).
            if !server_message && !self.plan.result_caps.is_empty() {
                let size = match batch {
                    false => bytes.len(),
                    true => compact_len(msg),
                };
                if let Some((id, over)) = check_result_cap(&self.policy, &self.plan, msg, size) {
                    let applied = over.applied;
                    self.counts.result_caps.push((id, over));
                    if applied {
                        changed = true;
                        continue;
                    }
                }
            }
            let mut r = rewrite_message(&self.policy, caller, &self.plan, &self.others, msg);
            changed |= r.changed;
            marked_private |= r.marked_private;
            if !self.reading_ignored_event {
                // What the client reads declares schemas and annotations; an
                // answer in an event the client ignores does not (thirty-first
                // review: an `event: decoy` list before the real one was
                // remembered in its place). The first answer read to a list
                // request is the only one that teaches its schemas.
                let lists = !self.plan.schema_lists.is_empty();
                if let Some(id) = msg.get("id").filter(|_| lists).map(id_key) {
                    if self.plan.schema_lists.contains(&id) {
                        let mut read = self.plan.schema_lists_read.borrow_mut();
                        if !read.contains(&id) {
                            read.push(id);
                        }
                    }
                }
                self.counts.intents.append(&mut r.intents);
                self.counts.schemas_declared.append(&mut r.schemas_declared);
            }
            if let (Some((f, applied)), Some(id)) =
                (r.schema_result.take(), msg.get("id").map(id_key))
            {
                self.counts.schema_results.push((id, f, applied));
            }
            if let (Some(check), Some(id)) = (r.pins.take(), msg.get("id").map(id_key)) {
                self.counts.pin_checks.push((id, check));
            }
            // A server request's id is the server's own: its findings go to
            // the exchange's call, as DLP's do.
            let answer_id = match server_message {
                true => id.clone(),
                false => msg.get("id").map(id_key),
            };
            if let Some(id) = answer_id {
                if let Some(i) = r.catalogue_list.take() {
                    self.counts.catalogue_lists.push((id.clone(), i));
                }
                if let Some(i) = r.catalogue_result.take() {
                    self.counts.catalogue_results.push((id, i));
                }
            }
            if let (Some(id), Some(action)) = (id, r.action) {
                self.counts
                    .result_findings
                    .push((id, r.findings, action, r.scanned));
            }
            self.counts.removed_entries += r.removed_entries as u64;
        }
        match (changed, marked_private) {
            (true, _) => Some(crate::json::to_bytes(&doc)),
            // A list marked private and nothing else: the mark spliced into
            // the server's text. Written out whole instead: a batch, a text
            // the splice does not read, and one with a number more precise
            // than the double it was decided as (a pin's digest is of the
            // double; written out, the client reads the double too, as every
            // list was read before the splice).
            (false, true) => {
                let lossy =
                    || crate::json::holds_double(&doc) && crate::json::has_lossy_number(bytes);
                let spliced = match batch || lossy() {
                    true => None,
                    false => crate::response::mark_private(bytes),
                };
                Some(spliced.unwrap_or_else(|| crate::json::to_bytes(&doc)))
            }
            (false, false) => None,
        }
    }

    fn sse_body(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        let chunk = host.response_body(body_size).unwrap_or_default();
        self.seen = self.seen.saturating_add(chunk.len());
        let mut events = match self.framer.push(&chunk) {
            Ok(evs) => evs,
            Err(_) => {
                self.mode = Reading::Broken;
                let err = self.unfilterable("server event larger than limits.max_response_bytes");
                let out = format!("event: message\ndata: {err}\n\n");
                self.replace_body(host, body_size, out.as_bytes());
                return Flow::Continue;
            }
        };
        if end_of_stream {
            let rest = self.framer.finish();
            if !rest.is_empty() {
                events.push(rest);
            }
        }
        let mut out = Vec::with_capacity(chunk.len());
        let cap = self.policy.limits.max_response_bytes;
        for raw in events {
            if raw.len() > cap {
                let err = self.unfilterable("server event larger than limits.max_response_bytes");
                out.extend(format!("event: message\ndata: {err}\n\n").into_bytes());
                continue;
            }
            out.extend(self.rewrite_event(&raw));
        }
        self.replace_body(host, body_size, &out);
        Flow::Continue
    }

    fn rewrite_event(&mut self, raw: &[u8]) -> Vec<u8> {
        // A line that starts with a byte order mark is a field we would not
        // read, but one BOM more at the stream's start and a client drops it
        // and reads the line as `data:` (the framer already dropped the first).
        if raw
            .split(|b| *b == b'\n' || *b == b'\r')
            .any(|line| line.starts_with(b"\xef\xbb\xbf"))
        {
            let err = self.unfilterable("server event with a byte order mark in it");
            return format!("event: message\ndata: {err}\n\n").into_bytes();
        }
        let Some(mut event) = parse_event(raw) else {
            let err = self.unfilterable("server event is not UTF-8");
            return format!("event: message\ndata: {err}\n\n").into_bytes();
        };
        // The event's id and name are the server's text too (a client keeps
        // the id and sends it back as Last-Event-ID): one carrying sensitive
        // data is dropped, a name becomes the default (second review M2).
        // So is every other line: clients ignore comments and unknown fields,
        // but the bytes reach whatever reads the stream (the attack on the
        // member check); a comment keeps its place as an empty one, which
        // still keeps an idle connection alive.
        let fields_changed = self.plan.server_messages && !self.dry_run() && {
            let scanner = &self.policy.dlp.scanner;
            let before = event.other_lines.len();
            let mut renamed = false;
            event.other_lines.retain_mut(|line| {
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                // A field's name is text too (a line without a colon is all name).
                let text = match field {
                    "id" | "event" => value,
                    _ => line.as_str(),
                };
                let found = !scanner
                    .scan_value(&Value::String(text.to_owned()))
                    .is_empty();
                if found && field == "event" {
                    *line = "event: message".to_owned();
                    renamed = true;
                    return true;
                }
                if found && field.is_empty() {
                    *line = ":".to_owned();
                    renamed = true;
                    return true;
                }
                !found
            });
            renamed || event.other_lines.len() != before
        };
        let Some(data) = event.data.as_deref().filter(|d| !d.trim().is_empty()) else {
            return match fields_changed {
                true => event.to_bytes(),
                false => raw.to_vec(),
            };
        };
        // Read as its name says after the renaming above: still filtered
        // (a client of its own may read any event), but it declares nothing.
        self.reading_ignored_event = !event.read_as_message();
        let rewritten = self.rewrite_document(data.as_bytes());
        self.reading_ignored_event = false;
        match rewritten {
            None if !fields_changed => raw.to_vec(),
            None => event.to_bytes(),
            Some(new) => {
                event.data = Some(String::from_utf8_lossy(&new).into_owned());
                event.to_bytes()
            }
        }
    }
}

/// The length of a message of a batch answer as compact JSON: the server's
/// text of one element is not kept apart from the array's, and what the
/// element holds (not how the server spaced it) is what a client reads.
/// Counted without building the text.
fn compact_len(msg: &serde_json::Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing into a counter cannot fail; a map of JSON values always serialises.
    let _ = serde_json::to_writer(&mut n, msg);
    n.0
}

#[cfg(test)]
mod counts_tests {
    use super::*;

    type Add = fn(&mut ResponseCounts);

    #[test]
    fn response_counts_are_empty_only_when_nothing_was_counted() {
        assert!(ResponseCounts::default().is_empty());
        let one_of_each: [(&str, Add); 5] = [
            ("a_removed_list_entry", |c| c.removed_entries = 1),
            ("an_unfilterable_answer", |c| c.unfilterable = 1),
            ("a_result_finding", |c| {
                c.result_findings
                    .push(("1".into(), Vec::new(), DlpAction::Block, "result"))
            }),
            ("a_pin_check", |c| {
                c.pin_checks.push(("1".into(), Default::default()))
            }),
            ("an_intent_set", |c| {
                c.intents.push(("tool".into(), Default::default()))
            }),
        ];
        for (name, add) in one_of_each {
            let mut counts = ResponseCounts::default();
            add(&mut counts);
            assert!(!counts.is_empty(), "{name}");
        }
    }
}
