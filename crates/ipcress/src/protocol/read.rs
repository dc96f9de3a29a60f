//! A consumer's reading: where it starts, its poll (fast path over
//! faulted-in pages, slow path with validation), lag, holes, and what it
//! holds back from producers.

use crate::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::group::*;
use crate::protocol::options::*;
pub(crate) use crate::protocol::options::{StartAt, Wait};
use crate::protocol::registry::*;
use crate::protocol::shared::*;
use crate::storage::{HeldBytes, Seg};
use crate::sys::{self, SlotRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Durable,
    Subscriber,
    Member { group: usize, tag: u8 },
}

/// What a poll found.
pub(crate) struct Delivered {
    pub(crate) pos: u64,
    pub(crate) flags: u16,
    /// Commit time (ns since the epoch) of the first frame; 0: none
    /// (format 3).
    pub(crate) time: u64,
    pub(crate) body: Body,
}

pub(crate) enum Body {
    /// Bytes borrowed from the mapping (Block policy, plain frame).
    Mapped(HeldBytes),
    /// Decoded bytes in the consumer's buffer.
    Buffer,
}

pub(crate) enum Peek {
    Empty,
    Frame(Frame),
}

/// A committed frame whose header was validated: where it lies and what
/// its header says.
pub(crate) struct Frame {
    pub seg: Seg,
    /// Offset of its header in `seg`.
    pub off: usize,
    /// Stored length (with the time word of a timed frame).
    pub len: u32,
    pub flags: u16,
    /// Bytes to the next frame.
    pub total: u64,
}

impl Frame {
    /// Offset of the record's stored bytes in `seg` (past the time word of
    /// a timed frame), their length, and the commit time (None: untimed).
    #[inline(always)]
    pub(crate) fn body(&self) -> (usize, u32, Option<u64>) {
        let at = self.off + HEADER_LEN;
        if self.flags & F_TIMED != 0 {
            let t = self.seg.region.u64_at(at).load(Relaxed);
            (at + TIME_LEN, self.len - TIME_LEN as u32, Some(t))
        } else {
            (at, self.len, None)
        }
    }
}

/// Reads a stream. Not shared between threads; make one per reader.
///
/// Made by [`Stream::consumer`](crate::Stream::consumer) (durable, named),
/// [`Stream::subscribe`](crate::Stream::subscribe) or
/// [`Stream::group`](crate::Stream::group).
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::Start)?;
/// stream.producer()?.send(b"hi")?;
/// assert_eq!(consumer.recv()?.bytes(), Some(&b"hi"[..]));
/// # Ok::<(), ipcress::Error>(())
/// ```
pub struct Consumer {
    pub(crate) s: Arc<Inner>,
    pub(crate) kind: Kind,
    pub(crate) slot: usize,
    /// Next position to read (own position; unused for members).
    pub(crate) pos: u64,
    pub(crate) seg: Option<Seg>,
    /// Positions `win_lo..win_lo + win_len` lie in `seg` and in pages this
    /// process has faulted in: reads there need no other check.
    pub(crate) win_lo: u64,
    pub(crate) win_len: u64,
    /// The decoded bytes of the last record read through a copy.
    pub(crate) buf: Vec<u8>,
    /// A compressed record's stored bytes, opened in place and then
    /// decompressed into `buf`. Both buffers keep their size from record to
    /// record, so a steady stream neither allocates nor zero-fills.
    pub(crate) zbuf: Vec<u8>,
    pub(crate) wait: Wait,
    pub(crate) stuck: Option<(u64, Instant)>,
    pub(crate) empty_polls: u32,
    pub(crate) last_wake: u64,
    pub(crate) wake_step: u64,
    pub(crate) msgs: u64,
    /// Group members: the run held.
    pub(crate) run: Option<Run>,
    /// Group members: the run budget in records (`RUN_MIN..=RUN_MAX`).
    pub(crate) budget: u32,
    /// Group members: sequence number of the last claim attempt.
    pub(crate) run_seq: u64,
    /// Group members: when we last looked for dead members' runs.
    pub(crate) last_adopt_scan: Option<Instant>,
    pub(crate) last_maintenance: Instant,
    pub(crate) name: String,
    pub(crate) auto_commit: bool,
    /// `poll_fast` applies: a durable consumer or subscriber of a Block
    /// stream.
    pub(crate) fast: bool,
    /// Made at the oldest retained record (or the tail) of a Block stream
    /// and nothing read yet: a head that passes our position (a producer that raised it
    /// before it saw our new slot, FORMAT.md "Registration") moves us to
    /// the oldest retained record silently, as if we had been made then:
    /// nothing was promised to us before. Off the fast path meanwhile.
    pub(crate) fresh: bool,
    /// Our slot's lock byte: the slot is ours while this lives (dropped
    /// after `Drop::drop` has let the slot go).
    pub(crate) _hold: sys::Hold,
    /// The lock byte of a dead member's slot whose message we adopted,
    /// until it is acknowledged and the slot freed.
    pub(crate) adopt_hold: Option<sys::Hold>,
    /// Start of the fragmented message being read, until the next `recv`
    /// (or `commit`) moves on (a member: until its last fragment is read,
    /// its run is acknowledged by the next `recv` anyway): a saved
    /// position names it, not a fragment inside it or its end (a consumer
    /// killed mid-message, or after reading it, gets it again, whole).
    pub(crate) msg_start: Option<u64>,
    /// A read reported damage (`Corrupt`, `Decode`) at our position since
    /// the last record delivered: what `skip_damaged` may skip.
    pub(crate) damaged: bool,
}

/// Spins before parking.
pub(crate) const SPINS: u32 = 200;

/// Empty polls per look for a hole left by a dead producer (a divisor of
/// `SPINS`, so that every spin phase before parking looks at least once).
pub(crate) const HOLE_CHECK_EVERY: u32 = 50;

impl Drop for Consumer {
    fn drop(&mut self) {
        // A member's records not yet handed out, and a message read only in
        // part, go back to the group.
        let unread = self.msg_start;
        self.release_held();
        if matches!(self.kind, Kind::Member { .. }) && self.leave_run(unread) {
            // Our slot now holds a run for the group: it is not freed.
            return;
        }
        let s = &self.s;
        let r = s.cslot(self.slot);
        r.u64_at(cslot::MESSAGES).store(self.msgs, Relaxed);
        match self.kind {
            Kind::Durable => {
                // The position stays; the slot is free to be reopened.
                if self.auto_commit {
                    r.u64_at(cslot::POSITION).store(self.save_point(), Release);
                }
                r.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
                // A closed durable consumer still holds producers back; it
                // belongs to nobody until it is opened again.
                r.u64_at(cslot::OWNER).store(sys::NOBODY, Release);
                s.wake_space();
            }
            Kind::Subscriber | Kind::Member { .. } => s.free_cslot(self.slot),
        }
    }
}

impl Consumer {
    pub(crate) fn new(
        s: Arc<Inner>,
        kind: Kind,
        slot: usize,
        pos: u64,
        name: &str,
        hold: sys::Hold,
    ) -> Consumer {
        let wake_step = if s.is_ring() {
            (s.capacity / 16).max(4096)
        } else {
            s.seg_size / 4
        };
        let fast =
            matches!(kind, Kind::Durable | Kind::Subscriber) && s.opts.policy == Policy::Block;
        Consumer {
            fast,
            s,
            kind,
            slot,
            pos,
            seg: None,
            win_lo: 0,
            win_len: 0,
            buf: Vec::new(),
            zbuf: Vec::new(),
            wait: Wait::Park,
            stuck: None,
            empty_polls: 0,
            last_wake: pos,
            wake_step,
            msgs: 0,
            run: None,
            budget: RUN_MIN,
            run_seq: 0,
            last_adopt_scan: None,
            last_maintenance: Instant::now(),
            name: name.to_string(),
            auto_commit: true,
            _hold: hold,
            adopt_hold: None,
            msg_start: None,
            damaged: false,
            fresh: false,
        }
    }

    /// Block policy only: there a live consumer holds producers back, so
    /// a lag before its first message can only be the registration race.
    /// (With Overwrite, a lag is a lag, reported from the start.)
    pub(crate) fn set_fresh(&mut self) {
        if self.s.opts.policy == Policy::Block {
            self.fresh = true;
            self.fast = false;
        }
    }

    /// How far a fragmented message may run past its start while the saved
    /// position (which holds a ring's producers back) stays at its start:
    /// half the ring, so that the producer writing it never waits for us
    /// (a frame is at most a quarter of a ring). A longer message is
    /// released as it is read and cannot be delivered again whole.
    pub(crate) fn hold_limit(&self) -> u64 {
        if self.s.is_ring() {
            self.s.capacity / 2
        } else {
            u64::MAX
        }
    }

    /// The position to save: ours, or the start of the fragmented message
    /// being read (while it is within `hold_limit`).
    #[inline(always)]
    pub(crate) fn save_point(&self) -> u64 {
        match self.msg_start {
            Some(st) if self.pos - st <= self.hold_limit() => st,
            _ => self.pos,
        }
    }
}

impl Consumer {
    #[inline(always)]
    pub(crate) fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Delivered>> {
        self.release_held();
        self.wait_for(deadline, Consumer::poll)
    }
}

impl Consumer {
    #[inline(always)]
    pub(crate) fn publish(&mut self, p: u64) {
        self.s
            .cslot(self.slot)
            .u64_at(cslot::POSITION)
            .store(p, Release);
        if p.wrapping_sub(self.last_wake) >= self.wake_step {
            self.last_wake = p;
            self.s.wake_space();
        }
    }

    /// Acknowledge the message handed out last (group members) and save
    /// the position (others: auto-commit).
    #[inline(always)]
    pub(crate) fn release_held(&mut self) {
        // The message handed out last is done with, read to its end or not.
        self.msg_start = None;
        if self.auto_commit && matches!(self.kind, Kind::Durable | Kind::Subscriber) {
            let p = self.pos;
            self.publish(p);
        }
    }

    #[inline(always)]
    pub(crate) fn seg_for(&mut self, pos: u64) -> Result<Option<Seg>> {
        if pos.wrapping_sub(self.win_lo) < self.win_len
            && let Some(seg) = &self.seg
        {
            return Ok(Some(seg.clone()));
        }
        self.seg_for_slow(pos)
    }

    /// A new segment, or the next chunk of the ring to fault in.
    #[cold]
    pub(crate) fn seg_for_slow(&mut self, pos: u64) -> Result<Option<Seg>> {
        let idx = self.s.seg_index(pos);
        let seg = match &self.seg {
            Some(seg) if seg.index == idx => Some(seg.clone()),
            _ => self.s.segment(idx, false)?,
        };
        let Some(seg) = seg else {
            self.win_len = 0;
            return Ok(None);
        };
        // Saturating: a damaged saved position may be anything.
        let start = idx << self.s.seg_shift;
        let end = start
            .saturating_add(self.s.seg_size)
            .min(self.s.prefault_ahead(pos, pos.saturating_add(1)));
        self.win_lo = start;
        self.win_len = end - start;
        self.seg = Some(seg.clone());
        Ok(Some(seg))
    }

    /// Count a message handed to the caller.
    #[inline(always)]
    pub(crate) fn delivered(&mut self, pos: u64, flags: u16, time: u64, body: Body) -> Delivered {
        self.msgs += 1;
        Delivered {
            pos,
            flags,
            time,
            body,
        }
    }

    /// The frame at our position and the position: the head must not
    /// have passed it (else `Lagged`); a committed frame there ends any
    /// wait on an uncommitted one.
    pub(crate) fn peek_here(&mut self) -> Result<(u64, Peek)> {
        let p = self.pos;
        if self.s.head_word().load(Acquire) > p {
            return Err(self.lagged(p));
        }
        let peek = self.peek(p)?;
        if let Peek::Frame(_) = peek {
            self.stuck = None;
        }
        Ok((p, peek))
    }

    /// Look at the frame at `p`, validating every field.
    #[inline(always)]
    pub(crate) fn peek(&mut self, p: u64) -> Result<Peek> {
        if !p.is_multiple_of(ALIGN as u64) {
            // Only a damaged slot word (a saved position, a group claim)
            // can name an unaligned position.
            return Err(Error::corrupt(p, "unaligned position"));
        }
        let Some(seg) = self.seg_for(p)? else {
            return Ok(Peek::Empty);
        };
        let off = self.s.seg_offset(p) as usize;
        match self.s.read_header(&seg, p).0 {
            Ok(Slot::Empty) => Ok(Peek::Empty),
            Ok(Slot::Frame { len, flags, total }) => Ok(Peek::Frame(Frame {
                seg,
                off,
                len,
                flags,
                total,
            })),
            Err(_) => {
                // A stale or damaged header seen while the frame is being
                // overwritten is lagging, not damage.
                if self.s.head_word().load(Acquire) > p {
                    return Err(self.lagged(p));
                }
                // Bytes left from an earlier lap can look like a header of
                // this lap with bad fields until the producer writes here:
                // treat it as not written yet. Real damage is reported by
                // the unblocker after `unblock_timeout` (FORMAT.md).
                Ok(Peek::Empty)
            }
        }
    }

    pub(crate) fn lagged(&mut self, p: u64) -> Error {
        let head = self.s.head_word().load(Acquire);
        let resume = resume_position(&self.s, head).max(p);
        if let Kind::Member { group, .. } = self.kind {
            // Our run (if `p` is in it) is gone; the group moves on.
            self.msg_start = None;
            if self.run.is_some() {
                self.pos = self.pos.max(resume);
                self.ack_run();
            }
            let gr = self.s.cslot(group);
            let w = gr.u64_at(cslot::POSITION);
            let cur = w.load(Acquire);
            if split_group(cur).0 <= p {
                let _ = w.compare_exchange(cur, group_word(resume, false, 0), AcqRel, Relaxed);
            }
        } else {
            self.msg_start = None;
            self.pos = resume;
            self.publish(resume);
        }
        Error::Lagged {
            skipped_bytes: resume - p,
        }
    }

    /// Deliver the next message at our position, if committed.
    #[inline(always)]
    pub(crate) fn poll(&mut self) -> Result<Option<Delivered>> {
        if self.fast
            && let Some(d) = self.poll_fast()
        {
            return Ok(Some(d));
        }
        self.poll_slow()
    }

    /// The common case of `poll_slow`, for a durable consumer or subscriber
    /// of a Block stream: a whole, plain, committed message (no checksum,
    /// codec, padding or fragment) in the cached segment. Every header field
    /// is validated as in `peek`; anything else, including an empty slot,
    /// is left to the slow path.
    #[inline(always)]
    pub(crate) fn poll_fast(&mut self) -> Option<Delivered> {
        if cfg!(loom) {
            // Model memory cannot be borrowed (`sync/region_loom.rs`).
            return None;
        }
        let p = self.pos;
        let seg = self.seg.as_ref()?;
        if p.wrapping_sub(self.win_lo) >= self.win_len
            || !p.is_multiple_of(ALIGN as u64)
            || self.s.head_word().load(Acquire) > p
        {
            return None;
        }
        let Ok(Slot::Frame { len, flags, total }) = self.s.read_header(seg, p).0 else {
            return None;
        };
        if flags & !F_TIMED != F_COMMITTED | F_BEGIN | F_END {
            return None;
        }
        let off = self.s.seg_offset(p) as usize + HEADER_LEN;
        let (time, skip) = if flags & F_TIMED != 0 {
            (seg.region.u64_at(off).load(Relaxed), TIME_LEN)
        } else {
            (0, 0)
        };
        let body = Body::Mapped(HeldBytes::new(seg.clone(), off + skip, len as usize - skip));
        self.stuck = None;
        self.pos = p + total;
        self.msgs += 1;
        Some(Delivered {
            pos: p,
            flags,
            time,
            body,
        })
    }

    pub(crate) fn poll_slow(&mut self) -> Result<Option<Delivered>> {
        let got = if self.fresh {
            self.poll_fresh()?
        } else {
            self.poll_slow_inner()?
        };
        if got.is_none() {
            // Nothing here: a stream removed by force ends its readers.
            self.s.removed()?;
        }
        Ok(got)
    }

    /// `poll_slow` until the first message of a consumer made at the
    /// oldest retained record: a lag at birth is no loss (`lagged` has
    /// moved us to what is retained now), we look again.
    #[cold]
    pub(crate) fn poll_fresh(&mut self) -> Result<Option<Delivered>> {
        match self.poll_slow_inner() {
            Err(Error::Lagged { .. }) => Ok(None),
            Ok(Some(d)) => {
                self.fresh = false;
                self.fast = self.s.opts.policy == Policy::Block;
                Ok(Some(d))
            }
            other => other,
        }
    }

    pub(crate) fn poll_slow_inner(&mut self) -> Result<Option<Delivered>> {
        if let Kind::Member { .. } = self.kind {
            return self.poll_group();
        }
        loop {
            let (p, peek) = self.peek_here()?;
            match peek {
                Peek::Empty => {
                    self.check_hole(p)?;
                    return Ok(None);
                }
                Peek::Frame(f) => {
                    let (flags, total) = (f.flags, f.total);
                    if flags & (F_PADDING | F_ABORTED) != 0 || flags & F_BEGIN == 0 {
                        // Padding, an aborted claim, or the rest of a
                        // message whose start we never read.
                        self.pos = p + total;
                        continue;
                    }
                    let (body, time) = self.decode(p, &f)?;
                    self.pos = p + total;
                    if flags & F_END == 0 {
                        self.msg_start = Some(p);
                    }
                    return Ok(Some(self.delivered(p, flags, time, body)));
                }
            }
        }
    }
}

impl Consumer {
    // ---- holes left by dead producers -----------------------------------

    /// Inside a fragmented message, nothing is committed at `p`: is the rest
    /// never coming? True when nothing is claimed at `p` (tail) and no live
    /// process holds the fragment lock, which its writer keeps until the
    /// last fragment is committed (its writer died, or the files are
    /// damaged). The second look at `p` pairs with the writer's release of
    /// the lock after committing its last fragment.
    pub(crate) fn fragments_abandoned(&mut self, p: u64) -> Result<bool> {
        if self.s.tail() > p {
            return Ok(false);
        }
        if self.s.live.is_alive(SlotRef::FragLock) {
            return Ok(false);
        }
        Ok(matches!(self.peek(p)?, Peek::Empty))
    }

    /// Nothing committed at `p`: if it is claimed (tail past it) for longer
    /// than `unblock_timeout` by a producer that is gone, abort the claim.
    /// Called on every empty poll, it looks only every `HOLE_CHECK_EVERY`
    /// calls: the tail is a line every producer writes on every claim, and
    /// a clock read costs more than a poll, so a reader spinning at the
    /// head of the stream would otherwise slow its producers down.
    pub(crate) fn check_hole(&mut self, p: u64) -> Result<()> {
        self.empty_polls = self.empty_polls.wrapping_add(1);
        if !self.empty_polls.is_multiple_of(HOLE_CHECK_EVERY) {
            return Ok(());
        }
        if self.s.tail() <= p {
            self.stuck = None;
            return Ok(());
        }
        match self.stuck {
            Some((sp, since)) if sp == p => {
                if since.elapsed() >= self.s.opts.unblock_timeout {
                    let skipped = crate::protocol::unblock::unblock(&self.s, p)?;
                    self.stuck = Some((p, Instant::now()));
                    if let Some(n) = skipped {
                        return Err(Error::corrupt(
                            p,
                            format!(
                                "no valid frame here and no producer claims it \
                                 (damaged header?); {n} bytes skipped"
                            ),
                        ));
                    }
                }
            }
            _ => self.stuck = Some((p, Instant::now())),
        }
        Ok(())
    }
}
