//! Producers: claim with one atomic add on the tail, write, publish the
//! header with a compare-and-swap (see FORMAT.md, "Claim and commit").

use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::*, fence};
use std::time::{Duration, Instant};

use crate::codec::{self, Compression};
use crate::error::{Error, Result};
use crate::format::{self, *};
use crate::shm::Region;
use crate::storage::Seg;
use crate::stream::{Inner, Policy, Stream};
use crate::sys::{self, SlotRef};

/// Appends records to a stream. One per thread; any number per stream.
pub struct Producer {
    s: Arc<Inner>,
    /// This producer's slot in the meta file (claims, counters).
    pslot: Option<Region>,
    /// Its index (claims of our own are not in our way).
    pslot_index: usize,
    /// The slot's lock byte, held while this producer lives (dropped after
    /// `Drop::drop` has cleared the slot).
    _hold: sys::Hold,
    /// The fragment lock's byte while a fragmented message is written.
    frag_hold: Option<sys::Hold>,
    seg: Option<Seg>,
    /// Flow-control limit: claims may end at or below this position.
    limit: u64,
    generation: u64,
    head_seen: u64,
    /// Fast path: a ring claim ending at or below this position, in the
    /// cached segment, with the generation unchanged and no fragment lock,
    /// needs none of the slow path's checks (0: take the slow path).
    fast_end: u64,
    /// Claims ending at or below this position land in pages this process
    /// has faulted in (`Inner::prefault_ahead`; part of `fast_end`).
    prefault_end: u64,
    /// Flags every frame this producer seals carries: committed, and
    /// encrypted and checksummed as the stream says.
    seal_flags: u16,
    scratch: Vec<u8>,
    holds_frag_lock: bool,
    messages: u64,
    bytes: u64,
    last_retention_seg: u64,
    /// Set from outside (a signal handler): waits that hold no claim give
    /// up with [`Error::Interrupted`].
    interrupt: Option<Arc<AtomicBool>>,
}

/// A claimed, uncommitted frame.
struct Claim {
    pos: u64,
    seg: Seg,
    off: usize,
    total: u64,
    stale_a: u64,
}

impl Claim {
    /// The claim of `total` bytes at `pos`, whose tail add and record are
    /// done: remember the header word it replaces (the commit CAS expects
    /// it), and order the head raised before it ahead of our bytes.
    #[inline(always)]
    fn new(s: &Inner, seg: Seg, pos: u64, total: u64) -> Claim {
        let off = s.seg_offset(pos) as usize;
        let stale_a = seg.region.u64_at(off).load(Relaxed);
        // Pairs with the reader's fence after copying (Overwrite
        // validation): the head raised above is visible before our bytes.
        fence(Release);
        Claim {
            pos,
            seg,
            off,
            total,
            stale_a,
        }
    }
}

impl Stream {
    /// A new producer.
    pub fn producer(&self) -> Result<Producer> {
        let s = self.inner.clone();
        crate::consumer::check_not_inspecting(&s)?;
        if s.opts.encrypted && s.cipher.is_none() {
            return Err(Error::KeyRequired {
                stream: s.name.clone(),
            });
        }
        // Every producer has a slot, held by its lock byte: the unblocker
        // tells a live producer's claim from a dead one's only through it.
        let mut taken = None;
        for i in 0..format::PRODUCER_SLOTS {
            let r = s.pslot(i);
            let w = r.u64_at(pslot::OWNER);
            let cur = w.load(Acquire);
            let free = cur == 0
                || (!s.live.is_alive(SlotRef::Producer(i))
                    && crate::recovery::claim_resolved(&s, r.u64_at(pslot::CLAIM).load(Acquire)));
            if !free {
                continue;
            }
            let Some(hold) = s.live.try_hold(SlotRef::Producer(i))? else {
                continue;
            };
            if w.compare_exchange(cur, sys::my_owner(), AcqRel, Relaxed)
                .is_ok()
            {
                r.u64_at(pslot::CLAIM).store(0, Release);
                taken = Some((r, hold, i));
                break;
            }
        }
        let Some((pslot, hold, pslot_index)) = taken else {
            return Err(Error::SlotsExhausted("producer"));
        };
        let seal_flags = F_COMMITTED
            | if s.cipher.is_some() { F_ENCRYPTED } else { 0 }
            | if s.checksummed() { F_CHECKSUM } else { 0 };
        Ok(Producer {
            s,
            pslot: Some(pslot),
            pslot_index,
            _hold: hold,
            frag_hold: None,
            seg: None,
            limit: 0,
            generation: u64::MAX,
            head_seen: 0,
            fast_end: 0,
            prefault_end: 0,
            seal_flags,
            scratch: Vec::new(),
            holds_frag_lock: false,
            messages: 0,
            bytes: 0,
            last_retention_seg: u64::MAX,
            interrupt: None,
        })
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
    /// The stream this producer writes to.
    pub fn stream_name(&self) -> &str {
        &self.s.name
    }

    /// Largest payload accepted by `send` and `reserve`.
    pub fn max_message_len(&self) -> usize {
        self.s.max_payload()
            - if self.s.cipher.is_some() {
                codec::TAG_LEN
            } else {
                0
            }
    }

    /// Let `flag` interrupt this producer's waits: once it is set (by a
    /// signal handler, say), a `send`, `reserve` or `writer` that waits
    /// for space on a full ring, or for another writer's fragmented
    /// message, returns [`Error::Interrupted`] within a few milliseconds.
    /// Only waits that hold no claim give up, so nothing is left half
    /// written; a claim already taken is finished as usual.
    pub fn interrupt_on(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Append one message, waiting for space under the Block policy.
    /// Returns the record's position.
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<u64> {
        self.send_frame(data, F_BEGIN | F_END, false)
    }

    /// Append one message or give `Error::Full` at once when the ring is
    /// full (Block policy).
    #[inline]
    pub fn try_send(&mut self, data: &[u8]) -> Result<u64> {
        self.send_frame(data, F_BEGIN | F_END, true)
    }

    /// Claim `len` bytes inside shared memory to fill in place; `commit` the
    /// grant to publish it. Dropped without commit, it becomes an aborted
    /// frame that readers skip.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<Grant<'_>> {
        let max = self.max_message_len();
        if len > max {
            return Err(Error::TooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        if self.s.opts.compression != Compression::None {
            // Compression needs the whole record first: fill a buffer.
            return Ok(Grant {
                p: self,
                claim: None,
                len,
                buf: vec![0u8; len],
            });
        }
        let stored = len
            + if self.s.cipher.is_some() {
                codec::TAG_LEN
            } else {
                0
            };
        let claim = self.claim(frame_len(stored as u64), false)?;
        Ok(Grant {
            p: self,
            claim: Some(claim),
            len,
            buf: Vec::new(),
        })
    }

    /// A writer for one message of any size, streamed in fragments. While
    /// it is open, other producers of the stream wait.
    pub fn writer(&mut self) -> Result<MessageWriter<'_>> {
        self.acquire_frag_lock()?;
        let chunk = (self.max_message_len() / 2).clamp(1, 256 << 10);
        Ok(MessageWriter {
            p: self,
            buf: Vec::with_capacity(chunk),
            chunk,
            first: None,
            finished: false,
        })
    }

    /// Flush this producer's counters into its slot (for `stat`).
    fn flush_counters(&mut self) {
        if let Some(r) = self.pslot {
            r.u64_at(pslot::MESSAGES).fetch_add(self.messages, Relaxed);
            r.u64_at(pslot::BYTES).fetch_add(self.bytes, Relaxed);
        }
        self.messages = 0;
        self.bytes = 0;
    }

    #[inline(always)]
    fn send_frame(&mut self, data: &[u8], mut flags: u16, try_only: bool) -> Result<u64> {
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
    fn write_frame(&mut self, payload: &[u8], flags: u16, try_only: bool) -> Result<u64> {
        let enc = self.s.cipher.is_some();
        let stored = payload.len() + if enc { codec::TAG_LEN } else { 0 };
        let max = self.s.max_payload();
        if stored > max {
            return Err(Error::TooLarge {
                len: payload.len() as u64,
                max: (max - if enc { codec::TAG_LEN } else { 0 }) as u64,
            });
        }
        let claim = self.claim(frame_len(stored as u64), try_only)?;
        claim.seg.region.write(claim.off + HEADER_LEN, payload);
        self.finish_claim(claim, stored as u32, flags)
    }

    /// Seal (encrypt, checksum) the payload in place and publish the header.
    #[inline(always)]
    fn finish_claim(&mut self, c: Claim, len: u32, flags: u16) -> Result<u64> {
        let flags = flags | self.seal_flags;
        if let Some(cipher) = &self.s.cipher {
            let body = c.off + HEADER_LEN;
            let aad = aad(len, flags, c.pos);
            // SAFETY: the claim gives this producer exclusive ownership of
            // the frame until it is committed below.
            let buf = unsafe { c.seg.region.slice_mut(body, len as usize) };
            cipher.seal(c.pos, &aad, buf);
        }
        self.publish_claim(c, len, flags)
    }

    /// Checksum the sealed payload, store word B, and publish the header
    /// by CAS on word A (FORMAT.md, "Claim and commit", step 6).
    #[inline(always)]
    fn publish_claim(&mut self, c: Claim, len: u32, flags: u16) -> Result<u64> {
        let body = c.off + HEADER_LEN;
        let crc = if flags & F_CHECKSUM != 0 {
            // SAFETY: the claim gives this producer exclusive ownership of
            // the frame until it is published below.
            let buf = unsafe { c.seg.region.slice(body, len as usize) };
            frame_crc(c.pos, len, flags, buf)
        } else {
            pos_check(c.pos)
        };
        c.seg
            .region
            .u64_at(c.off + 8)
            .store(word_b(len, crc), Relaxed);
        let a = word_a(flags, self.s.lap(c.pos));
        let published = c
            .seg
            .region
            .u64_at(c.off)
            .compare_exchange(c.stale_a, a, SeqCst, Relaxed)
            .is_ok();
        self.clear_claim();
        if !published {
            return Err(Error::Unblocked { position: c.pos });
        }
        self.s.wake_data();
        Ok(c.pos)
    }

    /// Turn a claimed frame into an aborted one (readers skip it).
    fn abort_claim(&mut self, c: Claim) {
        write_pad(
            &c.seg,
            c.off,
            c.pos,
            c.total,
            self.s.lap(c.pos),
            c.stale_a,
            F_ABORTED,
        );
        self.clear_claim();
        self.s.wake_data();
    }

    #[inline(always)]
    fn mark_claiming(&self) {
        if let Some(r) = &self.pslot {
            // Relaxed: the tail add that follows releases it.
            r.u64_at(pslot::CLAIM).store(pslot::CLAIMING, Relaxed);
        }
    }

    #[inline(always)]
    fn record_claim(&self, pos: u64, total: u64) {
        if let Some(r) = &self.pslot {
            r.u64_at(pslot::CLAIM_LEN).store(total, Relaxed);
            r.u64_at(pslot::CLAIM).store(pos + 1, Release);
        }
    }

    #[inline(always)]
    fn clear_claim(&self) {
        if let Some(r) = &self.pslot {
            r.u64_at(pslot::CLAIM).store(0, Release);
        }
    }

    fn seg_for(&mut self, pos: u64) -> Result<Seg> {
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
            crate::recovery::apply_retention(&self.s, idx)?;
        }
        Ok(seg)
    }

    /// Claim `total` bytes for one frame that fits in a segment.
    #[inline(always)]
    fn claim(&mut self, total: u64, try_only: bool) -> Result<Claim> {
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

    fn claim_slow(&mut self, total: u64, try_only: bool) -> Result<Claim> {
        self.fast_end = 0;
        loop {
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
    fn claim_after_add(&mut self, old: u64, total: u64) -> Result<Option<Claim>> {
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

    fn pad(&mut self, pos: u64, len: u64) -> Result<()> {
        let seg = self.seg_for(pos)?;
        let off = self.s.seg_offset(pos) as usize;
        let stale = seg.region.u64_at(off).load(Relaxed);
        write_pad(&seg, off, pos, len, self.s.lap(pos), stale, 0);
        Ok(())
    }

    /// Would a claim ending at `end` have to wait for consumers?
    fn must_wait(&mut self, end: u64) -> bool {
        if !self.s.is_ring() || self.s.opts.policy != Policy::Block {
            return false;
        }
        let generation = self.s.gen_word().load(SeqCst);
        if end <= self.limit && generation == self.generation {
            return false;
        }
        self.generation = generation;
        self.limit = match self.s.floor() {
            Some(f) => f.saturating_add(self.s.capacity),
            None => u64::MAX,
        };
        end > self.limit
    }

    /// Wait until the bytes a claim ending at `end` overwrites are no
    /// longer needed, then raise the head past them.
    fn wait_space(&mut self, end: u64) -> Result<()> {
        if !self.s.is_ring() {
            return Ok(());
        }
        let mut held_since: Option<Instant> = None;
        loop {
            if self.must_wait(end) {
                self.park_for_space(end);
                continue;
            }
            if end > self.s.capacity {
                let need = end - self.s.capacity;
                if need > self.head_seen {
                    self.head_seen = self.s.head_word().load(SeqCst);
                    if need > self.head_seen {
                        // Raise the head a sixteenth of the ring at a time
                        // (never past the floor), not once per message.
                        let mut target = (need + self.s.capacity / 16) & !(ALIGN as u64 - 1);
                        if self.s.opts.policy == Policy::Block && self.limit != u64::MAX {
                            target = target.min(self.limit - self.s.capacity);
                        }
                        let mut target = target.max(need);
                        // The head never passes another producer's live,
                        // uncommitted claim: its grant's bytes are its own
                        // until it commits (FORMAT.md, "Claim and commit").
                        match claims_in_way(&self.s, target, self.pslot_index) {
                            InWay::Clear(low) => target = target.min(low),
                            InWay::Held(h) => {
                                self.park_for_claim(need, h, &mut held_since);
                                continue;
                            }
                        }
                        debug_assert!(target >= need);
                        self.s.head_word().fetch_max(target, SeqCst);
                        self.head_seen = target;
                    }
                }
            }
            // A consumer that registered before our head update is seen
            // here (FORMAT.md, "Registration").
            if self.s.opts.policy == Policy::Block
                && self.s.gen_word().load(SeqCst) != self.generation
            {
                continue;
            }
            return Ok(());
        }
    }

    /// Would a claim ending at `end` have to wait for another producer's
    /// uncommitted claim before it could raise the head? (`try_send`)
    fn claim_held_back(&self, end: u64) -> bool {
        if !self.s.is_ring() || end <= self.s.capacity {
            return false;
        }
        let need = end - self.s.capacity;
        need > self.s.head()
            && matches!(claims_in_way(&self.s, need, self.pslot_index), InWay::Held(h) if h.position.is_none_or(|q| q < need))
    }

    /// Wait until the claim `h` (below `need`) is committed or aborted, or
    /// its producer is gone. Commits and aborts wake the data futex after
    /// their SeqCst header CAS; the waiter count taken first and the
    /// re-check after it make the Dekker pair, so a wake is never lost.
    fn park_for_claim(&mut self, need: u64, h: Holder, since: &mut Option<Instant>) {
        let s = &self.s;
        let started = *since.get_or_insert_with(Instant::now);
        if started.elapsed() >= Duration::from_secs(2) {
            tracing::warn!(
                stream = %s.name,
                pid = h.pid,
                position = ?h.position,
                "a producer waits for another producer's uncommitted claim (its grant's \
                 bytes cannot be reused before it commits)"
            );
            *since = Some(Instant::now());
        }
        s.data_waiters().fetch_add(1, SeqCst);
        let seq = s.data_seq().load(SeqCst);
        if let InWay::Held(h) = claims_in_way(s, need, self.pslot_index)
            && h.position.is_none_or(|q| q < need)
        {
            // A timeout: a holder that dies, or one still marking its
            // claim, wakes nobody.
            sys::futex_wait(s.data_seq(), seq, Some(Duration::from_millis(10)));
        }
        s.data_waiters().fetch_sub(1, SeqCst);
    }

    /// Give up a wait that holds no claim when the interrupt flag is set.
    fn check_interrupt(&self) -> Result<()> {
        match &self.interrupt {
            Some(f) if f.load(Relaxed) => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }

    fn park_for_space(&mut self, end: u64) {
        let s = &self.s;
        s.space_waiters().fetch_add(1, SeqCst);
        let seq = s.space_seq().load(SeqCst);
        // Check liveness: dead subscribers and members stop holding us back.
        let floor = s.floor();
        let limit = floor.map_or(u64::MAX, |f| f.saturating_add(s.capacity));
        if end > limit {
            sys::futex_wait(s.space_seq(), seq, Some(Duration::from_millis(20)));
        }
        s.space_waiters().fetch_sub(1, SeqCst);
        self.limit = 0;
    }

    fn acquire_frag_lock(&mut self) -> Result<()> {
        if self.holds_frag_lock {
            return Err(Error::InvalidOptions(
                "a writer is already open on this producer".into(),
            ));
        }
        loop {
            let seq = self.s.space_seq().load(SeqCst);
            if let Some(hold) = self.s.live.try_hold(SlotRef::FragLock)? {
                // The owner word is for display; the lock byte decides.
                self.s.frag_lock().store(sys::my_owner(), Release);
                self.frag_hold = Some(hold);
                break;
            }
            self.check_interrupt()?;
            self.s.space_waiters().fetch_add(1, SeqCst);
            if self.s.live.is_alive(SlotRef::FragLock) {
                sys::futex_wait(self.s.space_seq(), seq, Some(Duration::from_millis(10)));
            }
            self.s.space_waiters().fetch_sub(1, SeqCst);
        }
        self.s.tail_word().fetch_or(TAIL_LOCK, AcqRel);
        self.holds_frag_lock = true;
        Ok(())
    }

    fn release_frag_lock(&mut self) {
        self.s.tail_word().fetch_and(!TAIL_LOCK, AcqRel);
        self.s.frag_lock().store(0, Release);
        self.frag_hold = None;
        self.holds_frag_lock = false;
        self.s.space_seq().fetch_add(1, SeqCst);
        sys::futex_wake_all(self.s.space_seq());
    }

    fn wait_frag_unlock(&mut self) -> Result<()> {
        loop {
            if self.s.tail_word().load(Acquire) & TAIL_LOCK == 0 {
                return Ok(());
            }
            // A live writer sets the bit only while it holds the lock byte
            // and clears it before letting go: with the byte taken by us,
            // a bit still set was left by a writer that died.
            if !self.s.live.is_alive(SlotRef::FragLock)
                && let Some(_hold) = self.s.live.try_hold(SlotRef::FragLock)?
            {
                if self.s.tail_word().load(Acquire) & TAIL_LOCK != 0 {
                    self.s.tail_word().fetch_and(!TAIL_LOCK, AcqRel);
                    self.s.frag_lock().store(0, Release);
                    self.s.space_seq().fetch_add(1, SeqCst);
                    sys::futex_wake_all(self.s.space_seq());
                }
                return Ok(());
            }
            self.check_interrupt()?;
            let seq = self.s.space_seq().load(SeqCst);
            self.s.space_waiters().fetch_add(1, SeqCst);
            if self.s.tail_word().load(SeqCst) & TAIL_LOCK != 0 {
                sys::futex_wait(self.s.space_seq(), seq, Some(Duration::from_millis(10)));
            }
            self.s.space_waiters().fetch_sub(1, SeqCst);
        }
    }
}

/// A live producer's uncommitted claim in the way of a head raise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holder {
    pub pid: u32,
    /// Its position; None while it is still between marking and recording.
    pub position: Option<u64>,
}

/// What stands between the head and a position.
pub(crate) enum InWay {
    /// Nothing below the bound: the lowest outstanding live claim at or
    /// above it (u64::MAX if none). The head may be raised up to it.
    Clear(u64),
    /// A live producer's claim below the bound (or one whose position is
    /// not recorded yet): the head must not pass it.
    Held(Holder),
}

/// Look in the producer slots (all but `skip`, our own) for live,
/// uncommitted claims that raising the head to `bound` would pass. A claim
/// made after the caller's tail add (or tail load) lies above the tail it
/// saw, so it cannot be below `bound` (≤ that tail); one made before it is
/// visible here: its `CLAIMING` mark is released by its tail add.
///
/// A dead producer's claim is not in the way: its hole is the unblocker's
/// (FORMAT.md, "The unblocker"). Only slots with a recorded claim below
/// `bound` cost more than two loads (a header load, then a liveness check).
pub(crate) fn claims_in_way(s: &Inner, bound: u64, skip: usize) -> InWay {
    let mut low = u64::MAX;
    let mut claiming: Option<Holder> = None;
    for i in 0..PRODUCER_SLOTS {
        if i == skip {
            continue;
        }
        let r = s.pslot(i);
        let claim = r.u64_at(pslot::CLAIM).load(Acquire);
        if claim == 0 {
            continue;
        }
        let owner = r.u64_at(pslot::OWNER).load(Acquire);
        if owner == 0 {
            continue;
        }
        if claim == pslot::CLAIMING {
            if claiming.is_none() && s.live.is_alive(SlotRef::Producer(i)) {
                claiming = Some(Holder {
                    pid: sys::owner_pid(owner),
                    position: None,
                });
            }
            continue;
        }
        let q = claim - 1;
        if q >= low || claim_published(s, q) {
            continue;
        }
        if q < bound && !s.live.is_alive(SlotRef::Producer(i)) {
            continue;
        }
        if q < bound {
            return InWay::Held(Holder {
                pid: sys::owner_pid(owner),
                position: Some(q),
            });
        }
        low = q;
    }
    match claiming {
        Some(h) => InWay::Held(h),
        None => InWay::Clear(low),
    }
}

/// Is the frame a claim recorded at `q` already published (committed or
/// aborted), or out of the retained range (then nothing protects it)?
fn claim_published(s: &Inner, q: u64) -> bool {
    if q < s.head() || !q.is_multiple_of(ALIGN as u64) {
        return true;
    }
    match s.segment(s.seg_index(q), false) {
        Ok(Some(seg)) => {
            let a = seg.region.u64_at(s.seg_offset(q) as usize).load(SeqCst);
            let w = split_a(a);
            w.flags & F_COMMITTED != 0 && w.lap == s.lap(q)
        }
        _ => true,
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
    seg: &Seg,
    off: usize,
    pos: u64,
    len: u64,
    lap: u64,
    stale: u64,
    extra: u16,
) -> bool {
    let flags = F_COMMITTED | F_PADDING | extra;
    let word = seg.region.u64_at(off);
    let a = if len == 8 {
        word_a(flags | F_PAD8, lap)
    } else {
        // Published already (this call lost a race to another unblocker):
        // its word B is not ours to touch.
        if word.load(Acquire) != stale {
            return false;
        }
        let b = word_b((len - HEADER_LEN as u64) as u32, pos_check(pos));
        seg.region.u64_at(off + 8).store(b, Relaxed);
        word_a(flags, lap)
    };
    word.compare_exchange(stale, a, SeqCst, Relaxed).is_ok()
}

/// One stored frame exactly as written: possibly compressed and encrypted.
/// Bridges move these between streams without decoding them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// `F_BEGIN`, `F_END`, `F_COMPRESSED`, `F_ENCRYPTED` (other bits ignored).
    pub flags: u16,
    /// Stream id where the frame was first written (its nonce, if encrypted).
    pub origin: [u8; 16],
    /// Position where the frame was first written.
    pub origin_position: u64,
    /// The stored payload (ciphertext and tag when encrypted).
    pub data: Vec<u8>,
}

impl Producer {
    /// Claim a frame for `f`, to be committed with [`RawGrant::commit`].
    /// Fragments (`F_BEGIN` without `F_END`, continuations) take the
    /// stream's fragment lock until the frame with `F_END`.
    pub fn reserve_raw(&mut self, f: &RawFrame) -> Result<RawGrant<'_>> {
        let flags = f.flags & F_AAD_MASK;
        let foreign = flags & F_ENCRYPTED != 0;
        if foreign && !self.s.opts.encrypted {
            return Err(Error::InvalidOptions(format!(
                "stream {} is not encrypted: it cannot take encrypted frames",
                self.s.name
            )));
        }
        if !foreign && self.s.opts.encrypted {
            return Err(Error::InvalidOptions(format!(
                "stream {} is encrypted: it takes encrypted frames only",
                self.s.name
            )));
        }
        let stored = f.data.len() + if foreign { ORIGIN_LEN } else { 0 };
        if stored > self.s.max_payload() {
            return Err(Error::TooLarge {
                len: stored as u64,
                max: self.s.max_payload() as u64,
            });
        }
        let fragment = flags & (F_BEGIN | F_END) != (F_BEGIN | F_END);
        if fragment && !self.holds_frag_lock {
            self.acquire_frag_lock()?;
        }
        let claim = self.claim(frame_len(stored as u64), false)?;
        let mut body = claim.off + HEADER_LEN;
        if foreign {
            claim.seg.region.write(body, &f.origin);
            claim
                .seg
                .region
                .write(body + 16, &f.origin_position.to_le_bytes());
            body += ORIGIN_LEN;
        }
        claim.seg.region.write(body, &f.data);
        let release = fragment && flags & F_END != 0;
        Ok(RawGrant {
            p: self,
            claim: Some(claim),
            len: stored as u32,
            flags: flags | if foreign { F_FOREIGN } else { 0 },
            release,
        })
    }

    /// Write a raw frame at once. Returns its position.
    pub fn send_raw(&mut self, f: &RawFrame) -> Result<u64> {
        self.reserve_raw(f)?.commit()
    }

    fn commit_raw(&mut self, c: Claim, len: u32, mut flags: u16) -> Result<u64> {
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

/// A claimed raw frame; see [`Producer::reserve_raw`].
#[must_use = "a grant or writer dropped without commit or finish aborts its record"]
pub struct RawGrant<'a> {
    p: &'a mut Producer,
    claim: Option<Claim>,
    len: u32,
    flags: u16,
    release: bool,
}

impl RawGrant<'_> {
    /// Position of the frame.
    pub fn position(&self) -> u64 {
        self.claim.as_ref().map_or(0, |c| c.pos)
    }

    /// Publish the frame.
    pub fn commit(mut self) -> Result<u64> {
        let c = self.claim.take().expect("claim present until commit");
        let r = self.p.commit_raw(c, self.len, self.flags);
        if self.release && self.p.holds_frag_lock {
            self.p.release_frag_lock();
        }
        r
    }
}

impl Drop for RawGrant<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            self.p.abort_claim(c);
        }
    }
}

/// A frame claimed in shared memory, filled in place.
#[must_use = "a grant or writer dropped without commit or finish aborts its record"]
pub struct Grant<'a> {
    p: &'a mut Producer,
    claim: Option<Claim>,
    len: usize,
    /// Staging buffer when the stream compresses.
    buf: Vec<u8>,
}

impl Grant<'_> {
    /// Position the record will have (None when the stream compresses: the
    /// claim happens at commit).
    pub fn position(&self) -> Option<u64> {
        self.claim.as_ref().map(|c| c.pos)
    }

    /// Publish the record. Returns its position.
    #[inline]
    pub fn commit(mut self) -> Result<u64> {
        match self.claim.take() {
            Some(c) => {
                let stored = self.len
                    + if self.p.s.cipher.is_some() {
                        codec::TAG_LEN
                    } else {
                        0
                    };
                let r = self.p.finish_claim(c, stored as u32, F_BEGIN | F_END);
                if r.is_ok() {
                    self.p.messages += 1;
                    self.p.bytes += self.len as u64;
                }
                r
            }
            None => {
                let buf = std::mem::take(&mut self.buf);
                self.p.send_frame(&buf, F_BEGIN | F_END, false)
            }
        }
    }
}

impl Deref for Grant<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.claim {
            // SAFETY: the frame is claimed by this grant and not yet
            // published; nobody else writes or reads it.
            Some(c) => unsafe { c.seg.region.slice(c.off + HEADER_LEN, self.len) },
            None => &self.buf,
        }
    }
}

impl DerefMut for Grant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &self.claim {
            // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
            Some(c) => unsafe { c.seg.region.slice_mut(c.off + HEADER_LEN, self.len) },
            None => &mut self.buf,
        }
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            self.p.abort_claim(c);
        }
    }
}

/// Streams one message of any size into the stream as fragments.
#[must_use = "a grant or writer dropped without commit or finish aborts its record"]
pub struct MessageWriter<'a> {
    p: &'a mut Producer,
    buf: Vec<u8>,
    chunk: usize,
    first: Option<u64>,
    finished: bool,
}

impl MessageWriter<'_> {
    fn emit(&mut self, last: bool, extra: u16) -> Result<()> {
        let mut flags = extra;
        if self.first.is_none() {
            flags |= F_BEGIN;
        }
        if last {
            flags |= F_END;
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.p.send_frame(&buf, flags, false);
        self.buf = buf;
        self.buf.clear();
        let pos = r?;
        if self.first.is_none() {
            self.first = Some(pos);
        }
        Ok(())
    }

    /// Write the last fragment and release the stream to other producers.
    /// Returns the message's position.
    pub fn finish(mut self) -> Result<u64> {
        self.finished = true;
        let r = self.emit(true, 0);
        self.p.release_frag_lock();
        r?;
        Ok(self.first.expect("a fragment was written"))
    }
}

impl io::Write for MessageWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.emit(false, 0).map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MessageWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Close the message as aborted so readers do not wait for more.
            if self.first.is_some() {
                self.buf.clear();
                let _ = self.emit(true, F_ABORTED);
            }
            self.p.release_frag_lock();
        }
    }
}
