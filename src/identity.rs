//! Who is calling: resolved once per request from what Envoy established.
//! Order (POLICY.md "Identity"): API key, then the jwt_authn payload header,
//! then the mTLS peer's URI SAN, then anonymous.

use crate::config::{index, Errors, ObjReader};
use crate::json::{is_lower_hex, sha256_hex};
use crate::text_hash::TextHashing;
use base64::Engine;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    ApiKey,
    Jwt,
    Mtls,
    Anonymous,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::ApiKey => "api_key",
            Via::Jwt => "jwt",
            Via::Mtls => "mtls",
            Via::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub sha256: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub subject: String,
    pub roles: String,
    pub tenant: String,
}

/// The compiled `identity` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `None` = JWT identity off. Deliberately off unless configured: the
    /// header is only trustworthy when Envoy strips client copies of it.
    pub jwt_payload_header: Option<String>,
    pub claims: ClaimMap,
    pub api_keys: Vec<ApiKey>,
    pub anonymous_roles: Vec<String>,
    /// Keep the `Authorization` header an API key came in on when the
    /// request goes to the server. Off by default: the caller's credential
    /// for the firewall is not the server's business (and a prompt-injected
    /// server could replay it).
    pub forward_api_key: bool,
    /// The URL of this resource's OAuth protected-resource metadata (RFC
    /// 9728): named in the 401's challenge, and a GET of its path passes
    /// without identity, so an MCP client's OAuth discovery works through
    /// the firewall.
    pub resource_metadata: Option<String>,
    /// The digests of the bearer tokens found to be keys (see [`KeyMemo`]).
    pub key_memo: KeyMemo,
}

impl IdentityConfig {
    /// The path of `resource_metadata` (checked at compile time to start
    /// with `/.well-known/oauth-protected-resource`).
    pub fn metadata_path(&self) -> Option<&str> {
        let url = self.resource_metadata.as_deref()?;
        let rest = url.split_once("://")?.1;
        rest.find('/').map(|i| &rest[i..])
    }
}

/// The request facts identity is derived from, read by the glue on request headers.
#[derive(Debug, Default, Clone)]
pub struct IdentityInputs {
    pub authorization: Option<String>,
    pub jwt_payload: Option<String>,
    pub peer_uri_san: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// Nothing identified the caller and the policy has no anonymous roles: HTTP 401.
    Missing,
    /// The forwarded JWT payload could not be read: HTTP 401 (never guessed at).
    BadJwtPayload(&'static str),
    /// A bearer token that is no API key of the policy, and nothing else
    /// identified the caller: HTTP 401.
    UnknownKey,
    /// An `x-forwarded-client-cert` that is not the one Envoy wrote for this
    /// connection's certificate: HTTP 401 (its SANs are not guessed at).
    BadClientCert(&'static str),
}

impl IdentityError {
    pub fn message(&self) -> String {
        match self {
            IdentityError::Missing => {
                "no identity: send an API key, a JWT or a client certificate".into()
            }
            IdentityError::BadJwtPayload(why) => format!("unreadable JWT payload header: {why}"),
            IdentityError::UnknownKey => {
                "API key not recognised (mistyped, or revoked from the policy)".into()
            }
            IdentityError::BadClientCert(why) => format!("client certificate: {why}"),
        }
    }
}

/// Per VM and per compiled policy: the SHA-256 of each bearer token that
/// matched one of the policy's `api_keys`. A client sends the same key on
/// every request, and hashing it was the largest part of reading the
/// request's head (one SHA-256 block under V8 with cold caches, ~2 µs of a
/// 109-byte call's ~40). It caches a function, so what it returns does not
/// depend on the policy: a revoked key's digest matches no key whatever the
/// memo holds. Only a token that matched is remembered, so the memo holds at
/// most one entry per configured key (two tokens of one digest would break
/// SHA-256) and a stream of made-up tokens cannot grow it; any other token is
/// hashed every time. Tokens are compared byte for byte. It lives in the
/// compiled policy's identity section, so a new policy starts with none and a
/// revoked key's token leaves memory with the policy that knew it; until
/// then it stays in this VM's memory, as each request's copy of its headers
/// already does until overwritten. Never printed: `Debug` shows the count.
/// Interior mutability: one Wasm VM is one thread.
#[derive(Default)]
pub struct KeyMemo {
    digests: std::cell::RefCell<std::collections::HashMap<Box<str>, String, TextHashing>>,
}

impl KeyMemo {
    /// The policy's key this token is, if any (`None` for a token that is no key).
    fn key<'p>(&self, cfg: &'p IdentityConfig, token: &str) -> Option<&'p ApiKey> {
        if cfg.api_keys.is_empty() {
            // Nothing to match: a JWT deployment's bearer token is not hashed.
            return None;
        }
        let matching = |digest: &str| cfg.api_keys.iter().find(|k| k.sha256 == digest);
        // A remembered token's key is decided by its digest as a new one's is.
        let remembered = self
            .digests
            .try_borrow()
            .ok()
            .and_then(|m| m.get(token).map(|digest| matching(digest)));
        if let Some(key) = remembered {
            return key;
        }
        let digest = sha256_hex(token.as_bytes());
        let key = matching(&digest)?;
        if let Ok(mut m) = self.digests.try_borrow_mut() {
            m.insert(token.into(), digest);
        }
        Some(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.digests.borrow().len()
    }
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remembered = self.digests.try_borrow().map_or(0, |m| m.len());
        f.debug_struct("KeyMemo")
            .field("remembered", &remembered)
            .finish()
    }
}

/// A copy is another policy's section: it starts with an empty memo.
impl Clone for KeyMemo {
    fn clone(&self) -> Self {
        KeyMemo::default()
    }
}

/// What the memo holds is a cache, not the configuration.
impl PartialEq for KeyMemo {
    fn eq(&self, _: &KeyMemo) -> bool {
        true
    }
}

impl Eq for KeyMemo {}

pub fn resolve(cfg: &IdentityConfig, inputs: &IdentityInputs) -> Result<Caller, IdentityError> {
    if let Some(token) = inputs.authorization.as_deref().and_then(bearer_token) {
        // An unknown bearer token is not an error here: it may be a JWT that
        // jwt_authn verified and forwarded as a payload header.
        if let Some(key) = cfg.key_memo.key(cfg, token) {
            return Ok(Caller {
                subject: Some(key.subject.clone()),
                tenant: key.tenant.clone(),
                roles: key.roles.clone(),
                via: Via::ApiKey,
            });
        }
    }
    if cfg.jwt_payload_header.is_some() {
        if let Some(payload) = inputs.jwt_payload.as_deref() {
            return caller_from_jwt_payload(cfg, payload);
        }
    }
    if let Some(san) = inputs.peer_uri_san.as_deref().filter(|s| !s.is_empty()) {
        return Ok(Caller {
            subject: Some(san.to_owned()),
            tenant: None,
            roles: Vec::new(),
            via: Via::Mtls,
        });
    }
    if cfg.anonymous_roles.is_empty() {
        // Say which: a key that matches nothing (mistyped, revoked) is not
        // the same mistake as sending none.
        if inputs
            .authorization
            .as_deref()
            .and_then(bearer_token)
            .is_some()
        {
            return Err(IdentityError::UnknownKey);
        }
        return Err(IdentityError::Missing);
    }
    Ok(Caller {
        subject: None,
        tenant: None,
        roles: cfg.anonymous_roles.clone(),
        via: Via::Anonymous,
    })
}

/// The URI SANs of the client certificate, read from the
/// `x-forwarded-client-cert` element Envoy writes with
/// `forward_client_cert_details: SANITIZE_SET` and
/// `set_current_client_cert_details: {uri: true}` (plus the `Hash` it always
/// writes): `Hash=<hex>;URI=<san>;URI=<san>…`, one `URI=` per URI SAN.
/// Envoy's Wasm attribute `connection.uri_san_peer_certificate` holds only the
/// first SAN, so this header is the only place the others can be read.
///
/// The element is trusted only when it is this connection's: its `Hash`
/// equals the certificate digest Envoy reports (`cert_sha256`) and its first
/// URI is the SAN the attribute gave (`first_san`); anything else (a client's
/// own header forwarded by an Envoy configured to forward it, several
/// elements, a value Envoy quoted) is refused, never read as fewer SANs.
/// Envoy writes SANs unquoted, so one holding `;URI=` would read as two: that
/// only ever adds names to decide on.
pub fn uri_sans_from_xfcc(
    xfcc: &str,
    cert_sha256: &str,
    first_san: &str,
) -> Result<Vec<String>, &'static str> {
    let rest = xfcc
        .strip_prefix("Hash=")
        .ok_or("x-forwarded-client-cert does not start with this connection's Hash")?;
    let (hash, uris) = rest.split_once(';').unwrap_or((rest, ""));
    if cert_sha256.is_empty() || !hash.eq_ignore_ascii_case(cert_sha256) {
        return Err("x-forwarded-client-cert names another certificate than this connection's");
    }
    let uris = uris
        .strip_prefix("URI=")
        .ok_or("x-forwarded-client-cert lists no URI SAN")?;
    let sans: Vec<String> = uris.split(";URI=").map(str::to_owned).collect();
    if sans.first().map(String::as_str) != Some(first_san) {
        return Err("x-forwarded-client-cert disagrees with the connection's first URI SAN");
    }
    Ok(sans)
}

/// The subject of a certificate with several URI SANs: the first one that is
/// `disabled` in the policy, if any (so the kill switch refuses it whichever
/// position the disabled SAN holds), else the first.
pub fn subject_san<'a>(sans: &'a [String], disabled: &[String]) -> Option<&'a str> {
    sans.iter()
        .find(|s| disabled.contains(s))
        .or_else(|| sans.first())
        .map(String::as_str)
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn caller_from_jwt_payload(cfg: &IdentityConfig, payload: &str) -> Result<Caller, IdentityError> {
    // jwt_authn's forward_payload_header writes base64url without padding; be
    // lenient about padding only, nothing else.
    let trimmed = payload.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| IdentityError::BadJwtPayload("not base64url"))?;
    let claims: Value = crate::json::parse_strict(&bytes, 32)
        .map_err(|_| IdentityError::BadJwtPayload("not a JSON object"))?;
    if !claims.is_object() {
        return Err(IdentityError::BadJwtPayload("not a JSON object"));
    }
    let subject = claim(&claims, &cfg.claims.subject)
        .and_then(Value::as_str)
        .map(str::to_owned);
    let tenant = claim(&claims, &cfg.claims.tenant)
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Who the caller is is written into a session's binding, the rate
    // limits' keys and the trail with separators between its parts: a
    // control character in it could make two callers one there.
    if [&subject, &tenant]
        .into_iter()
        .flatten()
        .any(|s| s.chars().any(char::is_control))
    {
        return Err(IdentityError::BadJwtPayload(
            "a control character in the subject or tenant claim",
        ));
    }
    let roles = match claim(&claims, &cfg.claims.roles) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Caller {
        subject,
        tenant,
        roles,
        via: Via::Jwt,
    })
}

/// A claim name is a top-level key, or a JSON pointer when it starts with `/`
/// (for nested claims such as Keycloak's `/realm_access/roles`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    }
}

// ---------------------------------------------------------------------------
// The `identity` section
// ---------------------------------------------------------------------------

impl Default for IdentityConfig {
    /// The section's meaning when it is absent: no JWT, no API keys, no anonymous access.
    fn default() -> Self {
        IdentityConfig {
            jwt_payload_header: None,
            claims: ClaimMap {
                subject: "sub".into(),
                roles: "roles".into(),
                tenant: "tenant".into(),
            },
            api_keys: Vec::new(),
            anonymous_roles: Vec::new(),
            forward_api_key: false,
            resource_metadata: None,
            key_memo: KeyMemo::default(),
        }
    }
}

/// Compile the `identity` section found at `path` (`$.identity`); `section` is
/// `None` when it is absent. Mistakes are recorded in `errs`.
/// Headers a client sets itself on an MCP request: a JWT payload read from
/// one of them would be whatever the client wrote, verified by nobody.
const CLIENT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "accept",
    "accept-encoding",
    "user-agent",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
    "last-event-id",
    "x-forwarded-for",
];

pub(crate) fn compile(section: Option<&Value>, path: &str, errs: &mut Errors) -> IdentityConfig {
    let mut out = IdentityConfig::default();
    let Some(v) = section else { return out };
    let Some(mut r) = ObjReader::new(v, path, errs) else {
        return out;
    };
    if let Some(h) = r.string("jwt_payload_header", errs) {
        let lower = h.to_ascii_lowercase();
        if CLIENT_HEADERS.contains(&lower.as_str()) {
            errs.push(
                r.field_path("jwt_payload_header"),
                format!(
                    "{h:?} is a header the client sends itself: name the header jwt_authn \
                     writes (forward_payload_header), which Envoy strips from clients"
                ),
            );
        } else if is_header_name(h) {
            out.jwt_payload_header = Some(lower);
        } else {
            errs.push(
                r.field_path("jwt_payload_header"),
                format!("{h:?} is not a valid HTTP header name"),
            );
        }
    }
    if let Some(c) = r.get("claims") {
        if let Some(mut cr) = ObjReader::new(c, &r.field_path("claims"), errs) {
            for (key, slot) in [
                ("subject", &mut out.claims.subject),
                ("roles", &mut out.claims.roles),
                ("tenant", &mut out.claims.tenant),
            ] {
                if let Some(s) = cr.string(key, errs) {
                    if s.is_empty() {
                        errs.push(cr.field_path(key), "claim name must not be empty");
                    }
                    *slot = s.to_owned();
                }
            }
            cr.finish(errs);
        }
    }
    if let Some(keys) = r.get("api_keys") {
        out.api_keys = compile_api_keys(keys, &r.field_path("api_keys"), errs);
    }
    if let Some(roles) = r.strings("anonymous_roles", errs) {
        out.anonymous_roles = roles;
    }
    if let Some(keep) = r.boolean("forward_api_key", errs) {
        out.forward_api_key = keep;
    }
    if let Some(url) = r.string("resource_metadata", errs) {
        match check_metadata_url(url) {
            Ok(()) => out.resource_metadata = Some(url.to_owned()),
            Err(why) => errs.push(r.field_path("resource_metadata"), why),
        }
    }
    r.finish(errs);
    out
}

/// `resource_metadata` goes into a quoted header parameter and its path is
/// let through without identity: an absolute http(s) URL, no query or
/// fragment, no character a quoted-string cannot hold, and a path under
/// `/.well-known/oauth-protected-resource` (RFC 9728 §3.1), so it can never
/// name the MCP endpoint itself.
fn check_metadata_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an absolute http(s) URL"))?;
    if url
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '\\' | '?' | '#'))
        || !url.is_ascii()
    {
        return Err(format!(
            "{url:?}: an ASCII URL with no query, fragment, space, quote or backslash"
        ));
    }
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let host = rest.find('/').map_or(rest, |i| &rest[..i]);
    if host.is_empty() || !path.starts_with("/.well-known/oauth-protected-resource") {
        return Err(format!(
            "{url:?}: the metadata's path must start with /.well-known/oauth-protected-resource (RFC 9728)"
        ));
    }
    Ok(())
}

fn compile_api_keys(v: &Value, path: &str, errs: &mut Errors) -> Vec<ApiKey> {
    let Value::Array(items) = v else {
        errs.push(path, "expected an array of API key entries");
        return Vec::new();
    };
    let mut out: Vec<ApiKey> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(mut r) = ObjReader::new(item, &p, errs) else {
            continue;
        };
        let sha = r.string("sha256", errs).map(str::to_owned);
        if !r.has("sha256") {
            errs.push(format!("{p}.sha256"), "required field is missing");
        }
        let subject = r.string("subject", errs).map(str::to_owned);
        if !r.has("subject") {
            errs.push(format!("{p}.subject"), "required field is missing");
        }
        let roles = r.strings("roles", errs).unwrap_or_default();
        let tenant = r.string("tenant", errs).map(str::to_owned);
        r.finish(errs);
        if let (Some(sha), Some(subject)) = (sha, subject) {
            if sha.len() != 64 || !is_lower_hex(sha.as_bytes()) {
                errs.push(
                    format!("{p}.sha256"),
                    "expected 64 lower-case hex characters (SHA-256 of the whole token; see `mcp-firewall hash-key`)",
                );
                continue;
            }
            if out.iter().any(|k| k.sha256 == sha) {
                errs.push(format!("{p}.sha256"), "the same key is listed twice");
                continue;
            }
            out.push(ApiKey {
                sha256: sha,
                subject,
                roles,
                tenant,
            });
        }
    }
    out
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(anonymous: &[&str]) -> IdentityConfig {
        IdentityConfig {
            jwt_payload_header: Some("x-jwt-payload".into()),
            claims: ClaimMap {
                subject: "sub".into(),
                roles: "/realm/roles".into(),
                tenant: "tenant".into(),
            },
            api_keys: vec![ApiKey {
                sha256: sha256_hex(b"good-key"),
                subject: "ci-bot".into(),
                roles: vec!["reader".into()],
                tenant: Some("acme".into()),
            }],
            anonymous_roles: anonymous.iter().map(|s| s.to_string()).collect(),
            forward_api_key: false,
            resource_metadata: None,
            key_memo: KeyMemo::default(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    type Expected = Result<(Option<&'static str>, Via, Vec<&'static str>), IdentityError>;

    #[test]
    fn identity_table() {
        let jwt = b64(r#"{"sub":"alice","realm":{"roles":["admin","ops"]},"tenant":"t1"}"#);
        let cases: Vec<(&str, IdentityInputs, &[&str], Expected)> = vec![
            (
                "known_api_key_wins",
                IdentityInputs {
                    authorization: Some("Bearer good-key".into()),
                    jwt_payload: Some(jwt.clone()),
                    ..Default::default()
                },
                &[],
                Ok((Some("ci-bot"), Via::ApiKey, vec!["reader"])),
            ),
            (
                "revoked_key_without_other_identity_is_an_unknown_key",
                IdentityInputs {
                    authorization: Some("Bearer old-key".into()),
                    ..Default::default()
                },
                &[],
                Err(IdentityError::UnknownKey),
            ),
            (
                "no_credential_at_all_is_missing",
                IdentityInputs::default(),
                &[],
                Err(IdentityError::Missing),
            ),
            (
                "unknown_bearer_falls_through_to_jwt",
                IdentityInputs {
                    authorization: Some("Bearer eyJ.x.y".into()),
                    jwt_payload: Some(jwt.clone()),
                    ..Default::default()
                },
                &[],
                Ok((Some("alice"), Via::Jwt, vec!["admin", "ops"])),
            ),
            (
                "bearer_scheme_is_case_insensitive",
                IdentityInputs {
                    authorization: Some("bearer good-key".into()),
                    ..Default::default()
                },
                &[],
                Ok((Some("ci-bot"), Via::ApiKey, vec!["reader"])),
            ),
            (
                "garbled_jwt_payload_is_refused",
                IdentityInputs {
                    jwt_payload: Some("%%%".into()),
                    ..Default::default()
                },
                &["guest"],
                Err(IdentityError::BadJwtPayload("not base64url")),
            ),
            (
                "a_control_character_in_the_subject_is_refused",
                IdentityInputs {
                    jwt_payload: Some(b64(r#"{"sub":"alice\u0000","tenant":"t1"}"#)),
                    ..Default::default()
                },
                &["guest"],
                Err(IdentityError::BadJwtPayload(
                    "a control character in the subject or tenant claim",
                )),
            ),
            (
                "a_control_character_in_the_tenant_is_refused",
                IdentityInputs {
                    jwt_payload: Some(b64(r#"{"sub":"alice","tenant":"\u0000t1"}"#)),
                    ..Default::default()
                },
                &["guest"],
                Err(IdentityError::BadJwtPayload(
                    "a control character in the subject or tenant claim",
                )),
            ),
            (
                "mtls_san_is_subject",
                IdentityInputs {
                    peer_uri_san: Some("spiffe://acme/agent".into()),
                    ..Default::default()
                },
                &[],
                Ok((Some("spiffe://acme/agent"), Via::Mtls, vec![])),
            ),
            (
                "anonymous_roles_apply_when_nothing_else",
                IdentityInputs::default(),
                &["guest"],
                Ok((None, Via::Anonymous, vec!["guest"])),
            ),
            (
                "no_identity_and_no_anonymous_roles_is_missing",
                IdentityInputs::default(),
                &[],
                Err(IdentityError::Missing),
            ),
        ];
        for (name, inputs, anon, want) in cases {
            let c = cfg(anon);
            let first = resolve(&c, &inputs);
            // The second time a key may come from the memo: the same caller.
            assert_eq!(resolve(&c, &inputs), first, "{name}: read again");
            let got = first.map(|c| (c.subject, c.via, c.roles));
            let want = want.map(|(s, v, r)| {
                (
                    s.map(str::to_owned),
                    v,
                    r.into_iter().map(str::to_owned).collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn xfcc_uri_sans_table() {
        let hash = "e6e846d3d36b44e624013d896c91ddf4ea01360d0d5a053f7bea174b89df7ab4";
        let a = "spiffe://acme/a";
        type Want<'a> = Result<Vec<&'a str>, &'a str>;
        let cases: [(&str, String, Want); 7] = [
            ("one_san", format!("Hash={hash};URI={a}"), Ok(vec![a])),
            (
                "several_sans_all_read",
                format!("Hash={hash};URI={a};URI=spiffe://acme/b"),
                Ok(vec![a, "spiffe://acme/b"]),
            ),
            (
                "hash_compared_without_case",
                format!("Hash={};URI={a}", hash.to_ascii_uppercase()),
                Ok(vec![a]),
            ),
            (
                "another_certificates_hash_is_refused",
                format!("Hash={};URI={a}", "0".repeat(64)),
                Err("another certificate"),
            ),
            (
                "a_client_forged_header_is_refused",
                format!("URI={a}"),
                Err("Hash"),
            ),
            (
                "a_first_san_other_than_the_connections_is_refused",
                format!("Hash={hash};URI=spiffe://acme/b;URI={a}"),
                Err("disagrees"),
            ),
            ("no_uri_is_refused", format!("Hash={hash}"), Err("no URI")),
        ];
        for (name, xfcc, want) in cases {
            let got = uri_sans_from_xfcc(&xfcc, hash, a);
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, &w, "{name}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{name}: {g}"),
                _ => panic!("{name}: got {got:?}"),
            }
        }
    }

    #[test]
    fn a_disabled_san_anywhere_is_the_subject() {
        let sans: Vec<String> = ["spiffe://acme/a", "spiffe://acme/b", "spiffe://acme/c"]
            .map(str::to_owned)
            .to_vec();
        let disabled = |d: &[&str]| d.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(subject_san(&sans, &[]), Some("spiffe://acme/a"));
        assert_eq!(
            subject_san(&sans, &disabled(&["spiffe://acme/c"])),
            Some("spiffe://acme/c")
        );
        assert_eq!(subject_san(&[], &disabled(&["x"])), None);
    }

    fn bearer(token: &str) -> IdentityInputs {
        IdentityInputs {
            authorization: Some(format!("Bearer {token}")),
            ..Default::default()
        }
    }

    #[test]
    fn key_memo_remembers_only_tokens_that_are_keys() {
        let c = cfg(&["guest"]);
        for i in 0..100 {
            let got = resolve(&c, &bearer(&format!("made-up-{i}")));
            assert_eq!(got.map(|c| c.via), Ok(Via::Anonymous), "made-up-{i}");
        }
        assert_eq!(c.key_memo.len(), 0, "no unknown token is remembered");
        for _ in 0..3 {
            let got = resolve(&c, &bearer("good-key"));
            assert_eq!(got.map(|c| c.subject), Ok(Some("ci-bot".into())));
        }
        assert_eq!(c.key_memo.len(), 1, "one key, remembered once");
    }

    #[test]
    fn key_memo_never_outlives_a_revoked_key() {
        // The memo caches the token's digest, not the decision: a key gone
        // from the section matches nothing even while its token is remembered.
        let mut c = cfg(&[]);
        assert_eq!(
            resolve(&c, &bearer("good-key")).map(|c| c.via),
            Ok(Via::ApiKey)
        );
        assert_eq!(c.key_memo.len(), 1);
        c.api_keys[0].sha256 = sha256_hex(b"another-key");
        assert_eq!(
            resolve(&c, &bearer("good-key")),
            Err(IdentityError::UnknownKey)
        );
        // A copy (another policy's section) starts with an empty memo.
        assert_eq!(c.clone().key_memo.len(), 0);
    }

    #[test]
    fn key_memo_never_prints_a_token() {
        let c = cfg(&[]);
        assert!(resolve(&c, &bearer("good-key")).is_ok());
        let printed = format!("{c:?}");
        assert!(!printed.contains("good-key"), "{printed}");
        assert!(printed.contains("KeyMemo { remembered: 1 }"), "{printed}");
    }

    #[test]
    fn jwt_header_is_ignored_when_not_configured() {
        let mut c = cfg(&[]);
        c.jwt_payload_header = None;
        let inputs = IdentityInputs {
            jwt_payload: Some(b64(r#"{"sub":"mallory"}"#)),
            ..Default::default()
        };
        assert_eq!(resolve(&c, &inputs), Err(IdentityError::Missing));
    }
}
