//! The `Content-Type` of MCP bodies, read strictly (RFC 9110 §8.3.1).
//!
//! The filter decides on a body read as UTF-8 JSON. A server reads it in the
//! charset the header names: the TypeScript SDK's Express app (`express.json()`)
//! decodes any `charset=utf-*`, so `charset=utf-7` turns `"delete+AF8-repo"`,
//! which we read as a harmless name, into `delete_repo` on the server. A body is
//! therefore accepted only when no reader can decode it differently: JSON with
//! no charset or `charset=utf-8`, one header, well-formed. Everything else is
//! refused, never guessed at (415).

use std::fmt;

/// A media type's essence (`type/subtype`, lower-cased) and its charset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    /// The `charset` parameter's value (quotes and escapes removed), if any.
    pub charset: Option<String>,
}

/// Why a `Content-Type` value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaTypeError {
    /// Not `type/subtype *(; name=value)` as RFC 9110 spells it. Repeated
    /// header lines arrive combined with `,` and land here too.
    Malformed,
    /// `charset` given twice (readers disagree on which one wins), or the word
    /// anywhere but in the one `charset` parameter read: RFC 2231's
    /// `charset*=''utf-7`, `charset*0=`, or inside a quoted value whose quoting
    /// another parser splits differently. Python's HTTP clients find a charset
    /// in `p="\\"; q="; charset=utf-7; r="`, which we read as two plain values.
    AmbiguousCharset,
}

impl fmt::Display for MediaTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaTypeError::Malformed => f.write_str("malformed Content-Type"),
            MediaTypeError::AmbiguousCharset => {
                f.write_str("charset given more than once or in a form readers disagree on")
            }
        }
    }
}

impl MediaType {
    /// `application/json` in UTF-8: the only request body the filter accepts.
    pub fn is_utf8_json(&self) -> bool {
        self.essence == "application/json" && self.is_utf8()
    }

    /// No charset (JSON and SSE are UTF-8 by definition: RFC 8259 §8.1, the
    /// HTML Living Standard for `text/event-stream`) or exactly `utf-8`.
    pub fn is_utf8(&self) -> bool {
        self.charset
            .as_deref()
            .is_none_or(|c| c.eq_ignore_ascii_case("utf-8"))
    }
}

const CHARSET: &[u8] = b"charset";

/// Parse one `Content-Type` field value.
pub fn parse(value: &str) -> Result<MediaType, MediaTypeError> {
    // What nearly every client and server sends: no parameters to read.
    for plain in ["application/json", "text/event-stream"] {
        if value.eq_ignore_ascii_case(plain) {
            return Ok(MediaType {
                essence: plain.to_owned(),
                charset: None,
            });
        }
    }
    let value = value.trim_matches(is_ows);
    let (essence, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let essence = essence.trim_end_matches(is_ows);
    let (kind, sub) = essence.split_once('/').ok_or(MediaTypeError::Malformed)?;
    if !is_token(kind) || !is_token(sub) {
        return Err(MediaTypeError::Malformed);
    }
    let mut charset = None;
    // parameters = *( OWS ";" OWS [ parameter ] ); `rest` starts after a ";".
    loop {
        rest = rest.trim_start_matches(is_ows);
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix(';') {
            rest = after;
            continue;
        }
        let (name, after_name) = rest.split_once('=').ok_or(MediaTypeError::Malformed)?;
        if !is_token(name) {
            return Err(MediaTypeError::Malformed);
        }
        let (param_value, after_value) = parameter_value(after_name)?;
        if name.eq_ignore_ascii_case("charset") {
            if charset.is_some() {
                return Err(MediaTypeError::AmbiguousCharset);
            }
            charset = Some(param_value);
        }
        rest = after_value.trim_start_matches(is_ows);
        match rest.strip_prefix(';') {
            Some(after) => rest = after,
            None if rest.is_empty() => break,
            None => return Err(MediaTypeError::Malformed),
        }
    }
    // Whatever the grammar says, a reader that finds "charset" elsewhere may
    // decode by it: only the one parameter we read may name it.
    let mentions = value
        .as_bytes()
        .windows(CHARSET.len())
        .filter(|w| w.eq_ignore_ascii_case(CHARSET))
        .count();
    if mentions != usize::from(charset.is_some()) {
        return Err(MediaTypeError::AmbiguousCharset);
    }
    Ok(MediaType {
        essence: essence.to_ascii_lowercase(),
        charset,
    })
}

/// A token or a quoted-string at the start of `s`: its value and what follows.
fn parameter_value(s: &str) -> Result<(String, &str), MediaTypeError> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(|c: char| !is_tchar(c)).unwrap_or(s.len());
        if end == 0 {
            return Err(MediaTypeError::Malformed);
        }
        return Ok((s[..end].to_owned(), &s[end..]));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &quoted[i + 1..])),
            // quoted-pair = "\" ( HTAB / SP / VCHAR ); obs-text is refused below.
            '\\' => match chars.next() {
                Some((_, e)) if e == '\t' || (' '..='~').contains(&e) => out.push(e),
                _ => return Err(MediaTypeError::Malformed),
            },
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E. Non-ASCII (obs-text)
            // is refused: readers disagree on how to decode it.
            '\t' | ' '..='~' => out.push(c),
            _ => return Err(MediaTypeError::Malformed),
        }
    }
    Err(MediaTypeError::Malformed)
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_json_content_types() {
        let cases = [
            ("bare", "application/json"),
            ("upper_case_essence", "Application/JSON"),
            ("charset_utf8", "application/json; charset=utf-8"),
            ("charset_upper_case", "application/json;charset=UTF-8"),
            ("charset_quoted", "application/json; charset=\"utf-8\""),
            (
                "charset_quoted_pair",
                "application/json; charset=\"utf\\-8\"",
            ),
            ("parameter_name_case", "application/json; CHARSET=utf-8"),
            (
                "other_parameter",
                "application/json; profile=x; charset=utf-8",
            ),
            ("empty_parameters", "application/json;; charset=utf-8;"),
            (
                "surrounding_whitespace",
                " \tapplication/json ; charset=utf-8 \t",
            ),
        ];
        for (name, value) in cases {
            let parsed = parse(value);
            assert!(
                parsed.as_ref().is_ok_and(MediaType::is_utf8_json),
                "{name}: {value:?} -> {parsed:?}"
            );
        }
    }

    #[test]
    fn refused_json_content_types() {
        let cases = [
            ("utf7", "application/json; charset=utf-7"),
            ("utf7_quoted_upper", "application/json; charset=\"UTF-7\""),
            ("utf16", "application/json; charset=utf-16le"),
            ("utf8_without_dash", "application/json; charset=utf8"),
            ("latin1", "application/json; charset=iso-8859-1"),
            (
                "utf8_then_utf7",
                "application/json; charset=utf-8; charset=utf-7",
            ),
            (
                "utf7_hidden_in_escape",
                "application/json; charset=\"utf\\-7\"",
            ),
            (
                "combined_header_lines",
                "application/json, application/json; charset=utf-7",
            ),
            (
                "comma_in_token",
                "application/json; charset=utf-8,charset=utf-7",
            ),
            ("space_before_equals", "application/json; charset =utf-7"),
            ("space_after_equals", "application/json; charset= utf-8"),
            ("unterminated_quote", "application/json; charset=\"utf-8"),
            ("junk_after_quote", "application/json; charset=\"utf-8\"x"),
            (
                "non_ascii_in_quote",
                "application/json; charset=\"utf-8\u{e9}\"",
            ),
            ("parameter_without_value", "application/json; charset"),
            ("empty_value", "application/json; charset="),
            ("no_subtype", "application"),
            ("other_type", "text/plain"),
            ("json_suffix_type", "application/vnd.api+json"),
            ("empty", ""),
            ("rfc2231_charset", "application/json; charset*=''utf-7"),
            (
                "rfc2231_continuation",
                "application/json; charset*0=utf; charset*1=-7",
            ),
            (
                "charset_inside_a_quoted_value",
                "application/json; p=\"\\\\\"; q=\"; charset=utf-7; r=\"",
            ),
            (
                "charset_in_another_name",
                "application/json; xcharset=utf-7",
            ),
            (
                "utf8_and_a_second_mention",
                "application/json; charset=utf-8; x=\"charset=utf-7\"",
            ),
        ];
        for (name, value) in cases {
            let parsed = parse(value);
            assert!(
                !parsed.as_ref().is_ok_and(MediaType::is_utf8_json),
                "{name}: {value:?} accepted as {parsed:?}"
            );
        }
    }

    #[test]
    fn charset_is_unquoted_and_repeats_are_refused() {
        assert_eq!(
            parse("text/event-stream; charset=\"a\\\"b\""),
            Ok(MediaType {
                essence: "text/event-stream".into(),
                charset: Some("a\"b".into())
            })
        );
        assert_eq!(
            parse("application/json; charset=utf-8; Charset=utf-8"),
            Err(MediaTypeError::AmbiguousCharset)
        );
    }
}
