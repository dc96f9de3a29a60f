//! Waiting without blocking a thread (feature `tokio`): the consumer's
//! park and the producer's wait for space as futures over the process's
//! notifier (`notify.rs`), with the handshake of the blocking park.

use crate::sync::atomic::Ordering::*;

use crate::error::{Error, Result};
use crate::protocol::claim::Producer;
use crate::protocol::notify::{Announce, Word, WordChange};
use crate::protocol::read::*;
use crate::protocol::wait::{YIELD_AFTER, YIELD_EVERY};
use crate::sys;

impl Consumer {
    /// The async `park`: save the position, wake producers waiting for
    /// space, announce a waiter, look again, then sleep (without a
    /// thread) until a producer commits or the next tick. Dropped while
    /// pending, it leaves nothing behind: the waiter count goes back and
    /// the registration is removed.
    pub(crate) async fn park_async(&mut self) -> Result<()> {
        self.before_park();
        let s = self.s.clone();
        let _announce = Announce::new(&s, Word::Data);
        let seq = s.data_seq().load(SeqCst);
        if !self.ready() {
            WordChange::new(&s, Word::Data, seq).await;
        }
        Ok(())
    }

    /// Call `attempt` (which must not wait) until it gives something,
    /// first as `wait_for` does before it parks (`SPINS` polls, yielding
    /// the processor now and then: a record that comes within them, a few
    /// microseconds, is taken without any wake-up), then parking between
    /// calls. The spin holds the runtime's thread for that long at most.
    pub(crate) async fn until_async<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Consumer) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut spins = 0u32;
        loop {
            if let Some(v) = attempt(self)? {
                return Ok(v);
            }
            if spins < SPINS {
                spins += 1;
                if spins >= YIELD_AFTER && spins.is_multiple_of(YIELD_EVERY) {
                    sys::yield_now();
                } else {
                    crate::sync::spin_loop();
                }
                continue;
            }
            spins = 0;
            self.park_async().await?;
        }
    }
}

impl Producer {
    /// Call `attempt` (a non-waiting send or claim) until it is not
    /// [`Error::Full`], sleeping on the space futex in between: announce,
    /// read the word, try again, then sleep until a consumer moves on (or
    /// the next tick: a wait for another producer's claim is not woken on
    /// the space word).
    pub(crate) async fn until_space<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Producer) -> Result<T>,
    ) -> Result<T> {
        loop {
            match attempt(self) {
                Err(Error::Full) => {}
                r => return r,
            }
            self.check_interrupt()?;
            self.s.removed()?;
            let s = self.s.clone();
            let _announce = Announce::new(&s, Word::Space);
            let seq = s.space_seq().load(SeqCst);
            match attempt(self) {
                Err(Error::Full) => {}
                r => return r,
            }
            WordChange::new(&s, Word::Space, seq).await;
            // Recompute the flow-control limit (as `park_for_space` does).
            self.limit = 0;
        }
    }
}
