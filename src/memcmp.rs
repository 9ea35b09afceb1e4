//! `memcmp` for the Wasm build, sixteen bytes a step.
//!
//! Why: every comparison of two byte strings (`==` on `str` and `[u8]`,
//! `Ord`, a `BTreeMap` or `HashMap` lookup by a string key) ends in C's
//! `memcmp`, and on wasm32-wasip1 that is wasi-libc's, one byte a step:
//! ~5.6 instructions a byte under V8. A 50-tool list compares its strings
//! with the memos' keys and its members' names with the DOM's: 897,000 of
//! the list's 6.7M instructions were in `memcmp` (docs/performance.md,
//! *Twenty-fifth session*). Defined here, the module's own symbol is what
//! the linker resolves every call to (wasi-libc's object is then not
//! linked), so the whole module compares sixteen bytes a step.
//!
//! wasi-libc's `bcmp` (what LLVM may call where only equality is asked)
//! calls `memcmp`, so it needs no copy here. Rust exports every
//! `#[no_mangle]` function of a cdylib, so the module exports `memcmp` to
//! its host, which never calls it (`tests/e2e/test_module_exports.py`
//! holds the export list to the ABI and it).
//!
//! Nothing in these functions may compare slices (`==`, `cmp`,
//! `starts_with` on bytes): each of those calls `memcmp`, which would be
//! this function calling itself. They read raw memory with explicit loads.

use core::arch::wasm32::{i8x16_bitmask, i8x16_eq, v128, v128_load};

/// C's `memcmp`: 0 when the `n` bytes at `a` and `b` are equal, otherwise
/// the difference of the first unequal pair, as unsigned bytes.
///
/// # Safety
/// As C's: `a` and `b` are each readable for `n` bytes.
#[no_mangle]
#[target_feature(enable = "simd128")]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    match first_difference(a, b, n) {
        // SAFETY: `at < n`, inside both ranges.
        Some(at) => i32::from(unsafe { *a.add(at) }) - i32::from(unsafe { *b.add(at) }),
        None => 0,
    }
}

/// The offset of the first byte where the `n` bytes at `a` and `b`
/// differ. Sixteen bytes a step, the last step ending at `n` (it may read
/// again bytes already found equal, which leaves the first difference
/// where it is); a shorter range as two words that overlap the same way.
/// Most comparisons are of short names: a fixed handful of instructions.
#[inline(always)]
unsafe fn first_difference(a: *const u8, b: *const u8, n: usize) -> Option<usize> {
    // SAFETY (every read below): at `at` with `at + width <= n`, inside
    // both ranges; unaligned reads.
    let wide = |at: usize| -> Option<usize> {
        let (x, y) = unsafe {
            (
                v128_load(a.add(at).cast::<v128>()),
                v128_load(b.add(at).cast::<v128>()),
            )
        };
        let equal = i8x16_bitmask(i8x16_eq(x, y));
        (equal != u16::MAX).then(|| at + (!equal).trailing_zeros() as usize)
    };
    // Little-endian: the lowest differing bit is in the first differing byte.
    let word8 = |at: usize| -> Option<usize> {
        let (x, y) = unsafe {
            (
                a.add(at).cast::<u64>().read_unaligned(),
                b.add(at).cast::<u64>().read_unaligned(),
            )
        };
        (x != y).then(|| at + ((x ^ y).trailing_zeros() / 8) as usize)
    };
    let word4 = |at: usize| -> Option<usize> {
        let (x, y) = unsafe {
            (
                a.add(at).cast::<u32>().read_unaligned(),
                b.add(at).cast::<u32>().read_unaligned(),
            )
        };
        (x != y).then(|| at + ((x ^ y).trailing_zeros() / 8) as usize)
    };
    if n >= 16 {
        let mut i = 0;
        while i + 16 < n {
            if let Some(at) = wide(i) {
                return Some(at);
            }
            i += 16;
        }
        return wide(n - 16);
    }
    if n >= 8 {
        return word8(0).or_else(|| word8(n - 8));
    }
    if n >= 4 {
        return word4(0).or_else(|| word4(n - 4));
    }
    (0..n).find(|&i| unsafe { *a.add(i) != *b.add(i) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: the first unequal pair, as unsigned bytes.
    fn naive(a: &[u8], b: &[u8]) -> i32 {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return i32::from(*x) - i32::from(*y);
            }
        }
        0
    }

    #[test]
    fn each_length_and_each_first_difference_compares_as_c_does() {
        for n in 0..80usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            // SAFETY: both vectors hold `n` bytes.
            assert_eq!(unsafe { memcmp(a.as_ptr(), a.clone().as_ptr(), n) }, 0);
            for at in 0..n {
                // Above and below, and across the sign of a byte (0x7f
                // against 0x80 reads 0x80 as the larger, unsigned).
                for delta in [1u8, 0x80, 0xff] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    // Later differences must not change the answer.
                    if at + 1 < n {
                        b[n - 1] ^= 0x55;
                    }
                    // SAFETY: both vectors hold `n` bytes.
                    let (got, back) = unsafe {
                        (
                            memcmp(a.as_ptr(), b.as_ptr(), n),
                            memcmp(b.as_ptr(), a.as_ptr(), n),
                        )
                    };
                    assert_eq!(got, naive(&a, &b), "n {n} at {at} delta {delta}");
                    assert_eq!(back, naive(&b, &a), "n {n} at {at} delta {delta}");
                }
            }
        }
    }

    #[test]
    fn unaligned_ranges_compare_alike() {
        let text: Vec<u8> = b"content type text Echo: hello bench \x80\xff".repeat(3);
        for off_a in 0..8 {
            for off_b in 0..8 {
                let n = text.len() - off_a.max(off_b);
                let (a, b) = (&text[off_a..off_a + n], &text[off_b..off_b + n]);
                // SAFETY: both slices hold `n` bytes.
                let got = unsafe { memcmp(a.as_ptr(), b.as_ptr(), n) };
                assert_eq!(got, naive(a, b), "{off_a} {off_b}");
            }
        }
    }

    #[test]
    fn slices_order_and_equal_through_it() {
        // What the rest of the module calls it through.
        let mut words = vec!["tools/call", "tools/list", "tool", "", "ẞ", "\u{80}", "z"];
        words.sort();
        assert_eq!(
            words,
            ["", "tool", "tools/call", "tools/list", "z", "\u{80}", "ẞ"]
        );
        assert!("content".as_bytes() == b"content");
        assert!("content" != "contents");
    }
}
