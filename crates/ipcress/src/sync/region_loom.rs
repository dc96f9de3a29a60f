//! `Region` under loom: the same interface as `region.rs`, over memory the
//! loom model owns. Words, half-words and bytes are kept apart (the
//! protocol never reads one offset at two widths), each made when first
//! touched, so a model of a whole stream costs only what it uses. Bytes are
//! atomics with relaxed ordering, so a reader that is not ordered after a
//! writer can see old bytes, and the model's assertions catch it.

use std::collections::HashMap;

// A loom mutex, so that making a cell happens before every later use of it
// by another thread (loom checks that an atomic's creation is ordered
// before its loads).
use loom::sync::Mutex;

use super::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

struct Memory {
    words: Mutex<HashMap<usize, &'static AtomicU64>>,
    halves: Mutex<HashMap<usize, &'static AtomicU32>>,
    bytes: Mutex<HashMap<usize, &'static AtomicU8>>,
}

/// The atomic at `at` in `map`, made (zero) on first use. Leaked: a model
/// execution is small, and loom makes many of them.
fn cell<T: 'static>(
    map: &Mutex<HashMap<usize, &'static T>>,
    at: usize,
    new: fn() -> T,
) -> &'static T {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(at).or_insert_with(|| Box::leak(Box::new(new())))
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

    /// `len` bytes of zeroed model memory, for one loom execution.
    pub(crate) fn model(len: usize) -> Region {
        assert!(len.is_multiple_of(8));
        let mem = Box::leak(Box::new(Memory {
            words: Mutex::new(HashMap::new()),
            halves: Mutex::new(HashMap::new()),
            bytes: Mutex::new(HashMap::new()),
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
        cell(&self.mem.words, self.check(off, 8, 8), || AtomicU64::new(0))
    }

    pub(crate) fn u32_at(&self, off: usize) -> &'static AtomicU32 {
        cell(&self.mem.halves, self.check(off, 4, 4), || {
            AtomicU32::new(0)
        })
    }

    fn u8_at(&self, at: usize) -> &'static AtomicU8 {
        cell(&self.mem.bytes, at, || AtomicU8::new(0))
    }

    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        let at = self.check(off, dst.len(), 1);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.u8_at(at + i).load(Relaxed);
        }
    }

    pub(crate) fn read_racy(&self, off: usize, dst: &mut [u8]) {
        self.read(off, dst)
    }

    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        let at = self.check(off, src.len(), 1);
        for (i, s) in src.iter().enumerate() {
            self.u8_at(at + i).store(*s, Relaxed);
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
