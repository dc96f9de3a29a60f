//! Helpers for the CLI tests: a temporary root per test, the real binary,
//! and watchdogs so that a hang fails instead of hanging.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ipcress");

/// Pids of background children, killed if a watchdog fires.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_pid(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Ends the whole test process if the test is not done in time: a hang
/// is a failure, never a stuck CI job.
pub struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    pub fn new(name: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < limit {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watchdog: test {name} did not finish within {limit:?}");
            for pid in CHILDREN.lock().unwrap().iter() {
                kill_pid(*pid, rustix::process::Signal::KILL);
            }
            std::process::exit(101);
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A temporary IPCRESS_DIR under /dev/shm, removed on drop.
pub struct Root(pub PathBuf);

impl Root {
    pub fn new(tag: &str) -> Root {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n: u64 = rand::random();
        let p = base.join(format!(
            "ipcress-cli-test-{tag}-{}-{n:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Root(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `ipcress ARGS` with this root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("IPCRESS_DIR", &self.0)
            .env_remove("IPCRESS_KEY_FILE")
            .env_remove("RUST_BACKTRACE");
        c
    }

    /// Run `ipcress ARGS` to completion (stdin empty).
    pub fn run(&self, args: &[&str]) -> Out {
        run(self.cmd(args), None, Duration::from_secs(120))
    }

    /// Run `ipcress ARGS` with `input` on stdin.
    pub fn run_in(&self, args: &[&str], input: &[u8]) -> Out {
        run(self.cmd(args), Some(input), Duration::from_secs(120))
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let o = self.run(args);
        o.assert_ok(args);
        o.stdout
    }

    pub fn ok_in(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let o = self.run_in(args, input);
        o.assert_ok(args);
        o.stdout
    }

    /// `stat NAME --json --interval 0`, parsed.
    pub fn stat(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.ok(&["stat", name, "--json", "--interval", "0"])).unwrap()
    }

    /// Wait until `name` has `n` consumers that are alive.
    pub fn await_consumers(&self, name: &str, n: usize) {
        let t0 = Instant::now();
        loop {
            let st = self.stat(name);
            let live = st["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["alive"] == true)
                .count();
            if live >= n {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "consumers never came: {st}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Kept for a post-mortem when asked to.
        if std::thread::panicking() && std::env::var_os("IPCRESS_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished command gave.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    pub fn assert_ok(&self, what: &[&str]) {
        assert!(
            self.status.success(),
            "ipcress {what:?} failed ({}): {}",
            self.status,
            self.stderr
        );
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run `cmd` to completion with a time limit; kill it and fail on expiry.
pub fn run(mut cmd: Command, input: Option<&[u8]>, limit: Duration) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ipcress");
    let pid = child.id();
    let writer = input.map(|data| {
        let data = data.to_vec();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} (pid {pid}) did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Out {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// A background child, killed on drop; registered with the watchdogs.
pub struct Bg {
    pub child: Child,
}

impl Bg {
    pub fn spawn(mut cmd: Command) -> Bg {
        let child = cmd.spawn().expect("spawn ipcress");
        CHILDREN.lock().unwrap().push(child.id());
        Bg { child }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        kill_pid(self.child.id(), sig);
    }

    /// Wait for the exit, failing after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("background ipcress did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|p| *p != self.child.id());
    }
}

/// Length-prefixed encoding of `records`.
pub fn length_prefixed(records: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in records {
        v.extend_from_slice(&(r.len() as u32).to_le_bytes());
        v.extend_from_slice(r);
    }
    v
}

/// Bytes a record of `len` payload bytes takes in a stream of format 4
/// (16-byte header, 8-byte commit time, padded to 8).
pub fn frame_len(len: usize) -> u64 {
    (24 + len as u64).div_ceil(8) * 8
}
