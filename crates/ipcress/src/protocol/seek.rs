//! Finding records by time and by count: where `StartAt::Time` and
//! `StartAt::Last` start, and how many records (and since when) a
//! position has left to read. Headers and time words only; nothing is
//! written (FORMAT.md, "Finding records by time").

use crate::sync::atomic::Ordering::*;

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::shared::*;
use crate::storage::Seg;

/// Visit the committed frames from `from` (a frame boundary) up to `to`,
/// across segments: `f(position, time)` for every frame that starts a
/// message, until it returns false. Returns where the walk stopped: the
/// frame `f` declined, the first frame not committed (or damaged, or gone
/// meanwhile), or `to`.
pub(crate) fn walk(
    s: &Inner,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, Option<u64>) -> bool,
) -> Result<u64> {
    let mut q = from;
    let mut cur: Option<Seg> = None;
    while q < to {
        let idx = s.seg_index(q);
        let seg = match cur.take() {
            Some(g) if g.index == idx => g,
            _ => match s.segment(idx, false)? {
                Some(g) => g,
                None => return Ok(q),
            },
        };
        let Ok(Slot::Frame { flags, total, .. }) = s.read_header(&seg, q).0 else {
            return Ok(q);
        };
        if flags & (F_PADDING | F_ABORTED) == 0 && flags & F_BEGIN != 0 {
            let time = (flags & F_TIMED != 0).then(|| {
                let off = s.seg_offset(q) as usize + HEADER_LEN;
                seg.region.u64_at(off).load(Relaxed)
            });
            if !f(q, time) {
                return Ok(q);
            }
        }
        q += total;
        cur = Some(seg);
    }
    Ok(to)
}

/// The error for a time asked of a stream whose records carry none.
pub(crate) fn untimed(s: &Inner) -> Error {
    Error::InvalidOptions(format!(
        "stream {} has format version {}: its records carry no commit time \
         (streams of version {} do)",
        s.name, s.opts.format_version, VERSION
    ))
}

/// The first record committed at or after `t` (ns since the epoch),
/// walking from `oldest`; `tail` if none is. Whole segments are skipped
/// while the next segment's first message is older than `t`, so a long
/// log is not read through: only one header per skipped segment.
pub(crate) fn find_time(s: &Inner, oldest: u64, tail: u64, t: u64) -> Result<u64> {
    if s.time_len == 0 {
        return Err(untimed(s));
    }
    let mut start = oldest;
    loop {
        let next = (start | (s.seg_size - 1)) + 1;
        if next >= tail {
            break;
        }
        let mut first = None;
        walk(s, next, tail.min(next + s.seg_size), |_, time| {
            first = time;
            false
        })?;
        match first {
            Some(ft) if ft < t => start = next,
            _ => break,
        }
    }
    walk(s, start, tail, |_, time| time.is_none_or(|x| x < t))
}

/// The start of the last `n` messages before `tail` (`oldest` if there
/// are fewer). Segments are counted from the newest back, so only the
/// segments that hold those messages are read.
pub(crate) fn find_last(s: &Inner, oldest: u64, tail: u64, n: u64) -> Result<u64> {
    if n == 0 || tail <= oldest {
        return Ok(tail);
    }
    let mut need = n;
    let mut seg_start = (tail - 1) & !(s.seg_size - 1);
    loop {
        let lo = seg_start.max(oldest);
        let hi = tail.min(seg_start + s.seg_size);
        let mut count = 0u64;
        walk(s, lo, hi, |_, _| {
            count += 1;
            true
        })?;
        if count >= need {
            // The (count - need)th message of this segment, from 0.
            let mut k = count - need;
            return walk(s, lo, hi, |_, _| {
                let go = k != 0;
                k = k.saturating_sub(1);
                go
            });
        }
        need -= count;
        if lo <= oldest {
            return Ok(oldest);
        }
        seg_start -= s.seg_size;
    }
}

/// Messages committed from `from` to the tail (up to the first claim not
/// committed), and the commit time of the first of them: what a consumer
/// at `from` has left to read.
pub(crate) fn backlog(s: &Inner, from: u64) -> Result<(u64, Option<u64>)> {
    let tail = s.tail();
    let head = s.head();
    let from = if from < head {
        crate::protocol::registry::resume_position(s, head)
    } else {
        from
    };
    let (mut n, mut first) = (0u64, None);
    walk(s, from, tail, |_, time| {
        if n == 0 {
            first = time;
        }
        n += 1;
        true
    })?;
    Ok((n, first))
}
