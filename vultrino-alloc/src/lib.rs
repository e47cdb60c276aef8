//! The global allocator of the `vultrino` binary (and of the benchmarks that must match it):
//! mimalloc ([decision 0025](../../docs/decisions/0025-mimalloc-allocator.md)), called the way a C
//! program calls it.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned(size,
//! align)`, even when `align` is the 1, 8 or 16 that `mi_malloc` guarantees anyway (on 64-bit
//! targets; see `MIN_ALIGN`). mimalloc's aligned entry point takes its fast path only for a
//! small block (≤ 1 KiB) whose free slot happens to be aligned; anything larger goes through
//! `…_aligned_at_generic`, and a size whose block is not a power of two ≤ 4 KiB (a 3 KiB future,
//! hyper's 8 KiB read buffer) falls through to `…_aligned_at_overalloc`: the block is
//! over-allocated and the pointer adjusted, for an alignment of 8. Measured under callgrind on `GET /proxy/…`: ~11 over-allocations per request
//! ([decision 0131](../../docs/decisions/0131-plain-mimalloc-calls.md)).
//!
//! [`Mimalloc`] calls `mi_malloc`/`mi_zalloc`/`mi_realloc` when the alignment asked for is one
//! every mimalloc block already has — the same rule the standard library's `System` allocator
//! applies to `malloc` — and the aligned functions otherwise.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every mimalloc block of at least this many bytes (`MI_MAX_ALIGN_SIZE`, the
/// C `max_align_t`). mimalloc's public header promises no alignment for `mi_malloc`; this rests
/// on its internals (v3.3.2, the version `libmimalloc-sys` =0.1.49 builds, pinned for this
/// reason), which `alloc.c` asserts (`block_size < MI_MAX_ALIGN_SIZE || aligned`):
/// - on 64-bit targets every request of up to 8 words is rounded to an even number of words
///   (`page-queue.c`, `mi_bin`: a 24-byte request gets a 32-byte block), and every larger size
///   class is an even number of words too (`init.c`);
/// - a page's first block starts at an offset rounded up to 16 (`internal.h`,
///   `mi_page_info_size`; `arena.c`, the page's block start).
///
/// A block under 16 bytes is 8 bytes (8-aligned) or 16, which is why [`plain`] also asks
/// `align <= size`. The exhaustive test below (every layout up to 64 bytes and alignment up to
/// 64, allocated, zeroed and reallocated up and down) is the check to re-run on any update of
/// mimalloc. Not supported: a debug build of mimalloc with guarded pages in precise mode
/// (`MIMALLOC_GUARDED_PRECISE=1`), which places blocks at `page end − size`, whatever the
/// alignment a plain call could expect.
///
/// That argument is for 64-bit targets, the ones it was checked on. Elsewhere (a 32-bit ARM
/// board) mimalloc's rounding of small sizes differs (`MI_ALIGN4W` rounds only up to 4 words),
/// so only the machine word is relied on there: every block is a whole number of words in a
/// word-aligned page, and anything stricter takes the aligned functions.
const MIN_ALIGN: usize = if cfg!(target_pointer_width = "64") {
    16
} else {
    core::mem::size_of::<usize>()
};

/// Whether a block from the plain (unaligned) functions is aligned enough for `layout`.
#[inline(always)]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (see the crate's documentation).
pub struct Mimalloc;

// SAFETY: every pointer returned comes from mimalloc, which returns either null or
// a block of at least `size` bytes aligned as `plain` (or the aligned call) guarantees; `dealloc`
// and `realloc` receive only pointers this allocator returned, which `mi_free`/`mi_realloc*`
// accept whichever mimalloc function allocated them.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            // SAFETY: FFI call with no preconditions; the result is null or a fresh block.
            unsafe { mi::mi_malloc(size) as *mut u8 }
        } else {
            // SAFETY: `align` is a power of two (a `Layout` invariant), as mimalloc requires.
            unsafe { mi::mi_malloc_aligned(size, align) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            // SAFETY: FFI call with no preconditions; the result is null or a zeroed block.
            unsafe { mi::mi_zalloc(size) as *mut u8 }
        } else {
            // SAFETY: `align` is a power of two (a `Layout` invariant).
            unsafe { mi::mi_zalloc_aligned(size, align) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator (the `GlobalAlloc` contract), i.e. by
        // mimalloc; `mi_free` frees aligned and plain blocks alike.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if plain(align, new_size) {
            // SAFETY: `ptr` came from mimalloc (the `GlobalAlloc` contract). `mi_realloc`
            // either keeps the block (then the pointer is the old one, already aligned to
            // `align`) or moves the contents to a plain `mi_malloc(new_size)` block, aligned to
            // `align` by the rule of `plain`; a block allocated off its slot's start for an
            // alignment (only for `align >= 32`) never gets here.
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above; `align` is a power of two.
            unsafe { mi::mi_realloc_aligned(ptr as *mut c_void, new_size, align) as *mut u8 }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use proptest::prelude::*;

    /// Layouts around every boundary that matters: mimalloc's small-block limit (1 KiB), its
    /// natural-alignment limit (4 KiB), sizes under the alignment, and alignments from 1 to a
    /// page.
    fn layout() -> impl Strategy<Value = Layout> {
        (
            0u32..=12,
            prop_oneof![
                1usize..64,
                1000usize..1100,
                3000usize..5000,
                8100usize..8300
            ],
        )
            .prop_filter_map("valid layout", |(shift, size)| {
                Layout::from_size_align(size, 1usize << shift).ok()
            })
    }

    proptest! {
        /// Every block is aligned as asked and holds `size` bytes; `alloc_zeroed` gives zeros;
        /// `realloc` (to a smaller or larger size) keeps the contents up to the smaller size
        /// and is aligned as the layout asks. Blocks are freed through `dealloc`, as the
        /// standard library does, whatever function made them.
        #[test]
        fn blocks_are_aligned_sized_and_kept(layouts in proptest::collection::vec((layout(), any::<bool>(), 0usize..9000), 1..24)) {
            let a = Mimalloc;
            let mut live: Vec<(*mut u8, Layout)> = Vec::new();
            for (i, (l, zeroed, new_size)) in layouts.into_iter().enumerate() {
                // SAFETY: test of the allocator itself; every layout has a non-zero size (the
                // strategy's), pointers are used only within their size and freed once.
                unsafe {
                    let p = if zeroed { a.alloc_zeroed(l) } else { a.alloc(l) };
                    prop_assert!(!p.is_null());
                    prop_assert_eq!(p as usize % l.align(), 0, "{:?}", l);
                    if zeroed {
                        prop_assert!(core::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == 0));
                    }
                    let fill = (i % 251) as u8;
                    core::ptr::write_bytes(p, fill, l.size());
                    if new_size == 0 {
                        live.push((p, l));
                        continue;
                    }
                    let q = a.realloc(p, l, new_size);
                    prop_assert!(!q.is_null());
                    prop_assert_eq!(q as usize % l.align(), 0, "{:?} -> {}", l, new_size);
                    let kept = l.size().min(new_size);
                    prop_assert!(core::slice::from_raw_parts(q, kept).iter().all(|&b| b == fill));
                    core::ptr::write_bytes(q, fill, new_size);
                    live.push((q, Layout::from_size_align_unchecked(new_size, l.align())));
                }
            }
            for (p, l) in live {
                // SAFETY: each block was allocated above with this layout and is freed once.
                unsafe { a.dealloc(p, l) };
            }
        }
    }

    /// Every layout up to 64 bytes with every alignment up to 64, allocated plain and zeroed,
    /// then reallocated to 1 byte, to sizes around the alignment and to three times its size:
    /// each block is aligned as its layout asks and keeps its contents. This is where the plain
    /// rule is thinnest (blocks of 8 bytes; a shrink that moves a block asked for with an
    /// alignment of 16 into a plain one), so it is exhaustive rather than sampled.
    #[test]
    fn every_small_layout_and_every_shrink_below_the_alignment_stays_aligned() {
        let a = Mimalloc;
        for shift in 0..=6u32 {
            let align = 1usize << shift;
            for size in 1..=64usize {
                let Ok(l) = Layout::from_size_align(size, align) else {
                    panic!("layout {size} {align}");
                };
                let sizes = [
                    1,
                    align / 2,
                    align.saturating_sub(1),
                    align,
                    align + 1,
                    3 * size,
                ];
                for (k, new_size) in sizes.into_iter().filter(|&n| n > 0).enumerate() {
                    let mut blocks = Vec::new();
                    for i in 0..8 {
                        // SAFETY: non-zero size; written within its size, freed once below.
                        unsafe {
                            let p = if (i + k) % 2 == 0 {
                                a.alloc(l)
                            } else {
                                a.alloc_zeroed(l)
                            };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % align, 0, "{l:?}");
                            core::ptr::write_bytes(p, 0xA5, size);
                            blocks.push(p);
                        }
                    }
                    for p in blocks {
                        // SAFETY: `p` was allocated above with `l`; `new_size` > 0; the new
                        // block is freed once with its own layout.
                        unsafe {
                            let q = a.realloc(p, l, new_size);
                            assert!(!q.is_null());
                            assert_eq!(q as usize % align, 0, "{l:?} -> {new_size}");
                            let kept = core::slice::from_raw_parts(q, size.min(new_size));
                            assert!(kept.iter().all(|&b| b == 0xA5));
                            a.dealloc(q, Layout::from_size_align_unchecked(new_size, align));
                        }
                    }
                }
            }
        }
    }

    /// A request no allocator can meet (sizes near `isize::MAX`, the largest a `Layout` allows,
    /// and 2^48) gives null from `alloc`, `alloc_zeroed` and `realloc`, never a block smaller than
    /// asked (an overflow in `size + align − 1`), and a failed `realloc` leaves the old block
    /// whole.
    #[test]
    fn impossible_requests_give_null_and_keep_the_old_block() {
        let a = Mimalloc;
        for align in [1usize, 8, 16, 32, 4096, 65536, 131072] {
            let max = isize::MAX as usize - (align - 1);
            for size in [max, max / 2, 1usize << 48] {
                let Ok(l) = Layout::from_size_align(size, align) else {
                    panic!("layout {size} {align}");
                };
                // SAFETY: non-zero sizes; the small block is written within its size and freed
                // once; a null result is never used.
                unsafe {
                    assert!(a.alloc(l).is_null(), "{l:?}");
                    assert!(a.alloc_zeroed(l).is_null(), "{l:?}");
                    let Ok(small) = Layout::from_size_align(24, align) else {
                        panic!("layout 24 {align}");
                    };
                    let p = a.alloc(small);
                    assert!(!p.is_null());
                    core::ptr::write_bytes(p, 0x5A, 24);
                    assert!(a.realloc(p, small, size).is_null(), "{small:?} -> {size}");
                    let old = core::slice::from_raw_parts(p, 24);
                    assert!(old.iter().all(|&b| b == 0x5A));
                    a.dealloc(p, small);
                }
            }
        }
    }
}
