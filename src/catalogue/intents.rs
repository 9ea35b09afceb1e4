//! Intent classes of tools (issue #16 item 5): `read`, `write`, `destructive`,
//! `open-world`, from the tool's name (the filter's own verb table) and from
//! the annotations a `tools/list` showed (MCP 2025-11-25, "Tool annotations":
//! `readOnlyHint`, `destructiveHint`, `openWorldHint`).
//!
//! The server is not trusted: its annotations can only make a tool look
//! riskier than its name does, never safer. `delete_repo` with
//! `readOnlyHint: true` is destructive; `get_weather` with
//! `destructiveHint: true` is destructive. `read` means *read-only*: it is
//! dropped as soon as anything says `write` or `destructive`, and
//! `destructive` implies `write` (a rule on writes covers deletions).
//!
//! What is certain and what is merely possible differ before a list showed
//! the tool's annotations (a call can come first, above all in the stateless
//! 2026-07-28 revision): the name's `write`/`destructive`/`open-world` are
//! certain (annotations can only add), `read` is not (a hint could still
//! revoke it), and every class is possible. Deny and approve rules match what
//! is possible, allow rules what is certain: unknown fails closed both ways.
//!
//! Pure: the remembered classes per upstream cluster live in shared data
//! (reached through [`SharedStore`]) and reach the verdict as an input.

use crate::config::keywords;
use crate::json::sha256_hex;
use crate::jsonrpc::{name_problem, NameKind};
use crate::store::{SharedStore, StoreError};
use serde_json::Value;
use std::collections::HashMap;

/// One intent class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Intent {
    Read,
    Write,
    Destructive,
    OpenWorld,
}

keywords!(Intent {
    Read => "read",
    Write => "write",
    Destructive => "destructive",
    OpenWorld => "open-world",
});

impl Intent {
    fn bit(self) -> u8 {
        match self {
            Intent::Read => 1,
            Intent::Write => 2,
            Intent::Destructive => 4,
            Intent::OpenWorld => 8,
        }
    }
}

/// A set of intent classes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntentSet(u8);

impl IntentSet {
    pub const EMPTY: IntentSet = IntentSet(0);
    /// Every class: what a tool whose annotations were not seen might be.
    pub const ALL: IntentSet = IntentSet(15);

    pub fn of(intents: &[Intent]) -> Self {
        IntentSet(intents.iter().fold(0, |acc, i| acc | i.bit()))
    }
    pub fn contains(self, i: Intent) -> bool {
        self.0 & i.bit() != 0
    }
    pub fn insert(&mut self, i: Intent) {
        self.0 |= i.bit();
    }
    pub fn union(self, other: IntentSet) -> IntentSet {
        IntentSet(self.0 | other.0)
    }
    /// Every class of `self` is in `other`.
    pub fn is_subset(self, other: IntentSet) -> bool {
        self.0 & !other.0 == 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Intent> {
        [
            Intent::Read,
            Intent::Write,
            Intent::Destructive,
            Intent::OpenWorld,
        ]
        .into_iter()
        .filter(move |i| self.contains(*i))
    }
    /// Riskier wins: `destructive` implies `write`, and `read` (read-only)
    /// does not survive either.
    fn settled(mut self) -> IntentSet {
        if self.contains(Intent::Destructive) {
            self.insert(Intent::Write);
        }
        if self.contains(Intent::Write) {
            self.0 &= !Intent::Read.bit();
        }
        self
    }
    /// The class words, in a fixed order (for reasons and `explain`).
    pub fn words(self) -> Vec<&'static str> {
        self.iter().map(Intent::as_str).collect()
    }
}

/// The verb table: a word of the name (split at `_ - .` and lower-to-upper
/// case changes, compared in lower case) found here gives the tool that
/// class. Every word counts, not only the first (`repo_delete`,
/// `github.delete_repo`): a false `destructive` fails closed.
const VERBS: &[(Intent, &[&str])] = &[
    (
        Intent::Read,
        &[
            "get", "list", "read", "search", "find", "fetch", "describe", "query", "show", "view",
            "lookup", "count", "inspect", "browse", "stat", "status", "watch", "check",
        ],
    ),
    (
        Intent::Write,
        &[
            "create",
            "update",
            "set",
            "add",
            "put",
            "post",
            "send",
            "write",
            "upload",
            "edit",
            "modify",
            "patch",
            "insert",
            "append",
            "save",
            "rename",
            "move",
            "copy",
            "publish",
            "submit",
            "assign",
            "merge",
            "push",
            "commit",
            "deploy",
            "start",
            "stop",
            "restart",
            "scale",
            "apply",
            "install",
            "enable",
            "disable",
            "approve",
            "reply",
            "comment",
            "transfer",
            "pay",
            "refund",
            "book",
            "invite",
            "grant",
            "import",
            // The twelfth review: a read verb next to a write verb the
            // table did not know (`search_replace`, `mark_all_read`) made
            // an unannotated tool certainly read-only. Only words that are
            // verbs in tool names: a noun here (`order`, `invoice`,
            // `release`, `schedule`) would turn `get_invoice` into a write.
            "replace",
            "mark",
            "archive",
            "unarchive",
            "close",
            "reopen",
            "revert",
            "cancel",
            "duplicate",
            "sync",
            "attach",
            "detach",
            "unlock",
            "unstar",
            "unpin",
            "follow",
            "unfollow",
            "subscribe",
            "unsubscribe",
            "reschedule",
            "invoke",
            "dispatch",
            "notify",
            "upsert",
            "restore",
            "reject",
            "unblock",
            "ban",
            "unban",
            "mute",
            "unmute",
            "resolve",
            "rotate",
            "enroll",
            "configure",
            "allocate",
            "provision",
            "reboot",
            "rebase",
            "clone",
            "click",
            "press",
            "navigate",
            "drag",
            "hover",
            "enqueue",
            "respond",
            "accept",
            "decline",
            "confirm",
            "acknowledge",
            "increment",
            "decrement",
            "bump",
            "withdraw",
            "deposit",
            "purchase",
            "buy",
            "sell",
            "compose",
            "mention",
            "migrate",
            "compile",
            "refactor",
            "launch",
            "abort",
            "authorize",
            "authenticate",
            "connect",
            "disconnect",
            "logout",
            "fix",
            "pause",
            "resume",
            "suspend",
            "activate",
            "deactivate",
            "complete",
            "react",
            "forward",
            "broadcast",
            "announce",
            "train",
        ],
    ),
    (
        Intent::Destructive,
        &[
            "delete",
            "drop",
            "remove",
            "rm",
            "del",
            "destroy",
            "purge",
            "truncate",
            "kill",
            "terminate",
            "wipe",
            "erase",
            "reset",
            "revoke",
            "uninstall",
            "unlink",
            "overwrite",
            "shutdown",
            "clear",
            "rollback",
            "nuke",
            "flush",
            "clean",
            "cleanup",
            "prune",
            "evict",
            "expunge",
            "shred",
            "discard",
            "burn",
            "unpublish",
            "unshare",
            "deregister",
            "unregister",
            "decommission",
            "deprovision",
            // Arbitrary code can do anything, deletions included.
            "spawn",
            "sudo",
            "bash",
            "powershell",
            "exec",
            "execute",
            "eval",
            "shell",
            "run",
        ],
    ),
    (
        Intent::OpenWorld,
        &[
            "fetch", "browse", "crawl", "scrape", "download", "http", "https", "url", "web",
            "webhook", "internet", "email", "mail", "sms", "tweet",
        ],
    ),
];

/// The words of a tool name, lower-cased: split at `_ - .`, before an
/// upper-case letter that follows a lower-case one (`deleteRepo`), before
/// the last capital of an upper-case run followed by a lower-case letter
/// (`SQLDrop` is `sql` `drop`; the thirteenth review read `get_or_SQLDrop`
/// as `get` alone), and between letters and digits (`delete2`: the
/// fourteenth review).
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev: Option<char> = None;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '_' | '-' | '.') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev = None;
            continue;
        }
        let next_lower = chars.peek().is_some_and(char::is_ascii_lowercase);
        let boundary = prev.is_some_and(|p| {
            (c.is_ascii_uppercase() && p.is_ascii_lowercase())
                || (c.is_ascii_uppercase() && p.is_ascii_uppercase() && next_lower)
                || (c.is_ascii_digit() != p.is_ascii_digit())
        });
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev = Some(c);
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The classes the name gives, each with the verb that gave it.
pub fn name_classes(name: &str) -> Vec<(Intent, &'static str)> {
    let ws = words(name);
    let mut out = Vec::new();
    for (intent, verbs) in VERBS {
        if let Some(v) = verbs.iter().find(|v| ws.iter().any(|w| w == *v)) {
            out.push((*intent, *v));
        }
    }
    out
}

/// The classes a tool's `annotations` give (the entry's `annotations`
/// member; `None` when it has none). `named`: the name already gives it
/// `read`, `write` or `destructive`.
///
/// A hint says `true` or `false`; anything else (a string, null) is read
/// as its riskier value. MCP's defaults (`readOnlyHint: false`,
/// `destructiveHint: true`, `openWorldHint: true`) fill in missing hints
/// only for a tool whose name gives no class: most servers annotate
/// nothing, and applying them to `get_issue` would make every unannotated
/// tool destructive and open-world, so a deny on `destructive` would deny
/// everything. For a name the verb table knows, the name is the baseline
/// and the hints only add.
pub fn annotation_classes(annotations: Option<&Value>, named: bool) -> IntentSet {
    let empty = serde_json::Map::new();
    let (obj, garbled) = match annotations {
        None => (&empty, false),
        Some(Value::Object(o)) => (o, false),
        // Not an object: no hint can be read, each is read as its riskiest.
        Some(_) => (&empty, true),
    };
    let hint = |k: &str| match obj.get(k) {
        None if garbled => Hint::Garbled,
        None => Hint::Absent,
        Some(Value::Bool(b)) => Hint::Said(*b),
        Some(_) => Hint::Garbled,
    };
    let (read_only, destructive, open_world) = (
        hint("readOnlyHint"),
        hint("destructiveHint"),
        hint("openWorldHint"),
    );
    let defaults = !named;
    let mut out = IntentSet::EMPTY;
    match read_only {
        Hint::Said(true) => out.insert(Intent::Read),
        Hint::Said(false) | Hint::Garbled => out.insert(Intent::Write),
        Hint::Absent if defaults => out.insert(Intent::Write),
        Hint::Absent => {}
    }
    match destructive {
        Hint::Said(true) | Hint::Garbled => out.insert(Intent::Destructive),
        // The spec: destructiveHint is meaningful only when not read-only.
        Hint::Absent if defaults && read_only != Hint::Said(true) => {
            out.insert(Intent::Destructive)
        }
        Hint::Absent | Hint::Said(false) => {}
    }
    match open_world {
        Hint::Said(true) | Hint::Garbled => out.insert(Intent::OpenWorld),
        Hint::Absent if defaults => out.insert(Intent::OpenWorld),
        Hint::Absent | Hint::Said(false) => {}
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Absent,
    Said(bool),
    Garbled,
}

/// Whether the name alone gives `read`, `write` or `destructive`.
pub fn named(name: &str) -> bool {
    name_classes(name)
        .iter()
        .any(|(i, _)| *i != Intent::OpenWorld)
}

/// The classes of a `tools/list` entry's annotations (for the filter that
/// reads the list and for what it remembers).
pub fn entry_annotations(name: &str, entry: &Value) -> IntentSet {
    annotation_classes(entry.get("annotations"), named(name))
}

/// What is known of a tool's annotations when a call of it is decided.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Annotated {
    /// No list showed them (yet), or what was remembered cannot be read.
    #[default]
    Unseen,
    /// A list showed them; the classes they gave.
    Seen(IntentSet),
}

/// Where one class of a tool came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A verb of the name.
    Verb(&'static str),
    /// The annotations a list showed (spec defaults included).
    Annotations,
    /// `destructive` implies `write`.
    Implied,
    /// Not certain: the annotations were not seen, and could say so.
    Unseen,
}

impl Source {
    pub fn describe(self) -> String {
        match self {
            Source::Verb(v) => format!("name verb {v:?}"),
            Source::Annotations => "annotations seen in a tools/list".into(),
            Source::Implied => "destructive implies write".into(),
            Source::Unseen => "possible: annotations not seen yet".into(),
        }
    }
}

/// A tool's classes: what it certainly is and what it might be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Allow rules match these.
    pub is: IntentSet,
    /// Deny and approve rules match these (a superset of `is`).
    pub might: IntentSet,
    /// Each class of `might`, with where it came from.
    pub sources: Vec<(Intent, Source)>,
}

/// Classify `name` with what is known of its annotations.
pub fn classify(name: &str, annotated: Annotated) -> Classification {
    let from_name = name_classes(name);
    let mut raw = IntentSet::of(&from_name.iter().map(|(i, _)| *i).collect::<Vec<_>>());
    let from_annotations = match annotated {
        Annotated::Seen(a) => a,
        Annotated::Unseen => IntentSet::EMPTY,
    };
    raw = raw.union(from_annotations);
    let settled = raw.settled();
    let (is, might) = match annotated {
        Annotated::Seen(_) => (settled, settled),
        // Read-only is never certain before the hints are seen; anything
        // else might be.
        // (a tool whose name says it writes can never be read-only).
        Annotated::Unseen => (
            IntentSet(settled.0 & !Intent::Read.bit()),
            match settled.contains(Intent::Write) {
                true => IntentSet(IntentSet::ALL.0 & !Intent::Read.bit()),
                false => IntentSet::ALL,
            },
        ),
    };
    let sources = might
        .iter()
        .map(|i| {
            let src = if let Some((_, v)) = from_name.iter().find(|(n, _)| *n == i) {
                if is.contains(i) {
                    Source::Verb(v)
                } else {
                    Source::Unseen
                }
            } else if from_annotations.contains(i) {
                Source::Annotations
            } else if is.contains(i) {
                Source::Implied
            } else {
                Source::Unseen
            };
            (i, src)
        })
        .collect();
    Classification { is, might, sources }
}

impl Classification {
    /// One line for reasons and `explain`: `is: write, destructive (name
    /// verb "delete", …); might also be: …`.
    pub fn describe(&self) -> String {
        let certain: Vec<String> = self
            .sources
            .iter()
            .filter(|(i, _)| self.is.contains(*i))
            .map(|(i, s)| format!("{} ({})", i.as_str(), s.describe()))
            .collect();
        let possible: Vec<&str> = self
            .might
            .iter()
            .filter(|i| !self.is.contains(*i))
            .map(Intent::as_str)
            .collect();
        let mut out = if certain.is_empty() {
            "no class known".to_owned()
        } else {
            certain.join(", ")
        };
        if !possible.is_empty() {
            out.push_str(&format!(
                "; might also be {} (annotations not seen yet)",
                possible.join(", ")
            ));
        }
        out
    }
}

// --- Memory: the annotations' classes each upstream cluster listed. ---

/// Tools remembered per cluster. Past it, a new tool stays unseen: deny and
/// approve rules on intents match it, allow rules on intents do not.
pub const MAX_TOOLS: usize = 1024;
const KEY_PREFIX: &str = "mcp_firewall/catalogue/intents";
const ATTEMPTS: usize = 4;

fn key(upstream: &str) -> String {
    let h = sha256_hex(upstream.as_bytes());
    format!("{KEY_PREFIX}/{}", h.get(..32).unwrap_or(&h))
}

/// One line per tool: `<bits> <name>` (names are valid MCP tool names: no
/// space, no newline). A value that does not read so says nothing.
fn decode(bytes: &[u8]) -> Option<Vec<(String, IntentSet)>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let (bits, name) = line.split_once(' ')?;
        let bits: u8 = bits.parse().ok()?;
        if bits > IntentSet::ALL.0 {
            return None;
        }
        out.push((name.to_owned(), IntentSet(bits)));
    }
    Some(out)
}

fn encode(tools: &[(String, IntentSet)]) -> String {
    tools
        .iter()
        .map(|(n, s)| format!("{} {n}\n", s.0))
        .collect()
}

/// What `upstream`'s lists showed of `tool`'s annotations. A record that
/// cannot be read, or a failing store, is `Unseen` (fail closed).
pub fn recall<S: SharedStore + ?Sized>(store: &S, upstream: &str, tool: &str) -> Annotated {
    match store.get(&key(upstream)) {
        Ok((Some(b), _)) => decode(&b)
            .and_then(|tools| tools.into_iter().find(|(n, _)| n == tool))
            .map_or(Annotated::Unseen, |(_, s)| Annotated::Seen(s)),
        _ => Annotated::Unseen,
    }
}

/// Remember what one list of `upstream` showed: each tool's annotation
/// classes, merged with what earlier lists showed, riskier winning (a server
/// may show each caller its own list: a hint shown to B does not clear one
/// shown to A). Written with the read's token, again on a mismatch.
pub fn remember<S: SharedStore + ?Sized>(
    store: &S,
    upstream: &str,
    seen: &[(String, IntentSet)],
) -> Result<(), StoreError> {
    let k = key(upstream);
    for _ in 0..ATTEMPTS {
        let (old, cas) = store.get(&k)?;
        let mut tools = old.and_then(|b| decode(&b)).unwrap_or_default();
        // Found by a map, not a scan per listed name (a list of 42,000
        // names against 1,024 remembered was 43 million comparisons).
        let mut at: HashMap<String, usize> = tools
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let mut changed = false;
        for (name, set) in seen {
            let room = tools.len() < MAX_TOOLS;
            let found = at.get(name.as_str()).copied();
            if found.is_none() && !room {
                continue;
            }
            if name_problem(NameKind::Tool, name).is_some() {
                continue;
            }
            match found.and_then(|i| tools.get_mut(i)) {
                Some((_, old)) => {
                    let merged = old.union(*set).settled_keeping_read();
                    if merged != *old {
                        *old = merged;
                        changed = true;
                    }
                }
                None if room => {
                    at.insert(name.clone(), tools.len());
                    tools.push((name.clone(), *set));
                    changed = true;
                }
                None => {}
            }
        }
        if !changed {
            return Ok(());
        }
        match store.set(&k, encode(&tools).as_bytes(), cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

impl IntentSet {
    /// A merge of what two lists said: `read` only while neither said
    /// `write` or `destructive`.
    fn settled_keeping_read(self) -> IntentSet {
        if self.contains(Intent::Write) || self.contains(Intent::Destructive) {
            IntentSet(self.0 & !Intent::Read.bit())
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;
    use Intent::*;

    fn set(i: &[Intent]) -> IntentSet {
        IntentSet::of(i)
    }

    #[test]
    fn names_give_classes_by_their_verbs() {
        let cases: &[(&str, &str, &[Intent])] = &[
            ("read_verb_first", "get_weather", &[Read]),
            ("list_is_read", "list_issues", &[Read]),
            ("write_verb", "send_message", &[Write]),
            (
                "destructive_implies_write",
                "delete_repo",
                &[Write, Destructive],
            ),
            ("verb_last", "repo_delete", &[Write, Destructive]),
            ("namespaced", "github.drop_table", &[Write, Destructive]),
            ("camel_case", "deleteRepo", &[Write, Destructive]),
            (
                "an_acronym_before_a_verb",
                "get_or_SQLDrop",
                &[Write, Destructive],
            ),
            (
                "a_digit_after_a_verb",
                "get_or_delete2",
                &[Write, Destructive],
            ),
            ("a_digit_before_a_verb", "v2delete", &[Write, Destructive]),
            (
                "an_acronym_alone_is_one_word",
                "getHTTPStatus",
                &[Read, OpenWorld],
            ),
            (
                "riskier_verb_beats_read",
                "get_and_delete",
                &[Write, Destructive],
            ),
            (
                "fetch_is_read_and_open_world",
                "fetch_url",
                &[Read, OpenWorld],
            ),
            ("email_is_open_world", "send_email", &[Write, OpenWorld]),
            (
                "run_code_is_destructive",
                "run_script",
                &[Write, Destructive],
            ),
            ("replace_beats_search", "search_replace", &[Write]),
            ("mark_beats_read", "mark_all_read", &[Write]),
            ("archive_beats_list", "list_and_archive", &[Write]),
            (
                "clear_is_destructive",
                "get_and_clear",
                &[Write, Destructive],
            ),
            ("a_shell_is_destructive", "bash", &[Write, Destructive]),
            ("a_noun_after_get_stays_read", "get_invoice", &[Read]),
            ("no_verb_no_class", "weather", &[]),
            ("no_substring_match", "deleted_items", &[]),
        ];
        for (case, name, want) in cases {
            // The name alone: annotations that add nothing.
            let got = classify(name, Annotated::Seen(IntentSet::EMPTY));
            assert_eq!(got.is, set(want), "{case}: {}", got.describe());
        }
    }

    #[test]
    fn annotations_only_make_a_tool_riskier() {
        let cases: &[(&str, &str, Value, &[Intent])] = &[
            (
                "destructive_hint_on_read_name",
                "get_weather",
                json!({"destructiveHint": true}),
                &[Write, Destructive],
            ),
            (
                "read_only_hint_does_not_clear_delete",
                "delete_repo",
                json!({"readOnlyHint": true}),
                &[Write, Destructive],
            ),
            (
                "read_only_false_makes_write",
                "get_thing",
                json!({"readOnlyHint": false}),
                &[Write],
            ),
            (
                "destructive_false_keeps_delete",
                "delete_repo",
                json!({"destructiveHint": false, "readOnlyHint": false}),
                &[Write, Destructive],
            ),
            (
                "open_world_hint_adds",
                "list_files",
                json!({"openWorldHint": true}),
                &[Read, OpenWorld],
            ),
            (
                "named_tool_without_hints_keeps_its_name_class",
                "get_time",
                json!({}),
                &[Read],
            ),
            (
                "garbled_hint_is_the_riskier_value",
                "get_x",
                json!({"destructiveHint": "no"}),
                &[Write, Destructive],
            ),
            (
                "annotations_not_an_object_are_the_worst",
                "get_x",
                json!([]),
                &[Write, Destructive, OpenWorld],
            ),
            (
                "unnamed_unannotated_takes_spec_defaults",
                "echo",
                Value::Null,
                &[Write, Destructive, OpenWorld],
            ),
            (
                "unnamed_read_only_is_read",
                "echo",
                json!({"readOnlyHint": true, "openWorldHint": false}),
                &[Read],
            ),
            (
                "unnamed_read_only_default_open_world",
                "echo",
                json!({"readOnlyHint": true}),
                &[Read, OpenWorld],
            ),
            (
                "unnamed_not_destructive_is_write",
                "echo",
                json!({"destructiveHint": false, "openWorldHint": false}),
                &[Write],
            ),
        ];
        for (case, name, annotations, want) in cases {
            let entry = match annotations {
                Value::Null => json!({"name": name}),
                a => json!({"name": name, "annotations": a}),
            };
            let got = classify(name, Annotated::Seen(entry_annotations(name, &entry)));
            assert_eq!(got.is, set(want), "{case}: {}", got.describe());
            assert_eq!(got.is, got.might, "{case}");
        }
    }

    #[test]
    fn unseen_annotations_leave_everything_possible_and_read_uncertain() {
        let cases: &[(&str, &str, &[Intent])] = &[
            ("read_name_is_not_certainly_read", "get_weather", &[]),
            ("delete_is_certain", "delete_repo", &[Write, Destructive]),
            ("open_world_verb_is_certain", "fetch_url", &[OpenWorld]),
            ("no_verb_nothing_certain", "echo", &[]),
        ];
        for (case, name, certain) in cases {
            let got = classify(name, Annotated::Unseen);
            assert_eq!(got.is, set(certain), "{case}");
            let might = match got.is.contains(Write) {
                true => set(&[Write, Destructive, OpenWorld]),
                false => IntentSet::ALL,
            };
            assert_eq!(got.might, might, "{case}");
        }
    }

    #[test]
    fn sources_say_where_each_class_came_from() {
        let c = classify("get_weather", Annotated::Seen(set(&[Destructive])));
        assert_eq!(
            c.sources,
            vec![(Write, Source::Implied), (Destructive, Source::Annotations)]
        );
        let c = classify("delete_repo", Annotated::Unseen);
        assert!(c.sources.contains(&(Destructive, Source::Verb("delete"))));
        assert!(c.sources.contains(&(OpenWorld, Source::Unseen)));
        assert!(c.describe().contains("might also be"), "{}", c.describe());
    }

    #[test]
    fn memory_merges_riskier_and_fails_closed() {
        let store = MemoryStore::new();
        let ok = |r: Result<(), StoreError>| assert_eq!(r, Ok(()));
        ok(remember(&store, "up", &[("get_a".into(), set(&[Read]))]));
        assert_eq!(recall(&store, "up", "get_a"), Annotated::Seen(set(&[Read])));
        // Another caller's list says destructive: riskier wins, and stays.
        ok(remember(
            &store,
            "up",
            &[("get_a".into(), set(&[Destructive, Write]))],
        ));
        ok(remember(&store, "up", &[("get_a".into(), set(&[Read]))]));
        assert_eq!(
            recall(&store, "up", "get_a"),
            Annotated::Seen(set(&[Write, Destructive]))
        );
        // Per cluster, and an unknown tool or cluster is unseen.
        assert_eq!(recall(&store, "other", "get_a"), Annotated::Unseen);
        assert_eq!(recall(&store, "up", "get_b"), Annotated::Unseen);
        // Full: a new tool is not remembered, so it stays unseen.
        let many: Vec<(String, IntentSet)> = (0..MAX_TOOLS + 5)
            .map(|i| (format!("t{i}"), set(&[Read])))
            .collect();
        ok(remember(&store, "full", &many));
        assert_eq!(recall(&store, "full", "t0"), Annotated::Seen(set(&[Read])));
        assert_eq!(
            recall(&store, "full", &format!("t{}", MAX_TOOLS + 1)),
            Annotated::Unseen
        );
        // Garbage in the store says nothing.
        assert_eq!(store.set(&key("bad"), b"99 x", None), Ok(()));
        assert_eq!(recall(&store, "bad", "x"), Annotated::Unseen);
    }
}
