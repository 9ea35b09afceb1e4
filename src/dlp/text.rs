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
/// the lead byte (and second byte) of what [`second_readings`] decode or
/// drops. Most text has none, and this sees every byte of every scanned
/// string: the search skips to the next `\\`, `&` or byte above 0x7F (every
/// lead byte below is one of these), sixteen bytes at a time, and a run of
/// such bytes is read where it stands.
fn may_read_otherwise(text: &str) -> bool {
    use super::lanes::{self, Stop};
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = lanes::next(bytes, from, Stop::ReadsOtherwise) {
        // Text outside ASCII is all such bytes: they are read here, a
        // character at a time, as far as they run, not searched for again
        // from each (a call per byte made CJK text ~1.6x slower to scan; a
        // helper's attack). The search stops on a character's first byte,
        // and only first bytes start a reading.
        let mut j = i;
        while let Some(&b) = bytes.get(j).filter(|&&b| Stop::ReadsOtherwise.holds(b)) {
            if starts_other_reading(text, j) {
                return true;
            }
            j += match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xFF => 4,
                _ => 1,
            };
        }
        from = j;
    }
    false
}

/// Whether what starts at byte `i` of `text` is what [`second_readings`]
/// decode or drop. The lead byte and the next one are matched first: for
/// a two-byte character they are the character, for a longer one they name
/// a block of 64 code points (4,096 for four bytes), and only there is the
/// character itself read. Non-Latin text is mostly such bytes, so most of it
/// is turned away here (Hindi's vowel signs share their block with the
/// Devanagari digits: those characters are read).
// Inlined: it runs once per non-ASCII character of every scanned string.
#[inline(always)]
fn starts_other_reading(text: &str, i: usize) -> bool {
    let bytes = text.as_bytes();
    let next = at(bytes, i + 1);
    let block = match at(bytes, i) {
        b'\\' => return matches!(next, b'u' | b'/'),
        b'&' => return matches!(next, b'#' | b'a'..=b'z' | b'A'..=b'Z'),
        // `tests::every_character_read_otherwise_starts_another_reading`
        // holds this table to `reads_otherwise`.
        0xC2 => matches!(next, 0xA0 | 0xAD | 0xB2..=0xB3 | 0xB9),
        // Combining diacritical marks, U+0300-U+036F.
        0xCC => true,
        0xCD => matches!(next, 0x80..=0xAF),
        0xD8 => next == 0x9C,
        0xD9 => matches!(next, 0xA0..=0xA9),
        0xDB => matches!(next, 0xB0..=0xB9),
        0xDF => matches!(next, 0x80..=0x89),
        // Indic and Thai: the digits share their blocks with vowel signs
        // that are in nearly every word, so the third byte is matched too.
        0xE0 => match (next, at(bytes, i + 2)) {
            (0xA5 | 0xA7 | 0xA9 | 0xAB | 0xAD | 0xAF | 0xB1 | 0xB3 | 0xB5 | 0xB7, third) => {
                matches!(third, 0xA6..=0xAF)
            }
            (0xB9 | 0xBB, third) => matches!(third, 0x90..=0x99),
            (0xBC, third) => matches!(third, 0xA0..=0xA9),
            _ => false,
        },
        0xE1 => matches!(
            next,
            0x81..=0x82 | 0x85 | 0x9E..=0xA0 | 0xA5 | 0xA7 | 0xAA..=0xAB | 0xAD..=0xAE | 0xB1 | 0xB7
        ),
        0xE2 => matches!(next, 0x80..=0x85 | 0x88 | 0x91 | 0x93 | 0x9D..=0x9E),
        // CJK punctuation and kana: the ideographic space and full stop,
        // the prolonged sound mark, the Hangul filler, by their third byte.
        0xE3 => matches!(
            (next, at(bytes, i + 2)),
            (0x80, 0x80 | 0x82) | (0x83, 0xBC) | (0x85, 0xA4)
        ),
        0xEA => matches!(next, 0x98 | 0xA3..=0xA4 | 0xA7 | 0xA9 | 0xAF),
        0xEF => matches!(next, 0xB8..=0xB9 | 0xBB..=0xBF),
        0xF0 => matches!(next, 0x90..=0x91 | 0x96 | 0x9B..=0x9F),
        0xF3 => next == 0xA0,
        _ => false,
    };
    if !block {
        return false;
    }
    let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
        return false;
    };
    // A joining mark only between ASCII letters or digits (a long vowel
    // mark between digits); with a fullwidth or an encoded neighbour the
    // neighbour starts the reading, and the reading decides.
    let between =
        |joins: fn(&u8) -> bool| joins(&before(bytes, i)) && joins(&at(bytes, i + c.len_utf8()));
    match c {
        LONG_VOWEL_MARK => between(u8::is_ascii_digit),
        _ if is_ideographic_stop(c) => between(u8::is_ascii_alphanumeric),
        _ => reads_otherwise(c),
    }
}

/// Whether the second reading may read `c` other than as itself: it maps
/// it ([`as_plain`]), drops it ([`is_invisible`]), or it is an ideographic
/// full stop, read as `.` between ASCII letters and digits (which
/// [`starts_other_reading`] checks where it stands).
fn reads_otherwise(c: char) -> bool {
    as_plain(c).is_some()
        || is_invisible(c)
        || is_combining_mark(c)
        || is_ideographic_stop(c)
        || c == LONG_VOWEL_MARK
}

/// `ー`: Japanese writes it between digits as a dash (`４１１１ー１１１１`);
/// in a word it lengthens a vowel and is left alone.
const LONG_VOWEL_MARK: char = '\u{30FC}';

/// Combining marks that belong to no script (diacritics, marks for symbols:
/// the keycap `U+20E3`, the low line and strikethrough overlays): the wide
/// reading drops them, so `4\u{fe0f}\u{20e3}` and `4\u{332}` read as `4`.
/// Scripts' own vowel signs are not among them.
fn is_combining_mark(c: char) -> bool {
    matches!(
        u32::from(c),
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F
    )
}

/// `。` and its halfwidth form: between ASCII letters or digits a reader
/// takes them for `.` (`gmail。com`); in CJK prose they end sentences and are
/// left as they are, or every such text would be scanned twice.
fn is_ideographic_stop(c: char) -> bool {
    matches!(c, '\u{3002}' | '\u{FF61}')
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
/// and not for a reader (twelfth attack pass, finding 6).
///
/// Two readings at most, [`Width::Narrow`] and [`Width::Wide`], each only
/// where it differs from the text and from the other: the wide one decodes
/// more (other scripts' digits, more references and punctuation), and a
/// character it decodes right beside a secret can join it and move the edge
/// its detector checks (`4111\u{a0}1111\u{a0}1111\u{a0}1111²` is a card
/// followed by a footnote, and `…11112` is not a card): the narrow reading
/// still finds it (a helper's attack, twenty-second session).
///
/// Each reading comes with, for each of its bytes, the offset of the byte
/// of `text` it comes from, and one more entry for the end: a match in the
/// reading maps back to the span of `text` to redact (a dropped character
/// has no byte of its own, so a match around it covers it).
pub fn second_readings(text: &str) -> Vec<Reading> {
    if !may_read_otherwise(text) {
        return Vec::new();
    }
    let wide = read(text, Width::Wide);
    let mut readings: Vec<Reading> = Vec::with_capacity(2);
    let add = |readings: &mut Vec<Reading>, reading: Option<Reading>| {
        if let Some(r) = reading {
            if readings.iter().all(|other| other.text != r.text) {
                readings.push(r);
            }
        }
    };
    if wide.beyond_narrow && wide.narrow_changes {
        add(&mut readings, read(text, Width::Narrow).reading);
    }
    add(&mut readings, wide.reading);
    readings
}

/// A second reading of a text, and where each of its bytes comes from.
pub struct Reading {
    pub text: String,
    /// For each byte of `text`, the offset in the scanned text it comes
    /// from; one more entry, that text's length.
    pub from: Vec<usize>,
}

/// How much a reading decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    /// What the twenty-first session read: JSON escapes, the references
    /// `&lt; &gt; &quot; &amp; &apos; &nbsp;` and numeric ones with their
    /// `;`, fullwidth letters, digits, `-` and `@`, locale spaces and
    /// dashes, and the invisible characters dropped.
    Narrow,
    /// All of it: also HTML's other references for punctuation and spaces,
    /// numeric ones without `;`, other scripts' digits, more punctuation,
    /// combining marks dropped, `。` and `ー` where they join.
    Wide,
}

/// What one character (or escape, or reference) of a text reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Itself,
    As(char),
    Dropped,
}

/// A reading, with what building the wide one learnt of the narrow one.
struct Built {
    reading: Option<Reading>,
    /// Somewhere the narrow reading reads otherwise than this one.
    beyond_narrow: bool,
    /// Somewhere the narrow reading reads otherwise than the text.
    narrow_changes: bool,
}

fn read(text: &str, width: Width) -> Built {
    let mut out = String::with_capacity(text.len());
    let mut from = Vec::with_capacity(text.len() + 1);
    let (mut changed, mut beyond_narrow, mut narrow_changes) = (false, false, false);
    // Where this (wide) reading last read a character otherwise than the
    // narrow one, and the next such one ahead: see [`FOOTNOTE_REACH`].
    let mut wide_only_at: Option<usize> = None;
    let ahead = std::cell::RefCell::new(WideOnlyAhead::default());
    let mut i = 0;
    while let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) {
        let escape = matches!(c, '\\' | '&');
        let joining = c == LONG_VOWEL_MARK || is_ideographic_stop(c);
        // Most characters read as themselves in both readings: ASCII, and
        // what the pre-check's lead table turns away (CJK, most scripts).
        let (read, len) =
            if !escape && (c.is_ascii() || (!joining && !starts_other_reading(text, i))) {
                (Read::Itself, c.len_utf8())
            } else {
                // The narrow reading steps where this one does, or over
                // bytes that read as themselves in both (a reference the
                // wide one takes whole is `&` and ASCII to the narrow one).
                let narrow = (width == Width::Wide)
                    .then(|| read_at(text, i, c, Width::Narrow, None, &|| false));
                // Asked only where a styled digit may stand apart (the
                // search ahead is paid there alone, not at every reference).
                // A reference only the wide reading decodes (`&sup2;`) is
                // itself such a neighbour: after a value it is a footnote, as
                // before (a helper's attack, twenty-third session:
                // `password: mango7pie&sup1;` passed).
                let footnotes = || {
                    (escape && narrow.is_some_and(|n| n.0 == Read::Itself))
                        || wide_only_at.is_some_and(|at| i - at <= FOOTNOTE_REACH)
                        || ahead
                            .try_borrow_mut()
                            .map_or(true, |mut a| a.within(text, i + c.len_utf8()))
                };
                let step = read_at(text, i, c, width, out.chars().next_back(), &footnotes);
                if let Some(narrow) = narrow {
                    if narrow != step {
                        beyond_narrow = true;
                        wide_only_at = Some(i);
                    }
                    // A styled digit left as a footnote counts too: text
                    // dense with them is read as near one, and the search
                    // ahead (which would read each of them a second time)
                    // is not needed there.
                    if digit_style(c).is_some() {
                        wide_only_at = Some(i);
                    }
                    narrow_changes |= narrow.0 != Read::Itself;
                }
                step
            };
        match read {
            Read::Itself => {
                out.push(c);
                from.extend(std::iter::repeat_n(i, c.len_utf8()));
            }
            Read::As(d) => {
                changed = true;
                out.push(d);
                from.extend(std::iter::repeat_n(i, d.len_utf8()));
            }
            Read::Dropped => changed = true,
        }
        i += len.max(1);
    }
    from.push(text.len());
    Built {
        reading: changed.then_some(Reading { text: out, from }),
        beyond_narrow,
        narrow_changes,
    }
}

/// How far (in bytes of the text, before or after it) a character only the
/// wide reading decodes makes a styled digit that ends a run a possible
/// footnote ([`stands_apart`]): the longest secret a footnote may follow or
/// a list mark precede, drawn in four-byte letters (a 40-character token in
/// mathematical letters is 160).
const FOOTNOTE_REACH: usize = 256;

/// The next character ahead that the wide reading reads otherwise than the
/// narrow one, searched for from styled digits on: each byte is read by
/// one search at most (what one search read is not read again by the
/// next), so a text of styled digits stays linear.
#[derive(Default)]
struct WideOnlyAhead {
    /// Where the last search stopped.
    searched_to: usize,
    /// What it found there, if it found one.
    found: Option<usize>,
}

impl WideOnlyAhead {
    /// Whether such a character starts within [`FOOTNOTE_REACH`] bytes of
    /// byte `from` (a character boundary). `ー` and `。` are not counted: ahead,
    /// what they join is not yet read.
    fn within(&mut self, text: &str, from: usize) -> bool {
        let reach = from + FOOTNOTE_REACH;
        if let Some(at) = self.found.filter(|&at| at >= from) {
            return at <= reach;
        }
        self.found = None;
        let mut j = self.searched_to.max(from);
        while j <= reach {
            let Some(c) = text.get(j..).and_then(|rest| rest.chars().next()) else {
                break;
            };
            let escape = matches!(c, '\\' | '&');
            if !escape && (c.is_ascii() || !starts_other_reading(text, j)) {
                j += c.len_utf8();
                continue;
            }
            let wide = read_at(text, j, c, Width::Wide, None, &|| true);
            if wide != read_at(text, j, c, Width::Narrow, None, &|| false) {
                self.found = Some(j);
                self.searched_to = j;
                return true;
            }
            j += wide.1.max(1);
        }
        self.searched_to = j;
        false
    }
}

/// What the character `c` at byte `i` of `text` (or the escape or
/// reference it starts) reads as, and how many bytes it takes; `last` is
/// what the reading holds before it. `footnotes`: a super- or subscript or
/// circled digit that ends a run may be a footnote ([`stands_apart`]),
/// because the wide reading decodes something the narrow one does not in
/// the [`FOOTNOTE_REACH`] bytes before or after it, or spells the digit
/// with a reference the narrow one leaves (`&sup2;`); asked only once
/// [`stands_apart`] says so, as it may search ahead. Where not, the narrow
/// reading (which leaves such digits as they are) finds a secret a
/// footnote follows, and the wide one reads every such digit as a digit
/// (`GB8² WEST …`, `bob⁷@example.com`, a token ending `…kM⁵`: a helper's
/// attack, twenty-third session, found each hidden by the footnote rule).
fn read_at(
    text: &str,
    i: usize,
    c: char,
    width: Width,
    last: Option<char>,
    footnotes: &dyn Fn() -> bool,
) -> (Read, usize) {
    let bytes = text.as_bytes();
    let wide = width == Width::Wide;
    // `len`: the bytes the character, escape or reference takes.
    let plain = |ch: char, len: usize| match width {
        Width::Narrow => as_plain_narrow(ch),
        Width::Wide => match digit_style(ch) {
            Some(style) if stands_apart(text, i, len, style) && footnotes() => None,
            _ => as_plain(ch),
        },
    };
    // What an escape or reference spells reads as that character does when
    // sent raw: `\uff14` and `&#65300;` are a fullwidth `4`, read as `4` (a
    // helper's attack, twenty-first session); `\u200b` and `&#173;` are
    // dropped.
    let spelled = |ch: char, len: usize| match plain(ch, len).unwrap_or(ch) {
        d if is_invisible(d) || (wide && is_combining_mark(d)) => Read::Dropped,
        d => Read::As(d),
    };
    let len = c.len_utf8();
    match c {
        '\\' => match at(bytes, i + 1) {
            b'/' => (Read::As('/'), 2),
            b'u' => match json_u_escape(bytes, i) {
                // `\u0026ndash;`: Go's `json.Marshal` escapes the `&` of a
                // page's references, and the page its reader renders reads
                // the reference.
                // The body is read as far as 40 bytes (a named reference is 34
                // at most), as when it was copied behind an `&`.
                Some(('&', n)) if wide => match text
                    .get(i + n..ceil_boundary(text, (i + n + 40).min(text.len())))
                    .and_then(reference_body)
                {
                    Some((ch, rest)) => (spelled(ch, n + rest), n + rest),
                    None => (Read::As('&'), n),
                },
                Some((ch, n)) => (spelled(ch, n), n),
                None => (Read::Itself, 1),
            },
            _ => (Read::Itself, 1),
        },
        '&' => {
            let rest = text.get(i..).unwrap_or_default();
            let reference = match width {
                Width::Narrow => html_reference_narrow(rest),
                Width::Wide => html_reference(rest),
            };
            match reference {
                Some((ch, n)) => (spelled(ch, n), n),
                None => (Read::Itself, 1),
            }
        }
        _ if is_invisible(c) => (Read::Dropped, len),
        _ if !wide => (as_plain_narrow(c).map_or(Read::Itself, Read::As), len),
        _ if is_combining_mark(c) => (Read::Dropped, len),
        _ if c == LONG_VOWEL_MARK || is_ideographic_stop(c) => {
            let next = next_plain(text, i + len);
            let (joins, reads_as) = if c == LONG_VOWEL_MARK {
                (
                    last.is_some_and(|l| l.is_ascii_digit())
                        && next.is_some_and(|n| n.is_ascii_digit()),
                    '-',
                )
            } else {
                (
                    last.is_some_and(|l| l.is_ascii_alphanumeric())
                        && next.is_some_and(|n| n.is_ascii_alphanumeric()),
                    '.',
                )
            };
            (
                if joins {
                    Read::As(reads_as)
                } else {
                    Read::Itself
                },
                len,
            )
        }
        _ => (plain(c, len).map_or(Read::Itself, Read::As), len),
    }
}

/// How a super- or subscript or circled digit is drawn (see
/// [`stands_apart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigitStyle {
    Superscript,
    Subscript,
    Enclosed,
}

fn digit_style(c: char) -> Option<DigitStyle> {
    match u32::from(c) {
        0xB2 | 0xB3 | 0xB9 | 0x2070 | 0x2074..=0x2079 => Some(DigitStyle::Superscript),
        0x2080..=0x2089 => Some(DigitStyle::Subscript),
        0x2460..=0x2468
        | 0x24EA
        | 0x24F5..=0x24FD
        | 0x24FF
        | 0x2776..=0x277E
        | 0x2780..=0x2788
        | 0x278A..=0x2792 => Some(DigitStyle::Enclosed),
        _ => None,
    }
}

/// Whether a super- or subscript or circled digit, the `len` bytes at `i`,
/// ends a run of letters or digits of another kind, alone: then it is a
/// footnote, a power or a list mark (`1486²`, `10⁹`, `…1111①`), and the
/// wide reading leaves it as it is, or it would join the number before it
/// and hide it (a helper's attack, twenty-second session). Inside a number
/// (`57₈7`, `636② 1486`: a group separator and a digit after it), before
/// one, or in a run of its kind (`4¹¹¹¹…`) it is read (the next attack:
/// leaving every lone one unread hid a card with one digit so drawn). A
/// number whose last digit is so drawn reads as a number and a footnote;
/// that one stays unread. Neighbours are read past what the reading drops
/// and decoded where they are a reference or an escape (a JSON-escaped
/// reference as the `&` it escapes). The wide reading asks only where
/// something it alone decodes is near (see [`read_at`]'s `footnotes`).
fn stands_apart(text: &str, i: usize, len: usize, style: DigitStyle) -> bool {
    // Cheapest first: most such digits have an ASCII letter or digit right
    // after them, which every reading reads as itself.
    if at(text.as_bytes(), i + len).is_ascii_alphanumeric() {
        return false;
    }
    let plain = |c: char| as_plain(c).unwrap_or(c);
    let (after, after_end) = kept_after(text, i + len);
    if after.is_some_and(|c| digit_style(c) == Some(style) || plain(c).is_ascii_alphanumeric()) {
        return false;
    }
    // What it ends: a letter or digit of another kind, or it stands apart
    // from nothing.
    let Some(before) = kept_before(text, i)
        .filter(|&c| digit_style(c).is_none())
        .map(plain)
        .filter(char::is_ascii_alphanumeric)
    else {
        return false;
    };
    // A group separator and a digit after it: inside a number (`636② 1486`).
    // `ー` groups only after a digit (`111¹ー1111`): after a letter it is the
    // neighbour of a mark, not of a number (`key⁵ー4111-…`).
    let separated = after.is_some_and(|c| match plain(c) {
        ' ' | '-' => true,
        LONG_VOWEL_MARK => before.is_ascii_digit(),
        _ => false,
    });
    let grouped = separated
        && kept_after(text, after_end)
            .0
            .is_some_and(|c| plain(c).is_ascii_digit());
    !grouped
}

/// Whether the wide reading drops `c`.
fn dropped(c: char) -> bool {
    is_invisible(c) || is_combining_mark(c)
}

/// The last character before byte `i` the wide reading keeps.
fn kept_before(text: &str, mut i: usize) -> Option<char> {
    loop {
        let (c, start) = decoded_before(text, i)?;
        if !dropped(c) {
            return Some(c);
        }
        i = start;
    }
}

/// The first character from byte `j` on the wide reading keeps, and the
/// byte after it.
fn kept_after(text: &str, mut j: usize) -> (Option<char>, usize) {
    loop {
        let Some((c, end)) = decoded_after(text, j) else {
            return (None, j);
        };
        if !dropped(c) {
            return (Some(c), end);
        }
        j = end;
    }
}

/// The character that ends at byte `i` of `text`, decoded if it is a
/// reference or a `\u` escape ending there, and where it starts.
fn decoded_before(text: &str, i: usize) -> Option<(char, usize)> {
    let bytes = text.as_bytes();
    if i >= 6 && at(bytes, i - 6) == b'\\' && at(bytes, i - 5) == b'u' {
        if let Some((c, 6)) = json_u_escape(bytes, i - 6) {
            return Some((c, i - 6));
        }
    }
    if before(bytes, i) == b';' {
        // A named reference is 34 bytes at most; a zero-padded numeric one
        // longer than 40 is not looked for.
        let from = i.saturating_sub(40);
        if let Some(amp) = bytes
            .get(from..i)
            .and_then(|b| b.iter().rposition(|&b| b == b'&'))
        {
            let start = from + amp;
            if let Some((c, n)) = text.get(start..).and_then(html_reference) {
                if start + n == i {
                    return Some((c, start));
                }
            }
        }
    }
    let c = text.get(..i)?.chars().next_back()?;
    Some((c, i - c.len_utf8()))
}

/// The character that starts at byte `j` of `text`, decoded if it starts a
/// reference or a `\u` escape, and the byte after it.
fn decoded_after(text: &str, j: usize) -> Option<(char, usize)> {
    let rest = text.get(j..)?;
    let decoded = match rest.as_bytes().first()? {
        b'&' => html_reference(rest),
        // A JSON-escaped reference (`\u0026#52;`) reads here as the `&` it
        // escapes: read as what it names, a styled digit glued before a
        // secret so spelled joins it (a helper's attack, twenty-third
        // session, on a version that read it so: 397 of 14,040 strings the
        // build before found were missed).
        b'\\' => json_u_escape(text.as_bytes(), j),
        _ => None,
    };
    match decoded {
        Some((c, n)) => Some((c, j + n)),
        None => rest.chars().next().map(|c| (c, j + c.len_utf8())),
    }
}

/// The next character the wide reading keeps from byte `j` on (past what it
/// drops, an escape or a reference decoded), for a mark that joins only
/// between letters or digits: `gmail。\u{200b}com`, `gmail。&#99;om`. The
/// look stops at the next such mark, so each byte is looked at from one
/// mark at most and a run of marks stays linear (it stopped after 16
/// characters, which 16 zero-width spaces got past: a helper's attack).
fn next_plain(text: &str, mut j: usize) -> Option<char> {
    loop {
        let c = text.get(j..)?.chars().next()?;
        if c == LONG_VOWEL_MARK || is_ideographic_stop(c) {
            return None;
        }
        match read_at(text, j, c, Width::Wide, None, &|| true) {
            (Read::Dropped, n) => j += n.max(1),
            (Read::As(d), _) => return Some(d),
            (Read::Itself, _) => return Some(c),
        }
    }
}

/// The ASCII the narrow reading ([`Width::Narrow`]) takes `c` for:
/// fullwidth digits, letters, `-` and `@` (the rest of the fullwidth
/// punctuation stays: `：` before a number reads as text, `:` as a port or a
/// ratio), locale spaces as a space, dashes and the minus sign as `-`.
fn as_plain_narrow(c: char) -> Option<char> {
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

/// The ASCII the wide reading takes `c` for: what the narrow one does, and
/// fullwidth `+` and `.`; the small `+ - . @`, the super- and subscript and
/// heavy plus, the hyphen bullet, the one-dot leader; mathematical
/// alphanumeric letters (`𝐣𝐨𝐡𝐧`); the digits of other scripts
/// ([`DIGIT_RUNS`]).
fn as_plain(c: char) -> Option<char> {
    // ASCII reads as itself; the neighbour checks ask about it most.
    if c.is_ascii() {
        return None;
    }
    if let Some(p) = as_plain_narrow(c) {
        return Some(p);
    }
    match c {
        // CJK and Hangul, read a character at a time by the second reading,
        // hold none of what follows.
        '\u{3001}'..='\u{A61F}' | '\u{AC00}'..='\u{D7FF}' => None,
        '\u{FF0B}' | '\u{FE62}' | '\u{207A}' | '\u{208A}' | '\u{2795}' => Some('+'),
        '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => Some('.'),
        '\u{2043}' | '\u{FE58}' | '\u{FE63}' | '\u{207B}' | '\u{208B}' | '\u{2796}' => Some('-'),
        '\u{FE6B}' => Some('@'),
        // Thirteen styles of 52 letters, A-Z then a-z (the few code points
        // left unassigned, whose letters are in Letterlike Symbols, read as
        // the letter they stand for too).
        // The mathematical letters Unicode coded earlier, in Letterlike
        // Symbols, where the styles below have holes (`ℎ`, `ℂ`, `ℝ`, `ℯ`…).
        '\u{2102}' | '\u{212D}' => Some('C'),
        '\u{210A}' => Some('g'),
        '\u{210B}'..='\u{210D}' => Some('H'),
        '\u{210E}' => Some('h'),
        '\u{2110}' | '\u{2111}' => Some('I'),
        '\u{2112}' => Some('L'),
        '\u{2113}' => Some('l'),
        '\u{2115}' => Some('N'),
        '\u{2119}' => Some('P'),
        '\u{211A}' => Some('Q'),
        '\u{211B}'..='\u{211D}' => Some('R'),
        '\u{2124}' | '\u{2128}' => Some('Z'),
        '\u{212A}' => Some('K'),
        '\u{212C}' => Some('B'),
        '\u{212F}' | '\u{2147}' => Some('e'),
        '\u{2130}' => Some('E'),
        '\u{2131}' => Some('F'),
        '\u{2133}' => Some('M'),
        '\u{2134}' => Some('o'),
        '\u{2145}' => Some('D'),
        '\u{2146}' => Some('d'),
        '\u{2148}' => Some('i'),
        '\u{2149}' => Some('j'),
        '\u{1D400}'..='\u{1D6A3}' => {
            let letter = u8::try_from((u32::from(c) - 0x1D400) % 52).ok()?;
            Some(char::from(if letter < 26 {
                b'A' + letter
            } else {
                b'a' + letter - 26
            }))
        }
        _ => digit(c),
    }
}

/// Digits outside ASCII, as runs of code points whose values count up by
/// one: (first, last, the first's value). Every decimal digit of Unicode 15
/// and Unicode 16's outlined digits (U+1CCF0, a helper's attack; the other
/// scripts Unicode 16 added are not here: this machine's Unicode data is 15)
/// (`Nd`; the fullwidth ones are read with the fullwidth forms above), which
/// Python's `int()` and `\d` of many regex engines take for digits, and the
/// superscript, subscript and circled digits a reader reads as digits (a
/// card in Devanagari or mathematical bold digits passed as text; noted in
/// the twenty-first session). Not the parenthesised and full-stop forms
/// (`⑴`, `⒈`): they read as `(1)` and `1.`.
const DIGIT_RUNS: [(u32, u32, u32); 79] = [
    (0x00B2, 0x00B3, 2),
    (0x00B9, 0x00B9, 1),
    (0x0660, 0x0669, 0),
    (0x06F0, 0x06F9, 0),
    (0x07C0, 0x07C9, 0),
    (0x0966, 0x096F, 0),
    (0x09E6, 0x09EF, 0),
    (0x0A66, 0x0A6F, 0),
    (0x0AE6, 0x0AEF, 0),
    (0x0B66, 0x0B6F, 0),
    (0x0BE6, 0x0BEF, 0),
    (0x0C66, 0x0C6F, 0),
    (0x0CE6, 0x0CEF, 0),
    (0x0D66, 0x0D6F, 0),
    (0x0DE6, 0x0DEF, 0),
    (0x0E50, 0x0E59, 0),
    (0x0ED0, 0x0ED9, 0),
    (0x0F20, 0x0F29, 0),
    (0x1040, 0x1049, 0),
    (0x1090, 0x1099, 0),
    (0x17E0, 0x17E9, 0),
    (0x1810, 0x1819, 0),
    (0x1946, 0x194F, 0),
    (0x19D0, 0x19D9, 0),
    (0x1A80, 0x1A89, 0),
    (0x1A90, 0x1A99, 0),
    (0x1B50, 0x1B59, 0),
    (0x1BB0, 0x1BB9, 0),
    (0x1C40, 0x1C49, 0),
    (0x1C50, 0x1C59, 0),
    (0x2070, 0x2070, 0),
    (0x2074, 0x2079, 4),
    (0x2080, 0x2089, 0),
    (0x2460, 0x2468, 1),
    (0x24EA, 0x24EA, 0),
    (0x24F5, 0x24FD, 1),
    (0x24FF, 0x24FF, 0),
    (0x2776, 0x277E, 1),
    (0x2780, 0x2788, 1),
    (0x278A, 0x2792, 1),
    (0xA620, 0xA629, 0),
    (0xA8D0, 0xA8D9, 0),
    (0xA900, 0xA909, 0),
    (0xA9D0, 0xA9D9, 0),
    (0xA9F0, 0xA9F9, 0),
    (0xAA50, 0xAA59, 0),
    (0xABF0, 0xABF9, 0),
    (0x104A0, 0x104A9, 0),
    (0x10D30, 0x10D39, 0),
    (0x11066, 0x1106F, 0),
    (0x110F0, 0x110F9, 0),
    (0x11136, 0x1113F, 0),
    (0x111D0, 0x111D9, 0),
    (0x112F0, 0x112F9, 0),
    (0x11450, 0x11459, 0),
    (0x114D0, 0x114D9, 0),
    (0x11650, 0x11659, 0),
    (0x116C0, 0x116C9, 0),
    (0x11730, 0x11739, 0),
    (0x118E0, 0x118E9, 0),
    (0x11950, 0x11959, 0),
    (0x11C50, 0x11C59, 0),
    (0x11D50, 0x11D59, 0),
    (0x11DA0, 0x11DA9, 0),
    (0x11F50, 0x11F59, 0),
    (0x16A60, 0x16A69, 0),
    (0x16AC0, 0x16AC9, 0),
    (0x16B50, 0x16B59, 0),
    (0x1CCF0, 0x1CCF9, 0),
    (0x1D7CE, 0x1D7D7, 0),
    (0x1D7D8, 0x1D7E1, 0),
    (0x1D7E2, 0x1D7EB, 0),
    (0x1D7EC, 0x1D7F5, 0),
    (0x1D7F6, 0x1D7FF, 0),
    (0x1E140, 0x1E149, 0),
    (0x1E2F0, 0x1E2F9, 0),
    (0x1E4F0, 0x1E4F9, 0),
    (0x1E950, 0x1E959, 0),
    (0x1FBF0, 0x1FBF9, 0),
];

/// The ASCII digit `c` is in another script, from [`DIGIT_RUNS`].
fn digit(c: char) -> Option<char> {
    let code = u32::from(c);
    // CJK, Hangul and most scripts have none: turned away before the search
    // (the second reading asks for every character of a text it reads).
    if !matches!(code, 0xB2..=0x2792 | 0xA620..=0xABF9 | 0x1_04A0..=0x1_FBF9) {
        return None;
    }
    let run = DIGIT_RUNS.partition_point(|&(_, last, _)| last < code);
    let &(first, _, value) = DIGIT_RUNS.get(run)?;
    if code < first {
        return None;
    }
    char::from_digit(value + (code - first), 10)
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
/// `&#x2F;`, `&ndash;`): the character and the reference's length, as a
/// browser decodes it in text. Numeric references may run without their
/// `;` and with any number of leading zeros (`&#x00000ff14`), and 128-159
/// are read as windows-1252 (`&#150;` is an en dash); named ones are those
/// of HTML's list that spell punctuation, a space, a dash or nothing, and
/// `amp`, `lt`, `gt`, `quot`, `nbsp` and `shy` also without `;`, as HTML
/// reads them (a helper's attack, twenty-first session: `4539&ndash;1488…`
/// and `&#x00000ff14;` passed).
fn html_reference(s: &str) -> Option<(char, usize)> {
    let (c, n) = reference_body(s.strip_prefix('&')?)?;
    Some((c, n + 1))
}

/// What follows a reference's `&` (`ndash;`, `#52`), read as
/// [`html_reference`] reads it: the character and the bytes it takes. Also
/// where the `&` came as a JSON escape (`\u0026ndash;`).
fn reference_body(body: &str) -> Option<(char, usize)> {
    let bytes = body.as_bytes();
    if at(bytes, 0) == b'#' {
        return numeric_reference(bytes);
    }
    let name_len = run_len(bytes, 0, |b| b.is_ascii_alphanumeric()).min(32);
    let name = body.get(..name_len)?;
    if at(bytes, name_len) == b';' {
        if let Some(c) = named_reference(name) {
            return Some((c, name_len + 1));
        }
    }
    // Without its `;` (or with a name HTML does not know), a legacy name
    // that starts it is read, the longest first (`&nbsp4111`, `&amp;`).
    [
        "nbsp", "quot", "QUOT", "sup1", "sup2", "sup3", "amp", "AMP", "shy", "lt", "LT", "gt", "GT",
    ]
    .into_iter()
    .find(|legacy| name.starts_with(legacy))
    .and_then(|legacy| Some((named_reference(legacy)?, legacy.len())))
}

/// An HTML character reference at the start of `s` as the narrow reading
/// reads it (the twenty-first session's reading, kept as it was: see
/// [`second_readings`]): `&lt; &gt; &quot; &amp; &apos; &nbsp;` and numeric
/// references, all with their `;` within 12 bytes.
fn html_reference_narrow(s: &str) -> Option<(char, usize)> {
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

/// `#…` after a reference's `&`, at the start of `bytes`: decimal or `x`
/// and hex digits, the `;` optional. Zero, surrogates and values past Unicode read as U+FFFD.
fn numeric_reference(bytes: &[u8]) -> Option<(char, usize)> {
    let hex = matches!(at(bytes, 1), b'x' | b'X');
    let start = if hex { 2 } else { 1 };
    let (radix, is_digit): (u32, fn(u8) -> bool) = if hex {
        (16, |b| b.is_ascii_hexdigit())
    } else {
        (10, |b| b.is_ascii_digit())
    };
    let digits = run_len(bytes, start, is_digit);
    if digits == 0 {
        return None;
    }
    let code = bytes
        .get(start..start + digits)?
        .iter()
        .filter_map(|&b| char::from(b).to_digit(radix))
        .fold(0_u32, |code, d| {
            code.saturating_mul(radix).saturating_add(d).min(0x11_0000)
        });
    let end = start + digits + usize::from(at(bytes, start + digits) == b';');
    let c = match code {
        0x80..=0x9F => windows_1252(code),
        _ => char::from_u32(code).filter(|&c| c != '\0'),
    };
    Some((c.unwrap_or('\u{FFFD}'), end))
}

/// What a browser shows for the references 128-159: windows-1252's
/// characters there (the five it leaves undefined read as themselves).
fn windows_1252(code: u32) -> Option<char> {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    HIGH.get(usize::try_from(code.checked_sub(0x80)?).ok()?)
        .copied()
}

/// The HTML named references the second reading decodes: those that spell
/// ASCII punctuation, a space, a dash or an invisible character (names are
/// case-sensitive, as in HTML).
fn named_reference(name: &str) -> Option<char> {
    Some(match name {
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "amp" | "AMP" => '&',
        "apos" => '\'',
        "Tab" => '\t',
        "NewLine" => '\n',
        "excl" => '!',
        "num" => '#',
        "dollar" => '$',
        "percnt" => '%',
        "lpar" => '(',
        "rpar" => ')',
        "ast" | "midast" => '*',
        "plus" => '+',
        "comma" => ',',
        "period" => '.',
        "sol" => '/',
        "colon" => ':',
        "semi" => ';',
        "equals" => '=',
        "quest" => '?',
        "commat" => '@',
        "lsqb" | "lbrack" => '[',
        "bsol" => '\\',
        "rsqb" | "rbrack" => ']',
        "Hat" => '^',
        "lowbar" | "UnderBar" => '_',
        "grave" | "DiacriticalGrave" => '`',
        "lcub" | "lbrace" => '{',
        "verbar" | "vert" | "VerticalLine" => '|',
        "rcub" | "rbrace" => '}',
        "nbsp" | "NonBreakingSpace" => '\u{A0}',
        "sup1" => '\u{B9}',
        "sup2" => '\u{B2}',
        "sup3" => '\u{B3}',
        "hybull" => '\u{2043}',
        "shy" => '\u{AD}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        "emsp13" => '\u{2004}',
        "emsp14" => '\u{2005}',
        "numsp" => '\u{2007}',
        "puncsp" => '\u{2008}',
        "thinsp" | "ThinSpace" => '\u{2009}',
        "hairsp" | "VeryThinSpace" => '\u{200A}',
        "ZeroWidthSpace"
        | "NegativeVeryThinSpace"
        | "NegativeThinSpace"
        | "NegativeMediumSpace"
        | "NegativeThickSpace" => '\u{200B}',
        "zwnj" => '\u{200C}',
        "zwj" => '\u{200D}',
        "lrm" => '\u{200E}',
        "rlm" => '\u{200F}',
        "hyphen" | "dash" => '\u{2010}',
        "ndash" => '\u{2013}',
        "mdash" => '\u{2014}',
        "horbar" => '\u{2015}',
        // `ThickSpace` is U+205F and U+200A: one space to a reader.
        "MediumSpace" | "ThickSpace" => '\u{205F}',
        "NoBreak" => '\u{2060}',
        "af" | "ApplyFunction" => '\u{2061}',
        "it" | "InvisibleTimes" => '\u{2062}',
        "ic" | "InvisibleComma" => '\u{2063}',
        "minus" => '\u{2212}',
        _ => return None,
    })
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
        let naive = |t: &str| (0..t.len()).any(|i| starts_other_reading(t, i));
        // Every kind of lead of a second reading, a near miss of each (a
        // character of the same block that reads as itself), at every
        // offset of texts of every length around the word and block sizes.
        let leads = [
            "\\u",
            "\\/",
            "\\x",
            "&#",
            "&a",
            "&A",
            "&1",
            "\u{a0}",
            "\u{a9}",
            "\u{2009}",
            "\u{2022}",
            "\u{2082}",
            "\u{ff14}",
            "\u{ff1a}",
            "\u{e0041}",
            "\u{f0041}",
            "\u{34f}",
            "\u{966}",
            "\u{940}",
            "\u{3002}",
            "\u{3001}",
            "\u{1d7d2}",
            "\u{1d7cd}",
        ];
        for len in 0..26 {
            for at in 0..len {
                for lead in leads {
                    let t = format!("{}{lead}{}", "x".repeat(at), "x".repeat(len - at));
                    assert_eq!(may_read_otherwise(&t), naive(&t), "{t:?}");
                }
            }
        }
        // The same inside text that is all such bytes (CJK: each of its
        // bytes is above 0x7F, so the search stops at every one and the run
        // is read in place).
        let cjk = "日本語のテキスト".repeat(4);
        for (at, _) in cjk.char_indices() {
            for lead in leads {
                let t = format!("{}{lead}{}", &cjk[..at], &cjk[at..]);
                assert_eq!(may_read_otherwise(&t), naive(&t), "{t:?}");
            }
        }
        assert!(!may_read_otherwise(&cjk));
        // And random text, dense in the keyed characters.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let alphabet = [
            "a", " ", "\\", "u", "&", "#", "\u{a0}", "\u{a9}", "\u{2009}", "\u{ff14}", "\u{7f}",
            "\u{966}", "\u{940}", "\u{3002}",
        ];
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let t: String = (0..len)
                .map(|k| alphabet[((seed >> (k % 60)) as usize + k * 7) % alphabet.len()])
                .collect();
            assert_eq!(may_read_otherwise(&t), naive(&t), "{t:?}");
        }
    }

    /// The lead table of `starts_other_reading` misses no character the
    /// second reading maps or drops, in all of Unicode.
    #[test]
    fn every_character_read_otherwise_starts_another_reading() {
        let mut read_otherwise = 0;
        for c in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            if reads_otherwise(c) {
                read_otherwise += 1;
                let t = format!("1{c}1");
                assert!(starts_other_reading(&t, 1), "U+{:04X}", u32::from(c));
                assert!(may_read_otherwise(&t), "U+{:04X}", u32::from(c));
            }
        }
        // The tags alone are 4,096: the table was not read empty.
        assert!(read_otherwise > 4_096, "{read_otherwise}");
    }

    #[test]
    fn html_references_read_as_a_browser_reads_them_in_text() {
        for (s, want) in [
            ("&lt;x", Some(('<', 4))),
            ("&LT;x", Some(('<', 4))),
            ("&ndash;1111", Some(('\u{2013}', 7))),
            ("&Ndash;1111", None),
            ("&ThinSpace;", Some(('\u{2009}', 11))),
            ("&NegativeVeryThinSpace;", Some(('\u{200B}', 23))),
            ("&#52;1", Some(('4', 5))),
            ("&#52&#49", Some(('4', 4))),
            ("&#x34g", Some(('4', 5))),
            ("&#x00000ff14;", Some(('\u{FF14}', 13))),
            ("&#0000000000000000052;", Some(('4', 22))),
            ("&#150;", Some(('\u{2013}', 6))),
            ("&#129;", Some(('\u{81}', 6))),
            ("&#0;", Some(('\u{FFFD}', 4))),
            ("&#xD800;", Some(('\u{FFFD}', 8))),
            ("&#99999999999999999999;", Some(('\u{FFFD}', 23))),
            ("&nbsp4111", Some(('\u{A0}', 5))),
            ("&ampx", Some(('&', 4))),
            ("&ltx;", Some(('<', 3))),
            ("&D and", None),
            ("&#;", None),
            ("&#x;", None),
            ("&", None),
        ] {
            assert_eq!(html_reference(s), want, "{s}");
        }
    }

    #[test]
    fn digits_of_other_scripts_read_as_ascii_digits() {
        for (c, want) in [
            ('\u{660}', Some('0')),
            ('\u{669}', Some('9')),
            ('\u{66A}', None),
            ('\u{965}', None),
            ('\u{966}', Some('0')),
            ('\u{96F}', Some('9')),
            ('\u{B2}', Some('2')),
            ('\u{B9}', Some('1')),
            ('\u{2074}', Some('4')),
            ('\u{2460}', Some('1')),
            ('\u{2468}', Some('9')),
            ('\u{2469}', None),
            ('\u{24EA}', Some('0')),
            ('\u{1D7CE}', Some('0')),
            ('\u{1D7D8}', Some('0')),
            ('\u{1D7FF}', Some('9')),
            ('\u{1FBF9}', Some('9')),
            ('\u{FF14}', Some('4')),
            ('4', None),
            ('a', None),
        ] {
            assert_eq!(as_plain(c), want, "U+{:04X}", u32::from(c));
        }
        // The runs are sorted and ten digits at most, for the search.
        for pair in DIGIT_RUNS.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{pair:?}");
        }
        for (first, last, value) in DIGIT_RUNS {
            assert!(first <= last && value + (last - first) <= 9, "{first:X}");
            // Inside the ranges `digit` searches at all.
            for code in [first, last] {
                let c = char::from_u32(code).unwrap_or_default();
                assert!(digit(c).is_some(), "{code:X}");
            }
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
