//! Grants and writers: space claimed in the stream that the caller fills
//! in place, committed as one record or as a fragmented message.

use std::io;

use crate::codec::{self};
use crate::error::Result;
use crate::format::*;
use crate::protocol::claim::*;
use std::ops::{Deref, DerefMut};

/// A claimed raw frame; see [`Producer::reserve_raw`].
#[must_use = "a grant or writer dropped without commit or finish aborts its record"]
pub struct RawGrant<'a> {
    pub(crate) p: &'a mut Producer,
    pub(crate) claim: Option<Claim>,
    pub(crate) len: u32,
    pub(crate) flags: u16,
    pub(crate) release: bool,
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
    pub(crate) p: &'a mut Producer,
    pub(crate) claim: Option<Claim>,
    pub(crate) len: usize,
    /// Staging buffer when the stream compresses.
    pub(crate) buf: Vec<u8>,
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
    pub(crate) p: &'a mut Producer,
    pub(crate) buf: Vec<u8>,
    pub(crate) chunk: usize,
    pub(crate) first: Option<u64>,
    pub(crate) finished: bool,
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
