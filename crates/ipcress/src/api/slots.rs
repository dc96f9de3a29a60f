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
