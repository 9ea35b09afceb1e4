//! One small stable sort for the whole module.
//!
//! Why not std's: `sort`, `sort_unstable` and their `_by` forms are
//! instantiated once per element type and comparator, 3-10 KB of Wasm each
//! (a quicksort, a small-sort network, a driftsort or heapsort fallback);
//! twenty call sites made ~113 KB of the module (`twiggy monos`, eleventh
//! session), more than serde_json's code. What the filter sorts is short (a
//! string's DLP candidates, an object's members, a finding's pointers) unless
//! a hostile input makes it long, so:
//! - up to [`SMALL`] elements, an insertion sort in place: a few hundred bytes
//!   per call site, no allocation, quadratic only in a bounded length;
//! - above it, one merge sort over indices that every call site shares (the
//!   comparator reaches it as `dyn`), O(n log n) whatever the input, and then
//!   the elements are moved once into their order.
//!
//! Both are stable, so a call site that sorted unstably gets one of the
//! orders it accepted, and one that sorted stably the same order as before.

/// Longest slice sorted by insertion (std's own cut-over is about as long).
const SMALL: usize = 16;

/// Sort `v` so that no element is `less` than one before it; equal elements
/// keep their order. `less` must be a strict weak order (as `Ord::lt` is).
pub fn sort_by<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    if v.len() <= SMALL {
        insertion_sort(v, &mut less);
        return;
    }
    let order = merge_order(v.len(), &mut |a, b| match (v.get(a), v.get(b)) {
        (Some(x), Some(y)) => less(x, y),
        _ => false,
    });
    permute(v, order);
}

/// [`sort_by`] with the elements' own order.
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, |a, b| a < b);
}

fn insertion_sort<T>(v: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// The stable order of `0..n` under `less` over indices: position `k` of the
/// answer is the index of the element that belongs at `k`. Bottom-up merge
/// sort; not generic, so one copy serves every call site.
fn merge_order(n: usize, less: &mut dyn FnMut(usize, usize) -> bool) -> Vec<usize> {
    let mut from: Vec<usize> = (0..n).collect();
    // Runs of SMALL sorted by insertion first: fewer passes, and the short
    // runs' comparisons stay in cache.
    for run in from.chunks_mut(SMALL) {
        insertion_sort(run, &mut |a: &usize, b: &usize| less(*a, *b));
    }
    let mut to = vec![0; n];
    let mut width = SMALL;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = n.min(lo.saturating_add(width));
            let hi = n.min(lo.saturating_add(width.saturating_mul(2)));
            if let (Some(left), Some(right), Some(out)) =
                (from.get(lo..mid), from.get(mid..hi), to.get_mut(lo..hi))
            {
                merge(left, right, out, less);
            }
            lo = hi;
        }
        std::mem::swap(&mut from, &mut to);
        width = width.saturating_mul(2);
    }
    from
}

/// Merge two sorted runs into `out` (their total length), the left run's
/// element first of two equal ones.
fn merge(
    left: &[usize],
    right: &[usize],
    out: &mut [usize],
    less: &mut dyn FnMut(usize, usize) -> bool,
) {
    let (mut i, mut j) = (0, 0);
    for slot in out.iter_mut() {
        *slot = match (left.get(i), right.get(j)) {
            (Some(&l), Some(&r)) if less(r, l) => {
                j += 1;
                r
            }
            (Some(&l), _) => {
                i += 1;
                l
            }
            (None, Some(&r)) => {
                j += 1;
                r
            }
            (None, None) => break,
        };
    }
}

/// Rearrange `v` so that position `k` holds what was at `order[k]`, by
/// following each cycle of the permutation with swaps (`order` is a
/// permutation of `0..v.len()`, as [`merge_order`] makes it).
fn permute<T>(v: &mut [T], mut order: Vec<usize>) {
    for start in 0..order.len() {
        // Invariant: `v[cur]` holds what was at `start`; every position this
        // cycle visited before `cur` holds its own element and is marked done
        // (`order[p] == p`).
        let mut cur = start;
        loop {
            let next = order.get(cur).copied().unwrap_or(start);
            if let Some(done) = order.get_mut(cur) {
                *done = cur;
            }
            if next == start || next == cur {
                break;
            }
            v.swap(cur, next);
            cur = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no `rand` in the crate).
    fn numbers(seed: u64, n: usize, range: u64) -> Vec<u64> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % range
            })
            .collect()
    }

    #[test]
    fn sorts_as_std_stable_sort_does_at_every_length_and_shape() {
        // (name, values): lengths around SMALL and the merge widths, ties,
        // runs already in order and reversed.
        let mut cases: Vec<(String, Vec<u64>)> = Vec::new();
        for n in [0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 257, 1000] {
            cases.push((format!("random_{n}"), numbers(n as u64 + 1, n, 1 << 40)));
            cases.push((format!("many_ties_{n}"), numbers(n as u64 + 7, n, 3)));
            cases.push((format!("ascending_{n}"), (0..n as u64).collect()));
            cases.push((format!("descending_{n}"), (0..n as u64).rev().collect()));
        }
        for (name, values) in cases {
            // Tag each value with its position: stability shows in the tags.
            let tagged: Vec<(u64, usize)> = values.iter().copied().zip(0..).collect();
            let mut want = tagged.clone();
            want.sort_by_key(|a| a.0);
            let mut got = tagged;
            sort_by(&mut got, |a, b| a.0 < b.0);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn sort_orders_strings_like_ord() {
        let mut got: Vec<String> = numbers(3, 200, 50)
            .iter()
            .map(|n| format!("k{n}"))
            .collect();
        let mut want = got.clone();
        want.sort();
        sort(&mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn permute_moves_each_element_once_into_its_place() {
        let mut v = vec!['a', 'b', 'c', 'd', 'e', 'f'];
        // Two cycles (0 2 4), (1 5) and a fixed point 3.
        permute(&mut v, vec![2, 5, 4, 3, 0, 1]);
        assert_eq!(v, vec!['c', 'f', 'e', 'd', 'a', 'b']);
    }

    #[test]
    fn an_inconsistent_comparator_still_leaves_a_permutation() {
        // `less` that is not an order must not lose or duplicate elements.
        let mut v: Vec<u64> = (0..300).collect();
        let mut flip = false;
        sort_by(&mut v, |_, _| {
            flip = !flip;
            flip
        });
        let mut back = v.clone();
        back.sort_unstable();
        assert_eq!(back, (0..300).collect::<Vec<u64>>());
    }
}
