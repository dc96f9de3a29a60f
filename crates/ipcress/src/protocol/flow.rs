//! Flow control: when a producer must wait for consumers or for earlier
//! claims, how it sleeps, and the fragment lock.

use crate::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::claim::*;
use crate::protocol::options::*;
use crate::protocol::shared::*;
use crate::sys::{self, SlotRef};

impl Producer {
    /// Would a claim ending at `end` have to wait for consumers?
    pub(crate) fn must_wait(&mut self, end: u64) -> bool {
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
    pub(crate) fn wait_space(&mut self, end: u64) -> Result<()> {
        if !self.s.is_ring() {
            return Ok(());
        }
        let mut held_since: Option<Instant> = None;
        loop {
            if self.must_wait(end) {
                self.s.removed()?;
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
    pub(crate) fn claim_held_back(&self, end: u64) -> bool {
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
    pub(crate) fn park_for_claim(&mut self, need: u64, h: Holder, since: &mut Option<Instant>) {
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
    pub(crate) fn check_interrupt(&self) -> Result<()> {
        match &self.interrupt {
            Some(f) if f.load(Relaxed) => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }

    pub(crate) fn park_for_space(&mut self, end: u64) {
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

    pub(crate) fn acquire_frag_lock(&mut self) -> Result<()> {
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

    pub(crate) fn release_frag_lock(&mut self) {
        self.s.tail_word().fetch_and(!TAIL_LOCK, AcqRel);
        self.s.frag_lock().store(0, Release);
        self.frag_hold = None;
        self.holds_frag_lock = false;
        self.s.space_seq().fetch_add(1, SeqCst);
        sys::futex_wake_all(self.s.space_seq());
    }

    pub(crate) fn wait_frag_unlock(&mut self) -> Result<()> {
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
pub(crate) fn claim_published(s: &Inner, q: u64) -> bool {
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
