//! Rate limit descriptors for Envoy's global rate limit filter
//! (`envoy.filters.http.ratelimit`): limits that hold across every Envoy of a
//! deployment are counted by the standard rate limit service (envoyproxy/ratelimit
//! on Redis), not here. The filter only tells Envoy who called what, in request
//! headers the rate limit filter's `request_headers` actions read
//! (`envoy/global-ratelimit.yaml`, docs/global-rate-limits.md):
//!
//! | header | descriptor entry | set when |
//! |---|---|---|
//! | `x-mcp-firewall-ratelimit-subject` | the caller's subject | the caller has one (not anonymous) |
//! | `x-mcp-firewall-ratelimit-tenant` | the caller's tenant | the caller has one |
//! | `x-mcp-firewall-ratelimit-method` | the JSON-RPC method | a request or notification (not a client's answer) |
//! | `x-mcp-firewall-ratelimit-tool` | the tool name | a `tools/call` |
//!
//! Why headers: Envoy's Wasm host has no way to write dynamic metadata (its
//! `set_property` writes filter state under `wasm.`, which no rate limit action
//! reads), while the request headers stay writable for as long as the filter
//! holds them: it holds them until the body is decided (the headers callback
//! pauses, `allow_on_headers_stop_iteration`), so the filters after it, the
//! rate limit filter included, see the headers only once these are set.
//!
//! A caller never chooses its own descriptor: every copy a client sent is
//! removed on the request headers, whatever the request turns out to be, and
//! the values are set only on a body decided to go on. The route removes them
//! before the upstream (`request_headers_to_remove`).

use crate::identity::Caller;
use crate::json::sha256_hex;

/// What every descriptor header's name starts with.
pub const PREFIX: &str = "x-mcp-firewall-ratelimit-";
pub const SUBJECT: &str = "x-mcp-firewall-ratelimit-subject";
pub const TENANT: &str = "x-mcp-firewall-ratelimit-tenant";
pub const METHOD: &str = "x-mcp-firewall-ratelimit-method";
pub const TOOL: &str = "x-mcp-firewall-ratelimit-tool";
pub const HEADERS: [&str; 4] = [SUBJECT, TENANT, METHOD, TOOL];

/// A value longer than this many bytes is exported hashed.
pub const MAX_PLAIN_LEN: usize = 128;
/// What a hashed value starts with: `sha256:` and 64 lower-case hex digits.
pub const HASHED_PREFIX: &str = "sha256:";

/// The header value for one descriptor entry: always a valid header value,
/// at most 128 bytes, the same for the same text on every Envoy.
///
/// - the text itself when it is 1 to 128 bytes of printable ASCII without a
///   space (`!` to `~`) and does not start with `sha256:` (every tool name,
///   almost every method, subject and tenant: what a human writes in the
///   rate limit service's config);
/// - otherwise `sha256:` and the lower-case hex SHA-256 of its UTF-8 bytes
///   (`printf %s TEXT | sha256sum` gives the digest). A text that starts
///   with `sha256:` is hashed too, so no plain value can pass for another
///   text's hash.
pub fn encode(raw: &str) -> String {
    let plain = (1..=MAX_PLAIN_LEN).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_graphic())
        && !raw.starts_with(HASHED_PREFIX);
    match plain {
        true => raw.to_owned(),
        false => format!("{HASHED_PREFIX}{}", sha256_hex(raw.as_bytes())),
    }
}

/// The descriptor entries of one forwarded request, encoded (`None` = the
/// header is not set: Envoy's rate limit filter then skips every descriptor
/// that needs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptors {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub method: Option<String>,
    pub tool: Option<String>,
}

impl Descriptors {
    /// `method`: the JSON-RPC method of the one message the body carries
    /// (`None` for a client's answer); `target`: what it names.
    pub fn of(caller: &Caller, method: Option<&str>, target: Option<&str>) -> Self {
        Descriptors {
            subject: caller.subject.as_deref().map(encode),
            tenant: caller.tenant.as_deref().map(encode),
            method: method.map(encode),
            tool: target.filter(|_| method == Some("tools/call")).map(encode),
        }
    }

    /// Each header with its value (`None` = left absent).
    pub fn headers(&self) -> [(&'static str, Option<&str>); 4] {
        [
            (SUBJECT, self.subject.as_deref()),
            (TENANT, self.tenant.as_deref()),
            (METHOD, self.method.as_deref()),
            (TOOL, self.tool.as_deref()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;

    #[test]
    fn encoding_keeps_short_printable_text_and_hashes_the_rest() {
        let long = "a".repeat(MAX_PLAIN_LEN + 1);
        let max = "a".repeat(MAX_PLAIN_LEN);
        let hash = |s: &str| format!("sha256:{}", sha256_hex(s.as_bytes()));
        let cases: [(&str, &str, String); 11] = [
            ("tool_name_is_itself", "get-sum", "get-sum".into()),
            ("method_is_itself", "tools/call", "tools/call".into()),
            (
                "spiffe_subject_is_itself",
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/a/sa/b".into(),
            ),
            ("at_the_length_limit_is_itself", &max, max.clone()),
            ("past_the_length_limit_is_hashed", &long, hash(&long)),
            ("empty_is_hashed", "", hash("")),
            ("a_space_is_hashed", "Jane Doe", hash("Jane Doe")),
            ("non_ascii_is_hashed", "jürgen", hash("jürgen")),
            (
                "control_characters_are_hashed",
                "a\r\nx-evil: 1",
                hash("a\r\nx-evil: 1"),
            ),
            (
                "a_lookalike_of_the_hash_form_is_hashed",
                "sha256:abc",
                hash("sha256:abc"),
            ),
            ("tab_is_hashed", "a\tb", hash("a\tb")),
        ];
        for (name, raw, want) in cases {
            let got = encode(raw);
            assert_eq!(got, want, "{name}");
            assert!(got.len() <= MAX_PLAIN_LEN, "{name}: bounded");
            assert!(
                got.bytes().all(|b| b.is_ascii_graphic()),
                "{name}: a header value"
            );
        }
    }

    #[test]
    fn the_tool_is_exported_for_tool_calls_only() {
        let caller = Caller {
            subject: Some("alice".into()),
            tenant: Some("acme".into()),
            roles: vec![],
            via: Via::ApiKey,
        };
        let call = Descriptors::of(&caller, Some("tools/call"), Some("echo"));
        assert_eq!(
            call.headers(),
            [
                (SUBJECT, Some("alice")),
                (TENANT, Some("acme")),
                (METHOD, Some("tools/call")),
                (TOOL, Some("echo")),
            ]
        );
        let prompt = Descriptors::of(&caller, Some("prompts/get"), Some("echo"));
        assert_eq!(prompt.tool, None);
        let answer = Descriptors::of(&caller, None, None);
        assert_eq!((answer.method, answer.tool), (None, None));
        let nobody = Caller {
            subject: None,
            tenant: None,
            roles: vec![],
            via: Via::Anonymous,
        };
        let anon = Descriptors::of(&nobody, Some("tools/list"), None);
        assert_eq!((anon.subject, anon.tenant), (None, None));
    }
}
