//! `bridge out`: local stream → JetStream subject.
//!
//! A reader task owns the durable consumer and hands raw frames over, in
//! chunks of what fits one NATS message, through a bounded channel; it
//! waits for records with ipcress's async API (`recv_raw_async`), on the
//! same current-thread runtime as the publishing side and the NATS
//! client's connection task. The publishing side publishes them with a bounded window of pipelined
//! acks: consecutive frames as one batch message (`Ipcress-Batch`), a frame
//! over the server's max payload as parts, otherwise one frame per
//! message. Acknowledged progress (always a message boundary) is published
//! back to the reader through an atomic; the reader commits the consumer up
//! to it (never past it), and the same progress is kept in the guard slot
//! `bridge-out-<subject>` (word 0 = acked position + 1), so that a restart
//! resumes from the last acknowledged record even if the consumer position
//! got ahead of the acks.
//!
//! Order: with `ordered` (default), every publish carries
//! `Nats-Expected-Last-Sequence`, predicted from the stream's last
//! sequence. A publish lost in flight (server killed, leader change) makes
//! every later one of the window fail instead of being stored out of order,
//! so JetStream holds a prefix of the local frames. At every (re)start of
//! the pipeline the bridge reads JetStream's last message, takes every
//! frame it names as acknowledged (acks lost with a crash or a failure),
//! publishes one message at a time ("probe") until one is newly stored, and
//! pipelines again. The JetStream stream must then carry this bridge's
//! messages only.

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
use ipcress::{Consumer, Flags, Key, StartAt, Stream, UserSlot};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::stats::StatsWriter;
use crate::{
    Backoff, H_BATCH, H_FLAGS, H_ORIGIN, H_ORIGIN_POS, H_PART, RaiseOnDrop, batch, connect, hex,
    out_name,
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
    /// Pack consecutive frames into one NATS message of up to this many
    /// bytes (`Ipcress-Batch`); 0 sends every frame as its own message.
    /// Only when `ordered`: batches formed after a restart may differ from
    /// those before it, and only the ordered resume (from JetStream's last
    /// message) tells exactly what is stored.
    pub batch_bytes: usize,
}

impl OutConfig {
    /// Defaults: window 256, 1 replica, ordered, 10 s ack timeout,
    /// batches of up to 64 KiB.
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
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

/// Default of [`OutConfig::batch_bytes`].
pub const DEFAULT_BATCH_BYTES: usize = 64 << 10;

/// One frame read from the local stream.
struct Item {
    pos: u64,
    /// Consumer position right after the frame.
    next: u64,
    flags: Flags,
    origin: [u8; 16],
    origin_position: u64,
    data: Bytes,
}

impl Item {
    /// First written at this position of stream `id`: the origin is implied
    /// by the message id (or the batch's source).
    fn implied(&self, id: &[u8; 16]) -> bool {
        self.origin == *id && self.origin_position == self.pos
    }
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
    // With batching, a hand-over is what fits in one NATS message.
    let limit = Limit {
        frames: if cfg.ordered && cfg.batch_bytes > 0 {
            batch::MAX_FRAMES
        } else {
            (cfg.window / 4).clamp(1, 64)
        },
        bytes: if cfg.ordered && cfg.batch_bytes > 0 {
            cfg.batch_bytes
        } else {
            usize::MAX
        },
        id: stream.id(),
    };
    let (tx, rx) = mpsc::channel::<Vec<Item>>((cfg.window / limit.frames).max(4));
    // Commit at least every quarter ring (a ring's producers wait for us).
    let commit_every = stream
        .capacity()
        .map_or(64 << 20, |c| (c / 4).min(64 << 20));
    let stats = StatsWriter::open(&stream, &name)?;
    // One thread drives the reader, the pipeline and the client's
    // connection task together: a record reaches the pipeline, an ack the
    // reader, and a publish the socket, without a wake-up of another
    // thread. Nothing here blocks: the reader waits for records with
    // `recv_raw_async` (the process's ipcress notifier wakes it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reader = {
        let (acked, quit, stop) = (acked.clone(), quit.clone(), stop.clone());
        rt.spawn(async move {
            let _raise = RaiseOnDrop(quit.clone());
            reader_loop(consumer, tx, &acked, &quit, &stop, commit_every, limit).await
        })
    };
    let res = {
        let _raise = RaiseOnDrop(quit.clone());
        rt.spawn(crate::forward_stop(stop.clone(), quit.clone()));
        rt.block_on(out_async(&cfg, rx, &acked, guard, stats, &quit))
    };
    let rres = rt
        .block_on(reader)
        .map_err(|_| anyhow::anyhow!("reader task panicked"))?;
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
    match stream.consumer_from(name, StartAt::Position(acked)) {
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
            let c = stream.consumer_from(name, StartAt::Start)?;
            guard.set(0, c.position() + 1);
            Ok(c)
        }
    }
}

/// How many frames the reader hands over at once.
#[derive(Clone, Copy)]
struct Limit {
    frames: usize,
    /// Batch bytes (as encoded); `usize::MAX` without batching.
    bytes: usize,
    /// The local stream's id (an implied origin is shorter).
    id: [u8; 16],
}

impl Limit {
    fn size(&self, item: &Item) -> usize {
        batch::entry_len(item.data.len(), !item.implied(&self.id))
    }
}

async fn reader_loop(
    mut c: Consumer,
    tx: mpsc::Sender<Vec<Item>>,
    acked: &AtomicU64,
    quit: &AtomicBool,
    stop: &AtomicBool,
    commit_every: u64,
    limit: Limit,
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
    let mut buf: Vec<Item> = Vec::new();
    // Batch bytes in `buf`.
    let mut bytes = 0;
    async fn send(tx: &mpsc::Sender<Vec<Item>>, buf: &mut Vec<Item>, bytes: &mut usize) -> bool {
        *bytes = 0;
        tx.send(std::mem::take(buf)).await.is_ok()
    }
    loop {
        if quit.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
            break;
        }
        commit_acked(&mut c, &mut committed)?;
        if buf.is_empty() && at_boundary && c.position() - committed >= commit_every {
            // Far ahead of the acks (a ring's producers wait for our
            // commits): let them catch up.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        // Wait for the first frame of a batch (at most 50 ms, to look at
        // the acks and the stop flag; `recv_raw_async` is cancellation
        // safe); take the rest only if already there, so that a slow flow
        // is not delayed.
        let got = if buf.is_empty() {
            tokio::select! {
                r = c.recv_raw_async() => r.map(Some),
                _ = tokio::time::sleep(Duration::from_millis(50)) => Ok(None),
            }
        } else {
            c.recv_raw_timeout(Duration::ZERO)
        };
        match got {
            Ok(Some((pos, f))) => {
                let next = c.position();
                at_boundary = f.flags.contains(Flags::END);
                if at_boundary {
                    last_end = next;
                }
                let item = Item {
                    pos,
                    next,
                    flags: f.flags,
                    origin: f.origin,
                    origin_position: f.origin_position,
                    data: Bytes::from(f.data),
                };
                let size = limit.size(&item);
                if !buf.is_empty()
                    && bytes + size > limit.bytes
                    && !send(&tx, &mut buf, &mut bytes).await
                {
                    break;
                }
                bytes += size;
                buf.push(item);
                if buf.len() < limit.frames && bytes < limit.bytes {
                    continue;
                }
            }
            Ok(None) => {}
            Err(ipcress::Error::Lagged { skipped_bytes }) => {
                warn!("bridge out: the stream overwrote {skipped_bytes} unread bytes");
            }
            Err(e) => return Err(e).context("reading the local stream"),
        }
        if !buf.is_empty() && !send(&tx, &mut buf, &mut bytes).await {
            break;
        }
    }
    drop(tx);
    // A clean stop: wait briefly for the last acks, then save the position.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && acked.load(Ordering::Acquire) < last_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    /// Parts of the front frame known to be stored, and of how many.
    front_part: (usize, usize),
    /// The cursor: the frame of `unacked` to publish next, and its part.
    sent: usize,
    part: usize,
    /// Frames known to be stored that the reader has not handed over yet.
    skip: Option<Resume>,
    /// Batch size in bytes, 0 for none.
    batch_limit: usize,
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
        front_part: (0, 0),
        sent: 0,
        part: 0,
        skip: None,
        batch_limit: if cfg.ordered { cfg.batch_bytes } else { 0 },
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
                        if backoff.report() {
                            warn!(
                                "bridge out: cannot connect to {} (retrying): {e:#}",
                                cfg.nats_url
                            );
                        }
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
const NAME_BATCH: HeaderName = HeaderName::from_static(H_BATCH);

/// What a publish completes once it is acknowledged.
#[derive(Clone, Copy, Debug)]
struct Done {
    /// Frames from the front of `unacked`.
    frames: usize,
    /// If no frame: parts of the front frame stored with it, of how many.
    parts: (usize, usize),
}

/// One NATS message to publish, and where the cursor goes after it.
struct Unit {
    payload: Bytes,
    headers: HeaderMap,
    done: Done,
    /// The cursor (frame of `unacked`, part) after it.
    next: (usize, usize),
}

/// Where JetStream's last message says this bridge got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    /// Every frame at or before this position is stored.
    Through(u64),
    /// Frames before `pos` are stored, and `parts` of the `of` parts of
    /// the frame at `pos`.
    Part { pos: u64, parts: usize, of: usize },
}

/// Read the position out of a message id this bridge wrote:
/// `<id>:<pos>`, `<id>:<first>-<last>` (batch) or `<id>:<pos>:<part>`.
fn resume_from(id_prefix: &str, msg_id: &str, part: Option<&str>) -> Option<Resume> {
    let rest = msg_id.strip_prefix(id_prefix)?;
    let num = |s: &str| s.parse::<u64>().ok();
    if let Some((_, last)) = rest.split_once('-') {
        return Some(Resume::Through(num(last)?));
    }
    let pos = rest.split(':').next().and_then(num)?;
    match part.and_then(|p| p.split_once('/')) {
        Some((i, n)) => {
            let (i, n) = (num(i)? as usize, num(n)? as usize);
            if i >= n {
                Some(Resume::Through(pos))
            } else {
                Some(Resume::Part {
                    pos,
                    parts: i,
                    of: n,
                })
            }
        }
        None => Some(Resume::Through(pos)),
    }
}

/// Publishes in flight, in order: the ack futures and what each completes.
struct InFlight {
    futs: FuturesOrdered<AckFut>,
    dones: VecDeque<Done>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            futs: FuturesOrdered::new(),
            dones: VecDeque::new(),
        }
    }
    fn len(&self) -> usize {
        self.futs.len()
    }
    fn is_empty(&self) -> bool {
        self.futs.is_empty()
    }
    fn push(&mut self, ack: PublishAckFuture, done: Done) {
        self.futs.push_back(ack.into_future());
        self.dones.push_back(done);
    }
    /// The next ack and what it completes.
    async fn next(&mut self) -> Option<Result<Done, PublishError>> {
        let r = self.futs.next().await?;
        let done = self.dones.pop_front().expect("one entry per publish");
        Some(r.map(|_| done))
    }
}

impl Out<'_> {
    fn stopping(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    /// The JetStream stream that takes our subject.
    async fn js_stream(&mut self, js: &Context) -> anyhow::Result<jetstream::stream::Stream> {
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
        Ok(js.get_stream(&name).await?)
    }

    /// The last sequence of the JetStream stream, and how far its last
    /// message (if this bridge wrote it) says the local stream got.
    async fn last_message(&mut self, js: &Context) -> anyhow::Result<(u64, Option<Resume>)> {
        let mut s = self.js_stream(js).await?;
        let last = s.info().await?.state.last_sequence;
        if last == 0 {
            return Ok((0, None));
        }
        let m = match s.get_raw_message(last).await {
            Ok(m) => m,
            Err(e) => {
                warn!("bridge out: cannot read JetStream message {last}: {e}");
                return Ok((last, None));
            }
        };
        let part = m.headers.get(H_PART).map(|v| v.as_str());
        let resume = m
            .headers
            .get(header::NATS_MESSAGE_ID)
            .and_then(|id| resume_from(&self.id_prefix, id.as_str(), part));
        if resume.is_none() {
            warn!(
                "bridge out: the last message of the JetStream stream ({last}) is not from this \
                 stream: resuming from the local acknowledged position"
            );
        }
        Ok((last, resume))
    }

    /// Acknowledge the frames at the front that `skip` says are stored.
    fn apply_skip(&mut self) {
        while let (Some(r), Some(front)) = (self.skip, self.unacked.front()) {
            match r {
                Resume::Through(p) if front.pos <= p => self.front_acked(),
                Resume::Part { pos, .. } if front.pos < pos => self.front_acked(),
                Resume::Part { pos, parts, of } if front.pos == pos => {
                    self.front_part = (parts, of);
                    if self.sent == 0 {
                        self.part = parts;
                    }
                    self.skip = None;
                }
                _ => self.skip = None,
            }
        }
    }

    /// The frame at `unacked[k]` as a single message or part `part` of
    /// it, or a batch of frames from `k` on.
    fn unit(&self, k: usize, part: usize, max_payload: usize) -> Unit {
        let item = &self.unacked[k];
        let (chunk, n) = parts(item, max_payload);
        let mut h = HeaderMap::new();
        let mut id = String::with_capacity(self.id_prefix.len() + 44);
        id.push_str(&self.id_prefix);
        push_u64(&mut id, item.pos);
        let implied = item.implied(&self.id);
        // Frames that fit together in one message.
        let mut count = 1;
        if n == 1 && self.batch_limit > 0 {
            let limit = self.batch_limit.min(chunk);
            let mut bytes = batch::entry_len(item.data.len(), !implied);
            for next in self.unacked.range(k + 1..) {
                bytes += batch::entry_len(next.data.len(), !next.implied(&self.id));
                if bytes > limit || count == batch::MAX_FRAMES {
                    break;
                }
                count += 1;
            }
        }
        if count > 1 {
            let frames = self.unacked.range(k..k + count);
            let mut payload = Vec::with_capacity(self.batch_limit.min(chunk));
            let mut last = item.pos;
            for f in frames {
                let own = f.implied(&self.id);
                batch::encode(
                    &mut payload,
                    &batch::Entry {
                        flags: f.flags,
                        origin: (!own).then_some(f.origin),
                        position: if own { f.pos } else { f.origin_position },
                        data: &f.data,
                    },
                );
                last = f.pos;
            }
            id.push('-');
            push_u64(&mut id, last);
            h.insert(NAME_BATCH, decimal(count as u64));
            h.insert(header::NATS_MESSAGE_ID, id);
            return Unit {
                payload: Bytes::from(payload),
                headers: h,
                done: Done {
                    frames: count,
                    parts: (0, 0),
                },
                next: (k + count, 0),
            };
        }
        h.insert(NAME_FLAGS, decimal(item.flags.bits().into()));
        if !implied {
            // Otherwise implied by the message id.
            h.insert(NAME_ORIGIN, hex(&item.origin));
            h.insert(NAME_ORIGIN_POS, decimal(item.origin_position));
        }
        if n == 1 {
            h.insert(header::NATS_MESSAGE_ID, id);
            return Unit {
                payload: item.data.clone(),
                headers: h,
                done: Done {
                    frames: 1,
                    parts: (0, 0),
                },
                next: (k + 1, 0),
            };
        }
        let mut p = String::with_capacity(24);
        push_u64(&mut p, part as u64 + 1);
        p.push('/');
        push_u64(&mut p, n as u64);
        h.insert(NAME_PART, p);
        id.push(':');
        push_u64(&mut id, part as u64 + 1);
        h.insert(header::NATS_MESSAGE_ID, id);
        let last = part + 1 == n;
        Unit {
            payload: item
                .data
                .slice(part * chunk..((part + 1) * chunk).min(item.data.len())),
            headers: h,
            done: Done {
                frames: last as usize,
                parts: if last { (0, 0) } else { (part + 1, n) },
            },
            next: if last { (k + 1, 0) } else { (k, part + 1) },
        }
    }

    /// Publish the unit at the cursor; with `expect`, it carries the
    /// expected last sequence, which then advances.
    async fn publish_next(
        &mut self,
        js: &Context,
        max_payload: usize,
        expect: Option<&mut u64>,
    ) -> Result<(PublishAckFuture, Done), PublishError> {
        if self.sent == 0 && self.part > 0 && self.part == self.front_part.0 {
            // Resuming inside a split frame: only with the same split.
            let n = self.unacked.front().map_or(0, |f| parts(f, max_payload).1);
            if n != self.front_part.1 {
                warn!(
                    "bridge out: the server's max payload changed: frame {} is sent again \
                     from its first part",
                    self.unacked[0].pos
                );
                self.part = 0;
            }
        }
        let Unit {
            payload,
            mut headers,
            done,
            next,
        } = self.unit(self.sent, self.part, max_payload);
        if let Some(e) = expect {
            headers.insert(header::NATS_EXPECTED_LAST_SEQUENCE, decimal(*e));
            *e += 1;
        }
        let ack = js
            .send_publish(
                self.subject.clone(),
                Publish::build().payload(payload).headers(headers),
            )
            .await?;
        (self.sent, self.part) = next;
        Ok((ack, done))
    }

    /// An acknowledged publish: pop the frames it completes.
    fn acked(&mut self, done: Done) {
        if done.frames == 0 {
            self.front_part = done.parts;
            return;
        }
        for _ in 0..done.frames {
            self.front_acked();
        }
        self.sent -= done.frames;
    }

    /// The front frame is in JetStream.
    fn front_acked(&mut self) {
        let item = self.unacked.pop_front().expect("an unacknowledged frame");
        self.front_part = (0, 0);
        self.progress = true;
        let end = item.flags.contains(Flags::END);
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
                self.apply_skip();
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
        (self.sent, self.part) = (0, self.front_part.0);
        // Ordered: JetStream holds a prefix of our frames in order, and its
        // last message says how far (a restart, or publishes of ours that
        // were stored although their acks were lost). Then start one at a
        // time (a duplicate does not move the sequence), and pipeline once
        // a message is newly stored.
        let mut probe = ordered;
        let mut last = 0;
        if ordered {
            let (seq, resume) = self.last_message(js).await?;
            info!("bridge out: JetStream's last message is {seq}, holding {resume:?}");
            last = seq;
            if resume.is_some() {
                self.skip = resume;
                self.apply_skip();
            }
        }
        debug!("bridge out: pipeline starts, last sequence {last}");
        let mut inflight = InFlight::new();
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
                while let Ok(Some(Ok(done))) =
                    tokio::time::timeout_at(deadline, inflight.next()).await
                {
                    self.acked(done);
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
                // The expected sequence only moves with a newly stored one.
                let mut expect = last;
                let (ack, done) = self
                    .publish_next(js, max_payload, Some(&mut expect))
                    .await
                    .context("publish")?;
                let ack = ack.await.context("publish")?;
                if !ack.duplicate {
                    last = ack.sequence;
                    debug!("bridge out: pipelining again after sequence {last}");
                    probe = false;
                }
                self.acked(done);
                continue;
            }
            while self.sent < self.unacked.len() && inflight.len() < window {
                let (ack, done) = self
                    .publish_next(js, max_payload, ordered.then_some(&mut last))
                    .await?;
                inflight.push(ack, done);
            }
            tokio::select! {
                biased;
                r = inflight.next(), if !inflight.is_empty() => match r {
                    Some(Ok(done)) => self.acked(done),
                    Some(Err(e)) => {
                        if e.kind() == PublishErrorKind::WrongLastSequence {
                            debug!("bridge out: a publish was lost in flight: {e}");
                        }
                        return Err(e).context("publish");
                    }
                    None => {}
                },
                r = rx.recv(), if self.sent == self.unacked.len() => if !self.take(r) {
                    // The reader is gone: finish what is in flight.
                    while let Some(r) = inflight.next().await {
                        self.acked(r.context("publish")?);
                    }
                    return Ok(Exit::ReaderGone);
                },
                _ = tick.tick() => self.stats.flush(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_points() {
        let p = "00ff:";
        assert_eq!(resume_from(p, "00ff:96", None), Some(Resume::Through(96)));
        assert_eq!(
            resume_from(p, "00ff:96-4096", None),
            Some(Resume::Through(4096))
        );
        assert_eq!(
            resume_from(p, "00ff:96:2", Some("2/5")),
            Some(Resume::Part {
                pos: 96,
                parts: 2,
                of: 5
            })
        );
        assert_eq!(
            resume_from(p, "00ff:96:5", Some("5/5")),
            Some(Resume::Through(96))
        );
        // Another stream's message, or not one of ours at all.
        assert_eq!(resume_from(p, "00fe:96", None), None);
        assert_eq!(resume_from(p, "order-17", None), None);
        assert_eq!(resume_from(p, "00ff:x-3", None), Some(Resume::Through(3)));
        assert_eq!(resume_from(p, "00ff:1-x", None), None);
        assert_eq!(resume_from(p, "00ff:96:1", Some("1/x")), None);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 99, 12345, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
    }
}
