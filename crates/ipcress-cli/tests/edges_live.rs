//! Crash-safety at the edges through the real binary (issue 12, items 5
//! and 7): a `put` blocked on a full ring ends on the first SIGTERM; `rm`
//! refuses a stream that live processes have open and a group that has a
//! live member, so nobody goes on writing into removed files or slots.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use rustix::process::Signal;

const LIMIT: Duration = Duration::from_secs(120);

/// Lines of 100 bytes (frames of 120): `n` of them.
fn lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let l = format!("{i:099}\n");
        v.extend_from_slice(l.as_bytes());
    }
    v
}

/// Spawn `put s` and return it with its stdin (stderr piped).
fn spawn_put_piped(root: &Root) -> (Bg, std::process::ChildStdin) {
    let mut put = Bg::spawn({
        let mut c = root.cmd(&["put", "s"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    });
    let stdin = put.child.stdin.take().unwrap();
    (put, stdin)
}

/// Spawn `put s` fed with `input` from a thread (which stops quietly when
/// put goes away).
fn spawn_put(root: &Root, input: Vec<u8>) -> Bg {
    let (put, mut stdin) = spawn_put_piped(root);
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    put
}

fn tail(root: &Root) -> u64 {
    root.stat("s")["tail"].as_u64().unwrap()
}

/// Wait until the tail stops moving at or past `at_least`.
fn await_blocked(root: &Root, at_least: u64) {
    let mut last = u64::MAX;
    for _ in 0..6000 {
        let t = tail(root);
        if t >= at_least && t == last {
            return;
        }
        last = t;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("put never filled the ring (tail {last})");
}

/// Item 5: `put` blocked on a full ring (a durable consumer that does not
/// read) ends on the first SIGTERM with exit 130, not only on a second.
#[test]
fn blocked_put_ends_on_the_first_sigterm() {
    let _w = Watchdog::new("blocked_put_ends_on_the_first_sigterm", LIMIT);
    let root = Root::new("putterm");
    root.ok(&["create", "s", "--ring", "64K"]);
    // A durable consumer at the start holds the ring.
    root.ok(&["get", "s", "--consumer", "d", "--count", "0"]);
    let mut put = spawn_put(&root, lines(2000));
    await_blocked(&root, 65536 - 120 + 1);
    put.signal(Signal::TERM);
    let st = put.wait(LIMIT);
    let err = put.stderr();
    assert_eq!(st.code(), Some(130), "put: {st:?} {err}");
    assert!(err.contains("interrupted"), "{err}");
    // What put says it sent is there, intact and in order, and nothing
    // else: the consumer reads exactly those records.
    let sent: usize = err
        .split("interrupted after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {err:?}"));
    let out = root.ok(&["get", "s", "--consumer", "d"]);
    let n = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(n, sent, "records kept");
    // A 64 KiB ring holds more than 500 of them.
    assert!(n > 500, "{n}");
    assert_eq!(&out[..], &lines(n)[..]);
}

/// Item 7: `rm` of a stream that a running `put` and `get -f` have open is
/// refused with one clear line; the put goes on and loses nothing. Once
/// they have exited, `rm` removes it.
/// Issue 16: `rm --force` removes a stream in use, and its holders stop
/// with one clear line instead of writing into a stream nobody can see: a
/// follower blocked in `get -f` and a `put` blocked on a full ring (its
/// durable consumer `d` never reads) both end with "stream s was removed".
#[test]
fn rm_force_removes_a_stream_in_use_and_its_holders_say_so() {
    let _w = Watchdog::new("rm_force_removes_a_stream_in_use", LIMIT);
    let root = Root::new("rmforce");
    root.ok(&["create", "s", "--ring", "64K"]);
    root.ok(&["get", "s", "--consumer", "d", "--count", "0"]);
    let mut follow = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "-f"]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    });
    root.await_consumers("s", 1);
    let (mut put, mut stdin) = spawn_put_piped(&root);
    // More than the ring holds (and less than the ring and the pipe
    // together): put ends up waiting on `d`.
    stdin.write_all(&lines(1000)).unwrap();
    stdin.flush().unwrap();
    await_blocked(&root, 32 << 10);
    assert_eq!(
        root.run(&["rm", "s"]).code(),
        1,
        "in use: refused without --force"
    );
    root.ok(&["rm", "s", "--force"]);
    assert!(!root.path().join("s").exists());
    for (what, bg) in [("get -f", &mut follow), ("put", &mut put)] {
        let st = bg.wait(LIMIT);
        let err = bg.stderr();
        assert_eq!(st.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim_end(), "ipcress: stream s was removed", "{what}");
    }
    drop(stdin);
}

#[test]
fn rm_refuses_a_stream_in_use() {
    let _w = Watchdog::new("rm_refuses_a_stream_in_use", LIMIT);
    let root = Root::new("rminuse");
    root.ok(&["create", "s", "--ring", "1M"]);
    root.ok(&["get", "s", "--consumer", "d", "--count", "0"]);
    let (mut put, mut stdin) = spawn_put_piped(&root);
    let all = lines(200);
    stdin.write_all(&all[..100 * 100]).unwrap();
    stdin.flush().unwrap();
    // The first half is in the stream: put has it open.
    while tail(&root) < 100 * 120 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut follow = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "-f"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    });
    // The follower (the durable consumer's process is gone).
    root.await_consumers("s", 1);
    let r = root.run(&["rm", "s"]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(
        r.stderr.contains("stream s is open in a running process"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    // Still there, and put still writes into it.
    stdin.write_all(&all[100 * 100..]).unwrap();
    drop(stdin);
    let st = put.wait(LIMIT);
    assert!(st.success(), "put: {st:?} {}", put.stderr());
    let out = root.ok(&["get", "s", "--consumer", "d"]);
    assert_eq!(out, all, "every record put wrote is in the stream");
    // The follower alone still holds it.
    let r = root.run(&["rm", "s"]);
    assert_eq!(r.code(), 1, "{r:?}");
    follow.signal(Signal::TERM);
    follow.wait(LIMIT);
    root.ok(&["rm", "s"]);
    let r = root.run(&["stat", "s"]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(r.stderr.contains("no such stream: s"), "{}", r.stderr);
}

/// Item 7: `rm --consumer G` of a group with a live member is refused
/// (the member would go on writing into the freed slot); once the member
/// is SIGKILLed the group goes, its dead member's slot with it, and a
/// durable consumer made next reads every record from the start.
#[test]
fn rm_refuses_a_group_with_a_live_member() {
    let _w = Watchdog::new("rm_refuses_a_group_with_a_live_member", LIMIT);
    let root = Root::new("rmgroup");
    root.ok(&["create", "s", "--ring", "1M"]);
    root.ok_in(&["put", "s"], &lines(50));
    let mut member = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "--group", "g", "-f"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    });
    root.await_consumers("s", 2);
    let r = root.run(&["rm", "s", "--consumer", "g"]);
    assert_eq!(r.code(), 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "consumer g is in use by process {}",
            member.child.id()
        )),
        "{}",
        r.stderr
    );
    let names = |root: &Root| -> Vec<String> {
        root.stat("s")["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&root), ["group", "member"]);
    member.signal(Signal::KILL);
    member.wait(LIMIT);
    root.ok(&["rm", "s", "--consumer", "g"]);
    // No slot is left: neither the group nor its dead member.
    assert!(names(&root).is_empty(), "{:?}", names(&root));
    let out = root.ok(&["get", "s", "--consumer", "d"]);
    assert_eq!(out, lines(50));
}

/// Issue 16: GNU `timeout` sends its signal to the command and then to its
/// process group, so the command gets it twice at once. Two SIGTERMs 50 ms
/// apart are one request: `exec` stops cleanly, its `grep` worker gets
/// the end of its input, and the match it held in its buffer reaches B.
/// (A second signal used to end `exec` at once, its worker with it, and
/// the match was lost.)
#[test]
fn two_signals_close_together_are_one_request() {
    let _w = Watchdog::new("two_signals_close_together_are_one_request", LIMIT);
    let root = Root::new("twosig");
    root.ok(&["create", "a", "--ring", "1M"]);
    root.ok(&["create", "b", "--ring", "1M"]);
    root.ok_in(&["put", "a"], b"one\nX marks the spot\ntwo\n");
    let tail_a = root.stat("a")["tail"].as_u64().unwrap();
    let mut exec = Bg::spawn({
        let mut c = root.cmd(&[
            "exec", "--in", "a", "--out", "b", "--group", "e", "--", "grep", "X",
        ]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    });
    // Every record handed to grep (and read by it): the group is at the tail.
    let t0 = std::time::Instant::now();
    loop {
        let st = root.stat("a");
        let pos = st["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "group" && c["name"] == "e")
            .and_then(|c| c["position"].as_u64());
        if pos == Some(tail_a) {
            break;
        }
        assert!(t0.elapsed() < LIMIT, "exec never took the records: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    exec.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(50));
    exec.signal(Signal::TERM);
    let st = exec.wait(LIMIT);
    let err = exec.stderr();
    assert_eq!(st.code(), Some(0), "exec: {st:?} {err}");
    assert_eq!(root.ok(&["get", "b"]), b"X marks the spot\n");
}

/// Issue 16: `exec -- grep X` over input without an X: grep exits with
/// status 1 ("nothing matched") when exec closes its input, which is not a
/// failure of the stage: exit 0, nothing in B, nothing on stderr. (It used
/// to end with "worker 0: grep exited with status 1" and exit 1.)
#[test]
fn an_exec_whose_filter_matches_nothing_succeeds() {
    let _w = Watchdog::new("an_exec_whose_filter_matches_nothing_succeeds", LIMIT);
    let root = Root::new("nomatch");
    root.ok(&["create", "a", "--ring", "1M"]);
    root.ok(&["create", "b", "--ring", "1M"]);
    root.ok_in(&["put", "a"], b"one\ntwo\nthree\n");
    let mut cmd = root.cmd(&[
        "exec",
        "--in",
        "a",
        "--out",
        "b",
        "--workers",
        "2",
        "--until-idle",
        "0.5",
        "--",
        "grep",
        "X",
    ]);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "");
    assert_eq!(root.stat("b")["tail"].as_u64(), Some(0));
    // A worker that really fails still fails the stage.
    let out = root
        .cmd(&[
            "exec",
            "--in",
            "a",
            "--out",
            "b",
            "--group",
            "other",
            "--until-idle",
            "0.5",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16: a second signal a second or more after the first still ends
/// a process at once (exit 130): here a `get -f` whose stdout nobody reads
/// is stuck writing, and does not see the first.
#[test]
fn a_second_signal_later_still_forces_the_exit() {
    let _w = Watchdog::new("a_second_signal_later_still_forces_the_exit", LIMIT);
    let root = Root::new("forcesig");
    root.ok(&["create", "s", "--ring", "1M"]);
    root.ok_in(&["put", "s"], &lines(5000));
    // stdout is a pipe nobody reads: get blocks in write once it is full.
    let mut get = Bg::spawn({
        let mut c = root.cmd(&["get", "s", "-f"]);
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        c
    });
    std::thread::sleep(Duration::from_millis(500));
    get.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        get.child.try_wait().unwrap().is_none(),
        "get ended on the first signal while stuck"
    );
    get.signal(Signal::TERM);
    let st = get.wait(LIMIT);
    assert_eq!(st.code(), Some(130), "{st:?}");
}

/// Issue 16: a `put` that waits on a ring held full by a durable consumer
/// nobody reads (`get --consumer slow --count 0` made it) says so on
/// stderr, naming the consumer and how to remove it, instead of stalling
/// without a word; SIGTERM still ends it.
#[test]
fn a_put_waiting_on_a_full_ring_names_the_consumer_holding_it() {
    let _w = Watchdog::new("a_put_waiting_on_a_full_ring_names", LIMIT);
    let root = Root::new("putfull");
    root.ok(&["create", "s", "--ring", "64K"]);
    root.ok(&["get", "s", "--consumer", "slow", "--count", "0"]);
    let mut put = spawn_put(&root, lines(2000));
    let err = put.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(err)) {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(LIMIT).expect("put said nothing");
    assert_eq!(
        line,
        "ipcress: warning: stream s is full: waiting for durable consumer slow \
         (no process reads it), 65536 bytes behind; \
         `ipcress rm s --consumer slow` removes it"
    );
    put.signal(Signal::TERM);
    let st = put.wait(LIMIT);
    assert_eq!(st.code(), Some(130), "{st:?}");
}

/// `rm` SIGKILLed while it deletes a stream's files leaves the name whole
/// or gone, never a directory with some files missing (which `create`
/// refused as existing and `get` read as damaged): the directory leaves
/// its name in one rename before any file is deleted, and what a killed
/// `rm` leaves under the temporary name the next `ls` sweeps away.
#[test]
fn rm_killed_midway_leaves_the_stream_whole_or_gone() {
    let _w = Watchdog::new("rm_killed_midway", LIMIT);
    let root = Root::new("rmkill");
    // A log of 4 KiB segments: thousands of files to delete.
    root.ok(&["create", "s", "--log", "--segment", "4K"]);
    root.ok_in(&["put", "s"], &lines(60_000));
    let dir = root.path().join("s");
    let count = |d: &std::path::Path| std::fs::read_dir(d).map(|r| r.count()).ok();
    let files = count(&dir).unwrap();
    assert!(files > 1000, "only {files} files");
    let mut rm = Bg::spawn({
        let mut c = root.cmd(&["rm", "s"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    });
    // Kill it once it has started: the name is gone, or files are.
    while count(&dir).is_some_and(|n| n == files) {
        std::thread::yield_now();
    }
    rm.signal(Signal::KILL);
    rm.wait(LIMIT);
    if let Some(n) = count(&dir) {
        assert_eq!(
            n, files,
            "rm killed midway left s with {n} of its {files} files"
        );
    }
    // Nothing half-removed is left once `ls` has looked, and the name is free.
    assert_eq!(root.ok(&["ls"]), b"");
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left under the root: {left:?}");
    root.ok(&["create", "s", "--ring", "64K"]);
    root.ok_in(&["put", "s"], b"again\n");
    assert_eq!(root.ok(&["get", "s"]), b"again\n");
}
