//! `ipcress-bench compare`: every workload on every transport, repeated,
//! reduced to medians, written as a Markdown table, bench.json and bench.svg.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::{Outcome, byte_sum, run_case};
use crate::spec::{Case, Kind, Transport, Wait};
use crate::{fdstream, pipe, report, tcp, uds};

pub struct Opts {
    pub quick: bool,
    pub reps: usize,
    pub out: PathBuf,
    pub only: Option<Vec<Transport>>,
    pub ring_bytes: usize,
    pub watchdog: Duration,
}

/// How much work each workload does per repetition.
#[derive(Clone, Copy, Debug, Serialize)]
struct Volumes {
    small_msgs: u64,
    round_trips: u64,
    warmup: u64,
    bulk_bytes: u64,
    fanout_msgs: u64,
    big_stream_bytes: u64,
    big_ring_bytes: usize,
    ceiling_bytes: u64,
}

impl Volumes {
    fn new(quick: bool) -> Volumes {
        if quick {
            Volumes {
                small_msgs: 200_000,
                round_trips: 5_000,
                warmup: 500,
                bulk_bytes: 256 << 20,
                fanout_msgs: 25_000,
                big_stream_bytes: 1 << 30,
                big_ring_bytes: 64 << 20,
                ceiling_bytes: 1 << 30,
            }
        } else {
            Volumes {
                small_msgs: 2_000_000,
                round_trips: 100_000,
                warmup: 10_000,
                bulk_bytes: 2 << 30,
                fanout_msgs: 1_000_000,
                big_stream_bytes: 4 << 30,
                big_ring_bytes: 64 << 20,
                ceiling_bytes: 8 << 30,
            }
        }
    }
}

/// What a row shows, taken from one case's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    MsgRate,
    GBps,
    P50,
    P99,
    P999,
    Max,
    RssProducer,
    RssConsumer,
}

impl Metric {
    fn label(self) -> (&'static str, &'static str, bool) {
        match self {
            Metric::MsgRate => ("", "M msg/s", true),
            Metric::GBps => ("", "GB/s", true),
            Metric::P50 => ("p50", "µs", false),
            Metric::P99 => ("p99", "µs", false),
            Metric::P999 => ("p99.9", "µs", false),
            Metric::Max => ("max", "µs", false),
            Metric::RssProducer => ("peak RSS producer", "MiB", false),
            Metric::RssConsumer => ("peak RSS consumer", "MiB", false),
        }
    }

    fn value(self, o: &Outcome) -> Option<f64> {
        let c = &o.case;
        let lat = |f: fn(&crate::spec::Latency) -> u64| o.latency().map(|l| f(l) as f64 / 1e3);
        match self {
            Metric::MsgRate => Some(c.count as f64 / o.secs / 1e6),
            Metric::GBps => Some((c.count * c.size as u64) as f64 / o.secs / 1e9),
            Metric::P50 => lat(|l| l.p50_ns),
            Metric::P99 => lat(|l| l.p99_ns),
            Metric::P999 => lat(|l| l.p999_ns),
            Metric::Max => lat(|l| l.max_ns),
            Metric::RssProducer => o.producer().map(|r| r.peak_rss_kib as f64 / 1024.0),
            Metric::RssConsumer => o
                .consumers()
                .map(|r| r.peak_rss_kib as f64 / 1024.0)
                .reduce(f64::max),
        }
    }
}

struct Workload {
    id: &'static str,
    title: String,
    kind: Kind,
    size: usize,
    count: u64,
    consumers: usize,
    wait: Wait,
    ring_bytes: usize,
    transports: Vec<Transport>,
    metrics: Vec<Metric>,
}

fn workloads(v: &Volumes, ring_bytes: usize, all: &[Transport]) -> Vec<Workload> {
    let lat = vec![Metric::P50, Metric::P99, Metric::P999, Metric::Max];
    // The checksummed variant is measured where checksums cost: bulk data.
    let plain: Vec<Transport> = all
        .iter()
        .copied()
        .filter(|&t| t != Transport::IpcReserveCrc)
        .collect();
    let stream = |id, title: String, size: usize, count: u64, consumers| Workload {
        id,
        title,
        kind: Kind::Stream,
        size,
        count,
        consumers,
        wait: Wait::Auto,
        ring_bytes,
        transports: plain.clone(),
        metrics: vec![if size <= 64 {
            Metric::MsgRate
        } else {
            Metric::GBps
        }],
    };
    let pingpong = |id, title: String, wait| Workload {
        id,
        title,
        kind: Kind::PingPong { warmup: v.warmup },
        size: 64,
        count: v.round_trips,
        consumers: 1,
        wait,
        ring_bytes,
        transports: plain.clone(),
        metrics: lat.clone(),
    };
    let bulk = |id, size: usize| {
        let title = format!("(c) bulk {}, consumer sums every byte", human(size as u64));
        Workload {
            transports: all.to_vec(),
            ..stream(id, title, size, v.bulk_bytes / size as u64, 1)
        }
    };
    let big_transports = [
        Transport::IpcSend,
        Transport::IpcReserve,
        Transport::Pipe,
        Transport::Pipe1m,
        Transport::Ring,
    ];
    vec![
        stream("a", "(a) 64 B one-way, 1→1".into(), 64, v.small_msgs, 1),
        pingpong(
            "b-spin",
            "(b) 64 B ping-pong one-way, busy-spin".into(),
            Wait::Spin,
        ),
        pingpong(
            "b-block",
            "(b) 64 B ping-pong one-way, blocking".into(),
            Wait::Block,
        ),
        bulk("c-64k", 64 << 10),
        bulk("c-1m", 1 << 20),
        bulk("c-8m", 8 << 20),
        stream(
            "d",
            "(d) 64 B, 1 producer → 4 consumers (rate per consumer)".into(),
            64,
            v.fanout_msgs,
            4,
        ),
        Workload {
            title: format!(
                "(e) {} stream of 64 KiB msgs, {} ring",
                human(v.big_stream_bytes),
                human(v.big_ring_bytes as u64)
            ),
            ring_bytes: v.big_ring_bytes,
            transports: all
                .iter()
                .copied()
                .filter(|t| big_transports.contains(t))
                .collect(),
            metrics: vec![Metric::GBps, Metric::RssProducer, Metric::RssConsumer],
            ..stream(
                "e",
                String::new(),
                64 << 10,
                v.big_stream_bytes / (64 << 10),
                1,
            )
        },
    ]
}

/// One line of the report: a workload and a metric, a median per transport.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub cells: BTreeMap<Transport, Cell>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub median: f64,
    pub reps: Vec<f64>,
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `64 KiB`, `1 MiB`, `3.76 MiB`, `100 B`.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift {
            return if bytes.is_multiple_of(1 << shift) {
                format!("{} {unit}", bytes >> shift)
            } else {
                format!("{:.2} {unit}", bytes as f64 / (1u64 << shift) as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// Checks that every consumer got exactly what the producer sent.
pub fn verify(o: &Outcome) -> Result<()> {
    let want = o.case.count * o.case.size as u64;
    match o.case.kind {
        Kind::Stream => {
            let p = o.producer().context("no producer report")?;
            for c in o.consumers() {
                anyhow::ensure!(
                    c.bytes == want && c.sum == p.sum,
                    "consumer got {} bytes (sum {}), producer sent {want} (sum {})",
                    c.bytes,
                    c.sum,
                    p.sum
                );
            }
        }
        Kind::PingPong { warmup } => {
            let total = (o.case.count + warmup) * o.case.size as u64;
            for r in &o.reports {
                anyhow::ensure!(
                    r.bytes == total,
                    "{:?} got {} bytes, expected {total}",
                    r.role,
                    r.bytes
                );
            }
        }
    }
    Ok(())
}

/// Ceilings measured in this process: memcpy and the consumer's byte sum
/// (one thread), and one cache-line crossing between two threads.
fn ceilings(v: &Volumes, reps: usize) -> Value {
    const BUF: usize = 64 << 20;
    let src = crate::harness::payload(BUF);
    let mut dst = vec![1u8; BUF];
    let rounds = (v.ceiling_bytes / BUF as u64).max(1);
    let mut copy = Vec::new();
    let mut sum = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..rounds {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        copy.push((rounds * BUF as u64) as f64 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(byte_sum(std::hint::black_box(&dst)));
        }
        sum.push((rounds * BUF as u64) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    let trips = v.round_trips * 10;
    let crossing: Vec<f64> = (0..reps).map(|_| line_crossing_ns(trips)).collect();
    json!({
        "buffer_bytes": BUF,
        "bytes_per_rep": rounds * BUF as u64,
        "memcpy_gbps": { "median": median(&copy), "reps": copy },
        "byte_sum_gbps": { "median": median(&sum), "reps": sum },
        "line_crossing_round_trips": trips,
        "line_crossing_ns": { "median": median(&crossing), "reps": crossing },
    })
}

/// The latency floor: two threads (on the two cores) bounce a counter
/// `trips` times, each writing its own cache line and polling the other's,
/// as a ping-pong over two streams does; one crossing is half a round trip.
fn line_crossing_ns(trips: u64) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering::*};
    #[repr(align(128))]
    struct Line(AtomicU64);
    let (ping, pong) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=trips {
                while ping.0.load(Acquire) != i {
                    std::hint::spin_loop();
                }
                pong.0.store(i, Release);
            }
        });
        for i in 1..=trips {
            ping.0.store(i, Release);
            while pong.0.load(Acquire) != i {
                std::hint::spin_loop();
            }
        }
    });
    t.elapsed().as_nanos() as f64 / (2 * trips) as f64
}

/// Everything the report must say about sizes and settings.
fn setup(opts: &Opts, v: &Volumes, transports: &[Transport]) -> Result<Value> {
    let (uds_snd, uds_rcv) = uds::buffer_sizes(Transport::Uds)?;
    let (uds4_snd, uds4_rcv) = uds::buffer_sizes(Transport::Uds4m)?;
    let (tcp_snd, tcp_rcv) = tcp::buffer_sizes()?;
    Ok(json!({
        "mode": if opts.quick { "quick" } else { "full" },
        "reps": opts.reps,
        "cpus": report::cpus(),
        "kernel": report::kernel(),
        "transports": transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "ring_bytes": opts.ring_bytes,
        "big_ring_bytes": v.big_ring_bytes,
        "pipe_default_bytes": pipe::default_size()?,
        "pipe_1m_bytes": pipe::BIG_PIPE,
        "uds_default_sndbuf_rcvbuf": [uds_snd, uds_rcv],
        "uds_4m_requested": uds::BIG_BUF,
        "uds_4m_sndbuf_rcvbuf_reported": [uds4_snd, uds4_rcv],
        "tcp_default_sndbuf_rcvbuf": [tcp_snd, tcp_rcv],
        "fd_read_buffer_bytes": fdstream::READ_BUF,
        "iox_subscriber_buffer": "ring_bytes / message size samples, clamped to 2..=4096",
        "volumes": v,
    }))
}

pub fn run(opts: &Opts) -> Result<()> {
    let v = Volumes::new(opts.quick);
    let transports: Vec<Transport> = Transport::ALL
        .into_iter()
        .filter(|t| t.built())
        .filter(|t| opts.only.as_ref().is_none_or(|o| o.contains(t)))
        .collect();
    let loads = workloads(&v, opts.ring_bytes, &transports);
    let setup = setup(opts, &v, &transports)?;
    let started = Instant::now();

    eprintln!("ceilings ...");
    let ceilings = ceilings(&v, opts.reps);

    let mut values: BTreeMap<(String, Transport), Vec<f64>> = BTreeMap::new();
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let mut failed = Vec::new();
    for rep in 0..opts.reps {
        for w in &loads {
            for &t in &w.transports {
                let case = Case {
                    transport: t,
                    kind: w.kind,
                    size: w.size,
                    count: w.count,
                    consumers: w.consumers,
                    wait: w.wait,
                    ring_bytes: w.ring_bytes,
                };
                // A pair that failed once is not run again (a hang costs a watchdog each time).
                if !t.supports(&case) || failed.contains(&(w.id, t)) {
                    continue;
                }
                eprint!("rep {}/{} {:8} {:12} ", rep + 1, opts.reps, w.id, t.name());
                match run_case(&case, opts.watchdog).and_then(|o| verify(&o).map(|()| o)) {
                    Ok(o) => {
                        eprintln!("{:.3} s", o.secs);
                        for &m in &w.metrics {
                            if let Some(x) = m.value(&o) {
                                values.entry((row_id(w.id, m), t)).or_default().push(x);
                            }
                        }
                        cases.push(json!({ "workload": w.id, "rep": rep, "outcome": o }));
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e:#}");
                        failed.push((w.id, t));
                        errors.push(json!({ "workload": w.id, "rep": rep, "transport": t, "error": format!("{e:#}") }));
                    }
                }
            }
        }
    }

    let mut rows = Vec::new();
    for w in &loads {
        for &m in &w.metrics {
            let (what, unit, higher) = m.label();
            let id = row_id(w.id, m);
            let title = if what.is_empty() {
                w.title.clone()
            } else {
                format!("{} {what}", w.title)
            };
            let cells = transports
                .iter()
                .filter_map(|&t| {
                    let reps = values.get(&(id.clone(), t))?.clone();
                    Some((
                        t,
                        Cell {
                            median: median(&reps),
                            reps,
                        },
                    ))
                })
                .collect();
            rows.push(Row {
                id,
                title,
                unit: unit.into(),
                higher_is_better: higher,
                cells,
            });
        }
    }

    let table = report::markdown(&rows, &transports, &setup, &ceilings, errors.len());
    println!("{table}");
    let doc = json!({
        "setup": setup,
        "ceilings": ceilings,
        "rows": rows,
        "errors": errors,
        "cases": cases,
        "elapsed_secs": started.elapsed().as_secs_f64(),
    });
    report::write_out(&opts.out, "bench.json", serde_json::to_string_pretty(&doc)?)?;
    report::write_out(&opts.out, "bench.svg", report::svg(&rows, &transports))?;
    report::write_out(&opts.out, "bench.md", &table)?;
    eprintln!(
        "wrote {}/bench.{{json,svg,md}} in {:.0} s",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        errors.is_empty(),
        "{} case(s) failed; see bench.json",
        errors.len()
    );
    Ok(())
}

fn row_id(workload: &str, m: Metric) -> String {
    format!("{workload}.{}", format!("{m:?}").to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(64), "64 B");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(8 << 20), "8 MiB");
        assert_eq!(human(4 << 30), "4 GiB");
        assert_eq!(human(3 << 19), "1.50 MiB");
    }
}
