//! The audit collector's one-pass check of a line as its writer hashed it:
//! a JSON object written compactly, the way [`super::canonical`] and
//! serde_json write it, its top-level members handed over as raw bytes.
//! Speed only: what such a line means is [`super::parse_strict`]'s and
//! [`super::canonical`]'s business; the tests below hold this check to
//! serde_json.

use super::MAX_SUPPORTED_DEPTH;

/// Check `raw` in one pass as a JSON object written compactly, the way
/// [`super::canonical`] and serde_json write it, and hand each top-level
/// member to `member` as (key, value): the key's bytes between its quotes and
/// the value's raw JSON text. For a reader that needs the exact bytes and a few
/// members (the audit collector, checking a line against the hash its writer
/// took over those bytes) without building the tree.
///
/// Checked: UTF-8; the JSON grammar of RFC 8259 throughout (string escapes,
/// surrogate pairs, number syntax; a number must be finite as an f64, as for
/// serde_json); nothing after the object; objects and arrays nested at most
/// `max_depth` deep, the object itself being 1 (as [`super::parse_strict`]
/// counts, and capped at [`MAX_SUPPORTED_DEPTH`] like it). Refused although valid
/// JSON, as a canonical writer never produces them and a caller relies on
/// the raw bytes: whitespace between tokens, a control byte anywhere (compact
/// writers escape them inside strings), an escape in any key, and the keys
/// of any object out of strictly increasing byte order (code-point order,
/// which leaves no room for a duplicate key). `false` when any check fails
/// or `member` returns `false`.
pub fn compact_object_members<'a>(
    raw: &'a [u8],
    max_depth: usize,
    mut member: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> bool {
    // Whole-text checks first, over all bytes at vector speed: no control
    // byte, and UTF-8 (settled by the same pass when every byte is ASCII).
    let (control, any_bits) = raw.iter().fold((false, 0u8), |(control, bits), &b| {
        (control | (b < 0x20), bits | b)
    });
    if control || (!any_bits.is_ascii() && std::str::from_utf8(raw).is_err()) {
        return false;
    }
    let max_depth = max_depth.min(MAX_SUPPORTED_DEPTH);
    compact_members(raw, max_depth, &mut member).is_some()
}

fn compact_members<'a>(
    raw: &'a [u8],
    max_depth: usize,
    member: &mut impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> Option<()> {
    if raw.first() != Some(&b'{') || max_depth == 0 {
        return None;
    }
    let mut i = 1;
    if raw.get(i) == Some(&b'}') {
        i += 1;
    } else {
        let mut last_key: Option<&[u8]> = None;
        loop {
            let (value_start, key) = key_end(raw, i)?;
            if last_key.is_some_and(|last| key <= last) {
                return None;
            }
            last_key = Some(key);
            let end = value_end(raw, value_start, 1, max_depth)?;
            if !member(key, raw.get(value_start..end)?) {
                return None;
            }
            i = end + 1;
            match raw.get(end)? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    (i == raw.len()).then_some(())
}

/// Where the JSON value starting at `raw[i]` ends, inside a container at
/// nesting level `level`. Iterative: a deep value cannot exhaust the stack.
fn value_end(raw: &[u8], mut i: usize, level: usize, max_depth: usize) -> Option<usize> {
    // Containers open inside this value: bit k of `objects` says whether the
    // (k+1)th is an object (else an array). `max_depth` ≤ 120 < 128 bits.
    let (mut objects, mut open) = (0u128, 0usize);
    // The last key of each object open inside this value, innermost last.
    let mut last_keys: Vec<&[u8]> = Vec::new();
    loop {
        // A value starts at `i`.
        match *raw.get(i)? {
            c @ (b'{' | b'[') => {
                if level + open + 1 > max_depth {
                    return None;
                }
                let (object, close) = (c == b'{', if c == b'{' { b'}' } else { b']' });
                if raw.get(i + 1) == Some(&close) {
                    i += 2;
                } else {
                    objects = (objects & !(1 << open)) | (u128::from(object) << open);
                    open += 1;
                    i = if object {
                        let (next, key) = key_end(raw, i + 1)?;
                        last_keys.push(key);
                        next
                    } else {
                        i + 1
                    };
                    continue;
                }
            }
            b'"' => i = string_end(raw, i)?.0,
            b't' => i = literal_end(raw, i, b"true")?,
            b'f' => i = literal_end(raw, i, b"false")?,
            b'n' => i = literal_end(raw, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(raw, i)?,
            _ => return None,
        }
        // A value ended at `i`: a comma starts the next one, a bracket closes
        // the container (itself a value that ended).
        loop {
            let Some(top) = open.checked_sub(1) else {
                return Some(i);
            };
            let in_object = (objects >> top) & 1 == 1;
            match (*raw.get(i)?, in_object) {
                (b',', true) => {
                    let (next, key) = key_end(raw, i + 1)?;
                    let last = last_keys.last_mut()?;
                    if key <= *last {
                        return None;
                    }
                    *last = key;
                    i = next;
                }
                (b',', false) => i += 1,
                (b'}', true) | (b']', false) => {
                    if in_object {
                        last_keys.pop();
                    }
                    i += 1;
                    open = top;
                    continue;
                }
                _ => return None,
            }
            break;
        }
    }
}

/// After an object key and its colon, starting at `raw[i]`, and the key's
/// bytes between its quotes. A key with an escape is refused: its bytes
/// would not be its text, so they could not be compared for order.
fn key_end(raw: &[u8], i: usize) -> Option<(usize, &[u8])> {
    let (end, escaped) = string_end(raw, i)?;
    if escaped || raw.get(end) != Some(&b':') {
        return None;
    }
    Some((end + 1, raw.get(i + 1..end - 1)?))
}

/// After the string starting at `raw[i]`, and whether it holds an escape.
/// Control bytes were refused for the whole text before.
fn string_end(raw: &[u8], i: usize) -> Option<(usize, bool)> {
    if raw.get(i) != Some(&b'"') {
        return None;
    }
    let (mut i, mut escaped) = (i + 1, false);
    loop {
        i += quote_or_backslash(raw.get(i..)?)?;
        if raw.get(i) == Some(&b'"') {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i = escape_end(raw, i + 1)?;
    }
}

/// Index of the first `"` or `\` in `s`, eight bytes at a time (the strings
/// of an event are mostly short: a vector search costs more to set up).
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut chunks = s.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // A byte of `x` is zero where `word` has the byte looked for; the
        // lowest flagged byte is exact (borrows only flag bytes above it).
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & (ONES << 7);
        let found = zero_byte(word ^ QUOTES) | zero_byte(word ^ BACKSLASHES);
        if found != 0 {
            return Some(n * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let rest = chunks.remainder();
    let tail = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    Some(s.len() - rest.len() + tail)
}

/// After the escape whose letter is `raw[i]` (a `\` before it). A `\u`
/// escape of a UTF-16 surrogate must be a leading one followed by a trailing
/// one, as serde_json requires when it reads a string.
fn escape_end(raw: &[u8], i: usize) -> Option<usize> {
    match *raw.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => match hex4(raw, i + 1)? {
            0xD800..=0xDBFF => {
                let trailing = raw.get(i + 5..i + 7) == Some(b"\\u")
                    && (0xDC00..=0xDFFF).contains(&hex4(raw, i + 7)?);
                trailing.then_some(i + 11)
            }
            0xDC00..=0xDFFF => None,
            _ => Some(i + 5),
        },
        _ => None,
    }
}

fn hex4(raw: &[u8], i: usize) -> Option<u16> {
    raw.get(i..i + 4)?.iter().try_fold(0u16, |acc, &c| {
        let digit = char::from(c).to_digit(16)?;
        Some(acc << 4 | digit as u16)
    })
}

fn literal_end(raw: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (raw.get(i..i + word.len()) == Some(word)).then_some(i + word.len())
}

/// After the number starting at `raw[i]`: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
/// ([eE] [+-]? [0-9]+)?` (RFC 8259 section 6), and finite as an f64.
fn number_end(raw: &[u8], start: usize) -> Option<usize> {
    let digits = |from: usize| {
        raw.get(from..)
            .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let mut i = start + usize::from(raw.get(start) == Some(&b'-'));
    match raw.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += 1 + digits(i + 1),
        _ => return None,
    }
    let int_end = i;
    if raw.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(raw.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(raw.get(i), Some(b'+' | b'-')));
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    // Up to 19 digits and nothing else always fits (serde_json reads them
    // as integers); anything longer or with a fraction or exponent must not
    // overflow an f64 (serde_json refuses it: "number out of range").
    if i != int_end || int_end - start > 19 {
        let text = std::str::from_utf8(raw.get(start..i)?).ok()?;
        if !text.parse::<f64>().ok()?.is_finite() {
            return None;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::super::parse_strict;
    use super::*;
    use serde_json::{json, Value};

    /// The members `compact_object_members` hands over, or `None` if it refuses.
    fn members(raw: &[u8], max_depth: usize) -> Option<Vec<(String, String)>> {
        let mut seen = Vec::new();
        let ok = compact_object_members(raw, max_depth, |k, v| {
            seen.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
            true
        });
        ok.then_some(seen)
    }

    #[test]
    fn compact_object_members_table() {
        let accepted: &[(&str, &[u8])] = &[
            ("empty_object", b"{}"),
            ("scalars", br#"{"a":1,"b":true,"c":false,"d":null,"e":"x"}"#),
            ("empty_containers", br#"{"a":[],"b":{},"c":[[],{},[{}]]}"#),
            ("nested", br#"{"a":{"b":[1,{"c":[null]}]},"d":"}]"}"#),
            (
                "every_escape",
                br#"{"a":"\"\\\/\b\f\n\r\t\u00e9\u001F\ud83d\ude00"}"#,
            ),
            (
                "brackets_and_quotes_in_strings",
                br#"{"a":"[{\"}]","b":"\\"}"#,
            ),
            ("raw_utf8", "{\"é\":\"😀\"}".as_bytes()),
            (
                "numbers",
                br#"{"a":[0,-0,7,-12,0.5,-1.25,1e10,1E+2,2e-3,-1.5E-7,1e-400]}"#,
            ),
            (
                "integer_beyond_u64",
                br#"{"a":123456789012345678901234567890}"#,
            ),
        ];
        for (name, raw) in accepted {
            let got = members(raw, 8);
            let reference = serde_json::from_slice::<Value>(raw);
            assert!(got.is_some(), "{name}: refused");
            assert!(reference.is_ok(), "{name}: serde_json refuses it");
        }
        assert_eq!(
            members(br#"{"a":1,"b":[true,{"c":"d"}],"e":"f"}"#, 8),
            Some(vec![
                ("a".into(), "1".into()),
                ("b".into(), r#"[true,{"c":"d"}]"#.into()),
                ("e".into(), r#""f""#.into()),
            ])
        );

        let huge = format!("{{\"a\":1{}}}", "0".repeat(400));
        let refused: &[(&str, &[u8])] = &[
            ("empty_text", b""),
            ("not_an_object", b"[1]"),
            ("string_at_top", br#""a""#),
            ("unclosed_object", br#"{"a":1"#),
            ("unclosed_string", br#"{"a":"b}"#),
            ("trailing_data", br#"{"a":1}{}"#),
            ("trailing_comma", br#"{"a":1,}"#),
            ("trailing_comma_in_array", br#"{"a":[1,]}"#),
            ("comma_only", b"{,}"),
            ("key_without_value", br#"{"a"}"#),
            ("number_key", br#"{"a":{1:2}}"#),
            ("array_closed_by_brace", br#"{"a":[1}}"#),
            ("object_closed_by_bracket", br#"{"a":{"b":1]}"#),
            ("missing_colon", br#"{"a" 1}"#),
            ("space_after_colon", br#"{"a": 1}"#),
            ("space_after_brace", br#"{ "a":1}"#),
            ("space_at_the_end", br#"{"a":1} "#),
            ("newline_at_the_end", b"{\"a\":1}\n"),
            ("raw_tab_in_a_string", b"{\"a\":\"x\ty\"}"),
            ("invalid_utf8_in_a_string", b"{\"a\":\"\xff\"}"),
            ("unknown_escape", br#"{"a":"\x"}"#),
            ("short_unicode_escape", br#"{"a":"\u12"}"#),
            ("non_hex_unicode_escape", br#"{"a":"\u12g4"}"#),
            ("lone_leading_surrogate", br#"{"a":"\ud800"}"#),
            ("leading_surrogate_then_letter", br#"{"a":"\ud800\u0041"}"#),
            ("lone_trailing_surrogate", br#"{"a":"\udc00"}"#),
            ("escaped_top_level_key", br#"{"\u0061":1}"#),
            ("escaped_nested_key", br#"{"a":{"\u0062":1}}"#),
            ("top_level_keys_out_of_order", br#"{"b":1,"a":2}"#),
            ("duplicate_top_level_key", br#"{"a":1,"a":2}"#),
            ("nested_keys_out_of_order", br#"{"a":{"c":1,"b":2}}"#),
            ("duplicate_nested_key", br#"{"a":[{"r":1,"r":1}]}"#),
            (
                "keys_ordered_by_bytes_not_by_length",
                br#"{"a":{"ab":1,"b":2,"aa":3}}"#,
            ),
            ("leading_zero", br#"{"a":01}"#),
            ("plus_sign", br#"{"a":+1}"#),
            ("bare_minus", br#"{"a":-}"#),
            ("dot_without_digits", br#"{"a":1.}"#),
            ("dot_first", br#"{"a":.5}"#),
            ("exponent_without_digits", br#"{"a":1e}"#),
            ("exponent_sign_only", br#"{"a":1e+}"#),
            ("number_out_of_range", br#"{"a":1e400}"#),
            ("integer_out_of_range", huge.as_bytes()),
            ("truncated_literal", br#"{"a":tru}"#),
            ("misspelt_literal", br#"{"a":nul1}"#),
            ("single_quotes", b"{'a':1}"),
        ];
        for (name, raw) in refused {
            assert_eq!(members(raw, 8), None, "{name}");
        }
        // Depth as parse_strict counts it, empty containers included.
        let depth_cases: &[(&str, &[u8], usize, bool)] = &[
            ("object_alone_at_1", b"{}", 1, true),
            ("nothing_at_0", b"{}", 0, false),
            ("three_levels_at_3", br#"{"a":[[1]]}"#, 3, true),
            ("three_levels_at_2", br#"{"a":[[1]]}"#, 2, false),
            ("empty_innermost_counts", br#"{"a":[[]]}"#, 2, false),
            (
                "siblings_do_not_add_up",
                br#"{"a":[1],"b":{"c":2},"d":[[]]}"#,
                3,
                true,
            ),
        ];
        for (name, raw, depth, ok) in depth_cases {
            assert_eq!(members(raw, *depth).is_some(), *ok, "{name}");
            let strict = parse_strict(raw, *depth).is_ok();
            assert_eq!(strict, *ok, "{name}: parse_strict disagrees");
        }
        let far_too_deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(members(far_too_deep.as_bytes(), usize::MAX), None);
        assert!(!compact_object_members(br#"{"a":1}"#, 8, |_, _| false));
    }

    /// Whether every key of every object in `v` is written without an escape.
    fn keys_need_no_escape(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().all(|(k, x)| {
                serde_json::to_string(k).is_ok_and(|q| q.len() == k.len() + 2)
                    && keys_need_no_escape(x)
            }),
            Value::Array(a) => a.iter().all(keys_need_no_escape),
            _ => true,
        }
    }

    /// Deepest nesting of objects and arrays in `v` (a scalar is 0).
    fn depth_of(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
            Value::Object(m) => 1 + m.values().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Random edits of compact texts: whatever `compact_object_members`
    /// accepts serde_json reads too (within the depth), and whatever
    /// serde_json reads that is a compact object as serde_json writes it, and
    /// shallow enough, it accepts (unless a top-level key needs an escape).
    #[test]
    fn compact_object_members_agrees_with_serde_json_on_mutated_texts() {
        const DEPTH: usize = 6;
        let seeds: Vec<Vec<u8>> = [
            json!({"chain": "n/1", "decision": {"rule": "read", "verdict": "allow"}, "n": [1, -2.5, 1e-7, null, true],
                   "s": "é\"\\\u{1}😀", "seq": 3, "x": {"y": [[{}], []]}}),
            json!({"a": "[{\"}]", "b": 12345678901234567890u64, "c": -0.0}),
            json!({}),
        ]
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap_or_default())
        .chain([br#"{"a":"\ud83d\ude00\u00e9\/","b":1E+2}"#.to_vec()])
        .collect();
        let alphabet: &[u8] = b"{}[]\":,\\0123456789-+.eEtrufalsnu \x01\xff\xc3\xa9/bfnrtD";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            // xorshift64*: deterministic, no dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut text = seeds[round % seeds.len()].clone();
            for _ in 0..1 + next(3) {
                let at = next(text.len() + 1);
                let byte = alphabet[next(alphabet.len())];
                match next(3) {
                    0 if at < text.len() => text[at] = byte,
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.insert(at, byte),
                }
            }
            let ours = compact_object_members(&text, DEPTH, |_, _| true);
            let reference = serde_json::from_slice::<Value>(&text);
            if ours {
                accepted += 1;
                let v = reference.as_ref().unwrap_or(&Value::Null);
                assert!(
                    reference.is_ok(),
                    "accepted what serde_json refuses: {}",
                    String::from_utf8_lossy(&text)
                );
                assert!(
                    v.is_object() && depth_of(v) <= DEPTH,
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            } else {
                refused += 1;
                if let Ok(v) = &reference {
                    let compact = serde_json::to_vec(v).unwrap_or_default() == text;
                    // Refused on purpose: a key written with an escape.
                    let plain_keys = v.is_object() && keys_need_no_escape(v);
                    assert!(
                        !(compact && plain_keys && depth_of(v) <= DEPTH),
                        "refused a compact object serde_json reads: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
        assert!(
            accepted > 1_000 && refused > 1_000,
            "{accepted} accepted, {refused} refused"
        );
    }
}
