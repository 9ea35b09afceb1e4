//! The approval service's configuration file (JSON), read strictly: unknown
//! members are refused and every error names its JSON path.

use super::store::is_lower_hex_digest;
use mcp_firewall::json::digest_from_hex;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    storage: String,
    #[serde(default = "default_listen")]
    listen: String,
    filter_tokens_sha256: Vec<String>,
    approvers: Vec<ApproverEntry>,
    #[serde(default = "default_ttl")]
    default_ttl_ms: u64,
    #[serde(default = "max_ttl")]
    max_ttl_ms: u64,
    #[serde(default = "approved_ttl")]
    approved_ttl_ms: u64,
    #[serde(default = "session_ttl")]
    session_ttl_ms: u64,
    #[serde(default = "yes")]
    cookie_secure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverEntry {
    subject: String,
    token_sha256: String,
    /// The approver's own identities as the firewall names callers (a JWT
    /// `sub`, an API key's subject), when they differ from `subject`: calls
    /// made under any of them are the approver's own.
    #[serde(default)]
    caller_subjects: Vec<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8700".into()
}
fn default_ttl() -> u64 {
    5 * 60 * 1000
}
fn max_ttl() -> u64 {
    24 * 60 * 60 * 1000
}
fn approved_ttl() -> u64 {
    5 * 60 * 1000
}
fn session_ttl() -> u64 {
    8 * 60 * 60 * 1000
}
fn yes() -> bool {
    true
}

/// Where the state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Sqlite(PathBuf),
    Postgres(String),
}

pub struct Approver {
    pub subject: String,
    pub token_sha256: [u8; 32],
    pub caller_subjects: Vec<String>,
}

impl Approver {
    /// Whether a call made by `caller` is this approver's own.
    pub fn is_caller(&self, caller: &str) -> bool {
        is_own_call(caller, &self.subject, &self.caller_subjects)
    }
}

/// Whether a call made by `caller` is `approver`'s own: the same subject,
/// or one of `aliases` (the approver's `caller_subjects`), compared as people
/// write them (surrounding blanks and letter case do not make another
/// person: `Alice@Example.com` is `alice@example.com`).
pub fn is_own_call(caller: &str, approver: &str, aliases: &[String]) -> bool {
    let fold = |s: &str| s.trim().to_lowercase();
    let caller = fold(caller);
    std::iter::once(approver)
        .chain(aliases.iter().map(String::as_str))
        .any(|a| fold(a) == caller)
}

pub struct Config {
    pub storage: Storage,
    pub listen: String,
    pub filter_tokens: Vec<[u8; 32]>,
    pub approvers: Vec<Approver>,
    pub default_ttl_ms: i64,
    pub max_ttl_ms: i64,
    pub approved_ttl_ms: i64,
    pub session_ttl_ms: i64,
    pub cookie_secure: bool,
}

/// Longest TTL of any kind accepted (a year), so sums of times never overflow.
const MAX_ANY_TTL: u64 = 366 * 24 * 60 * 60 * 1000;

impl Config {
    /// Parse and check the file's text; every mistake is reported, each with
    /// its JSON path.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let file: File = serde_json::from_str(text).map_err(|e| vec![format!("$: {e}")])?;
        let mut errors = Vec::new();
        let storage = if let Some(path) = file.storage.strip_prefix("sqlite:") {
            if path.is_empty() {
                errors.push("$.storage: sqlite: needs a file path".to_string());
            }
            Storage::Sqlite(PathBuf::from(path))
        } else if file.storage.starts_with("postgres://")
            || file.storage.starts_with("postgresql://")
        {
            Storage::Postgres(file.storage.clone())
        } else {
            errors.push("$.storage: expected sqlite:PATH or postgres://…".to_string());
            Storage::Sqlite(PathBuf::new())
        };
        let mut digest = |path: String, hex: &str| -> [u8; 32] {
            if !is_lower_hex_digest(hex) {
                errors.push(format!(
                    "{path}: not 64 lower-case hex digits (the SHA-256 of a token)"
                ));
            }
            digest_from_hex(hex.as_bytes()).unwrap_or([0; 32])
        };
        let filter_tokens: Vec<[u8; 32]> = file
            .filter_tokens_sha256
            .iter()
            .enumerate()
            .map(|(i, h)| digest(format!("$.filter_tokens_sha256[{i}]"), h))
            .collect();
        let approvers: Vec<Approver> = file
            .approvers
            .iter()
            .enumerate()
            .map(|(i, a)| Approver {
                subject: a.subject.clone(),
                token_sha256: digest(format!("$.approvers[{i}].token_sha256"), &a.token_sha256),
                caller_subjects: a.caller_subjects.clone(),
            })
            .collect();
        if filter_tokens.is_empty() {
            errors.push(
                "$.filter_tokens_sha256: empty; the filter must authenticate (fail closed)".into(),
            );
        }
        for (i, a) in approvers.iter().enumerate() {
            if a.subject.is_empty() {
                errors.push(format!("$.approvers[{i}].subject: empty"));
            }
            if filter_tokens.contains(&a.token_sha256) {
                errors.push(format!(
                    "$.approvers[{i}].token_sha256: also a filter token; give each its own"
                ));
            }
            if approvers[..i]
                .iter()
                .any(|b| b.token_sha256 == a.token_sha256)
            {
                errors.push(format!("$.approvers[{i}].token_sha256: listed twice"));
            }
        }
        for (name, value) in [
            ("default_ttl_ms", file.default_ttl_ms),
            ("max_ttl_ms", file.max_ttl_ms),
            ("approved_ttl_ms", file.approved_ttl_ms),
            ("session_ttl_ms", file.session_ttl_ms),
        ] {
            if value == 0 || value > MAX_ANY_TTL {
                errors.push(format!("$.{name}: must be between 1 and {MAX_ANY_TTL}"));
            }
        }
        if file.default_ttl_ms > file.max_ttl_ms {
            errors.push("$.default_ttl_ms: above max_ttl_ms".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Config {
            storage,
            listen: file.listen,
            filter_tokens,
            approvers,
            default_ttl_ms: ms(file.default_ttl_ms),
            max_ttl_ms: ms(file.max_ttl_ms),
            approved_ttl_ms: ms(file.approved_ttl_ms),
            session_ttl_ms: ms(file.session_ttl_ms),
            cookie_secure: file.cookie_secure,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_calls_are_found_however_the_subject_is_written_and_by_alias() {
        let aliases = vec!["00u1a2b3c4".to_owned()];
        // (behaviour, caller subject, own?)
        let cases = [
            ("same_subject", "alice@example.com", true),
            ("other_case", "Alice@Example.com", true),
            ("surrounding_blanks", " alice@example.com ", true),
            ("jwt_sub_alias", "00u1a2b3c4", true),
            ("alias_other_case", "00U1A2B3C4", true),
            ("someone_else", "bob@example.com", false),
            ("a_longer_name", "alice@example.com.evil", false),
        ];
        for (name, caller, own) in cases {
            assert_eq!(
                is_own_call(caller, "alice@example.com", &aliases),
                own,
                "{name}"
            );
        }
    }

    use super::*;

    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn reads_a_minimal_file_with_defaults() {
        let text = format!(
            r#"{{"storage":"sqlite:/tmp/a.db","filter_tokens_sha256":["{H1}"],
               "approvers":[{{"subject":"alice","token_sha256":"{H2}"}}]}}"#
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.storage, Storage::Sqlite("/tmp/a.db".into()));
        assert_eq!(c.default_ttl_ms, 300_000);
        assert!(c.cookie_secure);
    }

    #[test]
    fn names_the_path_of_every_mistake() {
        let text = format!(
            r#"{{"storage":"mysql://x","filter_tokens_sha256":[],
               "approvers":[{{"subject":"","token_sha256":"ABC"}},
                            {{"subject":"b","token_sha256":"{H2}"}},
                            {{"subject":"c","token_sha256":"{H2}"}}],
               "approved_ttl_ms":0}}"#
        );
        let errors = Config::parse(&text).err().unwrap().join("\n");
        for path in [
            "$.storage:",
            "$.filter_tokens_sha256:",
            "$.approvers[0].subject:",
            "$.approvers[0].token_sha256: not 64",
            "$.approvers[2].token_sha256: listed twice",
            "$.approved_ttl_ms:",
        ] {
            assert!(errors.contains(path), "{path} missing in {errors}");
        }
    }

    #[test]
    fn refuses_unknown_members() {
        let text = format!(
            r#"{{"storage":"sqlite:a","filter_tokens_sha256":["{H1}"],"approvers":[],"tll_ms":5}}"#
        );
        let errors = Config::parse(&text).err().unwrap().join("\n");
        assert!(errors.contains("unknown field `tll_ms`"), "{errors}");
    }
}
