//! The decision: deterministic, default deny, explained by the rule that made it.
//!
//! Order (POLICY.md "Decision"): any matching deny → deny; else any matching
//! approve → approval; else any matching allow → allow; else the base protocol
//! is allowed and everything else is denied by `default-deny`.

use crate::catalogue::intents::{classify, Annotated};
use crate::condition::{CondInput, Outcome};
use crate::identity::Caller;
use crate::jsonrpc::{self, Message, ProtocolError, Target};
use crate::policy::{CompiledPolicy, Effect, Rule, RuleKind};
use crate::rule_id::RuleId;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    Approval,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Approval => "approval",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: RuleId,
    pub reason: String,
}

impl Decision {
    pub fn deny(rule: RuleId, reason: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Deny,
            rule,
            reason: reason.into(),
        }
    }
}

/// What one JSON-RPC message asks for, as far as rules are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Call<'a> {
    /// `None` for a JSON-RPC response sent by the client.
    pub method: Option<String>,
    pub target: Target,
    /// `params` as conditions see it: borrowed from the message, except for
    /// resource calls, whose `uri` is replaced by its normalised form so a
    /// `param: /uri` condition cannot be bypassed with `..` or escapes.
    pub params: Cow<'a, Value>,
    /// Why the target was refused before any rule (an unnormalisable resource URI).
    pub refused: Option<String>,
    /// What a list showed of the tool's annotations (`tools/call` only; an
    /// input like the caller, unseen unless the verdict looked it up).
    pub annotated: Annotated,
}

impl Call<'_> {
    pub fn new(method: Option<&str>, target: Target) -> Self {
        Call {
            method: method.map(str::to_owned),
            target,
            params: Cow::Owned(Value::Null),
            refused: None,
            annotated: Annotated::Unseen,
        }
    }

    fn describe(&self) -> String {
        let method = self.method.as_deref().unwrap_or("a response");
        let (kind, name) = match &self.target {
            Target::None => return clip(method),
            Target::Tool(n) => (" of tool ", n),
            Target::Resource(u) => (" of resource ", u),
            Target::Prompt(n) => (" of prompt ", n),
        };
        // Built piece by piece: every call is described, allowed ones too
        // (the reason an audit event records), and the `format!` calls of
        // the description and the reason were ~2.5% of a 109-byte exchange
        // under V8 (`--cpu-prof`).
        let mut out = String::with_capacity(method.len() + kind.len() + name.len().min(400) + 6);
        out.push_str(method);
        out.push_str(kind);
        push_clipped(&mut out, name);
        out
    }

    /// `initialize`, `server/discover` (its 2026-07-28 counterpart), `ping`,
    /// `notifications/*` and client responses.
    pub fn is_base_protocol(&self) -> bool {
        match self.method.as_deref() {
            None => true,
            Some(m) => {
                matches!(m, "initialize" | "server/discover" | "ping")
                    || m.starts_with("notifications/")
            }
        }
    }
}

/// Names come from the caller: quote them with escapes and bound their length
/// so a reason can be logged and echoed safely.
pub(crate) fn clip(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(400) + 5);
    push_clipped(&mut out, s);
    out
}

/// [`clip`] into `out`: the first 96 characters of `s` quoted as `{:?}`
/// quotes them, and `…` when there were more.
fn push_clipped(out: &mut String, s: &str) {
    match s.char_indices().nth(96) {
        Some((end, _)) => {
            push_quoted(out, s.get(..end).unwrap_or(s));
            out.push('…');
        }
        None => push_quoted(out, s),
    }
}

/// `s` as `{:?}` writes it: a name of printable ASCII without `"` or `\`
/// (nearly all) is only put in quotes; anything else goes through `Debug`.
fn push_quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

/// `rule "<id>" <verb> <what>`: the reason of a rule's decision.
fn rule_reason(id: &str, verb: &str, what: &str) -> String {
    let mut out = String::with_capacity(id.len() + verb.len() + what.len() + 10);
    out.push_str("rule ");
    push_quoted(&mut out, id);
    out.push(' ');
    out.push_str(verb);
    out.push(' ');
    out.push_str(what);
    out
}

fn rule_matches(rule: &Rule, call: &Call) -> bool {
    match (rule.kind, &call.target) {
        (RuleKind::Methods, _) => call.method.as_deref().is_some_and(|m| rule.matches_name(m)),
        (RuleKind::Tools, Target::Tool(n)) => {
            rule.matches_name(n) && intents_match(rule, n, call.annotated)
        }
        (RuleKind::Resources, Target::Resource(n)) | (RuleKind::Prompts, Target::Prompt(n)) => {
            rule.matches_name(n)
        }
        _ => false,
    }
}

/// A rule's `intents` against the tool's classes: every class listed must
/// be possible (deny, approve: a tool that might be destructive is denied
/// by a deny on destructive tools) or certain (allow: only a tool known to
/// be of those classes is allowed by them). Unknown fails closed both ways.
fn intents_match(rule: &Rule, tool: &str, annotated: Annotated) -> bool {
    let Some(wanted) = rule.intents else {
        return true;
    };
    let c = classify(tool, annotated);
    match rule.effect {
        Effect::Deny | Effect::Approve => wanted.is_subset(c.might),
        Effect::Allow => wanted.is_subset(c.is),
    }
}

/// Decide one parsed message: find its target (normalising resource URIs) and
/// apply the rules. The filter and the CLI (`explain`, `test`) both call this.
/// `now_ms`: when the message is decided (ms since the Unix epoch), for
/// `time` conditions; `annotated`: what a list showed of a called tool's
/// annotations, for `intents` rules.
pub fn decide_message(
    policy: &CompiledPolicy,
    caller: &Caller,
    m: &Message,
    now_ms: u64,
    annotated: Annotated,
) -> Result<Decision, ProtocolError> {
    if let Some(d) = kill_switch(policy, caller) {
        return Ok(d);
    }
    let mut call = call_of(m)?;
    call.annotated = annotated;
    Ok(decide_traced(policy, caller, &call, now_ms, None))
}

/// The rules' view of a message; a resource URI that cannot be normalised is
/// a decision (`resource-uri`), not a protocol error.
pub fn call_of(m: &Message) -> Result<Call<'_>, ProtocolError> {
    let Some(method) = m.method() else {
        return Ok(Call::new(None, Target::None));
    };
    let mut params = Cow::Borrowed(m.params());
    let mut refused = None;
    let target = match jsonrpc::target_of(method, m.params())? {
        Target::Resource(uri) => match crate::canon::normalize_resource_uri(&uri) {
            Ok(norm) => {
                if let Some(obj) = params.to_mut().as_object_mut() {
                    obj.insert("uri".into(), Value::String(norm.clone()));
                }
                Target::Resource(norm)
            }
            Err(why) => {
                refused = Some(why);
                Target::Resource(uri)
            }
        },
        t => t,
    };
    Ok(Call {
        method: Some(method.to_owned()),
        target,
        params,
        refused,
        annotated: Annotated::Unseen,
    })
}

/// The kill switch refuses before any rule is consulted.
pub fn kill_switch(policy: &CompiledPolicy, caller: &Caller) -> Option<Decision> {
    if policy.kill_switch {
        return Some(Decision::deny(
            RuleId::KillSwitch,
            "the kill switch is on: every MCP request is refused",
        ));
    }
    let subject = caller.subject.as_deref()?;
    policy
        .disabled_subjects
        .iter()
        .any(|s| s == subject)
        .then(|| {
            Decision::deny(
                RuleId::KillSwitch,
                format!("subject {} is disabled", clip(subject)),
            )
        })
}

pub fn decide(policy: &CompiledPolicy, caller: &Caller, call: &Call, now_ms: u64) -> Decision {
    decide_traced(policy, caller, call, now_ms, None)
}

/// Decide, and with `trace` record one line per condition evaluated (for
/// `mcp-firewall explain`; those lines may quote short argument values, so
/// the filter never asks for them).
pub fn decide_traced(
    policy: &CompiledPolicy,
    caller: &Caller,
    call: &Call,
    now_ms: u64,
    mut trace: Option<&mut Vec<String>>,
) -> Decision {
    if let Some(why) = &call.refused {
        return Decision::deny(RuleId::ResourceUri, format!("resource URI refused: {why}"));
    }
    let mut first: [Option<&Rule>; 3] = [None, None, None];
    let mut deny_error: Option<String> = None;
    let mut unmet: Vec<&str> = Vec::new();
    for rule in policy.rules.iter() {
        if !rule.applies_to_roles(&caller.roles) || !rule_matches(rule, call) {
            continue;
        }
        let slot = match rule.effect {
            Effect::Deny => 0,
            Effect::Approve => 1,
            Effect::Allow => 2,
        };
        // Once a deny has fired nothing else can change the verdict.
        if first[0].is_some() {
            break;
        }
        if let Some(cond) = &rule.when {
            let input = CondInput {
                arguments: jsonrpc::arguments(&call.params),
                params: &call.params,
                now_ms,
            };
            let outcome = match trace.as_deref_mut() {
                Some(t) => {
                    let (o, line) = cond.explain(&input);
                    t.push(format!(
                        "rule {:?} ({}): {line}",
                        rule.id,
                        rule.effect.as_str()
                    ));
                    o
                }
                None => cond.eval(&input),
            };
            // Fail closed: an undecidable condition makes a deny match and an
            // allow/approve not match.
            match (rule.effect, outcome) {
                (_, Outcome::True) => {}
                (Effect::Deny, Outcome::Error(e)) => deny_error = Some(e),
                (_, Outcome::False) | (_, Outcome::Error(_)) => {
                    if rule.effect != Effect::Deny {
                        unmet.push(&rule.id);
                    }
                    continue;
                }
            }
        }
        if let Some(s) = first.get_mut(slot) {
            s.get_or_insert(rule);
        }
    }
    let mut what = call.describe();
    if let (Target::Tool(n), true) = (
        &call.target,
        first.iter().flatten().any(|r| r.intents.is_some()),
    ) {
        // Which classes made an intents rule match, and why.
        what.push_str(&format!(
            " (classes: {})",
            classify(n, call.annotated).describe()
        ));
    }
    match first {
        [Some(r), _, _] => match deny_error {
            Some(e) => Decision::deny(
                r.rule_id.clone(),
                format!(
                    "rule {:?} denies {what} (its condition could not be evaluated: {e})",
                    r.id
                ),
            ),
            None => Decision::deny(r.rule_id.clone(), rule_reason(&r.id, "denies", &what)),
        },
        [None, Some(r), _] => Decision {
            verdict: Verdict::Approval,
            rule: r.rule_id.clone(),
            reason: rule_reason(&r.id, "requires approval for", &what),
        },
        [None, None, Some(r)] => Decision {
            verdict: Verdict::Allow,
            rule: r.rule_id.clone(),
            reason: rule_reason(&r.id, "allows", &what),
        },
        [None, None, None] if call.is_base_protocol() => Decision {
            verdict: Verdict::Allow,
            rule: RuleId::BaseProtocol,
            reason: format!("{what} is part of the base protocol"),
        },
        [None, None, None] if unmet.is_empty() => Decision::deny(
            RuleId::DefaultDeny,
            format!("no rule allows {what} for roles {:?}", caller.roles),
        ),
        [None, None, None] => Decision::deny(
            RuleId::DefaultDeny,
            format!("no rule allows {what}: conditions of {unmet:?} were not met"),
        ),
    }
}

/// Catalogue entries a caller may see (`tools/list`, `prompts/list`, `resources/list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalogue {
    Tools,
    Prompts,
    Resources,
    /// `resources/templates/list`: entries are URI templates (RFC 6570).
    ResourceTemplates,
}

impl Catalogue {
    pub fn for_list_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Catalogue::Tools),
            "prompts/list" => Some(Catalogue::Prompts),
            "resources/list" => Some(Catalogue::Resources),
            "resources/templates/list" => Some(Catalogue::ResourceTemplates),
            _ => None,
        }
    }
    /// The result member holding the entries, and the entry member holding the name.
    pub fn members(self) -> (&'static str, &'static str) {
        match self {
            Catalogue::Tools => ("tools", "name"),
            Catalogue::Prompts => ("prompts", "name"),
            Catalogue::Resources => ("resources", "uri"),
            Catalogue::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }
    fn call_for(self, name: &str) -> Call<'static> {
        match self {
            Catalogue::Tools => Call::new(Some("tools/call"), Target::Tool(name.into())),
            Catalogue::Prompts => Call::new(Some("prompts/get"), Target::Prompt(name.into())),
            Catalogue::Resources | Catalogue::ResourceTemplates => {
                Call::new(Some("resources/read"), Target::Resource(name.into()))
            }
        }
    }
}

/// An entry stays in a list result when some allow/approve rule could match a
/// call to it for this caller, and no unconditional deny rule does.
/// `annotated`: for a `tools/list` entry, the classes of its annotations in
/// the very list being filtered (so `intents` rules judge what it shows).
pub fn visible(
    policy: &CompiledPolicy,
    caller: &Caller,
    catalogue: Catalogue,
    name: &str,
    annotated: Annotated,
) -> bool {
    if catalogue == Catalogue::ResourceTemplates {
        return template_visible(policy, caller, name);
    }
    // A listed URI is compared as a read of it would be: normalised, and
    // hidden when it cannot be (a read of it would be refused).
    let normal;
    let name = match catalogue {
        Catalogue::ResourceTemplates => return false,
        Catalogue::Resources => match crate::canon::normalize_resource_uri(name) {
            Ok(n) => {
                normal = n;
                normal.as_str()
            }
            Err(_) => return false,
        },
        // A name a call could not use (the filter refuses it before any
        // rule) is not offered either.
        Catalogue::Tools | Catalogue::Prompts => {
            let kind = match catalogue {
                Catalogue::Tools => crate::jsonrpc::NameKind::Tool,
                _ => crate::jsonrpc::NameKind::Prompt,
            };
            if crate::jsonrpc::name_problem(kind, name).is_some() {
                return false;
            }
            name
        }
    };
    let mut call = catalogue.call_for(name);
    call.annotated = annotated;
    let mut could_use = false;
    for rule in policy.rules.iter() {
        if !rule.applies_to_roles(&caller.roles) || !rule_matches(rule, &call) {
            continue;
        }
        match rule.effect {
            Effect::Deny if rule.when.is_none() => return false,
            Effect::Deny => {}
            Effect::Allow | Effect::Approve => could_use = true,
        }
    }
    could_use
}

/// A URI template (RFC 6570) stays in `resources/templates/list` when some
/// allow/approve rule could match a URI it expands to, and no unconditional
/// deny rule matches all of them. Its expansions are known only by their
/// common start, the template's text before the first `{`, normalised as a
/// read's URI would be (a template whose start cannot be is hidden): a
/// `resources` pattern could match one when it matches some text starting
/// there, and matches all when it matches that start followed by `**` alone.
/// A `methods` rule is matched against `resources/read` as for any resource.
fn template_visible(policy: &CompiledPolicy, caller: &Caller, template: &str) -> bool {
    let start = template.split('{').next().unwrap_or("");
    let Ok(start) = crate::canon::normalize_resource_uri(start) else {
        return false;
    };
    let call = Catalogue::ResourceTemplates.call_for(&start);
    let mut could_use = false;
    for rule in policy.rules.iter() {
        if !rule.applies_to_roles(&caller.roles) {
            continue;
        }
        let (some, every) = match rule.kind {
            RuleKind::Methods => {
                let m = rule_matches(rule, &call);
                (m, m)
            }
            RuleKind::Resources => (
                rule.matches_some_extension_of(&start),
                rule.matches_every_extension_of(&start),
            ),
            RuleKind::Tools | RuleKind::Prompts => (false, false),
        };
        match rule.effect {
            Effect::Deny if rule.when.is_none() && every => return false,
            Effect::Deny => {}
            Effect::Allow | Effect::Approve => could_use |= some,
        }
    }
    could_use
}

/// Whether a `completion/complete` request's `ref` names something this caller
/// may see: a prompt (`ref/prompt`) or a resource or template
/// (`ref/resource`), judged as its list entry would be. Completions of
/// anything else, or of a `ref` that cannot be read, are not shown: argument
/// values of a hidden prompt are part of what hiding it hides.
pub fn completion_ref_visible(policy: &CompiledPolicy, caller: &Caller, params: &Value) -> bool {
    let Some(r) = params.get("ref") else {
        return false;
    };
    let text = |k: &str| r.get(k).and_then(Value::as_str);
    match text("type") {
        Some("ref/prompt") => text("name")
            .is_some_and(|n| visible(policy, caller, Catalogue::Prompts, n, Annotated::Unseen)),
        Some("ref/resource") => text("uri").is_some_and(|u| {
            let catalogue = if u.contains('{') {
                Catalogue::ResourceTemplates
            } else {
                Catalogue::Resources
            };
            visible(policy, caller, catalogue, u, Annotated::Unseen)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use crate::policy::compile;
    use serde_json::json;

    #[test]
    fn names_are_quoted_and_clipped_as_debug_formatting_would() {
        let long = "a".repeat(96);
        let longer = "a".repeat(97);
        let wide = "é".repeat(97);
        let cases = [
            ("plain", "echo"),
            ("empty", ""),
            ("space_and_punctuation", "a b/c:d'e*f"),
            ("double_quote", "a\"b"),
            ("backslash", "a\\b"),
            ("control", "a\nb\u{1}"),
            ("delete", "a\u{7f}"),
            ("non_ascii", "caf\u{e9} \u{202e}x"),
            ("combining_mark_first", "\u{301}a"),
            ("exactly_96", long.as_str()),
            ("97", longer.as_str()),
            ("97_two_byte", wide.as_str()),
        ];
        for (name, s) in cases {
            let short: String = s.chars().take(96).collect();
            let want = match short.len() < s.len() {
                true => format!("{short:?}…"),
                false => format!("{short:?}"),
            };
            assert_eq!(clip(s), want, "{name}");
            assert_eq!(
                rule_reason(s, "allows", "x"),
                format!("rule {s:?} allows x"),
                "{name}"
            );
        }
    }

    fn policy() -> CompiledPolicy {
        let doc = json!({
            "version": 1,
            "rules": [
                {"id": "list", "effect": "allow", "methods": ["tools/list"]},
                {"id": "read", "effect": "allow", "roles": ["reader"], "tools": ["get_*", "echo"]},
                {"id": "admin", "effect": "allow", "roles": ["admin"], "tools": ["*"]},
                {"id": "no-delete", "effect": "deny", "tools": ["delete_*"]},
                {"id": "scale", "effect": "approve", "roles": ["ops"], "tools": ["scale_*"]},
                {"id": "docs", "effect": "allow", "resources": ["file:///srv/docs/*"]},
                {"id": "no-init-for-banned", "effect": "deny", "roles": ["banned"], "methods": ["initialize"]}
            ]
        });
        match compile(&doc) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            subject: Some("s".into()),
            tenant: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            via: Via::ApiKey,
        }
    }

    fn tool(name: &str) -> Call<'static> {
        Call::new(Some("tools/call"), Target::Tool(name.into()))
    }

    fn method(m: &str) -> Call<'static> {
        Call::new(Some(m), Target::None)
    }

    #[test]
    fn decision_table() {
        let p = policy();
        let cases = [
            (
                "allows_tool_in_role_allowlist",
                &["reader"][..],
                tool("get_issue"),
                Verdict::Allow,
                "read",
            ),
            (
                "denies_tool_not_in_allowlist",
                &["reader"],
                tool("create_issue"),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "deny_beats_allow_for_admin",
                &["admin"],
                tool("delete_repo"),
                Verdict::Deny,
                "no-delete",
            ),
            (
                "admin_wildcard_allows_other_tools",
                &["admin"],
                tool("create_issue"),
                Verdict::Allow,
                "admin",
            ),
            (
                "approval_rule_requires_approval",
                &["ops"],
                tool("scale_up"),
                Verdict::Approval,
                "scale",
            ),
            (
                "deny_beats_approval",
                &["ops", "admin"],
                tool("delete_x"),
                Verdict::Deny,
                "no-delete",
            ),
            (
                "no_roles_gets_default_deny",
                &[],
                tool("echo"),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "case_variant_is_a_different_tool",
                &["reader"],
                tool("Echo"),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "methods_rule_allows_list",
                &[],
                method("tools/list"),
                Verdict::Allow,
                "list",
            ),
            (
                "unlisted_method_denied",
                &["reader"],
                method("resources/templates/list"),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "server_discover_is_base_protocol",
                &[],
                method("server/discover"),
                Verdict::Allow,
                "base-protocol",
            ),
            (
                "initialize_is_base_protocol",
                &[],
                method("initialize"),
                Verdict::Allow,
                "base-protocol",
            ),
            (
                "notification_is_base_protocol",
                &[],
                method("notifications/initialized"),
                Verdict::Allow,
                "base-protocol",
            ),
            (
                "deny_rule_overrides_base_protocol",
                &["banned"],
                method("initialize"),
                Verdict::Deny,
                "no-init-for-banned",
            ),
            (
                "client_response_is_base_protocol",
                &[],
                Call::new(None, Target::None),
                Verdict::Allow,
                "base-protocol",
            ),
            (
                "resource_rule_matches_uri",
                &[],
                Call::new(
                    Some("resources/read"),
                    Target::Resource("file:///srv/docs/a.md".into()),
                ),
                Verdict::Allow,
                "docs",
            ),
            (
                "resource_rule_ignores_other_uri",
                &[],
                Call::new(
                    Some("resources/read"),
                    Target::Resource("file:///etc/passwd".into()),
                ),
                Verdict::Deny,
                "default-deny",
            ),
        ];
        for (name, roles, call, verdict, rule) in cases {
            let d = decide(&p, &caller(roles), &call, 0);
            assert_eq!(
                (d.verdict, d.rule.as_str()),
                (verdict, rule),
                "{name}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn same_input_same_decision() {
        let p = policy();
        let first = decide(&p, &caller(&["reader"]), &tool("get_x"), 0);
        for _ in 0..100 {
            assert_eq!(decide(&p, &caller(&["reader"]), &tool("get_x"), 0), first);
        }
    }

    #[test]
    fn catalogue_visibility() {
        let p = policy();
        let cases = [
            ("reader_sees_allowed_tool", &["reader"][..], "echo", true),
            (
                "reader_does_not_see_other_tool",
                &["reader"],
                "create_issue",
                false,
            ),
            (
                "admin_sees_everything_allowed",
                &["admin"],
                "create_issue",
                true,
            ),
            (
                "unconditional_deny_hides_tool",
                &["admin"],
                "delete_repo",
                false,
            ),
            ("approval_tool_is_visible", &["ops"], "scale_up", true),
        ];
        for (name, roles, tool_name, want) in cases {
            assert_eq!(
                visible(
                    &p,
                    &caller(roles),
                    Catalogue::Tools,
                    tool_name,
                    Annotated::Unseen
                ),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn reasons_escape_hostile_names() {
        let d = decide(
            &policy(),
            &caller(&[]),
            &tool("x\n\u{1b}[31mfake log line"),
            0,
        );
        assert!(!d.reason.contains('\n'), "{}", d.reason);
    }
}

#[cfg(test)]
mod condition_tests {
    use super::*;
    use crate::identity::Via;
    use crate::jsonrpc::{parse_body, Body};
    use serde_json::json;

    fn policy() -> CompiledPolicy {
        let doc = json!({"version": 1, "rules": [
            {"id": "refund-cap", "effect": "allow", "roles": ["finance"], "tools": ["create_refund"],
             "when": {"all": [{"arg": "/amount", "lte": 500}, {"arg": "/currency", "in": ["usd", "eur"]}]}},
            {"id": "no-public", "effect": "deny", "tools": ["reply_to_ticket"], "when": {"arg": "/public", "eq": true}},
            {"id": "tickets", "effect": "allow", "tools": ["reply_to_ticket"]},
            {"id": "docs", "effect": "allow", "resources": ["file:///srv/docs/*"],
             "when": {"param": "/uri", "prefix": "file:///srv/docs/"}}
        ]});
        crate::policy::compile(&doc).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn decide_json(body: serde_json::Value) -> Decision {
        let caller = Caller {
            subject: None,
            tenant: None,
            roles: vec!["finance".into()],
            via: Via::Jwt,
        };
        let Ok(Body::Single(m)) = parse_body(body.to_string().as_bytes(), 64) else {
            panic!("parse")
        };
        decide_message(&policy(), &caller, &m, 0, Annotated::Unseen)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn refund(args: serde_json::Value) -> serde_json::Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_refund", "arguments": args}})
    }

    fn reply(args: serde_json::Value) -> serde_json::Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "reply_to_ticket", "arguments": args}})
    }

    #[test]
    fn condition_decision_table() {
        let cases = [
            (
                "refund_under_cap_allowed",
                refund(json!({"amount": 500, "currency": "usd"})),
                Verdict::Allow,
                "refund-cap",
            ),
            (
                "refund_over_cap_denied",
                refund(json!({"amount": 501, "currency": "usd"})),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "refund_amount_as_string_denied",
                refund(json!({"amount": "100", "currency": "usd"})),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "refund_missing_amount_denied",
                refund(json!({"currency": "usd"})),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "refund_currency_case_matters",
                refund(json!({"amount": 5, "currency": "USD"})),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "private_reply_allowed",
                reply(json!({"public": false, "body": "hi"})),
                Verdict::Allow,
                "tickets",
            ),
            (
                "public_reply_denied",
                reply(json!({"public": true})),
                Verdict::Deny,
                "no-public",
            ),
            (
                "missing_arg_under_deny_rule_denies",
                reply(json!({"body": "hi"})),
                Verdict::Deny,
                "no-public",
            ),
            (
                "wrong_type_under_deny_rule_denies",
                reply(json!({"public": "true"})),
                Verdict::Deny,
                "no-public",
            ),
            (
                "uri_condition_sees_normalised_uri",
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///srv/docs/../../etc/passwd"}}),
                Verdict::Deny,
                "default-deny",
            ),
            (
                "uri_condition_allows_normalised_docs_uri",
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///srv/docs/./guide.md"}}),
                Verdict::Allow,
                "docs",
            ),
        ];
        for (name, body, verdict, rule) in cases {
            let d = decide_json(body);
            assert_eq!(
                (d.verdict, d.rule.as_str()),
                (verdict, rule),
                "{name}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn errored_deny_condition_says_so_without_the_value() {
        let d = decide_json(reply(json!({"public": "sekrit-value"})));
        assert!(d.reason.contains("could not be evaluated"), "{}", d.reason);
        assert!(!d.reason.contains("sekrit-value"), "{}", d.reason);
    }

    #[test]
    fn conditional_deny_does_not_hide_the_tool() {
        let caller = Caller {
            subject: None,
            tenant: None,
            roles: vec![],
            via: Via::Jwt,
        };
        assert!(visible(
            &policy(),
            &caller,
            Catalogue::Tools,
            "reply_to_ticket",
            Annotated::Unseen
        ));
    }

    #[test]
    fn trace_names_the_failing_condition() {
        let caller = Caller {
            subject: None,
            tenant: None,
            roles: vec!["finance".into()],
            via: Via::Jwt,
        };
        let body = refund(json!({"amount": 900, "currency": "usd"}));
        let Ok(Body::Single(m)) = parse_body(body.to_string().as_bytes(), 64) else {
            panic!("parse")
        };
        let call = call_of(&m).unwrap_or_else(|e| panic!("{e:?}"));
        let mut trace = Vec::new();
        let d = decide_traced(&policy(), &caller, &call, 0, Some(&mut trace));
        assert_eq!(d.rule, RuleId::DefaultDeny);
        assert!(
            trace
                .iter()
                .any(|l| l.contains("refund-cap") && l.contains("/amount")),
            "{trace:?}"
        );
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use crate::identity::Via;
    use crate::jsonrpc::{parse_body, Body};
    use crate::time_window::parse_timestamp;
    use serde_json::json;

    fn policy() -> CompiledPolicy {
        let weekdays = json!(["mon", "tue", "wed", "thu", "fri"]);
        let doc = json!({"version": 1, "rules": [
            {"id": "deploy-in-hours", "effect": "allow", "tools": ["deploy"],
             "when": {"time": {"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+01:00"}}},
            {"id": "friday-freeze", "effect": "deny", "tools": ["deploy"],
             "when": {"time": {"days": ["fri"], "hours": "15:00-24:00", "utc_offset": "+01:00"}}},
            {"id": "forced-drop-at-night", "effect": "allow", "tools": ["drop_table"],
             "when": {"all": [
                 {"arg": "/force", "eq": true},
                 {"not": {"time": {"hours": "07:00-22:00", "utc_offset": "-05:00"}}}
             ]}}
        ]});
        crate::policy::compile(&doc).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn call(tool: &str, args: serde_json::Value) -> Message {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": args}});
        match parse_body(body.to_string().as_bytes(), 64) {
            Ok(Body::Single(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn at(s: &str) -> u64 {
        parse_timestamp(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn caller() -> Caller {
        Caller {
            subject: None,
            tenant: None,
            roles: Vec::new(),
            via: Via::Jwt,
        }
    }

    #[test]
    fn time_conditions_decide_by_the_time_given() {
        // 2026-12-03 is a Thursday, 2026-12-05 a Saturday.
        let cases = [
            (
                "deploy_in_hours",
                "deploy",
                json!({}),
                "2026-12-03T08:00:00Z",
                Verdict::Allow,
                "deploy-in-hours",
            ),
            (
                "deploy_before_hours",
                "deploy",
                json!({}),
                "2026-12-03T07:59:00Z",
                Verdict::Deny,
                "default-deny",
            ),
            (
                "deploy_at_closing",
                "deploy",
                json!({}),
                "2026-12-03T16:30:00Z",
                Verdict::Deny,
                "default-deny",
            ),
            (
                "deploy_on_saturday",
                "deploy",
                json!({}),
                "2026-12-05T10:00:00Z",
                Verdict::Deny,
                "default-deny",
            ),
            // The deny wins over the allow whose window also holds.
            (
                "deploy_in_the_friday_freeze",
                "deploy",
                json!({}),
                "2026-12-04T14:00:00Z",
                Verdict::Deny,
                "friday-freeze",
            ),
            (
                "deploy_friday_morning",
                "deploy",
                json!({}),
                "2026-12-04T13:59:00Z",
                Verdict::Allow,
                "deploy-in-hours",
            ),
            // `not time` at -05:00: 03:00 UTC is 22:00 the evening before.
            (
                "forced_drop_at_night",
                "drop_table",
                json!({"force": true}),
                "2026-12-05T03:00:00Z",
                Verdict::Allow,
                "forced-drop-at-night",
            ),
            (
                "forced_drop_in_the_day",
                "drop_table",
                json!({"force": true}),
                "2026-12-05T02:59:00Z",
                Verdict::Deny,
                "default-deny",
            ),
            (
                "unforced_drop_at_night",
                "drop_table",
                json!({"force": false}),
                "2026-12-05T03:00:00Z",
                Verdict::Deny,
                "default-deny",
            ),
        ];
        let p = policy();
        for (name, tool, args, when, verdict, rule) in cases {
            let d = decide_message(
                &p,
                &caller(),
                &call(tool, args),
                at(when),
                Annotated::Unseen,
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                (d.verdict, d.rule.as_str()),
                (verdict, rule),
                "{name}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn a_time_condition_reads_no_member_and_hides_nothing() {
        let p = policy();
        let mut paths = Vec::new();
        for rule in p.rules.iter() {
            if let Some(w) = &rule.when {
                w.member_paths(&mut paths);
            }
        }
        // Only the `force` argument: a time leaf adds no path to check for
        // case variants.
        assert_eq!(paths.len(), 1, "{paths:?}");
        // A tool allowed only in hours stays in the catalogue: a list
        // answer does not change with the clock.
        assert!(visible(
            &p,
            &caller(),
            Catalogue::Tools,
            "deploy",
            Annotated::Unseen
        ));
    }

    #[test]
    fn trace_shows_the_window_and_the_time_as_the_window_reads_it() {
        let m = call("deploy", json!({}));
        let call = call_of(&m).unwrap_or_else(|e| panic!("{e:?}"));
        let mut trace = Vec::new();
        let d = decide_traced(
            &policy(),
            &caller(),
            &call,
            at("2026-12-05T10:00:00Z"),
            Some(&mut trace),
        );
        assert_eq!(d.rule, RuleId::DefaultDeny);
        assert_eq!(
            trace,
            vec![
                "rule \"deploy-in-hours\" (allow): time mon,tue,wed,thu,fri 09:00-17:30 +01:00: \
                 request at 2026-12-05 sat 11:00 +01:00, does not hold → false",
                "rule \"friday-freeze\" (deny): time fri 15:00-24:00 +01:00: \
                 request at 2026-12-05 sat 11:00 +01:00, does not hold → false",
            ]
        );
    }
}

#[cfg(test)]
mod intent_tests {
    use super::*;
    use crate::catalogue::intents::{entry_annotations, Annotated};
    use crate::identity::Via;
    use serde_json::json;

    /// Agents may not use destructive tools; open-world writes need a
    /// person; readers get read-only tools; ops get everything.
    fn policy() -> CompiledPolicy {
        crate::policy::compile(&json!({"version": 1, "rules": [
            {"id": "no-destroy", "effect": "deny", "roles": ["agent"], "intents": ["destructive"]},
            {"id": "ask-ow-writes", "effect": "approve", "intents": ["open-world", "write"]},
            {"id": "readers", "effect": "allow", "roles": ["agent", "reader"], "intents": ["read"]},
            {"id": "agent-tools", "effect": "allow", "roles": ["agent"], "tools": ["*"]},
            {"id": "ops", "effect": "allow", "roles": ["ops"], "tools": ["*"]}
        ]}))
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn caller(role: &str) -> Caller {
        Caller {
            subject: Some("s".into()),
            tenant: None,
            roles: vec![role.into()],
            via: Via::Anonymous,
        }
    }

    /// What a list showing `annotations` for `name` makes known.
    fn seen(name: &str, annotations: serde_json::Value) -> Annotated {
        let entry = match annotations {
            serde_json::Value::Null => json!({"name": name}),
            a => json!({"name": name, "annotations": a}),
        };
        Annotated::Seen(entry_annotations(name, &entry))
    }

    #[test]
    fn intent_rules_decide_by_the_tools_classes() {
        use Verdict::*;
        let unseen = Annotated::Unseen;
        let cases = [
            // (case, role, tool, what is known, verdict, rule)
            (
                "agent_denied_delete_by_name",
                "agent",
                "delete_repo",
                unseen,
                Deny,
                "no-destroy",
            ),
            (
                "read_only_hint_does_not_save_delete",
                "agent",
                "delete_repo",
                seen("delete_repo", json!({"readOnlyHint": true})),
                Deny,
                "no-destroy",
            ),
            (
                "destructive_hint_makes_get_destructive",
                "agent",
                "get_weather",
                seen("get_weather", json!({"destructiveHint": true})),
                Deny,
                "no-destroy",
            ),
            (
                "unseen_get_might_be_destructive",
                "agent",
                "get_weather",
                unseen,
                Deny,
                "no-destroy",
            ),
            (
                "seen_unannotated_get_is_read",
                "agent",
                "get_time",
                seen("get_time", serde_json::Value::Null),
                Allow,
                "readers",
            ),
            (
                "unannotated_unnamed_tool_takes_spec_defaults",
                "agent",
                "echo",
                seen("echo", serde_json::Value::Null),
                Deny,
                "no-destroy",
            ),
            (
                "open_world_write_needs_approval",
                "agent",
                "send_email",
                seen("send_email", serde_json::Value::Null),
                Approval,
                "ask-ow-writes",
            ),
            (
                "closed_world_write_is_allowed",
                "agent",
                "create_note",
                seen("create_note", json!({"openWorldHint": false})),
                Allow,
                "agent-tools",
            ),
            (
                "unseen_write_might_be_open_world",
                "agent",
                "create_note",
                unseen,
                Deny,
                "no-destroy",
            ),
            (
                "ops_unseen_write_asks_approval",
                "ops",
                "create_note",
                unseen,
                Approval,
                "ask-ow-writes",
            ),
            (
                "ops_delete_of_closed_world_is_allowed",
                "ops",
                "delete_repo",
                seen("delete_repo", json!({"openWorldHint": false})),
                Allow,
                "ops",
            ),
            (
                "reader_read_allowed_once_seen",
                "reader",
                "list_files",
                seen(
                    "list_files",
                    json!({"readOnlyHint": true, "openWorldHint": false}),
                ),
                Allow,
                "readers",
            ),
            (
                "reader_read_not_allowed_unseen",
                "reader",
                "list_files",
                unseen,
                Approval,
                "ask-ow-writes",
            ),
            (
                "reader_write_not_allowed_by_read_rule",
                "reader",
                "get_thing",
                seen(
                    "get_thing",
                    json!({"readOnlyHint": false, "openWorldHint": false}),
                ),
                Deny,
                "default-deny",
            ),
        ];
        let p = policy();
        for (case, role, tool, annotated, verdict, rule) in cases {
            let mut call = Call::new(Some("tools/call"), Target::Tool(tool.into()));
            call.annotated = annotated;
            let d = decide(&p, &caller(role), &call, 0);
            assert_eq!(
                (d.verdict, d.rule.as_str()),
                (verdict, rule),
                "{case}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn an_intent_decision_says_the_classes_and_where_they_came_from() {
        let mut call = Call::new(Some("tools/call"), Target::Tool("get_weather".into()));
        call.annotated = seen("get_weather", json!({"destructiveHint": true}));
        let d = decide(&policy(), &caller("agent"), &call, 0);
        assert!(
            d.reason
                .contains("destructive (annotations seen in a tools/list)"),
            "{}",
            d.reason
        );
        call.annotated = Annotated::Unseen;
        let d = decide(&policy(), &caller("agent"), &call, 0);
        assert!(
            d.reason.contains("annotations not seen yet"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn lists_hide_what_a_deny_intent_matches_by_the_lists_own_annotations() {
        let p = policy();
        let cases = [
            (
                "delete_hidden_from_agent",
                "agent",
                "delete_repo",
                json!({"readOnlyHint": true}),
                false,
            ),
            (
                "annotated_destructive_get_hidden",
                "agent",
                "get_weather",
                json!({"destructiveHint": true}),
                false,
            ),
            ("plain_get_shown", "agent", "get_time", json!({}), true),
            (
                "unannotated_send_shown_for_approval",
                "agent",
                "send_email",
                json!({}),
                true,
            ),
            ("ops_see_delete", "ops", "delete_repo", json!({}), true),
            (
                "reader_sees_read_only",
                "reader",
                "list_files",
                json!({"readOnlyHint": true}),
                true,
            ),
            (
                "reader_does_not_see_write",
                "reader",
                "get_thing",
                json!({"readOnlyHint": false, "openWorldHint": false}),
                false,
            ),
        ];
        for (case, role, tool, annotations, shown) in cases {
            let a = seen(tool, annotations);
            assert_eq!(
                visible(&p, &caller(role), Catalogue::Tools, tool, a),
                shown,
                "{case}"
            );
        }
    }
}
