//! Searches for the few bytes that start a piece of personal data or a
//! second reading, sixteen bytes at a time.
//!
//! Why: after the trigger prefilter these searches are the passes that see
//! every byte of every scanned string (a 4 KB argument is 4,096 positions
//! for each): the next digit (a card, a phone number), the next `@` (an
//! address) and the next `\`, `&` or byte above 0x7F (what a reader may
//! decode otherwise). Under V8 the eight-byte word loops they replaced cost
//! 1.5-3 instructions a byte, `str::match_indices` 2.8. The build for Wasm
//! compares sixteen lanes at once with `simd128`, which the module already
//! needs for the prefilter; other targets (the native tests, the fuzz
//! targets) read the same bytes one by one. Each search returns exactly
//! what its byte-by-byte definition does: the tests compare both.

/// The bytes a search stops at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `0`-`9`.
    Digit,
    /// One given byte.
    Byte(u8),
    /// `\`, `&` or any byte above 0x7F: the lead bytes of what
    /// [`super::text::second_reading`] decodes or drops.
    ReadsOtherwise,
}

impl Stop {
    /// The definition every search is equal to.
    #[inline(always)]
    fn holds(self, b: u8) -> bool {
        match self {
            Stop::Digit => b.is_ascii_digit(),
            Stop::Byte(s) => b == s,
            Stop::ReadsOtherwise => b == b'\\' || b == b'&' || b >= 0x80,
        }
    }
}

/// Position of the first byte at or after `from` that `stop` stops at.
pub fn next(bytes: &[u8], from: usize, stop: Stop) -> Option<usize> {
    match stop {
        Stop::Digit => next_digit(bytes, from),
        Stop::Byte(b) => next_byte(bytes, from, b),
        Stop::ReadsOtherwise => next_reads_otherwise(bytes, from),
    }
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

/// Whole blocks of sixteen, then the last few bytes one by one. Inlined into
/// the wrappers above, so that `stop` is a constant in each and the block's
/// comparisons are built with `simd128` (a function of another feature set
/// is not inlined into them).
#[inline(always)]
fn search(bytes: &[u8], from: usize, stop: Stop) -> Option<usize> {
    let mut i = from;
    while let Some(block) = bytes
        .get(i..i + 16)
        .and_then(|b| <&[u8; 16]>::try_from(b).ok())
    {
        let lanes = stops_in(block, stop);
        if lanes != 0 {
            return Some(i + lanes.trailing_zeros() as usize);
        }
        i += 16;
    }
    let rest = bytes.get(i..)?;
    rest.iter().position(|&b| stop.holds(b)).map(|p| i + p)
}

/// Bit `j` set where `stop` holds for `block[j]`.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn stops_in(block: &[u8; 16], stop: Stop) -> u16 {
    use core::arch::wasm32::{
        i8x16_bitmask, i8x16_eq, u8x16_ge, u8x16_le, u8x16_splat, v128, v128_and, v128_load,
        v128_or,
    };
    // SAFETY: 16 bytes read from a 16-byte array; `v128_load` needs no
    // alignment.
    let v: v128 = unsafe { v128_load(block.as_ptr().cast::<v128>()) };
    let hit = match stop {
        Stop::Digit => v128_and(
            u8x16_ge(v, u8x16_splat(b'0')),
            u8x16_le(v, u8x16_splat(b'9')),
        ),
        Stop::Byte(b) => i8x16_eq(v, u8x16_splat(b)),
        Stop::ReadsOtherwise => v128_or(
            // The sign bit: bytes above 0x7F.
            v128_or(v, i8x16_eq(v, u8x16_splat(b'\\'))),
            i8x16_eq(v, u8x16_splat(b'&')),
        ),
    };
    // `i8x16_bitmask` takes each lane's top bit: all of a compare's lane, or
    // for the raw bytes `ReadsOtherwise` ORs in, exactly "above 0x7F".
    i8x16_bitmask(hit)
}

/// The same lanes one by one, for the targets without the Wasm build's SIMD.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn stops_in(block: &[u8; 16], stop: Stop) -> u16 {
    block
        .iter()
        .enumerate()
        .filter(|(_, &b)| stop.holds(b))
        .fold(0u16, |lanes, (j, _)| lanes | (1 << j))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stop, from every start, over texts that put each stopping byte
    /// at each lane of a block, at block edges and in the tail.
    #[test]
    fn each_search_finds_what_the_byte_by_byte_definition_finds() {
        let stops = [Stop::Digit, Stop::Byte(b'@'), Stop::ReadsOtherwise];
        let specials: &[u8] = b"0459/:@\\&\x7f\x80\xc2\xa0\xff ~aZ";
        let mut texts: Vec<Vec<u8>> =
            vec![Vec::new(), b"plain prose, nothing in it at all.".to_vec()];
        for len in [1usize, 15, 16, 17, 31, 32, 33, 47, 70] {
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
        // Dense: every byte value in turn.
        texts.push((0..=255u8).collect());
        texts.push((0..=255u8).rev().collect());
        for t in &texts {
            for &stop in &stops {
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
