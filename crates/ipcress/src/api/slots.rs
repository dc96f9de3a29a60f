//! User slots: named words in the meta file for applications' own state.

use crate::sync::atomic::Ordering::*;
use std::sync::Arc;

use crate::api::stream::*;
use crate::error::Result;
use crate::format::*;
use crate::protocol::registry::*;
use crate::protocol::shared::*;
use crate::sys::{self};

/// Four persistent u64 words in the stream's meta file, under a name (for
/// bridges: last applied sequence numbers, counters).
///
/// ```
/// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
/// let applied = stream.user_slot("applied")?;
/// applied.set(0, 41);
/// applied.set(0, applied.get(0) + 1);
/// assert_eq!(stream.find_user_slot("applied").expect("made above").get(0), 42);
/// # Ok::<(), ipcress::Error>(())
/// ```
pub struct UserSlot {
    s: Arc<Inner>,
    slot: usize,
}

/// Offset of user word `i` in its slot.
fn word(i: usize) -> usize {
    assert!(
        i < cslot::USER_WORDS,
        "user slot word {i} out of range: a slot has {} words",
        cslot::USER_WORDS
    );
    cslot::USER + 8 * i
}

impl UserSlot {
    /// Word `i` (0..4).
    ///
    /// # Panics
    /// If `i` is 4 or more (a slot has four words), as a slice index would.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let slot = stream.user_slot("counters")?;
    /// assert_eq!(slot.get(3), 0); // new words are zero
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> u64 {
        self.s.cslot(self.slot).u64_at(word(i)).load(SeqCst)
    }
    /// Set word `i` (0..4).
    ///
    /// # Panics
    /// If `i` is 4 or more, as [`get`](Self::get).
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let slot = stream.user_slot("counters")?;
    /// slot.set(1, 7);
    /// assert_eq!((slot.get(0), slot.get(1)), (0, 7));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn set(&self, i: usize, v: u64) {
        self.s.cslot(self.slot).u64_at(word(i)).store(v, SeqCst);
    }
}

impl Stream {
    /// Find or create the user slot `name`.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// stream.user_slot("seq")?.set(0, 9);
    /// assert_eq!(stream.user_slot("seq")?.get(0), 9); // found again by name
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn user_slot(&self, name: &str) -> Result<UserSlot> {
        crate::protocol::attach::validate_name(name)?;
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
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert!(stream.find_user_slot("seq").is_none());
    /// stream.user_slot("seq")?;
    /// assert!(stream.find_user_slot("seq").is_some());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn find_user_slot(&self, name: &str) -> Option<UserSlot> {
        let s = &self.inner;
        s.find_cslot(KIND_USER, name)
            .map(|slot| UserSlot { s: s.clone(), slot })
    }

    /// Is there a committed data frame (not padding, not aborted) at `pos`?
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// let at = producer.send(b"kept")?;
    /// drop(producer.reserve(4)?); // aborted
    /// assert!(stream.is_committed(at)?);
    /// assert!(!stream.is_committed(24)?); // the aborted claim
    /// assert!(!stream.is_committed(at + 1)?); // not a frame boundary
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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

impl std::fmt::Debug for UserSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSlot")
            .field("stream", &self.s.name)
            .field("slot", &self.slot)
            .finish()
    }
}
