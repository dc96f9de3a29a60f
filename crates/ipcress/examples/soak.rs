//! Soak test: a ring with mixed producers and consumers for many minutes,
//! verifying every record, and printing this process's RSS and open file
//! descriptors every 30 s (a leak shows as growth).
//!
//! ```text
//! cargo run --release -p ipcress --example soak -- --minutes 10
//! ```
//!
//! Options: `--minutes N` (default 10), `--report-secs N` (default 30),
//! `--dir PATH` (default a fresh directory under /dev/shm). Exit status 0
//! only if every check passed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::thread;
use std::time::{Duration, Instant};

use ipcress::{Consumer, Error, StartAt, Stream, StreamOptions};

const STREAM: &str = "soak";
/// Producer ids.
const SENDER: u32 = 1;
const RESERVER: u32 = 2;
const WRITER: u32 = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Self-checking record: producer id, sequence, then bytes derived from
/// both.
fn fill(id: u32, seq: u64, buf: &mut [u8]) {
    buf[..4].copy_from_slice(&id.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    let mut r = Rng((seq << 8 | id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for chunk in buf[12..].chunks_mut(8) {
        let v = r.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn check(b: &[u8]) -> Result<(u32, u64), String> {
    if b.len() < 12 {
        return Err(format!("record of {} bytes", b.len()));
    }
    let id = u32::from_le_bytes(b[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(b[4..12].try_into().unwrap());
    let mut want = vec![0u8; b.len()];
    fill(id, seq, &mut want);
    if want != b {
        return Err(format!("torn or wrong bytes in record {id}/{seq}"));
    }
    Ok((id, seq))
}

#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    produced_bytes: AtomicU64,
    durable: [AtomicU64; 2],
    group: AtomicU64,
    subscribers: AtomicU64,
    churn: AtomicU64,
    errors: AtomicU64,
}

fn fail(c: &Counters, what: String) {
    eprintln!("soak: FAILURE: {what}");
    c.errors.fetch_add(1, SeqCst);
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

fn main() {
    let mut minutes = 10.0f64;
    let mut report = 30u64;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--minutes N")
            }
            "--report-secs" => {
                report = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--report-secs N")
            }
            "--dir" => dir = Some(args.next().expect("--dir PATH").into()),
            other => {
                eprintln!("usage: soak [--minutes N] [--report-secs N] [--dir PATH] ({other}?)");
                std::process::exit(2);
            }
        }
    }
    let root = dir
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/ipcress-soak-{}", std::process::id())));
    let _ = Stream::remove_in(&root, STREAM);
    let opts = StreamOptions::ring(8 << 20).segments(8);
    let s = Stream::create_in(&root, STREAM, &opts).expect("create stream");
    for d in ["d0", "d1"] {
        drop(s.consumer(d).expect("durable consumer"));
    }
    drop(s.group("g").expect("group"));
    let stop = Arc::new(AtomicBool::new(false));
    // Set once every producer has returned: consumers then drain to the tail.
    let drained = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counters::default());
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    println!(
        "soak: {minutes} min on {} (ring 8 MiB, 3 producers, 2 durable, 2 group members, churn)",
        root.display()
    );

    // Every consumer is registered before the first record: a group holds
    // producers back only while it has a live member.
    let ready = Arc::new(std::sync::Barrier::new(5));
    let mut consumers = Vec::new();
    for (i, d) in ["d0", "d1"].into_iter().enumerate() {
        let (s, stop, c, ready) = (s.clone(), drained.clone(), c.clone(), ready.clone());
        consumers.push(thread::spawn(move || {
            let mut con = s.consumer(d).expect("durable");
            ready.wait();
            let mut next: HashMap<u32, u64> = HashMap::new();
            receive(&mut con, &s, &stop, &c, d, |id, seq| {
                let want = next.entry(id).or_insert(0);
                if seq != *want {
                    fail(&c, format!("{d}: producer {id} seq {seq}, expected {want}"));
                }
                *want = seq + 1;
                c.durable[i].fetch_add(1, Relaxed);
            });
            next
        }));
    }
    for _ in 0..2 {
        let (s, stop, c, ready) = (s.clone(), drained.clone(), c.clone(), ready.clone());
        consumers.push(thread::spawn(move || {
            let mut con = s.group("g").expect("member");
            ready.wait();
            receive(&mut con, &s, &stop, &c, "member", |_, _| {
                c.group.fetch_add(1, Relaxed);
            });
            HashMap::new()
        }));
    }
    ready.wait();
    let mut producers = Vec::new();
    for id in [SENDER, RESERVER, WRITER] {
        let (s, stop, c) = (s.clone(), stop.clone(), c.clone());
        producers.push(thread::spawn(move || {
            let mut p = s.producer().expect("producer");
            let mut rng = Rng(0x1234_5678 + id as u64);
            let mut buf = vec![0u8; 4 << 20];
            let mut seq = 0u64;
            while !stop.load(Relaxed) {
                let len = match id {
                    WRITER if rng.below(50) == 0 => 256 * 1024 + rng.below(3 << 20) as usize,
                    _ => 12 + rng.below(4000) as usize,
                };
                let b = &mut buf[..len];
                fill(id, seq, b);
                let r = if len > p.max_message_len() {
                    let mut w = p.writer().expect("writer");
                    for chunk in b.chunks(64 << 10) {
                        w.write_all(chunk).expect("write");
                    }
                    w.finish()
                } else if id == RESERVER {
                    let mut g = p.reserve(len).expect("reserve");
                    g.copy_from_slice(b);
                    g.commit()
                } else {
                    p.send(b)
                };
                match r {
                    Ok(_) => {
                        seq += 1;
                        c.produced.fetch_add(1, Relaxed);
                        c.produced_bytes.fetch_add(len as u64, Relaxed);
                    }
                    Err(e) => fail(&c, format!("producer {id}: {e}")),
                }
            }
            seq
        }));
    }

    // Churn: short-lived subscribers, producers and stream handles.
    let churn = {
        let (root, stop, c) = (root.clone(), stop.clone(), c.clone());
        thread::spawn(move || {
            let mut rng = Rng(99);
            while !stop.load(Relaxed) {
                let s = Stream::open_in(&root, STREAM).expect("open");
                match s.subscribe(StartAt::End) {
                    Ok(mut sub) => {
                        for _ in 0..rng.below(50) {
                            match sub.recv_timeout(Duration::from_millis(20)) {
                                Ok(Some(m)) => {
                                    if m.is_fragmented() {
                                        continue;
                                    }
                                    if let Err(e) = check(m.bytes().unwrap_or_default()) {
                                        fail(&c, format!("subscriber: {e}"));
                                    }
                                    c.subscribers.fetch_add(1, Relaxed);
                                }
                                Ok(None) => {}
                                // Joined in the middle of a fragmented message.
                                Err(Error::Aborted { .. }) => {}
                                Err(e) => fail(&c, format!("subscriber: {e}")),
                            }
                        }
                    }
                    Err(e) => fail(&c, format!("subscribe: {e}")),
                }
                drop(s.producer().expect("producer"));
                let _ = s.consumers();
                c.churn.fetch_add(1, Relaxed);
                thread::sleep(Duration::from_millis(20 + rng.below(80)));
            }
        })
    };

    let started = Instant::now();
    let mut last = Instant::now();
    let mut rss_first = 0;
    let mut fds_first = 0;
    let mut line = |final_: bool| {
        let rss = status_kib("VmRSS:");
        let fds = open_fds();
        if rss_first == 0 && started.elapsed() >= Duration::from_secs(report) {
            rss_first = rss;
            fds_first = fds;
        }
        println!(
            "soak: {:>6.1} min{} produced {} msgs {:.2} GB | durable {} {} | group {} | subs {} churn {} | RSS {} KiB (peak {}) fds {} maps {} | errors {}",
            started.elapsed().as_secs_f64() / 60.0,
            if final_ { " (final)" } else { "" },
            c.produced.load(Relaxed),
            c.produced_bytes.load(Relaxed) as f64 / 1e9,
            c.durable[0].load(Relaxed),
            c.durable[1].load(Relaxed),
            c.group.load(Relaxed),
            c.subscribers.load(Relaxed),
            c.churn.load(Relaxed),
            rss,
            status_kib("VmHWM:"),
            fds,
            maps(),
            c.errors.load(Relaxed),
        );
        let _ = std::io::stdout().flush();
        (rss, fds)
    };
    let mut sample = line(false);
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(report) {
            last = Instant::now();
            sample = line(false);
        }
    }
    stop.store(true, SeqCst);
    let sent: Vec<u64> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    drained.store(true, SeqCst);
    churn.join().unwrap();
    let total: u64 = sent.iter().sum();
    let mut ok = true;
    for (i, t) in consumers.into_iter().enumerate() {
        let next = t.join().unwrap();
        if i < 2 {
            for (k, id) in [SENDER, RESERVER, WRITER].into_iter().enumerate() {
                let got = next.get(&id).copied().unwrap_or(0);
                if got != sent[k] {
                    eprintln!("soak: d{i} read {got} of producer {id}'s {}", sent[k]);
                    ok = false;
                }
            }
        }
    }
    if c.group.load(SeqCst) != total {
        eprintln!("soak: group read {} of {total}", c.group.load(SeqCst));
        ok = false;
    }
    line(true);
    // Growth while running: first sample after warm-up, last sample.
    let (rss, fds) = sample;
    drop(s);
    let _ = Stream::remove_in(&root, STREAM);
    let _ = std::fs::remove_dir(&root);
    ok &= c.errors.load(SeqCst) == 0;
    println!(
        "soak: {} — {total} records; after warm-up RSS {rss_first} -> {rss} KiB, fds {fds_first} -> {fds}",
        if ok { "OK" } else { "FAILED" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}

/// Receive until `stop` is raised and the stream is drained; `on(producer,
/// seq)` for every record that checks out, a failure for any other.
fn receive(
    con: &mut Consumer,
    s: &Stream,
    stop: &AtomicBool,
    c: &Counters,
    who: &str,
    mut on: impl FnMut(u32, u64),
) {
    let mut buf = Vec::new();
    loop {
        if stop.load(SeqCst) && con.position() >= s.tail() {
            break;
        }
        let m = match con.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                fail(c, format!("{who}: {e}"));
                continue;
            }
        };
        buf.clear();
        if let Err(e) = m.reader().read_to_end(&mut buf) {
            fail(c, format!("{who}: {e}"));
            continue;
        }
        match check(&buf) {
            Ok((id, seq)) => on(id, seq),
            Err(e) => fail(c, format!("{who}: {e}")),
        }
    }
}
