//! `ipcress-bench codecs`: what compression and encryption cost end to end
//! between processes.
//!
//! For every codec (none, lz4, zstd:3, XChaCha20-Poly1305, lz4 + XChaCha20-
//! Poly1305), data set (synthetic log lines, random bytes) and record size
//! (4 KiB, 64 KiB), the parent creates a ring stream with that codec in a
//! /dev/shm temp directory (and, when encrypted, a fresh `0600` key file
//! beside it), then re-executes this binary twice (`__codec-child`): a
//! consumer that subscribes from the start, then a producer. Each child
//! builds its data before saying `ready`; the parent says `go` to both and
//! times from there to the moment the consumer's report arrives.
//!
//! The producer sends records cut from a deterministic pool (so no data is
//! generated while timed) with `Producer::send`, which compresses and
//! encrypts; the consumer receives with `Consumer::recv`, which opens and
//! decompresses, and sums every payload byte. Both report the record count,
//! byte count, byte sum and a record-order-weighted sum; the parent fails the
//! case unless they agree. Throughput is uncompressed payload bytes over that
//! time; the stored ratio is the stream's tail position (every frame header,
//! alignment pad and tag included) over the payload bytes.
//!
//! Control: each child's stdin and stdout are one end of a Unix socket pair,
//! so the parent's reads time out (the watchdog) instead of hanging.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipcress::codec::{self, Cipher};
use ipcress::{Checksum, Compression, Key, Policy, StartAt, Stream, StreamOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::compare::{human, median};
use crate::harness::{TempDir, Worker, byte_sum, peak_rss_kib};
use crate::{Flags, parse_size};
use crate::{aead, report};

/// The hidden subcommand a codec child runs.
pub const CHILD_CMD: &str = "__codec-child";

/// The stream's ring: big enough that the producer rarely waits on a slow
/// consumer for reasons other than the codec.
const RING_BYTES: u64 = 16 << 20;

/// Distinct data each producer cycles through (fewer when a case is smaller).
const POOL_BYTES: usize = 8 << 20;

/// The record sizes measured: a log line, a page, a large record.
const RECORD_SIZES: [usize; 3] = [100, 4 << 10, 64 << 10];

/// Throughput targets from issue 5, GB/s end to end (4 KiB records and up).
const TARGET_GBPS: f64 = 1.0;

/// Issue 13: a 100-byte record sealed and opened in at most this many ns,
/// one thread.
const TARGET_SMALL_NS: f64 = 300.0;

/// Issue 13: 64 KiB records sealed at this many GB/s or more, one core.
const TARGET_SEAL_GBPS: f64 = 2.0;

/// A codec setting: compression, and whether records are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Codec {
    /// `none`, `lz4`, `zstd:LEVEL` (as `Compression` parses it).
    compression: CompressionName,
    encrypted: bool,
}

/// `Compression` in a form that orders, compares and serialises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CompressionName {
    None,
    Lz4,
    Zstd3,
}

impl CompressionName {
    fn setting(self) -> Compression {
        match self {
            CompressionName::None => Compression::None,
            CompressionName::Lz4 => Compression::Lz4,
            CompressionName::Zstd3 => Compression::Zstd(3),
        }
    }
}

impl Codec {
    const ALL: [Codec; 5] = [
        Codec::new(CompressionName::None, false),
        Codec::new(CompressionName::Lz4, false),
        Codec::new(CompressionName::Zstd3, false),
        Codec::new(CompressionName::None, true),
        Codec::new(CompressionName::Lz4, true),
    ];

    const fn new(compression: CompressionName, encrypted: bool) -> Codec {
        Codec {
            compression,
            encrypted,
        }
    }

    fn name(self) -> String {
        match (self.compression, self.encrypted) {
            (CompressionName::None, false) => "none".into(),
            (CompressionName::None, true) => "xchacha20poly1305".into(),
            (c, false) => c.setting().to_string(),
            (c, true) => format!("{} + xchacha20poly1305", c.setting()),
        }
    }

    /// The short name `--only` takes.
    fn id(self) -> &'static str {
        match (self.compression, self.encrypted) {
            (CompressionName::None, false) => "none",
            (CompressionName::Lz4, false) => "lz4",
            (CompressionName::Zstd3, false) => "zstd3",
            (CompressionName::None, true) => "enc",
            (CompressionName::Lz4, true) => "lz4-enc",
            (CompressionName::Zstd3, true) => "zstd3-enc",
        }
    }

    fn parse(s: &str) -> Result<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.id() == s)
            .with_context(|| {
                let ids: Vec<_> = Codec::ALL.iter().map(|c| c.id()).collect();
                format!("unknown codec {s:?}; known: {}", ids.join(", "))
            })
    }

    fn options(self) -> StreamOptions {
        StreamOptions::ring(RING_BYTES)
            .policy(Policy::Block)
            .checksum(Checksum::None)
            .compression(self.compression.setting())
            .encrypted(self.encrypted)
    }
}

/// What the records hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Data {
    /// Synthetic service log lines, cut into records regardless of line ends.
    Logs,
    /// Uniformly random bytes (incompressible).
    Random,
}

impl Data {
    const ALL: [Data; 2] = [Data::Logs, Data::Random];

    fn name(self) -> &'static str {
        match self {
            Data::Logs => "log lines",
            Data::Random => "random",
        }
    }

    /// `len` bytes of this data set, the same on every call.
    fn pool(self, len: usize) -> Vec<u8> {
        match self {
            Data::Logs => log_lines(len),
            Data::Random => random_bytes(len),
        }
    }
}

/// One measured run: everything both children need to know.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    codec: Codec,
    data: Data,
    record: usize,
    count: u64,
    pool: usize,
    dir: PathBuf,
    stream: String,
    key: Option<PathBuf>,
}

/// What each child says when it is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    records: u64,
    bytes: u64,
    /// Sum of every payload byte.
    sum: u64,
    /// Σ (record index + 1) × record byte sum, wrapping: catches lost,
    /// repeated or reordered records that keep the plain sum.
    weighted: u64,
    peak_rss_kib: u64,
}

/// One case's measurement.
#[derive(Clone, Debug, Serialize)]
struct Outcome {
    secs: f64,
    gbps: f64,
    payload_bytes: u64,
    stored_bytes: u64,
    producer: Report,
    consumer: Report,
}

pub struct Opts {
    quick: bool,
    reps: usize,
    out: PathBuf,
    /// Uncompressed payload bytes per case.
    bytes: u64,
    /// The codecs to run; "none" always runs (the other rows are relative to it).
    codecs: Vec<Codec>,
    /// Only the AEAD backends, one thread (no streams).
    aead_only: bool,
    watchdog: Duration,
}

pub fn opts(args: &[String]) -> Result<Opts> {
    let f = Flags { args };
    f.check(
        &["--quick", "--aead-only"],
        &["--reps", "--out", "--bytes", "--only"],
    )?;
    let mut codecs = vec![Codec::ALL[0]];
    match f.value("--only")? {
        None => codecs = Codec::ALL.to_vec(),
        Some(list) => {
            for c in list.split(',').map(Codec::parse) {
                let c = c?;
                if !codecs.contains(&c) {
                    codecs.push(c);
                }
            }
        }
    }
    let quick = f.switch("--quick");
    let reps = match f.value("--reps")? {
        Some(n) => n.parse().context("--reps")?,
        None if quick => 3,
        None => 5,
    };
    ensure!(reps >= 1, "--reps must be at least 1");
    let bytes = match f.value("--bytes")? {
        Some(s) => parse_size(s)?,
        None if quick => 64 << 20,
        None => 512 << 20,
    };
    let largest = RECORD_SIZES[RECORD_SIZES.len() - 1] as u64;
    ensure!(
        bytes >= largest,
        "--bytes must be at least {}",
        human(largest)
    );
    Ok(Opts {
        quick,
        reps,
        out: f
            .value("--out")?
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from),
        bytes,
        codecs,
        aead_only: f.switch("--aead-only"),
        watchdog: if quick {
            crate::QUICK_WATCHDOG
        } else {
            crate::WATCHDOG
        },
    })
}

type CellKey = (Codec, Data, usize);

pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let mut gbps: BTreeMap<CellKey, Vec<f64>> = BTreeMap::new();
    let mut ratio: BTreeMap<CellKey, f64> = BTreeMap::new();
    let mut cases = Vec::new();
    let mut ceilings: BTreeMap<CellKey, Vec<(f64, f64)>> = BTreeMap::new();
    let mut aead_reps: Vec<Vec<aead::Sample>> = Vec::new();
    for rep in 0..opts.reps {
        eprint!("rep {}/{} AEAD backends, one thread ", rep + 1, opts.reps);
        let samples = aead::measure(if opts.quick { 150 } else { 400 })?;
        eprintln!(
            "{}",
            samples
                .iter()
                .map(|s| format!("{:.0} ns", s.small_seal_open_ns))
                .collect::<Vec<_>>()
                .join(", ")
        );
        aead_reps.push(samples);
        if opts.aead_only {
            continue;
        }
        for data in Data::ALL {
            for record in RECORD_SIZES {
                for &codec in &opts.codecs {
                    eprint!(
                        "rep {}/{} {:28} {:9} {:>6} ",
                        rep + 1,
                        opts.reps,
                        codec.name(),
                        data.name(),
                        human(record as u64)
                    );
                    let o = run_case(codec, data, record, opts.bytes, opts.watchdog).with_context(
                        || {
                            format!(
                                "codec {} on {} in {} records",
                                codec.name(),
                                data.name(),
                                human(record as u64)
                            )
                        },
                    )?;
                    eprint!("{:.3} s {:.2} GB/s", o.secs, o.gbps);
                    let k = (codec, data, record);
                    gbps.entry(k).or_default().push(o.gbps);
                    let c = ceiling(codec, data, record, opts.bytes)?;
                    eprintln!(", 1 thread: encode {:.2}, decode {:.2}", c.0, c.1);
                    ceilings.entry(k).or_default().push(c);
                    // The same bytes every rep: the ratio does not vary.
                    ratio.insert(k, o.stored_bytes as f64 / o.payload_bytes as f64);
                    cases.push(json!({
                        "rep": rep,
                        "codec": codec.name(),
                        "data": data,
                        "record_bytes": record,
                        "outcome": o,
                    }));
                }
            }
        }
    }

    let mut rows = Vec::new();
    for data in Data::ALL {
        for record in RECORD_SIZES {
            if opts.aead_only {
                break;
            }
            let none = median(&gbps[&(Codec::ALL[0], data, record)]);
            for &codec in &opts.codecs {
                let k = (codec, data, record);
                let reps = gbps[&k].clone();
                let m = median(&reps);
                rows.push(Row {
                    codec: codec.name(),
                    data: data.name(),
                    record_bytes: record,
                    gbps_median: m,
                    gbps_reps: reps,
                    vs_none: m / none,
                    stored_ratio: ratio[&k],
                    encode_gbps_1t: median(&ceilings[&k].iter().map(|c| c.0).collect::<Vec<_>>()),
                    decode_gbps_1t: median(&ceilings[&k].iter().map(|c| c.1).collect::<Vec<_>>()),
                });
            }
        }
    }
    let aead_rows = aead_rows(&aead_reps);
    let mut targets = targets(&rows);
    targets.extend(aead_targets(&aead_rows));
    let setup = json!({
        "mode": if opts.quick { "quick" } else { "full" },
        "reps": opts.reps,
        "payload_bytes_per_case": opts.bytes,
        "record_bytes": RECORD_SIZES,
        "pool_bytes": POOL_BYTES,
        "ring_bytes": RING_BYTES,
        "policy": "block",
        "checksum": "none",
        "cpus": report::cpus(),
        "kernel": report::kernel(),
    });
    let table = markdown(opts, &rows, &aead_rows, &targets);
    println!("{table}");
    let doc = json!({
        "setup": setup,
        "rows": rows,
        "aead": aead_rows,
        "aead_reps": aead_reps,
        "targets": targets,
        "cases": cases,
        "elapsed_secs": started.elapsed().as_secs_f64(),
    });
    let path = report::write_out(
        &opts.out,
        "codecs.json",
        serde_json::to_string_pretty(&doc)?,
    )?;
    eprintln!(
        "wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
struct Row {
    codec: String,
    data: &'static str,
    record_bytes: usize,
    gbps_median: f64,
    gbps_reps: Vec<f64>,
    /// This codec's median ÷ no codec's median, same data and record size.
    vs_none: f64,
    /// Stream bytes used ÷ payload bytes.
    stored_ratio: f64,
    /// The producer's codec work alone, one thread, no stream.
    encode_gbps_1t: f64,
    /// The consumer's codec work and byte sum alone, one thread, no stream.
    decode_gbps_1t: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Target {
    what: String,
    /// The measured value, in `unit`.
    value: f64,
    unit: &'static str,
    met: bool,
}

/// One AEAD backend, medians over the reps.
#[derive(Clone, Debug, Serialize)]
struct AeadRow {
    backend: &'static str,
    small_seal_open_ns: f64,
    small_seal_ns: f64,
    large_seal_gbps: f64,
    large_seal_open_gbps: f64,
}

fn aead_rows(reps: &[Vec<aead::Sample>]) -> Vec<AeadRow> {
    let Some(first) = reps.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            let m = |f: fn(&aead::Sample) -> f64| {
                median(&reps.iter().map(|r| f(&r[i])).collect::<Vec<_>>())
            };
            AeadRow {
                backend: first[i].backend,
                small_seal_open_ns: m(|s| s.small_seal_open_ns),
                small_seal_ns: m(|s| s.small_seal_ns),
                large_seal_gbps: m(|s| s.large_seal_gbps),
                large_seal_open_gbps: m(|s| s.large_seal_open_gbps),
            }
        })
        .collect()
}

/// Issue 13's targets for the cipher the library ships.
fn aead_targets(rows: &[AeadRow]) -> Vec<Target> {
    let Some(r) = rows.iter().find(|r| r.backend.starts_with("ipcress")) else {
        return Vec::new();
    };
    vec![
        Target {
            what: format!(
                "{}-byte record sealed + opened, one thread (≤ {TARGET_SMALL_NS} ns)",
                aead::SMALL
            ),
            value: r.small_seal_open_ns,
            unit: "ns",
            met: r.small_seal_open_ns <= TARGET_SMALL_NS,
        },
        Target {
            what: format!("64 KiB records sealed, one thread (≥ {TARGET_SEAL_GBPS} GB/s)"),
            value: r.large_seal_gbps,
            unit: "GB/s",
            met: r.large_seal_gbps >= TARGET_SEAL_GBPS,
        },
    ]
}

/// Issue 5's targets: lz4 on log lines and encryption, each at least 1 GB/s
/// end to end, checked at every record size.
fn targets(rows: &[Row]) -> Vec<Target> {
    let mut v = Vec::new();
    for r in rows {
        let wanted = r.record_bytes >= 4 << 10
            && ((r.codec == "lz4" && r.data == Data::Logs.name())
                || r.codec == Codec::ALL[3].name());
        if wanted {
            v.push(Target {
                what: format!(
                    "{} on {}, {} records, end to end (≥ {TARGET_GBPS} GB/s)",
                    r.codec,
                    r.data,
                    human(r.record_bytes as u64)
                ),
                value: r.gbps_median,
                unit: "GB/s",
                met: r.gbps_median >= TARGET_GBPS,
            });
        }
    }
    v
}

fn markdown(opts: &Opts, rows: &[Row], aead_rows: &[AeadRow], targets: &[Target]) -> String {
    let mut s = format!(
        "## ipcress-bench codecs ({} mode, median of {} reps, {} per case)\n\n",
        if opts.quick { "quick" } else { "full" },
        opts.reps,
        human(opts.bytes)
    );
    s.push_str(
        "| codec | data | record | GB/s ↑ | × none | stored / original \
         | encode 1 thread GB/s | decode 1 thread GB/s |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2}× | {:.3} | {:.2} | {:.2} |\n",
            r.codec,
            r.data,
            human(r.record_bytes as u64),
            r.gbps_median,
            r.vs_none,
            r.stored_ratio,
            r.encode_gbps_1t,
            r.decode_gbps_1t
        ));
    }
    s.push_str(
        "\nGB/s = uncompressed payload bytes ÷ time from `go` to the consumer's report; \
         producer and consumer are separate processes. × none = this codec ÷ none, same data \
         and record size. stored / original = stream bytes used (frame headers, padding and \
         tags included) ÷ payload bytes. encode / decode 1 thread = the producer's codec work \
         (compress, copy, seal) and the consumer's (copy, open, decompress, byte sum) alone in \
         one thread of the parent, no stream, the same volume, median of the reps.\n",
    );
    s.push_str(&format!(
        "\n### AEAD backends, one thread (median of {} reps)\n\n\
         | backend | {} B seal + open ns ↓ | {} B seal ns ↓ | 64 KiB seal GB/s ↑ | 64 KiB seal + open GB/s ↑ |\n\
         |---|---:|---:|---:|---:|\n",
        opts.reps,
        aead::SMALL,
        aead::SMALL
    ));
    for r in aead_rows {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            r.backend,
            r.small_seal_open_ns,
            r.small_seal_ns,
            r.large_seal_gbps,
            r.large_seal_open_gbps
        ));
    }
    s.push_str(
        "\nEvery backend seals the same bytes (XChaCha20-Poly1305 with the stream's nonce, \
         checked before timing); all but the first derive the HChaCha20 subkey once per stream. \
         Seal and open run in place on one buffer at increasing positions, timed in the thread's CPU time; seal + open GB/s \
         counts each payload byte once.\n\nTargets:\n",
    );
    for t in targets {
        s.push_str(&format!(
            "- {}: {:.2} {}, {}\n",
            t.what,
            t.value,
            t.unit,
            if t.met { "met" } else { "MISSED" }
        ));
    }
    s
}

/// Single-thread ceilings in this process, no stream: the producer's codec
/// work (compress into a buffer, copy, seal) and the consumer's (copy, open,
/// decompress) over `bytes` of records, in GB/s of payload.
fn ceiling(codec: Codec, data: Data, record: usize, bytes: u64) -> Result<(f64, f64)> {
    let count = (bytes / record as u64).max(1);
    let pool = data.pool(POOL_BYTES.min(count as usize * record));
    let records: Vec<&[u8]> = pool.chunks_exact(record).collect();
    let cipher = Cipher::new(&Key::from_bytes([7; 32]), [1; 16]);
    let aad = [0u8; 14];
    let c = codec.compression.setting();
    let seal = |pos: u64, body: &[u8], out: &mut Vec<u8>| {
        out.clear();
        out.extend_from_slice(body);
        if codec.encrypted {
            out.extend_from_slice(&[0; codec::TAG_LEN]);
            cipher.seal(pos, &aad, out);
        }
    };
    // Encoded once first, so decoding has every stored form at hand.
    let mut packed = Vec::new();
    let stored: Vec<(bool, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let z = codec::compress(c, r, &mut packed);
            let mut out = Vec::new();
            seal(k as u64, if z { &packed } else { r }, &mut out);
            (z, out)
        })
        .collect();
    let n = records.len() as u64;
    let mut frame = Vec::new();
    let t = Instant::now();
    for i in 0..count {
        let r = records[(i % n) as usize];
        let z = codec::compress(c, r, &mut packed);
        seal(i % n, if z { &packed } else { r }, &mut frame);
        std::hint::black_box(&frame);
    }
    let enc = (count * record as u64) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut sum = 0;
    let t = Instant::now();
    for i in 0..count {
        let (z, s) = &stored[(i % n) as usize];
        buf.clear();
        buf.extend_from_slice(s);
        if codec.encrypted {
            let len = cipher
                .open(i % n, &aad, &mut buf)
                .map_err(|_| anyhow::anyhow!("ceiling: record {i} does not open"))?;
            buf.truncate(len);
        }
        let plain = if *z {
            codec::decompress(c, &buf, &mut out, record).map_err(anyhow::Error::msg)?;
            &out
        } else {
            &buf
        };
        sum += byte_sum(plain);
    }
    let dec = (count * record as u64) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let want: u64 = (0..count)
        .map(|i| byte_sum(records[(i % n) as usize]))
        .sum();
    ensure!(
        sum == want,
        "ceiling: decoded bytes differ from the originals"
    );
    Ok((enc, dec))
}

fn run_case(
    codec: Codec,
    data: Data,
    record: usize,
    bytes: u64,
    watchdog: Duration,
) -> Result<Outcome> {
    let dir = TempDir::new()?;
    let name = "codec";
    let stream = Stream::create_in(dir.path(), name, &codec.options())?;
    let key = if codec.encrypted {
        let path = dir.path().join("key");
        Key::write_new(&path)?;
        Some(path)
    } else {
        None
    };
    let count = (bytes / record as u64).max(1);
    let case = Case {
        codec,
        data,
        record,
        count,
        pool: POOL_BYTES.min(count as usize * record),
        dir: dir.path().to_owned(),
        stream: name.into(),
        key,
    };
    // The consumer first, so it is subscribed before anything is sent.
    let mut kids = Vec::new();
    for role in ["consumer", "producer"] {
        let mut kid = Worker::spawn(CHILD_CMD, role, &case, watchdog)?;
        let hello = kid.line()?;
        ensure!(hello == "ready", "{role} said {hello:?}, not ready");
        kids.push(kid);
    }
    let start = Instant::now();
    for kid in &mut kids {
        kid.ctl.write_all(b"go\n")?;
    }
    let consumer: Report = kids[0].report()?;
    let secs = start.elapsed().as_secs_f64();
    let producer: Report = kids[1].report()?;
    let payload = count * record as u64;
    ensure!(
        producer.bytes == payload && producer.records == count,
        "producer sent {} records, {} bytes; expected {count}, {payload}",
        producer.records,
        producer.bytes
    );
    ensure!(
        consumer.records == producer.records
            && consumer.bytes == producer.bytes
            && consumer.sum == producer.sum
            && consumer.weighted == producer.weighted,
        "consumer received {consumer:?}, producer sent {producer:?}"
    );
    let stored_bytes = stream.tail();
    for kid in kids {
        kid.finish(watchdog)?;
    }
    Ok(Outcome {
        secs,
        gbps: payload as f64 / secs / 1e9,
        payload_bytes: payload,
        stored_bytes,
        producer,
        consumer,
    })
}

/// A child's life: open its end, build its data, say `ready`, wait for `go`,
/// work, report, wait for the parent to hang up.
pub fn child_main(args: &[String]) -> Result<()> {
    let [role, case] = args else {
        bail!("{CHILD_CMD} takes a role and a JSON case")
    };
    let case: Case = serde_json::from_str(case).context("codec case")?;
    let mut stream = Stream::open_in(&case.dir, &case.stream)?;
    if let Some(path) = &case.key {
        stream = stream.with_key(&Key::load(path)?)?;
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut out = std::io::stdout();
    let go = |lines: &mut std::io::StdinLock<'_>, out: &mut std::io::Stdout| -> Result<()> {
        out.write_all(b"ready\n")?;
        out.flush()?;
        let mut line = String::new();
        lines.read_line(&mut line)?;
        ensure!(line.trim_end() == "go", "expected go, got {line:?}");
        Ok(())
    };
    let mut report = match role.as_str() {
        "producer" => {
            let mut p = stream.producer()?;
            let pool = case.data.pool(case.pool);
            let records: Vec<&[u8]> = pool.chunks_exact(case.record).collect();
            ensure!(!records.is_empty(), "pool smaller than a record");
            let sums: Vec<u64> = records.iter().map(|r| byte_sum(r)).collect();
            go(&mut lines, &mut out)?;
            let mut r = Report::default();
            for i in 0..case.count {
                let k = (i % records.len() as u64) as usize;
                p.send(records[k])?;
                r.add(records[k].len(), sums[k]);
            }
            r
        }
        "consumer" => {
            let mut c = stream.subscribe(StartAt::Start)?;
            go(&mut lines, &mut out)?;
            let mut r = Report::default();
            while r.records < case.count {
                let m = c.recv()?;
                let pos = m.position();
                let b = m
                    .bytes()
                    .with_context(|| format!("record at {pos} is fragmented"))?;
                ensure!(
                    b.len() == case.record,
                    "record at {pos} has {} bytes, expected {}",
                    b.len(),
                    case.record
                );
                r.add(b.len(), byte_sum(b));
            }
            r
        }
        _ => bail!("unknown codec child role {role:?}"),
    };
    report.peak_rss_kib = peak_rss_kib()?;
    out.write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())?;
    out.flush()?;
    // Keep the stream open until the parent has both reports.
    let mut rest = String::new();
    let _ = lines.read_line(&mut rest);
    Ok(())
}

impl Report {
    fn add(&mut self, len: usize, sum: u64) {
        self.records += 1;
        self.bytes += len as u64;
        self.sum += sum;
        self.weighted = self.weighted.wrapping_add(self.records.wrapping_mul(sum));
    }
}

/// Small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `len` uniformly random bytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = Rng::new(0xC0DEC);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `len` bytes of service log text: one line per event, 100 to 300 bytes,
/// with an increasing timestamp, a level (mostly INFO), a module, a random
/// request id and one of several messages with varying fields. The last line
/// is cut at `len`.
pub(crate) fn log_lines(len: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    const MODULES: [&str; 10] = [
        "api::http",
        "api::auth",
        "db::pool",
        "db::query",
        "cache::redis",
        "queue::consumer",
        "queue::producer",
        "billing::invoice",
        "search::index",
        "runtime::gc",
    ];
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
    const PATHS: [&str; 6] = [
        "/v1/items",
        "/v1/users",
        "/v1/orders",
        "/v2/search",
        "/v1/invoices",
        "/healthz",
    ];
    const TABLES: [&str; 5] = ["orders", "users", "items", "invoices", "sessions"];
    let mut rng = Rng::new(0x106);
    let mut s = String::with_capacity(len + 512);
    // 2026-11-22T00:00:00Z in milliseconds, then 0..40 ms apart.
    let mut ms: u64 = 1_795_305_600_000;
    while s.len() < len {
        ms += rng.below(40);
        let (secs, milli) = (ms / 1000, ms % 1000);
        let (h, m, sec) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let level = match rng.below(100) {
            0..=1 => "ERROR",
            2..=7 => "WARN ",
            8..=19 => "DEBUG",
            _ => "INFO ",
        };
        let _ = write!(
            s,
            "2026-11-22T{h:02}:{m:02}:{sec:02}.{milli:03}Z {level} {:<16} req={:016x} ",
            rng.pick(&MODULES),
            rng.next()
        );
        let ip = rng.next();
        let _ = match rng.below(8) {
            0 | 1 => writeln!(
                s,
                "request completed method={} path={}/{} status={} dur_ms={}.{} bytes={}",
                rng.pick(&METHODS),
                rng.pick(&PATHS),
                rng.below(100_000),
                [200, 200, 200, 201, 204, 304, 404, 500][rng.below(8) as usize],
                rng.below(250),
                rng.below(10),
                rng.below(64_000)
            ),
            2 => writeln!(
                s,
                "cache miss key=session:{:08x} ttl_s={} shard={}",
                rng.next() as u32,
                60 * (1 + rng.below(60)),
                rng.below(16)
            ),
            3 => writeln!(
                s,
                "query finished table={} rows={} dur_ms={} plan=\"index scan using {}_pkey\"",
                rng.pick(&TABLES),
                rng.below(5000),
                rng.below(900),
                rng.pick(&TABLES)
            ),
            4 => writeln!(
                s,
                "retrying upstream call attempt={} backoff_ms={} upstream=10.0.{}.{}:8443 \
                 error=\"connection reset by peer\"",
                1 + rng.below(5),
                100 << rng.below(6),
                ip & 0xff,
                (ip >> 8) & 0xff
            ),
            5 => writeln!(
                s,
                "user signed in user_id={} ip={}.{}.{}.{} agent=\"Mozilla/5.0 (X11; Linux x86_64) \
                 AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\"",
                rng.below(2_000_000),
                ip & 0xff,
                (ip >> 8) & 0xff,
                (ip >> 16) & 0xff,
                (ip >> 24) & 0xff
            ),
            6 => writeln!(
                s,
                "queue depth={} consumers={} lag_ms={} partition={}",
                rng.below(10_000),
                1 + rng.below(12),
                rng.below(3000),
                rng.below(64)
            ),
            _ => writeln!(
                s,
                "gc pause_ms={}.{} heap_mb={} freed_mb={} generation={}",
                rng.below(40),
                rng.below(100),
                200 + rng.below(3800),
                rng.below(900),
                rng.below(3)
            ),
        };
    }
    let mut v = s.into_bytes();
    v.truncate(len);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_deterministic_and_sized() {
        for d in Data::ALL {
            let a = d.pool(100_001);
            assert_eq!(a.len(), 100_001);
            assert_eq!(a, d.pool(100_001), "{d:?}");
        }
    }

    #[test]
    fn log_lines_look_like_logs() {
        let text = String::from_utf8(log_lines(1 << 20)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Every whole line (not the cut last one) is 100..=300 bytes.
        for l in &lines[..lines.len() - 1] {
            assert!(
                (100..=300).contains(&(l.len() + 1)),
                "{} bytes: {l}",
                l.len()
            );
            assert!(l.starts_with("2026-11-22T"), "{l}");
        }
        let mean = text.len() / lines.len();
        assert!((120..=260).contains(&mean), "mean line {mean} bytes");
    }

    #[test]
    fn weighted_sum_sees_order() {
        let mut a = Report::default();
        a.add(1, 5);
        a.add(1, 7);
        let mut b = Report::default();
        b.add(1, 7);
        b.add(1, 5);
        assert_eq!(a.sum, b.sum);
        assert_ne!(a.weighted, b.weighted);
    }

    #[test]
    fn codec_names() {
        let names: Vec<String> = Codec::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "none",
                "lz4",
                "zstd:3",
                "xchacha20poly1305",
                "lz4 + xchacha20poly1305"
            ]
        );
    }
}
