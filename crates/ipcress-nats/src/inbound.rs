//! `bridge in`: JetStream stream → local stream.
//!
//! The async side runs a durable pull consumer (explicit acks) and feeds
//! the messages through a bounded channel to a writer thread, which owns
//! the local producer, unpacks batches, joins split frames, appends,
//! commits, and only then sends the acks back.
//!
//! Progress is a *point* `(sequence, k)`: every JetStream message before
//! `sequence`, and the first `k` frames of message `sequence`, are in the
//! local stream. It is packed into one word (`sequence << 16 | k`), so it
//! moves with a single store. The user slot `bridge-in-<durable>` holds
//! word 0 = the applied point, word 1 = the pending point, word 2 = the
//! pending local position, word 3 = [`SLOT_FORMAT`]. Before a frame is
//! committed locally, pending = (point after it, its position); after the
//! commit, applied = pending. At start, a pending point whose frame is
//! committed counts as applied. The JetStream consumer is (re)created to
//! deliver from the applied point's sequence at every (re)connection, so
//! that nothing waits for ack timeouts after a crash; older messages, and
//! the first `k` frames of that one, are acked and skipped.
//!
//! A message large enough to be written in fragments moves frame by
//! frame; the point only advances on a frame that ends a message, so a
//! restart re-applies an interrupted message from its first fragment.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use ipcress::{Flags, Key, RawFrame, Stream, StreamOptions, UserSlot};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::stats::StatsWriter;
use crate::{
    Backoff, H_BATCH, H_FLAGS, H_ORIGIN, H_ORIGIN_POS, H_PART, RaiseOnDrop, batch, connect,
    in_name, stopped, unhex16,
};

/// Configuration of `bridge in`.
#[derive(Clone, Debug)]
pub struct InConfig {
    /// Directory holding the local streams.
    pub root: PathBuf,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// JetStream stream to read.
    pub js_stream: String,
    /// Name of the durable JetStream consumer.
    pub durable: String,
    /// Only this subject of the JetStream stream (all if None).
    pub filter_subject: Option<String>,
    /// Local stream to append to.
    pub stream: String,
    /// Create the local stream with `create_options` if it does not exist.
    pub create_local: bool,
    /// Options of a created local stream.
    pub create_options: StreamOptions,
    /// Key file of an encrypted local stream.
    pub key: Option<PathBuf>,
    /// Messages per pull batch.
    pub batch: usize,
}

impl InConfig {
    /// Defaults: no filter, no creation (a 64 MiB-segment log if enabled),
    /// batches of 256.
    pub fn new(
        root: impl Into<PathBuf>,
        nats_url: &str,
        js_stream: &str,
        durable: &str,
        stream: &str,
    ) -> InConfig {
        InConfig {
            root: root.into(),
            nats_url: nats_url.into(),
            js_stream: js_stream.into(),
            durable: durable.into(),
            filter_subject: None,
            stream: stream.into(),
            create_local: false,
            create_options: StreamOptions::log(64 << 20),
            key: None,
            batch: 256,
        }
    }
}

/// Run `bridge in` until `stop` is raised (or a fatal local error).
pub fn run_in(cfg: InConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut stream = match Stream::open_in(&cfg.root, &cfg.stream) {
        Ok(s) => s,
        Err(ipcress::Error::NotFound { .. }) if cfg.create_local => {
            match Stream::create_in(&cfg.root, &cfg.stream, &cfg.create_options) {
                Ok(s) => s,
                Err(ipcress::Error::AlreadyExists { .. }) => {
                    Stream::open_in(&cfg.root, &cfg.stream)?
                }
                Err(e) => return Err(e).context(format!("creating stream {}", cfg.stream)),
            }
        }
        Err(e) => return Err(e).context(format!("opening stream {}", cfg.stream)),
    };
    if let Some(k) = &cfg.key {
        let key = Key::load(k).with_context(|| format!("loading key {}", k.display()))?;
        stream = stream.with_key(&key)?;
    }
    let name = in_name(&cfg.durable);
    let slot = stream.user_slot(&name)?;
    let point = recover_point(&stream, &slot, &name)?;
    info!(
        "bridge in: {} → {} from JetStream sequence {} (frame {})",
        cfg.js_stream,
        cfg.stream,
        point >> 16,
        point & 0xffff
    );
    let quit = Arc::new(AtomicBool::new(false));
    let rt = crate::runtime()?;
    let (tx, rx) = mpsc::channel::<Message>(cfg.batch.max(1) * 2);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Message>();
    let writer = {
        let stream = stream.clone();
        let quit = quit.clone();
        let stats = StatsWriter::open(&stream, &name)?;
        let slot = stream.user_slot(&name)?;
        std::thread::Builder::new()
            .name("bridge-in-writer".into())
            .spawn(move || {
                let _raise = RaiseOnDrop(quit.clone());
                Writer::new(&stream, slot, stats)?.run(rx, ack_tx, &quit)
            })?
    };
    let res = {
        let _raise = RaiseOnDrop(quit.clone());
        rt.spawn(crate::forward_stop(stop, quit.clone()));
        rt.block_on(in_async(&cfg, &slot, tx, ack_rx, &quit))
    };
    let wres = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    wres.and(res)
}

/// Word 3 of the slot: the layout described in the module docs.
pub const SLOT_FORMAT: u64 = 0x6970_6272_0002; // "ipbr" v2

/// Pack a point; sequences need 48 bits at most.
fn point(seq: u64, k: usize) -> anyhow::Result<u64> {
    anyhow::ensure!(
        seq < 1 << 48,
        "JetStream sequence {seq} is beyond what the bridge can record"
    );
    debug_assert!(k <= 0xffff);
    Ok(seq << 16 | k as u64)
}

/// The applied point, after settling a pending one (a crash between the
/// local commit and saving the point).
fn recover_point(stream: &Stream, slot: &UserSlot, name: &str) -> anyhow::Result<u64> {
    let (applied, pending, pos, format) = (slot.get(0), slot.get(1), slot.get(2), slot.get(3));
    if format != SLOT_FORMAT {
        anyhow::ensure!(
            applied == 0 && pending == 0 && pos == 0 && format == 0,
            "slot {name} of stream {} was written by an older bridge (format {format:#x}); \
             its progress cannot be read",
            stream.name()
        );
        slot.set(3, SLOT_FORMAT);
        return Ok(0);
    }
    if pending > applied && stream.is_committed(pos)? {
        slot.set(0, pending);
        return Ok(pending);
    }
    Ok(applied)
}

async fn in_async(
    cfg: &InConfig,
    slot: &UserSlot,
    tx: mpsc::Sender<Message>,
    mut ack_rx: mpsc::UnboundedReceiver<Message>,
    quit: &AtomicBool,
) -> anyhow::Result<()> {
    // Acks go out from their own task: after the local commit.
    let acker = tokio::spawn(async move {
        while let Some(m) = ack_rx.recv().await {
            if let Err(e) = m.ack().await {
                debug!("bridge in: ack failed: {e}");
            }
        }
    });
    let stopping = || quit.load(Ordering::Relaxed);
    let mut backoff = Backoff::new();
    let mut client: Option<async_nats::Client> = None;
    while !stopping() {
        let c = match &client {
            Some(c) => c.clone(),
            None => match connect(&cfg.nats_url, "ipcress-bridge-in", Default::default()).await {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(e) => {
                    if backoff.report() {
                        warn!(
                            "bridge in: cannot connect to {} (retrying): {e:#}",
                            cfg.nats_url
                        );
                    }
                    if !backoff.wait(quit).await || stopping() {
                        break;
                    }
                    continue;
                }
            },
        };
        match session(cfg, &c, slot, &tx, quit, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                warn!("bridge in: {e:#}");
                if !backoff.wait(quit).await || stopping() {
                    break;
                }
            }
        }
    }
    drop(tx);
    // Let the writer finish; it drops the ack sender when it ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), acker).await;
    Ok(())
}

/// One consumer lifetime: (re)create the durable at applied + 1 and pull.
/// Ok when stopping, Err to retry.
async fn session(
    cfg: &InConfig,
    client: &async_nats::Client,
    slot: &UserSlot,
    tx: &mpsc::Sender<Message>,
    quit: &AtomicBool,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let js_stream = js
        .get_stream(&cfg.js_stream)
        .await
        .with_context(|| format!("JetStream stream {}", cfg.js_stream))?;
    let start = slot.get(0) >> 16;
    // The local stream is the truth: move the durable to what it lacks.
    match js_stream.delete_consumer(&cfg.durable).await {
        Ok(_) => {}
        Err(e) => debug!("bridge in: deleting consumer {}: {e}", cfg.durable),
    }
    let consumer = js_stream
        .create_consumer(pull::Config {
            durable_name: Some(cfg.durable.clone()),
            deliver_policy: if start <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                }
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: (cfg.batch.max(1) * 8) as i64,
            filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating consumer {}", cfg.durable))?;
    let max_payload = client.server_info().max_payload;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.batch.max(1))
        .max_bytes_per_batch((16 << 20).max(4 * max_payload))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .context("pulling messages")?;
    info!(
        "bridge in: consuming {} from sequence {start}",
        cfg.js_stream
    );
    // Deliveries of a fresh consumer are numbered 1, 2, ...: a gap means
    // some were lost (a node went away); JetStream would only redeliver
    // them after the ack wait, so start again from the applied sequence.
    let mut last_delivery = 0u64;
    loop {
        tokio::select! {
            m = messages.next() => match m {
                Some(Ok(m)) => {
                    let delivery = m
                        .info()
                        .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?
                        .consumer_sequence;
                    if delivery != last_delivery + 1 {
                        anyhow::bail!(
                            "delivery {delivery} after {last_delivery}: deliveries lost, \
                             restarting from sequence {}",
                            slot.get(0) >> 16
                        );
                    }
                    last_delivery = delivery;
                    backoff.reset();
                    tokio::select! {
                        r = tx.send(m) => if r.is_err() { return Ok(()) },
                        _ = stopped(quit) => return Ok(()),
                    }
                }
                Some(Err(e)) => anyhow::bail!("pulling messages: {e}"),
                None => anyhow::bail!("the message stream ended"),
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if quit.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
    }
}

/// What the headers say about a message.
struct Meta {
    flags: Flags,
    origin: [u8; 16],
    origin_position: u64,
    /// (i, n) of a split frame, 1-based.
    part: Option<(u32, u32)>,
    /// The message id without the part suffix.
    key: String,
}

/// The source stream id of a message id `<id hex>:...`.
fn source(h: &async_nats::HeaderMap) -> (&str, &str) {
    let id = h
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map_or("", |v| v.as_str());
    let mut fields = id.split(':');
    (fields.next().unwrap_or(""), fields.next().unwrap_or(""))
}

/// The flags of an `Ipcress-Flags` value ([`Flags::bits`] in decimal).
fn header_flags(v: &str) -> anyhow::Result<Flags> {
    match v.parse::<u16>().ok().map(Flags::from_bits) {
        Some(Some(f)) => Ok(f),
        Some(None) => anyhow::bail!("bad Ipcress-Flags {v:?}: unknown flag bits"),
        None => anyhow::bail!("bad Ipcress-Flags {v:?}: not a 16-bit decimal number"),
    }
}

fn meta(m: &Message) -> anyhow::Result<Option<Meta>> {
    let Some(h) = m.message.headers.as_ref() else {
        return Ok(None);
    };
    let Some(flags) = h.get(H_FLAGS) else {
        return Ok(None);
    };
    let get = |k: &str| h.get(k).map(|v| v.as_str()).unwrap_or("");
    let flags = header_flags(flags.as_str())?;
    let part = match h.get(H_PART) {
        Some(v) => {
            let (i, n) = v.as_str().split_once('/').context("bad Ipcress-Part")?;
            let (i, n): (u32, u32) = (
                i.parse().context("bad Ipcress-Part")?,
                n.parse().context("bad Ipcress-Part")?,
            );
            anyhow::ensure!(i >= 1 && i <= n, "bad Ipcress-Part {i}/{n}");
            Some((i, n))
        }
        None => None,
    };
    // <source id hex>:<position>[:<part>]
    let (src, pos) = source(h);
    let key = format!("{src}:{pos}");
    let (origin, origin_position) = match h.get(H_ORIGIN) {
        Some(o) => (
            unhex16(o.as_str()).context("bad Ipcress-Origin")?,
            get(H_ORIGIN_POS)
                .parse()
                .context("bad Ipcress-Origin-Pos")?,
        ),
        // Implied: first written where the message id says.
        None => (
            unhex16(src).with_context(|| format!("bad Nats-Msg-Id {key:?}"))?,
            pos.parse()
                .with_context(|| format!("bad Nats-Msg-Id {key:?}"))?,
        ),
    };
    Ok(Some(Meta {
        flags,
        origin,
        origin_position,
        part,
        key,
    }))
}

/// A split frame being joined.
struct Partial {
    key: String,
    next: u32,
    n: u32,
    last_seq: u64,
    flags: Flags,
    origin: [u8; 16],
    origin_position: u64,
    data: Vec<u8>,
    msgs: Vec<Message>,
}

struct Writer {
    producer: ipcress::Producer,
    slot: UserSlot,
    stats: StatsWriter,
    /// Highest sequence handled in this process (fragments included).
    written: u64,
    /// The applied point at start: messages before its sequence are
    /// skipped, and its first frames.
    start: (u64, usize),
    partial: Option<Partial>,
    encrypted: bool,
    id: [u8; 16],
    /// Source stream (hex id) and position of the last frame seen.
    last_source: Option<(String, u64)>,
}

impl Writer {
    fn new(stream: &Stream, slot: UserSlot, stats: StatsWriter) -> anyhow::Result<Writer> {
        let p = slot.get(0);
        Ok(Writer {
            producer: stream.producer()?,
            written: 0,
            start: (p >> 16, (p & 0xffff) as usize),
            slot,
            stats,
            partial: None,
            encrypted: stream.encrypted(),
            id: stream.id(),
            last_source: None,
        })
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        ack_tx: mpsc::UnboundedSender<Message>,
        quit: &AtomicBool,
    ) -> anyhow::Result<()> {
        loop {
            let m = match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Idle: show the counters, then wait.
                    self.stats.flush();
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if quit.load(Ordering::Relaxed) {
                break;
            }
            let acks = self.handle(m)?;
            for a in acks {
                let _ = ack_tx.send(a);
            }
        }
        self.stats.flush();
        Ok(())
    }

    /// Apply one message; returns the messages to ack now.
    fn handle(&mut self, m: Message) -> anyhow::Result<Vec<Message>> {
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?
            .stream_sequence;
        if seq <= self.written || seq < self.start.0 {
            return Ok(vec![m]);
        }
        // Frames of this message already applied before a restart.
        let done = if seq == self.start.0 { self.start.1 } else { 0 };
        if let Some(count) = m.message.headers.as_ref().and_then(|h| h.get(H_BATCH)) {
            let count: usize = count.as_str().parse().context("bad Ipcress-Batch")?;
            self.apply_batch(&m, seq, count, done)?;
            self.written = seq;
            return Ok(vec![m]);
        }
        if done > 0 {
            // A message of one frame, applied.
            self.written = seq;
            return Ok(vec![m]);
        }
        let Some(meta) = meta(&m)? else {
            // A message not sent by a bridge: one plain record.
            let data = m.message.payload.to_vec();
            if self.encrypted {
                // Encrypted by the producer: a grant, so that the position
                // is known before the commit (unless the stream compresses,
                // which claims at the commit).
                let after = point(seq + 1, 0)?;
                let mut g = self
                    .producer
                    .reserve(data.len())
                    .context("appending to the local stream")?;
                g.copy_from_slice(&data);
                if let Some(pos) = g.position() {
                    self.slot.set(2, pos);
                    self.slot.set(1, after);
                }
                g.commit().context("committing to the local stream")?;
                self.slot.set(0, after);
                self.written = seq;
                self.stats.add(1, data.len() as u64);
            } else {
                let f = RawFrame {
                    flags: Flags::BEGIN | Flags::END,
                    origin: self.id,
                    origin_position: 0,
                    data,
                    time: None,
                };
                self.apply(&f, seq, 1, 1)?;
            }
            return Ok(vec![m]);
        };
        if let Some((src, pos)) = meta.key.split_once(':')
            && let Ok(pos) = pos.parse::<u64>()
        {
            self.check_order(src, pos, seq);
        }
        let frame = match meta.part {
            None => RawFrame {
                flags: meta.flags,
                origin: meta.origin,
                origin_position: meta.origin_position,
                data: m.message.payload.to_vec(),
                time: None,
            },
            Some((i, n)) => {
                if let Some(p) = &self.partial
                    && seq <= p.last_seq
                {
                    // Redelivered while being joined.
                    return Ok(vec![m]);
                }
                if i == 1 {
                    self.drop_partial();
                    self.partial = Some(Partial {
                        key: meta.key.clone(),
                        next: 1,
                        n,
                        last_seq: 0,
                        flags: meta.flags,
                        origin: meta.origin,
                        origin_position: meta.origin_position,
                        data: Vec::new(),
                        msgs: Vec::new(),
                    });
                }
                let ok = matches!(&self.partial, Some(p) if p.key == meta.key && p.next == i && p.n == n);
                if !ok {
                    warn!(
                        "bridge in: part {i}/{n} of {} at sequence {seq} without its beginning, skipped",
                        meta.key
                    );
                    return Ok(vec![m]);
                }
                let p = self.partial.as_mut().expect("checked");
                p.data.extend_from_slice(&m.message.payload);
                p.last_seq = seq;
                p.next += 1;
                p.msgs.push(m);
                if i < n {
                    return Ok(Vec::new());
                }
                let p = self.partial.take().expect("checked");
                let f = RawFrame {
                    flags: p.flags,
                    origin: p.origin,
                    origin_position: p.origin_position,
                    data: p.data,
                    time: None,
                };
                self.apply(&f, seq, 1, 1)?;
                return Ok(p.msgs);
            }
        };
        self.apply(&frame, seq, 1, 1)?;
        Ok(vec![m])
    }

    /// Apply the frames of batch message `seq` after the first `done`.
    fn apply_batch(
        &mut self,
        m: &Message,
        seq: u64,
        count: usize,
        done: usize,
    ) -> anyhow::Result<()> {
        let h = m.message.headers.as_ref().expect("a batch has headers");
        let (src, first) = source(h);
        let id = unhex16(src).with_context(|| format!("bad Nats-Msg-Id {src}:{first}"))?;
        let entries = batch::decode(&m.message.payload, count)
            .with_context(|| format!("JetStream message {seq}"))?;
        self.drop_partial();
        if let Some(e) = entries.iter().find(|e| e.origin.is_none()) {
            self.check_order(src, e.position, seq);
        }
        for (i, e) in entries.iter().enumerate().skip(done) {
            let f = RawFrame {
                flags: e.flags,
                origin: e.origin.unwrap_or(id),
                origin_position: e.position,
                data: e.data.to_vec(),
                time: None,
            };
            self.apply(&f, seq, i + 1, count)?;
            if e.origin.is_none() {
                self.note_source(src, e.position);
            }
        }
        Ok(())
    }

    /// Give up a split frame that was being joined (its remaining parts
    /// will not come: a new frame starts).
    fn drop_partial(&mut self) {
        if let Some(p) = self.partial.take() {
            warn!(
                "bridge in: frame {} incomplete ({} of {} parts), dropped",
                p.key,
                p.next - 1,
                p.n
            );
        }
    }

    /// Warn when a source's positions go backwards (an unordered bridge
    /// out after a failure, or a duplicate older than the dedup window).
    fn check_order(&mut self, src: &str, pos: u64, seq: u64) {
        if let Some((last_src, last_pos)) = &self.last_source
            && last_src == src
            && pos < *last_pos
        {
            warn!(
                "bridge in: sequence {seq} carries position {pos} of {src} after position {last_pos}: \
                 out of order or duplicated upstream"
            );
        }
        self.note_source(src, pos);
    }

    fn note_source(&mut self, src: &str, pos: u64) {
        match &mut self.last_source {
            Some((s, p)) if s == src => *p = pos,
            _ => self.last_source = Some((src.to_string(), pos)),
        }
    }

    /// Append `f`, frame `k` of the `n` of JetStream message `seq` (of a
    /// split frame: its last part), and record the point after it.
    fn apply(&mut self, f: &RawFrame, seq: u64, k: usize, n: usize) -> anyhow::Result<()> {
        let end = f.flags.contains(Flags::END);
        let after = if k == n {
            point(seq + 1, 0)?
        } else {
            point(seq, k)?
        };
        let g = self
            .producer
            .reserve_raw(f)
            .context("appending to the local stream")?;
        if end {
            // Position first: until the commit it is not committed, so a
            // crash anywhere here leaves the pending point unused.
            self.slot.set(2, g.position());
            self.slot.set(1, after);
        }
        g.commit().context("committing to the local stream")?;
        if end {
            self.slot.set(0, after);
        }
        self.written = seq;
        self.stats.add(end as u64, f.data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_header() {
        for f in (0..=u16::MAX).filter_map(Flags::from_bits) {
            assert_eq!(header_flags(&f.bits().to_string()).unwrap(), f);
        }
        assert_eq!(header_flags("12").unwrap(), Flags::BEGIN | Flags::END);
        assert_eq!(header_flags("0").unwrap(), Flags::empty());
        for (v, why) in [
            ("1", "unknown flag bits"),
            ("13", "unknown flag bits"),
            ("65535", "unknown flag bits"),
            ("65536", "not a 16-bit"),
            ("-4", "not a 16-bit"),
            ("", "not a 16-bit"),
            ("0x0c", "not a 16-bit"),
        ] {
            let e = header_flags(v).unwrap_err().to_string();
            assert!(
                e.starts_with("bad Ipcress-Flags") && e.contains(why),
                "{v:?}: {e}"
            );
        }
    }
}
