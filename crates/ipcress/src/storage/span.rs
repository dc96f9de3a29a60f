//! A frame's bytes borrowed in place: the one home of the rule that says
//! when a `&[u8]` or `&mut [u8]` may exist over shared memory.
//!
//! Everything else reads and writes the mapping through [`Region`]'s
//! atomics and copies. A slice is different: for as long as it lives, no
//! one else may write the bytes under it, and no other process can be told
//! so. That promise comes from the protocol, not from this module, and it
//! holds in exactly two cases, one type each:
//!
//! - [`ClaimedBytes`]: a frame between its claim (the add on the tail that
//!   made `pos..pos+total` this producer's) and its publication. Flow
//!   control keeps every other producer out of it and no reader borrows an
//!   unpublished frame (ARCHITECTURE.md, "A claim is exclusive until it is
//!   published").
//! - [`HeldBytes`]: a committed frame of a Block-policy stream at or above
//!   the position this consumer (or its group claim) has published: no
//!   producer claims it again until that position moves past it, which
//!   the consumer does only after the message is gone (ARCHITECTURE.md,
//!   "A held frame is not rewritten").
//!
//! Both are minted only by the protocol at the step that establishes the
//! rule (`Claim::new` in `protocol/claim.rs`; `poll_fast` and `decode` in
//! `protocol/`), and they are not `unsafe fn`: the obligation is a
//! cross-process invariant of the protocol, which a caller cannot check
//! where it mints one, and which the loom models and the conformance tests
//! check over the code that runs (docs/DECISIONS.md, "Borrowing frames").
//! Every borrow is bounds-checked against the frame it was minted for.

use crate::storage::Seg;
use crate::sync::Region;

/// The bytes of a frame this producer has claimed and not yet published.
pub(crate) struct ClaimedBytes {
    seg: Seg,
    /// The frame's first byte in the segment.
    start: usize,
    /// One past its last byte.
    end: usize,
}

impl ClaimedBytes {
    /// The frame of `total` bytes at `off` in `seg`, just claimed.
    #[inline(always)]
    pub(crate) fn new(seg: Seg, off: usize, total: usize) -> ClaimedBytes {
        ClaimedBytes {
            seg,
            start: off,
            end: off + total,
        }
    }

    /// Where the frame starts in its segment.
    #[inline(always)]
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// The frame's length in bytes, header included.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// The segment's memory, for the header's atomic words and copies.
    #[inline(always)]
    pub(crate) fn region(&self) -> &Region {
        &self.seg.region
    }

    #[inline(always)]
    fn check(&self, at: usize, len: usize) {
        // `at - start` wraps to a huge value when `at` is before the frame.
        let (rel, room) = (at.wrapping_sub(self.start), self.end - self.start);
        if rel > room || len > room - rel {
            outside_the_claim(at, len, self.start, self.end);
        }
    }

    /// `len` bytes at segment offset `at`, inside the frame.
    #[inline]
    pub(crate) fn bytes(&self, at: usize, len: usize) -> &[u8] {
        self.check(at, len);
        // SAFETY: in the frame this producer claimed and has not published
        // (module docs): no one else writes or reads it while `self` lives.
        unsafe { self.seg.region.slice(at, len) }
    }

    /// As [`bytes`](Self::bytes), to write; `&mut self` makes it unique.
    #[inline]
    pub(crate) fn bytes_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        self.check(at, len);
        // SAFETY: as in `bytes`; `&mut self` rules out a second borrow
        // through this handle, and the claim rules out every other one.
        unsafe { self.seg.region.slice_mut(at, len) }
    }
}

#[cold]
#[inline(never)]
fn outside_the_claim(at: usize, len: usize, start: usize, end: usize) -> ! {
    panic!("borrow {at}+{len} outside the claimed frame {start}..{end}")
}

/// The stored bytes of a committed frame that no producer rewrites while
/// this consumer holds its position at or below it.
pub(crate) struct HeldBytes {
    seg: Seg,
    off: usize,
    len: usize,
}

impl HeldBytes {
    /// `len` bytes at `off` in `seg`: a committed frame's body, in a
    /// Block-policy stream, at or above this consumer's published position.
    #[inline(always)]
    pub(crate) fn new(seg: Seg, off: usize, len: usize) -> HeldBytes {
        HeldBytes { seg, off, len }
    }

    /// The same frame without its first `n` bytes (a time word).
    #[inline(always)]
    pub(crate) fn skip(self, n: usize) -> HeldBytes {
        let n = n.min(self.len);
        HeldBytes {
            seg: self.seg,
            off: self.off + n,
            len: self.len - n,
        }
    }

    /// The bytes.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: a committed frame held back by this consumer's position
        // (module docs): no producer writes it while `self` lives; the
        // region bounds-checks `off..off+len`.
        unsafe { self.seg.region.slice(self.off, self.len) }
    }
}
