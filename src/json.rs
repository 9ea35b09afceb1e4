//! Strict JSON for untrusted MCP bodies, and canonical JSON for hashes.
//!
//! `serde_json::from_slice` silently keeps the *last* of two equal object keys,
//! so `{"name":"echo","name":"delete_repo"}` would be decided as one tool and
//! executed by a server that keeps the *first* as another. We therefore parse
//! through our own visitor that refuses duplicate keys (after `\u` decoding, so
//! `"n\u0061me"` collides with `"name"`) and counts nesting depth.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all (or trailing bytes): JSON-RPC -32700.
    Syntax(String),
    /// Bytes that are not UTF-8: JSON-RPC -32600.
    InvalidUtf8,
    /// The same key twice in one object: JSON-RPC -32600.
    DuplicateKey(String),
    /// Nesting deeper than the configured limit: JSON-RPC -32600.
    TooDeep(usize),
    /// Two keys of one object that a case-insensitive decoder reads as one
    /// (`name` and `Name`, `arguments` and `argumentſ`): JSON-RPC -32600.
    FoldedDuplicateKey(String, String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(m) => write!(f, "malformed JSON: {m}"),
            JsonError::InvalidUtf8 => write!(f, "body is not valid UTF-8"),
            JsonError::DuplicateKey(k) => write!(f, "duplicate object key {k:?}"),
            JsonError::TooDeep(d) => write!(f, "JSON nesting deeper than {d}"),
            JsonError::FoldedDuplicateKey(a, b) => write!(
                f,
                "object keys {a:?} and {b:?} differ only in case (a server that matches \
                 names case-insensitively would read one as the other)"
            ),
        }
    }
}

/// serde_json refuses to nest deeper than this itself; configs may not ask for more.
pub const MAX_SUPPORTED_DEPTH: usize = 120;

/// Parse `bytes` as one JSON value, refusing duplicate keys, invalid UTF-8,
/// trailing data and nesting deeper than `max_depth` (objects and arrays count).
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    parse_checked(bytes, max_depth, KeyCheck::Exact)
}

/// [`parse_strict`], and also refusing an object whose keys collide under the
/// case folding real decoders apply to member names. Go's `encoding/json`
/// matches struct fields case-insensitively and keeps the last match, so
/// `{"name":"echo","Name":"delete_repo"}` runs `delete_repo` on a Go server
/// while every exact reader (and the policy) sees `echo`. For bodies a client
/// sends to a server.
pub fn parse_strict_folded(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    parse_checked(bytes, max_depth, KeyCheck::Folded)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    Exact,
    Folded,
}

fn parse_checked(bytes: &[u8], max_depth: usize, keys: KeyCheck) -> Result<Value, JsonError> {
    // Check UTF-8 on the whole body first: serde_json only validates inside strings
    // and we want invalid UTF-8 to be its own, distinct refusal.
    if std::str::from_utf8(bytes).is_err() {
        return Err(JsonError::InvalidUtf8);
    }
    let verdict: RefCell<Option<JsonError>> = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictSeed {
        depth: 0,
        max_depth: max_depth.min(MAX_SUPPORTED_DEPTH),
        keys,
        verdict: &verdict,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(verdict
            .into_inner()
            .unwrap_or_else(|| JsonError::Syntax(e.to_string()))),
    }
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    depth: usize,
    max_depth: usize,
    keys: KeyCheck,
    verdict: &'a RefCell<Option<JsonError>>,
}

impl<'a> StrictSeed<'a> {
    fn nested<E: de::Error>(self) -> Result<StrictSeed<'a>, E> {
        let depth = self.depth + 1;
        if depth > self.max_depth {
            *self.verdict.borrow_mut() = Some(JsonError::TooDeep(self.max_depth));
            return Err(E::custom("too deep"));
        }
        Ok(StrictSeed { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                *self.verdict.borrow_mut() = Some(JsonError::DuplicateKey(key));
                return Err(de::Error::custom("duplicate key"));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        if self.keys == KeyCheck::Folded {
            if let Some((a, b)) = folded_collision(&out) {
                *self.verdict.borrow_mut() = Some(JsonError::FoldedDuplicateKey(a, b));
                return Err(de::Error::custom("keys collide under case folding"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// How Go's `encoding/json` folds a member name (its `foldName`): ASCII
/// letters to upper case, any other character to the upper case of its lower
/// case, one character each (`ſ` → `S`, Kelvin `K` → `K`, `İ` → `I`). Rust's
/// mappings are the full ones: where the lower case is several characters only
/// the first is the simple mapping (`İ` → `i` + U+0307), and where the upper
/// case is several characters the simple mapping leaves the character alone
/// (`ß`), so both steps keep a one-character result only.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let lower = c.to_lowercase().next().unwrap_or(c);
    let mut upper = lower.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => lower,
    }
}

fn folded(key: &str) -> impl Iterator<Item = char> + '_ {
    key.chars().map(fold_char)
}

/// `key` as Go's `encoding/json` folds it to match a struct field.
pub fn fold_key(key: &str) -> String {
    folded(key).collect()
}

/// Whether two member names are one to a case-insensitive decoder.
pub fn folds_equal(a: &str, b: &str) -> bool {
    folded(a).eq(folded(b))
}

/// A member of `object` that is not one of `names` but folds to one of them:
/// `(member, name)`. A decoder matching names case-insensitively reads
/// `{"Force": true}` as `force`, while every exact reader (the policy, DLP,
/// list filtering) finds no `force` at all.
pub fn case_variant<'n>(
    object: &Map<String, Value>,
    names: &[&'n str],
) -> Option<(String, &'n str)> {
    object.keys().find_map(|k| {
        if names.contains(&k.as_str()) {
            return None;
        }
        names
            .iter()
            .find(|n| folds_equal(n, k))
            .map(|n| (k.clone(), *n))
    })
}

/// The first two keys of `object` that fold to the same name, if any. Small
/// objects (what MCP messages are made of) are compared pairwise without
/// allocating; large ones through a set of folded names.
fn folded_collision(object: &Map<String, Value>) -> Option<(String, String)> {
    const PAIRWISE_UP_TO: usize = 16;
    if object.len() < 2 {
        return None;
    }
    let keys: Vec<&String> = object.keys().collect();
    if keys.len() <= PAIRWISE_UP_TO {
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if folded(a).eq(folded(b)) {
                    return Some(((*a).clone(), (*b).clone()));
                }
            }
        }
        return None;
    }
    let mut seen: std::collections::HashMap<String, &String> =
        std::collections::HashMap::with_capacity(keys.len());
    for key in keys {
        if let Some(first) = seen.insert(folded(key).collect(), key) {
            return Some((first.clone(), key.clone()));
        }
    }
    None
}

/// Canonical JSON: object keys sorted by code point, no insignificant
/// whitespace, serde_json's number and string formatting. Used for pins,
/// argument hashes and the audit chain, so anyone can recompute our hashes.
pub fn canonical(v: &Value) -> String {
    canonical_without(v, None)
}

/// Canonical JSON of `v`, leaving out the top-level member `skip` (the audit
/// hash is computed over the event without its `hash`; this avoids cloning it).
pub fn canonical_without(v: &Value, skip: Option<&str>) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, skip, &mut out);
    // Only serde_json output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(v: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            // serde_json's default Map is a BTreeMap (already in code point
            // order), but sort explicitly so the result does not depend on the
            // `preserve_order` feature being off.
            let mut keys: Vec<&String> = m.keys().filter(|k| Some(k.as_str()) != skip).collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing into a Vec cannot fail, and neither can serialising a str.
                let _ = serde_json::to_writer(&mut *out, k.as_str());
                out.push(b':');
                if let Some(x) = m.get(k.as_str()) {
                    write_canonical(x, None, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, None, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Check `raw` in one pass as a JSON object written compactly, the way
/// [`canonical`] and serde_json write it, and hand each top-level member to
/// `member` as (key, value): the key's bytes between its quotes and the
/// value's raw JSON text. For a reader that needs the exact bytes and a few
/// members (the audit collector, checking a line against the hash its writer
/// took over those bytes) without building the tree.
///
/// Checked: UTF-8; the JSON grammar of RFC 8259 throughout (string escapes,
/// surrogate pairs, number syntax; a number must be finite as an f64, as for
/// serde_json); nothing after the object; objects and arrays nested at most
/// `max_depth` deep, the object itself being 1 (as [`parse_strict`] counts,
/// and capped at [`MAX_SUPPORTED_DEPTH`] like it). Refused although valid
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

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    lower_hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes` (a digest).
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut hex = vec![0u8; bytes.len() * 2];
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    String::from_utf8(hex).unwrap_or_default()
}

/// SHA-256 of the concatenation of `parts`, without concatenating them.
pub fn sha256_of(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The 32 bytes written as 64 lower-case hex digits in `hex` (as
/// [`sha256_hex`] writes them); `None` for anything else.
pub fn digest_from_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    // A table, not a `match`: digits and letters come at random in a hash,
    // and a branch per digit is mispredicted often enough to cost more than
    // the rest of the decoding.
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// Value of each lower-case hex digit; 0xff for every other byte.
const NIBBLE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `bytes` is all lower-case hex digits.
pub fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_that_fold_together_like_go_encoding_json() {
        let cases = [
            ("ascii_case", "name", "Name", true),
            ("all_upper", "arguments", "ARGUMENTS", true),
            ("long_s", "arguments", "argument\u{17f}", true),
            ("kelvin_sign", "key", "\u{212a}ey", true),
            ("dotted_capital_i", "id", "\u{130}d", true),
            ("greek_final_sigma", "\u{3c3}", "\u{3c2}", true),
            ("latin1_letters", "caf\u{e9}", "CAF\u{c9}", true),
            ("sharp_s_is_not_ss", "stra\u{df}e", "STRASSE", false),
            ("different_names", "name", "names", false),
            ("underscore_is_not_dash", "a_b", "a-b", false),
        ];
        for (name, a, b, collide) in cases {
            let doc = json!({ a: 1, b: 2 }).to_string();
            let got = parse_strict_folded(doc.as_bytes(), 8);
            assert_eq!(
                matches!(got, Err(JsonError::FoldedDuplicateKey(_, _))),
                collide,
                "{name}: {a:?} / {b:?} -> {got:?}"
            );
            assert!(
                parse_strict(doc.as_bytes(), 8).is_ok(),
                "{name}: exact parse"
            );
        }
    }

    #[test]
    fn folded_collision_in_a_large_object_is_found() {
        let mut members: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        members.push("\"K39\":0".into());
        let doc = format!("{{{}}}", members.join(","));
        assert_eq!(
            parse_strict_folded(doc.as_bytes(), 8),
            Err(JsonError::FoldedDuplicateKey("K39".into(), "k39".into()))
        );
        members.pop();
        let doc = format!("{{{}}}", members.join(","));
        assert!(parse_strict_folded(doc.as_bytes(), 8).is_ok());
    }

    #[test]
    fn strict_parse_table() {
        let cases: &[(&str, &[u8], Result<&str, JsonError>)] = &[
            ("accepts_plain_object", br#"{"a":1}"#, Ok(r#"{"a":1}"#)),
            (
                "refuses_duplicate_key",
                br#"{"name":"echo","name":"delete"}"#,
                Err(JsonError::DuplicateKey("name".into())),
            ),
            (
                "refuses_duplicate_key_hidden_by_unicode_escape",
                br#"{"name":"echo","n\u0061me":"delete"}"#,
                Err(JsonError::DuplicateKey("name".into())),
            ),
            (
                "refuses_nested_duplicate_key",
                br#"{"p":{"arguments":{"x":1,"x":2}}}"#,
                Err(JsonError::DuplicateKey("x".into())),
            ),
            (
                "refuses_invalid_utf8",
                b"{\"a\":\"\xff\"}",
                Err(JsonError::InvalidUtf8),
            ),
            ("refuses_too_deep", b"[[[[1]]]]", Err(JsonError::TooDeep(3))),
            ("accepts_exact_depth", b"[[[1]]]", Ok("[[[1]]]")),
        ];
        for (name, input, want) in cases {
            let got = parse_strict(input, 3).map(|v| canonical(&v));
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{name}");
        }
    }

    #[test]
    fn refuses_trailing_data_and_garbage_as_syntax() {
        for input in [&b"{} {}"[..], b"{", b"nul", b"\"\\ud800\"", b""] {
            assert!(
                matches!(parse_strict(input, 64), Err(JsonError::Syntax(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn canonical_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, {"z":null,"a":"é"}], "a": 1.5 }"#)
            .unwrap_or(Value::Null);
        assert_eq!(canonical(&v), r#"{"a":1.5,"b":[1,{"a":"é","z":null}]}"#);
    }

    #[test]
    fn canonical_numbers_read_back_identically() {
        // Found by fuzzing: without serde_json's float_roundtrip feature this
        // float came back one unit off, so a verifier re-reading an audit line
        // computed a different hash for an honest event.
        for text in [
            "1.2853467901234567890e29",
            "128534679012345678901234567890",
            "0.1",
            "-0.0",
        ] {
            let v = parse_strict(text.as_bytes(), 4).unwrap_or(Value::Null);
            let again = parse_strict(canonical(&v).as_bytes(), 4).unwrap_or(Value::Null);
            assert_eq!(v, again, "{text}");
            assert_eq!(canonical(&v), canonical(&again), "{text}");
        }
    }

    #[test]
    fn lower_hex_digits_are_recognised_and_nothing_else() {
        let table: [(&str, &[u8], bool); 5] = [
            ("all_digits", b"0123456789abcdef", true),
            ("empty", b"", true),
            ("upper_case", b"ABCDEF", false),
            ("next_letter", b"g", false),
            ("non_ascii", "\u{e9}".as_bytes(), false),
        ];
        for (name, bytes, want) in table {
            assert_eq!(is_lower_hex(bytes), want, "{name}");
        }
        assert_eq!(lower_hex(&[0x00, 0x7f, 0xa5, 0xff]), "007fa5ff");
    }

    #[test]
    fn sha256_hex_of_known_value() {
        assert_eq!(
            sha256_hex(b"test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

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

    #[test]
    fn sha256_of_parts_is_the_hash_of_their_concatenation() {
        let whole = sha256_of(&[b"test"]);
        for parts in [
            &[&b"te"[..], b"st"][..],
            &[b"", b"test", b""],
            &[b"t", b"e", b"s", b"t"],
        ] {
            assert_eq!(sha256_of(parts), whole, "{parts:?}");
        }
        assert_eq!(digest_from_hex(sha256_hex(b"test").as_bytes()), Some(whole));
    }

    #[test]
    fn digest_from_hex_takes_only_64_lower_case_hex_digits() {
        let good = sha256_hex(b"test");
        let cases: &[(&str, String, bool)] = &[
            ("as_sha256_hex_writes_it", good.clone(), true),
            ("upper_case", good.to_ascii_uppercase(), false),
            ("one_digit_short", good[1..].to_owned(), false),
            ("one_digit_long", format!("{good}0"), false),
            ("not_hex", good.replacen('9', "g", 1), false),
            ("empty", String::new(), false),
        ];
        for (name, hex, ok) in cases {
            assert_eq!(digest_from_hex(hex.as_bytes()).is_some(), *ok, "{name}");
        }
    }
}
