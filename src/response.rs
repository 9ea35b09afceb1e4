//! Response-side rewriting of server messages: catalogue filtering of
//! `tools/list`, `prompts/list` and `resources/list` results per caller,
//! DLP on every answer a scanned exchange carries (lists after filtering),
//! and the catalogue checks (poisoned definitions in `tools/list`, injected
//! text in results: docs/catalogue.md).

use crate::catalogue::intents::{entry_annotations, Annotated, IntentSet};
use crate::catalogue::pins::{check_result, entry_names, reads_as, ListCheck, PinMode};
use crate::catalogue::{
    content_texts, wrap_text, Check, DescriptionAction, Finding as CatalogueFinding, OtherTools,
    ResultAction,
};
use crate::decide::{visible, Catalogue};
use crate::dlp::{self, Action, Finding};
use crate::identity::Caller;
use crate::json::case_variant;
use crate::jsonrpc::{id_key, is_anonymous_error};
use crate::policy::Cap;
use crate::policy::CompiledPolicy;
use crate::policy::Mode;
use crate::rule_id::RuleId;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What the response to one request needs done to it, learnt on the request side.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResponsePlan {
    /// What the output-schema checks of this response have spent together
    /// (every result of a batch, every copy a stream repeats).
    pub schema_budget: std::cell::Cell<crate::catalogue::schema::CheckBudget>,
    /// What compiling the schemas of this response's lists has spent
    /// together: a stream may repeat one list's answer, and each copy had a
    /// budget of its own (twenty-ninth review: 1,000 copies of a list of
    /// fresh patterns held a worker 47 s).
    pub compile_budget: std::cell::Cell<crate::catalogue::schemas::CompileBudget>,
    /// Ids (see `jsonrpc::id_key`) of list requests whose results must be filtered.
    pub lists: Vec<(String, Catalogue)>,
    /// Ids of requests whose answers are scanned (every request but calls of
    /// exempt tools; list answers after filtering), when `dlp.responses` is
    /// not `off`.
    pub scans: Vec<String>,
    /// Scan the notifications and server requests of the response (a
    /// scanned call's stream, or a GET stream: what a server sends outside
    /// any call is text the client reads too).
    pub server_messages: bool,
    /// Read the text of server requests on the response stream
    /// (`sampling/createMessage`, `elicitation/create`) with the catalogue
    /// result checks: it goes to the client's model or its user.
    pub inspected_server_messages: bool,
    /// Ids of `completion/complete` requests whose `ref` names a prompt,
    /// resource or template the caller may not see: their values are emptied,
    /// as the entry is removed from its list.
    pub hidden_completions: Vec<String>,
    /// No request of this exchange is answered in its response (a GET or
    /// DELETE stream, a POST of notifications or client answers), yet DLP
    /// scans an error there that names no request: a client may take it as
    /// an answer (the Python SDK, as the one to the request whose stream it
    /// resumed) or show it (the TypeScript SDK's error for a failed POST).
    pub no_requests: bool,
    /// Ids of `tools/list` requests whose answers are checked against
    /// `pins` (in dry run too, where lists are not filtered), with whether
    /// the request asked for the first page (named no cursor).
    pub pinned_lists: Vec<(String, bool)>,
    /// Ids of list requests (`tools/list`, `prompts/list`, `resources/list`,
    /// `resources/templates/list`) whose answers the catalogue checks read,
    /// with which list it is (every page; in dry run too, where nothing is
    /// removed).
    pub catalogue_lists: Vec<(String, Catalogue)>,
    /// Ids of requests whose results the catalogue checks read, with where
    /// the result's text is.
    pub inspected_results: Vec<(String, ResultKind)>,
    /// `tools/call` requests whose `structuredContent` is checked against
    /// the tool's declared `outputSchema` (`schemas.output` not `off`).
    pub schema_results: Vec<SchemaResult>,
    /// Ids of `tools/list` requests whose answers' schemas are remembered
    /// (`schemas` on; every page, in dry run too).
    pub schema_lists: Vec<String>,
    /// Of `schema_lists`, the ids whose answer has taught the filter (the
    /// response rewriter marks them): a stream may repeat an answer (a
    /// protocol error the filter passes on as it does any other), but only
    /// the first the client reads settles its request, and only that one
    /// teaches (thirtieth review: each 7 MB copy of a list of large schemas
    /// was stored again, ~0.47 s of a worker each).
    pub schema_lists_read: std::cell::RefCell<Vec<String>>,
    /// Ids of `tools/call` (and `tasks/result`) requests whose answers are
    /// held to a size cap (`limits.result_caps`, `limits.max_result_bytes`),
    /// with the tool and the cap.
    pub result_caps: Vec<(String, CappedAnswer)>,
}

/// The size cap one answer is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedAnswer {
    /// The tool called; `None` for `tasks/result`, whose task id names no
    /// tool (held to the policy's smallest cap).
    pub tool: Option<String>,
    pub cap: Cap,
}

/// An answer larger than its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapExceeded {
    pub answer: CappedAnswer,
    /// The size counted: the message as the server sent it.
    pub bytes: usize,
    /// The answer was replaced by the refusal (not in dry run).
    pub applied: bool,
}

impl CapExceeded {
    /// What the caller and the audit read: the cap, where it is set and the
    /// size, never a byte of the content.
    pub fn reason(&self) -> String {
        let what = match &self.answer.tool {
            Some(tool) => format!("the result of {tool}"),
            None => "a task's result (held to the smallest cap: a task names no tool)".to_owned(),
        };
        format!(
            "{what} is {} bytes, over its cap of {} bytes ({})",
            self.bytes,
            self.answer.cap.max_bytes,
            self.answer.cap.source.path()
        )
    }

    /// The `error` member that replaces the answer.
    pub fn error(&self) -> Value {
        let reason = self.reason();
        serde_json::json!({
            "code": crate::reply::DENIED,
            "message": format!("result refused: {reason}"),
            "data": {
                "rule": RuleId::ResultCap.as_str(),
                "reason": reason,
                "tool": self.answer.tool,
                "max_bytes": self.answer.cap.max_bytes,
                "bytes": self.bytes,
            },
        })
    }
}

/// Hold one server answer of `bytes` bytes to the size cap the plan gives
/// its request: a larger answer (a result or an error: both are text the
/// model reads) is replaced by a -32010 error (rule `result-cap`), except in
/// dry run. An error with a null id answers the exchange without naming a
/// request: it is held to the smallest cap of the exchange's capped
/// requests. Runs before DLP and the catalogue checks, so an oversized
/// answer costs no scan. `Some((request id key, what was found))` when the
/// answer is over its cap.
pub fn check_result_cap(
    policy: &CompiledPolicy,
    plan: &ResponsePlan,
    msg: &mut Map<String, Value>,
    bytes: usize,
) -> Option<(String, CapExceeded)> {
    let (id, answer) = match msg.get("id").map(id_key) {
        _ if is_anonymous_error(msg) => plan
            .result_caps
            .iter()
            .min_by_key(|(_, a)| a.cap.max_bytes)?,
        Some(id) => plan.result_caps.iter().find(|(k, _)| *k == id)?,
        None => return None,
    };
    if bytes <= answer.cap.max_bytes {
        return None;
    }
    let applied = policy.mode != Mode::DryRun;
    let over = CapExceeded {
        answer: answer.clone(),
        bytes,
        applied,
    };
    if applied {
        msg.remove("result");
        msg.insert("error".into(), over.error());
    }
    Some((id.clone(), over))
}

/// A `tools/call` whose result is held to its tool's `outputSchema`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaResult {
    /// The request's id (`jsonrpc::id_key`).
    pub id: String,
    pub tool: String,
    /// What was known of the tool's schemas when the call went out.
    pub known: crate::catalogue::schemas::Known,
    /// The call asked for a task (`params.task` an object, as the SDKs
    /// read it): its answer may be the task the server created instead of
    /// the tool's result.
    pub task: bool,
}

impl ResponsePlan {
    pub fn is_empty(&self) -> bool {
        !self.server_messages
            && !self.inspected_server_messages
            && self.lists.is_empty()
            && self.scans.is_empty()
            && self.hidden_completions.is_empty()
            && self.pinned_lists.is_empty()
            && self.catalogue_lists.is_empty()
            && self.inspected_results.is_empty()
            && self.schema_results.is_empty()
            && self.schema_lists.is_empty()
            && self.result_caps.is_empty()
    }
}

/// Which answer a result is, for the catalogue checks: where its text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// `tools/call` and `tasks/result` (a task's result is the call's):
    /// `content[].text`, embedded resources' text, `structuredContent`.
    Tool,
    /// `prompts/get`: `messages[].content` (text or an embedded resource).
    Prompt,
    /// `resources/read`: `contents[].text`, and `contents[].blob` of a
    /// text media type.
    Resource,
    /// `initialize`: the server's `instructions`, which clients put in the
    /// model's context.
    Initialize,
    /// A server request on a response stream: `sampling/createMessage`
    /// (`systemPrompt`, `messages[].content`) or `elicitation/create`
    /// (`message`). There is no answer to refuse: `block` withholds the text.
    ServerRequest,
}

impl ResultKind {
    pub fn of_method(method: &str) -> Option<ResultKind> {
        match method {
            "tools/call" | "tasks/result" => Some(ResultKind::Tool),
            "prompts/get" => Some(ResultKind::Prompt),
            "resources/read" => Some(ResultKind::Resource),
            "initialize" => Some(ResultKind::Initialize),
            _ => None,
        }
    }
}

/// A tool of a `tools/list` answer the catalogue checks found something in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedTool {
    /// The names a client could read the entry as (the first is `name`).
    pub names: Vec<String>,
    /// What the findings call for (`Remove` or `Flag`).
    pub action: DescriptionAction,
    /// Taken out of the list (not in dry run).
    pub removed: bool,
    pub findings: Vec<CatalogueFinding>,
}

/// What the catalogue checks found in one page of a `tools/list` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListInspection {
    /// Which list: only a `tools/list`'s removals are remembered (their
    /// calls refused); a prompt or resource is only taken out of its list.
    pub catalogue: Catalogue,
    /// The entries with findings (tools, prompts, resources or templates).
    pub tools: Vec<InspectedTool>,
    /// Every name the page listed (what its upstream serves).
    pub names: Vec<String>,
}

/// What the catalogue checks found in one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultInspection {
    /// Which answer it was (an initialize answer keeps its place: `block`
    /// drops its `instructions`).
    pub kind: ResultKind,
    /// What the findings call for (`Block`, `Wrap` or `Flag`).
    pub action: ResultAction,
    /// The result was changed (not in dry run, nor under `flag`).
    pub applied: bool,
    /// Pointers relative to the message (`/result/content/0/text`).
    pub findings: Vec<CatalogueFinding>,
}

/// Outcome of rewriting one server message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The message differs from the server's text (beyond `marked_private`).
    pub changed: bool,
    /// A list answer's `result` had no `cacheScope` and was given
    /// `"private"`: the one change a list always gets, which the rewriter
    /// can splice into the server's text instead of writing the whole
    /// document again ([`mark_private`]) when it is the only one.
    pub marked_private: bool,
    pub removed_entries: usize,
    /// DLP findings (paths relative to the scanned member), with what was done.
    pub findings: Vec<Finding>,
    pub action: Option<Action>,
    /// The member scanned: `"result"`, or `"error"` for an error answer.
    pub scanned: &'static str,
    /// What pins found in a `tools/list` answer (its removed entries are
    /// counted in `removed_entries` too).
    pub pins: Option<ListCheck>,
    /// What the catalogue checks found in a `tools/list` answer (its
    /// removed entries are counted in `removed_entries` too).
    pub catalogue_list: Option<ListInspection>,
    /// What they found in a result.
    pub catalogue_result: Option<ResultInspection>,
    /// The classes each `tools/list` entry's annotations gave (every
    /// entry, before the caller's view is cut; only when a rule selects
    /// `intents`): what the calls that follow are judged by.
    pub intents: Vec<(String, IntentSet)>,
    /// The schemas each `tools/list` entry declared (every entry, before
    /// the caller's view is cut; only when `schemas` is on): remembered per
    /// upstream for the calls that follow.
    pub schemas_declared: Vec<crate::catalogue::schemas::Declared>,
    /// A result whose `structuredContent` did not pass its tool's
    /// `outputSchema`, and whether it was replaced (enforced, not dry run).
    pub schema_result: Option<(crate::catalogue::schemas::SchemaFinding, bool)>,
}

/// Rewrite one server JSON-RPC message in place according to the plan.
/// `others`: the other servers' tool names, for `shadowing`.
pub fn rewrite_message(
    policy: &CompiledPolicy,
    caller: &Caller,
    plan: &ResponsePlan,
    others: &OtherTools,
    msg: &mut Map<String, Value>,
) -> Rewrite {
    let mut out = Rewrite::default();
    // A notification (`notifications/message`, `notifications/progress`...)
    // or a server request (`sampling/createMessage`, `elicitation/create`) on
    // the stream of a scanned call is text the client reads (and shows its
    // user) like the result: scanned whole. The 2026-07-28 revision says
    // such notifications "MUST relate to the originating client request"
    // (`basic/transports/streamable-http`, Receiving Messages), and earlier
    // revisions send server requests on that stream too.
    if msg.contains_key("method") {
        if plan.server_messages {
            scan_server_message(policy, msg, &mut out);
        }
        if plan.inspected_server_messages {
            // After DLP, as for results.
            inspect_server_request(policy, msg, &mut out);
        }
        return out;
    }
    // An error with a null id (or none) answers this exchange without naming
    // which of its requests: scanned as if it answered a scanned one. Where
    // no request of ours is answered (`no_requests`: a GET stream, a POST of
    // notifications) it is scanned too: the Python SDK takes it on a GET as
    // the answer to the request whose stream it resumed, the TypeScript SDK
    // throws a failed POST's body (the attacks on the envelope and head).
    if is_anonymous_error(msg) && (!plan.scans.is_empty() || plan.no_requests) {
        scan_result(policy, msg, &mut out, Answer::Result);
        return out;
    }
    let Some(id) = msg.get("id").map(id_key) else {
        return out;
    };
    if plan.hidden_completions.contains(&id) {
        empty_completion(msg, &mut out);
        if plan.scans.contains(&id) {
            scan_result(policy, msg, &mut out, Answer::Result);
        }
        return out;
    }
    if let Some((_, first_page)) = plan.pinned_lists.iter().find(|(k, _)| *k == id) {
        // Before the caller's view is cut: pins hold for every caller.
        check_pins(policy, *first_page, msg, &mut out);
    }
    if let Some((_, list)) = plan.catalogue_lists.iter().find(|(k, _)| *k == id) {
        // After pins, before the caller's view is cut: what is poisoned is
        // poisoned for every caller, and (tools) remembered for the upstream.
        inspect_list(policy, others, *list, msg, &mut out);
    }
    let scanned = plan.scans.contains(&id);
    if let Some(call) = plan.schema_results.iter().find(|c| c.id == id) {
        // Before DLP and the catalogue checks: the server's answer as sent
        // is what its contract describes.
        check_output_schema(policy, call, &plan.schema_budget, msg, &mut out);
    }
    if plan.schema_lists.contains(&id) && !plan.schema_lists_read.borrow().contains(&id) {
        // Every entry, before the caller's view is cut: the schemas are the
        // server's, whoever listed them.
        declare_schemas(msg, &plan.compile_budget, &mut out);
    }
    let Some(catalogue) = plan.lists.iter().find(|(k, _)| *k == id).map(|(_, c)| *c) else {
        if scanned {
            scan_result(policy, msg, &mut out, Answer::Result);
        }
        if let Some((_, kind)) = plan.inspected_results.iter().find(|(k, _)| *k == id) {
            // After DLP: what it redacted is not what the checks read, and a
            // wrap's fence is made of the text the caller will read (its id
            // is that text's hash, never a hash of a secret).
            inspect_answer(policy, *kind, msg, &mut out);
        }
        return out;
    };
    filter_list(policy, caller, catalogue, msg, &mut out);
    if scanned {
        // After filtering: only what the caller will read is scanned.
        scan_result(policy, msg, &mut out, Answer::Catalogue);
    }
    out
}

/// What a scanned answer is, for what `dlp.responses: block` does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A result the call's caller waits for: block replaces it with -32013.
    Result,
    /// A catalogue list: block redacts, as an error in its place would leave
    /// the client with no tools at all for one entry's description.
    Catalogue,
}

/// Remove the entries of a list answer the caller may not see, and mark it private.
fn filter_list(
    policy: &CompiledPolicy,
    caller: &Caller,
    catalogue: Catalogue,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    let (list_member, name_member) = catalogue.members();
    let Some(Value::Array(entries)) = msg.get_mut("result").and_then(|r| r.get_mut(list_member))
    else {
        return;
    };
    let before = entries.len();
    let intents = catalogue == Catalogue::Tools && policy.selects_intents();
    let remembered = &mut out.intents;
    if policy.mode == Mode::DryRun {
        // Dry run learns what enforcement learns (every entry's classes, so
        // the calls that follow are decided alike) and cuts nothing.
        if intents {
            for entry in entries.iter() {
                if let Some(name) = entry.get(name_member).and_then(Value::as_str) {
                    remembered.push((name.to_owned(), entry_annotations(name, entry)));
                }
            }
        }
        return;
    }
    entries.retain(|entry| {
        // Entries without a usable name are dropped: we cannot decide on them.
        let Some(name) = entry.get(name_member).and_then(Value::as_str) else {
            return false;
        };
        let annotated = match intents {
            true => {
                let set = entry_annotations(name, entry);
                remembered.push((name.to_owned(), set));
                Annotated::Seen(set)
            }
            false => Annotated::Unseen,
        };
        visible(policy, caller, catalogue, name, annotated)
    });
    out.removed_entries += before - entries.len();
    out.changed |= before != entries.len();
    // The list is this caller's view: no shared cache may serve it to
    // another (SEP-2549's `cacheScope`; `ttlMs` is left as the server set it,
    // never raised).
    if let Some(Value::Object(result)) = msg.get_mut("result") {
        match result.get("cacheScope") {
            Some(v) if v.as_str() == Some("private") => {}
            // Another scope is replaced: written out with the document.
            Some(_) => {
                result.insert("cacheScope".into(), Value::String("private".into()));
                out.changed = true;
            }
            None => {
                result.insert("cacheScope".into(), Value::String("private".into()));
                out.marked_private = true;
            }
        }
    }
}

/// The member [`filter_list`] adds to a list answer's `result`.
const PRIVATE_SCOPE: &[u8] = br#""cacheScope":"private""#;

/// `text`, one JSON-RPC answer the strict parse accepted, with
/// `"cacheScope":"private"` as the first member of its top-level `result`
/// object: what writing the rewritten document out would say when marking
/// the list private is its only change, without writing it (written
/// straight into a buffer, re-serialising a 35 KB list was still ~9% of its
/// rewrite under V8). The rest of the text is the server's, byte for byte,
/// as an unchanged answer's is.
///
/// `None` (write the document instead) when the text is not an object with
/// a `result` object, or a member name before it is written with an escape
/// (it might spell `result`: only a parse can tell).
pub fn mark_private(text: &[u8]) -> Option<Vec<u8>> {
    let mut at = skip_space(text, 0);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(text, at);
        if text.get(at) != Some(&b'"') {
            return None;
        }
        let name_end = skip_string(text, at)?;
        let name = text.get(at + 1..name_end - 1)?;
        if name.contains(&b'\\') {
            return None;
        }
        at = skip_space(text, name_end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(text, at + 1);
        if name == b"result" {
            if text.get(at) != Some(&b'{') {
                return None;
            }
            let inside = at + 1;
            let empty = text.get(skip_space(text, inside)) == Some(&b'}');
            let mut out = Vec::with_capacity(text.len() + PRIVATE_SCOPE.len() + 1);
            out.extend_from_slice(text.get(..inside)?);
            out.extend_from_slice(PRIVATE_SCOPE);
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(text.get(inside..)?);
            return Some(out);
        }
        at = skip_space(text, skip_value(text, at)?);
        match text.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index just past the string that starts (with its quote) at `at`.
fn skip_string(text: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match text.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index just past the value that starts at `at`.
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => skip_string(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = skip_string(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number or a literal: up to what ends a value.
        _ => {
            let mut i = at;
            while !matches!(
                text.get(i),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

/// The schemas each entry of a `tools/list` answer declares, compiled
/// (through the VM's cache) to be remembered for its upstream. Read from
/// `result.tools` and the entry's `name`, `inputSchema` and `outputSchema`
/// as MCP spells them: a list spelt otherwise is refused outside dry run
/// (`check_result`'s note), and its tools stay unseen.
fn declare_schemas(
    msg: &Map<String, Value>,
    budget: &std::cell::Cell<crate::catalogue::schemas::CompileBudget>,
    out: &mut Rewrite,
) {
    let Some(Value::Array(entries)) = msg.get("result").and_then(|r| r.get("tools")) else {
        return;
    };
    let mut left = budget.get();
    for entry in entries {
        let Some(obj) = entry.as_object() else {
            continue;
        };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            continue;
        };
        out.schemas_declared
            .push(crate::catalogue::schemas::declared(name, obj, &mut left));
    }
    budget.set(left);
}

/// A `tools/call` result held to its tool's declared `outputSchema`: its
/// `structuredContent` must validate (MCP 2025-06-18 and later: "servers
/// MUST provide structured results that conform to this schema"). An error
/// answer, or a result with `isError: true`, is not held to it (a tool
/// error carries no structured result). Under `schemas.output: enforce`
/// (not in dry run) a result that fails is replaced by a -32010 error
/// (rule `output-schema`, the pointer, never the value), as the catalogue
/// checks' `block` replaces one.
fn check_output_schema(
    policy: &CompiledPolicy,
    call: &SchemaResult,
    budget: &std::cell::Cell<crate::catalogue::schema::CheckBudget>,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    use crate::catalogue::schemas::{check, Side};
    let Some(Value::Object(result)) = msg.get("result") else {
        return;
    };
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return;
    }
    // A call that asked for a task may be answered with the task the
    // server created (`CreateTaskResult`, MCP 2025-11-25: `{"task": {...}}`),
    // which carries no tool result: the result comes later, by
    // `tasks/result`. Only when the call asked, and only an answer with no
    // `structuredContent`: a server that answers a plain call with a task,
    // or adds a result to its task (a client that has not listed the tools
    // reads it; thirtieth review), is held to the schema like any other.
    if call.task
        && result.get("task").is_some_and(Value::is_object)
        && !result.contains_key("structuredContent")
    {
        return;
    }
    let (tool, known) = (call.tool.as_str(), &call.known);
    let sp = &policy.schemas;
    let Some(finding) = check(
        sp,
        Side::Output,
        sp.output,
        tool,
        known,
        result.get("structuredContent"),
        budget,
    ) else {
        return;
    };
    let finding = finding.screened(&policy.dlp.scanner);
    let applied = finding.enforced && policy.mode != Mode::DryRun;
    if applied {
        msg.remove("result");
        msg.insert("error".into(), finding.error());
        out.changed = true;
    }
    out.schema_result = Some((finding, applied));
}

/// Check a `tools/list` answer against `pins`: under `mode: enforce` (not in
/// dry run) what differs from its pin, or has none, is removed. Which
/// members are read, and when the page is the whole list: `check_result`.
fn check_pins(
    policy: &CompiledPolicy,
    first_page: bool,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    let Some(pins) = &policy.pins else { return };
    let Some(Value::Object(result)) = msg.get_mut("result") else {
        return;
    };
    let remove = pins.mode == PinMode::Enforce && policy.mode != crate::policy::Mode::DryRun;
    let Some(check) = check_result(pins, result, remove, first_page) else {
        return;
    };
    out.removed_entries += check.removed;
    out.changed |= check.removed > 0;
    out.pins = Some(check);
}

/// The catalogue checks on one page of a list answer: each entry of every
/// member a client reads as the list (`tools`, `prompts`, `resources`,
/// `resourceTemplates`), with the others' names for `shadowing` (tools only:
/// the others are tool names). Under enforce, an entry whose findings call
/// for `remove` is taken out (for every caller: the page is read before it
/// is cut per caller); `flag` keeps it. Findings of checks that are `off`
/// are dropped.
fn inspect_list(
    policy: &CompiledPolicy,
    others: &OtherTools,
    catalogue: Catalogue,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    let cat = &policy.catalogue;
    let Some(Value::Object(result)) = msg.get_mut("result") else {
        return;
    };
    let enforce = policy.mode != Mode::DryRun;
    let (list_member, name_member) = catalogue.members();
    let none = OtherTools::default();
    let others = match catalogue {
        Catalogue::Tools => others,
        _ => &none,
    };
    let mut inspection = ListInspection {
        catalogue,
        tools: Vec::new(),
        names: Vec::new(),
    };
    let mut removed = 0;
    for (k, v) in result.iter_mut() {
        let Value::Array(entries) = v else { continue };
        if !reads_as(k, list_member) {
            continue;
        }
        let before = entries.len();
        entries.retain(|entry| {
            let names: Vec<String> = match (catalogue, entry.as_object()) {
                (Catalogue::Tools, Some(o)) => {
                    entry_names(o).into_iter().map(str::to_owned).collect()
                }
                (_, Some(o)) => o
                    .get(name_member)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .into_iter()
                    .collect(),
                (_, None) => Vec::new(),
            };
            inspection.names.extend(names.iter().cloned());
            let findings: Vec<CatalogueFinding> = cat
                .inspector
                .inspect_tool(entry, others)
                .into_iter()
                .filter(|f| cat.description_action(f.check) != DescriptionAction::Off)
                .collect();
            let action = cat.tool_action(&findings);
            if action == DescriptionAction::Off {
                return true;
            }
            let remove = enforce && action == DescriptionAction::Remove;
            inspection.tools.push(InspectedTool {
                names,
                action,
                removed: remove,
                findings,
            });
            !remove
        });
        removed += before - entries.len();
    }
    out.removed_entries += removed;
    out.changed |= removed > 0;
    out.catalogue_list = Some(inspection);
}

/// One string of an answer the catalogue checks read.
struct Slot<'a> {
    /// JSON pointer from the result (`/content/0/text`).
    ptr: String,
    text: Cow<'a, str>,
    /// `wrap` can fence it in place: free text a client shows as it is. A
    /// link's `name` or `uri` (fenced, it no longer names the resource) and a
    /// decoded blob (the client reads the bytes, not our text) cannot be:
    /// a `wrap` finding there blocks.
    fence: bool,
}

impl<'a> Slot<'a> {
    fn of(ptr: String, text: &'a str) -> Slot<'a> {
        let fence = [
            "/text",
            "/title",
            "/description",
            "/instructions",
            "/systemPrompt",
            "/message",
        ]
        .iter()
        .any(|s| ptr.ends_with(s));
        Slot {
            ptr,
            text: Cow::Borrowed(text),
            fence,
        }
    }
}

/// The strings of one content item or resource contents at `at`: its texts
/// and links ([`content_texts`]), and an embedded resource's or resource
/// contents' `blob` when its media type says text (decoded as DLP decodes it).
fn item_slots<'a>(at: &str, item: &'a Value, out: &mut Vec<Slot<'a>>) {
    for (suffix, text) in content_texts(item) {
        out.push(Slot::of([at, suffix].concat(), text));
    }
    let (contents, suffix) = match item.get("type").and_then(Value::as_str) {
        // Sampling with tools (2025-11-25): a `tool_result` carries content
        // items of its own, and a `tool_use` the model's input, both handed
        // to the client's model like the message's text.
        Some("tool_result") => {
            for (j, inner) in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mut ptr = [at, "/content"].concat();
                crate::json::push_index(&mut ptr, j);
                item_slots(&ptr, inner, out);
            }
            if let Some(v) = item.get("structuredContent") {
                value_slots(&mut format!("{at}/structuredContent"), v, out);
            }
            return;
        }
        Some("tool_use") => {
            if let Some(v) = item.get("input") {
                value_slots(&mut format!("{at}/input"), v, out);
            }
            return;
        }
        Some("resource") => (item.get("resource"), "/resource/blob"),
        // `resources/read` contents carry no `type`.
        None => (Some(item), "/blob"),
        _ => (None, ""),
    };
    if let Some(text) = contents.and_then(Value::as_object).and_then(dlp::text_blob) {
        out.push(Slot {
            ptr: [at, suffix].concat(),
            text: Cow::Owned(text),
            fence: false,
        });
    }
}

/// Every string of structured data at `ptr`, as slots that cannot be
/// fenced (wrapping a string inside data changes what it means to whoever
/// reads the data): a finding there withholds or blocks.
fn value_slots<'a>(ptr: &mut String, v: &'a Value, out: &mut Vec<Slot<'a>>) {
    match v {
        Value::String(s) => out.push(Slot {
            ptr: ptr.clone(),
            text: Cow::Borrowed(s),
            fence: false,
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = ptr.len();
                crate::json::push_index(ptr, i);
                value_slots(ptr, item, out);
                ptr.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = ptr.len();
                crate::catalogue::poison::push_token(ptr, k);
                value_slots(ptr, item, out);
                ptr.truncate(len);
            }
        }
        _ => {}
    }
}

/// The text of a server request's params at `at` a client hands its model
/// or shows its user: `systemPrompt`, an elicitation's `message`, the tools
/// a sampling request offers, each sampling message's content.
fn server_request_slots<'a>(at: &str, params: &'a Value, out: &mut Vec<Slot<'a>>) {
    for member in ["systemPrompt", "message"] {
        if let Some(Value::String(s)) = params.get(member) {
            out.push(Slot::of(format!("{at}/{member}"), s));
        }
    }
    // Sampling with tools (2025-11-25): the tools the server offers the
    // client's model are definitions it reads like a `tools/list` entry
    // (thirteenth review M2): titles and descriptions are fenced under
    // `wrap`, every other string (name, schemas) withheld.
    let tools = params.get("tools").and_then(Value::as_array);
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let Some(members) = tool.as_object() else {
            continue;
        };
        for (k, v) in members {
            if k == "icons" {
                continue;
            }
            let mut ptr = format!("{at}/tools/{i}");
            crate::catalogue::poison::push_token(&mut ptr, k);
            match (k.as_str(), v) {
                ("title" | "description", Value::String(text)) => out.push(Slot::of(ptr, text)),
                _ => value_slots(&mut ptr, v, out),
            }
        }
    }
    let messages = params.get("messages").and_then(Value::as_array);
    for (i, m) in messages.into_iter().flatten().enumerate() {
        match m.get("content") {
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    item_slots(&format!("{at}/messages/{i}/content/{j}"), item, out);
                }
            }
            Some(item) => item_slots(&format!("{at}/messages/{i}/content"), item, out),
            None => {}
        }
    }
}

/// The server requests a result embeds (2026-07-28 multi round-trip: an
/// `input_required` result's `inputRequests` maps a key to a
/// `sampling/createMessage` or `elicitation/create` request the client
/// carries out before it retries): read as the same requests sent on a
/// stream are.
fn input_request_slots<'a>(result: &'a Value, out: &mut Vec<Slot<'a>>) {
    let Some(Value::Object(requests)) = result.get("inputRequests") else {
        return;
    };
    for (key, request) in requests {
        let Some(params) = request.get("params") else {
            continue;
        };
        let mut at = String::from("/inputRequests");
        crate::catalogue::poison::push_token(&mut at, key);
        at.push_str("/params");
        server_request_slots(&at, params, out);
    }
}

/// The strings of a result the catalogue checks read, as slots: a tool
/// result's content items, a prompt's messages' content, a resource read's
/// contents (text, or a text blob), an initialize answer's `instructions`.
/// (A tool result's `structuredContent` is read whole by `inspect_value`.)
fn text_slots(kind: ResultKind, result: &Value) -> Vec<Slot<'_>> {
    let mut out = Vec::new();
    let list = |m: &str| {
        result
            .get(m)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    match kind {
        ResultKind::Tool => {
            for (i, item) in list("content").enumerate() {
                let mut ptr = String::from("/content");
                crate::json::push_index(&mut ptr, i);
                item_slots(&ptr, item, &mut out);
            }
        }
        ResultKind::Prompt => {
            // The prompt's own description comes with its messages (the
            // fourteenth review found it unread).
            if let Some(Value::String(d)) = result.get("description") {
                out.push(Slot::of("/description".to_owned(), d));
            }
            for (i, m) in list("messages").enumerate() {
                match m.get("content") {
                    Some(Value::Array(items)) => {
                        for (j, item) in items.iter().enumerate() {
                            item_slots(&format!("/messages/{i}/content/{j}"), item, &mut out);
                        }
                    }
                    Some(item) => item_slots(&format!("/messages/{i}/content"), item, &mut out),
                    None => {}
                }
            }
        }
        ResultKind::Resource => {
            for (i, c) in list("contents").enumerate() {
                if let Some(Value::String(s)) = c.get("text") {
                    out.push(Slot::of(format!("/contents/{i}/text"), s));
                }
                item_slots(&format!("/contents/{i}"), c, &mut out);
            }
        }
        ResultKind::Initialize => {
            if let Some(Value::String(s)) = result.get("instructions") {
                out.push(Slot::of("/instructions".to_owned(), s));
            }
        }
        // `result` is the request's params here.
        ResultKind::ServerRequest => server_request_slots("", result, &mut out),
    }
    if matches!(
        kind,
        ResultKind::Tool | ResultKind::Prompt | ResultKind::Resource
    ) {
        input_request_slots(result, &mut out);
    }
    out
}

/// The catalogue checks' findings in each slot, pointed from the result (or
/// the server request's params).
fn slot_findings(
    cat: &crate::catalogue::CataloguePolicy,
    slots: &[Slot<'_>],
) -> Vec<CatalogueFinding> {
    let mut found: Vec<CatalogueFinding> = slots
        .iter()
        .flat_map(|slot| {
            cat.inspector
                .inspect_text(&slot.text)
                .into_iter()
                .map(move |f| CatalogueFinding {
                    pointer: format!("{}{}", slot.ptr, f.pointer),
                    ..f
                })
        })
        .collect();
    // A marker that spans a seam between two texts is at the whole (pointer
    // `""`): no fence can go around what no one text holds, so `wrap`
    // blocks, and a server request's texts are all withheld.
    let texts: Vec<&str> = slots.iter().map(|s| s.text.as_ref()).collect();
    let across = cat.inspector.inspect_across(&texts);
    found.extend(across.into_iter().map(|f| CatalogueFinding {
        pointer: ACROSS_SLOTS.to_owned(),
        ..f
    }));
    found
}

/// The pointer of a finding that spans the seam between two of a message's texts.
const ACROSS_SLOTS: &str = "";

/// The pointers of the slots `wrap` can fence.
fn fenceable(slots: &[Slot<'_>]) -> Vec<String> {
    slots
        .iter()
        .filter(|s| s.fence)
        .map(|s| s.ptr.clone())
        .collect()
}

/// The action `findings` call for; a `wrap` finding where no fence can go
/// makes it `block` (and the audit says so).
fn fenced_verdict(
    cat: &crate::catalogue::CataloguePolicy,
    findings: &[CatalogueFinding],
    fenceable: &[String],
) -> ResultAction {
    let action = cat.result_verdict(findings);
    let unfenceable = findings.iter().any(|f| {
        cat.result_action(f.check) == ResultAction::Wrap && !fenceable.contains(&f.pointer)
    });
    match action {
        ResultAction::Wrap if unfenceable => ResultAction::Block,
        a => a,
    }
}

/// What the findings of a server request's text withhold: the text a client
/// would have handed its model or shown its user (never the findings' text).
const WITHHELD: &str =
    "[mcp-firewall: text withheld: the catalogue checks found injected content in it]";

/// The catalogue result checks on a server request sent on a response
/// stream (`sampling/createMessage`, `elicitation/create`). There is no
/// answer to refuse and dropping the request would leave the server waiting
/// for its answer, so, as DLP's `block` redacts a server message, `block`
/// replaces each string holding a finding with [`WITHHELD`] (a decoded
/// blob's whole content item becomes a text item saying so) and the request
/// keeps its place; `wrap` fences free text (and withholds what it cannot
/// fence); `flag` records. Dry run only records.
fn inspect_server_request(
    policy: &CompiledPolicy,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    let cat = &policy.catalogue;
    let Some(params) = msg.get("params") else {
        return;
    };
    let slots = text_slots(ResultKind::ServerRequest, params);
    let findings: Vec<CatalogueFinding> = slot_findings(cat, &slots)
        .into_iter()
        .filter(|f| cat.result_action(f.check) != ResultAction::Off)
        .collect();
    let fenceable = fenceable(&slots);
    let action = fenced_verdict(cat, &findings, &fenceable);
    if action == ResultAction::Off {
        return;
    }
    let enforce = policy.mode != Mode::DryRun;
    let mut applied = false;
    if enforce && action != ResultAction::Flag {
        let acts = |f: &&CatalogueFinding| cat.result_action(f.check) != ResultAction::Flag;
        let mut pointers: Vec<&str> = findings
            .iter()
            .filter(acts)
            .map(|f| f.pointer.as_str())
            .collect();
        // A finding across the texts withholds every one of them (no fence
        // can go around what no one text holds).
        let across = findings
            .iter()
            .filter(acts)
            .any(|f| f.pointer == ACROSS_SLOTS);
        let slot_pointers: Vec<String> = match across {
            true => slots.iter().map(|s| s.ptr.clone()).collect(),
            false => Vec::new(),
        };
        pointers.extend(slot_pointers.iter().map(String::as_str));
        pointers.retain(|p| *p != ACROSS_SLOTS);
        crate::sort::sort(&mut pointers);
        pointers.dedup();
        let Some(params) = msg.get_mut("params") else {
            return;
        };
        for ptr in pointers {
            let checks: Vec<Check> = findings
                .iter()
                .filter(|f| f.pointer == ptr)
                .map(|f| f.check)
                .collect();
            let blocks = across
                || checks
                    .iter()
                    .any(|c| cat.result_action(*c) == ResultAction::Block)
                || !fenceable.iter().any(|p| p == ptr);
            if let Some(item) = ptr
                .strip_suffix("/resource/blob")
                .or_else(|| ptr.strip_suffix("/blob"))
            {
                if let Some(v) = params.pointer_mut(item) {
                    *v = serde_json::json!({"type": "text", "text": WITHHELD});
                    applied = true;
                }
                continue;
            }
            if let Some(Value::String(text)) = params.pointer_mut(ptr) {
                *text = match blocks {
                    true => WITHHELD.to_owned(),
                    false => wrap_text(text, &checks),
                };
                applied = true;
            }
        }
    }
    out.changed |= applied;
    out.catalogue_result = Some(ResultInspection {
        kind: ResultKind::ServerRequest,
        action,
        applied,
        findings: findings
            .into_iter()
            .map(|f| CatalogueFinding {
                pointer: format!("/params{}", f.pointer),
                ..f
            })
            .collect(),
    });
}

/// The catalogue checks on a result (after DLP): `block` replaces it with a
/// -32010 error (rule `catalogue`, the checks and pointers, never the
/// text), `wrap` fences each text that holds a finding calling for it
/// (`wrap_text`), `flag` passes. `wrap` cannot rewrite structured data, a
/// link's name or uri, or a decoded blob: a finding that calls for it there
/// blocks the result (dropping `structuredContent` would break a client
/// that validates it against the tool's `outputSchema`, and leaving it would
/// hand the client the very text that was fenced). An initialize answer is
/// not replaced: an error there ends the session before it starts, so
/// `block` drops its `instructions` member and the rest stays. Dry run only
/// records.
fn inspect_answer(
    policy: &CompiledPolicy,
    kind: ResultKind,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
) {
    let cat = &policy.catalogue;
    let Some(result) = msg.get("result") else {
        return;
    };
    let slots = text_slots(kind, result);
    let mut found = slot_findings(cat, &slots);
    if let (ResultKind::Tool, Some(v)) = (kind, result.get("structuredContent")) {
        found.extend(
            cat.inspector
                .inspect_value(v)
                .into_iter()
                .map(|f| CatalogueFinding {
                    pointer: format!("/structuredContent{}", f.pointer),
                    ..f
                }),
        );
    }
    let findings: Vec<CatalogueFinding> = found
        .into_iter()
        .filter(|f| cat.result_action(f.check) != ResultAction::Off)
        .collect();
    let action = fenced_verdict(cat, &findings, &fenceable(&slots));
    if action == ResultAction::Off {
        return;
    }
    let enforce = policy.mode != Mode::DryRun;
    let applied = enforce && matches!(action, ResultAction::Block | ResultAction::Wrap);
    if applied && action == ResultAction::Wrap {
        if let Some(result) = msg.get_mut("result") {
            wrap_texts(cat, result, &findings);
        }
    }
    let findings: Vec<CatalogueFinding> = findings
        .into_iter()
        .map(|f| CatalogueFinding {
            pointer: format!("/result{}", f.pointer),
            ..f
        })
        .collect();
    if applied && action == ResultAction::Block {
        match kind {
            ResultKind::Initialize => {
                if let Some(Value::Object(result)) = msg.get_mut("result") {
                    result.remove("instructions");
                }
            }
            _ => {
                msg.remove("result");
                msg.insert("error".into(), crate::reply::catalogue_error(&findings));
            }
        }
    }
    out.changed |= applied;
    out.catalogue_result = Some(ResultInspection {
        kind,
        action,
        applied,
        findings,
    });
}

/// Fence each text holding a finding that calls for `wrap`, labelled with
/// every check found in it.
fn wrap_texts(
    cat: &crate::catalogue::CataloguePolicy,
    result: &mut Value,
    findings: &[CatalogueFinding],
) {
    let mut pointers: Vec<&str> = findings
        .iter()
        .filter(|f| cat.result_action(f.check) == ResultAction::Wrap)
        .map(|f| f.pointer.as_str())
        .collect();
    crate::sort::sort(&mut pointers);
    pointers.dedup();
    for ptr in pointers {
        let checks: Vec<Check> = findings
            .iter()
            .filter(|f| f.pointer == ptr)
            .map(|f| f.check)
            .collect();
        if let Some(Value::String(text)) = result.pointer_mut(ptr) {
            *text = wrap_text(text, &checks);
        }
    }
}

/// A completion of something the caller may not see answers with no values
/// (MCP `CompleteResult`: `values`, optional `total` and `hasMore`).
fn empty_completion(msg: &mut Map<String, Value>, out: &mut Rewrite) {
    let Some(Value::Object(result)) = msg.get_mut("result") else {
        return;
    };
    let empty = serde_json::json!({"values": [], "total": 0, "hasMore": false});
    if result.get("completion") != Some(&empty) {
        out.removed_entries = result
            .get("completion")
            .and_then(|c| c.get("values"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        result.insert("completion".into(), empty);
        out.changed = true;
    }
}

/// The members of a JSON-RPC answer (JSON-RPC 2.0 §5).
const ANSWER_MEMBERS: [&str; 6] = ["jsonrpc", "id", "result", "error", "method", "params"];

/// The members of a result (or a server request's params) that the
/// catalogue result checks and the output-schema check read, at any depth.
/// A lone `"Content"` or `"Text"` is read by a client that matches names
/// case-insensitively (Go's `encoding/json`: the Go SDK) and by nothing the
/// filter checks: injected text around the result checks, or, beside a
/// task, a `"StructuredContent"` around the output schema.
const READ_MEMBERS: [&str; 22] = [
    "blob",
    "content",
    "contents",
    "description",
    "input",
    "inputRequests",
    "instructions",
    "isError",
    "message",
    "messages",
    "mimeType",
    "name",
    "params",
    "resource",
    "structuredContent",
    "systemPrompt",
    "task",
    "text",
    "title",
    "tools",
    "type",
    "uri",
];

/// Members that hold data, whose names are the server's or the user's own
/// (a form field `"Title"` in an elicitation's `requestedSchema`):
/// `structuredContent` and a `tool_use`'s `input` are read whole, every
/// string whatever its member's name.
const DATA_MEMBERS: [&str; 8] = [
    "_meta",
    "arguments",
    "input",
    "inputSchema",
    "metadata",
    "outputSchema",
    "requestedSchema",
    "structuredContent",
];

/// The first member, anywhere in `v`, that differs only in case from one of
/// `names`; not below [`DATA_MEMBERS`].
fn case_variant_within<'n>(v: &Value, names: &[&'n str]) -> Option<(String, &'n str)> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(found) = case_variant(m, names) {
                    return Some(found);
                }
                stack.extend(
                    m.iter()
                        .filter(|(k, _)| !DATA_MEMBERS.contains(&k.as_str()))
                        .map(|(_, x)| x),
                );
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    None
}

/// A member of an answer the filter would not read but a case-insensitive
/// client would: `"Result"` carries a result DLP never scanned, `"Tools"` a
/// catalogue list filtering never saw (Go's encoding/json reads both). The
/// caller treats the answer as unfilterable.
pub fn case_variant_in_answer(plan: &ResponsePlan, msg: &Map<String, Value>) -> Option<String> {
    let describe = |(member, name): (String, &str)| {
        format!("server answer member {member:?} differs only in case from {name:?}")
    };
    if let Some(v) = case_variant(msg, &ANSWER_MEMBERS) {
        return Some(describe(v));
    }
    // A server message is a request or notification exactly when `method`
    // is a string, and then it answers nothing. `"method": null` beside a
    // result was read by the filter as a server message (only its params
    // scanned) and by the Python SDK as the answer (thirty-third review):
    // every check of the result skipped.
    match msg.get("method") {
        None => {}
        Some(Value::String(_)) if msg.contains_key("result") || msg.contains_key("error") => {
            return Some("server message with both a method and a result or error".into());
        }
        Some(Value::String(_)) => {}
        Some(_) => return Some("server message whose method is not a string".into()),
    }
    // JSON-RPC 2.0 §5: exactly one of them. Clients disagree on which one a
    // message with both is (Python reads the error, the filter scanned the result).
    if !msg.contains_key("method") && msg.contains_key("result") == msg.contains_key("error") {
        return Some("server answer with both or neither of result and error".into());
    }
    // JSON-RPC 2.0 defines no other members, and the filter reads none: DLP
    // scans an answer's `result` or `error` and a server message's `params`,
    // so a `"note": "ghp_…"` beside them reached the client unscanned (the
    // eleventh session's attack). Refused, as a request's are.
    let defined: &[&str] = if msg.contains_key("method") {
        &["jsonrpc", "id", "method", "params"]
    } else {
        &["jsonrpc", "id", "result", "error"]
    };
    // The refusal does not name the member: its name is the server's text
    // (`{"ghp_…": 1}`), and the refusal's reason reaches the client.
    if msg.keys().any(|k| !defined.contains(&k.as_str())) {
        return Some("server message with a member JSON-RPC 2.0 does not define".into());
    }
    // The version is text too, and the one member nothing scans: the Python
    // SDK quotes a wrong one back to its caller in the validation error
    // (`input_value='ghp_…'`), and the Go SDK names it in its own. The
    // attack on the member check found it; only "2.0" is JSON-RPC 2.0.
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some("server message whose jsonrpc is not \"2.0\"".into());
    }
    // A server request's id is a string or a number (JSON-RPC 2.0 §4); only
    // a string one is scanned (the rewriter's envelope check), so an object
    // or array id would carry text past every check.
    if msg.contains_key("method")
        && msg
            .get("id")
            .is_some_and(|id| !(id.is_string() || id.is_number()))
    {
        return Some("server request whose id is neither a string nor a number".into());
    }
    // The server requests whose text a client shows its model or its user;
    // a notification's params are the server's own data (a log entry
    // `{"Name": …}` refused whole calls; thirty-second review).
    let shown = matches!(
        msg.get("method").and_then(Value::as_str),
        Some("sampling/createMessage" | "elicitation/create")
    );
    if plan.inspected_server_messages && shown {
        if let Some(v) = msg
            .get("params")
            .and_then(|p| case_variant_within(p, &READ_MEMBERS))
        {
            return Some(describe(v));
        }
    }
    let id = msg.get("id").map(id_key)?;
    let checked = plan.inspected_results.iter().any(|(k, _)| *k == id)
        || plan.schema_results.iter().any(|c| c.id == id);
    if checked {
        if let Some(v) = msg
            .get("result")
            .and_then(|r| case_variant_within(r, &READ_MEMBERS))
        {
            return Some(describe(v));
        }
    }
    if plan.hidden_completions.contains(&id) {
        // `"Completion"` beside the emptied `completion` would still carry values.
        let result = msg.get("result")?.as_object()?;
        return case_variant(result, &["completion"]).map(describe);
    }
    let (_, catalogue) = plan.lists.iter().find(|(k, _)| *k == id)?;
    let (list_member, name_member) = catalogue.members();
    let result = msg.get("result")?.as_object()?;
    // The list is marked `cacheScope: "private"`; a `"CacheScope": "public"`
    // beside the mark is the scope a reader matching names case-insensitively
    // and keeping the last match (Go's `encoding/json`) takes, and then a
    // cache shares one caller's list with every other (the eleventh
    // session's attack on the spliced mark).
    if let Some(v) = case_variant(result, &[list_member, "cacheScope"]) {
        return Some(describe(v));
    }
    let entries = result.get(list_member)?.as_array()?;
    entries
        .iter()
        .filter_map(Value::as_object)
        .find_map(|e| case_variant(e, &[name_member]))
        .map(describe)
}

/// DLP on a result: redact in place, replace it with a -32013 error (block),
/// or only record (flag).
fn scan_result(
    policy: &CompiledPolicy,
    msg: &mut Map<String, Value>,
    out: &mut Rewrite,
    answer: Answer,
) {
    let action = match (policy.mode, policy.dlp.responses, answer) {
        (crate::policy::Mode::DryRun, Action::Block | Action::Redact, _) => Action::Flag,
        (_, Action::Block, Answer::Catalogue) => Action::Redact,
        (_, a, _) => a,
    };
    if action == Action::Off {
        return;
    }
    // A JSON-RPC error answers a scanned call too: its message and data are
    // text the client reads (a server echoing a secret it was sent, or one it
    // found), so they are scanned like a result.
    let (member, findings) = if let Some(result) = msg.get_mut("result") {
        let found = match (action, answer) {
            (Action::Redact, Answer::Result) => dlp::redact_result(&policy.dlp.scanner, result),
            (Action::Redact, Answer::Catalogue) => dlp::redact_list(&policy.dlp.scanner, result),
            (_, Answer::Result) => dlp::scan_result(&policy.dlp.scanner, result),
            (_, Answer::Catalogue) => dlp::scan_list(&policy.dlp.scanner, result),
        };
        ("result", found)
    } else if let Some(error) = msg.get_mut("error") {
        let found = match action {
            Action::Redact => policy.dlp.scanner.redact_value(error),
            _ => policy.dlp.scanner.scan_value(error),
        };
        ("error", found)
    } else {
        return;
    };
    if findings.is_empty() {
        return;
    }
    if action == Action::Block {
        msg.remove(member);
        let whereabouts = match member {
            "error" => "the error",
            _ => "the result",
        };
        msg.insert(
            "error".into(),
            crate::reply::sensitive_data_error(&findings, whereabouts),
        );
    }
    out.changed |= action != Action::Flag;
    out.findings = findings;
    out.action = Some(action);
    out.scanned = member;
}

/// DLP on the `params` of a notification or server request: there is no
/// answer to replace with an error, so `block` redacts like `redact` (the
/// client never reads the match; the message keeps its place in the stream).
fn scan_server_message(policy: &CompiledPolicy, msg: &mut Map<String, Value>, out: &mut Rewrite) {
    let action = match (policy.mode, policy.dlp.responses) {
        (crate::policy::Mode::DryRun, Action::Block | Action::Redact) => Action::Flag,
        (_, a) => a,
    };
    let Some(params) = msg.get_mut("params") else {
        return;
    };
    let findings = match action {
        Action::Off => return,
        Action::Flag => dlp::scan_result(&policy.dlp.scanner, params),
        Action::Block | Action::Redact => dlp::redact_result(&policy.dlp.scanner, params),
    };
    if findings.is_empty() {
        return;
    }
    out.changed = action != Action::Flag;
    out.findings = findings;
    out.action = Some(match action {
        Action::Block => Action::Redact,
        a => a,
    });
    out.scanned = "params";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use serde_json::json;

    #[test]
    fn the_private_mark_spliced_in_reads_as_the_document_written_out() {
        let cases = [
            ("compact", r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#),
            ("result_first", r#"{"result":{"tools":[]},"id":1,"jsonrpc":"2.0"}"#),
            ("empty_result", r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            ("empty_result_spaced", "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{ \n\t}}"),
            (
                "pretty",
                "{\n  \"jsonrpc\": \"2.0\",\r\n  \"id\" : 7 ,\n  \"result\" :\n  {\n    \"tools\": [ ]\n  }\n}\n",
            ),
            (
                "nested_result_members_before",
                r#"{"a":{"result":{"x":1}},"b":[{"result":{}},"}]{\"result\":{"],"id":1,"result":{"tools":[]}}"#,
            ),
            (
                "strings_with_braces_and_escapes",
                r#"{"id":"{\"result\":{}}\\","x":"\u0022}","result":{"tools":[{"description":"a } b { \" \\"}]}}"#,
            ),
            ("scalars_before", r#"{"id":-1.5e3,"t":true,"f":false,"n":null,"result":{"nextCursor":"c"}}"#),
            ("unicode", r#"{"id":1,"ä":"日本","result":{"tools":[{"name":"é"}]}}"#),
        ];
        for (name, text) in cases {
            let Some(spliced) = mark_private(text.as_bytes()) else {
                panic!("{name}: not spliced")
            };
            let mut want: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            want["result"]["cacheScope"] = json!("private");
            let got: Value = crate::json::parse_strict(&spliced, 64)
                .unwrap_or_else(|e| panic!("{name}: {e:?}: {}", String::from_utf8_lossy(&spliced)));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_private_mark_is_not_spliced_where_only_a_parse_could_tell() {
        let cases = [
            (
                "escaped_result_name",
                r#"{"id":1,"res\u0075lt":{"tools":[]}}"#,
            ),
            (
                "escaped_name_before",
                r#"{"i\u0064":1,"result":{"tools":[]}}"#,
            ),
            ("result_not_an_object", r#"{"id":1,"result":[]}"#),
            ("no_result", r#"{"id":1,"error":{"code":1,"message":"m"}}"#),
            ("batch", r#"[{"id":1,"result":{"tools":[]}}]"#),
            ("not_json", "{\"id\":1,"),
            ("empty", ""),
        ];
        for (name, text) in cases {
            assert_eq!(mark_private(text.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn a_list_is_marked_private_without_other_change_and_a_scope_replaced_is_a_change() {
        let policy = crate::policy::compile(&json!({"version": 1, "rules": [
            {"id": "read", "effect": "allow", "roles": ["reader"], "tools": ["get_*"]}
        ]}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let caller = reader();
        let plan = ResponsePlan {
            lists: vec![("1".into(), Catalogue::Tools)],
            ..ResponsePlan::default()
        };
        let cases = [
            (
                "no_scope",
                json!({"tools": [{"name": "get_issue"}]}),
                (false, true),
            ),
            (
                "private_already",
                json!({"tools": [{"name": "get_issue"}], "cacheScope": "private"}),
                (false, false),
            ),
            (
                "public_replaced",
                json!({"tools": [{"name": "get_issue"}], "cacheScope": "public"}),
                (true, false),
            ),
            (
                "entry_removed",
                json!({"tools": [{"name": "get_issue"}, {"name": "delete_repo"}]}),
                (true, true),
            ),
        ];
        for (name, result, want) in cases {
            let mut msg = json!({"jsonrpc": "2.0", "id": 1, "result": result});
            let Some(obj) = msg.as_object_mut() else {
                panic!()
            };
            let r = rewrite_message(&policy, &caller, &plan, &OtherTools::default(), obj);
            assert_eq!((r.changed, r.marked_private), want, "{name}");
            assert_eq!(msg["result"]["cacheScope"], json!("private"), "{name}");
        }
    }

    #[test]
    fn case_variant_members_of_answers_are_found() {
        let plan = ResponsePlan {
            lists: vec![("5".into(), Catalogue::Tools)],
            scans: vec!["6".into()],
            server_messages: true,
            inspected_server_messages: true,
            hidden_completions: vec!["7".into()],
            pinned_lists: vec![],
            inspected_results: vec![("8".into(), ResultKind::Tool)],
            schema_results: vec![SchemaResult {
                id: "9".into(),
                tool: "w".into(),
                known: crate::catalogue::schemas::Known::Unseen,
                task: true,
            }],
            ..ResponsePlan::default()
        };
        let cases = [
            (
                "result_in_other_case",
                json!({"jsonrpc": "2.0", "id": 6, "Result": {}}),
                true,
            ),
            (
                "error_in_other_case",
                json!({"jsonrpc": "2.0", "id": 6, "ERROR": {}}),
                true,
            ),
            (
                "tools_in_other_case",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"Tools": []}}),
                true,
            ),
            (
                "cache_scope_in_other_case",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [], "CacheScope": "public"}}),
                true,
            ),
            (
                "cache_scope_with_a_long_s",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [], "cacheſcope": "public"}}),
                true,
            ),
            (
                "cache_scope_spelt_as_marked",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [], "cacheScope": "public"}}),
                false,
            ),
            (
                "tool_name_in_other_case",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"Name": "x"}]}}),
                true,
            ),
            (
                "plain_list_answer",
                json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "x"}]}}),
                false,
            ),
            (
                "result_and_error",
                json!({"jsonrpc": "2.0", "id": 6, "result": {}, "error": {"code": 1, "message": "x"}}),
                true,
            ),
            (
                "neither_result_nor_error",
                json!({"jsonrpc": "2.0", "id": 6}),
                true,
            ),
            (
                "completion_in_other_case_beside_a_hidden_one",
                json!({"jsonrpc": "2.0", "id": 7, "result": {"completion": {"values": []}, "Completion": {"values": ["x"]}}}),
                true,
            ),
            (
                "other_members_of_a_result",
                json!({"jsonrpc": "2.0", "id": 6, "result": {"Content": []}}),
                false,
            ),
            // What the result checks read, a Go client reads in any case.
            (
                "inspected_result_content_in_other_case",
                json!({"jsonrpc": "2.0", "id": 8, "result": {"Content": [{"type": "text", "text": "x"}]}}),
                true,
            ),
            (
                "inspected_item_text_in_other_case",
                json!({"jsonrpc": "2.0", "id": 8, "result": {"content": [{"type": "text", "Text": "x"}]}}),
                true,
            ),
            (
                "data_in_structured_content_in_any_case",
                json!({"jsonrpc": "2.0", "id": 8, "result": {"content": [], "structuredContent": {"Title": "x", "Text": "y"}}}),
                false,
            ),
            (
                "a_tasks_structured_content_in_other_case",
                json!({"jsonrpc": "2.0", "id": 9, "result": {"task": {"taskId": "t"}, "StructuredContent": {"temp": "warm"}}}),
                true,
            ),
            (
                "server_request_prompt_in_other_case",
                json!({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "params": {"SystemPrompt": "x", "messages": []}}),
                true,
            ),
            (
                "an_answer_with_a_null_method",
                json!({"jsonrpc": "2.0", "id": 6, "method": null, "result": {"content": []}}),
                true,
            ),
            (
                "an_answer_with_a_false_method",
                json!({"jsonrpc": "2.0", "id": 6, "method": false, "result": {}}),
                true,
            ),
            (
                "a_request_that_also_answers",
                json!({"jsonrpc": "2.0", "id": 6, "method": "ping", "result": {}}),
                true,
            ),
            (
                "params_in_other_case",
                json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "Params": {"messages": []}}),
                true,
            ),
            (
                "method_in_other_case_beside_a_result",
                json!({"jsonrpc": "2.0", "id": 6, "result": {"content": []}, "Method": "sampling/createMessage"}),
                true,
            ),
            (
                "a_plain_server_request",
                json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"messages": []}}),
                false,
            ),
            (
                "a_notifications_data_in_any_case",
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info",
                    "data": {"Name": "ingest-job", "Type": "batch"}}}),
                false,
            ),
            (
                "a_custom_notification_in_any_case",
                json!({"jsonrpc": "2.0", "method": "notifications/acme/job", "params": {"Message": "finished"}}),
                false,
            ),
            (
                "an_elicitation_message_in_other_case",
                json!({"jsonrpc": "2.0", "id": 2, "method": "elicitation/create", "params": {"Message": "m",
                    "requestedSchema": {"type": "object", "properties": {}}}}),
                true,
            ),
            (
                "a_member_beside_the_result_no_check_reads",
                json!({"jsonrpc": "2.0", "id": 6, "note": "ghp_x", "result": {"content": []}}),
                true,
            ),
            (
                "params_beside_an_error",
                json!({"jsonrpc": "2.0", "id": 6, "error": {"code": 1, "message": "m"}, "params": {}}),
                true,
            ),
            (
                "a_result_member_in_a_notification",
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}, "data": "x"}),
                true,
            ),
            (
                "a_version_other_than_2_0",
                json!({"jsonrpc": "ghp_x", "id": 6, "result": {"content": []}}),
                true,
            ),
            (
                "no_version",
                json!({"id": 6, "result": {"content": []}}),
                true,
            ),
            (
                "a_server_request_whose_id_is_an_object",
                json!({"jsonrpc": "2.0", "id": {"k": "ghp_x"}, "method": "ping"}),
                true,
            ),
            (
                "a_server_request_whose_id_is_a_number",
                json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
                false,
            ),
            (
                "an_error_answer_alone",
                json!({"jsonrpc": "2.0", "id": 6, "error": {"code": 1, "message": "m"}}),
                false,
            ),
            (
                "form_fields_of_an_elicitation_in_any_case",
                json!({"jsonrpc": "2.0", "id": 1, "method": "elicitation/create", "params": {"message": "m",
                    "requestedSchema": {"type": "object", "properties": {"Title": {"type": "string"}}}}}),
                false,
            ),
        ];
        for (name, msg, found) in cases {
            let Some(obj) = msg.as_object() else {
                panic!("{name}")
            };
            assert_eq!(
                case_variant_in_answer(&plan, obj).is_some(),
                found,
                "{name}"
            );
        }
    }

    #[test]
    fn filters_tools_list_result_for_reader() {
        let policy = crate::policy::compile(&json!({"version": 1, "rules": [
            {"id": "read", "effect": "allow", "roles": ["reader"], "tools": ["get_*"]},
            {"id": "no-del", "effect": "deny", "tools": ["get_secret"]}
        ]}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let caller = Caller {
            subject: None,
            tenant: None,
            roles: vec!["reader".into()],
            via: Via::Anonymous,
        };
        let plan = ResponsePlan {
            lists: vec![("1".into(), Catalogue::Tools)],
            ..ResponsePlan::default()
        };
        let mut msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "get_issue"}, {"name": "delete_repo"}, {"name": "get_secret"}, {"noname": true}
        ]}});
        let Some(obj) = msg.as_object_mut() else {
            panic!()
        };
        let r = rewrite_message(&policy, &caller, &plan, &OtherTools::default(), obj);
        assert_eq!((r.changed, r.removed_entries), (true, 3));
        assert_eq!(msg["result"]["tools"], json!([{"name": "get_issue"}]));
        assert_eq!(msg["result"]["cacheScope"], json!("private"));
    }

    /// Notifications and server requests on the stream of a scanned call are
    /// scanned like its result (redacted under `block` too: there is no
    /// answer to replace); on a stream nothing was planned for, they pass.
    const SECRET: &str = "glpat-_bkBl5pR8VAr0_UnPKWu";

    #[test]
    fn server_messages_on_a_scanned_stream_are_scanned() {
        let caller = crate::verdict::anonymous();
        let scanned = ResponsePlan {
            lists: vec![],
            scans: vec!["1".into()],
            server_messages: true,
            ..ResponsePlan::default()
        };
        let listed = ResponsePlan {
            lists: vec![("1".into(), Catalogue::Tools)],
            ..ResponsePlan::default()
        };
        let get_stream = ResponsePlan {
            server_messages: true,
            ..ResponsePlan::default()
        };
        let log = json!({"jsonrpc": "2.0", "method": "notifications/message",
                         "params": {"level": "info", "data": format!("key {SECRET}")}});
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                              "params": {"progressToken": 1, "progress": 1, "message": SECRET}});
        let sampling = json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage",
                              "params": {"messages": [{"role": "user", "content": {"type": "text", "text": SECRET}}],
                                         "maxTokens": 10}});
        let elicit = json!({"jsonrpc": "2.0", "id": 8, "method": "elicitation/create",
                            "params": {"message": format!("confirm {SECRET}"), "requestedSchema": {"type": "object"}}});
        let image = json!({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info", "data": {"type": "image", "data": SECRET, "mimeType": "image/png"}}});
        // (name, dlp.responses, plan, message, changed, finding paths)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a ResponsePlan,
            Value,
            bool,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "log_notification_redacted",
                "redact",
                &scanned,
                log.clone(),
                true,
                vec!["/data"],
            ),
            (
                "log_notification_redacted_under_block",
                "block",
                &scanned,
                log.clone(),
                true,
                vec!["/data"],
            ),
            (
                "log_notification_flagged",
                "flag",
                &scanned,
                log.clone(),
                false,
                vec!["/data"],
            ),
            (
                "progress_message_redacted",
                "redact",
                &scanned,
                progress,
                true,
                vec!["/message"],
            ),
            (
                "sampling_request_redacted",
                "redact",
                &scanned,
                sampling,
                true,
                vec!["/messages/0/content/text"],
            ),
            (
                "elicitation_request_redacted",
                "redact",
                &scanned,
                elicit,
                true,
                vec!["/message"],
            ),
            (
                // A log's data is JSON a client logs and shows: an object
                // shaped like an image there is no content item (fourth review).
                "image_shaped_log_data_is_text",
                "redact",
                &scanned,
                image,
                true,
                vec!["/data/data"],
            ),
            (
                "off_scans_nothing",
                "off",
                &scanned,
                log.clone(),
                false,
                vec![],
            ),
            (
                "list_stream_is_not_scanned",
                "redact",
                &listed,
                log.clone(),
                false,
                vec![],
            ),
            (
                "get_stream_is_scanned",
                "redact",
                &get_stream,
                log,
                true,
                vec!["/data"],
            ),
        ];
        for (name, responses, plan, mut msg, changed, paths) in cases {
            let policy = crate::policy::compile(&json!({"version": 1,
                "rules": [{"id": "all", "effect": "allow", "methods": ["*"]}],
                "dlp": {"responses": responses}}))
            .unwrap_or_else(|e| panic!("{e:?}"));
            let Some(obj) = msg.as_object_mut() else {
                panic!()
            };
            let r = rewrite_message(&policy, &caller, plan, &OtherTools::default(), obj);
            let found: Vec<&str> = r.findings.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(found, paths, "{name}");
            assert_eq!(r.changed, changed, "{name}");
            // What is changed no longer holds the secret; what is not, still does.
            assert_eq!(msg.to_string().contains(SECRET), !changed, "{name}: {msg}");
            if !paths.is_empty() {
                assert_eq!(r.scanned, "params", "{name}");
            }
        }
    }
    fn reader() -> Caller {
        Caller {
            subject: None,
            tenant: None,
            roles: vec!["reader".into()],
            via: Via::Anonymous,
        }
    }

    #[test]
    fn resource_templates_are_filtered_by_what_their_expansions_could_match() {
        let policy = crate::policy::compile(&json!({"version": 1, "rules": [
            {"id": "text", "effect": "allow", "roles": ["reader"], "resources": ["demo://resource/dynamic/text/*"]},
            {"id": "all-docs", "effect": "allow", "roles": ["reader"], "resources": ["docs://**"]},
            {"id": "no-private", "effect": "deny", "resources": ["docs://private/**"]}
        ]}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let plan = ResponsePlan {
            lists: vec![("1".into(), Catalogue::ResourceTemplates)],
            ..ResponsePlan::default()
        };
        let mut msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"resourceTemplates": [
            {"uriTemplate": "demo://resource/dynamic/text/{resourceId}", "name": "text"},
            {"uriTemplate": "demo://resource/dynamic/blob/{resourceId}", "name": "blob"},
            {"uriTemplate": "docs://public/{path}", "name": "public"},
            {"uriTemplate": "docs://private/{path}", "name": "private"},
            {"uriTemplate": "{scheme}://anything", "name": "no-start"},
            {"name": "no-template"}
        ]}});
        let Some(obj) = msg.as_object_mut() else {
            panic!()
        };
        let out = rewrite_message(&policy, &reader(), &plan, &OtherTools::default(), obj);
        let names: Vec<&str> = msg["result"]["resourceTemplates"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["text", "public"]);
        assert_eq!(out.removed_entries, 4);
        assert_eq!(msg["result"]["cacheScope"], "private");
    }

    #[test]
    fn completions_of_what_the_caller_cannot_see_are_emptied() {
        let policy = crate::policy::compile(&json!({"version": 1, "rules": [
            {"id": "p", "effect": "allow", "roles": ["reader"], "prompts": ["simple-prompt"]},
            {"id": "t", "effect": "allow", "roles": ["reader"], "resources": ["demo://resource/dynamic/text/*"]},
            {"id": "c", "effect": "allow", "methods": ["completion/complete"]}
        ]}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let caller = reader();
        let cases = [
            (
                "visible_prompt",
                json!({"ref": {"type": "ref/prompt", "name": "simple-prompt"}}),
                true,
            ),
            (
                "hidden_prompt",
                json!({"ref": {"type": "ref/prompt", "name": "completable-prompt"}}),
                false,
            ),
            (
                "visible_template",
                json!({"ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/text/{resourceId}"}}),
                true,
            ),
            (
                "hidden_template",
                json!({"ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/blob/{resourceId}"}}),
                false,
            ),
            (
                "visible_resource",
                json!({"ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/text/1"}}),
                true,
            ),
            (
                "unknown_ref_type",
                json!({"ref": {"type": "ref/tool", "name": "echo"}}),
                false,
            ),
            ("no_ref", json!({}), false),
        ];
        for (name, params, want) in cases {
            assert_eq!(
                crate::decide::completion_ref_visible(&policy, &caller, &params),
                want,
                "{name}"
            );
        }
        let plan = ResponsePlan {
            hidden_completions: vec!["4".into()],
            ..ResponsePlan::default()
        };
        let mut msg = json!({"jsonrpc": "2.0", "id": 4, "result": {"completion": {"values": ["Engineering", "Sales"], "total": 2}}});
        let Some(obj) = msg.as_object_mut() else {
            panic!()
        };
        let out = rewrite_message(&policy, &caller, &plan, &OtherTools::default(), obj);
        assert!(out.changed);
        assert_eq!(out.removed_entries, 2);
        assert_eq!(
            msg["result"]["completion"],
            json!({"values": [], "total": 0, "hasMore": false})
        );
    }

    #[test]
    fn kept_catalogue_entries_are_scanned_after_filtering() {
        let caller = crate::verdict::anonymous();
        let plan = ResponsePlan {
            lists: vec![("1".into(), Catalogue::Tools)],
            scans: vec!["1".into()],
            ..ResponsePlan::default()
        };
        let list = |hidden_description: &str, kept_description: &str| {
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
                {"name": "delete_repo", "description": hidden_description, "inputSchema": {"type": "object"}},
                {"name": "echo", "description": kept_description, "inputSchema": {"type": "object"}}
            ]}})
        };
        let error = json!({"jsonrpc": "2.0", "id": 1,
                           "error": {"code": -32603, "message": format!("backend said {SECRET}")}});
        // (name, dlp.responses, answer, what the kept answer says, finding paths)
        let cases = [
            (
                "secret_in_kept_description_redacted",
                "redact",
                list("fine", &format!("uses {SECRET}")),
                "[REDACTED:",
                vec!["/tools/0/description"],
            ),
            (
                "block_redacts_a_catalogue_instead_of_replacing_it",
                "block",
                list("fine", &format!("uses {SECRET}")),
                "[REDACTED:",
                vec!["/tools/0/description"],
            ),
            (
                "secret_in_removed_entry_is_not_a_finding",
                "redact",
                list(&format!("uses {SECRET}"), "fine"),
                "\"echo\"",
                vec![],
            ),
            (
                "flag_keeps_the_description",
                "flag",
                list("fine", &format!("uses {SECRET}")),
                SECRET,
                vec!["/tools/0/description"],
            ),
            (
                "error_answering_a_list_is_redacted_under_block",
                "block",
                error,
                "[REDACTED:",
                vec!["/message"],
            ),
        ];
        for (name, responses, answer, says, paths) in cases {
            let policy = crate::policy::compile(&json!({"version": 1,
                "rules": [{"id": "echo", "effect": "allow", "tools": ["echo"]}],
                "dlp": {"responses": responses}}))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let Value::Object(mut msg) = answer else {
                panic!("{name}")
            };
            let r = rewrite_message(&policy, &caller, &plan, &OtherTools::default(), &mut msg);
            let text = Value::Object(msg).to_string();
            assert!(text.contains(says), "{name}: {text}");
            assert!(!text.contains("delete_repo"), "{name}: {text}");
            let found: Vec<&str> = r.findings.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(found, paths, "{name}");
        }
    }

    #[test]
    fn one_response_shares_one_compile_budget_for_its_lists() {
        // A batch of list requests answered in one response, each answer
        // with fresh patterns: each had a budget of its own (twenty-ninth
        // review: 1,000 copies on a stream held a worker 47 s). One
        // response, one budget: past it the tools are kept, deferred to
        // their first call.
        use crate::catalogue::schemas::Listed;
        let policy = crate::policy::compile(&json!({"version": 1,
            "rules": [{"id": "all", "effect": "allow", "methods": ["*"]}],
            "schemas": {"input": "enforce"}}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let plan = ResponsePlan {
            schema_lists: vec!["5".into(), "6".into(), "7".into()],
            ..ResponsePlan::default()
        };
        let caller = reader();
        // Each copy: thirty tools of four patterns of 2,000-odd repeats
        // (~0.6 MiB of program a tool), within one list's 32 MiB; two
        // copies are not.
        let copy = |c: usize| {
            let tools: Vec<Value> = (0..30)
                .map(|t| {
                    let props: Map<String, Value> = ["a", "b", "c", "d"]
                        .iter()
                        .map(|k| {
                            (
                                (*k).to_owned(),
                                json!({"pattern": format!("{k}{{0,{}}}", 2000 + c * 100 + t)}),
                            )
                        })
                        .collect();
                    json!({"name": format!("t{t}"), "inputSchema": {"properties": props}})
                })
                .collect();
            json!({"jsonrpc": "2.0", "id": 5 + c, "result": {"tools": tools}})
        };
        let mut compiled = Vec::new();
        for c in 0..3 {
            let mut msg = copy(c);
            let Some(obj) = msg.as_object_mut() else {
                panic!("object")
            };
            let out = rewrite_message(&policy, &caller, &plan, &OtherTools::default(), obj);
            assert_eq!(out.schemas_declared.len(), 30, "copy {c}");
            compiled.push(
                out.schemas_declared
                    .iter()
                    .filter(|d| matches!(d.listed, Listed::Compiled(_)))
                    .count(),
            );
        }
        assert_eq!(compiled[0], 30, "{compiled:?}");
        assert!(compiled[1] < 30, "{compiled:?}");
        assert_eq!(compiled[2], 0, "{compiled:?}");
    }
}
