//! Memory of this process that the protocol uses as if it were shared: the
//! backing of in-memory streams (`Stream::create_in_memory`), zeroed,
//! page aligned, freed when the last user is gone.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use super::Region;

const ALIGN: usize = 4096;

/// A zeroed, page-aligned block of this process's memory.
pub(crate) struct Memory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the block is only reached through `Region`s, whose accesses are
// atomics or copies under the protocol's rules, as for a mapping.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Memory {
    /// `len` zeroed bytes (`len` a multiple of 8, at least 8).
    pub(crate) fn zeroed(len: usize) -> Memory {
        assert!(len >= 8 && len.is_multiple_of(8));
        let layout = Layout::from_size_align(len, ALIGN).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Memory { ptr, len }
    }

    /// The whole block. The region may be used for as long as this value
    /// lives (its owner, a stream's `Inner`, keeps it).
    pub(crate) fn region(&self) -> Region {
        // SAFETY: the block is `len` bytes, page aligned, readable and
        // writable, and freed only when this value is dropped.
        unsafe { Region::new(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, ALIGN).expect("a valid layout");
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}
