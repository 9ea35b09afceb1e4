//! Strict parsing of MCP JSON-RPC 2.0 messages sent by a client.
//!
//! Anything ambiguous is refused rather than guessed at: the server behind us
//! may interpret an odd message differently from how we decided it.

use crate::json::{case_variant, parse_strict_folded, JsonError};
use serde_json::{Map, Value};

/// One JSON-RPC message as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A client's answer to a server request (sampling, elicitation, roots):
    /// its `result` or `error` member, kept so a rewritten body carries it.
    Response {
        id: Value,
        answer: AnswerMember,
    },
}

impl Message {
    pub fn id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => Some(id),
            Message::Notification { .. } => None,
        }
    }
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }
    pub fn params(&self) -> &Value {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => params,
            Message::Response { .. } => &Value::Null,
        }
    }
}

/// What a client's answer carries.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerMember {
    Result(Value),
    Error(Value),
}

/// A POST body: one message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

/// A refusal before any policy is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// JSON-RPC -32700 (HTTP 400).
    Parse(String),
    /// JSON-RPC -32600 (HTTP 400).
    Invalid(String),
}

impl ProtocolError {
    pub fn code(&self) -> i64 {
        match self {
            ProtocolError::Parse(_) => -32700,
            ProtocolError::Invalid(_) => -32600,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            ProtocolError::Parse(m) | ProtocolError::Invalid(m) => m,
        }
    }
}

impl From<JsonError> for ProtocolError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Syntax(_) => ProtocolError::Parse(e.to_string()),
            other => ProtocolError::Invalid(other.to_string()),
        }
    }
}

/// Parse a request body into its message(s).
pub fn parse_body(bytes: &[u8], max_depth: usize) -> Result<Body, ProtocolError> {
    let doc = parse_strict_folded(bytes, max_depth)?;
    match doc {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ProtocolError::Invalid("empty batch".into()));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    parse_message(v).map_err(|e| match e {
                        ProtocolError::Invalid(m) => {
                            ProtocolError::Invalid(format!("batch element {i}: {m}"))
                        }
                        other => other,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .and_then(|ms| check_batch_ids(&ms).map(|()| Body::Batch(ms)))
        }
        other => parse_message(other).map(Body::Single),
    }
}

fn parse_message(v: Value) -> Result<Message, ProtocolError> {
    let Value::Object(mut obj) = v else {
        return Err(ProtocolError::Invalid(
            "a JSON-RPC message must be an object".into(),
        ));
    };
    match obj.remove("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        _ => return Err(ProtocolError::Invalid("\"jsonrpc\" must be \"2.0\"".into())),
    }
    let id = obj.remove("id");
    let method = obj.remove("method");
    let params = obj.remove("params");
    let result = obj.remove("result");
    let error = obj.remove("error");
    // Members JSON-RPC 2.0 does not define are refused: a server might give them
    // a meaning we did not decide on.
    if let Some(extra) = obj.keys().next() {
        return Err(ProtocolError::Invalid(format!(
            "unexpected member {extra:?}"
        )));
    }
    if let Some(id) = &id {
        check_id(id)?;
    }
    match (method, id) {
        (Some(method), id) => {
            if result.is_some() || error.is_some() {
                return Err(ProtocolError::Invalid(
                    "a message cannot be both a request and a response".into(),
                ));
            }
            let Value::String(method) = method else {
                return Err(ProtocolError::Invalid("\"method\" must be a string".into()));
            };
            if let Some(problem) = name_problem(NameKind::Method, &method) {
                return Err(ProtocolError::Invalid(format!("\"method\" {problem}")));
            }
            let params = match params {
                None => Value::Null,
                Some(Value::Object(p)) => {
                    if let Some((member, name)) = case_variant(&p, &PARAMS_READ) {
                        return Err(ProtocolError::Invalid(format!(
                            "params member {member:?} differs only in case from {name:?} \
                             (a server that matches names case-insensitively would read it as {name:?})"
                        )));
                    }
                    Value::Object(p)
                }
                Some(_) => {
                    return Err(ProtocolError::Invalid(
                        "MCP \"params\" must be an object".into(),
                    ))
                }
            };
            Ok(match id {
                Some(id) => Message::Request { id, method, params },
                None => Message::Notification { method, params },
            })
        }
        (None, Some(id)) => {
            if params.is_some() {
                return Err(ProtocolError::Invalid(
                    "a response has no \"params\"".into(),
                ));
            }
            match (result, error) {
                (Some(r), None) => Ok(Message::Response {
                    id,
                    answer: AnswerMember::Result(r),
                }),
                (None, Some(e)) => Ok(Message::Response {
                    id,
                    answer: AnswerMember::Error(e),
                }),
                _ => Err(ProtocolError::Invalid(
                    "a response needs exactly one of \"result\" and \"error\"".into(),
                )),
            }
        }
        (None, None) => Err(ProtocolError::Invalid("missing \"method\"".into())),
    }
}

/// The `params` members the filter reads (target, arguments, metadata, and
/// what DLP scans: a completion's argument and context, a retried request's
/// input responses; a list's cursor, which tells pins whether the answer is
/// the first page). A member spelled in another case is refused even alone:
/// Go's encoding/json reads `"Arguments"` as the arguments the filter never
/// scanned, and `"Cursor"` as a cursor, making a later page look like the
/// whole list.
pub const PARAMS_READ: [&str; 8] = [
    "name",
    "arguments",
    "uri",
    "_meta",
    "argument",
    "context",
    "inputResponses",
    "cursor",
];

/// The largest integer every JSON reader holds exactly: 2^53 - 1. A
/// JavaScript server reads `9007199254740993` as `9007199254740992` and answers
/// with that id, which then matches no request we planned a response check for.
pub const MAX_EXACT_ID: i64 = (1 << 53) - 1;

/// MCP narrows JSON-RPC ids to strings and integers (never null); integers must
/// be ones every server reads exactly (±(2^53 - 1)).
fn check_id(id: &Value) -> Result<(), ProtocolError> {
    const NOT_EXACT: &str =
        "\"id\" must lie within ±(2^53 - 1): larger integers are not read exactly by every server";
    match id {
        Value::String(_) => Ok(()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-MAX_EXACT_ID..=MAX_EXACT_ID).contains(&i) => Ok(()),
            Some(_) => Err(ProtocolError::Invalid(NOT_EXACT.into())),
            None if n.is_u64() => Err(ProtocolError::Invalid(NOT_EXACT.into())),
            None => Err(ProtocolError::Invalid(
                "\"id\" must be a string or an integer".into(),
            )),
        },
        _ => Err(ProtocolError::Invalid(
            "\"id\" must be a string or an integer".into(),
        )),
    }
}

/// Two requests (or two answers) in one batch with ids that read alike, `1`
/// and `"1"` included (a client that matches `Number(id)` confuses them): the
/// server's answers could not be told apart, so neither could our checks.
fn check_batch_ids(messages: &[Message]) -> Result<(), ProtocolError> {
    let mut seen: std::collections::HashSet<(bool, String)> = std::collections::HashSet::new();
    for m in messages {
        let (is_request, id) = match m {
            Message::Request { id, .. } => (true, id),
            Message::Response { id, .. } => (false, id),
            Message::Notification { .. } => continue,
        };
        let text = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !seen.insert((is_request, text)) {
            return Err(ProtocolError::Invalid(format!("batch repeats the id {id}")));
        }
    }
    Ok(())
}

/// What a message acts on, for rule matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    None,
    Tool(String),
    Resource(String),
    Prompt(String),
}

impl Target {
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::None => None,
            Target::Tool(s) | Target::Resource(s) | Target::Prompt(s) => Some(s),
        }
    }
}

/// The methods whose params name a tool, a resource or a prompt.
pub fn target_of(method: &str, params: &Value) -> Result<Target, ProtocolError> {
    let field = |key: &str| -> Result<String, ProtocolError> {
        match params.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(ProtocolError::Invalid(format!(
                "{method} needs a string \"params.{key}\""
            ))),
        }
    };
    let name = |kind: NameKind| -> Result<String, ProtocolError> {
        let n = field("name")?;
        match name_problem(kind, &n) {
            Some(problem) => Err(ProtocolError::Invalid(format!(
                "{method}: \"params.name\" {problem}"
            ))),
            None => Ok(n),
        }
    };
    Ok(match method {
        "tools/call" => Target::Tool(name(NameKind::Tool)?),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Target::Resource(field("uri")?)
        }
        "prompts/get" => Target::Prompt(name(NameKind::Prompt)?),
        _ => Target::None,
    })
}

/// The longest tool, prompt or method name accepted. MCP names tools and
/// prompts in at most 128 characters; longer ones are refused before any rule
/// is matched (a megabyte name against hundreds of patterns costs CPU for
/// every caller on the worker).
pub const MAX_NAME_LEN: usize = 128;

/// Which kind of name [`name_problem`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Tool,
    Prompt,
    Method,
}

/// MCP 2025-11-25, server/tools "Tool names" (SEP-986): 1 to 128 characters
/// from `A-Z a-z 0-9 _ - .`.
pub fn is_tool_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Why a tool, prompt or method name is refused before any rule sees it, if it
/// is. Tool names follow the character set MCP gives them; prompt and method
/// names, for which MCP gives none, are printable ASCII (spaces only in prompt
/// names). Either
/// way a name is never compared with rules in a form a server might read
/// differently: a server that applies Unicode NFKC runs `delete_repo` for
/// the fullwidth `ｄｅｌｅｔｅ_repo`, which no deny rule on `delete_*` matches,
/// so non-ASCII names are refused rather than folded (folding would need the
/// Unicode tables in the filter, and still guess what each server does).
pub fn name_problem(kind: NameKind, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is longer than {MAX_NAME_LEN} bytes (MCP names are at most 128 characters)"
        ));
    }
    let allowed = |c: char| match kind {
        NameKind::Tool => is_tool_name_char(c),
        // Prompt names are shown to people ("Code Review"): a space folds to
        // nothing else, so it is kept.
        NameKind::Prompt => c == ' ' || c.is_ascii_graphic(),
        NameKind::Method => c.is_ascii_graphic(),
    };
    let bad = name.chars().find(|c| !allowed(*c))?;
    Some(match kind {
        NameKind::Tool => format!(
            "holds U+{:04X}, outside the characters MCP gives tool names (A-Z a-z 0-9 _ - .)",
            u32::from(bad)
        ),
        NameKind::Prompt => format!(
            "holds U+{:04X}; prompt names are printable ASCII",
            u32::from(bad)
        ),
        NameKind::Method => format!(
            "holds U+{:04X}; method names are printable ASCII without spaces",
            u32::from(bad)
        ),
    })
}

/// `params.arguments` of a message, or Null.
pub fn arguments(params: &Value) -> &Value {
    params.get("arguments").unwrap_or(&Value::Null)
}

/// Key for matching response ids to request ids (ids are strings or integers).
pub fn id_key(id: &Value) -> String {
    // `to_string`'s text, written without the formatting machinery: an
    // answer's id is keyed several times while it is rewritten. The ids
    // clients send (an integer, a string) are written here without
    // serde_json's serializer, whose code each call would otherwise touch:
    // a string as canonical JSON writes it, serde_json's text byte for byte
    // (a test holds both ways to the same text).
    let plain = match id {
        Value::Number(n) => n
            .as_u64()
            .map(|u| (u, ""))
            .or_else(|| n.as_i64().map(|i| (i.unsigned_abs(), "-")))
            .map(|(magnitude, sign)| {
                let mut key = String::from(sign);
                crate::json::push_decimal(&mut key, magnitude);
                key
            }),
        Value::String(s) => {
            let mut key = Vec::with_capacity(s.len() + 2);
            crate::json::write_str(s, &mut key);
            // Escapes are ASCII and the rest is `s`'s own UTF-8.
            String::from_utf8(key).ok()
        }
        _ => None,
    };
    plain.unwrap_or_else(|| {
        String::from_utf8(crate::json::to_bytes(id))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}

/// An error with `"id": null` (or, as server-everything writes it, none) and
/// no result: JSON-RPC's answer when the server could not tell which request
/// it refuses (an unknown session, a body it could not read).
pub fn is_anonymous_error(m: &Map<String, Value>) -> bool {
    m.get("id").is_none_or(Value::is_null) && m.contains_key("error") && !m.contains_key("result")
}

/// Read a JSON-RPC response or batch of responses the server sent.
pub fn response_objects(doc: &mut Value) -> Vec<&mut Map<String, Value>> {
    match doc {
        Value::Object(m) => vec![m],
        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_key_is_serde_jsons_text_of_the_id() {
        let ids = [
            json!(0),
            json!(7),
            json!(-1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(1e300),
            json!(-0.0),
            json!(null),
            json!(true),
            json!(""),
            json!("abc-123"),
            json!("with space and / slash and ~"),
            json!("quote \" inside"),
            json!("back\\slash"),
            json!("tab\there"),
            json!("nul\u{0}"),
            json!("unit\u{1f} sep"),
            json!("del\u{7f}"),
            json!("caf\u{e9} \u{2028} \u{1f600}"),
            json!({"a": 1}),
            json!([1, "x"]),
        ];
        for id in ids {
            let serde_text = serde_json::to_string(&id).unwrap_or_default();
            assert_eq!(id_key(&id), serde_text, "{id:?}");
        }
    }

    fn parse(s: &str) -> Result<Body, ProtocolError> {
        parse_body(s.as_bytes(), 64)
    }

    #[test]
    fn an_id_is_keyed_by_its_json_text() {
        let cases = [
            ("integer", json!(5), "5"),
            ("negative", json!(-7), "-7"),
            ("double", json!(5.5), "5.5"),
            ("string", json!("5"), "\"5\""),
            ("escaped_string", json!("a\"b\u{1}é"), "\"a\\\"b\\u0001é\""),
            ("null", json!(null), "null"),
        ];
        for (name, id, want) in cases {
            assert_eq!(id_key(&id), want, "{name}");
            assert_eq!(id_key(&id), id.to_string(), "{name}");
        }
    }

    #[test]
    fn accepted_message_shapes() {
        let cases = [
            (
                "request",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            ),
            (
                "request_string_id",
                r#"{"jsonrpc":"2.0","id":"a","method":"ping","params":{}}"#,
            ),
            (
                "notification",
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            ),
            ("client_response", r#"{"jsonrpc":"2.0","id":7,"result":{}}"#),
            (
                "client_error_response",
                r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}"#,
            ),
            (
                "batch",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
            ),
            (
                "largest_exact_ids",
                r#"[{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"},{"jsonrpc":"2.0","id":-9007199254740991,"method":"ping"}]"#,
            ),
            (
                "batch_request_and_answer_share_an_id",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"result":{}}]"#,
            ),
        ];
        for (name, body) in cases {
            assert!(parse(body).is_ok(), "{name}: {:?}", parse(body));
        }
    }

    #[test]
    fn refused_message_shapes() {
        let cases = [
            ("malformed_json", "{", -32700),
            (
                "wrong_version",
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                -32600,
            ),
            ("missing_version", r#"{"id":1,"method":"ping"}"#, -32600),
            (
                "null_id",
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                -32600,
            ),
            (
                "float_id",
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                -32600,
            ),
            (
                "array_params",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}"#,
                -32600,
            ),
            (
                "unknown_member",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}"#,
                -32600,
            ),
            (
                "request_and_response",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
                -32600,
            ),
            (
                "response_with_both",
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                -32600,
            ),
            ("empty_batch", "[]", -32600),
            (
                "batch_with_scalar",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},3]"#,
                -32600,
            ),
            ("scalar_body", "42", -32600),
            (
                "duplicate_name_key",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"forbidden"}}"#,
                -32600,
            ),
            (
                "name_twice_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_repo"}}"#,
                -32600,
            ),
            (
                "arguments_twice_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"ARGUMENTS":{"x":1}}}"#,
                -32600,
            ),
            (
                "long_s_folds_to_s",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"argument\u017f":{"x":1}}}"#,
                -32600,
            ),
            (
                "kelvin_sign_folds_to_k",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"key":1,"\u212aey":2}}}"#,
                -32600,
            ),
            (
                "dotted_capital_i_folds_to_i",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"id":1,"\u0130d":2}}}"#,
                -32600,
            ),
            (
                "input_responses_alone_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","InputResponses":{"k":{}}}}"#,
                -32600,
            ),
            (
                "completion_argument_alone_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{},"Argument":{"value":"x"}}}"#,
                -32600,
            ),
            (
                "completion_context_alone_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{},"CONTEXT":{}}}"#,
                -32600,
            ),
            (
                "arguments_alone_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Arguments":{"x":1}}}"#,
                -32600,
            ),
            (
                "name_alone_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"delete_repo"}}"#,
                -32600,
            ),
            (
                "list_cursor_in_other_case",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"Cursor":"page-2"}}"#,
                -32600,
            ),
            (
                "list_cursor_with_long_s",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cur\u017for":"page-2"}}"#,
                -32600,
            ),
            (
                "long_s_arguments_alone",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","argument\u017f":{"x":1}}}"#,
                -32600,
            ),
            (
                "case_collision_deep_in_arguments",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":[{"amount":1,"Amount":9}]}}}"#,
                -32600,
            ),
            (
                "id_past_2_53",
                r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#,
                -32600,
            ),
            (
                "id_just_past_2_53_minus_1",
                r#"{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}"#,
                -32600,
            ),
            (
                "negative_id_past_2_53",
                r#"{"jsonrpc":"2.0","id":-9007199254740992,"method":"ping"}"#,
                -32600,
            ),
            (
                "u64_id",
                r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
                -32600,
            ),
            (
                "exponent_id",
                r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#,
                -32600,
            ),
            (
                "batch_repeating_a_request_id",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
                -32600,
            ),
            (
                "batch_same_id_as_number_and_string",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":"1","method":"ping"}]"#,
                -32600,
            ),
            (
                "method_longer_than_128_bytes",
                &format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#,
                    "m".repeat(129)
                ),
                -32600,
            ),
            (
                "batch_repeating_an_answer_id",
                r#"[{"jsonrpc":"2.0","id":"s1","result":{}},{"jsonrpc":"2.0","id":"s1","result":{}}]"#,
                -32600,
            ),
            (
                "duplicate_method_key",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
                -32600,
            ),
        ];
        for (name, body, code) in cases {
            match parse(body) {
                Err(e) => assert_eq!(e.code(), code, "{name}: {e:?}"),
                Ok(b) => panic!("{name}: accepted {b:?}"),
            }
        }
    }

    #[test]
    fn unicode_escaped_tool_name_is_decoded() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0065cho"}}"#;
        let Ok(Body::Single(m)) = parse(body) else {
            panic!("not parsed")
        };
        assert_eq!(
            target_of(m.method().unwrap_or(""), m.params()),
            Ok(Target::Tool("echo".into()))
        );
    }

    #[test]
    fn targets_need_string_names() {
        let p: Value = serde_json::json!({"name": 5});
        assert!(target_of("tools/call", &p).is_err());
        assert!(target_of("resources/read", &serde_json::json!({})).is_err());
        assert_eq!(target_of("tools/list", &Value::Null), Ok(Target::None));
        let long = serde_json::json!({"name": "t".repeat(MAX_NAME_LEN + 1)});
        assert!(target_of("tools/call", &long).is_err());
        assert!(target_of("prompts/get", &long).is_err());
        let longest = serde_json::json!({"name": "t".repeat(MAX_NAME_LEN)});
        assert!(target_of("tools/call", &longest).is_ok());
    }

    #[test]
    fn name_table() {
        let t = NameKind::Tool;
        let p = NameKind::Prompt;
        let m = NameKind::Method;
        let cases: [(&str, NameKind, &str, Option<&str>); 16] = [
            ("tool_plain_name_passes", t, "get_issue", None),
            ("tool_dots_and_dashes_pass", t, "admin.tools-v2", None),
            ("tool_longest_name_passes", t, &"t".repeat(128), None),
            (
                "tool_name_too_long_is_refused",
                t,
                &"t".repeat(129),
                Some("longer than 128"),
            ),
            ("tool_empty_name_is_refused", t, "", Some("empty")),
            (
                "tool_fullwidth_name_is_refused",
                t,
                "\u{ff44}\u{ff45}lete_repo",
                Some("U+FF44"),
            ),
            (
                "tool_cyrillic_lookalike_is_refused",
                t,
                "\u{0435}cho",
                Some("U+0435"),
            ),
            ("tool_slash_is_refused", t, "user/update", Some("U+002F")),
            ("tool_glob_star_is_refused", t, "ech*", Some("U+002A")),
            ("tool_space_is_refused", t, "get issue", Some("U+0020")),
            ("prompt_punctuation_passes", p, "code:review/v2", None),
            (
                "prompt_zero_width_is_refused",
                p,
                "a\u{200b}b",
                Some("U+200B"),
            ),
            ("prompt_space_passes", p, "Code Review", None),
            ("method_space_is_refused", m, "tools/ call", Some("U+0020")),
            ("method_plain_passes", m, "notifications/cancelled", None),
            (
                "method_fullwidth_slash_is_refused",
                m,
                "tools\u{ff0f}call",
                Some("U+FF0F"),
            ),
        ];
        for (name, kind, text, want) in cases {
            let got = name_problem(kind, text);
            match (got.as_deref(), want) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!(g.contains(w), "{name}: {g:?} lacks {w:?}"),
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn fullwidth_tool_call_is_refused_before_any_rule() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\uff44\uff45lete_repo"}}"#;
        let Ok(Body::Single(m)) = parse(body) else {
            panic!("not parsed")
        };
        assert!(matches!(
            target_of(m.method().unwrap_or(""), m.params()),
            Err(ProtocolError::Invalid(_))
        ));
        let bad_method = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools\u{ff0f}call\"}";
        assert!(parse(bad_method).is_err());
    }
}
