//! Chaos: for many short rounds, producers (small records, zero-copy
//! grants held across a sleep, fragmented messages), durable consumers,
//! group members, subscribers and `ipcress exec` stages run against
//! streams of every codec (plain ring, lz4 + encrypted ring, zstd log) and,
//! at random moments, are SIGKILLed, SIGSTOPped and continued, or left
//! unreaped as zombies while the next round runs; a removable durable
//! consumer is removed with `ipcress rm` and started anew.
//!
//! After the rounds an oracle checks that:
//! * every record a producer reported as committed reached the durable
//!   consumer of its stream exactly once (once more only for the record
//!   in progress at a kill), in order, with its bytes intact;
//! * no group member saw a record another member had acknowledged: a
//!   record delivered twice was first delivered to a member that was then
//!   killed, within the suffix that member had not acknowledged; on the
//!   log stream (nothing is ever overwritten) every record reached the
//!   group, and every record went through `exec` into the output stream;
//! * no consumer stalled with data committed after its position for
//!   longer than the unblock timeout plus the longest stop plus a margin;
//! * `ipcress ls` and `ipcress stat` did not change a byte of any stream's
//!   files, meta included.
//!
//! Seeded: `IPCRESS_CHAOS_SEED` reproduces a run (the seed is printed);
//! `IPCRESS_CHAOS_ROUNDS` changes the number of rounds (default 200).
#![allow(clippy::type_complexity)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ipcress::{Compression, Error, Key, StartAt, Stream, StreamOptions};
use rand::{Rng, SeedableRng};

/// The streams of the run: (name, what it exercises).
const STREAMS: [&str; 3] = ["plain", "sealed", "zlog"];
/// The output stream of the `exec` stage (reads `zlog`).
const EXEC_OUT: &str = "zlog-out";
const UNBLOCK: Duration = Duration::from_millis(100);
/// Longest SIGSTOP of any process, and longest sleep inside a grant.
const MAX_STOP_MS: u64 = 300;
const MAX_GRANT_SLEEP_MS: u64 = 300;
/// Slack for a loaded 2-core machine on top of the protocol's own bounds.
const STALL_MARGIN: Duration = Duration::from_secs(8);

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("missing env {k}"))
}

fn root() -> PathBuf {
    PathBuf::from(env("IPCRESS_DIR"))
}

fn key_path(root: &Path) -> PathBuf {
    root.join("key.bin")
}

fn open(root: &Path, name: &str) -> Stream {
    let s = Stream::open_in(root, name).unwrap();
    if s.encrypted() {
        let key = Key::load(&key_path(root)).unwrap();
        s.with_key(&key).unwrap()
    } else {
        s
    }
}

/// Deterministic content for (producer, sequence, length): 12 header
/// bytes, then either text (compressible) or xorshift noise.
fn payload(id: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(12);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    if seq.is_multiple_of(3) {
        let text = format!("producer {id} record {seq} says hello; ");
        while v.len() < len {
            let n = (len - v.len()).min(text.len());
            v.extend_from_slice(&text.as_bytes()[..n]);
        }
    } else {
        let mut x = ((id as u64) << 32 ^ seq ^ 0x9E37_79B9_7F4A_7C15) | 1;
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
    }
    v
}

/// Check bytes made by `payload`; returns (producer, seq).
fn check(b: &[u8]) -> (u32, u64) {
    assert!(b.len() >= 12, "record too short: {} bytes", b.len());
    let id = u32::from_le_bytes(b[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(b[4..12].try_into().unwrap());
    assert!(
        b == payload(id, seq, b.len()).as_slice(),
        "bytes differ for producer {id} seq {seq} ({} bytes)",
        b.len()
    );
    (id, seq)
}

/// Append one line with one write(2) (a SIGKILL can still cut it short:
/// `read_log` drops a last line without its newline).
fn log_line(f: &mut std::fs::File, line: String) {
    f.write_all(line.as_bytes()).unwrap();
}

fn log_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(env("LOG"))
        .unwrap()
}

/// A message aborted by its dying producer is skipped, never fatal.
fn skippable(e: &Error) -> bool {
    matches!(e, Error::Aborted { .. })
}

/// Measures how long a consumer goes without a record while records
/// are committed past its position (`tail > position`), and logs every
/// such stall above 200 ms as `W ms`.
struct Stall(Option<Instant>);

impl Stall {
    fn idle(&mut self, behind: bool) {
        if !behind {
            self.0 = None;
        } else if self.0.is_none() {
            self.0 = Some(Instant::now());
        }
    }
    fn progress(&mut self, log: &mut std::fs::File) {
        if let Some(t) = self.0.take() {
            let ms = t.elapsed().as_millis();
            if ms > 200 {
                log_line(log, format!("W {ms}\n"));
            }
        }
    }
}

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Ok(role) = std::env::var("CHAOS_ROLE") else {
        return;
    };
    std::panic::set_hook(Box::new(|info| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(root().join("logs/FAILURES"))
            .unwrap();
        let _ = f.write_all(format!("{}: {info}\n", env("LOG")).as_bytes());
        eprintln!("{info}");
    }));
    let root = root();
    let s = open(&root, &env("STREAM"));
    let mut log = log_file();
    let mut rng = rand::rngs::StdRng::seed_from_u64(env("SEED").parse().unwrap());
    match role.as_str() {
        "producer" => {
            // Reports each record only after it is committed.
            let id: u32 = env("ID").parse().unwrap();
            let count: u64 = env("COUNT").parse().unwrap();
            let frag = s.max_message_len() + 1;
            let mut p = s.producer().unwrap();
            for seq in 0..count {
                let pos = match rng.random_range(0..100) {
                    0..=1 => {
                        let data = payload(id, seq, rng.random_range(frag..frag * 3));
                        let mut w = p.writer().unwrap();
                        for chunk in data.chunks(rng.random_range(1000..40_000)) {
                            w.write_all(chunk).unwrap();
                        }
                        w.finish().unwrap()
                    }
                    2..=31 => {
                        let data = payload(id, seq, rng.random_range(12..2000));
                        let mut g = p.reserve(data.len()).unwrap();
                        g.copy_from_slice(&data);
                        g.commit().unwrap()
                    }
                    _ => p
                        .send(&payload(id, seq, rng.random_range(12..600)))
                        .unwrap(),
                };
                log_line(&mut log, format!("{pos} {id} {seq}\n"));
            }
        }
        "sleeper" => {
            // Holds a grant across a sleep: killed or stopped inside it
            // most often, commits if it lives long enough.
            let id: u32 = env("ID").parse().unwrap();
            let mut p = s.producer().unwrap();
            let data = payload(id, 0, rng.random_range(12..3000));
            let mut g = p.reserve(data.len()).unwrap();
            let half = data.len() / 2;
            g[..half].copy_from_slice(&data[..half]);
            std::thread::sleep(Duration::from_millis(
                rng.random_range(0..MAX_GRANT_SLEEP_MS),
            ));
            g[half..].copy_from_slice(&data[half..]);
            let pos = g.commit().unwrap();
            log_line(&mut log, format!("{pos} {id} 0\n"));
            std::thread::sleep(Duration::from_secs(3600));
        }
        "durable" => {
            // Logs each record before committing it: a kill in between
            // redelivers exactly that record to the next incarnation.
            let mut c = s.consumer(&env("NAME")).unwrap();
            log_line(&mut log, format!("S {}\n", c.position()));
            let mut stall = Stall(None);
            loop {
                let (pos, bytes) = match c.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(m)) => (m.position(), m.to_vec()),
                    Ok(None) => {
                        stall.idle(s.tail() > c.position());
                        continue;
                    }
                    Err(e) if skippable(&e) => continue,
                    Err(e) => panic!("durable: {e}"),
                };
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if skippable(&e) => continue,
                    Err(e) => panic!("durable: {e}"),
                };
                stall.progress(&mut log);
                let (id, seq) = check(&bytes);
                log_line(&mut log, format!("{pos} {id} {seq}\n"));
                c.commit().unwrap();
            }
        }
        "subscriber" | "member" => {
            let mut c = if role == "member" {
                s.group("g").unwrap()
            } else if rng.random_bool(0.5) {
                s.subscribe(StartAt::Start).unwrap()
            } else {
                s.subscribe(StartAt::End).unwrap()
            };
            let mut last: HashMap<u32, u64> = HashMap::new();
            let mut stall = Stall(None);
            loop {
                let (pos, bytes) = match c.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(m)) => (m.position(), m.to_vec()),
                    Ok(None) => {
                        if role == "subscriber" {
                            stall.idle(s.tail() > c.position());
                        }
                        continue;
                    }
                    // A ring group with no live member does not hold
                    // producers back; a subscriber may start lapped.
                    Err(Error::Lagged { .. }) if role == "member" || last.is_empty() => continue,
                    Err(e) if skippable(&e) => continue,
                    Err(e) => panic!("{role}: {e}"),
                };
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) if skippable(&e) => continue,
                    Err(e) => panic!("{role}: {e}"),
                };
                stall.progress(&mut log);
                let (id, seq) = check(&bytes);
                // A member may be handed a dead member's older run, so
                // only a subscriber sees each producer's records in order.
                if let Some(&l) = last.get(&id).filter(|_| role == "subscriber") {
                    assert!(seq > l, "{role}: producer {id} seq {seq} after {l}");
                }
                last.insert(id, seq);
                if role == "member" {
                    // Acknowledged by the next recv (auto-commit).
                    log_line(&mut log, format!("{pos} {id} {seq} {}\n", now_ns()));
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// A process of the run, with what happens to it and when.
struct Proc {
    child: Child,
    role: &'static str,
    log: Option<PathBuf>,
    stop: Option<(Duration, Duration)>,
    end_at: Duration,
    /// SIGTERM (a clean stop) instead of SIGKILL.
    term: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

fn spawn_child(role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env("CHAOS_ROLE", role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Records as `(position, producer, seq)` (members add the wall clock in
/// ns, kept in `times`); `S` gives an incarnation's start position, `W` a
/// stall in ms.
struct Log {
    start: Option<u64>,
    recs: Vec<(u64, u32, u64)>,
    times: Vec<u64>,
    stalls: Vec<u64>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn read_log(path: &Path) -> Log {
    let mut l = Log {
        start: None,
        recs: Vec::new(),
        times: Vec::new(),
        stalls: Vec::new(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return l;
    };
    // A SIGKILL can cut a write(2) to a file short (the kernel stops
    // copying once a fatal signal is pending): a last line without its
    // newline was never written whole, as if killed before it.
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    for line in whole.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "S" => l.start = Some(f[1].parse().unwrap()),
            "W" => l.stalls.push(f[1].parse().unwrap()),
            _ => {
                l.recs.push((
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                ));
                l.times.push(f.get(3).map_or(0, |t| t.parse().unwrap()));
            }
        }
    }
    l
}

/// Every byte of every file of the streams, by path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in STREAMS.iter().chain([&EXEC_OUT]) {
        for e in std::fs::read_dir(root.join(name)).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// Read with `c` until it has been at the tail, idle, a few times.
fn drain(s: &Stream, c: &mut ipcress::Consumer, who: &str) -> Vec<(u64, u32, u64)> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut quiet = 0;
    while quiet < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{who}: stuck at {} (tail {})",
            c.position(),
            s.tail()
        );
        let (pos, bytes) = match c.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(m)) => (m.position(), m.to_vec()),
            Ok(None) => {
                quiet += 1;
                continue;
            }
            Err(e) if skippable(&e) => continue,
            // A ring group with no live member did not hold producers back.
            Err(Error::Lagged { .. }) if who == "final member" => continue,
            Err(e) => panic!("{who}: {e}"),
        };
        quiet = 0;
        match bytes {
            Ok(b) => {
                let (id, seq) = check(&b);
                got.push((pos, id, seq));
            }
            Err(e) if skippable(&e) => {}
            Err(e) => panic!("{who}: {e}"),
        }
    }
    c.commit().unwrap();
    got
}

#[test]
fn chaos() {
    let seed: u64 = std::env::var("IPCRESS_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("IPCRESS_CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random);
    let rounds: u32 = std::env::var("IPCRESS_CHAOS_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("IPCRESS_CHAOS_ROUNDS is a number"))
        .unwrap_or(200);
    eprintln!("chaos: IPCRESS_CHAOS_SEED={seed} ({rounds} rounds)");
    let _dog = Watchdog::new("chaos", Duration::from_secs(900));
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let root = Root::new("chaos");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let key = Key::write_new(&key_path(root.path())).unwrap();
    let ring = || {
        StreamOptions::ring(256 << 10)
            .segments(4)
            .unblock_timeout(UNBLOCK)
    };
    let log = || {
        StreamOptions::log(64 << 10)
            .compression(Compression::Zstd(1))
            .unblock_timeout(UNBLOCK)
    };
    for (name, opts) in [
        ("plain", ring()),
        (
            "sealed",
            ring().compression(Compression::Lz4).encrypted(true),
        ),
        ("zlog", log()),
        (EXEC_OUT, log()),
    ] {
        let s = Stream::create_in(root.path(), name, &opts).unwrap();
        let s = if s.encrypted() {
            s.with_key(&key).unwrap()
        } else {
            s
        };
        drop(s.consumer("d0").unwrap());
        drop(s.group("g").unwrap());
        if name == "zlog" {
            drop(s.group("x").unwrap());
        }
    }

    let mut producer_logs: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    let mut durable_logs: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    let mut member_logs: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    let mut stall_logs: Vec<PathBuf> = Vec::new();
    // Killed, not reaped: until the next round ends, or (long) until the
    // oracle has read everything, so that a hole or a group run held by a
    // zombie must be resolved without its parent's help.
    let mut zombies: Vec<Proc> = Vec::new();
    let mut long_zombies: Vec<Proc> = Vec::new();
    let (mut kills, mut stops, mut zombie_count, mut removals) = (0u32, 0u32, 0u32, 0u32);
    let key_arg = key_path(root.path()).display().to_string();

    for round in 0..rounds {
        let stream: &'static str = STREAMS[rng.random_range(0..STREAMS.len())];
        // Between rounds (nothing of this stream alive): drop the
        // removable durable consumer now and then; it is made anew by a
        // later `dtmp` process and holds producers back meanwhile.
        if rng.random_bool(0.08) {
            let o = root.run(&["rm", stream, "--consumer", "dtmp"]);
            let err = &o.stderr;
            assert!(
                o.status.success() || err.contains("no such consumer"),
                "rm dtmp: {err}"
            );
            removals += o.status.success() as u32;
        }
        let mut procs: Vec<Proc> = Vec::new();
        let mut spawn = |role: &'static str,
                         extra: Vec<(&'static str, String)>,
                         rng: &mut rand::rngs::StdRng|
         -> PathBuf {
            let log = logs.join(format!("{round:04}-{}-{role}.log", procs.len()));
            let mut e = vec![
                ("IPCRESS_DIR", root.path().display().to_string()),
                ("STREAM", stream.to_string()),
                ("LOG", log.display().to_string()),
                ("SEED", rng.random::<u64>().to_string()),
            ];
            e.extend(extra);
            let end_at = Duration::from_millis(rng.random_range(10..200));
            let stop = rng.random_bool(0.25).then(|| {
                let at = rng.random_range(0..end_at.as_millis() as u64);
                let dur = rng.random_range(10..MAX_STOP_MS);
                (Duration::from_millis(at), Duration::from_millis(dur))
            });
            procs.push(Proc {
                child: spawn_child(role, &e),
                role,
                log: Some(log.clone()),
                stop,
                end_at,
                term: false,
            });
            log
        };
        for j in 0..rng.random_range(1..=2u32) {
            let id = round * 8 + j;
            let count = rng.random_range(20..1500u64).to_string();
            let l = spawn(
                "producer",
                vec![("ID", id.to_string()), ("COUNT", count)],
                &mut rng,
            );
            producer_logs.entry(stream).or_default().push(l);
        }
        if rng.random_bool(0.3) {
            let id = round * 8 + 7;
            let l = spawn("sleeper", vec![("ID", id.to_string())], &mut rng);
            producer_logs.entry(stream).or_default().push(l);
        }
        if rng.random_bool(0.6) {
            let l = spawn("durable", vec![("NAME", "d0".into())], &mut rng);
            durable_logs.entry(stream).or_default().push(l.clone());
            stall_logs.push(l);
        }
        if rng.random_bool(0.3) {
            let l = spawn("durable", vec![("NAME", "dtmp".into())], &mut rng);
            stall_logs.push(l);
        }
        if rng.random_bool(0.3) {
            stall_logs.push(spawn("subscriber", vec![], &mut rng));
        }
        for _ in 0..rng.random_range(0..=2) {
            let l = spawn("member", vec![], &mut rng);
            member_logs.entry(stream).or_default().push(l);
        }
        if stream == "zlog" && rng.random_bool(0.5) {
            let mut cmd = root.cmd(&[
                "exec",
                "--in",
                "zlog",
                "--out",
                EXEC_OUT,
                "--group",
                "x",
                "--length-prefixed",
                "--workers",
                &rng.random_range(1..=2).to_string(),
                "--",
                "cat",
            ]);
            let err_log = logs.join(format!("{round:04}-exec.err"));
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&err_log).unwrap());
            let end_at = Duration::from_millis(rng.random_range(10..200));
            procs.push(Proc {
                child: cmd.spawn().unwrap(),
                role: "exec",
                log: Some(err_log),
                stop: rng.random_bool(0.2).then(|| {
                    (
                        end_at / 2,
                        Duration::from_millis(rng.random_range(10..MAX_STOP_MS)),
                    )
                }),
                end_at,
                // Always a clean stop (SIGTERM): a SIGKILLed exec can still
                // lose the answers its workers wrote but exec had not sent on
                // (see the note on issue 12, item 9).
                term: true,
            });
        }

        // The schedule: stops, continues and ends, in time order.
        #[derive(Clone, Copy)]
        enum Ev {
            Stop,
            Cont,
            End,
        }
        let mut events: Vec<(Duration, usize, Ev)> = Vec::new();
        for (i, p) in procs.iter().enumerate() {
            if let Some((at, dur)) = p.stop {
                events.push((at, i, Ev::Stop));
                events.push((at + dur, i, Ev::Cont));
            }
            events.push((p.end_at, i, Ev::End));
        }
        events.sort_by_key(|e| e.0);
        let t0 = Instant::now();
        for (at, i, ev) in events {
            if let Some(d) = at.checked_sub(t0.elapsed()) {
                std::thread::sleep(d);
            }
            let pid = procs[i].child.id();
            use rustix::process::Signal;
            match ev {
                Ev::Stop => {
                    stops += 1;
                    signal(pid, Signal::STOP);
                }
                Ev::Cont => signal(pid, Signal::CONT),
                Ev::End if procs[i].term => {
                    signal(pid, Signal::CONT);
                    signal(pid, Signal::TERM);
                }
                Ev::End => signal(pid, Signal::KILL),
            }
        }
        // Reap (or leave a zombie until the next round ends); every
        // process ends by our signal or succeeds.
        let previous = std::mem::take(&mut zombies);
        for mut p in procs.drain(..) {
            if p.role != "exec" && !p.term && rng.random_bool(0.15) {
                zombie_count += 1;
                signal(p.child.id(), rustix::process::Signal::KILL);
                if rng.random_bool(0.3) {
                    long_zombies.push(p);
                } else {
                    zombies.push(p);
                }
                continue;
            }
            let waited = Instant::now();
            let status = loop {
                if let Some(st) = p.child.try_wait().unwrap() {
                    break st;
                }
                assert!(
                    waited.elapsed() < Duration::from_secs(30),
                    "round {round}: {} {} does not end (seed {seed})",
                    p.role,
                    p.child.id()
                );
                std::thread::sleep(Duration::from_millis(2));
            };
            use std::os::unix::process::ExitStatusExt;
            match status.signal() {
                // SIGTERM may come before exec has its handler installed.
                Some(9) | Some(15) => kills += 1,
                _ => assert!(
                    status.success(),
                    "round {round}: {} ({:?}) ended with {status:?} (seed {seed}): {}{}",
                    p.role,
                    p.log,
                    if p.role == "exec" {
                        std::fs::read_to_string(p.log.as_ref().unwrap()).unwrap_or_default()
                    } else {
                        String::new()
                    },
                    std::fs::read_to_string(logs.join("FAILURES")).unwrap_or_default()
                ),
            }
        }
        drop(previous); // reaps last round's zombies
    }
    drop(std::mem::take(&mut zombies));
    eprintln!(
        "chaos: {rounds} rounds: {kills} kills, {stops} stops, {zombie_count} zombies, \
         {removals} removals in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Ok(f) = std::fs::read_to_string(logs.join("FAILURES")) {
        panic!("children failed (seed {seed}):\n{f}");
    }

    // Read-only commands change no byte of any stream, meta included
    // (they open it with `inspect_in`: the repair after a crash is left
    // to the next opener that reads or writes records).
    let before = snapshot(root.path());
    root.ok(&["ls"]);
    root.ok(&["ls", "--json"]);
    for name in STREAMS.iter().chain([&EXEC_OUT]) {
        root.ok(&["stat", name, "--json", "--interval", "0", "--key", &key_arg]);
        root.ok(&["stat", name, "--interval", "0", "--key", &key_arg]);
    }
    let after = snapshot(root.path());
    for (path, bytes) in &before {
        assert!(
            after.get(path) == Some(bytes),
            "a read-only command changed {} (seed {seed})",
            path.display()
        );
    }
    assert_eq!(before.len(), after.len(), "files appeared or vanished");

    // The exec stage finishes its group cleanly.
    let o = root.run(&[
        "exec",
        "--in",
        "zlog",
        "--out",
        EXEC_OUT,
        "--group",
        "x",
        "--length-prefixed",
        "--until-idle",
        "2",
        "--",
        "cat",
    ]);
    o.assert_ok(&["exec (final)"]);

    let mut worst_stall = 0;
    for l in &stall_logs {
        worst_stall = worst_stall.max(read_log(l).stalls.into_iter().max().unwrap_or(0));
    }
    let bound = UNBLOCK + Duration::from_millis(MAX_STOP_MS + MAX_GRANT_SLEEP_MS) + STALL_MARGIN;
    assert!(
        Duration::from_millis(worst_stall) < bound,
        "a consumer stalled {worst_stall} ms behind committed records (bound {bound:?}, seed {seed})"
    );

    for name in STREAMS {
        let s = open(root.path(), name);
        // What the producers reported as committed.
        let mut sent: HashMap<(u32, u64), u64> = HashMap::new();
        let mut at: HashMap<u64, (u32, u64)> = HashMap::new();
        for l in producer_logs.get(name).into_iter().flatten() {
            for (pos, id, seq) in read_log(l).recs {
                assert!(sent.insert((id, seq), pos).is_none(), "{id}/{seq} twice");
                assert!(at.insert(pos, (id, seq)).is_none(), "two records at {pos}");
            }
        }
        let known = |who: &str, (pos, id, seq): (u64, u32, u64)| {
            if let Some(&p) = sent.get(&(id, seq)) {
                assert_eq!(
                    p, pos,
                    "{name}/{who}: {id}/{seq} read at {pos}, sent at {p}"
                );
            }
            if let Some(&r) = at.get(&pos) {
                assert_eq!(r, (id, seq), "{name}/{who}: another record at {pos}");
            }
        };

        // The durable consumer: every committed record exactly once.
        let mut incarnations: Vec<Log> = durable_logs
            .get(name)
            .map(|v| v.iter().map(|l| read_log(l)).collect())
            .unwrap_or_default();
        let mut d0 = s.consumer("d0").unwrap();
        incarnations.push(Log {
            start: None,
            recs: drain(&s, &mut d0, "d0"),
            times: Vec::new(),
            stalls: Vec::new(),
        });
        let mut seen: Vec<(u64, u32, u64)> = Vec::new();
        for inc in incarnations {
            if let (Some(st), Some(before)) = (inc.start, seen.iter().rev().nth(1)) {
                assert!(
                    st > before.0,
                    "{name}/d0: restarted at {st}, before {}",
                    before.0
                );
            }
            for (k, r) in inc.recs.into_iter().enumerate() {
                known("d0", r);
                if k == 0 && seen.last() == Some(&r) {
                    continue; // read, logged, killed before the commit
                }
                if let Some(last) = seen.last() {
                    assert!(
                        r.0 > last.0,
                        "{name}/d0: {r:?} after {last:?} (seed {seed})"
                    );
                }
                seen.push(r);
            }
        }
        let got: HashSet<(u32, u64)> = seen.iter().map(|&(_, id, seq)| (id, seq)).collect();
        assert_eq!(
            got.len(),
            seen.len(),
            "{name}/d0: a record twice (seed {seed})"
        );
        let missing: Vec<_> = sent.keys().filter(|k| !got.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "{name}/d0: {} committed records never read, e.g. {:?} (seed {seed})",
            missing.len(),
            &missing[..missing.len().min(5)]
        );

        // The group: a record twice only after a member that had it died
        // before acknowledging it (a suffix of what that member read).
        let mut first: HashMap<u64, (usize, usize)> = HashMap::new();
        let member_logs_read: Vec<Log> = member_logs
            .get(name)
            .map(|v| v.iter().map(|l| read_log(l)).collect())
            .unwrap_or_default();
        let mut member_times: Vec<Vec<u64>> =
            member_logs_read.iter().map(|l| l.times.clone()).collect();
        let mut member_recs: Vec<Vec<(u64, u32, u64)>> =
            member_logs_read.into_iter().map(|l| l.recs).collect();
        let mut last_member = s.group("g").unwrap();
        member_recs.push(drain(&s, &mut last_member, "final member"));
        member_times.push(vec![u64::MAX; member_recs[member_recs.len() - 1].len()]);
        let final_idx = member_recs.len() - 1;
        let mut redelivered_from: Vec<std::collections::BTreeSet<usize>> =
            vec![Default::default(); member_recs.len()];
        let mut group_got: HashSet<(u32, u64)> = HashSet::new();
        // In the order the records were read (members of one round run at
        // the same time: the first reader is the one that died).
        let mut order: Vec<(u64, usize, usize)> = Vec::new();
        for (m, ts) in member_times.iter().enumerate() {
            for (k, &t) in ts.iter().enumerate() {
                order.push((t, m, k));
            }
        }
        order.sort_unstable();
        for &(_, m, k) in &order {
            let r = member_recs[m][k];
            known("member", r);
            group_got.insert((r.1, r.2));
            if let Some(&(fm, fk)) = first.get(&r.0) {
                assert!(
                    fm != final_idx && fm != m,
                    "{name}: group record {r:?} delivered twice (seed {seed})"
                );
                redelivered_from[fm].insert(fk);
            } else {
                first.insert(r.0, (m, k));
            }
        }
        for (m, ks) in redelivered_from.iter().enumerate() {
            if let Some(&lowest) = ks.first() {
                // Everything the dead member read after its first
                // unacknowledged record was unacknowledged too.
                let n = member_recs[m].len();
                assert!(
                    ks.len() == n - lowest,
                    "{name}: member {m} had {} of its last {} records redelivered: \
                     an acknowledged record came back (seed {seed})",
                    ks.len(),
                    n - lowest
                );
            }
        }
        if name == "zlog" {
            let lost: Vec<_> = sent.keys().filter(|k| !group_got.contains(k)).collect();
            assert!(
                lost.is_empty(),
                "{name}: {} records never reached the group, e.g. {:?} (seed {seed})",
                lost.len(),
                &lost[..lost.len().min(5)]
            );
            // Every record went through exec (at least once).
            let out = open(root.path(), EXEC_OUT);
            let mut sub = out.subscribe(StartAt::Start).unwrap();
            let through: HashSet<(u32, u64)> = drain(&out, &mut sub, "exec out")
                .into_iter()
                .map(|(_, id, seq)| (id, seq))
                .collect();
            let lost: Vec<_> = sent.keys().filter(|k| !through.contains(k)).collect();
            assert!(
                lost.is_empty(),
                "exec: {} records never came out, e.g. {:?} (seed {seed})",
                lost.len(),
                &lost[..lost.len().min(5)]
            );
        }
        eprintln!(
            "chaos: {name}: {} committed, d0 read {}, group {} distinct ({} redelivered)",
            sent.len(),
            seen.len(),
            group_got.len(),
            redelivered_from.iter().map(|k| k.len()).sum::<usize>()
        );
    }
    drop(long_zombies);
    eprintln!("chaos: done in {:.1} s", started.elapsed().as_secs_f64());
}
