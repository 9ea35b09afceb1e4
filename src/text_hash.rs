//! The hash of the per-VM maps keyed by text a peer sends: the DLP and
//! catalogue memos of strings read clean, the API key memo, the member-name
//! check of every JSON object.
//!
//! Why not std's: `RandomState` hashes with SipHash-1-3, whose rounds on
//! wasm32 cost ~280 instructions under V8 for a 40-byte string. A 50-tool
//! list looks ~4,000 strings up in the memos: SipHash was 1.13M of the
//! list's 7.5M instructions there (docs/performance.md, *Twenty-fifth
//! session*). This one reads eight bytes a step, two multiplies each.
//!
//! What it keeps of SipHash's purpose: the keys are chosen by a server or a
//! caller, who could otherwise send strings that all land in one bucket and
//! make each lookup compare them all. The state starts from a seed drawn
//! once per VM from the source `RandomState` draws from (WASI's
//! `random_get`), and every step multiplies, so which strings collide
//! depends on a seed the peer never sees. It is not a keyed MAC: a peer
//! that learned the seed could build collisions. The maps it serves are
//! bounded (each memo clears itself past its byte budget; an object's names
//! are at most the body's), so even then a lookup's cost is bounded.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Builds [`TextHasher`]s from this VM's seed.
#[derive(Clone, Copy, Debug)]
pub struct TextHashing {
    seed: u64,
}

impl Default for TextHashing {
    fn default() -> Self {
        thread_local! {
            // One draw per VM (a Wasm VM is one thread): `RandomState`'s
            // keys come from the host's random source; SipHash of a constant
            // under them is as unpredictable as they are.
            static SEED: u64 = RandomState::new().hash_one(0x6d63_705f_6669_7265_u64);
        }
        TextHashing {
            seed: SEED.with(|s| *s),
        }
    }
}

impl BuildHasher for TextHashing {
    type Hasher = TextHasher;

    fn build_hasher(&self) -> TextHasher {
        TextHasher { state: self.seed }
    }
}

/// A multiply-and-fold per eight bytes (see the module's comment).
pub struct TextHasher {
    state: u64,
}

/// Odd, so multiplying by them loses nothing: the golden ratio's bits, and
/// another odd constant of mixed bits.
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL2: u64 = 0xbf58_476d_1ce4_e5b9;

#[inline(always)]
fn mix(h: u64, word: u64) -> u64 {
    // A product's high bits depend on every bit below them, its top bit on
    // nothing above: one multiply and a fold let a flip of a word's top bit
    // be cancelled by a flip in the next word whatever the seed (a helper,
    // twenty-fifth session). Folded and multiplied again, a flip reaches
    // the carries of the second product, which depend on the state.
    let x = (h ^ word).wrapping_mul(MUL);
    let x = (x ^ (x >> 32)).wrapping_mul(MUL2);
    x ^ (x >> 29)
}

impl Hasher for TextHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.state;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = mix(h, <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            if let Some(to) = last.get_mut(..rest.len()) {
                to.copy_from_slice(rest);
            }
            h = mix(h, u64::from_le_bytes(last));
        }
        // The length last: a text and the same text with NUL bytes after it
        // fill the same words, and a length in the tail's top byte could be
        // spelt by a text's own eighth byte (`abcdefg` and `abcdefg\x07`: a
        // helper, twenty-fifth session).
        self.state = mix(h, bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        // The table reads its index from the low bits and a tag from the top
        // seven: one more round so both depend on every byte.
        let x = self.state.wrapping_mul(MUL);
        x ^ (x >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hash(b: &TextHashing, s: &str) -> u64 {
        b.hash_one(s)
    }

    #[test]
    fn one_vm_hashes_a_text_the_same_every_time() {
        let (a, b) = (TextHashing::default(), TextHashing::default());
        for s in ["", "a", "content", "Echo: hello bench", &"x".repeat(100)] {
            assert_eq!(hash(&a, s), hash(&b, s), "{s}");
        }
    }

    #[test]
    fn texts_that_differ_anywhere_hash_apart() {
        let b = TextHashing::default();
        let mut seen = HashSet::new();
        // Every text of up to three bytes from a small alphabet (with NUL:
        // a zero tail byte must not read as no byte), and the same texts
        // behind a prefix of each length to 17 (every tail length).
        let alphabet = ["", "\0", "a", "b", "\u{ff}"];
        let mut texts = Vec::new();
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    texts.push(format!("{x}{y}{z}"));
                }
            }
        }
        texts.sort();
        texts.dedup();
        for p in 0..18 {
            let prefix = "p".repeat(p);
            for t in &texts {
                let s = format!("{prefix}{t}");
                assert!(seen.insert(hash(&b, &s)), "{s:?} collides");
            }
        }
    }

    #[test]
    fn a_text_and_its_padded_spellings_hash_apart_under_any_seed() {
        // Pairs that the tail's length in its top byte made collide for
        // every seed, and flips of one word's top bit cancelled in the next.
        let flip = |s: &[u8; 16], bits: [(usize, u8); 3]| {
            let mut t = *s;
            for (at, bit) in bits {
                t[at] ^= bit;
            }
            t
        };
        let base = *b"abcdefghijklmnop";
        let flipped = flip(&base, [(7, 0x80), (15, 0x80), (12, 0x04)]);
        for seed in [0, 1, 0x5eed, u64::MAX] {
            let b = TextHashing { seed };
            for (x, y) in [
                (&b"abcdefg"[..], &b"abcdefg\x07"[..]),
                (b"ab", b"ab\0\0\0\0\0\x02"),
                (b"", b"\0"),
                (&base[..], &flipped[..]),
            ] {
                assert_ne!(b.hash_one(x), b.hash_one(y), "seed {seed}: {x:?} {y:?}");
            }
        }
    }

    #[test]
    fn another_seed_hashes_otherwise() {
        let a = TextHashing { seed: 1 };
        let b = TextHashing { seed: 2 };
        let differ = ["", "content", "type", "Echo: hello bench"]
            .iter()
            .filter(|s| hash(&a, s) != hash(&b, s))
            .count();
        assert_eq!(differ, 4);
    }
}
