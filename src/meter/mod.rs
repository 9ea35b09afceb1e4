//! Rate limits and budgets: what an allowed call consumes.
//!
//! The policy's `rate_limits` (token buckets) and `budgets` (a count or a
//! cost per calendar day or month, UTC) select messages the way rules do
//! (one of `tools`/`methods`/`resources`/`prompts`, optional `roles`) and
//! count them per a key built from the caller and the call. Deciding which
//! meters a message charges is pure ([`charges`], called by the verdict, so
//! `explain` shows it without state); consuming them is the only step that
//! needs state, in proxy-wasm shared data ([`table`]), after the policy
//! decision: a refused call consumes nothing.
//!
//! Keys never hold caller text: a meter is found by a hash of its rule id
//! and key values keyed with the process's secret ([`table`]), so neither a
//! subject nor a tool's arguments are kept.

pub mod calendar;
pub mod table;

use crate::config::{index, keyword_list, keywords, Errors, Keyword, ObjReader};
use crate::decide::Call;
use crate::glob::Glob;
use crate::identity::Caller;
use crate::json::integral_numbers;
use crate::jsonrpc::Target;
use crate::policy::RuleKind;
use crate::rule_id::RuleId;
use serde_json::Value;

/// What a meter's key is made of, in the order the policy lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    /// The caller's subject (anonymous callers share one value).
    Subject,
    Tenant,
    /// The conversation: `limits.conversation_header` when the policy names
    /// one, else the `Mcp-Session-Id` (empty when the request has neither).
    Session,
    /// The tool, prompt or resource the message names (empty for others).
    Tool,
    Method,
    /// One meter for everyone the rule selects.
    Global,
    /// The call's `arguments` as data (absent or `null` read as `{}`,
    /// members in name order, whole-number floats as integers): the same call
    /// repeated (a runaway loop) shares one meter. Only the arguments: a
    /// `_meta` the SDK renews on every call (a progress token) would make
    /// every repetition look new.
    Arguments,
}

keywords!(KeyPart {
    Subject => "subject",
    Tenant => "tenant",
    Session => "session",
    Tool => "tool",
    Method => "method",
    Global => "global",
    Arguments => "arguments",
});

/// A budget's calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

keywords!(Period {
    Day => "day",
    Month => "month",
});

/// Which messages a meter counts: as a rule selects them.
#[derive(Debug)]
pub struct Selector {
    pub kind: RuleKind,
    pub patterns: Vec<Glob>,
    /// `None` = any identity.
    pub roles: Option<Vec<String>>,
}

impl Selector {
    fn selects(&self, caller: &Caller, call: &Call) -> bool {
        let roles = match &self.roles {
            None => true,
            Some(roles) => roles.iter().any(|r| caller.roles.contains(r)),
        };
        let name = match (self.kind, &call.target) {
            (RuleKind::Methods, _) => call.method.as_deref(),
            (RuleKind::Tools, Target::Tool(n))
            | (RuleKind::Resources, Target::Resource(n))
            | (RuleKind::Prompts, Target::Prompt(n)) => Some(n.as_str()),
            _ => None,
        };
        roles && name.is_some_and(|n| self.patterns.iter().any(|g| g.matches(n)))
    }
}

/// One entry of `rate_limits`: a token bucket of `capacity` calls, refilled
/// evenly over `per_ms`.
#[derive(Debug)]
pub struct RateLimit {
    pub id: RuleId,
    pub selector: Selector,
    pub key: Vec<KeyPart>,
    pub capacity: u64,
    pub per_ms: u64,
}

/// One entry of `budgets`: at most `limit` units per period, a call costing
/// its tool's entry in `costs` (else `default_cost`).
#[derive(Debug)]
pub struct Budget {
    pub id: RuleId,
    pub selector: Selector,
    pub key: Vec<KeyPart>,
    pub period: Period,
    pub limit: u64,
    pub costs: Vec<(String, u64)>,
    pub default_cost: u64,
    /// Say what is left in `x-mcp-firewall-budget-remaining`.
    pub expose_remaining: bool,
}

/// The compiled `rate_limits` and `budgets` sections.
#[derive(Debug, Default)]
pub struct MeterPolicy {
    pub rate_limits: Vec<RateLimit>,
    pub budgets: Vec<Budget>,
}

impl MeterPolicy {
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty() && self.budgets.is_empty()
    }

    /// What a charge consumes, in words (`explain` prints it): no state is
    /// read, so not whether it would pass now.
    pub fn describe(&self, charge: &Charge) -> String {
        let key = |parts: &[KeyPart]| {
            parts
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match charge.meter {
            Meter::Bucket { capacity, per_ms } => {
                let parts = self.rate_limits.iter().find(|r| r.id == charge.rule);
                format!(
                    "rate limit {}: 1 of {capacity} per {} s, per {}",
                    charge.rule,
                    per_ms / 1000,
                    parts.map(|r| key(&r.key)).unwrap_or_default()
                )
            }
            Meter::Budget {
                limit,
                cost,
                period,
                ..
            } => {
                let parts = self.budgets.iter().find(|b| b.id == charge.rule);
                format!(
                    "budget {}: {cost} of {limit} per {} (UTC), per {}",
                    charge.rule,
                    period.as_str(),
                    parts.map(|b| key(&b.key)).unwrap_or_default()
                )
            }
        }
    }

    /// Every meter id, for the uniqueness check against rule ids.
    pub fn ids(&self) -> impl Iterator<Item = &RuleId> {
        self.rate_limits
            .iter()
            .map(|r| &r.id)
            .chain(self.budgets.iter().map(|b| &b.id))
    }
}

/// What a meter counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A token bucket: one token a call.
    Bucket { capacity: u64, per_ms: u64 },
    /// A budget: `cost` units of `limit` this period.
    Budget {
        limit: u64,
        cost: u64,
        period: Period,
        expose_remaining: bool,
    },
}

/// One meter a message consumes if it goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub rule: RuleId,
    /// The message of the body (its index) that consumes it.
    pub message: usize,
    /// The rule id, the meter's kind and the key's values, each
    /// length-prefixed ([`name`]): the table keeps only its hash keyed with
    /// the process's secret, never this text.
    pub name: Vec<u8>,
    pub meter: Meter,
}

/// What the request says about its conversation (see [`KeyPart::Session`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conversation<'a>(pub Option<&'a str>);

/// The meters message `index` charges, in policy order (rate limits, then budgets).
pub fn charges(
    meters: &MeterPolicy,
    caller: &Caller,
    conversation: Conversation,
    call: &Call,
    index: usize,
    out: &mut Vec<Charge>,
) {
    for r in meters.rate_limits.iter() {
        if r.selector.selects(caller, call) {
            out.push(Charge {
                rule: r.id.clone(),
                message: index,
                name: name(&r.id, "bucket", &r.key, caller, conversation, call),
                meter: Meter::Bucket {
                    capacity: r.capacity,
                    per_ms: r.per_ms,
                },
            });
        }
    }
    for b in meters.budgets.iter() {
        if b.selector.selects(caller, call) {
            let cost = match &call.target {
                Target::Tool(tool) => b
                    .costs
                    .iter()
                    .find(|(t, _)| t == tool)
                    .map_or(b.default_cost, |(_, c)| *c),
                _ => b.default_cost,
            };
            out.push(Charge {
                rule: b.id.clone(),
                message: index,
                name: name(&b.id, b.period.as_str(), &b.key, caller, conversation, call),
                meter: Meter::Budget {
                    limit: b.limit,
                    cost,
                    period: b.period,
                    expose_remaining: b.expose_remaining,
                },
            });
        }
    }
}

/// The meter's name: its rule, kind and key parts, each length-prefixed so
/// that no two different keys make the same bytes. The arguments of a key go
/// in as [`write_data`] writes them. The table hashes it with the process's secret
/// (`table::digest`): one keyed hash per meter, where a SHA-256 over the same
/// bytes was most of what counting cost a request.
fn name(
    rule: &RuleId,
    kind: &str,
    key: &[KeyPart],
    caller: &Caller,
    conversation: Conversation,
    call: &Call,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    write_bytes(rule.as_str().as_bytes(), &mut out);
    // The kind of meter (and a budget's period) is part of the name: a reload
    // that turns a rate limit into a budget of the same id, or a daily budget
    // into a monthly one, starts new entries instead of reading the old
    // ones' numbers as its own.
    write_bytes(kind.as_bytes(), &mut out);
    for k in key {
        write_bytes(k.as_str().as_bytes(), &mut out);
        match k {
            // Present or absent before the value: an anonymous caller and a
            // key whose subject is "" are two callers, so are a tenant ""
            // and none (a helper's attack: they shared one bucket).
            KeyPart::Subject => write_optional(caller.subject.as_deref(), &mut out),
            KeyPart::Tenant => write_optional(caller.tenant.as_deref(), &mut out),
            KeyPart::Session => write_bytes(conversation.0.unwrap_or("").as_bytes(), &mut out),
            KeyPart::Tool => write_bytes(call.target.name().unwrap_or("").as_bytes(), &mut out),
            KeyPart::Method => {
                write_bytes(call.method.as_deref().unwrap_or("").as_bytes(), &mut out)
            }
            KeyPart::Global => {}
            KeyPart::Arguments => {
                let empty = Value::Object(serde_json::Map::new());
                let arguments = match call.params.get("arguments") {
                    None | Some(Value::Null) => &empty,
                    Some(a) => a,
                };
                // Self-delimiting: nothing else is needed between it and
                // the next part.
                write_arguments(arguments, &mut out);
            }
        }
    }
    out
}

/// Arguments past this many bytes (as [`write_data`] writes them) go into a
/// meter's name as their 128-bit XXH3 digest.
const ARGUMENTS_DIGESTED_PAST: usize = 64;

/// The arguments as [`write_data`] writes them, or, when longer than
/// [`ARGUMENTS_DIGESTED_PAST`], `h` and their XXH3-128 digest (no data
/// starts with `h`, and the digest has a fixed length: still prefix-free).
/// The table hashes the whole name with its keyed SipHash anyway; a 4 KB
/// argument made that most of what the loop breaker cost, and XXH3 reads
/// long input in a fraction of the instructions. Unkeyed is enough here: a
/// collision only merges two argument sets of one caller, tool and rule
/// into one meter (the caller's own calls refused sooner, never another's;
/// the subject stays in the keyed name), and 128 bits never meet by chance.
fn write_arguments(arguments: &Value, out: &mut Vec<u8>) {
    // Written in place, then replaced by its digest when long: no second
    // buffer on a metered call, and room made once (growing from the name's
    // first 96 bytes to a 4 KB argument was six reallocations and copies).
    let start = out.len();
    out.reserve(arguments_room(arguments));
    write_data(arguments, out);
    if out.len() - start > ARGUMENTS_DIGESTED_PAST {
        let digest = xxhash_rust::xxh3::xxh3_128(&out[start..]);
        out.truncate(start);
        out.push(b'h');
        out.extend_from_slice(&digest.to_le_bytes());
    }
}

/// `v` as bytes that two values share exactly when they are the same JSON
/// data: each value tagged, strings and numbers length-prefixed as they are
/// (no escaping: a loop breaker over a 4 KB argument spent most of its cost
/// writing canonical JSON), members in name order, whole-number doubles as
/// the integer (`100.0`, `1e2` and `100` are one). Prefix-free, so values
/// written one after another stay apart.
fn write_data(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            // Every number as the double a JavaScript server reads, a whole
            // one within ±2^53 as the integer: `100`, `100.0` and `1e2` are
            // one, and so are `1e17` and `100000000000000000`, the 1,024
            // integers near 2^62 that read as one double, and 2^53 + 1 and
            // 2^53 (thirty-first and thirty-second reviews): a loop
            // re-spelling a number is one loop. Servers that read integers
            // exactly may see distinct calls counted together: only ever
            // sooner refused.
            let f = n.as_f64().unwrap_or_default();
            let text = match integral_numbers(&Value::from(f)) {
                Value::Number(whole) => whole.to_string(),
                _ => n.to_string(),
            };
            out.push(b'#');
            write_bytes(text.as_bytes(), out);
        }
        Value::String(s) => {
            out.push(b'"');
            write_bytes(s.as_bytes(), out);
        }
        Value::Array(items) => {
            out.push(b'[');
            write_length(items.len(), out);
            for item in items {
                write_data(item, out);
            }
        }
        Value::Object(members) => {
            // serde_json's map is a B-tree (name order); sorted here so the
            // bytes do not depend on its `preserve_order` feature.
            let mut names: Vec<(&String, &Value)> = members.iter().collect();
            crate::sort::sort_by(&mut names, |a, b| a.0 < b.0);
            out.push(b'{');
            write_length(names.len(), out);
            for (name, item) in names {
                write_bytes(name.as_bytes(), out);
                write_data(item, out);
            }
        }
    }
}

/// At most this much room is made ahead: [`data_len_bound`] counts 35 bytes
/// for a number written in 3, so a 1 MiB array of zeros asked for ~18 MB
/// (thirty-sixth review); past it the buffer grows as it writes.
const ARGUMENTS_ROOM_MAX: usize = 64 * 1024;

/// The room made for the arguments before [`write_data`] writes them.
fn arguments_room(arguments: &Value) -> usize {
    data_len_bound(arguments).min(ARGUMENTS_ROOM_MAX)
}

/// At least as many bytes as [`write_data`] writes for `v`: a length prefix
/// is at most 10 bytes (LEB128 of a `u64`), a number's text at most 24
/// (the longest shortest-round-trip double, `-2.2250738585072014e-308`).
fn data_len_bound(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Number(_) => 1 + 10 + 24,
        Value::String(s) => 1 + 10 + s.len(),
        Value::Array(items) => 1 + 10 + items.iter().map(data_len_bound).sum::<usize>(),
        Value::Object(members) => {
            1 + 10
                + members
                    .iter()
                    .map(|(name, item)| 10 + name.len() + data_len_bound(item))
                    .sum::<usize>()
        }
    }
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_length(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// `0` for none, else `1` and the text as [`write_bytes`] writes it (still
/// prefix-free: the tag says whether a length follows).
fn write_optional(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            write_bytes(t.as_bytes(), out);
        }
    }
}

/// LEB128 (one byte below 128).
fn write_length(n: usize, out: &mut Vec<u8>) {
    let mut n = n as u64;
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Longest refill period: a year. Longer ones are budgets, not rate limits.
const MAX_PER_SECONDS: u64 = 366 * 86_400;
/// Largest bucket or budget: keeps the table's arithmetic far from overflow.
const MAX_AMOUNT: u64 = 1_000_000_000;

/// Compile `rate_limits` and `budgets` (each `None` when absent).
pub(crate) fn compile(
    rate_limits: Option<&Value>,
    budgets: Option<&Value>,
    errs: &mut Errors,
) -> MeterPolicy {
    let mut out = MeterPolicy::default();
    for (i, item) in array(rate_limits, "$.rate_limits", errs).iter().enumerate() {
        let p = index("$.rate_limits", i);
        if let Some(r) = compile_rate_limit(item, &p, errs) {
            out.rate_limits.push(r);
        }
    }
    for (i, item) in array(budgets, "$.budgets", errs).iter().enumerate() {
        let p = index("$.budgets", i);
        if let Some(b) = compile_budget(item, &p, errs) {
            out.budgets.push(b);
        }
    }
    out
}

fn array<'a>(v: Option<&'a Value>, path: &str, errs: &mut Errors) -> &'a [Value] {
    match v {
        None => &[],
        Some(Value::Array(items)) => items,
        Some(_) => {
            errs.push(path, "expected an array");
            &[]
        }
    }
}

/// The parts shared by rate limits and budgets: id, selector, key.
fn compile_common(
    r: &mut ObjReader,
    p: &str,
    allowed: &[KeyPart],
    errs: &mut Errors,
) -> Option<(RuleId, Selector, Vec<KeyPart>)> {
    let before = errs.0.len();
    let id = r.string("id", errs).map(str::to_owned);
    if !r.has("id") {
        errs.push(format!("{p}.id"), "required field is missing");
    }
    if let Some(id) = &id {
        if let Some(problem) = crate::policy::rule_id_problem(id) {
            errs.push(format!("{p}.id"), problem);
        }
    }
    let target = crate::policy::compile_target(r, p, errs);
    let roles = crate::policy::compile_roles(r, p, errs);
    let key = compile_key(r, p, allowed, errs);
    if errs.0.len() != before {
        return None;
    }
    let (kind, list) = target?;
    Some((
        RuleId::policy(&id?),
        Selector {
            kind,
            patterns: crate::policy::globs(kind, &list),
            roles,
        },
        key?,
    ))
}

fn compile_key(
    r: &mut ObjReader,
    p: &str,
    allowed: &[KeyPart],
    errs: &mut Errors,
) -> Option<Vec<KeyPart>> {
    let kp = format!("{p}.key");
    let Some(words) = r.strings("key", errs) else {
        if !r.has("key") {
            errs.push(&kp, "required field is missing");
        }
        return None;
    };
    if words.is_empty() {
        errs.push(
            &kp,
            "needs at least one part; use [\"global\"] for one meter for everyone",
        );
        return None;
    }
    let mut parts = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let ip = index(&kp, i);
        match w.parse::<KeyPart>() {
            Ok(part) if !allowed.contains(&part) => errs.push(
                ip,
                format!(
                    "{w:?} is not a key of this meter; use {}",
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Ok(part) if parts.contains(&part) => errs.push(ip, format!("{w:?} is listed twice")),
            Ok(part) => parts.push(part),
            Err(_) => errs.push(
                ip,
                format!("{w:?} is not one of {}", keyword_list::<KeyPart>()),
            ),
        }
    }
    if parts.contains(&KeyPart::Global) && parts.len() > 1 {
        errs.push(
            &kp,
            "\"global\" stands alone: it means one meter for everyone",
        );
        return None;
    }
    (parts.len() == words.len()).then_some(parts)
}

fn compile_rate_limit(v: &Value, p: &str, errs: &mut Errors) -> Option<RateLimit> {
    let mut r = ObjReader::new(v, p, errs)?;
    let common = compile_common(&mut r, p, KeyPart::ALL, errs);
    let capacity = r.uint("capacity", 1, MAX_AMOUNT, errs);
    if !r.has("capacity") {
        errs.push(format!("{p}.capacity"), "required field is missing");
    }
    let per_seconds = r.uint("per_seconds", 1, MAX_PER_SECONDS, errs);
    if !r.has("per_seconds") {
        errs.push(format!("{p}.per_seconds"), "required field is missing");
    }
    r.finish(errs);
    let (id, selector, key) = common?;
    Some(RateLimit {
        id,
        selector,
        key,
        capacity: capacity?,
        per_ms: per_seconds? * 1000,
    })
}

fn compile_budget(v: &Value, p: &str, errs: &mut Errors) -> Option<Budget> {
    let mut r = ObjReader::new(v, p, errs)?;
    // A budget is an allowance per identity or tenant (or for everyone):
    // per-call parts would make a fresh budget for every tool or session.
    let allowed = [KeyPart::Subject, KeyPart::Tenant, KeyPart::Global];
    let common = compile_common(&mut r, p, &allowed, errs);
    let period = r.keyword::<Period>("period", errs);
    if !r.has("period") {
        errs.push(format!("{p}.period"), "required field is missing");
    }
    let limit = r.uint("limit", 1, MAX_AMOUNT, errs);
    if !r.has("limit") {
        errs.push(format!("{p}.limit"), "required field is missing");
    }
    let default_cost = r.uint("default_cost", 0, MAX_AMOUNT, errs).unwrap_or(1);
    let expose_remaining = r.boolean("expose_remaining", errs).unwrap_or(false);
    let mut costs = Vec::new();
    if let Some(c) = r.get("costs") {
        let cp = format!("{p}.costs");
        match c {
            Value::Object(map) => {
                for (tool, cost) in map {
                    let tp = format!("{cp}.{tool}");
                    if let Some(problem) =
                        crate::jsonrpc::name_problem(crate::jsonrpc::NameKind::Tool, tool)
                    {
                        errs.push(
                            &tp,
                            format!("{tool:?} is no tool name: a name that {problem}"),
                        );
                    }
                    match cost.as_u64() {
                        Some(n) if n <= MAX_AMOUNT => costs.push((tool.clone(), n)),
                        _ => errs.push(tp, format!("expected a whole number 0..={MAX_AMOUNT}")),
                    }
                }
            }
            _ => errs.push(cp, "expected an object of tool name: cost"),
        }
    }
    r.finish(errs);
    let (id, selector, key) = common?;
    Some(Budget {
        id,
        selector,
        key,
        period: period?,
        limit: limit?,
        costs,
        default_cost,
        expose_remaining,
    })
}

#[cfg(test)]
mod tests;
