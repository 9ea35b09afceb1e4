//! The `audit` section of the policy: where events go and how hard we try.

use crate::config::{keywords, Errors, ObjReader};
use serde_json::Value;

/// What happens to MCP traffic while audit events cannot be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Keep serving; events beyond `max_buffered` are dropped and counted.
    Open,
    /// Refuse new requests while the buffer is full, so nothing runs unaudited.
    Closed,
}

keywords!(OnFailure {
    Open => "open",
    Closed => "closed",
});

/// How tool-call arguments appear in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgumentsMode {
    /// `request.args_sha256` only (the default).
    Hash,
    /// `args_sha256` plus `request.arguments` as DLP redacted them; never the raw values.
    Redacted,
    /// Neither: `args_sha256` is null. For low-entropy arguments whose hash could be guessed.
    Omit,
}

keywords!(ArgumentsMode {
    Hash => "hash",
    Redacted => "redacted",
    Omit => "omit",
});

/// A compiled `audit` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Envoy cluster of the collector (the callout target).
    pub cluster: String,
    /// Request path of the POST.
    pub path: String,
    /// `:authority` of the POST; defaults to the cluster name.
    pub authority: String,
    /// Events per POST at most.
    pub max_batch: usize,
    /// How long the oldest waiting event may wait before a partial batch is sent.
    pub flush_ms: u64,
    /// Events held per worker VM (waiting + in flight) before new ones are dropped.
    pub max_buffered: usize,
    pub on_failure: OnFailure,
    pub arguments: ArgumentsMode,
    /// Callout timeout; Envoy answers 504 when it expires. (Added field.)
    pub timeout_ms: u64,
    /// Body bytes per POST at most, kept below the collector's own limit.
    /// (Added field.)
    pub max_batch_bytes: usize,
    /// Bytes held per worker VM (waiting + in flight) before new events are
    /// dropped, whatever their number. (Added field.)
    pub max_buffered_bytes: usize,
}

pub const DEFAULT_PATH: &str = "/v1/audit";
pub const DEFAULT_MAX_BATCH: u64 = 100;
pub const DEFAULT_FLUSH_MS: u64 = 200;
pub const DEFAULT_MAX_BUFFERED: u64 = 10_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// 1 MiB: well below `mcp-firewall collector`'s default limit (32 MiB) and
/// common proxy limits, and many events per POST at ~1 KB each.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 1 << 20;
/// 16 MiB per worker VM: the ~10,000 events of `max_buffered` at ~1.5 KB.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 16 << 20;

// Bounds: a batch above 10k lines risks the collector's body limit and Envoy's
// callout buffer; a buffer above 1M events (~1 GB at 1 KB each) would exhaust a
// worker VM's memory long before it helped.
const MAX_BATCH_BOUND: u64 = 10_000;
const MAX_BUFFERED_BOUND: u64 = 1_000_000;
const FLUSH_MS_BOUNDS: (u64, u64) = (1, 60_000);
const TIMEOUT_MS_BOUNDS: (u64, u64) = (10, 60_000);
// A batch must hold at least one clipped event; above 64 MiB Envoy's callout
// buffers and the collector are the limit, not us.
const MAX_BATCH_BYTES_BOUNDS: (u64, u64) = (4_096, 64 << 20);
// The buffer must hold a batch; 1 GiB is far beyond a worker VM's memory.
const MAX_BUFFERED_BYTES_BOUNDS: (u64, u64) = (4_096, 1 << 30);

/// Compile the `audit` section found at `path` (usually `$.audit`).
///
/// `Some(None)`: the section is absent, audit is off. `Some(Some(_))`: audit on.
/// `None`: at least one error was recorded in `errs`.
pub fn compile(
    section: Option<&Value>,
    path: &str,
    errs: &mut Errors,
) -> Option<Option<AuditConfig>> {
    let Some(section) = section else {
        return Some(None);
    };
    let before = errs.0.len();
    let mut r = ObjReader::new(section, path, errs)?;

    let (cluster, req_path, authority) = crate::config::callout_target(&mut r, DEFAULT_PATH, errs);
    let max_batch = r
        .uint("max_batch", 1, MAX_BATCH_BOUND, errs)
        .unwrap_or(DEFAULT_MAX_BATCH);
    let flush_ms = r
        .uint("flush_ms", FLUSH_MS_BOUNDS.0, FLUSH_MS_BOUNDS.1, errs)
        .unwrap_or(DEFAULT_FLUSH_MS);
    let max_buffered = r
        .uint("max_buffered", 1, MAX_BUFFERED_BOUND, errs)
        .unwrap_or(DEFAULT_MAX_BUFFERED);
    if max_buffered < max_batch {
        errs.push(
            r.field_path("max_buffered"),
            format!("{max_buffered} is smaller than max_batch ({max_batch}): a full batch could never form"),
        );
    }
    let on_failure = r.keyword("on_failure", errs).unwrap_or(OnFailure::Open);
    let arguments = r.keyword("arguments", errs).unwrap_or(ArgumentsMode::Hash);
    let timeout_ms = r
        .uint("timeout_ms", TIMEOUT_MS_BOUNDS.0, TIMEOUT_MS_BOUNDS.1, errs)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    let max_batch_bytes = r
        .uint(
            "max_batch_bytes",
            MAX_BATCH_BYTES_BOUNDS.0,
            MAX_BATCH_BYTES_BOUNDS.1,
            errs,
        )
        .unwrap_or(DEFAULT_MAX_BATCH_BYTES);
    let max_buffered_bytes = r
        .uint(
            "max_buffered_bytes",
            MAX_BUFFERED_BYTES_BOUNDS.0,
            MAX_BUFFERED_BYTES_BOUNDS.1,
            errs,
        )
        .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES);
    if max_buffered_bytes < max_batch_bytes {
        errs.push(
            r.field_path("max_buffered_bytes"),
            format!("{max_buffered_bytes} is smaller than max_batch_bytes ({max_batch_bytes}): a full batch could never form"),
        );
    }
    r.finish(errs);

    if errs.0.len() > before {
        return None;
    }
    let cluster = cluster?;
    Some(Some(AuditConfig {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path: req_path,
        // Both bounded above by config limits far below usize::MAX on wasm32.
        max_batch: usize::try_from(max_batch).ok()?,
        flush_ms,
        max_buffered: usize::try_from(max_buffered).ok()?,
        on_failure,
        arguments,
        timeout_ms,
        max_batch_bytes: usize::try_from(max_batch_bytes).ok()?,
        max_buffered_bytes: usize::try_from(max_buffered_bytes).ok()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(v: Value) -> Result<Option<AuditConfig>, Vec<String>> {
        let mut errs = Errors::default();
        match compile(Some(&v), "$.audit", &mut errs) {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(errs.0.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn absent_section_turns_audit_off() {
        let mut errs = Errors::default();
        assert_eq!(compile(None, "$.audit", &mut errs), Some(None));
        assert!(errs.is_empty());
    }

    #[test]
    fn minimal_section_takes_documented_defaults() {
        let got = compiled(json!({"cluster": "audit_collector"}));
        let want = AuditConfig {
            cluster: "audit_collector".into(),
            path: "/v1/audit".into(),
            authority: "audit_collector".into(),
            max_batch: 100,
            flush_ms: 200,
            max_buffered: 10_000,
            on_failure: OnFailure::Open,
            arguments: ArgumentsMode::Hash,
            timeout_ms: 5_000,
            max_batch_bytes: 1 << 20,
            max_buffered_bytes: 16 << 20,
        };
        assert_eq!(got, Ok(Some(want)));
    }

    #[test]
    fn policy_md_example_compiles_as_written() {
        let got = compiled(
            json!({"cluster": "audit_collector", "path": "/v1/audit", "authority": "audit",
            "max_batch": 100, "flush_ms": 200, "max_buffered": 10000, "on_failure": "open",
            "arguments": "hash"}),
        );
        assert!(
            matches!(got, Ok(Some(ref c)) if c.authority == "audit"),
            "{got:?}"
        );
    }

    #[test]
    fn every_choice_is_accepted() {
        let table = [
            (
                "closed",
                "redacted",
                OnFailure::Closed,
                ArgumentsMode::Redacted,
            ),
            ("open", "omit", OnFailure::Open, ArgumentsMode::Omit),
        ];
        for (on_failure, arguments, want_f, want_a) in table {
            let got =
                compiled(json!({"cluster": "c", "on_failure": on_failure, "arguments": arguments}));
            let modes = got.map(|c| c.map(|c| (c.on_failure, c.arguments)));
            assert_eq!(
                modes,
                Ok(Some((want_f, want_a))),
                "{on_failure}/{arguments}"
            );
        }
    }

    #[test]
    fn bad_sections_name_the_json_path() {
        let table: &[(&str, Value, &str)] = &[
            ("not_an_object", json!("audit"), "$.audit: expected an object, found a string"),
            ("missing_cluster", json!({}), "$.audit.cluster: required field is missing"),
            ("empty_cluster", json!({"cluster": ""}), "$.audit.cluster: must not be empty"),
            (
                "cluster_with_space",
                json!({"cluster": "a b"}),
                "$.audit.cluster: must not contain whitespace or control characters",
            ),
            ("relative_path", json!({"cluster": "c", "path": "v1"}), "$.audit.path: must start with \"/\""),
            (
                "authority_with_newline",
                json!({"cluster": "c", "authority": "a\r\nx: y"}),
                "$.audit.authority: must not contain whitespace or control characters",
            ),
            ("zero_batch", json!({"cluster": "c", "max_batch": 0}), "$.audit.max_batch: 0 is out of range 1..=10000"),
            (
                "huge_buffer",
                json!({"cluster": "c", "max_buffered": 2_000_000}),
                "$.audit.max_buffered: 2000000 is out of range 1..=1000000",
            ),
            (
                "buffer_smaller_than_batch",
                json!({"cluster": "c", "max_batch": 50, "max_buffered": 10}),
                "$.audit.max_buffered: 10 is smaller than max_batch (50): a full batch could never form",
            ),
            ("zero_flush", json!({"cluster": "c", "flush_ms": 0}), "$.audit.flush_ms: 0 is out of range 1..=60000"),
            (
                "batch_bytes_below_one_event",
                json!({"cluster": "c", "max_batch_bytes": 100}),
                "$.audit.max_batch_bytes: 100 is out of range 4096..=67108864",
            ),
            (
                "buffer_bytes_over_a_gibibyte",
                json!({"cluster": "c", "max_buffered_bytes": 2_000_000_000_u64}),
                "$.audit.max_buffered_bytes: 2000000000 is out of range 4096..=1073741824",
            ),
            (
                "buffer_bytes_smaller_than_batch_bytes",
                json!({"cluster": "c", "max_batch_bytes": 65536, "max_buffered_bytes": 8192}),
                "$.audit.max_buffered_bytes: 8192 is smaller than max_batch_bytes (65536): a full batch could never form",
            ),
            (
                "unknown_on_failure",
                json!({"cluster": "c", "on_failure": "ignore"}),
                "$.audit.on_failure: \"ignore\" is not one of open, closed",
            ),
            (
                "unknown_arguments_mode",
                json!({"cluster": "c", "arguments": "raw"}),
                "$.audit.arguments: \"raw\" is not one of hash, redacted, omit",
            ),
            ("unknown_field", json!({"cluster": "c", "batch": 5}), "$.audit.batch: unknown field"),
            (
                "string_number",
                json!({"cluster": "c", "timeout_ms": "5s"}),
                "$.audit.timeout_ms: expected a whole number, found a string",
            ),
        ];
        for (name, section, want) in table {
            let got = compiled(section.clone());
            assert_eq!(got, Err(vec![(*want).to_owned()]), "{name}");
        }
    }

    #[test]
    fn reports_every_error_at_once() {
        let got = compiled(json!({"max_batch": 0, "on_failure": "x", "extra": 1}));
        assert_eq!(got.map_err(|e| e.len()), Err(4));
    }
}
