//! Typed access to shared memory. Every atomic that lives in a mapping and
//! every byte copied in or out of one goes through [`Region`]; callers work
//! with offsets, never with pointers.

use super::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A window of mapped memory shared with other processes. It does not own the
/// mapping: its creator keeps the mapping alive for as long as the region is
/// used (see `Segment` and `Meta`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Region is an address range; all access to it goes through atomics
// or through the copy methods whose safety contracts are stated below.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, readable and writable for as long as
    /// the region (and any copy of it) is used, and `ptr` must be 8-aligned.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Region {
        debug_assert!((ptr as usize).is_multiple_of(8));
        Region { ptr, len }
    }

    /// A sub-region. Panics if out of bounds (offsets are validated by callers).
    #[inline]
    pub(crate) fn sub(&self, off: usize, len: usize) -> Region {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len) && off.is_multiple_of(8));
        // SAFETY: in bounds of a region that satisfies `new`'s contract, and
        // 8-aligned because `off` is.
        unsafe { Region::new(self.ptr.add(off), len) }
    }

    #[inline(always)]
    fn check(&self, off: usize, len: usize, align: usize) {
        if !(off.checked_add(len).is_some_and(|end| end <= self.len) && off.is_multiple_of(align)) {
            out_of_bounds(off, len, self.len);
        }
    }

    /// The 64-bit shared word at `off`.
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned (checked above); the memory is live
        // for the lifetime of `self` (contract of `new`), and AtomicU64 has
        // the layout of u64, so other processes' atomic accesses agree.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }

    /// The 32-bit shared word at `off`.
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: as in `u64_at`, for a 4-aligned u32.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }
    }

    /// Copy bytes out of a range nobody writes while it is read (a frame
    /// this process holds back under the Block policy, or its own claim).
    /// Bytes another process may be writing are read with
    /// [`read_racy`](Self::read_racy).
    #[inline]
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len(), 1);
        // SAFETY: source in bounds (checked), destination is a distinct
        // exclusive slice; no process writes the source meanwhile (the
        // caller's protocol rule, FORMAT.md "Reading").
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copy bytes out of a range another process may be writing at the same
    /// time (Overwrite policy): every byte is read through an atomic load
    /// (relaxed; 8-byte words where aligned), so the race is one the memory
    /// model allows. The copy may mix old and new bytes: the caller
    /// validates it afterwards (a fence, then the head) and drops it if a
    /// writer may have been there.
    #[inline]
    pub(crate) fn read_racy(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len(), 1);
        let mut i = 0;
        while i < dst.len() && !(off + i).is_multiple_of(8) {
            dst[i] = self.u8_at(off + i).load(Relaxed);
            i += 1;
        }
        while i + 8 <= dst.len() {
            let w = self.u64_at(off + i).load(Relaxed);
            dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
            i += 8;
        }
        while i < dst.len() {
            dst[i] = self.u8_at(off + i).load(Relaxed);
            i += 1;
        }
    }

    /// The shared byte at `off`.
    #[inline(always)]
    fn u8_at(&self, off: usize) -> &AtomicU8 {
        self.check(off, 1, 1);
        // SAFETY: in bounds (checked above); AtomicU8 has the layout of u8
        // and no alignment requirement; the memory is live for the lifetime
        // of `self` (contract of `new`).
        unsafe { AtomicU8::from_ptr(self.ptr.add(off)) }
    }

    /// Copy bytes in, to a range this process has claimed.
    #[inline]
    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        self.check(off, src.len(), 1);
        // SAFETY: destination in bounds (checked); the caller owns the range
        // by the claim protocol, so no other writer touches it.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) }
    }

    /// Borrow bytes that nobody writes while the borrow lives.
    ///
    /// # Safety
    /// No process may write `off..off+len` while the returned slice is alive
    /// (guaranteed for committed frames that this consumer holds back under
    /// the Block policy).
    #[inline]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len, 1);
        // SAFETY: in bounds; no writer by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }

    /// Borrow bytes mutably.
    ///
    /// # Safety
    /// The caller must own `off..off+len` exclusively (a claimed, uncommitted
    /// frame) for as long as the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, off: usize, len: usize) -> &mut [u8] {
        self.check(off, len, 1);
        // SAFETY: in bounds; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }
}

#[cold]
#[inline(never)]
fn out_of_bounds(off: usize, len: usize, region: usize) -> ! {
    panic!("shared memory access out of bounds: {off}+{len} of {region}")
}
