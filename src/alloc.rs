//! Size classes in front of the module's allocator.
//!
//! A request allocates some two hundred small blocks (the DOM's keys and
//! strings, vectors growing, headers copied out of the host) and frees them
//! all before the next one. Under V8, wasi-libc's dlmalloc spent about a
//! tenth of an exchange in `malloc` and `free`: each call searches bins and
//! splits or merges chunks. Rust tells `dealloc` the size it allocated, so a
//! freed small block can go on a list of its size class with no header and
//! the next allocation of that class pops it: a handful of instructions.
//!
//! Bounded: the classes together keep at most [`HELD_BYTES`] of freed
//! blocks and give the rest back to the allocator below, so a burst does not
//! keep its memory for the life of the VM. The budget is shared, not split
//! per class: the benchmark's 35 KB `tools/list` answer holds 452 objects,
//! each a B-tree leaf node of a few hundred bytes, all of one class; with
//! 8 KiB per class most of them went back to dlmalloc and came from it again
//! for the next list, ~9% of the list's exchange under V8.
//!
//! Like every Rust allocator, this one relies on a block being freed with the
//! size it was allocated with (dlmalloc ignored that size; here it names the
//! list). Blocks the host writes into come from the SDK's
//! `proxy_on_memory_allocate` and are freed by the SDK with the size the
//! host reports, which Envoy's host sets to the size it asked for. The host
//! would allocate with an exported `malloc` instead, so the module must not
//! export one (`tests/e2e/test_module_exports.py`).
//!
//! Proxy-wasm runs each VM on one thread and wasm32 here has no threads, so
//! the lists need no lock; the global instance exists only on wasm32 without
//! atomics (`lib.rs`). Natively the type is tested with instances of its own.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks up to this size go through the classes.
const SMALL_MAX: usize = 1024;
/// Up to 256 bytes a class every 16 bytes; above, every 64 bytes.
const FINE_MAX: usize = 256;
const FINE_STEP: usize = 16;
const COARSE_STEP: usize = 64;
const CLASSES: usize = FINE_MAX / FINE_STEP + (SMALL_MAX - FINE_MAX) / COARSE_STEP;
/// The alignment every class block is asked for below: on wasm32 Rust's
/// `System` serves up to 8 with a plain `malloc`, which is what the classes
/// replace. A block that needs more bypasses the classes.
const CLASS_ALIGN: usize = 8;
/// The freed bytes all classes together may keep.
const HELD_BYTES: usize = 512 * 1024;

/// The class of a block of `size` bytes, and the size every block of that
/// class is allocated with below.
fn class_of(size: usize) -> Option<(usize, usize)> {
    if size == 0 || size > SMALL_MAX {
        return None;
    }
    if size <= FINE_MAX {
        let class = (size - 1) / FINE_STEP;
        return Some((class, (class + 1) * FINE_STEP));
    }
    let coarse = (size - FINE_MAX - 1) / COARSE_STEP;
    Some((
        FINE_MAX / FINE_STEP + coarse,
        FINE_MAX + (coarse + 1) * COARSE_STEP,
    ))
}

/// A freed block's first bytes: the next freed block of its class.
struct Free {
    next: *mut Free,
}

/// One class's freed blocks and their bytes.
#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    held: usize,
}

pub(crate) struct SizeClasses<A> {
    below: A,
    lists: UnsafeCell<[List; CLASSES]>,
    /// The bytes all lists hold, against [`HELD_BYTES`].
    held: UnsafeCell<usize>,
}

// SAFETY: every instance is used from one thread only, as `new` requires:
// the global one on wasm32 without threads, the tests' own each within one
// test.
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A> SizeClasses<A> {
    /// # Safety
    /// The instance is used from one thread only: the lists have no lock.
    pub(crate) const unsafe fn new(below: A) -> SizeClasses<A> {
        SizeClasses {
            below,
            lists: UnsafeCell::new(
                [List {
                    head: ptr::null_mut(),
                    held: 0,
                }; CLASSES],
            ),
            held: UnsafeCell::new(0),
        }
    }
}

impl<A: GlobalAlloc> SizeClasses<A> {
    fn small(layout: Layout) -> Option<(usize, usize)> {
        if layout.align() > CLASS_ALIGN {
            return None;
        }
        class_of(layout.size())
    }

    /// The layout every block of a class has below: allocated and freed
    /// with it, whatever size within the class the caller asked for.
    fn class_layout(class_size: usize) -> Layout {
        debug_assert!(class_size % FINE_STEP == 0 && class_size <= SMALL_MAX);
        // SAFETY: `CLASS_ALIGN` is a power of two and a class size (a
        // multiple of 16, at most 1024) is far below `isize::MAX`. A fallback
        // layout here would be a block smaller than its class.
        unsafe { Layout::from_size_align_unchecked(class_size, CLASS_ALIGN) }
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, size)) = Self::small(layout) else {
            return self.below.alloc(layout);
        };
        // `class_of` never names a class past the array (tested); were it
        // to, the block is simply not listed.
        match (*self.lists.get()).get_mut(class) {
            Some(list) if !list.head.is_null() => {
                let block = list.head;
                list.head = (*block).next;
                list.held -= size;
                *self.held.get() -= size;
                block.cast()
            }
            _ => self.below.alloc(Self::class_layout(size)),
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some((class, size)) = Self::small(layout) else {
            return self.below.dealloc(block, layout);
        };
        match (*self.lists.get()).get_mut(class) {
            Some(list) if *self.held.get() + size <= HELD_BYTES => {
                let free = block.cast::<Free>();
                (*free).next = list.head;
                list.head = free;
                list.held += size;
                *self.held.get() += size;
            }
            _ => self.below.dealloc(block, Self::class_layout(size)),
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = Self::small(layout);
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = Self::small(new_layout);
        match (old, new) {
            (Some((a, _)), Some((b, _))) if a == b => block,
            (None, None) => self.below.realloc(block, layout, new_size),
            _ => {
                let to = self.alloc(new_layout);
                if !to.is_null() {
                    ptr::copy_nonoverlapping(block, to, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                to
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// The allocator below, checking what it is asked: every block it frees
    /// or resizes is one it handed out, with the layout it was asked for.
    #[derive(Default)]
    struct Below {
        live: RefCell<HashMap<usize, Layout>>,
        allocs: RefCell<usize>,
    }

    unsafe impl GlobalAlloc for Below {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            assert!(!p.is_null());
            *self.allocs.borrow_mut() += 1;
            assert!(self.live.borrow_mut().insert(p as usize, layout).is_none());
            p
        }

        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            assert_eq!(self.live.borrow_mut().remove(&(p as usize)), Some(layout));
            System.dealloc(p, layout);
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            assert_eq!(self.live.borrow_mut().remove(&(p as usize)), Some(layout));
            let q = System.realloc(p, layout, new_size);
            assert!(!q.is_null());
            let grown = Layout::from_size_align(new_size, layout.align()).unwrap();
            self.live.borrow_mut().insert(q as usize, grown);
            q
        }
    }

    #[test]
    fn every_small_size_has_a_class_that_holds_it() {
        let mut last = (0, FINE_STEP);
        for size in 1..=SMALL_MAX {
            let (class, class_size) = class_of(size).unwrap();
            assert!(class < CLASSES, "size {size}");
            assert!(
                class_size >= size && class_size - size < COARSE_STEP,
                "size {size}"
            );
            assert_eq!(class_size % FINE_STEP, 0, "size {size}");
            // Classes rise with the size, and one class is one block size.
            assert!(class >= last.0, "size {size}");
            if class == last.0 {
                assert_eq!(class_size, last.1, "size {size}");
            }
            last = (class, class_size);
        }
        assert_eq!(last.0, CLASSES - 1);
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(SMALL_MAX + 1), None);
    }

    /// Blocks the test holds: where, their layout, the byte they are filled with.
    struct Held {
        at: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn filled(h: &Held) -> bool {
        // SAFETY: `h` is a live block of `h.layout.size()` bytes.
        unsafe { std::slice::from_raw_parts(h.at, h.layout.size()) }
            .iter()
            .all(|&b| b == h.fill)
    }

    #[test]
    fn random_allocations_keep_their_bytes_and_give_back_what_was_taken() {
        let a = unsafe { SizeClasses::new(Below::default()) };
        let mut held: Vec<Held> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let sizes = [
            1, 7, 8, 15, 16, 17, 24, 100, 255, 256, 257, 320, 1000, 1024, 1025, 5000,
        ];
        let aligns = [1, 2, 4, 8, 16, 64];
        for step in 0..40_000u32 {
            let fill = (step % 251) as u8;
            match next(4) {
                0 | 1 => {
                    let size = sizes[next(sizes.len() as u64) as usize];
                    let align = aligns[next(aligns.len() as u64) as usize];
                    let layout = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: a non-zero size; the block is freed below.
                    let at = unsafe { a.alloc(layout) };
                    assert!(!at.is_null());
                    assert_eq!(at as usize % align, 0, "alignment of {layout:?}");
                    unsafe { ptr::write_bytes(at, fill, size) };
                    held.push(Held { at, layout, fill });
                }
                2 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    let h = held.swap_remove(i);
                    assert!(filled(&h), "a block changed while held: {:?}", h.layout);
                    unsafe { a.dealloc(h.at, h.layout) };
                }
                3 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    let h = &mut held[i];
                    assert!(filled(h));
                    let size = sizes[next(sizes.len() as u64) as usize];
                    // SAFETY: a live block with its layout; a non-zero size.
                    let at = unsafe { a.realloc(h.at, h.layout, size) };
                    assert!(!at.is_null());
                    let kept = h.layout.size().min(size);
                    let old = h.fill;
                    assert!(unsafe { std::slice::from_raw_parts(at, kept) }
                        .iter()
                        .all(|&b| b == old));
                    h.at = at;
                    h.layout = Layout::from_size_align(size, h.layout.align()).unwrap();
                    h.fill = fill;
                    unsafe { ptr::write_bytes(at, fill, size) };
                }
                _ => {}
            }
            // No two live blocks overlap (checked now and then: quadratic).
            if step % 4_000 == 0 {
                let mut spans: Vec<(usize, usize)> = held
                    .iter()
                    .map(|h| (h.at as usize, h.at as usize + h.layout.size()))
                    .collect();
                spans.sort_unstable();
                assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
            }
            let lists = unsafe { &*a.lists.get() };
            let listed: usize = lists.iter().map(|l| l.held).sum();
            assert!(listed <= HELD_BYTES);
            assert_eq!(listed, unsafe { *a.held.get() });
        }
        for h in held.drain(..) {
            assert!(filled(&h));
            unsafe { a.dealloc(h.at, h.layout) };
        }
        // What is left below is exactly what the lists hold.
        let lists = unsafe { &*a.lists.get() };
        let listed: usize = lists.iter().map(|l| l.held).sum();
        let below: usize = a.below.live.borrow().values().map(Layout::size).sum();
        assert_eq!(listed, below);
    }

    #[test]
    fn a_freed_block_is_the_next_one_of_its_class() {
        let a = unsafe { SizeClasses::new(Below::default()) };
        let l = Layout::from_size_align(40, 8).unwrap();
        unsafe {
            let p = a.alloc(l);
            a.dealloc(p, l);
            // 33..=48 bytes are one class: the same block, not a new one.
            let q = a.alloc(Layout::from_size_align(48, 4).unwrap());
            assert_eq!(p, q);
            assert_eq!(*a.below.allocs.borrow(), 1);
            a.dealloc(q, Layout::from_size_align(48, 4).unwrap());
        }
    }

    #[test]
    fn a_zeroed_block_from_a_list_is_zero() {
        let a = unsafe { SizeClasses::new(Below::default()) };
        let l = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let p = a.alloc(l);
            ptr::write_bytes(p, 0xAA, 64);
            a.dealloc(p, l);
            // The list's link was written into the block: zeroing covers it.
            let q = a.alloc_zeroed(l);
            assert_eq!(p, q);
            assert!(std::slice::from_raw_parts(q, 64).iter().all(|&b| b == 0));
            a.dealloc(q, l);
        }
    }

    #[test]
    fn the_classes_keep_no_more_than_their_budget() {
        let a = unsafe { SizeClasses::new(Below::default()) };
        // One class may take the whole budget (a list's B-tree nodes)...
        let l = Layout::from_size_align(448, 8).unwrap();
        let blocks: Vec<*mut u8> = (0..HELD_BYTES / 448 + 10)
            .map(|_| unsafe { a.alloc(l) })
            .collect();
        for &p in &blocks {
            unsafe { a.dealloc(p, l) };
        }
        let lists = unsafe { &*a.lists.get() };
        let kept = HELD_BYTES / 448 * 448;
        assert_eq!(lists[class_of(448).unwrap().0].held, kept);
        assert_eq!(a.below.live.borrow().len(), HELD_BYTES / 448);
        // ...and then another class keeps only what is left of it.
        let s = Layout::from_size_align(16, 8).unwrap();
        let small: Vec<*mut u8> = (0..HELD_BYTES / 16)
            .map(|_| unsafe { a.alloc(s) })
            .collect();
        for &p in &small {
            unsafe { a.dealloc(p, s) };
        }
        let lists = unsafe { &*a.lists.get() };
        assert_eq!(lists[class_of(16).unwrap().0].held, HELD_BYTES - kept);
        assert_eq!(unsafe { *a.held.get() }, HELD_BYTES);
        let below: usize = a.below.live.borrow().values().map(Layout::size).sum();
        assert_eq!(below, HELD_BYTES);
    }
}
