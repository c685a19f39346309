//! Live heap bytes of this thread, counted by the global allocator
//! (mimalloc, as in the forkswitch binary). A thread-local count, not an
//! atomic one, so that counting costs the timed replay next to nothing.

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// mimalloc, counting.
pub struct Counting;

fn add(n: isize) {
    // `try_with`: a thread being torn down has no count left to keep.
    let _ = LIVE.try_with(|l| l.set(l.get() + n));
}

// SAFETY: every call is passed on to mimalloc unchanged; the count is a
// side effect that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        MiMalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        MiMalloc.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        MiMalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        MiMalloc.realloc(ptr, layout, new_size)
    }
}

/// Bytes this thread has allocated and not freed (requested sizes).
pub fn live() -> isize {
    LIVE.with(|l| l.get())
}
