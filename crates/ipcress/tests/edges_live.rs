//! Crash-safety at the edges (issue 12, items 5, 6 and 7), with real
//! processes and real signals: liveness that does not rest on pids
//! (zombies, other pid namespaces, more producers than slots), one rule for
//! who holds producers back, and removing what is in use. The test binary
//! re-runs itself as children (`child_main` dispatches on a role).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::*;
use ipcress::{Error, StartAt, Stream, StreamOptions};

/// Longest any scenario may take before it counts as "waits forever".
const WATCHDOG: Duration = Duration::from_secs(60);

/// Entry point of every child process; a no-op in the parent.
#[test]
fn child_main() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Send 100 records, claim a frame, and SIGKILL ourselves with the
        // claim outstanding.
        "claim_then_die" => {
            let s = open();
            let mut p = s.producer().unwrap();
            for seq in 0..100 {
                p.send(&payload(1, seq, 100)).unwrap();
            }
            let g = p.reserve(1000).unwrap();
            println!("RESULT claimed {}", g.position().unwrap());
            unsafe_kill(std::process::id(), 9);
            std::thread::sleep(Duration::from_secs(3600));
            drop(g);
        }
        // Start `claim_then_die` as our child and keep it a zombie (never
        // reaped) until our stdin closes.
        "zombie_keeper" => {
            let mut child = spawn_child("claim_then_die", &[]);
            let pid = child.id();
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let claimed = results(out.as_bytes())
                .into_iter()
                .find_map(|l| l.strip_prefix("claimed ").map(str::to_string))
                .expect("child claimed");
            let mut zombie = false;
            for _ in 0..6000 {
                if proc_state(pid) == Some('Z') {
                    zombie = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(zombie, "child {pid} did not become a zombie");
            println!("RESULT zombie {pid} {claimed}");
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            // Only now is the zombie reaped.
            let _ = child.wait();
        }
        // Join group "g" and stay (until killed).
        "member_join" => {
            let s = open();
            let _c = s.group("g").unwrap();
            println!("RESULT joined");
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Send COUNT records of 1000 bytes (several laps of the ring).
        "fill" => {
            let s = open();
            let count: u64 = env("COUNT").parse().unwrap();
            let mut p = s.producer().unwrap();
            for seq in 0..count {
                p.send(&payload(1, seq, 1000)).unwrap();
            }
            println!("RESULT done {}", s.tail());
        }
        other => panic!("unknown role {other}"),
    }
}

/// The state letter of `/proc/PID/stat` (R, S, Z, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Kill `pid` if `done` is not set within the watchdog time.
fn watchdog(pid: u32, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < WATCHDOG {
            if done.load(SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: killing {pid}");
        unsafe_kill(pid, 9);
    });
}

fn child_cmd(role: &str, root: &TempRoot) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env("IPCRESS_CHILD_ROLE", role)
        .env("ROOT", root.path())
        .env("STREAM", "s")
        .stderr(Stdio::inherit());
    cmd
}

/// A child of this test binary, its stdout piped, under the watchdog, and
/// SIGKILLed when dropped (however the test ends: a stopped child left
/// behind would hold the test's output open).
struct Watched {
    child: Child,
    done: Arc<AtomicBool>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Watched {
        let child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        watchdog(child.id(), done.clone());
        Watched { child, done }
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the child's `RESULT <prefix>...` line.
    fn result(&mut self, prefix: &str) -> String {
        await_result(&mut self.child, prefix)
    }

    /// SIGKILL the child and reap it.
    fn kill(&mut self) {
        unsafe_kill(self.child.id(), 9);
        self.child.wait().unwrap();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.done.store(true, SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read the child's stdout until a `RESULT <prefix>...` line. The rest of
/// its output goes on being read (and dropped) in the background.
fn await_result(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("child ended before RESULT {prefix}"))
            .unwrap();
        if let Some(i) = line.find("RESULT ") {
            let r = &line[i + 7..];
            if r.starts_with(prefix) {
                std::thread::spawn(move || lines.for_each(drop));
                return r.to_string();
            }
        }
    }
}

fn stream_with_unblock(root: &TempRoot) -> Stream {
    let o = StreamOptions::ring(1 << 20).unblock_timeout(Duration::from_millis(200));
    Stream::create_in(root.path(), "s", &o).unwrap()
}

/// Read `n1` records of producer 1 and `n2` of producer 2, each in order,
/// within the watchdog time: a hole nobody unblocks fails here.
fn read_all(c: &mut ipcress::Consumer, n1: u64, n2: u64, what: &str) {
    let start = Instant::now();
    let (mut next1, mut next2) = (0u64, 0u64);
    while next1 < n1 || next2 < n2 {
        assert!(
            start.elapsed() < WATCHDOG,
            "{what}: stuck at {} after {next1} + {next2} records",
            c.position()
        );
        match c.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(m)) => {
                let (p, seq) = check_payload(m.bytes().unwrap());
                let next = if p == 1 { &mut next1 } else { &mut next2 };
                assert_eq!(seq, *next, "{what}: producer {p} out of order");
                *next += 1;
            }
            Ok(None) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    assert!(c.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
}

/// Item 6: a producer SIGKILLed while holding a claim, whose parent does
/// not reap it, is a zombie: `kill(pid, 0)` still succeeds. Its hole must
/// be unblocked all the same.
#[test]
fn zombie_producers_claim_is_unblocked() {
    let root = TempRoot::new("zombie");
    let s = stream_with_unblock(&root);
    let mut c = s.consumer("d").unwrap();
    let mut cmd = child_cmd("zombie_keeper", &root);
    cmd.stdin(Stdio::piped());
    let mut keeper = Watched::spawn(cmd);
    let r = keeper.result("zombie ");
    let mut it = r.split_whitespace().skip(1);
    let zpid: u32 = it.next().unwrap().parse().unwrap();
    let claimed: u64 = it.next().unwrap().parse().unwrap();
    assert!(claimed < s.tail());
    let mut p = s.producer().unwrap();
    for seq in 0..50 {
        p.send(&payload(2, seq, 100)).unwrap();
    }
    read_all(&mut c, 100, 50, "zombie");
    // The producer stayed a zombie the whole time.
    assert_eq!(proc_state(zpid), Some('Z'));
    drop(keeper.child.stdin.take());
    assert!(keeper.child.wait().unwrap().success());
}

/// Item 6: a producer in another pid namespace (a container sharing
/// /dev/shm) records a pid that means another process here. Killed while
/// holding a claim, its hole must be unblocked.
#[test]
fn producer_in_another_pid_namespace_is_seen_dead() {
    let have_ns = is_root()
        && Command::new("unshare")
            .args(["--pid", "--fork", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !require(have_ns, "root and unshare(1) for a pid namespace") {
        return;
    }
    let root = TempRoot::new("pidns");
    let s = stream_with_unblock(&root);
    let mut c = s.consumer("d").unwrap();
    // `sh` is pid 1 of the new namespace, the producer pid 2 (the init of
    // a namespace cannot be killed from inside it).
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "'{}' --exact child_main --nocapture --test-threads=1; true",
        exe.display()
    );
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &script])
        .env("IPCRESS_CHILD_ROLE", "claim_then_die")
        .env("ROOT", root.path())
        .env("STREAM", "s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = wait_with_watchdog(child, WATCHDOG);
    assert!(
        results(&out.stdout)
            .iter()
            .any(|l| l.starts_with("claimed ")),
        "the producer in the namespace did not claim"
    );
    let mut p = s.producer().unwrap();
    for seq in 0..50 {
        p.send(&payload(2, seq, 100)).unwrap();
    }
    read_all(&mut c, 100, 50, "pid namespace");
}

/// Item 6: every producer has a slot (its liveness); one more than there
/// are slots is a clear error, never a producer the unblocker cannot see.
#[test]
fn more_producers_than_slots_is_an_error() {
    let root = TempRoot::new("slots");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    let mut ps: Vec<_> = (0..ipcress::format::PRODUCER_SLOTS)
        .map(|_| s.producer().unwrap())
        .collect();
    match s.producer() {
        Err(Error::SlotsExhausted(what)) => assert_eq!(what, "producer"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a producer without a slot"),
    }
    drop(ps.pop());
    let mut p = s.producer().unwrap();
    p.send(b"x").unwrap();
    let mut c = s.subscribe(StartAt::Start).unwrap();
    assert_eq!(c.recv().unwrap().bytes(), Some(&b"x"[..]));
}

/// Run the `fill` role (four laps of a 64 KiB ring) to completion: a
/// producer that never resumes fails the watchdog.
fn fill_four_laps(root: &TempRoot) {
    let child = child_cmd("fill", root)
        .env("COUNT", "256")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_watchdog(child, WATCHDOG);
    assert!(results(&out.stdout).iter().any(|l| l.starts_with("done ")));
}

/// Item 5: the only member of a group is SIGKILLed; a producer that fills
/// the ring must go on (a dead member holds nobody back), not spin.
#[test]
fn producer_goes_on_when_the_only_group_member_is_killed() {
    let root = TempRoot::new("deadmember");
    let s = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    let mut member = Watched::spawn(child_cmd("member_join", &root));
    member.result("joined");
    member.kill();
    fill_four_laps(&root);
    assert!(s.tail() > 3 * (1 << 16));
    // A member that joins now starts where the group was left (its
    // records were overwritten meanwhile: it is told so, then reads on).
    let mut c = s.group("g").unwrap();
    let mut p = s.producer().unwrap();
    p.send(b"after").unwrap();
    let mut got = None;
    for _ in 0..1000 {
        match c.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(m)) if m.bytes() == Some(&b"after"[..]) => {
                got = Some(());
                break;
            }
            Ok(_) | Err(Error::Lagged { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got.is_some(), "the new member never read the new record");
}

/// Item 5: a closed durable consumer past `durable_timeout` holds nobody
/// back; a producer that fills the ring must go on, not spin.
#[test]
fn producer_goes_on_after_the_durable_timeout() {
    let root = TempRoot::new("durtimeout");
    let o = StreamOptions::ring(1 << 16).durable_timeout(Duration::from_millis(100));
    let s = Stream::create_in(root.path(), "s", &o).unwrap();
    drop(s.consumer("d").unwrap());
    fill_four_laps(&root);
    assert!(s.tail() > 3 * (1 << 16));
}

/// Item 7: a stream that a live process has open (here a child stopped
/// with SIGSTOP, a stall that must not count as gone) is not removed;
/// once that process is SIGKILLed, it is.
#[test]
fn remove_refuses_a_stream_a_live_process_has_open() {
    let root = TempRoot::new("rm-open");
    Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 20)).unwrap();
    let mut child = Watched::spawn(child_cmd("member_join", &root));
    child.result("joined");
    unsafe_kill(child.id(), libc::SIGSTOP);
    match Stream::remove_in(root.path(), "s") {
        Err(Error::StreamInUse { name }) => assert_eq!(name, "s"),
        other => panic!("removed from under a live process: {other:?}"),
    }
    // Untouched: it opens, and the member is still there.
    let s = Stream::open_in(root.path(), "s").unwrap();
    assert_eq!(s.consumers().len(), 2);
    drop(s);
    child.kill();
    Stream::remove_in(root.path(), "s").unwrap();
    assert!(!root.path().join("s").exists());
}

/// Whether some process waits for a `flock` on the file `ino`
/// (`/proc/locks` lists a waiter as `N: -> FLOCK ...`).
fn flock_waiter_on(ino: u64) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("-> FLOCK") && l.contains(&format!(":{ino} ")))
}

/// Item 7: an open that waits while the stream is being removed must not
/// hand back a stream of removed files (its producer would write into
/// files nobody can read): it reports the stream gone, or opens the
/// stream made under that name since.
#[test]
fn an_open_that_waited_for_a_removal_sees_what_the_name_holds_now() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let root = TempRoot::new("rm-race");
    for remake in [false, true] {
        let old = Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 20)).unwrap();
        let old_id = old.id();
        drop(old);
        // Act as a remove_in in progress: hold the meta file's exclusive
        // lock while the directory goes.
        let meta_path = root.path().join("s/meta");
        let meta = std::fs::File::open(&meta_path).unwrap();
        let ino = meta.metadata().unwrap().ino();
        // SAFETY: plain syscall on an open descriptor.
        assert_eq!(unsafe { libc::flock(meta.as_raw_fd(), libc::LOCK_EX) }, 0);
        let r = root.path().to_path_buf();
        let opener = std::thread::spawn(move || Stream::open_in(&r, "s"));
        let start = Instant::now();
        while !flock_waiter_on(ino) {
            assert!(start.elapsed() < WATCHDOG, "the opener never waited");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_dir_all(root.path().join("s")).unwrap();
        let new_id = remake.then(|| {
            Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 20))
                .unwrap()
                .id()
        });
        drop(meta);
        match (opener.join().unwrap(), new_id) {
            (Err(Error::NotFound { name, .. }), None) => assert_eq!(name, "s"),
            (Ok(s), Some(id)) => {
                assert_ne!(s.id(), old_id);
                assert_eq!(s.id(), id);
            }
            (other, _) => panic!("remake {remake}: {other:?}"),
        }
        let _ = Stream::remove_in(root.path(), "s");
    }
}

/// A `create` holds its new directory's lock from the rename into place
/// until it lets go of it (a moment); a removal that meets that lock waits
/// for it instead of reporting the stream gone.
#[test]
fn a_removal_waits_out_a_creators_directory_lock() {
    use std::os::fd::AsRawFd;
    let root = TempRoot::new("rm-dirlock");
    Stream::create_in(root.path(), "s", &StreamOptions::ring(1 << 16)).unwrap();
    let dir = std::fs::File::open(root.path().join("s")).unwrap();
    // SAFETY: flock on a descriptor this test owns; no memory involved.
    assert_eq!(unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) }, 0);
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(dir);
    });
    Stream::remove_forced_in(root.path(), "s").unwrap();
    creator.join().unwrap();
    assert!(!root.path().join("s").exists());
    assert!(Stream::list_in(root.path()).unwrap().is_empty());
}
