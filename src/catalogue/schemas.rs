//! Calls checked against the schemas their server declared (issue #16 item
//! 6): the `$.schemas` section, the memory of each tool's `inputSchema` and
//! `outputSchema` per upstream cluster, and the checks of a call's
//! `arguments` and of a result's `structuredContent`.
//!
//! Where the schemas live: Envoy's shared data, one key per upstream cluster
//! and tool (`<digest>\n<JSON>`), written by the VM that read a `tools/list`
//! answer, so a call on another worker, or in a VM that never saw a list,
//! finds them. Compiled once per VM and definition: each VM keeps the
//! compiled schemas by the digest of what is stored ([`compiled`]); a call
//! reads the key, and its first line finds the compiled schemas without
//! parsing anything. A list compiles each definition it shows (to say what
//! cannot be checked) and so fills the cache of the VM that read it.
//!
//! Pure but for that cache: a `thread_local` (one per Wasm VM, which is
//! single-threaded; one per test thread natively), a memo of a pure function
//! of its key, so what it holds never changes a decision.

use super::schema::{CheckBudget, Schema, Unsupported, Violation};
use crate::config::{index, keywords, Errors, ObjReader};
use crate::json::{canonical, sha256_hex};
use crate::jsonrpc::{name_problem, NameKind};
use crate::rule_id::RuleId;
use crate::store::{SharedStore, StoreError};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// What a check does when a value does not validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Refuse the call (-32010, rule `input-schema`) or replace the result
    /// (-32010, rule `output-schema`).
    Enforce,
    /// Forward; audit and count.
    Warn,
    Off,
}

keywords!(SchemaMode {
    Enforce => "enforce",
    Warn => "warn",
    Off => "off",
});

/// What a call of a tool whose schemas no list of its upstream showed this
/// Envoy gets, when a check is `enforce` (`unseen_calls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnseenCalls {
    /// Refused until a list showed the tool (as pins refuse `unseen`).
    Refuse,
    /// Forwarded unchecked (audited and counted as `warned`).
    Allow,
}

keywords!(UnseenCalls {
    Refuse => "refuse",
    Allow => "allow",
});

/// Keywords `ignore_keywords` may name: those the validator does not
/// implement. Naming one says "check the rest of such a schema".
pub const IGNORABLE: [&str; 5] = [
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
    "$id",
];

/// The compiled `$.schemas` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaPolicy {
    pub input: SchemaMode,
    pub output: SchemaMode,
    pub unseen_calls: UnseenCalls,
    /// Unsupported keywords a schema may hold and still be checked (the
    /// rest of it); any other makes the tool unverifiable.
    pub ignore_keywords: Vec<String>,
}

impl Default for SchemaPolicy {
    fn default() -> Self {
        SchemaPolicy {
            input: SchemaMode::Off,
            output: SchemaMode::Off,
            unseen_calls: UnseenCalls::Refuse,
            ignore_keywords: Vec::new(),
        }
    }
}

impl SchemaPolicy {
    /// Whether lists are read and remembered and calls looked up at all.
    pub fn active(&self) -> bool {
        self.input != SchemaMode::Off || self.output != SchemaMode::Off
    }

    /// The unsupported keywords of `schema` the policy does not ignore.
    pub fn unverifiable<'s>(&self, schema: &'s Schema) -> Option<&'s Unsupported> {
        self.first_unchecked(&schema.unsupported)
    }

    /// The first of `places` that `ignore_keywords` does not name.
    pub fn first_unchecked<'u>(&self, places: &'u [Unsupported]) -> Option<&'u Unsupported> {
        places
            .iter()
            .find(|u| !self.ignore_keywords.contains(&u.keyword))
    }
}

/// Compile `$.schemas` (`path`); absent = off.
pub fn compile(section: Option<&Value>, path: &str, errs: &mut Errors) -> Option<SchemaPolicy> {
    let mut policy = SchemaPolicy::default();
    let Some(v) = section else {
        return Some(policy);
    };
    let before = errs.0.len();
    let mut r = ObjReader::new(v, path, errs)?;
    policy.input = r.keyword("input", errs).unwrap_or(SchemaMode::Off);
    policy.output = r.keyword("output", errs).unwrap_or(SchemaMode::Off);
    policy.unseen_calls = r
        .keyword("unseen_calls", errs)
        .unwrap_or(UnseenCalls::Refuse);
    let ignore_path = r.field_path("ignore_keywords");
    if let Some(list) = r.strings("ignore_keywords", errs) {
        for (i, k) in list.iter().enumerate() {
            if !IGNORABLE.contains(&k.as_str()) {
                errs.push(
                    index(&ignore_path, i),
                    format!(
                        "{k:?} is not a keyword the validator skips; the ones that can be ignored are {}",
                        IGNORABLE.join(", ")
                    ),
                );
            }
        }
        policy.ignore_keywords = list;
    }
    r.finish(errs);
    (errs.0.len() == before).then_some(policy)
}

// --- What a list declared, compiled. ---

/// Stored schemas larger than this are not kept: the tool is unverifiable.
pub const MAX_STORED_BYTES: usize = 64 * 1024;
/// Tools remembered per upstream; past it a new tool stays unseen.
pub const MAX_TOOLS: usize = 1024;
/// Compiled definitions kept per VM; past it the cache starts again.
const MAX_CACHED: usize = 256;

/// One tool's declared schemas, compiled.
pub struct ToolSchemas {
    /// Lower-case hex SHA-256 of the stored JSON (what the cache is keyed by).
    pub digest: String,
    pub input: Option<Schema>,
    pub output: Option<Schema>,
    /// Bytes the compiled form holds, estimated ([`MAX_CACHED_BYTES`]).
    heap_bytes: usize,
}

impl fmt::Debug for ToolSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ToolSchemas({})", self.digest)
    }
}

impl PartialEq for ToolSchemas {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for ToolSchemas {}

/// What is stored of one `tools/list` entry: `{"i": inputSchema, "o":
/// outputSchema}` (null when absent), canonical JSON so one definition has
/// one digest.
pub fn stored_form(entry: &Map<String, Value>) -> String {
    // The canonical form of `{"i": inputSchema, "o": outputSchema}`, written
    // without building (deep-copying) that object: lists of large schemas
    // spent most of their time copying them.
    let part = |member: &str| {
        entry
            .get(member)
            .map_or_else(|| "null".to_owned(), canonical)
    };
    format!(
        "{{\"i\":{},\"o\":{}}}",
        part("inputSchema"),
        part("outputSchema")
    )
}

fn compile_stored(text: &str, digest: String) -> Option<ToolSchemas> {
    // From the `str`, as every other parse in the module (`json::parse_checked`):
    // `from_slice` would instantiate serde_json's whole reader a second time
    // (~30 KB of Wasm).
    let doc: Value = serde_json::from_str(text).ok()?;
    let one = |v: Option<&Value>| match v {
        None | Some(Value::Null) => None,
        Some(s) => Some(Schema::compile(s)),
    };
    let input = one(doc.get("i"));
    let output = one(doc.get("o"));
    let heap_bytes = [&input, &output]
        .into_iter()
        .flatten()
        .map(Schema::heap_bytes)
        .sum::<usize>();
    Some(ToolSchemas {
        input,
        output,
        digest,
        heap_bytes,
    })
}

/// The weight of the patterns the cache may hold together (in KiB of
/// program: 64 MiB, 64 schemas at their 1 MiB bound); past it the cache
/// starts again.
const MAX_CACHED_REGEX_WEIGHT: u64 = 64 * 1024;
/// The bytes the cache's compiled nodes may hold together; past it the
/// cache starts again. Entries alone did not bound it: a 64 KiB schema of
/// 21,600 `{}` compiled to ~10 MiB, and 15 such tools per list took the VM
/// past 1 GiB within six lists (twentieth review M1).
const MAX_CACHED_BYTES: usize = 64 << 20;

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<ToolSchemas>>> = RefCell::new(HashMap::new());
    /// The weight of the patterns [`CACHE`] holds.
    static CACHED_WEIGHT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The bytes of the compiled forms [`CACHE`] holds.
    static CACHED_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl ToolSchemas {
    fn regex_weight(&self) -> u64 {
        [&self.input, &self.output]
            .into_iter()
            .flatten()
            .map(|s| u64::from(s.regex_weight()))
            .sum()
    }
}

/// The compiled schemas of a stored form with `digest`, compiled at most once
/// per VM (`None` when the text is not what this module stores).
pub fn compiled(digest: &str, text: impl FnOnce() -> Option<String>) -> Option<Rc<ToolSchemas>> {
    if let Some(hit) = cached(digest) {
        return Some(hit);
    }
    let fresh = Rc::new(compile_stored(&text()?, digest.to_owned())?);
    let weight = fresh.regex_weight();
    let bytes = fresh.heap_bytes;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let held = CACHED_WEIGHT.with(std::cell::Cell::get);
        let held_bytes = CACHED_BYTES.with(std::cell::Cell::get);
        if c.len() >= MAX_CACHED
            || held + weight > MAX_CACHED_REGEX_WEIGHT
            || held_bytes + bytes > MAX_CACHED_BYTES
        {
            c.clear();
            CACHED_WEIGHT.with(|w| w.set(0));
            CACHED_BYTES.with(|b| b.set(0));
        }
        c.insert(digest.to_owned(), fresh.clone());
        CACHED_WEIGHT.with(|w| w.set(w.get() + weight));
        CACHED_BYTES.with(|b| b.set(b.get() + bytes));
    });
    Some(fresh)
}

/// The compiled schemas with `digest`, when this VM holds them.
fn cached(digest: &str) -> Option<Rc<ToolSchemas>> {
    CACHE.with(|c| c.borrow().get(digest).cloned())
}

/// One listed tool's schemas: what to store, and what their compiled forms
/// cannot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub tool: String,
    /// `None`: larger than [`MAX_STORED_BYTES`].
    pub stored: Option<(String, String)>,
    pub listed: Listed,
}

/// What the list's reading learnt of a tool's schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// Larger than [`MAX_STORED_BYTES`]: not kept, unverifiable.
    TooLarge,
    /// Compiled: the places the input and output schemas cannot check. Not
    /// the compiled forms themselves: a list's tools were all held at once
    /// until the list was remembered, and 125 tools of ~4 MiB compiled each
    /// took a VM (twenty-third review); each stays in the VM's cache, which
    /// is bounded, for the calls.
    Compiled(Vec<Unsupported>),
    /// Not compiled while the list was read: the list had spent its
    /// [`CompileBudget`]. Kept like the others; compiled at the tool's first
    /// call, where what it cannot check is found.
    Deferred,
}

/// What one response (every list answer it holds, every copy a stream
/// repeats), or one request body, may compile afresh: 32 MiB of pattern
/// program, 16 MiB of compiled nodes (twice what one schema may compile to;
/// 64 MiB was 49 tools of 1,500 small properties, ~3 MB of schema, 0.1 s natively)
/// and [`MAX_TOOLS`] schemas.
/// Each schema is bounded on its own; a list was not (twenty-fourth review:
/// 26,000 tools of four ~200 KiB patterns compiled for 66 s, and the cache,
/// past its 64 MiB of patterns, started again on every such list), nor a
/// batch of calls of many tools the cache no longer held (twenty-seventh
/// review: 9,000 calls, 11.9 s, all forwarded; with larger schemas the
/// compiled forms each call kept took the VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileBudget {
    regex_weight: u64,
    bytes: usize,
    schemas: usize,
}

impl Default for CompileBudget {
    fn default() -> Self {
        CompileBudget {
            regex_weight: 32 * 1024,
            bytes: 16 << 20,
            schemas: MAX_TOOLS,
        }
    }
}

impl CompileBudget {
    fn spent(&self) -> bool {
        self.regex_weight == 0 || self.bytes == 0 || self.schemas == 0
    }

    fn charge(&mut self, compiled: &ToolSchemas) {
        self.regex_weight = self.regex_weight.saturating_sub(compiled.regex_weight());
        self.bytes = self.bytes.saturating_sub(compiled.heap_bytes);
        self.schemas = self.schemas.saturating_sub(1);
    }
}

/// One `tools/list` entry's schemas, compiled (through the cache): what a
/// call of it is checked against (the CLI reads a saved list with it).
pub fn known(entry: &Map<String, Value>) -> Known {
    let Some((digest, text)) = kept(entry) else {
        return Known::TooLarge;
    };
    match compiled(&digest, || Some(text)) {
        Some(c) => Known::Declared(c),
        None => Known::Unavailable,
    }
}

/// What is kept of an entry: the digest and its stored form; `None` past
/// [`MAX_STORED_BYTES`].
fn kept(entry: &Map<String, Value>) -> Option<(String, String)> {
    let text = stored_form(entry);
    (text.len() <= MAX_STORED_BYTES).then(|| (sha256_hex(text.as_bytes()), text))
}

/// Read one `tools/list` entry (compiled through the VM's cache, within
/// what is left of the list's `budget`).
pub fn declared(tool: &str, entry: &Map<String, Value>, budget: &mut CompileBudget) -> Declared {
    let Some((digest, text)) = kept(entry) else {
        return Declared {
            tool: tool.to_owned(),
            stored: None,
            listed: Listed::TooLarge,
        };
    };
    let schemas = match cached(&digest) {
        Some(c) => Some(c),
        None if budget.spent() => None,
        None => compiled(&digest, || Some(text.clone())).inspect(|c| budget.charge(c)),
    };
    let listed = match schemas {
        Some(c) => Listed::Compiled(
            [&c.input, &c.output]
                .into_iter()
                .flatten()
                .flat_map(|s| s.unsupported.iter().cloned())
                .collect(),
        ),
        None => Listed::Deferred,
    };
    Declared {
        tool: tool.to_owned(),
        stored: Some((digest, text)),
        listed,
    }
}

// --- Memory: per upstream cluster and tool, in shared data. ---

const KEY_PREFIX: &str = "mcp_firewall/schemas";
const TOO_LARGE: &str = "too-large";
const ATTEMPTS: usize = 4;

fn key(upstream: &str, tool: &str) -> String {
    let h = sha256_hex(format!("{upstream}\u{0}{tool}").as_bytes());
    format!("{KEY_PREFIX}/{}", h.get(..32).unwrap_or(&h))
}

fn index_key(upstream: &str) -> String {
    let h = sha256_hex(upstream.as_bytes());
    format!("{KEY_PREFIX}/index/{}", h.get(..32).unwrap_or(&h))
}

/// What is known of a tool's schemas when a call of it is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// No list of the upstream showed the tool to this Envoy (or more than
    /// [`MAX_TOOLS`] tools of it were listed).
    Unseen,
    /// Shared data failed, the upstream is unknown, or what is stored cannot
    /// be read.
    Unavailable,
    /// The last list showed a definition larger than [`MAX_STORED_BYTES`].
    TooLarge,
    /// Not in the VM's cache, and the request has spent its
    /// [`CompileBudget`]: not compiled, refused rather than guessed.
    TooCostly,
    Declared(Rc<ToolSchemas>),
}

/// What `upstream`'s lists declared for `tool`.
pub fn recall<S: SharedStore + ?Sized>(
    store: &S,
    upstream: &str,
    tool: &str,
    budget: &std::cell::Cell<CompileBudget>,
) -> Known {
    let bytes = match store.get(&key(upstream, tool)) {
        Ok((Some(b), _)) => b,
        Ok((None, _)) => return Known::Unseen,
        Err(_) => return Known::Unavailable,
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Known::Unavailable;
    };
    if text == TOO_LARGE {
        return Known::TooLarge;
    }
    let Some((digest, json)) = text.split_once('\n') else {
        return Known::Unavailable;
    };
    if let Some(hit) = cached(digest) {
        return Known::Declared(hit);
    }
    let mut left = budget.get();
    if left.spent() {
        return Known::TooCostly;
    }
    let known = match compiled(digest, || Some(json.to_owned())) {
        Some(s) => {
            left.charge(&s);
            Known::Declared(s)
        }
        None => Known::Unavailable,
    };
    budget.set(left);
    known
}

/// Remember what one list of `upstream` declared. The last list wins: a
/// server's schema is its own contract (a server that loosens it for one
/// caller loosens what it receives itself). Each key is read first and
/// written only when it changed (a read takes Envoy's shared lock, a write
/// the exclusive one); a tool is registered in the upstream's index before
/// its first write, so at most [`MAX_TOOLS`] keys exist per upstream.
pub fn remember<S: SharedStore + ?Sized>(
    store: &S,
    upstream: &str,
    declared: &[Declared],
) -> Result<(), StoreError> {
    // The index is read once per list, not once per tool: a list of 42,000
    // new names read and scanned the whole index (up to 1,024 names) for
    // each, 3.75 s per list (thirtieth review). A tool the full index does
    // not hold costs nothing more.
    let mut index = Index::read(store, upstream)?;
    let mut failed = None;
    let mut new = Vec::new();
    for d in declared {
        if name_problem(NameKind::Tool, &d.tool).is_some() {
            continue;
        }
        // Room is what the index has left after the new tools already
        // met (a name met twice takes two: only ever fewer kept).
        if !index.holds(&d.tool) && index.0.len() + new.len() >= MAX_TOOLS {
            continue;
        }
        let value = match &d.stored {
            Some((digest, text)) => format!("{digest}\n{text}"),
            None => TOO_LARGE.to_owned(),
        };
        let k = key(upstream, &d.tool);
        let result = match store.get(&k) {
            Ok((Some(old), _)) if old == value.as_bytes() => Ok(()),
            Ok((Some(_), cas)) => store.set(&k, value.as_bytes(), cas),
            Ok((None, cas)) => {
                new.push((d.tool.as_str(), k, value, cas));
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            failed = Some(e);
        }
    }
    if !new.is_empty() {
        // Registered before they are written: a key outside the index would
        // be one more than the index bounds.
        index = Index::register(store, upstream, new.iter().map(|n| n.0))?;
        for (tool, k, value, cas) in new {
            if !index.holds(tool) {
                continue;
            }
            if let Err(e) = store.set(&k, value.as_bytes(), cas) {
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The names an upstream's schemas are kept for (at most [`MAX_TOOLS`]).
struct Index(std::collections::HashSet<String>);

impl Index {
    fn decode(bytes: Option<&[u8]>) -> Index {
        let text = bytes
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("");
        Index(text.lines().map(str::to_owned).collect())
    }

    fn read<S: SharedStore + ?Sized>(store: &S, upstream: &str) -> Result<Index, StoreError> {
        let (old, _) = store.get(&index_key(upstream))?;
        Ok(Index::decode(old.as_deref()))
    }

    fn holds(&self, tool: &str) -> bool {
        self.0.contains(tool)
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_TOOLS
    }

    /// Add `tools` to `upstream`'s index while it has room (one write for
    /// them all); the index as written.
    fn register<'a, S: SharedStore + ?Sized>(
        store: &S,
        upstream: &str,
        tools: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Index, StoreError> {
        let k = index_key(upstream);
        for _ in 0..ATTEMPTS {
            let (old, cas) = store.get(&k)?;
            let mut text = old
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("")
                .to_owned();
            let mut index = Index::decode(Some(text.as_bytes()));
            let mut added = false;
            for tool in tools.clone() {
                if index.full() {
                    break;
                }
                if index.0.insert(tool.to_owned()) {
                    text.push_str(tool);
                    text.push('\n');
                    added = true;
                }
            }
            if !added {
                return Ok(index);
            }
            match store.set(&k, text.as_bytes(), cas) {
                Ok(()) => return Ok(index),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

// --- The checks. ---

/// Which check: a call's arguments or a result's `structuredContent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

impl Side {
    pub fn rule(self) -> RuleId {
        match self {
            Side::Input => RuleId::InputSchema,
            Side::Output => RuleId::OutputSchema,
        }
    }

    fn member(self) -> &'static str {
        match self {
            Side::Input => "inputSchema",
            Side::Output => "outputSchema",
        }
    }
}

/// A value that did not pass its check, or a check that could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFinding {
    pub side: Side,
    pub tool: String,
    /// JSON pointer into the arguments or `structuredContent` (`None` when
    /// nothing was checked: the schema unseen or unverifiable).
    pub pointer: Option<String>,
    pub reason: String,
    /// What the finding does: refuse/block (`enforce`), or audit (`warn`,
    /// `unseen_calls: allow`).
    pub enforced: bool,
}

impl SchemaFinding {
    /// With what DLP finds in its pointer and reason redacted. Both name the
    /// members of the value checked, which are the caller's or the server's
    /// text (`{"ghp_…": 1}`), and both reach the audit trail and the refusal;
    /// the check runs before DLP has redacted anything (the value as sent is
    /// what the schema describes).
    pub fn screened(mut self, scanner: &crate::dlp::Scanner) -> SchemaFinding {
        if let Some(p) = self.pointer.take() {
            let screened = scanner.redacted_pointer(&p);
            // The reason says where, in the same words: said with the screened pointer.
            if !p.is_empty() {
                self.reason = self.reason.replace(&p, &screened);
            }
            self.pointer = Some(screened);
        }
        self.reason = scanner.redacted(&self.reason);
        self
    }

    /// `error.data` of the -32010 refusal: `rule`, `reason`, and the
    /// `pointer` when a value failed.
    pub fn error_data(&self) -> Value {
        let mut data = json!({
            "rule": self.side.rule().as_str(),
            "reason": self.reason,
            "tool": self.tool,
        });
        if let Some(p) = &self.pointer {
            data["pointer"] = json!(p);
        }
        data
    }

    /// The `error` member of the refusal (a call) or of the replaced result.
    pub fn error(&self) -> Value {
        let message = match self.side {
            Side::Input => "arguments do not match the tool's inputSchema",
            Side::Output => {
                "result refused: structuredContent does not match the tool's outputSchema"
            }
        };
        json!({"code": crate::reply::DENIED, "message": message, "data": self.error_data()})
    }
}

/// Clipped pointer: a member name is the caller's (or server's) text.
const MAX_POINTER: usize = 256;

fn clip(p: String) -> String {
    if p.len() <= MAX_POINTER {
        return p;
    }
    let mut end = MAX_POINTER;
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &p[..end])
}

/// Check `value` (a call's `arguments`, `{}` when absent, or a result's
/// `structuredContent`) of `tool` against what is known of its schemas,
/// under `mode` (not `Off`). `None`: it passes.
pub fn check(
    policy: &SchemaPolicy,
    side: Side,
    mode: SchemaMode,
    tool: &str,
    known: &Known,
    value: Option<&Value>,
    budget: &std::cell::Cell<CheckBudget>,
) -> Option<SchemaFinding> {
    let enforce = mode == SchemaMode::Enforce;
    let finding = |pointer: Option<String>, reason: String, enforced: bool| SchemaFinding {
        side,
        tool: tool.to_owned(),
        pointer,
        reason,
        enforced,
    };
    let unknown = |why: &str| {
        let refuse = enforce && policy.unseen_calls == UnseenCalls::Refuse;
        let then = match refuse {
            true => "list the tools, then call again (schemas.unseen_calls: refuse)",
            false => "forwarded unchecked",
        };
        Some(finding(
            None,
            format!("tool {tool:?}: {why}; {then}"),
            refuse,
        ))
    };
    let schemas = match known {
        Known::Declared(s) => s,
        // On both sides: a result of a call whose schemas could not be
        // compiled is not passed unchecked.
        Known::TooCostly => {
            return Some(finding(
                None,
                format!("tool {tool:?}: compiling its schemas would pass what one request may compile (32 MiB of patterns, 64 MiB of nodes, 1,024 schemas); refusing rather than guessing"),
                enforce,
            ))
        }
        // Results: the call was judged when it went out; a tool no list
        // showed has no output contract to hold a result to.
        _ if side == Side::Output => return None,
        Known::Unseen => {
            return unknown("no tools/list of this server showed its inputSchema to this Envoy yet")
        }
        Known::TooLarge => {
            return Some(finding(
                None,
                format!(
                    "tool {tool:?}: its schemas are larger than {MAX_STORED_BYTES} bytes and were not kept, so they cannot be checked"
                ),
                enforce,
            ))
        }
        Known::Unavailable => {
            return Some(finding(
                None,
                format!("tool {tool:?}: the schemas its server declared cannot be read; refusing rather than guessing"),
                enforce,
            ))
        }
    };
    let schema = match side {
        Side::Input => schemas.input.as_ref(),
        Side::Output => schemas.output.as_ref(),
    };
    let Some(schema) = schema else {
        return match side {
            // MCP requires an inputSchema: an entry without one declares
            // nothing its arguments can be held to.
            Side::Input => Some(finding(
                None,
                format!("tool {tool:?}: its tools/list entry declares no inputSchema (MCP requires one), so its arguments cannot be checked"),
                enforce,
            )),
            Side::Output => None,
        };
    };
    if let Some(u) = policy.unverifiable(schema) {
        let why = match u.why {
            "" => "which this filter does not implement".to_owned(),
            w => format!("({w})"),
        };
        return Some(finding(
            None,
            format!(
                "tool {tool:?}: its {} holds {:?} at {:?}, {why}, so it cannot be fully checked (schemas.ignore_keywords checks the rest)",
                side.member(),
                u.keyword,
                u.pointer
            ),
            enforce,
        ));
    }
    let empty = Value::Object(Map::new());
    let value = match (side, value) {
        (_, Some(v)) => v,
        (Side::Input, None) => &empty,
        (Side::Output, None) => {
            return Some(finding(
                Some(String::new()),
                format!(
                    "tool {tool:?} declares an outputSchema but its result has no structuredContent"
                ),
                enforce,
            ))
        }
    };
    let Violation {
        pointer,
        keyword,
        message,
    } = {
        let mut left = budget.get();
        let checked = schema.validate_within(value, &mut left);
        budget.set(left);
        checked.err()?
    };
    let pointer = clip(pointer);
    let shown = match pointer.as_str() {
        "" => "the top level".to_owned(),
        p => p.to_owned(),
    };
    let what = match side {
        Side::Input => "the arguments do",
        Side::Output => "structuredContent does",
    };
    Some(finding(
        Some(pointer),
        format!(
            "tool {tool:?}: {what} not match its {} at {shown}: {message} ({keyword})",
            side.member()
        ),
        enforce,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn section(v: Value) -> Result<SchemaPolicy, Vec<String>> {
        let mut errs = Errors::default();
        let p = compile(Some(&v), "$.schemas", &mut errs);
        match (p, errs.is_empty()) {
            (Some(p), true) => Ok(p),
            _ => Err(errs.0.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn section_defaults_off_and_names_the_path_of_every_mistake() {
        let mut errs = Errors::default();
        assert_eq!(
            compile(None, "$.schemas", &mut errs),
            Some(SchemaPolicy::default())
        );
        assert!(!SchemaPolicy::default().active());
        let good = section(
            json!({"input": "enforce", "output": "warn", "unseen_calls": "allow", "ignore_keywords": ["unevaluatedProperties"]}),
        );
        assert_eq!(
            good,
            Ok(SchemaPolicy {
                input: SchemaMode::Enforce,
                output: SchemaMode::Warn,
                unseen_calls: UnseenCalls::Allow,
                ignore_keywords: vec!["unevaluatedProperties".into()],
            })
        );
        let cases: &[(&str, Value, &[&str])] = &[
            ("unknown_mode", json!({"input": "block"}), &["$.schemas.input: \"block\" is not one of enforce, warn, off"]),
            ("unknown_unseen", json!({"unseen_calls": "deny"}), &["$.schemas.unseen_calls: \"deny\" is not one of refuse, allow"]),
            (
                "keyword_it_checks_cannot_be_ignored",
                json!({"ignore_keywords": ["$dynamicRef", "required"]}),
                &["$.schemas.ignore_keywords[1]: \"required\" is not a keyword the validator skips; the ones that can be ignored are unevaluatedProperties, unevaluatedItems, $dynamicRef, $recursiveRef, $id"],
            ),
            ("unknown_field", json!({"inputs": "enforce"}), &["$.schemas.inputs: unknown field"]),
            ("not_an_object", json!("enforce"), &["$.schemas: expected an object, found a string"]),
        ];
        for (name, v, want) in cases {
            assert_eq!(
                section(v.clone()),
                Err(want.iter().map(|s| s.to_string()).collect()),
                "{name}"
            );
        }
    }

    fn declared_of(tool: &str, input: Value, output: Option<Value>) -> Declared {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(tool));
        entry.insert("inputSchema".into(), input);
        if let Some(o) = output {
            entry.insert("outputSchema".into(), o);
        }
        declared(tool, &entry, &mut CompileBudget::default())
    }

    /// The compiled form of what `d` stored (from the VM's cache).
    fn compiled_of(d: &Declared) -> Rc<ToolSchemas> {
        let Some((digest, text)) = d.stored.clone() else {
            panic!("stored");
        };
        compiled(&digest, || Some(text)).unwrap_or_else(|| panic!("compiles"))
    }

    #[test]
    fn calls_are_judged_by_what_the_upstream_declared() {
        let store = MemoryStore::new();
        let strict = json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": false});
        let odd = json!({"type": "object", "unevaluatedProperties": false});
        let r = remember(
            &store,
            "up",
            &[
                declared_of("search", strict, None),
                declared_of("odd", odd, None),
            ],
        );
        assert_eq!(r, Ok(()));
        let enforce = SchemaPolicy {
            input: SchemaMode::Enforce,
            ..SchemaPolicy::default()
        };
        let lenient = SchemaPolicy {
            unseen_calls: UnseenCalls::Allow,
            ignore_keywords: vec!["unevaluatedProperties".into()],
            ..enforce.clone()
        };
        // (case, policy, mode, upstream, tool, arguments, want: None = passes,
        //  Some((pointer, enforced)))
        type Want = Option<(Option<&'static str>, bool)>;
        type Case<'a> = (
            &'a str,
            &'a SchemaPolicy,
            SchemaMode,
            &'a str,
            &'a str,
            Option<Value>,
            Want,
        );
        let cases: Vec<Case> = vec![
            (
                "valid_call_passes",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "search",
                Some(json!({"q": "x"})),
                None,
            ),
            (
                "missing_required_refused",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "search",
                Some(json!({})),
                Some((Some(""), true)),
            ),
            (
                "absent_arguments_are_an_empty_object",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "search",
                None,
                Some((Some(""), true)),
            ),
            (
                "wrong_type_refused",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "search",
                Some(json!({"q": 1})),
                Some((Some("/q"), true)),
            ),
            (
                "extra_member_refused_at_its_pointer",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "search",
                Some(json!({"q": "x", "extra": 1})),
                Some((Some("/extra"), true)),
            ),
            (
                "warn_records_but_forwards",
                &enforce,
                SchemaMode::Warn,
                "up",
                "search",
                Some(json!({"q": 1})),
                Some((Some("/q"), false)),
            ),
            (
                "unknown_tool_refused_under_enforce",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "delete_all",
                Some(json!({})),
                Some((None, true)),
            ),
            (
                "unknown_upstream_is_unseen",
                &enforce,
                SchemaMode::Enforce,
                "other",
                "search",
                Some(json!({"q": "x"})),
                Some((None, true)),
            ),
            (
                "unseen_calls_allow_forwards_unseen",
                &lenient,
                SchemaMode::Enforce,
                "up",
                "delete_all",
                Some(json!({})),
                Some((None, false)),
            ),
            (
                "unsupported_keyword_makes_the_tool_unverifiable",
                &enforce,
                SchemaMode::Enforce,
                "up",
                "odd",
                Some(json!({})),
                Some((None, true)),
            ),
            (
                "ignored_keyword_checks_the_rest",
                &lenient,
                SchemaMode::Enforce,
                "up",
                "odd",
                Some(json!({})),
                None,
            ),
            (
                "ignored_keyword_still_checks_types",
                &lenient,
                SchemaMode::Enforce,
                "up",
                "odd",
                Some(json!([])),
                Some((Some(""), true)),
            ),
        ];
        for (name, policy, mode, upstream, tool, args, want) in cases {
            let known = recall(&store, upstream, tool, &Default::default());
            let got = check(
                policy,
                Side::Input,
                mode,
                tool,
                &known,
                args.as_ref(),
                &Default::default(),
            );
            let got = got.map(|f| {
                assert!(f.reason.contains(tool), "{name}: {}", f.reason);
                (f.pointer, f.enforced)
            });
            let want = want.map(|(p, e)| (p.map(str::to_owned), e));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn results_are_held_to_the_output_schema() {
        let d = declared_of(
            "weather",
            json!({"type": "object"}),
            Some(
                json!({"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}),
            ),
        );
        let known = Known::Declared(compiled_of(&d));
        let p = SchemaPolicy {
            output: SchemaMode::Enforce,
            ..SchemaPolicy::default()
        };
        type Case<'a> = (&'a str, &'a Known, Option<Value>, Option<Option<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                "valid_structured_content",
                &known,
                Some(json!({"temp": 3})),
                None,
            ),
            (
                "wrong_type",
                &known,
                Some(json!({"temp": "warm"})),
                Some(Some("/temp")),
            ),
            ("missing_structured_content", &known, None, Some(Some(""))),
            (
                "tool_never_listed_passes",
                &Known::Unseen,
                Some(json!(1)),
                None,
            ),
        ];
        for (name, known, value, want) in cases {
            let got = check(
                &p,
                Side::Output,
                SchemaMode::Enforce,
                "weather",
                known,
                value.as_ref(),
                &Default::default(),
            )
            .map(|f| f.pointer);
            assert_eq!(got, want.map(|p| p.map(str::to_owned)), "{name}");
        }
    }

    #[test]
    fn memory_is_bounded_and_fails_closed() {
        let store = MemoryStore::new();
        // Too large to keep: remembered as such, and unverifiable.
        let huge = json!({"description": "x".repeat(MAX_STORED_BYTES)});
        assert_eq!(
            remember(&store, "up", &[declared_of("big", huge, None)]),
            Ok(())
        );
        assert_eq!(
            recall(&store, "up", "big", &Default::default()),
            Known::TooLarge
        );
        // Garbage where a definition should be: unavailable, never a pass.
        assert_eq!(
            store.set(&key("up", "bad"), b"not a definition", None),
            Ok(())
        );
        assert_eq!(
            recall(&store, "up", "bad", &Default::default()),
            Known::Unavailable
        );
        // The index bounds the keys per upstream.
        let many: Vec<Declared> = (0..MAX_TOOLS + 2)
            .map(|i| declared_of(&format!("t{i}"), json!({"type": "object"}), None))
            .collect();
        assert_eq!(remember(&store, "full", &many), Ok(()));
        assert!(matches!(
            recall(&store, "full", "t0", &Default::default()),
            Known::Declared(_)
        ));
        assert_eq!(
            recall(
                &store,
                "full",
                &format!("t{}", MAX_TOOLS + 1),
                &Default::default()
            ),
            Known::Unseen
        );
        // The last list wins: a changed schema replaces the old one.
        let a = declared_of("s", json!({"type": "object"}), None);
        let b = declared_of("s", json!({"type": "array"}), None);
        assert_eq!(remember(&store, "up", &[a]), Ok(()));
        assert_eq!(remember(&store, "up", std::slice::from_ref(&b)), Ok(()));
        assert_eq!(
            recall(&store, "up", "s", &Default::default()),
            Known::Declared(compiled_of(&b))
        );
    }

    #[test]
    fn the_vm_cache_is_bounded_by_the_bytes_it_holds() {
        // Each ~2 MiB compiled (4,000 schema objects), no pattern: forty of
        // them are fewer than the cache's entries but more than its bytes.
        let heavy = json!({"prefixItems": vec![json!({"type": "null"}); 4000]});
        for i in 0..40 {
            let d = declared_of(
                &format!("heavy{i}"),
                heavy.clone(),
                Some(json!({"title": i})),
            );
            let held = CACHED_BYTES.with(std::cell::Cell::get);
            assert!(
                held <= MAX_CACHED_BYTES && held > 0,
                "after {i}: {held} bytes"
            );
            let bytes = compiled_of(&d).heap_bytes;
            assert!(bytes > 1 << 20, "{bytes} bytes compiled");
        }
    }

    /// Four patterns `k{0,n}` + `tail` of the 256 KiB class: ~1 MiB of
    /// program, the most one schema may hold.
    fn heavy_schema(n: usize, tail: &str) -> Value {
        let props: Map<String, Value> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| {
                (
                    (*k).to_owned(),
                    json!({"pattern": format!("{k}{{0,{n}}}{tail}")}),
                )
            })
            .collect();
        json!({"properties": props})
    }

    #[test]
    fn a_list_compiles_within_its_budget_and_defers_the_rest() {
        // Each tool: four patterns of the 256 KiB class (~1 MiB of program),
        // the most one schema may hold; a list compiles 32 MiB of them.
        let heavy = |i: usize| heavy_schema(2000 + i, "");
        let mut budget = CompileBudget::default();
        let listed: Vec<Declared> = (0..60)
            .map(|i| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(format!("t{i}")));
                entry.insert("inputSchema".into(), heavy(i));
                declared(&format!("t{i}"), &entry, &mut budget)
            })
            .collect();
        let compiled = listed
            .iter()
            .filter(|d| matches!(d.listed, Listed::Compiled(_)))
            .count();
        let deferred = listed
            .iter()
            .filter(|d| d.listed == Listed::Deferred)
            .count();
        assert!((8..=40).contains(&compiled), "{compiled} compiled");
        assert_eq!(compiled + deferred, 60);
        // Deferred tools are kept as the others, and compile at their call.
        let Some(last) = listed.last() else {
            panic!("listed");
        };
        assert!(last.stored.is_some());
        assert!(compiled_of(last).input.is_some());
    }

    /// Shared data that counts what it was asked for.
    #[derive(Default)]
    struct Counted {
        store: MemoryStore,
        gets: std::cell::Cell<usize>,
        bytes_read: std::cell::Cell<usize>,
        sets: std::cell::Cell<usize>,
    }

    impl SharedStore for Counted {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            let got = self.store.get(key)?;
            self.gets.set(self.gets.get() + 1);
            let n = got.0.as_ref().map_or(0, Vec::len);
            self.bytes_read.set(self.bytes_read.get() + n);
            Ok(got)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            self.store.set(key, value, cas)
        }
    }

    #[test]
    fn a_long_list_reads_the_index_once_and_past_it_nothing() {
        // 42,000 new names of 122 bytes: the index (up to 1,024 names) was
        // read and scanned for each, 3.75 s per list in Envoy (thirtieth
        // review). Now: the index twice, a key per tool it holds.
        let name = |i: usize| format!("{}{i:06}", "t".repeat(116));
        let declared: Vec<Declared> = (0..42_000)
            .map(|i| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(name(i)));
                entry.insert("inputSchema".into(), json!({"type": "object"}));
                declared(&name(i), &entry, &mut CompileBudget::default())
            })
            .collect();
        let store = Counted::default();
        for round in 0..2 {
            store.gets.set(0);
            store.bytes_read.set(0);
            store.sets.set(0);
            assert_eq!(remember(&store, "up", &declared), Ok(()), "round {round}");
            // (tool keys: one get each for the 1,024 held; the index read
            // once, and again to register the new ones in the first round)
            assert!(
                store.gets.get() <= MAX_TOOLS + 2,
                "round {round}: {} gets",
                store.gets.get()
            );
            assert!(
                store.bytes_read.get() < 2 * MAX_TOOLS * 124 + MAX_TOOLS * 200,
                "round {round}: {} bytes read",
                store.bytes_read.get()
            );
            let want_sets = if round == 0 { MAX_TOOLS + 1 } else { 0 };
            assert_eq!(store.sets.get(), want_sets, "round {round}");
        }
        let c = std::cell::Cell::new(CompileBudget::default());
        assert!(matches!(
            recall(&store, "up", &name(1_023), &c),
            Known::Declared(_)
        ));
        assert_eq!(recall(&store, "up", &name(1_024), &c), Known::Unseen);
    }

    #[test]
    fn a_request_compiles_within_its_budget_and_refuses_the_rest() {
        // Sixty tools of ~1 MiB of patterns each, kept but never compiled
        // here (a list that had spent its budget); then one request calls
        // them all (a batch of 9,000 such calls held a worker 11.9 s).
        let store = MemoryStore::new();
        let mut spent = CompileBudget {
            regex_weight: 0,
            ..CompileBudget::default()
        };
        let declared: Vec<Declared> = (0..60)
            .map(|i| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(format!("r{i}")));
                entry.insert("inputSchema".into(), heavy_schema(3000 + i, "x"));
                declared(&format!("r{i}"), &entry, &mut spent)
            })
            .collect();
        assert!(declared.iter().all(|d| d.listed == Listed::Deferred));
        assert_eq!(remember(&store, "up", &declared), Ok(()));
        let budget = std::cell::Cell::new(CompileBudget::default());
        let known: Vec<Known> = (0..60)
            .map(|i| recall(&store, "up", &format!("r{i}"), &budget))
            .collect();
        let compiled = known
            .iter()
            .filter(|k| matches!(k, Known::Declared(_)))
            .count();
        assert!((8..=40).contains(&compiled), "{compiled} compiled");
        assert!(known.iter().skip(compiled).all(|k| *k == Known::TooCostly));
        // Refused, never passed unchecked: the call, and its result.
        let p = SchemaPolicy {
            input: SchemaMode::Enforce,
            output: SchemaMode::Enforce,
            ..SchemaPolicy::default()
        };
        for side in [Side::Input, Side::Output] {
            let f = check(
                &p,
                side,
                SchemaMode::Enforce,
                "r59",
                &Known::TooCostly,
                Some(&json!({})),
                &Default::default(),
            );
            assert!(f.is_some_and(|f| f.enforced), "{side:?}");
        }
    }

    #[test]
    fn a_definition_is_compiled_once_per_vm() {
        let d = declared_of("once", json!({"type": "string", "title": "cached"}), None);
        let Some((digest, _)) = d.stored.clone() else {
            panic!("stored");
        };
        // The cache answers without asking for the text.
        let first = compiled_of(&d);
        match compiled(&digest, || panic!("compiled twice")) {
            Some(again) => assert!(Rc::ptr_eq(&first, &again)),
            None => panic!("cached"),
        }
    }
}
