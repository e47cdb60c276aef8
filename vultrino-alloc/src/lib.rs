//! The global allocator of the `vultrino` binary (and of the benchmarks that must match it):
//! mimalloc ([decision 0025](../../docs/decisions/0025-mimalloc-allocator.md)), called the way a C
//! program calls it.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned(size,
//! align)`, even when `align` is the 1, 8 or 16 that `mi_malloc` guarantees anyway. mimalloc's
//! aligned entry point takes its fast path only for a small block (≤ 1 KiB) whose free slot
//! happens to be aligned; anything larger goes through `…_aligned_at_generic`, and a size whose
//! block is not a power of two ≤ 4 KiB (a 3 KiB future, hyper's 8 KiB read buffer) falls through
//! to `…_aligned_at_overalloc`: the block is over-allocated and the pointer adjusted, for an
//! alignment of 8. Measured under callgrind on `GET /proxy/…`: ~11 over-allocations per request
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
/// C `max_align_t`: mimalloc's block sizes of 16 bytes and more are multiples of it, in pages
/// aligned to it). A smaller block is aligned to the largest power of two not above its size,
/// which is why [`plain`] also asks `align <= size`.
const MIN_ALIGN: usize = 16;

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
            // SAFETY: `ptr` came from mimalloc (the `GlobalAlloc` contract); the new block is
            // aligned to `align` by the rule of `plain`, whatever function made the old one.
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
                // SAFETY: test of the allocator itself; every layout has a non-zero size
                // (filtered below), pointers are used only within their size and freed once.
                unsafe {
                    if l.size() == 0 {
                        continue;
                    }
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
}
