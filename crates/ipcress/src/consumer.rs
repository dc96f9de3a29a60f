//! Consumers: durable named ones, ephemeral subscribers, and group members
//! that share the work of a stream. Reading, waiting, zero-copy messages,
//! streaming fragmented messages, and the unblocker.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{Ordering::*, fence};
use std::time::{Duration, Instant};

use crate::codec;
use crate::error::{Error, Result};
use crate::format::*;
use crate::producer::RawFrame;
use crate::storage::Seg;
use crate::stream::{Inner, Policy, Stream};
use crate::sys::{self, SlotRef};

/// Where a new consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The oldest retained record.
    Start,
    /// The tail: only records written from now on.
    End,
    /// A record's position (must be retained).
    Position(u64),
}

/// How a consumer waits for data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Wait {
    /// Spin briefly, then sleep on a futex (lowest CPU).
    #[default]
    Park,
    /// Spin without sleeping (lowest latency, burns a core).
    Spin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Durable,
    Subscriber,
    Member { group: usize, tag: u8 },
}

/// What a poll found.
struct Delivered {
    pos: u64,
    flags: u16,
    body: Body,
}

enum Body {
    /// Bytes borrowed from the mapping (Block policy, plain frame).
    Mapped { seg: Seg, off: usize, len: usize },
    /// Decoded bytes in the consumer's buffer.
    Buffer,
}

enum Peek {
    Empty,
    Frame {
        seg: Seg,
        off: usize,
        len: u32,
        flags: u16,
        total: u64,
    },
}

/// The run of records a group member holds: claimed with one CAS on the
/// group word, delivered frame by frame from `Consumer::pos`, and
/// acknowledged as a unit (FORMAT.md, "Groups").
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The slot the run is recorded in: ours, or a dead member's we adopted.
    slot: usize,
    seq: u64,
    /// `RUN_BEGIN` as last stored (what holds producers back).
    begin: u64,
    /// End of the claimed positions (a fragmented message that straddles
    /// it is delivered whole all the same).
    end: u64,
}

/// Smallest and largest number of records in a run; the budget doubles
/// when a run fills it (the stream is fast) and halves when a run stops at
/// the newest committed record (it is slow), so that runs stay small, and
/// latency low, at low rates.
const RUN_MIN: u32 = 8;
const RUN_MAX: u32 = 1024;
/// Largest run in bytes (and at most an eighth of a ring).
const RUN_BYTES: u64 = 256 << 10;

/// Reads a stream. Not shared between threads; make one per reader.
pub struct Consumer {
    s: Arc<Inner>,
    kind: Kind,
    slot: usize,
    /// Next position to read (own position; unused for members).
    pos: u64,
    seg: Option<Seg>,
    /// Positions `win_lo..win_lo + win_len` lie in `seg` and in pages this
    /// process has faulted in: reads there need no other check.
    win_lo: u64,
    win_len: u64,
    /// The decoded bytes of the last record read through a copy.
    buf: Vec<u8>,
    /// A compressed record's stored bytes, opened in place and then
    /// decompressed into `buf`. Both buffers keep their size from record to
    /// record, so a steady stream neither allocates nor zero-fills.
    zbuf: Vec<u8>,
    wait: Wait,
    stuck: Option<(u64, Instant)>,
    empty_polls: u32,
    last_wake: u64,
    wake_step: u64,
    msgs: u64,
    /// Group members: the run held.
    run: Option<Run>,
    /// Group members: the run budget in records (`RUN_MIN..=RUN_MAX`).
    budget: u32,
    /// Group members: sequence number of the last claim attempt.
    run_seq: u64,
    /// Group members: when we last looked for dead members' runs.
    last_adopt_scan: Option<Instant>,
    last_maintenance: Instant,
    name: String,
    auto_commit: bool,
    /// `poll_fast` applies: a durable consumer or subscriber of a Block
    /// stream.
    fast: bool,
    /// Made at the oldest retained record (or the tail) of a Block stream
    /// and nothing read yet: a head that passes our position (a producer that raised it
    /// before it saw our new slot, FORMAT.md "Registration") moves us to
    /// the oldest retained record silently, as if we had been made then:
    /// nothing was promised to us before. Off the fast path meanwhile.
    fresh: bool,
    /// Our slot's lock byte: the slot is ours while this lives (dropped
    /// after `Drop::drop` has let the slot go).
    _hold: sys::Hold,
    /// The lock byte of a dead member's slot whose message we adopted,
    /// until it is acknowledged and the slot freed.
    adopt_hold: Option<sys::Hold>,
    /// Start of the fragmented message being read, until the next `recv`
    /// (or `commit`) moves on (a member: until its last fragment is read,
    /// its run is acknowledged by the next `recv` anyway): a saved
    /// position names it, not a fragment inside it or its end (a consumer
    /// killed mid-message, or after reading it, gets it again, whole).
    msg_start: Option<u64>,
}

/// Spins before parking.
const SPINS: u32 = 200;

/// Empty polls per look for a hole left by a dead producer (a divisor of
/// `SPINS`, so that every spin phase before parking looks at least once).
const HOLE_CHECK_EVERY: u32 = 50;

impl Stream {
    /// Open or create the durable consumer `name` (new ones start at the
    /// oldest retained record).
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        self.consumer_from(name, StartAt::Start)
    }

    /// Open the durable consumer `name`, creating it at `from` if new.
    pub fn consumer_from(&self, name: &str, from: StartAt) -> Result<Consumer> {
        crate::stream::validate_name(name)?;
        let s = &self.inner;
        check_key(s)?;
        let _g = RegLock::take(s)?;
        let mut fresh = false;
        let (slot, hold) = match s.find_cslot(KIND_DURABLE, name) {
            Some(i) => {
                let r = s.cslot(i);
                let owner = r.u64_at(cslot::OWNER).load(Acquire);
                // Whoever holds the slot's lock byte is alive and reading.
                let Some(hold) = s.live.try_hold(SlotRef::Consumer(i))? else {
                    return Err(Error::InUse {
                        name: name.into(),
                        pid: sys::owner_pid(owner),
                    });
                };
                r.u64_at(cslot::OWNER).store(sys::my_owner(), Release);
                r.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
                (i, hold)
            }
            None => {
                let pos = start_position(s, from)?;
                let (i, hold) = s.alloc_cslot(KIND_DURABLE, name, 0, pos)?;
                fresh = !matches!(from, StartAt::Position(_));
                (i, hold)
            }
        };
        let pos = s.cslot(slot).u64_at(cslot::POSITION).load(Acquire);
        let mut c = Consumer::new(s.clone(), Kind::Durable, slot, pos, name, hold);
        if fresh {
            c.set_fresh();
        }
        Ok(c)
    }

    /// An ephemeral subscriber starting at `from`; it holds producers back
    /// only while its process lives.
    pub fn subscribe(&self, from: StartAt) -> Result<Consumer> {
        let s = &self.inner;
        check_key(s)?;
        let pos = start_position(s, from)?;
        let (slot, hold) = s.alloc_cslot(KIND_SUBSCRIBER, "", 0, pos)?;
        let mut c = Consumer::new(s.clone(), Kind::Subscriber, slot, pos, "", hold);
        // Registration: our slot is published; a producer that raised the
        // head before seeing it is caught here.
        let head = s.head_word().load(SeqCst);
        if head > c.pos {
            c.pos = resume_position(s, head);
            c.publish(c.pos);
        }
        if !matches!(from, StartAt::Position(_)) {
            c.set_fresh();
        }
        Ok(c)
    }

    /// Join group `group` (created at the oldest retained record if new):
    /// each message goes to exactly one member.
    pub fn group(&self, group: &str) -> Result<Consumer> {
        self.group_from(group, StartAt::Start)
    }

    /// Join group `group`, creating it at `from` if new.
    pub fn group_from(&self, group: &str, from: StartAt) -> Result<Consumer> {
        crate::stream::validate_name(group)?;
        let s = &self.inner;
        check_key(s)?;
        let _g = RegLock::take(s)?;
        let gslot = match s.find_cslot(KIND_GROUP, group) {
            Some(i) => i,
            None => {
                let pos = start_position(s, from)?;
                let (i, _hold) = s.alloc_cslot(KIND_GROUP, group, 0, group_word(pos, false, 0))?;
                // The group itself belongs to nobody in particular.
                s.cslot(i).u64_at(cslot::OWNER).store(sys::NOBODY, Release);
                i
            }
        };
        let (slot, hold) = s.alloc_cslot(KIND_MEMBER, group, gslot as u32, 0)?;
        let tag = (slot + 1) as u8;
        Ok(Consumer::new(
            s.clone(),
            Kind::Member { group: gslot, tag },
            slot,
            0,
            group,
            hold,
        ))
    }

    /// Remove the durable consumer or group `name` (it must not be in use).
    pub fn remove_consumer(&self, name: &str) -> Result<()> {
        let s = &self.inner;
        let _g = RegLock::take(s)?;
        let mut found = false;
        for kind in [KIND_DURABLE, KIND_GROUP] {
            while let Some(i) = s.find_cslot(kind, name) {
                let r = s.cslot(i);
                let owner = r.u64_at(cslot::OWNER).load(Acquire);
                if kind == KIND_DURABLE && s.live.is_alive(SlotRef::Consumer(i)) {
                    return Err(Error::InUse {
                        name: name.into(),
                        pid: sys::owner_pid(owner),
                    });
                }
                if kind == KIND_GROUP {
                    free_dead_members(s, name, i)?;
                }
                s.free_cslot(i);
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: "consumer",
                name: name.into(),
            })
        }
    }

    /// Every consumer slot in use.
    pub fn consumers(&self) -> Vec<crate::stream::ConsumerInfo> {
        self.inner.consumers()
    }

    /// Messages and bytes written by producers, and how many are live.
    pub fn producer_totals(&self) -> (u64, u64, usize) {
        self.inner.producer_totals()
    }
}

/// Free the member slots of group slot `g` (named `name`) before the group
/// goes: all of them must be dead, or `InUse` names a live one. A member
/// left behind would go on writing run words for a freed group slot, and
/// a consumer that took that slot would read them as its position. New
/// members wait for the registration lock we hold; a live member is the
/// only one that adopts a dead member's slot, and there is none. Each
/// dead slot's lock byte is held while it is freed, as `adopt` does.
fn free_dead_members(s: &Inner, name: &str, g: usize) -> Result<()> {
    let members: Vec<usize> = (0..crate::format::CONSUMER_SLOTS)
        .filter(|&i| {
            let r = s.cslot(i);
            r.u64_at(cslot::OWNER).load(Acquire) != 0
                && r.u32_at(cslot::KIND).load(Acquire) == KIND_MEMBER
                && r.u32_at(cslot::GROUP).load(Acquire) as usize == g
        })
        .collect();
    let in_use = |i: usize| Error::InUse {
        name: name.into(),
        pid: sys::owner_pid(s.cslot(i).u64_at(cslot::OWNER).load(Acquire)),
    };
    if let Some(&i) = members
        .iter()
        .find(|&&i| s.live.is_alive(SlotRef::Consumer(i)))
    {
        return Err(in_use(i));
    }
    for i in members {
        let Some(_hold) = s.live.try_hold(SlotRef::Consumer(i))? else {
            return Err(in_use(i));
        };
        s.free_cslot(i);
    }
    Ok(())
}

fn check_key(s: &Inner) -> Result<()> {
    check_not_inspecting(s)?;
    if s.opts.encrypted && s.cipher.is_none() {
        return Err(Error::KeyRequired {
            stream: s.name.clone(),
        });
    }
    Ok(())
}

/// The first frame boundary at or after `head`.
fn resume_position(s: &Inner, head: u64) -> u64 {
    // Clamped to the tail first (< 2^63): a damaged head word cannot
    // overflow the rounding.
    let tail = s.tail();
    let head = head.min(tail);
    let r = (head + s.seg_size - 1) & !(s.seg_size - 1);
    r.min(tail).max(head)
}

fn start_position(s: &Inner, from: StartAt) -> Result<u64> {
    let head = s.head();
    let tail = s.tail();
    let oldest = if head == 0 {
        0
    } else {
        resume_position(s, head)
    };
    match from {
        StartAt::Start => Ok(oldest),
        StartAt::End => Ok(tail),
        StartAt::Position(p) => {
            if p < oldest || p > tail || p % ALIGN as u64 != 0 {
                Err(Error::InvalidOptions(format!(
                    "position {p} is not retained (oldest {oldest}, tail {tail})"
                )))
            } else {
                check_boundary(s, p)?;
                Ok(p)
            }
        }
    }
}

/// Is `p` (retained, aligned) the start of a frame? Every segment starts
/// with a frame, so walk the headers from the start of `p`'s segment: the
/// walk must land on `p` exactly. A walk that meets a claim not committed
/// yet cannot prove it: that is refused too, with a clear error (ask again
/// later); so is a position in a segment the head has begun to pass.
/// Nothing is written.
pub(crate) fn check_boundary(s: &Inner, p: u64) -> Result<()> {
    use crate::recovery::Walk;
    let bad = |why: String| Err(Error::InvalidOptions(format!("position {p} {why}")));
    let start = p & !(s.seg_size - 1);
    if start == p {
        return Ok(());
    }
    let Some(seg) = s.segment(s.seg_index(p), false)? else {
        return bad("is not retained".into());
    };
    let walk = crate::recovery::walk_to(s, &seg, p);
    // The walk read a segment that producers may be reusing meanwhile
    // (Overwrite): it counts only if the head has not reached it since.
    fence(Acquire);
    if s.head_word().load(Relaxed) > start {
        return bad("is no longer retained".into());
    }
    match walk {
        Walk::Exact => Ok(()),
        Walk::Inside { prev, next } => bad(format!(
            "is inside a record (records start at {prev} and at {next})"
        )),
        Walk::Uncommitted(q) => bad(format!(
            "cannot be checked yet: the record at {q} before it is not committed"
        )),
        Walk::Damaged(q, e) => bad(format!(
            "cannot be checked: the record at {q} before it is damaged ({e})"
        )),
    }
}

/// The lock that serialises finding-or-creating named slots: its lock
/// byte, waited for as long as a live process holds it (the kernel lets go
/// of a dead holder's). The owner word is for display.
struct RegLock<'a>(&'a Inner, #[allow(dead_code)] sys::Hold);

impl<'a> RegLock<'a> {
    fn take(s: &'a Inner) -> Result<RegLock<'a>> {
        let hold = s.live.hold(SlotRef::RegLock)?;
        s.meta
            .u64_at(meta::REG_LOCK)
            .store(sys::my_owner(), Release);
        Ok(RegLock(s, hold))
    }
}

impl Drop for RegLock<'_> {
    fn drop(&mut self) {
        self.0.meta.u64_at(meta::REG_LOCK).store(0, Release);
    }
}

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
    fn new(
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
            fresh: false,
        }
    }

    /// Block policy only: there a live consumer holds producers back, so
    /// a lag before its first message can only be the registration race.
    /// (With Overwrite, a lag is a lag, reported from the start.)
    fn set_fresh(&mut self) {
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
    fn hold_limit(&self) -> u64 {
        if self.s.is_ring() {
            self.s.capacity / 2
        } else {
            u64::MAX
        }
    }

    /// The position to save: ours, or the start of the fragmented message
    /// being read (while it is within `hold_limit`).
    #[inline(always)]
    fn save_point(&self) -> u64 {
        match self.msg_start {
            Some(st) if self.pos - st <= self.hold_limit() => st,
            _ => self.pos,
        }
    }

    /// With auto-commit off (durable consumers and subscribers), the
    /// position is saved, and the ring released to producers, only by
    /// [`commit`](Self::commit) or [`commit_to`](Self::commit_to): a bridge
    /// commits what the far side acknowledged, not what it has read.
    pub fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    /// Save `position` (a frame boundary this consumer has read up to) as
    /// the durable position. It must not be past the consumer's position.
    pub fn commit_to(&mut self, position: u64) -> Result<()> {
        if position > self.pos || matches!(self.kind, Kind::Member { .. }) {
            return Err(Error::InvalidOptions(format!(
                "cannot commit position {position}: the consumer is at {}",
                self.pos
            )));
        }
        self.publish(position);
        Ok(())
    }

    /// Choose how to wait for data.
    pub fn set_wait(&mut self, w: Wait) {
        self.wait = w;
    }

    /// Next position this consumer reads (for a group member: the group's).
    pub fn position(&self) -> u64 {
        match self.kind {
            Kind::Member { group, .. } => match self.run {
                Some(r) if self.pos < r.end => self.pos,
                _ => split_group(self.s.cslot(group).u64_at(cslot::POSITION).load(Acquire)).0,
            },
            _ => self.pos,
        }
    }

    /// Name of the durable consumer or group ("" for subscribers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mark every message returned so far as processed: a durable consumer's
    /// position is saved, a group member acknowledges what it has read of
    /// its run.
    pub fn commit(&mut self) -> Result<()> {
        self.release_held();
        match self.kind {
            Kind::Durable | Kind::Subscriber => self.publish(self.pos),
            Kind::Member { .. } => {
                if let Some(r) = self.run {
                    if self.pos >= r.end && !self.open_ours(r) {
                        self.ack_run();
                    } else {
                        self.set_run_begin(self.pos);
                    }
                }
            }
        }
        Ok(())
    }

    /// Wait for the next message.
    #[inline]
    pub fn recv(&mut self) -> Result<Message<'_>> {
        let d = self.recv_until(None)?.expect("no deadline");
        Ok(Message { c: self, d })
    }

    /// The next message if one is ready.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        self.release_held();
        match self.poll()? {
            Some(d) => Ok(Some(Message { c: self, d })),
            None => Ok(None),
        }
    }

    /// Wait up to `timeout` for the next message.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message<'_>>> {
        let deadline = Instant::now() + timeout;
        match self.recv_until(Some(deadline))? {
            Some(d) => Ok(Some(Message { c: self, d })),
            None => Ok(None),
        }
    }

    #[inline(always)]
    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Delivered>> {
        self.release_held();
        self.wait_for(deadline, Consumer::poll)
    }

    /// Call `poll` until it yields, spinning then parking between calls,
    /// or until the deadline passes.
    fn wait_for<T>(
        &mut self,
        deadline: Option<Instant>,
        mut poll: impl FnMut(&mut Consumer) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut spins = 0u32;
        loop {
            if let Some(v) = poll(self)? {
                return Ok(Some(v));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            spins += 1;
            if self.wait == Wait::Spin || spins < SPINS {
                std::hint::spin_loop();
                if spins.is_multiple_of(1024) {
                    self.maintenance();
                }
                continue;
            }
            spins = 0;
            self.park(deadline)?;
        }
    }

    /// Sleep on the data futex until a producer commits (or a timeout, so
    /// that liveness checks and the unblocker run).
    fn park(&mut self, deadline: Option<Instant>) -> Result<()> {
        self.maintenance();
        if self.auto_commit && matches!(self.kind, Kind::Durable | Kind::Subscriber) {
            // Padding we skipped is consumed too; a message being read is
            // not, until it has been read to its end.
            let p = self.save_point();
            self.s
                .cslot(self.slot)
                .u64_at(cslot::POSITION)
                .store(p, Release);
        }
        let s = self.s.clone();
        s.wake_space();
        s.data_waiters().fetch_add(1, SeqCst);
        let seq = s.data_seq().load(SeqCst);
        let ready = self.ready();
        if !ready {
            let mut t = Duration::from_millis(50);
            if let Some(d) = deadline {
                t = t.min(d.saturating_duration_since(Instant::now()));
            }
            if !t.is_zero() {
                sys::futex_wait(s.data_seq(), seq, Some(t));
            }
        }
        s.data_waiters().fetch_sub(1, SeqCst);
        Ok(())
    }

    /// Is there a committed frame at our next position? (SeqCst: the other
    /// half of the producer's commit-then-check-waiters.)
    fn ready(&mut self) -> bool {
        let p = match self.kind {
            Kind::Member { group, tag } => {
                let (next, open, t) =
                    split_group(self.s.cslot(group).u64_at(cslot::POSITION).load(SeqCst));
                match self.run {
                    Some(r) if self.pos < r.end => return true,
                    Some(r) if open && t as usize == r.slot + 1 => self.pos,
                    // Another member's fragmented message: nothing for us
                    // until it is read (or its reader found dead).
                    _ if open && t != tag => return false,
                    _ => next,
                }
            }
            _ => self.pos,
        };
        if self.s.tail_word().load(SeqCst) & !TAIL_LOCK <= p {
            return false;
        }
        // Claimed. Committed yet? A claim still being written (or a hole
        // the unblocker will look at on the next poll) is waited for on
        // the futex, not by spinning. The fence pairs with the producer's
        // SeqCst commit and waiter check.
        fence(SeqCst);
        !matches!(self.peek(p), Ok(Peek::Empty))
    }

    /// Periodic work while idle: heartbeat, counters, dead group members.
    fn maintenance(&mut self) {
        if self.last_maintenance.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_maintenance = Instant::now();
        let r = self.s.cslot(self.slot);
        r.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
        r.u64_at(cslot::MESSAGES).store(self.msgs, Relaxed);
    }

    #[inline(always)]
    fn publish(&mut self, p: u64) {
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
    fn release_held(&mut self) {
        // The message handed out last is done with, read to its end or not.
        self.msg_start = None;
        if self.auto_commit && matches!(self.kind, Kind::Durable | Kind::Subscriber) {
            let p = self.pos;
            self.publish(p);
        }
    }

    #[inline(always)]
    fn seg_for(&mut self, pos: u64) -> Result<Option<Seg>> {
        if pos.wrapping_sub(self.win_lo) < self.win_len
            && let Some(seg) = &self.seg
        {
            return Ok(Some(seg.clone()));
        }
        self.seg_for_slow(pos)
    }

    /// A new segment, or the next chunk of the ring to fault in.
    #[cold]
    fn seg_for_slow(&mut self, pos: u64) -> Result<Option<Seg>> {
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

    /// Look at the frame at `p`, validating every field.
    #[inline(always)]
    fn peek(&mut self, p: u64) -> Result<Peek> {
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
            Ok(Slot::Frame { len, flags, total }) => Ok(Peek::Frame {
                seg,
                off,
                len,
                flags,
                total,
            }),
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

    fn lagged(&mut self, p: u64) -> Error {
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
    fn poll(&mut self) -> Result<Option<Delivered>> {
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
    fn poll_fast(&mut self) -> Option<Delivered> {
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
        if flags != F_COMMITTED | F_BEGIN | F_END {
            return None;
        }
        let body = Body::Mapped {
            seg: seg.clone(),
            off: self.s.seg_offset(p) as usize + HEADER_LEN,
            len: len as usize,
        };
        self.stuck = None;
        self.pos = p + total;
        self.msgs += 1;
        Some(Delivered {
            pos: p,
            flags,
            body,
        })
    }

    fn poll_slow(&mut self) -> Result<Option<Delivered>> {
        if self.fresh {
            return self.poll_fresh();
        }
        self.poll_slow_inner()
    }

    /// `poll_slow` until the first message of a consumer made at the
    /// oldest retained record: a lag at birth is no loss (`lagged` has
    /// moved us to what is retained now), we look again.
    #[cold]
    fn poll_fresh(&mut self) -> Result<Option<Delivered>> {
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

    fn poll_slow_inner(&mut self) -> Result<Option<Delivered>> {
        if let Kind::Member { .. } = self.kind {
            return self.poll_group();
        }
        loop {
            let p = self.pos;
            if self.s.head_word().load(Acquire) > p {
                return Err(self.lagged(p));
            }
            match self.peek(p)? {
                Peek::Empty => {
                    self.check_hole(p)?;
                    return Ok(None);
                }
                Peek::Frame {
                    seg,
                    off,
                    len,
                    flags,
                    total,
                } => {
                    self.stuck = None;
                    if flags & (F_PADDING | F_ABORTED) != 0 || flags & F_BEGIN == 0 {
                        // Padding, an aborted claim, or the rest of a
                        // message whose start we never read.
                        self.pos = p + total;
                        continue;
                    }
                    let body = self.decode(p, &seg, off, len, flags)?;
                    self.pos = p + total;
                    if flags & F_END == 0 {
                        self.msg_start = Some(p);
                    }
                    self.msgs += 1;
                    return Ok(Some(Delivered {
                        pos: p,
                        flags,
                        body,
                    }));
                }
            }
        }
    }

    /// Check the frame's bytes and make them readable: borrow the mapping
    /// when safe, else copy, validate and decode into the buffer.
    #[inline(always)]
    fn decode(&mut self, p: u64, seg: &Seg, off: usize, len: u32, flags: u16) -> Result<Body> {
        let body = off + HEADER_LEN;
        let len_us = len as usize;
        let copy =
            self.s.opts.policy == Policy::Overwrite || flags & (F_COMPRESSED | F_ENCRYPTED) != 0;
        if !copy {
            if flags & F_CHECKSUM != 0 {
                // SAFETY: Block policy: this consumer's published position is
                // at or below `p`, so no producer writes this frame now.
                let bytes = unsafe { seg.region.slice(body, len_us) };
                let b = seg.region.u64_at(off + 8).load(Relaxed);
                if frame_crc(p, len, flags, bytes) != b_check(b) {
                    return Err(Error::corrupt(p, "checksum mismatch"));
                }
            }
            return Ok(Body::Mapped {
                seg: seg.clone(),
                off: body,
                len: len_us,
            });
        }
        // A compressed record is read into `zbuf` and decoded into `buf`;
        // any other is decoded in place in `buf`.
        let zipped = flags & F_COMPRESSED != 0;
        let mut buf = std::mem::take(if zipped {
            &mut self.zbuf
        } else {
            &mut self.buf
        });
        // No clear first: `read` overwrites every byte, so only growth is zeroed.
        buf.resize(len_us, 0);
        if self.s.opts.policy == Policy::Overwrite {
            // A producer may be overwriting the frame: atomic loads, then
            // the check below.
            seg.region.read_racy(body, &mut buf);
        } else {
            seg.region.read(body, &mut buf);
        }
        let b = seg.region.u64_at(off + 8).load(Relaxed);
        if self.s.opts.policy == Policy::Overwrite {
            // Seqlock-style validation: if a producer began overwriting
            // this frame, it raised the head first (FORMAT.md, "Overwrite").
            fence(Acquire);
            let a_now = seg.region.u64_at(off).load(Relaxed);
            if self.s.head_word().load(Relaxed) > p || a_now != word_a(flags, self.s.lap(p)) {
                self.put_back(zipped, buf);
                return Err(self.lagged(p));
            }
        }
        if flags & F_CHECKSUM != 0 && frame_crc(p, len, flags, &buf) != b_check(b) {
            self.put_back(zipped, buf);
            if flags & F_ENCRYPTED != 0 {
                return Err(Error::Decode {
                    stream: self.s.name.clone(),
                    position: p,
                    reason: "authentication failed (checksum of the sealed record does not match)"
                        .into(),
                });
            }
            return Err(Error::corrupt(p, "checksum mismatch"));
        }
        let r = self.decode_codecs(p, len, flags, &mut buf);
        self.put_back(zipped, buf);
        r.map(|()| Body::Buffer)
    }

    /// Returns the buffer `decode` took.
    fn put_back(&mut self, zipped: bool, buf: Vec<u8>) {
        if zipped {
            self.zbuf = buf;
        } else {
            self.buf = buf;
        }
    }

    /// Opens and decompresses the stored bytes in `buf`. The plaintext ends
    /// up in `buf`, or in `self.buf` when the record is compressed.
    fn decode_codecs(&mut self, p: u64, len: u32, flags: u16, buf: &mut Vec<u8>) -> Result<()> {
        let fail = |reason: &str| Error::Decode {
            stream: self.s.name.clone(),
            position: p,
            reason: reason.into(),
        };
        if flags & F_ENCRYPTED != 0 {
            let Some(cipher) = &self.s.cipher else {
                return Err(Error::KeyRequired {
                    stream: self.s.name.clone(),
                });
            };
            let (origin, opos, skip) = if flags & F_FOREIGN != 0 {
                let Some((id, opos)) = split_origin(buf) else {
                    return Err(fail("foreign frame shorter than its origin"));
                };
                if id == self.s.id {
                    return Err(fail("foreign frame claims to come from this stream"));
                }
                (id, opos, ORIGIN_LEN)
            } else {
                (self.s.id, p, 0)
            };
            let clen = (len as usize - skip) as u32;
            let aad = crate::producer::aad(clen, flags, opos);
            buf.drain(..skip);
            let n = cipher.open_with(origin, opos, &aad, buf).map_err(|()| {
                fail("authentication failed (wrong key, or the record was altered or moved)")
            })?;
            buf.truncate(n);
        } else if self.s.opts.encrypted {
            return Err(fail("record is not encrypted in an encrypted stream"));
        }
        if flags & F_COMPRESSED != 0 {
            // The codec is recognised by its bytes, so frames bridged from a
            // stream with another compression setting still decode.
            let c = if buf.len() >= 8 && buf[4..8] == [0x28, 0xB5, 0x2F, 0xFD] {
                codec::Compression::Zstd(3)
            } else {
                codec::Compression::Lz4
            };
            let mut out = std::mem::take(&mut self.buf);
            let r = codec::decompress(c, buf, &mut out, self.s.max_payload() * 64 + (64 << 20));
            self.buf = out;
            r.map_err(|e| fail(&format!("decompression failed: {e}")))?;
        }
        Ok(())
    }

    // ---- groups -------------------------------------------------------

    /// A group member's poll: deliver the next message of the run it
    /// holds; when the run is done, acknowledge it and claim the next.
    fn poll_group(&mut self) -> Result<Option<Delivered>> {
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
    fn open_ours(&self, r: Run) -> bool {
        let Kind::Member { group, .. } = self.kind else {
            return false;
        };
        let (_, open, t) = split_group(self.s.cslot(group).u64_at(cslot::POSITION).load(Acquire));
        open && t as usize == r.slot + 1
    }

    /// The next message of our run, if any. `Ok(None)` with the run gone:
    /// the run is acknowledged.
    fn next_in_run(&mut self, group: usize) -> Result<Option<Delivered>> {
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
            let Peek::Frame {
                seg,
                off,
                len,
                flags,
                total,
            } = self.peek(p)?
            else {
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
            let body = match self.decode(p, &seg, off, len, flags) {
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
            self.msgs += 1;
            return Ok(Some(Delivered {
                pos: p,
                flags,
                body,
            }));
        }
    }

    /// Claim the next run for our slot. False if nothing is ready.
    fn claim_run(&mut self, group: usize) -> Result<bool> {
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
                let Peek::Frame { flags, total, .. } = peeked else {
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
                    let Peek::Frame { flags, total, .. } = peeked else {
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
            me.u64_at(cslot::RUN_BEGIN).store(next, SeqCst);
            me.u64_at(cslot::RUN_END).store(p, SeqCst);
            me.u64_at(cslot::RUN_STATE)
                .store(run_state(seq, RUN_INTENT), SeqCst);
            if gw
                .compare_exchange(w, group_word(p, frag, tag), SeqCst, Relaxed)
                .is_err()
            {
                me.u64_at(cslot::RUN_STATE)
                    .store(run_state(seq, RUN_IDLE), SeqCst);
                continue;
            }
            // A member that saw our claim may have recorded it already.
            let _ = me.u64_at(cslot::RUN_STATE).compare_exchange(
                run_state(seq, RUN_INTENT),
                run_state(seq, RUN_HELD),
                SeqCst,
                Relaxed,
            );
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
    fn help(&self, d: usize, next: u64) {
        if d >= CONSUMER_SLOTS {
            return;
        }
        let r = self.s.cslot(d);
        let st = r.u64_at(cslot::RUN_STATE).load(SeqCst);
        let (seq, k) = split_run_state(st);
        if k != RUN_INTENT {
            return;
        }
        let end = r.u64_at(cslot::RUN_END).load(SeqCst);
        if r.u64_at(cslot::RUN_STATE).load(SeqCst) == st && end == next {
            let _ = r.u64_at(cslot::RUN_STATE).compare_exchange(
                st,
                run_state(seq, RUN_HELD),
                SeqCst,
                Relaxed,
            );
        }
    }

    /// Is member slot `d` of `group` a member whose process is gone (or
    /// that released its run), whose run another member may take?
    fn member_dead(&self, group: usize, d: usize) -> bool {
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
    fn adopt(&mut self, group: usize, d: usize) -> Result<bool> {
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
        let gr = self.s.cslot(group);
        let gw = gr.u64_at(cslot::POSITION);
        let (next, _, t) = split_group(gw.load(SeqCst));
        let st = r.u64_at(cslot::RUN_STATE).load(SeqCst);
        let (seq, k) = split_run_state(st);
        let begin = r.u64_at(cslot::RUN_BEGIN).load(SeqCst);
        let end = r.u64_at(cslot::RUN_END).load(SeqCst);
        let held = k == RUN_HELD || (k == RUN_INTENT && t as usize == d + 1 && next == end);
        if !held {
            self.free_member_slot(d);
            return Ok(false);
        }
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
    fn adopt_orphans(&mut self, group: usize) -> Result<bool> {
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
    fn free_member_slot(&self, d: usize) {
        let r = self.s.cslot(d);
        r.u32_at(cslot::STATE).store(0, Release);
        r.u64_at(cslot::OWNER).store(0, Release);
        self.s.gen_word().fetch_add(1, SeqCst);
    }

    /// Our run is done: acknowledge it as a unit.
    fn ack_run(&mut self) {
        let Some(r) = self.run.take() else {
            return;
        };
        self.msg_start = None;
        let slot = self.s.cslot(r.slot);
        slot.u64_at(cslot::RUN_STATE)
            .store(run_state(r.seq, RUN_IDLE), SeqCst);
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
    fn set_run_begin(&mut self, p: u64) {
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

    /// A frame at `p` of a fragmented message of our run was read: if the
    /// group word is open for it at `p`, move it past (and close it after
    /// the last fragment); a message run longer than `hold_limit` releases
    /// the ring as it goes.
    fn fragment_read(&mut self, p: u64, total: u64, flags: u16) {
        let (Kind::Member { group, .. }, Some(r)) = (self.kind, self.run) else {
            return;
        };
        let gr = self.s.cslot(group);
        let gw = gr.u64_at(cslot::POSITION);
        let w = gw.load(Acquire);
        let (next, open, t) = split_group(w);
        if open && t as usize == r.slot + 1 && next == p {
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
    fn close_open(&mut self, p: u64) {
        let (Kind::Member { group, .. }, Some(r)) = (self.kind, self.run) else {
            return;
        };
        let gr = self.s.cslot(group);
        let gw = gr.u64_at(cslot::POSITION);
        let w = gw.load(Acquire);
        let (next, open, t) = split_group(w);
        if open && t as usize == r.slot + 1 && next == p {
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
    fn undecodable(&mut self, p: u64, e: Error) -> Error {
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
    fn give_back(&mut self, mine: bool, leaving: bool) -> bool {
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
    fn leave_run(&mut self, unread: Option<u64>) -> bool {
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

    // ---- holes left by dead producers -----------------------------------

    /// Inside a fragmented message, nothing is committed at `p`: is the rest
    /// never coming? True when nothing is claimed at `p` (tail) and no live
    /// process holds the fragment lock, which its writer keeps until the
    /// last fragment is committed (its writer died, or the files are
    /// damaged). The second look at `p` pairs with the writer's release of
    /// the lock after committing its last fragment.
    fn fragments_abandoned(&mut self, p: u64) -> Result<bool> {
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
    fn check_hole(&mut self, p: u64) -> Result<()> {
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
                    let skipped = crate::recovery::unblock(&self.s, p)?;
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

impl Consumer {
    /// After an error at this consumer's position (`Corrupt`, `Decode`),
    /// move past the damaged record to the next valid frame header (or the
    /// segment end). Returns the number of bytes skipped.
    pub fn skip_damaged(&mut self) -> Result<u64> {
        self.release_held();
        let p = self.position();
        let s = self.s.clone();
        let tail = s.tail();
        if p >= tail {
            return Ok(0);
        }
        let seg_end = (p | (s.seg_size - 1)) + 1;
        // Scan rather than trust the header: a damaged length field can
        // look sound. Headers are checked for lap, position and CRC.
        let next = match self.seg_for(p)? {
            Some(seg) => crate::recovery::next_valid(&s, &seg, p, tail.min(seg_end)),
            None => tail.min(seg_end),
        };
        match self.kind {
            Kind::Member { group, .. } => {
                let gr = s.cslot(group);
                let w = gr.u64_at(cslot::POSITION);
                let cur = w.load(Acquire);
                if split_group(cur).0 == p {
                    let _ = w.compare_exchange(cur, group_word(next, false, 0), AcqRel, Relaxed);
                }
            }
            _ => {
                self.msg_start = None;
                self.pos = next;
                self.publish(next);
            }
        }
        self.stuck = None;
        Ok(next - p)
    }

    /// Wait up to `timeout` for the next stored frame, returned exactly as
    /// stored (not decoded): every fragment of a large message separately.
    /// Non-group consumers only.
    pub fn recv_raw_timeout(&mut self, timeout: Duration) -> Result<Option<(u64, RawFrame)>> {
        if let Kind::Member { .. } = self.kind {
            return Err(Error::InvalidOptions(
                "raw frames are read by durable consumers and subscribers".into(),
            ));
        }
        self.release_held();
        let deadline = Instant::now() + timeout;
        self.wait_for(Some(deadline), Consumer::poll_raw)
    }

    /// The next stored frame at our position, if committed.
    fn poll_raw(&mut self) -> Result<Option<(u64, RawFrame)>> {
        loop {
            let p = self.pos;
            if self.s.head_word().load(Acquire) > p {
                return Err(self.lagged(p));
            }
            match self.peek(p)? {
                Peek::Frame {
                    seg,
                    off,
                    len,
                    flags,
                    total,
                } => {
                    self.stuck = None;
                    if flags & (F_PADDING | F_ABORTED) != 0 {
                        self.pos = p + total;
                        continue;
                    }
                    let mut data = vec![0u8; len as usize];
                    if self.s.opts.policy == Policy::Overwrite {
                        seg.region.read_racy(off + HEADER_LEN, &mut data);
                    } else {
                        seg.region.read(off + HEADER_LEN, &mut data);
                    }
                    let b = seg.region.u64_at(off + 8).load(Relaxed);
                    fence(Acquire);
                    if self.s.head_word().load(Relaxed) > p {
                        return Err(self.lagged(p));
                    }
                    if flags & F_CHECKSUM != 0 && frame_crc(p, len, flags, &data) != b_check(b) {
                        return Err(Error::corrupt(p, "checksum mismatch"));
                    }
                    let (origin, origin_position) = if flags & F_FOREIGN != 0 {
                        let Some(origin) = split_origin(&data) else {
                            return Err(Error::corrupt(p, "foreign frame shorter than its origin"));
                        };
                        data.drain(..ORIGIN_LEN);
                        origin
                    } else {
                        (self.s.id, p)
                    };
                    self.pos = p + total;
                    self.msgs += 1;
                    return Ok(Some((
                        p,
                        RawFrame {
                            flags: flags & F_AAD_MASK,
                            origin,
                            origin_position,
                            data,
                        },
                    )));
                }
                Peek::Empty => {
                    self.check_hole(p)?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Four persistent u64 words in the stream's meta file, under a name (for
/// bridges: last applied sequence numbers, counters).
pub struct UserSlot {
    s: Arc<Inner>,
    slot: usize,
}

impl UserSlot {
    /// Word `i` (0..4).
    pub fn get(&self, i: usize) -> u64 {
        self.s
            .cslot(self.slot)
            .u64_at(cslot::USER + 8 * (i % cslot::USER_WORDS))
            .load(SeqCst)
    }
    /// Set word `i` (0..4).
    pub fn set(&self, i: usize, v: u64) {
        self.s
            .cslot(self.slot)
            .u64_at(cslot::USER + 8 * (i % cslot::USER_WORDS))
            .store(v, SeqCst);
    }
}

impl Stream {
    /// Find or create the user slot `name`.
    pub fn user_slot(&self, name: &str) -> Result<UserSlot> {
        crate::stream::validate_name(name)?;
        let s = &self.inner;
        let _g = RegLock::take(s)?;
        let slot = match s.find_cslot(KIND_USER, name) {
            Some(i) => i,
            None => {
                let (i, _hold) = s.alloc_cslot(KIND_USER, name, 0, 0)?;
                s.cslot(i).u64_at(cslot::OWNER).store(sys::NOBODY, Release);
                i
            }
        };
        Ok(UserSlot { s: s.clone(), slot })
    }

    /// The user slot `name` if it exists (does not create it).
    pub fn find_user_slot(&self, name: &str) -> Option<UserSlot> {
        let s = &self.inner;
        s.find_cslot(KIND_USER, name)
            .map(|slot| UserSlot { s: s.clone(), slot })
    }

    /// Is there a committed data frame (not padding, not aborted) at `pos`?
    pub fn is_committed(&self, pos: u64) -> Result<bool> {
        let s = &self.inner;
        if pos >= s.tail() || pos < s.head() || !pos.is_multiple_of(ALIGN as u64) {
            return Ok(false);
        }
        let Some(seg) = s.segment(s.seg_index(pos), false)? else {
            return Ok(false);
        };
        Ok(match s.read_header(&seg, pos).0 {
            Ok(Slot::Frame { flags, .. }) => flags & (F_PADDING | F_ABORTED) == 0,
            _ => false,
        })
    }
}

/// One message. It borrows the consumer: the next `recv` needs it back.
pub struct Message<'a> {
    c: &'a mut Consumer,
    d: Delivered,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("position", &self.d.pos)
            .field("fragmented", &self.is_fragmented())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// The record's position in the stream.
    #[inline]
    pub fn position(&self) -> u64 {
        self.d.pos
    }

    /// Whether the message spans several fragments (read it with
    /// [`reader`](Self::reader) or [`to_vec`](Self::to_vec)).
    #[inline]
    pub fn is_fragmented(&self) -> bool {
        self.d.flags & F_END == 0
    }

    /// The bytes of a message that fits in one frame. Borrowed from shared
    /// memory when the stream neither compresses nor encrypts nor overwrites.
    #[inline]
    pub fn bytes(&self) -> Option<&[u8]> {
        if self.is_fragmented() {
            return None;
        }
        Some(self.first_fragment())
    }

    #[inline]
    fn first_fragment(&self) -> &[u8] {
        match &self.d.body {
            // SAFETY: Block policy; this consumer's published position (or
            // its group claim) is at or below the frame, so producers do not
            // overwrite it while the message lives.
            Body::Mapped { seg, off, len } => unsafe { seg.region.slice(*off, *len) },
            Body::Buffer => &self.c.buf,
        }
    }

    /// The whole message, reassembled.
    pub fn to_vec(self) -> Result<Vec<u8>> {
        if !self.is_fragmented() {
            return Ok(self.first_fragment().to_vec());
        }
        let mut v = Vec::new();
        let mut r = self.reader();
        io::Read::read_to_end(&mut r, &mut v).map_err(|e| match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Error::io("read message", e),
        })?;
        Ok(v)
    }

    /// Read the message as a stream of bytes, fragment by fragment, without
    /// reassembling it in memory.
    pub fn reader(self) -> MessageReader<'a> {
        let first = self.first_fragment().to_vec();
        let end = !self.is_fragmented();
        MessageReader {
            start: self.d.pos,
            c: self.c,
            cur: first,
            at: 0,
            done: end,
            failed: None,
        }
    }
}

/// `io::Read` over a (possibly fragmented) message.
///
/// A read fails with an `io::Error` that carries the library's [`Error`]
/// (`io::Error::get_ref` / `into_inner`, then downcast). Two of them mean
/// the message was skipped and the consumer goes on, like a lapped one:
/// [`Error::Aborted`] (its producer died in the middle of it) and
/// [`Error::Lagged`] (Overwrite policy: it was overwritten while read).
/// Either way the consumer is already past the message and its next
/// `recv` returns the next one. After any error, every further read fails
/// too (the bytes that would follow belong to no message).
pub struct MessageReader<'a> {
    c: &'a mut Consumer,
    start: u64,
    cur: Vec<u8>,
    at: usize,
    done: bool,
    /// The error that ended this reader, repeated by every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl MessageReader<'_> {
    /// Fetch the next fragment into `cur`. Ok(false) at the end.
    fn next_fragment(&mut self) -> Result<bool> {
        let c = &mut *self.c;
        let mut spins = 0u32;
        loop {
            let p = c.pos;
            if c.s.head_word().load(Acquire) > p {
                return Err(c.lagged(p));
            }
            match c.peek(p)? {
                Peek::Empty => {
                    c.check_hole(p)?;
                    if c.fragments_abandoned(p)? {
                        c.close_open(p);
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    spins += 1;
                    if spins < SPINS {
                        std::hint::spin_loop();
                    } else {
                        spins = 0;
                        c.park(None)?;
                    }
                }
                Peek::Frame {
                    seg,
                    off,
                    len,
                    flags,
                    total,
                } => {
                    c.stuck = None;
                    if flags & F_PADDING != 0 || (flags & F_ABORTED != 0 && flags & F_END == 0) {
                        c.fragment_read(p, total, flags);
                        c.pos = p + total;
                        continue;
                    }
                    if flags & F_BEGIN != 0 {
                        // The writer died mid-message; the next message
                        // starts here.
                        c.close_open(p);
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    if flags & F_ABORTED != 0 {
                        c.fragment_read(p, total, flags);
                        c.pos = p + total;
                        c.msg_start = None;
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    let body = match c.decode(p, &seg, off, len, flags) {
                        Ok(b) => b,
                        Err(e) if matches!(c.kind, Kind::Member { .. }) => {
                            return Err(c.undecodable(p, e));
                        }
                        Err(e) => return Err(e),
                    };
                    self.cur.clear();
                    match body {
                        // SAFETY: as in Message::first_fragment.
                        Body::Mapped { seg, off, len } => self
                            .cur
                            .extend_from_slice(unsafe { seg.region.slice(off, len) }),
                        Body::Buffer => self.cur.extend_from_slice(&c.buf),
                    }
                    self.at = 0;
                    c.pos = p + total;
                    if let Kind::Member { .. } = c.kind {
                        c.fragment_read(p, total, flags);
                    }
                    if flags & F_END != 0 {
                        self.done = true;
                        // A member's run is acknowledged by its next
                        // `recv`, read whole or not. A durable consumer's
                        // saved position stays at the message's start
                        // until then too: read to its end is not yet
                        // processed (a kill here delivers it again).
                        if let Kind::Member { .. } = c.kind {
                            c.msg_start = None;
                        }
                    }
                    if c.auto_commit && matches!(c.kind, Kind::Durable | Kind::Subscriber) {
                        // Saved at the message's start until the next
                        // `recv` (or `commit`) moves on.
                        let np = c.save_point();
                        c.publish(np);
                    }
                    return Ok(true);
                }
            }
        }
    }
}

impl io::Read for MessageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.cur.len() {
                let n = out.len().min(self.cur.len() - self.at);
                out[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_fragment() {
                self.failed = Some((io::ErrorKind::Other, e.to_string()));
                self.cur.clear();
                self.at = 0;
                return Err(io::Error::other(e));
            }
        }
    }
}

/// A stream opened to look at it (`Stream::inspect_in`) makes no
/// producers or consumers: they would write.
pub(crate) fn check_not_inspecting(s: &Inner) -> Result<()> {
    if s.inspect {
        return Err(Error::InvalidOptions(format!(
            "stream {} was opened for inspection only",
            s.name
        )));
    }
    Ok(())
}
