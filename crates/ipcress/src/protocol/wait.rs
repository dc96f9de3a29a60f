//! A consumer's waiting: spin, then sleep on the data futex; the
//! periodic maintenance a waiting consumer does (unblocking, retention).

use crate::sync::atomic::{Ordering::*, fence};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::*;
use crate::protocol::read::*;
use crate::sys::{self};

/// While waiting (`Wait::Park`), pure spins first (a record that comes
/// within them is taken with no system call), then a yield of the
/// processor every `YIELD_EVERY` spins until `SPINS`, then the futex.
pub(crate) const YIELD_AFTER: u32 = 64;
pub(crate) const YIELD_EVERY: u32 = 16;

impl Consumer {
    /// Call `poll` until it yields, spinning then parking between calls,
    /// or until the deadline passes.
    pub(crate) fn wait_for<T>(
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
                if self.wait == Wait::Park
                    && spins >= YIELD_AFTER
                    && spins.is_multiple_of(YIELD_EVERY)
                {
                    // More busy processes than cores (a producer and a
                    // group of members on two): let whoever would fill
                    // the stream run instead of spinning on its core.
                    sys::yield_now();
                } else {
                    crate::sync::spin_loop();
                }
                if spins.is_multiple_of(1024) {
                    self.maintenance();
                }
                continue;
            }
            spins = 0;
            self.park(deadline)?;
        }
    }

    /// What a consumer does before it sleeps (blocking or async): its
    /// maintenance, then it saves its position and wakes producers
    /// waiting for the space it freed.
    pub(crate) fn before_park(&mut self) {
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
        self.s.wake_space();
    }

    /// Sleep on the data futex until a producer commits (or a timeout, so
    /// that liveness checks and the unblocker run).
    pub(crate) fn park(&mut self, deadline: Option<Instant>) -> Result<()> {
        self.before_park();
        let s = self.s.clone();
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
    pub(crate) fn ready(&mut self) -> bool {
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
    pub(crate) fn maintenance(&mut self) {
        if self.last_maintenance.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_maintenance = Instant::now();
        let r = self.s.cslot(self.slot);
        r.u64_at(cslot::HEARTBEAT_MS).store(sys::now_ms(), Relaxed);
        r.u64_at(cslot::MESSAGES).store(self.msgs, Relaxed);
    }
}
