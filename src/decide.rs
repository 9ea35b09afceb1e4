//! The decision: deterministic, default deny, explained by the rule that made it.
//!
//! Order (POLICY.md "Decision"): any matching deny → deny; else any matching
//! approve → approval; else any matching allow → allow; else the base protocol
//! is allowed and everything else is denied by `default-deny`.

use crate::identity::Caller;
use crate::jsonrpc::{self, Message, ProtocolError, Target};
use crate::policy::{CompiledPolicy, Effect, Rule, RuleKind};

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
    pub rule: String,
    pub reason: String,
}

impl Decision {
    pub fn deny(rule: &str, reason: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Deny,
            rule: rule.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What one JSON-RPC message asks for, as far as rules are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `None` for a JSON-RPC response sent by the client.
    pub method: Option<String>,
    pub target: Target,
}

impl Call {
    fn describe(&self) -> String {
        let method = self.method.as_deref().unwrap_or("a response");
        match &self.target {
            Target::None => clip(method),
            Target::Tool(n) => format!("{method} of tool {}", clip(n)),
            Target::Resource(u) => format!("{method} of resource {}", clip(u)),
            Target::Prompt(n) => format!("{method} of prompt {}", clip(n)),
        }
    }

    /// `initialize`, `ping`, `notifications/*` and client responses.
    pub fn is_base_protocol(&self) -> bool {
        match self.method.as_deref() {
            None => true,
            Some(m) => m == "initialize" || m == "ping" || m.starts_with("notifications/"),
        }
    }
}

/// Names come from the caller: quote them with escapes and bound their length
/// so a reason can be logged and echoed safely.
fn clip(s: &str) -> String {
    let short: String = s.chars().take(96).collect();
    if short.len() < s.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

fn rule_matches(rule: &Rule, call: &Call) -> bool {
    match (rule.kind, &call.target) {
        (RuleKind::Methods, _) => call.method.as_deref().is_some_and(|m| rule.matches_name(m)),
        (RuleKind::Tools, Target::Tool(n))
        | (RuleKind::Resources, Target::Resource(n))
        | (RuleKind::Prompts, Target::Prompt(n)) => rule.matches_name(n),
        _ => false,
    }
}

/// Decide one parsed message: find its target (normalising resource URIs) and
/// apply the rules. The filter and the CLI (`explain`, `test`) both call this.
pub fn decide_message(
    policy: &CompiledPolicy,
    caller: &Caller,
    m: &Message,
) -> Result<Decision, ProtocolError> {
    if let Some(d) = kill_switch(policy, caller) {
        return Ok(d);
    }
    let Some(method) = m.method() else {
        let call = Call {
            method: None,
            target: Target::None,
        };
        return Ok(decide(policy, caller, &call));
    };
    let target = match jsonrpc::target_of(method, m.params())? {
        Target::Resource(uri) => match crate::canon::normalize_resource_uri(&uri) {
            Ok(norm) => Target::Resource(norm),
            Err(why) => {
                return Ok(Decision::deny(
                    "resource-uri",
                    format!("resource URI refused: {why}"),
                ))
            }
        },
        t => t,
    };
    let call = Call {
        method: Some(method.to_owned()),
        target,
    };
    Ok(decide(policy, caller, &call))
}

/// The kill switch refuses before any rule is consulted.
pub fn kill_switch(policy: &CompiledPolicy, caller: &Caller) -> Option<Decision> {
    if policy.kill_switch {
        return Some(Decision::deny(
            "kill-switch",
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
                "kill-switch",
                format!("subject {} is disabled", clip(subject)),
            )
        })
}

pub fn decide(policy: &CompiledPolicy, caller: &Caller, call: &Call) -> Decision {
    let mut first: [Option<&Rule>; 3] = [None, None, None];
    for rule in policy.rules.iter() {
        if !rule.applies_to_roles(&caller.roles) || !rule_matches(rule, call) {
            continue;
        }
        let slot = match rule.effect {
            Effect::Deny => 0,
            Effect::Approve => 1,
            Effect::Allow => 2,
        };
        if let Some(s) = first.get_mut(slot) {
            s.get_or_insert(rule);
        }
    }
    let what = call.describe();
    match first {
        [Some(r), _, _] => Decision::deny(&r.id, format!("rule {:?} denies {what}", r.id)),
        [None, Some(r), _] => Decision {
            verdict: Verdict::Approval,
            rule: r.id.clone(),
            reason: format!("rule {:?} requires approval for {what}", r.id),
        },
        [None, None, Some(r)] => Decision {
            verdict: Verdict::Allow,
            rule: r.id.clone(),
            reason: format!("rule {:?} allows {what}", r.id),
        },
        [None, None, None] if call.is_base_protocol() => Decision {
            verdict: Verdict::Allow,
            rule: "base-protocol".into(),
            reason: format!("{what} is part of the base protocol"),
        },
        [None, None, None] => Decision::deny(
            "default-deny",
            format!("no rule allows {what} for roles {:?}", caller.roles),
        ),
    }
}

/// Catalogue entries a caller may see (`tools/list`, `prompts/list`, `resources/list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalogue {
    Tools,
    Prompts,
    Resources,
}

impl Catalogue {
    pub fn for_list_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Catalogue::Tools),
            "prompts/list" => Some(Catalogue::Prompts),
            "resources/list" => Some(Catalogue::Resources),
            _ => None,
        }
    }
    /// The result member holding the entries, and the entry member holding the name.
    pub fn members(self) -> (&'static str, &'static str) {
        match self {
            Catalogue::Tools => ("tools", "name"),
            Catalogue::Prompts => ("prompts", "name"),
            Catalogue::Resources => ("resources", "uri"),
        }
    }
    fn call_for(self, name: &str) -> Call {
        match self {
            Catalogue::Tools => Call {
                method: Some("tools/call".into()),
                target: Target::Tool(name.into()),
            },
            Catalogue::Prompts => Call {
                method: Some("prompts/get".into()),
                target: Target::Prompt(name.into()),
            },
            Catalogue::Resources => Call {
                method: Some("resources/read".into()),
                target: Target::Resource(name.into()),
            },
        }
    }
}

/// An entry stays in a list result when some allow/approve rule could match a
/// call to it for this caller, and no unconditional deny rule does.
pub fn visible(policy: &CompiledPolicy, caller: &Caller, catalogue: Catalogue, name: &str) -> bool {
    let call = catalogue.call_for(name);
    let mut could_use = false;
    for rule in policy.rules.iter() {
        if !rule.applies_to_roles(&caller.roles) || !rule_matches(rule, &call) {
            continue;
        }
        match rule.effect {
            Effect::Deny => return false,
            Effect::Allow | Effect::Approve => could_use = true,
        }
    }
    could_use
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use crate::policy::compile;
    use serde_json::json;

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

    fn tool(name: &str) -> Call {
        Call {
            method: Some("tools/call".into()),
            target: Target::Tool(name.into()),
        }
    }

    fn method(m: &str) -> Call {
        Call {
            method: Some(m.into()),
            target: Target::None,
        }
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
                Call {
                    method: None,
                    target: Target::None,
                },
                Verdict::Allow,
                "base-protocol",
            ),
            (
                "resource_rule_matches_uri",
                &[],
                Call {
                    method: Some("resources/read".into()),
                    target: Target::Resource("file:///srv/docs/a.md".into()),
                },
                Verdict::Allow,
                "docs",
            ),
            (
                "resource_rule_ignores_other_uri",
                &[],
                Call {
                    method: Some("resources/read".into()),
                    target: Target::Resource("file:///etc/passwd".into()),
                },
                Verdict::Deny,
                "default-deny",
            ),
        ];
        for (name, roles, call, verdict, rule) in cases {
            let d = decide(&p, &caller(roles), &call);
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
        let first = decide(&p, &caller(&["reader"]), &tool("get_x"));
        for _ in 0..100 {
            assert_eq!(decide(&p, &caller(&["reader"]), &tool("get_x")), first);
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
                visible(&p, &caller(roles), Catalogue::Tools, tool_name),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn reasons_escape_hostile_names() {
        let d = decide(&policy(), &caller(&[]), &tool("x\n\u{1b}[31mfake log line"));
        assert!(!d.reason.contains('\n'), "{}", d.reason);
    }
}
