//! Shared test helpers: nats-server processes on loopback, bridge
//! processes, deterministic records and the comparison of two streams.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipcress::{StartAt, Stream};

/// The nats-server binary, or None (with a note) when it is not installed.
/// Under CI (`CI=true`) a missing binary fails the test.
pub fn nats_server() -> Option<PathBuf> {
    if let Some(p) = ipcress_nats::server::find() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("nats-server is not installed (apt-get install nats-server)");
    }
    eprintln!("note: nats-server not found; skipping (apt-get install nats-server)");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server process with JetStream, on loopback only.
pub struct Server {
    bin: PathBuf,
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// A single server.
    pub fn single(bin: &Path, dir: &Path) -> Server {
        let port = free_port();
        let sd = dir.join("js-single");
        let args = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            sd.display().to_string(),
        ];
        let mut s = Server {
            bin: bin.into(),
            name: "single".into(),
            port,
            args,
            child: None,
            log: dir.join("nats-single.log"),
        };
        s.start();
        s
    }

    /// A cluster of `n` servers named n1.. with routes between them.
    pub fn cluster(bin: &Path, dir: &Path, n: usize) -> Vec<Server> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut out = Vec::new();
        for (i, &(port, cport)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &(_, c))| format!("nats://127.0.0.1:{c}"))
                .collect();
            let args = vec![
                "-js".into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-sd".into(),
                dir.join(format!("js-{name}")).display().to_string(),
                "--server_name".into(),
                name.clone(),
                "--cluster_name".into(),
                "ipcress".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cport}"),
                "--routes".into(),
                routes.join(","),
            ];
            out.push(Server {
                bin: bin.into(),
                log: dir.join(format!("nats-{name}.log")),
                name,
                port,
                args,
                child: None,
            });
        }
        for s in &mut out {
            s.start();
        }
        out
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = ipcress_nats::server::command(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nats-server {} did not listen; see {}",
                self.name,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bridge process (`ipcress-bridge-test`), restartable.
pub struct Bridge {
    pub label: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    pub kills: usize,
}

impl Bridge {
    pub fn spawn(label: &str, dir: &Path, args: &[String]) -> Bridge {
        let mut b = Bridge {
            label: label.into(),
            args: args.to_vec(),
            child: None,
            log: dir.join(format!("bridge-{label}.log")),
            kills: 0,
        };
        b.start();
        b
    }

    pub fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ipcress-bridge-test"))
            .args(&self.args)
            .env("IPCRESS_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bridge");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// Clean stop (end of standard input); panics if it fails.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let t0 = Instant::now();
            loop {
                if let Some(st) = c.try_wait().unwrap() {
                    assert!(
                        st.success(),
                        "{} exited with {st}; {}",
                        self.label,
                        self.tail_log()
                    );
                    return;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    panic!("{} did not stop; {}", self.label, self.tail_log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn tail_log(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("log {}:\n{}", self.log.display(), lines[from..].join("\n"))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small xorshift generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {s}");
    s
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Is record `i` written with a `MessageWriter` (in fragments)?
pub fn fragmented(i: u64) -> bool {
    i % 50_000 == 25_000
}

/// Record `i`: mostly 16–512 bytes; every 10 000th 1–3 MiB; every
/// 50 000th (offset 25 000) 600 KiB written in fragments.
pub fn record(i: u64) -> Vec<u8> {
    let h = mix(i);
    let len = if i % 10_000 == 7_777 {
        (1 << 20) + (h % (2 << 20)) as usize
    } else if fragmented(i) {
        600 << 10
    } else {
        16 + (h % 497) as usize
    };
    let mut out = Vec::with_capacity(len + 8);
    let mut x = h | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out[..8.min(len)].copy_from_slice(&i.to_le_bytes()[..8.min(len)]);
    out
}

/// Append records `range` to `stream`.
pub fn fill(stream: &Stream, range: std::ops::Range<u64>) {
    let mut p = stream.producer().unwrap();
    for i in range {
        let r = record(i);
        if fragmented(i) {
            let mut w = p.writer().unwrap();
            w.write_all(&r).unwrap();
            w.finish().unwrap();
        } else {
            p.send(&r).unwrap();
        }
    }
}

/// Total bytes of records `0..n`.
pub fn volume(n: u64) -> u64 {
    (0..n).map(|i| record(i).len() as u64).sum()
}

/// Wait until `t` holds exactly records `0..n`, in order; panics on the
/// first difference, on an extra record, or after `timeout`.
pub fn verify(t: &Stream, n: u64, timeout: Duration, what: &dyn Fn() -> String) {
    let aborted = verify_killed(t, n, timeout, what);
    assert_eq!(
        aborted,
        0,
        "aborted records with no bridge killed; {}",
        what()
    );
}

/// [`verify`] for a target written by a `bridge in` that was killed: a
/// record it was writing in fragments when it died reads as
/// `Error::Aborted`, and comes again whole after the restart (the one case
/// docs/CLI.md names as not seamless). Returns how many aborted records
/// were passed over; every record of `0..n` must still arrive once, whole.
pub fn verify_killed(t: &Stream, n: u64, timeout: Duration, what: &dyn Fn() -> String) -> u64 {
    let mut aborted = 0;
    let deadline = Instant::now() + timeout;
    let mut c = t.subscribe(StartAt::Start).unwrap();
    let mut i = 0u64;
    while i < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c.recv_timeout(left.max(Duration::from_millis(1))).unwrap();
        let Some(m) = m else {
            panic!(
                "timed out with {i} of {n} records in the target; {}",
                what()
            );
        };
        let pos = m.position();
        let got = match m.to_vec() {
            Ok(got) => got,
            Err(ipcress::Error::Aborted { .. }) if fragmented(i) => {
                aborted += 1;
                continue;
            }
            Err(e) => panic!("record {i} at position {pos}: {e}; {}", what()),
        };
        let want = record(i);
        if got != want {
            let idx = if got.len() >= 8 {
                u64::from_le_bytes(got[..8].try_into().unwrap()).to_string()
            } else {
                "?".into()
            };
            panic!(
                "record {i} differs at position {pos}: {} bytes (looks like record {idx}), want {} bytes; {}",
                got.len(),
                want.len(),
                what()
            );
        }
        i += 1;
    }
    // Nothing more may arrive.
    if let Some(m) = c.recv_timeout(Duration::from_secs(2)).unwrap() {
        let got = m.to_vec().unwrap();
        panic!(
            "an extra record of {} bytes after {n}; {}",
            got.len(),
            what()
        );
    }
    aborted
}

/// A temporary directory for streams in /dev/shm (falls back to /tmp).
pub fn shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ipcress-nats-test")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// A temporary work directory (server stores, logs); kept, and printed,
/// when `IPCRESS_TEST_KEEP` is set.
pub fn work_dir() -> tempfile::TempDir {
    let keep = std::env::var_os("IPCRESS_TEST_KEEP").is_some();
    let d = tempfile::Builder::new()
        .prefix("ipcress-nats-work")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("work dir {}", d.path().display());
    }
    d
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Arguments of `bridge out` from stream `src` under `root` to `subject`,
/// creating JetStream stream `js`; `extra` is appended.
pub fn out_args(root: &str, url: &str, subject: &str, js: &str, extra: &[&str]) -> Vec<String> {
    let mut v = s(&[
        "out",
        "--root",
        root,
        "--stream",
        "src",
        "--nats",
        url,
        "--subject",
        subject,
        "--create-stream",
        js,
    ]);
    v.extend(s(extra));
    v
}

/// Arguments of `bridge in` from JetStream stream `js` with consumer
/// `durable` into stream `dst` under `root`; `extra` is appended.
pub fn in_args(root: &str, url: &str, js: &str, durable: &str, extra: &[&str]) -> Vec<String> {
    let mut v = s(&[
        "in",
        "--root",
        root,
        "--nats",
        url,
        "--js-stream",
        js,
        "--durable",
        durable,
        "--stream",
        "dst",
    ]);
    v.extend(s(extra));
    v
}
