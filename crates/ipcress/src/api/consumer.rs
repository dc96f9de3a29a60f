//! Making consumers, and what a caller does with one.

use crate::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use crate::api::message::OwnedMessage;
use crate::api::message::*;
use crate::api::stream::*;
use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::raw::*;
use crate::protocol::read::*;
use crate::protocol::registry::*;
use crate::sys::{self, SlotRef};

impl Stream {
    /// Open or create the durable consumer `name` (new ones start at the
    /// oldest retained record).
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        self.consumer_from(name, StartAt::Start)
    }

    /// Open the durable consumer `name`, creating it at `from` if new.
    pub fn consumer_from(&self, name: &str, from: StartAt) -> Result<Consumer> {
        crate::protocol::attach::validate_name(name)?;
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
        crate::protocol::attach::validate_name(group)?;
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
    pub fn consumers(&self) -> Vec<crate::protocol::registry::ConsumerInfo> {
        self.inner.consumers()
    }

    /// Messages and bytes written by producers, and how many are live.
    pub fn producer_totals(&self) -> (u64, u64, usize) {
        self.inner.producer_totals()
    }
}

impl Consumer {
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

    /// Wait for the next message and copy it out of the stream: the owned
    /// message does not borrow the consumer.
    ///
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"one")?;
    /// let msg = consumer.recv_owned()?;
    /// assert_eq!((msg.position(), &*msg), (0, &b"one"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn recv_owned(&mut self) -> Result<OwnedMessage> {
        self.recv()?.into_owned()
    }

    /// The messages of the stream, each copied out, waiting for each in
    /// turn: an iterator that never ends by itself (an error is yielded and
    /// the next call goes on, as [`recv`](Self::recv) would).
    ///
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// for word in ["a", "b", "c"] {
    ///     producer.send(word.as_bytes())?;
    /// }
    /// let got: Vec<Vec<u8>> = consumer
    ///     .messages()
    ///     .take(3)
    ///     .map(|m| m.map(|m| m.into_bytes()))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(got, [b"a", b"b", b"c"]);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn messages(&mut self) -> Messages<'_> {
        Messages { c: self }
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
            Some(seg) => crate::protocol::unblock::next_valid(&s, &seg, p, tail.min(seg_end)),
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
}

/// The messages of a consumer, copied out one by one ([`Consumer::messages`]).
#[derive(Debug)]
pub struct Messages<'a> {
    c: &'a mut Consumer,
}

impl Iterator for Messages<'_> {
    type Item = Result<OwnedMessage>;

    fn next(&mut self) -> Option<Result<OwnedMessage>> {
        Some(self.c.recv_owned())
    }
}

impl<'a> IntoIterator for &'a mut Consumer {
    type Item = Result<OwnedMessage>;
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        self.messages()
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.s.name)
            .field("name", &self.name)
            .field("position", &self.position())
            .finish()
    }
}
