//! The consumer registry: slots in the meta file, who holds them, where a
//! new consumer starts, and the floor that producers may not pass.

use crate::sync::atomic::{Ordering::*, fence};

use crate::error::{Error, Result};
use crate::format::{self, *};
use crate::protocol::attach::validate_name;
use crate::protocol::read::*;
use crate::protocol::shared::*;
use crate::sync::Region;
use crate::sys::{self, SlotRef};

/// Free the member slots of group slot `g` (named `name`) before the group
/// goes: all of them must be dead, or `InUse` names a live one. A member
/// left behind would go on writing run words for a freed group slot, and
/// a consumer that took that slot would read them as its position. New
/// members wait for the registration lock we hold; a live member is the
/// only one that adopts a dead member's slot, and there is none. Each
/// dead slot's lock byte is held while it is freed, as `adopt` does.
pub(crate) fn free_dead_members(s: &Inner, name: &str, g: usize) -> Result<()> {
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

pub(crate) fn check_key(s: &Inner) -> Result<()> {
    check_not_inspecting(s)?;
    if s.opts.encrypted && s.cipher.is_none() {
        return Err(Error::KeyRequired {
            stream: s.name.clone(),
        });
    }
    Ok(())
}

/// The first frame boundary at or after `head`.
pub(crate) fn resume_position(s: &Inner, head: u64) -> u64 {
    // Clamped to the tail first (< 2^63): a damaged head word cannot
    // overflow the rounding.
    let tail = s.tail();
    let head = head.min(tail);
    let r = (head + s.seg_size - 1) & !(s.seg_size - 1);
    r.min(tail).max(head)
}

pub(crate) fn start_position(s: &Inner, from: StartAt) -> Result<u64> {
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
        StartAt::Time(t) => {
            let ns = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            crate::protocol::seek::find_time(s, oldest, tail, ns)
        }
        StartAt::Last(n) => crate::protocol::seek::find_last(s, oldest, tail, n),
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
    use crate::protocol::unblock::Walk;
    let bad = |why: String| Err(Error::InvalidOptions(format!("position {p} {why}")));
    let start = p & !(s.seg_size - 1);
    if start == p {
        return Ok(());
    }
    let Some(seg) = s.segment(s.seg_index(p), false)? else {
        return bad("is not retained".into());
    };
    let walk = crate::protocol::unblock::walk_to(s, &seg, p);
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
pub(crate) struct RegLock<'a>(&'a Inner, #[allow(dead_code)] sys::Hold);

impl<'a> RegLock<'a> {
    pub(crate) fn take(s: &'a Inner) -> Result<RegLock<'a>> {
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

// ---- shared bookkeeping ------------------------------------------------

/// A live view of one consumer slot, for stats.
/// ```
/// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
/// let _worker = stream.group("workers")?;
/// let info = stream.consumers();
/// let group = info.iter().find(|c| c.kind == "group").expect("made above");
/// assert_eq!((group.name.as_str(), group.position), ("workers", 0));
/// assert!(info.iter().any(|c| c.kind == "member" && c.alive && c.pid == std::process::id()));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    /// Slot index.
    pub slot: usize,
    /// Name (durable consumer or group); empty for subscribers.
    pub name: String,
    /// "durable", "subscriber", "group", "member" or "user".
    pub kind: &'static str,
    /// Next position to read (for a group, the group's next unclaimed position).
    pub position: u64,
    /// Owner pid (0 if none).
    pub pid: u32,
    /// Whether the owner process is alive.
    pub alive: bool,
    /// Messages read through this slot.
    pub messages: u64,
    /// Last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
}

impl Inner {
    /// Read a slot's name (validated; garbage gives an empty name).
    pub fn slot_name(&self, s: &Region) -> String {
        let n = s.u32_at(cslot::NAME_LEN).load(Acquire) as usize;
        if n == 0 || n > cslot::NAME_MAX {
            return String::new();
        }
        let mut b = vec![0u8; n];
        s.read(cslot::NAME, &mut b);
        String::from_utf8(b)
            .ok()
            .filter(|n| validate_name(n).is_ok())
            .unwrap_or_default()
    }

    /// Take a free consumer slot (or one whose process is gone and that
    /// need not survive), fill it, and publish it. Returns its index and
    /// the hold on its lock byte: the slot is this process's while the hold
    /// lives.
    pub fn alloc_cslot(
        &self,
        kind: u32,
        name: &str,
        group: u32,
        position: u64,
    ) -> Result<(usize, sys::Hold)> {
        for reclaim in [false, true] {
            for i in 0..format::CONSUMER_SLOTS {
                let s = self.cslot(i);
                let owner = s.u64_at(cslot::OWNER).load(Acquire);
                let candidate = if reclaim {
                    let k = s.u32_at(cslot::KIND).load(Acquire);
                    let ready = s.u32_at(cslot::STATE).load(Acquire) == 1;
                    owner != 0
                        && (!ready || k == format::KIND_SUBSCRIBER)
                        && !self.live.is_alive(SlotRef::Consumer(i))
                } else {
                    owner == 0
                };
                if !candidate {
                    continue;
                }
                // Holding the lock byte, nobody else takes the slot.
                let Some(hold) = self.live.try_hold(SlotRef::Consumer(i))? else {
                    continue;
                };
                if s.u64_at(cslot::OWNER)
                    .compare_exchange(owner, sys::my_owner(), AcqRel, Relaxed)
                    .is_ok()
                {
                    self.fill_cslot(&s, kind, name, group, position);
                    return Ok((i, hold));
                }
            }
        }
        Err(Error::SlotsExhausted("consumer"))
    }

    pub(crate) fn fill_cslot(&self, s: &Region, kind: u32, name: &str, group: u32, position: u64) {
        s.u32_at(cslot::STATE).store(0, Release);
        s.u32_at(cslot::KIND).store(kind, Relaxed);
        s.u32_at(cslot::GROUP).store(group, Relaxed);
        let nb = name.as_bytes();
        s.write(cslot::NAME, nb);
        s.u32_at(cslot::NAME_LEN).store(nb.len() as u32, Relaxed);
        s.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
        s.u64_at(cslot::CREATED_MS).store(sys::now_ms(), Relaxed);
        s.u64_at(cslot::MESSAGES).store(0, Relaxed);
        s.u64_at(cslot::POSITION).store(position, Relaxed);
        s.u64_at(cslot::RUN_BEGIN).store(0, Relaxed);
        s.u64_at(cslot::RUN_END).store(0, Relaxed);
        s.u64_at(cslot::RUN_STATE)
            .store(format::run_state(0, format::RUN_IDLE), Relaxed);
        s.u64_at(cslot::RELEASER).store(0, Relaxed);
        for w in 0..cslot::USER_WORDS {
            s.u64_at(cslot::USER + 8 * w).store(0, Relaxed);
        }
        s.u32_at(cslot::STATE).store(1, Release);
        self.gen_word().fetch_add(1, SeqCst);
    }

    /// Free a slot this process owns.
    pub fn free_cslot(&self, i: usize) {
        let s = self.cslot(i);
        s.u32_at(cslot::STATE).store(0, Release);
        s.u32_at(cslot::NAME_LEN).store(0, Release);
        s.u64_at(cslot::OWNER).store(0, Release);
        self.gen_word().fetch_add(1, SeqCst);
        self.wake_space();
    }

    /// Find the ready slot of `kind` named `name`.
    pub fn find_cslot(&self, kind: u32, name: &str) -> Option<usize> {
        (0..format::CONSUMER_SLOTS).find(|&i| {
            let s = self.cslot(i);
            s.u64_at(cslot::OWNER).load(Acquire) != 0
                && s.u32_at(cslot::STATE).load(Acquire) == 1
                && s.u32_at(cslot::KIND).load(Acquire) == kind
                && self.slot_name(&s) == name
        })
    }

    /// The one rule for who holds producers back (DESIGN.md §3, "When the
    /// ring is full"; FORMAT.md, "Who holds producers back"): the lowest
    /// position some holding consumer still needs, or None when nobody
    /// holds producers back. Every durable consumer holds, alive or not,
    /// unless it is dead and `durable_timeout` has passed since its
    /// heartbeat; a subscriber holds while its process lives (a dead one's
    /// slot is freed here); a group holds while one of its members lives.
    /// Every check (whether a claim must wait, whether to park, the
    /// unblocker's padding, log retention) asks this function, so they
    /// never disagree.
    pub fn floor(&self) -> Option<u64> {
        let mut floor: Option<u64> = None;
        let mut take = |p: u64| floor = Some(floor.map_or(p, |f: u64| f.min(p)));
        let now = sys::now_ms();
        let mut group_live = [false; format::CONSUMER_SLOTS];
        let mut members: Vec<(usize, Option<u64>)> = Vec::new();
        // Group words first: a claim made after this read is at or above
        // it; one made before is visible in the member's slot below.
        let mut group_next = [u64::MAX; format::CONSUMER_SLOTS];
        for (g, slot) in group_next.iter_mut().enumerate() {
            let s = self.cslot(g);
            if s.u32_at(cslot::KIND).load(SeqCst) == format::KIND_GROUP {
                *slot = format::split_group(s.u64_at(cslot::POSITION).load(SeqCst)).0;
            }
        }
        for i in 0..format::CONSUMER_SLOTS {
            let s = self.cslot(i);
            let owner = s.u64_at(cslot::OWNER).load(SeqCst);
            if owner == 0 || s.u32_at(cslot::STATE).load(Acquire) != 1 {
                continue;
            }
            let pos = s.u64_at(cslot::POSITION).load(SeqCst);
            match s.u32_at(cslot::KIND).load(Acquire) {
                format::KIND_DURABLE => {
                    if let Some(t) = self.opts.durable_timeout {
                        // The lock is asked only once the heartbeat is old.
                        let hb = s.u64_at(cslot::HEARTBEAT_MS).load(Relaxed);
                        if now.saturating_sub(hb) > t.as_millis() as u64
                            && !self.live.is_alive(SlotRef::Consumer(i))
                        {
                            continue;
                        }
                    }
                    take(pos);
                }
                format::KIND_SUBSCRIBER => {
                    if !self.live.is_alive(SlotRef::Consumer(i)) {
                        self.free_dead_subscriber(i, owner);
                        continue;
                    }
                    take(pos);
                }
                format::KIND_MEMBER => {
                    let g = s.u32_at(cslot::GROUP).load(Acquire) as usize;
                    if g < format::CONSUMER_SLOTS {
                        if self.live.is_alive(SlotRef::Consumer(i)) {
                            group_live[g] = true;
                        }
                        // A claim in progress or a run not yet acknowledged
                        // (FORMAT.md, "Groups").
                        members.push((g, crate::protocol::run::floor_of(&s)));
                    }
                }
                _ => {}
            }
        }
        for (g, m) in members {
            if group_live[g]
                && let Some(m) = m
            {
                take(m);
            }
        }
        for (g, live) in group_live.iter().enumerate() {
            if *live {
                let s = self.cslot(g);
                if s.u32_at(cslot::KIND).load(Acquire) == format::KIND_GROUP
                    && group_next[g] != u64::MAX
                {
                    take(group_next[g]);
                }
            }
        }
        // Bytes below the head are released already: a holder that fell
        // behind it (a group without live members, a durable consumer
        // past its timeout, both back now) finds them lapped and skips
        // ahead; it holds nothing below the head.
        floor.map(|f| f.max(self.head()))
    }

    /// Free subscriber slot `i` whose process is gone (its owner word was
    /// `owner`). Holding its lock byte, nobody takes the slot meanwhile.
    pub(crate) fn free_dead_subscriber(&self, i: usize, owner: u64) {
        let Ok(Some(_hold)) = self.live.try_hold(SlotRef::Consumer(i)) else {
            return;
        };
        let s = self.cslot(i);
        if s.u64_at(cslot::OWNER).load(Acquire) == owner
            && s.u32_at(cslot::KIND).load(Acquire) == format::KIND_SUBSCRIBER
        {
            s.u32_at(cslot::STATE).store(0, Release);
            s.u32_at(cslot::NAME_LEN).store(0, Release);
            s.u64_at(cslot::OWNER).store(0, Release);
            self.gen_word().fetch_add(1, SeqCst);
        }
    }

    /// Live snapshot of the consumer slots.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        let mut v = Vec::new();
        for i in 0..format::CONSUMER_SLOTS {
            let s = self.cslot(i);
            let owner = s.u64_at(cslot::OWNER).load(Acquire);
            if owner == 0 || s.u32_at(cslot::STATE).load(Acquire) != 1 {
                continue;
            }
            let kind = s.u32_at(cslot::KIND).load(Acquire);
            let raw = s.u64_at(cslot::POSITION).load(Acquire);
            let (kind_name, position) = match kind {
                format::KIND_DURABLE => ("durable", raw),
                format::KIND_SUBSCRIBER => ("subscriber", raw),
                format::KIND_GROUP => ("group", format::split_group(raw).0),
                format::KIND_MEMBER => ("member", raw),
                format::KIND_USER => ("user", raw),
                _ => continue,
            };
            v.push(ConsumerInfo {
                slot: i,
                name: self.slot_name(&s),
                kind: kind_name,
                position,
                pid: sys::owner_pid(owner),
                alive: self.live.is_alive(SlotRef::Consumer(i)),
                messages: s.u64_at(cslot::MESSAGES).load(Relaxed),
                heartbeat_ms: s.u64_at(cslot::HEARTBEAT_MS).load(Relaxed),
            });
        }
        v
    }

    /// Sum of messages and bytes written by registered producers.
    pub fn producer_totals(&self) -> (u64, u64, usize) {
        let (mut m, mut b, mut live) = (0, 0, 0);
        for i in 0..format::PRODUCER_SLOTS {
            let s = self.pslot(i);
            let owner = s.u64_at(pslot::OWNER).load(Acquire);
            // Counters in shared memory may hold anything: never overflow.
            m = s.u64_at(pslot::MESSAGES).load(Relaxed).saturating_add(m);
            b = s.u64_at(pslot::BYTES).load(Relaxed).saturating_add(b);
            if owner != 0 && self.live.is_alive(SlotRef::Producer(i)) {
                live += 1;
            }
        }
        (m, b, live)
    }
}
