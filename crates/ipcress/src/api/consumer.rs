//! Making consumers, and what a caller does with one.

use crate::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use crate::api::message::OwnedMessage;
use crate::api::message::*;
use crate::api::stream::*;
use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::read::*;
use crate::protocol::registry::*;
use crate::sys::{self, SlotRef};

impl Stream {
    /// Open or create the durable consumer `name` (new ones start at the
    /// oldest retained record).
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// stream.producer()?.send(b"kept")?;
    /// let mut audit = stream.consumer("audit")?;
    /// assert_eq!(audit.recv()?.bytes(), Some(&b"kept"[..]));
    /// audit.commit()?;
    /// drop(audit);
    /// assert_eq!(stream.consumer("audit")?.position(), 32); // where it left off
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        self.consumer_from(name, StartAt::Start)
    }

    /// Open the durable consumer `name`, creating it at `from` if new.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// stream.producer()?.send(b"old news")?;
    /// let mut fresh = stream.consumer_from("fresh", StartAt::End)?;
    /// assert_eq!(fresh.position(), stream.tail());
    /// assert!(fresh.try_recv()?.is_none());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// producer.send(b"before")?;
    /// let mut all = stream.subscribe(StartAt::Start)?;
    /// let mut new = stream.subscribe(StartAt::End)?;
    /// producer.send(b"after")?;
    /// assert_eq!(all.recv()?.bytes(), Some(&b"before"[..]));
    /// assert_eq!(new.recv()?.bytes(), Some(&b"after"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let (mut a, mut b) = (stream.group("workers")?, stream.group("workers")?);
    /// let mut producer = stream.producer()?;
    /// for i in 0..4u8 {
    ///     producer.send(&[i])?;
    /// }
    /// let mut got = Vec::new();
    /// for member in [&mut a, &mut b] {
    ///     while let Some(m) = member.try_recv()? {
    ///         got.push(m.to_vec()?[0]);
    ///     }
    /// }
    /// got.sort();
    /// assert_eq!(got, [0, 1, 2, 3]); // each message to one member
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn group(&self, group: &str) -> Result<Consumer> {
        self.group_from(group, StartAt::Start)
    }

    /// Join group `group`, creating it at `from` if new.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// producer.send(b"before")?;
    /// let mut worker = stream.group_from("workers", StartAt::End)?;
    /// producer.send(b"after")?;
    /// assert_eq!(worker.recv()?.bytes(), Some(&b"after"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{Error, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let audit = stream.consumer("audit")?;
    /// assert!(matches!(stream.remove_consumer("audit"), Err(Error::InUse { .. })));
    /// drop(audit);
    /// stream.remove_consumer("audit")?;
    /// assert!(stream.consumers().is_empty());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let _audit = stream.consumer("audit")?;
    /// let _live = stream.subscribe(StartAt::End)?;
    /// let kinds: Vec<_> = stream.consumers().iter().map(|c| (c.name.clone(), c.kind)).collect();
    /// assert_eq!(kinds, [("audit".to_string(), "durable"), (String::new(), "subscriber")]);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn consumers(&self) -> Vec<crate::protocol::registry::ConsumerInfo> {
        self.inner.consumers()
    }

    /// Messages and bytes written by producers, and how many are live. A
    /// live producer adds its counts every 4096 messages and when it is
    /// dropped, so the totals trail the stream by up to that much per
    /// producer.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// let mut producer = stream.producer()?;
    /// producer.send(b"abc")?;
    /// producer.send(b"de")?;
    /// assert_eq!(stream.producer_totals().2, 1); // one producer live
    /// drop(producer); // a producer adds its counts to the stream's now and then, and when dropped
    /// assert_eq!(stream.producer_totals(), (2, 5, 0));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn producer_totals(&self) -> (u64, u64, usize) {
        self.inner.producer_totals()
    }
}

impl Consumer {
    /// With auto-commit off (durable consumers and subscribers), the
    /// position is saved, and the ring released to producers, only by
    /// [`commit`](Self::commit) or [`commit_to`](Self::commit_to): a bridge
    /// commits what the far side acknowledged, not what it has read.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// stream.producer()?.send(b"not yet acknowledged")?;
    /// let mut bridge = stream.consumer("bridge")?;
    /// bridge.set_auto_commit(false);
    /// bridge.recv()?;
    /// bridge.recv_timeout(std::time::Duration::from_millis(1))?; // moves on, saves nothing
    /// drop(bridge);
    /// assert_eq!(stream.consumer("bridge")?.position(), 0); // delivered again
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    /// Save `position` (a frame boundary this consumer has read up to) as
    /// the durable position. It must not be past the consumer's position.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// # let mut producer = stream.producer()?;
    /// let (first, second) = (producer.send(b"one")?, producer.send(b"two")?);
    /// let mut bridge = stream.consumer("bridge")?;
    /// bridge.set_auto_commit(false);
    /// bridge.recv()?;
    /// bridge.recv()?;
    /// bridge.commit_to(second)?; // the far side acknowledged "one" only
    /// drop(bridge);
    /// assert_eq!(stream.consumer("bridge")?.position(), second);
    /// # let _ = first; Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions, Wait};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut hot = stream.subscribe(StartAt::End)?;
    /// hot.set_wait(Wait::Spin); // burns a core while it waits
    /// assert!(hot.recv_timeout(std::time::Duration::from_millis(1))?.is_none());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn set_wait(&mut self, w: Wait) {
        self.wait = w;
    }

    /// Next position this consumer reads (for a group member: the group's).
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"abc")?;
    /// assert_eq!(consumer.position(), 0);
    /// consumer.recv()?;
    /// assert_eq!(consumer.position(), 32);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// assert_eq!(stream.consumer("audit")?.name(), "audit");
    /// assert_eq!(stream.subscribe(StartAt::End)?.name(), "");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mark every message returned so far as processed: a durable consumer's
    /// position is saved, a group member acknowledges what it has read of
    /// its run.
    /// ```
    /// # let stream = ipcress::Stream::create_in_memory("doc", &ipcress::StreamOptions::ring(1 << 16))?;
    /// stream.producer()?.send(b"done")?;
    /// let mut audit = stream.consumer("audit")?;
    /// audit.recv()?;
    /// audit.commit()?; // processed: not delivered again
    /// drop(audit);
    /// assert!(stream.consumer("audit")?.try_recv()?.is_none());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let sender = stream.clone();
    /// std::thread::spawn(move || sender.producer()?.send(b"from a thread"));
    /// let msg = consumer.recv()?; // waits for it
    /// assert_eq!(msg.bytes(), Some(&b"from a thread"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn recv(&mut self) -> Result<Message<'_>> {
        let d = self.recv_until(None);
        let d = self.noted(d)?.expect("no deadline");
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
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// assert!(consumer.try_recv()?.is_none());
    /// stream.producer()?.send(b"ready")?;
    /// assert_eq!(consumer.try_recv()?.expect("sent").bytes(), Some(&b"ready"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        self.release_held();
        let d = self.poll();
        match self.noted(d)? {
            Some(d) => Ok(Some(Message { c: self, d })),
            None => Ok(None),
        }
    }

    /// Wait up to `timeout` for the next message.
    /// ```
    /// use std::time::Duration;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// assert!(consumer.recv_timeout(Duration::from_millis(2))?.is_none());
    /// stream.producer()?.send(b"late")?;
    /// assert!(consumer.recv_timeout(Duration::from_millis(2))?.is_some());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message<'_>>> {
        let deadline = Instant::now() + timeout;
        let d = self.recv_until(Some(deadline));
        match self.noted(d)? {
            Some(d) => Ok(Some(Message { c: self, d })),
            None => Ok(None),
        }
    }

    /// Remember whether this read reported damage at our position (what
    /// [`skip_damaged`](Self::skip_damaged) may then skip) or delivered a
    /// record (nothing to skip).
    #[inline(always)]
    fn noted<T>(&mut self, r: Result<Option<T>>) -> Result<Option<T>> {
        match &r {
            Ok(Some(_)) => self.damaged = false,
            Ok(None) => {}
            Err(e) => self.note_damage(e),
        }
        r
    }

    pub(crate) fn note_damage(&mut self, e: &Error) {
        if matches!(e, Error::Corrupt { .. } | Error::Decode { .. }) {
            self.damaged = true;
        }
    }
}

/// The messages of a consumer, copied out one by one ([`Consumer::messages`]).
///
/// A `&mut Consumer` is an iterator too:
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::Start)?;
/// for n in 1..=3u8 {
///     stream.producer()?.send(&[n])?;
/// }
/// let mut sum = 0;
/// for msg in (&mut consumer).into_iter().take(3) {
///     sum += msg?[0];
/// }
/// assert_eq!(sum, 6);
/// # Ok::<(), ipcress::Error>(())
/// ```
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
