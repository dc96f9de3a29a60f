//! The async API (feature `tokio`): receive, stream and send without
//! blocking the runtime's threads. It needs no particular runtime: the
//! futures are woken by the process's notifier thread
//! (docs/ARCHITECTURE.md, "Async waiting"); the tests and examples use
//! tokio.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::api::grant::Grant;
use crate::api::message::OwnedMessage;
use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::protocol::claim::Producer;
use crate::protocol::raw::RawFrame;
use crate::protocol::read::Consumer;

impl Consumer {
    /// Wait for the next message without blocking the thread, and copy it
    /// out (a borrowed message could not be held across an `.await`
    /// without keeping the consumer). Like [`recv_owned`](Self::recv_owned)
    /// otherwise: the same errors, and the same position saving.
    ///
    /// Cancellation safe: a `recv_async` dropped before it completes has
    /// taken nothing (the next receive gets the record) and leaves no
    /// waiter registered. It polls for a few microseconds as `recv` does
    /// (holding the runtime's thread that long), then sleeps on the
    /// process's notifier (no thread per waiter, no polling while idle).
    /// [`set_wait`](Self::set_wait) does not apply: it never busy-spins
    /// longer.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let msg = rt.block_on(async {
    ///     let sender = stream.clone();
    ///     std::thread::spawn(move || sender.producer()?.send(b"later"));
    ///     consumer.recv_async().await // the runtime's thread is free meanwhile
    /// })?;
    /// assert_eq!(&*msg, b"later");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub async fn recv_async(&mut self) -> Result<OwnedMessage> {
        self.until_async(|c| match c.try_recv()? {
            Some(m) => m.into_owned().map(Some),
            None => Ok(None),
        })
        .await
    }

    /// Wait for the next stored frame, as stored (see
    /// [`recv_raw_timeout`](Self::recv_raw_timeout)), without blocking
    /// the thread. Cancellation safe, as [`recv_async`](Self::recv_async).
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut bridge = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"as stored")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let (at, frame) = rt.block_on(bridge.recv_raw_async())?;
    /// assert_eq!((at, &frame.data[..]), (0, &b"as stored"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub async fn recv_raw_async(&mut self) -> Result<(u64, RawFrame)> {
        self.until_async(|c| c.recv_raw_timeout(Duration::ZERO))
            .await
    }

    /// The messages of the stream as a `futures` [`Stream`](futures_core::Stream)
    /// of [`recv_async`](Self::recv_async) results, borrowing the consumer.
    /// It never ends by itself (an error is yielded and the stream goes
    /// on, as [`messages`](Self::messages) does).
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use futures_core::Stream as _;
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// stream.producer()?.send(b"one")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let mut messages = consumer.stream();
    /// let first = rt.block_on(poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)));
    /// assert_eq!(&*first.expect("never ends")?, b"one");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn stream(&mut self) -> MessageStream<'_> {
        MessageStream {
            held: Some(Held::Borrowed(self)),
            fut: None,
        }
    }

    /// Like [`stream`](Self::stream), owning the consumer: a `'static`
    /// stream to move into a task.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use futures_core::Stream as _;
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut messages = stream.subscribe(StartAt::Start)?.into_stream();
    /// stream.producer()?.send(b"one")?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let task = rt.spawn(async move { poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await });
    /// let first = rt.block_on(task).unwrap();
    /// assert_eq!(&*first.expect("never ends")?, b"one");
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub fn into_stream(self) -> MessageStream<'static> {
        MessageStream {
            held: Some(Held::Owned(Box::new(self))),
            fut: None,
        }
    }
}

enum Held<'a> {
    Owned(Box<Consumer>),
    Borrowed(&'a mut Consumer),
}

impl Held<'_> {
    fn consumer(&mut self) -> &mut Consumer {
        match self {
            Held::Owned(c) => c,
            Held::Borrowed(c) => c,
        }
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = (Held<'a>, Result<OwnedMessage>)> + Send + 'a>>;

/// A consumer's messages as a [`futures_core::Stream`]
/// ([`Consumer::stream`], [`Consumer::into_stream`]). Dropping it while a
/// message is awaited loses no message.
pub struct MessageStream<'a> {
    held: Option<Held<'a>>,
    fut: Option<Pending<'a>>,
}

impl std::fmt::Debug for MessageStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("waiting", &self.fut.is_some())
            .finish()
    }
}

impl<'a> futures_core::Stream for MessageStream<'a> {
    type Item = Result<OwnedMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.fut.is_none() {
            let Some(mut held) = this.held.take() else {
                return Poll::Ready(None);
            };
            this.fut = Some(Box::pin(async move {
                let r = held.consumer().recv_async().await;
                (held, r)
            }));
        }
        let fut = this.fut.as_mut().expect("set above");
        match fut.as_mut().poll(cx) {
            Poll::Ready((held, r)) => {
                this.fut = None;
                this.held = Some(held);
                Poll::Ready(Some(r))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Producer {
    /// Append one message, waiting for space under the Block policy without
    /// blocking the thread: [`send`](Self::send) for async code. Returns
    /// the record's position. Dropped while it waits, nothing was written.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// assert_eq!(rt.block_on(producer.send_async(b"one"))?, 0);
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"one"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub async fn send_async(&mut self, data: &[u8]) -> Result<u64> {
        self.until_space(|p| p.try_send(data)).await
    }

    /// Claim `len` bytes to fill in place, waiting for space under the
    /// Block policy without blocking the thread: [`reserve`](Self::reserve)
    /// for async code. On a compressed stream the claim happens at commit
    /// (as with `reserve`): this waits until the uncompressed record would
    /// fit, and the commit may still wait briefly if another producer took
    /// the space first.
    /// ```
    /// # use ipcress::{StartAt, Stream, StreamOptions};
    /// let stream = Stream::create_in_memory("doc", &StreamOptions::ring(1 << 16))?;
    /// let mut consumer = stream.subscribe(StartAt::Start)?;
    /// let mut producer = stream.producer()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let mut grant = producer.reserve_async(5).await?;
    ///     grant.copy_from_slice(b"hello");
    ///     grant.commit()
    /// })?;
    /// assert_eq!(consumer.recv()?.bytes(), Some(&b"hello"[..]));
    /// # Ok::<(), ipcress::Error>(())
    /// ```
    pub async fn reserve_async(&mut self, len: usize) -> Result<Grant<'_>> {
        let total = self.grant_total(len)?;
        if self.s.opts.compression != Compression::None {
            self.until_space(|p| {
                if p.must_wait(p.s.tail() + total) {
                    Err(Error::Full)
                } else {
                    Ok(())
                }
            })
            .await?;
            return Ok(Grant {
                p: self,
                claim: None,
                len,
                buf: vec![0u8; len],
            });
        }
        let claim = self.until_space(|p| p.claim(total, true)).await?;
        Ok(Grant {
            p: self,
            claim: Some(claim),
            len,
            buf: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::notify::{WORD_FIRES, registered};
    use crate::sync::atomic::Ordering::SeqCst;
    use crate::{StartAt, Stream, StreamOptions};
    use std::time::Duration;

    /// A `recv_async` dropped while it waits leaves no registration and no
    /// waiter counted on the stream, and the record sent next is received.
    #[test]
    fn a_cancelled_receive_leaves_nothing_behind() {
        let stream = Stream::create_in_memory("cancel", &StreamOptions::ring(1 << 16)).unwrap();
        let mut c = stream.subscribe(StartAt::Start).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..20 {
                let r = tokio::time::timeout(Duration::from_millis(5), c.recv_async()).await;
                assert!(r.is_err(), "nothing was sent");
            }
        });
        assert_eq!(registered(&stream.inner), 0);
        assert_eq!(
            stream
                .inner
                .data_waiters()
                .load(crate::sync::atomic::Ordering::SeqCst),
            0
        );
        stream.producer().unwrap().send(b"kept").unwrap();
        let m = rt.block_on(c.recv_async()).unwrap();
        assert_eq!(&*m, b"kept");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A parked `recv_async` is woken by the producer's commit (its futex
    /// word moves), not only by the notifier's tick: the handshake
    /// announced it, so the producer made the wake.
    #[test]
    fn a_parked_receive_is_woken_by_the_commit() {
        let stream = Stream::create_in_memory("woken", &StreamOptions::ring(1 << 16)).unwrap();
        let mut c = stream.subscribe(StartAt::Start).unwrap();
        let before = WORD_FIRES.load(SeqCst);
        let sender = stream.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            sender.producer().unwrap().send(b"late").unwrap();
        });
        assert_eq!(&*runtime().block_on(c.recv_async()).unwrap(), b"late");
        t.join().unwrap();
        assert!(
            WORD_FIRES.load(SeqCst) > before,
            "woken by the tick only: the commit did not wake the waiter"
        );
    }

    /// A `send_async` waiting on a full ring is woken by the consumer
    /// moving on (the space word), not only by the tick.
    #[test]
    fn a_waiting_send_is_woken_by_the_consumer() {
        let stream = Stream::create_in_memory("space", &StreamOptions::ring(1 << 16)).unwrap();
        let mut c = stream.subscribe(StartAt::Start).unwrap();
        let mut p = stream.producer().unwrap();
        while p.try_send(&[1; 1000]).is_ok() {}
        let before = WORD_FIRES.load(SeqCst);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut n = 0;
            while c.try_recv().unwrap().is_some() {
                n += 1;
            }
            n
        });
        runtime().block_on(p.send_async(&[2; 1000])).unwrap();
        assert!(t.join().unwrap() > 10);
        assert!(
            WORD_FIRES.load(SeqCst) > before,
            "woken by the tick only: the consumer did not wake the producer"
        );
    }
}
