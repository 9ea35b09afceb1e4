//! The strict parse's direct reader: the body's bytes straight into a
//! `serde_json::Value`, for the bodies every request and answer carries.
//!
//! Why: serde_json's `Deserializer` reads a string a byte at a time through
//! an escape table and drives a visitor through its generic machinery; under
//! V8 that was ~22,000 instructions and ~190 lines of code missed in the
//! first-level cache per exchange of the benchmark's 4 KB call (its
//! `parse_str`, `deserialize_any` and map access), where a string's bytes can
//! be searched sixteen at a time for the three bytes that end or interrupt
//! it ([`lanes::next`], the search the canonical writer already uses).
//!
//! Speed only, never a second meaning: [`read`] either returns exactly the
//! value the reference path ([`super::parse_by_serde`]) returns for the same
//! text, or `None`, and the caller then runs the reference path, which gives
//! the value or the refusal (its error text included). Anything this reader
//! is not sure of is `None`: every refusal (syntax, duplicate or folded
//! keys, depth), a lone surrogate, and every number but a plain integer of at
//! most eighteen digits, which goes to serde_json's own number reader. So a
//! refusal costs a second parse, and the tests and the `strict_json` fuzz
//! target hold the two to the same answers.

use super::{folded_collision, KeyCheck, MAX_SUPPORTED_DEPTH};
use crate::dlp::lanes::{self, Stop};
use serde_json::{Map, Value};

/// `text` (checked UTF-8) as one JSON value, or `None` where the reference
/// path must decide. `max_depth` as [`super::parse_strict`] counts it.
pub(super) fn read(text: &str, max_depth: usize, keys: KeyCheck) -> Option<Value> {
    let mut reader = Reader {
        text,
        at: 0,
        max_depth: max_depth.min(MAX_SUPPORTED_DEPTH),
        keys,
    };
    reader.skip_blanks();
    let value = reader.value(0)?;
    reader.skip_blanks();
    (reader.at == reader.text.len()).then_some(value)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    max_depth: usize,
    keys: KeyCheck,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// RFC 8259's four blanks, as serde_json skips them.
    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// One value at `self.at`, inside `depth` containers.
    fn value(&mut self, depth: usize) -> Option<Value> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Option<Value> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word).then(|| {
            self.at = end;
            value
        })
    }

    /// An object at `self.at`, itself the `depth`th container.
    fn object(&mut self, depth: usize) -> Option<Value> {
        if depth > self.max_depth {
            return None;
        }
        self.at += 1;
        let mut members = Map::new();
        self.skip_blanks();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Value::Object(members));
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_blanks();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            self.skip_blanks();
            let value = self.value(depth)?;
            match members.entry(key) {
                serde_json::map::Entry::Occupied(_) => return None,
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
            }
            self.skip_blanks();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.skip_blanks();
                }
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        if self.keys == KeyCheck::Folded && folded_collision(&members).is_some() {
            return None;
        }
        Some(Value::Object(members))
    }

    /// An array at `self.at`, itself the `depth`th container.
    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > self.max_depth {
            return None;
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_blanks();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_blanks();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.skip_blanks();
                }
                b']' => {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    /// A string at `self.at` (its opening quote), decoded.
    fn string(&mut self) -> Option<String> {
        let start = self.at + 1;
        let mut stop = lanes::next(self.bytes(), start, Stop::JsonEscape)?;
        // Nearly every string: no escape, one copy. `"` and `\` are ASCII, so
        // both ends are character boundaries of the checked text.
        if self.bytes().get(stop) == Some(&b'"') {
            self.at = stop + 1;
            return self.text.get(start..stop).map(str::to_owned);
        }
        let mut out = String::new();
        let mut from = start;
        loop {
            out.push_str(self.text.get(from..stop)?);
            match self.bytes().get(stop)? {
                b'"' => {
                    self.at = stop + 1;
                    return Some(out);
                }
                b'\\' => from = self.escape(stop + 1, &mut out)?,
                // A control byte inside a string: the reference refuses it.
                _ => return None,
            }
            stop = lanes::next(self.bytes(), from, Stop::JsonEscape)?;
        }
    }

    /// The escape whose letter is at `at`, pushed to `out`; where the text
    /// goes on after it.
    fn escape(&self, at: usize, out: &mut String) -> Option<usize> {
        let decoded = match self.bytes().get(at)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4(at + 1)?;
                let (c, end) = match unit {
                    // A high surrogate counts only with its low half in the
                    // escape right after it; every other case is the
                    // reference's to refuse.
                    0xD800..=0xDBFF => {
                        if self.bytes().get(at + 5..at + 7)? != b"\\u" {
                            return None;
                        }
                        let low = self.hex4(at + 7)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(scalar)?, at + 11)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(unit)?, at + 5),
                };
                out.push(c);
                return Some(end);
            }
            _ => return None,
        };
        out.push(decoded);
        Some(at + 1)
    }

    /// Four hex digits at `at`, either case, as serde_json reads them.
    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes().get(at..at + 4)?;
        digits.iter().try_fold(0u32, |unit, &d| {
            let nibble = char::from(d).to_digit(16)?;
            Some(unit << 4 | nibble)
        })
    }

    /// A number at `self.at`. RFC 8259's grammar is checked here; the value
    /// of all but a plain integer of up to eighteen digits (which fits both
    /// `u64` and, negated, `i64`) is serde_json's: its float reader is exact
    /// (`float_roundtrip`), `-0` is a float to it, and longer integers
    /// become floats where they leave `u64`/`i64`.
    fn number(&mut self) -> Option<Value> {
        const PLAIN_DIGITS: usize = 18;
        let start = self.at;
        let negative = self.peek()? == b'-';
        let first = start + usize::from(negative);
        let mut end = match self.bytes().get(first)? {
            b'0' => first + 1,
            b'1'..=b'9' => self.digits_end(first + 1),
            _ => return None,
        };
        let integer_end = end;
        if self.bytes().get(end) == Some(&b'.') {
            end = self.digits_end(end + 1);
            if end == integer_end + 1 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes().get(end) {
            let mut exponent = end + 1;
            if let Some(b'+' | b'-') = self.bytes().get(exponent) {
                exponent += 1;
            }
            end = self.digits_end(exponent);
            if end == exponent {
                return None;
            }
        }
        self.at = end;
        let digits = self.bytes().get(first..integer_end)?;
        if end == integer_end && digits.len() <= PLAIN_DIGITS {
            let magnitude = digits
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match (negative, magnitude) {
                (false, _) => return Some(Value::from(magnitude)),
                // `-0` is serde_json's float; the rest fit `i64` negated.
                (true, 0) => {}
                (true, _) => return Some(Value::from(-i64::try_from(magnitude).ok()?)),
            }
        }
        // A number serde_json cannot hold is its refusal, never `null`.
        match serde_json::from_str::<Value>(self.text.get(start..end)?).ok()? {
            Value::Number(n) => Some(Value::Number(n)),
            _ => None,
        }
    }

    fn digits_end(&self, from: usize) -> usize {
        let run = self.bytes().get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        });
        from + run
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_by_serde, KeyCheck};
    use super::read;

    /// The reference's answer and the reader's for one text: the reader
    /// gives the same value or none, and none wherever the reference refuses.
    /// Values compare by their text too: `-0.0 == 0.0` as floats.
    fn agree(text: &str, depth: usize, keys: KeyCheck) -> Option<bool> {
        let direct = read(text, depth, keys);
        let reference = parse_by_serde(text, depth, keys);
        match (&direct, &reference) {
            (Some(d), Ok(r)) => {
                assert_eq!(d, r, "{text:?}");
                assert_eq!(d.to_string(), r.to_string(), "{text:?}");
                Some(true)
            }
            (Some(d), Err(e)) => panic!("{text:?}: read {d} where the reference refuses: {e}"),
            (None, Ok(_)) => Some(false),
            (None, Err(_)) => None,
        }
    }

    #[test]
    fn the_reader_reads_what_the_reference_reads_table() {
        // (name, text, whether the reader itself reads it)
        let cases: &[(&str, &str, Option<bool>)] = &[
            (
                "plain_object",
                r#"{"a":1,"b":[true,false,null]}"#,
                Some(true),
            ),
            (
                "blanks_everywhere",
                " \t\r\n{ \"a\" : [ 1 , 2 ] }\n",
                Some(true),
            ),
            ("empty_containers", r#"{"a":{},"b":[],"c":""}"#, Some(true)),
            (
                "escapes",
                r#""a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u0000""#,
                Some(true),
            ),
            ("upper_case_hex", r#""\u00E9\u00e9""#, Some(true)),
            (
                "surrogate_pair",
                r#""\ud83d\ude00 \uD83D\uDE00""#,
                Some(true),
            ),
            ("raw_utf8", "\"héllo ✓ 😀\"", Some(true)),
            ("escape_in_key", r#"{"n\u0061me":1}"#, Some(true)),
            (
                "integers",
                "[0,-1,7,123456789012345678,-123456789012345678]",
                Some(true),
            ),
            (
                "nineteen_digits_to_serde_json",
                "[1234567890123456789,-1234567890123456789]",
                Some(true),
            ),
            ("u64_max", "18446744073709551615", Some(true)),
            ("past_u64_a_float", "18446744073709551616", Some(true)),
            ("past_i64_a_float", "-9223372036854775809", Some(true)),
            ("i64_min", "-9223372036854775808", Some(true)),
            ("negative_zero_a_float", "-0", Some(true)),
            (
                "fractions_and_exponents",
                "[1.5,-0.0,1e5,1E-5,2.5e+3,0.1,1.7976931348623157e308]",
                Some(true),
            ),
            ("seventeen_digit_decimal", "0.30000000000000004", Some(true)),
            ("lone_high_surrogate", r#""\ud800""#, None),
            ("lone_low_surrogate", r#""\udc00""#, None),
            ("high_then_not_low", r#""\ud800\u0041""#, None),
            ("high_then_text", r#""\ud800abcdef""#, None),
            ("control_byte_in_string", "\"a\u{1}b\"", None),
            ("bad_escape", r#""\x41""#, None),
            ("short_unicode_escape", r#""\u12""#, None),
            ("unterminated_string", r#""abc"#, None),
            ("trailing_comma_object", r#"{"a":1,}"#, None),
            ("trailing_comma_array", "[1,]", None),
            ("leading_zero", "01", None),
            ("bare_minus", "-", None),
            ("dot_without_digits", "1.", None),
            ("exponent_without_digits", "1e+", None),
            ("plus_sign", "+1", None),
            ("out_of_range_float", "1e400", None),
            ("trailing_data", "{} {}", None),
            ("two_values", "1 2", None),
            ("empty", "", None),
            ("only_blanks", " \n", None),
            ("duplicate_key", r#"{"a":1,"a":2}"#, None),
            ("duplicate_key_by_escape", r#"{"a":1,"\u0061":2}"#, None),
            ("missing_colon", r#"{"a" 1}"#, None),
            ("key_not_a_string", "{1:2}", None),
            ("truncated_literal", "tru", None),
            ("literal_with_tail", "nullx", None),
            ("byte_order_mark", "\u{feff}{}", None),
            ("vertical_tab_blank", "\u{b}{}", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(agree(text, 64, KeyCheck::Exact), *want, "{name}");
        }
    }

    #[test]
    fn depth_and_folded_keys_are_left_to_the_reference() {
        assert_eq!(agree("[[[1]]]", 3, KeyCheck::Exact), Some(true));
        assert_eq!(agree("[[[[1]]]]", 3, KeyCheck::Exact), None);
        assert_eq!(agree(r#"{"a":{"b":{}}}"#, 3, KeyCheck::Exact), Some(true));
        assert_eq!(agree(r#"{"a":{"b":{"c":{}}}}"#, 3, KeyCheck::Exact), None);
        let folded = r#"{"p":{"name":"echo","Name":"delete_repo"}}"#;
        assert_eq!(agree(folded, 8, KeyCheck::Exact), Some(true));
        assert_eq!(agree(folded, 8, KeyCheck::Folded), None);
        // Past serde_json's own limit of 128: capped, as the reference is.
        let deep = format!("{}{}", "[".repeat(121), "]".repeat(121));
        assert_eq!(agree(&deep, 500, KeyCheck::Exact), None);
    }

    /// Generated texts, valid and broken: the reader and the reference agree
    /// on every one, and the reader reads nearly every valid one itself.
    #[test]
    fn generated_texts_read_as_the_reference_reads_them() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\t",
            "\"",
            "\\",
            "\\u",
            "\\ud83d",
            "\\ude00",
            "\\n",
            "\\\"",
            "0",
            "1",
            "-",
            ".",
            "e",
            "E",
            "+",
            "12",
            "1.5",
            "-0",
            "true",
            "false",
            "null",
            "\"a\"",
            "\"name\"",
            "\"Name\"",
            "é",
            "😀",
            "\u{1}",
            "x",
            "123456789012345678",
            "1234567890123456789",
            "1e400",
            "\"\\u0041\"",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut read_itself = 0;
        let mut accepted = 0;
        for round in 0..60_000 {
            let text = match round % 2 {
                // Structured: a random value, then maybe one piece spliced in.
                0 => {
                    let mut text = String::new();
                    random_value(&mut next, 0, &mut text);
                    if next(3) == 0 {
                        let at = next(text.len() + 1);
                        let at = (0..=at)
                            .rev()
                            .find(|&i| text.is_char_boundary(i))
                            .unwrap_or(0);
                        text.insert_str(at, PIECES[next(PIECES.len())]);
                    }
                    text
                }
                _ => (0..next(12)).map(|_| PIECES[next(PIECES.len())]).collect(),
            };
            let keys = match next(2) {
                0 => KeyCheck::Exact,
                _ => KeyCheck::Folded,
            };
            match agree(&text, 1 + next(6), keys) {
                Some(true) => {
                    read_itself += 1;
                    accepted += 1;
                }
                Some(false) => accepted += 1,
                None => {}
            }
        }
        // Every text the reference accepts, the reader reads itself (its
        // numbers past a plain integer through serde_json's number reader):
        // what it leaves to the reference is only what the reference refuses.
        assert!(accepted > 10_000, "{accepted}");
        assert_eq!(
            read_itself, accepted,
            "texts left to the reference although valid"
        );
    }

    fn random_value(next: &mut impl FnMut(usize) -> usize, depth: usize, out: &mut String) {
        const STRINGS: &[&str] = &[
            "",
            "a",
            "name",
            "Name",
            "NAME",
            "na\\u006de",
            "\\\"",
            "\\\\",
            "é",
            "😀",
            "\\ud83d\\ude00",
            "tab\\tnew\\nline",
            "K",
            "\\u212a",
            "ſ",
            "s",
            "\\/",
            "a long string with spaces that runs past sixteen bytes, and then some more",
        ];
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "1",
            "-1",
            "42",
            "1.5",
            "-2.25e-3",
            "1E9",
            "123456789012345678",
            "-123456789012345678",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1",
            "5e-324",
            "1.7976931348623157e308",
        ];
        let blank = |next: &mut dyn FnMut(usize) -> usize| [" ", "", "", "\n", "\t "][next(5)];
        // Below four levels any kind; deeper, a number (a leaf).
        let kind = if depth < 4 { next(7) } else { 6 };
        match kind {
            0 => {
                out.push('{');
                for i in 0..next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(blank(next));
                    out.push('"');
                    out.push_str(STRINGS[next(STRINGS.len())]);
                    out.push('"');
                    out.push_str(blank(next));
                    out.push(':');
                    random_value(next, depth + 1, out);
                }
                out.push('}');
            }
            1 => {
                out.push('[');
                for i in 0..next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_value(next, depth + 1, out);
                }
                out.push_str(blank(next));
                out.push(']');
            }
            2 | 3 => {
                out.push('"');
                out.push_str(STRINGS[next(STRINGS.len())]);
                out.push('"');
            }
            4 => out.push_str(NUMBERS[next(NUMBERS.len())]),
            5 => out.push_str(["true", "false", "null"][next(3)]),
            _ => out.push_str(NUMBERS[next(NUMBERS.len())]),
        }
        out.push_str(blank(next));
    }
}
