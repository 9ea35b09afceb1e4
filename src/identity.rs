//! Who is calling: resolved once per request from what Envoy established.
//! Order (POLICY.md "Identity"): API key, then the jwt_authn payload header,
//! then the mTLS peer's URI SAN, then anonymous.

use crate::json::sha256_hex;
use crate::policy::IdentityConfig;
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
}

impl IdentityError {
    pub fn message(&self) -> String {
        match self {
            IdentityError::Missing => {
                "no identity: send an API key, a JWT or a client certificate".into()
            }
            IdentityError::BadJwtPayload(why) => format!("unreadable JWT payload header: {why}"),
        }
    }
}

pub fn resolve(cfg: &IdentityConfig, inputs: &IdentityInputs) -> Result<Caller, IdentityError> {
    if let Some(token) = inputs.authorization.as_deref().and_then(bearer_token) {
        // An unknown bearer token is not an error here: it may be a JWT that
        // jwt_authn verified and forwarded as a payload header.
        let digest = sha256_hex(token.as_bytes());
        if let Some(key) = cfg.api_keys.iter().find(|k| k.sha256 == digest) {
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
        return Err(IdentityError::Missing);
    }
    Ok(Caller {
        subject: None,
        tenant: None,
        roles: cfg.anonymous_roles.clone(),
        via: Via::Anonymous,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ApiKey, ClaimMap};

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
                "revoked_key_without_other_identity_is_missing",
                IdentityInputs {
                    authorization: Some("Bearer old-key".into()),
                    ..Default::default()
                },
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
            let got = resolve(&cfg(anon), &inputs).map(|c| (c.subject, c.via, c.roles));
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
