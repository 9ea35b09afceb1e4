//! The `rules` section: what each rule matches and which effect it has.

use crate::catalogue::intents::{Intent, IntentSet};
use crate::config::{index, keyword_list, keywords, string_list, Errors, Keyword, ObjReader};
use crate::glob::{Glob, GlobKind};
use crate::rule_id::RuleId;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    Approve,
}

keywords!(Effect {
    Allow => "allow",
    Deny => "deny",
    Approve => "approve",
});

/// What a rule's patterns are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Tools,
    Methods,
    Resources,
    Prompts,
}

// The field of a rule that holds its patterns.
keywords!(RuleKind {
    Tools => "tools",
    Methods => "methods",
    Resources => "resources",
    Prompts => "prompts",
});

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    /// `id` as the typed value decisions carry.
    pub rule_id: RuleId,
    pub effect: Effect,
    pub kind: RuleKind,
    pub patterns: Vec<Glob>,
    /// `None` = any identity.
    pub roles: Option<Vec<String>>,
    /// `None` = always.
    pub when: Option<crate::condition::Condition>,
    /// `intents` (tools rules only): the tool must be of every class listed
    /// (certainly, for allow; possibly, for deny and approve). `None` = any.
    pub intents: Option<IntentSet>,
}

impl Rule {
    pub fn applies_to_roles(&self, caller_roles: &[String]) -> bool {
        match &self.roles {
            None => true,
            Some(roles) => roles.iter().any(|r| caller_roles.contains(r)),
        }
    }
    pub fn matches_name(&self, name: &str) -> bool {
        self.patterns.iter().any(|g| g.matches(name))
    }
    /// Some URI starting with `prefix` matches one of the patterns.
    pub fn matches_some_extension_of(&self, prefix: &str) -> bool {
        self.patterns
            .iter()
            .any(|g| g.matches_some_extension_of(prefix))
    }
    /// Every URI starting with `prefix` matches one of the patterns.
    pub fn matches_every_extension_of(&self, prefix: &str) -> bool {
        self.patterns
            .iter()
            .any(|g| g.matches_every_extension_of(prefix))
    }
}

/// Compile the `rules` array at `$.rules`.
pub(crate) fn compile(v: &Value, errs: &mut Errors) -> Vec<Rule> {
    let Value::Array(items) = v else {
        errs.push("$.rules", "expected an array of rules");
        return Vec::new();
    };
    let mut out: Vec<Rule> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = index("$.rules", i);
        if let Some(rule) = compile_rule(item, &p, errs) {
            if out.iter().any(|r| r.id == rule.id) {
                errs.push(
                    format!("{p}.id"),
                    format!("rule id {:?} is used twice", rule.id),
                );
            }
            out.push(rule);
        }
    }
    out
}

fn compile_rule(v: &Value, p: &str, errs: &mut Errors) -> Option<Rule> {
    let mut r = ObjReader::new(v, p, errs)?;
    let before = errs.0.len();
    let id = r.string("id", errs).map(str::to_owned);
    if !r.has("id") {
        errs.push(format!("{p}.id"), "required field is missing");
    }
    if let Some(problem) = id.as_deref().and_then(rule_id_problem) {
        errs.push(format!("{p}.id"), problem);
    }
    let effect = r.keyword::<Effect>("effect", errs);
    if !r.has("effect") {
        errs.push(format!("{p}.effect"), "required field is missing");
    }
    let intents = compile_intents(&mut r, p, errs);
    // `intents` alone selects the calls of every tool of those classes.
    let targeted = RuleKind::ALL.iter().any(|k| r.has(k.as_str()));
    let target = match (&intents, targeted) {
        (Some(_), false) => Some((RuleKind::Tools, vec!["*".to_owned()])),
        _ => compile_target(&mut r, p, errs),
    };
    if let (Some(_), Some((kind, _))) = (&intents, &target) {
        if *kind != RuleKind::Tools {
            errs.push(
                format!("{p}.intents"),
                format!(
                    "intents select tools: they cannot be combined with {}",
                    kind.as_str()
                ),
            );
        }
    }
    let roles = compile_roles(&mut r, p, errs);
    let when = r
        .get("when")
        .and_then(|w| crate::condition::compile(w, &format!("{p}.when"), errs));
    r.finish(errs);
    let (kind, list) = target?;
    if errs.0.len() != before {
        return None;
    }
    let id = id?;
    Some(Rule {
        rule_id: RuleId::policy(&id),
        id,
        effect: effect?,
        kind,
        patterns: globs(kind, &list),
        roles,
        when,
        intents: intents.flatten(),
    })
}

/// `intents`: `Some(None)` when present but in error (the rule is refused).
fn compile_intents(r: &mut ObjReader, p: &str, errs: &mut Errors) -> Option<Option<IntentSet>> {
    let v = r.get("intents")?;
    let fp = format!("{p}.intents");
    let list = string_list(v, &fp, errs)?;
    if list.is_empty() {
        errs.push(
            &fp,
            "an empty intents list selects nothing; omit intents to mean any tool",
        );
        return Some(None);
    }
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        match w.parse::<Intent>() {
            Ok(intent) if out.contains(&intent) => {
                errs.push(index(&fp, i), format!("{w:?} is listed twice"))
            }
            Ok(intent) => out.push(intent),
            Err(_) => errs.push(
                index(&fp, i),
                format!(
                    "unknown intent class {w:?}: use {}",
                    keyword_list::<Intent>()
                ),
            ),
        }
    }
    Some((out.len() == list.len()).then(|| IntentSet::of(&out)))
}

/// What is wrong with a rule id (of a rule, a rate limit or a budget).
pub(crate) fn rule_id_problem(id: &str) -> Option<String> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
    {
        Some("rule ids are non-empty and use letters, digits and - _ . : /".into())
    } else if RuleId::is_built_in(id) {
        Some(format!("{id:?} is reserved for the filter's own decisions"))
    } else {
        None
    }
}

/// The one kind of name a rule (or a rate limit) selects by, and its
/// patterns: exactly one of `tools`, `methods`, `resources`, `prompts`.
pub(crate) fn compile_target(
    r: &mut ObjReader,
    p: &str,
    errs: &mut Errors,
) -> Option<(RuleKind, Vec<String>)> {
    let mut kinds = Vec::new();
    for &kind in RuleKind::ALL {
        let fp = format!("{p}.{}", kind.as_str());
        if let Some(list) = r.strings(kind.as_str(), errs) {
            if list.is_empty() {
                errs.push(&fp, "needs at least one pattern");
            }
            if list.iter().any(String::is_empty) {
                errs.push(&fp, "patterns must not be empty strings");
            }
            let name_kind = match kind {
                RuleKind::Tools => Some(crate::jsonrpc::NameKind::Tool),
                RuleKind::Prompts => Some(crate::jsonrpc::NameKind::Prompt),
                RuleKind::Methods => Some(crate::jsonrpc::NameKind::Method),
                RuleKind::Resources => None,
            };
            if let Some(name_kind) = name_kind {
                // A pattern is checked as a name with its wildcards read as
                // letters: one holding a character no accepted name holds
                // (`ｄｅｌｅｔｅ_*`) never matches, so check says so.
                for (i, pattern) in list.iter().enumerate() {
                    let probe = pattern.replace(['*', '?'], "x");
                    if let Some(problem) = crate::jsonrpc::name_problem(name_kind, &probe) {
                        if !probe.is_empty() && probe.len() <= crate::jsonrpc::MAX_NAME_LEN {
                            errs.push(
                                index(&fp, i),
                                format!(
                                    "{pattern:?} never matches: a name that {problem} is refused"
                                ),
                            );
                        }
                    }
                }
            }
            if kind == RuleKind::Resources {
                for (i, pattern) in list.iter().enumerate() {
                    if let Some(problem) = crate::canon::resource_pattern_problem(pattern) {
                        errs.push(index(&fp, i), format!("{pattern:?} {problem}"));
                    }
                }
            }
            kinds.push((kind, list));
        }
    }
    match kinds.len() {
        1 => kinds.pop(),
        0 => {
            errs.push(
                p,
                format!("a rule needs exactly one of {}", keyword_list::<RuleKind>()),
            );
            None
        }
        _ => {
            errs.push(
                p,
                format!(
                    "a rule targets exactly one kind: use one of {}",
                    keyword_list::<RuleKind>()
                ),
            );
            None
        }
    }
}

/// `roles`: `None` = any identity.
pub(crate) fn compile_roles(r: &mut ObjReader, p: &str, errs: &mut Errors) -> Option<Vec<String>> {
    match r.get("roles") {
        None => None,
        Some(v) => {
            let list = string_list(v, &format!("{p}.roles"), errs);
            if matches!(&list, Some(l) if l.is_empty()) {
                errs.push(
                    format!("{p}.roles"),
                    "an empty roles list matches nobody; omit roles to mean any identity",
                );
            }
            list
        }
    }
}

/// The patterns of a target as globs. Resource patterns read `*` as one URI
/// segment and `**` as any run (glob.rs says why); names read `*` as any run.
pub(crate) fn globs(kind: RuleKind, list: &[String]) -> Vec<Glob> {
    let glob_kind = match kind {
        RuleKind::Resources => GlobKind::Uri,
        RuleKind::Tools | RuleKind::Methods | RuleKind::Prompts => GlobKind::Name,
    };
    list.iter().map(|s| Glob::of_kind(s, glob_kind)).collect()
}
