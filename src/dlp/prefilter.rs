//! The trigger prefilter: one pass over every byte of a string that finds
//! where a rule's trigger literal (`ghp_`, `akia`, `password`, `://`, …)
//! starts, case-insensitively.
//!
//! Why it is built this way: this loop sees every byte of every scanned
//! string (a 4 KB argument is 4,096 positions), so it looks at sixteen
//! positions at once. Per block of sixteen, a fingerprint of each position's
//! next three bytes, the Teddy scheme of Hyperscan: every literal is put in
//! one of eight buckets per group, and for each of its first three bytes
//! (case-folded by setting bit 5) the bucket's bit is set in a 16-entry
//! table under the byte's low nibble and in another under its high nibble.
//! A position's bucket bits are the AND of its three bytes' six table
//! entries: one shuffle each in SIMD. A literal that starts at a position
//! always leaves its bucket's bit set there; other text may too (the nibble
//! tables merge the bucket's literals, and the fold merges some punctuation
//! pairs): those are false hits, and only a hit reaches the exact check.
//!
//! - Two groups: literals that must start a word (the previous byte not
//!   `[A-Za-z0-9_]`: `eaa`, `sk`, most of them) and those that need not
//!   (`ghp_`, `pass`). The first group's bits count only where the byte
//!   before is not a word byte, which the same block computes, so the
//!   frequent trigrams that start such literals cost nothing inside words.
//!   The second group has sixteen buckets in two tables: with eight, its
//!   ~60 literals merged into buckets that English words hit (`rat`, `der`)
//!   and 8% of prose positions reached the pair test instead of 4%.
//! - A two-byte literal (`sk`, `q~`, `0|`) lets any third byte through.
//! - Buckets are filled so as to keep each bucket's chance of a false hit on
//!   text low ([`bucket_weight`]): literals sharing bytes share a bucket.
//!
//! On the benchmark's 4 KB of English prose 179 of 4,033 positions hit; a
//! bitmap of the literals' lower-cased first pairs stops 72 of those, and
//! the rest go to [`Prefilter::slow`], which looks the pair up in a small
//! hash table (3 KiB: 512 slots of three `u16`) and compares the few
//! literals that start with it.
//! The build for Wasm does the sixteen lanes with `simd128`; other targets
//! compute the same lanes one by one from the same tables read per byte (the
//! native tests and the fuzz targets run that; the unit tests built as Wasm
//! run the SIMD one). Under V8 the 4 KB call of `scripts/bench.sh` went from
//! 23.9 to 20.9 µs (`scripts/profile-wasm.mjs`, medians of six runs); the
//! scalar pass it replaced hashed each position's trigram into an 8 KiB
//! table, one position a step.

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

/// Positions a block looks at.
const LANES: usize = 16;
/// A block's bytes: the byte before its first position, its sixteen, and the
/// two after its last (the fingerprint's second and third bytes).
const WINDOW: usize = LANES + 3;
/// Buckets per group: the bits of one byte.
const BUCKETS: usize = 8;
/// Fingerprint length: a literal's first three bytes.
const DEPTH: usize = 3;
/// The groups, as `Prefilter::build` sorts the literals.
const WORD_START: usize = 0;
const ANYWHERE: usize = 1;

/// One fingerprint byte's tables for one group: bucket bits by the folded
/// byte's low nibble and by its high nibble.
#[derive(Clone, Copy, Default)]
struct Nibbles {
    lo: [u8; 16],
    hi: [u8; 16],
}

/// `[A-Za-z0-9_]` as two nibble tables, for the block's "word byte before"
/// lanes (the AND of a byte's two entries is non-zero exactly for those):
/// bit 0 digits (high nibble 3, low 0-9), bit 1 `A-O` and `a-o` (4 and 6,
/// 1-15), bit 2 `P-Z` and `_` (5, 0-10 and 15), bit 3 `p-z` (7, 0-10).
#[cfg(any(target_arch = "wasm32", test))]
const WORD_NIBBLES: Nibbles = Nibbles {
    lo: [
        0b1101, 0b1111, 0b1111, 0b1111, 0b1111, 0b1111, 0b1111, 0b1111, 0b1111, 0b1111, 0b1110,
        0b0010, 0b0010, 0b0010, 0b0010, 0b0110,
    ],
    hi: [
        0, 0, 0, 0b0001, 0b0010, 0b0100, 0b0010, 0b1000, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
};

/// The fold both sides go through: a literal's bytes are lower-case, and a
/// text byte matches one case-insensitively only if they agree with bit 5
/// set. It also merges some punctuation pairs (`_` with DEL, `^` with `~`):
/// harmless, it can only add false hits.
#[inline(always)]
fn fold(b: u8) -> u8 {
    b | 0x20
}

/// How often a folded byte is expected in scanned text, roughly: English
/// letters by their frequency, the space most, digits and JSON punctuation
/// some, the rest little. Only the buckets' filling reads it, so a poor
/// guess costs speed, never a hit.
fn bucket_weight(b: u8) -> u32 {
    const LETTERS: &[u8; 26] = b"etaoinshrdlcumwfgypbvkjxqz";
    match b {
        b' ' => 80,
        b'a'..=b'z' => {
            let rank = LETTERS.iter().position(|&l| l == b).unwrap_or(25);
            60 - 2 * u32::try_from(rank).unwrap_or(25)
        }
        b'0'..=b'9' => 8,
        b'.' | b'"' | b',' | b':' | b'/' | b'-' | b'=' | b';' | b'{' | b'}' | b'[' | b']'
        | b'(' | b')' | 0x7f => 6,
        _ => 1,
    }
}

/// [`bucket_weight`] by a folded byte's high and low nibble (0 for a byte
/// the fold never gives).
type Weights = [[u64; 16]; 16];

fn weights() -> Weights {
    let mut w = [[0; 16]; 16];
    for b in (0..=255u8).filter(|&b| fold(b) == b) {
        if let Some(e) = w
            .get_mut(usize::from(b >> 4))
            .and_then(|r| r.get_mut(usize::from(b & 15)))
        {
            *e = u64::from(bucket_weight(b));
        }
    }
    w
}

/// The weight of the bytes a bucket's tables let through at one
/// fingerprint byte: those whose low and high nibbles are both in its sets.
fn weight_through(w: &Weights, lo: u16, hi: u16) -> u64 {
    let nibbles = |set: u16| (0..16).filter(move |n| set & (1 << n) != 0);
    nibbles(hi)
        .filter_map(|h| w.get(h))
        .map(|row| nibbles(lo).filter_map(|l| row.get(l)).sum::<u64>())
        .sum()
}

/// A bucket being filled: the nibbles its literals put at each fingerprint
/// byte; `any_third` once a two-byte literal lets any third byte through.
#[derive(Clone, Copy, Default)]
struct Bucket {
    lo: [u16; DEPTH],
    hi: [u16; DEPTH],
    any_third: bool,
    used: bool,
}

impl Bucket {
    fn with(mut self, bytes: &[u8]) -> Bucket {
        self.used = true;
        for k in 0..DEPTH {
            match bytes.get(k) {
                Some(&b) => {
                    let f = fold(b);
                    self.lo[k] |= 1 << (f & 15);
                    self.hi[k] |= 1 << (f >> 4);
                }
                None => self.any_third = true,
            }
        }
        self
    }

    /// The estimated chance, scaled, that a position of text hits it.
    fn cost(&self, w: &Weights) -> u128 {
        if !self.used {
            return 0;
        }
        (0..DEPTH).fold(1u128, |c, k| {
            let through = if k == DEPTH - 1 && self.any_third {
                weight_through(w, u16::MAX, u16::MAX)
            } else {
                weight_through(w, self.lo[k], self.hi[k])
            };
            c.saturating_mul(u128::from(through))
        })
    }
}

/// Buckets for one group's literals (indices into `literals`), filled
/// greedily: each literal, in byte order so that those sharing a prefix come
/// together, goes where it adds the least to its bucket's cost.
fn fill_buckets<const N: usize>(literals: &[Literal], group: &[usize]) -> [Bucket; N] {
    let w = weights();
    let mut buckets = [Bucket::default(); N];
    let mut order: Vec<&[u8]> = group
        .iter()
        .filter_map(|&i| literals.get(i).map(|l| l.bytes.as_slice()))
        .collect();
    crate::sort::sort(&mut order);
    for bytes in order {
        let mut best: Option<(u128, usize, Bucket)> = None;
        for (i, b) in buckets.iter().enumerate() {
            let grown = b.with(bytes);
            let added = grown.cost(&w).saturating_sub(b.cost(&w));
            if best.as_ref().is_none_or(|(a, _, _)| added < *a) {
                best = Some((added, i, grown));
            }
        }
        if let Some((_, i, grown)) = best {
            if let Some(b) = buckets.get_mut(i) {
                *b = grown;
            }
        }
    }
    buckets
}

/// The tables of (up to eight of) one group's buckets.
fn nibble_tables(buckets: &[Bucket]) -> [Nibbles; DEPTH] {
    let mut tables = [Nibbles::default(); DEPTH];
    for (bit, b) in buckets.iter().enumerate().filter(|(_, b)| b.used) {
        for (k, t) in tables.iter_mut().enumerate() {
            let any = k == DEPTH - 1 && b.any_third;
            for n in 0..16 {
                if any || b.lo[k] & (1 << n) != 0 {
                    t.lo[n] |= 1 << bit;
                }
                if any || b.hi[k] & (1 << n) != 0 {
                    t.hi[n] |= 1 << bit;
                }
            }
        }
    }
    tables
}

pub struct Prefilter {
    /// Per group ([`WORD_START`], then [`ANYWHERE`] in two), per
    /// fingerprint byte: what the Wasm build's lanes read.
    #[cfg(target_arch = "wasm32")]
    nibbles: [[Nibbles; DEPTH]; 3],
    /// One bit per lower-cased byte pair that starts a literal: a lane the
    /// fingerprint lets through is tested here before [`Prefilter::slow`].
    /// On the benchmark's prose 72 of 179 such lanes stop here (the nibble
    /// tables merge their buckets' literals; the pair is exact).
    pairs: Box<[u64; 1024]>,
    /// The nibble tables read per byte, for the lanes computed one by one:
    /// per fingerprint byte and text byte (folded here), the word-start
    /// group's bucket bits, then the two anywhere groups' (bits 8-23).
    #[cfg(not(target_arch = "wasm32"))]
    by_byte: Box<[[u32; 256]; DEPTH]>,
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

/// The block window at `i` where it reaches past either end of `bytes`:
/// byte `i - 1` first (0 before the text's start), then up to eighteen
/// more, 0 past the end.
#[inline(never)]
fn edge_window(bytes: &[u8], i: usize) -> [u8; WINDOW] {
    let mut edge = [0u8; WINDOW];
    let from = i.saturating_sub(1);
    let to = (i + LANES + 2).min(bytes.len());
    // Byte i - 1 goes to the window's first byte; before byte 0 the window
    // keeps its 0.
    let first = usize::from(i == 0);
    if let (Some(dst), Some(src)) = (
        edge.get_mut(first..first + to.saturating_sub(from)),
        bytes.get(from..to),
    ) {
        dst.copy_from_slice(src);
    }
    edge
}

/// Two bytes lower-cased as one key, first byte high: how `slots` and
/// `pairs` name a literal's first pair.
#[inline(always)]
fn lower_pair(a: u8, b: u8) -> u16 {
    (u16::from(a.to_ascii_lowercase()) << 8) | u16::from(b.to_ascii_lowercase())
}

impl Prefilter {
    /// `dots`: report every `.` too (see [`Prefilter::for_each`]).
    pub fn build(literals: Vec<Literal>, dots: bool) -> Result<Prefilter, String> {
        let mut by_pair: Vec<(u16, u16)> = Vec::new();
        let mut pairs = Box::new([0u64; 1024]);
        let mut groups: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for (li, l) in literals.iter().enumerate() {
            let lid = u16::try_from(li).map_err(|_| "too many triggers".to_string())?;
            let (Some(&a), Some(&b)) = (l.bytes.first(), l.bytes.get(1)) else {
                return Err("trigger shorter than 2 bytes".into());
            };
            let key = lower_pair(a, b);
            by_pair.push((key, lid));
            if let Some(word) = pairs.get_mut(usize::from(key >> 6)) {
                *word |= 1 << (key & 63);
            }
            let group = if l.word_start { WORD_START } else { ANYWHERE };
            if let Some(g) = groups.get_mut(group) {
                g.push(li);
            }
        }
        let [word_start, anywhere] = &groups;
        let word_start: [Bucket; BUCKETS] = fill_buckets(&literals, word_start);
        let anywhere: [Bucket; 2 * BUCKETS] = fill_buckets(&literals, anywhere);
        let (first, second) = anywhere.split_at(BUCKETS);
        let nibbles = [
            nibble_tables(&word_start),
            nibble_tables(first),
            nibble_tables(second),
        ];
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
        #[cfg(not(target_arch = "wasm32"))]
        let by_byte = {
            let mut t = Box::new([[0u32; 256]; DEPTH]);
            for (k, row) in t.iter_mut().enumerate() {
                for (b, e) in (0..=255u8).zip(row.iter_mut()) {
                    let f = fold(b);
                    for (g, group) in nibbles.iter().enumerate() {
                        let n = &group[k];
                        let bits = n.lo[usize::from(f & 15)] & n.hi[usize::from(f >> 4)];
                        *e |= u32::from(bits) << (8 * g);
                    }
                }
            }
            t
        };
        Ok(Prefilter {
            #[cfg(target_arch = "wasm32")]
            nibbles,
            pairs,
            #[cfg(not(target_arch = "wasm32"))]
            by_byte,
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
    /// `.` that ends a run of at least 24 token bytes and is followed by a
    /// token byte, if the prefilter was built with `dots`. Positions ascend.
    ///
    /// Built with `simd128` and `relaxed-simd` for Wasm, so that the block's
    /// lanes are inlined into this loop (a function of another feature set
    /// is not inlined into it). The module then needs a runtime with Wasm
    /// SIMD and relaxed SIMD (Wasm 3.0): Envoy's V8 (its default, and
    /// Istio's) has both, V8 since 11.4 (2023); run here in Envoy 1.40 and
    /// 1.36.2. By the Wasm spec a runtime without them fails to validate the
    /// module (not tested: the tests' Envoy has only V8).
    #[cfg_attr(
        target_arch = "wasm32",
        target_feature(enable = "simd128,relaxed-simd")
    )]
    #[inline(never)]
    pub fn for_each(&self, bytes: &[u8], mut hit: impl FnMut(usize, Option<&Literal>)) {
        let mut i = 0;
        while i < bytes.len() {
            // In the text's middle the window is the text itself; at its
            // ends a copy with 0 outside the text (a non-word byte, which no
            // literal contains), as `at` reads past the end. The copy is
            // made out of line: built in the loop, its zeroing ran on every
            // block.
            let edge;
            let window = match i
                .checked_sub(1)
                .and_then(|from| bytes.get(from..from + WINDOW))
                .and_then(|w| <&[u8; WINDOW]>::try_from(w).ok())
            {
                Some(w) => w,
                None => {
                    edge = edge_window(bytes, i);
                    &edge
                }
            };
            let mut lanes = self.block(window);
            if let Some(short) = LANES.checked_sub(bytes.len() - i).filter(|&s| s > 0) {
                lanes &= u16::MAX >> short;
            }
            while lanes != 0 {
                let p = i + lanes.trailing_zeros() as usize;
                let c = at(bytes, p);
                let pair = lower_pair(c, at(bytes, p + 1));
                // A Discord token's `.` has token bytes on both sides: a
                // sentence's full stop (a blank after it) goes no further
                // (48 calls out of line for the benchmark's 4 KB of prose).
                if self.starts_pair(pair)
                    || (self.dots && c == b'.' && is_token_byte(at(bytes, p + 1)))
                {
                    self.slow(bytes, p, pair, &mut hit);
                }
                lanes &= lanes - 1;
            }
            i += LANES;
        }
    }

    /// The block's lanes, as bits: bit `j` set where a literal (or a
    /// reported `.`) may start at position `j` of `window[1..]`.
    #[cfg(target_arch = "wasm32")]
    #[inline(always)]
    fn block(&self, window: &[u8; WINDOW]) -> u16 {
        use core::arch::wasm32::{
            i8x16_bitmask, i8x16_eq, i8x16_relaxed_swizzle, i8x16_splat, u16x8_shr, u8x16_splat,
            v128, v128_and, v128_load, v128_or,
        };
        // SAFETY: each load reads 16 bytes at offset 0 to 3 of a 19-byte
        // array, inside it; `v128_load` needs no alignment.
        let load = |offset: usize| -> v128 {
            let p = window.as_ptr().wrapping_add(offset).cast::<v128>();
            unsafe { v128_load(p) }
        };
        // SAFETY: a table is 16 bytes; `v128_load` needs no alignment.
        let table = |t: &[u8; 16]| -> v128 { unsafe { v128_load(t.as_ptr().cast::<v128>()) } };
        let low = u8x16_splat(0x0f);
        // Each byte's high nibble: shifted as sixteen-bit lanes (the next
        // byte's low bits come in on top) and masked. V8 has no byte shift
        // on x64; for `u8x16_shr` it builds the same two steps and loads
        // the mask anew each time.
        let high_nibble = |v: v128| v128_and(u16x8_shr(v, 4), low);
        // Every index is a nibble (0-15), where the relaxed swizzle is
        // defined to equal the plain one. The plain one must give 0 for an
        // index of 16 or more, which V8 builds on x64 as a saturating add
        // before each `pshufb`: two more instructions for each of the
        // block's twenty lookups (the 4 KB call counted 528,796 Envoy
        // instructions a request with it, 517,988 without).
        let lookup = |t: v128, nibbles: v128| i8x16_relaxed_swizzle(t, nibbles);
        let zero = i8x16_splat(0);
        let before = load(0);
        let word_before = v128_and(
            lookup(table(&WORD_NIBBLES.lo), v128_and(before, low)),
            lookup(table(&WORD_NIBBLES.hi), high_nibble(before)),
        );
        // Each fingerprint byte's nibbles once, then the groups one after
        // another, each ANDing its six lookups: computed byte by byte with
        // the three groups' bits live at once, Node's V8 (11.3) spilled them
        // to the stack and back each block (the 4 KB call's pass 47,407 ->
        // 43,783 instructions there; Envoy 1.40's V8 counted the same either
        // way, docs/performance.md).
        let mut nibbles = [(zero, zero); DEPTH];
        for (k, n) in nibbles.iter_mut().enumerate() {
            let folded = v128_or(load(1 + k), u8x16_splat(0x20));
            *n = (v128_and(folded, low), high_nibble(folded));
        }
        // A macro, not a closure: a closure is not built with `simd128`
        // and was called once a block instead of inlined.
        let [(l0, h0), (l1, h1), (l2, h2)] = nibbles;
        macro_rules! group {
            ($g:expr) => {{
                let t = &self.nibbles[$g];
                v128_and(
                    v128_and(
                        v128_and(lookup(table(&t[0].lo), l0), lookup(table(&t[0].hi), h0)),
                        v128_and(lookup(table(&t[1].lo), l1), lookup(table(&t[1].hi), h1)),
                    ),
                    v128_and(lookup(table(&t[2].lo), l2), lookup(table(&t[2].hi), h2)),
                )
            }};
        }
        let (word_start, a1, a2) = (group!(WORD_START), group!(ANYWHERE), group!(ANYWHERE + 1));
        let anywhere = v128_or(a1, a2);
        // Word-start buckets only where the byte before is not a word byte.
        let mut any = v128_or(anywhere, v128_and(word_start, i8x16_eq(word_before, zero)));
        if self.dots {
            any = v128_or(any, i8x16_eq(load(1), u8x16_splat(b'.')));
        }
        // The lanes with no bucket bit, as bits, turned over.
        !i8x16_bitmask(i8x16_eq(any, zero))
    }

    /// The same lanes computed one by one, for the targets without the
    /// Wasm build's SIMD.
    #[cfg(not(target_arch = "wasm32"))]
    #[inline(always)]
    fn block(&self, window: &[u8; WINDOW]) -> u16 {
        let [t0, t1, t2] = &*self.by_byte;
        let mut lanes = 0u16;
        for j in 0..LANES {
            let byte = |k: usize| usize::from(at(window, j + k));
            let m = t0[byte(1)] & t1[byte(2)] & t2[byte(3)];
            let word_start = if is_word_byte(at(window, j)) {
                0
            } else {
                m & 0xFF
            };
            let dot = self.dots && at(window, j + 1) == b'.';
            if (m >> 8) | word_start != 0 || dot {
                lanes |= 1 << j;
            }
        }
        lanes
    }

    /// Whether some literal starts with `pair` (see [`lower_pair`]).
    #[inline(always)]
    fn starts_pair(&self, pair: u16) -> bool {
        self.pairs
            .get(usize::from(pair >> 6))
            .is_some_and(|word| word & (1 << (pair & 63)) != 0)
    }

    /// Position `i` may start a literal: compare the ones that start with its
    /// pair. Out of line, so that the block loop stays small.
    #[inline(never)]
    fn slow(
        &self,
        bytes: &[u8],
        i: usize,
        pair: u16,
        hit: &mut impl FnMut(usize, Option<&Literal>),
    ) {
        let c = at(bytes, i);
        let prev_word = i > 0 && is_word_byte(at(bytes, i - 1));
        // A Discord token's `.` ends a run of 24-26 token bytes. Its two
        // ends and its middle are tested first, then the whole run; before,
        // only the ends were tested here and the caller counted the run from
        // each sentence's full stop (of the 48 in the benchmark's 4 KB
        // call, 36 passed the ends, 24 pass ends and middle, none the run).
        if c == b'.'
            && self.dots
            && is_token_byte(at(bytes, i + 1))
            && i >= 24
            && [1, 24, 12]
                .iter()
                .all(|&back| is_token_byte(at(bytes, i - back)))
            && bytes
                .get(i - 24..i)
                .is_some_and(|run| run.iter().all(|&b| is_token_byte(b)))
        {
            hit(i, None);
        }
        // Many literals share a pair (`gl` starts thirteen GitLab and
        // Grafana prefixes): their third byte is compared before the rest,
        // so a run of one of them (`glft-glft-…`) costs one comparison per
        // literal, not a slice comparison each.
        let third = at(bytes, i + 2).to_ascii_lowercase();
        for &li in self.lookup(pair) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)] // test code: a failed setup should stop the test loudly

    use super::*;

    /// Every occurrence, by plain comparison at every position: what the
    /// tables must reproduce exactly.
    fn naive(literals: &[Literal], dots: bool, bytes: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        for i in 0..bytes.len() {
            let prev_word = i > 0 && is_word_byte(bytes[i - 1]);
            if dots
                && bytes[i] == b'.'
                && bytes.get(i + 1).is_some_and(|&b| is_token_byte(b))
                && i >= 24
                && bytes[i - 24..i].iter().all(|&b| is_token_byte(b))
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

    /// A xorshift generator from `seed`: `next(n)` is below `n`.
    fn random(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    /// What the prefilter reports, literals by their index.
    fn found(pre: &Prefilter, text: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut got = Vec::new();
        pre.for_each(text, |i, l| {
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
        got
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
        let mut next = random(0x2545_F491_4F6C_DD1D);
        for dots in [false, true] {
            let pre = match Prefilter::build(literals(), dots) {
                Ok(p) => p,
                Err(e) => panic!("{e}"),
            };
            for round in 0..3000 {
                let len = round % 70;
                let text: Vec<u8> = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
                let got = found(&pre, &text);
                let want = naive(&pre.literals, dots, &text);
                assert_eq!(got, want, "text {:?}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn a_full_stop_is_reported_only_after_twenty_four_token_bytes_and_before_one() {
        let pre = match Prefilter::build(literals(), true) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        // Runs of 20 to 30 token bytes before a `.`, unbroken or broken by a
        // space at each position (the middle, which the ends do not see).
        for run in 20..=30usize {
            for broken in std::iter::once(None).chain((0..run).map(Some)) {
                let mut text = b"x ".to_vec();
                text.extend((0..run).map(|k| {
                    if Some(k) == broken {
                        b' '
                    } else {
                        b'A' + (k % 26) as u8
                    }
                }));
                for after in [&b""[..], b" ", b"x", b"-", b"."] {
                    let mut text = text.clone();
                    text.push(b'.');
                    text.extend_from_slice(after);
                    let got = found(&pre, &text);
                    let want = naive(&pre.literals, true, &text);
                    assert_eq!(
                        got, want,
                        "run {run}, broken at {broken:?}, {after:?} after"
                    );
                    let dot = text.len() - 1 - after.len();
                    let reported = got.iter().any(|&(i, l)| l.is_none() && i == dot);
                    let whole_tail = run >= 24 && broken.is_none_or(|b| b + 24 < run);
                    let token_after = matches!(after, b"x" | b"-");
                    assert_eq!(
                        reported,
                        whole_tail && token_after,
                        "run {run}, broken at {broken:?}, {after:?} after"
                    );
                }
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
        let mut next = random(0x9E37_79B9_7F4A_7C15u64);
        for round in 0..4000 {
            let mut text = Vec::new();
            for _ in 0..round % 9 {
                let piece = &pieces[next(pieces.len())];
                // Whole, or cut short at either end.
                let from = if next(4) == 0 { next(piece.len()) } else { 0 };
                text.extend_from_slice(&piece[from..]);
            }
            text.drain(..next(4).min(text.len()));
            let got = found(pre, &text);
            let want = naive(&pre.literals, pre.dots, &text);
            assert_eq!(got, want, "text {:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn the_word_nibbles_are_the_word_bytes() {
        for b in 0..=255u8 {
            let word =
                WORD_NIBBLES.lo[usize::from(b & 15)] & WORD_NIBBLES.hi[usize::from(b >> 4)] != 0;
            assert_eq!(word, is_word_byte(b), "byte {b:#04x}");
        }
    }

    #[test]
    fn any_literal_set_is_found_where_plain_comparison_finds_it() {
        // Sets larger than the buckets, with the bytes the fold merges
        // (`_` and DEL, `^` and `~`, `@` and a backquote), control and
        // non-ASCII bytes; text from the same bytes and the literals, at
        // every offset of a block and across both ends of the text.
        let alphabet: &[u8] = b"aAzZ09_\x7f^~@`[{ .-|:/\x10\xc3\xa9\xe9kKsS";
        let mut next = random(0x0123_4567_89AB_CDEFu64);
        for set in 0..300 {
            let count = 1 + next(40);
            let literals: Vec<Literal> = (0..count)
                .map(|_| {
                    let len = 2 + next(5);
                    Literal {
                        bytes: (0..len)
                            .map(|_| alphabet[next(alphabet.len())].to_ascii_lowercase())
                            .collect(),
                        word_start: next(2) == 0,
                        rules: Vec::new(),
                    }
                })
                .collect();
            let pieces: Vec<Vec<u8>> = literals.iter().map(|l| l.bytes.clone()).collect();
            let dots = set % 2 == 0;
            let pre = match Prefilter::build(literals, dots) {
                Ok(p) => p,
                Err(e) => panic!("{e}"),
            };
            for _ in 0..20 {
                let len = next(90);
                let mut text = Vec::new();
                while text.len() < len {
                    if next(3) == 0 {
                        let piece = &pieces[next(pieces.len())];
                        text.extend(piece.iter().map(|&b| {
                            if next(2) == 0 {
                                b.to_ascii_uppercase()
                            } else {
                                b
                            }
                        }));
                    } else {
                        text.push(alphabet[next(alphabet.len())]);
                    }
                }
                let got = found(&pre, &text);
                let want = naive(&pre.literals, dots, &text);
                assert_eq!(got, want, "text {text:?}");
            }
        }
    }
}
