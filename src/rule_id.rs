//! Which rule decided: one of the policy's own, or one the filter applies
//! itself. Compared as values, never as strings: a policy cannot take a
//! built-in id (the compiler refuses them), so `Policy("kill-switch")` cannot
//! exist and nothing can pass itself off as a built-in refusal.

use std::fmt;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleId {
    /// A rule of the policy, by its `id`.
    Policy(Rc<str>),
    /// No rule allows the message.
    DefaultDeny,
    /// `initialize`, `ping`, notifications, client responses with no rule on them.
    BaseProtocol,
    /// A batch refused whole because another of its messages was refused.
    Batch,
    /// A resource URI that cannot be normalised (climbs above its root, hides `/`).
    ResourceUri,
    /// `kill_switch` or a `disabled` subject.
    KillSwitch,
    /// A response the filter could not inspect.
    ResponseUnfilterable,
    /// An `Mcp-Session-Id` bound to another identity (or no room to bind it).
    SessionBinding,
    /// `audit.on_failure: closed` while the trail cannot take events.
    AuditUnavailable,
    /// Sensitive data in arguments or results.
    Dlp,
    /// Refusals before any policy: not JSON-RPC, an ambiguous header, ...
    Protocol,
    Identity,
    TooLarge,
    MediaType,
    HttpMethod,
    HeaderMismatch,
    /// The host refused a write the decision requires (a redacted body, a
    /// removed header, the reply itself): refused rather than forwarded unchanged.
    HostWrite,
    /// A rate limit or budget could not be counted (its table is full of
    /// live keys, or shared data failed): refused, never passed uncounted.
    RateLimitUnavailable,
    /// The policy changed while the request's body arrived, and the request
    /// cannot be decided under the new one here (a header edit it needs can
    /// no longer be made, or it lives in another VM): refused, sent again.
    PolicyChanged,
    /// A tool call whose definition differs from its pin (or that has no
    /// pin, or whose definition was not seen) under `pins.mode: enforce`.
    Pin,
    /// A tool call of a tool the catalogue checks removed from a list of its
    /// server (a poisoned definition), or, under `catalogue.unlisted_calls:
    /// refuse`, of a tool no list of its server showed.
    Catalogue,
    /// A tool call whose arguments do not validate against the
    /// `inputSchema` its server declared (or that cannot be checked) under
    /// `schemas.input: enforce`.
    InputSchema,
    /// A tool result whose `structuredContent` does not validate against
    /// the declared `outputSchema` under `schemas.output: enforce`.
    OutputSchema,
    /// A `tools/call` answer larger than its tool's cap
    /// (`limits.result_caps`, `limits.max_result_bytes`).
    ResultCap,
}

impl RuleId {
    /// Every id the filter uses itself, in the order the reference lists them.
    pub const BUILT_IN: [RuleId; 23] = [
        RuleId::DefaultDeny,
        RuleId::BaseProtocol,
        RuleId::Batch,
        RuleId::ResourceUri,
        RuleId::KillSwitch,
        RuleId::ResponseUnfilterable,
        RuleId::SessionBinding,
        RuleId::AuditUnavailable,
        RuleId::Protocol,
        RuleId::Identity,
        RuleId::TooLarge,
        RuleId::MediaType,
        RuleId::HttpMethod,
        RuleId::HeaderMismatch,
        RuleId::Dlp,
        RuleId::HostWrite,
        RuleId::PolicyChanged,
        RuleId::RateLimitUnavailable,
        RuleId::Pin,
        RuleId::Catalogue,
        RuleId::InputSchema,
        RuleId::OutputSchema,
        RuleId::ResultCap,
    ];

    pub fn policy(id: &str) -> Self {
        RuleId::Policy(Rc::from(id))
    }

    /// The id as it appears in replies, logs, headers and audit events.
    pub fn as_str(&self) -> &str {
        match self {
            RuleId::Policy(id) => id,
            RuleId::DefaultDeny => "default-deny",
            RuleId::BaseProtocol => "base-protocol",
            RuleId::Batch => "batch",
            RuleId::ResourceUri => "resource-uri",
            RuleId::KillSwitch => "kill-switch",
            RuleId::ResponseUnfilterable => "response-unfilterable",
            RuleId::SessionBinding => "session-binding",
            RuleId::AuditUnavailable => "audit-unavailable",
            RuleId::Dlp => "dlp",
            RuleId::Protocol => "protocol",
            RuleId::Identity => "identity",
            RuleId::TooLarge => "too-large",
            RuleId::MediaType => "media-type",
            RuleId::HttpMethod => "http-method",
            RuleId::HeaderMismatch => "header-mismatch",
            RuleId::HostWrite => "host-write",
            RuleId::PolicyChanged => "policy-changed",
            RuleId::RateLimitUnavailable => "rate-limit-unavailable",
            RuleId::Pin => "pin",
            // Not "catalogue": policies commonly name their list rule so.
            RuleId::Catalogue => "catalogue-checks",
            RuleId::InputSchema => "input-schema",
            RuleId::OutputSchema => "output-schema",
            RuleId::ResultCap => "result-cap",
        }
    }

    /// True for an id the filter uses itself (a policy may not take it).
    pub fn is_built_in(id: &str) -> bool {
        RuleId::BUILT_IN.iter().any(|r| r.as_str() == id)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_ids_are_distinct_and_recognised() {
        let names: Vec<&str> = RuleId::BUILT_IN.iter().map(RuleId::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        assert!(names.iter().all(|n| RuleId::is_built_in(n)));
        assert!(!RuleId::is_built_in("read-tools"));
        assert_eq!(RuleId::policy("read-tools").as_str(), "read-tools");
    }
}
