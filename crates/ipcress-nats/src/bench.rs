//! Throughput of the bridge against a plain JetStream publisher.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::context::Publish;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ipcress::{Stream, StreamOptions};

use crate::{InConfig, OutConfig, in_name, out_name, run_in, run_out};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// NATS server URL(s).
    pub nats_url: String,
    /// Directory for the temporary local streams.
    pub root: PathBuf,
    /// Records to move.
    pub records: usize,
    /// Size of each record.
    pub record_size: usize,
    /// Publishes in flight, for the bridge and the plain publisher alike.
    pub window: usize,
    /// Replicas of the JetStream streams.
    pub replicas: usize,
    /// Run `bridge out` ordered (see [`OutConfig::ordered`]).
    pub ordered: bool,
    /// Batch size of `bridge out` ([`OutConfig::batch_bytes`]).
    pub batch_bytes: usize,
    /// Run the plain publishers before the bridge (alternate between
    /// repetitions so that neither side always runs on a fresher server).
    pub plain_first: bool,
}

impl BenchConfig {
    /// 100 000 records of 1 KiB, window 256, 1 replica, ordered, plain
    /// publishers last.
    pub fn new(nats_url: &str, root: impl Into<PathBuf>) -> BenchConfig {
        BenchConfig {
            nats_url: nats_url.into(),
            root: root.into(),
            records: 100_000,
            record_size: 1024,
            window: 256,
            replicas: 1,
            ordered: true,
            batch_bytes: crate::DEFAULT_BATCH_BYTES,
            plain_first: false,
        }
    }
}

/// Measured times.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Records moved in each run.
    pub records: u64,
    /// Size of each record.
    pub record_size: usize,
    /// Local stream → JetStream by `bridge out` (all acked), batching
    /// frames as configured.
    pub bridge_out: Duration,
    /// The same with one NATS message per record (`batch_bytes` 0).
    pub bridge_out_per_record: Duration,
    /// JetStream → local stream by `bridge in` (all committed).
    pub bridge_in: Duration,
    /// The same records published by a plain async-nats JetStream
    /// publisher with the same window (all acked).
    pub plain: Duration,
    /// The same with a `Nats-Msg-Id` per message (de-duplication on, as
    /// the bridge needs it).
    pub plain_msg_id: Duration,
    /// The bare plain publisher again, on a current-thread runtime (as
    /// `bridge out` uses); compare with the faster of the two.
    pub plain_current_thread: Duration,
    /// The same with every header `bridge out` sends (`Nats-Msg-Id`,
    /// `Ipcress-Flags` and, if ordered, `Nats-Expected-Last-Sequence`):
    /// the server's share of the bridge's cost.
    pub plain_bridge_headers: Duration,
}

impl BenchReport {
    /// Records per second for a run that took `d`.
    pub fn rate(&self, d: Duration) -> f64 {
        self.records as f64 / d.as_secs_f64().max(1e-9)
    }
    /// MiB per second for a run that took `d`.
    pub fn mib_rate(&self, d: Duration) -> f64 {
        self.rate(d) * self.record_size as f64 / (1 << 20) as f64
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} records of {} B", self.records, self.record_size)?;
        for (name, d) in [
            ("bridge out", self.bridge_out),
            ("bridge out per record", self.bridge_out_per_record),
            ("bridge in", self.bridge_in),
            ("plain JetStream publish", self.plain),
            ("plain, current thread", self.plain_current_thread),
            ("plain with Nats-Msg-Id", self.plain_msg_id),
            ("plain with bridge headers", self.plain_bridge_headers),
        ] {
            writeln!(
                f,
                "  {name:<24} {:>8.3} s {:>10.0} rec/s {:>8.1} MiB/s",
                d.as_secs_f64(),
                self.rate(d),
                self.mib_rate(d)
            )?;
        }
        Ok(())
    }
}

/// Measure `bridge out`, `bridge in` and a plain async-nats JetStream
/// publisher on the same server, in the same run. Creates and removes its
/// own local and JetStream streams.
pub fn bench_bridge(cfg: &BenchConfig) -> anyhow::Result<BenchReport> {
    let tag = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() % 100_000)
    );
    let n = cfg.records as u64;
    let need = (cfg.records as u64 * (cfg.record_size as u64 + 16) * 2).next_power_of_two();
    let opts = StreamOptions::ring(need.max(64 << 20)).segments(4);
    let src_name = format!("bench-src-{tag}");
    let dst_name = format!("bench-dst-{tag}");
    let src = Stream::create_in(&cfg.root, &src_name, &opts)?;
    let dst = Stream::create_in(&cfg.root, &dst_name, &opts)?;
    let record = vec![0x5au8; cfg.record_size];
    {
        let mut p = src.producer()?;
        for _ in 0..cfg.records {
            p.send(&record)?;
        }
    }
    let subject = format!("bench.{tag}.bridge");
    let js_bridge = format!("BENCH_{tag}_B");
    let mut plain = Vec::new();
    if cfg.plain_first {
        plain = plain_runs(cfg, &tag, &record)?;
    }

    // bridge out, batched as configured, then one message per record.
    let bridge_out = bridge_out_run(cfg, &src, &subject, &js_bridge, cfg.batch_bytes)?;
    let js_single = format!("{js_bridge}1");
    let bridge_out_per_record = bridge_out_run(cfg, &src, &format!("{subject}1"), &js_single, 0)?;

    // bridge in, from the batched JetStream stream.
    let rt = crate::runtime()?;
    let last = rt.block_on(async {
        let client = crate::connect(&cfg.nats_url, "ipcress-bench", Default::default()).await?;
        let mut s = jetstream::new(client).get_stream(&js_bridge).await?;
        anyhow::Ok(s.info().await?.state.last_sequence)
    })?;
    let ic = InConfig::new(
        &cfg.root,
        &cfg.nats_url,
        &js_bridge,
        &format!("bench-{tag}"),
        &dst_name,
    );
    let durable = ic.durable.clone();
    let dst_done = dst.clone();
    // Done when the applied point (word 0 of the bridge's slot, saved at
    // every commit: next sequence << 16) is past the last message.
    let bridge_in = run_until(
        move |stop| run_in(ic, stop),
        || {
            dst_done
                .find_user_slot(&in_name(&durable))
                .is_some_and(|s| s.get(0) >> 16 > last)
        },
    )?;

    // What the runs moved: T holds every record once, and so does the
    // unbatched JetStream stream.
    let mut c = dst.subscribe(ipcress::StartAt::Start)?;
    for i in 0..n {
        let m = c
            .recv_timeout(Duration::from_secs(10))?
            .with_context(|| format!("bridge in delivered {i} of {n} records"))?;
        anyhow::ensure!(
            m.to_vec()? == record,
            "record {i} differs after bridge out and in"
        );
    }
    anyhow::ensure!(
        c.recv_timeout(Duration::from_millis(100))?.is_none(),
        "more than {n} records after bridge out and in"
    );
    let single = rt.block_on(async {
        let client = crate::connect(&cfg.nats_url, "ipcress-bench", Default::default()).await?;
        let mut s = jetstream::new(client).get_stream(&js_single).await?;
        anyhow::Ok(s.info().await?.state.messages)
    })?;
    anyhow::ensure!(
        single == n,
        "{single} messages in JetStream for {n} records sent one per message"
    );

    if !cfg.plain_first {
        plain = plain_runs(cfg, &tag, &record)?;
    }
    // Remove the bridges' JetStream streams (best effort).
    rt.block_on(async {
        let client = crate::connect(&cfg.nats_url, "ipcress-bench", Default::default()).await?;
        let js = jetstream::new(client);
        let _ = js.delete_stream(&js_bridge).await;
        let _ = js.delete_stream(&js_single).await;
        anyhow::Ok(())
    })?;
    let _ = Stream::remove_in(&cfg.root, &src_name);
    let _ = Stream::remove_in(&cfg.root, &dst_name);
    Ok(BenchReport {
        records: n,
        record_size: cfg.record_size,
        bridge_out,
        bridge_out_per_record,
        bridge_in,
        plain: plain[0],
        plain_msg_id: plain[1],
        plain_bridge_headers: plain[2],
        plain_current_thread: plain[3],
    })
}

/// Time `bridge out` from `src` to `subject` (JetStream stream `js`,
/// created) until every record is acknowledged.
fn bridge_out_run(
    cfg: &BenchConfig,
    src: &Stream,
    subject: &str,
    js: &str,
    batch_bytes: usize,
) -> anyhow::Result<Duration> {
    let mut oc = OutConfig::new(&cfg.root, src.name(), &cfg.nats_url, subject);
    oc.create_stream = Some(js.to_string());
    oc.replicas = cfg.replicas;
    oc.window = cfg.window;
    oc.ordered = cfg.ordered;
    oc.batch_bytes = batch_bytes;
    // Done when the guard slot (word 0 = acknowledged position + 1, saved
    // at every ack) covers the stream; the counters in `BridgeStats` are
    // only flushed every 100-250 ms, too coarse for a timer.
    let end = src.tail();
    let name = out_name(subject);
    run_until(
        move |stop| run_out(oc, stop),
        || src.find_user_slot(&name).is_some_and(|g| g.get(0) > end),
    )
}

/// The plain publishers, each on a JetStream stream of its own: bare, with
/// a `Nats-Msg-Id` per message, with the bridge's headers. Every publish
/// awaits its ack, with `cfg.window` in flight; the time runs from the
/// first publish (after connecting and creating the stream) to the last
/// ack.
fn plain_runs(cfg: &BenchConfig, tag: &str, record: &[u8]) -> anyhow::Result<Vec<Duration>> {
    let mut times = plain_runs_on(cfg, tag, record, &crate::runtime()?, &[0, 1, 2])?;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    times.extend(plain_runs_on(cfg, tag, record, &current, &[3])?);
    Ok(times)
}

/// Plain publisher variants `kinds` on runtime `rt`: 0 and 3 bare, 1 with
/// a message id, 2 with the bridge's headers.
fn plain_runs_on(
    cfg: &BenchConfig,
    tag: &str,
    record: &[u8],
    rt: &tokio::runtime::Runtime,
    kinds: &[usize],
) -> anyhow::Result<Vec<Duration>> {
    rt.block_on(async {
        let client = crate::connect(&cfg.nats_url, "ipcress-bench", Default::default()).await?;
        let js = jetstream::new(client);
        let mut times = Vec::new();
        for &k in kinds {
            let name = format!("BENCH_{tag}_P{k}");
            let plain_subject = format!("bench.{tag}.plain{k}");
            js.create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![plain_subject.clone()],
                num_replicas: cfg.replicas.max(1),
                ..Default::default()
            })
            .await?;
            let payload = Bytes::copy_from_slice(record);
            let t0 = Instant::now();
            let mut futs = FuturesOrdered::new();
            for i in 0..cfg.records {
                if futs.len() >= cfg.window {
                    futs.next().await.expect("in flight")?;
                }
                let mut p = Publish::build().payload(payload.clone());
                if k == 1 || k == 2 {
                    p = p.message_id(format!("{tag}:{i}"));
                }
                if k == 2 {
                    p = p.header(crate::H_FLAGS, "3");
                    if cfg.ordered {
                        p = p.expected_last_sequence(i as u64);
                    }
                }
                let ack = js.send_publish(plain_subject.clone(), p).await?;
                futs.push_back(ack.into_future());
            }
            while let Some(r) = futs.next().await {
                r?;
            }
            times.push(t0.elapsed());
            let _ = js.delete_stream(&name).await;
        }
        anyhow::Ok(times)
    })
}

/// Run a bridge on a thread until `done` holds; the time it took.
fn run_until(
    run: impl FnOnce(Arc<AtomicBool>) -> anyhow::Result<()> + Send + 'static,
    done: impl Fn() -> bool,
) -> anyhow::Result<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let h = {
        let stop = stop.clone();
        std::thread::spawn(move || run(stop))
    };
    let deadline = t0 + Duration::from_secs(600);
    while !done() {
        if h.is_finished() || Instant::now() > deadline {
            stop.store(true, Ordering::SeqCst);
            h.join()
                .map_err(|_| anyhow::anyhow!("bridge panicked"))?
                .context("bridge ended early")?;
            anyhow::bail!("bridge did not finish");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let d = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    h.join().map_err(|_| anyhow::anyhow!("bridge panicked"))??;
    Ok(d)
}
