//! `when` conditions: compiled once at configure time, evaluated per request.
//!
//! A condition is a tree of combinators (`all`, `any`, `not`) over leaves that
//! test one value addressed by a JSON pointer (RFC 6901) into
//! `params.arguments` (`arg`) or into `params` itself (`param`, our extension,
//! so resource rules can address `/uri`), or the time of the request (`time`,
//! a window of days and hours: [`crate::time_window`]).
//!
//! Evaluation is three-valued and fails closed (POLICY.md, "Conditions"): a
//! missing value (other than under `exists`), a value of the wrong JSON type,
//! or a value a canonicaliser refuses is an *error*, never a quiet false. There
//! is no type coercion: a number operator needs a JSON number, so `"1000"`,
//! `"1e3"`, `" 1000"`, `"1_000"` or `"0x3e8"` against `lte: 500` is an error,
//! whatever the string holds; `eq`/`ne`/`in`/`not_in` need the argument to have
//! the JSON type of the configured value (of one listed value for `in`), so
//! `"true"` is not silently unequal to `true`. Numbers compare as numbers
//! (`1 == 1.0`, exactly, even beyond 2^53).

use crate::canon;
use crate::config::{child, index, keyword_list, keywords, type_name, Errors, Keyword, ObjReader};
use crate::time_window::TimeWindow;
use regex_lite::{Regex, RegexBuilder};
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::fmt::Write as _;

/// Longest `matches` pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Longest value `matches` reads, in bytes: regex-lite's engine is linear but
/// slow per byte, and a whole request body may be one argument. Longer values
/// are an error (fail closed) rather than a slow match.
pub const MAX_MATCHED_VALUE_BYTES: usize = 64 * 1024;
/// Deepest nesting of combinators accepted (the leaf counts).
pub const MAX_DEPTH: usize = 32;
/// Explanations show a value in full only up to this many characters.
const SHOWN_CHARS: usize = 64;

/// The operator keys of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpName {
    Eq,
    Ne,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Matches,
    Prefix,
    Suffix,
    Contains,
    MaxLen,
    Exists,
    PathUnder,
    HostIn,
}

// In the order POLICY.md lists them (error messages list them so).
keywords!(OpName {
    Eq => "eq",
    Ne => "ne",
    In => "in",
    NotIn => "not_in",
    Lt => "lt",
    Lte => "lte",
    Gt => "gt",
    Gte => "gte",
    Matches => "matches",
    Prefix => "prefix",
    Suffix => "suffix",
    Contains => "contains",
    MaxLen => "max_len",
    Exists => "exists",
    PathUnder => "path_under",
    HostIn => "host_in",
});

/// The combinator keys of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combinator {
    All,
    Any,
    Not,
}

keywords!(Combinator {
    All => "all",
    Any => "any",
    Not => "not",
});

/// A compiled, immutable `when` condition.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf(Leaf),
    /// `{"time": {...}}`: the request's time is inside the window.
    Time(TimeWindow),
}

/// Where a condition reads: from `params.arguments` or from `params`, down
/// these reference tokens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberPath {
    pub in_arguments: bool,
    pub tokens: Vec<String>,
}

/// One test of one addressed value.
#[derive(Debug, Clone)]
pub struct Leaf {
    source: Source,
    /// The pointer as written, for explanations.
    pointer: String,
    /// The pointer's reference tokens, unescaped (`~1` → `/`, `~0` → `~`).
    tokens: Vec<String>,
    op: Operator,
}

/// Where a leaf's pointer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `params.arguments`
    Arg,
    /// `params`
    Param,
}

keywords!(Source {
    Arg => "arg",
    Param => "param",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone)]
enum Operator {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Compare(Bound, Number),
    Matches {
        pattern: String,
        regex: Regex,
    },
    Prefix(String),
    Suffix(String),
    Contains(String),
    MaxLen(u64),
    Exists(bool),
    /// The canonical directory ([`canon::canonical_path`]).
    PathUnder(String),
    /// Canonical hosts ([`canon::canonical_host`]).
    HostIn(Vec<String>),
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct CondInput<'a> {
    /// `params.arguments`, `Null` if absent.
    pub arguments: &'a Value,
    /// The whole `params` object, `Null` if absent.
    pub params: &'a Value,
    /// When the request is decided, in milliseconds since the Unix epoch
    /// (UTC): what `time` leaves read.
    pub now_ms: u64,
}

/// The result of evaluating a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    True,
    False,
    /// The condition could not be decided; the message never holds argument values.
    Error(String),
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

/// Compile a `when` value found at JSON path `path`, recording every mistake in
/// `errs`. `None` if there was any.
pub fn compile(v: &Value, path: &str, errs: &mut Errors) -> Option<Condition> {
    let before = errs.0.len();
    let compiled = compile_at(v, path, 1, errs);
    // A subtree may compile while a sibling failed; only a clean tree is returned.
    compiled.filter(|_| errs.0.len() == before)
}

fn compile_at(v: &Value, path: &str, depth: usize, errs: &mut Errors) -> Option<Condition> {
    if depth > MAX_DEPTH {
        errs.push(path, format!("conditions nested deeper than {MAX_DEPTH}"));
        return None;
    }
    let Value::Object(map) = v else {
        errs.push(
            path,
            format!("expected a condition object, found {}", type_name(v)),
        );
        return None;
    };
    let combinators: Vec<Combinator> = Combinator::ALL
        .iter()
        .copied()
        .filter(|k| map.contains_key(k.as_str()))
        .collect();
    match combinators.as_slice() {
        [] if map.contains_key(TIME_KEY) => compile_time(v, path, errs).map(Condition::Time),
        [] => compile_leaf(v, path, errs).map(Condition::Leaf),
        [one] => compile_combinator(v, *one, path, depth, errs),
        several => {
            errs.push(
                path,
                format!(
                    "a condition has exactly one of {}; found {}",
                    keyword_list::<Combinator>(),
                    joined(several, " and ")
                ),
            );
            None
        }
    }
}

fn compile_combinator(
    v: &Value,
    which: Combinator,
    path: &str,
    depth: usize,
    errs: &mut Errors,
) -> Option<Condition> {
    let mut r = ObjReader::new(v, path, errs)?;
    let key = which.as_str();
    let compiled = match which {
        Combinator::Not => {
            let inner = r.get(key)?;
            compile_at(inner, &r.field_path(key), depth + 1, errs)
                .map(|c| Condition::Not(Box::new(c)))
        }
        Combinator::All | Combinator::Any => {
            let is_all = which == Combinator::All;
            let list_path = r.field_path(key);
            match r.get(key)? {
                Value::Array(items) if !items.is_empty() => {
                    let mut children = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if let Some(c) = compile_at(item, &index(&list_path, i), depth + 1, errs) {
                            children.push(c);
                        }
                    }
                    // A missing child already recorded its error; compile() drops the tree.
                    Some(if is_all {
                        Condition::All(children)
                    } else {
                        Condition::Any(children)
                    })
                }
                // An empty `all` would always hold and an empty `any` never:
                // both are almost certainly a mistake in a security policy.
                other => {
                    errs.push(
                        list_path,
                        format!(
                            "expected a non-empty array of conditions, found {}",
                            describe_kind(other)
                        ),
                    );
                    None
                }
            }
        }
    };
    r.finish(errs);
    compiled
}

/// The words of `keys`, separated by `sep`.
fn joined<K: Keyword>(keys: &[K], sep: &str) -> String {
    keys.iter().map(|k| k.word()).collect::<Vec<_>>().join(sep)
}

fn describe_kind(v: &Value) -> &'static str {
    match v {
        Value::Array(a) if a.is_empty() => "an empty array",
        other => type_name(other),
    }
}

/// The key of a time leaf.
const TIME_KEY: &str = "time";

/// `{"time": {...}}`, nothing else beside it (an `arg` there would be a
/// second test the author may think applies).
fn compile_time(v: &Value, path: &str, errs: &mut Errors) -> Option<TimeWindow> {
    let mut r = ObjReader::new(v, path, errs)?;
    let window = r
        .get(TIME_KEY)
        .and_then(|w| TimeWindow::compile(w, &child(path, TIME_KEY), errs));
    r.finish(errs);
    window
}

fn compile_leaf(v: &Value, path: &str, errs: &mut Errors) -> Option<Leaf> {
    let mut r = ObjReader::new(v, path, errs)?;
    let source = match (r.has("arg"), r.has("param")) {
        (true, false) => Some((Source::Arg, r.string("arg", errs))),
        (false, true) => Some((Source::Param, r.string("param", errs))),
        (true, true) => {
            errs.push(
                path,
                "a condition leaf has exactly one of arg, param; found both",
            );
            r.get("arg");
            r.get("param");
            None
        }
        (false, false) => {
            errs.push(
                path,
                "expected a combinator (all, any, not) or a leaf with arg, param or time",
            );
            None
        }
    };
    let pointer = source.as_ref().and_then(|(source, pointer)| {
        let key = source.as_str();
        let pointer = (*pointer)?;
        match parse_pointer(pointer) {
            Ok(tokens) => Some((*source, pointer.to_owned(), tokens)),
            Err(msg) => {
                errs.push(child(path, key), msg);
                None
            }
        }
    });

    let present: Vec<OpName> = OpName::ALL
        .iter()
        .copied()
        .filter(|o| r.has(o.as_str()))
        .collect();
    let op = match present.as_slice() {
        [op] => {
            let op_path = r.field_path(op.as_str());
            r.get(op.as_str())
                .and_then(|value| compile_operator(*op, value, &op_path, errs))
        }
        [] => {
            errs.push(
                path,
                format!(
                    "a condition leaf needs one operator: {}",
                    keyword_list::<OpName>()
                ),
            );
            None
        }
        several => {
            errs.push(
                path,
                format!(
                    "a condition leaf has exactly one operator; found {}",
                    joined(several, " and ")
                ),
            );
            for op in several {
                r.get(op.as_str());
            }
            None
        }
    };
    r.finish(errs);
    let (source, pointer, tokens) = pointer?;
    Some(Leaf {
        source,
        pointer,
        tokens,
        op: op?,
    })
}

/// RFC 6901 §3-4: `""` is the whole document, otherwise `/`-prefixed tokens
/// where `~1` means `/` and `~0` means `~`; any other `~` is invalid.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or("a JSON pointer is empty or starts with '/' (RFC 6901)")?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "invalid escape in JSON pointer token {token:?}: '~' must be \
                                 followed by 0 or 1 (RFC 6901)"
                            ))
                        }
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

fn compile_operator(op: OpName, value: &Value, path: &str, errs: &mut Errors) -> Option<Operator> {
    let expected = |errs: &mut Errors, what: &str| {
        errs.push(
            path,
            format!("expected {what}, found {}", describe_kind(value)),
        );
        None
    };
    match (op, value) {
        (OpName::Eq, v) => Some(Operator::Eq(v.clone())),
        (OpName::Ne, v) => Some(Operator::Ne(v.clone())),
        (OpName::In, Value::Array(items)) if !items.is_empty() => Some(Operator::In(items.clone())),
        (OpName::NotIn, Value::Array(items)) if !items.is_empty() => {
            Some(Operator::NotIn(items.clone()))
        }
        (OpName::In | OpName::NotIn, _) => expected(errs, "a non-empty array"),
        (OpName::Lt, Value::Number(n)) => Some(Operator::Compare(Bound::Lt, n.clone())),
        (OpName::Lte, Value::Number(n)) => Some(Operator::Compare(Bound::Lte, n.clone())),
        (OpName::Gt, Value::Number(n)) => Some(Operator::Compare(Bound::Gt, n.clone())),
        (OpName::Gte, Value::Number(n)) => Some(Operator::Compare(Bound::Gte, n.clone())),
        (OpName::Lt | OpName::Lte | OpName::Gt | OpName::Gte, _) => expected(errs, "a number"),
        (OpName::Matches, Value::String(pattern)) => compile_pattern(pattern, path, errs),
        (OpName::Prefix, Value::String(s)) => Some(Operator::Prefix(s.clone())),
        (OpName::Suffix, Value::String(s)) => Some(Operator::Suffix(s.clone())),
        (OpName::Contains, Value::String(s)) => Some(Operator::Contains(s.clone())),
        (OpName::Matches | OpName::Prefix | OpName::Suffix | OpName::Contains, _) => {
            expected(errs, "a string")
        }
        (OpName::MaxLen, Value::Number(n)) => match n.as_u64() {
            Some(max) => Some(Operator::MaxLen(max)),
            None => {
                errs.push(
                    path,
                    format!("expected a whole number of characters >= 0, found {n}"),
                );
                None
            }
        },
        (OpName::MaxLen, _) => expected(errs, "a whole number of characters >= 0"),
        (OpName::Exists, Value::Bool(b)) => Some(Operator::Exists(*b)),
        (OpName::Exists, _) => expected(errs, "true or false"),
        (OpName::PathUnder, Value::String(dir)) => match canon::canonical_path(dir) {
            Ok(dir) => Some(Operator::PathUnder(dir)),
            Err(e) => {
                errs.push(path, format!("not a usable absolute directory: {e}"));
                None
            }
        },
        (OpName::PathUnder, _) => expected(errs, "an absolute directory path"),
        (OpName::HostIn, Value::Array(items)) if !items.is_empty() => {
            let mut hosts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = index(path, i);
                match item {
                    Value::String(h) => match canon::canonical_host(h) {
                        Ok(h) => hosts.push(h),
                        Err(e) => errs.push(item_path, format!("not a usable host: {e}")),
                    },
                    other => errs.push(
                        item_path,
                        format!(
                            "expected a host name or IP address, found {}",
                            type_name(other)
                        ),
                    ),
                }
            }
            (hosts.len() == items.len()).then_some(Operator::HostIn(hosts))
        }
        (OpName::HostIn, _) => expected(errs, "a non-empty array of hosts"),
    }
}

/// Compiles `pattern` so that it must match the whole value. The pattern is
/// first compiled alone: a pattern that is valid on its own is balanced, so
/// wrapping it as `\A(?:pattern)\z` cannot be escaped (`a)|(b` is refused
/// instead of turning into `\A(?:a)|(b)\z`), and flags it sets stay inside the
/// group.
fn compile_pattern(pattern: &str, path: &str, errs: &mut Errors) -> Option<Operator> {
    if pattern.len() > MAX_PATTERN_BYTES {
        errs.push(
            path,
            format!(
                "pattern of {} bytes is longer than {MAX_PATTERN_BYTES}",
                pattern.len()
            ),
        );
        return None;
    }
    let build = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(1 << 20)
            .nest_limit(64)
            .build()
    };
    let anchored = build(pattern).and_then(|_| build(&format!(r"\A(?:{pattern})\z")));
    match anchored {
        Ok(regex) => Some(Operator::Matches {
            pattern: pattern.to_owned(),
            regex,
        }),
        Err(e) => {
            let msg = e.to_string();
            let first_line = msg.lines().next().unwrap_or("");
            errs.push(path, format!("invalid regex: {first_line}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// Why a leaf could not be decided.
enum Fault {
    Missing,
    WrongType(&'static str),
    Refused(String),
    TooLong(usize),
}

impl Fault {
    fn message(&self, found: Option<&Value>) -> String {
        match self {
            Fault::Missing => "missing".to_owned(),
            Fault::WrongType(expected) => format!(
                "expected {expected}, found {}",
                found.map_or("nothing", type_name)
            ),
            Fault::Refused(why) => format!("refused: {why}"),
            Fault::TooLong(len) => format!(
                "value of {len} bytes is longer than the {MAX_MATCHED_VALUE_BYTES} bytes `matches` reads"
            ),
        }
    }
}

/// A leaf's decision and, for explanations, what it saw.
struct LeafVerdict<'v> {
    result: Result<bool, Fault>,
    found: Option<&'v Value>,
    /// A canonical form the decision was made on (path or host), if any.
    seen_as: Option<String>,
}

/// The leaf that decided a (sub)condition.
#[derive(Clone, Copy)]
enum Decider<'c> {
    Member(&'c Leaf),
    Time(&'c TimeWindow),
}

impl Decider<'_> {
    /// `arg /amount lte 500`, `time mon,fri 09:00-17:00 +01:00`
    fn describe(self) -> String {
        match self {
            Decider::Member(leaf) => leaf.describe(),
            Decider::Time(w) => format!("{TIME_KEY} {}", w.describe()),
        }
    }

    fn detail(self, v: &LeafVerdict) -> String {
        match (self, &v.result) {
            (Decider::Member(leaf), _) => leaf.detail(v),
            (Decider::Time(_), result) => {
                let verdict = match result {
                    Ok(true) => "holds",
                    _ => "does not hold",
                };
                let at = v.seen_as.as_deref().unwrap_or("?");
                format!("request at {at}, {verdict}")
            }
        }
    }
}

/// The deciding leaf of a (sub)condition.
struct Verdict<'c, 'v> {
    leaf: Decider<'c>,
    outcome: Outcome,
    leaf_verdict: LeafVerdict<'v>,
    /// Combinator steps from the root to the leaf, e.g. `all[1]`, `not`
    /// (innermost last); only filled when explaining.
    route: Vec<String>,
}

impl Condition {
    /// Add the paths the condition's pointers read.
    pub fn member_paths(&self, out: &mut Vec<MemberPath>) {
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.member_paths(out)),
            Condition::Not(c) => c.member_paths(out),
            Condition::Leaf(l) => out.push(MemberPath {
                in_arguments: l.source == Source::Arg,
                tokens: l.tokens.clone(),
            }),
            // The time of the request is no member of it.
            Condition::Time(_) => {}
        }
    }

    /// Evaluate against one request (left-to-right, short-circuit).
    pub fn eval(&self, input: &CondInput) -> Outcome {
        self.run(input, false).outcome
    }

    /// Same as [`Condition::eval`], plus a one-line explanation of the deciding
    /// leaf: which pointer, which operator, and why it held, failed or errored.
    /// A value longer than 64 characters is described, never shown.
    pub fn explain(&self, input: &CondInput) -> (Outcome, String) {
        let v = self.run(input, true);
        let mut line = String::new();
        for step in &v.route {
            line.push_str(step);
            line.push_str(": ");
        }
        line.push_str(&v.leaf.describe());
        line.push_str(": ");
        line.push_str(&v.leaf.detail(&v.leaf_verdict));
        line.push_str(match v.outcome {
            Outcome::True => " → true",
            Outcome::False => " → false",
            Outcome::Error(_) => " → error",
        });
        (v.outcome, line)
    }

    fn run<'c, 'v>(&'c self, input: &CondInput<'v>, explaining: bool) -> Verdict<'c, 'v> {
        match self {
            Condition::Leaf(leaf) => {
                let leaf_verdict = leaf.eval(input);
                let outcome = match &leaf_verdict.result {
                    Ok(true) => Outcome::True,
                    Ok(false) => Outcome::False,
                    Err(fault) => Outcome::Error(format!(
                        "{}: {}",
                        leaf.describe(),
                        fault.message(leaf_verdict.found)
                    )),
                };
                Verdict {
                    leaf: Decider::Member(leaf),
                    outcome,
                    leaf_verdict,
                    route: Vec::new(),
                }
            }
            Condition::Time(window) => {
                // A time always reads: no error, whatever the request holds.
                let held = window.contains(input.now_ms);
                Verdict {
                    leaf: Decider::Time(window),
                    outcome: if held { Outcome::True } else { Outcome::False },
                    leaf_verdict: LeafVerdict {
                        result: Ok(held),
                        found: None,
                        seen_as: explaining.then(|| window.describe_time(input.now_ms)),
                    },
                    route: Vec::new(),
                }
            }
            Condition::Not(inner) => {
                let mut v = inner.run(input, explaining);
                v.outcome = match v.outcome {
                    Outcome::True => Outcome::False,
                    Outcome::False => Outcome::True,
                    // `not` of an error stays an error: negating it would fail open.
                    e @ Outcome::Error(_) => e,
                };
                if explaining {
                    v.route.insert(0, "not".to_owned());
                }
                v
            }
            Condition::All(children) => Self::run_list(children, "all", false, input, explaining),
            Condition::Any(children) => Self::run_list(children, "any", true, input, explaining),
        }
    }

    /// `all` stops at the first false, `any` at the first true (`stop_on`), and
    /// both at the first error: an error reached before the deciding child makes
    /// the whole list an error.
    fn run_list<'c, 'v>(
        children: &'c [Condition],
        name: &str,
        stop_on: bool,
        input: &CondInput<'v>,
        explaining: bool,
    ) -> Verdict<'c, 'v> {
        let mut last: Option<(usize, Verdict<'c, 'v>)> = None;
        for (i, c) in children.iter().enumerate() {
            let v = c.run(input, explaining);
            let stop = match v.outcome {
                Outcome::True => stop_on,
                Outcome::False => !stop_on,
                Outcome::Error(_) => true,
            };
            last = Some((i, v));
            if stop {
                break;
            }
        }
        match last {
            Some((i, mut v)) => {
                if explaining {
                    v.route.insert(0, format!("{name}[{i}]"));
                }
                v
            }
            // compile() refuses empty lists; should one be built by hand anyway,
            // fail closed with an error rather than a vacuous answer.
            None => Verdict {
                leaf: Decider::Member(&EMPTY_LIST_LEAF),
                outcome: Outcome::Error(format!("{name} has no conditions")),
                leaf_verdict: LeafVerdict {
                    result: Err(Fault::Missing),
                    found: None,
                    seen_as: None,
                },
                route: Vec::new(),
            },
        }
    }
}

static EMPTY_LIST_LEAF: Leaf = Leaf {
    source: Source::Arg,
    pointer: String::new(),
    tokens: Vec::new(),
    op: Operator::Exists(true),
};

impl Leaf {
    fn resolve<'v>(&self, input: &CondInput<'v>) -> Option<&'v Value> {
        let mut at = match self.source {
            Source::Arg => input.arguments,
            Source::Param => input.params,
        };
        for token in &self.tokens {
            at = match at {
                Value::Object(map) => map.get(token)?,
                Value::Array(items) => items.get(array_index(token)?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    fn eval<'v>(&self, input: &CondInput<'v>) -> LeafVerdict<'v> {
        let found = self.resolve(input);
        let mut seen_as = None;
        let result = match (&self.op, found) {
            (Operator::Exists(want), found) => Ok(found.is_some() == *want),
            (_, None) => Err(Fault::Missing),
            (op, Some(value)) => self.test(op, value, &mut seen_as),
        };
        LeafVerdict {
            result,
            found,
            seen_as,
        }
    }

    fn test(
        &self,
        op: &Operator,
        value: &Value,
        seen_as: &mut Option<String>,
    ) -> Result<bool, Fault> {
        match op {
            Operator::Eq(want) => same_kind(value, want).map(|()| json_eq(value, want)),
            Operator::Ne(want) => same_kind(value, want).map(|()| !json_eq(value, want)),
            Operator::In(list) => member_of(value, list),
            Operator::NotIn(list) => member_of(value, list).map(|member| !member),
            Operator::Compare(bound, limit) => {
                let Value::Number(n) = value else {
                    return Err(Fault::WrongType("a number"));
                };
                let ord = compare_numbers(n, limit).ok_or(Fault::WrongType("a finite number"))?;
                Ok(match bound {
                    Bound::Lt => ord == Ordering::Less,
                    Bound::Lte => ord != Ordering::Greater,
                    Bound::Gt => ord == Ordering::Greater,
                    Bound::Gte => ord != Ordering::Less,
                })
            }
            Operator::Matches { regex, .. } => {
                let s = as_str(value)?;
                if s.len() > MAX_MATCHED_VALUE_BYTES {
                    return Err(Fault::TooLong(s.len()));
                }
                Ok(regex.is_match(s))
            }
            Operator::Prefix(p) => Ok(as_str(value)?.starts_with(p.as_str())),
            Operator::Suffix(p) => Ok(as_str(value)?.ends_with(p.as_str())),
            Operator::Contains(p) => Ok(as_str(value)?.contains(p.as_str())),
            Operator::MaxLen(max) => {
                let s = as_str(value)?;
                Ok(u64::try_from(s.chars().count()).is_ok_and(|n| n <= *max))
            }
            Operator::Exists(want) => Ok(*want),
            Operator::PathUnder(dir) => {
                let path = canon::canonical_path(as_str(value)?).map_err(Fault::Refused)?;
                let under = canon::canonical_path_under(&path, dir);
                *seen_as = Some(path);
                Ok(under)
            }
            Operator::HostIn(hosts) => {
                let host = canon::url_host(as_str(value)?).map_err(Fault::Refused)?;
                let listed = hosts.contains(&host);
                *seen_as = Some(host);
                Ok(listed)
            }
        }
    }

    /// `arg /amount lte 500`
    fn describe(&self) -> String {
        let source = self.source.as_str();
        let pointer = if self.pointer.is_empty() {
            "\"\""
        } else {
            &self.pointer
        };
        format!(
            "{source} {pointer} {} {}",
            self.op.key().as_str(),
            self.op.operand()
        )
    }

    /// Why the leaf decided as it did, showing short values only.
    fn detail(&self, v: &LeafVerdict) -> String {
        let mut out = match (&v.result, v.found) {
            (Err(fault), None) => fault.message(None),
            (Err(fault), Some(found)) => {
                format!("{} (value {})", fault.message(Some(found)), show(found))
            }
            (Ok(_), None) => "not present".to_owned(),
            (Ok(held), Some(found)) => {
                let verdict = if *held { "holds" } else { "does not hold" };
                format!("found {}, {verdict}", show(found))
            }
        };
        if let Some(seen) = &v.seen_as {
            let _ = write!(out, " (read as {})", shorten(seen));
        }
        out
    }
}

impl Operator {
    /// The key this operator is written with.
    fn key(&self) -> OpName {
        match self {
            Operator::Eq(_) => OpName::Eq,
            Operator::Ne(_) => OpName::Ne,
            Operator::In(_) => OpName::In,
            Operator::NotIn(_) => OpName::NotIn,
            Operator::Compare(Bound::Lt, _) => OpName::Lt,
            Operator::Compare(Bound::Lte, _) => OpName::Lte,
            Operator::Compare(Bound::Gt, _) => OpName::Gt,
            Operator::Compare(Bound::Gte, _) => OpName::Gte,
            Operator::Matches { .. } => OpName::Matches,
            Operator::Prefix(_) => OpName::Prefix,
            Operator::Suffix(_) => OpName::Suffix,
            Operator::Contains(_) => OpName::Contains,
            Operator::MaxLen(_) => OpName::MaxLen,
            Operator::Exists(_) => OpName::Exists,
            Operator::PathUnder(_) => OpName::PathUnder,
            Operator::HostIn(_) => OpName::HostIn,
        }
    }

    /// The configured operand, as JSON, shortened if long.
    fn operand(&self) -> String {
        match self {
            Operator::Eq(v) | Operator::Ne(v) => show(v),
            Operator::In(list) | Operator::NotIn(list) => show(&Value::Array(list.clone())),
            Operator::Compare(_, n) => n.to_string(),
            Operator::Matches { pattern: s, .. }
            | Operator::Prefix(s)
            | Operator::Suffix(s)
            | Operator::Contains(s)
            | Operator::PathUnder(s) => show(&Value::String(s.clone())),
            Operator::MaxLen(n) => n.to_string(),
            Operator::Exists(b) => b.to_string(),
            Operator::HostIn(hosts) => show(&Value::Array(
                hosts.iter().cloned().map(Value::String).collect(),
            )),
        }
    }
}

/// RFC 6901 §4: an array index is `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    if canonical && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

fn as_str(v: &Value) -> Result<&str, Fault> {
    v.as_str().ok_or(Fault::WrongType("a string"))
}

fn kind(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// `eq`/`ne` refuse to compare across JSON types: `"true"` vs `true` or `"5"`
/// vs `5` is an error, not a silent "unequal" that a deny rule would miss.
fn same_kind(value: &Value, want: &Value) -> Result<(), Fault> {
    if kind(value) == kind(want) {
        Ok(())
    } else {
        Err(Fault::WrongType(type_name(want)))
    }
}

/// `in`/`not_in`: the value must have the type of at least one listed value.
fn member_of(value: &Value, list: &[Value]) -> Result<bool, Fault> {
    if !list.iter().any(|w| kind(w) == kind(value)) {
        return Err(Fault::WrongType("the type of a listed value"));
    }
    Ok(list.iter().any(|w| json_eq(value, w)))
}

/// JSON equality with numbers compared by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// A JSON number as serde_json holds it: any integer fits an i128 exactly.
enum Numeric {
    Integer(i128),
    Float(f64),
}

fn numeric(n: &Number) -> Option<Numeric> {
    if let Some(u) = n.as_u64() {
        Some(Numeric::Integer(i128::from(u)))
    } else if let Some(i) = n.as_i64() {
        Some(Numeric::Integer(i128::from(i)))
    } else {
        n.as_f64().filter(|f| f.is_finite()).map(Numeric::Float)
    }
}

/// Exact numeric comparison, without rounding integers through f64 (so
/// 9007199254740993 is greater than 9007199254740992.0).
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (numeric(a)?, numeric(b)?) {
        (Numeric::Integer(x), Numeric::Integer(y)) => Some(x.cmp(&y)),
        (Numeric::Float(x), Numeric::Float(y)) => x.partial_cmp(&y),
        (Numeric::Integer(x), Numeric::Float(y)) => Some(compare_integer_float(x, y)),
        (Numeric::Float(x), Numeric::Integer(y)) => Some(compare_integer_float(y, x).reverse()),
    }
}

fn compare_integer_float(i: i128, f: f64) -> Ordering {
    // 2^127 is exactly representable; every finite f64 below it in magnitude
    // truncates to an exactly representable i128.
    const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= TWO_POW_127 {
        return Ordering::Less;
    }
    if f < -TWO_POW_127 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal => {
            let fraction = f - whole;
            if fraction > 0.0 {
                Ordering::Less
            } else if fraction < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        other => other,
    }
}

/// A value as JSON if that is at most 64 characters, else only its shape.
fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= SHOWN_CHARS {
        return text;
    }
    match v {
        Value::String(s) => format!("a string of {} chars", s.chars().count()),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(o) => format!("an object of {} members", o.len()),
        other => type_name(other).to_owned(),
    }
}

fn shorten(s: &str) -> String {
    show(&Value::String(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Number {
        serde_json::from_str(text).unwrap_or_else(|_| Number::from(0))
    }

    #[test]
    fn compare_numbers_is_exact_across_integer_and_float() {
        let cases: &[(&str, &str, Ordering)] = &[
            ("1", "1.0", Ordering::Equal),
            ("0", "-0.5", Ordering::Greater),
            ("-1", "-1.5", Ordering::Greater),
            ("2", "2.5", Ordering::Less),
            ("9007199254740993", "9007199254740992.0", Ordering::Greater),
            (
                "18446744073709551615",
                "1.8446744073709552e19",
                Ordering::Less,
            ),
            ("-9223372036854775808", "-9.3e18", Ordering::Greater),
            ("1", "1e300", Ordering::Less),
            ("-1", "-1e300", Ordering::Greater),
            ("0.5", "0.25", Ordering::Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                compare_numbers(&number(a), &number(b)),
                Some(*want),
                "{a} vs {b}"
            );
            assert_eq!(
                compare_numbers(&number(b), &number(a)),
                Some(want.reverse()),
                "{b} vs {a}"
            );
        }
    }

    #[test]
    fn array_index_follows_rfc_6901() {
        let cases: &[(&str, Option<usize>)] = &[
            ("0", Some(0)),
            ("12", Some(12)),
            ("01", None),
            ("-", None),
            ("", None),
            ("+1", None),
            ("1a", None),
        ];
        for (token, want) in cases {
            assert_eq!(array_index(token), *want, "{token:?}");
        }
    }
}
