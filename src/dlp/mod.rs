//! Data-loss prevention: find secrets and personal data in MCP arguments and
//! results, and block, redact or flag them (POLICY.md, `dlp`).
//!
//! # How a string is scanned
//!
//! 1. **Prefilter** (one pass, every byte; `prefilter.rs`): a fingerprint of
//!    each position's next three case-folded bytes, sixteen positions at once,
//!    says where a trigger literal (`ghp_`, `akia`, `xox…`, `-----begin`,
//!    `password`, `://`, …) may start; only there are the literals compared.
//!    A `.` that ends a run of 24–26 token bytes triggers the Discord token,
//!    which has no literal.
//! 2. **Regexes** (`regex-lite`, compiled once in [`compile`]): a rule whose
//!    match starts at its trigger runs `^(?:pattern)` on the text from the
//!    trigger (at most `ahead` bytes), which stops at the first byte that
//!    cannot continue the token; the few rules whose match starts before the
//!    trigger (`back > 0`) run on merged windows. Common-word triggers
//!    (`value=`, `-u`) pass a pre-check in code first. Boundaries and
//!    exclusions are checked in code afterwards against the whole text
//!    (regex-lite has no lookaround).
//! 3. **Personal data** is found by code in one more linear pass: digit
//!    clusters (cards with Luhn + brand, SSN rules, phones), IBANs (mod-97 and
//!    per-country length), and e-mail addresses around each `@`; the next
//!    digit and the next `@` are searched for sixteen bytes at a time
//!    (`lanes.rs`).
//! 4. Overlapping matches are resolved by rule priority (exact formats first),
//!    then length, then position: the result is sorted and non-overlapping.
//!
//! # Scan cap, failing closed
//!
//! No string is ever skipped or truncated: every byte goes through the
//! prefilter and the personal-data pass, both linear. What is capped is the
//! regex work: a merged window is cut into pieces of at most [`WINDOW_MAX`]
//! bytes that overlap by [`WINDOW_OVERLAP`] (longer than any built-in token
//! format), and custom detectors, which have no prefilter, run over the whole
//! string in pieces of [`CUSTOM_WINDOW`] bytes overlapping by
//! [`CUSTOM_OVERLAP`]. A custom match longer than the overlap that straddles a
//! cut is still reported (as its truncated part), never dropped. Bodies
//! themselves are bounded by `limits.max_request_bytes`/`max_response_bytes`.
//!
//! # Never leaking what was found
//!
//! [`Match`] and [`Finding`] carry a kind, a label and a position or JSON
//! pointer, never the text; their `Debug` output is therefore safe to log.

pub mod adversarial;
pub(crate) mod lanes;
mod pii;
mod prefilter;
mod prefix;
mod rules;
pub use rules::JWT_KIND;
mod text;

use crate::config::{index, keyword_at, keywords, type_name, Errors, ObjReader};
use crate::text_hash::TextHashing;
use lanes::Stop;
use regex_lite::{Regex, RegexBuilder};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What to do with a message that carries sensitive data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refuse the message (requests: JSON-RPC -32013 with kinds and paths).
    Block,
    /// Replace each match with `[REDACTED:<kind>]` and let the message through.
    Redact,
    /// Let it through unchanged; audit the findings.
    Flag,
    /// Do not scan.
    Off,
}

keywords!(Action {
    Block => "block",
    Redact => "redact",
    Flag => "flag",
    Off => "off",
});

/// The class of sensitive data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Secret,
    Pii,
}

keywords!(Label {
    Secret => "secret",
    Pii => "pii",
});

/// The built-in detector families `dlp.detectors` turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detectors {
    Secrets,
    Pii,
}

keywords!(Detectors {
    Secrets => "secrets",
    Pii => "pii",
});

/// One match in a string: byte offsets into the scanned text. No text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub kind: String,
    pub label: Label,
    pub start: usize,
    pub end: usize,
}

/// One finding in a JSON value: JSON pointer relative to the scanned root. No text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    pub kind: String,
    pub label: Label,
    pub path: String,
}

/// The compiled `dlp` section.
#[derive(Debug)]
pub struct DlpPolicy {
    pub requests: Action,
    pub responses: Action,
    pub exempt_tools: Vec<crate::glob::Glob>,
    pub scanner: Scanner,
}

impl DlpPolicy {
    /// Whether tool `name` is exempt from argument and result scanning
    /// (exact name, or a pattern with `*`/`?`).
    pub fn is_exempt(&self, name: &str) -> bool {
        self.exempt_tools.iter().any(|g| g.matches(name))
    }
}

/// Largest piece of a merged prefilter window one regex call sees.
pub const WINDOW_MAX: usize = 16 * 1024;
/// Overlap between consecutive pieces: longer than any built-in token format.
pub const WINDOW_OVERLAP: usize = 4 * 1024;
/// Piece size for custom detectors, which run over the whole string.
pub const CUSTOM_WINDOW: usize = 64 * 1024;
/// Overlap between custom-detector pieces.
pub const CUSTOM_OVERLAP: usize = 4 * 1024;
/// Compiled-program budget for one custom pattern: refuses patterns like
/// `(a{1000}){1000}` at configure time.
pub const CUSTOM_SIZE_LIMIT: usize = 256 * 1024;

/// Work allowed per scanned byte (see [`Work`]): what the built-in detectors
/// spend on ordinary and trigger-heavy text is far below it, so only an input
/// built to make the scanner re-read itself comes near.
pub const WORK_PER_BYTE: u64 = 32;
/// Work allowed per scanned string on top of [`WORK_PER_BYTE`]: one trigger's
/// regex run on a short string.
pub const WORK_PER_STRING: u64 = 2048;
/// What one regex call or one code matcher costs besides the bytes it may
/// read (its setup is most of the cost of a trigger that fails at once).
const WORK_PER_CALL: u64 = 32;
/// What one byte of a merged window costs (an anchored run's byte costs 1).
const WINDOW_BYTE_COST: usize = 2;
/// The finding that stands for a string the scanner gave up on.
pub const BUDGET_EXCEEDED_KIND: &str = "dlp_budget_exceeded";
/// The finding that stands for a text blob no client decoding could be
/// scanned from: reported over the whole blob, never passed unread.
pub const UNDECODABLE_BLOB_KIND: &str = "undecodable_text_blob";

/// The scan budget of one message, counted in bytes handed to regexes and
/// code matchers plus a fixed cost per call: deterministic (the same input
/// always spends the same), unlike wall-clock time, which another worker's
/// load would change. The prefilter and the personal-data pass are linear and
/// not counted. Each scanned string adds its allowance; once the work spent
/// passes the allowance, the scan fails closed: the string, and every later
/// string of the message, is reported as [`BUDGET_EXCEEDED_KIND`] over its
/// whole length (requests are refused -32013, responses redacted or refused
/// like any finding), and no further regex runs for it.
struct Work {
    allowed: u64,
    spent: u64,
    per_byte: u64,
    per_string: u64,
    /// Which memo remembers the clean strings read ([`CleanMemo`]), if any.
    memo: Memo,
}

impl Work {
    fn new(per_byte: u64, per_string: u64) -> Work {
        Work {
            allowed: 0,
            spent: 0,
            per_byte,
            per_string,
            memo: Memo::None,
        }
    }
    /// Add the allowance of a string of `len` bytes (unless already exceeded).
    fn grant(&mut self, len: usize) {
        if !self.exceeded() {
            self.allowed = self
                .allowed
                .saturating_add(self.per_string)
                .saturating_add(self.per_byte.saturating_mul(len as u64));
        }
    }
    /// Record a call that may read `bytes`; false once the budget is spent,
    /// and the call must then not be made.
    fn spend(&mut self, bytes: usize) -> bool {
        if self.exceeded() {
            return false;
        }
        self.spent = self
            .spent
            .saturating_add(WORK_PER_CALL)
            .saturating_add(bytes as u64);
        !self.exceeded()
    }
    fn exceeded(&self) -> bool {
        self.spent > self.allowed
    }
}

/// A policy-defined detector (`dlp.custom[]`).
pub struct CustomDetector {
    id: String,
    label: Label,
    regex: Regex,
}

impl CustomDetector {
    /// Compile a custom pattern; the error says why (never echoes matched text,
    /// only the pattern author's own pattern).
    pub fn new(id: &str, pattern: &str, label: Label) -> Result<CustomDetector, String> {
        let regex = RegexBuilder::new(pattern)
            .size_limit(CUSTOM_SIZE_LIMIT)
            .nest_limit(32)
            .build()
            .map_err(|e| format!("invalid regular expression: {e}"))?;
        if regex.is_match("") {
            return Err("pattern matches the empty string, so it would match everywhere".into());
        }
        Ok(CustomDetector {
            id: id.to_owned(),
            label,
            regex,
        })
    }
}

impl fmt::Debug for CustomDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomDetector")
            .field("id", &self.id)
            .field("label", &self.label)
            .finish()
    }
}

enum Matcher {
    Regex(Regex),
    Native(rules::Native),
}

struct CompiledRule {
    spec: &'static rules::RuleSpec,
    matcher: Matcher,
    /// `^(?:pattern)`, for rules whose match starts at the trigger (`back == 0`):
    /// run on the text from the trigger, it gives up at the first byte that
    /// cannot continue the token instead of scanning a whole window.
    anchored: Option<Regex>,
    /// What every match of `anchored` starts with, checked first in code.
    prefix: prefix::Prefix,
    /// The least length of the token tail of a rule with one
    /// ([`rules::RuleSpec::longest`]): such a rule is matched by code.
    tail_least: usize,
}

/// The compiled detectors: built-in secrets and personal data, plus custom ones.
pub struct Scanner {
    rules: Vec<CompiledRule>,
    pre: prefilter::Prefilter,
    discord: Option<u16>,
    secrets: bool,
    pii: bool,
    custom: Vec<CustomDetector>,
    /// [`WORK_PER_BYTE`] and [`WORK_PER_STRING`]; lowered only by tests.
    work_per_byte: u64,
    work_per_string: u64,
    /// The strings of catalogue lists found clean, with the work each cost.
    clean: RefCell<CleanMemo>,
    /// The response heads found clean: apart, so that heads that never
    /// repeat (a server's `x-request-id`) never push a list's strings out.
    heads: RefCell<CleanMemo>,
}

/// Which [`CleanMemo`] a reading uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memo {
    None,
    Lists,
    Heads,
}

/// The clean readings of one remembered string: the member name it was
/// read under (if any), and the work that reading cost.
type CleanReadings = Vec<(Option<Box<str>>, Spent)>;

/// The strings of catalogue lists (`tools/list` and the like) in which
/// nothing was found, each with the work reading it cost, by the string and
/// the member name it was read under (a name changes what is found:
/// `{"password": …}`).
///
/// A server lists one catalogue again and again; a 50-tool list holds
/// ~2,000 strings, most of them repeated, and reading each cost ~1,000
/// instructions however short. Lists use one, response heads another
/// ([`Scanner::scan_recurring`]): tool results hold ever-new text (and a
/// clean one need not be kept). What is found depends on the
/// string and the name alone, so a clean string stays clean; its work is
/// charged again on a hit, so the budget of a message runs out exactly
/// where it did when each string was read. Bounded; full, it starts over.
/// Interior mutability: one Wasm VM is one thread.
#[derive(Debug, Default)]
struct CleanMemo {
    strings: HashMap<Box<str>, CleanReadings, TextHashing>,
    bytes: usize,
}

/// What one string's reading added to a [`Work`]: its allowance and its spending.
#[derive(Debug, Clone, Copy)]
struct Spent {
    allowed: u64,
    spent: u64,
}

/// At most this many bytes of list strings are remembered per VM.
const CLEAN_MEMO_BYTES: usize = 256 * 1024;
/// At most this many bytes of response heads are remembered per VM.
const HEAD_MEMO_BYTES: usize = 64 * 1024;
/// Longer strings are read every time.
const CLEAN_MEMO_STRING_MAX: usize = 1024;

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("secret_rules", &self.rules.len())
            .field("pii", &self.pii)
            .field("custom", &self.custom)
            .finish()
    }
}

#[derive(Clone, Copy)]
enum KindRef {
    Builtin(&'static str),
    Custom(usize),
}

#[derive(Clone, Copy)]
struct Candidate {
    start: usize,
    end: usize,
    kind: KindRef,
    label: Label,
    priority: u8,
}

impl Candidate {
    /// A built-in secret rule's match, ranked by that rule's priority.
    fn secret(f: rules::Found, rule: &CompiledRule) -> Candidate {
        Candidate {
            start: f.start,
            end: f.end,
            kind: KindRef::Builtin(f.kind),
            label: Label::Secret,
            priority: rule.spec.priority,
        }
    }
}

impl Scanner {
    /// The built-in detectors. Fails only if a built-in pattern does not compile
    /// (a bug caught by the unit tests), never on input.
    pub fn builtin(secrets: bool, pii: bool) -> Result<Scanner, String> {
        let mut compiled = Vec::new();
        if secrets {
            for spec in rules::SECRET_RULES {
                let build = |p: &str| {
                    Regex::new(p).map_err(|e| format!("built-in detector {}: {e}", spec.kind))
                };
                let (matcher, anchored) = match spec.native {
                    Some(n) => (Matcher::Native(n), None),
                    None => (
                        Matcher::Regex(build(spec.pattern)?),
                        spec_anchors(spec)
                            .then(|| build(&format!("^(?:{})", spec.pattern)))
                            .transpose()?,
                    ),
                };
                // A flag (`(?i)`) changes what the literals mean: no check.
                let flagged =
                    spec.pattern.contains("(?") && spec.pattern.replace("(?:", "").contains("(?");
                let prefix = match (&anchored, flagged) {
                    (Some(_), false) => prefix::Prefix::of(spec.pattern),
                    _ => prefix::Prefix::default(),
                };
                let tail_least = token_tail_least(spec)?;
                compiled.push(CompiledRule {
                    spec,
                    matcher,
                    anchored,
                    prefix,
                    tail_least,
                });
            }
        }
        let discord = compiled
            .iter()
            .position(|r| r.spec.kind == rules::DISCORD_KIND)
            .and_then(|i| u16::try_from(i).ok());
        let pre = prefilter::Prefilter::build(trigger_literals(&compiled)?, discord.is_some())?;
        Ok(Scanner {
            rules: compiled,
            pre,
            discord,
            secrets,
            pii,
            custom: Vec::new(),
            work_per_byte: WORK_PER_BYTE,
            work_per_string: WORK_PER_STRING,
            clean: RefCell::default(),
            heads: RefCell::default(),
        })
    }

    /// Add policy-defined detectors.
    pub fn with_custom(mut self, custom: Vec<CustomDetector>) -> Scanner {
        self.custom = custom;
        self
    }

    /// Every match in `text`: sorted, non-overlapping byte ranges.
    pub fn scan_text(&self, text: &str) -> Vec<Match> {
        self.scan_keyed(text, None)
    }

    /// [`Scanner::scan_text`] of a text that recurs from message to message (a
    /// response's head: `content-type`, `server`, the session id and the
    /// second's `date` repeat on every answer): a clean one is remembered
    /// ([`CleanMemo`]), whole, so a match that spans its lines is found as
    /// before, and only the same bytes are passed without a reading.
    pub fn scan_recurring(&self, text: &str) -> Vec<Match> {
        let mut work = self.work();
        work.memo = Memo::Heads;
        self.scan_in(text, None, &mut work)
    }

    /// `text` with every match replaced by `[REDACTED:<kind>]`.
    pub fn redacted(&self, text: &str) -> String {
        let found = self.spans(text, None, &mut self.work());
        match found.is_empty() {
            true => text.to_owned(),
            false => self.redact_text(text, &found),
        }
    }

    /// A JSON pointer with each member name read as the name it escapes
    /// (`~1` is `/`: an AWS key's slashes) and redacted where DLP finds
    /// something in it. A pointer clipped short (`…` at its end) loses its
    /// last name whole: a cut name may be a token too short to be found.
    pub fn redacted_pointer(&self, pointer: &str) -> String {
        let (pointer, clipped) = match pointer.strip_suffix('…') {
            Some(p) => (p.rsplit_once('/').map_or("", |(head, _)| head), true),
            None => (pointer, false),
        };
        let mut out = String::with_capacity(pointer.len());
        for token in pointer.split('/').skip(1) {
            let name = token.replace("~1", "/").replace("~0", "~");
            push_member_name(&mut out, &self.redacted(&name));
        }
        if clipped {
            out.push_str("/…");
        }
        out
    }

    /// Like [`Scanner::scan_text`], for a string that is the value of object key
    /// `key`: `{"password": "…"}` is judged with the key as context.
    pub fn scan_keyed(&self, text: &str, key: Option<&str>) -> Vec<Match> {
        self.scan_in(text, key, &mut self.work())
    }

    /// Work that scanning `v` as arguments spends and the budget it is
    /// allowed, for `bench-dlp` to print how close a payload comes.
    pub fn work_of(&self, v: &Value) -> (u64, u64) {
        let mut work = self.work();
        self.scan_into(
            v,
            &mut String::new(),
            None,
            Binary::Scanned,
            &mut work,
            &mut Vec::new(),
        );
        (work.spent, work.allowed)
    }

    fn work(&self) -> Work {
        Work::new(self.work_per_byte, self.work_per_string)
    }

    /// Lower the scan budget (tests show it trips and fails closed).
    #[cfg(test)]
    fn with_budget(mut self, per_byte: u64, per_string: u64) -> Scanner {
        self.work_per_byte = per_byte;
        self.work_per_string = per_string;
        self
    }

    /// One string of a message whose budget is `work`.
    fn scan_in(&self, text: &str, key: Option<&str>, work: &mut Work) -> Vec<Match> {
        self.spans(text, key, work)
            .into_iter()
            .map(|c| Match {
                kind: self.kind_name(c.kind).to_owned(),
                label: c.label,
                start: c.start,
                end: c.end,
            })
            .collect()
    }

    /// What [`Scanner::scan_in`] finds, as resolved candidates: no kind name
    /// is copied per match (a text dense with addresses has one every 14
    /// bytes, and a copy each, then a finding each, cost more than finding them).
    fn spans(&self, text: &str, key: Option<&str>, work: &mut Work) -> Vec<Candidate> {
        let (memo, memo_bytes) = match work.memo {
            Memo::Lists => (&self.clean, CLEAN_MEMO_BYTES),
            Memo::Heads => (&self.heads, HEAD_MEMO_BYTES),
            Memo::None => return self.read_spans(text, key, work),
        };
        if text.len() > CLEAN_MEMO_STRING_MAX || work.exceeded() {
            return self.read_spans(text, key, work);
        }
        let known = memo.try_borrow().ok().and_then(|m| {
            m.strings.get(text).and_then(|ks| {
                ks.iter()
                    .find(|(k, _)| k.as_deref() == key)
                    .map(|(_, s)| *s)
            })
        });
        if let Some(cost) = known {
            let allowed = work.allowed.saturating_add(cost.allowed);
            let spent = work.spent.saturating_add(cost.spent);
            // Charged as reading it was; a budget it would exhaust is met by reading.
            if spent <= allowed {
                work.allowed = allowed;
                work.spent = spent;
                return Vec::new();
            }
        }
        let (allowed, spent) = (work.allowed, work.spent);
        let found = self.read_spans(text, key, work);
        if found.is_empty() && !work.exceeded() {
            let cost = Spent {
                allowed: work.allowed - allowed,
                spent: work.spent - spent,
            };
            if let Ok(mut m) = memo.try_borrow_mut() {
                let size = text.len() + key.map_or(0, str::len) + 64;
                if m.bytes + size > memo_bytes {
                    m.strings.clear();
                    m.bytes = 0;
                }
                m.bytes += size;
                m.strings
                    .entry(text.into())
                    .or_default()
                    .push((key.map(Into::into), cost));
            }
        }
        found
    }

    fn read_spans(&self, text: &str, key: Option<&str>, work: &mut Work) -> Vec<Candidate> {
        if text.is_empty() {
            return Vec::new();
        }
        work.grant(text.len());
        let held = lanes::held(text.as_bytes());
        let mut cands = if work.exceeded() {
            Vec::new()
        } else {
            self.candidates(text, key, work, held)
        };
        // Read again as a reader decodes it (escapes, references, fullwidth
        // digits, locale spaces): what is found there is redacted where it
        // stands in the text. A text with no byte that starts such a reading
        // has none.
        let readings = if held.may_hold(Stop::ReadsOtherwise) {
            text::second_readings(text)
        } else {
            Vec::new()
        };
        for text::Reading {
            text: reading,
            from,
        } in readings
        {
            work.grant(reading.len());
            if !work.exceeded() {
                let held = lanes::held(reading.as_bytes());
                for mut c in self.candidates(&reading, key, work, held) {
                    let (Some(&s), Some(&e)) = (from.get(c.start), from.get(c.end)) else {
                        continue;
                    };
                    // A match ending inside a decoded character takes all of it.
                    let e = if e <= s {
                        text::ceil_boundary(text, s + 1)
                    } else {
                        e
                    };
                    c.start = s;
                    c.end = text::ceil_boundary(text, e);
                    cands.push(c);
                }
            }
        }
        if work.exceeded() {
            return vec![Candidate {
                start: 0,
                end: text.len(),
                kind: KindRef::Builtin(BUDGET_EXCEEDED_KIND),
                label: Label::Secret,
                priority: 0,
            }];
        }
        self.resolve(cands)
    }

    /// One finding per kind of `spans` at `path` (a finding names a kind and
    /// a path, never a position: more would be dropped by [`dedup`]).
    fn push_findings(&self, spans: &[Candidate], path: &str, out: &mut Vec<Finding>) {
        let mut kinds: Vec<(&str, Label)> = Vec::new();
        for c in spans {
            let kind = self.kind_name(c.kind);
            if !kinds.contains(&(kind, c.label)) {
                kinds.push((kind, c.label));
                out.push(Finding {
                    kind: kind.to_owned(),
                    label: c.label,
                    path: path.to_owned(),
                });
            }
        }
    }

    /// `s` with each span replaced by `[REDACTED:<kind>]`.
    fn redact_text(&self, s: &str, spans: &[Candidate]) -> String {
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for c in spans {
            if c.start < last {
                continue;
            }
            out.push_str(s.get(last..c.start).unwrap_or(""));
            out.push_str("[REDACTED:");
            out.push_str(self.kind_name(c.kind));
            out.push(']');
            last = c.end;
        }
        out.push_str(s.get(last..).unwrap_or(""));
        out
    }

    fn kind_name(&self, k: KindRef) -> &str {
        match k {
            KindRef::Builtin(s) => s,
            KindRef::Custom(i) => self.custom.get(i).map_or("custom", |c| c.id.as_str()),
        }
    }

    /// `held`: which stops `text` holds ([`lanes::held`]); a search for
    /// personal data starts only where its stop is held.
    fn candidates(
        &self,
        text: &str,
        key: Option<&str>,
        work: &mut Work,
        held: lanes::Held,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        if self.secrets {
            self.secret_candidates(text, &mut out, work);
            if let Some(k) = key {
                keyed_value(text, k, &mut out);
            }
        }
        if self.pii {
            let mut found = Vec::new();
            if held.may_hold(Stop::Digit) {
                pii::scan_numbers(text, key, &mut found);
            }
            if held.may_hold(Stop::Byte(b'@')) {
                pii::scan_emails(text, &mut found);
            }
            out.extend(found.into_iter().map(|f| Candidate {
                start: f.start,
                end: f.end,
                kind: KindRef::Builtin(f.kind),
                label: Label::Pii,
                // A secret overlapping personal data wins: it is the graver leak.
                priority: 4,
            }));
        }
        for (ci, c) in self.custom.iter().enumerate() {
            for_each_piece(
                text,
                0,
                text.len(),
                CUSTOM_WINDOW,
                CUSTOM_OVERLAP,
                |offset, piece| {
                    if !work.spend(piece.len()) {
                        return;
                    }
                    for m in c.regex.find_iter(piece) {
                        if m.start() < m.end() {
                            out.push(Candidate {
                                start: offset + m.start(),
                                end: offset + m.end(),
                                kind: KindRef::Custom(ci),
                                label: c.label,
                                priority: 0,
                            });
                        }
                    }
                },
            );
        }
        out
    }

    fn secret_candidates(&self, text: &str, out: &mut Vec<Candidate>, work: &mut Work) {
        let bytes = text.as_bytes();
        let n = bytes.len();
        // Windows for the rules whose match may start before their trigger.
        let mut hits: Vec<(u16, usize, usize)> = Vec::new();
        // (rule, position) of the last anchored run: two literals of one rule
        // at one position (`xoxe-`, `xoxe.xox`) need one run, not two.
        let mut last_run: Option<(u16, usize)> = None;
        // (rule, end) of each anchored or code match: a trigger inside a span its rule
        // already matched is not run again. Without it a run of triggers
        // (`sk-sk-sk-…`) re-scans the same bytes from every one of them,
        // quadratic in the run's length.
        let mut matched: Vec<(u16, usize)> = Vec::new();
        // (rule, where its required literal next occurs at or after the last
        // trigger that looked; None = nowhere further).
        let mut required_at: Vec<(u16, Option<usize>)> = Vec::new();
        let mut runs = BlockedRuns::default();
        let mut pending = Pending::default();
        // (rule, identifier end) of the last assignment head read.
        let mut last_identifier: Option<(u16, usize)> = None;
        self.pre.for_each(bytes, |i, lit| {
            if work.exceeded() {
                return;
            }
            let Some(lit) = lit else {
                // The Discord bot token has no literal: its first `.` ends
                // a run of 24-26 token characters.
                let run = bytes.get(i.saturating_sub(27)..i).map_or(0, |s| {
                    s.iter()
                        .rev()
                        .take_while(|b| text::is_token_byte(**b))
                        .count()
                });
                // What must follow: 6 token bytes, `.`, 27 token bytes (a
                // run of `<id>.<ts>.` segments has no HMAC and is not run).
                let tokens = |from: usize, k: usize| {
                    bytes
                        .get(from..from + k)
                        .is_some_and(|s| s.iter().all(|b| text::is_token_byte(*b)))
                };
                let follows =
                    tokens(i + 1, 6) && text::at(bytes, i + 7) == b'.' && tokens(i + 8, 27);
                if (24..=26).contains(&run) && follows && work.spend(0) {
                    if let Some(d) = self.discord {
                        hits.push((d, i - run, (i + 80).min(n)));
                    }
                }
                return;
            };
            let len = lit.bytes.len();
            for &ri in &lit.rules {
                let Some(rule) = self.rules.get(usize::from(ri)) else {
                    continue;
                };
                if !rules::precheck(rule.spec.pre, bytes, i, len) {
                    continue;
                }
                match (&rule.matcher, &rule.anchored) {
                    // Code matchers judge each trigger where it stands.
                    (Matcher::Native(native), _) => {
                        // Where the identifier holding this secret word
                        // ends; one that runs on past what the assignment
                        // matcher reads finds no operator after it and
                        // returns nothing (`keykeykey…` cost it 120 bytes per
                        // trigger).
                        let identifier_end = match native {
                            rules::Native::Assignment => {
                                let end = runs.identifier_end(bytes, i);
                                // Too long, or an identifier whose head was
                                // read already (below).
                                if end > i + rules::IDENT_AHEAD
                                    || last_identifier == Some((ri, end))
                                {
                                    continue;
                                }
                                end
                            }
                            _ => 0,
                        };
                        // Inside a span this matcher already found: a value
                        // read from here would overlap it (`password=password=…`
                        // read the same value again from every trigger).
                        if matched.iter().any(|&(r, e)| r == ri && i < e) {
                            continue;
                        }
                        let end = (i + len + rule.spec.ahead).min(n);
                        if !required_within(&mut required_at, ri, rule.spec.requires, bytes, i, end)
                        {
                            continue;
                        }
                        if !work.spend(len) {
                            return;
                        }
                        // The two readers of a value that runs on (an
                        // assignment's bare value, a header's credential)
                        // wait for the next trigger of their matcher: what
                        // they read ends where it begins.
                        let next = match native {
                            rules::Native::Assignment => {
                                // Every secret word of one identifier
                                // (`pass` and `password` at the start of
                                // `password=`, `secret_token=`, a long
                                // `pass_pass_…_pass=`) reads the operator
                                // and value after the same end: the first
                                // to get here decides for all of them.
                                // Before, each read the identifier and
                                // value again (eighth review F3: ~40x the
                                // cost of clean text per byte).
                                if last_identifier == Some((ri, identifier_end)) {
                                    continue;
                                }
                                last_identifier = Some((ri, identifier_end));
                                let Some(head) = rules::assignment_head(text, i) else {
                                    continue;
                                };
                                Deferred::Assignment(ri, head, i)
                            }
                            rules::Native::AuthHeader => Deferred::AuthHeader(ri, i),
                            _ => {
                                if let Some(f) = native_at(*native, text, i, len) {
                                    matched.retain(|&(r, _)| r != ri);
                                    matched.push((ri, f.end));
                                    out.push(Candidate::secret(f, rule));
                                }
                                continue;
                            }
                        };
                        if let Some(d) = pending.take_before(next) {
                            if !self.settle(d, text, next.ends_before(), &mut matched, out, work) {
                                return;
                            }
                        }
                        // The one before may have matched over this trigger
                        // (a quoted value holding `pass=…`): then its value
                        // is inside that one. A value read only up to this
                        // identifier's end leaves this value unread: it is
                        // still judged (seventh review H1).
                        let starts = match next {
                            Deferred::Assignment(_, h, _) => h.value_from,
                            Deferred::AuthHeader(_, pos) => pos,
                        };
                        let start = starts.max(i);
                        if !matched.iter().any(|&(r, e)| r == ri && start < e) {
                            pending.put(next);
                        }
                    }
                    (Matcher::Regex(_), Some(re)) => {
                        // Where the match must start: at the trigger, or
                        // for a rule whose match starts before it, where
                        // the run of bytes its `before` edge forbids
                        // begins (the byte before a match is never one).
                        let start = match rule.spec.back {
                            0 => i,
                            back => {
                                let run = runs.run_before(rule.spec.before, bytes, i, back);
                                if run > back {
                                    continue;
                                }
                                i - run
                            }
                        };
                        if last_run == Some((ri, start))
                            || matched.iter().any(|&(r, e)| r == ri && i < e)
                        {
                            continue;
                        }
                        last_run = Some((ri, start));
                        // An anchored match starts at `start`: a byte
                        // before it that the rule's edge forbids rules it
                        // out. Inside a run of triggers (`glrt-glrt-…`) every
                        // one but the first is so, and each ran the regex
                        // over its whole window near the run's end.
                        if rule.spec.before.blocks(text::before(bytes, start)) {
                            continue;
                        }
                        let end = text::ceil_boundary(
                            text,
                            (i + len + rule.spec.ahead).min(n).min(start + WINDOW_MAX),
                        );
                        // The run test before the prefix: it reads each byte
                        // about once however many triggers share the run,
                        // where the prefix reads a token's fixed start
                        // (`glpat-` + 20 bytes) again at every trigger.
                        let from = i + len;
                        if runs.no_end_between(
                            rule.spec.after,
                            bytes,
                            from,
                            from + rule.spec.tail,
                            end,
                        ) {
                            continue;
                        }
                        if !rule.prefix.admits(bytes, start) {
                            continue;
                        }
                        // A fixed start and a token tail: the prefix was the
                        // regex's only question but the tail's length, which
                        // the run answers (see `RuleSpec::longest`).
                        if rule.spec.longest > 0 {
                            let run = runs.token_run(bytes, from);
                            let longest = rule.spec.longest;
                            let least = rule.tail_least;
                            if run >= least {
                                let end = rules::token_tail_end(
                                    rule.spec,
                                    bytes,
                                    from,
                                    run.min(longest),
                                    least,
                                );
                                let end = end.unwrap_or(from + longest);
                                matched.retain(|&(r, _)| r != ri);
                                matched.push((ri, end));
                                if let Some(f) = rules::accept_span(rule.spec, text, start, end) {
                                    out.push(Candidate::secret(f, rule));
                                }
                            }
                            continue;
                        }
                        if !required_within(&mut required_at, ri, rule.spec.requires, bytes, i, end)
                        {
                            continue;
                        }
                        // An anchored run mostly stops within a few bytes of
                        // its trigger; an eighth of its window is charged.
                        if !work.spend((end - start) / 8) {
                            return;
                        }
                        if let Some(piece) = text.get(start..end) {
                            // Most triggers fail: without capture groups first.
                            if !re.is_match(piece) {
                                continue;
                            }
                            if let Some(caps) = re.captures(piece) {
                                if let Some(whole) = caps.get(0) {
                                    matched.retain(|&(r, _)| r != ri);
                                    matched.push((ri, start + whole.end()));
                                }
                                push_accepted(rule, text, &caps, start, out);
                            }
                        }
                    }
                    (Matcher::Regex(_), None) => {
                        let end = (i + len + rule.spec.ahead).min(n);
                        if !runs.no_end_within(rule.spec.after, bytes, i + len, end) {
                            hits.push((ri, i.saturating_sub(rule.spec.back), end));
                        }
                    }
                }
            }
        });
        // The last waiting triggers read to the end of the text.
        for d in [pending.assignment.take(), pending.auth_header.take()]
            .into_iter()
            .flatten()
        {
            if !self.settle(d, text, (n, None), &mut matched, out, work) {
                return;
            }
        }
        if hits.is_empty() {
            return;
        }
        crate::sort::sort(&mut hits);
        let mut k = 0;
        while let Some(&(ri, mut ws, mut we)) = hits.get(k) {
            // Merge this rule's overlapping windows, then run it once per merged window.
            k += 1;
            while let Some(&(rj, s, e)) = hits.get(k) {
                if rj != ri || s > we {
                    break;
                }
                we = we.max(e);
                k += 1;
            }
            ws = text::floor_boundary(text, ws);
            we = text::ceil_boundary(text, we);
            if let Some(rule) = self.rules.get(usize::from(ri)) {
                for_each_piece(text, ws, we, WINDOW_MAX, WINDOW_OVERLAP, |offset, piece| {
                    // An unanchored search reads every byte of its piece,
                    // several regex threads at a time: dearer per byte than
                    // an anchored run, which mostly stops within a few.
                    if work.spend(piece.len().saturating_mul(WINDOW_BYTE_COST)) {
                        run_rule(rule, text, offset, piece, out);
                    }
                });
            }
        }
    }

    /// Read and judge a deferred trigger's value, which ends at `limit` (where
    /// the next trigger of its matcher begins); false once the budget is spent.
    fn settle(
        &self,
        d: Deferred,
        text: &str,
        limits: (usize, Option<usize>),
        matched: &mut Vec<(u16, usize)>,
        out: &mut Vec<Candidate>,
        work: &mut Work,
    ) -> bool {
        let (ri, from, most) = match d {
            Deferred::Assignment(ri, h, _) => (ri, h.value_from, rules::VALUE_MAX),
            Deferred::AuthHeader(ri, pos) => (ri, pos, rules::AUTH_HEADER_MAX),
        };
        let mut found = None;
        for limit in std::iter::once(limits.0).chain(limits.1.filter(|l| *l > from)) {
            if !work.spend(limit.min(from + most).saturating_sub(from)) {
                return false;
            }
            found = match d {
                Deferred::Assignment(_, h, _) => rules::assignment_value(text, &h, limit),
                Deferred::AuthHeader(_, pos) => rules::auth_header_at(text, pos, limit),
            };
            if found.is_some() {
                break;
            }
        }
        if let (Some(f), Some(rule)) = (found, self.rules.get(usize::from(ri))) {
            matched.retain(|&(r, _)| r != ri);
            matched.push((ri, f.end));
            out.push(Candidate::secret(f, rule));
        }
        true
    }

    /// Keep the best of overlapping candidates; return them sorted by start.
    fn resolve(&self, mut cands: Vec<Candidate>) -> Vec<Candidate> {
        // Most strings have no candidate at all: skip the sort and the map.
        if cands.len() < 2 {
            cands.retain(|c| c.start < c.end);
            return cands;
        }
        // Text dense with findings (a dump of credentials) mostly has
        // disjoint candidates: then every one is kept, in order, and the
        // map below (a tenth of such a scan) is not needed.
        cands.retain(|c| c.start < c.end);
        crate::sort::sort_by(&mut cands, |a, b| a.start < b.start);
        if cands.windows(2).all(|w| match w {
            [a, b] => a.end <= b.start,
            _ => true,
        }) {
            return cands;
        }
        crate::sort::sort_by(&mut cands, |a, b| {
            a.priority
                .cmp(&b.priority)
                .then((b.end - b.start).cmp(&(a.end - a.start)))
                .then(a.start.cmp(&b.start))
                .is_lt()
        });
        let mut taken: BTreeMap<usize, Candidate> = BTreeMap::new();
        let mut lost: Vec<(usize, usize)> = Vec::new();
        for c in cands {
            if c.start >= c.end {
                continue;
            }
            let clash_before = taken
                .range(..c.end)
                .next_back()
                .is_some_and(|(_, t)| t.end > c.start);
            if clash_before {
                lost.push((c.start, c.end));
            } else {
                taken.insert(c.start, c);
            }
        }
        let kept: Vec<Candidate> = taken.into_values().collect();
        cover_lost(kept, &lost)
    }

    /// Findings in every string value and object key of `v`, recursively.
    /// Paths are JSON pointers relative to `v`; one finding per (kind, path).
    pub fn scan_value(&self, v: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut work = self.work();
        self.scan_into(
            v,
            &mut String::new(),
            None,
            Binary::Scanned,
            &mut work,
            &mut out,
        );
        dedup(out)
    }

    fn scan_into(
        &self,
        v: &Value,
        path: &mut String,
        key: Option<&str>,
        binary: Binary,
        work: &mut Work,
        out: &mut Vec<Finding>,
    ) {
        match v {
            Value::String(s) => {
                let spans = self.spans(s, key, work);
                self.push_findings(&spans, path, out);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    crate::json::push_index(path, i);
                    self.scan_into(item, path, None, binary, work, out);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                let declared = declared_charset(map);
                for (k, item) in map {
                    if binary.skips(map, k, path) {
                        continue;
                    }
                    let len = path.len();
                    let spans = self.spans(k, None, work);
                    self.push_member(path, k, &spans);
                    self.push_findings(&spans, path, out);
                    // Only a blob (or a content item's media data) is
                    // decoded: every other string is read as it is.
                    let decodes = binary.decodes(map, k, path.get(..len).unwrap_or(""));
                    match item
                        .as_str()
                        .filter(|_| decodes)
                        .map(|b| decoded_blob(b, declared))
                    {
                        // Decoded as a client decodes it, and as it stands (a
                        // token sent as the blob's text reads as itself).
                        Some(Some(text)) => {
                            self.scan_into(&Value::String(text), path, Some(k), binary, work, out);
                            self.scan_into(item, path, Some(k), binary, work, out);
                        }
                        Some(None) => out.push(undecodable(path)),
                        None => {
                            let key = value_named_by(map, k, key).unwrap_or(k);
                            self.scan_into(item, path, Some(key), binary, work, out)
                        }
                    }
                    path.truncate(len);
                }
            }
            Value::Number(n) => {
                if let Some(t) = number_text(n) {
                    let spans = self.spans(&t, key, work);
                    self.push_findings(&spans, path, out);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// Add member `k` to a finding's `path`, redacted where `found` (what
    /// was found in the name) says: the path reaches the audit trail, the
    /// log and the caller's refusal, and `{"ghp_…": 1}` must not put the
    /// token there by naming where it was found.
    fn push_member(&self, path: &mut String, k: &str, found: &[Candidate]) {
        match found.is_empty() {
            true => push_member_name(path, k),
            false => push_member_name(path, &self.redact_text(k, found)),
        }
    }

    /// Replace every match in string values with `[REDACTED:<kind>]`; an object
    /// key with a finding is replaced the same way (made unique if needed).
    /// The value stays valid JSON; returns what was redacted.
    pub fn redact_value(&self, v: &mut Value) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut work = self.work();
        self.redact_into(
            v,
            &mut String::new(),
            None,
            Binary::Scanned,
            &mut work,
            &mut out,
        );
        dedup(out)
    }

    fn redact_into(
        &self,
        v: &mut Value,
        path: &mut String,
        key: Option<&str>,
        binary: Binary,
        work: &mut Work,
        out: &mut Vec<Finding>,
    ) {
        match v {
            Value::String(s) => {
                let found = self.spans(s, key, work);
                if !found.is_empty() {
                    *s = self.redact_text(s, &found);
                    self.push_findings(&found, path, out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    crate::json::push_index(path, i);
                    self.redact_into(item, path, None, binary, work, out);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                let keys: Vec<String> = map
                    .keys()
                    .filter(|k| !binary.skips(map, k, path))
                    .cloned()
                    .collect();
                let declared = declared_charset(map);
                for k in keys {
                    let len = path.len();
                    let before = out.len();
                    push_member_name(path, &k);
                    // Only a blob (or a content item's media data) is
                    // decoded: every other string is read as it is.
                    let decodes = binary.decodes(map, &k, path.get(..len).unwrap_or(""));
                    let named = value_named_by(map, &k, key).map(str::to_owned);
                    if let Some(item) = map.get_mut(&k) {
                        match item
                            .as_str()
                            .filter(|_| decodes)
                            .map(|b| decoded_blob_text(b, declared))
                        {
                            Some(Some((text, order))) => {
                                let whole =
                                    item.as_str().is_some_and(|b| read_two_ways(b, declared));
                                self.redact_blob(item, text, order, whole, path, &k, work, out)
                            }
                            // A text blob no client decoding reads as this
                            // scan would: nothing of it is passed on.
                            Some(None) => {
                                out.push(undecodable(path));
                                *item = Value::String(base64::Engine::encode(
                                    &text::B64STD,
                                    format!("[REDACTED:{UNDECODABLE_BLOB_KIND}]"),
                                ));
                            }
                            None => {
                                let key = named.as_deref().unwrap_or(&k);
                                self.redact_into(item, path, Some(key), binary, work, out)
                            }
                        }
                    }
                    // The name is read after its value, as it always was
                    // (the budget runs out where it did); what was found
                    // under it then gets the redacted name in its path.
                    let found = self.spans(&k, None, work);
                    if !found.is_empty() {
                        let named = std::mem::take(path);
                        path.push_str(named.get(..len).unwrap_or_default());
                        self.push_member(path, &k, &found);
                        for f in out.get_mut(before..).unwrap_or_default() {
                            if let Some(rest) = f.path.strip_prefix(named.as_str()) {
                                f.path = format!("{path}{rest}");
                            }
                        }
                        self.push_findings(&found, path, out);
                        rename_key(map, &k, self.redact_text(&k, &found));
                    }
                    path.truncate(len);
                }
            }
            Value::Number(n) => {
                let Some(t) = number_text(n) else { return };
                let found = self.spans(&t, key, work);
                if !found.is_empty() {
                    // A redacted number becomes the string that says what
                    // was there: no number can say it.
                    *v = Value::String(self.redact_text(&t, &found));
                    self.push_findings(&found, path, out);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// The text of a JSON number as a reader of it would see it: a card number
/// sent as `{"card": 4111111111111111}` is a card number. Numbers of fewer
/// than 8 characters are none of the formats (the shortest, a phone number
/// or a password, has 8), so they are not turned into text at all.
fn number_text(n: &serde_json::Number) -> Option<String> {
    let small = |x: u64| x < 10_000_000;
    if n.as_u64().is_some_and(small) || n.as_i64().is_some_and(|x| small(x.unsigned_abs())) {
        return None;
    }
    Some(n.to_string())
}

impl Scanner {
    /// Redact a text blob (`text` is its decoded text) in place: a secret in
    /// the blob as it stands takes the whole blob (its base64 reading is
    /// garbage then); else the decoded text is redacted and encoded again,
    /// so the client still gets base64.
    #[allow(clippy::too_many_arguments)]
    fn redact_blob(
        &self,
        item: &mut Value,
        text: String,
        order: Option<Utf16>,
        whole: bool,
        path: &mut String,
        key: &str,
        work: &mut Work,
        out: &mut Vec<Finding>,
    ) {
        let before = out.len();
        self.scan_into(item, path, Some(key), Binary::Skipped, work, out);
        if out.len() != before {
            *item = Value::String(encoded_blob("[REDACTED:blob]", order));
            return;
        }
        let mut decoded = Value::String(text);
        self.redact_into(&mut decoded, path, Some(key), Binary::Skipped, work, out);
        if out.len() != before {
            match decoded {
                // Read two ways: the redacted text of one, written back,
                // could still spell the secret in the other.
                _ if whole => *item = Value::String(encoded_blob("[REDACTED:blob]", None)),
                Value::String(t) => *item = Value::String(encoded_blob(&t, order)),
                _ => {}
            }
        }
    }
}

fn rename_key(map: &mut Map<String, Value>, old: &str, new: String) {
    let Some(item) = map.remove(old) else { return };
    let mut name = new.clone();
    let mut n = 2;
    while map.contains_key(&name) {
        name = format!("{new}#{n}");
        n += 1;
    }
    map.insert(name, item);
}

/// Judge a string by the object key it is the value of (`"password": "…"`).
fn keyed_value(text: &str, key: &str, out: &mut Vec<Candidate>) {
    let Some((word, kind)) = rules::classify_identifier(key) else {
        return;
    };
    let trimmed = text.trim();
    if trimmed.is_empty() || !rules::value_ok(word, key, trimmed) {
        return;
    }
    let start = text.len() - text.trim_start().len();
    out.push(Candidate {
        start,
        end: start + trimmed.len(),
        kind: KindRef::Builtin(kind),
        label: Label::Secret,
        priority: 2,
    });
}

/// The identifier a value member (`value`, `Value`, `ParameterValue`,
/// `SecretValue`, in any case) is the value of, when something names it:
/// - a sibling name member (`name`, `Key`, `ParameterKey`, `field`,
///   `label`, `id`, `purpose`, in any case and in any order) whose text
///   names a secret: `{"name": "DB_PASSWORD", "value": "…"}` (Kubernetes
///   `env`), `{"Name": "DB_PASSWORD", "Type": "SecureString", "Value": "…"}`
///   (AWS SSM), `{"Key": …, "Value": …}` (AWS tags), 1Password fields;
/// - else the key of the object itself, `parent`: Terraform's
///   `{"db_password": {"sensitive": true, "value": "…"}}`.
///
/// Read as an assignment of that name, as `DB_PASSWORD=…` would be, and
/// judged by the same rules (`{"name": "password_policy", …}` names no
/// secret; a `password`'s value must look like one).
fn value_named_by<'a>(
    map: &'a serde_json::Map<String, Value>,
    k: &str,
    parent: Option<&'a str>,
) -> Option<&'a str> {
    if !rules::is_pair_key(k.as_bytes(), rules::PAIR_VALUE_KEYS) {
        return None;
    }
    let names = |name: &&str| rules::classify_identifier(name).is_some();
    map.iter()
        .filter(|(n, _)| rules::is_pair_key(n.as_bytes(), rules::PAIR_NAME_KEYS))
        .filter_map(|(_, v)| v.as_str())
        .find(names)
        .or_else(|| parent.filter(names))
}

fn native_at(native: rules::Native, text: &str, pos: usize, len: usize) -> Option<rules::Found> {
    match native {
        rules::Native::CurlUser => rules::curl_user_at(text, pos, len),
        rules::Native::Jwt => rules::jwt_at(text, pos),
        rules::Native::PrivateKey => rules::private_key_at(text, pos),
        // Deferred by the caller; read to the end of the text here.
        rules::Native::Assignment => rules::assignment_head(text, pos)
            .and_then(|h| rules::assignment_value(text, &h, text.len())),
        rules::Native::ProsePassword => rules::prose_password_at(text, pos),
        rules::Native::UrlCredential => rules::url_credential_at(text, pos),
        rules::Native::AuthHeader => rules::auth_header_at(text, pos, text.len()),
        rules::Native::XmlAssignment => rules::xml_assignment_at(text, pos),
        rules::Native::MysqlPassword => rules::mysql_password_at(text, pos),
        rules::Native::CommandPassword => rules::command_password_at(text, pos),
        rules::Native::SumoKey => rules::sumo_key_at(text, pos),
    }
}

fn run_rule(rule: &CompiledRule, text: &str, offset: usize, piece: &str, out: &mut Vec<Candidate>) {
    let Matcher::Regex(re) = &rule.matcher else {
        return;
    };
    // Search without capture groups, which cost regex-lite most of its time
    // per byte; only a match is searched again for its groups.
    for m in re.find_iter(piece) {
        if let Some(caps) = re.captures_at(piece, m.start()) {
            push_accepted(rule, text, &caps, offset, out);
        }
    }
}

fn push_accepted(
    rule: &CompiledRule,
    text: &str,
    caps: &regex_lite::Captures,
    offset: usize,
    out: &mut Vec<Candidate>,
) {
    if let Some(f) = rules::accept(rule.spec, text, caps, offset) {
        out.push(Candidate::secret(f, rule));
    }
}

/// Whether rule `ri`'s required literal `req` ("" = none) starts at or after
/// `from` and ends by `end`. Where it next occurs is remembered per rule
/// (`None`: nowhere further), so a run of triggers costs one pass.
fn required_within(
    required_at: &mut Vec<(u16, Option<usize>)>,
    ri: u16,
    req: &str,
    bytes: &[u8],
    from: usize,
    end: usize,
) -> bool {
    let req = req.as_bytes();
    if req.is_empty() {
        return true;
    }
    let known = required_at.iter().find(|(r, _)| *r == ri).map(|&(_, p)| p);
    let next = match known {
        Some(None) => None,
        Some(Some(p)) if p >= from => Some(p),
        _ => {
            let found = bytes
                .get(from..)
                .and_then(|rest| {
                    rest.windows(req.len())
                        .position(|w| w.eq_ignore_ascii_case(req))
                })
                .map(|o| from + o);
            required_at.retain(|(r, _)| *r != ri);
            required_at.push((ri, found));
            found
        }
    };
    next.is_some_and(|p| p + req.len() <= end)
}

/// A code matcher's trigger whose value is read only once the next trigger
/// of the same matcher is known (or the text ends): the value ends where
/// that one begins, so the values of a run of triggers never overlap.
#[derive(Clone, Copy)]
enum Deferred {
    /// `identifier <op> value`: rule, what was read before the value, and
    /// where the secret word (the trigger) is.
    Assignment(u16, rules::AssignmentHead, usize),
    /// `Authorization: …`: rule, and where the trigger is.
    AuthHeader(u16, usize),
}

impl Deferred {
    /// Where a value read for the trigger before this one ends: first where
    /// this one's identifier ends, then (if that reading finds nothing)
    /// where its secret word begins. A bare value is a run of identifier
    /// bytes too, so this identifier can reach back over the whole value
    /// before it (`password=Sup3rS3cretValu3token=x`, fifth review H1), and
    /// the secret word it was found by can lie inside that value
    /// (`password=Passw0rd2024token=x`, sixth review): ending at its start
    /// judged an empty value. Both readings end before this value starts
    /// (after its operator), so each byte is read at most twice.
    fn ends_before(self) -> (usize, Option<usize>) {
        match self {
            Deferred::Assignment(_, h, word_at) => (h.id_end, Some(word_at)),
            Deferred::AuthHeader(_, pos) => (pos, None),
        }
    }
}

/// The waiting trigger of each deferring matcher.
#[derive(Default)]
struct Pending {
    assignment: Option<Deferred>,
    auth_header: Option<Deferred>,
}

impl Pending {
    fn slot(&mut self, d: Deferred) -> &mut Option<Deferred> {
        match d {
            Deferred::Assignment(..) => &mut self.assignment,
            Deferred::AuthHeader(..) => &mut self.auth_header,
        }
    }
    /// The trigger of `next`'s matcher that waits for it, taken out.
    fn take_before(&mut self, next: Deferred) -> Option<Deferred> {
        self.slot(next).take()
    }
    fn put(&mut self, d: Deferred) {
        *self.slot(d) = Some(d);
    }
}

/// Runs of bytes that a rule's `after` edge forbids right after a match,
/// remembered per edge so that a run is read once however many triggers lie
/// in it. A match that contains a trigger ending at `from` ends in
/// `from..=end`; if every byte there is forbidden after a match, the rule
/// cannot match and its regex need not run. Inside a long token run
/// (`tk-us-tk-us-…`, `AKIAAKIA…`) no trigger can end a token: each used to
/// cost a regex run over its whole window.
#[derive(Default)]
struct BlockedRuns {
    /// Per [`rules::Edge`], then identifier bytes: a known maximal run
    /// `[start, end)` of bytes of that class.
    known: [(usize, usize); rules::Edge::COUNT + 1],
    /// Per [`rules::Edge`]: bytes `[start, end)` are all of the edge's class,
    /// and the run holding them starts at `start` (exact) or before it.
    behind: [(usize, usize, bool); rules::Edge::COUNT],
}

impl BlockedRuns {
    /// How many bytes right before `pos` are of `edge`'s class, counted up to
    /// `most + 1`. What an earlier trigger read back is not read again: a run
    /// of triggers (`-us-us-…`) read up to 33 bytes back from each.
    fn run_before(&mut self, edge: rules::Edge, bytes: &[u8], pos: usize, most: usize) -> usize {
        let Some(slot) = self.behind.get_mut(edge as usize) else {
            return 0;
        };
        let (start, end, exact) = *slot;
        let floor = pos.saturating_sub(most + 1);
        let known = end.min(pos);
        // Read back to what is known (or to the floor): each byte about once.
        let mut k = pos;
        while k > floor.max(known) && edge.blocks(text::at(bytes, k - 1)) {
            k -= 1;
        }
        // Reached the known run: it goes on at least back to its start.
        if k == known && k > floor && start <= k && (exact || pos - start > most) {
            *slot = (start, pos, exact);
            return if exact {
                (pos - start).min(most + 1)
            } else {
                most + 1
            };
        }
        if k == known && k > floor {
            // Known only as "longer than another rule's window": read on.
            while k > floor && edge.blocks(text::at(bytes, k - 1)) {
                k -= 1;
            }
        }
        // At the floor with more of the class before it: longer than `most`.
        let longer = k == floor && floor > 0 && edge.blocks(text::at(bytes, k - 1));
        *slot = (k, pos, !longer);
        if longer {
            most + 1
        } else {
            pos - k
        }
    }

    fn no_end_within(&mut self, edge: rules::Edge, bytes: &[u8], from: usize, end: usize) -> bool {
        self.no_end_between(edge, bytes, from, from, end)
    }

    /// Like [`BlockedRuns::no_end_within`], and the run must also reach `least`.
    fn no_end_between(
        &mut self,
        edge: rules::Edge,
        bytes: &[u8],
        from: usize,
        least: usize,
        end: usize,
    ) -> bool {
        if edge == rules::Edge::None {
            return false;
        }
        let run_end = self.run_end(edge as usize, |b| edge.blocks(b), bytes, from);
        run_end > end || run_end < least
    }

    /// Length of the run of token bytes `[A-Za-z0-9_-]` from `from`.
    fn token_run(&mut self, bytes: &[u8], from: usize) -> usize {
        let edge = rules::Edge::Token;
        self.run_end(edge as usize, |b| edge.blocks(b), bytes, from) - from
    }

    /// Where the identifier holding a secret word at `pos` ends (read once
    /// per run of identifier bytes, however many triggers it holds).
    fn identifier_end(&mut self, bytes: &[u8], pos: usize) -> usize {
        self.run_end(rules::Edge::COUNT, rules::is_ident_byte, bytes, pos)
    }

    /// End of the run of `class` bytes from `from` (`from` itself if none).
    fn run_end(
        &mut self,
        slot: usize,
        class: impl Fn(u8) -> bool,
        bytes: &[u8],
        from: usize,
    ) -> usize {
        let Some(slot) = self.known.get_mut(slot) else {
            return from;
        };
        let (start, known_end) = *slot;
        let inside = |p: usize| start <= p && p < known_end;
        let mut p = from;
        // Read forward only until the known run is reached: each byte is
        // read about once per class, however the triggers overlap.
        while p < bytes.len() && !inside(p) && class(text::at(bytes, p)) {
            p += 1;
        }
        let run_end = if inside(p) { known_end } else { p };
        if run_end > from {
            *slot = (if inside(from) { start } else { from }, run_end);
        }
        run_end
    }
}

/// The least count `m` of the `[A-Za-z0-9_-]{m,longest}` tail of `spec`
/// (see [`rules::RuleSpec::longest`]); 0 when it has none.
fn token_tail_least(spec: &rules::RuleSpec) -> Result<usize, String> {
    if spec.longest == 0 {
        return Ok(0);
    }
    let tail = "[A-Za-z0-9_-]{"; // the tail's class, then its counts
    let counts = format!(",{}}}", spec.longest);
    spec.pattern
        .rfind(tail)
        .and_then(|at| spec.pattern.get(at + tail.len()..))
        .filter(|rest| rest.contains(&counts))
        .and_then(|rest| rest.split(',').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            format!(
                "built-in detector {}: no token tail {{m,{}}}",
                spec.kind, spec.longest
            )
        })
}

/// Whether a rule's regex runs anchored where its match must start, once per
/// trigger: at the trigger (`back == 0`), or where the run of bytes its
/// `before` edge forbids begins before the trigger (a match never starts
/// after such a byte, and every byte the pattern has before its trigger is
/// one: `<digits>|`, `<digits>:AA`, `<32 hex>-us`). The others (no edge
/// before, or no trigger) run unanchored over merged windows; an unanchored
/// search over a run of triggers (`123456789012345|` repeated) cost 50-80x
/// clean text per byte.
fn spec_anchors(spec: &rules::RuleSpec) -> bool {
    !spec.triggers.is_empty() && (spec.back == 0 || spec.before != rules::Edge::None)
}

/// Every rule's trigger literals, lower-cased, each with the rules it triggers.
fn trigger_literals(rules: &[CompiledRule]) -> Result<Vec<prefilter::Literal>, String> {
    let mut literals: Vec<prefilter::Literal> = Vec::new();
    for (ri, r) in rules.iter().enumerate() {
        let ri = u16::try_from(ri).map_err(|_| "too many rules".to_string())?;
        for t in r.spec.triggers {
            let bytes = t.as_bytes().to_ascii_lowercase();
            if bytes.len() < 2 {
                return Err(format!(
                    "trigger {t:?} of {} is shorter than 2 bytes",
                    r.spec.kind
                ));
            }
            match literals
                .iter_mut()
                .find(|l| l.bytes == bytes && l.word_start == r.spec.word_start)
            {
                Some(l) => l.rules.push(ri),
                None => literals.push(prefilter::Literal {
                    bytes,
                    word_start: r.spec.word_start,
                    rules: vec![ri],
                }),
            }
        }
    }
    Ok(literals)
}

/// Call `f(offset, piece)` for pieces of `text[start..end]` of at most `size`
/// bytes, consecutive pieces overlapping by `overlap`, cut on char boundaries.
fn for_each_piece(
    text: &str,
    start: usize,
    end: usize,
    size: usize,
    overlap: usize,
    mut f: impl FnMut(usize, &str),
) {
    let mut s = start;
    loop {
        let e = text::ceil_boundary(text, (s + size).min(end));
        if let Some(piece) = text.get(s..e) {
            f(s, piece);
        }
        if e >= end {
            break;
        }
        let next = text::floor_boundary(text, e.saturating_sub(overlap));
        s = if next > s { next } else { e };
    }
}

/// `/` and the member name `key` as a JSON pointer token.
fn push_member_name(path: &mut String, key: &str) {
    path.push('/');
    push_pointer_token(path, key);
}

/// The kept candidates (disjoint, by start), each widened over the
/// candidates that lost to it, then merged where widening made them meet.
/// What lost still holds a secret: a card a second reading finds over the
/// tail of an IBAN the text holds keeps its kind, and the IBAN's head is
/// redacted with it (a helper's attack, twenty-second session: `GB82 WEST
/// 1234` was left in the clear). A merge keeps the better-ranked kind.
fn cover_lost(mut kept: Vec<Candidate>, lost: &[(usize, usize)]) -> Vec<Candidate> {
    if lost.is_empty() {
        return kept;
    }
    // Looked up in the spans as kept (disjoint and by start, so a binary
    // search finds the first one a lost span reaches), widened after.
    let spans: Vec<(usize, usize)> = kept.iter().map(|c| (c.start, c.end)).collect();
    for &(s, e) in lost {
        let first = spans.partition_point(|&(_, end)| end <= s);
        for (k, &(start, _)) in spans.iter().enumerate().skip(first) {
            if start >= e {
                break;
            }
            if let Some(c) = kept.get_mut(k) {
                c.start = c.start.min(s);
                c.end = c.end.max(e);
            }
        }
    }
    crate::sort::sort_by(&mut kept, |a, b| a.start < b.start);
    let mut merged: Vec<Candidate> = Vec::with_capacity(kept.len());
    for c in kept {
        match merged.last_mut() {
            Some(m) if c.start < m.end => {
                let end = m.end.max(c.end);
                let better = (c.priority, m.end - m.start) < (m.priority, c.end - c.start);
                if better {
                    m.kind = c.kind;
                    m.label = c.label;
                    m.priority = c.priority;
                }
                m.end = end;
            }
            _ => merged.push(c),
        }
    }
    merged
}

/// RFC 6901: `~` → `~0`, `/` → `~1`.
pub(crate) fn push_pointer_token(path: &mut String, key: &str) {
    // Bytes, not chars: `~` and `/` are ASCII, and a char pattern decodes
    // UTF-8 for every character of every member name (a 50-tool list
    // builds ~4,000 pointers).
    if !key.bytes().any(|b| b == b'~' || b == b'/') {
        path.push_str(key);
        return;
    }
    for ch in key.chars() {
        match ch {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn dedup(mut v: Vec<Finding>) -> Vec<Finding> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|f| seen.insert((f.kind.clone(), f.path.clone())));
    v
}

/// Whether base64 payloads are left out of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    /// Every string is scanned (arguments, errors).
    Scanned,
    /// Binary payloads of content items are skipped: base64, not text. Only a
    /// string, and only where MCP puts one: the `data` of an `image` or
    /// `audio` item, the `blob` of a resource whose `mimeType` is not text,
    /// in a content item of a result (`content[]`, `contents[]`, a prompt's
    /// or sampling request's `messages[].content`, an embedded `resource`).
    /// Anywhere else (a catalogue's `inputSchema` examples, `annotations`,
    /// `structuredContent`) an object shaped like one is JSON the client
    /// reads as text, and is scanned like any other (fourth review H1).
    Skipped,
}

impl Binary {
    fn skips(self, object: &Map<String, Value>, key: &str, at: &str) -> bool {
        // Asked of every member of every object: the names first.
        if !matches!(key, "data" | "blob")
            || self != Binary::Skipped
            || !object.get(key).is_some_and(Value::is_string)
            || !is_content_item(at)
        {
            return false;
        }
        let is = |member: &str, f: &dyn Fn(&str) -> bool| {
            object.get(member).and_then(Value::as_str).is_some_and(f)
        };
        match key {
            // Base64 as the spec defines it (RFC 4648 §4, padded): a value
            // with any other character (a token's `_`) is no image a client
            // decodes, and is read as the text it is.
            // Only with a media type no reader shows as text (an SVG is
            // XML, `text/plain` is text, fifth review L1), or none and bytes
            // that are not text: anything else is decoded and scanned.
            "data" => {
                is("type", &|t| t == "image" || t == "audio")
                    && object
                        .get(key)
                        .and_then(Value::as_str)
                        .is_some_and(is_strict_base64)
                    && match object.get("mimeType") {
                        Some(Value::String(m)) => is_media_type(m) && !is_text_media_type(m),
                        _ => !decodes_to_text(object, key),
                    }
            }
            // A blob is text the client may read when its type says so, and
            // also when its type says nothing a reader would not show as
            // text (`application/octet-stream`, a PEM or PGP key, a shell
            // script) but its bytes are UTF-8 text: review L1 found keys in
            // exactly those. Images, audio, video and fonts are never text.
            // Lenient clients read invalid bytes as U+FFFD (Node's
            // `toString()`), so one bad byte does not make text binary: a
            // blob is binary when most of it is not text (third review F6).
            "blob" => {
                !is_text_blob(object)
                    && (is("mimeType", &is_media_type) || !decodes_to_text(object, key))
            }
            _ => false,
        }
    }

    /// The base64 text of a resource `blob` that a client decodes and reads
    /// as text: its bytes are scanned, not its base64 (which hides every
    /// secret from a text detector).
    /// Asked only of a member `skips` kept (the scanners filter first), so
    /// a blob is not decoded twice to answer both.
    fn decodes(self, object: &Map<String, Value>, key: &str, at: &str) -> bool {
        // An image's `data` only in a content item: elsewhere an object
        // shaped like one is JSON, read (and redacted) as the text it is.
        let media = || {
            is_content_item(at)
                && object
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "image" || t == "audio")
        };
        self == Binary::Skipped
            && (key == "blob" || (key == "data" && media()))
            && object.get(key).is_some_and(Value::is_string)
    }
}

/// Whether member `key` of a content item is base64 of text, as its item's
/// charset or a byte-order mark says to read it.
fn decodes_to_text(object: &Map<String, Value>, key: &str) -> bool {
    object
        .get(key)
        .and_then(Value::as_str)
        .and_then(|b| read_blob(b, declared_charset(object), false))
        .map(|(text, _)| text)
        .is_some_and(|t| mostly_text(&t))
}

/// A UTF-16 byte order, as a charset parameter names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf16 {
    Le,
    Be,
}

/// What a content item's `mimeType` says of its charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// None, or one whose ASCII reads as ASCII (UTF-8, Latin-1, Windows
    /// code pages): read as UTF-8, lossily.
    AsciiCompatible,
    Utf16(Utf16),
    /// One this scan cannot read (UTF-32, UTF-7, EBCDIC, …): a client that
    /// decodes by the label reads text the scan never saw, so such a text
    /// blob fails closed as undecodable (seventh review M1).
    Unreadable,
}

/// The charset a content item's `mimeType` declares. The WHATWG Encoding
/// labels are read as browsers and Node's TextDecoder read them: a bare
/// `utf-16` is little-endian there (sixth review).
fn declared_charset(object: &Map<String, Value>) -> Declared {
    let Some(m) = object.get("mimeType").and_then(Value::as_str) else {
        return Declared::AsciiCompatible;
    };
    let label = m.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    });
    let Some(label) = label else {
        return Declared::AsciiCompatible;
    };
    match label.as_str() {
        "utf-16le" | "utf-16" | "unicode" | "ucs-2" | "csunicode" | "unicodefeff"
        | "iso-10646-ucs-2" => Declared::Utf16(Utf16::Le),
        "utf-16be" | "unicodefffe" => Declared::Utf16(Utf16::Be),
        "utf-8" | "utf8" | "unicode-1-1-utf-8" | "us-ascii" | "ascii" | "latin1" | "l1"
        | "iso8859-1" => Declared::AsciiCompatible,
        l if l.starts_with("iso-8859-")
            || l.starts_with("windows-125")
            || l.starts_with("cp125")
            || l.starts_with("x-mac") =>
        {
            Declared::AsciiCompatible
        }
        _ => Declared::Unreadable,
    }
}

/// Whether the object at JSON pointer `at` (from the scanned result or
/// server message params) is a content item: `/content/N`, `/contents/N`,
/// `/messages/N/content` (or its `/M` in a list), or the `resource` such an
/// item embeds.
fn is_content_item(at: &str) -> bool {
    let tokens: Vec<&str> = at.split('/').skip(1).collect();
    let index = |t: &&str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let item = |t: &[&str]| match t {
        ["content", i] | ["contents", i] => index(i),
        ["messages", i, "content"] => index(i),
        ["messages", i, "content", j] => index(i) && index(j),
        _ => false,
    };
    match tokens.split_last() {
        Some((&"resource", rest)) => item(rest),
        _ => item(&tokens),
    }
}

/// Standard padded base64 (RFC 4648 §4), as MCP's `data` members are.
fn is_strict_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A resource content whose `mimeType` says text (or says nothing: the client
/// cannot know it is not, so it is read as text if it decodes as such).
fn is_text_blob(object: &Map<String, Value>) -> bool {
    match object.get("mimeType") {
        None | Some(Value::Null) => true,
        Some(Value::String(m)) => is_text_media_type(m),
        Some(_) => false,
    }
}

/// `text/*`, JSON, XML, YAML, JavaScript and the like (RFC 6838 §4.2.8
/// structured suffixes): what a reader shows as text. Parameters and case are
/// ignored (RFC 9110 §8.3.1).
fn is_text_media_type(m: &str) -> bool {
    let essence = m
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    top == "text"
        || (top == "application"
            && (matches!(
                sub,
                "json"
                    | "xml"
                    | "yaml"
                    | "x-yaml"
                    | "toml"
                    | "javascript"
                    | "ecmascript"
                    | "x-sh"
                    | "sql"
                    | "x-www-form-urlencoded"
                    | "x-ndjson"
                    | "jsonl"
                    | "csv"
            )))
        // A structured suffix says text whatever the top type: an SVG
        // (`image/svg+xml`) is XML a reader opens as text (third review F6).
        || sub.ends_with("+json")
        || sub.ends_with("+xml")
        || sub.ends_with("+yaml")
}

/// The text of a resource content's base64 `blob` when its `mimeType` names
/// a text type (`text/*`, JSON, XML, `+json`…), decoded as DLP reads it
/// (lenient base64, the declared charset, UTF-16 read both ways): what the
/// catalogue checks read. A blob without a `mimeType`, or with a binary one,
/// is `None`: unlike DLP, which fails closed on a secret, the checks would
/// read random bytes as hidden characters and encoded text.
pub fn text_blob(object: &Map<String, Value>) -> Option<String> {
    let media = object.get("mimeType").and_then(Value::as_str)?;
    if !is_text_media_type(media) {
        return None;
    }
    let blob = object.get("blob").and_then(Value::as_str)?;
    decoded_blob(blob, declared_charset(object))
}

/// The text a base64 `blob` decodes to, if it is base64 at all (a blob that
/// is not is scanned as the string it is). Invalid UTF-8 is read with
/// replacement characters, as a lenient client shows it.
fn undecodable(path: &str) -> Finding {
    Finding {
        kind: UNDECODABLE_BLOB_KIND.to_owned(),
        label: Label::Secret,
        path: path.to_owned(),
    }
}

/// A text blob as clients decode it: they are lenient (Python's `b64decode`
/// and Node's `Buffer.from` skip every character outside the alphabet, `atob`
/// skips whitespace; MIME-wrapped base64 from `encodebytes` has a newline
/// every 76 characters; Node reads the URL-safe alphabet too), so the scan
/// reads the same bytes: anything but alphabet characters dropped, `-`/`_`
/// as `+`/`/`, padding and trailing bits optional. `None` when even that
/// leaves no whole base64 text (one character too many).
///
/// Its bytes are read as UTF-16 when they start with a UTF-16 byte-order mark
/// (which readers follow over any declared charset, as browsers do) or the
/// item declares a UTF-16 charset; as UTF-8 otherwise (fifth review M1: a
/// UTF-16 text blob read as UTF-8 hid every secret behind NUL bytes).
fn decoded_blob(s: &str, declared: Declared) -> Option<String> {
    decoded_blob_text(s, declared).map(|(text, _)| text)
}

/// [`decoded_blob`], with the UTF-16 byte order it was read in (`None`: UTF-8).
///
/// UTF-16 chosen by a label or by its NUL bytes (not by a byte-order mark)
/// may be a lie a client ignores (`b64decode(blob).decode()` reads UTF-8):
/// then the UTF-8 reading is scanned too, after a blank line (seventh
/// review H3, H4).
fn decoded_blob_text(s: &str, declared: Declared) -> Option<(String, Option<Utf16>)> {
    read_blob(s, declared, true)
}

/// Whether [`decoded_blob_text`] reads these bytes two ways (a UTF-16 label
/// or NUL bytes, no byte-order mark): then no rewrite of one reading is safe
/// in the other, and a finding takes the whole blob.
fn read_two_ways(s: &str, declared: Declared) -> bool {
    let Some(bytes) = decoded_blob_bytes(s) else {
        return false;
    };
    let marked = matches!(bytes.as_slice(), [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..]);
    let utf16 = matches!(declared, Declared::Utf16(_)) || sniffed_utf16(&bytes).is_some();
    !marked && utf16 && declared != Declared::Unreadable
}

/// A blob's bytes as text; `both`: add the UTF-8 reading of UTF-16 chosen by
/// a label or by NUL bytes (see [`decoded_blob_text`]). Without it, the one
/// reading a client following the label or the sniff shows: what decides
/// whether the blob is text at all.
fn read_blob(s: &str, declared: Declared, both: bool) -> Option<(String, Option<Utf16>)> {
    let declared = match declared {
        Declared::Unreadable => return None,
        Declared::Utf16(order) => Some(order),
        Declared::AsciiCompatible => None,
    };
    let bytes = decoded_blob_bytes(s)?;
    // A UTF-32 mark first (`FF FE 00 00` also starts like UTF-16LE's): such
    // text is read with its NUL bytes dropped, which leaves its ASCII.
    if let [0xFF, 0xFE, 0, 0, rest @ ..] | [0, 0, 0xFE, 0xFF, rest @ ..] = bytes.as_slice() {
        let ascii: Vec<u8> = rest.iter().copied().filter(|b| *b != 0).collect();
        return Some((String::from_utf8_lossy(&ascii).into_owned(), None));
    }
    let (order, body, marked) = match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => (Some(Utf16::Le), rest, true),
        [0xFE, 0xFF, rest @ ..] => (Some(Utf16::Be), rest, true),
        all => (declared.or_else(|| sniffed_utf16(all)), all, false),
    };
    let utf8 = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let text = match order {
        Some(order) => {
            let units = body.chunks(2).map(|p| match (order, p) {
                (Utf16::Le, [a, b]) => u16::from_le_bytes([*a, *b]),
                (Utf16::Be, [a, b]) => u16::from_be_bytes([*a, *b]),
                // An odd last byte: read as a replacement character.
                _ => 0xFFFD,
            });
            let utf16: String = char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            match marked || !both {
                true => utf16,
                false => format!("{utf16}\n\n{}", utf8(body)),
            }
        }
        None => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
    };
    Some((text, order))
}

/// UTF-16 without a mark or a label, as its NUL bytes give it away: most
/// ASCII text in UTF-16 has a NUL in every other byte (a reader that sniffs,
/// or a user who picks the encoding, reads it).
fn sniffed_utf16(bytes: &[u8]) -> Option<Utf16> {
    let pairs = bytes.len() / 2;
    if pairs < 4 {
        return None;
    }
    let nul_at = |odd: usize| {
        bytes
            .iter()
            .skip(odd)
            .step_by(2)
            .filter(|b| **b == 0)
            .count()
    };
    let (odd, even) = (nul_at(1), nul_at(0));
    match (
        odd * 10 >= pairs * 6 && even * 10 < pairs,
        even * 10 >= pairs * 6 && odd * 10 < pairs,
    ) {
        (true, _) => Some(Utf16::Le),
        (_, true) => Some(Utf16::Be),
        _ => None,
    }
}

/// Base64 of `text` in the encoding a blob was read in: UTF-16 with a
/// byte-order mark (so every reader reads it in that order), else UTF-8.
fn encoded_blob(text: &str, order: Option<Utf16>) -> String {
    let bytes: Vec<u8> = match order {
        None => text.as_bytes().to_vec(),
        Some(order) => {
            let mut out = match order {
                Utf16::Le => vec![0xFF, 0xFE],
                Utf16::Be => vec![0xFE, 0xFF],
            };
            for unit in text.encode_utf16() {
                out.extend(match order {
                    Utf16::Le => unit.to_le_bytes(),
                    Utf16::Be => unit.to_be_bytes(),
                });
            }
            out
        }
    };
    base64::Engine::encode(&text::B64STD, bytes)
}

/// Bytes most of which read as text (UTF-8, not control characters other
/// than whitespace): what a reader would show, and a scan must read.
fn mostly_text(text: &str) -> bool {
    let total = text.chars().count().max(1);
    let odd = text
        .chars()
        // ESC starts a terminal colour code: a coloured log is text (fifth
        // review L2).
        .filter(|c| *c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace() && *c != '\u{1b}'))
        .count();
    odd * 10 <= total
}

/// Media whose bytes no reader shows as text.
fn is_media_type(m: &str) -> bool {
    let top = m
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(top.as_str(), "image" | "audio" | "video" | "font")
}

fn decoded_blob_bytes(s: &str) -> Option<Vec<u8>> {
    let clean: String = s
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '+' | '/' => Some(c),
            '-' => Some('+'),
            '_' => Some('/'),
            _ => None,
        })
        .collect();
    text::decode_b64std(&clean)
}

/// Findings in a JSON-RPC `result`: everything a client may read as text
/// (`content[]`, `contents[]`, `messages[].content`, `structuredContent`, any
/// other member in any case: a Go client reads `"Content"` as `content`),
/// leaving out only the base64 payloads of content items.
pub fn scan_result(scanner: &Scanner, result: &Value) -> Vec<Finding> {
    scan_answer(scanner, result, false)
}

/// Redact a JSON-RPC `result` in place (what [`scan_result`] scans).
pub fn redact_result(scanner: &Scanner, result: &mut Value) -> Vec<Finding> {
    redact_answer(scanner, result, false)
}

/// [`scan_result`] of a catalogue list (`tools/list` and the like): its
/// clean strings are remembered ([`CleanMemo`]).
pub fn scan_list(scanner: &Scanner, result: &Value) -> Vec<Finding> {
    scan_answer(scanner, result, true)
}

fn scan_answer(scanner: &Scanner, result: &Value, list: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut work = scanner.work();
    if list {
        work.memo = Memo::Lists;
    }
    scanner.scan_into(
        result,
        &mut String::new(),
        None,
        Binary::Skipped,
        &mut work,
        &mut out,
    );
    dedup(out)
}

/// [`redact_result`] of a catalogue list.
pub fn redact_list(scanner: &Scanner, result: &mut Value) -> Vec<Finding> {
    redact_answer(scanner, result, true)
}

fn redact_answer(scanner: &Scanner, result: &mut Value, list: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut work = scanner.work();
    if list {
        work.memo = Memo::Lists;
    }
    scanner.redact_into(
        result,
        &mut String::new(),
        None,
        Binary::Skipped,
        &mut work,
        &mut out,
    );
    dedup(out)
}

/// Compile `$.dlp` (`section` is its value, `None` when absent: requests block,
/// responses redact, detectors secrets and pii, no custom detectors).
pub fn compile(section: Option<&Value>, path: &str, errs: &mut Errors) -> Option<DlpPolicy> {
    let errors_before = errs.0.len();
    let mut requests = Action::Block;
    let mut responses = Action::Redact;
    let mut secrets = true;
    let mut pii = true;
    let mut custom = Vec::new();
    let mut exempt_tools = Vec::new();
    if let Some(v) = section {
        let mut r = ObjReader::new(v, path, errs)?;
        if let Some(a) = r.keyword("requests", errs) {
            requests = a;
        }
        if let Some(a) = r.keyword("responses", errs) {
            responses = a;
        }
        let detectors_path = r.field_path("detectors");
        if let Some(list) = r.strings("detectors", errs) {
            secrets = false;
            pii = false;
            for (i, d) in list.iter().enumerate() {
                match keyword_at(d, &index(&detectors_path, i), errs) {
                    Some(Detectors::Secrets) => secrets = true,
                    Some(Detectors::Pii) => pii = true,
                    None => {}
                }
            }
        }
        let custom_path = r.field_path("custom");
        if let Some(cv) = r.get("custom") {
            custom = compile_custom(cv, &custom_path, errs);
        }
        if let Some(list) = r.strings("exempt_tools", errs) {
            exempt_tools = list.iter().map(|p| crate::glob::Glob::new(p)).collect();
        }
        r.finish(errs);
    }
    let scanner = match Scanner::builtin(secrets, pii) {
        Ok(s) => s.with_custom(custom),
        Err(e) => {
            errs.push(path, e);
            return None;
        }
    };
    if errs.0.len() > errors_before {
        return None;
    }
    Some(DlpPolicy {
        requests,
        responses,
        exempt_tools,
        scanner,
    })
}

fn compile_custom(v: &Value, path: &str, errs: &mut Errors) -> Vec<CustomDetector> {
    let Value::Array(items) = v else {
        errs.push(
            path,
            format!("expected an array of detectors, found {}", type_name(v)),
        );
        return Vec::new();
    };
    let mut out: Vec<CustomDetector> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(mut r) = ObjReader::new(item, &p, errs) else {
            continue;
        };
        let id_path = r.field_path("id");
        let pattern_path = r.field_path("pattern");
        let id = r.required("id", errs).and(r.string("id", errs));
        let pattern = r.required("pattern", errs).and(r.string("pattern", errs));
        let label = r
            .required("label", errs)
            .and(r.keyword::<Label>("label", errs));
        r.finish(errs);
        if let Some(id) = id {
            let well_formed = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !well_formed {
                errs.push(&id_path, "id must be 1-64 characters of [A-Za-z0-9_.-]");
            } else if out.iter().any(|c| c.id == id) {
                errs.push(&id_path, format!("duplicate detector id {id:?}"));
            }
        }
        let (Some(id), Some(pattern), Some(label)) = (id, pattern, label) else {
            continue;
        };
        match CustomDetector::new(id, pattern, label) {
            Ok(c) => out.push(c),
            Err(e) => errs.push(&pattern_path, e),
        }
    }
    out
}

#[cfg(test)]
mod tests;
