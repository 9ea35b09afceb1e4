//! `$.catalogue`: what each poisoning check does to a tool definition
//! (`remove` it from `tools/list`, `flag` it in audit, `off`) and to a tool
//! result (`block`, `wrap`, `flag`, `off`), and the hosts markdown links and
//! images may point at. Compiled with the strict reader: every mistake is
//! named by its JSON path, and a section with any mistake yields `None`.

use super::poison::{Check, Finding, HostPattern, Inspector};
use crate::config::{
    index, keyword_at, keyword_list, keywords, type_name, Errors, Keyword, ObjReader,
};
use serde_json::Value;

/// What a finding in a tool definition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionAction {
    /// The tool is removed from the list the caller sees (and so cannot be
    /// called through a listed name).
    Remove,
    /// The tool is listed; the finding is audited.
    Flag,
    Off,
}

keywords!(DescriptionAction {
    Remove => "remove",
    Flag => "flag",
    Off => "off",
});

/// What a finding in a tool result does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultAction {
    /// The result is replaced by an error.
    Block,
    /// The text is kept, fenced and labelled as untrusted tool output.
    Wrap,
    /// The result passes; the finding is audited.
    Flag,
    Off,
}

keywords!(ResultAction {
    Block => "block",
    Wrap => "wrap",
    Flag => "flag",
    Off => "off",
});

impl DescriptionAction {
    fn severity(self) -> u8 {
        match self {
            DescriptionAction::Off => 0,
            DescriptionAction::Flag => 1,
            DescriptionAction::Remove => 2,
        }
    }
}

impl ResultAction {
    fn severity(self) -> u8 {
        match self {
            ResultAction::Off => 0,
            ResultAction::Flag => 1,
            ResultAction::Wrap => 2,
            ResultAction::Block => 3,
        }
    }
}

/// What a `tools/call` of a tool no list of its upstream showed this Envoy
/// gets (`unlisted_calls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlistedCalls {
    /// Forwarded: the catalogue checks judge definitions, and this one was
    /// never read (a client that cached its list, or listed through another
    /// Envoy, calls without listing here).
    Allow,
    /// Refused (rule `catalogue`, -32010) until a list of the upstream showed
    /// the tool: what a team that must never forward a call of an unread
    /// definition chooses (the stateless 2026-07-28 revision lets a call come
    /// first).
    Refuse,
}

keywords!(UnlistedCalls {
    Allow => "allow",
    Refuse => "refuse",
});

/// `hold_s` when the policy does not say: a day, as `pins.hold_s`.
pub const DEFAULT_HOLD_S: u64 = 86_400;
/// `hold_s` at most: 30 days.
pub const MAX_HOLD_S: u64 = 30 * 86_400;
/// Names in `other_tools` at most.
pub const MAX_OTHER_TOOLS: usize = 4096;

/// The compiled `$.catalogue` section.
#[derive(Debug)]
pub struct CataloguePolicy {
    descriptions: [DescriptionAction; Check::COUNT],
    results: [ResultAction; Check::COUNT],
    /// The checks themselves, with the link allowlist.
    pub inspector: Inspector,
    /// `hold_s` in milliseconds: how long a tool removed from a list of an
    /// upstream keeps its calls refused, whatever later lists show.
    pub hold_ms: u64,
    pub unlisted_calls: UnlistedCalls,
    /// `other_tools`: names of tools the callers reach outside this gateway
    /// (their own local servers), for `shadowing`, beside the names the other
    /// upstream clusters of this Envoy listed.
    pub other_tools: Vec<String>,
}

/// Defaults when the section or a check is absent: every check flags tool
/// definitions (audit only: a policy that never mentioned the section sees
/// no tool disappear). On results, the checks whose measured precision on
/// ordinary tool output is high flag; `secret_reference` and `encoded_blob`
/// are off there, because file listings, configs and images in results
/// name `.env` and carry base64 all the time (docs/catalogue.md, the table).
const DEFAULT_DESCRIPTIONS: [DescriptionAction; Check::COUNT] =
    [DescriptionAction::Flag; Check::COUNT];

fn default_result(c: Check) -> ResultAction {
    match c {
        Check::SecretReference | Check::EncodedBlob | Check::Shadowing => ResultAction::Off,
        Check::InvisibleUnicode | Check::ModelInstructions | Check::Exfiltration | Check::Html => {
            ResultAction::Flag
        }
    }
}

impl Default for CataloguePolicy {
    fn default() -> Self {
        let mut results = [ResultAction::Off; Check::COUNT];
        for &c in Check::ALL {
            results[c.index()] = default_result(c);
        }
        CataloguePolicy {
            descriptions: DEFAULT_DESCRIPTIONS,
            results,
            inspector: Inspector::default(),
            hold_ms: DEFAULT_HOLD_S * 1000,
            unlisted_calls: UnlistedCalls::Allow,
            other_tools: Vec::new(),
        }
    }
}

impl CataloguePolicy {
    pub fn description_action(&self, check: Check) -> DescriptionAction {
        self.descriptions[check.index()]
    }

    pub fn result_action(&self, check: Check) -> ResultAction {
        self.results[check.index()]
    }

    /// Whether any finding in a definition is read at all (else lists are
    /// not inspected).
    pub fn inspects_definitions(&self) -> bool {
        self.descriptions
            .iter()
            .any(|a| *a != DescriptionAction::Off)
    }

    /// Whether any finding in a result is read at all.
    pub fn inspects_results(&self) -> bool {
        self.results.iter().any(|a| *a != ResultAction::Off)
    }

    /// Whether calls are judged too: a check that removes tools (their calls
    /// are refused) or `unlisted_calls: refuse`.
    pub fn guards_calls(&self) -> bool {
        self.unlisted_calls == UnlistedCalls::Refuse
            || self.descriptions.contains(&DescriptionAction::Remove)
    }

    /// Whether what upstreams list is remembered in shared data: for the
    /// calls ([`Self::guards_calls`]) and for `shadowing` (the other
    /// upstreams' names).
    pub fn remembers(&self) -> bool {
        self.guards_calls() || self.description_action(Check::Shadowing) != DescriptionAction::Off
    }

    /// Whether a tool removed for `checks` (what a list found) stays
    /// removed under this policy: one of them still calls for `remove`.
    pub fn still_removes(&self, checks: &[Check]) -> bool {
        checks
            .iter()
            .any(|c| self.description_action(*c) == DescriptionAction::Remove)
    }

    /// The strongest action the findings on one tool definition call for.
    pub fn tool_action(&self, findings: &[Finding]) -> DescriptionAction {
        findings
            .iter()
            .map(|f| self.description_action(f.check))
            .max_by_key(|a| a.severity())
            .unwrap_or(DescriptionAction::Off)
    }

    /// The strongest action the findings on one result call for.
    pub fn result_verdict(&self, findings: &[Finding]) -> ResultAction {
        findings
            .iter()
            .map(|f| self.result_action(f.check))
            .max_by_key(|a| a.severity())
            .unwrap_or(ResultAction::Off)
    }
}

/// Compile `$.catalogue` (`path`); absent = the defaults above.
pub fn compile(section: Option<&Value>, path: &str, errs: &mut Errors) -> Option<CataloguePolicy> {
    let mut policy = CataloguePolicy::default();
    let Some(v) = section else {
        return Some(policy);
    };
    let before = errs.0.len();
    let mut r = ObjReader::new(v, path, errs)?;
    let descriptions_path = r.field_path("descriptions");
    if let Some(d) = r.get("descriptions") {
        actions(
            d,
            &descriptions_path,
            &mut policy.descriptions,
            |_| true,
            errs,
        );
    }
    let results_path = r.field_path("results");
    if let Some(d) = r.get("results") {
        actions(
            d,
            &results_path,
            &mut policy.results,
            Check::applies_to_results,
            errs,
        );
    }
    let hosts_path = r.field_path("link_hosts");
    let mut hosts = Vec::new();
    if let Some(list) = r.strings("link_hosts", errs) {
        for (i, h) in list.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(p) => hosts.push(p),
                Err(msg) => errs.push(index(&hosts_path, i), format!("{h:?}: {msg}")),
            }
        }
    }
    policy.hold_ms = r
        .uint("hold_s", 1, MAX_HOLD_S, errs)
        .unwrap_or(DEFAULT_HOLD_S)
        .saturating_mul(1000);
    policy.unlisted_calls = r
        .keyword("unlisted_calls", errs)
        .unwrap_or(UnlistedCalls::Allow);
    let others_path = r.field_path("other_tools");
    if let Some(list) = r.strings("other_tools", errs) {
        if list.len() > MAX_OTHER_TOOLS {
            errs.push(
                &others_path,
                format!("{} names; at most {MAX_OTHER_TOOLS}", list.len()),
            );
        }
        for (i, name) in list.iter().enumerate() {
            if let Some(p) = crate::jsonrpc::name_problem(crate::jsonrpc::NameKind::Tool, name) {
                errs.push(index(&others_path, i), format!("tool name {name:?} {p}"));
            }
        }
        policy.other_tools = list;
    }
    r.finish(errs);
    policy.inspector = Inspector::new(hosts);
    (errs.0.len() == before).then_some(policy)
}

/// `"flag"` (every check that applies) or `{"<check>": "<action>", …}`
/// (the others keep their defaults).
fn actions<A: Keyword>(
    v: &Value,
    path: &str,
    table: &mut [A; Check::COUNT],
    applies: fn(Check) -> bool,
    errs: &mut Errors,
) {
    match v {
        Value::String(s) => {
            if let Some(a) = keyword_at::<A>(s, path, errs) {
                for &c in Check::ALL.iter().filter(|&&c| applies(c)) {
                    table[c.index()] = a;
                }
            }
        }
        Value::Object(members) => {
            for (name, action) in members {
                let p = format!("{path}.{name}");
                let Ok(check) = name.parse::<Check>() else {
                    errs.push(
                        p,
                        format!("unknown check; the checks are {}", keyword_list::<Check>()),
                    );
                    continue;
                };
                if !applies(check) {
                    errs.push(p, "applies to tool definitions only, not to results");
                    continue;
                }
                match action {
                    Value::String(s) => {
                        if let Some(a) = keyword_at::<A>(s, &p, errs) {
                            table[check.index()] = a;
                        }
                    }
                    other => errs.push(
                        p,
                        format!(
                            "expected one of {}, found {}",
                            keyword_list::<A>(),
                            type_name(other)
                        ),
                    ),
                }
            }
        }
        other => errs.push(
            path,
            format!(
                "expected one of {} or an object of checks, found {}",
                keyword_list::<A>(),
                type_name(other)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(section: Value) -> Vec<String> {
        let mut errs = Errors::default();
        let out = compile(Some(&section), "$.catalogue", &mut errs);
        assert_eq!(
            out.is_none(),
            !errs.is_empty(),
            "None exactly when there are errors"
        );
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn absent_section_flags_definitions_and_the_precise_result_checks() {
        let mut errs = Errors::default();
        let Some(p) = compile(None, "$.catalogue", &mut errs) else {
            panic!("defaults compile");
        };
        for &c in Check::ALL {
            assert_eq!(p.description_action(c), DescriptionAction::Flag, "{c:?}");
        }
        assert_eq!(
            p.result_action(Check::ModelInstructions),
            ResultAction::Flag
        );
        assert_eq!(p.result_action(Check::EncodedBlob), ResultAction::Off);
        assert_eq!(p.result_action(Check::Shadowing), ResultAction::Off);
    }

    #[test]
    fn per_check_actions_override_defaults_and_a_word_sets_all() {
        let section = json!({
            "descriptions": {"invisible_unicode": "remove", "html": "off"},
            "results": "wrap",
            "link_hosts": ["github.com", "*.githubusercontent.com"]
        });
        let mut errs = Errors::default();
        let Some(p) = compile(Some(&section), "$.catalogue", &mut errs) else {
            panic!("{errs:?}");
        };
        assert_eq!(
            p.description_action(Check::InvisibleUnicode),
            DescriptionAction::Remove
        );
        assert_eq!(p.description_action(Check::Html), DescriptionAction::Off);
        assert_eq!(
            p.description_action(Check::Shadowing),
            DescriptionAction::Flag
        );
        assert_eq!(p.result_action(Check::EncodedBlob), ResultAction::Wrap);
        assert_eq!(
            p.result_action(Check::Shadowing),
            ResultAction::Off,
            "a word never turns on shadowing for results"
        );
        let findings = [
            Finding {
                check: Check::Html,
                pointer: "/description".into(),
                reason: "x",
            },
            Finding {
                check: Check::InvisibleUnicode,
                pointer: "/name".into(),
                reason: "x",
            },
        ];
        assert_eq!(p.tool_action(&findings), DescriptionAction::Remove);
        assert_eq!(p.tool_action(&findings[..1]), DescriptionAction::Off);
        assert_eq!(p.tool_action(&[]), DescriptionAction::Off);
        assert_eq!(p.result_verdict(&findings), ResultAction::Wrap);
    }

    /// The policy carries the defaults without the section, the section's
    /// own settings with it, and its mistakes at their paths.
    #[test]
    fn the_policy_carries_the_defaults_and_the_section() {
        match crate::policy::compile_str(br#"{"version": 1, "rules": []}"#) {
            Ok(p) => {
                assert_eq!(p.catalogue.result_action(Check::Html), ResultAction::Flag);
                assert_eq!(
                    p.catalogue.description_action(Check::Shadowing),
                    DescriptionAction::Flag
                );
            }
            Err(e) => panic!("{e:?}"),
        }
        let good = br#"{"version": 1, "rules": [], "catalogue": {"descriptions": {"model_instructions": "remove"}, "hold_s": 60, "unlisted_calls": "refuse", "other_tools": ["send_email"]}}"#;
        match crate::policy::compile_str(good) {
            Ok(p) => {
                assert!(p.catalogue.guards_calls() && p.catalogue.remembers());
                assert_eq!(p.catalogue.hold_ms, 60_000);
                assert_eq!(p.catalogue.unlisted_calls, UnlistedCalls::Refuse);
                assert_eq!(p.catalogue.other_tools, ["send_email"]);
            }
            Err(e) => panic!("{e:?}"),
        }
        let bad = br#"{"version": 1, "rules": [], "catalogue": {"results": {"tag_characters": "block"}}}"#;
        match crate::policy::compile_str(bad) {
            Ok(_) => panic!("a mistaken section compiled"),
            Err(e) => assert_eq!(
                e.iter().map(ToString::to_string).collect::<Vec<_>>(),
                [
                    "$.catalogue.results.tag_characters: unknown check; the checks are invisible_unicode, model_instructions, secret_reference, exfiltration, encoded_blob, html, shadowing",
                ]
            ),
        }
    }

    #[test]
    fn every_mistake_is_named_by_its_path() {
        let cases: &[(&str, Value, &[&str])] = &[
            (
                "unknown_check_name",
                json!({"descriptions": {"invisible_unicod": "remove"}}),
                &["$.catalogue.descriptions.invisible_unicod: unknown check; the checks are invisible_unicode, model_instructions, secret_reference, exfiltration, encoded_blob, html, shadowing"],
            ),
            (
                "result_action_on_descriptions",
                json!({"descriptions": {"html": "block"}}),
                &["$.catalogue.descriptions.html: \"block\" is not one of remove, flag, off"],
            ),
            (
                "description_action_on_results",
                json!({"results": "remove"}),
                &["$.catalogue.results: \"remove\" is not one of block, wrap, flag, off"],
            ),
            (
                "shadowing_on_results",
                json!({"results": {"shadowing": "flag"}}),
                &["$.catalogue.results.shadowing: applies to tool definitions only, not to results"],
            ),
            (
                "action_not_a_string",
                json!({"results": {"html": true}}),
                &["$.catalogue.results.html: expected one of block, wrap, flag, off, found a boolean"],
            ),
            (
                "actions_not_a_word_or_object",
                json!({"descriptions": ["remove"]}),
                &["$.catalogue.descriptions: expected one of remove, flag, off or an object of checks, found an array"],
            ),
            (
                "bad_host",
                json!({"link_hosts": ["github.com", "https://x.example/", "*."]}),
                &[
                    "$.catalogue.link_hosts[1]: \"https://x.example/\": expected a host name (a.example.com) or *. and a host name",
                    "$.catalogue.link_hosts[2]: \"*.\": expected a host name (a.example.com) or *. and a host name",
                ],
            ),
            ("unknown_field", json!({"result": "flag"}), &["$.catalogue.result: unknown field"]),
            (
                "hold_too_long",
                json!({"hold_s": 2_592_001}),
                &["$.catalogue.hold_s: 2592001 is out of range 1..=2592000"],
            ),
            (
                "unknown_unlisted_calls",
                json!({"unlisted_calls": "deny"}),
                &["$.catalogue.unlisted_calls: \"deny\" is not one of allow, refuse"],
            ),
            (
                "other_tool_not_a_tool_name",
                json!({"other_tools": ["send_email", "a b"]}),
                &["$.catalogue.other_tools[1]: tool name \"a b\" holds U+0020, outside the characters MCP gives tool names (A-Z a-z 0-9 _ - .)"],
            ),
            ("not_an_object", json!("flag"), &["$.catalogue: expected an object, found a string"]),
        ];
        for (name, section, want) in cases {
            assert_eq!(errors_of(section.clone()), *want, "{name}");
        }
    }
}
