//! DLP tests; compiled only as `#[cfg(test)] mod tests;` in dlp/mod.rs.
#![allow(clippy::panic)] // test code: a failed setup should stop the test loudly

use super::*;
use serde_json::json;

fn scanner() -> Scanner {
    match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn kinds(text: &str) -> Vec<String> {
    scanner()
        .scan_text(text)
        .into_iter()
        .map(|m| m.kind)
        .collect()
}

fn compile_json(v: serde_json::Value) -> (Option<DlpPolicy>, Vec<ConfigErrorView>) {
    let mut errs = Errors::default();
    let p = compile(Some(&v), "$.dlp", &mut errs);
    (
        p,
        errs.0
            .into_iter()
            .map(|e| ConfigErrorView {
                path: e.path,
                msg: e.msg,
            })
            .collect(),
    )
}

#[derive(Debug)]
struct ConfigErrorView {
    path: String,
    msg: String,
}

#[test]
fn builtin_detectors_compile() {
    assert!(Scanner::builtin(true, true).is_ok());
    assert!(Scanner::builtin(false, true).is_ok());
}

#[test]
fn finds_secrets_table() {
    // (behaviour, text, expected kind) — values generated for this test.
    let cases = [
        ("finds_github_pat_in_url", "https://x:ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ@github.com/o/r.git", "github_pat"),
        ("finds_aws_key_in_prose", "my key is AKIAQ7LMNP3RSTUV2WXY ok", "aws_access_key"),
        ("finds_stripe_live_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc9Zq", "stripe_key"),
        ("finds_slack_bot_token", "xoxb-4718290365142-8302957164823-Qw3Er5Ty7Ui9Op1As3Df5Gh7", "slack_token"),
        ("finds_db_url_password", "postgres://app:Zx9Qw3Er7Ty1@db.internal:5432/main", "db_url_with_password"),
        ("finds_password_assignment", "DB_PASSWORD='Wq8#mZp2!vLr'", "password"),
        ("finds_generic_api_key", "api_key: \"Jd8Kq2Lm4Np6Rs8Tu0Vw2Xy4Za6Bc8De\"", "generic_secret"),
        ("finds_private_key_block", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----", "private_key"),
        ("finds_curl_user_password", "curl -u deploy:Hq7!pR2zLm9 https://api.example.net", "basic_auth_credentials"),
        ("finds_bearer_header", "Authorization: Bearer 9fJ2kL7qR4tV8xZ1cB5nM3wE6yU0iO2p", "auth_header_token"),
    ];
    let s = scanner();
    for (name, text, want) in cases {
        let got: Vec<String> = s.scan_text(text).into_iter().map(|m| m.kind).collect();
        assert!(got.iter().any(|k| k == want), "{name}: got {got:?}");
    }
}

#[test]
fn finds_jwt_with_decodable_header() {
    let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}
    let text = format!("token={header}.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU");
    assert_eq!(kinds(&text), vec!["jwt"]);
}

#[test]
fn ignores_placeholders_table() {
    for (name, text) in [
        ("ignores_placeholder_key", "AKIAXXXXXXXXXXXXXXXX"),
        (
            "ignores_documentation_example",
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "ignores_elided_key",
            "OPENAI_API_KEY=sk-...your key here...",
        ),
        ("ignores_env_template", "password: ${DB_PASSWORD}"),
        ("ignores_angle_placeholder", "Authorization: Bearer <token>"),
        ("ignores_masked_value", "password=********"),
        (
            "ignores_templated_url",
            "postgres://${PGUSER}:${PGPASSWORD}@${PGHOST}:5432/db",
        ),
        (
            "ignores_sequential_filler",
            "const SNYK_TOKEN = \"12345678-ABCD-ABCD-ABCD-1234567890AB\"",
        ),
        ("ignores_jwt_with_broken_header", "eyJBB.eyJCC.eyJDDDD"),
        (
            "ignores_uuid_trace_id",
            "trace-id: 5cda609e-c35c-4de2-bdb3-86fd57019d15",
        ),
        (
            "ignores_git_sha",
            "commit 085e1888989c9fdbf2c6b0fe934beea2c34f60e9",
        ),
        (
            "ignores_key_named_id",
            "credentialsId: 'ff083f76-7804-4ef1-80e4-fe975bb9141b'",
        ),
        (
            "ignores_prose",
            "The password must be at least 12 characters long.",
        ),
    ] {
        assert_eq!(kinds(text), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn personal_data_table() {
    for (name, text, want) in [
        (
            "finds_visa_with_dashes",
            "card 4539-1488-0343-6467",
            vec!["credit_card"],
        ),
        (
            "card_failing_luhn_is_clean",
            "card 4539-1488-0343-6468",
            vec![],
        ),
        ("imei_is_not_a_card", "IMEI: 496922278183294", vec![]),
        (
            "finds_iban_grouped",
            "GB29 NWBK 6016 1331 9268 19",
            vec!["iban"],
        ),
        (
            "iban_failing_mod97_is_clean",
            "GB29 NWBK 6016 1331 9268 18",
            vec![],
        ),
        ("finds_ssn", "SSN 219-09-9999", vec!["ssn"]),
        ("ssn_area_666_is_clean", "SSN 666-09-9999", vec![]),
        (
            "finds_international_phone",
            "call +44 20 7946 0958",
            vec!["phone"],
        ),
        ("finds_nanp_phone", "(212) 555-0147", vec!["phone"]),
        (
            "timestamp_is_not_a_phone",
            "{\"created\": 1736421073}",
            vec![],
        ),
        (
            "finds_email",
            "write to ana.lima@correio.com.br",
            vec!["email"],
        ),
        (
            "url_userinfo_is_not_email",
            "https://user:Sx8!kq@host.example.com",
            vec!["basic_auth_url"],
        ),
        (
            "git_remote_is_not_email",
            "git@github.com:acme/api.git",
            vec![],
        ),
    ] {
        assert_eq!(kinds(text), want, "{name}");
    }
}

#[test]
fn matches_are_sorted_and_disjoint() {
    let text = "a@b.example.org ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ 4539-1488-0343-6467 x@y.example.com";
    let m = scanner().scan_text(text);
    assert_eq!(m.len(), 4);
    for w in m.windows(2) {
        assert!(w[0].end <= w[1].start);
    }
}

#[test]
fn scan_value_reports_keys_and_nested_paths() {
    let v = json!({
        "query": "mail me at jo.smith@mailhost.example.net",
        "items": [{"key": "ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ"}],
        "a/b": {"password": "Wq8#mZp2!vLr"},
        "AKIAQ7LMNP3RSTUV2WXY": 1
    });
    let mut f: Vec<(String, String)> = scanner()
        .scan_value(&v)
        .into_iter()
        .map(|f| (f.kind, f.path))
        .collect();
    f.sort();
    assert_eq!(
        f,
        vec![
            // A name is redacted in the path too: the path reaches the
            // audit trail and the refusal.
            ("aws_access_key".into(), "/[REDACTED:aws_access_key]".into()),
            ("email".into(), "/query".into()),
            ("github_pat".into(), "/items/0/key".into()),
            ("password".into(), "/a~1b/password".into()),
        ]
    );
}

#[test]
fn a_secret_name_is_redacted_in_every_path_below_it() {
    let v = json!({"x": {"AKIAQ7LMNP3RSTUV2WXY": {"note": "ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ"}}});
    let want = vec![
        (
            "aws_access_key".to_owned(),
            "/x/[REDACTED:aws_access_key]".to_owned(),
        ),
        (
            "github_pat".to_owned(),
            "/x/[REDACTED:aws_access_key]/note".to_owned(),
        ),
    ];
    let sorted = |mut f: KindPaths| {
        f.sort();
        f
    };
    assert_eq!(
        sorted(findings_of(&scanner().scan_value(&v))),
        want,
        "scanned"
    );
    let mut redacted = v.clone();
    assert_eq!(
        sorted(findings_of(&scanner().redact_value(&mut redacted))),
        want,
        "redacted"
    );
    assert!(!redacted.to_string().contains("AKIA"), "{redacted}");
}

#[test]
fn redacts_email_keeps_json_valid() {
    let mut v = json!({"to": "Jo <jo.smith@mailhost.example.net>", "n": 3});
    let found = scanner().redact_value(&mut v);
    assert_eq!(found.len(), 1);
    assert_eq!(v, json!({"to": "Jo <[REDACTED:email]>", "n": 3}));
    assert!(serde_json::from_str::<serde_json::Value>(&v.to_string()).is_ok());
}

#[test]
fn redacts_secret_object_key() {
    let mut v = json!({"AKIAQ7LMNP3RSTUV2WXY": "x", "[REDACTED:aws_access_key]": "y"});
    scanner().redact_value(&mut v);
    let keys: Vec<&String> = v
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| !k.contains("AKIAQ7")));
}

#[test]
fn redacts_tool_result_parts() {
    let mut result = json!({
        "content": [
            {"type": "text", "text": "key ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "ssn 219-09-9999"}},
            {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}
        ],
        "structuredContent": {"owner": {"email": "jo.smith@mailhost.example.net"}},
        "isError": false
    });
    let found = redact_result(&scanner(), &mut result);
    let mut paths: Vec<String> = found.into_iter().map(|f| f.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "/content/0/text",
            "/content/1/resource/text",
            "/structuredContent/owner/email"
        ]
    );
    assert_eq!(
        result.pointer("/content/0/text"),
        Some(&json!("key [REDACTED:github_pat]"))
    );
    assert!(scan_result(&scanner(), &result).is_empty());
}

#[test]
fn long_string_is_scanned_end_to_end() {
    // A secret after 3 MiB of filler is still found: nothing is skipped.
    let mut text = "lorem ipsum token refresh ".repeat(3 * 1024 * 1024 / 26);
    text.push_str(" ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ");
    assert_eq!(kinds(&text), vec!["github_pat"]);
}

#[test]
fn default_policy_when_section_absent() {
    let mut errs = Errors::default();
    let p = compile(None, "$.dlp", &mut errs);
    assert!(errs.is_empty());
    let p = p.map(|p| (p.requests, p.responses));
    assert_eq!(p, Some((Action::Block, Action::Redact)));
}

#[test]
fn custom_detector_finds_its_pattern() {
    let (p, errs) = compile_json(json!({
        "requests": "flag",
        "custom": [{"id": "acme-employee", "pattern": "ACME-[0-9]{8}", "label": "pii"}],
        "exempt_tools": ["debug_*"]
    }));
    assert!(errs.is_empty(), "{errs:?}");
    let Some(p) = p else { panic!("no policy") };
    assert_eq!(p.requests, Action::Flag);
    assert!(p.is_exempt("debug_dump") && !p.is_exempt("get_user"));
    let m = p.scanner.scan_text("employee ACME-12345678 joined");
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].kind.as_str(), m[0].label),
        ("acme-employee", Label::Pii)
    );
}

#[test]
fn config_errors_table() {
    for (name, section, path, msg_part) in [
        (
            "invalid_custom_pattern_names_json_path",
            json!({"custom": [{"id": "a", "pattern": "ACME-[0-9", "label": "pii"}]}),
            "$.dlp.custom[0].pattern",
            "invalid regular expression",
        ),
        (
            "empty_matching_pattern_is_refused",
            json!({"custom": [{"id": "a", "pattern": "x*", "label": "pii"}]}),
            "$.dlp.custom[0].pattern",
            "empty string",
        ),
        (
            "unknown_field_is_an_error",
            json!({"requets": "block"}),
            "$.dlp.requets",
            "unknown field",
        ),
        (
            "unknown_action_is_an_error",
            json!({"responses": "drop"}),
            "$.dlp.responses",
            "not one of",
        ),
        (
            "unknown_detector_is_an_error",
            json!({"detectors": ["secrets", "pci"]}),
            "$.dlp.detectors[1]",
            "not one of",
        ),
        (
            "custom_label_must_be_secret_or_pii",
            json!({"custom": [{"id": "a", "pattern": "x", "label": "phi"}]}),
            "$.dlp.custom[0].label",
            "not one of",
        ),
        (
            "duplicate_custom_id_is_an_error",
            json!({"custom": [{"id": "a", "pattern": "x", "label": "pii"}, {"id": "a", "pattern": "y", "label": "pii"}]}),
            "$.dlp.custom[1].id",
            "duplicate",
        ),
        (
            "missing_custom_field_is_an_error",
            json!({"custom": [{"id": "a", "label": "pii"}]}),
            "$.dlp.custom[0].pattern",
            "missing",
        ),
    ] {
        let (p, errs) = compile_json(section);
        assert!(p.is_none(), "{name}: policy should not load");
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.msg.contains(msg_part)),
            "{name}: {errs:?}"
        );
    }
}

#[test]
fn debug_output_never_contains_the_secret() {
    let secret = "ghp_Q3nV8kLmP2rT6yW9zB4cD7fH1jK5sX0aE2gJ";
    let s = scanner();
    let v = json!({"note": format!("use {secret}")});
    let dump = format!("{:?} {:?} {:?}", s.scan_value(&v), s.scan_text(secret), s);
    assert!(
        !dump.contains(secret) && !dump.contains("Q3nV8kLm"),
        "{dump}"
    );
}

/// Only the base64 payloads MCP defines are left out of a result's scan: an
/// image's or audio's `data` string and a non-text resource `blob`. Anything
/// else named `data` or `blob` is content (an event envelope, a text blob).
#[test]
fn result_scan_skips_only_binary_payloads() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let cases = [
        (
            "event_envelope",
            serde_json::json!({"structuredContent": {"type": "customer.created", "data": {"note": token}}}),
            true,
        ),
        (
            "text_typed_data",
            serde_json::json!({"content": [{"type": "text", "text": "x", "data": token}]}),
            true,
        ),
        (
            "text_blob",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "text/plain", "blob": token}]}),
            true,
        ),
        (
            "text_blob_in_base64_is_decoded",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "text/plain", "blob": B64.encode(format!("token={token}\n"))}]}),
            true,
        ),
        (
            "json_blob_in_base64_is_decoded",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "Application/JSON; charset=utf-8", "blob": B64.encode(format!("{{\"t\":\"{token}\"}}"))}]}),
            true,
        ),
        (
            "untyped_blob_in_base64_is_decoded",
            serde_json::json!({"contents": [{"uri": "file:///a", "blob": B64.encode(token)}]}),
            true,
        ),
        (
            "clean_text_blob_has_no_finding",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "text/plain", "blob": B64.encode("hello world")}]}),
            false,
        ),
        (
            "binary_blob_in_base64_is_not_decoded",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "image/png", "blob": B64.encode(token)}]}),
            false,
        ),
        (
            "image_data_in_base64",
            serde_json::json!({"content": [{"type": "image", "mimeType": "image/png", "data": B64.encode(token)}]}),
            false,
        ),
        (
            "audio_data_in_a_sampling_message",
            serde_json::json!({"messages": [{"role": "user", "content": {"type": "audio", "mimeType": "audio/wav", "data": B64.encode(token)}}]}),
            false,
        ),
        (
            "image_data_that_is_no_base64_is_read_as_text",
            serde_json::json!({"content": [{"type": "image", "mimeType": "image/png", "data": token}]}),
            true,
        ),
        (
            "image_shaped_object_in_structured_content",
            serde_json::json!({"structuredContent": {"logo": {"type": "image", "data": B64.encode(token)}, "t": {"type": "image", "data": token}}}),
            true,
        ),
        (
            "image_shaped_object_in_a_tool_schema",
            serde_json::json!({"tools": [{"name": "t", "inputSchema": {"type": "object", "examples": [{"type": "image", "data": token}]}}]}),
            true,
        ),
        (
            "blob_shaped_object_in_annotations",
            serde_json::json!({"tools": [{"name": "t", "annotations": {"x": {"mimeType": "image/png", "blob": token}}}]}),
            true,
        ),
        (
            "binary_blob",
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "application/octet-stream", "blob": token}]}),
            false,
        ),
    ];
    for (name, result, found) in cases {
        assert_eq!(!scan_result(&scanner, &result).is_empty(), found, "{name}");
    }
}

/// A text blob is redacted in its decoded text and handed back as base64.
#[test]
fn text_blob_is_redacted_and_stays_base64() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let mut result = serde_json::json!({"contents": [
        {"uri": "file:///a", "mimeType": "text/plain", "blob": B64.encode(format!("key {token} end"))},
        {"uri": "file:///b", "mimeType": "text/plain", "blob": B64.encode("nothing here")}
    ]});
    let found = redact_result(&scanner, &mut result);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/contents/0/blob");
    let blob = result["contents"][0]["blob"].as_str().unwrap_or("");
    let decoded = String::from_utf8(B64.decode(blob).unwrap_or_default()).unwrap_or_default();
    assert_eq!(decoded, "key [REDACTED:github_pat] end");
    assert_eq!(
        result["contents"][1]["blob"],
        serde_json::json!(B64.encode("nothing here"))
    );
}
/// UTF-16 text (declared by charset or by a byte-order mark) is read as
/// such, redacted, and written back in the same encoding; image data whose
/// media type says text is decoded and scanned (fifth review M1, L1).
#[test]
fn utf16_blobs_and_text_typed_image_data_are_read_as_text() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let text = format!("key {token} end");
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be_bom: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    let le_bom: Vec<u8> = [0xFF, 0xFE].into_iter().chain(le.iter().copied()).collect();
    // (behaviour, content item, path of the finding)
    let cases = [
        (
            "declared_utf16le",
            serde_json::json!({"uri": "file:///a", "mimeType": "text/plain; charset=utf-16le", "blob": B64.encode(&le)}),
            "/contents/0/blob",
        ),
        (
            "utf16be_by_its_bom_under_plain_text",
            serde_json::json!({"uri": "file:///a", "mimeType": "text/plain", "blob": B64.encode(&be_bom)}),
            "/contents/0/blob",
        ),
        (
            "utf16le_bom_as_octet_stream",
            serde_json::json!({"uri": "file:///a", "mimeType": "application/octet-stream", "blob": B64.encode(&le_bom)}),
            "/contents/0/blob",
        ),
        (
            "svg_image_data",
            serde_json::json!({"type": "image", "mimeType": "image/svg+xml", "data": B64.encode(format!("<svg><!-- {token} --></svg>"))}),
            "/contents/0/data",
        ),
        (
            "text_plain_image_data",
            serde_json::json!({"type": "image", "mimeType": "text/plain", "data": B64.encode(&text)}),
            "/contents/0/data",
        ),
        (
            "coloured_log_as_octet_stream",
            serde_json::json!({"uri": "file:///a", "mimeType": "application/octet-stream",
                               "blob": B64.encode(format!("\u{1b}[31merror\u{1b}[0m: {token}\u{1b}[0m\n"))}),
            "/contents/0/blob",
        ),
    ];
    for (name, item, path) in cases {
        let mut result = serde_json::json!({"contents": [item]});
        let found = redact_result(&scanner, &mut result);
        assert_eq!(
            findings_of(&found)
                .iter()
                .map(|(_, p)| p.as_str())
                .collect::<Vec<_>>(),
            vec![path],
            "{name}"
        );
        let key = path.rsplit('/').next().unwrap_or("");
        let out = B64
            .decode(result["contents"][0][key].as_str().unwrap_or(""))
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&out).contains("ghp_"), "{name}");
        let utf16 = !out.is_empty() && out.iter().skip(1).step_by(2).take(8).all(|b| *b == 0);
        if name.contains("bom") {
            // Written back as UTF-16 with a byte-order mark: readable as before.
            assert!(
                matches!(out.get(..2), Some([0xFF, 0xFE]) | Some([0xFE, 0xFF])),
                "{name}: {out:?}"
            );
        } else {
            assert!(!utf16, "{name}");
        }
    }
}

/// (kind, path) of each finding.
type KindPaths = Vec<(String, String)>;

fn findings_of(found: &[Finding]) -> KindPaths {
    found
        .iter()
        .map(|f| (f.kind.clone(), f.path.clone()))
        .collect()
}

/// A card number sent as a JSON number is a card number, in arguments and in
/// results; short numbers and ordinary timestamps are nothing.
#[test]
fn numbers_are_scanned_as_their_text() {
    let s = scanner();
    let card = |kind: &str, path: &str| vec![(kind.to_owned(), path.to_owned())];
    let cases: [(&str, serde_json::Value, KindPaths); 7] = [
        (
            "card_as_number",
            json!({"card": 4111111111111111u64}),
            card("credit_card", "/card"),
        ),
        (
            "card_in_array",
            json!({"cards": [1, 5555555555554444u64]}),
            card("credit_card", "/cards/1"),
        ),
        (
            "card_as_float",
            json!({"card": 4111111111111111.0}),
            card("credit_card", "/card"),
        ),
        (
            "phone_by_key",
            json!({"phone": 4155550132u64}),
            card("phone", "/phone"),
        ),
        ("timestamp", json!({"created": 1696204069u64}), vec![]),
        ("amount", json!({"amount": 12.5, "count": 3}), vec![]),
        ("not_luhn", json!({"id": 4111111111111112u64}), vec![]),
    ];
    for (name, v, want) in cases {
        assert_eq!(findings_of(&s.scan_value(&v)), want, "{name}");
    }
    let result = json!({"structuredContent": {"card": 4111111111111111u64}});
    assert_eq!(
        findings_of(&scan_result(&s, &result)),
        card("credit_card", "/structuredContent/card")
    );
}

#[test]
fn redacts_a_card_sent_as_a_number() {
    let s = scanner();
    let mut v = json!({"card": 4111111111111111u64, "amount": 12});
    let found = s.redact_value(&mut v);
    assert_eq!(
        findings_of(&found),
        vec![("credit_card".to_owned(), "/card".to_owned())]
    );
    assert_eq!(v, json!({"card": "[REDACTED:credit_card]", "amount": 12}));
    let mut r = json!({"content": [{"type": "text", "text": "ok"}], "structuredContent": {"pan": 4111111111111111u64}});
    redact_result(&s, &mut r);
    assert_eq!(
        r["structuredContent"]["pan"],
        json!("[REDACTED:credit_card]")
    );
}

/// Trigger-dense text: every `pass ` runs the prose-password matcher.
fn dense(bytes: usize) -> String {
    adversarial::payload("pass ", bytes)
}

/// The scan budget trips on a constructed input once lowered, and fails
/// closed: the string where it ran out, and every later string of the same
/// message, is reported whole as `dlp_budget_exceeded` (requests refused,
/// responses redacted); with the shipped budget the same input passes.
#[test]
fn scan_budget_trips_and_fails_closed() {
    let low = scanner().with_budget(1, 0);
    let text = dense(4096);
    let m = low.scan_text(&text);
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].kind.as_str(), m[0].start, m[0].end),
        (BUDGET_EXCEEDED_KIND, 0, text.len())
    );
    assert_eq!(m[0].label, Label::Secret);

    let v = json!({"a": text, "b": "plain words", "c": 4111111111111111u64});
    // Names read after the budget ran out are redacted in the paths too
    // (unread, a name may be a secret): `/b` and `/c` are one path then.
    let want: Vec<(String, String)> = ["/a", "/[REDACTED:dlp_budget_exceeded]"]
        .iter()
        .map(|p| (BUDGET_EXCEEDED_KIND.to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        findings_of(&low.scan_value(&v)),
        want,
        "sticky for the message"
    );
    let mut r = json!({"content": [{"type": "text", "text": text}]});
    let found = redact_result(&low, &mut r);
    // Every name is read after its value, so past the budget: each one in
    // the path is redacted as it is in the result.
    let exhausted = "/[REDACTED:dlp_budget_exceeded]/0/[REDACTED:dlp_budget_exceeded]";
    assert!(
        found
            .iter()
            .any(|f| f.path == exhausted && f.kind == BUDGET_EXCEEDED_KIND),
        "{found:?}"
    );
    // Keys of the exhausted message are redacted too (a key can hold a
    // secret): what is left says only what happened.
    let out = r.to_string();
    assert!(!out.contains("pass pass"), "{out}");
    assert!(out.contains("[REDACTED:dlp_budget_exceeded]"), "{out}");

    // A budget is per message: a fresh one for the next, and the shipped
    // budget holds on this input.
    assert!(scanner()
        .scan_value(&v)
        .iter()
        .all(|f| f.kind != BUDGET_EXCEEDED_KIND));
    let (spent, allowed) = scanner().work_of(&v);
    assert!(spent < allowed, "{spent} of {allowed}");
}

/// Linear DLP, deterministically: every adversarial payload (each rule's
/// trigger repeated, the personal-data anchors) spends at most a fixed amount
/// of work per byte, at two sizes (so no quadratic term hides), and never
/// trips the shipped budget.
#[test]
fn adversarial_payloads_stay_linear_and_within_budget() {
    let s = scanner();
    for (name, unit) in adversarial::units() {
        let mut per_byte = Vec::new();
        for size in [2048usize, 16384] {
            let text = adversarial::payload(&unit, size);
            let v = json!({ "x": text });
            let (spent, allowed) = s.work_of(&v);
            assert!(spent <= allowed, "{name}: {spent} of {allowed}");
            per_byte.push(spent as f64 / text.len() as f64);
        }
        assert!(
            per_byte[1] <= per_byte[0] * 1.25 + 0.5,
            "{name}: work per byte grows with size: {per_byte:?}"
        );
        let ceiling = (WORK_PER_BYTE * 3 / 4) as f64;
        assert!(per_byte[1] <= ceiling, "{name}: {per_byte:?} work per byte");
    }
}

/// A text blob is read the way lenient clients decode it (MIME line breaks,
/// URL-safe letters, no padding), and one no decoding reads is never passed
/// unread (fresh-eyes review F5: a wrapped blob hid a token).
#[test]
fn text_blobs_are_decoded_as_clients_decode_them() {
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let text = format!("GITHUB_TOKEN={token} and some more text to wrap the line well past 76");
    let wrapped: String = B64
        .encode(&text)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let url_safe = URL_SAFE_NO_PAD.encode(format!("{text}??>>"));
    // (name, blob, the finding kind expected)
    let cases: Vec<(&str, String, &str)> = vec![
        ("mime_wrapped", wrapped, "github_pat"),
        ("url_safe_unpadded", url_safe, "github_pat"),
        (
            "one_character_too_many",
            format!("{}A", B64.encode("abc")),
            UNDECODABLE_BLOB_KIND,
        ),
    ];
    for (name, blob, want) in cases {
        let mut result = serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": "text/plain", "blob": blob}]});
        let found = redact_result(&scanner, &mut result);
        assert!(found.iter().any(|f| f.kind == want), "{name}: {found:?}");
        let out = result["contents"][0]["blob"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let decoded = String::from_utf8(B64.decode(&out).unwrap_or_default()).unwrap_or_default();
        assert!(!decoded.contains(token), "{name}: {decoded}");
        assert!(decoded.contains("[REDACTED:"), "{name}: {decoded}");
    }
}

/// A blob whose type is not a text type but whose bytes are UTF-8 text (a
/// PEM key, a shell script, an octet-stream `.env`) is read as text; media
/// and real binary blobs are not (review L1).
#[test]
fn blobs_that_are_text_whatever_their_type_are_scanned() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let text = B64.encode(format!("export GITHUB_TOKEN={token}\n"));
    let binary = B64.encode([0xffu8, 0xfe, 0x00, 0x81, 0x9a, 0xc3, 0x28, 0x07]);
    let cases: Vec<(&str, &str, String, bool)> = vec![
        (
            "octet_stream_text",
            "application/octet-stream",
            text.clone(),
            true,
        ),
        ("pem_file", "application/x-pem-file", text.clone(), true),
        (
            "shell_script",
            "application/x-shellscript",
            text.clone(),
            true,
        ),
        ("image_is_never_text", "image/png", text.clone(), false),
        (
            "binary_bytes_are_not_text",
            "application/octet-stream",
            binary,
            false,
        ),
    ];
    for (name, mime, blob, found) in cases {
        let result =
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": mime, "blob": blob}]});
        assert_eq!(!scan_result(&scanner, &result).is_empty(), found, "{name}");
    }
}

/// Third review F6: one invalid byte does not make text binary, and an SVG
/// is XML text.
#[test]
fn mostly_text_blobs_and_svg_are_scanned() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let mut bad_byte = vec![0xffu8];
    bad_byte.extend(format!("export GITHUB_TOKEN={token}\n").bytes());
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "one_invalid_byte",
            "application/octet-stream",
            B64.encode(&bad_byte),
        ),
        (
            "svg",
            "image/svg+xml",
            B64.encode(format!("<svg><!-- {token} --></svg>")),
        ),
    ];
    for (name, mime, blob) in cases {
        let result =
            serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": mime, "blob": blob}]});
        assert!(!scan_result(&scanner, &result).is_empty(), "{name}");
    }
}

/// Which bytes may sit before a vendor prefix: a `_` or `-` joins a token to
/// a name and the token is still whole (issue 12); a letter or digit before
/// it means the prefix is the middle of something else. Token values are
/// generated for this test.
#[test]
fn token_prefix_boundaries_table() {
    let ghp = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let glpat = "glpat-Xk2Mq7Rz9Tw4Yb6Nc8Vd";
    let npm = "npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc9Zq";
    // (behaviour, text, expected kinds)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "finds_github_token_after_underscore",
            format!("x_{ghp}"),
            vec!["github_pat"],
        ),
        (
            "finds_github_token_after_dash",
            format!("srv-{ghp}"),
            vec!["github_pat"],
        ),
        (
            "finds_github_token_glued_to_env_name",
            format!("GITHUB_TOKEN_{ghp}"),
            vec!["github_pat"],
        ),
        (
            "finds_github_token_at_start",
            ghp.to_owned(),
            vec!["github_pat"],
        ),
        (
            "ignores_github_prefix_after_letter",
            format!("x{ghp}"),
            vec![],
        ),
        (
            "ignores_github_prefix_after_digit",
            format!("7{ghp}"),
            vec![],
        ),
        ("ignores_github_token_running_on", format!("{ghp}Q"), vec![]),
        (
            "finds_gitlab_token_after_underscore",
            format!("ci_{glpat}"),
            vec!["gitlab_token"],
        ),
        (
            "ignores_gitlab_prefix_after_letter",
            format!("a{glpat}"),
            vec![],
        ),
        (
            "finds_npm_token_after_dash",
            format!("app-{npm}"),
            vec!["npm_token"],
        ),
        (
            "finds_stripe_key_after_underscore",
            format!("STRIPE_{stripe}"),
            vec!["stripe_key"],
        ),
        (
            "ignores_stripe_prefix_after_letter",
            format!("ask_live_{}", &stripe[8..]),
            vec![],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(&text), want, "{name}: {text}");
    }
}

/// A secret word glued after a bare value (`…Valu3token=`) does not cut the
/// value it follows (fifth review H1: the next identifier reached back over
/// the whole value, which was then judged empty).
#[test]
fn a_secret_word_glued_after_a_bare_value_does_not_hide_it() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "bare_value_alone",
            "password=Sup3rS3cretValu3x",
            vec!["password"],
        ),
        (
            "followed_by_token_assignment",
            "password=Sup3rS3cretValu3token=x",
            vec!["password"],
        ),
        (
            "followed_by_password_assignment",
            "password=Sup3rS3cretValu3password=x",
            vec!["password"],
        ),
        (
            "followed_by_dashed_password",
            "password=Sup3rS3cretValu3-password=x",
            vec!["password"],
        ),
        (
            "followed_by_dotted_key",
            "password=Sup3rS3cretValu3.key:x",
            vec!["password"],
        ),
        (
            "followed_by_a_call",
            "password=Sup3rS3cretValu3key(x",
            vec!["password"],
        ),
        (
            "env_style",
            "DB_PASSWORD=Sup3rS3cretValu3token=x",
            vec!["password"],
        ),
        (
            "separated_by_a_semicolon",
            "password=Sup3rS3cretValu3;password=x",
            vec!["password"],
        ),
        (
            "quoted_value",
            "password=\"Sup3rS3cretValu3token=x\"",
            vec!["password"],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
    // Other secret words: found, whatever kind names them.
    for text in [
        "api_token=aB3xK9mQ2vLp7Rt4Wz8Yn5Hjtoken=1",
        "api_token=aB3xK9mQ2vLp7Rt4Wz8Yn5Hj_pwd=1",
        "secret=aB3xK9mQ2vLp7Rt4Wz8Yn5Hj.secret=",
        "secret_key=aB3xK9mQ2vLp7Rt4Wz8Yn5Hjtoken=1",
    ] {
        assert!(!kinds(text).is_empty(), "{text}");
    }
}

/// Strong passwords shaped like names (joined with `.` or `_`) are still
/// passwords, and a shell word glues its quoted pieces into one value
/// (seventh review H2, L1); names and quoted strings around an assignment
/// are not.
#[test]
fn strong_passwords_shaped_like_names_table() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "dotted_leet_password",
            "password=Sup3rS3cret.Valu3x",
            vec!["password"],
        ),
        (
            "caps_underscored_password",
            "password=XK9_P2Q7_MZ4R",
            vec!["password"],
        ),
        (
            "shell_glued_quoted_piece",
            "password=Sup3r\"S3cret\"token=x",
            vec!["password"],
        ),
        (
            "shell_glued_single_quotes",
            "DB_PASSWORD=Wq8m'Zp2v'Lr",
            vec!["password"],
        ),
        ("caps_name_with_a_digit", "password: K8S_CRED", vec![]),
        ("dotted_config_path", "password=XSalsa20.key_length", vec![]),
        ("versioned_name", "password=OAUTH2_CLIENT_SECRET_V2", vec![]),
        (
            "json_string_ends_the_value",
            "{\"q\":\"password=abc\",\"user\":\"bob\"}",
            vec![],
        ),
        // Eighth review F1.
        (
            "dotted_passphrase",
            "DB_PASSWORD=Tulip.Orbit.Canyon.Marble7",
            vec!["password"],
        ),
        (
            "dotted_leet_in_json",
            "{\"password\":\"Cx.9Lp.2Qw.8Zt\"}",
            vec!["password"],
        ),
        (
            "dotted_two_words",
            "password=MyS3cret.Pass",
            vec!["password"],
        ),
        (
            "dotted_settings_reference",
            "password = Settings.Default.Password",
            vec![],
        ),
        (
            "json_in_a_json_string",
            r#"{"a":"{\"kind\":\"Secret\",\"stringData\":{\"password\":\"Xq9mP2vL7nR4!\"}}"}"#,
            vec!["password"],
        ),
        (
            "escaped_key_spaced",
            r#"{\"password\": \"Xq9mP2vL7nR4!\"}"#,
            vec!["password"],
        ),
        (
            "escaped_api_key_hex",
            r#"{\"api_key\":\"a8f5f167f44f4964e6c998dee827110c\"}"#,
            vec!["generic_secret"],
        ),
        (
            "xml_element",
            "<server><id>nexus</id><password>Xq9mP2vL7nR4!</password></server>",
            vec!["password"],
        ),
        (
            "xml_element_capitalised",
            "<Password>Xq9mP2vL7nR4!</Password>",
            vec!["password"],
        ),
        (
            "xml_element_hex_secret",
            "<secret>a8f5f167f44f4964e6c998dee827110c</secret>",
            vec!["generic_secret"],
        ),
        (
            "xml_element_api_key",
            "<apiKey>Jd8Kq2Lm4Np6Rs8Tu0Vw2Xy4Za6Bc8De</apiKey>",
            vec!["generic_secret"],
        ),
        (
            "xml_entry_keyed",
            "<entry key=\"db.password\">Xq9mP2vL7nR4!</entry>",
            vec!["password"],
        ),
        (
            "xml_element_placeholder",
            "<password>${DB_PASSWORD}</password>",
            vec![],
        ),
        (
            "angle_placeholder_in_prose",
            "run login --pass <password> to log in",
            vec![],
        ),
        ("xml_element_empty", "<password></password>", vec![]),
        (
            "redis_url_without_user",
            "REDIS_URL=redis://:Xq9mP2vL7nR4!@cache.internal:6379/0",
            vec!["db_url_with_password"],
        ),
        // Ninth review H2.
        ("xml_element_with_attribute", "<password type=\"plain\">Xk9#mQ2vL8pZ</password>", vec!["password"]),
        ("xml_hadoop_name_value", "<property>\n  <name>javax.jdo.option.ConnectionPassword</name>\n  <value>Xk9#mQ2vL8pZ</value>\n</property>", vec!["password"]),
        ("xml_pretty_printed", "<password>\n  Xk9#mQ2vL8pZ\n</password>", vec!["password"]),
        ("xml_cdata", "<password><![CDATA[Xk9#mQ2vL8pZ]]></password>", vec!["password"]),
        ("xml_namespace_prefix", "<ns:password>Xk9#mQ2vL8pZ</ns:password>", vec!["password"]),
        ("xml_entry_second_attribute", "<entry key=\"db.password\" type=\"string\">Xk9#mQ2vL8pZ</entry>", vec!["password"]),
        ("json_escaped_twice", r#"{\\\"password\\\":\\\"Xk9#mQ2vL8pZ\\\"}"#, vec!["password"]),
        ("xml_self_closing_element", "<password/> then <b>Xk9#mQ2vL8pZ</b>", vec![]),
        ("xml_name_of_a_public_value", "<name>ui.password.min_length</name><value>12</value>", vec![]),
        ("sql_with_password", "ALTER USER bob WITH PASSWORD 'Xk9#mQ2vL8pZ';", vec!["password"]),
        ("sql_identified_by", "CREATE USER app IDENTIFIED BY 'Xk9#mQ2vL8pZ';", vec!["password"]),
        ("sql_identified_by_a_weak_word", "CREATE USER app IDENTIFIED BY 'changeme';", vec![]),
        ("prose_identified_by_a_name", "the user is identified by their email", vec![]),
        ("json_name_value_pair_as_text", "{\"name\": \"DB_PASSWORD\",\n \"value\": \"Xk9#mQ2vL8pZ\"}", vec!["password"]),
        ("json_key_value_pair_as_text", "{\"key\":\"password\",\"value\":\"Xk9#mQ2vL8pZ\"}", vec!["password"]),
        ("json_name_value_pair_of_a_public_name", "{\"name\": \"PASSWORD_MIN_LENGTH\", \"value\": \"Xk9#mQ2vL8pZ\"}", vec![]),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
}

/// A value read by a context matcher ends where the next assignment or
/// header of the same matcher begins; what each one holds is still judged.
#[test]
fn nested_context_values_table() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "ignores_a_run_of_empty_assignments",
            "password=password=password=password=",
            vec![],
        ),
        (
            "finds_the_last_of_a_run_of_assignments",
            "token=token=Jd8Kq2Lm4Np6Rs8Tu0Vw2Xy4Za6Bc8De",
            vec!["generic_secret"],
        ),
        (
            "finds_a_password_after_a_rejected_one",
            "password=examplepassword=Wq8#mZp2!vLr",
            vec!["password"],
        ),
        (
            "finds_a_quoted_password_holding_an_assignment",
            "DB_PASSWORD='pass=Wq8#mZp2!vLr'",
            vec!["password"],
        ),
        (
            "ignores_a_run_of_headers",
            "Authorization: Bearer Authorization: Bearer Authorization: Bearer ",
            vec![],
        ),
        (
            "finds_the_credential_of_the_last_header",
            "Authorization: Bearer Authorization: Bearer 9fQ2xL7mK4pR8sT1vW3yZ6bN",
            vec!["auth_header_token"],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
}

/// Settings files: the identifier before `value=` says what the value is.
#[test]
fn xml_settings_table() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "finds_password_setting",
            r#"<add key="SmtpPassword" value="Wq8#mZp2!vLr"/>"#,
            vec!["password"],
        ),
        (
            "finds_token_setting_with_blanks",
            "<setting name='ApiToken'  value = 'Jd8Kq2Lm4Np6Rs8Tu0Vw2Xy4Za6Bc8De' />",
            vec!["generic_secret"],
        ),
        (
            "ignores_setting_that_names_no_secret",
            r#"<add key="SmtpHost" value="Wq8#mZp2!vLr"/>"#,
            vec![],
        ),
        (
            "ignores_templated_setting_value",
            r#"<add key="DbPassword" value="${DB_PASSWORD}"/>"#,
            vec![],
        ),
        (
            "ignores_a_run_of_settings_without_values",
            r#"<add key="password" value="<add key="password" value="<add key="password" value=""#,
            vec![],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
}

/// `mysql`/`mariadb` clients with the password glued to `-p`: the first
/// `-p` on the line decides, as the regex it replaces did.
#[test]
fn mysql_client_password_table() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "finds_quoted_password",
            "mysql -u root -p'QuartzNimbus1526&' -h 10.0.4.12",
            vec!["password"],
        ),
        (
            "finds_bare_password_of_mysqldump",
            "mysqldump -uadmin -pT4ngo#Cobalt99 shop",
            vec!["password"],
        ),
        ("ignores_prompting_flag", "mysql -u root -p -h db", vec![]),
        (
            "ignores_flag_on_the_next_line",
            "mysql -u root\n -pWq8#mZp2!vLr",
            vec![],
        ),
        (
            "first_flag_decides_port_before_password",
            "MariaDB -h db -P3306 -pWq8#mZp2!vLr",
            vec![],
        ),
        (
            "ignores_a_run_of_clients",
            "mysql -pmysql -pmysql -pmysql -p",
            vec![],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
}

/// Sumo Logic access ids and keys after their setting name.
#[test]
fn sumo_logic_settings_table() {
    // (behaviour, text, expected kinds)
    let cases = [
        (
            "finds_dotted_access_id",
            r#"sumologic.accessId = "su9OL59biWiJu7""#,
            vec!["sumologic_key"],
        ),
        (
            "finds_access_key_after_colon",
            "SUMO_ACCESS_KEY: gxq3rJQkS6qovOg9UY2Q70iH1jFZx0WBrrsiAYv4XHodogAwTKyLzvFK4neRN8Dk",
            vec!["sumologic_key"],
        ),
        ("ignores_short_key", "SUMO_ACCESS_KEY: AbCeFG123", vec![]),
        (
            "ignores_id_not_starting_su",
            r#"SUMO_ACCESS_ID = "xyGyI5imvADdvU""#,
            vec![],
        ),
        (
            "ignores_a_run_of_setting_names",
            "sumo_access_id=sumo_access_id=sumo_access_id=",
            vec![],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(kinds(text), want, "{name}: {text}");
    }
}

/// Rules with a token tail are matched by code (`RuleSpec::longest`): the
/// same spans their regex and post-check give, at every tail length around
/// the bounds, with and without GitLab's suffix and a byte after.
#[test]
fn token_tail_rules_match_what_their_regex_matches() {
    let s = scanner();
    let alphabet = b"aB3_-xQ9zK";
    for spec in rules::SECRET_RULES.iter().filter(|r| r.longest > 0) {
        let re = match Regex::new(&format!("^(?:{})", spec.pattern)) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let least = match token_tail_least(spec) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let prefix = match spec.kind {
            "gitlab_token" => "glpat-",
            "pypi_token" => "pypi-AgE",
            _ => "hvs.",
        };
        for len in [
            least - 1,
            least,
            least + 1,
            spec.longest - 1,
            spec.longest,
            spec.longest + 1,
        ] {
            let tail: String = (0..len)
                .map(|k| char::from(alphabet[(k * 7 + k / 3) % alphabet.len()]))
                .collect();
            for after in ["", " ", ".abc123xyz", ".abc123xyz ", ".ABC", "x", "/p"] {
                let text = format!("{prefix}{tail}{after}");
                let want: Vec<(usize, usize)> = re
                    .captures(&text)
                    .and_then(|c| rules::accept(spec, &text, &c, 0))
                    .map(|f| (f.start, f.end))
                    .into_iter()
                    .collect();
                let got: Vec<(usize, usize)> = s
                    .scan_text(&text)
                    .into_iter()
                    .filter(|m| m.kind == spec.kind)
                    .map(|m| (m.start, m.end))
                    .collect();
                assert_eq!(got, want, "{}: tail {len}, after {after:?}", spec.kind);
            }
        }
    }
}

/// The remembered backward runs give what reading back from every trigger
/// gives, for ascending positions and windows of different rules mixed.
#[test]
fn runs_before_triggers_match_reading_back() {
    let alphabet = b"ab-_ .9|";
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..2000 {
        let len = 1 + round % 90;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % alphabet.len() as u64) as usize]
            })
            .collect();
        let mut runs = BlockedRuns::default();
        for pos in 0..=len {
            for (edge, most) in [
                (rules::Edge::Token, 4),
                (rules::Edge::Token, 16),
                (rules::Edge::Digit, 3),
            ] {
                let want = bytes[..pos]
                    .iter()
                    .rev()
                    .take(most + 1)
                    .take_while(|b| edge.blocks(**b))
                    .count();
                let got = runs.run_before(edge, &bytes, pos, most);
                assert_eq!(
                    got,
                    want,
                    "{:?} pos {pos} most {most}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
}

/// The secret word a next assignment was found by can lie inside the value
/// before it (sixth review): the value is still judged, read up to the next
/// identifier's end or, failing that, to that word.
#[test]
fn a_secret_word_inside_a_bare_value_does_not_hide_it() {
    for text in [
        "password=Passw0rd2024token=x",
        "password=MyPassw0rd2024token=x",
        "DB_PASSWORD=Secret2024Abctoken=x",
        "password=Sup3rkeyS3cretValu3token=x",
        "password=S3cr3tAuth2024pwd=x",
        "password=Zz9auth1token=x",
        "api_token=aB3xKeyK9mQ2vLp7Rt4Wz8Yn5Hjtoken=1",
        "password=Sup3rS3cretValu3.key:x",
    ] {
        assert!(!kinds(text).is_empty(), "{text}");
    }
}

/// UTF-16 labelled the way browsers read labels, unlabelled UTF-16 and
/// UTF-32 marks (sixth review).
#[test]
fn utf16_without_a_mark_and_utf32_are_read_as_text() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let scanner = match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let text = "key ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A end";
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let utf32le: Vec<u8> = [0xFF, 0xFE, 0, 0]
        .into_iter()
        .chain(text.chars().flat_map(|c| u32::from(c).to_le_bytes()))
        .collect();
    // (behaviour, mimeType, bytes)
    let cases: [(&str, &str, &[u8]); 6] = [
        (
            "bare_utf16_label_is_little_endian",
            "text/plain; charset=utf-16",
            &le,
        ),
        ("ucs2_label", "text/plain; charset=ucs-2", &le),
        ("unicode_label", "text/plain; charset=unicode", &le),
        ("unlabelled_le_as_plain_text", "text/plain", &le),
        (
            "unlabelled_be_as_octet_stream",
            "application/octet-stream",
            &be,
        ),
        ("utf32le_mark", "text/plain", &utf32le),
    ];
    for (name, mime, bytes) in cases {
        let mut result = serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": mime, "blob": B64.encode(bytes)}]});
        let found = redact_result(&scanner, &mut result);
        assert!(!found.is_empty(), "{name}");
    }
}

/// Both of two glued assignments are judged, in either order (seventh
/// review H1: reading the first up to the second identifier's end covered the
/// second trigger, and the second value was never read).
#[test]
fn both_glued_assignments_are_judged() {
    let token = "Zq8XvLm2Pw9RtY4kHn6B";
    for text in [
        format!("password=Sup3rS3cretValu3token={token}"),
        format!("token={token}password=Sup3rS3cretValu3"),
    ] {
        let mut redacted = serde_json::json!({"x": text.clone()});
        let found = scanner().redact_value(&mut redacted);
        let out = redacted["x"].as_str().unwrap_or("").to_owned();
        assert!(
            !out.contains(token) && !out.contains("Sup3rS3cretValu3"),
            "{text}: {out} {found:?}"
        );
    }
}

/// A UTF-16 label or NUL padding a client may ignore does not hide UTF-8
/// text, and a charset this scan cannot read fails closed (seventh review
/// H3, H4, M1).
#[test]
fn a_charset_claim_does_not_hide_the_utf8_reading() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let token = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    let padded: Vec<u8> = "a"
        .repeat(200)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .chain(format!(" key {token}").into_bytes())
        .collect();
    // (behaviour, mimeType, bytes, finding kind)
    let cases: [(&str, &str, Vec<u8>, &str); 4] = [
        (
            "utf16_label_over_utf8",
            "text/plain; charset=utf-16le",
            format!("key {token}").into_bytes(),
            "github_pat",
        ),
        (
            "nul_padding_before_utf8",
            "text/plain",
            padded,
            "github_pat",
        ),
        (
            "utf32_label",
            "text/plain; charset=utf-32le",
            format!("key {token}").into_bytes(),
            UNDECODABLE_BLOB_KIND,
        ),
        (
            "utf7_label",
            "text/plain; charset=utf-7",
            b"key ghp+AF8-x".to_vec(),
            UNDECODABLE_BLOB_KIND,
        ),
    ];
    for (name, mime, bytes, kind) in cases {
        let mut result = serde_json::json!({"contents": [{"uri": "file:///a", "mimeType": mime, "blob": B64.encode(&bytes)}]});
        let found = redact_result(&scanner(), &mut result);
        assert!(found.iter().any(|f| f.kind == kind), "{name}: {found:?}");
        let out = B64
            .decode(result["contents"][0]["blob"].as_str().unwrap_or(""))
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&out).contains("ghp_"), "{name}");
    }
}

/// `{"name": "DB_PASSWORD", "value": "…"}` (Kubernetes `env`, AWS tags and
/// parameters): the `value` is read as the value of the name, found and
/// redacted; a name that is no secret's leaves it alone.
#[test]
fn a_value_named_by_its_object_is_judged_by_that_name() {
    let s = scanner();
    // (behaviour, the object, found)
    for (name, object, found) in [
        (
            "kubernetes_env",
            json!({"name": "DB_PASSWORD", "value": "Xk9#mQ2vL8pZ"}),
            true,
        ),
        (
            "key_value_setting",
            json!({"Key": "api_token", "Value": "x", "value": "aB3xK9mQ2vLp7Rt4Wz8Yn5Hj"}),
            true,
        ),
        (
            "a_name_that_is_no_secret",
            json!({"name": "DB_HOST", "value": "Xk9#mQ2vL8pZ"}),
            false,
        ),
        (
            "a_public_name",
            json!({"name": "PASSWORD_MIN_LENGTH", "value": "Xk9#mQ2vL8pZ"}),
            false,
        ),
    ] {
        let doc = json!({"env": [object]});
        let findings = s.scan_value(&doc);
        assert_eq!(!findings.is_empty(), found, "{name}: {findings:?}");
        let mut redacted = doc.clone();
        let r = s.redact_value(&mut redacted);
        assert_eq!(!r.is_empty(), found, "{name}");
        if found {
            assert!(
                redacted["env"][0]["value"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("[REDACTED:")),
                "{name}: {redacted}"
            );
        }
    }
}

/// The platforms' own name/value formats, parsed (arguments,
/// `structuredContent`): a value member in any spelling is read as the value
/// of a sibling that names it, in any order and case, or of the key its
/// object sits under; benign pairs stay judged by the same rules (twelfth
/// attack pass, finding 2).
#[test]
fn platform_name_value_pairs_are_read_in_parsed_json() {
    let s = scanner();
    let pw = "Xk9#mQ2vLp8!";
    let token = "q8Zr2LmX7vN4pK1tW9yB3cD6";
    // (behaviour, document, pointer of the value, kind found or None)
    let cases = [
        (
            "aws_ssm_parameter",
            json!({"Parameter": {"Name": "DB_PASSWORD", "Type": "SecureString", "Value": pw}}),
            "/Parameter/Value",
            Some("password"),
        ),
        (
            "aws_ssm_parameter_path",
            json!({"Parameters": [{"Name": "/app/prod/DB_PASSWORD", "Type": "SecureString", "Value": pw, "Version": 3}]}),
            "/Parameters/0/Value",
            Some("password"),
        ),
        (
            "aws_tag",
            json!({"Tags": [{"Key": "DB_PASSWORD", "Value": pw}]}),
            "/Tags/0/Value",
            Some("password"),
        ),
        (
            "aws_name_api_key",
            json!({"Name": "STRIPE_API_KEY", "Value": token}),
            "/Value",
            Some("generic_secret"),
        ),
        (
            "cloudformation_parameter",
            json!({"Parameters": [{"ParameterKey": "DBPassword", "ParameterValue": pw}]}),
            "/Parameters/0/ParameterValue",
            Some("password"),
        ),
        (
            "field_value",
            json!({"field": "password", "value": pw}),
            "/value",
            Some("password"),
        ),
        (
            "onepassword_field",
            json!({"fields": [{"id": "password", "type": "CONCEALED", "purpose": "PASSWORD", "label": "password", "value": pw}]}),
            "/fields/0/value",
            Some("password"),
        ),
        (
            "label_names_an_api_key",
            json!({"label": "API Key", "value": token}),
            "/value",
            Some("generic_secret"),
        ),
        (
            "upper_case_members",
            json!({"NAME": "DB_PASSWORD", "VALUE": pw}),
            "/VALUE",
            Some("password"),
        ),
        (
            "terraform_output",
            json!({"db_password": {"sensitive": true, "type": "string", "value": pw}}),
            "/db_password/value",
            Some("password"),
        ),
        (
            "terraform_state_outputs",
            json!({"outputs": {"api_token": {"value": token}}}),
            "/outputs/api_token/value",
            Some("generic_secret"),
        ),
        (
            "members_between_name_and_value",
            json!({"name": "DB_PASSWORD", "type": "plain", "value": pw}),
            "/value",
            Some("password"),
        ),
        (
            "benign_policy_pair",
            json!({"name": "password_policy", "value": "12 characters"}),
            "/value",
            None,
        ),
        (
            "secret_word_with_a_weak_value",
            json!({"Name": "DB_PASSWORD", "Value": "changeme"}),
            "/Value",
            None,
        ),
        (
            "name_of_no_secret",
            json!({"Name": "DB_HOST", "Value": pw}),
            "/Value",
            None,
        ),
        (
            "terraform_output_of_no_secret",
            json!({"db_host": {"value": pw}}),
            "/db_host/value",
            None,
        ),
        (
            "a_value_key_that_pairs_nothing",
            json!({"Name": "DB_PASSWORD", "ValueFrom": pw}),
            "/ValueFrom",
            None,
        ),
        (
            "token_name_with_a_word_value",
            json!({"key": "api_key", "value": "the key for the billing api"}),
            "/value",
            None,
        ),
    ];
    for (name, doc, at, kind) in cases {
        let findings = s.scan_value(&doc);
        let got: Vec<&str> = findings
            .iter()
            .filter(|f| f.path == at)
            .map(|f| f.kind.as_str())
            .collect();
        assert_eq!(
            got,
            kind.into_iter().collect::<Vec<_>>(),
            "{name}: {findings:?}"
        );
        let mut redacted = doc.clone();
        s.redact_value(&mut redacted);
        let out = redacted
            .pointer(at)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        assert_eq!(
            out.starts_with("[REDACTED:"),
            kind.is_some(),
            "{name}: {redacted}"
        );
    }
}

/// The same pairs as text (a tool result holding `aws ssm get-parameter`'s
/// JSON or `kubectl get -o yaml`): compact and pretty-printed JSON, value
/// before name, members between, YAML block and flow style; the near misses
/// beside each (twelfth attack pass, finding 2).
#[test]
fn name_value_pairs_as_text_table() {
    // (behaviour, text, expected kinds)
    let cases: &[(&str, &str, &[&str])] = &[
        ("aws_json_compact", r#"{"Parameter":{"Name":"DB_PASSWORD","Type":"SecureString","Value":"Xk9#mQ2vLp8!"}}"#, &["password"]),
        ("aws_json_pretty", "{\n    \"Parameter\": {\n        \"Name\": \"DB_PASSWORD\",\n        \"Type\": \"SecureString\",\n        \"Value\": \"Xk9#mQ2vLp8!\",\n        \"Version\": 1\n    }\n}", &["password"]),
        ("aws_json_path_name", r#"{"Name": "/app/prod/db/password", "Value": "Xk9#mQ2vLp8!"}"#, &["password"]),
        ("aws_tag_json", r#"{"Tags":[{"Key":"DB_PASSWORD","Value":"Xk9#mQ2vLp8!"}]}"#, &["password"]),
        ("aws_name_api_key_json", r#"{"Name":"STRIPE_API_KEY","Value":"q8Zr2LmX7vN4pK1tW9yB3cD6"}"#, &["generic_secret"]),
        ("cloudformation_json", r#"[{"ParameterKey": "DBPassword", "ParameterValue": "Xk9#mQ2vLp8!"}]"#, &["password"]),
        ("value_before_name", r#"{"value":"Xk9#mQ2vLp8!","name":"DB_PASSWORD"}"#, &["password"]),
        ("value_before_name_with_a_member_between", r#"{"Value": "Xk9#mQ2vLp8!", "Type": "SecureString", "Name": "DB_PASSWORD"}"#, &["password"]),
        ("value_with_escaped_quotes_before_name", r#"{"value":"Xk9\"mQ2vLp8!","name":"DB_PASSWORD"}"#, &["password"]),
        ("member_between_name_and_value", r#"{"name":"DB_PASSWORD","type":"plain","value":"Xk9#mQ2vLp8!"}"#, &["password"]),
        ("onepassword_fields_json", r#"{"id":"password","type":"CONCEALED","purpose":"PASSWORD","label":"password","value":"Xk9#mQ2vLp8!"}"#, &["password"]),
        ("k8s_yaml_env", "env:\n- name: DB_PASSWORD\n  value: Xk9#mQ2vLp8!\n- name: LOG_LEVEL\n  value: debug\n", &["password"]),
        ("k8s_yaml_env_indented", "    env:\n      - name: DB_PASSWORD\n        value: \"Xk9#mQ2vLp8!\"\n", &["password"]),
        ("k8s_yaml_crlf_single_quotes", "- name: 'API_TOKEN'\r\n  value: 'q8Zr2LmX7vN4pK1tW9yB3cD6'\r\n", &["generic_secret"]),
        ("yaml_member_between", "- name: DB_PASSWORD\n  type: plain\n  value: Xk9#mQ2vLp8!\n", &["password"]),
        ("yaml_flow", "env: [{name: DB_PASSWORD, value: Xk9#mQ2vLp8!}]", &["password"]),
        ("yaml_flow_spaced", "env: [{ name: DB_PASSWORD, value: Xk9#mQ2vLp8! }]", &["password"]),
        // Near misses.
        ("k8s_yaml_value_from", "env:\n- name: DB_PASSWORD\n  valueFrom:\n    secretKeyRef:\n      name: db\n      key: Xk9#mQ2vLp8!\n", &[]),
        ("yaml_value_at_another_column", "- name: DB_PASSWORD\nvalue: Xk9#mQ2vLp8!\n", &[]),
        ("yaml_value_of_the_next_item", "- name: DB_PASSWORD\n  valueFrom: {}\n- name: X\n  value: Xk9#mQ2vLp8!\n", &[]),
        ("yaml_block_scalar", "- name: DB_PASSWORD\n  value: |\n    Xk9#mQ2vLp8!\n", &[]),
        ("benign_policy_pair_json", r#"{"name":"password_policy","value":"12 characters"}"#, &[]),
        ("benign_policy_pair_yaml", "- name: password_min_length\n  value: Xk9#mQ2vLp8!\n", &[]),
        ("weak_value_json", r#"{"Name":"DB_PASSWORD","Value":"changeme"}"#, &[]),
        ("templated_value_yaml", "- name: DB_PASSWORD\n  value: ${DB_PASSWORD}\n", &[]),
        ("value_of_another_name_before", r#"{"value":"Xk9#mQ2vLp8!","name":"DB_HOST"},{"name":"DB_PASSWORD"}"#, &[]),
        ("value_past_another_name", r#"{"name":"DB_PASSWORD","name2":"x","id":"7","value":"Xk9#mQ2vLp8!"}"#, &[]),
        ("name_in_prose", "the name: DB_PASSWORD and value: Xk9#mQ2vLp8! are below", &[]),
    ];
    let s = scanner();
    for (name, text, want) in cases {
        assert_eq!(kinds(text), *want, "{name}: {text}");
        // Redacted where it stands: the value, not the text around it.
        let mut v = json!({ "t": text });
        s.redact_value(&mut v);
        let out = v["t"].as_str().unwrap_or_default();
        if want.is_empty() {
            assert_eq!(out, *text, "{name}");
        }
        let hidden = !out.contains("mQ2vLp8") && !out.contains("LmX7vN4");
        assert!(hidden || want.is_empty(), "{name}: {out}");
        let brackets = |t: &str| t.matches(['{', '}', '[', ']', ',']).count();
        let unmarked = out
            .replace("[REDACTED:password]", "")
            .replace("[REDACTED:generic_secret]", "");
        assert_eq!(brackets(&unmarked), brackets(text), "{name}: {out}");
    }
}

/// Passwords on command lines, in subscript assignments and in config
/// directives (twelfth attack pass, finding 7), and the near miss beside
/// each: a port after `-p`, a variable, a read rather than an assignment.
#[test]
fn command_and_directive_passwords_table() {
    // (behaviour, text, expected kinds)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "python_environ_subscript",
            "os.environ['DB_PASSWORD'] = 'Xk9#mQ2vLp8!'",
            &["password"],
        ),
        (
            "ruby_env_subscript",
            "ENV[\"API_TOKEN\"] = \"q8Zr2LmX7vN4pK1tW9yB3cD6\"",
            &["generic_secret"],
        ),
        (
            "subscript_read_into_a_variable",
            "pw = os.environ['DB_PASSWORD']",
            &[],
        ),
        (
            "subscript_compared_to_a_name",
            "if cfg['password'] == expected:",
            &[],
        ),
        (
            "docker_login",
            "docker login -u admin -p Xk9#mQ2vLp8! registry.corp.io",
            &["password"],
        ),
        (
            "docker_login_long_flag",
            "docker login --username admin --password=Xk9#mQ2vLp8! ghcr.io",
            &["password"],
        ),
        (
            "podman_login_quoted",
            "podman login -u x -p 'Xk9#mQ2vLp8!' quay.io",
            &["password"],
        ),
        (
            "docker_run_publishes_a_port",
            "docker run -p 8080:80 -e MODE=prod nginx",
            &[],
        ),
        (
            "docker_login_from_stdin",
            "echo $PW | docker login -u x --password-stdin ghcr.io",
            &[],
        ),
        (
            "docker_login_with_a_variable",
            "docker login -u x -p $REGISTRY_PASSWORD",
            &[],
        ),
        (
            "sshpass",
            "sshpass -p 'Xk9#mQ2vLp8!' ssh deploy@10.0.0.5",
            &["password"],
        ),
        (
            "sshpass_glued",
            "sshpass -pXk9#mQ2vLp8! scp a.txt host:",
            &["password"],
        ),
        (
            "sshpass_from_a_file_then_an_ssh_port",
            "sshpass -f ~/.pw ssh -p 2222 host",
            &[],
        ),
        (
            "redis_cli",
            "redis-cli -h cache -p 6379 -a Xk9#mQ2vLp8! ping",
            &["password"],
        ),
        (
            "redis_cli_long_flag",
            "redis-cli --pass 'Xk9#mQ2vLp8!' --no-auth-warning info",
            &["password"],
        ),
        (
            "redis_cli_port_only",
            "redis-cli -h cache -p 6379 ping",
            &[],
        ),
        // Twenty-second session: the forms the thirteenth review noted.
        (
            "docker_login_glued",
            "docker login -u admin -pXk9#mQ2vLp8! registry.corp.io",
            &["password"],
        ),
        (
            "redis_cli_auth_command",
            "redis-cli -h cache AUTH Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "redis_cli_auth_with_a_user",
            "redis-cli -h cache AUTH default 'Xk9#mQ2vLp8!'",
            &["password"],
        ),
        (
            "ldapsearch_bind_password",
            "ldapsearch -x -D cn=admin,dc=corp -w Xk9#mQ2vLp8! -b dc=corp uid=jo",
            &["password"],
        ),
        (
            "ldapmodify_prompts_for_it",
            "ldapmodify -x -D cn=admin,dc=corp -W -f change.ldif",
            &[],
        ),
        (
            "smbclient_user_and_password",
            "smbclient //fs/share -U 'CORP\\jo%Xk9#mQ2vLp8!'",
            &["password"],
        ),
        ("smbclient_user_only", "smbclient //fs/share -U jo", &[]),
        (
            "psexec_password",
            "psexec \\\\host -u CORP\\admin -p Xk9#mQ2vLp8! cmd.exe",
            &["password"],
        ),
        (
            "xfreerdp_password",
            "xfreerdp /v:10.0.0.7 /u:admin /p:Xk9#mQ2vLp8! /cert:ignore",
            &["password"],
        ),
        (
            "seven_zip_password",
            "7z a -pXk9#mQ2vLp8! -mhe=on backup.7z data/",
            &["password"],
        ),
        (
            "docker_login_after_global_options",
            "docker --config /tmp/c login -u bob -p Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "docker_login_over_continued_lines",
            "docker login \\\n  -u bob \\\n  -p Xk9#mQ2vLp8! \\\n  registry.example.com",
            &["password"],
        ),
        (
            "ldapsearch_over_continued_lines",
            "ldapsearch \\\r\n -x -D cn=admin \\\r\n -w Xk9#mQ2vLp8! \\\r\n -b dc=ex",
            &["password"],
        ),
        (
            "a_line_break_no_backslash_continues_ends_the_command",
            "docker login -u bob\n-p Xk9#mQ2vLp8!",
            &[],
        ),
        (
            "xfreerdp_quoted_password_argument",
            "xfreerdp3 /u:bob \"/p:Xk9#mQ2vLp8!\" /v:h",
            &["password"],
        ),
        (
            "seven_zip_quoted_password_argument",
            "7zz a \"-pXk9#mQ2vLp8!\" out.7z dir",
            &["password"],
        ),
        ("seven_zip_prompts_for_it", "7z x -p backup.7z", &[]),
        (
            "seven_zip_in_prose",
            "use 7zip or 7z to unpack the -prelease archive",
            &[],
        ),
        (
            "redis_conf",
            "bind 0.0.0.0\nrequirepass Xk9#mQ2vLp8!\nmasterauth Zq8$vN4pK1tW\n",
            &["password", "password"],
        ),
        (
            "redis_config_set",
            "CONFIG SET requirepass \"Xk9#mQ2vLp8!\"",
            &["password"],
        ),
        (
            "redis_conf_commented_default",
            "# requirepass foobared",
            &[],
        ),
        (
            "requirepass_in_prose",
            "then set requirepass Xk9#mQ2vLp8! on the replica",
            &[],
        ),
        (
            "wpa_supplicant_psk",
            "network={\n  ssid=\"home\"\n  psk=\"Xk9#mQ2vLp8!\"\n}",
            &["password"],
        ),
        (
            "hostapd_wpa_psk_hex",
            "wpa_psk=2b1d1f0e9c8a7b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d",
            &["password"],
        ),
        ("psk_file_path", "psk_file=/etc/hostapd.psk", &[]),
        (
            "powershell_secure_string",
            "$pw = ConvertTo-SecureString \"Xk9#mQ2vLp8!\" -AsPlainText -Force",
            &["password"],
        ),
        (
            "powershell_secure_string_named",
            "ConvertTo-SecureString -String 'Xk9#mQ2vLp8!' -AsPlainText -Force",
            &["password"],
        ),
        (
            "powershell_secure_string_piped",
            "\"Xk9#mQ2vLp8!\" | ConvertTo-SecureString -AsPlainText -Force",
            &["password"],
        ),
        (
            "powershell_secure_string_of_a_variable",
            "ConvertTo-SecureString $env:SVC_PW -AsPlainText -Force",
            &[],
        ),
        (
            "powershell_encrypted_standard_string",
            "ConvertTo-SecureString \"Xk9#mQ2vLp8!\" -Key $k",
            &[],
        ),
        // The twenty-second session's third helper and the twenty-third's
        // attack: forms a shell accepts that were read past.
        (
            "ldappasswd_old_and_new_passwords",
            "ldappasswd -x -D cn=admin,dc=ex -W -a Xk9#mQ2vLp8! -s Xk9#mQ2vLp8!2 uid=bob",
            &["password"],
        ),
        (
            "ldappasswd_grouped_options",
            "ldappasswd -xWs Xk9#mQ2vLp8! uid=bob",
            &["password"],
        ),
        (
            "ldapsearch_password_in_an_option_group",
            "ldapsearch -xwXk9#mQ2vLp8! -D cn=admin,dc=ex -b dc=ex",
            &["password"],
        ),
        (
            "ldapsearch_scope_is_no_password",
            "ldapsearch -xs sub -b dc=ex -D cn=admin -W",
            &[],
        ),
        (
            "smbclient_password_after_the_service",
            "smbclient //fs01/share Xk9#mQ2vLp8! -U bob",
            &["password"],
        ),
        (
            "smbclient_option_after_the_service",
            "smbclient //fs01/share -U bob -c 'ls'",
            &[],
        ),
        (
            "seven_zip_exe_in_a_quoted_path",
            "\"C:\\Program Files\\7-Zip\\7z.exe\" a -pXk9#mQ2vLp8! out.7z dir",
            &["password"],
        ),
        (
            "seven_zip_upper_case_switch",
            "7z a -PXk9#mQ2vLp8! out.7z dir",
            &["password"],
        ),
        (
            "psexec_exe",
            "C:\\Tools\\PsExec64.exe \\\\host -u admin -p Xk9#mQ2vLp8! cmd",
            &["password"],
        ),
        (
            "redis_cli_prompt_auth",
            "127.0.0.1:6379> AUTH Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "redis_cli_prompt_auth_user_in_a_database",
            "cache.corp:6380[2]> auth default Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "auth_in_prose",
            "then auth Xk9#mQ2vLp8! with the service",
            &[],
        ),
        (
            "docker_login_password_echoed_in",
            "echo \"Xk9#mQ2vLp8!\" | docker login -u bob --password-stdin reg.io",
            &["password"],
        ),
        (
            "helm_registry_login_password_printed_in",
            "printf '%s' 'Xk9#mQ2vLp8!' | helm registry login reg.io -u bob --password-stdin",
            &["password"],
        ),
        (
            "docker_login_password_from_a_file",
            "cat ~/pw.txt | docker login -u bob --password-stdin",
            &[],
        ),
        (
            "docker_login_after_many_global_options",
            "docker --config /x --log-level debug --tlsverify login -u me -p Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "docker_login_quoted_flag",
            "docker login -u me '-p' Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "docker_login_ansi_c_quoted_password",
            "docker login -u me -p $'Xk9#mQ2vLp8!'",
            &["password"],
        ),
        (
            "docker_login_powershell_continuation",
            "docker login -u me `\n  -p Xk9#mQ2vLp8! r.io",
            &["password"],
        ),
        (
            "psexec_cmd_continuation",
            "psexec \\\\host -u admin ^\n-p Xk9#mQ2vLp8! cmd",
            &["password"],
        ),
        (
            "continued_line_to_an_unindented_variable",
            "ldapsearch -x -D cn=admin,dc=ex -w \\\n$LDAP_PASSWORD -b dc=ex",
            &[],
        ),
        (
            "continued_line_to_an_unindented_password",
            "docker login -u me -p \\\nXk9#mQ2vLp8! r.io",
            &["password"],
        ),
        (
            "oc_login",
            "oc login -u bob -p Xk9#mQ2vLp8! https://api:6443",
            &["password"],
        ),
        (
            "helm_repo_add",
            "helm repo add corp https://charts.corp --username bob --password Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "az_login_service_principal",
            "az login --service-principal -u http://app -p Xk9#mQ2vLp8! --tenant t",
            &["password"],
        ),
        ("net_user", "net user bob Xk9#mQ2vLp8! /add", &["password"]),
        ("net_user_prompts", "net user bob * /add", &[]),
        (
            "net_use",
            "net use Z: \\\\fs01\\share Xk9#mQ2vLp8! /user:CORP\\bob",
            &["password"],
        ),
        (
            "net_in_prose",
            "the net user count rose by Xk9#mQ2vLp8!",
            &[],
        ),
        (
            "zip_password",
            "zip -P Xk9#mQ2vLp8! out.zip a.txt",
            &["password"],
        ),
        ("zip_in_prose", "zip code Xk9#mQ2vLp8! here", &[]),
        // The twenty-third session's second attack.
        (
            "docker_login_piped_in_through_sudo",
            "echo Xk9#mQ2vLp8! | sudo docker login -u bob --password-stdin",
            &["password"],
        ),
        (
            "docker_login_here_string",
            "docker login -u bob --password-stdin <<< 'Xk9#mQ2vLp8!'",
            &["password"],
        ),
        (
            "docker_login_after_four_global_options_with_values",
            "docker --context prod --config /tmp/c --log-level debug --tlscacert ca.pem login -u bob -p Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "helm_registry_login_after_a_global_option",
            "helm --kube-context prod registry login reg.io -u bob -p Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "net_use_password_after_the_user_switch",
            "net use \\\\srv\\IPC$ /user:admin Xk9#mQ2vLp8!",
            &["password"],
        ),
        ("net_user_switch_first", "net user /add bob Xk9#mQ2vLp8!", &["password"]),
        (
            "net_use_in_prose",
            "net use of funds: \\\\finance\\reports Q3-2024-Final! was approved",
            &[],
        ),
        ("zip_grouped_options", "zip -rP Xk9#mQ2vLp8! out.zip dir", &["password"]),
        ("unzip_password", "unzip -P Xk9#mQ2vLp8! out.zip", &["password"]),
        (
            "smbclient_password_after_a_user_name",
            "smbclient //srv/share -U bob Xk9#mQ2vLp8!",
            &["password"],
        ),
        (
            "docker_login_locale_quoted_password",
            "docker login -u bob -p $\"Xk9#mQ2vLp8!\"",
            &["password"],
        ),
        (
            "redis_cli_prompt_in_a_transaction",
            "127.0.0.1:6379(TX)> AUTH Xk9#mQ2vLp8!",
            &["password"],
        ),
        ("login_in_prose", "the login -p Xk9#mQ2vLp8! form", &[]),
        // The third attack: a quoted part inside a glued word, an escaped
        // blank, the string after PowerShell's switches, an IPv6 prompt.
        ("seven_zip_glued_quoted_with_blanks", "7z a -p\"Xk9#mQ2vLp8! two\" x.7z", &["password"]),
        ("redis_cli_glued_quoted", "redis-cli -a\"Xk9#mQ2vLp8! two\"", &["password"]),
        ("zip_glued_quoted", "zip -P\"Xk9#mQ2vLp8! two\" x.zip f", &["password"]),
        (
            "docker_login_password_with_a_quoted_part",
            "docker login -p Xk9#\"mQ2vLp8! two\" r.io",
            &["password"],
        ),
        ("docker_login_escaped_blanks", "docker login -p Xk9#mQ2vLp8!\\ two", &["password"]),
        (
            "powershell_secure_string_after_its_switches",
            "$p = ConvertTo-SecureString -AsPlainText \"Xk9#mQ2vLp8!\" -Force",
            &["password"],
        ),
        ("redis_cli_ipv6_prompt", "[::1]:6379> AUTH Xk9#mQ2vLp8!", &["password"]),
        ("redis_cli_prompts_back_to_back", "127.0.0.1:6379> AUTH 127.0.0.1:6379> AUTH", &[]),
        // The fifth attack: a command that ends the text on a continuation
        // character or a Markdown code span's backtick.
        (
            "docker_login_in_a_code_span",
            "`docker login -u bob -p Xk9#mQ2vLp8! reg.io`",
            &["password"],
        ),
        ("redis_cli_ending_on_a_caret", "redis-cli -a Xk9#mQ2vLp8! ^", &["password"]),
        (
            "sshpass_ending_on_a_backslash",
            "run: sshpass -p Xk9#mQ2vLp8! ssh h \\",
            &["password"],
        ),
        // The fourth attack: after the switches the words are options.
        (
            "net_user_option_then_a_word",
            "net user administrator /active:yes build:123-45-6789 version",
            &[],
        ),
        // The fourth attack: a named superscript reference after a password
        // (the build before found it; the session's first versions read it
        // as a digit of the value).
        ("password_before_a_named_superscript", "password: mango7pie&sup1;", &["password"]),
        ("password_before_a_legacy_superscript_name", "password=lksgdi3&sup3", &["password"]),
    ];
    let s = scanner();
    for (name, text, want) in cases {
        assert_eq!(kinds(text), *want, "{name}: {text}");
        let mut v = json!({ "t": text });
        s.redact_value(&mut v);
        let out = v["t"].as_str().unwrap_or_default();
        if !want.is_empty() {
            assert!(
                !out.contains("mQ2vLp8") && !out.contains("LmX7vN4"),
                "{name}: {out}"
            );
        }
    }
}

/// Characters that render as nothing (zero-width space, soft hyphen, word
/// joiner, …) do not split a card or a token for the scanner: the second
/// reading drops them, and the match is redacted over them where it stands
/// (twelfth attack pass, finding 6).
#[test]
fn invisible_characters_do_not_split_what_they_hide() {
    let s = scanner();
    // (behaviour, text, kind found or None, what must not survive redaction)
    let cases = [
        (
            "card_split_by_zero_width_spaces",
            "4539\u{200b}5787\u{200b}6362\u{200b}1486",
            Some("credit_card"),
            "6362",
        ),
        (
            "card_split_by_soft_hyphens",
            "4539\u{ad}5787\u{ad}6362\u{ad}1486",
            Some("credit_card"),
            "6362",
        ),
        (
            "card_split_by_escaped_zero_width_spaces",
            r"4539\u200b5787\u200b6362\u200b1486",
            Some("credit_card"),
            "6362",
        ),
        (
            "aws_key_split_by_a_word_joiner",
            "AKIA2OGYBAH6\u{2060}RYX7KQ5D",
            Some("aws_access_key"),
            "RYX7KQ5D",
        ),
        (
            "github_token_split_by_a_zero_width_space",
            "ghp_IGCc07wS9MNKU3zQ\u{200b}bDbfamYYSj8Y1sM7rJAy",
            Some("github_pat"),
            "bDbfamYY",
        ),
        (
            "token_split_by_a_byte_order_mark_and_a_tag",
            "ghp_IGCc07wS9MNK\u{feff}U3zQbDbfamYYSj8Y1\u{e0041}sM7rJAy",
            Some("github_pat"),
            "bDbfamYY",
        ),
        (
            "card_failing_luhn_split_by_zero_width_spaces",
            "4539\u{200b}5787\u{200b}6362\u{200b}1487",
            None,
            "",
        ),
        (
            "words_joined_by_zero_width_joiners",
            "pass\u{200d}word re\u{200b}set for the team",
            None,
            "",
        ),
    ];
    for (name, text, kind, secret) in cases {
        let found: Vec<String> = s.scan_text(text).into_iter().map(|m| m.kind).collect();
        assert_eq!(
            found,
            kind.into_iter().map(str::to_owned).collect::<Vec<_>>(),
            "{name}"
        );
        let mut v = json!({ "t": text });
        s.redact_value(&mut v);
        let out = v["t"].as_str().unwrap_or_default();
        if kind.is_some() {
            assert!(
                !out.contains(secret) && out.starts_with("[REDACTED:"),
                "{name}: {out}"
            );
        } else {
            assert_eq!(out, text, "{name}");
        }
    }
}

/// Text is read a second time as a reader decodes it — JSON escapes left in
/// text, HTML references, fullwidth digits, locale spaces and dashes — and
/// what is found there is redacted where it stands (tenth review M2, M3).
#[test]
fn text_is_read_again_as_its_reader_decodes_it() {
    let s = scanner();
    // (behaviour, text, a kind found, what must not survive redaction)
    let cases = [
        (
            "go_escaped_xml",
            r#"{"cfg":"\u003cpassword\u003eHx9!kq2Lz7\u003c/password\u003e"}"#,
            "password",
            "Hx9!kq2Lz7",
        ),
        (
            "php_escaped_slashes",
            r#"{"dsn":"postgres:\/\/admin:Sup3rS3cretPw@db.internal:5432\/app"}"#,
            "db_url_with_password",
            "Sup3rS3cretPw",
        ),
        (
            "html_escaped_page",
            "<pre>&lt;add key=&quot;password&quot; value=&quot;Hx9kq2Lz7q&quot; /&gt;</pre>",
            "password",
            "Hx9kq2Lz7q",
        ),
        (
            "fullwidth_card",
            "カード番号：４１１１－１１１１－１１１１－１１１１",
            "credit_card",
            "４１１１",
        ),
        (
            "card_grouped_with_no_break_spaces",
            "card 4111\u{a0}1111\u{a0}1111\u{a0}1111 exp 12/29",
            "credit_card",
            "4111\u{a0}1111",
        ),
        (
            "card_grouped_with_narrow_spaces",
            "carte 4111\u{202f}1111\u{202f}1111\u{202f}1111",
            "credit_card",
            "1111\u{202f}1111",
        ),
        (
            "fullwidth_card_written_as_json_escapes",
            r"card \uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
            "credit_card",
            r"\uff14\uff11\uff11\uff11",
        ),
        (
            "fullwidth_card_written_as_html_references",
            "card &#65300;&#65297;&#65297;&#65297;&#xff11;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;&#65297;",
            "credit_card",
            "&#65300;&#65297;",
        ),
        (
            "card_grouped_with_escaped_no_break_spaces",
            r"card 4111\u00a01111\u00a01111\u00a01111",
            "credit_card",
            r"4111\u00a01111",
        ),
        // A helper's attack (twenty-first session) and the limits noted then.
        (
            "card_grouped_with_named_en_dashes",
            "card 4111&ndash;1111&ndash;1111&ndash;1111 exp",
            "credit_card",
            "4111&ndash;1111",
        ),
        (
            "card_grouped_with_named_minus_signs",
            "card 4111&minus;1111&minus;1111&minus;1111",
            "credit_card",
            "1111&minus;1111",
        ),
        (
            "card_split_by_named_soft_hyphens",
            "card 4111&shy;1111&shy;1111&shy;1111",
            "credit_card",
            "1111&shy;1111",
        ),
        (
            "card_grouped_with_windows_1252_dashes",
            "card 4111&#150;1111&#150;1111&#150;1111",
            "credit_card",
            "4111&#150;1111",
        ),
        (
            "card_in_references_without_semicolons",
            "card &#52&#49&#49&#49 1111 1111 1111",
            "credit_card",
            "&#52&#49&#49&#49 1111",
        ),
        (
            "card_in_zero_padded_references",
            "card &#x00000ff14;&#x00000ff11;&#x00000ff11;&#x00000ff11;1111 1111 1111",
            "credit_card",
            "&#x00000ff14;&#x00000ff11;",
        ),
        (
            "card_grouped_with_legacy_nbsp",
            "card 4111&nbsp1111&nbsp1111&nbsp1111",
            "credit_card",
            "4111&nbsp1111",
        ),
        (
            "card_grouped_with_small_hyphen_minus",
            "card 4111\u{fe63}1111\u{fe63}1111\u{fe63}1111",
            "credit_card",
            "4111\u{fe63}1111",
        ),
        (
            "card_in_devanagari_digits",
            "card \u{96a}\u{967}\u{967}\u{967} \u{967}\u{967}\u{967}\u{967} \u{967}\u{967}\u{967}\u{967} \u{967}\u{967}\u{967}\u{967}",
            "credit_card",
            "\u{96a}\u{967}\u{967}\u{967}",
        ),
        (
            "card_in_arabic_indic_digits",
            "card \u{664}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}",
            "credit_card",
            "\u{664}\u{661}\u{661}\u{661}",
        ),
        (
            "card_in_mathematical_bold_digits",
            "card \u{1d7d2}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}\u{1d7cf}",
            "credit_card",
            "\u{1d7d2}\u{1d7cf}",
        ),
        (
            "card_in_circled_digits",
            "card \u{2463}\u{2460}\u{2460}\u{2460} \u{2460}\u{2460}\u{2460}\u{2460} \u{2460}\u{2460}\u{2460}\u{2460} \u{2460}\u{2460}\u{2460}\u{2460}",
            "credit_card",
            "\u{2463}\u{2460}",
        ),
        (
            "phone_with_a_fullwidth_plus",
            "call \u{ff0b}\u{ff14}\u{ff14} \u{ff12}\u{ff10} \u{ff17}\u{ff19}\u{ff14}\u{ff16} \u{ff10}\u{ff19}\u{ff15}\u{ff18} now",
            "phone",
            "\u{ff17}\u{ff19}\u{ff14}\u{ff16}",
        ),
        (
            "email_with_a_small_at",
            "mail taro\u{fe6b}example.com",
            "email",
            "taro\u{fe6b}example",
        ),
        (
            "email_with_an_ideographic_full_stop",
            "mail taro@gmail\u{3002}com",
            "email",
            "taro@gmail",
        ),
        (
            "email_in_named_references",
            "mail taro&commat;example&period;com",
            "email",
            "taro&commat;example",
        ),
        // The narrow reading keeps what a newly decoded neighbour would hide
        // by joining the secret (a helper's attack, twenty-second session:
        // each was found before the wide reading and passed with it alone).
        (
            "card_before_a_superscript_footnote",
            "Carte 4111\u{a0}1111\u{a0}1111\u{a0}1111\u{b2} expir\u{e9}e",
            "credit_card",
            "4111\u{a0}1111",
        ),
        (
            "iban_before_a_superscript_footnote",
            "IBAN DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00\u{b9} (see note)",
            "iban",
            "3704\u{a0}0044",
        ),
        (
            "fullwidth_card_before_a_circled_digit",
            "カード番号：４１１１－１１１１－１１１１－１１１１①",
            "credit_card",
            "４１１１－１１１１",
        ),
        (
            "phone_after_a_named_colon",
            "<td>Tel&colon;&#40;415&#41; 555-2671</td>",
            "phone",
            "555-2671",
        ),
        (
            "card_in_references_after_a_named_dash",
            "Card&ndash;&#52;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;&#49;",
            "credit_card",
            "&#52;&#49;&#49;&#49;&#49;",
        ),
        (
            "email_before_a_named_dash",
            "contact: john.doe&#64;example.com&ndash;sales",
            "email",
            "john.doe&#64;example",
        ),
        (
            "token_split_by_a_zero_width_space_before_a_named_dash",
            "token ghp_aB3dE5fG7hJ9kL1mN\u{200b}2pQ4rS6tU8vW0xY2zA4&ndash;expires",
            "github_pat",
            "aB3dE5fG7hJ9kL1mN",
        ),
        // The same attack's bypasses.
        (
            "card_in_keycap_digits",
            "card 4\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}1\u{fe0f}\u{20e3}",
            "credit_card",
            "4\u{fe0f}\u{20e3}1",
        ),
        (
            "card_in_underlined_digits",
            "card 4\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}1\u{332}",
            "credit_card",
            "4\u{332}1\u{332}1",
        ),
        (
            "card_in_named_superscript_references",
            "card 4&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;&sup1;",
            "credit_card",
            "4&sup1;&sup1;",
        ),
        (
            "card_grouped_with_named_hyphen_bullets",
            "card 4111&hybull;1111&hybull;1111&hybull;1111",
            "credit_card",
            "4111&hybull;1111",
        ),
        (
            "card_grouped_with_json_escaped_references",
            r"card 4111\u0026ndash;1111\u0026ndash;1111\u0026ndash;1111",
            "credit_card",
            r"4111\u0026ndash;1111",
        ),
        (
            "fullwidth_card_grouped_with_long_vowel_marks",
            "カード４１１１ー１１１１ー１１１１ー１１１１",
            "credit_card",
            "４１１１ー１１１１",
        ),
        (
            "email_with_a_one_dot_leader",
            "mail john.doe@gmail\u{2024}com now",
            "email",
            "john.doe@gmail",
        ),
        (
            "email_with_an_ideographic_stop_before_a_zero_width_space",
            "mail john.doe@gmail\u{3002}\u{200b}com now",
            "email",
            "john.doe@gmail",
        ),
        (
            "phone_with_a_small_plus",
            "call \u{fe62}44 20 7946 0958",
            "phone",
            "7946 0958",
        ),
        (
            "card_in_outlined_digits",
            "card \u{1ccf4}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}\u{1ccf1}",
            "credit_card",
            "\u{1ccf4}\u{1ccf1}",
        ),
        (
            "card_in_json_escaped_superscript_ones",
            r"card 4\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9",
            "credit_card",
            r"4\u00b9\u00b9",
        ),
        // The third attack: one digit so drawn inside a number is read.
        (
            "card_with_one_middle_digit_in_subscript",
            "card 4539 57\u{2078}7 6362 1486 exp",
            "credit_card",
            "4539 57",
        ),
        (
            "card_with_a_leading_superscript_digit",
            "card \u{2074}4539 5787 6362 1486 exp",
            "credit_card",
            "4539 5787",
        ),
        (
            "card_with_a_circled_digit_ending_a_group",
            "card 4539 5787 636\u{2461} 1486 exp",
            "credit_card",
            "4539 5787",
        ),
        (
            "card_in_alternating_styles",
            "card \u{2074}5\u{b3}9 \u{2075}7\u{2078}7 \u{2076}3\u{2076}2 \u{b9}4\u{2078}6 exp",
            "credit_card",
            "\u{2074}5\u{b3}9",
        ),
        (
            "card_in_mathematical_digits_alternating_with_superscripts",
            "card \u{2074}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}\u{b9}\u{1d7cf}",
            "credit_card",
            "\u{2074}\u{1d7cf}",
        ),
        (
            "card_in_superscripts_split_by_combining_marks",
            "card 4\u{b9}\u{301}\u{b9}\u{301}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}\u{b9}",
            "credit_card",
            "4\u{b9}",
        ),
        (
            "ssn_with_one_superscript_digit",
            "ssn 123-4\u{2075}-6789",
            "ssn",
            "6789",
        ),
        (
            "token_with_one_superscript_digit",
            "token ghp_aB\u{b3}dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4 x",
            "github_pat",
            "dE5fG7hJ9",
        ),
        // The second attack of the twenty-second session.
        (
            "iban_whose_tail_mathematical_digits_make_a_card",
            "pay to GB82 WEST 1234 5698 7654 32\u{1d7ce}\u{1d7d4}\u{1d7d0}\u{1d7d4}\u{1d7cf}\u{1d7d7}\u{1d7d0}\u{1d7cf} now",
            "credit_card",
            "GB82 WEST",
        ),
        (
            "card_in_named_dashes_before_a_footnote",
            "card 4539&ndash;5787&ndash;6362&ndash;1486\u{b2} expired",
            "credit_card",
            "4539&ndash;5787",
        ),
        (
            "card_in_devanagari_digits_before_a_footnote",
            "card \u{96a}\u{96b}\u{969}\u{96f} \u{96b}\u{96d}\u{96e}\u{96d} \u{96c}\u{969}\u{96c}\u{968} \u{967}\u{96a}\u{96e}\u{96c}\u{b2} expired",
            "credit_card",
            "\u{96a}\u{96b}\u{969}\u{96f}",
        ),
        (
            "token_in_italic_letters_with_letterlike_h",
            "token \u{1d454}\u{210e}\u{1d45d}_\u{1d44e}\u{1d435}3\u{1d451}\u{1d438}5\u{1d453}\u{1d43a}7\u{210e}\u{1d43d}9\u{1d458}\u{1d43f}1\u{1d45a}\u{1d441}2\u{1d45d}\u{1d444}4\u{1d45f}\u{1d446}6\u{1d461}\u{1d448}8\u{1d463}\u{1d44a}0\u{1d465}\u{1d44c}2\u{1d467}\u{1d434}4 here",
            "github_pat",
            "\u{1d44e}\u{1d435}3\u{1d451}\u{1d438}5\u{1d453}\u{1d43a}7",
        ),
        (
            "email_in_italic_letters_with_letterlike_h",
            "\u{1d457}\u{1d45c}\u{210e}\u{1d45b}.\u{210e}@\u{210e}\u{1d45c}\u{1d461}\u{1d45a}\u{1d44e}\u{1d456}\u{1d459}.\u{1d450}\u{1d45c}\u{1d45a}",
            "email",
            "\u{1d457}\u{1d45c}\u{210e}\u{1d45b}",
        ),
        (
            "card_grouped_with_superscript_minus_signs",
            "4539\u{207b}5787\u{207b}6362\u{207b}1486",
            "credit_card",
            "4539\u{207b}5787",
        ),
        (
            "email_with_an_ideographic_stop_before_many_zero_width_spaces",
            "write to taro@example\u{3002}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}com",
            "email",
            "taro@example",
        ),
        // The twenty-third session's attack: a styled digit inside a secret
        // where nothing only the wide reading decodes is near, so no
        // footnote is to be kept apart (the narrow reading finds a secret a
        // footnote follows).
        (
            "iban_with_a_superscript_check_digit",
            "iban GB8\u{b2} WEST 1234 5698 7654 32 ok",
            "iban",
            "WEST 1234",
        ),
        (
            "email_whose_name_ends_in_a_superscript",
            "mail bob\u{2077}@example.com now",
            "email",
            "@example.com",
        ),
        (
            "token_ending_in_a_superscript",
            "gh ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM\u{2075} x",
            "github_pat",
            "aB3dE5gH7",
        ),
        (
            "phone_area_code_ending_in_a_superscript",
            "call +1 (55\u{2075}) 123-4567 now",
            "phone",
            "123-4567",
        ),
        (
            "card_grouped_by_long_vowel_marks_with_a_superscript",
            "4111\u{30fc}111\u{b9}\u{30fc}1111\u{30fc}1111",
            "credit_card",
            "1111\u{30fc}1111",
        ),
        // The second attack: a styled digit glued before a secret spelled
        // with JSON-escaped references stays as it is (the build before
        // found these; the session's first change lost them).
        (
            "ssn_after_a_circled_digit_and_an_escaped_reference",
            "note\u{277c}\\u0026#49;23-45-6789",
            "ssn",
            "45-6789",
        ),
        (
            "card_after_a_superscript_glued_to_a_word",
            "x\u{b9}\\u0026#52;111111111111111",
            "credit_card",
            "111111111111111",
        ),
        (
            "card_after_a_superscript_and_a_space",
            "x\u{b9} \\u0026#52;111 1111 1111 1111",
            "credit_card",
            "1111 1111 1111",
        ),
        (
            "token_after_a_superscript_glued_to_a_word",
            "key\u{b9}\\u0026#103;hp_aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4",
            "github_pat",
            "aB3dE5fG7",
        ),
        (
            "iban_after_a_circled_digit_after_a_reference",
            "x&#49\u{2461}\\u0026#71;B82 WEST 1234 5698 7654 32.",
            "iban",
            "WEST 1234",
        ),
        (
            "email_in_mathematical_bold_letters",
            "\u{1d423}\u{1d428}\u{1d421}\u{1d427}@\u{1d41e}\u{1d431}\u{1d41a}\u{1d426}\u{1d429}\u{1d425}\u{1d41e}.\u{1d41c}\u{1d428}\u{1d426}",
            "email",
            "\u{1d423}\u{1d428}",
        ),
    ];
    for (name, text, kind, secret) in cases {
        let found: Vec<String> = s.scan_text(text).into_iter().map(|m| m.kind).collect();
        assert!(found.iter().any(|k| k == kind), "{name}: {found:?}");
        let mut v = json!({ "t": text });
        let redacted = s.redact_value(&mut v);
        assert!(!redacted.is_empty(), "{name}");
        let out = v["t"].as_str().unwrap_or_default();
        assert!(!out.contains(secret), "{name}: {out}");
        assert!(out.contains("[REDACTED:"), "{name}: {out}");
    }
    // Plain text with none of these is read once; so is CJK prose, whose
    // full stops and punctuation read as themselves, and R&D.
    for plain in [
        "password: see the vault & the docs",
        "東京都の人口です。4111は番号。「新しい」計画、発表。",
        "R&D and AT&T",
    ] {
        assert!(super::text::second_readings(plain).is_empty(), "{plain}");
    }
}

/// A catalogue list read a second time (its clean strings from the memo)
/// is found and redacted as reading it gives, and a budget runs out where
/// reading makes it run out: the memo charges each string's work again.
#[test]
fn lists_read_from_the_clean_memo_find_and_spend_what_reading_does() {
    let key = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let tool = |i: usize, secret: &str| {
        json!({"name": format!("get_{i}"), "description": format!("Reads item {i}. {secret}"),
               "inputSchema": {"type": "object", "properties": {
                   "password": {"type": "string", "description": "Account that owns it."},
                   "repo": {"type": "string", "description": "Repository name."}}}})
    };
    let list =
        |secret: &str| json!({"tools": (0..20).map(|i| tool(i % 5, secret)).collect::<Vec<_>>()});
    // (name, scanner, list)
    let cases = [
        ("clean_list", scanner(), list("")),
        ("a_secret_in_every_tool", scanner(), list(key)),
        ("budget_runs_out_midway", scanner().with_budget(1, 0), {
            let mut l = list("");
            l["tools"][10]["description"] = json!(dense(2048));
            l
        }),
    ];
    for (name, memo, doc) in cases {
        let fresh = match name {
            "budget_runs_out_midway" => scanner().with_budget(1, 0),
            _ => scanner(),
        };
        let mut want = doc.clone();
        let want_found = findings_of(&redact_result(&fresh, &mut want));
        for pass in 1..=3 {
            let mut got = doc.clone();
            let found = findings_of(&redact_list(&memo, &mut got));
            assert_eq!(found, want_found, "{name}: pass {pass}");
            assert_eq!(got, want, "{name}: pass {pass}");
            assert_eq!(
                findings_of(&scan_list(&memo, &doc)),
                findings_of(&scan_result(&fresh, &doc)),
                "{name}: pass {pass}"
            );
        }
        if name == "budget_runs_out_midway" {
            assert!(
                want_found.iter().any(|(k, _)| k == BUDGET_EXCEEDED_KIND),
                "{want_found:?}"
            );
            assert!(
                !want_found.iter().any(|(_, p)| p.starts_with("/tools/9/")),
                "the strings before it were read: {want_found:?}"
            );
        }
    }
}

/// Response heads that never repeat (a server's per-answer request id) fill
/// their own memo, bounded, and never push a list's strings out of theirs.
#[test]
fn heads_that_never_repeat_leave_the_lists_memo_alone() {
    let s = scanner();
    let list = json!({"tools": [{"name": "get_issue", "description": "Reads an issue."}]});
    assert!(scan_list(&s, &list).is_empty());
    let remembered = s.clean.borrow().strings.len();
    assert!(remembered > 0);
    for i in 0..5_000 {
        let head = format!("content-type: application/json\nx-request-id: req-{i:08}\n");
        assert!(s.scan_recurring(&head).is_empty());
    }
    assert_eq!(s.clean.borrow().strings.len(), remembered);
    let heads = s.heads.borrow();
    assert!(heads.bytes <= HEAD_MEMO_BYTES && !heads.strings.is_empty());
}
