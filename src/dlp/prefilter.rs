//! The trigger prefilter: one pass over every byte of a string that finds
//! where a rule's trigger literal (`ghp_`, `akia`, `password`, `://`, …)
//! starts, case-insensitively.
//!
//! Why it is built this way: this loop sees every byte of every scanned string,
//! so its common case must be a handful of instructions and no branch that
//! mispredicts. Per position, two table loads combined without a branch:
//!
//! - Literals of 3 bytes or more: the position's next three bytes, case-folded,
//!   are hashed to 13 bits and looked up in an 8 KiB byte table that stays in
//!   L1: bit 0 "a literal that needs no word start may start with this
//!   trigram", bit 1 "one that must start a word may". Byte pairs were tried
//!   first, but English bigrams such as `se`, `to`, `pa`, `ma` (which start
//!   `secret`, `token`, `pass`, `mariadb`) hit on ~10 % of positions;
//!   trigrams on far fewer. One byte per entry, not two bits, so that the
//!   test is a load and an AND: that is fewer instructions per byte than the
//!   false hits a bigger, denser table would save.
//! - Each byte's class ([`Class`], one 2 KiB table) says whether it is a word
//!   byte, whether it is a `.`, and in which groups of two-byte literals
//!   (`sk`, `s.`, `q~`, `0|`…`9|`, `-u`) it may be the first or the second
//!   byte. A group is the set of first bytes that share their second bytes,
//!   so the AND of two classes finds a two-byte literal exactly. Entered in
//!   the trigram table for every possible third byte instead, these filled
//!   it to ~4 % and made over half of all slow-path visits on clean text
//!   false hits.
//!
//! Word-start literals (`eaa`, `sk`, `ghp_`: most of them) count only where
//! the previous byte is not a word byte, so the frequent trigrams they start
//! with cost nothing inside words: the previous byte's class carries the
//! mask for the trigram bits. Only on a hit does the slow path look the
//! lower-cased pair up in a small hash table (1.5 KiB) and compare the few
//! literals that start with it.

use super::text::{at, is_token_byte, is_word_byte};

/// One trigger literal and the rules it triggers.
pub struct Literal {
    /// Lower-case, at least 2 bytes.
    pub bytes: Vec<u8>,
    /// Must start a word (previous byte not `[A-Za-z0-9_]`).
    pub word_start: bool,
    pub rules: Vec<u16>,
}

const SLOTS: usize = 512;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Lower-cased pair; only meaningful when `len > 0`.
    key: u16,
    start: u16,
    len: u16,
}

/// Trigram hash width: 8 Ki one-byte entries.
const HASH_BITS: u32 = 13;
const TABLE: usize = 1 << HASH_BITS;
/// Trigram entry bits, and the same bits of a [`Class`]: "wanted after this
/// byte". `ANYWHERE` is set in every class; `WORD_START` in those of the
/// bytes that are not word bytes.
const ANYWHERE: u8 = 1;
const WORD_START: u8 = 2;

/// A byte's class, as bits of a `u64`. Laid out so that `(cur >> 16) & next`
/// is non-zero exactly when the current byte is a reported `.` (its `DOT` bit
/// meets the next byte's `ANYWHERE` bit, which every class has) or the two
/// bytes are the first and second byte of a two-byte literal of one group
/// (`FIRST` bits meet `SECOND` bits). Nothing else lines up: bits 2-15,
/// 17-32 and 48 are clear in every class.
type Class = u64;
const DOT: Class = 1 << 16;
const SECOND_SHIFT: u32 = 33;
const FIRST_SHIFT: u32 = 49;
const GROUPS: usize = 15;

pub struct Prefilter {
    trigrams: Box<[u8; TABLE]>,
    class: Box<[Class; 256]>,
    slots: Box<[Slot; SLOTS]>,
    /// Literal indices grouped by their first pair; `slots` points into it.
    ids: Vec<u16>,
    pub literals: Vec<Literal>,
    dots: bool,
}

#[inline(always)]
fn slot_hash(key: u16) -> usize {
    // Fibonacci hashing: the ~100 distinct pairs spread over 512 slots.
    ((u32::from(key).wrapping_mul(2_654_435_761)) >> 23) as usize % SLOTS
}

/// Three bytes as the low 24 bits, first byte lowest.
#[inline(always)]
fn trigram(a: u8, b: u8, c: u8) -> u32 {
    u32::from(a) | (u32::from(b) << 8) | (u32::from(c) << 16)
}

/// Index of a trigram: each byte case-folded by setting bit 5 (which also
/// merges some punctuation pairs: harmless, it can only add false hits),
/// then multiplicative hashing to `HASH_BITS` bits.
#[inline(always)]
fn tri_hash(t: u32) -> usize {
    ((t | 0x0020_2020).wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

impl Prefilter {
    /// `dots`: report every `.` too (see [`Prefilter::for_each`]).
    pub fn build(literals: Vec<Literal>, dots: bool) -> Result<Prefilter, String> {
        let mut trigrams = Box::new([0u8; TABLE]);
        let mut class = Box::new([0 as Class; 256]);
        for (b, k) in (0..=255u8).zip(class.iter_mut()) {
            let word_start = if is_word_byte(b) { 0 } else { WORD_START };
            let dot = if dots && b == b'.' { DOT } else { 0 };
            *k = Class::from(ANYWHERE | word_start) | dot;
        }
        let mut by_pair: Vec<(u16, u16)> = Vec::new();
        // Two-byte literals by first byte: the second bytes that follow it.
        let mut seconds: Vec<(u8, [bool; 256])> = Vec::new();
        for (li, l) in literals.iter().enumerate() {
            let li = u16::try_from(li).map_err(|_| "too many triggers".to_string())?;
            let (Some(&a), Some(&b)) = (l.bytes.first(), l.bytes.get(1)) else {
                return Err("trigger shorter than 2 bytes".into());
            };
            by_pair.push(((u16::from(a) << 8) | u16::from(b), li));
            match l.bytes.get(2) {
                Some(&c) => {
                    let flag = if l.word_start { WORD_START } else { ANYWHERE };
                    if let Some(e) = trigrams.get_mut(tri_hash(trigram(a, b, c))) {
                        *e |= flag;
                    }
                }
                // Word starts are left to the slow path: two-byte literals
                // are few, and their first bytes inside words rarely meet
                // their second bytes.
                None => {
                    let i = match seconds.iter().position(|(f, _)| *f == a) {
                        Some(i) => i,
                        None => {
                            seconds.push((a, [false; 256]));
                            seconds.len() - 1
                        }
                    };
                    if let Some(s) = seconds
                        .get_mut(i)
                        .and_then(|(_, s)| s.get_mut(usize::from(b)))
                    {
                        *s = true;
                    }
                }
            }
        }
        // First bytes with the same second bytes share a group (`0|` … `9|`
        // are one), so that the groups fit in a class.
        let mut groups: Vec<[bool; 256]> = Vec::new();
        for (a, second) in &seconds {
            let g = match groups.iter().position(|s| s == second) {
                Some(g) => g,
                None => {
                    groups.push(*second);
                    groups.len() - 1
                }
            };
            if g >= GROUPS {
                return Err("too many groups of two-byte triggers".into());
            }
            for case in [a.to_ascii_lowercase(), a.to_ascii_uppercase()] {
                if let Some(k) = class.get_mut(usize::from(case)) {
                    *k |= 1 << (FIRST_SHIFT as usize + g);
                }
            }
            for (b, _) in (0..=255u8).zip(second.iter()).filter(|(_, s)| **s) {
                for case in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                    if let Some(k) = class.get_mut(usize::from(case)) {
                        *k |= 1 << (SECOND_SHIFT as usize + g);
                    }
                }
            }
        }
        crate::sort::sort(&mut by_pair);
        let mut slots = Box::new([Slot::default(); SLOTS]);
        let mut ids = Vec::with_capacity(by_pair.len());
        let mut k = 0;
        while let Some(&(key, _)) = by_pair.get(k) {
            let start = u16::try_from(ids.len()).map_err(|_| "too many triggers".to_string())?;
            while let Some(&(kk, li)) = by_pair.get(k) {
                if kk != key {
                    break;
                }
                ids.push(li);
                k += 1;
            }
            let len =
                u16::try_from(ids.len()).map_err(|_| "too many triggers".to_string())? - start;
            let mut h = slot_hash(key);
            let mut probes = 0;
            while slots[h].len != 0 {
                h = (h + 1) % SLOTS;
                probes += 1;
                if probes >= SLOTS {
                    return Err("too many trigger pairs".into());
                }
            }
            slots[h] = Slot { key, start, len };
        }
        Ok(Prefilter {
            trigrams,
            class,
            slots,
            ids,
            literals,
            dots,
        })
    }

    /// Literal indices whose first two (lower-case) bytes are `key`.
    #[inline]
    fn lookup(&self, key: u16) -> &[u16] {
        let mut h = slot_hash(key);
        loop {
            let s = self.slots[h];
            if s.len == 0 {
                return &[];
            }
            if s.key == key {
                let start = usize::from(s.start);
                return self
                    .ids
                    .get(start..start + usize::from(s.len))
                    .unwrap_or(&[]);
            }
            h = (h + 1) % SLOTS;
        }
    }

    /// Call `hit(pos, Some(literal))` for every occurrence of a literal
    /// (respecting its word-start requirement), and `hit(pos, None)` for every
    /// `.` that ends a run of at least 24 token bytes if the prefilter was
    /// built with `dots`. Positions ascend.
    ///
    /// Not inlined: inside the caller's large function the loop ran short of
    /// registers and reloaded its table pointers from the stack every byte.
    #[inline(never)]
    pub fn for_each(&self, bytes: &[u8], mut hit: impl FnMut(usize, Option<&Literal>)) {
        let mut w = Window::new(self, bytes);
        let body = bytes.get(2..).unwrap_or(&[]);
        // Four positions a step, one branch for the four: taken only where a
        // literal may start among them (a few steps in a hundred on prose),
        // and then the four are stepped again from a rebuilt window. Under
        // V8 this cut the 4 KB call of scripts/bench.sh by 1.9 µs (29.2 ->
        // 27.3, scripts/profile-wasm.mjs); two or eight a step measured
        // slower. Natively on x86 LLVM vectorises the four and it is ~5%
        // slower than a step per byte: the Wasm is what ships.
        let mut quads = body.chunks_exact(4);
        let mut i = 0;
        for quad in &mut quads {
            let mut any = 0;
            for &b in quad {
                any |= w.advance(b);
            }
            if any != 0 {
                self.replay(bytes, i, quad, &mut hit);
            }
            i += 4;
        }
        for &b in quads.remainder() {
            if w.advance(b) != 0 {
                self.slow(bytes, i, &w, &mut hit);
            }
            i += 1;
        }
        // The last two positions, with 0 past the end (no literal contains it).
        for i in bytes.len().saturating_sub(2)..bytes.len() {
            if w.advance(0) != 0 {
                self.slow(bytes, i, &w, &mut hit);
            }
        }
    }

    /// The positions `i..i + entering.len()` again, from the window before
    /// them rebuilt from the text (saving it at every step cost more than
    /// rebuilding it on the few that need it), each that may start a
    /// literal to [`Prefilter::slow`].
    #[inline(never)]
    fn replay(
        &self,
        text: &[u8],
        i: usize,
        entering: &[u8],
        hit: &mut impl FnMut(usize, Option<&Literal>),
    ) {
        let mut w = Window::before(self, text, i);
        for (k, &b) in entering.iter().enumerate() {
            if w.advance(b) != 0 {
                self.slow(text, i + k, &w, hit);
            }
        }
    }

    /// Position `i` may start a literal: compare the ones that start with its
    /// pair. Out of line, so that the per-byte loop stays small.
    #[inline(never)]
    fn slow(
        &self,
        bytes: &[u8],
        i: usize,
        w: &Window,
        hit: &mut impl FnMut(usize, Option<&Literal>),
    ) {
        let c = at(bytes, i);
        let prev_word = w.prev & Class::from(WORD_START) == 0;
        // A Discord token's `.` ends a run of 24-26 token bytes: both ends
        // of such a run are tested before the caller counts it.
        if c == b'.'
            && self.dots
            && i >= 24
            && is_token_byte(at(bytes, i - 1))
            && is_token_byte(at(bytes, i - 24))
        {
            hit(i, None);
        }
        let lkey = (u16::from(c.to_ascii_lowercase()) << 8)
            | u16::from(at(bytes, i + 1).to_ascii_lowercase());
        // Many literals share a pair (`gl` starts thirteen GitLab and
        // Grafana prefixes): their third byte is compared before the rest,
        // so a run of one of them (`glft-glft-…`) costs one comparison per
        // literal, not a slice comparison each.
        let third = at(bytes, i + 2).to_ascii_lowercase();
        for &li in self.lookup(lkey) {
            let Some(lit) = self.literals.get(usize::from(li)) else {
                continue;
            };
            if lit.word_start && prev_word {
                continue;
            }
            if lit.bytes.get(2).is_some_and(|&t| t != third) {
                continue;
            }
            let len = lit.bytes.len();
            if bytes
                .get(i..i + len)
                .is_some_and(|s| s.eq_ignore_ascii_case(&lit.bytes))
            {
                hit(i, Some(lit));
            }
        }
    }
}

/// The window sliding over the text: `t` holds bytes i, i+1, i+2 (0 past the
/// end), `prev`, `cur`, `next` the classes of bytes i-1, i, i+1. Each byte is
/// read once, as it enters at i+2, and classified once, at i+1.
#[derive(Clone, Copy)]
struct Window<'a> {
    trigrams: &'a [u8; TABLE],
    class: &'a [Class; 256],
    t: u32,
    prev: Class,
    cur: Class,
    next: Class,
}

impl<'a> Window<'a> {
    /// Positioned before byte 0, after a non-word byte: the first
    /// [`Window::advance`] moves to byte 0.
    #[inline(always)]
    fn new(pre: &'a Prefilter, bytes: &[u8]) -> Window<'a> {
        let (c0, c1) = (at(bytes, 0), at(bytes, 1));
        Window {
            trigrams: &pre.trigrams,
            class: &pre.class,
            t: trigram(0, c0, c1),
            prev: 0,
            cur: Class::from(ANYWHERE | WORD_START),
            next: pre.class[usize::from(c0)],
        }
    }

    /// The window [`Window::new`] has advanced to just before position `i`
    /// (`i - 1` its position, byte `i + 1` the last in), rebuilt from the text.
    #[inline]
    fn before(pre: &'a Prefilter, bytes: &[u8], i: usize) -> Window<'a> {
        let Some(last) = i.checked_sub(1) else {
            return Window::new(pre, bytes);
        };
        let class = |b: u8| pre.class[usize::from(b)];
        Window {
            trigrams: &pre.trigrams,
            class: &pre.class,
            t: trigram(at(bytes, last), at(bytes, i), at(bytes, i + 1)),
            // Before byte 0 lies a non-word byte, as `new` has it.
            prev: match last.checked_sub(1) {
                Some(p) => class(at(bytes, p)),
                None => Class::from(ANYWHERE | WORD_START),
            },
            cur: class(at(bytes, last)),
            next: class(at(bytes, i)),
        }
    }

    /// Move one byte on, `b` entering at i+2; non-zero if a literal (or a
    /// reported `.`) may start at the new position i.
    #[inline(always)]
    fn advance(&mut self, b: u8) -> Class {
        self.t = (self.t >> 8) | (u32::from(b) << 16);
        self.prev = self.cur;
        self.cur = self.next;
        self.next = self.class[usize::from((self.t >> 8) as u8)];
        let tri = Class::from(self.trigrams[tri_hash(self.t) & (TABLE - 1)]) & self.prev;
        tri | ((self.cur >> 16) & self.next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)] // test code: a failed setup should stop the test loudly

    use super::*;

    const GROUP_MASK: Class = (1 << GROUPS) - 1;

    /// Every occurrence, by plain comparison at every position: what the
    /// tables must reproduce exactly.
    fn naive(literals: &[Literal], dots: bool, bytes: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        for i in 0..bytes.len() {
            let prev_word = i > 0 && is_word_byte(bytes[i - 1]);
            if dots
                && bytes[i] == b'.'
                && i >= 24
                && is_token_byte(bytes[i - 1])
                && is_token_byte(bytes[i - 24])
            {
                out.push((i, None));
            }
            for (li, l) in literals.iter().enumerate() {
                if l.word_start && prev_word {
                    continue;
                }
                if bytes
                    .get(i..i + l.bytes.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(&l.bytes))
                {
                    out.push((i, Some(li)));
                }
            }
        }
        out
    }

    fn lit(s: &str, word_start: bool) -> Literal {
        Literal {
            bytes: s.as_bytes().to_vec(),
            word_start,
            rules: Vec::new(),
        }
    }

    fn literals() -> Vec<Literal> {
        let mut l = vec![
            lit("sk", true),
            lit("s.", true),
            lit("q~", false),
            lit("-u", false),
            lit("--user", false),
            lit("key", false),
            lit("eaa", true),
            lit("ghp_", true),
            lit("://", false),
            lit("sk-", true),
            lit("-----begin", false),
        ];
        for d in b'0'..=b'9' {
            l.push(Literal {
                bytes: vec![d, b'|'],
                word_start: false,
                rules: Vec::new(),
            });
        }
        l
    }

    #[test]
    fn finds_exactly_what_plain_comparison_finds() {
        let alphabet: &[u8] = b"sSkK.q~Q-uU|0159eEaAyghp_:/ xX\n-bBeginKEY\xc3\xa9";
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for dots in [false, true] {
            let pre = match Prefilter::build(literals(), dots) {
                Ok(p) => p,
                Err(e) => panic!("{e}"),
            };
            for round in 0..3000 {
                let len = round % 70;
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let mut got = Vec::new();
                pre.for_each(&text, |i, l| {
                    got.push((
                        i,
                        l.map(|l| {
                            pre.literals
                                .iter()
                                .position(|x| std::ptr::eq(x, l))
                                .unwrap_or(usize::MAX)
                        }),
                    ))
                });
                let want = naive(&pre.literals, dots, &text);
                assert_eq!(got, want, "text {:?}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn the_builtin_triggers_are_found_where_plain_comparison_finds_them() {
        // The scanner's own literal set (groups, dots, word starts), in text
        // cut from its literals, prose and separators at every offset of the
        // four-byte steps.
        let scanner = match crate::dlp::Scanner::builtin(true, true) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let pre = &scanner.pre;
        let mut pieces: Vec<Vec<u8>> = pre.literals.iter().map(|l| l.bytes.clone()).collect();
        for p in [
            " ",
            ".",
            "_",
            "x",
            "the ",
            "Secret",
            "GHP_",
            "1|",
            "é",
            "aaaaaaaaaaaaaaaaaaaaaaaaa.",
        ] {
            pieces.push(p.as_bytes().to_vec());
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..4000 {
            let mut text = Vec::new();
            for _ in 0..round % 9 {
                let piece = &pieces[next(pieces.len())];
                // Whole, or cut short at either end.
                let from = if next(4) == 0 { next(piece.len()) } else { 0 };
                text.extend_from_slice(&piece[from..]);
            }
            text.drain(..next(4).min(text.len()));
            let mut got = Vec::new();
            pre.for_each(&text, |i, l| {
                got.push((
                    i,
                    l.map(|l| pre.literals.iter().position(|x| std::ptr::eq(x, l))),
                ));
            });
            let want: Vec<_> = naive(&pre.literals, pre.dots, &text)
                .into_iter()
                .map(|(i, l)| (i, l.map(Some)))
                .collect();
            assert_eq!(got, want, "text {:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn two_byte_literals_share_groups() {
        let pre = match Prefilter::build(literals(), false) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        // `s` (with `k` and `.`), `q`, `-`, and the ten digits (with `|`).
        let group = |b: u8| pre.class[usize::from(b)] >> FIRST_SHIFT & GROUP_MASK;
        assert_eq!(group(b'0').count_ones(), 1);
        assert!((b'1'..=b'9').all(|d| group(d) == group(b'0')));
        assert_eq!(group(b's'), group(b'S'));
        assert_eq!(
            pre.class[usize::from(b'|')] >> SECOND_SHIFT & GROUP_MASK,
            group(b'0')
        );
    }
}
