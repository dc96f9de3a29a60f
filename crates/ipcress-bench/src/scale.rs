//! `ipcress-bench scale`: does a stream get faster as processes are added?
//!
//! For every record size (100 B, 4 KiB), codec setting (plain; lz4 +
//! encryption), per-record work in the consumer (`--work-ns`, default 0),
//! number of producer processes P and number of consumer processes M (P, M in
//! 1, 2, 4, 8 up to the CPUs present, `--max-procs` to change the cap; the
//! quick mode runs P = 1 only), the parent creates a ring stream in a
//! /dev/shm temp directory and runs, one after the other:
//!
//! * a **group** of M member processes (`Stream::group`, `recv`, `commit`):
//!   each record goes to one member, so the rate should grow with M when the
//!   members have work to do;
//! * M independent **subscribers** (`Stream::subscribe`): each receives every
//!   record, for comparison.
//!
//! The consumers join first and say `ready`; then the producers start, build
//! their data and say `ready`; the parent says `go` to all and times until
//! the consumers together have received every record (group) or each has
//! (subscribers). Each consumer counts what it received in a user slot of
//! the stream (`Stream::user_slot`, one word, updated every 16 records and
//! whenever it is idle), which the parent polls; when the counts are
//! complete the parent says `stop`, every consumer commits and reports.
//!
//! Checks (the run fails otherwise): a producer writes records
//! `(producer, seq)` whose body is a slice of a deterministic pool chosen by
//! `(producer, seq)`; every consumer checks each record's length and body,
//! that the sequence numbers of each producer only grow, and adds two
//! independent 64-bit hashes of `(producer, seq)` into order-independent
//! sums. The parent computes the sums of the records sent: the group's
//! members together must match them exactly (count and both sums: every
//! record exactly once), and so must every subscriber on its own.
//!
//! Per-record work is a busy loop over a cheap hash (a multiply and a
//! shift per step), calibrated in the parent to the requested nanoseconds.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipcress::{Compression, Key, Policy, StartAt, Stream, StreamOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::compare::{human, median};
use crate::harness::{TempDir, Worker};
use crate::{Flags, report};

/// The hidden subcommand a scale child runs.
pub const CHILD_CMD: &str = "__scale-child";

/// The stream's ring.
const RING_BYTES: u64 = 16 << 20;

/// Distinct bytes record bodies are cut from.
const POOL_BYTES: usize = 1 << 20;

/// Producer index (u32 LE), 4 zero bytes, sequence number (u64 LE).
const HEADER: usize = 16;

/// The record sizes measured.
const SIZES: [usize; 2] = [100, 4 << 10];

/// The process counts tried (capped at `--max-procs`).
const PROCS: [usize; 4] = [1, 2, 4, 8];

/// The group every member joins.
const GROUP: &str = "scale";

/// How the consumers share the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Members of one group: each record to one of them.
    Group,
    /// Independent subscribers: each record to each of them.
    Subscribers,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Group => "group",
            Mode::Subscribers => "subscribers",
        }
    }
}

/// The stream's codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codecs {
    /// No compression, no encryption.
    Plain,
    /// lz4, then XChaCha20-Poly1305.
    Lz4Enc,
}

impl Codecs {
    const ALL: [Codecs; 2] = [Codecs::Plain, Codecs::Lz4Enc];

    fn name(self) -> &'static str {
        match self {
            Codecs::Plain => "plain",
            Codecs::Lz4Enc => "lz4 + enc",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Codecs::Plain => "plain",
            Codecs::Lz4Enc => "lz4-enc",
        }
    }
}

pub struct Opts {
    quick: bool,
    reps: usize,
    out: PathBuf,
    records: u64,
    procs: Vec<usize>,
    producers: Vec<usize>,
    work_ns: Vec<u64>,
    sizes: Vec<usize>,
    codecs: Vec<Codecs>,
    watchdog: Duration,
}

fn list<T>(s: &str, f: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',').map(|x| f(x.trim())).collect()
}

pub fn opts(args: &[String]) -> Result<Opts> {
    let f = Flags { args };
    f.check(
        &["--quick"],
        &[
            "--reps",
            "--out",
            "--records",
            "--max-procs",
            "--work-ns",
            "--sizes",
            "--codecs",
        ],
    )?;
    let quick = f.switch("--quick");
    let reps = match f.value("--reps")? {
        Some(n) => n.parse().context("--reps")?,
        None if quick => 1,
        None => 3,
    };
    ensure!(reps >= 1, "--reps must be at least 1");
    let records = match f.value("--records")? {
        Some(n) => crate::parse_size(n)?,
        None if quick => 100_000,
        None => 1_000_000,
    };
    ensure!(records >= 1, "--records must be positive");
    let max = match f.value("--max-procs")? {
        Some(n) => n.parse().context("--max-procs")?,
        None => report::cpus().max(1),
    };
    ensure!(max >= 1, "--max-procs must be at least 1");
    let procs: Vec<usize> = PROCS.into_iter().filter(|&n| n <= max).collect();
    let producers = if quick { vec![1] } else { procs.clone() };
    let work_ns = match f.value("--work-ns")? {
        Some(s) => list(s, |x| x.parse::<u64>().context("--work-ns"))?,
        None => vec![0],
    };
    let sizes = match f.value("--sizes")? {
        Some(s) => list(s, |x| Ok(crate::parse_size(x)? as usize))?,
        None => SIZES.to_vec(),
    };
    ensure!(
        sizes.iter().all(|&s| s >= HEADER),
        "--sizes must be at least {HEADER} bytes"
    );
    let codecs = match f.value("--codecs")? {
        Some(s) => list(s, |x| {
            Codecs::ALL
                .into_iter()
                .find(|c| c.id() == x)
                .with_context(|| format!("unknown codec {x:?}; known: plain, lz4-enc"))
        })?,
        None => Codecs::ALL.to_vec(),
    };
    Ok(Opts {
        quick,
        reps,
        out: f
            .value("--out")?
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from),
        records,
        procs,
        producers,
        work_ns,
        sizes,
        codecs,
        watchdog: if quick {
            crate::QUICK_WATCHDOG
        } else {
            crate::WATCHDOG
        },
    })
}

/// What one child does, as JSON on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    dir: PathBuf,
    stream: String,
    key: Option<PathBuf>,
    size: usize,
    mode: Mode,
    /// Producer: its index. Consumer: its index (names its count slot).
    index: usize,
    /// Producer: records to send. Consumer: unused.
    count: u64,
    /// Busy-loop steps per record (consumers).
    work_steps: u64,
}

/// What a child counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    records: u64,
    /// Σ h1(producer, seq), wrapping.
    h1: u64,
    /// Σ h2(producer, seq), wrapping.
    h2: u64,
    peak_rss_kib: u64,
}

impl Tally {
    fn add(&mut self, producer: u32, seq: u64) {
        let id = (u64::from(producer) << 40) ^ seq;
        self.records += 1;
        self.h1 = self.h1.wrapping_add(mix(id));
        self.h2 = self.h2.wrapping_add(mix(id ^ 0xA5A5_5A5A_F00D_CAFE));
    }

    fn merge(&mut self, o: &Tally) {
        self.records += o.records;
        self.h1 = self.h1.wrapping_add(o.h1);
        self.h2 = self.h2.wrapping_add(o.h2);
    }

    fn same_records(&self, o: &Tally) -> bool {
        (self.records, self.h1, self.h2) == (o.records, o.h1, o.h2)
    }
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `steps` rounds of a cheap hash: the per-record work.
#[inline(never)]
fn spin(steps: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..steps {
        x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    x
}

/// Steps of [`spin`] per ns on this machine (best of a few tries).
fn calibrate() -> f64 {
    let steps = 1u64 << 22;
    let mut best = f64::MAX;
    for i in 0..5 {
        let t = Instant::now();
        std::hint::black_box(spin(steps, i));
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    steps as f64 / best
}

/// Where the body of record `seq` of `producer` starts in the pool.
fn body_at(producer: usize, seq: u64, body: usize) -> usize {
    let span = (POOL_BYTES - body) as u64;
    (producer as u64)
        .wrapping_mul(7919)
        .wrapping_add(seq.wrapping_mul(61)) as usize
        % span as usize
}

/// The pool record bodies come from: log lines, so lz4 has something to do.
fn pool() -> Vec<u8> {
    crate::codecs::log_lines(POOL_BYTES)
}

fn slot_name(index: usize) -> String {
    format!("scale-count-{index}")
}

/// One run's settings (a cell of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Cell {
    size: usize,
    codecs: Codecs,
    work_ns: u64,
    producers: usize,
    mode: Mode,
    consumers: usize,
}

#[derive(Clone, Debug, Serialize)]
struct Outcome {
    cell: Cell,
    records: u64,
    secs: f64,
    records_per_sec: f64,
    /// What each consumer received, in index order.
    received: Vec<u64>,
}

fn run_cell(c: Cell, records: u64, work_steps: u64, watchdog: Duration) -> Result<Outcome> {
    let dir = TempDir::new()?;
    let name = "scale";
    let enc = c.codecs == Codecs::Lz4Enc;
    let opts = StreamOptions::ring(RING_BYTES)
        .policy(Policy::Block)
        .compression(if enc {
            Compression::Lz4
        } else {
            Compression::None
        })
        .encrypted(enc);
    let mut stream = Stream::create_in(dir.path(), name, &opts)?;
    let key = if enc {
        let path = dir.path().join("key");
        let k = Key::write_new(&path)?;
        stream = stream.with_key(&k)?;
        Some(path)
    } else {
        None
    };
    let job = |index: usize, count: u64| Job {
        dir: dir.path().to_owned(),
        stream: name.into(),
        key: key.clone(),
        size: c.size,
        mode: c.mode,
        index,
        count,
        work_steps,
    };
    // Consumers first, so they have joined before anything is sent.
    let mut consumers = Vec::new();
    for i in 0..c.consumers {
        let mut w = Worker::spawn(CHILD_CMD, "consumer", &job(i, 0), watchdog)?;
        let hello = w.line()?;
        ensure!(hello == "ready", "consumer {i} said {hello:?}, not ready");
        consumers.push(w);
    }
    let mut producers = Vec::new();
    let mut sent = Tally::default();
    for p in 0..c.producers {
        let count =
            records / c.producers as u64 + u64::from((p as u64) < records % c.producers as u64);
        for seq in 0..count {
            sent.add(p as u32, seq);
        }
        let mut w = Worker::spawn(CHILD_CMD, "producer", &job(p, count), watchdog)?;
        let hello = w.line()?;
        ensure!(hello == "ready", "producer {p} said {hello:?}, not ready");
        producers.push(w);
    }
    let slots = (0..c.consumers)
        .map(|i| {
            stream
                .find_user_slot(&slot_name(i))
                .with_context(|| format!("consumer {i} made no count slot"))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    for w in consumers.iter_mut().chain(producers.iter_mut()) {
        w.ctl.write_all(b"go\n")?;
    }
    // Poll the counts until every record is in.
    let mut polls = 0u64;
    let secs = loop {
        let counts: Vec<u64> = slots.iter().map(|s| s.get(0)).collect();
        let done = match c.mode {
            Mode::Group => counts.iter().sum::<u64>() >= records,
            Mode::Subscribers => counts.iter().all(|&n| n >= records),
        };
        if done {
            break start.elapsed().as_secs_f64();
        }
        ensure!(
            start.elapsed() < watchdog,
            "watchdog: consumers received {counts:?} of {records} records"
        );
        polls += 1;
        if polls.is_multiple_of(256) {
            for w in consumers.iter_mut().chain(producers.iter_mut()) {
                w.check_running()?;
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    for w in &mut consumers {
        w.ctl.write_all(b"stop\n")?;
    }
    let mut produced = Tally::default();
    for w in &mut producers {
        let t: Tally = w.report()?;
        produced.merge(&t);
    }
    ensure!(
        produced.same_records(&sent),
        "producers sent {produced:?}, expected {sent:?}"
    );
    let mut group = Tally::default();
    let mut received = Vec::new();
    for (i, w) in consumers.iter_mut().enumerate() {
        let t: Tally = w.report()?;
        received.push(t.records);
        match c.mode {
            Mode::Group => group.merge(&t),
            Mode::Subscribers => ensure!(
                t.same_records(&sent),
                "subscriber {i} received {} records (hashes {:x} {:x}); expected {} ({:x} {:x})",
                t.records,
                t.h1,
                t.h2,
                sent.records,
                sent.h1,
                sent.h2
            ),
        }
    }
    if c.mode == Mode::Group {
        ensure!(
            group.same_records(&sent),
            "the group received {} records {received:?} (hashes {:x} {:x}); \
             expected each of {} exactly once ({:x} {:x})",
            group.records,
            group.h1,
            group.h2,
            sent.records,
            sent.h1,
            sent.h2
        );
    }
    for w in consumers.into_iter().chain(producers) {
        w.finish(watchdog)?;
    }
    Ok(Outcome {
        cell: c,
        records,
        secs,
        records_per_sec: records as f64 / secs,
        received,
    })
}

/// A child's life: open the stream, join or build the data, say `ready`,
/// wait for `go`, work, then (consumers) run until `stop`; report; wait for
/// the parent to hang up.
pub fn child_main(args: &[String]) -> Result<()> {
    let [role, job] = args else {
        bail!("{CHILD_CMD} takes a role and a JSON job")
    };
    let job: Job = serde_json::from_str(job).context("scale job")?;
    let mut stream = Stream::open_in(&job.dir, &job.stream)?;
    if let Some(path) = &job.key {
        stream = stream.with_key(&Key::load(path)?)?;
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut out = std::io::stdout();
    let say = |out: &mut std::io::Stdout, what: &str| -> Result<()> {
        out.write_all(what.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    let mut line = String::new();
    let pool = pool();
    let body = job.size - HEADER;
    let mut tally = match role.as_str() {
        "producer" => {
            let mut p = stream.producer()?;
            let mut rec = vec![0u8; job.size];
            rec[..4].copy_from_slice(&(job.index as u32).to_le_bytes());
            say(&mut out, "ready")?;
            lines.read_line(&mut line)?;
            ensure!(line.trim_end() == "go", "expected go, got {line:?}");
            let mut t = Tally::default();
            for seq in 0..job.count {
                rec[8..16].copy_from_slice(&seq.to_le_bytes());
                let at = body_at(job.index, seq, body);
                rec[HEADER..].copy_from_slice(&pool[at..at + body]);
                p.send(&rec)?;
                t.add(job.index as u32, seq);
            }
            t
        }
        "consumer" => {
            let mut c = match job.mode {
                Mode::Group => stream.group(GROUP)?,
                Mode::Subscribers => stream.subscribe(StartAt::Start)?,
            };
            let slot = stream.user_slot(&slot_name(job.index))?;
            slot.set(0, 0);
            say(&mut out, "ready")?;
            lines.read_line(&mut line)?;
            ensure!(line.trim_end() == "go", "expected go, got {line:?}");
            // The rest of the control input is read by a thread: `stop`
            // sets the flag that the receive loop checks when idle.
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let reader = std::thread::spawn(move || {
                let mut lines = std::io::stdin().lock();
                let mut l = String::new();
                while lines.read_line(&mut l).is_ok_and(|n| n > 0) {
                    if l.trim_end() == "stop" {
                        flag.store(true, Ordering::Release);
                    }
                    l.clear();
                }
            });
            drop(lines);
            let mut t = Tally::default();
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            let mut sink = 0u64;
            loop {
                let Some(m) = c.recv_timeout(Duration::from_millis(1))? else {
                    slot.set(0, t.records);
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                };
                let pos = m.position();
                let b = m
                    .bytes()
                    .with_context(|| format!("record at {pos} is fragmented"))?;
                ensure!(
                    b.len() == job.size,
                    "record at {pos} has {} bytes, expected {}",
                    b.len(),
                    job.size
                );
                let producer = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
                let seq = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                let at = body_at(producer as usize, seq, body);
                ensure!(
                    b[HEADER..] == pool[at..at + body],
                    "record at {pos} (producer {producer}, seq {seq}) has the wrong body"
                );
                if let Some(&prev) = last.get(&producer) {
                    ensure!(
                        seq > prev,
                        "record at {pos}: producer {producer} seq {seq} after {prev}"
                    );
                }
                last.insert(producer, seq);
                if job.work_steps > 0 {
                    sink ^= spin(job.work_steps, seq ^ u64::from(producer));
                }
                t.add(producer, seq);
                if t.records % 16 == 0 {
                    slot.set(0, t.records);
                }
            }
            std::hint::black_box(sink);
            if job.mode == Mode::Group {
                c.commit()?;
            }
            drop(c);
            let mut report = t;
            report.peak_rss_kib = crate::harness::peak_rss_kib()?;
            say(&mut out, &serde_json::to_string(&report)?)?;
            // Keep the stream open until the parent hangs up.
            let _ = reader.join();
            return Ok(());
        }
        _ => bail!("unknown scale child role {role:?}"),
    };
    tally.peak_rss_kib = crate::harness::peak_rss_kib()?;
    say(&mut out, &serde_json::to_string(&tally)?)?;
    line.clear();
    let _ = lines.read_line(&mut line);
    Ok(())
}

/// One line of the table: the rates for each consumer count.
#[derive(Clone, Debug, Serialize)]
struct Row {
    size: usize,
    codecs: Codecs,
    work_ns: u64,
    producers: usize,
    mode: Mode,
    /// (M, median records/s, ratio to M = 1).
    rates: Vec<(usize, f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
struct Target {
    what: String,
    ratio: f64,
    wanted: f64,
    met: bool,
}

pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let steps_per_ns = calibrate();
    let mut rates: BTreeMap<Cell, Vec<f64>> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for rep in 0..opts.reps {
        for &size in &opts.sizes {
            for &codecs in &opts.codecs {
                for &work_ns in &opts.work_ns {
                    let steps = (work_ns as f64 * steps_per_ns).round() as u64;
                    for &producers in &opts.producers {
                        for mode in [Mode::Group, Mode::Subscribers] {
                            for &consumers in &opts.procs {
                                let cell = Cell {
                                    size,
                                    codecs,
                                    work_ns,
                                    producers,
                                    mode,
                                    consumers,
                                };
                                eprint!(
                                    "rep {}/{} {:>6} {:9} work {:>5} ns P={producers} {:11} M={consumers} ",
                                    rep + 1,
                                    opts.reps,
                                    human(size as u64),
                                    codecs.name(),
                                    work_ns,
                                    mode.name()
                                );
                                let o = run_cell(cell, opts.records, steps, opts.watchdog)
                                    .with_context(|| format!("{cell:?}"))?;
                                eprintln!(
                                    "{:.3} s {:.3} M rec/s {:?}",
                                    o.secs,
                                    o.records_per_sec / 1e6,
                                    o.received
                                );
                                rates.entry(cell).or_default().push(o.records_per_sec);
                                outcomes.push(o);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for (cell, reps) in &rates {
        let m = median(reps);
        let base = Cell {
            consumers: 1,
            ..*cell
        };
        let one = rates.get(&base).map(|r| median(r));
        let ratio = one.map_or(f64::NAN, |o| m / o);
        match rows.last_mut() {
            Some(r)
                if (r.size, r.codecs, r.work_ns, r.producers, r.mode)
                    == (
                        cell.size,
                        cell.codecs,
                        cell.work_ns,
                        cell.producers,
                        cell.mode,
                    ) =>
            {
                r.rates.push((cell.consumers, m, ratio))
            }
            _ => rows.push(Row {
                size: cell.size,
                codecs: cell.codecs,
                work_ns: cell.work_ns,
                producers: cell.producers,
                mode: cell.mode,
                rates: vec![(cell.consumers, m, ratio)],
            }),
        }
    }
    let targets = targets(&rows);
    let table = markdown(opts, &rows, &targets);
    println!("{table}");
    let doc = json!({
        "setup": {
            "mode": if opts.quick { "quick" } else { "full" },
            "reps": opts.reps,
            "records_per_run": opts.records,
            "procs": opts.procs,
            "producers": opts.producers,
            "work_ns": opts.work_ns,
            "work_steps_per_ns": steps_per_ns,
            "sizes": opts.sizes,
            "ring_bytes": RING_BYTES,
            "policy": "block",
            "cpus": report::cpus(),
            "kernel": report::kernel(),
        },
        "rows": rows,
        "targets": targets,
        "runs": outcomes,
        "elapsed_secs": started.elapsed().as_secs_f64(),
    });
    let path = report::write_out(&opts.out, "scale.json", serde_json::to_string_pretty(&doc)?)?;
    eprintln!(
        "wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Issue 13's shape: 100-byte plain records from one producer, a group of
/// M against a group of 1: ≥ 0.9× with no work; with work, ≥ 1.7× for two
/// members and ≥ 0.8 × M beyond.
fn targets(rows: &[Row]) -> Vec<Target> {
    let mut v = Vec::new();
    for r in rows {
        if r.mode != Mode::Group || r.size != 100 || r.codecs != Codecs::Plain || r.producers != 1 {
            continue;
        }
        for &(m, _, ratio) in &r.rates {
            if m < 2 {
                continue;
            }
            let wanted = match (r.work_ns, m) {
                (0, _) => 0.9,
                (_, 2) => 1.7,
                _ => 0.8 * m as f64,
            };
            v.push(Target {
                what: format!(
                    "group of {m} ÷ group of 1, 100 B plain, 1 producer, work {} ns",
                    r.work_ns
                ),
                ratio,
                wanted,
                met: ratio >= wanted,
            });
        }
    }
    v
}

fn markdown(opts: &Opts, rows: &[Row], targets: &[Target]) -> String {
    let mut s = format!(
        "## ipcress-bench scale ({} mode, median of {} reps, {} records per run, {} CPUs)\n\n",
        if opts.quick { "quick" } else { "full" },
        opts.reps,
        opts.records,
        report::cpus()
    );
    s.push_str("| record | codecs | work / record | producers | consumers |");
    for m in &opts.procs {
        s.push_str(&format!(" M = {m} |"));
    }
    s.push_str("\n|---|---|---:|---:|---|");
    for _ in &opts.procs {
        s.push_str("---:|");
    }
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ns | {} | {} |",
            human(r.size as u64),
            r.codecs.name(),
            r.work_ns,
            r.producers,
            r.mode.name()
        ));
        for m in &opts.procs {
            match r.rates.iter().find(|x| x.0 == *m) {
                Some(&(_, rate, ratio)) => {
                    s.push_str(&format!(" {:.3} M ({ratio:.2}×) |", rate / 1e6));
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push_str(
        "\nCells: records of the stream per second, in millions, from `go` until the \
         consumers together (group) or each of them (subscribers) had received every record; \
         (×) = this ÷ the same row's M = 1. Every record was checked (length, body, order per \
         producer) and the run failed unless the group received each record exactly once and \
         each subscriber every record once.\n",
    );
    if !targets.is_empty() {
        s.push_str("\nTargets (issue 13):\n");
        for t in targets {
            s.push_str(&format!(
                "- {}: {:.2}× (≥ {:.2}×), {}\n",
                t.what,
                t.ratio,
                t.wanted,
                if t.met { "met" } else { "MISSED" }
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_are_order_independent_and_see_duplicates() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for seq in 0..100 {
            a.add(0, seq);
            b.add(0, 99 - seq);
        }
        assert!(a.same_records(&b));
        let mut c = b;
        c.add(0, 5);
        c.records -= 1;
        assert!(!c.same_records(&a), "a duplicate replacing a record");
    }

    #[test]
    fn bodies_stay_inside_the_pool() {
        for size in [HEADER, 100, 4096] {
            let body = size - HEADER;
            for p in 0..8 {
                for seq in [0, 1, 1 << 20, u64::MAX] {
                    assert!(body_at(p, seq, body) + body <= POOL_BYTES);
                }
            }
        }
    }
}
