//! Work-sharing groups: runs of records claimed with one CAS on the group
//! word, acknowledged as a unit, adopted from dead members (FORMAT.md,
//! "Groups").

use crate::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::read::*;
use crate::protocol::run;
use crate::sync::Region;
use crate::sys::{self, SlotRef};

/// The run of records a group member holds: claimed with one CAS on the
/// group word, delivered frame by frame from `Consumer::pos`, and
/// acknowledged as a unit (FORMAT.md, "Groups").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// The slot the run is recorded in: ours, or a dead member's we adopted.
    pub(crate) slot: usize,
    pub(crate) seq: u64,
    /// `RUN_BEGIN` as last stored (what holds producers back).
    pub(crate) begin: u64,
    /// End of the claimed positions (a fragmented message that straddles
    /// it is delivered whole all the same).
    pub(crate) end: u64,
}

/// Smallest and largest number of records in a run; the budget doubles
/// when a run fills it (the stream is fast) and halves when a run stops at
/// the newest committed record (it is slow), so that runs stay small, and
/// latency low, at low rates.
pub(crate) const RUN_MIN: u32 = 8;
pub(crate) const RUN_MAX: u32 = 1024;
/// Largest run in bytes (and at most an eighth of a ring).
pub(crate) const RUN_BYTES: u64 = 256 << 10;

impl Consumer {
    // ---- groups -------------------------------------------------------

    /// A group member's poll: deliver the next message of the run it
    /// holds; when the run is done, acknowledge it and claim the next.
    pub(crate) fn poll_group(&mut self) -> Result<Option<Delivered>> {
        let Kind::Member { group, .. } = self.kind else {
            unreachable!("poll_group on a non-member")
        };
        for _ in 0..64 {
            if self.run.is_none() && !self.adopt_orphans(group)? && !self.claim_run(group)? {
                return Ok(None);
            }
            match self.next_in_run(group)? {
                Some(d) => return Ok(Some(d)),
                // Waiting for the rest of a fragmented message we skip.
                None if self.run.is_some() => return Ok(None),
                // The run was empty (padding only) or done: claim again.
                None => continue,
            }
        }
        Ok(None)
    }

    /// Is the group word open for a fragmented message of run `r`?
    pub(crate) fn open_ours(&self, r: Run) -> bool {
        let Kind::Member { group, .. } = self.kind else {
            return false;
        };
        let (_, open, t) = split_group(self.s.cslot(group).u64_at(cslot::POSITION).load(Acquire));
        open && t as usize == r.slot + 1
    }

    /// The next message of our run, if any. `Ok(None)` with the run gone:
    /// the run is acknowledged.
    pub(crate) fn next_in_run(&mut self, group: usize) -> Result<Option<Delivered>> {
        let gr = self.s.cslot(group);
        let gw = gr.u64_at(cslot::POSITION);
        loop {
            let Some(r) = self.run else {
                return Ok(None);
            };
            let p = self.pos;
            let mut inside = p < r.end;
            if !inside {
                // Past the claimed end: only the rest of a fragmented
                // message we started (read by nobody, or skipped) is ours.
                let (next, open, t) = split_group(gw.load(Acquire));
                if !(open && t as usize == r.slot + 1) {
                    self.ack_run();
                    return Ok(None);
                }
                if next > p {
                    // Extended by our slot's earlier owner.
                    self.run = Some(Run { end: next, ..r });
                    inside = true;
                }
            }
            if self.s.head_word().load(Acquire) > p {
                return Err(self.lagged(p));
            }
            let Peek::Frame(f) = self.peek(p)? else {
                if inside {
                    // Every frame of a claimed run was committed.
                    self.ack_run();
                    return Err(Error::corrupt(p, "a claimed record is not there any more"));
                }
                self.check_hole(p)?;
                if self.fragments_abandoned(p)? {
                    self.close_open(p);
                }
                return Ok(None);
            };
            self.stuck = None;
            let (flags, total) = (f.flags, f.total);
            if !inside {
                // The rest of an open message, skipped.
                self.fragment_read(p, total, flags);
                if flags & F_BEGIN != 0 {
                    self.close_open(p);
                } else {
                    self.pos = p + total;
                }
                continue;
            }
            if flags & (F_PADDING | F_ABORTED) != 0 || flags & F_BEGIN == 0 {
                self.pos = p + total;
                continue;
            }
            let (body, time) = match self.decode(p, &f) {
                Ok(b) => b,
                Err(e) => return Err(self.undecodable(p, e)),
            };
            self.pos = p + total;
            if flags & F_END == 0 {
                self.msg_start = Some(p);
                if p + total >= r.end {
                    // Straddles the claimed end: the group word is open
                    // for us; move it along with what we read.
                    self.fragment_read(p, total, flags);
                }
            }
            return Ok(Some(self.delivered(p, flags, time, body)));
        }
    }

    /// Claim the next run for our slot. False if nothing is ready.
    pub(crate) fn claim_run(&mut self, group: usize) -> Result<bool> {
        let Kind::Member { tag, .. } = self.kind else {
            return Ok(false);
        };
        let me = self.s.cslot(self.slot);
        let gr = self.s.cslot(group);
        let gw = gr.u64_at(cslot::POSITION);
        let max_bytes = if self.s.is_ring() {
            RUN_BYTES.min(self.s.capacity / 8)
        } else {
            RUN_BYTES
        };
        'attempt: for _ in 0..1024 {
            let w = gw.load(Acquire);
            let (next, open, wtag) = split_group(w);
            if open {
                // A fragmented message is being read by member `wtag`.
                let d = (wtag as usize).wrapping_sub(1);
                if wtag != tag && d < CONSUMER_SLOTS && self.member_dead(group, d) {
                    return self.adopt(group, d);
                }
                if wtag == tag {
                    // Ours, with our run gone (lapped): let it go.
                    let _ = gw.compare_exchange(w, group_word(next, false, tag), AcqRel, Relaxed);
                }
                return Ok(false);
            }
            if self.s.head_word().load(Acquire) > next {
                if gw.load(Acquire) != w {
                    continue;
                }
                return Err(self.lagged(next));
            }
            // Walk committed frames from `next` (read only: members may
            // walk the same frames; the CAS decides).
            let (mut p, mut count, mut frag) = (next, 0u32, false);
            let mut full = false;
            loop {
                if count >= self.budget || p - next >= max_bytes {
                    full = true;
                    break;
                }
                let peeked = match self.peek(p) {
                    Err(_) if gw.load(Acquire) != w => continue 'attempt,
                    r => r?,
                };
                let Peek::Frame(Frame { flags, total, .. }) = peeked else {
                    break;
                };
                if flags & (F_PADDING | F_ABORTED) != 0
                    || flags & F_BEGIN == 0
                    || flags & F_END != 0
                {
                    // Padding, an aborted claim, the rest of a message
                    // whose start is not ours, or a whole message.
                    if flags & F_BEGIN != 0 && flags & (F_PADDING | F_ABORTED) == 0 {
                        count += 1;
                    }
                    p += total;
                    continue;
                }
                // A fragmented message starts a run of its own.
                if count > 0 {
                    full = true;
                    break;
                }
                p += total;
                frag = true;
                loop {
                    let peeked = match self.peek(p) {
                        Err(_) if gw.load(Acquire) != w => continue 'attempt,
                        r => r?,
                    };
                    let Peek::Frame(Frame { flags, total, .. }) = peeked else {
                        break;
                    };
                    if flags & F_BEGIN != 0 && flags & F_PADDING == 0 {
                        // Its writer died; the next message starts here.
                        frag = false;
                        break;
                    }
                    p += total;
                    if flags & F_END != 0 {
                        frag = false;
                        break;
                    }
                }
                break;
            }
            if p == next {
                self.check_hole(next)?;
                return Ok(false);
            }
            self.stuck = None;
            if wtag != 0 && wtag != tag {
                self.help(wtag as usize - 1, next);
            }
            // Intent, then the claim (FORMAT.md, "Groups").
            self.run_seq += 1;
            let seq = self.run_seq;
            run::announce(&me, seq, next, p);
            if !run::take(&me, &gr, seq, w, group_word(p, frag, tag)) {
                continue;
            }
            run::record(&me, seq);
            self.budget = if full {
                (self.budget * 2).min(RUN_MAX)
            } else {
                (self.budget / 2).max(RUN_MIN)
            };
            self.run = Some(Run {
                slot: self.slot,
                seq,
                begin: next,
                end: p,
            });
            self.pos = next;
            return Ok(true);
        }
        Ok(false)
    }

    /// The group word `(next, _, d + 1)` names member `d` as the last
    /// claimer: if its claim is still only an intent ending at `next`, it
    /// succeeded: record it as held, so that a member that dies between its
    /// CAS and its own record loses nothing.
    pub(crate) fn help(&self, d: usize, next: u64) {
        if d < CONSUMER_SLOTS {
            run::help(&self.s.cslot(d), next);
        }
    }

    /// Is member slot `d` of `group` a member whose process is gone (or
    /// that released its run), whose run another member may take?
    pub(crate) fn member_dead(&self, group: usize, d: usize) -> bool {
        let r = self.s.cslot(d);
        let owner = r.u64_at(cslot::OWNER).load(Acquire);
        owner != 0
            && owner != sys::my_owner()
            && r.u32_at(cslot::STATE).load(Acquire) == 1
            && r.u32_at(cslot::KIND).load(Acquire) == KIND_MEMBER
            && r.u32_at(cslot::GROUP).load(Acquire) as usize == group
            && r.u64_at(cslot::RELEASER).load(Acquire) != sys::my_owner()
            && !self.s.live.is_alive(SlotRef::Consumer(d))
    }

    /// Take dead member slot `d` and its run, if it held one (then it is
    /// ours to deliver, from its first record). False if there was nothing
    /// to take.
    pub(crate) fn adopt(&mut self, group: usize, d: usize) -> Result<bool> {
        let r = self.s.cslot(d);
        let owner = r.u64_at(cslot::OWNER).load(Acquire);
        if !self.member_dead(group, d) {
            return Ok(false);
        }
        // Holding the dead slot's lock byte, no other member adopts it.
        let Some(hold) = self.s.live.try_hold(SlotRef::Consumer(d))? else {
            return Ok(false);
        };
        if r.u64_at(cslot::OWNER)
            .compare_exchange(owner, sys::my_owner(), AcqRel, Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        // The group word first: a claim that succeeded before it is seen
        // in it, or was recorded as held by whoever moved it on.
        let Some((seq, begin, end)) = run::held_by(&r, &self.s.cslot(group), d) else {
            self.free_member_slot(d);
            return Ok(false);
        };
        r.u64_at(cslot::RUN_STATE)
            .store(run_state(seq, RUN_HELD), SeqCst);
        r.u64_at(cslot::RELEASER).store(0, SeqCst);
        r.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
        self.adopt_hold = Some(hold);
        self.run = Some(Run {
            slot: d,
            seq,
            begin,
            end,
        });
        self.pos = begin;
        Ok(true)
    }

    /// Look for a dead member of our group (now and then) and take its run.
    pub(crate) fn adopt_orphans(&mut self, group: usize) -> Result<bool> {
        // Liveness checks cost system calls: every 100 ms at most.
        if self
            .last_adopt_scan
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return Ok(false);
        }
        self.last_adopt_scan = Some(Instant::now());
        for i in 0..CONSUMER_SLOTS {
            if i != self.slot && self.member_dead(group, i) && self.adopt(group, i)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Let member slot `d` go (it holds nothing any more).
    pub(crate) fn free_member_slot(&self, d: usize) {
        let r = self.s.cslot(d);
        r.u32_at(cslot::STATE).store(0, Release);
        r.u64_at(cslot::OWNER).store(0, Release);
        self.s.gen_word().fetch_add(1, SeqCst);
    }

    /// Our run is done: acknowledge it as a unit.
    pub(crate) fn ack_run(&mut self) {
        let Some(r) = self.run.take() else {
            return;
        };
        self.msg_start = None;
        run::release(&self.s.cslot(r.slot), r.seq);
        let me = self.s.cslot(self.slot);
        me.u64_at(cslot::POSITION).store(self.pos, Relaxed);
        me.u64_at(cslot::MESSAGES).store(self.msgs, Relaxed);
        if r.slot != self.slot {
            // The dead member's slot has nothing left to deliver.
            self.free_member_slot(r.slot);
            self.adopt_hold = None;
        }
        self.s.wake_space();
    }

    /// Records before `p` are acknowledged: the run now starts at `p`.
    pub(crate) fn set_run_begin(&mut self, p: u64) {
        if let Some(r) = &mut self.run
            && p > r.begin
        {
            r.begin = p;
            self.s
                .cslot(r.slot)
                .u64_at(cslot::RUN_BEGIN)
                .store(p, SeqCst);
            self.s.wake_space();
        }
    }

    /// The group's slot and its word, as loaded, if it is open for our run's fragmented
    /// message at `p`, with the run's tag.
    fn open_for_us_at(&self, p: u64) -> Option<(Region, u64, u8)> {
        let (Kind::Member { group, .. }, Some(r)) = (self.kind, self.run) else {
            return None;
        };
        let gr = self.s.cslot(group);
        let w = gr.u64_at(cslot::POSITION).load(Acquire);
        let (next, open, t) = split_group(w);
        (open && t as usize == r.slot + 1 && next == p).then_some((gr, w, t))
    }

    /// A frame at `p` of a fragmented message of our run was read: if the
    /// group word is open for it at `p`, move it past (and close it after
    /// the last fragment); a message run longer than `hold_limit` releases
    /// the ring as it goes.
    pub(crate) fn fragment_read(&mut self, p: u64, total: u64, flags: u16) {
        if let Some((gr, w, t)) = self.open_for_us_at(p) {
            let gw = gr.u64_at(cslot::POSITION);
            let last = flags & F_END != 0;
            if gw
                .compare_exchange(w, group_word(p + total, !last, t), SeqCst, Relaxed)
                .is_ok()
            {
                if let Some(r) = &mut self.run {
                    r.end = r.end.max(p + total);
                }
                if last {
                    // Members waiting on the open word look again.
                    self.s.wake_data();
                }
            }
        }
        if let Some(r) = self.run
            && p + total - r.begin > self.hold_limit()
        {
            self.set_run_begin(p + total);
        }
    }

    /// A fragmented message of our run ends early at `p` (its writer
    /// died): close the group word if it is open for us.
    pub(crate) fn close_open(&mut self, p: u64) {
        if let Some((gr, w, t)) = self.open_for_us_at(p) {
            let gw = gr.u64_at(cslot::POSITION);
            let _ = gw.compare_exchange(w, group_word(p, false, t), SeqCst, Relaxed);
            self.s.wake_data();
        }
        self.pos = self.pos.max(p);
        if let Some(r) = &mut self.run {
            r.end = r.end.max(p);
        }
        self.msg_start = None;
    }

    /// Record `p` of our run cannot be decoded here (wrong key, damage):
    /// the run from the message that holds it goes back to the group, for
    /// another member to take, and `e` is returned. The record is never
    /// acknowledged by us.
    pub(crate) fn undecodable(&mut self, p: u64, e: Error) -> Error {
        if !matches!(
            e,
            Error::Decode { .. } | Error::Corrupt { .. } | Error::KeyRequired { .. }
        ) {
            return e;
        }
        let from = self.msg_start.unwrap_or(p);
        self.set_run_begin(from);
        self.give_back(true, false);
        e
    }

    /// Hand our run back to the group: the slot it is recorded in is left
    /// for another member to adopt as if its owner had died, and we carry
    /// on in a new slot. With `mine`, we never take it back ourselves.
    /// Returns whether our own slot was handed over (when `leaving`).
    pub(crate) fn give_back(&mut self, mine: bool, leaving: bool) -> bool {
        let (Kind::Member { group, .. }, Some(r)) = (self.kind, self.run) else {
            return false;
        };
        let mut new_hold = None;
        if r.slot == self.slot && !leaving {
            // We need a new slot first; without one, the run stays held
            // (and goes back when this member is dropped or dies).
            let Ok((new, hold)) = self.s.alloc_cslot(KIND_MEMBER, &self.name, group as u32, 0)
            else {
                return false;
            };
            new_hold = Some(hold);
            self.slot = new;
            self.kind = Kind::Member {
                group,
                tag: (new + 1) as u8,
            };
        }
        let rs = self.s.cslot(r.slot);
        rs.u64_at(cslot::RELEASER)
            .store(if mine { sys::my_owner() } else { 0 }, SeqCst);
        rs.u64_at(cslot::OWNER).store(sys::NOBODY, SeqCst);
        // Let go of the handed-over slot's lock byte: to the other members
        // it is now a dead member's.
        if let Some(h) = new_hold {
            self._hold = h;
        } else if r.slot != self.slot {
            self.adopt_hold = None;
        }
        self.run = None;
        self.msg_start = None;
        self.s.wake_data();
        r.slot == self.slot
    }

    /// Leaving the group (drop): what we read is acknowledged; what we did
    /// not (from `unread`, a message read only in part, or our position)
    /// goes back to the group.
    /// Returns whether our own slot was handed over with the run.
    pub(crate) fn leave_run(&mut self, unread: Option<u64>) -> bool {
        let Some(r) = self.run else {
            return false;
        };
        let from = unread.unwrap_or(self.pos);
        if from >= r.end && !self.open_ours(r) {
            self.ack_run();
            false
        } else {
            self.set_run_begin(from);
            self.give_back(false, true)
        }
    }
}
