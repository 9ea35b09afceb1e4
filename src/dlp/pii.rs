//! Personal data found by code, not regexes: every check here is a small
//! state machine over bytes, so the cost is one linear pass per string.
//!
//! - Numbers are read as *clusters*: digit groups joined by at most two of
//!   ` - . / ( )`, with an optional leading `+` or `(`. A cluster is judged as a
//!   whole (so `4030 7699 7733 6625` is one number, not a phone plus a rest):
//!   card (Luhn + brand prefix + brand length), US SSN (area/group/serial
//!   rules), phone (E.164 `+`, NANP, or trunk-0 national with a context word).
//! - IBAN: country code, check digits, per-country length, mod-97.
//! - E-mail: RFC 5321 shape with a real TLD, not URL user-info, not `git@host:`.

use super::lanes::{self, Stop};
use super::text::{at, before};

#[derive(Clone, Copy, Debug)]
pub struct PiiFound {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Words that make a bare number a phone number or an SSN.
fn has_context(text: &str, start: usize, key: Option<&str>, words: &[&str]) -> bool {
    let from = start.saturating_sub(24);
    let window = text.as_bytes().get(from..start).unwrap_or(&[]);
    let key = key.unwrap_or("").as_bytes();
    words.iter().any(|w| {
        contains_ignore_case(window, w.as_bytes()) || contains_ignore_case(key, w.as_bytes())
    })
}

/// Case-insensitive substring test for a lower-case ASCII `needle`, without
/// lower-casing a copy of `hay`.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

const PHONE_WORDS: &[&str] = &[
    "phone", "tel", "mobile", "cell", "call", "fax", "number", "whatsapp", "sms", "contact",
];
const SSN_WORDS: &[&str] = &[
    "ssn",
    "social security",
    "social_security",
    "tax_id",
    "taxid",
];

struct Group {
    start: usize,
    end: usize,
}

/// Scan `text` for cards, SSNs, phones and IBANs.
pub fn scan_numbers(text: &str, key: Option<&str>, out: &mut Vec<PiiFound>) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    let mut groups: Vec<Group> = Vec::new();
    while i < n {
        // Most bytes are not digits: jump to the next one.
        match lanes::next(bytes, i, Stop::Digit) {
            Some(d) => i = d,
            None => break,
        }
        // IBAN: two upper-case letters right before the first digit.
        if i >= 2 && at(bytes, i - 1).is_ascii_uppercase() && at(bytes, i - 2).is_ascii_uppercase()
        {
            if let Some(f) = iban_at(text, i - 2) {
                out.push(f);
                i = f.end;
                continue;
            }
        }
        groups.clear();
        let mut j = i;
        loop {
            let gs = j;
            while at(bytes, j).is_ascii_digit() {
                j += 1;
            }
            groups.push(Group { start: gs, end: j });
            let mut k = j;
            while k < n
                && k - j < 2
                && matches!(at(bytes, k), b' ' | b'-' | b'.' | b'/' | b'(' | b')')
            {
                k += 1;
            }
            if k > j && at(bytes, k).is_ascii_digit() && groups.len() < 24 {
                j = k;
            } else {
                break;
            }
        }
        judge_cluster(text, key, &groups, out);
        i = j.max(i + 1);
    }
}

/// Up to 24 digit values of `groups`, on the stack (longer runs are no card,
/// SSN or phone; the callers check the count).
struct Digits {
    buf: [u8; 24],
    len: usize,
}

impl Digits {
    fn new() -> Digits {
        Digits {
            buf: [0; 24],
            len: 0,
        }
    }
    /// Append a group's digits; false (and nothing appended past 24) if they do not fit.
    fn push(&mut self, bytes: &[u8], g: &Group) -> bool {
        let Some(s) = bytes.get(g.start..g.end) else {
            return false;
        };
        for &b in s {
            match self.buf.get_mut(self.len) {
                Some(slot) => *slot = b - b'0',
                None => return false,
            }
            self.len += 1;
        }
        true
    }
    fn get(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

fn digits_of(bytes: &[u8], groups: &[Group]) -> Digits {
    let mut d = Digits::new();
    for g in groups {
        if !d.push(bytes, g) {
            break;
        }
    }
    d
}

fn judge_cluster(text: &str, key: Option<&str>, groups: &[Group], out: &mut Vec<PiiFound>) {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (groups.first(), groups.last()) else {
        return;
    };
    let total: usize = groups.iter().map(|g| g.end - g.start).sum();
    if total < 8 {
        return;
    }
    // What comes right before and after decides whether this is a stand-alone number.
    let mut lead = first.start;
    let prefix = before(bytes, lead);
    let plus = prefix == b'+';
    let paren = prefix == b'(';
    if plus || paren {
        lead -= 1;
    }
    let pre = before(bytes, lead);
    // A card after a colon (`card:4539…`) is still one, and an SSN after
    // its word (`SSN:123-45-6789`); a phone or another SSN-shaped number
    // there is more often a time, a port or an id's tail.
    let after_colon = pre == b':' && !plus && !paren;
    if is_alnum(pre)
        || matches!(
            pre,
            b'_' | b'.' | b'/' | b'@' | b'#' | b'-' | b'\\' | b'$' | b'+'
        )
    {
        return;
    }
    let post = at(bytes, last.end);
    if is_alnum(post) || post == b'_' || post == b'@' {
        return;
    }
    // At most 23 separators (clusters stop at 24 groups): kept on the stack.
    let mut sep_buf: [&[u8]; 24] = [&[]; 24];
    let mut n_seps = 0;
    for w in groups.windows(2) {
        if let ([a, b], Some(slot)) = (w, sep_buf.get_mut(n_seps)) {
            *slot = bytes.get(a.end..b.start).unwrap_or(&[]);
            n_seps += 1;
        }
    }
    let seps = sep_buf.get(..n_seps).unwrap_or(&[]);

    // In parentheses a number is a card or an SSN as well (`(4539 5787 6362
    // 1486)`, `(123-45-6789)`: a helper's attack, twenty-third session); a
    // phone's area code is the parenthesised group alone, which makes
    // neither (too few digits, a `) ` separator).
    if !plus {
        if let Some(f) = card(text, groups) {
            out.push(f);
            return;
        }
        // After a colon an SSN needs its word (`SSN:123-45-6789`).
        if after_colon && !has_context(text, lead, key, SSN_WORDS) {
            return;
        }
        if let Some(f) = ssn(text, key, groups, seps) {
            out.push(f);
            return;
        }
    }
    if after_colon {
        return;
    }
    if let Some(f) = phone(text, key, groups, seps, plus, paren, lead, total) {
        out.push(f);
    }
}

/// Card: a run of groups joined by single spaces or dashes, 12–19 digits,
/// Luhn-valid, with an issuer prefix whose brand allows that length.
fn card(text: &str, groups: &[Group]) -> Option<PiiFound> {
    let bytes = text.as_bytes();
    for s in 0..groups.len() {
        let mut best = None;
        // Digits of groups s..=e, extended one group per step.
        let mut d = Digits::new();
        for e in s..groups.len() {
            if e > s {
                let sep = bytes.get(groups.get(e - 1)?.end..groups.get(e)?.start)?;
                if !(sep == b" " || sep == b"-") {
                    break;
                }
            }
            if !d.push(bytes, groups.get(e)?) || d.len > 19 {
                break;
            }
            let d = d.get();
            if d.len() >= 12 && luhn(d) && brand_allows(d) {
                best = Some(PiiFound {
                    start: groups.get(s)?.start,
                    end: groups.get(e)?.end,
                    kind: "credit_card",
                });
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

pub fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, x) in d.iter().rev().enumerate() {
        let mut v = u32::from(*x);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn prefix_num(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |acc, x| acc * 10 + u32::from(*x))
}

/// Issuer identification ranges and the lengths each brand issues.
fn brand_allows(d: &[u8]) -> bool {
    let len = d.len();
    let p1 = prefix_num(d, 1);
    let p2 = prefix_num(d, 2);
    let p3 = prefix_num(d, 3);
    let p4 = prefix_num(d, 4);
    let p6 = prefix_num(d, 6);
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = matches!(p2, 34 | 37) && len == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || matches!(p2, 36 | 38 | 39))
        && (14..=19).contains(&len);
    let unionpay = p2 == 62 && (16..=19).contains(&len);
    let maestro = (p2 == 50 || (56..=69).contains(&p2)) && (12..=19).contains(&len);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&len);
    let uatp = p1 == 1 && len == 15;
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro || mir || uatp
}

/// US SSN `AAA-GG-SSSS` (same separator twice: `-`, space or `.`), or nine bare
/// digits next to an SSN word. Area 000, 666 and 900–999, group 00 and serial
/// 0000 are never issued.
fn ssn(text: &str, key: Option<&str>, groups: &[Group], seps: &[&[u8]]) -> Option<PiiFound> {
    let bytes = text.as_bytes();
    let len = |k: usize| groups.get(k).map_or(0, |g| g.end - g.start);
    let shaped = match (groups.len(), seps) {
        (3, [a, b]) if (len(0), len(1), len(2)) == (3, 2, 4) => {
            a == b && matches!(*a, b"-" | b" " | b".")
        }
        (1, []) if len(0) == 9 => has_context(text, groups.first()?.start, key, SSN_WORDS),
        _ => false,
    };
    if !shaped {
        return None;
    }
    let digits = digits_of(bytes, groups);
    let d = digits.get();
    let area = prefix_num(d, 3);
    let group = prefix_num(d.get(3..)?, 2);
    let serial = prefix_num(d.get(5..)?, 4);
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    valid.then_some(PiiFound {
        start: groups.first()?.start,
        end: groups.last()?.end,
        kind: "ssn",
    })
}

/// Phone numbers:
/// - `+CC …`: E.164, 8–15 digits in all;
/// - NANP `(AAA) EEE-LLLL`, `AAA-EEE-LLLL`, `AAA.EEE.LLLL` (area and exchange 2–9);
/// - trunk-0 national numbers (`09-7625400`) or bare 10–11 digits, only next to a
///   phone word (in the text before, or the JSON key).
#[allow(clippy::too_many_arguments)]
fn phone(
    text: &str,
    key: Option<&str>,
    groups: &[Group],
    seps: &[&[u8]],
    plus: bool,
    paren: bool,
    lead: usize,
    total: usize,
) -> Option<PiiFound> {
    let bytes = text.as_bytes();
    let end = groups.last()?.end;
    let found = Some(PiiFound {
        start: lead,
        end,
        kind: "phone",
    });
    let len = |k: usize| groups.get(k).map_or(0, |g| g.end - g.start);
    if plus {
        let plain = seps
            .iter()
            .all(|s| s.len() == 1 || *s == b") " || *s == b" (");
        return if (8..=15).contains(&total) && plain {
            found
        } else {
            None
        };
    }
    let first_digit = |g: &Group| at(bytes, g.start);
    if groups.len() == 3 && (len(0), len(1), len(2)) == (3, 3, 4) {
        let area_ok = first_digit(groups.first()?) >= b'2';
        let exch_ok = first_digit(groups.get(1)?) >= b'2';
        let sep_ok = match seps {
            [a, b] if paren => matches!(*a, b")" | b") ") && matches!(*b, b"-" | b" " | b"."),
            [a, b] => a == b && matches!(*a, b"-" | b"." | b" "),
            _ => false,
        };
        if area_ok && exch_ok && sep_ok {
            return found;
        }
    }
    if paren {
        return None;
    }
    let trunk =
        first_digit(groups.first()?) == b'0' && groups.len() >= 2 && (9..=11).contains(&total);
    let bare = groups.len() == 1 && (10..=11).contains(&total);
    if (trunk || bare) && has_context(text, lead, key, PHONE_WORDS) {
        return found;
    }
    None
}

/// IBAN lengths per country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

fn iban_at(text: &str, start: usize) -> Option<PiiFound> {
    let bytes = text.as_bytes();
    if is_alnum(before(bytes, start)) {
        return None;
    }
    let cc = bytes.get(start..start + 2)?;
    let len = IBAN_LENGTHS.iter().find(|(c, _)| c.as_slice() == cc)?.1;
    // Collect `len` characters; a single space or dash is allowed only
    // between groups of 4 (banks print spaces; forms and CSVs use dashes),
    // one of them throughout.
    let mut chars: Vec<u8> = Vec::with_capacity(len);
    let mut i = start;
    let mut separator = None;
    while chars.len() < len {
        let b = at(bytes, i);
        if b.is_ascii_digit() || b.is_ascii_uppercase() {
            chars.push(b);
            i += 1;
        } else if matches!(b, b' ' | b'-')
            && separator.is_none_or(|s| s == b)
            && chars.len() % 4 == 0
            && !chars.is_empty()
            && is_alnum(at(bytes, i + 1))
        {
            separator = Some(b);
            i += 1;
        } else {
            return None;
        }
    }
    // A dash-grouped run that goes on past the country's length is some
    // other identifier (`BE49-2208-7350-2733-6121-61`: a helper's attack).
    if is_alnum(at(bytes, i))
        || (separator == Some(b'-') && at(bytes, i) == b'-' && is_alnum(at(bytes, i + 1)))
    {
        return None;
    }
    // mod-97 over BBAN + country + check digits, letters as 10..35.
    let mut rem = 0u32;
    let rotated = chars.get(4..)?.iter().chain(chars.get(..4)?.iter());
    for &c in rotated {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1).then_some(PiiFound {
        start,
        end: i,
        kind: "iban",
    })
}

/// Top-level domains that are really file extensions in practice (`icon@2x.png`).
const FILE_TLDS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "json", "map", "lock", "txt",
    "yml", "yaml", "toml", "ts", "tsx", "jsx", "py", "rb", "php", "html", "htm", "xml", "pdf",
    "tgz", "gz", "whl", "jar",
];

/// Domains whose addresses name machines, not people (cloud service
/// accounts, VCS no-reply aliases): not personal data.
const MACHINE_DOMAINS: &[&str] = &[
    "gserviceaccount.com",
    "iam.gserviceaccount.com",
    "developer.gserviceaccount.com",
    "users.noreply.github.com",
    "noreply.gitlab.com",
];

/// E-mail addresses around each `@`.
pub fn scan_emails(text: &str, out: &mut Vec<PiiFound>) {
    let bytes = text.as_bytes();
    let mut seen = UrlContext::default();
    let mut from = 0;
    while let Some(at_pos) = lanes::next(bytes, from, Stop::Byte(b'@')) {
        if let Some(f) = email_at(bytes, at_pos, &mut seen) {
            out.push(f);
        }
        from = at_pos + 1;
    }
}

/// What lies before an address, read once left to right for all the `@` of a
/// string: the last word delimiter and the last `://`. Searching back from
/// every `@` read the same bytes again for each (`!a@!a@…`: 85 bytes per byte).
#[derive(Default)]
struct UrlContext {
    /// Bytes before `pos` have been read.
    pos: usize,
    /// The last whitespace, quote, `<` or `(` before `pos`.
    delimiter: Option<usize>,
    /// Start of the last `://` that ends at or before `pos`.
    scheme_sep: Option<usize>,
}

impl UrlContext {
    /// Whether a `://` lies in the word that ends at `s` (within 256 bytes):
    /// the address is then a URL's user-info.
    fn in_url(&mut self, bytes: &[u8], s: usize) -> bool {
        while self.pos < s {
            let b = at(bytes, self.pos);
            if b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'(') {
                self.delimiter = Some(self.pos);
            }
            if self.pos >= 2 && bytes.get(self.pos - 2..=self.pos) == Some(b"://".as_slice()) {
                self.scheme_sep = Some(self.pos - 2);
            }
            self.pos += 1;
        }
        let word_start = self.delimiter.map_or(0, |d| d + 1);
        let lo = word_start.max(s.saturating_sub(256));
        self.scheme_sep.is_some_and(|p| p >= lo)
    }
}

/// `domain` is `parent` or a subdomain of it, ignoring ASCII case.
fn is_or_under(domain: &[u8], parent: &[u8]) -> bool {
    let Some(cut) = domain.len().checked_sub(parent.len()) else {
        return false;
    };
    domain
        .get(cut..)
        .is_some_and(|tail| tail.eq_ignore_ascii_case(parent))
        && (cut == 0 || before(domain, cut) == b'.')
}

fn email_at(bytes: &[u8], at_pos: usize, seen: &mut UrlContext) -> Option<PiiFound> {
    let local_byte =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut s = at_pos;
    while s > 0 && at_pos - s < 64 && local_byte(at(bytes, s - 1)) {
        s -= 1;
    }
    if s == at_pos || at(bytes, s) == b'.' || at(bytes, at_pos - 1) == b'.' {
        return None;
    }
    // user:pass@host and scheme://user@host are URL credentials, not addresses.
    let pre = before(bytes, s);
    if matches!(pre, b':' | b'/' | b'@') || local_byte(pre) {
        return None;
    }
    // Still inside a URL's user-info (`scheme://user:pa!ss@host`)?
    if seen.in_url(bytes, s) {
        return None;
    }
    // Domain: labels of [A-Za-z0-9-], dot-separated.
    let mut e = at_pos + 1;
    // How many labels, and the last one: no list is kept.
    let mut labels = 0usize;
    let mut last = (0usize, 0usize);
    loop {
        let ls = e;
        while e < bytes.len()
            && (at(bytes, e).is_ascii_alphanumeric() || at(bytes, e) == b'-')
            && e - ls < 63
        {
            e += 1;
        }
        if e == ls || at(bytes, ls) == b'-' || at(bytes, e - 1) == b'-' {
            if labels == 0 {
                return None;
            }
            e = ls - 1; // drop the trailing dot
            break;
        }
        labels += 1;
        last = (ls, e);
        if at(bytes, e) == b'.' && at(bytes, e + 1).is_ascii_alphanumeric() {
            e += 1;
        } else {
            break;
        }
    }
    if labels < 2 {
        return None;
    }
    let (ts, te) = last;
    // Compared in place, case-insensitively: this runs for every address,
    // and lower-cased copies of the TLD and domain plus one formatted
    // `.{domain}` per machine domain were most of the cost of a text dense
    // with addresses (`x@example.com ` repeated, 11x clean text per byte).
    let tld = bytes.get(ts..te)?;
    let tld_ok = (tld.len() >= 2 && tld.len() <= 24 && tld.iter().all(u8::is_ascii_alphabetic))
        || (tld.len() > 5
            && tld
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"xn--")));
    if !tld_ok
        || FILE_TLDS
            .iter()
            .any(|t| tld.eq_ignore_ascii_case(t.as_bytes()))
    {
        return None;
    }
    let domain = bytes.get(at_pos + 1..e)?;
    if MACHINE_DOMAINS
        .iter()
        .any(|d| is_or_under(domain, d.as_bytes()))
    {
        return None;
    }
    // git@host:org/repo is an SSH remote.
    if at(bytes, e) == b':'
        && (at(bytes, e + 1).is_ascii_alphanumeric() || at(bytes, e + 1) == b'/')
    {
        return None;
    }
    if at(bytes, e) == b'_' || at(bytes, e).is_ascii_alphanumeric() {
        return None;
    }
    Some(PiiFound {
        start: s,
        end: e,
        kind: "email",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        scan_numbers(text, None, &mut out);
        scan_emails(text, &mut out);
        out.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn pii_table() {
        for (text, want) in [
            ("card number: 4042-6217-2723-4440", vec!["credit_card"]),
            ("{\"reference\": \"4030 7699 7733 6625\"}", vec![]),
            ("IMEI: 496922278183294", vec![]),
            ("SSN 094-86-7794", vec!["ssn"]),
            ("SSN: 666-57-4966", vec![]),
            ("call (415) 555-0132 now", vec!["phone"]),
            ("+44 20 7097 2175", vec!["phone"]),
            ("{\"created\": 1696204069}", vec![]),
            ("DE89370400440532013000", vec!["iban"]),
            ("GB29 NWBK 6016 1331 9268 19", vec!["iban"]),
            ("GB29-NWBK-6016-1331-9268-19", vec!["iban"]),
            ("DE89-3704-0044-0532-0130-00", vec!["iban"]),
            ("DE89 3704-0044 0532-0130 00", vec![]),
            ("part no. BE49-2208-7350-2733-6121-61", vec![]),
            ("DE12377534626490112855", vec![]),
            ("DE12-3775-3462-6490-1128-55", vec![]),
            ("DE89--3704-0044-0532-0130-00", vec![]),
            ("mail a.b+c@uni-heidelberg.de now", vec!["email"]),
            ("git@github.com:acme/api.git", vec![]),
            ("icon@2x.png", vec![]),
            ("https://u:p4ss@host.example.com", vec![]),
            // In parentheses or after a colon (a helper's attack,
            // twenty-third session); a phone's area code stays a phone.
            ("card (4539 5787 6362 1486)", vec!["credit_card"]),
            ("pay (4539-5787-6362-1486) thanks", vec!["credit_card"]),
            ("(4539578763621486)", vec!["credit_card"]),
            ("ssn (123-45-6789)", vec!["ssn"]),
            ("card:4539578763621486", vec!["credit_card"]),
            ("SSN:123-45-6789", vec!["ssn"]),
            ("build:123-45-6789", vec![]),
            ("call (415) 555-0132", vec!["phone"]),
            ("at 10:555-0132 local", vec![]),
            ("port :4155550132", vec![]),
        ] {
            assert_eq!(kinds(text), want, "{text}");
        }
    }
}
