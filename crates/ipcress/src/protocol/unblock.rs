//! The unblocker: a claim whose producer died is completed as padding so
//! that readers and producers move past it.

use crate::sync::atomic::Ordering::*;

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::flow::*;
use crate::protocol::frame;
use crate::protocol::options::*;
use crate::protocol::shared::*;
use crate::storage::Seg;
use crate::sys::{self};

/// Abort the claim at `p` if its producer is gone. Called by a reader that
/// has waited `unblock_timeout` on an uncommitted frame with the tail past it.
/// Returns the bytes skipped when no dead producer's record explained the
/// hole (a damaged header, or a producer that had no slot): the reader
/// reports that as corruption instead of skipping silently.
pub(crate) fn unblock(s: &Inner, p: u64) -> Result<Option<u64>> {
    // One unblocker at a time: two that padded the same hole with
    // different lengths (one saw the dead claim's record, the other found
    // it cleared) could leave the length of one in word B under the word A
    // of the other. Whoever is at it now will have padded this hole (or
    // found it live) by the time this reader asks again.
    let Some(_one) = s.live.try_hold(sys::SlotRef::UnblockLock)? else {
        return Ok(None);
    };
    let (reported, mut next) = unblock_one(s, p, false)?;
    // Claims of producers that died one after another (say, all killed
    // while waiting for space) are aborted together, not one
    // `unblock_timeout` each: a dead producer's claim cannot be committed.
    for _ in 0..PRODUCER_SLOTS {
        let Some(q) = next else { break };
        next = unblock_one(s, q, true)?.1;
    }
    Ok(reported)
}

/// One hole: returns what `unblock` reports, and the position after it
/// when it was a dead producer's whole recorded claim (the next hole may
/// be another one). `dead_claim_only`: do nothing unless a dead producer's
/// record starts exactly at `p`.
pub(crate) fn unblock_one(
    s: &Inner,
    p: u64,
    dead_claim_only: bool,
) -> Result<(Option<u64>, Option<u64>)> {
    let Some(seg) = s.segment(s.seg_index(p), false)? else {
        return Ok((None, None));
    };
    let off = s.seg_offset(p) as usize;
    let stale = seg.region.u64_at(off).load(Acquire);
    if let Ok(Slot::Frame { .. }) = peek_raw(s, &seg, p) {
        return Ok((None, None));
    }
    let tail = s.tail();
    if tail <= p {
        return Ok((None, None));
    }
    // Never write where no frame can start: `p` must be reached by the
    // frame chain of its segment (readers get there by walking from a
    // validated position; this keeps a damaged saved position from making
    // the unblocker write a header over a committed record). A segment the
    // head has begun to pass cannot be walked from its start any more;
    // there the reader's own walk stands.
    let seg_start = p & !(s.seg_size - 1);
    if !dead_claim_only && seg_start >= s.head() {
        match walk_to(s, &seg, p) {
            Walk::Exact => {}
            Walk::Inside { prev, next } => {
                return Err(Error::corrupt(
                    p,
                    format!("position inside the record [{prev}, {next}): nothing to unblock here"),
                ));
            }
            // An earlier hole: that one comes first.
            Walk::Uncommitted(_) => return Ok((None, None)),
            // A reader moved past damage to the next header it could
            // check (`skip_damaged`): that header is its proof.
            Walk::Damaged(..) => {}
        }
    }
    // The claim covering `p`: its own (`cp == p`), or one that crossed a
    // segment end and died between padding its two pieces.
    let mut exact: Option<(usize, u64, u64)> = None;
    // Dead producers that died claiming, before recording the position.
    let mut claiming: Vec<usize> = Vec::new();
    let mut limit = tail;
    for i in 0..PRODUCER_SLOTS {
        let r = s.pslot(i);
        let owner = r.u64_at(pslot::OWNER).load(Acquire);
        let claim = r.u64_at(pslot::CLAIM).load(Acquire);
        if owner == 0 || claim == 0 {
            continue;
        }
        let alive = s.live.is_alive(sys::SlotRef::Producer(i));
        if claim == pslot::CLAIMING {
            if alive {
                // It may be about to record this very position.
                return Ok((None, None));
            }
            claiming.push(i);
            continue;
        }
        let cp = claim - 1;
        let len = r.u64_at(pslot::CLAIM_LEN).load(Acquire);
        if cp == p || (cp < p && p - cp < len.min(s.seg_size)) {
            if alive {
                return Ok((None, None));
            }
            exact = Some((i, cp, len));
        } else if cp > p {
            // Claims do not overlap: a hole at `p` ends at or before the
            // next recorded claim, whether its producer lives or not (a
            // dead one's hole is aborted, and its record cleared, on its own).
            limit = limit.min(cp);
        }
    }
    if dead_claim_only && !matches!(exact, Some((_, cp, _)) if cp == p) {
        return Ok((None, None));
    }
    let seg_end = (p | (s.seg_size - 1)) + 1;
    let end = match exact {
        Some((_, cp, len)) if len >= 8 && len <= s.seg_size && len % 8 == 0 => cp + len,
        // Find the next valid frame: the hole ends there.
        _ => next_valid(s, &seg, p, limit.min(seg_end)),
    };
    if end <= p {
        return Ok((None, None));
    }
    if s.is_ring() && end > s.capacity {
        // The padding overwrites the previous lap there. Like a producer
        // (FORMAT.md, claim steps 3 and 4): not while a holding consumer
        // still needs those bytes (the claimer may have died waiting for
        // space), and only after raising the head.
        let need = end - s.capacity;
        if s.opts.policy == Policy::Block && s.floor().is_some_and(|f| f < need) {
            return Ok((None, None));
        }
        // Nor past a live producer's uncommitted claim (its grant).
        if let InWay::Held(_) = claims_in_way(s, need, usize::MAX) {
            return Ok((None, None));
        }
        s.head_word().fetch_max(need, SeqCst);
    }
    if !frame::write_pad(
        &seg.region,
        off,
        p,
        end.min(seg_end) - p,
        s.lap(p),
        stale,
        F_ABORTED,
    ) {
        // Another reader unblocking the same hole (or the claimer) got
        // there first: nothing to abort, nothing to report.
        return Ok((None, None));
    }
    tracing::warn!(stream = %s.name, position = p, len = end - p, "aborted a claim left by a dead producer");
    if end > seg_end
        && let Some(next) = s.segment(s.seg_index(seg_end), true)?
    {
        let st = next.region.u64_at(0).load(Acquire);
        frame::write_pad(
            &next.region,
            0,
            seg_end,
            end - seg_end,
            s.lap(seg_end),
            st,
            F_ABORTED,
        );
    }
    if let Some((i, cp, _)) = exact {
        // A reader that started just after a segment end padded the
        // second piece only: the record stays until the first is done too.
        let whole = cp == p
            || s.segment(s.seg_index(cp), false)?
                .is_some_and(|g| matches!(peek_raw(s, &g, cp), Ok(Slot::Frame { .. })));
        if whole {
            let _ = s
                .pslot(i)
                .u64_at(pslot::CLAIM)
                .compare_exchange(cp + 1, 0, AcqRel, Relaxed);
            s.wake_data();
            return Ok((None, (end < tail).then_some(end)));
        }
    } else if !claiming.is_empty() {
        // Explained by a producer that died claiming: one hole per record.
        let _ = s.pslot(claiming[0]).u64_at(pslot::CLAIM).compare_exchange(
            pslot::CLAIMING,
            0,
            AcqRel,
            Relaxed,
        );
        s.wake_data();
        return Ok((None, None));
    }
    s.wake_data();
    // With every producer slot taken, some producer may have had none: the
    // hole cannot be told from damage, so it is not reported.
    let slots_full =
        (0..PRODUCER_SLOTS).all(|i| s.pslot(i).u64_at(pslot::OWNER).load(Acquire) != 0);
    Ok((
        if exact.is_some() || slots_full {
            None
        } else {
            Some(end - p)
        },
        None,
    ))
}

/// Where a walk over the frame chain of `p`'s segment, from its start,
/// ended up.
pub(crate) enum Walk {
    /// On `p`: it is a frame boundary.
    Exact,
    /// `p` lies inside the frame `[prev, next)`.
    Inside { prev: u64, next: u64 },
    /// The frame at this position (before `p`) is not committed.
    Uncommitted(u64),
    /// The header at this position (before `p`) is damaged.
    Damaged(u64, &'static str),
}

/// Walk the headers of `seg` (the segment of `p`) from its start to `p`.
/// Every segment starts with a frame, so this proves (or disproves) that
/// `p` is a frame boundary. Reads headers only.
pub(crate) fn walk_to(s: &Inner, seg: &Seg, p: u64) -> Walk {
    let mut q = p & !(s.seg_size - 1);
    let mut prev = q;
    while q < p {
        match s.read_header(seg, q).0 {
            Ok(Slot::Frame { total, .. }) => {
                prev = q;
                q += total;
            }
            Ok(Slot::Empty) => return Walk::Uncommitted(q),
            Err(e) => return Walk::Damaged(q, e),
        }
    }
    if q == p {
        Walk::Exact
    } else {
        Walk::Inside { prev, next: q }
    }
}

/// Whether a dead producer's recorded claim (`CLAIM` word) needs nothing
/// more from its slot: none, or its frame is published (or already dropped
/// from the stream). A producer that died `CLAIMING` may have left a hole
/// of unknown position: its slot stays until the unblocker finds a hole
/// that it explains (and clears it), else that hole would be reported as
/// damage. (One that died before its tail add keeps its slot: rare, and
/// bounded by the slot count.)
pub(crate) fn claim_resolved(s: &Inner, claim: u64) -> bool {
    if claim == pslot::CLAIMING {
        return false;
    }
    if claim == 0 {
        return true;
    }
    let p = claim - 1;
    p >= s.tail() || claim_published(s, p)
}

/// The first position after `p` and before `stop` that holds a valid frame
/// header (lap, position and CRC checked), or `stop`.
pub(crate) fn next_valid(s: &Inner, seg: &Seg, p: u64, stop: u64) -> u64 {
    let mut q = p + 8;
    while q < stop {
        if let Ok(Slot::Frame { .. }) = peek_raw(s, seg, q) {
            return q;
        }
        q += 8;
    }
    stop.max(p)
}

/// Parse the header at `p` in `seg`, also checking the CRC of committed
/// data frames (used where a false positive would be harmful).
pub(crate) fn peek_raw(s: &Inner, seg: &Seg, p: u64) -> Result<Slot, &'static str> {
    let off = s.seg_offset(p) as usize;
    let (slot, b) = s.read_header(seg, p);
    let slot = slot?;
    if let Slot::Frame { len, flags, total } = slot
        && flags & F_CHECKSUM != 0
        && total > 8
    {
        let mut buf = vec![0u8; len as usize];
        // The frame may be under a producer's pen (Overwrite, or a hole's
        // neighbour): atomic loads.
        seg.region.read_racy(off + HEADER_LEN, &mut buf);
        if frame_crc(p, len, flags, &buf) != b_check(b) {
            return Err("checksum mismatch");
        }
    }
    Ok(slot)
}
