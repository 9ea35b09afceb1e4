//! Folding: the text a reader (or a model) takes a string to say, as plain
//! lower-case ASCII where a look-alike exists, and the characters nobody sees.
//!
//! Why not NFKC (`unicode-normalization`): NFKC maps fullwidth letters,
//! mathematical alphanumerics, circled letters and ligatures, which we need,
//! but not Cyrillic or Greek look-alikes (that is UTS #39's confusables table),
//! and it keeps the invisible characters we must both see and drop. Its tables
//! also cost tens of KiB of wasm. So we fold the few blocks attackers use,
//! by ranges, in one pass (`docs/catalogue.md` lists them and what is left).
//!
//! What folding does, per character:
//! - ASCII letters are lower-cased; other ASCII is kept.
//! - Unicode spaces, line and paragraph separators become a space.
//! - Fullwidth forms, mathematical alphanumerics, circled, parenthesised and
//!   squared letters, letterlike symbols, small capitals, ligatures, accented
//!   Latin letters and the Cyrillic and Greek letters that look like Latin ones
//!   become the ASCII letter they look like; look-alike dots, slashes, dashes,
//!   tildes and quotes become the ASCII ones (so `~∕.ssh` is `~/.ssh`).
//! - Combining marks are dropped (`i̇gnore` is `ignore`).
//! - Invisible characters are dropped and recorded (`ig\u{200b}nore` is
//!   `ignore`, with [`Hidden::ZeroWidth`]); Unicode tag characters are
//!   recorded and read as the ASCII they encode ("ASCII smuggling"), so text
//!   hidden in them meets the same phrase checks as visible text.
//! - Everything else is kept as it is (it is never part of an ASCII word).
use std::borrow::Cow;

/// A kind of character that changes what a string says without being seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hidden {
    /// U+E0000–U+E007F outside an emoji flag sequence.
    TagCharacter,
    /// Zero-width spaces, joiners between ASCII letters, word joiners,
    /// invisible operators, fillers, soft hyphens.
    ZeroWidth,
    /// Bidirectional embeddings, overrides, isolates and marks.
    Bidi,
    /// Two or more variation selectors in a row: one per byte of hidden data.
    VariationRun,
    /// C0/C1 control characters other than tab and line ends (ANSI escapes).
    Control,
}

impl Hidden {
    pub fn reason(self) -> &'static str {
        match self {
            Hidden::TagCharacter => "Unicode tag characters (invisible text)",
            Hidden::ZeroWidth => "zero-width or invisible characters",
            Hidden::Bidi => "bidirectional control characters",
            Hidden::VariationRun => "a run of variation selectors (hidden bytes)",
            Hidden::Control => "control characters (terminal escapes)",
        }
    }
}

/// A string as read: folded text and the hidden kinds met, each once.
#[derive(Debug, Default)]
pub struct Folded {
    pub text: String,
    pub hidden: Vec<Hidden>,
}

impl Folded {
    fn saw(&mut self, h: Hidden) {
        if !self.hidden.contains(&h) {
            self.hidden.push(h);
        }
    }
}

/// HTML character references decoded (`&#73;`, `&#x49;`, `&lt;`, `&gt;`,
/// `&amp;`, `&quot;`, `&apos;`, `&nbsp;` and a few punctuation names), as a
/// model reads them: `&#73;gnore all previous instructions` is an
/// instruction, `&lt;IMPORTANT&gt;` a tag (eleventh review). Numeric
/// references need no `;` (HTML's parser accepts them without). Borrowed
/// when there is none. Linear: each reference is at most 10 bytes long.
pub fn decode_char_refs(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match char_ref(after) {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
                changed = true;
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    match changed {
        true => Cow::Owned(out),
        false => Cow::Borrowed(s),
    }
}

/// The character a reference after `&` names, and the bytes it took.
fn char_ref(after: &str) -> Option<(char, usize)> {
    let b = after.as_bytes();
    if b.first() == Some(&b'#') {
        let (hex, start) = match b.get(1) {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
        let digits = b[start..]
            .iter()
            .take(8)
            .take_while(|d| match hex {
                true => d.is_ascii_hexdigit(),
                false => d.is_ascii_digit(),
            })
            .count();
        if digits == 0 {
            return None;
        }
        let text = after.get(start..start + digits)?;
        let cp = u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()?;
        let c = char::from_u32(cp)?;
        let semi = usize::from(b.get(start + digits) == Some(&b';'));
        return Some((c, start + digits + semi));
    }
    const NAMED: [(&str, char); 14] = [
        ("lt;", '<'),
        ("gt;", '>'),
        ("amp;", '&'),
        ("quot;", '"'),
        ("apos;", '\''),
        ("nbsp;", ' '),
        ("sol;", '/'),
        ("colon;", ':'),
        ("period;", '.'),
        ("lpar;", '('),
        ("rpar;", ')'),
        ("excl;", '!'),
        ("lsqb;", '['),
        ("rsqb;", ']'),
    ];
    NAMED.iter().find_map(|(name, c)| {
        let head = after.get(..name.len())?;
        head.eq_ignore_ascii_case(name).then_some((*c, name.len()))
    })
}

/// Fold `s` in one pass (linear; at most 3 output bytes per input char).
pub fn fold(s: &str) -> Folded {
    let mut out = Folded {
        text: String::with_capacity(s.len()),
        hidden: Vec::new(),
    };
    let mut prev: Option<char> = None;
    // Inside an emoji tag sequence (U+1F3F4 then tags, as subdivision flags
    // spell 🏴 Scotland): tags there are part of a visible emoji.
    let mut flag_tags = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        // Printable ASCII and line breaks first: most text read (tool
        // results, descriptions) is made of them, and the range tests
        // below cost ~110 instructions a byte (a quarter of the catalogue
        // checks on a long result, natively). What the arms below do with
        // them: `push_folded` lower-cases, a line break reads as a space.
        match c {
            ' '..='~' => {
                out.text.push(c.to_ascii_lowercase());
                prev = Some(c);
                continue;
            }
            '\t' | '\n' | '\r' => {
                out.text.push(' ');
                prev = Some(c);
                continue;
            }
            _ => {}
        }
        let next = chars.peek().copied();
        let cp = u32::from(c);
        match cp {
            0xE0000..=0xE007F => {
                if prev == Some('\u{1F3F4}') {
                    flag_tags = true;
                }
                if !flag_tags {
                    out.saw(Hidden::TagCharacter);
                    if (0xE0020..=0xE007E).contains(&cp) {
                        if let Some(a) = char::from_u32(cp - 0xE0000) {
                            out.text.push(a.to_ascii_lowercase());
                        }
                    }
                }
                if cp == 0xE007F {
                    flag_tags = false;
                }
            }
            // Joiners are part of emoji sequences and of Persian and Indic
            // spelling; between ASCII (or at an edge) they only split a word.
            0x200C | 0x200D => {
                let ascii_side = |o: Option<char>| o.is_none_or(|o| o.is_ascii());
                if ascii_side(prev) || ascii_side(next) {
                    out.saw(Hidden::ZeroWidth);
                }
            }
            // Default-ignorable code points render as nothing: inside a
            // word they hide it from the markers (eleventh review H2:
            // Mongolian selectors, deprecated format characters, shorthand
            // format controls were kept as ordinary characters).
            0x200B
            | 0x2060..=0x2065
            | 0x206A..=0x206F
            | 0x180B..=0x180F
            | 0x1BCA0..=0x1BCA3
            | 0xFFF0..=0xFFF8
            | 0xE0080..=0xE00FF
            | 0xE01F0..=0xE0FFF
            | 0x034F
            | 0x115F
            | 0x1160
            | 0x3164
            | 0xFFA0
            | 0x00AD
            | 0x17B4
            | 0x17B5
            | 0x1D173..=0x1D17A
            | 0xFFF9..=0xFFFB => out.saw(Hidden::ZeroWidth),
            // A byte-order mark opening the string is an encoding artefact.
            0xFEFF => {
                if prev.is_some() {
                    out.saw(Hidden::ZeroWidth);
                }
            }
            0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F | 0x061C => out.saw(Hidden::Bidi),
            // A selector after another, or after an ASCII letter (no letter
            // has a variant; keycaps follow digits, `#` and `*`), carries
            // hidden bytes, one per selector (eleventh review H2).
            0xFE00..=0xFE0F | 0xE0100..=0xE01EF => {
                if prev.is_some_and(|p| is_variation_selector(p) || p.is_ascii_alphabetic()) {
                    out.saw(Hidden::VariationRun);
                }
            }
            0x09 | 0x0A | 0x0D => out.text.push(' '),
            // A colour or weight (ANSI SGR without "conceal") is visible
            // formatting, as terminal tools print it; conceal, cursor moves
            // and line erasing hide text from whoever reads the terminal.
            0x1B if is_visible_sgr(chars.clone()) => out.text.push(' '),
            0x00..=0x1F | 0x7F..=0x9F => {
                out.saw(Hidden::Control);
                out.text.push(' ');
            }
            0x0300..=0x036F
            | 0x1AB0..=0x1AFF
            | 0x1DC0..=0x1DFF
            | 0x20D0..=0x20FF
            | 0xFE20..=0xFE2F => {}
            _ => push_folded(&mut out.text, c),
        }
        prev = Some(c);
    }
    out
}

/// Two more readings of `s` when it holds terminal control sequences: each
/// whole sequence a space, and each removed; `None` when it holds none. A
/// model reads across a sequence as a terminal does, inside a word
/// (`Ign\x1b[0more`) and between words (`ignore\x1b[31mprevious`, whose
/// second word a terminal shows glued on): one reading cannot be both.
///
/// A sequence is ECMA-48's CSI (ESC, `[`, parameter bytes `0`-`?`,
/// intermediate bytes ` `-`/`, one final byte `@`-`~`, ended within 32
/// bytes), also with its ESC spelled out (`^[`, `\x1b`, `\033`, `\e`,
/// `\u001b`, `%1B`: logs and `cat -v` print them so), and a colour code
/// whose ESC was stripped (`[1;31m`: digits and `;`, then `m`); thirty-
/// seventh review. Linear: each position looks at most 40 bytes ahead.
pub fn control_sequence_readings(s: &str) -> Option<(String, String)> {
    let b = s.as_bytes();
    if !b.contains(&b'[') {
        return None;
    }
    let mut spaced = String::with_capacity(s.len());
    let mut joined = String::with_capacity(s.len());
    let mut found = false;
    let mut copied = 0;
    let mut i = 0;
    while let Some(&first) = b.get(i) {
        // Only these bytes start a sequence: the rest of a text holding a
        // `[` (JSON, markdown) costs one comparison each.
        let at = match first {
            0x1B | b'^' | b'\\' | b'%' | b'[' => control_sequence_at(b, i),
            _ => None,
        };
        let Some(len) = at else {
            i += 1;
            continue;
        };
        // Sequences are ASCII, so `i` and `i + len` are char boundaries.
        let before = s.get(copied..i).unwrap_or_default();
        spaced.push_str(before);
        spaced.push(' ');
        joined.push_str(before);
        found = true;
        i += len;
        copied = i;
    }
    let rest = s.get(copied..).unwrap_or_default();
    spaced.push_str(rest);
    joined.push_str(rest);
    found.then_some((spaced, joined))
}

/// The spellings of ESC before a sequence's `[`, as bytes (hex digits in
/// either case).
const ESC_SPELLINGS: [&[u8]; 8] = [
    b"\x1b", b"^[", b"\\x1b", b"\\033", b"\\e", b"\\u001b", b"%1b", b"\\u{1b}",
];

/// The byte length of the control sequence starting at `i` (see
/// [`control_sequence_readings`]), if one does.
fn control_sequence_at(b: &[u8], i: usize) -> Option<usize> {
    let rest = b.get(i..)?;
    let introducer = ESC_SPELLINGS.iter().find(|e| {
        rest.get(..e.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(e))
            && rest.get(e.len()) == Some(&b'[')
    });
    let (start, any_final) = match introducer {
        Some(e) => (e.len() + 1, true),
        // A colour code without its ESC: only `[`, digits and `;`, `m`.
        None if rest.first() == Some(&b'[') => (1, false),
        None => return None,
    };
    for (n, &c) in rest.get(start..)?.iter().take(32).enumerate() {
        match c {
            b'0'..=b'9' | b';' => {}
            0x20..=0x3F if any_final => {}
            b'm' => return Some(start + n + 1),
            0x40..=0x7E if any_final => return Some(start + n + 1),
            _ => return None,
        }
    }
    None
}

/// After an ESC: `[`, parameters, `m`, and no parameter 8 (conceal).
fn is_visible_sgr(mut rest: impl Iterator<Item = char>) -> bool {
    if rest.next() != Some('[') {
        return false;
    }
    let mut param = String::new();
    for c in rest.take(32) {
        match c {
            '0'..='9' => param.push(c),
            ';' | 'm' => {
                if param.trim_start_matches('0') == "8" {
                    return false;
                }
                if c == 'm' {
                    return true;
                }
                param.clear();
            }
            _ => return false,
        }
    }
    false
}

fn is_variation_selector(c: char) -> bool {
    matches!(u32::from(c), 0xFE00..=0xFE0F | 0xE0100..=0xE01EF)
}

/// The letter `i` (0-based) of the alphabet.
fn letter(i: u32) -> char {
    char::from_u32(u32::from(b'a') + i % 26).unwrap_or('?')
}

/// Latin-1 Supplement and Latin Extended-A letters without their accents,
/// as (first code point, last code point, ASCII).
const LATIN_RANGES: &[(u32, u32, &str)] = &[
    (0xC0, 0xC5, "a"),
    (0xC6, 0xC6, "ae"),
    (0xC7, 0xC7, "c"),
    (0xC8, 0xCB, "e"),
    (0xCC, 0xCF, "i"),
    (0xD0, 0xD0, "d"),
    (0xD1, 0xD1, "n"),
    (0xD2, 0xD6, "o"),
    (0xD8, 0xD8, "o"),
    (0xD9, 0xDC, "u"),
    (0xDD, 0xDD, "y"),
    (0xDE, 0xDE, "th"),
    (0xDF, 0xDF, "ss"),
    (0xE0, 0xE5, "a"),
    (0xE6, 0xE6, "ae"),
    (0xE7, 0xE7, "c"),
    (0xE8, 0xEB, "e"),
    (0xEC, 0xEF, "i"),
    (0xF0, 0xF0, "d"),
    (0xF1, 0xF1, "n"),
    (0xF2, 0xF6, "o"),
    (0xF8, 0xF8, "o"),
    (0xF9, 0xFC, "u"),
    (0xFD, 0xFD, "y"),
    (0xFE, 0xFE, "th"),
    (0xFF, 0xFF, "y"),
    (0x100, 0x105, "a"),
    (0x106, 0x10D, "c"),
    (0x10E, 0x111, "d"),
    (0x112, 0x11B, "e"),
    (0x11C, 0x123, "g"),
    (0x124, 0x127, "h"),
    (0x128, 0x131, "i"),
    (0x132, 0x133, "ij"),
    (0x134, 0x135, "j"),
    (0x136, 0x138, "k"),
    (0x139, 0x142, "l"),
    (0x143, 0x14B, "n"),
    (0x14C, 0x151, "o"),
    (0x152, 0x153, "oe"),
    (0x154, 0x159, "r"),
    (0x15A, 0x161, "s"),
    (0x162, 0x167, "t"),
    (0x168, 0x173, "u"),
    (0x174, 0x175, "w"),
    (0x176, 0x178, "y"),
    (0x179, 0x17E, "z"),
    (0x17F, 0x17F, "s"),
];

fn push_folded(out: &mut String, c: char) {
    let cp = u32::from(c);
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    let one = |out: &mut String, a: char| out.push(a);
    match cp {
        // Spaces of every width, line and paragraph separators.
        0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000 => {
            one(out, ' ')
        }
        // Fullwidth ASCII.
        0xFF01..=0xFF5E => {
            if let Some(a) = char::from_u32(cp - 0xFEE0) {
                one(out, a.to_ascii_lowercase());
            }
        }
        // Mathematical alphanumerics: 13 alphabets of A–Z a–z, then digits.
        0x1D400..=0x1D6A3 => one(out, letter((cp - 0x1D400) % 52)),
        0x1D6A4 => one(out, 'i'),
        0x1D6A5 => one(out, 'j'),
        0x1D7CE..=0x1D7FF => one(
            out,
            char::from_u32(u32::from(b'0') + (cp - 0x1D7CE) % 10).unwrap_or('0'),
        ),
        // Circled and parenthesised letters; squared and negative ones.
        0x24B6..=0x24CF => one(out, letter(cp - 0x24B6)),
        0x24D0..=0x24E9 => one(out, letter(cp - 0x24D0)),
        0x249C..=0x24B5 => one(out, letter(cp - 0x249C)),
        0x1F130..=0x1F149 => one(out, letter(cp - 0x1F130)),
        0x1F150..=0x1F169 => one(out, letter(cp - 0x1F150)),
        0x1F170..=0x1F189 => one(out, letter(cp - 0x1F170)),
        0x1F1E6..=0x1F1FF => one(out, letter(cp - 0x1F1E6)),
        0xFB00 => out.push_str("ff"),
        0xFB01 => out.push_str("fi"),
        0xFB02 => out.push_str("fl"),
        0xFB03 => out.push_str("ffi"),
        0xFB04 => out.push_str("ffl"),
        0xFB05 | 0xFB06 => out.push_str("st"),
        0xC0..=0x17F => match LATIN_RANGES
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&cp))
        {
            Some((_, _, s)) => out.push_str(s),
            None => one(out, c),
        },
        _ => one(out, look_alike(c).unwrap_or(c)),
    }
}

/// A single character that reads as an ASCII one.
fn look_alike(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic.
        'а' | 'А' => 'a',
        'в' | 'В' | 'ь' => 'b',
        'с' | 'С' | 'ϲ' | 'Ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'Е' | 'ё' | 'Ё' | 'є' => 'e',
        'һ' | 'Һ' | 'н' | 'Н' => 'h',
        'і' | 'І' | 'ї' | 'Ї' | 'ӏ' | 'Ӏ' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' => 'k',
        'м' | 'М' => 'm',
        'о' | 'О' => 'o',
        'р' | 'Р' => 'p',
        'ԛ' => 'q',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' => 't',
        'у' | 'У' | 'ү' => 'y',
        'х' | 'Х' => 'x',
        'ԝ' | 'Ԝ' => 'w',
        // Greek.
        'α' | 'Α' => 'a',
        'β' | 'Β' => 'b',
        'ε' | 'Ε' => 'e',
        'Ζ' => 'z',
        'η' | 'Η' => 'h',
        'ι' | 'Ι' => 'i',
        'κ' | 'Κ' => 'k',
        'Μ' => 'm',
        'ν' | 'Ν' => 'n',
        'ο' | 'Ο' | 'σ' => 'o',
        'ρ' | 'Ρ' => 'p',
        'τ' | 'Τ' => 't',
        'υ' | 'Υ' => 'u',
        'χ' | 'Χ' => 'x',
        // IPA and small capitals.
        'ɑ' | 'ᴀ' => 'a',
        'ʙ' => 'b',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ɡ' | 'ɢ' => 'g',
        'ʜ' => 'h',
        'ɩ' | 'ɪ' | 'ı' => 'i',
        'ᴊ' => 'j',
        'ᴋ' => 'k',
        'ʟ' => 'l',
        'ᴍ' => 'm',
        'ɴ' => 'n',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ʀ' => 'r',
        'ꜱ' => 's',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ʏ' => 'y',
        'ᴢ' => 'z',
        // Letterlike symbols.
        'ℂ' | 'ℭ' => 'c',
        'ℊ' => 'g',
        'ℋ' | 'ℌ' | 'ℍ' | 'ℎ' => 'h',
        'ℐ' | 'ℑ' | 'ℹ' => 'i',
        'ℒ' | 'ℓ' => 'l',
        'ℕ' => 'n',
        'ℙ' => 'p',
        'ℚ' => 'q',
        'ℛ' | 'ℜ' | 'ℝ' => 'r',
        'ℤ' => 'z',
        'ℬ' => 'b',
        'ℯ' | 'ℰ' => 'e',
        'ℱ' => 'f',
        'ℳ' => 'm',
        'ℴ' => 'o',
        '\u{212A}' => 'k',
        '\u{212B}' => 'a',
        // Punctuation that stands in for what paths, URLs and tags are made of.
        '\u{2024}' | '\u{FE52}' | '\u{3002}' => '.',
        '\u{2215}' | '\u{2044}' | '\u{29F8}' => '/',
        '\u{223C}' | '\u{02DC}' => '~',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        '\u{2018}' | '\u{2019}' | '\u{02BC}' | '\u{2032}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{2033}' => '"',
        '\u{2039}' | '\u{27E8}' | '\u{3008}' | '\u{FE64}' => '<',
        '\u{203A}' | '\u{27E9}' | '\u{3009}' | '\u{FE65}' => '>',
        _ => return None,
    })
}

/// One ASCII word of folded text: a run of `[a-z0-9]`, with an apostrophe
/// between letters dropped (`don't` is `dont`, `user's` is `users`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    pub start: usize,
    pub end: usize,
}

/// The words of folded text, and the word text they spell (apostrophes
/// dropped: borrowed from the folded text unless a word had one).
#[derive(Debug, Default)]
pub struct Words<'a> {
    pub spans: Vec<Word>,
    pub text: Vec<std::borrow::Cow<'a, str>>,
}

pub fn words(folded: &str) -> Words<'_> {
    let b = folded.as_bytes();
    let mut w = Words::default();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        let mut apostrophe = false;
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                i += 1;
            } else if b[i] == b'\''
                && i + 1 < b.len()
                && b[i + 1].is_ascii_alphabetic()
                && i > start
            {
                apostrophe = true;
                i += 1;
            } else {
                break;
            }
        }
        let raw = folded.get(start..i).unwrap_or_default();
        w.spans.push(Word { start, end: i });
        w.text.push(if apostrophe {
            std::borrow::Cow::Owned(raw.replace('\'', ""))
        } else {
            std::borrow::Cow::Borrowed(raw)
        });
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_read_as_a_space_and_as_nothing() {
        // (case, text, the reading with spaces and the one without)
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            ("no_bracket", "plain text", None),
            (
                "markdown_link",
                "[a link](https://x.example) and [1, 2]",
                None,
            ),
            (
                "colour_and_reset",
                "\u{1b}[1;31mIgnore\u{1b}[0m all",
                Some((" Ignore  all", "Ignore all")),
            ),
            (
                "inside_a_word",
                "Ign\u{1b}[0more",
                Some(("Ign ore", "Ignore")),
            ),
            (
                "bare_reset_before_a_word",
                "do \u{1b}[mention",
                Some(("do  ention", "do ention")),
            ),
            ("cursor_moves", "a\u{1b}[2K\u{1b}[1Ab", Some(("a  b", "ab"))),
            ("intermediate_byte", "a\u{1b}[1 qb", Some(("a b", "ab"))),
            (
                "escape_stripped",
                "[1;31mIgnore[0m all",
                Some((" Ignore  all", "Ignore all")),
            ),
            ("caret_notation", "^[[1mIgnore", Some((" Ignore", "Ignore"))),
            ("spelled_hex", "\\x1B[1mIgnore", Some((" Ignore", "Ignore"))),
            (
                "spelled_octal",
                "\\033[0mIgnore",
                Some((" Ignore", "Ignore")),
            ),
            ("spelled_e", "\\e[1mIgnore", Some((" Ignore", "Ignore"))),
            (
                "spelled_unicode",
                "\\u001b[1mIgnore",
                Some((" Ignore", "Ignore")),
            ),
            (
                "percent_encoded",
                "%1B[1mIgnore",
                Some((" Ignore", "Ignore")),
            ),
            ("stripped_needs_m", "[2KIgnore", None),
            ("escape_without_bracket", "a\u{1b}(Bb", None),
            (
                "unended_within_32",
                "a\u{1b}[1111111111111111111111111111111111b",
                None,
            ),
            ("not_a_parameter_byte", "a\u{1b}[1\u{e9}b", None),
            ("at_the_end", "a\u{1b}[", None),
            ("non_ascii_around", "é\u{1b}[1mü", Some(("é ü", "éü"))),
        ];
        for (name, text, want) in cases {
            let got = control_sequence_readings(text);
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn folding_reads_look_alikes_as_ascii_and_records_what_is_hidden() {
        let cases: &[(&str, &str, &str, &[Hidden])] = &[
            (
                "plain_ascii_is_lower_cased",
                "Ignore Previous",
                "ignore previous",
                &[],
            ),
            (
                "zero_width_space_inside_a_word_is_dropped",
                "ig\u{200b}nore",
                "ignore",
                &[Hidden::ZeroWidth],
            ),
            (
                "joiner_between_ascii_letters_is_hidden",
                "ig\u{200d}nore",
                "ignore",
                &[Hidden::ZeroWidth],
            ),
            (
                "joiner_inside_an_emoji_sequence_is_not",
                "👨\u{200d}👩",
                "👨👩",
                &[],
            ),
            (
                "fullwidth_letters_read_as_ascii",
                "ＩＧＮＯＲＥ",
                "ignore",
                &[],
            ),
            ("mathematical_bold_reads_as_ascii", "𝐢𝐠𝐧𝐨𝐫𝐞", "ignore", &[]),
            (
                "mathematical_monospace_reads_as_ascii",
                "𝚒𝚐𝚗𝚘𝚛𝚎",
                "ignore",
                &[],
            ),
            (
                "cyrillic_look_alikes_read_as_latin",
                "іgnоrе",
                "ignore",
                &[],
            ),
            ("greek_look_alikes_read_as_latin", "ΙGΝΟRΕ", "ignore", &[]),
            ("circled_letters_read_as_ascii", "ⓘⓖⓝⓞⓡⓔ", "ignore", &[]),
            (
                "accents_and_combining_marks_are_dropped",
                "ïgnöre i\u{0307}",
                "ignore i",
                &[],
            ),
            ("ligatures_are_spelled_out", "ﬁle", "file", &[]),
            (
                "look_alike_slash_and_dot_spell_a_path",
                "~∕․ssh",
                "~/.ssh",
                &[],
            ),
            (
                "line_breaks_and_wide_spaces_are_spaces",
                "a\nb\u{3000}c\u{2028}d",
                "a b c d",
                &[],
            ),
            (
                "tag_characters_read_as_the_ascii_they_hide",
                "ok\u{E0069}\u{E0067}",
                "okig",
                &[Hidden::TagCharacter],
            ),
            (
                "emoji_flag_tags_are_not_hidden_text",
                "🏴\u{E0067}\u{E0062}\u{E007F}",
                "🏴",
                &[],
            ),
            (
                "bidi_override_is_hidden",
                "a\u{202E}b",
                "ab",
                &[Hidden::Bidi],
            ),
            (
                "one_variation_selector_after_an_emoji_is_fine",
                "❤\u{FE0F}",
                "❤",
                &[],
            ),
            (
                "a_run_of_variation_selectors_hides_bytes",
                "x\u{E0100}\u{E0101}\u{E0102}",
                "x",
                &[Hidden::VariationRun],
            ),
            (
                "mongolian_selector_inside_a_word_is_hidden",
                "ig\u{180B}nore",
                "ignore",
                &[Hidden::ZeroWidth],
            ),
            (
                "deprecated_format_character_is_hidden",
                "pre\u{206A}vious",
                "previous",
                &[Hidden::ZeroWidth],
            ),
            (
                "shorthand_format_control_is_hidden",
                "in\u{1BCA0}structions",
                "instructions",
                &[Hidden::ZeroWidth],
            ),
            (
                "a_variation_selector_after_each_letter_hides_bytes",
                "a\u{E0148}b\u{E0147}",
                "ab",
                &[Hidden::VariationRun],
            ),
            (
                "a_keycap_selector_after_a_digit_is_fine",
                "1\u{FE0F}\u{20E3}",
                "1",
                &[],
            ),
            (
                "ansi_escape_is_a_control_character",
                "a\u{1b}[8mb",
                "a [8mb",
                &[Hidden::Control],
            ),
            (
                "leading_byte_order_mark_is_an_artefact",
                "\u{FEFF}abc",
                "abc",
                &[],
            ),
            (
                "byte_order_mark_inside_text_is_hidden",
                "a\u{FEFF}bc",
                "abc",
                &[Hidden::ZeroWidth],
            ),
            (
                "soft_hyphen_is_hidden",
                "ig\u{00AD}nore",
                "ignore",
                &[Hidden::ZeroWidth],
            ),
        ];
        for (name, input, text, hidden) in cases {
            let f = fold(input);
            assert_eq!(f.text, *text, "{name}");
            assert_eq!(f.hidden, *hidden, "{name}");
        }
    }

    #[test]
    fn words_join_apostrophes_and_split_on_everything_else() {
        let w = words("don't tell the user's ~/.ssh id_rsa");
        assert_eq!(w.text, ["dont", "tell", "the", "users", "ssh", "id", "rsa"]);
        assert_eq!(w.spans[4], Word { start: 25, end: 28 });
    }
}
