//! Recovery when a stream is opened, and retention.

use crate::sync::atomic::Ordering::*;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{self, *};
use crate::protocol::flow::*;
use crate::protocol::frame;
use crate::protocol::options::*;
use crate::protocol::shared::*;
use crate::protocol::unblock::*;
use crate::storage::{self, Seg};
use crate::sys::{self};

/// Repair a stream that nobody else has open (we hold the exclusive lock).
pub(crate) fn recover(s: &Inner) -> Result<()> {
    // Waiter counts and locks of processes that are gone. Every repair
    // writes only what is wrong: opening a stream that was closed cleanly
    // (`ls`, `stat`, a reader) changes no byte of it.
    for w in [s.data_waiters(), s.space_waiters()] {
        if w.load(Relaxed) != 0 {
            w.store(0, Relaxed);
        }
    }
    for (w, r) in [
        (s.frag_lock(), sys::SlotRef::FragLock),
        (s.meta.u64_at(meta::REG_LOCK), sys::SlotRef::RegLock),
    ] {
        if w.load(Acquire) != 0 && !s.live.is_alive(r) {
            w.store(0, Release);
        }
    }
    if !s.live.is_alive(sys::SlotRef::FragLock) && s.tail_word().load(Acquire) & TAIL_LOCK != 0 {
        s.tail_word().fetch_and(!TAIL_LOCK, AcqRel);
    }
    if s.is_ring() {
        return Ok(());
    }
    recover_log(s)
}

pub(crate) fn segment_indexes(s: &Inner) -> Result<Vec<u64>> {
    let rd = std::fs::read_dir(&s.dir).map_err(|e| Error::from_os(&s.dir, "list", e))?;
    // Positions stay below 2^63: a file named past that is not a segment.
    let max = format::TAIL_LOCK >> s.seg_shift;
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| storage::parse_segment_file_name(&e.file_name().to_string_lossy()))
        .filter(|&i| i < max)
        .collect();
    v.sort_unstable();
    Ok(v)
}

pub(crate) fn recover_log(s: &Inner) -> Result<()> {
    let idx = segment_indexes(s)?;
    let Some(&last) = idx.last() else {
        // Everything was dropped (or never written).
        let t = s.tail();
        if s.head() < t {
            s.head_word().store(t, Release);
        }
        return Ok(());
    };
    let first = idx[0];
    // Short segment files (power loss while growing): pad them with zeros.
    for &i in &idx {
        let path = s.dir.join(storage::segment_file_name(i));
        let f = storage::open_file(&path, true)?;
        let len = f
            .metadata()
            .map_err(|e| Error::from_os(&path, "stat", e))?
            .len();
        if len < s.seg_size {
            tracing::warn!(file = %path.display(), len, "extending a truncated segment");
            sys::reserve_space(&f, s.seg_size, &path)?;
        }
    }
    // A log's head is the start of a segment that still exists; anything
    // else (a damaged word) restarts it at the first segment.
    let head = s.head();
    if head < first << s.seg_shift || head >= (last + 1) << s.seg_shift || s.seg_offset(head) != 0 {
        s.head_word().store(first << s.seg_shift, Release);
    }
    // Walk from the segment before the last one to the last valid frame.
    let start_idx = if idx.contains(&(last.wrapping_sub(1))) && last > first {
        last - 1
    } else {
        last
    };
    let mut pos = (start_idx << s.seg_shift).max(s.head());
    let mut seg = s.segment(start_idx, false)?;
    loop {
        let i = s.seg_index(pos);
        if seg.as_ref().is_none_or(|g| g.index != i) {
            seg = s.segment(i, false)?;
        }
        let Some(g) = &seg else { break };
        match peek_raw(s, g, pos) {
            Ok(Slot::Frame { total, .. }) => pos += total,
            _ => {
                // Not the end yet if a valid frame follows: a producer
                // killed between claim and commit left a hole here, and
                // others committed after it. Nobody has the stream open
                // (we hold the exclusive lock), so every claimer is gone:
                // the hole becomes aborted padding and the walk goes on.
                let stop = (last + 1) << s.seg_shift;
                let Some(next) = next_frame_after(s, pos, stop)? else {
                    break;
                };
                abort_hole(s, pos, next)?;
                pos = next;
            }
        }
    }
    let seg_end = (pos | (s.seg_size - 1)) + 1;
    // Clear what follows the last valid frame so that nothing stale can
    // look committed to a future reader, and drop later segment files.
    if let Some(g) = s.segment(s.seg_index(pos), false)? {
        let off = s.seg_offset(pos) as usize;
        let mut rest = vec![0u8; s.seg_size as usize - off];
        g.region.read(off, &mut rest);
        if rest.iter().any(|&b| b != 0) {
            rest.fill(0);
            g.region.write(off, &rest);
        }
    }
    for &i in idx.iter().filter(|&&i| i > s.seg_index(pos)) {
        let _ = std::fs::remove_file(s.dir.join(storage::segment_file_name(i)));
        // The walk may have mapped it: this process goes on to write
        // there, and must make the file anew, not write into the
        // unlinked one (its records would be lost, and readers would
        // stop at the gap).
        s.storage.forget(i);
    }
    let mut new_tail = pos;
    // A tail word at the last valid frame's end means every claim was
    // committed (a clean close): no position past it was ever written,
    // so none can be reused. Otherwise claims past it may have sealed
    // bytes under their positions' nonces.
    let clean = s.tail_word().load(Acquire) & !TAIL_LOCK == pos;
    if s.opts.encrypted && s.seg_offset(pos) != 0 && !clean {
        // Never reuse a position (it is part of the nonce): skip to the next segment.
        if let Some(g) = s.segment(s.seg_index(pos), false)? {
            let off = s.seg_offset(pos) as usize;
            let st = g.region.u64_at(off).load(Acquire);
            frame::write_pad(&g.region, off, pos, seg_end - pos, s.lap(pos), st, 0);
        }
        new_tail = seg_end;
    }
    let old = s.tail();
    if old != new_tail {
        tracing::warn!(stream = %s.name, old, new = new_tail, "recovered the log tail");
    }
    if s.tail_word().load(Acquire) != new_tail {
        s.tail_word().store(new_tail, Release);
    }
    Ok(())
}

/// The first position after `p` and before `stop` that holds a valid
/// frame header (lap, position and CRC checked), across segment ends.
pub(crate) fn next_frame_after(s: &Inner, p: u64, stop: u64) -> Result<Option<u64>> {
    let mut q = p + 8;
    let mut seg: Option<Seg> = None;
    while q < stop {
        let i = s.seg_index(q);
        if seg.as_ref().is_none_or(|g| g.index != i) {
            seg = s.segment(i, false)?;
        }
        match &seg {
            Some(g) => {
                if let Ok(Slot::Frame { .. }) = peek_raw(s, g, q) {
                    return Ok(Some(q));
                }
                q += 8;
            }
            // A missing segment file: nothing valid in it.
            None => q = (i + 1) << s.seg_shift,
        }
    }
    Ok(None)
}

/// Turn the hole `[p, next)` into aborted padding, one piece per segment.
pub(crate) fn abort_hole(s: &Inner, p: u64, next: u64) -> Result<()> {
    tracing::warn!(stream = %s.name, position = p, len = next - p, "recovery: a claim left by a dead producer is aborted; records after it are kept");
    let mut q = p;
    while q < next {
        let seg_end = (q | (s.seg_size - 1)) + 1;
        let end = next.min(seg_end);
        if let Some(g) = s.segment(s.seg_index(q), false)? {
            let off = s.seg_offset(q) as usize;
            let stale = g.region.u64_at(off).load(Acquire);
            frame::write_pad(&g.region, off, q, end - q, s.lap(q), stale, F_ABORTED);
        }
        q = end;
    }
    Ok(())
}

/// Drop old log segments by the retention rule, when a producer enters
/// segment `current`.
pub(crate) fn apply_retention(s: &Inner, current: u64) -> Result<()> {
    let o = &s.opts;
    if o.retain_bytes == 0 && o.retain_age.is_none() {
        return Ok(());
    }
    let first = s.seg_index(s.head());
    if current <= first + 1 {
        return Ok(());
    }
    let tail = s.tail();
    let floor = if o.policy == Policy::Block {
        s.floor()
    } else {
        None
    };
    let mut drop_to = first;
    for idx in first..current - 1 {
        let seg_end = (idx + 1) << s.seg_shift;
        let by_bytes = o.retain_bytes > 0 && tail.saturating_sub(seg_end) >= o.retain_bytes;
        let by_age = o.retain_age.is_some_and(|age| older_than(s, idx, age));
        if !(by_bytes || by_age) || floor.is_some_and(|f| f < seg_end) {
            break;
        }
        drop_to = idx + 1;
    }
    // A live producer's uncommitted claim keeps its segment (and what
    // follows): the head never passes a grant.
    while drop_to > first {
        match claims_in_way(s, drop_to << s.seg_shift, usize::MAX) {
            InWay::Clear(_) => break,
            InWay::Held(h) => {
                drop_to = match h.position {
                    Some(q) => s.seg_index(q).min(drop_to - 1),
                    None => first,
                }
            }
        }
    }
    if drop_to > first {
        s.head_word().fetch_max(drop_to << s.seg_shift, SeqCst);
        s.storage.forget_below(drop_to);
        for idx in first..drop_to {
            let _ = std::fs::remove_file(s.dir.join(storage::segment_file_name(idx)));
        }
    }
    Ok(())
}

pub(crate) fn older_than(s: &Inner, idx: u64, age: Duration) -> bool {
    let path = s.dir.join(storage::segment_file_name(idx));
    std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}
