//! The trigger prefilter: one pass over every byte of a string that finds
//! where a rule's trigger literal (`ghp_`, `akia`, `password`, `://`, …)
//! starts, case-insensitively.
//!
//! Why it is built this way: this loop sees every byte of every scanned string,
//! so its common case must be a handful of instructions and no branch that
//! mispredicts. Each position's next three bytes, case-folded, are hashed to
//! 15 bits and looked up in an 8 KiB table that stays in L1, 2 bits per entry:
//! "a literal that needs no word start may start with this trigram", "one
//! that must start a word may" (two-byte literals enter every third byte).
//! Byte pairs were tried first, but English bigrams such as `se`, `to`, `pa`,
//! `ma` (which start `secret`, `token`, `pass`, `mariadb`) hit on ~10 % of
//! positions; trigrams on far fewer. Only on a hit does the slow path look the
//! lower-cased pair up in a small hash table (1.5 KiB) and compare the few
//! literals that start with it. Word-start literals (`eaa`, `sk`, `ghp_`:
//! most of them) count only where the previous byte is not a word byte, so
//! the frequent trigrams they start with cost nothing inside words.

use super::text::{at, is_token_byte};

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

pub struct Prefilter {
    /// Two bits per hashed, case-folded trigram (32 Ki entries, 8 KiB): bit 0
    /// "may start a literal that needs no word start", bit 1 "may start a
    /// literal that must start a word". One load answers both.
    bits: Box<[u64; TABLE_WORDS]>,
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

/// Trigram hash width. 15 bits make an 8 KiB table: 16 KiB (16 bits) had the
/// same instruction count but ~1.5x the L1 misses on a shared core.
const HASH_BITS: u32 = 15;
/// 64-bit words of the table: 2 bits per entry, 32 entries per word.
const TABLE_WORDS: usize = (1 << HASH_BITS) / 32;
const ANYWHERE: u64 = 1;
const WORD_START: u64 = 2;

// Indexing is in range by construction: `key` has HASH_BITS bits.
#[inline(always)]
fn flags(bits: &[u64; TABLE_WORDS], key: usize) -> u64 {
    (bits[(key >> 5) & (TABLE_WORDS - 1)] >> ((key & 31) * 2)) & 3
}

fn set(bits: &mut [u64; TABLE_WORDS], key: usize, flag: u64) {
    bits[(key >> 5) & (TABLE_WORDS - 1)] |= flag << ((key & 31) * 2);
}

/// Whether a literal may start at a position holding byte `c`, trigram `t`.
/// A function, not a closure, so that it can be forced inline: the shipped
/// wasm is built at opt-level "z", which would otherwise call it per byte.
#[inline(always)]
fn is_hit(bits: &[u64; TABLE_WORDS], dots: bool, c: u8, t: u32, prev_word: bool) -> bool {
    // Inside a word only the literals that need no word start count.
    let wanted = ANYWHERE | (u64::from(!prev_word) * WORD_START);
    (flags(bits, tri_hash(t)) & wanted != 0) | (dots & (c == b'.'))
}

/// Three bytes as the low 24 bits, first byte lowest.
#[inline(always)]
fn trigram(a: u8, b: u8, c: u8) -> u32 {
    u32::from(a) | (u32::from(b) << 8) | (u32::from(c) << 16)
}

/// Bit index of a trigram: each byte case-folded by setting bit 5 (which
/// also merges some punctuation pairs: harmless, it can only add false
/// hits), then multiplicative hashing to `HASH_BITS` bits.
#[inline(always)]
fn tri_hash(t: u32) -> usize {
    ((t | 0x0020_2020).wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

impl Prefilter {
    /// `dots`: report every `.` too (see [`Prefilter::for_each`]).
    pub fn build(literals: Vec<Literal>, dots: bool) -> Result<Prefilter, String> {
        let mut bits = Box::new([0u64; TABLE_WORDS]);
        let mut by_pair: Vec<(u16, u16)> = Vec::new();
        for (li, l) in literals.iter().enumerate() {
            let li = u16::try_from(li).map_err(|_| "too many triggers".to_string())?;
            let (Some(&a), Some(&b)) = (l.bytes.first(), l.bytes.get(1)) else {
                return Err("trigger shorter than 2 bytes".into());
            };
            by_pair.push(((u16::from(a) << 8) | u16::from(b), li));
            let flag = if l.word_start { WORD_START } else { ANYWHERE };
            match l.bytes.get(2) {
                Some(&c) => set(&mut bits, tri_hash(trigram(a, b, c)), flag),
                // A 2-byte literal may be followed by anything.
                None => {
                    for c in 0..=255u8 {
                        set(&mut bits, tri_hash(trigram(a, b, c)), flag);
                    }
                }
            }
        }
        by_pair.sort_unstable();
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
            bits,
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
    /// `.` if the prefilter was built with `dots`. Positions ascend.
    #[inline]
    pub fn for_each(&self, bytes: &[u8], mut hit: impl FnMut(usize, Option<&Literal>)) {
        let mut slow = |i: usize, c: u8, next: u8, prev_word: bool| {
            // A Discord token's `.` ends a run of 24-26 token bytes: both
            // ends of such a run are tested before the caller counts it.
            if c == b'.'
                && self.dots
                && i >= 24
                && is_token_byte(at(bytes, i - 1))
                && is_token_byte(at(bytes, i - 24))
            {
                hit(i, None);
            }
            let lkey =
                (u16::from(c.to_ascii_lowercase()) << 8) | u16::from(next.to_ascii_lowercase());
            for &li in self.lookup(lkey) {
                let Some(lit) = self.literals.get(usize::from(li)) else {
                    continue;
                };
                if lit.word_start && prev_word {
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
        };
        // Both bitsets are read for every position and combined without a
        // branch: the one branch left is taken only where a literal may start
        // (or at a `.`), which keeps mispredictions rare on ordinary text.
        // `w` slides over the text holding bytes i, i+1, i+2 (0 past the end).
        let dots = self.dots;
        let mut prev_word = false;
        for (i, win) in bytes.windows(3).enumerate() {
            let &[c, n1, n2] = win else { continue };
            if is_hit(&self.bits, dots, c, trigram(c, n1, n2), prev_word) {
                slow(i, c, n1, prev_word);
            }
            prev_word = super::text::is_word_byte(c);
        }
        // The last two positions, with 0 past the end (no literal contains it).
        let tail = bytes.len().saturating_sub(2);
        for i in tail..bytes.len() {
            let c = at(bytes, i);
            let n1 = at(bytes, i + 1);
            if is_hit(&self.bits, dots, c, trigram(c, n1, 0), prev_word) {
                slow(i, c, n1, prev_word);
            }
            prev_word = super::text::is_word_byte(c);
        }
    }
}
