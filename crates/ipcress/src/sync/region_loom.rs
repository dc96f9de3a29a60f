//! `Region` under loom: the same interface as `region.rs`, over memory the
//! loom model owns. Words, half-words and bytes are kept apart (the
//! protocol never reads one offset at two widths); bytes are atomics with
//! relaxed ordering, so a reader that is not ordered after a writer's
//! release can see old bytes, and the model's assertions catch it.

use super::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

struct Memory {
    words: Box<[AtomicU64]>,
    halves: Box<[AtomicU32]>,
    bytes: Box<[AtomicU8]>,
}

/// A window of modelled shared memory.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    mem: &'static Memory,
    base: usize,
    len: usize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

impl Region {
    /// Mapped memory is not modelled: loom models build their memory with
    /// [`Region::model`].
    ///
    /// # Safety
    /// None needed; it never returns.
    pub(crate) unsafe fn new(_ptr: *mut u8, _len: usize) -> Region {
        unimplemented!("mapped memory is not modelled under loom")
    }

    /// `len` bytes of zeroed model memory, for one loom execution (it is
    /// leaked: executions are many but small).
    #[cfg_attr(not(test), allow(dead_code))] // the loom models are tests
    pub(crate) fn model(len: usize) -> Region {
        assert!(len.is_multiple_of(8));
        let mem = Box::leak(Box::new(Memory {
            words: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
            halves: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
            bytes: (0..len).map(|_| AtomicU8::new(0)).collect(),
        }));
        Region { mem, base: 0, len }
    }

    pub(crate) fn sub(&self, off: usize, len: usize) -> Region {
        assert!(off + len <= self.len && off.is_multiple_of(8));
        Region {
            mem: self.mem,
            base: self.base + off,
            len,
        }
    }

    fn check(&self, off: usize, len: usize, align: usize) -> usize {
        assert!(
            off + len <= self.len && off.is_multiple_of(align),
            "model memory access out of bounds: {off}+{len} of {}",
            self.len
        );
        self.base + off
    }

    pub(crate) fn u64_at(&self, off: usize) -> &'static AtomicU64 {
        &self.mem.words[self.check(off, 8, 8) / 8]
    }

    pub(crate) fn u32_at(&self, off: usize) -> &'static AtomicU32 {
        &self.mem.halves[self.check(off, 4, 4) / 4]
    }

    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        let at = self.check(off, dst.len(), 1);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.mem.bytes[at + i].load(Relaxed);
        }
    }

    pub(crate) fn read_racy(&self, off: usize, dst: &mut [u8]) {
        self.read(off, dst)
    }

    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        let at = self.check(off, src.len(), 1);
        for (i, s) in src.iter().enumerate() {
            self.mem.bytes[at + i].store(*s, Relaxed);
        }
    }

    /// Borrowing model memory is not modelled: the loom models copy.
    ///
    /// # Safety
    /// None needed; it never returns.
    pub(crate) unsafe fn slice(&self, _off: usize, _len: usize) -> &[u8] {
        unimplemented!("borrowing model memory: the loom models copy")
    }

    /// As [`slice`](Self::slice).
    ///
    /// # Safety
    /// None needed; it never returns.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, _off: usize, _len: usize) -> &mut [u8] {
        unimplemented!("borrowing model memory: the loom models copy")
    }
}
