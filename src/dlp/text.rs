//! Small, allocation-free judgements about a candidate value: is it random
//! enough to be a credential, or is it a placeholder, a template or a word?
//!
//! These run *after* a detector matched, so they only ever see short strings.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Tokens travel with and without `=` padding (JWT segments never carry it).
const PAD_INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
pub const B64URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PAD_INDIFFERENT);
pub const B64STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PAD_INDIFFERENT);

pub fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    B64URL.decode(s.trim_end_matches('=')).ok()
}

pub fn decode_b64std(s: &str) -> Option<Vec<u8>> {
    B64STD.decode(s).ok()
}

/// `[A-Za-z0-9_]` as a table: one load instead of four range tests, for the
/// loops that ask this of every byte.
const WORD_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

#[inline(always)]
pub fn is_word_byte(b: u8) -> bool {
    WORD_BYTES[usize::from(b)]
}

#[inline(always)]
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[inline(always)]
pub fn is_b64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

/// Which kinds of characters a value mixes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Classes {
    pub lower: bool,
    pub upper: bool,
    pub digit: bool,
    /// Punctuation other than the identifier joiners `_ - .`.
    pub symbol: bool,
}

impl Classes {
    pub fn of(s: &str) -> Classes {
        let mut c = Classes::default();
        for b in s.bytes() {
            match b {
                b'a'..=b'z' => c.lower = true,
                b'A'..=b'Z' => c.upper = true,
                b'0'..=b'9' => c.digit = true,
                b'_' | b'-' | b'.' => {}
                _ => c.symbol = true,
            }
        }
        c
    }
    pub fn count(&self) -> usize {
        usize::from(self.lower)
            + usize::from(self.upper)
            + usize::from(self.digit)
            + usize::from(self.symbol)
    }
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let total = f64::from(n);
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / total;
            -p * p.log2()
        })
        .sum()
}

fn longest_repeat(s: &[u8]) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev = None;
    for &b in s {
        if Some(b) == prev {
            run += 1;
        } else {
            run = 1;
            prev = Some(b);
        }
        best = best.max(run);
    }
    best
}

/// A run like `123456`, `abcdef` or `LMNOPQ`: typed by a person, never drawn
/// from a random generator in practice (a random 40-char token holds one with
/// probability ~1e-6).
fn has_sequence(s: &[u8], len: usize) -> bool {
    let mut run = 1;
    for w in s.windows(2) {
        let (a, b) = match w {
            [a, b] => (*a, *b),
            _ => continue,
        };
        let same_class = (a.is_ascii_digit() && b.is_ascii_digit())
            || (a.is_ascii_lowercase() && b.is_ascii_lowercase())
            || (a.is_ascii_uppercase() && b.is_ascii_uppercase());
        if same_class && b == a.wrapping_add(1) {
            run += 1;
            if run >= len {
                return true;
            }
        } else {
            run = 1;
        }
    }
    false
}

/// Words that mark documentation and sample values rather than live credentials.
static PLACEHOLDER_MARKS: Needles = Needles::new(&[
    "example",
    "xxxx",
    "****",
    "...",
    "your_",
    "your-",
    "yourkey",
    "your key",
    "here",
    "placeholder",
    "redacted",
    "dummy",
    "sample",
    "changeme",
    "change_me",
    "replace",
    "insert",
    "fake",
    "todo",
]);

/// Whole values that are well-known stand-ins (hexspeak, default passwords, field names).
const PLACEHOLDER_VALUES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "test",
    "testing",
    "username",
    "user",
    "pass",
    "admin",
    "root",
    "foobar",
    "foo",
    "bar",
    "qwerty",
    "letmein",
    "deadbeef",
    "cafebabe",
    "null",
    "none",
    "nil",
    "undefined",
    "true",
    "false",
    "empty",
    "default",
];

/// Lower-case ASCII words looked for anywhere in a value, with a table that
/// says, per byte, which of them start with it (either case): a value is
/// scanned once, and at each position only those words are compared. This
/// runs for every candidate value, so on text dense with assignments a
/// compare of every word at every byte was a tenth of the scan.
pub struct Needles {
    words: &'static [&'static str],
    /// Bit `j` of entry `b`: `words[j]` starts with `b`, ignoring ASCII case.
    first: [u32; 256],
}

impl Needles {
    /// At most 32 words, each non-empty (a longer list or an empty word fails
    /// the build: this runs in a `const`).
    pub const fn new(words: &'static [&'static str]) -> Needles {
        assert!(words.len() <= 32, "at most 32 needles");
        let mut first = [0u32; 256];
        let mut j = 0;
        while j < words.len() {
            let w = words[j].as_bytes();
            assert!(!w.is_empty(), "empty needle");
            let b = w[0];
            first[b.to_ascii_lowercase() as usize] |= 1 << j;
            first[b.to_ascii_uppercase() as usize] |= 1 << j;
            j += 1;
        }
        Needles { words, first }
    }

    /// Whether one of the words occurs in `hay`, ignoring ASCII case.
    pub fn any_in(&self, hay: &[u8]) -> bool {
        hay.iter().enumerate().any(|(i, b)| {
            let mut mask = self.first.get(usize::from(*b)).copied().unwrap_or(0);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if let Some(w) = self.words.get(j) {
                    if hay
                        .get(i..i + w.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))
                    {
                        return true;
                    }
                }
            }
            false
        })
    }
}

/// `s` starts with the lower-case ASCII `prefix`, ignoring ASCII case.
fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// A documentation value, masked value or typed-by-hand filler (`AKIAXXXXXXXX`,
/// `sk_live_...`, `AbCd1234567890`, `00000000000000TUVWXYZ`).
pub fn is_placeholder(value: &str) -> bool {
    let bytes = value.as_bytes();
    // Compared in place, ignoring ASCII case: this runs on every candidate
    // value, and a lower-cased copy plus one substring search per mark was
    // most of the cost of a text dense with short assignments.
    if PLACEHOLDER_VALUES
        .iter()
        .any(|p| bytes.eq_ignore_ascii_case(p.as_bytes()))
    {
        return true;
    }
    if PLACEHOLDER_MARKS.any_in(bytes) {
        return true;
    }
    let rep = longest_repeat(bytes);
    if rep >= 6 && rep * 5 >= bytes.len() {
        return true;
    }
    has_sequence(bytes, 6)
}

/// A reference to a value kept elsewhere: `$VAR`, `${VAR}`, `$(cmd)`, `{{ x }}`,
/// `<token>`, `%(x)s`, `{Name}`, `[REDACTED]`, `process.env.X`.
pub fn is_template(value: &str) -> bool {
    let v = value.trim();
    if v.starts_with('$') || v.starts_with('<') || v.starts_with('%') || v.starts_with('[') {
        return true;
    }
    // `m{{h}o)p${e]` style passwords hold `{{`, `${` and `$(` too: only a
    // value that *is* a template starts with one (`${` and `$(` start with
    // `$`, above). Tested with `starts_with` alone: a substring search per
    // marker first was a sixth of the scan of text dense with assignments.
    if v.starts_with("{{") {
        return true;
    }
    if let Some(inner) = v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'.')
        {
            return true;
        }
    }
    ["process.env", "os.environ", "env.", "secrets."]
        .iter()
        .any(|p| starts_with_ignore_case(v, p))
}

/// An identifier-shaped value (`K8S_CRED`, `PASSWORD`, `XSalsa20.key_length`): a
/// name pointing at a secret, not the secret.
///
/// Names switch between letters and digits a few times at most (`K8S`,
/// `OAUTH2_V2`, `AES128GCM`); a value that keeps switching (`XK9_P2Q7_MZ4R`,
/// `Sup3rS3cret.Valu3x`) was typed or generated to be hard to guess, and the
/// joiners in it do not make it a name.
pub fn is_identifier_like(value: &str) -> bool {
    let c = Classes::of(value);
    if c.symbol || letter_digit_switches(value) >= IDENTIFIER_MAX_SWITCHES {
        return false;
    }
    // ALL_CAPS_WITH_UNDERSCORES, or dotted.paths.of.words. A path has a
    // lower-case segment (`spring.datasource.password`,
    // `XSalsa20.key_length`) or no digit at all (`Settings.Default.Password`);
    // capitalised words and digits joined by dots (`Tulip.Orbit.Canyon.Marble7`,
    // `Cx.9Lp.2Qw.8Zt`, `MyS3cret.Pass`) are a passphrase (eighth review F1).
    let caps_ident = !c.lower && c.upper && (value.contains('_') || value.contains('-'));
    let dotted = value.contains('.')
        && value
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(is_word_byte))
        && (!c.digit
            || value.split('.').any(|p| {
                p.len() >= 2
                    && p.bytes().any(|b| b.is_ascii_lowercase())
                    && !p.bytes().any(|b| b.is_ascii_uppercase())
            }));
    caps_ident || dotted
}

/// Letter/digit switches at which a joined value stops reading as a name.
const IDENTIFIER_MAX_SWITCHES: usize = 4;

/// How often `value` switches between an ASCII letter and an ASCII digit
/// (`K8S` twice, `P2Q7` three times); joiners and other bytes end a run.
fn letter_digit_switches(value: &str) -> usize {
    let mut switches = 0;
    let mut prev: Option<bool> = None;
    for b in value.bytes() {
        let digit = if b.is_ascii_digit() {
            Some(true)
        } else if b.is_ascii_alphabetic() {
            Some(false)
        } else {
            None
        };
        if let (Some(p), Some(d)) = (prev, digit) {
            switches += usize::from(p != d);
        }
        prev = digit;
    }
    switches
}

/// Strength of a human-chosen password: long enough and mixing classes the way
/// generated or policy-compliant passwords do, not a word.
pub fn is_strong_password(value: &str) -> bool {
    let v = value.trim();
    if v.chars().count() < 8 || v.chars().count() > 200 {
        return false;
    }
    // The class count first: it is one cheap pass, and most values read on
    // text dense with assignments fail it; the placeholder and name tests
    // each read the value again (eighth review F3).
    let c = Classes::of(v);
    if c.count() < 2 {
        return false;
    }
    if is_template(v) || is_placeholder(v) || is_identifier_like(v) {
        return false;
    }
    c.count() >= 3 || c.symbol || (v.len() >= 12 && entropy(v) >= 3.0)
}

/// Strength of a machine-generated key/token: long, mixed and high in entropy.
pub fn is_random_token(value: &str) -> bool {
    let v = value.trim();
    let len = v.len();
    if !(16..=1024).contains(&len) || v.bytes().any(|b| b.is_ascii_whitespace()) {
        return false;
    }
    // Cheap class test before the ones that read the value again.
    let c = Classes::of(v);
    if !c.digit || !(c.lower || c.upper) {
        return false;
    }
    if is_template(v) || is_placeholder(v) || is_identifier_like(v) {
        return false;
    }
    let hex = v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if hex {
        // Hex keys and UUID-shaped keys: 32+ hex digits with both letters and digits.
        let digits = v.bytes().filter(|b| b.is_ascii_hexdigit()).count();
        return digits >= 32 && c.digit && (c.lower || c.upper) && entropy(v) >= 3.0;
    }
    let classes = usize::from(c.lower) + usize::from(c.upper) + usize::from(c.digit);
    classes >= 3 && entropy(v) >= 3.2
}

/// Whether a second reading may differ from the text: some position holds
/// the lead byte (and second byte) of what [`second_reading`] decodes or
/// drops. Most text has none, and this sees every byte of every scanned
/// string: the search skips to the next `\\`, `&` or byte above 0x7F (every
/// lead byte below is one of these), sixteen bytes at a time, and a run of
/// such bytes is read where it stands.
fn may_read_otherwise(bytes: &[u8]) -> bool {
    use super::lanes::{self, Stop};
    let mut from = 0;
    while let Some(i) = lanes::next(bytes, from, Stop::ReadsOtherwise) {
        // Text outside ASCII is all such bytes: they are read here, one by
        // one, as far as they run, not searched for again from each (a call
        // per byte made CJK text ~1.6x slower to scan; a helper's attack).
        let mut j = i;
        while bytes.get(j).is_some_and(|&b| Stop::ReadsOtherwise.holds(b)) {
            if starts_other_reading(bytes, j) {
                return true;
            }
            j += 1;
        }
        from = j;
    }
    false
}

/// The lead bytes (and second bytes) of what [`second_reading`] decodes or
/// drops, at `i`.
fn starts_other_reading(bytes: &[u8], i: usize) -> bool {
    match at(bytes, i) {
        b'\\' => matches!(at(bytes, i + 1), b'u' | b'/'),
        b'&' => matches!(at(bytes, i + 1), b'#' | b'a'..=b'z'),
        0xC2 => matches!(at(bytes, i + 1), 0xA0 | 0xAD),
        0xCD => at(bytes, i + 1) == 0x8F,
        0xD8 => at(bytes, i + 1) == 0x9C,
        0xE1 => matches!(at(bytes, i + 1), 0x85 | 0x9E | 0xA0),
        0xE2 => matches!(at(bytes, i + 1), 0x80 | 0x81 | 0x88),
        0xE3 => matches!(at(bytes, i + 1), 0x80 | 0x85),
        0xEF => matches!(at(bytes, i + 1), 0xB8 | 0xBB | 0xBC | 0xBD | 0xBE | 0xBF),
        0xF0 => matches!(at(bytes, i + 1), 0x9B | 0x9D),
        0xF3 => matches!(at(bytes, i + 1), 0xA0..=0xA3),
        _ => false,
    }
}

/// The text as a reader decodes it, when that differs from its bytes, for a
/// second scan: JSON escapes left in text (`\u003c`, `\/`: Go and PHP write
/// them), HTML character references (`&lt;`, `&quot;`, `&#39;`: a fetched
/// page), fullwidth ASCII (`４１１１`, Japanese input) and the spaces and
/// dashes locales group digits with (U+00A0, U+202F, U+2009, U+2011, en
/// dash) (tenth review M2, M3), without the characters that render as
/// nothing (zero-width spaces and joiners, the soft hyphen, word joiner,
/// byte-order mark, bidi controls, variation selectors, tags: see
/// [`is_invisible`]), which split a card number or a token for a scanner
/// and not for a reader (twelfth attack pass, finding 6). With it, for each
/// of its bytes, the offset of the byte of `text` it comes from, and one
/// more entry for the end: a match in the reading maps back to the span of
/// `text` to redact (a dropped character has no byte of its own, so a
/// match around it covers it).
pub fn second_reading(text: &str) -> Option<(String, Vec<usize>)> {
    let bytes = text.as_bytes();
    if !may_read_otherwise(bytes) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut from = Vec::with_capacity(text.len() + 1);
    let mut changed = false;
    let push = |out: &mut String, from: &mut Vec<usize>, c: char, src: usize| {
        let before = out.len();
        out.push(c);
        for _ in before..out.len() {
            from.push(src);
        }
    };
    // What an escape or reference spells reads as that character does when
    // sent raw: `\uff14` and `&#65300;` are a fullwidth `4`, read as `4` (a
    // helper's attack, twenty-first session: a card so written passed both
    // ways).
    let spelled = |ch: char| Some(as_plain(ch).unwrap_or(ch));
    let mut i = 0;
    while i < text.len() {
        let rest = text.get(i..).unwrap_or_default();
        let Some(c) = rest.chars().next() else { break };
        let (decoded, len) = match c {
            '\\' => match at(bytes, i + 1) {
                b'/' => (Some('/'), 2),
                b'u' => match json_u_escape(bytes, i) {
                    Some((ch, n)) => (spelled(ch), n),
                    None => (None, 1),
                },
                _ => (None, 1),
            },
            '&' => match html_reference(rest) {
                Some((ch, n)) => (spelled(ch), n),
                None => (None, 1),
            },
            _ => (as_plain(c), c.len_utf8()),
        };
        match decoded {
            // Dropped, also when an escape (`\u200b`, `&#173;`) spells it.
            Some(d) if is_invisible(d) => changed = true,
            None if is_invisible(c) => changed = true,
            Some(d) => {
                changed = true;
                push(&mut out, &mut from, d, i);
            }
            None => push(&mut out, &mut from, c, i),
        }
        i += len.max(1);
    }
    from.push(text.len());
    changed.then_some((out, from))
}

/// The ASCII a reader takes `c` for, where the second reading reads it so:
/// fullwidth digits, letters, `-` and `@` (the rest of the fullwidth
/// punctuation stays: `：` before a number reads as text, `:` as a port or
/// a ratio), locale spaces as a space, dashes and the minus sign as `-`.
fn as_plain(c: char) -> Option<char> {
    match c {
        '\u{FF10}'..='\u{FF19}'
        | '\u{FF21}'..='\u{FF3A}'
        | '\u{FF41}'..='\u{FF5A}'
        | '\u{FF0D}'
        | '\u{FF20}' => char::from_u32(u32::from(c) - 0xFF01 + 0x21),
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => Some(' '),
        '\u{2010}'..='\u{2015}' | '\u{2212}' => Some('-'),
        _ => None,
    }
}

/// Characters that render as nothing in running text (Unicode's
/// default-ignorable code points, as `catalogue::fold` drops them, plus
/// the bidi controls): zero-width space, non-joiner, joiner, LRM/RLM,
/// embeddings and isolates, word joiner and invisible operators, soft
/// hyphen, combining grapheme joiner, Arabic letter mark, Hangul fillers,
/// Khmer inherent vowels, Mongolian selectors, byte-order mark, variation
/// selectors, interlinear annotations, shorthand format controls, musical
/// format controls, tags. None of them is in any credential, card or
/// address, so the reading without them can only join what a reader sees
/// joined.
pub fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F
            | 0x1160
            | 0x17B4
            | 0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// `\uXXXX` at `i` (a surrogate pair as two escapes): the character and the
/// escape's length.
fn json_u_escape(bytes: &[u8], i: usize) -> Option<(char, usize)> {
    let hex = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let high = hex(i + 2)?;
    if (0xD800..0xDC00).contains(&high) {
        if bytes.get(i + 6..i + 8) != Some(b"\\u") {
            return None;
        }
        let low = hex(i + 8)?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
        return char::from_u32(c).map(|ch| (ch, 12));
    }
    char::from_u32(high).map(|ch| (ch, 6))
}

/// An HTML character reference at the start of `s` (`&lt;`, `&#39;`,
/// `&#x2F;`): the character and the reference's length.
fn html_reference(s: &str) -> Option<(char, usize)> {
    let end = s.get(..12.min(s.len()))?.find(';')?;
    let name = s.get(1..end)?;
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "amp" => '&',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((c, end + 1))
}

/// Length of the run of `pred` bytes starting at `from`.
pub fn run_len(bytes: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .map_or(0, |s| s.iter().take_while(|b| pred(**b)).count())
}

/// Byte at `i`, or 0 outside the text (0 is never a token character).
#[inline(always)]
pub fn at(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

/// Byte before `i`, or 0 at the start.
#[inline(always)]
pub fn before(bytes: &[u8], i: usize) -> u8 {
    if i == 0 {
        0
    } else {
        at(bytes, i - 1)
    }
}

/// Largest char boundary `<= i`.
pub fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Smallest char boundary `>= i`.
pub fn ceil_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_finds_what_the_byte_at_a_time_check_finds() {
        let naive = |b: &[u8]| (0..b.len()).any(|i| starts_other_reading(b, i));
        // Every lead pair of a second reading, a near miss of each, and the
        // bytes the search stops at alone, at every offset of buffers of
        // every length around the word and block sizes.
        let pairs: [&[u8]; 14] = [
            b"\\u",
            b"\\/",
            b"\\x",
            b"&#",
            b"&a",
            b"&A",
            b"\xC2\xA0",
            b"\xC2\xA9",
            b"\xE2\x80",
            b"\xE2\x82",
            b"\xEF\xBC",
            b"\xF3\xA0",
            b"\xF3\xA4",
            b"\xCD\x8F",
        ];
        for len in 0..26 {
            for at in 0..len {
                for pair in pairs {
                    let mut b = vec![b'x'; len];
                    for (k, &p) in pair.iter().enumerate() {
                        if let Some(slot) = b.get_mut(at + k) {
                            *slot = p;
                        }
                    }
                    assert_eq!(may_read_otherwise(&b), naive(&b), "{b:?}");
                }
            }
        }
        // The same pairs inside text that is all such bytes (CJK: each of
        // its bytes is above 0x7F, so the search stops at every one and the
        // run is read in place).
        let cjk = "日本語のテキスト".repeat(4);
        for at in 0..cjk.len() {
            for pair in pairs {
                let mut b = cjk.as_bytes().to_vec();
                for (k, &p) in pair.iter().enumerate() {
                    if let Some(slot) = b.get_mut(at + k) {
                        *slot = p;
                    }
                }
                assert_eq!(may_read_otherwise(&b), naive(&b), "{b:?}");
            }
        }
        assert!(!may_read_otherwise(cjk.as_bytes()));
        // And random bytes, dense in the keyed ones.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let alphabet = [
            b'a', b' ', b'\\', b'u', b'&', b'#', 0xC2, 0xA0, 0xE2, 0x80, 0xEF, 0xBC, 0x7F,
        ];
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let b: Vec<u8> = (0..len)
                .map(|k| alphabet[((seed >> (k % 60)) as usize + k * 7) % alphabet.len()])
                .collect();
            assert_eq!(may_read_otherwise(&b), naive(&b), "{b:?}");
        }
    }

    #[test]
    fn placeholder_table() {
        for (v, want) in [
            ("AKIAXXXXXXXXXXXXXXXX", true),
            ("AKIAIOSFODNN7EXAMPLE", true),
            ("sk_live_...", true),
            ("12345678-ABCD-ABCD-ABCD-1234567890AB", true),
            ("deadbeef", true),
            ("ghp_IGCc07wS9MNKU3zQbDbfamYYSj8Y1sM7rJAy", false),
            ("B+d5wanUS/JITYpsz+APYXOSAz+21MVWiEQnncKW", false),
        ] {
            assert_eq!(is_placeholder(v), want, "{v}");
        }
    }

    #[test]
    fn template_table() {
        for (v, want) in [
            ("${DB_PASSWORD}", true),
            ("$(cat x)", true),
            ("{{ secrets.X }}", true),
            ("<token>", true),
            ("{SumoAccessKey}", true),
            ("{ZqL5kVrX1n8tA2}", false),
            ("m{{h}o)p${e]nob", false),
        ] {
            assert_eq!(is_template(v), want, "{v}");
        }
    }

    #[test]
    fn password_strength_table() {
        for (v, want) in [
            ("TangoCobalt1101$", true),
            ("m{{h}o)p${e]nob(ody[finds>-_$#thisone}}", true),
            ("changeme", false),
            ("real_secret", false),
            ("NEXUS-GPT4-API-KEY", false),
            ("PASSWORD", false),
            ("K8S_CRED", false),
            ("XSalsa20.key_length", false),
            ("OAUTH2_CLIENT_SECRET_V2", false),
            ("Sup3rS3cret.Valu3x", true),
            ("Tulip.Orbit.Canyon.Marble7", true),
            ("Cx.9Lp.2Qw.8Zt", true),
            ("MyS3cret.Pass", true),
            ("Settings.Default.Password", false),
            ("spring.datasource.password2", false),
            ("XK9_P2Q7_MZ4R", true),
        ] {
            assert_eq!(is_strong_password(v), want, "{v}");
        }
    }
}
