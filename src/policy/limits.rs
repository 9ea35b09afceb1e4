//! The `limits` section: sizes, JSON depth, batches, and the caps on the
//! size of tool results (per tool, with a default).

use crate::config::{index, keywords, Errors, ObjReader};
use crate::glob::Glob;
use crate::json::MAX_SUPPORTED_DEPTH;
use serde_json::Value;

/// The largest `max_response_bytes` (and so the largest result cap).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Entries of `result_caps` at most: each `tools/call` walks them in order.
pub const MAX_RESULT_CAPS: usize = 256;

/// One entry of `limits.result_caps`: the answers to calls of the tools its
/// patterns match may be at most `max_bytes` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultCap {
    pub tools: Vec<Glob>,
    pub max_bytes: usize,
}

/// Which part of the policy set a cap: named in the refusal's reason, so
/// the caller and the operator know which line to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapSource {
    /// `limits.result_caps[i]`, the first entry matching the tool.
    Entry(usize),
    /// `limits.max_result_bytes`: no entry matched.
    Default,
}

impl CapSource {
    /// The JSON path of the setting (`limits.result_caps[0]`).
    pub fn path(self) -> String {
        match self {
            CapSource::Entry(i) => format!("limits.result_caps[{i}]"),
            CapSource::Default => "limits.max_result_bytes".to_owned(),
        }
    }
}

/// The cap one answer is held to, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub max_bytes: usize,
    pub source: CapSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    Reject,
    Evaluate,
}

keywords!(BatchMode {
    Reject => "reject",
    Evaluate => "evaluate",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub max_json_depth: usize,
    pub batches: BatchMode,
    /// Entries of the rate-limit and budget table (see `meter::table`).
    pub metered_keys: u64,
    /// The request header naming the caller's conversation, for rate limits
    /// keyed by `session` (lower case); `None` = `Mcp-Session-Id`.
    pub conversation_header: Option<String>,
    /// `result_caps`: per-tool caps on the size of a `tools/call` answer, in
    /// policy order (the first entry matching the tool applies).
    pub result_caps: Vec<ResultCap>,
    /// `max_result_bytes`: the cap of a tool no entry matches; `None` = no
    /// cap beyond `max_response_bytes`.
    pub max_result_bytes: Option<usize>,
}

impl Limits {
    /// The cap on the answer to a call of `tool`: the first entry of
    /// `result_caps` whose patterns match it (policy order, as a glob list
    /// reads: a specific entry goes before a broad one), else
    /// `max_result_bytes`. `None`: only `max_response_bytes` bounds it.
    pub fn result_cap(&self, tool: &str) -> Option<Cap> {
        self.result_caps
            .iter()
            .enumerate()
            .find(|(_, c)| c.tools.iter().any(|g| g.matches(tool)))
            .map(|(i, c)| Cap {
                max_bytes: c.max_bytes,
                source: CapSource::Entry(i),
            })
            .or(self.max_result_bytes.map(|max_bytes| Cap {
                max_bytes,
                source: CapSource::Default,
            }))
    }

    /// The smallest cap the policy sets anywhere: what an answer is held to
    /// when the filter cannot know which tool produced it (`tasks/result`:
    /// a task id names no tool), so a capped tool's result cannot come back
    /// larger by way of a task.
    pub fn strictest_result_cap(&self) -> Option<Cap> {
        self.result_caps
            .iter()
            .enumerate()
            .map(|(i, c)| Cap {
                max_bytes: c.max_bytes,
                source: CapSource::Entry(i),
            })
            .chain(self.max_result_bytes.map(|max_bytes| Cap {
                max_bytes,
                source: CapSource::Default,
            }))
            .min_by_key(|c| c.max_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_json_depth: 64,
            batches: BatchMode::Reject,
            metered_keys: 16_384,
            conversation_header: None,
            result_caps: Vec::new(),
            max_result_bytes: None,
        }
    }
}

/// Compile the `limits` section at `$.limits` (`None` when absent: the defaults).
pub(crate) fn compile(v: Option<&Value>, errs: &mut Errors) -> Limits {
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
    if let Some(n) = r.uint("max_response_bytes", 1, MAX_RESPONSE_BYTES, errs) {
        out.max_response_bytes = n as usize;
    }
    if let Some(n) = r.uint("max_json_depth", 2, MAX_SUPPORTED_DEPTH as u64, errs) {
        out.max_json_depth = n as usize;
    }
    if let Some(b) = r.keyword("batches", errs) {
        out.batches = b;
    }
    // Shared data cannot be deleted in the proxy-wasm ABI, so the table size
    // is the memory bound: about 60 bytes per entry.
    if let Some(n) = r.uint(
        "metered_keys",
        crate::meter::table::WAYS as u64,
        1 << 22,
        errs,
    ) {
        out.metered_keys = n;
    }
    if let Some(h) = r.string("conversation_header", errs) {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid && !h.starts_with(':') {
            out.conversation_header = Some(h.to_owned());
        } else {
            errs.push(
                "$.limits.conversation_header",
                "a header name in lower case: letters, digits and -",
            );
        }
    }
    // After max_response_bytes: a cap above it never applies (a larger
    // answer is refused as response-unfilterable before any cap is read).
    let most = out.max_response_bytes;
    if let Some(n) = r.uint("max_result_bytes", 1, MAX_RESPONSE_BYTES, errs) {
        out.max_result_bytes = cap_within(n, most, "$.limits.max_result_bytes", errs);
    }
    if let Some(v) = r.get("result_caps") {
        out.result_caps = compile_result_caps(v, most, errs);
    }
    r.finish(errs);
    out
}

/// A cap of `n` bytes, unless it is above `max_response_bytes` (then it
/// would never apply: refused, so nobody believes a result is capped at a
/// size the filter never reads).
fn cap_within(n: u64, most: usize, path: &str, errs: &mut Errors) -> Option<usize> {
    match usize::try_from(n) {
        Ok(n) if n <= most => Some(n),
        _ => {
            errs.push(
                path,
                format!("{n} is above limits.max_response_bytes ({most}): an answer that large is refused as response-unfilterable before any cap applies; raise max_response_bytes or lower the cap"),
            );
            None
        }
    }
}

/// `$.limits.result_caps`: `[{"tools": [patterns], "max_bytes": n}, ...]`.
fn compile_result_caps(v: &Value, most: usize, errs: &mut Errors) -> Vec<ResultCap> {
    let p = "$.limits.result_caps";
    let Value::Array(entries) = v else {
        errs.push(
            p,
            format!("expected an array, found {}", crate::config::type_name(v)),
        );
        return Vec::new();
    };
    if entries.len() > MAX_RESULT_CAPS {
        errs.push(
            p,
            format!("{} entries; at most {MAX_RESULT_CAPS}", entries.len()),
        );
    }
    let mut out = Vec::new();
    // The entry whose patterns hold a lone `*`: every later entry is
    // shadowed by it (first match wins), which is never what was meant.
    let mut catch_all: Option<usize> = None;
    for (i, entry) in entries.iter().enumerate() {
        let ep = index(p, i);
        let Some(mut r) = ObjReader::new(entry, &ep, errs) else {
            continue;
        };
        let tools = match r.required("tools", errs) {
            Some(v) => tool_patterns(v, &format!("{ep}.tools"), errs),
            None => None,
        };
        let max_bytes = match r.required("max_bytes", errs) {
            Some(_) => r
                .uint("max_bytes", 1, MAX_RESPONSE_BYTES, errs)
                .and_then(|n| cap_within(n, most, &format!("{ep}.max_bytes"), errs)),
            None => None,
        };
        r.finish(errs);
        if let Some(first) = catch_all {
            errs.push(
                &ep,
                format!("never applies: $.limits.result_caps[{first}] matches every tool first (the first matching entry applies; put specific entries before broad ones, or use max_result_bytes for the rest)"),
            );
        }
        let (Some(tools), Some(max_bytes)) = (tools, max_bytes) else {
            continue;
        };
        if catch_all.is_none() && tools.iter().any(|t| t.chars().all(|c| c == '*')) {
            catch_all = Some(i);
        }
        out.push(ResultCap {
            tools: tools.iter().map(|t| Glob::new(t)).collect(),
            max_bytes,
        });
    }
    out
}

/// Tool-name patterns as a rule's `tools` reads them: at least one,
/// none empty, none holding a character no tool name holds (it would
/// never match: a cap that silently never applies).
fn tool_patterns(v: &Value, p: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let list = crate::config::string_list(v, p, errs)?;
    let mut ok = true;
    if list.is_empty() {
        errs.push(p, "needs at least one pattern");
        ok = false;
    }
    for (i, pattern) in list.iter().enumerate() {
        // Wildcards read as letters: what is left must be a tool name.
        let probe = pattern.replace(['*', '?'], "x");
        if let Some(problem) = crate::jsonrpc::name_problem(crate::jsonrpc::NameKind::Tool, &probe)
        {
            let problem = match pattern.is_empty() {
                true => "patterns must not be empty strings".to_owned(),
                false => format!("{pattern:?} never matches: a name that {problem} is refused"),
            };
            errs.push(index(p, i), problem);
            ok = false;
        }
    }
    ok.then_some(list)
}
