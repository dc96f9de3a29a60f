//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A temporary root directory removed on drop.
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    /// Under /dev/shm (RAM).
    pub fn new(tag: &str) -> TempRoot {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        TempRoot::in_dir(&base, tag)
    }
    /// Under the system temp dir (a real disk, usually).
    pub fn on_disk(tag: &str) -> TempRoot {
        TempRoot::in_dir(&std::env::temp_dir(), tag)
    }
    fn in_dir(base: &Path, tag: &str) -> TempRoot {
        let n: u64 = rand::random();
        let p = base.join(format!("ipcress-test-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..(256 << 10))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

/// Deterministic message content for (producer, sequence): 12 header bytes
/// then a window of a fixed random pool chosen by (producer, seq).
pub fn payload(producer: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(12);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let pool = pool();
    let start = window_start(producer, seq, len - 12);
    v.extend_from_slice(&pool[start..start + len - 12]);
    v
}

fn window_start(producer: u32, seq: u64, n: usize) -> usize {
    let h = (seq ^ (producer as u64) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 20) as usize % (pool().len() - n + 1)
}

/// Check a message made by `payload`; returns (producer, seq).
pub fn check_payload(b: &[u8]) -> (u32, u64) {
    assert!(b.len() >= 12, "message too short: {}", b.len());
    let p = u32::from_le_bytes(b[..4].try_into().unwrap());
    let s = u64::from_le_bytes(b[4..12].try_into().unwrap());
    let start = window_start(p, s, b.len() - 12);
    assert!(
        b[12..] == pool()[start..start + b.len() - 12],
        "payload bytes differ for producer {p} seq {s}"
    );
    (p, s)
}

/// Random size 12 B .. 64 KiB, most small.
pub fn random_len(rng: &mut impl rand::Rng) -> usize {
    match rng.random_range(0..100) {
        0..=79 => rng.random_range(12..256),
        80..=97 => rng.random_range(256..8192),
        _ => rng.random_range(8192..=65536),
    }
}

/// Run this test binary again as a child in `role` (see `child_main` in
/// each test file), with extra environment.
pub fn spawn_child(role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env("IPCRESS_CHILD_ROLE", role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var("IPCRESS_CHILD_ROLE").ok()
}

/// In a child process: open the stream the parent named in `ROOT` and
/// `STREAM`.
pub fn open() -> ipcress::Stream {
    ipcress::Stream::open_in(&PathBuf::from(env("ROOT")), &env("STREAM")).unwrap()
}

pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("missing env {k}"))
}

/// Lines a child printed that start with `RESULT `.
pub fn results(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.find("RESULT ").map(|i| l[i + 7..].to_string()))
        .collect()
}

/// Wait for a child with a watchdog: a hang fails the test.
pub fn wait_with_watchdog(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if d2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: killing child {pid} after {limit:?}");
        unsafe_kill(pid, 9);
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        out.status.success(),
        "child {pid} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// SIGKILL (or another signal) through the `kill` command: the tests stay
/// free of unsafe code.
pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Peak resident set of this process in KiB (VmHWM).
pub fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Running under CI (`CI=true`): a missing prerequisite is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// Whether a privileged prerequisite is there; in CI its absence fails,
/// elsewhere the test prints a note and passes.
pub fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!ci(), "{what} (required when CI=true)");
        eprintln!("note: test skipped: {what}");
    }
    ok
}
