//! Making producers, and what a caller does with one.

use crate::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::api::grant::*;
use crate::api::stream::*;
use crate::codec::{self, Compression};
use crate::error::{Error, Result};
use crate::format::{self, *};
use crate::protocol::claim::*;
use crate::protocol::raw::*;
use crate::sys::{self, SlotRef};

impl Stream {
    /// A new producer.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// assert_eq!(producer.send(b"first")?, 0);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn producer(&self) -> Result<Producer> {
        let s = self.inner.clone();
        crate::protocol::registry::check_not_inspecting(&s)?;
        if s.opts.encrypted && s.cipher.is_none() {
            return Err(Error::KeyRequired {
                stream: s.name.clone(),
            });
        }
        // Every producer has a slot, held by its lock byte: the unblocker
        // tells a live producer's claim from a dead one's only through it.
        let mut taken = None;
        for i in 0..format::PRODUCER_SLOTS {
            let r = s.pslot(i);
            let w = r.u64_at(pslot::OWNER);
            let cur = w.load(Acquire);
            let free = cur == 0
                || (!s.live.is_alive(SlotRef::Producer(i))
                    && crate::protocol::unblock::claim_resolved(
                        &s,
                        r.u64_at(pslot::CLAIM).load(Acquire),
                    ));
            if !free {
                continue;
            }
            let Some(hold) = s.live.try_hold(SlotRef::Producer(i))? else {
                continue;
            };
            if w.compare_exchange(cur, sys::my_owner(), AcqRel, Relaxed)
                .is_ok()
            {
                r.u64_at(pslot::CLAIM).store(0, Release);
                taken = Some((r, hold, i));
                break;
            }
        }
        let Some((pslot, hold, pslot_index)) = taken else {
            return Err(Error::SlotsExhausted("producer"));
        };
        let seal_flags = F_COMMITTED
            | if s.cipher.is_some() { F_ENCRYPTED } else { 0 }
            | if s.checksummed() { F_CHECKSUM } else { 0 };
        Ok(Producer {
            s,
            pslot: Some(pslot),
            pslot_index,
            _hold: hold,
            frag_hold: None,
            seg: None,
            limit: 0,
            generation: u64::MAX,
            head_seen: 0,
            fast_end: 0,
            prefault_end: 0,
            seal_flags,
            scratch: Vec::new(),
            holds_frag_lock: false,
            messages: 0,
            bytes: 0,
            last_retention_seg: u64::MAX,
            interrupt: None,
            last_time: 0,
        })
    }
}

impl Producer {
    /// The stream this producer writes to.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("orders", &ipcress::StreamOptions::ring(1 << 16))?;
    /// assert_eq!(stream.producer()?.stream_name(), "orders");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn stream_name(&self) -> &str {
        &self.s.name
    }

    /// Largest payload accepted by `send` and `reserve`.
    /// ```
    /// use ipcress::{Error, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// let max = producer.max_message_len(); // half a segment, less header and time
    /// assert_eq!(max, (1 << 14) / 2 - 16 - 8);
    /// assert!(producer.send(&vec![0; max]).is_ok());
    /// assert!(matches!(producer.send(&vec![0; max + 1]), Err(Error::TooLarge { .. })));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn max_message_len(&self) -> usize {
        self.s.max_payload()
            - if self.s.cipher.is_some() {
                codec::TAG_LEN
            } else {
                0
            }
    }

    /// Let `flag` interrupt this producer's waits: once it is set (by a
    /// signal handler, say), a `send`, `reserve` or `writer` that waits
    /// for space on a full ring, or for another writer's fragmented
    /// message, returns [`Error::Interrupted`] within a few milliseconds.
    /// Only waits that hold no claim give up, so nothing is left half
    /// written; a claim already taken is finished as usual.
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// # use ipcress::{Error, StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let _idle = stream.subscribe(StartAt::Start)?; // reads nothing: the ring fills
    /// let mut producer = stream.producer()?;
    /// let stop = Arc::new(AtomicBool::new(false));
    /// producer.interrupt_on(stop.clone());
    /// while producer.try_send(&[0; 1000]).is_ok() {}
    /// stop.store(true, Ordering::Relaxed); // from a signal handler, say
    /// assert!(matches!(producer.send(&[0; 1000]), Err(Error::Interrupted))); // would wait
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn interrupt_on(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Append one message, waiting for space under the Block policy.
    /// Returns the record's position.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// assert_eq!(producer.send(b"one")?, 0);
    /// assert_eq!(producer.send(b"two")?, 32); // 16-byte header, 8-byte time, 8-byte aligned
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"one"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<u64> {
        self.send_frame(data, F_BEGIN | F_END, false)
    }

    /// Append one message or give `Error::Full` at once when the ring is
    /// full (Block policy).
    /// ```
    /// # use ipcress::{Error, StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let _slow = stream.subscribe(StartAt::Start)?; // reads nothing: the ring fills
    /// let mut producer = stream.producer()?;
    /// let mut sent = 0;
    /// while producer.try_send(&[0; 1000]).is_ok() {
    ///     sent += 1;
    /// }
    /// assert!(sent > 0 && matches!(producer.try_send(&[0; 1000]), Err(Error::Full)));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn try_send(&mut self, data: &[u8]) -> Result<u64> {
        self.send_frame(data, F_BEGIN | F_END, true)
    }

    /// Claim `len` bytes inside shared memory to fill in place; `commit` the
    /// grant to publish it. Dropped without commit, it becomes an aborted
    /// frame that readers skip.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let mut grant = producer.reserve(5)?;
    /// grant.copy_from_slice(b"hello"); // written in place, in the stream
    /// grant.commit()?;
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"hello"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<Grant<'_>> {
        let total = self.grant_total(len)?;
        if self.s.opts.compression != Compression::None {
            // Compression needs the whole record first: fill a buffer.
            return Ok(Grant {
                p: self,
                claim: None,
                len,
                buf: vec![0u8; len],
            });
        }
        let claim = self.claim(total, false)?;
        Ok(Grant {
            p: self,
            claim: Some(claim),
            len,
            buf: Vec::new(),
        })
    }

    /// The frame a grant of `len` bytes takes (with the tag of an
    /// encrypted stream and the time word of a timed one), or `TooLarge`.
    pub(crate) fn grant_total(&self, len: usize) -> Result<u64> {
        let max = self.max_message_len();
        if len > max {
            return Err(Error::TooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        let tag = if self.s.cipher.is_some() {
            codec::TAG_LEN
        } else {
            0
        };
        Ok(self.s.frame_total(len + tag))
    }

    /// A writer for one message of any size, streamed in fragments. While
    /// it is open, other producers of the stream wait.
    /// ```
    /// use std::io::Write;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let big = vec![7u8; 3 * producer.max_message_len()];
    /// let mut writer = producer.writer()?;
    /// writer.write_all(&big).expect("written");
    /// assert_eq!(writer.finish()?, 0);
    /// let msg = consumer.recv()?;
    /// assert!(msg.is_fragmented());
    /// assert_eq!(msg.to_vec()?, big);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn writer(&mut self) -> Result<MessageWriter<'_>> {
        self.acquire_frag_lock()?;
        let chunk = (self.max_message_len() / 2).clamp(1, 256 << 10);
        Ok(MessageWriter {
            p: self,
            buf: Vec::with_capacity(chunk),
            chunk,
            first: None,
            finished: false,
        })
    }
}

impl Producer {
    /// Claim a frame for `f`, to be committed with `RawGrant::commit`.
    /// Fragments (`Flags::BEGIN` without `Flags::END`, continuations) take
    /// the stream's fragment lock until the frame with `Flags::END`.
    /// ```
    /// use ipcress::{Flags, RawFrame};
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let frame = RawFrame { flags: Flags::BEGIN | Flags::END, origin: stream.id(), origin_position: 0, data: b"raw".to_vec(), time: None };
    /// let grant = producer.reserve_raw(&frame)?;
    /// assert_eq!(grant.position(), 0);
    /// grant.commit()?;
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"raw"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn reserve_raw(&mut self, f: &RawFrame) -> Result<RawGrant<'_>> {
        let flags = f.flags.bits();
        let foreign = flags & F_ENCRYPTED != 0;
        if foreign && !self.s.opts.encrypted {
            return Err(Error::InvalidOptions(format!(
                "stream {} is not encrypted: it cannot take encrypted frames",
                self.s.name
            )));
        }
        if !foreign && self.s.opts.encrypted {
            return Err(Error::InvalidOptions(format!(
                "stream {} is encrypted: it takes encrypted frames only",
                self.s.name
            )));
        }
        let stored = f.data.len() + if foreign { ORIGIN_LEN } else { 0 };
        if stored > self.s.max_payload() {
            return Err(Error::TooLarge {
                len: stored as u64,
                max: self.s.max_payload() as u64,
            });
        }
        let fragment = flags & (F_BEGIN | F_END) != (F_BEGIN | F_END);
        if fragment && !self.holds_frag_lock {
            self.acquire_frag_lock()?;
        }
        let claim = self.claim(self.s.frame_total(stored), false)?;
        let mut body = claim.body;
        if foreign {
            let region = claim.frame.region();
            region.write(body, &f.origin);
            region.write(body + 16, &f.origin_position.to_le_bytes());
            body += ORIGIN_LEN;
        }
        claim.frame.region().write(body, &f.data);
        let release = fragment && flags & F_END != 0;
        Ok(RawGrant {
            p: self,
            claim: Some(claim),
            len: stored as u32,
            flags: flags | if foreign { F_FOREIGN } else { 0 },
            release,
        })
    }

    /// Write a raw frame at once. Returns its position.
    /// ```
    /// # use std::time::Duration;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let from = Stream::create_in_memory("from", &StreamOptions::ring(1 << 16))?;
    /// let to = Stream::create_in_memory("to", &StreamOptions::ring(1 << 16))?;
    /// let (mut bridge, mut reader) = (from.subscribe(StartAt::Start)?, to.subscribe(StartAt::Start)?);
    /// from.producer()?.send(b"carried")?;
    /// let (_, frame) = bridge.recv_raw_timeout(Duration::from_millis(10))?.expect("sent above");
    /// to.producer()?.send_raw(&frame)?;
    /// assert_eq!(reader.recv()?.bytes(), Some(&b"carried"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn send_raw(&mut self, f: &RawFrame) -> Result<u64> {
        self.reserve_raw(f)?.commit()
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.s.name)
            .finish()
    }
}
