//! Producers: claiming space with one add on the tail, writing the frame,
//! and publishing it with the header's word A (FORMAT.md, "Frames").

use crate::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::codec::{self, Compression};
use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::frame;
use crate::protocol::options::*;
use crate::protocol::shared::*;
use crate::storage::{ClaimedBytes, Seg};
use crate::sync::Region;
use crate::sys::{self};

/// Appends records to a stream. One per thread; any number per stream.
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::Start)?;
/// let handles: Vec<_> = (0..2u8)
///     .map(|i| {
///         let stream = stream.clone();
///         std::thread::spawn(move || stream.producer()?.send(&[i]))
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap()?;
/// }
/// let mut got = [consumer.recv_owned()?[0], consumer.recv_owned()?[0]];
/// got.sort();
/// assert_eq!(got, [0, 1]);
/// # Ok::<(), ipcress::Error>(())
/// ```
pub struct Producer {
    pub(crate) s: Arc<Inner>,
    /// This producer's slot in the meta file (claims, counters).
    pub(crate) pslot: Option<Region>,
    /// Its index (claims of our own are not in our way).
    pub(crate) pslot_index: usize,
    /// The slot's lock byte, held while this producer lives (dropped after
    /// `Drop::drop` has cleared the slot).
    pub(crate) _hold: sys::Hold,
    /// The fragment lock's byte while a fragmented message is written.
    pub(crate) frag_hold: Option<sys::Hold>,
    pub(crate) seg: Option<Seg>,
    /// Flow-control limit: claims may end at or below this position.
    pub(crate) limit: u64,
    pub(crate) generation: u64,
    pub(crate) head_seen: u64,
    /// Fast path: a ring claim ending at or below this position, in the
    /// cached segment, with the generation unchanged and no fragment lock,
    /// needs none of the slow path's checks (0: take the slow path).
    pub(crate) fast_end: u64,
    /// Claims ending at or below this position land in pages this process
    /// has faulted in (`Inner::prefault_ahead`; part of `fast_end`).
    pub(crate) prefault_end: u64,
    /// Flags every frame this producer seals carries: committed, and
    /// encrypted and checksummed as the stream says.
    pub(crate) seal_flags: u16,
    pub(crate) scratch: Vec<u8>,
    pub(crate) holds_frag_lock: bool,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) last_retention_seg: u64,
    /// Set from outside (a signal handler): waits that hold no claim give
    /// up with [`Error::Interrupted`].
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
    /// Commit time of this producer's last timed frame (ns): the next is
    /// never earlier, so one producer's records never go back in time.
    pub(crate) last_time: u64,
}

/// A claimed, uncommitted frame.
pub(crate) struct Claim {
    pub(crate) pos: u64,
    /// The frame (where it starts in the segment, how long it is) and its
    /// bytes, this producer's until published.
    pub(crate) frame: ClaimedBytes,
    /// Where the record's bytes go: after the header and, in a timed
    /// stream, the time word C (written at commit).
    pub(crate) body: usize,
    pub(crate) stale_a: u64,
}

impl Claim {
    /// The claim of `total` bytes at `pos`, whose tail add and record are
    /// done: remember the header word it replaces (the commit CAS expects
    /// it), and order the head raised before it ahead of our bytes.
    #[inline(always)]
    fn new(s: &Inner, seg: Seg, pos: u64, total: u64) -> Claim {
        let off = s.seg_offset(pos) as usize;
        let stale_a = frame::stale_word(&seg.region, off);
        Claim {
            pos,
            frame: ClaimedBytes::new(seg, off, total as usize),
            body: off + HEADER_LEN + s.time_len,
            stale_a,
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.holds_frag_lock {
            self.release_frag_lock();
        }
        self.flush_counters();
        if let Some(r) = self.pslot {
            r.u64_at(pslot::CLAIM).store(0, Release);
            r.u64_at(pslot::OWNER).store(0, Release);
        }
    }
}

impl Producer {
    /// Flush this producer's counters into its slot (for `stat`).
    pub(crate) fn flush_counters(&mut self) {
        if let Some(r) = self.pslot {
            r.u64_at(pslot::MESSAGES).fetch_add(self.messages, Relaxed);
            r.u64_at(pslot::BYTES).fetch_add(self.bytes, Relaxed);
        }
        self.messages = 0;
        self.bytes = 0;
    }

    #[inline(always)]
    pub(crate) fn send_frame(
        &mut self,
        data: &[u8],
        mut flags: u16,
        try_only: bool,
    ) -> Result<u64> {
        let r = if self.s.opts.compression == Compression::None {
            self.write_frame(data, flags, try_only)
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            let payload: &[u8] = if codec::compress(self.s.opts.compression, data, &mut scratch) {
                flags |= F_COMPRESSED;
                &scratch
            } else {
                data
            };
            let r = self.write_frame(payload, flags, try_only);
            self.scratch = scratch;
            r
        };
        if r.is_ok() {
            self.messages += 1;
            self.bytes += data.len() as u64;
            if self.messages >= 4096 {
                self.flush_counters();
            }
        }
        r
    }

    /// Claim, copy `payload` in, seal and commit.
    #[inline(always)]
    pub(crate) fn write_frame(
        &mut self,
        payload: &[u8],
        flags: u16,
        try_only: bool,
    ) -> Result<u64> {
        let enc = self.s.cipher.is_some();
        let stored = payload.len() + if enc { codec::TAG_LEN } else { 0 };
        let max = self.s.max_payload();
        if stored > max {
            return Err(Error::TooLarge {
                len: payload.len() as u64,
                max: (max - if enc { codec::TAG_LEN } else { 0 }) as u64,
            });
        }
        let claim = self.claim(self.s.frame_total(stored), try_only)?;
        claim.frame.region().write(claim.body, payload);
        self.finish_claim(claim, stored as u32, flags)
    }

    /// Seal (encrypt, checksum) the payload in place and publish the header.
    #[inline(always)]
    pub(crate) fn finish_claim(&mut self, mut c: Claim, len: u32, flags: u16) -> Result<u64> {
        let flags = flags | self.seal_flags;
        if let Some(cipher) = &self.s.cipher {
            let body = c.body;
            let aad = aad(len, flags, c.pos);
            cipher.seal(c.pos, &aad, c.frame.bytes_mut(body, len as usize));
        }
        self.publish_claim(c, len, flags)
    }

    /// Stamp the commit time (a timed stream: one clock read), checksum
    /// the sealed payload, store word B, and publish the header by CAS on
    /// word A (FORMAT.md, "Claim and commit", step 6). `len` is the
    /// record's stored length, without the time word.
    #[inline(always)]
    pub(crate) fn publish_claim(&mut self, c: Claim, len: u32, flags: u16) -> Result<u64> {
        let body = c.frame.start() + HEADER_LEN;
        let (len, flags) = if self.s.time_len != 0 {
            let t = sys::now_ns().max(self.last_time);
            self.last_time = t;
            c.frame.region().u64_at(body).store(t, Relaxed);
            (len + TIME_LEN as u32, flags | F_TIMED)
        } else {
            (len, flags)
        };
        let crc = if flags & F_CHECKSUM != 0 {
            frame_crc(c.pos, len, flags, c.frame.bytes(body, len as usize))
        } else {
            pos_check(c.pos)
        };
        let lap = self.s.lap(c.pos);
        let published = frame::publish(
            c.frame.region(),
            c.frame.start(),
            lap,
            len,
            flags,
            crc,
            c.stale_a,
        );
        self.clear_claim();
        if !published {
            return Err(Error::Unblocked { position: c.pos });
        }
        self.s.wake_data();
        Ok(c.pos)
    }

    /// Turn a claimed frame into an aborted one (readers skip it).
    pub(crate) fn abort_claim(&mut self, c: Claim) {
        frame::write_pad(
            c.frame.region(),
            c.frame.start(),
            c.pos,
            c.frame.len() as u64,
            self.s.lap(c.pos),
            c.stale_a,
            F_ABORTED,
        );
        self.clear_claim();
        self.s.wake_data();
    }

    #[inline(always)]
    pub(crate) fn mark_claiming(&self) {
        if let Some(r) = &self.pslot {
            // Relaxed: the tail add that follows releases it.
            r.u64_at(pslot::CLAIM).store(pslot::CLAIMING, Relaxed);
        }
    }

    #[inline(always)]
    pub(crate) fn record_claim(&self, pos: u64, total: u64) {
        if let Some(r) = &self.pslot {
            r.u64_at(pslot::CLAIM_LEN).store(total, Relaxed);
            r.u64_at(pslot::CLAIM).store(pos + 1, Release);
        }
    }

    #[inline(always)]
    pub(crate) fn clear_claim(&self) {
        if let Some(r) = &self.pslot {
            r.u64_at(pslot::CLAIM).store(0, Release);
        }
    }

    pub(crate) fn seg_for(&mut self, pos: u64) -> Result<Seg> {
        let idx = self.s.seg_index(pos);
        if let Some(seg) = &self.seg
            && seg.index == idx
        {
            return Ok(seg.clone());
        }
        let seg = self
            .s
            .segment(idx, true)?
            .ok_or_else(|| Error::corrupt(pos, "segment missing"))?;
        self.seg = Some(seg.clone());
        if !self.s.is_ring() && idx != self.last_retention_seg {
            self.last_retention_seg = idx;
            crate::protocol::recovery::apply_retention(&self.s, idx)?;
        }
        Ok(seg)
    }

    /// Claim `total` bytes for one frame that fits in a segment.
    #[inline(always)]
    pub(crate) fn claim(&mut self, total: u64, try_only: bool) -> Result<Claim> {
        debug_assert!(total <= self.s.seg_size && total.is_multiple_of(ALIGN as u64));
        if !try_only && self.fast_end != 0 {
            // The common case of a ring claim: it ends inside the cached
            // segment, below the flow-control limit and the raised head, and
            // no fragmented message holds the tail. The same steps as
            // `claim_slow` (mark, add, record) without the checks these
            // conditions make moot.
            let predicted = self.s.tail_word().load(Relaxed);
            if predicted & TAIL_LOCK == 0 && predicted + total <= self.fast_end {
                self.mark_claiming();
                let old = self.s.tail_word().fetch_add(total, AcqRel);
                let pos = old & !TAIL_LOCK;
                let end = pos + total;
                if old & TAIL_LOCK == 0
                    && end <= self.fast_end
                    && self.s.gen_word().load(SeqCst) == self.generation
                    && let Some(seg) = &self.seg
                {
                    self.record_claim(pos, total);
                    return Ok(Claim::new(&self.s, seg.clone(), pos, total));
                }
                // Another producer moved the tail or a consumer registered:
                // the claim is ours, finish it the careful way.
                self.fast_end = 0;
                if let Some(c) = self.claim_after_add(old, total)? {
                    return Ok(c);
                }
            }
        }
        self.claim_slow(total, try_only)
    }

    pub(crate) fn claim_slow(&mut self, total: u64, try_only: bool) -> Result<Claim> {
        self.fast_end = 0;
        loop {
            // A stream removed by force ends its producers (`rm --force`
            // bumps the generation, so fast claims come here).
            self.s.removed()?;
            if try_only
                && (self.must_wait(self.s.tail() + total)
                    || self.claim_held_back(self.s.tail() + total))
            {
                return Err(Error::Full);
            }
            // A full ring is waited out before the tail add, while this
            // producer holds nothing: the wait can be interrupted, and a
            // process that dies in it leaves no hole. (A claim can still
            // find the ring full after its add, when another producer
            // took the space first; it waits there, as its bytes are
            // taken, until the space is free.)
            while self.must_wait(self.s.tail() + total) {
                self.check_interrupt()?;
                self.s.removed()?;
                self.park_for_space(self.s.tail() + total);
            }
            let t = self.s.tail();
            if !self.s.is_ring() && t + total < TAIL_LOCK {
                // Log: create the segment(s) this claim lands in before
                // taking a position, so that a full file system is reported
                // here (Error::NoSpace at roll time) and leaves no hole.
                self.seg_for(t + total - 1)?;
                self.seg_for(t)?;
            }
            // Until the claim is recorded, a hole at the tail may be ours:
            // the unblocker neither aborts it while we live nor reports it
            // as unexplained if we die here (FORMAT.md, "The unblocker").
            self.mark_claiming();
            let old = self.s.tail_word().fetch_add(total, AcqRel);
            if let Some(c) = self.claim_after_add(old, total)? {
                return Ok(c);
            }
        }
    }

    /// Finish a claim whose tail add returned `old`: record it, wait for
    /// space, and hand it out; or pad it away and give `None` (claim again)
    /// when it crosses a segment end or a fragmented message holds the tail.
    pub(crate) fn claim_after_add(&mut self, old: u64, total: u64) -> Result<Option<Claim>> {
        let seg_size = self.s.seg_size;
        let pos = old & !TAIL_LOCK;
        if pos.checked_add(total).is_none_or(|e| e >= TAIL_LOCK) {
            self.clear_claim();
            return Err(Error::corrupt(pos, "tail position overflow"));
        }
        self.record_claim(pos, total);
        let seg_end = (pos | (seg_size - 1)) + 1;
        let end = pos + total;
        if end > seg_end {
            // Crosses a segment end: pad both pieces and claim again.
            let r = self
                .wait_space(end)
                .and_then(|()| self.pad(pos, seg_end - pos))
                .and_then(|()| self.pad(seg_end, end - seg_end));
            // On an error too: a live producer's record would keep
            // readers waiting on the hole forever.
            self.clear_claim();
            r?;
            self.s.wake_data();
            return Ok(None);
        }
        self.wait_space(end)?;
        if old & TAIL_LOCK != 0 && !self.holds_frag_lock {
            // A fragmented message is being written: step aside.
            let r = self.pad(pos, total);
            self.clear_claim();
            r?;
            self.s.wake_data();
            self.wait_frag_unlock()?;
            return Ok(None);
        }
        let seg = match self.seg_for(pos) {
            Ok(seg) => seg,
            Err(e) => {
                self.clear_claim();
                return Err(e);
            }
        };
        if end > self.prefault_end {
            // The first lap through this part of the ring in this process:
            // fault the pages in ahead of us, a chunk at a time.
            self.prefault_end = self.s.prefault_ahead(pos, end);
        }
        let claim = Claim::new(&self.s, seg, pos, total);
        if self.s.is_ring() && !self.holds_frag_lock {
            // What the next claims may take without the checks above.
            let mut fast_end = seg_end
                .min(self.head_seen.saturating_add(self.s.capacity))
                .min(self.prefault_end);
            if self.s.opts.policy == Policy::Block {
                fast_end = fast_end.min(self.limit);
            }
            self.fast_end = fast_end;
        }
        Ok(Some(claim))
    }

    pub(crate) fn pad(&mut self, pos: u64, len: u64) -> Result<()> {
        let seg = self.seg_for(pos)?;
        let off = self.s.seg_offset(pos) as usize;
        let stale = seg.region.u64_at(off).load(Relaxed);
        frame::write_pad(&seg.region, off, pos, len, self.s.lap(pos), stale, 0);
        Ok(())
    }
}

impl Producer {
    pub(crate) fn commit_raw(&mut self, c: Claim, len: u32, mut flags: u16) -> Result<u64> {
        flags |= F_COMMITTED;
        if self.s.checksummed() {
            flags |= F_CHECKSUM;
        }
        let pos = self.publish_claim(c, len, flags)?;
        self.messages += 1;
        self.bytes += len as u64;
        Ok(pos)
    }
}

/// The associated data bound into an encrypted record: length and flags as
/// in the header, then the position.
pub(crate) fn aad(len: u32, flags: u16, pos: u64) -> [u8; 14] {
    let mut a = [0u8; 14];
    a[..6].copy_from_slice(&header_bytes(len, flags & F_AAD_MASK));
    a[6..].copy_from_slice(&pos.to_le_bytes());
    a
}
