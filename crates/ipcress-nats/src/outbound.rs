//! `bridge out`: local stream → JetStream subject.
//!
//! A reader thread owns the durable consumer and feeds raw frames, in
//! batches, into a bounded channel; the async side (a current-thread
//! runtime, shared with the NATS client's connection task) publishes them
//! with a bounded window of pipelined acks. Acknowledged progress (always a
//! message boundary) is published back to the reader through an atomic; the
//! reader commits the consumer up to it (never past it), and the same
//! progress is kept in the guard slot `bridge-out-<subject>` (word 0 =
//! acked position + 1), so that a restart resumes from the last
//! acknowledged record even if the consumer position got ahead of the acks.
//!
//! Order: with `ordered` (default), every publish carries
//! `Nats-Expected-Last-Sequence`, predicted from the stream's last
//! sequence. A publish lost in flight (server killed, leader change) makes
//! every later one of the window fail instead of being stored out of order;
//! the bridge then re-publishes from the first unacknowledged frame, one at
//! a time ("probe") until one is newly stored, and pipelines again. The
//! JetStream stream must then carry this bridge's messages only.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::{Publish, PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, HeaderName, Subject, header};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ipcress::format::F_END;
use ipcress::{Consumer, From, Key, Stream, UserSlot};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::stats::StatsWriter;
use crate::{
    Backoff, H_FLAGS, H_ORIGIN, H_ORIGIN_POS, H_PART, RaiseOnDrop, connect, hex, out_name,
};

/// Configuration of `bridge out`.
#[derive(Clone, Debug)]
pub struct OutConfig {
    /// Directory holding the local streams.
    pub root: PathBuf,
    /// The local stream to read.
    pub stream: String,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// Subject to publish to.
    pub subject: String,
    /// Create (if missing) a JetStream stream of this name for `subject`.
    pub create_stream: Option<String>,
    /// Replicas of the created JetStream stream.
    pub replicas: usize,
    /// Publishes in flight (acks pipelined).
    pub window: usize,
    /// Key file of an encrypted local stream (frames stay encrypted).
    pub key: Option<PathBuf>,
    /// Keep JetStream order equal to the local order across server
    /// failures (`Nats-Expected-Last-Sequence`); requires that nothing else
    /// publishes to the JetStream stream.
    pub ordered: bool,
    /// How long to wait for a publish ack before retrying.
    pub ack_timeout: Duration,
}

impl OutConfig {
    /// Defaults: window 256, 1 replica, ordered, 10 s ack timeout.
    pub fn new(root: impl Into<PathBuf>, stream: &str, nats_url: &str, subject: &str) -> OutConfig {
        OutConfig {
            root: root.into(),
            stream: stream.into(),
            nats_url: nats_url.into(),
            subject: subject.into(),
            create_stream: None,
            replicas: 1,
            window: 256,
            key: None,
            ordered: true,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// One frame read from the local stream.
struct Item {
    pos: u64,
    /// Consumer position right after the frame.
    next: u64,
    flags: u16,
    origin: [u8; 16],
    origin_position: u64,
    data: Bytes,
}

/// Run `bridge out` until `stop` is raised (or a fatal local error).
pub fn run_out(cfg: OutConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.window > 0, "window must be at least 1");
    let mut stream = Stream::open_in(&cfg.root, &cfg.stream)
        .with_context(|| format!("opening stream {}", cfg.stream))?;
    if let Some(k) = &cfg.key {
        let key = Key::load(k).with_context(|| format!("loading key {}", k.display()))?;
        stream = stream.with_key(&key)?;
    }
    let name = out_name(&cfg.subject);
    let guard = stream.user_slot(&name)?;
    let consumer = open_consumer(&stream, &name, &guard)?;
    let start = consumer.position();
    info!(
        "bridge out: {} → {} from position {start}",
        cfg.stream, cfg.subject
    );
    let acked = Arc::new(AtomicU64::new(start));
    let quit = Arc::new(AtomicBool::new(false));
    // Frames cross to the async side in batches: one wake-up per batch,
    // not per frame.
    let batch = (cfg.window / 4).clamp(1, 64);
    let (tx, rx) = mpsc::channel::<Vec<Item>>((cfg.window / batch).max(2));
    // Commit at least every quarter ring (a ring's producers wait for us).
    let commit_every = stream
        .capacity()
        .map_or(64 << 20, |c| (c / 4).min(64 << 20));
    let reader = {
        let acked = acked.clone();
        let quit = quit.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("bridge-out-reader".into())
            .spawn(move || {
                let _raise = RaiseOnDrop(quit.clone());
                reader_loop(consumer, tx, &acked, &quit, &stop, commit_every, batch)
            })?
    };
    let stats = StatsWriter::open(&stream, &name)?;
    // One thread drives the pipeline and the client's connection task
    // together: an ack reaches the pipeline, and a publish the socket,
    // without a wake-up of another thread. Nothing here blocks (the
    // ipcress calls are on the reader thread).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let res = {
        let _raise = RaiseOnDrop(quit.clone());
        rt.spawn(crate::forward_stop(stop.clone(), quit.clone()));
        rt.block_on(out_async(&cfg, rx, &acked, guard, stats, &quit))
    };
    let rres = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    rres.and(res)
}

/// Open the durable consumer; if its position is ahead of what JetStream
/// acknowledged (a crash between read and ack), move it back.
fn open_consumer(stream: &Stream, name: &str, guard: &UserSlot) -> anyhow::Result<Consumer> {
    let c = stream.consumer(name)?;
    let saved = guard.get(0);
    if saved == 0 {
        guard.set(0, c.position() + 1);
        return Ok(c);
    }
    let acked = saved - 1;
    if c.position() <= acked {
        return Ok(c);
    }
    let ahead = c.position();
    drop(c);
    stream.remove_consumer(name)?;
    match stream.consumer_from(name, From::Position(acked)) {
        Ok(c) => {
            info!(
                "bridge out: resuming at acknowledged position {acked} (consumer was at {ahead})"
            );
            Ok(c)
        }
        Err(e) => {
            warn!(
                "bridge out: acknowledged position {acked} is no longer retained ({e}): \
                 records up to the oldest retained one are not sent"
            );
            let c = stream.consumer_from(name, From::Start)?;
            guard.set(0, c.position() + 1);
            Ok(c)
        }
    }
}

fn reader_loop(
    mut c: Consumer,
    tx: mpsc::Sender<Vec<Item>>,
    acked: &AtomicU64,
    quit: &AtomicBool,
    stop: &AtomicBool,
    commit_every: u64,
    batch: usize,
) -> anyhow::Result<()> {
    // Only acknowledged frames are committed (and released to producers).
    // `acked` only ever holds the position right after a frame that ends a
    // message, so the durable position follows it batch by batch, while
    // the reader stays ahead by the frames in flight.
    c.set_auto_commit(false);
    let mut committed = c.position();
    let commit_acked = |c: &mut Consumer, committed: &mut u64| -> anyhow::Result<()> {
        let a = acked.load(Ordering::Acquire);
        if a > *committed {
            c.commit_to(a)?;
            *committed = a;
        }
        Ok(())
    };
    // Position after the last frame read that ends a message.
    let mut last_end = committed;
    let mut at_boundary = true;
    let mut buf: Vec<Item> = Vec::with_capacity(batch);
    loop {
        if quit.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            break;
        }
        commit_acked(&mut c, &mut committed)?;
        if buf.is_empty() && at_boundary && c.position() - committed >= commit_every {
            // Far ahead of the acks (a ring's producers wait for our
            // commits): let them catch up.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        // Wait for the first frame of a batch; take the rest only if
        // already there, so that a slow flow is not delayed.
        let wait = if buf.is_empty() {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        match c.recv_raw_timeout(wait) {
            Ok(Some((pos, f))) => {
                let next = c.position();
                at_boundary = f.flags & F_END != 0;
                if at_boundary {
                    last_end = next;
                }
                buf.push(Item {
                    pos,
                    next,
                    flags: f.flags,
                    origin: f.origin,
                    origin_position: f.origin_position,
                    data: Bytes::from(f.data),
                });
                if buf.len() < batch {
                    continue;
                }
            }
            Ok(None) => {}
            Err(ipcress::Error::Lagged { skipped_bytes }) => {
                warn!("bridge out: the stream overwrote {skipped_bytes} unread bytes");
            }
            Err(e) => return Err(e).context("reading the local stream"),
        }
        if !buf.is_empty() {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
            if tx.blocking_send(full).is_err() {
                break;
            }
        }
    }
    drop(tx);
    // A clean stop: wait briefly for the last acks, then save the position.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && acked.load(Ordering::Acquire) < last_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    commit_acked(&mut c, &mut committed)
}

enum Exit {
    Stop,
    ReaderGone,
}

struct Out<'a> {
    cfg: &'a OutConfig,
    /// `<stream id hex>:`, the start of every message id.
    id_prefix: String,
    id: [u8; 16],
    subject: Subject,
    acked: &'a AtomicU64,
    guard: UserSlot,
    stats: StatsWriter,
    quit: &'a AtomicBool,
    /// Frames read and not yet acknowledged, in order.
    unacked: VecDeque<Item>,
    /// Acks received since the last failure.
    progress: bool,
    js_stream: Option<String>,
    /// (Re)connections of the client so far.
    connects: Arc<AtomicU64>,
}

async fn out_async(
    cfg: &OutConfig,
    mut rx: mpsc::Receiver<Vec<Item>>,
    acked: &AtomicU64,
    guard: UserSlot,
    stats: StatsWriter,
    quit: &AtomicBool,
) -> anyhow::Result<()> {
    let (id, id_hex) = {
        let s = Stream::open_in(&cfg.root, &cfg.stream)?;
        (s.id(), s.id_hex())
    };
    let mut out = Out {
        cfg,
        id,
        id_prefix: format!("{id_hex}:"),
        subject: Subject::from(cfg.subject.as_str()),
        acked,
        guard,
        stats,
        quit,
        unacked: VecDeque::new(),
        progress: false,
        js_stream: cfg.create_stream.clone(),
        connects: Arc::default(),
    };
    let mut backoff = Backoff::new();
    let mut client: Option<async_nats::Client> = None;
    let mut created = false;
    loop {
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        let c = match &client {
            Some(c) => c.clone(),
            None => {
                match connect(&cfg.nats_url, "ipcress-bridge-out", out.connects.clone()).await {
                    Ok(c) => {
                        client = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        warn!("bridge out: cannot connect to {}: {e:#}", cfg.nats_url);
                        if !backoff.wait(quit).await {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
        };
        let mut js = jetstream::new(c.clone());
        js.set_timeout(cfg.ack_timeout);
        if let (Some(name), false) = (&cfg.create_stream, created) {
            match create_stream(&js, name, cfg).await {
                Ok(()) => created = true,
                Err(e) => {
                    warn!("bridge out: cannot create JetStream stream {name}: {e:#}");
                    if !backoff.wait(quit).await {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        let max_payload = c.server_info().max_payload;
        out.progress = false;
        match out.pipeline(&js, &mut rx, max_payload).await {
            Ok(Exit::Stop) | Ok(Exit::ReaderGone) => {
                out.stats.flush();
                return Ok(());
            }
            Err(e) => {
                if out.progress {
                    backoff.reset();
                }
                warn!(
                    "bridge out: {e:#}; re-publishing from the first unacknowledged of {} frames",
                    out.unacked.len()
                );
                if !backoff.wait(quit).await {
                    return Ok(());
                }
            }
        }
    }
}

async fn create_stream(js: &Context, name: &str, cfg: &OutConfig) -> anyhow::Result<()> {
    let s = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![cfg.subject.clone()],
            num_replicas: cfg.replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let subjects = &s.cached_info().config.subjects;
    if !subjects.iter().any(|x| x == &cfg.subject) {
        warn!(
            "bridge out: JetStream stream {name} exists with subjects {subjects:?}, not {}",
            cfg.subject
        );
    }
    Ok(())
}

type AckFut = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Part size and number of parts of `item` under the server's max payload
/// (leaving room for the headers).
fn parts(item: &Item, max_payload: usize) -> (usize, usize) {
    let chunk = max_payload.saturating_sub(1024).max(1024);
    (chunk, item.data.len().div_ceil(chunk).max(1))
}

/// Append `n` in decimal.
fn push_u64(s: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(buf[i..].iter().map(|&b| b as char));
}

fn decimal(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_u64(&mut s, n);
    s
}

const NAME_FLAGS: HeaderName = HeaderName::from_static(H_FLAGS);
const NAME_ORIGIN: HeaderName = HeaderName::from_static(H_ORIGIN);
const NAME_ORIGIN_POS: HeaderName = HeaderName::from_static(H_ORIGIN_POS);
const NAME_PART: HeaderName = HeaderName::from_static(H_PART);

/// Publishes in flight, in order: the ack futures, and for each whether it
/// is the last part of its frame.
struct InFlight {
    futs: FuturesOrdered<AckFut>,
    ends: VecDeque<bool>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            futs: FuturesOrdered::new(),
            ends: VecDeque::new(),
        }
    }
    fn len(&self) -> usize {
        self.futs.len()
    }
    fn is_empty(&self) -> bool {
        self.futs.is_empty()
    }
    fn push(&mut self, ack: PublishAckFuture, end: bool) {
        self.futs.push_back(ack.into_future());
        self.ends.push_back(end);
    }
    /// The next ack: `Some(Ok(true))` when it completes a frame.
    async fn next(&mut self) -> Option<Result<bool, PublishError>> {
        let r = self.futs.next().await?;
        let end = self.ends.pop_front().expect("one flag per publish");
        Some(r.map(|_| end))
    }
}

impl Out<'_> {
    fn stopping(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    /// The last sequence of the JetStream stream that takes our subject.
    async fn last_sequence(&mut self, js: &Context) -> anyhow::Result<u64> {
        let name = match &self.js_stream {
            Some(n) => n.clone(),
            None => {
                let n = js
                    .stream_by_subject(self.cfg.subject.clone())
                    .await
                    .with_context(|| format!("no JetStream stream takes {}", self.cfg.subject))?;
                self.js_stream = Some(n.clone());
                n
            }
        };
        let mut s = js.get_stream(&name).await?;
        Ok(s.info().await?.state.last_sequence)
    }

    /// Publish part `i` of `n` of `item`. The headers are built directly
    /// (static names, one string per value), as this runs for every record.
    async fn publish_part(
        &self,
        js: &Context,
        item: &Item,
        chunk: usize,
        i: usize,
        n: usize,
        expect: Option<u64>,
    ) -> Result<PublishAckFuture, PublishError> {
        let part = if n == 1 {
            item.data.clone()
        } else {
            item.data
                .slice(i * chunk..((i + 1) * chunk).min(item.data.len()))
        };
        let mut h = HeaderMap::new();
        h.insert(NAME_FLAGS, decimal(item.flags.into()));
        if item.origin != self.id || item.origin_position != item.pos {
            // Otherwise implied by the message id.
            h.insert(NAME_ORIGIN, hex(&item.origin));
            h.insert(NAME_ORIGIN_POS, decimal(item.origin_position));
        }
        let mut id = String::with_capacity(self.id_prefix.len() + 32);
        id.push_str(&self.id_prefix);
        push_u64(&mut id, item.pos);
        if n > 1 {
            let mut part = String::with_capacity(24);
            push_u64(&mut part, i as u64 + 1);
            part.push('/');
            push_u64(&mut part, n as u64);
            h.insert(NAME_PART, part);
            id.push(':');
            push_u64(&mut id, i as u64 + 1);
        }
        h.insert(header::NATS_MESSAGE_ID, id);
        if let Some(e) = expect {
            h.insert(header::NATS_EXPECTED_LAST_SEQUENCE, decimal(e));
        }
        js.send_publish(
            self.subject.clone(),
            Publish::build().payload(part).headers(h),
        )
        .await
    }

    /// Publish every part of frame `k` of `unacked`; with `expect`, each
    /// part carries the expected last sequence, advanced per part.
    async fn publish(
        &self,
        js: &Context,
        k: usize,
        max_payload: usize,
        mut expect: Option<&mut u64>,
        inflight: &mut InFlight,
    ) -> Result<(), PublishError> {
        let item = &self.unacked[k];
        let (chunk, n) = parts(item, max_payload);
        for i in 0..n {
            let e = expect.as_deref_mut().map(|e| {
                *e += 1;
                *e - 1
            });
            let ack = self.publish_part(js, item, chunk, i, n, e).await?;
            inflight.push(ack, i + 1 == n);
        }
        Ok(())
    }

    /// Publish the parts of the front frame one by one, waiting for each
    /// ack and following the stream's last sequence (a duplicate does not
    /// advance it). True if a part was newly stored.
    async fn publish_probe(
        &self,
        js: &Context,
        max_payload: usize,
        last: &mut u64,
    ) -> anyhow::Result<bool> {
        let item = &self.unacked[0];
        let (chunk, n) = parts(item, max_payload);
        let mut stored = false;
        for i in 0..n {
            let ack = self
                .publish_part(js, item, chunk, i, n, Some(*last))
                .await
                .context("publish")?
                .await
                .context("publish")?;
            if !ack.duplicate {
                stored = true;
                *last = ack.sequence;
            }
        }
        Ok(stored)
    }

    /// The front frame is in JetStream.
    fn front_acked(&mut self) {
        let item = self.unacked.pop_front().expect("an unacknowledged frame");
        self.progress = true;
        let end = item.flags & F_END != 0;
        self.stats.add(end as u64, item.data.len() as u64);
        if end {
            self.acked.store(item.next, Ordering::Release);
            self.guard.set(0, item.next + 1);
        }
    }

    /// Take a batch of frames from the reader; false if it is gone.
    fn take(&mut self, batch: Option<Vec<Item>>) -> bool {
        match batch {
            Some(b) => {
                self.unacked.extend(b);
                true
            }
            None => false,
        }
    }

    /// Publish frames until stopped or an error (the caller then retries
    /// from the first unacknowledged frame).
    async fn pipeline(
        &mut self,
        js: &Context,
        rx: &mut mpsc::Receiver<Vec<Item>>,
        max_payload: usize,
    ) -> anyhow::Result<Exit> {
        let window = self.cfg.window;
        let ordered = self.cfg.ordered;
        // Ordered: start one at a time (after a restart or a failure the
        // first frames are likely duplicates, which do not move the
        // sequence), pipeline once a frame is newly stored.
        let mut probe = ordered;
        let mut last = if ordered {
            self.last_sequence(js).await?
        } else {
            0
        };
        debug!("bridge out: pipeline starts, last sequence {last}");
        let mut inflight = InFlight::new();
        // Frames of `unacked` published (at least in part).
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connects = self.connects.load(Ordering::SeqCst);
        loop {
            if self.connects.load(Ordering::SeqCst) != connects && !inflight.is_empty() {
                // Publishes in flight across a reconnection may be lost:
                // do not wait for their ack timeouts.
                anyhow::bail!("reconnected with {} publishes in flight", inflight.len());
            }
            if self.stopping() {
                // Collect the acks in flight, then leave.
                let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
                while let Ok(Some(Ok(end))) =
                    tokio::time::timeout_at(deadline, inflight.next()).await
                {
                    if end {
                        self.front_acked();
                    }
                }
                return Ok(Exit::Stop);
            }
            if probe {
                if self.unacked.is_empty() {
                    tokio::select! {
                        r = rx.recv() => if !self.take(r) {
                            return Ok(Exit::ReaderGone);
                        },
                        _ = tick.tick() => self.stats.flush(),
                    }
                    continue;
                }
                if self.publish_probe(js, max_payload, &mut last).await? {
                    debug!("bridge out: pipelining again after sequence {last}");
                    probe = false;
                }
                self.front_acked();
                continue;
            }
            while sent < self.unacked.len() && inflight.len() < window {
                self.publish(
                    js,
                    sent,
                    max_payload,
                    ordered.then_some(&mut last),
                    &mut inflight,
                )
                .await?;
                sent += 1;
            }
            tokio::select! {
                biased;
                r = inflight.next(), if !inflight.is_empty() => match r {
                    Some(Ok(true)) => {
                        self.front_acked();
                        sent -= 1;
                    }
                    Some(Ok(false)) => {}
                    Some(Err(e)) => {
                        if e.kind() == PublishErrorKind::WrongLastSequence {
                            debug!("bridge out: a publish was lost in flight: {e}");
                        }
                        return Err(e).context("publish");
                    }
                    None => {}
                },
                r = rx.recv(), if self.unacked.len() < window => if !self.take(r) {
                    // The reader is gone: finish what is in flight.
                    while let Some(r) = inflight.next().await {
                        if r.context("publish")? {
                            self.front_acked();
                        }
                    }
                    return Ok(Exit::ReaderGone);
                },
                _ = tick.tick() => self.stats.flush(),
            }
        }
    }
}
