//! The one way into memory that other processes share, and the one source
//! of atomics for the rest of the library.
//!
//! [`Region`] hands out atomics and byte copies at offsets of a mapping.
//! Built with `--cfg loom`, the atomics are loom's and a `Region` is an
//! in-process model of shared memory ([`Region::model`]), so that the loom
//! models in `protocol/` run the protocol's own functions, not a copy of
//! them (docs/ARCHITECTURE.md, "Model checking").

#[cfg(not(loom))]
mod region;
#[cfg(loom)]
#[path = "region_loom.rs"]
mod region;

#[cfg(not(loom))]
mod memory;
#[cfg(loom)]
#[path = "memory_loom.rs"]
mod memory;

#[cfg(all(test, loom))]
pub(crate) mod loom_model;

pub(crate) use memory::Memory;
pub(crate) use region::Region;

/// The atomics every module uses: `std`'s, or loom's under `cfg(loom)`.
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};
}

/// One turn of a spin-wait: a hint to the processor, or under loom a
/// yield, so that the model lets the thread being waited for run.
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
