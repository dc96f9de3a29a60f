//! The steps every writer and reader of a frame header takes, as functions
//! of a [`Region`] and plain values: the claim's stale word, publishing a
//! frame, writing padding, and reading a header back. The producer, the
//! unblocker, recovery and every reader call these, and the loom models
//! (`protocol/loom.rs`) run these same functions (FORMAT.md, "Frames").

use crate::format::*;
use crate::sync::Region;
use crate::sync::atomic::{Ordering::*, fence};

/// The word A that a claim at `off` replaces (its commit compare-and-swaps
/// it away). Loaded after the claim's tail add; the release fence after it
/// orders the head raised before the claim ahead of the claim's bytes
/// (pairs with the fence of an Overwrite reader's validation).
#[inline(always)]
pub(crate) fn stale_word(region: &Region, off: usize) -> u64 {
    let stale = region.u64_at(off).load(Relaxed);
    fence(Release);
    stale
}

/// Publish the frame claimed at `off`: word B (`len` and `check`, the CRC
/// or the position check), then word A by compare-and-swap from `stale`.
/// False when someone else published there first: the unblocker took the
/// claim for a dead one, and the frame is padding now.
#[inline(always)]
pub(crate) fn publish(
    region: &Region,
    off: usize,
    lap: u64,
    len: u32,
    flags: u16,
    check: u32,
    stale: u64,
) -> bool {
    region.u64_at(off + 8).store(word_b(len, check), Relaxed);
    region
        .u64_at(off)
        .compare_exchange(stale, word_a(flags, lap), SeqCst, Relaxed)
        .is_ok()
}

/// Write a padding frame of `len` bytes at `off` (position `pos`, of lap
/// `lap`) over the word A `stale` that a claim found there, unless someone
/// already published a header there. Returns whether this call published
/// it.
///
/// Only a claim's own producer, or whoever pads the claim of a producer
/// found dead, calls this (the unblocker, recovery): nobody else can
/// publish at `off` once word A is seen still `stale`, so word B may be
/// written before the CAS that publishes the padding.
pub(crate) fn write_pad(
    region: &Region,
    off: usize,
    pos: u64,
    len: u64,
    lap: u64,
    stale: u64,
    extra: u16,
) -> bool {
    let flags = F_COMMITTED | F_PADDING | extra;
    let word = region.u64_at(off);
    let a = if len == 8 {
        word_a(flags | F_PAD8, lap)
    } else {
        // Published already (this call lost a race to another unblocker):
        // its word B is not ours to touch.
        if word.load(Acquire) != stale {
            return false;
        }
        let b = word_b((len - HEADER_LEN as u64) as u32, pos_check(pos));
        region.u64_at(off + 8).store(b, Relaxed);
        word_a(flags, lap)
    };
    word.compare_exchange(stale, a, SeqCst, Relaxed).is_ok()
}

/// Read the header at `off` of a segment of `seg_size` bytes (position
/// `pos`, of lap `lap`): word A with acquire ordering, then word B, checked
/// by [`parse`]. Also returns word B as read.
#[inline(always)]
pub(crate) fn read(
    region: &Region,
    off: usize,
    pos: u64,
    lap: u64,
    seg_size: u64,
) -> (Result<Slot, &'static str>, u64) {
    let a = region.u64_at(off).load(Acquire);
    let b = if off + HEADER_LEN <= seg_size as usize {
        region.u64_at(off + 8).load(Relaxed)
    } else {
        0
    };
    (parse(a, b, pos, lap, off as u64, seg_size), b)
}
