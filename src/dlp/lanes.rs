//! Searches for the few bytes that start a piece of personal data or a
//! second reading, sixteen bytes at a time (sixty-four a step while a text
//! holds none).
//!
//! Why: after the trigger prefilter these searches are the passes that see
//! every byte of every scanned string (a 4 KB argument is 4,096 positions
//! for each): the next digit (a card, a phone number), the next `@` (an
//! address) and the next `\`, `&` or byte above 0x7F (what a reader may
//! decode otherwise); and the next byte a JSON string escapes, for the
//! canonical JSON the audit trail hashes ([`crate::json::write_str`]).
//! Under V8, on the benchmark's 4 KB call, the `@` search alone
//! (`str::match_indices`) ran 11,531 instructions. The build for Wasm
//! compares sixteen lanes at once with `simd128`, which the module already
//! needs for the prefilter; other targets (the CLI, the native tests, the
//! fuzz targets) keep the eight-byte words, which LLVM runs well there
//! (sixteen lanes computed one by one made `mcp-firewall scan` 10-20%
//! slower). Each search returns exactly what its byte-by-byte definition
//! does: the tests compare both.

/// The bytes a search stops at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `0`-`9`.
    Digit,
    /// One given byte.
    Byte(u8),
    /// `\`, `&` or any byte above 0x7F: the lead bytes of what
    /// [`super::text::second_readings`] decodes or drops.
    ReadsOtherwise,
    /// `"`, `\` or a byte below 0x20: what a JSON string escapes.
    JsonEscape,
}

impl Stop {
    /// The definition every search is equal to.
    #[inline(always)]
    pub fn holds(self, b: u8) -> bool {
        match self {
            Stop::Digit => b.is_ascii_digit(),
            Stop::Byte(s) => b == s,
            Stop::ReadsOtherwise => b == b'\\' || b == b'&' || b >= 0x80,
            Stop::JsonEscape => b < 0x20 || b == b'"' || b == b'\\',
        }
    }
}

/// Position of the first byte at or after `from` that `stop` stops at.
pub fn next(bytes: &[u8], from: usize, stop: Stop) -> Option<usize> {
    match stop {
        Stop::Digit => next_digit(bytes, from),
        Stop::Byte(b) => next_byte(bytes, from, b),
        Stop::ReadsOtherwise => next_reads_otherwise(bytes, from),
        Stop::JsonEscape => next_json_escape(bytes, from),
    }
}

/// Which of three searches' stops a text holds at all, from one pass over
/// it: a digit, an `@`, and what [`Stop::ReadsOtherwise`] stops at.
///
/// Why: on text that holds none of them (prose has no digit, no `@` and
/// nothing a second reading decodes) each of the three searches read every
/// byte to find nothing: ~12,300 instructions under V8 for the benchmark's
/// 4 KB argument. One pass that answers all three reads each byte once, and a
/// search is then made only in a text that holds its stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    digit: bool,
    at_sign: bool,
    reads_otherwise: bool,
}

impl Held {
    /// Whether a search for `stop` may find one: exact for the three stops
    /// [`held`] looks for; every other stop is always searched.
    pub fn may_hold(self, stop: Stop) -> bool {
        match stop {
            Stop::Digit => self.digit,
            Stop::Byte(b'@') => self.at_sign,
            Stop::ReadsOtherwise => self.reads_otherwise,
            Stop::Byte(_) | Stop::JsonEscape => true,
        }
    }
}

/// Up to eight classes of bytes, one bit each, read by nibble: a class is a
/// set of high nibbles by a set of low nibbles, so the AND of a byte's two
/// table entries holds a class's bit exactly when the byte is in it (a
/// class of one byte is always such a set). [`classes_held`] reads a text
/// for them in one pass; the tests compare each table with its definition.
pub struct ByteClasses {
    low: [u8; 16],
    high: [u8; 16],
}

impl ByteClasses {
    /// Classes of single bytes: `(bit, byte)`, a bit given to several bytes
    /// holding all of them (exactly only when they make such a set).
    pub const fn of(members: &[(u8, u8)]) -> ByteClasses {
        let mut low = [0u8; 16];
        let mut high = [0u8; 16];
        let mut k = 0;
        while k < members.len() {
            let (bit, byte) = members[k];
            low[(byte & 0x0f) as usize] |= bit;
            high[(byte >> 4) as usize] |= bit;
            k += 1;
        }
        ByteClasses { low, high }
    }

    /// `bit` also for every byte above 0x7F (high nibbles 8-15 by every low
    /// nibble: one exact class).
    pub const fn above_0x7f(mut self, bit: u8) -> ByteClasses {
        let mut n = 0;
        while n < 16 {
            self.low[n] |= bit;
            if n >= 8 {
                self.high[n] |= bit;
            }
            n += 1;
        }
        self
    }

    /// One byte's class bits, from the same tables the Wasm build shuffles.
    #[inline(always)]
    pub fn bits(&self, b: u8) -> u8 {
        self.low[usize::from(b & 0x0f)] & self.high[usize::from(b >> 4)]
    }
}

/// The classes [`held`] reads: digit, `@`, and what [`Stop::ReadsOtherwise`]
/// stops at (`\`, `&`, a byte above 0x7F: three bits, each its own set).
#[cfg(any(target_arch = "wasm32", test))]
const HELD_DIGIT: u8 = 1;
#[cfg(any(target_arch = "wasm32", test))]
const HELD_AT: u8 = 1 << 1;
#[cfg(any(target_arch = "wasm32", test))]
const HELD_OTHERWISE: u8 = (1 << 2) | (1 << 3) | (1 << 4);
#[cfg(any(target_arch = "wasm32", test))]
const HELD_CLASSES: ByteClasses = ByteClasses::of(&[
    (HELD_DIGIT, b'0'),
    (HELD_DIGIT, b'1'),
    (HELD_DIGIT, b'2'),
    (HELD_DIGIT, b'3'),
    (HELD_DIGIT, b'4'),
    (HELD_DIGIT, b'5'),
    (HELD_DIGIT, b'6'),
    (HELD_DIGIT, b'7'),
    (HELD_DIGIT, b'8'),
    (HELD_DIGIT, b'9'),
    (HELD_AT, b'@'),
    (1 << 2, b'\\'),
    (1 << 3, b'&'),
])
.above_0x7f(1 << 4);

/// The bits of [`ByteClasses`] `classes` that some byte of `bytes` holds:
/// sixty-four bytes a step, each sixteen looked up by nibble in two tables
/// (two shuffles) and the bits gathered in one vector.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128,relaxed-simd")]
#[inline(never)]
pub fn classes_held(bytes: &[u8], classes: &ByteClasses) -> u8 {
    use core::arch::wasm32::{
        i8x16_relaxed_swizzle, u16x8_shr, u8x16_splat, v128, v128_and, v128_load, v128_store,
    };
    // SAFETY: a table is 16 bytes; `v128_load` needs no alignment.
    let low_table = unsafe { v128_load(classes.low.as_ptr().cast::<v128>()) };
    // SAFETY: as above.
    let high_table = unsafe { v128_load(classes.high.as_ptr().cast::<v128>()) };
    let low = u8x16_splat(0x0f);
    // Every index is a nibble (0-15), where the relaxed swizzle equals the
    // plain one (see the prefilter's block).
    let bits = |v: v128| {
        v128_and(
            i8x16_relaxed_swizzle(low_table, v128_and(v, low)),
            i8x16_relaxed_swizzle(high_table, v128_and(u16x8_shr(v, 4), low)),
        )
    };
    let (acc, rest) = or_of_blocks(bytes, bits);
    let mut lanes = [0u8; 16];
    // SAFETY: 16 bytes written into a 16-byte array; no alignment needed.
    unsafe { v128_store(lanes.as_mut_ptr().cast::<v128>(), acc) };
    let gathered = lanes.iter().fold(0u8, |a, &b| a | b);
    rest.iter().fold(gathered, |a, &b| a | classes.bits(b))
}

/// The bits of [`ByteClasses`] `classes` that some byte of `bytes` holds,
/// one byte at a time (the CLI and the native tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn classes_held(bytes: &[u8], classes: &ByteClasses) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a | classes.bits(b))
}

/// Which of the three stops `bytes` holds (see [`Held`]).
#[cfg(target_arch = "wasm32")]
pub fn held(bytes: &[u8]) -> Held {
    let bits = classes_held(bytes, &HELD_CLASSES);
    Held {
        digit: bits & HELD_DIGIT != 0,
        at_sign: bits & HELD_AT != 0,
        reads_otherwise: bits & HELD_OTHERWISE != 0,
    }
}

/// Which of the three stops `bytes` holds, one byte at a time: LLVM
/// vectorises the loop on the native targets (no early exit).
#[cfg(not(target_arch = "wasm32"))]
pub fn held(bytes: &[u8]) -> Held {
    let (mut digit, mut at_sign, mut otherwise) = (false, false, false);
    for &b in bytes {
        digit |= b.wrapping_sub(b'0') < 10;
        at_sign |= b == b'@';
        otherwise |= b >= 0x80 || b == b'\\' || b == b'&';
    }
    Held {
        digit,
        at_sign,
        reads_otherwise: otherwise,
    }
}

/// Whether every byte is ASCII: sixty-four bytes a step in the Wasm build
/// (std's check reads four-byte words on wasm32: ~5,700 instructions under
/// V8 for a 4 KB body, where this reads it in ~600).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
#[inline(never)]
pub fn is_ascii(bytes: &[u8]) -> bool {
    let (acc, rest) = or_of_blocks(bytes, |v| v);
    // The high bits of every lane: a byte above 0x7F sets its lane's.
    core::arch::wasm32::i8x16_bitmask(acc) == 0 && rest.is_ascii()
}

/// The OR of `bits` of every sixteen bytes of `bytes`, sixty-four a step,
/// and the last bytes that make no block of sixteen. Inlined into its
/// callers, which are built with `simd128`.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn or_of_blocks(
    bytes: &[u8],
    bits: impl Fn(core::arch::wasm32::v128) -> core::arch::wasm32::v128,
) -> (core::arch::wasm32::v128, &[u8]) {
    use core::arch::wasm32::{i8x16_splat, v128, v128_load, v128_or};
    let mut acc = i8x16_splat(0);
    let mut chunks = bytes.chunks_exact(64);
    for run in &mut chunks {
        // SAFETY: 16 bytes read at offset 0, 16, 32 and 48 of a 64-byte
        // chunk; `v128_load` needs no alignment.
        let load =
            |at: usize| -> v128 { unsafe { v128_load(run.as_ptr().add(at).cast::<v128>()) } };
        acc = v128_or(
            acc,
            v128_or(
                v128_or(bits(load(0)), bits(load(16))),
                v128_or(bits(load(32)), bits(load(48))),
            ),
        );
    }
    let mut blocks = chunks.remainder().chunks_exact(16);
    for block in &mut blocks {
        // SAFETY: a 16-byte chunk; `v128_load` needs no alignment.
        acc = v128_or(
            acc,
            bits(unsafe { v128_load(block.as_ptr().cast::<v128>()) }),
        );
    }
    (acc, blocks.remainder())
}

/// Whether every byte is ASCII (std's check, word by word natively).
#[cfg(not(target_arch = "wasm32"))]
pub fn is_ascii(bytes: &[u8]) -> bool {
    bytes.is_ascii()
}

#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
#[inline(never)]
fn next_digit(bytes: &[u8], from: usize) -> Option<usize> {
    search(bytes, from, Stop::Digit)
}

#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
#[inline(never)]
fn next_byte(bytes: &[u8], from: usize, b: u8) -> Option<usize> {
    search(bytes, from, Stop::Byte(b))
}

#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
#[inline(never)]
fn next_reads_otherwise(bytes: &[u8], from: usize) -> Option<usize> {
    search(bytes, from, Stop::ReadsOtherwise)
}

#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
#[inline(never)]
fn next_json_escape(bytes: &[u8], from: usize) -> Option<usize> {
    search(bytes, from, Stop::JsonEscape)
}

/// Whole blocks of sixteen, then the last few bytes one by one. Inlined into
/// the wrappers above, so that `stop` is a constant in each and the block's
/// comparisons are built with `simd128` (a function of another feature set
/// is not inlined into them).
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn search(bytes: &[u8], from: usize, stop: Stop) -> Option<usize> {
    use core::arch::wasm32::{
        i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_splat, u8x16_ge, u8x16_le, u8x16_lt, u8x16_splat,
        v128, v128_and, v128_any_true, v128_load, v128_or,
    };
    // The lanes where `stop` holds, as 0xFF (the others 0: the four-block
    // step tests them all at once). A macro, not a closure: a closure is not
    // built with the wrappers' `simd128`, and was called, not inlined, once
    // a block.
    macro_rules! hits {
        ($v:expr) => {{
            let v: v128 = $v;
            match stop {
                Stop::Digit => v128_and(
                    u8x16_ge(v, u8x16_splat(b'0')),
                    u8x16_le(v, u8x16_splat(b'9')),
                ),
                Stop::Byte(b) => i8x16_eq(v, u8x16_splat(b)),
                Stop::ReadsOtherwise => v128_or(
                    // Negative as signed bytes: above 0x7F.
                    v128_or(i8x16_lt(v, i8x16_splat(0)), i8x16_eq(v, u8x16_splat(b'\\'))),
                    i8x16_eq(v, u8x16_splat(b'&')),
                ),
                Stop::JsonEscape => v128_or(
                    u8x16_lt(v, u8x16_splat(0x20)),
                    v128_or(
                        i8x16_eq(v, u8x16_splat(b'"')),
                        i8x16_eq(v, u8x16_splat(b'\\')),
                    ),
                ),
            }
        }};
    }
    // The lanes of the block at `at` where `stop` holds, as bit `j` for
    // its byte `j`; `None` where no whole block is left.
    macro_rules! block_lanes {
        ($at:expr) => {
            match bytes
                .get($at..$at + 16)
                .and_then(|b| <&[u8; 16]>::try_from(b).ok())
            {
                // SAFETY: 16 bytes read from a 16-byte array; `v128_load`
                // needs no alignment.
                Some(b) => Some(i8x16_bitmask(hits!(unsafe {
                    v128_load(b.as_ptr().cast::<v128>())
                }))),
                None => None,
            }
        };
    }
    let mut i = from;
    // The first block alone: where stops are close together (a list of
    // numbers, escaped text) the next is mostly in it, found at one block's
    // cost.
    if let Some(lanes) = block_lanes!(i) {
        if lanes != 0 {
            return Some(i + lanes.trailing_zeros() as usize);
        }
        i += 16;
    }
    // Then four blocks a step while there are four: one test of their lanes
    // together, so that a text with nothing to stop at (prose has no digit,
    // no `@`) costs a quarter of the loop's tests and branches; in the step
    // that holds a stop, the blocks' own lanes say where.
    while let Some(run) = bytes
        .get(i..i + 64)
        .and_then(|b| <&[u8; 64]>::try_from(b).ok())
    {
        // SAFETY: 16 bytes read at offset 0, 16, 32 and 48 of a 64-byte
        // array; `v128_load` needs no alignment.
        let load =
            |at: usize| -> v128 { unsafe { v128_load(run.as_ptr().add(at).cast::<v128>()) } };
        let found = [
            hits!(load(0)),
            hits!(load(16)),
            hits!(load(32)),
            hits!(load(48)),
        ];
        let [a, b, c, d] = found;
        if v128_any_true(v128_or(v128_or(a, b), v128_or(c, d))) {
            for (k, hit) in found.into_iter().enumerate() {
                let lanes = i8x16_bitmask(hit);
                if lanes != 0 {
                    return Some(i + 16 * k + lanes.trailing_zeros() as usize);
                }
            }
        }
        i += 64;
    }
    while let Some(lanes) = block_lanes!(i) {
        if lanes != 0 {
            return Some(i + lanes.trailing_zeros() as usize);
        }
        i += 16;
    }
    let rest = bytes.get(i..)?;
    rest.iter().position(|&b| stop.holds(b)).map(|p| i + p)
}

/// Eight bytes a word, then the last few one by one, for the targets without
/// the Wasm build's SIMD.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn search(bytes: &[u8], from: usize, stop: Stop) -> Option<usize> {
    let mut i = from;
    while let Some(word) = bytes
        .get(i..i + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
    {
        let found = stops_in_word(u64::from_le_bytes(word), stop);
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let rest = bytes.get(i..)?;
    rest.iter().position(|&b| stop.holds(b)).map(|p| i + p)
}

/// The high bit of byte `j` of the result set where `stop` may hold for
/// byte `j` of `x` (little-endian); the lowest set bit is always exact, which
/// is all [`search`] reads. "Some byte is `b`" by the borrow trick can mark a
/// byte above a true one wrongly, never below it; the digit test adds to
/// seven-bit bytes, which carry into nothing.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn stops_in_word(x: u64, stop: Stop) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let has = |b: u8| {
        let v = x ^ (ONES * u64::from(b));
        v.wrapping_sub(ONES) & !v & HIGH
    };
    match stop {
        Stop::Digit => {
            // Adding 0x50 sets bit 7 of a seven-bit byte iff it is >= `0`,
            // adding 0x46 iff it is > `9`; bytes above 0x7F are masked out.
            let y = x & LOW7;
            let ge0 = y.wrapping_add(ONES * (0x80 - 0x30));
            let gt9 = y.wrapping_add(ONES * (0x80 - 0x3a));
            ge0 & !gt9 & !x & HIGH
        }
        Stop::Byte(b) => has(b),
        Stop::ReadsOtherwise => (x & HIGH) | has(b'\\') | has(b'&'),
        Stop::JsonEscape => {
            // Adding 0x60 sets bit 7 of a seven-bit byte iff it is >= 0x20;
            // bytes above 0x7F are masked out (none is escaped).
            let ge20 = (x & LOW7).wrapping_add(ONES * (0x80 - 0x20));
            (!ge20 & !x & HIGH) | has(b'"') | has(b'\\')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables the Wasm build shuffles hold each class exactly.
    #[test]
    fn the_held_classes_are_the_stops_byte_by_byte() {
        for b in 0..=255u8 {
            let bits = HELD_CLASSES.bits(b);
            assert_eq!(bits & HELD_DIGIT != 0, Stop::Digit.holds(b), "{b:#x}");
            assert_eq!(bits & HELD_AT != 0, b == b'@', "{b:#x}");
            assert_eq!(
                bits & HELD_OTHERWISE != 0,
                Stop::ReadsOtherwise.holds(b),
                "{b:#x}"
            );
            let one = held(&[b]);
            assert_eq!(one.may_hold(Stop::Digit), Stop::Digit.holds(b), "{b:#x}");
            assert_eq!(one.may_hold(Stop::Byte(b'@')), b == b'@', "{b:#x}");
            assert_eq!(
                one.may_hold(Stop::ReadsOtherwise),
                Stop::ReadsOtherwise.holds(b),
                "{b:#x}"
            );
        }
    }

    /// Every stop, from every start, over texts that put each stopping byte
    /// at each lane of a block, at block edges and in the tail.
    #[test]
    fn each_search_finds_what_the_byte_by_byte_definition_finds() {
        let stops = [
            Stop::Digit,
            Stop::Byte(b'@'),
            Stop::ReadsOtherwise,
            Stop::JsonEscape,
        ];
        let specials: &[u8] = b"0459/:@\\&\x7f\x80\xc2\xa0\xff ~aZ\"\x00\x1f\x20\x0a!#";
        let mut texts: Vec<Vec<u8>> =
            vec![Vec::new(), b"plain prose, nothing in it at all.".to_vec()];
        for len in [1usize, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70, 128, 130] {
            for pos in 0..len {
                for &s in specials {
                    let mut t = vec![b'x'; len];
                    if let Some(b) = t.get_mut(pos) {
                        *b = s;
                    }
                    texts.push(t);
                }
            }
        }
        // Two neighbours, the second one bit off the first (`]` after `\\`,
        // `'` after `&`): where an eight-byte word's borrow could mark a
        // byte that is not one.
        for len in [9usize, 16, 24] {
            for pos in 0..len - 1 {
                for &a in specials {
                    for b in [a ^ 1, a, b'x', 0x01] {
                        let mut t = vec![b'x'; len];
                        if let Some(c) = t.get_mut(pos) {
                            *c = a;
                        }
                        if let Some(c) = t.get_mut(pos + 1) {
                            *c = b;
                        }
                        texts.push(t);
                    }
                }
            }
        }
        // Dense: every byte value in turn.
        texts.push((0..=255u8).collect());
        texts.push((0..=255u8).rev().collect());
        for t in &texts {
            let held = held(t);
            assert_eq!(is_ascii(t), t.is_ascii(), "ASCII in {t:?}");
            for &stop in &stops {
                // A stop the pass does not look for is always searched.
                let holds = t.iter().any(|&b| stop.holds(b)) || stop == Stop::JsonEscape;
                assert_eq!(held.may_hold(stop), holds, "{stop:?} held in {t:?}");
                for from in 0..=t.len() + 1 {
                    let want = t
                        .get(from..)
                        .and_then(|r| r.iter().position(|&b| stop.holds(b)))
                        .map(|p| from + p);
                    assert_eq!(next(t, from, stop), want, "{stop:?} from {from} in {t:?}");
                }
            }
        }
    }
}
