//! Grants and writers: space claimed in the stream that the caller fills
//! in place, committed as one record or as a fragmented message.

use std::io;

use crate::codec::{self};
use crate::error::Result;
use crate::format::*;
use crate::protocol::claim::*;
use std::ops::{Deref, DerefMut};

/// A claimed raw frame; see [`Producer::reserve_raw`].
/// ```
/// # use ipcress::{Flags, RawFrame, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut producer = stream.producer()?;
/// let frame = RawFrame { flags: Flags::BEGIN | Flags::END, origin: stream.id(), origin_position: 0, data: vec![1, 2, 3], time: None };
/// let grant = producer.reserve_raw(&frame)?;
/// let at = grant.position();
/// assert_eq!(grant.commit()?, at);
/// assert!(stream.is_committed(at)?);
/// # Ok::<(), ipcress::Error>(())
/// ```
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
    /// ```
    /// # use ipcress::{Flags, RawFrame, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut producer = stream.producer()?;
    /// # let frame = RawFrame { flags: Flags::BEGIN | Flags::END, origin: stream.id(), origin_position: 0, data: vec![1, 2, 3], time: None };
    /// producer.send(b"before")?;
    /// assert_eq!(producer.reserve_raw(&frame)?.position(), 32);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.claim.as_ref().map_or(0, |c| c.pos)
    }

    /// Publish the frame.
    /// ```
    /// # use ipcress::{Flags, RawFrame, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut producer = stream.producer()?;
    /// # let frame = RawFrame { flags: Flags::BEGIN | Flags::END, origin: stream.id(), origin_position: 0, data: vec![1, 2, 3], time: None };
    /// let at = producer.reserve_raw(&frame)?.commit()?;
    /// assert!(stream.is_committed(at)?);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
///
/// Dropped without [`commit`](Self::commit), the record is aborted and
/// readers skip it:
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::Start)?;
/// let mut producer = stream.producer()?;
/// let mut grant = producer.reserve(4)?;
/// grant.copy_from_slice(b"lost");
/// drop(grant); // aborted
/// let mut grant = producer.reserve(4)?;
/// grant.copy_from_slice(b"kept");
/// grant.commit()?;
/// assert_eq!(consumer.recv()?.bytes(), Some(&b"kept"[..]));
/// # Ok::<(), ipcress::Error>(())
/// ```
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
    /// ```
    /// use ipcress::{Compression, Stream, StreamOptions};
    /// let plain = Stream::create_in_memory("plain", &StreamOptions::ring(1 << 16))?;
    /// assert_eq!(plain.producer()?.reserve(8)?.position(), Some(0));
    /// let lz4 = StreamOptions::ring(1 << 16).compression(Compression::Lz4);
    /// let packed = Stream::create_in_memory("packed", &lz4)?;
    /// assert_eq!(packed.producer()?.reserve(8)?.position(), None); // claimed at commit
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn position(&self) -> Option<u64> {
        self.claim.as_ref().map(|c| c.pos)
    }

    /// Publish the record. Returns its position.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// producer.send(b"first")?;
    /// let mut grant = producer.reserve(3)?;
    /// grant.copy_from_slice(b"abc");
    /// assert_eq!(grant.commit()?, 32);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
            Some(c) => c.frame.bytes(c.body, self.len),
            None => &self.buf,
        }
    }
}

impl DerefMut for Grant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.claim {
            Some(c) => c.frame.bytes_mut(c.body, self.len),
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
///
/// It implements [`io::Write`]: what is written goes out in fragments as
/// the buffer fills, [`finish`](Self::finish) writes the last one.
/// ```
/// use std::io::Write;
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// # let mut consumer = stream.subscribe(StartAt::Start)?;
/// let mut producer = stream.producer()?;
/// let mut writer = producer.writer()?;
/// for line in ["a,1\n", "b,2\n"] {
///     writer.write_all(line.as_bytes()).expect("written");
/// }
/// writer.finish()?;
/// assert_eq!(consumer.recv()?.to_vec()?, b"a,1\nb,2\n");
/// # Ok::<(), ipcress::Error>(())
/// ```
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
    /// ```
    /// use std::io::Write;
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// let mut writer = producer.writer()?;
    /// writer.write_all(b"short").expect("written");
    /// assert_eq!(writer.finish()?, 0); // the message's first fragment
    /// assert!(stream.is_committed(0)?);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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

impl std::fmt::Debug for RawGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawGrant")
            .field("position", &self.claim.as_ref().map(|c| c.pos))
            .field("len", &self.len)
            .field("flags", &self.flags)
            .finish()
    }
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("position", &self.position())
            .field("len", &self.len)
            .finish()
    }
}

impl std::fmt::Debug for MessageWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("first_position", &self.first)
            .field("buffered", &self.buf.len())
            .finish()
    }
}
