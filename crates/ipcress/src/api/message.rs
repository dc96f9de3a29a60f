//! A received message: borrowed from shared memory, or streamed fragment
//! by fragment.

use std::io;

use crate::error::{Error, Result};
use crate::format::*;
use crate::protocol::read::*;

/// One message. It borrows the consumer: the next `recv` needs it back.
///
/// ```
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// let mut consumer = stream.subscribe(StartAt::Start)?;
/// stream.producer()?.send(b"hello")?;
/// let msg = consumer.recv()?;
/// assert_eq!((msg.position(), msg.is_fragmented()), (0, false));
/// assert_eq!(msg.bytes(), Some(&b"hello"[..])); // borrowed from the stream
/// # Ok::<(), ipcress::Error>(())
/// ```
pub struct Message<'a> {
    pub(crate) c: &'a mut Consumer,
    pub(crate) d: Delivered,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("position", &self.d.pos)
            .field("fragmented", &self.is_fragmented())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// The record's position in the stream.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let at = stream.producer()?.send(b"x")?;
    /// assert_eq!(consumer.recv()?.position(), at);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn position(&self) -> u64 {
        self.d.pos
    }

    /// When the message was committed (its first fragment, for a
    /// fragmented one): the producer's clock at commit, CLOCK_REALTIME.
    /// None in a stream of format version 3, whose records carry no time.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let before = std::time::SystemTime::now();
    /// stream.producer()?.send(b"x")?;
    /// let at = consumer.recv()?.time().expect("format 4 records carry their time");
    /// assert!(at >= before && at <= std::time::SystemTime::now());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn time(&self) -> Option<std::time::SystemTime> {
        ns_to_time(self.d.time)
    }

    /// Whether the message spans several fragments (read it with
    /// [`reader`](Self::reader) or [`to_vec`](Self::to_vec)).
    /// ```
    /// use std::io::Write;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let big = vec![1u8; 2 * producer.max_message_len()];
    /// let mut writer = producer.writer()?;
    /// writer.write_all(&big).expect("written");
    /// writer.finish()?;
    /// let msg = consumer.recv()?;
    /// assert!(msg.is_fragmented() && msg.bytes().is_none());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn is_fragmented(&self) -> bool {
        self.d.flags & F_END == 0
    }

    /// The bytes of a message that fits in one frame. Borrowed from shared
    /// memory when the stream neither compresses nor encrypts nor overwrites.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"in one frame")?;
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"in one frame"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    #[inline]
    pub fn bytes(&self) -> Option<&[u8]> {
        if self.is_fragmented() {
            return None;
        }
        Some(self.first_fragment())
    }

    #[inline]
    fn first_fragment(&self) -> &[u8] {
        match &self.d.body {
            Body::Mapped(held) => held.bytes(),
            Body::Buffer => &self.c.buf,
        }
    }

    /// The whole message, reassembled.
    /// ```
    /// use std::io::Write;
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    /// let mut writer = producer.writer()?;
    /// writer.write_all(&big).expect("written");
    /// writer.finish()?;
    /// assert_eq!(consumer.recv()?.to_vec()?, big);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn to_vec(self) -> Result<Vec<u8>> {
        if !self.is_fragmented() {
            return Ok(self.first_fragment().to_vec());
        }
        let mut v = Vec::new();
        let mut r = self.reader();
        io::Read::read_to_end(&mut r, &mut v).map_err(|e| match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Error::io("read message", e),
        })?;
        Ok(v)
    }

    /// The message copied out of the stream, reassembled if it was
    /// fragmented: it no longer borrows the consumer.
    ///
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// # stream.producer()?.send(b"kept")?;
    /// let kept = consumer.recv()?.into_owned()?;
    /// assert_eq!(&*kept, b"kept");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn into_owned(self) -> Result<OwnedMessage> {
        let position = self.position();
        let time = self.d.time;
        Ok(OwnedMessage {
            position,
            time,
            bytes: self.to_vec()?,
        })
    }

    /// Read the message as a stream of bytes, fragment by fragment, without
    /// reassembling it in memory.
    /// ```
    /// use std::io::{Read, Write};
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let mut writer = producer.writer()?;
    /// writer.write_all(&vec![b'x'; 30_000]).expect("written");
    /// writer.finish()?;
    /// let mut reader = consumer.recv()?.reader();
    /// let (mut chunk, mut total) = ([0u8; 4096], 0);
    /// loop {
    ///     match reader.read(&mut chunk).expect("read") {
    ///         0 => break,
    ///         n => total += n,
    ///     }
    /// }
    /// assert_eq!(total, 30_000);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn reader(self) -> MessageReader<'a> {
        let first = self.first_fragment().to_vec();
        let end = !self.is_fragmented();
        MessageReader {
            start: self.d.pos,
            c: self.c,
            cur: first,
            at: 0,
            done: end,
            failed: None,
        }
    }
}

/// A commit time word as a time (0: none).
fn ns_to_time(ns: u64) -> Option<std::time::SystemTime> {
    (ns != 0).then(|| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

/// `io::Read` over a (possibly fragmented) message.
///
/// A read fails with an `io::Error` that carries the library's [`Error`]
/// (`io::Error::get_ref` / `into_inner`, then downcast). Two of them mean
/// the message was skipped and the consumer goes on, like a lapped one:
/// [`Error::Aborted`] (its producer died in the middle of it) and
/// [`Error::Lagged`] (Overwrite policy: it was overwritten while read).
/// Either way the consumer is already past the message and its next
/// `recv` returns the next one. After any error, every further read fails
/// too (the bytes that would follow belong to no message).
///
/// ```
/// use std::io::Read;
/// # use ipcress::{StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// # let mut consumer = stream.subscribe(StartAt::Start)?;
/// stream.producer()?.send(b"line one\nline two\n")?;
/// let mut text = String::new();
/// consumer.recv()?.reader().read_to_string(&mut text).expect("read");
/// assert_eq!(text.lines().count(), 2);
/// # Ok::<(), ipcress::Error>(())
/// ```
pub struct MessageReader<'a> {
    pub(crate) c: &'a mut Consumer,
    pub(crate) start: u64,
    pub(crate) cur: Vec<u8>,
    pub(crate) at: usize,
    pub(crate) done: bool,
    /// The error that ended this reader, repeated by every later read.
    pub(crate) failed: Option<(io::ErrorKind, String)>,
}

impl MessageReader<'_> {
    /// Fetch the next fragment into `cur`. Ok(false) at the end.
    fn next_fragment(&mut self) -> Result<bool> {
        let c = &mut *self.c;
        let mut spins = 0u32;
        loop {
            let (p, peek) = c.peek_here()?;
            match peek {
                Peek::Empty => {
                    c.check_hole(p)?;
                    if c.fragments_abandoned(p)? {
                        c.close_open(p);
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    spins += 1;
                    if spins < SPINS {
                        crate::sync::spin_loop();
                    } else {
                        spins = 0;
                        c.park(None)?;
                    }
                }
                Peek::Frame(f) => {
                    let (flags, total) = (f.flags, f.total);
                    if flags & F_PADDING != 0 || (flags & F_ABORTED != 0 && flags & F_END == 0) {
                        c.fragment_read(p, total, flags);
                        c.pos = p + total;
                        continue;
                    }
                    if flags & F_BEGIN != 0 {
                        // The writer died mid-message; the next message
                        // starts here.
                        c.close_open(p);
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    if flags & F_ABORTED != 0 {
                        c.fragment_read(p, total, flags);
                        c.pos = p + total;
                        c.msg_start = None;
                        return Err(Error::Aborted {
                            position: self.start,
                        });
                    }
                    let body = match c.decode(p, &f) {
                        Ok((b, _)) => b,
                        Err(e) if matches!(c.kind, Kind::Member { .. }) => {
                            return Err(c.undecodable(p, e));
                        }
                        Err(e) => return Err(e),
                    };
                    self.cur.clear();
                    match body {
                        Body::Mapped(held) => self.cur.extend_from_slice(held.bytes()),
                        Body::Buffer => self.cur.extend_from_slice(&c.buf),
                    }
                    self.at = 0;
                    c.pos = p + total;
                    if let Kind::Member { .. } = c.kind {
                        c.fragment_read(p, total, flags);
                    }
                    if flags & F_END != 0 {
                        self.done = true;
                        // A member's run is acknowledged by its next
                        // `recv`, read whole or not. A durable consumer's
                        // saved position stays at the message's start
                        // until then too: read to its end is not yet
                        // processed (a kill here delivers it again).
                        if let Kind::Member { .. } = c.kind {
                            c.msg_start = None;
                        }
                    }
                    if c.auto_commit && matches!(c.kind, Kind::Durable | Kind::Subscriber) {
                        // Saved at the message's start until the next
                        // `recv` (or `commit`) moves on.
                        let np = c.save_point();
                        c.publish(np);
                    }
                    return Ok(true);
                }
            }
        }
    }
}

impl io::Read for MessageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.cur.len() {
                let n = out.len().min(self.cur.len() - self.at);
                out[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_fragment() {
                self.c.note_damage(&e);
                self.failed = Some((io::ErrorKind::Other, e.to_string()));
                self.cur.clear();
                self.at = 0;
                return Err(io::Error::other(e));
            }
        }
    }
}

/// A message copied out of the stream (see [`Message::into_owned`],
/// [`Consumer::recv_owned`](crate::Consumer::recv_owned)): its position and
/// its bytes, which it dereferences to.
///
/// ```
/// # use ipcress::{OwnedMessage, StartAt, Stream, StreamOptions};
/// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
/// # let mut consumer = stream.subscribe(StartAt::Start)?;
/// stream.producer()?.send(b"abc")?;
/// let kept: OwnedMessage = consumer.recv_owned()?;
/// assert_eq!((kept.len(), kept.as_ref()), (3, &b"abc"[..]));
/// # Ok::<(), ipcress::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMessage {
    position: u64,
    time: u64,
    bytes: Vec<u8>,
}

impl OwnedMessage {
    /// The position of the message in its stream.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// # let mut producer = stream.producer()?;
    /// producer.send(b"a")?;
    /// let at = producer.send(b"b")?;
    /// consumer.recv()?;
    /// assert_eq!(consumer.recv_owned()?.position(), at);
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.position
    }

    /// When the message was committed, as [`Message::time`].
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"x")?;
    /// assert!(consumer.recv_owned()?.time().is_some());
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn time(&self) -> Option<std::time::SystemTime> {
        ns_to_time(self.time)
    }

    /// The bytes, without a copy.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// # let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// # let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"mine")?;
    /// let bytes: Vec<u8> = consumer.recv_owned()?.into_bytes();
    /// assert_eq!(bytes, b"mine");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::ops::Deref for OwnedMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for OwnedMessage {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for MessageReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("position", &self.start)
            .field("done", &self.done)
            .finish()
    }
}
